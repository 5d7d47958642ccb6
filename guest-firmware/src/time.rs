//! The firmware's clocks. Time is an input from the host and untrusted
//! (`docs/threat-model.md`): the host reports its wall-clock and monotonic time and the
//! TSC frequency once; from then on the firmware counts TSC ticks itself, so the host
//! cannot make time jump, and every reading is floored at the latest one, so time never
//! goes backwards even where the host controls the TSC (`vdso/vvar.rs`, `ClockFloor`).
//! Where CPUID leaf 0x15 gives the TSC frequency (TDX, whose TSC the TDX module
//! virtualizes), that is used instead of the host's figure.
//!
//! The host is asked when the app is loaded, and the calibration is published in the
//! vDSO's data page (`app/vdso.rs`): the app's clock reads through the vDSO compute
//! in ring 3 exactly what the syscall computes here, with the same functions
//! (`vdso/vvar.rs`) on the same values.

use crate::app::vdso::vvar::{mult_for_khz, ticks_to_ns, Base, Calibration};
use core::sync::atomic::Ordering;

use crate::error::FwError;
use crate::kernel::Kernel;
use nacre_shared_abi::hostcall::{ClockReply, HostcallHeader, HostcallOp};
use zerocopy::FromBytes;

pub use crate::app::vdso::vvar::NS_PER_SEC;

/// The TSC frequency used when nothing credible is reported (1 GHz).
const FALLBACK_TSC_KHZ: u64 = 1_000_000;
/// Credible TSC frequencies: 1 MHz to 100 GHz.
const TSC_KHZ_RANGE: core::ops::RangeInclusive<u64> = 1_000..=100_000_000;

/// Clock state.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// TSC when the firmware started the app's clocks (CPU-time clocks count from it).
    boot_tsc: u64,
    /// The calibration from the host's word, once asked (when the app is loaded,
    /// `app/vdso.rs`, or at the first time call before that).
    cal: Option<Calibration>,
    /// TSC ticks per nanosecond times 2^32 (the inverse of the calibration's `mult`),
    /// so that timer deadlines need no division.
    ticks_per_ns: u64,
    /// The latest CLOCK_MONOTONIC reading the firmware has made: no later reading is
    /// earlier, whatever the TSC does (the host may rewind it, `vdso/vvar.rs`
    /// `ClockFloor`). Private to the firmware, under the kernel lock.
    floor: u64,
}

/// Read the TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl Clock {
    /// A clock started now, not yet set from the host.
    pub fn start() -> Self {
        Self {
            boot_tsc: rdtsc(),
            cal: None,
            ticks_per_ns: 0,
            floor: 0,
        }
    }

    /// CPU time of the app (one thread, never descheduled): time since it started.
    pub fn cputime_ns(&self) -> u64 {
        let mult = self.cal.map_or(mult_for_khz(FALLBACK_TSC_KHZ), |c| c.mult);
        ticks_to_ns(rdtsc().saturating_sub(self.boot_tsc), mult)
    }
}

/// The TSC frequency CPUID leaf 0x15 states (crystal clock times the TSC/crystal
/// ratio; Intel SDM vol. 2A, CPUID leaf 15H), if it states one.
fn cpuid_tsc_khz() -> Option<u64> {
    let max = crate::arch::cpu::cpuid(0, 0).eax;
    if max < 0x15 {
        return None;
    }
    let r = crate::arch::cpu::cpuid(0x15, 0);
    leaf15_khz(r.eax, r.ebx, r.ecx)
}

/// The TSC frequency in kHz from CPUID leaf 0x15: EAX = denominator, EBX = numerator
/// of the TSC/crystal ratio, ECX = crystal frequency in Hz; `None` where any is 0
/// (not enumerated).
fn leaf15_khz(eax: u32, ebx: u32, ecx: u32) -> Option<u64> {
    if eax == 0 || ebx == 0 || ecx == 0 {
        return None;
    }
    Some(u64::from(ecx) * u64::from(ebx) / u64::from(eax) / 1000)
}

/// The TSC frequency to count time with: CPUID's when it states one, else the
/// host's; either only when credible, else [`FALLBACK_TSC_KHZ`].
fn tsc_khz(cpuid: Option<u64>, host: u64) -> u64 {
    cpuid
        .or(Some(host))
        .filter(|k| TSC_KHZ_RANGE.contains(k))
        .unwrap_or(FALLBACK_TSC_KHZ)
}

impl Kernel {
    /// Ask the host for the time, once, and publish the calibration to the vDSO's
    /// data page, so that the vDSO's clocks and the syscall's are the same clocks.
    pub fn calibrate_clock(&mut self) -> Result<Calibration, FwError> {
        if let Some(cal) = self.clock.cal {
            return Ok(cal);
        }
        let req = HostcallHeader {
            op: HostcallOp::Clock as u32,
            len: core::mem::size_of::<ClockReply>() as u64,
            ..Default::default()
        };
        let tsc0 = rdtsc();
        match self.hostcall(req)? {
            Ok(_) => {}
            Err(_) => return Err(FwError::Hostcall),
        }
        let mut bytes = [0u8; 24];
        self.io.get(0, &mut bytes)?;
        let reply = ClockReply::read_from_bytes(&bytes).map_err(|_| FwError::Hostcall)?;
        let khz = tsc_khz(cpuid_tsc_khz(), reply.tsc_khz);
        let cal = Calibration {
            tsc0,
            // Bounded so that adding elapsed time can never overflow.
            mono0: reply.monotonic_ns.min(1 << 62),
            real0: reply.realtime_ns.min(1 << 62),
            mult: mult_for_khz(khz),
        };
        self.clock.cal = Some(cal);
        self.clock.ticks_per_ns =
            u64::try_from((1u128 << 64) / u128::from(cal.mult.max(1))).unwrap_or(u64::MAX);
        crate::app::vdso::publish(&cal);
        Ok(cal)
    }

    /// The firmware's own clock counted from `base`, in nanoseconds: the arithmetic of
    /// the vDSO (`vdso/vvar.rs`) on the calibration it reads, never earlier than an
    /// earlier reading (the firmware's private floor). What the app is told goes
    /// through [`Self::app_clock_ns`].
    pub fn clock_ns(&mut self, base: Base) -> u64 {
        let cal = match self.clock.cal {
            Some(cal) => cal,
            None => match self.calibrate_clock() {
                Ok(cal) => cal,
                Err(e) => crate::fatal_error(e),
            },
        };
        let mono = cal.ns(Base::Monotonic, rdtsc()).max(self.clock.floor);
        self.clock.floor = mono;
        match base {
            Base::Monotonic => mono,
            Base::Realtime => cal.monotonic_to_realtime(mono),
        }
    }

    /// The clock `base` as the app's syscalls answer it: the firmware's clock, no
    /// earlier than anything the vDSO has answered (the floor they share), which it
    /// raises in turn, so that readings through the vDSO and the syscall, on any vCPU,
    /// never go back.
    pub fn app_clock_ns(&mut self, base: Base) -> u64 {
        let mono = self.clock_ns(Base::Monotonic);
        let mono = crate::app::vdso::app_floor().raise(mono);
        match (base, self.clock.cal) {
            (Base::Realtime, Some(cal)) => cal.monotonic_to_realtime(mono),
            _ => mono,
        }
    }

    /// The TSC value `ns` nanoseconds from now, by the firmware's own calibration.
    pub fn tsc_after(&mut self, ns: u64) -> u64 {
        if let Err(e) = self.calibrate_clock() {
            crate::fatal_error(e)
        }
        let ticks = (u128::from(ns) * u128::from(self.clock.ticks_per_ns)) >> 32;
        rdtsc().saturating_add(u64::try_from(ticks).unwrap_or(u64::MAX))
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    pub fn monotonic_ns(&mut self) -> u64 {
        self.clock_ns(Base::Monotonic)
    }

    /// CLOCK_REALTIME in nanoseconds since the Unix epoch (the host's word at start).
    pub fn realtime_ns(&mut self) -> u64 {
        self.clock_ns(Base::Realtime)
    }

    /// The CLOCK_MONOTONIC time at which CLOCK_REALTIME reads `real`. Both clocks count
    /// the same TSC from the host's word at start, so their difference is fixed:
    /// converting with it, rather than with two readings taken one after the other,
    /// loses nothing to the time between the readings.
    pub fn realtime_to_monotonic(&mut self, real: u64) -> u64 {
        match self.calibrate_clock() {
            Ok(cal) => real.saturating_add(cal.mono0).saturating_sub(cal.real0),
            Err(e) => crate::fatal_error(e),
        }
    }

    /// Sleep until CLOCK_MONOTONIC reaches `deadline`: the host sleeps for us, and the
    /// firmware checks against its own clock and asks again if the host woke it early,
    /// unless the host says socket events are queued: then it returns at once with
    /// [`crate::syscall::socket::NET_PENDING`] set, for the caller to look again.
    pub fn sleep_until(&mut self, deadline: u64) {
        loop {
            let now = self.monotonic_ns();
            if now >= deadline {
                return;
            }
            let req = HostcallHeader {
                op: HostcallOp::Sleep as u32,
                arg: deadline - now,
                ..Default::default()
            };
            match self.hostcall(req) {
                Ok(Ok(nacre_shared_abi::net::SLEEP_WOKEN_BY_NET)) => {
                    // Socket events are queued: the caller looks at them first.
                    crate::syscall::socket::NET_PENDING.store(true, Ordering::Release);
                    return;
                }
                Ok(Ok(_)) => {}
                _ => crate::fatal_error(FwError::Hostcall),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_15h_gives_the_tsc_frequency_when_enumerated() {
        // 25 MHz crystal, ratio 88/2: 1.1 GHz.
        assert_eq!(leaf15_khz(2, 88, 25_000_000), Some(1_100_000));
        assert_eq!(leaf15_khz(0, 88, 25_000_000), None);
        assert_eq!(leaf15_khz(2, 0, 25_000_000), None);
        assert_eq!(leaf15_khz(2, 88, 0), None);
    }

    #[test]
    fn cpuids_frequency_wins_and_incredible_ones_fall_back() {
        assert_eq!(tsc_khz(Some(2_500_000), 3_000_000), 2_500_000);
        assert_eq!(tsc_khz(None, 3_000_000), 3_000_000);
        assert_eq!(tsc_khz(None, 0), FALLBACK_TSC_KHZ);
        assert_eq!(tsc_khz(None, u64::MAX), FALLBACK_TSC_KHZ);
        assert_eq!(
            tsc_khz(Some(1), 3_000_000),
            FALLBACK_TSC_KHZ,
            "CPUID's word is final"
        );
    }
}
