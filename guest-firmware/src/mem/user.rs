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
