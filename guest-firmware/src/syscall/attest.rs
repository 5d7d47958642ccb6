//! The Linux attestation devices: `/dev/sev-guest` (SEV-SNP) answers `SNP_GET_REPORT`
//! with a report from the security processor, so code written for Linux confidential
//! VMs gets its evidence unchanged. And the evidence `nacre attest` asks for at boot.

use super::errno::*;
use super::{mem_err, SysResult};
use crate::error::FwError;
use crate::kernel::Kernel;
use crate::platform::snp::guest_request::{GuestChannel, GuestRequestError};
use crate::platform::Platform;
use nacre_shared_abi::hostcall::{EvidenceKind, HostcallHeader, HostcallOp};
use nacre_shared_abi::snp::guest_msg::{ReportRspHead, REPORT_SIZE};
use zerocopy::FromBytes;

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
    let (kind, evidence) = match snp_report(k, report_data) {
        Ok(report) => (EvidenceKind::SnpReport, report),
        Err(e) => return e,
    };
    if let Err(e) = k.io.put(0, &evidence) {
        return e;
    }
    let req = HostcallHeader {
        op: HostcallOp::Evidence as u32,
        arg: kind as u64,
        len: evidence.len() as u64,
        ..Default::default()
    };
    match k.hostcall(req) {
        // The host stops the guest on this call: any answer is a broken protocol.
        Ok(_) => FwError::Hostcall,
        Err(e) => e,
    }
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
