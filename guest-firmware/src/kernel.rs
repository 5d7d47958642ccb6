//! The firmware's global state after boot and the operations on the app's memory.
//!
//! Every ring-0 instruction is costly where ring 0 is emulated (`docs/design.md`), so
//! the paths here avoid loops per byte and per page where they can: user copies check
//! the page tables first and consult the areas only for unmapped pages, large copies
//! between the app and the I/O windows run in ring 3 (`arch/upcall.rs`), and the big
//! tables live in statics rather than being moved into place at boot.

use crate::arch::upcall::{self, Outcome, MIN_UPCALL_BYTES};
use crate::error::FwError;
use crate::fs::Files;
use crate::mem::frames::{FrameTables, Frames};
use crate::mem::paging::{PageTables, NO_EXECUTE, PRESENT, USER, WRITABLE};
use crate::mem::user::{Vma, VmaKind, Vmas, PROT_READ, PROT_WRITE, ZERO_WINDOW_VA};
use crate::platform::hostcall::{self, HostcallArea};
use crate::platform::GuestPlatform;
use crate::syscall::epoll::InterestList;
use crate::syscall::membarrier::Membarrier;
use crate::syscall::pipe::Pipes;
use crate::syscall::signal::Signals;
use crate::syscall::SyscallCounts;
use crate::time::Clock;
use nacre_shared_abi::hostcall::HostcallHeader;
use nacre_shared_abi::layout::{PAGE_SIZE_2M, PAGE_SIZE_4K, USER_VA_END};
use spin::Mutex;

/// Everything the firmware owns once boot is done.
#[derive(Debug)]
pub struct Kernel {
    /// The platform, for the firmware's lifetime.
    pub plat: &'static mut dyn GuestPlatform,
    pub frames: Frames,
    pub pt: PageTables,
    pub vmas: &'static mut Vmas,
    pub brk_start: u64,
    pub brk: u64,
    pub mmap_next: u64,
    /// The shared hostcall area.
    pub io: HostcallArea,
    /// Open files and descriptors, the packaged tree.
    pub files: &'static mut Files,
    /// Pipes' buffers and ends.
    pub pipes: &'static mut Pipes,
    /// The items of every epoll instance.
    pub epoll: &'static mut InterestList,
    /// The sockets (the host's handles).
    pub net: &'static mut crate::syscall::socket::Sockets,
    /// Signal dispositions, mask and alternate stack.
    pub sig: &'static mut Signals,
    /// The clocks.
    pub clock: Clock,
    /// Scratch space for paths and directory entries (never zeroed: only what a call
    /// writes is read back).
    pub scratch: &'static mut Scratch,
    /// The running thread's own state (the scheduler points it at each switch).
    pub thread: crate::sched::Current<crate::sched::ThreadCtl>,
    /// The threads and the scheduler.
    pub sched: &'static mut crate::sched::Sched,
    /// The app's membarrier registrations.
    pub membarrier: Membarrier,
    /// Unsupported syscalls: (number, count), in order of first use.
    pub unsupported: [(u32, u32); 64],
    /// Every syscall's count, for `nacre run --stats`.
    pub syscalls: &'static mut SyscallCounts,
}

/// Buffers the syscall layer reuses.
#[derive(Debug)]
pub struct Scratch {
    /// A path copied in from the app.
    pub path: [u8; PATH_MAX],
    /// A second path (or a generated text, such as a line of /proc/self/maps).
    pub path2: [u8; PATH_MAX],
}

/// Linux PATH_MAX (`include/uapi/linux/limits.h`).
pub const PATH_MAX: usize = 4096;

/// The kernel, once boot has built it. Take it with [`lock`].
pub static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);

/// The kernel, held: [`lock`]'s guard. Before it gives the kernel up, the other vCPUs
/// flush their TLBs if the app's mappings shrank meanwhile, and only then are the
/// frames freed meanwhile reused (`arch/smp.rs`).
pub struct KernelGuard(spin::MutexGuard<'static, Option<Kernel>>);

impl core::ops::Deref for KernelGuard {
    type Target = Option<Kernel>;
    fn deref(&self) -> &Option<Kernel> {
        &self.0
    }
}

impl core::ops::DerefMut for KernelGuard {
    fn deref_mut(&mut self) -> &mut Option<Kernel> {
        &mut self.0
    }
}

impl Drop for KernelGuard {
    fn drop(&mut self) {
        if crate::arch::smp::shootdown_pending() {
            if let Some(k) = self.0.as_mut() {
                k.flush_other_cpus();
            }
        }
    }
}

/// Take the kernel. With several vCPUs, a vCPU spins for it with interrupts off,
/// carrying out the TLB flushes the holder asks for meanwhile, and brings its own
/// running thread into the kernel's state once it has it.
pub fn lock() -> KernelGuard {
    if !crate::arch::smp::active() {
        return KernelGuard(KERNEL.lock());
    }
    let guard = loop {
        if let Some(g) = KERNEL.try_lock() {
            break g;
        }
        crate::arch::smp::poll_flush();
        core::hint::spin_loop();
    };
    crate::arch::smp::set_holder();
    let mut guard = KernelGuard(guard);
    if let Some(k) = guard.as_mut() {
        crate::sched::cpu::on_cpu(k);
    }
    guard
}

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
    /// The other vCPUs flush their TLBs (the app's mappings shrank), then the frames
    /// freed since are free for reuse.
    pub fn flush_other_cpus(&mut self) {
        crate::arch::smp::shootdown();
        self.frames.release_deferred();
    }

    /// Map a fresh zeroed frame at `va` with the area's flags (or, for a file area
    /// read, the image page itself).
    fn populate_page(&mut self, va: u64, vma: &Vma, write: bool) -> Result<u64, UserMemError> {
        let flags = vma.pte_flags().ok_or(UserMemError::Fault)?;
        let page = va & !(PAGE_SIZE_4K - 1);
        if vma.kind == VmaKind::File && page < vma.file_end {
            // Shown read-only until written (then `handle_fault` copies it), whatever
            // the area allows.
            let image_gpa = vma.gpa + (page - vma.start);
            self.map_frame(page, image_gpa, flags & !WRITABLE)?;
            if write {
                self.handle_fault(page, true, true)?;
            }
            return Ok(image_gpa);
        }
        let (gpa, dirty) = self.frames.alloc_user(&mut *self.plat).map_err(frame_err)?;
        if dirty {
            if let Err(e) = self.zero_frame(gpa, PAGE_SIZE_4K) {
                self.frames.free(gpa);
                return Err(e);
            }
        }
        self.map_frame(page, gpa, flags)
    }

    /// Zero frame `gpa` (4 KiB or 2 MiB) before the app sees it: in ring 3 (a ring-0
    /// fill of 4 KiB costs hundreds of emulated instructions), through the zeroing
    /// window rather than the app's own mapping, so that no other thread of the app
    /// can write to it until it is zeroed.
    fn zero_frame(&mut self, gpa: u64, len: u64) -> Result<(), UserMemError> {
        let (va, level) = if len == PAGE_SIZE_2M {
            (ZERO_WINDOW_VA, 1)
        } else {
            (ZERO_WINDOW_VA + PAGE_SIZE_2M, 0)
        };
        let flags = PRESENT | WRITABLE | USER | NO_EXECUTE;
        let mut alloc = FrameTables {
            frames: &mut self.frames,
            plat: &mut *self.plat,
        };
        let mapped = if level == 1 {
            self.pt.map_2m(va, gpa, flags, &mut alloc)
        } else {
            self.pt.map_4k(va, gpa, flags, true, &mut alloc)
        };
        mapped.ok_or(UserMemError::NoMemory)?;
        let zeroed = outcome(upcall::fill(self, va, 0, len));
        // Only this vCPU uses the window (the holder of the kernel zeroes), so only its
        // own translation is flushed: no shoot-down per page fault. Should an app
        // thread on another vCPU have touched the window meanwhile, its stale
        // translation reaches only a frame the app itself is given, and is gone with
        // the shoot-down that comes before the frame is ever freed; a frame freed
        // here, at once, asks for that shoot-down first.
        self.pt.clear_leaf_local(va, level);
        if zeroed.is_err() {
            crate::arch::smp::note_unmapped();
        }
        zeroed
    }

    fn map_frame(&mut self, page: u64, gpa: u64, flags: u64) -> Result<u64, UserMemError> {
        let mut alloc = FrameTables {
            frames: &mut self.frames,
            plat: &mut *self.plat,
        };
        self.pt
            .map_4k(page, gpa, flags, true, &mut alloc)
            .ok_or(UserMemError::NoMemory)?;
        Ok(gpa)
    }

    /// Map a whole 2 MiB page at the region of `va` when the anonymous area covers the
    /// region and nothing in it is mapped yet: one fault (and one acceptance) instead
    /// of 512.
    fn try_populate_2m(&mut self, va: u64, vma: &Vma) -> Result<bool, UserMemError> {
        let start = va & !(PAGE_SIZE_2M - 1);
        let Some(flags) = vma.pte_flags() else {
            return Ok(false);
        };
        if vma.kind != VmaKind::Anon
            || start < vma.start
            || start + PAGE_SIZE_2M > vma.end
            || !self.pt.region_2m_empty(start)
        {
            return Ok(false);
        }
        let (gpa, dirty) = match self.frames.alloc_2m(&mut *self.plat) {
            Ok(frame) => frame,
            Err(FwError::OutOfMemory) => return Ok(false),
            Err(e) => return Err(UserMemError::Platform(e)),
        };
        if dirty {
            if let Err(e) = self.zero_frame(gpa, PAGE_SIZE_2M) {
                self.frames.free_2m(gpa);
                return Err(e);
            }
        }
        let mut alloc = FrameTables {
            frames: &mut self.frames,
            plat: &mut *self.plat,
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
        if (write && vma.prot & PROT_WRITE == 0)
            || vma.pte_flags().is_none()
            || vma.kind == VmaKind::Window
        {
            return Ok(false);
        }
        // Several vCPUs may fault on one page at once; they take the kernel in turn,
        // and by then another may have resolved the fault: the page is mapped, with
        // the access allowed. Mapping it again would replace a page the app may
        // already have written (or, under a 2 MiB mapping, fail as if memory ran out).
        if self
            .pt
            .translate(va)
            .is_some_and(|(_, f)| !write || f & WRITABLE != 0)
        {
            return Ok(true);
        }
        if present {
            // Only a write to an image page still shown read-only in an area that
            // allows writing is resolvable (a file mapping, or app text the app made
            // writable): the app gets its own copy of the page.
            let page = va & !(PAGE_SIZE_4K - 1);
            let image_gpa = match self.pt.translate(page) {
                Some((gpa, f)) if write && f & WRITABLE == 0 && gpa < self.files.image_end() => {
                    gpa & !(PAGE_SIZE_4K - 1)
                }
                _ => return Ok(false),
            };
            let flags = vma.pte_flags().ok_or(UserMemError::Fault)?;
            let (gpa, _) = self.frames.alloc_user(&mut *self.plat).map_err(frame_err)?;
            // SAFETY: both frames are private and mapped by the direct map; the new
            // frame belongs to nobody yet. One page, once per written image page.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    crate::mem::phys_to_virt(image_gpa) as *const u8,
                    crate::mem::phys_to_virt(gpa) as *mut u8,
                    PAGE_SIZE_4K as usize,
                )
            };
            self.pt.unmap_4k(page);
            self.map_frame(page, gpa, flags)?;
            return Ok(true);
        }
        if self.try_populate_2m(va, &vma)? {
            return Ok(true);
        }
        self.populate_page(va, &vma, write)?;
        Ok(true)
    }

    /// Split the 2 MiB mappings that `[start, end)` covers only in part, so that
    /// operations on the range apply to whole mappings.
    pub fn split_edges(&mut self, start: u64, end: u64) -> Result<(), UserMemError> {
        for at in [start, end] {
            if at.is_multiple_of(PAGE_SIZE_2M) || !self.pt.is_2m(at) {
                continue;
            }
            let mut alloc = FrameTables {
                frames: &mut self.frames,
                plat: &mut *self.plat,
            };
            self.pt
                .split_huge(at, &mut alloc)
                .ok_or(UserMemError::NoMemory)?;
        }
        Ok(())
    }

    /// Make sure `[va, va + len)` is mapped for a kernel access (`write` or read),
    /// populating pages on demand. Pages mapped already need only a table walk.
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
            match self.pt.translate(page) {
                Some((_, f)) if f & USER != 0 && (!write || f & WRITABLE != 0) => {}
                mapped => {
                    let vma = self.vmas.find(page).ok_or(UserMemError::Fault)?;
                    if vma.pte_flags().is_none()
                        || (write && vma.prot & PROT_WRITE == 0)
                        || vma.kind == VmaKind::Window
                    {
                        return Err(UserMemError::Fault);
                    }
                    if mapped.is_some() {
                        // Present but read-only: a file page the app writes to.
                        if !self.handle_fault(page, write, true)? {
                            return Err(UserMemError::Fault);
                        }
                    } else {
                        self.populate_page(page, &vma, write)?;
                    }
                }
            }
            page += PAGE_SIZE_4K;
        }
        Ok(())
    }

    /// Copy bytes from the app (ring 0; for small copies).
    pub fn copy_from_user(&mut self, dst: &mut [u8], va: u64) -> Result<(), UserMemError> {
        self.populate(va, dst.len() as u64, false)?;
        // SAFETY: `populate` mapped every page of the range readable in the current
        // address space; the app is stopped while the kernel runs.
        unsafe { core::ptr::copy_nonoverlapping(va as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copy bytes to the app (ring 0; for small copies).
    pub fn copy_to_user(&mut self, va: u64, src: &[u8]) -> Result<(), UserMemError> {
        self.populate(va, src.len() as u64, true)?;
        // SAFETY: `populate` mapped every page of the range writable.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), va as *mut u8, src.len()) };
        Ok(())
    }

    /// Prepare the app's `[va, va + len)` for a copy that reads it (or, with `write`,
    /// writes it). A large copy runs in ring 3: the areas must cover the range (only a
    /// read may come from a window), and the helper faults pages in itself. A small one
    /// runs in ring 0: the pages are mapped now. Returns whether the copy goes to ring 3.
    fn prepare_app_range(&mut self, va: u64, len: u64, write: bool) -> Result<bool, UserMemError> {
        let end = va.checked_add(len).ok_or(UserMemError::Fault)?;
        if len >= MIN_UPCALL_BYTES {
            if end > USER_VA_END || !self.vmas.covers(va, end, write, !write) {
                return Err(UserMemError::Fault);
            }
            return Ok(true);
        }
        self.populate(va, len, write)?;
        Ok(false)
    }

    /// Copy `len` bytes from firmware-readable address `src` (an I/O window) to the
    /// app at `dst`: in ring 3 when large.
    pub fn window_to_user(&mut self, dst: u64, src: u64, len: u64) -> Result<(), UserMemError> {
        if self.prepare_app_range(dst, len, true)? {
            return outcome(upcall::copy(self, dst, src, len));
        }
        // SAFETY: the destination is mapped writable; `src` is a window the caller
        // bounded, mapped for the firmware.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len as usize) };
        Ok(())
    }

    /// Copy `len` bytes of the app at `src` into the firmware-writable window address
    /// `dst` (the hostcall data area): in ring 3 when large.
    pub fn user_to_window(&mut self, dst: u64, src: u64, len: u64) -> Result<(), UserMemError> {
        if self.prepare_app_range(src, len, false)? {
            return outcome(upcall::copy(self, dst, src, len));
        }
        // SAFETY: the source is mapped readable; `dst` is a window the caller bounded.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len as usize) };
        Ok(())
    }

    /// Fill `len` bytes of the app at `dst` with `byte`: in ring 3 when large.
    pub fn fill_user(&mut self, dst: u64, byte: u8, len: u64) -> Result<(), UserMemError> {
        if self.prepare_app_range(dst, len, true)? {
            return outcome(upcall::fill(self, dst, byte, len));
        }
        // SAFETY: the range is mapped writable.
        unsafe { core::ptr::write_bytes(dst as *mut u8, byte, len as usize) };
        Ok(())
    }

    /// Copy a NUL-terminated path from the app into `scratch.path`; returns its
    /// length. `Err(None)` if it does not fit with its NUL (ENAMETOOLONG).
    pub fn copy_path_from_user(&mut self, va: u64) -> Result<usize, Option<UserMemError>> {
        let buf = self.scratch.path.as_mut_ptr();
        let cap = self.scratch.path.len();
        let mut done = 0usize;
        while done < cap {
            let at = va
                .checked_add(done as u64)
                .ok_or(Some(UserMemError::Fault))?;
            let in_page = (PAGE_SIZE_4K - at % PAGE_SIZE_4K) as usize;
            let n = in_page.min(cap - done);
            self.populate(at, n as u64, false).map_err(Some)?;
            // SAFETY: `populate` mapped these bytes readable; the app is stopped.
            let chunk = unsafe { core::slice::from_raw_parts(at as *const u8, n) };
            let take = chunk.iter().position(|&b| b == 0);
            let len = take.unwrap_or(n);
            // SAFETY: `buf` is the kernel's scratch path buffer (`cap` bytes), which
            // `populate` does not touch; `done + len <= cap`.
            unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.add(done), len) };
            if take.is_some() {
                return Ok(done + len);
            }
            done += n;
        }
        Err(None)
    }

    /// Copy the first `n` bytes of `scratch.path2` to the app.
    pub fn copy_path2_to_user(&mut self, va: u64, n: usize) -> Result<(), UserMemError> {
        let n = n.min(self.scratch.path2.len());
        let src = self.scratch.path2.as_ptr();
        self.populate(va, n as u64, true)?;
        // SAFETY: `populate` mapped the destination writable; `src` is the kernel's
        // scratch buffer, which `populate` does not touch, holding at least `n` bytes.
        unsafe { core::ptr::copy_nonoverlapping(src, va as *mut u8, n) };
        Ok(())
    }

    /// Unmap `[start, end)` and free its anonymous frames.
    pub fn unmap_range(&mut self, start: u64, end: u64) -> Result<(), UserMemError> {
        self.split_edges(start, end)?;
        if !self.vmas.remove_range(start, end) {
            return Err(UserMemError::NoMemory);
        }
        self.drop_pages(start, end);
        Ok(())
    }

    /// Remove the page mappings of `[start, end)` (whose edges are split), freeing
    /// the frames that are the app's own (not image pages shown by file areas).
    pub fn drop_pages(&mut self, start: u64, end: u64) {
        let image_end = self.files.image_end();
        let mut va = start;
        while let Some((at, level, entry)) = self.pt.next_leaf(va, end) {
            let gpa = self.pt.leaf_gpa(entry, level);
            self.pt.clear_leaf(at, level);
            if level == 1 {
                self.frames.free_2m(gpa);
                va = at + PAGE_SIZE_2M;
            } else {
                if gpa >= image_end {
                    self.frames.free(gpa);
                }
                va = at + PAGE_SIZE_4K;
            }
        }
    }

    /// Give every page mapping in `[start, end)` (whose edges are split) the flags of
    /// protection `prot`; PROT_NONE keeps the frames but makes them supervisor-only,
    /// so their contents survive a later mprotect back.
    pub fn protect_pages(&mut self, start: u64, end: u64, prot: u32) {
        let flags = Vma::anon(start, end, prot).pte_flags().unwrap_or(0);
        let mut va = start;
        while let Some((at, level, entry)) = self.pt.next_leaf(va, end) {
            let mut f = flags;
            // A file page still shown read-only stays so: a write makes it the app's.
            if level == 0
                && entry & WRITABLE == 0
                && self.pt.leaf_gpa(entry, 0) < self.files.image_end()
            {
                f &= !WRITABLE;
            }
            self.pt.set_leaf_flags(at, level, f);
            va = at
                + if level == 1 {
                    PAGE_SIZE_2M
                } else {
                    PAGE_SIZE_4K
                };
        }
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
        if want < self.brk_start || want > self.brk_start + BRK_MAX {
            return self.brk;
        }
        let new = (want + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
        let cur = (self.brk + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
        if new > cur {
            if self.vmas.overlaps(cur, new) {
                return self.brk;
            }
            let grown = if cur == self.brk_start {
                self.vmas
                    .insert(Vma::anon(cur, new, PROT_READ | PROT_WRITE))
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

    /// One hostcall whose data the caller placed in the area: `Ok(Ok(result))`,
    /// `Ok(Err(errno))`, or a malformed reply (fatal).
    pub fn hostcall(&mut self, req: HostcallHeader) -> Result<Result<u64, u64>, FwError> {
        let plat = &mut *self.plat;
        self.io.exchange(req, |page| plat.ring_hostcall(page))
    }

    /// Tell the host that the app is entered now, once, after the boot.
    pub fn announce_app_entry(&mut self) -> Result<(), FwError> {
        match self.hostcall(hostcall::app_entry_request())? {
            Ok(_) => Ok(()),
            Err(_) => Err(FwError::Hostcall),
        }
    }

    /// Write firmware bytes to the host's fd 1 or 2 (messages).
    pub fn console_write(&mut self, fd: u32, data: &[u8]) -> Result<u64, u64> {
        let plat = &mut *self.plat;
        hostcall::console_write_bytes(
            &mut self.io,
            |io, req| io.exchange(req, |page| plat.ring_hostcall(page)),
            fd,
            data,
        )
    }

    /// Report the app's exit status with the syscall counts (the unsupported ones,
    /// then all) and stop.
    pub fn exit(&mut self, status: u8) -> ! {
        let mut n = 0u64;
        for &pair in self.unsupported.iter().take_while(|(_, c)| *c > 0) {
            if !put_pair(&mut self.io, n, pair) {
                break;
            }
            n += 8;
        }
        let unsupported = n;
        let (used, peak) = self.frames.in_use();
        // Pages of 4 KiB, in KiB.
        let kib = |pages: u64| u32::try_from(pages * 4).unwrap_or(u32::MAX);
        let mut counters = [0u32; nacre_shared_abi::hostcall::FIRMWARE_COUNTERS.len()];
        let scheduler = crate::sched::counters();
        counters[..scheduler.len()].copy_from_slice(&scheduler);
        counters[scheduler.len()..].copy_from_slice(&[kib(used), kib(peak)]);
        let firmware = (0u32..).map(|i| nacre_shared_abi::hostcall::FIRMWARE_COUNTER_BASE + i);
        for pair in self.syscalls.iter().chain(firmware.zip(counters)) {
            if !put_pair(&mut self.io, n, pair) {
                break;
            }
            n += 8;
        }
        let _ = self.hostcall(hostcall::exit_request(status, n, n - unsupported));
        // The host must not resume us after an exit; if it does, terminate.
        self.plat.terminate(0xFF)
    }
}

/// Put a `(u32 number, u32 count)` pair at offset `at` of the hostcall data area;
/// `false` when it does not fit.
fn put_pair(io: &mut HostcallArea, at: u64, (nr, count): (u32, u32)) -> bool {
    let mut pair = [0u8; 8];
    pair[..4].copy_from_slice(&nr.to_le_bytes());
    pair[4..].copy_from_slice(&count.to_le_bytes());
    io.put(at, &pair).is_ok()
}

fn frame_err(e: FwError) -> UserMemError {
    match e {
        FwError::OutOfMemory => UserMemError::NoMemory,
        other => UserMemError::Platform(other),
    }
}

fn outcome(o: Outcome) -> Result<(), UserMemError> {
    match o {
        Outcome::Done => Ok(()),
        Outcome::Fault => Err(UserMemError::Fault),
        Outcome::NoMemory => Err(UserMemError::NoMemory),
    }
}
