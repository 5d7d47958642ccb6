//! The whole-image content digest stored in [`BootInfo::image_digest`].
//!
//! The IGVM checksum covers the headers only, so a byte flipped inside a page's data
//! would otherwise go unnoticed until the launch measurement failed (or, on a platform
//! without attestation, not at all). Each platform's boot information page holds the
//! digest of that platform's view of the image: SHA-256 over, in directive order,
//!
//! 1. every measured page of the platform except the boot information page (which holds
//!    the digest): its GPA as a little-endian `u64`, then its 4096 bytes (a zero page is
//!    4096 zero bytes);
//! 2. on SEV-SNP, the BSP's VMSA, as its in-memory bytes ([`SevVmsa`]); on TDX nothing
//!    (a TD's BSP starts in the architectural reset state, not in state from the image).
//!
//! [`BootInfo::image_digest`]: nacre_shared_abi::boot::BootInfo::image_digest

use igvm::snp_defs::SevVmsa;
use nacre_shared_abi::layout::{BOOT_INFO_GPA, PAGE_SIZE_4K};
use sha2::{Digest, Sha256};
use zerocopy::IntoBytes;

const PAGE: usize = PAGE_SIZE_4K as usize;

/// Length of the digest in bytes.
pub(super) const DIGEST_LEN: usize = 32;

/// Feeds an image's content to SHA-256 in the order the module documentation gives.
#[derive(Debug, Clone, Default)]
pub(super) struct ImageDigest {
    hasher: Sha256,
}

impl ImageDigest {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Add one measured page; `data` shorter than a page is zero-padded, empty `data` is
    /// a zero page. The boot information page is skipped.
    pub(super) fn page(&mut self, gpa: u64, data: &[u8]) {
        if gpa == BOOT_INFO_GPA {
            return;
        }
        let data = &data[..data.len().min(PAGE)];
        self.hasher.update(gpa.to_le_bytes());
        self.hasher.update(data);
        const ZERO: [u8; PAGE] = [0; PAGE];
        self.hasher.update(&ZERO[data.len()..]);
    }

    /// Add the BSP's VMSA (SEV-SNP; `None` on TDX) and return the digest.
    pub(super) fn finish(mut self, vmsa: Option<&SevVmsa>) -> [u8; DIGEST_LEN] {
        if let Some(vmsa) = vmsa {
            self.hasher.update(vmsa.as_bytes());
        }
        self.hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn short_and_zero_pages_are_padded() {
        let vmsa = SevVmsa::new_zeroed();
        let digest = |data: &[u8]| {
            let mut d = ImageDigest::new();
            d.page(0x10_0000, data);
            d.finish(Some(&vmsa))
        };
        assert_eq!(digest(&[]), digest(&[0; PAGE]));
        assert_eq!(
            digest(&[1, 2]),
            digest(&{
                let mut page = [0; PAGE];
                page[..2].copy_from_slice(&[1, 2]);
                page
            })
        );
        assert_ne!(digest(&[]), digest(&[1]));
    }

    #[test]
    fn gpa_order_and_vmsa_are_covered() {
        let vmsa = SevVmsa::new_zeroed();
        let digest = |pages: &[(u64, u8)], vmsa: &SevVmsa| {
            let mut d = ImageDigest::new();
            for &(gpa, byte) in pages {
                d.page(gpa, &[byte]);
            }
            d.finish(Some(vmsa))
        };
        let base = digest(&[(0x10_0000, 1), (0x10_1000, 2)], &vmsa);
        assert_ne!(base, digest(&[(0x10_1000, 1), (0x10_0000, 2)], &vmsa));
        assert_ne!(base, digest(&[(0x10_1000, 2), (0x10_0000, 1)], &vmsa));
        let mut other = vmsa;
        other.rip = 1;
        assert_ne!(base, digest(&[(0x10_0000, 1), (0x10_1000, 2)], &other));
        // The boot information page is not part of the digest.
        assert_eq!(
            base,
            digest(&[(0x10_0000, 1), (BOOT_INFO_GPA, 7), (0x10_1000, 2)], &vmsa)
        );
    }

    #[test]
    fn known_answer_for_no_pages() {
        // No pages and an all-zero VMSA: SHA-256 of 4096 zero bytes.
        assert_eq!(core::mem::size_of::<SevVmsa>(), PAGE);
        let digest = ImageDigest::new().finish(Some(&SevVmsa::new_zeroed()));
        let expected = "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7";
        assert_eq!(hex::encode(digest), expected);
    }

    #[test]
    fn known_answer_without_a_vmsa() {
        // TDX: no pages and no VMSA is SHA-256 of nothing.
        let digest = ImageDigest::new().finish(None);
        let expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(hex::encode(digest), expected);
        let mut with_page = ImageDigest::new();
        with_page.page(0x10_0000, &[]);
        assert_ne!(with_page.finish(None), digest);
    }
}
