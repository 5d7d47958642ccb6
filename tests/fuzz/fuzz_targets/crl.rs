//! Certificate revocation lists as `nacre verify --crl` and evidence files give them
//! (`nacre_verifier::crl::Crl`, DER or PEM), checked against an issuer the input
//! names.
//!
//! Input: the issuer certificate's length (`u16`) and DER or PEM, then the CRL.
//!
//! Invariants:
//! - a CRL that decodes decodes the same from its DER and from its PEM;
//! - its signature check, revocation look-up and currency answer without panicking,
//!   and a CRL signed by its issuer names that issuer.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_verifier::crl::Crl;
use nacre_verifier::Cert;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let issuer_len = usize::from(input.u16());
    let issuer = Cert::from_der_or_pem(input.take(issuer_len)).ok();
    let Ok(crl) = Crl::from_der_or_pem(input.rest()) else {
        return;
    };
    let again = Crl::from_der(crl.der()).expect("a CRL decodes from its own DER");
    assert_eq!(again.der(), crl.der());
    let pem = crl.pem();
    let from_pem = Crl::from_der_or_pem(pem.as_bytes()).expect("a CRL decodes from its PEM");
    assert_eq!(from_pem.der(), crl.der());
    let _ = crl.issuer_name();
    let (this, next) = (crl.this_update(), crl.next_update());
    for at in [this, next, UNIX_EPOCH, this + Duration::from_secs(1)] {
        let _ = crl.current_at(at);
    }
    if let Some(issuer) = &issuer {
        if crl.verify_issued_by(issuer).is_ok() {
            assert_eq!(crl.issuer_name(), issuer.subject_name());
        }
        let _ = crl.revocation_of(issuer);
    }
});
