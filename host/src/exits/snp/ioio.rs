//! The IOIO NAE event (`SVM_EXIT_IOIO`, 0x7B): the only port the guest may write
//! through it is the hostcall doorbell, a 32-bit `out` of the hostcall area's page
//! number (shared-abi `hostcall.rs`); SW_EXITINFO1 describes the access as the SVM
//! IOIO intercept does (AMD APM vol. 2, 15.10.2; GHCB specification 56421, 4.1.2).

use super::vmgexit::refuse;
use super::SnpContext;
use crate::platform::hostcall;
use crate::platform::Stop;
use crate::vmm::memory::MemoryError;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::ghcb::{ioio, Ghcb, GhcbErrorCode, GhcbField};

/// The IOIO event with SW_EXITINFO1 `info1` on the GHCB copy `g`.
pub fn nae(
    ctx: &mut SnpContext<'_>,
    g: &mut Ghcb,
    info1: u64,
) -> Result<Option<Stop>, MemoryError> {
    let port = (info1 >> ioio::PORT_SHIFT) as u16;
    let is_out_32 =
        info1 & (ioio::TYPE_IN | ioio::STRING | ioio::REP) == 0 && info1 & ioio::SIZE_32 != 0;
    if port != HOSTCALL_PORT || !is_out_32 || !g.is_valid(GhcbField::Rax) {
        refuse(g, GhcbErrorCode::InvalidInput);
        return Ok(None);
    }
    let area = (g.rax & 0xFFFF_FFFF) * PAGE_SIZE_4K;
    hostcall::serve(ctx.mem, ctx.mmu, ctx.run, ctx.host, area)
}
