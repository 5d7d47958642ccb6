//! Certificate revocation lists (RFC 5280 section 5): AMD's, which its key
//! distribution service publishes per product (`/vcek/v1/{product}/crl`, signed by
//! the ARK with RSASSA-PSS like the ARK's certificates, listing revoked ASKs), and
//! the emulated security processor's, made the same way.
//!
//! Only complete X.509 v2 CRLs as RFC 5280 profiles them are read: version 2, the
//! same signature algorithm inside and outside the signed part, a next update time,
//! and no critical extension (a delta CRL, an issuing distribution point that
//! narrows the scope, an indirect CRL's certificate issuer would all be critical and
//! would make the list not the whole truth). A CRL is then checked against the
//! certificate that must have issued it (name and signature), its update times
//! against the verification time, and its entries for the serial number of the
//! certificate in question.

use std::time::SystemTime;

use thiserror::Error;
use x509_cert::crl::CertificateList;
use x509_cert::der::Decode;
use x509_cert::Version;

use super::time::format_rfc3339;
use super::x509::{display_name, find, tbs_bytes, verify_signed, Cert, X509Error};

/// A CRL that cannot be decoded.
#[derive(Debug, Error)]
pub enum CrlError {
    /// Not DER.
    #[error("not a DER X.509 v2 CRL")]
    Der(#[source] x509_cert::der::Error),
    /// A CRL this verifier does not read (see the module documentation).
    #[error("an unsupported CRL: {0}")]
    Unsupported(&'static str),
    /// A PEM block that does not decode or is not a CRL.
    #[error("not a PEM CRL: {0}")]
    Pem(String),
}

/// A decoded CRL with the DER it came from.
#[derive(Clone, Debug)]
pub struct Crl {
    der: Vec<u8>,
    crl: CertificateList,
}

impl PartialEq for Crl {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Crl {}

/// The PEM label of a CRL (RFC 7468 section 6).
const PEM_LABEL: &str = "X509 CRL";

impl Crl {
    /// Decode a DER CRL.
    pub fn from_der(der: &[u8]) -> Result<Self, CrlError> {
        let crl = CertificateList::from_der(der).map_err(CrlError::Der)?;
        tbs_bytes(der).map_err(CrlError::Der)?;
        let tbs = &crl.tbs_cert_list;
        if tbs.version != Version::V2 {
            return Err(CrlError::Unsupported("not version 2"));
        }
        if tbs.signature != crl.signature_algorithm {
            return Err(CrlError::Unsupported(
                "the signed and the outer signature algorithms differ",
            ));
        }
        if tbs.next_update.is_none() {
            return Err(CrlError::Unsupported("no next update time"));
        }
        let critical =
            |e: &Option<Vec<x509_cert::ext::Extension>>| e.iter().flatten().any(|e| e.critical);
        if critical(&tbs.crl_extensions) {
            return Err(CrlError::Unsupported("a critical CRL extension"));
        }
        if tbs
            .revoked_certificates
            .iter()
            .flatten()
            .any(|r| critical(&r.crl_entry_extensions))
        {
            return Err(CrlError::Unsupported("a critical CRL entry extension"));
        }
        Ok(Self {
            der: der.to_vec(),
            crl,
        })
    }

    /// Decode a CRL given as DER or as one PEM `X509 CRL` block.
    pub fn from_der_or_pem(bytes: &[u8]) -> Result<Self, CrlError> {
        let Some(start) = find(bytes, b"-----BEGIN ") else {
            return Self::from_der(bytes);
        };
        let (label, der) = x509_cert::der::pem::decode_vec(bytes[start..].trim_ascii_end())
            .map_err(|e| CrlError::Pem(e.to_string()))?;
        if label != PEM_LABEL {
            return Err(CrlError::Pem(format!(
                "the block is labelled {label:?}, not {PEM_LABEL:?}"
            )));
        }
        Self::from_der(&der)
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding.
    pub fn pem(&self) -> String {
        // Encoding bytes as base64 lines cannot fail.
        x509_cert::der::pem::encode_string(
            PEM_LABEL,
            x509_cert::der::pem::LineEnding::LF,
            &self.der,
        )
        .unwrap_or_default()
    }

    /// The issuer's common name, or the whole issuer name when it has none.
    pub fn issuer_name(&self) -> String {
        display_name(&self.crl.tbs_cert_list.issuer)
    }

    /// When the CRL was issued.
    pub fn this_update(&self) -> SystemTime {
        self.crl.tbs_cert_list.this_update.to_system_time()
    }

    /// When the next CRL is due.
    pub fn next_update(&self) -> SystemTime {
        // `from_der` refuses a CRL without one.
        self.crl
            .tbs_cert_list
            .next_update
            .map_or(SystemTime::UNIX_EPOCH, |t| t.to_system_time())
    }

    /// Verify that `issuer` issued this CRL: its name and its key's signature.
    pub fn verify_issued_by(&self, issuer: &Cert) -> Result<(), String> {
        let tbs = &self.crl.tbs_cert_list;
        let subject = &issuer.certificate().tbs_certificate.subject;
        if &tbs.issuer != subject {
            return Err(format!(
                "the CRL's issuer is \"{}\", not \"{subject}\"",
                tbs.issuer
            ));
        }
        tbs_bytes(&self.der)
            .map_err(X509Error::Der)
            .and_then(|signed| {
                verify_signed(
                    signed,
                    &self.crl.signature_algorithm,
                    &self.crl.signature,
                    issuer,
                )
            })
            .map_err(|e| format!("the CRL's signature: {e}"))
    }

    /// When `cert` was revoked, if this CRL lists its serial number.
    pub fn revocation_of(&self, cert: &Cert) -> Option<SystemTime> {
        let serial = &cert.certificate().tbs_certificate.serial_number;
        self.crl
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .find(|r| &r.serial_number == serial)
            .map(|r| r.revocation_date.to_system_time())
    }

    /// Whether `at` lies between the issue and the next update (both included);
    /// `Err` says which end it is outside of.
    pub fn current_at(&self, at: SystemTime) -> Result<String, String> {
        let from = self.this_update();
        let issued = format!("issued {}", format_rfc3339(from));
        let next = self.next_update();
        if at < from {
            Err(format!(
                "{issued}, after the verification time {}",
                format_rfc3339(at)
            ))
        } else if at > next {
            Err(format!(
                "{issued}, next update {} is before the verification time {}: out of date",
                format_rfc3339(next),
                format_rfc3339(at)
            ))
        } else {
            Ok(format!("{issued}, next update {}", format_rfc3339(next)))
        }
    }
}
