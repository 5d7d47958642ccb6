//! The firmware's clocks. Time is an input from the host and untrusted
//! (`docs/threat-model.md`): the host reports its wall-clock and monotonic time and the
//! TSC frequency once; from then on the firmware counts TSC ticks itself, so time
//! never goes backwards and the host cannot make it jump. Where CPUID leaf 0x15 gives
//! the TSC frequency (TDX, whose TSC the TDX module virtualizes), that is used instead
//! of the host's figure.

use crate::error::FwError;
use crate::kernel::Kernel;
use nacre_shared_abi::hostcall::{ClockReply, HostcallHeader, HostcallOp};
use zerocopy::FromBytes;

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// The TSC frequency used when nothing credible is reported (1 GHz).
const FALLBACK_TSC_KHZ: u64 = 1_000_000;
/// Credible TSC frequencies: 1 MHz to 100 GHz.
const TSC_KHZ_RANGE: core::ops::RangeInclusive<u64> = 1_000..=100_000_000;

/// Clock state.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// TSC when the firmware started the app's clocks (CPU-time clocks count from it).
    boot_tsc: u64,
    /// Whether the host was asked (lazily, at the first time call).
    ready: bool,
    /// TSC at the host's report.
    tsc0: u64,
    /// Host monotonic and wall-clock time at `tsc0`, in nanoseconds.
    mono0: u64,
    real0: u64,
    /// Nanoseconds per TSC tick, times 2^32.
    mult: u64,
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
            ready: false,
            tsc0: 0,
            mono0: 0,
            real0: 0,
            mult: (1_000_000u64 << 32) / FALLBACK_TSC_KHZ,
        }
    }

    fn ns_since(&self, tsc: u64) -> u64 {
        let delta = rdtsc().saturating_sub(tsc);
        ((u128::from(delta) * u128::from(self.mult)) >> 32) as u64
    }

    /// CPU time of the app (one thread, never descheduled): time since it started.
    pub fn cputime_ns(&self) -> u64 {
        self.ns_since(self.boot_tsc)
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
    if r.eax == 0 || r.ebx == 0 || r.ecx == 0 {
        return None;
    }
    Some(u64::from(r.ecx) * u64::from(r.ebx) / u64::from(r.eax) / 1000)
}

impl Kernel {
    /// Ask the host for the time once.
    fn clock_ready(&mut self) -> Result<(), FwError> {
        if self.clock.ready {
            return Ok(());
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
        let khz = cpuid_tsc_khz()
            .or(Some(reply.tsc_khz))
            .filter(|k| TSC_KHZ_RANGE.contains(k))
            .unwrap_or(FALLBACK_TSC_KHZ);
        let c = &mut self.clock;
        c.tsc0 = tsc0;
        // Bounded so that adding elapsed time can never overflow.
        c.mono0 = reply.monotonic_ns.min(1 << 62);
        c.real0 = reply.realtime_ns.min(1 << 62);
        c.mult = (1_000_000u64 << 32) / khz;
        c.ready = true;
        Ok(())
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    pub fn monotonic_ns(&mut self) -> u64 {
        if let Err(e) = self.clock_ready() {
            crate::fatal_error(e)
        }
        self.clock.mono0 + self.clock.ns_since(self.clock.tsc0)
    }

    /// CLOCK_REALTIME in nanoseconds since the Unix epoch (the host's word at start).
    pub fn realtime_ns(&mut self) -> u64 {
        if let Err(e) = self.clock_ready() {
            crate::fatal_error(e)
        }
        self.clock.real0 + self.clock.ns_since(self.clock.tsc0)
    }

    /// Sleep until CLOCK_MONOTONIC reaches `deadline`: the host sleeps for us, and the
    /// firmware checks against its own clock and asks again if the host woke it early.
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
                Ok(Ok(_)) => {}
                _ => crate::fatal_error(FwError::Hostcall),
            }
        }
    }
}
