//! TDG.VP.VMCALL<MapGPA> (`host/src/exits/tdx/map_gpa.rs`) with any range, resumed as
//! the firmware resumes a RETRY, on the emulated TDX platform's MMU.
//!
//! Input: up to 8 calls of R12 (GPA with or without the shared bit), R13 (size) and
//! a budget (`u16`: 0 none, all ones a host that makes no progress, else the pages
//! it converts per call before RETRY).
//!
//! Invariants, for every call:
//! - R10 is SUCCESS, RETRY, INVALID_OPERAND or ALIGN_ERROR;
//! - INVALID_OPERAND and ALIGN_ERROR change no page;
//! - no page outside `[R12, R12 + R13)` changes, and every page that changes takes the
//!   side the shared bit names;
//! - SUCCESS leaves the whole range on that side; RETRY names in R11 a GPA with the
//!   same shared bit inside the range, no lower than where the call started, below
//!   which the range is done, and re-issuing from there finishes it;
//! - the MMU's own audit passes once the calls of each MapGPA end (auditing all of RAM
//!   after every resumed call took most of the target's time).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::{tdx_platform, Bytes, TdxAttributes};
use nacre_host::exits::tdx::map_gpa;
use nacre_host::mmu::attributes::Kind;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::vmcall;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mut tdx = tdx_platform();
    let shared_bit = tdx.shared_bit();
    // The attributes now: each call's are where the previous call's ended.
    let mut now = TdxAttributes::of(&tdx);
    for _ in 0..8 {
        if input.is_empty() {
            break;
        }
        let (gpa, size) = (input.u64(), input.u64());
        tdx.map_gpa_budget = match input.u16() {
            0 => None,
            u16::MAX => Some(0),
            n => Some(u64::from(n)),
        };
        let kind = if gpa & shared_bit != 0 {
            Kind::Shared
        } else {
            Kind::Private
        };
        let start = (gpa & !shared_bit) / PAGE_SIZE_4K;
        let end = start.saturating_add(size / PAGE_SIZE_4K);
        let before = now;
        let (mut at, mut left) = (gpa, size);
        // Where the range is done up to (a GFN), once the calls end.
        let mut done = start;
        let mut refused = false;
        for call in 0..64 {
            let mut regs = kvm_bindings::kvm_regs {
                r12: at,
                r13: left,
                ..Default::default()
            };
            map_gpa::handle(&mut tdx.context(), &mut regs)
                .unwrap_or_else(|e| panic!("a host error on guest input: {e}"));
            match regs.r10 {
                vmcall::SUCCESS => {
                    done = end;
                    break;
                }
                vmcall::RETRY => {
                    let resume = regs.r11;
                    assert_eq!(resume & shared_bit, gpa & shared_bit, "R11 {resume:#x}");
                    assert!(resume >= at && resume - at < left, "R11 {resume:#x}");
                    assert_eq!(resume % PAGE_SIZE_4K, 0);
                    done = (resume & !shared_bit) / PAGE_SIZE_4K;
                    if tdx.map_gpa_budget == Some(0) {
                        // A host that never moves: the firmware gives up on it.
                        assert_eq!(resume, at);
                        break;
                    }
                    assert!(resume > at, "RETRY without progress");
                    left -= resume - at;
                    at = resume;
                }
                vmcall::INVALID_OPERAND | vmcall::ALIGN_ERROR => {
                    assert_eq!(call, 0, "a resumed MapGPA refused");
                    refused = true;
                    break;
                }
                other => panic!("MapGPA answered {other:#x}"),
            }
        }
        tdx.mmu.audit().unwrap_or_else(|e| panic!("MMU audit: {e}"));
        let after = TdxAttributes::of(&tdx);
        if refused {
            assert_eq!(before, after, "a refused MapGPA changed pages");
        }
        for gfn in start..done {
            assert_eq!(after.get(gfn), Some(kind), "page {gfn:#x} not done");
        }
        for (gfn, new) in before.changed(&after) {
            assert!(
                (start..end).contains(&gfn) && new == Some(kind),
                "page {gfn:#x} became {new:?} outside {start:#x}..{end:#x}"
            );
        }
        now = after;
    }
});
