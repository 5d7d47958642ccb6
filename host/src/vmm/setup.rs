//! Building a KVM VM for the emulated SNP platform from a loaded image: guest RAM
//! and its two memslots, the launch pages, CPUID, MSR exits and the BSP's initial
//! state from the image's VMSA.

use crate::emulated::snp::sp::EmulatedSp;
use crate::mmu::attributes::Kind;
use crate::platform::emulated_snp::{EmulatedSnp, C_BIT_MASK};
use crate::platform::emulated_tdx::{EmulatedTdx, SHARED_BIT};
use crate::platform::hostcall::HostileHostcall;
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use igvm::snp_defs::{SevSelector, SevVmsa};
use kvm_bindings::{
    kvm_enable_cap, kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{
    Cap, Kvm, MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd,
    VmFd,
};
use nacre_loader::image::SNP_PARAMETER_PAGE_TYPE;
use nacre_loader::{ImagePage, LoadedImage, PageContents};
use nacre_shared_abi::boot::{
    HostRequest, MemoryMapEntry, HOST_REQUEST_OFFSET, MEMORY_MAP_TYPE_MEMORY,
};
use nacre_shared_abi::doorbell::{EMULATED_SNP_SIGNATURE, EMULATED_TDX_SIGNATURE};
use nacre_shared_abi::layout::{
    align_up, EMULATED_SNP_C_BIT, EMULATED_TDX_GPAW, PAGE_SIZE_2M, PAGE_SIZE_4K,
    TDX_MAX_GUEST_MEMORY, TDX_RESET_PAGE_GPA, TDX_RESET_VECTOR,
};
use zerocopy::IntoBytes;

/// Errors while building the VM.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// /dev/kvm could not be used.
    #[error("cannot use /dev/kvm (is KVM available and are you allowed to open it?)")]
    Kvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM refused {what}")]
    Ioctl {
        /// What.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The image does not fit.
    #[error("{0}")]
    Image(String),
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SetupError {
    move |source| SetupError::Ioctl { what, source }
}

/// The emulated platform a VM runs on, with its state.
#[derive(Debug)]
pub enum Guest {
    /// `emulated-snp`.
    Snp(Box<EmulatedSnp>),
    /// `emulated-tdx`.
    Tdx(Box<EmulatedTdx>),
}

/// A VM ready to run.
#[derive(Debug)]
pub struct Vm {
    /// Keeps the VM alive.
    pub vm: VmFd,
    /// The BSP.
    pub vcpu: VcpuFd,
    /// Platform state (owns guest RAM, so it is dropped after the VM).
    pub guest: Guest,
    /// The TDX reset page's own memory (outside guest RAM), if any.
    pub reset_page: Option<ResetPage>,
}

/// One page of host memory backing a memory slot of its own: the TDX reset page at
/// `TDX_RESET_PAGE_GPA`, which is not part of guest RAM.
#[derive(Debug)]
pub struct ResetPage {
    ptr: *mut u8,
}

impl ResetPage {
    fn new(contents: &[u8; 4096]) -> Result<Self, SetupError> {
        // SAFETY: a fresh anonymous private mapping; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SetupError::Memory(MemoryError::Sys {
                what: "mmap of the reset page",
                source: std::io::Error::last_os_error(),
            }));
        }
        // SAFETY: the mapping is 4096 bytes long and ours alone.
        unsafe { std::ptr::copy_nonoverlapping(contents.as_ptr(), ptr.cast::<u8>(), 4096) };
        Ok(Self { ptr: ptr.cast() })
    }
}

impl Drop for ResetPage {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, after the VM that used it is gone
        // (`Vm` drops `vm` first).
        unsafe { libc::munmap(self.ptr.cast(), 4096) };
    }
}

/// Ways a test can make the host misbehave at launch (env `NACRE_TEST_HOSTILE`), to
/// check that the platform's memory rules stop the guest (DESIGN.md 8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Place the boot-handoff page but leave it unvalidated: the guest's first read
    /// of it is a private access to memory it never validated.
    UnvalidatedBootInfo,
    /// Leave the parameter page hypervisor-owned (shared): the guest reads shared
    /// memory through its private view.
    SharedParamPage,
    /// TDX: add a page the image does not contain before the TD runs, so that the
    /// guest finds it accepted already when it accepts that memory.
    PreAcceptedPage,
    /// Answer every console read claiming one byte more than the guest asked for.
    OverlongRead,
    /// Return from every sleep at once.
    EarlyWake,
}

impl Hostile {
    /// From the environment variable's value.
    pub fn from_env() -> Option<Self> {
        match std::env::var("NACRE_TEST_HOSTILE").ok()?.as_str() {
            "unvalidated-boot-info" => Some(Self::UnvalidatedBootInfo),
            "shared-param-page" => Some(Self::SharedParamPage),
            "pre-accepted-page" => Some(Self::PreAcceptedPage),
            "overlong-read" => Some(Self::OverlongRead),
            "early-wake" => Some(Self::EarlyWake),
            _ => None,
        }
    }
}

/// A new VM with `memory` bytes of guest RAM (one memfd) mapped by two memory slots
/// (0 and 1): each view at the GPA given for it.
fn vm_with_ram(
    memory: u64,
    views: [(View, u64); 2],
) -> Result<(Kvm, VmFd, GuestMemory), SetupError> {
    let kvm = Kvm::new().map_err(SetupError::Kvm)?;
    let vm = kvm.create_vm().map_err(SetupError::Kvm)?;
    let mem = GuestMemory::new(memory)?;
    for (slot, (view, gpa)) in (0..).zip(views) {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: memory,
            userspace_addr: mem.base(view) as u64,
        };
        // SAFETY: the mapping lives as long as `mem`, which the caller moves into the
        // returned `Vm`; that outlives the VM's use of it (the VmFd is dropped first:
        // field order).
        unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("a memory slot"))?;
    }
    Ok((kvm, vm, mem))
}

/// Build the VM.
pub fn build(
    image: &LoadedImage,
    memory: u64,
    request: Option<HostRequest>,
) -> Result<Vm, SetupError> {
    let hostile = Hostile::from_env();
    let (kvm, vm, mem) = vm_with_ram(memory, [(View::Shared, 0), (View::Private, C_BIT_MASK)])?;
    let mut snp = EmulatedSnp::new(mem);
    let mut sp = EmulatedSp::new().map_err(|source| {
        SetupError::Memory(MemoryError::Sys {
            what: "getrandom for the VMPCKs",
            source,
        })
    })?;
    // SNP_LAUNCH_START with the image's guest policy.
    sp.set_policy(image.guest_policy);

    // Launch pages: contents, then assigned + validated (LAUNCH_UPDATE's result), each
    // measured by the emulated security processor as it is added.
    for ImagePage { gpa, contents } in &image.pages {
        let page_type = contents.snp_page_type();
        match contents {
            PageContents::Data(bytes) => snp.mem.write(*gpa, &bytes[..])?,
            PageContents::Secrets => snp.mem.write(*gpa, &sp.secrets_page())?,
            PageContents::Zero => {}
        }
        sp.launch_update(*gpa, page_type, contents.bytes());
        snp.launch_page(*gpa)
            .map_err(|e| SetupError::Image(format!("page {gpa:#x} cannot be placed: {e:?}")))?;
    }
    // The host parameter page: the memory map, inserted unmeasured.
    let param_page = parameter_page(memory, request);
    snp.mem.write(image.param_gpa, &param_page)?;
    let mut launched: Vec<u64> = image.pages.iter().map(|p| p.gpa / PAGE_SIZE_4K).collect();
    if hostile == Some(Hostile::SharedParamPage) {
        snp.mmu.hostile_share(image.param_gpa / PAGE_SIZE_4K);
    } else {
        snp.launch_page(image.param_gpa)
            .map_err(|e| SetupError::Image(format!("parameter page cannot be placed: {e:?}")))?;
        launched.push(image.param_gpa / PAGE_SIZE_4K);
    }
    // Fault the launched pages in before the first instruction (KVM_PRE_FAULT_MEMORY):
    // the firmware's code must be mapped to be fetched. Everything else is mapped by
    // the guest's own faults.
    for (first, n) in runs(launched) {
        snp.mmu.prefault(&snp.mem, first, n, Kind::Private)?;
    }
    if hostile == Some(Hostile::UnvalidatedBootInfo) {
        snp.unvalidate_page(nacre_shared_abi::layout::BOOT_INFO_GPA)?;
    }

    enable_msr_exits(&vm)?;
    let vcpu = vm.create_vcpu(0).map_err(ioctl("a vCPU"))?;
    set_cpuid(&kvm, &vcpu)?;
    let vmsa = image.vmsa.as_deref().ok_or_else(|| {
        SetupError::Image("the image has no SEV-SNP VMSA (it was not loaded for SEV-SNP)".into())
    })?;
    // SNP_LAUNCH_FINISH: the VMSA, then the measurement must be the one the image
    // predicts (the hostile parameter-page hook leaves the parameter page out on
    // purpose).
    if hostile != Some(Hostile::SharedParamPage) {
        sp.launch_update(image.param_gpa, SNP_PARAMETER_PAGE_TYPE, &param_page);
    }
    let measured = sp.launch_finish(
        vmsa.as_bytes()
            .try_into()
            .map_err(|_| SetupError::Image("the VMSA is not one page".into()))?,
    );
    if hostile != Some(Hostile::SharedParamPage) && image.launch_digest != Some(measured) {
        return Err(SetupError::Image(format!(
            "the launch digest of the added pages ({}) differs from the image's ({})",
            hex(&measured),
            image
                .launch_digest
                .map_or_else(|| "none".into(), |m| hex(&m)),
        )));
    }
    snp.sp = Some(sp);
    set_initial_state(&vcpu, vmsa)?;
    snp.host.tsc_khz = tsc_khz(&vcpu);
    snp.host.hostile = hostcall_hostility(hostile);
    Ok(Vm {
        vm,
        vcpu,
        guest: Guest::Snp(Box::new(snp)),
        reset_page: None,
    })
}

/// Build a TD on the emulated TDX platform: guest RAM with the private view at GPA 0
/// and the shared view at the shared bit, the reset page in a slot of its own, every
/// launch page added (TDH.MEM.PAGE.ADD, and TDH.MR.EXTEND where measured) in image
/// order, CPUID saying "TD" and the architectural 32-bit entry state at the reset
/// vector.
pub fn build_tdx(
    image: &LoadedImage,
    memory: u64,
    request: Option<HostRequest>,
) -> Result<Vm, SetupError> {
    if memory > TDX_MAX_GUEST_MEMORY {
        return Err(SetupError::Image(format!(
            "emulated-tdx guests have at most {} MiB of RAM (RAM ends below the reset \
             vector at 4 GiB; RAM above 4 GiB is not supported yet)",
            TDX_MAX_GUEST_MEMORY >> 20
        )));
    }
    let (kvm, vm, mem) = vm_with_ram(memory, [(View::Private, 0), (View::Shared, SHARED_BIT)])?;
    let mut tdx = Box::new(EmulatedTdx::new(mem));
    // TDH.MNG.INIT with the TD attributes the image's policy asks for.
    tdx.td_attributes = image.td_attributes().unwrap_or(0);
    tdx.report_key = Some(
        crate::emulated::tdx::keys::TdxReportKey::generate()
            .map_err(|e| SetupError::Image(format!("the emulated TDX module's report key: {e}")))?,
    );
    let mut reset = None;
    let mut launched = Vec::new();
    for ImagePage { gpa, contents } in &image.pages {
        if *gpa == TDX_RESET_PAGE_GPA {
            let bytes = contents.bytes();
            tdx.mrtd.add_page(*gpa, Some(bytes));
            reset = Some(ResetPage::new(bytes)?);
            continue;
        }
        if let PageContents::Data(bytes) = contents {
            tdx.mem.write(*gpa, &bytes[..])?;
        }
        tdx.add_page(*gpa, true).map_err(SetupError::Image)?;
        launched.push(*gpa / PAGE_SIZE_4K);
    }
    let Some(reset) = reset else {
        return Err(SetupError::Image(
            "the image has no TDX reset page (it was not loaded for TDX)".into(),
        ));
    };
    let region = kvm_userspace_memory_region {
        slot: 2,
        flags: 0,
        guest_phys_addr: TDX_RESET_PAGE_GPA,
        memory_size: PAGE_SIZE_4K,
        userspace_addr: reset.ptr as u64,
    };
    // SAFETY: the page lives in the returned `Vm`, which drops the VM first.
    unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("the reset page's slot"))?;
    // The parameter page: added, not measured (its contents are the host's).
    let hostile = Hostile::from_env();
    tdx.mem
        .write(image.param_gpa, &parameter_page(memory, request))?;
    if hostile == Some(Hostile::SharedParamPage) {
        tdx.mmu
            .map_gpa(&tdx.mem, image.param_gpa / PAGE_SIZE_4K, 1, false)?;
    } else {
        tdx.add_page(image.param_gpa, false)
            .map_err(SetupError::Image)?;
        launched.push(image.param_gpa / PAGE_SIZE_4K);
    }
    for (first, n) in runs(launched) {
        tdx.mmu.prefault(&tdx.mem, first, n)?;
    }
    // TDH.MR.FINALIZE: the module's MRTD must be the one the image predicts (the
    // hostile parameter-page hook leaves the parameter page out on purpose).
    let mrtd = tdx.mrtd.clone().finish();
    if hostile != Some(Hostile::SharedParamPage) && image.mrtd != Some(mrtd) {
        return Err(SetupError::Image(format!(
            "the MRTD of the added pages ({}) differs from the image's ({})",
            hex(&mrtd),
            image.mrtd.map_or_else(|| "none".into(), |m| hex(&m)),
        )));
    }
    tdx.mrtd_final = Some(mrtd);
    if hostile == Some(Hostile::PreAcceptedPage) {
        // A host that adds a page behind the guest's back, so that the guest finds it
        // accepted already: in the first 2 MiB chunk the firmware accepts.
        tdx.mmu.hostile_accept(&tdx.mem, hostile_gfn(image))?;
    }
    if let Some(b) = std::env::var("NACRE_TEST_MAP_GPA_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tdx.map_gpa_budget = Some(b);
    }
    let vcpu = vm.create_vcpu(0).map_err(ioctl("a vCPU"))?;
    set_cpuid_tdx(&kvm, &vcpu)?;
    set_tdx_entry_state(&vcpu)?;
    tdx.host.tsc_khz = tsc_khz(&vcpu);
    tdx.host.hostile = hostcall_hostility(hostile);
    Ok(Vm {
        vm,
        vcpu,
        guest: Guest::Tdx(tdx),
        reset_page: Some(reset),
    })
}

/// The hostcall misbehaviour a test asked for, if any.
fn hostcall_hostility(h: Option<Hostile>) -> Option<HostileHostcall> {
    match h? {
        Hostile::OverlongRead => Some(HostileHostcall::OverlongRead),
        Hostile::EarlyWake => Some(HostileHostcall::EarlyWake),
        _ => None,
    }
}

/// The vCPU's TSC frequency in kHz, which the guest's clocks count in (0 if KVM does
/// not say; the guest then falls back to its own default).
fn tsc_khz(vcpu: &VcpuFd) -> u64 {
    vcpu.get_tsc_khz().map_or(0, u64::from)
}

/// The first page the firmware accepts after the image (the start of its frame
/// bitmap): where a hostile host pre-accepts a page in tests.
fn hostile_gfn(image: &LoadedImage) -> u64 {
    align_up(image.boot_info.image_end, PAGE_SIZE_2M) / PAGE_SIZE_4K
}

/// The maximal runs `(first, count)` of consecutive GFNs in `gfns`.
fn runs(mut gfns: Vec<u64>) -> Vec<(u64, u64)> {
    gfns.sort_unstable();
    gfns.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for gfn in gfns {
        match out.last_mut() {
            Some((first, n)) if *first + *n == gfn => *n += 1,
            _ => out.push((gfn, 1)),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host parameter page: a memory map with one RAM entry, and the host's request
/// of this boot, if any.
fn parameter_page(memory: u64, request: Option<HostRequest>) -> [u8; 4096] {
    let map = [
        MemoryMapEntry {
            starting_gpa_page_number: 0,
            number_of_pages: memory / PAGE_SIZE_4K,
            entry_type: MEMORY_MAP_TYPE_MEMORY,
            flags: 0,
            reserved: 0,
        },
        MemoryMapEntry {
            starting_gpa_page_number: 0,
            number_of_pages: 0,
            entry_type: 0,
            flags: 0,
            reserved: 0,
        },
    ];
    let mut param = [0u8; 4096];
    param[..48].copy_from_slice(map.as_bytes());
    if let Some(r) = request {
        param[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128].copy_from_slice(r.as_bytes());
    }
    param
}

/// CPUID of a TD: the emulated-TDX hypervisor signature, and leaf 0x21 spelling
/// "IntelTDX    " in EBX, EDX, ECX as the TDX module reports it (Linux
/// `arch/x86/coco/tdx/tdx.c`, `TDX_IDENT`); no SEV leaf.
fn set_cpuid_tdx(kvm: &Kvm, vcpu: &VcpuFd) -> Result<(), SetupError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let sig = EMULATED_TDX_SIGNATURE;
    let ident = b"IntelTDX    ";
    let mut entries: Vec<_> = cpuid
        .as_slice()
        .iter()
        .copied()
        .filter(|e| e.function != 0x8000_001F && e.function != 0x21)
        .collect();
    for e in &mut entries {
        match e.function {
            0 => e.eax = e.eax.max(0x21),
            0x4000_0000 => {
                e.eax = 0x4000_0001;
                e.ebx = word(&sig, 0);
                e.ecx = word(&sig, 4);
                e.edx = word(&sig, 8);
            }
            _ => {}
        }
    }
    entries.push(kvm_bindings::kvm_cpuid_entry2 {
        function: 0x21,
        ebx: word(ident, 0),
        edx: word(ident, 4),
        ecx: word(ident, 8),
        ..Default::default()
    });
    let cpuid = kvm_bindings::CpuId::from_entries(&entries)
        .map_err(|_| SetupError::Image("too many CPUID entries".into()))?;
    vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))
}

/// The TD vCPU's architectural initial state (Intel TDX module base spec, "Initial
/// State of Guest TD vCPU"): 32-bit protected mode, paging off, flat 4 GiB segments,
/// CR0 = PE | NE, CR4.MCE, EFER.LME, RIP = the reset vector, EBX = GPAW, ESI = the
/// vCPU index.
fn set_tdx_entry_state(vcpu: &VcpuFd) -> Result<(), SetupError> {
    let flat = |type_: u8| kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: 0,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    sregs.cs = flat(0xB);
    sregs.ds = flat(0x3);
    sregs.es = flat(0x3);
    sregs.fs = flat(0x3);
    sregs.gs = flat(0x3);
    sregs.ss = flat(0x3);
    sregs.cr0 = 0x21; // PE | NE
    sregs.cr3 = 0;
    sregs.cr4 = 0x40; // MCE
    sregs.efer = 1 << 8; // LME
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
    regs.rip = TDX_RESET_VECTOR;
    regs.rflags = 0x2;
    regs.rbx = u64::from(EMULATED_TDX_GPAW);
    regs.rsi = 0;
    vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))
}

/// SEV_STATUS and the GHCB MSR exit to the VMM (KVM_CAP_X86_USER_SPACE_MSR + filter).
fn enable_msr_exits(vm: &VmFd) -> Result<(), SetupError> {
    let mut cap = kvm_enable_cap {
        cap: Cap::X86UserSpaceMsr as u32,
        ..Default::default()
    };
    cap.args[0] = u64::from((MsrExitReason::Filter | MsrExitReason::Unknown).bits());
    vm.enable_cap(&cap)
        .map_err(ioctl("KVM_CAP_X86_USER_SPACE_MSR"))?;
    let bitmap = [0u8; 1]; // both MSRs denied -> exit to user space
    let range = MsrFilterRange {
        flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
        base: nacre_shared_abi::snp::MSR_GHCB,
        msr_count: 2,
        bitmap: &bitmap,
    };
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &[range])
        .map_err(ioctl("the MSR filter"))
}

fn set_cpuid(kvm: &Kvm, vcpu: &VcpuFd) -> Result<(), SetupError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    let sig = EMULATED_SNP_SIGNATURE;
    let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    let mut have_sev_leaf = false;
    let mut max_ext = 0;
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x4000_0000 => {
                e.eax = 0x4000_0001;
                e.ebx = word(0);
                e.ecx = word(4);
                e.edx = word(8);
            }
            0x8000_0000 => max_ext = e.eax,
            0x8000_001F => {
                have_sev_leaf = true;
                // EAX: SEV, SEV-ES, SNP supported; EBX[5:0] C-bit (AMD APM vol. 3, E.4.17).
                e.eax = (1 << 1) | (1 << 3) | (1 << 4);
                e.ebx = EMULATED_SNP_C_BIT;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
    if !have_sev_leaf {
        let mut entries = cpuid.as_slice().to_vec();
        entries.push(kvm_bindings::kvm_cpuid_entry2 {
            function: 0x8000_001F,
            eax: (1 << 1) | (1 << 3) | (1 << 4),
            ebx: EMULATED_SNP_C_BIT,
            ..Default::default()
        });
        if max_ext < 0x8000_001F {
            for e in &mut entries {
                if e.function == 0x8000_0000 {
                    e.eax = 0x8000_001F;
                }
            }
        }
        cpuid = kvm_bindings::CpuId::from_entries(&entries)
            .map_err(|_| SetupError::Image("too many CPUID entries".into()))?;
    }
    vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))
}

/// Convert a VMSA segment (SVM attribute format, AMD APM vol. 2, 15.5.1) to KVM's.
fn segment(s: &SevSelector) -> kvm_segment {
    let a = s.attrib;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xF) as u8,
        present: bit(7),
        dpl: ((a >> 5) & 3) as u8,
        db: bit(10),
        s: bit(4),
        l: bit(9),
        g: bit(11),
        avl: bit(8),
        unusable: u8::from(bit(7) == 0),
        padding: 0,
    }
}

/// EFER.SVME: set in every SNP VMSA, meaningless for the emulated guest.
const EFER_SVME: u64 = 1 << 12;

fn set_initial_state(vcpu: &VcpuFd, v: &SevVmsa) -> Result<(), SetupError> {
    let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    sregs.cs = segment(&v.cs);
    sregs.ds = segment(&v.ds);
    sregs.es = segment(&v.es);
    sregs.fs = segment(&v.fs);
    sregs.gs = segment(&v.gs);
    sregs.ss = segment(&v.ss);
    sregs.tr = segment(&v.tr);
    sregs.ldt = segment(&v.ldtr);
    sregs.gdt.base = v.gdtr.base;
    sregs.gdt.limit = v.gdtr.limit as u16;
    sregs.idt.base = v.idtr.base;
    sregs.idt.limit = v.idtr.limit as u16;
    sregs.cr0 = v.cr0;
    sregs.cr3 = v.cr3;
    sregs.cr4 = v.cr4;
    sregs.efer = v.efer & !EFER_SVME;
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
    regs.rip = v.rip;
    regs.rsp = v.rsp;
    regs.rflags = v.rflags;
    regs.rax = v.rax;
    vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))
}
