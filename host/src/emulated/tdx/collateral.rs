//! Emulated DCAP collateral: what Intel's Provisioning Certification Service
//! publishes for a real platform (TCB info, QE identity, the revocation lists and
//! their issuer chains), made for the emulated TDX platform so that the TCB status
//! check (`nacre verify --collateral`, dcap-qvl's appraisal) runs on emulated quotes
//! exactly as on real ones.
//!
//! The parts, in the form dcap-qvl's `QuoteCollateralV3` holds them:
//!
//! - A "TCB Signing" certificate issued by the emulated root (as Intel's TCB signing
//!   certificate is issued by the SGX Root CA), whose P-256 key signs the TCB info
//!   and the QE identity JSON (raw `r || s` over the exact JSON text, as PCS's
//!   `TCB-Info-Issuer-Chain` / `SGX-Enclave-Identity-Issuer-Chain` responses).
//! - An empty root CA CRL signed by the root and an empty PCK CRL signed by the PCK
//!   Platform CA (X.509 v2 CRLs with CRL number and authority key identifier, RFC
//!   5280 section 5), valid from the hierarchy's creation to the end of its
//!   certificates. The root's and the CA's keys exist only while the hierarchy is
//!   created, so these two are made then and kept ([`ROOT_CRL_FILE`],
//!   [`PCK_CRL_FILE`]).
//! - TCB info (Intel's TDX TCB info version 3: FMSPC, PCE ID, one TCB level with
//!   the emulated CPUSVN components, PCESVN and TEE_TCB_SVN, the TDX module's
//!   signer and attributes and its identity `TDX_01`) and QE identity (`TD_QE`
//!   version 2: the QE's MRSIGNER, ISVPRODID, attributes with Intel's mask and its
//!   ISVSVN), each issued when asked for and valid for [`COLLATERAL_VALIDITY`].
//!   Every level says UpToDate: the emulated platform has one TCB.
//!
//! What is fixed by the emulated platform, not by Intel, is marked by the emulated
//! FMSPC and the names of the certificates; none of it is trusted without
//! `--allow-emulated`, because every part chains to the emulated root.

use std::path::Path;
use std::time::{Duration, SystemTime};

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey};
use x509_cert::crl::{CertificateList, TbsCertList};
use x509_cert::der::asn1::OctetString;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber};
use x509_cert::name::Name;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::time::Validity;
use x509_cert::Version;

use super::keys::{
    cert_pem, chain_pem, encode_err, extension, key_identifier, read_cert, read_file, read_key,
    CertSpec, KeysError, EMULATED_CPUSVN, EMULATED_FMSPC, EMULATED_PCEID, EMULATED_PCESVN,
};
use super::module::emulated_tee_tcb_info;
use super::quoting::{EMULATED_QE_ISVSVN, QE_ATTRIBUTES};
use nacre_verifier::tdx::{Collateral, INTEL_QE_MRSIGNER, INTEL_TD_QE_ISVPRODID};
use nacre_verifier::time;
use nacre_verifier::x509::{Cert, OID_ECDSA_WITH_SHA256};

/// File of the TCB signing certificate (PEM).
pub const TCB_SIGNING_CERT_FILE: &str = "tcb-signing.pem";
/// File of the TCB signing key (P-256, PKCS#8 PEM, mode 0600).
pub const TCB_SIGNING_KEY_FILE: &str = "tcb-signing.key";
/// File of the root CA's CRL (DER).
pub const ROOT_CRL_FILE: &str = "root-ca.crl";
/// File of the PCK Platform CA's CRL (DER).
pub const PCK_CRL_FILE: &str = "pck-platform-ca.crl";

/// Subject common name of the TCB signing certificate.
pub const TCB_SIGNING_NAME: &str = "nacre emulated Intel SGX TCB Signing";

/// How long TCB info and QE identity stay valid after they are issued: 30 days.
pub const COLLATERAL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The TCB evaluation data number of the emulated collateral.
pub const TCB_EVALUATION_DATA_NUMBER: u32 = 1;

/// The QE identity's attribute mask, as in Intel's published QE identities: every
/// ATTRIBUTES flag but bit 2 (MODE64BIT), and no XFRM bit.
const QE_ATTRIBUTES_MASK: [u8; 16] = [
    0xFB, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The collateral part of a newly generated hierarchy, before it is written.
pub(super) struct Generated {
    tcb_signing_der: Vec<u8>,
    tcb_signing_key: SigningKey,
    root_crl_der: Vec<u8>,
    pck_crl_der: Vec<u8>,
}

/// The issuers [`generate`] needs, while their keys exist.
pub(super) struct Issuers<'a> {
    pub root_name: &'a Name,
    pub root_key: &'a SigningKey,
    pub ca_name: &'a Name,
    pub ca_key: &'a SigningKey,
    pub validity: Validity,
}

/// Make the TCB signing certificate and key and the two CRLs.
pub(super) fn generate(issuers: &Issuers<'_>) -> Result<Generated, KeysError> {
    let tcb_signing_key = super::keys::random_signing_key()?;
    let tcb_name = super::keys::name(TCB_SIGNING_NAME)?;
    let tcb_signing_der = super::keys::issue(CertSpec {
        subject: &tcb_name,
        subject_key: &tcb_signing_key,
        issuer: issuers.root_name,
        issuer_key: issuers.root_key,
        validity: issuers.validity,
        extensions: super::keys::common_extensions(&tcb_signing_key, issuers.root_key, None)?,
    })?;
    Ok(Generated {
        tcb_signing_der,
        tcb_signing_key,
        root_crl_der: crl(issuers.root_name, issuers.root_key, issuers.validity)?,
        pck_crl_der: crl(issuers.ca_name, issuers.ca_key, issuers.validity)?,
    })
}

/// An empty X.509 v2 CRL of `issuer`, from `validity`'s start to its end, with CRL
/// number 1 and the issuer's key identifier (RFC 5280 sections 5.1, 5.2.1, 5.2.3).
fn crl(issuer: &Name, key: &SigningKey, validity: Validity) -> Result<Vec<u8>, KeysError> {
    let err = encode_err("CRL");
    let algorithm = AlgorithmIdentifierOwned {
        oid: OID_ECDSA_WITH_SHA256,
        parameters: None,
    };
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(key_identifier(key)).map_err(&err)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let number = CrlNumber(x509_cert::der::asn1::Uint::new(&[1]).map_err(&err)?);
    let tbs = TbsCertList {
        version: Version::V2,
        signature: algorithm.clone(),
        issuer: issuer.clone(),
        this_update: validity.not_before,
        next_update: Some(validity.not_after),
        revoked_certificates: None,
        crl_extensions: Some(vec![
            extension(
                AuthorityKeyIdentifier::OID,
                false,
                aki.to_der().map_err(&err)?,
            )?,
            extension(CrlNumber::OID, false, number.to_der().map_err(&err)?)?,
        ]),
    };
    let tbs_der = tbs.to_der().map_err(&err)?;
    let signature: Signature = key.sign(&tbs_der);
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: algorithm,
        signature: x509_cert::der::asn1::BitString::from_bytes(signature.to_der().as_bytes())
            .map_err(&err)?,
    }
    .to_der()
    .map_err(err)
}

impl Generated {
    pub(super) fn write(&self, dir: &Path) -> Result<(), KeysError> {
        super::keys::write_new(
            dir,
            TCB_SIGNING_CERT_FILE,
            cert_pem(&self.tcb_signing_der)?.as_bytes(),
            0o644,
        )?;
        super::keys::write_new(
            dir,
            TCB_SIGNING_KEY_FILE,
            super::keys::key_pem(&self.tcb_signing_key)?.as_bytes(),
            0o600,
        )?;
        super::keys::write_new(dir, ROOT_CRL_FILE, &self.root_crl_der, 0o644)?;
        super::keys::write_new(dir, PCK_CRL_FILE, &self.pck_crl_der, 0o644)
    }
}

/// What a hierarchy keeps to make collateral.
pub(super) struct CollateralKeys {
    tcb_signing: Cert,
    tcb_signing_key: SigningKey,
    root_crl: Vec<u8>,
    pck_crl: Vec<u8>,
}

/// Whether `dir` has the collateral files: all of them, or (a hierarchy made before
/// nacre made collateral) none.
pub(super) fn load(
    dir: &Path,
    root: &Cert,
    pck_ca: &Cert,
) -> Result<Option<CollateralKeys>, KeysError> {
    let files = [
        TCB_SIGNING_CERT_FILE,
        TCB_SIGNING_KEY_FILE,
        ROOT_CRL_FILE,
        PCK_CRL_FILE,
    ];
    if files.iter().all(|f| !dir.join(f).exists()) {
        return Ok(None);
    }
    let corrupt = |file: &str, reason: String| KeysError::Corrupt {
        path: dir.join(file),
        reason,
    };
    let tcb_signing = read_cert(dir, TCB_SIGNING_CERT_FILE)?;
    let tcb_signing_key = read_key(dir, TCB_SIGNING_KEY_FILE)?;
    tcb_signing.verify_issued_by(root).map_err(|e| {
        corrupt(
            TCB_SIGNING_CERT_FILE,
            format!("not issued by {}: {e}", super::keys::ROOT_CERT_FILE),
        )
    })?;
    let public = tcb_signing
        .p256_key()
        .map_err(|e| corrupt(TCB_SIGNING_CERT_FILE, format!("no P-256 key: {e}")))?;
    if *tcb_signing_key.verifying_key() != public {
        return Err(corrupt(
            TCB_SIGNING_KEY_FILE,
            format!("the key is not the one {TCB_SIGNING_CERT_FILE} certifies"),
        ));
    }
    let root_crl = read_file(dir, ROOT_CRL_FILE)?;
    check_crl(&root_crl, root).map_err(|reason| corrupt(ROOT_CRL_FILE, reason))?;
    let pck_crl = read_file(dir, PCK_CRL_FILE)?;
    check_crl(&pck_crl, pck_ca).map_err(|reason| corrupt(PCK_CRL_FILE, reason))?;
    Ok(Some(CollateralKeys {
        tcb_signing,
        tcb_signing_key,
        root_crl,
        pck_crl,
    }))
}

/// `der` is a CRL that `issuer` signed.
fn check_crl(der: &[u8], issuer: &Cert) -> Result<(), String> {
    let crl = CertificateList::from_der(der).map_err(|e| format!("not a DER CRL: {e}"))?;
    let tbs = crl
        .tbs_cert_list
        .to_der()
        .map_err(|e| format!("does not re-encode: {e}"))?;
    let signature = crl
        .signature
        .as_bytes()
        .and_then(|b| Signature::from_der(b).ok())
        .ok_or("the signature is not a DER ECDSA signature")?;
    let key = issuer.p256_key().map_err(|e| e.to_string())?;
    key.verify(&tbs, &signature)
        .map_err(|_| format!("not signed by {}", issuer.subject_name()))
}

/// Collateral for quotes of the emulated platform, issued at `at`: TCB info and QE
/// identity valid from `at` for [`COLLATERAL_VALIDITY`], signed now.
pub(super) fn collateral(
    keys: &CollateralKeys,
    root: &Cert,
    pck_ca: &Cert,
    at: SystemTime,
) -> Result<Collateral, KeysError> {
    let issue_date = time::format_rfc3339(at);
    let next_update = time::format_rfc3339(at + COLLATERAL_VALIDITY);
    let tcb_info = tcb_info_json(&issue_date, &next_update);
    let qe_identity = qe_identity_json(&issue_date, &next_update);
    let sign = |text: &str| -> Vec<u8> {
        let signature: Signature = keys.tcb_signing_key.sign(text.as_bytes());
        signature.to_bytes().to_vec()
    };
    let tcb_chain = chain_pem(&[&keys.tcb_signing, root])?;
    let pck_crl_chain = chain_pem(&[pck_ca, root])?;
    Ok(Collateral {
        pck_crl_issuer_chain: pck_crl_chain,
        root_ca_crl: keys.root_crl.clone(),
        pck_crl: keys.pck_crl.clone(),
        tcb_info_issuer_chain: tcb_chain.clone(),
        tcb_info_signature: sign(&tcb_info),
        tcb_info,
        qe_identity_issuer_chain: tcb_chain,
        qe_identity_signature: sign(&qe_identity),
        qe_identity,
        pck_certificate_chain: None,
    })
}

/// Intel's TDX TCB info (version 3) for the emulated platform: one TCB level, met by
/// exactly the emulated SVNs, UpToDate.
fn tcb_info_json(issue_date: &str, next_update: &str) -> String {
    let module = emulated_tee_tcb_info();
    let svns = |s: &[u8]| -> Vec<serde_json::Value> {
        s.iter()
            .map(|&svn| serde_json::json!({ "svn": svn }))
            .collect()
    };
    let module_signer = hex::encode(module.mr_signer_seam).to_uppercase();
    let module_attributes = hex::encode(module.attributes).to_uppercase();
    let level = serde_json::json!({
        "tcb": {
            "sgxtcbcomponents": svns(&EMULATED_CPUSVN),
            "pcesvn": EMULATED_PCESVN,
            "tdxtcbcomponents": svns(&module.tee_tcb_svn),
        },
        "tcbDate": issue_date,
        "tcbStatus": "UpToDate",
    });
    serde_json::json!({
        "id": "TDX",
        "version": 3,
        "issueDate": issue_date,
        "nextUpdate": next_update,
        "fmspc": hex::encode(EMULATED_FMSPC).to_uppercase(),
        "pceId": hex::encode(EMULATED_PCEID).to_uppercase(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "tdxModule": {
            "mrsigner": module_signer,
            "attributes": module_attributes,
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tdxModuleIdentities": [{
            "id": format!("TDX_{:02X}", module.tee_tcb_svn[1]),
            "mrsigner": module_signer,
            "attributes": module_attributes,
            "attributesMask": "FFFFFFFFFFFFFFFF",
            "tcbLevels": [{
                "tcb": { "isvsvn": module.tee_tcb_svn[0] },
                "tcbDate": issue_date,
                "tcbStatus": "UpToDate",
            }],
        }],
        "tcbLevels": [level],
    })
    .to_string()
}

/// Intel's QE identity for the TD quoting enclave (`TD_QE`, version 2), with the
/// emulated QE's ISVSVN as its one, UpToDate, level.
fn qe_identity_json(issue_date: &str, next_update: &str) -> String {
    serde_json::json!({
        "id": "TD_QE",
        "version": 2,
        "issueDate": issue_date,
        "nextUpdate": next_update,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": hex::encode(QE_ATTRIBUTES).to_uppercase(),
        "attributesMask": hex::encode(QE_ATTRIBUTES_MASK).to_uppercase(),
        "mrsigner": hex::encode(INTEL_QE_MRSIGNER).to_uppercase(),
        "isvprodid": INTEL_TD_QE_ISVPRODID,
        "tcbLevels": [{
            "tcb": { "isvsvn": EMULATED_QE_ISVSVN },
            "tcbDate": issue_date,
            "tcbStatus": "UpToDate",
        }],
    })
    .to_string()
}
