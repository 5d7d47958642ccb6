//! Tests of the host MMU against a per-page reference model, the invariants of
//! docs/design.md, "The rules the host MMU keeps" after every step, and the
//! fault/invalidation race under threads.

use super::*;
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

// ----- a recording backing ---------------------------------------------------------------

/// Views and contents as a guest would see them, plus a check that nothing assigned is
/// ever discarded.
struct TestBacking<'a> {
    mmu: &'a SnpMmu,
    /// `[private, shared]` reachability per page, as set by the MMU.
    views: RefCell<Vec<[bool; 2]>>,
    /// One byte of "contents" per page; discard zeroes it.
    data: RefCell<Vec<u8>>,
    /// Pages discarded while the RMP still showed them assigned.
    bad_discards: Cell<u64>,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Private => 0,
        Kind::Shared => 1,
    }
}

impl<'a> TestBacking<'a> {
    fn new(mmu: &'a SnpMmu) -> Self {
        let n = mmu.pages() as usize;
        Self {
            mmu,
            views: RefCell::new(vec![[false; 2]; n]),
            data: RefCell::new(vec![0; n]),
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
        // Called without the MMU lock held, so the RMP can be read here.
        let assigned = self.mmu.inspect(|_, _, rmp| {
            (gfn..gfn + pages)
                .filter(|&p| rmp.entry(p).is_some_and(|e| e.assigned))
                .count() as u64
        });
        self.bad_discards.set(self.bad_discards.get() + assigned);
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

// ----- the reference model ----------------------------------------------------------------

/// One page as the model sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Page {
    private: bool,
    assigned: bool,
    validated: bool,
    /// Assigned as part of a 2 MiB RMP entry.
    in2m: bool,
    data: u8,
}

/// The simplest statement of the rules: one record per page, no TDP at all (the TDP is
/// checked by the invariants instead).
struct Model {
    pages: Vec<Page>,
    backing: Level,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Done(bool),
    Fail(RmpError),
    Mismatch,
}

impl Model {
    fn new(n: u64, backing: Level) -> Self {
        Self {
            pages: vec![
                Page {
                    private: true,
                    ..Page::default()
                };
                n as usize
            ],
            backing,
        }
    }

    fn n(&self) -> u64 {
        self.pages.len() as u64
    }

    fn page(&mut self, g: u64) -> &mut Page {
        &mut self.pages[g as usize]
    }

    fn region(g: u64) -> std::ops::Range<u64> {
        let h = g - g % 512;
        h..h + 512
    }

    /// Split the 2 MiB entry holding `g`, keeping every page's state.
    fn split(&mut self, g: u64) {
        for p in Self::region(g) {
            self.page(p).in2m = false;
        }
    }

    /// A private fault's guest_memfd prepare.
    fn prepare(&mut self, g: u64) {
        if self.pages[g as usize].assigned {
            return;
        }
        let r = Self::region(g);
        let whole = self.backing >= Level::L2M
            && r.end <= self.n()
            && r.clone()
                .all(|p| self.pages[p as usize].private && !self.pages[p as usize].assigned);
        let pages: Vec<u64> = if whole { r.collect() } else { vec![g] };
        for p in pages {
            let pg = self.page(p);
            pg.assigned = true;
            pg.validated = false;
            pg.in2m = whole;
            pg.data = 0;
        }
    }

    /// Return `g` to the hypervisor; a 2 MiB entry around it is split first.
    fn unassign(&mut self, g: u64) {
        if self.pages[g as usize].in2m {
            self.split(g);
        }
        let p = self.page(g);
        p.assigned = false;
        p.validated = false;
    }

    fn set_attr(&mut self, g: u64, n: u64, private: bool) -> Option<u64> {
        if g.checked_add(n).is_none_or(|e| e > self.n()) {
            return None;
        }
        let mut changed = 0;
        for p in g..g + n {
            if self.pages[p as usize].private == private {
                continue;
            }
            changed += 1;
            if !private && self.pages[p as usize].assigned {
                self.unassign(p);
            }
            let pg = self.page(p);
            pg.private = private;
            pg.data = 0;
        }
        Some(changed)
    }

    fn reclaim(&mut self, g: u64, n: u64) {
        let end = g.saturating_add(n).min(self.n());
        for p in g.min(end)..end {
            if self.pages[p as usize].assigned {
                self.unassign(p);
            }
            self.page(p).data = 0;
        }
    }

    fn pvalidate(&mut self, g: u64, size2m: bool, v: bool) -> Expect {
        if g >= self.n() {
            return Expect::Fail(RmpError::FailInput);
        }
        if !self.pages[g as usize].private {
            return Expect::Mismatch;
        }
        self.prepare(g);
        if !size2m {
            if self.pages[g as usize].in2m {
                self.split(g);
            }
            let p = self.page(g);
            let changed = p.validated != v;
            p.validated = v;
            return Expect::Done(changed);
        }
        if !g.is_multiple_of(512) || g + 512 > self.n() {
            return Expect::Fail(RmpError::FailInput);
        }
        if !self.pages[g as usize].in2m {
            return Expect::Fail(RmpError::FailSizeMismatch);
        }
        let changed = self.pages[g as usize].validated != v;
        for p in Self::region(g) {
            self.page(p).validated = v;
        }
        Expect::Done(changed)
    }

    fn rmpadjust(&mut self, g: u64, size2m: bool, attrs: u64) -> Expect {
        if g >= self.n() {
            return Expect::Fail(RmpError::FailInput);
        }
        if !self.pages[g as usize].private {
            return Expect::Mismatch;
        }
        self.prepare(g);
        let target = attrs & 0xFF;
        let vmsa = attrs & (1 << 16) != 0;
        if target > 3 || (vmsa && size2m) {
            return Expect::Fail(RmpError::FailInput);
        }
        if size2m && (!g.is_multiple_of(512) || g + 512 > self.n()) {
            return Expect::Fail(RmpError::FailInput);
        }
        if size2m && !self.pages[g as usize].in2m {
            return Expect::Fail(RmpError::FailSizeMismatch);
        }
        let p = self.pages[g as usize];
        if !p.assigned || !p.validated {
            return Expect::Fail(RmpError::FailInput);
        }
        if target == 0 {
            return Expect::Fail(RmpError::FailPermission);
        }
        if !size2m && p.in2m {
            self.split(g);
        }
        // `changed` depends on permission history the model does not keep.
        Expect::Done(true)
    }

    /// A guest access of `kind`; `Some(byte read or written)` if it is allowed, after
    /// an implicit conversion if the kind disagrees.
    fn access(&mut self, g: u64, private: bool, write: Option<u8>) -> Result<u8, ()> {
        if g >= self.n() {
            return Err(());
        }
        if self.pages[g as usize].private != private {
            self.set_attr(g, 1, private);
        }
        if private {
            self.prepare(g);
            let p = self.pages[g as usize];
            if !(p.assigned && p.validated) {
                return Err(());
            }
        } else if self.pages[g as usize].assigned {
            return Err(());
        }
        if let Some(v) = write {
            self.page(g).data = v;
        }
        Ok(self.pages[g as usize].data)
    }
}

// ----- invariants ----------------------------------------------------------------------------

/// The invariants of docs/design.md, "The rules the host MMU keeps" on the MMU and what its
/// backing shows.
fn check_invariants(mmu: &SnpMmu, b: &TestBacking<'_>) -> Result<(), String> {
    let views = b.views.borrow();
    if b.bad_discards.get() != 0 || mmu.stats().reclaim_refused != 0 {
        return Err("an assigned page was handed back to the host".into());
    }
    let backing = mmu.lock().backing;
    mmu.inspect(|attrs, tdp, rmp| {
        let n = attrs.pages();
        check_tdp(attrs, tdp, rmp, backing)?;
        for p in 0..n {
            let e = rmp.entry(p).ok_or("RMP shorter than RAM")?;
            if e.validated && !e.assigned {
                return Err(format!("page {p:#x} validated but not assigned"));
            }
            // Every assigned page is the guest's, at its own GPA (host frame == guest
            // frame): a 2 MiB entry reports its head's GPA, which plus the page's
            // offset is the page's.
            if e.assigned {
                let first = match e.size {
                    RmpPageSize::Size2M => p - p % 512,
                    RmpPageSize::Size4K => p,
                };
                let page_gpa = e.gpa + (p - first) * 4096;
                if e.asid != GUEST_ASID || page_gpa != p * 4096 {
                    return Err(format!(
                        "page {p:#x} assigned to ASID {} at GPA {page_gpa:#x}",
                        e.asid
                    ));
                }
            } else if (e.gpa, e.asid) != (0, 0) {
                return Err(format!("hypervisor-owned page {p:#x} has {e:?}"));
            }
            if e.assigned && e.size == RmpPageSize::Size2M {
                let head = p - p % 512;
                if !attrs.uniform(head, 512, Kind::Private) {
                    return Err(format!("2M entry at {head:#x} over non-private pages"));
                }
            }
            // What the guest can reach is exactly TDP and RMP together...
            let want = match tdp.lookup(p) {
                Some(m) if m.kind == Kind::Private => [e.assigned && e.validated, false],
                Some(_) => [false, !e.assigned],
                None => [false, false],
            };
            if views[p as usize] != want {
                return Err(format!(
                    "page {p:#x}: views {:?}, TDP+RMP say {want:?}",
                    views[p as usize]
                ));
            }
            // ...and never private memory through the shared view or vice versa.
            let kind = attrs.get(p);
            if want[0] && kind != Some(Kind::Private) {
                return Err(format!("shared page {p:#x} reachable as private"));
            }
            if want[1] && (kind != Some(Kind::Shared) || e.assigned) {
                return Err(format!("private page {p:#x} reachable as shared"));
            }
        }
        Ok(())
    })
}

/// TDP-only invariants, cheap enough for big guests: every mapping agrees with the
/// attributes under it, stays inside RAM and the backing, and is never larger than the
/// RMP entry of an assigned page under it.
fn check_tdp(attrs: &Attributes, tdp: &Tdp, rmp: &Rmp, backing: Level) -> Result<(), String> {
    let n = attrs.pages();
    let mut counted = 0;
    for m in tdp.mappings_in(0, n) {
        counted += 1;
        if m.level > backing || m.end() > n || m.base % m.level.pages() != 0 {
            return Err(format!("{m:?} outside the backing or RAM"));
        }
        if !attrs.uniform(m.base, m.level.pages(), m.kind) {
            return Err(format!("stale mapping {m:?}: attributes disagree"));
        }
        match m.kind {
            Kind::Private => {
                if m.level == Level::L1G {
                    return Err(format!("{m:?}: no 1 GiB RMP entries exist"));
                }
                for p in m.base..m.end() {
                    let e = rmp.entry(p).ok_or("RMP shorter than RAM")?;
                    if !e.assigned {
                        return Err(format!("{m:?} over unassigned page {p:#x}"));
                    }
                    if m.level == Level::L2M && e.size != RmpPageSize::Size2M {
                        return Err(format!("{m:?} larger than the 4K RMP entry of {p:#x}"));
                    }
                }
            }
            Kind::Shared => {
                if let Some(p) =
                    (m.base..m.end()).find(|&p| rmp.entry(p).is_some_and(|e| e.assigned))
                {
                    return Err(format!("{m:?} over page {p:#x}, which the guest owns"));
                }
            }
        }
    }
    let total = tdp.count(Level::L4K) + tdp.count(Level::L2M) + tdp.count(Level::L1G);
    if counted != total {
        return Err(format!("{counted} mappings found, {total} counted"));
    }
    Ok(())
}

/// The model and the MMU agree page by page.
fn check_model(mmu: &SnpMmu, b: &TestBacking<'_>, model: &Model) -> Result<(), String> {
    let data = b.data.borrow();
    mmu.inspect(|attrs, _, rmp| {
        for (i, want) in model.pages.iter().enumerate() {
            let p = i as u64;
            let e = rmp.entry(p).ok_or("RMP shorter than RAM")?;
            let private = attrs.get(p) == Some(Kind::Private);
            let got = (private, e.assigned, e.validated);
            if got != (want.private, want.assigned, want.validated) {
                return Err(format!("page {p:#x}: MMU {got:?}, model {want:?}"));
            }
            if e.assigned && (e.size == RmpPageSize::Size2M) != want.in2m {
                return Err(format!(
                    "page {p:#x}: RMP size {:?}, model {want:?}",
                    e.size
                ));
            }
            if data[i] != want.data {
                return Err(format!(
                    "page {p:#x}: data {}, model {}",
                    data[i], want.data
                ));
            }
        }
        Ok(())
    })
}

// ----- the random walk -------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Psc {
        g: u64,
        n: u64,
        private: bool,
    },
    Pvalidate {
        g: u64,
        size2m: bool,
        v: bool,
    },
    Rmpadjust {
        g: u64,
        size2m: bool,
        attrs: u64,
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
    Invalidate {
        g: u64,
        n: u64,
    },
    Reclaim {
        g: u64,
        n: u64,
    },
    Psmash {
        region: u64,
    },
}

pub(in crate::mmu) fn kind_of(private: bool) -> Kind {
    if private {
        Kind::Private
    } else {
        Kind::Shared
    }
}

/// Guest pages in the random walks (four 2 MiB regions), shared with the TDX MMU's.
pub(in crate::mmu) const PAGES: u64 = 2048;

pub(in crate::mmu) fn gfn() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..PAGES,
        2 => (0..4u64).prop_map(|r| r * 512),
        1 => (0..4u64, 0..3u64).prop_map(|(r, d)| r * 512 + 511 - d),
        1 => PAGES - 2..PAGES + 600,
    ]
}

pub(in crate::mmu) fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(1u64),
        2 => 1..16u64,
        2 => Just(512u64),
        1 => Just(1024u64),
        1 => 0..PAGES + 8,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (gfn(), count(), any::<bool>()).prop_map(|(g, n, private)| Op::Psc { g, n, private }),
        4 => (gfn(), any::<bool>(), prop::bool::weighted(0.85))
            .prop_map(|(g, size2m, v)| Op::Pvalidate { g, size2m, v }),
        1 => (gfn(), any::<bool>(), 0u64..5, any::<bool>(), 0u64..16).prop_map(
            |(g, size2m, target, vmsa, perm)| Op::Rmpadjust {
                g,
                size2m,
                attrs: target | (perm << 8) | (u64::from(vmsa) << 16),
            }
        ),
        6 => (gfn(), prop::bool::weighted(0.7), prop::option::of(1u8..=255))
            .prop_map(|(g, private, write)| Op::Access { g, private, write }),
        2 => (gfn(), any::<bool>()).prop_map(|(g, private)| Op::Fault { g, private }),
        1 => (gfn(), count()).prop_map(|(g, n)| Op::Invalidate { g, n }),
        1 => (gfn(), count()).prop_map(|(g, n)| Op::Reclaim { g, n }),
        1 => (0..4u64).prop_map(|region| Op::Psmash { region }),
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
fn step(mmu: &SnpMmu, b: &TestBacking<'_>, model: &mut Model, op: &Op) -> Result<(), String> {
    match *op {
        Op::Psc { g, n, private } => {
            let got = mmu
                .set_attributes(b, g, n, kind_of(private))
                .map_err(|()| "backing")?;
            let want = model.set_attr(g, n, private);
            if got != want {
                return Err(format!("PSC returned {got:?}, model {want:?}"));
            }
        }
        Op::Pvalidate { g, size2m, v } => {
            let size = if size2m {
                RmpPageSize::Size2M
            } else {
                RmpPageSize::Size4K
            };
            let got = mmu.pvalidate(b, g, size, v).map_err(|()| "backing")?;
            let want = match model.pvalidate(g, size2m, v) {
                Expect::Done(c) => GuestRmpResult::Done { changed: c },
                Expect::Fail(e) => GuestRmpResult::Fail(e),
                Expect::Mismatch => GuestRmpResult::Mismatch,
            };
            if got != want {
                return Err(format!("PVALIDATE returned {got:?}, model {want:?}"));
            }
        }
        Op::Rmpadjust { g, size2m, attrs } => {
            let size = if size2m {
                RmpPageSize::Size2M
            } else {
                RmpPageSize::Size4K
            };
            let got = mmu.rmpadjust(b, g, size, attrs).map_err(|()| "backing")?;
            let ok = match (model.rmpadjust(g, size2m, attrs), got) {
                (Expect::Done(_), GuestRmpResult::Done { .. }) => true,
                (Expect::Fail(a), GuestRmpResult::Fail(c)) => a == c,
                (Expect::Mismatch, GuestRmpResult::Mismatch) => true,
                _ => false,
            };
            if !ok {
                return Err(format!("RMPADJUST returned {got:?}"));
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
            let want = model.access(g, private, write).ok();
            if got != want {
                return Err(format!(
                    "access (direct: {direct}) gave {got:?}, model {want:?}"
                ));
            }
        }
        Op::Fault { g, private } => {
            let got = mmu.fault(b, g, kind_of(private)).map_err(|()| "backing")?;
            let want_kind = g < model.n() && model.pages[g as usize].private == private;
            let ok = match got {
                Fault::OutOfRange => g >= model.n(),
                Fault::Mismatch => g < model.n() && !want_kind,
                Fault::Mapped(m) | Fault::Present(m) => {
                    want_kind && m.kind == kind_of(private) && m.base <= g && g < m.end()
                }
            };
            if !ok {
                return Err(format!("fault returned {got:?}"));
            }
            if private && want_kind {
                model.prepare(g);
            }
        }
        Op::Invalidate { g, n } => {
            mmu.invalidate(b, g, n).map_err(|()| "backing")?;
            if g < mmu.pages() && mmu.inspect(|_, tdp, _| !tdp.mappings_in(g, n).is_empty()) {
                return Err("a mapping survived its invalidation".into());
            }
        }
        Op::Reclaim { g, n } => {
            mmu.reclaim(b, g, n).map_err(|()| "backing")?;
            model.reclaim(g, n);
        }
        Op::Psmash { region } => {
            let head = region * 512;
            let before = mmu.rmp_entry(head).ok_or("head in RAM")?;
            let got = mmu.psmash(b, head).map_err(|()| "backing")?;
            if got.is_ok() != (before.size == RmpPageSize::Size2M) {
                return Err(format!("PSMASH of {before:?} returned {got:?}"));
            }
            if got.is_ok() {
                // Every 4 KiB entry keeps the 2 MiB entry's state.
                for p in head..head + 512 {
                    let e = mmu.rmp_entry(p).ok_or("page in RAM")?;
                    let same = (e.assigned, e.validated, e.immutable)
                        == (before.assigned, before.validated, before.immutable);
                    if !same || e.size != RmpPageSize::Size4K {
                        return Err(format!("PSMASH changed page {p:#x}: {e:?} from {before:?}"));
                    }
                }
                if mmu.inspect(|_, tdp, _| !tdp.mappings_in(head, 512).is_empty()) {
                    return Err("PSMASH left a mapping over the region".into());
                }
                if before.assigned {
                    model.split(head);
                }
            }
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

    /// Random interleavings of guest and host operations agree with the reference
    /// model, and every invariant holds after every step.
    #[test]
    fn random_walks_match_the_model_and_keep_the_invariants(
        backing in level(),
        ops in prop::collection::vec(op(), STEPS),
    ) {
        let mmu = SnpMmu::new(PAGES, backing);
        let b = TestBacking::new(&mmu);
        let mut model = Model::new(PAGES, backing);
        for (i, op) in ops.iter().enumerate() {
            let r = step(&mmu, &b, &mut model, op)
                .and_then(|()| check_invariants(&mmu, &b))
                .and_then(|()| check_model(&mmu, &b, &model));
            prop_assert!(r.is_ok(), "step {i} {op:?}: {}", r.unwrap_err());
        }
    }
}

// ----- targeted cases ---------------------------------------------------------------------------

fn fresh(pages: u64, backing: Level) -> SnpMmu {
    SnpMmu::new(pages, backing)
}

#[test]
fn a_fault_that_raced_an_invalidation_retries() {
    let mmu = fresh(PAGES, Level::L1G);
    let b = TestBacking::new(&mmu);
    let t = mmu.fault_begin(600, Kind::Private).expect("plan");
    // The guest makes the page shared while the fault resolved its backing.
    mmu.set_attributes(&b, 600, 1, Kind::Shared)
        .expect("convert");
    assert_eq!(mmu.fault_finish(&b, t), Ok(None), "must retry");
    assert_eq!(mmu.stats().fault_retries, 1);
    assert!(mmu.inspect(|_, tdp, _| tdp.lookup(600).is_none()));
    // Started over, the fault sees the new attribute.
    assert_eq!(mmu.fault(&b, 600, Kind::Private), Ok(Fault::Mismatch));
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn without_the_race_check_a_stale_mapping_is_installed() {
    // Shows the check above is what keeps the TDP fresh: with it off, the same
    // interleaving installs a private mapping over a shared page, and the invariant
    // check catches it.
    let mmu = fresh(PAGES, Level::L1G);
    mmu.lock().check_stale = false;
    let b = TestBacking::new(&mmu);
    let t = mmu.fault_begin(600, Kind::Private).expect("plan");
    mmu.set_attributes(&b, 600, 1, Kind::Shared)
        .expect("convert");
    assert!(matches!(
        mmu.fault_finish(&b, t),
        Ok(Some(Fault::Mapped(_)))
    ));
    let err = check_invariants(&mmu, &b).expect_err("stale mapping");
    assert!(err.contains("stale"), "{err}");
}

#[test]
fn a_psmash_invalidates_a_planned_2m_fault() {
    let mmu = fresh(PAGES, Level::L1G);
    let b = TestBacking::new(&mmu);
    assert!(matches!(
        mmu.fault(&b, 512, Kind::Private),
        Ok(Fault::Mapped(Mapping {
            level: Level::L2M,
            ..
        }))
    ));
    mmu.invalidate(&b, 512, 1).expect("zap");
    let t = mmu.fault_begin(700, Kind::Private).expect("plan");
    mmu.psmash(&b, 512).expect("backing").expect("psmash");
    assert_eq!(mmu.fault_finish(&b, t), Ok(None));
    assert!(matches!(
        mmu.fault(&b, 700, Kind::Private),
        Ok(Fault::Mapped(Mapping {
            level: Level::L4K,
            ..
        }))
    ));
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn four_k_pvalidate_in_a_2m_entry_psmashes_and_keeps_the_rest() {
    let mmu = fresh(PAGES, Level::L1G);
    let b = TestBacking::new(&mmu);
    assert_eq!(
        mmu.pvalidate(&b, 1024, RmpPageSize::Size2M, true),
        Ok(GuestRmpResult::Done { changed: true })
    );
    assert_eq!(mmu.stats().maps_2m, 1);
    // Rescind one page at 4 KiB: PSMASH, zap, refault at 4 KiB; the other 511 pages stay
    // validated.
    assert_eq!(
        mmu.pvalidate(&b, 1030, RmpPageSize::Size4K, false),
        Ok(GuestRmpResult::Done { changed: true })
    );
    let s = mmu.stats();
    assert_eq!((s.psmash, s.maps_4k), (1, 1), "{s:?}");
    for p in 1024..1536 {
        let e = mmu.rmp_entry(p).expect("in RAM");
        assert_eq!(e.size, RmpPageSize::Size4K);
        assert_eq!(e.validated, p != 1030, "page {p}");
    }
    // A 2 MiB PVALIDATE over the 4 KiB entries is a size mismatch.
    assert_eq!(
        mmu.pvalidate(&b, 1024, RmpPageSize::Size2M, true),
        Ok(GuestRmpResult::Fail(RmpError::FailSizeMismatch))
    );
    check_invariants(&mmu, &b).expect("invariants");
}

#[test]
fn shared_memory_maps_at_1g_and_a_conversion_inside_zaps_it() {
    let pages = Level::L1G.pages() + 512;
    let mmu = fresh(pages, Level::L1G);
    let b = TestBacking::new(&mmu);
    mmu.set_attributes(&b, 0, Level::L1G.pages(), Kind::Shared)
        .expect("convert");
    let m = match mmu.fault(&b, 1000, Kind::Shared) {
        Ok(Fault::Mapped(m)) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!((m.base, m.level), (0, Level::L1G));
    assert_eq!(mmu.reachable(262_000), (false, true));
    // A private access inside converts one page and zaps the whole 1 GiB mapping.
    assert_eq!(
        mmu.access(&b, 5, Kind::Private, false),
        Ok(Access::Violation(rule::NOT_VALIDATED))
    );
    assert_eq!(mmu.stats().implicit_conversions, 1);
    assert!(mmu.inspect(|_, tdp, _| tdp.count(Level::L1G) == 0));
    // Refaults: the first 2 MiB region is mixed now, so 4 KiB; the next one 2 MiB.
    assert!(matches!(
        mmu.fault(&b, 6, Kind::Shared),
        Ok(Fault::Mapped(Mapping {
            level: Level::L4K,
            ..
        }))
    ));
    assert!(matches!(
        mmu.fault(&b, 600, Kind::Shared),
        Ok(Fault::Mapped(Mapping {
            level: Level::L2M,
            ..
        }))
    ));
    mmu.inspect(|a, t, r| check_tdp(a, t, r, Level::L1G))
        .expect("invariants");
}

#[test]
fn the_backing_caps_the_level() {
    for (backing, want) in [(Level::L2M, Level::L2M), (Level::L4K, Level::L4K)] {
        let mmu = fresh(Level::L1G.pages(), backing);
        let b = TestBacking::new(&mmu);
        mmu.set_attributes(&b, 0, Level::L1G.pages(), Kind::Shared)
            .expect("convert");
        match mmu.fault(&b, 7, Kind::Shared) {
            Ok(Fault::Mapped(m)) => assert_eq!(m.level, want),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn strict_mode_names_the_wrong_view() {
    let mmu = fresh(PAGES, Level::L1G);
    let b = TestBacking::new(&mmu);
    assert_eq!(
        mmu.access(&b, 3, Kind::Shared, true),
        Ok(Access::Violation(rule::SHARED_TO_PRIVATE))
    );
    mmu.set_attributes(&b, 3, 1, Kind::Shared).expect("convert");
    assert_eq!(
        mmu.access(&b, 3, Kind::Private, true),
        Ok(Access::Violation(rule::PRIVATE_TO_SHARED))
    );
    assert_eq!(mmu.stats().implicit_conversions, 0);
}

// ----- threads ------------------------------------------------------------------------------------

/// A backing for threads: views behind a mutex; discards checked against the RMP.
struct SyncBacking<'a> {
    mmu: &'a SnpMmu,
    bad_discards: AtomicU64,
}

impl Backing for SyncBacking<'_> {
    type Error = ();

    fn set_access(&self, _: Kind, _: u64, _: u64, _: bool) -> Result<(), ()> {
        Ok(())
    }

    fn discard(&self, gfn: u64, pages: u64) -> Result<(), ()> {
        let bad = self.mmu.inspect(|_, _, rmp| {
            (gfn..gfn + pages)
                .filter(|&p| rmp.entry(p).is_some_and(|e| e.assigned))
                .count() as u64
        });
        self.bad_discards.fetch_add(bad, Ordering::Relaxed);
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

/// Two vCPU threads fault (holding each fault open across a yield, as KVM does while it
/// resolves the backing) while a third converts, invalidates and reclaims the same
/// range and a fourth checks the TDP under the lock. Returns the first stale mapping
/// seen, if any, and the number of retries.
fn race(check_stale: bool, rounds: u64) -> (Option<String>, u64) {
    let pages = 4 * 512;
    let mmu = SnpMmu::new(pages, Level::L1G);
    mmu.lock().check_stale = check_stale;
    let b = SyncBacking {
        mmu: &mmu,
        bad_discards: AtomicU64::new(0),
    };
    let done = AtomicBool::new(false);
    let found: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for seed in [0x9E37_79B9_7F4A_7C15_u64, 0xD1B5_4A32_D192_ED03] {
            let (mmu, b, done) = (&mmu, &b, &done);
            s.spawn(move || {
                let mut x = seed;
                while !done.load(Ordering::Relaxed) {
                    let g = next(&mut x) % pages;
                    let kind = kind_of(!next(&mut x).is_multiple_of(3));
                    while let Ok(t) = mmu.fault_begin(g, kind) {
                        std::thread::yield_now();
                        if mmu.fault_finish(b, t).expect("backing").is_some() {
                            break;
                        }
                    }
                }
            });
        }
        let (mmu_c, found_c, done_c) = (&mmu, &found, &done);
        s.spawn(move || {
            while !done_c.load(Ordering::Relaxed) {
                let r = mmu_c.inspect(|a, t, r| check_tdp(a, t, r, Level::L1G));
                if let Err(e) = r {
                    *found_c.lock().expect("lock") = Some(e);
                    done_c.store(true, Ordering::Relaxed);
                }
                std::thread::yield_now();
            }
        });
        let mut x = 0x2545_F491_4F6C_DD1D_u64;
        for _ in 0..rounds {
            if done.load(Ordering::Relaxed) {
                break;
            }
            let g = next(&mut x) % pages;
            let n = [1, 7, 512, 1024][(next(&mut x) % 4) as usize];
            match next(&mut x) % 8 {
                0 => {
                    mmu.invalidate(&b, g, n).expect("backing");
                }
                1 => {
                    mmu.reclaim(&b, g, n).expect("backing");
                }
                2 => {
                    let _ = mmu.pvalidate(&b, g, RmpPageSize::Size4K, true);
                }
                k => {
                    let kind = kind_of(k % 2 == 0);
                    let _ = mmu.set_attributes(&b, g, n.min(pages - g), kind);
                }
            }
            std::thread::yield_now();
        }
        done.store(true, Ordering::Relaxed);
    });
    if check_stale {
        // With the race check off a stale fault may assign a page while it is being
        // discarded: that is what the other test shows, so only the checked MMU must
        // never discard an assigned page.
        assert_eq!(b.bad_discards.load(Ordering::Relaxed), 0);
    }
    let last = mmu.inspect(|a, t, r| check_tdp(a, t, r, Level::L1G)).err();
    let found = found.into_inner().expect("lock").or(last);
    (found, mmu.stats().fault_retries)
}

#[test]
fn racing_faults_and_invalidations_leave_no_stale_mapping() {
    let (stale, retries) = race(true, 20_000);
    assert_eq!(stale, None);
    assert!(retries > 0, "the race was never exercised");
}

#[test]
fn the_threaded_test_detects_stale_mappings_without_the_race_check() {
    let (stale, _) = race(false, 200_000);
    assert!(stale.is_some(), "no stale mapping seen with the check off");
}
