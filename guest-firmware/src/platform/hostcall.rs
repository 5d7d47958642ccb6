//! The hostcall buffer: shared pages through which the firmware asks the host for I/O
//! (shared-abi `hostcall.rs`). It is shared memory, so nothing here ever holds a Rust
//! reference into it: requests are copied in, the reply header is copied out into
//! private memory and checked before anything uses it (trust assumption 2). Only how
//! the host is told to look differs between the platforms (a GHCB IOIO exit on SNP, a
//! TDVMCALL Instruction.IO on TDX): that is the `ring` callback.

use crate::error::FwError;
use nacre_shared_abi::hostcall::{
    HostcallHeader, HostcallOp, HOSTCALL_DATA_OFFSET, HOSTCALL_MAX_DATA,
};
use zerocopy::{FromBytes, IntoBytes};

/// EIO (Linux `asm-generic/errno-base.h`).
const EIO: u64 = 5;

/// The firmware's view of the shared hostcall buffer.
#[derive(Debug)]
pub struct HostcallBuffer {
    /// Virtual address of the buffer's shared mapping, 0 before it exists.
    va: u64,
    /// Its GPA (without any encryption or shared bit).
    gpa: u64,
}

impl HostcallBuffer {
    /// No buffer yet.
    pub const fn none() -> Self {
        Self { va: 0, gpa: 0 }
    }

    /// The buffer mapped shared at `va`, at guest-physical `gpa`.
    pub fn set(&mut self, va: u64, gpa: u64) {
        self.va = va;
        self.gpa = gpa;
    }

    /// Send `req` with `data`; `ring` tells the host the buffer's page number. Returns
    /// the reply header, copied into private memory (the caller checks it against the
    /// request).
    pub fn exchange(
        &mut self,
        mut req: HostcallHeader,
        data: &[u8],
        ring: impl FnOnce(u64) -> Result<(), FwError>,
    ) -> Result<HostcallHeader, FwError> {
        if self.va == 0 || data.len() as u64 > HOSTCALL_MAX_DATA {
            return Err(FwError::Hostcall);
        }
        req.len = req.len.max(data.len() as u64);
        let base = self.va as *mut u8;
        // SAFETY: `va` maps the shared hostcall buffer (HOSTCALL_BUFFER_SIZE bytes)
        // that no Rust reference covers; the lengths were checked above.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                base.add(HOSTCALL_DATA_OFFSET as usize),
                data.len(),
            );
            core::ptr::copy_nonoverlapping(
                req.as_bytes().as_ptr(),
                base,
                HOSTCALL_DATA_OFFSET as usize,
            );
        }
        ring(self.gpa >> 12)?;
        let mut reply = [0u8; HOSTCALL_DATA_OFFSET as usize];
        // SAFETY: as above; the reply header is copied into private memory before use.
        unsafe {
            core::ptr::copy_nonoverlapping(base as *const u8, reply.as_mut_ptr(), reply.len())
        };
        HostcallHeader::read_from_bytes(&reply).map_err(|_| FwError::Hostcall)
    }
}

/// Write `data` to the host's fd 1 or 2 through `call` (one hostcall per chunk).
/// Returns bytes written or a Linux errno.
pub fn console_write(
    mut call: impl FnMut(HostcallHeader, &[u8]) -> Result<HostcallHeader, FwError>,
    fd: u32,
    data: &[u8],
) -> Result<u64, u64> {
    let mut done = 0u64;
    for chunk in data.chunks(HOSTCALL_MAX_DATA as usize) {
        let req = HostcallHeader {
            op: HostcallOp::Write as u32,
            fd,
            len: chunk.len() as u64,
            ..Default::default()
        };
        let reply = call(req, chunk).map_err(|_| EIO)?;
        match reply.check_reply(&req) {
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

/// The exit hostcall: the app's status and its unsupported-syscall counts.
pub fn exit_request(status: u8, unsupported: &[u8]) -> HostcallHeader {
    HostcallHeader {
        op: HostcallOp::Exit as u32,
        arg: u64::from(status),
        len: unsupported.len() as u64,
        ..Default::default()
    }
}
