//! The doorbell: how the emulated platforms carry trapping instructions to the host.
//!
//! On SEV-SNP and TDX hardware, PVALIDATE, RMPADJUST and TDCALL are executed by the
//! CPU or the TDX module, and VMGEXIT (`rep vmmcall`) exits to the hypervisor. On the
//! emulated platforms the firmware executes `out imm8, al` to one of the ports below
//! instead. The byte written is ignored: the host reads the vCPU's general-purpose
//! registers, which hold the instruction's architectural operands unchanged, performs
//! the instruction's semantics, and writes back its architectural results before the
//! guest resumes after the `out`.
//!
//! | port | instruction | operands in | results out |
//! |---|---|---|---|
//! | 0xE0 | PVALIDATE | RAX = guest VA, RCX = page size (0 = 4K, 1 = 2M), RDX = 1 validate / 0 rescind | EAX = return code, rFLAGS.CF = 1 if the validated bit did not change |
//! | 0xE1 | RMPADJUST | RAX = guest VA, RCX = page size, RDX = attributes | EAX = return code |
//! | 0xE2 | VMGEXIT | the GHCB MSR (0xC001_0130) as last written by the guest | as on hardware: the GHCB page or the GHCB MSR |
//! | 0xE3 | TDCALL | RAX = leaf, other registers per leaf | as on hardware |
//!
//! The operand conventions match AMD APM vol. 3 (PVALIDATE, RMPADJUST) and the TDX
//! module ABI (TDCALL); see docs/specs.md 3.1 and 6.1.

/// Port for emulated PVALIDATE.
pub const DOORBELL_PVALIDATE: u16 = 0xE0;
/// Port for emulated RMPADJUST.
pub const DOORBELL_RMPADJUST: u16 = 0xE1;
/// Port for emulated VMGEXIT.
pub const DOORBELL_VMGEXIT: u16 = 0xE2;
/// Port for emulated TDCALL.
pub const DOORBELL_TDCALL: u16 = 0xE3;

/// Which trapping instruction a doorbell port stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doorbell {
    /// PVALIDATE.
    Pvalidate,
    /// RMPADJUST.
    Rmpadjust,
    /// VMGEXIT.
    Vmgexit,
    /// TDCALL.
    Tdcall,
}

impl core::fmt::Display for Doorbell {
    /// The instruction's name, as the vendors' manuals spell it.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Pvalidate => "PVALIDATE",
            Self::Rmpadjust => "RMPADJUST",
            Self::Vmgexit => "VMGEXIT",
            Self::Tdcall => "TDCALL",
        })
    }
}

impl Doorbell {
    /// Decode a port number; `None` if it is not a doorbell.
    pub const fn from_port(port: u16) -> Option<Self> {
        match port {
            DOORBELL_PVALIDATE => Some(Self::Pvalidate),
            DOORBELL_RMPADJUST => Some(Self::Rmpadjust),
            DOORBELL_VMGEXIT => Some(Self::Vmgexit),
            DOORBELL_TDCALL => Some(Self::Tdcall),
            _ => None,
        }
    }

    /// The port number of this doorbell.
    pub const fn port(self) -> u16 {
        match self {
            Self::Pvalidate => DOORBELL_PVALIDATE,
            Self::Rmpadjust => DOORBELL_RMPADJUST,
            Self::Vmgexit => DOORBELL_VMGEXIT,
            Self::Tdcall => DOORBELL_TDCALL,
        }
    }
}

/// CPUID leaf 0x4000_0000 signature (EBX, ECX, EDX) of the emulated SNP platform,
/// "NacreEmuSNP\0". The firmware uses the doorbell instead of the trapping
/// instructions only when it sees this signature.
pub const EMULATED_SNP_SIGNATURE: [u8; 12] = *b"NacreEmuSNP\0";

/// CPUID leaf 0x4000_0000 signature of the emulated TDX platform, "NacreEmuTDX\0".
/// The firmware forwards TDCALL to the TDCALL doorbell only when it sees this
/// signature (on TDX hardware TDCALL is executed by the TDX module; on the emulated
/// platform it raises #UD, whose handler rings the doorbell with the instruction's
/// registers unchanged).
pub const EMULATED_TDX_SIGNATURE: [u8; 12] = *b"NacreEmuTDX\0";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doorbells_are_named_after_their_instructions() {
        use std::string::ToString;
        assert_eq!(Doorbell::Pvalidate.to_string(), "PVALIDATE");
        assert_eq!(Doorbell::Tdcall.to_string(), "TDCALL");
    }

    #[test]
    fn ports_round_trip_and_others_are_rejected() {
        for d in [
            Doorbell::Pvalidate,
            Doorbell::Rmpadjust,
            Doorbell::Vmgexit,
            Doorbell::Tdcall,
        ] {
            assert_eq!(Doorbell::from_port(d.port()), Some(d));
        }
        for port in (0..=u16::MAX).filter(|p| !(0xE0..=0xE3).contains(p)) {
            assert_eq!(Doorbell::from_port(port), None);
        }
    }

    proptest! {
        #[test]
        fn from_port_is_inverse_of_port(port in prop_oneof![0xDEu16..0xE6, any::<u16>()]) {
            match Doorbell::from_port(port) {
                Some(d) => prop_assert_eq!(d.port(), port),
                None => prop_assert!(!(DOORBELL_PVALIDATE..=DOORBELL_TDCALL).contains(&port)),
            }
        }
    }
}
