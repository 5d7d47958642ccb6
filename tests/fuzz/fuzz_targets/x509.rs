//! X.509 certificates as the verifier reads them: the VCEK (`--vcek`, evidence
//! files), ASK/ARK bundles (`--cert-chain`), PCK chains (`nacre_verifier::x509::Cert`
//! from DER, PEM or PEM bundles; `nacre_verifier::snp` on VCEK extensions and
//! chains), and their signatures checked by the real Milan ASK.
//!
//! Input: the certificate or bundle bytes.
//!
//! Invariants:
//! - a certificate decodes the same from its own DER; every certificate of a bundle
//!   does too;
//! - the accessors, the VCEK extension readers and the signature checks answer without
//!   panicking, and a certificate the real Milan ASK signs is AMD's (its issuer is the
//!   ASK's subject).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::verifier::{milan_ask, milan_time};
use nacre_verifier::snp::{vcek_hw_id, vcek_product, SnpChain, VcekTcb};
use nacre_verifier::x509::OID_BASIC_CONSTRAINTS;
use nacre_verifier::Cert;

fn exercise(cert: &Cert) {
    let again = Cert::from_der(cert.der()).expect("a certificate decodes from its DER");
    assert_eq!(again.der(), cert.der());
    let _ = (cert.subject_name(), cert.issuer_name());
    let _ = (
        cert.not_before(),
        cert.not_after(),
        cert.valid_at(milan_time()),
    );
    let _ = (cert.extension(OID_BASIC_CONSTRAINTS), cert.is_ca());
    let _ = (cert.spki_sha256(), cert.p384_key(), cert.p256_key());
    let _ = cert.names_organization("Advanced Micro Devices");
    if let Ok(product) = vcek_product(cert) {
        let _ = vcek_hw_id(cert, product);
    }
    let _ = VcekTcb::of(cert);
    if cert.verify_issued_by(milan_ask()).is_ok() {
        assert_eq!(cert.issuer_name(), milan_ask().subject_name());
    }
    let _ = milan_ask().verify_signature_by(cert);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = Cert::from_der_or_pem(data) {
        exercise(&cert);
    }
    if let Ok(bundle) = Cert::bundle_from_pem(data) {
        for cert in &bundle {
            exercise(cert);
        }
    }
    if let Ok(chain) = SnpChain::from_pem(data) {
        let _ = chain.ark.verify_issued_by(&chain.ark);
        let _ = chain.ask.verify_issued_by(&chain.ark);
    }
});
