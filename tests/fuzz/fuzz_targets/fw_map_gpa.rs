//! The firmware's TDVMCALL<MapGPA> over a whole range
//! (`guest-firmware/src/platform/tdx/mod.rs`, `Tdx::map_gpa_with`) against a host
//! whose every answer the fuzzer chose: success, RETRY with any GPA in R11, or an
//! error status.
//!
//! Input: the range (a page number `u32`, a page count `u16` (0 means 1), a shared
//! flag byte), then one answer per call: a kind byte (0: success; 1: RETRY at a GPA
//! `u32` pages past where the call started, with the shared bit of the request unless
//! the next byte is odd; 2: RETRY at any `u64`; else the status `u64` that follows)
//! and its operands. When the script runs out the host answers success.
//!
//! A reference model of the firmware's rules decides each answer: a RETRY is taken
//! when R11 carries the request's shared bit, lies in `[start of the call, end of the
//! range)` and is page aligned, and the host may answer RETRY without progress at most
//! 16 times in a row; anything else but success is an error. Invariants:
//! - every call names the rest of the range from where the host said to resume, with
//!   the shared bit asked for;
//! - the firmware succeeds exactly when the model does, and fails exactly when the
//!   model refuses the last answer, making no call after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_guest_firmware::error::FwError;
use nacre_guest_firmware::platform::tdx::Tdx;
use nacre_guest_firmware::platform::Backend;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::vmcall;
use tdx_guest::tdvmcall::TdVmcallError;

const SHARED: u64 = 1 << 47;
const STALLS: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Calling,
    Done,
    Refused,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let gpa = u64::from(input.u32()) * PAGE_SIZE_4K;
    let len = u64::from(input.u16()).max(1) * PAGE_SIZE_4K;
    let shared = input.u8() & 1 != 0;
    let tag = if shared { SHARED } else { 0 };
    let end = gpa + len;

    let mut tdx = Tdx::new(Backend::Doorbell, SHARED);
    let mut model = Model::Calling;
    let mut next_at = gpa;
    let mut stalls = 0;
    let mut calls = 0;
    let r = tdx.map_gpa_with(gpa, len, shared, |at, size| {
        assert_eq!(
            model,
            Model::Calling,
            "a call after the outcome was decided"
        );
        calls += 1;
        assert!(calls <= 10_000, "the firmware does not stop calling");
        assert_eq!(
            at,
            next_at | tag,
            "the call does not resume where the host said"
        );
        assert_eq!(
            size,
            end - next_at,
            "the call does not cover the rest of the range"
        );
        let kind = if input.is_empty() { 0 } else { input.u8() };
        let status = match kind {
            0 => {
                model = Model::Done;
                return Ok(());
            }
            1 | 2 => vmcall::RETRY,
            _ => input.u64(),
        };
        let resume = match kind {
            1 => {
                let target = next_at.wrapping_add(u64::from(input.u32()) * PAGE_SIZE_4K);
                let tag = if input.u8() & 1 == 0 {
                    tag
                } else {
                    tag ^ SHARED
                };
                target | tag
            }
            2 => input.u64(),
            _ => 0,
        };
        let error = TdVmcallError::from(status);
        if !matches!(error, TdVmcallError::TdxRetry) {
            model = Model::Refused;
            return Err((resume, error));
        }
        let resume_gpa = resume & !SHARED;
        let taken = resume & SHARED == tag
            && resume_gpa >= next_at
            && resume_gpa < end
            && resume_gpa % PAGE_SIZE_4K == 0;
        if !taken {
            model = Model::Refused;
        } else if resume_gpa == next_at {
            stalls += 1;
            if stalls > STALLS {
                model = Model::Refused;
            }
        } else {
            stalls = 0;
        }
        next_at = resume_gpa;
        Err((resume, error))
    });
    match r {
        Ok(()) => assert_eq!(model, Model::Done),
        Err(FwError::MapGpa { .. }) => assert_eq!(model, Model::Refused),
        Err(e) => panic!("an unexpected error {e:?}"),
    }
});
