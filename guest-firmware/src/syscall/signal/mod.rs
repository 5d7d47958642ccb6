//! Signals of a single-threaded app: dispositions, the mask, pending signals, the
//! alternate stack, handlers run with a Linux signal frame and rt_sigreturn, faults
//! as signals, and ITIMER_REAL as the one source of signals from outside the app's
//! own calls.
//!
//! A signal is *sent* ([`Signals::send`]: kill, tgkill, the timer) or *forced*
//! ([`Signals::force`]: a fault, a frame that cannot be built or read back), becomes
//! pending, and is delivered on the way back to the app when not blocked
//! ([`deliver::exit_to_user`]): the syscall dispatcher asks for that exit work
//! whenever a deliverable signal is pending, so a signal the app sends itself or
//! unblocks is delivered before the call returns, as on Linux. A handler runs on a
//! frame laid out as Linux lays it out (`frame.rs`), with the FPU state saved by
//! XSAVE (`arch/fpu.rs`); the default action of a terminating signal ends the app
//! with status 128 + the signal, as a shell reports it (abort() exits 134).
//!
//! The state is split as threads will need it: [`ThreadSignals`] (mask, pending set,
//! alternate stack, the mask a sigsuspend saved) belongs to a thread, dispositions
//! and the timer to the process. Standard and real-time signals alike are pending
//! at most once (real-time signals are not queued).
//!
//! Without timer interrupts, a due ITIMER_REAL signal is noticed at the next syscall
//! or while the app waits in one (nanosleep, futex, pause, sigsuspend,
//! sigtimedwait): a loop that makes no syscall does not see it.

pub mod deliver;
pub mod frame;

use super::errno::*;
use super::process::PID;
use super::{mem_err, SysResult};
use crate::kernel::Kernel;
use crate::time::NS_PER_SEC;
use core::sync::atomic::{AtomicU8, Ordering};
use frame::{AltStack, StackT};
use zerocopy::{FromBytes, IntoBytes};

/// Signal numbers (`arch/x86/include/uapi/asm/signal.h`).
pub const SIGILL: u64 = 4;
pub const SIGTRAP: u64 = 5;
pub const SIGBUS: u64 = 7;
pub const SIGFPE: u64 = 8;
pub const SIGKILL: u64 = 9;
pub const SIGSEGV: u64 = 11;
pub const SIGPIPE: u64 = 13;
pub const SIGALRM: u64 = 14;
const SIGCHLD: u64 = 17;
const SIGCONT: u64 = 18;
const SIGSTOP: u64 = 19;
const SIGTSTP: u64 = 20;
const SIGTTIN: u64 = 21;
const SIGTTOU: u64 = 22;
const SIGURG: u64 = 23;
const SIGWINCH: u64 = 28;
const SIGSYS: u64 = 31;
/// Highest signal number (`_NSIG`).
pub const NSIG: u64 = 64;

/// Dispositions (`include/uapi/asm-generic/signal-defs.h`).
pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;
/// sa_flags (`arch/x86/include/uapi/asm/signal.h`, `include/uapi/asm-generic/signal-defs.h`).
pub const SA_SIGINFO: u64 = 0x0000_0004;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;
/// rt_sigprocmask `how` (`include/uapi/asm-generic/signal-defs.h`).
const SIG_BLOCK: u64 = 0;
const SIG_UNBLOCK: u64 = 1;
const SIG_SETMASK: u64 = 2;

/// si_code values (`include/uapi/asm-generic/siginfo.h`).
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_TKILL: i32 = -6;
pub const ILL_ILLOPN: i32 = 2;
pub const FPE_INTDIV: i32 = 1;
pub const FPE_FLTDIV: i32 = 3;
pub const FPE_FLTOVF: i32 = 4;
pub const FPE_FLTUND: i32 = 5;
pub const FPE_FLTRES: i32 = 6;
pub const FPE_FLTINV: i32 = 7;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const BUS_ADRALN: i32 = 1;
pub const BUS_ADRERR: i32 = 2;
pub const TRAP_TRACE: i32 = 2;

/// Kernel-internal results of an interrupted syscall (`include/linux/errno.h`), never
/// seen by the app: the exit path turns them into a restart or EINTR
/// ([`deliver::exit_to_user`]).
pub const ERESTARTSYS: u64 = 512;
pub const ERESTARTNOINTR: u64 = 513;
pub const ERESTARTNOHAND: u64 = 514;
pub const ERESTART_RESTARTBLOCK: u64 = 516;
/// EINTR (`include/uapi/asm-generic/errno-base.h`).
pub const EINTR: u64 = 4;

/// The bit of signal `sig` (1..=64) in a sigset.
pub const fn bit(sig: u64) -> u64 {
    1 << (sig - 1)
}

/// Signals that can be neither caught nor blocked.
pub const UNBLOCKABLE: u64 = bit(SIGKILL) | bit(SIGSTOP);
/// Signals a fault raises, delivered before any other (`kernel/signal.c`,
/// `SYNCHRONOUS_MASK`).
const SYNCHRONOUS: u64 =
    bit(SIGSEGV) | bit(SIGBUS) | bit(SIGILL) | bit(SIGTRAP) | bit(SIGFPE) | bit(SIGSYS);

/// `struct sigaction` as the x86-64 kernel takes it: handler, flags, restorer, mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, zerocopy::Immutable)]
#[repr(C)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// What a pending signal's siginfo and sigcontext say about where it came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigInfo {
    pub code: i32,
    /// `si_addr` for a fault, `si_pid | si_uid << 32` for a kill.
    pub field0: u64,
    /// For a fault: the sigcontext's `trapno`, `err` and `cr2`.
    pub trapno: u64,
    pub err: u64,
    pub cr2: u64,
}

impl SigInfo {
    /// Sent by the kernel itself (SI_KERNEL): a timer, a forced SIGSEGV.
    pub const fn kernel() -> Self {
        Self {
            code: SI_KERNEL,
            field0: 0,
            trapno: 0,
            err: 0,
            cr2: 0,
        }
    }

    /// Sent by the app with kill (SI_USER) or tkill/tgkill (SI_TKILL): the sender is
    /// the app, uid 0.
    pub const fn user(code: i32) -> Self {
        Self {
            code,
            field0: PID,
            trapno: 0,
            err: 0,
            cr2: 0,
        }
    }

    /// A fault at `addr` (trap `trapno` with error code `err`).
    pub const fn fault(code: i32, addr: u64, trapno: u64, err: u64) -> Self {
        Self {
            code,
            field0: addr,
            trapno,
            err,
            cr2: if trapno == 14 { addr } else { 0 },
        }
    }
}

/// The exit hints, one byte per vCPU: set by every change that can leave exit work
/// (a signal made pending, the mask changed, an rt_sigreturn or sigsuspend, the timer
/// armed, a thread switched in), cleared by [`deliver::prepare_exit`] on its own vCPU
/// when the thread there has none. The syscall exit path (`arch/syscall_entry.rs`)
/// reads its vCPU's byte after every syscall and calls into the signal layer only
/// when it is set. A change for a thread that may run on another vCPU sets every
/// byte ([`hint_all`]): a byte set without work only costs a look.
#[no_mangle]
pub static NACRE_EXIT_HINTS: [AtomicU8; crate::arch::gdt::MAX_CPUS] =
    [const { AtomicU8::new(0) }; crate::arch::gdt::MAX_CPUS];

/// Set this vCPU's exit hint to `hint`.
pub fn set_hint_here(hint: bool) {
    NACRE_EXIT_HINTS[crate::arch::gdt::cpu_index()].store(u8::from(hint), Ordering::Relaxed);
}

/// Set every vCPU's exit hint.
pub fn hint_all() {
    for h in &NACRE_EXIT_HINTS {
        h.store(1, Ordering::Relaxed);
    }
}

/// `ThreadSignals::work`: an rt_sigreturn to perform on the way out.
const WORK_SIGRETURN: u64 = 1;
/// `ThreadSignals::work`: a mask saved by sigsuspend to put back on the way out.
const WORK_RESTORE_MASK: u64 = 2;

/// A thread's signal state.
#[derive(Debug)]
pub struct ThreadSignals {
    /// Blocked signals.
    pub mask: u64,
    /// Pending signals.
    pub pending: u64,
    /// Each pending signal's siginfo.
    info: [SigInfo; NSIG as usize],
    /// The alternate signal stack.
    pub altstack: AltStack,
    /// Exit work besides delivery (`WORK_*`).
    work: u64,
    /// With `WORK_RESTORE_MASK`: the mask sigsuspend replaced.
    saved_mask: u64,
}

impl ThreadSignals {
    /// A new thread's: `mask` blocked, nothing pending, no alternate stack (as a
    /// thread made with CLONE_VM has, `copy_sighand`/`copy_process`).
    pub const fn new(mask: u64) -> Self {
        Self {
            mask,
            pending: 0,
            info: [SigInfo::kernel(); NSIG as usize],
            altstack: AltStack::DISABLED,
            work: 0,
            saved_mask: 0,
        }
    }

    /// Whether a pending signal is not blocked.
    pub fn deliverable(&self) -> bool {
        self.pending & !self.mask != 0
    }

    /// Make this a new thread's state in place, as [`Self::new`] would (the siginfo
    /// slots are read only for pending signals, so they are left as they are).
    pub fn reset(&mut self, mask: u64) {
        self.mask = mask;
        self.pending = 0;
        self.altstack = AltStack::DISABLED;
        self.work = 0;
        self.saved_mask = 0;
    }
}

/// The app's signal state.
#[derive(Debug)]
pub struct Signals {
    /// Dispositions of signals 1..=64.
    actions: [SigAction; NSIG as usize],
    /// ITIMER_REAL: when it next fires (CLOCK_MONOTONIC ns, 0 when disarmed) and its
    /// interval (0: once).
    alarm_at: u64,
    alarm_interval: u64,
    /// The running thread's signal state (the scheduler points it at each switch).
    pub thread: crate::sched::Current<ThreadSignals>,
}

/// What a signal's default action does (signal(7)); stopping is taken as ignoring,
/// as nothing could continue the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Ignore,
    Terminate,
}

/// The default action of `sig`.
pub fn default_action(sig: u64) -> DefaultAction {
    match sig {
        SIGCHLD | SIGCONT | SIGURG | SIGWINCH | SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => {
            DefaultAction::Ignore
        }
        _ => DefaultAction::Terminate,
    }
}

/// Make `sig` pending on thread `t` unless the process ignores it (`ignored`) and `t`
/// does not block it, or it is pending already (standard and real-time signals alike
/// are pending at most once).
fn queue(t: &mut ThreadSignals, ignored: bool, sig: u64, info: SigInfo) {
    let b = bit(sig);
    if (t.mask & b == 0 && ignored) || t.pending & b != 0 {
        return;
    }
    t.pending |= b;
    t.info[(sig - 1) as usize] = info;
    hint_all();
}

impl Signals {
    /// Defaults: every disposition SIG_DFL, nothing blocked or pending, no alternate
    /// stack, no timer.
    pub const fn new() -> Self {
        Self {
            actions: [SigAction {
                handler: SIG_DFL,
                flags: 0,
                restorer: 0,
                mask: 0,
            }; NSIG as usize],
            alarm_at: 0,
            alarm_interval: 0,
            thread: crate::sched::Current::unset(),
        }
    }

    /// The disposition of `sig` (1..=64).
    pub fn action(&self, sig: u64) -> SigAction {
        self.actions[(sig - 1) as usize]
    }

    fn action_mut(&mut self, sig: u64) -> &mut SigAction {
        &mut self.actions[(sig - 1) as usize]
    }

    /// Something changed that can leave exit work: set the exit hint.
    fn note_work(&mut self) {
        hint_all();
    }

    /// Whether a pending signal is not blocked.
    pub fn deliverable(&self) -> bool {
        self.thread.pending & !self.thread.mask != 0
    }

    /// Whether a signal sent now would be dropped: ignored, explicitly or by default
    /// (`sig_ignored`; a blocked signal is kept, its disposition may change).
    fn ignores(&self, sig: u64) -> bool {
        let handler = self.action(sig).handler;
        handler == SIG_IGN || (handler == SIG_DFL && default_action(sig) == DefaultAction::Ignore)
    }

    /// Send `sig` to the running thread (kill, tgkill, a timer). An ignored,
    /// unblocked signal is dropped; one already pending is not queued again.
    pub fn send(&mut self, sig: u64, info: SigInfo) {
        let ignored = self.ignores(sig);
        queue(&mut self.thread, ignored, sig, info);
    }

    /// Force `sig` on the app (a fault, `force_sig_info_to_task`): if it is blocked
    /// or ignored its disposition becomes SIG_DFL and it is unblocked, so it cannot
    /// be escaped.
    pub fn force(&mut self, sig: u64, info: SigInfo) {
        let b = bit(sig);
        let blocked = self.thread.mask & b != 0;
        if blocked || self.action(sig).handler == SIG_IGN {
            self.action_mut(sig).handler = SIG_DFL;
            self.thread.mask &= !b;
        }
        self.thread.pending |= b;
        self.thread.info[(sig - 1) as usize] = info;
        self.note_work();
    }

    /// Whether a forced `sig` would run a handler (rather than end the app).
    pub fn catches(&self, sig: u64) -> bool {
        self.thread.mask & bit(sig) == 0 && self.action(sig).handler > SIG_IGN
    }

    /// Take the next deliverable signal: faults first, then the lowest number
    /// (`next_signal`).
    fn take_next(&mut self) -> Option<(u64, SigInfo)> {
        self.take_from(!self.thread.mask)
    }

    /// Take the next pending signal of `set`, whether blocked or not.
    fn take_from(&mut self, set: u64) -> Option<(u64, SigInfo)> {
        let ready = self.thread.pending & set;
        if ready == 0 {
            return None;
        }
        let first = if ready & SYNCHRONOUS != 0 {
            ready & SYNCHRONOUS
        } else {
            ready
        };
        let sig = u64::from(first.trailing_zeros()) + 1;
        self.thread.pending &= !bit(sig);
        Some((sig, self.thread.info[(sig - 1) as usize]))
    }

    /// Set the mask (never blocking SIGKILL or SIGSTOP).
    fn set_mask(&mut self, mask: u64) {
        self.thread.mask = mask & !UNBLOCKABLE;
        self.note_work();
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

fn read_u64(k: &mut Kernel, va: u64) -> Result<u64, u64> {
    let mut b = [0u8; 8];
    k.copy_from_user(&mut b, va).map_err(mem_err)?;
    Ok(u64::from_le_bytes(b))
}

fn valid_signal(sig: u64) -> Result<u64, u64> {
    if (1..=NSIG).contains(&sig) {
        Ok(sig)
    } else {
        Err(EINVAL)
    }
}

pub fn rt_sigaction(k: &mut Kernel, sig: u64, act: u64, oldact: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let sig = valid_signal(sig)?;
    let old = k.sig.action(sig);
    if act != 0 {
        if sig == SIGKILL || sig == SIGSTOP {
            return Err(EINVAL);
        }
        let mut new = SigAction::default();
        k.copy_from_user(new.as_mut_bytes(), act).map_err(mem_err)?;
        new.mask &= !UNBLOCKABLE;
        *k.sig.action_mut(sig) = new;
        // POSIX: a pending signal whose action becomes "ignore" is discarded, blocked
        // or not (`do_sigaction`).
        if k.sig.ignores(sig) {
            k.sig.thread.pending &= !bit(sig);
        }
    }
    if oldact != 0 {
        k.copy_to_user(oldact, old.as_bytes()).map_err(mem_err)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(
    k: &mut Kernel,
    how: u64,
    set: u64,
    oldset: u64,
    sigsetsize: u64,
) -> SysResult {
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let old = k.sig.thread.mask;
    if set != 0 {
        let s = read_u64(k, set)?;
        let new = match how {
            SIG_BLOCK => old | s,
            SIG_UNBLOCK => old & !s,
            SIG_SETMASK => s,
            _ => return Err(EINVAL),
        };
        k.sig.set_mask(new);
    }
    if oldset != 0 {
        k.copy_to_user(oldset, &old.to_le_bytes())
            .map_err(mem_err)?;
    }
    Ok(0)
}

/// rt_sigpending: the pending signals that are blocked.
pub fn rt_sigpending(k: &mut Kernel, set: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize > 8 {
        return Err(EINVAL);
    }
    let pending = k.sig.thread.pending & k.sig.thread.mask;
    let bytes = pending.to_le_bytes();
    k.copy_to_user(set, &bytes[..sigsetsize as usize])
        .map_err(mem_err)?;
    Ok(0)
}

/// sigaltstack for an app whose RSP is `sp`.
pub fn sigaltstack(k: &mut Kernel, ss: u64, old: u64, sp: u64) -> SysResult {
    let report = k.sig.thread.altstack.report(sp);
    if ss != 0 {
        let mut new = StackT::default();
        k.copy_from_user(new.as_mut_bytes(), ss).map_err(mem_err)?;
        k.sig.thread.altstack.set(&new, sp)?;
    }
    if old != 0 {
        k.copy_to_user(old, report.as_bytes()).map_err(mem_err)?;
    }
    Ok(0)
}

/// Send `sig` to the thread in `slot` and wake it if the signal can be delivered
/// to it (it returns to the app, EINTR or restarted, to take it).
pub fn send_to_thread(k: &mut Kernel, slot: usize, sig: u64, info: SigInfo) {
    let ignored = k.sig.ignores(sig);
    let deliverable = if slot == k.sched.current() {
        queue(&mut k.sig.thread, ignored, sig, info);
        k.sig.thread.deliverable()
    } else {
        // SAFETY: `slot` holds a live thread, so its block is mapped; it is not
        // running, so nothing else refers to its signals.
        let t = unsafe { &mut (*k.sched.block(slot)).sig };
        queue(t, ignored, sig, info);
        t.deliverable()
    };
    if deliverable {
        crate::sched::wake(k, slot, crate::sched::threads::Wake::Interrupted);
        crate::sched::cpu::kick_thread(k, slot);
    }
}

/// Send `sig` to the process (kill, the interval timer): the running thread takes it
/// unless it blocks it, else the first thread that does not (`complete_signal`);
/// if all block it, it stays pending on the running thread.
pub fn send_to_process(k: &mut Kernel, sig: u64, info: SigInfo) {
    let current = k.sched.current();
    let mut target = current;
    // An idle vCPU (the interval timer fired there) runs no thread: any thread that
    // does not block the signal takes it, else the first live one.
    let here = k.sched.threads.has_current();
    if !here || k.sig.thread.mask & bit(sig) != 0 {
        for slot in 0..crate::sched::MAX_THREADS {
            if slot == current || !k.sched.threads.is_live(slot) {
                continue;
            }
            // SAFETY: a live thread's block is mapped; only the kernel reads it.
            let mask = unsafe { (*k.sched.block(slot)).sig.mask };
            if mask & bit(sig) == 0 {
                target = slot;
                break;
            }
        }
    }
    if target == current && !here {
        // Every thread blocks it: it waits on the first.
        match (0..crate::sched::MAX_THREADS).find(|&s| k.sched.threads.is_live(s)) {
            Some(slot) => target = slot,
            None => return,
        }
    }
    send_to_thread(k, target, sig, info);
}

/// A signal the app sends itself or one of its threads: pending now, delivered (or
/// its default action taken) on the way back to the app unless blocked.
fn send_checked(k: &mut Kernel, sig: u64, code: i32, thread: Option<usize>) -> SysResult {
    if sig == 0 {
        return Ok(0);
    }
    let sig = valid_signal(sig)?;
    let info = SigInfo::user(code);
    match thread {
        Some(slot) => send_to_thread(k, slot, sig, info),
        None => send_to_process(k, sig, info),
    }
    Ok(0)
}

pub fn kill(k: &mut Kernel, pid: i64, sig: u64) -> SysResult {
    // The app is process PID, alone in its process group.
    if pid != PID as i64 && pid != 0 && pid != -1 && pid != -(PID as i64) {
        return Err(ESRCH);
    }
    send_checked(k, sig, SI_USER, None)
}

pub fn tgkill(k: &mut Kernel, tgid: i64, tid: i64, sig: u64) -> SysResult {
    if tgid <= 0 || tid <= 0 {
        return Err(EINVAL);
    }
    let slot = u32::try_from(tid)
        .ok()
        .filter(|_| tgid == PID as i64)
        .and_then(|tid| k.sched.threads.find(tid))
        .ok_or(ESRCH)?;
    send_checked(k, sig, SI_TKILL, Some(slot))
}

/// rt_sigreturn: done on the way out ([`deliver::exit_to_user`]), which restores every
/// register from the frame the app's RSP points at.
pub fn rt_sigreturn(k: &mut Kernel) -> SysResult {
    k.sig.thread.work |= WORK_SIGRETURN;
    k.sig.note_work();
    Ok(0)
}

/// How a wait for a signal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The deadline passed.
    TimedOut,
    /// A signal is deliverable.
    Signal,
    /// Nothing can end the wait: no deadline, no timer.
    Never,
}

/// Wait until CLOCK_MONOTONIC reaches `deadline` (or forever) or a signal becomes
/// deliverable to the running thread, letting other threads run meanwhile. `Never`
/// when nothing could end the wait: no deadline, no timer, no other thread.
pub fn wait(k: &mut Kernel, deadline: Option<u64>) -> Wake {
    loop {
        fire_alarm(k);
        if k.sig.deliverable() {
            return Wake::Signal;
        }
        let now = k.monotonic_ns();
        if deadline.is_some_and(|d| now >= d) {
            return Wake::TimedOut;
        }
        if deadline.is_none() && k.sig.alarm_at == 0 && k.sched.threads.live() == 1 {
            return Wake::Never;
        }
        crate::sched::block(k, deadline.unwrap_or(u64::MAX));
    }
}

/// When the interval timer fires next, if armed.
pub fn alarm_deadline(k: &Kernel) -> Option<u64> {
    (k.sig.alarm_at != 0).then_some(k.sig.alarm_at)
}

/// Stop an app that waits for a signal nothing can send (as SIGKILL would).
fn stop_waiting_forever(k: &mut Kernel, what: &[u8]) -> ! {
    let _ = k.console_write(2, b"nacre: the app ");
    let _ = k.console_write(2, what);
    let _ = k.console_write(2, b" with nothing that could end the wait; stopping it\n");
    super::exit_app(k, (128 + SIGKILL) as u8)
}

/// pause: wait for a signal; EINTR once a handler ran.
pub fn pause(k: &mut Kernel) -> SysResult {
    if wait(k, None) == Wake::Never {
        stop_waiting_forever(k, b"waits for a signal");
    }
    Err(ERESTARTNOHAND)
}

/// rt_sigsuspend: wait for a signal with the mask `set`, which stays until the
/// handler it lets in returns; EINTR.
pub fn rt_sigsuspend(k: &mut Kernel, set: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let new = read_u64(k, set)?;
    let t = &mut k.sig.thread;
    t.saved_mask = t.mask;
    t.work |= WORK_RESTORE_MASK;
    // (set_mask notes the exit work.)
    k.sig.set_mask(new);
    if wait(k, None) == Wake::Never {
        stop_waiting_forever(k, b"suspends itself until a signal");
    }
    Err(ERESTARTNOHAND)
}

/// The signal mask of ppoll, pselect6 and epoll_pwait while they wait
/// (`set_user_sigmask`): the sigset at `sigmask` (null: the thread's mask stays)
/// replaces the mask, which is kept to be put back by [`end_temporary_mask`].
/// EINVAL for a sigset size other than 8.
pub fn set_temporary_mask(k: &mut Kernel, sigmask: u64, sigsetsize: u64) -> Result<(), u64> {
    if sigmask == 0 {
        return Ok(());
    }
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let new = read_u64(k, sigmask)?;
    let t = &mut k.sig.thread;
    t.saved_mask = t.mask;
    t.work |= WORK_RESTORE_MASK;
    k.sig.set_mask(new);
    Ok(())
}

/// The end of a call that set a temporary mask (`restore_saved_sigmask_unless`):
/// the thread's mask comes back now, unless a signal `interrupted` the call: then
/// the handler it runs gets the temporary mask and the old one is in its frame, to
/// come back at rt_sigreturn (as after sigsuspend).
pub fn end_temporary_mask(k: &mut Kernel, interrupted: bool) {
    if interrupted || k.sig.thread.work & WORK_RESTORE_MASK == 0 {
        return;
    }
    k.sig.thread.work &= !WORK_RESTORE_MASK;
    let saved = k.sig.thread.saved_mask;
    k.sig.set_mask(saved);
}

/// rt_sigtimedwait: take a pending signal of `set` (blocked or not), waiting for one
/// until the timeout; its number, with its siginfo at `info`. While it waits the
/// signals of `set` are unblocked (`do_sigtimedwait`).
pub fn rt_sigtimedwait(
    k: &mut Kernel,
    set: u64,
    info: u64,
    timeout: u64,
    sigsetsize: u64,
) -> SysResult {
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let set = read_u64(k, set)? & !UNBLOCKABLE;
    let deadline =
        super::time::read_timeout(k, timeout)?.map(|ns| k.monotonic_ns().saturating_add(ns as u64));
    loop {
        if let Some((sig, si)) = k.sig.take_from(set) {
            if info != 0 {
                let bytes = deliver::siginfo(sig, &si);
                k.copy_to_user(info, bytes.as_bytes()).map_err(mem_err)?;
            }
            return Ok(sig);
        }
        let mask = k.sig.thread.mask;
        k.sig.thread.mask &= !set;
        let wake = wait(k, deadline);
        k.sig.thread.mask = mask;
        match wake {
            Wake::Signal if k.sig.thread.pending & set != 0 => {}
            Wake::Signal => return Err(EINTR),
            Wake::TimedOut => return Err(EAGAIN),
            Wake::Never => stop_waiting_forever(k, b"waits for signals"),
        }
    }
}

/// The timer's signal, if it is due.
pub fn fire_alarm(k: &mut Kernel) {
    if k.sig.alarm_at == 0 {
        return;
    }
    let now = k.monotonic_ns();
    if now < k.sig.alarm_at {
        return;
    }
    k.sig.alarm_at = match k.sig.alarm_interval {
        0 => 0,
        // Missed periods are overruns (not queued), as for a timer signal still pending.
        i => now + i - (now - k.sig.alarm_at) % i,
    };
    send_to_process(k, SIGALRM, SigInfo::kernel());
}

/// setitimer/getitimer `which` (`include/uapi/linux/time.h`): only ITIMER_REAL, as
/// the firmware does not count the app's CPU time for the other two.
const ITIMER_REAL: u64 = 0;
const NS_PER_US: u64 = 1000;

/// ITIMER_REAL's current value and interval in nanoseconds.
fn itimer(k: &mut Kernel) -> (u64, u64) {
    let left = match k.sig.alarm_at {
        0 => 0,
        at => at.saturating_sub(k.monotonic_ns()).max(1),
    };
    (left, k.sig.alarm_interval)
}

fn arm(k: &mut Kernel, value: u64, interval: u64) {
    k.sig.alarm_at = if value == 0 {
        0
    } else {
        k.monotonic_ns().saturating_add(value)
    };
    k.sig.alarm_interval = if value == 0 { 0 } else { interval };
    k.sig.note_work();
}

/// `struct itimerval` { it_interval, it_value } of two `struct timeval`.
fn itimerval(value: u64, interval: u64) -> [u64; 4] {
    [
        interval / NS_PER_SEC,
        interval % NS_PER_SEC / NS_PER_US,
        value / NS_PER_SEC,
        value % NS_PER_SEC / NS_PER_US,
    ]
}

/// A `struct timeval` as nanoseconds: EINVAL when negative or with 1e6 microseconds or
/// more (`timeval_valid`).
fn timeval_ns(sec: u64, usec: u64) -> Result<u64, u64> {
    if sec as i64 >= 0 && usec < NS_PER_SEC / NS_PER_US {
        Ok(sec.saturating_mul(NS_PER_SEC) + usec * NS_PER_US)
    } else {
        Err(EINVAL)
    }
}

pub fn getitimer(k: &mut Kernel, which: u64, cur: u64) -> SysResult {
    if which != ITIMER_REAL {
        return Err(EINVAL);
    }
    let (value, interval) = itimer(k);
    k.copy_to_user(cur, itimerval(value, interval).as_bytes())
        .map_err(mem_err)?;
    Ok(0)
}

pub fn setitimer(k: &mut Kernel, which: u64, new: u64, old: u64) -> SysResult {
    if which != ITIMER_REAL {
        return Err(EINVAL);
    }
    let mut v = [0u64; 4];
    if new != 0 {
        k.copy_from_user(v.as_mut_bytes(), new).map_err(mem_err)?;
    }
    let interval = timeval_ns(v[0], v[1])?;
    let value = timeval_ns(v[2], v[3])?;
    let (old_value, old_interval) = itimer(k);
    arm(k, value, interval);
    if old != 0 {
        k.copy_to_user(old, itimerval(old_value, old_interval).as_bytes())
            .map_err(mem_err)?;
    }
    Ok(0)
}

/// alarm: ITIMER_REAL once, in `seconds`; the seconds the previous one had left,
/// rounded to the nearest and at least 1 (`alarm_setitimer`).
pub fn alarm(k: &mut Kernel, seconds: u64) -> SysResult {
    let (left, _) = itimer(k);
    arm(k, (seconds & 0xFFFF_FFFF).saturating_mul(NS_PER_SEC), 0);
    Ok(match left {
        0 => 0,
        ns => ((ns + NS_PER_SEC / 2) / NS_PER_SEC).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signals whose running thread is a fresh block of the test's own.
    fn test_signals() -> Signals {
        let mut s = Signals::new();
        let thread = Box::leak(Box::new(ThreadSignals::new(0)));
        // SAFETY: a leaked allocation, reached only through this value.
        unsafe { s.thread.point(thread) };
        s
    }

    fn handler(h: u64, flags: u64) -> SigAction {
        SigAction {
            handler: h,
            flags,
            restorer: 0x1000,
            mask: 0,
        }
    }

    #[test]
    fn numbers_and_flags_are_linuxs() {
        assert_eq!(SA_SIGINFO, libc::SA_SIGINFO as u64);
        assert_eq!(SA_ONSTACK, libc::SA_ONSTACK as u64);
        assert_eq!(SA_RESTART, libc::SA_RESTART as u64);
        assert_eq!(SA_NODEFER, libc::SA_NODEFER as u64);
        assert_eq!(SA_RESETHAND, libc::SA_RESETHAND as u32 as u64);
        assert_eq!(SA_RESTORER, 0x0400_0000);
        for (ours, theirs) in [
            (SIGILL, libc::SIGILL),
            (SIGTRAP, libc::SIGTRAP),
            (SIGBUS, libc::SIGBUS),
            (SIGFPE, libc::SIGFPE),
            (SIGKILL, libc::SIGKILL),
            (SIGSEGV, libc::SIGSEGV),
            (SIGPIPE, libc::SIGPIPE),
            (SIGALRM, libc::SIGALRM),
            (SIGCHLD, libc::SIGCHLD),
            (SIGSTOP, libc::SIGSTOP),
            (SIGURG, libc::SIGURG),
            (SIGSYS, libc::SIGSYS),
        ] {
            assert_eq!(ours, theirs as u64);
        }
        assert_eq!(SI_USER, libc::SI_USER);
        assert_eq!(SI_KERNEL, 0x80);
        assert_eq!(SI_TKILL, libc::SI_TKILL);
        assert_eq!(BUS_ADRERR, libc::BUS_ADRERR);
        assert_eq!(EINTR, libc::EINTR as u64);
        assert_eq!(
            (SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK),
            (
                libc::SIG_BLOCK as u64,
                libc::SIG_UNBLOCK as u64,
                libc::SIG_SETMASK as u64
            )
        );
    }

    #[test]
    fn a_blocked_signal_stays_pending_until_unblocked() {
        let mut s = test_signals();
        s.actions[9] = handler(0x40_0000, 0);
        s.set_mask(bit(10));
        s.send(10, SigInfo::user(SI_TKILL));
        assert_eq!(s.thread.pending, bit(10));
        assert!(!s.deliverable());
        assert_eq!(s.take_next(), None);
        s.set_mask(0);
        assert!(s.deliverable());
        assert_eq!(s.take_next(), Some((10, SigInfo::user(SI_TKILL))));
        assert_eq!(s.thread.pending, 0);
    }

    #[test]
    fn ignored_signals_are_dropped_unless_blocked() {
        let mut s = test_signals();
        s.send(SIGCHLD, SigInfo::kernel());
        assert_eq!(s.thread.pending, 0, "ignored by default");
        s.actions[9] = handler(SIG_IGN, 0);
        s.send(10, SigInfo::kernel());
        assert_eq!(s.thread.pending, 0, "SIG_IGN");
        s.set_mask(bit(10));
        s.send(10, SigInfo::kernel());
        assert_eq!(s.thread.pending, bit(10), "blocked: kept");
    }

    #[test]
    fn faults_come_first_then_the_lowest_number() {
        let mut s = test_signals();
        for sig in [2, 10, SIGSEGV, 40] {
            s.send(sig, SigInfo::kernel());
        }
        let order: std::vec::Vec<u64> =
            core::iter::from_fn(|| s.take_next().map(|(n, _)| n)).collect();
        assert_eq!(order, [SIGSEGV, 2, 10, 40]);
    }

    #[test]
    fn a_forced_fault_cannot_be_blocked_or_ignored() {
        let mut s = test_signals();
        s.actions[(SIGSEGV - 1) as usize] = handler(0x40_0000, 0);
        assert!(s.catches(SIGSEGV));
        s.set_mask(bit(SIGSEGV));
        assert!(!s.catches(SIGSEGV));
        s.force(SIGSEGV, SigInfo::fault(SEGV_MAPERR, 8, 14, 4));
        assert_eq!(s.action(SIGSEGV).handler, SIG_DFL);
        assert_eq!(s.thread.mask, 0);
        assert_eq!(
            s.take_next().map(|(n, i)| (n, i.field0, i.cr2)),
            Some((SIGSEGV, 8, 8))
        );
        let mut s = test_signals();
        s.actions[(SIGFPE - 1) as usize] = handler(SIG_IGN, 0);
        s.force(SIGFPE, SigInfo::kernel());
        assert_eq!(s.action(SIGFPE).handler, SIG_DFL);
        assert!(s.deliverable());
    }

    #[test]
    fn kill_and_stop_stay_unblockable() {
        let mut s = test_signals();
        s.set_mask(u64::MAX);
        assert_eq!(s.thread.mask, !UNBLOCKABLE);
        s.send(SIGKILL, SigInfo::user(SI_USER));
        assert_eq!(s.take_next().map(|(n, _)| n), Some(SIGKILL));
    }

    #[test]
    fn itimer_values_convert_both_ways() {
        assert_eq!(
            itimerval(1_500_000_000, 20_000_000),
            [0, 20_000, 1, 500_000]
        );
        assert_eq!(timeval_ns(1, 500_000), Ok(1_500_000_000));
        assert_eq!(timeval_ns(0, 1_000_000), Err(EINVAL));
        assert_eq!(timeval_ns(u64::MAX, 0), Err(EINVAL), "negative seconds");
    }
}
