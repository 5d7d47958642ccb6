//! The two-dimensional page table (TDP: nested page table on AMD, EPT on Intel) as
//! nacre's host MMU keeps it: GFN -> backing, at 4 KiB, 2 MiB or 1 GiB.
//!
//! A mapping says which backing a guest page reaches: the private one (guest_memfd on
//! upstream KVM) or the shared one. Mappings are installed only by faults and removed by
//! zaps (docs/design.md, "The rules the host MMU keeps"). Zapping any part of a huge
//! mapping removes the whole mapping, as KVM drops a huge SPTE rather than splitting it.
//!
//! Storage is one byte per entry at each level, so a lookup is three array reads and
//! 4 GiB of guest RAM costs about 1 MiB. At most one level maps any page.

use super::attributes::Kind;

/// A TDP mapping level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// 4 KiB (PTE).
    L4K,
    /// 2 MiB (PDE with PS).
    L2M,
    /// 1 GiB (PDPTE with PS).
    L1G,
}

impl Level {
    /// 4 KiB pages covered by one mapping at this level.
    pub const fn pages(self) -> u64 {
        match self {
            Self::L4K => 1,
            Self::L2M => 512,
            Self::L1G => 512 * 512,
        }
    }

    /// The first GFN of the mapping at this level that would cover `gfn`.
    pub const fn base(self, gfn: u64) -> u64 {
        gfn & !(self.pages() - 1)
    }

    /// All levels, largest first.
    pub const DESCENDING: [Self; 3] = [Self::L1G, Self::L2M, Self::L4K];
}

/// One installed mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First GFN (aligned to the level).
    pub base: u64,
    /// Level.
    pub level: Level,
    /// Which backing it reaches.
    pub kind: Kind,
}

impl Mapping {
    /// One past the last GFN covered.
    pub fn end(&self) -> u64 {
        self.base + self.level.pages()
    }
}

const NONE: u8 = 0;
const PRIVATE: u8 = 1;
const SHARED: u8 = 2;

fn encode(kind: Kind) -> u8 {
    match kind {
        Kind::Private => PRIVATE,
        Kind::Shared => SHARED,
    }
}

fn decode(b: u8) -> Option<Kind> {
    match b {
        PRIVATE => Some(Kind::Private),
        SHARED => Some(Kind::Shared),
        _ => None,
    }
}

/// The TDP for guest RAM of `pages` 4 KiB pages.
#[derive(Clone, Debug)]
pub struct Tdp {
    pages: u64,
    /// Entries per level, indexed like [`Level::DESCENDING`] reversed: `[4K, 2M, 1G]`.
    entries: [Vec<u8>; 3],
    /// Number of installed mappings per level `[4K, 2M, 1G]`.
    counts: [u64; 3],
}

fn slot(level: Level) -> usize {
    match level {
        Level::L4K => 0,
        Level::L2M => 1,
        Level::L1G => 2,
    }
}

impl Tdp {
    /// An empty TDP over `pages` pages.
    pub fn new(pages: u64) -> Self {
        let len = |l: Level| usize::try_from(pages.div_ceil(l.pages())).unwrap_or(usize::MAX);
        Self {
            pages,
            entries: [
                vec![NONE; len(Level::L4K)],
                vec![NONE; len(Level::L2M)],
                vec![NONE; len(Level::L1G)],
            ],
            counts: [0; 3],
        }
    }

    fn entry(&self, level: Level, gfn: u64) -> u8 {
        usize::try_from(gfn / level.pages())
            .ok()
            .and_then(|i| self.entries[slot(level)].get(i).copied())
            .unwrap_or(NONE)
    }

    fn entry_mut(&mut self, level: Level, gfn: u64) -> Option<&mut u8> {
        let i = usize::try_from(gfn / level.pages()).ok()?;
        self.entries[slot(level)].get_mut(i)
    }

    /// The mapping covering `gfn`, if any.
    pub fn lookup(&self, gfn: u64) -> Option<Mapping> {
        if gfn >= self.pages {
            return None;
        }
        Level::DESCENDING.into_iter().find_map(|level| {
            decode(self.entry(level, gfn)).map(|kind| Mapping {
                base: level.base(gfn),
                level,
                kind,
            })
        })
    }

    /// Number of installed mappings at `level`.
    pub fn count(&self, level: Level) -> u64 {
        self.counts[slot(level)]
    }

    /// Install `mapping`, first removing every mapping it overlaps (a larger mapping
    /// replaces the smaller ones under it, as KVM replaces a page-table page by a huge
    /// SPTE). Returns the removed mappings. The caller guarantees the range lies in
    /// guest RAM.
    pub fn map(&mut self, mapping: Mapping) -> Vec<Mapping> {
        let removed = self.zap(mapping.base, mapping.level.pages());
        if let Some(e) = self.entry_mut(mapping.level, mapping.base) {
            *e = encode(mapping.kind);
            self.counts[slot(mapping.level)] += 1;
        }
        removed
    }

    /// Remove every mapping that overlaps `[gfn, gfn + n)`, whole, and return them.
    pub fn zap(&mut self, gfn: u64, n: u64) -> Vec<Mapping> {
        let end = gfn.saturating_add(n).min(self.pages);
        let mut removed = Vec::new();
        if gfn >= end {
            return removed;
        }
        for level in Level::DESCENDING {
            let first = gfn / level.pages();
            let last = (end - 1) / level.pages();
            let (Ok(lo), Ok(hi)) = (usize::try_from(first), usize::try_from(last)) else {
                continue;
            };
            let s = slot(level);
            let Some(entries) = self.entries[s].get_mut(lo..=hi) else {
                continue;
            };
            for (i, e) in entries.iter_mut().enumerate() {
                if let Some(kind) = decode(*e) {
                    removed.push(Mapping {
                        base: (first + i as u64) * level.pages(),
                        level,
                        kind,
                    });
                    *e = NONE;
                    self.counts[s] -= 1;
                }
            }
        }
        removed
    }

    /// Every installed mapping overlapping `[gfn, gfn + n)`, in no particular order.
    pub fn mappings_in(&self, gfn: u64, n: u64) -> Vec<Mapping> {
        let end = gfn.saturating_add(n).min(self.pages);
        let mut out = Vec::new();
        if gfn >= end {
            return out;
        }
        for level in Level::DESCENDING {
            let first = gfn / level.pages();
            let last = (end - 1) / level.pages();
            for idx in first..=last {
                let base = idx * level.pages();
                if let Some(kind) = decode(self.entry(level, base)) {
                    out.push(Mapping { base, level, kind });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lookup_zap() {
        let mut t = Tdp::new(1024 * 1024);
        let m = Mapping {
            base: 512,
            level: Level::L2M,
            kind: Kind::Private,
        };
        assert!(t.map(m).is_empty());
        assert_eq!(t.lookup(700), Some(m));
        assert_eq!(t.lookup(511), None);
        assert_eq!(t.count(Level::L2M), 1);
        // Zapping one page removes the whole 2 MiB mapping.
        assert_eq!(t.zap(1000, 1), vec![m]);
        assert_eq!(t.lookup(700), None);
        assert_eq!(t.count(Level::L2M), 0);
    }

    #[test]
    fn a_larger_mapping_replaces_the_smaller_ones() {
        let mut t = Tdp::new(1 << 20);
        for gfn in [0, 5, 511] {
            t.map(Mapping {
                base: gfn,
                level: Level::L4K,
                kind: Kind::Shared,
            });
        }
        let big = Mapping {
            base: 0,
            level: Level::L1G,
            kind: Kind::Shared,
        };
        let removed = t.map(big);
        assert_eq!(removed.len(), 3);
        assert_eq!(t.count(Level::L4K), 0);
        assert_eq!(t.lookup(262_143), Some(big));
        assert_eq!(t.lookup(262_144), None);
        assert_eq!(t.mappings_in(0, 1 << 20), vec![big]);
    }
}
