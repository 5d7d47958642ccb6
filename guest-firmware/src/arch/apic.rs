//! The local APIC in x2APIC mode, for the timer and inter-processor interrupts
//! (Intel SDM vol. 3A, 11.12 "Extended xAPIC (x2APIC)" and 11.5.4 "APIC Timer"; AMD
//! APM vol. 2, 16.11). The hypervisor emulates it (KVM's in-kernel local APIC), so
//! interrupts and their timing are host input: the firmware takes a timer interrupt
//! as "maybe time passed" and checks its own clock.
//!
//! The registers are MSRs 0x800 + (xAPIC offset >> 4), reached the way the platform
//! lets a confidential guest reach them ([`crate::platform::apic_msr`]: the GHCB on
//! SEV-SNP, TDVMCALL on TDX but for the registers the CPU virtualizes), on hardware
//! and on the emulated platforms alike. The timer runs in TSC-deadline
//! mode where CPUID says the CPU has it (the deadline is a TSC value, which is what
//! the firmware's clock counts), else one-shot at the APIC bus rate KVM uses.

/// ICR delivery mode fixed (000), physical destination, edge, assert (bit 14).
const ICR_FIXED_ASSERT: u64 = 1 << 14;
/// LVT bit 16: masked; timer mode bits 18:17: 00 one-shot, 10 TSC-deadline.
const LVT_MASKED: u64 = 1 << 16;
const LVT_TSC_DEADLINE: u64 = 0b10 << 17;

/// The timer's interrupt vector: the first one above the 32 exceptions.
pub const TIMER_VECTOR: u8 = 0x20;
/// The vector that wakes a CPU for another's request (a thread made runnable, a
/// TLB shoot-down).
pub const WAKE_VECTOR: u8 = 0x21;
/// The spurious-interrupt vector (its low four bits must be 1s on older CPUs).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// CPUID.1:ECX bit 21 (x2APIC) and bit 24 (TSC-deadline timer).
const CPUID1_ECX_X2APIC: u32 = 1 << 21;
const CPUID1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// How the timer is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    /// IA32_TSC_DEADLINE holds the TSC value at which it fires.
    TscDeadline,
    /// The initial-count register counts down at the APIC timer rate.
    OneShot,
}

/// Why the local APIC cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicError {
    /// CPUID reports no x2APIC.
    NoX2apic,
}

/// Which timer mode the CPUID bits `leaf1_ecx` (CPUID.1:ECX) allow.
pub fn timer_mode(leaf1_ecx: u32) -> Result<TimerMode, ApicError> {
    if leaf1_ecx & CPUID1_ECX_X2APIC == 0 {
        return Err(ApicError::NoX2apic);
    }
    Ok(if leaf1_ecx & CPUID1_ECX_TSC_DEADLINE != 0 {
        TimerMode::TscDeadline
    } else {
        TimerMode::OneShot
    })
}

/// The ICR value of a fixed interrupt `vector` to the CPU with x2APIC id `dest`.
pub fn icr(dest: u32, vector: u8) -> u64 {
    (u64::from(dest) << 32) | ICR_FIXED_ASSERT | u64::from(vector)
}

/// The LVT timer value for `mode`, masked or not.
pub fn lvt_timer(mode: TimerMode, masked: bool) -> u64 {
    let m = match mode {
        TimerMode::TscDeadline => LVT_TSC_DEADLINE,
        TimerMode::OneShot => 0,
    };
    m | u64::from(TIMER_VECTOR) | if masked { LVT_MASKED } else { 0 }
}

#[cfg(not(any(test, feature = "fuzzing")))]
mod hw {
    use super::*;

    /// IA32_APIC_BASE (MSR 0x1B) and its enable (bit 11) and x2APIC (bit 10) bits.
    const IA32_APIC_BASE: u32 = 0x1B;
    const APIC_BASE_ENABLE: u64 = 1 << 11;
    const APIC_BASE_X2APIC: u64 = 1 << 10;
    /// x2APIC registers (SDM vol. 3A, table 11-6).
    const X2APIC_ID: u32 = 0x802;
    const X2APIC_EOI: u32 = 0x80B;
    const X2APIC_SVR: u32 = 0x80F;
    const X2APIC_ICR: u32 = 0x830;
    const X2APIC_LVT_TIMER: u32 = 0x832;
    const X2APIC_TIMER_INITIAL: u32 = 0x838;
    const X2APIC_TIMER_DIVIDE: u32 = 0x83E;
    /// IA32_TSC_DEADLINE (SDM vol. 4, table 2-2).
    const IA32_TSC_DEADLINE: u32 = 0x6E0;
    /// SVR bit 8: APIC software enable.
    const SVR_ENABLE: u64 = 1 << 8;
    /// Divide configuration 0b1011: divide by 1.
    const DIVIDE_BY_1: u64 = 0b1011;

    /// Read one of this module's registers, the way the platform lets the guest
    /// ([`crate::platform::apic_msr`]).
    fn rdmsr(msr: u32) -> u64 {
        crate::platform::apic_msr(msr, None)
    }

    /// Write one of this module's registers, the way the platform lets the guest.
    ///
    /// # Safety
    /// `msr` must be one of this module's and writing `value` must be what the caller
    /// intends.
    unsafe fn wrmsr(msr: u32, value: u64) {
        crate::platform::apic_msr(msr, Some(value));
    }

    /// Turn on the x2APIC with the timer idle; returns this CPU's x2APIC id.
    ///
    /// # Safety
    /// Once per CPU, with interrupts off and the IDT's [`TIMER_VECTOR`],
    /// [`WAKE_VECTOR`] and [`SPURIOUS_VECTOR`] gates in place.
    pub unsafe fn enable(mode: TimerMode) -> u32 {
        // SAFETY: CPUID reported the x2APIC ([`timer_mode`]); enabling it and writing
        // its registers only changes how interrupts reach this CPU, which has them off.
        unsafe {
            // A TD's local APIC starts in x2APIC mode and its base is read-only
            // (docs/specs.md 6.2): it is written only when it must change.
            let base = rdmsr(IA32_APIC_BASE);
            let on = APIC_BASE_ENABLE | APIC_BASE_X2APIC;
            if base & on != on {
                wrmsr(IA32_APIC_BASE, base | on);
            }
            wrmsr(X2APIC_SVR, SVR_ENABLE | u64::from(SPURIOUS_VECTOR));
            wrmsr(X2APIC_TIMER_DIVIDE, DIVIDE_BY_1);
            // Unmasked once: the timer fires only when armed (a zero deadline or
            // count leaves it idle), so arming is one register write.
            wrmsr(X2APIC_LVT_TIMER, lvt_timer(mode, false));
            rdmsr(X2APIC_ID) as u32
        }
    }

    /// Fire the timer once at TSC value `deadline` (TSC-deadline mode) or after
    /// `count` timer ticks (one-shot mode); a zero disarms it.
    ///
    /// # Safety
    /// After [`enable`] on this CPU with the same `mode`.
    pub unsafe fn arm(mode: TimerMode, deadline: u64, count: u32) {
        // SAFETY: the x2APIC is on (caller); these writes only (re)arm the timer.
        unsafe {
            match mode {
                TimerMode::TscDeadline => wrmsr(IA32_TSC_DEADLINE, deadline),
                TimerMode::OneShot => wrmsr(X2APIC_TIMER_INITIAL, u64::from(count)),
            }
        }
    }

    /// This CPU's x2APIC id.
    ///
    /// Only after [`enable`] on this CPU.
    pub fn id() -> u32 {
        rdmsr(X2APIC_ID) as u32
    }

    /// End of interrupt.
    ///
    /// # Safety
    /// In the handler of an interrupt the local APIC delivered.
    pub unsafe fn eoi() {
        // SAFETY: writing 0 to EOI ends the interrupt in service (caller).
        unsafe { wrmsr(X2APIC_EOI, 0) }
    }

    /// Send a fixed interrupt `vector` to the CPU with x2APIC id `dest`.
    ///
    /// # Safety
    /// After [`enable`]; `vector` must have a gate that expects it.
    pub unsafe fn send(dest: u32, vector: u8) {
        // SAFETY: an ICR write sends one interrupt (caller checks the vector).
        unsafe { wrmsr(X2APIC_ICR, icr(dest, vector)) }
    }
}

#[cfg(not(any(test, feature = "fuzzing")))]
pub use hw::{arm, enable, eoi, id, send};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_mode_follows_cpuid() {
        assert_eq!(timer_mode(0), Err(ApicError::NoX2apic));
        assert_eq!(timer_mode(1 << 21), Ok(TimerMode::OneShot));
        assert_eq!(
            timer_mode((1 << 21) | (1 << 24)),
            Ok(TimerMode::TscDeadline)
        );
    }

    #[test]
    fn register_values_are_the_sdms() {
        assert_eq!(lvt_timer(TimerMode::TscDeadline, false), 0x4_0020);
        assert_eq!(lvt_timer(TimerMode::OneShot, true), 0x1_0020);
        assert_eq!(icr(3, WAKE_VECTOR), 0x0000_0003_0000_4021);
        assert_eq!(SPURIOUS_VECTOR & 0xF, 0xF);
    }
}
