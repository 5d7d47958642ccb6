//! `nacre package`: firmware + app + arguments + file tree -> one IGVM file.
//!
//! Directive order (it is the measurement order, so it never changes silently). Each
//! directive's compatibility mask is in brackets: `SNP` is [`SNP_MASK`], `TDX` is
//! [`TDX_MASK`], `both` is their union (or just `SNP` when the firmware has no TDX
//! reset page, and then no `TDX` directive is written):
//!
//! 1. the boot information page at `BOOT_INFO_GPA` \[SNP\];
//! 2. the boot information page at `BOOT_INFO_GPA` \[TDX\];
//! 3. the secrets page at `SECRETS_PAGE_GPA` (SECRETS) \[SNP\];
//! 4. the CPUID page at `SNP_CPUID_PAGE_GPA` (CPUID_DATA, no file data: the host fills
//!    it) \[SNP\];
//! 5. the initial page tables at `INITIAL_PT_GPA` (PML4, PDPT, PD, reset PD, without an
//!    encryption bit: [`crate::pagetable`]) \[both\];
//! 6. the firmware, page by page in ascending GPA: file bytes as data pages, pages that
//!    hold only bss as zero pages \[both\];
//! 7. the app ELF file verbatim from `APP_IMAGE_GPA`, then the argument blob from the
//!    next page, then the file tree (`nacre_shared_abi::filetree`) from the page after
//!    the arguments, each page of only zeros as a zero page \[both\];
//! 8. the TDX reset page at `TDX_RESET_PAGE_GPA`, the firmware's reset page segment
//!    zero-padded to 4 KiB \[TDX\];
//! 9. the host parameter page (memory map) at `HOST_PARAM_GPA`, unmeasured \[both\];
//! 10. the BSP's VMSA, as the VP context at `SNP_VMSA_GPA` (where KVM and QEMU put it)
//!     \[SNP\].
//!
//! So SEV-SNP sees 1, 3, 4, 5, 6, 7, 9, 10, exactly the SEV-SNP-only image of the same
//! inputs, and TDX sees 2, 5, 6, 7, 8, 9. Each boot information page carries its platform's
//! content digest ([`super::digest`]) over everything else that platform measures, so
//! both are written last, once the other pages and the VMSA are known.
//!
//! Before the directives, after the platform headers, come the guest policy headers
//! (`loader/src/image/policy.rs`): the SEV-SNP one \[SNP\], then the TDX one \[TDX\]
//! when the image serves TDX. They are not directives and not measured.

use std::collections::BTreeMap;

use igvm::snp_defs::SevVmsa;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_SEV_SNP_PLATFORM_VERSION,
    IGVM_TDX_PLATFORM_VERSION, IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT,
    IGVM_VHS_SUPPORTED_PLATFORM,
};
use nacre_shared_abi::boot::{
    ArgsBlob, BootInfo, PlatformKind, BOOT_INFO_MAGIC, BOOT_INFO_VERSION, MAX_ARG_BYTES,
    MAX_ARG_STRINGS,
};
use nacre_shared_abi::filetree::FileTree;
use nacre_shared_abi::layout::{
    align_down, align_up, APP_IMAGE_GPA, BOOT_INFO_GPA, HOST_PARAM_GPA, INITIAL_PT_GPA,
    INITIAL_PT_PAGES, KERNEL_VA_BASE, MAX_GUEST_MEMORY, MIN_GUEST_MEMORY, PAGE_SIZE_2M,
    PAGE_SIZE_4K, SECRETS_PAGE_GPA, SNP_CPUID_PAGE_GPA, SNP_VMSA_GPA, TDX_RESET_PAGE_GPA,
};
use zerocopy::IntoBytes;

use super::digest::{ImageDigest, DIGEST_LEN};
use super::policy::policy_headers;
use super::{
    ImageError, MIN_MEMORY_HEADROOM, PARAMETER_AREA_INDEX, PARAMETER_AREA_SIZE, SNP_MASK, TDX_MASK,
    TDX_SHARED_GPA_BOUNDARY,
};
use crate::elf::{check_app_elf, check_firmware_elf, FirmwareImage, FirmwareSegment};
use crate::pagetable::InitialPageTables;
use crate::vmsa::initial_vmsa;

const PAGE: usize = PAGE_SIZE_4K as usize;

/// Everything `nacre package` puts into an image.
#[derive(Debug, Clone)]
pub struct PackageInput<'a> {
    /// The firmware ELF (see [`crate::elf`]). With a TDX reset page segment the image
    /// serves TDX as well as SEV-SNP.
    pub firmware_elf: &'a [u8],
    /// The app ELF, a static x86-64 Linux executable.
    pub app_elf: &'a [u8],
    /// The app's arguments, `argv[0]` first; none may contain NUL.
    pub args: Vec<Vec<u8>>,
    /// The app's environment, `KEY=VALUE` strings without NUL.
    pub env: Vec<Vec<u8>>,
    /// Boot options for the firmware (`nacre_shared_abi::boot::BOOT_FLAG_*`), measured
    /// with the boot information.
    pub flags: u32,
    /// The read-only file tree for the app, encoded
    /// ([`crate::filetree::FileTreeBuilder::build`]); its header is checked.
    pub file_tree: &'a [u8],
    /// Whether the host may debug the guest: the guest policy sets SEV-SNP DEBUG and
    /// TDX DEBUG_ALLOWED ([`super::snp_policy`], [`super::tdx_policy`]). Not measured.
    pub debug: bool,
}

/// Build one IGVM file. Deterministic: the same input gives the same bytes.
pub fn build_image(input: &PackageInput) -> Result<Vec<u8>, ImageError> {
    let file = image_file(input)?;
    let mut out = Vec::new();
    file.serialize(&mut out).map_err(ImageError::Build)?;
    Ok(out)
}

/// The in-memory IGVM file [`build_image`] serializes.
pub(super) fn image_file(input: &PackageInput) -> Result<IgvmFile, ImageError> {
    let firmware = check_firmware_elf(input.firmware_elf).map_err(ImageError::Firmware)?;
    check_app_elf(input.app_elf).map_err(ImageError::App)?;
    let args = encode_args(&input.args, &input.env)?;
    check_file_tree(input.file_tree)?;
    let mut snp_info = boot_info(
        &firmware,
        input.app_elf.len(),
        args.len(),
        input.file_tree.len(),
        input.flags,
    )?;
    let firmware_pages = firmware_pages(&firmware);
    let tdx_reset = firmware.tdx_reset.as_ref().map(reset_page);
    check_file_size(&snp_info, &firmware_pages, tdx_reset.is_some())?;
    let both = if tdx_reset.is_some() {
        SNP_MASK | TDX_MASK
    } else {
        SNP_MASK
    };

    let mut directives = Vec::new();
    // Placeholders until the digests over the rest of the image are known.
    directives.push(page_data(BOOT_INFO_GPA, SNP_MASK, Vec::new()));
    if tdx_reset.is_some() {
        directives.push(page_data(BOOT_INFO_GPA, TDX_MASK, Vec::new()));
    }

    // SEV-SNP: the secrets page, which the security processor fills with the VMPCKs
    // at launch (measured as SECRETS: its contents are not part of the digest).
    directives.push(IgvmDirectiveHeader::PageData {
        gpa: SECRETS_PAGE_GPA,
        compatibility_mask: SNP_MASK,
        flags: IgvmPageDataFlags::new(),
        data_type: IgvmPageDataType::SECRETS,
        data: Vec::new(),
    });

    // SEV-SNP: the CPUID page, which the host fills with the CPUID values the guest
    // may use and the security processor checks (measured as CPUID: its contents are
    // not part of the digest). The firmware reads the C-bit position from it.
    directives.push(IgvmDirectiveHeader::PageData {
        gpa: SNP_CPUID_PAGE_GPA,
        compatibility_mask: SNP_MASK,
        flags: IgvmPageDataFlags::new(),
        data_type: IgvmPageDataType::CPUID_DATA,
        data: Vec::new(),
    });

    let tables = InitialPageTables::new().to_pages();
    for (gpa, table) in (INITIAL_PT_GPA..).step_by(PAGE).zip(&tables) {
        directives.push(page_data(gpa, both, table.to_vec()));
    }

    for (gpa, page) in firmware_pages {
        let data = page.map(|bytes| bytes.to_vec()).unwrap_or_default();
        directives.push(page_data(gpa, both, data));
    }

    push_bytes(&mut directives, both, snp_info.app_gpa, input.app_elf);
    push_bytes(&mut directives, both, snp_info.args_gpa, &args);
    push_bytes(&mut directives, both, snp_info.fs_gpa, input.file_tree);

    if let Some(page) = &tdx_reset {
        directives.push(page_data(TDX_RESET_PAGE_GPA, TDX_MASK, page.to_vec()));
    }

    directives.push(IgvmDirectiveHeader::ParameterArea {
        number_of_bytes: PARAMETER_AREA_SIZE,
        parameter_area_index: PARAMETER_AREA_INDEX,
        initial_data: Vec::new(),
    });
    directives.push(IgvmDirectiveHeader::MemoryMap(IGVM_VHS_PARAMETER {
        parameter_area_index: PARAMETER_AREA_INDEX,
        byte_offset: 0,
    }));
    // The `igvm` crate lets a parameter area be inserted once, so one insert serves both
    // platforms.
    directives.push(IgvmDirectiveHeader::ParameterInsert(
        IGVM_VHS_PARAMETER_INSERT {
            gpa: HOST_PARAM_GPA,
            compatibility_mask: both,
            parameter_area_index: PARAMETER_AREA_INDEX,
        },
    ));

    // `check_firmware_elf` placed the entry inside the firmware region's kernel window.
    let vmsa = initial_vmsa(firmware.entry - KERNEL_VA_BASE);
    let mut platforms = vec![snp_platform()];
    if tdx_reset.is_some() {
        let tdx_info = BootInfo {
            platform: PlatformKind::Tdx as u32,
            image_digest: content_digest(&directives, TDX_MASK, None),
            ..snp_info
        };
        directives[1] = page_data(BOOT_INFO_GPA, TDX_MASK, boot_page(&tdx_info));
        platforms.push(tdx_platform());
    }
    snp_info.image_digest = content_digest(&directives, SNP_MASK, Some(&vmsa));
    directives[0] = page_data(BOOT_INFO_GPA, SNP_MASK, boot_page(&snp_info));

    directives.push(IgvmDirectiveHeader::SnpVpContext {
        gpa: SNP_VMSA_GPA,
        compatibility_mask: SNP_MASK,
        vp_index: 0,
        vmsa,
    });

    let policies = policy_headers(input.debug, tdx_reset.is_some());
    IgvmFile::new(IgvmRevision::V1, platforms, policies, directives).map_err(ImageError::Build)
}

/// The SEV-SNP platform header, on compatibility mask [`SNP_MASK`].
pub(super) fn snp_platform() -> IgvmPlatformHeader {
    IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: SNP_MASK,
        highest_vtl: 0,
        platform_type: IgvmPlatformType::SEV_SNP,
        platform_version: IGVM_SEV_SNP_PLATFORM_VERSION,
        shared_gpa_boundary: 0,
    })
}

/// The TDX platform header, on compatibility mask [`TDX_MASK`].
pub(super) fn tdx_platform() -> IgvmPlatformHeader {
    IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: TDX_MASK,
        highest_vtl: 0,
        platform_type: IgvmPlatformType::TDX,
        platform_version: IGVM_TDX_PLATFORM_VERSION,
        shared_gpa_boundary: TDX_SHARED_GPA_BOUNDARY,
    })
}

/// The boot information as its 4 KiB page.
fn boot_page(info: &BootInfo) -> Vec<u8> {
    let mut page = vec![0u8; PAGE];
    page[..core::mem::size_of::<BootInfo>()].copy_from_slice(info.as_bytes());
    page
}

/// The reset page: the segment's file bytes from the page start, zero-padded.
fn reset_page(segment: &FirmwareSegment) -> Box<[u8; PAGE]> {
    // `check_firmware_elf` placed it at `TDX_RESET_PAGE_GPA`, at most one page long.
    let mut page = Box::new([0u8; PAGE]);
    let len = segment.file_bytes.len().min(PAGE);
    page[..len].copy_from_slice(&segment.file_bytes[..len]);
    page
}

/// The [`super::digest`] of the measured pages among `directives` that apply to the
/// platform on `mask` (in their order) and, on SEV-SNP, the BSP's `vmsa`.
fn content_digest(
    directives: &[IgvmDirectiveHeader],
    mask: u32,
    vmsa: Option<&SevVmsa>,
) -> [u8; DIGEST_LEN] {
    let mut digest = ImageDigest::new();
    for directive in directives {
        if let IgvmDirectiveHeader::PageData {
            gpa,
            compatibility_mask,
            data,
            ..
        } = directive
        {
            if compatibility_mask & mask != 0 {
                digest.page(*gpa, data);
            }
        }
    }
    digest.finish(vmsa)
}

/// A measured normal page for the platforms on `mask`; empty `data` is a zero page.
pub(super) fn page_data(gpa: u64, mask: u32, data: Vec<u8>) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: mask,
        flags: IgvmPageDataFlags::new(),
        data_type: IgvmPageDataType::NORMAL,
        data,
    }
}

/// Pages holding `bytes` from `gpa` (page-aligned), the last one zero-padded: a data
/// page for each, except that a page of only zeros is a zero page (no file data). Both
/// are measured as the same 4096 bytes on every platform and in the image digest
/// (module [`crate::image`], "Launch measurement"), so this changes no measurement; it
/// keeps a run of zeros (a large zero-filled file) from costing a page buffer per page
/// here and a lookup of that buffer in the `igvm` serializer's table of the data it
/// wrote already.
fn push_bytes(directives: &mut Vec<IgvmDirectiveHeader>, mask: u32, gpa: u64, bytes: &[u8]) {
    for (page_gpa, chunk) in (gpa..).step_by(PAGE).zip(bytes.chunks(PAGE)) {
        let data = if chunk.iter().all(|&b| b == 0) {
            Vec::new()
        } else {
            let mut data = chunk.to_vec();
            data.resize(PAGE, 0);
            data
        };
        directives.push(page_data(page_gpa, mask, data));
    }
}

/// Check the strings and encode the [`ArgsBlob`].
fn encode_args(args: &[Vec<u8>], env: &[Vec<u8>]) -> Result<Vec<u8>, ImageError> {
    if args.is_empty() {
        return Err(ImageError::NoProgramName);
    }
    if let Some(index) = args.iter().position(|arg| arg.contains(&0)) {
        return Err(ImageError::NulInArgument { index });
    }
    if let Some(index) = env.iter().position(|var| var.contains(&0)) {
        return Err(ImageError::NulInEnvironment { index });
    }
    if let Some(index) = env.iter().position(|var| !var.contains(&b'=')) {
        return Err(ImageError::EnvironmentWithoutEquals { index });
    }
    let count = args.len() + env.len();
    if count > MAX_ARG_STRINGS {
        return Err(ImageError::TooManyArgStrings { count });
    }
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let env: Vec<&[u8]> = env.iter().map(Vec::as_slice).collect();
    let len = ArgsBlob::encoded_len(args.iter().chain(&env).copied());
    if len - 8 > MAX_ARG_BYTES {
        return Err(ImageError::ArgStringsTooLarge { bytes: len - 8 });
    }
    let mut blob = vec![0u8; len];
    ArgsBlob::encode(&args, &env, &mut blob).map_err(|_| ImageError::TooLarge {
        what: "the arguments and environment strings cannot be encoded",
    })?;
    Ok(blob)
}

/// The file tree must be exactly one blob whose header checks out (the firmware checks
/// the rest as it reads it).
fn check_file_tree(bytes: &[u8]) -> Result<(), ImageError> {
    let tree = FileTree::parse(bytes).map_err(ImageError::InvalidFileTree)?;
    if tree.bytes().len() != bytes.len() {
        return Err(ImageError::FileTreeTrailingBytes);
    }
    Ok(())
}

/// Place the app, the arguments and the file tree after the firmware and size guest
/// RAM: the SEV-SNP boot information, of which the TDX one is a copy with another
/// platform.
fn boot_info(
    firmware: &FirmwareImage,
    app_size: usize,
    args_size: usize,
    fs_size: usize,
    flags: u32,
) -> Result<BootInfo, ImageError> {
    let too_large = ImageError::TooLarge {
        what: "the app, its arguments and its files do not fit in guest memory",
    };
    let limit = MAX_GUEST_MEMORY;
    let (app_size, args_size, fs_size) = (app_size as u64, args_size as u64, fs_size as u64);
    if app_size > limit || args_size > limit || fs_size > limit {
        return Err(too_large);
    }
    // The sizes are below 2^46, so none of this overflows.
    let args_gpa = align_up(APP_IMAGE_GPA + app_size, PAGE_SIZE_4K);
    let fs_gpa = align_up(args_gpa + args_size, PAGE_SIZE_4K);
    let image_end = align_up(fs_gpa + fs_size, PAGE_SIZE_4K);
    let min_memory = MIN_GUEST_MEMORY.max(align_up(image_end, PAGE_SIZE_2M) + MIN_MEMORY_HEADROOM);
    if min_memory > limit {
        return Err(too_large);
    }
    let info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: BOOT_INFO_VERSION,
        platform: PlatformKind::Snp as u32,
        c_bit: 0,
        flags,
        firmware_end: firmware.end(),
        app_gpa: APP_IMAGE_GPA,
        app_size,
        args_gpa,
        args_size,
        image_end,
        min_memory,
        // Filled in by `image_file` once the rest of the image is known.
        image_digest: [0; DIGEST_LEN],
        fs_gpa,
        fs_size,
    };
    info.check().map_err(ImageError::InvalidBootInfo)?;
    Ok(info)
}

/// A firmware page: `Some` holds file bytes, `None` is bss only (a zero page).
type FirmwarePage = Option<Box<[u8; PAGE]>>;

/// Every page the firmware's segments touch, in ascending GPA. Segments sharing a page
/// have their bytes merged into it.
fn firmware_pages(firmware: &FirmwareImage) -> BTreeMap<u64, FirmwarePage> {
    let mut pages: BTreeMap<u64, FirmwarePage> = BTreeMap::new();
    for seg in &firmware.segments {
        let mut gpa = seg.gpa;
        let mut rest = seg.file_bytes;
        while !rest.is_empty() {
            let page_gpa = align_down(gpa, PAGE_SIZE_4K);
            let offset = (gpa - page_gpa) as usize;
            let len = rest.len().min(PAGE - offset);
            let page = pages
                .entry(page_gpa)
                .or_default()
                .get_or_insert_with(|| Box::new([0; PAGE]));
            page[offset..offset + len].copy_from_slice(&rest[..len]);
            gpa += len as u64;
            rest = &rest[len..];
        }
        let first = align_down(seg.gpa, PAGE_SIZE_4K);
        let end = align_up(seg.gpa + seg.mem_size, PAGE_SIZE_4K);
        for page_gpa in (first..end).step_by(PAGE) {
            pages.entry(page_gpa).or_default();
        }
    }
    pages
}

/// The `igvm` crate stores file offsets as `u32`: refuse an image whose file would not
/// fit rather than let the serializer fail.
fn check_file_size(
    boot_info: &BootInfo,
    firmware_pages: &BTreeMap<u64, FirmwarePage>,
    tdx: bool,
) -> Result<(), ImageError> {
    // TDX: boot info, reset page.
    let tdx_pages = if tdx { 2 } else { 0 };
    // Boot info, page tables, firmware data, app, args and file tree, VMSA.
    let data_pages = 1
        + INITIAL_PT_PAGES
        + firmware_pages
            .values()
            .filter(|page| page.is_some())
            .count() as u64
        + (boot_info.image_end - boot_info.app_gpa) / PAGE_SIZE_4K
        + 1
        + tdx_pages;
    let headers = (data_pages + firmware_pages.len() as u64 + 11) * 64;
    if data_pages * PAGE_SIZE_4K + headers > u64::from(u32::MAX) {
        return Err(ImageError::TooLarge {
            what: "the IGVM file would be larger than 4 GiB",
        });
    }
    Ok(())
}
