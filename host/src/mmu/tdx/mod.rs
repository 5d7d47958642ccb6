//! The host MMU for the emulated TDX platform: per-GFN attributes, the shared TDP, and
//! the private mappings as KVM keeps them for a TD: a mirror table changed together
//! with the emulated TDX module's Secure EPT. Pure logic, no KVM.
//!
//! Views of guest memory kept consistent here:
//! - [`Attributes`]: what the guest asked for (MapGPA), the source of truth;
//! - [`Tdp`]: the shared view's mappings, installed by faults like the SNP MMU's;
//! - [`mirror::Mirror`] and [`crate::emulated::tdx::sept::Sept`]: the private view. The S-EPT decides what the
//!   guest can reach privately (only MAPPED leaves); the mirror is the host's copy,
//!   changed with the freeze protocol of [`mirror`] so that it never disagrees with
//!   the S-EPT once no operation is in flight.
//!
//! A page is reachable through the private view exactly when its attribute is private,
//! the S-EPT has it MAPPED (not PENDING, not blocked) and the mirror maps it; through
//! the shared view exactly when its attribute is shared and the shared TDP maps it.
//! Every change of either is applied through [`Backing::set_access`] under the MMU lock.
//!
//! The rules, following upstream KVM (`arch/x86/kvm/vmx/tdx.c`,
//! `arch/x86/kvm/mmu/tdp_mmu.c`, `virt/kvm/guest_memfd.c`) and the TDX module ABI:
//! - All guest RAM starts private by attribute, as a VMM marks guest_memfd RAM private
//!   with `KVM_SET_MEMORY_ATTRIBUTES` before the TD runs; nothing is in the S-EPT but
//!   the launch pages (TDH.MEM.PAGE.ADD, MAPPED).
//! - A private fault on a page with no leaf AUGs it (PENDING) and maps it in the
//!   mirror, at 2 MiB when the backing allows it, the whole region is private by
//!   attribute and nothing of it is mapped yet, else at 4 KiB. Only the guest's
//!   TDG.MEM.PAGE.ACCEPT makes it reachable.
//! - MapGPA (`KVM_HC_MAP_GPA_RANGE`, then `KVM_SET_MEMORY_ATTRIBUTES`) sets the
//!   attributes and zaps, never maps: to shared, every S-EPT leaf in the range is
//!   BLOCKed and REMOVEd (a 2 MiB leaf only partly in the range is DEMOTEd first, so
//!   the rest stays accepted) and the pages are discarded; to private, the shared TDP
//!   is zapped.
//! - Faults and invalidations race as in the SNP MMU: an invalidation raises an
//!   in-progress count and bumps a sequence number; a fault checks both after freezing
//!   its mirror entry and before the SEAMCALL, and retries if it raced.
//! - An ACCEPT that finds no leaf is an EPT violation: the host AUGs at most at the
//!   accept level and the guest retries. A 4 KiB ACCEPT inside a 2 MiB PENDING leaf is
//!   one too: the host splits the leaf (BLOCK, DEMOTE) and the guest retries. A 2 MiB
//!   ACCEPT over 4 KiB leaves is TDX_PAGE_SIZE_MISMATCH for the guest to handle.
//! - As in KVM, page tables are not removed while the TD runs: a region that once held
//!   4 KiB leaves keeps a page table and is mapped at 4 KiB from then on.

pub mod mirror;

use super::attributes::{Attributes, Kind};
use super::tdp::{Level, Mapping, Tdp};
use super::{Access, Backing, HypervisorMmu, Invalidations};
use crate::emulated::tdx::sept::status::{
    self, OPERAND_BUSY, OPERAND_ID_RCX, OPERAND_INVALID, SUCCESS,
};
use crate::emulated::tdx::sept::{AcceptOutcome, Sept, SeptRegion, SeptState};
use crate::stats;
use crate::vmm::memory::{GuestMemory, MemoryError};
use mirror::{Frozen, Mirror, MirrorEntry, Slot};
use nacre_shared_abi::tdx::AcceptLevel;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// 4 KiB pages in a 2 MiB region.
const PAGES_2M: u64 = 512;

/// Guest-physical address width of the emulated TD (docs/design.md, "Two views of guest
/// RAM"): the shared bit is bit 47 (docs/specs.md 6.3).
pub const GPAW: u32 = 48;

/// Rounds of EPT violation and retry an ACCEPT goes through before the guest is told
/// TDX_OPERAND_BUSY (it retries).
const ACCEPT_ROUNDS: usize = 8;

/// Rule texts for violations on the TDX platform.
pub mod rule {
    pub use crate::mmu::rule::{OUT_OF_RANGE, PRIVATE_TO_SHARED, SHARED_TO_PRIVATE};
    /// Private access to a page the S-EPT holds PENDING (or blocked).
    pub const NOT_ACCEPTED: &str = "private access to a page the guest never accepted";
    /// The emulated TDX module refused an S-EPT operation the host cannot do without
    /// (KVM's `KVM_BUG_ON` after a failed SEAMCALL): a host bug, the TD is stopped.
    pub const MODULE_ERROR: &str = "the TDX module refused an S-EPT operation the host relies on";
}

/// Counters of the TDX MMU's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdxStats {
    /// Successful 4 KiB TDG.MEM.PAGE.ACCEPTs.
    pub accept_4k: u64,
    /// Successful 2 MiB TDG.MEM.PAGE.ACCEPTs.
    pub accept_2m: u64,
    /// ACCEPTs answered TDX_PAGE_SIZE_MISMATCH.
    pub accept_size_mismatch: u64,
    /// ACCEPTs answered TDX_PAGE_ALREADY_ACCEPTED (second accepts).
    pub accept_already: u64,
    /// ACCEPTs that were EPT violations the host resolved (AUG or DEMOTE) before a retry.
    pub accept_faults: u64,
    /// TDH.MEM.PAGE.ADDs (launch pages).
    pub sept_page_add: u64,
    /// TDH.MEM.SEPT.ADDs (4 KiB page tables linked).
    pub sept_add: u64,
    /// TDH.MEM.PAGE.AUGs.
    pub sept_aug: u64,
    /// TDH.MEM.RANGE.BLOCKs.
    pub sept_block: u64,
    /// TDH.MEM.PAGE.DEMOTEs.
    pub sept_demote: u64,
    /// 4 KiB pages removed by TDH.MEM.PAGE.REMOVE.
    pub sept_remove: u64,
    /// TDX_OPERAND_BUSY answers of the module (retried).
    pub sept_busy: u64,
    /// Faults that installed a mapping.
    pub faults: u64,
    /// Faults that raced an invalidation and started over.
    pub fault_retries: u64,
    /// Mappings removed by zaps (shared TDP and mirror).
    pub zaps: u64,
    /// Mappings installed at 4 KiB (shared or private).
    pub maps_4k: u64,
    /// Mappings installed at 2 MiB (shared or private).
    pub maps_2m: u64,
    /// Mappings installed at 1 GiB (shared only).
    pub maps_1g: u64,
    /// Accesses through the wrong view turned into conversions.
    pub implicit_conversions: u64,
    /// Times an operation found a mirror entry frozen by another and retried or waited.
    pub mirror_frozen_retries: u64,
    /// Pages whose attribute MapGPA changed.
    pub map_gpa_pages: u64,
    /// Pages a discard left alone because the S-EPT still held them (must stay zero).
    pub discard_refused: u64,
    /// SEAMCALLs that failed where the host relies on success (must stay zero).
    pub module_errors: u64,
}

/// Result of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdxFault {
    /// A mapping was installed (private: AUGed, PENDING).
    Mapped(Mapping),
    /// A mapping of the right kind was already there.
    Present(Mapping),
    /// The access's kind disagrees with the page's attribute: a memory-fault exit; the
    /// caller converts or stops the guest.
    Mismatch,
    /// The GFN is outside guest RAM.
    OutOfRange,
    /// The emulated TDX module refused the SEAMCALL with this status (a host bug).
    ModuleError(u64),
}

/// A fault's decision, taken under the lock, and the sequence number it was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultTicket {
    gfn: u64,
    kind: Kind,
    seq: u64,
    level: Level,
}

/// Result of the guest's TDG.MEM.PAGE.ACCEPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptResult {
    /// RAX for the guest (TDX_SUCCESS, TDX_PAGE_ALREADY_ACCEPTED, ...).
    Status(u64),
    /// The page's attribute is shared: a memory-fault exit (convert or stop).
    Mismatch,
    /// The accept breaks a rule; the guest is stopped.
    Violation(&'static str),
}

/// Which SEAMCALL puts a private leaf in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Install {
    /// TDH.MEM.PAGE.AUG (a fault).
    Aug,
    /// TDH.MEM.PAGE.ADD (a launch page).
    Add,
}

/// Event counters that change outside the lock.
#[derive(Debug, Default)]
struct Counters {
    faults: AtomicU64,
    fault_retries: AtomicU64,
    zaps: AtomicU64,
    maps: [AtomicU64; 3],
    implicit_conversions: AtomicU64,
    mirror_frozen_retries: AtomicU64,
    map_gpa_pages: AtomicU64,
    accept_faults: AtomicU64,
    discard_refused: AtomicU64,
    module_errors: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// State behind the MMU lock: attributes, shared TDP, invalidation tracking.
#[derive(Debug)]
struct State {
    attrs: Attributes,
    /// Shared mappings only.
    tdp: Tdp,
    /// Largest mapping the backing supports.
    backing: Level,
    /// The invalidation protocol faults check before installing.
    inv: Invalidations,
    /// Whether a fault checks for a racing invalidation. Always on, except in tests.
    check_stale: bool,
}

impl State {
    fn pages(&self) -> u64 {
        self.attrs.pages()
    }

    /// The largest level at which `gfn` may be mapped shared.
    fn max_shared_level(&self, gfn: u64) -> Level {
        for level in Level::DESCENDING {
            if level > self.backing || level == Level::L4K {
                continue;
            }
            let base = level.base(gfn);
            if base + level.pages() <= self.pages()
                && self.attrs.uniform(base, level.pages(), Kind::Shared)
            {
                return level;
            }
        }
        Level::L4K
    }

    /// Maximal runs in `[gfn, gfn + n)` whose attribute is not `kind`.
    fn runs_other_than(&self, gfn: u64, n: u64, kind: Kind) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for p in gfn..gfn + n {
            if self.attrs.get(p) == Some(kind) {
                continue;
            }
            match runs.last_mut() {
                Some((s, len)) if *s + *len == p => *len += 1,
                _ => runs.push((p, 1)),
            }
        }
        runs
    }
}

/// Widen the range `(start, end)` by the mappings in `removed`.
fn widen(r: (u64, u64), removed: &[Mapping]) -> (u64, u64) {
    removed
        .iter()
        .fold(r, |(s, e), m| (s.min(m.base), e.max(m.end())))
}

/// The host MMU of one TD. All methods take `&self`: vCPU threads fault, accept and
/// convert concurrently.
///
/// Locks: `state` (attributes, shared TDP, invalidation tracking) is taken briefly and
/// never held across a SEAMCALL; the private path is kept consistent by the mirror's
/// freeze protocol alone. `gate` is held shared by every operation that changes the
/// private path, so that [`TdxMmu::audit`] can take it exclusively to look at a state
/// with nothing in flight.
#[derive(Debug)]
pub struct TdxMmu {
    state: Mutex<State>,
    mirror: Mirror,
    sept: Sept,
    gate: RwLock<()>,
    c: Counters,
}

impl TdxMmu {
    /// An MMU over `pages` 4 KiB pages whose backing maps at most `backing`: all RAM
    /// private by attribute, the S-EPT and the mirror empty, nothing mapped.
    pub fn new(pages: u64, backing: Level) -> Self {
        Self {
            state: Mutex::new(State {
                attrs: Attributes::new(pages, Kind::Private),
                tdp: Tdp::new(pages),
                backing,
                inv: Invalidations::default(),
                check_stale: true,
            }),
            mirror: Mirror::new(pages),
            sept: Sept::new(pages),
            gate: RwLock::new(()),
            c: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock aborts the process (panic = "abort"); recover
        // a poisoned lock in tests.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of 4 KiB pages of guest RAM.
    pub fn pages(&self) -> u64 {
        self.lock().pages()
    }

    /// Counters so far.
    pub fn stats(&self) -> TdxStats {
        let s = self.sept.stats();
        let c = &self.c;
        TdxStats {
            accept_4k: s.accept_4k,
            accept_2m: s.accept_2m,
            accept_size_mismatch: s.accept_size_mismatch,
            accept_already: s.accept_already,
            accept_faults: read(&c.accept_faults),
            sept_page_add: s.page_add,
            sept_add: s.sept_add,
            sept_aug: s.aug,
            sept_block: s.block,
            sept_demote: s.demote,
            sept_remove: s.remove_pages,
            sept_busy: self.sept.busy_answers(),
            faults: read(&c.faults),
            fault_retries: read(&c.fault_retries),
            zaps: read(&c.zaps),
            maps_4k: read(&c.maps[0]),
            maps_2m: read(&c.maps[1]),
            maps_1g: read(&c.maps[2]),
            implicit_conversions: read(&c.implicit_conversions),
            mirror_frozen_retries: read(&c.mirror_frozen_retries),
            map_gpa_pages: read(&c.map_gpa_pages),
            discard_refused: read(&c.discard_refused),
            module_errors: read(&c.module_errors),
        }
    }

    /// The attribute of `gfn`, `None` outside guest RAM.
    pub fn attribute(&self, gfn: u64) -> Option<Kind> {
        self.lock().attrs.get(gfn)
    }

    /// The S-EPT leaf covering `gfn`: its level and state.
    pub fn sept_leaf(&self, gfn: u64) -> Option<(Level, SeptState)> {
        self.sept.leaf(gfn)
    }

    /// The level of the mirror leaf mapping `gfn`, if one does.
    pub fn mirror_leaf(&self, gfn: u64) -> Option<Level> {
        self.mirror.leaf(gfn)
    }

    /// Whether the guest can reach `gfn` through the private and the shared view now.
    pub fn reachable(&self, gfn: u64) -> (bool, bool) {
        let st = self.lock();
        self.reach(&st, gfn, self.sept.leaf(gfn))
    }

    /// Whether the host may treat `[gfn, gfn + n)` as shared with the guest: every page
    /// shared by attribute and without an S-EPT leaf.
    pub fn is_shared(&self, gfn: u64, n: u64) -> bool {
        let st = self.lock();
        st.attrs.uniform(gfn, n, Kind::Shared)
            && self.sept.leaves(gfn, n).iter().all(Option::is_none)
    }

    /// Count an implicit conversion made by the caller through [`TdxMmu::map_gpa`].
    pub fn count_implicit_conversion(&self) {
        bump(&self.c.implicit_conversions, 1);
    }

    // ----- launch and faults --------------------------------------------------------

    /// Add a measured launch page (TDH.MEM.PAGE.ADD): private by attribute, MAPPED in
    /// the S-EPT and mapped in the mirror, so reachable at once. Returns the module's
    /// status (TDX_EPT_ENTRY_NOT_FREE if something is there already).
    pub fn launch_page<B: Backing>(&self, b: &B, gfn: u64) -> Result<u64, B::Error> {
        let _g = self.enter();
        if self.map_gpa_inner(b, gfn, 1, Kind::Private)?.is_none() {
            return Ok(OPERAND_INVALID | OPERAND_ID_RCX);
        }
        loop {
            match self.install_private(b, gfn, Level::L4K, None, Install::Add)? {
                Some(TdxFault::Mapped(_)) => return Ok(SUCCESS),
                Some(TdxFault::Present(_)) => {
                    return Ok(status::EPT_ENTRY_NOT_FREE | OPERAND_ID_RCX)
                }
                Some(TdxFault::ModuleError(s)) => return Ok(s),
                Some(TdxFault::Mismatch | TdxFault::OutOfRange) => {
                    return Ok(OPERAND_INVALID | OPERAND_ID_RCX)
                }
                None => std::thread::yield_now(),
            }
        }
    }

    /// Test hook for a hostile host: TDH.MEM.PAGE.ADD of a page the image did not
    /// contain, before the TD runs, so that the guest finds it MAPPED (already
    /// accepted) behind its back. Returns the module's status.
    pub fn hostile_accept<B: Backing>(&self, b: &B, gfn: u64) -> Result<u64, B::Error> {
        self.launch_page(b, gfn)
    }

    /// First half of a fault: decide under the lock and record the sequence number.
    /// `Err` is a final answer.
    pub fn fault_begin(&self, gfn: u64, kind: Kind) -> Result<FaultTicket, TdxFault> {
        let st = self.lock();
        self.ticket(&st, gfn, kind, Level::L1G)
    }

    /// Second half of a fault: install what [`TdxMmu::fault_begin`] decided, unless an
    /// invalidation raced it or another operation holds the entry; `Ok(None)`: start
    /// over.
    pub fn fault_finish<B: Backing>(
        &self,
        b: &B,
        t: FaultTicket,
    ) -> Result<Option<TdxFault>, B::Error> {
        let _g = self.enter();
        self.finish(b, t)
    }

    /// An EPT violation on `gfn` for an access of `kind`, retried until it is not stale.
    pub fn fault<B: Backing>(&self, b: &B, gfn: u64, kind: Kind) -> Result<TdxFault, B::Error> {
        let _g = self.enter();
        self.fault_inner(b, gfn, kind, Level::L1G)
    }

    /// Fault in every page of `[gfn, gfn + n)` with the kind of its attribute
    /// (KVM_PRE_FAULT_MEMORY): private pages are AUGed (PENDING), shared ones mapped.
    /// Returns the number of mappings installed.
    pub fn prefault<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<u64, B::Error> {
        let _g = self.enter();
        let end = gfn.saturating_add(n).min(self.pages());
        let mut at = gfn;
        let mut mapped = 0;
        while at < end {
            let Some(kind) = self.attribute(at) else {
                break;
            };
            match self.fault_inner(b, at, kind, Level::L1G)? {
                TdxFault::Mapped(m) => {
                    mapped += 1;
                    at = m.end();
                }
                TdxFault::Present(m) => at = m.end(),
                _ => at += 1,
            }
        }
        Ok(mapped)
    }

    fn ticket(
        &self,
        st: &State,
        gfn: u64,
        kind: Kind,
        max: Level,
    ) -> Result<FaultTicket, TdxFault> {
        let seq = st.inv.seq;
        let level = self.plan(st, gfn, kind, max)?;
        Ok(FaultTicket {
            gfn,
            kind,
            seq,
            level,
        })
    }

    /// Decide a fault: `Err` if there is nothing to install.
    fn plan(&self, st: &State, gfn: u64, kind: Kind, max: Level) -> Result<Level, TdxFault> {
        match st.attrs.get(gfn) {
            None => return Err(TdxFault::OutOfRange),
            Some(k) if k != kind => return Err(TdxFault::Mismatch),
            Some(_) => {}
        }
        match kind {
            Kind::Private => {
                if let Some(level) = self.mirror.leaf(gfn) {
                    return Err(TdxFault::Present(Mapping {
                        base: level.base(gfn),
                        level,
                        kind,
                    }));
                }
                let head = Level::L2M.base(gfn);
                let huge = max >= Level::L2M
                    && st.backing >= Level::L2M
                    && head + PAGES_2M <= st.pages()
                    && st.attrs.uniform(head, PAGES_2M, Kind::Private)
                    && self.mirror.load(Slot::Region(head)) == MirrorEntry::Empty;
                Ok(if huge { Level::L2M } else { Level::L4K })
            }
            Kind::Shared => {
                if let Some(m) = st.tdp.lookup(gfn).filter(|m| m.kind == Kind::Shared) {
                    return Err(TdxFault::Present(m));
                }
                Ok(st.max_shared_level(gfn).min(max))
            }
        }
    }

    fn fault_inner<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        kind: Kind,
        max: Level,
    ) -> Result<TdxFault, B::Error> {
        loop {
            let t = {
                let st = self.lock();
                match self.ticket(&st, gfn, kind, max) {
                    Ok(t) => t,
                    Err(f) => return Ok(f),
                }
            };
            if let Some(f) = self.finish(b, t)? {
                return Ok(f);
            }
            std::thread::yield_now();
        }
    }

    fn finish<B: Backing>(&self, b: &B, t: FaultTicket) -> Result<Option<TdxFault>, B::Error> {
        match t.kind {
            Kind::Private => self.install_private(b, t.gfn, t.level, Some(t.seq), Install::Aug),
            Kind::Shared => {
                let mut st = self.lock();
                let base = t.level.base(t.gfn);
                if st.check_stale && st.inv.stale(base, t.level.pages(), t.seq) {
                    bump(&self.c.fault_retries, 1);
                    return Ok(None);
                }
                let m = Mapping {
                    base: t.level.base(t.gfn),
                    level: t.level,
                    kind: Kind::Shared,
                };
                st.tdp.map(m);
                self.count_map(m.level, true);
                self.sync(&st, b, m.base, m.level.pages())?;
                Ok(Some(TdxFault::Mapped(m)))
            }
        }
    }

    fn count_map(&self, level: Level, fault: bool) {
        if fault {
            bump(&self.c.faults, 1);
        }
        let i = match level {
            Level::L4K => 0,
            Level::L2M => 1,
            Level::L1G => 2,
        };
        bump(&self.c.maps[i], 1);
    }

    fn frozen_retry(&self) {
        bump(&self.c.mirror_frozen_retries, 1);
        std::thread::yield_now();
    }

    fn module_error(&self) {
        bump(&self.c.module_errors, 1);
    }

    /// A SEAMCALL, retried while the module answers TDX_OPERAND_BUSY (KVM retries
    /// SEAMCALLs that must not fail).
    fn seamcall(&self, f: impl Fn(&Sept) -> u64) -> u64 {
        loop {
            let s = f(&self.sept);
            if !status::is_busy(s) {
                return s;
            }
            std::thread::yield_now();
        }
    }

    /// Install a private leaf at `gfn` and `level` with the freeze protocol: freeze the
    /// mirror entry (linking a page table first for 4 KiB), check the fault is not
    /// stale (`seq`), AUG or ADD in the S-EPT, then set the entry. `Ok(None)`: retry.
    fn install_private<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        level: Level,
        seq: Option<u64>,
        how: Install,
    ) -> Result<Option<TdxFault>, B::Error> {
        let head = Level::L2M.base(gfn);
        let present = |level: Level| {
            Some(TdxFault::Present(Mapping {
                base: level.base(gfn),
                level,
                kind: Kind::Private,
            }))
        };
        let frozen = if level == Level::L4K {
            match self.mirror.load(Slot::Region(head)) {
                MirrorEntry::Frozen => {
                    self.frozen_retry();
                    return Ok(None);
                }
                MirrorEntry::Leaf => return Ok(present(Level::L2M)),
                MirrorEntry::Empty => {
                    if let Some(f) = self.link_table(head) {
                        return Ok(f);
                    }
                    return Ok(None);
                }
                MirrorEntry::Table => {}
            }
            match self.mirror.freeze(Slot::Page(gfn), MirrorEntry::Empty) {
                Ok(f) => f,
                Err(MirrorEntry::Leaf) => return Ok(present(Level::L4K)),
                Err(_) => {
                    self.frozen_retry();
                    return Ok(None);
                }
            }
        } else {
            match self.mirror.freeze(Slot::Region(head), MirrorEntry::Empty) {
                Ok(f) => f,
                Err(MirrorEntry::Leaf) => return Ok(present(Level::L2M)),
                Err(MirrorEntry::Frozen) => {
                    self.frozen_retry();
                    return Ok(None);
                }
                Err(_) => {
                    // A page table appeared since the plan: plan again, at 4 KiB.
                    bump(&self.c.fault_retries, 1);
                    return Ok(None);
                }
            }
        };
        self.mirror.window();
        if let Some(seq) = seq {
            let st = self.lock();
            if st.check_stale && st.inv.stale(level.base(gfn), level.pages(), seq) {
                drop(st);
                frozen.restore();
                bump(&self.c.fault_retries, 1);
                return Ok(None);
            }
        }
        let base = level.base(gfn);
        let s = match how {
            Install::Aug => self.sept.page_aug(base, level),
            Install::Add => self.sept.page_add(gfn),
        };
        if s != SUCCESS {
            frozen.restore();
            if status::is_busy(s) {
                return Ok(None);
            }
            self.module_error();
            return Ok(Some(TdxFault::ModuleError(s)));
        }
        self.mirror.window();
        frozen.commit(MirrorEntry::Leaf);
        self.count_map(level, how == Install::Aug);
        let st = self.lock();
        self.sync(&st, b, base, level.pages())?;
        let m = Mapping {
            base,
            level,
            kind: Kind::Private,
        };
        Ok(Some(TdxFault::Mapped(m)))
    }

    /// Link a 4 KiB page table under the empty region at `head` (TDH.MEM.SEPT.ADD),
    /// with the freeze protocol. `None`: retry the fault; `Some`: its final answer.
    fn link_table(&self, head: u64) -> Option<Option<TdxFault>> {
        let f = match self.mirror.freeze(Slot::Region(head), MirrorEntry::Empty) {
            Ok(f) => f,
            Err(MirrorEntry::Frozen) => {
                self.frozen_retry();
                return None;
            }
            Err(_) => return None,
        };
        self.mirror.window();
        let s = self.sept.sept_add(head);
        if s == SUCCESS {
            f.commit(MirrorEntry::Table);
            return None;
        }
        f.restore();
        if status::is_busy(s) {
            return None;
        }
        self.module_error();
        Some(Some(TdxFault::ModuleError(s)))
    }

    // ----- zaps ------------------------------------------------------------------------

    /// Remove every private leaf in `[gfn, gfn + n)` from the mirror and the S-EPT.
    fn zap_private<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<(), B::Error> {
        let end = gfn.saturating_add(n).min(self.pages());
        let mut head = Level::L2M.base(gfn);
        while head < end {
            self.zap_region(b, head, gfn.max(head), end.min(head + PAGES_2M))?;
            head += PAGES_2M;
        }
        Ok(())
    }

    /// Zap `[lo, hi)` inside the region at `head`.
    fn zap_region<B: Backing>(&self, b: &B, head: u64, lo: u64, hi: u64) -> Result<(), B::Error> {
        loop {
            match self.mirror.load(Slot::Region(head)) {
                MirrorEntry::Empty => return Ok(()),
                MirrorEntry::Frozen => self.frozen_retry(),
                MirrorEntry::Leaf if lo == head && hi == head + PAGES_2M => {
                    if let Ok(f) = self.mirror.freeze(Slot::Region(head), MirrorEntry::Leaf) {
                        return self.remove_leaf(b, f, head, Level::L2M);
                    }
                }
                MirrorEntry::Leaf => {
                    // Keep the rest of the region: split it first (KVM splits a huge
                    // private mapping a conversion only partly covers).
                    let s = self.demote_inner(b, head)?;
                    if s != SUCCESS
                        && status::class(s) != status::class(status::EPT_ENTRY_STATE_INCORRECT)
                    {
                        return Ok(());
                    }
                }
                MirrorEntry::Table => {
                    for p in lo..hi {
                        self.zap_page(b, p)?;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn zap_page<B: Backing>(&self, b: &B, p: u64) -> Result<(), B::Error> {
        loop {
            match self.mirror.load(Slot::Page(p)) {
                MirrorEntry::Leaf => {
                    if let Ok(f) = self.mirror.freeze(Slot::Page(p), MirrorEntry::Leaf) {
                        return self.remove_leaf(b, f, p, Level::L4K);
                    }
                }
                MirrorEntry::Frozen => self.frozen_retry(),
                MirrorEntry::Empty | MirrorEntry::Table => return Ok(()),
            }
        }
    }

    /// BLOCK (closing the view), then REMOVE, the leaf under the frozen entry `f`.
    fn remove_leaf<B: Backing>(
        &self,
        b: &B,
        f: Frozen<'_>,
        base: u64,
        level: Level,
    ) -> Result<(), B::Error> {
        self.mirror.window();
        let s = self.seamcall(|s| s.range_block(base, level));
        if s != SUCCESS {
            self.module_error();
            f.restore();
            return Ok(());
        }
        self.sync(&self.lock(), b, base, level.pages())?;
        self.mirror.window();
        let s = self.seamcall(|s| s.page_remove(base, level));
        if s != SUCCESS {
            self.module_error();
            f.restore();
            return Ok(());
        }
        f.commit(MirrorEntry::Empty);
        bump(&self.c.zaps, 1);
        Ok(())
    }

    /// Split the 2 MiB private leaf at `head` (BLOCK, DEMOTE) into 512 4 KiB leaves in
    /// the same state. Returns the status: TDX_EPT_ENTRY_STATE_INCORRECT if there is no
    /// 2 MiB leaf.
    fn demote_inner<B: Backing>(&self, b: &B, head: u64) -> Result<u64, B::Error> {
        loop {
            match self.mirror.load(Slot::Region(head)) {
                MirrorEntry::Frozen => {
                    self.frozen_retry();
                    continue;
                }
                MirrorEntry::Leaf => {}
                MirrorEntry::Empty | MirrorEntry::Table => {
                    return Ok(status::EPT_ENTRY_STATE_INCORRECT | OPERAND_ID_RCX)
                }
            }
            let Ok(f) = self.mirror.freeze(Slot::Region(head), MirrorEntry::Leaf) else {
                continue;
            };
            self.mirror.window();
            let s = self.seamcall(|s| s.range_block(head, Level::L2M));
            if s != SUCCESS {
                self.module_error();
                f.restore();
                return Ok(s);
            }
            self.sync(&self.lock(), b, head, PAGES_2M)?;
            let s = self.seamcall(|s| s.page_demote(head));
            if s != SUCCESS {
                self.module_error();
                f.restore();
                return Ok(s);
            }
            self.mirror.fill_table(&f, head, MirrorEntry::Leaf);
            self.mirror.window();
            f.commit(MirrorEntry::Table);
            self.sync(&self.lock(), b, head, PAGES_2M)?;
            return Ok(SUCCESS);
        }
    }

    /// Host split of the 2 MiB private leaf covering `gfn` (TDH.MEM.RANGE.BLOCK, then
    /// TDH.MEM.PAGE.DEMOTE): 512 4 KiB leaves keeping its state. Returns the status.
    pub fn demote<B: Backing>(&self, b: &B, gfn: u64) -> Result<u64, B::Error> {
        let _g = self.enter();
        if gfn >= self.pages() {
            return Ok(OPERAND_INVALID | OPERAND_ID_RCX);
        }
        self.demote_inner(b, Level::L2M.base(gfn))
    }

    /// Zap the shared TDP over `[gfn, gfn + n)`; returns what was removed.
    fn zap_shared(&self, st: &mut State, gfn: u64, n: u64) -> Vec<Mapping> {
        let removed = st.tdp.zap(gfn, n);
        bump(&self.c.zaps, removed.len() as u64);
        removed
    }

    /// Discard `[gfn, gfn + n)`, leaving out (and counting) any page the S-EPT still
    /// holds: memory the TD owns is never handed back.
    fn discard<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<(), B::Error> {
        let mut run: Option<(u64, u64)> = None;
        for (p, leaf) in (gfn..).zip(self.sept.leaves(gfn, n)) {
            if leaf.is_some() {
                bump(&self.c.discard_refused, 1);
                if let Some((s, len)) = run.take() {
                    b.discard(s, len)?;
                }
                continue;
            }
            run = match run {
                Some((s, len)) => Some((s, len + 1)),
                None => Some((p, 1)),
            };
        }
        if let Some((s, len)) = run {
            b.discard(s, len)?;
        }
        Ok(())
    }

    // ----- attribute changes, invalidation, reclaim -------------------------------------

    /// MapGPA of `[gfn, gfn + n)` to private (`to_private`) or shared: set the
    /// attributes and zap, never map (KVM `tdx_map_gpa`, `KVM_HC_MAP_GPA_RANGE`, then
    /// the VMM's `KVM_SET_MEMORY_ATTRIBUTES`). To shared, every S-EPT leaf in the range
    /// is BLOCKed and REMOVEd; either way the converted pages are discarded (their old
    /// contents must not cross sides). Pages already of the kind are left exactly as
    /// they are. `Ok(None)` if the range leaves guest RAM; else the pages converted.
    pub fn map_gpa<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        n: u64,
        to_private: bool,
    ) -> Result<Option<u64>, B::Error> {
        let _g = self.enter();
        let kind = if to_private {
            Kind::Private
        } else {
            Kind::Shared
        };
        self.map_gpa_inner(b, gfn, n, kind)
    }

    fn map_gpa_inner<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        n: u64,
        kind: Kind,
    ) -> Result<Option<u64>, B::Error> {
        let mut st = self.lock();
        if gfn.checked_add(n).is_none_or(|e| e > st.pages()) {
            return Ok(None);
        }
        if st.attrs.count_other(gfn, n, kind) == 0 {
            return Ok(Some(0));
        }
        let runs = st.runs_other_than(gfn, n, kind);
        st.inv.begin(gfn, n);
        let mut touched = (gfn, gfn + n);
        let mut converted = 0;
        for &(s, len) in &runs {
            let removed = self.zap_shared(&mut st, s, len);
            touched = widen(touched, &removed);
            st.attrs.set(s, len, kind);
            converted += len;
        }
        bump(&self.c.map_gpa_pages, converted);
        // Close the views the new attributes forbid before anything else happens.
        let closed = self.sync(&st, b, touched.0, touched.1 - touched.0);
        drop(st);
        let done = closed.and_then(|()| {
            runs.iter().try_for_each(|&(s, len)| {
                if kind == Kind::Shared {
                    self.zap_private(b, s, len)?;
                }
                self.discard(b, s, len)
            })
        });
        let mut st = self.lock();
        st.inv.end();
        done?;
        self.sync(&st, b, touched.0, touched.1 - touched.0)?;
        Ok(Some(converted))
    }

    /// A host-side invalidation of the shared mappings of `[gfn, gfn + n)` (an MMU
    /// notifier; private memory lives in guest_memfd and is not affected). Returns the
    /// mappings removed.
    pub fn invalidate<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<u64, B::Error> {
        let _g = self.enter();
        let mut st = self.lock();
        st.inv.begin(gfn, n);
        let removed = self.zap_shared(&mut st, gfn, n);
        st.inv.end();
        let touched = widen((gfn, gfn.saturating_add(n)), &removed);
        self.sync(&st, b, touched.0, touched.1 - touched.0)?;
        Ok(removed.len() as u64)
    }

    /// The host takes `[gfn, gfn + n)` back (a hole punched in guest_memfd): zap both
    /// views, BLOCK and REMOVE every private leaf (a 2 MiB leaf only partly covered is
    /// DEMOTEd first), then discard. Attributes are unchanged, so the guest's next
    /// private access AUGs a fresh page it must accept. Returns the pages discarded.
    pub fn reclaim<B: Backing>(&self, b: &B, gfn: u64, n: u64) -> Result<u64, B::Error> {
        let _g = self.enter();
        let mut st = self.lock();
        let end = gfn.saturating_add(n).min(st.pages());
        if gfn >= end {
            return Ok(0);
        }
        let n = end - gfn;
        st.inv.begin(gfn, n);
        let removed = self.zap_shared(&mut st, gfn, n);
        let touched = widen((gfn, end), &removed);
        let closed = self.sync(&st, b, touched.0, touched.1 - touched.0);
        drop(st);
        let done = closed
            .and_then(|()| self.zap_private(b, gfn, n))
            .and_then(|()| self.discard(b, gfn, n));
        let mut st = self.lock();
        st.inv.end();
        done?;
        self.sync(&st, b, touched.0, touched.1 - touched.0)?;
        Ok(n)
    }

    // ----- guest operations ---------------------------------------------------------------

    /// TDG.MEM.PAGE.ACCEPT by the guest of `gpa` at `level`. An EPT violation (no leaf,
    /// or a 2 MiB PENDING leaf under a 4 KiB accept) is resolved by the host (AUG at
    /// most at the accept level, or DEMOTE) and the accept retried, as the guest would
    /// after KVM resolved it. On success the pages are zeroed (by the module, here
    /// through [`Backing::zero_fresh`]) before the view opens.
    pub fn accept<B: Backing>(
        &self,
        b: &B,
        gpa: u64,
        level: AcceptLevel,
    ) -> Result<AcceptResult, B::Error> {
        let _g = self.enter();
        let invalid = AcceptResult::Status(OPERAND_INVALID | OPERAND_ID_RCX);
        // Shared-bit GPAs and anything above GPAW are not private GPAs.
        if gpa >> (GPAW - 1) != 0 || level == AcceptLevel::L1G || !gpa.is_multiple_of(level.bytes())
        {
            return Ok(invalid);
        }
        let gfn = gpa >> 12;
        if gfn >= self.pages() {
            return Ok(AcceptResult::Violation(rule::OUT_OF_RANGE));
        }
        let max = match level {
            AcceptLevel::L4K => Level::L4K,
            _ => Level::L2M,
        };
        for _ in 0..ACCEPT_ROUNDS {
            {
                let st = self.lock();
                match self.sept.accept(gfn, level) {
                    AcceptOutcome::Accepted { gfn: first, pages } => {
                        b.zero_fresh(first, pages)?;
                        self.sync(&st, b, first, pages)?;
                        return Ok(AcceptResult::Status(SUCCESS));
                    }
                    AcceptOutcome::Status(s) => return Ok(AcceptResult::Status(s)),
                    AcceptOutcome::NeedsFault => {}
                }
            }
            bump(&self.c.accept_faults, 1);
            let head = Level::L2M.base(gfn);
            if max == Level::L4K && self.mirror.load(Slot::Region(head)) == MirrorEntry::Leaf {
                // A huge leaf above the accept level: split it and retry.
                self.demote_inner(b, head)?;
                continue;
            }
            match self.fault_inner(b, gfn, Kind::Private, max)? {
                TdxFault::OutOfRange => return Ok(AcceptResult::Violation(rule::OUT_OF_RANGE)),
                TdxFault::Mismatch => return Ok(AcceptResult::Mismatch),
                TdxFault::ModuleError(_) => return Ok(AcceptResult::Violation(rule::MODULE_ERROR)),
                TdxFault::Mapped(_) | TdxFault::Present(_) => {}
            }
        }
        Ok(AcceptResult::Status(OPERAND_BUSY | OPERAND_ID_RCX))
    }

    /// A guest access of `kind` to `gfn` that found its view closed. A disagreement with
    /// the attribute becomes an implicit conversion (MapGPA of the page), or with
    /// `strict` a violation. Then the page is faulted in; a private access is allowed
    /// only to a MAPPED (accepted) page.
    pub fn access<B: Backing>(
        &self,
        b: &B,
        gfn: u64,
        kind: Kind,
        strict: bool,
    ) -> Result<Access, B::Error> {
        let _g = self.enter();
        let mut converted = false;
        for _ in 0..4 {
            match self.fault_inner(b, gfn, kind, Level::L1G)? {
                TdxFault::OutOfRange => return Ok(Access::Violation(rule::OUT_OF_RANGE)),
                TdxFault::Mismatch if strict => {
                    return Ok(Access::Violation(match kind {
                        Kind::Private => rule::PRIVATE_TO_SHARED,
                        Kind::Shared => rule::SHARED_TO_PRIVATE,
                    }));
                }
                TdxFault::Mismatch => {
                    self.map_gpa_inner(b, gfn, 1, kind)?;
                    bump(&self.c.implicit_conversions, 1);
                    converted = true;
                    continue;
                }
                TdxFault::ModuleError(_) => return Ok(Access::Violation(rule::MODULE_ERROR)),
                TdxFault::Mapped(_) | TdxFault::Present(_) => {}
            }
            if kind == Kind::Private && !matches!(self.sept.leaf(gfn), Some((_, SeptState::Mapped)))
            {
                return Ok(Access::Violation(rule::NOT_ACCEPTED));
            }
            return Ok(Access::Ok { converted });
        }
        Ok(Access::Violation(rule::OUT_OF_RANGE))
    }

    // ----- views and audit ----------------------------------------------------------------

    /// Reachability of `p` given its S-EPT leaf: `(private, shared)`.
    fn reach(&self, st: &State, p: u64, leaf: Option<(Level, SeptState)>) -> (bool, bool) {
        match st.attrs.get(p) {
            Some(Kind::Private) => (
                matches!(leaf, Some((_, SeptState::Mapped))) && self.mirror.leaf(p).is_some(),
                false,
            ),
            Some(Kind::Shared) => (
                false,
                st.tdp.lookup(p).is_some_and(|m| m.kind == Kind::Shared),
            ),
            None => (false, false),
        }
    }

    /// Make the backing match [`TdxMmu::reach`] over `[gfn, gfn + n)`, one call per
    /// maximal run. Called with the lock held, so syncs never interleave.
    fn sync<B: Backing>(&self, st: &State, b: &B, gfn: u64, n: u64) -> Result<(), B::Error> {
        let end = gfn.saturating_add(n).min(st.pages());
        if gfn >= end {
            return Ok(());
        }
        let reach: Vec<(bool, bool)> = (gfn..end)
            .zip(self.sept.leaves(gfn, end - gfn))
            .map(|(p, l)| self.reach(st, p, l))
            .collect();
        let mut start = 0;
        while start < reach.len() {
            let r = reach[start];
            let len = reach[start..].iter().take_while(|&&x| x == r).count();
            let (g, l) = (gfn + start as u64, len as u64);
            b.set_access(Kind::Private, g, l, r.0)?;
            b.set_access(Kind::Shared, g, l, r.1)?;
            start += len;
        }
        Ok(())
    }

    /// Wait until no operation is in flight and check that the mirror and the S-EPT
    /// agree entry by entry (nothing frozen, nothing blocked), that private leaves lie
    /// only over private pages, and that shared mappings lie only over shared pages
    /// inside the backing. `Err` describes the first disagreement.
    pub fn audit(&self) -> Result<(), String> {
        let _w = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let st = self.lock();
        let (regions, small) = self.sept.snapshot();
        let pages = st.pages();
        for (head, r) in (0..)
            .step_by(PAGES_2M as usize)
            .zip(regions.iter().copied())
        {
            let m = self.mirror.load(Slot::Region(head));
            let agree = match (m, r) {
                (MirrorEntry::Empty, SeptRegion::Free)
                | (MirrorEntry::Table, SeptRegion::Table) => true,
                (MirrorEntry::Leaf, SeptRegion::Leaf(s)) => !s.is_blocked(),
                _ => false,
            };
            if !agree {
                return Err(format!("region {head:#x}: mirror {m:?}, S-EPT {r:?}"));
            }
            if let SeptRegion::Leaf(_) = r {
                if !st.attrs.uniform(head, PAGES_2M, Kind::Private) {
                    return Err(format!("2 MiB private leaf at {head:#x} over shared pages"));
                }
            }
            for p in head..(head + PAGES_2M).min(pages) {
                let ml = self.mirror.load(Slot::Page(p));
                let s = small.get(p as usize).copied().unwrap_or(SeptState::Free);
                let agree = match (ml, s) {
                    (MirrorEntry::Empty, SeptState::Free) => true,
                    (MirrorEntry::Leaf, SeptState::Pending | SeptState::Mapped) => {
                        m == MirrorEntry::Table
                    }
                    _ => false,
                };
                if !agree {
                    return Err(format!("page {p:#x}: mirror {ml:?}, S-EPT {s:?}"));
                }
                if s != SeptState::Free && st.attrs.get(p) != Some(Kind::Private) {
                    return Err(format!("private leaf at {p:#x} over a shared page"));
                }
            }
        }
        for m in st.tdp.mappings_in(0, pages) {
            if m.kind != Kind::Shared {
                return Err(format!("{m:?} in the shared TDP"));
            }
            if m.level > st.backing || m.end() > pages {
                return Err(format!("{m:?} outside the backing or RAM"));
            }
            if !st.attrs.uniform(m.base, m.level.pages(), Kind::Shared) {
                return Err(format!("stale shared mapping {m:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

impl stats::Counters for TdxStats {
    fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("tdp.faults", self.faults),
            ("tdp.zaps", self.zaps),
            ("tdp.maps_4k", self.maps_4k),
            ("tdp.maps_2m", self.maps_2m),
            ("tdp.maps_1g", self.maps_1g),
            ("tdp.fault_retries", self.fault_retries),
            ("memory.implicit_conversions", self.implicit_conversions),
            ("memory.conversions", self.map_gpa_pages),
            ("tdx.accept_4k", self.accept_4k),
            ("tdx.accept_2m", self.accept_2m),
            ("tdx.accept_size_mismatch", self.accept_size_mismatch),
            ("tdx.accept_already", self.accept_already),
            ("tdx.map_gpa_pages", self.map_gpa_pages),
            ("sept.page_add", self.sept_page_add),
            ("sept.aug", self.sept_aug),
            ("sept.block", self.sept_block),
            ("sept.demote", self.sept_demote),
            ("sept.remove", self.sept_remove),
            ("mirror.frozen_retries", self.mirror_frozen_retries),
        ]
    }
}

impl HypervisorMmu for TdxMmu {
    fn pages(&self) -> u64 {
        TdxMmu::pages(self)
    }

    fn access(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        kind: Kind,
        strict: bool,
    ) -> Result<Access, MemoryError> {
        TdxMmu::access(self, mem, gfn, kind, strict)
    }

    fn convert(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        n: u64,
        kind: Kind,
    ) -> Result<Option<u64>, MemoryError> {
        self.map_gpa(mem, gfn, n, kind == Kind::Private)
    }

    fn is_shared(&self, gfn: u64, n: u64) -> bool {
        TdxMmu::is_shared(self, gfn, n)
    }

    fn reachable(&self, gfn: u64) -> (bool, bool) {
        TdxMmu::reachable(self, gfn)
    }

    fn count_implicit_conversion(&self) {
        TdxMmu::count_implicit_conversion(self);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        stats::Counters::entries(&self.stats())
    }
}
