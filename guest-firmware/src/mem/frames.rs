//! The frame allocator. Guest RAM above the image is not yet usable as private memory;
//! the allocator makes it usable lazily, one 2 MiB chunk when it first hands out a
//! frame from it, through the platform's [`GuestPlatform::accept_range`] (a page-state
//! change where the platform needs one, then validation or acceptance 2 MiB at a time,
//! falling back to 4 KiB on a size mismatch). The firmware keeps its own bitmap of
//! every 4 KiB page it validated or accepted (trust assumption 3): doing it twice is
//! an error, and a platform that reports "already validated" or "already accepted"
//! for a page the bitmap says is not validated means the host remapped memory.

use super::paging::{PageTables, TableAlloc, NO_EXECUTE, WRITABLE};
use super::phys_to_virt;
use crate::error::FwError;
use crate::platform::GuestPlatform;
use nacre_shared_abi::layout::{align_up, DIRECT_MAP_VA_BASE, PAGE_SIZE_2M, PAGE_SIZE_4K};

/// The per-4 KiB validated record.
#[derive(Debug)]
pub struct Validated {
    /// Direct-map address of the bitmap.
    bits: *mut u64,
    pages: u64,
}

// SAFETY: the firmware is single-threaded; the bitmap is only reached through the
// global kernel lock.
unsafe impl Send for Validated {}

impl Validated {
    fn word(&self, page: u64) -> Option<*mut u64> {
        (page < self.pages).then(|| self.bits.wrapping_add((page / 64) as usize))
    }

    /// Whether the page holding `gpa` is validated.
    pub fn get(&self, gpa: u64) -> bool {
        let page = gpa / PAGE_SIZE_4K;
        match self.word(page) {
            // SAFETY: `word` bounds-checked the index; the bitmap is private memory.
            Some(w) => (unsafe { w.read() } & (1 << (page % 64))) != 0,
            None => false,
        }
    }

    /// Set the bits of every page in `[gpa, gpa + len)`.
    pub fn set_range(&mut self, gpa: u64, len: u64) {
        let mut page = gpa / PAGE_SIZE_4K;
        let end = (gpa + len).div_ceil(PAGE_SIZE_4K).min(self.pages);
        while page < end {
            let Some(w) = self.word(page) else { return };
            if page.is_multiple_of(64) && end - page >= 64 {
                // SAFETY: `word` bounds-checked the index; the bitmap is private memory.
                unsafe { w.write(u64::MAX) };
                page += 64;
            } else {
                // SAFETY: `word` bounds-checked the index; the bitmap is private memory
                // only the frame allocator reaches.
                unsafe { w.write(w.read() | (1 << (page % 64))) };
                page += 1;
            }
        }
    }

    /// Whether any page of `[gpa, gpa + len)` is validated (a word at a time where the
    /// range covers whole words).
    pub fn any_in_range(&self, gpa: u64, len: u64) -> bool {
        let mut page = gpa / PAGE_SIZE_4K;
        let end = (gpa + len).div_ceil(PAGE_SIZE_4K).min(self.pages);
        while page < end {
            let Some(w) = self.word(page) else {
                return false;
            };
            // SAFETY: `word` bounds-checked the index; the bitmap is private memory.
            let v = unsafe { w.read() };
            if page.is_multiple_of(64) && end - page >= 64 {
                if v != 0 {
                    return true;
                }
                page += 64;
            } else {
                if v & (1 << (page % 64)) != 0 {
                    return true;
                }
                page += 1;
            }
        }
        false
    }

    /// Set or clear the bit of the page holding `gpa`.
    pub fn set(&mut self, gpa: u64, value: bool) {
        let page = gpa / PAGE_SIZE_4K;
        if let Some(w) = self.word(page) {
            // SAFETY: `word` bounds-checked the index; the bitmap is private memory
            // only the frame allocator reaches.
            unsafe {
                let v = w.read();
                w.write(if value {
                    v | (1 << (page % 64))
                } else {
                    v & !(1 << (page % 64))
                });
            }
        }
    }
}

/// Physical memory manager.
#[derive(Debug)]
pub struct Frames {
    ram_end: u64,
    next: u64,
    accepted_end: u64,
    /// Free 4 KiB frames (each holds the next link).
    free_head: u64,
    /// Free 2 MiB frames (each holds the next link).
    free_2m_head: u64,
    /// A reused 2 MiB frame being handed out 4 KiB at a time: `[reuse, reuse_end)`.
    reuse: u64,
    reuse_end: u64,
    validated: Validated,
    /// 2 MiB regions validated at 4 KiB after a size mismatch (diagnostics).
    pub size_mismatches: u64,
    /// The firmware's page tables, to add each accepted chunk to the direct map
    /// (its page directories were prepared at boot, so this never allocates).
    pt: PageTables,
    /// Whether the platform guarantees that freshly accepted memory reads as zeros
    /// ([`GuestPlatform::fresh_memory_is_zero`]); where it does not, every frame is
    /// zeroed.
    fresh_is_zero: bool,
    /// Validate page by page instead of 2 MiB at a time (boot flag
    /// `BOOT_FLAG_VALIDATE_4K`).
    validate_4k_only: bool,
    /// Frames freed while another vCPU's TLB may still map them (`arch/smp.rs`):
    /// neither written nor reused until the other vCPUs flushed.
    deferred: [u64; DEFERRED_FRAMES],
    ndeferred: usize,
    /// Frames on the 4 KiB and the 2 MiB free lists.
    nfree: u64,
    nfree_2m: u64,
    /// 4 KiB frames handed out and not returned yet, and the most there ever were
    /// (`nacre run --stats`: `memory.used_kib`, `memory.peak_kib`).
    used: u64,
    peak: u64,
}

/// Frames that wait for a TLB shoot-down at most; one more forces it.
const DEFERRED_FRAMES: usize = 64;

impl Frames {
    /// Accept the first chunks of free RAM at `start` (2 MiB aligned) and put the
    /// validated bitmap there; the ranges validated at launch are recorded with
    /// [`Self::record_validated`].
    pub fn new(
        plat: &mut dyn GuestPlatform,
        pt: PageTables,
        start: u64,
        ram_end: u64,
        validate_4k_only: bool,
    ) -> Result<Self, FwError> {
        let pages = ram_end / PAGE_SIZE_4K;
        let bitmap_bytes = align_up(pages.div_ceil(8), PAGE_SIZE_4K);
        let first_len = align_up(bitmap_bytes, PAGE_SIZE_2M);
        if start + first_len > ram_end {
            return Err(FwError::OutOfMemory);
        }
        let mut frames = Self {
            ram_end,
            next: start + bitmap_bytes,
            accepted_end: start,
            free_head: 0,
            free_2m_head: 0,
            reuse: 0,
            reuse_end: 0,
            validated: Validated {
                bits: phys_to_virt(start) as *mut u64,
                pages,
            },
            size_mismatches: 0,
            pt,
            fresh_is_zero: plat.fresh_memory_is_zero(),
            validate_4k_only,
            deferred: [0; DEFERRED_FRAMES],
            ndeferred: 0,
            nfree: 0,
            nfree_2m: 0,
            used: 0,
            peak: 0,
        };
        frames.accept(plat, start, first_len, false)?;
        if !frames.fresh_is_zero {
            // SAFETY: the bitmap's pages were just accepted and are private.
            unsafe {
                core::ptr::write_bytes(frames.validated.bits as *mut u8, 0, bitmap_bytes as usize)
            };
        }
        frames.validated.set_range(start, first_len);
        frames.accepted_end = start + first_len;
        Ok(frames)
    }

    /// Record `(GPA, bytes)` ranges the platform validated at launch.
    pub fn record_validated(&mut self, ranges: &[(u64, u64)]) {
        for &(gpa, len) in ranges {
            self.validated.set_range(gpa, len);
        }
    }

    /// Guest RAM in bytes, and how much of it is not handed out yet (unaccepted RAM,
    /// frames and 2 MiB frames on the free lists are not counted, so this is a lower
    /// bound).
    pub fn usage(&self) -> (u64, u64) {
        let untouched = self.ram_end - self.accepted_end;
        let chunk = self.accepted_end.saturating_sub(self.next);
        (self.ram_end, untouched + chunk)
    }

    /// 4 KiB frames not handed out: free, waiting for a shoot-down, or not yet
    /// accepted (exact, unlike [`Self::usage`]).
    pub fn available(&self) -> u64 {
        let untouched = (self.ram_end - self.accepted_end) / PAGE_SIZE_4K;
        let chunk = self.accepted_end.saturating_sub(self.next) / PAGE_SIZE_4K;
        let reuse = (self.reuse_end - self.reuse) / PAGE_SIZE_4K;
        untouched
            + chunk
            + reuse
            + self.nfree
            + self.nfree_2m * (PAGE_SIZE_2M / PAGE_SIZE_4K)
            + self.ndeferred as u64
    }

    /// The record of validated pages.
    pub fn validated(&mut self) -> &mut Validated {
        &mut self.validated
    }

    /// Make `[gpa, gpa + len)` private and validate or accept it, 2 MiB at a time
    /// where aligned.
    fn accept(
        &mut self,
        plat: &mut dyn GuestPlatform,
        gpa: u64,
        len: u64,
        record: bool,
    ) -> Result<(), FwError> {
        // Map the chunk in the direct map first: PVALIDATE names it by that address.
        let mut no_alloc = NoAlloc;
        self.pt
            .map_range_2m(
                DIRECT_MAP_VA_BASE + gpa,
                gpa,
                len.div_ceil(PAGE_SIZE_2M),
                WRITABLE | NO_EXECUTE,
                &mut no_alloc,
            )
            .ok_or(FwError::OutOfMemory)?;
        if record && self.validated.any_in_range(gpa, len) {
            let first = (gpa..gpa + len)
                .step_by(PAGE_SIZE_4K as usize)
                .find(|&p| self.validated.get(p))
                .unwrap_or(gpa);
            return Err(FwError::DoubleValidation { gpa: first });
        }
        // SAFETY: the chunk lies at or above `accepted_end`, which only grows, and
        // below the end of RAM: nothing has been handed out from it.
        self.size_mismatches += unsafe { plat.accept_range(gpa, len, self.validate_4k_only) }?;
        if record {
            self.validated.set_range(gpa, len);
        }
        Ok(())
    }

    /// A zeroed private frame (for page tables and the firmware's own use).
    pub fn alloc(&mut self, plat: &mut dyn GuestPlatform) -> Result<u64, FwError> {
        let (gpa, dirty) = self.alloc_user(plat)?;
        if dirty {
            // SAFETY: the frame is private, validated and owned by the caller from now on.
            unsafe {
                core::ptr::write_bytes(phys_to_virt(gpa) as *mut u8, 0, PAGE_SIZE_4K as usize)
            };
        }
        Ok(gpa)
    }

    /// A private frame and whether it may hold old data: the caller zeroes it (an
    /// app page is zeroed in ring 3 once it is mapped, see `kernel.rs`).
    pub fn alloc_user(&mut self, plat: &mut dyn GuestPlatform) -> Result<(u64, bool), FwError> {
        let frame = self.take_4k(plat)?;
        self.handed_out(1);
        Ok(frame)
    }

    /// Count `pages` more frames handed out.
    fn handed_out(&mut self, pages: u64) {
        self.used += pages;
        self.peak = self.peak.max(self.used);
    }

    /// Frames handed out now and at most so far, in 4 KiB pages.
    pub fn in_use(&self) -> (u64, u64) {
        (self.used, self.peak)
    }

    fn take_4k(&mut self, plat: &mut dyn GuestPlatform) -> Result<(u64, bool), FwError> {
        if self.free_head != 0 {
            let gpa = self.free_head;
            // SAFETY: free frames are private, validated and hold the next link.
            self.free_head = unsafe { (phys_to_virt(gpa) as *const u64).read() };
            self.nfree -= 1;
            return Ok((gpa, true));
        }
        if self.reuse < self.reuse_end {
            let gpa = self.reuse;
            self.reuse += PAGE_SIZE_4K;
            return Ok((gpa, true));
        }
        if self.next >= self.accepted_end {
            if self.free_2m_head != 0 {
                let gpa = self.pop_2m();
                self.reuse = gpa + PAGE_SIZE_4K;
                self.reuse_end = gpa + PAGE_SIZE_2M;
                return Ok((gpa, true));
            }
            if self.accepted_end >= self.ram_end {
                return Err(FwError::OutOfMemory);
            }
            let len = PAGE_SIZE_2M.min(self.ram_end - self.accepted_end);
            self.accept(plat, self.accepted_end, len, true)?;
            self.accepted_end += len;
        }
        let gpa = self.next;
        self.next += PAGE_SIZE_4K;
        Ok((gpa, !self.fresh_is_zero))
    }

    fn pop_2m(&mut self) -> u64 {
        let gpa = self.free_2m_head;
        // SAFETY: free 2 MiB frames are private, validated and hold the next link.
        self.free_2m_head = unsafe { (phys_to_virt(gpa) as *const u64).read() };
        self.nfree_2m -= 1;
        gpa
    }

    /// A 2 MiB-aligned private 2 MiB frame and whether it may hold old data: a freed
    /// one, or a whole fresh chunk (what is left of the current chunk goes to the free
    /// list).
    pub fn alloc_2m(&mut self, plat: &mut dyn GuestPlatform) -> Result<(u64, bool), FwError> {
        let frame = self.take_2m(plat)?;
        self.handed_out(PAGE_SIZE_2M / PAGE_SIZE_4K);
        Ok(frame)
    }

    fn take_2m(&mut self, plat: &mut dyn GuestPlatform) -> Result<(u64, bool), FwError> {
        if self.free_2m_head != 0 {
            return Ok((self.pop_2m(), true));
        }
        let start = self.accepted_end;
        if !start.is_multiple_of(PAGE_SIZE_2M) || self.ram_end - start < PAGE_SIZE_2M {
            return Err(FwError::OutOfMemory);
        }
        self.accept(plat, start, PAGE_SIZE_2M, true)?;
        self.accepted_end = start + PAGE_SIZE_2M;
        while self.next < start {
            let gpa = self.next;
            self.next += PAGE_SIZE_4K;
            // Never handed out: straight to the free list.
            self.push_free(gpa);
        }
        self.next = self.accepted_end;
        Ok((start, !self.fresh_is_zero))
    }

    /// Return a frame. While another vCPU may still reach it through a stale TLB
    /// entry, it waits for the shoot-down ([`Self::release_deferred`]).
    pub fn free(&mut self, gpa: u64) {
        if crate::arch::smp::shootdown_pending() {
            if self.ndeferred == DEFERRED_FRAMES {
                crate::arch::smp::shootdown();
                self.release_deferred();
            } else {
                self.deferred[self.ndeferred] = gpa;
                self.ndeferred += 1;
                return;
            }
        }
        self.free_now(gpa);
    }

    fn free_now(&mut self, gpa: u64) {
        self.push_free(gpa);
        self.used = self.used.saturating_sub(1);
    }

    fn push_free(&mut self, gpa: u64) {
        // SAFETY: the caller hands back a private frame nothing maps any longer (or
        // one never handed out).
        unsafe { (phys_to_virt(gpa) as *mut u64).write(self.free_head) };
        self.free_head = gpa;
        self.nfree += 1;
    }

    /// Free the frames whose release waited for a TLB shoot-down, which just happened.
    pub fn release_deferred(&mut self) {
        for i in 0..core::mem::take(&mut self.ndeferred) {
            self.free_now(self.deferred[i]);
        }
    }

    /// Return a 2 MiB frame (2 MiB aligned).
    pub fn free_2m(&mut self, gpa: u64) {
        if crate::arch::smp::shootdown_pending() {
            crate::arch::smp::shootdown();
            self.release_deferred();
        }
        // SAFETY: the caller hands back a private 2 MiB frame it no longer maps.
        unsafe { (phys_to_virt(gpa) as *mut u64).write(self.free_2m_head) };
        self.free_2m_head = gpa;
        self.nfree_2m += 1;
        self.used = self.used.saturating_sub(PAGE_SIZE_2M / PAGE_SIZE_4K);
    }
}

/// For mappings whose tables exist already.
struct NoAlloc;

impl TableAlloc for NoAlloc {
    fn alloc_table(&mut self) -> Option<u64> {
        None
    }
}

/// Page-table frames from the frame allocator.
pub struct FrameTables<'a> {
    pub frames: &'a mut Frames,
    pub plat: &'a mut dyn GuestPlatform,
}

impl TableAlloc for FrameTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.frames.alloc(self.plat).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{PageState, PteMasks};
    use crate::testing::{page_tables, BumpTables, Call, FakePlatform, FakeRam};
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;
    /// Where the tests' frame allocator starts (the "image" ends here).
    const START: u64 = 2 * MIB;

    /// Fake RAM of `ram_mib` MiB, page tables in its first 2 MiB with the direct map
    /// prepared, and a frame allocator from [`START`] to the end of RAM.
    fn setup(
        ram_mib: u64,
        plat: &mut FakePlatform,
        four_k_only: bool,
    ) -> (FakeRam, PageTables, Result<Frames, FwError>) {
        let ram = FakeRam::new((ram_mib * MIB) as usize);
        let mut pool = BumpTables {
            next: PAGE_SIZE_4K,
            end: START,
        };
        let mut pt = page_tables(
            &mut pool,
            PteMasks {
                private: 0,
                shared: 0,
            },
        );
        pt.prepare_2m(DIRECT_MAP_VA_BASE, ram.size(), &mut pool)
            .expect("the pool holds the direct map's directories");
        let frames = Frames::new(plat, pt, START, ram.size(), four_k_only);
        (ram, pt, frames)
    }

    fn frames(r: Result<Frames, FwError>) -> Frames {
        r.expect("the frame allocator starts")
    }

    #[test]
    fn the_first_chunk_is_accepted_and_recorded_at_start() {
        let mut plat = FakePlatform::default();
        let (_ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        assert_eq!(plat.calls, [Call::Validate2m(START)]);
        assert!(f.validated().get(START));
        assert!(f.validated().get(2 * START - PAGE_SIZE_4K));
        assert!(!f.validated().get(2 * START));
    }

    #[test]
    fn frames_follow_the_bitmap_and_are_dirty_unless_the_platform_zeroes() {
        for fresh_zero in [false, true] {
            let mut plat = FakePlatform {
                fresh_zero,
                ..Default::default()
            };
            let (_ram, _pt, f) = setup(16, &mut plat, false);
            let mut f = frames(f);
            // 16 MiB need a 512-byte bitmap: one page, right at the start.
            assert_eq!(
                f.alloc_user(&mut plat),
                Ok((START + PAGE_SIZE_4K, !fresh_zero))
            );
            assert_eq!(
                f.alloc_user(&mut plat),
                Ok((START + 2 * PAGE_SIZE_4K, !fresh_zero))
            );
        }
    }

    #[test]
    fn the_next_chunk_is_accepted_only_when_the_first_runs_out() {
        let mut plat = FakePlatform::default();
        let (_ram, pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        for _ in 0..511 {
            f.alloc_user(&mut plat).expect("a frame of the first chunk");
        }
        assert_eq!(plat.calls.len(), 1);
        assert_eq!(f.alloc_user(&mut plat), Ok((2 * START, true)));
        assert_eq!(plat.calls[1..], [Call::Validate2m(2 * START)]);
        assert!(f.validated().get(2 * START + 5 * PAGE_SIZE_4K));
        // The chunk is in the direct map now.
        assert_eq!(
            pt.translate(DIRECT_MAP_VA_BASE + 2 * START + 0x123)
                .map(|t| t.0),
            Some(2 * START + 0x123)
        );
    }

    #[test]
    fn a_page_the_record_holds_is_never_validated_again() {
        let mut plat = FakePlatform::default();
        let (_ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        let twice = 2 * START + 3 * PAGE_SIZE_4K;
        f.record_validated(&[(twice, PAGE_SIZE_4K)]);
        let mut last = Ok((0, false));
        for _ in 0..512 {
            last = f.alloc_user(&mut plat);
        }
        assert_eq!(last, Err(FwError::DoubleValidation { gpa: twice }));
        assert_eq!(plat.validations(), (0, 1), "the host was never asked again");
    }

    #[test]
    fn a_platform_error_while_accepting_stops_the_allocation() {
        let mut plat = FakePlatform {
            already: std::vec![2 * START],
            ..Default::default()
        };
        let (_ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        let errors: Vec<_> = (0..512)
            .filter_map(|_| f.alloc_user(&mut plat).err())
            .collect();
        assert_eq!(errors, [FwError::AlreadyValidated { gpa: 2 * START }]);
        assert!(!f.validated().get(2 * START));
    }

    #[test]
    fn freed_frames_come_back_first_and_alloc_clears_them() {
        let mut plat = FakePlatform {
            fresh_zero: true,
            ..Default::default()
        };
        let (mut ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        let a = f.alloc(&mut plat).expect("a frame");
        let _b = f.alloc(&mut plat).expect("a frame");
        ram.fill(a, 0xAB, PAGE_SIZE_4K as usize);
        f.free(a);
        assert_eq!(f.alloc(&mut plat), Ok(a));
        assert!(ram.bytes(a, PAGE_SIZE_4K as usize).iter().all(|&b| b == 0));
        f.free(a);
        assert_eq!(
            f.alloc_user(&mut plat),
            Ok((a, true)),
            "a reused frame is dirty"
        );
    }

    #[test]
    fn a_2m_frame_is_a_whole_aligned_chunk_and_the_rest_of_the_current_one_is_freed() {
        let mut plat = FakePlatform::default();
        let (_ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        assert_eq!(f.alloc_2m(&mut plat), Ok((2 * START, true)));
        assert_eq!(plat.calls[1..], [Call::Validate2m(2 * START)]);
        // What was left of the first chunk is on the free list (last page first).
        assert_eq!(
            f.alloc_user(&mut plat),
            Ok((2 * START - PAGE_SIZE_4K, true))
        );
        f.free_2m(2 * START);
        assert_eq!(f.alloc_2m(&mut plat), Ok((2 * START, true)));
    }

    #[test]
    fn frames_in_use_and_the_most_ever_are_counted() {
        let mut plat = FakePlatform::default();
        let (_ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        assert_eq!(f.in_use(), (0, 0));
        let a = f.alloc(&mut plat).expect("a frame");
        let _b = f.alloc_user(&mut plat).expect("a frame");
        assert_eq!(f.in_use(), (2, 2));
        f.free(a);
        assert_eq!(f.in_use(), (1, 2));
        // The rest of the current chunk goes to the free list, not counted as used.
        let (big, _) = f.alloc_2m(&mut plat).expect("a 2 MiB frame");
        assert_eq!(f.in_use(), (513, 513));
        f.free_2m(big);
        assert_eq!(f.in_use(), (1, 513));
    }

    #[test]
    fn a_freed_2m_frame_is_handed_out_4k_at_a_time_when_chunks_run_out() {
        let mut plat = FakePlatform::default();
        let (_ram, _pt, f) = setup(8, &mut plat, false);
        let mut f = frames(f);
        let (big, _) = f.alloc_2m(&mut plat).expect("a 2 MiB frame");
        // Use up the small frames (the rest of the first chunk) and the last chunk.
        while f.free_head != 0 || f.next < f.accepted_end || f.accepted_end < f.ram_end {
            f.alloc_user(&mut plat).expect("a frame");
        }
        f.free_2m(big);
        assert_eq!(f.alloc_user(&mut plat), Ok((big, true)));
        assert_eq!(f.alloc_user(&mut plat), Ok((big + PAGE_SIZE_4K, true)));
    }

    #[test]
    fn memory_runs_out_at_the_end_of_ram() {
        let mut plat = FakePlatform::default();
        let (_ram, _pt, f) = setup(6, &mut plat, false);
        let mut f = frames(f);
        let handed_out = (0..2000)
            .take_while(|_| f.alloc_user(&mut plat).is_ok())
            .count();
        // Two chunks of 512 pages, less the bitmap's page.
        assert_eq!(handed_out, 1023);
        assert_eq!(f.alloc_user(&mut plat), Err(FwError::OutOfMemory));
        assert_eq!(f.alloc_2m(&mut plat), Err(FwError::OutOfMemory));
    }

    #[test]
    fn size_mismatches_are_counted() {
        let mut plat = FakePlatform {
            mismatch_2m: std::vec![2 * START],
            ..Default::default()
        };
        let (_ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        f.alloc_2m(&mut plat).expect("a 2 MiB frame");
        assert_eq!(f.size_mismatches, 1);
        assert_eq!(plat.validations(), (512, 2));
    }

    #[test]
    fn page_by_page_images_change_state_and_validate_page_by_page() {
        let mut plat = FakePlatform {
            psc_first: true,
            ..Default::default()
        };
        let (_ram, _pt, f) = setup(16, &mut plat, true);
        frames(f);
        assert_eq!(
            plat.calls[0],
            Call::PageState {
                gpa: START,
                len: 2 * MIB,
                state: PageState::Private,
                allow_2m: false,
            }
        );
        assert_eq!(plat.validations(), (512, 0));
    }

    #[test]
    fn the_bitmap_is_cleared_unless_fresh_memory_reads_as_zero() {
        for fresh_zero in [false, true] {
            let mut plat = FakePlatform {
                fresh_zero,
                ..Default::default()
            };
            let ram = FakeRam::new((16 * MIB) as usize);
            // Old contents where the bitmap will be: its bits for 8 MiB and up.
            let mut pool = BumpTables {
                next: PAGE_SIZE_4K,
                end: START,
            };
            let mut pt = page_tables(
                &mut pool,
                PteMasks {
                    private: 0,
                    shared: 0,
                },
            );
            pt.prepare_2m(DIRECT_MAP_VA_BASE, ram.size(), &mut pool)
                .expect("directories");
            let mut ram = ram;
            ram.fill(START + 256, 0xFF, 256);
            let mut f = frames(Frames::new(&mut plat, pt, START, ram.size(), false));
            assert_eq!(f.validated().get(8 * MIB), fresh_zero);
        }
    }

    #[test]
    fn usage_counts_what_is_not_handed_out() {
        let mut plat = FakePlatform::default();
        let (_ram, _pt, f) = setup(16, &mut plat, false);
        let mut f = frames(f);
        let (total, free) = f.usage();
        assert_eq!(total, 16 * MIB);
        assert_eq!(free, 16 * MIB - START - PAGE_SIZE_4K);
        f.alloc_user(&mut plat).expect("a frame");
        assert_eq!(f.usage().1, free - PAGE_SIZE_4K);
    }

    fn record(pages: u64, words: &mut Vec<u64>) -> Validated {
        words.resize(pages.div_ceil(64) as usize, 0);
        Validated {
            bits: words.as_mut_ptr(),
            pages,
        }
    }

    #[test]
    fn the_record_sets_and_finds_ranges_across_words() {
        let mut words = Vec::new();
        let mut v = record(256, &mut words);
        v.set_range(60 * PAGE_SIZE_4K, 10 * PAGE_SIZE_4K);
        assert!(!v.get(59 * PAGE_SIZE_4K));
        assert!(v.get(60 * PAGE_SIZE_4K) && v.get(69 * PAGE_SIZE_4K + 4095));
        assert!(!v.get(70 * PAGE_SIZE_4K));
        assert!(v.any_in_range(0, 61 * PAGE_SIZE_4K));
        assert!(!v.any_in_range(70 * PAGE_SIZE_4K, 128 * PAGE_SIZE_4K));
        v.set(65 * PAGE_SIZE_4K, false);
        assert!(!v.get(65 * PAGE_SIZE_4K) && v.get(66 * PAGE_SIZE_4K));
        // A whole word at once.
        v.set_range(128 * PAGE_SIZE_4K, 64 * PAGE_SIZE_4K);
        assert_eq!(words[2], u64::MAX);
    }

    #[test]
    fn the_record_ignores_pages_past_its_end() {
        let mut words = Vec::new();
        let mut v = record(100, &mut words);
        v.set_range(90 * PAGE_SIZE_4K, 50 * PAGE_SIZE_4K);
        v.set(200 * PAGE_SIZE_4K, true);
        assert!(v.get(99 * PAGE_SIZE_4K));
        assert!(!v.get(100 * PAGE_SIZE_4K) && !v.get(200 * PAGE_SIZE_4K));
        assert!(!v.any_in_range(100 * PAGE_SIZE_4K, 64 * PAGE_SIZE_4K));
        assert_eq!(words.len(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        SetRange(u64, u64),
        Set(u64, bool),
        Any(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..300, 0u64..200).prop_map(|(p, n)| Op::SetRange(p, n)),
            (0u64..300, any::<bool>()).prop_map(|(p, b)| Op::Set(p, b)),
            (0u64..300, 0u64..200).prop_map(|(p, n)| Op::Any(p, n)),
        ]
    }

    proptest! {
        /// The bitmap answers like a set of page numbers.
        #[test]
        fn the_record_is_a_set_of_pages(ops in proptest::collection::vec(op(), 1..60)) {
            const PAGES: u64 = 257;
            let mut words = Vec::new();
            let mut v = record(PAGES, &mut words);
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::SetRange(p, n) => {
                        v.set_range(p * PAGE_SIZE_4K, n * PAGE_SIZE_4K);
                        model.extend((p..p + n).filter(|&q| q < PAGES));
                    }
                    Op::Set(p, b) => {
                        v.set(p * PAGE_SIZE_4K, b);
                        if p < PAGES {
                            if b { model.insert(p); } else { model.remove(&p); }
                        }
                    }
                    Op::Any(p, n) => {
                        let want = model.range(p..p + n).next().is_some();
                        prop_assert_eq!(v.any_in_range(p * PAGE_SIZE_4K, n * PAGE_SIZE_4K), want);
                    }
                }
            }
            for p in 0..PAGES + 10 {
                prop_assert_eq!(v.get(p * PAGE_SIZE_4K), model.contains(&p));
            }
        }
    }
}
