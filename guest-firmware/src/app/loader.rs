//! Load the app's PT_LOAD segments into fresh private frames, set up a Linux-style
//! initial stack (argc, argv, envp, auxv; System V x86-64 ABI 3.4.1) and enter ring 3.

use super::elf::{Elf, ET_DYN};
use crate::error::FwError;
use crate::kernel::{Kernel, UserMemError};
use crate::mem::frames::FrameTables;
use crate::mem::paging::{NO_EXECUTE, USER, WRITABLE};
use crate::mem::user::{Vma, PROT_EXEC, PROT_READ, PROT_WRITE};
use nacre_shared_abi::boot::{ArgsBlob, MAX_ARG_STRINGS};
use nacre_shared_abi::layout::PAGE_SIZE_4K;

/// Where a static-pie app is loaded.
const PIE_BASE: u64 = 0x0000_5555_5555_0000;
/// Top of the main thread's stack.
pub const STACK_TOP: u64 = 0x0000_7FFF_FFF0_0000;
/// Size of the stack area (RLIMIT_STACK).
pub const STACK_SIZE: u64 = 8 << 20;

/// Where the app starts.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub rip: u64,
    pub rsp: u64,
    /// RFLAGS: bit 1 (always set), and IF when the app may be interrupted.
    pub rflags: u64,
}

fn prot_of(flags: u32) -> u32 {
    // ELF PF_X = 1, PF_W = 2, PF_R = 4.
    let mut p = 0;
    if flags & 4 != 0 {
        p |= PROT_READ;
    }
    if flags & 2 != 0 {
        p |= PROT_WRITE;
    }
    if flags & 1 != 0 {
        p |= PROT_EXEC;
    }
    p
}

fn mem_err(e: UserMemError) -> FwError {
    match e {
        UserMemError::Platform(p) => p,
        UserMemError::NoMemory => FwError::OutOfMemory,
        UserMemError::Fault => FwError::BadApp,
    }
}

/// Most PT_LOAD segments an app may have.
const MAX_SEGMENTS: usize = 16;

/// One PT_LOAD segment at its load address.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    start: u64,
    page_start: u64,
    page_end: u64,
    prot: u32,
    offset: u64,
    filesz: u64,
}

/// Load `elf` and build the stack from `args`. Returns the entry state.
///
/// Every firmware instruction is costly where ring 0 is emulated (`docs/design.md`),
/// so the work is per segment and per run of pages: read-only pages holding only one
/// segment's file bytes are mapped straight from the measured image in one range,
/// pages with writable file bytes are copied, and pages past the file bytes (bss)
/// are left to demand paging, which hands out zeroed frames.
pub fn load(k: &mut Kernel, elf: &Elf, app_gpa: u64, args: &ArgsBlob) -> Result<Entry, FwError> {
    let base = if elf.e_type == ET_DYN { PIE_BASE } else { 0 };
    let mut segs = [Segment::default(); MAX_SEGMENTS];
    let mut nsegs = 0;
    let mut phdr_va = 0u64;
    for ph in elf.loads() {
        let start = base.checked_add(ph.vaddr).ok_or(FwError::BadApp)?;
        let end = start.checked_add(ph.memsz).ok_or(FwError::BadApp)?;
        if end > STACK_TOP - STACK_SIZE || start < PAGE_SIZE_4K || nsegs == MAX_SEGMENTS {
            return Err(FwError::BadApp);
        }
        if ph.offset <= elf.phoff && elf.phoff < ph.offset + ph.filesz {
            phdr_va = start + (elf.phoff - ph.offset);
        }
        segs[nsegs] = Segment {
            start,
            page_start: start & !(PAGE_SIZE_4K - 1),
            page_end: (end + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1),
            prot: prot_of(ph.flags),
            offset: ph.offset,
            filesz: ph.filesz,
        };
        nsegs += 1;
    }
    let segs = &segs[..nsegs];
    if segs.is_empty() {
        return Err(FwError::BadApp);
    }
    // Areas: one per segment; a page two segments share gets the union of rights.
    for seg in segs {
        let mut from = seg.page_start;
        while from < seg.page_end {
            match k.vmas.find(from) {
                Some(v) => {
                    k.vmas
                        .protect_range(from, from + PAGE_SIZE_4K, v.prot | seg.prot);
                    from += PAGE_SIZE_4K;
                }
                None => break,
            }
        }
        if from < seg.page_end {
            // Segments may only share their boundary pages.
            if k.vmas.overlaps(from, seg.page_end) {
                return Err(FwError::BadApp);
            }
            if !k.vmas.insert(Vma::anon(from, seg.page_end, seg.prot)) {
                return Err(FwError::OutOfMemory);
            }
        }
    }
    let shared_with_other = |i: usize, va: u64| {
        segs.iter()
            .enumerate()
            .any(|(j, o)| j != i && o.page_start <= va && va < o.page_end)
    };
    for (i, seg) in segs.iter().enumerate() {
        let file_end_va = seg.start + seg.filesz;
        let file_pages_end = (file_end_va + PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
        let direct_ok =
            seg.prot & PROT_WRITE == 0 && seg.offset % PAGE_SIZE_4K == seg.start % PAGE_SIZE_4K;
        let flags = Vma::anon(0, 0, seg.prot)
            .pte_flags()
            .unwrap_or(USER | NO_EXECUTE);
        // Whole, unshared file pages form one run, mapped with one call; only the
        // first and last page of a segment can be shared with a neighbour.
        let first_shared = shared_with_other(i, seg.page_start);
        let last_page = seg.page_end - PAGE_SIZE_4K;
        let last_shared = last_page > seg.page_start && shared_with_other(i, last_page);
        let run_start = seg.page_start + if first_shared { PAGE_SIZE_4K } else { 0 };
        let mut run_end = file_end_va & !(PAGE_SIZE_4K - 1);
        if last_shared {
            run_end = run_end.min(last_page);
        }
        let direct = if direct_ok && run_start < run_end {
            (run_start, run_end)
        } else {
            (0, 0)
        };
        if direct.0 < direct.1 {
            let file_page = (seg.offset & !(PAGE_SIZE_4K - 1)) + (direct.0 - seg.page_start);
            let n = (direct.1 - direct.0) / PAGE_SIZE_4K;
            let mut alloc = FrameTables {
                frames: &mut k.frames,
                plat: &mut *k.plat,
            };
            k.pt.map_range_4k(direct.0, app_gpa + file_page, n, flags, true, &mut alloc)
                .ok_or(FwError::OutOfMemory)?;
        }
        let mut va = seg.page_start;
        while va < file_pages_end.min(seg.page_end) {
            if direct.0 <= va && va < direct.1 {
                va = direct.1;
                continue;
            }
            // Copy this page's part of the file bytes into a private frame.
            k.populate(va, PAGE_SIZE_4K, false).map_err(mem_err)?;
            k.pt.set_flags_4k(va, USER | WRITABLE | NO_EXECUTE)
                .ok_or(FwError::BadApp)?;
            let lo = va.max(seg.start);
            let hi = (va + PAGE_SIZE_4K).min(file_end_va);
            if lo < hi {
                let off = (seg.offset + (lo - seg.start)) as usize;
                let bytes = &elf.bytes[off..off + (hi - lo) as usize];
                // SAFETY: the page at `va` was just mapped writable in the current
                // address space and nothing else references it.
                unsafe {
                    core::ptr::copy_nonoverlapping(bytes.as_ptr(), lo as *mut u8, bytes.len())
                };
            }
            let final_flags = k
                .vmas
                .find(va)
                .and_then(|v| v.pte_flags())
                .unwrap_or(USER | NO_EXECUTE);
            k.pt.set_flags_4k(va, final_flags).ok_or(FwError::BadApp)?;
            va += PAGE_SIZE_4K;
        }
    }
    let image_end = segs.iter().map(|s| s.page_end).max().unwrap_or(0);
    if image_end == 0 {
        return Err(FwError::BadApp);
    }
    k.brk_start = image_end;
    k.brk = image_end;

    if !k.vmas.insert(Vma::anon(
        STACK_TOP - STACK_SIZE,
        STACK_TOP,
        PROT_READ | PROT_WRITE,
    )) {
        return Err(FwError::OutOfMemory);
    }
    let vdso = super::vdso::map(k)?;
    let rsp = build_stack(k, args, base + elf.entry, phdr_va, elf.phnum, vdso).map_err(mem_err)?;
    Ok(Entry {
        rip: base + elf.entry,
        rsp,
        rflags: 0x2,
    })
}

/// Most arguments plus environment strings an image may carry (the argument blob
/// holds no more: `ArgsBlob::parse` refuses it).
const MAX_STRINGS: usize = MAX_ARG_STRINGS;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;
/// The vDSO's address (Linux `arch/x86/include/uapi/asm/auxvec.h`).
const AT_SYSINFO_EHDR: u64 = 33;
const AT_MINSIGSTKSZ: u64 = 51;

fn build_stack(
    k: &mut Kernel,
    args: &ArgsBlob,
    entry: u64,
    phdr: u64,
    phnum: u16,
    vdso: u64,
) -> Result<u64, UserMemError> {
    let mut sp = STACK_TOP;
    let push_bytes = |k: &mut Kernel, sp: &mut u64, b: &[u8]| -> Result<u64, UserMemError> {
        *sp -= b.len() as u64;
        k.copy_to_user(*sp, b)?;
        Ok(*sp)
    };
    // Strings: arguments and environment (NUL-terminated), platform, random bytes.
    let mut ptrs = [0u64; MAX_STRINGS];
    let count = (args.argc() + args.envc()) as usize;
    if count > ptrs.len() {
        return Err(UserMemError::NoMemory);
    }
    for (i, s) in args.strings().enumerate() {
        push_bytes(k, &mut sp, &[0])?;
        ptrs[i] = push_bytes(k, &mut sp, s)?;
    }
    let platform = push_bytes(k, &mut sp, b"x86_64\0")?;
    let mut random = [0u8; 16];
    for chunk in random.chunks_mut(8) {
        let r =
            crate::arch::cpu::hw_random().ok_or(UserMemError::Platform(FwError::NoRandomness))?;
        chunk.copy_from_slice(&r.to_le_bytes());
    }
    let random_va = push_bytes(k, &mut sp, &random)?;
    sp &= !15;

    let hwcap = u64::from(crate::arch::cpu::cpuid(1, 0).edx);
    let auxv: [(u64, u64); 20] = [
        (AT_SYSINFO_EHDR, vdso),
        (AT_PHDR, phdr),
        (AT_PHENT, 56),
        (AT_PHNUM, u64::from(phnum)),
        (AT_PAGESZ, PAGE_SIZE_4K),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_PLATFORM, platform),
        (AT_HWCAP, hwcap),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, random_va),
        (AT_HWCAP2, 0),
        (AT_EXECFN, ptrs[0]),
        (AT_MINSIGSTKSZ, min_sigstack_size()),
    ];
    let argc = args.argc() as usize;
    // Words: argc, argv[], NULL, envp[], NULL, auxv pairs, AT_NULL pair.
    let words = 1 + argc + 1 + (count - argc) + 1 + 2 * (auxv.len() + 1);
    if words % 2 == 1 {
        sp -= 8;
    }
    let mut table = [0u64; 1 + MAX_STRINGS + 2 + 2 * 21];
    let mut n = 0;
    table[n] = argc as u64;
    n += 1;
    for &p in &ptrs[..argc] {
        table[n] = p;
        n += 1;
    }
    n += 1; // NULL
    for &p in &ptrs[argc..count] {
        table[n] = p;
        n += 1;
    }
    n += 1; // NULL
    for (t, v) in auxv.iter().copied().chain(core::iter::once((AT_NULL, 0))) {
        table[n] = t;
        table[n + 1] = v;
        n += 2;
    }
    sp -= (n * 8) as u64;
    let bytes: &[u8] = zerocopy::IntoBytes::as_bytes(&table[..n]);
    k.copy_to_user(sp, bytes)?;
    Ok(sp)
}

/// AT_MINSIGSTKSZ: what a signal frame needs on this CPU, as Linux computes it for
/// x86 (`arch/x86/kernel/signal.c`, `get_sigframe_size`): the XSAVE area of the enabled
/// features (CPUID.(0xD,0):EBX) plus the frame around it, and never less than the
/// legacy MINSIGSTKSZ of 2048.
fn min_sigstack_size() -> u64 {
    let xsave = u64::from(crate::arch::cpu::cpuid(0xD, 0).ebx);
    (xsave + 1024).next_multiple_of(64).max(2048)
}
