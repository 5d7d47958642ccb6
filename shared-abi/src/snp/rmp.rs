//! Return codes and operands of PVALIDATE, RMPADJUST, RMPUPDATE and PSMASH
//! (AMD APM vol. 3; Linux `arch/x86/include/asm/sev.h`; docs/specs.md 3.1).

/// Page size operand of PVALIDATE/RMPADJUST (RCX) and of an RMP entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RmpPageSize {
    /// 4 KiB (0).
    Size4K,
    /// 2 MiB (1).
    Size2M,
}

impl RmpPageSize {
    /// Decode the RCX operand; only bit 0 is defined.
    pub const fn from_operand(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::Size4K),
            1 => Some(Self::Size2M),
            _ => None,
        }
    }

    /// The operand encoding.
    pub const fn operand(self) -> u64 {
        match self {
            Self::Size4K => 0,
            Self::Size2M => 1,
        }
    }

    /// Bytes covered.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => crate::layout::PAGE_SIZE_4K,
            Self::Size2M => crate::layout::PAGE_SIZE_2M,
        }
    }
}

/// Return codes of PVALIDATE, RMPADJUST, RMPUPDATE and PSMASH (EAX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RmpError {
    /// 1: FAIL_INPUT (bad operand or address).
    FailInput,
    /// 2: FAIL_PERMISSION.
    FailPermission,
    /// 3: FAIL_INUSE (PSMASH racing; retry).
    FailInUse,
    /// 4: FAIL_OVERLAP (RMPUPDATE 4K/2M overlap).
    FailOverlap,
    /// 6: FAIL_SIZEMISMATCH (page size disagrees with the RMP entry).
    FailSizeMismatch,
}

/// EAX = 0: success.
pub const RMP_SUCCESS: u32 = 0;

impl RmpError {
    /// The architectural return code.
    pub const fn code(self) -> u32 {
        match self {
            Self::FailInput => 1,
            Self::FailPermission => 2,
            Self::FailInUse => 3,
            Self::FailOverlap => 4,
            Self::FailSizeMismatch => 6,
        }
    }

    /// Decode a non-zero return code.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::FailInput),
            2 => Some(Self::FailPermission),
            3 => Some(Self::FailInUse),
            4 => Some(Self::FailOverlap),
            6 => Some(Self::FailSizeMismatch),
            _ => None,
        }
    }
}

impl core::fmt::Display for RmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::FailInput => "FAIL_INPUT: a bad operand or address",
            Self::FailPermission => "FAIL_PERMISSION: not allowed at this privilege level",
            Self::FailInUse => "FAIL_INUSE: the RMP entry is in use",
            Self::FailOverlap => "FAIL_OVERLAP: a 4 KiB and a 2 MiB RMP entry overlap",
            Self::FailSizeMismatch => {
                "FAIL_SIZEMISMATCH: the page size disagrees with the RMP entry"
            }
        })
    }
}

/// The architectural outcome of one PVALIDATE: EAX and rFLAGS.CF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvalidateResult {
    /// EAX.
    pub rax: u32,
    /// rFLAGS.CF: 1 when the validated bit did not change.
    pub cf: bool,
}

impl PvalidateResult {
    /// Decode into the guest's view: `Ok(changed)` or the error.
    pub const fn decode(self) -> Result<bool, Option<RmpError>> {
        if self.rax == RMP_SUCCESS {
            Ok(!self.cf)
        } else {
            Err(RmpError::from_code(self.rax))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn errors_read_with_their_spec_names() {
        use std::string::ToString;
        assert_eq!(
            RmpError::FailSizeMismatch.to_string(),
            "FAIL_SIZEMISMATCH: the page size disagrees with the RMP entry"
        );
        for code in 1..=6 {
            if let Some(e) = RmpError::from_code(code) {
                assert!(e.to_string().starts_with("FAIL_"), "{e}");
            }
        }
    }

    const ALL_ERRORS: [RmpError; 5] = [
        RmpError::FailInput,
        RmpError::FailPermission,
        RmpError::FailInUse,
        RmpError::FailOverlap,
        RmpError::FailSizeMismatch,
    ];

    /// Return codes: uniformly random, or small (where every defined code lives).
    fn code() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..16, any::<u32>()]
    }

    #[test]
    fn every_error_round_trips() {
        for e in ALL_ERRORS {
            assert_eq!(RmpError::from_code(e.code()), Some(e));
            assert_ne!(e.code(), RMP_SUCCESS);
        }
        for s in [RmpPageSize::Size4K, RmpPageSize::Size2M] {
            assert_eq!(RmpPageSize::from_operand(s.operand()), Some(s));
        }
    }

    proptest! {
        #[test]
        fn error_from_code_is_inverse_of_code(c in code()) {
            match RmpError::from_code(c) {
                Some(e) => prop_assert_eq!(e.code(), c),
                None => prop_assert!(ALL_ERRORS.iter().all(|e| e.code() != c)),
            }
        }

        #[test]
        fn pvalidate_result_decodes_eax_and_cf(rax in code(), cf in any::<bool>()) {
            let r = PvalidateResult { rax, cf }.decode();
            if rax == RMP_SUCCESS {
                prop_assert_eq!(r, Ok(!cf));
            } else {
                prop_assert_eq!(r, Err(RmpError::from_code(rax)));
                if let Err(Some(e)) = r {
                    prop_assert_eq!(e.code(), rax);
                }
            }
        }

        #[test]
        fn page_size_from_operand_is_inverse_of_operand(
            v in prop_oneof![0u64..4, any::<u64>()],
        ) {
            match RmpPageSize::from_operand(v) {
                Some(s) => {
                    prop_assert_eq!(s.operand(), v);
                    prop_assert!(s.bytes().is_power_of_two());
                }
                None => prop_assert!(v > 1),
            }
        }
    }
}
