//! The certificates that endorse an SEV-SNP attestation report from real hardware:
//! the VCEK of the chip and TCB that signed it, the ASK and ARK of its product, and
//! optionally the ARK's CRL. The host does not make them: they come from AMD's key
//! distribution service, kept in a directory (`nacre attest --snp-certs DIR`, else
//! `$NACRE_SNP_CERTS`, else `$XDG_CACHE_HOME/nacre/snp-certs`, else
//! `~/.cache/nacre/snp-certs`) as the files `snphost` and AMD's service name them:
//! `vcek.der` or `vcek.pem`, `cert_chain.pem` (ASK then ARK) or `ask.*` and `ark.*`,
//! and `crl.der` or `crl.pem`.

use crate::files;
use nacre_verifier::crl::Crl;
use nacre_verifier::evidence::Endorsements;
use nacre_verifier::Cert;
use std::path::{Path, PathBuf};

/// The certificate directory nacre looks in when none is given.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NACRE_SNP_CERTS") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("nacre").join("snp-certs"))
}

/// The first of `dir/NAME.der`, `dir/NAME.pem` that exists.
fn either(dir: &Path, name: &str) -> Option<PathBuf> {
    ["der", "pem"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
}

/// The VCEK in `dir`, if there is one.
pub fn vcek_in(dir: &Path) -> Option<PathBuf> {
    either(dir, "vcek")
}

fn pem_of(cert: &Cert) -> String {
    use x509_cert::der::pem::{encode_string, LineEnding};
    // Encoding bytes as base64 lines cannot fail.
    encode_string("CERTIFICATE", LineEnding::LF, cert.der()).unwrap_or_default()
}

/// Read an input of `kind`, with a message that says why not.
fn read(path: &Path, kind: files::Input) -> Result<Vec<u8>, String> {
    files::read_input(path, kind).map_err(|e| files::error_text(&e))
}

fn read_cert(path: &Path) -> Result<Cert, String> {
    let bytes = read(path, files::CERTIFICATE)?;
    Cert::from_der_or_pem(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The endorsements in `dir`: the VCEK (required), the ASK and ARK and the CRL when
/// present (without them `nacre verify` uses its built-in AMD chain and checks no
/// revocation).
pub fn endorsements(dir: &Path) -> Result<Endorsements, String> {
    let vcek = vcek_in(dir).ok_or_else(|| {
        format!(
            "no vcek.der or vcek.pem in {}: the VCEK of this chip and TCB comes from AMD's \
             key distribution service (`snphost fetch vcek`); --snp-certs names the directory",
            dir.display()
        )
    })?;
    let vcek = pem_of(&read_cert(&vcek)?);
    let chain_file = dir.join("cert_chain.pem");
    let cert_chain = if chain_file.is_file() {
        let text = read(&chain_file, files::CERTIFICATE)?;
        let certs =
            Cert::bundle_from_pem(&text).map_err(|e| format!("{}: {e}", chain_file.display()))?;
        Some(certs.iter().map(pem_of).collect::<String>())
    } else {
        match (either(dir, "ask"), either(dir, "ark")) {
            (Some(ask), Some(ark)) => Some(pem_of(&read_cert(&ask)?) + &pem_of(&read_cert(&ark)?)),
            _ => None,
        }
    };
    let crl = match either(dir, "crl") {
        Some(path) => {
            let bytes = read(&path, files::CRL)?;
            Some(
                Crl::from_der_or_pem(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .pem(),
            )
        }
        None => None,
    };
    Ok(Endorsements {
        vcek: Some(vcek),
        cert_chain,
        crl,
        collateral: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_a_vcek_says_where_it_comes_from() {
        let dir = tempfile::tempdir().unwrap();
        let err = endorsements(dir.path()).unwrap_err();
        assert!(err.contains("vcek.der"), "{err}");
        assert!(vcek_in(dir.path()).is_none());
    }

    fn vector(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/virtee-sev")
            .join(name)
    }

    #[test]
    fn a_vcek_with_ask_and_ark_files_gives_pem_endorsements() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(vector("vcek_milan.der"), dir.path().join("vcek.der")).unwrap();
        let e = endorsements(dir.path()).unwrap();
        assert!(e
            .vcek
            .as_deref()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(e.cert_chain.is_none() && e.crl.is_none() && e.collateral.is_none());
        std::fs::copy(vector("milan_ask.pem"), dir.path().join("ask.pem")).unwrap();
        std::fs::copy(vector("milan_ark.pem"), dir.path().join("ark.pem")).unwrap();
        let chain = endorsements(dir.path()).unwrap().cert_chain.unwrap();
        let certs = Cert::bundle_from_pem(chain.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        assert!(certs[0].verify_issued_by(&certs[1]).is_ok(), "ASK then ARK");
    }

    #[test]
    fn a_vcek_that_is_not_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vcek.der"), b"not DER").unwrap();
        let err = endorsements(dir.path()).unwrap_err();
        assert!(err.contains("vcek.der"), "{err}");
    }
}
