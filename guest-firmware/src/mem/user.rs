//! The app's address space: a sorted list of virtual memory areas (VMAs) populated
//! on demand by the page-fault handler, so memory the app maps but never touches
//! costs no acceptance.

use super::paging::{NO_EXECUTE, USER, WRITABLE};

/// PROT_READ.
pub const PROT_READ: u32 = 1;
/// PROT_WRITE.
pub const PROT_WRITE: u32 = 2;
/// PROT_EXEC.
pub const PROT_EXEC: u32 = 4;

/// One area `[start, end)` with its protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
}

impl Vma {
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

const MAX_VMAS: usize = 256;

/// The VMA list.
#[derive(Debug)]
pub struct Vmas {
    list: [Vma; MAX_VMAS],
    len: usize,
}

impl Vmas {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            list: [Vma {
                start: 0,
                end: 0,
                prot: 0,
            }; MAX_VMAS],
            len: 0,
        }
    }

    fn slice(&self) -> &[Vma] {
        &self.list[..self.len]
    }

    /// The area containing `va`.
    pub fn find(&self, va: u64) -> Option<Vma> {
        self.slice()
            .iter()
            .copied()
            .find(|v| v.start <= va && va < v.end)
    }

    /// Whether any area overlaps `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.slice().iter().any(|v| v.start < end && start < v.end)
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
            return self.insert(Vma { start: addr, ..v });
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
