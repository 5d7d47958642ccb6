//! Pipes (pipe, pipe2) inside the firmware, as Linux's `fs/pipe.c` has them: a
//! bounded buffer (64 KiB, Linux's default capacity) between a read end and a
//! write end, each an open file that dup, fcntl and close treat like any other.
//!
//! A read takes what is there (at most what was asked), waits while the pipe is
//! empty and a writer remains, and returns 0 once every writer is gone. A write of
//! at most [`PIPE_BUF`] bytes goes in whole or not at all; a larger one goes in as
//! room appears. With no reader left a write fails with EPIPE and sends SIGPIPE.
//! Non-blocking ends say EAGAIN instead of waiting; a signal ends a wait with
//! ERESTARTSYS (restarted after a handler with SA_RESTART), or with the bytes moved
//! so far.
//!
//! The buffer is a ring over up to 16 pages, taken (zeroed) when first written and
//! given back when the pipe is gone. An empty ring starts over at its first page, so
//! a pipe that never holds much uses one page. Each pipe's pages are mapped at its
//! 64 KiB of the pipe window ([`PIPE_WINDOW_VA`]), user-accessible, so that bulk
//! copies between the app and the ring run in ring 3 (`arch/upcall.rs`) as the
//! console's and the files' do: a ring-0 copy would move some 8 MB/s where ring 0
//! is emulated. The app can reach its pipes' bytes there, as it can reach every
//! other byte it owns; the firmware keeps the ring's bookkeeping to itself and
//! only ever copies bytes out of the window.
//!
//! Waiters: readers and writers of pipe `id` sleep on [`pipe_key`]; every change
//! also wakes the poll and epoll waiters and marks the edge of the epoll items that
//! watch the other end (`syscall/poll.rs`, [`super::poll::notify`]).

use super::errno::*;
use super::io::Segments;
use super::poll::{self, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDNORM, EPOLLWRNORM};
use super::signal::{self, SigInfo, SIGPIPE, SI_USER};
use super::{mem_err, SysResult};
use crate::arch::upcall::{self, Outcome};
use crate::error::FwError;
use crate::fs::{Node, O_CLOEXEC, O_NONBLOCK, O_WRONLY};
use crate::kernel::Kernel;
use crate::mem::frames::FrameTables;
use crate::mem::paging::{NO_EXECUTE, PRESENT, USER, WRITABLE};
use crate::mem::phys_to_virt;
use crate::mem::user::PIPE_WINDOW_VA;

/// Writes of at most this many bytes are atomic (`include/uapi/linux/limits.h`).
pub const PIPE_BUF: u64 = 4096;
/// Pages of a pipe's buffer (`PIPE_DEF_BUFFERS`, `include/linux/pipe_fs_i.h`).
pub const PIPE_PAGES: usize = 16;
const PAGE: u32 = 4096;
/// A pipe's capacity in bytes.
pub const PIPE_CAPACITY: u32 = PIPE_PAGES as u32 * PAGE;
/// Most pipes at once: every pipe has two open files.
pub const MAX_PIPES: usize = crate::fs::MAX_OPEN / 2;
/// Bytes of the pipe window: every pipe's buffer.
pub const PIPE_WINDOW_SIZE: u64 = MAX_PIPES as u64 * PIPE_CAPACITY as u64;

/// One end of pipe `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeEnd {
    pub id: u16,
    pub write: bool,
}

/// Where the bytes of a pipe are in its buffer: `len` bytes from `start`, wrapping
/// at [`PIPE_CAPACITY`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ring {
    start: u32,
    len: u32,
}

impl Ring {
    /// An empty ring.
    pub const fn new() -> Self {
        Self { start: 0, len: 0 }
    }

    /// Bytes held.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that fit.
    pub fn room(&self) -> u32 {
        PIPE_CAPACITY - self.len
    }

    /// The first `n` bytes at most, as many as lie in one stretch of the buffer
    /// (before it wraps): (offset in the buffer, length); `None` when empty or `n`
    /// is 0.
    pub fn read_chunk(&self, n: u32) -> Option<(u32, u32)> {
        chunk(self.start, self.len.min(n))
    }

    /// Where the next `n` bytes at most go, as many as fit in one stretch of the
    /// buffer: (offset in the buffer, length); `None` when full or `n` is 0.
    pub fn write_chunk(&self, n: u32) -> Option<(u32, u32)> {
        chunk((self.start + self.len) % PIPE_CAPACITY, self.room().min(n))
    }

    /// `n` bytes were read from the front.
    pub fn consumed(&mut self, n: u32) {
        debug_assert!(n <= self.len);
        self.len -= n;
        // Empty: start over at the first page.
        self.start = if self.len == 0 {
            0
        } else {
            (self.start + n) % PIPE_CAPACITY
        };
    }

    /// `n` bytes were written at the back.
    pub fn produced(&mut self, n: u32) {
        debug_assert!(n <= self.room());
        self.len += n;
    }

    /// Whether a writer could put [`PIPE_BUF`] bytes in now (POLLOUT: an atomic
    /// write would not wait).
    pub fn writable(&self) -> bool {
        u64::from(self.room()) >= PIPE_BUF
    }
}

/// Up to `n` bytes from `offset`, cut where the buffer wraps.
fn chunk(offset: u32, n: u32) -> Option<(u32, u32)> {
    (n > 0).then_some((offset, n.min(PIPE_CAPACITY - offset)))
}

/// The pages of the buffer that `[offset, offset + len)` touches (`len` > 0).
fn pages_of(offset: u32, len: u32) -> core::ops::RangeInclusive<usize> {
    (offset / PAGE) as usize..=((offset + len - 1) / PAGE) as usize
}

/// One pipe.
#[derive(Debug, Clone, Copy)]
pub struct Pipe {
    ring: Ring,
    /// Whether each end's open file is still open (a pipe made by pipe(2) has one of
    /// each); the pipe is free when neither is.
    read_open: bool,
    write_open: bool,
    /// The open-file indices of the two ends (for the epoll items watching them).
    read_file: u16,
    write_file: u16,
    /// The buffer's pages (GPAs; 0: not taken yet), mapped in the pipe window.
    pages: [u64; PIPE_PAGES],
}

const FREE_PIPE: Pipe = Pipe {
    ring: Ring::new(),
    read_open: false,
    write_open: false,
    read_file: 0,
    write_file: 0,
    pages: [0; PIPE_PAGES],
};

impl Pipe {
    /// What the end is ready for (poll bits), as Linux's `pipe_poll`: the read end
    /// is readable with bytes in it and hung up without writers; the write end is
    /// writable with room for an atomic write and in error without readers.
    pub fn ready(&self, write: bool) -> u32 {
        if write {
            let room = if self.ring.writable() {
                EPOLLOUT | EPOLLWRNORM
            } else {
                0
            };
            room | if self.read_open { 0 } else { EPOLLERR }
        } else {
            let data = if self.ring.is_empty() {
                0
            } else {
                EPOLLIN | EPOLLRDNORM
            };
            data | if self.write_open { 0 } else { EPOLLHUP }
        }
    }
}

/// Where byte `offset` of pipe `id`'s buffer is mapped.
fn buffer_va(id: u16, offset: u32) -> u64 {
    PIPE_WINDOW_VA + u64::from(id) * u64::from(PIPE_CAPACITY) + u64::from(offset)
}

/// Every pipe.
#[derive(Debug)]
pub struct Pipes {
    pipes: [Pipe; MAX_PIPES],
}

impl Default for Pipes {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipes {
    /// No pipes.
    pub const fn new() -> Self {
        Self {
            pipes: [FREE_PIPE; MAX_PIPES],
        }
    }

    /// A new pipe with both ends open; `None` when every slot is taken.
    fn create(&mut self) -> Option<u16> {
        let id = self
            .pipes
            .iter()
            .position(|p| !p.read_open && !p.write_open)?;
        self.pipes[id] = Pipe {
            read_open: true,
            write_open: true,
            ..FREE_PIPE
        };
        Some(id as u16)
    }

    /// Pipe `id`.
    pub fn get(&self, id: u16) -> &Pipe {
        &self.pipes[usize::from(id)]
    }

    fn get_mut(&mut self, id: u16) -> &mut Pipe {
        &mut self.pipes[usize::from(id)]
    }
}

/// The wait queue of pipe `id`'s readers and writers.
pub fn pipe_key(id: u16) -> u64 {
    poll::object_key(poll::KeyClass::Pipe, u64::from(id))
}

/// pipe2 (and pipe, with no flags): two descriptors, the read end first.
pub fn pipe2(k: &mut Kernel, fds: u64, flags: u32) -> SysResult {
    // O_DIRECT (packet mode) and O_NOTIFICATION_PIPE are not supported.
    if flags & !(O_CLOEXEC | O_NONBLOCK) != 0 {
        return Err(EINVAL);
    }
    let id = k.pipes.create().ok_or(EMFILE)?;
    let read = match k
        .files
        .open(Node::Pipe(PipeEnd { id, write: false }), flags)
    {
        Ok(fd) => fd,
        Err(e) => {
            k.pipes.pipes[usize::from(id)] = FREE_PIPE;
            return Err(e);
        }
    };
    let write = match k
        .files
        .open(Node::Pipe(PipeEnd { id, write: true }), O_WRONLY | flags)
    {
        Ok(fd) => fd,
        Err(e) => {
            let _ = k.files.close(read);
            k.pipes.pipes[usize::from(id)] = FREE_PIPE;
            return Err(e);
        }
    };
    let (read_file, write_file) = (k.files.index(read)?, k.files.index(write)?);
    let p = k.pipes.get_mut(id);
    p.read_file = read_file as u16;
    p.write_file = write_file as u16;
    let mut pair = [0u8; 8];
    pair[..4].copy_from_slice(&(read as i32).to_le_bytes());
    pair[4..].copy_from_slice(&(write as i32).to_le_bytes());
    if let Err(e) = k.copy_to_user(fds, &pair) {
        // As if the descriptors had never been installed (Linux `do_pipe2`).
        let _ = k.files.close(read);
        let _ = k.files.close(write);
        k.pipes.pipes[usize::from(id)] = FREE_PIPE;
        return Err(mem_err(e));
    }
    Ok(0)
}

/// The last descriptor of one end went away: the other end's waiters see the end
/// of data (readers) or EPIPE (writers); the pipe is freed with its second end.
pub fn close_end(k: &mut Kernel, end: PipeEnd) {
    let p = k.pipes.get_mut(end.id);
    if end.write {
        p.write_open = false;
    } else {
        p.read_open = false;
    }
    if !p.read_open && !p.write_open {
        let pages = p.pages;
        *p = FREE_PIPE;
        for (page, &gpa) in pages.iter().enumerate().filter(|(_, &g)| g != 0) {
            // Unmapped (and flushed from the TLB) before the frame can be reused.
            k.pt.unmap_4k(buffer_va(end.id, page as u32 * PAGE));
            k.frames.free(gpa);
        }
        return;
    }
    // Linux wakes both sides for anything (`pipe_release`).
    let other = usize::from(if end.write { p.read_file } else { p.write_file });
    poll::notify(k, Some(pipe_key(end.id)), Some((other, 0)));
}

/// The pipe end of the open file at `index`.
fn end_of(k: &Kernel, index: usize) -> Result<PipeEnd, u64> {
    match k.files.file(index).node {
        Node::Pipe(end) => Ok(end),
        _ => Err(EBADF),
    }
}

fn nonblocking(k: &Kernel, index: usize) -> bool {
    k.files.file(index).flags & O_NONBLOCK != 0
}

/// read and readv of the read end of a pipe, open file `index` (held by the caller).
pub fn read(k: &mut Kernel, index: usize, mut to: Segments) -> SysResult {
    let total = to.total(k)?;
    if total == 0 {
        return Ok(0);
    }
    loop {
        let end = end_of(k, index)?;
        let p = k.pipes.get(end.id);
        if !p.ring.is_empty() {
            let was_writable = p.ring.writable();
            let r = copy_out(k, end.id, &mut to, total);
            let p = k.pipes.get(end.id);
            // Writers may go on; the write end's edge only if it had no room before
            // (`pipe_read`: `was_full`).
            let edge = (!was_writable && p.ring.writable())
                .then_some((usize::from(p.write_file), EPOLLOUT | EPOLLWRNORM));
            poll::notify(k, Some(pipe_key(end.id)), edge);
            return r;
        }
        if !p.write_open {
            return Ok(0);
        }
        if nonblocking(k, index) {
            return Err(EAGAIN);
        }
        poll::block_on(
            k,
            pipe_key(end.id),
            b"reads an empty pipe that no other thread can write to",
        )?;
    }
}

/// Move up to `total` bytes from pipe `id` to the app; the bytes moved, or EFAULT
/// when none could be.
fn copy_out(k: &mut Kernel, id: u16, to: &mut Segments, total: u64) -> SysResult {
    let mut done = 0u64;
    while done < total {
        let want = u32::try_from(total - done).unwrap_or(u32::MAX);
        let Some((offset, n)) = k.pipes.get(id).ring.read_chunk(want) else {
            break;
        };
        let Some((va, len)) = to.peek(k, u64::from(n))? else {
            break;
        };
        // The bytes were written, so their pages are mapped.
        if let Err(e) = k.window_to_user(va, buffer_va(id, offset), len) {
            return if done > 0 { Ok(done) } else { Err(mem_err(e)) };
        }
        k.pipes.get_mut(id).ring.consumed(len as u32);
        to.advance(len);
        done += len;
    }
    Ok(done)
}

/// write and writev to the write end of a pipe, open file `index` (held by the
/// caller).
pub fn write(k: &mut Kernel, index: usize, mut from: Segments) -> SysResult {
    let total = from.total(k)?;
    if total == 0 {
        return Ok(0);
    }
    let atomic = total <= PIPE_BUF;
    let mut done = 0u64;
    loop {
        let end = end_of(k, index)?;
        let p = k.pipes.get(end.id);
        if !p.read_open {
            signal::send_to_process(k, SIGPIPE, SigInfo::user(SI_USER));
            return if done > 0 { Ok(done) } else { Err(EPIPE) };
        }
        let room = u64::from(p.ring.room());
        if room > 0 && (!atomic || room >= total) {
            let moved = copy_in(k, end.id, &mut from, total - done);
            let read_file = usize::from(k.pipes.get(end.id).read_file);
            match moved {
                Ok(0) => {}
                Ok(n) => {
                    done += n;
                    let edge = (read_file, EPOLLIN | EPOLLRDNORM);
                    poll::notify(k, Some(pipe_key(end.id)), Some(edge));
                }
                Err(e) => return if done > 0 { Ok(done) } else { Err(e) },
            }
            if done == total {
                return Ok(done);
            }
            if k.pipes.get(end.id).ring.room() > 0 {
                // Stopped short of the room: the app's buffer faulted.
                return if done > 0 { Ok(done) } else { Err(EFAULT) };
            }
        }
        if nonblocking(k, index) {
            return if done > 0 { Ok(done) } else { Err(EAGAIN) };
        }
        match poll::block_on(
            k,
            pipe_key(end.id),
            b"writes to a full pipe that no other thread can read",
        ) {
            Ok(()) => {}
            Err(e) => return if done > 0 { Ok(done) } else { Err(e) },
        }
    }
}

/// Move up to `want` bytes from the app into pipe `id`, taking pages as needed;
/// the bytes moved, or the error that stopped the first one (EFAULT, ENOMEM).
fn copy_in(k: &mut Kernel, id: u16, from: &mut Segments, want: u64) -> SysResult {
    let mut done = 0u64;
    while done < want {
        let n = u32::try_from(want - done).unwrap_or(u32::MAX);
        let Some((offset, n)) = k.pipes.get(id).ring.write_chunk(n) else {
            break;
        };
        let Some((va, len)) = from.peek(k, u64::from(n))? else {
            break;
        };
        if let Err(e) = take_pages(k, id, offset, len as u32) {
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        if let Err(e) = k.user_to_window(buffer_va(id, offset), va, len) {
            return if done > 0 { Ok(done) } else { Err(mem_err(e)) };
        }
        k.pipes.get_mut(id).ring.produced(len as u32);
        from.advance(len);
        done += len;
    }
    Ok(done)
}

/// Take and map the pages of pipe `id`'s buffer that `[offset, offset + len)`
/// touches and that it does not have yet. They are zeroed (in ring 3, where they are
/// mapped): the app can see them. ENOMEM when memory ran out.
fn take_pages(k: &mut Kernel, id: u16, offset: u32, len: u32) -> Result<(), u64> {
    for page in pages_of(offset, len) {
        if k.pipes.get(id).pages[page] != 0 {
            continue;
        }
        let (gpa, dirty) = match k.frames.alloc_user(&mut *k.plat) {
            Ok(frame) => frame,
            Err(FwError::OutOfMemory) => return Err(ENOMEM),
            Err(e) => crate::fatal_error(e),
        };
        let va = buffer_va(id, page as u32 * PAGE);
        let mut alloc = FrameTables {
            frames: &mut k.frames,
            plat: &mut *k.plat,
        };
        let flags = PRESENT | WRITABLE | USER | NO_EXECUTE;
        if k.pt.map_4k(va, gpa, flags, true, &mut alloc).is_none() {
            k.frames.free(gpa);
            return Err(ENOMEM);
        }
        k.pipes.get_mut(id).pages[page] = gpa;
        if dirty && upcall::fill(k, va, 0, u64::from(PAGE)) != Outcome::Done {
            // SAFETY: the frame was just taken for this pipe and holds nothing yet;
            // the direct map reaches it.
            unsafe { core::ptr::write_bytes(phys_to_virt(gpa) as *mut u8, 0, PAGE as usize) };
        }
    }
    Ok(())
}

/// FIONREAD of a pipe end: the bytes waiting.
pub fn bytes_waiting(k: &Kernel, end: PipeEnd) -> u32 {
    k.pipes.get(end.id).ring.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_linuxs() {
        assert_eq!(PIPE_BUF, libc::PIPE_BUF as u64);
        assert_eq!(PIPE_CAPACITY, 65536, "the default pipe size");
        assert_eq!(MAX_PIPES * 2, crate::fs::MAX_OPEN);
    }

    #[test]
    fn chunks_end_where_the_buffer_wraps() {
        let mut r = Ring::new();
        assert_eq!(r.read_chunk(10), None, "empty");
        assert_eq!(r.write_chunk(0), None);
        assert_eq!(r.write_chunk(100_000), Some((0, PIPE_CAPACITY)));
        r.produced(4096);
        assert_eq!(r.write_chunk(10), Some((4096, 10)));
        r.produced(100);
        assert_eq!(r.read_chunk(5000), Some((0, 4196)));
        r.consumed(4000);
        assert_eq!(r.read_chunk(5000), Some((4000, 196)));
        assert_eq!(r.len(), 196);
        assert_eq!(pages_of(4000, 196), 0..=1);
        assert_eq!(pages_of(4096, 4096), 1..=1);
        assert_eq!(pages_of(PIPE_CAPACITY - 1, 1), 15..=15);
    }

    #[test]
    fn the_ring_wraps_and_starts_over_when_empty() {
        let mut r = Ring::new();
        r.produced(PIPE_CAPACITY);
        assert_eq!((r.room(), r.write_chunk(1)), (0, None), "full");
        assert!(!r.writable());
        r.consumed(PIPE_CAPACITY - 10);
        assert_eq!(r.read_chunk(100), Some((PIPE_CAPACITY - 10, 10)));
        assert_eq!(r.write_chunk(100), Some((0, 100)), "wraps to the start");
        r.produced(5000);
        assert_eq!(r.len(), 5010);
        assert!(r.writable());
        r.consumed(10);
        assert_eq!(r.read_chunk(u32::MAX), Some((0, 5000)));
        r.consumed(5000);
        assert!(r.is_empty());
        assert_eq!(r.write_chunk(1), Some((0, 1)), "an empty ring starts over");
    }

    #[test]
    fn pollout_needs_room_for_an_atomic_write() {
        let mut r = Ring::new();
        r.produced(PIPE_CAPACITY - PIPE_BUF as u32);
        assert!(r.writable());
        r.produced(1);
        assert!(!r.writable());
    }

    #[test]
    fn each_end_reports_what_linux_reports() {
        let mut p = Pipe {
            read_open: true,
            write_open: true,
            ..FREE_PIPE
        };
        assert_eq!(p.ready(false), 0, "empty");
        assert_eq!(p.ready(true), EPOLLOUT | EPOLLWRNORM);
        p.ring.produced(1);
        assert_eq!(p.ready(false), EPOLLIN | EPOLLRDNORM);
        p.write_open = false;
        assert_eq!(p.ready(false), EPOLLIN | EPOLLRDNORM | EPOLLHUP);
        p.write_open = true;
        p.read_open = false;
        assert_eq!(p.ready(true), EPOLLOUT | EPOLLWRNORM | EPOLLERR);
        p.ring.produced(PIPE_CAPACITY - 1);
        assert_eq!(p.ready(true), EPOLLERR, "full");
    }

    #[test]
    fn a_slot_is_reused_once_both_ends_are_closed() {
        let mut pipes = Pipes::new();
        assert_eq!(pipes.create(), Some(0));
        assert_eq!(pipes.create(), Some(1));
        pipes.get_mut(0).read_open = false;
        assert_eq!(pipes.create(), Some(2), "one end still open");
        pipes.get_mut(0).write_open = false;
        assert_eq!(pipes.create(), Some(0));
        let mut n = 3;
        while pipes.create().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_PIPES);
    }
}
