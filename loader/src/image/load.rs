//! Parse and check an IGVM file for the host: the measured pages in directive order, the
//! boot handoff, the parameter page and the BSP's initial state.
//!
//! The file is untrusted input (it may come from anywhere), so nothing here panics: a
//! first pass over the fixed and variable headers ([`prescan`]) accepts only the header
//! types nacre images use and checks every file offset before the `igvm` crate's parser
//! sees the bytes (that parser does unchecked `u32` arithmetic on some offsets). Then
//! every directive is checked against the memory layout and the [`BootInfo`], and last
//! the content of the pages and the VMSA against the boot information's digest
//! ([`super::digest`]).

use std::collections::BTreeMap;

use igvm::snp_defs::SevVmsa;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IgvmVariableHeaderType,
    IGVM_FIXED_HEADER, IGVM_FORMAT_VERSION_1, IGVM_MAGIC_VALUE, IGVM_VHS_PAGE_DATA,
    IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_AREA, IGVM_VHS_PARAMETER_INSERT,
    IGVM_VHS_SUPPORTED_PLATFORM, IGVM_VHS_VARIABLE_HEADER, IGVM_VHS_VP_CONTEXT,
};
use nacre_shared_abi::boot::{BootInfo, PlatformKind};
use nacre_shared_abi::layout::{
    align_down, BOOT_INFO_GPA, FIRMWARE_GPA, FIRMWARE_GPA_END, GUEST_MEMORY_ALIGN, KERNEL_VA_BASE,
    MAX_GUEST_MEMORY, MIN_GUEST_MEMORY, NULL_GUARD_END, PAGE_SIZE_4K,
};
use zerocopy::FromBytes;

use super::digest::ImageDigest;
use super::{ImageError, PARAMETER_AREA_SIZE};

const PAGE: usize = PAGE_SIZE_4K as usize;

/// The contents of one measured page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageContents {
    /// A measured normal page with these bytes.
    Data(Box<[u8; PAGE]>),
    /// A measured page of zeros.
    Zero,
}

impl PageContents {
    /// The page's bytes.
    pub fn bytes(&self) -> &[u8; PAGE] {
        const ZERO: [u8; PAGE] = [0; PAGE];
        match self {
            Self::Data(bytes) => bytes,
            Self::Zero => &ZERO,
        }
    }
}

/// One 4 KiB measured page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePage {
    /// Its GPA: 4 KiB aligned, without the encryption bit.
    pub gpa: u64,
    /// What the page holds.
    pub contents: PageContents,
}

/// A checked image, ready for the host to replay into a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The platform the image's [`BootInfo`] and directives are for.
    pub platform: PlatformKind,
    /// The measured boot handoff, checked with [`BootInfo::check`].
    pub boot_info: BootInfo,
    /// Every measured page, in directive (measurement) order, 4 KiB each, GPAs
    /// 4 KiB-aligned, in `NULL_GUARD_END..min_memory` and pairwise distinct.
    pub pages: Vec<ImagePage>,
    /// Where the host must insert the parameter page holding the memory map
    /// ([`nacre_shared_abi::boot::MemoryMapEntry`] array).
    pub param_gpa: u64,
    /// The BSP's initial state.
    pub vmsa: Box<SevVmsa>,
    /// Smallest guest RAM size the image boots with (`boot_info.min_memory`).
    pub min_memory: u64,
}

/// Parse and fully check an IGVM file produced by [`super::build_image`] (or any IGVM
/// file of the same shape). Never panics on bad input.
pub fn load_image(bytes: &[u8]) -> Result<LoadedImage, ImageError> {
    prescan(bytes)?;
    let file = IgvmFile::new_from_binary(bytes, None).map_err(ImageError::Parse)?;
    let snp_mask = snp_mask(file.platforms())?;

    let mut pages: Vec<ImagePage> = Vec::new();
    // GPA -> index into `pages`.
    let mut page_index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut parameter_area: Option<u32> = None;
    let mut memory_map = false;
    let mut param_gpa: Option<u64> = None;
    let mut vp_context: Option<(u64, Box<SevVmsa>)> = None;

    for (index, directive) in file.directives().iter().enumerate() {
        match directive {
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                flags,
                data_type,
                data,
            } => {
                check_mask(index, *compatibility_mask, snp_mask)?;
                let gpa = *gpa;
                if *flags != IgvmPageDataFlags::new() {
                    return Err(ImageError::UnsupportedPage {
                        gpa,
                        reason: "a 2 MiB, unmeasured or shared page",
                    });
                }
                if *data_type != IgvmPageDataType::NORMAL {
                    return Err(ImageError::UnsupportedPage {
                        gpa,
                        reason: "a secrets or CPUID page",
                    });
                }
                check_page_gpa(gpa, MAX_GUEST_MEMORY)?;
                if page_index.insert(gpa, pages.len()).is_some() {
                    return Err(ImageError::OverlappingPage { gpa });
                }
                let contents = if data.is_empty() {
                    PageContents::Zero
                } else {
                    let mut page = Box::new([0u8; PAGE]);
                    let len = data.len().min(PAGE);
                    page[..len].copy_from_slice(&data[..len]);
                    PageContents::Data(page)
                };
                pages.push(ImagePage { gpa, contents });
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                if parameter_area.is_some() {
                    return Err(ImageError::BadParameterArea {
                        reason: "the file declares more than one parameter area",
                    });
                }
                if *number_of_bytes != PARAMETER_AREA_SIZE {
                    return Err(ImageError::BadParameterArea {
                        reason: "the parameter area is not exactly one 4 KiB page",
                    });
                }
                if !initial_data.is_empty() {
                    return Err(ImageError::BadParameterArea {
                        reason: "the parameter area has initial contents",
                    });
                }
                parameter_area = Some(*parameter_area_index);
            }
            IgvmDirectiveHeader::MemoryMap(IGVM_VHS_PARAMETER {
                parameter_area_index,
                byte_offset,
            }) => {
                if memory_map || parameter_area != Some(*parameter_area_index) {
                    return Err(ImageError::BadParameterArea {
                        reason: "the memory map does not go into the one parameter area",
                    });
                }
                if *byte_offset != 0 {
                    return Err(ImageError::BadParameterArea {
                        reason: "the memory map does not start the parameter area",
                    });
                }
                memory_map = true;
            }
            IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
                gpa,
                compatibility_mask,
                parameter_area_index,
            }) => {
                check_mask(index, *compatibility_mask, snp_mask)?;
                if !memory_map
                    || param_gpa.is_some()
                    || parameter_area != Some(*parameter_area_index)
                {
                    return Err(ImageError::BadParameterArea {
                        reason: "the inserted parameter area is not the one holding the memory map",
                    });
                }
                check_page_gpa(*gpa, MAX_GUEST_MEMORY)?;
                param_gpa = Some(*gpa);
            }
            IgvmDirectiveHeader::SnpVpContext {
                gpa,
                compatibility_mask,
                vp_index,
                vmsa,
            } => {
                check_mask(index, *compatibility_mask, snp_mask)?;
                if vp_context.is_some() {
                    return Err(ImageError::BadVpContext {
                        reason: "the file has more than one VP context",
                    });
                }
                if *vp_index != 0 {
                    return Err(ImageError::BadVpContext {
                        reason: "the VP context is not for the BSP (VP index 0)",
                    });
                }
                check_page_gpa(*gpa, MAX_GUEST_MEMORY)?;
                vp_context = Some((*gpa, vmsa.clone()));
            }
            other => {
                return Err(ImageError::UnexpectedDirective {
                    index,
                    kind: directive_kind(other),
                })
            }
        }
    }

    let Some(param_gpa) = param_gpa else {
        return Err(ImageError::MissingParameterArea);
    };
    let (vmsa_gpa, vmsa) = vp_context.ok_or(ImageError::MissingVpContext)?;
    if page_index.contains_key(&param_gpa) {
        return Err(ImageError::OverlappingPage { gpa: param_gpa });
    }
    if vmsa_gpa == param_gpa || page_index.contains_key(&vmsa_gpa) {
        return Err(ImageError::OverlappingPage { gpa: vmsa_gpa });
    }

    let boot_info = read_boot_info(&pages, &page_index)?;
    let min_memory = boot_info.min_memory;
    for gpa in page_index.keys().chain([&param_gpa, &vmsa_gpa]) {
        check_page_gpa(*gpa, min_memory)?;
    }
    check_measured(&page_index, boot_info.app_gpa, boot_info.image_end)?;
    check_vmsa(&vmsa, &boot_info, &pages, &page_index)?;
    check_digest(&boot_info, &pages, &vmsa)?;

    Ok(LoadedImage {
        platform: PlatformKind::Snp,
        boot_info,
        pages,
        param_gpa,
        vmsa,
        min_memory,
    })
}

/// The compatibility mask of the SEV-SNP platform, the only platform this loader knows.
fn snp_mask(platforms: &[IgvmPlatformHeader]) -> Result<u32, ImageError> {
    let mut snp = None;
    for IgvmPlatformHeader::SupportedPlatform(platform) in platforms {
        if platform.platform_type == IgvmPlatformType::SEV_SNP {
            snp = Some(platform.compatibility_mask);
        }
    }
    let mask = snp.ok_or(ImageError::NoSnpPlatform)?;
    for IgvmPlatformHeader::SupportedPlatform(platform) in platforms {
        if platform.platform_type != IgvmPlatformType::SEV_SNP {
            return Err(ImageError::UnsupportedPlatform {
                platform_type: platform.platform_type.0,
            });
        }
    }
    Ok(mask)
}

fn check_mask(index: usize, mask: u32, snp_mask: u32) -> Result<(), ImageError> {
    if mask == snp_mask {
        Ok(())
    } else {
        Err(ImageError::WrongCompatibilityMask { index, mask })
    }
}

/// A page must be 4 KiB aligned and inside `NULL_GUARD_END..limit`.
fn check_page_gpa(gpa: u64, limit: u64) -> Result<(), ImageError> {
    if !gpa.is_multiple_of(PAGE_SIZE_4K) {
        return Err(ImageError::UnalignedPage { gpa });
    }
    if gpa < NULL_GUARD_END || gpa.checked_add(PAGE_SIZE_4K).is_none_or(|end| end > limit) {
        return Err(ImageError::PageOutOfRange { gpa, limit });
    }
    Ok(())
}

fn directive_kind(directive: &IgvmDirectiveHeader) -> &'static str {
    match directive {
        IgvmDirectiveHeader::PageData { .. } => "page data",
        IgvmDirectiveHeader::ParameterArea { .. } => "parameter area",
        IgvmDirectiveHeader::MemoryMap(_) => "memory map parameter",
        IgvmDirectiveHeader::ParameterInsert(_) => "parameter insert",
        IgvmDirectiveHeader::SnpVpContext { .. } => "SEV-SNP VP context",
        IgvmDirectiveHeader::RequiredMemory { .. } => "required memory range",
        IgvmDirectiveHeader::ErrorRange { .. } => "error range",
        IgvmDirectiveHeader::SnpIdBlock { .. } => "SEV-SNP ID block",
        _ => "directive of another kind",
    }
}

/// Read the [`BootInfo`] page and check it on its own and against the platform.
fn read_boot_info(
    pages: &[ImagePage],
    page_index: &BTreeMap<u64, usize>,
) -> Result<BootInfo, ImageError> {
    let page = page_index
        .get(&BOOT_INFO_GPA)
        .and_then(|&i| pages.get(i))
        .ok_or(ImageError::MissingBootInfo)?
        .contents
        .bytes();
    let (info, tail) = BootInfo::read_from_prefix(page).map_err(|_| ImageError::MissingBootInfo)?;
    let platform = info.check().map_err(ImageError::InvalidBootInfo)?;
    let mismatch = |reason| Err(ImageError::BootInfoMismatch { reason });
    if tail.iter().any(|&b| b != 0) {
        return mismatch("the bytes after the boot information are not zero");
    }
    if info.reserved != [0; 2] {
        return mismatch("its reserved fields are not zero");
    }
    if platform != PlatformKind::Snp {
        return mismatch("it names another platform than the file's SEV-SNP platform");
    }
    // The encryption bit must sit above all of guest RAM and inside a 52-bit GPA.
    if !(46..52).contains(&info.c_bit) {
        return mismatch("its C-bit position is not in 46..52");
    }
    if info.firmware_end <= FIRMWARE_GPA || info.firmware_end > FIRMWARE_GPA_END {
        return mismatch("firmware_end is outside the firmware region");
    }
    if info.min_memory < MIN_GUEST_MEMORY
        || info.min_memory > MAX_GUEST_MEMORY
        || !info.min_memory.is_multiple_of(GUEST_MEMORY_ALIGN)
    {
        return mismatch("min_memory is not a valid guest RAM size");
    }
    Ok(info)
}

/// Every page of `start..end` (the app and its arguments) must be measured: the firmware
/// trusts these bytes because they are part of the launch measurement.
fn check_measured(
    page_index: &BTreeMap<u64, usize>,
    start: u64,
    end: u64,
) -> Result<(), ImageError> {
    let mut expected = align_down(start, PAGE_SIZE_4K);
    for &gpa in page_index.range(expected..end).map(|(gpa, _)| gpa) {
        if gpa != expected {
            break;
        }
        expected += PAGE_SIZE_4K;
    }
    if expected < end {
        return Err(ImageError::UnmeasuredRegion { gpa: expected });
    }
    Ok(())
}

/// The BSP must start inside the measured firmware, with SNP on and CR3 at a measured
/// page.
fn check_vmsa(
    vmsa: &SevVmsa,
    boot_info: &BootInfo,
    pages: &[ImagePage],
    page_index: &BTreeMap<u64, usize>,
) -> Result<(), ImageError> {
    let is_data_page = |gpa: u64| {
        page_index
            .get(&align_down(gpa, PAGE_SIZE_4K))
            .and_then(|&i| pages.get(i))
            .is_some_and(|page| matches!(page.contents, PageContents::Data(_)))
    };
    let rip = vmsa.rip;
    let rip_ok = rip
        .checked_sub(KERNEL_VA_BASE)
        .filter(|gpa| (FIRMWARE_GPA..boot_info.firmware_end).contains(gpa))
        .is_some_and(is_data_page);
    if !rip_ok {
        return Err(ImageError::EntryOutsideFirmware { rip });
    }
    if !vmsa.sev_features.snp() {
        return Err(ImageError::BadVpContext {
            reason: "its SEV features do not enable SNP",
        });
    }
    // boot_info.c_bit < 52 (checked in `read_boot_info`).
    let cr3 = vmsa.cr3 & !(1u64 << boot_info.c_bit);
    if !is_data_page(cr3) {
        return Err(ImageError::BadVpContext {
            reason: "CR3 does not point at a measured page",
        });
    }
    Ok(())
}

/// The pages (in directive order) and the VMSA must hash to the boot information's
/// [`BootInfo::image_digest`]: the IGVM checksum covers the headers only, so this is
/// what notices a corrupted page.
fn check_digest(
    boot_info: &BootInfo,
    pages: &[ImagePage],
    vmsa: &SevVmsa,
) -> Result<(), ImageError> {
    let mut digest = ImageDigest::new();
    for page in pages {
        digest.page(page.gpa, page.contents.bytes());
    }
    if digest.finish(vmsa) != boot_info.image_digest {
        return Err(ImageError::DigestMismatch);
    }
    Ok(())
}

/// Round up to a multiple of 8, as IGVM variable headers are laid out.
const fn align_8(x: usize) -> usize {
    (x + 7) & !7
}

/// Check the fixed header and walk the variable headers before the `igvm` parser does:
/// only the header types nacre images use, with their exact lengths, and every file
/// offset inside the file data section. See the module documentation for why.
fn prescan(bytes: &[u8]) -> Result<(), ImageError> {
    let magic = IGVM_MAGIC_VALUE.to_le_bytes();
    let magic_len = bytes.len().min(magic.len());
    if bytes.is_empty() || bytes[..magic_len] != magic[..magic_len] {
        return Err(ImageError::NotIgvm);
    }
    let (fixed, _) =
        IGVM_FIXED_HEADER::read_from_prefix(bytes).map_err(|_| ImageError::Truncated {
            actual: bytes.len(),
        })?;
    if fixed.format_version != IGVM_FORMAT_VERSION_1 {
        return Err(ImageError::UnsupportedFormatVersion {
            version: fixed.format_version,
        });
    }
    if fixed.total_file_size as usize != bytes.len() {
        return Err(ImageError::SizeMismatch {
            expected: fixed.total_file_size,
            actual: bytes.len(),
        });
    }
    let corrupt = |reason| Err(ImageError::Corrupt { reason });
    let headers_start = fixed.variable_header_offset as usize;
    if headers_start < core::mem::size_of::<IGVM_FIXED_HEADER>() || !headers_start.is_multiple_of(8)
    {
        return corrupt("the variable header offset is invalid");
    }
    // The `igvm` parser wants file data after the headers; nacre images always have some.
    let data_start = headers_start + fixed.variable_header_size as usize;
    if data_start >= bytes.len() {
        return corrupt("the variable headers extend to or past the end of the file");
    }
    let in_file_data = |file_offset: u32, len: u64| {
        let start = u64::from(file_offset);
        start >= data_start as u64
            && start
                .checked_add(len)
                .is_some_and(|end| end <= bytes.len() as u64)
    };

    // Platform type of each compatibility mask; a later header replaces an earlier one,
    // as in the `igvm` parser.
    let mut platforms: BTreeMap<u32, IgvmPlatformType> = BTreeMap::new();
    let mut rest = &bytes[headers_start..data_start];
    while !rest.is_empty() {
        let offset = data_start - rest.len();
        let Ok((header, body)) = IGVM_VHS_VARIABLE_HEADER::read_from_prefix(rest) else {
            return corrupt("a variable header is cut short");
        };
        let expected_len = match header.typ {
            IgvmVariableHeaderType::IGVM_VHT_SUPPORTED_PLATFORM => {
                core::mem::size_of::<IGVM_VHS_SUPPORTED_PLATFORM>()
            }
            IgvmVariableHeaderType::IGVM_VHT_PAGE_DATA => {
                core::mem::size_of::<IGVM_VHS_PAGE_DATA>()
            }
            IgvmVariableHeaderType::IGVM_VHT_PARAMETER_AREA => {
                core::mem::size_of::<IGVM_VHS_PARAMETER_AREA>()
            }
            IgvmVariableHeaderType::IGVM_VHT_MEMORY_MAP => {
                core::mem::size_of::<IGVM_VHS_PARAMETER>()
            }
            IgvmVariableHeaderType::IGVM_VHT_PARAMETER_INSERT => {
                core::mem::size_of::<IGVM_VHS_PARAMETER_INSERT>()
            }
            IgvmVariableHeaderType::IGVM_VHT_VP_CONTEXT => {
                core::mem::size_of::<IGVM_VHS_VP_CONTEXT>()
            }
            other => {
                return Err(ImageError::UnexpectedHeader {
                    offset,
                    header_type: other.0,
                })
            }
        };
        if header.length as usize != expected_len {
            return corrupt("a variable header has the wrong length for its type");
        }
        let Some(body) = body.get(..align_8(expected_len)) else {
            return corrupt("a variable header is cut short");
        };
        match header.typ {
            IgvmVariableHeaderType::IGVM_VHT_SUPPORTED_PLATFORM => {
                let (platform, _) =
                    IGVM_VHS_SUPPORTED_PLATFORM::read_from_prefix(body).map_err(|_| {
                        ImageError::Corrupt {
                            reason: "a platform header is cut short",
                        }
                    })?;
                platforms.insert(platform.compatibility_mask, platform.platform_type);
            }
            IgvmVariableHeaderType::IGVM_VHT_PAGE_DATA => {
                let (page, _) = IGVM_VHS_PAGE_DATA::read_from_prefix(body).map_err(|_| {
                    ImageError::Corrupt {
                        reason: "a page header is cut short",
                    }
                })?;
                if page.file_offset != 0 && !in_file_data(page.file_offset, PAGE_SIZE_4K) {
                    return corrupt("a page's data lies outside the file data section");
                }
            }
            IgvmVariableHeaderType::IGVM_VHT_PARAMETER_AREA => {
                let (area, _) = IGVM_VHS_PARAMETER_AREA::read_from_prefix(body).map_err(|_| {
                    ImageError::Corrupt {
                        reason: "a parameter area header is cut short",
                    }
                })?;
                if area.file_offset != 0 && !in_file_data(area.file_offset, area.number_of_bytes) {
                    return corrupt("a parameter area's data lies outside the file data section");
                }
            }
            IgvmVariableHeaderType::IGVM_VHT_VP_CONTEXT => {
                let (context, _) = IGVM_VHS_VP_CONTEXT::read_from_prefix(body).map_err(|_| {
                    ImageError::Corrupt {
                        reason: "a VP context header is cut short",
                    }
                })?;
                if platforms.get(&context.compatibility_mask) != Some(&IgvmPlatformType::SEV_SNP) {
                    return Err(ImageError::BadVpContext {
                        reason: "it is not for an SEV-SNP platform",
                    });
                }
                if !in_file_data(context.file_offset, PAGE_SIZE_4K) {
                    return corrupt("the VMSA lies outside the file data section");
                }
            }
            _ => {}
        }
        rest = &rest[core::mem::size_of::<IGVM_VHS_VARIABLE_HEADER>() + body.len()..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes_are_the_igvm_crate_steps() {
        // The prescan steps over headers as the `igvm` parser does: by the structure's
        // size, rounded up to 8 for the (20-byte) VP context.
        assert_eq!(core::mem::size_of::<IGVM_VHS_VARIABLE_HEADER>(), 8);
        assert_eq!(core::mem::size_of::<IGVM_VHS_SUPPORTED_PLATFORM>(), 16);
        assert_eq!(core::mem::size_of::<IGVM_VHS_PAGE_DATA>(), 24);
        assert_eq!(core::mem::size_of::<IGVM_VHS_PARAMETER_AREA>(), 16);
        assert_eq!(core::mem::size_of::<IGVM_VHS_PARAMETER>(), 8);
        assert_eq!(core::mem::size_of::<IGVM_VHS_PARAMETER_INSERT>(), 16);
        assert_eq!(core::mem::size_of::<IGVM_VHS_VP_CONTEXT>(), 20);
    }

    #[test]
    fn check_measured_finds_gaps() {
        let index: BTreeMap<u64, usize> = [0x1000, 0x2000, 0x4000]
            .into_iter()
            .enumerate()
            .map(|(i, gpa)| (gpa, i))
            .collect();
        assert!(check_measured(&index, 0x1000, 0x3000).is_ok());
        assert!(matches!(
            check_measured(&index, 0x1000, 0x5000),
            Err(ImageError::UnmeasuredRegion { gpa: 0x3000 })
        ));
        assert!(matches!(
            check_measured(&index, 0x5000, 0x6000),
            Err(ImageError::UnmeasuredRegion { gpa: 0x5000 })
        ));
    }
}
