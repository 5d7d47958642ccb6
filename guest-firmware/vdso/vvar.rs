//! The vDSO's data page (`[vvar]` in `/proc/self/maps`): the firmware's clock
//! calibration, which the firmware writes (ring 0) and the vDSO reads (ring 3).
//!
//! This file is compiled twice: into the firmware (`app/vdso.rs` includes it, and its
//! unit tests run with the firmware's) and into the vDSO (`vdso.rs`). Both sides turn a
//! TSC reading into time with the same functions on the same values, so a clock read
//! through the vDSO and one read through the syscall agree to the tick and never go
//! backwards across the two.
//!
//! Nothing here may panic or call into `core` out of line: the vDSO is linked with no
//! library at all (`build.rs` links it with `--no-undefined`).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Clock ids (Linux `include/uapi/linux/time.h`).
pub const CLOCK_REALTIME: i32 = 0;
pub const CLOCK_MONOTONIC: i32 = 1;
pub const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
pub const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
pub const CLOCK_MONOTONIC_RAW: i32 = 4;
pub const CLOCK_REALTIME_COARSE: i32 = 5;
pub const CLOCK_MONOTONIC_COARSE: i32 = 6;
pub const CLOCK_BOOTTIME: i32 = 7;
pub const CLOCK_REALTIME_ALARM: i32 = 8;
pub const CLOCK_BOOTTIME_ALARM: i32 = 9;
pub const CLOCK_TAI: i32 = 11;

/// Resolution of the coarse clocks: one tick of a 250 Hz kernel, as Linux reports.
pub const COARSE_RES_NS: u64 = 4_000_000;

/// What a clock counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The host's CLOCK_MONOTONIC at calibration, then TSC ticks.
    Monotonic,
    /// The host's CLOCK_REALTIME at calibration, then TSC ticks.
    Realtime,
}

/// The clocks the vDSO answers itself, with their base and resolution; `None` for the
/// others (the CPU-time and alarm clocks, unknown ids), which it leaves to the syscall.
/// The same set as Linux's x86 vDSO (`lib/vdso/gettimeofday.c`: the high-resolution,
/// coarse and raw clocks). The firmware's syscall reads these clocks through this
/// function too.
pub fn vdso_clock(clock: i32) -> Option<(Base, u64)> {
    match clock {
        CLOCK_REALTIME | CLOCK_TAI => Some((Base::Realtime, 1)),
        CLOCK_REALTIME_COARSE => Some((Base::Realtime, COARSE_RES_NS)),
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_BOOTTIME => Some((Base::Monotonic, 1)),
        CLOCK_MONOTONIC_COARSE => Some((Base::Monotonic, COARSE_RES_NS)),
        _ => None,
    }
}

/// Nanoseconds per TSC tick times 2^32 for a TSC of `khz` kHz (1 MHz to 100 GHz keep
/// the product of years of ticks far from overflowing in [`ticks_to_ns`]).
pub const fn mult_for_khz(khz: u64) -> u64 {
    (1_000_000u64 << 32) / khz
}

/// `ticks` TSC ticks in nanoseconds at `mult` ([`mult_for_khz`]). One 64x64-bit
/// multiplication and a shift: no division, nothing out of line.
pub const fn ticks_to_ns(ticks: u64, mult: u64) -> u64 {
    ((ticks as u128 * mult as u128) >> 32) as u64
}

/// The firmware's clock calibration: at TSC `tsc0` the host said its monotonic and
/// wall-clock times were `mono0` and `real0`; a tick is `mult` / 2^32 nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Calibration {
    pub tsc0: u64,
    pub mono0: u64,
    pub real0: u64,
    pub mult: u64,
}

impl Calibration {
    /// Nanoseconds since `tsc0` at TSC `tsc` (0 for a reading before it).
    pub const fn elapsed_ns(&self, tsc: u64) -> u64 {
        ticks_to_ns(tsc.saturating_sub(self.tsc0), self.mult)
    }

    /// The clock `base` at TSC `tsc`, in nanoseconds. The firmware bounds `mono0` and
    /// `real0` to 2^62, so the sum cannot wrap for centuries of ticks; it saturates
    /// rather than wrap all the same.
    pub const fn ns(&self, base: Base, tsc: u64) -> u64 {
        let at0 = match base {
            Base::Monotonic => self.mono0,
            Base::Realtime => self.real0,
        };
        at0.saturating_add(self.elapsed_ns(tsc))
    }
}

/// The clocks' floor: the latest CLOCK_MONOTONIC value any reader (the vDSO on any
/// vCPU, the firmware's syscalls) has returned, in nanoseconds. Every reading returns
/// at least the floor and raises it, so the clocks never go backwards, neither on one
/// vCPU nor across vCPUs, even where the host controls the TSC (SEV-SNP without Secure
/// TSC: the hypervisor sets the guest's TSC offset and could rewind it) or the vCPUs'
/// TSCs disagree. A rewound TSC stops the clocks until it catches up; it never takes
/// them back.
///
/// The vDSO's floor lives in a page the app may write (the vDSO runs in ring 3): an
/// app that writes it can only move its own clocks forward. The firmware keeps a
/// private floor of its own for its deadlines, and raises the app's with what it
/// reads.
#[derive(Debug)]
#[repr(C)]
pub struct ClockFloor {
    mono: AtomicU64,
}

impl Default for ClockFloor {
    fn default() -> Self {
        Self::new()
    }
}

impl ClockFloor {
    /// A floor at 0.
    pub const fn new() -> Self {
        Self {
            mono: AtomicU64::new(0),
        }
    }

    /// Raise the floor to `mono` if it is lower; returns the larger of the two: what
    /// a reading of `mono` may return. One locked instruction when time moved on
    /// (inline: no call leaves the vDSO).
    pub fn raise(&self, mono: u64) -> u64 {
        let floor = self.mono.load(Ordering::SeqCst);
        if mono <= floor {
            return floor;
        }
        self.mono.fetch_max(mono, Ordering::SeqCst).max(mono)
    }
}

impl Calibration {
    /// The clock `base` at TSC `tsc`, no earlier than any reading `floor` has seen
    /// (and raising it): CLOCK_MONOTONIC is floored, and CLOCK_REALTIME keeps its
    /// fixed distance from it.
    pub fn floored_ns(&self, base: Base, tsc: u64, floor: &ClockFloor) -> u64 {
        let mono = floor.raise(self.ns(Base::Monotonic, tsc));
        match base {
            Base::Monotonic => mono,
            Base::Realtime => self.monotonic_to_realtime(mono),
        }
    }

    /// The CLOCK_REALTIME reading at CLOCK_MONOTONIC `mono` (both count the same ticks
    /// from their own start).
    pub const fn monotonic_to_realtime(&self, mono: u64) -> u64 {
        self.real0.saturating_add(mono.saturating_sub(self.mono0))
    }
}

/// The data page's contents (the rest of the page is zero). The layout is private to
/// the firmware and its vDSO, which are built together; the offsets are fixed anyway
/// so that a debugger reading `[vvar]` finds them.
#[derive(Debug)]
#[repr(C)]
pub struct Vvar {
    /// A sequence count as Linux's `vdso_data.seq`: 0 until the firmware has
    /// calibrated its clock, odd while it writes, even afterwards. A reader that sees
    /// it odd or changed across its reads retries.
    seq: AtomicU32,
    /// The number of vCPUs when more than one runs the app, else 0: with one, the
    /// vDSO's getcpu answers 0 itself.
    cpus: AtomicU32,
    tsc0: AtomicU64,
    mono0: AtomicU64,
    real0: AtomicU64,
    mult: AtomicU64,
}

const _: () = assert!(core::mem::offset_of!(Vvar, seq) == 0);
const _: () = assert!(core::mem::offset_of!(Vvar, tsc0) == 8);
const _: () = assert!(core::mem::offset_of!(Vvar, mono0) == 16);
const _: () = assert!(core::mem::offset_of!(Vvar, real0) == 24);
const _: () = assert!(core::mem::offset_of!(Vvar, mult) == 32);
const _: () = assert!(core::mem::size_of::<Vvar>() <= 4096);

impl Default for Vvar {
    fn default() -> Self {
        Self::new()
    }
}

impl Vvar {
    /// A page whose clock is not calibrated yet.
    pub const fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            cpus: AtomicU32::new(0),
            tsc0: AtomicU64::new(0),
            mono0: AtomicU64::new(0),
            real0: AtomicU64::new(0),
            mult: AtomicU64::new(0),
        }
    }

    /// Writer (the firmware): publish `cal`. The only writer is the firmware, with
    /// its kernel lock held.
    pub fn publish(&self, cal: &Calibration) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq | 1, Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Release);
        self.tsc0.store(cal.tsc0, Ordering::Relaxed);
        self.mono0.store(cal.mono0, Ordering::Relaxed);
        self.real0.store(cal.real0, Ordering::Relaxed);
        self.mult.store(cal.mult, Ordering::Relaxed);
        self.seq.store((seq | 1).wrapping_add(1), Ordering::Release);
    }

    /// Writer (the firmware, at boot before the app runs): `cpus` vCPUs run the app.
    pub fn set_cpus(&self, cpus: u32) {
        self.cpus
            .store(if cpus > 1 { cpus } else { 0 }, Ordering::Relaxed);
    }

    /// Reader: whether more than one vCPU runs the app.
    pub fn several_cpus(&self) -> bool {
        self.cpus.load(Ordering::Relaxed) > 1
    }

    /// Reader (the vDSO): the calibration, or `None` while the firmware has not
    /// calibrated its clock (the caller then asks the syscall, which does).
    pub fn read(&self) -> Option<Calibration> {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq == 0 {
                return None;
            }
            if seq & 1 != 0 {
                core::hint::spin_loop();
                continue;
            }
            let cal = Calibration {
                tsc0: self.tsc0.load(Ordering::Relaxed),
                mono0: self.mono0.load(Ordering::Relaxed),
                real0: self.real0.load(Ordering::Relaxed),
                mult: self.mult.load(Ordering::Relaxed),
            };
            core::sync::atomic::fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                return Some(cal);
            }
        }
    }
}

/// `ns` nanoseconds as `struct timespec` fields (`tv_sec`, `tv_nsec`).
pub const fn timespec(ns: u64) -> (i64, i64) {
    ((ns / NS_PER_SEC) as i64, (ns % NS_PER_SEC) as i64)
}

/// `ns` nanoseconds as `struct timeval` fields (`tv_sec`, `tv_usec`).
pub const fn timeval(ns: u64) -> (i64, i64) {
    ((ns / NS_PER_SEC) as i64, (ns % NS_PER_SEC / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_nanoseconds_at_the_tsc_frequency() {
        assert_eq!(
            ticks_to_ns(2_000_000_000, mult_for_khz(2_000_000)),
            1_000_000_000
        );
        let ghz3 = mult_for_khz(3_000_000);
        assert_eq!(
            ticks_to_ns(3_000_000_000, ghz3),
            999_999_999,
            "one second, rounded down"
        );
        assert_eq!(
            ticks_to_ns(3, mult_for_khz(1_000)),
            3_000,
            "1 MHz: a microsecond a tick"
        );
        // A year of ticks at 100 GHz does not overflow.
        let year = 100_000_000_000u64 * 3600 * 24 * 365;
        assert!(ticks_to_ns(year, mult_for_khz(100_000_000)) > 31_000_000_000_000_000);
    }

    fn cal() -> Calibration {
        Calibration {
            tsc0: 1_000_000,
            mono0: 5 * NS_PER_SEC,
            real0: 1_700_000_000 * NS_PER_SEC,
            mult: mult_for_khz(2_000_000),
        }
    }

    #[test]
    fn floored_clocks_never_go_back_when_the_tsc_does() {
        let c = cal();
        let floor = ClockFloor::new();
        let t = c.tsc0 + 4_000_000_000;
        assert_eq!(c.floored_ns(Base::Monotonic, t, &floor), 7 * NS_PER_SEC);
        // The TSC goes back a second (2 GHz): the clocks stay where they were.
        let back = t - 2_000_000_000;
        assert_eq!(c.floored_ns(Base::Monotonic, back, &floor), 7 * NS_PER_SEC);
        assert_eq!(
            c.floored_ns(Base::Realtime, back, &floor),
            c.ns(Base::Realtime, t),
            "the wall clock keeps its distance from the floored monotonic clock"
        );
        // Then they move on from there as the TSC catches up and passes.
        assert_eq!(
            c.floored_ns(Base::Monotonic, t + 2_000, &floor),
            7 * NS_PER_SEC + 1_000
        );
        assert_eq!(floor.raise(0), 7 * NS_PER_SEC + 1_000);
        // A floor moved forward by someone else (another vCPU, the app itself).
        floor.raise(100 * NS_PER_SEC);
        assert_eq!(c.floored_ns(Base::Monotonic, t, &floor), 100 * NS_PER_SEC);
        floor.raise(u64::MAX);
        assert_eq!(
            c.floored_ns(Base::Realtime, t, &floor),
            u64::MAX,
            "saturates"
        );
    }

    #[test]
    fn both_clocks_count_the_same_ticks_from_their_own_start() {
        let c = cal();
        assert_eq!(c.ns(Base::Monotonic, c.tsc0), 5 * NS_PER_SEC);
        assert_eq!(c.ns(Base::Realtime, c.tsc0), 1_700_000_000 * NS_PER_SEC);
        // Two seconds of a 2 GHz TSC.
        let t = c.tsc0 + 4_000_000_000;
        assert_eq!(c.ns(Base::Monotonic, t), 7 * NS_PER_SEC);
        assert_eq!(
            c.ns(Base::Realtime, t) - c.ns(Base::Realtime, c.tsc0),
            c.ns(Base::Monotonic, t) - c.ns(Base::Monotonic, c.tsc0)
        );
        assert_eq!(
            c.ns(Base::Monotonic, c.tsc0 - 1),
            5 * NS_PER_SEC,
            "a TSC before the calibration reads as the calibration"
        );
        let far = Calibration {
            mono0: u64::MAX - 1,
            ..c
        };
        assert_eq!(far.ns(Base::Monotonic, u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn time_never_goes_backwards_as_the_tsc_advances() {
        let c = Calibration {
            mult: mult_for_khz(2_345_678),
            ..cal()
        };
        let mut last = 0;
        for step in 0..20_000u64 {
            let tsc = c.tsc0 + step * 977;
            let now = c.ns(Base::Monotonic, tsc);
            assert!(now >= last, "step {step}: {now} < {last}");
            last = now;
        }
    }

    #[test]
    fn the_page_is_unset_until_published_then_reads_back() {
        let page = Vvar::new();
        assert_eq!(
            page.read(),
            None,
            "not calibrated: the vDSO asks the syscall"
        );
        page.publish(&cal());
        assert_eq!(page.read(), Some(cal()));
        assert_eq!(page.seq.load(Ordering::Relaxed), 2);
        let again = Calibration { mono0: 9, ..cal() };
        page.publish(&again);
        assert_eq!(page.read(), Some(again));
        assert_eq!(page.seq.load(Ordering::Relaxed) % 2, 0, "even when stable");
    }

    #[test]
    fn the_vdso_answers_the_clocks_linux_vdso_answers() {
        assert_eq!(vdso_clock(CLOCK_REALTIME), Some((Base::Realtime, 1)));
        assert_eq!(vdso_clock(CLOCK_MONOTONIC), Some((Base::Monotonic, 1)));
        assert_eq!(vdso_clock(CLOCK_MONOTONIC_RAW), Some((Base::Monotonic, 1)));
        assert_eq!(vdso_clock(CLOCK_BOOTTIME), Some((Base::Monotonic, 1)));
        assert_eq!(vdso_clock(CLOCK_TAI), Some((Base::Realtime, 1)));
        assert_eq!(
            vdso_clock(CLOCK_REALTIME_COARSE),
            Some((Base::Realtime, COARSE_RES_NS))
        );
        assert_eq!(
            vdso_clock(CLOCK_MONOTONIC_COARSE),
            Some((Base::Monotonic, COARSE_RES_NS))
        );
        for syscall_only in [
            CLOCK_PROCESS_CPUTIME_ID,
            CLOCK_THREAD_CPUTIME_ID,
            CLOCK_REALTIME_ALARM,
            CLOCK_BOOTTIME_ALARM,
            10,
            12,
            -1,
        ] {
            assert_eq!(vdso_clock(syscall_only), None, "clock {syscall_only}");
        }
    }

    #[test]
    fn timespecs_and_timevals_split_nanoseconds() {
        assert_eq!(timespec(3_000_123_999), (3, 123_999));
        assert_eq!(timeval(3_000_123_999), (3, 123));
        assert_eq!(timespec(0), (0, 0));
        assert_eq!(timespec(u64::MAX), (18_446_744_073, 709_551_615));
    }
}
