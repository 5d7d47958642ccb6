//! The IGVM image loader (`loader/src/image`: `load_image` for each platform and
//! `image_platforms`) on any file, as `nacre run`, `measure` and `verify --image` read
//! them.
//!
//! Input: the file.
//!
//! Invariants, for each platform whose view loads:
//! - the platform is among those `image_platforms` lists, and its view names it: the
//!   boot information passes `BootInfo::check` with that platform;
//! - its pages are 4 KiB aligned and pairwise distinct, below the smallest memory the
//!   image asks for (but the TDX reset page), and the boot information page holds the
//!   boot information;
//! - SEV-SNP views carry a VMSA and a launch digest and no MRTD, TDX views the
//!   reverse; the measurement for one vCPU is the launch digest or MRTD, and is
//!   what a second computation gives;
//! - the measured regions for 2 vCPUs can be listed.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use nacre_loader::{image_platforms, load_image, PlatformKind};
use nacre_shared_abi::layout::{BOOT_INFO_GPA, PAGE_SIZE_4K, TDX_RESET_PAGE_GPA};
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let listed = image_platforms(data);
    for platform in PlatformKind::ALL {
        let Ok(image) = load_image(data, platform) else {
            continue;
        };
        let listed = listed
            .as_ref()
            .expect("a loadable file lists its platforms");
        assert!(listed.contains(&platform), "{platform:?} not in {listed:?}");
        assert_eq!(image.platform, platform);
        assert_eq!(image.boot_info.check(), Ok(platform));
        assert_eq!(image.min_memory, image.boot_info.min_memory);
        let mut gpas = BTreeSet::new();
        for page in &image.pages {
            assert_eq!(page.gpa % PAGE_SIZE_4K, 0);
            assert!(gpas.insert(page.gpa), "page {:#x} twice", page.gpa);
            assert!(
                page.gpa < image.min_memory
                    || (platform == PlatformKind::Tdx && page.gpa == TDX_RESET_PAGE_GPA),
                "page {:#x} beyond the image's memory",
                page.gpa
            );
        }
        let bi = image
            .measured_bytes(BOOT_INFO_GPA, 128)
            .expect("the boot information is measured");
        assert_eq!(bi, image.boot_info.as_bytes());
        match platform {
            PlatformKind::Snp => {
                assert!(image.vmsa.is_some() && image.mrtd.is_none());
                assert_eq!(image.launch_digest, Some(image.measurement()));
            }
            PlatformKind::Tdx => {
                assert!(image.vmsa.is_none() && image.launch_digest.is_none());
                assert_eq!(image.mrtd, Some(image.measurement()));
            }
        }
        assert_eq!(image.measurement_for_cpus(1), image.measurement());
        assert!(!image.measured_regions_for_cpus(2).is_empty());
    }
});
