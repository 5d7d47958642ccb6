//! Hostcall replies as the firmware takes them (`guest-firmware/src/platform/hostcall.rs`:
//! `HostcallArea::exchange`, which copies the reply header out of the shared area and
//! checks it with shared-abi's `HostcallHeader::check_reply`, and
//! `console_write_bytes`, which loops over a host's partial writes), against a host
//! that writes whatever the fuzzer chose into the area.
//!
//! Input: the request (64 bytes), the host's reply header (64 bytes), then for the
//! console write a fd byte, a data length (a byte of whole data areas, 0 to 2, and a
//! `u16`) and up to 4 replies of one kind byte and a `u64` each.
//!
//! Invariants:
//! - the host is rung once, with the area's page number, for a request that fits;
//! - an accepted reply stays within the request: a transfer no longer than asked, the
//!   clock's 24 bytes, a terminal reply of its ioctl's size, a ready mask inside the
//!   poll's, a sleep's 0 or network wake-up, a socket reply within its request (shared-abi
//!   `net::reply_fits`); an errno (1 to 4095) only where the app may see one;
//!   an exit or evidence never returns; reply data of an accepted length can be copied
//!   out;
//! - a console write reports at most the bytes it was given, sends each chunk whole
//!   and stops at the first short write.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_guest_firmware::error::FwError;
use nacre_guest_firmware::platform::hostcall::{console_write_bytes, HostcallArea};
use nacre_shared_abi::hostcall::{
    terminal_reply_size, ClockReply, HostcallHeader, HostcallOp, HOSTCALL_AREA_SIZE,
    HOSTCALL_MAX_DATA,
};
use zerocopy::{FromBytes, IntoBytes};

const AREA_GPA: u64 = 0x3FE0_0000;

/// The shared area: one buffer for the whole run.
static SHARED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// What the console writes send: at most two data areas and a bit.
static DATA: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let request = HostcallHeader::read_from_bytes(&input.array::<64>()).expect("64 bytes");
    let reply = HostcallHeader::read_from_bytes(&input.array::<64>()).expect("64 bytes");

    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if shared.is_empty() {
        *shared = vec![0; (HOSTCALL_AREA_SIZE / 8) as usize];
    }
    let va = shared.as_mut_ptr() as u64;
    let mut area = HostcallArea::none();
    area.set(va, AREA_GPA);

    let mut rung = 0;
    let r = area.exchange(request, |page| {
        rung += 1;
        assert_eq!(page, AREA_GPA >> 12, "the area's page number");
        let mut sent = [0u8; 64];
        // SAFETY: `va` is the start of the shared buffer, which holds the whole area
        // and outlives the call; nothing else reaches it while the host answers.
        unsafe {
            std::ptr::copy_nonoverlapping(va as *const u8, sent.as_mut_ptr(), 64);
            std::ptr::copy_nonoverlapping(reply.as_bytes().as_ptr(), va as *mut u8, 64);
        }
        assert_eq!(&sent, request.as_bytes(), "the request went out as built");
        Ok(())
    });
    assert_eq!(rung, usize::from(request.len <= HOSTCALL_MAX_DATA));
    let op = HostcallOp::try_from(request.op);
    match r {
        Ok(Ok(n)) => {
            assert_eq!(reply.status, 0);
            assert_eq!(n, reply.result);
            match op.expect("an accepted reply to a known operation") {
                HostcallOp::Write | HostcallOp::Read => assert!(n <= request.len),
                HostcallOp::Clock => assert_eq!(n, std::mem::size_of::<ClockReply>() as u64),
                HostcallOp::Terminal => assert_eq!(Some(n), terminal_reply_size(request.arg)),
                HostcallOp::Poll => assert_eq!(n & !request.arg, 0),
                HostcallOp::Sleep => assert!(n <= nacre_shared_abi::net::SLEEP_WOKEN_BY_NET),
                HostcallOp::AppEntry => assert_eq!(n, 0),
                HostcallOp::Net => assert!(nacre_shared_abi::net::reply_fits(&request, n)),
                other => panic!("{other:?} returned a reply"),
            }
            if n <= request.len {
                let mut out = vec![0u8; n as usize];
                area.get(0, &mut out).expect("reply data within the area");
            }
        }
        Ok(Err(errno)) => {
            assert!((1..=4095).contains(&errno));
            assert_eq!(errno, reply.status);
            assert!(matches!(
                op,
                Ok(HostcallOp::Write | HostcallOp::Read | HostcallOp::Terminal | HostcallOp::Net)
            ));
        }
        Err(e) => assert_eq!(e, FwError::Hostcall),
    }

    // A console write of `len` bytes against a host that answers as the script says.
    let fd = 1 + u32::from(input.u8() & 1);
    let len = usize::from(input.u8() % 3) * HOSTCALL_MAX_DATA as usize + usize::from(input.u16());
    let bytes = &DATA.get_or_init(|| vec![0x42; 2 * HOSTCALL_MAX_DATA as usize + 0x1_0000])[..len];
    let mut chunks = Vec::new();
    let written = console_write_bytes(
        &mut area,
        |_, req| {
            assert_eq!(req.op, HostcallOp::Write as u32);
            assert_eq!(req.fd, fd);
            assert!(req.len <= HOSTCALL_MAX_DATA);
            chunks.push(req.len);
            if input.is_empty() {
                return Ok(Ok(req.len));
            }
            match (input.u8() % 3, input.u64()) {
                (0, n) => Ok(Ok(n.min(req.len))),
                (1, errno) => Ok(Err(errno % 4095 + 1)),
                _ => Err(FwError::Hostcall),
            }
        },
        fd,
        bytes,
    );
    if let Ok(n) = written {
        assert!(n as usize <= len);
    }
    let sent: u64 = chunks.iter().sum();
    assert!(sent as usize <= len);
    for (i, &c) in chunks.iter().enumerate() {
        if i + 1 < chunks.len() {
            assert_eq!(c, HOSTCALL_MAX_DATA, "only the last chunk is short");
        }
    }
});
