//! ELF checks for the two programs an image carries.
//!
//! The **app** must be a static x86-64 Linux executable: `ET_EXEC`, or `ET_DYN` without a
//! `PT_INTERP` (static-pie). The firmware loads it from the image itself and the guest has
//! no dynamic loader, so anything that asks for one is refused here, at packaging time,
//! with a message that says how to fix it.
//!
//! The **firmware** must be an `ET_EXEC` whose `PT_LOAD` segments are linked at their
//! physical load address (`p_paddr`) inside [`FIRMWARE_GPA`]..[`FIRMWARE_GPA_END`] and at
//! the virtual address `KERNEL_VA_BASE + p_paddr` that the loader's initial page tables
//! map (`docs/memory-map.md`). Its entry point `e_entry` is the SEV-SNP BSP's first
//! instruction, at physical address `e_entry - KERNEL_VA_BASE`: the BSP starts there in
//! 32-bit protected mode with paging off (the VMSA, `loader/src/vmsa.rs`), so the code
//! there is 32-bit code that does not depend on where it is linked. One more segment may sit outside that region: the **TDX
//! reset page**, at most one 4 KiB page linked at physical and virtual address
//! [`TDX_RESET_PAGE_GPA`], readable and executable and not writable, whose file bytes
//! hold the reset vector [`TDX_RESET_VECTOR`]. A TD's BSP starts there in 32-bit mode with
//! paging off (Intel TDX module base architecture spec, "Initial State of Guest TD
//! vCPU"), so the code is linked at its physical address. Firmware with that segment
//! can be packaged for TDX as well as SEV-SNP; without it, for SEV-SNP only.
//!
//! Field and constant names follow the System V gABI ("ELF Header", "Program Header")
//! and its AMD64 supplement.

use nacre_shared_abi::layout::{
    align_down, align_up, FIRMWARE_GPA, FIRMWARE_GPA_END, KERNEL_VA_BASE, NULL_GUARD_END,
    PAGE_SIZE_4K, TDX_RESET_PAGE_GPA, TDX_RESET_VECTOR, USER_VA_END,
};
use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use object::LittleEndian;
use thiserror::Error;

type FileHeader = elf::FileHeader64<LittleEndian>;
type ProgramHeader = elf::ProgramHeader64<LittleEndian>;

/// x86-64 ELF files are little-endian (AMD64 psABI 4.1).
const ENDIAN: LittleEndian = LittleEndian;
/// The bytes of a program interpreter's path a message shows (real ones are short).
const MAX_INTERP_SHOWN: usize = 256;

/// Why an ELF file was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// The file does not start with `\x7fELF`.
    #[error("the file is not an ELF executable (it does not start with the ELF magic number)")]
    NotElf,
    /// A header lies (partly) past the end of the file.
    #[error(
        "the ELF file is truncated: its {part} extends past the end of the file ({file_len} bytes)"
    )]
    Truncated {
        /// Which header.
        part: &'static str,
        /// Length of the file.
        file_len: usize,
    },
    /// A `PT_LOAD` segment's file bytes lie (partly) past the end of the file.
    #[error(
        "the ELF file is truncated: program header {index} needs file bytes up to offset \
         {end:#x} but the file is only {file_len} bytes long"
    )]
    SegmentTruncated {
        /// Index of the program header.
        index: usize,
        /// First file offset after the segment's bytes.
        end: u64,
        /// Length of the file.
        file_len: usize,
    },
    /// `EI_CLASS` is not `ELFCLASS64`.
    #[error("the ELF file is not 64-bit (EI_CLASS is {class}); nacre runs x86-64 programs only")]
    Not64Bit {
        /// The `EI_CLASS` byte.
        class: u8,
    },
    /// `EI_DATA` is not `ELFDATA2LSB`.
    #[error(
        "the ELF file is not little-endian (EI_DATA is {data}); nacre runs x86-64 programs only"
    )]
    NotLittleEndian {
        /// The `EI_DATA` byte.
        data: u8,
    },
    /// `e_machine` is not `EM_X86_64`.
    #[error("the ELF file is built for {} (e_machine {machine}), not x86-64", machine_name(*.machine))]
    WrongMachine {
        /// The `e_machine` field.
        machine: u16,
    },
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`.
    #[error("the ELF file is {}, not an executable; link it into a program", type_name(*.e_type))]
    NotExecutable {
        /// The `e_type` field.
        e_type: u16,
    },
    /// The file has a `PT_INTERP` program header.
    #[error(
        "the app is dynamically linked (it asks for the program interpreter {interp}); nacre \
         runs static executables only: link it with -static (or -static-pie)"
    )]
    DynamicallyLinked {
        /// The requested interpreter path, lossily decoded.
        interp: String,
    },
    /// There is no non-empty `PT_LOAD` segment.
    #[error("the ELF file has no PT_LOAD segment, so there is nothing to load")]
    NoLoadSegment,
    /// A header field is inconsistent.
    #[error("the ELF file is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A `PT_LOAD` program header is inconsistent.
    #[error("program header {index} of the ELF file is invalid: {reason}")]
    BadSegment {
        /// Index of the program header.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `e_entry` is not inside the file bytes of an executable `PT_LOAD` segment.
    #[error("the entry point {entry:#x} is not inside the code of an executable PT_LOAD segment")]
    EntryOutsideSegments {
        /// The `e_entry` field.
        entry: u64,
    },
    /// The firmware is not a fixed-address executable.
    #[error("the firmware must be a fixed-address executable (ET_EXEC), but it is {}", type_name(*.e_type))]
    FirmwareNotFixed {
        /// The `e_type` field.
        e_type: u16,
    },
    /// A firmware segment's physical range is outside the firmware region (and it is
    /// not the TDX reset page).
    #[error(
        "firmware program header {index} occupies physical {start:#x}..{end:#x}, outside the \
         firmware region {FIRMWARE_GPA:#x}..{FIRMWARE_GPA_END:#x} (the one segment allowed \
         elsewhere is the TDX reset page at {TDX_RESET_PAGE_GPA:#x})"
    )]
    FirmwareOutsideRegion {
        /// Index of the program header.
        index: usize,
        /// `p_paddr`.
        start: u64,
        /// `p_paddr + p_memsz` (saturated).
        end: u64,
    },
    /// A firmware segment's virtual address is not `KERNEL_VA_BASE + p_paddr`.
    #[error(
        "firmware program header {index} is linked at virtual address {vaddr:#x}, but it must \
         be KERNEL_VA_BASE + its physical address ({expected:#x})"
    )]
    FirmwareVirtualAddress {
        /// Index of the program header.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
        /// `KERNEL_VA_BASE + p_paddr`.
        expected: u64,
    },
    /// Two firmware segments share bytes.
    #[error("firmware program headers {first} and {second} overlap in physical memory")]
    FirmwareOverlap {
        /// Index of the lower program header.
        first: usize,
        /// Index of the higher program header.
        second: usize,
    },
    /// The segment at the TDX reset page does not have the shape the module
    /// documentation gives.
    #[error(
        "firmware program header {index} is the TDX reset page (physical \
         {TDX_RESET_PAGE_GPA:#x}) but {reason}"
    )]
    BadTdxResetPage {
        /// Index of the program header.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More than one segment at the TDX reset page.
    #[error(
        "firmware program headers {first} and {second} are both at the TDX reset page \
         {TDX_RESET_PAGE_GPA:#x}; there can be only one"
    )]
    DuplicateTdxResetPage {
        /// Index of the first program header.
        first: usize,
        /// Index of the second program header.
        second: usize,
    },
}

fn machine_name(machine: u16) -> &'static str {
    match elf::Machine(machine) {
        elf::EM_386 => "32-bit x86",
        elf::EM_ARM => "32-bit Arm",
        elf::EM_AARCH64 => "AArch64",
        elf::EM_RISCV => "RISC-V",
        elf::EM_PPC64 => "64-bit PowerPC",
        elf::EM_S390 => "s390",
        _ => "another machine",
    }
}

fn type_name(e_type: u16) -> &'static str {
    match elf::FileType(e_type) {
        elf::ET_NONE => "of no type (ET_NONE)",
        elf::ET_REL => "a relocatable object file (ET_REL)",
        elf::ET_EXEC => "a fixed-address executable (ET_EXEC)",
        elf::ET_DYN => "position-independent (ET_DYN)",
        elf::ET_CORE => "a core dump (ET_CORE)",
        _ => "of an unknown type",
    }
}

/// What the loader learned about a valid app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppInfo {
    /// `e_entry`: a virtual address for `ET_EXEC`, an offset from the load base for
    /// static-pie.
    pub entry: u64,
    /// The app is static-pie (`ET_DYN`) and the firmware chooses its load base.
    pub pie: bool,
    /// Bytes of address space the `PT_LOAD` segments span once loaded, from the page
    /// holding the lowest segment to the end of the page holding the highest.
    pub size: u64,
}

/// One `PT_LOAD` program header, copied out of the file and checked against it.
#[derive(Debug, Clone, Copy)]
struct LoadSegment {
    index: usize,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

impl LoadSegment {
    /// The first virtual address after the segment (no overflow: checked on parse).
    fn vend(&self) -> u64 {
        self.vaddr + self.memsz
    }

    /// `va` is backed by the segment's file bytes (not its zero-filled tail).
    fn has_file_byte_at(&self, va: u64) -> bool {
        self.vaddr <= va && va - self.vaddr < self.filesz
    }
}

/// Check `e_ident`, the header length and `e_machine`.
fn parse_header(bytes: &[u8]) -> Result<&FileHeader, ElfError> {
    let magic_len = bytes.len().min(elf::ELFMAG.len());
    if bytes.is_empty() || bytes[..magic_len] != elf::ELFMAG[..magic_len] {
        return Err(ElfError::NotElf);
    }
    let ident_len = core::mem::size_of::<elf::Ident>();
    if bytes.len() < ident_len {
        return Err(ElfError::Truncated {
            part: "identification bytes",
            file_len: bytes.len(),
        });
    }
    let ident = &bytes[..ident_len];
    // e_ident[EI_CLASS] and e_ident[EI_DATA] (gABI "ELF Identification").
    let (class, data, version) = (ident[4], ident[5], ident[6]);
    if class != elf::ELFCLASS64.0 {
        return Err(ElfError::Not64Bit { class });
    }
    if data != elf::ELFDATA2LSB.0 {
        return Err(ElfError::NotLittleEndian { data });
    }
    if version != elf::EV_CURRENT.0 {
        return Err(ElfError::Malformed {
            reason: "the identification version is not EV_CURRENT",
        });
    }
    if bytes.len() < core::mem::size_of::<FileHeader>() {
        return Err(ElfError::Truncated {
            part: "ELF header",
            file_len: bytes.len(),
        });
    }
    let header = FileHeader::parse(bytes).map_err(|_| ElfError::Malformed {
        reason: "the ELF header cannot be read",
    })?;
    let machine = header.e_machine(ENDIAN).0;
    if machine != elf::EM_X86_64.0 {
        return Err(ElfError::WrongMachine { machine });
    }
    Ok(header)
}

/// Read the program headers: refuse `PT_INTERP`, check every `PT_LOAD` against the file
/// and return the non-empty ones.
fn load_segments(header: &FileHeader, bytes: &[u8]) -> Result<Vec<LoadSegment>, ElfError> {
    let phoff = header.e_phoff(ENDIAN);
    let phnum = header
        .phnum(ENDIAN, bytes)
        .map_err(|_| ElfError::Malformed {
            reason: "the program header count cannot be read",
        })?;
    if phoff == 0 || phnum == 0 {
        return Err(ElfError::NoLoadSegment);
    }
    if usize::from(header.e_phentsize(ENDIAN)) != core::mem::size_of::<ProgramHeader>() {
        return Err(ElfError::Malformed {
            reason: "e_phentsize is not the size of an ELF64 program header",
        });
    }
    let table_end = u64::from(phnum)
        .checked_mul(core::mem::size_of::<ProgramHeader>() as u64)
        .and_then(|len| phoff.checked_add(len));
    if table_end.is_none_or(|end| end > bytes.len() as u64) {
        return Err(ElfError::Truncated {
            part: "program header table",
            file_len: bytes.len(),
        });
    }
    let phdrs = header
        .program_headers(ENDIAN, bytes)
        .map_err(|_| ElfError::Truncated {
            part: "program header table",
            file_len: bytes.len(),
        })?;

    if let Some(interp) = phdrs.iter().find(|ph| ph.p_type(ENDIAN) == elf::PT_INTERP) {
        let path = interp
            .data(ENDIAN, bytes)
            .ok()
            .map(|raw| raw.split(|&b| b == 0).next().unwrap_or_default())
            // As a message shows it: escaped, and short (it is the file's text).
            .map(|raw| crate::shown_text(raw, MAX_INTERP_SHOWN))
            .unwrap_or_else(|| "(unreadable)".to_owned());
        return Err(ElfError::DynamicallyLinked { interp: path });
    }

    let mut loads = Vec::new();
    for (index, ph) in phdrs.iter().enumerate() {
        if ph.p_type(ENDIAN) != elf::PT_LOAD {
            continue;
        }
        let seg = LoadSegment {
            index,
            flags: ph.p_flags(ENDIAN).0,
            offset: ph.p_offset(ENDIAN),
            vaddr: ph.p_vaddr(ENDIAN),
            paddr: ph.p_paddr(ENDIAN),
            filesz: ph.p_filesz(ENDIAN),
            memsz: ph.p_memsz(ENDIAN),
        };
        if seg.filesz > seg.memsz {
            return Err(ElfError::BadSegment {
                index,
                reason: "its file size is larger than its memory size",
            });
        }
        let file_end = seg
            .offset
            .checked_add(seg.filesz)
            .ok_or(ElfError::BadSegment {
                index,
                reason: "its file range wraps around",
            })?;
        if file_end > bytes.len() as u64 {
            return Err(ElfError::SegmentTruncated {
                index,
                end: file_end,
                file_len: bytes.len(),
            });
        }
        if seg.vaddr.checked_add(seg.memsz).is_none() {
            return Err(ElfError::BadSegment {
                index,
                reason: "its virtual address range wraps around",
            });
        }
        if seg.memsz > 0 {
            loads.push(seg);
        }
    }
    if loads.is_empty() {
        return Err(ElfError::NoLoadSegment);
    }
    Ok(loads)
}

/// Check that `entry` is inside the file bytes of an executable segment.
fn check_entry(loads: &[LoadSegment], entry: u64) -> Result<(), ElfError> {
    let ok = loads
        .iter()
        .any(|seg| seg.flags & elf::PF_X.0 != 0 && seg.has_file_byte_at(entry));
    if ok {
        Ok(())
    } else {
        Err(ElfError::EntryOutsideSegments { entry })
    }
}

/// Check that `bytes` is a static x86-64 Linux executable: `ET_EXEC`, or `ET_DYN`
/// static-pie (no `PT_INTERP`), with at least one `PT_LOAD` and every segment's file
/// bytes inside the file.
pub fn check_app_elf(bytes: &[u8]) -> Result<AppInfo, ElfError> {
    let header = parse_header(bytes)?;
    let e_type = header.e_type(ENDIAN);
    let pie = match e_type {
        elf::ET_EXEC => false,
        elf::ET_DYN => true,
        other => return Err(ElfError::NotExecutable { e_type: other.0 }),
    };
    let loads = load_segments(header, bytes)?;
    for seg in &loads {
        // A fixed-address app must sit in the user half above the null guard; a
        // static-pie one is placed by the firmware, so only its extent matters.
        let lowest = if pie { 0 } else { NULL_GUARD_END };
        if seg.vaddr < lowest || seg.vend() > USER_VA_END {
            return Err(ElfError::BadSegment {
                index: seg.index,
                reason: "it lies outside the user address space",
            });
        }
    }
    let entry = header.e_entry(ENDIAN);
    check_entry(&loads, entry)?;
    let low = loads
        .iter()
        .map(|seg| align_down(seg.vaddr, PAGE_SIZE_4K))
        .min()
        .unwrap_or(0);
    let high = loads
        .iter()
        .map(|seg| align_up(seg.vend(), PAGE_SIZE_4K))
        .max()
        .unwrap_or(0);
    Ok(AppInfo {
        entry,
        pie,
        size: high - low,
    })
}

/// One firmware `PT_LOAD` segment, ready to be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareSegment<'a> {
    /// Guest-physical address of the first byte (`p_paddr`, not page-aligned in general).
    pub gpa: u64,
    /// Bytes the segment occupies in memory (`p_memsz`, non-zero).
    pub mem_size: u64,
    /// The segment's file bytes (`p_filesz` of them); the rest of `mem_size` is zero.
    pub file_bytes: &'a [u8],
}

/// A checked firmware ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareImage<'a> {
    /// `e_entry`, a kernel virtual address inside the file bytes of an executable
    /// segment of `segments`: the SEV-SNP BSP starts at its physical address
    /// (`entry - KERNEL_VA_BASE`) in 32-bit protected mode with paging off.
    pub entry: u64,
    /// Non-empty `PT_LOAD` segments inside the firmware region, in ascending physical
    /// order, pairwise disjoint (two may share a 4 KiB page).
    pub segments: Vec<FirmwareSegment<'a>>,
    /// The TDX reset page segment at [`TDX_RESET_PAGE_GPA`] (32-bit entry code and the
    /// reset vector), if the firmware has one: it makes the firmware bootable on TDX.
    pub tdx_reset: Option<FirmwareSegment<'a>>,
}

impl FirmwareImage<'_> {
    /// First GPA after the page holding the last byte (bss included) of the segments
    /// in the firmware region; the TDX reset page does not count.
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|seg| align_up(seg.gpa + seg.mem_size, PAGE_SIZE_4K))
            .max()
            .unwrap_or(FIRMWARE_GPA)
    }
}

/// Check the firmware ELF (see the module documentation) and return its segments.
pub fn check_firmware_elf(bytes: &[u8]) -> Result<FirmwareImage<'_>, ElfError> {
    let header = parse_header(bytes)?;
    let e_type = header.e_type(ENDIAN);
    if e_type != elf::ET_EXEC {
        return Err(ElfError::FirmwareNotFixed { e_type: e_type.0 });
    }
    let mut loads = Vec::new();
    let mut tdx_reset: Option<LoadSegment> = None;
    for seg in load_segments(header, bytes)? {
        if seg.paddr == TDX_RESET_PAGE_GPA {
            if let Some(first) = tdx_reset {
                return Err(ElfError::DuplicateTdxResetPage {
                    first: first.index,
                    second: seg.index,
                });
            }
            check_tdx_reset_segment(&seg)?;
            tdx_reset = Some(seg);
            continue;
        }
        let end = seg.paddr.checked_add(seg.memsz);
        if seg.paddr < FIRMWARE_GPA || end.is_none_or(|end| end > FIRMWARE_GPA_END) {
            return Err(ElfError::FirmwareOutsideRegion {
                index: seg.index,
                start: seg.paddr,
                end: seg.paddr.saturating_add(seg.memsz),
            });
        }
        // paddr < FIRMWARE_GPA_END, so this cannot overflow.
        let expected = KERNEL_VA_BASE + seg.paddr;
        if seg.vaddr != expected {
            return Err(ElfError::FirmwareVirtualAddress {
                index: seg.index,
                vaddr: seg.vaddr,
                expected,
            });
        }
        loads.push(seg);
    }
    let entry = header.e_entry(ENDIAN);
    check_entry(&loads, entry)?;

    loads.sort_by_key(|seg| (seg.paddr, seg.index));
    for pair in loads.windows(2) {
        if pair[0].paddr + pair[0].memsz > pair[1].paddr {
            return Err(ElfError::FirmwareOverlap {
                first: pair[0].index,
                second: pair[1].index,
            });
        }
    }
    let placed = |seg: &LoadSegment| {
        // Both bounds were checked against the file in `load_segments`.
        let start = seg.offset as usize;
        FirmwareSegment {
            gpa: seg.paddr,
            mem_size: seg.memsz,
            file_bytes: &bytes[start..start + seg.filesz as usize],
        }
    };
    Ok(FirmwareImage {
        entry,
        segments: loads.iter().map(placed).collect(),
        tdx_reset: tdx_reset.as_ref().map(placed),
    })
}

/// The TDX reset page segment: identity-linked, one page at most, R+X only, with the
/// reset vector in its file bytes.
fn check_tdx_reset_segment(seg: &LoadSegment) -> Result<(), ElfError> {
    let bad = |reason| {
        Err(ElfError::BadTdxResetPage {
            index: seg.index,
            reason,
        })
    };
    if seg.vaddr != seg.paddr {
        return bad(
            "its virtual address is not its physical address (it runs before paging is on)",
        );
    }
    if seg.memsz > PAGE_SIZE_4K {
        return bad("it is larger than one 4 KiB page");
    }
    let rx = elf::PF_R.0 | elf::PF_X.0;
    if seg.flags & (rx | elf::PF_W.0) != rx {
        return bad("it is not readable and executable without being writable (flags R+X)");
    }
    if !seg.has_file_byte_at(TDX_RESET_VECTOR) {
        return bad("its file bytes do not hold the reset vector at 0xFFFFFFF0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testelf::{self, ElfSpec, Segment};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    #[test]
    fn accepts_static_exec() {
        let info = check_app_elf(&testelf::static_app()).unwrap();
        assert_eq!(info.entry, testelf::APP_ENTRY);
        assert!(!info.pie);
        // Text page + data/bss pages (see `testelf::static_app`).
        assert_eq!(info.size, 3 * PAGE_SIZE_4K);
    }

    #[test]
    fn accepts_static_pie() {
        let mut spec = testelf::static_app_spec();
        spec.e_type = elf::ET_DYN.0;
        for seg in &mut spec.segments {
            if seg.p_type == elf::PT_LOAD.0 {
                seg.vaddr -= 0x40_0000;
                seg.paddr -= 0x40_0000;
            }
        }
        spec.entry -= 0x40_0000;
        let info = check_app_elf(&spec.build()).unwrap();
        assert!(info.pie);
        assert_eq!(info.entry, testelf::APP_ENTRY - 0x40_0000);
    }

    #[test]
    fn rejects_non_elf() {
        assert_eq!(check_app_elf(b""), Err(ElfError::NotElf));
        assert_eq!(check_app_elf(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(check_app_elf(&[0u8; 256]), Err(ElfError::NotElf));
        let msg = ElfError::NotElf.to_string();
        assert!(msg.contains("not an ELF"), "{msg}");
    }

    #[test]
    fn rejects_truncated() {
        let app = testelf::static_app();
        for len in [2, 4, 10, 16, 40, 63, 64, 100, 64 + 56 * 2] {
            let err = check_app_elf(&app[..len]).unwrap_err();
            assert!(
                matches!(err, ElfError::Truncated { .. }),
                "length {len}: {err:?}"
            );
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        // Cut inside the segment data: headers intact, file range beyond the end.
        let err = check_app_elf(&app[..app.len() - 1]).unwrap_err();
        assert!(matches!(err, ElfError::SegmentTruncated { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn rejects_32_bit() {
        let mut app = testelf::static_app();
        app[4] = elf::ELFCLASS32.0;
        assert_eq!(check_app_elf(&app), Err(ElfError::Not64Bit { class: 1 }));
        assert!(check_app_elf(&app)
            .unwrap_err()
            .to_string()
            .contains("64-bit"));
    }

    #[test]
    fn rejects_big_endian() {
        let mut app = testelf::static_app();
        app[5] = elf::ELFDATA2MSB.0;
        assert_eq!(
            check_app_elf(&app),
            Err(ElfError::NotLittleEndian { data: 2 })
        );
    }

    #[test]
    fn rejects_aarch64() {
        let mut spec = testelf::static_app_spec();
        spec.machine = elf::EM_AARCH64.0;
        let err = check_app_elf(&spec.build()).unwrap_err();
        assert_eq!(err, ElfError::WrongMachine { machine: 183 });
        assert!(err.to_string().contains("AArch64"), "{err}");
        assert!(err.to_string().contains("x86-64"), "{err}");
    }

    #[test]
    fn rejects_relocatable_and_core() {
        for (e_type, word) in [
            (elf::ET_REL.0, "relocatable"),
            (elf::ET_CORE.0, "core dump"),
        ] {
            let spec = ElfSpec {
                e_type,
                segments: Vec::new(),
                ..testelf::static_app_spec()
            };
            let err = check_app_elf(&spec.build()).unwrap_err();
            assert_eq!(err, ElfError::NotExecutable { e_type });
            assert!(err.to_string().contains(word), "{err}");
        }
    }

    #[test]
    fn rejects_interp() {
        let mut spec = testelf::static_app_spec();
        spec.segments.insert(
            0,
            Segment {
                p_type: elf::PT_INTERP.0,
                flags: elf::PF_R.0,
                vaddr: 0x40_0f00,
                paddr: 0x40_0f00,
                data: b"/lib64/ld-linux-x86-64.so.2\0".to_vec(),
                memsz: 28,
            },
        );
        let err = check_app_elf(&spec.build()).unwrap_err();
        assert_eq!(
            err,
            ElfError::DynamicallyLinked {
                interp: "/lib64/ld-linux-x86-64.so.2".into()
            }
        );
        assert!(err.to_string().contains("-static"), "{err}");

        // A hostile path is shown escaped (no terminal sequence gets through) and short.
        let mut path = b"\x1b]0;title\x07\x1b[2J".to_vec();
        path.extend(vec![b'A'; 100_000]);
        spec.segments[0].memsz = path.len() as u64;
        spec.segments[0].data = path;
        let err = check_app_elf(&spec.build()).unwrap_err().to_string();
        assert!(!err.contains('\x1b'), "{err:?}");
        assert!(err.contains("\\u{1b}]0;title\\u{7}\\u{1b}[2J"), "{err:?}");
        assert!(err.len() < 600, "{} bytes", err.len());
    }

    #[test]
    fn rejects_no_load() {
        let spec = ElfSpec {
            segments: vec![Segment {
                p_type: elf::PT_NOTE.0,
                flags: elf::PF_R.0,
                vaddr: 0,
                paddr: 0,
                data: vec![0; 16],
                memsz: 16,
            }],
            ..testelf::static_app_spec()
        };
        assert_eq!(check_app_elf(&spec.build()), Err(ElfError::NoLoadSegment));
        let spec = ElfSpec {
            segments: Vec::new(),
            ..testelf::static_app_spec()
        };
        assert_eq!(check_app_elf(&spec.build()), Err(ElfError::NoLoadSegment));
    }

    #[test]
    fn rejects_entry_outside_text() {
        let mut spec = testelf::static_app_spec();
        spec.entry = 0x10;
        assert_eq!(
            check_app_elf(&spec.build()),
            Err(ElfError::EntryOutsideSegments { entry: 0x10 })
        );
    }

    #[test]
    fn rejects_kernel_half_app() {
        let mut spec = testelf::static_app_spec();
        spec.segments[0].vaddr = KERNEL_VA_BASE;
        let err = check_app_elf(&spec.build()).unwrap_err();
        assert!(
            matches!(err, ElfError::BadSegment { index: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn firmware_segments() {
        let bytes = testelf::firmware();
        let fw = check_firmware_elf(&bytes).unwrap();
        assert_eq!(fw.entry, testelf::FIRMWARE_ENTRY);
        assert_eq!(fw.segments.len(), 2);
        assert_eq!(fw.segments[0].gpa, FIRMWARE_GPA);
        assert_eq!(fw.end(), testelf::FIRMWARE_END);
    }

    #[test]
    fn firmware_placement_is_checked() {
        let mut low = testelf::firmware_spec();
        low.segments[0].paddr = FIRMWARE_GPA - PAGE_SIZE_4K;
        low.segments[0].vaddr = KERNEL_VA_BASE + low.segments[0].paddr;
        assert!(matches!(
            check_firmware_elf(&low.build()),
            Err(ElfError::FirmwareOutsideRegion { index: 0, .. })
        ));

        let mut high = testelf::firmware_spec();
        high.segments[1].memsz = FIRMWARE_GPA_END;
        assert!(matches!(
            check_firmware_elf(&high.build()),
            Err(ElfError::FirmwareOutsideRegion { index: 1, .. })
        ));

        let mut va = testelf::firmware_spec();
        va.segments[1].vaddr = va.segments[1].paddr;
        assert!(matches!(
            check_firmware_elf(&va.build()),
            Err(ElfError::FirmwareVirtualAddress { index: 1, .. })
        ));

        let mut overlap = testelf::firmware_spec();
        overlap.segments[1].paddr = FIRMWARE_GPA + 8;
        overlap.segments[1].vaddr = KERNEL_VA_BASE + FIRMWARE_GPA + 8;
        assert_eq!(
            check_firmware_elf(&overlap.build()),
            Err(ElfError::FirmwareOverlap {
                first: 0,
                second: 1
            })
        );

        let mut entry = testelf::firmware_spec();
        entry.entry = KERNEL_VA_BASE + testelf::FIRMWARE_END;
        assert!(matches!(
            check_firmware_elf(&entry.build()),
            Err(ElfError::EntryOutsideSegments { .. })
        ));

        // In the zero-filled tail of the text segment: no code there.
        let mut bss_entry = testelf::firmware_spec();
        bss_entry.segments[0].memsz += 50;
        bss_entry.entry = KERNEL_VA_BASE + FIRMWARE_GPA + testelf::FIRMWARE_TEXT_LEN + 10;
        assert!(matches!(
            check_firmware_elf(&bss_entry.build()),
            Err(ElfError::EntryOutsideSegments { .. })
        ));

        let mut pie = testelf::firmware_spec();
        pie.e_type = elf::ET_DYN.0;
        assert!(matches!(
            check_firmware_elf(&pie.build()),
            Err(ElfError::FirmwareNotFixed { .. })
        ));
    }

    #[test]
    fn firmware_with_a_tdx_reset_page() {
        let bytes = testelf::tdx_firmware();
        let fw = check_firmware_elf(&bytes).unwrap();
        assert_eq!(fw.entry, testelf::FIRMWARE_ENTRY);
        assert_eq!(fw.segments.len(), 2);
        // The reset page does not move the end of the firmware.
        assert_eq!(fw.end(), testelf::FIRMWARE_END);
        let reset = fw.tdx_reset.unwrap();
        assert_eq!(reset.gpa, TDX_RESET_PAGE_GPA);
        assert_eq!(reset.mem_size, PAGE_SIZE_4K);
        assert_eq!(
            reset.file_bytes,
            &testelf::pattern(4096, testelf::TDX_RESET_SEED)[..]
        );
        assert_eq!(
            check_firmware_elf(&testelf::firmware()).unwrap().tdx_reset,
            None
        );

        // First in the program header table works as well as last.
        let mut first = testelf::tdx_firmware_spec();
        first.segments.rotate_right(1);
        let first = first.build();
        let fw = check_firmware_elf(&first).unwrap();
        assert_eq!(fw.tdx_reset.unwrap().gpa, TDX_RESET_PAGE_GPA);
        assert_eq!(fw.segments.len(), 2);

        // A short segment that still holds the reset vector.
        let mut short = testelf::tdx_firmware_spec();
        short.segments[2].data.truncate(0xFF1);
        let short = short.build();
        let fw = check_firmware_elf(&short).unwrap();
        assert_eq!(fw.tdx_reset.unwrap().file_bytes.len(), 0xFF1);
    }

    #[test]
    fn tdx_reset_page_shape_is_checked() {
        let bad = |edit: fn(&mut Segment)| {
            let mut spec = testelf::tdx_firmware_spec();
            edit(&mut spec.segments[2]);
            check_firmware_elf(&spec.build()).unwrap_err()
        };
        for (edit, word) in [
            (
                (|s: &mut Segment| s.vaddr = KERNEL_VA_BASE.wrapping_add(s.paddr))
                    as fn(&mut Segment),
                "virtual",
            ),
            (|s| s.memsz = 2 * PAGE_SIZE_4K, "larger"),
            (|s| s.flags |= elf::PF_W.0, "R+X"),
            (|s| s.flags = elf::PF_R.0, "R+X"),
            (|s| s.flags = elf::PF_X.0, "R+X"),
            (|s| s.data.truncate(0xFF0), "reset vector"),
        ] {
            let err = bad(edit);
            assert!(
                matches!(err, ElfError::BadTdxResetPage { index: 2, .. }),
                "{word}: {err:?}"
            );
            assert!(err.to_string().contains(word), "{err}");
            assert!(err.to_string().contains("0xfffff000"), "{err}");
        }

        let mut two = testelf::tdx_firmware_spec();
        two.segments.push(testelf::tdx_reset_segment(1));
        assert_eq!(
            check_firmware_elf(&two.build()),
            Err(ElfError::DuplicateTdxResetPage {
                first: 2,
                second: 3
            })
        );

        // Elsewhere below 4 GiB is still outside the firmware region.
        let mut elsewhere = testelf::tdx_firmware_spec();
        elsewhere.segments[2].paddr -= PAGE_SIZE_4K;
        elsewhere.segments[2].vaddr -= PAGE_SIZE_4K;
        let err = check_firmware_elf(&elsewhere.build()).unwrap_err();
        assert!(
            matches!(err, ElfError::FirmwareOutsideRegion { index: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("TDX reset page"), "{err}");

        // The 64-bit entry point must not be in the reset page.
        let mut entry = testelf::tdx_firmware_spec();
        entry.entry = TDX_RESET_VECTOR;
        assert_eq!(
            check_firmware_elf(&entry.build()),
            Err(ElfError::EntryOutsideSegments {
                entry: TDX_RESET_VECTOR
            })
        );
    }

    /// A scratch directory removed on drop.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("nacre-loader-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Compile `int main(){return 3;}` with gcc and `flags`. gcc with a static libc
    /// is a build requirement of the workspace (the demo app is built with it), so its
    /// absence fails the test.
    fn compile_with_gcc(dir: &Path, flags: &[&str]) -> Vec<u8> {
        let src = dir.join("main.c");
        let out = dir.join("main");
        std::fs::write(&src, "int main(){return 3;}\n").unwrap();
        let result = Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output();
        let why = match result {
            Ok(output) if output.status.success() => return std::fs::read(&out).unwrap(),
            Ok(output) => format!(
                "gcc {flags:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => format!("gcc cannot be run: {e}"),
        };
        panic!("{why}");
    }

    #[test]
    fn gcc_static_binary_is_accepted() {
        let dir = ScratchDir::new("gcc-static");
        let bytes = compile_with_gcc(&dir.0, &["-static", "-O1"]);
        let info = check_app_elf(&bytes).unwrap();
        assert!(!info.pie);
        assert!(info.size > 0);
    }

    #[test]
    fn gcc_static_pie_binary_is_accepted() {
        let dir = ScratchDir::new("gcc-static-pie");
        let bytes = compile_with_gcc(&dir.0, &["-static-pie", "-O1"]);
        let info = check_app_elf(&bytes).unwrap();
        assert!(info.pie);
    }

    #[test]
    fn gcc_dynamic_binary_is_rejected() {
        let dir = ScratchDir::new("gcc-dynamic");
        let bytes = compile_with_gcc(&dir.0, &["-O1"]);
        let err = check_app_elf(&bytes).unwrap_err();
        assert!(matches!(err, ElfError::DynamicallyLinked { .. }), "{err:?}");
        assert!(err.to_string().contains("-static"), "{err}");
    }
}
