//! The hostcall area: 2 MiB of shared memory at the end of guest RAM through which the
//! firmware asks the host for I/O (shared-abi `hostcall.rs`). It is shared memory, so
//! nothing here ever holds a Rust reference into it: requests are written with raw
//! copies, the reply header is copied into private memory and checked before anything
//! uses it (trust assumption 2), and reply data is copied out only up to the length the
//! checked header allows. Only how the host is told to look differs between the
//! platforms (a GHCB IOIO exit on SNP, a TDVMCALL Instruction.IO on TDX): that is the
//! `ring` callback.
//!
//! The area is mapped at [`crate::mem::user::IO_WINDOW_VA`], user-accessible, so that
//! bulk copies between it and the app run in ring 3 (`arch/upcall.rs`). Only what the
//! app itself sends out or reads in passes through it.

use crate::error::FwError;
use nacre_shared_abi::hostcall::{
    HostcallHeader, HostcallOp, HOSTCALL_AREA_SIZE, HOSTCALL_DATA_OFFSET, HOSTCALL_MAX_DATA,
};
use zerocopy::{FromBytes, IntoBytes};

/// EIO (Linux `asm-generic/errno-base.h`).
const EIO: u64 = 5;

/// The firmware's view of the shared hostcall area.
#[derive(Debug)]
pub struct HostcallArea {
    /// Virtual address of the area's shared mapping, 0 before it exists.
    va: u64,
    /// Its GPA (without any encryption or shared bit).
    gpa: u64,
}

impl HostcallArea {
    /// No area yet.
    pub const fn none() -> Self {
        Self { va: 0, gpa: 0 }
    }

    /// The area mapped shared at `va`, at guest-physical `gpa`.
    pub fn set(&mut self, va: u64, gpa: u64) {
        self.va = va;
        self.gpa = gpa;
    }

    /// Whether the area exists.
    pub fn ready(&self) -> bool {
        self.va != 0
    }

    /// Guest-physical address of the data area (valid when [`Self::ready`]).
    pub fn data_gpa(&self) -> u64 {
        self.gpa + HOSTCALL_DATA_OFFSET
    }

    /// Virtual address of the data area (valid when [`Self::ready`]).
    pub fn data_va(&self) -> u64 {
        self.va + HOSTCALL_DATA_OFFSET
    }

    /// The area's last two pages, as (VA, GPA) pairs, for requests that need whole
    /// shared pages of their own (SNP guest request and response pages). They overlap
    /// the end of the data area: a hostcall and such a request never run at once.
    pub fn page_pair(&self) -> ((u64, u64), (u64, u64)) {
        let last = HOSTCALL_AREA_SIZE - 4096;
        let prev = last - 4096;
        (
            (self.va + prev, self.gpa + prev),
            (self.va + last, self.gpa + last),
        )
    }

    /// Copy `src` into the data area at `offset`.
    pub fn put(&mut self, offset: u64, src: &[u8]) -> Result<(), FwError> {
        if !self.ready() || offset.saturating_add(src.len() as u64) > HOSTCALL_MAX_DATA {
            return Err(FwError::Hostcall);
        }
        // SAFETY: the data area is HOSTCALL_MAX_DATA bytes of shared memory mapped at
        // `data_va` that no Rust reference covers; the range was checked above.
        unsafe {
            core::ptr::copy_nonoverlapping(
                src.as_ptr(),
                (self.data_va() + offset) as *mut u8,
                src.len(),
            )
        };
        Ok(())
    }

    /// Copy `dst.len()` bytes out of the data area at `offset` into private memory.
    pub fn get(&self, offset: u64, dst: &mut [u8]) -> Result<(), FwError> {
        if !self.ready() || offset.saturating_add(dst.len() as u64) > HOSTCALL_MAX_DATA {
            return Err(FwError::Hostcall);
        }
        // SAFETY: the data area is HOSTCALL_MAX_DATA bytes of shared memory mapped at
        // `data_va` that no Rust reference covers; the range was checked above, and
        // `dst` is private memory the caller owns.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (self.data_va() + offset) as *const u8,
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// Send `req` (whose data the caller placed already); `ring` tells the host the
    /// area's page number. Returns the reply header, copied into private memory and
    /// checked against the request: `Ok(Ok(result))` or `Ok(Err(errno))`.
    pub fn exchange(
        &mut self,
        req: HostcallHeader,
        ring: impl FnOnce(u64) -> Result<(), FwError>,
    ) -> Result<Result<u64, u64>, FwError> {
        if !self.ready() || req.len > HOSTCALL_MAX_DATA {
            return Err(FwError::Hostcall);
        }
        let base = self.va as *mut u8;
        // SAFETY: `va` maps the shared area, which no Rust reference covers; the header
        // fits in its first page.
        unsafe {
            core::ptr::copy_nonoverlapping(req.as_bytes().as_ptr(), base, req.as_bytes().len())
        };
        ring(self.gpa >> 12)?;
        if req.op == HostcallOp::Exit as u32 || req.op == HostcallOp::Evidence as u32 {
            return Err(FwError::Hostcall);
        }
        let mut reply = [0u8; 64];
        // SAFETY: `va` maps the shared area, which no Rust reference covers; the reply
        // header lies in its first page and is copied into private memory before use.
        unsafe { core::ptr::copy_nonoverlapping(base as *const u8, reply.as_mut_ptr(), 64) };
        let reply = HostcallHeader::read_from_bytes(&reply).map_err(|_| FwError::Hostcall)?;
        reply.check_reply(&req).map_err(|_| FwError::Hostcall)
    }
}

/// Write `data` (firmware memory) to the host's fd 1 or 2 through `call`, one hostcall
/// per data-area-full. Returns bytes written or a Linux errno.
pub fn console_write_bytes(
    area: &mut HostcallArea,
    mut call: impl FnMut(&mut HostcallArea, HostcallHeader) -> Result<Result<u64, u64>, FwError>,
    fd: u32,
    data: &[u8],
) -> Result<u64, u64> {
    let mut done = 0u64;
    for chunk in data.chunks(HOSTCALL_MAX_DATA as usize) {
        area.put(0, chunk).map_err(|_| EIO)?;
        let req = write_request(fd, chunk.len() as u64);
        match call(area, req) {
            Ok(Ok(n)) => {
                done += n;
                if n < chunk.len() as u64 {
                    break;
                }
            }
            Ok(Err(errno)) => return if done > 0 { Ok(done) } else { Err(errno) },
            Err(_) => return Err(EIO),
        }
    }
    Ok(done)
}

/// A Write request of `len` bytes already in the data area.
pub fn write_request(fd: u32, len: u64) -> HostcallHeader {
    HostcallHeader {
        op: HostcallOp::Write as u32,
        fd,
        len,
        ..Default::default()
    }
}

/// The AppEntry hostcall: the boot is over, the app starts.
pub fn app_entry_request() -> HostcallHeader {
    HostcallHeader {
        op: HostcallOp::AppEntry as u32,
        ..Default::default()
    }
}

/// The exit hostcall: the app's status; its syscall counts are in the data area
/// (`len` bytes, of which the last `all` count every syscall, the others the
/// unsupported ones).
pub fn exit_request(status: u8, len: u64, all: u64) -> HostcallHeader {
    HostcallHeader {
        op: HostcallOp::Exit as u32,
        arg: u64::from(status),
        len,
        arg2: all,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::hostcall::{ClockReply, HostcallOp};
    use std::vec::Vec;

    /// A hostcall area in an ordinary buffer, and what the "host" answers.
    struct Shared {
        mem: Vec<u64>,
    }

    impl Shared {
        fn new() -> Self {
            Self {
                mem: std::vec![0; (HOSTCALL_AREA_SIZE / 8) as usize],
            }
        }

        /// The header as the host sees it.
        fn header(&self) -> [u8; 64] {
            let mut b = [0u8; 64];
            b.copy_from_slice(&self.mem.as_bytes()[..64]);
            b
        }

        fn area(&mut self) -> HostcallArea {
            let mut a = HostcallArea::none();
            a.set(self.mem.as_mut_ptr() as u64, 0x3FE0_0000);
            a
        }
    }

    /// A ring callback that answers the header in the area at `va` with `reply`
    /// applied to the request the firmware wrote.
    fn host(
        va: u64,
        reply: impl Fn(&mut HostcallHeader),
    ) -> impl FnOnce(u64) -> Result<(), FwError> {
        move |page| {
            assert_eq!(page, 0x3FE0_0000 >> 12, "the area's page number");
            let mut raw = [0u8; 64];
            // SAFETY: `va` is the test's buffer; the header is its first 64 bytes.
            unsafe { core::ptr::copy_nonoverlapping(va as *const u8, raw.as_mut_ptr(), 64) };
            let mut h = HostcallHeader::read_from_bytes(&raw).expect("a header");
            reply(&mut h);
            // SAFETY: `va` is the test's buffer, which holds the whole area; the header
            // is its first 64 bytes and no reference to them is live.
            unsafe { core::ptr::copy_nonoverlapping(h.as_bytes().as_ptr(), va as *mut u8, 64) };
            Ok(())
        }
    }

    fn read(len: u64) -> HostcallHeader {
        HostcallHeader {
            op: HostcallOp::Read as u32,
            len,
            ..Default::default()
        }
    }

    #[test]
    fn app_entry_is_a_request_without_data_whose_reply_is_checked() {
        let req = app_entry_request();
        assert_eq!(req.check_request(), Ok(HostcallOp::AppEntry));
        assert_eq!(req.len, 0);
        let mut s = Shared::new();
        let mut a = s.area();
        let va = s.mem.as_mut_ptr() as u64;
        assert_eq!(a.exchange(req, host(va, |h| h.result = 0)), Ok(Ok(0)));
        assert_eq!(
            HostcallHeader::read_from_bytes(&s.header()).map(|h| h.op),
            Ok(HostcallOp::AppEntry as u32)
        );
        // A host that claims more is refused.
        assert_eq!(
            a.exchange(req, host(va, |h| h.result = 1)),
            Err(FwError::Hostcall)
        );
    }

    #[test]
    fn data_goes_in_and_out_within_the_data_area_only() {
        let mut s = Shared::new();
        let mut a = s.area();
        assert_eq!(a.put(10, b"hello"), Ok(()));
        let mut out = [0u8; 5];
        assert_eq!(a.get(10, &mut out), Ok(()));
        assert_eq!(&out, b"hello");
        assert_eq!(
            a.put(HOSTCALL_MAX_DATA - 4, b"hello"),
            Err(FwError::Hostcall)
        );
        assert_eq!(a.get(u64::MAX, &mut out), Err(FwError::Hostcall));
        assert_eq!(a.data_gpa(), 0x3FE0_0000 + HOSTCALL_DATA_OFFSET);
        let ((_, req_gpa), (_, resp_gpa)) = a.page_pair();
        assert_eq!(resp_gpa - req_gpa, 4096);
        assert_eq!(resp_gpa + 4096, 0x3FE0_0000 + HOSTCALL_AREA_SIZE);
    }

    #[test]
    fn no_area_no_hostcall() {
        let mut a = HostcallArea::none();
        assert!(!a.ready());
        assert_eq!(a.put(0, b"x"), Err(FwError::Hostcall));
        let rang = core::cell::Cell::new(false);
        let r = a.exchange(read(1), |_| {
            rang.set(true);
            Ok(())
        });
        assert_eq!(r, Err(FwError::Hostcall));
        assert!(!rang.get());
    }

    #[test]
    fn a_reply_within_the_request_is_the_result() {
        let mut s = Shared::new();
        let mut a = s.area();
        let va = s.mem.as_ptr() as u64;
        let r = a.exchange(read(100), host(va, |h| h.result = 42));
        assert_eq!(r, Ok(Ok(42)));
        let r = a.exchange(read(100), host(va, |h| h.status = 11));
        assert_eq!(r, Ok(Err(11)), "an errno for the app");
    }

    #[test]
    fn a_reply_beyond_the_request_is_refused() {
        let mut s = Shared::new();
        let mut a = s.area();
        let va = s.mem.as_ptr() as u64;
        assert_eq!(
            a.exchange(read(100), host(va, |h| h.result = 101)),
            Err(FwError::Hostcall)
        );
        assert_eq!(
            a.exchange(read(100), host(va, |h| h.status = 5000)),
            Err(FwError::Hostcall),
            "no errno is that large"
        );
        let clock = HostcallHeader {
            op: HostcallOp::Clock as u32,
            len: core::mem::size_of::<ClockReply>() as u64,
            ..Default::default()
        };
        assert_eq!(
            a.exchange(clock, host(va, |h| h.status = 5)),
            Err(FwError::Hostcall),
            "the clock never fails"
        );
        assert_eq!(
            a.exchange(read(HOSTCALL_MAX_DATA + 1), host(va, |_| {})),
            Err(FwError::Hostcall)
        );
    }

    #[test]
    fn a_write_or_poll_reply_beyond_the_request_is_refused() {
        let mut s = Shared::new();
        let mut a = s.area();
        let va = s.mem.as_ptr() as u64;
        assert_eq!(
            a.exchange(write_request(1, 17), host(va, |h| h.result = 18)),
            Err(FwError::Hostcall),
            "a write of more than was sent"
        );
        assert_eq!(
            a.exchange(write_request(1, 17), host(va, |h| h.result = 17)),
            Ok(Ok(17))
        );
        let poll = HostcallHeader {
            op: HostcallOp::Poll as u32,
            arg: nacre_shared_abi::hostcall::POLL_STDIN_READABLE,
            ..Default::default()
        };
        let stdout_too = nacre_shared_abi::hostcall::POLL_STDOUT_WRITABLE;
        assert_eq!(
            a.exchange(poll, host(va, move |h| h.result = h.arg | stdout_too)),
            Err(FwError::Hostcall),
            "an fd the guest did not ask about"
        );
        assert_eq!(
            a.exchange(poll, host(va, |h| h.result = h.arg)),
            Ok(Ok(poll.arg))
        );
    }

    #[test]
    fn exit_never_returns_a_reply() {
        let mut s = Shared::new();
        let mut a = s.area();
        let va = s.mem.as_ptr() as u64;
        assert_eq!(
            a.exchange(exit_request(3, 0, 0), host(va, |h| h.result = 0)),
            Err(FwError::Hostcall)
        );
        // The request went out as asked.
        let h = HostcallHeader::read_from_bytes(&s.header()).expect("a header");
        assert_eq!((h.op, h.arg), (HostcallOp::Exit as u32, 3));
    }

    #[test]
    fn console_writes_go_one_area_full_at_a_time_and_stop_short() {
        let mut s = Shared::new();
        let mut a = s.area();
        let data = std::vec![b'x'; HOSTCALL_MAX_DATA as usize + 10];
        let mut lens = Vec::new();
        let r = console_write_bytes(
            &mut a,
            |_, req| {
                lens.push(req.len);
                Ok(Ok(req.len))
            },
            1,
            &data,
        );
        assert_eq!(r, Ok(data.len() as u64));
        assert_eq!(lens, [HOSTCALL_MAX_DATA, 10]);
        // A short write ends the loop; an errno counts only before anything went out.
        let r = console_write_bytes(&mut a, |_, _| Ok(Ok(7)), 2, &data);
        assert_eq!(r, Ok(7));
        let mut first = true;
        let r = console_write_bytes(
            &mut a,
            |_, req| {
                if std::mem::take(&mut first) {
                    Ok(Ok(req.len))
                } else {
                    Ok(Err(28))
                }
            },
            2,
            &data,
        );
        assert_eq!(r, Ok(HOSTCALL_MAX_DATA));
        assert_eq!(
            console_write_bytes(&mut a, |_, _| Ok(Err(28)), 2, b"abc"),
            Err(28)
        );
        assert_eq!(
            console_write_bytes(&mut a, |_, _| Err(FwError::Hostcall), 2, b"abc"),
            Err(EIO)
        );
    }
}
