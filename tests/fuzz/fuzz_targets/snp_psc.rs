//! The host's page-state change engine (`host/src/exits/snp/psc.rs`, `handle_psc`) on
//! any descriptor the guest can write into the GHCB shared buffer, re-issued the way a
//! guest resumes partial progress, against a backend that records every change and
//! fails when the fuzzer says.
//!
//! Input: a budget byte (0xFF: no budget), a byte whose bits make backend calls 0..8
//! fail, a byte of re-issues (0..8), then the 2032-byte descriptor (zeros past the
//! end of the input).
//!
//! Invariants, for every call:
//! - the answer is 0 or one of KVM's three PSC errors; an invalid header changes
//!   nothing; `end_entry` and the reserved word never change; `cur_entry` only grows;
//! - only entries in `[cur_entry, end_entry]` change, and only their `cur_page`, which
//!   becomes the entry's page count;
//! - the pages the backend changes are exactly the pages the entries completed in this
//!   call still had to do, with their operation, in order: no page outside the
//!   descriptor's ranges, none twice; a 2 MiB range is 2 MiB aligned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_host::exits::snp::psc::{handle_psc, PageStateBackend, PscStats};
use nacre_shared_abi::snp::msr_protocol::MsrPscOp;
use nacre_shared_abi::snp::psc::{
    PageStateOp, PscDesc, PscEntry, PSC_ERROR_GENERIC, PSC_ERROR_INVALID_ENTRY,
    PSC_ERROR_INVALID_HDR,
};
use zerocopy::FromBytes;

/// Records the changes; fails the attempts whose bit is set in `fail`.
struct Recorder {
    calls: Vec<(u64, u64, MsrPscOp, bool)>,
    fail: u8,
    attempts: u32,
}

impl PageStateBackend for Recorder {
    fn change(&mut self, gfn: u64, npages: u64, op: MsrPscOp, huge: bool) -> Result<(), ()> {
        let n = self.attempts;
        self.attempts += 1;
        if n < 8 && self.fail & (1 << n) != 0 {
            return Err(());
        }
        self.calls.push((gfn, npages, op, huge));
        Ok(())
    }
}

const CUR_PAGE_MASK: u64 = 0xFFF;

fn one_call(desc: &mut PscDesc, budget: Option<usize>, fail: u8) -> u64 {
    let before = desc.clone();
    let mut backend = Recorder {
        calls: Vec::new(),
        fail,
        attempts: 0,
    };
    let mut stats = PscStats::default();
    let ret = handle_psc(desc, &mut backend, budget, &mut stats);
    assert!(
        [
            0,
            PSC_ERROR_INVALID_HDR,
            PSC_ERROR_INVALID_ENTRY,
            PSC_ERROR_GENERIC
        ]
        .contains(&ret),
        "answer {ret:#x}"
    );
    assert_eq!(desc.header.end_entry, before.header.end_entry);
    assert_eq!(desc.header.reserved, before.header.reserved);
    assert!(desc.header.cur_entry >= before.header.cur_entry);
    if ret == PSC_ERROR_INVALID_HDR {
        assert_eq!(desc.header, before.header);
        assert_eq!(desc.entries, before.entries);
    }

    // The entries this call completed, in order.
    let window = usize::from(before.header.cur_entry)..=usize::from(before.header.end_entry);
    let mut completed = Vec::new();
    for (i, (new, old)) in desc.entries.iter().zip(before.entries.iter()).enumerate() {
        if new == old {
            continue;
        }
        assert!(window.contains(&i), "entry {i} outside the window changed");
        assert_eq!(new & !CUR_PAGE_MASK, old & !CUR_PAGE_MASK, "entry {i}");
        let old = PscEntry::decode(*old).expect("a changed entry decoded");
        let new = PscEntry::decode(*new).expect("a completed entry decodes");
        assert_eq!(
            u64::from(new.cur_page),
            new.npages(),
            "entry {i} left incomplete"
        );
        completed.push(old);
    }

    // The backend's ranges are the completed entries' pages, in order.
    let mut pending = completed.iter().filter_map(|e| {
        let op = match e.op {
            PageStateOp::Private => MsrPscOp::Private,
            PageStateOp::Shared => MsrPscOp::Shared,
            PageStateOp::Psmash | PageStateOp::Unsmash => return None,
        };
        let first = e.gfn + u64::from(e.cur_page);
        Some((first, e.npages() - u64::from(e.cur_page), op))
    });
    for &(gfn, npages, op, huge) in &backend.calls {
        assert!(npages > 0);
        if huge {
            assert!(
                gfn % 512 == 0 && npages % 512 == 0,
                "2 MiB range {gfn:#x}+{npages}"
            );
        }
        let mut at = gfn;
        while at < gfn + npages {
            let (first, n, entry_op) = pending.next().expect("a change beyond the entries");
            assert_eq!((first, entry_op), (at, op), "change of {gfn:#x}+{npages}");
            at += n;
        }
        assert_eq!(at, gfn + npages, "a change that ends inside an entry");
    }
    assert!(
        pending.next().is_none(),
        "an entry completed without its change"
    );
    assert_eq!(stats.ranges, backend.calls.len() as u64);
    ret
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let budget = match input.u8() {
        0xFF => None,
        n => Some(usize::from(n)),
    };
    let fail = input.u8();
    let reissues = input.u8() % 8;
    let raw = input.array::<2032>();
    let mut desc = PscDesc::read_from_bytes(&raw).expect("2032 bytes");
    for _ in 0..=reissues {
        let ret = one_call(&mut desc, budget, fail);
        if ret != 0 || desc.header.cur_entry > desc.header.end_entry {
            break;
        }
    }
});
