//! VM exits: decoded in one place ([`Exit::decode`]) into a typed enum, handled by
//! free functions ([`handle_exit`] for what every platform shares, then one function
//! per GHCB exit code or TDVMCALL leaf in [`snp`] and [`tdx`]). Handlers take the
//! platform and the vCPU as trait objects, so tests feed them synthetic exits without
//! `/dev/kvm` (Firecracker's `handle_kvm_exit` habit).

pub mod apic;
pub mod hardware;
pub mod memory;
pub mod snp;
pub mod tdx;

use crate::platform::{Platform, Stop};
use crate::vmm::memory::MemoryError;
use crate::vmm::vcpu::Vcpu;
use hardware::TdxExit;
use kvm_ioctls::VcpuExit;
use nacre_shared_abi::doorbell::Doorbell;

/// Errors that end a run that are the host's fault or KVM's, not the guest's (the
/// guest's are a [`Stop`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// KVM_RUN or a register ioctl failed.
    #[error("KVM failed while running the guest")]
    Kvm(#[from] kvm_ioctls::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The guest did something the platform cannot continue from.
    #[error("the guest stopped unexpectedly: {0}")]
    Guest(String),
    /// A bug in nacre's host.
    #[error("host bug: {0}")]
    Host(&'static str),
    /// The profile (`NACRE_PROFILE`) could not be written.
    #[error("cannot write the profile (NACRE_PROFILE)")]
    Profile(#[source] crate::files::FileError),
    /// A vCPU's host thread could not be started.
    #[error("cannot start a vCPU thread")]
    Thread(#[source] std::io::Error),
}

/// A VM exit, decoded from `kvm_run`. Exits whose answer goes back into `kvm_run`
/// (port reads, MMIO, MSRs, hypercalls) carry the place for it; the others carry
/// copies and no borrow, so their handlers may use the vCPU's registers.
#[derive(Debug)]
pub enum Exit<'a> {
    /// `out` to a doorbell port of the emulated platforms: a trapping instruction
    /// whose operands are in the vCPU's registers (shared-abi `doorbell.rs`).
    Doorbell(Doorbell),
    /// `out` to any other port.
    IoOut {
        /// The port.
        port: u16,
        /// What was written.
        data: &'a [u8],
    },
    /// `in` from a port: `data` is what the guest reads.
    IoIn {
        /// The port.
        port: u16,
        /// The answer.
        data: &'a mut [u8],
    },
    /// A guest read that reached no memory slot (on the emulated platforms: a view
    /// the host MMU keeps closed): `data` is what the guest reads.
    MmioRead {
        /// The guest-physical address, with the view's bit.
        gpa: u64,
        /// The answer.
        data: &'a mut [u8],
    },
    /// A guest write that reached no memory slot.
    MmioWrite {
        /// The guest-physical address, with the view's bit.
        gpa: u64,
        /// What was written.
        data: &'a [u8],
    },
    /// RDMSR of an MSR KVM hands to user space.
    RdMsr {
        /// The MSR.
        index: u32,
        /// The value the guest reads.
        data: &'a mut u64,
        /// Set to 1 to inject #GP instead.
        error: &'a mut u8,
    },
    /// WRMSR of an MSR KVM hands to user space.
    WrMsr {
        /// The MSR.
        index: u32,
        /// The value written.
        value: u64,
        /// Set to 1 to inject #GP instead.
        error: &'a mut u8,
    },
    /// A hypercall KVM hands to user space (`KVM_EXIT_HYPERCALL`).
    Hypercall {
        /// The hypercall number.
        nr: u64,
        /// Its arguments.
        args: [u64; 6],
        /// The value the guest gets back.
        ret: &'a mut u64,
    },
    /// `KVM_EXIT_MEMORY_FAULT`: the access's kind disagrees with the page's attribute.
    MemoryFault {
        /// The guest-physical address.
        gpa: u64,
        /// The size of the access.
        size: u64,
        /// `KVM_MEMORY_EXIT_FLAG_PRIVATE` and friends.
        flags: u64,
    },
    /// `KVM_EXIT_SYSTEM_EVENT`: the guest asked to be stopped or reset (on SEV-SNP a
    /// termination request, on TDX ReportFatalError).
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*`.
        kind: u32,
        /// The event's data words.
        data: Vec<u64>,
    },
    /// `KVM_EXIT_TDX`: a TDG.VP.VMCALL sub-function KVM leaves to user space.
    Tdx(TdxExit<'a>),
    /// `KVM_EXIT_SNP_REQ_CERTS`: an extended guest request wants the host's
    /// certificates (nacre never enables it).
    SnpReqCerts {
        /// The guest's certificate buffer.
        gpa: u64,
        /// Its size in pages.
        npages: u64,
    },
    /// HLT with interrupts the host never delivers.
    Hlt,
    /// A triple fault.
    Shutdown,
    /// KVM could not enter the guest.
    FailEntry {
        /// The hardware's entry-failure reason.
        reason: u64,
    },
    /// KVM could not emulate an instruction.
    InternalError,
    /// `KVM_RUN` was interrupted by a signal before the guest exited.
    Interrupted,
    /// Any other exit: the raw `exit_reason`.
    Unsupported(u32),
}

impl<'a> Exit<'a> {
    /// Decode what `KVM_RUN` returned.
    pub fn decode(exit: VcpuExit<'a>) -> Self {
        match exit {
            VcpuExit::IoOut(port, data) => match Doorbell::from_port(port) {
                Some(bell) => Exit::Doorbell(bell),
                None => Exit::IoOut { port, data },
            },
            VcpuExit::IoIn(port, data) => Exit::IoIn { port, data },
            VcpuExit::MmioRead(gpa, data) => Exit::MmioRead { gpa, data },
            VcpuExit::MmioWrite(gpa, data) => Exit::MmioWrite { gpa, data },
            VcpuExit::X86Rdmsr(e) => Exit::RdMsr {
                index: e.index,
                data: e.data,
                error: e.error,
            },
            VcpuExit::X86Wrmsr(e) => Exit::WrMsr {
                index: e.index,
                value: e.data,
                error: e.error,
            },
            VcpuExit::Hypercall(h) => Exit::Hypercall {
                nr: h.nr,
                args: h.args,
                ret: h.ret,
            },
            VcpuExit::MemoryFault { flags, gpa, size } => Exit::MemoryFault { gpa, size, flags },
            VcpuExit::SystemEvent(kind, data) => Exit::SystemEvent {
                kind,
                data: data.to_vec(),
            },
            VcpuExit::Hlt => Exit::Hlt,
            VcpuExit::Shutdown => Exit::Shutdown,
            VcpuExit::FailEntry(reason, _) => Exit::FailEntry { reason },
            VcpuExit::InternalError => Exit::InternalError,
            VcpuExit::Unsupported(reason) => Exit::Unsupported(reason),
            other => Exit::Unsupported(raw_reason(&other)),
        }
    }

    /// The exit without any borrow of `kvm_run` (`Ok`), so that its handler may use
    /// the vCPU's registers; or, for an exit that carries its answer's place in
    /// `kvm_run`, itself (`Err`).
    pub fn detach(self) -> Result<Exit<'static>, Exit<'a>> {
        Ok(match self {
            Exit::Doorbell(bell) => Exit::Doorbell(bell),
            Exit::MemoryFault { gpa, size, flags } => Exit::MemoryFault { gpa, size, flags },
            Exit::SystemEvent { kind, data } => Exit::SystemEvent { kind, data },
            Exit::SnpReqCerts { gpa, npages } => Exit::SnpReqCerts { gpa, npages },
            Exit::Hlt => Exit::Hlt,
            Exit::Shutdown => Exit::Shutdown,
            Exit::FailEntry { reason } => Exit::FailEntry { reason },
            Exit::InternalError => Exit::InternalError,
            Exit::Interrupted => Exit::Interrupted,
            Exit::Unsupported(reason) => Exit::Unsupported(reason),
            borrowed => return Err(borrowed),
        })
    }
}

/// `exit_reason` of the exits nacre has no variant for (`include/uapi/linux/kvm.h`).
fn raw_reason(exit: &VcpuExit<'_>) -> u32 {
    match exit {
        VcpuExit::Unknown => 0,
        VcpuExit::Exception => 1,
        VcpuExit::Debug(_) => 4,
        VcpuExit::IrqWindowOpen => 7,
        VcpuExit::Intr => 10,
        VcpuExit::SetTpr => 11,
        VcpuExit::TprAccess => 12,
        VcpuExit::Nmi => 16,
        VcpuExit::IoapicEoi(_) => 26,
        VcpuExit::Hyperv => 27,
        _ => u32::MAX,
    }
}

/// Handle one exit of the guest `platform` serves, on `vcpu`. `Ok(None)` resumes the
/// guest; `Ok(Some(stop))` ends the run for the reason given.
pub fn handle_exit(
    platform: &mut dyn Platform,
    vcpu: &mut dyn Vcpu,
    exit: Exit<'_>,
) -> Result<Option<Stop>, RunError> {
    platform.exited(vcpu.index())?;
    match exit {
        Exit::Doorbell(bell) => {
            platform.run_counters().exit("io");
            platform.doorbell(vcpu, bell)
        }
        Exit::IoOut { port, data } => {
            platform.run_counters().exit("io");
            platform.io_out(vcpu, port, data)
        }
        Exit::IoIn { data, .. } => {
            // No devices: reads of any port float high.
            platform.run_counters().exit("io");
            data.fill(0xFF);
            Ok(None)
        }
        Exit::MmioRead { gpa, data } => memory::access(platform, gpa, |mem, at| mem.read(at, data)),
        Exit::MmioWrite { gpa, data } => {
            memory::access(platform, gpa, |mem, at| mem.write(at, data))
        }
        Exit::RdMsr { index, data, error } => {
            platform.run_counters().exit("msr");
            match platform.rdmsr(vcpu.index(), index) {
                Some(v) => *data = v,
                None => *error = 1,
            }
            Ok(None)
        }
        Exit::WrMsr {
            index,
            value,
            error,
        } => {
            platform.run_counters().exit("msr");
            if !platform.wrmsr(vcpu.index(), index, value) {
                *error = 1;
            }
            Ok(None)
        }
        Exit::Hypercall { nr, args, ret } => {
            platform.run_counters().exit("hypercall");
            platform.hypercall(nr, args, ret)
        }
        Exit::MemoryFault { gpa, size, flags } => {
            platform.run_counters().exit("memory-fault");
            platform.memory_fault_exit(gpa, size, flags)
        }
        Exit::SystemEvent { kind, data } => {
            platform.run_counters().exit("system-event");
            platform.system_event(kind, &data)
        }
        Exit::Tdx(mut call) => {
            platform.run_counters().exit("tdvmcall");
            platform.tdvmcall(&mut call)
        }
        Exit::SnpReqCerts { gpa, npages } => Err(RunError::Guest(format!(
            "certificate request exit for {npages} pages at GPA {gpa:#x}, which nacre never \
             enables (KVM_SEV_SNP_ENABLE_REQ_CERTS)"
        ))),
        Exit::Hlt => Err(RunError::Guest("the guest halted".into())),
        Exit::Shutdown => Err(RunError::Guest(
            "the guest shut down (triple fault) — the firmware crashed".into(),
        )),
        Exit::FailEntry { reason } => Err(RunError::Guest(format!(
            "KVM could not enter the guest (reason {reason:#x})"
        ))),
        Exit::InternalError => {
            if platform.emulation_failure(vcpu)? {
                return Ok(None);
            }
            let rip = vcpu.regs().map(|r| r.rip).unwrap_or(0);
            Err(RunError::Guest(format!(
                "KVM internal error while emulating the guest at RIP {rip:#x}"
            )))
        }
        Exit::Interrupted => Ok(None),
        Exit::Unsupported(reason) => Err(RunError::Guest(format!(
            "unexpected VM exit (KVM exit reason {reason})"
        ))),
    }
}

/// Fakes for driving exit handlers without `/dev/kvm`: the unit tests' and, with the
/// `fuzzing` feature, the fuzz targets' (`tests/fuzz/`).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod testing;
