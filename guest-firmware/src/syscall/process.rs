//! The process: identity, limits, CPU affinity, resource usage, randomness, futexes
//! (one thread), rseq registration and thread-local storage.

use super::errno::*;
use super::{mem_err, SysResult};
use crate::kernel::Kernel;
use nacre_shared_abi::layout::USER_VA_END;
use x86_64::registers::model_specific::{FsBase, GsBase};

/// The app's process id (and thread id: it is the only thread).
pub const PID: u64 = 1;

pub fn uname(k: &mut Kernel, buf: u64) -> SysResult {
    // struct utsname: six fields of 65 bytes (`include/uapi/linux/utsname.h`).
    let mut u = [0u8; 65 * 6];
    for (i, s) in [
        &b"Linux"[..],
        b"nacre",
        b"6.1.0-nacre",
        b"#1 SMP nacre",
        b"x86_64",
        b"(none)",
    ]
    .iter()
    .enumerate()
    {
        u[i * 65..i * 65 + s.len()].copy_from_slice(s);
    }
    k.copy_to_user(buf, &u).map_err(mem_err)?;
    Ok(0)
}

pub fn getpgid(pid: u64) -> SysResult {
    if pid == 0 || pid == PID {
        Ok(PID)
    } else {
        Err(ESRCH)
    }
}

/// setuid/setgid: the app runs as root (uid 0) and may keep being it.
pub fn setid(id: u64) -> SysResult {
    if id == 0 {
        Ok(0)
    } else {
        Err(EPERM)
    }
}

pub fn getresid(k: &mut Kernel, r: u64, e: u64, s: u64) -> SysResult {
    for va in [r, e, s] {
        k.copy_to_user(va, &0u32.to_le_bytes()).map_err(mem_err)?;
    }
    Ok(0)
}

pub fn set_robust_list(k: &mut Kernel, head: u64, len: u64) -> SysResult {
    // sizeof(struct robust_list_head) on x86-64 (`include/uapi/linux/futex.h`).
    if len != 24 {
        return Err(EINVAL);
    }
    k.thread.robust_list = head;
    Ok(0)
}

/// get_robust_list: the robust list head of thread `tid` (0: the caller) and its size.
pub fn get_robust_list(k: &mut Kernel, tid: u64, head_ptr: u64, len_ptr: u64) -> SysResult {
    let head = if tid == 0 || tid == u64::from(k.sched.current_tid()) {
        k.thread.robust_list
    } else {
        let slot = u32::try_from(tid)
            .ok()
            .and_then(|t| k.sched.threads.find(t))
            .ok_or(ESRCH)?;
        // SAFETY: a live thread's block is mapped; only the kernel reads it.
        unsafe { (*k.sched.block(slot)).ctl.robust_list }
    };
    k.copy_to_user(head_ptr, &head.to_le_bytes())
        .map_err(mem_err)?;
    k.copy_to_user(len_ptr, &24u64.to_le_bytes())
        .map_err(mem_err)?;
    Ok(0)
}

/// rseq (Linux `include/uapi/linux/rseq.h`): the area is registered and its
/// `cpu_id_start`/`cpu_id` (and `mm_cid`) set to the vCPU the thread runs on, and set
/// again whenever it runs on another ([`rseq_moved`]); a critical section interrupted
/// by preemption or a signal is aborted ([`rseq_preempted`]).
pub fn rseq(k: &mut Kernel, area: u64, len: u64, flags: u32, sig: u32) -> SysResult {
    const RSEQ_FLAG_UNREGISTER: u32 = 1;
    /// `ORIG_RSEQ_SIZE`: the original `struct rseq`.
    const ORIG_RSEQ_SIZE: u64 = 32;
    if flags & RSEQ_FLAG_UNREGISTER != 0 {
        if flags != RSEQ_FLAG_UNREGISTER || k.thread.rseq == 0 {
            return Err(EINVAL);
        }
        if area != k.thread.rseq {
            return Err(EINVAL);
        }
        if sig != k.thread.rseq_sig {
            return Err(EPERM);
        }
        k.thread.rseq = 0;
        return Ok(0);
    }
    if flags != 0 || len < ORIG_RSEQ_SIZE || !area.is_multiple_of(32) {
        return Err(EINVAL);
    }
    if k.thread.rseq != 0 {
        return Err(if k.thread.rseq == area { EBUSY } else { EINVAL });
    }
    // cpu_id_start (u32 at 0) and cpu_id (u32 at 4); from the extended layout,
    // node_id (at 24, always 0) and mm_cid (at 28: the vCPU too, which no other
    // running thread has) when the area has them.
    let cpu = k.sched.last_cpu as u32;
    let mut ids = [0u8; 8];
    ids[..4].copy_from_slice(&cpu.to_le_bytes());
    ids[4..].copy_from_slice(&cpu.to_le_bytes());
    k.copy_to_user(area, &ids).map_err(mem_err)?;
    if len >= 32 {
        k.copy_to_user(area + 24, &u64::from(cpu).wrapping_shl(32).to_le_bytes())
            .map_err(mem_err)?;
    }
    k.thread.rseq = area;
    k.thread.rseq_sig = sig;
    k.thread.rseq_cpu = cpu;
    k.thread.rseq_ext = len >= 32;
    Ok(0)
}

/// The running thread (just switched to) runs on another vCPU than its rseq area
/// says: update `cpu_id_start`, `cpu_id` and `mm_cid`, as Linux does on the way back
/// to user space after a migration. An area the app unmapped is left alone.
pub fn rseq_moved(k: &mut Kernel) {
    let area = k.thread.rseq;
    let cpu = k.sched.last_cpu as u32;
    if area == 0 || k.thread.rseq_cpu == cpu {
        return;
    }
    k.thread.rseq_cpu = cpu;
    let mut ids = [0u8; 8];
    ids[..4].copy_from_slice(&cpu.to_le_bytes());
    ids[4..].copy_from_slice(&cpu.to_le_bytes());
    let _ = k.copy_to_user(area, &ids);
    if k.thread.rseq_ext {
        let _ = k.copy_to_user(area + 28, &cpu.to_le_bytes());
    }
}

/// The thread is preempted, or gets a signal, in the app at `frame` (`rseq_ip_fixup`,
/// `kernel/rseq.c`): if its registered rseq area names a critical section
/// (`rseq_cs`, at offset 8) that the interrupted RIP is inside, the section is
/// aborted: RIP goes to its abort handler, whose preceding four bytes must be the
/// signature given at registration. The descriptor is cleared either way. A
/// descriptor that is malformed or cannot be read ends in SIGSEGV, as on Linux.
pub fn rseq_preempted(k: &mut Kernel, frame: &mut crate::arch::idt::TrapFrame) {
    let area = k.thread.rseq;
    if area == 0 || !frame.is_user() {
        return;
    }
    let mut ptr = [0u8; 8];
    if k.copy_from_user(&mut ptr, area + 8).is_err() {
        return rseq_fault(k);
    }
    let cs = u64::from_le_bytes(ptr);
    if cs == 0 {
        return;
    }
    // struct rseq_cs: version (u32), flags (u32), start_ip, post_commit_offset,
    // abort_ip (`include/uapi/linux/rseq.h`).
    let mut desc = [0u8; 32];
    if !cs.is_multiple_of(32) || k.copy_from_user(&mut desc, cs).is_err() {
        return rseq_fault(k);
    }
    let word = |i: usize| u64::from_le_bytes(desc[i..i + 8].try_into().unwrap_or([0; 8]));
    let (version, start, len, abort) = (
        u32::from_le_bytes(desc[0..4].try_into().unwrap_or([0; 4])),
        word(8),
        word(16),
        word(24),
    );
    let end = start.checked_add(len);
    let abort_inside = end.is_some_and(|e| (start..e).contains(&abort));
    if version != 0 || end.is_none_or(|e| e > USER_VA_END) || abort_inside || abort < 4 {
        return rseq_fault(k);
    }
    // The descriptor is cleared whether or not the RIP is in the section.
    if k.copy_to_user(area + 8, &[0u8; 8]).is_err() {
        return rseq_fault(k);
    }
    if !end.is_some_and(|e| (start..e).contains(&frame.rip)) {
        return;
    }
    let mut sig = [0u8; 4];
    if k.copy_from_user(&mut sig, abort - 4).is_err()
        || u32::from_le_bytes(sig) != k.thread.rseq_sig
    {
        return rseq_fault(k);
    }
    frame.rip = abort;
}

/// A broken rseq registration: SIGSEGV for the thread (`force_sigsegv`).
fn rseq_fault(k: &mut Kernel) {
    k.sig
        .force(super::signal::SIGSEGV, super::signal::SigInfo::kernel());
}

pub fn arch_prctl(k: &mut Kernel, code: u64, addr: u64) -> SysResult {
    // `arch/x86/include/uapi/asm/prctl.h`; FS/GS base MSRs: Intel SDM vol. 4, 2.1.
    const ARCH_SET_GS: u64 = 0x1001;
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    let mut msr = match code {
        ARCH_SET_FS | ARCH_GET_FS => FsBase::MSR,
        ARCH_SET_GS | ARCH_GET_GS => GsBase::MSR,
        _ => return Err(EINVAL),
    };
    if code == ARCH_SET_FS || code == ARCH_SET_GS {
        if addr >= USER_VA_END {
            return Err(EPERM);
        }
        // SAFETY: FS and GS base are the app's alone (the firmware addresses nothing
        // through FS or GS), and `addr` is a canonical user address.
        unsafe { msr.write(addr) };
        // Kept per thread, for switches.
        if code == ARCH_SET_FS {
            k.thread.fs_base = addr;
        } else {
            k.thread.gs_base = addr;
        }
    } else {
        let v = if code == ARCH_GET_FS {
            k.thread.fs_base
        } else {
            k.thread.gs_base
        };
        k.copy_to_user(addr, &v.to_le_bytes()).map_err(mem_err)?;
    }
    Ok(0)
}

pub fn prctl(k: &mut Kernel, option: u64, arg2: u64) -> SysResult {
    // `include/uapi/linux/prctl.h`.
    const PR_SET_PDEATHSIG: u64 = 1;
    const PR_GET_DUMPABLE: u64 = 3;
    const PR_SET_DUMPABLE: u64 = 4;
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    const PR_SET_VMA: u64 = 0x53564d41;
    match option {
        PR_SET_NAME => {
            // The name is at most 15 bytes and NUL-terminated; longer ones are cut.
            let mut name = [0u8; 16];
            for (i, slot) in name.iter_mut().take(15).enumerate() {
                let mut b = [0u8; 1];
                k.copy_from_user(&mut b, arg2 + i as u64).map_err(mem_err)?;
                if b[0] == 0 {
                    break;
                }
                *slot = b[0];
            }
            k.thread.comm = name;
            Ok(0)
        }
        PR_GET_NAME => {
            let name = k.thread.comm;
            k.copy_to_user(arg2, &name).map_err(mem_err)?;
            Ok(0)
        }
        PR_SET_PDEATHSIG | PR_SET_DUMPABLE | PR_SET_VMA => Ok(0),
        PR_GET_DUMPABLE => Ok(1),
        _ => Err(EINVAL),
    }
}

pub fn sched_getaffinity(k: &mut Kernel, pid: u64, len: u64, mask: u64) -> SysResult {
    if pid != 0 && pid != PID {
        return Err(ESRCH);
    }
    // The kernel's cpumask is one unsigned long here; the buffer must hold it.
    if len < 8 || !len.is_multiple_of(8) {
        return Err(EINVAL);
    }
    // Every vCPU that runs the app.
    let cpus = crate::arch::smp::cpus().clamp(1, 64);
    let all = u64::MAX >> (64 - cpus);
    k.copy_to_user(mask, &all.to_le_bytes()).map_err(mem_err)?;
    Ok(8)
}

pub fn sched_setaffinity(pid: u64, len: u64) -> SysResult {
    if pid != 0 && pid != PID {
        return Err(ESRCH);
    }
    if len == 0 {
        return Err(EINVAL);
    }
    Ok(0)
}

pub fn getcpu(k: &mut Kernel, cpu: u64, node: u64) -> SysResult {
    let here = k.sched.last_cpu as u32;
    for (va, value) in [(cpu, here), (node, 0)] {
        if va != 0 {
            k.copy_to_user(va, &value.to_le_bytes()).map_err(mem_err)?;
        }
    }
    Ok(0)
}

pub fn rlimit(k: &mut Kernel, resource: u64, new: u64, old: u64) -> SysResult {
    // `include/uapi/asm-generic/resource.h`.
    const RLIMIT_STACK: u64 = 3;
    const RLIMIT_NOFILE: u64 = 7;
    const RLIM_NLIMITS: u64 = 16;
    const RLIM_INFINITY: u64 = u64::MAX;
    if resource >= RLIM_NLIMITS {
        return Err(EINVAL);
    }
    let (cur, max) = match resource {
        RLIMIT_STACK => (crate::app::loader::STACK_SIZE, RLIM_INFINITY),
        RLIMIT_NOFILE => {
            let n = crate::fs::MAX_FDS as u64;
            (n, n)
        }
        _ => (RLIM_INFINITY, RLIM_INFINITY),
    };
    if new != 0 {
        // Limits cannot be raised; lowering is accepted and has no effect.
        let mut b = [0u8; 16];
        k.copy_from_user(&mut b, new).map_err(mem_err)?;
        let new_cur = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let new_max = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        if new_cur > new_max {
            return Err(EINVAL);
        }
        if new_max > max {
            return Err(EPERM);
        }
    }
    if old != 0 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&cur.to_le_bytes());
        b[8..].copy_from_slice(&max.to_le_bytes());
        k.copy_to_user(old, &b).map_err(mem_err)?;
    }
    Ok(0)
}

pub fn getrusage(k: &mut Kernel, who: i32, usage: u64) -> SysResult {
    // RUSAGE_SELF 0, RUSAGE_CHILDREN -1, RUSAGE_THREAD 1 (`include/uapi/linux/resource.h`).
    if !matches!(who, -1..=1) {
        return Err(EINVAL);
    }
    // struct rusage: ru_utime and ru_stime (timevals), then 14 longs.
    let mut r = [0u8; 144];
    if who != -1 {
        let ns = k.clock.cputime_ns();
        r[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        r[8..16].copy_from_slice(&(ns % 1_000_000_000 / 1000).to_le_bytes());
    }
    k.copy_to_user(usage, &r).map_err(mem_err)?;
    Ok(0)
}

pub fn sysinfo(k: &mut Kernel, info: u64) -> SysResult {
    // struct sysinfo on x86-64 (`include/uapi/linux/sysinfo.h`): uptime, loads[3],
    // totalram, freeram, sharedram, bufferram, totalswap, freeswap (longs), procs
    // (u16, padded), totalhigh, freehigh, mem_unit (u32): 112 bytes with padding.
    let mut s = [0u8; 112];
    let uptime = k.monotonic_ns() / 1_000_000_000;
    s[..8].copy_from_slice(&uptime.to_le_bytes());
    let (total, free) = k.frames.usage();
    s[32..40].copy_from_slice(&total.to_le_bytes());
    s[40..48].copy_from_slice(&free.to_le_bytes());
    s[80..82].copy_from_slice(&1u16.to_le_bytes());
    s[104..108].copy_from_slice(&1u32.to_le_bytes());
    k.copy_to_user(info, &s).map_err(mem_err)?;
    Ok(0)
}

/// getrandom: RDRAND (never the host). GRND_NONBLOCK/GRND_RANDOM/GRND_INSECURE make
/// no difference: the hardware source is always ready.
pub fn getrandom(k: &mut Kernel, buf: u64, len: u64, flags: u64) -> SysResult {
    const GRND_ALL: u64 = 0x7;
    if flags & !GRND_ALL != 0 {
        return Err(EINVAL);
    }
    let len = len.min(1 << 25);
    let mut done = 0;
    let mut chunk = [0u8; 256];
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        for w in chunk[..n.next_multiple_of(8)].chunks_exact_mut(8) {
            let r = crate::arch::cpu::hw_random().ok_or(EIO)?;
            w.copy_from_slice(&r.to_le_bytes());
        }
        k.copy_to_user(buf + done, &chunk[..n]).map_err(mem_err)?;
        done += n as u64;
    }
    Ok(len)
}
