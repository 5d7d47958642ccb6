//! The Linux attestation devices: `/dev/sev-guest` (SEV-SNP) answers `SNP_GET_REPORT`
//! with a report from the security processor and `/dev/tdx_guest` (TDX) answers
//! `TDX_CMD_GET_REPORT0` with a TDREPORT, so code written for Linux confidential VMs
//! gets its evidence unchanged. And the evidence `nacre attest` asks for at boot.

use super::errno::*;
use super::{mem_err, SysResult};
use crate::error::FwError;
use crate::kernel::Kernel;
use crate::platform::snp::guest_request::{GuestChannel, GuestRequestError};
use crate::platform::Platform;
use nacre_shared_abi::hostcall::{EvidenceKind, HostcallHeader, HostcallOp};
use nacre_shared_abi::snp::guest_msg::{ReportRspHead, REPORT_SIZE};
use nacre_shared_abi::tdx_report::get_quote::{self, QuoteBufHeader, HEADER_SIZE};
use nacre_shared_abi::tdx_report::{REPORT_DATA_SIZE, TDREPORT_SIZE};
use zerocopy::{FromBytes, IntoBytes};

/// `SNP_GET_REPORT`: `_IOWR('S', 0x0, struct snp_guest_request_ioctl)` (Linux
/// `include/uapi/linux/sev-guest.h`): direction 3 << 30, size 32 << 16, type 'S' << 8.
const SNP_GET_REPORT: u64 = 0xC020_5300;
/// `sizeof(struct snp_guest_request_ioctl)`: msg_version (u8, padded), req_data,
/// resp_data, exitinfo2 (u64 each).
const IOCTL_SIZE: usize = 32;
/// `sizeof(struct snp_report_req)`: user_data[64], vmpl (u32), rsvd[28].
const REPORT_REQ_SIZE: usize = 96;
/// `sizeof(struct snp_report_resp)`: data[4000].
const REPORT_RESP_SIZE: u64 = 4000;

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut q = [0u8; 8];
    q.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(q)
}

/// `/dev/sev-guest`'s ioctls, as Linux's sev-guest driver defines them.
pub fn sev_guest_ioctl(k: &mut Kernel, req: u64, arg: u64) -> SysResult {
    if req != SNP_GET_REPORT {
        return Err(ENOTTY);
    }
    let mut io = [0u8; IOCTL_SIZE];
    k.copy_from_user(&mut io, arg).map_err(mem_err)?;
    let (req_data, resp_data) = (u64_at(&io, 8), u64_at(&io, 16));
    if io[0] == 0 || req_data == 0 || resp_data == 0 {
        return Err(EINVAL);
    }
    let mut rr = [0u8; REPORT_REQ_SIZE];
    k.copy_from_user(&mut rr, req_data).map_err(mem_err)?;
    let mut user_data = [0u8; 64];
    user_data.copy_from_slice(&rr[..64]);
    let vmpl = u32::from_le_bytes([rr[64], rr[65], rr[66], rr[67]]);
    if vmpl > 3 {
        return Err(EINVAL);
    }
    // The response buffer must take the whole answer before anything is asked.
    k.fill_user(resp_data, 0, REPORT_RESP_SIZE)
        .map_err(mem_err)?;
    let ((req_va, req_gpa), (resp_va, resp_gpa)) = k.io.page_pair();
    let Platform::Snp(snp) = &mut k.plat else {
        return Err(ENOTTY);
    };
    let mut channel = core::mem::replace(&mut snp.channel, GuestChannel::none());
    let r = channel.report(snp, req_va, req_gpa, resp_va, resp_gpa, &user_data, vmpl, 0);
    snp.channel = channel;
    match r {
        Ok(rsp) => {
            k.copy_to_user(resp_data, &rsp).map_err(mem_err)?;
            Ok(0)
        }
        Err(GuestRequestError::Exit(info2)) => {
            // Like Linux: the exit information goes back in the ioctl's exitinfo2.
            io[24..32].copy_from_slice(&info2.to_le_bytes());
            k.copy_to_user(arg, &io).map_err(mem_err)?;
            Err(EIO)
        }
        Err(GuestRequestError::Disabled | GuestRequestError::BadResponse) => Err(EIO),
    }
}

/// Evidence of this launch bound to `report_data`, sent to the host (hostcall
/// `Evidence`), which stops the guest. Returns only on failure: why there is none.
pub fn send_evidence(k: &mut Kernel, report_data: &[u8; 64]) -> FwError {
    // The evidence ends up at the start of the hostcall data area.
    let placed = match &k.plat {
        Platform::Snp(_) => snp_report(k, report_data).and_then(|report| {
            k.io.put(0, &report)?;
            Ok((EvidenceKind::SnpReport, report.len() as u64))
        }),
        Platform::Tdx(_) => tdx_quote(k, report_data).map(|len| (EvidenceKind::TdxQuote, len)),
    };
    let (kind, len) = match placed {
        Ok(placed) => placed,
        Err(e) => return e,
    };
    let req = HostcallHeader {
        op: HostcallOp::Evidence as u32,
        arg: kind as u64,
        len,
        ..Default::default()
    };
    match k.hostcall(req) {
        // The host stops the guest on this call: any answer is a broken protocol.
        Ok(_) => FwError::Hostcall,
        Err(e) => e,
    }
}

/// Where in the hostcall data area the GetQuote buffer lies: its second half, so
/// that the quote can be moved to the start for the `Evidence` hostcall.
const QUOTE_BUFFER_OFFSET: u64 = 1 << 20;
/// Size of the GetQuote buffer: a quote with its PCK chain is a few KiB.
const QUOTE_BUFFER_SIZE: u64 = 64 << 10;
/// How long the firmware waits for a quote the host reports in flight.
const QUOTE_WAIT_NS: u64 = 30_000_000_000;
/// How often it looks again meanwhile.
const QUOTE_POLL_NS: u64 = 10_000_000;

/// A TDX quote of this TD bound to `report_data` (TDG.MR.REPORT, then GetQuote
/// through the shared GetQuote buffer), moved to the start of the hostcall data
/// area; returns its length. The quote is opaque to the firmware (the verifier checks
/// it); only the lengths the host wrote are checked, in a private copy of the header.
fn tdx_quote(k: &mut Kernel, report_data: &[u8; 64]) -> Result<u64, FwError> {
    let Platform::Tdx(tdx) = &mut k.plat else {
        return Err(FwError::Attestation { code: 0 });
    };
    let report = tdx
        .td_report(report_data)
        .map_err(|code| FwError::Attestation { code })?;
    let header = QuoteBufHeader {
        version: get_quote::VERSION,
        status: get_quote::status::SUCCESS,
        in_len: report.len() as u32,
        out_len: 0,
    };
    k.io.put(QUOTE_BUFFER_OFFSET, header.as_bytes())?;
    k.io.put(QUOTE_BUFFER_OFFSET + HEADER_SIZE as u64, &report)?;
    let gpa = k.io.data_gpa() + QUOTE_BUFFER_OFFSET;
    if let Platform::Tdx(tdx) = &mut k.plat {
        tdx.get_quote(gpa, QUOTE_BUFFER_SIZE)?;
    }
    let deadline = k.monotonic_ns().saturating_add(QUOTE_WAIT_NS);
    let header = loop {
        let mut raw = [0u8; HEADER_SIZE];
        k.io.get(QUOTE_BUFFER_OFFSET, &mut raw)?;
        let header = QuoteBufHeader::read_from_bytes(&raw).map_err(|_| FwError::Hostcall)?;
        if header.status != get_quote::status::IN_FLIGHT {
            break header;
        }
        let now = k.monotonic_ns();
        if now >= deadline {
            return Err(FwError::Attestation {
                code: get_quote::status::IN_FLIGHT,
            });
        }
        k.sleep_until(now.saturating_add(QUOTE_POLL_NS));
    };
    let len = u64::from(header.out_len);
    if header.version != get_quote::VERSION || header.status != get_quote::status::SUCCESS {
        return Err(FwError::Attestation {
            code: header.status,
        });
    }
    if len == 0 || len > QUOTE_BUFFER_SIZE - HEADER_SIZE as u64 {
        return Err(FwError::Hostcall);
    }
    // Move the quote to the start of the data area through private memory: the
    // two ranges do not overlap (the buffer starts 1 MiB in).
    let mut chunk = [0u8; 4096];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64);
        let part = &mut chunk[..n as usize];
        k.io.get(QUOTE_BUFFER_OFFSET + HEADER_SIZE as u64 + done, part)?;
        k.io.put(done, part)?;
        done += n;
    }
    Ok(len)
}

/// An ATTESTATION_REPORT from the security processor (VMPL 0, signed by the VCEK).
fn snp_report(k: &mut Kernel, report_data: &[u8; 64]) -> Result<[u8; REPORT_SIZE], FwError> {
    let ((req_va, req_gpa), (resp_va, resp_gpa)) = k.io.page_pair();
    let Platform::Snp(snp) = &mut k.plat else {
        return Err(FwError::Attestation { code: 0 });
    };
    let mut channel = core::mem::replace(&mut snp.channel, GuestChannel::none());
    let r = channel.report(snp, req_va, req_gpa, resp_va, resp_gpa, report_data, 0, 0);
    snp.channel = channel;
    let rsp = r.map_err(|e| FwError::Attestation {
        code: match e {
            GuestRequestError::Exit(info2) => info2,
            GuestRequestError::Disabled | GuestRequestError::BadResponse => 0,
        },
    })?;
    let (head, rest) =
        ReportRspHead::read_from_prefix(&rsp).map_err(|_| FwError::Attestation { code: 0 })?;
    if head.status != 0 || head.report_size as usize != REPORT_SIZE {
        return Err(FwError::Attestation {
            code: u64::from(head.status),
        });
    }
    let mut report = [0u8; REPORT_SIZE];
    report.copy_from_slice(&rest[..REPORT_SIZE]);
    Ok(report)
}

/// `TDX_CMD_GET_REPORT0`: `_IOWR('T', 1, struct tdx_report_req)` (Linux
/// `include/uapi/linux/tdx-guest.h`): direction 3 << 30, size 1088 << 16, type 'T' << 8,
/// number 1.
const TDX_CMD_GET_REPORT0: u64 = 0xC440_5401;

/// `/dev/tdx_guest`'s ioctl, as Linux's tdx-guest driver defines it: `struct
/// tdx_report_req` is the 64 bytes of report data, then room for the 1024-byte
/// TDREPORT_STRUCT, which TDG.MR.REPORT fills.
pub fn tdx_guest_ioctl(k: &mut Kernel, req: u64, arg: u64) -> SysResult {
    if req != TDX_CMD_GET_REPORT0 {
        return Err(ENOTTY);
    }
    let mut report_data = [0u8; REPORT_DATA_SIZE];
    k.copy_from_user(&mut report_data, arg).map_err(mem_err)?;
    let out = arg + REPORT_DATA_SIZE as u64;
    // The output must be writable before the TD asks for anything.
    k.fill_user(out, 0, TDREPORT_SIZE as u64).map_err(mem_err)?;
    let Platform::Tdx(tdx) = &mut k.plat else {
        return Err(ENOTTY);
    };
    let report = tdx.td_report(&report_data).map_err(|_| EIO)?;
    k.copy_to_user(out, &report).map_err(mem_err)?;
    Ok(0)
}
