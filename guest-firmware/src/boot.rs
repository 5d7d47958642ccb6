//! The boot sequence, from the 64-bit entry at `_start` (SNP: the VMSA's state; TDX:
//! after the 32-bit reset-vector code) to the app's first instruction.

use crate::app::elf::Elf;
use crate::app::loader::{self, Entry};
use crate::arch::cpu::{self, cpuid, rdmsr};
use crate::arch::{gdt, idt, syscall_entry};
use crate::error::FwError;
use crate::kernel::{Kernel, KERNEL, MMAP_TOP};
use crate::mem::frames::Frames;
use crate::mem::paging::{PageTables, TableAlloc, GLOBAL, NO_EXECUTE, WRITABLE};
use crate::mem::user::Vmas;
use crate::mem::{phys_to_virt, use_direct_map};
use crate::platform::snp::instr::pvalidate;
use crate::platform::snp::psc::page_state_change;
use crate::platform::snp::Snp;
use crate::platform::tdx::{self, Tdx};
use crate::platform::{set_emulated, Platform};
use core::arch::asm;
use nacre_shared_abi::boot::{
    parse_memory_map, ArgsBlob, BootInfo, PlatformKind, BOOT_FLAG_VALIDATE_4K,
};
use nacre_shared_abi::doorbell::{EMULATED_SNP_SIGNATURE, EMULATED_TDX_SIGNATURE};
use nacre_shared_abi::hostcall::HOSTCALL_BUFFER_PAGES;
use nacre_shared_abi::layout::*;
use nacre_shared_abi::snp::msr_protocol::{self as mp, MsrPscOp, MsrRequest, MsrResponse};
use nacre_shared_abi::snp::psc::PageStateOp;
use nacre_shared_abi::snp::rmp::RmpPageSize;
use nacre_shared_abi::snp::{MSR_SEV_STATUS, SEV_STATUS_SEV_SNP};
use zerocopy::FromBytes;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Where the firmware's shared pages (GHCB, hostcall buffer) are mapped with the
/// C-bit clear: `SHARED_VA_BASE + GPA`. Their private alias in the firmware's own
/// 2 MiB mapping is never touched once they are shared.
const SHARED_VA_BASE: u64 = KERNEL_VA_BASE + 0x4000_0000;

/// Page-table frames used before the frame allocator exists: enough for the
/// firmware's own map and a direct map of up to 64 GiB with 2 MiB pages.
const PT_POOL_PAGES: usize = 80;
static mut PT_POOL: [Page; PT_POOL_PAGES] = [const { Page([0; 4096]) }; PT_POOL_PAGES];
static mut GHCB_PAGE: Page = Page([0; 4096]);
static mut HOSTCALL_PAGES: [Page; HOSTCALL_BUFFER_PAGES as usize] =
    [const { Page([0; 4096]) }; HOSTCALL_BUFFER_PAGES as usize];

struct Pool {
    next: usize,
}

impl TableAlloc for Pool {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.next == PT_POOL_PAGES {
            return None;
        }
        let va = (&raw const PT_POOL) as u64 + (self.next * 4096) as u64;
        self.next += 1;
        Some(va - KERNEL_VA_BASE)
    }
}

fn kernel_gpa<T>(p: *const T) -> u64 {
    p as u64 - KERNEL_VA_BASE
}

/// What the platform-specific part of boot set up.
struct PlatformSetup {
    plat: Platform,
    /// Set in private page-table entries (SNP C-bit), else 0.
    c_bit_mask: u64,
    /// Set in shared page-table entries (TDX shared bit), else 0.
    shared_bit_mask: u64,
}

/// SEV-SNP: SEV_STATUS, the C-bit, the GHCB MSR protocol's feature check.
fn snp_setup(bi: &BootInfo) -> Result<PlatformSetup, FwError> {
    set_emulated(hypervisor_signature() == EMULATED_SNP_SIGNATURE);
    // SAFETY: SEV_STATUS exists on every SEV-capable CPU and on the emulated platform.
    let sev_status = unsafe { rdmsr(MSR_SEV_STATUS) };
    if sev_status & SEV_STATUS_SEV_SNP == 0 {
        Snp::terminate(mp::TERM_SET_GENERAL, mp::TERM_SNP_UNSUPPORTED);
    }
    let c_bit = cpuid(0x8000_001F, 0).ebx & 0x3F;
    if c_bit != bi.c_bit || !(32..=51).contains(&c_bit) {
        return Err(FwError::NotSnp);
    }
    let mut snp = Snp::new();
    match snp.msr_protocol(MsrRequest::HvFeatures, mp::HV_FEATURES_RESP)? {
        MsrResponse::HvFeatures { features } if features & mp::HV_FEATURE_SNP != 0 => {}
        _ => return Err(FwError::MsrProtocol),
    }
    Ok(PlatformSetup {
        plat: Platform::Snp(snp),
        c_bit_mask: 1 << c_bit,
        shared_bit_mask: 0,
    })
}

/// TDX: CPUID 0x21, TDG.VP.INFO for the GPA width and so the shared bit.
fn tdx_setup(bi: &BootInfo) -> Result<PlatformSetup, FwError> {
    set_emulated(hypervisor_signature() == EMULATED_TDX_SIGNATURE);
    if bi.c_bit != 0 || !tdx::detect() {
        return Err(FwError::NotTdx);
    }
    let info = tdx::vp_info()?;
    let shared = nacre_shared_abi::tdx::shared_bit(info.gpaw).ok_or(FwError::NotTdx)?;
    Ok(PlatformSetup {
        plat: Platform::Tdx(Tdx::new(shared)),
        c_bit_mask: 0,
        shared_bit_mask: shared,
    })
}

/// CPUID 0x4000_0000's signature (EBX, ECX, EDX).
fn hypervisor_signature() -> [u8; 12] {
    let sig = cpuid(0x4000_0000, 0);
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&sig.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&sig.ecx.to_le_bytes());
    s[8..12].copy_from_slice(&sig.edx.to_le_bytes());
    s
}

/// Boot to the point where the app can be entered.
pub fn boot() -> Result<Entry, FwError> {
    // SAFETY: first code after entry, single CPU, called once.
    unsafe {
        gdt::init();
        idt::init();
    }
    // SAFETY: the boot handoff page is measured private memory mapped by the loader's tables.
    let bi_bytes =
        unsafe { core::slice::from_raw_parts(phys_to_virt(BOOT_INFO_GPA) as *const u8, 128) };
    let bi = BootInfo::read_from_bytes(bi_bytes).map_err(|_| FwError::BootInfo)?;
    let kind = bi.check().map_err(|_| FwError::BootInfo)?;
    crate::platform::set_kind(kind);
    let PlatformSetup {
        mut plat,
        c_bit_mask,
        shared_bit_mask,
    } = match kind {
        PlatformKind::Snp => snp_setup(&bi)?,
        PlatformKind::Tdx => tdx_setup(&bi)?,
    };

    // The host's memory map is unmeasured: copy it, then check it.
    let mut param = [0u8; 4096];
    // SAFETY: the parameter page is private and validated (inserted at launch).
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(HOST_PARAM_GPA) as *const u8,
            param.as_mut_ptr(),
            4096,
        )
    };
    let ram = parse_memory_map(&param, bi.min_memory).map_err(|_| FwError::MemoryMap)?;
    if kind == PlatformKind::Tdx && ram > TDX_MAX_GUEST_MEMORY {
        return Err(FwError::MemoryMap);
    }

    // Our own page tables: the firmware at KERNEL_VA_BASE (2 MiB pages, private),
    // its shared pages again at SHARED_VA_BASE (4 KiB, shared), and a direct map of
    // RAM (2 MiB, private, NX).
    let mut pool = Pool { next: 0 };
    let root = pool.alloc_table().ok_or(FwError::OutOfMemory)?;
    let mut pt = PageTables::new(root, c_bit_mask, shared_bit_mask);
    pt.map_range_2m(
        KERNEL_VA_BASE,
        0,
        align_up(bi.firmware_end, PAGE_SIZE_2M) / PAGE_SIZE_2M,
        WRITABLE | GLOBAL,
        &mut pool,
    )
    .ok_or(FwError::OutOfMemory)?;
    // The direct map: page directories for all RAM now, 2 MiB entries for the image
    // now and for every other chunk when the frame allocator accepts it.
    pt.prepare_2m(DIRECT_MAP_VA_BASE, ram, &mut pool)
        .ok_or(FwError::OutOfMemory)?;
    let image_2m = align_up(bi.image_end, PAGE_SIZE_2M);
    pt.map_range_2m(
        DIRECT_MAP_VA_BASE,
        0,
        image_2m / PAGE_SIZE_2M,
        WRITABLE | NO_EXECUTE,
        &mut pool,
    )
    .ok_or(FwError::OutOfMemory)?;
    if crate::platform::emulated() {
        // The SYSCALL trampoline's page, again at a user-accessible alias.
        let t = crate::arch::syscall_entry::trampoline_code_va();
        pt.map_4k(
            crate::arch::syscall_entry::TRAMPOLINE_VA,
            t - KERNEL_VA_BASE,
            crate::mem::paging::USER,
            true,
            &mut pool,
        )
        .ok_or(FwError::OutOfMemory)?;
    }
    // Page tables for the shared window now, while the pool can still give them.
    let ghcb_gpa = kernel_gpa(&raw const GHCB_PAGE);
    let hc_gpa = kernel_gpa(&raw const HOSTCALL_PAGES);
    for gpa in [ghcb_gpa, hc_gpa] {
        pt.prepare_4k(SHARED_VA_BASE + gpa, &mut pool)
            .ok_or(FwError::OutOfMemory)?;
    }
    // SAFETY: the new tables map the firmware at the same addresses and all RAM.
    unsafe { cpu::write_cr3(pt.cr3()) };
    use_direct_map();
    enable_cpu_features();

    // SNP: the GHCB: stop using the page as private, make it shared, map it shared,
    // register.
    if let Platform::Snp(snp) = &mut plat {
        let ghcb_va = (&raw const GHCB_PAGE) as u64;
        make_private_page_shared_msr(snp, &mut pt, ghcb_va, ghcb_gpa)?;
        snp.register_ghcb(SHARED_VA_BASE + ghcb_gpa, ghcb_gpa)?;
    }

    let pt_pages = match kind {
        PlatformKind::Snp => INITIAL_PT_PAGES,
        PlatformKind::Tdx => INITIAL_PT_PAGES_TDX,
    };
    let launch = [
        (BOOT_INFO_GPA, PAGE_SIZE_4K),
        (HOST_PARAM_GPA, PAGE_SIZE_4K),
        (INITIAL_PT_GPA, pt_pages * PAGE_SIZE_4K),
        (FIRMWARE_GPA, bi.firmware_end - FIRMWARE_GPA),
        (bi.app_gpa, bi.image_end - bi.app_gpa),
    ];
    let validate_4k_only = bi.flags & BOOT_FLAG_VALIDATE_4K != 0;
    let mut frames = Frames::new(&mut plat, pt, image_2m, ram, &launch, validate_4k_only)?;
    if kind == PlatformKind::Snp {
        frames.validated().set(ghcb_gpa, false);
    }

    // Hostcall buffer: stop using it as private, convert all its pages in one request
    // (SNP: rescind, then one page-state change; TDX: one MapGPA to shared), map it
    // shared.
    let hc_va = (&raw const HOSTCALL_PAGES) as u64;
    let hc_len = HOSTCALL_BUFFER_PAGES * PAGE_SIZE_4K;
    match &mut plat {
        Platform::Snp(snp) => {
            for i in 0..HOSTCALL_BUFFER_PAGES {
                rescind(hc_va + i * PAGE_SIZE_4K, hc_gpa + i * PAGE_SIZE_4K)?;
            }
            page_state_change(
                snp,
                hc_gpa / PAGE_SIZE_4K,
                HOSTCALL_BUFFER_PAGES,
                PageStateOp::Shared,
            )?;
        }
        Platform::Tdx(tdx) => tdx.map_gpa(hc_gpa, hc_len, true)?,
    }
    for i in 0..HOSTCALL_BUFFER_PAGES {
        frames.validated().set(hc_gpa + i * PAGE_SIZE_4K, false);
    }
    {
        let mut alloc = crate::mem::frames::FrameTables {
            frames: &mut frames,
            plat: &mut plat,
        };
        pt.map_range_4k(
            SHARED_VA_BASE + hc_gpa,
            hc_gpa,
            HOSTCALL_BUFFER_PAGES,
            WRITABLE | NO_EXECUTE,
            false,
            &mut alloc,
        )
        .ok_or(FwError::OutOfMemory)?;
    }
    plat.set_hostcall_buffer(SHARED_VA_BASE + hc_gpa, hc_gpa);

    let mut guard = KERNEL.lock();
    let k = guard.insert(Kernel {
        plat,
        frames,
        pt,
        vmas: Vmas::new(),
        brk_start: 0,
        brk: 0,
        mmap_next: MMAP_TOP,
        unsupported: [(0, 0); 64],
    });
    // SAFETY: the app image and argument blob are measured private pages
    // (BootInfo::check bounded them inside the image) and mapped by the direct map.
    let (app, args) = unsafe {
        (
            core::slice::from_raw_parts(
                phys_to_virt(bi.app_gpa) as *const u8,
                bi.app_size as usize,
            ),
            core::slice::from_raw_parts(
                phys_to_virt(bi.args_gpa) as *const u8,
                bi.args_size as usize,
            ),
        )
    };
    let elf = Elf::parse(app)?;
    let args = ArgsBlob::parse(args).map_err(|_| FwError::BootInfo)?;
    let entry = loader::load(k, &elf, bi.app_gpa, &args)?;
    drop(guard);
    // SAFETY: GDT loaded; the entry uses its selectors.
    unsafe { syscall_entry::init() };
    Ok(entry)
}

/// Enable XSAVE-managed SSE/AVX state to match CPUID, and SMEP.
fn enable_cpu_features() {
    const CR4_OSXSAVE: u64 = 1 << 18;
    const CR4_SMEP: u64 = 1 << 20;
    let leaf1 = cpuid(1, 0);
    let mut cr4 = cpu::read_cr4();
    let xsave = leaf1.ecx & (1 << 26) != 0;
    if xsave {
        cr4 |= CR4_OSXSAVE;
    }
    if cpuid(7, 0).ebx & (1 << 7) != 0 {
        cr4 |= CR4_SMEP;
    }
    // SAFETY: only features CPUID reports are enabled.
    unsafe { cpu::write_cr4(cr4) };
    if xsave {
        let avx = leaf1.ecx & (1 << 28) != 0;
        let supported = u64::from(cpuid(0xD, 0).eax);
        let want = if avx { 0b111 } else { 0b11 };
        // SAFETY: CR4.OSXSAVE is set and the value is a subset of CPUID 0xD.0.
        unsafe { cpu::xsetbv0(want & supported) };
    }
}

fn rescind(va: u64, gpa: u64) -> Result<(), FwError> {
    // SAFETY: the page is firmware-owned and not used as private memory from now on.
    let r = unsafe { pvalidate(va, RmpPageSize::Size4K, false) };
    match r.decode() {
        Ok(true) => Ok(()),
        Ok(false) => Err(FwError::AlreadyValidated { gpa }),
        Err(rc) => Err(FwError::Pvalidate { gpa, rc }),
    }
}

/// Convert one firmware page to shared with the MSR protocol (before the GHCB exists).
fn make_private_page_shared_msr(
    snp: &mut Snp,
    pt: &mut PageTables,
    va: u64,
    gpa: u64,
) -> Result<(), FwError> {
    rescind(va, gpa)?;
    let req = MsrRequest::PageStateChange {
        gfn: gpa / PAGE_SIZE_4K,
        op: MsrPscOp::Shared,
    };
    match snp.msr_protocol(req, mp::PSC_RESP)? {
        MsrResponse::PageStateChange { error: 0 } => {}
        _ => {
            return Err(FwError::PageStateChange {
                gfn: gpa / PAGE_SIZE_4K,
                detail: 0,
            })
        }
    }
    pt.map_4k(
        SHARED_VA_BASE + gpa,
        gpa,
        WRITABLE | NO_EXECUTE,
        false,
        &mut NoTables,
    )
    .ok_or(FwError::OutOfMemory)?;
    Ok(())
}

/// For mappings whose page tables were created in advance.
struct NoTables;

impl TableAlloc for NoTables {
    fn alloc_table(&mut self) -> Option<u64> {
        None
    }
}

/// Enter the app in ring 3 with all registers zero (RDX = 0: no `rtld_fini`).
pub fn enter_user(entry: Entry) -> ! {
    // SAFETY: the app's address space is set up; IRETQ switches to ring 3 with the
    // user selectors from the GDT. The kernel stack is abandoned (syscalls and
    // exceptions use their own stacks).
    unsafe {
        asm!(
            "push {ss}",
            "push {rsp}",
            "push 0x2",
            "push {cs}",
            "push {rip}",
            "xor eax, eax", "xor ebx, ebx", "xor ecx, ecx", "xor edx, edx",
            "xor esi, esi", "xor edi, edi", "xor ebp, ebp",
            "xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d", "xor r11d, r11d",
            "xor r12d, r12d", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d",
            "iretq",
            ss = in(reg) u64::from(gdt::USER_DS),
            rsp = in(reg) entry.rsp,
            cs = in(reg) u64::from(gdt::USER_CS),
            rip = in(reg) entry.rip,
            options(noreturn),
        );
    }
}
