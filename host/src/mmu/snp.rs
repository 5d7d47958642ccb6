//! The host MMU of an SEV-SNP guest: per-GFN attributes, the TDP and the RMP, kept
//! in sync as KVM does (docs/design.md, "The rules the host MMU keeps"; Linux
//! `arch/x86/kvm/mmu/mmu.c`, `arch/x86/kvm/svm/sev.c`, `virt/kvm/guest_memfd.c`).
//!
//! Three views of guest memory are kept consistent here:
//! - [`Attributes`]: what the guest asked for (private or shared per page);
//! - [`Tdp`]: which backing each GFN reaches, installed only by faults;
//! - [`Rmp`]: what the hardware checks on every private access.
//!
//! A page is reachable through a view exactly when the TDP maps it there *and* the
//! RMP check passes (assigned and validated for private, hypervisor-owned for shared).
//!
//! The rules:
//! - Changing attributes zaps the affected TDP range and never maps.
//! - A fault maps at the largest level allowed by the backing, the RMP page size of the
//!   pages covered (private only: KVM limits private faults by the RMP,
//!   `sev_gmem_max_mapping_level`) and attribute uniformity.
//! - A private fault on a page the RMP still shows hypervisor-owned first assigns it,
//!   at 2 MiB when the whole 2 MiB region can be (guest_memfd "prepare",
//!   `sev_gmem_prepare`), unvalidated.
//! - Invalidations raise an in-progress count and bump a sequence number at the end; a
//!   fault that raced one retries (`mmu_invalidate_retry_gfn`).
//! - Memory goes back to the host (discard) only after its RMP entries are
//!   hypervisor-owned (`sev_gmem_invalidate`); an assigned page is never discarded.
//! - A 4 KiB PVALIDATE or RMPADJUST inside a 2 MiB RMP entry is resolved by PSMASH, a
//!   zap of the 2 MiB range and a retry (`sev_handle_rmp_fault`).

use super::attributes::{Attributes, Kind};
use super::tdp::{Level, Mapping, Tdp};
use super::{rule, Access, Backing, HypervisorMmu, Invalidations};
use crate::emulated::snp::rmp::{gpa_of, PvalidateOutcome, Rmp, RmpEntry, RmpUpdate};
use crate::stats::Counters;
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::snp::rmp::{RmpError, RmpPageSize};
use std::sync::{Mutex, MutexGuard};

/// The ASID of the VM this MMU serves: every RMP assignment, PVALIDATE and RMPADJUST
/// it makes is for this ASID, with the page's GPA `gfn * 4096`. The emulated platform
/// runs one guest per VMM process, so this is a constant.
pub use crate::emulated::snp::rmp::GUEST_ASID;

/// 4 KiB pages in a 2 MiB region.
const PAGES_2M: u64 = 512;

/// Counters of MMU events (`tdp.*`, `rmp.*`, `memory.*` in `--stats-json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnpMmuStats {
    /// Faults that found no mapping and installed one.
    pub faults: u64,
    /// Faults that raced an invalidation and started over.
    pub fault_retries: u64,
    /// Mappings removed by zaps.
    pub zaps: u64,
    /// Mappings installed at 4 KiB.
    pub maps_4k: u64,
    /// Mappings installed at 2 MiB.
    pub maps_2m: u64,
    /// Mappings installed at 1 GiB.
    pub maps_1g: u64,
    /// PSMASHes.
    pub psmash: u64,
    /// RMPUPDATEs.
    pub rmpupdate: u64,
    /// Accesses through the wrong view turned into conversions.
    pub implicit_conversions: u64,
    /// Pages whose attribute changed.
    pub conversions: u64,
    /// Pages a reclaim left alone because they were still assigned (must stay zero).
    pub reclaim_refused: u64,
}

/// Result of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A mapping was installed.
    Mapped(Mapping),
    /// A mapping of the right kind was already there (a spurious fault).
    Present(Mapping),
    /// The access's kind disagrees with the page's attribute: KVM exits to the VMM
    /// with `KVM_EXIT_MEMORY_FAULT`; the caller converts or stops the guest.
    Mismatch,
    /// The GFN is outside guest RAM.
    OutOfRange,
}

/// What a fault decided before it dropped the lock: the window in which KVM resolves
/// the backing page and its level without holding `mmu_lock`. Nothing in it is checked
/// again when it is installed: only the invalidation sequence protects it, as in KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultTicket {
    gfn: u64,
    seq: u64,
    plan: Plan,
}

/// A fault's decision: the mapping to install and the RMP assignment ("prepare") to
/// make first, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    mapping: Mapping,
    prepare: Option<(u64, RmpPageSize)>,
}

/// Result of an emulated PVALIDATE or RMPADJUST once the nested walk is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestRmpResult {
    /// EAX = 0; `changed == false` is CF = 1 (PVALIDATE only).
    Done {
        /// The entry changed.
        changed: bool,
    },
    /// EAX = this error.
    Fail(RmpError),
    /// The nested walk hit a page whose attribute is shared: a memory-fault exit.
    Mismatch,
}

/// Mutable state behind the MMU lock (KVM's `mmu_lock` and friends in one).
#[derive(Debug)]
struct State {
    attrs: Attributes,
    tdp: Tdp,
    rmp: Rmp,
    /// Largest mapping the backing supports.
    backing: Level,
    /// The invalidation protocol faults check before installing.
    inv: Invalidations,
    stats: SnpMmuStats,
    /// Whether a fault checks for a racing invalidation before installing. Always on,
    /// except in the test that shows the race check is what keeps mappings fresh.
    check_stale: bool,
}

/// The host MMU of one VM. All methods take `&self`; the state is behind one lock, so
/// several vCPU threads may fault and invalidate concurrently.
#[derive(Debug)]
pub struct SnpMmu {
    state: Mutex<State>,
}

impl SnpMmu {
    /// An MMU over `pages` 4 KiB pages whose backing maps at most `backing`. Every page
    /// starts private in the attributes (as a VMM sets all of a confidential guest's
    /// RAM private at creation), hypervisor-owned in the RMP and unmapped.
    pub fn new(pages: u64, backing: Level) -> Self {
        Self {
            state: Mutex::new(State {
                attrs: Attributes::new(pages, Kind::Private),
                tdp: Tdp::new(pages),
                rmp: Rmp::new(pages),
                backing,
                inv: Invalidations::default(),
                stats: SnpMmuStats::default(),
                check_stale: true,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock aborts the process (profile panic = "abort"),
        // so a poisoned lock cannot be observed in practice; recover it in tests.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of 4 KiB pages of guest RAM.
    pub fn pages(&self) -> u64 {
        self.lock().attrs.pages()
    }

    /// Counters so far.
    pub fn stats(&self) -> SnpMmuStats {
        self.lock().stats
    }

    /// Read-only look at the three tables (for invariant checks and diagnostics).
    pub fn inspect<R>(&self, f: impl FnOnce(&Attributes, &Tdp, &Rmp) -> R) -> R {
        let st = self.lock();
        f(&st.attrs, &st.tdp, &st.rmp)
    }

    /// The RMP entry governing `gfn`.
    pub fn rmp_entry(&self, gfn: u64) -> Option<RmpEntry> {
        self.lock().rmp.entry(gfn)
    }

    /// Whether the host may treat `[gfn, gfn + n)` as shared with the guest: every page
    /// shared in the attributes and hypervisor-owned in the RMP.
    pub fn is_shared(&self, gfn: u64, n: u64) -> bool {
        let st = self.lock();
        st.attrs.uniform(gfn, n, Kind::Shared)
            && (gfn..gfn + n).all(|p| st.rmp.entry(p).is_some_and(|e| !e.assigned))
    }

    // ----- faults -------------------------------------------------------------------

    /// First half of a fault: checks what can be checked and records the sequence
    /// number. `Err` is a final answer.
    pub fn fault_begin(&self, gfn: u64, kind: Kind) -> Result<FaultTicket, Fault> {
        let st = self.lock();
        // The sequence number is read before anything else, as `mmu_invalidate_seq` is
        // read before the attributes and the backing are looked at.
        let seq = st.inv.seq;
        let plan = st.plan(gfn, kind)?;
        Ok(FaultTicket { gfn, seq, plan })
    }

    /// Second half of a fault: installs the mapping unless an invalidation raced the
    /// fault since [`SnpMmu::fault_begin`], in which case `Ok(None)`: start over.
    pub fn fault_finish<B: Backing>(
        &self,
        b: &B,
        t: FaultTicket,
    ) -> Result<Option<Fault>, B::Error> {
        let mut st = self.lock();
        if st.check_stale && st.stale(t) {
            st.stats.fault_retries += 1;
            return Ok(None);
        }
        let m = st.apply(b, t.gfn, t.plan)?;
        st.sync(b, m.base, m.level.pages())?;
        Ok(Some(Fault::Mapped(m)))
    }

    /// A nested page fault on `gfn` for an access of `kind`, retried until it is not
    /// stale.
    pub fn fault<B: Backing>(&self, b: &B, gfn: u64, kind: Kind) -> Result<Fault, B::Error> {
        loop {
            let t = match self.fault_begin(gfn, kind) {
                Ok(t) => t,
                Err(f) => return Ok(f),
            };
            if let Some(f) = self.fault_finish(b, t)? {
                return Ok(f);
            }
            std::thread::yield_now();
        }
    }

    /// Fault in every page of `[gfn, gfn + n)` as `kind` (KVM_PRE_FAULT_MEMORY), e.g.
    /// the measured launch pages before the first instruction runs. Pages whose
    /// attribute disagrees are left alone. Returns the number of mappings installed.
    pub fn prefault<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        n: u64,
        kind: Kind,
    ) -> Result<u64, B::Error> {
        let mut st = self.lock();
        let end = gfn.saturating_add(n).min(st.attrs.pages());
        let mut mapped = 0;
        let mut touched: Option<(u64, u64)> = None;
        let mut at = gfn;
        while at < end {
            if st.inv.in_flight_over(at, 1) {
                // Being invalidated: leave it to a later fault.
                at += 1;
                continue;
            }
            match st.fault_locked(b, at, kind)? {
                Fault::Mapped(m) => {
                    mapped += 1;
                    touched = Some(widen(
                        touched.unwrap_or((m.base, m.end())),
                        Some((m.base, m.end())),
                    ));
                    at = m.end();
                }
                Fault::Present(m) => at = m.end(),
                Fault::Mismatch | Fault::OutOfRange => at += 1,
            }
        }
        if let Some((lo, hi)) = touched {
            st.sync(b, lo, hi - lo)?;
        }
        Ok(mapped)
    }

    // ----- attribute changes, invalidation, reclaim -----------------------------------

    /// Set the attributes of `[gfn, gfn + n)` to `kind`, as `KVM_SET_MEMORY_ATTRIBUTES`
    /// after a page-state change or an implicit conversion: zap, update, return pages
    /// made shared to the hypervisor in the RMP, discard the converted pages (their old
    /// contents must not cross sides) and sync. Pages already `kind` are left exactly
    /// as they are. `Ok(None)` if the range leaves guest RAM; else the number of pages
    /// converted.
    pub fn set_attributes<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        n: u64,
        kind: Kind,
    ) -> Result<Option<u64>, B::Error> {
        let mut st = self.lock();
        if gfn.checked_add(n).is_none_or(|e| e > st.attrs.pages()) {
            return Ok(None);
        }
        if st.attrs.count_other(gfn, n, kind) == 0 {
            return Ok(Some(0));
        }
        // Runs of pages whose attribute changes: only these are touched.
        let runs = st.runs_other_than(gfn, n, kind);
        st.inv.begin(gfn, n);
        let mut touched = (gfn, gfn + n);
        let mut converted = 0;
        for &(s, len) in &runs {
            touched = widen(touched, st.zap(s, len));
            st.attrs.set(s, len, kind);
            if kind == Kind::Shared {
                st.make_hypervisor_owned(s, len);
            }
            converted += len;
        }
        st.stats.conversions += converted;
        // Discard without the lock, as the VMM punches holes while faults may run; a
        // fault on these pages sees the invalidation in progress and retries.
        drop(st);
        let discarded = runs.iter().try_for_each(|&(s, len)| {
            let safe = self.lock().reclaimable_runs(s, len);
            safe.into_iter().try_for_each(|(s, len)| b.discard(s, len))
        });
        let mut st = self.lock();
        st.inv.end();
        discarded?;
        st.sync(b, touched.0, touched.1 - touched.0)?;
        Ok(Some(converted))
    }

    /// A host-side invalidation of `[gfn, gfn + n)` (an MMU notifier: the host moved or
    /// swapped the backing): zap only. Returns the mappings removed.
    pub fn invalidate<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<u64, B::Error> {
        let mut st = self.lock();
        st.inv.begin(gfn, n);
        let zapped = st.zap_mappings(gfn, n);
        st.inv.end();
        let count = zapped.len() as u64;
        let touched = zapped.iter().fold((gfn, gfn.saturating_add(n)), |r, m| {
            widen(r, Some((m.base, m.end())))
        });
        st.sync(b, touched.0, touched.1 - touched.0)?;
        Ok(count)
    }

    /// The host takes `[gfn, gfn + n)` back (a hole punched in guest_memfd): zap, make
    /// every assigned page hypervisor-owned (PSMASHing 2 MiB entries the range only
    /// partly covers), then discard. Attributes are unchanged, so the guest's next
    /// private access faults in a fresh, unvalidated page. Returns the pages discarded.
    pub fn reclaim<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<u64, B::Error> {
        let mut st = self.lock();
        let end = gfn.saturating_add(n).min(st.attrs.pages());
        if gfn >= end {
            return Ok(0);
        }
        let n = end - gfn;
        st.inv.begin(gfn, n);
        let touched = widen((gfn, end), st.zap(gfn, n));
        st.make_hypervisor_owned(gfn, n);
        drop(st);
        let safe = self.lock().reclaimable_runs(gfn, n);
        let discarded = safe.into_iter().try_for_each(|(s, len)| b.discard(s, len));
        let mut st = self.lock();
        st.inv.end();
        discarded?;
        st.sync(b, touched.0, touched.1 - touched.0)?;
        Ok(n)
    }

    // ----- RMP instructions -------------------------------------------------------------

    /// Launch a measured page: assigned and validated at 4 KiB (what SNP_LAUNCH_UPDATE
    /// leaves). The page's attribute becomes private. Not mapped: see [`SnpMmu::prefault`].
    pub fn launch_page(&self, gfn: u64) -> Result<(), RmpError> {
        let mut st = self.lock();
        if !st.attrs.set(gfn, 1, Kind::Private) {
            return Err(RmpError::FailInput);
        }
        st.stats.rmpupdate += 1;
        st.rmp.launch_page(gfn)
    }

    /// Test hook for a hostile host: RMPUPDATE the page behind the guest's back, so it
    /// is assigned but no longer validated.
    pub fn hostile_reassign<B: Backing>(&self, b: &B, gfn: u64) -> Result<(), B::Error> {
        let mut st = self.lock();
        let state = RmpUpdate::private(gpa_of(gfn), GUEST_ASID, RmpPageSize::Size4K);
        if st.rmp.rmpupdate(gfn, state).is_ok() {
            st.stats.rmpupdate += 1;
        }
        st.sync(b, gfn, 1)
    }

    /// Test hook for a hostile host: leave the page shared although the guest expects
    /// it private.
    pub fn hostile_share(&self, gfn: u64) {
        let mut st = self.lock();
        st.attrs.set(gfn, 1, Kind::Shared);
    }

    /// PSMASH the 2 MiB RMP entry at `head` and zap the TDP over the region, as KVM's
    /// RMP fault handler does. `Err` is PSMASH's return code.
    pub fn psmash<B: Backing>(&self, b: &B, head: u64) -> Result<Result<(), RmpError>, B::Error> {
        let mut st = self.lock();
        let r = st.psmash_locked(head);
        if r.is_ok() {
            st.sync(b, head, PAGES_2M)?;
        }
        Ok(r)
    }

    /// PVALIDATE by the guest of the page or 2 MiB region at `gfn` (already translated
    /// from the guest's virtual address and known to be a private access). The nested
    /// walk faults the page in first; a size-mismatch fault is resolved by PSMASH and a
    /// retry. The RMP checks the entry is [`GUEST_ASID`]'s at GPA `gfn * 4096` (host
    /// frame == guest frame in the emulation).
    pub fn pvalidate<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        size: RmpPageSize,
        validate: bool,
    ) -> Result<GuestRmpResult, B::Error> {
        self.guest_rmp_op(b, gfn, |rmp| {
            rmp.pvalidate(gfn, GUEST_ASID, gpa_of(gfn), size, validate)
        })
    }

    /// RMPADJUST by the guest (at VMPL0) of the page or region at `gfn` with the
    /// attribute operand `attrs` (docs/specs.md 3.1), checked against the RMP like
    /// [`SnpMmu::pvalidate`].
    pub fn rmpadjust<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        size: RmpPageSize,
        attrs: u64,
    ) -> Result<GuestRmpResult, B::Error> {
        self.guest_rmp_op(b, gfn, |rmp| {
            rmp.rmpadjust(gfn, GUEST_ASID, gpa_of(gfn), size, attrs)
        })
    }

    fn guest_rmp_op<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        mut op: impl FnMut(&mut Rmp) -> Result<PvalidateOutcome, RmpError>,
    ) -> Result<GuestRmpResult, B::Error> {
        // Each round: the nested walk (fault), then the instruction under the lock. A
        // PSMASH or a racing zap sends it round again, as the hardware retries the
        // instruction after the host handled the nested fault.
        for _ in 0..8 {
            match self.fault(b, gfn, Kind::Private)? {
                Fault::OutOfRange => return Ok(GuestRmpResult::Fail(RmpError::FailInput)),
                Fault::Mismatch => return Ok(GuestRmpResult::Mismatch),
                Fault::Mapped(_) | Fault::Present(_) => {}
            }
            let mut st = self.lock();
            if st.tdp.lookup(gfn).is_none_or(|m| m.kind != Kind::Private) {
                continue;
            }
            match op(&mut st.rmp) {
                Ok(PvalidateOutcome::NeedsPsmash) => {
                    let head = gfn & !(PAGES_2M - 1);
                    // FAIL_INPUT here means the entry is 4K by now: a race, fine.
                    let _ = st.psmash_locked(head);
                    st.sync(b, head, PAGES_2M)?;
                }
                Ok(PvalidateOutcome::Done { changed }) => {
                    if changed {
                        st.sync(b, Level::L2M.base(gfn), PAGES_2M)?;
                    }
                    return Ok(GuestRmpResult::Done { changed });
                }
                Err(e) => return Ok(GuestRmpResult::Fail(e)),
            }
        }
        Ok(GuestRmpResult::Fail(RmpError::FailInUse))
    }

    // ----- guest accesses ---------------------------------------------------------------

    /// A guest access of `kind` to `gfn` that found its view closed (a nested page
    /// fault). A disagreement with the attributes becomes an implicit conversion, as a
    /// VMM does on `KVM_EXIT_MEMORY_FAULT`, or with `strict` a violation. Then the page
    /// is faulted in and the RMP check applied.
    pub fn access<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        kind: Kind,
        strict: bool,
    ) -> Result<Access, B::Error> {
        let mut converted = false;
        for _ in 0..4 {
            match self.fault(b, gfn, kind)? {
                Fault::OutOfRange => return Ok(Access::Violation(rule::OUT_OF_RANGE)),
                Fault::Mismatch if strict => {
                    return Ok(Access::Violation(match kind {
                        Kind::Private => rule::PRIVATE_TO_SHARED,
                        Kind::Shared => rule::SHARED_TO_PRIVATE,
                    }));
                }
                Fault::Mismatch => {
                    self.set_attributes(b, gfn, 1, kind)?;
                    self.lock().stats.implicit_conversions += 1;
                    converted = true;
                    continue;
                }
                Fault::Mapped(_) | Fault::Present(_) => {}
            }
            let st = self.lock();
            let Some(e) = st.rmp.entry(gfn) else {
                return Ok(Access::Violation(rule::OUT_OF_RANGE));
            };
            return Ok(match kind {
                Kind::Private if !e.assigned || !e.validated => {
                    Access::Violation(rule::NOT_VALIDATED)
                }
                Kind::Shared if e.assigned => Access::Violation(rule::SHARED_ASSIGNED),
                _ => Access::Ok { converted },
            });
        }
        Ok(Access::Violation(rule::OUT_OF_RANGE))
    }

    /// Count an implicit conversion made by the caller through
    /// [`SnpMmu::set_attributes`] (one resolved outside [`SnpMmu::access`]).
    pub fn count_implicit_conversion(&self) {
        self.lock().stats.implicit_conversions += 1;
    }

    /// Whether the guest can reach `gfn` through the private and the shared view now:
    /// the TDP maps it there and the RMP check passes.
    pub fn reachable(&self, gfn: u64) -> (bool, bool) {
        let st = self.lock();
        st.reach(gfn)
    }
}

/// Widen the range `(start, end)` by another.
fn widen(r: (u64, u64), other: Option<(u64, u64)>) -> (u64, u64) {
    match other {
        Some((s, e)) => (r.0.min(s), r.1.max(e)),
        None => r,
    }
}

impl State {
    fn pages(&self) -> u64 {
        self.attrs.pages()
    }

    /// Whether a fault planned with `t` must start over (see [`Invalidations::stale`]).
    fn stale(&self, t: FaultTicket) -> bool {
        let m = t.plan.mapping;
        self.inv.stale(m.base, m.level.pages(), t.seq)
    }

    /// Zap, returning the range covered by what was removed.
    fn zap(&mut self, gfn: u64, n: u64) -> Option<(u64, u64)> {
        let removed = self.zap_mappings(gfn, n);
        let lo = removed.iter().map(|m| m.base).min()?;
        let hi = removed.iter().map(Mapping::end).max()?;
        Some((lo, hi))
    }

    /// Every zap is an invalidation (KVM's `kvm_zap_gfn_range` brackets itself with
    /// `kvm_mmu_invalidate_begin/end`): a fault planned before it retries.
    fn zap_mappings(&mut self, gfn: u64, n: u64) -> Vec<Mapping> {
        let removed = self.tdp.zap(gfn, n);
        self.stats.zaps += removed.len() as u64;
        self.inv.seq += 1;
        removed
    }

    /// Maximal runs in `[gfn, gfn + n)` of pages whose attribute is not `kind`.
    fn runs_other_than(&self, gfn: u64, n: u64, kind: Kind) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut at = gfn;
        let end = gfn + n;
        while at < end {
            // Skip whole uniform 2 MiB stretches quickly.
            let stop = (Level::L2M.base(at) + PAGES_2M).min(end);
            let other = self.attrs.count_other(at, stop - at, kind);
            if other == 0 {
                at = stop;
                continue;
            }
            for p in at..stop {
                if self.attrs.get(p) != Some(kind) {
                    match runs.last_mut() {
                        Some((s, len)) if *s + *len == p => *len += 1,
                        _ => runs.push((p, 1)),
                    }
                }
            }
            at = stop;
        }
        runs
    }

    /// RMPUPDATE every assigned page in `[gfn, gfn + n)` to hypervisor-owned: a whole
    /// 2 MiB entry in one update, a partly covered one after a PSMASH
    /// (`sev_gmem_invalidate`).
    fn make_hypervisor_owned(&mut self, gfn: u64, n: u64) {
        let end = gfn + n;
        let mut at = gfn;
        while at < end {
            let Some(e) = self.rmp.entry(at) else {
                return;
            };
            if !e.assigned {
                at += 1;
                continue;
            }
            if e.size == RmpPageSize::Size2M {
                let head = Level::L2M.base(at);
                if head >= gfn && head + PAGES_2M <= end {
                    if self
                        .rmp
                        .rmpupdate(head, RmpUpdate::shared(RmpPageSize::Size2M))
                        .is_ok()
                    {
                        self.stats.rmpupdate += 1;
                    }
                    at = head + PAGES_2M;
                    continue;
                }
                let _ = self.psmash_locked(head);
            }
            if self
                .rmp
                .rmpupdate(at, RmpUpdate::shared(RmpPageSize::Size4K))
                .is_ok()
            {
                self.stats.rmpupdate += 1;
            }
            at += 1;
        }
    }

    /// The reclaim rule: a page still assigned to the guest is never handed back to the
    /// host. Returns the runs of `[gfn, gfn + n)` that may be discarded; assigned pages
    /// are left out and counted in `reclaim_refused` (always zero unless this module
    /// has a bug: the callers make the pages hypervisor-owned first).
    fn reclaimable_runs(&mut self, gfn: u64, n: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for p in gfn..gfn.saturating_add(n) {
            if self.rmp.entry(p).is_some_and(|e| e.assigned) {
                self.stats.reclaim_refused += 1;
                continue;
            }
            match runs.last_mut() {
                Some((s, len)) if *s + *len == p => *len += 1,
                _ => runs.push((p, 1)),
            }
        }
        runs
    }

    fn psmash_locked(&mut self, head: u64) -> Result<(), RmpError> {
        self.rmp.psmash(head)?;
        self.stats.psmash += 1;
        self.zap_mappings(head, PAGES_2M);
        Ok(())
    }

    /// The fault proper, under the lock: plan and install at once. Does not sync the
    /// backing.
    fn fault_locked<B: Backing>(&mut self, b: &B, gfn: u64, kind: Kind) -> Result<Fault, B::Error> {
        Ok(match self.plan(gfn, kind) {
            Ok(plan) => Fault::Mapped(self.apply(b, gfn, plan)?),
            Err(f) => f,
        })
    }

    /// Decide a fault on `gfn` for an access of `kind`: `Err` if there is nothing to
    /// install (out of range, attribute mismatch, already mapped).
    ///
    /// guest_memfd "prepare": a private page the RMP still shows hypervisor-owned is to
    /// be assigned (unvalidated), at 2 MiB when the backing allows it, the whole region
    /// is private in the attributes and every page of it is hypervisor-owned.
    fn plan(&self, gfn: u64, kind: Kind) -> Result<Plan, Fault> {
        match self.attrs.get(gfn) {
            None => return Err(Fault::OutOfRange),
            Some(k) if k != kind => return Err(Fault::Mismatch),
            Some(_) => {}
        }
        if let Some(m) = self.tdp.lookup(gfn).filter(|m| m.kind == kind) {
            return Err(Fault::Present(m));
        }
        let head = Level::L2M.base(gfn);
        let region_private = self.backing >= Level::L2M
            && head + PAGES_2M <= self.pages()
            && self.attrs.uniform(head, PAGES_2M, Kind::Private);
        let mut prepare = None;
        let mut rmp_2m = false;
        if kind == Kind::Private {
            match self.rmp.entry(gfn) {
                Some(e) if e.assigned => rmp_2m = e.size == RmpPageSize::Size2M,
                _ => {
                    let all_free = region_private
                        && (head..head + PAGES_2M)
                            .all(|p| self.rmp.entry(p).is_some_and(|e| !e.assigned));
                    prepare = Some(if all_free {
                        rmp_2m = true;
                        (head, RmpPageSize::Size2M)
                    } else {
                        (gfn, RmpPageSize::Size4K)
                    });
                }
            }
        }
        let level = match kind {
            // A private mapping never exceeds the RMP entry under it (no 1 GiB RMP pages).
            Kind::Private if rmp_2m && region_private => Level::L2M,
            Kind::Private => Level::L4K,
            Kind::Shared => self.max_shared_level(gfn),
        };
        Ok(Plan {
            mapping: Mapping {
                base: level.base(gfn),
                level,
                kind,
            },
            prepare,
        })
    }

    /// Carry out a plan: the RMP assignment if the page is still hypervisor-owned
    /// (idempotent, like guest_memfd's prepared flag), then the mapping.
    fn apply<B: Backing>(&mut self, b: &B, gfn: u64, plan: Plan) -> Result<Mapping, B::Error> {
        let mut m = plan.mapping;
        if let Some((at, size)) = plan.prepare {
            if self.rmp.entry(at).is_some_and(|e| !e.assigned) {
                let mut prepared = (at, size.bytes() / nacre_shared_abi::layout::PAGE_SIZE_4K);
                let state = RmpUpdate::private(gpa_of(at), GUEST_ASID, size);
                let mut done = self.rmp.rmpupdate(at, state).is_ok();
                if !done && size == RmpPageSize::Size2M {
                    // Only a stale plan gets here: assign and map just the page.
                    let state = RmpUpdate::private(gpa_of(gfn), GUEST_ASID, RmpPageSize::Size4K);
                    done = self.rmp.rmpupdate(gfn, state).is_ok();
                    prepared = (gfn, 1);
                    m = Mapping {
                        base: gfn,
                        level: Level::L4K,
                        kind: m.kind,
                    };
                }
                if done {
                    self.stats.rmpupdate += 1;
                    b.zero_fresh(prepared.0, prepared.1)?;
                }
            }
        }
        let replaced = self.tdp.map(m);
        debug_assert!(
            !self.check_stale || replaced.iter().all(|r| r.kind == m.kind),
            "a mapping of the other kind survived under {m:?}"
        );
        self.stats.faults += 1;
        match m.level {
            Level::L4K => self.stats.maps_4k += 1,
            Level::L2M => self.stats.maps_2m += 1,
            Level::L1G => self.stats.maps_1g += 1,
        }
        Ok(m)
    }

    /// The largest level at which `gfn` may be mapped shared: within the backing and
    /// guest RAM, uniformly shared, and over no page the guest owns.
    fn max_shared_level(&self, gfn: u64) -> Level {
        for level in Level::DESCENDING {
            if level > self.backing || level == Level::L4K {
                continue;
            }
            let base = level.base(gfn);
            let pages = level.pages();
            if base + pages <= self.pages()
                && self.attrs.uniform(base, pages, Kind::Shared)
                && (base..base + pages).all(|p| self.rmp.entry(p).is_some_and(|e| !e.assigned))
            {
                return level;
            }
        }
        Level::L4K
    }

    /// Reachability of one page: `(private, shared)`.
    fn reach(&self, gfn: u64) -> (bool, bool) {
        match self.tdp.lookup(gfn) {
            Some(m) if m.kind == Kind::Private => (self.rmp.private_accessible(gfn), false),
            Some(_) => (false, self.rmp.shared_accessible(gfn)),
            None => (false, false),
        }
    }

    /// Make the backing match [`State::reach`] over `[gfn, gfn + n)`, one call per
    /// maximal run.
    fn sync<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<(), B::Error> {
        let end = gfn.saturating_add(n).min(self.pages());
        let mut at = gfn;
        while at < end {
            let start = at;
            let (r, mut cursor) = self.span(at);
            while cursor < end {
                let (r2, next) = self.span(cursor);
                if r2 != r {
                    break;
                }
                cursor = next;
            }
            let stop = cursor.min(end);
            b.set_access(Kind::Private, start, stop - start, r.0)?;
            b.set_access(Kind::Shared, start, stop - start, r.1)?;
            at = stop;
        }
        Ok(())
    }

    /// Reachability at `gfn` and the end of the stretch over which it certainly holds.
    fn span(&self, gfn: u64) -> ((bool, bool), u64) {
        match self.tdp.lookup(gfn) {
            None => {
                // Unmapped: nothing below a missing 2 MiB entry either, cheaply known
                // when the 4K entries are empty; otherwise one page.
                ((false, false), gfn + 1)
            }
            Some(m) => {
                let (r, rmp_end) = self.rmp.access_span(gfn);
                let r = match m.kind {
                    Kind::Private => (r.0, false),
                    Kind::Shared => (false, r.1),
                };
                (r, m.end().min(rmp_end).max(gfn + 1))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

impl Counters for SnpMmuStats {
    fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("rmp.psmash", self.psmash),
            ("rmp.rmpupdate", self.rmpupdate),
            ("tdp.faults", self.faults),
            ("tdp.zaps", self.zaps),
            ("tdp.maps_4k", self.maps_4k),
            ("tdp.maps_2m", self.maps_2m),
            ("tdp.maps_1g", self.maps_1g),
            ("tdp.fault_retries", self.fault_retries),
            ("memory.implicit_conversions", self.implicit_conversions),
            ("memory.conversions", self.conversions),
        ]
    }
}

impl HypervisorMmu for SnpMmu {
    fn pages(&self) -> u64 {
        SnpMmu::pages(self)
    }

    fn access(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        kind: Kind,
        strict: bool,
    ) -> Result<Access, MemoryError> {
        SnpMmu::access(self, mem, gfn, kind, strict)
    }

    fn convert(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        n: u64,
        kind: Kind,
    ) -> Result<Option<u64>, MemoryError> {
        self.set_attributes(mem, gfn, n, kind)
    }

    fn is_shared(&self, gfn: u64, n: u64) -> bool {
        SnpMmu::is_shared(self, gfn, n)
    }

    fn reachable(&self, gfn: u64) -> (bool, bool) {
        SnpMmu::reachable(self, gfn)
    }

    fn count_implicit_conversion(&self) {
        SnpMmu::count_implicit_conversion(self);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.stats().entries()
    }
}
