//! AMD SEV-SNP: the GHCB (MSR protocol and page), page-state changes, PVALIDATE, the
//! hostcall doorbell, attestation reports through guest requests, and termination.

pub mod ghcb;
pub mod guest_request;
pub mod instr;
pub mod psc;
pub mod vc;

use super::hostcall::HostcallArea;
use super::{
    Backend, Evidence, GuestDevice, GuestPlatform, GuestReport, PageState, PteMasks, ReportError,
    Validation,
};
use crate::arch::gdt::MAX_CPUS;
use crate::error::FwError;
use crate::mem::paging::{PageTables, TableAlloc, NO_EXECUTE, WRITABLE};
use crate::mem::phys_to_virt;
use core::sync::atomic::{AtomicBool, Ordering};
use guest_request::{GuestChannel, GuestRequestError};
use instr::{pvalidate, vmgexit};
use nacre_shared_abi::boot::BootInfo;
use nacre_shared_abi::hostcall::EvidenceKind;
use nacre_shared_abi::layout::{
    INITIAL_PT_GPA, INITIAL_PT_PAGES, KERNEL_VA_BASE, PAGE_SIZE_4K, SECRETS_PAGE_GPA,
    SNP_CPUID_PAGE_GPA,
};
use nacre_shared_abi::snp::cpuid_page::CpuidPage;
use nacre_shared_abi::snp::ghcb::Ghcb;
use nacre_shared_abi::snp::guest_msg::{ReportRspHead, REPORT_SIZE};
use nacre_shared_abi::snp::msr_protocol::{self as mp, MsrPscOp, MsrRequest, MsrResponse};
use nacre_shared_abi::snp::psc::PageStateOp;
use nacre_shared_abi::snp::rmp::{RmpError, RmpPageSize};
use nacre_shared_abi::snp::{MSR_GHCB, MSR_SEV_STATUS, SEV_STATUS_SEV_SNP};
use nacre_shared_abi::tdx_report::REPORT_DATA_SIZE;
use x86_64::registers::model_specific::Msr;
use zerocopy::FromBytes;

/// Where the firmware's shared GHCB page is mapped with the C-bit clear:
/// `SHARED_VA_BASE + GPA`. Its private alias in the firmware's own 2 MiB mapping is
/// never touched once it is shared.
const SHARED_VA_BASE: u64 = KERNEL_VA_BASE + 0x4000_0000;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The GHCB pages, one per vCPU: pages of the measured firmware image, the first
/// `cpus` made shared at set-up. Each vCPU registers its own, since KVM takes an SNP
/// guest's VMGEXIT only through the GHCB its vCPU registered
/// (`arch/x86/kvm/svm/sev.c`, `sev_handle_vmgexit`), and a vCPU makes calls of its own
/// (the x2APIC's registers, [`apic_msr`]) without holding the kernel.
static mut GHCB_PAGES: [Page; MAX_CPUS] = [const { Page([0; 4096]) }; MAX_CPUS];

/// Whether vCPU `i` registered its GHCB page with the host.
static GHCB_REGISTERED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Whether vCPU `i`'s GHCB MSR holds its GHCB page's GPA (an MSR-protocol exchange
/// leaves a request or response there instead). Each vCPU reads and writes only its
/// own entry.
static MSR_HOLDS_GHCB: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The launch pages besides the image: the secrets page, the CPUID page and the initial
/// page tables.
const LAUNCH_PAGES: [(u64, u64); 3] = [
    (SECRETS_PAGE_GPA, PAGE_SIZE_4K),
    (SNP_CPUID_PAGE_GPA, PAGE_SIZE_4K),
    (INITIAL_PT_GPA, INITIAL_PT_PAGES * PAGE_SIZE_4K),
];

/// GPA of vCPU `cpu`'s GHCB page (the firmware runs at `KERNEL_VA_BASE` + its GPA).
fn ghcb_page_gpa(cpu: usize) -> u64 {
    ((&raw const GHCB_PAGES) as u64).wrapping_sub(KERNEL_VA_BASE)
        + (cpu.min(MAX_CPUS - 1) as u64) * PAGE_SIZE_4K
}

/// The shared alias of vCPU `cpu`'s GHCB page, if that vCPU registered it.
fn registered_ghcb(cpu: usize) -> Option<(u64, u64)> {
    if !GHCB_REGISTERED.get(cpu)?.load(Ordering::Acquire) {
        return None;
    }
    let gpa = ghcb_page_gpa(cpu);
    Some((SHARED_VA_BASE + gpa, gpa))
}

/// SEV-SNP platform state.
#[derive(Debug)]
pub struct Snp {
    backend: Backend,
    /// The C-bit, set in private page-table entries.
    c_bit_mask: u64,
    /// How many GHCB pages set-up made shared (one per vCPU).
    ghcb_pages: usize,
    /// The private copy of the GHCB that requests are built in and answers copied
    /// back to (kept, rather than made per call, to avoid clearing 4 KiB each time).
    scratch: Ghcb,
    /// Guest messages to the security processor (VMPCK0 from the secrets page).
    channel: GuestChannel,
}

impl Snp {
    /// Check SEV_STATUS (SNP must be on), the C-bit from the measured CPUID page (the
    /// one the entry code set in the page tables CR3 points at, `arch/snp_entry.rs`)
    /// and the hypervisor's features (SNP required). A CPU without SNP ends the guest
    /// with the GHCB specification's "SEV-SNP not supported" reason.
    pub fn detect(_bi: &BootInfo, backend: Backend) -> Result<Self, FwError> {
        // SAFETY: SEV_STATUS (AMD APM vol. 2, 15.34.10) exists on every SEV-capable CPU
        // and on the emulated platform; reading it has no side effects.
        let sev_status = unsafe { Msr::new(MSR_SEV_STATUS).read() };
        if sev_status & SEV_STATUS_SEV_SNP == 0 {
            terminate_with(backend, mp::TERM_SET_GENERAL, mp::TERM_SNP_UNSUPPORTED);
        }
        let c_bit = cpuid_page_c_bit().ok_or(FwError::NotSnp)?;
        // CR3 bits 51:12 hold the PML4's address (AMD APM vol. 2, 5.3.2): the entry code
        // put it at INITIAL_PT_GPA with the C-bit, and nothing else above bit 12.
        let cr3 = x86_64::registers::control::Cr3::read_raw()
            .0
            .start_address()
            .as_u64();
        if cr3 != INITIAL_PT_GPA | 1 << c_bit {
            return Err(FwError::NotSnp);
        }
        if let Some(leaf) = cpuid_contradicts_page() {
            return Err(FwError::CpuidMismatch { leaf });
        }
        let mut snp = Self {
            backend,
            c_bit_mask: 1 << c_bit,
            ghcb_pages: 0,
            scratch: Ghcb::new_zeroed(),
            channel: GuestChannel::none(),
        };
        match snp.msr_protocol(MsrRequest::HvFeatures, mp::HV_FEATURES_RESP)? {
            MsrResponse::HvFeatures { features } if features & mp::HV_FEATURE_SNP != 0 => {}
            _ => return Err(FwError::MsrProtocol),
        }
        Ok(snp)
    }

    /// PVALIDATE the page of `size` at `gpa` (through the direct map).
    ///
    /// # Safety
    /// As [`GuestPlatform::validate_4k`].
    unsafe fn validate(&mut self, gpa: u64, size: RmpPageSize) -> Result<Validation, FwError> {
        // SAFETY: the caller guarantees that the page holds nothing in use, so its
        // validation breaks nothing; it is validated (not rescinded) through its
        // direct-map address `phys_to_virt(gpa)`, which maps its private GPA.
        match unsafe { pvalidate(self.backend, phys_to_virt(gpa), size, true) }.decode() {
            Ok(true) => Ok(Validation::Done),
            Ok(false) => Err(FwError::AlreadyValidated { gpa }),
            Err(Some(RmpError::FailSizeMismatch)) if size == RmpPageSize::Size2M => {
                Ok(Validation::SizeMismatch)
            }
            Err(rc) => Err(FwError::Pvalidate { gpa, rc }),
        }
    }

    /// Rescind the validation of the firmware page at `va` (GPA `gpa`).
    ///
    /// # Safety
    /// The page must be the firmware's and never used as private memory again.
    unsafe fn rescind(&mut self, va: u64, gpa: u64) -> Result<(), FwError> {
        // SAFETY: the caller guarantees that the firmware owns the page and never uses
        // it as private memory again, which is what rescinding requires.
        let r = unsafe { pvalidate(self.backend, va, RmpPageSize::Size4K, false) };
        match r.decode() {
            Ok(true) => Ok(()),
            Ok(false) => Err(FwError::AlreadyValidated { gpa }),
            Err(rc) => Err(FwError::Pvalidate { gpa, rc }),
        }
    }

    /// Convert one firmware page to shared with the MSR protocol (before the GHCB
    /// exists) and map it shared at `SHARED_VA_BASE + gpa` (whose page table
    /// [`GuestPlatform::prepare_tables`] made).
    ///
    /// # Safety
    /// As [`Self::rescind`].
    unsafe fn share_page_msr(
        &mut self,
        pt: &mut PageTables,
        va: u64,
        gpa: u64,
    ) -> Result<(), FwError> {
        // SAFETY: the caller guarantees what `rescind` needs (its own contract).
        unsafe { self.rescind(va, gpa) }?;
        let req = MsrRequest::PageStateChange {
            gfn: gpa / PAGE_SIZE_4K,
            op: MsrPscOp::Shared,
        };
        match self.msr_protocol(req, mp::PSC_RESP)? {
            MsrResponse::PageStateChange { error: 0 } => {}
            _ => {
                return Err(FwError::PageStateChange {
                    gfn: gpa / PAGE_SIZE_4K,
                    detail: 0,
                })
            }
        }
        pt.map_4k(
            SHARED_VA_BASE + gpa,
            gpa,
            WRITABLE | NO_EXECUTE,
            false,
            &mut NoTables,
        )
        .ok_or(FwError::OutOfMemory)
    }
}

/// The C-bit position the measured CPUID page gives (leaf 0x8000_001F), if it gives a
/// usable one. The page is private, validated at launch and checked by the security
/// processor; it is copied before it is read.
fn cpuid_page_c_bit() -> Option<u32> {
    let mut page = [0u8; 4096];
    // SAFETY: the CPUID page is a launch page, private and validated, mapped by the
    // loader's tables at its kernel address; one page is copied out of it.
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(SNP_CPUID_PAGE_GPA) as *const u8,
            page.as_mut_ptr(),
            page.len(),
        )
    };
    CpuidPage::ref_from_bytes(&page[..]).ok()?.c_bit().ok()
}

/// The first leaf the firmware relies on ([`vc::RELIED_ON`]) on which the CPUID
/// instruction contradicts the measured CPUID page, copied into private memory first.
fn cpuid_contradicts_page() -> Option<u32> {
    let mut page = [0u8; 4096];
    // SAFETY: as in `cpuid_page_c_bit`: one page is copied out of the private,
    // validated CPUID launch page.
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(SNP_CPUID_PAGE_GPA) as *const u8,
            page.as_mut_ptr(),
            page.len(),
        )
    };
    let entries = CpuidPage::ref_from_bytes(&page[..]).ok()?.used().ok()?;
    let live = |leaf, subleaf| {
        let r = crate::arch::cpu::cpuid(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    vc::contradiction(entries.len(), |i| entries[i], live, vc::current_state())
}

/// For mappings whose page tables were created in advance.
struct NoTables;

impl TableAlloc for NoTables {
    fn alloc_table(&mut self) -> Option<u64> {
        None
    }
}

impl GuestPlatform for Snp {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn pte_masks(&self) -> PteMasks {
        PteMasks {
            private: self.c_bit_mask,
            shared: 0,
        }
    }

    fn ram_limit(&self) -> u64 {
        u64::MAX
    }

    fn launch_pages(&self) -> &'static [(u64, u64)] {
        &LAUNCH_PAGES
    }

    /// The emulated platform discards a page's contents on every page-state change;
    /// SEV-SNP hardware gives no such guarantee.
    fn fresh_memory_is_zero(&self) -> bool {
        self.backend == Backend::Doorbell
    }

    fn guest_device(&self) -> GuestDevice {
        GuestDevice::SevGuest
    }

    fn prepare_tables(
        &mut self,
        pt: &mut PageTables,
        alloc: &mut dyn TableAlloc,
    ) -> Result<(), FwError> {
        for cpu in 0..MAX_CPUS {
            pt.prepare_4k(SHARED_VA_BASE + ghcb_page_gpa(cpu), alloc)
                .ok_or(FwError::OutOfMemory)?;
        }
        Ok(())
    }

    /// The GHCB pages of the `cpus` vCPUs: stop using each as private, make it
    /// shared and map it shared; register the boot vCPU's; then VMPCK0 from the
    /// secrets page the security processor filled at launch, copied into private
    /// memory.
    fn setup(&mut self, pt: &mut PageTables, cpus: u32) -> Result<(), FwError> {
        let cpus = (cpus as usize).clamp(1, MAX_CPUS);
        for cpu in 0..cpus {
            let gpa = ghcb_page_gpa(cpu);
            // SAFETY: the GHCB pages are the firmware's, referenced by nothing but raw
            // pointers, and used only through their shared aliases from now on.
            unsafe { self.share_page_msr(pt, KERNEL_VA_BASE + gpa, gpa) }?;
            self.ghcb_pages = cpu + 1;
        }
        self.register_ghcb()?;
        let mut head = [0u8; 0xB0];
        // SAFETY: the secrets page is a launch page of every SNP image, private and
        // validated, mapped by the direct map; the copy reads its first 0xB0 bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(
                phys_to_virt(SECRETS_PAGE_GPA) as *const u8,
                head.as_mut_ptr(),
                head.len(),
            )
        };
        self.channel = GuestChannel::from_secrets(&head);
        Ok(())
    }

    /// Each vCPU registers its own GHCB page.
    fn start_cpu(&mut self) -> Result<(), FwError> {
        self.register_ghcb()
    }

    fn rescinded_pages(&self) -> (u64, u64) {
        (ghcb_page_gpa(0), self.ghcb_pages as u64)
    }

    fn page_state_change(
        &mut self,
        gpa: u64,
        len: u64,
        state: PageState,
        allow_2m: bool,
    ) -> Result<(), FwError> {
        let op = match state {
            PageState::Private => PageStateOp::Private,
            PageState::Shared => PageStateOp::Shared,
        };
        psc::page_state_change(self, gpa / PAGE_SIZE_4K, len / PAGE_SIZE_4K, op, allow_2m)
    }

    unsafe fn validate_4k(&mut self, gpa: u64) -> Result<(), FwError> {
        // SAFETY: `validate_4k`'s caller guarantees the page holds nothing in use, which
        // is `validate`'s contract.
        unsafe { self.validate(gpa, RmpPageSize::Size4K) }.map(|_| ())
    }

    unsafe fn validate_2m(&mut self, gpa: u64) -> Result<Validation, FwError> {
        // SAFETY: `validate_2m`'s caller guarantees the 2 MiB page holds nothing in
        // use, which is `validate`'s contract.
        unsafe { self.validate(gpa, RmpPageSize::Size2M) }
    }

    /// A page-state change to private (page by page when validating page by page),
    /// then PVALIDATE.
    unsafe fn accept_range(
        &mut self,
        gpa: u64,
        len: u64,
        four_k_only: bool,
    ) -> Result<u64, FwError> {
        self.page_state_change(gpa, len, PageState::Private, !four_k_only)?;
        // SAFETY: `accept_range`'s caller guarantees the range holds nothing in use,
        // which is `validate_range`'s contract.
        unsafe { self.validate_range(gpa, len, four_k_only) }
    }

    fn ring_hostcall(&mut self, page: u64) -> Result<(), FwError> {
        self.ring_hostcall_ioio(page)
    }

    /// MSG_REPORT_RSP's payload from the security processor (guest request through the
    /// last two pages of the hostcall area).
    fn guest_report(
        &mut self,
        report_data: &[u8; REPORT_DATA_SIZE],
        vmpl: u32,
        io: &HostcallArea,
    ) -> Result<GuestReport, ReportError> {
        let ((req_va, req_gpa), (resp_va, resp_gpa)) = io.page_pair();
        // The channel is taken out for the call: it makes its GHCB calls through `self`.
        let mut channel = core::mem::replace(&mut self.channel, GuestChannel::none());
        let r = channel.report(
            self,
            req_va,
            req_gpa,
            resp_va,
            resp_gpa,
            report_data,
            vmpl,
            0,
        );
        self.channel = channel;
        match r {
            Ok(rsp) => Ok(GuestReport::new(&rsp)),
            Err(GuestRequestError::Exit(info2)) => Err(ReportError::Exit(info2)),
            Err(GuestRequestError::Disabled | GuestRequestError::BadResponse) => {
                Err(ReportError::Failed)
            }
        }
    }

    /// An ATTESTATION_REPORT for VMPL 0 (signed by the VCEK), at the start of the data
    /// area.
    fn evidence(
        &mut self,
        report_data: &[u8; REPORT_DATA_SIZE],
        io: &mut HostcallArea,
    ) -> Result<Evidence, FwError> {
        let rsp = self
            .guest_report(report_data, 0, io)
            .map_err(|e| FwError::Attestation {
                code: match e {
                    ReportError::Exit(info2) => info2,
                    ReportError::Failed => 0,
                },
            })?;
        let report = report_of_response(rsp.as_bytes())?;
        io.put(0, report)?;
        Ok(Evidence::Ready {
            kind: EvidenceKind::SnpReport,
            len: report.len() as u64,
        })
    }

    /// A guest request answers at once: there is never evidence pending.
    fn evidence_poll(&mut self, _io: &mut HostcallArea) -> Result<Evidence, FwError> {
        Err(FwError::Attestation { code: 0 })
    }

    fn terminate(&self, code: u8) -> ! {
        terminate(self.backend, code)
    }
}

/// The ATTESTATION_REPORT inside MSG_REPORT_RSP's payload `rsp` (SEV-SNP firmware ABI,
/// MSG_REPORT_RSP): status 0 and the report's size.
pub fn report_of_response(rsp: &[u8]) -> Result<&[u8], FwError> {
    let (head, rest) =
        ReportRspHead::read_from_prefix(rsp).map_err(|_| FwError::Attestation { code: 0 })?;
    if head.status != 0 || head.report_size as usize != REPORT_SIZE || rest.len() < REPORT_SIZE {
        return Err(FwError::Attestation {
            code: u64::from(head.status),
        });
    }
    Ok(&rest[..REPORT_SIZE])
}

/// Ask the host to end the guest with nacre's reason `code` (reason set
/// `TERM_SET_NACRE`), then halt.
pub fn terminate(backend: Backend, code: u8) -> ! {
    terminate_with(backend, mp::TERM_SET_NACRE, code)
}

/// The GHCB MSR protocol termination request (GHCB specification 2.3.1, "Termination
/// Request") with reason `code` in set `set`, then halt.
fn terminate_with(backend: Backend, set: u8, code: u8) -> ! {
    // SAFETY: a termination request; nothing of the guest runs after it.
    unsafe {
        Msr::new(MSR_GHCB).write(MsrRequest::Terminate { set, code }.encode());
        vmgexit(backend);
    }
    crate::arch::cpu::halt_forever()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghcb::GhcbCall;
    use zerocopy::IntoBytes;

    fn snp(backend: Backend) -> Snp {
        Snp {
            backend,
            c_bit_mask: 1 << 47,
            ghcb_pages: 0,
            scratch: Ghcb::new_zeroed(),
            channel: GuestChannel::none(),
        }
    }

    #[test]
    fn the_snp_platform_says_what_boot_needs() {
        let s = snp(Backend::Hardware);
        assert_eq!(
            s.pte_masks(),
            PteMasks {
                private: 1 << 47,
                shared: 0
            }
        );
        assert!(!s.fresh_memory_is_zero(), "hardware gives no such promise");
        assert!(snp(Backend::Doorbell).fresh_memory_is_zero());
        assert_eq!(s.guest_device(), GuestDevice::SevGuest);
        assert!(s.launch_pages().contains(&(SECRETS_PAGE_GPA, PAGE_SIZE_4K)));
    }

    #[test]
    fn a_call_before_the_ghcb_is_registered_is_refused() {
        let mut s = snp(Backend::Doorbell);
        assert_eq!(s.call(0), Err(FwError::MsrProtocol));
        assert_eq!(s.ring_hostcall(5), Err(FwError::MsrProtocol));
    }

    fn response(status: u32, size: u32) -> [u8; 0x20 + REPORT_SIZE] {
        let mut rsp = [0u8; 0x20 + REPORT_SIZE];
        let head = ReportRspHead {
            status,
            report_size: size,
            rsvd: [0; 24],
        };
        rsp[..0x20].copy_from_slice(head.as_bytes());
        rsp[0x20] = 0xEE;
        rsp
    }

    #[test]
    fn the_report_is_taken_from_a_successful_response_only() {
        let ok = response(0, REPORT_SIZE as u32);
        let report = report_of_response(&ok).expect("a report");
        assert_eq!((report.len(), report[0]), (REPORT_SIZE, 0xEE));
        assert_eq!(
            report_of_response(&response(0x16, REPORT_SIZE as u32)),
            Err(FwError::Attestation { code: 0x16 })
        );
        assert!(report_of_response(&response(0, 0x400)).is_err());
        assert!(report_of_response(&ok[..0x20 + 10]).is_err());
        assert!(report_of_response(&ok[..8]).is_err());
    }
}
