//! The host hypervisor MMU: what KVM keeps for a confidential guest (per-GFN
//! attributes, the TDP, and the link to the hardware's own table: the RMP on SEV-SNP,
//! the Secure EPT on TDX), kept in sync by the rules of docs/design.md ("The rules
//! the host MMU keeps"). Pure logic with no KVM dependency.
//!
//! - [`attributes`] and [`tdp`] are common to both;
//! - [`snp::SnpMmu`] syncs them with the (emulated) RMP;
//! - [`tdx::TdxMmu`] keeps the private mappings in a mirror table changed together with
//!   the (emulated) TDX module's Secure EPT.
//!
//! Generic code reaches either through [`HypervisorMmu`]; a guest access that found
//! its view closed is resolved by one function, `exits::memory::resolve`.
//!
//! Where the TDP takes effect is the [`Backing`]: on the emulated platforms it is the
//! protection of the two views of guest RAM, so a page is reachable through a view
//! exactly when the MMU says so. Everything the guest can touch is therefore decided
//! here.

pub mod attributes;
pub mod snp;
pub mod tdp;
pub mod tdx;

use crate::vmm::memory::{GuestMemory, MemoryError};
use attributes::Kind;

/// Where TDP mappings take effect and where discarded memory goes.
pub trait Backing {
    /// Error of the backing's operations.
    type Error;
    /// Make `[gfn, gfn + pages)` reachable (`true`) or not through the `kind` view.
    fn set_access(&self, kind: Kind, gfn: u64, pages: u64, on: bool) -> Result<(), Self::Error>;
    /// Return `[gfn, gfn + pages)` to the host: afterwards it reads as zeros.
    fn discard(&self, gfn: u64, pages: u64) -> Result<(), Self::Error>;
    /// Zero `[gfn, gfn + pages)` as it is assigned to the guest for the first time:
    /// guest_memfd clears a folio before its first use (`virt/kvm/guest_memfd.c`), so
    /// a freshly prepared private page never shows what the host left there. Called
    /// with the MMU lock held.
    fn zero_fresh(&self, gfn: u64, pages: u64) -> Result<(), Self::Error>;
}

/// Outcome of a guest access that found its view closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The page is reachable now; the caller completes the access.
    Ok {
        /// The access first converted the page (implicit conversion).
        converted: bool,
    },
    /// The access breaks a rule; the guest is stopped.
    Violation(&'static str),
}

/// KVM's invalidation protocol (`mmu_invalidate_seq`, `mmu_invalidate_in_progress`
/// and the range under invalidation), shared by the SNP and the TDX MMU: every
/// invalidation is bracketed by [`Invalidations::begin`] and [`Invalidations::end`],
/// and a fault planned at sequence number `seq` checks [`Invalidations::stale`] before
/// it installs anything.
#[derive(Debug, Default)]
pub(crate) struct Invalidations {
    /// Bumped at the end of every invalidation.
    pub(crate) seq: u64,
    /// Invalidations in progress.
    in_progress: u64,
    /// The union of their ranges, `[start, end)` in GFNs.
    range: (u64, u64),
}

impl Invalidations {
    /// An invalidation of `[gfn, gfn + n)` starts.
    pub(crate) fn begin(&mut self, gfn: u64, n: u64) {
        let end = gfn.saturating_add(n);
        self.range = if self.in_progress == 0 {
            (gfn, end)
        } else {
            (self.range.0.min(gfn), self.range.1.max(end))
        };
        self.in_progress += 1;
    }

    /// One invalidation ends.
    pub(crate) fn end(&mut self) {
        self.seq += 1;
        self.in_progress = self.in_progress.saturating_sub(1);
    }

    /// Whether an invalidation in flight covers any page of `[base, base + pages)`.
    pub(crate) fn in_flight_over(&self, base: u64, pages: u64) -> bool {
        self.in_progress > 0 && base < self.range.1 && self.range.0 < base.saturating_add(pages)
    }

    /// `mmu_invalidate_retry_gfn`, over the whole mapping `[base, base + pages)` a fault
    /// planned at `seq` is about to install (not only the faulting page: a 2 MiB
    /// mapping covers its neighbours): an invalidation is in flight over it, or one
    /// finished since the fault was planned.
    pub(crate) fn stale(&self, base: u64, pages: u64, seq: u64) -> bool {
        self.in_flight_over(base, pages) || self.seq != seq
    }
}

/// Rule texts for violations, shared with the platform's messages.
pub mod rule {
    /// Outside guest RAM.
    pub const OUT_OF_RANGE: &str = "the address is outside guest RAM";
    /// Private access, attribute shared, `--strict-memory`.
    pub const PRIVATE_TO_SHARED: &str =
        "private access to a page that is not assigned to the guest (it is shared)";
    /// Shared access, attribute private, `--strict-memory`.
    pub const SHARED_TO_PRIVATE: &str = "shared access to a page that is private to the guest";
    /// Private access, RMP entry assigned but not validated.
    pub const NOT_VALIDATED: &str = "private access to a page the guest never validated";
    /// Shared access to a page the RMP shows assigned.
    pub const SHARED_ASSIGNED: &str = "shared access to a page that is assigned to the guest";
}

/// What generic code asks of a hypervisor MMU, whichever hardware table it keeps in
/// sync. Implemented by [`snp::SnpMmu`] and [`tdx::TdxMmu`] over guest RAM.
pub trait HypervisorMmu: Send + Sync + std::fmt::Debug {
    /// Number of 4 KiB pages of guest RAM.
    fn pages(&self) -> u64;

    /// A guest access of `kind` to `gfn` that found its view closed (a nested page
    /// fault, an EPT violation): map it, convert it (an implicit conversion, as a VMM
    /// does on `KVM_EXIT_MEMORY_FAULT`) or, with `strict`, name the rule it breaks.
    fn access(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        kind: Kind,
        strict: bool,
    ) -> Result<Access, MemoryError>;

    /// Change the attributes of `[gfn, gfn + n)` to `kind`, as
    /// `KVM_SET_MEMORY_ATTRIBUTES` after a page-state change or MapGPA: zap, update,
    /// discard the converted pages. `Ok(None)` if the range leaves guest RAM; else the
    /// number of pages converted.
    fn convert(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        n: u64,
        kind: Kind,
    ) -> Result<Option<u64>, MemoryError>;

    /// Whether the host may treat `[gfn, gfn + n)` as memory shared with the guest.
    fn is_shared(&self, gfn: u64, n: u64) -> bool;

    /// Whether the guest can reach `gfn` through the private and the shared view now.
    fn reachable(&self, gfn: u64) -> (bool, bool);

    /// Count an implicit conversion made by the caller through
    /// [`HypervisorMmu::convert`] (one resolved outside [`HypervisorMmu::access`]).
    fn count_implicit_conversion(&self);

    /// The MMU's counters with their dotted keys (`tdp.*`, `memory.*`, and those of
    /// the hardware table it keeps in sync).
    fn counters(&self) -> Vec<(&'static str, u64)>;
}
