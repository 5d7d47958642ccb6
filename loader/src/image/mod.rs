//! The IGVM image: [`build_image`] writes it, [`load_image`] reads and checks one
//! platform's view of it.
//!
//! One IGVM file (format version 1, 4 KiB pages) serves up to two platforms, each with
//! its own platform header and compatibility mask (the IGVM format as `igvm_defs` 0.5
//! defines it: each `IGVM_VHS_SUPPORTED_PLATFORM` owns one mask bit, and every page,
//! parameter insert and VP context names the platforms it applies to as a bit mask):
//!
//! * SEV-SNP on compatibility mask [`SNP_MASK`], always;
//! * Intel TDX on compatibility mask [`TDX_MASK`], when the firmware ELF has a TDX reset
//!   page (see [`crate::elf`]). Without one the file is exactly the SEV-SNP-only image.
//!
//! Each platform also has a guest policy, in an IGVM initialization header
//! (`IGVM_VHT_GUEST_POLICY`) on its own mask: whether the host may debug the guest,
//! among others ([`LoadedImage::guest_policy`]; `loader/src/image/policy.rs` gives the
//! values and the checks). The policy is not measured.
//!
//! Content both platforms use is in directives on the union of [`SNP_MASK`] and
//! [`TDX_MASK`] (3); what differs sits at the same GPAs in directives of one mask each
//! (the `igvm` crate checks nothing about GPAs, so it accepts that). The
//! guest-physical layout is `nacre_shared_abi::layout` (`docs/memory-map.md`):
//!
//! ```text
//! GPA          name                platforms  content
//! 0x1000       BOOT_INFO_GPA       each       boot information (measured; per platform)
//! 0x2000       HOST_PARAM_GPA      both       memory map from the host (parameter area,
//!                                             unmeasured)
//! 0x3000       SECRETS_PAGE_GPA    SNP        secrets page (SECRETS)
//! 0x4000       SNP_CPUID_PAGE_GPA  SNP        CPUID page (CPUID, filled by the host)
//! 0x8000       INITIAL_PT_GPA      both       page tables (measured; 4 pages, no
//!                                             encryption bit)
//! 1 MiB        FIRMWARE_GPA        both       firmware segments, bss as zero pages
//!                                             (measured)
//! 16 MiB       APP_IMAGE_GPA       both       app ELF file (measured)
//! args_gpa     (next 4 KiB page)   both       argument blob (measured)
//! fs_gpa       (next 4 KiB page)   both       file tree (measured), up to image_end
//! 0xFFFF_F000  TDX_RESET_PAGE_GPA  TDX        reset page: 32-bit entry code, reset
//!                                             vector (measured)
//! 0xFFFF_FFFF_F000  SNP_VMSA_GPA   SNP        BSP VMSA (SNP VP context), not RAM
//! ```
//!
//! The directive order, which is each platform's measurement order, is documented in
//! the `build` module (`loader/src/image/build.rs`); how each platform takes each page,
//! and so what its launch measurement is, below (computed in
//! `loader/src/image/launch.rs`).
//!
//! # Launch measurement
//!
//! The host launches a platform's view in [`LoadedImage`]'s launch sequence: every
//! page of `pages` in order, then the parameter page, then on SEV-SNP one VMSA per
//! vCPU, the BSP's first. [`LoadedImage::measurement_for_cpus`] is what the platform
//! computes from it for a number of vCPUs ([`LoadedImage::measurement`] for one) and
//! [`LoadedImage::measured_regions_for_cpus`] lists what it covers.
//!
//! ## SEV-SNP page types
//!
//! SNP_LAUNCH_UPDATE page type and PAGE_INFO CONTENTS of each page:
//!
//! * a page with data ([`PageContents::Data`]: boot information, page tables, firmware
//!   file bytes, app, arguments, file tree): NORMAL, the SHA-384 of the page;
//! * a page the image declares zero ([`PageContents::Zero`], an IGVM page without file
//!   data: the firmware's pages that hold only bss): NORMAL, the SHA-384 of 4096 zero
//!   bytes;
//! * the secrets page ([`PageContents::Secrets`], SEV-SNP only, at
//!   `nacre_shared_abi::layout::SECRETS_PAGE_GPA`): SECRETS, zeros (the security
//!   processor fills it with the VMPCKs);
//! * the CPUID page ([`PageContents::Cpuid`], SEV-SNP only, at
//!   `nacre_shared_abi::layout::SNP_CPUID_PAGE_GPA`): CPUID, zeros (the host fills it
//!   and the security processor checks it);
//! * the parameter page (the host's memory map): UNMEASURED
//!   ([`SNP_PARAMETER_PAGE_TYPE`]), zeros;
//! * each vCPU's VMSA, the BSP's first: VMSA at GPA [`crate::measure::snp::VMSA_GPA`],
//!   the SHA-384 of the VMSA page as the image holds it (a host on hardware must hand
//!   over exactly that state, to every vCPU: they all start in the BSP's state), so the
//!   number of vCPUs is part of the digest.
//!
//! A zero page is NORMAL over 4096 zero bytes, not SNP_LAUNCH_UPDATE's ZERO type,
//! because the IGVM format asks that of every loader (`igvm_defs`,
//! `IGVM_VHS_PAGE_DATA::file_offset`: "the loader should treat this page ... as a normal
//! private page with zeros as contents"), and QEMU's IGVM loader on SEV-SNP does so: an
//! image then has the same digest whichever conforming loader launches it. The two ways
//! give different digests; [`PageContents::snp_page_type`] is the one place that
//! decides.
//!
//! ## TDX
//!
//! Every page of `pages`, with data or zero, is added with TDH.MEM.PAGE.ADD and measured
//! with its 16 TDH.MR.EXTENDs; the parameter page is added and not extended
//! ([`crate::measure::tdx`]). A TD's BSP starts in the architectural reset state, so
//! there is no VMSA, and vCPUs add nothing to MRTD: it is the same whatever the number
//! of vCPUs.

mod build;
mod digest;
#[cfg(test)]
mod dual_tests;
mod launch;
mod load;
mod policy;

pub use build::{build_image, PackageInput};
pub use launch::{LaunchPageType, MeasuredRegion, RegionKind, SNP_PARAMETER_PAGE_TYPE};
pub use load::{image_platforms, load_image, ImagePage, LoadedImage, PageContents};
pub use policy::{
    default_policy, policy_allows_debug, snp_policy, td_attributes, tdx_policy, DEBUG_SNP_POLICY,
    DEBUG_TDX_POLICY, DEFAULT_SNP_POLICY, DEFAULT_TDX_POLICY,
};

use nacre_shared_abi::boot::{
    BootInfoError, PlatformKind, BOOT_INFO_VERSION, MAX_ARG_BYTES, MAX_ARG_STRINGS,
};
use nacre_shared_abi::filetree::FileTreeError;
use nacre_shared_abi::layout::{
    BOOT_INFO_GPA, EMULATED_TDX_GPAW, INITIAL_PT_GPA, INITIAL_PT_PAGES, NULL_GUARD_END,
    TDX_MAX_GUEST_MEMORY, TDX_RESET_PAGE_GPA,
};
use thiserror::Error;

use crate::elf::ElfError;

/// Compatibility mask of the SEV-SNP platform header (IGVM `IGVM_VHS_SUPPORTED_PLATFORM`:
/// one bit per platform).
pub const SNP_MASK: u32 = 1;

/// Compatibility mask of the TDX platform header.
pub const TDX_MASK: u32 = 2;

/// `shared_gpa_boundary` of the TDX platform header: the shared bit of a TD with GPA
/// width [`EMULATED_TDX_GPAW`], `1 << (GPAW - 1)` (docs/specs.md 6.3; IGVM
/// `IGVM_VHS_SUPPORTED_PLATFORM`: memory at and above the boundary is host visible).
/// The `igvm` crate 0.5 sets no rule for this field on TDX.
pub const TDX_SHARED_GPA_BOUNDARY: u64 = 1 << (EMULATED_TDX_GPAW - 1);

/// The name of a platform in messages.
fn platform_name(platform: PlatformKind) -> &'static str {
    match platform {
        PlatformKind::Snp => "SEV-SNP",
        PlatformKind::Tdx => "TDX",
    }
}

/// Index of the parameter area holding the host's memory map.
const PARAMETER_AREA_INDEX: u32 = 0;

/// Size of that parameter area: one page.
const PARAMETER_AREA_SIZE: u64 = 4096;

/// Guest RAM the firmware needs above the image for its own use (frames, app memory)
/// before it is worth booting.
const MIN_MEMORY_HEADROOM: u64 = 32 << 20;

/// Why an image could not be built or loaded.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The firmware ELF failed its checks.
    #[error("the firmware ELF cannot be used")]
    Firmware(#[source] ElfError),
    /// The app ELF failed its checks.
    #[error("the app cannot run under nacre")]
    App(#[source] ElfError),
    /// No `argv[0]`.
    #[error("the argument list is empty: argv[0] (the program name) is required")]
    NoProgramName,
    /// An argument contains NUL.
    #[error("argument {index} contains a NUL byte")]
    NulInArgument {
        /// Index in `args` (0 is the program name).
        index: usize,
    },
    /// An environment string contains NUL.
    #[error("environment entry {index} contains a NUL byte")]
    NulInEnvironment {
        /// Index in `env`.
        index: usize,
    },
    /// An environment string has no `=`.
    #[error("environment entry {index} has no '=' (entries are KEY=VALUE)")]
    EnvironmentWithoutEquals {
        /// Index in `env`.
        index: usize,
    },
    /// More argument and environment strings than an app can be given.
    #[error(
        "there are {count} arguments and environment strings (argv[0] included); an app \
         can be given at most {MAX_ARG_STRINGS}"
    )]
    TooManyArgStrings {
        /// Their number, `argv[0]` included.
        count: usize,
    },
    /// The argument and environment strings are longer than an app can be given.
    #[error(
        "the arguments and environment strings take {bytes} bytes (each with its NUL); an \
         app can be given at most {MAX_ARG_BYTES} (2 MiB)"
    )]
    ArgStringsTooLarge {
        /// Their length, each with its NUL.
        bytes: usize,
    },
    /// The file tree's header is invalid.
    #[error("the file tree is invalid: {}", file_tree_reason(.0))]
    InvalidFileTree(FileTreeError),
    /// Bytes follow the file tree.
    #[error("the file tree is followed by bytes that are not part of it")]
    FileTreeTrailingBytes,
    /// The inputs do not fit in guest memory or in an IGVM file.
    #[error("the image is too large: {what}")]
    TooLarge {
        /// What does not fit.
        what: &'static str,
    },
    /// The `igvm` crate refused the directives.
    #[error("the IGVM file cannot be built")]
    Build(#[source] igvm::Error),

    /// The file does not start with the IGVM magic number.
    #[error("the file is not an IGVM image (it does not start with the IGVM magic number)")]
    NotIgvm,
    /// The file is shorter than the fixed header.
    #[error("the IGVM file is truncated: {actual} bytes is shorter than its fixed header")]
    Truncated {
        /// Length of the file.
        actual: usize,
    },
    /// Not format version 1.
    #[error("the IGVM file has format version {version}; this loader reads version 1")]
    UnsupportedFormatVersion {
        /// The header's `format_version`.
        version: u32,
    },
    /// The file length differs from the header's `total_file_size`.
    #[error(
        "the IGVM file is {actual} bytes but its header says {expected}: it is truncated or \
         has trailing bytes"
    )]
    SizeMismatch {
        /// The header's `total_file_size`.
        expected: u32,
        /// Length of the file.
        actual: usize,
    },
    /// The headers are inconsistent.
    #[error("the IGVM file is corrupt: {reason}")]
    Corrupt {
        /// What is wrong.
        reason: &'static str,
    },
    /// A variable header of a type nacre images do not use.
    #[error(
        "the IGVM file has a header of type {header_type:#x} at offset {offset:#x}, which nacre \
         images do not use"
    )]
    UnexpectedHeader {
        /// File offset of the header.
        offset: usize,
        /// Its `IGVM_VHT_*` type.
        header_type: u32,
    },
    /// The `igvm` crate's parser refused the file.
    #[error("the IGVM file is corrupt")]
    Parse(#[source] igvm::Error),
    /// No SEV-SNP platform header.
    #[error("the IGVM file has no SEV-SNP platform header")]
    NoSnpPlatform,
    /// No TDX platform header: the firmware the image was built from has no TDX reset
    /// page.
    #[error(
        "the image cannot run on TDX: the image's firmware has no TDX entry point (reset \
         page), so it was packaged for SEV-SNP only"
    )]
    NoTdxPlatform,
    /// A platform header other than SEV-SNP and TDX.
    #[error(
        "the IGVM file has a header for platform type {platform_type}, which this loader does \
         not support"
    )]
    UnsupportedPlatform {
        /// Its `IgvmPlatformType`.
        platform_type: u8,
    },
    /// Two platform headers with the same compatibility mask.
    #[error("the IGVM file gives two platforms the same compatibility mask {mask:#x}")]
    SharedPlatformMask {
        /// The mask.
        mask: u32,
    },
    /// A guest policy header whose compatibility mask is not exactly one platform's.
    #[error(
        "the IGVM file has a guest policy for compatibility mask {mask:#x}, which is not \
         exactly one of its platforms"
    )]
    GuestPolicyMask {
        /// Its compatibility mask.
        mask: u32,
    },
    /// Two guest policy headers for one platform.
    #[error(
        "the IGVM file gives the {} platform more than one guest policy",
        platform_name(*.platform)
    )]
    DuplicateGuestPolicy {
        /// The platform.
        platform: PlatformKind,
    },
    /// A guest policy with bits set that are reserved or that this loader does not
    /// know.
    #[error(
        "the image's {} guest policy {policy:#x} sets bits {bits:#x}, which are reserved or \
         unknown to this nacre",
        platform_name(*.platform)
    )]
    GuestPolicyUnknownBits {
        /// The platform.
        platform: PlatformKind,
        /// The policy.
        policy: u64,
        /// The bits that are not allowed.
        bits: u64,
    },
    /// An SEV-SNP guest policy with bit 17 clear.
    #[error(
        "the image's SEV-SNP guest policy {policy:#x} has bit 17 clear; that reserved bit \
         must be 1"
    )]
    GuestPolicyReservedBitClear {
        /// The policy.
        policy: u64,
    },
    /// A directive kind nacre images do not use.
    #[error("directive {index} of the IGVM file is a {kind}, which nacre images do not use")]
    UnexpectedDirective {
        /// Index among the directives.
        index: usize,
        /// What it is.
        kind: &'static str,
    },
    /// A directive whose mask is empty or names a platform the file does not declare.
    #[error(
        "directive {index} has compatibility mask {mask:#x}, which is not a combination of \
         the file's platforms"
    )]
    WrongCompatibilityMask {
        /// Index among the directives.
        index: usize,
        /// Its compatibility mask.
        mask: u32,
    },
    /// A page of a kind nacre images do not use.
    #[error("the page at GPA {gpa:#x} is {reason}; nacre images hold normal measured pages only")]
    UnsupportedPage {
        /// The page's GPA.
        gpa: u64,
        /// What kind of page it is.
        reason: &'static str,
    },
    /// A page GPA that is not 4 KiB aligned.
    #[error("the page at GPA {gpa:#x} is not 4 KiB aligned")]
    UnalignedPage {
        /// The page's GPA.
        gpa: u64,
    },
    /// A page outside guest memory (or outside the image's minimum memory).
    #[error("the page at GPA {gpa:#x} is outside guest memory {NULL_GUARD_END:#x}..{limit:#x}")]
    PageOutOfRange {
        /// The page's GPA.
        gpa: u64,
        /// The end of the allowed range.
        limit: u64,
    },
    /// Two pages (or a page and the parameter page or VMSA) at the same GPA.
    #[error("GPA {gpa:#x} is given more than one page")]
    OverlappingPage {
        /// The GPA.
        gpa: u64,
    },
    /// The parameter area directives do not have nacre's shape.
    #[error("the host parameter area is invalid: {reason}")]
    BadParameterArea {
        /// What is wrong.
        reason: &'static str,
    },
    /// No memory map parameter page.
    #[error("the IGVM file does not ask the host for a memory map page")]
    MissingParameterArea,
    /// No page at `BOOT_INFO_GPA`.
    #[error("the IGVM file has no boot information page at GPA {BOOT_INFO_GPA:#x}")]
    MissingBootInfo,
    /// The [`nacre_shared_abi::boot::BootInfo`] failed its own check.
    #[error("the boot information is invalid: {}", boot_info_reason(.0))]
    InvalidBootInfo(BootInfoError),
    /// The boot information disagrees with the rest of the image.
    #[error("the boot information does not match the image: {reason}")]
    BootInfoMismatch {
        /// What is wrong.
        reason: &'static str,
    },
    /// Part of the app, argument or file tree region is not measured.
    #[error(
        "the app, argument and file tree region includes GPA {gpa:#x}, which is not a \
         measured page of the image"
    )]
    UnmeasuredRegion {
        /// The first unmeasured page.
        gpa: u64,
    },
    /// No SEV-SNP VP context.
    #[error("the IGVM file has no VP context for the BSP")]
    MissingVpContext,
    /// No measured TDX reset page: the TDX BSP would start in unmeasured memory.
    #[error(
        "the TDX BSP cannot start: there is no measured reset page at GPA {TDX_RESET_PAGE_GPA:#x}"
    )]
    MissingTdxResetPage,
    /// The initial page tables the entry code turns paging on with are not all measured
    /// pages with contents.
    #[error(
        "the BSP cannot start: the {INITIAL_PT_PAGES} pages of initial page tables from GPA \
         {INITIAL_PT_GPA:#x} are not all measured pages with contents"
    )]
    MissingPageTables,
    /// The image needs more RAM than a TDX guest can have.
    #[error(
        "the image needs {} MiB of guest memory, more than a TDX guest can have below its \
         reset page ({} MiB)",
        .min_memory >> 20,
        TDX_MAX_GUEST_MEMORY >> 20
    )]
    TooLargeForTdx {
        /// The image's `min_memory`.
        min_memory: u64,
    },
    /// The VP context is unusable.
    #[error("the BSP's VP context is invalid: {reason}")]
    BadVpContext {
        /// What is wrong.
        reason: &'static str,
    },
    /// The VMSA's `rip` is not in the measured firmware.
    #[error("the BSP would start at {rip:#x}, which is not inside the measured firmware")]
    EntryOutsideFirmware {
        /// The VMSA's `rip`.
        rip: u64,
    },
    /// The platform's pages (and on SEV-SNP the VMSA) do not hash to its boot
    /// information's image digest.
    #[error(
        "the image is corrupt: its {} content does not match its digest (re-package it)",
        platform_name(*.platform)
    )]
    DigestMismatch {
        /// The platform whose view was loaded.
        platform: PlatformKind,
    },
}

fn boot_info_reason(error: &BootInfoError) -> String {
    match error {
        BootInfoError::BadMagic => "its magic number is wrong".to_owned(),
        BootInfoError::BadVersion(v) => {
            format!("it has version {v}, not {BOOT_INFO_VERSION}")
        }
        BootInfoError::BadPlatform(p) => format!("it names unknown platform {p}"),
        BootInfoError::UnknownFlags(f) => {
            format!("it sets boot flags {f:#x}, which this nacre does not know")
        }
        BootInfoError::BadRegion => {
            "a region is empty, unaligned, overlapping or outside the image".to_owned()
        }
    }
}

/// A file tree error in words.
pub fn file_tree_reason(error: &FileTreeError) -> String {
    match error {
        FileTreeError::BadMagic => "its magic number is wrong".to_owned(),
        FileTreeError::BadVersion(v) => format!(
            "it has version {v}, not {}",
            nacre_shared_abi::filetree::FILE_TREE_VERSION
        ),
        FileTreeError::BadHeader => "its header's offsets and lengths are inconsistent".to_owned(),
        FileTreeError::Truncated => "it is shorter than its header says".to_owned(),
        FileTreeError::Corrupt | FileTreeError::NotDirectory | FileTreeError::NotRegularFile => {
            "it is corrupt".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::{image_file, page_data, snp_platform};
    use super::*;
    use crate::filetree::FileTreeBuilder;
    use crate::measure::snp::PageType;
    use crate::pagetable::InitialPageTables;
    use crate::testelf::{self, pattern, Segment};
    use crate::vmsa::initial_vmsa;
    use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
    use igvm_defs::{IgvmPlatformType, IGVM_VHS_SUPPORTED_PLATFORM};
    use nacre_shared_abi::boot::{
        ArgsBlob, BootInfo, PlatformKind, BOOT_INFO_MAGIC, BOOT_INFO_VERSION,
    };
    use nacre_shared_abi::layout::{
        align_up, APP_IMAGE_GPA, FIRMWARE_GPA, HOST_PARAM_GPA, INITIAL_PT_GPA, KERNEL_VA_BASE,
        MAX_GUEST_MEMORY, MIN_GUEST_MEMORY, PAGE_SIZE_4K, SECRETS_PAGE_GPA, SNP_CPUID_PAGE_GPA,
        SNP_VMSA_GPA,
    };
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};
    use std::sync::OnceLock;

    const PAGE: usize = 4096;

    /// The SEV-SNP view of `bytes`.
    fn load_snp(bytes: &[u8]) -> Result<LoadedImage, ImageError> {
        load_image(bytes, PlatformKind::Snp)
    }

    struct Sample {
        firmware: Vec<u8>,
        app: Vec<u8>,
        files: Vec<u8>,
    }

    impl Sample {
        fn new() -> Self {
            Self {
                firmware: testelf::firmware(),
                app: testelf::static_app(),
                files: FileTreeBuilder::new(b"app").unwrap().build().unwrap(),
            }
        }

        fn input(&self) -> PackageInput<'_> {
            PackageInput {
                firmware_elf: &self.firmware,
                app_elf: &self.app,
                args: vec![b"app".to_vec(), b"--flag".to_vec()],
                env: vec![b"HOME=/".to_vec(), b"EMPTY=".to_vec()],
                flags: 0,
                file_tree: &self.files,
                debug: false,
            }
        }
    }

    fn sample_image() -> &'static [u8] {
        static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
        IMAGE.get_or_init(|| build_image(&Sample::new().input()).unwrap())
    }

    fn sample_directives() -> Vec<IgvmDirectiveHeader> {
        image_file(&Sample::new().input())
            .unwrap()
            .directives()
            .to_vec()
    }

    fn serialize(
        platforms: Vec<IgvmPlatformHeader>,
        directives: Vec<IgvmDirectiveHeader>,
    ) -> Vec<u8> {
        let file = IgvmFile::new(IgvmRevision::V1, platforms, Vec::new(), directives).unwrap();
        let mut out = Vec::new();
        file.serialize(&mut out).unwrap();
        out
    }

    /// Load the sample image after `edit` changed its directives.
    fn load_edited(
        edit: impl FnOnce(&mut Vec<IgvmDirectiveHeader>),
    ) -> Result<LoadedImage, ImageError> {
        let mut directives = sample_directives();
        edit(&mut directives);
        load_snp(&serialize(vec![snp_platform()], directives))
    }

    /// Index of the first directive that is not page data (the parameter area).
    fn first_non_page(directives: &[IgvmDirectiveHeader]) -> usize {
        directives
            .iter()
            .position(|d| !matches!(d, IgvmDirectiveHeader::PageData { .. }))
            .unwrap()
    }

    fn vmsa_of(directives: &mut [IgvmDirectiveHeader]) -> &mut igvm::snp_defs::SevVmsa {
        directives
            .iter_mut()
            .find_map(|d| match d {
                IgvmDirectiveHeader::SnpVpContext { vmsa, .. } => Some(&mut **vmsa),
                _ => None,
            })
            .unwrap()
    }

    fn page(bytes: &[u8]) -> PageContents {
        let mut page = [0u8; PAGE];
        page[..bytes.len()].copy_from_slice(bytes);
        PageContents::Data(page.into())
    }

    #[test]
    fn round_trip() {
        let sample = Sample::new();
        let loaded = load_snp(sample_image()).unwrap();

        let app_size = sample.app.len() as u64;
        let args_gpa = align_up(APP_IMAGE_GPA + app_size, PAGE_SIZE_4K);
        let args_blob = b"\x02\0\0\0\x02\0\0\0app\0--flag\0HOME=/\0EMPTY=\0";
        let fs_gpa = args_gpa + PAGE_SIZE_4K;
        // One page of structure, one each for /etc/group, /etc/hosts and /etc/passwd.
        assert_eq!(sample.files.len(), 4 * PAGE);
        let image_end = fs_gpa + 4 * PAGE_SIZE_4K;
        let mut expected_info = BootInfo {
            magic: BOOT_INFO_MAGIC,
            version: BOOT_INFO_VERSION,
            platform: PlatformKind::Snp as u32,
            c_bit: 0,
            flags: 0,
            firmware_end: testelf::FIRMWARE_END,
            app_gpa: APP_IMAGE_GPA,
            app_size,
            args_gpa,
            args_size: args_blob.len() as u64,
            image_end,
            min_memory: MIN_GUEST_MEMORY,
            // Set below, once the pages are known.
            image_digest: [0; 32],
            fs_gpa,
            fs_size: 4 * PAGE_SIZE_4K,
        };
        let expected_vmsa = initial_vmsa(testelf::FIRMWARE_ENTRY - KERNEL_VA_BASE);
        assert_eq!(loaded.platform, PlatformKind::Snp);
        assert_eq!(loaded.min_memory, MIN_GUEST_MEMORY);
        assert_eq!(loaded.param_gpa, HOST_PARAM_GPA);
        assert_eq!(loaded.vmsa, Some(expected_vmsa.clone()));
        assert_eq!(loaded.mrtd, None);

        let mut expected = Vec::new();
        let mut push =
            |gpa: u64, contents: PageContents| expected.push(ImagePage { gpa, contents });
        // The boot information page is filled in below.
        push(BOOT_INFO_GPA, PageContents::Zero);
        push(SECRETS_PAGE_GPA, PageContents::Secrets);
        push(SNP_CPUID_PAGE_GPA, PageContents::Cpuid);
        for (i, table) in InitialPageTables::new().to_pages().iter().enumerate() {
            push(INITIAL_PT_GPA + i as u64 * PAGE_SIZE_4K, page(table));
        }
        let text = pattern(testelf::FIRMWARE_TEXT_LEN as usize, 0x33);
        let data = pattern(testelf::FIRMWARE_DATA_LEN as usize, 0x55);
        push(FIRMWARE_GPA, page(&text[..PAGE]));
        let mut shared = text[PAGE..].to_vec();
        shared.resize(testelf::FIRMWARE_DATA_OFFSET as usize - PAGE, 0);
        shared.extend_from_slice(&data);
        push(FIRMWARE_GPA + PAGE_SIZE_4K, page(&shared));
        for i in 2..5 {
            push(FIRMWARE_GPA + i * PAGE_SIZE_4K, PageContents::Zero);
        }
        for (i, chunk) in sample.app.chunks(PAGE).enumerate() {
            push(APP_IMAGE_GPA + i as u64 * PAGE_SIZE_4K, page(chunk));
        }
        push(args_gpa, page(args_blob));
        for (i, chunk) in sample.files.chunks(PAGE).enumerate() {
            push(fs_gpa + i as u64 * PAGE_SIZE_4K, page(chunk));
        }

        // The digest: every page but the boot information's (GPA, then its bytes) in
        // order, then the VMSA.
        let mut hasher = Sha256::new();
        for page in &expected[1..] {
            hasher.update(page.gpa.to_le_bytes());
            hasher.update(page.contents.bytes());
        }
        hasher.update(zerocopy::IntoBytes::as_bytes(&*expected_vmsa));
        expected_info.image_digest = hasher.finalize().into();
        assert_ne!(expected_info.image_digest, [0; 32]);
        expected[0].contents = page(zerocopy::IntoBytes::as_bytes(&expected_info));

        assert_eq!(loaded.boot_info, expected_info);
        assert_eq!(loaded.pages, expected);

        let args_page = loaded
            .pages
            .iter()
            .find(|p| p.gpa == args_gpa)
            .unwrap()
            .contents
            .bytes();
        let blob = ArgsBlob::parse(&args_page[..args_blob.len()]).unwrap();
        let strings: Vec<&[u8]> = blob.strings().collect();
        assert_eq!(strings, [&b"app"[..], b"--flag", b"HOME=/", b"EMPTY="]);
    }

    #[test]
    fn build_is_deterministic() {
        let sample = Sample::new();
        let a = build_image(&sample.input()).unwrap();
        let b = build_image(&sample.input()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, sample_image());
    }

    #[test]
    fn min_memory_grows_with_the_image() {
        let sample = Sample::new();
        let mut tree = FileTreeBuilder::new(b"app").unwrap();
        tree.add_file(b"/big", vec![b'x'; 40 << 20], 0o644).unwrap();
        let files = tree.build().unwrap();
        let mut input = sample.input();
        input.file_tree = &files;
        let loaded = load_snp(&build_image(&input).unwrap()).unwrap();
        let info = loaded.boot_info;
        assert_eq!(
            info.min_memory,
            align_up(info.image_end, 2 << 20) + (32 << 20)
        );
        assert!(info.min_memory > MIN_GUEST_MEMORY);
    }

    #[test]
    fn build_rejects_bad_arguments() {
        let sample = Sample::new();
        let build = |args: Vec<&[u8]>, env: Vec<&[u8]>| {
            let mut input = sample.input();
            input.args = args.into_iter().map(<[u8]>::to_vec).collect();
            input.env = env.into_iter().map(<[u8]>::to_vec).collect();
            build_image(&input).unwrap_err()
        };
        let err = build(vec![], vec![]);
        assert!(matches!(err, ImageError::NoProgramName), "{err:?}");
        assert!(err.to_string().contains("argv[0]"), "{err}");
        let err = build(vec![b"app", b"a\0b"], vec![]);
        assert!(
            matches!(err, ImageError::NulInArgument { index: 1 }),
            "{err:?}"
        );
        let err = build(vec![b"app"], vec![b"A=1", b"B\0=2"]);
        assert!(
            matches!(err, ImageError::NulInEnvironment { index: 1 }),
            "{err:?}"
        );
        let err = build(vec![b"app"], vec![b"NOEQUALS"]);
        assert!(
            matches!(err, ImageError::EnvironmentWithoutEquals { index: 0 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");

        // The firmware passes an app at most MAX_ARG_STRINGS strings of at most
        // MAX_ARG_BYTES; more used to build and then fail at boot.
        let x: &[u8] = b"x";
        let mut args = vec![&b"app"[..]];
        args.extend(vec![x; MAX_ARG_STRINGS - 2]);
        let mut input = sample.input();
        input.args = args.iter().map(|a| a.to_vec()).collect();
        input.env = vec![b"A=1".to_vec()];
        build_image(&input).unwrap();
        input.env.push(b"B=2".to_vec());
        let err = build_image(&input).unwrap_err();
        assert!(
            matches!(err, ImageError::TooManyArgStrings { count } if count == MAX_ARG_STRINGS + 1),
            "{err:?}"
        );
        assert!(err.to_string().contains("at most 256"), "{err}");
        let long = vec![b'y'; MAX_ARG_BYTES];
        let err = build(vec![b"app", &long], vec![]);
        assert!(
            matches!(err, ImageError::ArgStringsTooLarge { bytes } if bytes == MAX_ARG_BYTES + 5),
            "{err:?}"
        );
        assert!(err.to_string().contains("at most 2097152"), "{err}");
    }

    #[test]
    fn build_rejects_bad_elves() {
        let sample = Sample::new();
        let mut input = sample.input();
        input.firmware_elf = &sample.app;
        let err = build_image(&input).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::Firmware(ElfError::FirmwareVirtualAddress { .. })
            ),
            "{err:?}"
        );

        let mut dynamic = testelf::static_app_spec();
        dynamic.segments.push(Segment {
            p_type: object::elf::PT_INTERP.0,
            flags: object::elf::PF_R.0,
            vaddr: 0x40_0f00,
            paddr: 0x40_0f00,
            data: b"/lib/ld-musl-x86_64.so.1\0".to_vec(),
            memsz: 25,
        });
        let dynamic = dynamic.build();
        let mut input = sample.input();
        input.app_elf = &dynamic;
        let err = build_image(&input).unwrap_err();
        assert!(
            matches!(err, ImageError::App(ElfError::DynamicallyLinked { .. })),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("-static"), "{source}");
    }

    #[test]
    fn load_rejects_non_igvm() {
        assert!(matches!(load_snp(b""), Err(ImageError::NotIgvm)));
        assert!(matches!(load_snp(b"hello world"), Err(ImageError::NotIgvm)));
        assert!(matches!(
            load_snp(&testelf::static_app()),
            Err(ImageError::NotIgvm)
        ));
    }

    #[test]
    fn load_rejects_truncated() {
        let image = sample_image();
        assert!(matches!(
            load_snp(&image[..10]),
            Err(ImageError::Truncated { actual: 10 })
        ));
        for len in [24, 100, 4096, image.len() - 1] {
            assert!(
                matches!(
                    load_snp(&image[..len]),
                    Err(ImageError::SizeMismatch { .. })
                ),
                "{len}"
            );
        }
    }

    #[test]
    fn load_reports_parser_errors_with_source() {
        let mut image = sample_image().to_vec();
        // Flip a bit in the variable headers: the checksum no longer matches.
        image[40] ^= 0x10;
        let err = load_snp(&image).unwrap_err();
        assert!(matches!(err, ImageError::Parse(_)), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn load_rejects_missing_snp_platform() {
        let mut directives = sample_directives();
        directives.retain(|d| !matches!(d, IgvmDirectiveHeader::SnpVpContext { .. }));
        let tdx = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: SNP_MASK,
            highest_vtl: 0,
            platform_type: IgvmPlatformType::TDX,
            platform_version: 1,
            shared_gpa_boundary: 0,
        });
        let err = load_snp(&serialize(vec![tdx], directives)).unwrap_err();
        assert!(matches!(err, ImageError::NoSnpPlatform), "{err:?}");
    }

    #[test]
    fn load_rejects_unexpected_directives() {
        let err = load_edited(|d| {
            let at = first_non_page(d);
            d.insert(
                at,
                IgvmDirectiveHeader::RequiredMemory {
                    gpa: 0x20_0000,
                    compatibility_mask: SNP_MASK,
                    number_of_bytes: 4096,
                    vtl2_protectable: false,
                },
            );
        })
        .unwrap_err();
        assert!(
            matches!(err, ImageError::UnexpectedHeader { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn load_rejects_overlapping_pages() {
        let err = load_edited(|d| {
            let at = first_non_page(d);
            d.insert(at, page_data(FIRMWARE_GPA, SNP_MASK, Vec::new()));
        })
        .unwrap_err();
        assert!(
            matches!(err, ImageError::OverlappingPage { gpa: FIRMWARE_GPA }),
            "{err:?}"
        );

        let err = load_edited(|d| {
            for directive in d.iter_mut() {
                if let IgvmDirectiveHeader::ParameterInsert(insert) = directive {
                    insert.gpa = INITIAL_PT_GPA;
                }
            }
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::OverlappingPage {
                    gpa: INITIAL_PT_GPA
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn load_rejects_pages_out_of_range() {
        for (gpa, limit) in [
            (0, MAX_GUEST_MEMORY),
            (MAX_GUEST_MEMORY, MAX_GUEST_MEMORY),
            (!0xfff, MAX_GUEST_MEMORY),
            (MIN_GUEST_MEMORY, MIN_GUEST_MEMORY),
        ] {
            let err = load_edited(|d| {
                let at = first_non_page(d);
                d.insert(at, page_data(gpa, SNP_MASK, Vec::new()));
            })
            .unwrap_err();
            assert!(
                matches!(err, ImageError::PageOutOfRange { gpa: g, limit: l } if g == gpa && l == limit),
                "{gpa:#x}: {err:?}"
            );
        }
    }

    #[test]
    fn load_rejects_wrong_mask() {
        let err = load_edited(|d| {
            if let IgvmDirectiveHeader::PageData {
                compatibility_mask, ..
            } = &mut d[2]
            {
                *compatibility_mask = 3;
            }
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::WrongCompatibilityMask { index: 2, mask: 3 }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn load_rejects_bad_boot_info() {
        let err = load_edited(|d| {
            d.remove(0);
        })
        .unwrap_err();
        assert!(matches!(err, ImageError::MissingBootInfo), "{err:?}");

        let err = load_edited(|d| {
            if let IgvmDirectiveHeader::PageData { data, .. } = &mut d[0] {
                data[0] ^= 1;
            }
        })
        .unwrap_err();
        assert!(
            matches!(err, ImageError::InvalidBootInfo(BootInfoError::BadMagic)),
            "{err:?}"
        );

        // app_size grows past args: the regions overlap.
        let err = load_edited(|d| {
            if let IgvmDirectiveHeader::PageData { data, .. } = &mut d[0] {
                data[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
            }
        })
        .unwrap_err();
        assert!(
            matches!(err, ImageError::InvalidBootInfo(BootInfoError::BadRegion)),
            "{err:?}"
        );

        let err = load_edited(|d| {
            if let IgvmDirectiveHeader::PageData { data, .. } = &mut d[0] {
                data[2000] = 1;
            }
        })
        .unwrap_err();
        assert!(
            matches!(err, ImageError::BootInfoMismatch { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn load_rejects_unmeasured_app_pages() {
        let err = load_edited(|d| {
            let app_page = d
                .iter()
                .position(|d| matches!(d, IgvmDirectiveHeader::PageData { gpa, .. } if *gpa == APP_IMAGE_GPA))
                .unwrap();
            d.remove(app_page);
        })
        .unwrap_err();
        assert!(
            matches!(err, ImageError::UnmeasuredRegion { gpa: APP_IMAGE_GPA }),
            "{err:?}"
        );
    }

    #[test]
    fn load_rejects_missing_vp_context() {
        let err = load_edited(|d| {
            d.retain(|d| !matches!(d, IgvmDirectiveHeader::SnpVpContext { .. }));
        })
        .unwrap_err();
        assert!(matches!(err, ImageError::MissingVpContext), "{err:?}");
    }

    #[test]
    fn load_rejects_missing_parameter_area() {
        let err = load_edited(|d| {
            d.retain(|d| {
                !matches!(
                    d,
                    IgvmDirectiveHeader::ParameterArea { .. }
                        | IgvmDirectiveHeader::MemoryMap(_)
                        | IgvmDirectiveHeader::ParameterInsert(_)
                )
            });
        })
        .unwrap_err();
        assert!(matches!(err, ImageError::MissingParameterArea), "{err:?}");
    }

    #[test]
    fn load_rejects_entry_outside_firmware() {
        for rip in [
            0,
            APP_IMAGE_GPA,
            testelf::FIRMWARE_END,
            // Inside the firmware's range but on a zero (bss) page.
            FIRMWARE_GPA + 3 * PAGE_SIZE_4K,
            // The entry's kernel address: the BSP starts with paging off.
            KERNEL_VA_BASE + FIRMWARE_GPA,
        ] {
            let err = load_edited(|d| vmsa_of(d).rip = rip).unwrap_err();
            assert!(
                matches!(err, ImageError::EntryOutsideFirmware { rip: r } if r == rip),
                "{rip:#x}: {err:?}"
            );
        }
    }

    #[test]
    fn load_rejects_a_bsp_state_the_entry_code_cannot_start_in() {
        let bad_vp = |edit: fn(&mut igvm::snp_defs::SevVmsa)| {
            let err = load_edited(|d| edit(vmsa_of(d))).unwrap_err();
            match err {
                ImageError::BadVpContext { reason } => reason,
                other => panic!("{other:?}"),
            }
        };
        // Paging on (the old long-mode launch state), real mode, long mode active, a
        // 64-bit or 16-bit code segment, no SNP.
        assert!(bad_vp(|v| v.cr0 |= 1 << 31).contains("paging off"));
        assert!(bad_vp(|v| v.cr0 &= !1).contains("paging off"));
        assert!(bad_vp(|v| v.efer |= 1 << 10).contains("paging off"));
        assert!(bad_vp(|v| v.cs.attrib = 0xA9B).contains("32-bit"));
        assert!(bad_vp(|v| v.cs.attrib = 0x9B).contains("32-bit"));
        assert!(bad_vp(|v| v.sev_features = Default::default()).contains("SNP"));
    }

    #[test]
    fn load_rejects_a_vmsa_anywhere_but_where_kvm_measures_it() {
        for at in [
            0x5000,
            SNP_VMSA_GPA - PAGE_SIZE_4K,
            0xFFFF_FFFF_F000_u64 << 4,
        ] {
            let err = load_edited(|d| {
                for d in d.iter_mut() {
                    if let IgvmDirectiveHeader::SnpVpContext { gpa, .. } = d {
                        *gpa = at;
                    }
                }
            })
            .unwrap_err();
            assert!(
                matches!(err, ImageError::BadVpContext { reason } if reason.contains("0xFFFF_FFFF_F000")),
                "{at:#x}: {err:?}"
            );
        }
    }

    #[test]
    fn load_takes_the_cpuid_page_and_refuses_other_ones() {
        let loaded = load_snp(sample_image()).unwrap();
        let cpuid: Vec<&ImagePage> = loaded
            .pages
            .iter()
            .filter(|p| p.contents == PageContents::Cpuid)
            .collect();
        assert_eq!(cpuid.len(), 1);
        assert_eq!(cpuid[0].gpa, SNP_CPUID_PAGE_GPA);
        assert_eq!(cpuid[0].contents.snp_page_type(), PageType::Cpuid);
        // Without it the entry code could not learn the C-bit.
        let err = load_edited(|d| {
            d.retain(|d| {
                !matches!(d, IgvmDirectiveHeader::PageData { gpa, .. } if *gpa == SNP_CPUID_PAGE_GPA)
            })
        })
        .unwrap_err();
        assert!(
            matches!(err, ImageError::BadVpContext { reason } if reason.contains("CPUID")),
            "{err:?}"
        );
        // Elsewhere, or with data, it is not nacre's CPUID page.
        for (at, data) in [(0x6000, Vec::new()), (SNP_CPUID_PAGE_GPA, vec![1u8; PAGE])] {
            let err = load_edited(|d| {
                for d in d.iter_mut() {
                    if let IgvmDirectiveHeader::PageData {
                        gpa,
                        data_type,
                        data: bytes,
                        ..
                    } = d
                    {
                        if *gpa == SNP_CPUID_PAGE_GPA {
                            *gpa = at;
                            *bytes = data.clone();
                            assert_eq!(*data_type, igvm_defs::IgvmPageDataType::CPUID_DATA);
                        }
                    }
                }
            })
            .unwrap_err();
            assert!(
                matches!(err, ImageError::UnsupportedPage { reason, .. } if reason.contains("CPUID")),
                "{at:#x}: {err:?}"
            );
        }
    }

    /// CRC-32 (IEEE 802.3, reflected, as the IGVM checksum uses).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
        !crc
    }

    /// Recompute the fixed header's checksum so that a corruption of the headers gets
    /// past it and reaches the parsers.
    fn reseal(image: &mut [u8]) {
        let u32_at = |image: &[u8], at: usize| {
            u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize
        };
        let (offset, size) = (u32_at(image, 8), u32_at(image, 12));
        if offset != 24 || offset + size > image.len() {
            return;
        }
        image[20..24].fill(0);
        let crc = crc32(&image[..offset + size]);
        image[20..24].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn reseal_is_the_igvm_checksum() {
        let mut image = sample_image().to_vec();
        reseal(&mut image);
        assert_eq!(image, sample_image());
    }

    /// Size of the fixed and variable headers of the sample image.
    fn sample_headers_len() -> usize {
        let image = sample_image();
        24 + u32::from_le_bytes(image[12..16].try_into().unwrap()) as usize
    }

    /// Where the sample image's file data lies: `(GPA, file offset)` of every page that
    /// has file bytes (zero pages have none), in header order, and the VMSA's file offset.
    fn sample_file_data() -> (Vec<(u64, usize)>, usize) {
        use igvm_defs::{
            IgvmVariableHeaderType as T, IGVM_VHS_PAGE_DATA, IGVM_VHS_VARIABLE_HEADER,
            IGVM_VHS_VP_CONTEXT,
        };
        use zerocopy::FromBytes;
        let image = sample_image();
        let end = sample_headers_len();
        let mut at = u32::from_le_bytes(image[8..12].try_into().unwrap()) as usize;
        let mut pages = Vec::new();
        let mut vmsa = None;
        while at < end {
            let (header, body) =
                IGVM_VHS_VARIABLE_HEADER::read_from_prefix(&image[at..end]).unwrap();
            match header.typ {
                T::IGVM_VHT_PAGE_DATA => {
                    let (page, _) = IGVM_VHS_PAGE_DATA::read_from_prefix(body).unwrap();
                    if page.file_offset != 0 {
                        pages.push((page.gpa, page.file_offset as usize));
                    }
                }
                T::IGVM_VHT_VP_CONTEXT => {
                    let (context, _) = IGVM_VHS_VP_CONTEXT::read_from_prefix(body).unwrap();
                    vmsa = Some(context.file_offset as usize);
                }
                _ => {}
            }
            at += 8 + (header.length as usize).div_ceil(8) * 8;
        }
        (pages, vmsa.unwrap())
    }

    /// The sample image's data pages other than the boot information page, as
    /// `(GPA, file offset)`.
    fn sample_content_pages() -> Vec<(u64, usize)> {
        let (mut pages, _) = sample_file_data();
        pages.retain(|&(gpa, _)| gpa != BOOT_INFO_GPA);
        pages
    }

    /// Load the sample image with the byte at `at` XORed with `flip`.
    fn load_flipped(at: usize, flip: u8) -> Result<LoadedImage, ImageError> {
        let mut image = sample_image().to_vec();
        image[at] ^= flip;
        load_snp(&image)
    }

    fn assert_digest_mismatch(result: Result<LoadedImage, ImageError>, what: &str) {
        let err = result.expect_err(what);
        assert!(
            matches!(
                err,
                ImageError::DigestMismatch {
                    platform: PlatformKind::Snp
                }
            ),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("corrupt"), "{what}: {err}");
    }

    #[test]
    fn sample_file_data_is_where_the_pages_are() {
        let image = sample_image();
        let loaded = load_snp(image).unwrap();
        let (pages, vmsa) = sample_file_data();
        // Boot information, four page tables, two firmware pages, the app, the args and
        // the file tree (its structure, /etc/group, /etc/hosts and /etc/passwd).
        let app_pages = sample_image_app_pages();
        assert_eq!(pages.len(), 1 + 4 + 2 + app_pages + 1 + 4);
        for (gpa, offset) in pages {
            let page = loaded.pages.iter().find(|p| p.gpa == gpa).unwrap();
            assert_eq!(
                &image[offset..offset + PAGE],
                page.contents.bytes(),
                "{gpa:#x}"
            );
        }
        assert_eq!(
            &image[vmsa..vmsa + PAGE],
            zerocopy::IntoBytes::as_bytes(&**loaded.vmsa.as_ref().unwrap())
        );
    }

    fn sample_image_app_pages() -> usize {
        Sample::new().app.len().div_ceil(PAGE)
    }

    #[test]
    fn load_detects_corrupt_page_data() {
        let pages = sample_content_pages();
        assert!(pages.iter().any(|&(gpa, _)| gpa == FIRMWARE_GPA));
        assert!(pages.iter().any(|&(gpa, _)| gpa == INITIAL_PT_GPA));
        assert!(pages.iter().any(|&(gpa, _)| gpa == APP_IMAGE_GPA));
        for (gpa, offset) in pages {
            for byte in (0..PAGE).step_by(251).chain([1, PAGE - 1]) {
                for flip in [0x01, 0x80, 0xff] {
                    assert_digest_mismatch(
                        load_flipped(offset + byte, flip),
                        &format!("page {gpa:#x} byte {byte:#x} ^ {flip:#x}"),
                    );
                }
            }
        }
    }

    #[test]
    fn load_detects_corrupt_vmsa() {
        let (_, vmsa) = sample_file_data();
        // Bytes the VMSA checks do not look at (a segment base, the padding).
        for byte in [0x08, 0x100, 0x800, PAGE - 1] {
            assert_digest_mismatch(
                load_flipped(vmsa + byte, 0x01),
                &format!("VMSA byte {byte:#x}"),
            );
        }
        for byte in (0..PAGE).step_by(61) {
            assert!(
                load_flipped(vmsa + byte, 0x04).is_err(),
                "VMSA byte {byte:#x}"
            );
        }
    }

    #[test]
    fn load_detects_a_wrong_digest() {
        // The digest itself is covered by the boot information page, which the digest
        // does not include: a changed digest no longer matches the content.
        let (pages, _) = sample_file_data();
        let &(_, boot) = pages
            .iter()
            .find(|&&(gpa, _)| gpa == BOOT_INFO_GPA)
            .unwrap();
        let digest_at = core::mem::offset_of!(BootInfo, image_digest);
        for byte in 0..32 {
            assert_digest_mismatch(
                load_flipped(boot + digest_at + byte, 0x01),
                &format!("digest byte {byte}"),
            );
        }
    }

    #[test]
    fn digest_changes_with_the_content() {
        let sample = Sample::new();
        let digest = |args: Vec<Vec<u8>>| {
            let mut input = sample.input();
            input.args = args;
            load_snp(&build_image(&input).unwrap())
                .unwrap()
                .boot_info
                .image_digest
        };
        let a = digest(vec![b"app".to_vec()]);
        assert_eq!(a, digest(vec![b"app".to_vec()]));
        assert_ne!(a, digest(vec![b"apq".to_vec()]));
    }

    /// File offset of the body of the sample image's (one, SEV-SNP) guest policy header.
    fn sample_policy_at() -> usize {
        use igvm_defs::{IgvmVariableHeaderType as T, IGVM_VHS_VARIABLE_HEADER};
        use zerocopy::FromBytes;
        let image = sample_image();
        let end = sample_headers_len();
        let mut at = u32::from_le_bytes(image[8..12].try_into().unwrap()) as usize;
        let mut found = Vec::new();
        while at < end {
            let (header, _) = IGVM_VHS_VARIABLE_HEADER::read_from_prefix(&image[at..end]).unwrap();
            if header.typ == T::IGVM_VHT_GUEST_POLICY {
                assert_eq!(header.length, 16);
                found.push(at + 8);
            }
            at += 8 + (header.length as usize).div_ceil(8) * 8;
        }
        assert_eq!(found.len(), 1);
        found[0]
    }

    /// The sample image with its guest policy header's body set to `policy`, `mask` and
    /// `reserved`, the checksum recomputed.
    fn sample_with_policy(policy: u64, mask: u32, reserved: u32) -> Vec<u8> {
        let mut image = sample_image().to_vec();
        let at = sample_policy_at();
        image[at..at + 8].copy_from_slice(&policy.to_le_bytes());
        image[at + 8..at + 12].copy_from_slice(&mask.to_le_bytes());
        image[at + 12..at + 16].copy_from_slice(&reserved.to_le_bytes());
        reseal(&mut image);
        image
    }

    #[test]
    fn the_policy_header_is_where_the_loader_reads_it() {
        let at = sample_policy_at();
        let image = sample_image();
        assert_eq!(image[at..at + 8], DEFAULT_SNP_POLICY.to_le_bytes());
        assert_eq!(sample_with_policy(DEFAULT_SNP_POLICY, SNP_MASK, 0), image);
        let debug = load_snp(&sample_with_policy(DEBUG_SNP_POLICY, SNP_MASK, 0)).unwrap();
        assert!(debug.debug());
        assert_eq!(debug.guest_policy, 0xB_0000);
        // The policy is outside the measurement and the image digest.
        let plain = load_snp(image).unwrap();
        assert!(!plain.debug());
        assert_eq!(plain.measurement(), debug.measurement());
    }

    #[test]
    fn corrupt_policy_bytes_are_refused() {
        let load = |policy, mask, reserved| load_snp(&sample_with_policy(policy, mask, reserved));
        let err = load(DEFAULT_SNP_POLICY | 1 << 63, SNP_MASK, 0).unwrap_err();
        assert!(
            matches!(err, ImageError::GuestPolicyUnknownBits { bits, .. } if bits == 1 << 63),
            "{err:?}"
        );
        let err = load(0x1_0000, SNP_MASK, 0).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::GuestPolicyReservedBitClear { policy: 0x1_0000 }
            ),
            "{err:?}"
        );
        let err = load(DEFAULT_SNP_POLICY, TDX_MASK, 0).unwrap_err();
        assert!(
            matches!(err, ImageError::GuestPolicyMask { mask: TDX_MASK }),
            "{err:?}"
        );
        // The header's reserved field: the `igvm` parser refuses it.
        let err = load(DEFAULT_SNP_POLICY, SNP_MASK, 1).unwrap_err();
        assert!(matches!(err, ImageError::Parse(_)), "{err:?}");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    /// A variable header of a type the prescan lets through, with an arbitrary body.
    fn variable_header() -> impl Strategy<Value = Vec<u8>> {
        use igvm_defs::IgvmVariableHeaderType as T;
        let kinds: [(T, usize); 7] = [
            (T::IGVM_VHT_SUPPORTED_PLATFORM, 16),
            (T::IGVM_VHT_GUEST_POLICY, 16),
            (T::IGVM_VHT_PARAMETER_AREA, 16),
            (T::IGVM_VHT_PAGE_DATA, 24),
            (T::IGVM_VHT_PARAMETER_INSERT, 16),
            (T::IGVM_VHT_MEMORY_MAP, 8),
            (T::IGVM_VHT_VP_CONTEXT, 20),
        ];
        (0..kinds.len(), proptest::collection::vec(any::<u8>(), 24)).prop_map(move |(k, body)| {
            let (typ, len) = kinds[k];
            let mut out = Vec::new();
            out.extend_from_slice(&typ.0.to_le_bytes());
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&body[..len]);
            out.resize(8 + len.div_ceil(8) * 8, 0);
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = load_snp(&bytes);
        }

        #[test]
        fn single_byte_corruption_never_panics(index in any::<prop::sample::Index>(), value in any::<u8>()) {
            let mut image = sample_image().to_vec();
            let at = index.index(image.len());
            image[at] = value;
            let _ = load_snp(&image);
        }

        #[test]
        fn page_data_corruption_is_detected(
            page in any::<prop::sample::Index>(),
            byte in 0..PAGE,
            flip in 1..=u8::MAX,
        ) {
            let pages = sample_content_pages();
            let (gpa, offset) = pages[page.index(pages.len())];
            let err = load_flipped(offset + byte, flip).unwrap_err();
            prop_assert!(matches!(err, ImageError::DigestMismatch { platform: PlatformKind::Snp }), "{gpa:#x}+{byte:#x}: {err:?}");
            prop_assert!(err.to_string().contains("corrupt"), "{err}");
        }

        #[test]
        fn policy_header_corruption_never_panics(
            policy in any::<u64>(),
            mask in prop_oneof![Just(SNP_MASK), any::<u32>()],
            reserved in prop_oneof![Just(0u32), any::<u32>()],
        ) {
            let result = load_snp(&sample_with_policy(policy, mask, reserved));
            if let Ok(loaded) = result {
                prop_assert_eq!(reserved, 0);
                if mask == 0 {
                    // The `igvm` parser drops a header on mask 0 (it applies to no
                    // platform), so the image has no policy.
                    prop_assert_eq!(loaded.guest_policy, DEFAULT_SNP_POLICY);
                } else {
                    prop_assert_eq!(mask, SNP_MASK);
                    prop_assert_eq!(loaded.guest_policy, policy);
                }
            }
        }

        #[test]
        fn truncation_never_panics(len in 0..sample_image().len()) {
            prop_assert!(load_snp(&sample_image()[..len]).is_err());
        }

        #[test]
        fn resealed_header_corruption_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut image = sample_image().to_vec();
            let headers = sample_headers_len();
            for (index, value) in edits {
                image[index.index(headers)] = value;
            }
            reseal(&mut image);
            let _ = load_snp(&image);
        }

        #[test]
        fn random_valid_looking_headers_never_panic(
            headers in proptest::collection::vec(variable_header(), 0..8),
            data in proptest::collection::vec(any::<u8>(), 1..8192),
        ) {
            let variable: Vec<u8> = headers.concat();
            let total = 24 + variable.len() + data.len();
            let mut image = Vec::with_capacity(total);
            image.extend_from_slice(b"IGVM");
            image.extend_from_slice(&1u32.to_le_bytes());
            image.extend_from_slice(&24u32.to_le_bytes());
            image.extend_from_slice(&(variable.len() as u32).to_le_bytes());
            image.extend_from_slice(&(total as u32).to_le_bytes());
            image.extend_from_slice(&0u32.to_le_bytes());
            image.extend_from_slice(&variable);
            image.extend_from_slice(&data);
            reseal(&mut image);
            let _ = load_snp(&image);
        }
    }
}
