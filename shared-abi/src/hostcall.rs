//! The hostcall buffer: console I/O and exit between the firmware and the host.
//!
//! The firmware owns [`HOSTCALL_BUFFER_PAGES`] contiguous pages that it converts to
//! shared at boot. A request is a [`HostcallHeader`] at offset 0 and its data at
//! [`HOSTCALL_DATA_OFFSET`]. The firmware rings the host with a GHCB IOIO exit (NAE
//! 0x7B, an OUT of 32 bits) to [`HOSTCALL_PORT`] whose data is the buffer's GPA
//! divided by 4 KiB; on hardware SNP this is exactly what a #VC handler does for an
//! `out`. The host copies the header out of shared memory, checks it, performs the
//! call and writes `status` and `result` back. The firmware copies the reply into
//! private memory and checks it before use (DESIGN.md trust assumptions 1 and 2).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// I/O port of the hostcall doorbell (a nacre choice, unused by any PC device).
pub const HOSTCALL_PORT: u16 = 0x0CA0;
/// Pages in the hostcall buffer.
pub const HOSTCALL_BUFFER_PAGES: u64 = 16;
/// Bytes in the hostcall buffer.
pub const HOSTCALL_BUFFER_SIZE: u64 = HOSTCALL_BUFFER_PAGES * crate::layout::PAGE_SIZE_4K;
/// Offset of the data area.
pub const HOSTCALL_DATA_OFFSET: u64 = 64;
/// Largest data length of one request.
pub const HOSTCALL_MAX_DATA: u64 = HOSTCALL_BUFFER_SIZE - HOSTCALL_DATA_OFFSET;

/// Hostcall operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HostcallOp {
    /// Write `len` data bytes to `fd` (1 = stdout, 2 = stderr). `result` = bytes written.
    Write = 1,
    /// Read up to `len` bytes from `fd` 0 into the data area. `result` = bytes read.
    Read = 2,
    /// The app exited; `arg` is its exit status (0..=255). No reply.
    Exit = 3,
}

impl TryFrom<u32> for HostcallOp {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Write),
            2 => Ok(Self::Read),
            3 => Ok(Self::Exit),
            other => Err(other),
        }
    }
}

/// The request/reply header at the start of the hostcall buffer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HostcallHeader {
    /// [`HostcallOp`] as `u32`.
    pub op: u32,
    /// File descriptor for Write/Read.
    pub fd: u32,
    /// Request data length (Write) or capacity (Read).
    pub len: u64,
    /// Operation argument (the exit status for Exit).
    pub arg: u64,
    /// Host reply: 0 on success, else a positive Linux errno.
    pub status: u64,
    /// Host reply: bytes transferred.
    pub result: u64,
    /// Reserved, zero.
    pub reserved: [u64; 3],
}

const _: () = assert!(core::mem::size_of::<HostcallHeader>() == HOSTCALL_DATA_OFFSET as usize);
const _: () = assert!(core::mem::offset_of!(HostcallHeader, status) == 0x18);
const _: () = assert!(core::mem::offset_of!(HostcallHeader, result) == 0x20);

/// Why a hostcall request (host side) or reply (guest side) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostcallError {
    /// Unknown operation.
    BadOp(u32),
    /// Length larger than the data area.
    BadLength(u64),
    /// File descriptor not allowed for this operation.
    BadFd(u32),
    /// A reply claims more bytes than were asked for, or an out-of-range status.
    BadReply,
}

impl HostcallHeader {
    /// Host side: check a request copied out of shared memory.
    pub fn check_request(&self) -> Result<HostcallOp, HostcallError> {
        let op = HostcallOp::try_from(self.op).map_err(HostcallError::BadOp)?;
        if self.len > HOSTCALL_MAX_DATA {
            return Err(HostcallError::BadLength(self.len));
        }
        match op {
            HostcallOp::Write if self.fd != 1 && self.fd != 2 => Err(HostcallError::BadFd(self.fd)),
            HostcallOp::Read if self.fd != 0 => Err(HostcallError::BadFd(self.fd)),
            _ => Ok(op),
        }
    }

    /// Guest side: check a reply (copied into private memory) against the request
    /// that was sent. Returns the number of bytes transferred, or the errno.
    pub fn check_reply(&self, request: &HostcallHeader) -> Result<Result<u64, u64>, HostcallError> {
        /// Largest Linux errno (include/linux/err.h MAX_ERRNO).
        const MAX_ERRNO: u64 = 4095;
        if self.status > MAX_ERRNO {
            return Err(HostcallError::BadReply);
        }
        if self.status != 0 {
            return Ok(Err(self.status));
        }
        if self.result > request.len {
            return Err(HostcallError::BadReply);
        }
        Ok(Ok(self.result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lengths around the data area's size.
    fn len() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..=HOSTCALL_MAX_DATA,
            HOSTCALL_MAX_DATA - 2..=HOSTCALL_MAX_DATA + 2,
            any::<u64>(),
        ]
    }

    fn request() -> impl Strategy<Value = HostcallHeader> {
        (
            prop_oneof![4 => 0u32..5, 1 => any::<u32>()],
            prop_oneof![4 => 0u32..4, 1 => any::<u32>()],
            len(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<[u64; 3]>(),
        )
            .prop_map(
                |(op, fd, len, arg, status, result, reserved)| HostcallHeader {
                    op,
                    fd,
                    len,
                    arg,
                    status,
                    result,
                    reserved,
                },
            )
    }

    /// Replies: status mostly 0 or near the errno limit; result mostly near the
    /// request's length.
    fn reply_to(request: HostcallHeader) -> impl Strategy<Value = HostcallHeader> {
        let status = prop_oneof![3 => Just(0u64), 1 => 1u64..=4097, 1 => any::<u64>()];
        let result = prop_oneof![
            0..=request.len,
            Just(request.len.saturating_add(1)),
            (0u64..3).prop_map(move |d| request.len.wrapping_add(d)),
            any::<u64>(),
        ];
        (status, result).prop_map(move |(status, result)| HostcallHeader {
            status,
            result,
            ..request
        })
    }

    proptest! {
        #[test]
        fn op_round_trips(v in prop_oneof![0u32..5, any::<u32>()]) {
            match HostcallOp::try_from(v) {
                Ok(op) => prop_assert_eq!(op as u32, v),
                Err(e) => {
                    prop_assert_eq!(e, v);
                    prop_assert!(!(1..=3).contains(&v));
                }
            }
        }

        #[test]
        fn accepted_requests_fit_and_use_an_allowed_fd(h in request()) {
            let fd_ok = match h.op {
                1 => h.fd == 1 || h.fd == 2,
                2 => h.fd == 0,
                _ => true,
            };
            let expected_ok = (1..=3).contains(&h.op) && h.len <= HOSTCALL_MAX_DATA && fd_ok;
            match h.check_request() {
                Ok(op) => {
                    prop_assert!(expected_ok);
                    prop_assert_eq!(op as u32, h.op);
                    prop_assert!(h.len <= HOSTCALL_MAX_DATA);
                    prop_assert!(HOSTCALL_DATA_OFFSET + h.len <= HOSTCALL_BUFFER_SIZE);
                    match op {
                        HostcallOp::Write => prop_assert!(h.fd == 1 || h.fd == 2),
                        HostcallOp::Read => prop_assert_eq!(h.fd, 0),
                        HostcallOp::Exit => {}
                    }
                }
                Err(HostcallError::BadOp(op)) => {
                    prop_assert_eq!(op, h.op);
                    prop_assert!(!(1..=3).contains(&op));
                }
                Err(HostcallError::BadLength(len)) => {
                    prop_assert_eq!(len, h.len);
                    prop_assert!(len > HOSTCALL_MAX_DATA);
                }
                Err(HostcallError::BadFd(fd)) => {
                    prop_assert_eq!(fd, h.fd);
                    prop_assert!(!fd_ok);
                }
                Err(HostcallError::BadReply) => prop_assert!(false, "BadReply from check_request"),
            }
        }

        #[test]
        fn reply_never_claims_more_than_asked(
            (request, reply) in request().prop_flat_map(|r| (Just(r), reply_to(r))),
        ) {
            match reply.check_reply(&request) {
                Ok(Ok(n)) => {
                    prop_assert!(n <= request.len);
                    prop_assert_eq!(n, reply.result);
                    prop_assert_eq!(reply.status, 0);
                }
                Ok(Err(errno)) => {
                    prop_assert!((1..=4095).contains(&errno));
                    prop_assert_eq!(errno, reply.status);
                }
                Err(e) => {
                    prop_assert_eq!(e, HostcallError::BadReply);
                    prop_assert!(
                        reply.status > 4095 || (reply.status == 0 && reply.result > request.len)
                    );
                }
            }
        }

        #[test]
        fn header_bytes_round_trip(h in request()) {
            let bytes = h.as_bytes();
            prop_assert_eq!(bytes.len() as u64, HOSTCALL_DATA_OFFSET);
            prop_assert_eq!(&bytes[0x18..0x20], &h.status.to_le_bytes());
            prop_assert_eq!(&bytes[0x20..0x28], &h.result.to_le_bytes());
            prop_assert_eq!(HostcallHeader::read_from_bytes(bytes), Ok(h));
        }
    }
}
