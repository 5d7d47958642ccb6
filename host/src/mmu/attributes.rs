//! Per-GFN memory attributes: whether the guest wants each page private or shared.
//!
//! This is the source of truth for what the guest asked for (docs/design.md, "The rules the
//! host MMU keeps"; KVM `KVM_SET_MEMORY_ATTRIBUTES` with `KVM_MEMORY_ATTRIBUTE_PRIVATE`).
//! It knows nothing of host pages or mappings; changing it is the caller's cue to zap the
//! TDP range.
//!
//! Storage is one bit per 4 KiB page (set = private), so 4 GiB of guest RAM costs
//! 128 KiB.

/// Whether a page is meant to be private (encrypted, guest-owned) or shared with the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Private: reached through the private view (C-bit set on SNP).
    Private,
    /// Shared: reached through the shared view.
    Shared,
}

impl Kind {
    /// The other kind.
    pub fn other(self) -> Self {
        match self {
            Self::Private => Self::Shared,
            Self::Shared => Self::Private,
        }
    }
}

/// The attribute bitmap over `pages` 4 KiB pages.
#[derive(Clone, Debug)]
pub struct Attributes {
    /// Bit set = private.
    words: Vec<u64>,
    pages: u64,
}

impl Attributes {
    /// Attributes for `pages` pages, all `initial`.
    pub fn new(pages: u64, initial: Kind) -> Self {
        let n = usize::try_from(pages.div_ceil(64)).unwrap_or(usize::MAX);
        let fill = if initial == Kind::Private { !0 } else { 0 };
        let mut s = Self {
            words: vec![fill; n],
            pages,
        };
        s.clear_tail();
        s
    }

    /// Bits past the last page are kept clear so word-wise scans stay exact.
    fn clear_tail(&mut self) {
        let rem = self.pages % 64;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
    }

    /// Number of pages covered.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The attribute of `gfn`, `None` outside guest RAM.
    pub fn get(&self, gfn: u64) -> Option<Kind> {
        if gfn >= self.pages {
            return None;
        }
        let w = self.words.get(usize::try_from(gfn / 64).ok()?)?;
        Some(if w >> (gfn % 64) & 1 == 1 {
            Kind::Private
        } else {
            Kind::Shared
        })
    }

    /// Mask of the bits `[lo, hi)` of one word (`hi <= 64`).
    fn mask(lo: u64, hi: u64) -> u64 {
        let upper = if hi >= 64 { !0 } else { (1u64 << hi) - 1 };
        upper & !((1u64 << lo) - 1)
    }

    /// Calls `f(word index, mask)` for each word touched by `[gfn, gfn + n)`.
    fn for_words(gfn: u64, n: u64, mut f: impl FnMut(usize, u64) -> bool) -> bool {
        let end = gfn + n;
        let mut at = gfn;
        while at < end {
            let word = at / 64;
            let hi = (end - word * 64).min(64);
            let Ok(i) = usize::try_from(word) else {
                return false;
            };
            if !f(i, Self::mask(at % 64, hi)) {
                return false;
            }
            at = (word + 1) * 64;
        }
        true
    }

    /// Whether every page of `[gfn, gfn + n)` lies in guest RAM and has attribute `kind`.
    pub fn uniform(&self, gfn: u64, n: u64, kind: Kind) -> bool {
        if gfn.checked_add(n).is_none_or(|e| e > self.pages) {
            return false;
        }
        Self::for_words(gfn, n, |i, m| {
            let w = self.words.get(i).copied().unwrap_or(0);
            match kind {
                Kind::Private => w & m == m,
                Kind::Shared => w & m == 0,
            }
        })
    }

    /// Number of pages in `[gfn, gfn + n)` (clamped to RAM) whose attribute is not `kind`.
    pub fn count_other(&self, gfn: u64, n: u64, kind: Kind) -> u64 {
        let end = gfn.saturating_add(n).min(self.pages);
        if gfn >= end {
            return 0;
        }
        let mut count = 0u64;
        Self::for_words(gfn, end - gfn, |i, m| {
            let w = self.words.get(i).copied().unwrap_or(0);
            let private = u64::from((w & m).count_ones());
            count += match kind {
                Kind::Private => u64::from(m.count_ones()) - private,
                Kind::Shared => private,
            };
            true
        });
        count
    }

    /// Set `[gfn, gfn + n)` to `kind`. `false` (and nothing changed) if the range leaves
    /// guest RAM.
    pub fn set(&mut self, gfn: u64, n: u64, kind: Kind) -> bool {
        if gfn.checked_add(n).is_none_or(|e| e > self.pages) {
            return false;
        }
        let words = &mut self.words;
        Self::for_words(gfn, n, |i, m| {
            if let Some(w) = words.get_mut(i) {
                match kind {
                    Kind::Private => *w |= m,
                    Kind::Shared => *w &= !m,
                }
            }
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_uniform_and_tail_is_clear() {
        let a = Attributes::new(100, Kind::Private);
        assert!(a.uniform(0, 100, Kind::Private));
        assert!(!a.uniform(0, 101, Kind::Private), "past the end");
        assert_eq!(a.get(100), None);
        assert_eq!(a.count_other(0, 1000, Kind::Shared), 100);
    }

    proptest! {
        #[test]
        fn matches_a_per_page_model(
            ops in prop::collection::vec((0u64..300, 0u64..300, any::<bool>()), 1..40),
            probe in (0u64..300, 0u64..300),
        ) {
            let pages = 257;
            let mut a = Attributes::new(pages, Kind::Shared);
            let mut model = vec![Kind::Shared; pages as usize];
            for (gfn, n, private) in ops {
                let kind = if private { Kind::Private } else { Kind::Shared };
                let ok = a.set(gfn, n, kind);
                prop_assert_eq!(ok, gfn + n <= pages);
                if ok {
                    for p in gfn..gfn + n {
                        model[p as usize] = kind;
                    }
                }
            }
            for (p, k) in model.iter().enumerate() {
                prop_assert_eq!(a.get(p as u64), Some(*k));
            }
            let (gfn, n) = probe;
            for kind in [Kind::Private, Kind::Shared] {
                let in_ram = gfn + n <= pages;
                let want = in_ram && (gfn..gfn + n).all(|p| model[p as usize] == kind);
                prop_assert_eq!(a.uniform(gfn, n, kind), want);
                let end = (gfn + n).min(pages);
                let other = (gfn.min(end)..end).filter(|&p| model[p as usize] != kind).count();
                prop_assert_eq!(a.count_other(gfn, n, kind), other as u64);
            }
        }
    }
}
