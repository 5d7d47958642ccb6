//! nacre's evidence files (`nacre_verifier::evidence::EvidenceFile`), as `nacre
//! verify` reads them: the JSON, the report or quote in it, and the endorsements it
//! carries (VCEK, ASK/ARK chain, CRL, collateral), decoded and verified the way the
//! command does (`host/src/cli/verify.rs`) against the built-in roots.
//!
//! Input: the file.
//!
//! Invariants:
//! - a file that decodes is written back by `EvidenceFile::to_json` as a file that
//!   decodes to the same platform, evidence bytes and endorsements;
//! - the endorsements and the verification answer without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::verifier::{milan_time, roots};
use nacre_verifier::crl::Crl;
use nacre_verifier::evidence::{Endorsements, EvidenceFile};
use nacre_verifier::snp::SnpChain;
use nacre_verifier::{verify, Cert, Evidence, Inputs};
use zerocopy::IntoBytes;

fn raw(evidence: &Evidence) -> Vec<u8> {
    match evidence {
        Evidence::Snp(report) => report.as_bytes().to_vec(),
        Evidence::Tdx(quote) => quote.raw().to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = EvidenceFile::parse(data) else {
        return;
    };
    let bytes = raw(&file.evidence);
    let json = EvidenceFile::to_json(
        &file.platform,
        &file.evidence,
        &bytes,
        &Endorsements {
            vcek: file.vcek.clone(),
            cert_chain: file.cert_chain.clone(),
            crl: file.crl.clone(),
            collateral: file.collateral.clone(),
        },
    );
    let text = serde_json::to_vec(&json).expect("JSON encodes");
    let again = EvidenceFile::parse(&text).expect("a written evidence file decodes");
    assert_eq!(again.platform, file.platform);
    assert_eq!(raw(&again.evidence), bytes);
    assert_eq!(again.vcek, file.vcek);
    assert_eq!(again.cert_chain, file.cert_chain);
    assert_eq!(again.crl, file.crl);
    assert_eq!(again.collateral, file.collateral);

    let mut inputs = Inputs::new(roots());
    inputs.at = milan_time();
    inputs.vcek = file
        .vcek
        .as_deref()
        .and_then(|pem| Cert::from_der_or_pem(pem.as_bytes()).ok());
    inputs.cert_chain = file
        .cert_chain
        .as_deref()
        .and_then(|pem| SnpChain::from_pem(pem.as_bytes()).ok());
    inputs.crl = file
        .crl
        .as_deref()
        .and_then(|pem| Crl::from_der_or_pem(pem.as_bytes()).ok());
    inputs.collateral = file.collateral.clone();
    inputs.require_revocation = true;
    if let Ok(v) = verify(&file.evidence, &inputs) {
        let _ = v.to_json();
        let _ = nacre_host::cli::verify::render(&file.evidence, &v);
    }
});
