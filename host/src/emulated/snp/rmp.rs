//! A software Reverse Map Table (RMP) for the emulated SEV-SNP platform.
//!
//! On SEV-SNP hardware every 4 KiB system page has an RMP entry saying whether it is
//! assigned to a guest, which guest (ASID) and at which guest physical address (GPA),
//! whether the guest has validated it, its page size and a few more bits (docs/specs.md
//! 3.2, 3.3). The emulated platform has no such table, so the host keeps this one and
//! enforces it (docs/design.md, "Two views of guest RAM"): a page is reachable through the
//! private view only when it is assigned and validated, and through the shared view only
//! when it is not assigned.
//!
//! The table is indexed by system (host) page frame, as on hardware; the instruction
//! methods name that index `pfn`. In nacre's emulation guest RAM is laid out
//! one-to-one, so a page's host frame is its guest frame (`pfn == gfn`) and the
//! lookup helpers the MMU uses name the same number `gfn`. The entry still records the
//! GPA and ASID it is assigned to, and PVALIDATE and RMPADJUST check them, exactly as
//! the hardware does after the nested walk.
//!
//! Simplifications, all exact for nacre's emulated platform:
//! - one guest, [`GUEST_ASID`];
//! - the guest runs at VMPL0 (full access); the permission masks RMPADJUST grants to
//!   VMPL1-3 are recorded per entry but not enforced, as no code runs at those levels.
//!
//! The instructions follow the architectural return codes (docs/specs.md 3.1, AMD APM vol. 3
//! "RMPUPDATE", "PSMASH", "PVALIDATE", "RMPADJUST"; Linux `arch/x86/virt/svm/sev.c`):
//! - RMPUPDATE writes a fresh entry, so it always clears the validated and VMSA bits;
//! - nacre's model refuses (FAIL_INPUT) an assigned entry with ASID 0 or with a GPA not
//!   aligned to its page size: on hardware, assigned pages with ASID 0 are the security
//!   processor's own pages, which nacre does not model, and every guest assignment
//!   (Linux `rmp_make_private`) passes the guest's ASID and an aligned GPA; a
//!   hypervisor-owned entry carries neither (Linux `rmp_make_shared` passes an all-zero
//!   `rmp_state` apart from the page size);
//! - a 2 MiB RMPUPDATE over assigned 4 KiB entries, or a 4 KiB RMPUPDATE inside an
//!   assigned 2 MiB entry, fails with FAIL_OVERLAP (KVM PSMASHes first);
//! - an immutable entry cannot be updated (FAIL_PERMISSION);
//! - PSMASH splits a 2 MiB entry into 512 4 KiB entries with the same state and ASID,
//!   entry `i` at the 2 MiB entry's GPA + `i` * 4 KiB;
//! - PVALIDATE at 2 MiB over 4 KiB entries fails with FAIL_SIZEMISMATCH, while a 4 KiB
//!   PVALIDATE inside a 2 MiB entry is a nested page fault with `PFERR_GUEST_SIZEM`
//!   that the host resolves by PSMASH and retry (KVM `sev_handle_rmp_fault`,
//!   docs/specs.md 3.4);
//! - PVALIDATE and RMPADJUST of a page not assigned to the caller's ASID at the GPA it
//!   used fail (see [`Rmp::pvalidate`] for how that is modelled).
//!
//! Storage, all allocated zeroed (`vec![0; n]` becomes `calloc`, which the OS backs
//! lazily), so an RMP for 4 GiB of RAM costs 9 MiB of address space and nothing up
//! front:
//! - one byte of flags per 4 KiB page;
//! - one `u64` per page holding the entry's GPA and ASID, encoded as
//!   `gpa | asid`: the GPA is page-aligned, so bits 63:12 are its frame number and bits
//!   11:0 hold the ASID ([`MAX_ASID`] fits). Zero for a hypervisor-owned entry. As with
//!   the flags, only the 2 MiB-aligned head of a 2 MiB entry holds a value; the other
//!   511 pages hold 0.

use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::rmp::{RmpError, RmpPageSize};

/// The ASID of the guest. The emulated platform runs one guest per VMM process, and
/// ASID 0 means "not a guest" in the RMP (hypervisor-owned entries carry ASID 0), so
/// that guest is ASID 1, the lowest ASID an SEV-ES or SNP guest can have.
pub const GUEST_ASID: u32 = 1;

/// The largest ASID an entry can record: the ASID field of the raw RMP entry is 10
/// bits wide (docs/specs.md 3.3, bits 60:51). RMPUPDATE with a wider one is FAIL_INPUT
/// here, as no entry could hold it.
pub const MAX_ASID: u32 = (1 << 10) - 1;

/// The GPA of the guest frame `gfn`; saturates (to an unaligned value no entry can
/// hold) for frames beyond the 64-bit address space.
pub const fn gpa_of(gfn: u64) -> u64 {
    gfn.saturating_mul(PAGE_SIZE_4K)
}

/// Bits 11:0 of a page's GPA/ASID word: the ASID (the GPA above is page-aligned).
const META_ASID_MASK: u64 = PAGE_SIZE_4K - 1;

/// The GPA/ASID word of an entry assigned to `asid` at the page-aligned `gpa`.
const fn meta_of(gpa: u64, asid: u32) -> u64 {
    gpa | asid as u64
}

/// `(gpa, asid)` of a GPA/ASID word.
const fn meta_parts(meta: u64) -> (u64, u32) {
    // The mask keeps 12 bits, which always fit in u32.
    (meta & !META_ASID_MASK, (meta & META_ASID_MASK) as u32)
}

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
/// pages hold exactly `IN_2M` (docs/specs.md 3.3: the 2 MiB-aligned entry is authoritative).
const IN_2M: u8 = 1 << 2;
/// Flag: the entry is immutable (RMPUPDATE fails with FAIL_PERMISSION).
const IMMUTABLE: u8 = 1 << 3;
/// Flag: the page is a VMSA (RMPADJUST attribute bit 16).
const VMSA: u8 = 1 << 4;

/// The state bits of an entry: what PSMASH copies into each 4 KiB entry.
const STATE: u8 = ASSIGNED | VALIDATED | IMMUTABLE;

/// One RMP entry as the RMPREAD instruction would report it (docs/specs.md 3.3), for the
/// entry that governs a page: the 2 MiB entry when the page lies inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpEntry {
    /// Assigned to the guest (private); `false` means hypervisor-owned (shared).
    pub assigned: bool,
    /// The guest physical address the entry is assigned at (byte address; 0 when not
    /// assigned). For a 2 MiB entry this is the GPA of its first page, 2 MiB-aligned;
    /// a page inside it is at this GPA plus its offset in the entry.
    pub gpa: u64,
    /// The ASID of the guest the entry is assigned to; 0 when not assigned.
    pub asid: u32,
    /// Validated by the guest with PVALIDATE.
    pub validated: bool,
    /// Page size of the entry.
    pub size: RmpPageSize,
    /// Immutable: RMPUPDATE fails with FAIL_PERMISSION.
    pub immutable: bool,
    /// The page holds a VMSA.
    pub vmsa: bool,
}

/// The new state RMPUPDATE writes: the `rmp_state` operand (docs/specs.md 3.2; Linux
/// `asm/sev.h` `struct rmp_state`) without its reserved byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpUpdate {
    /// Assign to a guest (`true`) or return to the hypervisor (`false`).
    pub assigned: bool,
    /// Page size of the new entry.
    pub size: RmpPageSize,
    /// Make the entry immutable.
    pub immutable: bool,
    /// The GPA the page (or 2 MiB region) is assigned at; must be aligned to `size`.
    /// Ignored, and recorded as 0, when `assigned` is `false`.
    pub gpa: u64,
    /// The ASID of the guest; must be non-zero. Ignored, and recorded as 0, when
    /// `assigned` is `false`.
    pub asid: u32,
}

impl RmpUpdate {
    /// Assign to the guest `asid` at `gpa`, mutable: Linux `rmp_make_private`.
    pub const fn private(gpa: u64, asid: u32, size: RmpPageSize) -> Self {
        Self {
            assigned: true,
            size,
            immutable: false,
            gpa,
            asid,
        }
    }

    /// Return to the hypervisor, everything but the page size zero: Linux
    /// `rmp_make_shared`.
    pub const fn shared(size: RmpPageSize) -> Self {
        Self {
            assigned: false,
            size,
            immutable: false,
            gpa: 0,
            asid: 0,
        }
    }
}

/// Outcome of a PVALIDATE that did not fail architecturally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvalidateOutcome {
    /// EAX = 0. `changed == false` is rFLAGS.CF = 1: the validated bit already had the
    /// requested value (docs/specs.md 3.1; Linux `PVALIDATE_FAIL_NOUPDATE`).
    Done {
        /// The validated bit changed.
        changed: bool,
    },
    /// A 4 KiB PVALIDATE hit a 2 MiB entry: on hardware a nested page fault with
    /// `PFERR_GUEST_SIZEM`, which the host resolves by [`Rmp::psmash`] on the 2 MiB
    /// region and a retry (docs/specs.md 3.4). The RMP is unchanged.
    NeedsPsmash,
}

/// The software RMP covering guest RAM of [`Rmp::pages`] 4 KiB pages.
pub struct Rmp {
    /// One byte of flags per 4 KiB page, indexed by page frame.
    flags: Vec<u8>,
    /// One GPA/ASID word per 4 KiB page, indexed like `flags` (encoding in the module
    /// documentation); non-zero only on assigned entries, and only on the head of a
    /// 2 MiB entry.
    meta: Vec<u64>,
    /// VMPL1-3 permission masks (RMPADJUST attribute bits 8-11) of the entries that have
    /// any, keyed by the entry's GFN (the head of a 2 MiB entry). Absent = none granted.
    perms: std::collections::HashMap<u64, [u8; 3]>,
}

/// RMPADJUST attribute operand fields (docs/specs.md 3.1; Linux `asm/sev.h`
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
            meta: vec![0u64; n],
            perms: std::collections::HashMap::new(),
        }
    }

    /// Number of 4 KiB pages covered.
    pub fn pages(&self) -> u64 {
        // usize -> u64 is lossless on every target nacre builds for.
        self.flags.len() as u64
    }

    /// The flags of the page `pfn`, if in range.
    fn flags_of(&self, pfn: u64) -> Option<u8> {
        self.flags.get(usize::try_from(pfn).ok()?).copied()
    }

    /// The GPA/ASID word of the page `pfn`, if in range.
    fn meta_at(&self, pfn: u64) -> Option<u64> {
        self.meta.get(usize::try_from(pfn).ok()?).copied()
    }

    /// The flags and the GPA/ASID word of the page `pfn` for writing; `FailInput` if
    /// out of range.
    fn page_mut(&mut self, pfn: u64) -> Result<(&mut u8, &mut u64), RmpError> {
        let i = usize::try_from(pfn).map_err(|_| RmpError::FailInput)?;
        match (self.flags.get_mut(i), self.meta.get_mut(i)) {
            (Some(flags), Some(meta)) => Ok((flags, meta)),
            _ => Err(RmpError::FailInput),
        }
    }

    /// The 512 flags and GPA/ASID words of the 2 MiB region at `pfn`; `FailInput`
    /// unless `pfn` is 2 MiB-aligned and the whole region lies in guest RAM.
    fn region_mut(&mut self, pfn: u64) -> Result<(&mut [u8], &mut [u64]), RmpError> {
        if !pfn.is_multiple_of(PAGES_PER_2M) {
            return Err(RmpError::FailInput);
        }
        let first = usize::try_from(pfn).map_err(|_| RmpError::FailInput)?;
        let range = first..first.checked_add(PAGES_512).ok_or(RmpError::FailInput)?;
        let flags = self
            .flags
            .get_mut(range.clone())
            .ok_or(RmpError::FailInput)?;
        let meta = self.meta.get_mut(range).ok_or(RmpError::FailInput)?;
        Ok((flags, meta))
    }

    /// The governing entry's bits for `pfn` (the 2 MiB head's when inside one).
    fn effective_bits(&self, pfn: u64) -> Option<u8> {
        let bits = self.flags_of(pfn)?;
        if bits & IN_2M == 0 {
            return Some(bits);
        }
        self.flags_of(head_of(pfn))
    }

    /// The entry governing `pfn` as `(first frame, flags, GPA/ASID word)`: the 2 MiB
    /// entry, with its head as first frame, when the page lies inside one. `None`
    /// outside guest RAM.
    fn governing(&self, pfn: u64) -> Option<(u64, u8, u64)> {
        let bits = self.flags_of(pfn)?;
        let first = if bits & IN_2M == 0 { pfn } else { head_of(pfn) };
        Some((first, self.flags_of(first)?, self.meta_at(first)?))
    }

    /// Whether the entry governing `pfn` is assigned to `asid` with the page `pfn` at
    /// `gpa`: for a page inside a 2 MiB entry, the entry's GPA plus the page's offset
    /// in it (the check the hardware makes at the end of a nested walk).
    fn owned_by(&self, pfn: u64, asid: u32, gpa: u64) -> bool {
        self.governing(pfn).is_some_and(|(first, bits, meta)| {
            let (entry_gpa, entry_asid) = meta_parts(meta);
            // `pfn - first` < 512 and `entry_gpa` is 2 MiB-aligned when it is non-zero:
            // the sum cannot overflow.
            let page_gpa = entry_gpa + (pfn - first) * PAGE_SIZE_4K;
            bits & ASSIGNED != 0 && entry_asid == asid && page_gpa == gpa
        })
    }

    /// The entry governing `gfn`: the 2 MiB entry if the page lies inside one, `None`
    /// when `gfn` is outside guest RAM.
    pub fn entry(&self, gfn: u64) -> Option<RmpEntry> {
        let (_, bits, meta) = self.governing(gfn)?;
        let (gpa, asid) = meta_parts(meta);
        Some(RmpEntry {
            assigned: bits & ASSIGNED != 0,
            gpa,
            asid,
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

    /// RMPUPDATE of the 4 KiB page or 2 MiB region at the host frame `pfn` (in nacre
    /// also the guest frame): write a fresh entry from `state`, assigning the page to
    /// the guest `state.asid` at `state.gpa`, or returning it to the hypervisor. The
    /// entry is written afresh, so the validated and VMSA bits are always cleared.
    ///
    /// Return codes (docs/specs.md 3.1, 3.2):
    /// - `FailInput`: `pfn` outside guest RAM; a 2 MiB update whose `pfn` is not
    ///   2 MiB-aligned or whose region does not fit in guest RAM; and, as nacre's model
    ///   rather than a documented hardware rule, an assigned `state` whose ASID is 0
    ///   (on hardware those are the security processor's pages, not modelled here), whose
    ///   ASID is above [`MAX_ASID`] (the raw entry's 10-bit field, docs/specs.md 3.3) or whose
    ///   GPA is not aligned to `state.size`;
    /// - `FailPermission`: an affected entry is immutable;
    /// - `FailOverlap`: a 2 MiB update over 4 KiB entries of which one is assigned, or
    ///   a 4 KiB update of a page inside an assigned 2 MiB entry (the host PSMASHes
    ///   first, as KVM does).
    ///
    /// A hypervisor-owned `state` ignores `gpa` and `asid` and records both as 0:
    /// Linux `rmp_make_shared` passes an all-zero `rmp_state` apart from the page size,
    /// and RMPREAD reports hypervisor pages with GPA and ASID 0.
    ///
    /// A 4 KiB update inside a hypervisor-owned 2 MiB entry first splits that entry
    /// into 512 hypervisor-owned 4 KiB entries (it carries no guest state). A 2 MiB
    /// update of an existing 2 MiB entry replaces it.
    pub fn rmpupdate(&mut self, pfn: u64, state: RmpUpdate) -> Result<(), RmpError> {
        let mut new = 0;
        let mut new_meta = 0;
        if state.assigned {
            if state.asid == 0
                || state.asid > MAX_ASID
                || !state.gpa.is_multiple_of(state.size.bytes())
            {
                return Err(RmpError::FailInput);
            }
            new |= ASSIGNED;
            new_meta = meta_of(state.gpa, state.asid);
        }
        if state.immutable {
            new |= IMMUTABLE;
        }
        match state.size {
            RmpPageSize::Size4K => {
                let cur = self.effective_bits(pfn).ok_or(RmpError::FailInput)?;
                if cur & IMMUTABLE != 0 {
                    return Err(RmpError::FailPermission);
                }
                if cur & IN_2M != 0 {
                    if cur & ASSIGNED != 0 {
                        return Err(RmpError::FailOverlap);
                    }
                    let (flags, meta) = self.region_mut(head_of(pfn))?;
                    flags.fill(0);
                    meta.fill(0);
                }
                let (flags, meta) = self.page_mut(pfn)?;
                *flags = new;
                *meta = new_meta;
                self.perms.remove(&pfn);
            }
            RmpPageSize::Size2M => {
                let (flags, meta) = self.region_mut(pfn)?;
                let (head, tails) = flags.split_first_mut().ok_or(RmpError::FailInput)?;
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
                meta.fill(0);
                if let Some(m) = meta.first_mut() {
                    *m = new_meta;
                }
                self.perms.retain(|&p, _| head_of(p) != pfn);
            }
        }
        Ok(())
    }

    /// PSMASH: split the 2 MiB entry at the 2 MiB-aligned host frame `pfn` into 512
    /// 4 KiB entries, each keeping the assigned, validated and immutable state and the
    /// ASID of the 2 MiB entry; entry `i` of an assigned entry is at the 2 MiB entry's
    /// GPA + `i` * 4 KiB (a hypervisor-owned one stays at GPA 0). `FailInput` if `pfn`
    /// is not 2 MiB-aligned, its region is outside guest RAM, or the entry is not a
    /// 2 MiB entry (hardware: FAIL_INPUT).
    pub fn psmash(&mut self, pfn: u64) -> Result<(), RmpError> {
        let (flags, meta) = self.region_mut(pfn)?;
        let head = flags.first().copied().ok_or(RmpError::FailInput)?;
        let head_meta = meta.first().copied().ok_or(RmpError::FailInput)?;
        if head & IN_2M == 0 {
            return Err(RmpError::FailInput);
        }
        flags.fill(head & STATE);
        if head & ASSIGNED != 0 {
            // The head's GPA is 2 MiB-aligned, so adding up to 511 pages stays inside
            // its 2 MiB and never carries into the next one or overflows.
            for (offset, m) in (0..PAGES_PER_2M).zip(meta.iter_mut()) {
                *m = head_meta + offset * PAGE_SIZE_4K;
            }
        }
        if let Some(p) = self.perms.get(&pfn).copied() {
            for g in pfn + 1..pfn + PAGES_PER_2M {
                self.perms.insert(g, p);
            }
        }
        Ok(())
    }

    /// PVALIDATE as the guest `asid` issues it (docs/specs.md 3.1): set (`validate = true`)
    /// or rescind the validated bit of the page or 2 MiB region at the host frame
    /// `pfn`, which the guest reached through the GPA `gpa` (in nacre
    /// `gpa == pfn * 4096`; a caller passes both so the check below is the hardware's).
    ///
    /// - `Ok(Done { changed })`: success; `changed == false` is the CF = 1 case;
    /// - `Ok(NeedsPsmash)`: a 4 KiB request inside a 2 MiB entry assigned to the
    ///   caller at that GPA; the caller PSMASHes the region and retries (docs/specs.md 3.4);
    /// - `Err(FailInput)`: `pfn` outside guest RAM, an unaligned or out-of-range 2 MiB
    ///   request, or the entry is not assigned to `asid` at `gpa` (for a 4 KiB request
    ///   inside a 2 MiB entry: at the entry's GPA plus the page's offset);
    /// - `Err(FailSizeMismatch)`: a 2 MiB request over 4 KiB entries (the guest falls
    ///   back to 512 4 KiB requests).
    ///
    /// An entry that is not the caller's (unassigned, another ASID, another GPA) is on
    /// hardware an RMP nested page fault (`PFERR_GUEST_RMP`, docs/specs.md 3.4) that the
    /// host cannot resolve: KVM's `sev_handle_rmp_fault` only repairs size mismatches,
    /// and the guest never gets to run the instruction. nacre has no such fault to
    /// deliver, so it reports `FailInput` instead, the answer it already gives for a
    /// page that is not assigned at all, and leaves the RMP unchanged; the guest sees
    /// the instruction fail rather than hang.
    pub fn pvalidate(
        &mut self,
        pfn: u64,
        asid: u32,
        gpa: u64,
        size: RmpPageSize,
        validate: bool,
    ) -> Result<PvalidateOutcome, RmpError> {
        let owned = self.owned_by(pfn, asid, gpa);
        let bits = match size {
            RmpPageSize::Size4K => {
                let cur = self.effective_bits(pfn).ok_or(RmpError::FailInput)?;
                if cur & ASSIGNED == 0 || !owned {
                    return Err(RmpError::FailInput);
                }
                if cur & IN_2M != 0 {
                    return Ok(PvalidateOutcome::NeedsPsmash);
                }
                self.page_mut(pfn)?.0
            }
            RmpPageSize::Size2M => {
                let head = self
                    .region_mut(pfn)?
                    .0
                    .first_mut()
                    .ok_or(RmpError::FailInput)?;
                if *head & IN_2M == 0 {
                    return Err(RmpError::FailSizeMismatch);
                }
                if *head & ASSIGNED == 0 || !owned {
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
    /// VMSA attribute (docs/specs.md 3.1, attribute bit 16) or a VMSA `LAUNCH_UPDATE`
    /// leaves behind. `FailInput` if `gfn` is outside guest RAM or not assigned;
    /// `FailSizeMismatch` if the page lies inside a 2 MiB entry (a VMSA is always a
    /// 4 KiB page; the host PSMASHes and retries, docs/specs.md 3.4 trigger (a)).
    pub fn set_vmsa(&mut self, gfn: u64, vmsa: bool) -> Result<(), RmpError> {
        let cur = self.effective_bits(gfn).ok_or(RmpError::FailInput)?;
        if cur & ASSIGNED == 0 {
            return Err(RmpError::FailInput);
        }
        if cur & IN_2M != 0 {
            return Err(RmpError::FailSizeMismatch);
        }
        let bits = self.page_mut(gfn)?.0;
        if vmsa {
            *bits |= VMSA;
        } else {
            *bits &= !VMSA;
        }
        Ok(())
    }

    /// RMPADJUST as a VMPL0 guest `asid` issues it (docs/specs.md 3.1): grant the target
    /// VMPL (attribute bits 7:0) the permission mask in bits 11:8, and set or clear the
    /// VMSA bit (bit 16), on the page or 2 MiB region at the host frame `pfn`, which the
    /// guest reached through the GPA `gpa` (in nacre `gpa == pfn * 4096`).
    ///
    /// - `Err(FailInput)`: `pfn` outside guest RAM, an unaligned 2 MiB request, a
    ///   target VMPL above 3, a VMSA request at 2 MiB (a VMSA is a 4 KiB page), a page
    ///   that is not validated, or one that is not assigned to `asid` at `gpa` (checked
    ///   as in [`Rmp::pvalidate`], and modelled as `FailInput` for the same reason);
    /// - `Err(FailPermission)`: the target VMPL is not numerically greater than the
    ///   caller's (VMPL0), so target 0;
    /// - `Err(FailSizeMismatch)`: a 2 MiB request over 4 KiB entries;
    /// - `Ok(NeedsPsmash)`: a 4 KiB request inside a 2 MiB entry, resolved by the host
    ///   like PVALIDATE's (docs/specs.md 3.4 trigger (a));
    /// - `Ok(Done { changed })`: success (EAX = 0).
    pub fn rmpadjust(
        &mut self,
        pfn: u64,
        asid: u32,
        gpa: u64,
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
            RmpPageSize::Size4K => self.effective_bits(pfn).ok_or(RmpError::FailInput)?,
            RmpPageSize::Size2M => {
                let head = *self.region_mut(pfn)?.0.first().ok_or(RmpError::FailInput)?;
                if head & IN_2M == 0 {
                    return Err(RmpError::FailSizeMismatch);
                }
                head
            }
        };
        if cur & ASSIGNED == 0 || cur & VALIDATED == 0 || !self.owned_by(pfn, asid, gpa) {
            return Err(RmpError::FailInput);
        }
        if target == 0 {
            return Err(RmpError::FailPermission);
        }
        if size == RmpPageSize::Size4K && cur & IN_2M != 0 {
            return Ok(PvalidateOutcome::NeedsPsmash);
        }
        let bits = self.page_mut(pfn)?.0;
        let before = *bits;
        if vmsa {
            *bits |= VMSA;
        } else {
            *bits &= !VMSA;
        }
        let mut changed = before != *bits;
        let slot = (target - 1) as usize;
        let masks = self.perms.entry(pfn).or_insert([0; 3]);
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

    /// Mark a measured launch page: assigned to [`GUEST_ASID`] at GPA `gfn * 4096` and
    /// validated, at 4 KiB, which is what `SNP_LAUNCH_UPDATE` leaves behind. Errors as
    /// [`Rmp::rmpupdate`] at 4 KiB.
    pub fn launch_page(&mut self, gfn: u64) -> Result<(), RmpError> {
        let state = RmpUpdate::private(gpa_of(gfn), GUEST_ASID, RmpPageSize::Size4K);
        self.rmpupdate(gfn, state)?;
        *self.page_mut(gfn)?.0 |= VALIDATED;
        Ok(())
    }

    /// The access pair of `gfn` and the end of the stretch, starting at `gfn`, over
    /// which it is certainly the same (the rest of a 2 MiB entry, else one page). The
    /// host MMU builds its runs of equal reachability from these.
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

    /// Every entry of `rmp`, page by page.
    fn snapshot_of(rmp: &Rmp) -> Vec<RmpEntry> {
        (0..rmp.pages()).map(|g| rmp.entry(g).unwrap()).collect()
    }

    /// The update nacre's host makes for `pfn`: assigned to the guest at GPA
    /// `pfn * 4096`, or hypervisor-owned (then GPA and ASID are ignored).
    fn upd(pfn: u64, assigned: bool, size: RmpPageSize, immutable: bool) -> RmpUpdate {
        RmpUpdate {
            assigned,
            size,
            immutable,
            gpa: gpa_of(pfn),
            asid: GUEST_ASID,
        }
    }

    /// Check the storage invariants of the flag and GPA/ASID encoding.
    fn check_storage(rmp: &Rmp) {
        assert_eq!(rmp.flags.len(), rmp.meta.len());
        for (i, (&b, &m)) in rmp.flags.iter().zip(&rmp.meta).enumerate() {
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
                        assert_eq!(rmp.meta[j], 0, "tail {j} holds a GPA/ASID");
                    }
                }
            }
            if b & VALIDATED != 0 {
                assert!(b & ASSIGNED != 0, "page {gfn} validated but not assigned");
            }
            let (gpa, asid) = meta_parts(m);
            if b & ASSIGNED == 0 {
                assert_eq!(m, 0, "hypervisor-owned page {gfn} holds a GPA/ASID");
            } else {
                let size = if b & IN_2M != 0 { M2 } else { K4 };
                assert!(asid != 0 && asid <= MAX_ASID, "page {gfn}: ASID {asid}");
                assert!(gpa.is_multiple_of(size.bytes()), "page {gfn}: GPA {gpa:#x}");
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
                gpa: 0,
                asid: 0,
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
        rmp.rmpupdate(5, upd(5, true, K4, false)).unwrap();
        assert!(rmp.entry(5).unwrap().assigned);
        assert!(!rmp.shared_accessible(5));
        assert!(!rmp.private_accessible(5));
        assert_eq!(
            rmp.pvalidate(5, GUEST_ASID, gpa_of(5), K4, true),
            done(true)
        );
        assert!(rmp.private_accessible(5));
        // Reassignment clears validated.
        rmp.rmpupdate(5, upd(5, true, K4, false)).unwrap();
        assert!(!rmp.entry(5).unwrap().validated);
        rmp.rmpupdate(5, upd(5, false, K4, false)).unwrap();
        assert!(rmp.shared_accessible(5));
    }

    #[test]
    fn rmpupdate_fail_input() {
        let mut rmp = Rmp::new(1000);
        assert_eq!(
            rmp.rmpupdate(1000, upd(1000, true, K4, false)),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.rmpupdate(u64::MAX, upd(u64::MAX, true, K4, false)),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.rmpupdate(1, upd(1, true, M2, false)),
            Err(RmpError::FailInput)
        );
        // Aligned but the region runs past the end of RAM (1000 < 1024).
        assert_eq!(
            rmp.rmpupdate(512, upd(512, true, M2, false)),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.rmpupdate(u64::MAX - 511, upd(u64::MAX - 511, true, M2, false)),
            Err(RmpError::FailInput)
        );
        rmp.rmpupdate(0, upd(0, true, M2, false)).unwrap();
        check_storage(&rmp);
    }

    #[test]
    fn rmpupdate_fail_overlap() {
        let mut rmp = Rmp::new(1024);
        rmp.rmpupdate(700, upd(700, true, K4, false)).unwrap();
        assert_eq!(
            rmp.rmpupdate(512, upd(512, true, M2, false)),
            Err(RmpError::FailOverlap)
        );
        assert_eq!(
            rmp.rmpupdate(512, upd(512, false, M2, false)),
            Err(RmpError::FailOverlap)
        );
        rmp.rmpupdate(0, upd(0, true, M2, false)).unwrap();
        // 4K update of any page, head included, inside the assigned 2M entry.
        assert_eq!(
            rmp.rmpupdate(3, upd(3, false, K4, false)),
            Err(RmpError::FailOverlap)
        );
        assert_eq!(
            rmp.rmpupdate(0, upd(0, true, K4, false)),
            Err(RmpError::FailOverlap)
        );
        assert!(rmp.entry(3).unwrap().assigned);
        check_storage(&rmp);
    }

    #[test]
    fn rmpupdate_fail_permission() {
        let mut rmp = Rmp::new(1024);
        rmp.rmpupdate(7, upd(7, true, K4, true)).unwrap();
        assert!(rmp.entry(7).unwrap().immutable);
        assert_eq!(
            rmp.rmpupdate(7, upd(7, false, K4, false)),
            Err(RmpError::FailPermission)
        );
        assert_eq!(
            rmp.rmpupdate(0, upd(0, true, M2, false)),
            Err(RmpError::FailPermission)
        );
        rmp.rmpupdate(512, upd(512, true, M2, true)).unwrap();
        assert_eq!(
            rmp.rmpupdate(512, upd(512, false, M2, false)),
            Err(RmpError::FailPermission)
        );
        assert_eq!(
            rmp.rmpupdate(600, upd(600, false, K4, false)),
            Err(RmpError::FailPermission)
        );
        check_storage(&rmp);
    }

    #[test]
    fn rmpupdate_replaces_2m_and_splits_shared_2m() {
        let mut rmp = Rmp::new(1024);
        rmp.rmpupdate(512, upd(512, true, M2, false)).unwrap();
        assert_eq!(
            rmp.pvalidate(512, GUEST_ASID, gpa_of(512), M2, true),
            done(true)
        );
        // Returning the whole 2M entry is allowed and clears validated.
        rmp.rmpupdate(512, upd(512, false, M2, false)).unwrap();
        let e = rmp.entry(1000).unwrap();
        assert_eq!((e.assigned, e.validated, e.size), (false, false, M2));
        // A 4K update inside a hypervisor-owned 2M entry splits it.
        rmp.rmpupdate(513, upd(513, true, K4, false)).unwrap();
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
        rmp.rmpupdate(512, upd(512, true, M2, false)).unwrap();
        rmp.pvalidate(512, GUEST_ASID, gpa_of(512), M2, true)
            .unwrap();
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
        assert_eq!(
            rmp.pvalidate(3, GUEST_ASID, gpa_of(3), K4, true),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.pvalidate(2048, GUEST_ASID, gpa_of(2048), K4, true),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.pvalidate(3, GUEST_ASID, gpa_of(3), M2, true),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.pvalidate(2048, GUEST_ASID, gpa_of(2048), M2, true),
            Err(RmpError::FailInput)
        );
        // 2M over 4K entries.
        rmp.rmpupdate(0, upd(0, true, K4, false)).unwrap();
        assert_eq!(
            rmp.pvalidate(0, GUEST_ASID, gpa_of(0), M2, true),
            Err(RmpError::FailSizeMismatch)
        );
        // 4K: change, then CF=1 on the repeat, both directions.
        assert_eq!(
            rmp.pvalidate(0, GUEST_ASID, gpa_of(0), K4, true),
            done(true)
        );
        assert_eq!(
            rmp.pvalidate(0, GUEST_ASID, gpa_of(0), K4, true),
            done(false)
        );
        assert_eq!(
            rmp.pvalidate(0, GUEST_ASID, gpa_of(0), K4, false),
            done(true)
        );
        assert_eq!(
            rmp.pvalidate(0, GUEST_ASID, gpa_of(0), K4, false),
            done(false)
        );
        // 2M entry: unassigned 2M -> FailInput at both sizes.
        rmp.rmpupdate(1024, upd(1024, false, M2, false)).unwrap();
        assert_eq!(
            rmp.pvalidate(1024, GUEST_ASID, gpa_of(1024), M2, true),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.pvalidate(1030, GUEST_ASID, gpa_of(1030), K4, true),
            Err(RmpError::FailInput)
        );
        // Assigned 2M: 2M works, 4K needs PSMASH.
        rmp.rmpupdate(1536, upd(1536, true, M2, false)).unwrap();
        assert_eq!(
            rmp.pvalidate(1536, GUEST_ASID, gpa_of(1536), M2, true),
            done(true)
        );
        assert_eq!(
            rmp.pvalidate(1536, GUEST_ASID, gpa_of(1536), M2, true),
            done(false)
        );
        assert!(rmp.private_accessible(2047));
        assert_eq!(
            rmp.pvalidate(1600, GUEST_ASID, gpa_of(1600), K4, false),
            Ok(PvalidateOutcome::NeedsPsmash)
        );
        assert!(
            rmp.private_accessible(1600),
            "NeedsPsmash leaves the RMP unchanged"
        );
        rmp.psmash(1536).unwrap();
        assert_eq!(
            rmp.pvalidate(1600, GUEST_ASID, gpa_of(1600), K4, false),
            done(true)
        );
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
        rmp.rmpupdate(9, upd(9, true, K4, false)).unwrap();
        assert!(!rmp.entry(9).unwrap().vmsa, "RMPUPDATE clears the VMSA bit");
        rmp.rmpupdate(512, upd(512, true, M2, false)).unwrap();
        assert_eq!(rmp.set_vmsa(520, true), Err(RmpError::FailSizeMismatch));
    }

    #[test]
    fn launch_page_paths() {
        let mut rmp = Rmp::new(1024);
        rmp.launch_page(10).unwrap();
        let e = rmp.entry(10).unwrap();
        assert_eq!((e.assigned, e.validated, e.size), (true, true, K4));
        assert_eq!(rmp.launch_page(1024), Err(RmpError::FailInput));
        rmp.rmpupdate(512, upd(512, true, M2, false)).unwrap();
        assert_eq!(rmp.launch_page(600), Err(RmpError::FailOverlap));
        rmp.rmpupdate(20, upd(20, true, K4, true)).unwrap();
        assert_eq!(rmp.launch_page(20), Err(RmpError::FailPermission));
    }

    #[test]
    fn entry_reports_asid_and_gpa_until_returned_to_the_hypervisor() {
        let mut rmp = Rmp::new(1024);
        // 4 KiB, at a GPA other than the frame's own: the entry records what it was given.
        rmp.rmpupdate(5, RmpUpdate::private(0x1234_5000, 7, K4))
            .unwrap();
        let e = rmp.entry(5).unwrap();
        assert_eq!((e.assigned, e.gpa, e.asid), (true, 0x1234_5000, 7));
        // Back to the hypervisor, with junk in the ignored fields: GPA and ASID read 0.
        let back = RmpUpdate {
            gpa: 0x1234_5001,
            asid: 9,
            ..RmpUpdate::shared(K4)
        };
        rmp.rmpupdate(5, back).unwrap();
        let e = rmp.entry(5).unwrap();
        assert_eq!((e.assigned, e.gpa, e.asid), (false, 0, 0));
        // 2 MiB: every page reports the 2 MiB entry, so the head's GPA.
        rmp.rmpupdate(512, RmpUpdate::private(0x4000_0000, GUEST_ASID, M2))
            .unwrap();
        for gfn in [512, 513, 1023] {
            let e = rmp.entry(gfn).unwrap();
            assert_eq!((e.gpa, e.asid, e.size), (0x4000_0000, GUEST_ASID, M2));
        }
        rmp.rmpupdate(512, RmpUpdate::shared(M2)).unwrap();
        let e = rmp.entry(700).unwrap();
        assert_eq!((e.assigned, e.gpa, e.asid, e.size), (false, 0, 0, M2));
        // A launch page is the guest's at its own GPA.
        rmp.launch_page(9).unwrap();
        let e = rmp.entry(9).unwrap();
        assert_eq!((e.gpa, e.asid, e.validated), (9 * 4096, GUEST_ASID, true));
        check_storage(&rmp);
    }

    #[test]
    fn rmpupdate_assigned_needs_an_asid_and_an_aligned_gpa() {
        let mut rmp = Rmp::new(1024);
        let before = rmp.entry(5).unwrap();
        let bad = [
            (5, RmpUpdate::private(gpa_of(5), 0, K4)),
            (5, RmpUpdate::private(gpa_of(5), MAX_ASID + 1, K4)),
            (5, RmpUpdate::private(gpa_of(5) + 1, GUEST_ASID, K4)),
            (5, RmpUpdate::private(gpa_of(5) + 0x800, GUEST_ASID, K4)),
            (512, RmpUpdate::private(0, 0, M2)),
            (512, RmpUpdate::private(gpa_of(512) + 4096, GUEST_ASID, M2)),
            (512, RmpUpdate::private(0x20_1000, GUEST_ASID, M2)),
        ];
        for (pfn, state) in bad {
            assert_eq!(
                rmp.rmpupdate(pfn, state),
                Err(RmpError::FailInput),
                "{state:?}"
            );
        }
        // Rejected before the entry is looked at: an immutable entry still says
        // FAIL_INPUT for a bad operand.
        rmp.rmpupdate(6, upd(6, true, K4, true)).unwrap();
        assert_eq!(
            rmp.rmpupdate(6, RmpUpdate::private(gpa_of(6), 0, K4)),
            Err(RmpError::FailInput)
        );
        assert_eq!(rmp.entry(5), Some(before));
        assert!(!rmp.entry(600).unwrap().assigned);
        // The widest ASID the entry holds, and a 2 MiB-aligned GPA, are fine.
        rmp.rmpupdate(5, RmpUpdate::private(gpa_of(5), MAX_ASID, K4))
            .unwrap();
        assert_eq!(rmp.entry(5).unwrap().asid, MAX_ASID);
        rmp.rmpupdate(512, RmpUpdate::private(0x20_0000 * 3, GUEST_ASID, M2))
            .unwrap();
        // Hypervisor-owned updates ignore GPA and ASID, even unaligned or zero.
        let shared = RmpUpdate {
            gpa: 0x123,
            ..RmpUpdate::shared(K4)
        };
        rmp.rmpupdate(5, shared).unwrap();
        check_storage(&rmp);
    }

    #[test]
    fn psmash_gives_each_4k_entry_its_gpa_and_the_asid() {
        let mut rmp = Rmp::new(1024);
        let base = 0x8000_0000;
        rmp.rmpupdate(512, RmpUpdate::private(base, 5, M2)).unwrap();
        assert_eq!(rmp.pvalidate(512, 5, base, M2, true), done(true));
        rmp.psmash(512).unwrap();
        for gfn in 512..1024 {
            let e = rmp.entry(gfn).unwrap();
            let gpa = base + (gfn - 512) * 4096;
            assert_eq!(
                (e.assigned, e.validated, e.size, e.asid, e.gpa),
                (true, true, K4, 5, gpa),
                "page {gfn}"
            );
        }
        // Each split entry answers to its own GPA only.
        assert_eq!(
            rmp.pvalidate(700, 5, base + 188 * 4096, K4, false),
            done(true)
        );
        assert_eq!(
            rmp.pvalidate(701, 5, base + 188 * 4096, K4, false),
            Err(RmpError::FailInput)
        );
        // A hypervisor-owned 2 MiB entry splits into hypervisor-owned entries at GPA 0.
        rmp.rmpupdate(0, RmpUpdate::shared(M2)).unwrap();
        rmp.psmash(0).unwrap();
        for gfn in 0..512 {
            let e = rmp.entry(gfn).unwrap();
            assert_eq!((e.assigned, e.size, e.asid, e.gpa), (false, K4, 0, 0));
        }
        check_storage(&rmp);
    }

    #[test]
    fn pvalidate_with_the_wrong_asid_or_gpa_fails_and_changes_nothing() {
        let mut rmp = Rmp::new(2048);
        rmp.rmpupdate(5, upd(5, true, K4, false)).unwrap();
        rmp.launch_page(6).unwrap();
        rmp.rmpupdate(1024, upd(1024, true, M2, false)).unwrap();
        let before = snapshot_of(&rmp);
        let g = GUEST_ASID;
        let other = GUEST_ASID + 1;
        let bad = [
            // 4 KiB entries: another ASID, the hypervisor's, another page's GPA, an
            // unaligned GPA, in both directions.
            (5, other, gpa_of(5), K4, true),
            (5, 0, gpa_of(5), K4, true),
            (5, g, gpa_of(6), K4, true),
            (5, g, gpa_of(5) + 8, K4, true),
            (6, other, gpa_of(6), K4, false),
            (6, g, gpa_of(5), K4, false),
            // 2 MiB entry at 2 MiB: another ASID or GPA.
            (1024, other, gpa_of(1024), M2, true),
            (1024, g, gpa_of(512), M2, true),
            (1024, g, gpa_of(1025), M2, true),
            // 4 KiB inside the 2 MiB entry: checked against head GPA + offset before
            // any PSMASH is asked for.
            (1030, other, gpa_of(1030), K4, true),
            (1030, g, gpa_of(1024), K4, true),
            (1030, g, gpa_of(1031), K4, true),
        ];
        for (pfn, asid, gpa, size, v) in bad {
            assert_eq!(
                rmp.pvalidate(pfn, asid, gpa, size, v),
                Err(RmpError::FailInput),
                "pfn {pfn} asid {asid} gpa {gpa:#x} {size:?}"
            );
            assert_eq!(snapshot_of(&rmp), before, "pfn {pfn} changed the RMP");
        }
        check_storage(&rmp);
        // The right ASID and GPA work.
        assert_eq!(rmp.pvalidate(5, g, gpa_of(5), K4, true), done(true));
        assert_eq!(rmp.pvalidate(6, g, gpa_of(6), K4, false), done(true));
        assert_eq!(
            rmp.pvalidate(1030, g, gpa_of(1030), K4, true),
            Ok(PvalidateOutcome::NeedsPsmash)
        );
        assert_eq!(rmp.pvalidate(1024, g, gpa_of(1024), M2, true), done(true));
    }

    #[test]
    fn rmpadjust_checks_asid_and_gpa() {
        use rmpadjust_attrs::{PERM_SHIFT, VMSA as VMSA_ATTR};
        let mut rmp = Rmp::new(1024);
        rmp.launch_page(9).unwrap();
        let attrs = 1 | (0b0011 << PERM_SHIFT) | VMSA_ATTR;
        let g = GUEST_ASID;
        for (asid, gpa) in [(g + 1, gpa_of(9)), (0, gpa_of(9)), (g, gpa_of(10))] {
            assert_eq!(
                rmp.rmpadjust(9, asid, gpa, K4, attrs),
                Err(RmpError::FailInput)
            );
            assert!(!rmp.entry(9).unwrap().vmsa);
            assert_eq!(rmp.vmpl_permissions(9, 1), 0);
        }
        assert_eq!(rmp.rmpadjust(9, g, gpa_of(9), K4, attrs), done(true));
        assert!(rmp.entry(9).unwrap().vmsa);
        assert_eq!(rmp.vmpl_permissions(9, 1), 0b0011);
        // Inside a validated 2 MiB entry: head GPA + offset, or FAIL_INPUT.
        rmp.rmpupdate(512, upd(512, true, M2, false)).unwrap();
        rmp.pvalidate(512, g, gpa_of(512), M2, true).unwrap();
        assert_eq!(
            rmp.rmpadjust(600, g, gpa_of(512), K4, 1),
            Err(RmpError::FailInput)
        );
        assert_eq!(
            rmp.rmpadjust(600, g, gpa_of(600), K4, 1),
            Ok(PvalidateOutcome::NeedsPsmash)
        );
        assert_eq!(
            rmp.rmpadjust(512, g + 1, gpa_of(512), M2, 1),
            Err(RmpError::FailInput)
        );
        assert_eq!(rmp.rmpadjust(512, g, gpa_of(512), M2, 1), done(false));
    }

    // ---- Property test against a reference model ----

    const PAGES: u64 = 2 * 512 + 37;

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct MState {
        assigned: bool,
        validated: bool,
        immutable: bool,
        vmsa: bool,
        /// The entry's GPA (of its first page) and ASID; 0 unless assigned.
        gpa: u64,
        asid: u32,
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

        /// The GPA the page `gfn` is assigned at: its entry's GPA plus its offset.
        fn page_gpa(&self, gfn: u64) -> Option<(MState, RmpPageSize, u64)> {
            let (m, sz) = self.eff(gfn)?;
            let offset = if sz == M2 { gfn % 512 } else { 0 };
            Some((m, sz, m.gpa + offset * 4096))
        }

        fn region_ok(gfn: u64) -> bool {
            gfn.is_multiple_of(512) && gfn.checked_add(512).is_some_and(|e| e <= PAGES)
        }

        fn rmpupdate(&mut self, gfn: u64, st: RmpUpdate) -> Result<(), RmpError> {
            if st.assigned
                && (st.asid == 0 || st.asid > MAX_ASID || !st.gpa.is_multiple_of(st.size.bytes()))
            {
                return Err(RmpError::FailInput);
            }
            let new = MState {
                assigned: st.assigned,
                validated: false,
                immutable: st.immutable,
                vmsa: false,
                gpa: if st.assigned { st.gpa } else { 0 },
                asid: if st.assigned { st.asid } else { 0 },
            };
            match st.size {
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
            for (i, g) in (gfn..gfn + 512).enumerate() {
                let gpa = if m.assigned {
                    m.gpa + i as u64 * 4096
                } else {
                    0
                };
                self.e4k.insert(
                    g,
                    MState {
                        vmsa: false,
                        gpa,
                        ..m
                    },
                );
            }
            Ok(())
        }

        fn pvalidate(
            &mut self,
            gfn: u64,
            asid: u32,
            gpa: u64,
            size: RmpPageSize,
            v: bool,
        ) -> Result<PvalidateOutcome, RmpError> {
            let slot = match size {
                RmpPageSize::Size4K => {
                    let (cur, sz, at) = self.page_gpa(gfn).ok_or(RmpError::FailInput)?;
                    if !cur.assigned || cur.asid != asid || at != gpa {
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
                    if !m.assigned || m.asid != asid || m.gpa != gpa {
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
            asid: u32,
            gpa_off: u64,
        },
        Psmash {
            gfn: u64,
        },
        Pvalidate {
            gfn: u64,
            huge: bool,
            validate: bool,
            asid: u32,
            gpa_off: u64,
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

    /// Mostly the guest's ASID; sometimes the hypervisor's 0, another guest's, or one
    /// the entry cannot hold.
    fn asid_strategy() -> impl Strategy<Value = u32> {
        prop_oneof![
            12 => Just(GUEST_ASID),
            1 => Just(0u32),
            1 => Just(GUEST_ASID + 1),
            1 => MAX_ASID..=MAX_ASID + 1,
        ]
    }

    /// Added to the page's own GPA: mostly 0; sometimes another page, another 2 MiB
    /// region, or a GPA that is not page-aligned.
    fn gpa_off_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![
            12 => Just(0u64),
            1 => Just(4096u64),
            1 => Just(0x20_0000u64),
            1 => Just(1u64),
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (
                gfn_strategy(),
                any::<bool>(),
                any::<bool>(),
                prop::bool::weighted(0.05),
                asid_strategy(),
                gpa_off_strategy(),
            )
                .prop_map(|(gfn, assigned, huge, immutable, asid, gpa_off)| Op::Update {
                    gfn,
                    assigned,
                    huge,
                    immutable,
                    asid,
                    gpa_off,
                }),
            1 => gfn_strategy().prop_map(|gfn| Op::Psmash { gfn }),
            3 => (
                gfn_strategy(),
                any::<bool>(),
                any::<bool>(),
                asid_strategy(),
                gpa_off_strategy(),
            )
                .prop_map(|(gfn, huge, validate, asid, gpa_off)| Op::Pvalidate {
                    gfn,
                    huge,
                    validate,
                    asid,
                    gpa_off,
                }),
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
                    Op::Update { gfn, assigned, huge, immutable, asid, gpa_off } => {
                        let st = RmpUpdate {
                            assigned,
                            size: size(huge),
                            immutable,
                            gpa: gpa_of(gfn).wrapping_add(gpa_off),
                            asid,
                        };
                        let r = rmp.rmpupdate(gfn, st);
                        prop_assert_eq!(r, model.rmpupdate(gfn, st));
                        if r.is_ok() {
                            let n = if huge { 512 } else { 1 };
                            for g in gfn..gfn + n {
                                let e = rmp.entry(g).unwrap();
                                prop_assert!(!e.validated, "rmpupdate left {} validated", g);
                                prop_assert_eq!(e.assigned, assigned);
                                let want = if assigned { (st.gpa, st.asid) } else { (0, 0) };
                                prop_assert_eq!((e.gpa, e.asid), want);
                            }
                        } else {
                            prop_assert_eq!(&before, &snapshot(&rmp), "failed rmpupdate changed the RMP");
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
                                    (a.assigned, a.validated, a.immutable, a.asid),
                                    (b.assigned, b.validated, b.immutable, b.asid)
                                );
                                let want = if a.assigned { a.gpa + (g - gfn) * 4096 } else { 0 };
                                prop_assert_eq!(b.gpa, want);
                            }
                        }
                    }
                    Op::Pvalidate { gfn, huge, validate, asid, gpa_off } => {
                        let gpa = gpa_of(gfn).wrapping_add(gpa_off);
                        let r = rmp.pvalidate(gfn, asid, gpa, size(huge), validate);
                        prop_assert_eq!(r, model.pvalidate(gfn, asid, gpa, size(huge), validate));
                        if !matches!(r, Ok(PvalidateOutcome::Done { .. })) {
                            prop_assert_eq!(&before, &snapshot(&rmp), "failed pvalidate changed the RMP");
                        }
                    }
                    Op::Launch { gfn } => {
                        let r = rmp.launch_page(gfn);
                        let st = RmpUpdate::private(gpa_of(gfn), GUEST_ASID, K4);
                        let m = model.rmpupdate(gfn, st);
                        prop_assert_eq!(r, m);
                        if m.is_ok() {
                            let launched = MState {
                                assigned: true,
                                validated: true,
                                gpa: gpa_of(gfn),
                                asid: GUEST_ASID,
                                ..MState::default()
                            };
                            model.e4k.insert(gfn, launched);
                        }
                    }
                }
                check_storage(&rmp);
                let mut access = Vec::new();
                for g in 0..PAGES {
                    let (m, sz) = model.eff(g).unwrap();
                    let e = rmp.entry(g).unwrap();
                    prop_assert_eq!(
                        e,
                        RmpEntry {
                            assigned: m.assigned,
                            gpa: m.gpa,
                            asid: m.asid,
                            validated: m.validated,
                            size: sz,
                            immutable: m.immutable,
                            vmsa: m.vmsa,
                        }
                    );
                    prop_assert!(!e.validated || e.assigned, "validated but unassigned at {}", g);
                    let (p, s) = (rmp.private_accessible(g), rmp.shared_accessible(g));
                    prop_assert!(!(p && s), "page {} accessible through both views", g);
                    access.push((p, s));
                }
                // The stretch `access_span` reports has one access pair throughout.
                for g in 0..PAGES {
                    let (pair, end) = rmp.access_span(g);
                    prop_assert!(end > g, "empty span at {}", g);
                    for q in g..end.min(PAGES) {
                        prop_assert_eq!(access[q as usize], pair, "span from {} at {}", g, q);
                    }
                }
            }
        }
    }
}
