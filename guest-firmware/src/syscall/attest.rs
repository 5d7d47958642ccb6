//! The Linux attestation devices: `/dev/sev-guest` answers `SNP_GET_REPORT` and
//! `/dev/tdx_guest` answers `TDX_CMD_GET_REPORT0`, each with the report the platform
//! gives ([`crate::platform::GuestPlatform::guest_report`]), so code written for Linux
//! confidential VMs gets its evidence unchanged. And the evidence `nacre attest` asks
//! for at boot. Each device exists only on its platform (`fs.rs` lists the platform's).

use super::errno::*;
use super::{mem_err, SysResult};
use crate::error::FwError;
use crate::kernel::Kernel;
use crate::platform::{Evidence, GuestDevice, ReportError};
use nacre_shared_abi::hostcall::{HostcallHeader, HostcallOp};
use nacre_shared_abi::tdx_report::{REPORT_DATA_SIZE, TDREPORT_SIZE};

/// `SNP_GET_REPORT`: `_IOWR('S', 0x0, struct snp_guest_request_ioctl)` (Linux
/// `include/uapi/linux/sev-guest.h`): direction 3 << 30, size 32 << 16, type 'S' << 8.
pub const SNP_GET_REPORT: u64 = ioc_readwrite(b'S', 0, IOCTL_SIZE as u64);
/// `sizeof(struct snp_guest_request_ioctl)`: msg_version (u8, padded), req_data,
/// resp_data, exitinfo2 (u64 each).
const IOCTL_SIZE: usize = 32;
/// `sizeof(struct snp_report_req)`: user_data[64], vmpl (u32), rsvd[28].
const REPORT_REQ_SIZE: usize = 96;
/// `sizeof(struct snp_report_resp)`: data[4000].
const REPORT_RESP_SIZE: u64 = 4000;
/// Highest VMPL (AMD APM vol. 2, 15.35.7: VMPL0 to VMPL3).
const MAX_VMPL: u32 = 3;

/// `TDX_CMD_GET_REPORT0`: `_IOWR('T', 1, struct tdx_report_req)` (Linux
/// `include/uapi/linux/tdx-guest.h`): `struct tdx_report_req` is the 64 bytes of
/// report data, then room for the 1024-byte TDREPORT_STRUCT.
pub const TDX_CMD_GET_REPORT0: u64 =
    ioc_readwrite(b'T', 1, (REPORT_DATA_SIZE + TDREPORT_SIZE) as u64);

/// `_IOWR(type, nr, size)` (Linux `include/uapi/asm-generic/ioctl.h`: direction
/// `_IOC_READ | _IOC_WRITE` in bits 31:30, size in 29:16, type in 15:8, number in 7:0).
const fn ioc_readwrite(kind: u8, nr: u8, size: u64) -> u64 {
    (3 << 30) | (size << 16) | ((kind as u64) << 8) | nr as u64
}

/// How long the firmware waits for evidence the host reports in progress.
const EVIDENCE_WAIT_NS: u64 = 30_000_000_000;
/// How often it looks again meanwhile.
const EVIDENCE_POLL_NS: u64 = 10_000_000;

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut q = [0u8; 8];
    q.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(q)
}

/// The ioctl of the platform's attestation device.
pub fn guest_device_ioctl(k: &mut Kernel, device: GuestDevice, req: u64, arg: u64) -> SysResult {
    match device {
        GuestDevice::SevGuest => sev_guest_ioctl(k, req, arg),
        GuestDevice::TdxGuest => tdx_guest_ioctl(k, req, arg),
    }
}

/// What an `SNP_GET_REPORT` call asks for, from `struct snp_guest_request_ioctl` and
/// `struct snp_report_req`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpReportCall {
    /// Where `struct snp_report_req` is.
    pub req_data: u64,
    /// Where `struct snp_report_resp` goes.
    pub resp_data: u64,
}

/// Decode `struct snp_guest_request_ioctl`: a message version (Linux accepts only a
/// non-zero one) and both buffers are required.
pub fn decode_snp_ioctl(io: &[u8; IOCTL_SIZE]) -> Result<SnpReportCall, u64> {
    let (req_data, resp_data) = (u64_at(io, 8), u64_at(io, 16));
    if io[0] == 0 || req_data == 0 || resp_data == 0 {
        return Err(EINVAL);
    }
    Ok(SnpReportCall {
        req_data,
        resp_data,
    })
}

/// Decode `struct snp_report_req`: the user data and a VMPL of 0 to 3.
pub fn decode_snp_report_req(rr: &[u8; REPORT_REQ_SIZE]) -> Result<([u8; 64], u32), u64> {
    let mut user_data = [0u8; 64];
    user_data.copy_from_slice(&rr[..64]);
    let vmpl = u32::from_le_bytes([rr[64], rr[65], rr[66], rr[67]]);
    if vmpl > MAX_VMPL {
        return Err(EINVAL);
    }
    Ok((user_data, vmpl))
}

/// `/dev/sev-guest`'s ioctls, as Linux's sev-guest driver defines them.
fn sev_guest_ioctl(k: &mut Kernel, req: u64, arg: u64) -> SysResult {
    if req != SNP_GET_REPORT {
        return Err(ENOTTY);
    }
    let mut io = [0u8; IOCTL_SIZE];
    k.copy_from_user(&mut io, arg).map_err(mem_err)?;
    let call = decode_snp_ioctl(&io)?;
    let mut rr = [0u8; REPORT_REQ_SIZE];
    k.copy_from_user(&mut rr, call.req_data).map_err(mem_err)?;
    let (user_data, vmpl) = decode_snp_report_req(&rr)?;
    // The response buffer must take the whole answer before anything is asked.
    k.fill_user(call.resp_data, 0, REPORT_RESP_SIZE)
        .map_err(mem_err)?;
    match k.plat.guest_report(&user_data, vmpl, &k.io) {
        Ok(report) => {
            k.copy_to_user(call.resp_data, report.as_bytes())
                .map_err(mem_err)?;
            Ok(0)
        }
        Err(ReportError::Exit(info2)) => {
            // Like Linux: the exit information goes back in the ioctl's exitinfo2.
            io[24..32].copy_from_slice(&info2.to_le_bytes());
            k.copy_to_user(arg, &io).map_err(mem_err)?;
            Err(EIO)
        }
        Err(ReportError::Failed) => Err(EIO),
    }
}

/// `/dev/tdx_guest`'s ioctl, as Linux's tdx-guest driver defines it: the report data
/// in, the TDREPORT_STRUCT out right after it.
fn tdx_guest_ioctl(k: &mut Kernel, req: u64, arg: u64) -> SysResult {
    if req != TDX_CMD_GET_REPORT0 {
        return Err(ENOTTY);
    }
    let mut report_data = [0u8; REPORT_DATA_SIZE];
    k.copy_from_user(&mut report_data, arg).map_err(mem_err)?;
    let out = arg + REPORT_DATA_SIZE as u64;
    // The output must be writable before the TD asks for anything.
    k.fill_user(out, 0, TDREPORT_SIZE as u64).map_err(mem_err)?;
    let report = k
        .plat
        .guest_report(&report_data, 0, &k.io)
        .map_err(|_| EIO)?;
    k.copy_to_user(out, report.as_bytes()).map_err(mem_err)?;
    Ok(0)
}

/// Evidence of this launch bound to `report_data`, sent to the host (hostcall
/// `Evidence`), which stops the guest. Returns only on failure: why there is none.
pub fn send_evidence(k: &mut Kernel, report_data: &[u8; 64]) -> FwError {
    let (kind, len) = match wait_for_evidence(k, report_data) {
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

/// The platform's evidence at the start of the hostcall data area: its kind and
/// length. Evidence the host is still producing is looked at again every
/// [`EVIDENCE_POLL_NS`] (the host sleeps for the firmware meanwhile), for at most
/// [`EVIDENCE_WAIT_NS`].
fn wait_for_evidence(
    k: &mut Kernel,
    report_data: &[u8; 64],
) -> Result<(nacre_shared_abi::hostcall::EvidenceKind, u64), FwError> {
    let mut evidence = k.plat.evidence(report_data, &mut k.io)?;
    let mut deadline = None;
    loop {
        match evidence {
            Evidence::Ready { kind, len } => return Ok((kind, len)),
            Evidence::Pending { status } => {
                let now = k.monotonic_ns();
                let until = *deadline.get_or_insert(now.saturating_add(EVIDENCE_WAIT_NS));
                if now >= until {
                    return Err(FwError::Attestation { code: status });
                }
                k.sleep_until(now.saturating_add(EVIDENCE_POLL_NS));
                evidence = k.plat.evidence_poll(&mut k.io)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_linuxs() {
        // include/uapi/linux/sev-guest.h and tdx-guest.h, as compiled.
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
        assert_eq!(TDX_CMD_GET_REPORT0, 0xC440_5401);
    }

    fn snp_ioctl(version: u8, req: u64, resp: u64) -> [u8; IOCTL_SIZE] {
        let mut io = [0u8; IOCTL_SIZE];
        io[0] = version;
        io[8..16].copy_from_slice(&req.to_le_bytes());
        io[16..24].copy_from_slice(&resp.to_le_bytes());
        io
    }

    #[test]
    fn a_report_request_needs_a_version_and_both_buffers() {
        assert_eq!(
            decode_snp_ioctl(&snp_ioctl(1, 0x1000, 0x2000)),
            Ok(SnpReportCall {
                req_data: 0x1000,
                resp_data: 0x2000
            })
        );
        assert_eq!(decode_snp_ioctl(&snp_ioctl(0, 0x1000, 0x2000)), Err(EINVAL));
        assert_eq!(decode_snp_ioctl(&snp_ioctl(1, 0, 0x2000)), Err(EINVAL));
        assert_eq!(decode_snp_ioctl(&snp_ioctl(1, 0x1000, 0)), Err(EINVAL));
    }

    #[test]
    fn the_report_data_and_vmpl_are_read_and_checked() {
        let mut rr = [0u8; REPORT_REQ_SIZE];
        rr[..64].copy_from_slice(&[0x11; 64]);
        rr[64] = 3;
        assert_eq!(decode_snp_report_req(&rr), Ok(([0x11; 64], 3)));
        rr[64] = 4;
        assert_eq!(decode_snp_report_req(&rr), Err(EINVAL));
        rr[64] = 0;
        rr[67] = 1;
        assert_eq!(decode_snp_report_req(&rr), Err(EINVAL), "a VMPL of 2^24");
    }
}
