//! The evidence file `nacre attest` writes and `nacre verify` reads: one JSON object
//! holding the report or quote and the certificates needed to check it, so a
//! verifier needs nothing else (no network, no other file).
//!
//! ```json
//! {
//!   "format": "nacre-evidence",
//!   "version": 1,
//!   "platform": "emulated-snp",
//!   "report": "<the 0x4A0-byte ATTESTATION_REPORT in hex>",
//!   "vcek": "<PEM of the VCEK that signed it>",
//!   "cert_chain": "<PEM of the ASK, then the ARK>",
//!   "crl": "<PEM of the ARK's CRL>"
//! }
//! ```
//!
//! `crl` is optional; `nacre attest` adds the emulated ARK's on emulated-snp.
//! A TDX evidence file has `"quote"` (hex) instead of `"report"`, and no certificates:
//! the quote carries its PCK chain. It may have `"collateral"`, the DCAP collateral
//! (TCB info, QE identity, CRLs and their issuer chains) as the JSON object dcap-qvl
//! writes for a `QuoteCollateralV3`, with which the verifier appraises the TCB status;
//! `nacre attest` adds it on emulated-tdx. The report data of evidence made for a
//! nonce is [`nonce_report_data`] of it. Nothing in the file is trusted: the verifier
//! checks the chain, the CRL and the collateral against its own roots. Whether the
//! file has a CRL or collateral, and which still-current one, is the prover's choice,
//! which `nacre verify` says (and `--require-revocation` refuses to leave out).

use thiserror::Error;

use super::tdx::Collateral;
use super::{decode_hex, Evidence};
use sha2::{Digest, Sha512};

/// The `format` member.
pub const FORMAT: &str = "nacre-evidence";
/// The `version` member this build writes and reads.
pub const VERSION: u64 = 1;

/// Longest nonce `nacre attest` takes, in bytes.
pub const MAX_NONCE: usize = 1024;

/// What the prefix of [`nonce_report_data`] says: the report data is a nacre nonce
/// binding, not some other use of the 64 bytes.
const NONCE_DOMAIN: &[u8] = b"nacre attest nonce v1\0";

/// The REPORT_DATA that binds evidence to `nonce`: SHA-512 of a fixed domain string
/// and the nonce. Any length of nonce fits the 64 bytes, and report data an app asks
/// for for its own purposes is unlikely to collide with it.
pub fn nonce_report_data(nonce: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(NONCE_DOMAIN);
    h.update(nonce);
    h.finalize().into()
}

/// A nonce from hex: 1 to [`MAX_NONCE`] bytes.
pub fn parse_nonce(text: &str) -> Result<Vec<u8>, String> {
    let nonce = decode_hex(text.as_bytes())?;
    if nonce.is_empty() || nonce.len() > MAX_NONCE {
        return Err(format!(
            "a nonce is 1 to {MAX_NONCE} bytes, this one is {}",
            nonce.len()
        ));
    }
    Ok(nonce)
}

/// Why an evidence file was refused.
#[derive(Debug, Error)]
pub enum EvidenceFileError {
    /// Not JSON, or not an object.
    #[error("not a nacre evidence file: {0}")]
    NotJson(String),
    /// A member is missing or has the wrong type.
    #[error("the evidence file's \"{0}\" is missing or not a string")]
    Member(&'static str),
    /// A version this build does not read.
    #[error("evidence file version {0} is not supported (this nacre reads version {VERSION})")]
    Version(String),
    /// Neither or both of report and quote.
    #[error("an evidence file holds exactly one of \"report\" and \"quote\"")]
    Kind,
    /// The report or quote does not decode.
    #[error("the evidence file's {what}: {detail}")]
    Content {
        /// Which member.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// What an evidence file holds besides the report or quote, for
/// [`EvidenceFile::to_json`].
#[derive(Debug, Clone, Default)]
pub struct Endorsements {
    /// SNP: the VCEK (PEM).
    pub vcek: Option<String>,
    /// SNP: the ASK then the ARK (PEM).
    pub cert_chain: Option<String>,
    /// SNP: the ARK's CRL (PEM).
    pub crl: Option<String>,
    /// TDX: DCAP collateral.
    pub collateral: Option<Collateral>,
}

/// A decoded evidence file.
#[derive(Debug, Clone)]
pub struct EvidenceFile {
    /// The platform that produced it (`emulated-snp`, `emulated-tdx`, `snp`, `tdx`).
    pub platform: String,
    /// The report or quote.
    pub evidence: Evidence,
    /// SNP: the VCEK (PEM).
    pub vcek: Option<String>,
    /// SNP: the ASK then the ARK (PEM).
    pub cert_chain: Option<String>,
    /// SNP: the ARK's CRL (PEM).
    pub crl: Option<String>,
    /// TDX: DCAP collateral for the TCB status.
    pub collateral: Option<Collateral>,
}

impl EvidenceFile {
    /// Whether `bytes` look like an evidence file (a JSON object) rather than a bare
    /// report or quote.
    pub fn looks_like(bytes: &[u8]) -> bool {
        bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{')
    }

    /// Decode and check an evidence file.
    pub fn parse(bytes: &[u8]) -> Result<Self, EvidenceFileError> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| EvidenceFileError::NotJson(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| EvidenceFileError::NotJson("not a JSON object".into()))?;
        let string = |key: &'static str| -> Result<Option<&str>, EvidenceFileError> {
            match obj.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(EvidenceFileError::Member(key)),
            }
        };
        if string("format")? != Some(FORMAT) {
            return Err(EvidenceFileError::Member("format"));
        }
        match obj.get("version").and_then(serde_json::Value::as_u64) {
            Some(VERSION) => {}
            _ => {
                return Err(EvidenceFileError::Version(
                    obj.get("version")
                        .map_or_else(|| "(none)".into(), |v| shown(&v.to_string())),
                ))
            }
        }
        let platform = string("platform")?
            .ok_or(EvidenceFileError::Member("platform"))?
            .to_owned();
        let (what, text) = match (string("report")?, string("quote")?) {
            (Some(r), None) => ("report", r),
            (None, Some(q)) => ("quote", q),
            _ => return Err(EvidenceFileError::Kind),
        };
        let raw = decode_hex(text.as_bytes())
            .map_err(|detail| EvidenceFileError::Content { what, detail })?;
        let evidence = Evidence::parse(&raw).map_err(|e| EvidenceFileError::Content {
            what,
            detail: e.to_string(),
        })?;
        let kind_matches = matches!(
            (&evidence, what, platform.as_str()),
            (Evidence::Snp(_), "report", "snp" | "emulated-snp")
                | (Evidence::Tdx(_), "quote", "tdx" | "emulated-tdx")
        );
        if !kind_matches {
            return Err(EvidenceFileError::Content {
                what,
                detail: format!(
                    "platform {} with a {}",
                    shown(&platform),
                    evidence.describe()
                ),
            });
        }
        let collateral = match (obj.get("collateral"), &evidence) {
            (None, _) => None,
            (Some(value), Evidence::Tdx(_)) => Some(
                serde_json::from_value::<Collateral>(value.clone()).map_err(|e| {
                    EvidenceFileError::Content {
                        what: "collateral",
                        detail: format!("not dcap-qvl QuoteCollateralV3 JSON: {e}"),
                    }
                })?,
            ),
            (Some(_), Evidence::Snp(_)) => {
                return Err(EvidenceFileError::Content {
                    what: "collateral",
                    detail: "DCAP collateral is for TDX quotes, not SEV-SNP reports".into(),
                })
            }
        };
        Ok(Self {
            platform,
            evidence,
            vcek: string("vcek")?.map(str::to_owned),
            cert_chain: string("cert_chain")?.map(str::to_owned),
            crl: string("crl")?.map(str::to_owned),
            collateral,
        })
    }

    /// The file's JSON for `platform` and the raw `evidence` (a report or a quote),
    /// with what a verifier needs besides: `vcek`, `cert_chain` and `crl` (PEM) for
    /// a report, `collateral` for a quote.
    pub fn to_json(
        platform: &str,
        evidence: &Evidence,
        raw: &[u8],
        extra: &Endorsements,
    ) -> serde_json::Value {
        let mut v = serde_json::json!({
            "format": FORMAT,
            "version": VERSION,
            "platform": platform,
        });
        let key = match evidence {
            Evidence::Snp(_) => "report",
            Evidence::Tdx(_) => "quote",
        };
        v[key] = hex::encode(raw).into();
        for (key, pem) in [
            ("vcek", &extra.vcek),
            ("cert_chain", &extra.cert_chain),
            ("crl", &extra.crl),
        ] {
            if let Some(pem) = pem {
                v[key] = pem.as_str().into();
            }
        }
        if let Some(collateral) = &extra.collateral {
            // A derived Serialize of strings and byte vectors cannot fail.
            v["collateral"] = serde_json::to_value(collateral).unwrap_or_default();
        }
        v
    }
}

/// Text from the file as an error message shows it: control characters escaped (no
/// terminal sequence reaches the terminal), at most [`SHOWN_CHARS`] characters of it.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(SHOWN_CHARS) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().nth(SHOWN_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// The characters of a file's value an error message shows.
const SHOWN_CHARS: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_vectors;

    fn milan_report() -> Vec<u8> {
        decode_hex(&test_vectors::read("virtee-sev", "report_milan.hex")).unwrap()
    }

    #[test]
    fn the_nonce_binding_is_a_domain_separated_sha512() {
        let a = nonce_report_data(b"\x01\x02");
        assert_ne!(a, nonce_report_data(b"\x01\x03"));
        assert_ne!(a, nonce_report_data(b""));
        // Not the bare hash of the nonce.
        let bare: [u8; 64] = Sha512::digest(b"\x01\x02").into();
        assert_ne!(a, bare);
        assert_eq!(parse_nonce("0102").unwrap(), vec![1, 2]);
        assert!(parse_nonce("").is_err());
        assert!(parse_nonce("zz").is_err());
        assert!(parse_nonce(&"ab".repeat(MAX_NONCE + 1)).is_err());
    }

    #[test]
    fn evidence_files_round_trip_and_bad_ones_are_named() {
        let raw = milan_report();
        let evidence = Evidence::parse(&raw).unwrap();
        let json = EvidenceFile::to_json(
            "snp",
            &evidence,
            &raw,
            &Endorsements {
                vcek: Some("V".into()),
                cert_chain: Some("C".into()),
                crl: Some("R".into()),
                collateral: None,
            },
        );
        // A report from a TDX platform makes no sense.
        let mut tdx = json.clone();
        tdx["platform"] = "emulated-tdx".into();
        let e = EvidenceFile::parse(&serde_json::to_vec(&tdx).unwrap()).unwrap_err();
        assert!(e.to_string().contains("platform emulated-tdx"), "{e}");
        let text = serde_json::to_vec(&json).unwrap();
        assert!(EvidenceFile::looks_like(&text));
        assert!(!EvidenceFile::looks_like(&raw));
        let file = EvidenceFile::parse(&text).unwrap();
        assert_eq!(file.platform, "snp");
        assert!(matches!(file.evidence, Evidence::Snp(_)));
        assert_eq!(
            (
                file.vcek.as_deref(),
                file.cert_chain.as_deref(),
                file.crl.as_deref()
            ),
            (Some("V"), Some("C"), Some("R"))
        );

        let with = |key: &str, value: serde_json::Value| {
            let mut j = json.clone();
            j[key] = value;
            serde_json::to_vec(&j).unwrap()
        };
        let long_version = format!("version \"{}...", "9".repeat(39));
        let cases = [
            (b"{".to_vec(), "not a nacre evidence file"),
            (b"[1]".to_vec(), "not a JSON object"),
            (with("format", "x".into()), "\"format\""),
            (with("version", 2.into()), "version 2"),
            // What the file says is shown short, and escaped.
            (
                with("version", "9".repeat(1 << 20).into()),
                long_version.as_str(),
            ),
            (
                with("platform", "x\u{1b}[2J".into()),
                "platform x\\u{1b}[2J with",
            ),
            (with("quote", "00".into()), "exactly one"),
            (with("report", "0g".into()), "report"),
            (with("report", hex::encode(&raw[..100]).into()), "report"),
            (with("vcek", 5.into()), "\"vcek\""),
            (with("crl", 5.into()), "\"crl\""),
            (
                with("collateral", serde_json::json!({})),
                "collateral is for TDX quotes",
            ),
        ];
        for (bytes, needle) in cases {
            let e = EvidenceFile::parse(&bytes).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
            assert!(e.len() < 200, "{e:?}");
        }
    }

    #[test]
    fn quote_evidence_carries_collateral() {
        let raw = test_vectors::read("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat");
        let evidence = Evidence::parse(&raw).unwrap();
        let collateral = Collateral {
            pck_crl_issuer_chain: "P".into(),
            root_ca_crl: vec![1, 2],
            pck_crl: vec![3],
            tcb_info_issuer_chain: "T".into(),
            tcb_info: "{}".into(),
            tcb_info_signature: vec![4; 64],
            qe_identity_issuer_chain: "T".into(),
            qe_identity: "{}".into(),
            qe_identity_signature: vec![5; 64],
            pck_certificate_chain: None,
        };
        let json = EvidenceFile::to_json(
            "tdx",
            &evidence,
            &raw,
            &Endorsements {
                collateral: Some(collateral.clone()),
                ..Endorsements::default()
            },
        );
        let file = EvidenceFile::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(file.collateral, Some(collateral));
        assert!(matches!(file.evidence, Evidence::Tdx(_)));

        let without = EvidenceFile::to_json("tdx", &evidence, &raw, &Endorsements::default());
        assert!(without.get("collateral").is_none());
        let file = EvidenceFile::parse(&serde_json::to_vec(&without).unwrap()).unwrap();
        assert_eq!(file.collateral, None);

        for bad in [
            serde_json::json!({}),
            serde_json::json!("x"),
            serde_json::json!({"tcb_info": 1}),
        ] {
            let mut j = json.clone();
            j["collateral"] = bad;
            let e = EvidenceFile::parse(&serde_json::to_vec(&j).unwrap()).unwrap_err();
            assert!(
                e.to_string()
                    .contains("not dcap-qvl QuoteCollateralV3 JSON"),
                "{e}"
            );
        }
    }
}
