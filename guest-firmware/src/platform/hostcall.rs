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

/// The exit hostcall: the app's status; its unsupported-syscall counts are in the
/// data area (`len` bytes).
pub fn exit_request(status: u8, len: u64) -> HostcallHeader {
    HostcallHeader {
        op: HostcallOp::Exit as u32,
        arg: u64::from(status),
        len,
        ..Default::default()
    }
}
