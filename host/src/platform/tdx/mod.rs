//! The `tdx` platform: Intel TDX hardware through upstream KVM (Linux 6.16 and later).
//! The TDX module and KVM do what `emulated-tdx` plays in software: the TD's initial
//! state, MRTD, TDREPORTs, TDG.MEM.PAGE.ACCEPT, most TDG.VP.VMCALLs. nacre launches the
//! TD ([`launch`], docs/kvm-uapi.md 4), keeps the memory attributes (MapGPA reaches it
//! as `KVM_HC_MAP_GPA_RANGE`), serves the hostcalls, and answers the TDVMCALLs KVM
//! leaves to user space: GetQuote through the host's quote generation service
//! ([`qgs`]), GetTdVmCallInfo and SetupEventNotifyInterrupt.

pub mod check;
pub mod kvm;
pub mod launch;
pub mod qgs;
#[cfg(test)]
mod tests;

use crate::exits::hardware::{tdvmcall, TdxExit};
use crate::exits::tdx::get_quote::{self, QuotingService};
use crate::exits::RunError;
use crate::mmu::HypervisorMmu;
use crate::platform::check::{preflight, HostPaths};
use crate::platform::hardware::launch::{HostPages, LaunchError};
use crate::platform::hardware::mmu::KvmMmu;
use crate::platform::hardware::probe::SystemProbe;
use crate::platform::hardware::HardwareGuest;
use crate::platform::hostcall::HostcallHost;
use crate::platform::launch::{
    check_cpus, check_memory, parameter_page, tsc_khz, LaunchConfig, MsiSender, SetupError,
    TDX_MEMORY_LIMIT,
};
use crate::platform::{Platform, Registration, Stop, Vm};
use crate::stats::RunCounters;
use crate::vmm::memory::{GuestMemory, View};
use crate::vmm::uapi::{map_gpa_range, system_event};
use kvm::KvmTdx;
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::layout::{PAGE_SIZE_4K, TDX_MAX_GUEST_MEMORY};
use nacre_verifier::evidence::Endorsements;
use nacre_verifier::{Evidence, EvidenceKind};
use qgs::{QgsAddress, QgsClient};

/// The platform's name.
pub const NAME: &str = "tdx";

/// `tdx` in the platform registry.
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    about: "Intel TDX hardware through upstream KVM (Linux 6.16+; see nacre host-check)",
    image: PlatformKind::Tdx,
    evidence: EvidenceKind::TdxQuote,
    launch: <Tdx as Platform>::launch,
    max_memory: TDX_MAX_GUEST_MEMORY,
    max_memory_why: TDX_MEMORY_LIMIT,
    verifier_roots: None,
    check: check::checks,
};

/// A TD on KVM.
#[derive(Debug)]
pub struct Tdx {
    /// RAM, KVM's MMU, the hostcalls.
    pub guest: HardwareGuest,
    /// The reset page's host side (kept until the VM is gone).
    pub reset: HostPages,
    /// The quote generation service GetQuote goes to, if the host has one.
    pub quoting: Option<Box<dyn QuotingService>>,
    /// GetTdVmCallInfo leaf 1's R11 and R12 bits KVM implements, which the answer
    /// must include (`KVM_TDX_CAPABILITIES`).
    pub kernel_tdvmcall_info: [u64; 2],
    /// GetQuote calls.
    pub get_quotes: u64,
}

impl Tdx {
    fn shared_bit(&self) -> u64 {
        1 << (launch::GPAW - 1)
    }

    /// GetQuote: the buffer KVM names (its GPA without the shared bit) must be
    /// shared RAM; the quote comes from the QGS.
    fn get_quote(&mut self, call: &mut TdxExit<'_>) -> Result<(), RunError> {
        self.get_quotes += 1;
        let (gpa, size) = call.get_quote();
        let quoting = self
            .quoting
            .as_mut()
            .map(|q| &mut **q as &mut dyn QuotingService);
        let status = get_quote::serve(&self.guest.mem, &self.guest.mmu, quoting, gpa, size)?;
        call.set_ret(status);
        Ok(())
    }
}

fn launch_error(source: LaunchError) -> SetupError {
    SetupError::Launch {
        platform: NAME,
        source,
    }
}

impl Platform for Tdx {
    fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError> {
        check_cpus(config.cpus)?;
        check_memory(&REGISTRATION, config.memory, image.min_memory, None)?;
        let paths = HostPaths::system();
        let probe = SystemProbe::new(paths.clone());
        preflight(NAME, check::checks, &probe)?;
        let mem = GuestMemory::new(config.memory)?;
        let mut reset = HostPages::new(1)?;
        let mut ops = KvmTdx::new().map_err(launch_error)?;
        let param = parameter_page(config.memory, config.request, config.cpus);
        let launched = launch::run(&mut ops, &mem, image, &param, &mut reset, config.cpus)
            .map_err(launch_error)?;
        let sink = ops.vm.attribute_sink().map_err(launch_error)?;
        let vcpus = std::mem::take(&mut ops.vcpus);
        let Some(bsp) = vcpus.first() else {
            return Err(launch_error(LaunchError::Image("no vCPU was made".into())));
        };
        let mmu = KvmMmu::new(config.memory / PAGE_SIZE_4K, Box::new(sink));
        let mut guest = HardwareGuest::new(mem, mmu);
        guest.strict_memory = config.strict_memory;
        guest.host.tsc_khz = tsc_khz(bsp);
        guest.host.expect_evidence = config.expects_evidence();
        guest.host.net.configure(&config.net);
        guest.host.net.set_interrupts(MsiSender::new(&ops.vm.vm)?);
        let quoting = match QgsAddress::of_host(&paths) {
            Ok(addr) => Some(Box::new(QgsClient::new(addr)) as Box<dyn QuotingService>),
            Err(why) => {
                if config.expects_evidence() {
                    crate::say!("nacre: warning: no quote generation service: {why}");
                }
                None
            }
        };
        let tdx = Tdx {
            guest,
            reset,
            quoting,
            kernel_tdvmcall_info: [
                launched.caps.kernel_tdvmcallinfo_1_r11,
                launched.caps.kernel_tdvmcallinfo_1_r12,
            ],
            get_quotes: 0,
        };
        Ok(Vm {
            vcpus,
            vm: ops.vm.vm,
            platform: Box::new(tdx),
            extra: Vec::new(),
        })
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn memory(&self) -> &GuestMemory {
        &self.guest.mem
    }

    fn mmu(&self) -> &dyn HypervisorMmu {
        &self.guest.mmu
    }

    fn view_of(&self, gpa: u64) -> (View, u64) {
        let shared = self.shared_bit();
        if gpa & shared != 0 {
            (View::Shared, gpa & !shared)
        } else {
            (View::Private, gpa)
        }
    }

    fn strict_memory(&self) -> bool {
        self.guest.strict_memory
    }

    fn run_counters(&mut self) -> &mut RunCounters {
        &mut self.guest.run
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut all = self.guest.counters();
        all.push(("tdx.get_quotes", self.get_quotes));
        all
    }

    fn hostcalls(&self) -> &HostcallHost {
        &self.guest.host
    }

    fn io_out(
        &mut self,
        _vcpu: &mut dyn crate::vmm::vcpu::Vcpu,
        port: u16,
        data: &[u8],
    ) -> Result<Option<Stop>, RunError> {
        self.guest.io_out(port, data)
    }

    /// `KVM_HC_MAP_GPA_RANGE`: MapGPA, which KVM forwards in chunks of at most 2 MiB
    /// (`arch/x86/kvm/vmx/tdx.c`, `tdx_map_gpa`).
    fn hypercall(
        &mut self,
        nr: u64,
        args: [u64; 6],
        ret: &mut u64,
    ) -> Result<Option<Stop>, RunError> {
        if nr != map_gpa_range::NR {
            return Err(RunError::Guest(format!(
                "hypercall {nr:#x}, which KVM never forwards for a TD"
            )));
        }
        self.guest.map_gpa_range(args, ret)?;
        Ok(None)
    }

    fn memory_fault_exit(
        &mut self,
        gpa: u64,
        size: u64,
        flags: u64,
    ) -> Result<Option<Stop>, RunError> {
        self.guest.memory_fault(gpa, size, flags)
    }

    /// `KVM_SYSTEM_EVENT_TDX_FATAL`: ReportFatalError, with the TD's GPRs; the error
    /// code is R12.
    fn system_event(&mut self, kind: u32, data: &[u64]) -> Result<Option<Stop>, RunError> {
        match (kind, data.get(system_event::TDX_FATAL_R12)) {
            (system_event::TDX_FATAL, Some(&code)) => Ok(Some(Stop::TdFatalError { code })),
            _ => Err(RunError::Guest(format!(
                "the TD raised system event {kind} (data {data:x?})"
            ))),
        }
    }

    /// The TDVMCALLs KVM leaves to user space.
    fn tdvmcall(&mut self, call: &mut TdxExit<'_>) -> Result<Option<Stop>, RunError> {
        match call.nr() {
            tdvmcall::GET_QUOTE => self.get_quote(call)?,
            tdvmcall::GET_TD_VM_CALL_INFO if call.tdvmcall_info_leaf() == 1 => {
                // nacre implements none of the optional sub-functions; KVM's own go
                // with the answer.
                let [r11, r12] = self.kernel_tdvmcall_info;
                call.set_tdvmcall_info([r11, r12, 0, 0]);
                call.set_ret(tdvmcall::SUCCESS);
            }
            tdvmcall::GET_TD_VM_CALL_INFO => call.set_ret(tdvmcall::INVALID_OPERAND),
            // nacre answers GetQuote at once and never notifies.
            _ => call.set_ret(tdvmcall::SUBFUNC_UNSUPPORTED),
        }
        Ok(None)
    }

    /// A TDX quote carries its PCK certificate chain; DCAP collateral comes from
    /// Intel's service or a PCCS, which `nacre verify --collateral` takes.
    fn endorsements(&mut self, evidence: &Evidence) -> Result<Endorsements, String> {
        if evidence.kind() != REGISTRATION.evidence {
            return Err("the guest's evidence is not a TDX quote".into());
        }
        Ok(Endorsements::default())
    }
}
