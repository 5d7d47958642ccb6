//! A minimal ELF64 writer for tests (and, with the `test-support` feature, the fuzz
//! targets' seeds in tests/fuzz): an ELF header, program headers and segment bytes,
//! nothing else (no sections). Each segment's bytes are placed at a file offset congruent
//! to its virtual address modulo 4 KiB, as a linker would.

use nacre_shared_abi::layout::{FIRMWARE_GPA, KERNEL_VA_BASE, PAGE_SIZE_4K, TDX_RESET_PAGE_GPA};
use object::elf;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// One program header and its file bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub paddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
}

/// A whole ELF file.
#[derive(Debug, Clone)]
pub struct ElfSpec {
    pub e_type: u16,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<Segment>,
}

fn put16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl ElfSpec {
    pub fn build(&self) -> Vec<u8> {
        let phnum = self.segments.len();
        let mut cursor = (EHDR_SIZE + PHDR_SIZE * phnum) as u64;
        let mut offsets = Vec::with_capacity(phnum);
        for seg in &self.segments {
            if seg.data.is_empty() {
                offsets.push(0);
                continue;
            }
            let mut offset = cursor / PAGE_SIZE_4K * PAGE_SIZE_4K + seg.vaddr % PAGE_SIZE_4K;
            if offset < cursor {
                offset += PAGE_SIZE_4K;
            }
            offsets.push(offset);
            cursor = offset + seg.data.len() as u64;
        }
        let mut out = vec![0u8; cursor as usize];

        out[..4].copy_from_slice(&elf::ELFMAG);
        out[4] = elf::ELFCLASS64.0;
        out[5] = elf::ELFDATA2LSB.0;
        out[6] = elf::EV_CURRENT.0;
        put16(&mut out, 16, self.e_type);
        put16(&mut out, 18, self.machine);
        put32(&mut out, 20, u32::from(elf::EV_CURRENT.0));
        put64(&mut out, 24, self.entry);
        put64(&mut out, 32, EHDR_SIZE as u64);
        put16(&mut out, 52, EHDR_SIZE as u16);
        put16(&mut out, 54, PHDR_SIZE as u16);
        put16(&mut out, 56, phnum as u16);
        put16(&mut out, 58, 64);

        for (i, (seg, &offset)) in self.segments.iter().zip(&offsets).enumerate() {
            let at = EHDR_SIZE + i * PHDR_SIZE;
            put32(&mut out, at, seg.p_type);
            put32(&mut out, at + 4, seg.flags);
            put64(&mut out, at + 8, offset);
            put64(&mut out, at + 16, seg.vaddr);
            put64(&mut out, at + 24, seg.paddr);
            put64(&mut out, at + 32, seg.data.len() as u64);
            put64(&mut out, at + 40, seg.memsz);
            put64(&mut out, at + 48, PAGE_SIZE_4K);
            let start = offset as usize;
            out[start..start + seg.data.len()].copy_from_slice(&seg.data);
        }
        out
    }
}

/// Recognisable, non-zero bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1)
        .collect()
}

pub const APP_ENTRY: u64 = 0x40_1010;

/// A static `ET_EXEC` app: text at 0x401000, data + bss at 0x402000..0x403800, and a
/// `PT_GNU_STACK` so the program header table is three entries long.
pub fn static_app_spec() -> ElfSpec {
    ElfSpec {
        e_type: elf::ET_EXEC.0,
        machine: elf::EM_X86_64.0,
        entry: APP_ENTRY,
        segments: vec![
            Segment {
                p_type: elf::PT_LOAD.0,
                flags: elf::PF_R.0 | elf::PF_X.0,
                vaddr: 0x40_1000,
                paddr: 0x40_1000,
                data: pattern(64, 0x90),
                memsz: 64,
            },
            Segment {
                p_type: elf::PT_LOAD.0,
                flags: elf::PF_R.0 | elf::PF_W.0,
                vaddr: 0x40_2000,
                paddr: 0x40_2000,
                data: pattern(32, 0x11),
                memsz: 0x1800,
            },
            Segment {
                p_type: elf::PT_GNU_STACK.0,
                flags: elf::PF_R.0 | elf::PF_W.0,
                vaddr: 0,
                paddr: 0,
                data: Vec::new(),
                memsz: 0,
            },
        ],
    }
}

pub fn static_app() -> Vec<u8> {
    static_app_spec().build()
}

pub const FIRMWARE_ENTRY: u64 = KERNEL_VA_BASE + FIRMWARE_GPA + 0x10;
/// Length of the firmware's text segment (spills into a second page).
pub const FIRMWARE_TEXT_LEN: u64 = 5000;
/// Physical offset of the data segment from `FIRMWARE_GPA`: it shares the text's last
/// page.
pub const FIRMWARE_DATA_OFFSET: u64 = 5100;
pub const FIRMWARE_DATA_LEN: u64 = 300;
pub const FIRMWARE_BSS_LEN: u64 = 3 * PAGE_SIZE_4K;
/// `FIRMWARE_GPA + align_up(5100 + 300 + 3 * 4096, 4096)`.
pub const FIRMWARE_END: u64 = FIRMWARE_GPA + 5 * PAGE_SIZE_4K;

/// A firmware ELF: text at `FIRMWARE_GPA`, then data and bss sharing the text's last page.
pub fn firmware_spec() -> ElfSpec {
    let data_gpa = FIRMWARE_GPA + FIRMWARE_DATA_OFFSET;
    ElfSpec {
        e_type: elf::ET_EXEC.0,
        machine: elf::EM_X86_64.0,
        entry: FIRMWARE_ENTRY,
        segments: vec![
            Segment {
                p_type: elf::PT_LOAD.0,
                flags: elf::PF_R.0 | elf::PF_X.0,
                vaddr: KERNEL_VA_BASE + FIRMWARE_GPA,
                paddr: FIRMWARE_GPA,
                data: pattern(FIRMWARE_TEXT_LEN as usize, 0x33),
                memsz: FIRMWARE_TEXT_LEN,
            },
            Segment {
                p_type: elf::PT_LOAD.0,
                flags: elf::PF_R.0 | elf::PF_W.0,
                vaddr: KERNEL_VA_BASE + data_gpa,
                paddr: data_gpa,
                data: pattern(FIRMWARE_DATA_LEN as usize, 0x55),
                memsz: FIRMWARE_DATA_LEN + FIRMWARE_BSS_LEN,
            },
        ],
    }
}

pub fn firmware() -> Vec<u8> {
    firmware_spec().build()
}

/// Seed of the TDX reset page's bytes in [`tdx_firmware_spec`].
pub const TDX_RESET_SEED: u8 = 0x77;

/// The TDX reset page segment: one full page of code at `TDX_RESET_PAGE_GPA`, linked at
/// its physical address, R+X.
pub fn tdx_reset_segment(seed: u8) -> Segment {
    Segment {
        p_type: elf::PT_LOAD.0,
        flags: elf::PF_R.0 | elf::PF_X.0,
        vaddr: TDX_RESET_PAGE_GPA,
        paddr: TDX_RESET_PAGE_GPA,
        data: pattern(PAGE_SIZE_4K as usize, seed),
        memsz: PAGE_SIZE_4K,
    }
}

/// [`firmware_spec`] plus the TDX reset page (last in the program header table).
pub fn tdx_firmware_spec() -> ElfSpec {
    let mut spec = firmware_spec();
    spec.segments.push(tdx_reset_segment(TDX_RESET_SEED));
    spec
}

/// A firmware ELF bootable on both SEV-SNP and TDX.
pub fn tdx_firmware() -> Vec<u8> {
    tdx_firmware_spec().build()
}
