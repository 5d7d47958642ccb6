//! The loader-to-firmware boot handoff and the host parameter page.
//!
//! [`BootInfo`] is written by `nacre package` into the measured image at
//! [`crate::layout::BOOT_INFO_GPA`]: it is part of the launch measurement, so the
//! firmware trusts it. The host parameter page at [`crate::layout::HOST_PARAM_GPA`]
//! is an IGVM parameter area the host fills with the memory map at launch; it is not
//! measured, so the firmware copies it into private memory and checks every entry
//! (DESIGN.md trust assumption 1).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `BootInfo::magic`.
pub const BOOT_INFO_MAGIC: [u8; 8] = *b"NACREBT1";
/// `BootInfo::version` this firmware understands.
pub const BOOT_INFO_VERSION: u32 = 1;

/// The confidential-computing platform an image (or one platform's view of it) is for.
/// Recorded in the measured [`BootInfo`], never taken from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PlatformKind {
    /// AMD SEV-SNP (on hardware or the `emulated-snp` platform).
    Snp = 1,
    /// Intel TDX (on hardware or the `emulated-tdx` platform).
    Tdx = 2,
}

impl TryFrom<u32> for PlatformKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Snp),
            2 => Ok(Self::Tdx),
            other => Err(other),
        }
    }
}

/// The measured boot handoff (one 4 KiB page; the struct is its head, the rest is zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: [u8; 8],
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// [`PlatformKind`] as `u32`.
    pub platform: u32,
    /// Encryption-bit position the loader's initial page tables use.
    pub c_bit: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// First GPA after the firmware image including its zero-filled (bss) pages.
    pub firmware_end: u64,
    /// GPA of the app ELF file bytes.
    pub app_gpa: u64,
    /// Length in bytes of the app ELF file.
    pub app_size: u64,
    /// GPA of the argument blob ([`ArgsBlob`]).
    pub args_gpa: u64,
    /// Length in bytes of the argument blob.
    pub args_size: u64,
    /// First GPA after every page the loader placed (4 KiB aligned).
    pub image_end: u64,
    /// Smallest guest RAM size this image boots with.
    pub min_memory: u64,
    /// SHA-256 over the image's measured content other than this page: every measured
    /// page's GPA and bytes in directive order, then the BSP's VMSA (see the loader,
    /// `nacre-loader`'s `image` module). The loader checks it; [`BootInfo::check`]
    /// does not look at it.
    pub image_digest: [u8; 32],
    /// Reserved, zero.
    pub reserved: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 128);
const _: () = assert!(core::mem::offset_of!(BootInfo, platform) == 0x0C);
const _: () = assert!(core::mem::offset_of!(BootInfo, firmware_end) == 0x18);
const _: () = assert!(core::mem::offset_of!(BootInfo, app_gpa) == 0x20);
const _: () = assert!(core::mem::offset_of!(BootInfo, image_end) == 0x40);
const _: () = assert!(core::mem::offset_of!(BootInfo, min_memory) == 0x48);
const _: () = assert!(core::mem::offset_of!(BootInfo, image_digest) == 0x50);
const _: () = assert!(core::mem::offset_of!(BootInfo, reserved) == 0x70);

/// Why a [`BootInfo`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// Wrong magic.
    BadMagic,
    /// Unsupported version.
    BadVersion(u32),
    /// Unknown platform kind.
    BadPlatform(u32),
    /// A region is empty, unaligned, overlapping or outside the image.
    BadRegion,
}

impl BootInfo {
    /// Check the self-consistency of a boot handoff.
    pub fn check(&self) -> Result<PlatformKind, BootInfoError> {
        if self.magic != BOOT_INFO_MAGIC {
            return Err(BootInfoError::BadMagic);
        }
        if self.version != BOOT_INFO_VERSION {
            return Err(BootInfoError::BadVersion(self.version));
        }
        let platform = PlatformKind::try_from(self.platform).map_err(BootInfoError::BadPlatform)?;
        let end = |gpa: u64, size: u64| gpa.checked_add(size).ok_or(BootInfoError::BadRegion);
        let app_end = end(self.app_gpa, self.app_size)?;
        let args_end = end(self.args_gpa, self.args_size)?;
        let ok = self.app_size > 0
            && self.app_gpa >= self.firmware_end
            && self.args_gpa >= app_end
            && args_end <= self.image_end
            && self.image_end.is_multiple_of(crate::layout::PAGE_SIZE_4K)
            && self.image_end <= self.min_memory;
        if !ok {
            return Err(BootInfoError::BadRegion);
        }
        Ok(platform)
    }
}

/// One entry of the host's memory map, in the IGVM format
/// (`IGVM_VHS_MEMORY_MAP_ENTRY`, igvm_defs 0.5 `lib.rs`): 24 bytes. The map is an
/// array of these in the parameter page, ended by an entry with `number_of_pages == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemoryMapEntry {
    /// First 4 KiB page number of the range.
    pub starting_gpa_page_number: u64,
    /// Number of 4 KiB pages.
    pub number_of_pages: u64,
    /// [`MEMORY_MAP_TYPE_MEMORY`] or another IGVM type.
    pub entry_type: u16,
    /// Flags, zero.
    pub flags: u16,
    /// Reserved, zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<MemoryMapEntry>() == 24);
const _: () = assert!(core::mem::offset_of!(MemoryMapEntry, entry_type) == 16);

/// IGVM `MemoryMapEntryType::MEMORY` (igvm_defs 0.5).
pub const MEMORY_MAP_TYPE_MEMORY: u16 = 0;

/// Why the host's memory map was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMapError {
    /// No RAM entry, or the map does not end within the page.
    Empty,
    /// The first entry does not start at GPA 0 or entries overlap or are out of order.
    Disordered,
    /// RAM is smaller than the image needs, or not 2 MiB aligned, or too large.
    BadSize(u64),
    /// An entry has an unknown type or non-zero flags.
    BadEntry,
}

/// Parse the host's memory map from a private copy of the parameter page. nacre's
/// hosts give exactly one RAM range starting at GPA 0; anything else is refused.
/// Returns the RAM size in bytes.
pub fn parse_memory_map(page: &[u8], min_memory: u64) -> Result<u64, MemoryMapError> {
    let mut ram: Option<u64> = None;
    for chunk in page.chunks_exact(core::mem::size_of::<MemoryMapEntry>()) {
        let e = MemoryMapEntry::read_from_bytes(chunk).map_err(|_| MemoryMapError::Empty)?;
        if e.number_of_pages == 0 {
            return match ram {
                Some(bytes) => Ok(bytes),
                None => Err(MemoryMapError::Empty),
            };
        }
        if e.entry_type != MEMORY_MAP_TYPE_MEMORY || e.flags != 0 || e.reserved != 0 {
            return Err(MemoryMapError::BadEntry);
        }
        if ram.is_some() || e.starting_gpa_page_number != 0 {
            return Err(MemoryMapError::Disordered);
        }
        let bytes = e
            .number_of_pages
            .checked_mul(crate::layout::PAGE_SIZE_4K)
            .ok_or(MemoryMapError::BadSize(u64::MAX))?;
        if bytes < min_memory.max(crate::layout::MIN_GUEST_MEMORY)
            || bytes > crate::layout::MAX_GUEST_MEMORY
            || !bytes.is_multiple_of(crate::layout::GUEST_MEMORY_ALIGN)
        {
            return Err(MemoryMapError::BadSize(bytes));
        }
        ram = Some(bytes);
    }
    Err(MemoryMapError::Empty)
}

/// The argument blob: `u32 argc, u32 envc`, then `argc` NUL-terminated argument
/// strings and `envc` NUL-terminated `KEY=VALUE` strings, back to back.
#[derive(Debug, Clone, Copy)]
pub struct ArgsBlob<'a> {
    argc: u32,
    envc: u32,
    strings: &'a [u8],
}

/// Why an argument blob was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgsBlobError {
    /// Shorter than its header or its strings.
    Truncated,
    /// Bytes follow the last string.
    TrailingBytes,
    /// argc is zero (a program always has argv\[0\]).
    NoProgramName,
}

impl<'a> ArgsBlob<'a> {
    /// Parse and fully check a blob.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ArgsBlobError> {
        if bytes.len() < 8 {
            return Err(ArgsBlobError::Truncated);
        }
        let argc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let envc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if argc == 0 {
            return Err(ArgsBlobError::NoProgramName);
        }
        let strings = &bytes[8..];
        let total = u64::from(argc) + u64::from(envc);
        let mut seen = 0u64;
        let mut consumed = 0usize;
        while seen < total {
            let rest = &strings[consumed..];
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(ArgsBlobError::Truncated)?;
            consumed += nul + 1;
            seen += 1;
        }
        if consumed != strings.len() {
            return Err(ArgsBlobError::TrailingBytes);
        }
        Ok(Self {
            argc,
            envc,
            strings,
        })
    }

    /// Number of arguments (including argv\[0\]).
    pub fn argc(&self) -> u32 {
        self.argc
    }

    /// Number of environment strings.
    pub fn envc(&self) -> u32 {
        self.envc
    }

    /// All strings (arguments then environment), each without its NUL.
    pub fn strings(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let strings = self.strings;
        strings
            .split(|&b| b == 0)
            .take(self.argc as usize + self.envc as usize)
    }

    /// Encoded length of a blob with these strings.
    pub fn encoded_len<'s>(strings: impl IntoIterator<Item = &'s [u8]>) -> usize {
        8 + strings.into_iter().map(|s| s.len() + 1).sum::<usize>()
    }

    /// Encode `args` and `env` into `out`, which must be exactly
    /// [`ArgsBlob::encoded_len`] bytes. Strings must not contain NUL.
    pub fn encode(args: &[&[u8]], env: &[&[u8]], out: &mut [u8]) -> Result<(), ArgsBlobError> {
        let argc = u32::try_from(args.len()).map_err(|_| ArgsBlobError::Truncated)?;
        let envc = u32::try_from(env.len()).map_err(|_| ArgsBlobError::Truncated)?;
        if argc == 0 {
            return Err(ArgsBlobError::NoProgramName);
        }
        if out.len() != Self::encoded_len(args.iter().chain(env.iter()).copied()) {
            return Err(ArgsBlobError::Truncated);
        }
        out[0..4].copy_from_slice(&argc.to_le_bytes());
        out[4..8].copy_from_slice(&envc.to_le_bytes());
        let mut at = 8;
        for s in args.iter().chain(env.iter()) {
            if s.contains(&0) {
                return Err(ArgsBlobError::TrailingBytes);
            }
            out[at..at + s.len()].copy_from_slice(s);
            out[at + s.len()] = 0;
            at += s.len() + 1;
        }
        Ok(())
    }
}
