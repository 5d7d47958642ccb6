//! The `emulated-tdx` platform: TDX semantics on a plain KVM VM. The host plays the
//! TDX module (its Secure EPT, the MRTD, TDREPORTs: [`crate::emulated::tdx`]) and
//! KVM's TDX support (TDG.VP.VMCALL: [`crate::exits::tdx`]); the TD's private and
//! shared views of RAM are the two mappings of one memfd, the shared one at the shared
//! bit, which the host MMU opens and closes page by page.

mod launch;
#[cfg(test)]
mod tests;

use crate::emulated::tdx::keys::{self, EmulatedTdxKeys, KeysError};
use crate::emulated::tdx::module::EmulatedTdxModule;
use crate::emulated::tdx::quoting::EmulatedQuotingService;
use crate::emulated::tdx::sept::SeptState;
use crate::exits::tdx::{self, TdxContext, TdxCounters};
use crate::exits::RunError;
use crate::mmu::tdp::Level;
use crate::mmu::tdx::TdxMmu;
use crate::mmu::HypervisorMmu;
use crate::platform::check::{self, Check, Checks, HostProbe, Need};
use crate::platform::hostcall::HostcallHost;
use crate::platform::hostile::Lies;
use crate::platform::launch::{LaunchConfig, SetupError, TDX_MEMORY_LIMIT};
use crate::platform::{Platform, Registration, Stop, Vm};
use crate::stats::{Counters, RunCounters};
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use crate::vmm::vcpu::Vcpu;
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::doorbell::Doorbell;
use nacre_shared_abi::layout::{PAGE_SIZE_4K, TDX_MAX_GUEST_MEMORY};
use nacre_verifier::evidence::Endorsements;
use nacre_verifier::Evidence;
use nacre_verifier::{EvidenceKind, TrustAnchors};
use std::path::Path;
use std::time::SystemTime;

/// `emulated-tdx` in the platform registry.
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    about: "TDX semantics (a software TDX module, S-EPT and TDCALLs) on a plain KVM VM",
    image: PlatformKind::Tdx,
    evidence: EvidenceKind::TdxQuote,
    launch: <EmulatedTdx as Platform>::launch,
    max_memory: TDX_MAX_GUEST_MEMORY,
    max_memory_why: TDX_MEMORY_LIMIT,
    verifier_roots: Some(verifier_roots),
    check,
};

/// What this host needs for `emulated-tdx`: a usable KVM that makes default VMs.
fn check(host: &dyn HostProbe) -> Vec<Check> {
    let mut checks = Checks::new();
    match check::kvm_usable(host, &mut checks) {
        Some(kvm) => {
            check::vm_type(&*kvm, &mut checks, 0, "default");
        }
        None => checks.skip("VM type default", Need::Run, "KVM is not usable"),
    }
    checks.into_vec()
}

/// A verifier recognizes this platform's evidence by the organization its
/// certificates name; with the emulated keys' base directory `keys`, it trusts their
/// root too.
fn verifier_roots(
    roots: TrustAnchors,
    evidence: &Evidence,
    keys: Option<&Path>,
) -> Result<TrustAnchors, String> {
    if evidence.kind() != REGISTRATION.evidence {
        return Ok(roots);
    }
    let dir = keys.map(|k| k.join(keys::TDX_FOLDER));
    let root = keys::verifier_root(dir.as_deref()).map_err(|e| e.to_string())?;
    Ok(roots.recognize_tdx(root))
}

/// The platform's name.
pub const NAME: &str = "emulated-tdx";

/// State of the emulated TDX platform for one VM.
#[derive(Debug)]
pub struct EmulatedTdx {
    /// The console, clocks and sockets the hostcalls serve (and when the firmware
    /// entered the app). Declared first: its readiness thread holds a copy of the VM's
    /// fd, closed before the memory the VM maps.
    pub host: HostcallHost,
    /// Guest RAM.
    pub mem: GuestMemory,
    /// Attributes, shared TDP, mirror table and S-EPT.
    pub mmu: TdxMmu,
    /// The TDX module of this TD.
    pub module: EmulatedTdxModule,
    /// The quoting service GetQuote reaches, once the launch made it.
    pub quoting: Option<EmulatedQuotingService>,
    /// `--strict-memory`.
    pub strict_memory: bool,
    /// Exits, hostcalls.
    pub run: RunCounters,
    /// MapGPA, TDG.MR.REPORT and GetQuote counts.
    pub counters: TdxCounters,
    /// Test hook (`NACRE_TEST_MAP_GPA_PAGES`): convert at most this many pages per
    /// MapGPA call before answering RETRY.
    pub map_gpa_budget: Option<u64>,
    /// The lie a hostile-host test asked for (`NACRE_TEST_HOSTILE`), if any.
    pub lies: Lies,
    /// The page the `remapped-page` hostile-host test takes back once the guest
    /// accepted it.
    pub remap: Option<u64>,
}

impl EmulatedTdx {
    /// Platform state over `mem` with `module`: every page private by attribute and
    /// not in the S-EPT.
    pub fn new(mem: GuestMemory, module: EmulatedTdxModule) -> Self {
        let pages = mem.size() / PAGE_SIZE_4K;
        Self {
            mem,
            mmu: TdxMmu::new(pages, Level::L1G),
            module,
            quoting: None,
            strict_memory: false,
            run: RunCounters::default(),
            counters: TdxCounters::default(),
            map_gpa_budget: None,
            host: HostcallHost::default(),
            lies: Lies::default(),
            remap: None,
        }
    }

    /// The shared bit as a GPA mask.
    pub fn shared_bit(&self) -> u64 {
        1 << (self.module.gpaw - 1)
    }

    /// The exit handlers' view of this platform.
    pub fn context(&mut self) -> TdxContext<'_> {
        TdxContext {
            mem: &self.mem,
            mmu: &self.mmu,
            gpaw: self.module.gpaw,
            module: &mut self.module,
            quoting: self
                .quoting
                .as_mut()
                .map(|q| q as &mut dyn tdx::get_quote::QuotingService),
            counters: &mut self.counters,
            run: &mut self.run,
            host: &mut self.host,
            strict_memory: self.strict_memory,
            map_gpa_budget: self.map_gpa_budget,
            lies: &mut self.lies,
        }
    }

    /// The `remapped-page` hostile-host test: once the guest accepted the page it
    /// names, take that page back (BLOCK, REMOVE, its contents discarded), so that
    /// the guest's next private access faults in a fresh PENDING page it never
    /// accepted, as a host that removes and re-adds a page would.
    fn remap_once_accepted(&mut self) -> Result<(), MemoryError> {
        let Some(gfn) = self.remap else {
            return Ok(());
        };
        if matches!(self.mmu.sept_leaf(gfn), Some((_, SeptState::Mapped))) {
            self.remap = None;
            self.mmu.reclaim(&self.mem, gfn, 1)?;
        }
        Ok(())
    }

    /// TDH.MEM.PAGE.ADD of a launch page (its contents already in RAM), and
    /// TDH.MR.EXTEND over it when `measure`.
    pub fn add_page(&mut self, gpa: u64, measure: bool) -> Result<(), String> {
        self.module.add_page(&self.mem, &self.mmu, gpa, measure)
    }
}

impl Platform for EmulatedTdx {
    fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError> {
        launch::launch(image, config)
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    fn mmu(&self) -> &dyn HypervisorMmu {
        &self.mmu
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
        self.strict_memory
    }

    fn run_counters(&mut self) -> &mut RunCounters {
        &mut self.run
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut all = self.mmu.counters();
        all.extend(self.counters.entries());
        all
    }

    fn hostcalls(&self) -> &HostcallHost {
        &self.host
    }

    fn doorbell(&mut self, vcpu: &mut dyn Vcpu, bell: Doorbell) -> Result<Option<Stop>, RunError> {
        let stop = tdx::doorbell(&mut self.context(), vcpu, bell)?;
        self.remap_once_accepted()?;
        Ok(stop)
    }

    /// TDCALL outside a TD raises #UD, which the firmware's handler forwards to the
    /// doorbell; where KVM cannot emulate TDCALL it exits instead, and the #UD is
    /// injected here.
    fn emulation_failure(&mut self, vcpu: &mut dyn Vcpu) -> Result<bool, RunError> {
        let injected = tdx::tdcall::undefined_opcode(&self.mem, self.shared_bit(), vcpu)?;
        if injected {
            self.run.exit("tdcall-ud");
        }
        Ok(injected)
    }

    /// DCAP collateral issued now by the emulated platform's keys (the ones that
    /// quoted). A key directory made before nacre made collateral gives none, with a
    /// warning: the evidence then verifies without a TCB status.
    fn endorsements(&mut self, evidence: &Evidence) -> Result<Endorsements, String> {
        if evidence.kind() != REGISTRATION.evidence {
            return Err("the guest's evidence is not a TDX quote".into());
        }
        let dir = keys::default_dir().map_err(|e| e.to_string())?;
        let keys = EmulatedTdxKeys::load(&dir)
            .map_err(|e| format!("the emulated TDX keys in {}: {e}", dir.display()))?;
        let collateral = match keys.collateral(SystemTime::now()) {
            Ok(collateral) => Some(collateral),
            Err(e @ KeysError::NoCollateral(_)) => {
                crate::say!("nacre attest: warning: the evidence has no collateral: {e}");
                None
            }
            Err(e) => return Err(format!("cannot make the emulated collateral: {e}")),
        };
        Ok(Endorsements {
            collateral,
            ..Endorsements::default()
        })
    }
}
