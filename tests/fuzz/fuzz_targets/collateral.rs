//! DCAP collateral for a TDX quote's TCB status: the JSON `nacre verify --collateral`
//! and evidence files carry (`nacre_verifier::tdx::collateral_from_json`, dcap-qvl's
//! `QuoteCollateralV3`), appraised by dcap-qvl through `verify_quote` for a quote
//! under the root of the quote's own PCK chain (so that collateral made by the same
//! hierarchy gets past the signatures).
//!
//! Input: the verification time (`u64` seconds since the epoch), the quote's length
//! (`u32`) and bytes, then the collateral JSON.
//!
//! Invariants:
//! - collateral that decodes encodes back to JSON that decodes to the same value;
//! - the appraisal answers without panicking, with exactly one `tcb-status` check.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_verifier::tdx::{check, collateral_from_json, verify_quote, Quote};
use nacre_verifier::{Expectations, TrustAnchors};

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let at = UNIX_EPOCH + Duration::from_secs(input.u64() % (1 << 40));
    let quote_len = input.u32() as usize;
    let quote = input.take(quote_len);
    let json = input.rest();

    let Ok(collateral) = collateral_from_json(json) else {
        return;
    };
    let text = serde_json::to_vec(&collateral).expect("collateral encodes");
    assert_eq!(
        collateral_from_json(&text).ok().as_ref(),
        Some(&collateral),
        "the collateral re-encodes differently"
    );

    let Ok(quote) = Quote::parse(quote) else {
        return;
    };
    let Ok(chain) = quote.pck_chain() else {
        return;
    };
    let root = chain.last().expect("two or three certificates").clone();
    let roots = TrustAnchors::new(Vec::new(), root);
    let Ok(v) = verify_quote(
        &quote,
        &roots,
        &Expectations::default(),
        at,
        Some(&collateral),
    ) else {
        return;
    };
    assert_eq!(
        v.checks
            .iter()
            .filter(|c| c.name == check::TCB_STATUS)
            .count(),
        1
    );
});
