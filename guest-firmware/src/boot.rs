//! The boot sequence, from the 64-bit entry at `_start` (SNP: the VMSA's state; TDX:
//! after the 32-bit reset-vector code) to the app's first instruction. [`boot`] runs
//! the steps of `docs/design.md`, "Boot, step by step" (the first is the host's), one
//! function each; nothing here names a platform: what differs between them is behind
//! [`GuestPlatform`].

use crate::app::elf::Elf;
use crate::app::loader::{self, Entry};
use crate::arch::cpu::cpuid;
use crate::arch::{gdt, idt, syscall_entry};
use crate::error::FwError;
use crate::fs::mem::MemFs;
use crate::fs::{Files, ImageFiles};
use crate::kernel::{Kernel, Scratch, MMAP_TOP, PATH_MAX};
use crate::mem::frames::{FrameTables, Frames};
use crate::mem::paging::{PageTables, TableAlloc, GLOBAL, NO_EXECUTE, USER, WRITABLE};
use crate::mem::user::{
    Vma, VmaKind, Vmas, FILES_WINDOW_VA, IO_WINDOW_VA, PIPE_WINDOW_VA, PROT_READ, PROT_WRITE,
    TMPFS_WINDOW_SIZE, TMPFS_WINDOW_VA, XSTATE_SLOT, XSTATE_WINDOW_VA, ZERO_WINDOW_SIZE,
    ZERO_WINDOW_VA,
};
use crate::mem::{phys_to_virt, use_direct_map};
use crate::platform::hostcall::HostcallArea;
use crate::platform::{self, GuestPlatform, PageState};
use crate::sched::{Current, Sched, ThreadBlock};
use crate::syscall::epoll::InterestList;
use crate::syscall::membarrier::Membarrier;
use crate::syscall::pipe::Pipes;
use crate::syscall::signal::Signals;
use crate::syscall::SyscallCounts;
use crate::time::Clock;
use core::arch::asm;
use nacre_shared_abi::boot::{
    parse_memory_map, ArgsBlob, BootInfo, HostRequest, BOOT_FLAG_VALIDATE_4K, HOST_REQUEST_ATTEST,
};
use nacre_shared_abi::filetree::FileTree;
use nacre_shared_abi::hostcall::{hostcall_area_gpa, HOSTCALL_AREA_SIZE};
use nacre_shared_abi::layout::*;
use x86_64::registers::control::{Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;
use zerocopy::FromBytes;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Page-table frames used before the frame allocator exists: one page directory per
/// GiB of the direct map of RAM (2 MiB pages, up to [`MAX_GUEST_MEMORY`]) and fewer
/// than [`PT_POOL_OTHERS`] others (the PML4, the firmware's own map, the trampoline
/// page's alias, the platform's shared pages).
const PT_POOL_PAGES: usize = 80;
/// The pool's pages that are not the direct map's page directories.
const PT_POOL_OTHERS: u64 = 16;
const _: () = assert!(PT_POOL_PAGES as u64 >= MAX_GUEST_MEMORY / PAGE_SIZE_1G + PT_POOL_OTHERS);
static mut PT_POOL: [Page; PT_POOL_PAGES] = [const { Page([0; 4096]) }; PT_POOL_PAGES];

/// The kernel's big tables, in bss (zero at launch) so that boot moves none of them.
static mut VMAS: Vmas = Vmas::new();
static mut FILES: Files = Files::new();
static mut MEMFS: MemFs = MemFs::new();
static mut PIPES: Pipes = Pipes::new();
static mut EPOLL: InterestList = InterestList::new();
static mut SOCKETS: crate::syscall::socket::Sockets = crate::syscall::socket::Sockets::new();
static mut SIGNALS: Signals = Signals::new();
static mut SCHED: Sched = Sched::new(crate::syscall::process::PID as u32);
/// The first thread's own state (later threads' live beside their kernel stacks).
static mut FIRST_THREAD: ThreadBlock = ThreadBlock::new();
static mut SYSCALLS: SyscallCounts = SyscallCounts::new();
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

/// Boot to the point where the app can be entered: the steps of `docs/design.md`,
/// "Boot, step by step".
pub fn boot() -> Result<Entry, FwError> {
    // 2. The measured boot information and the platform it names.
    let (bi, plat) = entry_state()?;
    // 3. The host's memory map, the firmware's own page tables, the platform's
    //    shared pages.
    let host = check_memory_map(&bi, plat.ram_limit())?;
    let mut pt = early_page_tables(&bi, host.ram, plat)?;
    plat.setup(&mut pt, host.cpus)?;
    // 4. The working set: the frame allocator's first chunk.
    let mut frames = accept_working_set(&bi, host.ram, plat, pt)?;
    // 5. The hostcall area and the files window.
    let io = map_io_windows(&bi, host.ram, plat, &mut frames, &mut pt)?;
    // 6. The app, then ring 3.
    let syscall_via_trampoline = plat.backend().syscall_via_trampoline();
    let app = MeasuredApp::from_boot_info(&bi)?;
    let mut guard = crate::kernel::lock();
    let k = guard.insert(new_kernel(plat, frames, pt, io, &bi, &app)?);
    // SAFETY: boot runs once; the writable inodes are borrowed only here, for the
    // kernel's lifetime (the files own them from now on).
    let memfs = unsafe {
        let m = &raw mut MEMFS;
        &mut *m
    };
    crate::syscall::memfile::with_fs(k, |f, b| f.init_writable(memfs, b))
        .map_err(|_| FwError::OutOfMemory)?;
    // `nacre attest`: evidence of this launch for the host's report data, instead of
    // the app. The host stops the guest when it has it.
    if let Some(req) = host.request.filter(|r| r.flags & HOST_REQUEST_ATTEST != 0) {
        crate::arch::smp::park_all();
        return Err(crate::syscall::attest::send_evidence(k, &req.report_data));
    }
    let mut entry = loader::load(k, &app.elf, bi.app_gpa, &app.args)?;
    // 7. Time slices where the local APIC's timer can be used; the other vCPUs.
    let preemption = start_preemption(k);
    if preemption {
        entry.rflags |= RFLAGS_IF;
    }
    // SAFETY: the GDT is loaded (`entry_state`); the entry uses its selectors. Before
    // the other vCPUs start: they take the same kind of entry.
    unsafe { syscall_entry::init(syscall_via_trampoline, crate::arch::gdt::kernel_stack_top()) };
    crate::sched::cpu::bring_up(k, host.cpus, preemption);
    drop(guard);
    crate::sched::cpu::wait_started();
    // The host's boot time (`nacre run --stats`, boot_ms) ends here.
    if let Some(k) = crate::kernel::lock().as_mut() {
        k.announce_app_entry()?;
    }
    Ok(entry)
}

/// Step 2: descriptor tables for the firmware's own exceptions, then the measured boot
/// information (checked) and the platform it names, detected and checked
/// ([`platform::detect`]).
fn entry_state() -> Result<(BootInfo, &'static mut dyn GuestPlatform), FwError> {
    // SAFETY: first code after entry, on the vCPU that claimed the boot, called once;
    // the other vCPUs wait in `_start` for their start word.
    unsafe {
        gdt::init();
        idt::init();
    }
    // SAFETY: the boot handoff page is measured private memory mapped by the loader's
    // tables; 128 bytes are read.
    let bi_bytes =
        unsafe { core::slice::from_raw_parts(phys_to_virt(BOOT_INFO_GPA) as *const u8, 128) };
    let bi = BootInfo::read_from_bytes(bi_bytes).map_err(|_| FwError::BootInfo)?;
    let kind = bi.check().map_err(|_| FwError::BootInfo)?;
    let plat = platform::detect(&bi, kind)?;
    Ok((bi, plat))
}

/// What the host put in the parameter page, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostParams {
    /// Bytes of guest RAM.
    pub ram: u64,
    /// The host's request (`nacre attest`), if any.
    pub request: Option<HostRequest>,
    /// The vCPUs the host says it made.
    pub cpus: u32,
}

/// Step 3: the host's memory map is unmeasured: copy it into private memory, then
/// check it ([`check_host_params`]).
fn check_memory_map(bi: &BootInfo, ram_limit: u64) -> Result<HostParams, FwError> {
    let mut param = [0u8; 4096];
    // SAFETY: the parameter page is private and validated (inserted at launch), mapped
    // by the loader's tables; the copy reads one page of it.
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(HOST_PARAM_GPA) as *const u8,
            param.as_mut_ptr(),
            4096,
        )
    };
    check_host_params(bi, &param, ram_limit)
}

/// Check a private copy of the host's parameter page against the measured boot
/// information: the memory map (at least the image's minimum, at most `ram_limit`),
/// the host's request and its vCPU count. Everything in the page is host input.
pub fn check_host_params(
    bi: &BootInfo,
    param: &[u8; 4096],
    ram_limit: u64,
) -> Result<HostParams, FwError> {
    let ram = parse_memory_map(param, bi.min_memory).map_err(|_| FwError::MemoryMap)?;
    let request = HostRequest::parse(param).map_err(|_| FwError::HostRequest)?;
    let cpus = nacre_shared_abi::boot::host_cpus(param).map_err(|_| FwError::HostRequest)?;
    if ram > ram_limit {
        return Err(FwError::MemoryMap);
    }
    Ok(HostParams { ram, request, cpus })
}

/// Step 3: the firmware's own page tables, live: the firmware at KERNEL_VA_BASE
/// (2 MiB pages, private), page directories for a direct map of all RAM (2 MiB,
/// private, NX) with the image mapped now and every other chunk when the frame
/// allocator accepts it, the trampoline page's user alias, and the tables the
/// platform's shared pages need. Then the CPU features the app may use.
fn early_page_tables(
    bi: &BootInfo,
    ram: u64,
    plat: &mut dyn GuestPlatform,
) -> Result<PageTables, FwError> {
    let mut pool = Pool { next: 0 };
    let root = pool.alloc_table().ok_or(FwError::OutOfMemory)?;
    let masks = plat.pte_masks();
    let mut pt = PageTables::new(root, masks.private, masks.shared);
    pt.map_range_2m(
        KERNEL_VA_BASE,
        0,
        align_up(bi.firmware_end, PAGE_SIZE_2M) / PAGE_SIZE_2M,
        WRITABLE | GLOBAL,
        &mut pool,
    )
    .ok_or(FwError::OutOfMemory)?;
    pt.prepare_2m(DIRECT_MAP_VA_BASE, ram, &mut pool)
        .ok_or(FwError::OutOfMemory)?;
    pt.map_range_2m(
        DIRECT_MAP_VA_BASE,
        0,
        align_up(bi.image_end, PAGE_SIZE_2M) / PAGE_SIZE_2M,
        WRITABLE | NO_EXECUTE,
        &mut pool,
    )
    .ok_or(FwError::OutOfMemory)?;
    // The trampoline page (the emulated platform's SYSCALL trampoline and the ring-3
    // copy helpers of `arch/upcall.rs`), again at a user-accessible alias.
    let t = syscall_entry::trampoline_code_va();
    pt.map_4k(
        syscall_entry::TRAMPOLINE_VA,
        t - KERNEL_VA_BASE,
        USER,
        true,
        &mut pool,
    )
    .ok_or(FwError::OutOfMemory)?;
    // The platform's shared mappings' tables now, while the pool can give them.
    plat.prepare_tables(&mut pt, &mut pool)?;
    let root = PhysFrame::from_start_address(PhysAddr::new_truncate(pt.cr3()))
        .map_err(|_| FwError::OutOfMemory)?;
    // SAFETY: the new tables map the firmware (code, data, stacks) at the addresses it
    // runs at now, and the direct map covers every page `phys_to_virt` will name.
    unsafe { Cr3::write(root, Cr3Flags::empty()) };
    use_direct_map();
    enable_cpu_features();
    Ok(pt)
}

/// Step 4: the frame allocator accepts the first chunk above the image and keeps its
/// validated-page record there; the pages the platform validated at launch are
/// recorded, and a firmware page the platform made shared is not.
fn accept_working_set(
    bi: &BootInfo,
    ram: u64,
    plat: &mut dyn GuestPlatform,
    pt: PageTables,
) -> Result<Frames, FwError> {
    let validate_4k_only = bi.flags & BOOT_FLAG_VALIDATE_4K != 0;
    let image_2m = align_up(bi.image_end, PAGE_SIZE_2M);
    // The last 2 MiB of RAM are the hostcall area, never handed out as frames.
    let mut frames = Frames::new(plat, pt, image_2m, hostcall_area_gpa(ram), validate_4k_only)?;
    frames.record_validated(&[
        (BOOT_INFO_GPA, PAGE_SIZE_4K),
        (HOST_PARAM_GPA, PAGE_SIZE_4K),
        (FIRMWARE_GPA, bi.firmware_end - FIRMWARE_GPA),
        (bi.app_gpa, bi.image_end - bi.app_gpa),
    ]);
    frames.record_validated(plat.launch_pages());
    let (first, pages) = plat.rescinded_pages();
    for gpa in (0..pages).map(|i| first + i * PAGE_SIZE_4K) {
        frames.validated().set(gpa, false);
    }
    Ok(frames)
}

/// Step 5: the hostcall area (the last 2 MiB of RAM, never validated or accepted)
/// goes shared with one page-state change and is mapped at the I/O window, where both
/// the firmware and the ring-3 copy helpers reach it; the image from the app ELF to
/// the end of the file tree is mapped read-only at the files window.
fn map_io_windows(
    bi: &BootInfo,
    ram: u64,
    plat: &mut dyn GuestPlatform,
    frames: &mut Frames,
    pt: &mut PageTables,
) -> Result<HostcallArea, FwError> {
    let area_gpa = hostcall_area_gpa(ram);
    plat.page_state_change(area_gpa, HOSTCALL_AREA_SIZE, PageState::Shared, true)?;
    let mut alloc = FrameTables { frames, plat };
    pt.map_range_2m_as(
        IO_WINDOW_VA,
        area_gpa,
        HOSTCALL_AREA_SIZE / PAGE_SIZE_2M,
        USER | WRITABLE | NO_EXECUTE,
        false,
        &mut alloc,
    )
    .ok_or(FwError::OutOfMemory)?;
    map_files_window(pt, bi, &mut alloc)?;
    // First touch by the firmware: the host maps the whole area into its TDP now, so
    // that ring-3 copies never meet an unmapped shared page.
    // SAFETY: the area is mapped writable at IO_WINDOW_VA; nothing references it.
    unsafe { (IO_WINDOW_VA as *mut u64).write_volatile(0) };
    let mut io = HostcallArea::none();
    io.set(IO_WINDOW_VA, area_gpa);
    Ok(io)
}

/// The measured app: its file tree, ELF and arguments, checked.
struct MeasuredApp {
    tree: FileTree<'static>,
    elf: Elf<'static>,
    args: ArgsBlob<'static>,
}

impl MeasuredApp {
    /// Step 6: read the app's parts where the measured boot information puts them.
    fn from_boot_info(bi: &BootInfo) -> Result<Self, FwError> {
        // SAFETY: the file tree, the app image and the argument blob are measured
        // private pages inside the image (`BootInfo::check` bounded them), mapped by
        // the direct map for good and never written.
        let (tree, app, args) = unsafe {
            (
                core::slice::from_raw_parts(
                    phys_to_virt(bi.fs_gpa) as *const u8,
                    bi.fs_size as usize,
                ),
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
        Ok(Self {
            tree: FileTree::parse(tree).map_err(|_| FwError::BootInfo)?,
            elf: Elf::parse(app)?,
            args: ArgsBlob::parse(args).map_err(|_| FwError::BootInfo)?,
        })
    }
}

/// Step 6: the firmware's state for the app's lifetime, with the kernel's big tables
/// and the two windows in the app's address space.
fn new_kernel(
    plat: &'static mut dyn GuestPlatform,
    frames: Frames,
    pt: PageTables,
    io: HostcallArea,
    bi: &BootInfo,
    app: &MeasuredApp,
) -> Result<Kernel, FwError> {
    // SAFETY: boot runs once, before anything else can reach these statics; each is
    // borrowed exactly once here, for the kernel's lifetime.
    let (vmas, files, sig, scratch, sched, syscalls, pipes, epoll) = unsafe {
        let (v, f, g, s, t, c, p, e) = (
            &raw mut VMAS,
            &raw mut FILES,
            &raw mut SIGNALS,
            &raw mut SCRATCH,
            &raw mut SCHED,
            &raw mut SYSCALLS,
            &raw mut PIPES,
            &raw mut EPOLL,
        );
        (
            &mut *v, &mut *f, &mut *g, &mut *s, &mut *t, &mut *c, &mut *p, &mut *e,
        )
    };
    let sockets = &raw mut SOCKETS;
    // SAFETY: as above, for the socket table.
    let net = unsafe { &mut *sockets };
    let first = &raw mut FIRST_THREAD;
    let mut thread: Current<crate::sched::ThreadCtl> = Current::unset();
    // SAFETY: as above: the first thread's block is a static reached only through
    // these two references (disjoint parts of it) and the scheduler's record.
    unsafe {
        thread.point(&raw mut (*first).ctl);
        sig.thread.point(&raw mut (*first).sig);
    }
    sched.set_boot_thread(first, crate::arch::gdt::kernel_stack_top());
    let argv0 = app.args.strings().next().unwrap_or(b"");
    thread.comm = comm_of(argv0);
    files.init(ImageFiles {
        tree: app.tree,
        tree_gpa: bi.fs_gpa,
        app_gpa: bi.app_gpa,
        app_size: bi.app_size,
        image_end: bi.image_end,
        window_va: FILES_WINDOW_VA,
        app_name: argv0,
        guest_device: plat.guest_device(),
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
                XSTATE_WINDOW_VA,
                XSTATE_WINDOW_VA + crate::sched::MAX_THREADS as u64 * XSTATE_SLOT,
                PROT_READ | PROT_WRITE,
            )
        },
        Vma {
            kind: VmaKind::Window,
            ..Vma::anon(
                ZERO_WINDOW_VA,
                ZERO_WINDOW_VA + ZERO_WINDOW_SIZE,
                PROT_READ | PROT_WRITE,
            )
        },
        Vma {
            kind: VmaKind::Window,
            ..Vma::anon(
                PIPE_WINDOW_VA,
                PIPE_WINDOW_VA + crate::syscall::pipe::PIPE_WINDOW_SIZE,
                PROT_READ | PROT_WRITE,
            )
        },
        Vma {
            kind: VmaKind::Window,
            ..Vma::anon(
                TMPFS_WINDOW_VA,
                TMPFS_WINDOW_VA + TMPFS_WINDOW_SIZE,
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
    Ok(Kernel {
        plat,
        frames,
        pt,
        vmas,
        brk_start: 0,
        brk: 0,
        mmap_next: MMAP_TOP,
        io,
        files,
        pipes,
        epoll,
        net,
        sig,
        clock: Clock::start(),
        scratch,
        thread,
        sched,
        membarrier: Membarrier::new(),
        unsupported: [(0, 0); 64],
        syscalls,
    })
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

/// Enable XSAVE-managed SSE/AVX state to match CPUID, and SMEP (on each vCPU).
pub fn enable_cpu_features() {
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
        crate::arch::fpu::set_xfeatures(want.bits() & supported);
    }
}

/// RFLAGS.IF (Intel SDM vol. 1, 3.4.3).
const RFLAGS_IF: u64 = 1 << 9;

/// Turn on the local APIC and time slices where its timer has the TSC-deadline mode
/// (its registers are reached through the platform's protocol,
/// [`platform::apic_msr`]). Without it threads switch only when one blocks, yields
/// or exits. Returns whether the app runs with interrupts on.
fn start_preemption(k: &mut Kernel) -> bool {
    let Ok(crate::arch::apic::TimerMode::TscDeadline) =
        crate::arch::apic::timer_mode(cpuid(1, 0).ecx)
    else {
        return false;
    };
    // SAFETY: once, on the boot vCPU, with interrupts off; `idt::init` installed the
    // timer, wake-up and spurious gates.
    #[cfg(not(any(test, feature = "fuzzing")))]
    unsafe {
        crate::arch::apic::enable(crate::arch::apic::TimerMode::TscDeadline)
    };
    crate::sched::enable_preemption(k);
    syscall_entry::set_user_interrupts();
    true
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
            "push {rflags}",
            "push {cs}",
            "push {rip}",
            "xor eax, eax", "xor ebx, ebx", "xor ecx, ecx", "xor edx, edx",
            "xor esi, esi", "xor edi, edi", "xor ebp, ebp",
            "xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d", "xor r11d, r11d",
            "xor r12d, r12d", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d",
            "iretq",
            ss = in(reg) u64::from(gdt::USER_DS),
            rsp = in(reg) entry.rsp,
            rflags = in(reg) entry.rflags,
            cs = in(reg) u64::from(gdt::USER_CS),
            rip = in(reg) entry.rip,
            options(noreturn),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_the_last_path_component_cut_to_15_bytes() {
        assert_eq!(&comm_of(b"/app/hello")[..6], b"hello\0");
        assert_eq!(&comm_of(b"hello")[..6], b"hello\0");
        assert_eq!(comm_of(b"/a/very-long-program-name"), *b"very-long-progr\0");
        assert_eq!(comm_of(b""), [0; 16]);
        assert_eq!(comm_of(b"/app/"), [0; 16]);
    }
}
