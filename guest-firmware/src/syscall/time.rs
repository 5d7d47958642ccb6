//! Clocks and sleeping: clock_gettime, clock_getres, gettimeofday, time, nanosleep,
//! clock_nanosleep. Served from the firmware's TSC-based clocks (`time.rs`); the host's
//! time is untrusted and only read once. Apps whose libc uses the vDSO read most
//! clocks without coming here (`app/vdso.rs`); these are the same clocks.

use super::errno::*;
use super::signal::{self, Wake};
use super::{mem_err, SysResult};
use crate::app::vdso::vvar::{self, vdso_clock, Base};
use crate::kernel::Kernel;
use crate::time::NS_PER_SEC;

pub use crate::app::vdso::vvar::{
    CLOCK_BOOTTIME, CLOCK_BOOTTIME_ALARM, CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE,
    CLOCK_MONOTONIC_RAW, CLOCK_PROCESS_CPUTIME_ID, CLOCK_REALTIME, CLOCK_REALTIME_ALARM,
    CLOCK_REALTIME_COARSE, CLOCK_TAI, CLOCK_THREAD_CPUTIME_ID,
};

/// clock_nanosleep flag (Linux `include/uapi/linux/time.h`).
const TIMER_ABSTIME: u64 = 1;

/// A clock's current value in nanoseconds. The clocks the vDSO answers are read
/// exactly as it reads them (`vdso_clock`); the rest are the syscall's alone.
fn clock_ns(k: &mut Kernel, clock: i32) -> Result<u64, u64> {
    if let Some((base, _)) = vdso_clock(clock) {
        return Ok(k.app_clock_ns(base));
    }
    match clock {
        CLOCK_REALTIME_ALARM => Ok(k.app_clock_ns(Base::Realtime)),
        CLOCK_BOOTTIME_ALARM => Ok(k.app_clock_ns(Base::Monotonic)),
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => Ok(k.clock.cputime_ns()),
        _ => Err(EINVAL),
    }
}

/// `struct timespec` (`tv_sec`, `tv_nsec`) for `ns` nanoseconds.
pub fn timespec(ns: u64) -> [u8; 16] {
    let (sec, nsec) = vvar::timespec(ns);
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&sec.to_le_bytes());
    t[8..].copy_from_slice(&nsec.to_le_bytes());
    t
}

/// `struct timeval` (`tv_sec`, `tv_usec`) for `ns` nanoseconds.
pub fn timeval(ns: u64) -> [u8; 16] {
    let (sec, usec) = vvar::timeval(ns);
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&sec.to_le_bytes());
    t[8..].copy_from_slice(&usec.to_le_bytes());
    t
}

/// Read a `struct timespec` from the app as nanoseconds (EINVAL when malformed).
pub fn read_timespec(k: &mut Kernel, va: u64) -> Result<u64, u64> {
    let mut t = [0u8; 16];
    k.copy_from_user(&mut t, va).map_err(mem_err)?;
    parse_timespec(&t)
}

/// A `struct timespec` as nanoseconds: EINVAL for a negative time or nanoseconds
/// outside `0..1e9` (as Linux's `timespec64_valid`); huge values saturate.
pub fn parse_timespec(t: &[u8; 16]) -> Result<u64, u64> {
    let sec = i64::from_le_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
    let nsec = i64::from_le_bytes([t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]]);
    if sec < 0 || !(0..NS_PER_SEC as i64).contains(&nsec) {
        return Err(EINVAL);
    }
    Ok((sec as u64)
        .saturating_mul(NS_PER_SEC)
        .saturating_add(nsec as u64))
}

/// A timeout argument: null is "no limit".
pub fn read_timeout(k: &mut Kernel, va: u64) -> Result<Option<i64>, u64> {
    if va == 0 {
        return Ok(None);
    }
    Ok(Some(read_timespec(k, va)?.min(i64::MAX as u64) as i64))
}

pub fn clock_gettime(k: &mut Kernel, clock: i32, tp: u64) -> SysResult {
    let ns = clock_ns(k, clock)?;
    k.copy_to_user(tp, &timespec(ns)).map_err(mem_err)?;
    Ok(0)
}

/// The resolution of clock `clock` in nanoseconds: the vDSO's answer for its clocks,
/// 1 ns for the others.
fn resolution(clock: i32) -> Result<u64, u64> {
    match vdso_clock(clock) {
        Some((_, res)) => Ok(res),
        None if clock_ns_known(clock) => Ok(1),
        None => Err(EINVAL),
    }
}

pub fn clock_getres(k: &mut Kernel, clock: i32, res: u64) -> SysResult {
    let ns = resolution(clock)?;
    if res != 0 {
        k.copy_to_user(res, &timespec(ns)).map_err(mem_err)?;
    }
    Ok(0)
}

fn clock_ns_known(c: i32) -> bool {
    matches!(c, 0..=9 | CLOCK_TAI)
}

pub fn gettimeofday(k: &mut Kernel, tv: u64, tz: u64) -> SysResult {
    if tv != 0 {
        let ns = k.app_clock_ns(Base::Realtime);
        k.copy_to_user(tv, &timeval(ns)).map_err(mem_err)?;
    }
    if tz != 0 {
        // struct timezone: UTC, no DST.
        k.copy_to_user(tz, &[0u8; 8]).map_err(mem_err)?;
    }
    Ok(0)
}

pub fn time(k: &mut Kernel, t: u64) -> SysResult {
    let secs = k.app_clock_ns(Base::Realtime) / NS_PER_SEC;
    if t != 0 {
        k.copy_to_user(t, &secs.to_le_bytes()).map_err(mem_err)?;
    }
    Ok(secs)
}

pub fn nanosleep(k: &mut Kernel, req: u64, rem: u64) -> SysResult {
    let ns = read_timespec(k, req)?;
    let deadline = k.monotonic_ns().saturating_add(ns);
    sleep(k, deadline, Some(rem))
}

/// Sleep until CLOCK_MONOTONIC reaches `deadline` unless a signal interrupts it: then
/// the time left goes to `rem` (a relative sleep; when not null) and the call ends as
/// Linux's does (`hrtimer_nanosleep`): restarted when no handler runs, else EINTR.
fn sleep(k: &mut Kernel, deadline: u64, rem: Option<u64>) -> SysResult {
    match signal::wait(k, Some(deadline)) {
        Wake::TimedOut | Wake::Never => Ok(0),
        Wake::Signal => match rem {
            None => Err(signal::ERESTARTNOHAND),
            Some(rem) => {
                if rem != 0 {
                    let left = deadline.saturating_sub(k.monotonic_ns());
                    k.copy_to_user(rem, &timespec(left)).map_err(mem_err)?;
                }
                Err(signal::ERESTART_RESTARTBLOCK)
            }
        },
    }
}

pub fn clock_nanosleep(k: &mut Kernel, clock: i32, flags: u64, req: u64, rem: u64) -> SysResult {
    let realtime = match clock {
        CLOCK_REALTIME | CLOCK_TAI => true,
        CLOCK_MONOTONIC | CLOCK_BOOTTIME => false,
        CLOCK_PROCESS_CPUTIME_ID
        | CLOCK_THREAD_CPUTIME_ID
        | CLOCK_MONOTONIC_RAW
        | CLOCK_REALTIME_COARSE
        | CLOCK_MONOTONIC_COARSE => return Err(EOPNOTSUPP_SLEEP),
        _ => return Err(EINVAL),
    };
    let ns = read_timespec(k, req)?;
    let relative = flags & TIMER_ABSTIME == 0;
    let deadline = if relative {
        k.monotonic_ns().saturating_add(ns)
    } else if realtime {
        k.realtime_to_monotonic(ns)
    } else {
        ns
    };
    sleep(k, deadline, relative.then_some(rem))
}

/// What clock_nanosleep returns for a clock that cannot be slept on (EOPNOTSUPP,
/// Linux `include/uapi/asm-generic/errno.h`, 95).
const EOPNOTSUPP_SLEEP: u64 = 95;

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sec: i64, nsec: i64) -> [u8; 16] {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&sec.to_le_bytes());
        t[8..].copy_from_slice(&nsec.to_le_bytes());
        t
    }

    #[test]
    fn timespecs_decode_to_nanoseconds_and_back() {
        assert_eq!(parse_timespec(&ts(2, 500)), Ok(2_000_000_500));
        assert_eq!(
            parse_timespec(&timespec(123_456_789_012)),
            Ok(123_456_789_012)
        );
        assert_eq!(parse_timespec(&ts(i64::MAX, 0)), Ok(u64::MAX), "saturates");
    }

    #[test]
    fn malformed_timespecs_are_einval() {
        assert_eq!(parse_timespec(&ts(-1, 0)), Err(EINVAL));
        assert_eq!(parse_timespec(&ts(0, -1)), Err(EINVAL));
        assert_eq!(parse_timespec(&ts(0, 1_000_000_000)), Err(EINVAL));
    }

    #[test]
    fn timevals_carry_microseconds() {
        let t = timeval(3_000_123_999);
        assert_eq!(u64::from_le_bytes(t[..8].try_into().expect("8 bytes")), 3);
        assert_eq!(u64::from_le_bytes(t[8..].try_into().expect("8 bytes")), 123);
    }

    #[test]
    fn resolutions_are_per_clock() {
        assert_eq!(resolution(CLOCK_MONOTONIC), Ok(1));
        assert_eq!(resolution(CLOCK_REALTIME_COARSE), Ok(vvar::COARSE_RES_NS));
        assert_eq!(resolution(CLOCK_PROCESS_CPUTIME_ID), Ok(1));
        assert_eq!(resolution(CLOCK_TAI), Ok(1));
        assert_eq!(resolution(10), Err(EINVAL), "clock 10 does not exist");
        assert_eq!(resolution(-1), Err(EINVAL));
    }
}
