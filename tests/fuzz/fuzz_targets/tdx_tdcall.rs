//! Any sequence of TDCALLs on the emulated TDX platform through the TDCALL doorbell's
//! handler, which the platform's doorbell calls (`host/src/exits/tdx/`: the TDX
//! module's leaves TDG.VP.INFO, TDG.MEM.PAGE.ACCEPT and TDG.MR.REPORT, and every
//! TDG.VP.VMCALL sub-function the VMM handles: Instruction.IO to the hostcall doorbell,
//! MapGPA, GetQuote, CPUID, RDMSR/WRMSR of the local APIC, ReportFatalError), with the
//! registers the fuzzer chose, as `host/src/platform/emulated_tdx/tests.rs` drives
//! them; the quoting service is a fake whose answer the fuzzer chose.
//!
//! Input: a MapGPA budget (`u64`, 0: none), the quoting service's answer (`u32`:
//! a quote length, or all ones for an error, all ones minus one for no service), the
//! hostcall header (64 bytes), the first 1100 bytes of the shared GetQuote buffer's
//! page (page 0x20), then up to 16 calls of 11 registers each (RAX, RCX, RDX, R8, R9,
//! R10 to R15).
//!
//! Invariants, after every call:
//! - the handler returns (no host error); TDG.VP.VMCALL itself succeeds and its R10
//!   is a GHCI status; ReportFatalError stops the TD with its R12;
//! - the MMU's own audit passes (attributes, S-EPT, mirror and shared TDP agree);
//! - only MapGPA and an ACCEPT of a shared page change attributes: MapGPA only inside
//!   the range it names, to the side its shared bit names; the ACCEPT only its own
//!   page, to private.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::{tame_at, tdx_platform, Bytes, FakeQuoting, TdxAttributes, AREA, TDX_SHARED};
use nacre_host::exits::tdx::get_quote::QuoteRefusal;
use nacre_host::exits::tdx::tdvmcall::VMCALL_SUBFUNC_UNSUPPORTED;
use nacre_host::exits::testing::FakeVcpu;
use nacre_host::mmu::attributes::Kind;
use nacre_host::platform::Stop;
use nacre_shared_abi::doorbell::Doorbell;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::{leaf, status, vmcall, AcceptLevel};

/// The range and kind a call may change, if any.
fn may_change(regs: &[u64; 11], shared_bit: u64) -> Option<(u64, u64, Kind)> {
    let [rax, rcx, _, _, _, r10, r11, r12, r13, ..] = *regs;
    match rax {
        leaf::VP_VMCALL if r10 == 0 && r11 == vmcall::MAP_GPA => {
            let kind = if r12 & shared_bit != 0 {
                Kind::Shared
            } else {
                Kind::Private
            };
            let start = (r12 & !shared_bit) / PAGE_SIZE_4K;
            Some((start, start.saturating_add(r13 / PAGE_SIZE_4K), kind))
        }
        leaf::MEM_PAGE_ACCEPT => {
            let (gpa, level) = AcceptLevel::decode(rcx)?;
            let start = gpa / PAGE_SIZE_4K;
            Some((start, start + level.bytes() / PAGE_SIZE_4K, Kind::Private))
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mut tdx = tdx_platform();
    tdx.map_gpa_budget = match input.u64() {
        0 => None,
        n => Some(n % 1024),
    };
    let answer = match input.u32() {
        u32::MAX => Err(QuoteRefusal::Error),
        0xFFFF_FFFE => Err(QuoteRefusal::Unavailable),
        n => Ok(n as usize % 70_000),
    };
    let header = input.array::<64>();
    let quote_page = input.take(1100);
    tdx.mem.write(AREA, &header).expect("hostcall header");
    tdx.mem
        .write(TDX_SHARED.start * PAGE_SIZE_4K, quote_page)
        .expect("quote page");
    tame_at(&tdx.mem, AREA);
    let mut quoting = FakeQuoting { answer, seen: None };
    let shared_bit = tdx.shared_bit();

    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        let regs: [u64; 11] = std::array::from_fn(|_| input.u64());
        let mut vcpu = FakeVcpu::identity();
        let r = &mut vcpu.regs;
        [
            r.rax, r.rcx, r.rdx, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
        ] = regs;
        let change = may_change(&regs, shared_bit);
        let conversions = tdx.mmu.stats().map_gpa_pages;
        let before = change.map(|_| TdxAttributes::of(&tdx));
        let stop = {
            let mut ctx = tdx.context();
            ctx.quoting = Some(&mut quoting);
            nacre_host::exits::tdx::doorbell(&mut ctx, &mut vcpu, Doorbell::Tdcall)
                .unwrap_or_else(|e| panic!("a host error on guest input: {e}"))
        };
        tdx.mmu.audit().unwrap_or_else(|e| panic!("MMU audit: {e}"));
        let out = vcpu.regs;
        if regs[0] == leaf::VP_VMCALL {
            assert_eq!(out.rax, status::SUCCESS, "TDG.VP.VMCALL itself succeeds");
            assert!(
                [
                    vmcall::SUCCESS,
                    vmcall::RETRY,
                    vmcall::INVALID_OPERAND,
                    vmcall::ALIGN_ERROR,
                    vmcall::GPA_INUSE,
                    VMCALL_SUBFUNC_UNSUPPORTED,
                ]
                .contains(&out.r10)
                    || stop.is_some(),
                "R10 {:#x} for sub-function {:#x}",
                out.r10,
                regs[6]
            );
            if regs[5] == 0 && regs[6] == vmcall::REPORT_FATAL_ERROR {
                assert_eq!(stop, Some(Stop::TdFatalError { code: regs[7] }));
            }
        }
        match (change, before) {
            (Some((start, end, kind)), Some(before)) => {
                for (gfn, new) in before.changed(&TdxAttributes::of(&tdx)) {
                    assert!(
                        (start..end).contains(&gfn) && new == Some(kind),
                        "page {gfn:#x} became {new:?}, the call named {start:#x}..{end:#x} \
                         {kind:?}"
                    );
                }
            }
            _ => assert_eq!(
                tdx.mmu.stats().map_gpa_pages,
                conversions,
                "a call that converts nothing converted pages (registers {regs:x?})"
            ),
        }
        if stop.is_some() {
            break;
        }
    }
});
