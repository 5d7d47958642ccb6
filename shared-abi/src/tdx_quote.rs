//! Intel TDX quotes, version 4 and 5 (Intel DCAP quote format; docs/specs.md 6.6):
//! the header, the TD quote body (which repeats the TDREPORT's TEE_TCB_INFO and
//! TDINFO), and the quoting enclave's report. The emulated quoting enclave writes
//! them and the verifier reads them, from these definitions. All integers are
//! little-endian; ECDSA signatures and keys are big-endian `r || s` and `x || y`.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Quote version 4 (docs/specs.md 6.6).
pub const QUOTE_VERSION_4: u16 = 4;
/// Quote version 5: a typed, sized body (docs/specs.md 6.6).
pub const QUOTE_VERSION_5: u16 = 5;
/// Attestation key type 2: ECDSA-256 with P-256 (docs/specs.md 6.6).
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// TEE type of TDX quotes (0 is SGX; docs/specs.md 6.6).
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Intel's QE vendor ID, `939a7233-f79c-4ca9-940a-0db3957f0607` (docs/specs.md 6.6).
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];
/// MRSIGNER of Intel's TD quoting enclave (docs/specs.md 6.6, QE identity).
pub const INTEL_QE_MRSIGNER: [u8; 32] = [
    0xdc, 0x9e, 0x2a, 0x7c, 0x6f, 0x94, 0x8f, 0x17, 0x47, 0x4e, 0x34, 0xa7, 0xfc, 0x43, 0xed, 0x03,
    0x0f, 0x7c, 0x15, 0x63, 0xf1, 0xba, 0xbd, 0xdf, 0x63, 0x40, 0xc8, 0x2e, 0x0e, 0x54, 0xa8, 0xc5,
];
/// ISVPRODID of Intel's TD quoting enclave (docs/specs.md 6.6).
pub const INTEL_TD_QE_ISVPRODID: u16 = 2;
/// Version 5 body type 2: a TDX 1.0 body (docs/specs.md 6.6).
pub const BODY_TYPE_TDX10: u16 = 2;
/// Version 5 body type 3: a TDX 1.5 body (docs/specs.md 6.6).
pub const BODY_TYPE_TDX15: u16 = 3;
/// Certification data type 6: QE report certification data (docs/specs.md 6.6).
pub const CERT_DATA_QE_REPORT: u16 = 6;
/// Certification data type 5: the PCK certificate chain in PEM (docs/specs.md 6.6).
pub const CERT_DATA_PCK_CHAIN: u16 = 5;
/// Size of the quote header.
pub const QUOTE_HEADER_SIZE: usize = 0x30;
/// Offset of the body in a version 5 quote (after u16 type and u32 size).
pub const V5_BODY_OFFSET: usize = 0x36;
/// Size of an ECDSA P-256 signature or public key (`r || s`, `x || y`).
pub const P256_PAIR_SIZE: usize = 64;

/// The quote header (0x30 bytes; docs/specs.md 6.6).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QuoteHeader {
    /// Quote version (0x00).
    pub version: u16,
    /// Attestation key type (0x02); 2 is ECDSA P-256.
    pub att_key_type: u16,
    /// TEE type (0x04); 0x81 is TDX.
    pub tee_type: u32,
    /// PCE SVN (0x08).
    pub pce_svn: u16,
    /// QE SVN (0x0A).
    pub qe_svn: u16,
    /// QE vendor ID (0x0C).
    pub qe_vendor_id: [u8; 16],
    /// User data (0x1C); the first 16 bytes identify the platform (QE ID).
    pub user_data: [u8; 20],
}

const _: () = assert!(size_of::<QuoteHeader>() == QUOTE_HEADER_SIZE);
const _: () = assert!(offset_of!(QuoteHeader, att_key_type) == 0x02);
const _: () = assert!(offset_of!(QuoteHeader, tee_type) == 0x04);
const _: () = assert!(offset_of!(QuoteHeader, pce_svn) == 0x08);
const _: () = assert!(offset_of!(QuoteHeader, qe_svn) == 0x0A);
const _: () = assert!(offset_of!(QuoteHeader, qe_vendor_id) == 0x0C);
const _: () = assert!(offset_of!(QuoteHeader, user_data) == 0x1C);

/// The TD quote body, TDX 1.0 (584 bytes; docs/specs.md 6.6). It repeats the TDREPORT's
/// TEE_TCB_INFO and TDINFO fields (docs/specs.md 6.5).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TdQuoteBody {
    /// TEE_TCB_SVN (0x000).
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module (0x010).
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM (0x040).
    pub mr_signer_seam: [u8; 48],
    /// SEAMATTRIBUTES (0x070).
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES (0x078), little-endian; bit 0 is DEBUG.
    pub td_attributes: [u8; 8],
    /// XFAM (0x080).
    pub xfam: [u8; 8],
    /// MRTD: the build-time measurement of the TD (0x088).
    pub mr_td: [u8; 48],
    /// MRCONFIGID (0x0B8).
    pub mr_config_id: [u8; 48],
    /// MROWNER (0x0E8).
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG (0x118).
    pub mr_owner_config: [u8; 48],
    /// RTMR0 to RTMR3 (0x148, 0x178, 0x1A8, 0x1D8).
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA (0x208).
    pub report_data: [u8; 64],
}

/// Size of a TDX 1.0 body.
pub const TD_QUOTE_BODY_SIZE: usize = 584;
const _: () = assert!(size_of::<TdQuoteBody>() == TD_QUOTE_BODY_SIZE);
const _: () = assert!(offset_of!(TdQuoteBody, mr_seam) == 0x010);
const _: () = assert!(offset_of!(TdQuoteBody, mr_signer_seam) == 0x040);
const _: () = assert!(offset_of!(TdQuoteBody, seam_attributes) == 0x070);
const _: () = assert!(offset_of!(TdQuoteBody, td_attributes) == 0x078);
const _: () = assert!(offset_of!(TdQuoteBody, xfam) == 0x080);
const _: () = assert!(offset_of!(TdQuoteBody, mr_td) == 0x088);
const _: () = assert!(offset_of!(TdQuoteBody, mr_config_id) == 0x0B8);
const _: () = assert!(offset_of!(TdQuoteBody, mr_owner) == 0x0E8);
const _: () = assert!(offset_of!(TdQuoteBody, mr_owner_config) == 0x118);
const _: () = assert!(offset_of!(TdQuoteBody, rtmr) == 0x148);
const _: () = assert!(offset_of!(TdQuoteBody, report_data) == 0x208);

/// What a TDX 1.5 body adds after the 1.0 fields (docs/specs.md 6.6).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TdQuoteBody15 {
    /// TEE_TCB_SVN2 (body offset 0x248).
    pub tee_tcb_svn2: [u8; 16],
    /// MRSERVICETD (body offset 0x258).
    pub mr_service_td: [u8; 48],
}

/// Size of a TDX 1.5 body.
pub const TD_QUOTE_BODY15_SIZE: usize = TD_QUOTE_BODY_SIZE + size_of::<TdQuoteBody15>();
const _: () = assert!(TD_QUOTE_BODY15_SIZE == 648);

/// The quoting enclave's SGX report body (384 bytes; docs/specs.md 6.6).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QeReport {
    /// CPUSVN (0x00).
    pub cpu_svn: [u8; 16],
    /// MISCSELECT (0x10).
    pub misc_select: u32,
    reserved_14: [u8; 28],
    /// ATTRIBUTES (0x30).
    pub attributes: [u8; 16],
    /// MRENCLAVE (0x40).
    pub mr_enclave: [u8; 32],
    reserved_60: [u8; 32],
    /// MRSIGNER (0x80).
    pub mr_signer: [u8; 32],
    reserved_a0: [u8; 96],
    /// ISVPRODID (0x100).
    pub isv_prod_id: u16,
    /// ISVSVN (0x102).
    pub isv_svn: u16,
    reserved_104: [u8; 60],
    /// REPORTDATA (0x140): SHA-256(attestation key || QE auth data), then zeros.
    pub report_data: [u8; 64],
}

/// Size of the QE report.
pub const QE_REPORT_SIZE: usize = 384;
const _: () = assert!(size_of::<QeReport>() == QE_REPORT_SIZE);
const _: () = assert!(offset_of!(QeReport, misc_select) == 0x10);
const _: () = assert!(offset_of!(QeReport, attributes) == 0x30);
const _: () = assert!(offset_of!(QeReport, mr_enclave) == 0x40);
const _: () = assert!(offset_of!(QeReport, mr_signer) == 0x80);
const _: () = assert!(offset_of!(QeReport, isv_prod_id) == 0x100);
const _: () = assert!(offset_of!(QeReport, isv_svn) == 0x102);
const _: () = assert!(offset_of!(QeReport, report_data) == 0x140);
