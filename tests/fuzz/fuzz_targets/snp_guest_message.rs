//! SNP guest messages as the emulated security processor receives them
//! (`host/src/emulated/snp/sp.rs`, `EmulatedSp::guest_request`): any request page,
//! or any header and MSG_REPORT_REQ body the fuzzer chose sealed with the processor's
//! real VMPCK (so that what follows the authentication is reached too), in sequence.
//!
//! Input: up to 6 requests, each a mode byte then either (even mode) a raw request
//! page of at most 4096 bytes preceded by its `u16` length, or (odd mode) a 0x60-byte
//! header and a 0x60-byte body, which the target seals with VMPCK `msg_vmpck & 3`
//! under the header's sequence number and AAD.
//!
//! Invariants:
//! - a refused request gets SEV_RET_INVALID_PARAM and changes nothing: the next honest
//!   request with the sequence number the guest expects still succeeds (checked for
//!   every VMPCK at the end);
//! - an answered one is a response page the guest's checks accept: MSG_REPORT_RSP of
//!   0x4C0 bytes under the request's sequence number + 1 and VMPCK, sealed with that
//!   VMPCK, whose status is 0 (then a report of the request's data and VMPL), INVALID
//!   PARAMS or INVALID KEY_SEL.
#![no_main]

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use libfuzzer_sys::fuzz_target;
use nacre_fuzz::{Bytes, UnsignedReports};
use nacre_host::emulated::snp::sp::{EmulatedSp, FW_ERR_INVALID_PARAM};
use nacre_shared_abi::snp::guest_msg::{
    msg_type, nonce, GuestMsgHdr, ReportReq, ReportRspHead, AUTHTAG_LEN, MSG_HDR_SIZE,
    REPORT_RSP_SIZE, REPORT_SIZE, REPORT_STATUS_INVALID_KEY_SEL, REPORT_STATUS_INVALID_PARAMS,
};
use nacre_shared_abi::snp::report::AttestationReport;
use zerocopy::{FromBytes, IntoBytes};

fn seal(key: &[u8; 32], hdr: &mut GuestMsgHdr, body: &mut [u8]) {
    let tag = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
        .encrypt_in_place_detached(Nonce::from_slice(&nonce(hdr.msg_seqno)), hdr.aad(), body)
        .expect("0x60 bytes seal");
    hdr.authtag[..AUTHTAG_LEN].copy_from_slice(&tag);
}

/// Check an answer to a request sealed with `key` whose plaintext body was `body`.
fn check_answer(key: &[u8; 32], request: &GuestMsgHdr, body: Option<&ReportReq>, page: &[u8]) {
    let (rsp, rest) = GuestMsgHdr::read_from_prefix(page).expect("a header");
    rsp.check(
        msg_type::REPORT_RSP,
        request.msg_seqno + 1,
        request.msg_vmpck,
        REPORT_RSP_SIZE,
    )
    .unwrap_or_else(|e| panic!("the guest refuses the response header: {e:?}"));
    assert_eq!(usize::from(rsp.msg_sz), REPORT_RSP_SIZE);
    let mut payload = rest[..REPORT_RSP_SIZE].to_vec();
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce(rsp.msg_seqno)),
            rsp.aad(),
            &mut payload,
            Tag::from_slice(&rsp.authtag[..AUTHTAG_LEN]),
        )
        .expect("the response is sealed with the request's VMPCK");
    let (head, report) = ReportRspHead::read_from_prefix(&payload).expect("a head");
    match head.status {
        0 => {
            assert_eq!(head.report_size as usize, REPORT_SIZE);
            let r = AttestationReport::from_bytes(report).expect("a report");
            if let Some(req) = body {
                assert_eq!(r.report_data, req.report_data);
                assert_eq!(r.vmpl, req.vmpl);
            }
        }
        REPORT_STATUS_INVALID_PARAMS | REPORT_STATUS_INVALID_KEY_SEL => {
            assert_eq!(head.report_size, 0);
        }
        other => panic!("report status {other:#x}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mut sp = EmulatedSp::new().expect("the kernel's random numbers");
    sp.launch_finish([&[0u8; 4096]]);
    let keys: [[u8; 32]; 4] = std::array::from_fn(|i| *sp.vmpck(i).expect("four VMPCKs"));
    // The sequence number of the last response per VMPCK, as the guest tracks it.
    let mut last = [0u64; 4];
    let signer = UnsignedReports;

    for _ in 0..6 {
        if input.is_empty() {
            break;
        }
        let mode = input.u8();
        let mut page = [0u8; 4096];
        let mut body = None;
        if mode & 1 == 0 {
            let len = usize::from(input.u16()).min(4096);
            let raw = input.take(len);
            page[..raw.len()].copy_from_slice(raw);
        } else {
            let mut hdr = GuestMsgHdr::read_from_bytes(&input.array::<0x60>()).expect("0x60");
            let plain = input.array::<0x60>();
            let mut sealed = plain;
            seal(&keys[usize::from(hdr.msg_vmpck & 3)], &mut hdr, &mut sealed);
            page[..MSG_HDR_SIZE].copy_from_slice(hdr.as_bytes());
            page[MSG_HDR_SIZE..MSG_HDR_SIZE + 0x60].copy_from_slice(&sealed);
            body = ReportReq::read_from_bytes(&plain).ok();
        }
        let (hdr, _) = GuestMsgHdr::read_from_prefix(&page).expect("a header");
        match sp.guest_request(&page, &signer) {
            Ok(answer) => {
                let v = usize::from(hdr.msg_vmpck);
                assert!(v < 4, "VMPCK {v} does not exist");
                assert_eq!(hdr.msg_seqno, last[v] + 1, "an unexpected sequence number");
                check_answer(&keys[v], &hdr, body.as_ref(), &answer);
                last[v] += 2;
            }
            Err(code) => assert_eq!(code, FW_ERR_INVALID_PARAM),
        }
    }

    // Whatever was refused consumed nothing: honest requests go through.
    for (v, key) in keys.iter().enumerate() {
        let req = ReportReq {
            report_data: [0x5A; 64],
            vmpl: 3,
            key_sel: 0,
            rsvd: [0; 24],
        };
        let mut hdr = GuestMsgHdr::new(msg_type::REPORT_REQ, 0x60, last[v] + 1, v as u8);
        let mut sealed = [0u8; 0x60];
        sealed.copy_from_slice(req.as_bytes());
        seal(key, &mut hdr, &mut sealed);
        let mut page = [0u8; 4096];
        page[..MSG_HDR_SIZE].copy_from_slice(hdr.as_bytes());
        page[MSG_HDR_SIZE..MSG_HDR_SIZE + 0x60].copy_from_slice(&sealed);
        let answer = sp
            .guest_request(&page, &signer)
            .unwrap_or_else(|e| panic!("VMPCK {v}: an honest request refused ({e:#x})"));
        check_answer(key, &hdr, Some(&req), &answer);
    }
});
