//! Tests of images that serve both SEV-SNP and TDX: the platform views, their boot
//! information, digests and MRTD, and what a corruption of one view does to the other.

use super::build::{image_file, page_data, snp_platform, tdx_platform};
use super::*;
use crate::filetree::FileTreeBuilder;
use crate::measure::tdx::Mrtd;
use crate::pagetable::{pd_index, pdpt_index, pml4_index, InitialPageTables};
use crate::pagetable::{PTE_PAGE_SIZE, PTE_PRESENT};
use crate::testelf::{self, pattern};
use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
    IsolationType,
};
use igvm_defs::IgvmPlatformType;
use nacre_shared_abi::boot::{BootInfo, BootInfoError, PlatformKind};
use nacre_shared_abi::filetree::FileTreeError;
use nacre_shared_abi::layout::{
    align_up, APP_IMAGE_GPA, FIRMWARE_GPA, HOST_PARAM_GPA, INITIAL_MAP_SIZE, INITIAL_PT_GPA,
    KERNEL_VA_BASE, MIN_GUEST_MEMORY, PAGE_SIZE_2M, PAGE_SIZE_4K, SNP_VMSA_GPA,
    TDX_MAX_GUEST_MEMORY, TDX_RESET_PAGE_GPA, TDX_RESET_VECTOR,
};
use nacre_shared_abi::tdx::attributes;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use zerocopy::{FromBytes, IntoBytes};

const PAGE: usize = 4096;

/// Inputs: a firmware ELF (with or without the reset page), the test app and its
/// (minimal) file tree.
struct Inputs {
    firmware: Vec<u8>,
    app: Vec<u8>,
    files: Vec<u8>,
}

impl Inputs {
    fn dual() -> Self {
        Self {
            firmware: testelf::tdx_firmware(),
            app: testelf::static_app(),
            files: FileTreeBuilder::new(b"app").unwrap().build().unwrap(),
        }
    }

    fn snp_only() -> Self {
        Self {
            firmware: testelf::firmware(),
            ..Self::dual()
        }
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

    fn build(&self) -> Vec<u8> {
        build_image(&self.input()).unwrap()
    }
}

fn dual_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| Inputs::dual().build())
}

fn snp_only_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| Inputs::snp_only().build())
}

fn snp(bytes: &[u8]) -> Result<LoadedImage, ImageError> {
    load_image(bytes, PlatformKind::Snp)
}

fn tdx(bytes: &[u8]) -> Result<LoadedImage, ImageError> {
    load_image(bytes, PlatformKind::Tdx)
}

/// Serialize the dual image after `edit` changed its directives.
fn edited(edit: impl FnOnce(&mut Vec<IgvmDirectiveHeader>)) -> Vec<u8> {
    let mut directives = image_file(&Inputs::dual().input())
        .unwrap()
        .directives()
        .to_vec();
    edit(&mut directives);
    let file = IgvmFile::new(
        IgvmRevision::V1,
        vec![snp_platform(), tdx_platform()],
        Vec::new(),
        directives,
    )
    .unwrap();
    let mut out = Vec::new();
    file.serialize(&mut out).unwrap();
    out
}

/// The data of the page directive at `gpa` on exactly `mask`.
fn page_of(directives: &mut [IgvmDirectiveHeader], at: u64, on: u32) -> &mut Vec<u8> {
    directives
        .iter_mut()
        .find_map(|d| match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                data,
                ..
            } if *gpa == at && *compatibility_mask == on => Some(data),
            _ => None,
        })
        .unwrap()
}

/// Where the file data of `image` lies: `(GPA, mask, file offset)` of every page with
/// file bytes, in header order, and the VMSA's file offset.
fn file_data(image: &[u8]) -> (Vec<(u64, u32, usize)>, usize) {
    use igvm_defs::{
        IgvmVariableHeaderType as T, IGVM_VHS_PAGE_DATA, IGVM_VHS_VARIABLE_HEADER,
        IGVM_VHS_VP_CONTEXT,
    };
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize;
    let mut at = u32_at(8);
    let end = at + u32_at(12);
    let mut pages = Vec::new();
    let mut vmsa = None;
    while at < end {
        let (header, body) = IGVM_VHS_VARIABLE_HEADER::read_from_prefix(&image[at..end]).unwrap();
        match header.typ {
            T::IGVM_VHT_PAGE_DATA => {
                let (page, _) = IGVM_VHS_PAGE_DATA::read_from_prefix(body).unwrap();
                if page.file_offset != 0 {
                    pages.push((page.gpa, page.compatibility_mask, page.file_offset as usize));
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

/// The error of a load that must fail (without printing a whole image if it loaded).
fn fails(result: Result<LoadedImage, ImageError>, what: &str) -> ImageError {
    match result {
        Ok(loaded) => panic!("{what}: the {:?} view loaded", loaded.platform),
        Err(err) => err,
    }
}

fn flipped(image: &[u8], at: usize, flip: u8) -> Vec<u8> {
    let mut image = image.to_vec();
    image[at] ^= flip;
    image
}

fn page(bytes: &[u8]) -> PageContents {
    let mut page = [0u8; PAGE];
    page[..bytes.len()].copy_from_slice(bytes);
    PageContents::Data(page.into())
}

#[test]
fn the_igvm_crate_accepts_one_gpa_on_disjoint_masks() {
    // Two page directives at BOOT_INFO_GPA (and at the page tables) on masks 1 and 2:
    // the `igvm` parser and validator take the file, and its own platform filter gives
    // each platform one page per GPA.
    let file = IgvmFile::new_from_binary(dual_image(), None).unwrap();
    let at_boot_info: Vec<u32> = file
        .directives()
        .iter()
        .filter_map(|d| match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                ..
            } if *gpa == BOOT_INFO_GPA => Some(*compatibility_mask),
            _ => None,
        })
        .collect();
    assert_eq!(at_boot_info, [SNP_MASK, TDX_MASK]);

    // The crate's TDX filter keeps exactly the directives of the loader's TDX view.
    let filtered = IgvmFile::new_from_binary(dual_image(), Some(IsolationType::Tdx)).unwrap();
    let pages: Vec<(u64, PageContents)> = filtered
        .directives()
        .iter()
        .filter_map(|d| match d {
            IgvmDirectiveHeader::PageData { gpa, data, .. } => Some((
                *gpa,
                if data.is_empty() {
                    PageContents::Zero
                } else {
                    page(data)
                },
            )),
            _ => None,
        })
        .collect();
    let loaded = tdx(dual_image()).unwrap();
    let expected: Vec<(u64, PageContents)> = loaded
        .pages
        .into_iter()
        .map(|p| (p.gpa, p.contents))
        .collect();
    assert_eq!(pages, expected);
    assert!(!filtered
        .directives()
        .iter()
        .any(|d| matches!(d, IgvmDirectiveHeader::SnpVpContext { .. })));
}

#[test]
fn platform_headers() {
    assert_eq!(
        image_platforms(dual_image()).unwrap(),
        [PlatformKind::Snp, PlatformKind::Tdx]
    );
    assert_eq!(
        image_platforms(snp_only_image()).unwrap(),
        [PlatformKind::Snp]
    );
    assert!(matches!(image_platforms(b"nope"), Err(ImageError::NotIgvm)));

    let file = IgvmFile::new_from_binary(dual_image(), None).unwrap();
    let headers: Vec<_> = file
        .platforms()
        .iter()
        .map(|IgvmPlatformHeader::SupportedPlatform(p)| {
            (
                p.compatibility_mask,
                p.platform_type,
                p.platform_version,
                p.shared_gpa_boundary,
            )
        })
        .collect();
    assert_eq!(
        headers,
        [
            (SNP_MASK, IgvmPlatformType::SEV_SNP, 1, 0),
            (TDX_MASK, IgvmPlatformType::TDX, 1, 1 << 47),
        ]
    );

    // An SNP-only image names only mask 1 anywhere.
    let file = IgvmFile::new_from_binary(snp_only_image(), None).unwrap();
    assert_eq!(file.platforms().len(), 1);
    for d in file.directives() {
        if let Some(mask) = d.compatibility_mask() {
            assert_eq!(mask, SNP_MASK, "{d:?}");
        }
    }
}

#[test]
fn snp_view_is_the_snp_only_image() {
    // The reset page changes nothing SEV-SNP sees: same pages in the same order, same
    // boot information (digest included), same VMSA, so the same launch measurement.
    let dual = snp(dual_image()).unwrap();
    let only = snp(snp_only_image()).unwrap();
    assert_eq!(dual, only);
    assert_eq!(dual.boot_info.image_digest, only.boot_info.image_digest);
    assert_eq!(dual.pages.len(), only.pages.len());
    assert!(dual.pages.iter().all(|p| p.gpa != TDX_RESET_PAGE_GPA));
    assert_eq!(
        dual.vmsa.as_ref().unwrap().rip,
        testelf::FIRMWARE_ENTRY - KERNEL_VA_BASE
    );
}

#[test]
fn per_platform_boot_info() {
    let snp_view = snp(dual_image()).unwrap();
    let tdx_view = tdx(dual_image()).unwrap();
    let (s, t) = (snp_view.boot_info, tdx_view.boot_info);
    assert_eq!(s.platform, PlatformKind::Snp as u32);
    assert_eq!(s.c_bit, 0);
    assert_eq!(t.platform, PlatformKind::Tdx as u32);
    assert_eq!(t.c_bit, 0);
    assert_ne!(s.image_digest, t.image_digest);
    // Everything else is the same handoff.
    let same = BootInfo {
        platform: s.platform,
        c_bit: s.c_bit,
        image_digest: s.image_digest,
        ..t
    };
    assert_eq!(same, s);
    assert_eq!(t.firmware_end, testelf::FIRMWARE_END);
    assert_eq!(tdx_view.min_memory, MIN_GUEST_MEMORY);
    assert_eq!(tdx_view.param_gpa, HOST_PARAM_GPA);
}

#[test]
fn tdx_round_trip() {
    let inputs = Inputs::dual();
    let loaded = tdx(dual_image()).unwrap();
    let snp_view = snp(dual_image()).unwrap();
    assert_eq!(loaded.platform, PlatformKind::Tdx);
    assert_eq!(loaded.vmsa, None);

    let mut expected = vec![ImagePage {
        gpa: BOOT_INFO_GPA,
        contents: page(loaded.boot_info.as_bytes()),
    }];
    for (i, table) in InitialPageTables::new().to_pages().iter().enumerate() {
        expected.push(ImagePage {
            gpa: INITIAL_PT_GPA + i as u64 * PAGE_SIZE_4K,
            contents: page(table),
        });
    }
    // The firmware, app, arguments and file tree: the SNP view's pages after its boot
    // information, secrets page, CPUID page and the four page tables.
    assert_eq!(snp_view.pages[7].gpa, FIRMWARE_GPA);
    expected.extend(snp_view.pages[7..].iter().cloned());
    expected.push(ImagePage {
        gpa: TDX_RESET_PAGE_GPA,
        contents: page(&pattern(PAGE, testelf::TDX_RESET_SEED)),
    });
    assert_eq!(loaded.pages, expected);
    assert_eq!(
        loaded.pages[5].gpa, FIRMWARE_GPA,
        "the firmware follows the four tables"
    );
    let app_pages = inputs.app.len().div_ceil(PAGE);
    // The file tree: one page of structure, one each for /etc/group, /etc/hosts and
    // /etc/passwd.
    assert_eq!(loaded.pages.len(), 1 + 4 + 5 + app_pages + 1 + 4 + 1);
    assert!(loaded.pages.iter().any(|p| p.gpa == APP_IMAGE_GPA));

    // The digest: every page but the boot information, no VMSA.
    let mut hasher = Sha256::new();
    for page in &expected[1..] {
        hasher.update(page.gpa.to_le_bytes());
        hasher.update(page.contents.bytes());
    }
    let digest: [u8; 32] = hasher.finalize().into();
    assert_eq!(loaded.boot_info.image_digest, digest);

    // MRTD: per page PAGE.ADD + 16 MR.EXTEND, then PAGE.ADD of the parameter page.
    let mut mrtd = Mrtd::new();
    for page in &expected {
        mrtd.add_page(page.gpa, Some(page.contents.bytes()));
    }
    mrtd.add_page(HOST_PARAM_GPA, None);
    assert_eq!(loaded.mrtd, Some(mrtd.finish()));
}

/// Walk the TDX view's tables from its pages and return the GPA `va` maps to.
fn walk(pages: &[ImagePage], va: u64) -> Option<u64> {
    let read = |table: u64, index: usize| {
        let page = pages.iter().find(|p| p.gpa == table).unwrap();
        u64::from_le_bytes(
            page.contents.bytes()[index * 8..index * 8 + 8]
                .try_into()
                .unwrap(),
        )
    };
    let mut table = INITIAL_PT_GPA;
    for (level, index) in [pml4_index(va), pdpt_index(va), pd_index(va)]
        .into_iter()
        .enumerate()
    {
        let entry = read(table, index);
        if entry & PTE_PRESENT == 0 {
            return None;
        }
        assert_eq!(entry >> 40, 0, "{entry:#x}: no encryption or high bits");
        let addr = entry & 0x000f_ffff_ffff_f000;
        if level == 2 {
            assert_ne!(entry & PTE_PAGE_SIZE, 0);
            return Some(addr + (va & (PAGE_SIZE_2M - 1)));
        }
        table = addr;
    }
    None
}

#[test]
fn tdx_tables_in_the_image_map_reset_page_and_firmware() {
    let loaded = tdx(dual_image()).unwrap();
    assert_eq!(
        walk(&loaded.pages, TDX_RESET_VECTOR),
        Some(TDX_RESET_VECTOR)
    );
    assert_eq!(
        walk(&loaded.pages, TDX_RESET_PAGE_GPA),
        Some(TDX_RESET_PAGE_GPA)
    );
    for x in [0, FIRMWARE_GPA, FIRMWARE_GPA + 0x1234, INITIAL_MAP_SIZE - 1] {
        assert_eq!(walk(&loaded.pages, KERNEL_VA_BASE + x), Some(x), "{x:#x}");
        assert_eq!(walk(&loaded.pages, x), Some(x), "{x:#x}");
    }
    // The app is not mapped: the firmware maps it in its own tables.
    assert_eq!(walk(&loaded.pages, KERNEL_VA_BASE + APP_IMAGE_GPA), None);
    // The firmware's entry is mapped to its measured first page; the reset vector to
    // the measured reset page.
    let entry = walk(&loaded.pages, testelf::FIRMWARE_ENTRY).unwrap();
    assert!(loaded.pages.iter().any(|p| p.gpa == entry & !0xfff));
    assert!(loaded
        .pages
        .iter()
        .any(|p| p.gpa == TDX_RESET_VECTOR & !0xfff));
    // The SEV-SNP view has the same tables: no page depends on the platform's C-bit.
    let snp_view = snp(dual_image()).unwrap();
    let tables = InitialPageTables::new().to_pages();
    for (i, table) in tables.iter().enumerate() {
        assert_eq!(
            snp_view.pages[3 + i].gpa,
            INITIAL_PT_GPA + i as u64 * PAGE_SIZE_4K
        );
        assert_eq!(snp_view.pages[3 + i].contents.bytes(), table);
        assert_eq!(loaded.pages[1 + i].contents.bytes(), table);
    }
}

/// The TDX view's MRTD of an image built from `inputs`, and its SEV-SNP view.
fn views<'a>(
    inputs: &'a Inputs,
    edit: impl FnOnce(&mut PackageInput<'a>),
) -> (LoadedImage, LoadedImage) {
    let mut input = inputs.input();
    edit(&mut input);
    let image = build_image(&input).unwrap();
    (tdx(&image).unwrap(), snp(&image).unwrap())
}

#[test]
fn mrtd_covers_exactly_the_tdx_content() {
    let base = Inputs::dual();
    let (t0, s0) = views(&base, |_| {});
    let (t1, _) = views(&base, |_| {});
    assert_eq!(t0.mrtd, t1.mrtd, "deterministic");
    let mrtd = t0.mrtd.unwrap();
    assert_ne!(mrtd, [0; 48]);

    // Any TDX-visible byte: the app, the arguments, the firmware, the reset page.
    let mut app = base.app.clone();
    let last = app.len() - 1;
    app[last] ^= 1;
    let (t, _) = views(&base, |i| i.app_elf = &app);
    assert_ne!(t.mrtd.unwrap(), mrtd, "app");
    let (t, _) = views(&base, |i| i.args[1] = b"--flah".to_vec());
    assert_ne!(t.mrtd.unwrap(), mrtd, "arguments");
    let (t, _) = views(&base, |i| i.flags = 1);
    assert_ne!(t.mrtd.unwrap(), mrtd, "boot flags");

    let mut spec = testelf::tdx_firmware_spec();
    spec.segments[0].data[100] ^= 1;
    let firmware = spec.build();
    let (t, _) = views(&base, |i| i.firmware_elf = &firmware);
    assert_ne!(t.mrtd.unwrap(), mrtd, "firmware");

    let mut spec = testelf::tdx_firmware_spec();
    spec.segments[2] = testelf::tdx_reset_segment(testelf::TDX_RESET_SEED + 2);
    let firmware = spec.build();
    let (t, s) = views(&base, |i| i.firmware_elf = &firmware);
    assert_ne!(t.mrtd.unwrap(), mrtd, "reset page");
    assert_eq!(s, s0, "the reset page is not part of the SEV-SNP view");

    // SEV-SNP-only content: another 64-bit entry point changes only the VMSA.
    let mut spec = testelf::tdx_firmware_spec();
    spec.entry += 0x20;
    let firmware = spec.build();
    let (t, s) = views(&base, |i| i.firmware_elf = &firmware);
    assert_eq!(t, t0, "the VMSA is not part of the TDX view");
    assert_ne!(s.vmsa, s0.vmsa);
    assert_ne!(s.boot_info.image_digest, s0.boot_info.image_digest);
}

#[test]
fn a_changed_vmsa_breaks_only_the_snp_view() {
    let image = edited(|d| {
        for directive in d.iter_mut() {
            if let IgvmDirectiveHeader::SnpVpContext { vmsa, .. } = directive {
                vmsa.rsp = 0x1234;
            }
        }
    });
    let err = fails(snp(&image), "");
    assert!(
        matches!(
            err,
            ImageError::DigestMismatch {
                platform: PlatformKind::Snp
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("SEV-SNP"), "{err}");
    assert_eq!(tdx(&image).unwrap(), tdx(dual_image()).unwrap());

    // In the file: every byte of the VMSA.
    let (_, vmsa) = file_data(dual_image());
    for byte in [0x08, 0x800, PAGE - 1] {
        let image = flipped(dual_image(), vmsa + byte, 1);
        assert!(snp(&image).is_err(), "VMSA byte {byte:#x}");
        assert_eq!(tdx(&image).unwrap().mrtd, tdx(dual_image()).unwrap().mrtd);
    }
}

#[test]
fn corrupt_tdx_pages_break_only_the_tdx_view() {
    let (pages, _) = file_data(dual_image());
    let tdx_only: Vec<_> = pages.iter().filter(|p| p.1 == TDX_MASK).collect();
    // Boot information, the reset page.
    assert_eq!(tdx_only.len(), 2);
    assert!(tdx_only.iter().any(|p| p.0 == TDX_RESET_PAGE_GPA));
    for &&(gpa, _, offset) in &tdx_only {
        for byte in [0, 0x50, 0x77, 0x300, PAGE - 1] {
            let image = flipped(dual_image(), offset + byte, 0x04);
            let err = fails(tdx(&image), &format!("{gpa:#x}+{byte:#x}"));
            let message = err.to_string();
            if gpa == BOOT_INFO_GPA {
                assert!(
                    matches!(
                        err,
                        ImageError::InvalidBootInfo(_)
                            | ImageError::BootInfoMismatch { .. }
                            | ImageError::DigestMismatch { .. }
                    ),
                    "{gpa:#x}+{byte:#x}: {err:?}"
                );
            } else {
                assert!(
                    matches!(
                        err,
                        ImageError::DigestMismatch {
                            platform: PlatformKind::Tdx
                        }
                    ),
                    "{gpa:#x}+{byte:#x}: {err:?}"
                );
                assert!(
                    message.contains("TDX") && message.contains("corrupt"),
                    "{message}"
                );
            }
            let snp_view = snp(&image).unwrap_or_else(|e| panic!("{gpa:#x}+{byte:#x}: {e}"));
            assert_eq!(snp_view, snp(dual_image()).unwrap());
        }
    }
}

#[test]
fn corrupt_shared_pages_break_both_views() {
    let (pages, _) = file_data(dual_image());
    let shared: Vec<_> = pages
        .iter()
        .filter(|p| p.1 == SNP_MASK | TDX_MASK)
        .collect();
    assert!(shared.iter().any(|p| p.0 == FIRMWARE_GPA));
    assert!(shared.iter().any(|p| p.0 == APP_IMAGE_GPA));
    for &&(gpa, _, offset) in &shared {
        let image = flipped(dual_image(), offset + 0x123, 0x10);
        for (platform, result) in [
            (PlatformKind::Snp, snp(&image)),
            (PlatformKind::Tdx, tdx(&image)),
        ] {
            let err = fails(result, &format!("{gpa:#x}"));
            assert!(
                matches!(err, ImageError::DigestMismatch { platform: p } if p == platform),
                "{gpa:#x}: {err:?}"
            );
        }
    }
}

#[test]
fn tdx_boot_info_is_checked_against_the_platform() {
    let edit_tdx_info = |change: fn(&mut BootInfo)| {
        edited(|d| {
            let data = page_of(d, BOOT_INFO_GPA, TDX_MASK);
            let (mut info, _) = BootInfo::read_from_prefix(data.as_slice()).unwrap();
            change(&mut info);
            data[..core::mem::size_of::<BootInfo>()].copy_from_slice(info.as_bytes());
        })
    };
    let image = edit_tdx_info(|i| i.platform = PlatformKind::Snp as u32);
    let err = fails(tdx(&image), "");
    assert!(
        matches!(err, ImageError::BootInfoMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("TDX"), "{err}");
    snp(&image).unwrap();

    let image = edit_tdx_info(|i| i.c_bit = 47);
    let err = fails(tdx(&image), "");
    assert!(
        matches!(err, ImageError::BootInfoMismatch { .. }),
        "{err:?}"
    );
    snp(&image).unwrap();

    let image = edit_tdx_info(|i| i.magic[0] ^= 1);
    let err = fails(tdx(&image), "");
    assert!(matches!(err, ImageError::InvalidBootInfo(_)), "{err:?}");
    snp(&image).unwrap();

    // The SEV-SNP boot information may not name TDX either.
    let image = edited(|d| {
        let data = page_of(d, BOOT_INFO_GPA, SNP_MASK);
        data[0x0C] = PlatformKind::Tdx as u8;
    });
    let err = fails(snp(&image), "");
    assert!(
        matches!(err, ImageError::BootInfoMismatch { .. }),
        "{err:?}"
    );
    tdx(&image).unwrap();
}

#[test]
fn tdx_refuses_more_memory_than_a_td_has() {
    // min_memory is in the (digest-free) boot information page; 8 GiB is a valid SNP
    // size but above the TD's RAM limit.
    let image = edited(|d| {
        for mask in [SNP_MASK, TDX_MASK] {
            let data = page_of(d, BOOT_INFO_GPA, mask);
            data[0x48..0x50].copy_from_slice(&(8u64 << 30).to_le_bytes());
        }
    });
    let err = fails(tdx(&image), "");
    assert!(
        matches!(err, ImageError::TooLargeForTdx { min_memory } if min_memory == 8 << 30),
        "{err:?}"
    );
    assert!(err.to_string().contains("TDX"), "{err}");
    assert_eq!(snp(&image).unwrap().min_memory, 8 << 30);
    // Exactly the limit is fine.
    const _: () = assert!(TDX_MAX_GUEST_MEMORY.is_multiple_of(PAGE_SIZE_2M));
    let image = edited(|d| {
        let data = page_of(d, BOOT_INFO_GPA, TDX_MASK);
        data[0x48..0x50].copy_from_slice(&TDX_MAX_GUEST_MEMORY.to_le_bytes());
    });
    assert_eq!(tdx(&image).unwrap().min_memory, TDX_MAX_GUEST_MEMORY);
}

#[test]
fn tdx_needs_its_reset_page_and_tables() {
    let image = edited(|d| {
        d.retain(|d| {
            !matches!(d, IgvmDirectiveHeader::PageData { gpa, .. } if *gpa == TDX_RESET_PAGE_GPA)
        });
    });
    let err = fails(tdx(&image), "");
    assert!(matches!(err, ImageError::MissingTdxResetPage), "{err:?}");
    assert!(err.to_string().contains("reset page"), "{err}");
    snp(&image).unwrap();

    let image = edited(|d| {
        d.retain(|d| {
            !matches!(d, IgvmDirectiveHeader::PageData { gpa, compatibility_mask, .. }
                if *gpa == INITIAL_PT_GPA + 3 * PAGE_SIZE_4K && *compatibility_mask == SNP_MASK | TDX_MASK)
        });
    });
    let err = fails(tdx(&image), "");
    assert!(matches!(err, ImageError::MissingPageTables), "{err:?}");
    let err = fails(snp(&image), "");
    assert!(matches!(err, ImageError::MissingPageTables), "{err:?}");

    // A reset page in the SEV-SNP view is above its RAM.
    let image = edited(|d| {
        for directive in d.iter_mut() {
            if let IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                ..
            } = directive
            {
                if *gpa == TDX_RESET_PAGE_GPA {
                    *compatibility_mask = SNP_MASK | TDX_MASK;
                }
            }
        }
    });
    let err = fails(snp(&image), "");
    assert!(
        matches!(
            err,
            ImageError::PageOutOfRange {
                gpa: TDX_RESET_PAGE_GPA,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn snp_only_firmware_cannot_run_on_tdx() {
    let err = fails(tdx(snp_only_image()), "");
    assert!(matches!(err, ImageError::NoTdxPlatform), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("the image's firmware has no TDX entry point (reset page)"),
        "{message}"
    );
}

#[test]
fn masks_must_name_declared_platforms() {
    // (The `igvm` parser drops a directive on mask 0: it applies to no platform.)
    for bad in [4, SNP_MASK | 4, TDX_MASK | 8] {
        let image = edited(|d| {
            let at = d
                .iter()
                .position(|d| !matches!(d, IgvmDirectiveHeader::PageData { .. }))
                .unwrap();
            d.insert(at, page_data(0x20_0000 + PAGE_SIZE_4K, bad, Vec::new()));
        });
        for result in [snp(&image), tdx(&image)] {
            let err = fails(result, &format!("{bad:#x}"));
            assert!(
                matches!(err, ImageError::WrongCompatibilityMask { mask, .. } if mask == bad),
                "{bad:#x}: {err:?}"
            );
        }
    }
}

#[test]
fn pages_after_the_parameter_page_are_refused() {
    let image = edited(|d| {
        let vmsa = d
            .iter()
            .position(|d| matches!(d, IgvmDirectiveHeader::SnpVpContext { .. }))
            .unwrap();
        d.insert(vmsa, page_data(0x30_0000, TDX_MASK, Vec::new()));
    });
    let err = fails(tdx(&image), "");
    assert!(
        matches!(err, ImageError::BadParameterArea { .. }),
        "{err:?}"
    );
    // SEV-SNP does not see that page.
    snp(&image).unwrap();
}

#[test]
fn two_platforms_on_one_mask_are_refused() {
    let directives = image_file(&Inputs::snp_only().input())
        .unwrap()
        .directives()
        .to_vec();
    let mut tdx_on_1 = tdx_platform();
    let IgvmPlatformHeader::SupportedPlatform(header) = &mut tdx_on_1;
    header.compatibility_mask = SNP_MASK;
    let file = IgvmFile::new(
        IgvmRevision::V1,
        vec![snp_platform(), tdx_on_1],
        Vec::new(),
        directives,
    )
    .unwrap();
    let mut image = Vec::new();
    file.serialize(&mut image).unwrap();
    let err = image_platforms(&image).unwrap_err();
    assert!(
        matches!(err, ImageError::SharedPlatformMask { mask: SNP_MASK }),
        "{err:?}"
    );
}

#[test]
fn the_vmsa_is_not_in_the_tdx_view() {
    let loaded = tdx(dual_image()).unwrap();
    assert!(loaded.pages.iter().all(|p| p.gpa != SNP_VMSA_GPA));
    assert_eq!(loaded.vmsa, None);
    assert!(snp(dual_image()).unwrap().mrtd.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn single_byte_corruption_never_panics(index in any::<prop::sample::Index>(), value in any::<u8>()) {
        let mut image = dual_image().to_vec();
        let at = index.index(image.len());
        image[at] = value;
        let _ = snp(&image);
        let _ = tdx(&image);
        let _ = image_platforms(&image);
    }
}

// ---- The file tree ----

/// A tree with a few files, one of them several pages long.
fn sample_tree() -> Vec<u8> {
    let mut tree = FileTreeBuilder::new(b"app").unwrap();
    tree.add_file(b"/etc/app/config.toml", b"x = 1\n".to_vec(), 0o644)
        .unwrap();
    tree.add_file(b"/data/big", pattern(3 * PAGE + 100, 9), 0o600)
        .unwrap();
    tree.add_dir(b"/data/empty", 0o700).unwrap();
    tree.build().unwrap()
}

fn with_files() -> Inputs {
    Inputs {
        files: sample_tree(),
        ..Inputs::dual()
    }
}

fn files_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| with_files().build())
}

#[test]
fn file_tree_pages_are_measured_on_both_platforms() {
    use nacre_shared_abi::filetree::{FileTree, Resolved};
    let blob = sample_tree();
    assert_eq!(blob.len() % PAGE, 0);
    assert!(blob.len() > 4 * PAGE);
    for loaded in [snp(files_image()).unwrap(), tdx(files_image()).unwrap()] {
        let info = loaded.boot_info;
        assert_eq!(
            info.fs_gpa,
            align_up(info.args_gpa + info.args_size, PAGE_SIZE_4K)
        );
        assert_eq!(info.fs_size, blob.len() as u64);
        assert_eq!(info.image_end, info.fs_gpa + info.fs_size);
        // Every page of the tree is a measured data page, in order, after the args.
        let first = loaded
            .pages
            .iter()
            .position(|p| p.gpa == info.fs_gpa)
            .unwrap();
        for (i, chunk) in blob.chunks(PAGE).enumerate() {
            let page = &loaded.pages[first + i];
            assert_eq!(page.gpa, info.fs_gpa + (i * PAGE) as u64);
            assert_eq!(page.contents.bytes().as_slice(), chunk);
        }
        assert_eq!(loaded.file_tree().unwrap(), blob);
        // The measured bytes decode to the files.
        let tree_bytes = loaded.file_tree().unwrap();
        let tree = FileTree::parse(&tree_bytes).unwrap();
        let Ok(Resolved::Inode(big)) = tree.resolve(0, b"/data/big", |_, _| None::<()>) else {
            panic!("/data/big does not resolve");
        };
        let inode = tree.inode(big).unwrap();
        assert_eq!(
            tree.file_bytes(&inode).unwrap(),
            pattern(3 * PAGE + 100, 9).as_slice()
        );
        assert!(matches!(
            tree.resolve(0, b"/app/app", |_, _| None::<()>),
            Ok(Resolved::Inode(_))
        ));
    }
    // The TDX MRTD covers the same pages (it is computed from the page list).
    assert_ne!(
        tdx(files_image()).unwrap().mrtd,
        tdx(dual_image()).unwrap().mrtd
    );
}

#[test]
fn corrupt_file_tree_pages_break_both_views() {
    let info = snp(files_image()).unwrap().boot_info;
    let (pages, _) = file_data(files_image());
    let tree_pages: Vec<_> = pages
        .iter()
        .filter(|p| (info.fs_gpa..info.image_end).contains(&p.0))
        .collect();
    assert_eq!(tree_pages.len() as u64, info.fs_size / PAGE_SIZE_4K);
    for &&(gpa, mask, offset) in &tree_pages {
        assert_eq!(mask, SNP_MASK | TDX_MASK, "{gpa:#x}");
        for byte in [0, 0x41, PAGE - 1] {
            let image = flipped(files_image(), offset + byte, 0x20);
            for (platform, result) in [
                (PlatformKind::Snp, snp(&image)),
                (PlatformKind::Tdx, tdx(&image)),
            ] {
                let err = fails(result, &format!("{gpa:#x}+{byte:#x}"));
                assert!(
                    matches!(err, ImageError::DigestMismatch { platform: p } if p == platform),
                    "{gpa:#x}+{byte:#x}: {err:?}"
                );
            }
        }
    }
}

#[test]
fn file_contents_are_part_of_the_measurement() {
    let base = with_files();
    let (t0, s0) = views(&base, |_| {});
    let mut tree = FileTreeBuilder::new(b"app").unwrap();
    tree.add_file(b"/etc/app/config.toml", b"x = 2\n".to_vec(), 0o644)
        .unwrap();
    tree.add_file(b"/data/big", pattern(3 * PAGE + 100, 9), 0o600)
        .unwrap();
    tree.add_dir(b"/data/empty", 0o700).unwrap();
    let other = tree.build().unwrap();
    assert_eq!(other.len(), base.files.len());
    let (t1, s1) = views(&base, |i| i.file_tree = &other);
    assert_ne!(t1.mrtd, t0.mrtd);
    assert_ne!(s1.boot_info.image_digest, s0.boot_info.image_digest);
    assert_ne!(t1.boot_info.image_digest, t0.boot_info.image_digest);
    // Only a mode changes: also measured.
    let mut tree = FileTreeBuilder::new(b"app").unwrap();
    tree.add_file(b"/etc/app/config.toml", b"x = 1\n".to_vec(), 0o600)
        .unwrap();
    tree.add_file(b"/data/big", pattern(3 * PAGE + 100, 9), 0o600)
        .unwrap();
    tree.add_dir(b"/data/empty", 0o700).unwrap();
    let other = tree.build().unwrap();
    let (t2, _) = views(&base, |i| i.file_tree = &other);
    assert_ne!(t2.mrtd, t0.mrtd);
}

#[test]
fn packaging_with_files_is_deterministic() {
    let a = with_files().build();
    let b = with_files().build();
    assert_eq!(a, b);
    assert_eq!(a, files_image());
    // The same files added in another order: the same image.
    let mut tree = FileTreeBuilder::new(b"app").unwrap();
    tree.add_dir(b"/data/empty", 0o700).unwrap();
    tree.add_file(b"/data/big", pattern(3 * PAGE + 100, 9), 0o600)
        .unwrap();
    tree.add_file(b"/etc/app/config.toml", b"x = 1\n".to_vec(), 0o644)
        .unwrap();
    let inputs = Inputs {
        files: tree.build().unwrap(),
        ..Inputs::dual()
    };
    assert_eq!(inputs.build(), a);
}

#[test]
fn build_checks_the_file_tree() {
    let inputs = Inputs::dual();
    let build = |tree: &[u8]| {
        let mut input = inputs.input();
        input.file_tree = tree;
        build_image(&input).unwrap_err()
    };
    let err = build(b"");
    assert!(matches!(err, ImageError::InvalidFileTree(_)), "{err:?}");
    let err = build(&[0; PAGE]);
    assert!(
        matches!(err, ImageError::InvalidFileTree(FileTreeError::BadMagic)),
        "{err:?}"
    );
    assert!(err.to_string().contains("file tree"), "{err}");
    let mut longer = inputs.files.clone();
    longer.push(0);
    let err = build(&longer);
    assert!(matches!(err, ImageError::FileTreeTrailingBytes), "{err:?}");
    let err = build(&inputs.files[..inputs.files.len() - 1]);
    assert!(
        matches!(err, ImageError::InvalidFileTree(FileTreeError::Truncated)),
        "{err:?}"
    );
}

#[test]
fn load_checks_the_file_tree_header_against_the_boot_information() {
    // fs_size is in the (digest-free) boot information page: a smaller one passes
    // BootInfo::check but not the tree's own header.
    let edit = |fs_size: u64| {
        edited(|d| {
            for mask in [SNP_MASK, TDX_MASK] {
                let data = page_of(d, BOOT_INFO_GPA, mask);
                let at = core::mem::offset_of!(BootInfo, fs_size);
                data[at..at + 8].copy_from_slice(&fs_size.to_le_bytes());
            }
        })
    };
    let image = edit(64);
    for result in [snp(&image), tdx(&image)] {
        let err = fails(result, "fs_size 64");
        assert!(
            matches!(err, ImageError::InvalidFileTree(FileTreeError::Truncated)),
            "{err:?}"
        );
    }
    // Below the header: the boot information itself is refused.
    let err = fails(snp(&edit(63)), "fs_size 63");
    assert!(
        matches!(err, ImageError::InvalidBootInfo(BootInfoError::BadRegion)),
        "{err:?}"
    );
}

// ---- The guest policy ----

/// The dual image packaged with `debug` set.
fn debug_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let inputs = Inputs::dual();
        build_image(&PackageInput {
            debug: true,
            ..inputs.input()
        })
        .unwrap()
    })
}

fn policy_header(policy: u64, compatibility_mask: u32) -> IgvmInitializationHeader {
    IgvmInitializationHeader::GuestPolicy {
        policy,
        compatibility_mask,
    }
}

/// The dual image with `policies` as its initialization headers.
fn with_policies(policies: Vec<IgvmInitializationHeader>) -> Vec<u8> {
    let file = image_file(&Inputs::dual().input()).unwrap();
    let file = IgvmFile::new(
        IgvmRevision::V1,
        file.platforms().to_vec(),
        policies,
        file.directives().to_vec(),
    )
    .unwrap();
    let mut out = Vec::new();
    file.serialize(&mut out).unwrap();
    out
}

#[test]
fn each_platform_declares_its_policy() {
    for (image, debug) in [(dual_image(), false), (debug_image(), true)] {
        let file = IgvmFile::new_from_binary(image, None).unwrap();
        assert_eq!(
            file.initializations(),
            [
                policy_header(snp_policy(debug), SNP_MASK),
                policy_header(tdx_policy(debug), TDX_MASK),
            ]
        );
        let on_snp = snp(image).unwrap();
        let on_tdx = tdx(image).unwrap();
        let (snp_expected, tdx_expected, attributes_expected) = if debug {
            (0xB_0000, 3, attributes::DEBUG | attributes::SEPT_VE_DISABLE)
        } else {
            (0x3_0000, 2, attributes::SEPT_VE_DISABLE)
        };
        assert_eq!(on_snp.guest_policy, snp_expected, "debug {debug}");
        assert_eq!(on_tdx.guest_policy, tdx_expected, "debug {debug}");
        assert_eq!((on_snp.debug(), on_tdx.debug()), (debug, debug));
        assert_eq!(on_snp.td_attributes(), None);
        assert_eq!(on_tdx.td_attributes(), Some(attributes_expected));
    }
    // An SEV-SNP-only image declares the SEV-SNP policy alone.
    let file = IgvmFile::new_from_binary(snp_only_image(), None).unwrap();
    assert_eq!(
        file.initializations(),
        [policy_header(DEFAULT_SNP_POLICY, SNP_MASK)]
    );
    assert_eq!(
        snp(snp_only_image()).unwrap().guest_policy,
        DEFAULT_SNP_POLICY
    );
}

#[test]
fn the_policy_is_not_measured() {
    // Everything the platforms measure, and the boot information with its digest, is
    // the same with and without debugging; only the policy differs.
    for load in [snp, tdx] {
        let plain = load(dual_image()).unwrap();
        let debug = load(debug_image()).unwrap();
        assert_eq!(plain.measurement(), debug.measurement());
        assert_eq!(plain.measured_regions(), debug.measured_regions());
        assert_ne!(plain.guest_policy, debug.guest_policy);
        assert_eq!(
            LoadedImage {
                guest_policy: plain.guest_policy,
                ..debug
            },
            plain
        );
    }
}

#[test]
fn packaging_with_debug_is_deterministic() {
    let inputs = Inputs::dual();
    let input = PackageInput {
        debug: true,
        ..inputs.input()
    };
    assert_eq!(build_image(&input).unwrap(), debug_image());
    assert_ne!(debug_image(), dual_image());
}

#[test]
fn images_without_a_policy_get_the_default() {
    // Images packaged before nacre wrote policy headers.
    let image = with_policies(Vec::new());
    assert_eq!(snp(&image).unwrap(), snp(dual_image()).unwrap());
    assert_eq!(tdx(&image).unwrap(), tdx(dual_image()).unwrap());
    assert_eq!(tdx(&image).unwrap().guest_policy, DEFAULT_TDX_POLICY);
    assert_eq!(
        image_platforms(&image).unwrap(),
        [PlatformKind::Snp, PlatformKind::Tdx]
    );
    // One platform declared, the other not.
    let image = with_policies(vec![policy_header(DEBUG_TDX_POLICY, TDX_MASK)]);
    assert!(!snp(&image).unwrap().debug());
    assert!(tdx(&image).unwrap().debug());
}

#[test]
fn malformed_policies_are_refused() {
    let (snp_default, tdx_default) = (DEFAULT_SNP_POLICY, DEFAULT_TDX_POLICY);
    let cases: [(&str, Vec<IgvmInitializationHeader>, &str); 7] = [
        (
            "reserved SEV-SNP bit",
            vec![policy_header(snp_default | 1 << 40, SNP_MASK)],
            "sets bits 0x10000000000",
        ),
        (
            "SEV-SNP bit 17 clear",
            vec![policy_header(snp_default & !(1 << 17), SNP_MASK)],
            "bit 17",
        ),
        (
            "reserved TDX bit",
            vec![
                policy_header(snp_default, SNP_MASK),
                policy_header(1 << 3, TDX_MASK),
            ],
            "TDX guest policy 0x8 sets bits 0x8",
        ),
        (
            "two SEV-SNP policies",
            vec![
                policy_header(snp_default, SNP_MASK),
                policy_header(snp_default, SNP_MASK),
            ],
            "more than one",
        ),
        (
            "two TDX policies",
            vec![
                policy_header(tdx_default, TDX_MASK),
                policy_header(DEBUG_TDX_POLICY, TDX_MASK),
            ],
            "more than one",
        ),
        (
            "a policy for both platforms",
            vec![policy_header(snp_default, SNP_MASK | TDX_MASK)],
            "compatibility mask 0x3",
        ),
        (
            "a policy for an undeclared platform",
            vec![policy_header(snp_default, 4)],
            "compatibility mask 0x4",
        ),
    ];
    for (what, policies, says) in cases {
        let image = with_policies(policies);
        // A malformed header makes the file malformed, whichever view is loaded.
        for err in [
            fails(snp(&image), what),
            fails(tdx(&image), what),
            image_platforms(&image).unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    ImageError::GuestPolicyUnknownBits { .. }
                        | ImageError::GuestPolicyReservedBitClear { .. }
                        | ImageError::DuplicateGuestPolicy { .. }
                        | ImageError::GuestPolicyMask { .. }
                ),
                "{what}: {err:?}"
            );
            assert!(err.to_string().contains(says), "{what}: {err}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_policy_loads_or_is_refused(policy in any::<u64>(), on_tdx in any::<bool>()) {
        let (platform, mask, known) = if on_tdx {
            (PlatformKind::Tdx, TDX_MASK, 0b111)
        } else {
            (PlatformKind::Snp, SNP_MASK, (1 << 26) - 1)
        };
        let image = with_policies(vec![policy_header(policy, mask)]);
        let valid = policy & !known == 0 && (on_tdx || policy & 1 << 17 != 0);
        match load_image(&image, platform) {
            Ok(loaded) => {
                prop_assert!(valid, "{policy:#x} loaded");
                prop_assert_eq!(loaded.guest_policy, policy);
            }
            Err(err) => {
                prop_assert!(!valid, "{policy:#x}: {err:?}");
                let policy_error = matches!(
                    err,
                    ImageError::GuestPolicyUnknownBits { .. }
                        | ImageError::GuestPolicyReservedBitClear { .. }
                );
                prop_assert!(policy_error, "{:?}", err);
            }
        }
    }
}
