//! The confidential-computing platform the firmware runs on: SEV-SNP or TDX, on
//! hardware or on the matching emulated platform (which differ from hardware only in
//! how trapping instructions reach the host: see shared-abi `doorbell.rs`). The
//! platform kind comes from the measured boot handoff, never from the host.

pub mod hostcall;
pub mod snp;
pub mod tdx;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::snp::msr_protocol::TERM_SET_NACRE;

static EMULATED: AtomicBool = AtomicBool::new(false);
static KIND: AtomicU32 = AtomicU32::new(0);

/// Select the doorbells (emulated platform) or the real instructions (hardware).
pub fn set_emulated(emulated: bool) {
    EMULATED.store(emulated, Ordering::Relaxed);
}

/// Whether this is an emulated platform.
pub fn emulated() -> bool {
    EMULATED.load(Ordering::Relaxed)
}

/// Record the platform kind (from the measured boot information).
pub fn set_kind(kind: PlatformKind) {
    KIND.store(kind as u32, Ordering::Relaxed);
}

/// The platform kind, once the boot information named it.
pub fn kind() -> Option<PlatformKind> {
    PlatformKind::try_from(KIND.load(Ordering::Relaxed)).ok()
}

/// Platform state after boot.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a single value for the firmware's lifetime, and no heap to box into"
)]
pub enum Platform {
    /// AMD SEV-SNP.
    Snp(snp::Snp),
    /// Intel TDX.
    Tdx(tdx::Tdx),
}

impl Platform {
    /// Tell the host a hostcall is waiting in the area at page number `page`.
    pub fn ring_hostcall(&mut self, page: u64) -> Result<(), crate::error::FwError> {
        match self {
            Self::Snp(s) => s.ring_hostcall(page),
            Self::Tdx(t) => t.ring_hostcall(page),
        }
    }
}

/// Ask the host to end the guest with nacre's reason `code`: the GHCB MSR protocol
/// termination request (set `TERM_SET_NACRE`) on SNP, TDVMCALL ReportFatalError on
/// TDX. Before the platform is known, only halt.
pub fn terminate(code: u8) -> ! {
    match kind() {
        Some(PlatformKind::Snp) => snp::Snp::terminate(TERM_SET_NACRE, code),
        Some(PlatformKind::Tdx) => tdx::report_fatal_error(u64::from(code)),
        None => crate::arch::cpu::halt_forever(),
    }
}
