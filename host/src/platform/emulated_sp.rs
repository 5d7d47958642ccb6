//! The emulated AMD security processor of the `emulated-snp` platform: what
//! SNP_LAUNCH_UPDATE and SNP_LAUNCH_FINISH do to the launch measurement, and the
//! secrets page with the guest's message keys (VMPCKs), which it fills at launch.
//!
//! The launch digest is computed here, page by page as the host adds them, with the
//! same [`LaunchDigest`] the loader predicts it with (SPECS.md 5.1); the host compares
//! the two before the guest runs. The VMPCKs are random for every launch (the kernel's
//! `getrandom`); the guest finds them in its secrets page (SPECS.md 4.6).

use nacre_loader::measure::snp::{LaunchDigest, PageType};
use nacre_loader::measure::MEASUREMENT_SIZE;
use nacre_shared_abi::snp::guest_msg::SecretsPageHead;
use std::io;
use zerocopy::IntoBytes;

/// Size of a page.
const PAGE: usize = 4096;

/// Secrets page layout version the emulated processor writes (Linux
/// `struct snp_secrets_page`, version 2: the layout of SPECS.md 4.6).
const SECRETS_VERSION: u32 = 2;

/// The emulated security processor of one guest.
pub struct EmulatedSp {
    digest: LaunchDigest,
    vmpck: [[u8; 32]; 4],
    measurement: Option<[u8; MEASUREMENT_SIZE]>,
}

impl std::fmt::Debug for EmulatedSp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("EmulatedSp")
            .field(
                "measurement",
                &self.measurement.map(|m| nacre_loader::measure::hex(&m)),
            )
            .finish_non_exhaustive()
    }
}

/// Fill `buf` from the kernel's random source.
fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the buffer's remaining part.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        done += n as usize;
    }
    Ok(())
}

impl EmulatedSp {
    /// A processor for a new launch, with fresh random VMPCKs.
    pub fn new() -> io::Result<Self> {
        let mut vmpck = [[0u8; 32]; 4];
        for key in &mut vmpck {
            random_bytes(key)?;
        }
        Ok(Self {
            digest: LaunchDigest::new(),
            vmpck,
            measurement: None,
        })
    }

    /// SNP_LAUNCH_UPDATE of one page: extend the launch digest.
    pub fn launch_update(&mut self, gpa: u64, page_type: PageType, contents: &[u8; PAGE]) {
        self.digest.add_page(gpa, page_type, contents);
    }

    /// The secrets page the processor puts at the secrets page's GPA when it is added.
    pub fn secrets_page(&self) -> [u8; PAGE] {
        let head = SecretsPageHead {
            version: SECRETS_VERSION,
            imien: 0,
            fms: 0,
            rsvd: 0,
            gosvw: [0; 16],
            vmpck: self.vmpck,
            msg_seqno: [0; 4],
        };
        let mut page = [0u8; PAGE];
        page[..head.as_bytes().len()].copy_from_slice(head.as_bytes());
        page
    }

    /// SNP_LAUNCH_FINISH: measure the BSP's VMSA and fix the measurement.
    pub fn launch_finish(&mut self, vmsa: &[u8; PAGE]) -> [u8; MEASUREMENT_SIZE] {
        self.digest.add_vmsa(vmsa);
        let m = self.digest.finish();
        self.measurement = Some(m);
        m
    }

    /// The launch measurement, once the launch finished.
    pub fn measurement(&self) -> Option<[u8; MEASUREMENT_SIZE]> {
        self.measurement
    }

    /// VMPCK `index` (0..=3).
    pub fn vmpck(&self, index: usize) -> Option<&[u8; 32]> {
        self.vmpck.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn keys_are_random_and_land_in_the_secrets_page() {
        let a = EmulatedSp::new().unwrap();
        let b = EmulatedSp::new().unwrap();
        assert_ne!(a.vmpck, b.vmpck);
        assert_ne!(a.vmpck[0], [0; 32]);
        let page = a.secrets_page();
        let (head, _) = SecretsPageHead::read_from_prefix(&page).unwrap();
        assert_eq!(head.version, SECRETS_VERSION);
        assert_eq!(&head.vmpck[0], a.vmpck(0).unwrap());
        assert_eq!(&page[0x20..0x40], &a.vmpck[0]);
    }

    #[test]
    fn the_measurement_is_the_loaders_launch_digest() {
        let mut sp = EmulatedSp::new().unwrap();
        let mut digest = LaunchDigest::new();
        let page = [7u8; PAGE];
        for (gpa, t) in [(0x1000, PageType::Normal), (0x3000, PageType::Secrets)] {
            sp.launch_update(gpa, t, &page);
            digest.add_page(gpa, t, &page);
        }
        digest.add_vmsa(&page);
        assert_eq!(sp.measurement(), None);
        assert_eq!(sp.launch_finish(&page), digest.finish());
        assert!(sp.measurement().is_some());
    }
}
