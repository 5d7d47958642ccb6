//! The emulated TD quoting enclave (QE): it checks a TDREPORT's MAC with the report
//! key it shares with the emulated TDX module of this host (EVERIFYREPORT2 on
//! hardware) and turns the report into a TDX quote version 4 signed by the attestation
//! key of [`EmulatedTdxKeys`], certified by a QE report signed with the PCK key
//! (docs/specs.md 6.6).
//!
//! Its QE report carries the MRSIGNER and ISVPRODID of Intel's TD quoting enclave so
//! that the verifier's QE identity check applies unchanged; what makes an emulated
//! quote worthless to anyone who does not choose to trust this host is its chain,
//! which ends at the emulated root and never at Intel's.

use super::keys::{EmulatedTdxKeys, EMULATED_CPUSVN};
use super::module::TdxReportKey;
use crate::emulated::LazyKeys;
use crate::exits::tdx::get_quote::{QuoteRefusal, QuotingService};
use nacre_shared_abi::tdx_report::TDREPORT_SIZE;
use nacre_verifier::tdx::{
    QeReport, QuoteHeader, TdQuoteBody, ATT_KEY_TYPE_ECDSA_P256, CERT_DATA_PCK_CHAIN,
    CERT_DATA_QE_REPORT, INTEL_QE_MRSIGNER, INTEL_QE_VENDOR_ID, INTEL_TD_QE_ISVPRODID,
    P256_PAIR_SIZE, QUOTE_VERSION_4, TEE_TYPE_TDX,
};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::Signature;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use thiserror::Error;
use zerocopy::{FromZeros, IntoBytes};

/// The emulated quoting service of one TD: the quoting enclave, the report key of
/// the TD's module, and the platform's keys (loaded on the first GetQuote).
#[derive(Debug)]
pub struct EmulatedQuotingService {
    /// The enclave.
    pub qe: QuotingEnclave,
    /// The TDX module's report key, to check reports with.
    pub report_key: Arc<TdxReportKey>,
    /// The PCK hierarchy and the attestation key.
    pub keys: LazyKeys<EmulatedTdxKeys>,
}

impl QuotingService for EmulatedQuotingService {
    fn quote(&mut self, td_report: &[u8]) -> Result<Vec<u8>, QuoteRefusal> {
        // Without keys the quoting service is unavailable (the reason is printed once).
        let keys = self.keys.get().ok_or(QuoteRefusal::Unavailable)?;
        // The enclave refuses a report whose MAC does not verify.
        self.qe
            .quote(keys, &self.report_key, td_report)
            .map_err(|_| QuoteRefusal::Error)
    }
}

/// ISVSVN of the emulated quoting enclave. An arbitrary value.
pub const EMULATED_QE_ISVSVN: u16 = 1;

/// ATTRIBUTES of the quoting enclave's report: flags INIT, MODE64BIT and
/// PROVISIONKEY (0x15) and XFRM 0xE7, as Intel's TD QE reports them (the real quote
/// in `tests/vectors/go-tdx-guest`).
pub const QE_ATTRIBUTES: [u8; 16] = [0x15, 0, 0, 0, 0, 0, 0, 0, 0xE7, 0, 0, 0, 0, 0, 0, 0];

/// QE authentication data: the 32 bytes 0, 1, ..., 31, as Intel's TD QE sends (the
/// real quote in `tests/vectors/go-tdx-guest`).
pub(super) const QE_AUTH_DATA: [u8; 32] = {
    let mut data = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        data[i] = i as u8;
        i += 1;
    }
    data
};

/// Why the emulated quoting enclave refuses a TDREPORT.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuoteError {
    /// Not 1024 bytes.
    #[error("a TDREPORT is {TDREPORT_SIZE} bytes, not {0}")]
    ReportSize(usize),
    /// The MAC does not verify with this host's report key.
    #[error(
        "the TDREPORT's MAC does not verify: the emulated TDX module of this host did not \
         make it, or it was changed"
    )]
    Mac,
    /// TEE_TCB_INFO_HASH is not the SHA-384 of TEE_TCB_INFO.
    #[error("TEE_TCB_INFO_HASH is not the SHA-384 of the report's TEE_TCB_INFO")]
    TeeTcbInfoHash,
    /// TEE_INFO_HASH is not the SHA-384 of TDINFO.
    #[error("TEE_INFO_HASH is not the SHA-384 of the report's TDINFO")]
    TdInfoHash,
    /// Not a TDX report of subtype 0.
    #[error("REPORTTYPE {tee_type:#x}/{subtype} is not a TD report (0x81/0)")]
    ReportType {
        /// REPORTTYPE.TYPE.
        tee_type: u8,
        /// REPORTTYPE.SUBTYPE.
        subtype: u8,
    },
    /// A reserved byte is not zero.
    #[error("byte {0:#x} of the TDREPORT is reserved but not zero")]
    Reserved(usize),
    /// A part of the quote does not fit its length field.
    #[error("the {0} does not fit its length field")]
    TooLarge(&'static str),
}

/// The emulated TD quoting enclave: its identity in the QE report it puts in every
/// quote (MRSIGNER and ISVPRODID of Intel's TD QE, an emulated MRENCLAVE and
/// ISVSVN). It holds no secret; the keys are [`EmulatedTdxKeys`]'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotingEnclave {
    mr_enclave: [u8; 32],
    isv_svn: u16,
}

impl Default for QuotingEnclave {
    fn default() -> Self {
        Self::new()
    }
}

impl QuotingEnclave {
    /// The emulated QE: MRENCLAVE = SHA-256("nacre emulated TD quoting enclave"),
    /// ISVSVN [`EMULATED_QE_ISVSVN`].
    pub fn new() -> Self {
        Self {
            mr_enclave: Sha256::digest(b"nacre emulated TD quoting enclave").into(),
            isv_svn: EMULATED_QE_ISVSVN,
        }
    }

    /// Turn `td_report` (from the guest: untrusted) into a TDX quote version 4
    /// (docs/specs.md 6.6), or refuse it as the real QE does when EVERIFYREPORT2 fails:
    /// see [`TdxReportKey::verify`].
    ///
    /// The quote: header (version 4, ECDSA P-256 attestation key, TEE type 0x81,
    /// Intel's QE vendor ID, user data starting with a QE ID derived from the
    /// attestation key); the TD quote body copied from the report; the attestation
    /// key's signature over both; and certification data type 6: the QE report
    /// (its report data SHA-256(attestation key || QE auth data) then 32 zero
    /// bytes) signed by the PCK key, the QE auth data, and certification data type
    /// 5, the PEM chain PCK certificate, PCK Platform CA, root.
    pub fn quote(
        &self,
        keys: &EmulatedTdxKeys,
        report_key: &TdxReportKey,
        td_report: &[u8],
    ) -> Result<Vec<u8>, QuoteError> {
        let report = report_key.verify(td_report)?;
        let attestation_public = keys.attestation_public_key();

        let mut header = QuoteHeader::new_zeroed();
        header.version = QUOTE_VERSION_4;
        header.att_key_type = ATT_KEY_TYPE_ECDSA_P256;
        header.tee_type = TEE_TYPE_TDX;
        header.qe_vendor_id = INTEL_QE_VENDOR_ID;
        let qe_id = Sha256::digest(attestation_public);
        header.user_data[..16].copy_from_slice(&qe_id[..16]);

        let tcb = &report.tee_tcb_info;
        let td = &report.td_info;
        let body = TdQuoteBody {
            tee_tcb_svn: tcb.tee_tcb_svn,
            mr_seam: tcb.mr_seam,
            mr_signer_seam: tcb.mr_signer_seam,
            seam_attributes: tcb.attributes,
            td_attributes: td.attributes.to_le_bytes(),
            xfam: td.xfam.to_le_bytes(),
            mr_td: td.mr_td,
            mr_config_id: td.mr_config_id,
            mr_owner: td.mr_owner,
            mr_owner_config: td.mr_owner_config,
            rtmr: td.rtmr,
            report_data: report.report_mac.report_data,
        };

        let mut quote = Vec::with_capacity(0x300 + keys.chain_pem.len() + 0x300);
        quote.extend_from_slice(header.as_bytes());
        quote.extend_from_slice(body.as_bytes());
        let signature: Signature = keys.attestation_key.sign(&quote);

        let qe_report = self.qe_report(&attestation_public);
        let qe_signature: Signature = keys.pck_key.sign(qe_report.as_bytes());

        let mut pck_chain = Vec::with_capacity(6 + keys.chain_pem.len());
        pck_chain.extend_from_slice(&CERT_DATA_PCK_CHAIN.to_le_bytes());
        pck_chain.extend_from_slice(&len_u32(keys.chain_pem.len(), "PCK chain")?.to_le_bytes());
        pck_chain.extend_from_slice(&keys.chain_pem);

        let mut qe_cert_data = Vec::new();
        qe_cert_data.extend_from_slice(qe_report.as_bytes());
        qe_cert_data.extend_from_slice(&qe_signature.to_bytes());
        let auth_len =
            u16::try_from(QE_AUTH_DATA.len()).map_err(|_| QuoteError::TooLarge("QE auth data"))?;
        qe_cert_data.extend_from_slice(&auth_len.to_le_bytes());
        qe_cert_data.extend_from_slice(&QE_AUTH_DATA);
        qe_cert_data.extend_from_slice(&pck_chain);

        let mut signed = Vec::new();
        signed.extend_from_slice(&signature.to_bytes());
        signed.extend_from_slice(&attestation_public);
        signed.extend_from_slice(&CERT_DATA_QE_REPORT.to_le_bytes());
        signed.extend_from_slice(
            &len_u32(qe_cert_data.len(), "QE report certification data")?.to_le_bytes(),
        );
        signed.extend_from_slice(&qe_cert_data);

        quote.extend_from_slice(&len_u32(signed.len(), "signed data")?.to_le_bytes());
        quote.extend_from_slice(&signed);
        Ok(quote)
    }

    /// The QE report certifying `attestation_public`.
    fn qe_report(&self, attestation_public: &[u8; P256_PAIR_SIZE]) -> QeReport {
        let mut qe = QeReport::new_zeroed();
        qe.cpu_svn = EMULATED_CPUSVN;
        qe.attributes = QE_ATTRIBUTES;
        qe.mr_enclave = self.mr_enclave;
        qe.mr_signer = INTEL_QE_MRSIGNER;
        qe.isv_prod_id = INTEL_TD_QE_ISVPRODID;
        qe.isv_svn = self.isv_svn;
        let binding = Sha256::new()
            .chain_update(attestation_public)
            .chain_update(QE_AUTH_DATA)
            .finalize();
        qe.report_data[..32].copy_from_slice(&binding);
        qe
    }
}

fn len_u32(len: usize, what: &'static str) -> Result<u32, QuoteError> {
    u32::try_from(len).map_err(|_| QuoteError::TooLarge(what))
}
