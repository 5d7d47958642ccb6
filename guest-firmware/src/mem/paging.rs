//! Four-level x86-64 page tables for both platforms. On SEV-SNP private mappings carry
//! the C-bit in the physical address field and shared mappings do not; on TDX it is
//! the other way round: shared mappings carry the shared bit (`1 << (GPAW - 1)`,
//! SPECS.md 6.3) and private ones do not. [`PageTables`] holds both masks (one of
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
    #[cfg(not(test))]
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va));
    #[cfg(test)]
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
        if let Some((ptr, l)) = self.walk(va) {
            if l == level {
                Self::write(ptr, 0);
                flush(va);
            }
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
