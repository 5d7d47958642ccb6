//! The mirror of the private mappings: KVM's "mirror SPTEs" for a TDX VM.
//!
//! KVM cannot read the S-EPT, so it keeps its own copy of the private page tables and
//! changes the S-EPT (through the TDX module) only together with an entry of the copy.
//! The protocol (Linux `arch/x86/kvm/mmu/tdp_mmu.c`, `set_external_spte_present` and
//! `tdp_mmu_zap_leafs`; `FROZEN_SPTE` in `arch/x86/kvm/mmu/spte.h`) is:
//! 1. freeze: compare-and-exchange the entry from the value the caller read to FROZEN,
//!    failing if anyone changed it meanwhile;
//! 2. perform the SEAMCALL(s) on the S-EPT (AUG, or BLOCK and REMOVE, or BLOCK and
//!    DEMOTE);
//! 3. store the final value, or put the old value back if the SEAMCALL failed.
//!
//! A fault that finds an entry FROZEN retries; a zap waits for it. So whoever froze an
//! entry is the only one changing it and the S-EPT behind it, and when no operation is
//! in flight the mirror and the S-EPT agree.
//!
//! The mirror has two levels: one entry per 2 MiB region (EMPTY, a page table, a 2 MiB
//! leaf, or FROZEN) and one per 4 KiB page (EMPTY, a leaf, or FROZEN; used only under a
//! page table). Each entry is an [`AtomicU8`].

use super::super::tdp::Level;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// 4 KiB pages in a 2 MiB region.
const PAGES_2M: u64 = 512;

const EMPTY: u8 = 0;
const TABLE: u8 = 1;
const LEAF: u8 = 2;
const FROZEN: u8 = 3;

/// The value of one mirror entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MirrorEntry {
    /// Not present.
    Empty,
    /// A page table (2 MiB entries only).
    Table,
    /// A leaf: the page or region is mapped private.
    Leaf,
    /// Being changed together with the S-EPT by someone else.
    Frozen,
}

fn encode(e: MirrorEntry) -> u8 {
    match e {
        MirrorEntry::Empty => EMPTY,
        MirrorEntry::Table => TABLE,
        MirrorEntry::Leaf => LEAF,
        MirrorEntry::Frozen => FROZEN,
    }
}

fn decode(b: u8) -> MirrorEntry {
    match b {
        TABLE => MirrorEntry::Table,
        LEAF => MirrorEntry::Leaf,
        FROZEN => MirrorEntry::Frozen,
        _ => MirrorEntry::Empty,
    }
}

/// Which entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The 2 MiB entry of the region containing this GFN.
    Region(u64),
    /// The 4 KiB entry of this GFN.
    Page(u64),
}

/// The mirror table over the TD's private memory.
#[derive(Debug)]
pub struct Mirror {
    pages: u64,
    l2: Vec<AtomicU8>,
    l1: Vec<AtomicU8>,
    /// Whether [`Mirror::freeze`] really freezes. Always on, except in the test that
    /// shows the freeze is what keeps the mirror and the S-EPT in agreement: off, it
    /// only checks the old value and leaves the entry as it was.
    freeze: AtomicBool,
    /// Test hook: yield inside every frozen window, so that threads meet there.
    window: AtomicBool,
}

/// Exclusive hold on a frozen entry. Consumed by [`Frozen::commit`] or
/// [`Frozen::restore`]; dropped unused it restores the old value.
#[derive(Debug)]
#[must_use = "a frozen entry stays frozen until committed or restored"]
pub struct Frozen<'a> {
    mirror: &'a Mirror,
    slot: Slot,
    old: MirrorEntry,
    done: bool,
}

impl Frozen<'_> {
    /// Store the final value.
    pub fn commit(mut self, new: MirrorEntry) {
        self.mirror.store(self.slot, new);
        self.done = true;
    }

    /// Put the old value back (the SEAMCALL failed).
    pub fn restore(mut self) {
        self.mirror.store(self.slot, self.old);
        self.done = true;
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.mirror.store(self.slot, self.old);
        }
    }
}

impl Mirror {
    /// An empty mirror over `pages` 4 KiB pages.
    pub fn new(pages: u64) -> Self {
        let n = |k: u64| usize::try_from(k).unwrap_or(usize::MAX);
        Self {
            pages,
            l2: (0..n(pages.div_ceil(PAGES_2M)))
                .map(|_| AtomicU8::new(EMPTY))
                .collect(),
            l1: (0..n(pages)).map(|_| AtomicU8::new(EMPTY)).collect(),
            freeze: AtomicBool::new(true),
            window: AtomicBool::new(false),
        }
    }

    fn cell(&self, slot: Slot) -> Option<&AtomicU8> {
        let i = match slot {
            Slot::Region(g) => g / PAGES_2M,
            Slot::Page(g) => g,
        };
        let i = usize::try_from(i).ok()?;
        match slot {
            Slot::Region(_) => self.l2.get(i),
            Slot::Page(_) => self.l1.get(i),
        }
    }

    /// The entry's value now.
    pub fn load(&self, slot: Slot) -> MirrorEntry {
        self.cell(slot)
            .map_or(MirrorEntry::Empty, |c| decode(c.load(Ordering::Acquire)))
    }

    fn store(&self, slot: Slot, e: MirrorEntry) {
        if let Some(c) = self.cell(slot) {
            c.store(encode(e), Ordering::Release);
        }
    }

    /// Freeze `slot` if it still holds `old`; `Err` with what it holds otherwise.
    pub fn freeze(&self, slot: Slot, old: MirrorEntry) -> Result<Frozen<'_>, MirrorEntry> {
        let Some(c) = self.cell(slot) else {
            return Err(MirrorEntry::Empty);
        };
        if self.freeze.load(Ordering::Relaxed) {
            c.compare_exchange(encode(old), FROZEN, Ordering::AcqRel, Ordering::Acquire)
                .map_err(decode)?;
        } else {
            let cur = decode(c.load(Ordering::Acquire));
            if cur != old {
                return Err(cur);
            }
        }
        Ok(Frozen {
            mirror: self,
            slot,
            old,
            done: false,
        })
    }

    /// Store `e` in the 4 KiB entries of a region whose 2 MiB entry the caller holds
    /// frozen (a DEMOTE fills the new page table).
    pub fn fill_table(&self, _parent: &Frozen<'_>, head: u64, e: MirrorEntry) {
        let end = (head + PAGES_2M).min(self.pages);
        for p in head..end {
            self.store(Slot::Page(p), e);
        }
    }

    /// The level of the leaf mapping `gfn`, if a (non-frozen) leaf does.
    pub fn leaf(&self, gfn: u64) -> Option<Level> {
        match self.load(Slot::Region(gfn)) {
            MirrorEntry::Leaf => Some(Level::L2M),
            MirrorEntry::Table if self.load(Slot::Page(gfn)) == MirrorEntry::Leaf => {
                Some(Level::L4K)
            }
            _ => None,
        }
    }

    /// Test hook: turn the freeze off (see the field).
    #[cfg(test)]
    pub(super) fn set_freeze(&self, on: bool) {
        self.freeze.store(on, Ordering::Relaxed);
    }

    /// Test hook: yield in frozen windows.
    #[cfg(test)]
    pub(super) fn set_window(&self, on: bool) {
        self.window.store(on, Ordering::Relaxed);
    }

    /// Called inside every frozen window; yields when the test hook asks for it.
    pub(super) fn window(&self) {
        if self.window.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_is_exclusive_and_restores_on_drop() {
        let m = Mirror::new(1024);
        let f = m.freeze(Slot::Page(5), MirrorEntry::Empty).expect("empty");
        assert_eq!(m.load(Slot::Page(5)), MirrorEntry::Frozen);
        assert_eq!(
            m.freeze(Slot::Page(5), MirrorEntry::Empty).err(),
            Some(MirrorEntry::Frozen)
        );
        f.commit(MirrorEntry::Leaf);
        assert_eq!(m.leaf(5), None, "no page table above it");
        {
            let _t = m
                .freeze(Slot::Region(0), MirrorEntry::Empty)
                .expect("empty");
        }
        assert_eq!(
            m.load(Slot::Region(0)),
            MirrorEntry::Empty,
            "restored on drop"
        );
        m.freeze(Slot::Region(0), MirrorEntry::Empty)
            .expect("empty")
            .commit(MirrorEntry::Table);
        assert_eq!(m.leaf(5), Some(Level::L4K));
        m.set_freeze(false);
        let f = m.freeze(Slot::Page(5), MirrorEntry::Leaf).expect("leaf");
        assert_eq!(
            m.load(Slot::Page(5)),
            MirrorEntry::Leaf,
            "not frozen when off"
        );
        f.restore();
    }
}
