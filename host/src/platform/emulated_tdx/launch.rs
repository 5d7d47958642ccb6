//! Launching an `emulated-tdx` TD: guest RAM with the private view at GPA 0 and the
//! shared view at the shared bit, the reset page in a slot of its own, every launch
//! page added (TDH.MEM.PAGE.ADD, and TDH.MR.EXTEND where measured) in image order,
//! the parameter page (with the number of vCPUs), and every vCPU (`--cpus`) with CPUID
//! saying "TD" and the architectural 32-bit entry state at the reset vector
//! ([`setup_vcpu`]): the same for all but ESI, the vCPU's index, as the TDX module
//! sets it. The vCPUs' accesses with paging off are private on this platform (the
//! private view is at GPA 0), so the entry code needs no window into the shared view.

use super::EmulatedTdx;
use crate::emulated::tdx::keys::{self, EmulatedTdxKeys};
use crate::emulated::tdx::module::EmulatedTdxModule;
use crate::emulated::tdx::quoting::{EmulatedQuotingService, QuotingEnclave};
use crate::emulated::LazyKeys;
use crate::platform::hostile::{self, Hostile, Lies};
use crate::platform::launch::{
    check_cpus, check_memory, create_vcpus, hostile_cpuid, hostile_gfn, ioctl, parameter_page,
    runs, start_interrupt_storm, test_hook, tsc_khz, vm_with_ram, HostPage, LaunchConfig,
    MsiSender, SetupError,
};
use crate::platform::Vm;
use crate::vmm::memory::View;
use kvm_bindings::{kvm_segment, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use nacre_loader::{ImagePage, LoadedImage, PageContents};
use nacre_shared_abi::doorbell::EMULATED_TDX_SIGNATURE;
use nacre_shared_abi::layout::{
    EMULATED_TDX_GPAW, PAGE_SIZE_4K, TDX_RESET_PAGE_GPA, TDX_RESET_VECTOR,
};

/// The memory slot of the reset page (0 and 1 are guest RAM's views).
const RESET_PAGE_SLOT: u32 = 2;

/// Launch `image` on `emulated-tdx`.
pub fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError> {
    check_cpus(config.cpus)?;
    check_memory(&super::REGISTRATION, config.memory, image.min_memory, None)?;
    let shared_bit = 1u64 << (EMULATED_TDX_GPAW - 1);
    let (kvm, vm, mem) = vm_with_ram(
        config.memory,
        [(View::Private, 0), (View::Shared, shared_bit)],
    )?;
    // TDH.MNG.INIT with the TD attributes the image's policy asks for.
    let module = EmulatedTdxModule::new(EMULATED_TDX_GPAW, image.td_attributes().unwrap_or(0))
        .map_err(|e| SetupError::Image(format!("the emulated TDX module's report key: {e}")))?;
    let mut tdx = EmulatedTdx::new(mem, module);
    tdx.module.vcpus = config.cpus;
    tdx.strict_memory = config.strict_memory;
    tdx.map_gpa_budget = test_hook("NACRE_TEST_MAP_GPA_PAGES");
    let mut reset = None;
    let mut launched = Vec::new();
    for ImagePage { gpa, contents } in &image.pages {
        if *gpa == TDX_RESET_PAGE_GPA {
            let bytes = contents.bytes();
            tdx.module.mrtd.add_page(*gpa, Some(bytes));
            reset = Some(HostPage::map(&vm, RESET_PAGE_SLOT, *gpa, bytes)?);
            continue;
        }
        // Guest RAM is a new memfd, all zeros: a page of zeros is not copied (an image
        // can hold a gigabyte of them in a few megabytes).
        match contents {
            PageContents::Data(bytes) if !contents.is_zeros() => {
                tdx.mem.write(*gpa, &bytes[..])?;
            }
            _ => {}
        }
        tdx.add_page(*gpa, true).map_err(SetupError::Image)?;
        launched.push(*gpa / PAGE_SIZE_4K);
    }
    let Some(reset) = reset else {
        return Err(SetupError::Image(
            "the image has no TDX reset page (it was not loaded for TDX)".into(),
        ));
    };
    // The parameter page: added, not measured (its contents are the host's).
    let hostile = Hostile::from_env();
    let mut param_page = parameter_page(config.memory, config.request, config.cpus);
    hostile::lie_in_parameter_page(hostile, &mut param_page);
    tdx.mem.write(image.param_gpa, &param_page)?;
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
    let mrtd = tdx.module.finalize();
    if hostile != Some(Hostile::SharedParamPage) && image.mrtd != Some(mrtd) {
        return Err(SetupError::Image(format!(
            "the MRTD of the added pages ({}) differs from the image's ({})",
            hex::encode(mrtd),
            image.mrtd.map_or_else(|| "none".into(), hex::encode),
        )));
    }
    if hostile == Some(Hostile::PreAcceptedPage) {
        // A host that adds a page behind the guest's back, so that the guest finds it
        // accepted already: in the first 2 MiB chunk the firmware accepts.
        tdx.mmu.hostile_accept(&tdx.mem, hostile_gfn(image))?;
    }
    tdx.quoting = Some(EmulatedQuotingService {
        qe: QuotingEnclave::new(),
        report_key: tdx.module.report_key.clone(),
        keys: LazyKeys::new(
            "the emulated TDX platform's keys",
            Box::new(|| {
                let dir = keys::default_dir().map_err(|e| e.to_string())?;
                EmulatedTdxKeys::load_or_create(&dir).map_err(|e| e.to_string())
            }),
        ),
    });
    let cpuid = td_cpuid(&kvm)?;
    let vcpus = create_vcpus(&vm, config.cpus, |vcpu, index| {
        setup_vcpu(vcpu, &cpuid, index)
    })?;
    tdx.host.tsc_khz = tsc_khz(&vcpus[0]);
    tdx.host.hostile = hostile.and_then(Hostile::hostcall);
    tdx.lies = Lies::new(hostile);
    if hostile == Some(Hostile::RemappedPage) {
        tdx.remap = Some(hostile_gfn(image));
    }
    if hostile == Some(Hostile::InterruptStorm) {
        start_interrupt_storm(&vm)?;
    }
    tdx.host.expect_evidence = config.expects_evidence();
    tdx.host.net.configure(&config.net);
    tdx.host.net.set_interrupts(MsiSender::new(&vm)?);
    Ok(Vm {
        vcpus,
        vm,
        platform: Box::new(tdx),
        extra: vec![reset],
    })
}

/// vCPU `index` of the TD: `cpuid`, its local APIC in x2APIC mode and the TD vCPU's
/// initial state.
fn setup_vcpu(vcpu: &VcpuFd, cpuid: &kvm_bindings::CpuId, index: u32) -> Result<(), SetupError> {
    vcpu.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    set_x2apic_mode(vcpu, index)?;
    set_entry_state(vcpu, index)
}

/// IA32_APIC_BASE of a TD vCPU: the default base, enabled (bit 11), in x2APIC mode
/// (bit 10), with the BSP flag (bit 8) on vCPU 0 (Intel SDM vol. 3A, 11.4.4). A TD's
/// local APIC starts so, and the guest cannot change it (KVM's `KVM_TDX_INIT_VCPU`
/// sets it, `arch/x86/kvm/vmx/tdx.c`, `tdx_vcpu_init`; `tdx_is_read_only_msr`).
fn set_x2apic_mode(vcpu: &VcpuFd, index: u32) -> Result<(), SetupError> {
    const IA32_APIC_BASE: u32 = 0x1B;
    const DEFAULT_BASE: u64 = 0xFEE0_0000;
    const ENABLE: u64 = 1 << 11;
    const X2APIC: u64 = 1 << 10;
    const BSP: u64 = 1 << 8;
    let base = DEFAULT_BASE | ENABLE | X2APIC | if index == 0 { BSP } else { 0 };
    let msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index: IA32_APIC_BASE,
        data: base,
        ..Default::default()
    }])
    .map_err(|_| SetupError::Image("one MSR entry".into()))?;
    match vcpu
        .set_msrs(&msrs)
        .map_err(ioctl("KVM_SET_MSRS(IA32_APIC_BASE)"))?
    {
        1 => Ok(()),
        _ => Err(SetupError::Image(
            "KVM refused to put the local APIC in x2APIC mode (does the host CPU have x2APIC?)"
                .into(),
        )),
    }
}

/// CPUID of a TD's vCPUs: the emulated-TDX hypervisor signature, and leaf 0x21
/// spelling "IntelTDX    " in EBX, EDX, ECX as the TDX module reports it (Linux
/// `arch/x86/coco/tdx/tdx.c`, `TDX_IDENT`); no SEV leaf. The same for every vCPU: the
/// APIC ids some leaves carry (KVM's supported values) are no vCPU's own; a vCPU reads
/// its own from its x2APIC.
fn td_cpuid(kvm: &Kvm) -> Result<kvm_bindings::CpuId, SetupError> {
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
    hostile_cpuid(&mut entries);
    kvm_bindings::CpuId::from_entries(&entries)
        .map_err(|_| SetupError::Image("too many CPUID entries".into()))
}

/// The architectural initial state of TD vCPU `index` (Intel TDX module base spec,
/// "Initial State of Guest TD vCPU"): 32-bit protected mode, paging off, flat 4 GiB
/// segments, CR0 = PE | NE, CR4.MCE, EFER.LME, RIP = the reset vector, EBX = GPAW,
/// ESI = the vCPU index.
fn set_entry_state(vcpu: &VcpuFd, index: u32) -> Result<(), SetupError> {
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
    regs.rsi = u64::from(index);
    vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))
}
