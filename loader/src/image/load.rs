//! Parse and check one platform's view of an IGVM file for the host: the measured pages
//! in directive order, the boot handoff, the parameter page, the guest policy and the
//! BSP's initial state (SEV-SNP) or the launch measurement MRTD (TDX).
//!
//! The file is untrusted input (it may come from anywhere), so nothing here panics: a
//! first pass over the fixed and variable headers ([`prescan`]) accepts only the header
//! types nacre images use and checks every file offset before the `igvm` crate's parser
//! sees the bytes (that parser does unchecked `u32` arithmetic on some offsets). Then
//! every directive of the chosen platform (its compatibility mask includes the
//! platform's) is checked against the memory layout and that platform's [`BootInfo`],
//! and last the content of its pages (and on SEV-SNP the VMSA) against the boot
//! information's digest ([`super::digest`]). Directives of the other platform only are
//! skipped once their mask is checked; the `igvm` crate checks nothing about GPAs, so
//! two platforms may give the same GPA different pages.
//!
//! Page data is never copied per directive. An IGVM page header only names a file
//! offset, and the `igvm` serializer writes identical pages once, so a file of a few
//! megabytes can hold a gigabyte of zero pages: 24-byte headers that all name the same
//! 4 KiB of zeros. The `igvm` parser would copy those 4 KiB for every header, so
//! [`parse`] gives it the headers with every page's file offset cleared (a page without
//! data, which the parser does not copy) and reads each page's data from the file
//! itself; pages that name the same file offset share one [`PageContents::Data`]
//! buffer. Memory then grows with the file's size, never with the pages it describes.

use std::collections::BTreeMap;
use std::sync::Arc;

use core::mem::{offset_of, size_of};
use igvm::snp_defs::SevVmsa;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IgvmVariableHeaderType,
    IGVM_FIXED_HEADER, IGVM_FORMAT_VERSION_1, IGVM_MAGIC_VALUE, IGVM_VHS_GUEST_POLICY,
    IGVM_VHS_PAGE_DATA, IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_AREA, IGVM_VHS_PARAMETER_INSERT,
    IGVM_VHS_SUPPORTED_PLATFORM, IGVM_VHS_VARIABLE_HEADER, IGVM_VHS_VP_CONTEXT,
};
use nacre_shared_abi::boot::{BootInfo, PlatformKind};
use nacre_shared_abi::filetree::{FileTreeError, FileTreeHeader};
use nacre_shared_abi::layout::{
    align_down, BOOT_INFO_GPA, FIRMWARE_GPA, FIRMWARE_GPA_END, GUEST_MEMORY_ALIGN, INITIAL_PT_GPA,
    INITIAL_PT_PAGES, MAX_GUEST_MEMORY, MIN_GUEST_MEMORY, NULL_GUARD_END, PAGE_SIZE_4K,
    SECRETS_PAGE_GPA, SNP_CPUID_PAGE_GPA, SNP_VMSA_GPA, TDX_MAX_GUEST_MEMORY, TDX_RESET_PAGE_GPA,
};
use zerocopy::{FromBytes, IntoBytes};

use super::digest::ImageDigest;
use super::launch;
use super::policy::{self, Policies};
use super::{ImageError, PARAMETER_AREA_SIZE};
use crate::measure::MEASUREMENT_SIZE;

const PAGE: usize = PAGE_SIZE_4K as usize;

/// The contents of one measured page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageContents {
    /// A measured normal page with these bytes. Pages whose IGVM headers name the same
    /// file data share one buffer ([`load_image`]).
    Data(Arc<[u8; PAGE]>),
    /// A measured page of zeros.
    Zero,
    /// The SEV-SNP secrets page: the security processor fills it at launch (its
    /// contents are not measured).
    Secrets,
    /// The SEV-SNP CPUID page: the host fills it with the CPUID values the guest may use
    /// and the security processor checks them (its contents are not measured).
    Cpuid,
}

impl PageContents {
    /// The page's bytes.
    pub fn bytes(&self) -> &[u8; PAGE] {
        const ZERO: [u8; PAGE] = [0; PAGE];
        match self {
            Self::Data(bytes) => bytes,
            Self::Zero | Self::Secrets | Self::Cpuid => &ZERO,
        }
    }

    /// Whether the image gives the page as 4096 zero bytes: a zero page, or a data page
    /// of zeros (an image written by other means than [`super::build_image`], which
    /// writes those as zero pages, may name one block of zeros for many pages). A host
    /// whose guest RAM starts zeroed need not copy such a page. `false` for the secrets
    /// and CPUID pages, whose contents are not the image's.
    pub fn is_zeros(&self) -> bool {
        match self {
            Self::Zero => true,
            Self::Data(bytes) => bytes.iter().all(|&b| b == 0),
            Self::Secrets | Self::Cpuid => false,
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

/// One platform's checked view of an image, ready for the host to replay into that
/// platform.
///
/// The launch sequence is: every page of [`pages`](Self::pages) in order, then the
/// parameter page at [`param_gpa`](Self::param_gpa) (no measured page of the platform
/// follows it in the file), then on SEV-SNP the VMSA, once per vCPU. How each platform
/// takes each page, and so what it measures, is in the [`crate::image`] documentation
/// ("Launch measurement"); [`measurement_for_cpus`](Self::measurement_for_cpus) and
/// [`measured_regions_for_cpus`](Self::measured_regions_for_cpus) give the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The platform this view is for; its [`BootInfo`] names it.
    pub platform: PlatformKind,
    /// The platform's measured boot handoff, checked with [`BootInfo::check`].
    pub boot_info: BootInfo,
    /// Every measured page of the platform, in directive (measurement) order, 4 KiB
    /// each, GPAs 4 KiB-aligned and pairwise distinct, in `NULL_GUARD_END..min_memory`
    /// except, on TDX, the reset page at `TDX_RESET_PAGE_GPA`.
    pub pages: Vec<ImagePage>,
    /// Where the host must insert the parameter page holding the memory map
    /// ([`nacre_shared_abi::boot::MemoryMapEntry`] array), unmeasured.
    pub param_gpa: u64,
    /// SEV-SNP: the BSP's initial state, which nacre's host gives every vCPU. `Some`
    /// exactly when `platform` is SEV-SNP.
    pub vmsa: Option<Box<SevVmsa>>,
    /// SEV-SNP: the launch digest (the attestation report's MEASUREMENT) the AMD
    /// security processor computes while the host launches the image the way the launch
    /// sequence above says (docs/specs.md 5.1; [`crate::measure::snp`]): each page of `pages`
    /// with SNP_LAUNCH_UPDATE as [`PageContents::snp_page_type`] says (NORMAL for a
    /// page with data and for a zero page), then the parameter page UNMEASURED, then the
    /// BSP's VMSA at GPA 0xFFFF_FFFF_F000: the digest of a guest with one vCPU. Each
    /// further vCPU adds its VMSA at the same GPA;
    /// [`measurement_for_cpus`](Self::measurement_for_cpus) gives the digest for any
    /// number of vCPUs. `Some` exactly when `platform` is SEV-SNP.
    pub launch_digest: Option<[u8; MEASUREMENT_SIZE]>,
    /// TDX: the MRTD the TDX module computes while the host builds the TD the way the
    /// launch sequence above says, with upstream KVM's order (docs/specs.md 6.7;
    /// [`crate::measure::tdx`]): for each page of `pages`, TDH.MEM.PAGE.ADD then its 16
    /// TDH.MR.EXTENDs, then TDH.MEM.PAGE.ADD of the parameter page without an extension
    /// (its content is the host's, but a private page present before the TD starts is
    /// added like any other). `Some` exactly when `platform` is TDX.
    pub mrtd: Option<[u8; MEASUREMENT_SIZE]>,
    /// Smallest guest RAM size the image boots with (`boot_info.min_memory`).
    pub min_memory: u64,
    /// The guest policy the image declares for `platform`, in that platform's IGVM
    /// encoding, checked: on SEV-SNP the guest policy SNP_LAUNCH_START takes and
    /// attestation reports carry as POLICY (docs/specs.md 4.3), on TDX an `igvm_defs`
    /// `TdxPolicy` ([`td_attributes`](Self::td_attributes) gives the TD attributes it
    /// asks for). An image without a policy header has its platform's default,
    /// [`super::DEFAULT_SNP_POLICY`] or [`super::DEFAULT_TDX_POLICY`]. Not part of the
    /// launch measurement.
    pub guest_policy: u64,
}

impl LoadedImage {
    /// The bytes of `gpa..gpa + len` if every page of it is a measured page of this
    /// view, else `None`.
    pub fn measured_bytes(&self, gpa: u64, len: u64) -> Option<Vec<u8>> {
        let end = gpa.checked_add(len)?;
        let by_gpa: BTreeMap<u64, &PageContents> =
            self.pages.iter().map(|p| (p.gpa, &p.contents)).collect();
        let mut out = Vec::with_capacity(usize::try_from(len).ok()?);
        let mut at = gpa;
        while at < end {
            let page_gpa = align_down(at, PAGE_SIZE_4K);
            let page = by_gpa.get(&page_gpa)?.bytes();
            // at - page_gpa < 4096 and end - at > 0.
            let offset = (at - page_gpa) as usize;
            let take = (end - at).min((PAGE - offset) as u64) as usize;
            out.extend_from_slice(&page[offset..offset + take]);
            at += take as u64;
        }
        Some(out)
    }

    /// The file tree the image carries (`boot_info.fs_gpa`, `boot_info.fs_size`; every
    /// page of it is measured, as [`load_image`] checked).
    pub fn file_tree(&self) -> Option<Vec<u8>> {
        self.measured_bytes(self.boot_info.fs_gpa, self.boot_info.fs_size)
    }

    /// Whether the guest policy lets the host debug the guest, that is read and change
    /// its memory and state: SEV-SNP policy DEBUG (bit 19), TDX DEBUG_ALLOWED (TD
    /// attribute DEBUG). `nacre package --debug` makes such an image.
    pub fn debug(&self) -> bool {
        policy::policy_allows_debug(self.platform, self.guest_policy)
    }

    /// TDX: the TD attributes (docs/specs.md 6.4) the guest policy asks for; `None` on
    /// SEV-SNP.
    pub fn td_attributes(&self) -> Option<u64> {
        match self.platform {
            PlatformKind::Snp => None,
            PlatformKind::Tdx => Some(policy::td_attributes(self.guest_policy)),
        }
    }
}

/// The compatibility masks of the platforms a file declares.
#[derive(Debug, Clone, Copy, Default)]
struct PlatformMasks {
    snp: Option<u32>,
    tdx: Option<u32>,
}

impl PlatformMasks {
    /// Read the platform headers: SEV-SNP and TDX only, each on its own mask (the
    /// `igvm` parser already refuses two headers of one platform type and masks with
    /// other than one bit set).
    fn new(platforms: &[IgvmPlatformHeader]) -> Result<Self, ImageError> {
        let mut masks = Self::default();
        for IgvmPlatformHeader::SupportedPlatform(platform) in platforms {
            let slot = match platform.platform_type {
                IgvmPlatformType::SEV_SNP => &mut masks.snp,
                IgvmPlatformType::TDX => &mut masks.tdx,
                other => {
                    return Err(ImageError::UnsupportedPlatform {
                        platform_type: other.0,
                    })
                }
            };
            *slot = Some(platform.compatibility_mask);
        }
        if let (Some(snp), Some(tdx)) = (masks.snp, masks.tdx) {
            if snp & tdx != 0 {
                return Err(ImageError::SharedPlatformMask { mask: snp & tdx });
            }
        }
        Ok(masks)
    }

    /// The mask of `platform`, or why the file cannot serve it.
    fn of(&self, platform: PlatformKind) -> Result<u32, ImageError> {
        match platform {
            PlatformKind::Snp => self.snp.ok_or(ImageError::NoSnpPlatform),
            PlatformKind::Tdx => self.tdx.ok_or(ImageError::NoTdxPlatform),
        }
    }

    /// Every declared platform's bit.
    fn declared(&self) -> u32 {
        self.snp.unwrap_or(0) | self.tdx.unwrap_or(0)
    }

    /// The declared platforms, SEV-SNP first.
    fn kinds(&self) -> Vec<PlatformKind> {
        [(self.snp, PlatformKind::Snp), (self.tdx, PlatformKind::Tdx)]
            .into_iter()
            .filter_map(|(mask, kind)| mask.map(|_| kind))
            .collect()
    }

    /// The guest policies of `file`, checked ([`Policies::read`]).
    fn policies(&self, file: &IgvmFile) -> Result<Policies, ImageError> {
        Policies::read(file.initializations(), self.snp, self.tdx)
    }
}

/// The platforms an IGVM file has a platform header for (SEV-SNP first), after the same
/// header checks [`load_image`] makes. A listed platform may still fail to load (for
/// example a TDX view whose image needs more memory than a TD can have).
pub fn image_platforms(bytes: &[u8]) -> Result<Vec<PlatformKind>, ImageError> {
    let (file, _) = parse(bytes)?;
    let masks = PlatformMasks::new(file.platforms())?;
    masks.policies(&file)?;
    Ok(masks.kinds())
}

/// Parse and fully check the `platform` view of an IGVM file produced by
/// [`super::build_image`] (or any IGVM file of the same shape). Never panics on bad
/// input.
pub fn load_image(bytes: &[u8], platform: PlatformKind) -> Result<LoadedImage, ImageError> {
    let (file, page_offsets) = parse(bytes)?;
    let masks = PlatformMasks::new(file.platforms())?;
    let mask = masks.of(platform)?;
    let guest_policy = masks.policies(&file)?.of(platform);
    let declared = masks.declared();
    // Does a directive with `compatibility_mask` at `index` apply to `platform`?
    let applies = |index: usize, compatibility_mask: u32| {
        if compatibility_mask == 0 || compatibility_mask & !declared != 0 {
            return Err(ImageError::WrongCompatibilityMask {
                index,
                mask: compatibility_mask,
            });
        }
        Ok(compatibility_mask & mask != 0)
    };

    let mut pages: Vec<ImagePage> = Vec::new();
    // GPA -> index into `pages`.
    let mut page_index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut parameter_area: Option<u32> = None;
    let mut memory_map = false;
    let mut param_gpa: Option<u64> = None;
    let mut vp_context: Option<(u64, Box<SevVmsa>)> = None;
    // The file offset of each page directive's data, in order (`parse`), and the one
    // buffer of each offset's data read so far.
    let mut page_offsets = page_offsets.into_iter();
    let mut page_data: BTreeMap<u32, Arc<[u8; PAGE]>> = BTreeMap::new();

    for (index, directive) in file.directives().iter().enumerate() {
        match directive {
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                flags,
                data_type,
                data: _,
            } => {
                // `parse` found one offset per page header, in the order the `igvm`
                // parser keeps them.
                let file_offset = page_offsets.next().ok_or(ImageError::Corrupt {
                    reason: "the page headers do not match the parsed page directives",
                })?;
                if !applies(index, *compatibility_mask)? {
                    continue;
                }
                let has_data = file_offset != 0;
                let gpa = *gpa;
                if *flags != IgvmPageDataFlags::new() {
                    return Err(ImageError::UnsupportedPage {
                        gpa,
                        reason: "a 2 MiB, unmeasured or shared page",
                    });
                }
                let secrets = *data_type == IgvmPageDataType::SECRETS;
                if secrets && (platform != PlatformKind::Snp || gpa != SECRETS_PAGE_GPA || has_data)
                {
                    return Err(ImageError::UnsupportedPage {
                        gpa,
                        reason: "a secrets page that is not nacre's SEV-SNP secrets page",
                    });
                }
                let cpuid = *data_type == IgvmPageDataType::CPUID_DATA;
                if cpuid && (platform != PlatformKind::Snp || gpa != SNP_CPUID_PAGE_GPA || has_data)
                {
                    return Err(ImageError::UnsupportedPage {
                        gpa,
                        reason: "a CPUID page that is not nacre's SEV-SNP CPUID page",
                    });
                }
                if *data_type != IgvmPageDataType::NORMAL && !secrets && !cpuid {
                    return Err(ImageError::UnsupportedPage {
                        gpa,
                        reason: "a page of another type than normal, secrets or CPUID",
                    });
                }
                check_page_gpa(gpa, MAX_GUEST_MEMORY)?;
                if page_index.insert(gpa, pages.len()).is_some() {
                    return Err(ImageError::OverlappingPage { gpa });
                }
                if param_gpa.is_some() {
                    return Err(ImageError::BadParameterArea {
                        reason: "a measured page follows the inserted parameter area",
                    });
                }
                let contents = if secrets {
                    PageContents::Secrets
                } else if cpuid {
                    PageContents::Cpuid
                } else if !has_data {
                    PageContents::Zero
                } else {
                    let shared = match page_data.get(&file_offset) {
                        Some(shared) => Arc::clone(shared),
                        None => {
                            // The prescan checked that the page lies inside the file.
                            let start = file_offset as usize;
                            let page: [u8; PAGE] = bytes
                                .get(start..start + PAGE)
                                .and_then(|data| data.try_into().ok())
                                .ok_or(ImageError::Corrupt {
                                    reason: "a page's data lies outside the file data section",
                                })?;
                            let shared = Arc::new(page);
                            page_data.insert(file_offset, Arc::clone(&shared));
                            shared
                        }
                    };
                    PageContents::Data(shared)
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
                if !applies(index, *compatibility_mask)? {
                    continue;
                }
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
                // The prescan made sure the mask is exactly the SEV-SNP platform's.
                if !applies(index, *compatibility_mask)? {
                    continue;
                }
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
                // KVM measures the VMSA at this GPA whatever the file says, and QEMU's
                // IGVM loader accepts no other: a file naming another GPA would promise
                // a measurement no host gives.
                if *gpa != SNP_VMSA_GPA {
                    return Err(ImageError::BadVpContext {
                        reason: "its GPA is not 0xFFFF_FFFF_F000, where KVM measures the VMSA",
                    });
                }
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
    if page_index.contains_key(&param_gpa) {
        return Err(ImageError::OverlappingPage { gpa: param_gpa });
    }
    let vmsa = match platform {
        // The VMSA's GPA is above all guest RAM (checked above), so no page overlaps it.
        PlatformKind::Snp => Some(vp_context.ok_or(ImageError::MissingVpContext)?.1),
        // A VP context applies to SEV-SNP only (prescan), so there is none here.
        PlatformKind::Tdx => None,
    };

    let boot_info = read_boot_info(&pages, &page_index, platform)?;
    let min_memory = boot_info.min_memory;
    if platform == PlatformKind::Tdx && min_memory > TDX_MAX_GUEST_MEMORY {
        return Err(ImageError::TooLargeForTdx { min_memory });
    }
    for gpa in page_index.keys().chain([&param_gpa]) {
        // The TD's reset page is the one page above guest RAM.
        if platform == PlatformKind::Tdx && *gpa == TDX_RESET_PAGE_GPA {
            continue;
        }
        check_page_gpa(*gpa, min_memory)?;
    }
    check_measured(&page_index, boot_info.app_gpa, boot_info.image_end)?;
    check_page_tables(&pages, &page_index)?;
    match &vmsa {
        Some(vmsa) => check_vmsa(vmsa, &boot_info, &pages, &page_index)?,
        None => check_tdx_entry(&pages, &page_index)?,
    }
    check_digest(platform, &boot_info, &pages, vmsa.as_deref())?;
    check_file_tree_header(&boot_info, &pages, &page_index)?;

    let mut image = LoadedImage {
        platform,
        boot_info,
        pages,
        param_gpa,
        vmsa,
        launch_digest: None,
        mrtd: None,
        min_memory,
        guest_policy,
    };
    // The one-vCPU measurement; LoadedImage::measurement_for_cpus continues it.
    let measurement = Some(launch::measure(&image, 1));
    match platform {
        PlatformKind::Snp => image.launch_digest = measurement,
        PlatformKind::Tdx => image.mrtd = measurement,
    }
    Ok(image)
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

/// Read the platform's [`BootInfo`] page and check it on its own and against the
/// platform.
fn read_boot_info(
    pages: &[ImagePage],
    page_index: &BTreeMap<u64, usize>,
    platform: PlatformKind,
) -> Result<BootInfo, ImageError> {
    let page = page_index
        .get(&BOOT_INFO_GPA)
        .and_then(|&i| pages.get(i))
        .ok_or(ImageError::MissingBootInfo)?
        .contents
        .bytes();
    let (info, tail) = BootInfo::read_from_prefix(page).map_err(|_| ImageError::MissingBootInfo)?;
    let named = info.check().map_err(ImageError::InvalidBootInfo)?;
    let mismatch = |reason| Err(ImageError::BootInfoMismatch { reason });
    if tail.iter().any(|&b| b != 0) {
        return mismatch("the bytes after the boot information are not zero");
    }
    match (platform, named) {
        (PlatformKind::Snp, PlatformKind::Snp) | (PlatformKind::Tdx, PlatformKind::Tdx) => {
            if info.c_bit != 0 {
                return mismatch(
                    "its encryption-bit position is not 0 (no page of an image carries one)",
                );
            }
        }
        (PlatformKind::Snp, _) => {
            return mismatch("it names another platform than the file's SEV-SNP platform")
        }
        (PlatformKind::Tdx, _) => {
            return mismatch("it names another platform than the file's TDX platform")
        }
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

/// The file tree's header (in the first page of `fs_gpa..fs_gpa + fs_size`, measured)
/// must be valid and the tree exactly `fs_size` bytes long. The firmware checks the rest
/// of the tree as it reads it.
fn check_file_tree_header(
    boot_info: &BootInfo,
    pages: &[ImagePage],
    page_index: &BTreeMap<u64, usize>,
) -> Result<(), ImageError> {
    let page = page_index
        .get(&boot_info.fs_gpa)
        .and_then(|&i| pages.get(i))
        .ok_or(ImageError::UnmeasuredRegion {
            gpa: boot_info.fs_gpa,
        })?;
    let (header, _) = FileTreeHeader::read_from_prefix(page.contents.bytes())
        .map_err(|_| ImageError::InvalidFileTree(FileTreeError::Truncated))?;
    let len = header
        .check(boot_info.fs_size)
        .map_err(ImageError::InvalidFileTree)?;
    if len != boot_info.fs_size {
        return Err(ImageError::BootInfoMismatch {
            reason: "fs_size is not the length of the file tree",
        });
    }
    Ok(())
}

/// Every page of `start..end` (the app, its arguments and the file tree) must be
/// measured: the firmware
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

/// The BSP must start inside the measured firmware, in 32-bit protected mode with paging
/// off (the state the firmware's entry code expects, which holds no host property such
/// as the C-bit), with SNP on; the CPUID page the entry code reads the C-bit from must
/// be there.
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
    let bad = |reason| Err(ImageError::BadVpContext { reason });
    let rip = vmsa.rip;
    if !(FIRMWARE_GPA..boot_info.firmware_end).contains(&rip) || !is_data_page(rip) {
        return Err(ImageError::EntryOutsideFirmware { rip });
    }
    if !vmsa.sev_features.snp() {
        return bad("its SEV features do not enable SNP");
    }
    // CR0.PE (bit 0), CR0.PG (bit 31), EFER.LMA (bit 10): AMD APM vol. 2, 3.1.
    if vmsa.cr0 & 1 == 0 || vmsa.cr0 & (1 << 31) != 0 || vmsa.efer & (1 << 10) != 0 {
        return bad("the BSP does not start in protected mode with paging off");
    }
    // Segment attribute L (bit 9) and D (bit 10), VMCB format (AMD APM vol. 2, 15.5.1).
    if vmsa.cs.attrib & (1 << 9) != 0 || vmsa.cs.attrib & (1 << 10) == 0 {
        return bad("its code segment is not a 32-bit one");
    }
    if !page_index
        .get(&SNP_CPUID_PAGE_GPA)
        .and_then(|&i| pages.get(i))
        .is_some_and(|page| page.contents == PageContents::Cpuid)
    {
        return bad("the CPUID page the entry code reads the C-bit from is missing");
    }
    Ok(())
}

/// Both platforms' entry code turns paging on with the tables at `INITIAL_PT_GPA`: they
/// must be measured pages with contents.
fn check_page_tables(
    pages: &[ImagePage],
    page_index: &BTreeMap<u64, usize>,
) -> Result<(), ImageError> {
    let page = |gpa: u64| page_index.get(&gpa).and_then(|&i| pages.get(i));
    let mut tables = (INITIAL_PT_GPA..)
        .step_by(PAGE)
        .take(INITIAL_PT_PAGES as usize);
    if !tables.all(|gpa| page(gpa).is_some_and(|p| matches!(p.contents, PageContents::Data(_)))) {
        return Err(ImageError::MissingPageTables);
    }
    Ok(())
}

/// The TDX BSP starts at the reset vector with paging off: the reset page must be a
/// measured page with contents.
fn check_tdx_entry(
    pages: &[ImagePage],
    page_index: &BTreeMap<u64, usize>,
) -> Result<(), ImageError> {
    let page = |gpa: u64| page_index.get(&gpa).and_then(|&i| pages.get(i));
    if !page(TDX_RESET_PAGE_GPA).is_some_and(|p| matches!(p.contents, PageContents::Data(_))) {
        return Err(ImageError::MissingTdxResetPage);
    }
    Ok(())
}

/// The pages (in directive order) and on SEV-SNP the VMSA must hash to the boot
/// information's [`BootInfo::image_digest`]: the IGVM checksum covers the headers only,
/// so this is what notices a corrupted page.
fn check_digest(
    platform: PlatformKind,
    boot_info: &BootInfo,
    pages: &[ImagePage],
    vmsa: Option<&SevVmsa>,
) -> Result<(), ImageError> {
    let mut digest = ImageDigest::new();
    for page in pages {
        digest.page(page.gpa, page.contents.bytes());
    }
    if digest.finish(vmsa) != boot_info.image_digest {
        return Err(ImageError::DigestMismatch { platform });
    }
    Ok(())
}

/// Round up to a multiple of 8, as IGVM variable headers are laid out.
const fn align_8(x: usize) -> usize {
    (x + 7) & !7
}

/// What [`prescan`] found in the variable headers that [`parse`] needs.
#[derive(Debug, Default)]
struct Scan {
    /// Where the file data section starts: the end of the variable headers.
    data_start: usize,
    /// For each page header, in file order: the file position of its `file_offset`
    /// field and the field's value (0: a page without data).
    pages: Vec<(usize, u32)>,
    /// For the VP context header, if any: the file position of its `file_offset` field
    /// and the field's value.
    vp_context: Option<(usize, u32)>,
}

/// Parse the IGVM file `bytes` with the `igvm` crate, after the [`prescan`], without
/// letting the parser copy any page's data (module documentation): the parser is given
/// a copy of the fixed header and the variable headers in which every page header names
/// no file data (a page without data, which the parser leaves empty) and the VP
/// context names its VMSA at the start of a file data section holding only that page;
/// the copy's size and checksum are set for it, once the file's own checksum has been
/// checked as the parser would. Returns the parsed file and, for every page directive
/// in order, the file offset of its data in `bytes` (0: none), which the prescan
/// checked to lie inside the file data section.
fn parse(bytes: &[u8]) -> Result<(IgvmFile, Vec<u32>), ImageError> {
    let scan = prescan(bytes)?;
    // The prescan read the fixed header and checked that its offsets lie in the file.
    let (fixed, _) =
        IGVM_FIXED_HEADER::read_from_prefix(bytes).map_err(|_| ImageError::Truncated {
            actual: bytes.len(),
        })?;
    let headers_start = fixed.variable_header_offset as usize;
    let checksum = |fixed: &IGVM_FIXED_HEADER, headers: &[u8]| {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(
            IGVM_FIXED_HEADER {
                checksum: 0,
                ..*fixed
            }
            .as_bytes(),
        );
        hasher.update(headers);
        hasher.finalize()
    };
    let expected = checksum(&fixed, &bytes[headers_start..scan.data_start]);
    if expected != fixed.checksum {
        return Err(ImageError::Parse(igvm::Error::InvalidChecksum {
            expected,
            header_value: fixed.checksum,
        }));
    }

    let mut copy = Vec::with_capacity(scan.data_start + PAGE);
    copy.extend_from_slice(&bytes[..scan.data_start]);
    let mut set_offset = |field: usize, offset: u32| {
        copy[field..field + 4].copy_from_slice(&offset.to_le_bytes());
    };
    for &(field, _) in &scan.pages {
        set_offset(field, 0);
    }
    let vmsa = scan.vp_context.map(|(field, offset)| {
        let data_start = u32::try_from(scan.data_start).unwrap_or(u32::MAX);
        set_offset(field, data_start);
        offset as usize
    });
    match vmsa {
        // The prescan checked that the VMSA's page lies in the file data section.
        Some(offset) => copy.extend_from_slice(&bytes[offset..offset + PAGE]),
        // The parser wants file data after the headers.
        None => copy.extend_from_slice(&[0; 8]),
    }
    let mut copy_fixed = fixed;
    copy_fixed.total_file_size = u32::try_from(copy.len()).map_err(|_| ImageError::Corrupt {
        reason: "the variable headers extend to or past the end of the file",
    })?;
    copy_fixed.checksum = checksum(&copy_fixed, &copy[headers_start..scan.data_start]);
    copy[..size_of::<IGVM_FIXED_HEADER>()].copy_from_slice(copy_fixed.as_bytes());

    let file = IgvmFile::new_from_binary(&copy, None).map_err(ImageError::Parse)?;
    Ok((
        file,
        scan.pages.into_iter().map(|(_, offset)| offset).collect(),
    ))
}

/// Check the fixed header and walk the variable headers before the `igvm` parser does:
/// only the header types nacre images use, with their exact lengths, and every file
/// offset inside the file data section; at most one VP context, and no parameter area
/// with initial data (nacre images have neither). See the module documentation for
/// why. Returns what [`parse`] needs of the headers.
fn prescan(bytes: &[u8]) -> Result<Scan, ImageError> {
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
    let mut scan = Scan {
        data_start,
        ..Scan::default()
    };
    let in_file_data = |file_offset: u32, len: u64| {
        let start = u64::from(file_offset);
        start >= data_start as u64
            && start
                .checked_add(len)
                .is_some_and(|end| end <= bytes.len() as u64)
    };

    // Platform type of each compatibility mask (one platform per mask).
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
            IgvmVariableHeaderType::IGVM_VHT_GUEST_POLICY => {
                core::mem::size_of::<IGVM_VHS_GUEST_POLICY>()
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
                let mask = platform.compatibility_mask;
                if platforms.insert(mask, platform.platform_type).is_some() {
                    return Err(ImageError::SharedPlatformMask { mask });
                }
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
                let field = offset
                    + size_of::<IGVM_VHS_VARIABLE_HEADER>()
                    + offset_of!(IGVM_VHS_PAGE_DATA, file_offset);
                scan.pages.push((field, page.file_offset));
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
                // Refused here, before the parser would copy the data for each such
                // header.
                if area.file_offset != 0 {
                    return Err(ImageError::BadParameterArea {
                        reason: "the parameter area has initial contents",
                    });
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
                if scan.vp_context.is_some() {
                    return Err(ImageError::BadVpContext {
                        reason: "the file has more than one VP context",
                    });
                }
                let field = offset
                    + size_of::<IGVM_VHS_VARIABLE_HEADER>()
                    + offset_of!(IGVM_VHS_VP_CONTEXT, file_offset);
                scan.vp_context = Some((field, context.file_offset));
            }
            _ => {}
        }
        rest = &rest[core::mem::size_of::<IGVM_VHS_VARIABLE_HEADER>() + body.len()..];
    }
    Ok(scan)
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
        assert_eq!(core::mem::size_of::<IGVM_VHS_GUEST_POLICY>(), 16);
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
