//! The bytes of writable files (`fs/mem.rs`): where their frames come from, and
//! reads, writes, truncation and allocation.
//!
//! A writable file's pages are mapped, user-accessible and never executable, in the
//! tmpfs window at [`TMPFS_WINDOW_VA`] + their GPA, from when they are taken until
//! they are freed, so that copies between them and the app (and from the packaged
//! files, when a file is copied up) run in ring 3 (`arch/upcall.rs`), as the pipes'
//! and the packaged files' do. The window shows only those pages: the bytes the app
//! wrote to its own files. Directory records, link targets and index frames are never
//! mapped there.
//!
//! Frames are counted against guest memory: a frame is taken only while the frame
//! allocator keeps [`reserve`] frames for the firmware and the app's own memory;
//! past that, writes fail with ENOSPC and `statfs` says the file system is full.

use super::errno::*;
use super::io::Segments;
use super::{mem_err, SysResult};
use crate::app::vdso::vvar::Base;
use crate::arch::upcall::{self, Outcome, MIN_UPCALL_BYTES};
use crate::error::FwError;
use crate::fs::mem::{Backing, PAGE};
use crate::fs::{Files, Node, O_APPEND};
use crate::kernel::{Kernel, Scratch};
use crate::mem::frames::{FrameTables, Frames};
use crate::mem::paging::{PageTables, NO_EXECUTE, PRESENT, USER, WRITABLE};
use crate::mem::phys_to_virt;
use crate::mem::user::TMPFS_WINDOW_VA;
use crate::platform::GuestPlatform;
use nacre_shared_abi::layout::PAGE_SIZE_4K;

/// Largest file (`MAX_LFS_FILESIZE` on 64-bit Linux, `include/linux/fs.h`).
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Frames kept back from writable files: 1/32 of RAM, at least 4 MiB, for the
/// firmware's own tables and stacks and for the app's memory.
pub fn reserve(frames: &Frames) -> u64 {
    let (ram, _) = frames.usage();
    (ram / 32).max(4 << 20) / PAGE_SIZE_4K
}

/// Frames for writable inodes from the frame allocator.
pub struct KernelBacking<'a> {
    frames: &'a mut Frames,
    plat: &'a mut dyn GuestPlatform,
    pt: &'a mut PageTables,
    now: (i64, u32),
}

impl Backing for KernelBacking<'_> {
    fn alloc(&mut self, data: bool) -> Result<(u64, bool), u64> {
        if self.frames.available() <= reserve(self.frames) {
            return Err(ENOSPC);
        }
        if !data {
            return match self.frames.alloc(&mut *self.plat) {
                Ok(gpa) => Ok((gpa, false)),
                Err(FwError::OutOfMemory) => Err(ENOSPC),
                Err(e) => crate::fatal_error(e),
            };
        }
        let (gpa, dirty) = match self.frames.alloc_user(&mut *self.plat) {
            Ok(frame) => frame,
            Err(FwError::OutOfMemory) => return Err(ENOSPC),
            Err(e) => crate::fatal_error(e),
        };
        let mut tables = FrameTables {
            frames: &mut *self.frames,
            plat: &mut *self.plat,
        };
        let flags = PRESENT | WRITABLE | USER | NO_EXECUTE;
        if self
            .pt
            .map_4k(TMPFS_WINDOW_VA + gpa, gpa, flags, true, &mut tables)
            .is_none()
        {
            self.frames.free(gpa);
            return Err(ENOSPC);
        }
        Ok((gpa, dirty))
    }

    fn free(&mut self, gpa: u64, data: bool) {
        if data {
            // Unmapped (and flushed) before the frame can be reused.
            self.pt.unmap_4k(TMPFS_WINDOW_VA + gpa);
        }
        self.frames.free(gpa);
    }

    fn now(&mut self) -> (i64, u32) {
        self.now
    }
}

/// Run `f` on the files with frames from the frame allocator (timestamps: now).
pub fn with_fs<R>(k: &mut Kernel, f: impl FnOnce(&mut Files, &mut dyn Backing) -> R) -> R {
    let ns = k.app_clock_ns(Base::Realtime);
    let now = ((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32);
    let mut b = KernelBacking {
        frames: &mut k.frames,
        plat: &mut *k.plat,
        pt: &mut k.pt,
        now,
    };
    f(&mut *k.files, &mut b)
}

/// [`with_fs`] with the kernel's scratch buffers too (a path copied in).
pub fn with_fs_scratch<R>(
    k: &mut Kernel,
    f: impl FnOnce(&mut Files, &mut dyn Backing, &mut Scratch) -> R,
) -> R {
    let ns = k.app_clock_ns(Base::Realtime);
    let now = ((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32);
    let mut b = KernelBacking {
        frames: &mut k.frames,
        plat: &mut *k.plat,
        pt: &mut k.pt,
        now,
    };
    f(&mut *k.files, &mut b, &mut *k.scratch)
}

/// Where byte 0 of data frame `gpa` is mapped for ring-3 copies.
fn window(gpa: u64) -> u64 {
    TMPFS_WINDOW_VA + gpa
}

/// Zero `len` bytes of data frame bytes at `gpa` (inside one page).
fn zero_data(k: &mut Kernel, gpa: u64, len: u64) {
    if len >= MIN_UPCALL_BYTES && upcall::fill(k, window(gpa), 0, len) == Outcome::Done {
        return;
    }
    // SAFETY: the bytes belong to a data frame of a writable file, private memory the
    // direct map reaches; the app is stopped while the kernel runs.
    unsafe { core::ptr::write_bytes(phys_to_virt(gpa) as *mut u8, 0, len as usize) };
}

/// Where the bytes of writable file `id` from `offset` lie in the tmpfs window, as
/// (address, bytes) of at most `len` bytes: `None` at or past its end, or for a hole
/// (which no frame backs).
pub fn window_run(k: &Kernel, id: u32, offset: u64, len: u64) -> Option<(u64, u64)> {
    let size = k.files.mem().get(id).size;
    if offset >= size {
        return None;
    }
    let (gpa, n) = k.files.mem().run_at(id, offset, len.min(size - offset));
    (gpa != 0 && n > 0).then(|| (window(gpa), n))
}

/// Read up to `len` bytes of writable file `id` at `offset` into the app's `buf`.
pub fn read(k: &mut Kernel, id: u32, offset: u64, buf: u64, len: u64) -> SysResult {
    let size = k.files.mem().get(id).size;
    if offset >= size {
        return Ok(0);
    }
    let total = len.min(size - offset);
    let mut done = 0u64;
    while done < total {
        let (gpa, n) = k.files.mem().run_at(id, offset + done, total - done);
        let r = if gpa == 0 {
            k.fill_user(buf + done, 0, n)
        } else {
            k.window_to_user(buf + done, window(gpa), n)
        };
        if let Err(e) = r {
            return if done > 0 { Ok(done) } else { Err(mem_err(e)) };
        }
        done += n;
    }
    Ok(done)
}

/// Take the pages of `[offset, end)` of file `id` that are holes, zeroing what of a
/// new page lies outside the range. Returns the end of the pages taken (less than
/// `end` when memory ran out) or the error of the first.
fn take_pages(k: &mut Kernel, id: u32, offset: u64, end: u64) -> Result<u64, u64> {
    let first = offset / PAGE;
    let last = end.div_ceil(PAGE);
    let mut page = first;
    while page < last {
        // Pages are taken in one go until one may hold old bytes: that one is
        // zeroed (in ring 3, which needs the whole kernel) before going on.
        let (at, r) = with_fs(k, |f, b| {
            let m = f.mem_mut();
            let mut p = page;
            while p < last {
                if m.page(id, p) == 0 {
                    match m.ensure_page(id, p, b) {
                        Ok((gpa, true)) => return (p, Ok(Some(gpa))),
                        Ok(_) => {}
                        Err(e) => return (p, Err(e)),
                    }
                }
                p += 1;
            }
            (p, Ok(None))
        });
        match r {
            Ok(Some(gpa)) => {
                let start = at * PAGE;
                let head = offset.saturating_sub(start).min(PAGE);
                if head > 0 {
                    zero_data(k, gpa, head);
                }
                let tail = (end - start).min(PAGE);
                if tail < PAGE {
                    zero_data(k, gpa + tail, PAGE - tail);
                }
                page = at + 1;
            }
            Ok(None) => return Ok(end),
            Err(e) if at == first => return Err(e),
            Err(_) => return Ok((at * PAGE).max(offset)),
        }
    }
    Ok(end)
}

/// Write the app's `[buf, buf + len)` at `offset` of file `id`. Returns the bytes
/// written (short when memory ran out or the buffer faulted after the first byte).
pub fn write_at(k: &mut Kernel, id: u32, offset: u64, buf: u64, len: u64) -> SysResult {
    if len == 0 {
        return Ok(0);
    }
    let end = offset.checked_add(len).ok_or(EFBIG)?;
    if end > MAX_FILE_SIZE {
        return Err(EFBIG);
    }
    let end = take_pages(k, id, offset, end)?;
    let mut done = 0u64;
    let total = end - offset;
    while done < total {
        let (gpa, n) = k.files.mem().run_at(id, offset + done, total - done);
        if let Err(e) = k.user_to_window(window(gpa), buf + done, n) {
            if done == 0 {
                return Err(mem_err(e));
            }
            break;
        }
        done += n;
    }
    with_fs(k, |f, b| {
        let m = f.mem_mut();
        let n = m.get_mut(id);
        n.size = n.size.max(offset + done);
        m.touch(id, b);
    });
    Ok(done)
}

/// write, writev, pwrite and pwritev of writable file `fd` (its open file is a
/// [`Node::MemFile`]): at `at`, or at the file position (the end with O_APPEND, as
/// Linux also does for pwrite).
pub fn write(k: &mut Kernel, fd: u64, at: Option<u64>, mut from: Segments) -> SysResult {
    let f = *k.files.get(fd)?;
    let Node::MemFile { id } = f.node else {
        return Err(EBADF);
    };
    let mut offset = if f.flags & O_APPEND != 0 {
        k.files.mem().get(id).size
    } else {
        at.unwrap_or(f.offset)
    };
    let mut total = 0u64;
    while let Some((va, len)) = from.peek(k, u64::MAX)? {
        match write_at(k, id, offset, va, len) {
            Ok(n) => {
                total += n;
                offset += n;
                from.advance(n);
                if n < len {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    if at.is_none() {
        k.files.get_mut(fd)?.offset = offset;
    }
    Ok(total)
}

/// Copy the bytes of a packaged file (image GPA `src`, `size` bytes) into new
/// writable file `id`, in ring 3 through the files window and the tmpfs window.
pub fn fill_from_image(k: &mut Kernel, id: u32, src: u64, size: u64) -> Result<(), u64> {
    let end = take_pages(k, id, 0, size)?;
    if end < size {
        return Err(ENOSPC);
    }
    let src_va = k.files.image_va(src);
    let mut done = 0u64;
    while done < size {
        let (gpa, n) = k.files.mem().run_at(id, done, size - done);
        if upcall::copy(k, window(gpa), src_va + done, n) != Outcome::Done {
            // SAFETY: both are private memory the direct map reaches: the measured
            // image and data frames of the new file; the app is stopped.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    phys_to_virt(src + done) as *const u8,
                    phys_to_virt(gpa) as *mut u8,
                    n as usize,
                )
            };
        }
        done += n;
    }
    k.files.mem_mut().get_mut(id).size = size;
    Ok(())
}

/// Set writable file `id`'s size (ftruncate, truncate, O_TRUNC).
pub fn set_size(k: &mut Kernel, id: u32, size: u64) -> Result<(), u64> {
    if size > MAX_FILE_SIZE {
        return Err(EFBIG);
    }
    let tail = with_fs(k, |f, b| {
        let m = f.mem_mut();
        let t = m.set_size(id, size, b);
        m.touch(id, b);
        t
    });
    if let Some((gpa, len)) = tail {
        zero_data(k, gpa, len);
    }
    Ok(())
}

/// fallocate of writable file `id`: mode 0 (allocate, growing the size),
/// FALLOC_FL_KEEP_SIZE, and FALLOC_FL_PUNCH_HOLE with it
/// (`include/uapi/linux/falloc.h`).
pub fn fallocate(k: &mut Kernel, id: u32, mode: u32, offset: u64, len: u64) -> SysResult {
    const FALLOC_FL_KEEP_SIZE: u32 = 1;
    const FALLOC_FL_PUNCH_HOLE: u32 = 2;
    let end = offset.checked_add(len).ok_or(EFBIG)?;
    if end > MAX_FILE_SIZE {
        return Err(EFBIG);
    }
    match mode {
        0 | FALLOC_FL_KEEP_SIZE => {
            if take_pages(k, id, offset, end)? < end {
                return Err(ENOSPC);
            }
            if mode == 0 {
                with_fs(k, |f, b| {
                    let m = f.mem_mut();
                    if m.get(id).size < end {
                        m.get_mut(id).size = end;
                        m.touch(id, b);
                    }
                });
            }
            Ok(0)
        }
        m if m == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE => {
            let size = k.files.mem().get(id).size;
            let end = end.min(size);
            let mut at = offset;
            while at < end {
                let n = (PAGE - at % PAGE).min(end - at);
                let gpa = k.files.mem().page(id, at / PAGE);
                if gpa != 0 {
                    zero_data(k, gpa + at % PAGE, n);
                }
                at += n;
            }
            with_fs(k, |f, b| f.mem_mut().touch(id, b));
            Ok(0)
        }
        _ => Err(EOPNOTSUPP),
    }
}
