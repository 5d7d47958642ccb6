//! The app's x87, SSE and AVX state around signal handlers.
//!
//! The firmware never touches vector or x87 registers (it is built without SSE), so
//! while it runs the registers still hold the app's state, and the entry stubs keep
//! an FXSAVE image of the legacy part on the kernel stack, which they load again on
//! the way out ([`FxImage`]). A signal frame needs the whole state as XSAVE writes
//! it, which the instruction emulator that runs ring 0 on the emulated platforms
//! does not implement; XSAVE and XRSTOR are ring-3 instructions, so they run in
//! small helpers in the user-accessible trampoline page, upcalled like the copy
//! helpers (`arch/upcall.rs`): saving writes the app's state to its own signal frame
//! and gives the handler the initial state; restoring loads the state from the frame
//! the app hands to rt_sigreturn, so a malformed one faults in ring 3 (EFAULT for the
//! caller) instead of in the firmware. Each helper changes the live registers, so the
//! kernel-stack image is then taken again ([`refresh`]) for the exit path to load.
//!
//! Layouts: Intel SDM vol. 1, 13.4 (the XSAVE area: 512-byte legacy region, 64-byte
//! header, components in the standard format), 10.5.1 (FXSAVE).

use super::upcall::{self, FpuHelper, Outcome};
use crate::kernel::Kernel;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// The FXSAVE image on the kernel stack (Intel SDM vol. 1, table 10-2): 512 bytes,
/// 16-byte aligned.
#[derive(Debug)]
#[repr(C, align(16))]
pub struct FxImage(pub [u8; FXSAVE_SIZE as usize]);

/// Size of the FXSAVE image and of the legacy region of an XSAVE area.
pub const FXSAVE_SIZE: u64 = 512;
/// Size of the XSAVE header that follows the legacy region.
pub const XSAVE_HEADER_SIZE: u64 = 64;
/// XSAVE features x87 (bit 0) and SSE (bit 1): what FXSAVE covers.
pub const XFEATURE_FPSSE: u64 = 0b11;
/// Offset of MXCSR in the legacy region.
pub const MXCSR_OFFSET: usize = 24;
/// MXCSR at reset: all exceptions masked, round to nearest (SDM vol. 1, 10.2.3).
pub const MXCSR_DEFAULT: u32 = 0x1F80;
/// x87 control word after FNINIT (SDM vol. 1, 8.1.5).
pub const FCW_DEFAULT: u16 = 0x037F;

/// XCR0 as boot set it; 0 when the CPU has no XSAVE (CR4.OSXSAVE clear).
static XFEATURES: AtomicU64 = AtomicU64::new(0);
/// CPUID.(0xD,0).EBX with that XCR0: the size of the standard-format XSAVE area of the
/// enabled features. 0 until first asked for.
static XSTATE_SIZE: AtomicU64 = AtomicU64::new(0);

/// Record the XSAVE features boot enabled in XCR0.
pub fn set_xfeatures(xcr0: u64) {
    XFEATURES.store(xcr0, Ordering::Relaxed);
}

/// The XSAVE features the app's state has (XCR0), 0 without XSAVE.
pub fn xfeatures() -> u64 {
    XFEATURES.load(Ordering::Relaxed)
}

/// Bytes of the state a signal frame holds: the XSAVE area of every enabled feature
/// (CPUID.(0xD,0).EBX, asked once, as it exits to the host) or the FXSAVE image.
pub fn state_size() -> u64 {
    if xfeatures() == 0 {
        return FXSAVE_SIZE;
    }
    let mut size = XSTATE_SIZE.load(Ordering::Relaxed);
    if size == 0 {
        size = u64::from(super::cpu::cpuid(0xD, 0).ebx).max(FXSAVE_SIZE + XSAVE_HEADER_SIZE);
        XSTATE_SIZE.store(size, Ordering::Relaxed);
    }
    size
}

/// How the state at an address in a signal frame is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameState {
    /// An XSAVE area (64-byte aligned) whose features `features` are loaded from it;
    /// the other enabled features get their initial state.
    Xsave { features: u64 },
    /// An FXSAVE image (16-byte aligned): x87 and SSE from it, the rest initial.
    Fxsave,
}

/// Save the app's state (live in the registers) at `dst`, a 64-byte-aligned address
/// of the app's own writable memory with [`state_size`] bytes mapped, and give the
/// app the initial state for its handler; then take `image` again.
///
/// With XSAVE the header's reserved bytes are zeroed first (XSAVE leaves them as
/// they were, and XRSTOR refuses anything but zero) and XSTATE_BV gets x87 and SSE
/// set, as Linux does so that an app editing the legacy region is heard.
///
/// # Safety
/// `image` is the FXSAVE image of the entry stub that will return to the app.
pub unsafe fn save_for_handler(k: &mut Kernel, dst: u64, image: *mut FxImage) -> Outcome {
    let features = xfeatures();
    let init = upcall::fpu_init_state_va();
    let outcome = if features == 0 {
        upcall::fpu(k, FpuHelper::FxSave, dst, init, 0, 0)
    } else {
        upcall::fpu(k, FpuHelper::XSave, dst, init, 0, features)
    };
    // SAFETY: the caller's contract on `image`.
    unsafe { refresh(image) };
    outcome
}

/// Load the app's state from a signal frame: from `src` laid out as `state`, or the
/// initial state for `None` (a frame without FPU state); then take `image` again.
/// A fault (a bad address, reserved bits in MXCSR or the header) is
/// [`Outcome::Fault`], raised by the helper in ring 3.
///
/// # Safety
/// As [`save_for_handler`].
pub unsafe fn restore_from_frame(
    k: &mut Kernel,
    src: Option<(u64, FrameState)>,
    image: *mut FxImage,
) -> Outcome {
    let features = xfeatures();
    let init = upcall::fpu_init_state_va();
    let outcome = match src {
        None if features == 0 => upcall::fpu(k, FpuHelper::FxRestore, init, init, 0, 0),
        None => upcall::fpu(k, FpuHelper::XRestore, init, init, 0, features),
        Some((at, FrameState::Fxsave)) => {
            let rest = features & !XFEATURE_FPSSE;
            upcall::fpu(k, FpuHelper::FxRestore, at, init, 0, rest)
        }
        Some((at, FrameState::Xsave { features: load })) => {
            let load = load & features;
            upcall::fpu(k, FpuHelper::XRestore, at, init, load, features & !load)
        }
    };
    // SAFETY: the caller's contract on `image`.
    unsafe { refresh(image) };
    outcome
}

/// Save the whole register state of a thread being preempted at `dst` (its area in
/// the extended-state window, 64-byte aligned, [`state_size`] bytes mapped) and leave
/// the initial state in the registers. The thread's FXSAVE image on its kernel stack
/// is not touched: it still holds the same x87 and SSE state.
pub fn save_for_switch(k: &mut Kernel, dst: u64) -> Outcome {
    let init = upcall::fpu_init_state_va();
    upcall::fpu(k, FpuHelper::XSave, dst, init, 0, xfeatures())
}

/// Load the state [`save_for_switch`] saved at `src`, as the thread runs again.
pub fn restore_for_switch(k: &mut Kernel, src: u64) -> Outcome {
    let init = upcall::fpu_init_state_va();
    upcall::fpu(k, FpuHelper::XRestore, src, init, xfeatures(), 0)
}

/// Take the FXSAVE image again from the registers.
///
/// # Safety
/// `image` points to a 16-byte-aligned [`FxImage`] nothing else uses meanwhile.
unsafe fn refresh(image: *mut FxImage) {
    // SAFETY: the caller's contract; FXSAVE writes exactly 512 bytes there.
    unsafe { asm!("fxsave64 [{}]", in(reg) image, options(nostack, preserves_flags)) };
}
