//! TDCALL on the emulated TDX platform. Outside a TD, TDCALL (66 0F 01 CC) raises #UD.
//! When the platform is emulated TDX and the #UD is a firmware TDCALL, the handler
//! rings the TDCALL doorbell (shared-abi `doorbell.rs`) with every general-purpose
//! register as the instruction had it, stores the registers the host returns back
//! into the interrupted frame and resumes after the instruction, as the TDX module
//! would. The `tdx-guest` crate's wrappers therefore run unchanged.

use crate::arch::idt::TrapFrame;
use crate::platform::{running, Backend, Running};
use core::arch::global_asm;
use core::mem::offset_of;
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::doorbell::DOORBELL_TDCALL;

/// #UD (Intel SDM vol. 3A, 6.15).
pub const UD_VECTOR: u64 = 6;

/// TDCALL's encoding.
const TDCALL: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];

global_asm!(
    ".global nacre_tdcall_doorbell",
    "nacre_tdcall_doorbell:",
    "push rbp", "push rbx", "push r12", "push r13", "push r14", "push r15",
    "push rdi",
    "mov rbp, rdi",
    "mov rax, [rbp + {rax}]", "mov rbx, [rbp + {rbx}]", "mov rcx, [rbp + {rcx}]",
    "mov rdx, [rbp + {rdx}]", "mov rsi, [rbp + {rsi}]", "mov rdi, [rbp + {rdi}]",
    "mov r8, [rbp + {r8}]", "mov r9, [rbp + {r9}]", "mov r10, [rbp + {r10}]",
    "mov r11, [rbp + {r11}]", "mov r12, [rbp + {r12}]", "mov r13, [rbp + {r13}]",
    "mov r14, [rbp + {r14}]", "mov r15, [rbp + {r15}]",
    "out {port}, al",
    "mov [rbp + {rax}], rax", "mov [rbp + {rbx}], rbx", "mov [rbp + {rcx}], rcx",
    "mov [rbp + {rdx}], rdx", "mov [rbp + {rsi}], rsi", "mov [rbp + {rdi}], rdi",
    "mov [rbp + {r8}], r8", "mov [rbp + {r9}], r9", "mov [rbp + {r10}], r10",
    "mov [rbp + {r11}], r11", "mov [rbp + {r12}], r12", "mov [rbp + {r13}], r13",
    "mov [rbp + {r14}], r14", "mov [rbp + {r15}], r15",
    "pop rdi",
    "pop r15", "pop r14", "pop r13", "pop r12", "pop rbx", "pop rbp",
    "ret",
    port = const DOORBELL_TDCALL,
    rax = const offset_of!(TrapFrame, rax),
    rbx = const offset_of!(TrapFrame, rbx),
    rcx = const offset_of!(TrapFrame, rcx),
    rdx = const offset_of!(TrapFrame, rdx),
    rsi = const offset_of!(TrapFrame, rsi),
    rdi = const offset_of!(TrapFrame, rdi),
    r8 = const offset_of!(TrapFrame, r8),
    r9 = const offset_of!(TrapFrame, r9),
    r10 = const offset_of!(TrapFrame, r10),
    r11 = const offset_of!(TrapFrame, r11),
    r12 = const offset_of!(TrapFrame, r12),
    r13 = const offset_of!(TrapFrame, r13),
    r14 = const offset_of!(TrapFrame, r14),
    r15 = const offset_of!(TrapFrame, r15),
);

extern "C" {
    fn nacre_tdcall_doorbell(frame: *mut TrapFrame);
}

/// Forward a firmware TDCALL that raised #UD; `false` if `frame` is anything else.
///
/// The exception handler cannot reach the platform object (the code that raised the
/// #UD may hold it), so it reads the platform recorded once at boot: only the emulated
/// TDX platform forwards TDCALLs.
pub fn forward_tdcall(frame: &mut TrapFrame) -> bool {
    let emulated_tdx = Running {
        kind: PlatformKind::Tdx,
        backend: Backend::Doorbell,
    };
    if frame.vector != UD_VECTOR || frame.is_user() || running() != Some(emulated_tdx) {
        return false;
    }
    let mut insn = [0u8; 4];
    // SAFETY: a ring-0 #UD's RIP is in the firmware's text, mapped and readable.
    unsafe { core::ptr::copy_nonoverlapping(frame.rip as *const u8, insn.as_mut_ptr(), 4) };
    if insn != TDCALL {
        return false;
    }
    // SAFETY: the doorbell reads and writes only the frame's register slots; the host
    // performs the TDCALL's architectural effects, which the caller asked for.
    unsafe { nacre_tdcall_doorbell(frame) };
    frame.rip += TDCALL.len() as u64;
    true
}
