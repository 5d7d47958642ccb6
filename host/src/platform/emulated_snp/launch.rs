//! Launching an `emulated-snp` VM: guest RAM with the shared view at GPA 0 and the
//! private view at the C-bit (47, or the host's choice: [`C_BIT_VAR`]), every launch
//! page added and measured by the emulated security processor (SNP_LAUNCH_UPDATE), the
//! CPUID page filled from the vCPUs' CPUID, the host parameter page (with the number of
//! vCPUs), CPUID saying "SEV-SNP", MSR exits for SEV_STATUS and the GHCB MSR, and
//! every vCPU (`--cpus`) in the state of the image's VMSA. SNP_LAUNCH_FINISH measures
//! that VMSA once per vCPU, the boot processor's first, as KVM does on hardware, so the
//! launch digest (and every report's MEASUREMENT) is the image's digest for that
//! number of vCPUs ([`LoadedImage::measurement_for_cpus`]).
//!
//! Every vCPU is set up alike ([`setup_vcpu`]: the same CPUID, which the one CPUID page
//! reports to all, and the same registers) and starts at the firmware's entry, which
//! sorts out which one boots; only its x2APIC id (its index, KVM's default) tells a
//! vCPU apart.
//!
//! Each vCPU starts with paging off, and on SEV-SNP every access is then private (AMD
//! APM vol. 2, 15.34.5). A plain VM has no such mode: its accesses without the C-bit
//! go to the shared view. So the launch opens the shared view of the few pages the
//! firmware's entry code touches before it sets the C-bit (the CPUID page, the
//! initial page tables and the page it runs from), and the exit that is the last
//! vCPU's first closes them again ([`EmulatedSnp::close_boot_window`]). With one vCPU
//! that is before the guest can have asked for any page-state change; with more, the
//! boot processor may be further on while an application processor is still in the
//! entry code. The pages in the window are the firmware's own measured pages, which it
//! never converts, and the host MMU never maps them shared (a shared mapping covers
//! only shared pages), so nothing closes their shared view early. Those pages show the
//! same bytes through both views (one memfd), so the entry code sees exactly what a
//! private access would. A vCPU that never exits keeps the window open; the guest's
//! own view of it is still the bytes it measured.

use super::EmulatedSnp;
use crate::emulated::snp::keys::{self, EmulatedSnpKeys};
use crate::emulated::snp::sp::{EmulatedSecurityProcessor, EmulatedSp, ReportSigner};
use crate::emulated::LazyKeys;
use crate::mmu::attributes::Kind;
use crate::platform::hostile::{self, Hostile, Lies};
use crate::platform::launch::{
    check_cpus, create_vcpus, hostile_cpuid, hostile_gfn, ioctl, parameter_page, runs,
    start_interrupt_storm, test_hook, tsc_khz, vm_with_ram, LaunchConfig, MsiSender, SetupError,
};
use crate::platform::snp_state::{cpuid_page, BspState};
use crate::platform::Vm;
use crate::vmm::memory::View;
use kvm_bindings::{kvm_enable_cap, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{
    Cap, Kvm, MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd,
    VmFd,
};
use nacre_loader::image::SNP_PARAMETER_PAGE_TYPE;
use nacre_loader::{ImagePage, LoadedImage, PageContents};
use nacre_shared_abi::doorbell::EMULATED_SNP_SIGNATURE;
use nacre_shared_abi::layout::{
    align_down, BOOT_INFO_GPA, EMULATED_SNP_C_BIT, INITIAL_PT_GPA, INITIAL_PT_PAGES, PAGE_SIZE_4K,
    SNP_CPUID_PAGE_GPA,
};
use zerocopy::IntoBytes;

/// The environment variable that sets the emulated platform's C-bit position (32 to 47,
/// above all of guest RAM; default [`EMULATED_SNP_C_BIT`]). AMD's EPYC processors
/// report 51, which a KVM guest with 48-bit guest-physical addresses cannot emulate;
/// any position works for an image, which reads it from the CPUID page.
pub const C_BIT_VAR: &str = "NACRE_EMULATED_SNP_C_BIT";

/// The C-bit position for a VM with `memory` bytes of RAM: [`C_BIT_VAR`] if set, else
/// [`EMULATED_SNP_C_BIT`].
pub fn c_bit_setting(memory: u64) -> Result<u8, SetupError> {
    let Some(value) = std::env::var_os(C_BIT_VAR) else {
        return Ok(EMULATED_SNP_C_BIT as u8);
    };
    let bit = value
        .to_str()
        .and_then(|v| v.trim().parse::<u8>().ok())
        .filter(|bit| (32..=47).contains(bit))
        .ok_or_else(|| {
            SetupError::Image(format!(
                "{C_BIT_VAR}={} is not a C-bit position the emulated platform can take \
                 (32 to 47: the private view of RAM sits at that bit, inside the VM's \
                 48-bit guest-physical addresses)",
                value.to_string_lossy()
            ))
        })?;
    if memory > 1 << bit {
        return Err(SetupError::Image(format!(
            "{C_BIT_VAR}={bit} puts the C-bit inside guest RAM ({} MiB): choose a position \
             of at least {}",
            memory >> 20,
            64 - (memory - 1).leading_zeros()
        )));
    }
    Ok(bit)
}

/// Launch `image` on `emulated-snp`.
pub fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError> {
    check_cpus(config.cpus)?;
    let hostile = Hostile::from_env();
    let c_bit = c_bit_setting(config.memory)?;
    let (kvm, vm, mem) = vm_with_ram(
        config.memory,
        [(View::Shared, 0), (View::Private, 1u64 << c_bit)],
    )?;
    let mut snp = EmulatedSnp::new(mem);
    snp.set_cpus(config.cpus);
    snp.c_bit = c_bit;
    snp.strict_memory = config.strict_memory;
    snp.psc_budget = test_hook("NACRE_TEST_PSC_BUDGET").and_then(|b| usize::try_from(b).ok());
    let mut sp = EmulatedSp::new().map_err(|e| {
        SetupError::Image(format!(
            "the emulated security processor has no random message keys: {e}"
        ))
    })?;
    // SNP_LAUNCH_START with the image's guest policy.
    sp.set_policy(image.guest_policy);
    // The vCPUs' CPUID, which the CPUID page reports.
    enable_msr_exits(&vm)?;
    let cpuid = snp_cpuid(&kvm, snp.c_bit)?;

    // Launch pages: contents, then assigned + validated (LAUNCH_UPDATE's result), each
    // measured by the emulated security processor as it is added.
    for ImagePage { gpa, contents } in &image.pages {
        let page_type = contents.snp_page_type();
        match contents {
            // Guest RAM is a new memfd, all zeros: a page of zeros is not copied (an
            // image can hold a gigabyte of them in a few megabytes).
            PageContents::Data(_) | PageContents::Zero if contents.is_zeros() => {}
            PageContents::Data(bytes) => snp.mem.write(*gpa, &bytes[..])?,
            PageContents::Secrets => snp.mem.write(*gpa, &sp.secrets_page())?,
            PageContents::Cpuid => {
                let page = cpuid_page(cpuid.as_slice()).map_err(SetupError::Image)?;
                sp.check_cpuid_page(&page, snp.c_bit)
                    .map_err(|e| SetupError::Image(format!("the CPUID page was refused: {e}")))?;
                snp.mem.write(*gpa, page.as_bytes())?;
            }
            PageContents::Zero => {}
        }
        sp.launch_update(*gpa, page_type, contents.bytes());
        snp.launch_page(*gpa)
            .map_err(|e| SetupError::Image(format!("page {gpa:#x} cannot be placed: {e}")))?;
    }
    // The host parameter page: the memory map, inserted unmeasured.
    let mut param_page = parameter_page(config.memory, config.request, config.cpus);
    hostile::lie_in_parameter_page(hostile, &mut param_page);
    snp.mem.write(image.param_gpa, &param_page)?;
    let mut launched: Vec<u64> = image.pages.iter().map(|p| p.gpa / PAGE_SIZE_4K).collect();
    if hostile == Some(Hostile::SharedParamPage) {
        snp.mmu.hostile_share(image.param_gpa / PAGE_SIZE_4K);
    } else {
        snp.launch_page(image.param_gpa)
            .map_err(|e| SetupError::Image(format!("parameter page cannot be placed: {e}")))?;
        launched.push(image.param_gpa / PAGE_SIZE_4K);
    }
    // Fault the launched pages in before the first instruction (KVM_PRE_FAULT_MEMORY):
    // the firmware's code must be mapped to be fetched. Everything else is mapped by
    // the guest's own faults.
    for (first, n) in runs(launched) {
        snp.mmu.prefault(&snp.mem, first, n, Kind::Private)?;
    }
    if hostile == Some(Hostile::UnvalidatedBootInfo) {
        // An RMPUPDATE behind the guest's back: the page stays private but is no
        // longer validated.
        snp.mmu
            .hostile_reassign(&snp.mem, BOOT_INFO_GPA / PAGE_SIZE_4K)?;
    }

    let vmsa = image.vmsa.as_deref().ok_or_else(|| {
        SetupError::Image("the image has no SEV-SNP VMSA (it was not loaded for SEV-SNP)".into())
    })?;
    // SNP_LAUNCH_FINISH: every vCPU's VMSA, the same for all (each starts in the
    // image's state), then the measurement must be the one the image predicts for
    // that many vCPUs (the hostile parameter-page hook leaves the parameter page out
    // on purpose).
    if hostile != Some(Hostile::SharedParamPage) {
        sp.launch_update(image.param_gpa, SNP_PARAMETER_PAGE_TYPE, &param_page);
    }
    let vmsa_page: &[u8; 4096] = vmsa
        .as_bytes()
        .try_into()
        .map_err(|_| SetupError::Image("the VMSA is not one page".into()))?;
    let measured = sp.launch_finish(std::iter::repeat_n(vmsa_page, config.cpus as usize));
    let predicted = image.measurement_for_cpus(config.cpus);
    if hostile != Some(Hostile::SharedParamPage) && predicted != measured {
        return Err(SetupError::Image(format!(
            "the launch digest of the added pages and one VMSA per vCPU ({}) differs from \
             the image's for {} vCPUs ({})",
            hex::encode(measured),
            config.cpus,
            hex::encode(predicted),
        )));
    }
    snp.sp = Some(EmulatedSecurityProcessor {
        sp,
        signer: LazyKeys::new(
            "the emulated security processor's keys",
            Box::new(|| {
                let dir = keys::default_dir().map_err(|e| e.to_string())?;
                let keys = EmulatedSnpKeys::load_or_create(&dir).map_err(|e| e.to_string())?;
                Ok(Box::new(keys) as Box<dyn ReportSigner + Send>)
            }),
        ),
    });
    let state = BspState::from_vmsa(vmsa).map_err(SetupError::Image)?;
    let vcpu_cpuid = if hostile == Some(Hostile::CpuidMismatch) {
        cpuid_contradicting_the_page(&cpuid, snp.c_bit)?
    } else {
        cpuid
    };
    let vcpus = create_vcpus(&vm, config.cpus, |vcpu, _| {
        setup_vcpu(vcpu, &vcpu_cpuid, &state)
    })?;
    snp.open_boot_window(boot_window(vmsa.rip))?;
    snp.host.tsc_khz = tsc_khz(&vcpus[0]);
    snp.host.hostile = hostile.and_then(Hostile::hostcall);
    snp.lies = Lies::new(hostile);
    if hostile == Some(Hostile::RemappedPage) {
        snp.remap = Some(hostile_gfn(image));
    }
    snp.host.expect_evidence = config.expects_evidence();
    snp.host.net.configure(&config.net);
    snp.host.net.set_interrupts(MsiSender::new(&vm)?);
    if hostile == Some(Hostile::InterruptStorm) {
        start_interrupt_storm(&vm)?;
    }
    Ok(Vm {
        vcpus,
        vm,
        platform: Box::new(snp),
        extra: Vec::new(),
    })
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

/// One vCPU of the emulated SNP guest, whichever it is: `cpuid` and the registers of
/// the image's VMSA (`state`).
fn setup_vcpu(
    vcpu: &VcpuFd,
    cpuid: &kvm_bindings::CpuId,
    state: &BspState,
) -> Result<(), SetupError> {
    vcpu.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    set_initial_state(vcpu, state)
}

/// CPUID of the emulated SNP guest's vCPUs: the emulated-SNP hypervisor signature, and
/// leaf 0x8000_001F saying SEV, SEV-ES and SEV-SNP with the C-bit at `c_bit` (AMD APM
/// vol. 3, E.4.17). The same for every vCPU, as the one CPUID page is: the APIC ids
/// some leaves carry (KVM's supported values) are no vCPU's own; a vCPU reads its own
/// from its x2APIC.
fn snp_cpuid(kvm: &Kvm, c_bit: u8) -> Result<kvm_bindings::CpuId, SetupError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    let sig = EMULATED_SNP_SIGNATURE;
    let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    // EAX: SEV (bit 1), SEV-ES (bit 3), SEV-SNP (bit 4); EBX[5:0]: the C-bit.
    let sev_eax = (1 << 1) | (1 << 3) | (1 << 4);
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
                e.eax = sev_eax;
                e.ebx = u32::from(c_bit);
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
            eax: sev_eax,
            ebx: u32::from(c_bit),
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
    hostile_cpuid(cpuid.as_mut_slice());
    Ok(cpuid)
}

/// The vCPUs' CPUID for the `cpuid-mismatch` hostile-host test: `cpuid` (which the
/// measured CPUID page holds) with another C-bit position in leaf 0x8000_001F.
fn cpuid_contradicting_the_page(
    cpuid: &kvm_bindings::CpuId,
    c_bit: u8,
) -> Result<kvm_bindings::CpuId, SetupError> {
    let mut entries = cpuid.as_slice().to_vec();
    for e in entries.iter_mut().filter(|e| e.function == 0x8000_001F) {
        e.ebx = (e.ebx & !0x3F) | u32::from(c_bit - 1);
    }
    kvm_bindings::CpuId::from_entries(&entries)
        .map_err(|_| SetupError::Image("too many CPUID entries".into()))
}

/// The pages the firmware's entry code reads or writes with paging off (module
/// documentation): the CPUID page, the initial page tables and the page holding the
/// entry point `rip` and the next one, as (GPA, length) ranges.
fn boot_window(rip: u64) -> [(u64, u64); 3] {
    [
        (SNP_CPUID_PAGE_GPA, PAGE_SIZE_4K),
        (INITIAL_PT_GPA, INITIAL_PT_PAGES * PAGE_SIZE_4K),
        (align_down(rip, PAGE_SIZE_4K), 2 * PAGE_SIZE_4K),
    ]
}

/// A vCPU's state from the VMSA the image holds (the boot processor's, measured once
/// per vCPU): the
/// registers KVM would build that VMSA from on hardware ([`BspState`]),
/// general-purpose ones included. EFER.SVME and the SEV features mean nothing to a
/// plain VM and are left out.
fn set_initial_state(vcpu: &VcpuFd, state: &BspState) -> Result<(), SetupError> {
    let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    state.apply_sregs(&mut sregs);
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    vcpu.set_regs(&state.regs).map_err(ioctl("KVM_SET_REGS"))
}
