//! The scheduler on several vCPUs: each vCPU's own state, the idle context a vCPU
//! runs when no thread is runnable, the start of the vCPUs that do not boot, and the
//! wake-ups between vCPUs (`arch/smp.rs` has the machine side).
//!
//! A vCPU runs app threads exactly as one vCPU does (`sched/mod.rs`); what differs:
//! - the kernel lock passes between vCPUs; whoever takes it brings its own running
//!   thread into the shared state ([`on_cpu`]);
//! - with nothing runnable a vCPU switches to its idle context, which gives the lock
//!   up and halts until an interrupt: the blocked thread's stack is then free for
//!   any vCPU to resume it on;
//! - a thread made runnable wakes an idle vCPU, or, when all are busy, gives a busy
//!   vCPU that had no time slice one ([`kick`]); a signal for a thread running on
//!   another vCPU interrupts that vCPU ([`kick_thread`]).

use super::{arm_timer, enter, reap, switch, tick, Current};
use crate::arch::gdt::MAX_CPUS;
use crate::arch::smp;
use crate::kernel::{Kernel, KernelGuard};

/// One vCPU's scheduling state.
#[derive(Debug, Clone, Copy)]
pub struct CpuSched {
    /// The thread it runs (`None`: its idle context).
    pub current: Option<usize>,
    /// Its idle context's stack pointer while a thread runs.
    pub idle_rsp: u64,
    /// When its running thread's slice ends (CLOCK_MONOTONIC ns; 0: no other thread
    /// waits, so it has no end).
    pub slice_end: u64,
    /// When its timer is set to fire (0: not set).
    pub timer_at: u64,
    /// A thread that exited on it; its slot is freed once the vCPU left its stack.
    pub exited: Option<usize>,
    /// The clone its running thread made in the syscall in progress, started on that
    /// syscall's way out (the thread does not leave the vCPU in between).
    pub pending_clone: Option<super::PendingClone>,
}

impl CpuSched {
    const IDLE: Self = Self {
        current: None,
        idle_rsp: 0,
        slice_end: 0,
        timer_at: 0,
        exited: None,
        pending_clone: None,
    };

    /// Every vCPU idle but the first, which runs the first thread (slot 0).
    pub const fn initial() -> [Self; MAX_CPUS] {
        let mut all = [Self::IDLE; MAX_CPUS];
        all[0].current = Some(0);
        all
    }
}

/// Each vCPU's area in the kernel's address space (`docs/memory-map.md`): a guard
/// page, its exception stack (IST1), a guard page, its idle stack.
pub const CPU_AREA_VA: u64 = 0xFFFF_FFFF_D800_0000;
/// Bytes of address space per vCPU.
const CPU_AREA_SIZE: u64 = 128 * 1024;
/// The exception stack: pages 1..9; the idle stack: pages 10..18.
const IST_FIRST_PAGE: u64 = 1;
const IDLE_FIRST_PAGE: u64 = 10;
const STACK_PAGES: u64 = 8;

const _: () = assert!((IDLE_FIRST_PAGE + STACK_PAGES) * 4096 <= CPU_AREA_SIZE);
const _: () = assert!(
    CPU_AREA_VA + MAX_CPUS as u64 * CPU_AREA_SIZE <= crate::arch::syscall_entry::TRAMPOLINE_VA
);
const _: () = assert!(
    super::switch::KSTACK_VA + super::MAX_THREADS as u64 * super::switch::SLOT_SIZE <= CPU_AREA_VA
);

fn ist_top(cpu: usize) -> u64 {
    CPU_AREA_VA + cpu as u64 * CPU_AREA_SIZE + (IST_FIRST_PAGE + STACK_PAGES) * 4096
}

fn idle_top(cpu: usize) -> u64 {
    CPU_AREA_VA + cpu as u64 * CPU_AREA_SIZE + (IDLE_FIRST_PAGE + STACK_PAGES) * 4096
}

/// Map vCPU `cpu`'s stacks; `false` when memory ran out.
fn map_area(k: &mut Kernel, cpu: usize) -> bool {
    use crate::mem::paging::{NO_EXECUTE, PRESENT, WRITABLE};
    let base = CPU_AREA_VA + cpu as u64 * CPU_AREA_SIZE;
    let pages = (IST_FIRST_PAGE..IST_FIRST_PAGE + STACK_PAGES)
        .chain(IDLE_FIRST_PAGE..IDLE_FIRST_PAGE + STACK_PAGES)
        .map(|p| base + p * 4096);
    super::map_fresh_pages(k, pages, PRESENT | WRITABLE | NO_EXECUTE)
}

/// Boot, with the kernel held, once the app is loaded: start the vCPUs the host says
/// it made (`cpus`, at least 1). They need time slices (the local APIC's timer and
/// interrupts): without them (`preemption` off) the app runs on the first vCPU and
/// the others park.
pub fn bring_up(k: &mut Kernel, cpus: u32, preemption: bool) {
    if cpus <= 1 {
        smp::park_all();
        return;
    }
    if !preemption {
        let _ = k.console_write(
            2,
            b"nacre: this platform gives the firmware no local APIC timer; the app runs on one vCPU\n",
        );
        smp::park_all();
        return;
    }
    for cpu in 0..cpus as usize {
        if !map_area(k, cpu) {
            crate::fatal_error(crate::error::FwError::OutOfMemory);
        }
    }
    // The first vCPU's idle context starts in `idle_started` the first time its
    // thread has nothing to run.
    // SAFETY: the idle stack was just mapped and nothing uses it.
    k.sched.cpus[0].idle_rsp = unsafe { switch::prepare_idle(idle_top(0)) };
    smp::set_online(0, current_apic_id());
    let now = crate::time::rdtsc();
    smp::set_timeout_ticks(k.tsc_after(smp::TIMEOUT_NS).saturating_sub(now));
    let (frame, flags) = x86_64::registers::control::Cr3::read_raw();
    let cr3 = frame.start_address().as_u64() | u64::from(flags);
    smp::release(cpus, cr3, idle_top);
    crate::app::vdso::set_cpus(cpus);
}

/// This vCPU's x2APIC id.
fn current_apic_id() -> u32 {
    #[cfg(not(any(test, feature = "fuzzing")))]
    return crate::arch::apic::id();
    #[cfg(any(test, feature = "fuzzing"))]
    0
}

/// Boot, after giving up the kernel: wait until every vCPU the host said it made has
/// started. One that never does ends the run: the host did not run it.
pub fn wait_started() {
    if !smp::active() {
        return;
    }
    if !smp::wait_online() {
        let mut msg = crate::fmt::Buf::new();
        msg.push("only ")
            .dec(u64::from(smp::online()))
            .push(" of the ")
            .dec(u64::from(smp::cpus()))
            .push(" vCPUs the host said it made started (vCPU ")
            .dec(u64::from(smp::arrived().min(smp::cpus())))
            .push(" never ran); stopping");
        crate::fatal(msg.as_str());
    }
}

/// A vCPU that does not boot, from `_start` (`main.rs`) on its idle stack with boot's
/// page tables: load its descriptor tables, CPU features, syscall entry and local
/// APIC, let the platform know it, then idle until there is a thread to run.
pub extern "C" fn ap_main(index: u32) -> ! {
    let cpu = (index as usize).min(MAX_CPUS - 1);
    // SAFETY: once on this vCPU, which boot released with its stacks mapped; the
    // GDT and IDT are complete (boot filled them before any vCPU was released).
    unsafe {
        crate::arch::gdt::init_ap(cpu, ist_top(cpu));
        crate::arch::idt::load();
    }
    crate::boot::enable_cpu_features();
    // SAFETY: the GDT and this vCPU's TSS are loaded.
    unsafe {
        crate::arch::syscall_entry::init(
            crate::arch::syscall_entry::via_trampoline(),
            idle_top(cpu),
        )
    };
    let mut guard = crate::kernel::lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("a vCPU started before boot finished")
    };
    // What the platform keeps per vCPU first: on SEV-SNP the local APIC is reached
    // through this vCPU's GHCB.
    if let Err(e) = k.plat.start_cpu() {
        crate::fatal_error(e);
    }
    #[cfg(not(any(test, feature = "fuzzing")))]
    // SAFETY: interrupts are off and the IDT's gates are in place; boot checked the
    // x2APIC and its TSC-deadline timer on the first vCPU, and every vCPU has the
    // same CPUID.
    let apic_id = unsafe { crate::arch::apic::enable(crate::arch::apic::TimerMode::TscDeadline) };
    #[cfg(any(test, feature = "fuzzing"))]
    let apic_id = 0;
    smp::set_online(cpu, apic_id);
    idle_loop(cpu, guard)
}

/// The first vCPU's idle context, the first time its thread had nothing to run: it
/// was switched to with the kernel held (see `thread_started`).
pub extern "C" fn idle_started() -> ! {
    // SAFETY: as in `thread_started`: the switching thread's guard is suspended for
    // good on its own stack; the lock is taken again at once.
    unsafe { crate::kernel::KERNEL.force_unlock() };
    let guard = crate::kernel::lock();
    idle_loop(crate::arch::gdt::cpu_index(), guard)
}

/// The idle context of vCPU `me`: run a runnable thread, else halt until an
/// interrupt (its timer set for the earliest deadline), with the kernel given up.
fn idle_loop(me: usize, mut guard: KernelGuard) -> ! {
    loop {
        let Some(k) = guard.as_mut() else {
            crate::fatal("the idle loop ran before boot finished")
        };
        reap(k);
        let now = k.monotonic_ns();
        if k.sched.cpus[me].timer_at <= now {
            // It fired (or was never set): arm it again if needed.
            k.sched.cpus[me].timer_at = 0;
        }
        tick(k);
        crate::syscall::socket::take_events(k);
        if let Some(next) = k.sched.threads.pick() {
            k.sched.cpus[me].slice_end = 0;
            arm_timer(k);
            let next_rsp = enter(k, next, true);
            let save = &raw mut k.sched.cpus[me].idle_rsp;
            // SAFETY: `next` was blocked or preempted with its stack pointer saved (or
            // prepared), and no vCPU runs it; the idle context's slot is this vCPU's.
            unsafe { switch::switch(k, save, next_rsp) };
            // Back: a thread of this vCPU had nothing to run (`to_idle`).
            continue;
        }
        if k.sched.threads.next_deadline().is_none()
            && crate::syscall::signal::alarm_deadline(k).is_none()
            && !k.net.any_armed()
            && (0..smp::online() as usize).all(|c| k.sched.cpus[c].current.is_none())
        {
            let _ = k.console_write(
                2,
                b"nacre: every thread of the app waits for something no thread can do; stopping it\n",
            );
            crate::syscall::exit_app(k, 128 + 9);
        }
        arm_timer(k);
        smp::set_idle(me, true);
        drop(guard);
        smp::wait_for_interrupt();
        smp::set_idle(me, false);
        guard = crate::kernel::lock();
    }
}

/// The running thread cannot go on and nothing else is runnable: give the vCPU to
/// its idle context. Returns when a vCPU (perhaps another) runs the thread again.
pub fn to_idle(k: &mut Kernel) {
    let me = k.sched.last_cpu;
    let prev = k.sched.current();
    let prev_block = k.sched.block(prev);
    k.sched.cpus[me].current = None;
    k.sched.threads.set_current(None);
    let idle = k.sched.cpus[me].idle_rsp;
    // SAFETY: the idle context's stack pointer was saved by its own switch to a
    // thread (or prepared by `bring_up`), and it does not run; `prev`'s block is
    // mapped.
    unsafe { switch::switch(k, &raw mut (*prev_block).ctl.saved_rsp, idle) };
    super::resumed(k);
}

/// The kernel was taken by vCPU `cpu_index()`: if it is not the one that held it
/// last, make its running thread the current one.
pub fn on_cpu(k: &mut Kernel) {
    let me = crate::arch::gdt::cpu_index();
    if k.sched.last_cpu == me {
        return;
    }
    k.sched.last_cpu = me;
    let slot = k.sched.cpus[me].current;
    k.sched.threads.set_current(slot);
    if let Some(slot) = slot {
        point_at(k, slot);
    }
}

/// Point the kernel's per-thread references at the block of the thread in `slot`.
pub fn point_at(k: &mut Kernel, slot: usize) {
    let block = k.sched.block(slot);
    // SAFETY: the slot holds a live thread, so its block is mapped; only the holder of
    // the kernel reaches it, through these two references.
    unsafe {
        Current::point(&mut k.thread, &raw mut (*block).ctl);
        Current::point(&mut k.sig.thread, &raw mut (*block).sig);
    }
}

/// A thread became runnable: wake an idle vCPU to run it, or, if every other vCPU
/// is busy, give one that has no time slice one, so that its timer ends it.
pub fn kick(k: &mut Kernel) {
    let me = k.sched.last_cpu;
    if let Some(cpu) = smp::idle_cpu(me) {
        // Woken once: it looks at the run queue when it takes the kernel.
        smp::set_idle(cpu, false);
        smp::wake(cpu);
        return;
    }
    let now = k.monotonic_ns();
    let busy = (0..smp::online() as usize)
        .find(|&c| c != me && k.sched.cpus[c].current.is_some() && k.sched.cpus[c].slice_end == 0);
    if let Some(cpu) = busy {
        k.sched.cpus[cpu].slice_end = now.saturating_add(super::SLICE_NS);
        smp::wake(cpu);
    }
}

/// Something for the thread in `slot` arrived (a signal): if it runs on another
/// vCPU, interrupt that vCPU so that it sees it on its way back to the app.
pub fn kick_thread(k: &mut Kernel, slot: usize) {
    if !smp::active() {
        return;
    }
    let me = k.sched.last_cpu;
    if let Some(cpu) =
        (0..smp::online() as usize).find(|&c| c != me && k.sched.cpus[c].current == Some(slot))
    {
        smp::wake(cpu);
    }
}
