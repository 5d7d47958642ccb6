//! A software Reverse Map Table (RMP) for the emulated SEV-SNP platform.
//!
//! On SEV-SNP hardware every 4 KiB system page has an RMP entry saying whether it is
//! assigned to a guest, whether the guest has validated it, its page size and a few
//! more bits (SPECS.md 3.3). The emulated platform has no such table, so the host keeps
//! this one and enforces it (DESIGN.md 3.1): a page is reachable through the private
//! view only when it is assigned and validated, and through the shared view only when
//! it is not assigned.
//!
//! Simplifications, all exact for nacre's emulated platform:
//! - one guest (ASID 1), and GPA == system page index, so the RMP is indexed by GFN and
//!   the entry's GPA/ASID fields are implied;
//! - the guest runs at VMPL0 (full access); the permission masks RMPADJUST grants to
//!   VMPL1-3 are recorded per entry but not enforced, as no code runs at those levels.
//!
//! The instructions follow the architectural return codes (SPECS.md 3.1, AMD APM vol. 3
//! "RMPUPDATE", "PSMASH", "PVALIDATE"; Linux `arch/x86/virt/svm/sev.c`):
//! - RMPUPDATE writes a fresh entry, so it always clears the validated and VMSA bits;
//! - a 2 MiB RMPUPDATE over assigned 4 KiB entries, or a 4 KiB RMPUPDATE inside an
//!   assigned 2 MiB entry, fails with FAIL_OVERLAP (KVM PSMASHes first);
//! - an immutable entry cannot be updated (FAIL_PERMISSION);
//! - PSMASH splits a 2 MiB entry into 512 4 KiB entries with the same state;
//! - PVALIDATE at 2 MiB over 4 KiB entries fails with FAIL_SIZEMISMATCH, while a 4 KiB
//!   PVALIDATE inside a 2 MiB entry is a nested page fault with `PFERR_GUEST_SIZEM`
//!   that the host resolves by PSMASH and retry (KVM `sev_handle_rmp_fault`,
//!   SPECS.md 3.4).
//!
//! Storage is one byte of flags per 4 KiB page, allocated zeroed (`vec![0; n]` becomes
//! `calloc`, which the OS backs lazily), so an RMP for 4 GiB of RAM costs 1 MiB of
//! address space and nothing up front.

use nacre_shared_abi::snp::rmp::{RmpError, RmpPageSize};

/// 4 KiB pages in one 2 MiB entry.
const PAGES_PER_2M: u64 = 512;
/// [`PAGES_PER_2M`] as an index count.
const PAGES_512: usize = 512;

/// The 2 MiB-aligned GFN of the region holding `gfn`.
const fn head_of(gfn: u64) -> u64 {
    gfn & !(PAGES_PER_2M - 1)
}

/// Flag: the entry is assigned to the guest.
const ASSIGNED: u8 = 1 << 0;
/// Flag: the guest has validated the page (PVALIDATE).
const VALIDATED: u8 = 1 << 1;
/// Flag: the page lies inside a 2 MiB entry. Set on all 512 pages of the entry; the
/// other state bits of the entry live only on the 2 MiB-aligned page, the other 511
/// pages hold exactly `IN_2M` (SPECS.md 3.3: the 2 MiB-aligned entry is authoritative).
const IN_2M: u8 = 1 << 2;
/// Flag: the entry is immutable (RMPUPDATE fails with FAIL_PERMISSION).
const IMMUTABLE: u8 = 1 << 3;
/// Flag: the page is a VMSA (RMPADJUST attribute bit 16).
const VMSA: u8 = 1 << 4;

/// The state bits of an entry: what PSMASH copies into each 4 KiB entry.
const STATE: u8 = ASSIGNED | VALIDATED | IMMUTABLE;

/// One RMP entry as the RMPREAD instruction would report it (SPECS.md 3.3), for the
/// entry that governs a page: the 2 MiB entry when the page lies inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpEntry {
    /// Assigned to the guest (private); `false` means hypervisor-owned (shared).
    pub assigned: bool,
    /// Validated by the guest with PVALIDATE.
    pub validated: bool,
    /// Page size of the entry.
    pub size: RmpPageSize,
    /// Immutable: RMPUPDATE fails with FAIL_PERMISSION.
    pub immutable: bool,
    /// The page holds a VMSA.
    pub vmsa: bool,
}

/// Outcome of a PVALIDATE that did not fail architecturally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvalidateOutcome {
    /// EAX = 0. `changed == false` is rFLAGS.CF = 1: the validated bit already had the
    /// requested value (SPECS.md 3.1; Linux `PVALIDATE_FAIL_NOUPDATE`).
    Done {
        /// The validated bit changed.
        changed: bool,
    },
    /// A 4 KiB PVALIDATE hit a 2 MiB entry: on hardware a nested page fault with
    /// `PFERR_GUEST_SIZEM`, which the host resolves by [`Rmp::psmash`] on the 2 MiB
    /// region and a retry (SPECS.md 3.4). The RMP is unchanged.
    NeedsPsmash,
}

/// The software RMP covering guest RAM of [`Rmp::pages`] 4 KiB pages.
pub struct Rmp {
    /// One byte of flags per 4 KiB page, indexed by GFN.
    flags: Vec<u8>,
    /// VMPL1-3 permission masks (RMPADJUST attribute bits 8-11) of the entries that have
    /// any, keyed by the entry's GFN (the head of a 2 MiB entry). Absent = none granted.
    perms: std::collections::HashMap<u64, [u8; 3]>,
}

/// RMPADJUST attribute operand fields (SPECS.md 3.1; Linux `asm/sev.h`
/// `RMPADJUST_VMSA_PAGE_BIT`).
pub mod rmpadjust_attrs {
    /// Bits 7:0: the target VMPL.
    pub const TARGET_VMPL_MASK: u64 = 0xFF;
    /// Bits 11:8: the permission mask granted (R, W, X_user, X_super).
    pub const PERM_SHIFT: u64 = 8;
    /// Width mask of the permission field once shifted down.
    pub const PERM_MASK: u64 = 0xF;
    /// Bit 16: the page is a VMSA.
    pub const VMSA: u64 = 1 << 16;
    /// Highest VMPL.
    pub const MAX_VMPL: u64 = 3;
}

impl core::fmt::Debug for Rmp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rmp")
            .field("pages", &self.pages())
            .finish_non_exhaustive()
    }
}

/// `(private_accessible, shared_accessible)` for a governing entry's bits.
fn access_of(bits: u8) -> (bool, bool) {
    let assigned = bits & ASSIGNED != 0;
    (assigned && bits & VALIDATED != 0, !assigned)
}

impl Rmp {
    /// An RMP for `pages` 4 KiB pages, every entry hypervisor-owned (all zero), as the
    /// RMP is after `SNP_INIT` for memory not yet given to a guest.
    ///
    /// # Panics
    ///
    /// If `pages` does not fit the address space (on 64-bit hosts only when the
    /// allocation itself fails). `pages` comes from the VM configuration, never from
    /// the guest.
    pub fn new(pages: u64) -> Self {
        let n =
            usize::try_from(pages).expect("guest RAM page count fits in usize on a 64-bit host");
        Self {
            flags: vec![0u8; n],
            perms: std::collections::HashMap::new(),
        }
    }

    /// Number of 4 KiB pages covered.
    pub fn pages(&self) -> u64 {
        // usize -> u64 is lossless on every target nacre builds for.
        self.flags.len() as u64
    }

    /// The flags of the page `gfn`, if in range.
    fn flags_of(&self, gfn: u64) -> Option<u8> {
        self.flags.get(usize::try_from(gfn).ok()?).copied()
    }

    /// The flags of the page `gfn` for writing; `FailInput` if out of range.
    fn page_mut(&mut self, gfn: u64) -> Result<&mut u8, RmpError> {
        let i = usize::try_from(gfn).map_err(|_| RmpError::FailInput)?;
        self.flags.get_mut(i).ok_or(RmpError::FailInput)
    }

    /// The 512 flags of the 2 MiB region at `gfn`; `FailInput` unless `gfn` is
    /// 2 MiB-aligned and the whole region lies in guest RAM.
    fn region_mut(&mut self, gfn: u64) -> Result<&mut [u8], RmpError> {
        if !gfn.is_multiple_of(PAGES_PER_2M) {
            return Err(RmpError::FailInput);
        }
        let first = usize::try_from(gfn).map_err(|_| RmpError::FailInput)?;
        self.flags
            .get_mut(first..)
            .and_then(|tail| tail.get_mut(..PAGES_512))
            .ok_or(RmpError::FailInput)
    }

    /// The governing entry's bits for `gfn` (the 2 MiB head's when inside one).
    fn effective_bits(&self, gfn: u64) -> Option<u8> {
        let bits = self.flags_of(gfn)?;
        if bits & IN_2M == 0 {
            return Some(bits);
        }
        self.flags_of(head_of(gfn))
    }

    /// The entry governing `gfn`: the 2 MiB entry if the page lies inside one, `None`
    /// when `gfn` is outside guest RAM.
    pub fn entry(&self, gfn: u64) -> Option<RmpEntry> {
        let bits = self.effective_bits(gfn)?;
        Some(RmpEntry {
            assigned: bits & ASSIGNED != 0,
            validated: bits & VALIDATED != 0,
            size: if bits & IN_2M != 0 {
                RmpPageSize::Size2M
            } else {
                RmpPageSize::Size4K
            },
            immutable: bits & IMMUTABLE != 0,
            vmsa: bits & VMSA != 0,
        })
    }

    /// RMPUPDATE: assign (`assigned = true`) or return to the hypervisor
    /// (`assigned = false`) the 4 KiB page or 2 MiB region at `gfn`. The entry is
    /// written afresh, so the validated and VMSA bits are always cleared.
    ///
    /// Return codes as on hardware (SPECS.md 3.1, 3.2):
    /// - `FailInput`: `gfn` outside guest RAM, or a 2 MiB update whose `gfn` is not
    ///   2 MiB-aligned or whose region does not fit in guest RAM;
    /// - `FailPermission`: an affected entry is immutable;
    /// - `FailOverlap`: a 2 MiB update over 4 KiB entries of which one is assigned, or
    ///   a 4 KiB update of a page inside an assigned 2 MiB entry (the host PSMASHes
    ///   first, as KVM does).
    ///
    /// A 4 KiB update inside a hypervisor-owned 2 MiB entry first splits that entry
    /// into 512 hypervisor-owned 4 KiB entries (it carries no guest state). A 2 MiB
    /// update of an existing 2 MiB entry replaces it.
    pub fn rmpupdate(
        &mut self,
        gfn: u64,
        assigned: bool,
        size: RmpPageSize,
        immutable: bool,
    ) -> Result<(), RmpError> {
        let mut new = 0;
        if assigned {
            new |= ASSIGNED;
        }
        if immutable {
            new |= IMMUTABLE;
        }
        match size {
            RmpPageSize::Size4K => {
                let cur = self.effective_bits(gfn).ok_or(RmpError::FailInput)?;
                if cur & IMMUTABLE != 0 {
                    return Err(RmpError::FailPermission);
                }
                if cur & IN_2M != 0 {
                    if cur & ASSIGNED != 0 {
                        return Err(RmpError::FailOverlap);
                    }
                    self.region_mut(head_of(gfn))?.fill(0);
                }
                *self.page_mut(gfn)? = new;
                self.perms.remove(&gfn);
            }
            RmpPageSize::Size2M => {
                let pages = self.region_mut(gfn)?;
                let (head, tails) = pages.split_first_mut().ok_or(RmpError::FailInput)?;
                if *head & IN_2M != 0 {
                    // Replacing an existing 2 MiB entry: only its head holds state.
                    if *head & IMMUTABLE != 0 {
                        return Err(RmpError::FailPermission);
                    }
                } else {
                    let all = core::iter::once(&*head).chain(tails.iter());
                    if all.clone().any(|&b| b & IMMUTABLE != 0) {
                        return Err(RmpError::FailPermission);
                    }
                    if all.clone().any(|&b| b & ASSIGNED != 0) {
                        return Err(RmpError::FailOverlap);
                    }
                }
                *head = new | IN_2M;
                tails.fill(IN_2M);
                self.perms.retain(|&p, _| head_of(p) != gfn);
            }
        }
        Ok(())
    }

    /// PSMASH: split the 2 MiB entry at the 2 MiB-aligned `gfn` into 512 4 KiB
    /// entries, each keeping the assigned, validated and immutable state of the 2 MiB
    /// entry. `FailInput` if `gfn` is not 2 MiB-aligned, its region is outside guest
    /// RAM, or the entry is not a 2 MiB entry (hardware: FAIL_INPUT).
    pub fn psmash(&mut self, gfn: u64) -> Result<(), RmpError> {
        let pages = self.region_mut(gfn)?;
        let head = pages.first().copied().ok_or(RmpError::FailInput)?;
        if head & IN_2M == 0 {
            return Err(RmpError::FailInput);
        }
        pages.fill(head & STATE);
        if let Some(p) = self.perms.get(&gfn).copied() {
            for g in gfn + 1..gfn + PAGES_PER_2M {
                self.perms.insert(g, p);
            }
        }
        Ok(())
    }

    /// PVALIDATE as the guest issues it (SPECS.md 3.1): set (`validate = true`) or
    /// rescind the validated bit of the page or 2 MiB region at `gfn`.
    ///
    /// - `Ok(Done { changed })`: success; `changed == false` is the CF = 1 case;
    /// - `Ok(NeedsPsmash)`: a 4 KiB request inside an assigned 2 MiB entry; the caller
    ///   PSMASHes the region and retries (SPECS.md 3.4);
    /// - `Err(FailInput)`: `gfn` outside guest RAM, an unaligned or out-of-range 2 MiB
    ///   request, or the entry is not assigned to the guest;
    /// - `Err(FailSizeMismatch)`: a 2 MiB request over 4 KiB entries (the guest falls
    ///   back to 512 4 KiB requests).
    pub fn pvalidate(
        &mut self,
        gfn: u64,
        size: RmpPageSize,
        validate: bool,
    ) -> Result<PvalidateOutcome, RmpError> {
        let bits = match size {
            RmpPageSize::Size4K => {
                let cur = self.effective_bits(gfn).ok_or(RmpError::FailInput)?;
                if cur & ASSIGNED == 0 {
                    return Err(RmpError::FailInput);
                }
                if cur & IN_2M != 0 {
                    return Ok(PvalidateOutcome::NeedsPsmash);
                }
                self.page_mut(gfn)?
            }
            RmpPageSize::Size2M => {
                let head = self
                    .region_mut(gfn)?
                    .first_mut()
                    .ok_or(RmpError::FailInput)?;
                if *head & IN_2M == 0 {
                    return Err(RmpError::FailSizeMismatch);
                }
                if *head & ASSIGNED == 0 {
                    return Err(RmpError::FailInput);
                }
                head
            }
        };
        let was = *bits & VALIDATED != 0;
        if validate {
            *bits |= VALIDATED;
        } else {
            *bits &= !VALIDATED;
        }
        Ok(PvalidateOutcome::Done {
            changed: was != validate,
        })
    }

    /// Set or clear the VMSA bit of the 4 KiB page at `gfn`: what RMPADJUST with the
    /// VMSA attribute (SPECS.md 3.1, attribute bit 16) or a VMSA `LAUNCH_UPDATE`
    /// leaves behind. `FailInput` if `gfn` is outside guest RAM or not assigned;
    /// `FailSizeMismatch` if the page lies inside a 2 MiB entry (a VMSA is always a
    /// 4 KiB page; the host PSMASHes and retries, SPECS.md 3.4 trigger (a)).
    pub fn set_vmsa(&mut self, gfn: u64, vmsa: bool) -> Result<(), RmpError> {
        let cur = self.effective_bits(gfn).ok_or(RmpError::FailInput)?;
        if cur & ASSIGNED == 0 {
            return Err(RmpError::FailInput);
        }
        if cur & IN_2M != 0 {
            return Err(RmpError::FailSizeMismatch);
        }
        let bits = self.page_mut(gfn)?;
        if vmsa {
            *bits |= VMSA;
        } else {
            *bits &= !VMSA;
        }
        Ok(())
    }

    /// RMPADJUST as a VMPL0 guest issues it (SPECS.md 3.1): grant the target VMPL
    /// (attribute bits 7:0) the permission mask in bits 11:8, and set or clear the VMSA
    /// bit (bit 16), on the page or 2 MiB region at `gfn`.
    ///
    /// - `Err(FailInput)`: `gfn` outside guest RAM, an unaligned 2 MiB request, a
    ///   target VMPL above 3, a VMSA request at 2 MiB (a VMSA is a 4 KiB page), or a
    ///   page that is not assigned to the guest and validated by it;
    /// - `Err(FailPermission)`: the target VMPL is not numerically greater than the
    ///   caller's (VMPL0), so target 0;
    /// - `Err(FailSizeMismatch)`: a 2 MiB request over 4 KiB entries;
    /// - `Ok(NeedsPsmash)`: a 4 KiB request inside a 2 MiB entry, resolved by the host
    ///   like PVALIDATE's (SPECS.md 3.4 trigger (a));
    /// - `Ok(Done { changed })`: success (EAX = 0).
    pub fn rmpadjust(
        &mut self,
        gfn: u64,
        size: RmpPageSize,
        attrs: u64,
    ) -> Result<PvalidateOutcome, RmpError> {
        use rmpadjust_attrs::{
            MAX_VMPL, PERM_MASK, PERM_SHIFT, TARGET_VMPL_MASK, VMSA as VMSA_ATTR,
        };
        let target = attrs & TARGET_VMPL_MASK;
        let vmsa = attrs & VMSA_ATTR != 0;
        let perm = ((attrs >> PERM_SHIFT) & PERM_MASK) as u8;
        if target > MAX_VMPL || (vmsa && size == RmpPageSize::Size2M) {
            return Err(RmpError::FailInput);
        }
        let cur = match size {
            RmpPageSize::Size4K => self.effective_bits(gfn).ok_or(RmpError::FailInput)?,
            RmpPageSize::Size2M => {
                let head = *self.region_mut(gfn)?.first().ok_or(RmpError::FailInput)?;
                if head & IN_2M == 0 {
                    return Err(RmpError::FailSizeMismatch);
                }
                head
            }
        };
        if cur & ASSIGNED == 0 || cur & VALIDATED == 0 {
            return Err(RmpError::FailInput);
        }
        if target == 0 {
            return Err(RmpError::FailPermission);
        }
        if size == RmpPageSize::Size4K && cur & IN_2M != 0 {
            return Ok(PvalidateOutcome::NeedsPsmash);
        }
        let bits = self.page_mut(gfn)?;
        let before = *bits;
        if vmsa {
            *bits |= VMSA;
        } else {
            *bits &= !VMSA;
        }
        let mut changed = before != *bits;
        let slot = (target - 1) as usize;
        let masks = self.perms.entry(gfn).or_insert([0; 3]);
        if let Some(m) = masks.get_mut(slot) {
            changed |= *m != perm;
            *m = perm;
        }
        Ok(PvalidateOutcome::Done { changed })
    }

    /// The permission mask RMPADJUST granted VMPL `vmpl` (1-3) on the entry governing
    /// `gfn`; 0 if none.
    pub fn vmpl_permissions(&self, gfn: u64, vmpl: u8) -> u8 {
        let key = if self.flags_of(gfn).is_some_and(|b| b & IN_2M != 0) {
            head_of(gfn)
        } else {
            gfn
        };
        let slot = usize::from(vmpl.saturating_sub(1));
        self.perms
            .get(&key)
            .and_then(|m| m.get(slot).copied())
            .unwrap_or(0)
    }

    /// Whether the guest may access `gfn` through the private view: assigned and
    /// validated. `false` outside guest RAM.
    pub fn private_accessible(&self, gfn: u64) -> bool {
        self.effective_bits(gfn).is_some_and(|b| access_of(b).0)
    }

    /// Whether the guest may access `gfn` through the shared view: not assigned.
    /// `false` outside guest RAM.
    pub fn shared_accessible(&self, gfn: u64) -> bool {
        self.effective_bits(gfn).is_some_and(|b| access_of(b).1)
    }

    /// Mark a measured launch page: assigned and validated at 4 KiB, which is what
    /// `SNP_LAUNCH_UPDATE` leaves behind. Errors as [`Rmp::rmpupdate`] at 4 KiB.
    pub fn launch_page(&mut self, gfn: u64) -> Result<(), RmpError> {
        self.rmpupdate(gfn, true, RmpPageSize::Size4K, false)?;
        *self.page_mut(gfn)? |= VALIDATED;
        Ok(())
    }

    /// Coalesce the pages `[gfn, gfn + n)`, clamped to guest RAM, into maximal runs
    /// with the same `(private_accessible, shared_accessible)`. Each item is
    /// `(first gfn, pages, private, shared)`; the VMM mprotects each view per run.
    pub fn access_runs(
        &self,
        gfn: u64,
        n: u64,
    ) -> impl Iterator<Item = (u64, u64, bool, bool)> + '_ {
        let end = gfn.saturating_add(n).min(self.pages());
        AccessRuns {
            rmp: self,
            next: gfn.min(end),
            end,
        }
    }

    /// The access pair of `gfn` and the end of the stretch, starting at `gfn`, over
    /// which it is certainly the same (the rest of a 2 MiB entry, else one page).
    pub(crate) fn access_span(&self, gfn: u64) -> ((bool, bool), u64) {
        let access = self.effective_bits(gfn).map_or((false, false), access_of);
        let span_end = if self.flags_of(gfn).is_some_and(|b| b & IN_2M != 0) {
            head_of(gfn).saturating_add(PAGES_PER_2M)
        } else {
            gfn.saturating_add(1)
        };
        (access, span_end)
    }
}

/// Iterator behind [`Rmp::access_runs`].
struct AccessRuns<'a> {
    rmp: &'a Rmp,
    next: u64,
    end: u64,
}

impl Iterator for AccessRuns<'_> {
    type Item = (u64, u64, bool, bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let start = self.next;
        let (access, mut cursor) = self.rmp.access_span(start);
        while cursor < self.end {
            let (a, span_end) = self.rmp.access_span(cursor);
            if a != access {
                break;
            }
            cursor = span_end;
        }
        let stop = cursor.min(self.end);
        self.next = stop;
        Some((start, stop.saturating_sub(start), access.0, access.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const K4: RmpPageSize = RmpPageSize::Size4K;
    const M2: RmpPageSize = RmpPageSize::Size2M;

    fn done(changed: bool) -> Result<PvalidateOutcome, RmpError> {
        Ok(PvalidateOutcome::Done { changed })
    }

    /// Check the storage invariants of the flag encoding.
    fn check_storage(rmp: &Rmp) {
        for (i, &b) in rmp.flags.iter().enumerate() {
            let gfn = i as u64;
            if b & IN_2M != 0 {
                let head = (gfn - gfn % 512) as usize;
                assert!(
                    head + 512 <= rmp.flags.len(),
                    "2M entry at {head} out of range"
                );
                for j in head..head + 512 {
                    assert!(rmp.flags[j] & IN_2M != 0, "2M entry at {head} torn at {j}");
                    if j != head {
                        assert_eq!(rmp.flags[j], IN_2M, "tail {j} holds state");
                    }
                }
            }
            if b & VALIDATED != 0 {
                assert!(b & ASSIGNED != 0, "page {gfn} validated but not assigned");
            }
        }
    }

    #[test]
    fn new_is_all_shared_and_cheap_for_4gib() {
        let rmp = Rmp::new(1 << 20);
        assert_eq!(rmp.pages(), 1 << 20);
        let e = rmp.entry(12345).unwrap();
        assert_eq!(
            e,
            RmpEntry {
                assigned: false,
                validated: false,
                size: K4,
                immutable: false,
                vmsa: false
            }
        );
        assert!(rmp.shared_accessible(0));
        assert!(!rmp.private_accessible(0));
        assert_eq!(rmp.entry(1 << 20), None);
        assert!(!rmp.shared_accessible(1 << 20));
        assert!(!rmp.private_accessible(u64::MAX));
        assert_eq!(format!("{rmp:?}"), "Rmp { pages: 1048576, .. }");
    }

    #[test]
    fn rmpupdate_4k_assign_and_return() {
        let mut rmp = Rmp::new(1024);
        rmp.rmpupdate(5, true, K4, false).unwrap();
        assert!(rmp.entry(5).unwrap().assigned);
        assert!(!rmp.shared_accessible(5));
        assert!(!rmp.private_accessible(5));
        assert_eq!(rmp.pvalidate(5, K4, true), done(true));
        assert!(rmp.private_accessible(5));
        // Reassignment clears validated.
        rmp.rmpupdate(5, true, K4, false).unwrap();
        assert!(!rmp.entry(5).unwrap().validated);
        rmp.rmpupdate(5, false, K4, false).unwrap();
        assert!(rmp.shared_accessible(5));
    }

    #[test]
    fn rmpupdate_fail_input() {
        let mut rmp = Rmp::new(1000);
        assert_eq!(
            rmp.rmpupdate(1000, true, K4, false),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.rmpupdate(u64::MAX, true, K4, false),
            Err(RmpError::FailInput)
        );
        assert_eq!(rmp.rmpupdate(1, true, M2, false), Err(RmpError::FailInput));
        // Aligned but the region runs past the end of RAM (1000 < 1024).
        assert_eq!(
            rmp.rmpupdate(512, true, M2, false),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.rmpupdate(u64::MAX - 511, true, M2, false),
            Err(RmpError::FailInput)
        );
        rmp.rmpupdate(0, true, M2, false).unwrap();
        check_storage(&rmp);
    }

    #[test]
    fn rmpupdate_fail_overlap() {
        let mut rmp = Rmp::new(1024);
        rmp.rmpupdate(700, true, K4, false).unwrap();
        assert_eq!(
            rmp.rmpupdate(512, true, M2, false),
            Err(RmpError::FailOverlap)
        );
        assert_eq!(
            rmp.rmpupdate(512, false, M2, false),
            Err(RmpError::FailOverlap)
        );
        rmp.rmpupdate(0, true, M2, false).unwrap();
        // 4K update of any page, head included, inside the assigned 2M entry.
        assert_eq!(
            rmp.rmpupdate(3, false, K4, false),
            Err(RmpError::FailOverlap)
        );
        assert_eq!(
            rmp.rmpupdate(0, true, K4, false),
            Err(RmpError::FailOverlap)
        );
        assert!(rmp.entry(3).unwrap().assigned);
        check_storage(&rmp);
    }

    #[test]
    fn rmpupdate_fail_permission() {
        let mut rmp = Rmp::new(1024);
        rmp.rmpupdate(7, true, K4, true).unwrap();
        assert!(rmp.entry(7).unwrap().immutable);
        assert_eq!(
            rmp.rmpupdate(7, false, K4, false),
            Err(RmpError::FailPermission)
        );
        assert_eq!(
            rmp.rmpupdate(0, true, M2, false),
            Err(RmpError::FailPermission)
        );
        rmp.rmpupdate(512, true, M2, true).unwrap();
        assert_eq!(
            rmp.rmpupdate(512, false, M2, false),
            Err(RmpError::FailPermission)
        );
        assert_eq!(
            rmp.rmpupdate(600, false, K4, false),
            Err(RmpError::FailPermission)
        );
        check_storage(&rmp);
    }

    #[test]
    fn rmpupdate_replaces_2m_and_splits_shared_2m() {
        let mut rmp = Rmp::new(1024);
        rmp.rmpupdate(512, true, M2, false).unwrap();
        assert_eq!(rmp.pvalidate(512, M2, true), done(true));
        // Returning the whole 2M entry is allowed and clears validated.
        rmp.rmpupdate(512, false, M2, false).unwrap();
        let e = rmp.entry(1000).unwrap();
        assert_eq!((e.assigned, e.validated, e.size), (false, false, M2));
        // A 4K update inside a hypervisor-owned 2M entry splits it.
        rmp.rmpupdate(513, true, K4, false).unwrap();
        assert_eq!(rmp.entry(513).unwrap().size, K4);
        assert_eq!(rmp.entry(512).unwrap().size, K4);
        assert!(rmp.shared_accessible(1000));
        check_storage(&rmp);
    }

    #[test]
    fn psmash_paths() {
        let mut rmp = Rmp::new(1024);
        assert_eq!(rmp.psmash(1), Err(RmpError::FailInput));
        assert_eq!(rmp.psmash(1024), Err(RmpError::FailInput));
        assert_eq!(rmp.psmash(0), Err(RmpError::FailInput), "not a 2M entry");
        rmp.rmpupdate(512, true, M2, false).unwrap();
        rmp.pvalidate(512, M2, true).unwrap();
        rmp.psmash(512).unwrap();
        for gfn in 512..1024 {
            let e = rmp.entry(gfn).unwrap();
            assert_eq!((e.assigned, e.validated, e.size), (true, true, K4));
            assert!(rmp.private_accessible(gfn));
        }
        assert_eq!(rmp.psmash(512), Err(RmpError::FailInput), "already split");
        check_storage(&rmp);
    }

    #[test]
    fn pvalidate_paths() {
        let mut rmp = Rmp::new(2048);
        // Unassigned, out of range, unaligned.
        assert_eq!(rmp.pvalidate(3, K4, true), Err(RmpError::FailInput));
        assert_eq!(rmp.pvalidate(2048, K4, true), Err(RmpError::FailInput));
        assert_eq!(rmp.pvalidate(3, M2, true), Err(RmpError::FailInput));
        assert_eq!(rmp.pvalidate(2048, M2, true), Err(RmpError::FailInput));
        // 2M over 4K entries.
        rmp.rmpupdate(0, true, K4, false).unwrap();
        assert_eq!(rmp.pvalidate(0, M2, true), Err(RmpError::FailSizeMismatch));
        // 4K: change, then CF=1 on the repeat, both directions.
        assert_eq!(rmp.pvalidate(0, K4, true), done(true));
        assert_eq!(rmp.pvalidate(0, K4, true), done(false));
        assert_eq!(rmp.pvalidate(0, K4, false), done(true));
        assert_eq!(rmp.pvalidate(0, K4, false), done(false));
        // 2M entry: unassigned 2M -> FailInput at both sizes.
        rmp.rmpupdate(1024, false, M2, false).unwrap();
        assert_eq!(rmp.pvalidate(1024, M2, true), Err(RmpError::FailInput));
        assert_eq!(rmp.pvalidate(1030, K4, true), Err(RmpError::FailInput));
        // Assigned 2M: 2M works, 4K needs PSMASH.
        rmp.rmpupdate(1536, true, M2, false).unwrap();
        assert_eq!(rmp.pvalidate(1536, M2, true), done(true));
        assert_eq!(rmp.pvalidate(1536, M2, true), done(false));
        assert!(rmp.private_accessible(2047));
        assert_eq!(
            rmp.pvalidate(1600, K4, false),
            Ok(PvalidateOutcome::NeedsPsmash)
        );
        assert!(
            rmp.private_accessible(1600),
            "NeedsPsmash leaves the RMP unchanged"
        );
        rmp.psmash(1536).unwrap();
        assert_eq!(rmp.pvalidate(1600, K4, false), done(true));
        assert!(!rmp.private_accessible(1600));
        assert!(rmp.private_accessible(1601));
        check_storage(&rmp);
    }

    #[test]
    fn set_vmsa_paths() {
        let mut rmp = Rmp::new(1024);
        assert_eq!(rmp.set_vmsa(9, true), Err(RmpError::FailInput));
        assert_eq!(rmp.set_vmsa(4096, true), Err(RmpError::FailInput));
        rmp.launch_page(9).unwrap();
        rmp.set_vmsa(9, true).unwrap();
        assert!(rmp.entry(9).unwrap().vmsa);
        rmp.set_vmsa(9, false).unwrap();
        assert!(!rmp.entry(9).unwrap().vmsa);
        rmp.set_vmsa(9, true).unwrap();
        rmp.rmpupdate(9, true, K4, false).unwrap();
        assert!(!rmp.entry(9).unwrap().vmsa, "RMPUPDATE clears the VMSA bit");
        rmp.rmpupdate(512, true, M2, false).unwrap();
        assert_eq!(rmp.set_vmsa(520, true), Err(RmpError::FailSizeMismatch));
    }

    #[test]
    fn launch_page_paths() {
        let mut rmp = Rmp::new(1024);
        rmp.launch_page(10).unwrap();
        let e = rmp.entry(10).unwrap();
        assert_eq!((e.assigned, e.validated, e.size), (true, true, K4));
        assert_eq!(rmp.launch_page(1024), Err(RmpError::FailInput));
        rmp.rmpupdate(512, true, M2, false).unwrap();
        assert_eq!(rmp.launch_page(600), Err(RmpError::FailOverlap));
        rmp.rmpupdate(20, true, K4, true).unwrap();
        assert_eq!(rmp.launch_page(20), Err(RmpError::FailPermission));
    }

    #[test]
    fn access_runs_coalesce_and_clamp() {
        let mut rmp = Rmp::new(1100);
        for gfn in 0..4 {
            rmp.launch_page(gfn).unwrap();
        }
        rmp.rmpupdate(4, true, K4, false).unwrap();
        rmp.rmpupdate(512, true, M2, false).unwrap();
        rmp.pvalidate(512, M2, true).unwrap();
        let runs: Vec<_> = rmp.access_runs(0, u64::MAX).collect();
        assert_eq!(
            runs,
            vec![
                (0, 4, true, false),
                (4, 1, false, false),
                (5, 507, false, true),
                (512, 512, true, false),
                (1024, 76, false, true),
            ]
        );
        let runs: Vec<_> = rmp.access_runs(600, 10).collect();
        assert_eq!(runs, vec![(600, 10, true, false)]);
        assert_eq!(rmp.access_runs(2000, 10).count(), 0);
        assert_eq!(rmp.access_runs(5, 0).count(), 0);
    }

    // ---- Property test against a reference model ----

    const PAGES: u64 = 2 * 512 + 37;

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct MState {
        assigned: bool,
        validated: bool,
        immutable: bool,
        vmsa: bool,
    }

    /// Reference: explicit 4 KiB entries and 2 MiB entries keyed by their head.
    #[derive(Default)]
    struct Model {
        e4k: HashMap<u64, MState>,
        e2m: HashMap<u64, MState>,
    }

    impl Model {
        fn eff(&self, gfn: u64) -> Option<(MState, RmpPageSize)> {
            if gfn >= PAGES {
                return None;
            }
            if let Some(m) = self.e2m.get(&(gfn / 512 * 512)) {
                return Some((*m, M2));
            }
            Some((self.e4k.get(&gfn).copied().unwrap_or_default(), K4))
        }

        fn region_ok(gfn: u64) -> bool {
            gfn.is_multiple_of(512) && gfn.checked_add(512).is_some_and(|e| e <= PAGES)
        }

        fn rmpupdate(
            &mut self,
            gfn: u64,
            assigned: bool,
            size: RmpPageSize,
            imm: bool,
        ) -> Result<(), RmpError> {
            let new = MState {
                assigned,
                validated: false,
                immutable: imm,
                vmsa: false,
            };
            match size {
                RmpPageSize::Size4K => {
                    let (cur, sz) = self.eff(gfn).ok_or(RmpError::FailInput)?;
                    if cur.immutable {
                        return Err(RmpError::FailPermission);
                    }
                    if sz == M2 {
                        if cur.assigned {
                            return Err(RmpError::FailOverlap);
                        }
                        let head = gfn / 512 * 512;
                        self.e2m.remove(&head);
                        for g in head..head + 512 {
                            self.e4k.remove(&g);
                        }
                    }
                    self.e4k.insert(gfn, new);
                }
                RmpPageSize::Size2M => {
                    if !Self::region_ok(gfn) {
                        return Err(RmpError::FailInput);
                    }
                    if let Some(cur) = self.e2m.get(&gfn) {
                        if cur.immutable {
                            return Err(RmpError::FailPermission);
                        }
                    } else {
                        let st: Vec<MState> =
                            (gfn..gfn + 512).map(|g| self.eff(g).unwrap().0).collect();
                        if st.iter().any(|s| s.immutable) {
                            return Err(RmpError::FailPermission);
                        }
                        if st.iter().any(|s| s.assigned) {
                            return Err(RmpError::FailOverlap);
                        }
                    }
                    for g in gfn..gfn + 512 {
                        self.e4k.remove(&g);
                    }
                    self.e2m.insert(gfn, new);
                }
            }
            Ok(())
        }

        fn psmash(&mut self, gfn: u64) -> Result<(), RmpError> {
            if !Self::region_ok(gfn) {
                return Err(RmpError::FailInput);
            }
            let m = self.e2m.remove(&gfn).ok_or(RmpError::FailInput)?;
            for g in gfn..gfn + 512 {
                self.e4k.insert(g, MState { vmsa: false, ..m });
            }
            Ok(())
        }

        fn pvalidate(
            &mut self,
            gfn: u64,
            size: RmpPageSize,
            v: bool,
        ) -> Result<PvalidateOutcome, RmpError> {
            let slot = match size {
                RmpPageSize::Size4K => {
                    let (cur, sz) = self.eff(gfn).ok_or(RmpError::FailInput)?;
                    if !cur.assigned {
                        return Err(RmpError::FailInput);
                    }
                    if sz == M2 {
                        return Ok(PvalidateOutcome::NeedsPsmash);
                    }
                    self.e4k.entry(gfn).or_default()
                }
                RmpPageSize::Size2M => {
                    if !Self::region_ok(gfn) {
                        return Err(RmpError::FailInput);
                    }
                    let Some(m) = self.e2m.get_mut(&gfn) else {
                        return Err(RmpError::FailSizeMismatch);
                    };
                    if !m.assigned {
                        return Err(RmpError::FailInput);
                    }
                    m
                }
            };
            let changed = slot.validated != v;
            slot.validated = v;
            Ok(PvalidateOutcome::Done { changed })
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Update {
            gfn: u64,
            assigned: bool,
            huge: bool,
            immutable: bool,
        },
        Psmash {
            gfn: u64,
        },
        Pvalidate {
            gfn: u64,
            huge: bool,
            validate: bool,
        },
        Launch {
            gfn: u64,
        },
    }

    fn gfn_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![
            (0u64..4).prop_map(|r| r * 512),
            0u64..PAGES + 40,
            Just(u64::MAX - 511),
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (gfn_strategy(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.05))
                .prop_map(|(gfn, assigned, huge, immutable)| Op::Update { gfn, assigned, huge, immutable }),
            1 => gfn_strategy().prop_map(|gfn| Op::Psmash { gfn }),
            3 => (gfn_strategy(), any::<bool>(), any::<bool>())
                .prop_map(|(gfn, huge, validate)| Op::Pvalidate { gfn, huge, validate }),
            1 => gfn_strategy().prop_map(|gfn| Op::Launch { gfn }),
        ]
    }

    fn size(huge: bool) -> RmpPageSize {
        if huge {
            M2
        } else {
            K4
        }
    }

    fn snapshot(rmp: &Rmp) -> Vec<RmpEntry> {
        (0..PAGES).map(|g| rmp.entry(g).unwrap()).collect()
    }

    proptest! {
        #[test]
        fn rmp_matches_reference_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
            let mut rmp = Rmp::new(PAGES);
            let mut model = Model::default();
            for op in ops {
                let before = snapshot(&rmp);
                match op {
                    Op::Update { gfn, assigned, huge, immutable } => {
                        let r = rmp.rmpupdate(gfn, assigned, size(huge), immutable);
                        prop_assert_eq!(r, model.rmpupdate(gfn, assigned, size(huge), immutable));
                        if r.is_ok() {
                            let n = if huge { 512 } else { 1 };
                            for g in gfn..gfn + n {
                                let e = rmp.entry(g).unwrap();
                                prop_assert!(!e.validated, "rmpupdate left {} validated", g);
                                prop_assert_eq!(e.assigned, assigned);
                            }
                        }
                    }
                    Op::Psmash { gfn } => {
                        let r = rmp.psmash(gfn);
                        prop_assert_eq!(r, model.psmash(gfn));
                        if r.is_ok() {
                            for g in gfn..gfn + 512 {
                                let (a, b) = (before[g as usize], rmp.entry(g).unwrap());
                                prop_assert_eq!(b.size, K4);
                                prop_assert_eq!(
                                    (a.assigned, a.validated, a.immutable),
                                    (b.assigned, b.validated, b.immutable)
                                );
                            }
                        }
                    }
                    Op::Pvalidate { gfn, huge, validate } => {
                        let r = rmp.pvalidate(gfn, size(huge), validate);
                        prop_assert_eq!(r, model.pvalidate(gfn, size(huge), validate));
                        if !matches!(r, Ok(PvalidateOutcome::Done { .. })) {
                            prop_assert_eq!(&before, &snapshot(&rmp), "failed pvalidate changed the RMP");
                        }
                    }
                    Op::Launch { gfn } => {
                        let r = rmp.launch_page(gfn);
                        let m = model.rmpupdate(gfn, true, K4, false);
                        prop_assert_eq!(r, m);
                        if m.is_ok() {
                            model.e4k.insert(gfn, MState { assigned: true, validated: true, ..MState::default() });
                        }
                    }
                }
                check_storage(&rmp);
                let mut expected_runs: Vec<(u64, u64, bool, bool)> = Vec::new();
                for g in 0..PAGES {
                    let (m, sz) = model.eff(g).unwrap();
                    let e = rmp.entry(g).unwrap();
                    prop_assert_eq!(
                        e,
                        RmpEntry { assigned: m.assigned, validated: m.validated, size: sz, immutable: m.immutable, vmsa: m.vmsa }
                    );
                    prop_assert!(!e.validated || e.assigned, "validated but unassigned at {}", g);
                    let (p, s) = (rmp.private_accessible(g), rmp.shared_accessible(g));
                    prop_assert!(!(p && s), "page {} accessible through both views", g);
                    match expected_runs.last_mut() {
                        Some(last) if (last.2, last.3) == (p, s) => last.1 += 1,
                        _ => expected_runs.push((g, 1, p, s)),
                    }
                }
                prop_assert_eq!(rmp.access_runs(0, PAGES).collect::<Vec<_>>(), expected_runs);
            }
        }
    }
}
