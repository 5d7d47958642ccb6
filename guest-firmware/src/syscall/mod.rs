//! The Linux syscall layer: what static glibc, musl and Rust std programs call to
//! start, use files, memory, time and the console, and exit. Each call is a free
//! function in the module of its kind; [`handle`] is the one table, keyed by the
//! `syscalls` crate's `Sysno` (Linux `arch/x86/entry/syscalls/syscall_64.tbl`).
//! Anything else returns ENOSYS and is counted; the counts go to the host with the
//! exit hostcall (`nacre run --stats` lists them).

pub mod attest;
pub mod epoll;
pub mod errno;
pub mod eventfd;
pub mod fs;
pub mod io;
pub mod mem;
pub mod membarrier;
pub mod memfile;
pub mod pipe;
pub mod poll;
pub mod process;
pub mod signal;
pub mod socket;
pub mod thread;
pub mod time;
pub mod timerfd;

use crate::arch::fpu::FxImage;
use crate::arch::idt::TrapFrame;
use crate::arch::syscall_entry::SyscallFrame;
use crate::kernel::{Kernel, UserMemError};
use errno::*;
use syscalls::Sysno;

/// A syscall's result: the value for RAX, or a Linux errno.
pub type SysResult = Result<u64, u64>;

/// A C `int` argument (a descriptor, a clock id, a pid): the low 32 bits of its
/// register. The kernel reads only those (the syscall ABI leaves the upper half of
/// an `int` argument unspecified: musl sign-extends, others may not).
pub fn int_arg(reg: u64) -> i32 {
    reg as u32 as i32
}

/// An `int` argument widened as the handlers take it (`AT_FDCWD` stays -100).
pub fn long_of_int(reg: u64) -> i64 {
    i64::from(int_arg(reg))
}

/// A C `unsigned int` argument (flags, protections): the low 32 bits of its register.
pub fn uint_arg(reg: u64) -> u32 {
    reg as u32
}

/// RAX for a failed syscall: the negated errno, as the Linux syscall ABI returns it.
pub fn errno_return(errno: u64) -> u64 {
    (errno as i64).wrapping_neg() as u64
}

/// Entry from `arch::syscall_entry`; returns the value for RAX.
pub fn dispatch(frame: &mut SyscallFrame) -> u64 {
    let args = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let nr = frame.rax;
    let mut guard = crate::kernel::lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("syscall before boot finished")
    };
    k.syscalls.count(nr);
    match handle(k, nr, args) {
        Ok(v) => v,
        Err(e) => {
            if e == ENOSYS {
                count_unsupported(&mut k.unsupported, nr);
            }
            errno_return(e)
        }
    }
}

/// Entry from `arch::syscall_entry` when the signal layer's exit hint is set: whether
/// the exit path must call [`exit_work`].
pub fn prepare_exit() -> bool {
    let mut guard = crate::kernel::lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("syscall before boot finished")
    };
    k.sched.here().pending_clone.is_some() | signal::deliver::prepare_exit(k)
}

/// The exit path's work after syscall `nr`, with the app's whole register state in
/// `tf` (RAX: the result) and its FXSAVE image at `image`: deliver signals, perform
/// an rt_sigreturn, restart an interrupted call, start a new thread.
///
/// # Safety
/// `image` is the exit path's FXSAVE image on the running thread's kernel stack,
/// which nothing else refers to during the call.
pub unsafe fn exit_work(tf: &mut TrapFrame, image: *mut FxImage, nr: u64) {
    let mut guard = crate::kernel::lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("syscall before boot finished")
    };
    // SAFETY: the caller's contract.
    unsafe { crate::sched::start_pending_clone(k, tf, image) };
    signal::deliver::exit_to_user(k, tf, image, Some(nr));
}

/// Syscall numbers counted one by one: Linux's x86-64 table stays below this (the
/// x32 ones, from 512, are unsupported and counted as such).
const COUNTED_SYSCALLS: usize = 512;

/// How often the app made each syscall, for `nacre run --stats` (`syscalls.NAME`):
/// one increment per call, and a list of the numbers used so that the exit hostcall
/// sends only those.
#[derive(Debug)]
pub struct SyscallCounts {
    counts: [u32; COUNTED_SYSCALLS],
    /// The numbers with a count, in order of first use.
    used: [u16; COUNTED_SYSCALLS],
    nused: usize,
}

impl Default for SyscallCounts {
    fn default() -> Self {
        Self::new()
    }
}

impl SyscallCounts {
    /// No calls yet.
    pub const fn new() -> Self {
        Self {
            counts: [0; COUNTED_SYSCALLS],
            used: [0; COUNTED_SYSCALLS],
            nused: 0,
        }
    }

    /// Count one call of syscall `nr` (numbers past the table are not counted).
    pub fn count(&mut self, nr: u64) {
        let Some(c) = usize::try_from(nr)
            .ok()
            .and_then(|i| self.counts.get_mut(i))
        else {
            return;
        };
        if *c == 0 {
            self.used[self.nused] = nr as u16;
            self.nused += 1;
        }
        *c = c.saturating_add(1);
    }

    /// `(number, count)` of every syscall made, in order of first use.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.used[..self.nused]
            .iter()
            .map(|&nr| (u32::from(nr), self.counts[usize::from(nr)]))
    }
}

/// Count one call of unsupported syscall `nr` in `table` ((number, count) in order of
/// first use; a full table counts only the syscalls it holds).
pub fn count_unsupported(table: &mut [(u32, u32)], nr: u64) {
    let nr = u32::try_from(nr).unwrap_or(u32::MAX);
    if let Some(slot) = table.iter_mut().find(|(n, c)| *n == nr || *c == 0) {
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
    let Some(sysno) = usize::try_from(nr).ok().and_then(Sysno::new) else {
        return Err(ENOSYS);
    };
    match sysno {
        Sysno::read => io::read(k, a[0], a[1], a[2]),
        Sysno::write => io::write(k, a[0], a[1], a[2]),
        Sysno::pread64 => io::pread(k, a[0], a[1], a[2], a[3]),
        Sysno::pwrite64 => io::pwrite(k, a[0], a[1], a[2], a[3]),
        Sysno::readv => io::readv(k, a[0], a[1], a[2], None),
        Sysno::preadv => io::readv(k, a[0], a[1], a[2], Some(a[3])),
        Sysno::writev => io::writev(k, a[0], a[1], a[2], None),
        Sysno::pwritev => io::writev(k, a[0], a[1], a[2], Some(a[3])),
        Sysno::lseek => io::lseek(k, a[0], a[1] as i64, a[2]),
        Sysno::poll => poll::poll(k, a[0], a[1], Some(i64::from(int_arg(a[2])) * 1_000_000)),
        Sysno::ppoll => poll::ppoll(k, a[0], a[1], a[2], a[3], a[4]),
        Sysno::select => poll::select(k, int_arg(a[0]), a[1], a[2], a[3], a[4]),
        Sysno::pselect6 => poll::pselect6(k, int_arg(a[0]), [a[1], a[2], a[3]], a[4], a[5]),
        Sysno::pipe => pipe::pipe2(k, a[0], 0),
        Sysno::pipe2 => pipe::pipe2(k, a[0], uint_arg(a[1])),
        Sysno::socket => socket::socket(k, a[0], a[1], a[2]),
        Sysno::bind => socket::bind(k, a[0], a[1], a[2]),
        Sysno::listen => socket::listen(k, a[0], a[1]),
        Sysno::accept => socket::accept4(k, a[0], a[1], a[2], 0),
        Sysno::accept4 => socket::accept4(k, a[0], a[1], a[2], a[3]),
        Sysno::connect => socket::connect(k, a[0], a[1], a[2]),
        Sysno::getsockname => socket::name(k, a[0], a[1], a[2], false),
        Sysno::getpeername => socket::name(k, a[0], a[1], a[2], true),
        Sysno::setsockopt => socket::setsockopt(k, a[0], a[1], a[2], a[3], a[4]),
        Sysno::getsockopt => socket::getsockopt(k, a[0], a[1], a[2], a[3], a[4]),
        Sysno::shutdown => socket::shutdown(k, a[0], a[1]),
        Sysno::sendto => socket::sendto(k, a[0], a[1], a[2], a[3], a[4], a[5]),
        Sysno::recvfrom => socket::recvfrom(k, a[0], a[1], a[2], a[3], a[4], a[5]),
        Sysno::sendmsg => socket::sendmsg(k, a[0], a[1], a[2]),
        Sysno::sendfile => io::sendfile(k, a[0], a[1], a[2], a[3]),
        Sysno::sendmmsg => socket::sendmmsg(k, a[0], a[1], a[2], a[3]),
        Sysno::recvmmsg => socket::recvmmsg(k, a[0], a[1], a[2], a[3], a[4]),
        Sysno::recvmsg => socket::recvmsg(k, a[0], a[1], a[2]),
        Sysno::eventfd => eventfd::eventfd2(k, uint_arg(a[0]), 0),
        Sysno::eventfd2 => eventfd::eventfd2(k, uint_arg(a[0]), uint_arg(a[1])),
        Sysno::epoll_create => epoll::epoll_create(k, int_arg(a[0])),
        Sysno::epoll_create1 => epoll::epoll_create1(k, uint_arg(a[0])),
        Sysno::epoll_ctl => epoll::epoll_ctl(k, a[0], uint_arg(a[1]), a[2], a[3]),
        Sysno::epoll_wait => epoll::epoll_wait(k, a[0], a[1], int_arg(a[2]), int_arg(a[3])),
        Sysno::epoll_pwait => epoll::epoll_pwait(k, a),
        Sysno::epoll_pwait2 => epoll::epoll_pwait2(k, a),
        Sysno::ioctl => io::ioctl(k, a[0], a[1], a[2]),
        Sysno::fsync | Sysno::fdatasync | Sysno::syncfs => io::fsync(k, a[0]),
        Sysno::sync => Ok(0),

        Sysno::open => fs::openat(k, fs::AT_FDCWD, a[0], uint_arg(a[1]), uint_arg(a[2])),
        Sysno::openat => fs::openat(k, long_of_int(a[0]), a[1], uint_arg(a[2]), uint_arg(a[3])),
        Sysno::creat => fs::openat(k, fs::AT_FDCWD, a[0], 0o1101, uint_arg(a[1])),
        Sysno::close => fs::close(k, a[0]),
        Sysno::stat => fs::fstatat(k, fs::AT_FDCWD, a[0], a[1], 0),
        Sysno::lstat => fs::fstatat(k, fs::AT_FDCWD, a[0], a[1], fs::AT_SYMLINK_NOFOLLOW),
        Sysno::fstat => fs::fstat(k, a[0], a[1]),
        Sysno::newfstatat => fs::fstatat(k, long_of_int(a[0]), a[1], a[2], a[3]),
        Sysno::statx => fs::statx(k, long_of_int(a[0]), a[1], a[2], uint_arg(a[3]), a[4]),
        Sysno::access => fs::faccessat(k, fs::AT_FDCWD, a[0], a[1], 0),
        Sysno::faccessat => fs::faccessat(k, long_of_int(a[0]), a[1], a[2], 0),
        Sysno::faccessat2 => fs::faccessat(k, long_of_int(a[0]), a[1], a[2], a[3]),
        Sysno::readlink => fs::readlinkat(k, fs::AT_FDCWD, a[0], a[1], a[2]),
        Sysno::readlinkat => fs::readlinkat(k, long_of_int(a[0]), a[1], a[2], a[3]),
        Sysno::getdents64 => fs::getdents64(k, a[0], a[1], a[2]),
        Sysno::dup => fs::dup(k, a[0]),
        Sysno::dup2 => fs::dup2(k, a[0], a[1]),
        Sysno::dup3 => fs::dup3(k, a[0], a[1], a[2]),
        Sysno::fcntl => fs::fcntl(k, a[0], a[1], a[2]),
        Sysno::getcwd => fs::getcwd(k, a[0], a[1]),
        Sysno::chdir => fs::chdir(k, a[0]),
        Sysno::fchdir => fs::fchdir(k, a[0]),
        Sysno::ftruncate => fs::ftruncate(k, a[0], a[1]),
        Sysno::truncate => fs::truncate(k, a[0], a[1]),
        Sysno::fallocate => fs::fallocate(k, a[0], a[1], a[2], a[3]),
        Sysno::flock => fs::flock(k, a[0]),
        Sysno::statfs => fs::statfs(k, a[0], a[1]),
        Sysno::fstatfs => fs::fstatfs(k, a[0], a[1]),
        Sysno::mkdir => fs::mkdirat(k, fs::AT_FDCWD, a[0], a[1]),
        Sysno::mkdirat => fs::mkdirat(k, long_of_int(a[0]), a[1], a[2]),
        Sysno::rmdir => fs::unlinkat(k, fs::AT_FDCWD, a[0], 0x200),
        Sysno::unlink => fs::unlinkat(k, fs::AT_FDCWD, a[0], 0),
        Sysno::unlinkat => fs::unlinkat(k, long_of_int(a[0]), a[1], a[2]),
        Sysno::rename => fs::renameat2(k, fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1], 0),
        Sysno::renameat => fs::renameat2(k, long_of_int(a[0]), a[1], long_of_int(a[2]), a[3], 0),
        Sysno::renameat2 => fs::renameat2(
            k,
            long_of_int(a[0]),
            a[1],
            long_of_int(a[2]),
            a[3],
            u64::from(uint_arg(a[4])),
        ),
        Sysno::link => fs::linkat(k, fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1], 0),
        Sysno::linkat => fs::linkat(k, long_of_int(a[0]), a[1], long_of_int(a[2]), a[3], a[4]),
        Sysno::symlink => fs::symlinkat(k, a[0], fs::AT_FDCWD, a[1]),
        Sysno::symlinkat => fs::symlinkat(k, a[0], long_of_int(a[1]), a[2]),
        Sysno::chmod => fs::fchmodat(k, fs::AT_FDCWD, a[0], a[1], 0),
        Sysno::fchmodat => fs::fchmodat(k, long_of_int(a[0]), a[1], a[2], 0),
        Sysno::fchmod => fs::fchmod(k, a[0], a[1]),
        Sysno::chown => fs::fchownat(k, fs::AT_FDCWD, a[0], a[1], a[2], 0),
        Sysno::lchown => fs::fchownat(k, fs::AT_FDCWD, a[0], a[1], a[2], fs::AT_SYMLINK_NOFOLLOW),
        Sysno::fchownat => fs::fchownat(k, long_of_int(a[0]), a[1], a[2], a[3], a[4]),
        Sysno::fchown => fs::fchown(k, a[0], a[1], a[2]),
        Sysno::utimensat => fs::utimensat(k, long_of_int(a[0]), a[1], a[2], a[3]),
        Sysno::utimes => fs::utimes(k, fs::AT_FDCWD, a[0], a[1], true),
        Sysno::futimesat => fs::utimes(k, long_of_int(a[0]), a[1], a[2], true),
        Sysno::utime => fs::utimes(k, fs::AT_FDCWD, a[0], a[1], false),
        Sysno::umask => Ok(fs::umask(k, a[0])),

        Sysno::mmap => mem::mmap(k, a),
        Sysno::munmap => mem::munmap(k, a[0], a[1]),
        Sysno::mprotect => mem::mprotect(k, a[0], a[1], uint_arg(a[2])),
        Sysno::mremap => mem::mremap(k, a[0], a[1], a[2], a[3], a[4]),
        Sysno::madvise => mem::madvise(k, a[0], a[1], a[2]),
        Sysno::msync => mem::msync(k, a[0], a[1], a[2]),
        Sysno::brk => Ok(k.set_brk(a[0])),

        Sysno::clock_gettime => time::clock_gettime(k, int_arg(a[0]), a[1]),
        Sysno::clock_getres => time::clock_getres(k, int_arg(a[0]), a[1]),
        Sysno::gettimeofday => time::gettimeofday(k, a[0], a[1]),
        Sysno::time => time::time(k, a[0]),
        Sysno::nanosleep => time::nanosleep(k, a[0], a[1]),
        Sysno::clock_nanosleep => time::clock_nanosleep(k, int_arg(a[0]), a[1], a[2], a[3]),
        Sysno::timerfd_create => timerfd::timerfd_create(k, int_arg(a[0]), uint_arg(a[1])),
        Sysno::timerfd_settime => timerfd::timerfd_settime(k, a[0], uint_arg(a[1]), a[2], a[3]),
        Sysno::timerfd_gettime => timerfd::timerfd_gettime(k, a[0], a[1]),

        Sysno::rt_sigaction => signal::rt_sigaction(k, a[0], a[1], a[2], a[3]),
        Sysno::rt_sigprocmask => signal::rt_sigprocmask(k, a[0], a[1], a[2], a[3]),
        Sysno::rt_sigpending => signal::rt_sigpending(k, a[0], a[1]),
        Sysno::rt_sigreturn => signal::rt_sigreturn(k),
        Sysno::rt_sigsuspend => signal::rt_sigsuspend(k, a[0], a[1]),
        Sysno::rt_sigtimedwait => signal::rt_sigtimedwait(k, a[0], a[1], a[2], a[3]),
        Sysno::pause => signal::pause(k),
        Sysno::sigaltstack => {
            let sp = crate::arch::syscall_entry::user_rsp();
            signal::sigaltstack(k, a[0], a[1], sp)
        }
        Sysno::kill => signal::kill(k, long_of_int(a[0]), uint_arg(a[1]).into()),
        Sysno::tkill => signal::tgkill(
            k,
            process::PID as i64,
            long_of_int(a[0]),
            uint_arg(a[1]).into(),
        ),
        Sysno::tgkill => signal::tgkill(
            k,
            long_of_int(a[0]),
            long_of_int(a[1]),
            uint_arg(a[2]).into(),
        ),
        Sysno::alarm => signal::alarm(k, uint_arg(a[0]).into()),
        Sysno::setitimer => signal::setitimer(k, uint_arg(a[0]).into(), a[1], a[2]),
        Sysno::getitimer => signal::getitimer(k, uint_arg(a[0]).into(), a[1]),

        Sysno::exit => thread::exit(k, a[0]),
        Sysno::exit_group => exit_app(k, a[0] as u8),
        Sysno::clone => thread::clone(k, a[0], a[1], a[2], a[3], a[4]),
        Sysno::clone3 => thread::clone3(k, a[0], a[1]),
        Sysno::gettid => thread::gettid(k),
        Sysno::uname => process::uname(k, a[0]),
        Sysno::getpid | Sysno::getpgrp | Sysno::getsid => Ok(process::PID),
        Sysno::getpgid => process::getpgid(a[0]),
        Sysno::getppid => Ok(0),
        Sysno::getuid | Sysno::getgid | Sysno::geteuid | Sysno::getegid => Ok(0),
        Sysno::setuid | Sysno::setgid => process::setid(a[0]),
        Sysno::getresuid | Sysno::getresgid => process::getresid(k, a[0], a[1], a[2]),
        Sysno::getgroups => Ok(0),
        Sysno::set_tid_address => thread::set_tid_address(k, a[0]),
        Sysno::set_robust_list => process::set_robust_list(k, a[0], a[1]),
        Sysno::get_robust_list => process::get_robust_list(k, a[0], a[1], a[2]),
        Sysno::rseq => process::rseq(k, a[0], a[1], uint_arg(a[2]), uint_arg(a[3])),
        Sysno::arch_prctl => process::arch_prctl(k, a[0], a[1]),
        Sysno::prctl => process::prctl(k, a[0], a[1]),
        Sysno::sched_yield => thread::sched_yield(k),
        Sysno::sched_getaffinity => process::sched_getaffinity(k, a[0], a[1], a[2]),
        Sysno::sched_setaffinity => process::sched_setaffinity(a[0], a[1]),
        Sysno::getcpu => process::getcpu(k, a[0], a[1]),
        Sysno::getrlimit => process::rlimit(k, a[0], 0, a[1]),
        Sysno::setrlimit => process::rlimit(k, a[0], a[1], 0),
        Sysno::prlimit64 => {
            if a[0] != 0 && a[0] != process::PID {
                return Err(ESRCH);
            }
            process::rlimit(k, a[1], a[2], a[3])
        }
        Sysno::getrusage => process::getrusage(k, int_arg(a[0]), a[1]),
        Sysno::sysinfo => process::sysinfo(k, a[0]),
        Sysno::getrandom => process::getrandom(k, a[0], a[1], a[2]),
        Sysno::futex => thread::futex(k, a),
        Sysno::membarrier => {
            membarrier::membarrier(k, int_arg(a[0]), uint_arg(a[1]), int_arg(a[2]))
        }
        _ => Err(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_arguments_are_the_low_half_of_the_register() {
        // musl passes AT_FDCWD sign-extended, a zero-extending caller would not.
        assert_eq!(long_of_int((-100i64) as u64), -100);
        assert_eq!(long_of_int(0xFFFF_FF9C), -100);
        assert_eq!(long_of_int(0xDEAD_0000_0000_0003), 3);
        assert_eq!(int_arg(0x1_0000_0001), 1);
        assert_eq!(uint_arg(0xFFFF_FFFF_0008_0000), 0x8_0000);
    }

    #[test]
    fn errors_return_as_negated_errnos() {
        assert_eq!(errno_return(ENOSYS), (-38i64) as u64);
        assert_eq!(errno_return(EPERM), u64::MAX);
        assert_eq!(errno_return(0), 0);
    }

    #[test]
    fn unsupported_syscalls_are_counted_in_order_of_first_use() {
        let mut table = [(0u32, 0u32); 3];
        for nr in [500, 600, 500, 500, 1 << 40] {
            count_unsupported(&mut table, nr);
        }
        assert_eq!(table, [(500, 3), (600, 1), (u32::MAX, 1)]);
        count_unsupported(&mut table, 700);
        assert_eq!(table, [(500, 3), (600, 1), (u32::MAX, 1)], "a full table");
        table[1].1 = u32::MAX;
        count_unsupported(&mut table, 600);
        assert_eq!(table[1], (600, u32::MAX), "counts saturate");
    }

    #[test]
    fn every_syscall_is_counted_once_listed_in_order_of_first_use() {
        let mut c = SyscallCounts::new();
        for nr in [228, 1, 228, 228, 511, 512, u64::MAX] {
            c.count(nr);
        }
        let all: std::vec::Vec<_> = c.iter().collect();
        assert_eq!(all, [(228, 3), (1, 1), (511, 1)]);
    }

    #[test]
    fn the_table_uses_the_linux_x86_64_numbers() {
        // arch/x86/entry/syscalls/syscall_64.tbl
        let known = [
            (0, Sysno::read),
            (9, Sysno::mmap),
            (60, Sysno::exit),
            (158, Sysno::arch_prctl),
            (202, Sysno::futex),
            (231, Sysno::exit_group),
            (257, Sysno::openat),
            (262, Sysno::newfstatat),
            (318, Sysno::getrandom),
            (334, Sysno::rseq),
            (439, Sysno::faccessat2),
            (22, Sysno::pipe),
            (23, Sysno::select),
            (213, Sysno::epoll_create),
            (232, Sysno::epoll_wait),
            (233, Sysno::epoll_ctl),
            (270, Sysno::pselect6),
            (281, Sysno::epoll_pwait),
            (284, Sysno::eventfd),
            (290, Sysno::eventfd2),
            (291, Sysno::epoll_create1),
            (293, Sysno::pipe2),
            (441, Sysno::epoll_pwait2),
        ];
        for (nr, sysno) in known {
            assert_eq!(Sysno::new(nr), Some(sysno));
        }
        assert_eq!(Sysno::new(100_000), None);
    }
}
