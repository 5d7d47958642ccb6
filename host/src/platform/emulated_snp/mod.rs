//! The `emulated-snp` platform: SEV-SNP semantics on a plain KVM VM. The host plays
//! the hardware (the software RMP, the security processor: [`crate::emulated::snp`])
//! and KVM's SNP support (the GHCB protocol: [`crate::exits::snp`]); the guest's
//! private and shared views of RAM are the two mappings of one memfd, which the host
//! MMU opens and closes page by page (docs/design.md, "Two views of guest RAM").

mod launch;
#[cfg(test)]
mod tests;

use crate::emulated::snp::keys::{self, EmulatedSnpKeys};
use crate::emulated::snp::sp::EmulatedSecurityProcessor;
use crate::exits::snp::{self, GhcbState, SnpContext, SnpCounters};
use crate::exits::RunError;
use crate::mmu::snp::SnpMmu;
use crate::mmu::tdp::Level;
use crate::mmu::HypervisorMmu;
use crate::platform::check::{self, Check, Checks, HostProbe, Need};
use crate::platform::hostcall::HostcallHost;
use crate::platform::hostile::Lies;
use crate::platform::launch::{LaunchConfig, SetupError, SNP_MEMORY_LIMIT};
use crate::platform::{Platform, Registration, Stop, Vm};
use crate::stats::{Counters, RunCounters};
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use crate::vmm::uapi::cap;
use crate::vmm::vcpu::Vcpu;
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::doorbell::Doorbell;
use nacre_shared_abi::layout::{EMULATED_SNP_C_BIT, MAX_GUEST_MEMORY, PAGE_SIZE_4K};
use nacre_verifier::evidence::Endorsements;
use nacre_verifier::Evidence;
use nacre_verifier::{EvidenceKind, TrustAnchors};
use std::path::Path;
use std::time::SystemTime;

/// `emulated-snp` in the platform registry.
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    about: "SEV-SNP semantics enforced in software on a plain KVM VM (the default)",
    image: PlatformKind::Snp,
    evidence: EvidenceKind::SnpReport,
    launch: <EmulatedSnp as Platform>::launch,
    max_memory: MAX_GUEST_MEMORY,
    max_memory_why: SNP_MEMORY_LIMIT,
    verifier_roots: Some(verifier_roots),
    check,
};

/// What this host needs for `emulated-snp`: a usable KVM that makes default VMs and
/// hands the GHCB MSR and SEV_STATUS to user space (MSR exits and an MSR filter).
fn check(host: &dyn HostProbe) -> Vec<Check> {
    let mut checks = Checks::new();
    match check::kvm_usable(host, &mut checks) {
        Some(kvm) => {
            check::vm_type(&*kvm, &mut checks, 0, "default");
            check::capability(&*kvm, &mut checks, cap::X86_USER_SPACE_MSR, "MSR exits", 0);
            check::capability(&*kvm, &mut checks, cap::X86_MSR_FILTER, "MSR filter", 0);
        }
        None => check::skip_all(
            &mut checks,
            &[
                ("VM type default", Need::Run),
                ("MSR exits", Need::Run),
                ("MSR filter", Need::Run),
            ],
            "KVM is not usable",
        ),
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
    let dir = keys.map(|k| k.join(keys::SNP_FOLDER));
    let root = keys::verifier_root(dir.as_deref()).map_err(|e| e.to_string())?;
    Ok(roots.recognize_snp(root))
}

/// The platform's name.
pub const NAME: &str = "emulated-snp";

/// State of the emulated SNP platform for one VM.
#[derive(Debug)]
pub struct EmulatedSnp {
    /// The console, clocks and sockets the hostcalls serve (and when the firmware
    /// entered the app). Declared first: its readiness thread holds a copy of the VM's
    /// fd, closed before the memory the VM maps.
    pub host: HostcallHost,
    /// Guest RAM.
    pub mem: GuestMemory,
    /// The host MMU: attributes, TDP (realized as the views' protection) and RMP.
    pub mmu: SnpMmu,
    /// The C-bit position the platform reports (CPUID 0x8000_001F EBX bits 5:0); the
    /// private view is mapped at this bit.
    pub c_bit: u8,
    /// `--strict-memory`: an access through the wrong view stops the guest instead of
    /// converting the page.
    pub strict_memory: bool,
    /// Each vCPU's GHCB MSR and registered GHCB, at the vCPU's index (the hardware
    /// keeps the GHCB MSR per vCPU, and the GHCB specification has each vCPU register
    /// a GHCB of its own).
    pub ghcb: Vec<GhcbState>,
    /// Exits, hostcalls.
    pub run: RunCounters,
    /// Page-state changes, validations, guest requests.
    pub counters: SnpCounters,
    /// Test hook: finish at most this many PSC entries per call.
    pub psc_budget: Option<usize>,
    /// The emulated security processor, once the launch made it.
    pub sp: Option<EmulatedSecurityProcessor>,
    /// The lie a hostile-host test asked for (`NACRE_TEST_HOSTILE`), if any.
    pub lies: Lies,
    /// The page the `remapped-page` hostile-host test takes back once the guest
    /// validated it.
    pub remap: Option<u64>,
    /// The launch pages whose shared view is open until every vCPU's first exit, as
    /// (GPA, length) ranges (`launch.rs`: the entry code runs with paging off).
    boot_window: Vec<(u64, u64)>,
    /// Which vCPUs have made their first exit, at the vCPU's index: the boot window
    /// closes once all have.
    first_exits: Vec<bool>,
}

impl EmulatedSnp {
    /// Platform state over `mem` for one vCPU, every page hypervisor-owned.
    pub fn new(mem: GuestMemory) -> Self {
        let pages = mem.size() / PAGE_SIZE_4K;
        Self {
            mem,
            // The memfd views are single mappings of the whole of RAM, so any aligned
            // range inside RAM is backed contiguously: the backing allows 1 GiB.
            mmu: SnpMmu::new(pages, Level::L1G),
            c_bit: EMULATED_SNP_C_BIT as u8,
            strict_memory: false,
            ghcb: vec![GhcbState::default()],
            run: RunCounters::default(),
            counters: SnpCounters::default(),
            psc_budget: None,
            host: HostcallHost::default(),
            sp: None,
            lies: Lies::default(),
            remap: None,
            boot_window: Vec::new(),
            first_exits: vec![false],
        }
    }

    /// Serve `cpus` vCPUs (indices `0..cpus`; at least one), none of which has run
    /// yet: a GHCB state each, and a boot window that waits for each one's first exit.
    pub fn set_cpus(&mut self, cpus: u32) {
        let n = cpus.max(1) as usize;
        self.ghcb = vec![GhcbState::default(); n];
        self.first_exits = vec![false; n];
    }

    /// Open the shared view of `ranges` (clipped to RAM) until
    /// [`close_boot_window`](Self::close_boot_window).
    pub fn open_boot_window(
        &mut self,
        ranges: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<(), MemoryError> {
        for (gpa, len) in ranges {
            let len = len.min(self.mem.size().saturating_sub(gpa));
            if len > 0 {
                self.mem.protect(View::Shared, gpa, len, true)?;
                self.boot_window.push((gpa, len));
            }
        }
        Ok(())
    }

    /// Close what [`open_boot_window`](Self::open_boot_window) opened: from now on an
    /// access to those pages without the C-bit is a shared access like any other.
    /// [`Platform::exited`] calls this once every vCPU has made its first exit.
    pub fn close_boot_window(&mut self) -> Result<(), MemoryError> {
        for (gpa, len) in std::mem::take(&mut self.boot_window) {
            self.mem.protect(View::Shared, gpa, len, false)?;
        }
        Ok(())
    }

    /// Whether the boot window is open.
    pub fn boot_window_open(&self) -> bool {
        !self.boot_window.is_empty()
    }

    /// The C-bit as a GPA mask.
    pub fn c_bit_mask(&self) -> u64 {
        1 << self.c_bit
    }

    /// The exit handlers' view of this platform for an exit of vCPU `vcpu`, or `None`
    /// for a vCPU it does not serve.
    pub fn context(&mut self, vcpu: u32) -> Option<SnpContext<'_>> {
        Some(SnpContext {
            mem: &self.mem,
            mmu: &self.mmu,
            ghcb: self.ghcb.get_mut(vcpu as usize)?,
            counters: &mut self.counters,
            run: &mut self.run,
            host: &mut self.host,
            sp: self
                .sp
                .as_mut()
                .map(|sp| sp as &mut dyn snp::guest_request::SecurityProcessor),
            psc_budget: self.psc_budget,
            strict_memory: self.strict_memory,
            c_bit: self.c_bit,
            lies: &mut self.lies,
        })
    }

    /// The `remapped-page` hostile-host test: once the guest validated the page it
    /// names, take that page back (RMPUPDATE to the hypervisor, its contents
    /// discarded), so that the guest's next private access faults in a fresh page it
    /// never validated, as a host that removes and re-adds a page would.
    fn remap_once_validated(&mut self) -> Result<(), MemoryError> {
        let Some(gfn) = self.remap else {
            return Ok(());
        };
        if self.mmu.rmp_entry(gfn).is_some_and(|e| e.validated) {
            self.remap = None;
            self.mmu.reclaim(&self.mem, gfn, 1)?;
        }
        Ok(())
    }

    /// Mark a measured launch page: assigned and validated at 4 KiB.
    pub fn launch_page(&mut self, gpa: u64) -> Result<(), nacre_shared_abi::snp::rmp::RmpError> {
        self.mmu.launch_page(gpa / PAGE_SIZE_4K)
    }
}

impl Platform for EmulatedSnp {
    fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError> {
        launch::launch(image, config)
    }

    fn name(&self) -> &'static str {
        NAME
    }

    /// The boot window closes at the exit that is the last vCPU's first (module
    /// documentation of `launch.rs`).
    fn exited(&mut self, vcpu: u32) -> Result<(), RunError> {
        if self.boot_window_open() {
            let Some(first) = self.first_exits.get_mut(vcpu as usize) else {
                return Err(RunError::Host(
                    "an exit of a vCPU the platform does not serve",
                ));
            };
            *first = true;
            if self.first_exits.iter().all(|&exited| exited) {
                self.close_boot_window().map_err(|e| {
                    RunError::Guest(format!("the boot window could not be closed: {e}"))
                })?;
            }
        }
        Ok(())
    }

    fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    fn mmu(&self) -> &dyn HypervisorMmu {
        &self.mmu
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
        self.strict_memory
    }

    fn run_counters(&mut self) -> &mut RunCounters {
        &mut self.run
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut all = self.counters.entries();
        all.extend(self.mmu.counters());
        all
    }

    fn hostcalls(&self) -> &HostcallHost {
        &self.host
    }

    fn doorbell(&mut self, vcpu: &mut dyn Vcpu, bell: Doorbell) -> Result<Option<Stop>, RunError> {
        let Some(mut ctx) = self.context(vcpu.index()) else {
            return Err(RunError::Host(
                "a doorbell of a vCPU the platform does not serve",
            ));
        };
        let stop = snp::doorbell(&mut ctx, vcpu, bell)?;
        self.remap_once_validated()?;
        Ok(stop)
    }

    /// SEV_STATUS, or vCPU `vcpu`'s GHCB MSR.
    fn rdmsr(&mut self, vcpu: u32, index: u32) -> Option<u64> {
        snp::rdmsr(self.ghcb.get(vcpu as usize)?, index)
    }

    /// vCPU `vcpu`'s GHCB MSR.
    fn wrmsr(&mut self, vcpu: u32, index: u32, value: u64) -> bool {
        self.ghcb
            .get_mut(vcpu as usize)
            .is_some_and(|ghcb| snp::wrmsr(ghcb, index, value))
    }

    /// The VCEK, the ASK and ARK, and a CRL of the ARK issued now, from the emulated
    /// key hierarchy that signed the report.
    fn endorsements(&mut self, evidence: &Evidence) -> Result<Endorsements, String> {
        if evidence.kind() != REGISTRATION.evidence {
            return Err("the guest's evidence is not an SEV-SNP attestation report".into());
        }
        let dir = keys::default_dir().map_err(|e| e.to_string())?;
        let keys = EmulatedSnpKeys::load_or_create(&dir)
            .map_err(|e| format!("the emulated keys in {}: {e}", dir.display()))?;
        let crl = keys
            .crl(SystemTime::now())
            .map_err(|e| format!("cannot make the emulated ARK's CRL: {e}"))?;
        Ok(Endorsements {
            vcek: Some(keys.vcek_pem()),
            cert_chain: Some(keys.cert_chain_pem()),
            crl: Some(crl.pem()),
            collateral: None,
        })
    }
}
