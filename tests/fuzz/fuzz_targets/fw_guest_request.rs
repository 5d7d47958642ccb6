//! SNP guest-message replies as the firmware takes them
//! (`guest-firmware/src/platform/snp/guest_request.rs`, `GuestChannel::report`): the
//! GHCB answer and the response page come from a host whose every answer the fuzzer
//! shapes, starting from what an honest security processor would say.
//!
//! Input: up to 4 report requests, each with its report data's first byte, VMPL and
//! key selection bytes, then up to 70 host answers of: SW_EXITINFO1 (a byte: 0 is
//! the honest 0), SW_EXITINFO2 (a byte: 0 honest, 1 BUSY, else the next `u64`), the
//! response (a byte: 0 honest, 1 honest under the request's own sequence number, 2 the
//! previous honest response again, else the next up to 1216 bytes as the page), and
//! up to 3 flips of (offset `u16`, XOR mask `u8`) in the response page. When the
//! script runs out the host is honest.
//!
//! Invariants:
//! - no two requests the guest sends share a sequence number with different
//!   plaintexts (AES-GCM nonces are never reused with VMPCK0), and each request's is
//!   the previous response's + 1;
//! - the guest accepts a response exactly when it is MSG_REPORT_RSP of the right size
//!   sealed with VMPCK0 under the request's sequence number + 1, and then returns its
//!   plaintext;
//! - BUSY is retried (the same message, at most 64 times); after any failure the
//!   channel is disabled and asks nothing more.
#![no_main]

use std::collections::BTreeMap;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_guest_firmware::error::FwError;
use nacre_guest_firmware::platform::snp::ghcb::{check_exit_info, clear_request, GhcbCall};
use nacre_guest_firmware::platform::snp::guest_request::{GuestChannel, GuestRequestError};
use nacre_shared_abi::snp::ghcb::{exit_code, Ghcb};
use nacre_shared_abi::snp::guest_msg::{
    msg_type, nonce, GuestMsgHdr, ReportReq, AUTHTAG_LEN, MSG_HDR_SIZE, REPORT_RSP_SIZE,
    VMM_ERR_BUSY, VMM_ERR_SHIFT,
};
use zerocopy::{FromBytes, IntoBytes};

const KEY: [u8; 32] = [0x5A; 32];
const REQ_GPA: u64 = 0x3FFF_E000;
const RESP_GPA: u64 = 0x3FFF_F000;
const PAGE_USED: usize = MSG_HDR_SIZE + REPORT_RSP_SIZE;

fn cipher() -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&KEY))
}

/// The response an honest processor gives to the request `hdr` (already checked),
/// sealed under `seq`.
fn honest(seq: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = vec![0u8; REPORT_RSP_SIZE];
    payload[0x20 + 0x50..0x20 + 0x90].copy_from_slice(&data[..64]);
    payload[4..8].copy_from_slice(&0x4A0u32.to_le_bytes());
    let mut hdr = GuestMsgHdr::new(msg_type::REPORT_RSP, REPORT_RSP_SIZE as u16, seq, 0);
    let tag = cipher()
        .encrypt_in_place_detached(Nonce::from_slice(&nonce(seq)), hdr.aad(), &mut payload)
        .expect("sealed");
    hdr.authtag[..AUTHTAG_LEN].copy_from_slice(&tag);
    let mut page = hdr.as_bytes().to_vec();
    page.extend_from_slice(&payload);
    page
}

/// What the guest must make of `page` as the answer to a request under `seq`: its
/// plaintext payload, or `None`.
fn acceptable(page: &[u8], seq: u64) -> Option<Vec<u8>> {
    let (hdr, rest) = GuestMsgHdr::read_from_prefix(page).ok()?;
    hdr.check(msg_type::REPORT_RSP, seq + 1, 0, REPORT_RSP_SIZE)
        .ok()?;
    if usize::from(hdr.msg_sz) != REPORT_RSP_SIZE {
        return None;
    }
    let mut payload = rest[..REPORT_RSP_SIZE].to_vec();
    cipher()
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce(seq + 1)),
            hdr.aad(),
            &mut payload,
            Tag::from_slice(&hdr.authtag[..AUTHTAG_LEN]),
        )
        .ok()?;
    Some(payload)
}

struct Host<'a> {
    ghcb: Box<Ghcb>,
    script: Bytes<'a>,
    req: Vec<u8>,
    resp: Vec<u8>,
    /// Every request decrypted: sequence number to plaintext.
    seen: BTreeMap<u64, Vec<u8>>,
    /// The sequence number the next request must carry.
    next_seq: u64,
    last_honest: Vec<u8>,
    calls: u32,
    /// Whether the last answer was BUSY.
    busy: bool,
}

impl GhcbCall for Host<'_> {
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
        self.calls += 1;
        assert!(self.calls <= 1000);
        // The request: sealed with VMPCK0 under the sequence number expected.
        let (hdr, _) = GuestMsgHdr::read_from_prefix(&self.req[..]).expect("a header");
        hdr.check(msg_type::REPORT_REQ, self.next_seq, 0, 0x60)
            .unwrap_or_else(|e| panic!("the guest's request header: {e:?}"));
        let mut body = self.req[MSG_HDR_SIZE..MSG_HDR_SIZE + 0x60].to_vec();
        cipher()
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce(hdr.msg_seqno)),
                hdr.aad(),
                &mut body,
                Tag::from_slice(&hdr.authtag[..AUTHTAG_LEN]),
            )
            .expect("the request is sealed with VMPCK0");
        if let Some(earlier) = self.seen.insert(hdr.msg_seqno, body.clone()) {
            assert_eq!(earlier, body, "sequence number {} reused", hdr.msg_seqno);
        }
        let req = ReportReq::read_from_bytes(&body).expect("MSG_REPORT_REQ");

        let honest_page = honest(hdr.msg_seqno + 1, &req.report_data);
        let (mut info1, mut info2, mut page) = (0, 0, honest_page.clone());
        if !self.script.is_empty() {
            info1 = match self.script.u8() {
                0 => 0,
                _ => self.script.u64(),
            };
            info2 = match self.script.u8() {
                0 => 0,
                1 => VMM_ERR_BUSY << VMM_ERR_SHIFT,
                _ => self.script.u64(),
            };
            page = match self.script.u8() {
                0 => honest_page.clone(),
                1 => honest(hdr.msg_seqno, &req.report_data),
                2 if !self.last_honest.is_empty() => self.last_honest.clone(),
                _ => self.script.take(PAGE_USED).to_vec(),
            };
            page.resize(PAGE_USED, 0);
            for _ in 0..self.script.u8() % 4 {
                let at = usize::from(self.script.u16()) % PAGE_USED;
                page[at] ^= self.script.u8();
            }
        }
        self.last_honest = honest_page;
        self.resp[..PAGE_USED].copy_from_slice(&page);
        self.ghcb.sw_exit_info_1 = info1;
        self.ghcb.sw_exit_info_2 = info2;
        self.busy = info1 & 0xFFFF_FFFF == 0 && info2 >> VMM_ERR_SHIFT == VMM_ERR_BUSY;
        check_exit_info(&self.ghcb)
    }

    fn answer(&self) -> &Ghcb {
        &self.ghcb
    }

    fn ghcb_gpa(&self) -> u64 {
        0x7000
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let requests: Vec<([u8; 64], u32, u32)> = (0..4)
        .map(|_| {
            (
                [input.u8(); 64],
                u32::from(input.u8()),
                u32::from(input.u8()),
            )
        })
        .collect();
    let mut secrets = [0u8; 0xB0];
    secrets[0x20..0x40].copy_from_slice(&KEY);
    let mut channel = GuestChannel::from_secrets(&secrets);
    let mut host = Host {
        ghcb: Box::new(Ghcb::new_zeroed()),
        script: input,
        req: vec![0; 4096],
        resp: vec![0; 4096],
        seen: BTreeMap::new(),
        next_seq: 1,
        last_honest: Vec::new(),
        calls: 0,
        busy: false,
    };
    let mut disabled = false;
    for (data, vmpl, key_sel) in requests {
        let (req_va, resp_va) = (host.req.as_mut_ptr() as u64, host.resp.as_mut_ptr() as u64);
        let calls = host.calls;
        let r = channel.report(
            &mut host, req_va, REQ_GPA, resp_va, RESP_GPA, &data, vmpl, key_sel,
        );
        if disabled {
            assert_eq!(r, Err(GuestRequestError::Disabled));
            assert_eq!(host.calls, calls, "a disabled channel asked");
            continue;
        }
        let made = host.calls - calls;
        assert!(made >= 1 && made <= 65, "{made} calls for one report");
        match r {
            Ok(rsp) => {
                assert!(!host.busy);
                let want = acceptable(&host.resp, host.next_seq)
                    .expect("the guest accepted a response it must refuse");
                assert_eq!(rsp.as_slice(), want.as_slice());
                host.next_seq += 2;
            }
            Err(GuestRequestError::BadResponse) => {
                assert!(acceptable(&host.resp, host.next_seq).is_none());
                disabled = true;
            }
            Err(GuestRequestError::Exit(info2)) => {
                assert!(info2 != 0);
                assert!(!host.busy || made == 65, "BUSY given up after {made} calls");
                disabled = true;
            }
            Err(GuestRequestError::Disabled) => panic!("a channel with a key is disabled"),
        }
    }
});
