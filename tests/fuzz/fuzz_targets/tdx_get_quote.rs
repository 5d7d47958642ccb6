//! TDG.VP.VMCALL<GetQuote>'s buffer (`host/src/exits/tdx/get_quote.rs`, `serve`):
//! any buffer address and size and any header and TDREPORT bytes the guest puts in
//! it, served by a quoting service whose answer the fuzzer chose, on the emulated TDX
//! platform's memory and MMU.
//!
//! Input: the buffer's page (`u16`, a GFN, and `u16`, an offset: unaligned ones are
//! refused), its size (`u32`), the quoting service's answer (`u32`: a quote length,
//! all ones for an error, all ones minus one for no service), then the buffer's first
//! bytes (at most 8 KiB).
//!
//! Invariants:
//! - the status is SUCCESS or INVALID_OPERAND; INVALID_OPERAND changes no memory;
//! - the quoting service sees at most the buffer's room after the header;
//! - the header written back has a GetQuote status, an output length that fits the
//!   buffer, and with SUCCESS exactly the service's quote after it;
//! - nothing outside the buffer changes, nor inside it past the header and the quote
//!   (compared over the page before the buffer, its first 72 KiB and the page after).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::{tdx_platform, Bytes, FakeQuoting, RAM};
use nacre_host::exits::tdx::get_quote::{serve, QuoteRefusal};
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::vmcall;
use nacre_shared_abi::tdx_report::get_quote::{status, QuoteBufHeader, HEADER_SIZE};
use zerocopy::FromBytes;

/// How much of RAM around the buffer is compared: a page before it and its first
/// 72 KiB (room for the header and the largest quote of the fake service) and a page
/// more.
fn window(base: u64, size: u64) -> (u64, u64) {
    let lo = base.saturating_sub(PAGE_SIZE_4K);
    let hi = base
        .saturating_add(size.min(72 << 10))
        .saturating_add(PAGE_SIZE_4K)
        .min(RAM);
    (lo, hi.max(lo))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let base = u64::from(input.u16()) * PAGE_SIZE_4K + u64::from(input.u16() % 4096);
    let size = u64::from(input.u32());
    let answer = match input.u32() {
        u32::MAX => Err(QuoteRefusal::Error),
        0xFFFF_FFFE => Err(QuoteRefusal::Unavailable),
        n => Ok(n as usize % 70_000),
    };
    let contents = input.take(8192);

    let tdx = tdx_platform();
    if base < RAM {
        let n = contents.len().min((RAM - base) as usize);
        tdx.mem.write(base, &contents[..n]).expect("inside RAM");
    }
    let (lo, hi) = window(base.min(RAM), size.min(RAM));
    let mut before = vec![0u8; (hi - lo) as usize];
    tdx.mem.read(lo, &mut before).expect("inside RAM");

    let mut quoting = FakeQuoting { answer, seen: None };
    let r = serve(&tdx.mem, &tdx.mmu, Some(&mut quoting), base, size)
        .unwrap_or_else(|e| panic!("a host error on guest input: {e}"));
    let mut after = vec![0u8; (hi - lo) as usize];
    tdx.mem.read(lo, &mut after).expect("inside RAM");

    match r {
        vmcall::INVALID_OPERAND => {
            assert_eq!(before, after, "a refused buffer changed");
            assert_eq!(quoting.seen, None);
        }
        vmcall::SUCCESS => {
            let room = size - HEADER_SIZE as u64;
            if let Some(seen) = quoting.seen {
                assert!(
                    seen as u64 <= room,
                    "the service saw {seen} bytes, room {room}"
                );
            }
            let at = (base - lo) as usize;
            let header =
                QuoteBufHeader::read_from_bytes(&after[at..at + HEADER_SIZE]).expect("a header");
            assert!(
                [status::SUCCESS, status::ERROR, status::SERVICE_UNAVAILABLE]
                    .contains(&header.status),
                "status {:#x}",
                header.status
            );
            let out = header.out_len as usize;
            assert!(out as u64 <= room);
            if header.status == status::SUCCESS {
                assert_eq!(answer.ok(), Some(out));
                assert!(after[at + HEADER_SIZE..at + HEADER_SIZE + out]
                    .iter()
                    .all(|&b| b == 0x51));
            } else {
                assert_eq!(out, 0);
            }
            // Only the header and the quote changed.
            let written = at..at + HEADER_SIZE + out;
            assert_eq!(before[..written.start], after[..written.start]);
            assert_eq!(before[written.end..], after[written.end..]);
        }
        other => panic!("GetQuote answered {other:#x}"),
    }
});
