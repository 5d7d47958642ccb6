//! What nacre's fuzz targets share: the platforms they drive (built as the unit tests
//! build them, with no `/dev/kvm`), snapshots for their invariants, fakes of the
//! services behind the narrow interfaces, and a cursor over the fuzzer's bytes.
//!
//! The targets are in `fuzz_targets/`, one per decoder of untrusted bytes; the seeds
//! they start from are made by [`seeds`] (`tests/seeds.rs` writes and checks the
//! committed corpus). See `README.md` ("Fuzzing") and `docs/threat-model.md`.

pub mod seeds;

use std::sync::Once;

use nacre_host::emulated::snp::sp::{EmulatedSecurityProcessor, EmulatedSp, ReportSigner};
use nacre_host::emulated::tdx::module::EmulatedTdxModule;
use nacre_host::emulated::LazyKeys;
use nacre_host::exits::tdx::get_quote::{QuoteRefusal, QuotingService};
use nacre_host::mmu::attributes::{Attributes, Kind};
use nacre_host::platform::emulated_snp::EmulatedSnp;
use nacre_host::platform::emulated_tdx::EmulatedTdx;
use nacre_host::platform::hostcall::HostileHostcall;
use nacre_host::vmm::memory::GuestMemory;
use nacre_shared_abi::hostcall::{HostcallHeader, HostcallOp, HOSTCALL_AREA_SIZE};
use nacre_shared_abi::layout::{EMULATED_TDX_GPAW, PAGE_SIZE_4K};
use nacre_shared_abi::snp::guest_msg::REPORT_SIZE;

/// Guest RAM of the platforms the host-side targets drive: 4 MiB, the last 2 MiB of
/// which are the hostcall area, as the firmware lays it out.
pub const RAM: u64 = 4 << 20;
/// The hostcall area (the last 2 MiB of RAM), shared.
pub const AREA: u64 = RAM - HOSTCALL_AREA_SIZE;
/// The registered GHCB of vCPU 0 on SEV-SNP, shared.
pub const GHCB: u64 = 0x30_000;
/// The guest-request page pair on SEV-SNP, shared.
pub const REQ_PAGE: u64 = 0x40_000;
/// See [`REQ_PAGE`].
pub const RSP_PAGE: u64 = 0x41_000;
/// Pages `SHARED_GFNS` are shared on TDX besides the hostcall area (a GetQuote buffer's
/// home, as the firmware's).
pub const TDX_SHARED: std::ops::Range<u64> = 0x20..0x40;

/// Make the console of the process harmless once: stdin and stdout become
/// `/dev/null`, so that hostcalls the fuzzer makes read nothing and print nothing
/// (libFuzzer reports on stderr, which stays).
pub fn quiet_console() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        else {
            return;
        };
        use std::os::fd::AsRawFd;
        for fd in [0, 1] {
            // SAFETY: dup2 onto the standard descriptors of this process; `null` is an
            // open descriptor we own for the duration of the call.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    });
}

/// Keep a hostcall request the fuzzer wrote from blocking, printing or taking long:
/// writes to the host's stderr go to its stdout (`/dev/null`, [`quiet_console`]),
/// polls do not wait, and an exit's syscall counts take at most 64 KiB (the firmware
/// sends a few KiB; megabytes of them only slow the fuzzer down). Sleeps return at
/// once through [`HostileHostcall::EarlyWake`], which every platform here sets.
/// Requests the checks refuse stay as they were.
pub fn tame(h: &mut HostcallHeader) {
    const EXIT_DATA: u64 = 64 << 10;
    if h.op == HostcallOp::Write as u32 && h.fd == 2 {
        h.fd = 1;
    }
    if h.op == HostcallOp::Poll as u32 {
        h.arg2 = 0;
    }
    if h.op == HostcallOp::Exit as u32 && h.check_request().is_ok() && h.len > EXIT_DATA {
        h.len = EXIT_DATA;
        h.arg2 = h.arg2.min(EXIT_DATA);
    }
}

/// [`tame`] the hostcall header at `gpa` of `mem`.
pub fn tame_at(mem: &GuestMemory, gpa: u64) {
    use zerocopy::{FromBytes, IntoBytes};
    let mut raw = [0u8; 64];
    if mem.read(gpa, &mut raw).is_err() {
        return;
    }
    let Ok(mut h) = HostcallHeader::read_from_bytes(&raw) else {
        return;
    };
    tame(&mut h);
    let _ = mem.write(gpa, h.as_bytes());
}

/// A report signer that does not sign (the targets check decoding, not ECDSA).
#[derive(Debug)]
pub struct UnsignedReports;

impl ReportSigner for UnsignedReports {
    fn sign_report(&self, report: &mut [u8; REPORT_SIZE]) {
        report[0x2A0..].fill(0);
    }
    fn tcb(&self) -> u64 {
        0x7308_0000_0000_0003
    }
    fn chip_id(&self) -> [u8; 64] {
        [0xC1; 64]
    }
}

/// An emulated security processor with an unsigned key hierarchy, launched.
pub fn security_processor() -> EmulatedSecurityProcessor {
    let mut sp = EmulatedSp::new().expect("the kernel's random numbers");
    sp.launch_finish([&[0u8; 4096]]);
    EmulatedSecurityProcessor {
        sp,
        signer: LazyKeys::new(
            "fuzz signer",
            Box::new(|| Ok(Box::new(UnsignedReports) as Box<dyn ReportSigner + Send>)),
        ),
    }
}

/// The emulated SEV-SNP platform of the host-side targets: [`RAM`] bytes, vCPU 0's
/// GHCB at [`GHCB`] registered and shared, the hostcall area and the guest-request
/// pages shared, sleeps that return at once (and no security processor: see
/// [`security_processor`]).
pub fn snp_platform() -> EmulatedSnp {
    quiet_console();
    let mut snp = EmulatedSnp::new(GuestMemory::new(RAM).expect("a memfd"));
    for (gpa, len) in [
        (GHCB, PAGE_SIZE_4K),
        (REQ_PAGE, 2 * PAGE_SIZE_4K),
        (AREA, HOSTCALL_AREA_SIZE),
    ] {
        snp.mmu
            .set_attributes(
                &snp.mem,
                gpa / PAGE_SIZE_4K,
                len / PAGE_SIZE_4K,
                Kind::Shared,
            )
            .expect("guest memory")
            .expect("inside RAM");
    }
    snp.ghcb[0].gpa = Some(GHCB);
    snp.ghcb[0].msr = GHCB;
    snp.host.hostile = Some(HostileHostcall::EarlyWake);
    snp
}

/// The SEV-SNP platform's page attributes at one moment.
#[derive(Debug, Clone)]
pub struct SnpAttributes {
    attrs: Attributes,
    conversions: u64,
}

impl SnpAttributes {
    /// The attributes of `snp` now.
    pub fn of(snp: &EmulatedSnp) -> Self {
        Self {
            attrs: snp.mmu.inspect(|a, _, _| a.clone()),
            conversions: snp.mmu.stats().conversions,
        }
    }

    /// The attribute of `gfn` then.
    pub fn get(&self, gfn: u64) -> Option<Kind> {
        self.attrs.get(gfn)
    }

    /// The pages whose attribute `snp` changed since, with their new attribute (none
    /// without a look at each page when the MMU counted no conversion).
    pub fn changed(&self, snp: &EmulatedSnp) -> Vec<(u64, Kind)> {
        if snp.mmu.stats().conversions == self.conversions {
            return Vec::new();
        }
        let now = Self::of(snp);
        changed_pages(|g| self.get(g), |g| now.get(g))
    }
}

/// A quoting service whose answer the fuzzer chose: a quote of `len` bytes, or a
/// refusal.
#[derive(Debug, Clone, Copy)]
pub struct FakeQuoting {
    /// `Ok(len)`: a quote of `len` bytes of 0x51.
    pub answer: Result<usize, QuoteRefusal>,
    /// What the service was given, last.
    pub seen: Option<usize>,
}

impl QuotingService for FakeQuoting {
    fn quote(&mut self, td_report: &[u8]) -> Result<Vec<u8>, QuoteRefusal> {
        self.seen = Some(td_report.len());
        self.answer.map(|len| vec![0x51; len])
    }
}

/// The emulated TDX platform of the host-side targets: [`RAM`] bytes, page 0x10 added
/// (private, accepted), pages [`TDX_SHARED`] and the hostcall area shared, a finalized
/// MRTD, and no quoting service (the targets plug in a [`FakeQuoting`]).
pub fn tdx_platform() -> EmulatedTdx {
    quiet_console();
    let module = EmulatedTdxModule::new(EMULATED_TDX_GPAW, 0).expect("a report key");
    let mut tdx = EmulatedTdx::new(GuestMemory::new(RAM).expect("a memfd"), module);
    tdx.add_page(0x10_000, false).expect("page 0x10 added");
    tdx.module.mrtd_final = Some([7; 48]);
    for (gfn, n) in [
        (TDX_SHARED.start, TDX_SHARED.end - TDX_SHARED.start),
        (AREA / PAGE_SIZE_4K, HOSTCALL_AREA_SIZE / PAGE_SIZE_4K),
    ] {
        tdx.mmu
            .map_gpa(&tdx.mem, gfn, n, false)
            .expect("guest memory")
            .expect("inside RAM");
    }
    tdx.host.hostile = Some(HostileHostcall::EarlyWake);
    tdx
}

/// The attributes of the TDX platform's pages, a byte each (see [`TdxAttributes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxAttributes(Vec<u8>);

impl TdxAttributes {
    /// The attributes of `tdx` now: 64 pages the MMU holds shared (most of RAM here:
    /// the hostcall area) in one look, the others a page at a time.
    pub fn of(tdx: &EmulatedTdx) -> Self {
        let mut bytes = vec![0u8; (RAM / PAGE_SIZE_4K) as usize];
        for (first, chunk) in (0..).step_by(64).zip(bytes.chunks_mut(64)) {
            if tdx.mmu.is_shared(first, chunk.len() as u64) {
                chunk.fill(2);
                continue;
            }
            for (gfn, byte) in (first..).zip(chunk.iter_mut()) {
                *byte = match tdx.mmu.attribute(gfn) {
                    None => 0,
                    Some(Kind::Private) => 1,
                    Some(Kind::Shared) => 2,
                };
            }
        }
        Self(bytes)
    }

    /// The attribute of `gfn`.
    pub fn get(&self, gfn: u64) -> Option<Kind> {
        match self.0.get(usize::try_from(gfn).ok()?)? {
            1 => Some(Kind::Private),
            2 => Some(Kind::Shared),
            _ => None,
        }
    }

    /// The pages whose attribute differs in `now`, with their attribute there.
    pub fn changed(&self, now: &Self) -> Vec<(u64, Option<Kind>)> {
        differences(&self.0, &now.0)
            .into_iter()
            .flat_map(|(start, end)| start as u64..end as u64)
            .filter(|&gfn| self.get(gfn) != now.get(gfn))
            .map(|gfn| (gfn, now.get(gfn)))
            .collect()
    }
}

/// The byte ranges (start, end) where `a` and `b` (of one length) differ, to 64
/// bytes: found by halving, so that equal memory costs one comparison (a comparison
/// of slices; comparing byte by byte would have libFuzzer trace every byte).
pub fn differences(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    fn walk(a: &[u8], b: &[u8], at: usize, out: &mut Vec<(usize, usize)>) {
        if a == b {
            return;
        }
        if a.len() <= 64 {
            match out.last_mut() {
                Some(last) if last.1 == at => last.1 = at + a.len(),
                _ => out.push((at, at + a.len())),
            }
            return;
        }
        let half = a.len() / 2;
        walk(&a[..half], &b[..half], at, out);
        walk(&a[half..], &b[half..], at + half, out);
    }
    assert_eq!(a.len(), b.len());
    let mut out = Vec::new();
    walk(a, b, 0, &mut out);
    out
}

/// The pages whose attribute differs between `before` and `after` (both over
/// [`RAM`]), with their new attribute.
pub fn changed_pages(
    before: impl Fn(u64) -> Option<Kind>,
    after: impl Fn(u64) -> Option<Kind>,
) -> Vec<(u64, Kind)> {
    (0..RAM / PAGE_SIZE_4K)
        .filter_map(|gfn| {
            let now = after(gfn)?;
            (before(gfn) != Some(now)).then_some((gfn, now))
        })
        .collect()
}

/// A cursor over the fuzzer's bytes: fixed-size reads that run out into zeros, so
/// that every input means something and short inputs are cheap.
#[derive(Debug, Clone)]
pub struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// The next `N` bytes (zeros past the end).
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.rest.len());
        out[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        out
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// The next `n` bytes, or what is left.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// What the verifier targets check against: the vendors' built-in roots and the real
/// evidence of `tests/vectors` (read at run time, never copied into the corpus).
pub mod verifier {
    use std::sync::OnceLock;
    use std::time::SystemTime;

    use nacre_verifier::{test_vectors, Cert, TrustAnchors};

    /// AMD's and Intel's built-in roots.
    pub fn roots() -> &'static TrustAnchors {
        static ROOTS: OnceLock<TrustAnchors> = OnceLock::new();
        ROOTS.get_or_init(|| TrustAnchors::built_in().expect("the built-in roots decode"))
    }

    /// The real Milan VCEK (`virtee-sev/vcek_milan.der`).
    pub fn milan_vcek() -> &'static Cert {
        static VCEK: OnceLock<Cert> = OnceLock::new();
        VCEK.get_or_init(|| {
            Cert::from_der(&test_vectors::read("virtee-sev", "vcek_milan.der"))
                .expect("the Milan VCEK decodes")
        })
    }

    /// The real Milan ASK (`virtee-sev/milan_ask.pem`).
    pub fn milan_ask() -> &'static Cert {
        static ASK: OnceLock<Cert> = OnceLock::new();
        ASK.get_or_init(|| {
            Cert::from_der_or_pem(&test_vectors::read("virtee-sev", "milan_ask.pem"))
                .expect("the Milan ASK decodes")
        })
    }

    /// The real Milan report's bytes (`virtee-sev/report_milan.hex`, decoded).
    pub fn milan_report() -> &'static [u8] {
        static REPORT: OnceLock<Vec<u8>> = OnceLock::new();
        REPORT.get_or_init(|| {
            nacre_verifier::decode_hex(&test_vectors::read("virtee-sev", "report_milan.hex"))
                .expect("the Milan report is hex")
        })
    }

    /// The real TDX quote (`go-tdx-guest/tdx_prod_quote_SPR_E4.dat`).
    pub fn tdx_quote() -> &'static [u8] {
        static QUOTE: OnceLock<Vec<u8>> = OnceLock::new();
        QUOTE.get_or_init(|| test_vectors::read("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat"))
    }

    /// When the Milan VCEK is valid.
    pub fn milan_time() -> SystemTime {
        test_vectors::middle_of(milan_vcek())
    }

    /// When the real quote's PCK certificate is valid.
    pub fn tdx_time() -> SystemTime {
        static AT: OnceLock<SystemTime> = OnceLock::new();
        *AT.get_or_init(|| {
            let quote = nacre_verifier::tdx::Quote::parse(tdx_quote()).expect("the quote parses");
            let chain = quote.pck_chain().expect("the quote has a PCK chain");
            test_vectors::middle_of(&chain[0])
        })
    }
}
