//! The SEV-SNP entry path: the firmware's ELF entry point, where the BSP's VMSA starts it
//! (`loader/src/vmsa.rs`) in 32-bit protected mode with paging off, flat segments, every
//! general-purpose register 0, at the entry's physical address. Nothing in that state
//! or in the measured pages depends on the host's C-bit position; the code here learns
//! it and builds long mode around it:
//!
//! 1. reads the C-bit from the measured CPUID page at `SNP_CPUID_PAGE_GPA` (leaf
//!    0x8000_001F, EBX bits 5:0; docs/specs.md 4.7), which the security processor
//!    checked against the CPU at launch. A page without that leaf, with more than 64
//!    entries or with a position outside 32..=51 ends the guest (GHCB MSR protocol
//!    termination request, reason set 0 code 0), as nothing can run without it;
//! 2. sets the C-bit in every entry of the PML4, the PDPT and the PD of the measured
//!    initial page tables at `INITIAL_PT_GPA` (`loader/src/pagetable.rs`), which map
//!    the launch pages and the firmware at GPA 0 and at `KERNEL_VA_BASE`. With paging
//!    off every access is private (AMD APM vol. 2, 15.34.5), so these writes change
//!    the measured, validated pages in place;
//! 3. sets EFER.LME and EFER.NXE, CR4.PAE (and OSFXSR, OSXMMEXCPT as the 64-bit code
//!    expects), CR3 = `INITIAL_PT_GPA`, then CR0.PG and CR0.WP, which enters
//!    compatibility mode running from the identity map;
//! 4. loads a three-entry GDT of its own, far-jumps to 64-bit code, reloads CR3 with the
//!    C-bit set (a 32-bit CR3 cannot hold it) and jumps to `_start` at its kernel
//!    address, where both platforms continue the same way.
//!
//! The code runs before paging, at the physical address of a section linked at
//! `KERNEL_VA_BASE`, so every absolute address in it is written as `symbol -
//! KERNEL_VA_BASE`. It is kept short: on KVM's software-virtualization backend every
//! ring-0 instruction is emulated.

use core::arch::global_asm;
use nacre_shared_abi::layout::{
    INITIAL_MAP_SIZE, INITIAL_PT_GPA, KERNEL_VA_BASE, PAGE_SIZE_2M, PAGE_SIZE_4K,
    SNP_CPUID_PAGE_GPA,
};
use nacre_shared_abi::snp::cpuid_page::{CpuidPage, LEAF_ENCRYPTED_MEMORY};
use nacre_shared_abi::snp::cpuid_page::{CpuidPageEntry, CPUID_PAGE_MAX_ENTRIES};
use nacre_shared_abi::snp::MSR_GHCB;

/// IA32_EFER (AMD APM vol. 2, 3.1.7) and its LME (bit 8) and NXE (bit 11).
const MSR_EFER: u32 = 0xC000_0080;
const EFER_LME_NXE: u32 = (1 << 8) | (1 << 11);
/// CR4.PAE (bit 5), OSFXSR (bit 9), OSXMMEXCPT (bit 10): AMD APM vol. 2, 3.1.3.
const CR4_BITS: u32 = (1 << 5) | (1 << 9) | (1 << 10);
/// CR0.PG (bit 31) and CR0.WP (bit 16): AMD APM vol. 2, 3.1.1.
const CR0_BITS: u32 = (1 << 31) | (1 << 16);
/// GHCB MSR protocol termination request, reason set 0 (general), code 0 (GHCBInfo
/// 0x100; docs/specs.md 1.4).
const TERMINATE_REQUEST: u32 = 0x100;

/// The byte offsets the code reads, from the page's layout.
const COUNT_OFFSET: usize = core::mem::offset_of!(CpuidPage, count);
const ENTRIES_OFFSET: usize = core::mem::offset_of!(CpuidPage, entries);
const ENTRY_SIZE: usize = core::mem::size_of::<CpuidPageEntry>();
const EAX_IN_OFFSET: usize = core::mem::offset_of!(CpuidPageEntry, eax_in);
const EBX_OFFSET: usize = core::mem::offset_of!(CpuidPageEntry, ebx);

/// The tables, as `loader/src/pagetable.rs` places them.
const PML4: u64 = INITIAL_PT_GPA;
const PDPT: u64 = INITIAL_PT_GPA + PAGE_SIZE_4K;
const PD: u64 = INITIAL_PT_GPA + 2 * PAGE_SIZE_4K;
/// PML4 and PDPT entries in use: index 0 (the identity map) and the kernel window's.
const PML4_KERNEL: u64 = (KERNEL_VA_BASE >> 39) & 0x1FF;
const PDPT_KERNEL: u64 = (KERNEL_VA_BASE >> 30) & 0x1FF;
/// PD entries in use.
const PD_ENTRIES: u64 = INITIAL_MAP_SIZE / PAGE_SIZE_2M;

const _: () = assert!(PML4_KERNEL == 511 && PDPT_KERNEL == 510 && PD_ENTRIES == 8);
const _: () = assert!(INITIAL_PT_GPA + 3 * PAGE_SIZE_4K < 1 << 32);
const _: () = assert!(SNP_CPUID_PAGE_GPA < 1 << 32);

global_asm!(
    ".pushsection .text.snp_entry, \"ax\"",
    ".code32",
    ".global nacre_snp_entry32",
    "nacre_snp_entry32:",
    // 1. The C-bit from the CPUID page: EDI walks the entries, ECX counts down.
    "mov ecx, [{cpuid_page} + {count_offset}]",
    "cmp ecx, {max_entries}",
    "ja 8f",
    "mov edi, {cpuid_page} + {entries_offset}",
    "2:",
    "test ecx, ecx",
    "jz 8f",
    "cmp dword ptr [edi + {eax_in_offset}], {leaf}",
    "je 3f",
    "add edi, {entry_size}",
    "dec ecx",
    "jmp 2b",
    "3:",
    "mov ebx, [edi + {ebx_offset}]",
    "and ebx, 0x3F",
    "cmp ebx, 32",
    "jb 8f",
    "cmp ebx, 51",
    "ja 8f",
    // 2. EDX = the C-bit within the entries' high dword; set it in each entry in use.
    "lea ecx, [ebx - 32]",
    "xor edx, edx",
    "bts edx, ecx",
    "or [{pml4} + 4], edx",
    "or [{pml4} + {pml4_kernel} * 8 + 4], edx",
    "or [{pdpt} + 4], edx",
    "or [{pdpt} + {pdpt_kernel} * 8 + 4], edx",
    "mov edi, {pd} + 4",
    "mov ecx, {pd_entries}",
    "4:",
    "or [edi], edx",
    "add edi, 8",
    "dec ecx",
    "jnz 4b",
    // 3. Long mode, paging on: compatibility mode, identity-mapped.
    "mov ecx, {efer}",
    "rdmsr",
    "or eax, {lme_nxe}",
    "wrmsr",
    "mov eax, cr4",
    "or eax, {cr4_bits}",
    "mov cr4, eax",
    "mov eax, {pml4}",
    "mov cr3, eax",
    "mov eax, cr0",
    "or eax, {cr0_bits}",
    "mov cr0, eax",
    // 4. 64-bit code: jmp far 0x08:nacre_snp_entry64 (EA ptr16:32) at its physical
    // address.
    "lgdt [nacre_snp_gdt_ptr - {kernel}]",
    ".byte 0xEA",
    ".long nacre_snp_entry64 - {kernel}",
    ".word 0x08",
    // No usable CPUID page: ask the hypervisor to end the guest (VMGEXIT), and if it
    // does not, triple-fault (an empty IDT, then #UD): `hlt` would only wait.
    "8:",
    "mov ecx, {ghcb_msr}",
    "mov eax, {terminate}",
    "xor edx, edx",
    "wrmsr",
    "rep vmmcall",
    "lidt [nacre_snp_no_idt - {kernel}]",
    "ud2",
    ".code64",
    "nacre_snp_entry64:",
    "mov eax, 0x10",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    // The high halves of registers written in 32-bit mode are undefined here.
    "mov ebx, ebx",
    "mov eax, {pml4}",
    "bts rax, rbx",
    "mov cr3, rax",
    "movabs rax, offset _start",
    "jmp rax",
    ".balign 8",
    "nacre_snp_gdt:",
    ".quad 0",
    ".quad 0x00AF9B000000FFFF", // 0x08: 64-bit code, DPL 0, accessed
    ".quad 0x00CF93000000FFFF", // 0x10: data, DPL 0, accessed
    "nacre_snp_gdt_ptr:",
    ".word 23",
    ".long nacre_snp_gdt - {kernel}",
    "nacre_snp_no_idt:",
    ".word 0",
    ".long 0",
    ".popsection",
    cpuid_page = const SNP_CPUID_PAGE_GPA,
    count_offset = const COUNT_OFFSET,
    max_entries = const CPUID_PAGE_MAX_ENTRIES,
    entries_offset = const ENTRIES_OFFSET,
    eax_in_offset = const EAX_IN_OFFSET,
    leaf = const LEAF_ENCRYPTED_MEMORY,
    entry_size = const ENTRY_SIZE,
    ebx_offset = const EBX_OFFSET,
    pml4 = const PML4,
    pdpt = const PDPT,
    pd = const PD,
    pml4_kernel = const PML4_KERNEL,
    pdpt_kernel = const PDPT_KERNEL,
    pd_entries = const PD_ENTRIES,
    efer = const MSR_EFER,
    lme_nxe = const EFER_LME_NXE,
    cr4_bits = const CR4_BITS,
    cr0_bits = const CR0_BITS,
    kernel = const KERNEL_VA_BASE,
    ghcb_msr = const MSR_GHCB,
    terminate = const TERMINATE_REQUEST,
);
