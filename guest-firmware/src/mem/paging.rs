//! Four-level x86-64 page tables for both platforms. On SEV-SNP private mappings carry
//! the C-bit in the physical address field and shared mappings do not; on TDX it is
//! the other way round: shared mappings carry the shared bit (`1 << (GPAW - 1)`,
//! docs/specs.md 6.3) and private ones do not. [`PageTables`] holds both masks (one of
//! them is zero).

use super::phys_to_virt;

/// Present.
pub const PRESENT: u64 = 1 << 0;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// User accessible.
pub const USER: u64 = 1 << 2;
/// Large page (PS) in a PDPT or PD entry.
pub const HUGE: u64 = 1 << 7;
/// Global.
pub const GLOBAL: u64 = 1 << 8;
/// No-execute.
pub const NO_EXECUTE: u64 = 1 << 63;

const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const PAGE_SIZE_2M_MASK: u64 = 0x1F_FFFF;

/// Drop the TLB entry of `va` after its mapping changed (INVLPG). Host unit tests
/// run in ring 3, where INVLPG faults, and their page tables are never live: there
/// is nothing to flush.
fn flush(va: u64) {
    if va < nacre_shared_abi::layout::USER_VA_END {
        // Other vCPUs may hold the old translation too.
        crate::arch::smp::note_unmapped();
    }
    flush_local(va);
}

/// Drop this vCPU's TLB entry of `va` only.
fn flush_local(va: u64) {
    #[cfg(not(any(test, feature = "fuzzing")))]
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va));
    #[cfg(any(test, feature = "fuzzing"))]
    let _ = va;
}

/// Where a page-table frame comes from.
pub trait TableAlloc {
    /// A zeroed, validated 4 KiB frame (its GPA), or `None`.
    fn alloc_table(&mut self) -> Option<u64>;
}

/// One address space (a handle on its root; copies share the tables).
#[derive(Debug, Clone, Copy)]
pub struct PageTables {
    pml4: u64,
    /// Set in the address of every private mapping and table (SNP C-bit, else 0).
    c_bit: u64,
    /// Set in the address of every shared mapping (TDX shared bit, else 0).
    shared_bit: u64,
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1FF) as usize
}

impl PageTables {
    /// New empty tables whose root is the zeroed frame `pml4_gpa`. `c_bit_mask` is set
    /// in private entries (SEV-SNP), `shared_bit_mask` in shared ones (TDX).
    pub fn new(pml4_gpa: u64, c_bit_mask: u64, shared_bit_mask: u64) -> Self {
        Self {
            pml4: pml4_gpa,
            c_bit: c_bit_mask,
            shared_bit: shared_bit_mask,
        }
    }

    /// Both address bits that are not part of a frame's GPA.
    fn tag_bits(&self) -> u64 {
        self.c_bit | self.shared_bit
    }

    /// The value to load into CR3 (private root).
    pub fn cr3(&self) -> u64 {
        self.pml4 | self.c_bit
    }

    fn entry_ptr(table_gpa: u64, idx: usize) -> *mut u64 {
        (phys_to_virt(table_gpa) as *mut u64).wrapping_add(idx)
    }

    fn read(ptr: *mut u64) -> u64 {
        // SAFETY: page-table frames are private, validated and mapped by
        // `phys_to_virt`; entries are naturally aligned u64s.
        unsafe { ptr.read_volatile() }
    }

    fn write(ptr: *mut u64, v: u64) {
        // SAFETY: `ptr` points into a page-table frame (callers only pass pointers
        // from `entry_ptr`, index < 512), which is private, validated and mapped by
        // `phys_to_virt`; entries are naturally aligned u64s. The CPU reads entries
        // but never holds a Rust reference to them, and a changed entry is followed by
        // a TLB flush of what it mapped.
        unsafe { ptr.write_volatile(v) }
    }

    /// The entry pointer for `va` at `level` (0 = PTE, 1 = PDE, 2 = PDPTE), creating
    /// intermediate tables.
    fn walk_create(&mut self, va: u64, level: u32, alloc: &mut dyn TableAlloc) -> Option<*mut u64> {
        let mut table = self.pml4;
        let mut l = 3;
        while l > level {
            let ptr = Self::entry_ptr(table, index(va, l));
            let e = Self::read(ptr);
            if e & PRESENT == 0 {
                let t = alloc.alloc_table()?;
                Self::write(ptr, t | self.c_bit | PRESENT | WRITABLE | USER);
                table = t;
            } else if e & HUGE != 0 {
                return None;
            } else {
                table = e & ADDR_MASK & !self.tag_bits();
            }
            l -= 1;
        }
        Some(Self::entry_ptr(table, index(va, level)))
    }

    /// Find the leaf entry for `va`: (pointer, level).
    fn walk(&self, va: u64) -> Option<(*mut u64, u32)> {
        let mut table = self.pml4;
        let mut l = 3;
        loop {
            let ptr = Self::entry_ptr(table, index(va, l));
            let e = Self::read(ptr);
            if e & PRESENT == 0 {
                return None;
            }
            if l == 0 || (e & HUGE != 0 && l <= 2) {
                return Some((ptr, l));
            }
            table = e & ADDR_MASK & !self.tag_bits();
            l -= 1;
        }
    }

    /// Map one 4 KiB page. `private` selects the C-bit.
    pub fn map_4k(
        &mut self,
        va: u64,
        gpa: u64,
        flags: u64,
        private: bool,
        alloc: &mut dyn TableAlloc,
    ) -> Option<()> {
        self.map_range_4k(va, gpa, 1, flags, private, alloc)
    }

    /// Map `n` consecutive 4 KiB pages from `va` to consecutive frames from `gpa`,
    /// walking the tables once per page table rather than once per page (every
    /// instruction counts where ring 0 is emulated, see `docs/design.md`).
    pub fn map_range_4k(
        &mut self,
        va: u64,
        gpa: u64,
        n: u64,
        flags: u64,
        private: bool,
        alloc: &mut dyn TableAlloc,
    ) -> Option<()> {
        let c = if private { self.c_bit } else { self.shared_bit };
        let mut i = 0;
        while i < n {
            let at = va + i * 4096;
            let ptr = self.walk_create(at, 0, alloc)?;
            let in_table = (n - i).min(512 - index(at, 0) as u64);
            for j in 0..in_table {
                let p = ptr.wrapping_add(j as usize);
                let old = Self::read(p);
                Self::write(p, (gpa + (i + j) * 4096) | c | flags | PRESENT);
                if old & PRESENT != 0 {
                    flush(at + j * 4096);
                }
            }
            i += in_table;
        }
        Some(())
    }

    /// Create the page table that will hold the 4 KiB mapping of `va`.
    pub fn prepare_4k(&mut self, va: u64, alloc: &mut dyn TableAlloc) -> Option<()> {
        self.walk_create(va, 0, alloc).map(|_| ())
    }

    /// Create the page directories covering `[va, va + len)` without mapping anything,
    /// so that later 2 MiB mappings there need no allocation.
    pub fn prepare_2m(&mut self, va: u64, len: u64, alloc: &mut dyn TableAlloc) -> Option<()> {
        let mut at = va;
        while at < va + len {
            self.walk_create(at, 1, alloc)?;
            at += 1 << 30;
        }
        Some(())
    }

    /// Map one 2 MiB page (private).
    pub fn map_2m(
        &mut self,
        va: u64,
        gpa: u64,
        flags: u64,
        alloc: &mut dyn TableAlloc,
    ) -> Option<()> {
        self.map_range_2m(va, gpa, 1, flags, alloc)
    }

    /// Map `n` consecutive private 2 MiB pages, one table walk per page directory.
    pub fn map_range_2m(
        &mut self,
        va: u64,
        gpa: u64,
        n: u64,
        flags: u64,
        alloc: &mut dyn TableAlloc,
    ) -> Option<()> {
        self.map_range_2m_as(va, gpa, n, flags, true, alloc)
    }

    /// Map `n` consecutive 2 MiB pages, private or shared.
    pub fn map_range_2m_as(
        &mut self,
        va: u64,
        gpa: u64,
        n: u64,
        flags: u64,
        private: bool,
        alloc: &mut dyn TableAlloc,
    ) -> Option<()> {
        let c = if private { self.c_bit } else { self.shared_bit };
        let mut i = 0;
        while i < n {
            let at = va + i * (PAGE_SIZE_2M_MASK + 1);
            let ptr = self.walk_create(at, 1, alloc)?;
            let in_table = (n - i).min(512 - index(at, 1) as u64);
            for j in 0..in_table {
                let frame = gpa + (i + j) * (PAGE_SIZE_2M_MASK + 1);
                let p = ptr.wrapping_add(j as usize);
                let old = Self::read(p);
                Self::write(p, frame | c | flags | PRESENT | HUGE);
                if old & PRESENT != 0 {
                    flush(at + j * (PAGE_SIZE_2M_MASK + 1));
                }
            }
            i += in_table;
        }
        Some(())
    }

    /// The GPA (without C-bit) and flags a 4 KiB-mapped `va` translates to.
    pub fn translate(&self, va: u64) -> Option<(u64, u64)> {
        let (ptr, level) = self.walk(va)?;
        let e = Self::read(ptr);
        let size_mask = (1u64 << (12 + 9 * level)) - 1;
        let base = e & ADDR_MASK & !self.tag_bits() & !size_mask;
        Some((
            base | (va & size_mask),
            e & !ADDR_MASK | (e & self.tag_bits()),
        ))
    }

    /// Split the 2 MiB mapping covering `va` (if any) into 512 4 KiB mappings with
    /// the same frames and rights.
    pub fn split_huge(&mut self, va: u64, alloc: &mut dyn TableAlloc) -> Option<()> {
        let (ptr, level) = self.walk(va)?;
        if level == 0 {
            return Some(());
        }
        if level != 1 {
            return None;
        }
        let e = Self::read(ptr);
        let base = e & ADDR_MASK & !self.tag_bits() & !(PAGE_SIZE_2M_MASK);
        let flags = (e & !ADDR_MASK & !HUGE) | (e & self.tag_bits());
        let table = alloc.alloc_table()?;
        for i in 0..512u64 {
            Self::write(
                Self::entry_ptr(table, i as usize),
                (base + i * 4096) | flags,
            );
        }
        Self::write(ptr, table | self.c_bit | PRESENT | WRITABLE | USER);
        let start = va & !PAGE_SIZE_2M_MASK;
        for i in 0..512u64 {
            flush(start + i * 4096);
        }
        Some(())
    }

    /// Whether `va` is mapped by a 2 MiB page.
    pub fn is_2m(&self, va: u64) -> bool {
        matches!(self.walk(va), Some((_, 1)))
    }

    /// Whether nothing is mapped in the 2 MiB region of `va` (its PD entry is empty).
    pub fn region_2m_empty(&self, va: u64) -> bool {
        let mut table = self.pml4;
        for l in [3u32, 2] {
            let e = Self::read(Self::entry_ptr(table, index(va, l)));
            if e & PRESENT == 0 {
                return true;
            }
            if e & HUGE != 0 {
                return false;
            }
            table = e & ADDR_MASK & !self.tag_bits();
        }
        Self::read(Self::entry_ptr(table, index(va, 1))) & PRESENT == 0
    }

    /// Remove the 4 KiB mapping of `va`, returning its GPA (a 2 MiB mapping must
    /// have been split first).
    pub fn unmap_4k(&mut self, va: u64) -> Option<u64> {
        let (ptr, level) = self.walk(va)?;
        if level != 0 {
            return None;
        }
        let e = Self::read(ptr);
        Self::write(ptr, 0);
        flush(va);
        Some(e & ADDR_MASK & !self.tag_bits())
    }

    /// Replace the flags of the 4 KiB mapping of `va` (keeping address and C-bit).
    pub fn set_flags_4k(&mut self, va: u64, flags: u64) -> Option<()> {
        let (ptr, level) = self.walk(va)?;
        if level != 0 {
            return None;
        }
        let e = Self::read(ptr);
        Self::write(ptr, (e & ADDR_MASK) | flags | PRESENT);
        flush(va);
        Some(())
    }

    /// The first present leaf mapping at or after `from` and below `end`: its virtual
    /// address, level (0 = 4 KiB, 1 = 2 MiB) and entry. Absent tables are skipped
    /// whole, so sparse ranges cost little.
    pub fn next_leaf(&self, from: u64, end: u64) -> Option<(u64, u32, u64)> {
        let mut va = from;
        'outer: while va < end {
            let mut table = self.pml4;
            let mut l = 3u32;
            loop {
                let span = 1u64 << (12 + 9 * l);
                let e = Self::read(Self::entry_ptr(table, index(va, l)));
                if e & PRESENT == 0 {
                    va = (va & !(span - 1)).checked_add(span)?;
                    continue 'outer;
                }
                if l == 0 || (e & HUGE != 0 && l <= 2) {
                    return Some((va & !(span - 1), l, e));
                }
                table = e & ADDR_MASK & !self.tag_bits();
                l -= 1;
                if l == 0 {
                    // Scan the page table itself without walking down again per entry.
                    let region_end = (va & !PAGE_SIZE_2M_MASK) + PAGE_SIZE_2M_MASK + 1;
                    let stop = region_end.min(end);
                    while va < stop {
                        let e = Self::read(Self::entry_ptr(table, index(va, 0)));
                        if e & PRESENT != 0 {
                            return Some((va & !0xFFF, 0, e));
                        }
                        va = (va & !0xFFF) + 4096;
                    }
                    continue 'outer;
                }
            }
        }
        None
    }

    /// The GPA (without tag bits) of a leaf entry of `level`.
    pub fn leaf_gpa(&self, entry: u64, level: u32) -> u64 {
        entry & ADDR_MASK & !self.tag_bits() & !((1u64 << (12 + 9 * level)) - 1)
    }

    /// Clear the leaf of `level` mapping `va` (as [`Self::next_leaf`] found it).
    pub fn clear_leaf(&mut self, va: u64, level: u32) {
        if self.take_leaf(va, level) {
            flush(va);
        }
    }

    /// [`Self::clear_leaf`] for a mapping only this vCPU used: its TLB alone is
    /// flushed (no shoot-down of the others'; the zeroing window, `kernel.rs`).
    pub fn clear_leaf_local(&mut self, va: u64, level: u32) {
        if self.take_leaf(va, level) {
            flush_local(va);
        }
    }

    /// Empty the leaf of `level` mapping `va`, if that is how it is mapped (the
    /// caller flushes); whether it was.
    fn take_leaf(&mut self, va: u64, level: u32) -> bool {
        match self.walk(va) {
            Some((ptr, l)) if l == level => {
                Self::write(ptr, 0);
                true
            }
            _ => false,
        }
    }

    /// Replace the flags of the leaf of `level` mapping `va`, keeping its address,
    /// tag bits and size.
    pub fn set_leaf_flags(&mut self, va: u64, level: u32, flags: u64) {
        if let Some((ptr, l)) = self.walk(va) {
            if l == level {
                let e = Self::read(ptr);
                let keep = ADDR_MASK | if level > 0 { HUGE } else { 0 };
                Self::write(ptr, (e & keep) | flags | PRESENT);
                flush(va);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PteMasks;
    use crate::testing::{page_tables, BumpTables, FakeRam};

    const MIB: u64 = 1 << 20;
    /// A user-half address with all four table levels distinct from 0.
    const VA: u64 = 0x0000_1234_5660_0000;
    /// The SNP C-bit the emulated platform uses (bit 47).
    const C_BIT: u64 = 1 << 47;
    /// The TDX shared bit for a 48-bit GPA width.
    const SHARED: u64 = 1 << 47;

    fn setup(masks: PteMasks) -> (FakeRam, BumpTables, PageTables) {
        let ram = FakeRam::new((8 * MIB) as usize);
        let mut pool = BumpTables {
            next: 0,
            end: 2 * MIB,
        };
        let pt = page_tables(&mut pool, masks);
        (ram, pool, pt)
    }

    fn snp() -> PteMasks {
        PteMasks {
            private: C_BIT,
            shared: 0,
        }
    }

    fn tdx() -> PteMasks {
        PteMasks {
            private: 0,
            shared: SHARED,
        }
    }

    #[test]
    fn a_4k_mapping_translates_to_its_frame_and_flags() {
        let (_ram, mut pool, mut pt) = setup(snp());
        pt.map_4k(VA, 3 * MIB, WRITABLE | NO_EXECUTE, true, &mut pool)
            .expect("mapped");
        let (gpa, flags) = pt.translate(VA + 0x42).expect("translates");
        assert_eq!(gpa, 3 * MIB + 0x42);
        assert_eq!(
            flags & (PRESENT | WRITABLE | NO_EXECUTE | USER),
            PRESENT | WRITABLE | NO_EXECUTE
        );
        assert_eq!(pt.translate(VA + 4096), None);
        // The root's value for CR3 carries the C-bit on SNP.
        assert_eq!(pt.cr3() & C_BIT, C_BIT);
    }

    #[test]
    fn snp_puts_the_c_bit_in_private_mappings_only() {
        let (_ram, mut pool, mut pt) = setup(snp());
        pt.map_4k(VA, 3 * MIB, 0, true, &mut pool).expect("private");
        pt.map_4k(VA + 4096, 3 * MIB + 4096, 0, false, &mut pool)
            .expect("shared");
        let private = pt.translate(VA).expect("private").1;
        let shared = pt.translate(VA + 4096).expect("shared").1;
        assert_eq!(private & C_BIT, C_BIT);
        assert_eq!(shared & C_BIT, 0);
        // Either way the GPA comes back without the bit.
        assert_eq!(pt.translate(VA).map(|t| t.0), Some(3 * MIB));
    }

    #[test]
    fn tdx_puts_the_shared_bit_in_shared_mappings_only() {
        let (_ram, mut pool, mut pt) = setup(tdx());
        pt.map_range_2m_as(VA, 4 * MIB, 1, WRITABLE, false, &mut pool)
            .expect("shared");
        pt.map_4k(VA + 2 * MIB, 3 * MIB, 0, true, &mut pool)
            .expect("private");
        assert_eq!(pt.translate(VA).expect("shared").1 & SHARED, SHARED);
        assert_eq!(pt.translate(VA + 2 * MIB).expect("private").1 & SHARED, 0);
        assert_eq!(pt.translate(VA + 5).map(|t| t.0), Some(4 * MIB + 5));
        assert_eq!(pt.cr3() & SHARED, 0);
    }

    #[test]
    fn a_4k_run_crosses_page_tables() {
        let (_ram, mut pool, mut pt) = setup(snp());
        let start = VA + 2 * MIB - 2 * 4096;
        pt.map_range_4k(start, 5 * MIB, 4, USER, true, &mut pool)
            .expect("mapped");
        for i in 0..4 {
            assert_eq!(
                pt.translate(start + i * 4096).map(|t| t.0),
                Some(5 * MIB + i * 4096)
            );
        }
        assert!(!pt.is_2m(start));
    }

    #[test]
    fn a_2m_mapping_splits_into_the_same_frames_and_rights() {
        let (_ram, mut pool, mut pt) = setup(snp());
        pt.map_2m(VA, 4 * MIB, USER | WRITABLE, &mut pool)
            .expect("mapped");
        assert!(pt.is_2m(VA + 12345));
        assert!(!pt.region_2m_empty(VA));
        let before = pt.translate(VA + 0x1_2345).expect("2 MiB");
        pt.split_huge(VA + 0x1000, &mut pool).expect("split");
        assert!(!pt.is_2m(VA));
        let after = pt.translate(VA + 0x1_2345).expect("4 KiB");
        assert_eq!(after.0, before.0);
        assert_eq!(after.1 & (USER | WRITABLE | C_BIT), USER | WRITABLE | C_BIT);
    }

    #[test]
    fn a_4k_mapping_cannot_go_inside_a_2m_one() {
        let (_ram, mut pool, mut pt) = setup(snp());
        pt.map_2m(VA, 4 * MIB, USER, &mut pool).expect("mapped");
        assert_eq!(pt.map_4k(VA + 4096, 3 * MIB, USER, true, &mut pool), None);
        assert_eq!(
            pt.unmap_4k(VA),
            None,
            "a 2 MiB mapping is not unmapped 4 KiB-wise"
        );
    }

    #[test]
    fn unmapping_and_reflagging_4k_pages() {
        let (_ram, mut pool, mut pt) = setup(snp());
        pt.map_4k(VA, 3 * MIB, USER | WRITABLE, true, &mut pool)
            .expect("mapped");
        pt.set_flags_4k(VA, USER).expect("reflagged");
        let (gpa, flags) = pt.translate(VA).expect("still mapped");
        assert_eq!((gpa, flags & WRITABLE), (3 * MIB, 0));
        assert_eq!(flags & C_BIT, C_BIT, "the C-bit stays");
        assert_eq!(pt.unmap_4k(VA), Some(3 * MIB));
        assert_eq!(pt.translate(VA), None);
    }

    #[test]
    fn next_leaf_skips_what_is_not_mapped() {
        let (_ram, mut pool, mut pt) = setup(snp());
        pt.map_4k(VA + 7 * 4096, 3 * MIB, USER, true, &mut pool)
            .expect("mapped");
        pt.map_2m(VA + 4 * MIB, 4 * MIB, USER, &mut pool)
            .expect("mapped");
        let (at, level, entry) = pt.next_leaf(VA, VA + 8 * MIB).expect("a leaf");
        assert_eq!(
            (at, level, pt.leaf_gpa(entry, level)),
            (VA + 7 * 4096, 0, 3 * MIB)
        );
        let (at, level, entry) = pt.next_leaf(at + 4096, VA + 8 * MIB).expect("a leaf");
        assert_eq!(
            (at, level, pt.leaf_gpa(entry, level)),
            (VA + 4 * MIB, 1, 4 * MIB)
        );
        assert_eq!(pt.next_leaf(at + 2 * MIB, VA + 8 * MIB), None);
        pt.clear_leaf(VA + 4 * MIB, 1);
        assert!(pt.region_2m_empty(VA + 4 * MIB));
    }

    #[test]
    fn mapping_fails_cleanly_when_no_table_can_be_had() {
        let (_ram, _pool, mut pt) = setup(snp());
        let mut empty = BumpTables { next: 0, end: 0 };
        assert_eq!(pt.map_4k(VA, 3 * MIB, USER, true, &mut empty), None);
        assert_eq!(pt.translate(VA), None);
    }
}
