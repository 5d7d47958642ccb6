//! Threads: clone and clone3 for new threads of the app, exit of one thread, gettid,
//! set_tid_address, sched_yield and futex. Processes (fork, vfork, clone without
//! CLONE_THREAD) are not supported: the app is one process.

use super::errno::*;
use super::{mem_err, SysResult};
use crate::kernel::Kernel;
use crate::sched::futex::{WakeOp, BITSET_MATCH_ANY};
use crate::sched::threads::Wake;
use crate::sched::{self, PendingClone, ThreadBlock};
use nacre_shared_abi::layout::USER_VA_END;

/// clone flags (`include/uapi/linux/sched.h`).
const CSIGNAL: u64 = 0x0000_00FF;
const CLONE_VM: u64 = 0x0000_0100;
const CLONE_FS: u64 = 0x0000_0200;
const CLONE_FILES: u64 = 0x0000_0400;
const CLONE_SIGHAND: u64 = 0x0000_0800;
const CLONE_PTRACE: u64 = 0x0000_2000;
const CLONE_VFORK: u64 = 0x0000_4000;
const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_SYSVSEM: u64 = 0x0004_0000;
const CLONE_SETTLS: u64 = 0x0008_0000;
const CLONE_PARENT_SETTID: u64 = 0x0010_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x0020_0000;
const CLONE_DETACHED: u64 = 0x0040_0000;
const CLONE_UNTRACED: u64 = 0x0080_0000;
const CLONE_CHILD_SETTID: u64 = 0x0100_0000;

/// The flags a new thread may carry: what glibc, musl, Go and Rust pass, and the
/// ones with no effect on a thread of an untraced process.
const THREAD_FLAGS: u64 = CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_CHILD_SETTID
    | CLONE_DETACHED
    | CLONE_UNTRACED
    | CLONE_PTRACE;

/// What clone and clone3 both take.
#[derive(Debug, Clone, Copy, Default)]
struct CloneArgs {
    flags: u64,
    /// The child's stack pointer (0: the parent's).
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
    exit_signal: u64,
}

/// clone(flags, stack, parent_tid, child_tid, tls): the x86-64 argument order.
pub fn clone(k: &mut Kernel, flags: u64, stack: u64, ptid: u64, ctid: u64, tls: u64) -> SysResult {
    let args = CloneArgs {
        flags: flags & !CSIGNAL,
        stack,
        parent_tid: ptid,
        child_tid: ctid,
        tls,
        exit_signal: flags & CSIGNAL,
    };
    spawn(k, args)
}

/// `struct clone_args` (`include/uapi/linux/sched.h`): the first version's size, and
/// the largest the firmware reads (with set_tid, set_tid_size and cgroup).
const CLONE_ARGS_SIZE_VER0: u64 = 64;
const CLONE_ARGS_SIZE_VER2: u64 = 88;

/// clone3(args, size).
pub fn clone3(k: &mut Kernel, uargs: u64, size: u64) -> SysResult {
    if !(CLONE_ARGS_SIZE_VER0..=4096).contains(&size) {
        return Err(EINVAL);
    }
    let mut raw = [0u8; CLONE_ARGS_SIZE_VER2 as usize];
    let n = size.min(CLONE_ARGS_SIZE_VER2) as usize;
    k.copy_from_user(&mut raw[..n], uargs).map_err(mem_err)?;
    // A larger structure from a newer C library is fine if its extra bytes are zero
    // (`copy_struct_from_user`).
    let mut extra = size - n as u64;
    let mut at = uargs + n as u64;
    let mut chunk = [0u8; 64];
    while extra > 0 {
        let m = extra.min(64) as usize;
        k.copy_from_user(&mut chunk[..m], at).map_err(mem_err)?;
        if chunk[..m].iter().any(|&b| b != 0) {
            return Err(E2BIG);
        }
        extra -= m as u64;
        at += m as u64;
    }
    let field = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
    // set_tid, set_tid_size, cgroup.
    let (flags, child_tid, parent_tid, exit_signal) = (field(0), field(2), field(3), field(4));
    let (stack, stack_size, tls) = (field(5), field(6), field(7));
    if field(9) != 0 || field(10) != 0 || exit_signal > CSIGNAL {
        // Choosing the child's tid and cgroups are for process managers.
        return Err(EINVAL);
    }
    if (stack == 0) != (stack_size == 0) {
        return Err(EINVAL);
    }
    spawn(
        k,
        CloneArgs {
            flags,
            stack: stack.wrapping_add(stack_size),
            parent_tid,
            child_tid,
            tls,
            exit_signal,
        },
    )
}

/// A new thread sharing everything with the running one (`copy_process`'s checks
/// for a thread), runnable once the parent's syscall has returned.
fn spawn(k: &mut Kernel, a: CloneArgs) -> SysResult {
    if a.flags & CLONE_THREAD == 0 || a.flags & CLONE_VFORK != 0 {
        // A new process (fork, vfork, posix_spawn): the app is one process.
        return Err(ENOSYS);
    }
    if a.flags & CLONE_SIGHAND == 0 || a.flags & CLONE_VM == 0 {
        // A thread shares the signal handlers, which needs a shared address space.
        return Err(EINVAL);
    }
    if a.flags & !THREAD_FLAGS != 0 || a.exit_signal != 0 {
        return Err(EINVAL);
    }
    if a.flags & CLONE_SETTLS != 0 && a.tls >= USER_VA_END {
        return Err(EPERM);
    }
    if k.sched.here().pending_clone.is_some() {
        return Err(EAGAIN);
    }
    let (slot, tid) = k.sched.threads.spawn().map_err(|_| EAGAIN)?;
    if !sched::map_slot(k, slot) {
        abandon(k, slot);
        return Err(ENOMEM);
    }
    let tid_bytes = tid.to_le_bytes();
    for (flag, addr) in [
        (CLONE_PARENT_SETTID, a.parent_tid),
        (CLONE_CHILD_SETTID, a.child_tid),
    ] {
        if a.flags & flag != 0 && k.copy_to_user(addr, &tid_bytes).is_err() {
            abandon(k, slot);
            return Err(EFAULT);
        }
    }
    let ctl = k.thread.child(
        if a.flags & CLONE_CHILD_CLEARTID != 0 {
            a.child_tid
        } else {
            0
        },
        if a.flags & CLONE_SETTLS != 0 {
            a.tls
        } else {
            k.thread.fs_base
        },
    );
    let mask = k.sig.thread.mask;
    let block = k.sched.block(slot);
    // SAFETY: the slot was just mapped (or kept from an earlier thread) and its
    // thread has not run: nothing else refers to its block. Written in place: the
    // block is too large to build on the stack and move.
    unsafe {
        (&raw mut (*block).ctl).write(ctl);
        init_signals(block, mask);
    }
    k.sched.here().pending_clone = Some(PendingClone { slot, rsp: a.stack });
    // The child's registers are the parent's at this syscall's exit.
    crate::syscall::signal::set_hint_here(true);
    Ok(u64::from(tid))
}

/// A new thread's signal state: the parent's mask, nothing pending.
///
/// # Safety
/// `block` is mapped and referred to by nothing else.
unsafe fn init_signals(block: *mut ThreadBlock, mask: u64) {
    // SAFETY: the caller's contract.
    unsafe { (*block).sig.reset(mask) };
}

/// Undo a spawn that could not be completed.
fn abandon(k: &mut Kernel, slot: usize) {
    k.sched.threads.discard(slot);
}

/// exit: the running thread ends; the last one's exit ends the app.
pub fn exit(k: &mut Kernel, status: u64) -> ! {
    sched::exit_thread(k, status as u8)
}

/// gettid.
pub fn gettid(k: &mut Kernel) -> SysResult {
    Ok(u64::from(k.sched.current_tid()))
}

/// set_tid_address: the word zeroed and woken when this thread exits; the tid.
pub fn set_tid_address(k: &mut Kernel, addr: u64) -> SysResult {
    k.thread.clear_child_tid = addr;
    gettid(k)
}

/// sched_yield.
pub fn sched_yield(k: &mut Kernel) -> SysResult {
    sched::yield_now(k);
    Ok(0)
}

/// futex operations (`include/uapi/linux/futex.h`).
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

/// futex(uaddr, op, val, timeout or val2, uaddr2, val3). Private and shared futexes
/// are the same: the app is one address space.
pub fn futex(k: &mut Kernel, a: [u64; 6]) -> SysResult {
    let (uaddr, val, uaddr2, val3) = (a[0], a[2] as u32, a[4], a[5] as u32);
    let cmd = a[1] & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let realtime = a[1] & FUTEX_CLOCK_REALTIME != 0;
    if realtime && cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET {
        return Err(ENOSYS);
    }
    // The count arguments are C ints: a negative one means "all" for wakes.
    let count = |v: u64| u32::try_from(v as u32 as i32).unwrap_or(u32::MAX);
    match cmd {
        FUTEX_WAIT => wait(k, uaddr, val, a[3], BITSET_MATCH_ANY, false, realtime),
        FUTEX_WAIT_BITSET if val3 != 0 => wait(k, uaddr, val, a[3], val3, true, realtime),
        FUTEX_WAKE => wake(k, uaddr, BITSET_MATCH_ANY, count(a[2])),
        FUTEX_WAKE_BITSET if val3 != 0 => wake(k, uaddr, val3, count(a[2])),
        FUTEX_WAIT_BITSET | FUTEX_WAKE_BITSET => Err(EINVAL),
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            check_address(uaddr)?;
            check_address(uaddr2)?;
            if (a[2] as i32) < 0 || (a[3] as u32 as i32) < 0 {
                return Err(EINVAL);
            }
            if cmd == FUTEX_CMP_REQUEUE && read_word(k, uaddr)? != val3 {
                return Err(EAGAIN);
            }
            let sched::Sched {
                threads, futexes, ..
            } = &mut *k.sched;
            let (woken, moved) = futexes.requeue(uaddr, uaddr2, val, a[3] as u32, &mut |slot| {
                threads.wake(slot as usize, Wake::Woken);
            });
            Ok(u64::from(woken + moved))
        }
        FUTEX_WAKE_OP => {
            check_address(uaddr)?;
            check_address(uaddr2)?;
            let op = WakeOp::decode(val3).ok_or(ENOSYS)?;
            // No other thread runs between the read and the write: the operation is
            // atomic for the app.
            let old = read_word(k, uaddr2)?;
            k.copy_to_user(uaddr2, &op.apply(old).to_le_bytes())
                .map_err(mem_err)?;
            let mut woken = sched::futex_wake(k, uaddr, BITSET_MATCH_ANY, count(a[2]));
            if op.compare(old) {
                woken += sched::futex_wake(k, uaddr2, BITSET_MATCH_ANY, count(a[3]));
            }
            Ok(u64::from(woken))
        }
        _ => Err(ENOSYS),
    }
}

/// A futex word's address: 4-byte aligned (EINVAL) in the app's half (EFAULT).
fn check_address(uaddr: u64) -> Result<(), u64> {
    if !uaddr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    if uaddr >= USER_VA_END {
        return Err(EFAULT);
    }
    Ok(())
}

fn read_word(k: &mut Kernel, uaddr: u64) -> Result<u32, u64> {
    let mut v = [0u8; 4];
    k.copy_from_user(&mut v, uaddr).map_err(mem_err)?;
    Ok(u32::from_le_bytes(v))
}

fn wake(k: &mut Kernel, uaddr: u64, bitset: u32, max: u32) -> SysResult {
    check_address(uaddr)?;
    Ok(u64::from(sched::futex_wake(k, uaddr, bitset, max)))
}

/// FUTEX_WAIT (timeout relative, CLOCK_MONOTONIC) and FUTEX_WAIT_BITSET (timeout
/// absolute, CLOCK_MONOTONIC or with FUTEX_CLOCK_REALTIME CLOCK_REALTIME): sleep
/// while the word holds `val`, until a wake whose bitset meets `bitset`, the
/// timeout, or a signal (restarted after a handler with SA_RESTART when there is no
/// timeout, `futex_wait`).
fn wait(
    k: &mut Kernel,
    uaddr: u64,
    val: u32,
    timeout: u64,
    bitset: u32,
    absolute: bool,
    realtime: bool,
) -> SysResult {
    check_address(uaddr)?;
    let deadline = if timeout == 0 {
        u64::MAX
    } else {
        let ns = super::time::read_timespec(k, timeout)?;
        if !absolute {
            k.monotonic_ns().saturating_add(ns)
        } else if realtime {
            k.realtime_to_monotonic(ns)
        } else {
            ns
        }
    };
    if read_word(k, uaddr)? != val {
        return Err(EAGAIN);
    }
    let interrupted = if timeout == 0 {
        super::signal::ERESTARTSYS
    } else {
        super::signal::ERESTART_RESTARTBLOCK
    };
    if k.sig.deliverable() {
        return Err(interrupted);
    }
    if deadline != u64::MAX && deadline <= k.monotonic_ns() {
        return Err(ETIMEDOUT);
    }
    if deadline == u64::MAX
        && k.sched.threads.live() == 1
        && super::signal::alarm_deadline(k).is_none()
    {
        let _ = k.console_write(
            2,
            b"nacre: the app waits on a futex that no other thread can wake; stopping it\n",
        );
        super::exit_app(k, 128 + 9);
    }
    let slot = k.sched.current() as u32;
    if k.sched.futexes.wait(slot, uaddr, bitset).is_err() {
        return Err(ENOMEM);
    }
    sched::FUTEX_WAITS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    match sched::block(k, deadline) {
        Wake::Woken => Ok(0),
        Wake::TimedOut => Err(ETIMEDOUT),
        Wake::Interrupted | Wake::None => {
            k.sched.futexes.cancel(slot);
            Err(interrupted)
        }
    }
}
