//! Threads of the app: the thread table and run queue ([`threads`]) and the futex
//! wait queues ([`futex`]).
pub mod futex;
pub mod threads;

use crate::arch::idt::TrapFrame;
use core::sync::atomic::{AtomicU64, Ordering};

/// Timer and wake-up interrupts taken, for `--stats`.
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// A local APIC interrupt (`arch/apic.rs`): acknowledged and counted. Nothing arms
/// the timer or sends wake-ups yet; the scheduler will act on them here.
pub fn interrupt(frame: &mut TrapFrame) {
    let _ = frame;
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    #[cfg(not(test))]
    // SAFETY: in the handler of an interrupt the local APIC delivered (vectors 32 and
    // up have no other source: the firmware programs no other interrupt controller).
    unsafe {
        crate::arch::apic::eoi()
    };
}
