//! The launch of a [`LoadedImage`]: the pages the host hands the platform before the
//! guest runs, in order and as what, the measurement the platform computes from them
//! ([`LoadedImage::launch_digest`] on SEV-SNP, [`LoadedImage::mrtd`] on TDX), and the
//! measured regions `nacre measure --explain` lists ([`LoadedImage::measured_regions`]).
//!
//! The order is [`LoadedImage`]'s launch sequence, the one nacre's host follows: every
//! page of `pages` in order, then the parameter page, then on SEV-SNP one VMSA per vCPU,
//! the BSP's first.
//!
//! The number of vCPUs enters the SEV-SNP launch digest only: KVM measures the VMSA of
//! every vCPU at SNP_LAUNCH_FINISH, each at the same GPA (docs/specs.md 5.1, 5.5), and
//! nacre starts every vCPU in the BSP's state, so N vCPUs give the one-vCPU digest
//! continued with N - 1 more updates of the same VMSA page
//! ([`LoadedImage::measurement_for_cpus`]). MRTD covers the pages added and extended
//! only (docs/specs.md 6.7): creating and initializing a TD's vCPUs adds nothing to it,
//! so a TD's MRTD is the same whatever its number of vCPUs.
//!
//! Which page types the pages get on each platform, and why, is in the [`crate::image`]
//! documentation ("Launch measurement").

use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::layout::{
    BOOT_INFO_GPA, FIRMWARE_GPA, FIRMWARE_GPA_END, INITIAL_PT_GPA, PAGE_SIZE_4K, SECRETS_PAGE_GPA,
    SNP_CPUID_PAGE_GPA, TDX_RESET_PAGE_GPA,
};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha384};
use std::collections::HashMap;
use std::marker::PhantomData;

use super::load::{LoadedImage, PageContents};
use crate::measure::snp::{contents_digest, LaunchDigest, PageType, VMSA_GPA};
use crate::measure::tdx::Mrtd;
use crate::measure::MEASUREMENT_SIZE;

const PAGE: usize = PAGE_SIZE_4K as usize;

/// A page of zeros: the contents the host hands over for a page whose contents are not
/// the image's (they are not measured).
const ZERO_PAGE: [u8; PAGE] = [0; PAGE];

/// The SEV-SNP page type of the parameter page: its contents are the host's memory map,
/// which depends on the guest's RAM size, so they are not measured.
pub const SNP_PARAMETER_PAGE_TYPE: PageType = PageType::Unmeasured;

impl PageContents {
    /// The SEV-SNP page type nacre's host adds this page with: NORMAL for a page with
    /// data and for a page the image declares zero, SECRETS for the secrets page, CPUID
    /// for the CPUID page (the [`crate::image`] documentation, "Launch measurement",
    /// says why).
    pub fn snp_page_type(&self) -> PageType {
        match self {
            Self::Data(_) | Self::Zero => PageType::Normal,
            Self::Secrets => PageType::Secrets,
            Self::Cpuid => PageType::Cpuid,
        }
    }
}

/// How the platform takes a launch page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaunchPageType {
    /// SEV-SNP: SNP_LAUNCH_UPDATE (or, for the VMSA, SNP_LAUNCH_FINISH) with this page
    /// type.
    Snp(PageType),
    /// TDX: TDH.MEM.PAGE.ADD, then TDH.MR.EXTEND of its 16 256-byte chunks.
    TdxAddExtend,
    /// TDX: TDH.MEM.PAGE.ADD only; the contents are not measured.
    TdxAdd,
}

impl LaunchPageType {
    /// `NORMAL`, `ZERO`, `UNMEASURED`, `VMSA`, ... (SEV-SNP), `PAGE.ADD+MR.EXTEND` or
    /// `PAGE.ADD` (TDX).
    pub fn name(self) -> &'static str {
        match self {
            Self::Snp(page_type) => page_type.name(),
            Self::TdxAddExtend => "PAGE.ADD+MR.EXTEND",
            Self::TdxAdd => "PAGE.ADD",
        }
    }

    /// Whether the page's contents are part of the measurement.
    pub fn measures_contents(self) -> bool {
        match self {
            Self::Snp(page_type) => page_type.measures_contents(),
            Self::TdxAddExtend => true,
            Self::TdxAdd => false,
        }
    }
}

impl Serialize for LaunchPageType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What a measured region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionKind {
    /// The boot information page (`BOOT_INFO_GPA`).
    BootInfo,
    /// The initial page tables (from `INITIAL_PT_GPA`).
    PageTables,
    /// The firmware's segments (from `FIRMWARE_GPA`).
    Firmware,
    /// The app's ELF file.
    App,
    /// The argument and environment blob.
    Args,
    /// The file tree.
    FileTree,
    /// The TDX reset page (`TDX_RESET_PAGE_GPA`).
    TdxResetPage,
    /// The SEV-SNP secrets page (`SECRETS_PAGE_GPA`).
    SecretsPage,
    /// The SEV-SNP CPUID page (`SNP_CPUID_PAGE_GPA`).
    CpuidPage,
    /// The parameter page holding the host's memory map.
    ParameterPage,
    /// A vCPU's initial VMSA (SEV-SNP): one region per vCPU, the BSP's first, each
    /// the image's VMSA ([`MeasuredRegion::vcpu`] says whose).
    Vmsa,
    /// A page outside nacre's layout (an image built by other means).
    Other,
}

impl RegionKind {
    /// Its name in text output: `boot info`, `page tables`, `firmware`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::BootInfo => "boot info",
            Self::PageTables => "page tables",
            Self::Firmware => "firmware",
            Self::App => "app",
            Self::Args => "args",
            Self::FileTree => "file tree",
            Self::TdxResetPage => "TDX reset page",
            Self::SecretsPage => "secrets page",
            Self::CpuidPage => "CPUID page",
            Self::ParameterPage => "parameter page",
            Self::Vmsa => "VMSA",
            Self::Other => "other",
        }
    }
}

/// A run of launch pages with the same content kind and page type at consecutive GPAs,
/// consecutive in launch order. The regions of an image, in order, cover every page its
/// launch adds exactly once; on SEV-SNP the VMSA page, at the same GPA for every vCPU,
/// is added once per vCPU and so is one region per vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeasuredRegion {
    /// What the region holds.
    pub what: RegionKind,
    /// Its first GPA as measured (the VMSA's is [`crate::measure::snp::VMSA_GPA`], not
    /// where the VMSA lies in the image).
    #[serde(serialize_with = "serialize_gpa")]
    pub gpa_start: u64,
    /// Its end GPA (exclusive).
    #[serde(serialize_with = "serialize_gpa")]
    pub gpa_end: u64,
    /// How the platform takes its pages.
    pub page_type: LaunchPageType,
    /// Number of 4 KiB pages.
    pub pages: u64,
    /// SHA-384 of the region's contents as the image gives them, page after page (zero
    /// pages as 4096 zero bytes; for a one-page NORMAL or VMSA region this is PAGE_INFO's
    /// CONTENTS); `None` for the parameter page, whose contents are the host's.
    #[serde(serialize_with = "serialize_digest")]
    pub sha384: Option<[u8; MEASUREMENT_SIZE]>,
    /// For a VMSA region: the index of the vCPU whose initial state it is (0, the BSP,
    /// is measured first); `None` for every other region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
}

fn serialize_gpa<S: Serializer>(gpa: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{gpa:#x}"))
}

fn serialize_digest<S: Serializer>(
    digest: &Option<[u8; MEASUREMENT_SIZE]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match digest {
        Some(digest) => serializer.serialize_str(&hex::encode(digest)),
        None => serializer.serialize_none(),
    }
}

/// One page the host adds at launch.
#[derive(Debug, Clone, Copy)]
struct LaunchPage<'a> {
    /// Its GPA as measured.
    gpa: u64,
    what: RegionKind,
    page_type: LaunchPageType,
    /// The image's contents, or `None` when they are the host's (the parameter page).
    contents: Option<&'a [u8; PAGE]>,
    /// The vCPU a VMSA page is of.
    vcpu: Option<u32>,
}

/// Every page the launch of `image` with `cpus` vCPUs (0 counts as 1: there is always
/// the BSP) adds, in launch order (module documentation).
fn launch_pages(image: &LoadedImage, cpus: u32) -> Vec<LaunchPage<'_>> {
    let mut out: Vec<LaunchPage<'_>> = image
        .pages
        .iter()
        .map(|page| LaunchPage {
            gpa: page.gpa,
            what: region_of(image, page.gpa),
            page_type: match image.platform {
                PlatformKind::Snp => LaunchPageType::Snp(page.contents.snp_page_type()),
                PlatformKind::Tdx => LaunchPageType::TdxAddExtend,
            },
            contents: match page.contents {
                PageContents::Secrets | PageContents::Cpuid => None,
                _ => Some(page.contents.bytes()),
            },
            vcpu: None,
        })
        .collect();
    out.push(LaunchPage {
        gpa: image.param_gpa,
        what: RegionKind::ParameterPage,
        page_type: match image.platform {
            PlatformKind::Snp => LaunchPageType::Snp(SNP_PARAMETER_PAGE_TYPE),
            PlatformKind::Tdx => LaunchPageType::TdxAdd,
        },
        contents: None,
        vcpu: None,
    });
    if let Some(page) = vmsa_page(image) {
        // Every vCPU starts in the BSP's state: the same VMSA, measured once each.
        out.extend((0..cpus.max(1)).map(|vcpu| LaunchPage {
            gpa: VMSA_GPA,
            what: RegionKind::Vmsa,
            page_type: LaunchPageType::Snp(PageType::Vmsa),
            contents: Some(page),
            vcpu: Some(vcpu),
        }));
    }
    out
}

/// The image's VMSA as the page the platform measures (SEV-SNP).
fn vmsa_page(image: &LoadedImage) -> Option<&[u8; PAGE]> {
    image
        .vmsa
        .as_deref()
        .map(|vmsa| -> &[u8; PAGE] { zerocopy::transmute_ref!(vmsa) })
}

/// What the image page at `gpa` holds, by nacre's memory layout and the image's boot
/// information.
fn region_of(image: &LoadedImage, gpa: u64) -> RegionKind {
    let info = &image.boot_info;
    let within = |start: u64, end: u64| (start..end).contains(&gpa);
    if gpa == BOOT_INFO_GPA {
        RegionKind::BootInfo
    } else if image.platform == PlatformKind::Snp && gpa == SECRETS_PAGE_GPA {
        RegionKind::SecretsPage
    } else if image.platform == PlatformKind::Snp && gpa == SNP_CPUID_PAGE_GPA {
        RegionKind::CpuidPage
    } else if within(INITIAL_PT_GPA, FIRMWARE_GPA) {
        RegionKind::PageTables
    } else if within(FIRMWARE_GPA, FIRMWARE_GPA_END) {
        RegionKind::Firmware
    } else if within(info.app_gpa, info.args_gpa) {
        RegionKind::App
    } else if within(info.args_gpa, info.fs_gpa) {
        RegionKind::Args
    } else if within(info.fs_gpa, info.image_end) {
        RegionKind::FileTree
    } else if image.platform == PlatformKind::Tdx && gpa == TDX_RESET_PAGE_GPA {
        RegionKind::TdxResetPage
    } else {
        RegionKind::Other
    }
}

/// The SHA-384 of each page buffer measured so far (PAGE_INFO's CONTENTS, docs/specs.md
/// 5.1), by the buffer's address: pages that share a buffer (every zero page is the one
/// static page of zeros, and pages whose IGVM headers name the same file data share
/// one [`PageContents::Data`] buffer) are hashed once. Only buffers borrowed from the
/// image for the whole measurement are looked up, so an address names one buffer.
#[derive(Debug, Default)]
struct ContentsDigests<'a> {
    known: HashMap<*const [u8; PAGE], [u8; MEASUREMENT_SIZE]>,
    _borrowed: PhantomData<&'a [u8; PAGE]>,
}

impl<'a> ContentsDigests<'a> {
    /// CONTENTS of a NORMAL or VMSA page holding `page`.
    fn of(&mut self, page: &'a [u8; PAGE]) -> [u8; MEASUREMENT_SIZE] {
        *self
            .known
            .entry(core::ptr::from_ref(page))
            .or_insert_with(|| contents_digest(page))
    }
}

/// The measurement the platform computes while the host launches `image` with `cpus`
/// vCPUs, from the first page: the SEV-SNP launch digest or the TDX MRTD.
pub(super) fn measure(image: &LoadedImage, cpus: u32) -> [u8; MEASUREMENT_SIZE] {
    let pages = launch_pages(image, cpus);
    match image.platform {
        PlatformKind::Snp => {
            let mut digest = LaunchDigest::new();
            let mut contents = ContentsDigests::default();
            for page in pages {
                if let LaunchPageType::Snp(page_type) = page.page_type {
                    let measured = if page_type.measures_contents() {
                        contents.of(page.contents.unwrap_or(&ZERO_PAGE))
                    } else {
                        [0; MEASUREMENT_SIZE]
                    };
                    digest.add_page_info(page.gpa, page_type, &measured);
                }
            }
            digest.finish()
        }
        PlatformKind::Tdx => {
            let mut mrtd = Mrtd::new();
            for page in pages {
                let extended = page.page_type == LaunchPageType::TdxAddExtend;
                mrtd.add_page(page.gpa, page.contents.filter(|_| extended));
            }
            mrtd.finish()
        }
    }
}

/// The regions of [`LoadedImage::measured_regions_for_cpus`].
fn measured_regions(image: &LoadedImage, cpus: u32) -> Vec<MeasuredRegion> {
    let mut regions: Vec<(MeasuredRegion, Option<Sha384>)> = Vec::new();
    for page in launch_pages(image, cpus) {
        if let Some((last, hasher)) = regions.last_mut() {
            let continues = last.what == page.what
                && last.page_type == page.page_type
                && last.gpa_end == page.gpa
                && last.vcpu == page.vcpu
                && hasher.is_some() == page.contents.is_some();
            if continues {
                last.gpa_end += PAGE_SIZE_4K;
                last.pages += 1;
                if let (Some(hasher), Some(contents)) = (hasher, page.contents) {
                    hasher.update(contents);
                }
                continue;
            }
        }
        let hasher = page.contents.map(|contents| {
            let mut hasher = Sha384::new();
            hasher.update(contents);
            hasher
        });
        let region = MeasuredRegion {
            what: page.what,
            gpa_start: page.gpa,
            gpa_end: page.gpa + PAGE_SIZE_4K,
            page_type: page.page_type,
            pages: 1,
            sha384: None,
            vcpu: page.vcpu,
        };
        regions.push((region, hasher));
    }
    regions
        .into_iter()
        .map(|(mut region, hasher)| {
            region.sha384 = hasher.map(|hasher| hasher.finalize().into());
            region
        })
        .collect()
}

impl LoadedImage {
    /// The platform's launch measurement for a guest with one vCPU:
    /// [`launch_digest`](Self::launch_digest) on SEV-SNP (the attestation report's
    /// MEASUREMENT), [`mrtd`](Self::mrtd) on TDX. The same as
    /// [`measurement_for_cpus(1)`](Self::measurement_for_cpus).
    pub fn measurement(&self) -> [u8; MEASUREMENT_SIZE] {
        self.measurement_for_cpus(1)
    }

    /// The platform's launch measurement for a guest launched with `cpus` vCPUs (0
    /// counts as 1: there is always the BSP), each starting in the BSP's state as
    /// nacre's host starts them.
    ///
    /// On SEV-SNP KVM measures one VMSA per vCPU at SNP_LAUNCH_FINISH, BSP first, all at
    /// GPA 0xFFFF_FFFF_F000 (docs/specs.md 5.1, 5.5), so the digest depends on `cpus`:
    /// it is [`launch_digest`](Self::launch_digest), the one-vCPU digest, continued
    /// with `cpus - 1` more VMSA updates of the same page
    /// ([`LaunchDigest::resume`]), one SHA-384 of a page each. On TDX the vCPUs are not
    /// measured and this is [`mrtd`](Self::mrtd) whatever `cpus` is.
    pub fn measurement_for_cpus(&self, cpus: u32) -> [u8; MEASUREMENT_SIZE] {
        match self.platform {
            PlatformKind::Snp => {
                let one = self.launch_digest.unwrap_or_else(|| measure(self, 1));
                let Some(vmsa) = vmsa_page(self) else {
                    return one;
                };
                let mut digest = LaunchDigest::resume(one);
                for _ in 1..cpus {
                    digest.add_vmsa(vmsa);
                }
                digest.finish()
            }
            PlatformKind::Tdx => self.mrtd.unwrap_or_else(|| measure(self, 1)),
        }
    }

    /// What the launch of a guest with one vCPU measures:
    /// [`measured_regions_for_cpus(1)`](Self::measured_regions_for_cpus).
    pub fn measured_regions(&self) -> Vec<MeasuredRegion> {
        self.measured_regions_for_cpus(1)
    }

    /// What the launch of a guest with `cpus` vCPUs (0 counts as 1) measures, region
    /// by region in launch order: each run of pages of one kind and page type at
    /// consecutive GPAs, with its page count and the SHA-384 of its contents, so that a
    /// measurement that differs can be traced to the pages that differ. The regions
    /// cover every page the launch adds exactly once; on SEV-SNP that ends with one
    /// VMSA region per vCPU, all at the same GPA. TDX's regions are the same whatever
    /// `cpus` is.
    pub fn measured_regions_for_cpus(&self, cpus: u32) -> Vec<MeasuredRegion> {
        measured_regions(self, cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filetree::FileTreeBuilder;
    use crate::image::{build_image, load_image, PackageInput};
    use crate::measure::snp::contents_digest;
    use crate::testelf;
    use std::collections::BTreeMap;
    use zerocopy::IntoBytes;

    /// A firmware with a TDX reset page and bss, the test app and a file tree.
    struct Inputs {
        firmware: Vec<u8>,
        app: Vec<u8>,
        files: Vec<u8>,
    }

    impl Inputs {
        fn new() -> Self {
            Self {
                firmware: testelf::tdx_firmware(),
                app: testelf::static_app(),
                files: Self::tree(b"data"),
            }
        }

        fn tree(contents: &[u8]) -> Vec<u8> {
            let mut tree = FileTreeBuilder::new(b"app").unwrap();
            tree.add_file(b"/etc/data", contents.to_vec(), 0o644)
                .unwrap();
            tree.build().unwrap()
        }

        fn input(&self) -> PackageInput<'_> {
            PackageInput {
                firmware_elf: &self.firmware,
                app_elf: &self.app,
                args: vec![b"app".to_vec(), b"--flag".to_vec()],
                env: vec![b"HOME=/".to_vec()],
                flags: 0,
                file_tree: &self.files,
                debug: false,
            }
        }
    }

    /// Both platforms' measurements of the image built from `input`.
    fn measurements(input: &PackageInput) -> [[u8; 48]; 2] {
        let image = build_image(input).unwrap();
        [PlatformKind::Snp, PlatformKind::Tdx]
            .map(|platform| load_image(&image, platform).unwrap().measurement())
    }

    /// The `igvm` crate computes both launch measurements from the file alone, with its
    /// own code: they must be ours.
    #[test]
    fn the_igvm_crate_measures_what_we_measure() {
        use igvm::measurement::{generate_snp_measurement, generate_tdx_measurement};
        let inputs = Inputs::new();
        for args in [vec![], vec![b"one".to_vec(), vec![b'x'; 9000]]] {
            let mut input = inputs.input();
            input.args.extend(args);
            let image = build_image(&input).unwrap();
            let file = igvm::IgvmFile::new_from_binary(&image, None).unwrap();
            let snp = generate_snp_measurement(
                file.initializations(),
                file.directives(),
                crate::image::SNP_MASK,
            )
            .unwrap();
            let tdx = generate_tdx_measurement(file.directives(), crate::image::TDX_MASK).unwrap();
            assert_eq!(snp, measurements(&input)[0]);
            assert_eq!(tdx, measurements(&input)[1]);
        }
    }

    fn loaded(platform: PlatformKind) -> LoadedImage {
        let inputs = Inputs::new();
        load_image(&build_image(&inputs.input()).unwrap(), platform).unwrap()
    }

    #[test]
    fn snp_launch_digest_replays_the_launch_sequence() {
        let image = loaded(PlatformKind::Snp);
        let mut digest = LaunchDigest::new();
        for page in &image.pages {
            // The secrets page's contents are the security processor's: whatever they
            // are, they are not measured.
            let (page_type, contents) = match page.contents {
                PageContents::Data(_) | PageContents::Zero => {
                    (PageType::Normal, *page.contents.bytes())
                }
                PageContents::Secrets => (PageType::Secrets, [0xA5; PAGE]),
                PageContents::Cpuid => (PageType::Cpuid, [0x3C; PAGE]),
            };
            digest.add_page(page.gpa, page_type, &contents);
        }
        digest.add_page(image.param_gpa, PageType::Unmeasured, &[0x5A; PAGE]);
        let vmsa: &[u8; PAGE] = image.vmsa.as_ref().unwrap().as_bytes().try_into().unwrap();
        digest.add_vmsa(vmsa);
        let expected = digest.finish();
        assert_eq!(image.launch_digest, Some(expected));
        assert_eq!(image.measurement(), expected);
        assert_eq!(image.mrtd, None);
    }

    /// The launch digest of `image` with `cpus` vCPUs replayed from nothing, page by
    /// page, without [`launch_pages`]: the image's pages, the parameter page, then the
    /// VMSA once per vCPU.
    fn replayed_snp_digest(image: &LoadedImage, cpus: u32) -> [u8; MEASUREMENT_SIZE] {
        let mut digest = LaunchDigest::new();
        for page in &image.pages {
            digest.add_page(
                page.gpa,
                page.contents.snp_page_type(),
                page.contents.bytes(),
            );
        }
        digest.add_page(image.param_gpa, PageType::Unmeasured, &[0x5A; PAGE]);
        let vmsa: &[u8; PAGE] = image.vmsa.as_ref().unwrap().as_bytes().try_into().unwrap();
        for _ in 0..cpus {
            digest.add_vmsa(vmsa);
        }
        digest.finish()
    }

    #[test]
    fn one_cpu_is_the_launch_digest() {
        let image = loaded(PlatformKind::Snp);
        let one = image.launch_digest.unwrap();
        assert_eq!(image.measurement_for_cpus(1), one);
        assert_eq!(image.measurement(), one);
        assert_eq!(replayed_snp_digest(&image, 1), one);
        // There is always the BSP.
        assert_eq!(image.measurement_for_cpus(0), one);
        assert_eq!(measure(&image, 0), one);
    }

    #[test]
    fn more_cpus_continue_the_chain_with_more_vmsas() {
        let image = loaded(PlatformKind::Snp);
        for cpus in [2, 3, 16] {
            let expected = replayed_snp_digest(&image, cpus);
            assert_eq!(image.measurement_for_cpus(cpus), expected, "{cpus} vCPUs");
            assert_eq!(measure(&image, cpus), expected, "{cpus} vCPUs");
        }
        // An image without a stored digest (built by hand) gets the same values.
        let mut bare = image.clone();
        bare.launch_digest = None;
        assert_eq!(bare.measurement_for_cpus(2), image.measurement_for_cpus(2));
    }

    #[test]
    fn the_number_of_cpus_changes_the_snp_digest() {
        let image = loaded(PlatformKind::Snp);
        let digests: std::collections::BTreeSet<[u8; MEASUREMENT_SIZE]> = (1..=16)
            .map(|cpus| image.measurement_for_cpus(cpus))
            .collect();
        assert_eq!(digests.len(), 16);
    }

    #[test]
    fn the_number_of_cpus_does_not_change_the_mrtd() {
        let image = loaded(PlatformKind::Tdx);
        let mrtd = image.mrtd.unwrap();
        for cpus in [0, 1, 2, 16] {
            assert_eq!(image.measurement_for_cpus(cpus), mrtd, "{cpus} vCPUs");
            assert_eq!(measure(&image, cpus), mrtd, "{cpus} vCPUs");
            assert_eq!(
                image.measured_regions_for_cpus(cpus),
                image.measured_regions(),
                "{cpus} vCPUs"
            );
        }
    }

    #[test]
    fn each_cpu_has_a_vmsa_region_bsp_first() {
        let image = loaded(PlatformKind::Snp);
        let one = image.measured_regions();
        let three = image.measured_regions_for_cpus(3);
        assert_eq!(three.len(), one.len() + 2);
        assert_eq!(three[..one.len()], one[..]);
        let vmsas: Vec<&MeasuredRegion> = three
            .iter()
            .filter(|r| r.what == RegionKind::Vmsa)
            .collect();
        assert_eq!(vmsas.len(), 3);
        for (i, r) in vmsas.iter().enumerate() {
            assert_eq!(r.vcpu, Some(i as u32));
            assert_eq!((r.gpa_start, r.pages), (VMSA_GPA, 1));
            assert_eq!(r.sha384, vmsas[0].sha384);
        }
        // They are the last regions, and the only ones naming a vCPU.
        assert!(three[three.len() - 3..]
            .iter()
            .all(|r| r.what == RegionKind::Vmsa));
        assert_eq!(three.iter().filter(|r| r.vcpu.is_some()).count(), 3);
        let json = serde_json::to_value(&three).unwrap();
        assert_eq!(json[three.len() - 1]["vcpu"], 2);
        assert!(json[0].get("vcpu").is_none());
    }

    #[test]
    fn zero_pages_are_normal_pages_of_zeros_on_snp() {
        // The firmware's bss-only pages are NORMAL pages of zeros, as the IGVM format
        // asks; measuring them with the ZERO type would give another digest. The secrets
        // page is SECRETS.
        let image = loaded(PlatformKind::Snp);
        assert!(image
            .pages
            .iter()
            .any(|p| matches!(p.contents, PageContents::Zero)));
        assert!(image
            .pages
            .iter()
            .any(|p| p.gpa == SECRETS_PAGE_GPA && p.contents == PageContents::Secrets));
        let mut as_zero = LaunchDigest::new();
        for page in &image.pages {
            let page_type = match page.contents {
                PageContents::Zero => PageType::Zero,
                _ => page.contents.snp_page_type(),
            };
            as_zero.add_page(page.gpa, page_type, page.contents.bytes());
        }
        as_zero.add_page(image.param_gpa, PageType::Unmeasured, &ZERO_PAGE);
        as_zero.add_vmsa(image.vmsa.as_ref().unwrap().as_bytes().try_into().unwrap());
        assert_ne!(Some(as_zero.finish()), image.launch_digest);
    }

    #[test]
    fn tdx_measurement_is_the_mrtd() {
        let image = loaded(PlatformKind::Tdx);
        assert_eq!(image.launch_digest, None);
        assert_eq!(Some(image.measurement()), image.mrtd);
        let mut mrtd = Mrtd::new();
        for page in &image.pages {
            mrtd.add_page(page.gpa, Some(page.contents.bytes()));
        }
        mrtd.add_page(image.param_gpa, None);
        assert_eq!(image.mrtd, Some(mrtd.finish()));
    }

    #[test]
    fn packaging_is_deterministic() {
        let inputs = Inputs::new();
        let first = build_image(&inputs.input()).unwrap();
        let second = build_image(&Inputs::new().input()).unwrap();
        assert_eq!(first, second);
        assert_eq!(measurements(&inputs.input()), measurements(&inputs.input()));
    }

    #[test]
    fn every_input_changes_both_measurements() {
        let inputs = Inputs::new();
        let [snp, tdx] = measurements(&inputs.input());
        assert_ne!(snp, tdx, "the two platform views measure differently");

        let changed = |what: &str, input: PackageInput| {
            let [s, t] = measurements(&input);
            assert_ne!(s, snp, "{what}: SEV-SNP");
            assert_ne!(t, tdx, "{what}: TDX");
        };
        let mut app = inputs.app.clone();
        let last = app.len() - 1;
        app[last] ^= 1;
        changed(
            "one byte of the app",
            PackageInput {
                app_elf: &app,
                ..inputs.input()
            },
        );
        let mut input = inputs.input();
        input.args[1] = b"--flah".to_vec();
        changed("an argument", input);
        let mut input = inputs.input();
        input.env[0] = b"HOME=/root".to_vec();
        changed("the environment", input);
        let files = Inputs::tree(b"datb");
        changed(
            "one byte of the file tree",
            PackageInput {
                file_tree: &files,
                ..inputs.input()
            },
        );
        changed(
            "the boot flags",
            PackageInput {
                flags: 1,
                ..inputs.input()
            },
        );
        let mut spec = testelf::tdx_firmware_spec();
        spec.segments[0].data[100] ^= 1;
        let firmware = spec.build();
        changed(
            "one byte of the firmware",
            PackageInput {
                firmware_elf: &firmware,
                ..inputs.input()
            },
        );
    }

    /// Every page the launch adds, by measured GPA, with its page type: the image's
    /// pages, the parameter page and on SEV-SNP the VMSA.
    fn expected_pages(image: &LoadedImage) -> BTreeMap<u64, LaunchPageType> {
        let mut pages: BTreeMap<u64, LaunchPageType> = image
            .pages
            .iter()
            .map(|p| {
                let page_type = match image.platform {
                    PlatformKind::Snp => LaunchPageType::Snp(p.contents.snp_page_type()),
                    PlatformKind::Tdx => LaunchPageType::TdxAddExtend,
                };
                (p.gpa, page_type)
            })
            .collect();
        match image.platform {
            PlatformKind::Snp => {
                pages.insert(image.param_gpa, LaunchPageType::Snp(PageType::Unmeasured));
                pages.insert(VMSA_GPA, LaunchPageType::Snp(PageType::Vmsa));
            }
            PlatformKind::Tdx => {
                pages.insert(image.param_gpa, LaunchPageType::TdxAdd);
            }
        }
        pages
    }

    #[test]
    fn regions_cover_every_launch_page_exactly_once() {
        for platform in [PlatformKind::Snp, PlatformKind::Tdx] {
            let image = loaded(platform);
            let regions = image.measured_regions();
            let mut covered: BTreeMap<u64, LaunchPageType> = BTreeMap::new();
            for r in &regions {
                assert_eq!(r.gpa_end - r.gpa_start, r.pages * PAGE_SIZE_4K, "{r:?}");
                for gpa in (r.gpa_start..r.gpa_end).step_by(PAGE) {
                    assert!(
                        covered.insert(gpa, r.page_type).is_none(),
                        "{platform:?}: {gpa:#x} twice"
                    );
                }
            }
            assert_eq!(covered, expected_pages(&image), "{platform:?}");
            let total: u64 = regions.iter().map(|r| r.pages).sum();
            assert_eq!(total as usize, launch_pages(&image, 1).len());
        }
    }

    #[test]
    fn regions_name_what_they_hold() {
        let snp = loaded(PlatformKind::Snp);
        let kinds: Vec<RegionKind> = snp.measured_regions().iter().map(|r| r.what).collect();
        let mut distinct = kinds.clone();
        distinct.dedup();
        // Zero pages are NORMAL too, so the firmware is one region.
        assert_eq!(
            distinct,
            [
                RegionKind::BootInfo,
                RegionKind::SecretsPage,
                RegionKind::CpuidPage,
                RegionKind::PageTables,
                RegionKind::Firmware,
                RegionKind::App,
                RegionKind::Args,
                RegionKind::FileTree,
                RegionKind::ParameterPage,
                RegionKind::Vmsa,
            ]
        );
        let tdx = loaded(PlatformKind::Tdx);
        let mut kinds: Vec<RegionKind> = tdx.measured_regions().iter().map(|r| r.what).collect();
        kinds.dedup();
        assert_eq!(
            kinds,
            [
                RegionKind::BootInfo,
                RegionKind::PageTables,
                RegionKind::Firmware,
                RegionKind::App,
                RegionKind::Args,
                RegionKind::FileTree,
                RegionKind::TdxResetPage,
                RegionKind::ParameterPage,
            ]
        );
    }

    #[test]
    fn region_digests_are_their_contents() {
        let image = loaded(PlatformKind::Snp);
        let regions = image.measured_regions();
        let region = |what| regions.iter().find(|r| r.what == what).unwrap();
        let info = &image.boot_info;
        let app = image
            .measured_bytes(info.app_gpa, info.args_gpa - info.app_gpa)
            .unwrap();
        assert_eq!(
            region(RegionKind::App).sha384,
            Some(Sha384::digest(&app).into())
        );
        let boot = region(RegionKind::BootInfo);
        assert_eq!(boot.pages, 1);
        assert_eq!(
            boot.sha384,
            Some(contents_digest(image.pages[0].contents.bytes()))
        );
        let vmsa = region(RegionKind::Vmsa);
        assert_eq!((vmsa.gpa_start, vmsa.pages), (VMSA_GPA, 1));
        assert_eq!(
            vmsa.sha384,
            Some(Sha384::digest(image.vmsa.as_ref().unwrap().as_bytes()).into())
        );
        assert_eq!(region(RegionKind::ParameterPage).sha384, None);
    }

    #[test]
    fn regions_serialize_for_people_and_scripts() {
        let image = loaded(PlatformKind::Tdx);
        let regions = image.measured_regions();
        let json = serde_json::to_value(&regions).unwrap();
        let first = &json[0];
        assert_eq!(first["what"], "boot-info");
        assert_eq!(first["gpa_start"], "0x1000");
        assert_eq!(first["gpa_end"], "0x2000");
        assert_eq!(first["page_type"], "PAGE.ADD+MR.EXTEND");
        assert_eq!(first["pages"], 1);
        assert_eq!(first["sha384"].as_str().unwrap().len(), 96);
        let last = &json[regions.len() - 1];
        assert_eq!(last["what"], "parameter-page");
        assert_eq!(last["page_type"], "PAGE.ADD");
        assert!(last["sha384"].is_null());
        let snp = serde_json::to_value(loaded(PlatformKind::Snp).measured_regions()).unwrap();
        let types: Vec<&str> = snp
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["page_type"].as_str().unwrap())
            .collect();
        for name in ["NORMAL", "SECRETS", "UNMEASURED", "VMSA"] {
            assert!(types.contains(&name), "{name}: {types:?}");
        }
        assert!(!types.contains(&"ZERO"), "{types:?}");
    }
}
