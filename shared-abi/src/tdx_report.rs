//! The Intel TDX TDREPORT_STRUCT (1024 bytes, the output of TDG.MR.REPORT) and the
//! shared buffer of the GetQuote TDG.VP.VMCALL.
//!
//! TDREPORT layout: docs/specs.md 6.5 (the TDX module ABI as td-shim
//! `tdx-tdcall/src/tdreport.rs` implements it), with TEE_TCB_SVN2 at 0x180 (TDX 1.5).
//! The report is REPORTMACSTRUCT (0x000-0x0FF: type, CPUSVN, the SHA-384 hashes of
//! TEE_TCB_INFO and TDINFO, the caller's report data and a MAC over the first 0xE0
//! bytes), TEE_TCB_INFO (0x100-0x1EE: the TDX module's identity), 17 reserved bytes,
//! and TDINFO (0x200-0x3FF: the TD's attributes and measurements).
//!
//! GetQuote buffer: docs/specs.md 6.2, Linux `drivers/virt/coco/tdx-guest/tdx-guest.c`
//! `struct tdx_quote_buf` (GHCI, `TDG.VP.VMCALL<GetQuote>`).
//!
//! Every multi-byte integer is little-endian.

use core::fmt;
use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a TDREPORT_STRUCT (docs/specs.md 6.5; Linux uapi `TDX_REPORT_LEN`).
pub const TDREPORT_SIZE: usize = 1024;
/// Size of REPORTMACSTRUCT (docs/specs.md 6.5: 0x000-0x0FF).
pub const REPORT_MAC_STRUCT_SIZE: usize = 0x100;
/// Size of TEE_TCB_INFO (docs/specs.md 6.5: 0x100-0x1EE, 239 bytes).
pub const TEE_TCB_INFO_SIZE: usize = 239;
/// Size of TDINFO (docs/specs.md 6.5: 0x200-0x3FF).
pub const TD_INFO_SIZE: usize = 512;
/// Offset of the MAC in REPORTMACSTRUCT; the MAC covers the bytes before it
/// (docs/specs.md 6.5).
pub const REPORT_MAC_OFFSET: usize = 0xE0;
/// Size of the MAC (docs/specs.md 6.5).
pub const REPORT_MAC_SIZE: usize = 32;
/// Size of the report data (docs/specs.md 6.5; Linux uapi `TDX_REPORTDATA_LEN`).
pub const REPORT_DATA_SIZE: usize = 64;
/// Size of a SHA-384 measurement or hash (MRTD, RTMRs, the TEE hashes).
pub const SHA384_SIZE: usize = 48;
/// REPORTTYPE.TYPE of a TDX report: 0x81 (docs/specs.md 6.5; SGX is 0).
pub const REPORT_TYPE_TDX: u8 = 0x81;
/// REPORTTYPE.SUBTYPE of TDG.MR.REPORT: 0, the only one the TDX module defines
/// (Linux `Documentation/virt/coco/tdx-guest.rst`, TDREPORT0).
pub const REPORT_SUBTYPE_TD: u8 = 0;

/// REPORTTYPE (4 bytes at 0x000; docs/specs.md 6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportType {
    /// TEE type: 0x81 for TDX ([`REPORT_TYPE_TDX`]).
    pub tee_type: u8,
    /// Type-specific subtype ([`REPORT_SUBTYPE_TD`]).
    pub subtype: u8,
    /// Type-specific version.
    pub version: u8,
    /// Reserved, zero.
    pub reserved: u8,
}

/// REPORTMACSTRUCT (0x100 bytes at 0x000; docs/specs.md 6.5).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportMacStruct {
    /// REPORTTYPE (0x00).
    pub report_type: ReportType,
    reserved_04: [u8; 12],
    /// CPUSVN of the platform (0x10).
    pub cpu_svn: [u8; 16],
    /// SHA-384 of TEE_TCB_INFO (0x20).
    pub tee_tcb_info_hash: [u8; SHA384_SIZE],
    /// SHA-384 of TDINFO (0x50).
    pub tee_info_hash: [u8; SHA384_SIZE],
    /// REPORTDATA: the caller's 64 bytes (0x80).
    pub report_data: [u8; REPORT_DATA_SIZE],
    reserved_c0: [u8; 32],
    /// MAC over bytes `[0, 0xE0)` of this structure (0xE0).
    pub mac: [u8; REPORT_MAC_SIZE],
}

const _: () = assert!(size_of::<ReportType>() == 4);
const _: () = assert!(size_of::<ReportMacStruct>() == REPORT_MAC_STRUCT_SIZE);
const _: () = assert!(offset_of!(ReportMacStruct, report_type) == 0x00);
const _: () = assert!(offset_of!(ReportMacStruct, reserved_04) == 0x04);
const _: () = assert!(offset_of!(ReportMacStruct, cpu_svn) == 0x10);
const _: () = assert!(offset_of!(ReportMacStruct, tee_tcb_info_hash) == 0x20);
const _: () = assert!(offset_of!(ReportMacStruct, tee_info_hash) == 0x50);
const _: () = assert!(offset_of!(ReportMacStruct, report_data) == 0x80);
const _: () = assert!(offset_of!(ReportMacStruct, reserved_c0) == 0xC0);
const _: () = assert!(offset_of!(ReportMacStruct, mac) == REPORT_MAC_OFFSET);

impl ReportMacStruct {
    /// The bytes the MAC covers, `[0, 0xE0)`.
    pub fn maced_bytes(&self) -> &[u8] {
        &self.as_bytes()[..REPORT_MAC_OFFSET]
    }
}

/// TEE_TCB_INFO (239 bytes at 0x100; docs/specs.md 6.5): the TDX module's identity.
/// Offsets below are relative to the structure (add 0x100 for the report).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TeeTcbInfo {
    /// VALID (0x00): bit i set means bytes `[8i, 8i + 8)` of this structure are
    /// valid. A TDX 1.0 module signed by Intel reports `0x1FF` (VALID, TEE_TCB_SVN
    /// and MRSEAM; SEAMREPORT pseudocode of Intel's ISA extensions specification).
    pub valid: [u8; 8],
    /// TEE_TCB_SVN (0x08): byte 0 the module's SVN, byte 1 its major version.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module (0x18).
    pub mr_seam: [u8; SHA384_SIZE],
    /// MRSIGNERSEAM (0x48): zero for a module Intel signs.
    pub mr_signer_seam: [u8; SHA384_SIZE],
    /// ATTRIBUTES of the module (0x78).
    pub attributes: [u8; 8],
    /// TEE_TCB_SVN2 (0x80; TDX 1.5, reserved in 1.0).
    pub tee_tcb_svn2: [u8; 16],
    reserved_90: [u8; 95],
}

const _: () = assert!(size_of::<TeeTcbInfo>() == TEE_TCB_INFO_SIZE);
const _: () = assert!(0x100 + offset_of!(TeeTcbInfo, valid) == 0x100);
const _: () = assert!(0x100 + offset_of!(TeeTcbInfo, tee_tcb_svn) == 0x108);
const _: () = assert!(0x100 + offset_of!(TeeTcbInfo, mr_seam) == 0x118);
const _: () = assert!(0x100 + offset_of!(TeeTcbInfo, mr_signer_seam) == 0x148);
const _: () = assert!(0x100 + offset_of!(TeeTcbInfo, attributes) == 0x178);
const _: () = assert!(0x100 + offset_of!(TeeTcbInfo, tee_tcb_svn2) == 0x180);
const _: () = assert!(0x100 + offset_of!(TeeTcbInfo, reserved_90) == 0x190);

/// TDINFO (512 bytes at 0x200; docs/specs.md 6.5): the TD's attributes and
/// measurements. Offsets below are relative to the structure (add 0x200 for the
/// report).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TdInfo {
    /// TD ATTRIBUTES (0x00), see [`crate::tdx::attributes`].
    pub attributes: u64,
    /// XFAM: the extended features the TD may use (0x08).
    pub xfam: u64,
    /// MRTD: the build-time measurement (0x10).
    pub mr_td: [u8; SHA384_SIZE],
    /// MRCONFIGID (0x40).
    pub mr_config_id: [u8; SHA384_SIZE],
    /// MROWNER (0x70).
    pub mr_owner: [u8; SHA384_SIZE],
    /// MROWNERCONFIG (0xA0).
    pub mr_owner_config: [u8; SHA384_SIZE],
    /// RTMR0 to RTMR3 (0xD0, 0x100, 0x130, 0x160).
    pub rtmr: [[u8; SHA384_SIZE]; 4],
    /// SERVTD_HASH: SHA-384 over the bound service TDs' TDINFO (0x190).
    pub servtd_hash: [u8; SHA384_SIZE],
    reserved_1c0: [u8; 64],
}

const _: () = assert!(size_of::<TdInfo>() == TD_INFO_SIZE);
const _: () = assert!(0x200 + offset_of!(TdInfo, attributes) == 0x200);
const _: () = assert!(0x200 + offset_of!(TdInfo, xfam) == 0x208);
const _: () = assert!(0x200 + offset_of!(TdInfo, mr_td) == 0x210);
const _: () = assert!(0x200 + offset_of!(TdInfo, mr_config_id) == 0x240);
const _: () = assert!(0x200 + offset_of!(TdInfo, mr_owner) == 0x270);
const _: () = assert!(0x200 + offset_of!(TdInfo, mr_owner_config) == 0x2A0);
const _: () = assert!(0x200 + offset_of!(TdInfo, rtmr) == 0x2D0);
const _: () = assert!(0x200 + offset_of!(TdInfo, rtmr) + SHA384_SIZE == 0x300);
const _: () = assert!(0x200 + offset_of!(TdInfo, rtmr) + 2 * SHA384_SIZE == 0x330);
const _: () = assert!(0x200 + offset_of!(TdInfo, rtmr) + 3 * SHA384_SIZE == 0x360);
const _: () = assert!(0x200 + offset_of!(TdInfo, servtd_hash) == 0x390);
const _: () = assert!(0x200 + offset_of!(TdInfo, reserved_1c0) == 0x3C0);

/// TDREPORT_STRUCT (1024 bytes; docs/specs.md 6.5).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TdReport {
    /// REPORTMACSTRUCT (0x000).
    pub report_mac: ReportMacStruct,
    /// TEE_TCB_INFO (0x100).
    pub tee_tcb_info: TeeTcbInfo,
    reserved_1ef: [u8; 17],
    /// TDINFO (0x200).
    pub td_info: TdInfo,
}

const _: () = assert!(size_of::<TdReport>() == TDREPORT_SIZE);
const _: () = assert!(offset_of!(TdReport, report_mac) == 0x000);
const _: () = assert!(offset_of!(TdReport, tee_tcb_info) == 0x100);
const _: () = assert!(offset_of!(TdReport, reserved_1ef) == 0x1EF);
const _: () = assert!(offset_of!(TdReport, td_info) == 0x200);
const _: () =
    assert!(offset_of!(TdReport, report_mac) + offset_of!(ReportMacStruct, report_data) == 0x80);
const _: () = assert!(offset_of!(TdReport, td_info) + offset_of!(TdInfo, mr_td) == 0x210);

/// Reserved byte ranges of a TDREPORT, all zero from the TDX module (docs/specs.md 6.5).
const RESERVED: [(usize, usize); 5] = [
    (0x003, 0x010),
    (0x0C0, REPORT_MAC_OFFSET),
    (0x190, 0x1EF),
    (0x1EF, 0x200),
    (0x3C0, TDREPORT_SIZE),
];

/// Bytes that are not a TDREPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdReportError {
    /// Not exactly [`TDREPORT_SIZE`] bytes.
    Size(usize),
}

impl fmt::Display for TdReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(n) => write!(f, "a TDREPORT is {TDREPORT_SIZE} bytes, not {n}"),
        }
    }
}

impl TdReport {
    /// Read a report from exactly [`TDREPORT_SIZE`] bytes. Nothing is checked
    /// besides the size: the fields are whatever the bytes say.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TdReportError> {
        Self::read_from_bytes(bytes).map_err(|_| TdReportError::Size(bytes.len()))
    }

    /// Offset of the first reserved byte that is not zero (the report type's
    /// reserved byte, REPORTMACSTRUCT's reserved bytes, TEE_TCB_INFO's, the 17 bytes
    /// after it and TDINFO's); `None` when all are zero.
    pub fn first_nonzero_reserved(&self) -> Option<usize> {
        let bytes = self.as_bytes();
        RESERVED.iter().find_map(|&(start, end)| {
            bytes[start..end]
                .iter()
                .position(|&b| b != 0)
                .map(|i| start + i)
        })
    }
}

/// The GetQuote TDG.VP.VMCALL's shared buffer (docs/specs.md 6.2).
pub mod get_quote {
    use super::*;

    /// Header of the GetQuote buffer: Linux `struct tdx_quote_buf` without its
    /// trailing `data[]` (`drivers/virt/coco/tdx-guest/tdx-guest.c`; GHCI
    /// `TDG.VP.VMCALL<GetQuote>`). The TDREPORT (in) and the quote (out) follow it.
    #[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    pub struct QuoteBufHeader {
        /// Format version, set by the TD: [`VERSION`] (0x00).
        pub version: u64,
        /// Status, set by the VMM: [`status`] (0x08).
        pub status: u64,
        /// Length of the input (the TDREPORT), set by the TD (0x10).
        pub in_len: u32,
        /// Length of the output (the quote), set by the VMM (0x14).
        pub out_len: u32,
    }

    /// Size of the header; the data starts here (docs/specs.md 6.2: 0x18).
    pub const HEADER_SIZE: usize = 0x18;
    const _: () = assert!(size_of::<QuoteBufHeader>() == HEADER_SIZE);
    const _: () = assert!(offset_of!(QuoteBufHeader, version) == 0x00);
    const _: () = assert!(offset_of!(QuoteBufHeader, status) == 0x08);
    const _: () = assert!(offset_of!(QuoteBufHeader, in_len) == 0x10);
    const _: () = assert!(offset_of!(QuoteBufHeader, out_len) == 0x14);

    /// The buffer format version (Linux `tdx-guest.c` `GET_QUOTE_CMD_VER`; docs/specs.md
    /// 6.2).
    pub const VERSION: u64 = 1;

    /// `status` values (docs/specs.md 6.2). Sources: Linux `tdx-guest.c` defines
    /// `GET_QUOTE_SUCCESS` and `GET_QUOTE_IN_FLIGHT`; the two errors are the GHCI's
    /// GetQuote status codes as QEMU `target/i386/kvm/tdx-quote-generator.h` defines
    /// them (`TDX_VP_GET_QUOTE_ERROR`, `TDX_VP_GET_QUOTE_QGS_UNAVAILABLE`) and as
    /// the Linux GetQuote uapi proposal named them (`GET_QUOTE_ERROR`,
    /// `GET_QUOTE_SERVICE_UNAVAILABLE`).
    pub mod status {
        /// The quote is in `data[]`, `out_len` bytes.
        pub const SUCCESS: u64 = 0;
        /// The VMM owns the buffer and is still working; the TD must wait.
        pub const IN_FLIGHT: u64 = 0xFFFF_FFFF_FFFF_FFFF;
        /// Quote generation failed.
        pub const ERROR: u64 = 0x8000_0000_0000_0000;
        /// The quoting service is unavailable.
        pub const SERVICE_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use zerocopy::FromZeros;

    #[test]
    fn size_is_checked() {
        assert!(TdReport::from_bytes(&[0; TDREPORT_SIZE]).is_ok());
        assert_eq!(
            TdReport::from_bytes(&[0; TDREPORT_SIZE - 1]).err(),
            Some(TdReportError::Size(TDREPORT_SIZE - 1))
        );
        assert_eq!(
            TdReport::from_bytes(&[0; TDREPORT_SIZE + 1]).err(),
            Some(TdReportError::Size(TDREPORT_SIZE + 1))
        );
    }

    #[test]
    fn fields_sit_at_their_spec_offsets() {
        let mut bytes = [0u8; TDREPORT_SIZE];
        bytes[0] = REPORT_TYPE_TDX;
        bytes[0x80] = 0xAA; // REPORTDATA[0]
        bytes[0xE0] = 0xBB; // MAC[0]
        bytes[0x118] = 0xCC; // MRSEAM[0]
        bytes[0x200] = 0x01; // ATTRIBUTES bit 0 (DEBUG)
        bytes[0x210] = 0xDD; // MRTD[0]
        bytes[0x360] = 0xEE; // RTMR3[0]
        bytes[0x390] = 0xFF; // SERVTD_HASH[0]
        let report = TdReport::from_bytes(&bytes).expect("1024 bytes");
        assert_eq!(report.report_mac.report_type.tee_type, REPORT_TYPE_TDX);
        assert_eq!(report.report_mac.report_data[0], 0xAA);
        assert_eq!(report.report_mac.mac[0], 0xBB);
        assert_eq!(report.tee_tcb_info.mr_seam[0], 0xCC);
        assert_eq!(report.td_info.attributes, crate::tdx::attributes::DEBUG);
        assert_eq!(report.td_info.mr_td[0], 0xDD);
        assert_eq!(report.td_info.rtmr[3][0], 0xEE);
        assert_eq!(report.td_info.servtd_hash[0], 0xFF);
        assert_eq!(report.report_mac.maced_bytes().len(), REPORT_MAC_OFFSET);
        assert_eq!(report.as_bytes(), &bytes[..]);
    }

    #[test]
    fn reserved_bytes_are_found() {
        let zero = TdReport::new_zeroed();
        assert_eq!(zero.first_nonzero_reserved(), None);
        for at in [
            0x003, 0x00F, 0x0C0, 0x0DF, 0x190, 0x1EE, 0x1EF, 0x1FF, 0x3C0, 0x3FF,
        ] {
            let mut bytes = [0u8; TDREPORT_SIZE];
            bytes[at] = 1;
            let report = TdReport::from_bytes(&bytes).expect("1024 bytes");
            assert_eq!(report.first_nonzero_reserved(), Some(at), "{at:#x}");
        }
        // Fields next to the reserved ranges are not reserved.
        for at in [0x002, 0x010, 0x0BF, 0x0E0, 0x18F, 0x200, 0x3BF] {
            let mut bytes = [0u8; TDREPORT_SIZE];
            bytes[at] = 1;
            let report = TdReport::from_bytes(&bytes).expect("1024 bytes");
            assert_eq!(report.first_nonzero_reserved(), None, "{at:#x}");
        }
    }

    #[test]
    fn quote_buffer_header_layout() {
        let header = get_quote::QuoteBufHeader {
            version: get_quote::VERSION,
            status: get_quote::status::IN_FLIGHT,
            in_len: TDREPORT_SIZE as u32,
            out_len: 0x1234,
        };
        let bytes = header.as_bytes();
        assert_eq!(&bytes[0..8], &1u64.to_le_bytes());
        assert_eq!(&bytes[8..16], &[0xFF; 8]);
        assert_eq!(&bytes[0x10..0x14], &1024u32.to_le_bytes());
        assert_eq!(&bytes[0x14..0x18], &0x1234u32.to_le_bytes());
        // The error statuses have bit 63 set; success and in-flight are told apart.
        assert_ne!(get_quote::status::SUCCESS, get_quote::status::IN_FLIGHT);
        assert_eq!(get_quote::status::ERROR >> 63, 1);
        assert_eq!(get_quote::status::SERVICE_UNAVAILABLE >> 63, 1);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x500)) {
            match TdReport::from_bytes(&bytes) {
                Ok(report) => {
                    prop_assert_eq!(bytes.len(), TDREPORT_SIZE);
                    prop_assert_eq!(report.as_bytes(), &bytes[..]);
                    let _ = report.first_nonzero_reserved();
                }
                Err(e) => prop_assert_eq!(e, TdReportError::Size(bytes.len())),
            }
        }
    }
}
