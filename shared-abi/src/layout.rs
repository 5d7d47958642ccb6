//! The guest-physical and guest-virtual memory layout shared by the loader, the host
//! and the firmware. See `docs/memory-map.md` for the picture.
//!
//! GPAs here never carry the encryption bit: on SEV-SNP a private access sets the
//! C-bit (bit 51 on AMD's EPYC hosts, [`EMULATED_SNP_C_BIT`] by default on the emulated
//! platform) on top of these addresses. No image depends on its position: the firmware
//! reads it from the CPUID page at boot.

/// Size of a 4 KiB page.
pub const PAGE_SIZE_4K: u64 = 0x1000;
/// Size of a 2 MiB page.
pub const PAGE_SIZE_2M: u64 = 0x20_0000;
/// Size of a 1 GiB page.
pub const PAGE_SIZE_1G: u64 = 0x4000_0000;

/// The C-bit position the emulated SNP platform reports in CPUID 0x8000_001F EBX bits 5:0
/// unless the host chooses another. Guest RAM is one memfd mapped twice: the shared
/// view at GPA 0 and the private view at `1 << C-bit` (docs/design.md, "Two views of
/// guest RAM"), so the C-bit set in a GPA is exactly "private".
pub const EMULATED_SNP_C_BIT: u32 = 47;

/// The GPA width the emulated TDX platform reports in TDG.VP.INFO (RCX bits 5:0): the
/// shared bit is then bit 47 (`1 << (GPAW - 1)`, docs/specs.md 6.3). Guest RAM is one memfd
/// mapped twice, as for emulated SNP, but the other way round: the private view at
/// GPA 0 and the shared view at `1 << 47` (docs/design.md, "Two views of guest RAM").
pub const EMULATED_TDX_GPAW: u32 = 48;

/// TDX: a TD's vCPUs start in 32-bit protected mode (paging off, flat segments) at this
/// RIP, the architectural reset vector 16 bytes below 4 GiB (Intel TDX module base
/// spec, "Initial State of Guest TD vCPU"; the TDVF/td-shim reset vector lives there).
pub const TDX_RESET_VECTOR: u64 = 0xFFFF_FFF0;
/// The page holding the TDX reset vector and the firmware's 32-bit entry code
/// (the firmware ELF's segment at this physical address; measured, TDX only).
pub const TDX_RESET_PAGE_GPA: u64 = 0xFFFF_F000;
/// Guest RAM on the TDX platforms ends below the 2 MiB region holding the reset page.
pub const TDX_MAX_GUEST_MEMORY: u64 = 0xFFE0_0000;

/// The first page is never given to the guest (null guard).
pub const NULL_GUARD_END: u64 = 0x1000;
/// Boot handoff page written by the loader and measured ([`crate::boot::BootInfo`]).
pub const BOOT_INFO_GPA: u64 = 0x1000;
/// IGVM parameter area holding the host's memory map (unmeasured, validated by the guest).
pub const HOST_PARAM_GPA: u64 = 0x2000;
/// SEV-SNP secrets page (docs/specs.md 4.6): the security processor fills it at launch with
/// the VMPCKs the guest encrypts its messages with (measured as a SECRETS page: its
/// contents are not part of the digest).
pub const SECRETS_PAGE_GPA: u64 = 0x3000;
/// SEV-SNP CPUID page (docs/specs.md 4.7): the host fills it with the CPUID values the
/// guest may use and the security processor checks them against the CPU before the
/// guest runs (measured as a CPUID page: its contents are not part of the digest). The
/// firmware reads the C-bit position from it.
pub const SNP_CPUID_PAGE_GPA: u64 = 0x4000;
/// SEV-SNP: the GPA at which upstream KVM measures the BSP's VMSA
/// (`arch/x86/kvm/svm/sev.c`, SNP_LAUNCH_FINISH), and so the one the IGVM file names.
/// It is not guest RAM.
pub const SNP_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// Initial page tables built by the loader and measured, the same pages for both
/// platforms: PML4, PDPT, the PD of the low map and a PD that identity-maps the 2 MiB
/// region holding [`TDX_RESET_PAGE_GPA`].
pub const INITIAL_PT_GPA: u64 = 0x8000;
/// Number of pages of the initial page tables at [`INITIAL_PT_GPA`].
pub const INITIAL_PT_PAGES: u64 = 4;
/// Physical load address of the firmware's lowest segment.
pub const FIRMWARE_GPA: u64 = 0x10_0000;
/// The firmware's segments must end below this GPA.
pub const FIRMWARE_GPA_END: u64 = 0x100_0000;
/// The app ELF file bytes are placed here, followed by the argument blob.
pub const APP_IMAGE_GPA: u64 = 0x100_0000;

/// Virtual base of the firmware: VA = `KERNEL_VA_BASE + GPA` for the firmware image
/// (the top 2 GiB, so the firmware is built with the `kernel` code model).
pub const KERNEL_VA_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// The loader's initial page tables map `KERNEL_VA_BASE .. + INITIAL_MAP_SIZE` and the
/// same range at GPA 0 to itself: the firmware's segments and the launch pages below
/// them. On SEV-SNP the entry code sets the C-bit in each of their entries, so the map
/// is kept small.
pub const INITIAL_MAP_SIZE: u64 = FIRMWARE_GPA_END;
/// The firmware's direct map of guest RAM: VA = `DIRECT_MAP_VA_BASE + GPA`.
pub const DIRECT_MAP_VA_BASE: u64 = 0xFFFF_8000_0000_0000;
/// Highest user (app) virtual address, exclusive (the canonical lower half minus a guard page).
pub const USER_VA_END: u64 = 0x0000_7FFF_FFFF_F000;

/// Smallest guest RAM size nacre boots with.
pub const MIN_GUEST_MEMORY: u64 = 64 << 20;
/// Largest guest RAM size an SEV-SNP guest boots with: the firmware maps all of RAM in
/// its direct map, whose page directories (one per GiB) come from a pool of page
/// tables it sets aside at boot (`guest-firmware/src/boot.rs`, `PT_POOL_PAGES`). The
/// host refuses more before it makes a VM and the firmware refuses a memory map of
/// more. TDX guests have less ([`TDX_MAX_GUEST_MEMORY`]).
pub const MAX_GUEST_MEMORY: u64 = 64 << 30;
/// Guest RAM sizes must be a multiple of this.
pub const GUEST_MEMORY_ALIGN: u64 = PAGE_SIZE_2M;

const _: () = assert!(BOOT_INFO_GPA >= NULL_GUARD_END);
const _: () = assert!(INITIAL_PT_GPA + INITIAL_PT_PAGES * PAGE_SIZE_4K <= FIRMWARE_GPA);
const _: () = assert!(SECRETS_PAGE_GPA < SNP_CPUID_PAGE_GPA);
const _: () = assert!(SNP_CPUID_PAGE_GPA + PAGE_SIZE_4K <= INITIAL_PT_GPA);
const _: () =
    assert!(INITIAL_MAP_SIZE.is_multiple_of(PAGE_SIZE_2M) && INITIAL_MAP_SIZE <= PAGE_SIZE_1G);
const _: () = assert!(FIRMWARE_GPA_END <= APP_IMAGE_GPA);
const _: () = assert!(MAX_GUEST_MEMORY <= 1 << EMULATED_SNP_C_BIT);
const _: () = assert!(TDX_RESET_VECTOR - TDX_RESET_PAGE_GPA == 0xFF0);
const _: () = assert!(TDX_MAX_GUEST_MEMORY <= align_down(TDX_RESET_PAGE_GPA, PAGE_SIZE_2M));

/// Round `x` up to a multiple of `align` (a power of two).
pub const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

/// Round `x` down to a multiple of `align` (a power of two).
pub const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}
