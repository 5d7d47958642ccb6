//! The Linux syscall layer: what static glibc, musl and Rust std programs call to
//! start, use files, memory, time and the console, and exit. Each call is a free
//! function in the module of its kind; [`handle`] is the one table. Anything else
//! returns ENOSYS and is counted; the counts go to the host with the exit hostcall
//! (`nacre run --stats` lists them).

pub mod attest;
pub mod errno;
pub mod fs;
pub mod io;
pub mod mem;
pub mod process;
pub mod signal;
pub mod time;

use crate::arch::syscall_entry::SyscallFrame;
use crate::kernel::{Kernel, UserMemError, KERNEL};
use errno::*;

/// Syscall numbers (Linux `arch/x86/entry/syscalls/syscall_64.tbl`).
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const OPEN: u64 = 2;
    pub const CLOSE: u64 = 3;
    pub const STAT: u64 = 4;
    pub const FSTAT: u64 = 5;
    pub const LSTAT: u64 = 6;
    pub const POLL: u64 = 7;
    pub const LSEEK: u64 = 8;
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const RT_SIGACTION: u64 = 13;
    pub const RT_SIGPROCMASK: u64 = 14;
    pub const IOCTL: u64 = 16;
    pub const PREAD64: u64 = 17;
    pub const PWRITE64: u64 = 18;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const ACCESS: u64 = 21;
    pub const SCHED_YIELD: u64 = 24;
    pub const MREMAP: u64 = 25;
    pub const MSYNC: u64 = 26;
    pub const MADVISE: u64 = 28;
    pub const DUP: u64 = 32;
    pub const DUP2: u64 = 33;
    pub const NANOSLEEP: u64 = 35;
    pub const GETPID: u64 = 39;
    pub const EXIT: u64 = 60;
    pub const KILL: u64 = 62;
    pub const UNAME: u64 = 63;
    pub const FCNTL: u64 = 72;
    pub const FLOCK: u64 = 73;
    pub const FSYNC: u64 = 74;
    pub const FDATASYNC: u64 = 75;
    pub const FTRUNCATE: u64 = 77;
    pub const GETCWD: u64 = 79;
    pub const CHDIR: u64 = 80;
    pub const FCHDIR: u64 = 81;
    pub const RENAME: u64 = 82;
    pub const MKDIR: u64 = 83;
    pub const RMDIR: u64 = 84;
    pub const CREAT: u64 = 85;
    pub const LINK: u64 = 86;
    pub const UNLINK: u64 = 87;
    pub const SYMLINK: u64 = 88;
    pub const READLINK: u64 = 89;
    pub const CHMOD: u64 = 90;
    pub const FCHMOD: u64 = 91;
    pub const UMASK: u64 = 95;
    pub const GETTIMEOFDAY: u64 = 96;
    pub const GETRLIMIT: u64 = 97;
    pub const GETRUSAGE: u64 = 98;
    pub const SYSINFO: u64 = 99;
    pub const GETUID: u64 = 102;
    pub const GETGID: u64 = 104;
    pub const SETUID: u64 = 105;
    pub const SETGID: u64 = 106;
    pub const GETEUID: u64 = 107;
    pub const GETEGID: u64 = 108;
    pub const GETPPID: u64 = 110;
    pub const GETPGRP: u64 = 111;
    pub const GETGROUPS: u64 = 115;
    pub const GETRESUID: u64 = 118;
    pub const GETRESGID: u64 = 120;
    pub const GETPGID: u64 = 121;
    pub const GETSID: u64 = 124;
    pub const SIGALTSTACK: u64 = 131;
    pub const PRCTL: u64 = 157;
    pub const ARCH_PRCTL: u64 = 158;
    pub const SETRLIMIT: u64 = 160;
    pub const GETTID: u64 = 186;
    pub const TKILL: u64 = 200;
    pub const TIME: u64 = 201;
    pub const FUTEX: u64 = 202;
    pub const SCHED_SETAFFINITY: u64 = 203;
    pub const SCHED_GETAFFINITY: u64 = 204;
    pub const GETDENTS64: u64 = 217;
    pub const SET_TID_ADDRESS: u64 = 218;
    pub const CLOCK_GETTIME: u64 = 228;
    pub const CLOCK_GETRES: u64 = 229;
    pub const CLOCK_NANOSLEEP: u64 = 230;
    pub const EXIT_GROUP: u64 = 231;
    pub const TGKILL: u64 = 234;
    pub const OPENAT: u64 = 257;
    pub const MKDIRAT: u64 = 258;
    pub const NEWFSTATAT: u64 = 262;
    pub const UNLINKAT: u64 = 263;
    pub const READLINKAT: u64 = 267;
    pub const FACCESSAT: u64 = 269;
    pub const PPOLL: u64 = 271;
    pub const SET_ROBUST_LIST: u64 = 273;
    pub const DUP3: u64 = 292;
    pub const PREADV: u64 = 295;
    pub const PRLIMIT64: u64 = 302;
    pub const GETCPU: u64 = 309;
    pub const GETRANDOM: u64 = 318;
    pub const STATX: u64 = 332;
    pub const RSEQ: u64 = 334;
    pub const FACCESSAT2: u64 = 439;
}

/// A syscall's result: the value for RAX, or a Linux errno.
pub type SysResult = Result<u64, u64>;

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
    match handle(k, nr, args) {
        Ok(v) => v,
        Err(e) => {
            if e == ENOSYS {
                count_unsupported(k, nr);
            }
            (-(e as i64)) as u64
        }
    }
}

fn count_unsupported(k: &mut Kernel, nr: u64) {
    let nr = u32::try_from(nr).unwrap_or(u32::MAX);
    if let Some(slot) = k.unsupported.iter_mut().find(|(n, c)| *n == nr || *c == 0) {
        *slot = (nr, slot.1.saturating_add(1));
    }
}

/// The errno for a failed user-memory access (a platform error is fatal).
pub fn mem_err(e: UserMemError) -> u64 {
    match e {
        UserMemError::Fault => EFAULT,
        UserMemError::NoMemory => ENOMEM,
        UserMemError::Platform(p) => crate::fatal_error(p),
    }
}

/// Exit the app with a Linux-style status.
pub fn exit_app(k: &mut Kernel, status: u8) -> ! {
    k.exit(status)
}

fn handle(k: &mut Kernel, nr: u64, a: [u64; 6]) -> SysResult {
    match nr {
        nr::READ => io::read(k, a[0], a[1], a[2]),
        nr::WRITE => io::write(k, a[0], a[1], a[2]),
        nr::PREAD64 => io::pread(k, a[0], a[1], a[2], a[3]),
        nr::PWRITE64 => io::pwrite(k, a[0], a[1], a[2], a[3]),
        nr::READV => io::readv(k, a[0], a[1], a[2], None),
        nr::PREADV => io::readv(k, a[0], a[1], a[2], Some(a[3])),
        nr::WRITEV => io::writev(k, a[0], a[1], a[2]),
        nr::LSEEK => io::lseek(k, a[0], a[1] as i64, a[2]),
        nr::POLL => io::poll(k, a[0], a[1], Some(a[2] as i32 as i64 * 1_000_000)),
        nr::PPOLL => {
            let timeout = time::read_timeout(k, a[2])?;
            io::poll(k, a[0], a[1], timeout)
        }
        nr::IOCTL => io::ioctl(k, a[0], a[1], a[2]),
        nr::FSYNC | nr::FDATASYNC => io::fsync(k, a[0]),

        nr::OPEN => fs::openat(k, fs::AT_FDCWD, a[0], a[1] as u32),
        nr::OPENAT => fs::openat(k, a[0] as i32 as i64, a[1], a[2] as u32),
        nr::CREAT => fs::openat(k, fs::AT_FDCWD, a[0], 0o1101),
        nr::CLOSE => fs::close(k, a[0]),
        nr::STAT => fs::fstatat(k, fs::AT_FDCWD, a[0], a[1], 0),
        nr::LSTAT => fs::fstatat(k, fs::AT_FDCWD, a[0], a[1], fs::AT_SYMLINK_NOFOLLOW),
        nr::FSTAT => fs::fstat(k, a[0], a[1]),
        nr::NEWFSTATAT => fs::fstatat(k, a[0] as i32 as i64, a[1], a[2], a[3]),
        nr::STATX => fs::statx(k, a[0] as i32 as i64, a[1], a[2], a[3] as u32, a[4]),
        nr::ACCESS => fs::faccessat(k, fs::AT_FDCWD, a[0], a[1], 0),
        nr::FACCESSAT => fs::faccessat(k, a[0] as i32 as i64, a[1], a[2], 0),
        nr::FACCESSAT2 => fs::faccessat(k, a[0] as i32 as i64, a[1], a[2], a[3]),
        nr::READLINK => fs::readlinkat(k, fs::AT_FDCWD, a[0], a[1], a[2]),
        nr::READLINKAT => fs::readlinkat(k, a[0] as i32 as i64, a[1], a[2], a[3]),
        nr::GETDENTS64 => fs::getdents64(k, a[0], a[1], a[2]),
        nr::DUP => fs::dup(k, a[0]),
        nr::DUP2 => fs::dup2(k, a[0], a[1]),
        nr::DUP3 => fs::dup3(k, a[0], a[1], a[2]),
        nr::FCNTL => fs::fcntl(k, a[0], a[1], a[2]),
        nr::GETCWD => fs::getcwd(k, a[0], a[1]),
        nr::CHDIR => fs::chdir(k, a[0]),
        nr::FCHDIR => fs::fchdir(k, a[0]),
        nr::FTRUNCATE => fs::ftruncate(k, a[0]),
        nr::FLOCK => fs::flock(k, a[0]),
        nr::MKDIR | nr::RMDIR | nr::UNLINK | nr::RENAME | nr::LINK | nr::SYMLINK | nr::CHMOD => {
            fs::modify_path(k, fs::AT_FDCWD, a[0])
        }
        nr::MKDIRAT | nr::UNLINKAT => fs::modify_path(k, a[0] as i32 as i64, a[1]),
        nr::FCHMOD => fs::fchmod(k, a[0]),
        nr::UMASK => Ok(fs::umask(k, a[0])),

        nr::MMAP => mem::mmap(k, a),
        nr::MUNMAP => mem::munmap(k, a[0], a[1]),
        nr::MPROTECT => mem::mprotect(k, a[0], a[1], a[2] as u32),
        nr::MREMAP => mem::mremap(k, a[0], a[1], a[2], a[3], a[4]),
        nr::MADVISE => mem::madvise(k, a[0], a[1], a[2]),
        nr::MSYNC => mem::msync(k, a[0], a[1], a[2]),
        nr::BRK => Ok(k.set_brk(a[0])),

        nr::CLOCK_GETTIME => time::clock_gettime(k, a[0] as i32, a[1]),
        nr::CLOCK_GETRES => time::clock_getres(k, a[0] as i32, a[1]),
        nr::GETTIMEOFDAY => time::gettimeofday(k, a[0], a[1]),
        nr::TIME => time::time(k, a[0]),
        nr::NANOSLEEP => time::nanosleep(k, a[0], a[1]),
        nr::CLOCK_NANOSLEEP => time::clock_nanosleep(k, a[0] as i32, a[1], a[2], a[3]),

        nr::RT_SIGACTION => signal::rt_sigaction(k, a[0], a[1], a[2], a[3]),
        nr::RT_SIGPROCMASK => signal::rt_sigprocmask(k, a[0], a[1], a[2], a[3]),
        nr::SIGALTSTACK => signal::sigaltstack(k, a[0], a[1]),
        nr::KILL => signal::kill(k, a[0] as i32 as i64, a[1]),
        nr::TKILL => signal::tgkill(k, process::PID as i64, a[0] as i32 as i64, a[1]),
        nr::TGKILL => signal::tgkill(k, a[0] as i32 as i64, a[1] as i32 as i64, a[2]),

        nr::EXIT | nr::EXIT_GROUP => exit_app(k, a[0] as u8),
        nr::UNAME => process::uname(k, a[0]),
        nr::GETPID | nr::GETTID | nr::GETPGRP | nr::GETSID => Ok(process::PID),
        nr::GETPGID => process::getpgid(a[0]),
        nr::GETPPID => Ok(0),
        nr::GETUID | nr::GETGID | nr::GETEUID | nr::GETEGID => Ok(0),
        nr::SETUID | nr::SETGID => process::setid(a[0]),
        nr::GETRESUID | nr::GETRESGID => process::getresid(k, a[0], a[1], a[2]),
        nr::GETGROUPS => Ok(0),
        nr::SET_TID_ADDRESS => {
            k.tid_address = a[0];
            Ok(process::PID)
        }
        nr::SET_ROBUST_LIST => process::set_robust_list(k, a[0], a[1]),
        nr::RSEQ => process::rseq(k, a[0], a[1], a[2] as u32, a[3] as u32),
        nr::ARCH_PRCTL => process::arch_prctl(k, a[0], a[1]),
        nr::PRCTL => process::prctl(k, a[0], a[1]),
        nr::SCHED_YIELD => Ok(0),
        nr::SCHED_GETAFFINITY => process::sched_getaffinity(k, a[0], a[1], a[2]),
        nr::SCHED_SETAFFINITY => process::sched_setaffinity(a[0], a[1]),
        nr::GETCPU => process::getcpu(k, a[0], a[1]),
        nr::GETRLIMIT => process::rlimit(k, a[0], 0, a[1]),
        nr::SETRLIMIT => process::rlimit(k, a[0], a[1], 0),
        nr::PRLIMIT64 => {
            if a[0] != 0 && a[0] != process::PID {
                return Err(ESRCH);
            }
            process::rlimit(k, a[1], a[2], a[3])
        }
        nr::GETRUSAGE => process::getrusage(k, a[0] as i32, a[1]),
        nr::SYSINFO => process::sysinfo(k, a[0]),
        nr::GETRANDOM => process::getrandom(k, a[0], a[1], a[2]),
        nr::FUTEX => process::futex(k, a),
        _ => Err(ENOSYS),
    }
}
