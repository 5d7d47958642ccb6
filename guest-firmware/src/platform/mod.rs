//! The confidential-computing platform the firmware runs on, behind one interface.
//!
//! [`GuestPlatform`] is everything the rest of the firmware asks of the platform: the
//! page-table bits of private and shared memory, page-state changes, validating or
//! accepting memory (2 MiB first, 4 KiB on a size mismatch), the hostcall doorbell,
//! attestation evidence and termination. `snp::Snp` (AMD SEV-SNP) and `tdx::Tdx`
//! (Intel TDX) implement it; [`detect`] picks the one the measured boot information
//! names, checks that the CPU agrees, and hands it out once for the firmware's
//! lifetime. Code outside this module goes through the trait; the only platform names
//! it uses are those of Linux's attestation devices (`syscall/attest.rs` implements
//! their ioctls) and of the TDX reset-vector code (`arch/tdx_entry.rs`), which runs
//! before any Rust.
//!
//! Hardware and the emulated platforms differ only in how the instructions that exit
//! to the host reach it (shared-abi `doorbell.rs`): that is the [`Backend`], chosen
//! once by [`detect`] and kept in the platform object.

pub mod hostcall;
pub mod snp;
pub mod tdx;

use crate::error::FwError;
use crate::mem::paging::{PageTables, TableAlloc};
use core::sync::atomic::{AtomicBool, Ordering};
use hostcall::HostcallArea;
use nacre_shared_abi::boot::{BootInfo, PlatformKind};
use nacre_shared_abi::doorbell::{EMULATED_SNP_SIGNATURE, EMULATED_TDX_SIGNATURE};
use nacre_shared_abi::hostcall::EvidenceKind;
use nacre_shared_abi::layout::{PAGE_SIZE_2M, PAGE_SIZE_4K};
use nacre_shared_abi::snp::guest_msg::REPORT_RSP_SIZE;
use nacre_shared_abi::tdx_report::{REPORT_DATA_SIZE, TDREPORT_SIZE};

/// How the instructions that exit to the host (PVALIDATE, VMGEXIT, TDCALL) reach it.
/// Chosen once at boot from the hypervisor's CPUID signature; a host that fakes it can
/// only stop the guest from booting (`docs/threat-model.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The confidential-computing hardware executes them.
    Hardware,
    /// The emulated platform on plain KVM: each is an `out` to its doorbell port that
    /// leaves the operand registers for the host; TDCALL raises #UD there, and the
    /// #UD handler rings its doorbell (`tdx/trap.rs`).
    Doorbell,
}

impl Backend {
    /// The backend for a hypervisor whose CPUID 0x4000_0000 signature is `signature`,
    /// on a platform whose emulation announces itself as `emulated`.
    pub fn from_signature(signature: [u8; 12], emulated: [u8; 12]) -> Self {
        if signature == emulated {
            Self::Doorbell
        } else {
            Self::Hardware
        }
    }

    /// Whether SYSCALL must enter through the user-accessible trampoline: on the
    /// emulated platforms the host's software virtualization may deliver an app's
    /// SYSCALL to LSTAR without leaving ring 3 (`arch/syscall_entry.rs`).
    pub fn syscall_via_trampoline(self) -> bool {
        self == Self::Doorbell
    }
}

/// CPUID 0x4000_0000's hypervisor signature (EBX, ECX, EDX).
pub fn hypervisor_signature() -> [u8; 12] {
    let sig = crate::arch::cpu::cpuid(0x4000_0000, 0);
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&sig.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&sig.ecx.to_le_bytes());
    s[8..12].copy_from_slice(&sig.edx.to_le_bytes());
    s
}

/// What a page-state change makes a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Guest-owned, encrypted memory.
    Private,
    /// Memory the host reads and writes.
    Shared,
}

/// A 2 MiB validation or acceptance that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The 2 MiB page is validated (or accepted) now.
    Done,
    /// The host maps the region with smaller pages: validate it 4 KiB at a time (SNP
    /// FAIL_SIZEMISMATCH, TDX TDX_PAGE_SIZE_MISMATCH).
    SizeMismatch,
}

/// The bits page-table entries carry in their address field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PteMasks {
    /// Set in private mappings (the SNP C-bit), else 0.
    pub private: u64,
    /// Set in shared mappings (the TDX shared bit), else 0.
    pub shared: u64,
}

/// The Linux device through which an app asks for attestation evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestDevice {
    /// `/dev/sev-guest` (Linux `include/uapi/linux/sev-guest.h`).
    SevGuest,
    /// `/dev/tdx_guest` (Linux `include/uapi/linux/tdx-guest.h`).
    TdxGuest,
}

impl GuestDevice {
    /// Its name in `/dev`.
    pub const fn name(self) -> &'static [u8] {
        match self {
            Self::SevGuest => b"sev-guest",
            Self::TdxGuest => b"tdx_guest",
        }
    }

    /// Its place among the inode numbers of the overlaid devices (`fs.rs`).
    pub const fn inode_index(self) -> u64 {
        match self {
            Self::SevGuest => 6,
            Self::TdxGuest => 7,
        }
    }

    /// The minor number it has on Linux (a misc device: major 10, dynamic minor; the
    /// numbers here are arbitrary but stable).
    pub const fn minor(self) -> u64 {
        match self {
            Self::SevGuest => 0x7C,
            Self::TdxGuest => 0x7D,
        }
    }
}

/// Largest report [`GuestPlatform::guest_report`] returns.
const MAX_GUEST_REPORT: usize = if REPORT_RSP_SIZE > TDREPORT_SIZE {
    REPORT_RSP_SIZE
} else {
    TDREPORT_SIZE
};

const _: () = assert!(MAX_GUEST_REPORT >= REPORT_RSP_SIZE && MAX_GUEST_REPORT >= TDREPORT_SIZE);

/// A report as the platform's Linux guest device returns it, in private memory.
#[derive(Debug, Clone)]
pub struct GuestReport {
    bytes: [u8; MAX_GUEST_REPORT],
    len: usize,
}

impl GuestReport {
    /// A report of `bytes` (cut to the largest report).
    pub fn new(bytes: &[u8]) -> Self {
        let len = bytes.len().min(MAX_GUEST_REPORT);
        let mut r = Self {
            bytes: [0; MAX_GUEST_REPORT],
            len,
        };
        r.bytes[..len].copy_from_slice(&bytes[..len]);
        r
    }

    /// The report.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Why the platform gave no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportError {
    /// The host refused the request; the platform's exit information (SNP:
    /// SW_EXITINFO2), which Linux hands back to the caller.
    Exit(u64),
    /// The request failed inside the guest or the answer was refused.
    Failed,
}

/// Evidence for `nacre attest`, placed at the start of the hostcall data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Complete: `len` bytes of `kind`.
    Ready { kind: EvidenceKind, len: u64 },
    /// The host is still producing it (TDX GetQuote in flight); `status` is what to
    /// report if the firmware stops waiting.
    Pending { status: u64 },
}

/// Everything the firmware asks of the platform it runs on.
pub trait GuestPlatform: core::fmt::Debug + Send {
    /// How trapping instructions reach the host.
    fn backend(&self) -> Backend;

    /// The address bits of private and shared page-table entries.
    fn pte_masks(&self) -> PteMasks;

    /// Guest RAM must end at or below this address.
    fn ram_limit(&self) -> u64;

    /// The platform's own launch pages, validated by the platform at launch besides
    /// the image, the boot information and the parameter page: `(GPA, bytes)`.
    fn launch_pages(&self) -> &'static [(u64, u64)];

    /// Whether memory reads as zeros once it has been made private and validated or
    /// accepted (then fresh frames need no clearing).
    fn fresh_memory_is_zero(&self) -> bool;

    /// The Linux device for attestation evidence, listed in `/dev`.
    fn guest_device(&self) -> GuestDevice;

    /// Before the firmware's own page tables go live: create the page tables the
    /// platform's shared pages will need (`alloc` is the boot pool).
    fn prepare_tables(
        &mut self,
        pt: &mut PageTables,
        alloc: &mut dyn TableAlloc,
    ) -> Result<(), FwError>;

    /// Once the firmware's own page tables are live: make and register the pages the
    /// platform shares with the host (for each of the guest's `cpus` vCPUs where it
    /// keeps some per vCPU), read what the platform left at launch.
    fn setup(&mut self, pt: &mut PageTables, cpus: u32) -> Result<(), FwError>;

    /// On a vCPU that did not boot, once it has the kernel: what the platform keeps per
    /// vCPU (SEV-SNP: the GHCB registration, which the host keeps per vCPU).
    fn start_cpu(&mut self) -> Result<(), FwError> {
        Ok(())
    }

    /// The pages of the measured firmware that [`Self::setup`] made shared, which the
    /// firmware's record of validated pages must not count: the first one's GPA and
    /// how many follow it (0: none).
    fn rescinded_pages(&self) -> (u64, u64);

    /// Change `[gpa, gpa + len)` (4 KiB aligned, never validated or accepted) to
    /// `state` in the host's view; with `allow_2m`, in 2 MiB units where aligned.
    fn page_state_change(
        &mut self,
        gpa: u64,
        len: u64,
        state: PageState,
        allow_2m: bool,
    ) -> Result<(), FwError>;

    /// Validate (SNP PVALIDATE) or accept (TDX TDG.MEM.PAGE.ACCEPT) the 4 KiB page at
    /// `gpa`. "Already validated" is an error ([`FwError::AlreadyValidated`]): the
    /// caller's record says the page never was, so the host may be remapping memory.
    ///
    /// # Safety
    /// The page must hold nothing in use: accepting zeroes it, and validating makes
    /// whatever the host put there the guest's.
    unsafe fn validate_4k(&mut self, gpa: u64) -> Result<(), FwError>;

    /// [`Self::validate_4k`] for the 2 MiB page at `gpa` (2 MiB aligned), which may
    /// answer that the host maps the region at 4 KiB.
    ///
    /// # Safety
    /// As [`Self::validate_4k`], for the 2 MiB page.
    unsafe fn validate_2m(&mut self, gpa: u64) -> Result<Validation, FwError>;

    /// Make `[gpa, gpa + len)` (4 KiB aligned, never handed out) usable as private
    /// memory: hand it to the guest where the platform needs that, then validate or
    /// accept it ([`Self::validate_range`]). Returns the number of 2 MiB regions that
    /// had to be done 4 KiB at a time.
    ///
    /// # Safety
    /// As [`Self::validate_4k`], for the whole range.
    unsafe fn accept_range(
        &mut self,
        gpa: u64,
        len: u64,
        four_k_only: bool,
    ) -> Result<u64, FwError>;

    /// Validate or accept `[gpa, gpa + len)` (4 KiB aligned): 2 MiB at a time where
    /// aligned (unless `four_k_only`), 4 KiB at a time where the host answers with a
    /// size mismatch. An error names the page that failed. Returns the number of
    /// 2 MiB regions that fell back to 4 KiB.
    ///
    /// # Safety
    /// As [`Self::validate_4k`], for the whole range.
    unsafe fn validate_range(
        &mut self,
        gpa: u64,
        len: u64,
        four_k_only: bool,
    ) -> Result<u64, FwError> {
        let end = gpa + len;
        let mut at = gpa;
        let mut mismatches = 0;
        while at < end {
            if !four_k_only && at.is_multiple_of(PAGE_SIZE_2M) && end - at >= PAGE_SIZE_2M {
                // SAFETY: the caller guarantees the whole range holds nothing in use;
                // `at` is 2 MiB aligned and its region lies inside the range.
                if unsafe { self.validate_2m(at) }? == Validation::SizeMismatch {
                    mismatches += 1;
                    for page in (at..at + PAGE_SIZE_2M).step_by(PAGE_SIZE_4K as usize) {
                        // SAFETY: a page of the region above.
                        unsafe { self.validate_4k(page) }?;
                    }
                }
                at += PAGE_SIZE_2M;
            } else {
                // SAFETY: the caller guarantees the whole range, this page among it,
                // holds nothing in use.
                unsafe { self.validate_4k(at) }?;
                at += PAGE_SIZE_4K;
            }
        }
        Ok(mismatches)
    }

    /// Tell the host a hostcall is waiting in the area at page number `page`.
    fn ring_hostcall(&mut self, page: u64) -> Result<(), FwError>;

    /// A report for `report_data` as the platform's Linux guest device returns it
    /// (SNP: MSG_REPORT_RSP's payload for VMPL `vmpl`; TDX: the TDREPORT_STRUCT).
    /// Shared pages the request needs come from the end of `io`.
    fn guest_report(
        &mut self,
        report_data: &[u8; REPORT_DATA_SIZE],
        vmpl: u32,
        io: &HostcallArea,
    ) -> Result<GuestReport, ReportError>;

    /// Start producing evidence of this launch bound to `report_data` for the host
    /// (SNP: the signed report; TDX: a quote), in the hostcall data area.
    fn evidence(
        &mut self,
        report_data: &[u8; REPORT_DATA_SIZE],
        io: &mut HostcallArea,
    ) -> Result<Evidence, FwError>;

    /// Look again at evidence that was [`Evidence::Pending`].
    fn evidence_poll(&mut self, io: &mut HostcallArea) -> Result<Evidence, FwError>;

    /// Ask the host to end the guest with nacre's reason `code`, then halt.
    fn terminate(&self, code: u8) -> !;
}

/// The platform as the code that cannot reach the platform object knows it: the
/// fatal-error path (which may run before the object exists, or while the code that
/// holds it is suspended) and the #UD handler that forwards TDCALL on the emulated TDX
/// platform. Recorded once by [`detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// Which platform.
    pub kind: PlatformKind,
    /// How its instructions reach the host.
    pub backend: Backend,
}

static RUNNING: spin::Once<Running> = spin::Once::new();

/// The platform recorded at boot (`None` before [`detect`]).
pub fn running() -> Option<Running> {
    RUNNING.get().copied()
}

/// Read (`write` = `None`) or write a local APIC register (x2APIC MSRs 0x800 to
/// 0x8FF, IA32_APIC_BASE, IA32_TSC_DEADLINE) the way the platform lets a guest reach
/// it, on any vCPU and without the kernel: on SEV-SNP every access is an MSR NAE
/// event through this vCPU's GHCB; on TDX the registers the CPU virtualizes are
/// plain RDMSR/WRMSR and the others a TDVMCALL<Instruction.RDMSR/WRMSR>
/// ([`tdx::cpu_virtualizes`]). The emulated platforms take the same calls through
/// their doorbells. A refusal ends the guest: without its local APIC the firmware
/// cannot keep its promises (time slices, wake-ups, TLB shoot-downs).
pub fn apic_msr(msr: u32, write: Option<u64>) -> u64 {
    let refused = |status| crate::fatal_error(FwError::Apic { msr, status });
    match running() {
        Some(Running {
            kind: PlatformKind::Snp,
            backend,
        }) => snp::ghcb::apic_msr(backend, msr, write).unwrap_or_else(|e| match e {
            snp::ghcb::ApicMsrError::Refused { info1, .. } => refused(info1),
            snp::ghcb::ApicMsrError::NoGhcb => refused(0),
            // An answer without its value is a malformed answer, not a refusal.
            snp::ghcb::ApicMsrError::NoValue => crate::fatal_error(FwError::GhcbAnswer {
                exit_code: nacre_shared_abi::snp::ghcb::exit_code::MSR,
            }),
        }),
        Some(Running {
            kind: PlatformKind::Tdx,
            ..
        }) if !tdx::cpu_virtualizes(msr) => tdx::vmcall_msr(msr, write).unwrap_or_else(refused),
        _ => {
            let mut m = x86_64::registers::model_specific::Msr::new(msr);
            // SAFETY: the caller names a local APIC register of this vCPU that the
            // platform lets the guest reach directly; reading one has no effect, and
            // writing one only changes how interrupts reach this vCPU (the caller's
            // intent).
            unsafe {
                match write {
                    Some(v) => {
                        m.write(v);
                        0
                    }
                    None => m.read(),
                }
            }
        }
    }
}

/// Where the platform object lives for the firmware's lifetime.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a single value in a static for the firmware's lifetime"
)]
enum Slot {
    Snp(snp::Snp),
    Tdx(tdx::Tdx),
}

static mut SLOT: Option<Slot> = None;

/// Check that the CPU is the platform `kind` the measured boot information names and
/// set it up as far as the firmware's page tables need (SNP: SEV_STATUS, the C-bit,
/// the hypervisor's features; TDX: CPUID leaf 0x21 and TDG.VP.INFO for the shared
/// bit). Returns the platform for the firmware's lifetime; only the first call
/// succeeds.
pub fn detect(
    bi: &BootInfo,
    kind: PlatformKind,
) -> Result<&'static mut dyn GuestPlatform, FwError> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::Relaxed) {
        return Err(FwError::BootInfo);
    }
    let emulated = match kind {
        PlatformKind::Snp => EMULATED_SNP_SIGNATURE,
        PlatformKind::Tdx => EMULATED_TDX_SIGNATURE,
    };
    let backend = Backend::from_signature(hypervisor_signature(), emulated);
    // Recorded before the platform's first instruction: a failing check terminates
    // through it, and on the emulated TDX platform TDG.VP.INFO already needs the #UD
    // handler to forward it.
    RUNNING.call_once(|| Running { kind, backend });
    let slot = match kind {
        PlatformKind::Snp => Slot::Snp(snp::Snp::detect(bi, backend)?),
        PlatformKind::Tdx => Slot::Tdx(tdx::Tdx::detect(bi, backend)?),
    };
    let cell = &raw mut SLOT;
    // SAFETY: TAKEN lets only this first call through, so this is the only reference
    // ever made to SLOT.
    let stored = unsafe { (*cell).insert(slot) };
    Ok(match stored {
        Slot::Snp(s) => s,
        Slot::Tdx(t) => t,
    })
}

/// An exception the platform raises for its own instructions: on SEV-SNP hardware
/// CPUID raises #VC, answered from the CPUID page (`snp/vc.rs`); in a real TD CPUID
/// raises #VE for the leaves the TDX module leaves to the host (`tdx/ve.rs`); on the
/// emulated TDX platform TDCALL raises #UD, which goes to the host and resumes after
/// the instruction (`tdx/trap.rs`). `false` if `frame` is anything else.
pub fn forward_platform_trap(frame: &mut crate::arch::idt::TrapFrame) -> bool {
    // By vector first: page faults, the common case, pass through one comparison.
    match frame.vector {
        snp::vc::VC_VECTOR => snp::vc::handle_cpuid(frame),
        tdx::ve::VE_VECTOR => tdx::ve::handle_cpuid(frame),
        tdx::trap::UD_VECTOR => tdx::trap::forward_tdcall(frame),
        _ => false,
    }
}

/// Ask the host to end the guest with nacre's reason `code`: the GHCB MSR protocol
/// termination request on SNP, TDVMCALL ReportFatalError on TDX. Before the platform
/// is known, a triple fault. For code that holds the platform,
/// [`GuestPlatform::terminate`] does the same.
pub fn terminate(code: u8) -> ! {
    match running() {
        Some(Running {
            kind: PlatformKind::Snp,
            backend,
        }) => snp::terminate(backend, code),
        Some(Running {
            kind: PlatformKind::Tdx,
            ..
        }) => tdx::report_fatal_error(u64::from(code)),
        None => crate::arch::cpu::triple_fault(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Call, FakePlatform};
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    fn validate(
        p: &mut FakePlatform,
        gpa: u64,
        len: u64,
        four_k_only: bool,
    ) -> Result<u64, FwError> {
        // SAFETY: the fake validates nothing.
        unsafe { p.validate_range(gpa, len, four_k_only) }
    }

    #[test]
    fn an_aligned_range_is_validated_2m_at_a_time() {
        let mut p = FakePlatform::default();
        assert_eq!(validate(&mut p, 4 * MIB, 4 * MIB, false), Ok(0));
        assert_eq!(
            p.calls,
            [Call::Validate2m(4 * MIB), Call::Validate2m(6 * MIB)]
        );
    }

    #[test]
    fn four_k_only_validates_page_by_page() {
        let mut p = FakePlatform::default();
        assert_eq!(validate(&mut p, 2 * MIB, 2 * MIB, true), Ok(0));
        assert_eq!(p.validations(), (512, 0));
        assert_eq!(p.calls.first(), Some(&Call::Validate4k(2 * MIB)));
        assert_eq!(p.calls.last(), Some(&Call::Validate4k(4 * MIB - 4096)));
    }

    #[test]
    fn a_size_mismatch_falls_back_to_4k_for_that_region_only() {
        let mut p = FakePlatform {
            mismatch_2m: std::vec![2 * MIB],
            ..Default::default()
        };
        assert_eq!(validate(&mut p, 0, 6 * MIB, false), Ok(1));
        assert_eq!(p.validations(), (512, 3));
        // The fallback covers exactly the mismatched region, in order.
        let four_k: Vec<u64> = p
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Validate4k(gpa) => Some(*gpa),
                _ => None,
            })
            .collect();
        let want: Vec<u64> = (2 * MIB..4 * MIB).step_by(4096).collect();
        assert_eq!(four_k, want);
    }

    #[test]
    fn unaligned_edges_go_4k_and_the_middle_2m() {
        let mut p = FakePlatform::default();
        let start = 2 * MIB - 2 * 4096;
        assert_eq!(validate(&mut p, start, 2 * MIB + 3 * 4096, false), Ok(0));
        assert_eq!(
            p.calls,
            [
                Call::Validate4k(start),
                Call::Validate4k(start + 4096),
                Call::Validate2m(2 * MIB),
                Call::Validate4k(4 * MIB),
            ]
        );
    }

    #[test]
    fn a_failure_in_the_fallback_names_its_page_and_stops() {
        let bad = 2 * MIB + 7 * 4096;
        let mut p = FakePlatform {
            mismatch_2m: std::vec![2 * MIB],
            failing: std::vec![bad],
            ..Default::default()
        };
        let err = validate(&mut p, 2 * MIB, 4 * MIB, false);
        assert!(matches!(err, Err(FwError::Pvalidate { gpa, .. }) if gpa == bad));
        assert_eq!(p.calls.last(), Some(&Call::Validate4k(bad)));
    }

    #[test]
    fn already_validated_is_an_error_with_the_page() {
        let mut p = FakePlatform {
            already: std::vec![4 * MIB],
            ..Default::default()
        };
        assert_eq!(
            validate(&mut p, 2 * MIB, 4 * MIB, false),
            Err(FwError::AlreadyValidated { gpa: 4 * MIB })
        );
    }

    #[test]
    fn the_backend_comes_from_the_hypervisor_signature() {
        let emulated = *b"NacreEmuSNP\0";
        assert_eq!(
            Backend::from_signature(emulated, emulated),
            Backend::Doorbell
        );
        assert_eq!(
            Backend::from_signature(*b"KVMKVMKVM\0\0\0", emulated),
            Backend::Hardware
        );
        assert!(Backend::Doorbell.syscall_via_trampoline());
        assert!(!Backend::Hardware.syscall_via_trampoline());
    }

    #[test]
    fn guest_reports_keep_their_length_and_are_cut_at_the_largest() {
        let r = GuestReport::new(&[7; 100]);
        assert_eq!(r.as_bytes(), &[7; 100][..]);
        let big = [1u8; MAX_GUEST_REPORT + 10];
        assert_eq!(GuestReport::new(&big).as_bytes().len(), MAX_GUEST_REPORT);
    }

    #[test]
    fn guest_devices_have_distinct_linux_names_and_numbers() {
        let (s, t) = (GuestDevice::SevGuest, GuestDevice::TdxGuest);
        assert_eq!(s.name(), b"sev-guest");
        assert_eq!(t.name(), b"tdx_guest");
        assert_ne!(s.minor(), t.minor());
        assert_ne!(s.inode_index(), t.inode_index());
    }
}
