//! Images that hold a long run of zero pages, as a large zero-filled `--file` makes:
//! the launch measurements of such an image are the ones computed over its pages'
//! bytes, and loading and measuring it allocates no page buffer per zero page.
//!
//! An image can lay such a run out two ways, and both are tested: as IGVM pages without
//! file data (what `nacre package` writes), or as data pages that all name one block of
//! zeros in the file (what the `igvm` serializer makes of identical data pages, and
//! what `nacre package` wrote before: a 9 MB file holding 1 GiB of zeros).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use igvm::IgvmDirectiveHeader;
use igvm_defs::{
    IgvmPageDataType, IgvmVariableHeaderType, IGVM_FIXED_HEADER, IGVM_VHS_PAGE_DATA,
    IGVM_VHS_VARIABLE_HEADER,
};
use nacre_loader::measure::snp::{LaunchDigest, PageType};
use nacre_loader::measure::tdx::Mrtd;
use nacre_loader::{
    build_image, load_image, testelf, FileTreeBuilder, LoadedImage, PackageInput, PageContents,
    PlatformKind,
};
use nacre_shared_abi::layout::APP_IMAGE_GPA;
use zerocopy::{FromBytes, IntoBytes};

const PAGE: usize = 4096;

// ---- Counting what the current thread allocates ----

/// The system allocator, counting for the thread that asked ([`count`]) how many bytes
/// it has live at most and how many allocations of a page or more it makes. Other
/// threads (the test harness, other tests) are not counted.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGE: Cell<usize> = const { Cell::new(0) };
}

/// Account for `grown` more (or, negative, fewer) live bytes, from an allocation of
/// `size` bytes when `grown` is positive.
fn note(grown: isize, size: usize) {
    // `try_with`: a thread's locals may be gone while it exits; nothing is counted then.
    let _ = ARMED.try_with(|armed| {
        if !armed.get() {
            return;
        }
        LIVE.with(|live| {
            let now = live.get() + grown;
            live.set(now);
            PEAK.with(|peak| peak.set(peak.get().max(now)));
        });
        if grown > 0 && size >= PAGE {
            LARGE.with(|large| large.set(large.get() + 1));
        }
    });
}

// SAFETY: every call is passed on to `System` unchanged; the counting around it only
// touches thread-local cells and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are `System::alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize, layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize, layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize), 0);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees are `System::realloc`'s.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(-(layout.size() as isize), 0);
            note(new_size as isize, new_size);
        }
        new
    }
}

/// What [`count`] saw.
#[derive(Debug, Clone, Copy)]
struct Allocations {
    /// The most bytes the thread had allocated at once beyond what it had before.
    peak: usize,
    /// How many allocations of a page or more it made.
    large: usize,
}

/// Run `f` on this thread, counting its allocations.
fn count<T>(f: impl FnOnce() -> T) -> (T, Allocations) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    LARGE.with(|large| large.set(0));
    ARMED.with(|armed| armed.set(true));
    let out = f();
    ARMED.with(|armed| armed.set(false));
    let seen = Allocations {
        peak: PEAK.with(Cell::get).max(0) as usize,
        large: LARGE.with(Cell::get),
    };
    (out, seen)
}

// ---- Images with a run of zero pages ----

/// An image (SEV-SNP and TDX) whose file tree holds one file of `zeros` zero bytes and a
/// small file of other bytes, as `nacre package` writes it.
fn packaged(zeros: usize) -> Vec<u8> {
    let firmware = testelf::tdx_firmware();
    let app = testelf::static_app();
    let mut tree = FileTreeBuilder::new(b"app").expect("an app name");
    tree.add_file(b"/data/zeros", vec![0; zeros], 0o644)
        .expect("a file");
    tree.add_file(b"/data/other", testelf::pattern(3 * PAGE + 5, 7), 0o644)
        .expect("a file");
    let files = tree.build().expect("a tree");
    build_image(&PackageInput {
        firmware_elf: &firmware,
        app_elf: &app,
        args: vec![b"app".to_vec()],
        env: Vec::new(),
        flags: 0,
        file_tree: &files,
        debug: false,
    })
    .expect("an image")
}

/// The IGVM header checksum: CRC32 over the fixed header (checksum field zero) and the
/// variable headers.
fn reseal(image: &mut [u8]) {
    let (mut fixed, _) = IGVM_FIXED_HEADER::read_from_prefix(image).expect("a fixed header");
    fixed.checksum = 0;
    let start = fixed.variable_header_offset as usize;
    let end = start + fixed.variable_header_size as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(fixed.as_bytes());
    hasher.update(&image[start..end]);
    fixed.checksum = hasher.finalize();
    image[..size_of::<IGVM_FIXED_HEADER>()].copy_from_slice(fixed.as_bytes());
}

/// `image` with every normal page without file data from the app on (app, arguments,
/// file tree) turned into a data page naming one block of 4096 zero bytes appended to
/// the file: the same pages, as the `igvm` serializer lays out identical data pages.
/// Returns the image and how many pages name the block.
fn with_shared_zero_block(image: &[u8]) -> (Vec<u8>, usize) {
    let mut out = image.to_vec();
    let block = u32::try_from(out.len()).expect("a small image");
    out.extend_from_slice(&[0; PAGE]);
    let (mut fixed, _) = IGVM_FIXED_HEADER::read_from_prefix(&out[..]).expect("a fixed header");
    fixed.total_file_size = u32::try_from(out.len()).expect("a small image");
    out[..size_of::<IGVM_FIXED_HEADER>()].copy_from_slice(fixed.as_bytes());
    let mut at = fixed.variable_header_offset as usize;
    let end = at + fixed.variable_header_size as usize;
    let mut named = 0;
    while at < end {
        let (header, _) =
            IGVM_VHS_VARIABLE_HEADER::read_from_prefix(&out[at..]).expect("a variable header");
        let body = at + size_of::<IGVM_VHS_VARIABLE_HEADER>();
        if header.typ == IgvmVariableHeaderType::IGVM_VHT_PAGE_DATA {
            let (mut page, _) =
                IGVM_VHS_PAGE_DATA::read_from_prefix(&out[body..]).expect("a page header");
            if page.file_offset == 0
                && page.data_type == IgvmPageDataType::NORMAL
                && page.gpa >= APP_IMAGE_GPA
            {
                page.file_offset = block;
                out[body..body + size_of::<IGVM_VHS_PAGE_DATA>()].copy_from_slice(page.as_bytes());
                named += 1;
            }
        }
        at = body + (header.length as usize).next_multiple_of(8);
    }
    reseal(&mut out);
    (out, named)
}

/// The measurement of `platform` computed over materialised bytes, as the code before
/// shared page buffers did: the `igvm` crate's parser (which copies every page's data),
/// then each page of the platform's mask replayed with its 4096 bytes, the parameter
/// page, and on SEV-SNP the VMSA once per vCPU.
fn materialised_measurement(image: &[u8], platform: PlatformKind, cpus: u32) -> [u8; 48] {
    let file =
        igvm::IgvmFile::new_from_binary(image, None).expect("an image the igvm crate parses");
    let mask = match platform {
        PlatformKind::Snp => nacre_loader::image::SNP_MASK,
        PlatformKind::Tdx => nacre_loader::image::TDX_MASK,
    };
    let mut snp = LaunchDigest::new();
    let mut mrtd = Mrtd::new();
    for directive in file.directives() {
        match directive {
            IgvmDirectiveHeader::PageData {
                gpa,
                compatibility_mask,
                data_type,
                data,
                ..
            } if compatibility_mask & mask != 0 => {
                let mut page = vec![0u8; PAGE];
                page[..data.len()].copy_from_slice(data);
                let page: &[u8; PAGE] = page.as_slice().try_into().expect("a page");
                let page_type = match *data_type {
                    IgvmPageDataType::SECRETS => PageType::Secrets,
                    IgvmPageDataType::CPUID_DATA => PageType::Cpuid,
                    _ => PageType::Normal,
                };
                snp.add_page(*gpa, page_type, page);
                mrtd.add_page(*gpa, Some(page));
            }
            IgvmDirectiveHeader::ParameterInsert(insert)
                if insert.compatibility_mask & mask != 0 =>
            {
                snp.add_page(insert.gpa, PageType::Unmeasured, &[0; PAGE]);
                mrtd.add_page(insert.gpa, None);
            }
            _ => {}
        }
    }
    match platform {
        PlatformKind::Snp => {
            let vmsa = file
                .directives()
                .iter()
                .find_map(|d| match d {
                    IgvmDirectiveHeader::SnpVpContext { vmsa, .. } => Some(vmsa.as_bytes()),
                    _ => None,
                })
                .expect("a VP context");
            for _ in 0..cpus {
                snp.add_vmsa(vmsa.try_into().expect("a 4 KiB VMSA"));
            }
            snp.finish()
        }
        PlatformKind::Tdx => mrtd.finish(),
    }
}

const PLATFORMS: [PlatformKind; 2] = [PlatformKind::Snp, PlatformKind::Tdx];

/// 16 MiB of zeros, laid out both ways: every measurement is the one over the pages'
/// bytes, the same for both layouts, for one vCPU and more, and so are the regions
/// `nacre measure --explain` lists.
#[test]
fn a_zero_run_measures_as_its_bytes_in_either_layout() {
    let zeros = 16 << 20;
    let packaged = packaged(zeros);
    let (shared, named) = with_shared_zero_block(&packaged);
    assert!(named >= zeros / PAGE, "{named} pages name the zero block");
    // The packager writes the run as pages without data: headers only.
    assert!(packaged.len() < zeros / 8, "{} bytes", packaged.len());
    for platform in PLATFORMS {
        let a = load_image(&packaged, platform).unwrap();
        let b = load_image(&shared, platform).unwrap();
        let reference = materialised_measurement(&shared, platform, 2);
        assert_eq!(
            materialised_measurement(&packaged, platform, 2),
            reference,
            "{platform:?}"
        );
        assert_eq!(
            a.measurement_for_cpus(2),
            reference,
            "{platform:?}, pages without data"
        );
        assert_eq!(
            b.measurement_for_cpus(2),
            reference,
            "{platform:?}, one shared block of zeros"
        );
        assert_eq!(a.measurement(), b.measurement(), "{platform:?}, one vCPU");
        assert_eq!(a.measured_regions(), b.measured_regions(), "{platform:?}");
        assert_eq!(a.file_tree(), b.file_tree(), "{platform:?}");
    }
}

/// Pages that name the same file data share one buffer; pages without data have none.
#[test]
fn pages_naming_one_block_share_one_buffer() {
    let packaged = packaged(1 << 20);
    let (shared, named) = with_shared_zero_block(&packaged);
    for platform in PLATFORMS {
        let loaded = load_image(&shared, platform).unwrap();
        let buffers: Vec<&Arc<[u8; PAGE]>> = zero_data_pages(&loaded);
        assert_eq!(buffers.len(), named, "{platform:?}");
        assert!(
            buffers.iter().all(|b| Arc::ptr_eq(b, buffers[0])),
            "{platform:?}"
        );
        let loaded = load_image(&packaged, platform).unwrap();
        assert!(zero_data_pages(&loaded).is_empty(), "{platform:?}");
        let zero_pages = loaded
            .pages
            .iter()
            .filter(|p| p.gpa >= APP_IMAGE_GPA && p.contents == PageContents::Zero)
            .count();
        assert_eq!(zero_pages, named, "{platform:?}");
    }
}

/// The data buffers of the image's data pages of zeros.
fn zero_data_pages(image: &LoadedImage) -> Vec<&Arc<[u8; PAGE]>> {
    image
        .pages
        .iter()
        .filter_map(|p| match &p.contents {
            PageContents::Data(bytes) if bytes.iter().all(|&b| b == 0) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// Loading and measuring an image with a run of zero pages, in either layout, on
/// both platforms: no allocation of a page or more per zero page (a few, for the
/// growing lists of headers and pages, whatever the run's length), and at most a few
/// hundred bytes per page header at once (the parsed headers, the page list and its
/// index), never the run's size. The old loader allocated two page buffers per page.
#[test]
fn measuring_a_zero_run_allocates_no_page_buffers() {
    let zeros: usize = 64 << 20;
    let pages = zeros / PAGE;
    let packaged = packaged(zeros);
    let (shared, _) = with_shared_zero_block(&packaged);
    for image in [&packaged, &shared] {
        for platform in PLATFORMS {
            let (measurement, seen) = count(|| {
                let loaded = load_image(image, platform).unwrap();
                loaded.measurement_for_cpus(2)
            });
            assert_eq!(
                measurement,
                load_image(&packaged, platform)
                    .unwrap()
                    .measurement_for_cpus(2),
                "{platform:?}"
            );
            eprintln!(
                "{platform:?}, {} bytes of image: peak {} bytes, {} allocations of a \
                 page or more, for {pages} zero pages",
                image.len(),
                seen.peak,
                seen.large
            );
            assert!(
                seen.large < 100,
                "{platform:?}: {} allocations of a page or more for {pages} zero pages",
                seen.large
            );
            assert!(
                seen.peak < 1024 * pages + image.len() + (1 << 20),
                "{platform:?}: {} bytes at once for {pages} zero pages",
                seen.peak
            );
            assert!(seen.peak < zeros / 4, "{platform:?}: {} bytes", seen.peak);
        }
    }
}
