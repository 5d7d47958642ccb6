//! eventfd (eventfd, eventfd2): a 64-bit counter that is a descriptor, as Linux's
//! `fs/eventfd.c` has it. A write adds to it, waiting while the sum would pass
//! [`EVENTFD_MAX`]; a read takes it all (or 1 in semaphore mode), waiting while it
//! is 0. Both move exactly 8 bytes.
//!
//! The counter is state in its open file ([`Node::Event`]); readers and writers wait
//! on the open file's queue ([`super::poll::file_key`]), and every change wakes the
//! poll and epoll waiters and marks the edge of the epoll items watching it.

use super::errno::*;
use super::io::Segments;
use super::poll::{self, EPOLLERR, EPOLLIN, EPOLLOUT};
use super::{mem_err, SysResult};
use crate::fs::{Node, O_CLOEXEC, O_NONBLOCK, O_RDWR};
use crate::kernel::Kernel;

/// eventfd2 flags (`include/uapi/linux/eventfd.h`: `EFD_CLOEXEC` is `O_CLOEXEC`,
/// `EFD_NONBLOCK` is `O_NONBLOCK`).
pub const EFD_SEMAPHORE: u32 = 1 << 0;
pub const EFD_CLOEXEC: u32 = O_CLOEXEC;
pub const EFD_NONBLOCK: u32 = O_NONBLOCK;
/// The largest value the counter can hold (`ULLONG_MAX - 1`: a write that would
/// reach `ULLONG_MAX` waits, Linux `fs/eventfd.c`).
pub const EVENTFD_MAX: u64 = u64::MAX - 1;
/// What a read or write moves: one `u64`.
pub const EVENTFD_SIZE: u64 = 8;

/// One eventfd's counter and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFd {
    count: u64,
    semaphore: bool,
}

impl EventFd {
    /// A counter starting at `initval`.
    pub const fn new(initval: u32, semaphore: bool) -> Self {
        Self {
            count: initval as u64,
            semaphore,
        }
    }

    /// The counter.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// What a read takes now: all of the counter, or 1 in semaphore mode; `None`
    /// while it is 0 (the reader waits).
    pub fn take(&mut self) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let v = if self.semaphore { 1 } else { self.count };
        self.count -= v;
        Some(v)
    }

    /// Add `v`: `Ok(true)` when added, `Ok(false)` when the counter would pass
    /// [`EVENTFD_MAX`] (the writer waits), EINVAL for `u64::MAX`, which no counter
    /// can take.
    pub fn add(&mut self, v: u64) -> Result<bool, u64> {
        if v == u64::MAX {
            return Err(EINVAL);
        }
        if EVENTFD_MAX - self.count < v {
            return Ok(false);
        }
        self.count += v;
        Ok(true)
    }

    /// Poll bits (Linux `eventfd_poll`): readable above 0, writable while 1 can
    /// be added, in error at `u64::MAX` (which [`EventFd::add`] never reaches).
    pub fn ready(&self) -> u32 {
        let mut r = 0;
        if self.count > 0 {
            r |= EPOLLIN;
        }
        if self.count == u64::MAX {
            r |= EPOLLERR;
        }
        if self.count < EVENTFD_MAX {
            r |= EPOLLOUT;
        }
        r
    }
}

pub fn eventfd2(k: &mut Kernel, initval: u32, flags: u32) -> SysResult {
    if flags & !(EFD_SEMAPHORE | EFD_CLOEXEC | EFD_NONBLOCK) != 0 {
        return Err(EINVAL);
    }
    let node = Node::Event(EventFd::new(initval, flags & EFD_SEMAPHORE != 0));
    k.files
        .open(node, O_RDWR | (flags & (EFD_CLOEXEC | EFD_NONBLOCK)))
}

fn counter(k: &Kernel, index: usize) -> Result<EventFd, u64> {
    match k.files.file(index).node {
        Node::Event(e) => Ok(e),
        _ => Err(EBADF),
    }
}

/// A counter changed (`events`: EPOLLIN after a write, EPOLLOUT after a read, as
/// Linux wakes its waiters): its waiters, the poll and epoll waiters and the edge
/// of the epoll items that watch it for those.
fn changed(k: &mut Kernel, index: usize, e: EventFd, events: u32) {
    k.files.file_mut(index).node = Node::Event(e);
    poll::notify(k, Some(poll::file_key(index)), Some((index, events)));
}

/// read and readv of the eventfd at open file `index` (held by the caller): the
/// counter (or 1) as 8 bytes, spread over the buffers, which together must hold it.
pub fn read(k: &mut Kernel, index: usize, mut to: Segments) -> SysResult {
    if to.total(k)? < EVENTFD_SIZE {
        return Err(EINVAL);
    }
    let v = loop {
        let mut e = counter(k, index)?;
        if let Some(v) = e.take() {
            changed(k, index, e, EPOLLOUT);
            break v;
        }
        if k.files.file(index).flags & O_NONBLOCK != 0 {
            return Err(EAGAIN);
        }
        poll::block_on(
            k,
            poll::file_key(index),
            b"reads an eventfd at 0 that no other thread can write to",
        )?;
    };
    // Taken before the copy, as Linux takes it (a bad buffer loses the count).
    to.put(k, &v.to_le_bytes())?;
    Ok(EVENTFD_SIZE)
}

/// write of the eventfd at open file `index` (held by the caller): the 8-byte
/// value at `buf` is added.
pub fn write(k: &mut Kernel, index: usize, buf: u64, len: u64) -> SysResult {
    if len < EVENTFD_SIZE {
        return Err(EINVAL);
    }
    let mut b = [0u8; 8];
    k.copy_from_user(&mut b, buf).map_err(mem_err)?;
    let v = u64::from_le_bytes(b);
    loop {
        let mut e = counter(k, index)?;
        if e.add(v)? {
            changed(k, index, e, EPOLLIN);
            return Ok(EVENTFD_SIZE);
        }
        if k.files.file(index).flags & O_NONBLOCK != 0 {
            return Err(EAGAIN);
        }
        poll::block_on(
            k,
            poll::file_key(index),
            b"writes to a full eventfd that no other thread can read",
        )?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_linuxs() {
        assert_eq!(EFD_SEMAPHORE, 1);
        assert_eq!(EFD_CLOEXEC, libc::EFD_CLOEXEC as u32);
        assert_eq!(EFD_NONBLOCK, libc::EFD_NONBLOCK as u32);
    }

    #[test]
    fn a_read_takes_the_whole_count() {
        let mut e = EventFd::new(5, false);
        assert_eq!(e.add(3), Ok(true));
        assert_eq!(e.take(), Some(8));
        assert_eq!(e.take(), None, "0: the reader waits");
        assert_eq!(e.count(), 0);
    }

    #[test]
    fn a_semaphore_read_takes_one() {
        let mut e = EventFd::new(2, true);
        assert_eq!(e.take(), Some(1));
        assert_eq!(e.take(), Some(1));
        assert_eq!(e.take(), None);
    }

    #[test]
    fn the_counter_stops_below_u64_max() {
        let mut e = EventFd::new(0, false);
        assert_eq!(e.add(u64::MAX), Err(EINVAL));
        assert_eq!(e.add(EVENTFD_MAX), Ok(true));
        assert_eq!(e.ready(), EPOLLIN, "full: not writable");
        assert_eq!(e.add(1), Ok(false), "the writer waits");
        assert_eq!(e.add(0), Ok(true), "adding 0 always works");
        assert_eq!(e.take(), Some(EVENTFD_MAX));
        assert_eq!(e.ready(), EPOLLOUT);
        let mut e = EventFd::new(u32::MAX, false);
        assert_eq!(e.add(EVENTFD_MAX - u64::from(u32::MAX)), Ok(true));
        assert_eq!(e.add(1), Ok(false));
    }

    #[test]
    fn readiness_is_eventfd_polls() {
        assert_eq!(EventFd::new(0, false).ready(), EPOLLOUT);
        assert_eq!(EventFd::new(1, true).ready(), EPOLLIN | EPOLLOUT);
    }
}
