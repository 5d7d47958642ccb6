//! nacre's vDSO: the clock calls of Linux's x86-64 vDSO, answered in ring 3 from the
//! TSC and the firmware's calibration in the data page just below it (`vvar.rs`), so
//! that reading a clock costs no syscall (Linux `arch/x86/entry/vdso/vclock_gettime.c`
//! and `vgetcpu.c` export the same names).
//!
//! `build.rs` compiles this file with rustc for x86_64-unknown-linux-gnu as
//! position-independent code and links it with `vdso.lds` into an ELF shared object
//! that the firmware embeds and maps into every app (`src/app/vdso.rs`). The object
//! has no dynamic relocations, data or library: everything it reads is its own text
//! and rodata and the data page, found relative to the instruction pointer.
//!
//! Each call returns what the syscall would return in RAX (0, or a negated errno), as
//! Linux's vDSO does. A clock it does not answer itself (the CPU-time and alarm
//! clocks, unknown ids), or any clock before the firmware has calibrated, goes to the
//! real syscall.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

#[path = "vvar.rs"]
#[allow(dead_code)] // The firmware uses the rest of the module.
mod vvar;

use core::arch::{asm, global_asm};
use vvar::{Base, ClockFloor, Vvar};

/// Syscall numbers (Linux `arch/x86/entry/syscalls/syscall_64.tbl`).
const SYS_GETTIMEOFDAY: u64 = 96;
const SYS_TIME: u64 = 201;
const SYS_CLOCK_GETTIME: u64 = 228;
const SYS_GETCPU: u64 = 309;
const SYS_CLOCK_GETRES: u64 = 229;

/// `struct __kernel_timespec` (Linux `include/uapi/linux/time_types.h`).
#[repr(C)]
pub struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct __kernel_old_timeval` (Linux `include/uapi/linux/time_types.h`).
#[repr(C)]
pub struct Timeval {
    tv_sec: i64,
    tv_usec: i64,
}

/// `struct timezone` (Linux `include/uapi/linux/time.h`).
#[repr(C)]
pub struct Timezone {
    tz_minuteswest: i32,
    tz_dsttime: i32,
}

/// The data page: one page below the vDSO's first byte (`vdso.lds` defines
/// `__nacre_vvar`; the firmware maps the page there, `src/app/vdso.rs`).
fn vvar() -> &'static Vvar {
    let page: *const Vvar;
    // SAFETY: LEA only computes an address (RIP-relative, resolved when the vDSO is
    // linked, so no relocation is needed wherever it is mapped).
    unsafe {
        asm!(
            "lea {page}, [rip + __nacre_vvar]",
            page = out(reg) page,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    // SAFETY: the firmware maps the data page readable at that address for the app's
    // lifetime before the app runs, and never unmaps it; `Vvar` holds only atomics.
    unsafe { &*page }
}

/// The clocks' floor: one page below the data page (`vdso.lds` defines
/// `__nacre_floor`; the firmware maps it there, user read-write, `src/app/vdso.rs`).
fn floor() -> &'static ClockFloor {
    let page: *const ClockFloor;
    // SAFETY: LEA only computes an address (RIP-relative, resolved at link time).
    unsafe {
        asm!(
            "lea {page}, [rip + __nacre_floor]",
            page = out(reg) page,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    // SAFETY: the firmware maps the floor page readable and writable at that address
    // for the app's lifetime before the app runs, and never unmaps it; `ClockFloor`
    // holds only an atomic, which any bytes are a valid value of.
    unsafe { &*page }
}

/// The TSC, read after every earlier instruction has completed (LFENCE then RDTSC,
/// as Linux's `rdtsc_ordered`), so a reading never precedes an earlier one.
fn rdtsc_ordered() -> u64 {
    // SAFETY: LFENCE and RDTSC read no memory; the firmware leaves CR4.TSD clear, so
    // RDTSC works in ring 3.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// The syscall `nr` with two arguments; returns RAX (a negated errno on failure).
fn syscall2(nr: u64, a0: u64, a1: u64) -> i64 {
    let ret: i64;
    // SAFETY: the syscall ABI: RAX, RCX and R11 are clobbered, nothing else; the
    // kernel checks the arguments (user pointers) itself.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a0,
            in("rsi") a1,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        )
    };
    ret
}

/// The clock `clock` now in nanoseconds, if the vDSO answers it.
fn now_ns(clock: i32) -> Option<u64> {
    let (base, _) = vvar::vdso_clock(clock)?;
    let cal = vvar().read()?;
    Some(cal.floored_ns(base, rdtsc_ordered(), floor()))
}

/// `clock_gettime(2)`.
///
/// # Safety
///
/// `ts` must be valid for a write of a `struct timespec`, as for the syscall (a bad
/// pointer faults here instead of giving EFAULT, as with Linux's vDSO).
#[no_mangle]
pub unsafe extern "C" fn __vdso_clock_gettime(clock: i32, ts: *mut Timespec) -> i64 {
    let Some(ns) = now_ns(clock) else {
        return syscall2(SYS_CLOCK_GETTIME, clock as u64, ts as u64);
    };
    let (tv_sec, tv_nsec) = vvar::timespec(ns);
    // SAFETY: the caller's contract.
    unsafe { ts.write(Timespec { tv_sec, tv_nsec }) };
    0
}

/// `gettimeofday(2)`: the wall clock in microseconds; the time zone is UTC.
///
/// # Safety
///
/// `tv` and `tz` must each be null or valid for a write of their structure.
#[no_mangle]
pub unsafe extern "C" fn __vdso_gettimeofday(tv: *mut Timeval, tz: *mut Timezone) -> i64 {
    let Some(cal) = vvar().read() else {
        return syscall2(SYS_GETTIMEOFDAY, tv as u64, tz as u64);
    };
    if !tv.is_null() {
        let (tv_sec, tv_usec) = vvar::timeval(cal.floored_ns(Base::Realtime, rdtsc_ordered(), floor()));
        // SAFETY: the caller's contract; not null.
        unsafe { tv.write(Timeval { tv_sec, tv_usec }) };
    }
    if !tz.is_null() {
        // SAFETY: the caller's contract; not null.
        unsafe {
            tz.write(Timezone {
                tz_minuteswest: 0,
                tz_dsttime: 0,
            })
        };
    }
    0
}

/// `time(2)`: the wall clock in seconds, also stored at `t` unless it is null.
///
/// # Safety
///
/// `t` must be null or valid for a write of an `i64`.
#[no_mangle]
pub unsafe extern "C" fn __vdso_time(t: *mut i64) -> i64 {
    let Some(cal) = vvar().read() else {
        return syscall2(SYS_TIME, t as u64, 0);
    };
    let (secs, _) = vvar::timespec(cal.floored_ns(Base::Realtime, rdtsc_ordered(), floor()));
    if !t.is_null() {
        // SAFETY: the caller's contract; not null.
        unsafe { t.write(secs) };
    }
    secs
}

/// `clock_getres(2)`: 1 ns for the clocks counted from the TSC, a 250 Hz tick for
/// the coarse ones, as the syscall says.
///
/// # Safety
///
/// `res` must be null or valid for a write of a `struct timespec`.
#[no_mangle]
pub unsafe extern "C" fn __vdso_clock_getres(clock: i32, res: *mut Timespec) -> i64 {
    let Some((_, ns)) = vvar::vdso_clock(clock) else {
        return syscall2(SYS_CLOCK_GETRES, clock as u64, res as u64);
    };
    if !res.is_null() {
        let (tv_sec, tv_nsec) = vvar::timespec(ns);
        // SAFETY: the caller's contract; not null.
        unsafe { res.write(Timespec { tv_sec, tv_nsec }) };
    }
    0
}

/// `getcpu(2)`: CPU 0 on NUMA node 0 where one vCPU runs the app. With several, the
/// syscall: the vCPU a thread runs on is the firmware's to say (it names it in the
/// thread's rseq area too, which glibc's `sched_getcpu` reads first), and ring 3 has
/// no register here that tells vCPUs apart (the guest cannot set TSC_AUX for RDTSCP
/// or RDPID on these machines).
///
/// # Safety
///
/// `cpu` and `node` must each be null or valid for a write of a `u32`; the third
/// argument (the unused `struct getcpu_cache`) is ignored, as by Linux.
#[no_mangle]
pub unsafe extern "C" fn __vdso_getcpu(cpu: *mut u32, node: *mut u32, _cache: usize) -> i64 {
    if vvar().several_cpus() {
        return syscall2(SYS_GETCPU, cpu as u64, node as u64);
    }
    for p in [cpu, node] {
        if !p.is_null() {
            // SAFETY: the caller's contract; not null.
            unsafe { p.write(0) };
        }
    }
    0
}

// The names without the prefix, as weak aliases of the same code (Linux's vDSO
// exports both; `vdso.lds` puts all ten in version LINUX_2.6).
global_asm!(
    ".weak clock_gettime",
    ".type clock_gettime, @function",
    ".set clock_gettime, __vdso_clock_gettime",
    ".weak gettimeofday",
    ".type gettimeofday, @function",
    ".set gettimeofday, __vdso_gettimeofday",
    ".weak time",
    ".type time, @function",
    ".set time, __vdso_time",
    ".weak clock_getres",
    ".type clock_getres, @function",
    ".set clock_getres, __vdso_clock_getres",
    ".weak getcpu",
    ".type getcpu, @function",
    ".set getcpu, __vdso_getcpu",
);
