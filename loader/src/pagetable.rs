//! The loader's initial page tables, measured pages at [`INITIAL_PT_GPA`], the same for
//! SEV-SNP and TDX. Both BSPs start in 32-bit protected mode with paging off, and the
//! firmware's 32-bit entry code loads CR3 with [`INITIAL_PT_GPA`] and turns paging on
//! (SEV-SNP: at the ELF entry point's physical address; TDX: from the reset page). The
//! tables map, with 2 MiB pages, `KERNEL_VA_BASE + x` to GPA `x` and GPA `x` to
//! itself for every `x` below [`INITIAL_MAP_SIZE`] (the launch pages and the
//! firmware), and the 2 MiB region holding the TDX reset page to itself:
//!
//! ```text
//! PML4     (INITIAL_PT_GPA)           [0], [511] -> PDPT
//! PDPT     (INITIAL_PT_GPA + 4 KiB)   [0], [510] -> PD, [3] -> RESET PD
//! PD       (INITIAL_PT_GPA + 8 KiB)   [i]   =  i * 2 MiB, PS, for i in 0..8
//! RESET PD (INITIAL_PT_GPA + 12 KiB)  [511] =  0xFFE0_0000, PS
//! ```
//!
//! so the entry code keeps running once paging is on, wherever it runs from.
//!
//! No entry carries an encryption bit, so no page of an image depends on where a host
//! puts it. On TDX a GPA without the shared bit is private (docs/specs.md 6.3). On
//! SEV-SNP every access is private while paging is off (AMD APM vol. 2, 15.34.5 "Page
//! table support"), and the entry code reads the C-bit position from the measured CPUID
//! page and sets it in every entry of the PML4, the PDPT and the PD before it turns
//! paging on (the reset PD maps no RAM there and stays as it is).
//!
//! Entry format: AMD APM vol. 2, 5.3 "Long-Mode Page Translation" (figures 5-18 to 5-25);
//! Intel SDM vol. 3A, 4.5 "4-Level Paging" has the same bits.

use nacre_shared_abi::layout::{
    align_down, INITIAL_MAP_SIZE, INITIAL_PT_GPA, INITIAL_PT_PAGES, KERNEL_VA_BASE, PAGE_SIZE_1G,
    PAGE_SIZE_2M, PAGE_SIZE_4K, TDX_RESET_PAGE_GPA,
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

/// PD entries of the map: [`INITIAL_MAP_SIZE`] in 2 MiB pages.
pub const MAP_ENTRIES: usize = (INITIAL_MAP_SIZE / PAGE_SIZE_2M) as usize;

// The kernel window and the low identity map share one PD: both start on a 1 GiB
// boundary and are at most 1 GiB long.
const _: () = assert!(KERNEL_VA_BASE.is_multiple_of(PAGE_SIZE_1G));
const _: () = assert!(INITIAL_MAP_SIZE <= PAGE_SIZE_1G && MAP_ENTRIES > 0);
const _: () = assert!(INITIAL_PT_PAGES == 4);
const _: () = assert!(pml4_index(KERNEL_VA_BASE) == 511 && pdpt_index(KERNEL_VA_BASE) == 510);
// The reset page's identity map: PML4[0], PDPT[3], PD[511], away from the kernel
// window's and the low map's PDPT entries.
const _: () = assert!(pml4_index(TDX_RESET_PAGE_GPA) == 0);
const _: () = assert!(pdpt_index(TDX_RESET_PAGE_GPA) == 3 && pd_index(TDX_RESET_PAGE_GPA) == 511);
const _: () = assert!(pdpt_index(TDX_RESET_PAGE_GPA) != pdpt_index(KERNEL_VA_BASE));
const _: () = assert!(pdpt_index(TDX_RESET_PAGE_GPA) != 0);

/// The four tables (module documentation), in the order they are placed from
/// [`INITIAL_PT_GPA`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialPageTables {
    /// Top level, at `INITIAL_PT_GPA`: entries 0 (low map, reset page) and 511 (kernel
    /// window).
    pub pml4: PageTable,
    /// At `INITIAL_PT_GPA + 4 KiB`: entries 0 (low map), 3 (reset page) and 510
    /// (kernel window).
    pub pdpt: PageTable,
    /// At `INITIAL_PT_GPA + 8 KiB`: the first [`MAP_ENTRIES`] 2 MiB pages of GPA 0.
    pub pd: PageTable,
    /// At `INITIAL_PT_GPA + 12 KiB`: entry 511 maps the 2 MiB page holding the TDX reset
    /// page to itself.
    pub reset_pd: PageTable,
}

impl InitialPageTables {
    /// GPA of the PML4 (the value the 32-bit entry code loads into CR3).
    pub const PML4_GPA: u64 = INITIAL_PT_GPA;
    /// GPA of the PDPT.
    pub const PDPT_GPA: u64 = INITIAL_PT_GPA + PAGE_SIZE_4K;
    /// GPA of the PD of the low map and the kernel window.
    pub const PD_GPA: u64 = INITIAL_PT_GPA + 2 * PAGE_SIZE_4K;
    /// GPA of the PD that maps the reset page's 2 MiB region.
    pub const RESET_PD_GPA: u64 = INITIAL_PT_GPA + 3 * PAGE_SIZE_4K;

    /// Build the tables.
    pub fn new() -> Self {
        let flags = PTE_PRESENT | PTE_WRITABLE;
        let mut pml4 = [0; ENTRIES_PER_TABLE];
        let mut pdpt = [0; ENTRIES_PER_TABLE];
        let mut pd = [0; ENTRIES_PER_TABLE];
        let mut reset_pd = [0; ENTRIES_PER_TABLE];
        pml4[0] = Self::PDPT_GPA | flags;
        pml4[pml4_index(KERNEL_VA_BASE)] = Self::PDPT_GPA | flags;
        pdpt[0] = Self::PD_GPA | flags;
        pdpt[pdpt_index(KERNEL_VA_BASE)] = Self::PD_GPA | flags;
        pdpt[pdpt_index(TDX_RESET_PAGE_GPA)] = Self::RESET_PD_GPA | flags;
        for (i, entry) in pd.iter_mut().take(MAP_ENTRIES).enumerate() {
            *entry = (i as u64 * PAGE_SIZE_2M) | flags | PTE_PAGE_SIZE;
        }
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
    pub fn to_pages(&self) -> [[u8; PAGE_SIZE_4K as usize]; INITIAL_PT_PAGES as usize] {
        let mut pages = [[0u8; PAGE_SIZE_4K as usize]; INITIAL_PT_PAGES as usize];
        let tables = [&self.pml4, &self.pdpt, &self.pd, &self.reset_pd];
        for (page, table) in pages.iter_mut().zip(tables) {
            for (bytes, entry) in page.chunks_exact_mut(8).zip(table) {
                bytes.copy_from_slice(&entry.to_le_bytes());
            }
        }
        pages
    }
}

impl Default for InitialPageTables {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::layout::{
        DIRECT_MAP_VA_BASE, FIRMWARE_GPA, FIRMWARE_GPA_END, TDX_RESET_VECTOR,
    };

    /// Bits 51:12 of an entry: the next table's (or page's) address.
    const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Walk the tables as the MMU would, reading raw pages found by GPA, with `c_bit`
    /// (a mask, 0 for none) set in every entry of the PML4, PDPT and PD as the SEV-SNP
    /// entry code sets it, and return the GPA `va` maps to.
    fn walk(pages: &[[u8; 4096]; 4], c_bit: u64, va: u64) -> Option<u64> {
        let read = |table_gpa: u64, index: usize| -> u64 {
            assert!(
                (INITIAL_PT_GPA..INITIAL_PT_GPA + 4 * PAGE_SIZE_4K).contains(&table_gpa),
                "{table_gpa:#x} is not one of the tables"
            );
            let page = ((table_gpa - INITIAL_PT_GPA) / PAGE_SIZE_4K) as usize;
            let bytes = &pages[page][index * 8..index * 8 + 8];
            let entry = u64::from_le_bytes(bytes.try_into().unwrap());
            if entry != 0 && table_gpa != InitialPageTables::RESET_PD_GPA {
                entry | c_bit
            } else {
                entry
            }
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
            let addr = entry & ADDR_MASK & !c_bit;
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
    fn map_the_kernel_window_the_low_map_and_the_reset_page() {
        let pages = InitialPageTables::new().to_pages();
        // No C-bit, C-bit 47 (emulated default), C-bit 51 (AMD EPYC).
        for c_bit in [0, 1 << 47, 1 << 51] {
            for gpa in [
                0,
                0x1234,
                FIRMWARE_GPA,
                FIRMWARE_GPA + 0x7_6543,
                FIRMWARE_GPA_END - 1,
                INITIAL_MAP_SIZE - 1,
            ] {
                assert_eq!(walk(&pages, c_bit, KERNEL_VA_BASE + gpa), Some(gpa));
                assert_eq!(walk(&pages, c_bit, gpa), Some(gpa), "{gpa:#x}");
            }
            for va in [
                TDX_RESET_VECTOR,
                TDX_RESET_PAGE_GPA,
                0xFFFF_FFFF,
                0xFFE0_0000,
            ] {
                assert_eq!(walk(&pages, c_bit, va), Some(va), "{va:#x}");
            }
            for va in [
                INITIAL_MAP_SIZE,
                0x4000_0000,
                0xFFDF_FFFF,
                0x1_0000_0000,
                0xC000_0000,
                KERNEL_VA_BASE - 1,
                KERNEL_VA_BASE + INITIAL_MAP_SIZE,
                DIRECT_MAP_VA_BASE,
            ] {
                assert_eq!(walk(&pages, c_bit, va), None, "{va:#x}");
            }
        }
    }

    #[test]
    fn tables_are_where_the_layout_says() {
        let tables = InitialPageTables::new();
        assert_eq!(tables.pml4[0], 0x9000 | 0b11);
        assert_eq!(tables.pml4[511], 0x9000 | 0b11);
        assert_eq!(tables.pdpt[0], 0xa000 | 0b11);
        assert_eq!(tables.pdpt[3], 0xb000 | 0b11);
        assert_eq!(tables.pdpt[510], 0xa000 | 0b11);
        assert_eq!(tables.pd[1], 0x20_0000 | 0x83);
        assert_eq!(tables.pd[7], 0xE0_0000 | 0x83);
        assert_eq!(tables.reset_pd[511], 0xFFE0_0000 | 0x83);
        assert_eq!(tables.pml4.iter().filter(|&&e| e != 0).count(), 2);
        assert_eq!(tables.pdpt.iter().filter(|&&e| e != 0).count(), 3);
        assert_eq!(tables.pd.iter().filter(|&&e| e != 0).count(), 8);
        assert_eq!(tables.reset_pd.iter().filter(|&&e| e != 0).count(), 1);
        // No entry has a bit above the 32-bit address range: no encryption bit.
        let all = [tables.pml4, tables.pdpt, tables.pd, tables.reset_pd];
        assert!(all.iter().flatten().all(|e| e >> 32 == 0));
    }
}
