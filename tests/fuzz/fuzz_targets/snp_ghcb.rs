//! Any GHCB page through VMGEXIT on the emulated SEV-SNP platform, as the generic exit
//! handler receives it (`host/src/exits/snp/vmgexit.rs` and every NAE handler behind
//! it: page-state changes, IOIO to the hostcall doorbell, the local APIC's MSRs,
//! hypervisor features, guest requests to the security processor, termination), the
//! way the unit tests drive it (`host/src/platform/emulated_snp/tests.rs`).
//!
//! Input: the GHCB page (4096 bytes), the hostcall header (64 bytes) and the first
//! data page of the hostcall area (4096), the guest-request page (4096); zeros past
//! the end. The GHCB is registered at `GHCB` and shared, as are the hostcall area and
//! the request and response pages.
//!
//! Invariants:
//! - the handler returns (no host error) and the GHCB page holds its answer:
//!   SW_EXITINFO1 is 0 or 2 (bad input), and with 2 SW_EXITINFO2 is a GHCB error code
//!   (or, for an MSR, the #GP event);
//! - a refused call changes no page attribute, no hostcall reply and no response page;
//! - only a page-state change changes attributes, and only pages its descriptor still
//!   had to do, to the state the entry asks for;
//! - a termination request stops the guest with the reason it gave.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::{security_processor, snp_platform, tame_at, Bytes, SnpAttributes};
use nacre_fuzz::{AREA, GHCB, REQ_PAGE, RSP_PAGE};
use nacre_host::exits::snp::vmgexit::MSR_REFUSED_GP;
use nacre_host::exits::testing::FakeVcpu;
use nacre_host::exits::{handle_exit, Exit};
use nacre_host::mmu::attributes::Kind;
use nacre_host::platform::Stop;
use nacre_shared_abi::doorbell::Doorbell;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::ghcb::{
    exit_code, Ghcb, GhcbErrorCode, GhcbField, RESULT_BAD_INPUT, RESULT_OK,
};
use nacre_shared_abi::snp::psc::{PageStateOp, PscDesc, PscEntry};
use zerocopy::FromBytes;

/// The pages a PSC descriptor still has to do, with the state each asks for.
fn pending(g: &Ghcb) -> Vec<(u64, u64, Kind)> {
    let Ok(desc) = PscDesc::read_from_bytes(&g.shared_buffer) else {
        return Vec::new();
    };
    let end = usize::from(desc.header.end_entry).min(desc.entries.len() - 1);
    let start = usize::from(desc.header.cur_entry);
    (start..=end)
        .filter_map(|i| {
            let e = PscEntry::decode(desc.entries[i]).ok()?;
            let kind = match e.op {
                PageStateOp::Private => Kind::Private,
                PageStateOp::Shared => Kind::Shared,
                _ => return None,
            };
            Some((e.gfn + u64::from(e.cur_page), e.gfn + e.npages(), kind))
        })
        .collect()
}

fn read_page(snp: &nacre_host::platform::emulated_snp::EmulatedSnp, gpa: u64) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    snp.mem.read(gpa, &mut page).expect("inside RAM");
    page
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let page = input.array::<4096>();
    let header = input.array::<64>();
    let data_page = input.array::<4096>();
    let request = input.array::<4096>();

    let mut snp = snp_platform();
    snp.sp = Some(security_processor());
    snp.mem.write(GHCB, &page).expect("GHCB");
    snp.mem.write(AREA, &header).expect("hostcall header");
    snp.mem
        .write(AREA + PAGE_SIZE_4K, &data_page)
        .expect("hostcall data");
    snp.mem.write(REQ_PAGE, &request).expect("request page");
    tame_at(&snp.mem, AREA);

    let sent = Ghcb::read_from_bytes(&page).expect("a page");
    let attrs = SnpAttributes::of(&snp);
    let area_before = read_page(&snp, AREA);
    let rsp_before = read_page(&snp, RSP_PAGE);

    let c_bit = snp.c_bit_mask();
    let mut vcpu = FakeVcpu::with_walk(move |va| Some(va | c_bit));
    let stop = handle_exit(&mut snp, &mut vcpu, Exit::Doorbell(Doorbell::Vmgexit))
        .unwrap_or_else(|e| panic!("a host error on guest input: {e}"));

    let answer = Ghcb::read_from_bytes(&read_page(&snp, GHCB)).expect("a page");
    let changed = attrs.changed(&snp);
    let called = sent.protocol_version == 2
        && sent.ghcb_usage == 0
        && sent.is_valid(GhcbField::SwExitCode)
        && sent.is_valid(GhcbField::SwExitInfo1)
        && sent.is_valid(GhcbField::SwExitInfo2);

    assert!(
        [RESULT_OK, RESULT_BAD_INPUT].contains(&answer.sw_exit_info_1),
        "SW_EXITINFO1 {:#x}",
        answer.sw_exit_info_1
    );
    let refused = answer.sw_exit_info_1 == RESULT_BAD_INPUT;
    if refused {
        let code = answer.sw_exit_info_2;
        assert!(
            GhcbErrorCode::from_code(code).is_some()
                || (sent.sw_exit_code == exit_code::MSR && code == MSR_REFUSED_GP),
            "refused with SW_EXITINFO2 {code:#x}"
        );
        assert!(changed.is_empty(), "a refused call changed {changed:?}");
        assert_eq!(read_page(&snp, AREA), area_before, "a refused call replied");
        assert_eq!(read_page(&snp, RSP_PAGE), rsp_before);
    }
    if !called || sent.sw_exit_code != exit_code::PSC {
        assert!(
            changed.is_empty(),
            "{:#x} changed {changed:?}",
            sent.sw_exit_code
        );
    } else {
        let todo = pending(&sent);
        for (gfn, kind) in changed {
            assert!(
                todo.iter()
                    .any(|&(first, end, k)| (first..end).contains(&gfn) && k == kind),
                "page {gfn:#x} became {kind:?} outside the descriptor"
            );
        }
    }
    if called && sent.sw_exit_code == exit_code::TERM_REQUEST {
        let info1 = sent.sw_exit_info_1;
        assert_eq!(
            stop,
            Some(Stop::GuestTerminated {
                set: (info1 & 0xF) as u8,
                code: ((info1 >> 4) & 0xFF) as u8,
            })
        );
    }
    if called && sent.sw_exit_code == exit_code::GUEST_REQUEST && !refused {
        // A request the processor refused leaves the response page alone.
        if answer.sw_exit_info_2 != 0 {
            assert_eq!(read_page(&snp, RSP_PAGE), rsp_before);
        }
    }
});
