//! The emulated TDX module: what the CPU's TDX module does for a TD that the host
//! sees. It accumulates the MRTD as the host adds pages (TDH.MEM.PAGE.ADD,
//! TDH.MR.EXTEND, TDH.MR.FINALIZE), answers TDG.VP.INFO, and writes TDREPORTs
//! (TDG.MR.REPORT) MACed with a key only it and the quoting enclave on this host hold.
//! Its Secure EPT is [`super::sept`], which the host MMU drives.
//!
//! [`TdxReportKey`] stands in for the CPU's report MAC key and algorithm, which are
//! internal to the CPU: HMAC-SHA-256 with a random 32-byte key, over the bytes of
//! REPORTMACSTRUCT before the MAC (`[0, 0xE0)`, docs/specs.md 6.5). Only this host
//! process can check it, as only the same platform can on real hardware.

use super::keys::EMULATED_CPUSVN;
use super::quoting::QuoteError;
use crate::exits::tdx::tdcall::{TdxModule, VpInfo};
use crate::mmu::tdx::TdxMmu;
use crate::vmm::memory::GuestMemory;
use hmac::{Hmac, Mac};
use nacre_loader::measure::tdx::Mrtd;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::status;
use nacre_shared_abi::tdx_report::{
    ReportType, TdInfo, TdReport, TeeTcbInfo, REPORT_DATA_SIZE, REPORT_MAC_SIZE, REPORT_SUBTYPE_TD,
    REPORT_TYPE_TDX, SHA384_SIZE, TDREPORT_SIZE,
};
use sha2::{Digest, Sha256, Sha384};
use std::sync::Arc;
use zerocopy::{FromZeros, IntoBytes};

/// The emulated TDX module of one TD.
#[derive(Debug)]
pub struct EmulatedTdxModule {
    /// The TD's guest-physical address width.
    pub gpaw: u32,
    /// The TD's ATTRIBUTES (TDH.MNG.INIT, from the image's policy).
    pub attributes: u64,
    /// The MRTD as it accumulates while pages are added.
    pub mrtd: Mrtd,
    /// The MRTD after TDH.MR.FINALIZE.
    pub mrtd_final: Option<[u8; 48]>,
    /// The report MAC key, shared with the quoting enclave that checks it.
    pub report_key: Arc<TdxReportKey>,
    /// The TD's vCPUs (TDG.VP.INFO's NUM_VCPUS and MAX_VCPUS): the host makes them
    /// all at launch, and the TD can have no more.
    pub vcpus: u32,
}

impl EmulatedTdxModule {
    /// A module for a new TD with `attributes` and a fresh report key.
    pub fn new(gpaw: u32, attributes: u64) -> Result<Self, getrandom::Error> {
        Ok(Self {
            gpaw,
            attributes,
            mrtd: Mrtd::new(),
            mrtd_final: None,
            report_key: Arc::new(TdxReportKey::generate()?),
            vcpus: 1,
        })
    }

    /// TDH.MEM.PAGE.ADD of a launch page whose contents are in RAM already, and
    /// TDH.MR.EXTEND over it when `measure`.
    pub fn add_page(
        &mut self,
        mem: &GuestMemory,
        mmu: &TdxMmu,
        gpa: u64,
        measure: bool,
    ) -> Result<(), String> {
        let mut page = [0u8; PAGE_SIZE_4K as usize];
        mem.read(gpa, &mut page)
            .map_err(|e| format!("page {gpa:#x}: {e}"))?;
        let st = mmu
            .launch_page(mem, gpa / PAGE_SIZE_4K)
            .map_err(|e| format!("page {gpa:#x}: {e}"))?;
        if st != status::SUCCESS {
            return Err(format!(
                "page {gpa:#x} cannot be added: TDH.MEM.PAGE.ADD status {st:#x}"
            ));
        }
        self.mrtd.add_page(gpa, measure.then_some(&page));
        Ok(())
    }

    /// TDH.MR.FINALIZE: fix the MRTD.
    pub fn finalize(&mut self) -> [u8; 48] {
        let mrtd = self.mrtd.clone().finish();
        self.mrtd_final = Some(mrtd);
        mrtd
    }
}

/// XFAM of the emulated TD: the XSAVE features the CPU supports (CPUID leaf 0xD,
/// subleaf 0, EDX:EAX; Intel SDM vol. 1, 13.2), which the TD may enable.
fn xfam() -> u64 {
    let r = std::arch::x86_64::__cpuid_count(0xD, 0);
    (u64::from(r.edx) << 32) | u64::from(r.eax)
}

impl TdxModule for EmulatedTdxModule {
    /// NUM_VCPUS counts the vCPUs that are initialized (the host initializes every one
    /// at launch) and MAX_VCPUS is the TD's limit, which the host sets to the number it
    /// makes; VCPU_INDEX is the caller's (Intel TDX module ABI, TDG.VP.INFO leaf).
    fn vp_info(&self, vcpu: u32) -> VpInfo {
        VpInfo {
            gpaw: self.gpaw,
            attributes: self.attributes,
            num_vcpus: self.vcpus,
            max_vcpus: self.vcpus,
            vcpu_index: vcpu,
        }
    }

    fn report(&mut self, report_data: &[u8; REPORT_DATA_SIZE]) -> Result<[u8; TDREPORT_SIZE], u64> {
        // Before TDH.MR.FINALIZE there is no measurement to report.
        let mr_td = self.mrtd_final.ok_or(status::OPERAND_INVALID)?;
        let mut td_info = TdInfo::new_zeroed();
        td_info.attributes = self.attributes;
        td_info.xfam = xfam();
        td_info.mr_td = mr_td;
        Ok(self
            .report_key
            .td_report(&td_info, &emulated_tee_tcb_info(), report_data))
    }
}

/// TEE_TCB_INFO.VALID of a TDX 1.0 module signed by Intel: bits 0 to 8 (VALID,
/// TEE_TCB_SVN, MRSEAM), little-endian `ff 01 00 ..` (SEAMREPORT in Intel's ISA
/// extensions specification).
const TEE_TCB_INFO_VALID_INTEL_MODULE: u64 = 0x1FF;

/// TEE_TCB_SVN of the emulated TDX module: byte 0 its SVN, byte 1 its major version
/// (dcap-qvl reads `TDX_01` from it). Arbitrary values.
pub(super) const EMULATED_TEE_TCB_SVN: [u8; 16] = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// REPORTTYPE.VERSION of the emulated TDREPORT: 0, the TDX 1.0 report (its
/// TEE_TCB_INFO has no TEE_TCB_SVN2, and the quote carries a TDX 1.0 body).
const REPORT_TYPE_VERSION: u8 = 0;

/// Size of the report MAC key.
const REPORT_KEY_SIZE: usize = 32;

/// The emulated TDX module's report key: the stand-in for the CPU's internal MAC
/// key (see the module documentation). Random for each instance; never printed.
pub struct TdxReportKey {
    key: [u8; REPORT_KEY_SIZE],
}

impl std::fmt::Debug for TdxReportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxReportKey").finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl TdxReportKey {
    /// A fresh random key (per host or per VM: reports made with one key only
    /// verify with it).
    pub fn generate() -> Result<Self, getrandom::Error> {
        let key = crate::emulated::random::bytes::<REPORT_KEY_SIZE>()?;
        Ok(Self { key })
    }

    fn mac(&self, report: &TdReport) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(report.report_mac.maced_bytes());
        mac
    }

    /// TDG.MR.REPORT as the TDX module answers it: a TDREPORT of `td_info` and
    /// `tee_tcb_info` (their reserved bytes zero whatever the arguments hold), the
    /// caller's `report_data`, type 0x81 subtype 0, the platform's CPUSVN, the
    /// SHA-384 hashes of TEE_TCB_INFO and TDINFO, and the MAC.
    pub fn td_report(
        &self,
        td_info: &TdInfo,
        tee_tcb_info: &TeeTcbInfo,
        report_data: &[u8; REPORT_DATA_SIZE],
    ) -> [u8; TDREPORT_SIZE] {
        let mut report = TdReport::new_zeroed();
        let tcb = &mut report.tee_tcb_info;
        tcb.valid = tee_tcb_info.valid;
        tcb.tee_tcb_svn = tee_tcb_info.tee_tcb_svn;
        tcb.mr_seam = tee_tcb_info.mr_seam;
        tcb.mr_signer_seam = tee_tcb_info.mr_signer_seam;
        tcb.attributes = tee_tcb_info.attributes;
        tcb.tee_tcb_svn2 = tee_tcb_info.tee_tcb_svn2;
        let td = &mut report.td_info;
        td.attributes = td_info.attributes;
        td.xfam = td_info.xfam;
        td.mr_td = td_info.mr_td;
        td.mr_config_id = td_info.mr_config_id;
        td.mr_owner = td_info.mr_owner;
        td.mr_owner_config = td_info.mr_owner_config;
        td.rtmr = td_info.rtmr;
        td.servtd_hash = td_info.servtd_hash;

        let mac = &mut report.report_mac;
        mac.report_type = ReportType {
            tee_type: REPORT_TYPE_TDX,
            subtype: REPORT_SUBTYPE_TD,
            version: REPORT_TYPE_VERSION,
            reserved: 0,
        };
        mac.cpu_svn = EMULATED_CPUSVN;
        mac.tee_tcb_info_hash = sha384(report.tee_tcb_info.as_bytes());
        mac.tee_info_hash = sha384(report.td_info.as_bytes());
        mac.report_data = *report_data;
        let tag: [u8; REPORT_MAC_SIZE] = self.mac(&report).finalize().into_bytes().into();
        report.report_mac.mac = tag;

        let mut out = [0u8; TDREPORT_SIZE];
        out.copy_from_slice(report.as_bytes());
        out
    }

    /// Check `td_report` as the quoting enclave does: 1024 bytes, the MAC (compared
    /// in constant time), both hashes, a TD report type and zero reserved bytes.
    /// Any byte changed after [`TdxReportKey::td_report`] made it fails one of these.
    pub fn verify(&self, td_report: &[u8]) -> Result<TdReport, QuoteError> {
        let report =
            TdReport::from_bytes(td_report).map_err(|_| QuoteError::ReportSize(td_report.len()))?;
        self.mac(&report)
            .verify_slice(&report.report_mac.mac)
            .map_err(|_| QuoteError::Mac)?;
        if report.report_mac.tee_tcb_info_hash != sha384(report.tee_tcb_info.as_bytes()) {
            return Err(QuoteError::TeeTcbInfoHash);
        }
        if report.report_mac.tee_info_hash != sha384(report.td_info.as_bytes()) {
            return Err(QuoteError::TdInfoHash);
        }
        let kind = report.report_mac.report_type;
        if kind.tee_type != REPORT_TYPE_TDX || kind.subtype != REPORT_SUBTYPE_TD {
            return Err(QuoteError::ReportType {
                tee_type: kind.tee_type,
                subtype: kind.subtype,
            });
        }
        if let Some(at) = report.first_nonzero_reserved() {
            return Err(QuoteError::Reserved(at));
        }
        Ok(report)
    }

    /// Whether [`TdxReportKey::verify`] accepts `td_report`.
    pub fn check(&self, td_report: &[u8; TDREPORT_SIZE]) -> bool {
        self.verify(td_report).is_ok()
    }
}

/// The emulated TDX module's TEE_TCB_INFO: VALID as an Intel-signed TDX 1.0 module
/// reports it, its TEE_TCB_SVN, MRSEAM = SHA-384("nacre emulated TDX module"),
/// MRSIGNERSEAM and ATTRIBUTES zero (as for a module Intel signs).
pub fn emulated_tee_tcb_info() -> TeeTcbInfo {
    let mut info = TeeTcbInfo::new_zeroed();
    info.valid = TEE_TCB_INFO_VALID_INTEL_MODULE.to_le_bytes();
    info.tee_tcb_svn = EMULATED_TEE_TCB_SVN;
    info.mr_seam = sha384(b"nacre emulated TDX module");
    info
}

pub(super) fn sha384(bytes: &[u8]) -> [u8; SHA384_SIZE] {
    Sha384::digest(bytes).into()
}
