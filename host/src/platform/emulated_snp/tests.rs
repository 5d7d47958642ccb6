//! The `emulated-snp` platform driven by synthetic exits through the generic exit
//! handler, without `/dev/kvm`: every GHCB MSR-protocol request, every NAE event the
//! host handles (and malformed ones), the doorbells, the MSRs and memory faults.

use super::*;
use crate::emulated::snp::sp::tests::{launched, request, response, signer};
use crate::emulated::snp::sp::{LazySigner, FW_ERR_INVALID_PARAM};
use crate::exits::snp::guest_request::FW_ERR_PLATFORM;
use crate::exits::testing::{clock_request, exit_request, hostcall_reply, put_hostcall, FakeVcpu};
use crate::exits::{handle_exit, Exit};
use crate::mmu::attributes::Kind;
use nacre_shared_abi::hostcall::{HostcallHeader, HOSTCALL_DATA_OFFSET, HOSTCALL_PORT};
use nacre_shared_abi::snp::ghcb::{
    exit_code, ioio, Ghcb, GhcbErrorCode, GhcbField, RESULT_BAD_INPUT, RESULT_OK,
};
use nacre_shared_abi::snp::msr_protocol::{
    self as mp, MsrPscOp, MsrRequest, MsrResponse, HV_FEATURE_SNP,
};
use nacre_shared_abi::snp::psc::{
    PageStateOp, PscDesc, PscEntry, PSC_ERROR_INVALID_ENTRY, PSC_ERROR_INVALID_HDR,
};
use nacre_shared_abi::snp::rmp::{RmpError, RmpPageSize};
use nacre_shared_abi::snp::{MSR_GHCB, MSR_SEV_STATUS};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Where the tests put the GHCB.
const GHCB: u64 = 0x30_000;
/// Where the tests put the hostcall area (2 MiB, shared).
const AREA: u64 = 0x200_000;

fn platform() -> EmulatedSnp {
    EmulatedSnp::new(GuestMemory::new(64 << 20).expect("memfd"))
}

fn c_bit() -> u64 {
    1 << EMULATED_SNP_C_BIT
}

/// One exit through the generic handler, on the boot processor, whose page walk is
/// the identity with the C-bit set (the firmware's private mappings).
fn exit(snp: &mut EmulatedSnp, e: Exit<'_>) -> Result<Option<Stop>, RunError> {
    exit_on(snp, 0, e)
}

/// [`exit`] on vCPU `index`.
fn exit_on(snp: &mut EmulatedSnp, index: u32, e: Exit<'_>) -> Result<Option<Stop>, RunError> {
    let c = c_bit();
    let mut vcpu = FakeVcpu::with_walk(move |va| Some(va | c));
    vcpu.index = index;
    handle_exit(snp, &mut vcpu, e)
}

fn wrmsr(snp: &mut EmulatedSnp, index: u32, value: u64) -> u8 {
    wrmsr_on(snp, 0, index, value)
}

fn wrmsr_on(snp: &mut EmulatedSnp, vcpu: u32, index: u32, value: u64) -> u8 {
    let mut error = 0;
    exit_on(
        snp,
        vcpu,
        Exit::WrMsr {
            index,
            value,
            error: &mut error,
        },
    )
    .expect("WRMSR");
    error
}

fn rdmsr(snp: &mut EmulatedSnp, index: u32) -> (u64, u8) {
    rdmsr_on(snp, 0, index)
}

fn rdmsr_on(snp: &mut EmulatedSnp, vcpu: u32, index: u32) -> (u64, u8) {
    let (mut data, mut error) = (0, 0);
    exit_on(
        snp,
        vcpu,
        Exit::RdMsr {
            index,
            data: &mut data,
            error: &mut error,
        },
    )
    .expect("RDMSR");
    (data, error)
}

/// One GHCB MSR-protocol request: WRMSR, VMGEXIT, RDMSR.
fn msr_protocol(snp: &mut EmulatedSnp, request: u64) -> (Option<Stop>, u64) {
    msr_protocol_on(snp, 0, request)
}

/// [`msr_protocol`] on vCPU `vcpu`.
fn msr_protocol_on(snp: &mut EmulatedSnp, vcpu: u32, request: u64) -> (Option<Stop>, u64) {
    assert_eq!(wrmsr_on(snp, vcpu, MSR_GHCB, request), 0);
    let stop = exit_on(snp, vcpu, Exit::Doorbell(Doorbell::Vmgexit)).expect("VMGEXIT");
    (stop, rdmsr_on(snp, vcpu, MSR_GHCB).0)
}

/// Make `n` pages from `gpa` shared, as the guest would with page-state changes.
fn share(snp: &mut EmulatedSnp, gpa: u64, n: u64) {
    snp.mmu
        .set_attributes(&snp.mem, gpa / PAGE_SIZE_4K, n, Kind::Shared)
        .expect("memory")
        .expect("in RAM");
}

/// A registered, shared GHCB at [`GHCB`].
fn with_ghcb() -> EmulatedSnp {
    let mut snp = platform();
    share(&mut snp, GHCB, 1);
    let gfn = GHCB / PAGE_SIZE_4K;
    let (stop, reply) = msr_protocol(&mut snp, MsrRequest::RegisterGhcb { gfn }.encode());
    assert_eq!(stop, None);
    assert_eq!(
        MsrResponse::decode(reply, mp::REG_GPA_RESP),
        Ok(MsrResponse::RegisterGhcb { gfn })
    );
    snp
}

/// A GHCB with protocol version 2 and the exit code and information set.
fn ghcb(code: u64, info1: u64, info2: u64) -> Ghcb {
    let mut g = Ghcb::new_zeroed();
    g.protocol_version = 2;
    g.set_exit(code, info1, info2);
    g
}

/// A call through the GHCB page: write `g`, set the MSR to the page, VMGEXIT, read
/// the page back.
fn ghcb_call(snp: &mut EmulatedSnp, g: &Ghcb) -> (Option<Stop>, Ghcb) {
    snp.mem.write(GHCB, g.as_bytes()).expect("GHCB");
    assert_eq!(wrmsr(snp, MSR_GHCB, GHCB), 0);
    let stop = exit(snp, Exit::Doorbell(Doorbell::Vmgexit)).expect("VMGEXIT");
    let mut page = [0u8; 4096];
    snp.mem.read(GHCB, &mut page).expect("GHCB");
    (stop, Ghcb::read_from_bytes(&page).expect("a page"))
}

fn refused(g: &Ghcb, code: GhcbErrorCode) -> bool {
    g.sw_exit_info_1 == RESULT_BAD_INPUT && g.sw_exit_info_2 == code as u64
}

// ----- MSRs and the MSR protocol -------------------------------------------------------

#[test]
fn sev_status_reads_snp_active_and_other_msrs_fault() {
    let mut snp = platform();
    assert_eq!(rdmsr(&mut snp, MSR_SEV_STATUS), (snp::SEV_STATUS, 0));
    assert_eq!(rdmsr(&mut snp, 0xC000_0080).1, 1, "EFER is not the VMM's");
    assert_eq!(
        wrmsr(&mut snp, MSR_SEV_STATUS, 0),
        1,
        "SEV_STATUS is read-only"
    );
    assert_eq!(wrmsr(&mut snp, MSR_GHCB, 0x1234_5002), 0);
    assert_eq!(rdmsr(&mut snp, MSR_GHCB), (0x1234_5002, 0));
    assert_eq!(snp.run.exits.get("msr"), Some(&5));
}

#[test]
fn msr_protocol_sev_info_names_version_2_and_the_c_bit() {
    let mut snp = platform();
    let (stop, reply) = msr_protocol(&mut snp, MsrRequest::SevInfo.encode());
    assert_eq!(stop, None);
    assert_eq!(
        MsrResponse::decode(reply, mp::SEV_INFO_RESP),
        Ok(MsrResponse::SevInfo {
            max: 2,
            min: 2,
            c_bit: EMULATED_SNP_C_BIT as u8
        })
    );
}

#[test]
fn msr_protocol_cpuid_answers_the_register_asked_for() {
    let mut snp = platform();
    let want = std::arch::x86_64::__cpuid(0).ebx;
    let request = MsrRequest::Cpuid {
        leaf: 0,
        register: 1,
    };
    let (stop, reply) = msr_protocol(&mut snp, request.encode());
    assert_eq!(stop, None);
    assert_eq!(
        MsrResponse::decode(reply, mp::CPUID_RESP),
        Ok(MsrResponse::Cpuid { value: want })
    );
}

#[test]
fn msr_protocol_registers_a_ghcb_inside_ram_only() {
    let mut snp = with_ghcb();
    assert_eq!(snp.ghcb[0].gpa, Some(GHCB));
    let outside = MsrRequest::RegisterGhcb { gfn: 1 << 20 };
    let (stop, reply) = msr_protocol(&mut snp, outside.encode());
    assert_eq!(stop, None);
    assert_eq!(
        MsrResponse::decode(reply, mp::REG_GPA_RESP),
        Ok(MsrResponse::RegisterGhcb {
            gfn: crate::exits::snp::msr_protocol::REG_GPA_ERROR_GFN
        })
    );
    assert_eq!(snp.ghcb[0].gpa, Some(GHCB), "the first registration stands");
}

#[test]
fn msr_protocol_page_state_change_converts_one_page_or_fails() {
    let mut snp = platform();
    let to_shared = MsrRequest::PageStateChange {
        gfn: 0x40,
        op: MsrPscOp::Shared,
    };
    let (stop, reply) = msr_protocol(&mut snp, to_shared.encode());
    assert_eq!(stop, None);
    assert_eq!(
        MsrResponse::decode(reply, mp::PSC_RESP),
        Ok(MsrResponse::PageStateChange { error: 0 })
    );
    assert!(snp.mmu.is_shared(0x40, 1));
    let outside = MsrRequest::PageStateChange {
        gfn: 1 << 30,
        op: MsrPscOp::Private,
    };
    let (_, reply) = msr_protocol(&mut snp, outside.encode());
    assert!(matches!(
        MsrResponse::decode(reply, mp::PSC_RESP),
        Ok(MsrResponse::PageStateChange { error }) if error != 0
    ));
    assert_eq!(snp.counters.psc_calls, 2);
    assert_eq!(snp.counters.psc_entries_4k, 1);
}

#[test]
fn msr_protocol_hv_features_offer_snp() {
    let mut snp = platform();
    let (stop, reply) = msr_protocol(&mut snp, MsrRequest::HvFeatures.encode());
    assert_eq!(stop, None);
    assert_eq!(
        MsrResponse::decode(reply, mp::HV_FEATURES_RESP),
        Ok(MsrResponse::HvFeatures {
            features: HV_FEATURE_SNP
        })
    );
}

#[test]
fn msr_protocol_termination_stops_the_guest_with_its_reason() {
    let mut snp = platform();
    let request = MsrRequest::Terminate { set: 3, code: 7 };
    let (stop, _) = msr_protocol(&mut snp, request.encode());
    assert_eq!(stop, Some(Stop::GuestTerminated { set: 3, code: 7 }));
}

#[test]
fn malformed_msr_protocol_requests_stop_the_guest() {
    for value in [0x003, 0x0FF, 0x101 | (1 << 60)] {
        let mut snp = platform();
        let (stop, _) = msr_protocol(&mut snp, value);
        assert!(
            matches!(stop, Some(Stop::ProtocolViolation(_))),
            "{value:#x}: {stop:?}"
        );
    }
}

// ----- the GHCB page ---------------------------------------------------------------------

#[test]
fn ghcb_calls_need_a_registered_shared_page() {
    // Never registered.
    let mut snp = platform();
    share(&mut snp, GHCB, 1);
    let (stop, _) = ghcb_call(&mut snp, &ghcb(exit_code::HV_FEATURES, 0, 0));
    assert!(matches!(stop, Some(Stop::ProtocolViolation(m)) if m.contains("never registered")));
    // Registered, then made private again.
    let mut snp = with_ghcb();
    snp.mmu
        .set_attributes(&snp.mem, GHCB / PAGE_SIZE_4K, 1, Kind::Private)
        .unwrap();
    let (stop, _) = ghcb_call(&mut snp, &ghcb(exit_code::HV_FEATURES, 0, 0));
    assert!(matches!(stop, Some(Stop::ProtocolViolation(m)) if m.contains("not a shared page")));
}

#[test]
fn ghcb_calls_with_a_bad_header_are_refused_with_the_ghcb_error() {
    let mut snp = with_ghcb();
    let mut g = ghcb(exit_code::HV_FEATURES, 0, 0);
    g.protocol_version = 1;
    assert!(refused(
        &ghcb_call(&mut snp, &g).1,
        GhcbErrorCode::InvalidUsage
    ));
    let mut g = ghcb(exit_code::HV_FEATURES, 0, 0);
    g.ghcb_usage = 1;
    assert!(refused(
        &ghcb_call(&mut snp, &g).1,
        GhcbErrorCode::InvalidUsage
    ));
    let mut g = Ghcb::new_zeroed();
    g.protocol_version = 2;
    g.sw_exit_code = exit_code::HV_FEATURES;
    g.set_valid(GhcbField::SwExitCode);
    assert!(refused(
        &ghcb_call(&mut snp, &g).1,
        GhcbErrorCode::MissingInput
    ));
    for code in [exit_code::CPUID, exit_code::AP_CREATION, 0xDEAD] {
        let (stop, back) = ghcb_call(&mut snp, &ghcb(code, 0, 0));
        assert_eq!(stop, None);
        assert!(refused(&back, GhcbErrorCode::InvalidEvent), "{code:#x}");
    }
}

/// The MSR event reaches the exiting vCPU's local APIC in KVM: a write with RAX and
/// RDX, a read answered in them. Another MSR, a write without its value, an unknown
/// direction or a missing RCX are refused; KVM's refusal is the #GP answer.
#[test]
fn msr_nae_event_reaches_the_local_apic_only() {
    let mut snp = with_ghcb();
    let msr_event = |info1: u64, rcx: Option<u64>, value: Option<u64>| {
        let mut g = ghcb(exit_code::MSR, info1, 0);
        if let Some(rcx) = rcx {
            g.rcx = rcx;
            g.set_valid(GhcbField::Rcx);
        }
        if let Some(v) = value {
            g.rax = v & 0xFFFF_FFFF;
            g.rdx = v >> 32;
            g.set_valid(GhcbField::Rax);
            g.set_valid(GhcbField::Rdx);
        }
        g
    };
    let call = |snp: &mut EmulatedSnp, g: &Ghcb, vcpu: &mut FakeVcpu| {
        snp.mem.write(GHCB, g.as_bytes()).expect("GHCB");
        let mut error = 0;
        handle_exit(
            snp,
            vcpu,
            Exit::WrMsr {
                index: MSR_GHCB,
                value: GHCB,
                error: &mut error,
            },
        )
        .expect("GHCB MSR");
        let stop = handle_exit(snp, vcpu, Exit::Doorbell(Doorbell::Vmgexit)).expect("VMGEXIT");
        let mut page = [0u8; 4096];
        snp.mem.read(GHCB, &mut page).expect("GHCB");
        assert_eq!(stop, None);
        Ghcb::read_from_bytes(&page).expect("a page")
    };
    let mut vcpu = FakeVcpu::identity();
    let back = call(
        &mut snp,
        &msr_event(1, Some(0x830), Some(0x1_0000_4021)),
        &mut vcpu,
    );
    assert_eq!(back.sw_exit_info_1, RESULT_OK);
    assert_eq!(vcpu.msrs.get(&0x830), Some(&0x1_0000_4021));
    vcpu.msrs.insert(0x802, 0x1_0000_0003);
    let back = call(&mut snp, &msr_event(0, Some(0x802), None), &mut vcpu);
    assert_eq!(back.sw_exit_info_1, RESULT_OK);
    assert!(back.is_valid(GhcbField::Rax) && back.is_valid(GhcbField::Rdx));
    assert_eq!((back.rax, back.rdx), (3, 1));
    let before = vcpu.msrs.clone();
    for g in [
        msr_event(1, Some(0xC000_0080), Some(0)),
        msr_event(0, Some(0x1_0000_0802), None),
    ] {
        let back = call(&mut snp, &g, &mut vcpu);
        assert_eq!(
            (back.sw_exit_info_1, back.sw_exit_info_2),
            (RESULT_BAD_INPUT, crate::exits::snp::vmgexit::MSR_REFUSED_GP)
        );
    }
    vcpu.refused_msrs.push(0x83F);
    let back = call(&mut snp, &msr_event(1, Some(0x83F), Some(0x21)), &mut vcpu);
    assert_eq!(
        back.sw_exit_info_2,
        crate::exits::snp::vmgexit::MSR_REFUSED_GP
    );
    for (g, code) in [
        (msr_event(1, Some(0x830), None), GhcbErrorCode::MissingInput),
        (msr_event(0, None, None), GhcbErrorCode::MissingInput),
        (
            msr_event(2, Some(0x830), Some(0)),
            GhcbErrorCode::InvalidEvent,
        ),
    ] {
        assert!(refused(&call(&mut snp, &g, &mut vcpu), code));
    }
    assert_eq!(vcpu.msrs, before, "no refused access reached KVM");
}

#[test]
fn hv_features_nae_event_offers_snp() {
    let mut snp = with_ghcb();
    let (stop, back) = ghcb_call(&mut snp, &ghcb(exit_code::HV_FEATURES, 0, 0));
    assert_eq!(stop, None);
    assert_eq!(
        (back.sw_exit_info_1, back.sw_exit_info_2),
        (RESULT_OK, HV_FEATURE_SNP)
    );
}

#[test]
fn termination_nae_event_stops_the_guest_with_its_reason() {
    let mut snp = with_ghcb();
    let (stop, _) = ghcb_call(&mut snp, &ghcb(exit_code::TERM_REQUEST, 3 | (9 << 4), 0));
    assert_eq!(stop, Some(Stop::GuestTerminated { set: 3, code: 9 }));
}

/// A PSC call with `entries` in the shared buffer.
fn psc_ghcb(entries: &[PscEntry]) -> Ghcb {
    let mut desc = PscDesc::new_zeroed();
    desc.header.end_entry = entries.len() as u16 - 1;
    for (raw, e) in desc.entries.iter_mut().zip(entries) {
        *raw = e.encode();
    }
    let mut g = ghcb(exit_code::PSC, 0, 0);
    g.shared_buffer.copy_from_slice(desc.as_bytes());
    g.sw_scratch = GHCB + 0x800;
    g.set_valid(GhcbField::SwScratch);
    g
}

fn entry(gfn: u64, op: PageStateOp, huge: bool) -> PscEntry {
    PscEntry {
        cur_page: 0,
        gfn,
        op,
        huge,
    }
}

#[test]
fn psc_nae_event_converts_pages_and_records_progress() {
    let mut snp = with_ghcb();
    let g = psc_ghcb(&[
        entry(0x200, PageStateOp::Shared, true),
        entry(0x50, PageStateOp::Shared, false),
    ]);
    let (stop, back) = ghcb_call(&mut snp, &g);
    assert_eq!(stop, None);
    assert_eq!((back.sw_exit_info_1, back.sw_exit_info_2), (RESULT_OK, 0));
    let desc = PscDesc::read_from_bytes(&back.shared_buffer).unwrap();
    assert_eq!(desc.header.cur_entry, 2);
    assert_eq!(PscEntry::decode(desc.entries[0]).unwrap().cur_page, 512);
    assert!(snp.mmu.is_shared(0x200, 512) && snp.mmu.is_shared(0x50, 1));
    assert_eq!(
        (snp.counters.psc_entries_2m, snp.counters.psc_entries_4k),
        (1, 1)
    );
}

#[test]
fn malformed_psc_nae_events_are_refused() {
    let mut snp = with_ghcb();
    // The descriptor is not in the GHCB's shared buffer.
    let mut g = psc_ghcb(&[entry(0x50, PageStateOp::Shared, false)]);
    g.sw_scratch = GHCB + 0x10;
    assert!(refused(
        &ghcb_call(&mut snp, &g).1,
        GhcbErrorCode::InvalidScratchArea
    ));
    // No scratch area at all.
    let mut g = psc_ghcb(&[entry(0x50, PageStateOp::Shared, false)]);
    g.valid_bitmap = [0; 2];
    g.set_exit(exit_code::PSC, 0, 0);
    assert!(refused(
        &ghcb_call(&mut snp, &g).1,
        GhcbErrorCode::InvalidScratchArea
    ));
    // A header naming an end beyond 253 entries.
    let mut g = psc_ghcb(&[entry(0x50, PageStateOp::Shared, false)]);
    g.shared_buffer[2..4].copy_from_slice(&300u16.to_le_bytes());
    let (_, back) = ghcb_call(&mut snp, &g);
    assert_eq!(back.sw_exit_info_2, PSC_ERROR_INVALID_HDR);
    // An unaligned 2 MiB entry.
    let mut g = psc_ghcb(&[entry(0x50, PageStateOp::Shared, false)]);
    let bad = PscEntry::encode(&entry(0x51, PageStateOp::Shared, false)) | (1 << 56);
    g.shared_buffer[8..16].copy_from_slice(&bad.to_le_bytes());
    let (_, back) = ghcb_call(&mut snp, &g);
    assert_eq!(back.sw_exit_info_2, PSC_ERROR_INVALID_ENTRY);
    assert!(!snp.mmu.is_shared(0x51, 1), "nothing converted");
}

/// An IOIO event for the hostcall doorbell with the area's page number in RAX.
fn ioio_ghcb(info1: u64, area: u64) -> Ghcb {
    let mut g = ghcb(exit_code::IOIO, info1, 0);
    g.rax = area / PAGE_SIZE_4K;
    g.set_valid(GhcbField::Rax);
    g
}

fn hostcall_out() -> u64 {
    (u64::from(HOSTCALL_PORT) << ioio::PORT_SHIFT) | ioio::SIZE_32
}

#[test]
fn ioio_nae_event_serves_a_hostcall_from_the_shared_area() {
    let mut snp = with_ghcb();
    share(&mut snp, AREA, 512);
    put_hostcall(&snp.mem, AREA, &clock_request());
    let (stop, back) = ghcb_call(&mut snp, &ioio_ghcb(hostcall_out(), AREA));
    assert_eq!(stop, None);
    assert_eq!(back.sw_exit_info_1, RESULT_OK);
    let reply = hostcall_reply(&snp.mem, AREA);
    assert_eq!((reply.status, reply.result), (0, 24));
    assert_eq!(snp.run.hostcalls.get("clock"), Some(&1));
    // The app's exit ends the run with its status and its syscall counts: the
    // unsupported ones, then all (the last `arg2` bytes).
    let pairs: [(u32, u32); 3] = [(41, 2), (228, 5), (41, 2)];
    let data: Vec<u8> = pairs
        .iter()
        .flat_map(|(nr, n)| nr.to_le_bytes().into_iter().chain(n.to_le_bytes()))
        .collect();
    snp.mem
        .write(AREA + HOSTCALL_DATA_OFFSET, &data)
        .expect("exit data");
    let exit = HostcallHeader {
        len: 24,
        arg2: 16,
        ..exit_request(42)
    };
    put_hostcall(&snp.mem, AREA, &exit);
    let (stop, _) = ghcb_call(&mut snp, &ioio_ghcb(hostcall_out(), AREA));
    assert_eq!(stop, Some(Stop::AppExit(42)));
    assert_eq!(snp.run.syscalls_unsupported.get("socket"), Some(&2));
    assert_eq!(snp.run.syscalls.get("clock_gettime"), Some(&5));
    assert_eq!(snp.run.syscalls.get("socket"), Some(&2));
    assert_eq!(snp.run.syscalls.len(), 2);
}

#[test]
fn malformed_ioio_nae_events_are_refused_or_stop_the_guest() {
    let mut snp = with_ghcb();
    share(&mut snp, AREA, 512);
    put_hostcall(&snp.mem, AREA, &clock_request());
    // Another port, an IN, a string or a byte-sized access, no RAX: refused.
    let other_port = (0x80 << ioio::PORT_SHIFT) | ioio::SIZE_32;
    for info1 in [
        other_port,
        hostcall_out() | ioio::TYPE_IN,
        hostcall_out() | ioio::STRING,
        (u64::from(HOSTCALL_PORT) << ioio::PORT_SHIFT) | ioio::SIZE_8,
    ] {
        let (stop, back) = ghcb_call(&mut snp, &ioio_ghcb(info1, AREA));
        assert_eq!(stop, None);
        assert!(refused(&back, GhcbErrorCode::InvalidInput), "{info1:#x}");
    }
    let mut g = ghcb(exit_code::IOIO, hostcall_out(), 0);
    g.rax = AREA / PAGE_SIZE_4K;
    assert!(refused(
        &ghcb_call(&mut snp, &g).1,
        GhcbErrorCode::InvalidInput
    ));
    // An area in private memory or leaving RAM breaks the protocol.
    for area in [0x600_000, (64 << 20) - 0x1000] {
        let (stop, _) = ghcb_call(&mut snp, &ioio_ghcb(hostcall_out(), area));
        assert!(
            matches!(stop, Some(Stop::ProtocolViolation(_))),
            "{area:#x}"
        );
    }
    // A malformed request in the area too.
    put_hostcall(
        &snp.mem,
        AREA,
        &nacre_shared_abi::hostcall::HostcallHeader {
            op: 99,
            ..Default::default()
        },
    );
    let (stop, _) = ghcb_call(&mut snp, &ioio_ghcb(hostcall_out(), AREA));
    assert!(matches!(stop, Some(Stop::ProtocolViolation(_))));
}

/// A platform with a launched security processor and the test signer; pages 0x20 and
/// 0x21 shared.
fn attesting() -> EmulatedSnp {
    let mut snp = with_ghcb();
    snp.sp = Some(EmulatedSecurityProcessor {
        sp: launched(),
        signer: LazySigner::new("the test signer", Box::new(|| Ok(Box::new(signer())))),
    });
    share(&mut snp, 0x20_000, 2);
    snp
}

fn vmpck0(snp: &EmulatedSnp) -> [u8; 32] {
    *snp.sp.as_ref().unwrap().sp.vmpck(0).unwrap()
}

#[test]
fn guest_request_nae_event_is_answered_through_shared_pages_only() {
    let mut snp = attesting();
    let key = vmpck0(&snp);
    snp.mem
        .write(0x20_000, &request(&key, 1, [3; 64], 0, 0))
        .unwrap();
    let call = ghcb(exit_code::GUEST_REQUEST, 0x20_000, 0x21_000);
    let (stop, back) = ghcb_call(&mut snp, &call);
    assert_eq!((stop, back.sw_exit_info_2), (None, 0));
    let mut page = [0u8; 4096];
    snp.mem.read(0x21_000, &mut page).unwrap();
    response(&key, 2, &page);
    assert_eq!(snp.counters.guest_requests, 1);

    // A replayed request: the firmware's error, nothing written.
    snp.mem.write(0x21_000, &[0xEE; 4096]).unwrap();
    let (stop, back) = ghcb_call(&mut snp, &call);
    assert_eq!((stop, back.sw_exit_info_2), (None, FW_ERR_INVALID_PARAM));
    snp.mem.read(0x21_000, &mut page).unwrap();
    assert_eq!(page, [0xEE; 4096]);

    // Private, unaligned or out-of-RAM pages stop the guest.
    for (req, rsp) in [
        (0x40_000, 0x21_000),
        (0x20_000, 0x40_000),
        (0x20_010, 0x21_000),
        (0x20_000, 64 << 20),
        (!0xFFF, 0x21_000),
    ] {
        let (stop, _) = ghcb_call(&mut snp, &ghcb(exit_code::GUEST_REQUEST, req, rsp));
        assert!(
            matches!(stop, Some(Stop::ProtocolViolation(_))),
            "{req:#x} {rsp:#x}: {stop:?}"
        );
    }
}

#[test]
fn guest_requests_without_keys_or_processor_get_the_platform_error() {
    let mut snp = attesting();
    snp.sp.as_mut().unwrap().signer =
        LazySigner::new("the test signer", Box::new(|| Err("no keys".into())));
    let key = vmpck0(&snp);
    snp.mem
        .write(0x20_000, &request(&key, 1, [3; 64], 0, 0))
        .unwrap();
    let call = ghcb(exit_code::GUEST_REQUEST, 0x20_000, 0x21_000);
    assert_eq!(ghcb_call(&mut snp, &call).1.sw_exit_info_2, FW_ERR_PLATFORM);
    snp.sp = None;
    assert_eq!(ghcb_call(&mut snp, &call).1.sw_exit_info_2, FW_ERR_PLATFORM);
}

// ----- PVALIDATE, RMPADJUST and the other doorbells --------------------------------------

/// PVALIDATE through its doorbell of the page at `va` (mapped with the C-bit), size
/// operand `size`, validate `1`: the vCPU's RAX and CF afterwards.
fn pvalidate(snp: &mut EmulatedSnp, vcpu: &mut FakeVcpu, va: u64, size: u64) -> (u64, bool) {
    vcpu.regs.rax = va;
    vcpu.regs.rcx = size;
    vcpu.regs.rdx = 1;
    vcpu.regs.rflags = 0x2;
    let stop = handle_exit(snp, vcpu, Exit::Doorbell(Doorbell::Pvalidate)).expect("PVALIDATE");
    assert_eq!(stop, None);
    (vcpu.regs.rax, vcpu.regs.rflags & 1 == 1)
}

#[test]
fn pvalidate_doorbell_validates_and_says_when_nothing_changed() {
    let mut snp = platform();
    let c = c_bit();
    let mut vcpu = FakeVcpu::with_walk(move |va| Some(va | c));
    assert_eq!(pvalidate(&mut snp, &mut vcpu, 0x60_0000, 1), (0, false));
    let e = snp.mmu.rmp_entry(0x600).unwrap();
    assert!(e.assigned && e.validated && e.size == RmpPageSize::Size2M);
    // Validating again changes nothing: CF = 1.
    assert_eq!(pvalidate(&mut snp, &mut vcpu, 0x60_0000, 1), (0, true));
    assert_eq!(snp.counters.pvalidate_2m, 2);
    assert_eq!(snp.run.exits.get("pvalidate"), Some(&2));
}

#[test]
fn pvalidate_at_4k_inside_a_fresh_2m_region_psmashes() {
    let mut snp = platform();
    let c = c_bit();
    let mut vcpu = FakeVcpu::with_walk(move |va| Some(va | c));
    assert_eq!(pvalidate(&mut snp, &mut vcpu, 0x40_1000, 0), (0, false));
    assert_eq!(snp.mmu.stats().psmash, 1);
    assert_eq!(snp.mmu.rmp_entry(0x401).unwrap().size, RmpPageSize::Size4K);
    // A 2 MiB PVALIDATE over the now 4 KiB entries is a size mismatch.
    let (rax, _) = pvalidate(&mut snp, &mut vcpu, 0x40_0000, 1);
    assert_eq!(rax, u64::from(RmpError::FailSizeMismatch.code()));
    assert_eq!(snp.counters.pvalidate_size_mismatch, 1);
    // Two 2 MiB mappings: the first region's, zapped by the PSMASH, and none other.
    let s = snp.mmu.stats();
    assert_eq!((s.maps_2m, s.zaps), (1, 1), "{s:?}");
}

#[test]
fn pvalidate_of_shared_unmapped_or_unaligned_memory_fails_input() {
    let mut snp = platform();
    let fail_input = u64::from(RmpError::FailInput.code());
    // Mapped without the C-bit.
    let mut shared = FakeVcpu::identity();
    assert_eq!(pvalidate(&mut snp, &mut shared, 0x60_0000, 0).0, fail_input);
    // Not mapped at all.
    let mut unmapped = FakeVcpu::with_walk(|_| None);
    assert_eq!(
        pvalidate(&mut snp, &mut unmapped, 0x60_0000, 0).0,
        fail_input
    );
    // A 2 MiB operand on a 4 KiB boundary, and a size operand that is neither.
    let c = c_bit();
    let mut vcpu = FakeVcpu::with_walk(move |va| Some(va | c));
    assert_eq!(pvalidate(&mut snp, &mut vcpu, 0x60_1000, 1).0, fail_input);
    assert_eq!(pvalidate(&mut snp, &mut vcpu, 0x60_0000, 2).0, fail_input);
    assert_eq!(snp.mmu.rmp_entry(0x600).map(|e| e.assigned), Some(false));
}

#[test]
fn pvalidate_of_a_shared_page_converts_it_unless_strict() {
    let mut snp = platform();
    share(&mut snp, 0x70_0000, 1);
    let c = c_bit();
    let mut vcpu = FakeVcpu::with_walk(move |va| Some(va | c));
    assert_eq!(pvalidate(&mut snp, &mut vcpu, 0x70_0000, 0), (0, false));
    assert_eq!(snp.mmu.stats().implicit_conversions, 1);
    let mut strict = platform();
    strict.strict_memory = true;
    share(&mut strict, 0x70_0000, 1);
    vcpu.regs.rax = 0x70_0000;
    vcpu.regs.rcx = 0;
    vcpu.regs.rdx = 1;
    let stop = handle_exit(&mut strict, &mut vcpu, Exit::Doorbell(Doorbell::Pvalidate)).unwrap();
    assert!(matches!(
        stop,
        Some(Stop::MemoryViolation { gpa: 0x70_0000, .. })
    ));
}

#[test]
fn rmpadjust_doorbell_checks_the_page_and_returns_eax() {
    let mut snp = platform();
    let c = c_bit();
    let mut vcpu = FakeVcpu::with_walk(move |va| Some(va | c));
    pvalidate(&mut snp, &mut vcpu, 0x40_0000, 0);
    // Give VMPL1 read permission on the validated page.
    vcpu.regs.rax = 0x40_0000;
    vcpu.regs.rcx = 0;
    vcpu.regs.rdx = 1 | (1 << 8);
    handle_exit(&mut snp, &mut vcpu, Exit::Doorbell(Doorbell::Rmpadjust)).unwrap();
    assert_eq!(vcpu.regs.rax, 0);
    // Unmapped, or through the shared view: FAIL_INPUT.
    let mut shared = FakeVcpu::identity();
    shared.regs = vcpu.regs;
    handle_exit(&mut snp, &mut shared, Exit::Doorbell(Doorbell::Rmpadjust)).unwrap();
    assert_eq!(shared.regs.rax, u64::from(RmpError::FailInput.code()));
    assert_eq!(snp.run.exits.get("rmpadjust"), Some(&2));
}

#[test]
fn tdcall_doorbell_on_snp_fails_input() {
    let mut snp = platform();
    let mut vcpu = FakeVcpu::identity();
    vcpu.regs.rax = 1;
    let stop = handle_exit(&mut snp, &mut vcpu, Exit::Doorbell(Doorbell::Tdcall)).unwrap();
    assert_eq!((stop, vcpu.regs.rax), (None, 1));
}

// ----- memory faults and other exits -------------------------------------------------------

#[test]
fn memory_faults_name_the_rule_under_strict_memory() {
    let mut snp = platform();
    snp.strict_memory = true;
    snp.launch_page(0x20_000).unwrap();
    let mut data = [0u8; 8];
    // Shared access to a private page.
    let stop = exit(
        &mut snp,
        Exit::MmioRead {
            gpa: 0x20_000,
            data: &mut data,
        },
    )
    .unwrap();
    assert!(matches!(
        stop,
        Some(Stop::MemoryViolation {
            view: View::Shared,
            rule: crate::mmu::rule::SHARED_TO_PRIVATE,
            ..
        })
    ));
    // Private access to a private page never validated.
    let stop = exit(
        &mut snp,
        Exit::MmioWrite {
            gpa: c_bit() | 0x30_000,
            data: &[1, 2],
        },
    )
    .unwrap();
    assert_eq!(
        stop,
        Some(Stop::MemoryViolation {
            view: View::Private,
            gpa: 0x30_000,
            rule: crate::mmu::rule::NOT_VALIDATED,
        })
    );
    // Outside RAM.
    let stop = exit(
        &mut snp,
        Exit::MmioRead {
            gpa: 1 << 40,
            data: &mut data,
        },
    )
    .unwrap();
    assert!(matches!(stop, Some(Stop::MemoryViolation { .. })));
    assert_eq!(snp.run.exits.get("npf"), Some(&3));
}

#[test]
fn an_access_to_a_validated_page_completes_on_ram() {
    let mut snp = platform();
    snp.launch_page(0x20_000).unwrap();
    snp.mem.write(0x20_008, b"launched").unwrap();
    let mut data = [0u8; 8];
    let gpa = c_bit() | 0x20_008;
    assert_eq!(
        exit(
            &mut snp,
            Exit::MmioRead {
                gpa,
                data: &mut data
            }
        )
        .unwrap(),
        None
    );
    assert_eq!(&data, b"launched");
    assert_eq!(
        exit(
            &mut snp,
            Exit::MmioWrite {
                gpa,
                data: b"changed!"
            }
        )
        .unwrap(),
        None
    );
    let mut back = [0u8; 8];
    snp.mem.read(0x20_008, &mut back).unwrap();
    assert_eq!(&back, b"changed!");
}

#[test]
fn a_wrong_view_access_converts_and_discards_unless_strict() {
    let mut snp = platform();
    snp.launch_page(0x20_000).unwrap();
    snp.mem.write(0x20_000, b"private").unwrap();
    let mut data = [0xAAu8; 7];
    assert_eq!(
        exit(
            &mut snp,
            Exit::MmioRead {
                gpa: 0x20_000,
                data: &mut data
            }
        )
        .unwrap(),
        None
    );
    assert_eq!(
        data, [0; 7],
        "a page made shared must not carry private data"
    );
    assert_eq!(snp.mmu.stats().implicit_conversions, 1);
    assert_eq!(snp.mmu.reachable(0x20), (false, true));
}

#[test]
fn other_exits_float_high_or_end_the_run_with_a_reason() {
    let mut snp = platform();
    let mut data = [0u8; 4];
    assert_eq!(
        exit(
            &mut snp,
            Exit::IoIn {
                port: 0x3F8,
                data: &mut data
            }
        )
        .unwrap(),
        None
    );
    assert_eq!(data, [0xFF; 4]);
    for e in [
        Exit::IoOut {
            port: 0x3F8,
            data: &[1],
        },
        Exit::Hlt,
        Exit::Shutdown,
        Exit::FailEntry { reason: 7 },
        Exit::InternalError,
        Exit::Unsupported(9),
        Exit::MemoryFault {
            gpa: 0,
            size: 4096,
            flags: 8,
        },
    ] {
        let what = format!("{e:?}");
        assert!(
            matches!(exit(&mut snp, e), Err(RunError::Guest(_))),
            "{what}"
        );
    }
    let mut ret = 0;
    let call = Exit::Hypercall {
        nr: 12,
        args: [0; 6],
        ret: &mut ret,
    };
    assert!(exit(&mut snp, call).is_err());
    assert_eq!(exit(&mut snp, Exit::Interrupted).unwrap(), None);
}

#[test]
fn converting_to_the_current_state_changes_nothing() {
    let mut snp = platform();
    snp.launch_page(0x10_000).unwrap();
    snp.mem.write(0x10_000, b"keep").unwrap();
    let before = snp.mmu.stats().rmpupdate;
    let request = MsrRequest::PageStateChange {
        gfn: 0x10,
        op: MsrPscOp::Private,
    };
    msr_protocol(&mut snp, request.encode());
    let e = snp.mmu.rmp_entry(0x10).unwrap();
    assert!(e.assigned && e.validated, "still validated: {e:?}");
    let mut b = [0u8; 4];
    snp.mem.read(0x10_000, &mut b).unwrap();
    assert_eq!(&b, b"keep");
    assert_eq!(snp.mmu.stats().rmpupdate, before);
}

#[test]
fn counters_cover_the_protocol_and_the_mmu() {
    let mut snp = with_ghcb();
    let keys: Vec<_> = snp.counters().into_iter().map(|(k, _)| k).collect();
    for key in [
        "psc.calls",
        "pvalidate.4k",
        "attest.requests",
        "rmp.psmash",
        "tdp.faults",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert_eq!(snp.run_counters().exits.get("vmgexit"), Some(&1));
}

/// Each vCPU has a GHCB MSR and a registered GHCB of its own: two vCPUs registering
/// different GHCBs do not see each other's, and a call through one GHCB is answered
/// there.
#[test]
fn every_vcpu_has_its_own_ghcb() {
    let mut snp = platform();
    snp.set_cpus(2);
    let other = GHCB + PAGE_SIZE_4K;
    share(&mut snp, GHCB, 2);
    for (vcpu, gpa) in [(0, GHCB), (1, other)] {
        let gfn = gpa / PAGE_SIZE_4K;
        let (stop, reply) =
            msr_protocol_on(&mut snp, vcpu, MsrRequest::RegisterGhcb { gfn }.encode());
        assert_eq!(stop, None);
        assert_eq!(
            MsrResponse::decode(reply, mp::REG_GPA_RESP),
            Ok(MsrResponse::RegisterGhcb { gfn })
        );
    }
    assert_eq!(snp.ghcb[0].gpa, Some(GHCB));
    assert_eq!(snp.ghcb[1].gpa, Some(other));
    // The MSR is per vCPU: vCPU 1 writing its own leaves vCPU 0's alone.
    assert_eq!(wrmsr_on(&mut snp, 0, MSR_GHCB, GHCB), 0);
    assert_eq!(wrmsr_on(&mut snp, 1, MSR_GHCB, other), 0);
    assert_eq!(rdmsr_on(&mut snp, 0, MSR_GHCB), (GHCB, 0));
    assert_eq!(rdmsr_on(&mut snp, 1, MSR_GHCB), (other, 0));
    // A GHCB call by vCPU 1 goes through vCPU 1's GHCB, not vCPU 0's.
    let g = ghcb(exit_code::HV_FEATURES, 0, 0);
    snp.mem.write(other, g.as_bytes()).expect("GHCB");
    snp.mem
        .write(GHCB, Ghcb::new_zeroed().as_bytes())
        .expect("GHCB");
    let stop = exit_on(&mut snp, 1, Exit::Doorbell(Doorbell::Vmgexit)).expect("VMGEXIT");
    assert_eq!(stop, None);
    let mut page = [0u8; 4096];
    snp.mem.read(other, &mut page).expect("GHCB");
    let back = Ghcb::read_from_bytes(&page).expect("a page");
    assert_eq!(back.sw_exit_info_1, RESULT_OK);
    assert_eq!(back.sw_exit_info_2, HV_FEATURE_SNP);
    snp.mem.read(GHCB, &mut page).expect("GHCB");
    assert!(page.iter().all(|&b| b == 0), "vCPU 0's GHCB is untouched");
    // vCPU 0 registering another page changes its own registration only.
    let third = other + PAGE_SIZE_4K;
    let request = MsrRequest::RegisterGhcb {
        gfn: third / PAGE_SIZE_4K,
    };
    msr_protocol_on(&mut snp, 0, request.encode());
    assert_eq!(snp.ghcb[0].gpa, Some(third));
    assert_eq!(snp.ghcb[1].gpa, Some(other));
}

/// An exit of a vCPU the platform does not serve is a host bug, not a panic, and
/// its MSR accesses fault.
#[test]
fn exits_of_unknown_vcpus_are_refused() {
    let mut snp = platform();
    assert_eq!(rdmsr_on(&mut snp, 1, MSR_GHCB).1, 1);
    assert_eq!(wrmsr_on(&mut snp, 1, MSR_GHCB, GHCB), 1);
    assert!(matches!(
        exit_on(&mut snp, 1, Exit::Doorbell(Doorbell::Vmgexit)),
        Err(RunError::Host(_))
    ));
}

/// With several vCPUs the boot window stays open until each has made its first exit
/// (each runs the entry code with paging off), whatever the others did meanwhile.
#[test]
fn the_boot_window_stays_open_until_every_vcpu_exited() {
    let mut snp = platform();
    snp.set_cpus(3);
    snp.open_boot_window([(0x4000, 0x1000)]).unwrap();
    for _ in 0..3 {
        assert_eq!(rdmsr_on(&mut snp, 0, MSR_SEV_STATUS).1, 0);
    }
    assert!(snp.boot_window_open(), "only the boot processor exited");
    assert_eq!(rdmsr_on(&mut snp, 2, MSR_SEV_STATUS).1, 0);
    assert!(snp.boot_window_open(), "vCPU 1 never exited");
    assert_eq!(rdmsr_on(&mut snp, 1, MSR_SEV_STATUS).1, 0);
    assert!(!snp.boot_window_open());
    assert_eq!(rdmsr_on(&mut snp, 1, MSR_SEV_STATUS).1, 0);
    assert!(!snp.boot_window_open());
}

/// The shared view of the entry code's pages is open from the launch to the first exit,
/// whatever that exit is, and never again.
#[test]
fn the_first_exit_closes_the_boot_window() {
    let mut snp = platform();
    snp.open_boot_window([(0x4000, 0x1000), (0x8000, 0x4000), (64 << 20, 0x2000)])
        .unwrap();
    assert!(snp.boot_window_open());
    let (_, error) = rdmsr(&mut snp, MSR_SEV_STATUS);
    assert_eq!(error, 0);
    assert!(!snp.boot_window_open());
    // Closing twice is harmless; a range past RAM was clipped away, not an error.
    snp.close_boot_window().unwrap();
}

// ----- the launch (needs /dev/kvm) -------------------------------------------------------

/// `--cpus 3`: three vCPUs with x2APIC ids 0, 1 and 2, all runnable, with the same
/// CPUID and registers (the VMSA's), and the parameter page says three.
#[test]
fn a_launch_of_three_vcpus_starts_them_alike() {
    use crate::platform::launch::LaunchConfig;
    use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE};
    use nacre_loader::load_image;
    use nacre_shared_abi::boot::host_cpus;
    let files = crate::cli::package::file_tree("hello", &[]).unwrap();
    let bytes =
        crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, false).unwrap();
    let image = load_image(&bytes, PlatformKind::Snp).unwrap();
    let config = LaunchConfig {
        cpus: 3,
        ..LaunchConfig::new(image.min_memory.max(128 << 20))
    };
    let vm = <EmulatedSnp as Platform>::launch(&image, &config).expect("a launch");
    assert_eq!(vm.vcpus.len(), 3);
    let bsp = &vm.vcpus[0];
    let regs = bsp.get_regs().unwrap();
    let sregs = bsp.get_sregs().unwrap();
    let cpuid = bsp.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
    assert_eq!(regs.rip, image.vmsa.as_ref().unwrap().rip);
    for (index, vcpu) in vm.vcpus.iter().enumerate() {
        assert_eq!(vcpu.get_regs().unwrap(), regs, "vCPU {index}");
        let s = vcpu.get_sregs().unwrap();
        assert_eq!(
            (s.cs, s.ds, s.ss, s.gdt, s.cr0, s.cr3, s.cr4, s.efer),
            (
                sregs.cs, sregs.ds, sregs.ss, sregs.gdt, sregs.cr0, sregs.cr3, sregs.cr4,
                sregs.efer
            ),
            "vCPU {index}"
        );
        assert_eq!(
            vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap().as_slice(),
            cpuid.as_slice(),
            "vCPU {index}"
        );
        assert_eq!(
            vcpu.get_mp_state().unwrap().mp_state,
            KVM_MP_STATE_RUNNABLE,
            "vCPU {index}"
        );
        // The local APIC's ID register (xAPIC offset 0x20, id in bits 31:24).
        let lapic = vcpu.get_lapic().unwrap();
        assert_eq!(lapic.regs[0x23] as u8, index as u8, "vCPU {index}");
    }
    let mut page = [0u8; 4096];
    vm.platform
        .memory()
        .read(image.param_gpa, &mut page)
        .unwrap();
    assert_eq!(host_cpus(&page), Ok(3));
}
