//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for the freestanding build (the
//! precompiled `compiler_builtins` for the Linux target leaves them to libc). Written
//! with string instructions so the compiler cannot turn them back into calls.

use core::arch::asm;

/// # Safety
/// `dst` and `src` must be valid for `n` bytes and not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; REP MOVSQ then REP MOVSB copy
    // forward (DF = 0 per ABI). Quadwords first: ring 0 may run in an instruction
    // emulator where every iteration costs the same whatever its width.
    unsafe {
        asm!(
            "rep movsq",
            "mov rcx, {tail}",
            "rep movsb",
            tail = in(reg) n % 8,
            inout("rcx") n / 8 => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
    dst
}

/// # Safety
/// `dst` and `src` must be valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dst is below src (each element is read
        // before anything at or above it is written) or past its end.
        return unsafe { memcpy(dst, src, n) };
    }
    // dst lies inside (src, src + n): copy backwards, the odd tail bytes first, then
    // quadwords (each read before the write that could overlap it), DF restored after.
    let tail = n % 8;
    // SAFETY: the caller guarantees both ranges; all addresses stay inside them.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "mov rcx, {words}",
            "sub rsi, 7",
            "sub rdi, 7",
            "rep movsq",
            "cld",
            words = in(reg) n / 8,
            inout("rcx") tail => _,
            inout("rdi") dst.add(n).wrapping_sub(1) => _,
            inout("rsi") src.add(n).wrapping_sub(1) => _,
            options(nostack),
        );
    }
    dst
}

/// # Safety
/// `dst` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = u64::from(c as u8);
    // SAFETY: the caller guarantees the range; quadwords first, as in `memcpy`.
    unsafe {
        asm!(
            "rep stosq",
            "mov rcx, {tail}",
            "rep stosb",
            tail = in(reg) n % 8,
            inout("rcx") n / 8 => _,
            inout("rdi") dst => _,
            in("rax") byte * 0x0101_0101_0101_0101,
            options(nostack, preserves_flags),
        );
    }
    dst
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees both ranges.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller guarantees both ranges, which is all `memcmp` needs.
    unsafe { memcmp(a, b, n) }
}
