//! The Linux syscall shim: the calls a static glibc or Rust std program makes to
//! start, print, allocate and exit. Anything else returns ENOSYS and is counted; the
//! counts go to the host with the exit hostcall.

pub mod errno;

use crate::arch::syscall_entry::SyscallFrame;
use crate::kernel::{Kernel, UserMemError, KERNEL};
use crate::mem::user::{Vma, PROT_EXEC, PROT_READ, PROT_WRITE};
use errno::*;
use nacre_shared_abi::layout::{PAGE_SIZE_4K, USER_VA_END};

/// Syscall numbers (Linux `arch/x86/entry/syscalls/syscall_64.tbl`).
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const CLOSE: u64 = 3;
    pub const FSTAT: u64 = 5;
    pub const POLL: u64 = 7;
    pub const LSEEK: u64 = 8;
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const RT_SIGACTION: u64 = 13;
    pub const RT_SIGPROCMASK: u64 = 14;
    pub const IOCTL: u64 = 16;
    pub const WRITEV: u64 = 20;
    pub const SCHED_YIELD: u64 = 24;
    pub const MADVISE: u64 = 28;
    pub const GETPID: u64 = 39;
    pub const EXIT: u64 = 60;
    pub const KILL: u64 = 62;
    pub const UNAME: u64 = 63;
    pub const FCNTL: u64 = 72;
    pub const READLINK: u64 = 89;
    pub const GETRLIMIT: u64 = 97;
    pub const GETUID: u64 = 102;
    pub const GETGID: u64 = 104;
    pub const GETEUID: u64 = 107;
    pub const GETEGID: u64 = 108;
    pub const GETPPID: u64 = 110;
    pub const SIGALTSTACK: u64 = 131;
    pub const ARCH_PRCTL: u64 = 158;
    pub const GETTID: u64 = 186;
    pub const SCHED_GETAFFINITY: u64 = 204;
    pub const SET_TID_ADDRESS: u64 = 218;
    pub const EXIT_GROUP: u64 = 231;
    pub const TGKILL: u64 = 234;
    pub const OPENAT: u64 = 257;
    pub const NEWFSTATAT: u64 = 262;
    pub const READLINKAT: u64 = 267;
    pub const SET_ROBUST_LIST: u64 = 273;
    pub const PRLIMIT64: u64 = 302;
    pub const GETRANDOM: u64 = 318;
}

/// Entry from `arch::syscall_entry`; returns the value for RAX.
pub fn dispatch(frame: &mut SyscallFrame) -> u64 {
    let args = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let nr = frame.rax;
    let mut guard = KERNEL.lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("syscall before boot finished")
    };
    let r = match handle(k, nr, args) {
        Ok(v) => v,
        Err(e) => (-(e as i64)) as u64,
    };
    if r == (-(ENOSYS as i64)) as u64 {
        let nr = u32::try_from(nr).unwrap_or(u32::MAX);
        if let Some(slot) = k.unsupported.iter_mut().find(|(n, c)| *n == nr || *c == 0) {
            *slot = (nr, slot.1.saturating_add(1));
        }
    }
    r
}

type SysResult = Result<u64, u64>;

fn efault(e: UserMemError) -> u64 {
    match e {
        UserMemError::Fault => EFAULT,
        UserMemError::NoMemory => ENOMEM,
        UserMemError::Platform(p) => crate::fatal_error(p),
    }
}

/// Exit the app with a Linux-style status.
pub fn exit_app(k: &mut Kernel, status: u8) -> ! {
    let mut pairs = [0u8; 8 * 64];
    let mut n = 0;
    for &(nr, count) in k.unsupported.iter().take_while(|(_, c)| *c > 0) {
        pairs[n..n + 4].copy_from_slice(&nr.to_le_bytes());
        pairs[n + 4..n + 8].copy_from_slice(&count.to_le_bytes());
        n += 8;
    }
    k.plat.exit(status, &pairs[..n])
}

fn handle(k: &mut Kernel, nr: u64, a: [u64; 6]) -> SysResult {
    match nr {
        nr::WRITE => sys_write(k, a[0], a[1], a[2]),
        nr::WRITEV => sys_writev(k, a[0], a[1], a[2]),
        nr::READ => {
            if a[0] <= 2 {
                Ok(0)
            } else {
                Err(EBADF)
            }
        }
        nr::CLOSE => {
            if a[0] <= 2 {
                Ok(0)
            } else {
                Err(EBADF)
            }
        }
        nr::FSTAT => stat_console(k, a[0], a[1]),
        nr::NEWFSTATAT => {
            // Only `fstatat(fd, "", buf, AT_EMPTY_PATH)` on the console is supported.
            let mut first = [0u8; 1];
            k.copy_from_user(&mut first, a[1]).map_err(efault)?;
            if first[0] == 0 && a[3] & AT_EMPTY_PATH != 0 {
                stat_console(k, a[0], a[2])
            } else {
                Err(ENOENT)
            }
        }
        nr::POLL => Ok(0),
        nr::LSEEK => Err(ESPIPE),
        nr::MMAP => sys_mmap(k, a),
        nr::MUNMAP => {
            let (start, end) = page_range(a[0], a[1])?;
            k.unmap_range(start, end).map_err(efault)?;
            Ok(0)
        }
        nr::MPROTECT => sys_mprotect(k, a[0], a[1], a[2] as u32),
        nr::BRK => Ok(k.set_brk(a[0])),
        nr::MADVISE => Ok(0),
        nr::RT_SIGACTION | nr::RT_SIGPROCMASK => {
            // No signals are ever delivered; report "default, empty mask".
            if a[2] != 0 {
                let zero = [0u8; 32];
                let len = if nr == nr::RT_SIGACTION {
                    32
                } else {
                    a[3].min(8) as usize
                };
                k.copy_to_user(a[2], &zero[..len]).map_err(efault)?;
            }
            Ok(0)
        }
        nr::SIGALTSTACK => {
            if a[1] != 0 {
                // stack_t { ss_sp, ss_flags = SS_DISABLE (2), ss_size }
                let mut old = [0u8; 24];
                old[8..12].copy_from_slice(&2u32.to_le_bytes());
                k.copy_to_user(a[1], &old).map_err(efault)?;
            }
            Ok(0)
        }
        nr::IOCTL => Err(ENOTTY),
        nr::FCNTL => match a[1] {
            1 | 2 => Ok(0), // F_GETFD / F_SETFD
            3 => Ok(2),     // F_GETFL: O_RDWR
            _ => Err(EINVAL),
        },
        nr::SCHED_YIELD => Ok(0),
        nr::GETPID | nr::GETTID | nr::SET_TID_ADDRESS => Ok(1),
        nr::GETPPID => Ok(0),
        nr::GETUID | nr::GETGID | nr::GETEUID | nr::GETEGID => Ok(0),
        nr::SET_ROBUST_LIST => Ok(0),
        nr::UNAME => sys_uname(k, a[0]),
        nr::ARCH_PRCTL => sys_arch_prctl(k, a[0], a[1]),
        nr::SCHED_GETAFFINITY => {
            let len = a[1].min(8);
            if len == 0 {
                return Err(EINVAL);
            }
            let mask = 1u64.to_le_bytes();
            k.copy_to_user(a[2], &mask[..len as usize])
                .map_err(efault)?;
            Ok(len)
        }
        nr::GETRLIMIT => rlimit(k, a[0], 0, a[1]),
        nr::PRLIMIT64 => {
            if a[0] != 0 && a[0] != 1 {
                return Err(ESRCH);
            }
            rlimit(k, a[1], a[2], a[3])
        }
        nr::READLINK | nr::READLINKAT | nr::OPENAT => Err(ENOENT),
        nr::GETRANDOM => sys_getrandom(k, a[0], a[1]),
        nr::EXIT | nr::EXIT_GROUP => exit_app(k, a[0] as u8),
        nr::KILL | nr::TGKILL => {
            let (pid, sig) = if nr == nr::KILL {
                (a[0], a[1])
            } else {
                (a[1], a[2])
            };
            if pid != 1 && pid != 0 {
                return Err(ESRCH);
            }
            if sig == 0 {
                return Ok(0);
            }
            // Like a shell reports a process killed by signal N.
            exit_app(k, (128 + (sig & 0x7F)) as u8)
        }
        _ => Err(ENOSYS),
    }
}

const AT_EMPTY_PATH: u64 = 0x1000;

fn page_range(addr: u64, len: u64) -> Result<(u64, u64), u64> {
    if !addr.is_multiple_of(PAGE_SIZE_4K) || len == 0 {
        return Err(EINVAL);
    }
    let end = addr.checked_add(len).ok_or(EINVAL)?;
    let end = (end + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
    if end > USER_VA_END {
        return Err(EINVAL);
    }
    Ok((addr, end))
}

fn sys_write(k: &mut Kernel, fd: u64, buf: u64, len: u64) -> SysResult {
    if fd != 1 && fd != 2 {
        return Err(EBADF);
    }
    let mut tmp = [0u8; 4096];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(tmp.len() as u64) as usize;
        k.copy_from_user(&mut tmp[..n], buf + done)
            .map_err(efault)?;
        let w = k.plat.console_write(fd as u32, &tmp[..n])?;
        done += w;
        if w < n as u64 {
            break;
        }
    }
    Ok(done)
}

fn sys_writev(k: &mut Kernel, fd: u64, iov: u64, cnt: u64) -> SysResult {
    if cnt > 1024 {
        return Err(EINVAL);
    }
    let mut total = 0u64;
    for i in 0..cnt {
        let mut e = [0u8; 16];
        k.copy_from_user(&mut e, iov + i * 16).map_err(efault)?;
        let base = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        let len = u64::from_le_bytes([e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15]]);
        let w = sys_write(k, fd, base, len)?;
        total += w;
        if w < len {
            break;
        }
    }
    Ok(total)
}

fn stat_console(k: &mut Kernel, fd: u64, buf: u64) -> SysResult {
    if fd > 2 {
        return Err(EBADF);
    }
    // struct stat (x86-64): st_mode at 24 (u32), st_blksize at 56.
    let mut st = [0u8; 144];
    const S_IFIFO: u32 = 0o010_000;
    st[24..28].copy_from_slice(&(S_IFIFO | 0o600).to_le_bytes());
    st[16..24].copy_from_slice(&1u64.to_le_bytes()); // st_nlink
    st[56..64].copy_from_slice(&4096u64.to_le_bytes());
    k.copy_to_user(buf, &st).map_err(efault)?;
    Ok(0)
}

fn sys_mmap(k: &mut Kernel, a: [u64; 6]) -> SysResult {
    const MAP_SHARED: u64 = 0x01;
    const MAP_FIXED: u64 = 0x10;
    const MAP_ANONYMOUS: u64 = 0x20;
    const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
    let (addr, len, prot, flags) = (a[0], a[1], a[2] as u32, a[3]);
    if flags & MAP_ANONYMOUS == 0 {
        return Err(ENODEV);
    }
    if flags & MAP_SHARED != 0 {
        return Err(EINVAL);
    }
    if len == 0 || len > USER_VA_END {
        return Err(EINVAL);
    }
    let len = (len + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        let (s, e) = page_range(addr, len)?;
        if k.vmas.overlaps(s, e) {
            if flags & MAP_FIXED_NOREPLACE != 0 {
                return Err(EEXIST);
            }
            k.unmap_range(s, e).map_err(efault)?;
        }
        s
    } else {
        k.find_free(len).ok_or(ENOMEM)?
    };
    let prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
    if !k.vmas.insert(Vma {
        start,
        end: start + len,
        prot,
    }) {
        return Err(ENOMEM);
    }
    Ok(start)
}

fn sys_mprotect(k: &mut Kernel, addr: u64, len: u64, prot: u32) -> SysResult {
    let (start, end) = page_range(addr, len)?;
    let prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
    k.split_range(start, end).map_err(efault)?;
    if !k.vmas.protect_range(start, end, prot) {
        return Err(ENOMEM);
    }
    // PROT_NONE keeps the frame but makes the page supervisor-only, so its contents
    // survive a later mprotect back to an accessible protection.
    let flags = Vma { start, end, prot }.pte_flags().unwrap_or(0);
    let mut va = start;
    while va < end {
        if k.pt.translate(va).is_some() {
            k.pt.set_flags_4k(va, flags);
        }
        va += PAGE_SIZE_4K;
    }
    Ok(0)
}

fn sys_uname(k: &mut Kernel, buf: u64) -> SysResult {
    let mut u = [0u8; 65 * 6];
    for (i, s) in [
        &b"Linux"[..],
        b"nacre",
        b"6.1.0-nacre",
        b"#1 nacre",
        b"x86_64",
        b"",
    ]
    .iter()
    .enumerate()
    {
        u[i * 65..i * 65 + s.len()].copy_from_slice(s);
    }
    k.copy_to_user(buf, &u).map_err(efault)?;
    Ok(0)
}

fn sys_arch_prctl(k: &mut Kernel, code: u64, addr: u64) -> SysResult {
    const ARCH_SET_GS: u64 = 0x1001;
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    const MSR_FS_BASE: u32 = 0xC000_0100;
    const MSR_GS_BASE: u32 = 0xC000_0101;
    let msr = match code {
        ARCH_SET_FS | ARCH_GET_FS => MSR_FS_BASE,
        ARCH_SET_GS | ARCH_GET_GS => MSR_GS_BASE,
        _ => return Err(EINVAL),
    };
    if code == ARCH_SET_FS || code == ARCH_SET_GS {
        if addr >= USER_VA_END {
            return Err(EPERM);
        }
        // SAFETY: FS/GS base are only used by the app; the firmware never uses them.
        unsafe { crate::arch::cpu::wrmsr(msr, addr) };
    } else {
        // SAFETY: reading FS/GS base has no side effects.
        let v = unsafe { crate::arch::cpu::rdmsr(msr) };
        k.copy_to_user(addr, &v.to_le_bytes()).map_err(efault)?;
    }
    Ok(0)
}

fn rlimit(k: &mut Kernel, resource: u64, new: u64, old: u64) -> SysResult {
    const RLIMIT_STACK: u64 = 3;
    const RLIMIT_NOFILE: u64 = 7;
    const RLIM_INFINITY: u64 = u64::MAX;
    let _ = new; // Limits cannot be changed; setting is accepted and ignored.
    if old != 0 {
        let (cur, max) = match resource {
            RLIMIT_STACK => (crate::app::loader::STACK_SIZE, RLIM_INFINITY),
            RLIMIT_NOFILE => (1024, 1024),
            r if r < 16 => (RLIM_INFINITY, RLIM_INFINITY),
            _ => return Err(EINVAL),
        };
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&cur.to_le_bytes());
        b[8..].copy_from_slice(&max.to_le_bytes());
        k.copy_to_user(old, &b).map_err(efault)?;
    }
    Ok(0)
}

fn sys_getrandom(k: &mut Kernel, buf: u64, len: u64) -> SysResult {
    let len = len.min(1 << 20);
    let mut done = 0;
    while done < len {
        let r = crate::arch::cpu::hw_random().ok_or(EAGAIN)?;
        let n = (len - done).min(8);
        k.copy_to_user(buf + done, &r.to_le_bytes()[..n as usize])
            .map_err(efault)?;
        done += n;
    }
    Ok(len)
}
