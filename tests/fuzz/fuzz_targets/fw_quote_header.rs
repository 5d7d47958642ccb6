//! The GetQuote buffer header as the firmware reads it back from the host
//! (`guest-firmware/src/platform/tdx/mod.rs`, `quote_len`, on a private copy of the
//! shared header).
//!
//! Input: the header (24 bytes).
//!
//! Invariants: IN_FLIGHT (and only it) means "wait"; a length is accepted only with
//! version 1 and SUCCESS, and only when it is non-zero and fits the firmware's 64 KiB
//! buffer after the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_guest_firmware::platform::tdx::quote_len;
use nacre_shared_abi::tdx_report::get_quote::{status, QuoteBufHeader, HEADER_SIZE, VERSION};
use zerocopy::FromBytes;

fuzz_target!(|data: &[u8]| {
    let header = QuoteBufHeader::read_from_bytes(&Bytes::new(data).array::<24>()).expect("24");
    match quote_len(&header) {
        Ok(None) => assert_eq!(header.status, status::IN_FLIGHT),
        Ok(Some(len)) => {
            assert_eq!((header.version, header.status), (VERSION, status::SUCCESS));
            assert_eq!(len, u64::from(header.out_len));
            assert!(len > 0 && len <= (64 << 10) - HEADER_SIZE as u64);
        }
        Err(_) => assert_ne!(header.status, status::IN_FLIGHT),
    }
});
