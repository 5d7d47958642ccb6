//! Building a KVM VM for the emulated SNP platform from a loaded image: guest RAM
//! and its two memslots, the launch pages, CPUID, MSR exits and the BSP's initial
//! state from the image's VMSA.

use crate::mmu::attributes::Kind;
use crate::platform::emulated_snp::{EmulatedSnp, C_BIT_MASK};
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use igvm::snp_defs::{SevSelector, SevVmsa};
use kvm_bindings::{
    kvm_enable_cap, kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{
    Cap, Kvm, MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd,
    VmFd,
};
use nacre_loader::{ImagePage, LoadedImage, PageContents};
use nacre_shared_abi::boot::{MemoryMapEntry, MEMORY_MAP_TYPE_MEMORY};
use nacre_shared_abi::doorbell::EMULATED_SNP_SIGNATURE;
use nacre_shared_abi::layout::{EMULATED_SNP_C_BIT, PAGE_SIZE_4K};
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

/// A VM ready to run.
#[derive(Debug)]
pub struct Vm {
    /// Keeps the VM alive.
    pub vm: VmFd,
    /// The BSP.
    pub vcpu: VcpuFd,
    /// Platform state.
    pub snp: EmulatedSnp,
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
}

impl Hostile {
    /// From the environment variable's value.
    pub fn from_env() -> Option<Self> {
        match std::env::var("NACRE_TEST_HOSTILE").ok()?.as_str() {
            "unvalidated-boot-info" => Some(Self::UnvalidatedBootInfo),
            "shared-param-page" => Some(Self::SharedParamPage),
            _ => None,
        }
    }
}

/// Build the VM.
pub fn build(image: &LoadedImage, memory: u64) -> Result<Vm, SetupError> {
    let hostile = Hostile::from_env();
    let kvm = Kvm::new().map_err(SetupError::Kvm)?;
    let vm = kvm.create_vm().map_err(SetupError::Kvm)?;
    let mem = GuestMemory::new(memory)?;
    for (slot, view, gpa) in [(0, View::Shared, 0), (1, View::Private, C_BIT_MASK)] {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: memory,
            userspace_addr: mem.base(view) as u64,
        };
        // SAFETY: the mapping lives as long as `mem`, which the returned `Vm` owns and
        // which outlives the VM's use of it (the VmFd is dropped first: field order).
        unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("a memory slot"))?;
    }
    let mut snp = EmulatedSnp::new(mem);

    // Launch pages: contents, then assigned + validated (LAUNCH_UPDATE's result).
    for ImagePage { gpa, contents } in &image.pages {
        if let PageContents::Data(bytes) = contents {
            snp.mem.write(*gpa, &bytes[..])?;
        }
        snp.launch_page(*gpa)
            .map_err(|e| SetupError::Image(format!("page {gpa:#x} cannot be placed: {e:?}")))?;
    }
    // The host parameter page: the memory map, inserted unmeasured.
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
    snp.mem.write(image.param_gpa, &param)?;
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
    launched.sort_unstable();
    launched.dedup();
    let mut i = 0;
    while let Some(&first) = launched.get(i) {
        let mut n = 1;
        while launched.get(i + n as usize) == Some(&(first + n)) {
            n += 1;
        }
        snp.mmu.prefault(&snp.mem, first, n, Kind::Private)?;
        i += n as usize;
    }
    if hostile == Some(Hostile::UnvalidatedBootInfo) {
        snp.unvalidate_page(nacre_shared_abi::layout::BOOT_INFO_GPA)?;
    }

    enable_msr_exits(&vm)?;
    let vcpu = vm.create_vcpu(0).map_err(ioctl("a vCPU"))?;
    set_cpuid(&kvm, &vcpu)?;
    set_initial_state(&vcpu, &image.vmsa)?;
    Ok(Vm { vm, vcpu, snp })
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
