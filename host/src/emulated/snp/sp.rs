//! The emulated AMD security processor of the `emulated-snp` platform: what
//! SNP_LAUNCH_UPDATE and SNP_LAUNCH_FINISH do to the launch measurement, and the
//! secrets page with the guest's message keys (VMPCKs), which it fills at launch.
//!
//! The launch digest is computed here, page by page as the host adds them and then one
//! VMSA per vCPU at SNP_LAUNCH_FINISH as KVM hands them over on hardware, with the same
//! [`LaunchDigest`] the loader predicts it with (docs/specs.md 5.1, 5.5); the host
//! compares the two before the guest runs. The VMPCKs are random for every launch (the kernel's
//! `getrandom`); the guest finds them in its secrets page (docs/specs.md 4.6).
//!
//! Guest messages (docs/specs.md 4.1): [`EmulatedSp::guest_request`] decrypts a request
//! with the VMPCK it names, checks its sequence number, answers MSG_REPORT_REQ with an
//! ATTESTATION_REPORT (docs/specs.md 4.2) signed by a [`ReportSigner`] (the emulated key
//! hierarchy) and encrypts the response with the next sequence number, as the AMD
//! security processor does. Everything in the request page is guest input: a malformed
//! or unauthenticated request gets a firmware error, never a panic.

use crate::emulated::random;
use crate::exits::snp::guest_request::{SecurityProcessor, FW_ERR_PLATFORM};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use nacre_loader::measure::snp::{LaunchDigest, PageType};
use nacre_loader::measure::MEASUREMENT_SIZE;
use nacre_shared_abi::snp::cpuid_page::CpuidPage;
use nacre_shared_abi::snp::guest_msg::{
    msg_type, nonce, GuestMsgHdr, ReportReq, ReportRspHead, SecretsPageHead, AUTHTAG_LEN,
    MSG_HDR_SIZE, MSG_MAX_PAYLOAD, REPORT_RSP_SIZE, REPORT_SIZE, REPORT_STATUS_INVALID_KEY_SEL,
    REPORT_STATUS_INVALID_PARAMS,
};
use nacre_shared_abi::snp::report::AttestationReport;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Size of a page.
const PAGE: usize = 4096;

/// Secrets page layout version the emulated processor writes (Linux
/// `struct snp_secrets_page`, version 2: the layout of docs/specs.md 4.6).
const SECRETS_VERSION: u32 = 2;

/// The guest policy of a launch whose image declares none (docs/specs.md 4.3): SMT
/// allowed (bit 16) and the reserved bit 17 that must be 1; not debuggable.
pub const LAUNCH_POLICY: u64 = 0x3_0000;

/// SEV firmware status `SEV_RET_INVALID_PARAM` (Linux `include/uapi/linux/psp-sev.h`):
/// what the guest request's SW_EXITINFO2 carries for a request the firmware refuses
/// (bad header, failed authentication, wrong sequence number).
pub const FW_ERR_INVALID_PARAM: u64 = 0x16;

/// Signs reports: the emulated key hierarchy's VCEK.
pub trait ReportSigner {
    /// Sign the report (its signature area, docs/specs.md 4.2).
    fn sign_report(&self, report: &mut [u8; REPORT_SIZE]);
    /// The TCB the VCEK was derived for (TCB_VERSION, raw).
    fn tcb(&self) -> u64;
    /// The chip id.
    fn chip_id(&self) -> [u8; 64];
}

/// The report signer, loaded when the guest first asks for a report.
pub type LazySigner = crate::emulated::LazyKeys<Box<dyn ReportSigner + Send>>;

impl ReportSigner for crate::emulated::snp::keys::EmulatedSnpKeys {
    fn sign_report(&self, report: &mut [u8; REPORT_SIZE]) {
        crate::emulated::snp::keys::EmulatedSnpKeys::sign_report(self, report);
    }
    fn tcb(&self) -> u64 {
        crate::emulated::snp::keys::EmulatedSnpKeys::tcb(self)
    }
    fn chip_id(&self) -> [u8; 64] {
        *crate::emulated::snp::keys::EmulatedSnpKeys::chip_id(self)
    }
}

/// The emulated security processor as guest requests reach it: the processor of one
/// launch and the key hierarchy that signs its reports, loaded on the first request.
#[derive(Debug)]
pub struct EmulatedSecurityProcessor {
    /// The processor.
    pub sp: EmulatedSp,
    /// Its VCEK and the rest of the hierarchy.
    pub signer: LazySigner,
}

impl SecurityProcessor for EmulatedSecurityProcessor {
    fn guest_request(&mut self, request: &[u8; 4096]) -> Result<[u8; 4096], u64> {
        let Some(signer) = self.signer.get() else {
            // No key to sign with: the platform's error.
            return Err(FW_ERR_PLATFORM);
        };
        self.sp.guest_request(request, &**signer)
    }
}

/// The emulated security processor of one guest.
pub struct EmulatedSp {
    digest: LaunchDigest,
    vmpck: [[u8; 32]; 4],
    measurement: Option<[u8; MEASUREMENT_SIZE]>,
    /// Per VMPCK: the sequence number of the last response, so the next request must
    /// carry this + 1.
    seqno: [u64; 4],
    /// This guest's REPORT_ID (random per launch).
    report_id: [u8; 32],
    /// The guest policy of SNP_LAUNCH_START: the image's.
    policy: u64,
}

impl std::fmt::Debug for EmulatedSp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("EmulatedSp")
            .field("measurement", &self.measurement.map(hex::encode))
            .finish_non_exhaustive()
    }
}

impl EmulatedSp {
    /// A processor for a new launch, with fresh random VMPCKs.
    pub fn new() -> Result<Self, getrandom::Error> {
        let mut vmpck = [[0u8; 32]; 4];
        for key in &mut vmpck {
            random::fill(key)?;
        }
        let report_id = random::bytes()?;
        Ok(Self {
            digest: LaunchDigest::new(),
            vmpck,
            measurement: None,
            seqno: [0; 4],
            report_id,
            policy: LAUNCH_POLICY,
        })
    }

    /// SNP_LAUNCH_UPDATE of one page: extend the launch digest.
    pub fn launch_update(&mut self, gpa: u64, page_type: PageType, contents: &[u8; PAGE]) {
        self.digest.add_page(gpa, page_type, contents);
    }

    /// SNP_LAUNCH_UPDATE of a CPUID page: the security processor checks each entry
    /// against what the CPU can report before the page is added (SEV-SNP firmware ABI,
    /// "CPUID Reporting"). The emulated processor checks the header, that every
    /// reserved field is zero and that leaf 0x8000_001F reports the platform's C-bit
    /// position `c_bit`; the rest is the host's own CPUID, which it cannot lie about
    /// to itself.
    pub fn check_cpuid_page(&self, page: &CpuidPage, c_bit: u8) -> Result<(), String> {
        let used = page.used().map_err(|e| e.to_string())?;
        if page.reserved0 != 0 || page.reserved1 != 0 || used.iter().any(|e| e.reserved != 0) {
            return Err("a reserved field is not zero".into());
        }
        match page.c_bit() {
            Ok(bit) if bit == u32::from(c_bit) => Ok(()),
            Ok(bit) => Err(format!(
                "leaf 0x8000001F reports C-bit {bit}, the platform's is {c_bit}"
            )),
            Err(e) => Err(e.to_string()),
        }
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

    /// SNP_LAUNCH_FINISH: measure the VMSA of every vCPU, `vmsas` in vCPU index order
    /// (the BSP's first), as KVM does on hardware (docs/specs.md 5.5), and fix the
    /// measurement. A guest with N vCPUs has N VMSA updates in its digest, even when
    /// the pages are all the same.
    pub fn launch_finish<'a>(
        &mut self,
        vmsas: impl IntoIterator<Item = &'a [u8; PAGE]>,
    ) -> [u8; MEASUREMENT_SIZE] {
        for vmsa in vmsas {
            self.digest.add_vmsa(vmsa);
        }
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

    /// SNP_LAUNCH_START's guest policy (the image's, checked by the loader); reports
    /// carry it as POLICY.
    pub fn set_policy(&mut self, policy: u64) {
        self.policy = policy;
    }

    /// Serve one guest request from the (copied) request page; returns the response
    /// page, or the firmware error for SW_EXITINFO2.
    pub fn guest_request(
        &mut self,
        request: &[u8; 4096],
        signer: &dyn ReportSigner,
    ) -> Result<[u8; 4096], u64> {
        let (hdr, rest) =
            GuestMsgHdr::read_from_prefix(request).map_err(|_| FW_ERR_INVALID_PARAM)?;
        let vmpck = usize::from(hdr.msg_vmpck);
        let key = *self.vmpck.get(vmpck).ok_or(FW_ERR_INVALID_PARAM)?;
        let seq = self.seqno[vmpck]
            .checked_add(1)
            .ok_or(FW_ERR_INVALID_PARAM)?;
        hdr.check(msg_type::REPORT_REQ, seq, hdr.msg_vmpck, MSG_MAX_PAYLOAD)
            .map_err(|_| FW_ERR_INVALID_PARAM)?;
        let len = usize::from(hdr.msg_sz);
        if len != core::mem::size_of::<ReportReq>() {
            return Err(FW_ERR_INVALID_PARAM);
        }
        let mut body = [0u8; 0x60];
        body.copy_from_slice(&rest[..len]);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce(seq)),
                hdr.aad(),
                &mut body,
                Tag::from_slice(&hdr.authtag[..AUTHTAG_LEN]),
            )
            .map_err(|_| FW_ERR_INVALID_PARAM)?;
        let req = ReportReq::read_from_bytes(&body).map_err(|_| FW_ERR_INVALID_PARAM)?;

        let mut payload = [0u8; REPORT_RSP_SIZE];
        let status = if req.vmpl > 3 || u32::from(hdr.msg_vmpck) > req.vmpl {
            REPORT_STATUS_INVALID_PARAMS
        } else if req.key_sel & 3 > 1 {
            // Only a VCEK exists (no VLEK is installed).
            REPORT_STATUS_INVALID_KEY_SEL
        } else {
            payload[0x20..].copy_from_slice(&self.report(&req, signer));
            0
        };
        let head = ReportRspHead {
            status,
            report_size: if status == 0 { REPORT_SIZE as u32 } else { 0 },
            rsvd: [0; 24],
        };
        payload[..0x20].copy_from_slice(head.as_bytes());
        let mut rsp_hdr = GuestMsgHdr::new(
            msg_type::REPORT_RSP,
            REPORT_RSP_SIZE as u16,
            seq + 1,
            hdr.msg_vmpck,
        );
        let tag = cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce(seq + 1)),
                rsp_hdr.aad(),
                &mut payload,
            )
            .map_err(|_| FW_ERR_INVALID_PARAM)?;
        rsp_hdr.authtag[..AUTHTAG_LEN].copy_from_slice(&tag);
        self.seqno[vmpck] = seq + 1;
        let mut page = [0u8; 4096];
        page[..MSG_HDR_SIZE].copy_from_slice(rsp_hdr.as_bytes());
        page[MSG_HDR_SIZE..MSG_HDR_SIZE + REPORT_RSP_SIZE].copy_from_slice(&payload);
        Ok(page)
    }

    /// The ATTESTATION_REPORT for `req`, every field filled as the hardware fills it.
    fn report(&self, req: &ReportReq, signer: &dyn ReportSigner) -> [u8; REPORT_SIZE] {
        let tcb = signer.tcb();
        let mut r = AttestationReport::new_zeroed();
        r.version = 2;
        r.guest_svn = 0;
        r.policy = self.policy;
        r.vmpl = req.vmpl;
        // ECDSA P-384 with SHA-384.
        r.signature_algo = 1;
        r.current_tcb = tcb;
        // Bit 0: SMT enabled (the emulated platform runs on hosts with SMT).
        r.platform_info = 1;
        // VCEK, no author key, chip key not masked.
        r.signer_info = 0;
        r.report_data = req.report_data;
        r.measurement = self.measurement.unwrap_or([0; MEASUREMENT_SIZE]);
        r.report_id = self.report_id;
        // No migration agent.
        r.report_id_ma = [0xFF; 32];
        r.reported_tcb = tcb;
        r.chip_id = signer.chip_id();
        r.committed_tcb = tcb;
        (r.current_major, r.current_minor, r.current_build) = FIRMWARE_VERSION;
        (r.committed_major, r.committed_minor, r.committed_build) = FIRMWARE_VERSION;
        r.launch_tcb = tcb;
        let mut bytes = [0u8; REPORT_SIZE];
        bytes.copy_from_slice(r.as_bytes());
        signer.sign_report(&mut bytes);
        bytes
    }
}

/// The SNP firmware version the emulated processor reports (major, minor, build).
const FIRMWARE_VERSION: (u8, u8, u8) = (1, 55, 0);

#[cfg(test)]
pub(crate) mod tests {
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

    /// A signer with a fixed TCB and chip id and a fixed P-384 key.
    pub(crate) struct TestSigner(pub(crate) p384::ecdsa::SigningKey);

    impl ReportSigner for TestSigner {
        fn sign_report(&self, report: &mut [u8; REPORT_SIZE]) {
            use p384::ecdsa::signature::Signer;
            let sig: p384::ecdsa::Signature = self.0.sign(&report[..0x2A0]);
            let (r, s) = sig.split_bytes();
            for (i, b) in r.iter().rev().enumerate() {
                report[0x2A0 + i] = *b;
            }
            for (i, b) in s.iter().rev().enumerate() {
                report[0x2E8 + i] = *b;
            }
        }
        fn tcb(&self) -> u64 {
            0x7308_0000_0000_0003
        }
        fn chip_id(&self) -> [u8; 64] {
            [0xC1; 64]
        }
    }

    pub(crate) fn signer() -> TestSigner {
        TestSigner(p384::ecdsa::SigningKey::from_slice(&[0x42; 48]).unwrap())
    }

    /// A request page as the firmware builds it.
    pub(crate) fn request(
        key: &[u8; 32],
        seq: u64,
        report_data: [u8; 64],
        vmpl: u32,
        key_sel: u32,
    ) -> [u8; 4096] {
        let body = ReportReq {
            report_data,
            vmpl,
            key_sel,
            rsvd: [0; 24],
        };
        let mut payload = [0u8; 0x60];
        payload.copy_from_slice(body.as_bytes());
        let mut hdr = GuestMsgHdr::new(msg_type::REPORT_REQ, 0x60, seq, 0);
        let tag = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
            .encrypt_in_place_detached(Nonce::from_slice(&nonce(seq)), hdr.aad(), &mut payload)
            .unwrap();
        hdr.authtag[..16].copy_from_slice(&tag);
        let mut page = [0u8; 4096];
        page[..0x60].copy_from_slice(hdr.as_bytes());
        page[0x60..0xC0].copy_from_slice(&payload);
        page
    }

    /// Decrypt a response page as the firmware does.
    pub(crate) fn response(key: &[u8; 32], seq: u64, page: &[u8; 4096]) -> [u8; REPORT_RSP_SIZE] {
        let (hdr, _) = GuestMsgHdr::read_from_prefix(page).unwrap();
        hdr.check(msg_type::REPORT_RSP, seq, 0, REPORT_RSP_SIZE)
            .unwrap();
        let mut payload = [0u8; REPORT_RSP_SIZE];
        payload.copy_from_slice(&page[0x60..0x60 + REPORT_RSP_SIZE]);
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce(seq)),
                hdr.aad(),
                &mut payload,
                Tag::from_slice(&hdr.authtag[..16]),
            )
            .unwrap();
        payload
    }

    pub(crate) fn launched() -> EmulatedSp {
        let mut sp = EmulatedSp::new().unwrap();
        sp.launch_update(0x1000, PageType::Normal, &[1; PAGE]);
        sp.launch_finish([&[2; PAGE]]);
        sp
    }

    #[test]
    fn a_report_request_gets_a_signed_report_of_the_launch() {
        let mut sp = launched();
        let key = *sp.vmpck(0).unwrap();
        let signer = signer();
        for seq in [1u64, 3, 5] {
            let page = sp
                .guest_request(&request(&key, seq, [seq as u8; 64], 0, 0), &signer)
                .unwrap();
            let rsp = response(&key, seq + 1, &page);
            let (head, report) = ReportRspHead::read_from_prefix(&rsp).unwrap();
            assert_eq!((head.status, head.report_size), (0, 0x4A0));
            let r = AttestationReport::from_bytes(report).unwrap();
            assert_eq!(r.report_data, [seq as u8; 64]);
            assert_eq!(Some(r.measurement), sp.measurement());
            assert_eq!(r.policy, LAUNCH_POLICY);
            assert_eq!(r.chip_id, [0xC1; 64]);
            assert_eq!(r.reported_tcb, signer.tcb());
            assert_eq!(r.first_nonzero_reserved(), None);
            // The signature verifies with the signer's public key.
            use p384::ecdsa::signature::Verifier;
            let mut rs = [0u8; 96];
            for i in 0..48 {
                rs[i] = report[0x2A0 + 47 - i];
                rs[48 + i] = report[0x2E8 + 47 - i];
            }
            let sig = p384::ecdsa::Signature::from_slice(&rs).unwrap();
            signer
                .0
                .verifying_key()
                .verify(&report[..0x2A0], &sig)
                .unwrap();
        }
    }

    #[test]
    fn bad_requests_get_firmware_errors_and_consume_nothing() {
        let mut sp = launched();
        let key = *sp.vmpck(0).unwrap();
        let signer = signer();
        // Replayed or skipped sequence numbers, another key, a flipped bit.
        for bad in [
            request(&key, 0, [0; 64], 0, 0),
            request(&key, 3, [0; 64], 0, 0),
            request(&[9; 32], 1, [0; 64], 0, 0),
            {
                let mut p = request(&key, 1, [0; 64], 0, 0);
                p[0x70] ^= 1;
                p
            },
            [0xFF; 4096],
            [0; 4096],
        ] {
            assert_eq!(sp.guest_request(&bad, &signer), Err(FW_ERR_INVALID_PARAM));
        }
        // The next valid request still uses sequence number 1.
        let page = sp
            .guest_request(&request(&key, 1, [7; 64], 0, 0), &signer)
            .unwrap();
        response(&key, 2, &page);
        // A VLEK or an invalid VMPL: an encrypted response with a status.
        for (vmpl, key_sel, status) in [
            (0, 2, REPORT_STATUS_INVALID_KEY_SEL),
            (4, 0, REPORT_STATUS_INVALID_PARAMS),
        ] {
            let seq = if key_sel == 2 { 3 } else { 5 };
            let page = sp
                .guest_request(&request(&key, seq, [0; 64], vmpl, key_sel), &signer)
                .unwrap();
            let rsp = response(&key, seq + 1, &page);
            let (head, _) = ReportRspHead::read_from_prefix(&rsp).unwrap();
            assert_eq!(head.status, status);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_request_pages_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 4096)) {
            let mut sp = launched();
            let mut page = [0u8; 4096];
            page.copy_from_slice(&bytes);
            let _ = sp.guest_request(&page, &signer());
        }
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
        assert_eq!(sp.launch_finish([&page]), digest.finish());
        assert!(sp.measurement().is_some());
    }

    /// One VMSA per vCPU, in order: two vCPUs of the same VMSA are two VMSA updates,
    /// and the order of different VMSAs counts.
    #[test]
    fn every_vcpus_vmsa_is_measured_in_order() {
        let finish = |vmsas: &[&[u8; PAGE]]| {
            let mut sp = EmulatedSp::new().unwrap();
            sp.launch_update(0x1000, PageType::Normal, &[1; PAGE]);
            sp.launch_finish(vmsas.iter().copied())
        };
        let (bsp, ap) = ([2u8; PAGE], [3u8; PAGE]);
        let mut digest = LaunchDigest::new();
        digest.add_page(0x1000, PageType::Normal, &[1; PAGE]);
        digest.add_vmsa(&bsp);
        let one = digest.current();
        digest.add_vmsa(&bsp);
        assert_eq!(finish(&[&bsp]), one);
        assert_eq!(finish(&[&bsp, &bsp]), digest.finish());
        assert_ne!(finish(&[&bsp, &ap]), finish(&[&ap, &bsp]));
    }
}
