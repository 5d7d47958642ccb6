//! The page-state change engine for NAE event 0x8000_0010 (`SVM_VMGEXIT_PSC`).
//!
//! The guest fills a [`PscDesc`] in the GHCB shared buffer; the caller copies it into
//! private memory, calls [`handle_psc`] on the copy, writes the copy back and puts the
//! return value in `sw_exit_info_2`. The rules are KVM's (`snp_begin_psc` and
//! `snp_complete_one_psc` in `arch/x86/kvm/svm/sev.c`; docs/specs.md 2.3):
//! - `end_entry` is inclusive and must be below 253, the header's reserved word zero;
//! - processing starts at `cur_entry`; entries already complete (`cur_page == npages`)
//!   are skipped;
//! - a partly done 2 MiB entry (`cur_page > 0`) is finished as 4 KiB pages from
//!   `gfn + cur_page`;
//! - following entries with the same operation, contiguous GFNs, `cur_page == 0` and
//!   the same page size are merged into one range (KVM: one `KVM_HC_MAP_GPA_RANGE`);
//! - PSMASH and UNSMASH entries are no-ops marked complete;
//! - after each range, its entries get `cur_page = npages` and the header's
//!   `cur_entry` moves past them, so a host that stops early leaves a descriptor the
//!   guest can re-issue (docs/specs.md 2.2 step 3, 8 "Pitfalls").
//!
//! Every entry is decoded with [`PscEntry::decode`], which is stricter than KVM
//! (reserved bits and unknown operations are refused too).

use super::vmgexit::refuse;
use super::SnpContext;
use crate::mmu::attributes::Kind;
use crate::mmu::HypervisorMmu;
use crate::platform::hostile::Lies;
use crate::platform::Stop;
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::snp::ghcb::{Ghcb, GhcbErrorCode, GhcbField};
use nacre_shared_abi::snp::msr_protocol::MsrPscOp;
use nacre_shared_abi::snp::psc::{
    PageStateOp, PscDesc, PscEntry, PSC_ERROR_GENERIC, PSC_ERROR_INVALID_ENTRY,
    PSC_ERROR_INVALID_HDR, PSC_MAX_ENTRIES,
};
use zerocopy::{FromBytes, IntoBytes};

/// Offset of the shared buffer in the GHCB page, where the descriptor must be
/// (`sw_scratch` = GHCB GPA + 0x800; GHCB specification 56421, 4.1.6).
const SHARED_BUFFER_OFFSET: u64 = 0x800;

/// The PSC NAE event on the GHCB copy `g` of the page at `ghcb_gpa`: the descriptor in
/// the shared buffer is processed by [`handle_psc`] on a copy, which is written back.
pub fn nae(
    ctx: &mut SnpContext<'_>,
    ghcb_gpa: u64,
    g: &mut Ghcb,
) -> Result<Option<Stop>, MemoryError> {
    ctx.counters.psc_calls += 1;
    if !g.is_valid(GhcbField::SwScratch) || g.sw_scratch != ghcb_gpa + SHARED_BUFFER_OFFSET {
        refuse(g, GhcbErrorCode::InvalidScratchArea);
        return Ok(None);
    }
    let Ok(mut desc) = PscDesc::read_from_bytes(&g.shared_buffer) else {
        refuse(g, GhcbErrorCode::InvalidInput);
        return Ok(None);
    };
    let mut stats = PscStats::default();
    let mut backend = MmuBackend {
        mem: ctx.mem,
        mmu: ctx.mmu,
        failed: None,
    };
    let ret = match psc_lie(ctx.lies) {
        Some(lie) => lie.tell(&mut desc, &mut backend, &mut stats),
        None => handle_psc(&mut desc, &mut backend, ctx.psc_budget, &mut stats),
    };
    if let Some(e) = backend.failed {
        return Err(e);
    }
    ctx.counters.psc_entries_4k += stats.entries_4k;
    ctx.counters.psc_entries_2m += stats.entries_2m;
    g.shared_buffer.copy_from_slice(desc.as_bytes());
    g.sw_exit_info_2 = ret;
    Ok(None)
}

/// How a hostile-host test makes the host lie about a page-state change
/// (`NACRE_TEST_HOSTILE`, [`crate::platform::hostile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PscLie {
    /// Change the first pending page and report it; nothing else.
    OnePage,
    /// Report the page [`PscLie::OnePage`] changed as not changed after all.
    Backwards,
    /// Do it all, then report progress one entry past the last.
    BeyondEnd,
    /// Change nothing, report everything processed.
    UnconvertedClaim,
    /// Do it all, then rewrite the header's last entry.
    HeaderRewrite,
    /// Do it all, then rewrite the first entry's GFN.
    EntryRewrite,
}

/// The lie to tell for this call, if a test asked for one: each on the first page-state
/// change through the GHCB, the backwards one over the first two.
fn psc_lie(lies: &mut Lies) -> Option<PscLie> {
    use crate::platform::hostile::Hostile;
    match lies.turn(Hostile::PscProgressBackwards) {
        Some(0) => return Some(PscLie::OnePage),
        Some(1) => return Some(PscLie::Backwards),
        _ => {}
    }
    [
        (Hostile::PscBeyondEnd, PscLie::BeyondEnd),
        (Hostile::PscUnconvertedClaim, PscLie::UnconvertedClaim),
        (Hostile::PscHeaderRewrite, PscLie::HeaderRewrite),
        (Hostile::PscEntryRewrite, PscLie::EntryRewrite),
    ]
    .into_iter()
    .find(|&(hook, _)| lies.once(hook))
    .map(|(_, lie)| lie)
}

impl PscLie {
    /// Answer `desc` with this lie instead of [`handle_psc`]; returns SW_EXITINFO2.
    pub fn tell(
        self,
        desc: &mut PscDesc,
        backend: &mut dyn PageStateBackend,
        stats: &mut PscStats,
    ) -> u64 {
        let first = usize::from(desc.header.cur_entry);
        let entry = desc
            .entries
            .get(first)
            .and_then(|&raw| PscEntry::decode(raw).ok());
        match self {
            PscLie::OnePage => {
                let Some(e) = entry.filter(|e| u64::from(e.cur_page) < e.npages()) else {
                    return handle_psc(desc, backend, None, stats);
                };
                let Some(op) = msr_op(e.op) else {
                    return handle_psc(desc, backend, None, stats);
                };
                if backend
                    .change(e.gfn + u64::from(e.cur_page), 1, op, false)
                    .is_err()
                {
                    return PSC_ERROR_GENERIC;
                }
                let done = PscEntry {
                    cur_page: e.cur_page + 1,
                    ..e
                };
                desc.entries[first] = done.encode();
                0
            }
            PscLie::Backwards => {
                if let Some(e) = entry {
                    let back = PscEntry {
                        cur_page: e.cur_page.saturating_sub(1),
                        ..e
                    };
                    desc.entries[first] = back.encode();
                }
                0
            }
            PscLie::UnconvertedClaim => {
                desc.header.cur_entry = desc.header.end_entry.saturating_add(1);
                0
            }
            PscLie::BeyondEnd | PscLie::HeaderRewrite | PscLie::EntryRewrite => {
                let ret = handle_psc(desc, backend, None, stats);
                match self {
                    PscLie::BeyondEnd => {
                        desc.header.cur_entry = desc.header.end_entry.saturating_add(2);
                    }
                    PscLie::HeaderRewrite => {
                        desc.header.end_entry = desc.header.end_entry.saturating_add(1);
                    }
                    _ => {
                        if let Some(e) = entry {
                            let moved = PscEntry {
                                gfn: e.gfn + e.npages(),
                                cur_page: e.npages() as u16,
                                ..e
                            };
                            desc.entries[first] = moved.encode();
                        }
                    }
                }
                ret
            }
        }
    }
}

/// Change `npages` pages from `gfn` to `op` through the host MMU, as the MSR
/// protocol's page-state change does (the host's own failures included in `Err`).
#[expect(
    clippy::result_unit_err,
    reason = "the contract: the host only reports that it failed (KVM: `hypercall.ret != 0`)"
)]
pub fn change(ctx: &SnpContext<'_>, gfn: u64, npages: u64, op: MsrPscOp) -> Result<(), ()> {
    MmuBackend {
        mem: ctx.mem,
        mmu: ctx.mmu,
        failed: None,
    }
    .change(gfn, npages, op, false)
}

/// The PSC backend: KVM's `KVM_HC_MAP_GPA_RANGE` exit as the VMM completes it, an
/// attribute change in the host MMU (zap, reclaim, discard of converted pages).
#[derive(Debug)]
pub struct MmuBackend<'a> {
    /// Guest RAM.
    pub mem: &'a GuestMemory,
    /// The MMU whose attributes change.
    pub mmu: &'a dyn HypervisorMmu,
    /// The host's own failure, if one stopped the change.
    pub failed: Option<MemoryError>,
}

impl PageStateBackend for MmuBackend<'_> {
    /// Pages already in the requested state are left alone, as KVM leaves a GFN whose
    /// attribute does not change (no zap, no discard, the validated bit kept).
    fn change(&mut self, gfn: u64, npages: u64, op: MsrPscOp, _huge: bool) -> Result<(), ()> {
        let kind = match op {
            MsrPscOp::Private => Kind::Private,
            MsrPscOp::Shared => Kind::Shared,
        };
        match self.mmu.convert(self.mem, gfn, npages, kind) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(()),
            Err(e) => {
                self.failed = Some(e);
                Err(())
            }
        }
    }
}

/// Bits 11:0 of a raw PSC entry: `cur_page` (Linux `struct psc_entry`).
const CUR_PAGE_MASK: u64 = 0xFFF;

/// Applies page-state changes to guest memory: on the emulated platform the software
/// RMP and the two views, on hardware `KVM_SET_MEMORY_ATTRIBUTES`.
pub trait PageStateBackend {
    /// Change `npages` pages from `gfn` to `op` (only `Private` or `Shared`). `huge`
    /// says the range is made of whole 2 MiB entries (then `gfn` and `npages` are
    /// multiples of 512). `Err(())` means the host failed; the guest then sees
    /// [`PSC_ERROR_GENERIC`] (KVM: `hypercall.ret != 0`).
    #[expect(
        clippy::result_unit_err,
        reason = "the contract: the host only reports that it failed (KVM: `hypercall.ret != 0`)"
    )]
    fn change(&mut self, gfn: u64, npages: u64, op: MsrPscOp, huge: bool) -> Result<(), ()>;
}

/// Counters kept across calls, printed by `nacre run --stats` (docs/design.md, "The rules
/// the host MMU keeps").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PscStats {
    /// 4 KiB private/shared entries completed through the backend.
    pub entries_4k: u64,
    /// 2 MiB private/shared entries completed through the backend (a partly done one
    /// finished as 4 KiB pages counts here too).
    pub entries_2m: u64,
    /// Backend calls that succeeded (merged ranges).
    pub ranges: u64,
}

/// The first pending entry of a range.
struct Pending {
    /// Index in the descriptor.
    idx: usize,
    /// The decoded entry.
    entry: PscEntry,
    /// First page still to change.
    gfn: u64,
    /// Pages still to change.
    npages: u64,
    /// Whether the rest is handled as whole 2 MiB entries.
    huge: bool,
}

/// The backend operation for a PSC operation; `None` for the PSMASH/UNSMASH hints.
fn msr_op(op: PageStateOp) -> Option<MsrPscOp> {
    match op {
        PageStateOp::Private => Some(MsrPscOp::Private),
        PageStateOp::Shared => Some(MsrPscOp::Shared),
        PageStateOp::Psmash | PageStateOp::Unsmash => None,
    }
}

/// Record progress in the header.
fn set_cur_entry(desc: &mut PscDesc, idx: usize) {
    // idx <= end_entry + 1 <= PSC_MAX_ENTRIES, which fits in u16.
    desc.header.cur_entry = u16::try_from(idx).unwrap_or(u16::MAX);
}

/// Mark entries `[idx, idx + count)` complete: `cur_page = npages` (KVM
/// `__snp_complete_one_psc`). They were decoded successfully, so only `cur_page` changes.
fn mark_complete(desc: &mut PscDesc, idx: usize, count: usize, stats: Option<&mut PscStats>) {
    let end = idx.saturating_add(count).min(desc.entries.len());
    let mut n4k: u64 = 0;
    let mut n2m: u64 = 0;
    for raw in desc.entries.get_mut(idx..end).unwrap_or_default() {
        let huge = PscEntry::decode(*raw).is_ok_and(|e| e.huge);
        let npages = if huge { 512 } else { 1 };
        *raw = (*raw & !CUR_PAGE_MASK) | npages;
        if huge {
            n2m = n2m.saturating_add(1);
        } else {
            n4k = n4k.saturating_add(1);
        }
    }
    if let Some(stats) = stats {
        stats.entries_4k = stats.entries_4k.saturating_add(n4k);
        stats.entries_2m = stats.entries_2m.saturating_add(n2m);
    }
}

/// Process `desc`, a private copy of the GHCB shared buffer, in place.
///
/// `budget` is the most entries to complete in this call (`None`: all); `Some(n)`
/// behaves like a host that returns with partial progress, which the guest resumes by
/// re-issuing the request while `cur_entry <= end_entry`. `Some(0)` makes no progress.
///
/// Returns the value for `sw_exit_info_2`: 0, [`PSC_ERROR_INVALID_HDR`] (the descriptor
/// is untouched), [`PSC_ERROR_INVALID_ENTRY`] (`cur_entry` names the bad entry; the
/// entries before it keep their progress) or [`PSC_ERROR_GENERIC`] (the backend failed;
/// `cur_entry` names the first entry of the failed range). Returns 0 without doing
/// anything when `cur_entry > end_entry`.
pub fn handle_psc(
    desc: &mut PscDesc,
    backend: &mut dyn PageStateBackend,
    budget: Option<usize>,
    stats: &mut PscStats,
) -> u64 {
    let end = usize::from(desc.header.end_entry);
    if end >= PSC_MAX_ENTRIES || desc.header.reserved != 0 {
        return PSC_ERROR_INVALID_HDR;
    }
    let mut budget = budget.unwrap_or(usize::MAX);
    let mut idx = usize::from(desc.header.cur_entry);

    loop {
        // Find the next entry with pages left (KVM: the `next_range` scan).
        let start = loop {
            if idx > end {
                set_cur_entry(desc, idx);
                return 0;
            }
            let Some(&raw) = desc.entries.get(idx) else {
                return PSC_ERROR_INVALID_HDR;
            };
            let Ok(entry) = PscEntry::decode(raw) else {
                set_cur_entry(desc, idx);
                return PSC_ERROR_INVALID_ENTRY;
            };
            let done = u64::from(entry.cur_page);
            if done < entry.npages() {
                break Pending {
                    idx,
                    entry,
                    gfn: entry.gfn.saturating_add(done),
                    npages: entry.npages().saturating_sub(done),
                    // A partly done 2 MiB entry is effectively split: finish it as 4K.
                    huge: entry.huge && done == 0,
                };
            }
            idx = idx.saturating_add(1);
        };
        set_cur_entry(desc, start.idx);
        if budget == 0 {
            return 0;
        }

        let Some(op) = msr_op(start.entry.op) else {
            // PSMASH/UNSMASH: no-ops, complete (KVM `snp_begin_psc`, default case).
            mark_complete(desc, start.idx, 1, None);
            idx = start.idx.saturating_add(1);
            budget = budget.saturating_sub(1);
            set_cur_entry(desc, idx);
            continue;
        };

        // Merge the following entries that continue this range.
        let mut count = 1;
        let mut npages = start.npages;
        while count < budget && start.idx.saturating_add(count) <= end {
            let Some(&raw) = desc.entries.get(start.idx.saturating_add(count)) else {
                break;
            };
            let Ok(next) = PscEntry::decode(raw) else {
                break;
            };
            if next.op != start.entry.op
                || next.cur_page != 0
                || next.huge != start.huge
                || start.gfn.checked_add(npages) != Some(next.gfn)
            {
                break;
            }
            npages = npages.saturating_add(next.npages());
            count = count.saturating_add(1);
        }

        if backend.change(start.gfn, npages, op, start.huge).is_err() {
            return PSC_ERROR_GENERIC;
        }
        stats.ranges = stats.ranges.saturating_add(1);
        mark_complete(desc, start.idx, count, Some(stats));
        idx = start.idx.saturating_add(count);
        budget = budget.saturating_sub(count);
        set_cur_entry(desc, idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::snp::psc::PscHeader;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Records every call; fails the calls whose index is in `fail_on`.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<(u64, u64, MsrPscOp, bool)>,
        fail_on: Vec<usize>,
        attempts: usize,
    }

    impl PageStateBackend for Recorder {
        fn change(&mut self, gfn: u64, npages: u64, op: MsrPscOp, huge: bool) -> Result<(), ()> {
            let n = self.attempts;
            self.attempts += 1;
            if self.fail_on.contains(&n) {
                return Err(());
            }
            self.calls.push((gfn, npages, op, huge));
            Ok(())
        }
    }

    fn e(gfn: u64, op: PageStateOp, huge: bool, cur_page: u16) -> u64 {
        PscEntry {
            cur_page,
            gfn,
            op,
            huge,
        }
        .encode()
    }

    fn desc(entries: &[u64]) -> PscDesc {
        let mut d = PscDesc {
            header: PscHeader {
                cur_entry: 0,
                end_entry: 0,
                reserved: 0,
            },
            entries: [0; PSC_MAX_ENTRIES],
        };
        d.entries[..entries.len()].copy_from_slice(entries);
        d.header.end_entry = entries.len().saturating_sub(1) as u16;
        d
    }

    fn run(d: &mut PscDesc, budget: Option<usize>) -> (u64, Recorder, PscStats) {
        let mut b = Recorder::default();
        let mut s = PscStats::default();
        let r = handle_psc(d, &mut b, budget, &mut s);
        (r, b, s)
    }

    use MsrPscOp::{Private as P, Shared as S};
    use PageStateOp::{Private, Psmash, Shared, Unsmash};

    #[test]
    fn invalid_header() {
        let mut d = desc(&[e(1, Private, false, 0)]);
        d.header.end_entry = 253;
        let before = d.clone();
        let (r, b, _) = run(&mut d, None);
        assert_eq!(r, PSC_ERROR_INVALID_HDR);
        assert!(b.calls.is_empty());
        assert_eq!(d.header, before.header);
        assert_eq!(d.entries, before.entries);

        let mut d = desc(&[e(1, Private, false, 0)]);
        d.header.reserved = 1;
        let (r, b, _) = run(&mut d, None);
        assert_eq!(r, PSC_ERROR_INVALID_HDR);
        assert!(b.calls.is_empty());
        assert_eq!(d.header.cur_entry, 0);
    }

    #[test]
    fn nothing_to_do() {
        let mut d = desc(&[e(1, Private, false, 0)]);
        d.header.cur_entry = 1;
        let (r, b, s) = run(&mut d, None);
        assert_eq!((r, b.calls.len(), s), (0, 0, PscStats::default()));
        assert_eq!(d.header.cur_entry, 1);
        d.header.cur_entry = 200;
        assert_eq!(run(&mut d, None).0, 0);
        assert_eq!(d.header.cur_entry, 200);
    }

    /// Each lie of the hostile-host tests changes the answer in its one way.
    #[test]
    fn psc_lies_change_the_answer_as_named() {
        let entries = [e(512, Private, true, 0), e(1024, Private, false, 0)];
        let lie = |lie: PscLie, d: &mut PscDesc| {
            let mut b = Recorder::default();
            let r = lie.tell(d, &mut b, &mut PscStats::default());
            (r, b.calls)
        };
        // One page changed and reported, then reported unchanged.
        let mut d = desc(&entries);
        assert_eq!(lie(PscLie::OnePage, &mut d), (0, vec![(512, 1, P, false)]));
        assert_eq!(PscEntry::decode(d.entries[0]).unwrap().cur_page, 1);
        assert_eq!(d.header.cur_entry, 0);
        assert_eq!(lie(PscLie::Backwards, &mut d), (0, vec![]));
        assert_eq!(PscEntry::decode(d.entries[0]).unwrap().cur_page, 0);
        // Nothing changed, everything claimed.
        let mut d = desc(&entries);
        assert_eq!(lie(PscLie::UnconvertedClaim, &mut d), (0, vec![]));
        assert_eq!(d.header.cur_entry, 2);
        assert_eq!(d.entries[..2], entries);
        // All done, then the progress, the header or an entry rewritten.
        let mut d = desc(&entries);
        let (r, calls) = lie(PscLie::BeyondEnd, &mut d);
        assert_eq!((r, calls.len(), d.header.cur_entry), (0, 2, 3));
        let mut d = desc(&entries);
        lie(PscLie::HeaderRewrite, &mut d);
        assert_eq!((d.header.cur_entry, d.header.end_entry), (2, 2));
        let mut d = desc(&entries);
        lie(PscLie::EntryRewrite, &mut d);
        let moved = PscEntry::decode(d.entries[0]).unwrap();
        assert_eq!((moved.gfn, moved.cur_page), (1024, 512));
    }

    /// The lies are told only under their hook, each on its turn.
    #[test]
    fn psc_lies_are_told_only_when_asked_for() {
        use crate::platform::hostile::Hostile;
        assert_eq!(psc_lie(&mut Lies::new(None)), None);
        assert_eq!(psc_lie(&mut Lies::new(Some(Hostile::EarlyWake))), None);
        let mut back = Lies::new(Some(Hostile::PscProgressBackwards));
        let told: Vec<_> = (0..3).map(|_| psc_lie(&mut back)).collect();
        assert_eq!(told, [Some(PscLie::OnePage), Some(PscLie::Backwards), None]);
        let mut once = Lies::new(Some(Hostile::PscEntryRewrite));
        assert_eq!(psc_lie(&mut once), Some(PscLie::EntryRewrite));
        assert_eq!(psc_lie(&mut once), None);
    }

    #[test]
    fn merges_contiguous_entries_and_splits_on_any_difference() {
        let mut d = desc(&[
            e(10, Private, false, 0),
            e(11, Private, false, 0),
            e(12, Private, false, 0),
            e(13, Shared, false, 0),   // different op
            e(15, Shared, false, 0),   // not contiguous
            e(512, Shared, true, 0),   // different size
            e(1024, Shared, true, 0),  // merges with the previous 2M
            e(1536, Shared, false, 0), // back to 4K
        ]);
        let (r, b, s) = run(&mut d, None);
        assert_eq!(r, 0);
        assert_eq!(
            b.calls,
            vec![
                (10, 3, P, false),
                (13, 1, S, false),
                (15, 1, S, false),
                (512, 1024, S, true),
                (1536, 1, S, false),
            ]
        );
        assert_eq!(
            s,
            PscStats {
                entries_4k: 6,
                entries_2m: 2,
                ranges: 5
            }
        );
        assert_eq!(d.header.cur_entry, 8);
        for (i, raw) in d.entries[..8].iter().enumerate() {
            let en = PscEntry::decode(*raw).unwrap();
            assert_eq!(u64::from(en.cur_page), en.npages(), "entry {i}");
        }
    }

    #[test]
    fn partial_2m_entry_is_finished_as_4k() {
        let mut d = desc(&[
            e(512, Private, true, 500),
            e(1024, Private, false, 0), // contiguous with the rest of the 2M entry
            e(1536, Private, true, 0),
        ]);
        let (r, b, s) = run(&mut d, None);
        assert_eq!(r, 0);
        assert_eq!(b.calls, vec![(1012, 13, P, false), (1536, 512, P, true)]);
        assert_eq!(
            s,
            PscStats {
                entries_4k: 1,
                entries_2m: 2,
                ranges: 2
            }
        );
        assert_eq!(PscEntry::decode(d.entries[0]).unwrap().cur_page, 512);
    }

    #[test]
    fn completed_entries_are_skipped() {
        let mut d = desc(&[
            e(1, Private, false, 1),
            e(512, Shared, true, 512),
            e(2, Private, false, 0),
        ]);
        let (r, b, _) = run(&mut d, None);
        assert_eq!(r, 0);
        assert_eq!(b.calls, vec![(2, 1, P, false)]);
        assert_eq!(d.header.cur_entry, 3);
    }

    #[test]
    fn psmash_and_unsmash_are_noops() {
        let mut d = desc(&[
            e(512, Psmash, true, 0),
            e(1024, Unsmash, true, 0),
            e(7, Shared, false, 0),
        ]);
        let (r, b, s) = run(&mut d, None);
        assert_eq!(r, 0);
        assert_eq!(b.calls, vec![(7, 1, S, false)]);
        assert_eq!(
            s,
            PscStats {
                entries_4k: 1,
                entries_2m: 0,
                ranges: 1
            }
        );
        assert_eq!(PscEntry::decode(d.entries[0]).unwrap().cur_page, 512);
        assert_eq!(PscEntry::decode(d.entries[1]).unwrap().cur_page, 512);
    }

    #[test]
    fn invalid_entry_keeps_progress() {
        let bad = [
            1 << 57,                          // reserved bit
            (5 << 52) | (3 << 12),            // unknown op
            e(513, Private, true, 0),         // unaligned 2M
            e(3, Private, false, 0) | 2,      // cur_page 2 > 1
            e(512, Private, true, 0) | 0x201, // cur_page 513 > 512
            0,                                // op 0
        ];
        for raw in bad {
            let mut d = desc(&[
                e(1, Private, false, 0),
                e(2, Private, false, 0),
                raw,
                e(9, Shared, false, 0),
            ]);
            let (r, b, _) = run(&mut d, None);
            assert_eq!(r, PSC_ERROR_INVALID_ENTRY, "{raw:#x}");
            assert_eq!(b.calls, vec![(1, 2, P, false)]);
            assert_eq!(d.header.cur_entry, 2);
            assert_eq!(d.entries[2], raw, "the bad entry is left alone");
            assert_eq!(PscEntry::decode(d.entries[1]).unwrap().cur_page, 1);
        }
    }

    #[test]
    fn backend_error_is_generic() {
        let mut d = desc(&[
            e(1, Private, false, 0),
            e(5, Shared, false, 0),
            e(6, Private, false, 0),
        ]);
        let mut b = Recorder {
            fail_on: vec![1],
            ..Recorder::default()
        };
        let mut s = PscStats::default();
        assert_eq!(handle_psc(&mut d, &mut b, None, &mut s), PSC_ERROR_GENERIC);
        assert_eq!(b.calls, vec![(1, 1, P, false)]);
        assert_eq!(d.header.cur_entry, 1);
        assert_eq!(PscEntry::decode(d.entries[1]).unwrap().cur_page, 0);
        assert_eq!(s.ranges, 1);
        // The guest re-issues; the host now succeeds.
        assert_eq!(handle_psc(&mut d, &mut b, None, &mut s), 0);
        assert_eq!(
            b.calls,
            vec![(1, 1, P, false), (5, 1, S, false), (6, 1, P, false)]
        );
    }

    #[test]
    fn budget_gives_partial_progress() {
        let mut d = desc(&[
            e(1, Private, false, 0),
            e(2, Private, false, 0),
            e(3, Private, false, 0),
            e(512, Psmash, true, 0),
            e(4, Shared, false, 0),
        ]);
        let mut b = Recorder::default();
        let mut s = PscStats::default();
        assert_eq!(handle_psc(&mut d, &mut b, Some(0), &mut s), 0);
        assert_eq!((d.header.cur_entry, b.calls.len()), (0, 0));
        assert_eq!(handle_psc(&mut d, &mut b, Some(2), &mut s), 0);
        assert_eq!(d.header.cur_entry, 2);
        assert_eq!(handle_psc(&mut d, &mut b, Some(2), &mut s), 0);
        assert_eq!(d.header.cur_entry, 4);
        assert_eq!(handle_psc(&mut d, &mut b, Some(2), &mut s), 0);
        assert_eq!(d.header.cur_entry, 5);
        assert_eq!(
            b.calls,
            vec![(1, 2, P, false), (3, 1, P, false), (4, 1, S, false)]
        );
    }

    // ---- Property tests ----

    #[derive(Clone, Debug)]
    struct Spec {
        op: PageStateOp,
        huge: bool,
        gap: u64,
        cur_page: u16,
    }

    fn spec_strategy() -> impl Strategy<Value = Spec> {
        let op = prop_oneof![
            4 => Just(Private),
            4 => Just(Shared),
            1 => Just(Psmash),
            1 => Just(Unsmash),
        ];
        let gap = prop_oneof![6 => Just(0u64), 1 => 1u64..2000];
        // cur_page is clamped to npages when the descriptor is built.
        let cur = prop_oneof![6 => Just(0u16), 1 => 0u16..=512];
        (op, any::<bool>(), gap, cur).prop_map(|(op, huge, gap, cur_page)| Spec {
            op,
            huge,
            gap,
            cur_page,
        })
    }

    /// Lay the specs out on disjoint, increasing GFNs.
    fn build(base: u64, specs: &[Spec]) -> PscDesc {
        let mut cursor = base;
        let raws: Vec<u64> = specs
            .iter()
            .map(|s| {
                cursor += s.gap;
                let npages = if s.huge { 512 } else { 1 };
                if s.huge {
                    cursor = cursor.div_ceil(512) * 512;
                }
                let gfn = cursor;
                cursor += npages;
                e(gfn, s.op, s.huge, s.cur_page.min(npages as u16))
            })
            .collect();
        desc(&raws)
    }

    fn budget_strategy() -> impl Strategy<Value = Option<usize>> {
        prop_oneof![1 => Just(None), 4 => (1usize..6).prop_map(Some)]
    }

    proptest! {
        #[test]
        fn resumed_calls_apply_every_page_once(
            base in 0u64..(1 << 30),
            specs in prop::collection::vec(spec_strategy(), 1..=PSC_MAX_ENTRIES),
            start in 0usize..8,
            budgets in prop::collection::vec(budget_strategy(), 1..8),
        ) {
            let mut d = build(base, &specs);
            let start = start.min(specs.len());
            d.header.cur_entry = start as u16;
            let original = d.clone();

            // Expected: every page still to do in entries start..=end, with its op.
            let mut expected: HashMap<u64, MsrPscOp> = HashMap::new();
            for raw in &original.entries[start..specs.len()] {
                let en = PscEntry::decode(*raw).unwrap();
                if let Some(op) = msr_op(en.op) {
                    for g in en.gfn + u64::from(en.cur_page)..en.gfn + en.npages() {
                        expected.insert(g, op);
                    }
                }
            }

            let mut b = Recorder::default();
            let mut s = PscStats::default();
            let mut calls = 0;
            while usize::from(d.header.cur_entry) <= usize::from(d.header.end_entry) {
                let before = d.header.cur_entry;
                let budget = budgets[calls % budgets.len()];
                prop_assert_eq!(handle_psc(&mut d, &mut b, budget, &mut s), 0);
                prop_assert!(d.header.cur_entry > before, "no progress with budget {:?}", budget);
                prop_assert_eq!(d.header.end_entry, original.header.end_entry);
                prop_assert_eq!(d.header.reserved, 0);
                calls += 1;
                prop_assert!(calls <= PSC_MAX_ENTRIES + 1);
            }

            let mut seen: HashMap<u64, MsrPscOp> = HashMap::new();
            for &(gfn, npages, op, huge) in &b.calls {
                prop_assert!(npages > 0);
                if huge {
                    prop_assert!(gfn % 512 == 0 && npages % 512 == 0, "huge range {}+{}", gfn, npages);
                }
                for g in gfn..gfn + npages {
                    prop_assert!(seen.insert(g, op).is_none(), "page {} changed twice", g);
                }
            }
            prop_assert_eq!(seen, expected);
            prop_assert_eq!(&d.entries[..start], &original.entries[..start]);
            for raw in &d.entries[start..specs.len()] {
                let en = PscEntry::decode(*raw).unwrap();
                prop_assert_eq!(u64::from(en.cur_page), en.npages());
            }
            prop_assert_eq!(&d.entries[specs.len()..], &original.entries[specs.len()..]);
            prop_assert_eq!(s.ranges as usize, b.calls.len());
        }

        #[test]
        fn garbage_never_panics(
            cur in prop_oneof![0u16..260, any::<u16>()],
            end in prop_oneof![0u16..260, any::<u16>()],
            reserved in prop_oneof![4 => Just(0u32), 1 => any::<u32>()],
            raws in prop::collection::vec(
                prop_oneof![
                    any::<u64>(),
                    (any::<u64>(), 0u64..5, any::<bool>()).prop_map(|(r, op, huge)| {
                        (r & ((1 << 52) - 1)) | (op << 52) | (u64::from(huge) << 56)
                    }),
                ],
                PSC_MAX_ENTRIES,
            ),
            budget in prop_oneof![Just(None), (0usize..300).prop_map(Some)],
            fail_on in prop::collection::vec(0usize..8, 0..3),
        ) {
            let mut d = desc(&raws);
            d.header = PscHeader { cur_entry: cur, end_entry: end, reserved };
            let original = d.clone();
            let mut b = Recorder { fail_on, ..Recorder::default() };
            let mut s = PscStats::default();
            let r = handle_psc(&mut d, &mut b, budget, &mut s);
            prop_assert!([0, PSC_ERROR_INVALID_HDR, PSC_ERROR_INVALID_ENTRY, PSC_ERROR_GENERIC].contains(&r));
            prop_assert_eq!(d.header.end_entry, end);
            prop_assert_eq!(d.header.reserved, reserved);
            prop_assert!(d.header.cur_entry >= cur);
            if r == PSC_ERROR_INVALID_HDR {
                prop_assert_eq!(d.header, original.header);
                prop_assert_eq!(d.entries, original.entries);
            }
            // Only entries in [cur_entry, end_entry] may change, and only their cur_page.
            for (i, (new, old)) in d.entries.iter().zip(original.entries.iter()).enumerate() {
                if new != old {
                    prop_assert!(i >= usize::from(cur) && i <= usize::from(end), "entry {} outside the window", i);
                    prop_assert_eq!(new & !CUR_PAGE_MASK, old & !CUR_PAGE_MASK);
                }
            }
        }
    }
}
