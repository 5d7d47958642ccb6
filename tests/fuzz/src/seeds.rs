//! The seed corpus of every target, made from the repository's own fixtures: the
//! requests the firmware and the unit tests make, the loader's test ELFs, the real
//! evidence of `tests/vectors` (re-encoded, never copied), and evidence, collateral
//! and CRLs of freshly made emulated key hierarchies.
//!
//! `tests/seeds.rs` writes them to `corpus/TARGET/seed-NAME` (with
//! `NACRE_FUZZ_WRITE_SEEDS=1`) and checks the committed corpus against them. Seeds
//! whose format reads zeros past the end are stored without their trailing zeros.

use std::path::Path;
use std::time::{Duration, SystemTime};

use nacre_host::emulated::snp::keys::EmulatedSnpKeys;
use nacre_host::emulated::tdx::keys::EmulatedTdxKeys;
use nacre_host::emulated::tdx::module::EmulatedTdxModule;
use nacre_host::emulated::tdx::quoting::QuotingEnclave;
use nacre_host::exits::tdx::tdcall::TdxModule;
use nacre_loader::filetree::FileTreeBuilder;
use nacre_loader::testelf;
use nacre_loader::{build_image, load_image, PackageInput, PlatformKind};
use nacre_shared_abi::boot::{
    set_host_cpus, ArgsBlob, HostRequest, MemoryMapEntry, HOST_REQUEST_OFFSET,
    MEMORY_MAP_TYPE_MEMORY,
};
use nacre_shared_abi::hostcall::{
    EvidenceKind, HostcallHeader, HostcallOp, HOSTCALL_PORT, POLL_ALL, TCGETS, TIOCGWINSZ,
};
use nacre_shared_abi::layout::{EMULATED_TDX_GPAW, PAGE_SIZE_4K};
use nacre_shared_abi::snp::ghcb::{exit_code, ioio, Ghcb, GhcbField};
use nacre_shared_abi::snp::guest_msg::{msg_type, GuestMsgHdr, ReportReq};
use nacre_shared_abi::snp::msr_protocol::{MsrPscOp, MsrRequest};
use nacre_shared_abi::snp::psc::{PageStateOp, PscEntry, PscHeader, PSC_MAX_ENTRIES};
use nacre_shared_abi::tdx::{leaf, vmcall, AcceptLevel};
use nacre_shared_abi::tdx_report::get_quote::{QuoteBufHeader, VERSION};
use nacre_verifier::evidence::{Endorsements, EvidenceFile};
use nacre_verifier::x509::Cert;
use nacre_verifier::{test_vectors, Evidence};
use zerocopy::IntoBytes;

use crate::{AREA, GHCB, REQ_PAGE, RSP_PAGE, TDX_SHARED};

/// One seed.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target it is for.
    pub target: &'static str,
    /// Its name (the file is `seed-NAME`).
    pub name: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether it comes out the same every time (seeds of freshly made emulated keys
    /// do not).
    pub reproducible: bool,
}

/// Little-endian writer of seed bytes.
#[derive(Debug, Default)]
struct W(Vec<u8>);

impl W {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// `b`, zero-padded to `n` bytes.
    fn padded(mut self, b: &[u8], n: usize) -> Self {
        let start = self.0.len();
        self.0.extend_from_slice(b);
        self.0.resize(start + n, 0);
        self
    }
}

/// `bytes` without trailing zeros (for formats that read zeros past the end).
fn trimmed(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

fn seed(target: &'static str, name: &'static str, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name,
        bytes,
        reproducible: true,
    }
}

fn psc_entry(gfn: u64, op: PageStateOp, huge: bool) -> u64 {
    PscEntry {
        cur_page: 0,
        gfn,
        op,
        huge,
    }
    .encode()
}

/// A PSC descriptor of `entries`, as the guest builds one.
fn psc_desc(entries: &[u64]) -> Vec<u8> {
    let header = PscHeader {
        cur_entry: 0,
        end_entry: (entries.len() - 1) as u16,
        reserved: 0,
    };
    let mut out = header.as_bytes().to_vec();
    for e in entries {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out
}

fn ghcb(code: u64, info1: u64, info2: u64) -> Ghcb {
    let mut g = Ghcb::new_zeroed();
    g.clear();
    g.set_exit(code, info1, info2);
    g
}

fn hostcall(op: HostcallOp, fd: u32, len: u64, arg: u64, arg2: u64) -> HostcallHeader {
    HostcallHeader {
        op: op as u32,
        fd,
        len,
        arg,
        arg2,
        ..Default::default()
    }
}

/// The hostcall requests the firmware makes, one of each operation.
fn hostcall_requests() -> Vec<(&'static str, HostcallHeader, Vec<u8>)> {
    let counts: Vec<u8> = [(1u32, 3u32), (60, 1), (0xFFFF_0001, 4)]
        .iter()
        .flat_map(|(nr, n)| [nr.to_le_bytes(), n.to_le_bytes()].concat())
        .collect();
    vec![
        (
            "write",
            hostcall(HostcallOp::Write, 1, 6, 0, 0),
            b"hello\n".to_vec(),
        ),
        ("read", hostcall(HostcallOp::Read, 0, 16, 0, 0), Vec::new()),
        (
            "exit",
            hostcall(HostcallOp::Exit, 0, counts.len() as u64, 3, 16),
            counts,
        ),
        (
            "clock",
            hostcall(HostcallOp::Clock, 0, 24, 0, 0),
            Vec::new(),
        ),
        (
            "sleep",
            hostcall(HostcallOp::Sleep, 0, 0, 1000, 0),
            Vec::new(),
        ),
        (
            "poll",
            hostcall(HostcallOp::Poll, 0, 0, POLL_ALL, 1_000_000),
            Vec::new(),
        ),
        (
            "terminal",
            hostcall(HostcallOp::Terminal, 1, 64, TCGETS, 0),
            Vec::new(),
        ),
        (
            "winsize",
            hostcall(HostcallOp::Terminal, 2, 8, TIOCGWINSZ, 0),
            Vec::new(),
        ),
        (
            "evidence",
            hostcall(
                HostcallOp::Evidence,
                0,
                0x4A0,
                EvidenceKind::SnpReport as u64,
                0,
            ),
            vec![0x2A; 0x4A0],
        ),
    ]
}

fn snp_ghcb() -> Vec<Seed> {
    let page = |g: &Ghcb| g.as_bytes().to_vec();
    let with = |g: Ghcb, header: &HostcallHeader, data: &[u8], request: &[u8]| {
        trimmed(
            W::default()
                .padded(&page(&g), 4096)
                .padded(header.as_bytes(), 64)
                .padded(data, 4096)
                .padded(request, 4096)
                .0,
        )
    };
    let none = HostcallHeader::default();
    let mut seeds = Vec::new();

    let mut psc = ghcb(exit_code::PSC, 0, 0);
    psc.sw_scratch = GHCB + 0x800;
    psc.set_valid(GhcbField::SwScratch);
    let desc = psc_desc(&[
        psc_entry(0x50, PageStateOp::Shared, false),
        psc_entry(0x51, PageStateOp::Shared, false),
        psc_entry(0x60, PageStateOp::Private, false),
        psc_entry(0x200, PageStateOp::Shared, true),
        psc_entry(0x200, PageStateOp::Psmash, true),
        psc_entry(0x200, PageStateOp::Private, true),
    ]);
    psc.shared_buffer[..desc.len()].copy_from_slice(&desc);
    seeds.push(seed("snp_ghcb", "psc", with(psc, &none, &[], &[])));

    for (name, header, data) in hostcall_requests() {
        let mut io = ghcb(
            exit_code::IOIO,
            (u64::from(HOSTCALL_PORT) << ioio::PORT_SHIFT) | ioio::SIZE_32,
            0,
        );
        io.rax = AREA / PAGE_SIZE_4K;
        io.set_valid(GhcbField::Rax);
        let name = match name {
            "write" => "ioio-write",
            "clock" => "ioio-clock",
            "exit" => "ioio-exit",
            _ => continue,
        };
        seeds.push(seed("snp_ghcb", name, with(io, &header, &data, &[])));
    }

    let mut rdmsr = ghcb(exit_code::MSR, 0, 0);
    rdmsr.rcx = 0x802;
    rdmsr.set_valid(GhcbField::Rcx);
    seeds.push(seed("snp_ghcb", "msr-read", with(rdmsr, &none, &[], &[])));
    let mut wrmsr = ghcb(exit_code::MSR, 1, 0);
    wrmsr.rcx = 0x6E0;
    wrmsr.rax = 0x1234_5678;
    wrmsr.rdx = 0x9;
    for f in [GhcbField::Rcx, GhcbField::Rax, GhcbField::Rdx] {
        wrmsr.set_valid(f);
    }
    seeds.push(seed("snp_ghcb", "msr-write", with(wrmsr, &none, &[], &[])));

    let hdr = GuestMsgHdr::new(msg_type::REPORT_REQ, 0x60, 1, 0);
    let request = W::default()
        .bytes(hdr.as_bytes())
        .padded(&[0x5A; 16], 0x60)
        .0;
    seeds.push(seed(
        "snp_ghcb",
        "guest-request",
        with(
            ghcb(exit_code::GUEST_REQUEST, REQ_PAGE, RSP_PAGE),
            &none,
            &[],
            &request,
        ),
    ));
    for (name, code) in [
        ("hv-features", exit_code::HV_FEATURES),
        ("terminate", exit_code::TERM_REQUEST),
        ("unknown-event", exit_code::AP_CREATION),
    ] {
        seeds.push(seed(
            "snp_ghcb",
            name,
            with(ghcb(code, 0x13, 0), &none, &[], &[]),
        ));
    }
    seeds
}

fn snp_psc() -> Vec<Seed> {
    let run = |budget: u8, fail: u8, reissues: u8, entries: &[u64]| {
        trimmed(
            W::default()
                .u8(budget)
                .u8(fail)
                .u8(reissues)
                .bytes(&psc_desc(entries))
                .0,
        )
    };
    use PageStateOp::{Private, Psmash, Shared, Unsmash};
    let mixed = [
        psc_entry(10, Private, false),
        psc_entry(11, Private, false),
        psc_entry(12, Private, false),
        psc_entry(13, Shared, false),
        psc_entry(15, Shared, false),
        psc_entry(512, Shared, true),
        psc_entry(1024, Shared, true),
        psc_entry(1536, Shared, false),
    ];
    let partial = [
        PscEntry {
            cur_page: 500,
            gfn: 512,
            op: Private,
            huge: true,
        }
        .encode(),
        psc_entry(1024, Private, false),
        psc_entry(1536, Private, true),
    ];
    let hints = [
        psc_entry(512, Psmash, true),
        psc_entry(1024, Unsmash, true),
        psc_entry(7, Shared, false),
    ];
    let full: Vec<u64> = (0..PSC_MAX_ENTRIES as u64)
        .map(|i| psc_entry(0x1000 + i, Private, false))
        .collect();
    vec![
        seed("snp_psc", "merged", run(0xFF, 0, 0, &mixed)),
        seed("snp_psc", "partial-2m", run(0xFF, 0, 0, &partial)),
        seed("snp_psc", "hints", run(0xFF, 0, 0, &hints)),
        seed("snp_psc", "budget", run(2, 0, 7, &mixed)),
        seed("snp_psc", "backend-fails", run(0xFF, 0b10, 2, &mixed)),
        seed("snp_psc", "full", run(40, 0, 7, &full)),
    ]
}

fn snp_msr_protocol() -> Vec<Seed> {
    let values = [
        MsrRequest::SevInfo.encode(),
        MsrRequest::Cpuid {
            leaf: 0x8000_001F,
            register: 1,
        }
        .encode(),
        MsrRequest::RegisterGhcb { gfn: 0x30 }.encode(),
        MsrRequest::PageStateChange {
            gfn: 0x50,
            op: MsrPscOp::Shared,
        }
        .encode(),
        MsrRequest::PageStateChange {
            gfn: 0x50,
            op: MsrPscOp::Private,
        }
        .encode(),
        MsrRequest::HvFeatures.encode(),
        MsrRequest::RegisterGhcb { gfn: 1 << 30 }.encode(),
        0x006,
        MsrRequest::Terminate { set: 3, code: 1 }.encode(),
    ];
    let all = values.iter().fold(W::default(), |w, v| w.u64(*v)).0;
    vec![
        seed("snp_msr_protocol", "session", all),
        seed(
            "snp_msr_protocol",
            "psc-outside-ram",
            W::default()
                .u64(
                    MsrRequest::PageStateChange {
                        gfn: 1 << 20,
                        op: MsrPscOp::Shared,
                    }
                    .encode(),
                )
                .0,
        ),
    ]
}

fn report_request(seq: u64, vmpck: u8, data: u8, vmpl: u32) -> Vec<u8> {
    let hdr = GuestMsgHdr::new(msg_type::REPORT_REQ, 0x60, seq, vmpck);
    let body = ReportReq {
        report_data: [data; 64],
        vmpl,
        key_sel: 0,
        rsvd: [0; 24],
    };
    W::default().bytes(hdr.as_bytes()).bytes(body.as_bytes()).0
}

fn snp_guest_message() -> Vec<Seed> {
    let sealed =
        |w: W, seq, vmpck, data, vmpl| w.u8(1).bytes(&report_request(seq, vmpck, data, vmpl));
    let raw_page = report_request(1, 0, 0x11, 0);
    vec![
        seed(
            "snp_guest_message",
            "sequence",
            sealed(sealed(W::default(), 1, 0, 0x11, 0), 3, 0, 0x22, 1).0,
        ),
        seed(
            "snp_guest_message",
            "other-vmpcks",
            sealed(sealed(W::default(), 1, 2, 0x33, 2), 1, 3, 0x44, 5).0,
        ),
        seed(
            "snp_guest_message",
            "replay",
            sealed(sealed(W::default(), 1, 0, 0x55, 0), 1, 0, 0x55, 0).0,
        ),
        seed(
            "snp_guest_message",
            "raw",
            W::default()
                .u8(0)
                .u16(raw_page.len() as u16)
                .bytes(&raw_page)
                .0,
        ),
    ]
}

const TDX_SHARED_BIT: u64 = 1 << (EMULATED_TDX_GPAW - 1);

fn tdcall(regs: [u64; 11]) -> W {
    regs.iter().fold(W::default(), |w, r| w.u64(*r))
}

fn vmcall_regs(sub: u64, r12: u64, r13: u64, r14: u64, r15: u64) -> [u64; 11] {
    [leaf::VP_VMCALL, 0, 0, 0, 0, 0, sub, r12, r13, r14, r15]
}

fn tdx_tdcall() -> Vec<Seed> {
    let quote_buf = QuoteBufHeader {
        version: VERSION,
        status: 0,
        in_len: 1024,
        out_len: 0,
    };
    let prefix = |w: W, budget: u64, quote_len: u32, header: &HostcallHeader| {
        w.u64(budget)
            .u32(quote_len)
            .padded(header.as_bytes(), 64)
            .padded(quote_buf.as_bytes(), 1100)
    };
    let shared_quote = TDX_SHARED.start * PAGE_SIZE_4K;
    let calls: Vec<(&'static str, [u64; 11])> = vec![
        ("vp-info", [leaf::VP_INFO, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        (
            "accept",
            [
                leaf::MEM_PAGE_ACCEPT,
                AcceptLevel::L4K.rcx(0x10_0000).unwrap_or(0),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
        ),
        (
            "accept-2m",
            [
                leaf::MEM_PAGE_ACCEPT,
                AcceptLevel::L2M.rcx(0).unwrap_or(0),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
        ),
        (
            "map-gpa",
            vmcall_regs(
                vmcall::MAP_GPA,
                0x10_0000 | TDX_SHARED_BIT,
                4 * PAGE_SIZE_4K,
                0,
                0,
            ),
        ),
        (
            "hostcall",
            vmcall_regs(
                vmcall::IO,
                4,
                1,
                u64::from(HOSTCALL_PORT),
                AREA / PAGE_SIZE_4K,
            ),
        ),
        (
            "get-quote",
            vmcall_regs(
                vmcall::GET_QUOTE,
                shared_quote | TDX_SHARED_BIT,
                8 * PAGE_SIZE_4K,
                0,
                0,
            ),
        ),
        ("cpuid", vmcall_regs(vmcall::CPUID, 0, 0, 0, 0)),
        ("rdmsr", vmcall_regs(vmcall::RDMSR, 0x802, 0, 0, 0)),
        ("wrmsr", vmcall_regs(vmcall::WRMSR, 0x6E0, 0x1000, 0, 0)),
        (
            "mr-report",
            [leaf::MR_REPORT, 0x10_000, 0x10_400, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            "fatal",
            vmcall_regs(vmcall::REPORT_FATAL_ERROR, 0x42, 0, 0, 0),
        ),
    ];
    let clock = hostcall(HostcallOp::Clock, 0, 24, 0, 0);
    let mut seeds: Vec<Seed> = calls
        .iter()
        .map(|(name, regs)| {
            let w = prefix(W::default(), 0, 3000, &clock);
            seed("tdx_tdcall", name, w.bytes(&tdcall(*regs).0).0)
        })
        .collect();
    // A session: several calls in a row, with a MapGPA budget.
    let mut w = prefix(W::default(), 16, 100, &clock);
    for (_, regs) in &calls[..9] {
        w = w.bytes(&tdcall(*regs).0);
    }
    seeds.push(seed("tdx_tdcall", "session", w.0));
    seeds
}

fn tdx_map_gpa() -> Vec<Seed> {
    let call = |w: W, gpa: u64, size: u64, budget: u16| w.u64(gpa).u64(size).u16(budget);
    vec![
        seed(
            "tdx_map_gpa",
            "to-shared-and-back",
            call(
                call(W::default(), 0x10_0000 | TDX_SHARED_BIT, 0x10_0000, 0),
                0x10_0000,
                0x10_0000,
                0,
            )
            .0,
        ),
        seed(
            "tdx_map_gpa",
            "retry",
            call(W::default(), TDX_SHARED_BIT, 0x20_0000, 100).0,
        ),
        seed(
            "tdx_map_gpa",
            "no-progress",
            call(W::default(), 0x8000 | TDX_SHARED_BIT, 0x1000, u16::MAX).0,
        ),
        seed(
            "tdx_map_gpa",
            "unaligned",
            call(W::default(), 0x8800, 0x1000, 0).0,
        ),
    ]
}

fn tdx_get_quote() -> Vec<Seed> {
    let header = QuoteBufHeader {
        version: VERSION,
        status: 0,
        in_len: 1024,
        out_len: 0,
    };
    let buffer = |gfn: u16, offset: u16, size: u32, answer: u32| {
        trimmed(
            W::default()
                .u16(gfn)
                .u16(offset)
                .u32(size)
                .u32(answer)
                .padded(header.as_bytes(), 1048)
                .0,
        )
    };
    let gfn = TDX_SHARED.start as u16;
    vec![
        seed("tdx_get_quote", "quote", buffer(gfn, 0, 0x8000, 5000)),
        seed(
            "tdx_get_quote",
            "quote-too-large",
            buffer(gfn, 0, 0x1000, 5000),
        ),
        seed(
            "tdx_get_quote",
            "service-error",
            buffer(gfn, 0, 0x2000, u32::MAX),
        ),
        seed(
            "tdx_get_quote",
            "private-buffer",
            buffer(0x10, 0, 0x1000, 100),
        ),
    ]
}

fn host_hostcall() -> Vec<Seed> {
    hostcall_requests()
        .into_iter()
        .map(|(name, header, data)| {
            let flags = u8::from(name == "evidence");
            seed(
                "hostcall",
                name,
                W::default()
                    .u8(flags)
                    .bytes(header.as_bytes())
                    .bytes(&data)
                    .0,
            )
        })
        .collect()
}

/// The smallest app and firmware the loader takes, made with the loader tests' ELF
/// writer (the image stores whole pages: small ELFs make a small image).
fn small_elfs(tdx: bool) -> (Vec<u8>, Vec<u8>) {
    use nacre_shared_abi::layout::{FIRMWARE_GPA, KERNEL_VA_BASE};
    let text = |vaddr: u64, paddr: u64, len: usize, seed: u8| testelf::Segment {
        p_type: 1,    // PT_LOAD
        flags: 0b101, // R+X
        vaddr,
        paddr,
        data: testelf::pattern(len, seed),
        memsz: len as u64,
    };
    let app = testelf::ElfSpec {
        e_type: 2,   // ET_EXEC
        machine: 62, // EM_X86_64
        entry: 0x40_1100,
        segments: vec![text(0x40_1100, 0x40_1100, 64, 0x90)],
    };
    let mut firmware = testelf::ElfSpec {
        e_type: 2,
        machine: 62,
        entry: KERNEL_VA_BASE + FIRMWARE_GPA + 0x10,
        segments: vec![text(KERNEL_VA_BASE + FIRMWARE_GPA, FIRMWARE_GPA, 64, 0x33)],
    };
    if tdx {
        firmware
            .segments
            .push(testelf::tdx_reset_segment(testelf::TDX_RESET_SEED));
    }
    (app.build(), firmware.build())
}

/// A small image of the loader tests' making, for both platforms or SEV-SNP only.
fn test_image(tdx: bool) -> Vec<u8> {
    let (app, firmware) = small_elfs(tdx);
    let tree = FileTreeBuilder::new(b"app")
        .and_then(|t| t.build())
        .expect("the smallest tree");
    build_image(&PackageInput {
        firmware_elf: &firmware,
        app_elf: &app,
        args: vec![b"app".to_vec(), b"one".to_vec()],
        env: vec![b"LANG=C".to_vec()],
        flags: 0,
        file_tree: &tree,
        debug: false,
    })
    .expect("the small ELFs package")
}

fn loader() -> Vec<Seed> {
    let mut pie = testelf::static_app_spec();
    pie.e_type = 3; // ET_DYN: static-pie.
    let (small_app, small_firmware) = small_elfs(false);
    let (_, small_tdx_firmware) = small_elfs(true);
    vec![
        seed("igvm_image", "snp-and-tdx", test_image(true)),
        seed("igvm_image", "snp-only", test_image(false)),
        seed("elf", "static-app", testelf::static_app()),
        seed("elf", "static-pie-app", pie.build()),
        seed("elf", "small-app", small_app),
        seed("elf", "firmware", small_firmware),
        seed("elf", "firmware-with-tdx-reset-page", small_tdx_firmware),
    ]
}

fn filetree() -> Vec<Seed> {
    let add = |w: W, file: bool, mode: u16, path: &[u8], data: &[u8]| {
        let w = w
            .u8(u8::from(file))
            .u16(mode)
            .u8(path.len() as u8)
            .bytes(path);
        if file {
            w.u16(data.len() as u16).bytes(data)
        } else {
            w
        }
    };
    let mut w = W::default().u8(0).u8(5).bytes(b"hello");
    w = add(w, false, 0o750, b"/etc", b"");
    w = add(w, true, 0o644, b"/etc/app.toml", b"x = 1\n");
    w = add(w, true, 0o600, b"/data/deep/a.bin", &[7; 300]);
    w = add(w, false, 0o700, b"/data", b"");
    w = add(w, true, 0o644, b"/etc/app.toml", b"again");
    w = add(w, true, 0o644, b"/proc/x", b"reserved");
    let built = w.0;

    let mut tree = FileTreeBuilder::new(b"hello").expect("a valid name");
    tree.add_file(b"/etc/app.toml", b"x = 1\n".to_vec(), 0o644)
        .expect("a path");
    tree.add_dir(b"/var/empty", 0o755).expect("a path");
    let path = b"/etc/app.toml";
    let raw = W::default()
        .u8(1)
        .u8(path.len() as u8)
        .bytes(path)
        .bytes(&tree.build().expect("a tree"))
        .0;
    vec![
        seed("filetree", "built", built),
        seed("filetree", "decoded", raw),
    ]
}

fn pem(label: &str, der: &[u8]) -> String {
    ::pem::encode(&::pem::Pem::new(label, der.to_vec()))
}

/// Seeds from the real evidence of `tests/vectors`, re-encoded.
fn vectors() -> Vec<Seed> {
    let report_hex = test_vectors::read("virtee-sev", "report_milan.hex");
    let report = nacre_verifier::decode_hex(&report_hex).expect("hex");
    let vcek_der = test_vectors::read("virtee-sev", "vcek_milan.der");
    let ask =
        Cert::from_der_or_pem(&test_vectors::read("virtee-sev", "milan_ask.pem")).expect("the ASK");
    let ark =
        Cert::from_der_or_pem(&test_vectors::read("virtee-sev", "milan_ark.pem")).expect("the ARK");
    let quote = test_vectors::read("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat");

    let snp = Evidence::parse(&report).expect("the report parses");
    let snp_file = EvidenceFile::to_json(
        "snp",
        &snp,
        &report,
        &Endorsements {
            vcek: Some(pem("CERTIFICATE", &vcek_der)),
            cert_chain: Some(pem("CERTIFICATE", ask.der()) + &pem("CERTIFICATE", ark.der())),
            crl: None,
            collateral: None,
        },
    );
    let tdx = Evidence::parse(&quote).expect("the quote parses");
    let tdx_file = EvidenceFile::to_json("tdx", &tdx, &quote, &Endorsements::default());
    let mut debug = report.clone();
    // POLICY (0x08): DEBUG.
    debug[0x0A] |= 0x08;
    let chain = pem("CERTIFICATE", ask.der()) + &pem("CERTIFICATE", ark.der());
    vec![
        seed("snp_report", "milan", report.clone()),
        seed(
            "snp_report",
            "milan-debug-hex",
            hex::encode(&debug).into_bytes(),
        ),
        seed("tdx_quote", "spr-e4-hex", hex::encode(&quote).into_bytes()),
        seed(
            "evidence_file",
            "snp",
            serde_json::to_vec_pretty(&snp_file).expect("JSON"),
        ),
        seed(
            "evidence_file",
            "tdx",
            serde_json::to_vec(&tdx_file).expect("JSON"),
        ),
        seed(
            "x509",
            "milan-vcek-pem",
            pem("CERTIFICATE", &vcek_der).into_bytes(),
        ),
        seed("x509", "milan-ask-der", ask.der().to_vec()),
        seed("x509", "milan-chain", chain.into_bytes()),
    ]
}

/// Seeds from emulated key hierarchies made now in `scratch` (not reproducible:
/// every hierarchy has keys of its own).
fn emulated(scratch: &Path) -> Vec<Seed> {
    let now = SystemTime::now();
    let at = now + Duration::from_secs(3600);
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let tdx_keys = EmulatedTdxKeys::load_or_create(&scratch.join("tdx")).expect("TDX keys");
    let mut module = EmulatedTdxModule::new(EMULATED_TDX_GPAW, 1 << 28).expect("a module");
    module.mrtd_final = Some([0x3C; 48]);
    let td_report = module.report(&[0x77; 64]).expect("a TDREPORT");
    let quote = QuotingEnclave::new()
        .quote(&tdx_keys, &module.report_key, &td_report)
        .expect("a quote");
    let collateral = tdx_keys.collateral(now).expect("collateral");
    let json = serde_json::to_vec(&collateral).expect("JSON");

    let snp_keys = EmulatedSnpKeys::load_or_create(&scratch.join("snp")).expect("SNP keys");
    let crl = snp_keys.crl(now).expect("a CRL");
    let chain = Cert::bundle_from_pem(snp_keys.cert_chain_pem().as_bytes()).expect("a chain");
    let ark = chain.last().expect("the ARK");

    // The same quote laid out as version 5, with a TDX 1.0 body and with a TDX 1.5
    // one (docs/specs.md 6.6): the signature no longer covers it, the layout is right.
    let v5 = |body_type: u16, extra: &[u8]| {
        let (header, rest) = quote.split_at(0x30);
        let (body, signed) = rest.split_at(584);
        let mut header = header.to_vec();
        header[..2].copy_from_slice(&5u16.to_le_bytes());
        W::default()
            .bytes(&header)
            .u16(body_type)
            .u32((584 + extra.len()) as u32)
            .bytes(body)
            .bytes(extra)
            .bytes(signed)
            .0
    };
    let mut seeds = vec![
        seed("tdx_quote", "emulated-v4", quote.clone()),
        seed("tdx_quote", "emulated-v5-tdx10", v5(2, &[])),
        seed("tdx_quote", "emulated-v5-tdx15", v5(3, &[0x15; 64])),
        seed(
            "collateral",
            "emulated",
            W::default()
                .u64(secs)
                .u32(quote.len() as u32)
                .bytes(&quote)
                .bytes(&json)
                .0,
        ),
        seed(
            "crl",
            "emulated-ark-der",
            W::default()
                .u16(ark.der().len() as u16)
                .bytes(ark.der())
                .bytes(crl.der())
                .0,
        ),
        seed(
            "crl",
            "emulated-ark-pem",
            W::default().u16(0).bytes(crl.pem().as_bytes()).0,
        ),
        seed("x509", "emulated-vcek", snp_keys.vcek_pem().into_bytes()),
        seed(
            "x509",
            "emulated-pck-chain",
            tdx_keys.pck_chain_pem().to_vec(),
        ),
    ];
    for s in &mut seeds {
        s.reproducible = false;
    }
    seeds
}

fn fw_psc() -> Vec<Seed> {
    let request = |gfn: u32, npages: u16, op: u8, allow_2m: bool| {
        W::default()
            .u32(gfn)
            .u16(npages)
            .u8(op)
            .u8(u8::from(allow_2m))
    };
    let step = |w: W, entries: u8, pages_2m: u16, flips: &[(u16, u8)]| {
        let w = w
            .u8(entries)
            .u16(pages_2m)
            .u8(0)
            .u8(0)
            .u8(flips.len() as u8);
        flips.iter().fold(w, |w, &(at, mask)| w.u16(at).u8(mask))
    };
    let mut partial = request(0x1000, 1024 + 7, 0, true);
    for _ in 0..6 {
        partial = step(partial, 3, 100, &[]);
    }
    // The second answer moves the third entry's GFN (byte 8 + 2 * 8 + 2 is in bits
    // 16..24 of entry 2).
    let hostile = step(
        step(request(0x100, 40, 1, false), 5, 0, &[]),
        2,
        0,
        &[(8 + 2 * 8 + 2, 0x10)],
    );
    let refused = step(request(0x100, 4, 0, false), 1, 0, &[])
        .u8(1)
        .u16(0)
        .u8(0)
        .u8(1)
        .u64(0x100 << 32)
        .u8(0);
    vec![
        seed("fw_psc", "honest", request(0x200, 600, 0, true).0),
        seed("fw_psc", "partial-progress", partial.0),
        seed("fw_psc", "rewritten-entry", hostile.0),
        seed("fw_psc", "host-error", refused.0),
        seed(
            "fw_psc",
            "many-descriptors",
            step(request(1, 1023, 1, false), 200, 0, &[]).0,
        ),
    ]
}

fn fw_map_gpa() -> Vec<Seed> {
    let range = |page: u32, pages: u16, shared: bool| {
        W::default().u32(page).u16(pages).u8(u8::from(shared))
    };
    vec![
        seed(
            "fw_map_gpa",
            "retry-then-done",
            range(0x1000, 512, true)
                .u8(1)
                .u32(100)
                .u8(0)
                .u8(1)
                .u32(0)
                .u8(0)
                .u8(0)
                .0,
        ),
        seed(
            "fw_map_gpa",
            "retry-outside",
            range(0x1000, 512, true).u8(1).u32(600).u8(0).0,
        ),
        seed(
            "fw_map_gpa",
            "retry-without-shared-bit",
            range(0x1000, 512, true).u8(1).u32(10).u8(1).0,
        ),
        seed(
            "fw_map_gpa",
            "error",
            range(0x1000, 16, false)
                .u8(3)
                .u64(vmcall::INVALID_OPERAND)
                .0,
        ),
        seed(
            "fw_map_gpa",
            "stalls",
            (0..18)
                .fold(range(0x1000, 16, true), |w, _| w.u8(1).u32(0).u8(0))
                .0,
        ),
    ]
}

fn fw_boot_params() -> Vec<Seed> {
    let image = load_image(&test_image(true), PlatformKind::Snp).expect("the test image loads");
    let bi = image.boot_info;
    let mut param = [0u8; 4096];
    let ram = MemoryMapEntry {
        starting_gpa_page_number: 0,
        number_of_pages: (128 << 20) / PAGE_SIZE_4K,
        entry_type: MEMORY_MAP_TYPE_MEMORY,
        flags: 0,
        reserved: 0,
    };
    param[..24].copy_from_slice(ram.as_bytes());
    let plain = param;
    param[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128]
        .copy_from_slice(HostRequest::attest([0xA5; 64]).as_bytes());
    set_host_cpus(&mut param, 2);
    let strings: [&[u8]; 3] = [b"app", b"one", b"LANG=C"];
    let mut args = vec![0u8; ArgsBlob::encoded_len(strings.iter().copied())];
    ArgsBlob::encode(&strings[..2], &strings[2..], &mut args).expect("encodes");
    let params = |limit: u8, page: &[u8; 4096], args: &[u8]| {
        W::default()
            .u8(limit)
            .bytes(bi.as_bytes())
            .bytes(page)
            .bytes(args)
            .0
    };
    vec![
        seed("fw_boot_params", "snp", params(0, &plain, &args)),
        seed(
            "fw_boot_params",
            "tdx-attest-2-cpus",
            params(1, &param, &args),
        ),
    ]
}

fn fw_hostcall() -> Vec<Seed> {
    let exchange = |request: HostcallHeader, status: u64, result: u64| {
        let reply = HostcallHeader {
            status,
            result,
            ..request
        };
        W::default()
            .bytes(request.as_bytes())
            .bytes(reply.as_bytes())
    };
    let console = |w: W, areas: u8, len: u16| w.u8(0).u8(areas).u16(len);
    let mut seeds: Vec<Seed> = hostcall_requests()
        .into_iter()
        .filter(|(name, ..)| !["write", "exit", "evidence"].contains(name))
        .map(|(name, request, _)| {
            let result = match request.op {
                op if op == HostcallOp::Read as u32 => 10,
                op if op == HostcallOp::Clock as u32 => 24,
                op if op == HostcallOp::Terminal as u32 => {
                    nacre_shared_abi::hostcall::terminal_reply_size(request.arg).unwrap_or(0)
                }
                op if op == HostcallOp::Poll as u32 => 2,
                _ => 0,
            };
            seed(
                "fw_hostcall",
                name,
                console(exchange(request, 0, result), 0, 100).0,
            )
        })
        .collect();
    let write = hostcall(HostcallOp::Write, 2, 6, 0, 0);
    seeds.push(seed(
        "fw_hostcall",
        "short-writes",
        console(exchange(write, 0, 6), 1, 10)
            .u8(0)
            .u64(1000)
            .u8(0)
            .u64(2)
            .0,
    ));
    seeds.push(seed(
        "fw_hostcall",
        "errno",
        console(exchange(write, 28, 0), 0, 6).u8(1).u64(27).0,
    ));
    seeds
}

fn fw_guest_request() -> Vec<Seed> {
    let requests = W::default()
        .u8(0x11)
        .u8(0)
        .u8(0)
        .u8(0x22)
        .u8(1)
        .u8(0)
        .u8(0x33)
        .u8(0)
        .u8(0)
        .u8(0x44)
        .u8(2)
        .u8(1);
    let honest = |w: W| w.u8(0).u8(0).u8(0).u8(0);
    let busy = |w: W| w.u8(0).u8(1).u8(0).u8(0);
    vec![
        seed("fw_guest_request", "honest", requests.0.clone()),
        seed(
            "fw_guest_request",
            "busy-then-answer",
            honest(busy(busy(W(requests.0.clone())))).0,
        ),
        seed(
            "fw_guest_request",
            "stale-response",
            honest(W(requests.0.clone())).u8(0).u8(0).u8(2).u8(0).0,
        ),
        seed(
            "fw_guest_request",
            "old-sequence-number",
            W(requests.0.clone()).u8(0).u8(0).u8(1).u8(0).0,
        ),
        seed(
            "fw_guest_request",
            "flipped-tag",
            W(requests.0).u8(0).u8(0).u8(0).u8(1).u16(0).u8(1).0,
        ),
    ]
}

fn fw_quote_header() -> Vec<Seed> {
    let header = |status: u64, out_len: u32| {
        QuoteBufHeader {
            version: VERSION,
            status,
            in_len: 1024,
            out_len,
        }
        .as_bytes()
        .to_vec()
    };
    vec![
        seed("fw_quote_header", "quote", header(0, 4978)),
        seed("fw_quote_header", "in-flight", header(u64::MAX, 0)),
        seed("fw_quote_header", "error", header(1 << 63, 0)),
    ]
}

/// Every seed of every target; the emulated key hierarchies are made in `scratch`.
pub fn all(scratch: &Path) -> Vec<Seed> {
    [
        snp_ghcb(),
        snp_psc(),
        snp_msr_protocol(),
        snp_guest_message(),
        tdx_tdcall(),
        tdx_map_gpa(),
        tdx_get_quote(),
        host_hostcall(),
        loader(),
        filetree(),
        vectors(),
        emulated(scratch),
        fw_psc(),
        fw_map_gpa(),
        fw_boot_params(),
        fw_hostcall(),
        fw_guest_request(),
        fw_quote_header(),
    ]
    .into_iter()
    .flatten()
    .collect()
}
