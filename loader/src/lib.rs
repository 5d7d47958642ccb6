//! nacre's image loader: packages a firmware ELF, a static x86-64 Linux app, its
//! arguments and a read-only file tree into one IGVM file, and parses and checks such a
//! file for the host.
//!
//! * [`elf`] checks the app (static `ET_EXEC` or static-pie) and the firmware (linked at
//!   its physical load address in the kernel half).
//! * [`filetree`] encodes the read-only file tree an image carries for the app
//!   ([`FileTreeBuilder`]).
//! * [`image`] builds the IGVM file ([`build_image`]) and loads one platform's view of
//!   it back ([`load_image`]) into the list of measured pages, the boot handoff and the
//!   BSP's initial state (SEV-SNP) or launch measurement (TDX) that the host replays
//!   into the platform, with the guest policy the image declares for it
//!   ([`LoadedImage::guest_policy`], not measured); [`image_platforms`] lists the
//!   platforms a file serves.
//! * [`measure`] computes launch measurements as the platforms do: the SEV-SNP launch
//!   digest and ID block, the TDX MRTD. [`LoadedImage::measurement`] is an image's
//!   (SEV-SNP: [`LoadedImage::launch_digest`], TDX: [`LoadedImage::mrtd`]) for one
//!   vCPU, [`LoadedImage::measurement_for_cpus`] for any number (SEV-SNP measures a
//!   VMSA per vCPU), and [`LoadedImage::measured_regions`] says what it covers.
//! * [`pagetable`] and [`vmsa`] produce the measured initial page tables (SEV-SNP and
//!   TDX) and the SEV-SNP initial VMSA.
//!
//! Formats: the IGVM format as implemented by the `igvm` crate 0.5 (SEV-SNP on
//! compatibility mask [`image::SNP_MASK`], TDX on [`image::TDX_MASK`] when the firmware
//! has a TDX reset page); the guest memory layout and boot handoff of `nacre-shared-abi`
//! (`layout`, `boot`); AMD APM vol. 2 for the page tables and VMSA; the AMD SEV-SNP
//! firmware ABI (docs/specs.md 5) for the launch digest, the ID block and the public key
//! encoding; docs/specs.md 6.7 for MRTD.

#![forbid(unsafe_code)]

pub mod elf;
pub mod filetree;
pub mod image;
pub mod measure;
pub mod pagetable;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod testelf;
pub mod vmsa;

pub use elf::{check_app_elf, AppInfo, ElfError};
pub use filetree::{FileTreeBuilder, Mtime, TreeBuildError, TreeSummary};
pub use image::{
    build_image, image_platforms, load_image, ImageError, ImagePage, LaunchPageType, LoadedImage,
    MeasuredRegion, PackageInput, PageContents, RegionKind,
};
pub use nacre_shared_abi::boot::PlatformKind;

/// Bytes from a file or a command line as a message shows them: decoded lossily as
/// UTF-8, control characters escaped (no terminal sequence reaches the terminal), at
/// most `max` bytes of them, with "..." when there were more.
pub fn shown_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let mut out = String::new();
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if bytes.len() > max {
        out.push_str("...");
    }
    out
}
