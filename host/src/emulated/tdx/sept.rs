//! The emulated TDX module's Secure EPT (S-EPT): per 4 KiB page, with 2 MiB leaves.
//!
//! On TDX hardware the S-EPT lives inside the TDX module and the host changes it only
//! through SEAMCALLs; the guest changes it only through TDG.MEM.PAGE.ACCEPT. This type
//! plays the module for the emulated platform: every operation takes the architectural
//! operands (a GFN standing for the GPA, a level) and answers with the architectural
//! completion status, in RAX form (class in bits 63:32, details in bits 31:0).
//!
//! Leaf states (Intel TDX Module ABI specification, "Secure EPT Entry States"; the TDX
//! module source `src/memory_handlers/sept_manager.h`):
//! - FREE: no leaf;
//! - PENDING: added by TDH.MEM.PAGE.AUG, not yet accepted by the guest;
//! - MAPPED: accepted by the guest (TDG.MEM.PAGE.ACCEPT), or added before the TD ran by
//!   TDH.MEM.PAGE.ADD;
//! - BLOCKED / PENDING_BLOCKED: after TDH.MEM.RANGE.BLOCK, the only states from which
//!   TDH.MEM.PAGE.REMOVE (back to FREE) and TDH.MEM.PAGE.DEMOTE are allowed.
//!
//! A 2 MiB region is FREE, one 2 MiB leaf, or a 4 KiB page table (linked by
//! TDH.MEM.SEPT.ADD, or left by a DEMOTE) whose 512 entries each have a state. As in
//! KVM, page tables are never removed while the TD runs and 4 KiB leaves are never
//! promoted back to 2 MiB (no TDH.MEM.PAGE.PROMOTE).
//!
//! The module's own locking is one mutex. A host SEAMCALL or a guest ACCEPT that finds
//! it held answers TDX_OPERAND_BUSY, as the module does when an S-EPT entry is locked by
//! another logical processor; the caller retries.

use crate::mmu::tdp::Level;
use nacre_shared_abi::tdx::AcceptLevel;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Completion statuses (RAX) of the S-EPT SEAMCALLs and of TDG.MEM.PAGE.ACCEPT.
///
/// Classes in bits 63:32 are Linux `arch/x86/include/asm/tdx_errno.h` (formerly
/// `arch/x86/kvm/vmx/tdx_errno.h`) where Linux defines them, else the TDX module source
/// `src/include/auto_gen/tdx_error_codes_defs.h`. Bits 31:0 carry the operand id or,
/// for the ACCEPT answers, the S-EPT level at which the walk stopped.
pub mod status {
    pub use nacre_shared_abi::tdx::status::{
        class, is_error, CLASS_OPERAND_BUSY, CLASS_OPERAND_INVALID, OPERAND_BUSY, OPERAND_INVALID,
        PAGE_ALREADY_ACCEPTED, PAGE_SIZE_MISMATCH, SUCCESS,
    };

    /// TDX_OPERAND_ID_RCX: the operand id of RCX, ORed into bits 31:0 (Linux
    /// `tdx_errno.h`).
    pub const OPERAND_ID_RCX: u64 = 0x01;
    /// TDX_EPT_WALK_FAILED: the S-EPT walk stopped above the requested level (a
    /// missing page table, or a larger leaf in the way) (Linux `tdx_errno.h`).
    pub const EPT_WALK_FAILED: u64 = 0xC000_0B00_0000_0000;
    /// TDX_EPT_ENTRY_NOT_FREE: TDH.MEM.PAGE.AUG/ADD or TDH.MEM.SEPT.ADD over an entry in
    /// use (Linux `arch/x86/kvm/vmx/tdx_errno.h`).
    pub const EPT_ENTRY_NOT_FREE: u64 = 0xC000_0B02_0000_0000;
    /// TDX_GPA_RANGE_NOT_BLOCKED: TDH.MEM.PAGE.REMOVE or DEMOTE of a leaf that was not
    /// blocked first (TDX module `tdx_error_codes_defs.h`).
    pub const GPA_RANGE_NOT_BLOCKED: u64 = 0xC000_0B06_0000_0000;
    /// TDX_GPA_RANGE_ALREADY_BLOCKED: TDH.MEM.RANGE.BLOCK of a blocked leaf; a warning
    /// (bit 63 clear) (TDX module `tdx_error_codes_defs.h`).
    pub const GPA_RANGE_ALREADY_BLOCKED: u64 = 0x0000_0B07_0000_0000;
    /// TDX_EPT_ENTRY_STATE_INCORRECT: the entry at the requested level is in a state
    /// the operation does not allow, e.g. FREE (Linux `tdx_errno.h`).
    pub const EPT_ENTRY_STATE_INCORRECT: u64 = 0xC000_0B0D_0000_0000;

    /// Whether `s` is TDX_OPERAND_BUSY (any operand): retry.
    pub const fn is_busy(s: u64) -> bool {
        class(s) == CLASS_OPERAND_BUSY
    }
}

use status::{
    EPT_ENTRY_NOT_FREE, EPT_ENTRY_STATE_INCORRECT, EPT_WALK_FAILED, GPA_RANGE_ALREADY_BLOCKED,
    GPA_RANGE_NOT_BLOCKED, OPERAND_BUSY, OPERAND_ID_RCX, OPERAND_INVALID, PAGE_ALREADY_ACCEPTED,
    PAGE_SIZE_MISMATCH, SUCCESS,
};

/// 4 KiB pages in a 2 MiB region.
const PAGES_2M: u64 = 512;

/// The S-EPT level at which an ACCEPT walk stopped, as the module reports it in bits
/// 31:0 of TDX_PAGE_ALREADY_ACCEPTED and TDX_PAGE_SIZE_MISMATCH (0 = 4 KiB, 1 = 2 MiB).
const WALK_LEVEL_4K: u64 = 0;
const WALK_LEVEL_2M: u64 = 1;

/// The state of one S-EPT leaf (or FREE: no leaf).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeptState {
    /// No leaf.
    Free,
    /// Added by TDH.MEM.PAGE.AUG; the guest has not accepted it. Not guest-accessible.
    Pending,
    /// Accepted by the guest, or added at launch by TDH.MEM.PAGE.ADD. Guest-accessible.
    Mapped,
    /// A MAPPED leaf after TDH.MEM.RANGE.BLOCK.
    Blocked,
    /// A PENDING leaf after TDH.MEM.RANGE.BLOCK.
    PendingBlocked,
}

impl SeptState {
    /// The state after TDH.MEM.RANGE.BLOCK, `None` if BLOCK does not apply (FREE).
    fn blocked(self) -> Option<Self> {
        match self {
            Self::Mapped | Self::Blocked => Some(Self::Blocked),
            Self::Pending | Self::PendingBlocked => Some(Self::PendingBlocked),
            Self::Free => None,
        }
    }

    /// The state before TDH.MEM.RANGE.BLOCK (what DEMOTE leaves in the small entries).
    fn unblocked(self) -> Self {
        match self {
            Self::Blocked => Self::Mapped,
            Self::PendingBlocked => Self::Pending,
            s => s,
        }
    }

    /// BLOCKED or PENDING_BLOCKED.
    pub fn is_blocked(self) -> bool {
        matches!(self, Self::Blocked | Self::PendingBlocked)
    }
}

/// What the S-EPT holds for one 2 MiB region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeptRegion {
    /// Nothing: no leaf and no page table.
    Free,
    /// A 4 KiB page table: the state of each page is its own.
    Table,
    /// One 2 MiB leaf in this state (never [`SeptState::Free`]).
    Leaf(SeptState),
}

/// Answer of the emulated TDG.MEM.PAGE.ACCEPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The PENDING leaf is MAPPED now; the module zeroed its pages (RAX = TDX_SUCCESS).
    Accepted {
        /// First GFN of the accepted leaf.
        gfn: u64,
        /// Pages in it (1 or 512).
        pages: u64,
    },
    /// RAX for the guest, nothing changed: TDX_PAGE_ALREADY_ACCEPTED (a warning),
    /// TDX_PAGE_SIZE_MISMATCH, TDX_OPERAND_INVALID or TDX_OPERAND_BUSY.
    Status(u64),
    /// No acceptable leaf at the requested level (FREE, blocked, or a larger PENDING
    /// leaf): the TD exits with an EPT violation on the private GPA carrying the accept
    /// level, which the host resolves (TDH.MEM.PAGE.AUG or DEMOTE); the guest retries.
    /// TDX module `tdg_mem_page_accept.c`, the "violation" cases.
    NeedsFault,
}

/// Counters of the emulated module's operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeptStats {
    /// Successful TDH.MEM.PAGE.ADD (launch pages).
    pub page_add: u64,
    /// Successful TDH.MEM.SEPT.ADD (4 KiB page tables linked).
    pub sept_add: u64,
    /// Successful TDH.MEM.PAGE.AUG calls (either size).
    pub aug: u64,
    /// Successful TDH.MEM.RANGE.BLOCK calls.
    pub block: u64,
    /// Successful TDH.MEM.PAGE.DEMOTE calls.
    pub demote: u64,
    /// 4 KiB pages returned to FREE by TDH.MEM.PAGE.REMOVE.
    pub remove_pages: u64,
    /// Successful 4 KiB accepts.
    pub accept_4k: u64,
    /// Successful 2 MiB accepts.
    pub accept_2m: u64,
    /// Accepts answered TDX_PAGE_ALREADY_ACCEPTED.
    pub accept_already: u64,
    /// Accepts answered TDX_PAGE_SIZE_MISMATCH.
    pub accept_size_mismatch: u64,
}

#[derive(Debug)]
struct Inner {
    pages: u64,
    regions: Vec<SeptRegion>,
    /// Per 4 KiB page; not FREE only under a [`SeptRegion::Table`].
    small: Vec<SeptState>,
    stats: SeptStats,
}

/// The emulated TDX module's S-EPT of one TD.
#[derive(Debug)]
pub struct Sept {
    inner: Mutex<Inner>,
    /// TDX_OPERAND_BUSY answers given (host and guest).
    busy: AtomicU64,
}

fn idx(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

impl Inner {
    fn region(&self, gfn: u64) -> SeptRegion {
        self.regions
            .get(idx(gfn / PAGES_2M))
            .copied()
            .unwrap_or(SeptRegion::Free)
    }

    fn set_region(&mut self, gfn: u64, r: SeptRegion) {
        if let Some(e) = self.regions.get_mut(idx(gfn / PAGES_2M)) {
            *e = r;
        }
    }

    fn small(&self, gfn: u64) -> SeptState {
        self.small.get(idx(gfn)).copied().unwrap_or(SeptState::Free)
    }

    fn set_small(&mut self, gfn: u64, s: SeptState) {
        if let Some(e) = self.small.get_mut(idx(gfn)) {
            *e = s;
        }
    }

    /// The leaf covering `gfn` and its level.
    fn leaf(&self, gfn: u64) -> Option<(Level, SeptState)> {
        match self.region(gfn) {
            SeptRegion::Leaf(s) => Some((Level::L2M, s)),
            SeptRegion::Table => match self.small(gfn) {
                SeptState::Free => None,
                s => Some((Level::L4K, s)),
            },
            SeptRegion::Free => None,
        }
    }

    /// Operand check of a host SEAMCALL on `gfn` at `level`: 4 KiB or 2 MiB, aligned,
    /// and (for 2 MiB) the whole region inside the TD's memory.
    fn operand(&self, gfn: u64, level: Level) -> Result<(), u64> {
        let ok = match level {
            Level::L4K => gfn < self.pages,
            Level::L2M => gfn.is_multiple_of(PAGES_2M) && gfn + PAGES_2M <= self.pages,
            Level::L1G => false,
        };
        if ok {
            Ok(())
        } else {
            Err(OPERAND_INVALID | OPERAND_ID_RCX)
        }
    }

    /// The current state of the leaf at exactly `level`, or the status of a walk that
    /// cannot reach it.
    fn leaf_at(&self, gfn: u64, level: Level) -> Result<SeptState, u64> {
        match (level, self.region(gfn)) {
            (Level::L2M, SeptRegion::Leaf(s)) => Ok(s),
            (Level::L2M, _) => Err(EPT_ENTRY_STATE_INCORRECT | OPERAND_ID_RCX),
            (_, SeptRegion::Table) => Ok(self.small(gfn)),
            (_, _) => Err(EPT_WALK_FAILED | OPERAND_ID_RCX),
        }
    }

    fn set_leaf(&mut self, gfn: u64, level: Level, s: SeptState) {
        match level {
            Level::L4K => self.set_small(gfn, s),
            _ => self.set_region(
                gfn,
                if s == SeptState::Free {
                    SeptRegion::Free
                } else {
                    SeptRegion::Leaf(s)
                },
            ),
        }
    }
}

impl Sept {
    /// An empty S-EPT over `pages` 4 KiB pages of TD memory.
    pub fn new(pages: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                pages,
                regions: vec![SeptRegion::Free; idx(pages.div_ceil(PAGES_2M))],
                small: vec![SeptState::Free; idx(pages)],
                stats: SeptStats::default(),
            }),
            busy: AtomicU64::new(0),
        }
    }

    /// The module's lock as a SEAMCALL or TDCALL takes it: held elsewhere is
    /// TDX_OPERAND_BUSY.
    fn try_enter(&self) -> Result<MutexGuard<'_, Inner>, u64> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                self.busy.fetch_add(1, Ordering::Relaxed);
                Err(OPERAND_BUSY | OPERAND_ID_RCX)
            }
        }
    }

    /// The lock for the host's own reads (diagnostics, view sync): waits.
    fn peek(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call(&self, f: impl FnOnce(&mut Inner) -> Result<(), u64>) -> u64 {
        match self.try_enter() {
            Ok(mut g) => match f(&mut g) {
                Ok(()) => SUCCESS,
                Err(s) => s,
            },
            Err(s) => s,
        }
    }

    /// TDH.MEM.SEPT.ADD: link a 4 KiB page table under the FREE 2 MiB entry of the
    /// region starting at `head`.
    #[must_use]
    pub fn sept_add(&self, head: u64) -> u64 {
        self.call(|s| {
            if !head.is_multiple_of(PAGES_2M) || head >= s.pages {
                return Err(OPERAND_INVALID | OPERAND_ID_RCX);
            }
            if s.region(head) != SeptRegion::Free {
                return Err(EPT_ENTRY_NOT_FREE | OPERAND_ID_RCX);
            }
            s.set_region(head, SeptRegion::Table);
            s.stats.sept_add += 1;
            Ok(())
        })
    }

    /// TDH.MEM.PAGE.ADD: add a measured 4 KiB page before the TD runs, straight to
    /// MAPPED. Needs the page table.
    #[must_use]
    pub fn page_add(&self, gfn: u64) -> u64 {
        self.call(|s| {
            s.operand(gfn, Level::L4K)?;
            if s.leaf_at(gfn, Level::L4K)? != SeptState::Free {
                return Err(EPT_ENTRY_NOT_FREE | OPERAND_ID_RCX);
            }
            s.set_small(gfn, SeptState::Mapped);
            s.stats.page_add += 1;
            Ok(())
        })
    }

    /// TDH.MEM.PAGE.AUG: add a FREE page (4 KiB, under a page table) or region (2 MiB,
    /// no page table) as PENDING.
    #[must_use]
    pub fn page_aug(&self, gfn: u64, level: Level) -> u64 {
        self.call(|s| {
            s.operand(gfn, level)?;
            let free = match level {
                Level::L4K => s.leaf_at(gfn, level)? == SeptState::Free,
                _ => s.region(gfn) == SeptRegion::Free,
            };
            if !free {
                return Err(EPT_ENTRY_NOT_FREE | OPERAND_ID_RCX);
            }
            s.set_leaf(gfn, level, SeptState::Pending);
            s.stats.aug += 1;
            Ok(())
        })
    }

    /// TDH.MEM.RANGE.BLOCK of the leaf at `gfn` and `level`: MAPPED to BLOCKED, PENDING
    /// to PENDING_BLOCKED; TDX_GPA_RANGE_ALREADY_BLOCKED (a warning) if it is blocked.
    #[must_use]
    pub fn range_block(&self, gfn: u64, level: Level) -> u64 {
        self.call(|s| {
            s.operand(gfn, level)?;
            let cur = s.leaf_at(gfn, level)?;
            if cur.is_blocked() {
                return Err(GPA_RANGE_ALREADY_BLOCKED | OPERAND_ID_RCX);
            }
            let next = cur
                .blocked()
                .ok_or(EPT_ENTRY_STATE_INCORRECT | OPERAND_ID_RCX)?;
            s.set_leaf(gfn, level, next);
            s.stats.block += 1;
            Ok(())
        })
    }

    /// TDH.MEM.PAGE.DEMOTE of the blocked 2 MiB leaf at `head`: it becomes a page table
    /// of 512 4 KiB leaves in the leaf's state before BLOCK (the module unblocks them).
    #[must_use]
    pub fn page_demote(&self, head: u64) -> u64 {
        self.call(|s| {
            s.operand(head, Level::L2M)?;
            let cur = s.leaf_at(head, Level::L2M)?;
            if !cur.is_blocked() {
                return Err(GPA_RANGE_NOT_BLOCKED | OPERAND_ID_RCX);
            }
            s.set_region(head, SeptRegion::Table);
            for p in head..head + PAGES_2M {
                s.set_small(p, cur.unblocked());
            }
            s.stats.demote += 1;
            Ok(())
        })
    }

    /// TDH.MEM.PAGE.REMOVE of the blocked leaf at `gfn` and `level`: back to FREE.
    #[must_use]
    pub fn page_remove(&self, gfn: u64, level: Level) -> u64 {
        self.call(|s| {
            s.operand(gfn, level)?;
            match s.leaf_at(gfn, level)? {
                SeptState::Free => return Err(EPT_ENTRY_STATE_INCORRECT | OPERAND_ID_RCX),
                c if !c.is_blocked() => return Err(GPA_RANGE_NOT_BLOCKED | OPERAND_ID_RCX),
                _ => {}
            }
            s.set_leaf(gfn, level, SeptState::Free);
            s.stats.remove_pages += level.pages();
            Ok(())
        })
    }

    /// TDG.MEM.PAGE.ACCEPT by the guest of the private page or region at `gfn` (the
    /// GPA's frame; the caller checked the shared bit) at `level`. Follows the walk
    /// cases of the TDX module's `tdg_mem_page_accept.c`: a guest-accessible leaf at or
    /// above the level is TDX_PAGE_ALREADY_ACCEPTED, a page table where a 2 MiB leaf
    /// was asked for is TDX_PAGE_SIZE_MISMATCH, a PENDING leaf of the requested size is
    /// accepted, anything else is an EPT violation.
    pub fn accept(&self, gfn: u64, level: AcceptLevel) -> AcceptOutcome {
        let mut s = match self.try_enter() {
            Ok(g) => g,
            Err(busy) => return AcceptOutcome::Status(busy),
        };
        let pages = match level {
            AcceptLevel::L4K => 1,
            AcceptLevel::L2M => PAGES_2M,
            // Only 4 KiB and 2 MiB are accepted (the module checks the level is PT or PD).
            AcceptLevel::L1G => return AcceptOutcome::Status(OPERAND_INVALID | OPERAND_ID_RCX),
        };
        if !gfn.is_multiple_of(pages) {
            return AcceptOutcome::Status(OPERAND_INVALID | OPERAND_ID_RCX);
        }
        if gfn >= s.pages {
            return AcceptOutcome::NeedsFault;
        }
        let region = s.region(gfn);
        let (cur, walk) = match (level, region) {
            (_, SeptRegion::Leaf(st)) => (st, WALK_LEVEL_2M),
            (AcceptLevel::L4K, SeptRegion::Table) => (s.small(gfn), WALK_LEVEL_4K),
            (_, SeptRegion::Table) => {
                s.stats.accept_size_mismatch += 1;
                return AcceptOutcome::Status(PAGE_SIZE_MISMATCH | WALK_LEVEL_2M);
            }
            (_, SeptRegion::Free) => return AcceptOutcome::NeedsFault,
        };
        let exact = (walk == WALK_LEVEL_2M) == (level == AcceptLevel::L2M);
        match cur {
            SeptState::Mapped => {
                s.stats.accept_already += 1;
                AcceptOutcome::Status(PAGE_ALREADY_ACCEPTED | walk)
            }
            SeptState::Pending if exact => {
                let first = gfn - gfn % pages;
                let lvl = if pages == 1 { Level::L4K } else { Level::L2M };
                s.set_leaf(first, lvl, SeptState::Mapped);
                if pages == 1 {
                    s.stats.accept_4k += 1;
                } else {
                    s.stats.accept_2m += 1;
                }
                AcceptOutcome::Accepted { gfn: first, pages }
            }
            _ => AcceptOutcome::NeedsFault,
        }
    }

    /// The leaf covering `gfn` (level and state), `None` if FREE.
    pub fn leaf(&self, gfn: u64) -> Option<(Level, SeptState)> {
        self.peek().leaf(gfn)
    }

    /// The leaves covering each page of `[gfn, gfn + n)` (clamped to the TD's memory),
    /// read under one lock.
    pub fn leaves(&self, gfn: u64, n: u64) -> Vec<Option<(Level, SeptState)>> {
        let s = self.peek();
        let end = gfn.saturating_add(n).min(s.pages);
        (gfn.min(end)..end).map(|p| s.leaf(p)).collect()
    }

    /// What the S-EPT holds for the 2 MiB region containing `gfn`.
    pub fn region(&self, gfn: u64) -> SeptRegion {
        self.peek().region(gfn)
    }

    /// Counters so far.
    pub fn stats(&self) -> SeptStats {
        self.peek().stats
    }

    /// TDX_OPERAND_BUSY answers given so far.
    pub fn busy_answers(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Every region and every page (for invariant checks), read under one lock.
    pub fn snapshot(&self) -> (Vec<SeptRegion>, Vec<SeptState>) {
        let s = self.peek();
        (s.regions.clone(), s.small.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RCX: u64 = OPERAND_ID_RCX;

    #[test]
    fn aug_accept_block_remove() {
        let s = Sept::new(1024);
        // No page table yet: the 4 KiB walk fails; link one, then AUG.
        assert_eq!(s.page_aug(3, Level::L4K), EPT_WALK_FAILED | RCX);
        assert_eq!(s.sept_add(0), SUCCESS);
        assert_eq!(s.sept_add(0), EPT_ENTRY_NOT_FREE | RCX);
        assert_eq!(s.page_aug(3, Level::L4K), SUCCESS);
        assert_eq!(s.page_aug(3, Level::L4K), EPT_ENTRY_NOT_FREE | RCX);
        assert_eq!(s.leaf(3), Some((Level::L4K, SeptState::Pending)));
        // A 2 MiB accept over the table is a size mismatch (walk level 1).
        assert_eq!(
            s.accept(0, AcceptLevel::L2M),
            AcceptOutcome::Status(PAGE_SIZE_MISMATCH)
        );
        assert_eq!(PAGE_SIZE_MISMATCH | WALK_LEVEL_2M, 0xC000_0B0B_0000_0001);
        assert_eq!(
            s.accept(3, AcceptLevel::L4K),
            AcceptOutcome::Accepted { gfn: 3, pages: 1 }
        );
        assert_eq!(
            s.accept(3, AcceptLevel::L4K),
            AcceptOutcome::Status(PAGE_ALREADY_ACCEPTED)
        );
        assert_eq!(s.accept(4, AcceptLevel::L4K), AcceptOutcome::NeedsFault);
        // REMOVE needs BLOCK first.
        assert_eq!(s.page_remove(3, Level::L4K), GPA_RANGE_NOT_BLOCKED | RCX);
        assert_eq!(s.range_block(3, Level::L4K), SUCCESS);
        assert_eq!(
            s.range_block(3, Level::L4K),
            GPA_RANGE_ALREADY_BLOCKED | RCX
        );
        assert!(!status::is_error(GPA_RANGE_ALREADY_BLOCKED));
        assert_eq!(s.accept(3, AcceptLevel::L4K), AcceptOutcome::NeedsFault);
        assert_eq!(s.page_remove(3, Level::L4K), SUCCESS);
        assert_eq!(
            s.page_remove(3, Level::L4K),
            EPT_ENTRY_STATE_INCORRECT | RCX
        );
        assert_eq!(s.leaf(3), None);
        let st = s.stats();
        assert_eq!((st.aug, st.block, st.remove_pages), (1, 1, 1));
        assert_eq!((st.accept_4k, st.accept_already), (1, 1));
    }

    #[test]
    fn two_mib_leaves_demote_into_their_state() {
        let s = Sept::new(1024);
        assert_eq!(s.page_aug(1, Level::L2M), OPERAND_INVALID | RCX);
        assert_eq!(s.page_aug(512, Level::L2M), SUCCESS);
        // A 4 KiB accept inside a 2 MiB PENDING leaf is an EPT violation (the host
        // splits); inside a MAPPED one it is already accepted (walk level 1).
        assert_eq!(s.accept(600, AcceptLevel::L4K), AcceptOutcome::NeedsFault);
        assert_eq!(s.page_aug(600, Level::L4K), EPT_WALK_FAILED | RCX);
        assert_eq!(s.page_demote(512), GPA_RANGE_NOT_BLOCKED | RCX);
        assert_eq!(s.range_block(512, Level::L2M), SUCCESS);
        assert_eq!(s.page_demote(512), SUCCESS);
        assert_eq!(s.region(512), SeptRegion::Table);
        assert!((512..1024).all(|p| s.leaf(p) == Some((Level::L4K, SeptState::Pending))));
        assert_eq!(
            s.accept(600, AcceptLevel::L4K),
            AcceptOutcome::Accepted { gfn: 600, pages: 1 }
        );
        // A fresh 2 MiB leaf, accepted whole, then a 4 KiB accept inside it.
        assert_eq!(s.page_aug(0, Level::L2M), SUCCESS);
        assert_eq!(
            s.accept(0, AcceptLevel::L2M),
            AcceptOutcome::Accepted { gfn: 0, pages: 512 }
        );
        assert_eq!(
            s.accept(7, AcceptLevel::L4K),
            AcceptOutcome::Status(PAGE_ALREADY_ACCEPTED | WALK_LEVEL_2M)
        );
        assert_eq!(
            s.accept(0, AcceptLevel::L1G),
            AcceptOutcome::Status(OPERAND_INVALID | RCX)
        );
        assert_eq!(s.range_block(0, Level::L4K), EPT_WALK_FAILED | RCX);
        assert_eq!(s.range_block(0, Level::L2M), SUCCESS);
        assert_eq!(s.page_remove(0, Level::L2M), SUCCESS);
        assert_eq!(s.region(0), SeptRegion::Free);
        assert_eq!(s.stats().remove_pages, 512);
    }

    #[test]
    fn a_held_module_lock_is_operand_busy() {
        let s = Sept::new(512);
        let held = s.peek();
        assert_eq!(s.sept_add(0), OPERAND_BUSY | RCX);
        assert_eq!(
            s.accept(0, AcceptLevel::L4K),
            AcceptOutcome::Status(OPERAND_BUSY | RCX)
        );
        drop(held);
        assert_eq!(s.busy_answers(), 2);
        assert!(status::is_busy(OPERAND_BUSY | RCX));
    }
}
