//! Platforms: the one seam between nacre's generic VMM and the confidential-computing
//! hardware (or its emulation).
//!
//! A platform implements [`Platform`]: it launches a VM from a loaded image (its
//! launch function in the registry), answers the exits only it understands (the
//! doorbells, MSRs, emulation failures), gives the generic memory-fault path its
//! memory and hypervisor MMU, and reports its counters and attestation endorsements.
//! Generic code (the CLI, the vCPU loop, [`crate::exits`]) knows platforms only
//! through this trait and through [`PLATFORMS`], the one place where they are named.
//!
//! Adding a platform means a module here that implements [`Platform`] and a line in
//! [`PLATFORMS`]; nothing generic changes.

pub mod check;
pub mod emulated_snp;
pub mod emulated_tdx;
pub mod hardware;
pub mod hostcall;
pub mod hostile;
pub mod launch;
pub mod net;
pub mod snp;
pub mod snp_state;
pub mod tdx;

use crate::exits::hardware::TdxExit;
use crate::exits::RunError;
use crate::mmu::HypervisorMmu;
use crate::stats::RunCounters;
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use crate::vmm::vcpu::Vcpu;
use hostcall::HostcallHost;
use kvm_ioctls::{VcpuFd, VmFd};
use launch::{LaunchConfig, SetupError};
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::doorbell::Doorbell;
use nacre_verifier::evidence::Endorsements;
use nacre_verifier::Evidence;
use nacre_verifier::{EvidenceKind, TrustAnchors};
use std::path::{Path, PathBuf};

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The app exited with this status.
    AppExit(u8),
    /// The guest asked to be terminated (GHCB termination request).
    GuestTerminated {
        /// Reason set.
        set: u8,
        /// Reason code.
        code: u8,
    },
    /// The host stopped the guest for breaking a memory rule.
    MemoryViolation {
        /// Guest physical address (without the C-bit).
        gpa: u64,
        /// View of the access.
        view: View,
        /// The rule.
        rule: &'static str,
    },
    /// The guest broke the GHCB protocol (or a TDX guest the GHCI) in a way KVM
    /// terminates for.
    ProtocolViolation(String),
    /// The guest sent the attestation evidence the host asked for (`nacre attest`).
    Evidence {
        /// What it is.
        kind: nacre_shared_abi::hostcall::EvidenceKind,
        /// The evidence, as the guest sent it (untrusted until verified).
        bytes: Vec<u8>,
    },
    /// A TD reported a fatal error (TDG.VP.VMCALL ReportFatalError) with this code.
    TdFatalError {
        /// R12 of the call; nacre's firmware puts its reason code in bits 7:0.
        code: u64,
    },
}

/// A confidential-computing platform as the generic VMM uses it: it launches a VM
/// from a loaded image, answers the exits only it understands, resolves memory
/// faults with its memory and hypervisor MMU, and reports its counters.
pub trait Platform: Send + std::fmt::Debug {
    /// Build and launch a VM of `image` on this platform (what [`Registration::launch`]
    /// names).
    fn launch(image: &LoadedImage, config: &LaunchConfig) -> Result<Vm, SetupError>
    where
        Self: Sized;

    /// Called once for every exit of vCPU `vcpu`, before it is handled: what the
    /// emulated platforms emulate only until every vCPU's first exit ends here.
    fn exited(&mut self, vcpu: u32) -> Result<(), RunError> {
        let _ = vcpu;
        Ok(())
    }

    /// The platform's name, as `--platform` takes it.
    fn name(&self) -> &'static str;

    /// Guest RAM.
    fn memory(&self) -> &GuestMemory;

    /// The hypervisor MMU that decides what the guest reaches through each view.
    fn mmu(&self) -> &dyn HypervisorMmu;

    /// The view a guest-physical address (as KVM reports it, with the platform's
    /// C-bit or shared bit) goes through, and the address in guest RAM.
    fn view_of(&self, gpa: u64) -> (View, u64);

    /// Whether an access through the wrong view stops the guest (`--strict-memory`)
    /// instead of converting the page.
    fn strict_memory(&self) -> bool;

    /// A guest access to `gpa` (as KVM reports it, with the view's bit) that found its
    /// view closed. Every platform so far resolves it with the one generic path over
    /// its hypervisor MMU, [`crate::exits::memory::resolve`].
    fn memory_fault(&mut self, gpa: u64) -> Result<Option<Stop>, MemoryError> {
        crate::exits::memory::resolve(self, gpa)
    }

    /// Exits, hostcalls and unsupported syscalls, counted as the run goes.
    fn run_counters(&mut self) -> &mut RunCounters;

    /// The platform's own counters and its MMU's, with their dotted keys.
    fn counters(&self) -> Vec<(&'static str, u64)>;

    /// The host side of the hostcalls (the console, clocks, when the app started).
    fn hostcalls(&self) -> &HostcallHost;

    /// A doorbell of the emulated platforms: the trapping instruction it stands for,
    /// with its operands in `vcpu`'s registers.
    fn doorbell(&mut self, vcpu: &mut dyn Vcpu, bell: Doorbell) -> Result<Option<Stop>, RunError> {
        let _ = vcpu;
        Err(RunError::Guest(format!(
            "{bell} doorbell on {}, which has no doorbells",
            self.name()
        )))
    }

    /// A write to an I/O port that is not a doorbell.
    fn io_out(
        &mut self,
        vcpu: &mut dyn Vcpu,
        port: u16,
        data: &[u8],
    ) -> Result<Option<Stop>, RunError> {
        let _ = (vcpu, data);
        Err(RunError::Guest(format!(
            "write to unknown I/O port {port:#x}"
        )))
    }

    /// RDMSR of an MSR KVM hands to user space on vCPU `vcpu`: its value, or `None`
    /// to inject #GP.
    fn rdmsr(&mut self, vcpu: u32, index: u32) -> Option<u64> {
        let _ = (vcpu, index);
        None
    }

    /// WRMSR of an MSR KVM hands to user space: `false` to inject #GP.
    fn wrmsr(&mut self, vcpu: u32, index: u32, value: u64) -> bool {
        let _ = (vcpu, index, value);
        false
    }

    /// `KVM_EXIT_HYPERCALL`: a hypercall KVM hands to user space (on the hardware
    /// platforms `KVM_HC_MAP_GPA_RANGE`, a page-state change or MapGPA). `ret` is what
    /// KVM gives the guest back.
    fn hypercall(
        &mut self,
        nr: u64,
        args: [u64; 6],
        ret: &mut u64,
    ) -> Result<Option<Stop>, RunError> {
        let _ = (args, ret);
        Err(RunError::Guest(format!(
            "hypercall {nr:#x}, which this platform does not take"
        )))
    }

    /// `KVM_EXIT_MEMORY_FAULT`: a guest access whose kind (private or shared, in
    /// `flags`) disagrees with the attribute of the memory at `gpa`.
    fn memory_fault_exit(
        &mut self,
        gpa: u64,
        size: u64,
        flags: u64,
    ) -> Result<Option<Stop>, RunError> {
        Err(RunError::Guest(format!(
            "memory fault exit at GPA {gpa:#x} (size {size:#x}, flags {flags:#x}) on a \
             platform without guest_memfd"
        )))
    }

    /// `KVM_EXIT_SYSTEM_EVENT` of type `kind` with `data`.
    fn system_event(&mut self, kind: u32, data: &[u64]) -> Result<Option<Stop>, RunError> {
        Err(RunError::Guest(format!(
            "the guest raised system event {kind} (data {data:x?}), which this platform \
             does not expect"
        )))
    }

    /// `KVM_EXIT_TDX`: a TDG.VP.VMCALL KVM hands to user space.
    fn tdvmcall(&mut self, call: &mut TdxExit<'_>) -> Result<Option<Stop>, RunError> {
        Err(RunError::Guest(format!(
            "TDG.VP.VMCALL exit {:#x} on a platform that is not a TD",
            call.nr()
        )))
    }

    /// KVM could not emulate a guest instruction: `Ok(true)` if the platform dealt
    /// with it and the guest may resume.
    fn emulation_failure(&mut self, vcpu: &mut dyn Vcpu) -> Result<bool, RunError> {
        let _ = vcpu;
        Ok(false)
    }

    /// What a verifier needs besides `evidence`, which this platform's guest sent
    /// (`nacre attest`): certificates, revocation lists, collateral.
    fn endorsements(&mut self, evidence: &Evidence) -> Result<Endorsements, String>;
}

/// A VM ready to run: its KVM objects and the platform that serves it.
#[derive(Debug)]
pub struct Vm {
    /// Its vCPUs, vCPU `i` (KVM id and x2APIC id `i`) at index `i`: the boot processor
    /// first. Never empty.
    pub vcpus: Vec<VcpuFd>,
    /// Keeps the VM alive (dropped before the memory it maps: field order).
    pub vm: VmFd,
    /// The platform, which owns guest RAM.
    pub platform: Box<dyn Platform>,
    /// Host memory mapped into the VM outside guest RAM (the TDX reset page), kept
    /// until the VM is gone.
    pub extra: Vec<launch::HostPage>,
}

/// A platform as the command line names it, and how to launch it.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// `--platform NAME`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The part of an image this platform boots.
    pub image: PlatformKind,
    /// The evidence its guests produce.
    pub evidence: EvidenceKind,
    /// Launch a VM of `image`, or say why this platform cannot.
    pub launch: fn(&LoadedImage, &LaunchConfig) -> Result<Vm, SetupError>,
    /// The most guest RAM the platform boots, in bytes (`nacre run --memory`).
    pub max_memory: u64,
    /// Why it boots no more, for the message that refuses more.
    pub max_memory_why: &'static str,
    /// For a platform that signs its evidence under roots of its own (the emulated
    /// ones): add to a verifier's anchors what recognizes `evidence` as its, and, given
    /// the emulated keys' base directory (`--allow-emulated`), its roots. `None`:
    /// the vendor's built-in roots decide.
    pub verifier_roots: Option<VerifierRoots>,
    /// What this host needs for the platform, checked cheapest first (`nacre
    /// host-check`).
    pub check: check::CheckFn,
}

/// See [`Registration::verifier_roots`].
pub type VerifierRoots = fn(TrustAnchors, &Evidence, Option<&Path>) -> Result<TrustAnchors, String>;

/// The anchors a verifier of `evidence` uses: `roots`, with every registered
/// platform's recognition of its own evidence, and with `keys` (the emulated keys'
/// base directory) their roots too.
pub fn verifier_roots(
    roots: TrustAnchors,
    evidence: &Evidence,
    keys: Option<&Path>,
) -> Result<TrustAnchors, String> {
    PLATFORMS
        .iter()
        .filter_map(|p| p.verifier_roots)
        .try_fold(roots, |roots, add| add(roots, evidence, keys))
}

/// Where the emulated platforms keep their keys unless told otherwise:
/// `$NACRE_EMULATED_KEYS`, else `$XDG_DATA_HOME/nacre/emulated-keys`, else
/// `~/.local/share/nacre/emulated-keys`.
pub fn emulated_keys_dir() -> Result<PathBuf, String> {
    crate::emulated::snp::keys::base_dir().map_err(|e| e.to_string())
}

/// Every platform nacre knows, the default first.
pub static PLATFORMS: &[Registration] = &[
    emulated_snp::REGISTRATION,
    emulated_tdx::REGISTRATION,
    snp::REGISTRATION,
    tdx::REGISTRATION,
];

/// The platform called `name`.
pub fn by_name(name: &str) -> Option<&'static Registration> {
    PLATFORMS.iter().find(|p| p.name == name)
}

/// The image part whose guests produce evidence of `kind`.
pub fn image_kind_of(kind: EvidenceKind) -> Option<PlatformKind> {
    PLATFORMS
        .iter()
        .find(|p| p.evidence == kind)
        .map(|p| p.image)
}

/// Parse `--platform`, naming the platforms there are when `name` is none of them.
pub fn parse(name: &str) -> Result<&'static Registration, String> {
    by_name(name).ok_or_else(|| {
        let names: Vec<_> = PLATFORMS.iter().map(|p| p.name).collect();
        format!(
            "unknown platform {name:?}; the platforms are {}",
            names.join(", ")
        )
    })
}

/// The default platform.
pub fn default_platform() -> &'static Registration {
    &PLATFORMS[0]
}
