//! TDX quotes, versions 4 and 5, as `nacre verify` takes them (`Evidence::parse`,
//! `nacre_verifier::tdx::Quote::parse`, `verify_quote` with the quote's own PCK chain)
//! against Intel's built-in root when the real quote's PCK certificate is valid.
//!
//! Input: the quote, raw or as hex text.
//!
//! Invariants:
//! - a quote that parses parses the same from its own bytes (`raw`), and its signed
//!   part is a prefix of them;
//! - verification answers without panicking, every check once;
//! - the attestation key's signature and the QE report's binding and signature by a
//!   PCK certificate Intel's root signs all pass only for what Intel's quoting enclave
//!   signed (the real quote's bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::verifier::{roots, tdx_quote, tdx_time};
use nacre_verifier::tdx::{check, Quote};
use nacre_verifier::{verify, Evidence, Inputs};

fuzz_target!(|data: &[u8]| {
    let Ok(evidence) = Evidence::parse(data) else {
        return;
    };
    let Evidence::Tdx(quote) = &evidence else {
        return;
    };
    let again = Quote::parse(quote.raw()).expect("a quote parses from its own bytes");
    assert_eq!(again.raw(), quote.raw());
    assert_eq!(again.signed_bytes(), quote.signed_bytes());
    assert!(quote.raw().starts_with(quote.signed_bytes()));
    let mut inputs = Inputs::new(roots());
    inputs.at = tdx_time();
    let Ok(v) = verify(&evidence, &inputs) else {
        return;
    };
    let mut names: Vec<&str> = v.checks.iter().map(|c| c.name).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "a check ran twice");
    let passed = |name| v.check(name).is_some_and(|c| c.passed);
    if [
        check::QUOTE_SIGNATURE,
        check::QE_REPORT_SIGNATURE,
        check::QE_REPORT_DATA,
        check::PCK_SIGNED_BY_CA,
        check::CA_SIGNED_BY_ROOT,
    ]
    .into_iter()
    .all(passed)
    {
        let real = Quote::parse(tdx_quote()).expect("the real quote parses");
        assert_eq!(
            quote.signed_bytes(),
            real.signed_bytes(),
            "a quote verified that Intel's enclave never signed"
        );
    }
    let _ = v.to_json();
    let _ = nacre_host::cli::verify::render(&evidence, &v);
});
