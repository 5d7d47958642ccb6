//! The boot sequence, from the 64-bit entry at `_start` (SNP: the VMSA's state; TDX:
//! after the 32-bit reset-vector code) to the app's first instruction.

use crate::app::elf::Elf;
use crate::app::loader::{self, Entry};
use crate::arch::cpu::cpuid;
use crate::arch::{gdt, idt, syscall_entry};
use crate::error::FwError;
use crate::fs::{Files, ImageFiles};
use crate::kernel::{Kernel, Scratch, KERNEL, MMAP_TOP, PATH_MAX};
use crate::mem::frames::{FrameTables, Frames};
use crate::mem::paging::{PageTables, TableAlloc, GLOBAL, NO_EXECUTE, USER, WRITABLE};
use crate::mem::user::{Vma, VmaKind, Vmas, FILES_WINDOW_VA, IO_WINDOW_VA, PROT_READ, PROT_WRITE};
use crate::mem::{phys_to_virt, use_direct_map};
use crate::platform::snp::instr::pvalidate;
use crate::platform::snp::psc::page_state_change;
use crate::platform::snp::Snp;
use crate::platform::tdx::{self, Tdx};
use crate::platform::{set_emulated, Platform};
use crate::syscall::signal::Signals;
use crate::time::Clock;
use core::arch::asm;
use nacre_shared_abi::boot::{
    parse_memory_map, ArgsBlob, BootInfo, HostRequest, PlatformKind, BOOT_FLAG_VALIDATE_4K,
    HOST_REQUEST_ATTEST,
};
use nacre_shared_abi::doorbell::{EMULATED_SNP_SIGNATURE, EMULATED_TDX_SIGNATURE};
use nacre_shared_abi::filetree::FileTree;
use nacre_shared_abi::hostcall::{hostcall_area_gpa, HOSTCALL_AREA_SIZE};
use nacre_shared_abi::layout::*;
use nacre_shared_abi::snp::msr_protocol::{self as mp, MsrPscOp, MsrRequest, MsrResponse};
use nacre_shared_abi::snp::psc::PageStateOp;
use nacre_shared_abi::snp::rmp::RmpPageSize;
use nacre_shared_abi::snp::{MSR_SEV_STATUS, SEV_STATUS_SEV_SNP};
use x86_64::registers::control::{Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::Msr;
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;
use zerocopy::FromBytes;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Where the firmware's shared GHCB page is mapped with the C-bit clear:
/// `SHARED_VA_BASE + GPA`. Its private alias in the firmware's own 2 MiB mapping is
/// never touched once it is shared.
const SHARED_VA_BASE: u64 = KERNEL_VA_BASE + 0x4000_0000;

/// Page-table frames used before the frame allocator exists: enough for the
/// firmware's own map and a direct map of up to 64 GiB with 2 MiB pages.
const PT_POOL_PAGES: usize = 80;
static mut PT_POOL: [Page; PT_POOL_PAGES] = [const { Page([0; 4096]) }; PT_POOL_PAGES];
static mut GHCB_PAGE: Page = Page([0; 4096]);

/// The kernel's big tables, in bss (zero at launch) so that boot moves none of them.
static mut VMAS: Vmas = Vmas::new();
static mut FILES: Files = Files::new();
static mut SIGNALS: Signals = Signals::new();
static mut SCRATCH: Scratch = Scratch {
    path: [0; PATH_MAX],
    path2: [0; PATH_MAX],
};

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
    // SAFETY: SEV_STATUS (AMD APM vol. 2, 15.34.10) exists on every SEV-capable CPU
    // and on the emulated platform; reading it has no side effects.
    let sev_status = unsafe { Msr::new(MSR_SEV_STATUS).read() };
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
    let host_request = HostRequest::parse(&param).map_err(|_| FwError::HostRequest)?;
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
    // The trampoline page (the emulated platform's SYSCALL trampoline and the ring-3
    // copy helpers of `arch/upcall.rs`), again at a user-accessible alias.
    let t = crate::arch::syscall_entry::trampoline_code_va();
    pt.map_4k(
        crate::arch::syscall_entry::TRAMPOLINE_VA,
        t - KERNEL_VA_BASE,
        USER,
        true,
        &mut pool,
    )
    .ok_or(FwError::OutOfMemory)?;
    // The page table for the GHCB's shared mapping now, while the pool can give it.
    let ghcb_gpa = kernel_gpa(&raw const GHCB_PAGE);
    pt.prepare_4k(SHARED_VA_BASE + ghcb_gpa, &mut pool)
        .ok_or(FwError::OutOfMemory)?;
    let root = PhysFrame::from_start_address(PhysAddr::new_truncate(pt.cr3()))
        .map_err(|_| FwError::OutOfMemory)?;
    // SAFETY: the new tables map the firmware (code, data, stacks) at the addresses it
    // runs at now, and the direct map covers every page `phys_to_virt` will name.
    unsafe { Cr3::write(root, Cr3Flags::empty()) };
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
    // SNP: VMPCK0 from the secrets page the security processor filled at launch,
    // copied into private memory (the page itself is private and validated).
    if let Platform::Snp(snp) = &mut plat {
        let mut head = [0u8; 0xB0];
        // SAFETY: the secrets page is a launch page of every SNP image, private and
        // validated, mapped by the direct map.
        unsafe {
            core::ptr::copy_nonoverlapping(
                phys_to_virt(SECRETS_PAGE_GPA) as *const u8,
                head.as_mut_ptr(),
                head.len(),
            )
        };
        snp.channel = crate::platform::snp::guest_request::GuestChannel::from_secrets(&head);
    }
    let launch = [
        (
            SECRETS_PAGE_GPA,
            if kind == PlatformKind::Snp {
                PAGE_SIZE_4K
            } else {
                0
            },
        ),
        (BOOT_INFO_GPA, PAGE_SIZE_4K),
        (HOST_PARAM_GPA, PAGE_SIZE_4K),
        (INITIAL_PT_GPA, pt_pages * PAGE_SIZE_4K),
        (FIRMWARE_GPA, bi.firmware_end - FIRMWARE_GPA),
        (bi.app_gpa, bi.image_end - bi.app_gpa),
    ];
    let validate_4k_only = bi.flags & BOOT_FLAG_VALIDATE_4K != 0;
    // The last 2 MiB of RAM are the hostcall area, never handed out as frames.
    let area_gpa = hostcall_area_gpa(ram);
    let mut frames = Frames::new(&mut plat, pt, image_2m, area_gpa, &launch, validate_4k_only)?;
    if kind == PlatformKind::Snp {
        frames.validated().set(ghcb_gpa, false);
    }

    // The hostcall area: never validated or accepted, so it goes shared with one
    // request (SNP: a page-state change, one 2 MiB entry; TDX: one MapGPA) and is
    // mapped shared at the I/O window, where both the firmware and the ring-3 copy
    // helpers reach it.
    match &mut plat {
        Platform::Snp(snp) => page_state_change(
            snp,
            area_gpa / PAGE_SIZE_4K,
            HOSTCALL_AREA_SIZE / PAGE_SIZE_4K,
            PageStateOp::Shared,
            true,
        )?,
        Platform::Tdx(tdx) => tdx.map_gpa(area_gpa, HOSTCALL_AREA_SIZE, true)?,
    }
    {
        let mut alloc = FrameTables {
            frames: &mut frames,
            plat: &mut plat,
        };
        pt.map_range_2m_as(
            IO_WINDOW_VA,
            area_gpa,
            HOSTCALL_AREA_SIZE / PAGE_SIZE_2M,
            USER | WRITABLE | NO_EXECUTE,
            false,
            &mut alloc,
        )
        .ok_or(FwError::OutOfMemory)?;
        map_files_window(&mut pt, &bi, &mut alloc)?;
    }
    // First touch by the firmware: the host maps the whole area into its TDP now, so
    // that ring-3 copies never meet an unmapped shared page.
    // SAFETY: the area is mapped writable at IO_WINDOW_VA; nothing references it.
    unsafe { (IO_WINDOW_VA as *mut u64).write_volatile(0) };

    // SAFETY: the file tree is measured private memory inside the image
    // (`BootInfo::check` bounded it), mapped by the direct map for good.
    let tree_bytes = unsafe {
        core::slice::from_raw_parts(phys_to_virt(bi.fs_gpa) as *const u8, bi.fs_size as usize)
    };
    let tree = FileTree::parse(tree_bytes).map_err(|_| FwError::BootInfo)?;
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

    // SAFETY: boot runs once, before anything else can reach these statics; each is
    // borrowed exactly once here, for the kernel's lifetime.
    let (vmas, files, sig, scratch) = unsafe {
        let (v, f, g, s) = (
            &raw mut VMAS,
            &raw mut FILES,
            &raw mut SIGNALS,
            &raw mut SCRATCH,
        );
        (&mut *v, &mut *f, &mut *g, &mut *s)
    };
    files.init(ImageFiles {
        tree,
        tree_gpa: bi.fs_gpa,
        app_gpa: bi.app_gpa,
        app_size: bi.app_size,
        image_end: bi.image_end,
        window_va: FILES_WINDOW_VA,
        app_name: args.strings().next().unwrap_or(b""),
    });
    let windows = [
        Vma {
            kind: VmaKind::Window,
            ..Vma::anon(
                IO_WINDOW_VA,
                IO_WINDOW_VA + HOSTCALL_AREA_SIZE,
                PROT_READ | PROT_WRITE,
            )
        },
        Vma {
            kind: VmaKind::Window,
            ..Vma::anon(
                FILES_WINDOW_VA,
                FILES_WINDOW_VA + (bi.image_end - bi.app_gpa),
                PROT_READ,
            )
        },
    ];
    for w in windows {
        if !vmas.insert(w) {
            return Err(FwError::OutOfMemory);
        }
    }
    let mut io = crate::platform::hostcall::HostcallArea::none();
    io.set(IO_WINDOW_VA, area_gpa);

    let mut guard = KERNEL.lock();
    let k = guard.insert(Kernel {
        plat,
        frames,
        pt,
        vmas,
        brk_start: 0,
        brk: 0,
        mmap_next: MMAP_TOP,
        io,
        files,
        sig,
        clock: Clock::start(),
        scratch,
        tid_address: 0,
        robust_list: 0,
        rseq: 0,
        comm: comm_of(args.strings().next().unwrap_or(b"")),
        unsupported: [(0, 0); 64],
    });
    // `nacre attest`: evidence of this launch for the host's report data, instead of
    // the app. The host stops the guest when it has it.
    if let Some(req) = host_request.filter(|r| r.flags & HOST_REQUEST_ATTEST != 0) {
        return Err(crate::syscall::attest::send_evidence(k, &req.report_data));
    }
    let entry = loader::load(k, &elf, bi.app_gpa, &args)?;
    drop(guard);
    // SAFETY: GDT loaded; the entry uses its selectors.
    unsafe { syscall_entry::init() };
    Ok(entry)
}

/// Linux's `comm` for a program name: its last path component, cut to 15 bytes.
fn comm_of(argv0: &[u8]) -> [u8; 16] {
    let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0);
    let mut comm = [0u8; 16];
    let n = base.len().min(15);
    comm[..n].copy_from_slice(&base[..n]);
    comm
}

/// Map the image from the app ELF to the end of the file tree at the files window,
/// read-only and never executable: 2 MiB pages where whole, 4 KiB pages for the tail
/// (so no page beyond the image becomes visible to the app).
fn map_files_window(
    pt: &mut PageTables,
    bi: &BootInfo,
    alloc: &mut dyn TableAlloc,
) -> Result<(), FwError> {
    let start = bi.app_gpa;
    let whole_end = align_down(bi.image_end, PAGE_SIZE_2M).max(start);
    let flags = USER | NO_EXECUTE;
    let va = |gpa: u64| FILES_WINDOW_VA + (gpa - start);
    if start.is_multiple_of(PAGE_SIZE_2M) && whole_end > start {
        pt.map_range_2m_as(
            va(start),
            start,
            (whole_end - start) / PAGE_SIZE_2M,
            flags,
            true,
            alloc,
        )
        .ok_or(FwError::OutOfMemory)?;
    }
    let tail = if start.is_multiple_of(PAGE_SIZE_2M) {
        whole_end
    } else {
        start
    };
    if tail < bi.image_end {
        pt.map_range_4k(
            va(tail),
            tail,
            (bi.image_end - tail) / PAGE_SIZE_4K,
            flags,
            true,
            alloc,
        )
        .ok_or(FwError::OutOfMemory)?;
    }
    Ok(())
}

/// Enable XSAVE-managed SSE/AVX state to match CPUID, and SMEP.
fn enable_cpu_features() {
    let leaf1 = cpuid(1, 0);
    let mut cr4 = Cr4::read_raw();
    let xsave = leaf1.ecx & (1 << 26) != 0;
    if xsave {
        cr4 |= Cr4Flags::OSXSAVE.bits();
    }
    if cpuid(7, 0).ebx & (1 << 7) != 0 {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits();
    }
    // SAFETY: CR4.OSXSAVE (CPUID.1:ECX.XSAVE) and CR4.SMEP (CPUID.(7,0):EBX.SMEP) are
    // set only where CPUID reports them; SMEP faults ring-0 fetches from user pages,
    // which the firmware never makes. Every other bit is written back as read.
    unsafe { Cr4::write_raw(cr4) };
    if xsave {
        // XCR0 (Intel SDM vol. 1, 13.3): x87 and SSE always; AVX (bit 2) with
        // CPUID.1:ECX.AVX; the AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM states (bits 5-7)
        // together with CPUID.(7,0):EBX.AVX512F (bit 16). The firmware itself never
        // touches vector state beyond what FXSAVE covers.
        let avx = leaf1.ecx & (1 << 28) != 0;
        let avx512 = avx && cpuid(7, 0).ebx & (1 << 16) != 0;
        let supported = u64::from(cpuid(0xD, 0).eax);
        let avx512_state = XCr0Flags::OPMASK | XCr0Flags::ZMM_HI256 | XCr0Flags::HI16_ZMM;
        let mut want = XCr0Flags::X87 | XCr0Flags::SSE;
        if avx {
            want |= XCr0Flags::AVX;
        }
        if avx512 && supported & avx512_state.bits() == avx512_state.bits() {
            want |= avx512_state;
        }
        // SAFETY: CR4.OSXSAVE is set and the value is a subset of CPUID.(0xD,0):EAX, in
        // the combinations XSETBV accepts (x87 and SSE always, AVX-512 state whole and
        // only with AVX; Intel SDM vol. 1, 13.3).
        unsafe { XCr0::write_raw(want.bits() & supported) };
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
