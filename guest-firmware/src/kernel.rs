//! The firmware's global state after boot and the operations on the app's memory.

use crate::error::FwError;
use crate::mem::frames::{FrameTables, Frames};
use crate::mem::paging::PageTables;
use crate::mem::user::{Vma, Vmas, PROT_WRITE};
use crate::platform::Platform;
use nacre_shared_abi::layout::{PAGE_SIZE_2M, PAGE_SIZE_4K, USER_VA_END};
use spin::Mutex;

/// Everything the firmware owns once boot is done.
#[derive(Debug)]
pub struct Kernel {
    pub plat: Platform,
    pub frames: Frames,
    pub pt: PageTables,
    pub vmas: Vmas,
    pub brk_start: u64,
    pub brk: u64,
    pub mmap_next: u64,
    /// Unsupported syscalls: (number, count), in order of first use.
    pub unsupported: [(u32, u32); 64],
}

/// The kernel, once boot has built it.
pub static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);

/// Largest brk area.
const BRK_MAX: u64 = 1 << 30;
/// Bottom of the mmap area; allocations grow down from the stack's area.
pub const MMAP_TOP: u64 = 0x0000_7F00_0000_0000;

/// Errors of user-memory operations, as Linux errnos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMemError {
    /// EFAULT: the address is not mapped with the needed access.
    Fault,
    /// ENOMEM.
    NoMemory,
    /// A platform error while accepting memory (fatal).
    Platform(FwError),
}

impl Kernel {
    /// Map a fresh zeroed frame at `va` with the area's flags.
    fn populate_page(&mut self, va: u64, vma: &Vma) -> Result<u64, UserMemError> {
        let flags = vma.pte_flags().ok_or(UserMemError::Fault)?;
        let gpa = self.frames.alloc(&mut self.plat).map_err(|e| match e {
            FwError::OutOfMemory => UserMemError::NoMemory,
            other => UserMemError::Platform(other),
        })?;
        let mut alloc = FrameTables {
            frames: &mut self.frames,
            plat: &mut self.plat,
        };
        self.pt
            .map_4k(va & !(PAGE_SIZE_4K - 1), gpa, flags, true, &mut alloc)
            .ok_or(UserMemError::NoMemory)?;
        Ok(gpa)
    }

    /// Map a whole 2 MiB page at the region of `va` when the area covers the region
    /// and nothing in it is mapped yet: one fault (and one acceptance) instead of 512.
    fn try_populate_2m(&mut self, va: u64, vma: &Vma) -> Result<bool, UserMemError> {
        let start = va & !(PAGE_SIZE_2M - 1);
        let Some(flags) = vma.pte_flags() else {
            return Ok(false);
        };
        if start < vma.start || start + PAGE_SIZE_2M > vma.end || !self.pt.region_2m_empty(start) {
            return Ok(false);
        }
        let gpa = match self.frames.alloc_2m(&mut self.plat) {
            Ok(gpa) => gpa,
            Err(FwError::OutOfMemory) => return Ok(false),
            Err(e) => return Err(UserMemError::Platform(e)),
        };
        let mut alloc = FrameTables {
            frames: &mut self.frames,
            plat: &mut self.plat,
        };
        self.pt
            .map_2m(start, gpa, flags, &mut alloc)
            .ok_or(UserMemError::NoMemory)?;
        Ok(true)
    }

    /// Resolve a page fault at `va` (`write` access). `Ok(false)` if it is a real
    /// fault the app must be killed for.
    pub fn handle_fault(
        &mut self,
        va: u64,
        write: bool,
        present: bool,
    ) -> Result<bool, UserMemError> {
        let Some(vma) = self.vmas.find(va) else {
            return Ok(false);
        };
        if present || (write && vma.prot & PROT_WRITE == 0) || vma.pte_flags().is_none() {
            return Ok(false);
        }
        if self.try_populate_2m(va, &vma)? {
            return Ok(true);
        }
        self.populate_page(va, &vma)?;
        Ok(true)
    }

    /// Split any 2 MiB mapping in `[start, end)` so 4 KiB operations apply.
    pub fn split_range(&mut self, start: u64, end: u64) -> Result<(), UserMemError> {
        let mut va = start & !(PAGE_SIZE_2M - 1);
        while va < end {
            let mut alloc = FrameTables {
                frames: &mut self.frames,
                plat: &mut self.plat,
            };
            if self.pt.translate(va).is_some() {
                self.pt
                    .split_huge(va, &mut alloc)
                    .ok_or(UserMemError::NoMemory)?;
            }
            va += PAGE_SIZE_2M;
        }
        Ok(())
    }

    /// Make sure `[va, va + len)` is mapped for a kernel access (`write` or read),
    /// populating pages on demand.
    pub fn populate(&mut self, va: u64, len: u64, write: bool) -> Result<(), UserMemError> {
        if len == 0 {
            return Ok(());
        }
        let end = va.checked_add(len).ok_or(UserMemError::Fault)?;
        if end > USER_VA_END {
            return Err(UserMemError::Fault);
        }
        let mut page = va & !(PAGE_SIZE_4K - 1);
        while page < end {
            let vma = self.vmas.find(page).ok_or(UserMemError::Fault)?;
            if vma.pte_flags().is_none() || (write && vma.prot & PROT_WRITE == 0) {
                return Err(UserMemError::Fault);
            }
            if self.pt.translate(page).is_none() {
                self.populate_page(page, &vma)?;
            }
            page += PAGE_SIZE_4K;
        }
        Ok(())
    }

    /// Copy bytes from the app.
    pub fn copy_from_user(&mut self, dst: &mut [u8], va: u64) -> Result<(), UserMemError> {
        self.populate(va, dst.len() as u64, false)?;
        // SAFETY: `populate` mapped every page of the range readable in the current
        // address space; the app is stopped while the kernel runs.
        unsafe { core::ptr::copy_nonoverlapping(va as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copy bytes to the app.
    pub fn copy_to_user(&mut self, va: u64, src: &[u8]) -> Result<(), UserMemError> {
        self.populate(va, src.len() as u64, true)?;
        // SAFETY: `populate` mapped every page of the range writable.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), va as *mut u8, src.len()) };
        Ok(())
    }

    /// Unmap `[start, end)` and free its frames.
    pub fn unmap_range(&mut self, start: u64, end: u64) -> Result<(), UserMemError> {
        self.split_range(start, end)?;
        if !self.vmas.remove_range(start, end) {
            return Err(UserMemError::NoMemory);
        }
        let mut va = start;
        while va < end {
            if let Some(gpa) = self.pt.unmap_4k(va) {
                self.frames.free(gpa);
            }
            va += PAGE_SIZE_4K;
        }
        Ok(())
    }

    /// Find room for `len` bytes below the mmap cursor (2 MiB aligned for areas of
    /// 2 MiB or more, so they can be mapped with large pages).
    pub fn find_free(&mut self, len: u64) -> Option<u64> {
        let align = if len >= PAGE_SIZE_2M {
            PAGE_SIZE_2M
        } else {
            PAGE_SIZE_4K
        };
        let mut top = self.mmap_next;
        loop {
            let start = top.checked_sub(len)? & !(align - 1);
            if start < self.brk_start + BRK_MAX {
                return None;
            }
            if !self.vmas.overlaps(start, top) {
                self.mmap_next = start;
                return Some(start);
            }
            top = start;
        }
    }

    /// brk(2).
    pub fn set_brk(&mut self, want: u64) -> u64 {
        let new = (want + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
        let cur = (self.brk + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
        if want < self.brk_start || want > self.brk_start + BRK_MAX {
            return self.brk;
        }
        if new > cur {
            if self.vmas.overlaps(cur, new) {
                return self.brk;
            }
            let grown = if cur == self.brk_start {
                self.vmas.insert(Vma {
                    start: cur,
                    end: new,
                    prot: 3,
                })
            } else {
                self.vmas.extend(cur, new)
            };
            if !grown {
                return self.brk;
            }
        } else if new < cur && self.unmap_range(new, cur).is_err() {
            return self.brk;
        }
        self.brk = want;
        self.brk
    }
}
