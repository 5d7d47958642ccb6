//! The emulated hardware of the `emulated-snp` and `emulated-tdx` platforms: what the
//! CPU, the AMD security processor and the TDX module do on real machines, played in
//! software so that the same firmware and images run on any host with `/dev/kvm`.
//!
//! One folder per vendor:
//! - [`snp`]: the reverse map table (RMP) with PVALIDATE, RMPADJUST, RMPUPDATE and
//!   PSMASH; the security processor (launch measurement, secrets page, guest
//!   messages); the AMD-style key hierarchy (ARK, ASK, VCEK, CRL) that signs its
//!   reports.
//! - [`tdx`]: the TDX module (TDCALL leaves, the Secure EPT, the MRTD, the TDREPORT
//!   MAC); the quoting enclave; the Intel-style PCK hierarchy and the DCAP collateral.
//!
//! Exit handlers reach this code only through narrow interfaces (the security
//! processor, the TDX module, the quoting service), which is where the KVM-backed
//! hardware platforms plug in instead. Nothing here is trusted by the verifier:
//! evidence it signs verifies only against roots the verifier is given explicitly.

pub mod snp;
pub mod tdx;

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
