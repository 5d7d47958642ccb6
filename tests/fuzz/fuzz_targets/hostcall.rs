//! The host side of the hostcall area (`host/src/platform/hostcall.rs`, `serve`, and
//! `HostcallHeader::check_request` in shared-abi): any header and data the guest puts
//! in the area, at the area or anywhere else it names, on the emulated SEV-SNP
//! platform's memory and MMU.
//!
//! Input: a flags byte (bit 0: the host asked for evidence; bit 1: the area is
//! elsewhere, at the GFN in the next `u32`), the header (64 bytes) and the data (at
//! most 8 KiB). Writes to stderr go to stdout and polls do not wait (see
//! `nacre_fuzz::tame`); stdin and stdout are `/dev/null`.
//!
//! Invariants:
//! - `serve` returns (no host error); a request `check_request` refuses, or an area
//!   that is not 2 MiB of shared RAM, stops the guest with a protocol violation and
//!   writes nothing;
//! - an exit stops the guest with the status it gave, evidence stops it with the
//!   evidence when the host asked for some and it fits;
//! - every other request is answered in place: only `status` and `result` of the
//!   header change, and the answer passes the firmware's own check of replies
//!   (`check_reply`) against the request; reply data stays within what was asked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::{differences, snp_platform, tame, Bytes, AREA, RAM};
use nacre_host::platform::hostcall::serve;
use nacre_host::platform::Stop;
use nacre_shared_abi::hostcall::{
    HostcallHeader, HostcallOp, HOSTCALL_AREA_SIZE, HOSTCALL_DATA_OFFSET,
};
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use zerocopy::{FromBytes, IntoBytes};

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let flags = input.u8();
    let area = if flags & 2 != 0 {
        u64::from(input.u32()) * PAGE_SIZE_4K
    } else {
        AREA
    };
    let mut request = HostcallHeader::read_from_bytes(&input.array::<64>()).expect("64 bytes");
    let payload = input.take(8192);
    tame(&mut request);

    let mut snp = snp_platform();
    snp.host.expect_evidence = flags & 1 != 0;
    let in_ram = area
        .checked_add(HOSTCALL_AREA_SIZE)
        .is_some_and(|end| end <= RAM);
    if in_ram {
        snp.mem.write(area, request.as_bytes()).expect("header");
        snp.mem
            .write(area + HOSTCALL_DATA_OFFSET, payload)
            .expect("data");
    }
    let read_area = |snp: &nacre_host::platform::emulated_snp::EmulatedSnp| {
        let mut page = vec![0u8; 3 * PAGE_SIZE_4K as usize];
        if in_ram {
            snp.mem.read(area, &mut page).expect("inside RAM");
        }
        page
    };
    let before = read_area(&snp);

    let stop = serve(&snp.mem, &snp.mmu, &mut snp.run, &mut snp.host, area)
        .unwrap_or_else(|e| panic!("a host error on guest input: {e}"));
    let after = read_area(&snp);

    let shared = area == AREA;
    let op = match request.check_request() {
        Ok(op) if shared => op,
        _ => {
            assert!(matches!(stop, Some(Stop::ProtocolViolation(_))), "{stop:?}");
            assert_eq!(before, after, "a refused hostcall wrote");
            return;
        }
    };
    match op {
        HostcallOp::Exit => {
            assert_eq!(stop, Some(Stop::AppExit((request.arg & 0xFF) as u8)));
            assert_eq!(before, after);
        }
        HostcallOp::Evidence => {
            match stop {
                Some(Stop::Evidence { kind, bytes }) => {
                    assert!(snp.host.expect_evidence);
                    assert_eq!(kind as u64, request.arg);
                    assert_eq!(bytes.len() as u64, request.len);
                }
                Some(Stop::ProtocolViolation(_)) => {
                    assert!(!snp.host.expect_evidence || request.len > 64 << 10);
                }
                other => panic!("evidence answered with {other:?}"),
            }
            assert_eq!(before, after);
        }
        _ => {
            assert_eq!(stop, None, "{op:?}");
            let reply = HostcallHeader::read_from_bytes(&after[..64]).expect("64 bytes");
            assert_eq!(
                HostcallHeader {
                    status: 0,
                    result: 0,
                    ..reply
                },
                HostcallHeader {
                    status: 0,
                    result: 0,
                    ..request
                },
                "the host changed more than status and result"
            );
            match reply.check_reply(&request) {
                Ok(Ok(n)) => assert_eq!(n, reply.result),
                Ok(Err(errno)) => assert_eq!(errno, reply.status),
                Err(e) => panic!("the guest refuses the host's reply {reply:?}: {e:?}"),
            }
            // Reply data lies within what the request allows.
            let data_at = HOSTCALL_DATA_OFFSET as usize;
            let limit = data_at + request.len as usize;
            for (start, end) in differences(&before[64..], &after[64..]) {
                for i in (start..end).map(|i| i + 64) {
                    if before[i] != after[i] {
                        assert!(
                            (data_at..limit).contains(&i),
                            "{op:?} wrote byte {i:#x} of the area"
                        );
                    }
                }
            }
        }
    }
});
