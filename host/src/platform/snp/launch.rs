//! The SEV-SNP launch on upstream KVM (docs/kvm-uapi.md 3): the split irqchip, INIT2,
//! RAM in a guest_memfd marked private, LAUNCH_START with the image's policy,
//! LAUNCH_UPDATE of every page in the image's launch order, every vCPU from the image's
//! VMSA (the boot processor first, the others made runnable), LAUNCH_FINISH. [`run`] is
//! the sequence over [`SnpLaunchOps`]; [`KvmSnp`] issues the ioctls.
//!
//! At LAUNCH_FINISH KVM measures the VMSA of every vCPU the VM has, in vCPU index
//! order (docs/specs.md 5.5), so the launch digest of a guest with N vCPUs is the
//! image's digest for N vCPUs ([`LoadedImage::measurement_for_cpus`]), which is what
//! `nacre measure --cpus N` prints and `nacre attest` checks the report against.
//!
//! The local APICs are KVM's (the split irqchip; QEMU too refuses to start an SEV-ES or
//! SEV-SNP guest without an in-kernel irqchip, `target/i386/sev.c`). The guest reaches
//! its x2APIC through the GHCB's MSR event, which KVM handles as an ordinary MSR access
//! (`arch/x86/kvm/svm/sev.c`, `sev_handle_vmgexit`), and KVM emulates the x2APIC
//! registers only when the local APIC is in the kernel (`arch/x86/kvm/lapic.c`,
//! `kvm_x2apic_msr_write`).
//!
//! With its local APIC in the kernel, KVM makes every vCPU but the boot processor wait
//! for INIT and SIPI (`arch/x86/kvm/x86.c`, `kvm_arch_vcpu_create`). Those application
//! processors are made runnable before LAUNCH_FINISH (`KVM_SET_MP_STATE`, which takes
//! RUNNABLE whatever the guest type: `kvm_arch_vcpu_ioctl_set_mpstate`; LAUNCH_FINISH
//! leaves the MP state alone: `snp_launch_update_vmsa`), so that each runs from the
//! VMSA measured for it, as the boot processor does, and the firmware sorts out which
//! one boots. (A guest could start them with INIT and SIPI instead: KVM ignores the
//! first SIPI of an SEV-ES vCPU, which then starts from its launch VMSA,
//! `arch/x86/kvm/svm/sev.c`, `sev_vcpu_deliver_sipi_vector`.)

use crate::platform::hardware::launch::{
    check_vcpus, page_runs, until_done, KvmVm, LaunchError, Progress, VmOps,
};
use crate::platform::launch::MP_STATE_RUNNABLE;
use crate::platform::snp_state::{cpuid_page, BspState};
use crate::vmm::memory::{GuestMemory, View};
use crate::vmm::uapi::{
    self, cap, map_gpa_range, sev_attr, sev_cmd, CpuidEntry, KvmSevCmd, KvmSevInit,
    KvmSevSnpLaunchFinish, KvmSevSnpLaunchStart, KvmSevSnpLaunchUpdate, KVM_SEV_SNP_PAGE_TYPE_VMSA,
    KVM_X86_SNP_VM,
};
use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;
use nacre_loader::image::SNP_PARAMETER_PAGE_TYPE;
use nacre_loader::{ImagePage, LoadedImage, PageContents};
use nacre_shared_abi::boot::MAX_CPUS;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use std::fs::File;
use std::os::fd::AsRawFd;
use zerocopy::IntoBytes;

/// The GHCB protocol version KVM is to speak (2: SEV-SNP needs it).
pub const GHCB_VERSION: u16 = 2;

/// The ioctls of an SEV-SNP launch.
pub trait SnpLaunchOps: VmOps {
    /// `KVM_X86_SEV_VMSA_FEATURES`: the VMSA features KVM supports.
    fn supported_vmsa_features(&mut self) -> Result<u64, LaunchError>;
    /// `KVM_SEV_INIT2`.
    fn init2(&mut self, init: &mut KvmSevInit) -> Result<(), LaunchError>;
    /// `KVM_SEV_SNP_LAUNCH_START`.
    fn launch_start(&mut self, start: &mut KvmSevSnpLaunchStart) -> Result<(), LaunchError>;
    /// One `KVM_SEV_SNP_LAUNCH_UPDATE`; the kernel may do part of it and write the
    /// remainder back.
    fn launch_update(&mut self, update: &mut KvmSevSnpLaunchUpdate) -> Result<(), LaunchError>;
    /// vCPU `index` (its KVM id and x2APIC id; they are made in order from 0, the boot
    /// processor) with `cpuid` (`KVM_SET_CPUID2`) and then `state` (`KVM_SET_SREGS`,
    /// `KVM_SET_REGS`).
    fn create_vcpu(
        &mut self,
        index: u32,
        cpuid: &[CpuidEntry],
        state: &BspState,
    ) -> Result<(), LaunchError>;
    /// `KVM_SET_MP_STATE(KVM_MP_STATE_RUNNABLE)` of vCPU `index`: an application
    /// processor, which KVM's local APIC leaves waiting for INIT and SIPI, runs from its
    /// VMSA at its first `KVM_RUN`.
    fn make_runnable(&mut self, index: u32) -> Result<(), LaunchError>;
    /// `KVM_SEV_SNP_LAUNCH_FINISH`.
    fn launch_finish(&mut self, finish: &mut KvmSevSnpLaunchFinish) -> Result<(), LaunchError>;
}

impl Progress for KvmSevSnpLaunchUpdate {
    fn progress(&self) -> (u64, u64, u64) {
        (
            self.gfn_start * PAGE_SIZE_4K,
            self.uaddr,
            self.len / PAGE_SIZE_4K,
        )
    }
}

/// What the host says of itself that the launch needs.
#[derive(Debug, Clone, Copy)]
pub struct SnpHost {
    /// The C-bit position (CPUID 0x8000_001F EBX bits 5:0).
    pub c_bit: u8,
    /// CPUID 0x8000_001F as the CPU reports it, for the guest's CPUID and its CPUID
    /// page (the firmware reads the C-bit from there).
    pub sev_leaf: [u32; 4],
}

/// The SEV-SNP launch of `image` with `cpus` vCPUs, the parameter page `param`, its RAM
/// `mem` (the shared side, where pages are staged for LAUNCH_UPDATE), on `host`.
pub fn run(
    ops: &mut impl SnpLaunchOps,
    mem: &GuestMemory,
    image: &LoadedImage,
    param: &[u8; 4096],
    host: SnpHost,
    cpus: u32,
) -> Result<(), LaunchError> {
    if !(1..=MAX_CPUS).contains(&cpus) {
        return Err(LaunchError::Image(format!(
            "{cpus} vCPUs asked for: a guest has 1 to {MAX_CPUS}"
        )));
    }
    let vmsa = image.vmsa.as_deref().ok_or_else(|| {
        LaunchError::Image("the image has no SEV-SNP VMSA (it was not loaded for SEV-SNP)".into())
    })?;
    // The registers that make KVM build and measure exactly the image's VMSA (KVM adds
    // SNP_ACTIVE to the features itself and refuses it in INIT2).
    let state = BspState::from_vmsa(vmsa).map_err(LaunchError::Image)?;
    let features = state.vmsa_features;
    let supported = ops.supported_vmsa_features()?;
    if features & !supported != 0 {
        return Err(LaunchError::Image(format!(
            "the image's VMSA asks for SEV features {features:#x}; KVM supports {supported:#x}"
        )));
    }
    check_vcpus(ops, cpus)?;
    // The local APICs in KVM, which it takes only before the first vCPU.
    ops.split_irqchip()?;
    ops.init2(&mut KvmSevInit {
        vmsa_features: features,
        ghcb_version: GHCB_VERSION,
        ..Default::default()
    })?;
    // KVM maps the shared side for the guest's shared pages and reads it as the
    // source of LAUNCH_UPDATE.
    mem.protect(View::Shared, 0, mem.size(), true)?;
    ops.add_private_slot(0, 0, mem.size(), mem.base(View::Shared) as u64)?;
    ops.set_private(0, mem.size())?;
    ops.launch_start(&mut KvmSevSnpLaunchStart {
        policy: image.guest_policy,
        ..Default::default()
    })?;

    // The guest's CPUID, which its CPUID page reports and the security processor checks
    // against the CPU at LAUNCH_UPDATE.
    let cpuid = guest_cpuid(ops.supported_cpuid()?, host.sev_leaf);
    let kvm_entries: Vec<kvm_bindings::kvm_cpuid_entry2> =
        cpuid.iter().map(|e| (*e).into()).collect();
    let cpuid_page = cpuid_page(&kvm_entries).map_err(LaunchError::Image)?;

    // Stage every page in the shared side of RAM at its own GPA (LAUNCH_UPDATE copies
    // it into the guest_memfd), in launch order, then the parameter page.
    let mut pages = Vec::with_capacity(image.pages.len() + 1);
    for ImagePage { gpa, contents } in &image.pages {
        match contents {
            PageContents::Cpuid => mem.write(*gpa, cpuid_page.as_bytes())?,
            _ => mem.write(*gpa, contents.bytes())?,
        }
        pages.push((*gpa, page_type(contents)?));
    }
    mem.write(image.param_gpa, param)?;
    pages.push((image.param_gpa, SNP_PARAMETER_PAGE_TYPE as u8));
    let runs = page_runs(pages);
    for run in &runs {
        let mut update = KvmSevSnpLaunchUpdate {
            gfn_start: run.gpa / PAGE_SIZE_4K,
            uaddr: mem.base(View::Shared) as u64 + run.gpa,
            len: run.pages * PAGE_SIZE_4K,
            type_: run.kind,
            ..Default::default()
        };
        until_done("SNP_LAUNCH_UPDATE", &mut update, |u| ops.launch_update(u))?;
    }
    // The staged copies are the host's side of private pages now: drop them.
    for run in &runs {
        mem.discard(run.gpa, run.pages * PAGE_SIZE_4K)?;
    }

    // Every vCPU in the image's state: KVM builds and measures one VMSA from each at
    // LAUNCH_FINISH, the same page N times. The application processors run from it
    // too, rather than waiting for INIT and SIPI.
    for index in 0..cpus {
        ops.create_vcpu(index, &cpuid, &state)?;
        if index > 0 {
            ops.make_runnable(index)?;
        }
    }
    ops.launch_finish(&mut KvmSevSnpLaunchFinish::default())
}

/// The LAUNCH_UPDATE page type of a page: the loader's choice, as KVM numbers it (the
/// same values), except VMSA, which KVM takes only from LAUNCH_FINISH.
fn page_type(contents: &PageContents) -> Result<u8, LaunchError> {
    let t = contents.snp_page_type() as u8;
    if t == KVM_SEV_SNP_PAGE_TYPE_VMSA {
        return Err(LaunchError::Image(
            "the image adds a VMSA page, which KVM takes only at LAUNCH_FINISH".into(),
        ));
    }
    Ok(t)
}

/// The guest's CPUID: what KVM supports, with leaf 0x8000_001F as the CPU reports it
/// (the C-bit the guest reads through the GHCB, and what KVM needs before it takes a
/// CR3 with the C-bit: `sev_vcpu_after_set_cpuid`).
pub fn guest_cpuid(mut entries: Vec<CpuidEntry>, sev_leaf: [u32; 4]) -> Vec<CpuidEntry> {
    let [eax, ebx, ecx, edx] = sev_leaf;
    entries.retain(|e| e.function != 0x8000_001F);
    for e in &mut entries {
        if e.function == 0x8000_0000 {
            e.eax = e.eax.max(0x8000_001F);
        }
    }
    entries.push(CpuidEntry {
        function: 0x8000_001F,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    });
    entries
}

/// The real [`SnpLaunchOps`]: an SNP VM and `/dev/sev`.
#[derive(Debug)]
pub struct KvmSnp {
    /// The VM and its memory slots.
    pub vm: KvmVm,
    /// `/dev/sev`, passed with every SEV command.
    sev: File,
    /// The vCPUs made, in index order.
    pub vcpus: Vec<VcpuFd>,
}

impl KvmSnp {
    /// An SNP VM (`KVM_X86_SNP_VM`) whose page-state changes reach user space.
    pub fn new() -> Result<Self, LaunchError> {
        let sev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/sev")
            .map_err(LaunchError::kvm("opening /dev/sev"))?;
        let vm = KvmVm::create(KVM_X86_SNP_VM)?;
        vm.enable_cap(
            cap::EXIT_HYPERCALL,
            map_gpa_range::EXIT_HYPERCALL_BIT,
            "KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)",
        )?;
        Ok(Self {
            vm,
            sev,
            vcpus: Vec::new(),
        })
    }

    fn command<T>(&self, what: &'static str, id: u32, data: &mut T) -> Result<(), LaunchError> {
        // Every caller passes the structure command `id` takes (docs/kvm-uapi.md 2),
        // exclusively borrowed for the call.
        let mut cmd = KvmSevCmd {
            id,
            data: std::ptr::from_mut(data) as u64,
            sev_fd: self.sev.as_raw_fd() as u32,
            ..Default::default()
        };
        self.vm
            .vm
            .encrypt_op_sev(&mut cmd)
            .map_err(|e| LaunchError::Kvm {
                what,
                source: e.into(),
                status: Some(u64::from(cmd.error)),
            })
    }
}

impl VmOps for KvmSnp {
    fn split_irqchip(&mut self) -> Result<(), LaunchError> {
        self.vm.split_irqchip()
    }
    fn max_vcpus(&mut self) -> Result<u32, LaunchError> {
        self.vm.max_vcpus()
    }
    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>, LaunchError> {
        self.vm.supported_cpuid()
    }
    fn add_private_slot(
        &mut self,
        slot: u32,
        gpa: u64,
        size: u64,
        shared: u64,
    ) -> Result<(), LaunchError> {
        self.vm.add_private_slot(slot, gpa, size, shared)
    }
    fn set_private(&mut self, gpa: u64, size: u64) -> Result<(), LaunchError> {
        self.vm.set_private(gpa, size)
    }
}

impl SnpLaunchOps for KvmSnp {
    fn supported_vmsa_features(&mut self) -> Result<u64, LaunchError> {
        uapi::get_device_attr_u64(
            self.vm.kvm.as_raw_fd(),
            sev_attr::GROUP,
            sev_attr::VMSA_FEATURES,
        )
        .map_err(LaunchError::kvm(
            "KVM_GET_DEVICE_ATTR(KVM_X86_SEV_VMSA_FEATURES)",
        ))
    }

    fn init2(&mut self, init: &mut KvmSevInit) -> Result<(), LaunchError> {
        self.command("KVM_SEV_INIT2", sev_cmd::INIT2, init)
    }

    fn launch_start(&mut self, start: &mut KvmSevSnpLaunchStart) -> Result<(), LaunchError> {
        self.command("KVM_SEV_SNP_LAUNCH_START", sev_cmd::SNP_LAUNCH_START, start)
    }

    fn launch_update(&mut self, update: &mut KvmSevSnpLaunchUpdate) -> Result<(), LaunchError> {
        self.command(
            "KVM_SEV_SNP_LAUNCH_UPDATE",
            sev_cmd::SNP_LAUNCH_UPDATE,
            update,
        )
    }

    fn create_vcpu(
        &mut self,
        index: u32,
        cpuid: &[CpuidEntry],
        state: &BspState,
    ) -> Result<(), LaunchError> {
        let kvm_err = |what| move |e: kvm_ioctls::Error| LaunchError::kvm(what)(e.into());
        let vcpu = self
            .vm
            .vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let entries: Vec<_> = cpuid.iter().map(|e| (*e).into()).collect();
        let cpuid = CpuId::from_entries(&entries)
            .map_err(|_| LaunchError::Image("too many CPUID entries".into()))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        state.apply_sregs(&mut sregs);
        vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&state.regs)
            .map_err(kvm_err("KVM_SET_REGS"))?;
        self.vcpus.push(vcpu);
        Ok(())
    }

    fn make_runnable(&mut self, index: u32) -> Result<(), LaunchError> {
        let vcpu = self
            .vcpus
            .get(index as usize)
            .ok_or_else(|| LaunchError::Image(format!("vCPU {index} was never made")))?;
        vcpu.set_mp_state(kvm_bindings::kvm_mp_state {
            mp_state: MP_STATE_RUNNABLE,
        })
        .map_err(|e| LaunchError::kvm("KVM_SET_MP_STATE")(e.into()))
    }

    fn launch_finish(&mut self, finish: &mut KvmSevSnpLaunchFinish) -> Result<(), LaunchError> {
        self.command(
            "KVM_SEV_SNP_LAUNCH_FINISH",
            sev_cmd::SNP_LAUNCH_FINISH,
            finish,
        )
    }
}
