//! The TDX entry path: the reset page at `TDX_RESET_PAGE_GPA` (its own ELF segment,
//! loaded only for TDX and measured into MRTD).
//!
//! A TD's vCPU starts in 32-bit protected mode with paging off and flat segments at
//! the reset vector `TDX_RESET_VECTOR` (16 bytes below 4 GiB), with EBX = GPAW and
//! ESI = the vCPU index (Intel TDX module base spec, "Initial State of Guest TD vCPU";
//! OVMF and td-shim rely on the same registers). The code here:
//! 1. runs on every vCPU alike: `_start` decides which one boots (`arch/smp.rs`);
//! 2. sets EFER.LME and EFER.NXE (the TDX module may have set LME already; writing it
//!    again is harmless), CR4.PAE, CR3 = the measured TDX page tables at
//!    `INITIAL_PT_GPA`, which map the firmware at `KERNEL_VA_BASE` and identity-map
//!    this page's 2 MiB region, then CR0.PG, which enters compatibility mode;
//! 3. loads a three-entry GDT of its own, far-jumps to 64-bit code and jumps to
//!    `_start` at its kernel address, where both platforms continue the same way.

use core::arch::global_asm;
use nacre_shared_abi::layout::{INITIAL_PT_GPA, TDX_RESET_PAGE_GPA, TDX_RESET_VECTOR};

/// IA32_EFER (Intel SDM vol. 4, 2.1) and its LME (bit 8) and NXE (bit 11).
const MSR_EFER: u32 = 0xC000_0080;
const EFER_LME_NXE: u32 = (1 << 8) | (1 << 11);
/// CR4.PAE (bit 5), CR0.PG (bit 31): Intel SDM vol. 3A, 2.5.
const CR4_PAE: u32 = 1 << 5;
const CR0_PG: u32 = 1 << 31;

global_asm!(
    ".pushsection .tdx_reset, \"ax\"",
    ".code32",
    "nacre_tdx_entry32:",
    "mov ecx, {efer}",
    "rdmsr",
    "or eax, {lme_nxe}",
    "wrmsr",
    "mov eax, cr4",
    "or eax, {pae}",
    "mov cr4, eax",
    "mov eax, {pt}",
    "mov cr3, eax",
    "mov eax, cr0",
    "or eax, {pg}",
    "mov cr0, eax",
    "lgdt [nacre_tdx_gdt_ptr]",
    // jmp far 0x08:nacre_tdx_entry64 (EA ptr16:32)
    ".byte 0xEA",
    ".long nacre_tdx_entry64",
    ".word 0x08",
    ".code64",
    "nacre_tdx_entry64:",
    "mov eax, 0x10",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    "movabs rax, offset _start",
    "jmp rax",
    ".balign 8",
    "nacre_tdx_gdt:",
    ".quad 0",
    ".quad 0x00AF9B000000FFFF", // 0x08: 64-bit code, DPL 0
    ".quad 0x00CF93000000FFFF", // 0x10: data, DPL 0
    "nacre_tdx_gdt_ptr:",
    ".word 23",
    ".long nacre_tdx_gdt",
    ".org {vector_offset}",
    ".code32",
    "jmp nacre_tdx_entry32",
    ".balign 4096, 0xF4",
    ".code64",
    ".popsection",
    efer = const MSR_EFER,
    lme_nxe = const EFER_LME_NXE,
    pae = const CR4_PAE,
    pg = const CR0_PG,
    pt = const INITIAL_PT_GPA,
    vector_offset = const TDX_RESET_VECTOR - TDX_RESET_PAGE_GPA,
);
