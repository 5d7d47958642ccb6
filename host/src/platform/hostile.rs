//! The test hooks that make an emulated host lie on purpose (env `NACRE_TEST_HOSTILE`),
//! so that tests can check the guest's reaction to each lie (docs/design.md,
//! "Hostile-host tests"; the scenarios are listed in docs/threat-model.md).
//!
//! Each hook is one lie, told as narrowly as the scenario allows: once, at the point
//! named in its documentation, with the rest of the host behaving. Nothing here is
//! reachable without the environment variable: the platforms read it once at launch
//! ([`Hostile::from_env`]) and hand the exit handlers a [`Lies`] that says no to every
//! question when it is unset.

use crate::platform::hostcall::HostileHostcall;
use nacre_shared_abi::boot::{
    HostRequest, MemoryMapEntry, HOST_REQUEST_MAGIC, HOST_REQUEST_OFFSET, MEMORY_MAP_TYPE_MEMORY,
};
use zerocopy::IntoBytes;

/// The environment variable that names the hook.
pub const VAR: &str = "NACRE_TEST_HOSTILE";

/// Ways a test can make the host misbehave. The `(SNP)` and `(TDX)` ones exist only on
/// that emulated platform (the other platform has no such protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// (SNP) Place the boot-handoff page but leave it unvalidated: the guest's first
    /// read of it is a private access to memory it never validated.
    UnvalidatedBootInfo,
    /// Leave the parameter page hypervisor-owned (shared): the guest reads shared
    /// memory through its private view.
    SharedParamPage,
    /// (TDX) Add a page the image does not contain before the TD runs, so that the
    /// guest finds it accepted already when it accepts that memory.
    PreAcceptedPage,
    /// Answer every console read claiming one byte more than the guest asked for.
    OverlongRead,
    /// Return from every sleep at once.
    EarlyWake,
    /// Send the guest a stream of interrupts it never asked for (the timer's vector,
    /// the wake-up vector and vectors nothing uses), about one every 200 us.
    InterruptStorm,
    /// Hide the TSC-deadline timer from CPUID, so the guest has no timer to end
    /// time slices with.
    NoTimer,
    /// Make every vCPU (`--cpus`) and report them all in the parameter page, but run
    /// only the boot processor: the application processors never start.
    ApNeverStarted,
    /// (SNP) The first page-state change through the GHCB: change one page and report
    /// it; when the guest resumes, report that page as not changed after all.
    PscProgressBackwards,
    /// (SNP) The first page-state change through the GHCB: do it all, then report
    /// progress one entry past the descriptor's last.
    PscBeyondEnd,
    /// (SNP) The first page-state change through the GHCB: change nothing, but report
    /// the whole descriptor processed.
    PscUnconvertedClaim,
    /// (SNP) The first page-state change through the GHCB: do it all, then rewrite the
    /// header's last entry.
    PscHeaderRewrite,
    /// (SNP) The first page-state change through the GHCB: do it all, then rewrite the
    /// first entry's GFN in the reply.
    PscEntryRewrite,
    /// (SNP) Answer the first read of a local APIC register through the GHCB with the
    /// value but without RAX and RDX marked valid.
    GhcbValidBitmap,
    /// (SNP) Serve the first hostcall, then claim in SW_EXITINFO1 that the IOIO event
    /// was refused.
    GhcbExitInfo,
    /// Refuse the first local APIC register access (a GHCB MSR event on SNP, a
    /// TDVMCALL<Instruction.RDMSR/WRMSR> on TDX).
    ApicRefused,
    /// (TDX) Answer the first MapGPA with RETRY and a GPA just past the range.
    MapGpaRetryOutside,
    /// (TDX) Answer the first MapGPA with RETRY after part of the range, and the next
    /// with RETRY at a GPA below where that call started.
    MapGpaRetryBackwards,
    /// Once the guest validated (SNP) or accepted (TDX) the first page above the image
    /// (where the firmware keeps its record of validated pages), take it back and let
    /// the next access fault in a fresh page: removed and re-added.
    RemappedPage,
    /// (SNP) Answer the first guest request with the response's sequence number
    /// rewritten.
    GuestRequestSeqno,
    /// (SNP) Answer the first guest request with a damaged authentication tag.
    GuestRequestBadTag,
    /// (SNP) Answer the second guest request with the first one's response again.
    GuestRequestReplay,
    /// (SNP) Answer the first guest request with a wrong message size in the header.
    GuestRequestLength,
    /// Put other report data than `nacre attest` chose in the parameter page, so
    /// the evidence is bound to data the verifier never asked for.
    OtherReportData,
    /// Answer the first console write claiming one byte more than the guest sent.
    OverlongWrite,
    /// Answer every console poll with an fd ready that the guest never asked about.
    PollUnaskedFd,
    /// Answer every clock hostcall with a time an hour before the previous answer
    /// (the first an hour before the host's clock).
    ClockBackwards,
    /// (SNP) Report in CPUID 0x8000_001F another C-bit position than the measured
    /// CPUID page holds.
    CpuidMismatch,
    /// Write a memory map whose second entry overlaps the first.
    MemoryMapOverlap,
    /// (TDX) Answer GetQuote with a quote length one byte beyond the guest's buffer.
    QuoteOverlong,
    /// Set the vCPU's TSC back [`TSC_REWIND_SECONDS`], once the app runs (at the
    /// [`TSC_REWIND_TURN`]-th GHCB call or TDVMCALL after its entry: hostcalls, local
    /// APIC accesses), as a hypervisor that controls the guest's TSC offset can
    /// (SEV-SNP without Secure TSC).
    TscRewind,
    /// Answer the first socket receive claiming one byte more than the guest asked
    /// for.
    NetOverlongRecv,
    /// Answer every watch request (Net Arm) at once with the events asked for, whether
    /// the socket has them or not.
    NetFalseReadiness,
    /// Answer the first accept with the handle of the listening socket itself (one the
    /// guest uses already) instead of a new connection's.
    NetForeignAccept,
    /// After every socket close, report readiness (and the end of the stream) for the
    /// closed handle, as if data had come for the connection after it closed.
    NetClosedEvents,
}

/// How far [`Hostile::TscRewind`] sets the TSC back: more than the second within which
/// KVM takes a host's TSC write for a synchronization and keeps the old offset
/// (`kvm_synchronize_tsc`, `arch/x86/kvm/x86.c`).
pub const TSC_REWIND_SECONDS: u64 = 3;
/// At which GHCB call or TDVMCALL after the app's entry [`Hostile::TscRewind`] strikes
/// (counted from 0): late enough that the app has read its clocks.
pub const TSC_REWIND_TURN: u32 = 4;

/// IA32_TIME_STAMP_COUNTER (Intel SDM vol. 4, table 2-2; AMD APM vol. 2, 13.2.4).
const IA32_TSC: u32 = 0x10;

/// [`Hostile::TscRewind`]: when `app_entered` and this is its turn, set `vcpu`'s TSC
/// (`tsc_khz` kHz) back [`TSC_REWIND_SECONDS`]. An error when KVM refuses: the
/// scenario could not be played.
pub fn rewind_tsc(
    lies: &mut Lies,
    app_entered: bool,
    vcpu: &mut dyn crate::vmm::vcpu::Vcpu,
    tsc_khz: u64,
) -> Result<(), crate::exits::RunError> {
    if !app_entered || lies.turn(Hostile::TscRewind) != Some(TSC_REWIND_TURN) {
        return Ok(());
    }
    let refused = || crate::exits::RunError::Host("KVM refused the TSC of the tsc-rewind scenario");
    let now = vcpu.msr(IA32_TSC, None)?.ok_or_else(refused)?;
    let back = tsc_khz.saturating_mul(1000 * TSC_REWIND_SECONDS);
    vcpu.msr(IA32_TSC, Some(now.saturating_sub(back)))?
        .ok_or_else(refused)?;
    // A KVM without TSC offsetting (the PVM backend: the guest reads the host's TSC)
    // takes the write and changes nothing; the scenario must not pass unplayed.
    let after = vcpu.msr(IA32_TSC, None)?.ok_or_else(refused)?;
    if after >= now {
        return Err(crate::exits::RunError::Host(
            "this KVM does not apply a TSC written by the host (no TSC offsetting): the \
             tsc-rewind scenario cannot be played here",
        ));
    }
    Ok(())
}

/// Each hook's value of [`VAR`], as docs/design.md lists them.
pub const NAMES: [(&str, Hostile); 35] = [
    ("unvalidated-boot-info", Hostile::UnvalidatedBootInfo),
    ("shared-param-page", Hostile::SharedParamPage),
    ("pre-accepted-page", Hostile::PreAcceptedPage),
    ("overlong-read", Hostile::OverlongRead),
    ("early-wake", Hostile::EarlyWake),
    ("interrupt-storm", Hostile::InterruptStorm),
    ("no-timer", Hostile::NoTimer),
    ("ap-never-started", Hostile::ApNeverStarted),
    ("psc-progress-backwards", Hostile::PscProgressBackwards),
    ("psc-beyond-end", Hostile::PscBeyondEnd),
    ("psc-unconverted-claim", Hostile::PscUnconvertedClaim),
    ("psc-header-rewrite", Hostile::PscHeaderRewrite),
    ("psc-entry-rewrite", Hostile::PscEntryRewrite),
    ("ghcb-valid-bitmap", Hostile::GhcbValidBitmap),
    ("ghcb-exit-info", Hostile::GhcbExitInfo),
    ("apic-refused", Hostile::ApicRefused),
    ("map-gpa-retry-outside", Hostile::MapGpaRetryOutside),
    ("map-gpa-retry-backwards", Hostile::MapGpaRetryBackwards),
    ("remapped-page", Hostile::RemappedPage),
    ("guest-request-seqno", Hostile::GuestRequestSeqno),
    ("guest-request-bad-tag", Hostile::GuestRequestBadTag),
    ("guest-request-replay", Hostile::GuestRequestReplay),
    ("guest-request-length", Hostile::GuestRequestLength),
    ("other-report-data", Hostile::OtherReportData),
    ("overlong-write", Hostile::OverlongWrite),
    ("poll-unasked-fd", Hostile::PollUnaskedFd),
    ("clock-backwards", Hostile::ClockBackwards),
    ("cpuid-mismatch", Hostile::CpuidMismatch),
    ("memory-map-overlap", Hostile::MemoryMapOverlap),
    ("quote-overlong", Hostile::QuoteOverlong),
    ("tsc-rewind", Hostile::TscRewind),
    ("net-overlong-recv", Hostile::NetOverlongRecv),
    ("net-false-readiness", Hostile::NetFalseReadiness),
    ("net-foreign-accept", Hostile::NetForeignAccept),
    ("net-closed-events", Hostile::NetClosedEvents),
];

impl Hostile {
    /// From the environment variable [`VAR`], if it is set to a hook's name.
    pub fn from_env() -> Option<Self> {
        Self::parse(&std::env::var(VAR).ok()?)
    }

    /// From a value of [`VAR`], as docs/design.md lists them.
    pub fn parse(value: &str) -> Option<Self> {
        NAMES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|&(_, hook)| hook)
    }

    /// The hook's value of [`VAR`].
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, hook)| *hook == self)
            .map_or("", |&(name, _)| name)
    }

    /// The hostcall misbehaviour this is, if it is one.
    pub fn hostcall(self) -> Option<HostileHostcall> {
        match self {
            Hostile::OverlongRead => Some(HostileHostcall::OverlongRead),
            Hostile::EarlyWake => Some(HostileHostcall::EarlyWake),
            Hostile::OverlongWrite => Some(HostileHostcall::OverlongWrite),
            Hostile::PollUnaskedFd => Some(HostileHostcall::PollUnaskedFd),
            Hostile::ClockBackwards => Some(HostileHostcall::ClockBackwards),
            Hostile::NetOverlongRecv => Some(HostileHostcall::NetOverlongRecv),
            Hostile::NetFalseReadiness => Some(HostileHostcall::NetFalseReadiness),
            Hostile::NetForeignAccept => Some(HostileHostcall::NetForeignAccept),
            Hostile::NetClosedEvents => Some(HostileHostcall::NetClosedEvents),
            _ => None,
        }
    }
}

/// The lie a test asked for, as the exit handlers see it: they ask whether it is
/// their turn to tell it, and how often they asked before.
#[derive(Debug, Default)]
pub struct Lies {
    hook: Option<Hostile>,
    /// How often the handler of the hook asked ([`Lies::turn`]).
    turns: u32,
    /// What a lie keeps between its turns (the response a replay sends again).
    pub kept: Vec<u8>,
}

impl Lies {
    /// The lies of hook `hook` (`None`: none, every question is answered no).
    pub fn new(hook: Option<Hostile>) -> Self {
        Self {
            hook,
            turns: 0,
            kept: Vec::new(),
        }
    }

    /// Whether the test asked for `lie`.
    pub fn asked(&self, lie: Hostile) -> bool {
        self.hook == Some(lie)
    }

    /// If the test asked for `lie`: how often its handler asked before (0 the first
    /// time), counting this time. `None` otherwise.
    pub fn turn(&mut self, lie: Hostile) -> Option<u32> {
        if !self.asked(lie) {
            return None;
        }
        let turn = self.turns;
        self.turns = self.turns.saturating_add(1);
        Some(turn)
    }

    /// Whether to tell `lie` now: the test asked for it and this is its handler's
    /// first turn.
    pub fn once(&mut self, lie: Hostile) -> bool {
        self.turn(lie) == Some(0)
    }
}

/// The parameter-page lies ([`Hostile::OtherReportData`],
/// [`Hostile::MemoryMapOverlap`]), told on the page the host is about to insert.
pub fn lie_in_parameter_page(hook: Option<Hostile>, page: &mut [u8; 4096]) {
    match hook {
        Some(Hostile::OtherReportData) => {
            let request = HOST_REQUEST_OFFSET;
            if page[request..request + HOST_REQUEST_MAGIC.len()] == HOST_REQUEST_MAGIC {
                page[request + core::mem::offset_of!(HostRequest, report_data)] ^= 1;
            }
        }
        Some(Hostile::MemoryMapOverlap) => {
            // A second RAM entry inside the first (which starts at page 0).
            let overlap = MemoryMapEntry {
                starting_gpa_page_number: 1,
                number_of_pages: 1,
                entry_type: MEMORY_MAP_TYPE_MEMORY,
                flags: 0,
                reserved: 0,
            };
            let size = overlap.as_bytes().len();
            page[size..2 * size].copy_from_slice(overlap.as_bytes());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_has_one_name_and_the_design_lists_it() {
        let design = include_str!("../../../docs/design.md");
        for (name, hook) in NAMES {
            assert_eq!(Hostile::parse(name), Some(hook), "{name}");
            assert_eq!(hook.name(), name);
            assert!(
                design.contains(&format!("`NACRE_TEST_HOSTILE={name}`")),
                "docs/design.md does not list {name}"
            );
        }
        for (i, (a, _)) in NAMES.iter().enumerate() {
            assert!(NAMES[i + 1..].iter().all(|(b, _)| a != b), "{a} twice");
        }
        assert_eq!(Hostile::parse("ap-never-started "), None);
        assert_eq!(Hostile::parse(""), None);
    }

    #[test]
    fn only_the_hostcall_lies_are_hostcall_lies() {
        assert_eq!(
            Hostile::OverlongWrite.hostcall(),
            Some(HostileHostcall::OverlongWrite)
        );
        assert_eq!(Hostile::ApNeverStarted.hostcall(), None);
        assert_eq!(Hostile::PscBeyondEnd.hostcall(), None);
    }

    #[test]
    fn the_parameter_page_lies_change_what_the_guest_parses() {
        use crate::platform::launch::parameter_page;
        use nacre_shared_abi::boot::{parse_memory_map, MemoryMapError};
        let asked = HostRequest::attest([7; 64]);
        let mut page = parameter_page(64 << 20, Some(asked), 1);
        lie_in_parameter_page(Some(Hostile::OtherReportData), &mut page);
        let told = HostRequest::parse(&page).unwrap().unwrap();
        assert_ne!(told.report_data, asked.report_data);
        assert_eq!(told.report_data[1..], asked.report_data[1..]);
        // Without a request there is no report data to change.
        let mut plain = parameter_page(64 << 20, None, 1);
        lie_in_parameter_page(Some(Hostile::OtherReportData), &mut plain);
        assert_eq!(plain, parameter_page(64 << 20, None, 1));
        let mut map = parameter_page(64 << 20, None, 1);
        assert_eq!(parse_memory_map(&map, 0), Ok(64 << 20));
        lie_in_parameter_page(Some(Hostile::MemoryMapOverlap), &mut map);
        assert_eq!(parse_memory_map(&map, 0), Err(MemoryMapError::Disordered));
        let mut honest = parameter_page(64 << 20, None, 1);
        lie_in_parameter_page(None, &mut honest);
        assert_eq!(honest, parameter_page(64 << 20, None, 1));
    }

    #[test]
    fn a_lie_is_told_only_when_asked_for_and_once() {
        let mut none = Lies::new(None);
        assert_eq!(none.turn(Hostile::PscBeyondEnd), None);
        assert!(!none.once(Hostile::PscBeyondEnd));
        let mut lies = Lies::new(Some(Hostile::PscBeyondEnd));
        assert!(!lies.once(Hostile::PscEntryRewrite), "another lie");
        assert!(lies.once(Hostile::PscBeyondEnd));
        assert!(!lies.once(Hostile::PscBeyondEnd), "told once");
        let mut steps = Lies::new(Some(Hostile::MapGpaRetryBackwards));
        let turns: Vec<_> = (0..3)
            .map(|_| steps.turn(Hostile::MapGpaRetryBackwards))
            .collect();
        assert_eq!(turns, [Some(0), Some(1), Some(2)]);
    }
}
