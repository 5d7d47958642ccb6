//! The host side of the hostcall buffer (shared-abi `hostcall.rs`), common to both
//! emulated platforms: only the doorbell that announces a call differs (a GHCB IOIO
//! exit on SNP, a TDVMCALL Instruction.IO on TDX). Everything read from the buffer is
//! guest-controlled and checked before use; a malformed call stops the guest.

use super::Stop;
use crate::stats::{syscall_name, Stats};
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::hostcall::{
    HostcallHeader, HostcallOp, HOSTCALL_BUFFER_SIZE, HOSTCALL_DATA_OFFSET,
};
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use std::io::{Read, Write};
use std::time::Instant;
use zerocopy::{FromBytes, IntoBytes};

/// Serve one hostcall from the buffer at `buffer` (a GPA without any platform bit).
/// `is_shared(gfn, n)` says whether the host MMU holds those pages shared: the buffer
/// must be shared memory, or the guest broke the protocol.
pub fn serve(
    mem: &GuestMemory,
    stats: &mut Stats,
    first_hostcall: &mut Option<Instant>,
    is_shared: impl Fn(u64, u64) -> bool,
    buffer: u64,
) -> Result<Option<Stop>, MemoryError> {
    if first_hostcall.is_none() {
        *first_hostcall = Some(Instant::now());
    }
    let pages = HOSTCALL_BUFFER_SIZE / PAGE_SIZE_4K;
    let in_ram = buffer
        .checked_add(HOSTCALL_BUFFER_SIZE)
        .is_some_and(|e| e <= mem.size());
    if !in_ram || !is_shared(buffer / PAGE_SIZE_4K, pages) {
        return Ok(Some(Stop::ProtocolViolation(format!(
            "hostcall buffer at {buffer:#x} is not {HOSTCALL_BUFFER_SIZE} bytes of shared memory"
        ))));
    }
    let mut raw = [0u8; HOSTCALL_DATA_OFFSET as usize];
    mem.read(buffer, &mut raw)?;
    let Ok(mut h) = HostcallHeader::read_from_bytes(&raw) else {
        return Ok(None);
    };
    let data_gpa = buffer + HOSTCALL_DATA_OFFSET;
    let op = match h.check_request() {
        Ok(op) => op,
        Err(e) => {
            return Ok(Some(Stop::ProtocolViolation(format!(
                "malformed hostcall: {e:?}"
            ))));
        }
    };
    let len = h.len as usize;
    h.status = 0;
    h.result = 0;
    match op {
        HostcallOp::Write => {
            let mut data = vec![0u8; len];
            mem.read(data_gpa, &mut data)?;
            let r = if h.fd == 1 {
                let mut out = std::io::stdout().lock();
                out.write_all(&data).and_then(|()| out.flush())
            } else {
                std::io::stderr().write_all(&data)
            };
            match r {
                Ok(()) => h.result = len as u64,
                Err(e) => h.status = e.raw_os_error().map_or(5, |c| c.unsigned_abs().into()),
            }
        }
        HostcallOp::Read => {
            let mut data = vec![0u8; len];
            match std::io::stdin().read(&mut data) {
                Ok(n) => {
                    mem.write(data_gpa, &data[..n])?;
                    h.result = n as u64;
                }
                Err(e) => h.status = e.raw_os_error().map_or(5, |c| c.unsigned_abs().into()),
            }
        }
        HostcallOp::Exit => {
            let mut data = vec![0u8; len - len % 8];
            mem.read(data_gpa, &mut data)?;
            for pair in data.chunks_exact(8) {
                let nr = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
                let count = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
                *stats
                    .syscalls_unsupported
                    .entry(syscall_name(nr))
                    .or_insert(0) += u64::from(count);
            }
            return Ok(Some(Stop::AppExit((h.arg & 0xFF) as u8)));
        }
    }
    mem.write(buffer, h.as_bytes())?;
    Ok(None)
}
