//! Readiness, and waiting for it: what each kind of descriptor is ready for (the
//! poll bits of Linux's `f_op->poll`), poll, ppoll, select and pselect6, the wait
//! loop epoll_wait shares (`epoll.rs`), and the wait queues of the firmware's own
//! objects.
//!
//! Wait queues. A thread that waits for a pipe or an eventfd sleeps on that object's
//! queue ([`object_key`]); every thread in poll, select or epoll_wait sleeps on one
//! queue for all of them, the readiness queue. Whatever changes what a descriptor is
//! ready for (a pipe or eventfd read or write, the close of a pipe end, an epoll_ctl,
//! a timerfd_settime) calls [`notify`]: it wakes the object's queue and the
//! readiness queue, and marks the edge of the epoll items watching the object. The
//! woken pollers look again and sleep again if nothing they watch is ready: with a
//! handful of threads that costs less than keeping a queue per watched object.
//!
//! Descriptors whose readiness is time (timerfds) are not woken: a poller sleeps
//! until the earliest of its timeout and their deadlines. Whether stdin has input is
//! the host's to say: a poller alone in the app waits in the host's poll, as before
//! there were threads; with other threads it asks the host every 10 ms.

use super::errno::*;
use super::signal::{self, ERESTARTNOHAND};
use super::time::{read_timespec, timespec, timeval};
use super::{epoll, io, mem_err, SysResult};
use crate::fs::{Node, MAX_FDS, O_PATH};
use crate::kernel::Kernel;
use crate::time::NS_PER_SEC;
use nacre_shared_abi::hostcall::{HostcallHeader, HostcallOp, POLL_FOREVER, POLL_STDIN_READABLE};

/// Poll and epoll event bits (`include/uapi/asm-generic/poll.h`,
/// `include/uapi/linux/eventpoll.h`: the same values).
pub const EPOLLIN: u32 = 0x001;
pub const EPOLLPRI: u32 = 0x002;
pub const EPOLLOUT: u32 = 0x004;
pub const EPOLLERR: u32 = 0x008;
pub const EPOLLHUP: u32 = 0x010;
pub const EPOLLNVAL: u32 = 0x020;
pub const EPOLLRDNORM: u32 = 0x040;
pub const EPOLLRDBAND: u32 = 0x080;
pub const EPOLLWRNORM: u32 = 0x100;
pub const EPOLLWRBAND: u32 = 0x200;
pub const EPOLLRDHUP: u32 = 0x2000;
/// What a file without its own poll is ready for: everything (`include/linux/poll.h`).
const DEFAULT_POLLMASK: u32 = EPOLLIN | EPOLLOUT | EPOLLRDNORM | EPOLLWRNORM;
/// The poll bits that make a descriptor readable, writable or exceptional for
/// select (`fs/select.c`).
const POLLIN_SET: u32 = EPOLLRDNORM | EPOLLRDBAND | EPOLLIN | EPOLLHUP | EPOLLERR;
const POLLOUT_SET: u32 = EPOLLWRBAND | EPOLLWRNORM | EPOLLOUT | EPOLLERR;
const POLLEX_SET: u32 = EPOLLPRI;

/// The kinds of object wait queue, each a range of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    /// A pipe, by its index.
    Pipe = 1,
    /// An open file (an eventfd), by its index.
    File = 2,
    /// The readiness queue.
    Readiness = 3,
    /// A socket, by the host's handle.
    Socket = 4,
}

/// The wait-queue key of object `id` of `class` (above
/// [`crate::sched::OBJECT_KEY_BASE`], 8 apart, as the scheduler asks).
pub fn object_key(class: KeyClass, id: u64) -> u64 {
    crate::sched::OBJECT_KEY_BASE + (((class as u64) << 32) | (id & 0xFFFF_FFFF)) * 8
}

/// The wait queue of the open file at `index`.
pub fn file_key(index: usize) -> u64 {
    object_key(KeyClass::File, index as u64)
}

/// The queue every poll, select and epoll_wait waiter sleeps on.
pub fn readiness_key() -> u64 {
    object_key(KeyClass::Readiness, 0)
}

/// Something a waiter may look for changed: wake the queue `key` (the object's
/// own), every poller, and, for `edge` = (`file`, `events`), mark the edge of the
/// epoll items watching the open file `file` for one of `events` (0: for any), as
/// Linux's wake-up of the file's wait queue with `events` as its key does.
pub fn notify(k: &mut Kernel, key: Option<u64>, edge: Option<(usize, u32)>) {
    if let Some(key) = key {
        crate::sched::wake_all(k, key);
    }
    if let Some((file, events)) = edge {
        epoll::mark_edge(k, file, events);
    }
    crate::sched::wake_all(k, readiness_key());
}

/// Stop an app whose only thread would wait for something no thread can do.
fn stop(k: &mut Kernel, what: &[u8]) -> ! {
    let _ = k.console_write(2, b"nacre: the app ");
    let _ = k.console_write(2, what);
    let _ = k.console_write(2, b"; stopping it\n");
    super::exit_app(k, 128 + 9)
}

/// Sleep on the object queue `key` until a wake-up, which may be spurious (the
/// caller looks again), for a call restarted after a handler with SA_RESTART:
/// ERESTARTSYS once a signal is deliverable. The only thread, with no timer that
/// could send it a signal, would sleep forever: the app is stopped with a message
/// saying that it `what`.
pub fn block_on(k: &mut Kernel, key: u64, what: &[u8]) -> Result<(), u64> {
    signal::fire_alarm(k);
    if k.sig.deliverable() {
        return Err(signal::ERESTARTSYS);
    }
    if k.sched.threads.live() == 1 && signal::alarm_deadline(k).is_none() {
        stop(k, what);
    }
    crate::sched::wait_on(k, key, u64::MAX);
    Ok(())
}

/// What the open file at `index` is ready for now (poll bits); `stdin`: whether
/// the host said stdin has input. `depth` counts nested epoll instances.
pub fn ready(k: &mut Kernel, index: usize, stdin: bool, depth: u32) -> u32 {
    let node = k.files.file(index).node;
    match node {
        Node::Console(0) if stdin => EPOLLIN | EPOLLRDNORM,
        Node::Console(0) => 0,
        // Output is always writable: a write waits in the host if it must.
        Node::Console(_) => EPOLLOUT | EPOLLWRNORM,
        // Linux `timerfd_poll`: EPOLLIN alone.
        Node::Timer(t) if t.expired_at(k.monotonic_ns()) => EPOLLIN,
        Node::Timer(_) => 0,
        Node::Pipe(end) => k.pipes.get(end.id).ready(end.write),
        Node::Event(e) => e.ready(),
        Node::Epoll if epoll::has_events(k, index, stdin, depth) => EPOLLIN | EPOLLRDNORM,
        Node::Epoll => 0,
        Node::Socket(h) => super::socket::ready(k, h),
        Node::File { .. } | Node::MemFile { .. } | Node::Dir { .. } | Node::Dev(_) => {
            DEFAULT_POLLMASK
        }
    }
}

/// What a look at descriptors found: how many are ready, and what besides a
/// wake-up could change that: the earliest deadline of a timer among them, and
/// whether stdin is watched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    pub ready: u64,
    pub deadline: Option<u64>,
    pub stdin: bool,
    /// Sockets are watched: the host can end the wait.
    pub host: bool,
}

impl Scan {
    /// Also wait for what `other` waits for.
    pub fn join(&mut self, other: Scan) {
        self.deadline = match (self.deadline, other.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.stdin |= other.stdin;
        self.host |= other.host;
    }
}

/// What could make the open file at `index`, not ready for `events` now, ready:
/// a timer's deadline, input on stdin, or the same in a nested epoll instance.
pub fn pending(k: &mut Kernel, index: usize, events: u32, depth: u32) -> Scan {
    match k.files.file(index).node {
        Node::Console(0) if events & (EPOLLIN | EPOLLRDNORM | EPOLLPRI) != 0 => Scan {
            stdin: true,
            ..Scan::default()
        },
        Node::Timer(t) if events & EPOLLIN != 0 => Scan {
            deadline: t.next_expiry(k.monotonic_ns()),
            ..Scan::default()
        },
        Node::Epoll if events & EPOLLIN != 0 => epoll::pending(k, index, depth),
        Node::Socket(h) => {
            super::socket::watch(k, h, events);
            Scan {
                host: true,
                ..Scan::default()
            }
        }
        _ => Scan::default(),
    }
}

/// Ask the host whether stdin has input, waiting up to `wait` ns for it.
pub(super) fn host_stdin(k: &mut Kernel, wait: u64) -> Result<bool, u64> {
    let req = HostcallHeader {
        op: HostcallOp::Poll as u32,
        arg: POLL_STDIN_READABLE,
        arg2: wait,
        ..Default::default()
    };
    Ok(io::hostcall_io(k, req)? & POLL_STDIN_READABLE != 0)
}

/// How often a poller or reader among other threads asks the host about stdin.
const STDIN_RECHECK_NS: u64 = 10_000_000;

/// Before a read of stdin, while other threads could run: wait until the host says
/// stdin is readable (or at its end), letting them run meanwhile, so that one thread
/// waiting for input does not stop the others (a read hostcall blocks the vCPU in the
/// host). A signal for the thread ends the wait (restarted after a handler with
/// SA_RESTART). With one thread the read hostcall itself waits.
pub fn wait_for_stdin(k: &mut Kernel) -> Result<(), u64> {
    while k.sched.threads.live() > 1 {
        if host_stdin(k, 0)? {
            return Ok(());
        }
        let until = k.monotonic_ns().saturating_add(STDIN_RECHECK_NS);
        if super::signal::wait(k, Some(until)) == super::signal::Wake::Signal {
            return Err(super::signal::ERESTARTSYS);
        }
    }
    Ok(())
}

/// The wait of poll, select and epoll_wait: `scan(k, stdin_ready, commit)` looks at
/// the descriptors (with `commit`, for the last time: it writes the results and
/// returns how many it wrote). Returns that count once something is ready or at
/// `deadline` (CLOCK_MONOTONIC; `None`: no limit), `on_signal` when a signal
/// interrupts the wait. Other threads run meanwhile. A wait nothing could end
/// stops the app with a message saying that it `what`.
pub fn wait_for(
    k: &mut Kernel,
    deadline: Option<u64>,
    on_signal: u64,
    what: &[u8],
    mut scan: impl FnMut(&mut Kernel, bool, bool) -> Result<Scan, u64>,
) -> SysResult {
    let mut stdin_ready = false;
    loop {
        let s = scan(k, stdin_ready, false)?;
        let now = k.monotonic_ns();
        let over = deadline.is_some_and(|d| now >= d);
        if s.ready > 0 || over {
            let n = scan(k, stdin_ready, true)?.ready;
            if n > 0 || over {
                return Ok(n);
            }
            continue;
        }
        if s.stdin && !stdin_ready && host_stdin(k, 0)? {
            stdin_ready = true;
            continue;
        }
        signal::fire_alarm(k);
        if k.sig.deliverable() {
            return Err(on_signal);
        }
        let wake = [deadline, s.deadline].into_iter().flatten().min();
        if s.stdin && k.sched.threads.live() == 1 {
            // Only the host, the time or the interval timer can end this wait: the
            // host's poll waits (its early returns are looked at again).
            let until = [wake, signal::alarm_deadline(k)]
                .into_iter()
                .flatten()
                .min();
            let wait = until.map_or(POLL_FOREVER, |d| d.saturating_sub(now));
            stdin_ready = host_stdin(k, wait)?;
            continue;
        }
        let wake = match (s.stdin, wake) {
            (true, w) => Some(w.unwrap_or(u64::MAX).min(now + STDIN_RECHECK_NS)),
            (false, w) => w,
        };
        if wake.is_none()
            && !s.host
            && k.sched.threads.live() == 1
            && signal::alarm_deadline(k).is_none()
        {
            stop(k, what);
        }
        crate::sched::wait_on(k, readiness_key(), wake.unwrap_or(u64::MAX));
    }
}

/// The open file a polled descriptor refers to; `None` for a closed one or an
/// O_PATH one, which poll cannot use (Linux `fdget`).
fn poll_index(k: &Kernel, fd: u64) -> Option<usize> {
    let index = k.files.index(fd).ok()?;
    (k.files.file(index).flags & O_PATH == 0).then_some(index)
}

/// poll and ppoll (`timeout_ns`: relative; `None` or negative: no limit): the
/// descriptors ready, with their `revents`. A closed descriptor is POLLNVAL; a
/// negative one is skipped; errors and hang-ups are reported whether asked for or
/// not.
pub fn poll(k: &mut Kernel, fds: u64, nfds: u64, timeout_ns: Option<i64>) -> SysResult {
    // RLIMIT_NOFILE.
    if nfds > MAX_FDS as u64 {
        return Err(EINVAL);
    }
    let now = k.monotonic_ns();
    let deadline = timeout_ns
        .filter(|t| *t >= 0)
        .map(|t| now.saturating_add(t as u64));
    poll_until(k, fds, nfds, deadline)
}

/// poll until `deadline` (CLOCK_MONOTONIC; `None`: no limit).
fn poll_until(k: &mut Kernel, fds: u64, nfds: u64, deadline: Option<u64>) -> SysResult {
    if nfds > MAX_FDS as u64 {
        return Err(EINVAL);
    }
    wait_for(
        k,
        deadline,
        ERESTARTNOHAND,
        b"polls with no limit for events no thread can cause",
        |k, stdin, commit| {
            let mut s = Scan::default();
            for i in 0..nfds {
                let (fd, events) = pollfd(k, fds, i)?;
                let revents = match u64::try_from(fd) {
                    Err(_) => 0,
                    Ok(fd) => match poll_index(k, fd) {
                        None => EPOLLNVAL,
                        Some(index) => {
                            let want = u32::from(events) | EPOLLERR | EPOLLHUP;
                            let r = ready(k, index, stdin, 0) & want;
                            if r == 0 {
                                s.join(pending(k, index, want, 0));
                            }
                            r
                        }
                    },
                };
                if commit {
                    k.copy_to_user(fds + i * 8 + 6, &(revents as u16).to_le_bytes())
                        .map_err(mem_err)?;
                }
                s.ready += u64::from(revents != 0);
            }
            Ok(s)
        },
    )
}

fn pollfd(k: &mut Kernel, fds: u64, i: u64) -> Result<(i32, u16), u64> {
    let mut p = [0u8; 8];
    k.copy_from_user(&mut p, fds + i * 8).map_err(mem_err)?;
    Ok((
        i32::from_le_bytes([p[0], p[1], p[2], p[3]]),
        u16::from_le_bytes([p[4], p[5]]),
    ))
}

/// A relative timeout's deadline, and whether the call writes the time left back
/// when it ends (a zero timeout is not written back, `poll_select_finish`).
fn deadline_after(k: &mut Kernel, ns: Option<u64>) -> (Option<u64>, bool) {
    match ns {
        None => (None, false),
        Some(ns) => (Some(k.monotonic_ns().saturating_add(ns)), ns != 0),
    }
}

/// Write the time left until `deadline` to the app's timeval or timespec at `va`
/// (`poll_select_finish`). A timeout the app cannot get back cannot be restarted
/// from: the restart becomes EINTR.
fn time_left(
    k: &mut Kernel,
    va: u64,
    deadline: Option<u64>,
    as_timeval: bool,
    r: SysResult,
) -> SysResult {
    let Some(d) = deadline else {
        return r;
    };
    let left = d.saturating_sub(k.monotonic_ns());
    let bytes = if as_timeval {
        timeval(left)
    } else {
        timespec(left)
    };
    match (k.copy_to_user(va, &bytes), r) {
        (Err(_), Err(ERESTARTNOHAND)) => Err(signal::EINTR),
        (_, r) => r,
    }
}

/// ppoll: poll with a timespec timeout (null: no limit), which gets the time left,
/// and the signal mask `sigmask` (null: the thread's) while it waits.
pub fn ppoll(
    k: &mut Kernel,
    fds: u64,
    nfds: u64,
    tsp: u64,
    sigmask: u64,
    setsize: u64,
) -> SysResult {
    let ns = if tsp == 0 {
        None
    } else {
        Some(read_timespec(k, tsp)?)
    };
    signal::set_temporary_mask(k, sigmask, setsize)?;
    let (deadline, write_back) = deadline_after(k, ns);
    let r = poll_until(k, fds, nfds, deadline);
    signal::end_temporary_mask(k, r == Err(ERESTARTNOHAND));
    time_left(k, tsp, deadline.filter(|_| write_back), false, r)
}

/// Words of a full `fd_set` (FD_SETSIZE bits).
const FD_WORDS: usize = MAX_FDS / 64;

/// select: the three sets of descriptors at `sets` (null: none) checked for being
/// readable, writable and exceptional until `deadline`; each set is replaced by the
/// descriptors ready in it; returns how many bits that leaves.
fn select_sets(k: &mut Kernel, n: i32, sets: [u64; 3], deadline: Option<u64>) -> SysResult {
    if n < 0 {
        return Err(EINVAL);
    }
    // As Linux cuts `n` to the size of its descriptor table.
    let n = (n as usize).min(MAX_FDS);
    let words = n.div_ceil(64);
    let mut wanted = [[0u64; FD_WORDS]; 3];
    for (set, &va) in wanted.iter_mut().zip(&sets) {
        if va != 0 {
            let mut bytes = [0u8; FD_WORDS * 8];
            k.copy_from_user(&mut bytes[..words * 8], va)
                .map_err(mem_err)?;
            for (w, word) in set.iter_mut().take(words).enumerate() {
                *word = u64::from_le_bytes(bytes[w * 8..w * 8 + 8].try_into().unwrap_or([0; 8]));
            }
        }
    }
    // Bits from `n` on are not looked at.
    if !n.is_multiple_of(64) {
        for set in &mut wanted {
            set[words - 1] &= (1u64 << (n % 64)) - 1;
        }
    }
    let kinds = [POLLIN_SET, POLLOUT_SET, POLLEX_SET];
    wait_for(
        k,
        deadline,
        ERESTARTNOHAND,
        b"selects with no limit for events no thread can cause",
        |k, stdin, commit| {
            let mut s = Scan::default();
            let mut found = [[0u64; FD_WORDS]; 3];
            for w in 0..words {
                let mut any = wanted[0][w] | wanted[1][w] | wanted[2][w];
                while any != 0 {
                    let bit = any & any.wrapping_neg();
                    any &= any - 1;
                    let fd = (w * 64) as u64 + u64::from(bit.trailing_zeros());
                    let index = poll_index(k, fd).ok_or(EBADF)?;
                    let r = ready(k, index, stdin, 0);
                    let mut hit = false;
                    let mut want = 0;
                    for (j, kind) in kinds.iter().enumerate() {
                        if wanted[j][w] & bit != 0 {
                            want |= kind;
                            if r & kind != 0 {
                                found[j][w] |= bit;
                                s.ready += 1;
                                hit = true;
                            }
                        }
                    }
                    if !hit {
                        s.join(pending(k, index, want, 0));
                    }
                }
            }
            if commit {
                for (set, &va) in found.iter().zip(&sets) {
                    if va != 0 {
                        let mut bytes = [0u8; FD_WORDS * 8];
                        for (w, word) in set.iter().take(words).enumerate() {
                            bytes[w * 8..w * 8 + 8].copy_from_slice(&word.to_le_bytes());
                        }
                        k.copy_to_user(va, &bytes[..words * 8]).map_err(mem_err)?;
                    }
                }
            }
            Ok(s)
        },
    )
}

/// select with a `struct timeval` timeout (null: no limit; microseconds past a
/// second carry into the seconds, as Linux takes them), which gets the time left.
pub fn select(k: &mut Kernel, n: i32, inp: u64, outp: u64, exp: u64, tvp: u64) -> SysResult {
    let ns = if tvp == 0 {
        None
    } else {
        let mut tv = [0u8; 16];
        k.copy_from_user(&mut tv, tvp).map_err(mem_err)?;
        let sec = i64::from_le_bytes(tv[..8].try_into().unwrap_or([0; 8]));
        let usec = i64::from_le_bytes(tv[8..].try_into().unwrap_or([0; 8]));
        let sec = sec.checked_add(usec / 1_000_000).ok_or(EINVAL)?;
        let nsec = usec % 1_000_000 * 1000;
        if sec < 0 || nsec < 0 {
            return Err(EINVAL);
        }
        Some(
            (sec as u64)
                .saturating_mul(NS_PER_SEC)
                .saturating_add(nsec as u64),
        )
    };
    let (deadline, write_back) = deadline_after(k, ns);
    let r = select_sets(k, n, [inp, outp, exp], deadline);
    time_left(k, tvp, deadline.filter(|_| write_back), true, r)
}

/// pselect6: select with a timespec timeout and, in `sig` (null: none), a pointer
/// to a signal mask and its size, the mask while it waits.
pub fn pselect6(k: &mut Kernel, n: i32, sets: [u64; 3], tsp: u64, sig: u64) -> SysResult {
    let ns = if tsp == 0 {
        None
    } else {
        Some(read_timespec(k, tsp)?)
    };
    let (mask, setsize) = if sig == 0 {
        (0, 0)
    } else {
        let mut b = [0u8; 16];
        k.copy_from_user(&mut b, sig).map_err(mem_err)?;
        (
            u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8])),
        )
    };
    signal::set_temporary_mask(k, mask, setsize)?;
    let (deadline, write_back) = deadline_after(k, ns);
    let r = select_sets(k, n, sets, deadline);
    signal::end_temporary_mask(k, r == Err(ERESTARTNOHAND));
    time_left(k, tsp, deadline.filter(|_| write_back), false, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bits_are_linuxs() {
        for (ours, theirs) in [
            (EPOLLIN, libc::EPOLLIN),
            (EPOLLPRI, libc::EPOLLPRI),
            (EPOLLOUT, libc::EPOLLOUT),
            (EPOLLERR, libc::EPOLLERR),
            (EPOLLHUP, libc::EPOLLHUP),
            (EPOLLRDNORM, libc::EPOLLRDNORM),
            (EPOLLRDBAND, libc::EPOLLRDBAND),
            (EPOLLWRNORM, libc::EPOLLWRNORM),
            (EPOLLWRBAND, libc::EPOLLWRBAND),
            (EPOLLRDHUP, libc::EPOLLRDHUP),
        ] {
            assert_eq!(ours, theirs as u32);
        }
        assert_eq!(EPOLLNVAL, libc::POLLNVAL as u32);
    }

    #[test]
    fn object_keys_are_apart_and_above_the_base() {
        let keys = [
            object_key(KeyClass::Pipe, 0),
            object_key(KeyClass::Pipe, 1),
            file_key(0),
            file_key(255),
            readiness_key(),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(*a >= crate::sched::OBJECT_KEY_BASE && a % 8 == 0);
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_scan_waits_for_the_earliest_of_what_it_joins() {
        let mut s = Scan::default();
        s.join(Scan {
            deadline: Some(50),
            ..Scan::default()
        });
        s.join(Scan {
            deadline: Some(20),
            stdin: true,
            ..Scan::default()
        });
        s.join(Scan::default());
        assert_eq!((s.deadline, s.stdin), (Some(20), true));
    }
}
