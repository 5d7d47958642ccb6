//! Tests of the TDX MMU against a per-page reference model, the invariants after every
//! step, and the mirror freeze protocol under threads.

use super::*;
use crate::emulated::tdx::sept::status::{
    EPT_ENTRY_STATE_INCORRECT, PAGE_ALREADY_ACCEPTED, PAGE_SIZE_MISMATCH,
};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::sync::atomic::AtomicBool;

const RCX: u64 = OPERAND_ID_RCX;

// ----- a recording backing ---------------------------------------------------------------

/// Views and contents as a guest would see them, and the pages discarded.
struct TestBacking<'a> {
    mmu: &'a TdxMmu,
    /// `[private, shared]` reachability per page, as set by the MMU.
    views: RefCell<Vec<[bool; 2]>>,
    /// One byte of "contents" per page; discard and zero_fresh clear it.
    data: RefCell<Vec<u8>>,
    /// Pages discarded since the flag was last cleared.
    discarded: RefCell<Vec<bool>>,
    /// Pages discarded while the S-EPT still held them.
    bad_discards: Cell<u64>,
}

/// What the host left in a page before the guest ever had it (nonzero, so that a
/// missing zeroing shows).
fn garbage(p: u64) -> u8 {
    (p % 251) as u8 + 1
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Private => 0,
        Kind::Shared => 1,
    }
}

impl<'a> TestBacking<'a> {
    fn new(mmu: &'a TdxMmu) -> Self {
        let n = mmu.pages() as usize;
        Self {
            mmu,
            views: RefCell::new(vec![[false; 2]; n]),
            data: RefCell::new((0..n as u64).map(garbage).collect()),
            discarded: RefCell::new(vec![false; n]),
            bad_discards: Cell::new(0),
        }
    }

    fn open(&self, gfn: u64, kind: Kind) -> bool {
        self.views.borrow()[gfn as usize][slot(kind)]
    }
}

impl Backing for TestBacking<'_> {
    type Error = ();

    fn set_access(&self, kind: Kind, gfn: u64, pages: u64, on: bool) -> Result<(), ()> {
        let mut v = self.views.borrow_mut();
        for p in gfn..gfn + pages {
            v[p as usize][slot(kind)] = on;
        }
        Ok(())
    }

    fn discard(&self, gfn: u64, pages: u64) -> Result<(), ()> {
        // Called without the MMU lock: the S-EPT can be read here.
        let held = (gfn..gfn + pages)
            .filter(|&p| self.mmu.sept_leaf(p).is_some())
            .count() as u64;
        self.bad_discards.set(self.bad_discards.get() + held);
        let mut d = self.discarded.borrow_mut();
        for p in gfn..gfn + pages {
            d[p as usize] = true;
        }
        drop(d);
        self.zero_fresh(gfn, pages)
    }

    fn zero_fresh(&self, gfn: u64, pages: u64) -> Result<(), ()> {
        let mut d = self.data.borrow_mut();
        for p in gfn..gfn + pages {
            d[p as usize] = 0;
        }
        Ok(())
    }
}

// ----- the reference model ------------------------------------------------------------------

/// S-EPT state of a page as the model sees it (blocked states never last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum S {
    Free,
    Pending,
    Mapped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    private: bool,
    s: S,
    data: u8,
}

/// What a 2 MiB region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum R {
    Free,
    Table,
    Leaf,
}

/// The rules stated page by page: no mirror, no freeze, no locks.
struct Model {
    pages: Vec<Page>,
    regions: Vec<R>,
    backing: Level,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Status(u64),
    Mismatch,
    Violation,
}

impl Model {
    fn new(n: u64, backing: Level) -> Self {
        Self {
            pages: (0..n)
                .map(|p| Page {
                    private: true,
                    s: S::Free,
                    data: garbage(p),
                })
                .collect(),
            regions: vec![R::Free; n.div_ceil(512) as usize],
            backing,
        }
    }

    fn n(&self) -> u64 {
        self.pages.len() as u64
    }

    fn pg(&mut self, g: u64) -> &mut Page {
        &mut self.pages[g as usize]
    }

    fn region(&self, g: u64) -> R {
        self.regions[(g / 512) as usize]
    }

    fn set_region(&mut self, g: u64, r: R) {
        self.regions[(g / 512) as usize] = r;
    }

    fn span(g: u64) -> std::ops::Range<u64> {
        let h = g - g % 512;
        h..h + 512
    }

    /// The leaf covering `g`: level and state.
    fn leaf(&self, g: u64) -> Option<(Level, S)> {
        let s = self.pages[g as usize].s;
        match self.region(g) {
            R::Leaf => Some((Level::L2M, s)),
            R::Table if s != S::Free => Some((Level::L4K, s)),
            _ => None,
        }
    }

    fn launch(&mut self, g: u64) {
        self.pg(g).private = true;
        if self.region(g) == R::Free {
            self.set_region(g, R::Table);
        }
        self.pg(g).s = S::Mapped;
    }

    /// A private fault on a private page: AUG at 2 MiB if allowed, else 4 KiB.
    fn fault_private(&mut self, g: u64, max: Level) {
        if self.leaf(g).is_some() {
            return;
        }
        let r = Self::span(g);
        let huge = max >= Level::L2M
            && self.backing >= Level::L2M
            && r.end <= self.n()
            && self.region(g) == R::Free
            && r.clone().all(|p| self.pages[p as usize].private);
        if huge {
            self.set_region(g, R::Leaf);
            for p in r {
                self.pg(p).s = S::Pending;
            }
        } else {
            self.set_region(g, R::Table);
            self.pg(g).s = S::Pending;
        }
    }

    fn demote(&mut self, g: u64) -> u64 {
        if self.region(g) != R::Leaf {
            return EPT_ENTRY_STATE_INCORRECT | RCX;
        }
        self.set_region(g, R::Table);
        SUCCESS
    }

    /// BLOCK and REMOVE every leaf in `[g, g + n)`, splitting a partly covered 2 MiB.
    fn remove(&mut self, g: u64, n: u64) {
        let end = (g + n).min(self.n());
        let mut head = g - g % 512;
        while head < end {
            let (lo, hi) = (g.max(head), end.min(head + 512));
            if self.region(head) == R::Leaf {
                if lo == head && hi == head + 512 {
                    self.set_region(head, R::Free);
                    for p in head..hi {
                        self.pg(p).s = S::Free;
                    }
                } else {
                    self.demote(head);
                }
            }
            if self.region(head) == R::Table {
                for p in lo..hi {
                    self.pg(p).s = S::Free;
                }
            }
            head += 512;
        }
    }

    fn map_gpa(&mut self, g: u64, n: u64, private: bool) -> Option<u64> {
        if g.checked_add(n).is_none_or(|e| e > self.n()) {
            return None;
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for p in g..g + n {
            if self.pages[p as usize].private != private {
                match runs.last_mut() {
                    Some((s, l)) if *s + *l == p => *l += 1,
                    _ => runs.push((p, 1)),
                }
            }
        }
        let mut changed = 0;
        for &(s, len) in &runs {
            for p in s..s + len {
                self.pg(p).private = private;
                self.pg(p).data = 0;
            }
            if !private {
                self.remove(s, len);
            }
            changed += len;
        }
        Some(changed)
    }

    fn reclaim(&mut self, g: u64, n: u64) {
        let end = g.saturating_add(n).min(self.n());
        if g >= end {
            return;
        }
        self.remove(g, end - g);
        for p in g..end {
            self.pg(p).data = 0;
        }
    }

    fn access(&mut self, g: u64, private: bool, write: Option<u8>) -> Option<u8> {
        if g >= self.n() {
            return None;
        }
        if self.pages[g as usize].private != private {
            self.map_gpa(g, 1, private);
        }
        if private {
            self.fault_private(g, Level::L1G);
            if self.pages[g as usize].s != S::Mapped {
                return None;
            }
        }
        if let Some(v) = write {
            self.pg(g).data = v;
        }
        Some(self.pages[g as usize].data)
    }

    fn accept(&mut self, gpa: u64, level: AcceptLevel) -> Expect {
        if gpa >> (GPAW - 1) != 0 || level == AcceptLevel::L1G || !gpa.is_multiple_of(level.bytes())
        {
            return Expect::Status(OPERAND_INVALID | RCX);
        }
        let g = gpa >> 12;
        if g >= self.n() {
            return Expect::Violation;
        }
        for _ in 0..ACCEPT_ROUNDS {
            let s = self.pages[g as usize].s;
            let done = match (level, self.region(g)) {
                (AcceptLevel::L4K, R::Leaf) if s == S::Mapped => Some(PAGE_ALREADY_ACCEPTED | 1),
                (AcceptLevel::L4K, R::Table) if s == S::Mapped => Some(PAGE_ALREADY_ACCEPTED),
                (AcceptLevel::L4K, R::Table) if s == S::Pending => {
                    self.pg(g).s = S::Mapped;
                    self.pg(g).data = 0;
                    Some(SUCCESS)
                }
                (AcceptLevel::L2M, R::Table) => Some(PAGE_SIZE_MISMATCH),
                (AcceptLevel::L2M, R::Leaf) if s == S::Mapped => Some(PAGE_ALREADY_ACCEPTED | 1),
                (AcceptLevel::L2M, R::Leaf) => {
                    for p in Self::span(g) {
                        self.pg(p).s = S::Mapped;
                        self.pg(p).data = 0;
                    }
                    Some(SUCCESS)
                }
                _ => None,
            };
            if let Some(st) = done {
                return Expect::Status(st);
            }
            // The EPT violation: split a larger leaf, or AUG at most at the level.
            if level == AcceptLevel::L4K && self.region(g) == R::Leaf {
                self.demote(g);
                continue;
            }
            if !self.pages[g as usize].private {
                return Expect::Mismatch;
            }
            let max = match level {
                AcceptLevel::L4K => Level::L4K,
                _ => Level::L2M,
            };
            self.fault_private(g, max);
        }
        Expect::Status(OPERAND_BUSY | RCX)
    }
}

// ----- invariants ---------------------------------------------------------------------------

/// Everything the MMU shows at rest: audit, views, counters.
fn check_invariants(mmu: &TdxMmu, b: &TestBacking<'_>) -> Result<(), String> {
    mmu.audit()?;
    let s = mmu.stats();
    if s.module_errors != 0 || s.discard_refused != 0 || b.bad_discards.get() != 0 {
        return Err(format!("module errors or bad discards: {s:?}"));
    }
    let views = b.views.borrow();
    let st = mmu.lock();
    for p in 0..st.pages() {
        let leaf = mmu.sept.leaf(p);
        let attr = st.attrs.get(p);
        let mapped = matches!(leaf, Some((_, SeptState::Mapped)));
        let want = [
            attr == Some(Kind::Private) && mapped && mmu.mirror.leaf(p).is_some(),
            attr == Some(Kind::Shared) && st.tdp.lookup(p).is_some_and(|m| m.kind == Kind::Shared),
        ];
        let got = views[p as usize];
        if got != want {
            return Err(format!("page {p:#x}: views {got:?}, state says {want:?}"));
        }
        // Never through the wrong view, never a PENDING page, never a leaf shared.
        if got[0] && (attr != Some(Kind::Private) || !mapped) {
            return Err(format!(
                "page {p:#x} reachable private while {attr:?} {leaf:?}"
            ));
        }
        if got[1] && (attr != Some(Kind::Shared) || leaf.is_some()) {
            return Err(format!(
                "page {p:#x} reachable shared while {attr:?} {leaf:?}"
            ));
        }
    }
    Ok(())
}

/// The MMU agrees with the model page by page.
fn check_model(mmu: &TdxMmu, b: &TestBacking<'_>, model: &Model) -> Result<(), String> {
    let data = b.data.borrow();
    for (i, want) in model.pages.iter().enumerate() {
        let p = i as u64;
        let private = mmu.attribute(p) == Some(Kind::Private);
        let leaf = mmu.sept_leaf(p).map(|(l, s)| {
            let s = match s {
                SeptState::Pending => S::Pending,
                SeptState::Mapped => S::Mapped,
                other => return Err(format!("page {p:#x} left {other:?}")),
            };
            Ok((l, s))
        });
        let leaf = leaf.transpose()?;
        let got = (private, leaf, data[i]);
        let exp = (want.private, model.leaf(p), want.data);
        if got != exp {
            return Err(format!("page {p:#x}: MMU {got:?}, model {exp:?}"));
        }
    }
    for (r, want) in model.regions.iter().enumerate() {
        let got = match mmu.mirror.load(Slot::Region(r as u64 * 512)) {
            MirrorEntry::Empty => R::Free,
            MirrorEntry::Table => R::Table,
            MirrorEntry::Leaf => R::Leaf,
            MirrorEntry::Frozen => return Err(format!("region {r} frozen at rest")),
        };
        if got != *want {
            return Err(format!("region {r}: mirror {got:?}, model {want:?}"));
        }
    }
    Ok(())
}

/// Everything an operation could change, to show an ALREADY_ACCEPTED changed nothing.
type Snapshot = (
    Vec<Option<Kind>>,
    (Vec<SeptRegion>, Vec<SeptState>),
    Vec<Option<Level>>,
    Vec<[bool; 2]>,
    Vec<u8>,
);

fn snapshot(mmu: &TdxMmu, b: &TestBacking<'_>) -> Snapshot {
    let n = mmu.pages();
    (
        (0..n).map(|p| mmu.attribute(p)).collect(),
        mmu.sept.snapshot(),
        (0..n).map(|p| mmu.mirror_leaf(p)).collect(),
        b.views.borrow().clone(),
        b.data.borrow().clone(),
    )
}

// ----- the random walk --------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    MapGpa {
        g: u64,
        n: u64,
        private: bool,
    },
    Accept {
        gpa: u64,
        level: AcceptLevel,
    },
    Access {
        g: u64,
        private: bool,
        write: Option<u8>,
    },
    Fault {
        g: u64,
        private: bool,
    },
    Prefault {
        g: u64,
        n: u64,
    },
    Invalidate {
        g: u64,
        n: u64,
    },
    Reclaim {
        g: u64,
        n: u64,
    },
    Demote {
        region: u64,
    },
}

use crate::mmu::snp::tests::{count, gfn, kind_of, PAGES};

fn accept_operand() -> impl Strategy<Value = (u64, AcceptLevel)> {
    prop_oneof![
        5 => gfn().prop_map(|g| (g << 12, AcceptLevel::L4K)),
        4 => gfn().prop_map(|g| ((g & !511) << 12, AcceptLevel::L2M)),
        1 => gfn().prop_map(|g| ((g << 12) | 0x800, AcceptLevel::L4K)),
        1 => gfn().prop_map(|g| ((g | 1) << 12, AcceptLevel::L2M)),
        1 => gfn().prop_map(|g| ((g << 12) | (1 << 47), AcceptLevel::L4K)),
        1 => Just((0, AcceptLevel::L1G)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (gfn(), count(), any::<bool>()).prop_map(|(g, n, private)| Op::MapGpa { g, n, private }),
        6 => accept_operand().prop_map(|(gpa, level)| Op::Accept { gpa, level }),
        5 => (gfn(), prop::bool::weighted(0.7), prop::option::of(1u8..=255))
            .prop_map(|(g, private, write)| Op::Access { g, private, write }),
        2 => (gfn(), any::<bool>()).prop_map(|(g, private)| Op::Fault { g, private }),
        1 => (gfn(), count()).prop_map(|(g, n)| Op::Prefault { g, n }),
        1 => (gfn(), count()).prop_map(|(g, n)| Op::Invalidate { g, n }),
        1 => (gfn(), count()).prop_map(|(g, n)| Op::Reclaim { g, n }),
        1 => (0..4u64).prop_map(|region| Op::Demote { region }),
    ]
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        1 => Just(Level::L4K),
        2 => Just(Level::L2M),
        3 => Just(Level::L1G)
    ]
}

/// Apply one op to the MMU and the model and compare what the guest or host observes.
fn step(mmu: &TdxMmu, b: &TestBacking<'_>, model: &mut Model, op: &Op) -> Result<(), String> {
    let before: Vec<bool> = (0..mmu.pages())
        .map(|p| mmu.sept_leaf(p).is_some())
        .collect();
    b.discarded.borrow_mut().iter_mut().for_each(|d| *d = false);
    match *op {
        Op::MapGpa { g, n, private } => {
            let got = mmu.map_gpa(b, g, n, private).map_err(|()| "backing")?;
            let want = model.map_gpa(g, n, private);
            if got != want {
                return Err(format!("MapGPA returned {got:?}, model {want:?}"));
            }
        }
        Op::Accept { gpa, level } => {
            let snap = snapshot(mmu, b);
            let got = mmu.accept(b, gpa, level).map_err(|()| "backing")?;
            let want = match model.accept(gpa, level) {
                Expect::Status(s) => AcceptResult::Status(s),
                Expect::Mismatch => AcceptResult::Mismatch,
                Expect::Violation => AcceptResult::Violation(rule::OUT_OF_RANGE),
            };
            if got != want {
                return Err(format!("ACCEPT returned {got:x?}, model {want:x?}"));
            }
            if let AcceptResult::Status(s) = got {
                if status::class(s) == status::class(PAGE_ALREADY_ACCEPTED)
                    && snapshot(mmu, b) != snap
                {
                    return Err("a second ACCEPT changed the MMU".into());
                }
            }
        }
        Op::Access { g, private, write } => {
            let kind = kind_of(private);
            let direct = g < mmu.pages() && b.open(g, kind);
            let allowed = direct
                || match mmu.access(b, g, kind, false).map_err(|()| "backing")? {
                    Access::Ok { .. } => true,
                    Access::Violation(_) => false,
                };
            let got = allowed.then(|| {
                let mut d = b.data.borrow_mut();
                if let Some(v) = write {
                    d[g as usize] = v;
                }
                d[g as usize]
            });
            let want = model.access(g, private, write);
            if got != want {
                return Err(format!(
                    "access (direct: {direct}) gave {got:?}, model {want:?}"
                ));
            }
        }
        Op::Fault { g, private } => {
            let got = mmu.fault(b, g, kind_of(private)).map_err(|()| "backing")?;
            let right = g < model.n() && model.pages[g as usize].private == private;
            let ok = match got {
                TdxFault::OutOfRange => g >= model.n(),
                TdxFault::Mismatch => g < model.n() && !right,
                TdxFault::Mapped(m) | TdxFault::Present(m) => {
                    right && m.kind == kind_of(private) && m.base <= g && g < m.end()
                }
                TdxFault::ModuleError(_) => false,
            };
            if !ok {
                return Err(format!("fault returned {got:?}"));
            }
            if private && right {
                model.fault_private(g, Level::L1G);
            }
        }
        Op::Prefault { g, n } => {
            mmu.prefault(b, g, n).map_err(|()| "backing")?;
            let end = g.saturating_add(n).min(model.n());
            for p in g.min(end)..end {
                if model.pages[p as usize].private {
                    model.fault_private(p, Level::L1G);
                }
            }
        }
        Op::Invalidate { g, n } => {
            mmu.invalidate(b, g, n).map_err(|()| "backing")?;
            if g < mmu.pages() && mmu.inspect_shared(|tdp| !tdp.mappings_in(g, n).is_empty()) {
                return Err("a shared mapping survived its invalidation".into());
            }
        }
        Op::Reclaim { g, n } => {
            mmu.reclaim(b, g, n).map_err(|()| "backing")?;
            model.reclaim(g, n);
        }
        Op::Demote { region } => {
            let got = mmu.demote(b, region * 512).map_err(|()| "backing")?;
            let want = model.demote(region * 512);
            if got != want {
                return Err(format!("DEMOTE returned {got:#x}, model {want:#x}"));
            }
        }
    }
    // Every page REMOVEd by this step was discarded.
    let discarded = b.discarded.borrow();
    for (p, had) in before.iter().enumerate() {
        if *had && mmu.sept_leaf(p as u64).is_none() && !discarded[p] {
            return Err(format!("page {p:#x} removed but not discarded"));
        }
    }
    Ok(())
}

/// Steps per generated case; with the case count this gives at least 100,000 steps per
/// run (the bar for CI).
const STEPS: usize = 500;
const CASES: u32 = 200;
const _: () = assert!(
    STEPS * CASES as usize >= 100_000,
    "CI runs at least 100,000 steps"
);

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Random interleavings of guest operations (MapGPA both ways at any size and
    /// alignment, ACCEPT at 4 KiB and 2 MiB, accesses through both views) and host
    /// operations (faults, prefaults, zaps, reclaims, DEMOTE) agree with the reference
    /// model, and every invariant holds after every step.
    #[test]
    fn random_walks_match_the_model_and_keep_the_invariants(
        backing in level(),
        launch in prop::collection::vec(0..PAGES, 0..4),
        ops in prop::collection::vec(op(), STEPS),
    ) {
        let mmu = TdxMmu::new(PAGES, backing);
        let b = TestBacking::new(&mmu);
        let mut model = Model::new(PAGES, backing);
        for &g in &launch {
            let s = mmu.launch_page(&b, g).expect("backing");
            let fresh = model.leaf(g).is_none();
            prop_assert_eq!(s == SUCCESS, fresh, "launch of {:#x}: {:#x}", g, s);
            if fresh {
                model.launch(g);
            }
        }
        for (i, op) in ops.iter().enumerate() {
            let r = step(&mmu, &b, &mut model, op)
                .and_then(|()| check_invariants(&mmu, &b))
                .and_then(|()| check_model(&mmu, &b, &model));
            prop_assert!(r.is_ok(), "step {i} {op:?}: {}", r.unwrap_err());
        }
    }
}

impl TdxMmu {
    /// Test access to the shared TDP.
    fn inspect_shared<R>(&self, f: impl FnOnce(&Tdp) -> R) -> R {
        f(&self.lock().tdp)
    }
}

// ----- targeted cases ---------------------------------------------------------------------

fn fresh(pages: u64) -> TdxMmu {
    TdxMmu::new(pages, Level::L1G)
}

fn accept(mmu: &TdxMmu, b: &TestBacking<'_>, gfn: u64, level: AcceptLevel) -> AcceptResult {
    mmu.accept(b, gfn << 12, level).expect("backing")
}

#[test]
fn launch_pages_are_mapped_and_already_accepted() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    assert_eq!(mmu.launch_page(&b, 5), Ok(SUCCESS));
    assert_eq!(mmu.launch_page(&b, 5), Ok(status::EPT_ENTRY_NOT_FREE | RCX));
    assert_eq!(mmu.reachable(5), (true, false));
    assert_eq!(
        accept(&mmu, &b, 5, AcceptLevel::L4K),
        AcceptResult::Status(PAGE_ALREADY_ACCEPTED)
    );
    let s = mmu.stats();
    assert_eq!((s.sept_page_add, s.sept_add, s.accept_already), (1, 1, 1));
    assert_eq!(s.faults, 0, "a launch page is not a fault");
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn a_fault_augs_2m_pending_and_only_accept_opens_the_view() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    let m = match mmu.fault(&b, 600, Kind::Private) {
        Ok(TdxFault::Mapped(m)) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!((m.base, m.level), (512, Level::L2M));
    assert_eq!(mmu.sept_leaf(600), Some((Level::L2M, SeptState::Pending)));
    assert_eq!(
        mmu.reachable(600),
        (false, false),
        "PENDING is not reachable"
    );
    assert_eq!(
        mmu.access(&b, 600, Kind::Private, false),
        Ok(Access::Violation(rule::NOT_ACCEPTED))
    );
    assert_eq!(
        accept(&mmu, &b, 512, AcceptLevel::L2M),
        AcceptResult::Status(SUCCESS)
    );
    assert_eq!(mmu.reachable(600), (true, false));
    assert_eq!(b.data.borrow()[600], 0, "the module zeroes what it accepts");
    assert_ne!(b.data.borrow()[1100], 0, "but only that");
    assert_eq!(
        accept(&mmu, &b, 600, AcceptLevel::L4K),
        AcceptResult::Status(PAGE_ALREADY_ACCEPTED | 1),
        "walk stopped at the 2 MiB leaf"
    );
    let s = mmu.stats();
    assert_eq!(
        (s.sept_aug, s.maps_2m, s.accept_2m, s.accept_already),
        (1, 1, 1, 1)
    );
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn four_k_accept_in_a_2m_pending_leaf_demotes_and_retries() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    assert!(matches!(
        mmu.fault(&b, 1024, Kind::Private),
        Ok(TdxFault::Mapped(_))
    ));
    assert_eq!(
        accept(&mmu, &b, 1030, AcceptLevel::L4K),
        AcceptResult::Status(SUCCESS)
    );
    let s = mmu.stats();
    assert_eq!(
        (s.sept_demote, s.sept_block, s.accept_4k),
        (1, 1, 1),
        "{s:?}"
    );
    assert_eq!(mmu.sept_leaf(1030), Some((Level::L4K, SeptState::Mapped)));
    assert_eq!(mmu.sept_leaf(1031), Some((Level::L4K, SeptState::Pending)));
    assert_eq!(mmu.mirror_leaf(1031), Some(Level::L4K));
    // The region holds 4 KiB leaves now: a 2 MiB accept is a size mismatch.
    assert_eq!(
        accept(&mmu, &b, 1024, AcceptLevel::L2M),
        AcceptResult::Status(0xC000_0B0B_0000_0001)
    );
    assert_eq!(mmu.stats().accept_size_mismatch, 1);
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn accept_without_a_leaf_augs_at_the_accept_level() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    // 4 KiB accept on a FREE page: EPT violation, AUG at 4 KiB (not 2 MiB), retry.
    assert_eq!(
        accept(&mmu, &b, 3, AcceptLevel::L4K),
        AcceptResult::Status(SUCCESS)
    );
    assert_eq!(mmu.sept_leaf(3), Some((Level::L4K, SeptState::Mapped)));
    assert_eq!(mmu.sept_leaf(4), None);
    // 2 MiB accept on a FREE private region: AUG at 2 MiB.
    assert_eq!(
        accept(&mmu, &b, 512, AcceptLevel::L2M),
        AcceptResult::Status(SUCCESS)
    );
    // 2 MiB accept over a region with a shared page: AUG at 4 KiB, then mismatch.
    assert_eq!(mmu.map_gpa(&b, 1500, 1, false), Ok(Some(1)));
    assert_eq!(
        accept(&mmu, &b, 1024, AcceptLevel::L2M),
        AcceptResult::Status(PAGE_SIZE_MISMATCH)
    );
    let s = mmu.stats();
    assert_eq!(
        (s.accept_4k, s.accept_2m, s.accept_faults),
        (1, 1, 3),
        "{s:?}"
    );
    assert_eq!(
        accept(&mmu, &b, 1500, AcceptLevel::L4K),
        AcceptResult::Mismatch,
        "a shared page cannot be accepted"
    );
    assert_eq!(
        mmu.accept(&b, (7 << 12) | (1 << 47), AcceptLevel::L4K),
        Ok(AcceptResult::Status(OPERAND_INVALID | RCX))
    );
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn map_gpa_to_shared_inside_an_accepted_2m_leaf_keeps_the_rest() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    assert_eq!(
        accept(&mmu, &b, 0, AcceptLevel::L2M),
        AcceptResult::Status(SUCCESS)
    );
    b.data.borrow_mut()[20] = 9;
    b.data.borrow_mut()[40] = 9;
    assert_eq!(mmu.map_gpa(&b, 16, 16, false), Ok(Some(16)));
    let s = mmu.stats();
    assert_eq!(
        (s.sept_demote, s.sept_remove, s.map_gpa_pages),
        (1, 16, 16),
        "{s:?}"
    );
    assert_eq!(b.data.borrow()[20], 0, "converted pages are discarded");
    assert_eq!(b.data.borrow()[40], 9, "the rest keeps its contents");
    assert_eq!(mmu.reachable(40), (true, false));
    assert_eq!(mmu.reachable(20), (false, false));
    assert!(matches!(
        mmu.fault(&b, 20, Kind::Shared),
        Ok(TdxFault::Mapped(_))
    ));
    assert_eq!(mmu.reachable(20), (false, true));
    assert!(mmu.is_shared(16, 16));
    // Back to private: the shared mapping is zapped, nothing is AUGed.
    assert_eq!(mmu.map_gpa(&b, 16, 16, true), Ok(Some(16)));
    assert_eq!(mmu.reachable(20), (false, false));
    assert_eq!(mmu.sept_leaf(20), None);
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn a_fault_that_raced_a_map_gpa_retries() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    let t = mmu.fault_begin(600, Kind::Private).expect("plan");
    mmu.map_gpa(&b, 600, 1, false).expect("backing");
    assert_eq!(mmu.fault_finish(&b, t), Ok(None), "must retry");
    assert_eq!(mmu.stats().fault_retries, 1);
    assert_eq!(mmu.sept_leaf(600), None);
    assert_eq!(mmu.fault(&b, 600, Kind::Private), Ok(TdxFault::Mismatch));
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn a_2m_fault_retries_while_any_page_of_its_region_is_being_invalidated() {
    // Found by the threaded test: a fault on page 600 must not AUG the whole region
    // while a conversion of page 700 is between its zap and its discard.
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    let t = mmu.fault_begin(600, Kind::Private).expect("plan");
    assert_eq!(t.level, Level::L2M);
    mmu.lock().inv.begin(700, 1);
    assert_eq!(mmu.fault_finish(&b, t), Ok(None), "must retry");
    assert_eq!(mmu.sept_leaf(700), None);
    mmu.lock().inv.end();
    assert!(matches!(
        mmu.fault(&b, 600, Kind::Private),
        Ok(TdxFault::Mapped(Mapping {
            level: Level::L2M,
            ..
        }))
    ));
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn without_the_race_check_a_stale_private_leaf_is_installed() {
    let mmu = fresh(PAGES);
    mmu.lock().check_stale = false;
    let b = TestBacking::new(&mmu);
    let t = mmu.fault_begin(600, Kind::Private).expect("plan");
    mmu.map_gpa(&b, 600, 1, false).expect("backing");
    assert!(matches!(
        mmu.fault_finish(&b, t),
        Ok(Some(TdxFault::Mapped(_)))
    ));
    let err = check_invariants(&mmu, &b).expect_err("stale leaf");
    assert!(err.contains("over shared"), "{err}");
}

#[test]
fn a_frozen_entry_sends_a_fault_round_again() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    let t = mmu.fault_begin(5, Kind::Private).expect("plan");
    let held = mmu
        .mirror
        .freeze(Slot::Region(0), MirrorEntry::Empty)
        .expect("empty");
    assert_eq!(mmu.fault_finish(&b, t), Ok(None));
    assert_eq!(mmu.stats().mirror_frozen_retries, 1);
    held.restore();
    assert!(matches!(
        mmu.fault_finish(&b, t),
        Ok(Some(TdxFault::Mapped(_)))
    ));
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn strict_mode_names_the_wrong_view_and_implicit_conversions_count() {
    let mmu = fresh(PAGES);
    let b = TestBacking::new(&mmu);
    assert_eq!(
        mmu.access(&b, 3, Kind::Shared, true),
        Ok(Access::Violation(rule::SHARED_TO_PRIVATE))
    );
    assert_eq!(
        mmu.access(&b, 3, Kind::Shared, false),
        Ok(Access::Ok { converted: true })
    );
    assert_eq!(
        mmu.access(&b, 3, Kind::Private, true),
        Ok(Access::Violation(rule::PRIVATE_TO_SHARED))
    );
    assert_eq!(mmu.stats().implicit_conversions, 1);
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn shared_memory_maps_at_1g_and_the_backing_caps_it() {
    let pages = Level::L1G.pages() + 512;
    for (backing, want) in [(Level::L1G, Level::L1G), (Level::L2M, Level::L2M)] {
        let mmu = TdxMmu::new(pages, backing);
        let b = TestBacking::new(&mmu);
        mmu.map_gpa(&b, 0, Level::L1G.pages(), false)
            .expect("backing");
        match mmu.fault(&b, 1000, Kind::Shared) {
            Ok(TdxFault::Mapped(m)) => assert_eq!(m.level, want),
            other => panic!("{other:?}"),
        }
        assert_eq!(mmu.reachable(1000), (false, true));
    }
}

// ----- threads ------------------------------------------------------------------------------

/// A backing for threads: views are not recorded; discards are checked against the
/// S-EPT.
struct SyncBacking<'a> {
    mmu: &'a TdxMmu,
    bad_discards: AtomicU64,
}

impl Backing for SyncBacking<'_> {
    type Error = ();

    fn set_access(&self, _: Kind, _: u64, _: u64, _: bool) -> Result<(), ()> {
        Ok(())
    }

    fn discard(&self, gfn: u64, pages: u64) -> Result<(), ()> {
        let held = (gfn..gfn + pages)
            .filter(|&p| self.mmu.sept_leaf(p).is_some())
            .count() as u64;
        self.bad_discards.fetch_add(held, Ordering::Relaxed);
        Ok(())
    }

    fn zero_fresh(&self, _: u64, _: u64) -> Result<(), ()> {
        Ok(())
    }
}

/// Small deterministic generator, so the threads need no shared RNG.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Totals of [`race`] over its epochs.
#[derive(Debug, Default)]
struct RaceTotals {
    frozen_retries: u64,
    faults: u64,
    maps_2m: u64,
    demotes: u64,
    removed: u64,
    accepts: u64,
    module_errors: u64,
    discard_refused: u64,
    bad_discards: u64,
}

/// Epochs of: two vCPU threads fault the same 2 MiB region privately (holding each
/// fault open across a yield) and accept in it, a third converts parts of it back and
/// forth with MapGPA (and now and then reclaims or demotes), a fourth audits the mirror
/// against the S-EPT whenever it can stop the world. Frozen windows yield. Each epoch
/// starts from a fresh MMU, so the 2 MiB paths (AUG, accept, split) race too. Returns
/// the first disagreement seen, if any, and the totals.
fn race(freeze: bool, epochs: u64, rounds: u64) -> (Option<String>, RaceTotals) {
    let mut totals = RaceTotals::default();
    for epoch in 0..epochs {
        let (found, stats, bad) = race_epoch(freeze, rounds, epoch);
        totals.frozen_retries += stats.mirror_frozen_retries;
        totals.faults += stats.faults;
        totals.maps_2m += stats.maps_2m;
        totals.demotes += stats.sept_demote;
        totals.removed += stats.sept_remove;
        totals.accepts += stats.accept_4k + stats.accept_2m;
        totals.module_errors += stats.module_errors;
        totals.discard_refused += stats.discard_refused;
        totals.bad_discards += bad;
        if found.is_some() {
            return (found, totals);
        }
    }
    (None, totals)
}

fn race_epoch(freeze: bool, rounds: u64, epoch: u64) -> (Option<String>, TdxStats, u64) {
    let pages = 2 * 512;
    let mmu = TdxMmu::new(pages, Level::L2M);
    mmu.mirror.set_freeze(freeze);
    mmu.mirror.set_window(true);
    let b = SyncBacking {
        mmu: &mmu,
        bad_discards: AtomicU64::new(0),
    };
    let done = AtomicBool::new(false);
    let found: Mutex<Option<String>> = Mutex::new(None);
    let report = |e: String| {
        let mut f = found.lock().expect("lock");
        f.get_or_insert(e);
        done.store(true, Ordering::Relaxed);
    };
    let salt = epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::thread::scope(|s| {
        for seed in [0x9E37_79B9_7F4A_7C15_u64, 0xD1B5_4A32_D192_ED03] {
            let (mmu, b, done, report) = (&mmu, &b, &done, &report);
            s.spawn(move || {
                let mut x = seed ^ salt;
                while !done.load(Ordering::Relaxed) {
                    let g = next(&mut x) % 512;
                    if next(&mut x).is_multiple_of(4) {
                        let (gpa, level) = if next(&mut x).is_multiple_of(3) {
                            (0, AcceptLevel::L2M)
                        } else {
                            (g << 12, AcceptLevel::L4K)
                        };
                        if let Ok(AcceptResult::Violation(v)) = mmu.accept(b, gpa, level) {
                            report(format!("accept of {gpa:#x}: {v}"));
                        }
                        continue;
                    }
                    while let Ok(t) = mmu.fault_begin(g, Kind::Private) {
                        std::thread::yield_now();
                        match mmu.fault_finish(b, t).expect("backing") {
                            None => continue,
                            Some(TdxFault::ModuleError(st)) => {
                                report(format!("AUG of {g:#x} failed: {st:#x}"));
                            }
                            Some(_) => {}
                        }
                        break;
                    }
                }
            });
        }
        let (mmu_c, done_c, report_c) = (&mmu, &done, &report);
        s.spawn(move || {
            while !done_c.load(Ordering::Relaxed) {
                if let Err(e) = mmu_c.audit() {
                    report_c(e);
                }
                if mmu_c.stats().module_errors > 0 {
                    report_c("the module refused a SEAMCALL".into());
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        });
        let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ salt;
        for _ in 0..rounds {
            if done.load(Ordering::Relaxed) {
                break;
            }
            let g = next(&mut x) % 512;
            let n = [1, 7, 64, 512][(next(&mut x) % 4) as usize].min(512 - g);
            match next(&mut x) % 16 {
                0 => {
                    mmu.reclaim(&b, g, n).expect("backing");
                }
                1 => {
                    mmu.demote(&b, 0).expect("backing");
                }
                k => {
                    mmu.map_gpa(&b, g, n, k % 2 == 0).expect("backing");
                }
            }
            std::thread::yield_now();
        }
        done.store(true, Ordering::Relaxed);
    });
    let last = mmu.audit().err();
    let found = found.into_inner().expect("lock").or(last);
    (found, mmu.stats(), b.bad_discards.load(Ordering::Relaxed))
}

#[test]
fn racing_faults_and_map_gpa_keep_the_mirror_and_the_sept_in_agreement() {
    let (found, t) = race(true, 100, 200);
    assert_eq!(found, None, "{t:?}");
    assert_eq!(
        (t.module_errors, t.discard_refused, t.bad_discards),
        (0, 0, 0)
    );
    assert!(
        t.frozen_retries > 0,
        "the freeze was never contended: {t:?}"
    );
    assert!(t.faults > 0 && t.removed > 0 && t.accepts > 0, "{t:?}");
    assert!(
        t.maps_2m > 0 && t.demotes > 0,
        "the 2 MiB paths never raced: {t:?}"
    );
}

#[test]
fn the_threaded_test_detects_a_disagreement_without_the_freeze() {
    let (found, t) = race(false, 100, 2_000);
    assert!(
        found.is_some(),
        "no disagreement seen with the freeze off: {t:?}"
    );
}
