//! The guest-request NAE event (`SVM_VMGEXIT_GUEST_REQUEST`, 0x8000_0011): the
//! request page goes to the security processor and its answer to the response page,
//! both shared pages of RAM (GHCB specification 56421, 4.1.8). KVM reads and writes
//! them with `kvm_read_guest`/`kvm_write_guest` and kills the VM when that fails;
//! here the guest is stopped with the reason. A firmware error is SW_EXITINFO2's low
//! half (`SNP_GUEST_ERR`, Linux `arch/x86/kvm/svm/sev.c`).

use super::SnpContext;
use crate::platform::hostile::{Hostile, Lies};
use crate::platform::Stop;
use crate::vmm::memory::MemoryError;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::ghcb::Ghcb;
use nacre_shared_abi::snp::guest_msg::{GuestMsgHdr, MSG_HDR_SIZE};
use zerocopy::{FromBytes, IntoBytes};

/// SEV firmware status `SEV_RET_HWSEV_RET_PLATFORM` (Linux
/// `include/uapi/linux/psp-sev.h`): the platform has no security processor to ask.
pub const FW_ERR_PLATFORM: u64 = 0x13;

/// The AMD security processor as a guest request reaches it: where the emulated
/// processor plugs in, and where a hardware platform's would.
pub trait SecurityProcessor: Send + std::fmt::Debug {
    /// SNP_GUEST_REQUEST: answer the (copied) request page with a response page, or
    /// with the firmware error for SW_EXITINFO2.
    fn guest_request(&mut self, request: &[u8; 4096]) -> Result<[u8; 4096], u64>;
}

/// The event on the GHCB copy `g`: request page at `req`, response page at `rsp`.
pub fn nae(
    ctx: &mut SnpContext<'_>,
    g: &mut Ghcb,
    req: u64,
    rsp: u64,
) -> Result<Option<Stop>, MemoryError> {
    ctx.counters.guest_requests += 1;
    for (what, gpa) in [("request", req), ("response", rsp)] {
        if !gpa.is_multiple_of(PAGE_SIZE_4K)
            || gpa
                .checked_add(PAGE_SIZE_4K)
                .is_none_or(|end| end > ctx.mem.size())
            || !ctx.mmu.is_shared(gpa / PAGE_SIZE_4K, 1)
        {
            return Ok(Some(Stop::ProtocolViolation(format!(
                "guest request with a {what} page at {gpa:#x} that is not a shared page of RAM"
            ))));
        }
    }
    let Some(sp) = ctx.sp.as_deref_mut() else {
        g.sw_exit_info_2 = FW_ERR_PLATFORM;
        return Ok(None);
    };
    let mut page = [0u8; 4096];
    ctx.mem.read(req, &mut page)?;
    match sp.guest_request(&page) {
        Ok(mut answer) => {
            lie(ctx.lies, &mut answer);
            ctx.mem.write(rsp, &answer)?;
        }
        Err(fw_err) => g.sw_exit_info_2 = fw_err,
    }
    Ok(None)
}

/// A hostile host's changes to the security processor's response page: its header's
/// sequence number, tag or size rewritten on the first request, or the first
/// request's response sent again for the second.
fn lie(lies: &mut Lies, answer: &mut [u8; 4096]) {
    match lies.turn(Hostile::GuestRequestReplay) {
        Some(0) => {
            lies.kept = answer.to_vec();
            return;
        }
        Some(1) if lies.kept.len() == answer.len() => {
            answer.copy_from_slice(&lies.kept);
            return;
        }
        Some(_) => return,
        None => {}
    }
    let Ok((mut hdr, _)) = GuestMsgHdr::read_from_prefix(&answer[..]) else {
        return;
    };
    if lies.once(Hostile::GuestRequestSeqno) {
        hdr.msg_seqno = hdr.msg_seqno.wrapping_add(2);
    } else if lies.once(Hostile::GuestRequestBadTag) {
        hdr.authtag[0] ^= 1;
    } else if lies.once(Hostile::GuestRequestLength) {
        hdr.msg_sz = hdr.msg_sz.wrapping_sub(16);
    } else {
        return;
    }
    answer[..MSG_HDR_SIZE].copy_from_slice(hdr.as_bytes());
}
