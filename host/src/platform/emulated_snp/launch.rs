//! Launching an `emulated-snp` VM: guest RAM with the shared view at GPA 0 and the
//! private view at the C-bit, every launch page added and measured by the emulated
//! security processor (SNP_LAUNCH_UPDATE), the host parameter page, CPUID saying
//! "SEV-SNP", MSR exits for SEV_STATUS and the GHCB MSR, and the boot processor's
//! state from the image's VMSA (SNP_LAUNCH_FINISH checks the measurement).

use super::EmulatedSnp;
use crate::emulated::snp::keys::{self, EmulatedSnpKeys};
use crate::emulated::snp::sp::{EmulatedSecurityProcessor, EmulatedSp, ReportSigner};
use crate::emulated::LazyKeys;
use crate::mmu::attributes::Kind;
use crate::platform::launch::{
    ioctl, parameter_page, runs, test_hook, tsc_khz, vm_with_ram, Hostile, LaunchConfig, SetupError,
};
use crate::platform::Vm;
use crate::vmm::memory::View;
use igvm::snp_defs::{SevSelector, SevVmsa};
use kvm_bindings::{kvm_enable_cap, kvm_segment, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{
    Cap, Kvm, MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd,
    VmFd,
};
use nacre_loader::image::SNP_PARAMETER_PAGE_TYPE;
use nacre_loader::{ImagePage, LoadedImage, PageContents};
use nacre_shared_abi::doorbell::EMULATED_SNP_SIGNATURE;
use nacre_shared_abi::layout::{BOOT_INFO_GPA, EMULATED_SNP_C_BIT, PAGE_SIZE_4K};
use zerocopy::IntoBytes;

/// Launch `image` on `emulated-snp`.
pub fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError> {
    let hostile = Hostile::from_env();
    let c_bit_mask = 1u64 << EMULATED_SNP_C_BIT;
    let (kvm, vm, mem) = vm_with_ram(
        config.memory,
        [(View::Shared, 0), (View::Private, c_bit_mask)],
    )?;
    let mut snp = EmulatedSnp::new(mem);
    snp.strict_memory = config.strict_memory;
    snp.psc_budget = test_hook("NACRE_TEST_PSC_BUDGET").and_then(|b| usize::try_from(b).ok());
    let mut sp = EmulatedSp::new().map_err(|e| {
        SetupError::Image(format!(
            "the emulated security processor has no random message keys: {e}"
        ))
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
    let param_page = parameter_page(config.memory, config.request);
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
        // An RMPUPDATE behind the guest's back: the page stays private but is no
        // longer validated.
        snp.mmu
            .hostile_reassign(&snp.mem, BOOT_INFO_GPA / PAGE_SIZE_4K)?;
    }

    enable_msr_exits(&vm)?;
    let vcpu = vm.create_vcpu(0).map_err(ioctl("a vCPU"))?;
    set_cpuid(&kvm, &vcpu, snp.c_bit)?;
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
            hex::encode(measured),
            image
                .launch_digest
                .map_or_else(|| "none".into(), hex::encode),
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
    set_initial_state(&vcpu, vmsa)?;
    snp.host.tsc_khz = tsc_khz(&vcpu);
    snp.host.hostile = hostile.and_then(Hostile::hostcall);
    snp.host.expect_evidence = config.expects_evidence();
    Ok(Vm {
        vcpu,
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

/// CPUID of the emulated SNP guest: the emulated-SNP hypervisor signature, and leaf
/// 0x8000_001F saying SEV, SEV-ES and SEV-SNP with the C-bit at `c_bit` (AMD APM
/// vol. 3, E.4.17).
fn set_cpuid(kvm: &Kvm, vcpu: &VcpuFd, c_bit: u8) -> Result<(), SetupError> {
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

/// The boot processor's state from the VMSA the image measured.
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
