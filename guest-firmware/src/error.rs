//! The firmware's error type and the termination reasons it reports to the host.

use nacre_shared_abi::snp::rmp::RmpError;

/// Everything that can stop the boot or the app's memory management.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwError {
    /// The measured boot handoff is inconsistent.
    BootInfo,
    /// The host's memory map was refused.
    MemoryMap,
    /// Not running on SEV-SNP (SEV_STATUS), or the C-bit disagrees with the image.
    NotSnp,
    /// The host did not answer the MSR protocol as specified.
    MsrProtocol,
    /// The host refused or misreported a GHCB call.
    Ghcb {
        exit_code: u64,
        info1: u64,
        info2: u64,
    },
    /// The host's answer to a GHCB call lacks a field the call's answer must mark
    /// valid (a value read back).
    GhcbAnswer { exit_code: u64 },
    /// A page-state change failed or the host's progress report was invalid.
    PageStateChange { gfn: u64, detail: u64 },
    /// PVALIDATE failed.
    Pvalidate { gpa: u64, rc: Option<RmpError> },
    /// PVALIDATE reported no change where the firmware's own record says the page
    /// was not validated: the host may be remapping pages (trust assumption 3).
    AlreadyValidated { gpa: u64 },
    /// The firmware's own record says the page is validated already.
    DoubleValidation { gpa: u64 },
    /// Out of guest memory.
    OutOfMemory,
    /// The app ELF is malformed.
    BadApp,
    /// A hostcall reply was malformed.
    Hostcall,
    /// Not running in a TD (CPUID 0x21), or TDG.VP.INFO failed or gave an unusable
    /// GPA width.
    NotTdx,
    /// TDG.MEM.PAGE.ACCEPT failed (`status` is the TDX status class, bits 63:32).
    Accept { gpa: u64, status: u64 },
    /// TDVMCALL MapGPA failed, or the host's RETRY answer was invalid.
    MapGpa { gpa: u64, status: u64, resume: u64 },
    /// The CPU gave no random numbers (RDRAND missing or failing), which the app's
    /// start-up (AT_RANDOM) needs; the host is never asked for randomness.
    NoRandomness,
    /// The host's request in the parameter page is malformed.
    HostRequest,
    /// The host asked for attestation evidence and the platform gave none (the
    /// firmware error or status code, 0 if none).
    Attestation { code: u64 },
    /// The host refused an access to a local APIC register through the platform's
    /// protocol (`status`: SW_EXITINFO1 on SEV-SNP, the TDVMCALL status on TDX).
    Apic { msr: u32, status: u64 },
    /// SEV-SNP: the CPUID instruction contradicts the measured CPUID page on `leaf`,
    /// a leaf whose bits the firmware acts on.
    CpuidMismatch { leaf: u32 },
}

impl FwError {
    /// A one-line description (without `core::fmt`, see `fmt.rs`).
    pub fn describe(&self, b: &mut crate::fmt::Buf) {
        match *self {
            Self::BootInfo => b.push("the measured boot information is invalid"),
            Self::MemoryMap => b.push("the host's memory map was refused"),
            Self::NotSnp => b.push("not running on SEV-SNP or the C-bit disagrees with the image"),
            Self::MsrProtocol => b.push("the host broke the GHCB MSR protocol"),
            Self::Ghcb {
                exit_code,
                info1,
                info2,
            } => b
                .push("GHCB call ")
                .hex(exit_code)
                .push(" failed: info1 ")
                .hex(info1)
                .push(" info2 ")
                .hex(info2),
            Self::GhcbAnswer { exit_code } => b
                .push("the host's answer to GHCB call ")
                .hex(exit_code)
                .push(" does not mark its value valid"),
            Self::PageStateChange { gfn, detail } => {
                b.push("page-state change at gfn ")
                    .hex(gfn)
                    .push(" failed: ");
                match crate::platform::snp::psc::refused::describe(detail) {
                    Some(why) => b.push(why),
                    None => b.push("host error ").hex(detail),
                }
            }
            Self::Pvalidate { gpa, rc } => b
                .push("PVALIDATE of ")
                .hex(gpa)
                .push(" failed with ")
                .dec(rc.map_or(0, |r| u64::from(r.code()))),
            Self::AlreadyValidated { gpa } => b
                .push("the platform reports ")
                .hex(gpa)
                .push(" validated/accepted but the firmware never validated or accepted it"),
            Self::DoubleValidation { gpa } => b.push("second validation of ").hex(gpa),
            Self::OutOfMemory => b.push("out of guest memory"),
            Self::BadApp => b.push("the app ELF is malformed"),
            Self::Hostcall => b.push("malformed hostcall reply"),
            Self::NotTdx => b.push("not running as a TD, or TDG.VP.INFO is unusable"),
            Self::Accept { gpa, status } => b
                .push("TDG.MEM.PAGE.ACCEPT of ")
                .hex(gpa)
                .push(" failed with status class ")
                .hex(status),
            Self::MapGpa {
                gpa,
                status,
                resume,
            } => b
                .push("MapGPA at ")
                .hex(gpa)
                .push(" failed: status ")
                .hex(status)
                .push(" resume ")
                .hex(resume),
            Self::NoRandomness => b.push("the CPU gives no random numbers (RDRAND)"),
            Self::HostRequest => b.push("the host's request in the parameter page is malformed"),
            Self::Attestation { code } => b
                .push("the platform gave no attestation evidence: code ")
                .hex(code),
            Self::Apic { msr, status } => b
                .push("the host refused local APIC register ")
                .hex(u64::from(msr))
                .push(": status ")
                .hex(status),
            Self::CpuidMismatch { leaf } => b
                .push("CPUID leaf ")
                .hex(u64::from(leaf))
                .push(" contradicts the measured CPUID page"),
        };
    }
}

/// Termination reason codes in set 3 (`TERM_SET_NACRE`), reported with the GHCB
/// MSR protocol termination request.
impl FwError {
    /// Reason code for the termination request.
    pub fn term_code(&self) -> u8 {
        match self {
            Self::BootInfo => 1,
            Self::MemoryMap => 2,
            Self::NotSnp => 3,
            Self::MsrProtocol => 4,
            Self::Ghcb { .. } | Self::GhcbAnswer { .. } => 5,
            Self::PageStateChange { .. } => 6,
            Self::Pvalidate { .. } => 7,
            Self::AlreadyValidated { .. } => 8,
            Self::DoubleValidation { .. } => 9,
            Self::OutOfMemory => 10,
            Self::BadApp => 11,
            Self::Hostcall => 12,
            Self::NotTdx => 13,
            Self::Accept { .. } => 14,
            Self::MapGpa { .. } => 15,
            Self::NoRandomness => 16,
            Self::HostRequest => 17,
            Self::Attestation { .. } => 18,
            Self::Apic { .. } => 19,
            Self::CpuidMismatch { .. } => 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant with its termination code: the codes are part of the
    /// contract with the host (`nacre run` names them), so they never change.
    const ALL: [(FwError, u8); 21] = [
        (FwError::BootInfo, 1),
        (FwError::MemoryMap, 2),
        (FwError::NotSnp, 3),
        (FwError::MsrProtocol, 4),
        (
            FwError::Ghcb {
                exit_code: 0,
                info1: 0,
                info2: 0,
            },
            5,
        ),
        (FwError::GhcbAnswer { exit_code: 0 }, 5),
        (FwError::PageStateChange { gfn: 0, detail: 0 }, 6),
        (FwError::Pvalidate { gpa: 0, rc: None }, 7),
        (FwError::AlreadyValidated { gpa: 0 }, 8),
        (FwError::DoubleValidation { gpa: 0 }, 9),
        (FwError::OutOfMemory, 10),
        (FwError::BadApp, 11),
        (FwError::Hostcall, 12),
        (FwError::NotTdx, 13),
        (FwError::Accept { gpa: 0, status: 0 }, 14),
        (
            FwError::MapGpa {
                gpa: 0,
                status: 0,
                resume: 0,
            },
            15,
        ),
        (FwError::NoRandomness, 16),
        (FwError::HostRequest, 17),
        (FwError::Attestation { code: 0 }, 18),
        (FwError::Apic { msr: 0, status: 0 }, 19),
        (FwError::CpuidMismatch { leaf: 0 }, 20),
    ];

    #[test]
    fn termination_codes_are_the_host_contract() {
        for (e, code) in ALL {
            assert_eq!(e.term_code(), code, "{e:?}");
        }
    }

    #[test]
    fn every_error_describes_itself_with_its_address() {
        for (e, _) in ALL {
            let mut b = crate::fmt::Buf::new();
            e.describe(&mut b);
            assert!(!b.as_str().is_empty(), "{e:?}");
        }
        let mut b = crate::fmt::Buf::new();
        FwError::AlreadyValidated { gpa: 0x20_3000 }.describe(&mut b);
        assert!(b.as_str().contains("0x203000"), "{}", b.as_str());
    }
}
