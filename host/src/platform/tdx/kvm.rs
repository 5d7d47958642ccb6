//! The TDX launch's ioctls (docs/kvm-uapi.md 4): [`KvmTdx`], and the capabilities of
//! a TDX VM for `nacre host-check`.

use super::launch::{self, TdxLaunchOps};
use crate::platform::hardware::launch::{KvmVm, LaunchError, VmOps};
use crate::vmm::uapi::{
    self, cap, map_gpa_range, tdx_cmd, CpuidEntry, KvmTdxCapabilities, KvmTdxCmd,
    KvmTdxInitMemRegion, KvmTdxInitVm, WithCpuid, KVM_X86_TDX_VM,
};
use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuFd, VmFd};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// A TDX command on vCPU fd `fd` with `data`, as a [`LaunchError`] (kvm-ioctls issues
/// `KVM_MEMORY_ENCRYPT_OP` on VM fds only).
///
/// # Safety
///
/// `data` must be the immediate or point to the structure command `id` takes, valid
/// for reads and writes for the call.
unsafe fn command(
    fd: RawFd,
    what: &'static str,
    id: u32,
    flags: u32,
    data: u64,
) -> Result<(), LaunchError> {
    // SAFETY: forwarded from the caller.
    unsafe { uapi::tdx_command(fd, id, flags, data) }.map_err(|(source, status)| LaunchError::Kvm {
        what,
        source,
        status: Some(status),
    })
}

/// A TDX command on VM `vm` (kvm-ioctls' `encrypt_op`), as a [`LaunchError`].
///
/// # Safety
///
/// `data` must be the immediate or point to the structure command `id` takes, valid
/// for reads and writes for the call.
unsafe fn vm_command(vm: &VmFd, what: &'static str, id: u32, data: u64) -> Result<(), LaunchError> {
    let mut cmd = KvmTdxCmd {
        id,
        flags: 0,
        data,
        hw_error: 0,
    };
    // SAFETY: `cmd` is a kvm_tdx_cmd, and the caller vouches for its `data`.
    unsafe { vm.encrypt_op(&mut cmd) }.map_err(|e| LaunchError::Kvm {
        what,
        source: e.into(),
        status: Some(cmd.hw_error),
    })
}

/// `KVM_TDX_CAPABILITIES` of the TDX VM `vm`, with as much room as it needs.
pub fn capabilities(vm: &VmFd) -> Result<WithCpuid<KvmTdxCapabilities>, (io::Error, u64)> {
    launch::capabilities(|caps| {
        // SAFETY: `caps` is a kvm_tdx_capabilities followed by the room its nent says.
        unsafe {
            vm_command(
                vm,
                "KVM_TDX_CAPABILITIES",
                tdx_cmd::CAPABILITIES,
                caps.as_mut_ptr() as u64,
            )
        }
    })
    .map_err(|e| match e {
        LaunchError::Kvm { source, status, .. } => (source, status.unwrap_or(0)),
        other => (io::Error::other(other.to_string()), 0),
    })
}

/// The real [`TdxLaunchOps`]: a TDX VM.
#[derive(Debug)]
pub struct KvmTdx {
    /// The VM and its memory slots.
    pub vm: KvmVm,
    /// The vCPUs made, in index order.
    pub vcpus: Vec<VcpuFd>,
}

impl KvmTdx {
    /// A TDX VM (`KVM_X86_TDX_VM`) with MapGPA forwarded to user space (the launch
    /// adds the split irqchip: [`VmOps::split_irqchip`]).
    pub fn new() -> Result<Self, LaunchError> {
        let vm = KvmVm::create(KVM_X86_TDX_VM)?;
        vm.enable_cap(
            cap::EXIT_HYPERCALL,
            map_gpa_range::EXIT_HYPERCALL_BIT,
            "KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)",
        )?;
        Ok(Self {
            vm,
            vcpus: Vec::new(),
        })
    }

    fn vcpu_fd(&self, index: u32) -> Result<RawFd, LaunchError> {
        self.vcpus
            .get(index as usize)
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| {
                LaunchError::Image(format!("a command of vCPU {index}, which was never made"))
            })
    }
}

impl VmOps for KvmTdx {
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

impl TdxLaunchOps for KvmTdx {
    fn capabilities(
        &mut self,
        caps: &mut WithCpuid<KvmTdxCapabilities>,
    ) -> Result<(), LaunchError> {
        // SAFETY: `caps` is a kvm_tdx_capabilities followed by the room its nent says.
        unsafe {
            vm_command(
                &self.vm.vm,
                "KVM_TDX_CAPABILITIES",
                tdx_cmd::CAPABILITIES,
                caps.as_mut_ptr() as u64,
            )
        }
    }

    fn init_vm(&mut self, init: &mut WithCpuid<KvmTdxInitVm>) -> Result<(), LaunchError> {
        // SAFETY: `init` is a kvm_tdx_init_vm followed by the entries its nent says.
        unsafe {
            vm_command(
                &self.vm.vm,
                "KVM_TDX_INIT_VM",
                tdx_cmd::INIT_VM,
                init.as_mut_ptr() as u64,
            )
        }
    }

    fn create_vcpu(&mut self, index: u32, cpuid: &[CpuidEntry]) -> Result<(), LaunchError> {
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
        self.vcpus.push(vcpu);
        Ok(())
    }

    fn init_vcpu(&mut self, index: u32, rcx: u64) -> Result<(), LaunchError> {
        // SAFETY: INIT_VCPU takes an immediate.
        unsafe {
            command(
                self.vcpu_fd(index)?,
                "KVM_TDX_INIT_VCPU",
                tdx_cmd::INIT_VCPU,
                0,
                rcx,
            )
        }
    }

    fn init_mem_region(
        &mut self,
        region: &mut KvmTdxInitMemRegion,
        flags: u32,
    ) -> Result<(), LaunchError> {
        // SAFETY: `region` is the kvm_tdx_init_mem_region the command reads and
        // writes; its source is host memory the launch keeps mapped.
        unsafe {
            command(
                self.vcpu_fd(0)?,
                "KVM_TDX_INIT_MEM_REGION",
                tdx_cmd::INIT_MEM_REGION,
                flags,
                std::ptr::from_mut(region) as u64,
            )
        }
    }

    fn finalize(&mut self) -> Result<(), LaunchError> {
        // SAFETY: FINALIZE_VM takes no data.
        unsafe { vm_command(&self.vm.vm, "KVM_TDX_FINALIZE_VM", tdx_cmd::FINALIZE_VM, 0) }
    }
}
