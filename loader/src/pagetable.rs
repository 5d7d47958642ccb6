//! The loader's initial page tables, measured pages at [`INITIAL_PT_GPA`] that map
//! `KERNEL_VA_BASE + x` to GPA `x` for every `x` below [`INITIAL_MAP_SIZE`] (1 GiB) with
//! 2 MiB pages, so the firmware's 64-bit code runs with paging on.
//!
//! SEV-SNP ([`InitialPageTables`], three pages; the BSP starts with CR3 pointing at
//! them):
//!
//! ```text
//! PML4 (INITIAL_PT_GPA)          [511] -> PDPT
//! PDPT (INITIAL_PT_GPA + 4 KiB)  [510] -> PD
//! PD   (INITIAL_PT_GPA + 8 KiB)  [i]   =  i * 2 MiB, PS, for i in 0..512
//! ```
//!
//! Every SEV-SNP entry is present and writable and carries the encryption bit in its
//! address, so all of the mapping is private memory.
//!
//! TDX ([`TdxInitialPageTables`], [`INITIAL_PT_PAGES_TDX`] pages; the BSP starts in
//! 32-bit mode with paging off at the reset vector, and the firmware's 32-bit entry
//! code loads CR3 with [`INITIAL_PT_GPA`] and turns paging on):
//!
//! ```text
//! PML4     (INITIAL_PT_GPA)           [511], [0] -> PDPT
//! PDPT     (INITIAL_PT_GPA + 4 KiB)   [510] -> PD, [3] -> RESET PD
//! PD       (INITIAL_PT_GPA + 8 KiB)   [i]   =  i * 2 MiB, PS, for i in 0..512
//! RESET PD (INITIAL_PT_GPA + 12 KiB)  [511] =  0xFFE0_0000, PS
//! ```
//!
//! so the 2 MiB region holding the reset page ([`TDX_RESET_PAGE_GPA`]) is also mapped
//! to itself and the entry code keeps running once paging is on. No TDX entry carries an
//! encryption or shared bit: a GPA without the shared bit is private (docs/specs.md 6.3).
//!
//! Entry format: AMD APM vol. 2, 5.3 "Long-Mode Page Translation" (figures 5-18 to 5-25);
//! Intel SDM vol. 3A, 4.5 "4-Level Paging" has the same bits.

use nacre_shared_abi::layout::{
    align_down, INITIAL_MAP_SIZE, INITIAL_PT_GPA, INITIAL_PT_PAGES, INITIAL_PT_PAGES_TDX,
    KERNEL_VA_BASE, PAGE_SIZE_1G, PAGE_SIZE_2M, PAGE_SIZE_4K, TDX_RESET_PAGE_GPA,
};

/// P: the entry is valid.
pub const PTE_PRESENT: u64 = 1 << 0;
/// R/W: writes are allowed.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// PS: a PDE that maps a 2 MiB page rather than pointing at a page table.
pub const PTE_PAGE_SIZE: u64 = 1 << 7;

/// Entries in one 4 KiB table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// One 4 KiB table of 64-bit entries.
pub type PageTable = [u64; ENTRIES_PER_TABLE];

/// Index into the PML4 (bits 47:39 of a virtual address).
pub const fn pml4_index(va: u64) -> usize {
    ((va >> 39) & 0x1ff) as usize
}

/// Index into a PDPT (bits 38:30).
pub const fn pdpt_index(va: u64) -> usize {
    ((va >> 30) & 0x1ff) as usize
}

/// Index into a PD (bits 29:21).
pub const fn pd_index(va: u64) -> usize {
    ((va >> 21) & 0x1ff) as usize
}

// The whole initial map is one PD: it starts on a 1 GiB boundary and is 1 GiB long.
const _: () = assert!(KERNEL_VA_BASE.is_multiple_of(PAGE_SIZE_1G));
const _: () = assert!(INITIAL_MAP_SIZE == PAGE_SIZE_2M * ENTRIES_PER_TABLE as u64);
const _: () = assert!(INITIAL_PT_PAGES == 3);
const _: () = assert!(pml4_index(KERNEL_VA_BASE) == 511 && pdpt_index(KERNEL_VA_BASE) == 510);
// The TDX reset page's identity map: PML4[0], PDPT[3], PD[511], away from the kernel
// window's PDPT entry.
const _: () = assert!(INITIAL_PT_PAGES_TDX == 4);
const _: () = assert!(pml4_index(TDX_RESET_PAGE_GPA) == 0);
const _: () = assert!(pdpt_index(TDX_RESET_PAGE_GPA) == 3 && pd_index(TDX_RESET_PAGE_GPA) == 511);
const _: () = assert!(pdpt_index(TDX_RESET_PAGE_GPA) != pdpt_index(KERNEL_VA_BASE));

/// Little-endian 4 KiB pages of `tables`, in order.
fn tables_to_pages<const N: usize>(tables: [&PageTable; N]) -> [[u8; PAGE_SIZE_4K as usize]; N] {
    let mut pages = [[0u8; PAGE_SIZE_4K as usize]; N];
    for (page, table) in pages.iter_mut().zip(tables) {
        for (bytes, entry) in page.chunks_exact_mut(8).zip(table) {
            bytes.copy_from_slice(&entry.to_le_bytes());
        }
    }
    pages
}

/// The three tables, in the order they are placed from [`INITIAL_PT_GPA`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialPageTables {
    /// Top level, at `INITIAL_PT_GPA`.
    pub pml4: PageTable,
    /// At `INITIAL_PT_GPA + 4 KiB`.
    pub pdpt: PageTable,
    /// At `INITIAL_PT_GPA + 8 KiB`.
    pub pd: PageTable,
}

impl InitialPageTables {
    /// GPA of the PML4 (the value of CR3 without the encryption bit).
    pub const PML4_GPA: u64 = INITIAL_PT_GPA;
    /// GPA of the PDPT.
    pub const PDPT_GPA: u64 = INITIAL_PT_GPA + PAGE_SIZE_4K;
    /// GPA of the PD.
    pub const PD_GPA: u64 = INITIAL_PT_GPA + 2 * PAGE_SIZE_4K;

    /// Build the tables. `c_bit_mask` is `1 << c_bit` (the encryption bit, set in every
    /// entry's address) or 0 on a platform without one.
    pub fn new(c_bit_mask: u64) -> Self {
        let flags = PTE_PRESENT | PTE_WRITABLE | c_bit_mask;
        let mut pml4 = [0; ENTRIES_PER_TABLE];
        let mut pdpt = [0; ENTRIES_PER_TABLE];
        let mut pd = [0; ENTRIES_PER_TABLE];
        pml4[pml4_index(KERNEL_VA_BASE)] = Self::PDPT_GPA | flags;
        pdpt[pdpt_index(KERNEL_VA_BASE)] = Self::PD_GPA | flags;
        for (i, entry) in pd.iter_mut().enumerate() {
            *entry = (i as u64 * PAGE_SIZE_2M) | flags | PTE_PAGE_SIZE;
        }
        Self { pml4, pdpt, pd }
    }

    /// The tables as three little-endian 4 KiB pages: PML4, PDPT, PD.
    pub fn to_pages(&self) -> [[u8; PAGE_SIZE_4K as usize]; 3] {
        tables_to_pages([&self.pml4, &self.pdpt, &self.pd])
    }
}

/// The TDX view's four tables (module documentation), in the order they are placed from
/// [`INITIAL_PT_GPA`]. No entry carries an encryption bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxInitialPageTables {
    /// Top level, at `INITIAL_PT_GPA`: entries 511 (kernel window) and 0 (reset page).
    pub pml4: PageTable,
    /// At `INITIAL_PT_GPA + 4 KiB`: entries 510 (kernel window) and 3 (reset page).
    pub pdpt: PageTable,
    /// At `INITIAL_PT_GPA + 8 KiB`: the kernel window, as in [`InitialPageTables::pd`].
    pub pd: PageTable,
    /// At `INITIAL_PT_GPA + 12 KiB`: entry 511 maps the 2 MiB page holding the reset
    /// page to itself.
    pub reset_pd: PageTable,
}

impl TdxInitialPageTables {
    /// GPA of the PML4 (the value the 32-bit entry code loads into CR3).
    pub const PML4_GPA: u64 = INITIAL_PT_GPA;
    /// GPA of the PDPT.
    pub const PDPT_GPA: u64 = INITIAL_PT_GPA + PAGE_SIZE_4K;
    /// GPA of the kernel window's PD.
    pub const PD_GPA: u64 = INITIAL_PT_GPA + 2 * PAGE_SIZE_4K;
    /// GPA of the PD that maps the reset page's 2 MiB region.
    pub const RESET_PD_GPA: u64 = INITIAL_PT_GPA + 3 * PAGE_SIZE_4K;

    /// Build the tables.
    pub fn new() -> Self {
        let flags = PTE_PRESENT | PTE_WRITABLE;
        let InitialPageTables {
            mut pml4,
            mut pdpt,
            pd,
        } = InitialPageTables::new(0);
        let mut reset_pd = [0; ENTRIES_PER_TABLE];
        pml4[pml4_index(TDX_RESET_PAGE_GPA)] = Self::PDPT_GPA | flags;
        pdpt[pdpt_index(TDX_RESET_PAGE_GPA)] = Self::RESET_PD_GPA | flags;
        reset_pd[pd_index(TDX_RESET_PAGE_GPA)] =
            align_down(TDX_RESET_PAGE_GPA, PAGE_SIZE_2M) | flags | PTE_PAGE_SIZE;
        Self {
            pml4,
            pdpt,
            pd,
            reset_pd,
        }
    }

    /// The tables as four little-endian 4 KiB pages: PML4, PDPT, PD, reset PD.
    pub fn to_pages(&self) -> [[u8; PAGE_SIZE_4K as usize]; INITIAL_PT_PAGES_TDX as usize] {
        tables_to_pages([&self.pml4, &self.pdpt, &self.pd, &self.reset_pd])
    }
}

impl Default for TdxInitialPageTables {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::layout::{DIRECT_MAP_VA_BASE, EMULATED_SNP_C_BIT, FIRMWARE_GPA};

    const C_BIT: u64 = 1 << EMULATED_SNP_C_BIT;
    /// Bits 51:12 of an entry: the next table's (or page's) address, C-bit included.
    const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Walk the tables as the MMU would, reading raw pages found by GPA, and return the
    /// GPA (C-bit stripped) a VA maps to. Checks the C-bit on the way down.
    fn walk(pages: &[[u8; 4096]; 3], va: u64) -> Option<u64> {
        let read = |table_gpa: u64, index: usize| -> u64 {
            let page = ((table_gpa - INITIAL_PT_GPA) / PAGE_SIZE_4K) as usize;
            let bytes = &pages[page][index * 8..index * 8 + 8];
            u64::from_le_bytes(bytes.try_into().unwrap())
        };
        let mut table = INITIAL_PT_GPA;
        for (level, index) in [pml4_index(va), pdpt_index(va), pd_index(va)]
            .into_iter()
            .enumerate()
        {
            let entry = read(table, index);
            if entry & PTE_PRESENT == 0 {
                return None;
            }
            assert_ne!(entry & PTE_WRITABLE, 0);
            assert_ne!(entry & C_BIT, 0, "entry {entry:#x} lacks the C-bit");
            let addr = entry & ADDR_MASK & !C_BIT;
            if level == 2 {
                assert_ne!(entry & PTE_PAGE_SIZE, 0);
                return Some(addr + (va & (PAGE_SIZE_2M - 1)));
            }
            assert_eq!(entry & PTE_PAGE_SIZE, 0);
            table = addr;
        }
        None
    }

    #[test]
    fn maps_kernel_window() {
        let pages = InitialPageTables::new(C_BIT).to_pages();
        for gpa in [
            0,
            0x1234,
            FIRMWARE_GPA,
            FIRMWARE_GPA + 0x7_6543,
            PAGE_SIZE_2M * 300 + 17,
            INITIAL_MAP_SIZE - 1,
        ] {
            assert_eq!(walk(&pages, KERNEL_VA_BASE + gpa), Some(gpa), "{gpa:#x}");
        }
    }

    #[test]
    fn maps_nothing_else() {
        let pages = InitialPageTables::new(C_BIT).to_pages();
        for va in [
            0,
            0x40_0000,
            KERNEL_VA_BASE - 1,
            KERNEL_VA_BASE + INITIAL_MAP_SIZE,
            DIRECT_MAP_VA_BASE,
        ] {
            assert_eq!(walk(&pages, va), None, "{va:#x}");
        }
    }

    /// Walk the TDX tables (no encryption bit anywhere) and return the GPA `va` maps to.
    fn walk_tdx(pages: &[[u8; 4096]; 4], va: u64) -> Option<u64> {
        let read = |table_gpa: u64, index: usize| -> u64 {
            assert!(
                (INITIAL_PT_GPA..INITIAL_PT_GPA + 4 * PAGE_SIZE_4K).contains(&table_gpa),
                "{table_gpa:#x} is not one of the tables"
            );
            let page = ((table_gpa - INITIAL_PT_GPA) / PAGE_SIZE_4K) as usize;
            let bytes = &pages[page][index * 8..index * 8 + 8];
            u64::from_le_bytes(bytes.try_into().unwrap())
        };
        let mut table = INITIAL_PT_GPA;
        for (level, index) in [pml4_index(va), pdpt_index(va), pd_index(va)]
            .into_iter()
            .enumerate()
        {
            let entry = read(table, index);
            if entry & PTE_PRESENT == 0 {
                return None;
            }
            assert_ne!(entry & PTE_WRITABLE, 0);
            assert_eq!(entry & !ADDR_MASK & !0xfff, 0, "{entry:#x} has high bits");
            assert_eq!(entry & C_BIT, 0, "{entry:#x} has an encryption bit");
            let addr = entry & ADDR_MASK;
            if level == 2 {
                assert_ne!(entry & PTE_PAGE_SIZE, 0);
                return Some(addr + (va & (PAGE_SIZE_2M - 1)));
            }
            assert_eq!(entry & PTE_PAGE_SIZE, 0);
            table = addr;
        }
        None
    }

    #[test]
    fn tdx_tables_map_the_kernel_window_and_the_reset_page() {
        use nacre_shared_abi::layout::{TDX_RESET_PAGE_GPA, TDX_RESET_VECTOR};
        let pages = TdxInitialPageTables::new().to_pages();
        for gpa in [
            0,
            0x1234,
            FIRMWARE_GPA,
            FIRMWARE_GPA + 0x7_6543,
            PAGE_SIZE_2M * 300 + 17,
            INITIAL_MAP_SIZE - 1,
        ] {
            assert_eq!(
                walk_tdx(&pages, KERNEL_VA_BASE + gpa),
                Some(gpa),
                "{gpa:#x}"
            );
        }
        for va in [
            TDX_RESET_VECTOR,
            TDX_RESET_PAGE_GPA,
            0xFFFF_FFFF,
            0xFFE0_0000,
        ] {
            assert_eq!(walk_tdx(&pages, va), Some(va), "{va:#x}");
        }
        for va in [
            0,
            0x40_0000,
            0xFFDF_FFFF,
            0x1_0000_0000,
            0xC000_0000,
            KERNEL_VA_BASE - 1,
            KERNEL_VA_BASE + INITIAL_MAP_SIZE,
            DIRECT_MAP_VA_BASE,
        ] {
            assert_eq!(walk_tdx(&pages, va), None, "{va:#x}");
        }
    }

    #[test]
    fn tdx_tables_are_where_the_layout_says() {
        let tables = TdxInitialPageTables::new();
        assert_eq!(tables.pml4[511], 0x9000 | 0b11);
        assert_eq!(tables.pml4[0], 0x9000 | 0b11);
        assert_eq!(tables.pdpt[510], 0xa000 | 0b11);
        assert_eq!(tables.pdpt[3], 0xb000 | 0b11);
        assert_eq!(tables.reset_pd[511], 0xFFE0_0000 | 0x83);
        assert_eq!(tables.pd, InitialPageTables::new(0).pd);
        assert_eq!(tables.pml4.iter().filter(|&&e| e != 0).count(), 2);
        assert_eq!(tables.pdpt.iter().filter(|&&e| e != 0).count(), 2);
        assert_eq!(tables.reset_pd.iter().filter(|&&e| e != 0).count(), 1);
        // The kernel window's PD is the SNP one without the C-bit.
        let snp = InitialPageTables::new(C_BIT);
        for (tdx, snp) in tables.pd.iter().zip(&snp.pd) {
            assert_eq!(*tdx, snp & !C_BIT);
        }
    }

    #[test]
    fn tables_are_where_the_layout_says() {
        let tables = InitialPageTables::new(C_BIT);
        assert_eq!(tables.pml4[511], 0x9000 | C_BIT | 0b11);
        assert_eq!(tables.pdpt[510], 0xa000 | C_BIT | 0b11);
        assert_eq!(tables.pd[1], 0x20_0000 | C_BIT | 0x83);
        assert_eq!(tables.pml4.iter().filter(|&&e| e != 0).count(), 1);
        assert_eq!(tables.pdpt.iter().filter(|&&e| e != 0).count(), 1);
    }
}
