//! The GHCB MSR protocol, host side: a guest write of the GHCB MSR (0xC001_0130) with
//! non-zero GHCBInfo bits is a request, answered by the new MSR value the guest reads
//! back (docs/specs.md 1.4; KVM `sev_handle_vmgexit_msr_protocol` in
//! `arch/x86/kvm/svm/sev.c`; layouts in `nacre_shared_abi::snp::msr_protocol`).

use nacre_shared_abi::snp::ghcb::GHCB_PROTOCOL_VERSION;
use nacre_shared_abi::snp::msr_protocol::{MsrPscOp, MsrRequest, MsrResponse};

/// Lowest GHCB protocol version offered: SEV-SNP needs version 2 (GHCB spec 56421;
/// version 1 has no SNP events), so SEV_INFO answers with min = max = 2.
pub const GHCB_PROTOCOL_VERSION_MIN: u16 = 2;

/// GFN answered to a refused GHCB registration: all ones in `GHCBData[63:12]`, the
/// GHCB protocol's "no GPA" value (as in the PREFERRED_GHCB_GPA response, docs/specs.md
/// 1.4). A Linux guest compares the echoed GFN with its own and terminates with set 1,
/// reason 0 when they differ (`snp_register_ghcb_early`).
pub const REG_GPA_ERROR_GFN: u64 = 0xF_FFFF_FFFF_FFFF;

/// Error field (bits 63:32) of a failed MSR-protocol page-state change. KVM answers
/// `BIT(63) | GHCB_MSR_PSC_RESP` (`snp_complete_psc_msr`, docs/specs.md 2.3 step 7).
pub const PSC_MSR_ERROR_GENERIC: u32 = 0x8000_0000;

/// What the VMM provides to answer MSR-protocol requests.
pub trait MsrProtocolHost {
    /// C-bit position reported in SEV_INFO (emulated SNP: 47, docs/design.md, "Two views of
    /// guest RAM").
    fn c_bit(&self) -> u8;
    /// One CPUID register (0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX) of `leaf`, subleaf 0.
    fn cpuid(&mut self, leaf: u32, register: u8) -> u32;
    /// Register the GHCB at `gfn` for the calling vCPU; `false` refuses it (for
    /// example a GFN outside guest RAM).
    fn register_ghcb(&mut self, gfn: u64) -> bool;
    /// Change the state of one 4 KiB page; `Err(())` means the host failed.
    #[expect(
        clippy::result_unit_err,
        reason = "the contract: the host only reports that it failed (KVM: `hypercall.ret != 0`)"
    )]
    fn page_state_change(&mut self, gfn: u64, op: MsrPscOp) -> Result<(), ()>;
    /// Hypervisor feature bitmap (docs/specs.md 1.5; only bits 51:0 are carried).
    fn hv_features(&self) -> u64;
}

/// What to do after a GHCB MSR write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrProtocolOutcome {
    /// Write this value into the GHCB MSR and resume the guest.
    Reply(u64),
    /// The guest asked to be terminated with this reason (`GHCB_MSR_TERM_REQ`).
    Terminate {
        /// Reason set (4 bits).
        set: u8,
        /// Reason code.
        code: u8,
    },
    /// Unknown or malformed request: the raw MSR value. KVM leaves the MSR unchanged
    /// and resumes; nacre's caller decides (it may terminate the guest).
    Malformed(u64),
}

/// Answer one GHCB MSR-protocol request `value`.
pub fn handle_msr_protocol(value: u64, ctx: &mut dyn MsrProtocolHost) -> MsrProtocolOutcome {
    let Ok(request) = MsrRequest::decode(value) else {
        return MsrProtocolOutcome::Malformed(value);
    };
    let response = match request {
        MsrRequest::SevInfo => MsrResponse::SevInfo {
            max: GHCB_PROTOCOL_VERSION,
            min: GHCB_PROTOCOL_VERSION_MIN,
            c_bit: ctx.c_bit(),
        },
        MsrRequest::Cpuid { leaf, register } => MsrResponse::Cpuid {
            value: ctx.cpuid(leaf, register),
        },
        MsrRequest::RegisterGhcb { gfn } => MsrResponse::RegisterGhcb {
            gfn: if ctx.register_ghcb(gfn) {
                gfn
            } else {
                REG_GPA_ERROR_GFN
            },
        },
        MsrRequest::PageStateChange { gfn, op } => MsrResponse::PageStateChange {
            error: match ctx.page_state_change(gfn, op) {
                Ok(()) => 0,
                Err(()) => PSC_MSR_ERROR_GENERIC,
            },
        },
        MsrRequest::HvFeatures => MsrResponse::HvFeatures {
            features: ctx.hv_features(),
        },
        MsrRequest::Terminate { set, code } => {
            return MsrProtocolOutcome::Terminate { set, code };
        }
    };
    MsrProtocolOutcome::Reply(response.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::snp::msr_protocol::{
        HV_FEATURES_RESP, HV_FEATURE_SNP, PSC_RESP, REG_GPA_RESP, SEV_INFO_RESP, TERM_PSC,
        TERM_SET_LINUX,
    };
    use proptest::prelude::*;

    #[derive(Default)]
    struct Host {
        registered: Vec<u64>,
        psc: Vec<(u64, MsrPscOp)>,
        refuse: bool,
    }

    impl MsrProtocolHost for Host {
        fn c_bit(&self) -> u8 {
            47
        }
        fn cpuid(&mut self, leaf: u32, register: u8) -> u32 {
            leaf.wrapping_mul(16) + u32::from(register)
        }
        fn register_ghcb(&mut self, gfn: u64) -> bool {
            self.registered.push(gfn);
            !self.refuse
        }
        fn page_state_change(&mut self, gfn: u64, op: MsrPscOp) -> Result<(), ()> {
            self.psc.push((gfn, op));
            if self.refuse {
                Err(())
            } else {
                Ok(())
            }
        }
        fn hv_features(&self) -> u64 {
            HV_FEATURE_SNP | (1 << 51) | (1 << 60)
        }
    }

    fn reply(v: u64, host: &mut Host) -> u64 {
        match handle_msr_protocol(v, host) {
            MsrProtocolOutcome::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn sev_info() {
        let r = reply(MsrRequest::SevInfo.encode(), &mut Host::default());
        // [63:48] max, [47:32] min, [31:24] C-bit, 0x001.
        assert_eq!(r, (2 << 48) | (2 << 32) | (47 << 24) | SEV_INFO_RESP);
    }

    #[test]
    fn cpuid() {
        let mut host = Host::default();
        let r = reply(
            MsrRequest::Cpuid {
                leaf: 0x8000_001F,
                register: 1,
            }
            .encode(),
            &mut host,
        );
        assert_eq!(
            MsrResponse::decode(r, 0x005),
            Ok(MsrResponse::Cpuid {
                value: 0x8000_001Fu32.wrapping_mul(16) + 1
            })
        );
    }

    #[test]
    fn register_ghcb_echoes_or_refuses() {
        let mut host = Host::default();
        let r = reply(MsrRequest::RegisterGhcb { gfn: 0x1234 }.encode(), &mut host);
        assert_eq!(r, (0x1234 << 12) | REG_GPA_RESP);
        assert_eq!(host.registered, vec![0x1234]);

        host.refuse = true;
        let r = reply(MsrRequest::RegisterGhcb { gfn: 0x1234 }.encode(), &mut host);
        assert_eq!(r, 0xFFFF_FFFF_FFFF_F000 | REG_GPA_RESP);
    }

    #[test]
    fn page_state_change_ok_and_kvm_error() {
        let mut host = Host::default();
        let req = MsrRequest::PageStateChange {
            gfn: 0x42,
            op: MsrPscOp::Shared,
        }
        .encode();
        assert_eq!(reply(req, &mut host), PSC_RESP);
        assert_eq!(host.psc, vec![(0x42, MsrPscOp::Shared)]);

        host.refuse = true;
        let r = reply(req, &mut host);
        assert_eq!(r, (1 << 63) | PSC_RESP, "KVM's BIT(63) | 0x015");
        assert_eq!(
            MsrResponse::decode(r, PSC_RESP),
            Ok(MsrResponse::PageStateChange { error: 0x8000_0000 })
        );
    }

    #[test]
    fn hv_features_keeps_52_bits() {
        let r = reply(MsrRequest::HvFeatures.encode(), &mut Host::default());
        assert_eq!(r, ((HV_FEATURE_SNP | (1 << 51)) << 12) | HV_FEATURES_RESP);
    }

    #[test]
    fn terminate() {
        let v = MsrRequest::Terminate {
            set: TERM_SET_LINUX,
            code: TERM_PSC,
        }
        .encode();
        assert_eq!(
            handle_msr_protocol(v, &mut Host::default()),
            MsrProtocolOutcome::Terminate { set: 1, code: 1 }
        );
    }

    #[test]
    fn malformed_and_unknown() {
        let mut host = Host::default();
        for v in [
            0x003,                         // unknown info
            0x006,                         // AP reset hold: not offered
            (1 << 12) | 0x002,             // SEV_INFO with data
            (3 << 52) | (5 << 12) | 0x014, // PSC op 3
            (1 << 56) | (1 << 52) | 0x014, // PSC reserved bits
            (1 << 24) | 0x100,             // TERM reserved bits
        ] {
            assert_eq!(
                handle_msr_protocol(v, &mut host),
                MsrProtocolOutcome::Malformed(v),
                "{v:#x}"
            );
        }
        assert!(host.psc.is_empty());
    }

    proptest! {
        #[test]
        fn any_value_is_answered_without_panic(v in any::<u64>(), refuse in any::<bool>()) {
            let mut host = Host { refuse, ..Host::default() };
            match handle_msr_protocol(v, &mut host) {
                MsrProtocolOutcome::Reply(r) => prop_assert!(r & 0xFFF != 0),
                MsrProtocolOutcome::Terminate { set, .. } => prop_assert!(set < 16),
                MsrProtocolOutcome::Malformed(m) => prop_assert_eq!(m, v),
            }
        }
    }
}
