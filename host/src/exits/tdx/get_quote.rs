//! `TDG.VP.VMCALL<GetQuote>`: R12 = the shared GPA of a buffer (4 KiB aligned), R13 =
//! its size (a multiple of 4 KiB). The buffer holds a GetQuote header and the
//! TDREPORT; the quoting service's quote replaces it (GHCI 1.5, 3.3; Linux
//! `struct tdx_quote_buf`). Answered at once, never left IN_FLIGHT. The buffer is
//! guest input: it is copied out and checked before the service sees it.

use super::TdxContext;
use crate::mmu::HypervisorMmu;
use crate::platform::hostile::Hostile;
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::vmcall;
use nacre_shared_abi::tdx_report::get_quote::{self, QuoteBufHeader, HEADER_SIZE};
use zerocopy::{FromBytes, IntoBytes};

/// The largest GetQuote buffer the host takes (Linux's driver uses 8 KiB).
pub const MAX_QUOTE_BUFFER: u64 = 1 << 20;

/// Why a quoting service gave no quote: the status the buffer's header gets
/// (`GET_QUOTE_ERROR` or `GET_QUOTE_SERVICE_UNAVAILABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteRefusal {
    /// The service refused the report (a MAC that does not verify, a bad size).
    Error,
    /// The service cannot quote at all (no keys).
    Unavailable,
}

/// The quoting service GetQuote reaches: where the emulated quoting enclave plugs in,
/// and where a hardware platform's quote generation service would.
pub trait QuotingService: Send + std::fmt::Debug {
    /// A quote of `td_report` (the bytes the guest put after the header).
    fn quote(&mut self, td_report: &[u8]) -> Result<Vec<u8>, QuoteRefusal>;
}

/// GetQuote of the buffer at `gpa` of `size` bytes; returns the sub-function status
/// (R10). The quote's own status is in the buffer.
pub fn handle(ctx: &mut TdxContext<'_>, gpa: u64, size: u64) -> Result<u64, MemoryError> {
    ctx.counters.get_quotes += 1;
    let shared_bit = ctx.shared_bit();
    if gpa & shared_bit == 0 {
        return Ok(vmcall::INVALID_OPERAND);
    }
    let quoting = ctx
        .quoting
        .as_mut()
        .map(|q| &mut **q as &mut dyn QuotingService);
    let status = serve(ctx.mem, ctx.mmu, quoting, gpa & !shared_bit, size)?;
    if status == vmcall::SUCCESS && ctx.lies.once(Hostile::QuoteOverlong) {
        overlong_quote(ctx.mem, gpa & !shared_bit, size)?;
    }
    Ok(status)
}

/// A hostile host's answer: the buffer's header claims a quote one byte longer than
/// the buffer holds.
fn overlong_quote(mem: &GuestMemory, base: u64, size: u64) -> Result<(), MemoryError> {
    let mut raw = [0u8; HEADER_SIZE];
    mem.read(base, &mut raw)?;
    if let Ok(mut header) = QuoteBufHeader::read_from_bytes(&raw) {
        header.out_len = u32::try_from(size - HEADER_SIZE as u64 + 1).unwrap_or(u32::MAX);
        mem.write(base, header.as_bytes())?;
    }
    Ok(())
}

/// GetQuote of the buffer at `base` (without the shared bit) of `size` bytes, served
/// by `quoting`: the sub-function status (R10). The buffer must be 4 KiB-aligned whole
/// pages of shared RAM; its header is checked and its status, length and quote
/// written back.
pub fn serve(
    mem: &GuestMemory,
    mmu: &dyn HypervisorMmu,
    quoting: Option<&mut dyn QuotingService>,
    base: u64,
    size: u64,
) -> Result<u64, MemoryError> {
    if !base.is_multiple_of(PAGE_SIZE_4K)
        || size == 0
        || !size.is_multiple_of(PAGE_SIZE_4K)
        || size > MAX_QUOTE_BUFFER
        || base.checked_add(size).is_none_or(|e| e > mem.size())
        || !mmu.is_shared(base / PAGE_SIZE_4K, size / PAGE_SIZE_4K)
    {
        return Ok(vmcall::INVALID_OPERAND);
    }
    let mut raw = [0u8; HEADER_SIZE];
    mem.read(base, &mut raw)?;
    let Ok(mut header) = QuoteBufHeader::read_from_bytes(&raw) else {
        return Ok(vmcall::INVALID_OPERAND);
    };
    let room = size - HEADER_SIZE as u64;
    if header.version != get_quote::VERSION || u64::from(header.in_len) > room {
        header.status = get_quote::status::ERROR;
        header.out_len = 0;
        mem.write(base, header.as_bytes())?;
        return Ok(vmcall::SUCCESS);
    }
    let mut td_report = vec![0u8; header.in_len as usize];
    mem.read(base + HEADER_SIZE as u64, &mut td_report)?;
    let result = match quoting {
        Some(service) => service.quote(&td_report),
        None => Err(QuoteRefusal::Unavailable),
    };
    header.out_len = 0;
    header.status = match result {
        Ok(quote) if quote.len() as u64 <= room => {
            mem.write(base + HEADER_SIZE as u64, &quote)?;
            header.out_len = quote.len() as u32;
            get_quote::status::SUCCESS
        }
        Ok(_) | Err(QuoteRefusal::Error) => get_quote::status::ERROR,
        Err(QuoteRefusal::Unavailable) => get_quote::status::SERVICE_UNAVAILABLE,
    };
    mem.write(base, header.as_bytes())?;
    Ok(vmcall::SUCCESS)
}
