//! The Linux x86-64 signal frame, as the kernel builds it on the app's stack and
//! reads it back in rt_sigreturn: layouts, constants and the pure decisions (where
//! the frame goes, what a returned frame may change).
//!
//! Sources: `arch/x86/include/uapi/asm/sigcontext.h` (struct sigcontext, the FPU
//! state's software bytes and magic numbers), `arch/x86/include/uapi/asm/ucontext.h`
//! (uc_flags), `include/uapi/asm-generic/ucontext.h` (struct ucontext),
//! `arch/x86/include/asm/sigframe.h` (struct rt_sigframe), `include/uapi/linux/signal.h`
//! and `include/uapi/asm-generic/siginfo.h` (stack_t, siginfo), and the placement and
//! restore rules of `arch/x86/kernel/signal.c`, `signal_64.c` and `fpu/signal.c`.

use crate::arch::fpu::{FrameState, FXSAVE_SIZE, XSAVE_HEADER_SIZE};
use crate::arch::gdt::{USER_CS, USER_DS};
use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `struct sigcontext` (64-bit), `uc_mcontext` of the frame: 256 bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Sigcontext {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub eflags: u64,
    pub cs: u16,
    pub gs: u16,
    pub fs: u16,
    /// Valid when uc_flags has [`UC_SIGCONTEXT_SS`] (formerly `__pad0`).
    pub ss: u16,
    pub err: u64,
    pub trapno: u64,
    pub oldmask: u64,
    pub cr2: u64,
    /// Address of the FPU state (an XSAVE area or FXSAVE image), 0 for none.
    pub fpstate: u64,
    pub reserved1: [u64; 8],
}

/// `stack_t`: the alternate signal stack.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StackT {
    pub ss_sp: u64,
    pub ss_flags: i32,
    pub pad: u32,
    pub ss_size: u64,
}

/// The kernel's `struct ucontext` (x86-64): 304 bytes. (glibc's `ucontext_t` agrees up
/// to `uc_sigmask`'s first word, and is larger.)
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Ucontext {
    pub uc_flags: u64,
    pub uc_link: u64,
    pub uc_stack: StackT,
    pub uc_mcontext: Sigcontext,
    /// The kernel's sigset_t: 64 signals.
    pub uc_sigmask: u64,
}

/// `siginfo_t`: 128 bytes, `si_signo`, `si_errno`, `si_code`, then a union at 16.
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Siginfo {
    pub si_signo: i32,
    pub si_errno: i32,
    pub si_code: i32,
    pub pad: i32,
    /// `_sigfault.si_addr`, or `_kill.si_pid` (low half) and `si_uid` (high half).
    pub field0: u64,
    pub rest: [u64; 13],
}

/// `struct rt_sigframe` (64-bit): where RSP points when the handler starts; its first
/// word is the handler's return address, the app's restorer.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RtSigframe {
    pub pretcode: u64,
    pub uc: Ucontext,
    pub info: Siginfo,
}

/// `struct _fpx_sw_bytes`: the software bytes at offset 464 of the FXSAVE region,
/// which say whether an XSAVE area follows.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FpxSwBytes {
    pub magic1: u32,
    pub extended_size: u32,
    pub xfeatures: u64,
    pub xstate_size: u32,
    pub padding: [u32; 7],
}

const _: () = assert!(size_of::<Sigcontext>() == 256);
const _: () = assert!(offset_of!(Sigcontext, rdi) == 64);
const _: () = assert!(offset_of!(Sigcontext, rsp) == 120);
const _: () = assert!(offset_of!(Sigcontext, rip) == 128);
const _: () = assert!(offset_of!(Sigcontext, eflags) == 136);
const _: () = assert!(offset_of!(Sigcontext, cs) == 144);
const _: () = assert!(offset_of!(Sigcontext, ss) == 150);
const _: () = assert!(offset_of!(Sigcontext, err) == 152);
const _: () = assert!(offset_of!(Sigcontext, trapno) == 160);
const _: () = assert!(offset_of!(Sigcontext, oldmask) == 168);
const _: () = assert!(offset_of!(Sigcontext, cr2) == 176);
const _: () = assert!(offset_of!(Sigcontext, fpstate) == 184);
const _: () = assert!(size_of::<StackT>() == 24);
const _: () = assert!(size_of::<Ucontext>() == 304);
const _: () = assert!(offset_of!(Ucontext, uc_stack) == 16);
const _: () = assert!(offset_of!(Ucontext, uc_mcontext) == 40);
const _: () = assert!(offset_of!(Ucontext, uc_sigmask) == 296);
const _: () = assert!(size_of::<Siginfo>() == 128);
const _: () = assert!(size_of::<RtSigframe>() == 440);
const _: () = assert!(offset_of!(RtSigframe, uc) == 8);
const _: () = assert!(offset_of!(RtSigframe, info) == 312);
const _: () = assert!(size_of::<FpxSwBytes>() == 48);

/// Offset of [`FpxSwBytes`] in the FXSAVE region (`sw_reserved`).
pub const FPX_SW_BYTES_OFFSET: u64 = 464;
/// `FP_XSTATE_MAGIC1`: the software bytes describe an XSAVE area.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// `FP_XSTATE_MAGIC2`, written right after the XSAVE area.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// `FP_XSTATE_MAGIC2_SIZE`.
pub const FP_XSTATE_MAGIC2_SIZE: u64 = 4;

/// uc_flags (`arch/x86/include/uapi/asm/ucontext.h`): the FPU state is an XSAVE area;
/// `ss` is saved; sigreturn restores `ss` as it is.
pub const UC_FP_XSTATE: u64 = 0x1;
pub const UC_SIGCONTEXT_SS: u64 = 0x2;
pub const UC_STRICT_RESTORE_SS: u64 = 0x4;

/// The stack below RSP that the x86-64 ABI lets leaf code use (the red zone), which a
/// signal frame skips.
pub const RED_ZONE: u64 = 128;

/// sigaltstack flags (`include/uapi/linux/signal.h`) and the smallest alternate stack
/// (`arch/x86/include/uapi/asm/signal.h`, `MINSIGSTKSZ`).
pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
pub const SS_AUTODISARM: i32 = 1 << 31;
pub const MINSIGSTKSZ: u64 = 2048;

/// The RFLAGS bits a signal handler may change in the frame it returns
/// (`arch/x86/kernel/signal_64.c`, `FIX_EFLAGS`): CF, PF, AF, ZF, SF, TF, DF, OF, RF, AC.
/// Never IOPL, NT, IF, VM or ID.
pub const FIX_EFLAGS: u64 = 0x0000_0001
    | 0x0000_0004
    | 0x0000_0010
    | 0x0000_0040
    | 0x0000_0080
    | 0x0000_0100
    | 0x0000_0400
    | 0x0000_0800
    | 0x0001_0000
    | 0x0004_0000;
/// RFLAGS TF, DF and RF, cleared for the handler (`arch/x86/kernel/signal.c`,
/// `handle_signal`).
pub const HANDLER_CLEARED_FLAGS: u64 = 0x0000_0100 | 0x0000_0400 | 0x0001_0000;

/// The alternate signal stack as the task keeps it (`sas_ss_sp`, `sas_ss_size`,
/// `sas_ss_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    /// As last set: 0, SS_DISABLE or SS_ONSTACK, with SS_AUTODISARM or not.
    pub flags: i32,
}

impl AltStack {
    /// None: what a new process has.
    pub const DISABLED: Self = Self {
        sp: 0,
        size: 0,
        flags: SS_DISABLE,
    };

    /// Whether `sp` lies on the stack (`on_sig_stack`); never with SS_AUTODISARM,
    /// which makes a handler that runs on it start at its top again.
    pub fn contains(&self, sp: u64) -> bool {
        self.flags & SS_AUTODISARM == 0 && self.contains_any(sp)
    }

    /// `__on_sig_stack`: `sp` within `(ss_sp, ss_sp + ss_size]`.
    fn contains_any(&self, sp: u64) -> bool {
        sp > self.sp && sp - self.sp <= self.size
    }

    /// `sas_ss_flags(sp)`: SS_DISABLE, SS_ONSTACK or 0.
    pub fn state_at(&self, sp: u64) -> i32 {
        if self.size == 0 {
            SS_DISABLE
        } else if self.contains(sp) {
            SS_ONSTACK
        } else {
            0
        }
    }

    /// `stack_t` as sigaltstack reports it for an app at `sp`.
    pub fn report(&self, sp: u64) -> StackT {
        StackT {
            ss_sp: self.sp,
            ss_flags: self.state_at(sp) | (self.flags & SS_AUTODISARM),
            pad: 0,
            ss_size: self.size,
        }
    }

    /// `stack_t` as the frame saves it (`__save_altstack`): the flags as last set.
    pub fn saved(&self) -> StackT {
        StackT {
            ss_sp: self.sp,
            ss_flags: self.flags,
            pad: 0,
            ss_size: self.size,
        }
    }

    /// sigaltstack's change to `new` for an app at `sp` (`do_sigaltstack`): EPERM on
    /// the stack, EINVAL for an unknown mode, ENOMEM below [`MINSIGSTKSZ`].
    pub fn set(&mut self, new: &StackT, sp: u64) -> Result<(), u64> {
        use super::super::errno::{EINVAL, ENOMEM, EPERM};
        if self.contains(sp) {
            return Err(EPERM);
        }
        let mode = new.ss_flags & !SS_AUTODISARM;
        if mode != SS_DISABLE && mode != SS_ONSTACK && mode != 0 {
            return Err(EINVAL);
        }
        if mode == SS_DISABLE {
            *self = Self {
                sp: 0,
                size: 0,
                flags: new.ss_flags,
            };
            return Ok(());
        }
        if new.ss_size < MINSIGSTKSZ {
            return Err(ENOMEM);
        }
        *self = Self {
            sp: new.ss_sp,
            size: new.ss_size,
            flags: new.ss_flags,
        };
        Ok(())
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The [`RtSigframe`]: the handler's RSP (16-byte aligned minus 8, as after a call).
    pub frame: u64,
    /// The FPU state: 64-byte aligned, above the frame.
    pub fpstate: u64,
    /// The end of the FPU state and its trailing magic.
    pub end: u64,
}

/// Why a frame cannot be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceError {
    /// The frame would run off the alternate stack it must be on.
    AltStackOverflow,
    /// The addresses wrap around.
    Wraps,
}

/// Where the frame for a handler goes (`get_sigframe`, `fpu__alloc_mathframe`,
/// `align_sigframe`): below the app's red zone, or at the top of the alternate stack
/// when the handler asks for it (SA_ONSTACK) and the app is not on it already; the
/// FPU state (`state_size` bytes and the trailing magic) 64-byte aligned first, then
/// the frame. On the alternate stack, the whole must fit on it.
pub fn place(
    sp: u64,
    onstack: bool,
    alt: &AltStack,
    state_size: u64,
) -> Result<Placement, PlaceError> {
    let nested = alt.contains(sp);
    let mut top = sp.checked_sub(RED_ZONE).ok_or(PlaceError::Wraps)?;
    let mut entering = false;
    if onstack && alt.state_at(top) == 0 {
        top = alt.sp.checked_add(alt.size).ok_or(PlaceError::Wraps)?;
        entering = true;
    }
    let fpstate = top
        .checked_sub(state_size + FP_XSTATE_MAGIC2_SIZE)
        .ok_or(PlaceError::Wraps)?
        & !63;
    let frame = (fpstate
        .checked_sub(size_of::<RtSigframe>() as u64)
        .ok_or(PlaceError::Wraps)?
        & !15)
        .checked_sub(8)
        .ok_or(PlaceError::Wraps)?;
    if (nested || entering) && !alt.contains_any(frame) {
        return Err(PlaceError::AltStackOverflow);
    }
    Ok(Placement {
        frame,
        fpstate,
        end: fpstate + state_size + FP_XSTATE_MAGIC2_SIZE,
    })
}

/// How the software bytes and the alignment of a returned frame's FPU state say to
/// read it (`check_xstate_in_sigframe`, `__fpu_restore_sig`): an XSAVE area when the
/// magic numbers are there and the sizes fit the enabled features' area
/// (`kernel_size`, with `magic2` the word read at `fpstate + sw.xstate_size`), an
/// FXSAVE image otherwise. `xsave` is whether the CPU has XSAVE at all.
pub fn fpstate_kind(
    fpstate: u64,
    sw: &FpxSwBytes,
    magic2: Option<u32>,
    kernel_size: u64,
    xsave: bool,
) -> FrameState {
    let size = u64::from(sw.xstate_size);
    let xstate = xsave
        && fpstate.is_multiple_of(64)
        && sw.magic1 == FP_XSTATE_MAGIC1
        && size >= FXSAVE_SIZE + XSAVE_HEADER_SIZE
        && size <= kernel_size
        && size <= u64::from(sw.extended_size)
        && magic2 == Some(FP_XSTATE_MAGIC2);
    if xstate {
        FrameState::Xsave {
            features: sw.xfeatures,
        }
    } else {
        FrameState::Fxsave
    }
}

/// The software bytes a frame's FPU state carries: with XSAVE, what the area holds;
/// without, zeros (no area follows).
pub fn sw_bytes(xfeatures: u64, state_size: u64) -> FpxSwBytes {
    if xfeatures == 0 {
        return FpxSwBytes::default();
    }
    FpxSwBytes {
        magic1: FP_XSTATE_MAGIC1,
        extended_size: (state_size + FP_XSTATE_MAGIC2_SIZE) as u32,
        xfeatures,
        xstate_size: state_size as u32,
        padding: [0; 7],
    }
}

/// The registers a returned frame gives the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub regs: Sigcontext,
    pub rflags: u64,
    /// Whether returning to this state faults the way IRET would on Linux (a code or
    /// stack segment other than the app's, a non-canonical RIP): the app then gets
    /// SIGSEGV with these registers.
    pub faults: bool,
}

/// What rt_sigreturn takes from a frame's `sigcontext` (`restore_sigcontext`): every
/// general-purpose register, RIP and RSP as they are; of RFLAGS only [`FIX_EFLAGS`],
/// the rest from `current_rflags`; CS and SS only as the app's own selectors (any
/// other value faults, as the IRET that would load it; without
/// [`UC_STRICT_RESTORE_SS`] an SS of another value is replaced, as Linux does for old
/// programs). Nothing from the frame reaches ring 0, IOPL or another segment.
pub fn restore_regs(sc: &Sigcontext, uc_flags: u64, current_rflags: u64) -> Restored {
    let rflags = (current_rflags & !FIX_EFLAGS) | (sc.eflags & FIX_EFLAGS);
    let cs_ok = sc.cs | 3 == USER_CS;
    let ss_ok = sc.ss | 3 == USER_DS || uc_flags & UC_STRICT_RESTORE_SS == 0;
    let mut regs = *sc;
    regs.cs = USER_CS;
    regs.ss = USER_DS;
    Restored {
        regs,
        rflags,
        faults: !cs_ok || !ss_ok || !is_canonical(sc.rip),
    }
}

/// Whether `va` is canonical for 48-bit virtual addresses (bits 63..47 equal).
pub fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_laid_out_as_the_linux_uapi_headers_say() {
        // glibc's ucontext_t and mcontext_t (from the same headers) agree with the
        // kernel's up to uc_sigmask: the app reads the frame through them.
        assert_eq!(
            offset_of!(Ucontext, uc_flags),
            offset_of!(libc::ucontext_t, uc_flags)
        );
        assert_eq!(
            offset_of!(Ucontext, uc_link),
            offset_of!(libc::ucontext_t, uc_link)
        );
        assert_eq!(
            offset_of!(Ucontext, uc_stack),
            offset_of!(libc::ucontext_t, uc_stack)
        );
        assert_eq!(
            offset_of!(Ucontext, uc_mcontext),
            offset_of!(libc::ucontext_t, uc_mcontext)
        );
        assert_eq!(
            offset_of!(Ucontext, uc_sigmask),
            offset_of!(libc::ucontext_t, uc_sigmask)
        );
        assert_eq!(size_of::<Sigcontext>(), size_of::<libc::mcontext_t>());
        assert_eq!(size_of::<StackT>(), size_of::<libc::stack_t>());
        assert_eq!(
            offset_of!(StackT, ss_flags),
            offset_of!(libc::stack_t, ss_flags)
        );
        assert_eq!(
            offset_of!(StackT, ss_size),
            offset_of!(libc::stack_t, ss_size)
        );
        assert_eq!(size_of::<Siginfo>(), size_of::<libc::siginfo_t>());
        // The registers by glibc's gregs index (REG_*), 8 bytes each.
        let gregs = [
            (libc::REG_R8, offset_of!(Sigcontext, r8)),
            (libc::REG_R15, offset_of!(Sigcontext, r15)),
            (libc::REG_RDI, offset_of!(Sigcontext, rdi)),
            (libc::REG_RSI, offset_of!(Sigcontext, rsi)),
            (libc::REG_RBP, offset_of!(Sigcontext, rbp)),
            (libc::REG_RBX, offset_of!(Sigcontext, rbx)),
            (libc::REG_RDX, offset_of!(Sigcontext, rdx)),
            (libc::REG_RAX, offset_of!(Sigcontext, rax)),
            (libc::REG_RCX, offset_of!(Sigcontext, rcx)),
            (libc::REG_RSP, offset_of!(Sigcontext, rsp)),
            (libc::REG_RIP, offset_of!(Sigcontext, rip)),
            (libc::REG_EFL, offset_of!(Sigcontext, eflags)),
            (libc::REG_CSGSFS, offset_of!(Sigcontext, cs)),
            (libc::REG_ERR, offset_of!(Sigcontext, err)),
            (libc::REG_TRAPNO, offset_of!(Sigcontext, trapno)),
            (libc::REG_OLDMASK, offset_of!(Sigcontext, oldmask)),
            (libc::REG_CR2, offset_of!(Sigcontext, cr2)),
        ];
        for (reg, offset) in gregs {
            assert_eq!(reg as usize * 8, offset, "gregs[{reg}]");
        }
        assert_eq!(
            offset_of!(libc::mcontext_t, fpregs),
            offset_of!(Sigcontext, fpstate),
            "fpregs follows the 23 gregs"
        );
        // The FXSAVE region as glibc's _libc_fpstate names it: 512 bytes, MXCSR at 24,
        // the 16 XMM registers from 160, then 96 reserved bytes whose last 48 are the
        // software bytes.
        assert_eq!(size_of::<libc::_libc_fpstate>() as u64, FXSAVE_SIZE);
        assert_eq!(
            offset_of!(libc::_libc_fpstate, mxcsr),
            crate::arch::fpu::MXCSR_OFFSET
        );
        assert_eq!(offset_of!(libc::_libc_fpstate, _xmm), 160);
        assert_eq!(160 + 16 * 16 + 96 - 48, FPX_SW_BYTES_OFFSET);
        assert_eq!(SS_ONSTACK, libc::SS_ONSTACK);
        assert_eq!(SS_DISABLE, libc::SS_DISABLE);
        assert_eq!(MINSIGSTKSZ, libc::MINSIGSTKSZ as u64);
    }

    #[test]
    fn siginfo_fields_sit_where_the_c_library_reads_them() {
        let mut info = Siginfo {
            si_signo: 11,
            si_code: 2,
            field0: 0xdead_beef,
            ..Default::default()
        };
        // SAFETY: siginfo_t is plain data of the same size (asserted above).
        let c: libc::siginfo_t = unsafe { core::mem::transmute_copy(&info) };
        assert_eq!((c.si_signo, c.si_code), (11, 2));
        // SAFETY: reading the union member of a fault signal.
        assert_eq!(unsafe { c.si_addr() } as u64, 0xdead_beef);
        info.field0 = 7 | (1000 << 32);
        // SAFETY: as above.
        let c: libc::siginfo_t = unsafe { core::mem::transmute_copy(&info) };
        // SAFETY: reading the union members of a kill.
        assert_eq!(unsafe { (c.si_pid(), c.si_uid()) }, (7, 1000));
    }

    const ALT: AltStack = AltStack {
        sp: 0x10_0000,
        size: 0x1_0000,
        flags: 0,
    };
    const XSAVE_AVX512: u64 = 2696;

    #[test]
    fn frames_go_below_the_red_zone_aligned_as_linux_aligns_them() {
        let p = place(0x7fff_0000_1238, false, &ALT, XSAVE_AVX512).expect("fits");
        assert_eq!(p.fpstate % 64, 0);
        assert!(p.fpstate + XSAVE_AVX512 + 4 <= 0x7fff_0000_1238 - RED_ZONE);
        assert_eq!((p.frame + 8) % 16, 0, "as after a call");
        assert!(p.frame + size_of::<RtSigframe>() as u64 <= p.fpstate);
        assert!(p.fpstate - (p.frame + 440) < 16 + 8);
        assert_eq!(p.end, p.fpstate + XSAVE_AVX512 + 4);
    }

    #[test]
    fn sa_onstack_switches_to_the_top_of_the_alternate_stack_once() {
        let p = place(0x7fff_0000_0000, true, &ALT, 832).expect("fits");
        assert!(p.end <= ALT.sp + ALT.size && p.end > ALT.sp + ALT.size - 64 - 4);
        // Already on it: nested frames go below the current RSP.
        let inner = place(p.frame, true, &ALT, 832).expect("fits");
        assert!(inner.end <= p.frame - RED_ZONE + 64);
        assert!(inner.frame < p.frame);
        // Without SA_ONSTACK the app's stack is used.
        let plain = place(0x7fff_0000_0000, false, &ALT, 832).expect("fits");
        assert!(plain.frame > ALT.sp + ALT.size);
        // A disabled alternate stack is ignored.
        let off = place(0x7fff_0000_0000, true, &AltStack::DISABLED, 832).expect("fits");
        assert_eq!(off, plain);
    }

    #[test]
    fn a_frame_that_overflows_the_alternate_stack_is_refused() {
        let small = AltStack { size: 2048, ..ALT };
        assert_eq!(
            place(0x7fff_0000_0000, true, &small, XSAVE_AVX512),
            Err(PlaceError::AltStackOverflow)
        );
        assert!(place(0x7fff_0000_0000, true, &small, 512).is_ok());
        // Nested on the stack near its bottom.
        assert_eq!(
            place(ALT.sp + 600, true, &ALT, 512),
            Err(PlaceError::AltStackOverflow)
        );
        assert_eq!(place(64, false, &ALT, 512), Err(PlaceError::Wraps));
    }

    #[test]
    fn autodisarm_makes_the_stack_look_unused() {
        let auto = AltStack {
            flags: SS_AUTODISARM,
            ..ALT
        };
        assert!(!auto.contains(ALT.sp + 100));
        assert_eq!(auto.state_at(ALT.sp + 100), 0);
        assert_eq!(auto.report(0).ss_flags, SS_AUTODISARM);
        assert_eq!(ALT.state_at(ALT.sp + 100), SS_ONSTACK);
        assert_eq!(AltStack::DISABLED.state_at(5), SS_DISABLE);
        assert_eq!(AltStack::DISABLED.saved().ss_flags, SS_DISABLE);
    }

    #[test]
    fn sigaltstack_changes_follow_do_sigaltstack() {
        use crate::syscall::errno::{EINVAL, ENOMEM, EPERM};
        let mut alt = AltStack::DISABLED;
        let new = StackT {
            ss_sp: ALT.sp,
            ss_flags: 0,
            pad: 0,
            ss_size: ALT.size,
        };
        assert_eq!(alt.set(&new, 0x7fff_0000_0000), Ok(()));
        assert_eq!(alt, ALT);
        assert_eq!(alt.set(&new, ALT.sp + 8), Err(EPERM), "on the stack");
        let bad = StackT { ss_flags: 4, ..new };
        assert_eq!(alt.set(&bad, 0), Err(EINVAL));
        let tiny = StackT { ss_size: 16, ..new };
        assert_eq!(alt.set(&tiny, 0), Err(ENOMEM));
        let off = StackT {
            ss_flags: SS_DISABLE,
            ss_size: 16,
            ..new
        };
        assert_eq!(alt.set(&off, 0), Ok(()));
        assert_eq!((alt.sp, alt.size), (0, 0));
    }

    #[test]
    fn a_returned_frame_changes_only_user_flags() {
        let sc = Sigcontext {
            eflags: u64::MAX,
            cs: USER_CS,
            ss: USER_DS,
            rip: 0x40_1000,
            rax: 7,
            r15: 9,
            ..Default::default()
        };
        let r = restore_regs(&sc, UC_STRICT_RESTORE_SS, 0x202);
        assert_eq!(r.rflags, 0x202 | FIX_EFLAGS);
        assert_eq!(r.rflags & 0x3000, 0, "never IOPL");
        assert_eq!(r.rflags & (1 << 14), 0, "never NT");
        assert_eq!(r.rflags & (1 << 17), 0, "never VM");
        assert_eq!(r.rflags & (1 << 21), 0, "never ID");
        assert_ne!(r.rflags & (1 << 9), 0, "IF stays");
        assert!(!r.faults);
        assert_eq!((r.regs.rax, r.regs.r15, r.regs.rip), (7, 9, 0x40_1000));
        let cleared = restore_regs(&Sigcontext { eflags: 0, ..sc }, 0, 0x202 | 0x4_0000);
        assert_eq!(cleared.rflags, 0x202, "AC is the handler's to clear");
    }

    #[test]
    fn a_returned_frame_never_gets_another_segment_or_a_bad_rip() {
        let good = Sigcontext {
            cs: USER_CS,
            ss: USER_DS,
            ..Default::default()
        };
        for cs in [0x08u16, 0x10, 0x0b, 0x33, 0x2b, 0] {
            let r = restore_regs(&Sigcontext { cs, ..good }, 0, 0x202);
            assert!(r.faults, "cs {cs:#x}");
            assert_eq!(r.regs.cs, USER_CS);
        }
        assert!(
            !restore_regs(
                &Sigcontext {
                    cs: USER_CS & !3,
                    ..good
                },
                0,
                0x202
            )
            .faults
        );
        let kernel_ss = Sigcontext { ss: 0x10, ..good };
        assert!(restore_regs(&kernel_ss, UC_STRICT_RESTORE_SS, 0x202).faults);
        let r = restore_regs(&kernel_ss, 0, 0x202);
        assert!(!r.faults, "old programs' SS is replaced");
        assert_eq!(r.regs.ss, USER_DS);
        for rip in [1u64 << 47, 0x8000_0000_0000_0000, 0x0000_8000_0000_1000] {
            assert!(
                restore_regs(&Sigcontext { rip, ..good }, 0, 0x202).faults,
                "{rip:#x}"
            );
        }
        assert!(
            !restore_regs(
                &Sigcontext {
                    rip: (1 << 47) - 1,
                    ..good
                },
                0,
                0x202
            )
            .faults
        );
        assert!(is_canonical(0xffff_8000_0000_0000));
    }

    #[test]
    fn the_fpu_state_is_an_xsave_area_only_when_everything_says_so() {
        let sw = sw_bytes(0b111, 832);
        assert_eq!(sw.extended_size, 836);
        let at = 0x7000_0040;
        let xsave = FrameState::Xsave { features: 0b111 };
        assert_eq!(
            fpstate_kind(at, &sw, Some(FP_XSTATE_MAGIC2), 832, true),
            xsave
        );
        for (what, kind) in [
            ("no magic2", fpstate_kind(at, &sw, Some(0), 832, true)),
            ("magic2 unreadable", fpstate_kind(at, &sw, None, 832, true)),
            (
                "unaligned",
                fpstate_kind(at + 16, &sw, Some(FP_XSTATE_MAGIC2), 832, true),
            ),
            (
                "larger than the CPU's",
                fpstate_kind(at, &sw, Some(FP_XSTATE_MAGIC2), 576, true),
            ),
            (
                "no XSAVE",
                fpstate_kind(at, &sw, Some(FP_XSTATE_MAGIC2), 832, false),
            ),
            (
                "no magic1",
                fpstate_kind(
                    at,
                    &FpxSwBytes { magic1: 0, ..sw },
                    Some(FP_XSTATE_MAGIC2),
                    832,
                    true,
                ),
            ),
            (
                "smaller than a header",
                fpstate_kind(
                    at,
                    &FpxSwBytes {
                        xstate_size: 512,
                        ..sw
                    },
                    Some(FP_XSTATE_MAGIC2),
                    832,
                    true,
                ),
            ),
            (
                "extended size too small",
                fpstate_kind(
                    at,
                    &FpxSwBytes {
                        extended_size: 800,
                        ..sw
                    },
                    Some(FP_XSTATE_MAGIC2),
                    832,
                    true,
                ),
            ),
        ] {
            assert_eq!(kind, FrameState::Fxsave, "{what}");
        }
        assert_eq!(sw_bytes(0, 512), FpxSwBytes::default());
    }
}
