//! epoll (epoll_create, epoll_create1, epoll_ctl, epoll_wait, epoll_pwait,
//! epoll_pwait2), as Linux's `fs/eventpoll.c` has it.
//!
//! An epoll instance is an open file ([`Node::Epoll`]) named by its index among the
//! open files; its interest list is the items of one table for every instance
//! ([`Interests`]), each keyed like Linux's by (instance, descriptor number, open
//! file). An item goes away with `EPOLL_CTL_DEL` or when its open file is released
//! (its last descriptor closed: closing one of two descriptors of the same open
//! file leaves the item, as on Linux).
//!
//! Nothing is queued when a file becomes ready: a wait looks at every item of the
//! instance ([`super::poll::ready`]) and sleeps on the readiness queue when none is
//! ready, until a change wakes it ([`super::poll::notify`]), its timeout, the
//! earliest deadline of a timerfd it watches, or a signal (EINTR). Level-triggered
//! items are reported whenever ready. An edge-triggered item (EPOLLET) is reported
//! only after an event of its file since its last report: [`notify`]'s wake-up
//! (a pipe or eventfd written or read, a pipe end closed; [`mark_edge`]), a timerfd
//! firing ([`crate::syscall::timerfd::Timer::fires`]), or the item being added or
//! modified; an EPOLLONESHOT item is disabled
//! once reported, until EPOLL_CTL_MOD. An instance is readable (for poll, select or
//! another instance, nested at most [`EP_MAX_NESTS`] deep) when a wait would report
//! something. When a wait fills the caller's array, the list is rotated past the
//! last item reported, so that the others come first next time.
//!
//! [`notify`]: super::poll::notify

use super::errno::*;
use super::poll::{self, Scan, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT};
use super::signal::{self, EINTR};
use super::time::read_timespec;
use super::{mem_err, SysResult};
use crate::fs::{Node, Special, O_CLOEXEC, O_PATH, O_RDWR};
use crate::kernel::Kernel;
use nacre_shared_abi::layout::USER_VA_END;

/// epoll_ctl operations (`include/uapi/linux/eventpoll.h`).
pub const EPOLL_CTL_ADD: u32 = 1;
pub const EPOLL_CTL_DEL: u32 = 2;
pub const EPOLL_CTL_MOD: u32 = 3;
/// epoll_create1's flag (`include/uapi/linux/eventpoll.h`: `O_CLOEXEC`).
pub const EPOLL_CLOEXEC: u32 = O_CLOEXEC;
/// Item flags (`include/uapi/linux/eventpoll.h`).
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
pub const EPOLLWAKEUP: u32 = 1 << 29;
pub const EPOLLONESHOT: u32 = 1 << 30;
pub const EPOLLET: u32 = 1 << 31;
/// The flags of an item that are not events (`fs/eventpoll.c`).
const EP_PRIVATE_BITS: u32 = EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE;
/// What an EPOLLEXCLUSIVE item may ask for (`fs/eventpoll.c`).
const EPOLLEXCLUSIVE_OK_BITS: u32 =
    EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE;
/// How deep instances may watch instances (`fs/eventpoll.c`).
pub const EP_MAX_NESTS: u32 = 4;
/// `struct epoll_event`: `events` and `data`, packed on x86-64 (12 bytes).
pub const EVENT_SIZE: u64 = 12;
/// Most events one wait may ask for (`fs/eventpoll.c`: INT_MAX / the event size).
const EP_MAX_EVENTS: u64 = i32::MAX as u64 / EVENT_SIZE;
/// Most items of every instance together.
pub const MAX_WATCHES: usize = 512;

/// One item of an interest list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// The instance's open-file index.
    pub epoll: u16,
    /// The watched open file's index and the descriptor it was added with.
    pub file: u16,
    pub fd: i32,
    /// The events asked for (with EPOLLERR and EPOLLHUP, which are always) and the
    /// item's flags.
    pub events: u32,
    /// What a wait reports with the events, as the app gave it.
    pub data: u64,
    /// Whether an event of the file came since the item was last reported
    /// (edge-triggered items are reported only then).
    pub edge: bool,
    /// How many times a watched timerfd had fired when last looked at (each new
    /// fire is an event).
    pub seen: u64,
}

const NO_INTEREST: Interest = Interest {
    epoll: 0,
    file: 0,
    fd: 0,
    events: 0,
    data: 0,
    edge: false,
    seen: 0,
};

impl Interest {
    /// An item as EPOLL_CTL_ADD makes it: EPOLLERR and EPOLLHUP added, and an
    /// event pending, so that a file ready now is reported once even
    /// edge-triggered.
    pub fn new(epoll: u16, file: u16, fd: i32, events: u32, data: u64) -> Self {
        Self {
            epoll,
            file,
            fd,
            events: events | EPOLLERR | EPOLLHUP,
            data,
            edge: true,
            seen: 0,
        }
    }

    /// Whether a wake-up of its file for `events` (0: for anything) is an event
    /// of this item: it asks for one of them and is not disabled
    /// (`ep_poll_callback`).
    pub fn wakes_for(&self, events: u32) -> bool {
        let asked = self.events & !EP_PRIVATE_BITS;
        asked != 0 && (events == 0 || asked & events != 0)
    }

    /// EPOLL_CTL_MOD: new events and data, and an event pending, as for a new item.
    pub fn modify(&mut self, events: u32, data: u64) {
        self.events = events | EPOLLERR | EPOLLHUP;
        self.data = data;
        self.edge = true;
    }

    /// What a wait reports for this item when its file is ready for `ready` (poll
    /// bits): the events, or `None`. With `commit` the report is made: an
    /// edge-triggered item's event is used up (also when the file turned out not
    /// ready, as Linux drops it from the ready list), a one-shot item is disabled.
    pub fn report(&mut self, ready: u32, commit: bool) -> Option<u32> {
        let edge_triggered = self.events & EPOLLET != 0;
        if edge_triggered && !self.edge {
            return None;
        }
        let events = ready & self.events & !EP_PRIVATE_BITS;
        if commit && edge_triggered {
            self.edge = false;
        }
        if events == 0 {
            return None;
        }
        if commit && self.events & EPOLLONESHOT != 0 {
            self.events &= EP_PRIVATE_BITS;
        }
        Some(events)
    }
}

/// The items of every instance, in one array in the order they were added (then
/// rotated by waits), so that every operation costs time in proportion to the
/// items there are, not to `N`.
#[derive(Debug)]
pub struct Interests<const N: usize> {
    items: [Interest; N],
    len: usize,
}

/// The kernel's table.
pub type InterestList = Interests<MAX_WATCHES>;

impl<const N: usize> Default for Interests<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Interests<N> {
    /// No items.
    pub const fn new() -> Self {
        Self {
            items: [NO_INTEREST; N],
            len: 0,
        }
    }

    /// Items of every instance.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `i` (below [`Interests::len`]).
    pub fn get(&self, i: usize) -> Interest {
        self.items[i]
    }

    /// Replace the item at `i`.
    pub fn set(&mut self, i: usize, item: Interest) {
        self.items[i] = item;
    }

    /// Where instance `epoll`'s item for descriptor `fd` of open file `file` is.
    pub fn find(&self, epoll: u16, fd: i32, file: u16) -> Option<usize> {
        self.items[..self.len]
            .iter()
            .position(|it| it.epoll == epoll && it.fd == fd && it.file == file)
    }

    /// EPOLL_CTL_ADD: EEXIST for an item already there, ENOSPC when the table is
    /// full (Linux's `max_user_watches`).
    pub fn add(&mut self, item: Interest) -> Result<(), u64> {
        if self.find(item.epoll, item.fd, item.file).is_some() {
            return Err(EEXIST);
        }
        if self.len == N {
            return Err(ENOSPC);
        }
        self.items[self.len] = item;
        self.len += 1;
        Ok(())
    }

    /// EPOLL_CTL_DEL: ENOENT for an item that is not there.
    pub fn remove(&mut self, epoll: u16, fd: i32, file: u16) -> Result<(), u64> {
        let i = self.find(epoll, fd, file).ok_or(ENOENT)?;
        self.items.copy_within(i + 1..self.len, i);
        self.len -= 1;
        Ok(())
    }

    /// Open file `file` was released: the items that watch it go, and, if it was an
    /// instance, its own.
    pub fn forget_file(&mut self, file: u16) {
        let mut kept = 0;
        for i in 0..self.len {
            let it = self.items[i];
            if it.file != file && it.epoll != file {
                self.items[kept] = it;
                kept += 1;
            }
        }
        self.len = kept;
    }

    /// The next wait of an instance whose last report was the item at `i` starts
    /// after it: the list is rotated (the order of every instance's items stays
    /// the same, cyclically).
    pub fn rotate_after(&mut self, i: usize) {
        self.items[..self.len].rotate_left(i + 1);
    }
}

/// Whether epoll can watch `node` (Linux `file_can_poll`): not the tree's files and
/// directories, nor devices without a poll.
fn pollable(node: Node) -> bool {
    !matches!(
        node,
        Node::File { .. }
            | Node::MemFile { .. }
            | Node::Dir { .. }
            | Node::Dev(
                Special::Null
                    | Special::Zero
                    | Special::Maps
                    | Special::Text(_)
                    | Special::Guest(_)
            )
    )
}

pub fn epoll_create1(k: &mut Kernel, flags: u32) -> SysResult {
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    k.files.open(Node::Epoll, O_RDWR | flags)
}

/// epoll_create: `size` must be positive and is otherwise unused.
pub fn epoll_create(k: &mut Kernel, size: i32) -> SysResult {
    if size <= 0 {
        return Err(EINVAL);
    }
    epoll_create1(k, 0)
}

/// The open file behind `fd` for epoll (an O_PATH descriptor does not count:
/// EBADF).
fn file_index(k: &Kernel, fd: u64) -> Result<usize, u64> {
    let index = k.files.index(fd)?;
    if k.files.file(index).flags & O_PATH != 0 {
        return Err(EBADF);
    }
    Ok(index)
}

fn is_epoll(k: &Kernel, index: usize) -> bool {
    k.files.file(index).node == Node::Epoll
}

/// Whether adding instance `target` to instance `epoll` would make a loop or nest
/// instances more than [`EP_MAX_NESTS`] deep (`ep_loop_check`).
fn would_loop(k: &Kernel, epoll: usize, target: usize, depth: u32) -> bool {
    if depth > EP_MAX_NESTS {
        return true;
    }
    (0..k.epoll.len()).any(|i| {
        let it = k.epoll.get(i);
        let file = usize::from(it.file);
        usize::from(it.epoll) == target
            && is_epoll(k, file)
            && (file == epoll || would_loop(k, epoll, file, depth + 1))
    })
}

pub fn epoll_ctl(k: &mut Kernel, epfd: u64, op: u32, fd: u64, event: u64) -> SysResult {
    let (events, data) = if op != EPOLL_CTL_DEL {
        let mut e = [0u8; EVENT_SIZE as usize];
        k.copy_from_user(&mut e, event).map_err(mem_err)?;
        (
            u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            u64::from_le_bytes(e[4..12].try_into().unwrap_or([0; 8])),
        )
    } else {
        (0, 0)
    };
    let ep = file_index(k, epfd)?;
    let target = file_index(k, fd)?;
    if !pollable(k.files.file(target).node) {
        return Err(EPERM);
    }
    if ep == target || !is_epoll(k, ep) {
        return Err(EINVAL);
    }
    if op != EPOLL_CTL_DEL
        && events & EPOLLEXCLUSIVE != 0
        && (op == EPOLL_CTL_MOD
            || (op == EPOLL_CTL_ADD
                && (is_epoll(k, target) || events & !EPOLLEXCLUSIVE_OK_BITS != 0)))
    {
        return Err(EINVAL);
    }
    let (epoll, file, fd) = (ep as u16, target as u16, fd as i32);
    match op {
        EPOLL_CTL_ADD => {
            if is_epoll(k, target) && would_loop(k, ep, target, 1) {
                return Err(ELOOP);
            }
            let mut item = Interest::new(epoll, file, fd, events, data);
            if let Node::Timer(t) = k.files.file(target).node {
                item.seen = t.fires(k.monotonic_ns());
            }
            k.epoll.add(item)?;
        }
        EPOLL_CTL_MOD => {
            let i = k.epoll.find(epoll, fd, file).ok_or(ENOENT)?;
            let mut item = k.epoll.get(i);
            if item.events & EPOLLEXCLUSIVE != 0 {
                return Err(EINVAL);
            }
            item.modify(events, data);
            k.epoll.set(i, item);
        }
        EPOLL_CTL_DEL => {
            k.epoll.remove(epoll, fd, file)?;
            return Ok(0);
        }
        _ => return Err(EINVAL),
    }
    // A waiter on this instance (or on one that watches it) looks again.
    poll::notify(k, None, Some((ep, EPOLLIN)));
    Ok(0)
}

/// Look at the items of instance `ep` (`stdin`: whether the host said stdin has
/// input; `depth`: how deep in other instances this one is): how many are ready, at
/// most `max`, and else what could make them ready. With `out`, the events are
/// written there and the reports made ([`Interest::report`]).
fn scan(
    k: &mut Kernel,
    ep: usize,
    stdin: bool,
    depth: u32,
    out: Option<u64>,
    max: u64,
) -> Result<Scan, u64> {
    let mut s = Scan::default();
    if depth > EP_MAX_NESTS {
        return Ok(s);
    }
    let now = k.monotonic_ns();
    let mut last = None;
    for i in 0..k.epoll.len() {
        let mut it = k.epoll.get(i);
        if usize::from(it.epoll) != ep {
            continue;
        }
        let file = usize::from(it.file);
        let ready = poll::ready(k, file, stdin, depth);
        if let Node::Timer(t) = k.files.file(file).node {
            let fired = t.fires(now);
            if fired != it.seen {
                it.seen = fired;
                it.edge = true;
            }
        }
        match it.report(ready, out.is_some()) {
            Some(events) => {
                if let Some(va) = out {
                    let mut e = [0u8; EVENT_SIZE as usize];
                    e[..4].copy_from_slice(&events.to_le_bytes());
                    e[4..].copy_from_slice(&it.data.to_le_bytes());
                    if let Err(err) = k.copy_to_user(va + s.ready * EVENT_SIZE, &e) {
                        // The item stays as it was, to be reported next time.
                        return if s.ready > 0 {
                            Ok(s)
                        } else {
                            Err(mem_err(err))
                        };
                    }
                    k.epoll.set(i, it);
                }
                s.ready += 1;
                last = Some(i);
                if s.ready == max {
                    break;
                }
            }
            None => {
                if out.is_some() {
                    k.epoll.set(i, it);
                }
                s.join(poll::pending(k, file, it.events, depth));
            }
        }
    }
    if out.is_some() && s.ready == max {
        if let Some(last) = last {
            k.epoll.rotate_after(last);
        }
    }
    Ok(s)
}

/// Whether a wait on instance `ep` would report something now (it is readable).
pub fn has_events(k: &mut Kernel, ep: usize, stdin: bool, depth: u32) -> bool {
    scan(k, ep, stdin, depth + 1, None, 1).is_ok_and(|s| s.ready > 0)
}

/// What could make instance `ep`, with nothing to report now, readable.
pub fn pending(k: &mut Kernel, ep: usize, depth: u32) -> Scan {
    scan(k, ep, false, depth + 1, None, u64::MAX).unwrap_or_default()
}

/// Open file `file` had an event for `events` (0: for anything; see
/// [`poll::notify`]): the edge-triggered items that watch it for one of them may
/// report it (`ep_poll_callback`), and the instances that watch their instances
/// have an EPOLLIN event too.
pub fn mark_edge(k: &mut Kernel, file: usize, events: u32) {
    mark_edge_at(k, file, events, 0);
}

fn mark_edge_at(k: &mut Kernel, file: usize, events: u32, depth: u32) {
    if depth > EP_MAX_NESTS {
        return;
    }
    for i in 0..k.epoll.len() {
        let mut it = k.epoll.get(i);
        if usize::from(it.file) == file && it.wakes_for(events) {
            it.edge = true;
            k.epoll.set(i, it);
            mark_edge_at(k, usize::from(it.epoll), EPOLLIN, depth + 1);
        }
    }
}

/// Open file `index` was released: its items, and the items of every instance
/// that watched it, go.
pub fn forget_file(k: &mut Kernel, index: usize) {
    k.epoll.forget_file(index as u16);
}

/// epoll_wait's wait until `deadline` (CLOCK_MONOTONIC; `None`: no limit).
fn wait(
    k: &mut Kernel,
    epfd: u64,
    events: u64,
    maxevents: i32,
    deadline: Option<u64>,
) -> SysResult {
    let max = u64::try_from(maxevents).map_err(|_| EINVAL)?;
    if max == 0 || max > EP_MAX_EVENTS {
        return Err(EINVAL);
    }
    // `access_ok`: the array must lie in the app's half.
    if events
        .checked_add(max * EVENT_SIZE)
        .is_none_or(|end| end > USER_VA_END)
    {
        return Err(EFAULT);
    }
    let ep = file_index(k, epfd)?;
    if !is_epoll(k, ep) {
        return Err(EINVAL);
    }
    // Held while waiting: another thread's close does not pull it away.
    let ep = k.files.hold(epfd)?;
    let r = poll::wait_for(
        k,
        deadline,
        EINTR,
        b"waits in epoll_wait with no limit for events no thread can cause",
        |k, stdin, commit| scan(k, ep, stdin, 0, commit.then_some(events), max),
    );
    let released = k.files.unhold(ep);
    super::fs::let_go(k, released);
    r
}

/// A timeout in milliseconds (negative: no limit) as a deadline.
fn ms_deadline(k: &mut Kernel, timeout: i32) -> Option<u64> {
    let ms = u64::try_from(timeout).ok()?;
    Some(k.monotonic_ns().saturating_add(ms * 1_000_000))
}

pub fn epoll_wait(
    k: &mut Kernel,
    epfd: u64,
    events: u64,
    maxevents: i32,
    timeout: i32,
) -> SysResult {
    let deadline = ms_deadline(k, timeout);
    wait(k, epfd, events, maxevents, deadline)
}

/// epoll_pwait: epoll_wait with the signal mask `sigmask` (null: the thread's)
/// while it waits; interrupted (EINTR), the mask stays for the handler.
pub fn epoll_pwait(k: &mut Kernel, a: [u64; 6]) -> SysResult {
    let (epfd, events, maxevents, timeout) = (a[0], a[1], a[2] as i32, a[3] as i32);
    signal::set_temporary_mask(k, a[4], a[5])?;
    let deadline = ms_deadline(k, timeout);
    let r = wait(k, epfd, events, maxevents, deadline);
    signal::end_temporary_mask(k, r == Err(EINTR));
    r
}

/// epoll_pwait2: epoll_pwait with a timespec timeout (null: no limit).
pub fn epoll_pwait2(k: &mut Kernel, a: [u64; 6]) -> SysResult {
    let (epfd, events, maxevents, tsp) = (a[0], a[1], a[2] as i32, a[3]);
    let ns = if tsp == 0 {
        None
    } else {
        Some(read_timespec(k, tsp)?)
    };
    signal::set_temporary_mask(k, a[4], a[5])?;
    let deadline = ns.map(|ns| k.monotonic_ns().saturating_add(ns));
    let r = wait(k, epfd, events, maxevents, deadline);
    signal::end_temporary_mask(k, r == Err(EINTR));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::poll::EPOLLRDNORM;

    #[test]
    fn the_constants_are_linuxs() {
        assert_eq!(
            (EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD),
            (
                libc::EPOLL_CTL_ADD as u32,
                libc::EPOLL_CTL_DEL as u32,
                libc::EPOLL_CTL_MOD as u32
            )
        );
        assert_eq!(EPOLLET, libc::EPOLLET as u32);
        assert_eq!(EPOLLONESHOT, libc::EPOLLONESHOT as u32);
        assert_eq!(EPOLLWAKEUP, libc::EPOLLWAKEUP as u32);
        assert_eq!(EPOLLEXCLUSIVE, libc::EPOLLEXCLUSIVE as u32);
        assert_eq!(EPOLL_CLOEXEC, libc::EPOLL_CLOEXEC as u32);
        assert_eq!(EVENT_SIZE, core::mem::size_of::<libc::epoll_event>() as u64);
    }

    fn item(events: u32) -> Interest {
        Interest::new(1, 7, 5, events, 0xDA7A)
    }

    #[test]
    fn level_triggered_items_report_while_ready() {
        let mut it = item(EPOLLIN);
        assert_eq!(it.events, EPOLLIN | EPOLLERR | EPOLLHUP, "errors always");
        assert_eq!(it.report(0, true), None);
        for _ in 0..3 {
            assert_eq!(it.report(EPOLLIN | EPOLLRDNORM, true), Some(EPOLLIN));
        }
        assert_eq!(it.report(EPOLLOUT, true), None, "not asked for");
        assert_eq!(it.report(EPOLLHUP, true), Some(EPOLLHUP));
    }

    #[test]
    fn edge_triggered_items_report_once_per_event() {
        let mut it = item(EPOLLIN | EPOLLET);
        assert_eq!(
            it.report(EPOLLIN, false),
            Some(EPOLLIN),
            "a look changes nothing"
        );
        assert_eq!(it.report(EPOLLIN, true), Some(EPOLLIN), "ready when added");
        assert_eq!(it.report(EPOLLIN, true), None, "no new event");
        it.edge = true;
        assert_eq!(it.report(EPOLLIN, true), Some(EPOLLIN));
        // An event whose file is not ready when looked at is used up.
        it.edge = true;
        assert_eq!(it.report(0, true), None);
        assert_eq!(it.report(EPOLLIN, true), None);
        it.modify(EPOLLIN | EPOLLOUT | EPOLLET, 9);
        assert_eq!(
            it.report(EPOLLIN | EPOLLOUT, true),
            Some(EPOLLIN | EPOLLOUT)
        );
        assert_eq!(it.data, 9);
    }

    #[test]
    fn only_a_wake_up_for_what_an_item_asks_is_its_event() {
        let it = item(EPOLLIN | EPOLLET);
        assert!(it.wakes_for(EPOLLIN | EPOLLRDNORM));
        assert!(!it.wakes_for(EPOLLOUT), "a reader's wake-up of the writers");
        assert!(it.wakes_for(0), "a wake-up for anything (a close)");
        assert!(it.wakes_for(EPOLLHUP), "hang-ups are always asked for");
        let mut disabled = item(EPOLLIN | EPOLLONESHOT);
        disabled.report(EPOLLIN, true);
        assert!(!disabled.wakes_for(0));
    }

    #[test]
    fn one_shot_items_are_disabled_until_modified() {
        let mut it = item(EPOLLIN | EPOLLONESHOT);
        assert_eq!(it.report(EPOLLIN, true), Some(EPOLLIN));
        assert_eq!(it.events, EPOLLONESHOT, "only the flag is left");
        it.edge = true;
        assert_eq!(it.report(EPOLLIN | EPOLLHUP, true), None);
        it.modify(EPOLLIN | EPOLLONESHOT, 0);
        assert_eq!(it.report(EPOLLIN, true), Some(EPOLLIN));
    }

    #[test]
    fn items_are_keyed_by_instance_descriptor_and_file() {
        let mut list = Interests::<4>::new();
        assert!(list.is_empty());
        list.add(Interest::new(1, 7, 5, EPOLLIN, 0)).expect("added");
        assert_eq!(list.add(Interest::new(1, 7, 5, EPOLLOUT, 0)), Err(EEXIST));
        // The same file under another descriptor (a dup), or in another instance.
        list.add(Interest::new(1, 7, 6, EPOLLIN, 0)).expect("added");
        list.add(Interest::new(2, 7, 5, EPOLLIN, 0)).expect("added");
        list.add(Interest::new(2, 8, 9, EPOLLIN, 0)).expect("added");
        assert_eq!(list.add(Interest::new(3, 8, 9, EPOLLIN, 0)), Err(ENOSPC));
        assert_eq!(list.find(2, 9, 8), Some(3));
        assert_eq!(list.remove(1, 5, 8), Err(ENOENT), "another file");
        list.remove(1, 5, 7).expect("removed");
        assert_eq!(list.len(), 3);
        assert_eq!(list.find(2, 9, 8), Some(2), "order kept");
    }

    #[test]
    fn a_released_file_leaves_every_list_and_takes_its_own() {
        let mut list = Interests::<8>::new();
        for (epoll, file) in [(1, 7), (2, 7), (1, 8), (7, 9), (2, 1)] {
            list.add(Interest::new(epoll, file, file.into(), EPOLLIN, 0))
                .expect("added");
        }
        list.forget_file(7);
        let left: std::vec::Vec<_> = (0..list.len())
            .map(|i| (list.get(i).epoll, list.get(i).file))
            .collect();
        assert_eq!(left, [(1, 8), (2, 1)]);
        list.forget_file(1);
        assert_eq!(list.len(), 0, "instance 1 and the item watching it");
    }

    #[test]
    fn a_full_wait_rotates_past_its_last_report() {
        let mut list = Interests::<8>::new();
        for (epoll, file) in [(1, 10), (2, 20), (1, 11), (1, 12)] {
            list.add(Interest::new(epoll, file, file.into(), EPOLLIN, 0))
                .expect("added");
        }
        list.rotate_after(2);
        let order: std::vec::Vec<_> = (0..list.len()).map(|i| list.get(i).file).collect();
        assert_eq!(order, [12, 10, 20, 11]);
    }

    #[test]
    fn only_files_with_a_poll_can_be_watched() {
        assert!(pollable(Node::Console(1)));
        assert!(pollable(Node::Epoll));
        assert!(!pollable(Node::Dir { inode: 1 }));
        assert!(!pollable(Node::Dev(Special::Null)));
        assert!(!pollable(Node::Dev(Special::Maps)));
    }
}
