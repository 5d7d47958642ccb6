//! SNP guest messages: the encrypted requests a guest sends the AMD security processor
//! (through the hypervisor, GHCB NAE `SNP_GUEST_REQUEST`) and their responses, and the
//! secrets page that holds the keys (VMPCKs) they are encrypted with.
//!
//! Sources: docs/specs.md 4.1 (message header, crypto, sequence numbers, MSG_REPORT_REQ/RSP),
//! 4.6 (secrets page); Linux `arch/x86/include/asm/sev.h` (`struct snp_guest_msg_hdr`,
//! `enum msg_type`, `struct snp_secrets_page`); AMD SEV-SNP firmware ABI, "Guest
//! Messages". The crypto itself (AES-256-GCM) is done by each side with its own
//! implementation; this module fixes the bytes: header layout, nonce and additional
//! authenticated data.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a guest message page (header and payload).
pub const MSG_PAGE_SIZE: usize = 4096;
/// Size of the message header; the payload follows it.
pub const MSG_HDR_SIZE: usize = 0x60;
/// Largest payload of one message.
pub const MSG_MAX_PAYLOAD: usize = MSG_PAGE_SIZE - MSG_HDR_SIZE;
/// Bytes of the AES-GCM authentication tag (Linux `AUTHTAG_LEN`).
pub const AUTHTAG_LEN: usize = 16;
/// The additional authenticated data: header bytes `0x30..0x60` (Linux `AAD_LEN`).
pub const AAD_RANGE: core::ops::Range<usize> = 0x30..0x60;
/// `algo`: AES-256-GCM (`SNP_AEAD_AES_256_GCM`).
pub const AEAD_AES_256_GCM: u8 = 1;
/// `hdr_version` this module speaks (`MSG_HDR_VER`).
pub const MSG_HDR_VERSION: u8 = 1;
/// `msg_version` of MSG_REPORT_REQ/RSP.
pub const MSG_VERSION: u8 = 1;

/// Message types (Linux `enum msg_type`).
pub mod msg_type {
    /// MSG_REPORT_REQ.
    pub const REPORT_REQ: u8 = 5;
    /// MSG_REPORT_RSP.
    pub const REPORT_RSP: u8 = 6;
}

/// The message header (`struct snp_guest_msg_hdr`, 0x60 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GuestMsgHdr {
    /// The AES-GCM tag in the first [`AUTHTAG_LEN`] bytes, the rest zero.
    pub authtag: [u8; 32],
    /// Sequence number: the request's is the previous response's + 1; the response's
    /// is the request's + 1.
    pub msg_seqno: u64,
    /// Reserved, zero.
    pub rsvd1: u64,
    /// [`AEAD_AES_256_GCM`].
    pub algo: u8,
    /// [`MSG_HDR_VERSION`].
    pub hdr_version: u8,
    /// [`MSG_HDR_SIZE`].
    pub hdr_sz: u16,
    /// A [`msg_type`] value.
    pub msg_type: u8,
    /// [`MSG_VERSION`].
    pub msg_version: u8,
    /// Length of the (plaintext, and so ciphertext) payload.
    pub msg_sz: u16,
    /// Reserved, zero.
    pub rsvd2: u32,
    /// Which VMPCK encrypts the message (0..=3).
    pub msg_vmpck: u8,
    /// Reserved, zero.
    pub rsvd3: [u8; 35],
}

const _: () = assert!(core::mem::size_of::<GuestMsgHdr>() == MSG_HDR_SIZE);
const _: () = assert!(core::mem::offset_of!(GuestMsgHdr, msg_seqno) == 0x20);
const _: () = assert!(core::mem::offset_of!(GuestMsgHdr, algo) == 0x30);
const _: () = assert!(core::mem::offset_of!(GuestMsgHdr, hdr_sz) == 0x32);
const _: () = assert!(core::mem::offset_of!(GuestMsgHdr, msg_type) == 0x34);
const _: () = assert!(core::mem::offset_of!(GuestMsgHdr, msg_sz) == 0x36);
const _: () = assert!(core::mem::offset_of!(GuestMsgHdr, msg_vmpck) == 0x3C);

/// The AES-GCM nonce of a message: its sequence number as 8 little-endian bytes, then
/// 4 zero bytes.
pub fn nonce(seqno: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&seqno.to_le_bytes());
    n
}

/// Why a message header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMsgError {
    /// Not AES-256-GCM, or an unknown header version or size.
    BadHeader,
    /// Not the message type expected.
    BadType(u8),
    /// Not the sequence number expected.
    BadSeqno(u64),
    /// The payload does not fit the page, or is not the size expected.
    BadSize(u16),
    /// Another VMPCK than the one used.
    BadVmpck(u8),
    /// A reserved field is not zero.
    Reserved,
}

impl GuestMsgHdr {
    /// A header for a message of `msg_type` with `len` payload bytes, encrypted with
    /// VMPCK `vmpck` under sequence number `seqno` (the tag is filled in after
    /// encryption).
    pub fn new(msg_type: u8, len: u16, seqno: u64, vmpck: u8) -> Self {
        Self {
            authtag: [0; 32],
            msg_seqno: seqno,
            rsvd1: 0,
            algo: AEAD_AES_256_GCM,
            hdr_version: MSG_HDR_VERSION,
            hdr_sz: MSG_HDR_SIZE as u16,
            msg_type,
            msg_version: MSG_VERSION,
            msg_sz: len,
            rsvd2: 0,
            msg_vmpck: vmpck,
            rsvd3: [0; 35],
        }
    }

    /// The additional authenticated data (header bytes `0x30..0x60`).
    pub fn aad(&self) -> &[u8] {
        &self.as_bytes()[AAD_RANGE]
    }

    /// Check a header (copied into private memory) before its payload is decrypted:
    /// algorithm, versions, type, sequence number, VMPCK, size at most `max_len`.
    pub fn check(
        &self,
        msg_type: u8,
        seqno: u64,
        vmpck: u8,
        max_len: usize,
    ) -> Result<(), GuestMsgError> {
        if self.algo != AEAD_AES_256_GCM
            || self.hdr_version != MSG_HDR_VERSION
            || usize::from(self.hdr_sz) != MSG_HDR_SIZE
            || self.msg_version != MSG_VERSION
        {
            return Err(GuestMsgError::BadHeader);
        }
        if self.rsvd1 != 0
            || self.rsvd2 != 0
            || self.rsvd3 != [0; 35]
            || self.authtag[AUTHTAG_LEN..] != [0; 32 - AUTHTAG_LEN]
        {
            return Err(GuestMsgError::Reserved);
        }
        if self.msg_type != msg_type {
            return Err(GuestMsgError::BadType(self.msg_type));
        }
        if self.msg_seqno != seqno {
            return Err(GuestMsgError::BadSeqno(self.msg_seqno));
        }
        if self.msg_vmpck != vmpck {
            return Err(GuestMsgError::BadVmpck(self.msg_vmpck));
        }
        if usize::from(self.msg_sz) > max_len.min(MSG_MAX_PAYLOAD) {
            return Err(GuestMsgError::BadSize(self.msg_sz));
        }
        Ok(())
    }
}

/// MSG_REPORT_REQ's payload (0x60 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportReq {
    /// Data the report carries verbatim (a nonce, a key's digest).
    pub report_data: [u8; 64],
    /// The VMPL the report names (at least the requester's).
    pub vmpl: u32,
    /// Bits 1:0 KEY_SEL: 0 = VLEK if installed, else VCEK; 1 = VCEK; 2 = VLEK.
    pub key_sel: u32,
    /// Reserved, zero.
    pub rsvd: [u8; 24],
}

const _: () = assert!(core::mem::size_of::<ReportReq>() == 0x60);
const _: () = assert!(core::mem::offset_of!(ReportReq, vmpl) == 0x40);
const _: () = assert!(core::mem::offset_of!(ReportReq, key_sel) == 0x44);

/// Size of an ATTESTATION_REPORT (docs/specs.md 4.2).
pub const REPORT_SIZE: usize = 0x4A0;

/// MSG_REPORT_RSP's payload head (0x20 bytes); the report follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportRspHead {
    /// 0 on success, else a firmware error ([`REPORT_STATUS_INVALID_PARAMS`], ...).
    pub status: u32,
    /// [`REPORT_SIZE`].
    pub report_size: u32,
    /// Reserved, zero.
    pub rsvd: [u8; 24],
}

const _: () = assert!(core::mem::size_of::<ReportRspHead>() == 0x20);
/// Size of MSG_REPORT_RSP's payload.
pub const REPORT_RSP_SIZE: usize = 0x20 + REPORT_SIZE;
/// MSG_REPORT_RSP status: invalid parameters (docs/specs.md 4.1).
pub const REPORT_STATUS_INVALID_PARAMS: u32 = 0x16;
/// MSG_REPORT_RSP status: invalid key selection.
pub const REPORT_STATUS_INVALID_KEY_SEL: u32 = 0x27;

/// The secrets page (`struct snp_secrets_page`): the prefix nacre uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SecretsPageHead {
    /// Layout version.
    pub version: u32,
    /// Bit 0: IMI enabled.
    pub imien: u32,
    /// CPUID family/model/stepping.
    pub fms: u32,
    /// Reserved.
    pub rsvd: u32,
    /// Guest OS-visible workarounds.
    pub gosvw: [u8; 16],
    /// VMPCK0..3: the keys of guest messages from VMPL 0..3.
    pub vmpck: [[u8; 32]; 4],
    /// OS area: the guest's message sequence numbers per VMPCK (a guest-owned scratch
    /// area; nacre's firmware keeps its counters in its own memory).
    pub msg_seqno: [u32; 4],
}

const _: () = assert!(core::mem::offset_of!(SecretsPageHead, vmpck) == 0x20);
const _: () = assert!(core::mem::offset_of!(SecretsPageHead, msg_seqno) == 0xA0);
const _: () = assert!(core::mem::size_of::<SecretsPageHead>() == 0xB0);

/// GHCB SW_EXITINFO2 of a guest request the hypervisor did not pass on: upper 32 bits
/// 1 = the certificate buffer is too small (`SNP_GUEST_VMM_ERR_INVALID_LEN`), 2 =
/// busy, try again (`SNP_GUEST_VMM_ERR_BUSY`), Linux `include/uapi/linux/sev-guest.h`.
pub const VMM_ERR_SHIFT: u32 = 32;
/// `SNP_GUEST_VMM_ERR_INVALID_LEN`.
pub const VMM_ERR_INVALID_LEN: u64 = 1;
/// `SNP_GUEST_VMM_ERR_BUSY`.
pub const VMM_ERR_BUSY: u64 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nonce_is_the_seqno_little_endian_then_zeros() {
        assert_eq!(
            nonce(0x0102_0304_0506_0708),
            [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn aad_is_the_header_from_algo_on() {
        let h = GuestMsgHdr::new(msg_type::REPORT_REQ, 0x60, 1, 0);
        let aad = h.aad();
        assert_eq!(aad.len(), 48);
        assert_eq!(aad[0], AEAD_AES_256_GCM);
        assert_eq!(aad[4], msg_type::REPORT_REQ);
        assert_eq!(u16::from_le_bytes([aad[6], aad[7]]), 0x60);
    }

    proptest! {
        #[test]
        fn check_accepts_exactly_the_expected_header(
            bytes in proptest::collection::vec(any::<u8>(), MSG_HDR_SIZE),
            seqno in any::<u64>(),
            len in 0u16..0x200,
            pick in 0usize..6,
        ) {
            let good = GuestMsgHdr::new(msg_type::REPORT_RSP, len, seqno, 0);
            prop_assert_eq!(good.check(msg_type::REPORT_RSP, seqno, 0, 0x200), Ok(()));
            let mut bad = good;
            match pick {
                0 => bad.msg_seqno = seqno.wrapping_add(1),
                1 => bad.msg_type = msg_type::REPORT_REQ,
                2 => bad.algo = 0,
                3 => bad.msg_vmpck = 1,
                4 => bad.rsvd3[7] = 1,
                _ => bad.msg_sz = 0x201,
            }
            prop_assert!(bad.check(msg_type::REPORT_RSP, seqno, 0, 0x200).is_err());
            // Arbitrary bytes never panic.
            if let Ok(h) = GuestMsgHdr::read_from_bytes(&bytes) {
                let _ = h.check(msg_type::REPORT_RSP, seqno, 0, MSG_MAX_PAYLOAD);
            }
        }
    }
}
