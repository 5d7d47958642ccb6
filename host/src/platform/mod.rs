//! Platform backends. `emulated-snp` and `emulated-tdx` play the SEV-SNP hardware's
//! and the TDX module's part in software on a plain KVM VM (DESIGN.md 3.1); hardware
//! backends come later.

pub mod emulated_snp;
pub mod emulated_sp;
pub mod emulated_tdx;
pub mod hostcall;

use crate::vmm::memory::View;

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

/// A platform's keys, loaded when first needed: loading may mean creating a key
/// hierarchy, which a guest that never attests should not pay for.
pub struct LazyKeys<T> {
    what: &'static str,
    loader: Option<KeyLoader<T>>,
    value: Option<T>,
}

/// Loads a [`LazyKeys`] value, or says why it cannot.
pub type KeyLoader<T> = Box<dyn FnOnce() -> Result<T, String> + Send>;

impl<T> Default for LazyKeys<T> {
    fn default() -> Self {
        Self {
            what: "keys",
            loader: None,
            value: None,
        }
    }
}

impl<T> std::fmt::Debug for LazyKeys<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyKeys")
            .field("what", &self.what)
            .field("loaded", &self.value.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> LazyKeys<T> {
    /// `what` (for messages), which `loader` produces when first needed.
    pub fn new(what: &'static str, loader: KeyLoader<T>) -> Self {
        Self {
            what,
            loader: Some(loader),
            value: None,
        }
    }

    /// The value, loading it now if this is the first use; `None` (and the reason
    /// printed once) if it cannot be loaded.
    pub fn get(&mut self) -> Option<&T> {
        if let Some(load) = self.loader.take() {
            match load() {
                Ok(value) => self.value = Some(value),
                Err(e) => eprintln!("nacre: cannot load {}: {e}", self.what),
            }
        }
        self.value.as_ref()
    }
}
