//! SEV-SNP attestation reports as `nacre verify` takes them (`Evidence::parse` of raw
//! or hex bytes, shared-abi `AttestationReport`, `nacre_verifier::verify` with the
//! report's VCEK), checked against the real Milan VCEK of `tests/vectors` and AMD's
//! built-in roots when the VCEK is valid.
//!
//! Input: the report, raw (0x4A0 bytes) or as hex text.
//!
//! Invariants:
//! - a report decoded from raw bytes encodes back to them;
//! - verification runs every check it names once and answers without panicking;
//! - the report's signature verifies only for the signed bytes AMD's VCEK signed (the
//!   real report's), and then the verdict rests on AMD's root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::verifier::{milan_report, milan_time, milan_vcek, roots};
use nacre_shared_abi::snp::report::{ATTESTATION_REPORT_SIZE, SIGNED_SIZE};
use nacre_verifier::snp::check;
use nacre_verifier::{verify, Evidence, Expectations, Inputs, Trust};
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let Ok(evidence) = Evidence::parse(data) else {
        return;
    };
    let Evidence::Snp(report) = &evidence else {
        return;
    };
    let hex = data
        .iter()
        .all(|c| c.is_ascii_hexdigit() || c.is_ascii_whitespace() || matches!(c, b'x' | b'X'));
    if data.len() == ATTESTATION_REPORT_SIZE && !hex {
        assert_eq!(report.as_bytes(), data, "the report re-encodes differently");
    }
    let mut inputs = Inputs::new(roots());
    inputs.at = milan_time();
    inputs.vcek = Some(milan_vcek().clone());
    inputs.expect = Expectations {
        measurement: Some(report.measurement.to_vec()),
        report_data: Some(vec![0; 64]),
        allow_debug: false,
        policy: Some(0x3_0000),
        reference: None,
    };
    let Ok(v) = verify(&evidence, &inputs) else {
        return;
    };
    let mut names: Vec<&str> = v.checks.iter().map(|c| c.name).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "a check ran twice");
    if v.check(check::REPORT_SIGNATURE).is_some_and(|c| c.passed) {
        assert_eq!(
            &report.as_bytes()[..SIGNED_SIZE],
            &milan_report()[..SIGNED_SIZE],
            "a signature verified over other bytes"
        );
        assert_eq!(v.trust, Trust::Hardware);
    }
    let _ = v.to_json();
    let _ = nacre_host::cli::verify::render(&evidence, &v);
});
