//! Threads of the app: the thread table and run queue ([`threads`]), the futex wait
//! queues ([`futex`]), kernel stacks and the switch ([`switch`]), and the scheduler
//! that joins them to the kernel.
//!
//! Each vCPU runs the threads in turn. A thread runs until it blocks (a futex wait, a
//! sleep, a wait for a signal), yields, exits or its time slice ends; then the next
//! runnable thread in FIFO order runs on that vCPU, or, with several vCPUs and none
//! runnable, the vCPU's idle context ([`cpu`]) waits for an interrupt. Ring 0 never
//! takes interrupts but where it waits for one, so the kernel state needs no locking
//! beyond the one kernel lock, which a vCPU holds from a thread's entry into the
//! firmware until its return to the app: a thread that blocks hands it to the thread
//! (or idle context) it switches to, which is itself inside the firmware (blocked
//! earlier, or starting), and which gives it up on its own way out. Which thread runs
//! on which vCPU is per-vCPU state ([`cpu::CpuSched`]), brought into the shared state
//! by whichever vCPU takes the lock ([`cpu::on_cpu`]).
//!
//! Per-thread state (signal mask and pending set, `set_tid_address`'s pointer, the FS
//! and GS bases, the name) lives in the thread's [`ThreadBlock`]; the kernel reaches
//! the running thread's through [`Current`] references that a switch repoints, so a
//! switch copies nothing.

pub mod cpu;
pub mod futex;
pub mod switch;
pub mod threads;

use crate::arch::fpu::FxImage;
use crate::arch::idt::TrapFrame;
use crate::kernel::{Kernel, KERNEL};
use crate::syscall::signal::ThreadSignals;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU64, Ordering};
use futex::Futexes;
use threads::{Threads, Wake};

/// Most threads at once.
pub const MAX_THREADS: usize = 512;

/// Timer and wake-up interrupts taken, for `--stats`.
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Thread switches, for `--stats`.
pub static SWITCHES: AtomicU64 = AtomicU64::new(0);
/// Slices ended by the timer, for `--stats`.
pub static PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
/// Threads the app made, for `--stats`.
pub static CREATED: AtomicU64 = AtomicU64::new(0);

/// Interrupts by kind, for `--stats`: the timer's, the wake-ups, any other vector.
pub static TIMER_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
pub static WAKE_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
pub static OTHER_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Futex waits that blocked, for `--stats`.
pub static FUTEX_WAITS: AtomicU64 = AtomicU64::new(0);

/// The counters the exit hostcall reports, in the order of shared-abi's
/// `FIRMWARE_COUNTERS` (each saturated to 32 bits).
pub fn counters() -> [u32; 9] {
    [
        &CREATED,
        &SWITCHES,
        &PREEMPTIONS,
        &INTERRUPTS,
        &TIMER_INTERRUPTS,
        &WAKE_INTERRUPTS,
        &OTHER_INTERRUPTS,
        &FUTEX_WAITS,
        crate::arch::smp::shootdowns(),
    ]
    .map(|c| u32::try_from(c.load(Ordering::Relaxed)).unwrap_or(u32::MAX))
}

/// A thread's own state besides its signals.
#[derive(Debug)]
pub struct ThreadCtl {
    /// `set_tid_address` / CLONE_CHILD_CLEARTID: zeroed and futex-woken at exit.
    pub clear_child_tid: u64,
    /// `set_robust_list`'s head.
    pub robust_list: u64,
    /// `rseq`'s area and the signature its abort handlers carry.
    pub rseq: u64,
    pub rseq_sig: u32,
    /// The vCPU its rseq area names, and whether the area has `mm_cid`.
    pub rseq_cpu: u32,
    pub rseq_ext: bool,
    /// The name (prctl PR_SET_NAME / PR_GET_NAME): at most 15 bytes and a NUL.
    pub comm: [u8; 16],
    /// The app's FS and GS bases (arch_prctl, CLONE_SETTLS).
    pub fs_base: u64,
    pub gs_base: u64,
    /// The kernel stack pointer while switched out.
    saved_rsp: u64,
    /// Whether its extended state waits in the extended-state window (it was
    /// preempted) to be loaded when it runs again.
    xsaved: bool,
}

impl ThreadCtl {
    /// A thread with nothing set.
    pub const fn new() -> Self {
        Self {
            clear_child_tid: 0,
            robust_list: 0,
            rseq: 0,
            rseq_sig: 0,
            rseq_cpu: 0,
            rseq_ext: false,
            comm: [0; 16],
            fs_base: 0,
            gs_base: 0,
            saved_rsp: 0,
            xsaved: false,
        }
    }
}

impl ThreadCtl {
    /// A new thread's, from its parent's: the name and GS base inherited.
    pub fn child(&self, clear_child_tid: u64, fs_base: u64) -> Self {
        Self {
            clear_child_tid,
            comm: self.comm,
            fs_base,
            gs_base: self.gs_base,
            ..Self::new()
        }
    }
}

impl Default for ThreadCtl {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything a thread owns besides its kernel stack.
#[derive(Debug)]
#[repr(C)]
pub struct ThreadBlock {
    pub ctl: ThreadCtl,
    pub sig: ThreadSignals,
}

impl ThreadBlock {
    /// A thread with nothing set, blocking no signal.
    pub const fn new() -> Self {
        Self {
            ctl: ThreadCtl::new(),
            sig: ThreadSignals::new(0),
        }
    }
}

impl Default for ThreadBlock {
    fn default() -> Self {
        Self::new()
    }
}

/// A part of the running thread's [`ThreadBlock`], reached through an address the
/// scheduler changes at each switch.
///
/// The address is that of a `T` in a mapped block from the moment boot points it
/// (before the first use) on; only the holder of the kernel (and so of this value)
/// dereferences it, and no two `Current`s point at the same part, so the references
/// it hands out are unique like those of a field.
pub struct Current<T> {
    addr: u64,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Current<T> {
    /// Not pointing anywhere yet: must be pointed before use.
    pub const fn unset() -> Self {
        Self {
            addr: 0,
            _kind: PhantomData,
        }
    }

    /// Point at `part`.
    ///
    /// # Safety
    /// `part` is a valid, aligned `T` that stays mapped, reached through no other
    /// `Current` or reference while this one points at it.
    pub unsafe fn point(&mut self, part: *mut T) {
        self.addr = part as u64;
    }

    /// Where it points.
    pub fn as_ptr(&self) -> *mut T {
        self.addr as *mut T
    }
}

impl<T> core::fmt::Debug for Current<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Current({:#x})", self.addr)
    }
}

impl<T> Deref for Current<T> {
    type Target = T;
    fn deref(&self) -> &T {
        assert!(
            self.addr != 0,
            "per-thread state used before boot pointed it"
        );
        // SAFETY: the type's invariant: a valid `T` reached only through this value.
        unsafe { &*(self.addr as *const T) }
    }
}

impl<T> DerefMut for Current<T> {
    fn deref_mut(&mut self) -> &mut T {
        assert!(
            self.addr != 0,
            "per-thread state used before boot pointed it"
        );
        // SAFETY: as for `deref`; `&mut self` makes the borrow unique.
        unsafe { &mut *(self.addr as *mut T) }
    }
}

/// A thread whose first return to the app waits for its parent's registers: the
/// parent's clone sets it, the parent's syscall exit builds the child's frame.
#[derive(Debug, Clone, Copy)]
pub struct PendingClone {
    pub slot: usize,
    /// The child's stack pointer; 0 keeps the parent's.
    pub rsp: u64,
}

/// The scheduler's state.
#[derive(Debug)]
pub struct Sched {
    pub threads: Threads<MAX_THREADS>,
    /// Futex waiters, by slot.
    pub futexes: Futexes<MAX_THREADS>,
    /// Each slot's block (0: the slot was never mapped).
    blocks: [u64; MAX_THREADS],
    /// Top of slot 0's kernel stack (the boot stack).
    boot_stack_top: u64,
    /// Whether each slot's area in the extended-state window is mapped.
    xstate_mapped: [bool; MAX_THREADS],
    /// Time slices: off where the local APIC's TSC-deadline timer cannot be used.
    preemption: bool,
    /// Each vCPU's own scheduling state.
    pub cpus: [cpu::CpuSched; crate::arch::gdt::MAX_CPUS],
    /// The vCPU that holds the kernel (as [`cpu::on_cpu`] last recorded it).
    pub last_cpu: usize,
}

impl Sched {
    /// One thread, `tid`, in slot 0, whose block is `block` and kernel stack ends at
    /// `stack_top`.
    pub const fn new(tid: u32) -> Self {
        Self {
            threads: Threads::new(tid),
            futexes: Futexes::new(),
            blocks: [0; MAX_THREADS],
            boot_stack_top: 0,
            xstate_mapped: [false; MAX_THREADS],
            preemption: false,
            cpus: cpu::CpuSched::initial(),
            last_cpu: 0,
        }
    }

    /// The scheduling state of the vCPU that holds the kernel.
    pub fn here(&mut self) -> &mut cpu::CpuSched {
        &mut self.cpus[self.last_cpu]
    }

    /// Record the first thread's block and kernel stack.
    pub fn set_boot_thread(&mut self, block: *mut ThreadBlock, stack_top: u64) {
        self.blocks[0] = block as u64;
        self.boot_stack_top = stack_top;
    }

    /// The running thread's slot.
    pub fn current(&self) -> usize {
        self.threads.current()
    }

    /// The running thread's id.
    pub fn current_tid(&self) -> u32 {
        self.threads.get(self.threads.current()).tid
    }

    /// The block of the thread in `slot` (mapped, since a thread lives there).
    pub fn block(&self, slot: usize) -> *mut ThreadBlock {
        self.blocks[slot] as *mut ThreadBlock
    }

    fn stack_top(&self, slot: usize) -> u64 {
        if slot == 0 {
            self.boot_stack_top
        } else {
            switch::stack_top(slot)
        }
    }
}

/// Map slot `slot`'s block and kernel stack if this is its first thread. `false`
/// when memory ran out.
pub fn map_slot(k: &mut Kernel, slot: usize) -> bool {
    use crate::mem::paging::{NO_EXECUTE, PRESENT, WRITABLE};
    if k.sched.blocks[slot] != 0 {
        return true;
    }
    let block = switch::block_va(slot);
    let pages = (0..switch::BLOCK_PAGES)
        .map(|i| block + i * 4096)
        .chain((0..switch::STACK_PAGES).map(|i| switch::stack_bottom(slot) + i * 4096));
    if !map_fresh_pages(k, pages, PRESENT | WRITABLE | NO_EXECUTE) {
        return false;
    }
    k.sched.blocks[slot] = block;
    true
}

/// Map a freshly allocated private frame at each of `pages` with `flags`; `false`
/// when memory ran out.
fn map_fresh_pages(k: &mut Kernel, pages: impl Iterator<Item = u64>, flags: u64) -> bool {
    use crate::mem::frames::FrameTables;
    for va in pages {
        let Ok(gpa) = k.frames.alloc(&mut *k.plat) else {
            return false;
        };
        let mut alloc = FrameTables {
            frames: &mut k.frames,
            plat: &mut *k.plat,
        };
        if k.pt.map_4k(va, gpa, flags, true, &mut alloc).is_none() {
            k.frames.free(gpa);
            return false;
        }
    }
    true
}

/// Run the next thread if the current one cannot go on (blocked, exited) or has
/// yielded; returns when the current thread runs again (at once if nothing else is
/// runnable and it can). With nothing runnable the CPU idles until the earliest
/// deadline (with several vCPUs, in its idle context, and the thread may go on on
/// another vCPU); with no deadline either, no thread can ever run again and the app
/// is stopped with a message.
pub fn schedule(k: &mut Kernel) {
    loop {
        tick(k);
        crate::syscall::socket::take_events(k);
        match k.sched.threads.switch() {
            Some((prev, next)) => {
                // The incoming thread's slice, timed before the switch: a new thread
                // returns to the app without coming back here.
                k.sched.here().slice_end = 0;
                arm_timer(k);
                if prev != next {
                    switch_to(k, prev, next);
                }
                return;
            }
            None if crate::arch::smp::active() => {
                cpu::to_idle(k);
                return;
            }
            None => idle(k),
        }
    }
}

/// The length of a time slice when other threads wait to run.
pub const SLICE_NS: u64 = 10_000_000;

/// Turn time slices on (boot, where the local APIC's TSC-deadline timer is usable).
pub fn enable_preemption(k: &mut Kernel) {
    k.sched.preemption = true;
}

/// Set the timer for the next thing that needs the CPU while a thread runs: the end
/// of its slice when other threads wait, a blocked thread's deadline, the interval
/// timer. Each is checked again when the timer fires, so a tick that comes early or
/// was never asked for changes nothing, and one that is late only delays.
fn arm_timer(k: &mut Kernel) {
    if !k.sched.preemption {
        return;
    }
    let waiting = k.sched.threads.runnable() > 0;
    if waiting && crate::arch::smp::active() {
        cpu::kick(k);
    }
    if !waiting {
        k.sched.here().slice_end = 0;
    }
    let deadline = k.sched.threads.next_deadline();
    let alarm = crate::syscall::signal::alarm_deadline(k);
    if !waiting && deadline.is_none() && alarm.is_none() {
        // Nothing to time (a tick already set stays: it changes nothing).
        return;
    }
    let now = k.monotonic_ns();
    let busy = k.sched.threads.has_current();
    let here = k.sched.here();
    if waiting && busy && here.slice_end == 0 {
        here.slice_end = now.saturating_add(SLICE_NS);
    }
    let mut want = u64::MAX;
    for t in [here.slice_end, deadline.unwrap_or(0), alarm.unwrap_or(0)] {
        if t != 0 {
            want = want.min(t);
        }
    }
    if want == u64::MAX || (here.timer_at != 0 && here.timer_at <= want) {
        return;
    }
    here.timer_at = want;
    let deadline = k.tsc_after(want.saturating_sub(now));
    #[cfg(not(any(test, feature = "fuzzing")))]
    // SAFETY: preemption is on only after boot enabled the x2APIC in TSC-deadline
    // mode on this CPU.
    unsafe {
        crate::arch::apic::arm(crate::arch::apic::TimerMode::TscDeadline, deadline, 0)
    };
    #[cfg(any(test, feature = "fuzzing"))]
    let _ = deadline;
}

/// Where slot `slot` saves its extended state in the extended-state window.
fn xstate_va(slot: usize) -> u64 {
    crate::mem::user::XSTATE_WINDOW_VA + slot as u64 * crate::mem::user::XSTATE_SLOT
}

/// Map slot `slot`'s area in the extended-state window if it is not yet; `false`
/// when memory ran out.
fn map_xstate(k: &mut Kernel, slot: usize) -> bool {
    use crate::mem::paging::{NO_EXECUTE, PRESENT, USER, WRITABLE};
    if k.sched.xstate_mapped[slot] {
        return true;
    }
    let size = crate::arch::fpu::state_size();
    if size > crate::mem::user::XSTATE_SLOT {
        return false;
    }
    let base = xstate_va(slot);
    let flags = PRESENT | WRITABLE | USER | NO_EXECUTE;
    if !map_fresh_pages(k, (base..base + size).step_by(4096), flags) {
        return false;
    }
    k.sched.xstate_mapped[slot] = true;
    true
}

/// The running thread's slice ended (the timer interrupted it in the app): save its
/// whole register state and let the next runnable thread run; it runs again after
/// the others waiting now.
fn preempt(k: &mut Kernel) {
    let slot = k.sched.current();
    if crate::arch::fpu::xfeatures() != 0 && map_xstate(k, slot) {
        let saved = crate::arch::fpu::save_for_switch(k, xstate_va(slot));
        k.thread.xsaved = saved == crate::arch::upcall::Outcome::Done;
    }
    PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
    schedule(k);
}

/// Expire deadlines and fire the interval timer.
fn tick(k: &mut Kernel) {
    if let Some(earliest) = k.sched.threads.next_deadline() {
        let now = k.monotonic_ns();
        if now >= earliest {
            let Sched {
                threads, futexes, ..
            } = &mut *k.sched;
            threads.expire(now, &mut |slot| {
                futexes.cancel(slot as u32);
            });
        }
    }
    crate::syscall::signal::fire_alarm(k);
}

/// How long an idle wait that only the host can end sleeps at a time.
const HOST_WAIT_NS: u64 = 60 * crate::time::NS_PER_SEC;

/// Nothing can run: sleep until the earliest deadline or the timer.
fn idle(k: &mut Kernel) {
    let deadline = k.sched.threads.next_deadline();
    let alarm = crate::syscall::signal::alarm_deadline(k);
    let until = match (deadline, alarm) {
        (Some(d), Some(a)) => d.min(a),
        (Some(t), None) | (None, Some(t)) => t,
        // Only the host can end this wait: a socket event ends the sleep early.
        (None, None) if k.net.any_armed() => k.monotonic_ns().saturating_add(HOST_WAIT_NS),
        (None, None) => {
            let _ = k.console_write(
                2,
                b"nacre: every thread of the app waits for something no thread can do; stopping it\n",
            );
            crate::syscall::exit_app(k, 128 + 9);
        }
    };
    k.sleep_until(until);
}

/// Give the CPU from `prev` to `next` (both already marked by the thread table).
fn switch_to(k: &mut Kernel, prev: usize, next: usize) {
    let prev_block = k.sched.block(prev);
    let next_rsp = enter(k, next, false);
    // SAFETY: `next_rsp` was saved by a switch away from `next` or prepared for its
    // first run, and `next` is not running; `prev`'s block is mapped.
    unsafe { switch::switch(k, &raw mut (*prev_block).ctl.saved_rsp, next_rsp) };
    resumed(k);
}

/// Make `next` (marked running by the thread table) the thread of the vCPU that
/// holds the kernel: its FS and GS bases, its state reached through [`Current`], its
/// kernel stack for syscalls and interrupts. Returns its saved stack pointer, to
/// switch to. `from_idle`: the vCPU ran no thread, so its FS and GS bases are not
/// those of the kernel's current thread.
fn enter(k: &mut Kernel, next: usize, from_idle: bool) -> u64 {
    use x86_64::registers::model_specific::{FsBase, GsBase};
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    let next_block = k.sched.block(next);
    // SAFETY: the slot holds a live thread, so its block is mapped; the kernel (held
    // here) is the only user of blocks.
    let (fs, gs, next_rsp) = unsafe {
        let c = &(*next_block).ctl;
        (c.fs_base, c.gs_base, c.saved_rsp)
    };
    // The app's alone (the firmware addresses nothing through FS or GS); user
    // addresses, as arch_prctl and clone check.
    if from_idle || fs != k.thread.fs_base {
        FsBase::write(x86_64::VirtAddr::new_truncate(fs));
    }
    if from_idle || gs != k.thread.gs_base {
        GsBase::write(x86_64::VirtAddr::new_truncate(gs));
    }
    k.sched.here().current = Some(next);
    cpu::point_at(k, next);
    if crate::arch::smp::active() {
        crate::syscall::process::rseq_moved(k);
    }
    let top = k.sched.stack_top(next);
    crate::arch::syscall_entry::set_kernel_stack(top);
    crate::arch::gdt::set_rsp0(top);
    // The incoming thread's exit work is not known here: let its exit path ask.
    crate::syscall::signal::set_hint_here(true);
    next_rsp
}

/// Running again after a switch away (on whichever vCPU took the thread back):
/// free the slot of a thread that exited on this vCPU before, load the extended
/// state saved when the thread was preempted.
fn resumed(k: &mut Kernel) {
    reap(k);
    if k.thread.xsaved {
        k.thread.xsaved = false;
        let area = xstate_va(k.sched.current());
        // A failure leaves the initial state: the area is the app's own memory, and
        // only the app can have spoiled it.
        let _ = crate::arch::fpu::restore_for_switch(k, area);
    }
}

/// Free the slot of a thread that exited on this vCPU before the switch that got
/// here (it no longer runs on its stack).
fn reap(k: &mut Kernel) {
    if let Some(slot) = k.sched.here().exited.take() {
        k.sched.threads.reap(slot);
    }
}

/// A new thread's first moment (from `switch.rs`'s start stub): the thread that
/// switched here holds the kernel lock for it; finish the switch and give the lock
/// up, as a syscall's exit does, before the stub returns to the app.
pub extern "C" fn thread_started() {
    // SAFETY: the switching thread's guard is suspended on its own stack and the
    // kernel is used by no one else; the lock is taken again at once, so this
    // thread's guard is the one that releases it. (Another vCPU may take it in
    // between: the switch left the shared state whole.)
    unsafe { KERNEL.force_unlock() };
    let mut guard = crate::kernel::lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("thread started before boot finished")
    };
    reap(k);
}

/// Block the running thread until it is woken, `deadline` (CLOCK_MONOTONIC ns;
/// `u64::MAX`: none) passes, or a signal is sent to it; returns which.
pub fn block(k: &mut Kernel, deadline: u64) -> Wake {
    k.sched.threads.block_current(deadline);
    schedule(k);
    let current = k.sched.threads.current();
    k.sched.threads.get(current).wake
}

/// Wake the blocked thread in `slot` for `why` (nothing if it is not blocked).
pub fn wake(k: &mut Kernel, slot: usize, why: Wake) {
    if why == Wake::Interrupted {
        // A thread interrupted in a futex wait leaves its queue.
        k.sched.futexes.cancel(slot as u32);
    }
    k.sched.threads.wake(slot, why);
    arm_timer(k);
}

/// sched_yield: the next runnable thread runs, this one queues behind it.
pub fn yield_now(k: &mut Kernel) {
    schedule(k);
}

/// The running thread exits (exit, or the end of a thread): its
/// `clear_child_tid` word is zeroed and futex-woken, as for pthread_join; the last
/// thread's exit ends the app with `status`.
pub fn exit_thread(k: &mut Kernel, status: u8) -> ! {
    if k.sched.threads.live() <= 1 {
        crate::syscall::exit_app(k, status);
    }
    exit_robust_list(k);
    let ctid = k.thread.clear_child_tid;
    if ctid != 0 && ctid.is_multiple_of(4) {
        // Linux ignores a fault here (`mm_release`).
        if k.copy_to_user(ctid, &0u32.to_le_bytes()).is_ok() {
            futex_wake(k, ctid, futex::BITSET_MATCH_ANY, 1);
        }
    }
    k.sched.threads.exit_current();
    let slot = k.sched.threads.current();
    k.sched.here().exited = Some(slot);
    schedule(k);
    crate::fatal("an exited thread ran again")
}

/// Robust futexes (`include/uapi/linux/futex.h`): the owner-died and waiters bits,
/// the tid field of a lock word, and how many entries a list may have.
const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3FFF_FFFF;
const ROBUST_LIST_LIMIT: usize = 2048;

/// A thread exits holding robust mutexes (`exit_robust_list`, `handle_futex_death`):
/// each lock word on its robust list, and the one its pending operation names,
/// that holds its tid gets FUTEX_OWNER_DIED, and one waiter is woken to take the
/// lock over. The list is the app's memory: a bad pointer or a loop ends the walk.
fn exit_robust_list(k: &mut Kernel) {
    let head = k.thread.robust_list;
    if head == 0 {
        return;
    }
    let tid = k.sched.current_tid();
    // struct robust_list_head: list.next, futex_offset, list_op_pending.
    let mut words = [0u8; 24];
    if k.copy_from_user(&mut words, head).is_err() {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(words[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let (mut entry, offset, pending) = (word(0), word(1), word(2));
    let mut seen = 0;
    while entry != head && entry != 0 && seen < ROBUST_LIST_LIMIT {
        let mut next = [0u8; 8];
        if k.copy_from_user(&mut next, entry).is_err() {
            break;
        }
        if entry != pending {
            owner_died(k, entry.wrapping_add(offset), tid);
        }
        entry = u64::from_le_bytes(next);
        seen += 1;
    }
    if pending != 0 {
        owner_died(k, pending.wrapping_add(offset), tid);
    }
}

/// Mark the robust lock word at `addr` if thread `tid` holds it.
fn owner_died(k: &mut Kernel, addr: u64, tid: u32) {
    if !addr.is_multiple_of(4) {
        return;
    }
    let mut v = [0u8; 4];
    if k.copy_from_user(&mut v, addr).is_err() {
        return;
    }
    let old = u32::from_le_bytes(v);
    if old & FUTEX_TID_MASK != tid {
        return;
    }
    let new = (old & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
    if k.copy_to_user(addr, &new.to_le_bytes()).is_ok() && old & FUTEX_WAITERS != 0 {
        futex_wake(k, addr, futex::BITSET_MATCH_ANY, 1);
    }
}

/// Wait queues of the firmware's own objects (pipes, eventfds, epoll instances)
/// share the futex queues under keys in the kernel's half of the address space,
/// which no futex word can have (futex addresses are checked to be the app's).
pub const OBJECT_KEY_BASE: u64 = 0xFFFF_F000_0000_0000;

/// Block the running thread on the object queue `key` (at least
/// [`OBJECT_KEY_BASE`]) until [`wake_all`] of that key, `deadline` (`u64::MAX`:
/// none) or a signal; returns which.
pub fn wait_on(k: &mut Kernel, key: u64, deadline: u64) -> Wake {
    debug_assert!(key >= OBJECT_KEY_BASE);
    let slot = k.sched.current() as u32;
    if k.sched
        .futexes
        .wait(slot, key, futex::BITSET_MATCH_ANY)
        .is_err()
    {
        // Every thread can wait once: the queue cannot be full.
        return Wake::Woken;
    }
    let why = block(k, deadline);
    if why != Wake::Woken {
        k.sched.futexes.cancel(slot);
    }
    why
}

/// Wake every thread waiting on the object queue `key`; how many.
pub fn wake_all(k: &mut Kernel, key: u64) -> u32 {
    futex_wake(k, key, futex::BITSET_MATCH_ANY, u32::MAX)
}

/// Wake up to `max` waiters on the futex at `addr` whose bitset meets `bitset`; how
/// many were woken.
pub fn futex_wake(k: &mut Kernel, addr: u64, bitset: u32, max: u32) -> u32 {
    let Sched {
        threads, futexes, ..
    } = &mut *k.sched;
    let woken = futexes.wake(addr, bitset, max, &mut |slot| {
        threads.wake(slot as usize, Wake::Woken);
    });
    arm_timer(k);
    woken
}

/// Build the first return of the clone pending after the parent's syscall: the
/// parent's registers `tf` and FXSAVE image `image`, with RAX 0 and the child's stack.
///
/// # Safety
/// `image` points at a valid FXSAVE image that nothing else refers to during the call.
pub unsafe fn start_pending_clone(k: &mut Kernel, tf: &TrapFrame, image: *const FxImage) {
    let Some(pending) = k.sched.here().pending_clone.take() else {
        return;
    };
    let mut child = *tf;
    child.rax = 0;
    if pending.rsp != 0 {
        child.rsp = pending.rsp;
    }
    // SAFETY: the child's slot is mapped and its stack unused, since the child has
    // not run; `image` is valid (the caller's contract).
    unsafe {
        let rsp = switch::prepare_start(k.sched.stack_top(pending.slot), &child, &(*image).0);
        (*k.sched.block(pending.slot)).ctl.saved_rsp = rsp;
    }
    k.sched.threads.start(pending.slot);
    CREATED.fetch_add(1, Ordering::Relaxed);
    arm_timer(k);
}

/// A local APIC interrupt (`arch/apic.rs`), taken only while the app runs (ring 0
/// runs with interrupts off): acknowledged and counted; at the timer, deadlines that
/// passed wake their threads, the interval timer fires, and the running thread's
/// slice ends if it is over and others wait; then signals for the thread that
/// returns to the app are delivered. Interrupts are host input: whatever their
/// number or timing, they only make the firmware look at its own clock earlier.
pub fn interrupt(frame: &mut TrapFrame) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    let kind = match frame.vector {
        v if v == u64::from(crate::arch::apic::TIMER_VECTOR) => &TIMER_INTERRUPTS,
        v if v == u64::from(crate::arch::apic::WAKE_VECTOR) => &WAKE_INTERRUPTS,
        _ => &OTHER_INTERRUPTS,
    };
    kind.fetch_add(1, Ordering::Relaxed);
    #[cfg(not(any(test, feature = "fuzzing")))]
    // SAFETY: in the handler of an interrupt the local APIC delivered (vectors 32 and
    // up have no other source: the firmware programs no other interrupt controller).
    unsafe {
        crate::arch::apic::eoi()
    };
    // Whatever the vector: a TLB flush another vCPU asked for is done first.
    crate::arch::smp::poll_flush();
    if frame.vector == u64::from(nacre_shared_abi::net::NET_VECTOR) {
        // The host queued socket events: whoever holds the kernel next takes them.
        crate::syscall::socket::NET_PENDING.store(true, Ordering::Release);
    }
    if !frame.is_user() {
        // The idle loop (the only ring-0 code that takes interrupts) looks again.
        return;
    }
    let mut guard = crate::kernel::lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("interrupt before boot finished")
    };
    if frame.vector == u64::from(crate::arch::apic::TIMER_VECTOR) {
        k.sched.here().timer_at = 0;
        // Deadlines that passed wake their threads; the interval timer fires.
        tick(k);
        let now = k.monotonic_ns();
        let slice_end = k.sched.here().slice_end;
        if slice_end != 0 && now >= slice_end && k.sched.threads.runnable() > 0 {
            crate::syscall::process::rseq_preempted(k, frame);
            preempt(k);
        }
        arm_timer(k);
    } else if frame.vector == u64::from(crate::arch::apic::WAKE_VECTOR) {
        // Another vCPU made a thread runnable while this one had no slice: time one.
        arm_timer(k);
    }
    crate::syscall::socket::take_events(k);
    if crate::syscall::signal::deliver::prepare_exit(k) {
        crate::syscall::process::rseq_preempted(k, frame);
        let image = crate::arch::idt::fx_image(frame);
        crate::syscall::signal::deliver::exit_to_user(k, frame, image, None);
    }
}
