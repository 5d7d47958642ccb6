//! The firmware's page-state changes through the GHCB
//! (`guest-firmware/src/platform/snp/psc.rs`, `page_state_change`) against a host
//! whose every answer the fuzzer shapes: how far it gets in each call, what it puts
//! in SW_EXITINFO1 and SW_EXITINFO2, and which bytes of the descriptor it flips.
//!
//! Input: the request (GFN as `u32`, a page count as `u16` (modulo 4096; 0 means 1), the operation
//! and whether 2 MiB entries are allowed), then one script step per call: entries the
//! host completes (`u8`), pages of a 2 MiB entry it completes (`u16`), SW_EXITINFO1
//! and SW_EXITINFO2 (a byte each: 0 leaves the honest 0, anything else is the next
//! `u64`), then up to 3 flips of (offset `u16`, XOR mask `u8`) in the descriptor.
//! When the script runs out the host is honest and finishes every call.
//!
//! The host also keeps a reference model of the guest's checks (the error bits of
//! SW_EXITINFO1, SW_EXITINFO2, the header's end entry and reserved word, each entry
//! as the guest wrote it but for its progress, progress that moves forward, and
//! done only with `cur_entry` one past `end_entry` and every page complete). Invariants:
//! - the guest refuses exactly the answers the model refuses, makes no call after a
//!   refusal, and calls again after every answer that is neither done nor refused;
//! - every descriptor has at most 253 entries, only its used part crosses
//!   (`buffer_len`), and SW_SCRATCH points at the shared buffer;
//! - when the guest reports success, the descriptors it sent cover the requested
//!   pages exactly once, each page with the requested operation, in 2 MiB entries
//!   only where allowed and aligned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_guest_firmware::error::FwError;
use nacre_guest_firmware::platform::snp::ghcb::{check_exit_info, clear_request, GhcbCall};
use nacre_guest_firmware::platform::snp::psc::page_state_change;
use nacre_shared_abi::snp::ghcb::{exit_code, Ghcb, GhcbField};
use nacre_shared_abi::snp::psc::{PageStateOp, PscEntry, PscHeader, PSC_MAX_ENTRIES};
use zerocopy::{FromBytes, IntoBytes};

const GHCB_GPA: u64 = 0x7000;
const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Start,
    Continue,
    Done,
    Refuse,
}

struct Step {
    entries: u8,
    pages_2m: u16,
    info1: u64,
    info2: u64,
    flips: Vec<(u16, u8)>,
}

struct Host<'a> {
    ghcb: Box<Ghcb>,
    script: Bytes<'a>,
    verdict: Verdict,
    /// The current descriptor's entries as the guest first wrote them.
    original: Vec<u64>,
    last_progress: u64,
    /// The descriptor as the host's last answer left it.
    last_answer: Vec<u8>,
    /// Every entry of every descriptor, as written.
    sent: Vec<PscEntry>,
    calls: usize,
}

impl Host<'_> {
    fn step(&mut self) -> Option<Step> {
        if self.script.is_empty() {
            return None;
        }
        let entries = self.script.u8();
        let pages_2m = self.script.u16();
        let info1 = match self.script.u8() {
            0 => 0,
            _ => self.script.u64(),
        };
        let info2 = match self.script.u8() {
            0 => 0,
            _ => self.script.u64(),
        };
        let flips = (0..self.script.u8() % 4)
            .map(|_| (self.script.u16(), self.script.u8()))
            .collect();
        Some(Step {
            entries,
            pages_2m,
            info1,
            info2,
            flips,
        })
    }

    fn entry(&self, i: usize) -> u64 {
        let at = HEADER_LEN + 8 * i;
        u64::from_le_bytes(self.ghcb.shared_buffer[at..at + 8].try_into().expect("8"))
    }

    fn set_entry(&mut self, i: usize, v: u64) {
        let at = HEADER_LEN + 8 * i;
        self.ghcb.shared_buffer[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// What the guest's checks make of the answer now in the GHCB.
    fn judge(&mut self, n: usize) -> Verdict {
        let g = &self.ghcb;
        if g.sw_exit_info_1 & 0xFFFF_FFFF != 0 || g.sw_exit_info_2 != 0 {
            return Verdict::Refuse;
        }
        let h = PscHeader::read_from_bytes(&g.shared_buffer[..HEADER_LEN]).expect("8 bytes");
        if h.reserved != 0 || usize::from(h.end_entry) != n - 1 {
            return Verdict::Refuse;
        }
        let (mut done, mut size) = (0u64, 0u64);
        for i in 0..n {
            let raw = self.entry(i);
            let Ok(e) = PscEntry::decode(raw) else {
                return Verdict::Refuse;
            };
            if raw & !0xFFF != self.original[i] & !0xFFF {
                return Verdict::Refuse;
            }
            done += u64::from(e.cur_page);
            size += e.npages();
        }
        if h.cur_entry > h.end_entry {
            // Done only as KVM leaves it: one past the last entry, every page complete.
            if usize::from(h.cur_entry) != n || done != size {
                return Verdict::Refuse;
            }
            return Verdict::Done;
        }
        let progress = done + u64::from(h.cur_entry);
        if progress <= self.last_progress {
            return Verdict::Refuse;
        }
        self.last_progress = progress;
        Verdict::Continue
    }
}

impl GhcbCall for Host<'_> {
    fn request(&mut self) -> &mut Ghcb {
        clear_request(&mut self.ghcb)
    }

    fn call(&mut self, buffer_len: usize) -> Result<(), FwError> {
        assert_ne!(
            self.verdict,
            Verdict::Refuse,
            "a call after a refused answer"
        );
        self.calls += 1;
        assert!(self.calls < 100_000, "the guest does not stop calling");
        let g = &mut self.ghcb;
        assert_eq!(g.sw_exit_code, exit_code::PSC);
        assert!(g.is_valid(GhcbField::SwScratch));
        assert_eq!(g.sw_scratch, GHCB_GPA + 0x800, "SW_SCRATCH");
        let mut h = PscHeader::read_from_bytes(&g.shared_buffer[..HEADER_LEN]).expect("8");
        let n = usize::from(h.end_entry) + 1;
        assert!(n <= PSC_MAX_ENTRIES);
        assert_eq!(buffer_len, HEADER_LEN + 8 * n, "only the used part crosses");
        if self.verdict == Verdict::Continue {
            assert_eq!(
                &self.ghcb.shared_buffer[..buffer_len],
                &self.last_answer[..],
                "the guest re-issued something else than the host's answer"
            );
        } else {
            // A new descriptor.
            assert_eq!(h.cur_entry, 0);
            self.original = (0..n).map(|i| self.entry(i)).collect();
            for &raw in &self.original {
                let e = PscEntry::decode(raw).expect("the guest writes valid entries");
                assert_eq!(e.cur_page, 0);
                self.sent.push(e);
            }
            self.last_progress = 0;
        }
        let step = self.step();
        let (budget, pages_2m) = step
            .as_ref()
            .map_or((usize::MAX, 512), |s| (usize::from(s.entries), s.pages_2m));
        // Do the work as KVM does, up to the budget.
        let mut worked = 0;
        while usize::from(h.cur_entry) < n && worked < budget {
            let i = usize::from(h.cur_entry);
            let mut e = PscEntry::decode(self.entry(i)).expect("decoded before");
            let upto = if e.huge {
                (e.cur_page.saturating_add(pages_2m)).min(512)
            } else {
                1
            };
            e.cur_page = upto;
            self.set_entry(i, e.encode());
            worked += 1;
            if u64::from(upto) < e.npages() {
                break;
            }
            h.cur_entry += 1;
        }
        self.ghcb.shared_buffer[..HEADER_LEN].copy_from_slice(h.as_bytes());
        if let Some(step) = step {
            for (at, mask) in step.flips {
                let at = usize::from(at) % buffer_len;
                self.ghcb.shared_buffer[at] ^= mask;
            }
            self.ghcb.sw_exit_info_1 = step.info1;
            self.ghcb.sw_exit_info_2 = step.info2;
        }
        self.last_answer = self.ghcb.shared_buffer[..buffer_len].to_vec();
        self.verdict = self.judge(n);
        check_exit_info(&self.ghcb)
    }

    fn answer(&self) -> &Ghcb {
        &self.ghcb
    }

    fn ghcb_gpa(&self) -> u64 {
        GHCB_GPA
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let gfn = u64::from(input.u32());
    let npages = u64::from(input.u16() % 4096).max(1);
    let op = match input.u8() % 4 {
        0 => PageStateOp::Private,
        1 => PageStateOp::Shared,
        2 => PageStateOp::Psmash,
        _ => PageStateOp::Unsmash,
    };
    let allow_2m = input.u8() & 1 != 0;
    let mut host = Host {
        ghcb: Box::new(Ghcb::new_zeroed()),
        script: input,
        verdict: Verdict::Start,
        original: Vec::new(),
        last_progress: 0,
        last_answer: Vec::new(),
        sent: Vec::new(),
        calls: 0,
    };
    let r = page_state_change(&mut host, gfn, npages, op, allow_2m);
    match r {
        Ok(()) => {
            assert!(
                host.verdict == Verdict::Done,
                "success after {:?}",
                host.verdict
            );
            let mut at = gfn;
            for e in &host.sent {
                assert_eq!(e.gfn, at, "descriptors skip or repeat pages");
                assert_eq!(e.op, op);
                if e.huge {
                    assert!(allow_2m && e.gfn % 512 == 0);
                }
                at += e.npages();
            }
            assert_eq!(at, gfn + npages, "the descriptors cover other pages");
        }
        Err(e) => {
            assert!(
                host.verdict == Verdict::Refuse,
                "{e:?} after {:?}",
                host.verdict
            );
            assert!(matches!(
                e,
                FwError::PageStateChange { .. } | FwError::Ghcb { .. }
            ));
        }
    }
});
