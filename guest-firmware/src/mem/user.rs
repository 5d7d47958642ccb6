//! The app's address space: a sorted list of virtual memory areas (VMAs) populated
//! on demand by the page-fault handler, so memory the app maps but never touches
//! costs no acceptance.

use super::paging::{NO_EXECUTE, USER, WRITABLE};

/// Where the hostcall area's 2 MiB are mapped in the app's address space (shared,
/// user-accessible, never executable): bulk copies between the app and the host run
/// in ring 3 (`arch/upcall.rs`). Above the mmap area, below the stack.
pub const IO_WINDOW_VA: u64 = 0x0000_7F80_0000_0000;
/// Where the image pages from the app ELF to the end of the file tree are mapped in the
/// app's address space, read-only and never executable (the packaged files: reads copy
/// from here in ring 3, read-only file mappings map these pages).
pub const FILES_WINDOW_VA: u64 = 0x0000_7F80_0040_0000;
/// Where each thread's extended register state is saved when it is preempted
/// (`XSTATE_SLOT` bytes per thread slot, user-accessible because XSAVE and XRSTOR run
/// in ring-3 helpers, `arch/fpu.rs`; never executable). Far above the files window.
pub const XSTATE_WINDOW_VA: u64 = 0x0000_7FC0_0000_0000;
/// Bytes of the extended-state window per thread slot (the largest XSAVE area of the
/// features the firmware enables, AVX-512, is about 2.7 KiB).
pub const XSTATE_SLOT: u64 = 8192;
/// Where a dirty frame is mapped while it is zeroed in ring 3, before the app sees it
/// (`kernel.rs`): a 2 MiB frame at this address, a 4 KiB one 2 MiB above it. Zeroing
/// through the app's own mapping would let its other threads, on other vCPUs, write
/// to the page before the zeroing ends and lose what they wrote. User-accessible
/// (the zeroing runs in ring 3), never executable; between the extended-state and
/// the pipes' windows.
pub const ZERO_WINDOW_VA: u64 = 0x0000_7FC0_2000_0000;
/// Bytes of the zeroing window.
pub const ZERO_WINDOW_SIZE: u64 = 4 << 20;
/// Where the pipes' buffers are mapped (64 KiB per pipe, user-accessible so that
/// copies between them and the app run in ring 3; never executable). Above the
/// extended-state window.
pub const PIPE_WINDOW_VA: u64 = 0x0000_7FC0_4000_0000;
/// Where the data frames of writable files are mapped, each at this address plus its
/// GPA (user-accessible so that copies between them and the app run in ring 3;
/// never executable; `syscall/memfile.rs`). As large as the most guest RAM.
pub const TMPFS_WINDOW_VA: u64 = 0x0000_7FD0_0000_0000;
/// Bytes of the tmpfs window.
pub const TMPFS_WINDOW_SIZE: u64 = nacre_shared_abi::layout::MAX_GUEST_MEMORY;
/// Where the vDSO's data page is mapped (user read-only, never executable): between
/// the stack's top and the end of the user half, as Linux places `[vvar]`, at a fixed
/// address (`app/vdso.rs`).
pub const VVAR_VA: u64 = 0x0000_7FFF_FFF8_0000;
/// Where the clocks' floor is mapped (user read-write, never executable), one page
/// below the data page (`vdso/vvar.rs`, `ClockFloor`).
pub const CLOCK_FLOOR_VA: u64 = VVAR_VA - 0x1000;
/// Where the vDSO is mapped (user read and execute), one page above its data page;
/// AT_SYSINFO_EHDR.
pub const VDSO_VA: u64 = VVAR_VA + 0x1000;
/// Room reserved for the vDSO at [`VDSO_VA`].
pub const VDSO_MAX_SIZE: u64 = 0x1_0000;

/// PROT_READ.
pub const PROT_READ: u32 = 1;
/// PROT_WRITE.
pub const PROT_WRITE: u32 = 2;
/// PROT_EXEC.
pub const PROT_EXEC: u32 = 4;

/// What backs an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmaKind {
    /// Anonymous memory: zeroed frames on first touch.
    Anon,
    /// A window the firmware mapped itself (the hostcall data pages, the packaged
    /// files): never demand-paged, and the app may not unmap, remap or reprotect it.
    Window,
    /// A private mapping of a packaged file: page `start + i * 4 KiB` shows the image
    /// page at `gpa + i * 4 KiB` while below `file_end`, zeros after it; a write gives
    /// the app its own copy of the page.
    File,
}

/// One area `[start, end)` with its protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub kind: VmaKind,
    /// [`VmaKind::File`]: GPA of the file page shown at `start`.
    pub gpa: u64,
    /// [`VmaKind::File`]: end of the file's pages (page-aligned VA).
    pub file_end: u64,
}

impl Vma {
    /// An anonymous area.
    pub const fn anon(start: u64, end: u64, prot: u32) -> Self {
        Self {
            start,
            end,
            prot,
            kind: VmaKind::Anon,
            gpa: 0,
            file_end: 0,
        }
    }

    /// The same area cut to start at `at` (inside it).
    fn from(&self, at: u64) -> Self {
        let gpa = if self.kind == VmaKind::File {
            self.gpa + (at - self.start)
        } else {
            self.gpa
        };
        Self {
            start: at,
            gpa,
            ..*self
        }
    }

    /// Page-table flags for pages of this area (without PRESENT); `None` for PROT_NONE.
    pub fn pte_flags(&self) -> Option<u64> {
        if self.prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
            return None;
        }
        let mut f = USER;
        if self.prot & PROT_WRITE != 0 {
            f |= WRITABLE;
        }
        if self.prot & PROT_EXEC == 0 {
            f |= NO_EXECUTE;
        }
        Some(f)
    }
}

/// Most areas the app may have (Linux's default `vm.max_map_count` is 65530; static
/// programs use a few dozen).
const MAX_VMAS: usize = 1024;

/// The VMA list.
#[derive(Debug)]
pub struct Vmas {
    list: [Vma; MAX_VMAS],
    len: usize,
}

impl Default for Vmas {
    fn default() -> Self {
        Self::new()
    }
}

impl Vmas {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            list: [Vma::anon(0, 0, 0); MAX_VMAS],
            len: 0,
        }
    }

    fn slice(&self) -> &[Vma] {
        &self.list[..self.len]
    }

    /// The area containing `va` (binary search: the list is sorted and disjoint).
    pub fn find(&self, va: u64) -> Option<Vma> {
        let s = self.slice();
        let i = s.partition_point(|v| v.end <= va);
        s.get(i).copied().filter(|v| v.start <= va)
    }

    /// All areas, in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> + '_ {
        self.slice().iter()
    }

    /// Whether `[start, end)` is covered by areas without gaps, all readable (and
    /// writable when `write`), none a window unless `windows_ok`.
    pub fn covers(&self, start: u64, end: u64, write: bool, windows_ok: bool) -> bool {
        let s = self.slice();
        let mut at = start;
        let mut i = s.partition_point(|v| v.end <= at);
        while at < end {
            let Some(v) = s.get(i) else { return false };
            if v.start > at
                || v.prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0
                || (write && v.prot & PROT_WRITE == 0)
                || (v.kind == VmaKind::Window && !windows_ok)
            {
                return false;
            }
            at = v.end;
            i += 1;
        }
        true
    }

    /// Whether `[start, end)` is covered by areas without gaps, whatever their
    /// protection.
    pub fn covers_any(&self, start: u64, end: u64) -> bool {
        let s = self.slice();
        let mut at = start;
        let mut i = s.partition_point(|v| v.end <= at);
        while at < end {
            match s.get(i) {
                Some(v) if v.start <= at => at = v.end,
                _ => return false,
            }
            i += 1;
        }
        true
    }

    /// Whether any window overlaps `[start, end)`.
    pub fn overlaps_window(&self, start: u64, end: u64) -> bool {
        self.slice()
            .iter()
            .any(|v| v.kind == VmaKind::Window && v.start < end && start < v.end)
    }

    /// Whether any area overlaps `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        let s = self.slice();
        let i = s.partition_point(|v| v.end <= start);
        s.get(i).is_some_and(|v| v.start < end)
    }

    /// Insert an area that overlaps nothing. `false` if the list is full.
    pub fn insert(&mut self, vma: Vma) -> bool {
        if self.len == MAX_VMAS {
            return false;
        }
        let pos = self
            .slice()
            .iter()
            .position(|v| v.start > vma.start)
            .unwrap_or(self.len);
        self.list.copy_within(pos..self.len, pos + 1);
        self.list[pos] = vma;
        self.len += 1;
        true
    }

    fn remove_at(&mut self, i: usize) {
        self.list.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    /// Split areas so that `addr` is a boundary. `false` if the list is full.
    fn split_at(&mut self, addr: u64) -> bool {
        if let Some(i) = self
            .slice()
            .iter()
            .position(|v| v.start < addr && addr < v.end)
        {
            let v = self.list[i];
            self.list[i].end = addr;
            return self.insert(v.from(addr));
        }
        true
    }

    /// Remove `[start, end)` from every area.
    pub fn remove_range(&mut self, start: u64, end: u64) -> bool {
        if !self.split_at(start) || !self.split_at(end) {
            return false;
        }
        let mut i = 0;
        while i < self.len {
            let v = self.list[i];
            if v.start >= start && v.end <= end {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        true
    }

    /// Change the protection of `[start, end)`; `false` if part of it is unmapped.
    pub fn protect_range(&mut self, start: u64, end: u64, prot: u32) -> bool {
        let mut covered = 0;
        for v in self.slice() {
            if v.start < end && start < v.end {
                covered += v.end.min(end) - v.start.max(start);
            }
        }
        if covered != end - start || !self.split_at(start) || !self.split_at(end) {
            return false;
        }
        for v in &mut self.list[..self.len] {
            if v.start >= start && v.end <= end {
                v.prot = prot;
            }
        }
        true
    }

    /// Grow the area ending at `old_end` to `new_end` (brk).
    pub fn extend(&mut self, old_end: u64, new_end: u64) -> bool {
        match self.list[..self.len].iter_mut().find(|v| v.end == old_end) {
            Some(v) => {
                v.end = new_end;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    const P: u64 = 4096;
    const RW: u32 = PROT_READ | PROT_WRITE;

    fn vmas(areas: &[(u64, u64, u32)]) -> Box<Vmas> {
        let mut v = Box::new(Vmas::new());
        for &(s, e, prot) in areas {
            assert!(v.insert(Vma::anon(s * P, e * P, prot)));
        }
        v
    }

    fn spans(v: &Vmas) -> Vec<(u64, u64, u32)> {
        v.iter().map(|a| (a.start / P, a.end / P, a.prot)).collect()
    }

    #[test]
    fn areas_stay_sorted_and_are_found_by_address() {
        let v = vmas(&[(20, 30, RW), (1, 5, PROT_READ), (10, 12, PROT_EXEC)]);
        assert_eq!(
            spans(&v),
            [(1, 5, PROT_READ), (10, 12, PROT_EXEC), (20, 30, RW)]
        );
        assert_eq!(v.find(11 * P + 5).map(|a| a.start), Some(10 * P));
        assert_eq!(v.find(12 * P), None);
        assert_eq!(v.find(0), None);
        assert!(v.overlaps(4 * P, 10 * P + 1));
        assert!(!v.overlaps(5 * P, 10 * P));
    }

    #[test]
    fn removing_the_middle_of_an_area_splits_it() {
        let mut v = vmas(&[(10, 20, RW)]);
        assert!(v.remove_range(12 * P, 15 * P));
        assert_eq!(spans(&v), [(10, 12, RW), (15, 20, RW)]);
        assert!(v.remove_range(0, 100 * P));
        assert_eq!(spans(&v), []);
    }

    #[test]
    fn reprotecting_splits_and_refuses_holes() {
        let mut v = vmas(&[(10, 20, RW), (20, 25, PROT_READ)]);
        assert!(v.protect_range(15 * P, 22 * P, PROT_READ));
        assert_eq!(
            spans(&v),
            [
                (10, 15, RW),
                (15, 20, PROT_READ),
                (20, 22, PROT_READ),
                (22, 25, PROT_READ)
            ]
        );
        assert!(!v.protect_range(24 * P, 26 * P, RW), "26 is past the end");
        assert_eq!(v.find(24 * P).map(|a| a.prot), Some(PROT_READ));
    }

    #[test]
    fn cover_checks_respect_rights_and_windows() {
        let mut v = vmas(&[(10, 20, RW), (20, 25, PROT_READ)]);
        assert!(v.covers(12 * P, 24 * P, false, false));
        assert!(
            !v.covers(12 * P, 24 * P, true, false),
            "20..25 is read-only"
        );
        assert!(!v.covers(5 * P, 12 * P, false, false), "a hole below 10");
        assert!(v.insert(Vma {
            kind: VmaKind::Window,
            ..Vma::anon(25 * P, 30 * P, PROT_READ)
        }));
        assert!(!v.covers(22 * P, 28 * P, false, false));
        assert!(v.covers(22 * P, 28 * P, false, true));
        assert!(v.overlaps_window(29 * P, 31 * P));
        assert!(!v.overlaps_window(0, 25 * P));
        assert!(v.insert(Vma::anon(40 * P, 41 * P, 0)));
        assert!(v.covers_any(40 * P, 41 * P));
        assert!(
            !v.covers(40 * P, 41 * P, false, false),
            "PROT_NONE is not readable"
        );
    }

    #[test]
    fn a_file_area_cut_in_two_keeps_its_file_offsets() {
        let mut v = Box::new(Vmas::new());
        assert!(v.insert(Vma {
            kind: VmaKind::File,
            gpa: 0x10_0000,
            file_end: 14 * P,
            ..Vma::anon(10 * P, 20 * P, PROT_READ)
        }));
        assert!(v.remove_range(10 * P, 12 * P));
        let rest = v.find(12 * P).expect("the rest of the area");
        assert_eq!(
            (rest.start, rest.gpa, rest.file_end),
            (12 * P, 0x10_0000 + 2 * P, 14 * P)
        );
    }

    #[test]
    fn brk_grows_the_area_that_ends_where_it_did() {
        let mut v = vmas(&[(10, 20, RW)]);
        assert!(v.extend(20 * P, 22 * P));
        assert_eq!(spans(&v), [(10, 22, RW)]);
        assert!(!v.extend(30 * P, 31 * P));
    }

    #[test]
    fn the_list_refuses_more_than_it_holds() {
        let mut v = Box::new(Vmas::new());
        for i in 0..MAX_VMAS as u64 {
            assert!(v.insert(Vma::anon(2 * i * P, (2 * i + 1) * P, RW)));
        }
        assert!(!v.insert(Vma::anon(1 << 40, (1 << 40) + P, RW)));
        // Splitting needs a slot too.
        assert!(!v.remove_range(2 * P + 1, 2 * P + 2));
    }

    #[test]
    fn page_flags_follow_the_protection() {
        assert_eq!(Vma::anon(0, P, 0).pte_flags(), None);
        assert_eq!(
            Vma::anon(0, P, PROT_READ).pte_flags(),
            Some(USER | NO_EXECUTE)
        );
        assert_eq!(
            Vma::anon(0, P, RW).pte_flags(),
            Some(USER | WRITABLE | NO_EXECUTE)
        );
        assert_eq!(
            Vma::anon(0, P, PROT_READ | PROT_EXEC).pte_flags(),
            Some(USER)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64, u32),
        Remove(u64, u64),
        Protect(u64, u64, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let range = (0u64..64, 1u64..16).prop_map(|(s, n)| (s, s + n));
        prop_oneof![
            (range.clone(), 0u32..8).prop_map(|((s, e), p)| Op::Insert(s, e, p)),
            range.clone().prop_map(|(s, e)| Op::Remove(s, e)),
            (range, 0u32..8).prop_map(|((s, e), p)| Op::Protect(s, e, p)),
        ]
    }

    proptest! {
        /// The area list behaves as a map from page to protection: inserts into free
        /// space, removals and reprotections of covered ranges.
        #[test]
        fn areas_match_a_page_map(ops in proptest::collection::vec(op(), 1..40)) {
            let mut v = Box::new(Vmas::new());
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(s, e, p) => {
                        if !v.overlaps(s * P, e * P) {
                            prop_assert!(v.insert(Vma::anon(s * P, e * P, p)));
                            model.extend((s..e).map(|q| (q, p)));
                        }
                    }
                    Op::Remove(s, e) => {
                        prop_assert!(v.remove_range(s * P, e * P));
                        for q in s..e {
                            model.remove(&q);
                        }
                    }
                    Op::Protect(s, e, p) => {
                        let covered = (s..e).all(|q| model.contains_key(&q));
                        prop_assert_eq!(v.protect_range(s * P, e * P, p), covered);
                        if covered {
                            model.extend((s..e).map(|q| (q, p)));
                        }
                    }
                }
                let areas: Vec<Vma> = v.iter().copied().collect();
                for w in areas.windows(2) {
                    prop_assert!(w[0].end <= w[1].start, "sorted and disjoint");
                }
                for q in 0..90u64 {
                    prop_assert_eq!(v.find(q * P + 1).map(|a| a.prot), model.get(&q).copied());
                }
            }
        }
    }
}
