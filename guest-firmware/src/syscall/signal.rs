//! Signals of a single-threaded app that nothing outside can signal: dispositions,
//! the mask and the alternate stack are kept so that what an app sets it reads back;
//! a signal the app sends itself takes its default action (or is ignored when the app
//! ignores it or blocks it). Handlers are recorded but never run: nacre delivers no
//! signals, so a signal with a handler installed also takes its default action. A
//! terminating signal ends the app with status 128 + the signal number, as a shell
//! reports it (abort() exits 134).

use super::errno::*;
use super::process::PID;
use super::{exit_app, mem_err, SysResult};
use crate::kernel::Kernel;

/// Signal numbers (Linux `arch/x86/include/uapi/asm/signal.h`).
const SIGKILL: u64 = 9;
const SIGCHLD: u64 = 17;
const SIGCONT: u64 = 18;
const SIGSTOP: u64 = 19;
const SIGURG: u64 = 23;
const SIGWINCH: u64 = 28;
/// Highest signal number (`_NSIG`).
const NSIG: u64 = 64;
/// `SIG_IGN`.
const SIG_IGN: u64 = 1;
/// rt_sigprocmask `how` (Linux `include/uapi/asm-generic/signal-defs.h`).
const SIG_BLOCK: u64 = 0;
const SIG_UNBLOCK: u64 = 1;
const SIG_SETMASK: u64 = 2;
/// sigaltstack flags and minimum size (`include/uapi/linux/signal.h`, x86
/// `MINSIGSTKSZ`).
const SS_ONSTACK: u32 = 1;
const SS_DISABLE: u32 = 2;
const MINSIGSTKSZ: u64 = 2048;

/// The app's signal state.
#[derive(Debug)]
pub struct Signals {
    /// `struct sigaction` as the kernel takes it on x86-64: handler, flags, restorer,
    /// mask (32 bytes), for signals 1..=64.
    actions: [[u64; 4]; NSIG as usize],
    /// Blocked signals (bit n - 1 for signal n).
    pub mask: u64,
    /// `stack_t`: ss_sp, ss_flags, ss_size.
    altstack: (u64, u32, u64),
}

impl Signals {
    /// Defaults: every disposition SIG_DFL, nothing blocked, no alternate stack.
    pub const fn new() -> Self {
        Self {
            actions: [[0; 4]; NSIG as usize],
            mask: 0,
            altstack: (0, SS_DISABLE, 0),
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

fn bit(sig: u64) -> u64 {
    1 << (sig - 1)
}

/// Signals that can be neither caught nor blocked.
const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

pub fn rt_sigaction(k: &mut Kernel, sig: u64, act: u64, oldact: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 || !(1..=NSIG).contains(&sig) {
        return Err(EINVAL);
    }
    let i = (sig - 1) as usize;
    let old = k.sig.actions[i];
    if act != 0 {
        if sig == SIGKILL || sig == SIGSTOP {
            return Err(EINVAL);
        }
        let mut b = [0u8; 32];
        k.copy_from_user(&mut b, act).map_err(mem_err)?;
        let mut new = [0u64; 4];
        for (w, chunk) in new.iter_mut().zip(b.chunks_exact(8)) {
            let mut q = [0u8; 8];
            q.copy_from_slice(chunk);
            *w = u64::from_le_bytes(q);
        }
        new[3] &= !UNBLOCKABLE;
        k.sig.actions[i] = new;
    }
    if oldact != 0 {
        let mut b = [0u8; 32];
        for (chunk, w) in b.chunks_exact_mut(8).zip(old) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        k.copy_to_user(oldact, &b).map_err(mem_err)?;
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
    let old = k.sig.mask;
    if set != 0 {
        let mut b = [0u8; 8];
        k.copy_from_user(&mut b, set).map_err(mem_err)?;
        let s = u64::from_le_bytes(b) & !UNBLOCKABLE;
        k.sig.mask = match how {
            SIG_BLOCK => old | s,
            SIG_UNBLOCK => old & !s,
            SIG_SETMASK => s,
            _ => return Err(EINVAL),
        };
    }
    if oldset != 0 {
        k.copy_to_user(oldset, &old.to_le_bytes())
            .map_err(mem_err)?;
    }
    Ok(0)
}

pub fn sigaltstack(k: &mut Kernel, ss: u64, old: u64) -> SysResult {
    let prev = k.sig.altstack;
    if ss != 0 {
        let mut b = [0u8; 24];
        k.copy_from_user(&mut b, ss).map_err(mem_err)?;
        let sp = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let flags = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        let size = u64::from_le_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]);
        if flags & !(SS_DISABLE | (1 << 31)) != 0 {
            return Err(EINVAL);
        }
        if flags & SS_DISABLE != 0 {
            k.sig.altstack = (0, SS_DISABLE, 0);
        } else {
            if size < MINSIGSTKSZ {
                return Err(ENOMEM);
            }
            k.sig.altstack = (sp, flags, size);
        }
    }
    if old != 0 {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&prev.0.to_le_bytes());
        // Never on the alternate stack: no handler ever runs.
        let flags = prev.1 & !SS_ONSTACK;
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[16..].copy_from_slice(&prev.2.to_le_bytes());
        k.copy_to_user(old, &b).map_err(mem_err)?;
    }
    Ok(0)
}

/// A signal the app sent itself.
fn raise(k: &mut Kernel, sig: u64) -> SysResult {
    if sig == 0 {
        return Ok(0);
    }
    if sig > NSIG {
        return Err(EINVAL);
    }
    let handler = k.sig.actions[(sig - 1) as usize][0];
    let blocked = k.sig.mask & bit(sig) != 0;
    // Ignored or blocked (it would stay pending: nothing is ever delivered).
    if (handler == SIG_IGN && sig != SIGKILL && sig != SIGSTOP) || blocked {
        return Ok(0);
    }
    match sig {
        // Default action "ignore" (signal(7)); SIGSTOP would stop the process, and
        // nothing could continue it: treated as ignored too.
        SIGCHLD | SIGCONT | SIGURG | SIGWINCH | SIGSTOP | 20..=22 => Ok(0),
        _ => exit_app(k, (128 + sig) as u8),
    }
}

pub fn kill(k: &mut Kernel, pid: i64, sig: u64) -> SysResult {
    // The app is process PID, alone in its process group.
    if pid != PID as i64 && pid != 0 && pid != -1 && pid != -(PID as i64) {
        return Err(ESRCH);
    }
    raise(k, sig)
}

pub fn tgkill(k: &mut Kernel, tgid: i64, tid: i64, sig: u64) -> SysResult {
    if tgid != PID as i64 || tid != PID as i64 {
        return if tgid <= 0 || tid <= 0 {
            Err(EINVAL)
        } else {
            Err(ESRCH)
        };
    }
    raise(k, sig)
}
