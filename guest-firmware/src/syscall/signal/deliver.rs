//! Delivery: on the way back to the app (after a syscall that left work, after a
//! fault), perform an rt_sigreturn, then deliver every deliverable signal: a handler
//! gets a frame and the registers to run it; a default action ignores the signal or
//! ends the app. `arch/x86/kernel/signal.c` (`handle_signal`, `get_sigframe`),
//! `signal_64.c` (`__setup_rt_frame`, `rt_sigreturn`) and `kernel/signal.c`
//! (`get_signal`, `signal_delivered`, `force_sigsegv`) are the reference.

use super::frame::{
    self, FpxSwBytes, Placement, RtSigframe, Sigcontext, Siginfo, Ucontext, FPX_SW_BYTES_OFFSET,
    FP_XSTATE_MAGIC2, HANDLER_CLEARED_FLAGS, UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS,
};
use super::*;
use crate::arch::fpu::{self, FxImage, FXSAVE_SIZE};
use crate::arch::gdt::{USER_CS, USER_DS};
use crate::arch::idt::TrapFrame;
use crate::arch::upcall::Outcome;
use crate::kernel::UserMemError;
use core::mem::offset_of;
use zerocopy::FromZeros;

/// After a syscall with this vCPU's exit hint ([`NACRE_EXIT_HINTS`]) set: fire a due
/// timer and say whether the exit path must call [`exit_to_user`]. The hint stays set
/// while there is work or the timer is armed.
pub fn prepare_exit(k: &mut Kernel) -> bool {
    fire_alarm(k);
    let work = k.sig.deliverable() || k.sig.thread.work != 0;
    super::set_hint_here(work || k.sig.alarm_at != 0);
    work
}

/// Deliver `sig` for a fault the app took, described by `tf` (whose FXSAVE image is
/// `image`): a handler runs, or the app ends.
pub fn deliver_fault(
    k: &mut Kernel,
    tf: &mut TrapFrame,
    image: *mut FxImage,
    sig: u64,
    info: SigInfo,
) {
    k.sig.force(sig, info);
    exit_to_user(k, tf, image, None);
}

/// The exit work before returning to the app in the state `tf` (with the FXSAVE image
/// `image` the exit path loads): an rt_sigreturn the app asked for, then every
/// deliverable signal, then the mask a sigsuspend saved. `syscall` is the number of
/// the syscall that returns (`tf.rax` holds its result), for restarting it.
pub fn exit_to_user(
    k: &mut Kernel,
    tf: &mut TrapFrame,
    image: *mut FxImage,
    mut syscall: Option<u64>,
) {
    if k.sig.thread.work & WORK_SIGRETURN != 0 {
        k.sig.thread.work &= !WORK_SIGRETURN;
        // The registers come from the frame: nothing to restart.
        syscall = None;
        sigreturn(k, tf, image);
    }
    // Each delivery takes one pending signal, so this ends.
    while let Some((sig, info)) = k.sig.take_next() {
        let act = k.sig.action(sig);
        match act.handler {
            SIG_IGN => continue,
            SIG_DFL if default_action(sig) == DefaultAction::Ignore => continue,
            SIG_DFL => super::super::exit_app(k, (128 + sig) as u8),
            _ => {}
        }
        if let Some(nr) = syscall.take() {
            restart_for_handler(tf, nr, act.flags);
        }
        let saved = k.sig.thread.work & WORK_RESTORE_MASK != 0;
        let oldmask = if saved {
            k.sig.thread.saved_mask
        } else {
            k.sig.thread.mask
        };
        match setup_frame(k, tf, image, sig, &info, &act, oldmask) {
            Ok(()) => {
                k.sig.thread.work &= !WORK_RESTORE_MASK;
                signal_delivered(k, sig, &act);
            }
            Err(why) => force_sigsegv(k, sig, tf, why),
        }
    }
    if let Some(nr) = syscall {
        restart_without_handler(tf, nr);
    }
    if k.sig.thread.work & WORK_RESTORE_MASK != 0 {
        k.sig.thread.work &= !WORK_RESTORE_MASK;
        k.sig.set_mask(k.sig.thread.saved_mask);
    }
    // IRETQ to a non-canonical RIP would fault in ring 0. Only a returned frame can
    // set one, and it sends SIGSEGV, which ran a handler or ended the app above.
    if !frame::is_canonical(tf.rip) {
        super::super::exit_app(k, (128 + SIGSEGV) as u8);
    }
}

/// The result a syscall left in RAX, as an errno (0 for a success).
fn errno_of(rax: u64) -> u64 {
    let v = rax as i64;
    if (-4095..0).contains(&v) {
        v.unsigned_abs()
    } else {
        0
    }
}

/// Restart the syscall: its number in RAX again and RIP back on the 2-byte SYSCALL
/// (the arguments are still in their registers).
fn restart(tf: &mut TrapFrame, nr: u64) {
    tf.rax = nr;
    tf.rip = tf.rip.wrapping_sub(2);
}

/// An interrupted syscall before a handler runs (`handle_signal`): restarted if the
/// handler has SA_RESTART and the call allows it, else EINTR.
fn restart_for_handler(tf: &mut TrapFrame, nr: u64, flags: u64) {
    match errno_of(tf.rax) {
        ERESTART_RESTARTBLOCK | ERESTARTNOHAND => tf.rax = super::super::errno_return(EINTR),
        ERESTARTSYS if flags & SA_RESTART == 0 => tf.rax = super::super::errno_return(EINTR),
        ERESTARTSYS | ERESTARTNOINTR => restart(tf, nr),
        _ => {}
    }
}

/// An interrupted syscall when no handler ran (`arch_do_signal_or_restart`):
/// restarted. nacre keeps no restart blocks, so a call that would restart through
/// restart_syscall returns EINTR instead.
fn restart_without_handler(tf: &mut TrapFrame, nr: u64) {
    match errno_of(tf.rax) {
        ERESTARTNOHAND | ERESTARTSYS | ERESTARTNOINTR => restart(tf, nr),
        ERESTART_RESTARTBLOCK => tf.rax = super::super::errno_return(EINTR),
        _ => {}
    }
}

/// The mask and disposition after a handler's frame is set up (`signal_delivered`).
fn signal_delivered(k: &mut Kernel, sig: u64, act: &SigAction) {
    let mut mask = k.sig.thread.mask | act.mask;
    if act.flags & SA_NODEFER == 0 {
        mask |= bit(sig);
    }
    k.sig.set_mask(mask);
    if act.flags & SA_RESETHAND != 0 {
        k.sig.action_mut(sig).handler = SIG_DFL;
    }
    if k.sig.thread.altstack.flags & frame::SS_AUTODISARM != 0 {
        k.sig.thread.altstack = frame::AltStack::DISABLED;
    }
}

/// Why a frame could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetupError {
    /// No SA_RESTORER: an x86-64 handler must name its return path.
    NoRestorer,
    Place(frame::PlaceError),
    /// The frame's memory is not the app's writable memory.
    Memory(u64),
}

/// A frame that cannot be built ends in SIGSEGV (`force_sigsegv`): for SIGSEGV itself
/// the disposition is reset first, so a second failure ends the app.
fn force_sigsegv(k: &mut Kernel, sig: u64, tf: &TrapFrame, why: SetupError) {
    if sig == SIGSEGV {
        k.sig.action_mut(SIGSEGV).handler = SIG_DFL;
    }
    k.sig.force(SIGSEGV, SigInfo::kernel());
    if !k.sig.catches(SIGSEGV) {
        let mut msg = crate::fmt::Buf::new();
        msg.push("nacre: cannot deliver signal ")
            .dec(sig)
            .push(" at rsp ")
            .hex(tf.rsp)
            .push(": ");
        match why {
            SetupError::NoRestorer => msg.push("the handler has no SA_RESTORER"),
            SetupError::Place(frame::PlaceError::AltStackOverflow) => {
                msg.push("the frame overflows the alternate stack")
            }
            SetupError::Place(frame::PlaceError::Wraps) => msg.push("no room for the frame"),
            SetupError::Memory(at) => msg.push("the frame at ").hex(at).push(" is not writable"),
        };
        msg.push("\n");
        let _ = k.console_write(2, msg.as_bytes());
    }
}

/// The app's siginfo for `sig`.
pub fn siginfo(sig: u64, info: &SigInfo) -> Siginfo {
    Siginfo {
        si_signo: sig as i32,
        si_errno: 0,
        si_code: info.code,
        field0: info.field0,
        ..Default::default()
    }
}

/// The frame's `sigcontext` for the app's state `tf`.
fn sigcontext(tf: &TrapFrame, info: &SigInfo, oldmask: u64, fpstate: u64) -> Sigcontext {
    Sigcontext {
        r8: tf.r8,
        r9: tf.r9,
        r10: tf.r10,
        r11: tf.r11,
        r12: tf.r12,
        r13: tf.r13,
        r14: tf.r14,
        r15: tf.r15,
        rdi: tf.rdi,
        rsi: tf.rsi,
        rbp: tf.rbp,
        rbx: tf.rbx,
        rdx: tf.rdx,
        rax: tf.rax,
        rcx: tf.rcx,
        rsp: tf.rsp,
        rip: tf.rip,
        eflags: tf.rflags,
        cs: tf.cs as u16,
        gs: 0,
        fs: 0,
        ss: tf.ss as u16,
        err: info.err,
        trapno: info.trapno,
        oldmask,
        cr2: info.cr2,
        fpstate,
        reserved1: [0; 8],
    }
}

fn memory(at: u64) -> impl Fn(UserMemError) -> SetupError {
    move |e| match e {
        UserMemError::Platform(p) => crate::fatal_error(p),
        _ => SetupError::Memory(at),
    }
}

/// Build the frame for a handler of `sig` and point `tf` at the handler
/// (`__setup_rt_frame`, `handle_signal`).
fn setup_frame(
    k: &mut Kernel,
    tf: &mut TrapFrame,
    image: *mut FxImage,
    sig: u64,
    info: &SigInfo,
    act: &SigAction,
    oldmask: u64,
) -> Result<(), SetupError> {
    if act.flags & SA_RESTORER == 0 {
        return Err(SetupError::NoRestorer);
    }
    let state_size = fpu::state_size();
    let alt = k.sig.thread.altstack;
    let onstack = act.flags & SA_ONSTACK != 0;
    let Placement {
        frame: at,
        fpstate,
        end,
    } = frame::place(tf.rsp, onstack, &alt, state_size).map_err(SetupError::Place)?;
    // The whole frame is the app's writable memory, mapped now: the ring-0 writes
    // below and the ring-3 XSAVE cannot fault.
    k.populate(at, end - at, true).map_err(memory(at))?;
    let xfeatures = fpu::xfeatures();
    let mut uc_flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
    if xfeatures != 0 {
        uc_flags |= UC_FP_XSTATE;
    }
    let f = RtSigframe {
        pretcode: act.restorer,
        uc: Ucontext {
            uc_flags,
            uc_link: 0,
            uc_stack: alt.saved(),
            uc_mcontext: sigcontext(tf, info, oldmask, fpstate),
            uc_sigmask: oldmask,
        },
        info: siginfo(sig, info),
    };
    k.copy_to_user(at, f.as_bytes()).map_err(memory(at))?;
    // SAFETY: `image` is the FXSAVE image the exit path loads for the app.
    if unsafe { fpu::save_for_handler(k, fpstate, image) } != Outcome::Done {
        return Err(SetupError::Memory(fpstate));
    }
    let sw = frame::sw_bytes(xfeatures, state_size);
    k.copy_to_user(fpstate + FPX_SW_BYTES_OFFSET, sw.as_bytes())
        .map_err(memory(fpstate))?;
    if xfeatures != 0 {
        k.copy_to_user(fpstate + state_size, &FP_XSTATE_MAGIC2.to_le_bytes())
            .map_err(memory(fpstate))?;
    }
    tf.rdi = sig;
    // In case the handler was declared without a prototype (varargs read AL).
    tf.rax = 0;
    tf.rsi = at + offset_of!(RtSigframe, info) as u64;
    tf.rdx = at + offset_of!(RtSigframe, uc) as u64;
    tf.rip = act.handler;
    tf.rsp = at;
    tf.cs = u64::from(USER_CS);
    tf.ss = u64::from(USER_DS);
    tf.rflags &= !HANDLER_CLEARED_FLAGS;
    Ok(())
}

/// rt_sigreturn from the frame below the app's RSP (the handler's `ret` popped the
/// restorer address): every register, the FPU state, the mask and the alternate
/// stack. A frame that cannot be read, or whose FPU state the CPU refuses, leaves
/// the registers as they are and sends SIGSEGV; one whose CS, SS or RIP the return
/// would fault on is restored and then sends SIGSEGV, as the IRET would on Linux.
fn sigreturn(k: &mut Kernel, tf: &mut TrapFrame, image: *mut FxImage) {
    let at = tf.rsp.wrapping_sub(8);
    let mut f = RtSigframe::new_zeroed();
    let read = k.copy_from_user(f.as_mut_bytes(), at);
    let restored = match read {
        Ok(()) => restore_fpu(k, &f.uc.uc_mcontext, image)
            .map(|()| frame::restore_regs(&f.uc.uc_mcontext, f.uc.uc_flags, tf.rflags)),
        Err(UserMemError::Platform(p)) => crate::fatal_error(p),
        Err(_) => Err(()),
    };
    let Ok(r) = restored else {
        if !k.sig.catches(SIGSEGV) {
            let mut msg = crate::fmt::Buf::new();
            msg.push("nacre: rt_sigreturn with a bad frame at ")
                .hex(at)
                .push("\n");
            let _ = k.console_write(2, msg.as_bytes());
        }
        k.sig.force(SIGSEGV, SigInfo::kernel());
        return;
    };
    let sc = r.regs;
    tf.r8 = sc.r8;
    tf.r9 = sc.r9;
    tf.r10 = sc.r10;
    tf.r11 = sc.r11;
    tf.r12 = sc.r12;
    tf.r13 = sc.r13;
    tf.r14 = sc.r14;
    tf.r15 = sc.r15;
    tf.rdi = sc.rdi;
    tf.rsi = sc.rsi;
    tf.rbp = sc.rbp;
    tf.rbx = sc.rbx;
    tf.rdx = sc.rdx;
    tf.rax = sc.rax;
    tf.rcx = sc.rcx;
    tf.rsp = sc.rsp;
    tf.rip = sc.rip;
    tf.rflags = r.rflags;
    tf.cs = u64::from(sc.cs);
    tf.ss = u64::from(sc.ss);
    k.sig.set_mask(f.uc.uc_sigmask);
    // `restore_altstack`: as sigaltstack would, at the restored RSP; refusals ignored.
    let _ = k.sig.thread.altstack.set(&f.uc.uc_stack, tf.rsp);
    if r.faults {
        if !k.sig.catches(SIGSEGV) {
            let mut msg = crate::fmt::Buf::new();
            msg.push("nacre: rt_sigreturn to rip ")
                .hex(sc.rip)
                .push(" with segments the app cannot have\n");
            let _ = k.console_write(2, msg.as_bytes());
        }
        // A general-protection fault, as the return would raise. The delivery that
        // follows replaces RIP or ends the app: the bad state is never returned to.
        k.sig.force(SIGSEGV, SigInfo::fault(SI_KERNEL, 0, 13, 0));
    }
}

/// Load the FPU state a returned frame points at (`fpu__restore_sig`), in ring 3.
fn restore_fpu(k: &mut Kernel, sc: &Sigcontext, image: *mut FxImage) -> Result<(), ()> {
    let src = if sc.fpstate == 0 {
        None
    } else {
        let at = sc.fpstate;
        let xsave = fpu::xfeatures() != 0;
        let state_size = fpu::state_size();
        let mut sw = FpxSwBytes::new_zeroed();
        let sw_at = at.checked_add(FPX_SW_BYTES_OFFSET).ok_or(())?;
        k.copy_from_user(sw.as_mut_bytes(), sw_at).map_err(|_| ())?;
        let size = u64::from(sw.xstate_size);
        let magic2 = if xsave && size <= state_size {
            let mut m = [0u8; 4];
            at.checked_add(size)
                .and_then(|m_at| k.copy_from_user(&mut m, m_at).ok())
                .map(|()| u32::from_le_bytes(m))
        } else {
            None
        };
        let kind = frame::fpstate_kind(at, &sw, magic2, state_size, xsave);
        let len = match kind {
            fpu::FrameState::Xsave { .. } => size,
            fpu::FrameState::Fxsave => FXSAVE_SIZE,
        };
        // FXRSTOR needs 16-byte alignment; the helper may only read the app's memory.
        if !at.is_multiple_of(16) {
            return Err(());
        }
        k.populate(at, len, false).map_err(|_| ())?;
        Some((at, kind))
    };
    // SAFETY: `image` is the FXSAVE image the exit path loads for the app.
    match unsafe { fpu::restore_from_frame(k, src, image) } {
        Outcome::Done => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall_frame(rax: u64) -> TrapFrame {
        TrapFrame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            rcx: 0x40_1002,
            rbx: 0,
            rax,
            vector: 0,
            error_code: 0,
            rip: 0x40_1002,
            cs: 0x23,
            rflags: 0x202,
            rsp: 0,
            ss: 0x1b,
        }
    }

    fn err(e: u64) -> u64 {
        super::super::super::errno_return(e)
    }

    #[test]
    fn interrupted_calls_restart_or_fail_as_linux_decides() {
        let nr = 202;
        // ERESTARTSYS: restarted with SA_RESTART, EINTR without.
        let mut tf = syscall_frame(err(ERESTARTSYS));
        restart_for_handler(&mut tf, nr, SA_RESTART);
        assert_eq!((tf.rax, tf.rip), (nr, 0x40_1000));
        let mut tf = syscall_frame(err(ERESTARTSYS));
        restart_for_handler(&mut tf, nr, 0);
        assert_eq!((tf.rax, tf.rip), (err(EINTR), 0x40_1002));
        // ERESTARTNOHAND and restart blocks: EINTR when a handler runs, whatever the
        // flags.
        for e in [ERESTARTNOHAND, ERESTART_RESTARTBLOCK] {
            let mut tf = syscall_frame(err(e));
            restart_for_handler(&mut tf, nr, SA_RESTART);
            assert_eq!(tf.rax, err(EINTR));
        }
        // ERESTARTNOINTR: always restarted.
        let mut tf = syscall_frame(err(ERESTARTNOINTR));
        restart_for_handler(&mut tf, nr, 0);
        assert_eq!(tf.rax, nr);
        // Without a handler: restarted.
        let mut tf = syscall_frame(err(ERESTARTNOHAND));
        restart_without_handler(&mut tf, nr);
        assert_eq!((tf.rax, tf.rip), (nr, 0x40_1000));
        // Ordinary results are left alone.
        for rax in [0, 5, err(EINTR), err(EAGAIN)] {
            let mut tf = syscall_frame(rax);
            restart_for_handler(&mut tf, nr, SA_RESTART);
            restart_without_handler(&mut tf, nr);
            assert_eq!((tf.rax, tf.rip), (rax, 0x40_1002));
        }
    }

    #[test]
    fn the_frame_records_the_interrupted_state() {
        let mut tf = syscall_frame(7);
        tf.r12 = 12;
        tf.rsp = 0x7fff_0000;
        let info = SigInfo::fault(SEGV_ACCERR, 0x1234, 14, 7);
        let sc = sigcontext(&tf, &info, 0x400, 0x7ffe_0000);
        assert_eq!(
            (sc.rax, sc.r12, sc.rsp, sc.rip),
            (7, 12, 0x7fff_0000, 0x40_1002)
        );
        assert_eq!((sc.trapno, sc.err, sc.cr2), (14, 7, 0x1234));
        assert_eq!((sc.cs, sc.ss), (0x23, 0x1b));
        assert_eq!((sc.oldmask, sc.fpstate), (0x400, 0x7ffe_0000));
        let si = siginfo(SIGSEGV, &info);
        assert_eq!(
            (si.si_signo, si.si_code, si.field0),
            (11, SEGV_ACCERR, 0x1234)
        );
        let kill = siginfo(10, &SigInfo::user(SI_USER));
        assert_eq!((kill.si_code, kill.field0), (SI_USER, PID));
    }
}
