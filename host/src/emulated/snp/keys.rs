//! The key hierarchy of nacre's emulated AMD security processor: the keys the
//! `emulated-snp` platform signs attestation reports with, laid out like AMD's.
//!
//! AMD signs an SEV-SNP report with the chip's VCEK (EC P-384), certified by the
//! SEV signing key (ASK), itself certified by AMD's root key (ARK); ARK and ASK are
//! RSA-4096 and sign with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48 (docs/specs.md
//! 4.2-4.5). The emulated processor has the same three keys, generated once per host:
//! an emulated ARK (self-signed), an ASK it signs, and a VCEK the ASK signs. The VCEK
//! carries AMD's extensions (arc 1.3.6.1.4.1.3704.1) for a fixed emulated TCB
//! ([`EMULATED_TCB_VERSION`], Milan layout) and a random 64-byte chip ID, so the
//! verifier checks emulated evidence with exactly the code that checks AMD's.
//!
//! Every certificate names the organization [`EMULATED_ORGANIZATION`] and a common
//! name ending in `-emulated`. Evidence signed by these keys chains to the emulated
//! ARK, never to AMD's, so it never verifies as hardware evidence: `nacre verify`
//! refuses it unless told to accept emulated evidence, and then says so in its
//! verdict (docs/threat-model.md, assumption 5).
//!
//! The keys live in one directory ([`default_dir`]: `snp` in `$NACRE_EMULATED_KEYS`,
//! else in `$XDG_DATA_HOME/nacre/emulated-keys`, else in
//! `~/.local/share/nacre/emulated-keys`), mode 0700, every file mode 0600:
//!
//! | file | contents |
//! |---|---|
//! | `ark.pem`, `ask.pem`, `vcek.pem` | the certificates (PEM) |
//! | `ark-key.pem`, `ask-key.pem`, `vcek-key.pem` | their private keys (PKCS#8 PEM) |
//! | `chip-id.hex` | the emulated chip ID: 128 hex digits, the VCEK's hwID |
//!
//! A verifier needs only `ark.pem` and `ask.pem` ([`load_root`]). The ARK also signs
//! revocation lists as AMD's does for its key distribution service
//! ([`EmulatedSnpKeys::crl`]), made when asked for and never stored.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::emulated::random;
use nacre_shared_abi::snp::report::{
    SnpProduct, TcbVersion, ATTESTATION_REPORT_SIZE, ECDSA_P384_COMPONENT_SIZE, SIGNED_SIZE,
};
use p384::ecdsa::signature::Signer;
use rsa::pkcs1::RsaPssParams;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pss::BlindedSigningKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::RsaPrivateKey;
use sha2::Sha384;
use thiserror::Error;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::der::asn1::Uint;
use x509_cert::der::asn1::{
    BitString, GeneralizedTime, Ia5StringRef, OctetString, SetOfVec, UtcTime, Utf8StringRef,
};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Any, Decode, Encode};
use x509_cert::ext::pkix::CrlNumber;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use nacre_verifier::crl::Crl;
use nacre_verifier::decode_hex;
use nacre_verifier::roots::{AmdRoot, EmulatedRoot};
use nacre_verifier::snp::{vcek_hw_id, vcek_oid, vcek_product, VcekTcb};
use nacre_verifier::x509::{
    Cert, AMD_PSS_SALT_LEN, OID_BASIC_CONSTRAINTS, OID_COMMON_NAME, OID_KEY_USAGE,
    OID_ORGANIZATION, OID_RSASSA_PSS,
};

/// How long an emulated CRL stays current after it is issued: 7 days.
pub const CRL_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The environment variable naming the key directory, ahead of the default.
pub const KEYS_DIR_ENV: &str = "NACRE_EMULATED_KEYS";

/// The organization every emulated certificate names, as subject and issuer.
pub const EMULATED_ORGANIZATION: &str = "nacre emulated security processor";
/// Common name of the emulated ARK (AMD's is `ARK-Milan`).
pub const ARK_COMMON_NAME: &str = "ARK-Milan-emulated";
/// Common name of the emulated ASK (AMD's is `SEV-Milan`).
pub const ASK_COMMON_NAME: &str = "SEV-Milan-emulated";
/// Common name of the emulated VCEK (AMD's is `SEV-VCEK`).
pub const VCEK_COMMON_NAME: &str = "SEV-VCEK-emulated";

/// The product the emulated processor is: its TCB_VERSION layout and chip ID length
/// are Milan's.
pub const PRODUCT: SnpProduct = SnpProduct::Milan;
/// The VCEK's productName: the verifier reads the family before the `-` (docs/specs.md
/// 4.5), so this is a Milan.
pub const PRODUCT_NAME: &str = "Milan-emulated";

/// The TCB the emulated processor reports and its VCEK is issued for: boot loader 4,
/// TEE 1, SNP 22, microcode 213 (0xD5). Each component differs from the others so
/// that a mix-up of two shows, and microcode is above 0x7F so its DER INTEGER in the
/// VCEK needs a leading zero byte, as on real Milan VCEKs.
pub const EMULATED_TCB_VERSION: TcbVersion = TcbVersion {
    fmc: None,
    bootloader: 4,
    tee: 1,
    snp: 22,
    microcode: 213,
};
/// [`EMULATED_TCB_VERSION`] as a raw TCB_VERSION (Milan layout, docs/specs.md 4.4):
/// bytes `04 01 00 00 00 00 16 d5`.
pub const EMULATED_TCB: u64 = EMULATED_TCB_VERSION.encode(PRODUCT);

/// Size of the emulated chip ID (a Milan's; docs/specs.md 4.2).
pub const CHIP_ID_SIZE: usize = 64;
/// Size of the ARK's and the ASK's RSA keys, as AMD's (docs/specs.md 4.5).
pub const RSA_KEY_BITS: usize = 4096;

/// Why a verification refuses evidence signed by the emulated keys when emulated
/// evidence was not accepted.
pub const REFUSED: &str = "signed by nacre's emulated security processor; pass \
                           --allow-emulated to accept emulated evidence";

/// The files of the key directory.
pub mod files {
    /// The emulated ARK certificate (PEM).
    pub const ARK_CERT: &str = "ark.pem";
    /// The emulated ASK certificate (PEM).
    pub const ASK_CERT: &str = "ask.pem";
    /// The emulated VCEK certificate (PEM).
    pub const VCEK_CERT: &str = "vcek.pem";
    /// The ARK's private key (RSA, PKCS#8 PEM).
    pub const ARK_KEY: &str = "ark-key.pem";
    /// The ASK's private key (RSA, PKCS#8 PEM).
    pub const ASK_KEY: &str = "ask-key.pem";
    /// The VCEK's private key (EC P-384, PKCS#8 PEM).
    pub const VCEK_KEY: &str = "vcek-key.pem";
    /// The chip ID: 128 hex digits and a newline.
    pub const CHIP_ID: &str = "chip-id.hex";
    /// Every file, in the order they are written.
    pub const ALL: [&str; 7] = [
        ARK_CERT, ASK_CERT, VCEK_CERT, ARK_KEY, ASK_KEY, VCEK_KEY, CHIP_ID,
    ];
}

/// Validity of the ARK and the ASK, and of the VCEK (AMD's: 25 and 7 years).
const CA_YEARS: u32 = 25;
const VCEK_YEARS: u32 = 7;
const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How long before their making the certificates are valid from, so that a verifier
/// whose clock is behind this host's accepts them at once.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Why the emulated keys cannot be found, made, stored or loaded.
#[derive(Debug, Error)]
pub enum EmulatedKeysError {
    /// None of the variables that place the key directory is set.
    #[error(
        "cannot place the emulated keys: none of {KEYS_DIR_ENV}, XDG_DATA_HOME (an absolute \
         path) and HOME is set"
    )]
    NoDirectory,
    /// The directory does not exist (and is not created, e.g. when verifying).
    #[error(
        "there are no emulated keys in {}: they are made on the host that runs emulated-snp \
         guests (copy its ark.pem and ask.pem here to verify its evidence elsewhere)",
        dir.display()
    )]
    NotFound {
        /// The directory.
        dir: PathBuf,
    },
    /// A file system operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The directory lacks some of the files.
    #[error(
        "the emulated key directory {} is incomplete ({} missing): it was not made by nacre or \
         was damaged; nacre does not replace it (remove it to make new keys, which \
         verifiers must then trust instead)",
        dir.display(),
        missing.join(", ")
    )]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// The missing files.
        missing: Vec<&'static str>,
    },
    /// A file does not decode or does not agree with the others.
    #[error(
        "{file} in the emulated key directory {} is unusable: {reason}; nacre does not \
         replace it (remove the directory to make new keys, which verifiers must then \
         trust instead)",
        dir.display()
    )]
    Corrupt {
        /// The directory.
        dir: PathBuf,
        /// The file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Making a key or a certificate failed.
    #[error("cannot make the emulated keys: {0}")]
    Generate(String),
}

/// The emulated processor's keys and certificates: ARK and ASK (RSA), the VCEK
/// (EC P-384), and the chip ID the VCEK was issued for.
pub struct EmulatedSnpKeys {
    ark_key: RsaPrivateKey,
    ask_key: RsaPrivateKey,
    vcek_key: p384::ecdsa::SigningKey,
    ark: Cert,
    ask: Cert,
    vcek: Cert,
    chip_id: [u8; CHIP_ID_SIZE],
    tcb: u64,
}

impl fmt::Debug for EmulatedSnpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private keys.
        f.debug_struct("EmulatedSnpKeys")
            .field("ark", &self.ark.subject_name())
            .field("chip_id", &hex::encode(self.chip_id))
            .field("tcb", &format_args!("{:#018x}", self.tcb))
            .finish_non_exhaustive()
    }
}

/// The base directory of every emulated platform's keys: `$NACRE_EMULATED_KEYS` if
/// set, else `$XDG_DATA_HOME/nacre/emulated-keys`, else
/// `$HOME/.local/share/nacre/emulated-keys`. The SEV-SNP keys are in its `snp`
/// folder ([`default_dir`]), the TDX keys in its `tdx` folder.
pub fn base_dir() -> Result<PathBuf, EmulatedKeysError> {
    dir_from_env(|name| std::env::var_os(name))
}

/// The SEV-SNP key directory: `snp` in [`base_dir`].
pub fn default_dir() -> Result<PathBuf, EmulatedKeysError> {
    Ok(base_dir()?.join(SNP_FOLDER))
}

/// The folder of [`base_dir`] with the SEV-SNP keys.
pub const SNP_FOLDER: &str = "snp";

/// [`base_dir`] with the environment read through `var`; empty values count as
/// unset, and so does a relative `XDG_DATA_HOME` (the XDG base directory rules).
fn dir_from_env(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, EmulatedKeysError> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(KEYS_DIR_ENV) {
        return Ok(dir);
    }
    if let Some(data) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(data.join("nacre/emulated-keys"));
    }
    set("HOME")
        .map(|home| home.join(".local/share/nacre/emulated-keys"))
        .ok_or(EmulatedKeysError::NoDirectory)
}

/// Whether `cert` is one of the emulated processor's: its subject or issuer names
/// [`EMULATED_ORGANIZATION`].
pub fn is_emulated(cert: &Cert) -> bool {
    cert.names_organization(EMULATED_ORGANIZATION)
}

/// Who signs under the emulated ARK, for verdicts.
pub const SIGNER: &str = "nacre's emulated security processor";

/// How a verifier recognizes evidence signed under this hierarchy: by its
/// organization, refused with [`REFUSED`]; and, with the key directory `dir`, trusted
/// with its ARK and ASK ([`load_root`]).
pub fn verifier_root(dir: Option<&Path>) -> Result<EmulatedRoot<AmdRoot>, EmulatedKeysError> {
    Ok(EmulatedRoot {
        organization: EMULATED_ORGANIZATION.to_owned(),
        signer: SIGNER.to_owned(),
        refusal: REFUSED.to_owned(),
        root: dir.map(load_root).transpose()?,
    })
}

/// The emulated root as a verifier trusts it, from ARK and ASK at hand.
pub fn trusted_root(root: AmdRoot) -> EmulatedRoot<AmdRoot> {
    EmulatedRoot {
        organization: EMULATED_ORGANIZATION.to_owned(),
        signer: SIGNER.to_owned(),
        refusal: REFUSED.to_owned(),
        root: Some(root),
    }
}

/// Load only the emulated ARK and ASK from `dir`, for a verifier: nothing is created
/// and no private key is read. The ARK must be an emulated one that signs itself and
/// the ASK.
pub fn load_root(dir: &Path) -> Result<AmdRoot, EmulatedKeysError> {
    if !dir.is_dir() {
        return Err(EmulatedKeysError::NotFound {
            dir: dir.to_owned(),
        });
    }
    require_files(dir, &[files::ARK_CERT, files::ASK_CERT])?;
    let corrupt = |file, reason| EmulatedKeysError::Corrupt {
        dir: dir.to_owned(),
        file,
        reason,
    };
    let ark = read_cert(dir, files::ARK_CERT)?;
    let ask = read_cert(dir, files::ASK_CERT)?;
    check_ca(&ark, ARK_COMMON_NAME, &ark).map_err(|r| corrupt(files::ARK_CERT, r))?;
    check_ca(&ask, ASK_COMMON_NAME, &ark).map_err(|r| corrupt(files::ASK_CERT, r))?;
    Ok(AmdRoot {
        product: PRODUCT,
        ark,
        ask,
    })
}

impl EmulatedSnpKeys {
    /// Load the keys from `dir`, or make them there if `dir` does not exist or is
    /// empty. Making them takes seconds (two RSA-4096 keys) and is said on stderr.
    ///
    /// A new set is written to a fresh directory beside `dir` and renamed into
    /// place, so a process never sees part of a set, and when two processes make
    /// keys at once, both end up with the set of the first to finish. A directory
    /// with some files missing or unusable is an error, never replaced.
    pub fn load_or_create(dir: &Path) -> Result<Self, EmulatedKeysError> {
        Self::load_or_create_with(dir, RSA_KEY_BITS)
    }

    fn load_or_create_with(dir: &Path, rsa_bits: usize) -> Result<Self, EmulatedKeysError> {
        if has_entries(dir)? {
            return Self::load(dir);
        }
        crate::say!(
            "nacre: making the emulated AMD security processor's keys in {} (RSA-{rsa_bits} \
             ARK and ASK, P-384 VCEK): this takes a few seconds, once per host",
            dir.display()
        );
        Self::generate_with(rsa_bits)?.store_new(dir)
    }

    /// Load the keys from `dir`; it must hold a complete set that agrees with itself
    /// (each private key with its certificate, the chain, the chip ID with the
    /// VCEK's hwID).
    pub fn load(dir: &Path) -> Result<Self, EmulatedKeysError> {
        if !dir.is_dir() {
            return Err(EmulatedKeysError::NotFound {
                dir: dir.to_owned(),
            });
        }
        require_files(dir, &files::ALL)?;
        let corrupt = |file, reason: String| EmulatedKeysError::Corrupt {
            dir: dir.to_owned(),
            file,
            reason,
        };
        let rsa_key = |file| {
            RsaPrivateKey::from_pkcs8_pem(&read_text(dir, file)?)
                .map_err(|e| corrupt(file, format!("not an RSA private key in PKCS#8 PEM ({e})")))
        };
        let ark_key = rsa_key(files::ARK_KEY)?;
        let ask_key = rsa_key(files::ASK_KEY)?;
        let vcek_key = p384::ecdsa::SigningKey::from_pkcs8_pem(&read_text(dir, files::VCEK_KEY)?)
            .map_err(|e| {
            corrupt(
                files::VCEK_KEY,
                format!("not a P-384 private key in PKCS#8 PEM ({e})"),
            )
        })?;
        let chip_id = decode_hex(read_text(dir, files::CHIP_ID)?.as_bytes())
            .map_err(|e| corrupt(files::CHIP_ID, format!("not hex: {e}")))?
            .try_into()
            .map_err(|id: Vec<u8>| {
                corrupt(
                    files::CHIP_ID,
                    format!("{} bytes, not {CHIP_ID_SIZE}", id.len()),
                )
            })?;
        let mut keys = Self {
            ark_key,
            ask_key,
            vcek_key,
            ark: read_cert(dir, files::ARK_CERT)?,
            ask: read_cert(dir, files::ASK_CERT)?,
            vcek: read_cert(dir, files::VCEK_CERT)?,
            chip_id,
            tcb: 0,
        };
        keys.tcb = keys
            .check()
            .map_err(|(file, reason)| corrupt(file, reason))?;
        Ok(keys)
    }

    /// Make a new set in memory: RSA-4096 ARK and ASK, a P-384 VCEK, a random chip
    /// ID, the VCEK issued for [`EMULATED_TCB`]. Takes seconds.
    pub fn generate() -> Result<Self, EmulatedKeysError> {
        Self::generate_with(RSA_KEY_BITS)
    }

    fn generate_with(rsa_bits: usize) -> Result<Self, EmulatedKeysError> {
        let failed =
            |what: &str, e: &dyn fmt::Display| EmulatedKeysError::Generate(format!("{what}: {e}"));
        let ark_key = RsaPrivateKey::new(&mut random::rng(), rsa_bits)
            .map_err(|e| failed("the ARK's key", &e))?;
        let ask_key = RsaPrivateKey::new(&mut random::rng(), rsa_bits)
            .map_err(|e| failed("the ASK's key", &e))?;
        let vcek_key = p384::ecdsa::SigningKey::random(&mut random::rng());
        let chip_id: [u8; CHIP_ID_SIZE] = random::bytes().map_err(|e| failed("the chip ID", &e))?;

        let from = SystemTime::now() - BACKDATE;
        let ark = issue(
            &Template {
                subject: ARK_COMMON_NAME,
                issuer: ARK_COMMON_NAME,
                public_key: rsa_spki(&ark_key)?,
                from,
                years: CA_YEARS,
                extensions: ca_extensions(
                    None,
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
                )?,
            },
            &ark_key,
        )?;
        let ask = issue(
            &Template {
                subject: ASK_COMMON_NAME,
                issuer: ARK_COMMON_NAME,
                public_key: rsa_spki(&ask_key)?,
                from,
                years: CA_YEARS,
                extensions: ca_extensions(Some(0), KeyUsage(KeyUsages::KeyCertSign.into()))?,
            },
            &ark_key,
        )?;
        let vcek_spki = vcek_key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| failed("the VCEK's public key", &e))?;
        let vcek = issue(
            &Template {
                subject: VCEK_COMMON_NAME,
                issuer: ASK_COMMON_NAME,
                public_key: SubjectPublicKeyInfoOwned::from_der(vcek_spki.as_bytes())
                    .map_err(|e| failed("the VCEK's public key", &e))?,
                from,
                years: VCEK_YEARS,
                extensions: vcek_extensions(EMULATED_TCB_VERSION, &chip_id)?,
            },
            &ask_key,
        )?;
        let mut keys = Self {
            ark_key,
            ask_key,
            vcek_key,
            ark,
            ask,
            vcek,
            chip_id,
            tcb: EMULATED_TCB,
        };
        // The new set must pass the checks a load makes, with the verifier's code.
        keys.tcb = keys
            .check()
            .map_err(|(file, reason)| EmulatedKeysError::Generate(format!("{file}: {reason}")))?;
        Ok(keys)
    }

    /// Sign an ATTESTATION_REPORT as the VCEK: ECDSA P-384 with SHA-384 over bytes
    /// `[0, 0x2A0)`, R at 0x2A0 and S at 0x2E8, each little-endian and zero-padded
    /// to 72 bytes, the rest of the signature area zero (docs/specs.md 4.2). The caller
    /// fills the signed part (`signature_algo` 1, `signer_info` naming the VCEK,
    /// [`Self::tcb`] as `reported_tcb`, [`Self::chip_id`]).
    pub fn sign_report(&self, report: &mut [u8; ATTESTATION_REPORT_SIZE]) {
        let signature: p384::ecdsa::Signature = self.vcek_key.sign(&report[..SIGNED_SIZE]);
        let (r, s) = signature.split_bytes();
        let area = &mut report[SIGNED_SIZE..];
        area.fill(0);
        for (field, big_endian) in area.chunks_exact_mut(ECDSA_P384_COMPONENT_SIZE).zip([r, s]) {
            for (to, from) in field.iter_mut().zip(big_endian.iter().rev()) {
                *to = *from;
            }
        }
    }

    /// The TCB the VCEK was issued for, as a raw TCB_VERSION (Milan layout): the
    /// value of `current_tcb`, `reported_tcb`, `committed_tcb` and `launch_tcb`.
    pub fn tcb(&self) -> u64 {
        self.tcb
    }

    /// The emulated chip ID (the VCEK's hwID): the report's `chip_id`.
    pub fn chip_id(&self) -> &[u8; CHIP_ID_SIZE] {
        &self.chip_id
    }

    /// The VCEK certificate.
    pub fn vcek(&self) -> &Cert {
        &self.vcek
    }

    /// The VCEK certificate, DER.
    pub fn vcek_der(&self) -> &[u8] {
        self.vcek.der()
    }

    /// The VCEK certificate, PEM.
    pub fn vcek_pem(&self) -> String {
        pem(&self.vcek)
    }

    /// The ASK then the ARK as a PEM bundle, the form of AMD's `cert_chain`.
    pub fn cert_chain_pem(&self) -> String {
        [pem(&self.ask), pem(&self.ark)].concat()
    }

    /// The emulated ARK's CRL as of `at`, valid for [`CRL_VALIDITY`]: empty, as
    /// AMD's lists only revoked ASKs and the emulated ASK is never revoked. Signed
    /// like AMD's (RSASSA-PSS SHA-384 by the ARK), so `nacre verify` checks it with
    /// the code that checks AMD's.
    pub fn crl(&self, at: SystemTime) -> Result<Crl, EmulatedKeysError> {
        self.crl_revoking(at, &[])
    }

    /// The emulated ARK's CRL as of `at`, listing `revoked` as revoked at `at`.
    pub fn crl_revoking(
        &self,
        at: SystemTime,
        revoked: &[&Cert],
    ) -> Result<Crl, EmulatedKeysError> {
        let algorithm = pss_algorithm()?;
        let entries = revoked
            .iter()
            .map(|cert| {
                Ok(RevokedCert {
                    serial_number: cert.certificate().tbs_certificate.serial_number.clone(),
                    revocation_date: x509_time(at)?,
                    crl_entry_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, EmulatedKeysError>>()?;
        let number = CrlNumber(
            Uint::new(
                &at.duration_since(UNIX_EPOCH)
                    .map_err(build_error)?
                    .as_secs()
                    .to_be_bytes(),
            )
            .map_err(build_error)?,
        );
        let tbs = TbsCertList {
            version: Version::V2,
            signature: algorithm.clone(),
            issuer: self.ark.certificate().tbs_certificate.subject.clone(),
            this_update: x509_time(at)?,
            next_update: Some(x509_time(at + CRL_VALIDITY)?),
            revoked_certificates: (!entries.is_empty()).then_some(entries),
            crl_extensions: Some(vec![extension(
                CrlNumber::OID,
                false,
                number.to_der().map_err(build_error)?,
            )?]),
        };
        let tbs_der = tbs.to_der().map_err(build_error)?;
        let list = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: algorithm,
            signature: BitString::from_bytes(&pss_sign(&self.ark_key, &tbs_der))
                .map_err(build_error)?,
        };
        Crl::from_der(&list.to_der().map_err(build_error)?).map_err(build_error)
    }

    /// The emulated ARK and ASK, as a root a verifier can be told to trust.
    pub fn root(&self) -> AmdRoot {
        AmdRoot {
            product: PRODUCT,
            ark: self.ark.clone(),
            ask: self.ask.clone(),
        }
    }

    /// Check that the set agrees with itself, with the verifier's code; gives the
    /// TCB the VCEK was issued for, or the file at fault and why.
    fn check(&self) -> Result<u64, (&'static str, String)> {
        let key_matches = |file, cert: &Cert, spki: Result<Vec<u8>, String>| {
            let in_cert = cert
                .certificate()
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .map_err(|e| e.to_string());
            match (spki, in_cert) {
                (Ok(key), Ok(in_cert)) if key == in_cert => Ok(()),
                (Ok(_), Ok(_)) => Err((file, "the key is not the certificate's".to_owned())),
                (Err(e), _) | (_, Err(e)) => Err((file, e)),
            }
        };
        let rsa_der = |key: &RsaPrivateKey| {
            key.to_public_key()
                .to_public_key_der()
                .map(|d| d.as_bytes().to_vec())
                .map_err(|e| e.to_string())
        };
        key_matches(files::ARK_KEY, &self.ark, rsa_der(&self.ark_key))?;
        key_matches(files::ASK_KEY, &self.ask, rsa_der(&self.ask_key))?;
        let vcek_der = self
            .vcek_key
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| e.to_string());
        key_matches(files::VCEK_KEY, &self.vcek, vcek_der)?;

        check_ca(&self.ark, ARK_COMMON_NAME, &self.ark).map_err(|r| (files::ARK_CERT, r))?;
        check_ca(&self.ask, ASK_COMMON_NAME, &self.ark).map_err(|r| (files::ASK_CERT, r))?;
        let vcek = |reason: String| (files::VCEK_CERT, reason);
        if !is_emulated(&self.vcek) || self.vcek.subject_name() != VCEK_COMMON_NAME {
            return Err(vcek(format!(
                "\"{}\" is not the emulated VCEK",
                self.vcek.subject_name()
            )));
        }
        self.vcek
            .verify_issued_by(&self.ask)
            .map_err(|e| vcek(format!("not signed by the emulated ASK: {e}")))?;
        match vcek_product(&self.vcek) {
            Ok(PRODUCT) => {}
            Ok(other) => return Err(vcek(format!("issued for {other}, not {PRODUCT}"))),
            Err(e) => return Err(vcek(e.to_string())),
        }
        let spl = VcekTcb::of(&self.vcek);
        let (Some(bootloader), Some(tee), Some(snp), Some(microcode)) =
            (spl.bootloader, spl.tee, spl.snp, spl.microcode)
        else {
            return Err(vcek("a TCB extension is missing".to_owned()));
        };
        if vcek_hw_id(&self.vcek, PRODUCT).as_deref() != Some(&self.chip_id[..]) {
            return Err((
                files::CHIP_ID,
                "the chip ID is not the VCEK's hwID".to_owned(),
            ));
        }
        Ok(TcbVersion {
            fmc: None,
            bootloader,
            tee,
            snp,
            microcode,
        }
        .encode(PRODUCT))
    }

    /// Write the set to a new directory beside `dir` and rename it to `dir`. If
    /// another process put a set there first, that one is loaded and returned.
    fn store_new(self, dir: &Path) -> Result<Self, EmulatedKeysError> {
        let io = |action, path: &Path, source| EmulatedKeysError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        match crate::emulated::publish_dir(dir, |tmp| self.write_files(tmp), io)? {
            crate::emulated::Published::Ours => Ok(self),
            // Another process made a set first: use it, drop ours.
            crate::emulated::Published::Theirs => Self::load(dir),
        }
    }

    fn write_files(&self, dir: &Path) -> Result<(), EmulatedKeysError> {
        let failed = |file: &str, e: &dyn fmt::Display| {
            EmulatedKeysError::Generate(format!("cannot encode {file}: {e}"))
        };
        let rsa_pem = |file, key: &RsaPrivateKey| {
            key.to_pkcs8_pem(LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|e| failed(file, &e))
        };
        let vcek_key = self
            .vcek_key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| failed(files::VCEK_KEY, &e))?;
        let contents = [
            (files::ARK_CERT, pem(&self.ark)),
            (files::ASK_CERT, pem(&self.ask)),
            (files::VCEK_CERT, pem(&self.vcek)),
            (files::ARK_KEY, rsa_pem(files::ARK_KEY, &self.ark_key)?),
            (files::ASK_KEY, rsa_pem(files::ASK_KEY, &self.ask_key)?),
            (files::VCEK_KEY, vcek_key),
            (files::CHIP_ID, hex::encode(self.chip_id) + "\n"),
        ];
        for (file, text) in contents {
            let path = dir.join(file);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()
                })
                .map_err(|source| EmulatedKeysError::Io {
                    action: "write",
                    path,
                    source,
                })?;
        }
        Ok(())
    }
}

/// Whether `dir` exists and holds anything.
fn has_entries(dir: &Path) -> Result<bool, EmulatedKeysError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(EmulatedKeysError::Io {
            action: "read the emulated key directory",
            path: dir.to_owned(),
            source,
        }),
    }
}

fn require_files(dir: &Path, names: &[&'static str]) -> Result<(), EmulatedKeysError> {
    let missing: Vec<&'static str> = names
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EmulatedKeysError::Incomplete {
            dir: dir.to_owned(),
            missing,
        })
    }
}

fn read_text(dir: &Path, file: &'static str) -> Result<String, EmulatedKeysError> {
    let path = dir.join(file);
    let bytes = crate::files::read_input_io(&path, crate::files::KEY_FILE).map_err(|source| {
        EmulatedKeysError::Io {
            action: "read",
            path,
            source,
        }
    })?;
    String::from_utf8(bytes).map_err(|_| EmulatedKeysError::Corrupt {
        dir: dir.to_owned(),
        file,
        reason: "not text".to_owned(),
    })
}

/// The one certificate of a PEM file.
fn read_cert(dir: &Path, file: &'static str) -> Result<Cert, EmulatedKeysError> {
    let corrupt = |reason| EmulatedKeysError::Corrupt {
        dir: dir.to_owned(),
        file,
        reason,
    };
    let certs = Cert::bundle_from_pem(read_text(dir, file)?.as_bytes())
        .map_err(|e| corrupt(format!("not a PEM certificate ({e})")))?;
    let [cert]: [Cert; 1] = certs
        .try_into()
        .map_err(|c: Vec<Cert>| corrupt(format!("{} certificates, not one", c.len())))?;
    Ok(cert)
}

/// Check an emulated ARK or ASK: its names, and its signature by `issuer`.
fn check_ca(cert: &Cert, common_name: &str, issuer: &Cert) -> Result<(), String> {
    if !is_emulated(cert) || cert.subject_name() != common_name {
        return Err(format!(
            "\"{}\" is not the emulated {common_name}",
            cert.subject_name()
        ));
    }
    cert.verify_issued_by(issuer)
        .map_err(|e| format!("not signed by {}: {e}", issuer.subject_name()))
}

fn pem(cert: &Cert) -> String {
    // Encoding a certificate that decoded cannot fail; an empty block would not
    // load back and be reported then.
    x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, cert.der())
        .unwrap_or_default()
}

/// What a certificate says, besides its key and signature.
struct Template<'a> {
    subject: &'a str,
    issuer: &'a str,
    public_key: SubjectPublicKeyInfoOwned,
    from: SystemTime,
    years: u32,
    extensions: Vec<Extension>,
}

fn build_error(e: impl fmt::Display) -> EmulatedKeysError {
    EmulatedKeysError::Generate(format!("cannot encode a certificate: {e}"))
}

/// RSASSA-PSS with SHA-384, MGF1-SHA-384 and salt 48, AMD's signature algorithm.
fn pss_algorithm() -> Result<AlgorithmIdentifierOwned, EmulatedKeysError> {
    Ok(AlgorithmIdentifierOwned {
        oid: OID_RSASSA_PSS,
        parameters: Some(
            u8::try_from(AMD_PSS_SALT_LEN)
                .map_err(build_error)
                .and_then(|salt| {
                    Any::encode_from(&RsaPssParams::new::<Sha384>(salt)).map_err(build_error)
                })?,
        ),
    })
}

/// `signer`'s [`pss_algorithm`] signature over `bytes`.
fn pss_sign(signer: &RsaPrivateKey, bytes: &[u8]) -> Vec<u8> {
    BlindedSigningKey::<Sha384>::new_with_salt_len(signer.clone(), AMD_PSS_SALT_LEN)
        .sign_with_rng(&mut random::rng(), bytes)
        .to_vec()
}

/// Issue the certificate `t` signed by `signer` with RSASSA-PSS SHA-384,
/// MGF1-SHA-384, salt 48, as AMD signs.
fn issue(t: &Template<'_>, signer: &RsaPrivateKey) -> Result<Cert, EmulatedKeysError> {
    let algorithm = pss_algorithm()?;
    let mut serial: [u8; 16] = random::bytes().map_err(build_error)?;
    // Positive, and 16 bytes long (RFC 5280 section 4.1.2.2).
    serial[0] = serial[0] & 0x7f | 0x40;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(build_error)?,
        signature: algorithm.clone(),
        issuer: name(t.issuer)?,
        validity: Validity {
            not_before: x509_time(t.from)?,
            not_after: x509_time(t.from + YEAR * t.years)?,
        },
        subject: name(t.subject)?,
        subject_public_key_info: t.public_key.clone(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(t.extensions.clone()),
    };
    let tbs_der = tbs.to_der().map_err(build_error)?;
    let signature = pss_sign(signer, &tbs_der);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature).map_err(build_error)?,
    };
    Cert::from_der(&cert.to_der().map_err(build_error)?).map_err(build_error)
}

/// `O=nacre emulated security processor, CN=common_name`.
fn name(common_name: &str) -> Result<Name, EmulatedKeysError> {
    let rdn = |oid, text: &str| -> Result<_, x509_cert::der::Error> {
        let value = Any::encode_from(&Utf8StringRef::new(text)?)?;
        let set = SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])?;
        Ok(RelativeDistinguishedName(set))
    };
    let rdns: Result<Vec<_>, x509_cert::der::Error> = [
        rdn(OID_ORGANIZATION, EMULATED_ORGANIZATION),
        rdn(OID_COMMON_NAME, common_name),
    ]
    .into_iter()
    .collect();
    Ok(RdnSequence(rdns.map_err(build_error)?))
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 section 4.1.2.5),
/// to the second.
fn x509_time(at: SystemTime) -> Result<Time, EmulatedKeysError> {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_err(build_error)?
        .as_secs();
    let at = UNIX_EPOCH + Duration::from_secs(secs);
    UtcTime::from_system_time(at)
        .map(Time::UtcTime)
        .or_else(|_| GeneralizedTime::from_system_time(at).map(Time::GeneralTime))
        .map_err(build_error)
}

fn rsa_spki(key: &RsaPrivateKey) -> Result<SubjectPublicKeyInfoOwned, EmulatedKeysError> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(build_error)?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(build_error)
}

fn extension(
    oid: x509_cert::der::oid::ObjectIdentifier,
    critical: bool,
    value: Vec<u8>,
) -> Result<Extension, EmulatedKeysError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).map_err(build_error)?,
    })
}

/// basicConstraints (cA, with `path_len`) and keyUsage, both critical, as AMD's ARK
/// and ASK have them.
fn ca_extensions(
    path_len: Option<u8>,
    usage: KeyUsage,
) -> Result<Vec<Extension>, EmulatedKeysError> {
    let constraints = BasicConstraints {
        ca: true,
        path_len_constraint: path_len,
    };
    Ok(vec![
        extension(
            OID_BASIC_CONSTRAINTS,
            true,
            constraints.to_der().map_err(build_error)?,
        )?,
        extension(OID_KEY_USAGE, true, usage.to_der().map_err(build_error)?)?,
    ])
}

/// AMD's VCEK extensions (docs/specs.md 4.5), encoded as on AMD's Milan VCEKs:
/// structVersion and the SPLs as DER INTEGERs, productName as an IA5String, hwID as
/// the 64 raw bytes of the chip ID.
fn vcek_extensions(
    tcb: TcbVersion,
    chip_id: &[u8; CHIP_ID_SIZE],
) -> Result<Vec<Extension>, EmulatedKeysError> {
    let integer = |v: u8| v.to_der().map_err(build_error);
    let mut extensions = vec![
        extension(vcek_oid::STRUCT_VERSION, false, integer(0)?)?,
        extension(
            vcek_oid::PRODUCT_NAME,
            false,
            Ia5StringRef::new(PRODUCT_NAME)
                .and_then(|s| s.to_der())
                .map_err(build_error)?,
        )?,
        extension(vcek_oid::BL_SPL, false, integer(tcb.bootloader)?)?,
        extension(vcek_oid::TEE_SPL, false, integer(tcb.tee)?)?,
    ];
    for oid in vcek_oid::SPL_4_TO_7 {
        extensions.push(extension(oid, false, integer(0)?)?);
    }
    extensions.extend([
        extension(vcek_oid::SNP_SPL, false, integer(tcb.snp)?)?,
        extension(vcek_oid::UCODE_SPL, false, integer(tcb.microcode)?)?,
        extension(vcek_oid::HW_ID, false, chip_id.to_vec())?,
    ]);
    Ok(extensions)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod fixture {
    //! One emulated hierarchy for the tests of a run, with RSA-2048 ARK and ASK: the
    //! product's RSA-4096 keys take seconds to make, and one test makes them.

    use super::*;
    use nacre_shared_abi::snp::report::AttestationReport;
    use nacre_verifier::test_vectors::read;
    use std::sync::OnceLock;
    use zerocopy::IntoBytes;

    /// RSA key size of the test hierarchies.
    pub const TEST_RSA_BITS: usize = 2048;

    /// The shared test hierarchy.
    pub fn keys() -> &'static EmulatedSnpKeys {
        static KEYS: OnceLock<EmulatedSnpKeys> = OnceLock::new();
        KEYS.get_or_init(|| EmulatedSnpKeys::generate_with(TEST_RSA_BITS).expect("test keys"))
    }

    /// A new empty scratch directory for test `name` (what an earlier run left there
    /// is removed).
    pub fn scratch(name: &str) -> PathBuf {
        let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tmp"),
            PathBuf::from,
        );
        let dir = base.join(format!("nacre-emulated-keys-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a scratch directory");
        dir
    }

    /// The real Milan report of `tests/vectors` with `measurement` and
    /// `report_data`, the emulated TCB and chip ID of `keys`, signed by `keys`.
    pub fn signed_report(
        keys: &EmulatedSnpKeys,
        measurement: [u8; 48],
        report_data: [u8; 64],
    ) -> [u8; ATTESTATION_REPORT_SIZE] {
        signed_report_with(keys, |r| {
            r.measurement = measurement;
            r.report_data = report_data;
        })
    }

    /// The real Milan report of `tests/vectors` with the emulated TCB and chip ID of
    /// `keys`, changed by `edit`, then signed by `keys`: evidence whose every field a
    /// test chooses and whose signature verifies.
    pub fn signed_report_with(
        keys: &EmulatedSnpKeys,
        edit: impl FnOnce(&mut AttestationReport),
    ) -> [u8; ATTESTATION_REPORT_SIZE] {
        let bytes = decode_hex(&read("virtee-sev", "report_milan.hex")).expect("the report is hex");
        let mut r = AttestationReport::from_bytes(&bytes).expect("the Milan report");
        r.chip_id = *keys.chip_id();
        r.current_tcb = keys.tcb();
        r.reported_tcb = keys.tcb();
        r.committed_tcb = keys.tcb();
        r.launch_tcb = keys.tcb();
        edit(&mut r);
        let mut report = [0u8; ATTESTATION_REPORT_SIZE];
        report.copy_from_slice(r.as_bytes());
        keys.sign_report(&mut report);
        report
    }
}
