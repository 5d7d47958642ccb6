//! The GHCB MSR protocol: requests and responses carried in the GHCB MSR itself
//! (`GHCBData[63:12] | GHCBInfo[11:0]`). Source: Linux `arch/x86/include/asm/sev-common.h`,
//! svsm `kernel/src/sev/msr_protocol.rs`; docs/specs.md 1.4.

/// GHCBInfo field mask.
pub const GHCB_MSR_INFO_MASK: u64 = 0xFFF;

/// SEV_INFO request.
pub const SEV_INFO_REQ: u64 = 0x002;
/// SEV_INFO response.
pub const SEV_INFO_RESP: u64 = 0x001;
/// CPUID request.
pub const CPUID_REQ: u64 = 0x004;
/// CPUID response.
pub const CPUID_RESP: u64 = 0x005;
/// Register GHCB GPA request.
pub const REG_GPA_REQ: u64 = 0x012;
/// Register GHCB GPA response.
pub const REG_GPA_RESP: u64 = 0x013;
/// Page-state change request.
pub const PSC_REQ: u64 = 0x014;
/// Page-state change response.
pub const PSC_RESP: u64 = 0x015;
/// Hypervisor features request.
pub const HV_FEATURES_REQ: u64 = 0x080;
/// Hypervisor features response.
pub const HV_FEATURES_RESP: u64 = 0x081;
/// Termination request.
pub const TERM_REQ: u64 = 0x100;

/// Hypervisor feature bit 0: SEV-SNP (`GHCB_HV_FT_SNP`, Linux `asm/sev-common.h`).
pub const HV_FEATURE_SNP: u64 = 1 << 0;
/// Hypervisor feature bit 1: AP creation (`GHCB_HV_FT_SNP_AP_CREATION`).
pub const HV_FEATURE_SNP_AP_CREATION: u64 = 1 << 1;

/// Page-state change operation in an MSR-protocol request (and a PSC entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsrPscOp {
    /// 1: make private (assign).
    Private,
    /// 2: make shared.
    Shared,
}

impl MsrPscOp {
    const fn code(self) -> u64 {
        match self {
            Self::Private => 1,
            Self::Shared => 2,
        }
    }
}

/// Termination reason set 0 (`SEV_TERM_SET_GEN`).
pub const TERM_SET_GENERAL: u8 = 0;
/// Set 0 reason 0: general.
pub const TERM_GENERAL: u8 = 0;
/// Set 0 reason 1: protocol unsupported.
pub const TERM_PROTOCOL_UNSUPPORTED: u8 = 1;
/// Set 0 reason 2: SNP unsupported.
pub const TERM_SNP_UNSUPPORTED: u8 = 2;
/// Termination reason set 1 (`SEV_TERM_SET_LINUX`).
pub const TERM_SET_LINUX: u8 = 1;
/// Set 1 reason 0: GHCB registration failed.
pub const TERM_GHCB_REGISTER: u8 = 0;
/// Set 1 reason 1: page-state change failed.
pub const TERM_PSC: u8 = 1;
/// Set 1 reason 2: PVALIDATE failed.
pub const TERM_PVALIDATE: u8 = 2;
/// Termination reason set 3: nacre's own reasons (codes in `nacre_term`).
pub const TERM_SET_NACRE: u8 = 3;

/// A guest request in the GHCB MSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrRequest {
    /// SEV information.
    SevInfo,
    /// One CPUID register; subleaf 0.
    Cpuid {
        /// Leaf.
        leaf: u32,
        /// 0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX.
        register: u8,
    },
    /// Register the GHCB at this GFN.
    RegisterGhcb {
        /// GFN of the GHCB page.
        gfn: u64,
    },
    /// Change the state of one 4 KiB page.
    PageStateChange {
        /// GFN (40 bits).
        gfn: u64,
        /// Target state.
        op: MsrPscOp,
    },
    /// Hypervisor features.
    HvFeatures,
    /// Terminate the guest.
    Terminate {
        /// Reason set (4 bits).
        set: u8,
        /// Reason code.
        code: u8,
    },
}

/// Why an MSR value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrProtocolError {
    /// Unknown GHCBInfo.
    UnknownInfo(u64),
    /// Reserved bits set or a field out of range.
    Malformed(u64),
}

const GFN_MASK_40: u64 = (1 << 40) - 1;
const GFN_MASK_52: u64 = (1 << 52) - 1;

impl MsrRequest {
    /// Encode as a GHCB MSR value.
    pub const fn encode(self) -> u64 {
        match self {
            Self::SevInfo => SEV_INFO_REQ,
            Self::Cpuid { leaf, register } => {
                ((leaf as u64) << 32) | (((register & 3) as u64) << 30) | CPUID_REQ
            }
            Self::RegisterGhcb { gfn } => ((gfn & GFN_MASK_52) << 12) | REG_GPA_REQ,
            Self::PageStateChange { gfn, op } => {
                (op.code() << 52) | ((gfn & GFN_MASK_40) << 12) | PSC_REQ
            }
            Self::HvFeatures => HV_FEATURES_REQ,
            Self::Terminate { set, code } => {
                ((code as u64) << 16) | (((set & 0xF) as u64) << 12) | TERM_REQ
            }
        }
    }

    /// Decode a GHCB MSR value written by the guest (host side). Reserved bits must be zero.
    pub const fn decode(v: u64) -> Result<Self, MsrProtocolError> {
        let data = v >> 12;
        match v & GHCB_MSR_INFO_MASK {
            SEV_INFO_REQ if data == 0 => Ok(Self::SevInfo),
            CPUID_REQ if (v >> 12) & 0x3_FFFF == 0 => Ok(Self::Cpuid {
                leaf: (v >> 32) as u32,
                register: ((v >> 30) & 3) as u8,
            }),
            REG_GPA_REQ => Ok(Self::RegisterGhcb { gfn: data }),
            PSC_REQ => {
                let op = match (v >> 52) & 0xF {
                    1 => MsrPscOp::Private,
                    2 => MsrPscOp::Shared,
                    _ => return Err(MsrProtocolError::Malformed(v)),
                };
                if v >> 56 != 0 {
                    return Err(MsrProtocolError::Malformed(v));
                }
                Ok(Self::PageStateChange {
                    gfn: data & GFN_MASK_40,
                    op,
                })
            }
            HV_FEATURES_REQ if data == 0 => Ok(Self::HvFeatures),
            TERM_REQ if v >> 24 == 0 => Ok(Self::Terminate {
                set: ((v >> 12) & 0xF) as u8,
                code: ((v >> 16) & 0xFF) as u8,
            }),
            SEV_INFO_REQ | CPUID_REQ | HV_FEATURES_REQ | TERM_REQ => {
                Err(MsrProtocolError::Malformed(v))
            }
            info => Err(MsrProtocolError::UnknownInfo(info)),
        }
    }
}

/// A host response in the GHCB MSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrResponse {
    /// SEV information.
    SevInfo {
        /// Highest protocol version.
        max: u16,
        /// Lowest protocol version.
        min: u16,
        /// C-bit position.
        c_bit: u8,
    },
    /// One CPUID register value.
    Cpuid {
        /// The value.
        value: u32,
    },
    /// GHCB registration answer: the GFN the host registered.
    RegisterGhcb {
        /// GFN.
        gfn: u64,
    },
    /// Page-state change answer: 0 = OK.
    PageStateChange {
        /// Error code (bits 63:32); 0 on success.
        error: u32,
    },
    /// Hypervisor features bitmap (52 bits).
    HvFeatures {
        /// Bitmap.
        features: u64,
    },
}

impl MsrResponse {
    /// Encode as a GHCB MSR value (host side).
    pub const fn encode(self) -> u64 {
        match self {
            Self::SevInfo { max, min, c_bit } => {
                ((max as u64) << 48) | ((min as u64) << 32) | ((c_bit as u64) << 24) | SEV_INFO_RESP
            }
            Self::Cpuid { value } => ((value as u64) << 32) | CPUID_RESP,
            Self::RegisterGhcb { gfn } => ((gfn & GFN_MASK_52) << 12) | REG_GPA_RESP,
            Self::PageStateChange { error } => ((error as u64) << 32) | PSC_RESP,
            Self::HvFeatures { features } => ((features & GFN_MASK_52) << 12) | HV_FEATURES_RESP,
        }
    }

    /// Decode a response (guest side). The guest passes the info it expects, so a
    /// response of another kind is refused.
    pub const fn decode(v: u64, expected_info: u64) -> Result<Self, MsrProtocolError> {
        let info = v & GHCB_MSR_INFO_MASK;
        if info != expected_info {
            return Err(MsrProtocolError::UnknownInfo(info));
        }
        match info {
            SEV_INFO_RESP if (v >> 12) & 0xFFF == 0 => Ok(Self::SevInfo {
                max: (v >> 48) as u16,
                min: (v >> 32) as u16,
                c_bit: (v >> 24) as u8,
            }),
            CPUID_RESP if (v >> 12) & 0xF_FFFF == 0 => Ok(Self::Cpuid {
                value: (v >> 32) as u32,
            }),
            REG_GPA_RESP => Ok(Self::RegisterGhcb { gfn: v >> 12 }),
            PSC_RESP if (v >> 12) & 0xF_FFFF == 0 => Ok(Self::PageStateChange {
                error: (v >> 32) as u32,
            }),
            HV_FEATURES_RESP => Ok(Self::HvFeatures { features: v >> 12 }),
            SEV_INFO_RESP | CPUID_RESP | PSC_RESP => Err(MsrProtocolError::Malformed(v)),
            other => Err(MsrProtocolError::UnknownInfo(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn psc_request_layout_matches_linux() {
        // Linux GHCB_MSR_PSC_REQ_GFN(gfn, op): op << 52 | gfn << 12 | 0x14.
        let v = MsrRequest::PageStateChange {
            gfn: 0x12345,
            op: MsrPscOp::Shared,
        }
        .encode();
        assert_eq!(v, (2 << 52) | (0x12345 << 12) | 0x14);
    }

    #[test]
    fn kvm_psc_error_is_refused_as_success() {
        // KVM answers a failed MSR PSC with BIT(63) | 0x015.
        let r = MsrResponse::decode((1 << 63) | PSC_RESP, PSC_RESP).unwrap();
        assert_eq!(r, MsrResponse::PageStateChange { error: 0x8000_0000 });
    }

    /// Every GHCBInfo a guest request can carry.
    const REQUEST_INFOS: [u64; 6] = [
        SEV_INFO_REQ,
        CPUID_REQ,
        REG_GPA_REQ,
        PSC_REQ,
        HV_FEATURES_REQ,
        TERM_REQ,
    ];

    /// Every GHCBInfo a host response can carry.
    const RESPONSE_INFOS: [u64; 5] = [
        SEV_INFO_RESP,
        CPUID_RESP,
        REG_GPA_RESP,
        PSC_RESP,
        HV_FEATURES_RESP,
    ];

    fn psc_op() -> impl Strategy<Value = MsrPscOp> {
        prop_oneof![Just(MsrPscOp::Private), Just(MsrPscOp::Shared)]
    }

    /// Every request whose fields fit their encoding.
    fn valid_request() -> impl Strategy<Value = MsrRequest> {
        prop_oneof![
            Just(MsrRequest::SevInfo),
            (any::<u32>(), 0u8..4)
                .prop_map(|(leaf, register)| MsrRequest::Cpuid { leaf, register }),
            (0..=GFN_MASK_52).prop_map(|gfn| MsrRequest::RegisterGhcb { gfn }),
            (0..=GFN_MASK_40, psc_op())
                .prop_map(|(gfn, op)| MsrRequest::PageStateChange { gfn, op }),
            Just(MsrRequest::HvFeatures),
            (0u8..16, any::<u8>()).prop_map(|(set, code)| MsrRequest::Terminate { set, code }),
        ]
    }

    /// Every response whose fields fit their encoding.
    fn valid_response() -> impl Strategy<Value = MsrResponse> {
        prop_oneof![
            (any::<u16>(), any::<u16>(), any::<u8>())
                .prop_map(|(max, min, c_bit)| MsrResponse::SevInfo { max, min, c_bit }),
            any::<u32>().prop_map(|value| MsrResponse::Cpuid { value }),
            (0..=GFN_MASK_52).prop_map(|gfn| MsrResponse::RegisterGhcb { gfn }),
            any::<u32>().prop_map(|error| MsrResponse::PageStateChange { error }),
            (0..=GFN_MASK_52).prop_map(|features| MsrResponse::HvFeatures { features }),
        ]
    }

    const fn response_info(r: MsrResponse) -> u64 {
        match r {
            MsrResponse::SevInfo { .. } => SEV_INFO_RESP,
            MsrResponse::Cpuid { .. } => CPUID_RESP,
            MsrResponse::RegisterGhcb { .. } => REG_GPA_RESP,
            MsrResponse::PageStateChange { .. } => PSC_RESP,
            MsrResponse::HvFeatures { .. } => HV_FEATURES_RESP,
        }
    }

    /// `v` with bit `bit` flipped, or unchanged when `bit` is 64.
    fn flip(v: u64, bit: u32) -> u64 {
        if bit < 64 {
            v ^ (1 << bit)
        } else {
            v
        }
    }

    /// A bit index to flip, or 64 (no flip) half of the time.
    fn bit_or_none() -> impl Strategy<Value = u32> {
        prop_oneof![Just(64u32), 0u32..64]
    }

    /// Raw MSR values: uniformly random, random data under a known info, and valid
    /// encodings with at most two bits flipped.
    fn msr_value(infos: &'static [u64]) -> impl Strategy<Value = u64> {
        let near_valid = prop_oneof![
            valid_request().prop_map(MsrRequest::encode),
            valid_response().prop_map(MsrResponse::encode),
        ];
        prop_oneof![
            any::<u64>(),
            (any::<u64>(), prop::sample::select(infos)).prop_map(|(hi, info)| (hi & !0xFFF) | info),
            (near_valid, bit_or_none(), bit_or_none()).prop_map(|(v, a, b)| flip(flip(v, a), b)),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trips(r in valid_request()) {
            prop_assert_eq!(MsrRequest::decode(r.encode()), Ok(r));
        }

        #[test]
        fn request_decode_accepts_only_canonical_encodings(v in msr_value(&REQUEST_INFOS)) {
            match MsrRequest::decode(v) {
                Ok(r) => prop_assert_eq!(r.encode(), v),
                Err(MsrProtocolError::Malformed(m)) => {
                    prop_assert_eq!(m, v);
                    prop_assert!(REQUEST_INFOS.contains(&(v & GHCB_MSR_INFO_MASK)));
                }
                Err(MsrProtocolError::UnknownInfo(info)) => {
                    prop_assert_eq!(info, v & GHCB_MSR_INFO_MASK);
                    prop_assert!(!REQUEST_INFOS.contains(&info));
                }
            }
        }

        #[test]
        fn request_decode_rejects_every_single_bit_corruption(r in valid_request()) {
            for bit in 0..64 {
                let v = r.encode() ^ (1 << bit);
                if let Ok(d) = MsrRequest::decode(v) {
                    prop_assert_eq!(d.encode(), v, "bit {} of {:?}", bit, r);
                }
            }
        }

        #[test]
        fn response_decode_rejects_every_single_bit_corruption(r in valid_response()) {
            for bit in 0..64 {
                let v = r.encode() ^ (1 << bit);
                for expected in [response_info(r), v & GHCB_MSR_INFO_MASK] {
                    if let Ok(d) = MsrResponse::decode(v, expected) {
                        prop_assert_eq!(d.encode(), v, "bit {} of {:?}", bit, r);
                    }
                }
            }
        }

        #[test]
        fn response_round_trips(r in valid_response()) {
            let info = response_info(r);
            prop_assert_eq!(MsrResponse::decode(r.encode(), info), Ok(r));
            for other in RESPONSE_INFOS.into_iter().filter(|&i| i != info) {
                prop_assert_eq!(
                    MsrResponse::decode(r.encode(), other),
                    Err(MsrProtocolError::UnknownInfo(info))
                );
            }
        }

        #[test]
        fn response_decode_accepts_only_canonical_encodings(
            (v, expected) in (
                msr_value(&RESPONSE_INFOS),
                prop_oneof![
                    3 => Just(None),
                    1 => prop::sample::select(&RESPONSE_INFOS[..]).prop_map(Some),
                    1 => prop::sample::select(&REQUEST_INFOS[..]).prop_map(Some),
                    1 => (0..=GHCB_MSR_INFO_MASK).prop_map(Some),
                    1 => any::<u64>().prop_map(Some),
                ],
            )
                .prop_map(|(v, e)| (v, e.unwrap_or(v & GHCB_MSR_INFO_MASK))),
        ) {
            match MsrResponse::decode(v, expected) {
                Ok(r) => {
                    prop_assert_eq!(r.encode(), v);
                    prop_assert_eq!(response_info(r), expected);
                }
                Err(MsrProtocolError::Malformed(m)) => {
                    prop_assert_eq!(m, v);
                    prop_assert_eq!(v & GHCB_MSR_INFO_MASK, expected);
                    prop_assert!(RESPONSE_INFOS.contains(&expected));
                }
                Err(MsrProtocolError::UnknownInfo(info)) => {
                    prop_assert_eq!(info, v & GHCB_MSR_INFO_MASK);
                    prop_assert!(info != expected || !RESPONSE_INFOS.contains(&info));
                }
            }
        }

        #[test]
        fn response_decode_with_every_expected_info(v in msr_value(&RESPONSE_INFOS)) {
            for expected in RESPONSE_INFOS {
                if let Ok(r) = MsrResponse::decode(v, expected) {
                    prop_assert_eq!(r.encode(), v);
                    prop_assert_eq!(response_info(r), expected);
                }
            }
        }
    }
}
