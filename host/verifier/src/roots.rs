//! The roots of trust a verdict rests on: AMD's root and SEV signing keys (ARK and
//! ASK) per SEV-SNP product, and Intel's SGX Root CA for TDX quotes.
//!
//! The built-in set holds the public certificates AMD and Intel publish. Callers may
//! build other sets with [`TrustAnchors::new`].
//!
//! Roots that stand in for the vendors' (the emulated platforms', made per host) reach
//! a verification only as [`EmulatedRoot`]s its caller gives: recognized by the
//! organization their certificates name, refused with the caller's message unless
//! the caller also gives the root itself, and even then marked emulated, never
//! hardware. The verifier knows nothing else about them.

use nacre_shared_abi::snp::report::SnpProduct;
use thiserror::Error;

use super::x509::{Cert, X509Error};

/// Intel SGX Root CA, the root of every PCK certificate chain (SGX and TDX).
///
/// Source: the certificate Intel publishes as its SGX provisioning certification
/// root (certificates.trustedservices.intel.com), byte for byte the root that ends
/// the PCK chain in Intel's production quotes and the one `dcap-qvl` 0.7.1 embeds.
/// Its SubjectPublicKeyInfo has SHA-256
/// `a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e` (docs/specs.md 6.6).
pub const INTEL_SGX_ROOT_CA_PEM: &str = include_str!("roots/intel_sgx_root_ca.pem");

/// SHA-256 of the Intel SGX Root CA's SubjectPublicKeyInfo (docs/specs.md 6.6).
pub const INTEL_SGX_ROOT_CA_SPKI_SHA256: [u8; 32] = [
    0xa0, 0xaf, 0x03, 0x12, 0x89, 0xf5, 0xd5, 0xd4, 0x13, 0x2f, 0x91, 0x86, 0x06, 0x8a, 0x7f, 0xc1,
    0x36, 0x28, 0x63, 0x3b, 0xa2, 0x35, 0x77, 0x74, 0x72, 0xe2, 0x9b, 0x6b, 0x6c, 0x67, 0xa4, 0x9e,
];

/// AMD's public ARK and ASK certificates (PEM) for `product`, as the `sev` crate
/// ships them (AMD key distribution service `vcek/v1/{product}/cert_chain`).
pub fn amd_built_in_pem(product: SnpProduct) -> (&'static [u8], &'static [u8]) {
    use sev::certs::snp::builtin::{genoa, milan, turin};
    match product {
        SnpProduct::Milan => (milan::ARK, milan::ASK),
        SnpProduct::Genoa => (genoa::ARK, genoa::ASK),
        SnpProduct::Turin => (turin::ARK, turin::ASK),
    }
}

/// A built-in root certificate that does not decode.
#[derive(Debug, Error)]
pub enum RootsError {
    /// A certificate of the set does not decode.
    #[error("the {which} certificate does not decode")]
    Decode {
        /// Which certificate.
        which: String,
        /// Why.
        #[source]
        source: X509Error,
    },
}

/// AMD's root key (ARK, self-signed) and SEV signing key (ASK, signed by the ARK)
/// of one product.
#[derive(Debug, Clone)]
pub struct AmdRoot {
    /// The product.
    pub product: SnpProduct,
    /// AMD Root Key: the trust anchor.
    pub ark: Cert,
    /// AMD SEV Key: signs the VCEKs; used when the caller gives no chain.
    pub ask: Cert,
}

/// A root that stands in for a vendor's: evidence whose certificates name
/// `organization` (in a subject or an issuer) rests on it, never on the vendor's.
#[derive(Debug, Clone)]
pub struct EmulatedRoot<R> {
    /// The organization every certificate under this root names.
    pub organization: String,
    /// Who signs under it, for verdicts (`"nacre's emulated security processor"`).
    pub signer: String,
    /// Why evidence under it fails while the root is not trusted, and what to do.
    pub refusal: String,
    /// The root, when evidence under it is to be accepted (as emulated evidence);
    /// `None` recognizes such evidence only to refuse it with `refusal`.
    pub root: Option<R>,
}

impl<R> EmulatedRoot<R> {
    /// Whether `cert` names this root's organization.
    fn names(&self, cert: &Cert) -> bool {
        cert.names_organization(&self.organization)
    }
}

/// The roots a verification trusts.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    amd: Vec<AmdRoot>,
    intel: Cert,
    emulated_snp: Vec<EmulatedRoot<AmdRoot>>,
    emulated_tdx: Vec<EmulatedRoot<Cert>>,
}

impl TrustAnchors {
    /// A set of AMD roots (one per product) and an Intel SGX Root CA.
    pub fn new(amd: Vec<AmdRoot>, intel: Cert) -> Self {
        Self {
            amd,
            intel,
            emulated_snp: Vec::new(),
            emulated_tdx: Vec::new(),
        }
    }

    /// AMD's public roots for Milan, Genoa and Turin, and Intel's SGX Root CA.
    pub fn built_in() -> Result<Self, RootsError> {
        let decode = |which: String, pem: &[u8]| {
            Cert::from_der_or_pem(pem).map_err(|source| RootsError::Decode { which, source })
        };
        let amd = SnpProduct::ALL
            .into_iter()
            .map(|product| {
                let (ark, ask) = amd_built_in_pem(product);
                Ok(AmdRoot {
                    product,
                    ark: decode(format!("built-in ARK-{product}"), ark)?,
                    ask: decode(format!("built-in SEV-{product}"), ask)?,
                })
            })
            .collect::<Result<_, RootsError>>()?;
        let intel = decode(
            "built-in Intel SGX Root CA".to_owned(),
            INTEL_SGX_ROOT_CA_PEM.as_bytes(),
        )?;
        Ok(Self::new(amd, intel))
    }

    /// Recognize SEV-SNP evidence under `root`: certificates that name its
    /// organization are checked against its ARK and ASK (when it has them) instead of
    /// AMD's, and the verification says it is emulated ([`crate::Trust::Emulated`]).
    /// Without the ARK and ASK such evidence fails its `ark-trusted` check with the
    /// root's refusal. Evidence that names no such organization is never checked
    /// against it.
    pub fn recognize_snp(mut self, root: EmulatedRoot<AmdRoot>) -> Self {
        self.emulated_snp.push(root);
        self
    }

    /// Recognize TDX quotes under `root` likewise: a PCK chain that names its
    /// organization is checked against its root CA (when it has one) instead of
    /// Intel's, and its `root-trusted` check fails with the refusal otherwise.
    pub fn recognize_tdx(mut self, root: EmulatedRoot<Cert>) -> Self {
        self.emulated_tdx.push(root);
        self
    }

    /// The emulated root SEV-SNP evidence with these certificates rests on, if any
    /// of them names one.
    pub fn emulated_snp(&self, certs: &[&Cert]) -> Option<&EmulatedRoot<AmdRoot>> {
        self.emulated_snp
            .iter()
            .find(|e| certs.iter().any(|c| e.names(c)))
    }

    /// The emulated root a TDX quote with this PCK chain rests on, if the chain
    /// names one.
    pub fn emulated_tdx(&self, chain: &[Cert]) -> Option<&EmulatedRoot<Cert>> {
        self.emulated_tdx
            .iter()
            .find(|e| chain.iter().any(|c| e.names(c)))
    }

    /// Whether any emulated root is trusted, not only recognized.
    pub fn allows_emulated(&self) -> bool {
        self.emulated_snp.iter().any(|e| e.root.is_some())
            || self.emulated_tdx.iter().any(|e| e.root.is_some())
    }

    /// The AMD root of `product`, if the set has one.
    pub fn amd(&self, product: SnpProduct) -> Option<&AmdRoot> {
        self.amd.iter().find(|r| r.product == product)
    }

    /// The Intel SGX Root CA.
    pub fn intel(&self) -> &Cert {
        &self.intel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roots_decode_and_chain() {
        let roots = TrustAnchors::built_in().expect("built-in roots decode");
        for product in SnpProduct::ALL {
            let root = roots.amd(product).expect("every product has a root");
            assert_eq!(root.ark.subject_name(), format!("ARK-{product}"));
            assert_eq!(root.ask.subject_name(), format!("SEV-{product}"));
            root.ark
                .verify_issued_by(&root.ark)
                .expect("the ARK signs itself");
            root.ask
                .verify_issued_by(&root.ark)
                .expect("the ARK signs the ASK");
        }
        let intel = roots.intel();
        assert_eq!(intel.subject_name(), "Intel SGX Root CA");
        assert_eq!(
            intel.spki_sha256().ok(),
            Some(INTEL_SGX_ROOT_CA_SPKI_SHA256)
        );
        intel
            .verify_issued_by(intel)
            .expect("the Intel root signs itself");
    }
}
