//! The IDT: the 32 architectural exception vectors, all on IST1 except #UD and #PF
//! (see [`UD_VECTOR`] and [`PF_VECTOR`]), and every interrupt vector (the local
//! APIC's, `arch/apic.rs`, and any other), which run on the interrupted stack. A common assembly
//! stub saves the general-purpose and FXSAVE state (so exception handlers written in
//! Rust may use SSE without corrupting the app) and calls [`exception_dispatch`].

use core::arch::{asm, global_asm};
use core::mem::size_of;

/// Registers saved by the exception entry stub, lowest address first.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// Whether the exception interrupted ring 3.
    pub fn is_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// The FXSAVE image the exception stub keeps directly below its frame, which it loads
/// again before IRETQ.
pub fn fx_image(frame: &mut TrapFrame) -> *mut super::fpu::FxImage {
    (frame as *mut TrapFrame)
        .cast::<u8>()
        .wrapping_sub(super::fpu::FXSAVE_SIZE as usize)
        .cast()
}

global_asm!(
    ".global nacre_isr_common",
    "nacre_isr_common:",
    "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
    "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
    "cld",
    "mov rdi, rsp",
    "sub rsp, 512",
    "fxsave64 [rsp]",
    "call {dispatch}",
    "fxrstor64 [rsp]",
    "add rsp, 512",
    "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
    "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
    "add rsp, 16",
    "iretq",
    dispatch = sym exception_dispatch,
);

macro_rules! isr_table {
    ($($n:literal $err:literal),* $(,)?) => {
        global_asm!(
            $(
                concat!(".global nacre_isr_", $n),
                concat!("nacre_isr_", $n, ":"),
                concat!(".if ", $err, " == 0"),
                "push 0",
                ".endif",
                concat!("push ", $n),
                "jmp nacre_isr_common",
            )*
            ".section .rodata",
            ".balign 8",
            ".global nacre_isr_table",
            "nacre_isr_table:",
            $( concat!(".quad nacre_isr_", $n), )*
            ".text",
        );
    };
}

isr_table!(
    0 0, 1 0, 2 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 9 0, 10 1, 11 1, 12 1, 13 1, 14 1, 15 0,
    16 0, 17 1, 18 0, 19 0, 20 0, 21 1, 22 0, 23 0, 24 0, 25 0, 26 0, 27 0, 28 0, 29 1, 30 1, 31 0,
    32 0, 33 0, 34 0, 35 0, 36 0, 37 0, 38 0, 39 0, 40 0, 41 0, 42 0, 43 0, 44 0, 45 0,
    46 0, 47 0, 48 0, 49 0, 50 0, 51 0, 52 0, 53 0, 54 0, 55 0, 56 0, 57 0, 58 0, 59 0,
    60 0, 61 0, 62 0, 63 0, 64 0, 65 0, 66 0, 67 0, 68 0, 69 0, 70 0, 71 0, 72 0, 73 0,
    74 0, 75 0, 76 0, 77 0, 78 0, 79 0, 80 0, 81 0, 82 0, 83 0, 84 0, 85 0, 86 0, 87 0,
    88 0, 89 0, 90 0, 91 0, 92 0, 93 0, 94 0, 95 0, 96 0, 97 0, 98 0, 99 0, 100 0, 101 0,
    102 0, 103 0, 104 0, 105 0, 106 0, 107 0, 108 0, 109 0, 110 0, 111 0, 112 0, 113 0,
    114 0, 115 0, 116 0, 117 0, 118 0, 119 0, 120 0, 121 0, 122 0, 123 0, 124 0, 125 0,
    126 0, 127 0, 128 0, 129 0, 130 0, 131 0, 132 0, 133 0, 134 0, 135 0, 136 0, 137 0,
    138 0, 139 0, 140 0, 141 0, 142 0, 143 0, 144 0, 145 0, 146 0, 147 0, 148 0, 149 0,
    150 0, 151 0, 152 0, 153 0, 154 0, 155 0, 156 0, 157 0, 158 0, 159 0, 160 0, 161 0,
    162 0, 163 0, 164 0, 165 0, 166 0, 167 0, 168 0, 169 0, 170 0, 171 0, 172 0, 173 0,
    174 0, 175 0, 176 0, 177 0, 178 0, 179 0, 180 0, 181 0, 182 0, 183 0, 184 0, 185 0,
    186 0, 187 0, 188 0, 189 0, 190 0, 191 0, 192 0, 193 0, 194 0, 195 0, 196 0, 197 0,
    198 0, 199 0, 200 0, 201 0, 202 0, 203 0, 204 0, 205 0, 206 0, 207 0, 208 0, 209 0,
    210 0, 211 0, 212 0, 213 0, 214 0, 215 0, 216 0, 217 0, 218 0, 219 0, 220 0, 221 0,
    222 0, 223 0, 224 0, 225 0, 226 0, 227 0, 228 0, 229 0, 230 0, 231 0, 232 0, 233 0,
    234 0, 235 0, 236 0, 237 0, 238 0, 239 0, 240 0, 241 0, 242 0, 243 0, 244 0, 245 0,
    246 0, 247 0, 248 0, 249 0, 250 0, 251 0, 252 0, 253 0, 254 0,
);

// The local APIC's spurious interrupt: nothing to do, and no EOI (SDM vol. 3A,
// 11.9).
global_asm!(
    ".global nacre_spurious_entry",
    "nacre_spurious_entry:",
    "iretq"
);

// #UD: a #UD from ring 3 at the syscall trampoline is a syscall (emulated platform,
// see `syscall_entry.rs`) and goes straight to the syscall path, which saves only what
// the syscall ABI preserves; every other #UD takes the generic path. TRAMPOLINE_VA
// fits a sign-extended 32-bit immediate.
global_asm!(
    ".global nacre_ud_entry",
    "nacre_ud_entry:",
    "cmp qword ptr [rsp], {trampoline}",
    "jne 2f",
    "test byte ptr [rsp + 8], 3",
    "jz 2f",
    "jmp nacre_trampoline_syscall",
    "2:",
    "jmp nacre_isr_6",
    trampoline = const super::syscall_entry::TRAMPOLINE_VA as i64 as i32,
);

extern "C" {
    static nacre_isr_table: [u64; GATES_WITH_STUBS];
    fn nacre_ud_entry();
    fn nacre_spurious_entry();
}

/// Vectors with an entry stub in `nacre_isr_table`: the 32 exceptions, then every
/// interrupt vector but the spurious one: the local APIC's timer and wake-up
/// interrupts (`arch/apic.rs`) and any other a host may send, which are acknowledged
/// and otherwise ignored rather than left without a gate.
const GATES_WITH_STUBS: usize = 255;
const _: () = assert!(super::apic::TIMER_VECTOR as usize == 32);
const _: () = assert!(super::apic::WAKE_VECTOR as usize == 33);

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(size_of::<Gate>() == 16);

/// #UD. Its gate uses no IST stack: a #UD must be able to nest in another one. The
/// emulated platform's syscall trampoline enters the firmware as a #UD from ring 3
/// (onto the kernel stack, TSS.RSP0), and on emulated TDX every TDCALL the syscall
/// makes raises a #UD in ring 0, which pushes its frame below the current one. On
/// IST1 the inner #UD would overwrite the outer frame. The code that executes TDCALL
/// (the `tdx-guest` crate's assembly, nacre's own) uses no red zone.
const UD_VECTOR: usize = 6;

/// #PF. Its gate uses no IST stack either: an app's page fault arrives from ring 3 on
/// TSS.RSP0 like a syscall, and a copy helper's page fault (`arch/upcall.rs`) must land
/// below the upcalling kernel stack, which RSP0 points at during an upcall; on IST1 it
/// could overwrite a fault handler that upcalled to zero a page. A page fault in ring 0
/// is a firmware bug and fatal.
const PF_VECTOR: usize = 14;

/// All 256 vectors; those without a handler are not present.
static mut IDT: [Gate; 256] = [Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 256];

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fill and load the IDT.
///
/// # Safety
/// Call once at boot after [`super::gdt::init`] (the gates use IST1 and the kernel CS).
pub unsafe fn init() {
    // SAFETY: single-threaded boot; the table is only written here.
    unsafe {
        let idt = &raw mut IDT;
        let table = &raw const nacre_isr_table;
        let spurious = usize::from(super::apic::SPURIOUS_VECTOR);
        for i in (0..GATES_WITH_STUBS).chain([spurious]) {
            let handler = if i == UD_VECTOR {
                nacre_ud_entry as *const () as u64
            } else if i == spurious {
                nacre_spurious_entry as *const () as u64
            } else {
                (*table)[i]
            };
            (*idt)[i] = Gate {
                offset_low: handler as u16,
                selector: super::gdt::KERNEL_CS,
                // Interrupts (32 and up) arrive from ring 3 or from the idle loop and
                // may switch threads, so they run on the interrupted thread's stack.
                ist: if i == UD_VECTOR || i == PF_VECTOR || i >= 32 {
                    0
                } else {
                    1
                },
                type_attr: 0x8E, // present, DPL0, 64-bit interrupt gate
                offset_mid: (handler >> 16) as u16,
                offset_high: (handler >> 32) as u32,
                reserved: 0,
            };
        }
        let ptr = Pointer {
            limit: (size_of::<[Gate; 256]>() - 1) as u16,
            base: idt as u64,
        };
        asm!("lidt [{}]", in(reg) &ptr, options(nostack, preserves_flags));
    }
}

/// Load the IDT [`init`] filled on another vCPU.
///
/// # Safety
/// After [`init`] ran (on the first vCPU), on a vCPU whose GDT has the kernel CS and
/// its own TSS with IST1 loaded.
pub unsafe fn load() {
    let ptr = Pointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: (&raw const IDT) as u64,
    };
    // SAFETY: the caller's contract: the table is complete and only read from now on.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(nostack, preserves_flags)) };
}

/// Called by the entry stub with the saved frame.
extern "C" fn exception_dispatch(frame: &mut TrapFrame) {
    if frame.vector >= 32 {
        crate::sched::interrupt(frame);
    } else {
        crate::trap::handle_exception(frame);
    }
}
