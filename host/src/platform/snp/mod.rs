//! The `snp` platform: AMD SEV-SNP hardware through upstream KVM (Linux 6.11 and
//! later). KVM and the security processor do what `emulated-snp` plays in software:
//! the GHCB protocol, page-state changes (which reach nacre as
//! `KVM_HC_MAP_GPA_RANGE`), guest requests (attestation reports, answered by the
//! firmware inside KVM), PVALIDATE (the CPU). nacre launches the guest
//! ([`launch`], docs/kvm-uapi.md 3), keeps the memory attributes
//! ([`crate::platform::hardware::mmu::KvmMmu`]), serves the hostcalls and hands the
//! verifier the certificates of the report ([`certs`]).

pub mod certs;
pub mod check;
pub mod launch;
#[cfg(test)]
mod tests;

use crate::exits::RunError;
use crate::mmu::HypervisorMmu;
use crate::platform::check::{preflight, HostPaths, HostProbe};
use crate::platform::hardware::launch::LaunchError;
use crate::platform::hardware::mmu::KvmMmu;
use crate::platform::hardware::probe::SystemProbe;
use crate::platform::hardware::HardwareGuest;
use crate::platform::hostcall::HostcallHost;
use crate::platform::launch::{
    check_cpus, parameter_page, tsc_khz, LaunchConfig, MsiSender, SetupError, SNP_MEMORY_LIMIT,
};
use crate::platform::{Platform, Registration, Stop, Vm};
use crate::stats::RunCounters;
use crate::vmm::memory::{GuestMemory, View};
use crate::vmm::uapi::{map_gpa_range, system_event};
use launch::{KvmSnp, SnpHost};
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::layout::{MAX_GUEST_MEMORY, PAGE_SIZE_4K};
use nacre_shared_abi::snp::msr_protocol::MsrRequest;
use nacre_verifier::evidence::Endorsements;
use nacre_verifier::{Evidence, EvidenceKind};
use std::path::PathBuf;

/// The platform's name.
pub const NAME: &str = "snp";

/// `snp` in the platform registry.
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    about: "AMD SEV-SNP hardware through upstream KVM (Linux 6.11+; see nacre host-check)",
    image: PlatformKind::Snp,
    evidence: EvidenceKind::SnpReport,
    launch: <Snp as Platform>::launch,
    max_memory: MAX_GUEST_MEMORY,
    max_memory_why: SNP_MEMORY_LIMIT,
    verifier_roots: None,
    check: check::checks,
};

/// An SEV-SNP guest on KVM.
#[derive(Debug)]
pub struct Snp {
    /// RAM, KVM's MMU, the hostcalls.
    pub guest: HardwareGuest,
    /// The C-bit position.
    pub c_bit: u8,
    /// Where the report's certificates are (`nacre attest --snp-certs`).
    pub certs: Option<PathBuf>,
}

impl Snp {
    fn c_bit_mask(&self) -> u64 {
        1 << self.c_bit
    }
}

fn launch_error(source: LaunchError) -> SetupError {
    SetupError::Launch {
        platform: NAME,
        source,
    }
}

impl Platform for Snp {
    fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError> {
        check_cpus(config.cpus)?;
        let probe = SystemProbe::new(HostPaths::system());
        preflight(NAME, check::checks, &probe)?;
        let host = SnpHost {
            c_bit: check::c_bit(&probe).unwrap_or(0),
            sev_leaf: probe.cpuid(0x8000_001F, 0),
        };
        let mem = GuestMemory::new(config.memory)?;
        let mut ops = KvmSnp::new().map_err(launch_error)?;
        let param = parameter_page(config.memory, config.request, config.cpus);
        launch::run(&mut ops, &mem, image, &param, host, config.cpus).map_err(launch_error)?;
        let sink = ops.vm.attribute_sink().map_err(launch_error)?;
        let vcpus = std::mem::take(&mut ops.vcpus);
        let Some(bsp) = vcpus.first() else {
            return Err(launch_error(LaunchError::Image("no vCPU was made".into())));
        };
        let mut guest = HardwareGuest::new(
            mem,
            KvmMmu::new(config.memory / PAGE_SIZE_4K, Box::new(sink)),
        );
        guest.strict_memory = config.strict_memory;
        guest.host.tsc_khz = tsc_khz(bsp);
        guest.host.expect_evidence = config.expects_evidence();
        guest.host.net.configure(&config.net);
        guest.host.net.set_interrupts(MsiSender::new(&ops.vm.vm)?);
        let snp = Snp {
            guest,
            c_bit: host.c_bit,
            certs: config.endorsements.clone(),
        };
        Ok(Vm {
            vcpus,
            vm: ops.vm.vm,
            platform: Box::new(snp),
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
        let c = self.c_bit_mask();
        if gpa & c != 0 {
            (View::Private, gpa & !c)
        } else {
            (View::Shared, gpa)
        }
    }

    fn strict_memory(&self) -> bool {
        self.guest.strict_memory
    }

    fn run_counters(&mut self) -> &mut RunCounters {
        &mut self.guest.run
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.guest.counters()
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

    /// `KVM_HC_MAP_GPA_RANGE`: a page-state change KVM forwards (GHCB MSR protocol or
    /// PSC event, `arch/x86/kvm/svm/sev.c`, `snp_begin_psc`).
    fn hypercall(
        &mut self,
        nr: u64,
        args: [u64; 6],
        ret: &mut u64,
    ) -> Result<Option<Stop>, RunError> {
        if nr != map_gpa_range::NR {
            return Err(RunError::Guest(format!(
                "hypercall {nr:#x}, which KVM never forwards for an SEV-SNP guest"
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

    /// `KVM_SYSTEM_EVENT_SEV_TERM`: the guest's termination request, whose GHCB MSR
    /// value KVM passes in `data[0]` (through the GHCB page, KVM passes the page's GPA
    /// instead, and the reason is unknown).
    fn system_event(&mut self, kind: u32, data: &[u64]) -> Result<Option<Stop>, RunError> {
        if kind != system_event::SEV_TERM {
            return Err(RunError::Guest(format!(
                "the guest raised system event {kind} (data {data:x?})"
            )));
        }
        Ok(Some(match data.first().map(|&v| MsrRequest::decode(v)) {
            Some(Ok(MsrRequest::Terminate { set, code })) => Stop::GuestTerminated { set, code },
            _ => Stop::ProtocolViolation(format!(
                "the guest asked to be terminated without a reason KVM passes on (data {data:x?})"
            )),
        }))
    }

    /// The VCEK, ASK and ARK (and the ARK's CRL) from the certificate directory.
    fn endorsements(&mut self, evidence: &Evidence) -> Result<Endorsements, String> {
        if evidence.kind() != REGISTRATION.evidence {
            return Err("the guest's evidence is not an SEV-SNP attestation report".into());
        }
        let dir = self
            .certs
            .clone()
            .or_else(certs::default_dir)
            .ok_or("no certificate directory: pass --snp-certs DIR")?;
        certs::endorsements(&dir)
    }
}
