//! The `emulated-tdx` platform driven by synthetic exits through the generic exit
//! handler, without `/dev/kvm`: every TDCALL leaf and TDG.VP.VMCALL sub-function the
//! host handles (and malformed ones), the #UD path for TDCALL, and memory faults.

use super::*;
use crate::emulated::snp::keys::fixture::scratch;
use crate::emulated::LazyKeys;
use crate::exits::tdx::tdvmcall::VMCALL_SUBFUNC_UNSUPPORTED;
use crate::exits::testing::{clock_request, exit_request, hostcall_reply, put_hostcall, FakeVcpu};
use crate::exits::{handle_exit, Exit};
use crate::mmu::attributes::Kind;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::layout::EMULATED_TDX_GPAW;
use nacre_shared_abi::tdx::{leaf, status, vmcall};
use nacre_shared_abi::tdx_report::get_quote::{self, QuoteBufHeader, HEADER_SIZE};
use nacre_shared_abi::tdx_report::TDREPORT_SIZE;
use nacre_verifier::tdx::Quote;
use std::sync::OnceLock;
use zerocopy::{FromBytes, IntoBytes};

/// Where the tests put the hostcall area (2 MiB, shared).
const AREA: u64 = 0x200_000;

fn shared_bit() -> u64 {
    1 << (EMULATED_TDX_GPAW - 1)
}

/// One emulated TDX key hierarchy for these tests.
fn keys_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("tdx-platform").join("tdx");
        EmulatedTdxKeys::load_or_create(&dir).expect("keys");
        dir
    })
}

/// A TD with a finalized MRTD, page 0x10 added (private, accepted), pages 0x20..0x30
/// shared, and a quoting service with the keys of [`keys_dir`].
fn td() -> EmulatedTdx {
    let module = EmulatedTdxModule::new(EMULATED_TDX_GPAW, 0).expect("report key");
    let mut tdx = EmulatedTdx::new(GuestMemory::new(64 << 20).expect("memfd"), module);
    tdx.add_page(0x10_000, false).expect("added");
    tdx.module.mrtd_final = Some([7; 48]);
    tdx.mmu.map_gpa(&tdx.mem, 0x20, 16, false).expect("shared");
    tdx.quoting = Some(EmulatedQuotingService {
        qe: crate::emulated::tdx::quoting::QuotingEnclave::new(),
        report_key: tdx.module.report_key.clone(),
        keys: LazyKeys::new(
            "test keys",
            Box::new(|| EmulatedTdxKeys::load(keys_dir()).map_err(|e| e.to_string())),
        ),
    });
    tdx
}

/// A TDCALL through the doorbell with `vcpu`'s registers.
fn tdcall(tdx: &mut EmulatedTdx, vcpu: &mut FakeVcpu) -> Option<Stop> {
    handle_exit(tdx, vcpu, Exit::Doorbell(Doorbell::Tdcall)).expect("TDCALL")
}

/// A TDG.VP.VMCALL of sub-function `sub` with R12-R15 = `args`.
fn vmcall(tdx: &mut EmulatedTdx, sub: u64, args: [u64; 4]) -> (Option<Stop>, FakeVcpu) {
    let mut vcpu = FakeVcpu::identity();
    vcpu.regs.rax = leaf::VP_VMCALL;
    vcpu.regs.r11 = sub;
    [vcpu.regs.r12, vcpu.regs.r13, vcpu.regs.r14, vcpu.regs.r15] = args;
    let stop = tdcall(tdx, &mut vcpu);
    assert_eq!(
        vcpu.regs.rax,
        status::SUCCESS,
        "TDG.VP.VMCALL itself succeeds"
    );
    (stop, vcpu)
}

// ----- the TDX module's leaves --------------------------------------------------------------

#[test]
fn vp_info_reports_the_gpa_width_attributes_and_vcpu() {
    let mut tdx = td();
    tdx.module.attributes = 1 << 28;
    let mut vcpu = FakeVcpu::identity();
    vcpu.regs.rax = leaf::VP_INFO;
    vcpu.regs.r10 = 0xDEAD;
    assert_eq!(tdcall(&mut tdx, &mut vcpu), None);
    let r = vcpu.regs;
    assert_eq!(r.rax, status::SUCCESS);
    assert_eq!(r.rcx, u64::from(EMULATED_TDX_GPAW));
    assert_eq!(r.rdx, 1 << 28);
    assert_eq!((r.r8, r.r9, r.r10, r.r11), ((1 << 32) | 1, 0, 0, 0));
    assert_eq!(tdx.run.exits.get("tdcall"), Some(&1));
}

/// TDG.VP.INFO of a TD with several vCPUs: NUM_VCPUS and MAX_VCPUS are the number
/// the host made, VCPU_INDEX the caller's.
#[test]
fn vp_info_reports_the_number_of_vcpus_and_the_callers_index() {
    let mut tdx = td();
    tdx.module.vcpus = 4;
    for index in [0, 3] {
        let mut vcpu = FakeVcpu::identity();
        vcpu.index = index;
        vcpu.regs.rax = leaf::VP_INFO;
        assert_eq!(tdcall(&mut tdx, &mut vcpu), None);
        assert_eq!(vcpu.regs.rax, status::SUCCESS);
        assert_eq!(vcpu.regs.r8, (4 << 32) | 4);
        assert_eq!(vcpu.regs.r9, u64::from(index));
    }
}

#[test]
fn unknown_tdcall_leaves_are_operand_invalid() {
    let mut tdx = td();
    for leaf in [3, 99, u64::MAX] {
        let mut vcpu = FakeVcpu::identity();
        vcpu.regs.rax = leaf;
        assert_eq!(tdcall(&mut tdx, &mut vcpu), None);
        assert_eq!(vcpu.regs.rax, status::OPERAND_INVALID, "leaf {leaf}");
    }
}

fn accept(tdx: &mut EmulatedTdx, rcx: u64) -> (Option<Stop>, u64) {
    let mut vcpu = FakeVcpu::identity();
    vcpu.regs.rax = leaf::MEM_PAGE_ACCEPT;
    vcpu.regs.rcx = rcx;
    let stop = tdcall(tdx, &mut vcpu);
    (stop, vcpu.regs.rax)
}

#[test]
fn page_accept_accepts_once_and_names_the_second_accept() {
    let mut tdx = td();
    assert_eq!(accept(&mut tdx, 0x40_0000 | 1), (None, status::SUCCESS));
    assert_eq!(tdx.mmu.reachable(0x400), (true, false));
    // The status names the operand (RCX) in its low bits.
    assert_eq!(
        accept(&mut tdx, 0x40_0000 | 1).1 >> 32,
        status::PAGE_ALREADY_ACCEPTED >> 32
    );
    assert_eq!(accept(&mut tdx, 0x60_1000), (None, status::SUCCESS));
    // 2 MiB over the 4 KiB page table the last accept left: a size mismatch.
    assert_eq!(
        accept(&mut tdx, 0x60_0000 | 1).1,
        status::PAGE_SIZE_MISMATCH
    );
}

#[test]
fn malformed_page_accepts_are_operand_invalid() {
    let mut tdx = td();
    // Level 3, an unaligned 2 MiB GPA, reserved bits.
    for rcx in [0x40_0000 | 3, 0x40_1000 | 1, 0x40_0000 | 0x10] {
        assert_eq!(
            accept(&mut tdx, rcx),
            (None, status::OPERAND_INVALID),
            "{rcx:#x}"
        );
    }
}

#[test]
fn accepting_a_shared_page_converts_it_unless_strict() {
    let mut tdx = td();
    assert_eq!(accept(&mut tdx, 0x20_000), (None, status::SUCCESS));
    assert_eq!(tdx.mmu.stats().implicit_conversions, 1);
    let mut strict = td();
    strict.strict_memory = true;
    let (stop, _) = accept(&mut strict, 0x21_000);
    assert!(matches!(
        stop,
        Some(Stop::MemoryViolation {
            gpa: 0x21_000,
            view: View::Private,
            ..
        })
    ));
}

fn mr_report(tdx: &mut EmulatedTdx, out: u64, data: u64, subtype: u64) -> u64 {
    let mut vcpu = FakeVcpu::identity();
    vcpu.regs.rax = leaf::MR_REPORT;
    (vcpu.regs.rcx, vcpu.regs.rdx, vcpu.regs.r8) = (out, data, subtype);
    assert_eq!(tdcall(tdx, &mut vcpu), None);
    vcpu.regs.rax
}

#[test]
fn mr_report_writes_a_maced_report_of_the_td_into_private_memory() {
    let mut tdx = td();
    tdx.mem.write(0x10_400, &[0x5A; 64]).unwrap();
    assert_eq!(mr_report(&mut tdx, 0x10_000, 0x10_400, 0), status::SUCCESS);
    let mut report = [0u8; TDREPORT_SIZE];
    tdx.mem.read(0x10_000, &mut report).unwrap();
    let checked = tdx.module.report_key.verify(&report).expect("MAC");
    assert_eq!(checked.report_mac.report_data, [0x5A; 64]);
    assert_eq!(checked.td_info.mr_td, [7; 48]);
    assert_eq!(checked.td_info.attributes, 0);

    // Misaligned, another subtype, a shared or unaccepted page, outside RAM, or with
    // the shared bit: OPERAND_INVALID, and nothing written.
    tdx.mem.write(0x20_000, &[0xEE; 1024]).unwrap();
    for (out, data, subtype) in [
        (0x10_040, 0x10_400, 0),
        (0x10_000, 0x10_404, 0),
        (0x10_000, 0x10_400, 1),
        (0x20_000, 0x10_400, 0),
        (0x10_000, 0x20_000, 0),
        (0x30_000, 0x10_400, 0),
        (64 << 20, 0x10_400, 0),
        (0x10_000 | shared_bit(), 0x10_400, 0),
        (!0x3FF, 0x10_400, 0),
    ] {
        assert_eq!(
            mr_report(&mut tdx, out, data, subtype),
            status::OPERAND_INVALID,
            "{out:#x} {data:#x} {subtype}"
        );
    }
    let mut shared = [0u8; 1024];
    tdx.mem.read(0x20_000, &mut shared).unwrap();
    assert_eq!(shared, [0xEE; 1024]);
    // Before TDH.MR.FINALIZE there is nothing to report.
    tdx.module.mrtd_final = None;
    assert_eq!(
        mr_report(&mut tdx, 0x10_000, 0x10_400, 0),
        status::OPERAND_INVALID
    );
    assert_eq!(tdx.counters.mr_reports, 11);
}

// ----- TDG.VP.VMCALL --------------------------------------------------------------------------

#[test]
fn vmcall_with_r10_set_or_an_unknown_sub_function_is_refused() {
    let mut tdx = td();
    let mut vcpu = FakeVcpu::identity();
    vcpu.regs.rax = leaf::VP_VMCALL;
    vcpu.regs.r10 = 1;
    vcpu.regs.r11 = vmcall::CPUID;
    assert_eq!(tdcall(&mut tdx, &mut vcpu), None);
    assert_eq!(vcpu.regs.r10, vmcall::INVALID_OPERAND);
    for sub in [
        vmcall::HLT,
        vmcall::REQUEST_MMIO,
        vmcall::SETUP_EVENT_NOTIFY,
        0xFFFF,
    ] {
        let (stop, vcpu) = vmcall(&mut tdx, sub, [0; 4]);
        assert_eq!(
            (stop, vcpu.regs.r10),
            (None, VMCALL_SUBFUNC_UNSUPPORTED),
            "{sub:#x}"
        );
    }
}

#[test]
fn vmcall_cpuid_answers_the_hosts_cpuid() {
    let mut tdx = td();
    let (stop, vcpu) = vmcall(&mut tdx, vmcall::CPUID, [0, 0, 0, 0]);
    let want = std::arch::x86_64::__cpuid_count(0, 0);
    assert_eq!(stop, None);
    assert_eq!(vcpu.regs.r10, vmcall::SUCCESS);
    assert_eq!(
        (vcpu.regs.r12, vcpu.regs.r13, vcpu.regs.r14, vcpu.regs.r15),
        (
            u64::from(want.eax),
            u64::from(want.ebx),
            u64::from(want.ecx),
            u64::from(want.edx)
        )
    );
}

/// Instruction.RDMSR/WRMSR reach the vCPU's local APIC in KVM, but for the registers
/// the CPU virtualizes for a TD and the read-only APIC base; every other MSR is
/// refused.
#[test]
fn vmcall_msr_reaches_the_local_apic_only() {
    let mut tdx = td();
    let (stop, vcpu) = vmcall(&mut tdx, vmcall::WRMSR, [0x830, 0x3_0000_4021, 0, 0]);
    assert_eq!((stop, vcpu.regs.r10), (None, vmcall::SUCCESS));
    assert_eq!(
        vcpu.msrs.get(&0x830),
        Some(&0x3_0000_4021),
        "the ICR, as written"
    );
    let mut v = FakeVcpu::identity();
    v.msrs.insert(0x6E0, 1234);
    v.regs.rax = leaf::VP_VMCALL;
    v.regs.r11 = vmcall::RDMSR;
    v.regs.r12 = 0x6E0;
    assert_eq!(tdcall(&mut tdx, &mut v), None);
    assert_eq!((v.regs.r10, v.regs.r11), (vmcall::SUCCESS, 1234));
    for (sub, msr) in [
        (vmcall::RDMSR, 0xC000_0080),
        (vmcall::WRMSR, 0xC000_0080),
        (vmcall::WRMSR, 0x80B),
        (vmcall::RDMSR, 0x820),
        (vmcall::WRMSR, 0x1B),
        (vmcall::WRMSR, 0x1_0000_0830),
    ] {
        let (stop, vcpu) = vmcall(&mut tdx, sub, [msr, 0, 0, 0]);
        assert_eq!(
            (stop, vcpu.regs.r10),
            (None, vmcall::INVALID_OPERAND),
            "{msr:#x}"
        );
        assert!(vcpu.msrs.is_empty(), "{msr:#x} never reached KVM");
    }
    assert_eq!(tdx.run.exits.get("apic-msr"), Some(&8));
}

#[test]
fn vmcall_report_fatal_error_stops_the_td() {
    let mut tdx = td();
    let (stop, _) = vmcall(&mut tdx, vmcall::REPORT_FATAL_ERROR, [0x0E, 0, 0, 0]);
    assert_eq!(stop, Some(Stop::TdFatalError { code: 0x0E }));
}

/// Instruction.IO: size, direction (1 = out), port, data.
fn io(
    tdx: &mut EmulatedTdx,
    size: u64,
    out: u64,
    port: u64,
    data: u64,
) -> (Option<Stop>, FakeVcpu) {
    vmcall(tdx, vmcall::IO, [size, out, port, data])
}

#[test]
fn vmcall_io_serves_hostcalls_and_reads_float_high() {
    let mut tdx = td();
    tdx.mmu
        .map_gpa(&tdx.mem, AREA / PAGE_SIZE_4K, 512, false)
        .unwrap();
    put_hostcall(&tdx.mem, AREA, &clock_request());
    let port = u64::from(HOSTCALL_PORT);
    let (stop, vcpu) = io(&mut tdx, 4, 1, port, AREA / PAGE_SIZE_4K);
    assert_eq!((stop, vcpu.regs.r10), (None, vmcall::SUCCESS));
    let reply = hostcall_reply(&tdx.mem, AREA);
    assert_eq!((reply.status, reply.result), (0, 24));
    put_hostcall(&tdx.mem, AREA, &exit_request(7));
    let (stop, _) = io(&mut tdx, 4, 1, port, AREA / PAGE_SIZE_4K);
    assert_eq!(stop, Some(Stop::AppExit(7)));
    let (stop, vcpu) = io(&mut tdx, 2, 0, 0x3F8, 0);
    assert_eq!(
        (stop, vcpu.regs.r10, vcpu.regs.r11),
        (None, vmcall::SUCCESS, 0xFFFF)
    );
    // Each call is two exits of the I/O kind: the doorbell's `out` and the
    // Instruction.IO it carries.
    assert_eq!(tdx.run.exits.get("io"), Some(&6));
}

#[test]
fn malformed_vmcall_io_is_refused_or_stops_the_td() {
    let mut tdx = td();
    let port = u64::from(HOSTCALL_PORT);
    for (size, out, port) in [
        (3, 1, port),
        (4, 2, port),
        (4, 1, 0x1_0000),
        (4, 1, 0x80),
        (2, 1, port),
    ] {
        let (stop, vcpu) = io(&mut tdx, size, out, port, AREA / PAGE_SIZE_4K);
        assert_eq!(
            (stop, vcpu.regs.r10),
            (None, vmcall::INVALID_OPERAND),
            "{size} {out} {port:#x}"
        );
    }
    // The area is private memory: the protocol is broken.
    let (stop, _) = io(&mut tdx, 4, 1, port, AREA / PAGE_SIZE_4K);
    assert!(matches!(stop, Some(Stop::ProtocolViolation(_))));
}

fn map_gpa(tdx: &mut EmulatedTdx, gpa: u64, size: u64) -> FakeVcpu {
    let (stop, vcpu) = vmcall(tdx, vmcall::MAP_GPA, [gpa, size, 0, 0]);
    assert_eq!(stop, None);
    vcpu
}

#[test]
fn map_gpa_converts_both_ways() {
    let mut tdx = td();
    let vcpu = map_gpa(&mut tdx, 0x40_0000 | shared_bit(), 0x40_0000);
    assert_eq!(vcpu.regs.r10, vmcall::SUCCESS);
    assert!(tdx.mmu.is_shared(0x400, 0x400));
    let vcpu = map_gpa(&mut tdx, 0x40_0000, 0x1000);
    assert_eq!(vcpu.regs.r10, vmcall::SUCCESS);
    assert_eq!(tdx.mmu.attribute(0x400), Some(Kind::Private));
    assert_eq!(tdx.counters.map_gpa_calls, 2);
}

#[test]
fn map_gpa_answers_retry_with_the_next_gpa_when_it_stops_early() {
    let mut tdx = td();
    tdx.map_gpa_budget = Some(16);
    let start = 0x40_0000 | shared_bit();
    let vcpu = map_gpa(&mut tdx, start, 0x20_0000);
    assert_eq!(vcpu.regs.r10, vmcall::RETRY);
    assert_eq!(vcpu.regs.r11, start + 16 * PAGE_SIZE_4K);
    assert!(tdx.mmu.is_shared(0x400, 16) && !tdx.mmu.is_shared(0x410, 1));
    assert_eq!(tdx.counters.map_gpa_retries, 1);
}

#[test]
fn malformed_map_gpa_is_refused() {
    let mut tdx = td();
    let converted = tdx.mmu.stats().map_gpa_pages;
    let s = shared_bit();
    for (gpa, size, want) in [
        (0x40_0000, 0, vmcall::INVALID_OPERAND),
        (!0xFFF, 0x2000, vmcall::INVALID_OPERAND),
        (1 << EMULATED_TDX_GPAW, 0x1000, vmcall::INVALID_OPERAND),
        (s - 0x1000, 0x2000, vmcall::INVALID_OPERAND),
        (64 << 20, 0x1000, vmcall::INVALID_OPERAND),
        (0x40_0800, 0x1000, vmcall::ALIGN_ERROR),
        (0x40_0000, 0x800, vmcall::ALIGN_ERROR),
    ] {
        let vcpu = map_gpa(&mut tdx, gpa, size);
        assert_eq!(vcpu.regs.r10, want, "{gpa:#x} {size:#x}");
    }
    assert_eq!(
        tdx.mmu.stats().map_gpa_pages,
        converted,
        "nothing converted"
    );
}

/// A GetQuote buffer at shared page 0x20 with `header` and `body`.
fn buffer(tdx: &EmulatedTdx, header: &QuoteBufHeader, body: &[u8]) {
    tdx.mem.write(0x20_000, header.as_bytes()).unwrap();
    tdx.mem.write(0x20_000 + HEADER_SIZE as u64, body).unwrap();
}

fn header_at(tdx: &EmulatedTdx) -> QuoteBufHeader {
    let mut raw = [0u8; HEADER_SIZE];
    tdx.mem.read(0x20_000, &mut raw).unwrap();
    QuoteBufHeader::read_from_bytes(&raw).unwrap()
}

fn quote_request(in_len: u32) -> QuoteBufHeader {
    QuoteBufHeader {
        version: get_quote::VERSION,
        status: 0,
        in_len,
        out_len: 0,
    }
}

fn get_quote(tdx: &mut EmulatedTdx, gpa: u64, size: u64) -> u64 {
    let (stop, vcpu) = vmcall(tdx, vmcall::GET_QUOTE, [gpa, size, 0, 0]);
    assert_eq!(stop, None);
    vcpu.regs.r10
}

#[test]
fn get_quote_turns_a_td_report_into_a_quote_and_refuses_anything_else() {
    let mut tdx = td();
    assert_eq!(mr_report(&mut tdx, 0x10_000, 0x10_400, 0), status::SUCCESS);
    let mut report = [0u8; TDREPORT_SIZE];
    tdx.mem.read(0x10_000, &mut report).unwrap();
    let gpa = 0x20_000 | shared_bit();

    buffer(&tdx, &quote_request(1024), &report);
    assert_eq!(get_quote(&mut tdx, gpa, 0x10_000), vmcall::SUCCESS);
    let h = header_at(&tdx);
    assert_eq!((h.version, h.status), (1, get_quote::status::SUCCESS));
    let mut quote = vec![0u8; h.out_len as usize];
    tdx.mem
        .read(0x20_000 + HEADER_SIZE as u64, &mut quote)
        .unwrap();
    let quote = Quote::parse(&quote).expect("a quote");
    assert_eq!(quote.body.mr_td, [7; 48]);

    // Buffers the VMM refuses outright.
    for (gpa, size) in [
        (0x20_000, 0x1000),
        (0x20_800 | shared_bit(), 0x1000),
        (gpa, 0),
        (gpa, 0x1800),
        (0x10_000 | shared_bit(), 0x1000),
        (gpa, 0x20_000),
        ((64 << 20) | shared_bit(), 0x1000),
    ] {
        assert_eq!(
            get_quote(&mut tdx, gpa, size),
            vmcall::INVALID_OPERAND,
            "{gpa:#x} {size:#x}"
        );
    }

    // Requests the quoting service answers with an error status.
    let mut flipped = report;
    flipped[0x210] ^= 1;
    for (header, body) in [
        (
            QuoteBufHeader {
                version: 2,
                ..quote_request(1024)
            },
            &report[..],
        ),
        (quote_request(0x1_0000), &report[..]),
        (quote_request(1024), &flipped[..]),
        (quote_request(1000), &report[..1000]),
    ] {
        buffer(&tdx, &header, body);
        assert_eq!(get_quote(&mut tdx, gpa, 0x1000), vmcall::SUCCESS);
        let h = header_at(&tdx);
        assert_eq!(
            (h.status, h.out_len),
            (get_quote::status::ERROR, 0),
            "{header:?}"
        );
    }

    // No keys, or no quoting service: unavailable.
    tdx.quoting.as_mut().unwrap().keys =
        LazyKeys::new("no keys", Box::new(|| Err("none here".into())));
    buffer(&tdx, &quote_request(1024), &report);
    assert_eq!(get_quote(&mut tdx, gpa, 0x10_000), vmcall::SUCCESS);
    assert_eq!(
        header_at(&tdx).status,
        get_quote::status::SERVICE_UNAVAILABLE
    );
    tdx.quoting = None;
    buffer(&tdx, &quote_request(1024), &report);
    assert_eq!(get_quote(&mut tdx, gpa, 0x10_000), vmcall::SUCCESS);
    assert_eq!(
        header_at(&tdx).status,
        get_quote::status::SERVICE_UNAVAILABLE
    );
    assert_eq!(tdx.counters.get_quotes, 1 + 7 + 4 + 2);
}

// ----- #UD for TDCALL, other doorbells, memory faults -------------------------------------

#[test]
fn a_tdcall_kvm_cannot_emulate_becomes_a_ud_for_the_firmware() {
    let mut tdx = td();
    tdx.mem.write(0x10_100, &[0x66, 0x0F, 0x01, 0xCC]).unwrap();
    let mut vcpu = FakeVcpu::identity();
    vcpu.regs.rip = 0x10_100;
    assert_eq!(
        handle_exit(&mut tdx, &mut vcpu, Exit::InternalError).unwrap(),
        None
    );
    assert_eq!(vcpu.injected, vec![6]);
    assert_eq!(tdx.run.exits.get("tdcall-ud"), Some(&1));
    // Any other instruction, or an unmapped RIP, is KVM's failure.
    vcpu.regs.rip = 0x10_104;
    assert!(handle_exit(&mut tdx, &mut vcpu, Exit::InternalError).is_err());
    let mut unmapped = FakeVcpu::with_walk(|_| None);
    assert!(handle_exit(&mut tdx, &mut unmapped, Exit::InternalError).is_err());
    assert_eq!(vcpu.injected, vec![6]);
}

#[test]
fn snp_doorbells_on_tdx_end_the_run() {
    let mut tdx = td();
    for bell in [Doorbell::Pvalidate, Doorbell::Rmpadjust, Doorbell::Vmgexit] {
        let mut vcpu = FakeVcpu::identity();
        assert!(
            handle_exit(&mut tdx, &mut vcpu, Exit::Doorbell(bell)).is_err(),
            "{bell:?}"
        );
    }
}

#[test]
fn private_accesses_to_unaccepted_memory_stop_the_td() {
    let mut tdx = td();
    let mut data = [0u8; 8];
    let mut vcpu = FakeVcpu::identity();
    let stop = handle_exit(
        &mut tdx,
        &mut vcpu,
        Exit::MmioRead {
            gpa: 0x50_000,
            data: &mut data,
        },
    )
    .unwrap();
    assert_eq!(
        stop,
        Some(Stop::MemoryViolation {
            gpa: 0x50_000,
            view: View::Private,
            rule: crate::mmu::tdx::rule::NOT_ACCEPTED
        })
    );
    // The added page is reachable: the access completes.
    tdx.mem.write(0x10_000, b"added!!!").unwrap();
    let stop = handle_exit(
        &mut tdx,
        &mut vcpu,
        Exit::MmioRead {
            gpa: 0x10_000,
            data: &mut data,
        },
    )
    .unwrap();
    assert_eq!((stop, &data), (None, b"added!!!"));
    // A shared access to a shared page maps it.
    let gpa = 0x20_000 | shared_bit();
    let stop = handle_exit(
        &mut tdx,
        &mut vcpu,
        Exit::MmioWrite {
            gpa,
            data: b"shared",
        },
    )
    .unwrap();
    assert_eq!(stop, None);
    assert_eq!(tdx.mmu.reachable(0x20), (false, true));
}

// ----- the launch (needs /dev/kvm) -------------------------------------------------------

/// `--cpus 3`: three vCPUs with x2APIC ids 0, 1 and 2, all runnable, with the same
/// CPUID and the TD vCPU's initial registers, ESI each one's index; TDG.VP.INFO and
/// the parameter page say three.
#[test]
fn a_launch_of_three_vcpus_starts_them_at_the_reset_vector() {
    use crate::platform::launch::LaunchConfig;
    use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE};
    use nacre_loader::load_image;
    use nacre_shared_abi::boot::{host_cpus, PlatformKind};
    use nacre_shared_abi::layout::TDX_RESET_VECTOR;
    let files = crate::cli::package::file_tree("hello", &[]).unwrap();
    let bytes =
        crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, false).unwrap();
    let image = load_image(&bytes, PlatformKind::Tdx).unwrap();
    let config = LaunchConfig {
        cpus: 3,
        ..LaunchConfig::new(image.min_memory.max(128 << 20))
    };
    let mut vm = <EmulatedTdx as Platform>::launch(&image, &config).expect("a launch");
    assert_eq!(vm.vcpus.len(), 3);
    let bsp = &vm.vcpus[0];
    let regs = bsp.get_regs().unwrap();
    let sregs = bsp.get_sregs().unwrap();
    let cpuid = bsp.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
    assert_eq!((regs.rip, regs.rbx), (TDX_RESET_VECTOR, 48));
    for (index, vcpu) in vm.vcpus.iter().enumerate() {
        let r = vcpu.get_regs().unwrap();
        assert_eq!(r.rsi, index as u64, "vCPU {index}");
        assert_eq!(kvm_bindings::kvm_regs { rsi: 0, ..r }, regs, "vCPU {index}");
        let s = vcpu.get_sregs().unwrap();
        assert_eq!(
            (s.cs, s.ds, s.ss, s.cr0, s.cr3, s.cr4, s.efer),
            (sregs.cs, sregs.ds, sregs.ss, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer),
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
        let lapic = vcpu.get_lapic().unwrap();
        assert_eq!(lapic.regs[0x23] as u8, index as u8, "vCPU {index}");
    }
    let mut page = [0u8; 4096];
    vm.platform
        .memory()
        .read(image.param_gpa, &mut page)
        .unwrap();
    assert_eq!(host_cpus(&page), Ok(3));
    // TDG.VP.INFO on vCPU 2.
    let mut vcpu = FakeVcpu::identity();
    vcpu.index = 2;
    vcpu.regs.rax = leaf::VP_INFO;
    let stop = handle_exit(
        &mut *vm.platform,
        &mut vcpu,
        Exit::Doorbell(Doorbell::Tdcall),
    );
    assert_eq!(stop.expect("TDG.VP.INFO"), None);
    assert_eq!((vcpu.regs.r8, vcpu.regs.r9), ((3 << 32) | 3, 2));
}
