//! Intel TDX guest-host ABI: TDCALL leaves and status codes, the TDG.VP.VMCALL (GHCI)
//! sub-functions and statuses, the page-acceptance levels and the shared bit.
//!
//! Sources (docs/specs.md 6.1-6.4): Intel TDX Module ABI and GHCI specifications as
//! implemented by Linux `arch/x86/include/asm/shared/tdx.h` and td-shim
//! `tdx-tdcall/src/lib.rs`.

/// TDCALL leaf numbers (RAX on entry; docs/specs.md 6.1).
pub mod leaf {
    /// TDG.VP.VMCALL: a call to the host (GHCI, [`super::vmcall`]).
    pub const VP_VMCALL: u64 = 0;
    /// TDG.VP.INFO: GPAW in RCX bits 5:0, TD attributes in RDX.
    pub const VP_INFO: u64 = 1;
    /// TDG.MR.RTMR.EXTEND.
    pub const MR_RTMR_EXTEND: u64 = 2;
    /// TDG.VP.VEINFO.GET.
    pub const VP_VEINFO_GET: u64 = 3;
    /// TDG.MR.REPORT.
    pub const MR_REPORT: u64 = 4;
    /// TDG.MEM.PAGE.ACCEPT: RCX = GPA | level.
    pub const MEM_PAGE_ACCEPT: u64 = 6;
    /// TDG.VM.RD.
    pub const VM_RD: u64 = 7;
    /// TDG.VM.WR.
    pub const VM_WR: u64 = 8;
}

/// TDCALL completion status (RAX on return; docs/specs.md 6.1). Bit 63 set is an error;
/// bits 63:32 are the status class.
pub mod status {
    /// Success.
    pub const SUCCESS: u64 = 0;
    /// The error bit.
    pub const ERROR: u64 = 1 << 63;
    /// Class of TDX_OPERAND_BUSY (retry), in bits 63:32.
    pub const CLASS_OPERAND_BUSY: u64 = 0x8000_0200;
    /// Class of TDX_OPERAND_INVALID, in bits 63:32.
    pub const CLASS_OPERAND_INVALID: u64 = 0xC000_0100;
    /// TDX_OPERAND_INVALID with operand id 0 in bits 31:0 (RAX; the TDX module puts
    /// the operand's id there, RCX being 1: Linux `TDX_OPERAND_ID_RCX`). Compare
    /// statuses by [`class`].
    pub const OPERAND_INVALID: u64 = CLASS_OPERAND_INVALID << 32;
    /// TDX_OPERAND_BUSY (operand id 0).
    pub const OPERAND_BUSY: u64 = CLASS_OPERAND_BUSY << 32;
    /// TDX_PAGE_ALREADY_ACCEPTED: a warning (bit 63 clear), not a failure.
    pub const PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0B0A_0000_0000;
    /// TDX_PAGE_SIZE_MISMATCH: the accept level disagrees with the S-EPT mapping.
    pub const PAGE_SIZE_MISMATCH: u64 = 0xC000_0B0B_0000_0001;

    /// The class bits 63:32 of a status.
    pub const fn class(status: u64) -> u64 {
        status >> 32
    }

    /// Whether a status is an error (bit 63).
    pub const fn is_error(status: u64) -> bool {
        status & ERROR != 0
    }
}

/// TDG.MEM.PAGE.ACCEPT level in RCX bits 2:0 (docs/specs.md 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AcceptLevel {
    /// 4 KiB.
    L4K = 0,
    /// 2 MiB.
    L2M = 1,
    /// 1 GiB.
    L1G = 2,
}

impl AcceptLevel {
    /// Bytes covered.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::L4K => 1 << 12,
            Self::L2M => 1 << 21,
            Self::L1G => 1 << 30,
        }
    }

    /// RCX for accepting `gpa` at this level; `None` if `gpa` is not aligned to the
    /// level.
    pub const fn rcx(self, gpa: u64) -> Option<u64> {
        if gpa & (self.bytes() - 1) != 0 {
            None
        } else {
            Some(gpa | self as u64)
        }
    }

    /// Decode RCX: `None` for a reserved level or an unaligned GPA (the TDX module
    /// answers TDX_OPERAND_INVALID).
    pub const fn decode(rcx: u64) -> Option<(u64, Self)> {
        let level = match rcx & 0x7 {
            0 => Self::L4K,
            1 => Self::L2M,
            2 => Self::L1G,
            _ => return None,
        };
        let gpa = rcx & !0xFFF;
        if gpa & (level.bytes() - 1) != 0 {
            return None;
        }
        // Bits 11:3 are reserved.
        if rcx & 0xFF8 != 0 {
            return None;
        }
        Some((gpa, level))
    }
}

/// TDG.VP.VMCALL (GHCI; docs/specs.md 6.2): R10 = 0 (standard), R11 = sub-function, R12+
/// arguments; on return R10 is the sub-function status.
pub mod vmcall {
    /// Instruction.CPUID: R12 = leaf, R13 = subleaf; R12-R15 = EAX-EDX.
    pub const CPUID: u64 = 10;
    /// Instruction.HLT.
    pub const HLT: u64 = 12;
    /// Instruction.IO: R12 = size, R13 = direction (1 = out), R14 = port, R15 = value.
    pub const IO: u64 = 30;
    /// Instruction.RDMSR: R12 = MSR; R11 = value.
    pub const RDMSR: u64 = 31;
    /// Instruction.WRMSR: R12 = MSR, R13 = value.
    pub const WRMSR: u64 = 32;
    /// #VE.RequestMMIO.
    pub const REQUEST_MMIO: u64 = 48;
    /// MapGPA: R12 = start GPA (shared bit set = to shared), R13 = size; on RETRY,
    /// R11 = the GPA to resume from.
    pub const MAP_GPA: u64 = 0x10001;
    /// GetQuote: R12 = shared GPA of the buffer, R13 = its size.
    pub const GET_QUOTE: u64 = 0x10002;
    /// ReportFatalError: R12 = error code (bit 63: R13 holds a message GPA).
    pub const REPORT_FATAL_ERROR: u64 = 0x10003;
    /// SetupEventNotifyInterrupt: R12 = vector.
    pub const SETUP_EVENT_NOTIFY: u64 = 0x10004;

    /// Sub-function status: success.
    pub const SUCCESS: u64 = 0;
    /// Sub-function status: retry (MapGPA: resume at R11).
    pub const RETRY: u64 = 1;
    /// Sub-function status: invalid operand.
    pub const INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
    /// Sub-function status: GPA in use.
    pub const GPA_INUSE: u64 = 0x8000_0000_0000_0001;
    /// Sub-function status: alignment error.
    pub const ALIGN_ERROR: u64 = 0x8000_0000_0000_0002;

    /// ReportFatalError R12 bit 63: R13 holds the GPA of a message.
    pub const FATAL_ERROR_HAS_MESSAGE: u64 = 1 << 63;
}

/// The shared bit for a guest-physical address width (docs/specs.md 6.3: bit GPAW - 1);
/// `None` for widths TDX does not define (only 48 and 52).
pub const fn shared_bit(gpaw: u32) -> Option<u64> {
    match gpaw {
        48 | 52 => Some(1 << (gpaw - 1)),
        _ => None,
    }
}

/// TD attribute bits (TDG.VP.INFO RDX; docs/specs.md 6.4).
pub mod attributes {
    /// The TD is debuggable: its memory and state are readable by the host.
    pub const DEBUG: u64 = 1 << 0;
    /// The host may profile the TD with HGS+ (HGS_PLUS_PROF).
    pub const HGS_PLUS_PROF: u64 = 1 << 4;
    /// The host may profile the TD's performance (PERF_PROF).
    pub const PERF_PROF: u64 = 1 << 5;
    /// The host may profile the TD with PMT (PMT_PROF).
    pub const PMT_PROF: u64 = 1 << 6;
    /// ICSSD.
    pub const ICSSD: u64 = 1 << 16;
    /// Linear address space separation (LASS).
    pub const LASS: u64 = 1 << 27;
    /// EPT violations on pending private pages are not turned into #VE.
    pub const SEPT_VE_DISABLE: u64 = 1 << 28;
    /// The TD may be migrated.
    pub const MIGRATABLE: u64 = 1 << 29;
    /// Supervisor protection keys.
    pub const PKS: u64 = 1 << 30;
    /// Key Locker.
    pub const KL: u64 = 1 << 31;
    /// TPA.
    pub const TPA: u64 = 1 << 62;
    /// Performance monitoring.
    pub const PERFMON: u64 = 1 << 63;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn already_accepted_is_a_warning_and_size_mismatch_an_error() {
        assert!(!status::is_error(status::PAGE_ALREADY_ACCEPTED));
        assert!(status::is_error(status::PAGE_SIZE_MISMATCH));
        assert!(status::is_error(status::OPERAND_BUSY));
        assert_eq!(status::class(status::OPERAND_BUSY), 0x8000_0200);
        assert_eq!(status::class(status::OPERAND_INVALID), 0xC000_0100);
    }

    #[test]
    fn shared_bit_follows_gpaw() {
        assert_eq!(shared_bit(48), Some(1 << 47));
        assert_eq!(shared_bit(52), Some(1 << 51));
        assert_eq!(shared_bit(47), None);
        assert_eq!(shared_bit(0), None);
    }

    fn level() -> impl Strategy<Value = AcceptLevel> {
        prop_oneof![
            Just(AcceptLevel::L4K),
            Just(AcceptLevel::L2M),
            Just(AcceptLevel::L1G)
        ]
    }

    proptest! {
        #[test]
        fn accept_rcx_round_trips(level in level(), page in 0u64..(1 << 36)) {
            let gpa = (page << 12) & !(level.bytes() - 1);
            let rcx = level.rcx(gpa).expect("aligned");
            prop_assert_eq!(AcceptLevel::decode(rcx), Some((gpa, level)));
        }

        #[test]
        fn accept_rcx_rejects_what_the_module_rejects(rcx in any::<u64>()) {
            let level_bits = rcx & 7;
            let gpa = rcx & !0xFFF;
            let want = match level_bits {
                0 => Some(AcceptLevel::L4K),
                1 => Some(AcceptLevel::L2M),
                2 => Some(AcceptLevel::L1G),
                _ => None,
            }
            .filter(|l| gpa % l.bytes() == 0 && rcx & 0xFF8 == 0)
            .map(|l| (gpa, l));
            prop_assert_eq!(AcceptLevel::decode(rcx), want);
            if let Some((g, l)) = want {
                prop_assert_eq!(l.rcx(g), Some(rcx));
            }
        }

        #[test]
        fn unaligned_gpas_are_refused(level in level(), gpa in any::<u64>()) {
            prop_assert_eq!(level.rcx(gpa).is_some(), gpa % level.bytes() == 0);
        }
    }
}
