//! The SEV-SNP launch digest (docs/specs.md 5.1; AMD SEV-SNP firmware ABI, SNP_LAUNCH_UPDATE
//! and its PAGE_INFO structure) and the ID block that can pin it ([`id_block`]).
//!
//! The AMD security processor keeps one 48-byte digest per guest, all zeros at
//! SNP_LAUNCH_START. Every page the host adds replaces it with the SHA-384 of a 0x70-byte
//! [`PageInfo`]: the digest so far, the SHA-384 of the page's contents (NORMAL and VMSA
//! pages only; 48 zero bytes for the other [`PageType`]s), the structure's length, the
//! page type, the IMI and VMPL permission bytes (all zero for a guest launched without
//! VMPL permissions) and the GPA. KVM adds the VMSA of each vCPU at SNP_LAUNCH_FINISH,
//! BSP first, at GPA [`VMSA_GPA`] whatever GPA the VMSA has in the guest. The last digest
//! is the MEASUREMENT of every attestation report the guest gets.
//!
//! Each step hashes the digest of the one before (unlike MRTD, which is one running
//! hash), so [`LaunchDigest::current`] after every page is the value a launch trace
//! records and a mismatch can be found page by page. [`LaunchDigest`] is the state
//! machine both the loader's prediction and an emulated security processor use.

pub mod id_block;

pub use id_block::{EcdsaPublicKey, IdBlock, KeyError};

use core::mem::{offset_of, size_of};
use sha2::{Digest, Sha384};
use thiserror::Error;
use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::MEASUREMENT_SIZE;

/// Bytes of a page.
pub const PAGE: usize = 4096;

/// Size of PAGE_INFO and the value of its LENGTH field.
pub const PAGE_INFO_SIZE: usize = 0x70;

/// The GPA every VMSA is measured at (docs/specs.md 5.1; KVM `INITIAL_VMSA_GPA`): 4 KiB below
/// 2^48. The image's VP context names the same GPA.
pub const VMSA_GPA: u64 = nacre_shared_abi::layout::SNP_VMSA_GPA;

const _: () = assert!(VMSA_GPA == 0xFFFF_FFFF_F000);

/// The page type of an SNP_LAUNCH_UPDATE (docs/specs.md 5.1; KVM's
/// `KVM_SEV_SNP_PAGE_TYPE_*` use the same values, and KVM takes no VMSA from userspace:
/// it adds the VMSAs itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageType {
    /// Contents given by the host and measured.
    Normal = 1,
    /// A vCPU's initial state, measured.
    Vmsa = 2,
    /// A page the security processor zeroes itself; only its GPA is measured.
    Zero = 3,
    /// Contents given by the host and not measured.
    Unmeasured = 4,
    /// The secrets page, filled by the security processor.
    Secrets = 5,
    /// The CPUID page, checked by the security processor.
    Cpuid = 6,
}

impl PageType {
    /// The name the SNP firmware ABI gives it: `NORMAL`, `VMSA`, `ZERO`, `UNMEASURED`,
    /// `SECRETS` or `CPUID`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Vmsa => "VMSA",
            Self::Zero => "ZERO",
            Self::Unmeasured => "UNMEASURED",
            Self::Secrets => "SECRETS",
            Self::Cpuid => "CPUID",
        }
    }

    /// Whether the page's contents are hashed into PAGE_INFO (NORMAL and VMSA); for the
    /// other types CONTENTS is 48 zero bytes.
    pub fn measures_contents(self) -> bool {
        matches!(self, Self::Normal | Self::Vmsa)
    }
}

/// A byte that is no SEV-SNP page type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{0} is not an SEV-SNP page type (they are 1 to 6)")]
pub struct PageTypeError(pub u8);

impl TryFrom<u8> for PageType {
    type Error = PageTypeError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Ok(match value {
            1 => Self::Normal,
            2 => Self::Vmsa,
            3 => Self::Zero,
            4 => Self::Unmeasured,
            5 => Self::Secrets,
            6 => Self::Cpuid,
            other => return Err(PageTypeError(other)),
        })
    }
}

/// PAGE_INFO (docs/specs.md 5.1; SNP firmware ABI, SNP_LAUNCH_UPDATE): what one launch update
/// hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PageInfo {
    /// DIGEST_CUR: the launch digest before this page.
    pub digest_cur: [u8; MEASUREMENT_SIZE],
    /// CONTENTS: SHA-384 of the page for NORMAL and VMSA pages, else zeros.
    pub contents: [u8; MEASUREMENT_SIZE],
    /// LENGTH: [`PAGE_INFO_SIZE`].
    pub length: u16,
    /// PAGE_TYPE: a [`PageType`].
    pub page_type: u8,
    /// IMI_PAGE (bit 0): 0, the page is not from a migration agent.
    pub imi_page: u8,
    /// VMPL3_PERMS: 0.
    pub vmpl3_perms: u8,
    /// VMPL2_PERMS: 0.
    pub vmpl2_perms: u8,
    /// VMPL1_PERMS: 0.
    pub vmpl1_perms: u8,
    /// Reserved, 0.
    pub reserved: u8,
    /// GPA: the page's guest-physical address ([`VMSA_GPA`] for a VMSA).
    pub gpa: u64,
}

const _: () = assert!(size_of::<PageInfo>() == PAGE_INFO_SIZE);
const _: () = assert!(offset_of!(PageInfo, digest_cur) == 0x00);
const _: () = assert!(offset_of!(PageInfo, contents) == 0x30);
const _: () = assert!(offset_of!(PageInfo, length) == 0x60);
const _: () = assert!(offset_of!(PageInfo, page_type) == 0x62);
const _: () = assert!(offset_of!(PageInfo, imi_page) == 0x63);
const _: () = assert!(offset_of!(PageInfo, vmpl3_perms) == 0x64);
const _: () = assert!(offset_of!(PageInfo, vmpl2_perms) == 0x65);
const _: () = assert!(offset_of!(PageInfo, vmpl1_perms) == 0x66);
const _: () = assert!(offset_of!(PageInfo, gpa) == 0x68);

impl PageInfo {
    /// The PAGE_INFO of a page at `gpa` of `page_type` whose contents digest is
    /// `contents`, added when the launch digest is `digest_cur`; no IMI, no VMPL
    /// permissions.
    pub fn new(
        digest_cur: [u8; MEASUREMENT_SIZE],
        page_type: PageType,
        gpa: u64,
        contents: [u8; MEASUREMENT_SIZE],
    ) -> Self {
        Self {
            digest_cur,
            contents,
            length: PAGE_INFO_SIZE as u16,
            page_type: page_type as u8,
            imi_page: 0,
            vmpl3_perms: 0,
            vmpl2_perms: 0,
            vmpl1_perms: 0,
            reserved: 0,
            gpa,
        }
    }
}

/// A guest's launch digest while its pages are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDigest {
    digest: [u8; MEASUREMENT_SIZE],
}

impl Default for LaunchDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl LaunchDigest {
    /// The digest at SNP_LAUNCH_START: 48 zero bytes.
    pub fn new() -> Self {
        Self {
            digest: [0; MEASUREMENT_SIZE],
        }
    }

    /// A launch digest that continues from `digest`, the value [`current`](Self::current)
    /// or [`finish`](Self::finish) gave after some pages: each step hashes only the
    /// digest before it (docs/specs.md 5.1), so the chain carries on from there exactly
    /// as if those pages had been added again. This is how the digest of the same launch
    /// with more vCPUs follows from a finished one: one more [`add_vmsa`](Self::add_vmsa)
    /// per further vCPU.
    pub fn resume(digest: [u8; MEASUREMENT_SIZE]) -> Self {
        Self { digest }
    }

    /// One launch update of a page at `gpa` of `page_type` whose CONTENTS field is
    /// `contents` (the SHA-384 of the page for NORMAL and VMSA pages, zeros otherwise).
    /// [`add_page`](Self::add_page) and [`add_vmsa`](Self::add_vmsa) compute `contents`
    /// themselves; this is for a step known only by its digests.
    pub fn add_page_info(
        &mut self,
        gpa: u64,
        page_type: PageType,
        contents: &[u8; MEASUREMENT_SIZE],
    ) {
        let info = PageInfo::new(self.digest, page_type, gpa, *contents);
        self.digest = Sha384::digest(info.as_bytes()).into();
    }

    /// SNP_LAUNCH_UPDATE of the 4 KiB page at `gpa` as `page_type`, with the page as the
    /// host hands it over. Its contents are measured for NORMAL and VMSA pages only: the
    /// security processor zeroes a ZERO page, leaves an UNMEASURED page's contents out
    /// and fills or checks SECRETS and CPUID pages itself, so for those `contents` may
    /// be anything.
    pub fn add_page(&mut self, gpa: u64, page_type: PageType, contents: &[u8; PAGE]) {
        let digest = if page_type.measures_contents() {
            contents_digest(contents)
        } else {
            [0; MEASUREMENT_SIZE]
        };
        self.add_page_info(gpa, page_type, &digest);
    }

    /// Add one vCPU's initial VMSA page as KVM does at SNP_LAUNCH_FINISH: a VMSA page at
    /// [`VMSA_GPA`]. Call it once per vCPU, BSP first, after every other page: the
    /// digest of a guest with N vCPUs has N VMSA steps, all at the same GPA, so the
    /// number of vCPUs is part of the measurement.
    pub fn add_vmsa(&mut self, vmsa: &[u8; PAGE]) {
        self.add_page(VMSA_GPA, PageType::Vmsa, vmsa);
    }

    /// The digest after the pages added so far.
    pub fn current(&self) -> [u8; MEASUREMENT_SIZE] {
        self.digest
    }

    /// The final launch digest: the attestation report's MEASUREMENT.
    pub fn finish(self) -> [u8; MEASUREMENT_SIZE] {
        self.digest
    }
}

/// The CONTENTS field of a NORMAL or VMSA page: SHA-384 of its 4096 bytes.
pub fn contents_digest(page: &[u8; PAGE]) -> [u8; MEASUREMENT_SIZE] {
    Sha384::digest(page).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::vectors::{self, parse_u64, unhex};

    const TRACE: &str = "derived_snp_ld_trace_amdsev_nokernel_0x21.json";
    const VMSA: &str = "derived_vmsa_bsp_qemu_epycv4_features0x21.bin";
    /// The trace's final digest as the vectors' MANIFEST gives it.
    const EXPECTED_FINAL: &str = "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b";

    fn digest48(hex: &str) -> [u8; MEASUREMENT_SIZE] {
        unhex(hex).try_into().expect("48 bytes")
    }

    /// One step of the trace: page type, GPA, CONTENTS, digest after the step.
    struct Step {
        page_type: PageType,
        gpa: u64,
        contents: [u8; MEASUREMENT_SIZE],
        after: [u8; MEASUREMENT_SIZE],
    }

    fn trace() -> (Vec<Step>, serde_json::Value) {
        let dir = vectors::dir("sev-snp-measure");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(TRACE)).expect("the trace"))
                .expect("json");
        let steps = json["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| Step {
                page_type: PageType::try_from(
                    u8::try_from(parse_u64(&s["page_type"])).expect("a byte"),
                )
                .expect("a page type"),
                gpa: parse_u64(&s["gpa"]),
                contents: digest48(s["contents"].as_str().expect("contents")),
                after: digest48(s["ld_after"].as_str().expect("ld_after")),
            })
            .collect();
        (steps, json)
    }

    fn vmsa_page() -> Box<[u8; PAGE]> {
        let bytes = std::fs::read(vectors::dir("sev-snp-measure").join(VMSA)).expect("the VMSA");
        bytes
            .into_boxed_slice()
            .try_into()
            .expect("a 4096-byte VMSA page")
    }

    #[test]
    fn page_info_layout() {
        let info = PageInfo::new([0x11; 48], PageType::Zero, 0x0123_4567_8000, [0x22; 48]);
        let bytes = info.as_bytes();
        assert_eq!(bytes.len(), 0x70);
        assert_eq!(&bytes[..0x30], &[0x11; 48]);
        assert_eq!(&bytes[0x30..0x60], &[0x22; 48]);
        assert_eq!(&bytes[0x60..0x62], &[0x70, 0]);
        assert_eq!(&bytes[0x62..0x68], &[3, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[0x68..], &0x0123_4567_8000u64.to_le_bytes());
    }

    #[test]
    fn page_types_are_the_abi_values() {
        for (value, page_type, name) in [
            (1, PageType::Normal, "NORMAL"),
            (2, PageType::Vmsa, "VMSA"),
            (3, PageType::Zero, "ZERO"),
            (4, PageType::Unmeasured, "UNMEASURED"),
            (5, PageType::Secrets, "SECRETS"),
            (6, PageType::Cpuid, "CPUID"),
        ] {
            assert_eq!(PageType::try_from(value), Ok(page_type));
            assert_eq!(page_type as u8, value);
            assert_eq!(page_type.name(), name);
        }
        assert_eq!(PageType::try_from(0), Err(PageTypeError(0)));
        assert_eq!(PageType::try_from(7), Err(PageTypeError(7)));
    }

    /// Every step of the sev-snp-measure trace of a real OVMF launch: the digest after
    /// each page, not only the last one. Steps of types whose contents are not measured
    /// are added with a page of junk, which must not matter; the VMSA is added from its
    /// page.
    #[test]
    fn reproduces_every_step_of_the_sev_snp_measure_trace() {
        let (steps, json) = trace();
        assert_eq!(steps.len(), 33);
        let vmsa = vmsa_page();
        let junk = [0xA5u8; PAGE];
        let mut ld = LaunchDigest::new();
        assert_eq!(ld.current(), [0; 48]);
        for (i, step) in steps.iter().enumerate() {
            match step.page_type {
                PageType::Normal => ld.add_page_info(step.gpa, step.page_type, &step.contents),
                PageType::Vmsa => {
                    assert_eq!(step.gpa, VMSA_GPA, "step {i}");
                    assert_eq!(contents_digest(&vmsa), step.contents, "step {i}");
                    ld.add_vmsa(&vmsa);
                }
                other => {
                    assert_eq!(step.contents, [0; 48], "step {i}");
                    ld.add_page(step.gpa, other, &junk);
                }
            }
            assert_eq!(
                hex::encode(ld.current()),
                hex::encode(step.after),
                "step {i}: {} at {:#x}",
                step.page_type.name(),
                step.gpa
            );
        }
        let last = ld.finish();
        assert_eq!(
            hex::encode(last),
            json["expected_final"].as_str().expect("final")
        );
        assert_eq!(hex::encode(last), EXPECTED_FINAL);
    }

    #[test]
    fn the_trace_covers_every_page_type_it_names() {
        let (steps, _) = trace();
        for page_type in [
            PageType::Normal,
            PageType::Vmsa,
            PageType::Zero,
            PageType::Secrets,
            PageType::Cpuid,
        ] {
            assert!(
                steps.iter().any(|s| s.page_type == page_type),
                "{page_type:?}"
            );
        }
        // The BSP's VMSA is the last step.
        assert_eq!(steps.last().map(|s| s.page_type), Some(PageType::Vmsa));
    }

    /// Resuming from a digest and adding pages is adding them to the digest that gave
    /// it: a second VMSA after a finished one-vCPU launch is the two-vCPU launch.
    #[test]
    fn resume_continues_the_chain() {
        let vmsa = vmsa_page();
        let mut two = LaunchDigest::new();
        two.add_page(0x1000, PageType::Normal, &[1; PAGE]);
        two.add_vmsa(&vmsa);
        let one = two.current();
        two.add_vmsa(&vmsa);
        let mut resumed = LaunchDigest::resume(one);
        assert_eq!(resumed.current(), one);
        resumed.add_vmsa(&vmsa);
        assert_eq!(resumed, two);
        assert_ne!(resumed.finish(), one, "a second vCPU changes the digest");
        assert_eq!(LaunchDigest::resume([0; 48]), LaunchDigest::new());
    }

    #[test]
    fn a_normal_page_is_its_contents_digest() {
        let page = [7u8; PAGE];
        let mut by_page = LaunchDigest::new();
        by_page.add_page(0x10_0000, PageType::Normal, &page);
        let mut by_digest = LaunchDigest::new();
        by_digest.add_page_info(0x10_0000, PageType::Normal, &contents_digest(&page));
        assert_eq!(by_page, by_digest);
    }

    #[test]
    fn contents_gpa_type_and_order_all_count() {
        let digest = |pages: &[(u64, PageType, u8)]| {
            let mut ld = LaunchDigest::new();
            for &(gpa, page_type, byte) in pages {
                ld.add_page(gpa, page_type, &[byte; PAGE]);
            }
            ld.finish()
        };
        let base = digest(&[(0x1000, PageType::Normal, 1), (0x2000, PageType::Zero, 0)]);
        assert_ne!(
            base,
            digest(&[(0x1000, PageType::Normal, 2), (0x2000, PageType::Zero, 0)])
        );
        assert_ne!(
            base,
            digest(&[(0x3000, PageType::Normal, 1), (0x2000, PageType::Zero, 0)])
        );
        assert_ne!(
            base,
            digest(&[
                (0x1000, PageType::Normal, 1),
                (0x2000, PageType::Unmeasured, 0)
            ])
        );
        assert_ne!(
            base,
            digest(&[(0x2000, PageType::Zero, 0), (0x1000, PageType::Normal, 1)])
        );
        // Contents of a ZERO page are not measured.
        assert_eq!(
            base,
            digest(&[(0x1000, PageType::Normal, 1), (0x2000, PageType::Zero, 9)])
        );
    }
}
