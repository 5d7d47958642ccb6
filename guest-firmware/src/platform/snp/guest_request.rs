//! SNP guest requests to the security processor (docs/specs.md 4.1): the attestation report.
//!
//! A request is MSG_REPORT_REQ encrypted with VMPCK0 (AES-256-GCM; nonce = sequence
//! number; AAD = header bytes 0x30..0x60) in a shared request page; the hypervisor
//! forwards it (GHCB NAE `SNP_GUEST_REQUEST`, info1/info2 = the request and response
//! pages) and the response comes back encrypted with the next sequence number. The
//! firmware builds the request in private memory, copies the response header and
//! payload into private memory before checking and decrypting them (trust assumption
//! 2), and never sends a new plaintext under a sequence number it used already: a
//! failure after the request left makes it forget VMPCK0 for good, as Linux and
//! COCONUT-SVSM do (a hypervisor's BUSY answer re-sends the very same message).

use super::ghcb::GhcbCall;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use nacre_shared_abi::snp::ghcb::exit_code;
use nacre_shared_abi::snp::guest_msg::{
    msg_type, nonce, GuestMsgHdr, ReportReq, SecretsPageHead, AUTHTAG_LEN, MSG_HDR_SIZE,
    REPORT_RSP_SIZE, VMM_ERR_BUSY, VMM_ERR_SHIFT,
};
use zerocopy::{FromBytes, IntoBytes};

/// How often a BUSY hypervisor is asked again before the request fails.
const BUSY_RETRIES: u32 = 64;

/// Why a guest request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequestError {
    /// VMPCK0 was forgotten after an earlier failure, or there is none.
    Disabled,
    /// The hypervisor refused or failed the exit (SW_EXITINFO2: upper 32 bits VMM
    /// error, lower 32 bits firmware error).
    Exit(u64),
    /// The response's header, size or authentication tag is wrong.
    BadResponse,
}

/// The channel to the security processor through VMPCK0.
pub struct GuestChannel {
    vmpck0: [u8; 32],
    /// The last sequence number used (the previous response's); the next request
    /// carries this + 1.
    seqno: u64,
    enabled: bool,
}

impl core::fmt::Debug for GuestChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the key.
        f.debug_struct("GuestChannel")
            .field("seqno", &self.seqno)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl GuestChannel {
    /// No key: every request fails with [`GuestRequestError::Disabled`].
    pub const fn none() -> Self {
        Self {
            vmpck0: [0; 32],
            seqno: 0,
            enabled: false,
        }
    }

    /// The channel with VMPCK0 from (a private copy of) the secrets page. An all-zero
    /// key means the security processor gave none.
    pub fn from_secrets(page: &[u8]) -> Self {
        match SecretsPageHead::read_from_prefix(page) {
            Ok((head, _)) if head.vmpck[0] != [0; 32] => Self {
                vmpck0: head.vmpck[0],
                seqno: 0,
                enabled: true,
            },
            _ => Self::none(),
        }
    }

    /// Forget VMPCK0 (after a failure that may have consumed a sequence number).
    fn disable(&mut self) {
        self.vmpck0 = [0; 32];
        self.enabled = false;
    }

    /// Ask for an attestation report carrying `report_data` for VMPL `vmpl` with key
    /// selection `key_sel`. `req` and `resp` are the request and response pages: their
    /// shared mappings (`*_va`) and GPAs. Returns MSG_REPORT_RSP's payload (status,
    /// size, the report).
    #[allow(
        clippy::too_many_arguments,
        reason = "the pages and the request fields"
    )]
    pub fn report<G: GhcbCall + ?Sized>(
        &mut self,
        ghcb: &mut G,
        req_va: u64,
        req_gpa: u64,
        resp_va: u64,
        resp_gpa: u64,
        report_data: &[u8; 64],
        vmpl: u32,
        key_sel: u32,
    ) -> Result<[u8; REPORT_RSP_SIZE], GuestRequestError> {
        if !self.enabled {
            return Err(GuestRequestError::Disabled);
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.vmpck0));
        let seq = self.seqno + 1;
        let body = ReportReq {
            report_data: *report_data,
            vmpl,
            key_sel,
            rsvd: [0; 24],
        };
        let mut payload = [0u8; 0x60];
        payload.copy_from_slice(body.as_bytes());
        let mut hdr = GuestMsgHdr::new(msg_type::REPORT_REQ, payload.len() as u16, seq, 0);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce(seq)), hdr.aad(), &mut payload)
            .map_err(|_| GuestRequestError::BadResponse)?;
        hdr.authtag[..AUTHTAG_LEN].copy_from_slice(&tag);
        // SAFETY: `req_va` maps the shared request page (4 KiB), which no Rust
        // reference covers; header and payload fit in it.
        unsafe {
            let page = req_va as *mut u8;
            core::ptr::copy_nonoverlapping(hdr.as_bytes().as_ptr(), page, MSG_HDR_SIZE);
            core::ptr::copy_nonoverlapping(payload.as_ptr(), page.add(MSG_HDR_SIZE), payload.len());
        }
        // From here on the sequence number may be consumed: any failure forgets the key.
        let mut busy = 0;
        loop {
            let g = ghcb.request();
            g.set_exit(exit_code::GUEST_REQUEST, req_gpa, resp_gpa);
            if ghcb.call(0).is_err() {
                self.disable();
                return Err(GuestRequestError::Exit(u64::MAX));
            }
            let info2 = ghcb.answer().sw_exit_info_2;
            if info2 == 0 {
                break;
            }
            if info2 >> VMM_ERR_SHIFT == VMM_ERR_BUSY && busy < BUSY_RETRIES {
                busy += 1;
                continue;
            }
            self.disable();
            return Err(GuestRequestError::Exit(info2));
        }
        let mut raw = [0u8; MSG_HDR_SIZE];
        let mut rsp = [0u8; REPORT_RSP_SIZE];
        // SAFETY: `resp_va` maps the shared response page (4 KiB); the header and the
        // largest accepted payload fit in it. Both are copied into private memory
        // before anything reads them.
        unsafe {
            let page = resp_va as *const u8;
            core::ptr::copy_nonoverlapping(page, raw.as_mut_ptr(), MSG_HDR_SIZE);
            core::ptr::copy_nonoverlapping(page.add(MSG_HDR_SIZE), rsp.as_mut_ptr(), rsp.len());
        }
        let checked = GuestMsgHdr::read_from_bytes(&raw)
            .ok()
            .filter(|h| {
                h.check(msg_type::REPORT_RSP, seq + 1, 0, REPORT_RSP_SIZE)
                    .is_ok()
                    && usize::from(h.msg_sz) == REPORT_RSP_SIZE
            })
            .and_then(|h| {
                cipher
                    .decrypt_in_place_detached(
                        Nonce::from_slice(&nonce(seq + 1)),
                        h.aad(),
                        &mut rsp,
                        Tag::from_slice(&h.authtag[..AUTHTAG_LEN]),
                    )
                    .ok()
            });
        if checked.is_none() {
            self.disable();
            return Err(GuestRequestError::BadResponse);
        }
        self.seqno = seq + 1;
        Ok(rsp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FwError;
    use crate::platform::snp::ghcb::clear_request;
    use nacre_shared_abi::snp::ghcb::Ghcb;
    use nacre_shared_abi::snp::guest_msg::{ReportRspHead, REPORT_SIZE};
    use std::boxed::Box;
    use std::vec::Vec;

    const KEY: [u8; 32] = [0x5A; 32];
    const REQ_GPA: u64 = 0x3FFF_E000;
    const RESP_GPA: u64 = 0x3FFF_F000;

    /// What the fake security processor (or the hypervisor in front of it) does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Sp {
        Honest,
        /// The hypervisor answers BUSY this many times first.
        Busy(u32),
        /// The response's tag is damaged.
        BadTag,
        /// The response repeats the request's sequence number.
        OldSeqno,
        /// The hypervisor refuses with this SW_EXITINFO2.
        Refuse(u64),
        /// The hypervisor answers every request after the first with the first
        /// response.
        Replay,
        /// The response's header states another message size.
        WrongSize,
    }

    /// A hypervisor and security processor holding VMPCK0 = [`KEY`], with the request
    /// and response pages in ordinary buffers.
    struct Host {
        ghcb: Box<Ghcb>,
        sp: Sp,
        req: Vec<u8>,
        resp: Vec<u8>,
        /// The sequence numbers of the requests the processor decrypted.
        seen: Vec<u64>,
        exits: u32,
        /// The first response page (what a replay sends again).
        first: Vec<u8>,
    }

    impl Host {
        fn new(sp: Sp) -> Self {
            Self {
                ghcb: Box::new(Ghcb::new_zeroed()),
                sp,
                req: std::vec![0; 4096],
                resp: std::vec![0; 4096],
                seen: Vec::new(),
                exits: 0,
                first: Vec::new(),
            }
        }

        /// Decrypt the request, answer with a report whose REPORT_DATA (at 0x50) is
        /// the request's data.
        fn answer_request(&mut self) {
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&KEY));
            let hdr = GuestMsgHdr::read_from_bytes(&self.req[..MSG_HDR_SIZE]).expect("header");
            hdr.check(msg_type::REPORT_REQ, hdr.msg_seqno, 0, 0x60)
                .expect("a well-formed request");
            let mut body = self.req[MSG_HDR_SIZE..MSG_HDR_SIZE + 0x60].to_vec();
            cipher
                .decrypt_in_place_detached(
                    Nonce::from_slice(&nonce(hdr.msg_seqno)),
                    hdr.aad(),
                    &mut body,
                    Tag::from_slice(&hdr.authtag[..AUTHTAG_LEN]),
                )
                .expect("the request is sealed with VMPCK0");
            self.seen.push(hdr.msg_seqno);
            let req = ReportReq::read_from_bytes(&body).expect("MSG_REPORT_REQ");
            let mut payload = std::vec![0u8; REPORT_RSP_SIZE];
            let head = ReportRspHead {
                status: 0,
                report_size: REPORT_SIZE as u32,
                rsvd: [0; 24],
            };
            payload[..0x20].copy_from_slice(head.as_bytes());
            payload[0x20 + 0x50..0x20 + 0x90].copy_from_slice(&req.report_data);
            let seq = if self.sp == Sp::OldSeqno {
                hdr.msg_seqno
            } else {
                hdr.msg_seqno + 1
            };
            let mut rhdr = GuestMsgHdr::new(msg_type::REPORT_RSP, payload.len() as u16, seq, 0);
            let tag = cipher
                .encrypt_in_place_detached(Nonce::from_slice(&nonce(seq)), rhdr.aad(), &mut payload)
                .expect("sealed");
            rhdr.authtag[..AUTHTAG_LEN].copy_from_slice(&tag);
            if self.sp == Sp::BadTag {
                rhdr.authtag[0] ^= 1;
            }
            if self.sp == Sp::WrongSize {
                rhdr.msg_sz -= 16;
            }
            self.resp[..MSG_HDR_SIZE].copy_from_slice(rhdr.as_bytes());
            self.resp[MSG_HDR_SIZE..MSG_HDR_SIZE + payload.len()].copy_from_slice(&payload);
            if self.sp == Sp::Replay {
                if self.first.is_empty() {
                    self.first = self.resp.clone();
                } else {
                    self.resp.copy_from_slice(&self.first);
                }
            }
        }
    }

    impl GhcbCall for Host {
        fn request(&mut self) -> &mut Ghcb {
            clear_request(&mut self.ghcb)
        }

        fn call(&mut self, buffer_len: usize) -> Result<(), FwError> {
            assert_eq!(buffer_len, 0);
            assert_eq!(self.ghcb.sw_exit_code, exit_code::GUEST_REQUEST);
            assert_eq!(
                (self.ghcb.sw_exit_info_1, self.ghcb.sw_exit_info_2),
                (REQ_GPA, RESP_GPA)
            );
            self.exits += 1;
            self.ghcb.sw_exit_info_2 = match self.sp {
                Sp::Busy(n) if self.exits <= n => VMM_ERR_BUSY << VMM_ERR_SHIFT,
                Sp::Refuse(info2) => info2,
                _ => {
                    self.answer_request();
                    0
                }
            };
            Ok(())
        }

        fn answer(&self) -> &Ghcb {
            &self.ghcb
        }

        fn ghcb_gpa(&self) -> u64 {
            0x7000
        }
    }

    fn channel() -> GuestChannel {
        let mut secrets = [0u8; 0xB0];
        // VMPCK0 sits at 0x20 in the secrets page (SEV-SNP firmware ABI, 8.14.2.5).
        secrets[0x20..0x40].copy_from_slice(&KEY);
        GuestChannel::from_secrets(&secrets)
    }

    fn report(
        ch: &mut GuestChannel,
        host: &mut Host,
        data: &[u8; 64],
    ) -> Result<[u8; REPORT_RSP_SIZE], GuestRequestError> {
        let (req_va, resp_va) = (host.req.as_mut_ptr() as u64, host.resp.as_mut_ptr() as u64);
        ch.report(host, req_va, REQ_GPA, resp_va, RESP_GPA, data, 0, 0)
    }

    #[test]
    fn a_report_round_trips_and_sequence_numbers_advance_by_two() {
        let mut ch = channel();
        let mut host = Host::new(Sp::Honest);
        for i in 0..3u8 {
            let rsp = report(&mut ch, &mut host, &[i; 64]).expect("a report");
            assert_eq!(&rsp[0x20 + 0x50..0x20 + 0x90], &[i; 64][..]);
        }
        assert_eq!(host.seen, [1, 3, 5]);
    }

    #[test]
    fn a_channel_without_a_key_asks_nothing() {
        let mut ch = GuestChannel::from_secrets(&[0u8; 0xB0]);
        let mut host = Host::new(Sp::Honest);
        assert_eq!(
            report(&mut ch, &mut host, &[0; 64]),
            Err(GuestRequestError::Disabled)
        );
        assert_eq!(host.exits, 0);
    }

    #[test]
    fn a_busy_hypervisor_gets_the_same_message_again() {
        let mut ch = channel();
        let mut host = Host::new(Sp::Busy(3));
        assert!(report(&mut ch, &mut host, &[1; 64]).is_ok());
        assert_eq!((host.exits, host.seen.as_slice()), (4, &[1][..]));
    }

    #[test]
    fn a_replayed_response_is_refused() {
        let mut ch = channel();
        let mut host = Host::new(Sp::Replay);
        let first = report(&mut ch, &mut host, &[1; 64]).expect("the first report");
        assert_eq!(&first[0x20 + 0x50..0x20 + 0x90], &[1; 64][..]);
        // The first response again, valid under VMPCK0 but for sequence number 2.
        assert_eq!(
            report(&mut ch, &mut host, &[2; 64]),
            Err(GuestRequestError::BadResponse)
        );
        assert_eq!(host.seen, [1, 3]);
        assert_eq!(
            report(&mut ch, &mut host, &[3; 64]),
            Err(GuestRequestError::Disabled)
        );
        assert_eq!(host.exits, 2, "nothing more is sent");
    }

    #[test]
    fn a_response_of_another_size_is_refused() {
        let mut ch = channel();
        let mut host = Host::new(Sp::WrongSize);
        assert_eq!(
            report(&mut ch, &mut host, &[1; 64]),
            Err(GuestRequestError::BadResponse)
        );
    }

    #[test]
    fn any_failure_after_sending_forgets_the_key() {
        for sp in [
            Sp::BadTag,
            Sp::OldSeqno,
            Sp::Refuse(0x1_0000_0000),
            Sp::Busy(1000),
        ] {
            let mut ch = channel();
            let mut host = Host::new(sp);
            let first = report(&mut ch, &mut host, &[1; 64]);
            assert!(first.is_err(), "{sp:?}");
            if let Sp::Refuse(info2) = sp {
                assert_eq!(first, Err(GuestRequestError::Exit(info2)));
            }
            let exits = host.exits;
            assert_eq!(
                report(&mut ch, &mut host, &[1; 64]),
                Err(GuestRequestError::Disabled)
            );
            assert_eq!(host.exits, exits, "{sp:?}: nothing more is sent");
        }
    }
}
