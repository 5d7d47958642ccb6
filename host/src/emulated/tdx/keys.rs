//! The key hierarchy of the `emulated-tdx` platform's attestation path, laid out
//! like Intel's: the quotes of [`super::quoting`] verify with the verifier in
//! [`nacre_verifier::tdx`] like real ones, but only against this host's root.
//!
//! # What is emulated, and how it is told apart
//!
//! On real hardware the CPU's TDX module writes the TDREPORT (TDG.MR.REPORT) and MACs
//! it with a key only the CPU knows; Intel's TD quoting enclave checks that MAC
//! (EVERIFYREPORT2), and signs a quote with an attestation key that it certifies
//! with a QE report signed by the platform's PCK key, whose certificate chains to
//! the Intel SGX Root CA. Here every part is software on the host: the report key is
//! [`super::module::TdxReportKey`], the enclave [`super::quoting::QuotingEnclave`],
//! and [`EmulatedTdxKeys`] an Intel-style PCK hierarchy generated once per host: a
//! root CA, a "PCK Platform CA", a PCK certificate carrying Intel's SGX extension
//! (OID 1.2.840.113741.1.13.1, with the emulated FMSPC, PCE ID, TCB components,
//! PCESVN and CPUSVN), and the QE's attestation key. Every subject name says "nacre
//! emulated". Verified against the built-in roots an emulated quote fails the
//! `ca-signed-by-root` and `root-trusted` checks; a verifier trusts one only when
//! given this host's root explicitly.
//!
//! # The key directory
//!
//! [`EmulatedTdxKeys::load_or_create`] keeps the hierarchy in one directory (mode
//! 0700), created on first use and loaded afterwards:
//!
//! | file | contents | mode |
//! |---|---|---|
//! | `root-ca.pem` | the self-signed root, "nacre emulated Intel SGX Root CA" (PEM) | 0644 |
//! | `pck-platform-ca.pem` | "nacre emulated Intel SGX PCK Platform CA", signed by the root | 0644 |
//! | `pck.pem` | "nacre emulated Intel SGX PCK Certificate", signed by the CA, with the SGX extension | 0644 |
//! | `pck.key` | the PCK private key (P-256, PKCS#8 PEM): signs QE reports | 0600 |
//! | `attestation.key` | the QE's attestation private key (P-256, PKCS#8 PEM): signs quotes | 0600 |
//! | `tcb-signing.pem` | "nacre emulated Intel SGX TCB Signing", signed by the root | 0644 |
//! | `tcb-signing.key` | its private key (P-256, PKCS#8 PEM): signs TCB info and QE identity | 0600 |
//! | `root-ca.crl` | the root's CRL, empty (DER) | 0644 |
//! | `pck-platform-ca.crl` | the PCK Platform CA's CRL, empty (DER) | 0644 |
//!
//! The last four are the emulated DCAP collateral's ([`super::collateral`]); a directory
//! made before nacre made collateral has none of them, works as before, and has no
//! collateral ([`EmulatedTdxKeys::collateral`] says to remove it).
//!
//! The root's and the CA's private keys sign once, when the directory is created,
//! and are never written anywhere: a new hierarchy means removing the directory.
//! The directory is built under a temporary name next to it and renamed into place
//! in one step, so concurrent first uses never see (or mix) a partial set: the
//! first rename wins and the others load what it put there. A directory with a
//! missing, corrupt or inconsistent file is an error naming the file; it is never
//! repaired or overwritten.
//!
//! Formats: docs/specs.md 6.5 (TDREPORT), 6.6 (quote v4, QE report, certification data
//! types 6 and 5); the SGX extension's structure is that of Intel's PCK certificates
//! (the one in the real quote of `tests/vectors/go-tdx-guest`), which dcap-qvl's
//! `intel::parse_pck_extension` reads.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::files;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::der::asn1::{Any, BitString, OctetString, OctetStringRef, UtcTime};
use x509_cert::der::oid::{AssociatedOid, ObjectIdentifier};
use x509_cert::der::{Encode, Tag};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use nacre_verifier::roots::EmulatedRoot;
use nacre_verifier::tdx::{Collateral, P256_PAIR_SIZE};
use nacre_verifier::x509::{Cert, OID_ECDSA_WITH_SHA256, OID_EC_PUBLIC_KEY, OID_SECP256R1};

/// File of the root CA certificate (PEM).
pub const ROOT_CERT_FILE: &str = "root-ca.pem";
/// File of the PCK Platform CA certificate (PEM).
pub const PCK_CA_CERT_FILE: &str = "pck-platform-ca.pem";
/// File of the PCK certificate (PEM).
pub const PCK_CERT_FILE: &str = "pck.pem";
/// File of the PCK private key (PKCS#8 PEM).
pub const PCK_KEY_FILE: &str = "pck.key";
/// File of the quoting enclave's attestation private key (PKCS#8 PEM).
pub const ATTESTATION_KEY_FILE: &str = "attestation.key";

/// Subject common name of the emulated root CA.
pub const ROOT_CA_NAME: &str = "nacre emulated Intel SGX Root CA";
/// Subject common name of the emulated PCK Platform CA. dcap-qvl tells a Platform
/// CA from a Processor CA by the word in the PCK certificate's issuer name.
pub const PCK_CA_NAME: &str = "nacre emulated Intel SGX PCK Platform CA";
/// Subject common name of the emulated PCK certificate.
pub const PCK_NAME: &str = "nacre emulated Intel SGX PCK Certificate";
/// Organization of every emulated certificate.
pub const ORGANIZATION: &str = "nacre emulated TDX platform";

/// The `root-trusted` detail for an emulated quote the verifier was not told to
/// accept.
pub const REFUSED: &str = "quoted by nacre's emulated TDX platform; pass --allow-emulated to \
                           accept emulated evidence";

/// The folder of the emulated keys' base directory
/// ([`crate::emulated::snp::keys::base_dir`]) with the TDX keys.
pub const TDX_FOLDER: &str = "tdx";

/// The TDX key directory: `tdx` in [`crate::emulated::snp::keys::base_dir`].
pub fn default_dir() -> Result<PathBuf, crate::emulated::snp::keys::EmulatedKeysError> {
    Ok(crate::emulated::snp::keys::base_dir()?.join(TDX_FOLDER))
}

/// Whether `cert` is one of the emulated TDX platform's: its subject or issuer names
/// [`ORGANIZATION`].
pub fn is_emulated(cert: &Cert) -> bool {
    cert.names_organization(ORGANIZATION)
}

/// Who quotes under the emulated root, for verdicts.
pub const SIGNER: &str = "nacre's emulated TDX platform";

/// How a verifier recognizes quotes made under this hierarchy: by its organization,
/// refused with [`REFUSED`]; and, with the key directory `dir`, trusted with its root
/// CA ([`load_root`]).
pub fn verifier_root(dir: Option<&Path>) -> Result<EmulatedRoot<Cert>, KeysError> {
    Ok(EmulatedRoot {
        organization: ORGANIZATION.to_owned(),
        signer: SIGNER.to_owned(),
        refusal: REFUSED.to_owned(),
        root: dir.map(load_root).transpose()?,
    })
}

/// The emulated root CA as a verifier trusts it, from the certificate at hand.
pub fn trusted_root(root: Cert) -> EmulatedRoot<Cert> {
    EmulatedRoot {
        organization: ORGANIZATION.to_owned(),
        signer: SIGNER.to_owned(),
        refusal: REFUSED.to_owned(),
        root: Some(root),
    }
}

/// Load only the emulated root CA from `dir`, for a verifier: nothing is created and
/// no private key is read. It must be an emulated CA that signs itself.
pub fn load_root(dir: &Path) -> Result<Cert, KeysError> {
    let root = read_cert(dir, ROOT_CERT_FILE)?;
    let corrupt = |reason: String| KeysError::Corrupt {
        path: dir.join(ROOT_CERT_FILE),
        reason,
    };
    if !is_emulated(&root) {
        return Err(corrupt(format!(
            "\"{}\" is not an emulated TDX root",
            root.subject_name()
        )));
    }
    root.verify_issued_by(&root)
        .map_err(|e| corrupt(format!("not a self-signed CA: {e}")))?;
    Ok(root)
}

/// Intel's SGX extension of PCK certificates and its parts (the OIDs dcap-qvl's
/// `oids.rs` reads; structure as in Intel's PCK certificates).
pub mod sgx_oid {
    use x509_cert::der::oid::ObjectIdentifier;

    /// The SGX extension: a SEQUENCE of (OID, value) SEQUENCEs.
    pub const EXTENSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1");
    /// PPID: OCTET STRING (16).
    pub const PPID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.1");
    /// TCB: SEQUENCE of the 16 SGX TCB component SVNs (`.2.1` to `.2.16`, INTEGER),
    /// PCESVN (`.2.17`, INTEGER) and CPUSVN (`.2.18`, OCTET STRING (16)).
    pub const TCB: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.2");
    /// PCE-ID: OCTET STRING (2).
    pub const PCEID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.3");
    /// FMSPC: OCTET STRING (6).
    pub const FMSPC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.4");
    /// SGX type: ENUMERATED (0 standard, 1 scalable).
    pub const SGX_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.5");
    /// Platform instance ID (Platform CA certificates): OCTET STRING (16).
    pub const PLATFORM_INSTANCE_ID: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.6");
    /// Configuration (Platform CA certificates): SEQUENCE of dynamic platform
    /// (`.7.1`), cached keys (`.7.2`) and SMT enabled (`.7.3`), each BOOLEAN.
    pub const CONFIGURATION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.7");
}

/// CPUSVN of the emulated platform: in the TDREPORT, the QE report and the PCK
/// certificate, whose 16 SGX TCB components are its bytes. An arbitrary value.
pub const EMULATED_CPUSVN: [u8; 16] = [1; 16];
/// PCESVN of the emulated platform's PCK certificate. An arbitrary value.
pub const EMULATED_PCESVN: u16 = 1;
/// PCE ID: 0, as in Intel's PCK certificates.
pub const EMULATED_PCEID: [u8; 2] = [0, 0];
/// FMSPC of the emulated platform: ASCII "NACRE\0", which names no Intel platform,
/// so no Intel TCB info matches it.
pub const EMULATED_FMSPC: [u8; 6] = *b"NACRE\0";
/// SGX type in the PCK certificate: 1, scalable, as Intel's Platform CA issues
/// them for TDX-capable platforms (the certificate in the real quote).
const EMULATED_SGX_TYPE: u8 = 1;
/// End of the certificates' validity: 2049-12-31T23:59:59Z, the last UTCTime
/// (RFC 5280 4.1.2.5) and the end of Intel's SGX Root CA.
const NOT_AFTER_UNIX: u64 = 2_524_607_999;
/// How far before its creation a certificate becomes valid, for clocks that differ.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Why the emulated key directory cannot be created or loaded.
#[derive(Debug, Error)]
pub enum KeysError {
    /// The directory (or its parent) cannot be created.
    #[error("cannot create the emulated TDX key directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path exists and is not a directory.
    #[error("{} is not a directory; it cannot hold the emulated TDX keys", .0.display())]
    NotADirectory(PathBuf),
    /// A file cannot be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file of the hierarchy is missing.
    #[error(
        "the emulated TDX key directory {} is incomplete: {file} is missing (remove the \
         directory to generate a new hierarchy)",
        dir.display()
    )]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// A file that does not decode or does not fit the others.
    #[error(
        "{} is corrupt: {reason} (remove its directory to generate a new hierarchy)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory predates emulated collateral.
    #[error(
        "the emulated TDX key directory {} has no collateral: it was made before nacre \
         made emulated DCAP collateral (remove the directory to generate a new hierarchy)",
        .0.display()
    )]
    NoCollateral(PathBuf),
    /// The kernel's random source failed.
    #[error("the kernel's random source failed")]
    Random(#[source] getrandom::Error),
    /// A certificate or key cannot be encoded.
    #[error("cannot encode the emulated {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// The emulated platform's PCK hierarchy and the quoting enclave's attestation
/// key, kept in a directory (see the module documentation). Never prints its keys.
pub struct EmulatedTdxKeys {
    dir: PathBuf,
    root: Cert,
    pck_ca: Cert,
    pck: Cert,
    pub(super) pck_key: SigningKey,
    pub(super) attestation_key: SigningKey,
    pub(super) chain_pem: Vec<u8>,
    collateral: Option<super::collateral::CollateralKeys>,
}

impl std::fmt::Debug for EmulatedTdxKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedTdxKeys")
            .field("dir", &self.dir)
            .field("root", &self.root.subject_name())
            .field("pck", &self.pck.subject_name())
            .finish_non_exhaustive()
    }
}

impl EmulatedTdxKeys {
    /// Load the hierarchy from `dir`, or generate it there if `dir` does not exist
    /// or is empty (see the module documentation). Safe to call from several
    /// processes at once: all of them end up with the same hierarchy.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeysError> {
        match fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => return Err(KeysError::NotADirectory(dir.to_owned())),
            Ok(_) => {
                let mut entries = fs::read_dir(dir).map_err(|source| KeysError::Read {
                    path: dir.to_owned(),
                    source,
                })?;
                if entries.next().is_some() {
                    return Self::load(dir);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeysError::Read {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
        Self::create(dir)
    }

    /// Load the hierarchy from `dir`, checking that every file decodes and that
    /// they fit together (the chain verifies, the PCK key is the certificate's).
    pub fn load(dir: &Path) -> Result<Self, KeysError> {
        let root_path = dir.join(ROOT_CERT_FILE);
        let root = read_cert(dir, ROOT_CERT_FILE)?;
        let pck_ca = read_cert(dir, PCK_CA_CERT_FILE)?;
        let pck = read_cert(dir, PCK_CERT_FILE)?;
        let pck_key = read_key(dir, PCK_KEY_FILE)?;
        let attestation_key = read_key(dir, ATTESTATION_KEY_FILE)?;

        let corrupt = |file: &str, reason: String| KeysError::Corrupt {
            path: dir.join(file),
            reason,
        };
        root.verify_issued_by(&root)
            .map_err(|e| corrupt(ROOT_CERT_FILE, format!("not a self-signed CA: {e}")))?;
        pck_ca.verify_issued_by(&root).map_err(|e| {
            corrupt(
                PCK_CA_CERT_FILE,
                format!("not issued by {}: {e}", root_path.display()),
            )
        })?;
        pck.verify_issued_by(&pck_ca).map_err(|e| {
            corrupt(
                PCK_CERT_FILE,
                format!("not issued by {PCK_CA_CERT_FILE}: {e}"),
            )
        })?;
        let pck_public = pck
            .p256_key()
            .map_err(|e| corrupt(PCK_CERT_FILE, format!("no P-256 key: {e}")))?;
        if *pck_key.verifying_key() != pck_public {
            return Err(corrupt(
                PCK_KEY_FILE,
                format!("the key is not the one {PCK_CERT_FILE} certifies"),
            ));
        }
        let chain_pem = chain_pem(&[&pck, &pck_ca, &root])?.into_bytes();
        let collateral = super::collateral::load(dir, &root, &pck_ca)?;
        Ok(Self {
            dir: dir.to_owned(),
            root,
            pck_ca,
            pck,
            pck_key,
            attestation_key,
            chain_pem,
            collateral,
        })
    }

    fn create(dir: &Path) -> Result<Self, KeysError> {
        let io = |_, path: &Path, source| KeysError::CreateDir {
            path: path.to_owned(),
            source,
        };
        // Whoever put the directory in place first, it is the one to load.
        crate::emulated::publish_dir(dir, |tmp| generate()?.write(tmp), io)?;
        Self::load(dir)
    }

    /// The directory the hierarchy lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The emulated root CA, to trust explicitly:
    /// `TrustAnchors::new(vec![], keys.root_cert())`.
    pub fn root_cert(&self) -> Cert {
        self.root.clone()
    }

    /// The emulated PCK Platform CA.
    pub fn pck_ca_cert(&self) -> &Cert {
        &self.pck_ca
    }

    /// The emulated PCK certificate.
    pub fn pck_cert(&self) -> &Cert {
        &self.pck
    }

    /// The PEM chain a quote carries: PCK certificate, PCK Platform CA, root.
    pub fn pck_chain_pem(&self) -> &[u8] {
        &self.chain_pem
    }

    /// The attestation public key as a quote carries it (`x || y`, big-endian).
    pub fn attestation_public_key(&self) -> [u8; P256_PAIR_SIZE] {
        raw_public_key(&self.attestation_key)
    }

    /// DCAP collateral for this platform's quotes, issued at `at` (see
    /// [`super::collateral`]): with it, dcap-qvl appraises an emulated quote's TCB as
    /// UpToDate until [`super::collateral::COLLATERAL_VALIDITY`] after `at`.
    pub fn collateral(&self, at: SystemTime) -> Result<Collateral, KeysError> {
        let keys = self
            .collateral
            .as_ref()
            .ok_or_else(|| KeysError::NoCollateral(self.dir.clone()))?;
        super::collateral::collateral(keys, &self.root, &self.pck_ca, at)
    }
}

/// `x || y` of a P-256 key's public point.
fn raw_public_key(key: &SigningKey) -> [u8; P256_PAIR_SIZE] {
    let point = key.verifying_key().to_encoded_point(false);
    point.as_bytes()[1..]
        .try_into()
        .expect("an uncompressed P-256 point is 0x04 || x || y, 65 bytes")
}

/// Best-effort fsync of a directory (some file systems refuse it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

pub(super) fn read_file(dir: &Path, file: &'static str) -> Result<Vec<u8>, KeysError> {
    let path = dir.join(file);
    files::read_input_io(&path, files::KEY_FILE).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            KeysError::Missing {
                dir: dir.to_owned(),
                file,
            }
        } else {
            KeysError::Read { path, source }
        }
    })
}

pub(super) fn read_cert(dir: &Path, file: &'static str) -> Result<Cert, KeysError> {
    let bytes = read_file(dir, file)?;
    Cert::from_der_or_pem(&bytes).map_err(|e| KeysError::Corrupt {
        path: dir.join(file),
        reason: format!("not a PEM certificate: {e}"),
    })
}

pub(super) fn read_key(dir: &Path, file: &'static str) -> Result<SigningKey, KeysError> {
    let bytes = read_file(dir, file)?;
    let corrupt = || KeysError::Corrupt {
        path: dir.join(file),
        reason: "not a P-256 private key in PKCS#8 PEM".into(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt())?;
    let secret = p256::SecretKey::from_pkcs8_pem(text).map_err(|_| corrupt())?;
    Ok(SigningKey::from(secret))
}

pub(super) fn chain_pem(certs: &[&Cert]) -> Result<String, KeysError> {
    let mut pem = String::new();
    for cert in certs {
        pem.push_str(&cert_pem(cert.der())?);
    }
    Ok(pem)
}

pub(super) fn cert_pem(der: &[u8]) -> Result<String, KeysError> {
    x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, der).map_err(|e| {
        KeysError::Encode {
            what: "certificate PEM",
            reason: e.to_string(),
        }
    })
}

/// A freshly generated hierarchy, before it is written.
struct Generated {
    root_der: Vec<u8>,
    pck_ca_der: Vec<u8>,
    pck_der: Vec<u8>,
    pck_key: SigningKey,
    attestation_key: SigningKey,
    collateral: super::collateral::Generated,
}

/// A private key as PKCS#8 PEM.
pub(super) fn key_pem(
    key: &SigningKey,
) -> Result<p256::pkcs8::der::zeroize::Zeroizing<String>, KeysError> {
    p256::SecretKey::from(key)
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeysError::Encode {
            what: "private key",
            reason: e.to_string(),
        })
}

impl Generated {
    fn write(&self, dir: &Path) -> Result<(), KeysError> {
        write_new(
            dir,
            ROOT_CERT_FILE,
            cert_pem(&self.root_der)?.as_bytes(),
            0o644,
        )?;
        write_new(
            dir,
            PCK_CA_CERT_FILE,
            cert_pem(&self.pck_ca_der)?.as_bytes(),
            0o644,
        )?;
        write_new(
            dir,
            PCK_CERT_FILE,
            cert_pem(&self.pck_der)?.as_bytes(),
            0o644,
        )?;
        write_new(dir, PCK_KEY_FILE, key_pem(&self.pck_key)?.as_bytes(), 0o600)?;
        write_new(
            dir,
            ATTESTATION_KEY_FILE,
            key_pem(&self.attestation_key)?.as_bytes(),
            0o600,
        )?;
        self.collateral.write(dir)?;
        sync_dir(dir);
        Ok(())
    }
}

/// Create `dir/file` (it must not exist) with `mode`, write `bytes` and fsync.
pub(super) fn write_new(dir: &Path, file: &str, bytes: &[u8], mode: u32) -> Result<(), KeysError> {
    let path = dir.join(file);
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|source| KeysError::Write {
        path: path.clone(),
        source,
    })
}

/// A random P-256 key (a random 32-byte string is a valid scalar but with
/// negligible probability; those are drawn again).
pub(super) fn random_signing_key() -> Result<SigningKey, KeysError> {
    loop {
        let bytes: [u8; 32] = crate::emulated::random::bytes().map_err(KeysError::Random)?;
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return Ok(key);
        }
    }
}

pub(super) fn encode_err(what: &'static str) -> impl Fn(x509_cert::der::Error) -> KeysError {
    move |e| KeysError::Encode {
        what,
        reason: e.to_string(),
    }
}

/// The key identifier of a public key: the leftmost 160 bits of SHA-256 of the
/// subjectPublicKey bits (RFC 7093 section 2, method 1).
pub(super) fn key_identifier(key: &SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    Sha256::digest(point.as_bytes())[..20].to_vec()
}

/// One certificate to issue.
pub(super) struct CertSpec<'a> {
    pub(super) subject: &'a Name,
    pub(super) subject_key: &'a SigningKey,
    pub(super) issuer: &'a Name,
    pub(super) issuer_key: &'a SigningKey,
    pub(super) validity: Validity,
    pub(super) extensions: Vec<Extension>,
}

pub(super) fn extension(
    oid: ObjectIdentifier,
    critical: bool,
    value: Vec<u8>,
) -> Result<Extension, KeysError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).map_err(encode_err("extension"))?,
    })
}

/// The extensions every emulated certificate has: key identifiers, key usage and
/// basic constraints (`path_len` is `None` for the end-entity PCK certificate).
pub(super) fn common_extensions(
    subject_key: &SigningKey,
    issuer_key: &SigningKey,
    ca_path_len: Option<u8>,
) -> Result<Vec<Extension>, KeysError> {
    let err = encode_err("certificate extension");
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(key_identifier(issuer_key)).map_err(&err)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let ski = SubjectKeyIdentifier(OctetString::new(key_identifier(subject_key)).map_err(&err)?);
    let usage = match ca_path_len {
        Some(_) => KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        None => KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
    };
    let constraints = BasicConstraints {
        ca: ca_path_len.is_some(),
        path_len_constraint: ca_path_len,
    };
    Ok(vec![
        extension(
            AuthorityKeyIdentifier::OID,
            false,
            aki.to_der().map_err(&err)?,
        )?,
        extension(
            SubjectKeyIdentifier::OID,
            false,
            ski.to_der().map_err(&err)?,
        )?,
        extension(KeyUsage::OID, true, usage.to_der().map_err(&err)?)?,
        extension(
            BasicConstraints::OID,
            true,
            constraints.to_der().map_err(&err)?,
        )?,
    ])
}

/// Issue a certificate: ECDSA P-256 with SHA-256, a random positive serial number.
pub(super) fn issue(spec: CertSpec<'_>) -> Result<Vec<u8>, KeysError> {
    let err = encode_err("certificate");
    let mut serial: [u8; 16] = crate::emulated::random::bytes().map_err(KeysError::Random)?;
    // Positive, and no leading zero byte to strip.
    serial[0] = (serial[0] & 0x7F) | 0x40;
    let algorithm = AlgorithmIdentifierOwned {
        oid: OID_ECDSA_WITH_SHA256,
        parameters: None,
    };
    let point = spec.subject_key.verifying_key().to_encoded_point(false);
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(Any::from(&OID_SECP256R1)),
        },
        subject_public_key: BitString::from_bytes(point.as_bytes()).map_err(&err)?,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(&err)?,
        signature: algorithm.clone(),
        issuer: spec.issuer.clone(),
        validity: spec.validity,
        subject: spec.subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(spec.extensions),
    };
    let tbs_der = tbs.to_der().map_err(&err)?;
    let signature: Signature = spec.issuer_key.sign(&tbs_der);
    let certificate = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(signature.to_der().as_bytes()).map_err(&err)?,
    };
    certificate.to_der().map_err(&err)
}

/// The DER of a SEQUENCE of already encoded `parts`.
fn der_sequence(parts: &[Vec<u8>]) -> Result<Vec<u8>, x509_cert::der::Error> {
    Any::new(Tag::Sequence, parts.concat())?.to_der()
}

/// One `SEQUENCE { OID, value }` entry of the SGX extension.
fn sgx_entry(oid: ObjectIdentifier, value: Vec<u8>) -> Result<Vec<u8>, x509_cert::der::Error> {
    der_sequence(&[oid.to_der()?, value])
}

fn sub_oid(base: ObjectIdentifier, arc: u32) -> Result<ObjectIdentifier, x509_cert::der::Error> {
    base.push_arc(arc).map_err(x509_cert::der::Error::from)
}

fn octets(bytes: &[u8]) -> Result<Vec<u8>, x509_cert::der::Error> {
    OctetStringRef::new(bytes)?.to_der()
}

/// The value of Intel's SGX extension for the emulated platform, laid out as in
/// Intel's PCK certificates issued by the Platform CA: PPID, TCB (component SVNs
/// from [`EMULATED_CPUSVN`], PCESVN, CPUSVN), PCE ID, FMSPC, SGX type, platform
/// instance ID and configuration.
fn sgx_extension(
    ppid: &[u8; 16],
    platform_instance_id: &[u8; 16],
) -> Result<Vec<u8>, x509_cert::der::Error> {
    let mut tcb = Vec::with_capacity(18);
    for (i, svn) in (1u32..).zip(EMULATED_CPUSVN) {
        tcb.push(sgx_entry(sub_oid(sgx_oid::TCB, i)?, svn.to_der()?)?);
    }
    tcb.push(sgx_entry(
        sub_oid(sgx_oid::TCB, 17)?,
        EMULATED_PCESVN.to_der()?,
    )?);
    tcb.push(sgx_entry(
        sub_oid(sgx_oid::TCB, 18)?,
        octets(&EMULATED_CPUSVN)?,
    )?);
    let configuration = [
        sgx_entry(sub_oid(sgx_oid::CONFIGURATION, 1)?, false.to_der()?)?,
        sgx_entry(sub_oid(sgx_oid::CONFIGURATION, 2)?, false.to_der()?)?,
        sgx_entry(sub_oid(sgx_oid::CONFIGURATION, 3)?, false.to_der()?)?,
    ];
    der_sequence(&[
        sgx_entry(sgx_oid::PPID, octets(ppid)?)?,
        sgx_entry(sgx_oid::TCB, der_sequence(&tcb)?)?,
        sgx_entry(sgx_oid::PCEID, octets(&EMULATED_PCEID)?)?,
        sgx_entry(sgx_oid::FMSPC, octets(&EMULATED_FMSPC)?)?,
        sgx_entry(
            sgx_oid::SGX_TYPE,
            Any::new(Tag::Enumerated, [EMULATED_SGX_TYPE])?.to_der()?,
        )?,
        sgx_entry(sgx_oid::PLATFORM_INSTANCE_ID, octets(platform_instance_id)?)?,
        sgx_entry(sgx_oid::CONFIGURATION, der_sequence(&configuration)?)?,
    ])
}

pub(super) fn name(common_name: &str) -> Result<Name, KeysError> {
    Name::from_str(&format!("CN={common_name},O={ORGANIZATION}")).map_err(encode_err("name"))
}

/// Generate a new hierarchy: root, PCK Platform CA, PCK certificate, and the
/// attestation key.
fn generate() -> Result<Generated, KeysError> {
    let err = encode_err("validity");
    let now = SystemTime::now();
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    let validity = Validity {
        not_before: Time::UtcTime(UtcTime::from_system_time(not_before).map_err(&err)?),
        not_after: Time::UtcTime(
            UtcTime::from_unix_duration(Duration::from_secs(NOT_AFTER_UNIX)).map_err(&err)?,
        ),
    };
    let root_key = random_signing_key()?;
    let ca_key = random_signing_key()?;
    let pck_key = random_signing_key()?;
    let attestation_key = random_signing_key()?;
    let (root_name, ca_name, pck_name) = (name(ROOT_CA_NAME)?, name(PCK_CA_NAME)?, name(PCK_NAME)?);

    let root_der = issue(CertSpec {
        subject: &root_name,
        subject_key: &root_key,
        issuer: &root_name,
        issuer_key: &root_key,
        validity,
        extensions: common_extensions(&root_key, &root_key, Some(1))?,
    })?;
    let pck_ca_der = issue(CertSpec {
        subject: &ca_name,
        subject_key: &ca_key,
        issuer: &root_name,
        issuer_key: &root_key,
        validity,
        extensions: common_extensions(&ca_key, &root_key, Some(0))?,
    })?;
    let mut pck_extensions = common_extensions(&pck_key, &ca_key, None)?;
    let sgx = sgx_extension(
        &crate::emulated::random::bytes().map_err(KeysError::Random)?,
        &crate::emulated::random::bytes().map_err(KeysError::Random)?,
    )
    .map_err(encode_err("SGX extension"))?;
    pck_extensions.push(extension(sgx_oid::EXTENSION, false, sgx)?);
    let pck_der = issue(CertSpec {
        subject: &pck_name,
        subject_key: &pck_key,
        issuer: &ca_name,
        issuer_key: &ca_key,
        validity,
        extensions: pck_extensions,
    })?;
    let collateral = super::collateral::generate(&super::collateral::Issuers {
        root_name: &root_name,
        root_key: &root_key,
        ca_name: &ca_name,
        ca_key: &ca_key,
        validity,
    })?;
    Ok(Generated {
        root_der,
        pck_ca_der,
        pck_der,
        pck_key,
        attestation_key,
        collateral,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod fixture {
    //! Quotes of any TD from an emulated hierarchy, for tests that re-sign evidence.

    use super::*;
    use crate::emulated::tdx::module::{emulated_tee_tcb_info, TdxReportKey};
    use crate::emulated::tdx::quoting::QuotingEnclave;
    use nacre_shared_abi::tdx_report::TdInfo;

    /// A new hierarchy in the `tdx` folder of the emulated keys' base directory
    /// `base` (where `nacre verify --emulated-keys base` finds its root).
    pub fn keys_in(base: &Path) -> EmulatedTdxKeys {
        EmulatedTdxKeys::load_or_create(&base.join(TDX_FOLDER)).expect("create the keys")
    }

    /// A quote, by the emulated QE of `keys`, of a TDREPORT of `td` carrying
    /// `report_data`, made by a fresh emulated TDX module.
    pub fn quote_of(keys: &EmulatedTdxKeys, td: &TdInfo, report_data: &[u8; 64]) -> Vec<u8> {
        let report_key = TdxReportKey::generate().expect("a report key");
        let report = report_key.td_report(td, &emulated_tee_tcb_info(), report_data);
        QuotingEnclave::new()
            .quote(keys, &report_key, &report)
            .expect("the QE quotes its own platform's report")
    }
}
