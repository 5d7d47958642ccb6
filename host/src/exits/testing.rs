//! A vCPU for exit-handler tests and fuzz targets: registers held in memory, a page
//! walk the caller chooses, exceptions recorded instead of injected.

use super::RunError;
use crate::vmm::vcpu::Vcpu;
use kvm_bindings::kvm_regs;

/// A fake vCPU.
pub struct FakeVcpu {
    /// The registers the guest "had" when it exited, and gets back.
    pub regs: kvm_regs,
    /// The guest's page walk: GVA to GPA (with the view bit), `None` if unmapped.
    pub walk: Box<dyn Fn(u64) -> Option<u64>>,
    /// Exceptions injected, in order.
    pub injected: Vec<u8>,
    /// The vCPU's index (0, the boot processor, unless a test says otherwise).
    pub index: u32,
    /// Its MSRs as KVM would hold them: what was written, and what reads return.
    pub msrs: std::collections::BTreeMap<u32, u64>,
    /// MSRs KVM refuses.
    pub refused_msrs: Vec<u32>,
}

impl std::fmt::Debug for FakeVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeVcpu")
            .field("index", &self.index)
            .field("regs", &self.regs)
            .field("injected", &self.injected)
            .finish_non_exhaustive()
    }
}

impl FakeVcpu {
    /// A vCPU whose page tables map every GVA to the same GPA.
    pub fn identity() -> Self {
        Self::with_walk(Some)
    }

    /// A vCPU with the page walk `walk`.
    pub fn with_walk(walk: impl Fn(u64) -> Option<u64> + 'static) -> Self {
        Self {
            regs: kvm_regs::default(),
            walk: Box::new(walk),
            injected: Vec::new(),
            index: 0,
            msrs: std::collections::BTreeMap::new(),
            refused_msrs: Vec::new(),
        }
    }
}

impl Vcpu for FakeVcpu {
    fn index(&self) -> u32 {
        self.index
    }
    fn regs(&self) -> Result<kvm_regs, RunError> {
        Ok(self.regs)
    }
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), RunError> {
        self.regs = *regs;
        Ok(())
    }
    fn translate(&self, gva: u64) -> Result<Option<u64>, RunError> {
        Ok((self.walk)(gva))
    }
    fn inject_exception(&mut self, vector: u8) -> Result<(), RunError> {
        self.injected.push(vector);
        Ok(())
    }
    fn msr(&mut self, index: u32, write: Option<u64>) -> Result<Option<u64>, RunError> {
        if self.refused_msrs.contains(&index) {
            return Ok(None);
        }
        Ok(Some(match write {
            Some(v) => {
                self.msrs.insert(index, v);
                0
            }
            None => self.msrs.get(&index).copied().unwrap_or(0),
        }))
    }
}

/// Put a hostcall request `h` at the start of the hostcall area at `area`.
pub fn put_hostcall(
    mem: &crate::vmm::memory::GuestMemory,
    area: u64,
    h: &nacre_shared_abi::hostcall::HostcallHeader,
) {
    use zerocopy::IntoBytes;
    mem.write(area, h.as_bytes()).expect("hostcall header");
}

/// The hostcall header at `area`, as the host left it.
pub fn hostcall_reply(
    mem: &crate::vmm::memory::GuestMemory,
    area: u64,
) -> nacre_shared_abi::hostcall::HostcallHeader {
    use zerocopy::FromBytes;
    let mut raw = [0u8; 64];
    mem.read(area, &mut raw).expect("hostcall header");
    nacre_shared_abi::hostcall::HostcallHeader::read_from_bytes(&raw).expect("64 bytes")
}

/// A Clock request (answered by any host without side effects).
pub fn clock_request() -> nacre_shared_abi::hostcall::HostcallHeader {
    nacre_shared_abi::hostcall::HostcallHeader {
        op: nacre_shared_abi::hostcall::HostcallOp::Clock as u32,
        len: 24,
        ..Default::default()
    }
}

/// An Exit request with status `code` and no unsupported syscalls.
pub fn exit_request(code: u64) -> nacre_shared_abi::hostcall::HostcallHeader {
    nacre_shared_abi::hostcall::HostcallHeader {
        op: nacre_shared_abi::hostcall::HostcallOp::Exit as u32,
        arg: code,
        ..Default::default()
    }
}
