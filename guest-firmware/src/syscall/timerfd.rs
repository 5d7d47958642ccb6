//! timerfd: timers that are descriptors (`timerfd_create`, `timerfd_settime`,
//! `timerfd_gettime`), read for their expiration count and polled for it, as Linux's
//! `fs/timerfd.c` has them.
//!
//! A timer is state in its open file ([`Node::Timer`]): nothing fires. Its expirations
//! are counted when someone looks ([`Timer::settle`]: a read, poll, gettime or
//! settime), from the clock and the deadline, exactly as Linux counts them when it
//! forwards an expired interval timer (`hrtimer_forward_now`). A blocking read of a
//! timer that has not expired sleeps until its deadline as nanosleep sleeps
//! (`Kernel::sleep_until`). Deadlines are kept on CLOCK_MONOTONIC: the firmware's
//! realtime and boot-time clocks are the monotonic one plus a constant (`time.rs`;
//! the clock is never set and never suspended), so a deadline on any of them is a
//! deadline on that one.

use super::errno::*;
use super::time::{parse_timespec, timespec, CLOCK_BOOTTIME, CLOCK_BOOTTIME_ALARM};
use super::time::{CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_REALTIME_ALARM};
use super::{mem_err, SysResult};
use crate::fs::{Node, O_CLOEXEC, O_NONBLOCK, O_RDWR};
use crate::kernel::Kernel;

/// `timerfd_create` flags (Linux `include/uapi/linux/timerfd.h`: `TFD_CLOEXEC` is
/// `O_CLOEXEC`, `TFD_NONBLOCK` is `O_NONBLOCK`).
pub const TFD_CLOEXEC: u32 = O_CLOEXEC;
pub const TFD_NONBLOCK: u32 = O_NONBLOCK;
/// `timerfd_settime` flags (Linux `include/uapi/linux/timerfd.h`).
pub const TFD_TIMER_ABSTIME: u32 = 1 << 0;
pub const TFD_TIMER_CANCEL_ON_SET: u32 = 1 << 1;

/// What a read of a timerfd returns: the expiration count, a `u64`.
pub const TICKS_SIZE: u64 = 8;

/// One timer: its clock, its deadline on CLOCK_MONOTONIC when armed, its interval
/// (0: one-shot), the expirations counted and not yet read, and how many times it
/// fired (what tells an edge-triggered epoll item that a new event came).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub clock: i32,
    armed: bool,
    deadline: u64,
    interval: u64,
    ticks: u64,
    fired: u64,
}

impl Timer {
    /// A disarmed timer on `clock`.
    pub const fn new(clock: i32) -> Self {
        Self {
            clock,
            armed: false,
            deadline: 0,
            interval: 0,
            ticks: 0,
            fired: 0,
        }
    }

    /// Count the expirations up to `now`: an expired one-shot timer counts one and
    /// disarms; an expired interval timer counts every interval that has begun since
    /// its deadline and moves the deadline past `now` (Linux `hrtimer_forward_now`).
    pub fn settle(&mut self, now: u64) {
        let periods = self.due(now);
        if periods == 0 {
            return;
        }
        if self.ticks == 0 {
            self.fired = self.fired.saturating_add(1);
        }
        self.ticks = self.ticks.saturating_add(periods);
        if self.interval == 0 {
            self.armed = false;
        } else {
            self.deadline = self
                .deadline
                .saturating_add(periods.saturating_mul(self.interval));
        }
    }

    /// The expirations up to `now` not counted yet.
    fn due(&self, now: u64) -> u64 {
        if !self.armed || now < self.deadline {
            return 0;
        }
        // A one-shot timer (interval 0) expires once.
        (now - self.deadline)
            .checked_div(self.interval)
            .map_or(1, |periods| periods + 1)
    }

    /// How many times the timer fired up to `now`. Linux's timer fires (and wakes
    /// its pollers) at the first expiration after it was set or read, and is
    /// started again only by the read (`timerfd_read`): the expirations in between
    /// are counted without firing.
    pub fn fires(&self, now: u64) -> u64 {
        let firing = self.ticks == 0 && self.due(now) > 0;
        self.fired.saturating_add(u64::from(firing))
    }

    /// Whether a read at `now` would return at once (POLLIN).
    pub fn expired_at(&self, now: u64) -> bool {
        self.ticks > 0 || (self.armed && now >= self.deadline)
    }

    /// The deadline (CLOCK_MONOTONIC), when armed.
    pub fn deadline(&self) -> Option<u64> {
        self.armed.then_some(self.deadline)
    }

    /// When it expires next after `now`, if it will.
    pub fn next_expiry(&self, now: u64) -> Option<u64> {
        let mut t = *self;
        t.settle(now);
        t.deadline()
    }

    /// `struct itimerspec` at `now` (after [`Timer::settle`]): the time left until the
    /// next expiration (0 when disarmed) and the interval, in nanoseconds.
    pub fn current(&self, now: u64) -> (u64, u64) {
        let left = if self.armed {
            self.deadline.saturating_sub(now)
        } else {
            0
        };
        (left, self.interval)
    }

    /// Arm the timer to expire at `deadline` and every `interval` after (disarm it for
    /// `None`), forgetting the expirations not read; returns what it was set to
    /// before, as [`Timer::current`] at `now`.
    pub fn set(&mut self, now: u64, deadline: Option<u64>, interval: u64) -> (u64, u64) {
        self.settle(now);
        let old = self.current(now);
        *self = Self {
            clock: self.clock,
            armed: deadline.is_some(),
            deadline: deadline.unwrap_or(0),
            interval: if deadline.is_some() { interval } else { 0 },
            ticks: 0,
            fired: self.fired,
        };
        old
    }

    /// The expirations up to `now`, which a read consumes.
    pub fn take_ticks(&mut self, now: u64) -> u64 {
        self.settle(now);
        core::mem::take(&mut self.ticks)
    }
}

/// Whether a timerfd can be created on `clock` (Linux `fs/timerfd.c`,
/// `timerfd_create`: the monotonic, realtime and boot-time clocks and their alarm
/// variants).
fn timer_clock(clock: i32) -> bool {
    matches!(
        clock,
        CLOCK_MONOTONIC
            | CLOCK_REALTIME
            | CLOCK_REALTIME_ALARM
            | CLOCK_BOOTTIME
            | CLOCK_BOOTTIME_ALARM
    )
}

/// Whether `clock` counts wall-clock time (an absolute deadline on it is converted).
fn realtime_clock(clock: i32) -> bool {
    matches!(clock, CLOCK_REALTIME | CLOCK_REALTIME_ALARM)
}

pub fn timerfd_create(k: &mut Kernel, clock: i32, flags: u32) -> SysResult {
    if flags & !(TFD_CLOEXEC | TFD_NONBLOCK) != 0 || !timer_clock(clock) {
        return Err(EINVAL);
    }
    k.files.open(Node::Timer(Timer::new(clock)), O_RDWR | flags)
}

/// The timer behind descriptor `fd`: EBADF for no descriptor, EINVAL for one that is
/// not a timerfd (Linux `timerfd_fget`).
fn timer_of(k: &Kernel, fd: u64) -> Result<Timer, u64> {
    match k.files.get(fd)?.node {
        Node::Timer(t) => Ok(t),
        _ => Err(EINVAL),
    }
}

fn store(k: &mut Kernel, fd: u64, t: Timer) -> Result<(), u64> {
    k.files.get_mut(fd)?.node = Node::Timer(t);
    Ok(())
}

/// `struct itimerspec` (`it_interval`, `it_value`; Linux
/// `include/uapi/linux/time_types.h`, `struct __kernel_itimerspec`).
fn itimerspec(value: u64, interval: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&timespec(interval));
    b[16..].copy_from_slice(&timespec(value));
    b
}

/// A `struct itimerspec` as (value, interval) nanoseconds; EINVAL when either
/// timespec is malformed (Linux `itimerspec64_valid`).
pub fn parse_itimerspec(b: &[u8; 32]) -> Result<(u64, u64), u64> {
    let mut interval = [0u8; 16];
    let mut value = [0u8; 16];
    interval.copy_from_slice(&b[..16]);
    value.copy_from_slice(&b[16..]);
    Ok((parse_timespec(&value)?, parse_timespec(&interval)?))
}

pub fn timerfd_settime(k: &mut Kernel, fd: u64, flags: u32, new: u64, old: u64) -> SysResult {
    let mut spec = [0u8; 32];
    k.copy_from_user(&mut spec, new).map_err(mem_err)?;
    if flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(EINVAL);
    }
    let (value, interval) = parse_itimerspec(&spec)?;
    let mut t = timer_of(k, fd)?;
    let now = k.monotonic_ns();
    // A zero value disarms, absolute or not. TFD_TIMER_CANCEL_ON_SET is accepted: the
    // clock is never set, so the timer is never cancelled.
    let deadline = if value == 0 {
        None
    } else if flags & TFD_TIMER_ABSTIME == 0 {
        Some(now.saturating_add(value))
    } else if realtime_clock(t.clock) {
        Some(k.realtime_to_monotonic(value))
    } else {
        Some(value)
    };
    let (old_value, old_interval) = t.set(now, deadline, interval);
    store(k, fd, t)?;
    // Pollers waiting for its old deadline look again.
    super::poll::notify(k, None, None);
    if old != 0 {
        k.copy_to_user(old, &itimerspec(old_value, old_interval))
            .map_err(mem_err)?;
    }
    Ok(0)
}

pub fn timerfd_gettime(k: &mut Kernel, fd: u64, cur: u64) -> SysResult {
    let mut t = timer_of(k, fd)?;
    let now = k.monotonic_ns();
    t.settle(now);
    store(k, fd, t)?;
    let (value, interval) = t.current(now);
    k.copy_to_user(cur, &itimerspec(value, interval))
        .map_err(mem_err)?;
    Ok(0)
}

/// The expiration count of the timerfd `fd` (what a read returns), waiting for one
/// unless it is non-blocking (EAGAIN). A timer that is not armed would be waited for forever (one
/// thread, no signals delivered): the app is stopped with a message instead, as for
/// a poll without events.
pub fn wait_ticks(k: &mut Kernel, fd: u64) -> Result<u64, u64> {
    loop {
        let mut t = timer_of(k, fd)?;
        let now = k.monotonic_ns();
        let ticks = t.take_ticks(now);
        store(k, fd, t)?;
        if ticks > 0 {
            return Ok(ticks);
        }
        if k.files.get(fd)?.flags & O_NONBLOCK != 0 {
            return Err(EAGAIN);
        }
        match t.deadline() {
            // Other threads run meanwhile; a signal ends the wait (restarted after a
            // handler with SA_RESTART, as Linux's timerfd_read).
            Some(deadline) => {
                if super::signal::wait(k, Some(deadline)) == super::signal::Wake::Signal {
                    return Err(super::signal::ERESTARTSYS);
                }
            }
            None if k.sched.threads.live() > 1 => {
                // Another thread may arm it: wait for a signal, re-checking.
                let recheck = k.monotonic_ns() + UNARMED_RECHECK_NS;
                if super::signal::wait(k, Some(recheck)) == super::signal::Wake::Signal {
                    return Err(super::signal::ERESTARTSYS);
                }
            }
            None => {
                let _ = k.console_write(
                    2,
                    b"nacre: the app waits on a timerfd that is not armed and nothing can arm it; stopping it\n",
                );
                super::exit_app(k, 128 + 9);
            }
        }
    }
}

/// How often a read of an unarmed timer looks again while other threads could arm it.
const UNARMED_RECHECK_NS: u64 = 10_000_000;

/// read(2) of a timerfd: the expiration count as 8 bytes; EINVAL for a shorter buffer.
pub fn read(k: &mut Kernel, fd: u64, buf: u64, len: u64) -> SysResult {
    if len < TICKS_SIZE {
        return Err(EINVAL);
    }
    let ticks = wait_ticks(k, fd)?;
    k.copy_to_user(buf, &ticks.to_le_bytes()).map_err(mem_err)?;
    Ok(TICKS_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_one_shot_timer_expires_once_then_disarms() {
        let mut t = Timer::new(CLOCK_MONOTONIC);
        assert_eq!(t.set(0, Some(10 * MS), 0), (0, 0), "was disarmed");
        assert!(!t.expired_at(9 * MS));
        assert_eq!(t.current(4 * MS), (6 * MS, 0));
        assert_eq!(t.take_ticks(9 * MS), 0);
        assert!(t.expired_at(10 * MS));
        assert_eq!(t.take_ticks(500 * MS), 1, "one expiration however late");
        assert_eq!(t.deadline(), None);
        assert_eq!(t.current(600 * MS), (0, 0), "disarmed");
        assert_eq!(t.take_ticks(700 * MS), 0);
        assert!(!t.expired_at(700 * MS));
    }

    #[test]
    fn an_interval_timer_counts_every_period_begun() {
        let mut t = Timer::new(CLOCK_MONOTONIC);
        t.set(0, Some(10 * MS), 5 * MS);
        assert_eq!(t.take_ticks(10 * MS), 1, "the first expiration");
        assert_eq!(t.deadline(), Some(15 * MS));
        assert_eq!(t.take_ticks(14 * MS), 0);
        // 15, 20, 25 and 30 have passed.
        assert_eq!(t.take_ticks(32 * MS), 4);
        assert_eq!(t.current(32 * MS), (3 * MS, 5 * MS));
        // Counted at one look or at several, the total is the same.
        let mut once = t;
        let mut often = t;
        let mut sum = 0;
        for now in (33..=100).map(|ms| ms * MS) {
            often.settle(now);
            sum += often.take_ticks(now);
        }
        assert_eq!(once.take_ticks(100 * MS), sum);
        assert_eq!(
            (once.deadline(), once.current(100 * MS)),
            (often.deadline(), often.current(100 * MS))
        );
        // Read at each period, it fired at each; read once, once.
        assert_eq!(often.fires(100 * MS) - once.fires(100 * MS), 13);
    }

    #[test]
    fn setting_forgets_unread_expirations_and_returns_the_old_setting() {
        let mut t = Timer::new(CLOCK_REALTIME);
        t.set(0, Some(10 * MS), 10 * MS);
        // At 25 ms, two expirations are unread and the next is at 30 ms.
        assert_eq!(t.set(25 * MS, Some(100 * MS), 0), (5 * MS, 10 * MS));
        assert_eq!(t.take_ticks(99 * MS), 0, "the unread ones are gone");
        assert_eq!(t.set(99 * MS, None, 7 * MS), (MS, 0), "disarming");
        assert_eq!(t.current(99 * MS), (0, 0), "no interval without a value");
        assert_eq!(t.take_ticks(1_000 * MS), 0);
        assert_eq!(t.clock, CLOCK_REALTIME);
    }

    #[test]
    fn a_timer_fires_once_until_read_or_set() {
        let mut t = Timer::new(CLOCK_MONOTONIC);
        t.set(0, Some(10 * MS), 10 * MS);
        assert_eq!(t.fires(9 * MS), 0);
        assert_eq!(t.fires(10 * MS), 1, "looked at without settling");
        assert_eq!(t.fires(35 * MS), 1, "three expirations, one fire");
        t.settle(35 * MS);
        assert_eq!(t.fires(45 * MS), 1, "still unread");
        assert_eq!(t.next_expiry(35 * MS), Some(40 * MS));
        assert_eq!(t.take_ticks(45 * MS), 4);
        assert_eq!(t.fires(49 * MS), 1);
        assert_eq!(t.fires(50 * MS), 2, "read: the next expiration fires");
        t.set(50 * MS, Some(60 * MS), 0);
        assert_eq!(t.fires(61 * MS), 3, "set: so does this one");
        t.settle(70 * MS);
        assert_eq!(t.fires(1_000 * MS), 3, "a one-shot timer expires once");
        assert_eq!(t.next_expiry(70 * MS), None);
        t.set(70 * MS, Some(80 * MS), 10 * MS);
        assert_eq!(
            t.next_expiry(105 * MS),
            Some(110 * MS),
            "past the expirations due"
        );
    }

    #[test]
    fn a_deadline_in_the_past_expires_at_once() {
        let mut t = Timer::new(CLOCK_MONOTONIC);
        t.set(50 * MS, Some(20 * MS), 10 * MS);
        assert!(t.expired_at(50 * MS));
        // 20, 30, 40 and 50.
        assert_eq!(t.take_ticks(50 * MS), 4);
        assert_eq!(t.deadline(), Some(60 * MS));
    }

    #[test]
    fn far_deadlines_and_huge_counts_saturate() {
        let mut t = Timer::new(CLOCK_MONOTONIC);
        t.set(0, Some(u64::MAX - 1), u64::MAX);
        assert_eq!(t.take_ticks(u64::MAX), 1);
        assert_eq!(t.deadline(), Some(u64::MAX));
        let mut t = Timer::new(CLOCK_MONOTONIC);
        t.set(0, Some(1), 1);
        assert_eq!(t.take_ticks(u64::MAX), u64::MAX);
    }

    fn its(interval: (i64, i64), value: (i64, i64)) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (at, v) in [
            (0, interval.0),
            (8, interval.1),
            (16, value.0),
            (24, value.1),
        ] {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn itimerspecs_put_the_interval_first() {
        assert_eq!(
            parse_itimerspec(&its((1, 5), (2, 0))),
            Ok((2_000_000_000, 1_000_000_005))
        );
        assert_eq!(
            parse_itimerspec(&itimerspec(3_000_000_001, 7)),
            Ok((3_000_000_001, 7))
        );
        assert_eq!(
            parse_itimerspec(&its((0, 1_000_000_000), (1, 0))),
            Err(EINVAL)
        );
        assert_eq!(parse_itimerspec(&its((0, 0), (-1, 0))), Err(EINVAL));
    }

    #[test]
    fn timers_exist_on_the_clocks_linux_allows() {
        for clock in [0, 1, 7, 8, 9] {
            assert!(timer_clock(clock), "clock {clock}");
        }
        // CPU-time, raw, coarse, TAI and unknown clocks.
        for clock in [2, 3, 4, 5, 6, 10, 11, 12, -1] {
            assert!(!timer_clock(clock), "clock {clock}");
        }
        assert!(realtime_clock(CLOCK_REALTIME_ALARM));
        assert!(!realtime_clock(CLOCK_BOOTTIME));
    }

    #[test]
    fn the_flags_are_linuxs() {
        assert_eq!(TFD_CLOEXEC, 0o2000000);
        assert_eq!(TFD_NONBLOCK, 0o4000);
    }
}
