//! Several vCPUs: how the ones that do not boot start, and what they tell each other.
//!
//! Every vCPU enters the firmware at the same place (`_start` in `main.rs`, after the
//! platform's 32-bit entry). The first to get there claims the boot; each later one
//! takes the next index, 1 and up, and waits, spinning, for the word
//! [`NACRE_AP_STACKS`] holds for it: 0 while the first vCPU boots, [`PARK`] when it
//! is not wanted (the host made more vCPUs than it said, or time slices cannot be
//! used), else the top of the stack to start on. It then loads the page tables in
//! [`NACRE_AP_CR3`] and runs [`crate::sched::cpu::ap_main`]. The boot vCPU waits, before
//! the app starts, for every vCPU the host said it made; one that never comes ends
//! the run with a message.
//!
//! The vCPUs share one kernel lock (`kernel.rs`): the app's threads run in ring 3 on
//! all of them at once, and the firmware on one at a time. What a vCPU needs from
//! another goes by inter-processor interrupt on [`WAKE_VECTOR`]: run a thread that
//! became runnable, see a signal, and flush its TLB after the app's mappings shrank
//! ([`shootdown`]). A vCPU that spins for the kernel lock, with interrupts off,
//! answers flush requests as it spins, so the holder's wait for them ends.
//!
//! Interrupts and their timing are host input. A wake-up that never comes delays a
//! thread until a timer or another event makes its vCPU look again; a flush that is
//! never acknowledged within [`TIMEOUT_NS`] ends the run, since pages could
//! otherwise be reused while a stale mapping still reaches them.

use super::apic::WAKE_VECTOR;
use super::gdt::{cpu_index, MAX_CPUS};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The word of a vCPU that is not wanted: it halts with interrupts off for good.
pub const PARK: u64 = 1;

/// Claimed (bit 0) by the vCPU that boots.
#[no_mangle]
static NACRE_BOOT_CLAIMED: AtomicU32 = AtomicU32::new(0);
/// The index the next vCPU to arrive takes.
#[no_mangle]
static NACRE_AP_NEXT: AtomicU32 = AtomicU32::new(1);
/// Each vCPU's start word (see the module docs).
#[no_mangle]
static NACRE_AP_STACKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The page tables a starting vCPU loads (CR3, with the platform's bits).
#[no_mangle]
static NACRE_AP_CR3: AtomicU64 = AtomicU64::new(0);

/// vCPUs in use: 1 until boot starts the others.
static CPUS: AtomicU32 = AtomicU32::new(1);
/// vCPUs that finished starting (the boot vCPU counts from the start).
static ONLINE: AtomicU32 = AtomicU32::new(1);
/// Each vCPU's x2APIC id, the destination of its interrupts.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Whether each vCPU is idle (halted or about to, waiting for an interrupt).
static IDLE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The last flush request, and the last each vCPU carried out.
static FLUSH_REQUEST: AtomicU64 = AtomicU64::new(0);
static FLUSH_DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Whether the app's mappings shrank since the last shoot-down.
static SHOOTDOWN_PENDING: AtomicBool = AtomicBool::new(false);
/// Shoot-downs (and membarrier round trips) made, for `--stats`.
static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);

/// The count of shoot-downs.
pub fn shootdowns() -> &'static AtomicU64 {
    &SHOOTDOWNS
}

/// How long the holder of the kernel waits for the other vCPUs' TLB flushes, and
/// boot for the vCPUs the host said it made.
pub const TIMEOUT_NS: u64 = 5_000_000_000;
/// [`TIMEOUT_NS`] in TSC ticks, by the firmware's calibration (set by boot).
static TIMEOUT_TICKS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Set [`TIMEOUT_NS`]'s length in TSC ticks.
pub fn set_timeout_ticks(ticks: u64) {
    TIMEOUT_TICKS.store(ticks.max(1), Ordering::Relaxed);
}

/// Whether [`TIMEOUT_NS`] passed since TSC value `start`.
fn timed_out(start: u64) -> bool {
    crate::time::rdtsc().wrapping_sub(start) > TIMEOUT_TICKS.load(Ordering::Relaxed)
}

/// Wait until every vCPU in use has started; `false` if [`TIMEOUT_NS`] passed first.
pub fn wait_online() -> bool {
    let start = crate::time::rdtsc();
    while online() < cpus() {
        if timed_out(start) {
            return false;
        }
        poll_flush();
        core::hint::spin_loop();
    }
    true
}

/// The vCPU that last took the kernel lock (with several vCPUs).
static HOLDER: AtomicU32 = AtomicU32::new(0);

/// Record that this vCPU holds the kernel lock.
#[inline]
pub fn set_holder() {
    HOLDER.store(cpu_index() as u32, Ordering::Relaxed);
}

/// A fatal error, with the kernel locked: whether the lock is this vCPU's (the code
/// that failed holds it and never runs again). If another vCPU holds it, wait up to
/// [`TIMEOUT_NS`] until `released()` says it gave the lock up, and say `false`.
pub fn lock_is_mine_or_wait(released: impl Fn() -> bool) -> bool {
    if !active() || HOLDER.load(Ordering::Relaxed) as usize == cpu_index() {
        return true;
    }
    let start = crate::time::rdtsc();
    while !released() && !timed_out(start) {
        poll_flush();
        core::hint::spin_loop();
    }
    false
}

/// Whether more than one vCPU runs the app.
#[inline]
pub fn active() -> bool {
    CPUS.load(Ordering::Relaxed) > 1
}

/// vCPUs in use.
pub fn cpus() -> u32 {
    CPUS.load(Ordering::Relaxed)
}

/// vCPUs that have started.
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

/// vCPUs that reached the firmware's entry (started or not yet).
pub fn arrived() -> u32 {
    NACRE_AP_NEXT.load(Ordering::Acquire)
}

/// Non-zero when a parked vCPU must ask the VMM to halt it rather than execute HLT
/// (a TD on hardware, where HLT raises #VE): read by the park loop in `_start`.
#[no_mangle]
static NACRE_PARK_VIA_VMM: AtomicU8 = AtomicU8::new(0);

/// Whether the firmware runs in a TD on hardware.
fn td_on_hardware() -> bool {
    crate::platform::running()
        == Some(crate::platform::Running {
            kind: nacre_shared_abi::boot::PlatformKind::Tdx,
            backend: crate::platform::Backend::Hardware,
        })
}

/// Set how parked vCPUs halt, before any is told to park.
fn set_park_mode() {
    NACRE_PARK_VIA_VMM.store(u8::from(td_on_hardware()), Ordering::Release);
}

/// Let vCPUs `1..cpus` start on the stacks `stack_top(i)` with page tables `cr3`; every
/// other index parks. Called once by the boot vCPU, with the kernel held.
pub fn release(cpus: u32, cr3: u64, mut stack_top: impl FnMut(usize) -> u64) {
    set_park_mode();
    NACRE_AP_CR3.store(cr3, Ordering::Release);
    CPUS.store(cpus, Ordering::Relaxed);
    for (i, word) in NACRE_AP_STACKS.iter().enumerate().skip(1) {
        let v = if i < cpus as usize {
            stack_top(i)
        } else {
            PARK
        };
        word.store(v, Ordering::Release);
    }
}

/// Park every vCPU but the boot one (one vCPU runs the app).
pub fn park_all() {
    set_park_mode();
    for word in NACRE_AP_STACKS.iter().skip(1) {
        word.store(PARK, Ordering::Release);
    }
}

/// Record this vCPU's x2APIC id and count it started.
pub fn set_online(index: usize, apic_id: u32) {
    APIC_IDS[index].store(apic_id, Ordering::Relaxed);
    if index != 0 {
        ONLINE.fetch_add(1, Ordering::Release);
    }
}

/// Mark this vCPU idle or not.
pub fn set_idle(index: usize, idle: bool) {
    IDLE[index].store(idle, Ordering::Release);
}

/// An idle vCPU other than `except`, if any.
pub fn idle_cpu(except: usize) -> Option<usize> {
    (0..online() as usize).find(|&i| i != except && IDLE[i].load(Ordering::Acquire))
}

/// Send vCPU `index` the wake-up interrupt.
pub fn wake(index: usize) {
    #[cfg(not(any(test, feature = "fuzzing")))]
    // SAFETY: the x2APIC of every started vCPU is on (`ap_main`, boot); the wake-up
    // vector has a gate that expects it.
    unsafe {
        super::apic::send(APIC_IDS[index].load(Ordering::Relaxed), WAKE_VECTOR)
    };
    #[cfg(any(test, feature = "fuzzing"))]
    let _ = (index, WAKE_VECTOR);
}

/// Note that a mapping of the app's was removed or narrowed: the other vCPUs must
/// flush their TLBs before the kernel is given up or a frame is reused.
#[inline]
pub fn note_unmapped() {
    if active() {
        SHOOTDOWN_PENDING.store(true, Ordering::Relaxed);
    }
}

/// Whether a shoot-down is due.
#[inline]
pub fn shootdown_pending() -> bool {
    SHOOTDOWN_PENDING.load(Ordering::Relaxed)
}

/// Have every other started vCPU flush its TLB, and wait until each has. The caller
/// holds the kernel.
pub fn shootdown() {
    SHOOTDOWN_PENDING.store(false, Ordering::Relaxed);
    SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
    let me = cpu_index();
    let request = FLUSH_REQUEST.fetch_add(1, Ordering::AcqRel) + 1;
    FLUSH_DONE[me].store(request, Ordering::Release);
    let n = online() as usize;
    for i in (0..n).filter(|&i| i != me) {
        wake(i);
    }
    let start = crate::time::rdtsc();
    for i in (0..n).filter(|&i| i != me) {
        while FLUSH_DONE[i].load(Ordering::Acquire) < request {
            core::hint::spin_loop();
            if timed_out(start) {
                crate::fatal(
                    "a vCPU never acknowledged a TLB flush (its interrupts are not delivered)",
                );
            }
        }
    }
}

/// Carry out a flush request this vCPU has not yet: reload CR3, which drops every
/// TLB entry of the app's (none is global).
#[inline]
pub fn poll_flush() {
    let request = FLUSH_REQUEST.load(Ordering::Acquire);
    let me = cpu_index();
    if FLUSH_DONE[me].load(Ordering::Relaxed) < request {
        #[cfg(not(any(test, feature = "fuzzing")))]
        {
            let (frame, flags) = x86_64::registers::control::Cr3::read_raw();
            // SAFETY: writing CR3 back as read only flushes the TLB.
            unsafe { x86_64::registers::control::Cr3::write_raw(frame, flags) };
        }
        FLUSH_DONE[me].store(request, Ordering::Release);
    }
}

/// Wait for an interrupt with interrupts on, then turn them off again. STI's one
/// instruction of delay makes STI; HLT atomic: an interrupt that became pending
/// before (while interrupts were off) ends the HLT rather than being taken before it.
/// In a TD on hardware, where HLT raises #VE, the VMM halts the vCPU instead
/// ([`crate::platform::tdx::halt_until_interrupt`]).
pub fn wait_for_interrupt() {
    #[cfg(not(any(test, feature = "fuzzing")))]
    if td_on_hardware() {
        // HLT raises #VE in a TD: the VMM halts it instead.
        crate::platform::tdx::halt_until_interrupt();
        return;
    }
    #[cfg(not(any(test, feature = "fuzzing")))]
    // SAFETY: the gates of every vector are in place; an interrupt taken here runs on
    // this stack (the asm block may use the stack below RSP, so nothing of the
    // compiler's lives there) and returns here.
    unsafe {
        core::arch::asm!("sti", "hlt", "cli")
    };
}
