//! The TDX launch on upstream KVM (docs/kvm-uapi.md 4): the split irqchip, the TDX
//! module's capabilities, INIT_VM with the image's TD attributes, every vCPU and its
//! INIT_VCPU, RAM and the reset page in guest_memfd slots marked private,
//! INIT_MEM_REGION of every page in the image's launch order (measured), then the
//! parameter page (not measured), then FINALIZE. [`run`] is the sequence over
//! [`TdxLaunchOps`]; the ioctls are issued by [`super::kvm::KvmTdx`].
//!
//! The order is KVM's (`arch/x86/kvm/vmx/tdx.c`): INIT_VM only while the VM has no vCPU
//! (`setup_tdparams`); a vCPU only after INIT_VM and only with the split irqchip
//! (`tdx_vcpu_create`); INIT_MEM_REGION only on a vCPU that had its INIT_VCPU
//! (`tdx_vcpu_init_mem_region`); no vCPU command and no new vCPU after FINALIZE
//! (`tdx_vcpu_ioctl`, `tdx_vcpu_create`), and `KVM_RUN` only of a vCPU that had its
//! INIT_VCPU (`tdx_vcpu_pre_run`), so every vCPU is made and initialized before it.
//! FINALIZE itself does not look at the vCPUs. INIT_VCPU leaves each vCPU runnable
//! (`tdx_td_vcpu_init`): a TD has no INIT and SIPI, and every vCPU starts at the reset
//! vector, where the firmware makes all but one wait. The TDX module gives the TD as
//! many vCPUs as KVM's limit for the VM, the host's CPU count (`tdx_vm_init`), with no
//! capability to enable first. Making vCPUs adds nothing to MRTD, which only
//! TDH.MEM.PAGE.ADD and TDH.MR.EXTEND extend, so it is the same for any number.

use crate::platform::hardware::launch::{
    check_vcpus, page_runs, retried, until_done, HostPages, LaunchError, Progress, VmOps,
};
use crate::vmm::memory::{GuestMemory, View};
use crate::vmm::uapi::{
    CpuidEntry, KvmTdxCapabilities, KvmTdxInitMemRegion, KvmTdxInitVm, WithCpuid,
    KVM_TDX_MEASURE_MEMORY_REGION,
};
use nacre_loader::{ImagePage, LoadedImage};
use nacre_shared_abi::boot::MAX_CPUS;
use nacre_shared_abi::layout::{PAGE_SIZE_4K, TDX_RESET_PAGE_GPA};
use nacre_shared_abi::tdx::attributes;
use zerocopy::FromZeros;

/// The guest physical-address width nacre's TDs use: the shared bit is bit 47, as on
/// `emulated-tdx` (CPUID 0x8000_0008 EAX bits 23:16 in INIT_VM's CPUID: `arch/x86/kvm/vmx/tdx.c`,
/// `setup_tdparams_eptp_controls`).
pub const GPAW: u32 = 48;

/// The XFAM nacre asks for, within what the module supports: x87, SSE, AVX and the
/// three AVX-512 components (the state the firmware enables in XCR0 when CPUID has it).
pub const XFAM: u64 = 0b1110_0111;

/// XFAM bits every TD must have (x87, SSE).
const XFAM_FIXED: u64 = 0b11;

/// The memory slot of guest RAM and of the reset page.
pub const RAM_SLOT: u32 = 0;
/// The reset page's slot: it lies above RAM, below 4 GiB.
pub const RESET_SLOT: u32 = 1;

/// Room for CPUID entries in the first KVM_TDX_CAPABILITIES; doubled on E2BIG.
const FIRST_ROOM: usize = 16;
/// The most room asked for.
const MAX_ROOM: usize = 1024;

/// The ioctls of a TDX launch.
pub trait TdxLaunchOps: VmOps {
    /// `KVM_TDX_CAPABILITIES` (VM fd); `E2BIG` when `caps` has too little room.
    fn capabilities(&mut self, caps: &mut WithCpuid<KvmTdxCapabilities>)
        -> Result<(), LaunchError>;
    /// `KVM_TDX_INIT_VM` (VM fd).
    fn init_vm(&mut self, init: &mut WithCpuid<KvmTdxInitVm>) -> Result<(), LaunchError>;
    /// vCPU `index` (its KVM id and x2APIC id; they are made in order from 0, the boot
    /// processor) with `cpuid` (`KVM_CREATE_VCPU`, `KVM_SET_CPUID2`).
    fn create_vcpu(&mut self, index: u32, cpuid: &[CpuidEntry]) -> Result<(), LaunchError>;
    /// `KVM_TDX_INIT_VCPU` of vCPU `index` (its fd), `rcx` the value the TD finds in RCX.
    fn init_vcpu(&mut self, index: u32, rcx: u64) -> Result<(), LaunchError>;
    /// One `KVM_TDX_INIT_MEM_REGION` (on vCPU 0's fd; any initialized vCPU would do);
    /// the kernel may do part of it and write the remainder back.
    fn init_mem_region(
        &mut self,
        region: &mut KvmTdxInitMemRegion,
        flags: u32,
    ) -> Result<(), LaunchError>;
    /// `KVM_TDX_FINALIZE_VM` (VM fd).
    fn finalize(&mut self) -> Result<(), LaunchError>;
}

impl Progress for KvmTdxInitMemRegion {
    fn progress(&self) -> (u64, u64, u64) {
        (self.gpa, self.source_addr, self.nr_pages)
    }
}

/// `KVM_TDX_CAPABILITIES` with as much room for CPUID entries as it asks for.
pub fn capabilities(
    mut call: impl FnMut(&mut WithCpuid<KvmTdxCapabilities>) -> Result<(), LaunchError>,
) -> Result<WithCpuid<KvmTdxCapabilities>, LaunchError> {
    let mut room = FIRST_ROOM;
    loop {
        let mut caps = WithCpuid::new(&KvmTdxCapabilities::new_zeroed(), room);
        match call(&mut caps) {
            Ok(()) => return Ok(caps),
            Err(e) if e.errno() == Some(libc::E2BIG) && room < MAX_ROOM => room *= 2,
            Err(e) => return Err(e),
        }
    }
}

/// The TD's CPUID configuration for INIT_VM: every configurable leaf of `caps`, with
/// the bits it lets the host choose taken from what KVM supports, and the guest
/// physical-address width [`GPAW`]. Only configurable leaves may be given (KVM fails
/// INIT_VM otherwise).
pub fn init_vm_cpuid(configurable: &[CpuidEntry], supported: &[CpuidEntry]) -> Vec<CpuidEntry> {
    configurable
        .iter()
        .map(|mask| {
            let have = supported
                .iter()
                .find(|s| s.function == mask.function && s.index == mask.index)
                .copied()
                .unwrap_or_default();
            let mut e = CpuidEntry {
                function: mask.function,
                index: mask.index,
                flags: mask.flags,
                eax: have.eax & mask.eax,
                ebx: have.ebx & mask.ebx,
                ecx: have.ecx & mask.ecx,
                edx: have.edx & mask.edx,
                padding: [0; 3],
            };
            if e.function == 0x8000_0008 {
                e.eax = (e.eax & !0x00FF_0000) | (GPAW << 16);
            }
            e
        })
        .collect()
}

/// What the launch learned that the running TD needs.
#[derive(Debug, Clone, Copy)]
pub struct Launched {
    /// The TDX module's capabilities (without CPUID).
    pub caps: KvmTdxCapabilities,
}

/// The TDX launch of `image` with `cpus` vCPUs, the parameter page `param`, its RAM
/// `mem` (the shared side, where pages are staged as INIT_MEM_REGION's source), and
/// `reset`, one host page that is the reset page's shared side and source.
pub fn run(
    ops: &mut impl TdxLaunchOps,
    mem: &GuestMemory,
    image: &LoadedImage,
    param: &[u8; 4096],
    reset: &mut HostPages,
    cpus: u32,
) -> Result<Launched, LaunchError> {
    if !(1..=MAX_CPUS).contains(&cpus) {
        return Err(LaunchError::Image(format!(
            "{cpus} vCPUs asked for: a guest has 1 to {MAX_CPUS}"
        )));
    }
    let attrs = image.td_attributes().ok_or_else(|| {
        LaunchError::Image("the image has no TDX view (it was not loaded for TDX)".into())
    })?;
    if attrs & attributes::DEBUG != 0 {
        return Err(LaunchError::Image(format!(
            "the image asks for a debuggable TD (TD attributes {attrs:#x}, from `nacre package \
             --debug`), and upstream KVM allows no TD attribute but SEPT_VE_DISABLE: package \
             it without --debug"
        )));
    }
    check_vcpus(ops, cpus)?;
    // The local APICs in KVM, without which it makes no TD vCPU.
    ops.split_irqchip()?;
    let caps = capabilities(|c| ops.capabilities(c))?;
    let head = caps.head();
    if attrs & !head.supported_attrs != 0 {
        return Err(LaunchError::Image(format!(
            "the image's TD attributes {attrs:#x} are not all among those KVM and the TDX \
             module allow ({:#x})",
            head.supported_attrs
        )));
    }
    if head.supported_xfam & XFAM_FIXED != XFAM_FIXED {
        return Err(LaunchError::Image(format!(
            "the TDX module's XFAM {:#x} lacks x87 and SSE",
            head.supported_xfam
        )));
    }
    let supported = ops.supported_cpuid()?;
    let config = init_vm_cpuid(&caps.entries(), &supported);
    let mut init = WithCpuid::with_entries(
        &KvmTdxInitVm {
            attributes: attrs,
            xfam: head.supported_xfam & XFAM,
            ..KvmTdxInitVm::new_zeroed()
        },
        &config,
    );
    retried("KVM_TDX_INIT_VM", &[], || ops.init_vm(&mut init))?;

    // Every vCPU: KVM's view of its CPUID agrees with the TD's (the TDX module answers
    // the TD itself): what KVM supports, with the TD's address width.
    let mut vcpu_cpuid = supported;
    for e in &mut vcpu_cpuid {
        if e.function == 0x8000_0008 {
            e.eax = (e.eax & !0x00FF_0000) | (GPAW << 16);
        }
    }
    for index in 0..cpus {
        ops.create_vcpu(index, &vcpu_cpuid)?;
        // nacre's firmware reads nothing from RCX (it tells the vCPUs apart by the
        // index the TDX module puts in ESI).
        ops.init_vcpu(index, 0)?;
    }

    mem.protect(View::Shared, 0, mem.size(), true)?;
    ops.add_private_slot(RAM_SLOT, 0, mem.size(), mem.base(View::Shared) as u64)?;
    ops.add_private_slot(RESET_SLOT, TDX_RESET_PAGE_GPA, PAGE_SIZE_4K, reset.addr())?;
    ops.set_private(0, mem.size())?;
    ops.set_private(TDX_RESET_PAGE_GPA, PAGE_SIZE_4K)?;

    // Stage every page at its own GPA in the shared side (the reset page in its own
    // page), in launch order, then the parameter page, and add them.
    let mut pages = Vec::with_capacity(image.pages.len() + 1);
    let mut have_reset = false;
    for ImagePage { gpa, contents } in &image.pages {
        if *gpa == TDX_RESET_PAGE_GPA {
            reset.write(contents.bytes());
            have_reset = true;
        } else {
            mem.write(*gpa, contents.bytes())?;
        }
        pages.push((*gpa, KVM_TDX_MEASURE_MEMORY_REGION));
    }
    if !have_reset {
        return Err(LaunchError::Image(
            "the image has no TDX reset page (it was not loaded for TDX)".into(),
        ));
    }
    mem.write(image.param_gpa, param)?;
    pages.push((image.param_gpa, 0));
    let runs = page_runs(pages);
    for run in &runs {
        let source = if run.gpa == TDX_RESET_PAGE_GPA {
            reset.addr()
        } else {
            mem.base(View::Shared) as u64 + run.gpa
        };
        let mut region = KvmTdxInitMemRegion {
            source_addr: source,
            gpa: run.gpa,
            nr_pages: run.pages,
        };
        until_done("KVM_TDX_INIT_MEM_REGION", &mut region, |r| {
            ops.init_mem_region(r, run.kind)
        })?;
    }
    for run in runs.iter().filter(|r| r.gpa != TDX_RESET_PAGE_GPA) {
        mem.discard(run.gpa, run.pages * PAGE_SIZE_4K)?;
    }
    reset.write(&[0; 4096]);
    retried("KVM_TDX_FINALIZE_VM", &[libc::EBUSY], || ops.finalize())?;
    Ok(Launched { caps: head })
}
