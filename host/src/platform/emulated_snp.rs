//! The emulated SEV-SNP platform: software RMP enforced through the two views of
//! guest RAM, emulated PVALIDATE, and the hypervisor side of the GHCB protocol
//! (MSR protocol, page-state changes, the hostcall IOIO exit) with KVM's semantics.

use crate::exits::snp::msr_protocol::{handle_msr_protocol, MsrProtocolHost, MsrProtocolOutcome};
use crate::exits::snp::psc::{handle_psc, PageStateBackend, PscStats};
use crate::mmu::attributes::Kind;
use crate::mmu::tdp::Level;
use crate::mmu::{Access, Backing, GuestRmpResult, Mmu};
use crate::stats::Stats;
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::layout::{EMULATED_SNP_C_BIT, PAGE_SIZE_4K};
use nacre_shared_abi::snp::ghcb::{
    exit_code, ioio, Ghcb, GhcbErrorCode, GhcbField, RESULT_BAD_INPUT, RESULT_OK,
};
use nacre_shared_abi::snp::msr_protocol::{MsrPscOp, HV_FEATURE_SNP};
use nacre_shared_abi::snp::psc::PscDesc;
use nacre_shared_abi::snp::rmp::{PvalidateResult, RmpError, RmpPageSize, RMP_SUCCESS};
use nacre_shared_abi::snp::{SEV_STATUS_SEV, SEV_STATUS_SEV_ES, SEV_STATUS_SEV_SNP};
use zerocopy::{FromBytes, IntoBytes};

/// The C-bit as a GPA mask.
pub const C_BIT_MASK: u64 = 1 << EMULATED_SNP_C_BIT;

use super::Stop;

/// State of the emulated SNP platform for one VM.
#[derive(Debug)]
pub struct EmulatedSnp {
    /// Guest RAM.
    pub mem: GuestMemory,
    /// The host MMU: attributes, TDP (realized as the views' protection) and RMP.
    pub mmu: Mmu,
    /// `--strict-memory`: an access through the wrong view stops the guest instead of
    /// converting the page.
    pub strict_memory: bool,
    /// The GHCB MSR as the guest sees it.
    pub ghcb_msr: u64,
    /// Registered GHCB GPA.
    pub ghcb_gpa: Option<u64>,
    /// Counters.
    pub stats: Stats,
    /// Test hook: finish at most this many PSC entries per call.
    pub psc_budget: Option<usize>,
    /// The console and clocks the hostcalls serve (and when the first arrived).
    pub host: super::hostcall::HostcallHost,
    /// The emulated security processor: launch measurement, VMPCKs.
    pub sp: Option<crate::emulated::snp::sp::EmulatedSp>,
    /// Signs the security processor's reports (the emulated key hierarchy).
    pub signer: crate::emulated::snp::sp::LazySigner,
}

/// The value the emulated SEV_STATUS MSR reads.
pub const SEV_STATUS: u64 = SEV_STATUS_SEV | SEV_STATUS_SEV_ES | SEV_STATUS_SEV_SNP;

impl EmulatedSnp {
    /// Platform state over `mem`, every page hypervisor-owned.
    pub fn new(mem: GuestMemory) -> Self {
        let pages = mem.size() / PAGE_SIZE_4K;
        Self {
            mem,
            // The memfd views are single mappings of the whole of RAM, so any aligned
            // range inside RAM is backed contiguously: the backing allows 1 GiB.
            mmu: Mmu::new(pages, Level::L1G),
            strict_memory: false,
            ghcb_msr: 0,
            ghcb_gpa: None,
            stats: Stats::default(),
            psc_budget: None,
            host: super::hostcall::HostcallHost::default(),
            sp: None,
            signer: Default::default(),
        }
    }

    /// Emulate PVALIDATE for a guest whose page walk translated the operand to
    /// `translated` (a GPA including the C-bit), or `None` if the VA is unmapped.
    /// `Err(stop)` when the nested walk hit a shared page under `--strict-memory`.
    pub fn pvalidate(
        &mut self,
        translated: Option<u64>,
        size_operand: u64,
        validate: u64,
    ) -> Result<Result<PvalidateResult, Stop>, MemoryError> {
        let fail = |e: RmpError| {
            Ok(PvalidateResult {
                rax: e.code(),
                cf: false,
            })
        };
        let (Some(size), Some(gpa_c)) = (RmpPageSize::from_operand(size_operand), translated)
        else {
            return Ok(fail(RmpError::FailInput));
        };
        if validate > 1 || gpa_c & C_BIT_MASK == 0 {
            // PVALIDATE of a page mapped shared: the access is not private.
            return Ok(fail(RmpError::FailInput));
        }
        let gpa = gpa_c & !C_BIT_MASK;
        if !gpa.is_multiple_of(size.bytes()) {
            return Ok(fail(RmpError::FailInput));
        }
        match size {
            RmpPageSize::Size4K => self.stats.pvalidate_4k += 1,
            RmpPageSize::Size2M => self.stats.pvalidate_2m += 1,
        }
        let gfn = gpa / PAGE_SIZE_4K;
        let pages = size.bytes() / PAGE_SIZE_4K;
        let r = self.guest_rmp(gpa, pages, |mmu, mem| {
            mmu.pvalidate(mem, gfn, size, validate == 1)
        })?;
        Ok(r.map(|r| match r {
            GuestRmpResult::Done { changed } => PvalidateResult {
                rax: RMP_SUCCESS,
                cf: !changed,
            },
            GuestRmpResult::Fail(e) => {
                if e == RmpError::FailSizeMismatch {
                    self.stats.pvalidate_size_mismatch += 1;
                }
                PvalidateResult {
                    rax: e.code(),
                    cf: false,
                }
            }
            // guest_rmp resolved every mismatch.
            GuestRmpResult::Mismatch => PvalidateResult {
                rax: RmpError::FailInput.code(),
                cf: false,
            },
        }))
    }

    /// Emulate RMPADJUST (VMPL0 caller) on the page `translated` maps; returns EAX.
    pub fn rmpadjust(
        &mut self,
        translated: Option<u64>,
        size_operand: u64,
        attrs: u64,
    ) -> Result<Result<u32, Stop>, MemoryError> {
        let (Some(size), Some(gpa_c)) = (RmpPageSize::from_operand(size_operand), translated)
        else {
            return Ok(Ok(RmpError::FailInput.code()));
        };
        let gpa = gpa_c & !C_BIT_MASK;
        if gpa_c & C_BIT_MASK == 0 || !gpa.is_multiple_of(size.bytes()) {
            return Ok(Ok(RmpError::FailInput.code()));
        }
        let gfn = gpa / PAGE_SIZE_4K;
        let pages = size.bytes() / PAGE_SIZE_4K;
        let r = self.guest_rmp(gpa, pages, |mmu, mem| mmu.rmpadjust(mem, gfn, size, attrs))?;
        Ok(r.map(|r| match r {
            GuestRmpResult::Done { .. } => RMP_SUCCESS,
            GuestRmpResult::Fail(e) => e.code(),
            GuestRmpResult::Mismatch => RmpError::FailInput.code(),
        }))
    }

    /// Run a guest RMP instruction; a nested walk that lands on a shared page is a
    /// memory-fault exit: converted to private (then the instruction runs again) or,
    /// under `--strict-memory`, a stop.
    fn guest_rmp(
        &mut self,
        gpa: u64,
        pages: u64,
        mut op: impl FnMut(&Mmu, &GuestMemory) -> Result<GuestRmpResult, MemoryError>,
    ) -> Result<Result<GuestRmpResult, Stop>, MemoryError> {
        let gfn = gpa / PAGE_SIZE_4K;
        let mut r = op(&self.mmu, &self.mem)?;
        if r == GuestRmpResult::Mismatch {
            if self.strict_memory {
                return Ok(Err(Stop::MemoryViolation {
                    gpa,
                    view: View::Private,
                    rule: crate::mmu::rule::PRIVATE_TO_SHARED,
                }));
            }
            if self
                .mmu
                .set_attributes(&self.mem, gfn, pages, Kind::Private)?
                .is_some()
            {
                self.mmu.count_implicit_conversion();
            }
            r = op(&self.mmu, &self.mem)?;
        }
        Ok(Ok(r))
    }

    /// Mark a measured launch page: assigned and validated at 4 KiB.
    pub fn launch_page(&mut self, gpa: u64) -> Result<(), RmpError> {
        self.mmu.launch_page(gpa / PAGE_SIZE_4K)
    }

    /// Test hook for a hostile host: reassign a page so it is private but no longer
    /// validated (what an RMPUPDATE behind the guest's back leaves).
    pub fn unvalidate_page(&mut self, gpa: u64) -> Result<(), MemoryError> {
        self.mmu.hostile_reassign(&self.mem, gpa / PAGE_SIZE_4K)
    }

    /// A guest RDMSR that reached the VMM: `Some(value)` or `None` for #GP.
    pub fn rdmsr(&self, index: u32) -> Option<u64> {
        match index {
            nacre_shared_abi::snp::MSR_SEV_STATUS => Some(SEV_STATUS),
            nacre_shared_abi::snp::MSR_GHCB => Some(self.ghcb_msr),
            _ => None,
        }
    }

    /// A guest WRMSR that reached the VMM: `false` for #GP.
    pub fn wrmsr(&mut self, index: u32, value: u64) -> bool {
        match index {
            nacre_shared_abi::snp::MSR_GHCB => {
                self.ghcb_msr = value;
                true
            }
            _ => false,
        }
    }

    /// The VMGEXIT doorbell: MSR protocol or a GHCB call.
    pub fn vmgexit(&mut self) -> Result<Option<Stop>, MemoryError> {
        if self.ghcb_msr & 0xFFF != 0 {
            let value = self.ghcb_msr;
            let mut host = MsrHost { snp: self };
            return Ok(match handle_msr_protocol(value, &mut host) {
                MsrProtocolOutcome::Reply(v) => {
                    self.ghcb_msr = v;
                    None
                }
                MsrProtocolOutcome::Terminate { set, code } => {
                    Some(Stop::GuestTerminated { set, code })
                }
                MsrProtocolOutcome::Malformed(v) => Some(Stop::ProtocolViolation(format!(
                    "malformed GHCB MSR protocol request {v:#x}"
                ))),
            });
        }
        let gpa = self.ghcb_msr;
        if Some(gpa) != self.ghcb_gpa {
            return Ok(Some(Stop::ProtocolViolation(format!(
                "VMGEXIT with GHCB GPA {gpa:#x} that was never registered"
            ))));
        }
        if gpa
            .checked_add(PAGE_SIZE_4K)
            .is_none_or(|e| e > self.mem.size())
            || !self.mmu.is_shared(gpa / PAGE_SIZE_4K, 1)
        {
            return Ok(Some(Stop::ProtocolViolation(format!(
                "GHCB at {gpa:#x} is not a shared page"
            ))));
        }
        let mut page = [0u8; 4096];
        self.mem.read(gpa, &mut page)?;
        let mut g =
            Ghcb::read_from_bytes(&page).map_err(|_| MemoryError::OutOfRange { gpa, len: 4096 })?;
        let stop = self.ghcb_call(gpa, &mut g)?;
        self.mem.write(gpa, g.as_bytes())?;
        Ok(stop)
    }

    fn ghcb_call(&mut self, gpa: u64, g: &mut Ghcb) -> Result<Option<Stop>, MemoryError> {
        let bad = |g: &mut Ghcb, code: GhcbErrorCode| {
            g.sw_exit_info_1 = RESULT_BAD_INPUT;
            g.sw_exit_info_2 = code as u64;
        };
        if g.protocol_version != 2 || g.ghcb_usage != 0 {
            bad(g, GhcbErrorCode::InvalidUsage);
            return Ok(None);
        }
        if !g.is_valid(GhcbField::SwExitCode)
            || !g.is_valid(GhcbField::SwExitInfo1)
            || !g.is_valid(GhcbField::SwExitInfo2)
        {
            bad(g, GhcbErrorCode::MissingInput);
            return Ok(None);
        }
        let (code, info1, info2) = (g.sw_exit_code, g.sw_exit_info_1, g.sw_exit_info_2);
        g.sw_exit_info_1 = RESULT_OK;
        g.sw_exit_info_2 = 0;
        match code {
            exit_code::PSC => {
                self.stats.psc_calls += 1;
                if !g.is_valid(GhcbField::SwScratch) || g.sw_scratch != gpa + 0x800 {
                    bad(g, GhcbErrorCode::InvalidScratchArea);
                    return Ok(None);
                }
                let Ok(mut desc) = PscDesc::read_from_bytes(&g.shared_buffer) else {
                    bad(g, GhcbErrorCode::InvalidInput);
                    return Ok(None);
                };
                let mut pstats = PscStats::default();
                let mut backend = Backend {
                    mem: &self.mem,
                    mmu: &self.mmu,
                    failed: None,
                };
                let ret = handle_psc(&mut desc, &mut backend, self.psc_budget, &mut pstats);
                if let Some(e) = backend.failed {
                    return Err(e);
                }
                self.stats.psc_entries_4k += pstats.entries_4k;
                self.stats.psc_entries_2m += pstats.entries_2m;
                g.shared_buffer.copy_from_slice(desc.as_bytes());
                g.sw_exit_info_2 = ret;
                Ok(None)
            }
            exit_code::IOIO => {
                let port = (info1 >> ioio::PORT_SHIFT) as u16;
                let is_out_32 = info1 & (ioio::TYPE_IN | ioio::STRING | ioio::REP) == 0
                    && info1 & ioio::SIZE_32 != 0;
                if port != HOSTCALL_PORT || !is_out_32 || !g.is_valid(GhcbField::Rax) {
                    bad(g, GhcbErrorCode::InvalidInput);
                    return Ok(None);
                }
                let buffer = (g.rax & 0xFFFF_FFFF) * PAGE_SIZE_4K;
                self.hostcall(buffer)
            }
            exit_code::HV_FEATURES => {
                g.sw_exit_info_2 = HV_FEATURE_SNP;
                Ok(None)
            }
            exit_code::GUEST_REQUEST => self.guest_request(g, info1, info2),
            exit_code::TERM_REQUEST => Ok(Some(Stop::GuestTerminated {
                set: (info1 & 0xF) as u8,
                code: ((info1 >> 4) & 0xFF) as u8,
            })),
            _ => {
                bad(g, GhcbErrorCode::InvalidEvent);
                Ok(None)
            }
        }
    }

    /// SNP_GUEST_REQUEST: the request page at `req` goes to the security processor
    /// and its answer to the response page at `rsp`, both shared pages of RAM. KVM
    /// reads and writes them with `kvm_read_guest`/`kvm_write_guest` and kills the VM
    /// when that fails; here the guest is stopped with the reason. A firmware error is
    /// SW_EXITINFO2's low half (`SNP_GUEST_ERR`, Linux `arch/x86/kvm/svm/sev.c`).
    fn guest_request(
        &mut self,
        g: &mut Ghcb,
        req: u64,
        rsp: u64,
    ) -> Result<Option<Stop>, MemoryError> {
        self.stats.guest_requests += 1;
        for (what, gpa) in [("request", req), ("response", rsp)] {
            if !gpa.is_multiple_of(PAGE_SIZE_4K)
                || gpa
                    .checked_add(PAGE_SIZE_4K)
                    .is_none_or(|end| end > self.mem.size())
                || !self.mmu.is_shared(gpa / PAGE_SIZE_4K, 1)
            {
                return Ok(Some(Stop::ProtocolViolation(format!(
                    "guest request with a {what} page at {gpa:#x} that is not a shared page of RAM"
                ))));
            }
        }
        let mut page = [0u8; 4096];
        self.mem.read(req, &mut page)?;
        let Some(sp) = self.sp.as_mut() else {
            g.sw_exit_info_2 = crate::emulated::snp::sp::FW_ERR_PLATFORM;
            return Ok(None);
        };
        let Some(signer) = self
            .signer
            .get()
            .map(|s| &**s as &dyn crate::emulated::snp::sp::ReportSigner)
        else {
            g.sw_exit_info_2 = crate::emulated::snp::sp::FW_ERR_PLATFORM;
            return Ok(None);
        };
        match sp.guest_request(&page, signer) {
            Ok(answer) => self.mem.write(rsp, &answer)?,
            Err(fw_err) => g.sw_exit_info_2 = fw_err,
        }
        Ok(None)
    }

    /// Serve one hostcall from the shared buffer at `buffer`.
    fn hostcall(&mut self, buffer: u64) -> Result<Option<Stop>, MemoryError> {
        let mmu = &self.mmu;
        super::hostcall::serve(
            &self.mem,
            &mut self.stats,
            &mut self.host,
            |gfn, n| mmu.is_shared(gfn, n),
            buffer,
        )
    }

    /// A guest access that hit a closed view (`addr` is the faulting GPA with the
    /// C-bit as the view): the host MMU's nested-page-fault path. `Ok(None)` if the page
    /// is reachable now (the caller completes the access); otherwise the rule that was
    /// broken.
    pub fn memory_fault(&mut self, addr: u64) -> Result<Option<Stop>, MemoryError> {
        let (view, gpa) = if addr & C_BIT_MASK != 0 {
            (View::Private, addr & !C_BIT_MASK)
        } else {
            (View::Shared, addr)
        };
        let kind = match view {
            View::Private => Kind::Private,
            View::Shared => Kind::Shared,
        };
        Ok(
            match self
                .mmu
                .access(&self.mem, gpa / PAGE_SIZE_4K, kind, self.strict_memory)?
            {
                Access::Ok { .. } => None,
                Access::Violation(rule) => Some(Stop::MemoryViolation { gpa, view, rule }),
            },
        )
    }
}

impl Backing for GuestMemory {
    type Error = MemoryError;

    fn set_access(&self, kind: Kind, gfn: u64, pages: u64, on: bool) -> Result<(), MemoryError> {
        let view = match kind {
            Kind::Private => View::Private,
            Kind::Shared => View::Shared,
        };
        self.protect(view, gfn * PAGE_SIZE_4K, pages * PAGE_SIZE_4K, on)
    }

    fn discard(&self, gfn: u64, pages: u64) -> Result<(), MemoryError> {
        GuestMemory::discard(self, gfn * PAGE_SIZE_4K, pages * PAGE_SIZE_4K)
    }

    fn zero_fresh(&self, gfn: u64, pages: u64) -> Result<(), MemoryError> {
        // Punching a hole zeroes the pages and frees any the host had written.
        GuestMemory::discard(self, gfn * PAGE_SIZE_4K, pages * PAGE_SIZE_4K)
    }
}

/// The PSC backend: KVM's `KVM_HC_MAP_GPA_RANGE` exit as the VMM completes it, an
/// attribute change in the host MMU (zap, reclaim, discard of converted pages).
struct Backend<'a> {
    mem: &'a GuestMemory,
    mmu: &'a Mmu,
    failed: Option<MemoryError>,
}

impl PageStateBackend for Backend<'_> {
    /// Pages already in the requested state are left alone, as KVM leaves a GFN whose
    /// attribute does not change (no zap, no discard, the validated bit kept).
    fn change(&mut self, gfn: u64, npages: u64, op: MsrPscOp, _huge: bool) -> Result<(), ()> {
        let kind = match op {
            MsrPscOp::Private => Kind::Private,
            MsrPscOp::Shared => Kind::Shared,
        };
        match self.mmu.set_attributes(self.mem, gfn, npages, kind) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(()),
            Err(e) => {
                self.failed = Some(e);
                Err(())
            }
        }
    }
}

/// Answers for the MSR protocol.
struct MsrHost<'a> {
    snp: &'a mut EmulatedSnp,
}

impl MsrProtocolHost for MsrHost<'_> {
    fn c_bit(&self) -> u8 {
        EMULATED_SNP_C_BIT as u8
    }

    fn cpuid(&mut self, leaf: u32, register: u8) -> u32 {
        let r = std::arch::x86_64::__cpuid(leaf);
        match register {
            0 => r.eax,
            1 => r.ebx,
            2 => r.ecx,
            _ => r.edx,
        }
    }

    fn register_ghcb(&mut self, gfn: u64) -> bool {
        let ok = gfn < self.snp.mmu.pages();
        if ok {
            self.snp.ghcb_gpa = Some(gfn * PAGE_SIZE_4K);
        }
        ok
    }

    fn page_state_change(&mut self, gfn: u64, op: MsrPscOp) -> Result<(), ()> {
        self.snp.stats.psc_calls += 1;
        let mut backend = Backend {
            mem: &self.snp.mem,
            mmu: &self.snp.mmu,
            failed: None,
        };
        let r = backend.change(gfn, 1, op, false);
        if r.is_ok() {
            self.snp.stats.psc_entries_4k += 1;
        }
        r
    }

    fn hv_features(&self) -> u64 {
        HV_FEATURE_SNP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> EmulatedSnp {
        EmulatedSnp::new(GuestMemory::new(64 << 20).expect("memfd"))
    }

    fn psc(snp: &mut EmulatedSnp, gfn: u64, n: u64, op: MsrPscOp) {
        let mut backend = Backend {
            mem: &snp.mem,
            mmu: &snp.mmu,
            failed: None,
        };
        backend
            .change(gfn, n, op, false)
            .expect("page-state change");
    }

    fn validate(snp: &mut EmulatedSnp, gpa: u64, size: u64) -> PvalidateResult {
        snp.pvalidate(Some(gpa | C_BIT_MASK), size, 1)
            .expect("memory")
            .expect("no stop")
    }

    /// A platform with a launched security processor and the test signer; pages
    /// 0x20 and 0x21 shared.
    fn attesting() -> EmulatedSnp {
        use crate::emulated::snp::sp::tests::{launched, signer};
        let mut snp = platform();
        snp.sp = Some(launched());
        snp.signer = crate::emulated::snp::sp::LazySigner::new(
            "the test signer",
            Box::new(|| Ok(Box::new(signer()))),
        );
        psc(&mut snp, 0x20, 2, MsrPscOp::Shared);
        snp
    }

    #[test]
    fn guest_requests_are_answered_through_shared_pages_only() {
        use crate::emulated::snp::sp::tests::{request, response};
        use crate::emulated::snp::sp::{FW_ERR_INVALID_PARAM, FW_ERR_PLATFORM};
        let mut snp = attesting();
        let key = *snp.sp.as_ref().unwrap().vmpck(0).unwrap();
        snp.mem
            .write(0x20_000, &request(&key, 1, [3; 64], 0, 0))
            .unwrap();
        let mut g = Ghcb::new_zeroed();
        assert!(snp
            .guest_request(&mut g, 0x20_000, 0x21_000)
            .unwrap()
            .is_none());
        assert_eq!(g.sw_exit_info_2, 0);
        let mut page = [0u8; 4096];
        snp.mem.read(0x21_000, &mut page).unwrap();
        response(&key, 2, &page);
        assert_eq!(snp.stats.guest_requests, 1);

        // A replayed request: the firmware's error, nothing written.
        snp.mem.write(0x21_000, &[0xEE; 4096]).unwrap();
        assert!(snp
            .guest_request(&mut g, 0x20_000, 0x21_000)
            .unwrap()
            .is_none());
        assert_eq!(g.sw_exit_info_2, FW_ERR_INVALID_PARAM);
        snp.mem.read(0x21_000, &mut page).unwrap();
        assert_eq!(page, [0xEE; 4096]);

        // Private, unaligned or out-of-RAM pages stop the guest.
        for (req, rsp) in [
            (0x30_000, 0x21_000),
            (0x20_000, 0x30_000),
            (0x20_010, 0x21_000),
            (0x20_000, 64 << 20),
            (!0xFFF, 0x21_000),
        ] {
            let stop = snp.guest_request(&mut g, req, rsp).unwrap();
            assert!(
                matches!(stop, Some(Stop::ProtocolViolation(_))),
                "{req:#x} {rsp:#x}: {stop:?}"
            );
        }

        // No key to sign with: the platform's error.
        let mut snp = attesting();
        snp.signer = crate::emulated::snp::sp::LazySigner::new(
            "the test signer",
            Box::new(|| Err("no keys".into())),
        );
        let key = *snp.sp.as_ref().unwrap().vmpck(0).unwrap();
        snp.mem
            .write(0x20_000, &request(&key, 1, [3; 64], 0, 0))
            .unwrap();
        assert!(snp
            .guest_request(&mut g, 0x20_000, 0x21_000)
            .unwrap()
            .is_none());
        assert_eq!(g.sw_exit_info_2, FW_ERR_PLATFORM);
    }

    #[test]
    fn converting_to_the_current_state_changes_nothing() {
        let mut snp = platform();
        snp.launch_page(0x10_000).unwrap();
        snp.mem.write(0x10_000, b"keep").unwrap();
        let before = snp.mmu.stats().rmpupdate;
        psc(&mut snp, 0x10, 1, MsrPscOp::Private);
        let e = snp.mmu.rmp_entry(0x10).unwrap();
        assert!(e.assigned && e.validated, "still validated: {e:?}");
        let mut b = [0u8; 4];
        snp.mem.read(0x10_000, &mut b).unwrap();
        assert_eq!(&b, b"keep");
        assert_eq!(snp.mmu.stats().rmpupdate, before);
    }

    #[test]
    fn conversion_discards_contents_and_returns_the_page_to_the_host() {
        let mut snp = platform();
        snp.launch_page(0x10_000).unwrap();
        snp.mem.write(0x10_000, b"secret").unwrap();
        psc(&mut snp, 0x10, 1, MsrPscOp::Shared);
        let mut b = [0xAAu8; 6];
        snp.mem.read(0x10_000, &mut b).unwrap();
        assert_eq!(b, [0; 6], "a page made shared must not carry private data");
        assert!(snp.mmu.is_shared(0x10, 1));
        psc(&mut snp, 0x10, 1, MsrPscOp::Private);
        // Private again in the attributes; the RMP assigns it only when the guest
        // faults it in (its PVALIDATE), unvalidated.
        assert!(!snp.mmu.rmp_entry(0x10).unwrap().assigned);
        let r = validate(&mut snp, 0x10_000, 0);
        assert_eq!((r.rax, r.cf), (0, false));
        let e = snp.mmu.rmp_entry(0x10).unwrap();
        assert!(e.assigned && e.validated);
    }

    #[test]
    fn pvalidate_at_4k_inside_a_fresh_2m_region_psmashes() {
        let mut snp = platform();
        // Fresh memory: the fault assigns the whole 2 MiB region at once.
        let r = validate(&mut snp, 0x40_1000, 0);
        assert_eq!((r.rax, r.cf), (0, false));
        let s = snp.mmu.stats();
        assert_eq!(s.psmash, 1, "{s:?}");
        assert_eq!(snp.mmu.rmp_entry(0x401).unwrap().size, RmpPageSize::Size4K);
        // A 2 MiB PVALIDATE over the now 4 KiB entries is a size mismatch.
        let r = validate(&mut snp, 0x40_0000, 1);
        assert_eq!(r.rax, RmpError::FailSizeMismatch.code());
        assert_eq!(snp.stats.pvalidate_size_mismatch, 1);
        // The next 2 MiB region validates at 2 MiB without a PSMASH.
        let r = validate(&mut snp, 0x60_0000, 1);
        assert_eq!((r.rax, r.cf), (0, false));
        let s = snp.mmu.stats();
        assert_eq!(s.psmash, 1);
        // Two 2 MiB mappings: the first region's, zapped by the PSMASH, and this one.
        assert_eq!((s.maps_2m, s.zaps), (2, 1), "{s:?}");
    }

    #[test]
    fn memory_faults_name_the_rule() {
        let mut snp = platform();
        snp.strict_memory = true;
        snp.launch_page(0x20_000).unwrap();
        // Shared access to a private page.
        assert!(matches!(
            snp.memory_fault(0x20_000).unwrap(),
            Some(Stop::MemoryViolation {
                view: View::Shared,
                rule: crate::mmu::rule::SHARED_TO_PRIVATE,
                ..
            })
        ));
        // Private access to a private page never validated.
        assert!(matches!(
            snp.memory_fault(C_BIT_MASK | 0x30_000).unwrap(),
            Some(Stop::MemoryViolation {
                view: View::Private,
                gpa: 0x30_000,
                rule: crate::mmu::rule::NOT_VALIDATED,
            })
        ));
        // Private access to the validated page is fine.
        assert_eq!(snp.memory_fault(C_BIT_MASK | 0x20_000).unwrap(), None);
        // Outside RAM.
        assert!(snp.memory_fault(1 << 40).unwrap().is_some());
    }

    #[test]
    fn wrong_view_access_converts_unless_strict() {
        let mut snp = platform();
        snp.launch_page(0x20_000).unwrap();
        snp.mem.write(0x20_000, b"private").unwrap();
        // A shared access to the private page converts it (and discards its data).
        assert_eq!(snp.memory_fault(0x20_000).unwrap(), None);
        assert_eq!(snp.mmu.stats().implicit_conversions, 1);
        assert!(snp.mmu.is_shared(0x20, 1));
        let mut b = [0xAAu8; 7];
        snp.mem.read(0x20_000, &mut b).unwrap();
        assert_eq!(b, [0; 7]);
        assert_eq!(snp.mmu.reachable(0x20), (false, true));
    }
}
