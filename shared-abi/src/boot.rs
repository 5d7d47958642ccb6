//! The loader-to-firmware boot handoff and the host parameter page.
//!
//! [`BootInfo`] is written by `nacre package` into the measured image at
//! [`crate::layout::BOOT_INFO_GPA`]: it is part of the launch measurement, so the
//! firmware trusts it. The host parameter page at [`crate::layout::HOST_PARAM_GPA`]
//! is an IGVM parameter area the host fills with the memory map at launch; it is not
//! measured, so the firmware copies it into private memory and checks every entry
//! (docs/threat-model.md assumption 1).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `BootInfo::magic`.
pub const BOOT_INFO_MAGIC: [u8; 8] = *b"NACREBT1";
/// `BootInfo::version` this firmware understands. Version 3: both platforms start with
/// paging off, `c_bit` is always 0, the SEV-SNP image has a CPUID page.
pub const BOOT_INFO_VERSION: u32 = 3;

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

impl PlatformKind {
    /// Every kind, SEV-SNP first.
    pub const ALL: [Self; 2] = [Self::Snp, Self::Tdx];

    /// Short name: `snp` or `tdx`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Snp => "snp",
            Self::Tdx => "tdx",
        }
    }

    /// The attestation field that carries the launch measurement: `measurement` (the
    /// SEV-SNP report's MEASUREMENT) or `mrtd` (the TDX MRTD).
    pub const fn measurement_field(self) -> &'static str {
        match self {
            Self::Snp => "measurement",
            Self::Tdx => "mrtd",
        }
    }
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
    /// Encryption-bit position the loader's initial page tables use: always 0, for no
    /// page of an image depends on the host's C-bit (on SEV-SNP the firmware reads it
    /// from the CPUID page at boot). The loader refuses any other value.
    pub c_bit: u32,
    /// Boot options chosen at packaging time ([`BOOT_FLAG_VALIDATE_4K`]); measured
    /// like the rest of this page. Unknown bits are refused.
    pub flags: u32,
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
    /// SHA-256 over this platform's measured content other than this page: every
    /// measured page's GPA and bytes in directive order, then (SEV-SNP only) the BSP's
    /// VMSA (see the loader, `nacre-loader`'s `image` module). The loader checks it; [`BootInfo::check`]
    /// does not look at it.
    pub image_digest: [u8; 32],
    /// GPA of the read-only file tree ([`crate::filetree`]): 4 KiB aligned, after the
    /// argument blob.
    pub fs_gpa: u64,
    /// Length in bytes of the file tree (at least its 64-byte header).
    pub fs_size: u64,
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 128);
const _: () = assert!(core::mem::offset_of!(BootInfo, platform) == 0x0C);
const _: () = assert!(core::mem::offset_of!(BootInfo, firmware_end) == 0x18);
const _: () = assert!(core::mem::offset_of!(BootInfo, app_gpa) == 0x20);
const _: () = assert!(core::mem::offset_of!(BootInfo, image_end) == 0x40);
const _: () = assert!(core::mem::offset_of!(BootInfo, min_memory) == 0x48);
const _: () = assert!(core::mem::offset_of!(BootInfo, image_digest) == 0x50);
const _: () = assert!(core::mem::offset_of!(BootInfo, fs_gpa) == 0x70);
const _: () = assert!(core::mem::offset_of!(BootInfo, fs_size) == 0x78);

/// [`BootInfo::flags`]: validate guest memory one 4 KiB page at a time instead of
/// 2 MiB at a time (slower; exercises the host's PSMASH path the way guests that work
/// page by page do).
pub const BOOT_FLAG_VALIDATE_4K: u32 = 1 << 0;
/// Every flag this version defines.
pub const BOOT_FLAGS_KNOWN: u32 = BOOT_FLAG_VALIDATE_4K;

/// Why a [`BootInfo`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// Wrong magic.
    BadMagic,
    /// Unsupported version.
    BadVersion(u32),
    /// Unknown platform kind.
    BadPlatform(u32),
    /// Flags this version does not define.
    UnknownFlags(u32),
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
        if self.flags & !BOOT_FLAGS_KNOWN != 0 {
            return Err(BootInfoError::UnknownFlags(self.flags));
        }
        let platform = PlatformKind::try_from(self.platform).map_err(BootInfoError::BadPlatform)?;
        let end = |gpa: u64, size: u64| gpa.checked_add(size).ok_or(BootInfoError::BadRegion);
        let app_end = end(self.app_gpa, self.app_size)?;
        let args_end = end(self.args_gpa, self.args_size)?;
        let fs_end = end(self.fs_gpa, self.fs_size)?;
        let ok = self.app_size > 0
            && self.app_gpa >= self.firmware_end
            && self.args_gpa >= app_end
            && self.fs_gpa >= args_end
            && self.fs_gpa.is_multiple_of(crate::layout::PAGE_SIZE_4K)
            && self.fs_size >= crate::filetree::HEADER_SIZE
            && fs_end <= self.image_end
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

/// Parse the host's memory map from a private copy of the parameter page (the bytes
/// before [`HOST_REQUEST_OFFSET`]). nacre's hosts give exactly one RAM range starting
/// at GPA 0; anything else is refused.
/// Returns the RAM size in bytes.
pub fn parse_memory_map(page: &[u8], min_memory: u64) -> Result<u64, MemoryMapError> {
    let mut ram: Option<u64> = None;
    let map = &page[..page.len().min(HOST_REQUEST_OFFSET)];
    for chunk in map.chunks_exact(core::mem::size_of::<MemoryMapEntry>()) {
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

/// Offset in the parameter page of the host's [`HostRequest`]. The memory map must end
/// before it (it has room for 159 entries and a terminator).
pub const HOST_REQUEST_OFFSET: usize = 0xF00;
/// [`HostRequest::magic`].
pub const HOST_REQUEST_MAGIC: [u8; 8] = *b"NACREHR1";
/// [`HostRequest::flags`]: produce attestation evidence with
/// [`HostRequest::report_data`] before the app starts, send it to the host
/// (hostcall `Evidence`) and stop (`nacre attest`).
pub const HOST_REQUEST_ATTEST: u32 = 1 << 0;
/// Every flag a firmware of this version understands.
pub const HOST_REQUEST_FLAGS_KNOWN: u32 = HOST_REQUEST_ATTEST;

/// What the host asks of this boot, in the (unmeasured) parameter page at
/// [`HOST_REQUEST_OFFSET`]; all zero when it asks nothing. Untrusted like the rest
/// of the page: it can only ask for evidence, which binds whatever report data the
/// host chose to the measured launch; it changes nothing the app sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HostRequest {
    /// [`HOST_REQUEST_MAGIC`], or zero for no request.
    pub magic: [u8; 8],
    /// `HOST_REQUEST_*` flags.
    pub flags: u32,
    /// Zero.
    pub reserved0: u32,
    /// With [`HOST_REQUEST_ATTEST`]: the 64 bytes of REPORT_DATA for the evidence.
    pub report_data: [u8; 64],
    /// Zero.
    pub reserved: [u8; 48],
}

const _: () = assert!(core::mem::size_of::<HostRequest>() == 128);
const _: () = assert!(HOST_REQUEST_OFFSET + core::mem::size_of::<HostRequest>() <= 4096);

/// Why the host's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRequestError {
    /// The magic is neither zero nor [`HOST_REQUEST_MAGIC`].
    BadMagic,
    /// A flag this firmware does not know, or a reserved byte, is set.
    Unknown,
}

impl HostRequest {
    /// The request of a parameter page (a private copy of all 4096 bytes): `None`
    /// when the host asks nothing.
    pub fn parse(page: &[u8]) -> Result<Option<Self>, HostRequestError> {
        let bytes = page
            .get(HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + core::mem::size_of::<Self>())
            .ok_or(HostRequestError::BadMagic)?;
        let r = Self::read_from_bytes(bytes).map_err(|_| HostRequestError::BadMagic)?;
        if r.magic == [0; 8] {
            return if r.as_bytes().iter().all(|&b| b == 0) {
                Ok(None)
            } else {
                Err(HostRequestError::BadMagic)
            };
        }
        if r.magic != HOST_REQUEST_MAGIC {
            return Err(HostRequestError::BadMagic);
        }
        if r.flags & !HOST_REQUEST_FLAGS_KNOWN != 0
            || r.reserved0 != 0
            || r.reserved.iter().any(|&b| b != 0)
        {
            return Err(HostRequestError::Unknown);
        }
        Ok(Some(r))
    }

    /// An attestation request for `report_data`.
    pub fn attest(report_data: [u8; 64]) -> Self {
        Self {
            magic: HOST_REQUEST_MAGIC,
            flags: HOST_REQUEST_ATTEST,
            reserved0: 0,
            report_data,
            reserved: [0; 48],
        }
    }
}

/// Offset in the parameter page of the number of vCPUs the host made (a little-endian
/// `u32`; 0, as a host that does not say leaves it, means one). After the
/// [`HostRequest`].
pub const HOST_CPUS_OFFSET: usize = HOST_REQUEST_OFFSET + core::mem::size_of::<HostRequest>();
/// Most vCPUs a guest of this firmware runs on (`nacre run --cpus`).
pub const MAX_CPUS: u32 = 16;

/// Why the host's vCPU count was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCpusError {
    /// More than [`MAX_CPUS`].
    TooMany(u32),
}

/// The vCPU count of a parameter page (a private copy of it). Host input: the
/// firmware waits for this many vCPUs to check in and stops when one never does,
/// so a count above what exists ends the run rather than corrupting it.
pub fn host_cpus(page: &[u8]) -> Result<u32, HostCpusError> {
    let n = page
        .get(HOST_CPUS_OFFSET..HOST_CPUS_OFFSET + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    match n {
        0 => Ok(1),
        n if n > MAX_CPUS => Err(HostCpusError::TooMany(n)),
        n => Ok(n),
    }
}

/// Write `cpus` into a parameter page.
pub fn set_host_cpus(page: &mut [u8; 4096], cpus: u32) {
    page[HOST_CPUS_OFFSET..HOST_CPUS_OFFSET + 4].copy_from_slice(&cpus.to_le_bytes());
}

const _: () = assert!(HOST_CPUS_OFFSET + 4 <= 4096);

/// The most strings an argument blob holds: the arguments (`argv[0]` included) and the
/// environment strings together. The firmware builds the app's initial stack with a
/// table of this many pointers (`guest-firmware/src/app/loader.rs`).
pub const MAX_ARG_STRINGS: usize = 256;

/// The most bytes the strings of an argument blob take, each with its NUL: what Linux
/// allows by default (a quarter of the 8 MiB stack limit, `ARG_MAX`), and what leaves the
/// app most of its 8 MiB stack, where the firmware copies them.
pub const MAX_ARG_BYTES: usize = 2 << 20;

/// The argument blob: `u32 argc, u32 envc`, then `argc` NUL-terminated argument
/// strings and `envc` NUL-terminated `KEY=VALUE` strings, back to back: at most
/// [`MAX_ARG_STRINGS`] strings of at most [`MAX_ARG_BYTES`] together.
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
    /// More than [`MAX_ARG_STRINGS`] strings.
    TooManyStrings,
    /// Strings of more than [`MAX_ARG_BYTES`] bytes.
    TooLarge,
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
        if total > MAX_ARG_STRINGS as u64 {
            return Err(ArgsBlobError::TooManyStrings);
        }
        if strings.len() > MAX_ARG_BYTES {
            return Err(ArgsBlobError::TooLarge);
        }
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
        if args.len() + env.len() > MAX_ARG_STRINGS {
            return Err(ArgsBlobError::TooManyStrings);
        }
        if out.len() != Self::encoded_len(args.iter().chain(env.iter()).copied()) {
            return Err(ArgsBlobError::Truncated);
        }
        if out.len() - 8 > MAX_ARG_BYTES {
            return Err(ArgsBlobError::TooLarge);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{GUEST_MEMORY_ALIGN, MAX_GUEST_MEMORY, MIN_GUEST_MEMORY, PAGE_SIZE_4K};
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    // ---- HostRequest ----

    #[test]
    fn host_requests_round_trip_and_anything_odd_is_refused() {
        let mut page = [0u8; 4096];
        assert_eq!(HostRequest::parse(&page), Ok(None));
        let req = HostRequest::attest([0x5A; 64]);
        page[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128].copy_from_slice(req.as_bytes());
        assert_eq!(HostRequest::parse(&page), Ok(Some(req)));
        // Every byte outside the report data matters.
        for at in (0..128).filter(|i| !(16..80).contains(i)) {
            let mut bad = page;
            bad[HOST_REQUEST_OFFSET + at] ^= 0x80;
            assert!(HostRequest::parse(&bad).is_err(), "byte {at} flipped");
        }
        // Without the magic, nothing else may be set.
        let mut stray = [0u8; 4096];
        stray[HOST_REQUEST_OFFSET + 20] = 1;
        assert_eq!(HostRequest::parse(&stray), Err(HostRequestError::BadMagic));
        assert_eq!(
            HostRequest::parse(&page[..100]),
            Err(HostRequestError::BadMagic)
        );
    }

    #[test]
    fn the_vcpu_count_defaults_to_one_and_is_bounded() {
        let mut page = [0u8; 4096];
        assert_eq!(host_cpus(&page), Ok(1));
        set_host_cpus(&mut page, 4);
        assert_eq!(host_cpus(&page), Ok(4));
        set_host_cpus(&mut page, MAX_CPUS + 1);
        assert_eq!(host_cpus(&page), Err(HostCpusError::TooMany(MAX_CPUS + 1)));
        // The count sits after the request: an attestation request leaves it alone.
        set_host_cpus(&mut page, 2);
        page[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128]
            .copy_from_slice(HostRequest::attest([0xFF; 64]).as_bytes());
        assert_eq!(host_cpus(&page), Ok(2));
        assert_eq!(
            HostRequest::parse(&page),
            Ok(Some(HostRequest::attest([0xFF; 64])))
        );
    }

    #[test]
    fn the_memory_map_stops_before_the_host_request() {
        let entry = MemoryMapEntry {
            starting_gpa_page_number: 0,
            number_of_pages: MIN_GUEST_MEMORY / PAGE_SIZE_4K,
            entry_type: MEMORY_MAP_TYPE_MEMORY,
            flags: 0,
            reserved: 0,
        };
        let mut page = [0u8; 4096];
        page[..24].copy_from_slice(entry.as_bytes());
        page[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128]
            .copy_from_slice(HostRequest::attest([1; 64]).as_bytes());
        assert_eq!(parse_memory_map(&page, 0), Ok(MIN_GUEST_MEMORY));
    }

    // ---- BootInfo ----

    /// A GPA offset: mostly a few pages forwards (sometimes unaligned), sometimes
    /// backwards, sometimes anything.
    fn delta() -> impl Strategy<Value = u64> {
        prop_oneof![
            12 => (0u64..16).prop_map(|p| p * PAGE_SIZE_4K),
            2 => 0u64..0x4000,
            1 => (1u64..3).prop_map(|p| (p * PAGE_SIZE_4K).wrapping_neg()),
            1 => any::<u64>(),
        ]
    }

    /// Boot handoffs laid out in order with perturbed gaps, so that both valid and
    /// barely invalid ones are common.
    fn boot_info() -> impl Strategy<Value = BootInfo> {
        let header = (
            prop_oneof![9 => Just(BOOT_INFO_MAGIC), 1 => any::<[u8; 8]>()],
            prop_oneof![9 => Just(BOOT_INFO_VERSION), 1 => any::<u32>()],
            prop_oneof![9 => 0u32..4, 1 => any::<u32>()],
            any::<u32>(),
        );
        let regions = (
            prop_oneof![Just(crate::layout::FIRMWARE_GPA_END), any::<u64>()],
            delta(),
            prop_oneof![1 => Just(0u64), 4 => delta()],
            delta(),
            prop_oneof![1 => Just(0u64), 4 => delta()],
            delta(),
            prop_oneof![1 => Just(0u64), 1 => Just(64u64), 4 => delta()],
            delta(),
            delta(),
        );
        let flags = prop_oneof![Just(0u32), Just(BOOT_FLAG_VALIDATE_4K), any::<u32>()];
        (header, regions, any::<[u8; 32]>(), flags).prop_map(
            |(
                (magic, version, platform, c_bit),
                (fw_end, d_app, app_size, d_args, args_size, d_fs, fs_size, d_img, d_mem),
                image_digest,
                flags,
            )| {
                let app_gpa = fw_end.wrapping_add(d_app);
                let args_gpa = app_gpa.wrapping_add(app_size).wrapping_add(d_args);
                let args_end = args_gpa.wrapping_add(args_size);
                let page_up = |x: u64| x.wrapping_add(PAGE_SIZE_4K - 1) & !(PAGE_SIZE_4K - 1);
                let fs_gpa = page_up(args_end).wrapping_add(d_fs);
                let image_end = page_up(fs_gpa.wrapping_add(fs_size)).wrapping_add(d_img);
                BootInfo {
                    magic,
                    version,
                    platform,
                    c_bit,
                    flags,
                    firmware_end: fw_end,
                    app_gpa,
                    app_size,
                    args_gpa,
                    args_size,
                    image_end,
                    min_memory: image_end.wrapping_add(d_mem),
                    image_digest,
                    fs_gpa,
                    fs_size,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn boot_info_check_matches_its_rules(b in boot_info()) {
            let wide = u128::from;
            let regions_ok = b.app_size > 0
                && b.app_gpa >= b.firmware_end
                && wide(b.app_gpa) + wide(b.app_size) <= wide(b.args_gpa)
                && wide(b.args_gpa) + wide(b.args_size) <= wide(b.fs_gpa)
                && b.fs_gpa % PAGE_SIZE_4K == 0
                && b.fs_size >= 64
                && wide(b.fs_gpa) + wide(b.fs_size) <= wide(b.image_end)
                && b.image_end % PAGE_SIZE_4K == 0
                && b.image_end <= b.min_memory;
            let expected = if b.magic != BOOT_INFO_MAGIC {
                Err(BootInfoError::BadMagic)
            } else if b.version != BOOT_INFO_VERSION {
                Err(BootInfoError::BadVersion(b.version))
            } else if b.flags & !BOOT_FLAGS_KNOWN != 0 {
                Err(BootInfoError::UnknownFlags(b.flags))
            } else if b.platform == 1 {
                if regions_ok { Ok(PlatformKind::Snp) } else { Err(BootInfoError::BadRegion) }
            } else if b.platform == 2 {
                if regions_ok { Ok(PlatformKind::Tdx) } else { Err(BootInfoError::BadRegion) }
            } else {
                Err(BootInfoError::BadPlatform(b.platform))
            };
            prop_assert_eq!(b.check(), expected);
        }

        #[test]
        fn boot_info_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 128)) {
            let Ok(b) = BootInfo::read_from_bytes(&bytes) else {
                return Err(TestCaseError::fail("128 bytes must read as a BootInfo"));
            };
            prop_assert_eq!(b.as_bytes(), &bytes[..]);
            // `check` never panics on anything the page can hold.
            let _ = b.check();
        }

        #[test]
        fn platform_kind_round_trips(v in prop_oneof![0u32..4, any::<u32>()]) {
            match PlatformKind::try_from(v) {
                Ok(p) => prop_assert_eq!(p as u32, v),
                Err(e) => {
                    prop_assert_eq!(e, v);
                    prop_assert!(v != 1 && v != 2);
                }
            }
        }
    }

    // ---- Memory map ----

    fn entry_bytes(e: &MemoryMapEntry) -> [u8; 24] {
        let mut out = [0u8; 24];
        out.copy_from_slice(e.as_bytes());
        out
    }

    /// Page counts around the interesting sizes.
    fn page_count() -> impl Strategy<Value = u64> {
        let per_2m = GUEST_MEMORY_ALIGN / PAGE_SIZE_4K;
        prop_oneof![
            1 => Just(0u64),
            2 => Just(MIN_GUEST_MEMORY / PAGE_SIZE_4K),
            2 => Just(MAX_GUEST_MEMORY / PAGE_SIZE_4K),
            1 => Just(MAX_GUEST_MEMORY / PAGE_SIZE_4K + per_2m),
            1 => Just(MIN_GUEST_MEMORY / PAGE_SIZE_4K - per_2m),
            6 => (1u64..1 << 17).prop_map(move |n| n * per_2m),
            1 => (1u64..1 << 17).prop_map(move |n| n * per_2m + 1),
            1 => 0u64..1 << 30,
            1 => (u64::MAX / PAGE_SIZE_4K)..=u64::MAX,
            1 => any::<u64>(),
        ]
    }

    fn map_entry() -> impl Strategy<Value = MemoryMapEntry> {
        (
            prop_oneof![6 => Just(0u64), 1 => any::<u64>()],
            page_count(),
            prop_oneof![6 => Just(MEMORY_MAP_TYPE_MEMORY), 1 => any::<u16>()],
            prop_oneof![6 => Just(0u16), 1 => any::<u16>()],
            prop_oneof![6 => Just(0u32), 1 => any::<u32>()],
        )
            .prop_map(
                |(start, pages, entry_type, flags, reserved)| MemoryMapEntry {
                    starting_gpa_page_number: start,
                    number_of_pages: pages,
                    entry_type,
                    flags,
                    reserved,
                },
            )
    }

    const TERMINATOR: MemoryMapEntry = MemoryMapEntry {
        starting_gpa_page_number: 0,
        number_of_pages: 0,
        entry_type: 0,
        flags: 0,
        reserved: 0,
    };

    /// Parameter pages: random bytes, or a random page whose first entries are
    /// plausible (a RAM entry, then mostly a terminator).
    fn param_page() -> impl Strategy<Value = Vec<u8>> {
        let structured = (
            proptest::collection::vec(any::<u8>(), 4096),
            map_entry(),
            prop_oneof![2 => Just(TERMINATOR), 1 => map_entry()],
            prop_oneof![Just(TERMINATOR), map_entry()],
        )
            .prop_map(|(mut page, e0, e1, e2)| {
                page[0..24].copy_from_slice(&entry_bytes(&e0));
                page[24..48].copy_from_slice(&entry_bytes(&e1));
                page[48..72].copy_from_slice(&entry_bytes(&e2));
                page
            });
        prop_oneof![1 => proptest::collection::vec(any::<u8>(), 4096), 3 => structured]
    }

    fn min_memory() -> impl Strategy<Value = u64> {
        prop_oneof![
            2 => Just(0u64),
            2 => Just(MIN_GUEST_MEMORY),
            2 => (1u64..1 << 12).prop_map(|n| n << 20),
            1 => any::<u64>(),
        ]
    }

    proptest! {
        #[test]
        fn memory_map_is_one_ram_range_of_a_valid_size(page in param_page(), min in min_memory()) {
            let entry = |i: usize| MemoryMapEntry::read_from_bytes(&page[i * 24..(i + 1) * 24]).ok();
            let (Some(e0), Some(e1)) = (entry(0), entry(1)) else {
                return Err(TestCaseError::fail("a 4096-byte page holds two entries"));
            };
            let size = u128::from(e0.number_of_pages) * u128::from(PAGE_SIZE_4K);
            let expected_ok = e0.number_of_pages != 0
                && e0.entry_type == MEMORY_MAP_TYPE_MEMORY
                && e0.flags == 0
                && e0.reserved == 0
                && e0.starting_gpa_page_number == 0
                && size >= u128::from(min.max(MIN_GUEST_MEMORY))
                && size <= u128::from(MAX_GUEST_MEMORY)
                && size % u128::from(GUEST_MEMORY_ALIGN) == 0
                && e1.number_of_pages == 0;
            match parse_memory_map(&page, min) {
                Ok(bytes) => {
                    prop_assert!(expected_ok);
                    prop_assert_eq!(u128::from(bytes), size);
                    prop_assert!(bytes >= min);
                    prop_assert!(bytes >= MIN_GUEST_MEMORY);
                    prop_assert!(bytes <= MAX_GUEST_MEMORY);
                    prop_assert!(bytes.is_multiple_of(GUEST_MEMORY_ALIGN));
                }
                Err(_) => prop_assert!(!expected_ok),
            }
        }

        #[test]
        fn memory_map_of_short_input_never_panics(
            page in proptest::collection::vec(any::<u8>(), 0..100),
            first in map_entry(),
            min in min_memory(),
        ) {
            let mut page = page;
            let head = entry_bytes(&first);
            let n = page.len().min(24);
            page[..n].copy_from_slice(&head[..n]);
            // Without a terminator inside the input there is no map.
            if page.len() < 48 {
                prop_assert!(parse_memory_map(&page, min).is_err());
            } else {
                let _ = parse_memory_map(&page, min);
            }
        }
    }

    // ---- ArgsBlob ----

    fn nul_free_string() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 0..12)
    }

    fn fail(e: ArgsBlobError) -> TestCaseError {
        TestCaseError::fail(std::format!("{e:?}"))
    }

    fn encode_blob(args: &[&[u8]], env: &[&[u8]]) -> Result<Vec<u8>, ArgsBlobError> {
        let mut out = vec![0u8; ArgsBlob::encoded_len(args.iter().chain(env).copied())];
        ArgsBlob::encode(args, env, &mut out)?;
        Ok(out)
    }

    #[test]
    fn args_blobs_hold_at_most_the_strings_and_bytes_the_firmware_takes() {
        let name: &[u8] = b"app";
        // MAX_ARG_STRINGS strings, argv[0] included: fine either way round.
        let many = vec![&b"x"[..]; MAX_ARG_STRINGS - 1];
        let blob = encode_blob(&[name], &many).unwrap();
        assert_eq!(ArgsBlob::parse(&blob).unwrap().envc() as usize, many.len());
        let mut args = vec![name];
        args.extend(&many);
        assert!(encode_blob(&args, &[]).is_ok());
        // One more is refused by both sides.
        args.push(b"y");
        assert_eq!(encode_blob(&args, &[]), Err(ArgsBlobError::TooManyStrings));
        let mut forged = encode_blob(&args[..MAX_ARG_STRINGS], &[]).unwrap();
        forged[0..4].copy_from_slice(&(MAX_ARG_STRINGS as u32 + 1).to_le_bytes());
        forged.extend_from_slice(b"y\0");
        assert_eq!(
            ArgsBlob::parse(&forged).map(|_| ()),
            Err(ArgsBlobError::TooManyStrings)
        );
        // A huge count is refused before any string is looked for.
        let mut huge = std::vec![0u8; 8];
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            ArgsBlob::parse(&huge).map(|_| ()),
            Err(ArgsBlobError::TooManyStrings)
        );

        // MAX_ARG_BYTES of strings with their NULs, and one byte more.
        let fill = std::vec![b'a'; MAX_ARG_BYTES - name.len() - 2];
        let blob = encode_blob(&[name], &[&fill]).unwrap();
        assert_eq!(blob.len(), 8 + MAX_ARG_BYTES);
        assert!(ArgsBlob::parse(&blob).is_ok());
        let over = std::vec![b'a'; fill.len() + 1];
        assert_eq!(encode_blob(&[name], &[&over]), Err(ArgsBlobError::TooLarge));
        let mut forged = blob.clone();
        forged.insert(12, b'a');
        assert_eq!(
            ArgsBlob::parse(&forged).map(|_| ()),
            Err(ArgsBlobError::TooLarge)
        );
    }

    /// A valid blob, then maybe one byte changed, a tail cut off or a byte appended.
    fn mutated_blob() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(nul_free_string(), 1..4),
            proptest::collection::vec(nul_free_string(), 0..4),
            0u8..4,
            any::<prop::sample::Index>(),
            prop_oneof![Just(0u8), any::<u8>()],
        )
            .prop_map(|(args, env, how, at, byte)| {
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                let env: Vec<&[u8]> = env.iter().map(Vec::as_slice).collect();
                let mut v = encode_blob(&args, &env).unwrap_or_default();
                let i = at.index(v.len());
                match how {
                    0 => {}
                    1 => v[i] = byte,
                    2 => v.truncate(i),
                    _ => v.push(byte),
                }
                v
            })
    }

    /// Blob-like bytes: random, a small header followed by strings of a small
    /// alphabet that is rich in NULs, or a valid blob slightly damaged.
    fn blob_bytes() -> impl Strategy<Value = Vec<u8>> {
        let header = (
            prop_oneof![4 => 0u32..5, 1 => any::<u32>()],
            prop_oneof![4 => 0u32..5, 1 => any::<u32>()],
        );
        let body =
            proptest::collection::vec(prop_oneof![Just(0u8), Just(b'='), any::<u8>()], 0..40);
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            (header, body).prop_map(|((argc, envc), body)| {
                let mut v = Vec::with_capacity(8 + body.len());
                v.extend_from_slice(&argc.to_le_bytes());
                v.extend_from_slice(&envc.to_le_bytes());
                v.extend_from_slice(&body);
                v
            }),
            mutated_blob(),
        ]
    }

    proptest! {
        #[test]
        fn args_blob_round_trips(
            args in proptest::collection::vec(nul_free_string(), 1..6),
            env in proptest::collection::vec(nul_free_string(), 0..6),
        ) {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let env: Vec<&[u8]> = env.iter().map(Vec::as_slice).collect();
            let bytes = encode_blob(&args, &env).map_err(fail)?;
            let blob = ArgsBlob::parse(&bytes).map_err(fail)?;
            prop_assert_eq!(blob.argc() as usize, args.len());
            prop_assert_eq!(blob.envc() as usize, env.len());
            let strings: Vec<&[u8]> = blob.strings().collect();
            let expected: Vec<&[u8]> = args.iter().chain(&env).copied().collect();
            prop_assert_eq!(strings, expected);
        }

        #[test]
        fn args_blob_encode_refuses_bad_input(
            args in proptest::collection::vec(nul_free_string(), 1..4),
            env in proptest::collection::vec(nul_free_string(), 0..4),
            pick in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            extra in prop_oneof![Just(-1isize), Just(1isize)],
        ) {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let env: Vec<&[u8]> = env.iter().map(Vec::as_slice).collect();
            // No program name.
            prop_assert_eq!(encode_blob(&[], &env), Err(ArgsBlobError::NoProgramName));
            // Wrong output length.
            let len = ArgsBlob::encoded_len(args.iter().chain(&env).copied());
            let mut out = vec![0u8; len.wrapping_add_signed(extra)];
            prop_assert!(ArgsBlob::encode(&args, &env, &mut out).is_err());
            // A NUL inside any string.
            let mut all: Vec<Vec<u8>> = args.iter().chain(&env).map(|s| s.to_vec()).collect();
            let victim = pick.index(all.len());
            let pos = at.index(all[victim].len() + 1);
            all[victim].insert(pos, 0);
            let (a, e) = all.split_at(args.len());
            let a: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            let e: Vec<&[u8]> = e.iter().map(Vec::as_slice).collect();
            prop_assert!(encode_blob(&a, &e).is_err());
        }

        #[test]
        fn args_blob_parse_accepts_only_canonical_blobs(bytes in blob_bytes()) {
            if let Ok(blob) = ArgsBlob::parse(&bytes) {
                prop_assert!(blob.argc() >= 1);
                let strings: Vec<&[u8]> = blob.strings().collect();
                prop_assert_eq!(strings.len(), blob.argc() as usize + blob.envc() as usize);
                prop_assert!(strings.iter().all(|s| !s.contains(&0)));
                let (args, env) = strings.split_at(blob.argc() as usize);
                prop_assert_eq!(encode_blob(args, env), Ok(bytes));
            }
        }
    }
}
