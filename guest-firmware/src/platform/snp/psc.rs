//! Guest side of page-state changes through the GHCB (NAE 0x8000_0010): descriptors
//! of up to 253 entries, 2 MiB entries where aligned (unless the image asks for 4 KiB
//! work), resumed on partial progress, with the host's progress checked to only move
//! forward (Linux `vmgexit_psc`; docs/specs.md 2.2).
//!
//! The descriptor is built directly in the private GHCB copy's shared buffer and only
//! its used part (header and entries) crosses to the shared page: a whole buffer is
//! 254 quadwords each way, which costs milliseconds where ring 0 is emulated.

use super::ghcb::GhcbCall;
use crate::error::FwError;
use nacre_shared_abi::snp::ghcb::{exit_code, GhcbField};
use nacre_shared_abi::snp::psc::{PageStateOp, PscEntry, PscHeader, PSC_MAX_ENTRIES};
use zerocopy::{FromBytes, IntoBytes};

/// Bytes of the descriptor header.
const HEADER_LEN: usize = 8;

/// Change the state of `npages` 4 KiB pages from `gfn`; with `allow_2m`, aligned runs
/// of 512 pages go as one 2 MiB entry.
pub fn page_state_change<G: GhcbCall + ?Sized>(
    ghcb: &mut G,
    mut gfn: u64,
    mut npages: u64,
    op: PageStateOp,
    allow_2m: bool,
) -> Result<(), FwError> {
    while npages > 0 {
        let (first, before) = (gfn, npages);
        let mut n = 0usize;
        let g = ghcb.request();
        while n < PSC_MAX_ENTRIES && npages > 0 {
            let e = entry(gfn, npages, op, allow_2m);
            let at = HEADER_LEN + 8 * n;
            g.shared_buffer[at..at + 8].copy_from_slice(&e.encode().to_le_bytes());
            n += 1;
            gfn += e.npages();
            npages -= e.npages();
        }
        let header = PscHeader {
            cur_entry: 0,
            end_entry: (n - 1) as u16,
            reserved: 0,
        };
        g.shared_buffer[..HEADER_LEN].copy_from_slice(header.as_bytes());
        run_desc(ghcb, first, before - npages, n, op, allow_2m)?;
    }
    Ok(())
}

/// The entry for the next pages from `gfn` (`left` of them).
fn entry(gfn: u64, left: u64, op: PageStateOp, allow_2m: bool) -> PscEntry {
    PscEntry {
        cur_page: 0,
        gfn,
        op,
        huge: allow_2m && gfn.is_multiple_of(512) && left >= 512,
    }
}

fn bad(gfn: u64, detail: u64) -> FwError {
    FwError::PageStateChange { gfn, detail }
}

/// Why the firmware refused the host's answer to a page-state change: the `detail` of
/// [`FwError::PageStateChange`] (any other value is the host's own SW_EXITINFO2).
pub mod refused {
    /// An entry of the answer does not decode.
    pub const BAD_ENTRY: u64 = 1;
    /// The host rewrote an entry's GFN, operation or size.
    pub const ENTRY_REWRITTEN: u64 = 2;
    /// The answer's header does not decode.
    pub const BAD_HEADER: u64 = 3;
    /// The host rewrote the header's last entry or reserved word.
    pub const HEADER_REWRITTEN: u64 = 4;
    /// The host made no progress, or its progress went backwards.
    pub const NO_PROGRESS: u64 = 5;
    /// The host reported the descriptor done with entries it did not complete, or
    /// progress past the last entry.
    pub const FALSE_COMPLETION: u64 = 6;

    /// What `detail` says, if it is one of these.
    pub fn describe(detail: u64) -> Option<&'static str> {
        Some(match detail {
            BAD_ENTRY => "the host's answer holds an entry that does not decode",
            ENTRY_REWRITTEN => "the host rewrote an entry",
            BAD_HEADER => "the host's answer has no header",
            HEADER_REWRITTEN => "the host rewrote the header",
            NO_PROGRESS => "the host's progress stalled or went backwards",
            FALSE_COMPLETION => "the host claimed entries done that it did not complete",
            _ => return None,
        })
    }
}

/// Run the `n`-entry descriptor for `pages` pages from `first` (built in the private
/// GHCB copy's shared buffer) until the host reports it complete.
fn run_desc<G: GhcbCall + ?Sized>(
    ghcb: &mut G,
    first: u64,
    pages: u64,
    n: usize,
    op: PageStateOp,
    allow_2m: bool,
) -> Result<(), FwError> {
    let len = HEADER_LEN + 8 * n;
    let end_entry = (n - 1) as u16;
    let mut last_progress = 0u64;
    loop {
        let scratch = ghcb.ghcb_gpa() + 0x800;
        let g = ghcb.request();
        g.sw_scratch = scratch;
        g.set_valid(GhcbField::SwScratch);
        g.set_exit(exit_code::PSC, 0, 0);
        ghcb.call(len)?;
        let g = ghcb.answer();
        if g.sw_exit_info_2 != 0 {
            return Err(bad(first, g.sw_exit_info_2));
        }
        let buf = &g.shared_buffer[..len];
        let h = PscHeader::read_from_bytes(&buf[..HEADER_LEN])
            .map_err(|_| bad(first, refused::BAD_HEADER))?;
        if h.reserved != 0 || h.end_entry != end_entry {
            return Err(bad(first, refused::HEADER_REWRITTEN));
        }
        // The host may only move cur_entry and each entry's cur_page; everything else
        // must be as written (each entry recomputed from the same inputs).
        let mut done = 0u64;
        let mut gfn = first;
        let mut left = pages;
        for raw in buf[HEADER_LEN..].chunks_exact(8) {
            let mut q = [0u8; 8];
            q.copy_from_slice(raw);
            let e = PscEntry::decode(u64::from_le_bytes(q))
                .map_err(|_| bad(first, refused::BAD_ENTRY))?;
            let want = entry(gfn, left, op, allow_2m);
            if e.gfn != want.gfn || e.op != want.op || e.huge != want.huge {
                return Err(bad(first, refused::ENTRY_REWRITTEN));
            }
            done += u64::from(e.cur_page);
            gfn += e.npages();
            left = left.saturating_sub(e.npages());
        }
        if h.cur_entry > h.end_entry {
            // Done: the host leaves `cur_entry` one past the last entry, every entry
            // complete (its `cur_page` its size; KVM `__snp_complete_one_psc`).
            // Anything else claims work the host did not report doing.
            if h.cur_entry != end_entry + 1 || done != pages {
                return Err(bad(first, refused::FALSE_COMPLETION));
            }
            return Ok(());
        }
        // Partial progress is allowed; no progress (or going backwards) is not.
        let progress = done + u64::from(h.cur_entry);
        if progress <= last_progress {
            return Err(bad(first, refused::NO_PROGRESS));
        }
        last_progress = progress;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::snp::ghcb::{check_exit_info, clear_request};
    use nacre_shared_abi::snp::ghcb::Ghcb;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    const GHCB_GPA: u64 = 0x7000;

    /// What the fake host does wrong.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fault {
        None,
        /// Answer with SW_EXITINFO2 set.
        Info2(u64),
        /// Report no progress at all.
        Stall,
        /// Rewrite the first unprocessed entry's GFN.
        MoveGfn,
        /// Change the header's end entry.
        EndEntry,
        /// Set the header's reserved word.
        Reserved,
        /// Make the first unprocessed entry undecodable.
        BadOp,
        /// After the first call, move `cur_entry` back to 0.
        Rewind,
        /// Refuse the call (SW_EXITINFO1).
        Refuse,
        /// Do the work, then report progress one entry past the last.
        BeyondEnd,
        /// Do nothing, report the descriptor done.
        ClaimUnconverted,
    }

    /// A host that changes page states as KVM does, at most `budget` entries (and
    /// `pages_2m` pages of a 2 MiB entry) per call.
    struct Host {
        ghcb: Box<Ghcb>,
        budget: usize,
        pages_2m: u16,
        fault: Fault,
        /// Per GFN: the op and how often it was changed.
        pages: BTreeMap<u64, (PageStateOp, u32)>,
        /// Per call: the bytes of shared buffer exchanged and the entries it held.
        calls: Vec<(usize, usize)>,
    }

    impl Host {
        fn new(budget: usize, pages_2m: u16, fault: Fault) -> Self {
            Self {
                ghcb: Box::new(Ghcb::new_zeroed()),
                budget,
                pages_2m,
                fault,
                pages: BTreeMap::new(),
                calls: Vec::new(),
            }
        }

        fn entry(&self, i: usize) -> u64 {
            let at = HEADER_LEN + 8 * i;
            let mut q = [0u8; 8];
            q.copy_from_slice(&self.ghcb.shared_buffer[at..at + 8]);
            u64::from_le_bytes(q)
        }

        fn set_entry(&mut self, i: usize, v: u64) {
            let at = HEADER_LEN + 8 * i;
            self.ghcb.shared_buffer[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    impl GhcbCall for Host {
        fn request(&mut self) -> &mut Ghcb {
            clear_request(&mut self.ghcb)
        }

        fn call(&mut self, buffer_len: usize) -> Result<(), FwError> {
            let g = &mut self.ghcb;
            assert_eq!(g.sw_exit_code, exit_code::PSC);
            assert!(g.is_valid(GhcbField::SwScratch));
            assert_eq!(g.sw_scratch, GHCB_GPA + 0x800, "the shared buffer's GPA");
            if self.fault == Fault::Refuse {
                g.sw_exit_info_1 = 1;
                return check_exit_info(g);
            }
            let mut h =
                PscHeader::read_from_bytes(&g.shared_buffer[..HEADER_LEN]).expect("a header");
            let n = usize::from(h.end_entry) + 1;
            assert_eq!(buffer_len, HEADER_LEN + 8 * n, "only the used part crosses");
            self.calls.push((buffer_len, n));
            let mut done = 0;
            if self.fault == Fault::ClaimUnconverted {
                h.cur_entry = h.end_entry + 1;
                g.shared_buffer[..HEADER_LEN].copy_from_slice(h.as_bytes());
                return Ok(());
            }
            while usize::from(h.cur_entry) < n && done < self.budget && self.fault != Fault::Stall {
                let i = usize::from(h.cur_entry);
                let mut e = PscEntry::decode(self.entry(i)).expect("a valid entry");
                let upto = if e.huge {
                    (e.cur_page + self.pages_2m).min(512)
                } else {
                    1
                };
                for p in u64::from(e.cur_page)..u64::from(upto) {
                    let slot = self.pages.entry(e.gfn + p).or_insert((e.op, 0));
                    *slot = (e.op, slot.1 + 1);
                }
                e.cur_page = upto;
                self.set_entry(i, e.encode());
                done += 1;
                if u64::from(upto) < e.npages() {
                    // Part of a 2 MiB entry: the host stops here for this call.
                    break;
                }
                h.cur_entry += 1;
            }
            let next = usize::from(h.cur_entry).min(n - 1);
            match self.fault {
                Fault::MoveGfn => self.set_entry(next, self.entry(next) + (1 << 12)),
                Fault::BadOp => self.set_entry(next, self.entry(next) | (0xF << 52)),
                Fault::EndEntry => h.end_entry += 1,
                Fault::Reserved => h.reserved = 1,
                Fault::Rewind if self.calls.len() > 1 => h.cur_entry = 0,
                Fault::BeyondEnd if usize::from(h.cur_entry) == n => h.cur_entry += 1,
                _ => {}
            }
            let g = &mut self.ghcb;
            g.shared_buffer[..HEADER_LEN].copy_from_slice(h.as_bytes());
            if let Fault::Info2(v) = self.fault {
                g.sw_exit_info_2 = v;
            }
            Ok(())
        }

        fn answer(&self) -> &Ghcb {
            &self.ghcb
        }

        fn ghcb_gpa(&self) -> u64 {
            GHCB_GPA
        }
    }

    fn run(host: &mut Host, gfn: u64, npages: u64, allow_2m: bool) -> Result<(), FwError> {
        page_state_change(host, gfn, npages, PageStateOp::Private, allow_2m)
    }

    /// Every page of `[gfn, gfn + npages)` was changed to private exactly once, and no
    /// other page was touched.
    fn each_page_once(host: &Host, gfn: u64, npages: u64) {
        assert_eq!(host.pages.len() as u64, npages);
        for (g, (op, times)) in &host.pages {
            assert!((gfn..gfn + npages).contains(g), "gfn {g:#x} outside");
            assert_eq!((*op, *times), (PageStateOp::Private, 1), "gfn {g:#x}");
        }
    }

    #[test]
    fn aligned_runs_go_as_2m_entries_in_one_call() {
        let mut host = Host::new(usize::MAX, 512, Fault::None);
        assert_eq!(run(&mut host, 1024, 1024 + 3, true), Ok(()));
        // Two 2 MiB entries and three 4 KiB ones.
        assert_eq!(host.calls, [(HEADER_LEN + 8 * 5, 5)]);
        each_page_once(&host, 1024, 1027);
    }

    #[test]
    fn without_2m_entries_a_large_range_is_split_into_full_descriptors() {
        let mut host = Host::new(usize::MAX, 512, Fault::None);
        assert_eq!(run(&mut host, 512, 1000, false), Ok(()));
        let entries: Vec<usize> = host.calls.iter().map(|c| c.1).collect();
        assert_eq!(entries, [253, 253, 253, 241]);
        each_page_once(&host, 512, 1000);
    }

    #[test]
    fn an_unaligned_start_goes_4k_until_a_2m_boundary() {
        let mut host = Host::new(usize::MAX, 512, Fault::None);
        assert_eq!(run(&mut host, 1, 1023, true), Ok(()));
        // 511 small entries then one 2 MiB entry: 512 entries in three descriptors.
        let entries: Vec<usize> = host.calls.iter().map(|c| c.1).collect();
        assert_eq!(entries, [253, 253, 6]);
        each_page_once(&host, 1, 1023);
    }

    #[test]
    fn partial_progress_is_resumed_where_the_host_stopped() {
        let mut host = Host::new(3, 100, Fault::None);
        assert_eq!(run(&mut host, 0, 512 * 2 + 7, true), Ok(()));
        // 2 MiB entries 100 pages per call (6 calls each, the last sharing its call
        // with the next entry), then the 4 KiB ones 3 at a time, each call with the
        // whole descriptor.
        assert_eq!(host.calls.len(), 13);
        assert!(host.calls.iter().all(|&c| c == (HEADER_LEN + 8 * 9, 9)));
        each_page_once(&host, 0, 1031);
    }

    #[test]
    fn a_host_that_makes_no_progress_is_refused() {
        let mut host = Host::new(1, 512, Fault::Stall);
        assert_eq!(
            run(&mut host, 0, 4, false),
            Err(FwError::PageStateChange {
                gfn: 0,
                detail: refused::NO_PROGRESS
            })
        );
        assert_eq!(host.calls.len(), 1);
    }

    #[test]
    fn a_host_that_goes_back_is_refused() {
        let mut host = Host::new(1, 512, Fault::Rewind);
        assert_eq!(
            run(&mut host, 8, 4, false),
            Err(FwError::PageStateChange {
                gfn: 8,
                detail: refused::NO_PROGRESS
            })
        );
    }

    #[test]
    fn a_host_that_rewrites_an_entry_is_refused() {
        let mut host = Host::new(1, 512, Fault::MoveGfn);
        assert_eq!(
            run(&mut host, 8, 4, false),
            Err(FwError::PageStateChange {
                gfn: 8,
                detail: refused::ENTRY_REWRITTEN
            })
        );
        let mut host = Host::new(1, 512, Fault::BadOp);
        assert_eq!(
            run(&mut host, 8, 4, false),
            Err(FwError::PageStateChange {
                gfn: 8,
                detail: refused::BAD_ENTRY
            })
        );
    }

    #[test]
    fn a_host_that_changes_the_header_is_refused() {
        for fault in [Fault::EndEntry, Fault::Reserved] {
            let mut host = Host::new(1, 512, fault);
            assert_eq!(
                run(&mut host, 8, 4, false),
                Err(FwError::PageStateChange {
                    gfn: 8,
                    detail: refused::HEADER_REWRITTEN
                }),
                "{fault:?}"
            );
        }
    }

    #[test]
    fn a_host_that_claims_work_it_did_not_do_is_refused() {
        let mut host = Host::new(usize::MAX, 512, Fault::ClaimUnconverted);
        assert_eq!(
            run(&mut host, 1024, 513, true),
            Err(FwError::PageStateChange {
                gfn: 1024,
                detail: refused::FALSE_COMPLETION
            })
        );
        assert!(host.pages.is_empty(), "nothing was changed");
        // Progress past the last entry, even with the work done.
        let mut host = Host::new(usize::MAX, 512, Fault::BeyondEnd);
        assert_eq!(
            run(&mut host, 8, 4, false),
            Err(FwError::PageStateChange {
                gfn: 8,
                detail: refused::FALSE_COMPLETION
            })
        );
    }

    #[test]
    fn every_refusal_is_named() {
        for detail in 1..=6 {
            assert!(refused::describe(detail).is_some(), "{detail}");
        }
        assert_eq!(refused::describe(0x100 << 32), None, "the host's own code");
    }

    #[test]
    fn the_hosts_error_code_is_reported() {
        let mut host = Host::new(usize::MAX, 512, Fault::Info2(0x100 << 32));
        assert_eq!(
            run(&mut host, 8, 4, false),
            Err(FwError::PageStateChange {
                gfn: 8,
                detail: 0x100 << 32
            })
        );
        let mut host = Host::new(usize::MAX, 512, Fault::Refuse);
        assert!(matches!(
            run(&mut host, 8, 4, false),
            Err(FwError::Ghcb {
                exit_code: exit_code::PSC,
                info1: 1,
                ..
            })
        ));
    }

    proptest! {
        /// Whatever the range and however little the host does per call, every page
        /// changes exactly once, in descriptors of at most 253 entries.
        #[test]
        fn every_page_changes_exactly_once(
            gfn in 0u64..3000,
            npages in 1u64..2000,
            allow_2m in any::<bool>(),
            budget in 1usize..300,
            pages_2m in 1u16..=512,
        ) {
            let mut host = Host::new(budget, pages_2m, Fault::None);
            prop_assert_eq!(run(&mut host, gfn, npages, allow_2m), Ok(()));
            prop_assert!(host.calls.iter().all(|c| c.1 <= PSC_MAX_ENTRIES));
            prop_assert_eq!(host.pages.len() as u64, npages);
            let each_once = host.pages.iter().all(|(g, (op, n))| {
                (gfn..gfn + npages).contains(g) && *op == PageStateOp::Private && *n == 1
            });
            prop_assert!(each_once, "a page changed twice, wrongly or outside the range");
        }
    }
}
