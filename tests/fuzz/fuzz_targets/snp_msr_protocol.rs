//! The GHCB MSR protocol: any sequence of values the guest writes to the GHCB MSR
//! before a VMGEXIT, decoded (`nacre_shared_abi::snp::msr_protocol`) and answered by
//! the emulated SEV-SNP platform (`host/src/exits/snp/msr_protocol.rs`) through the
//! generic exit handler, as the unit tests drive it.
//!
//! Input: up to 32 little-endian `u64` MSR values.
//!
//! Invariants:
//! - a request that decodes re-encodes to the same value;
//! - one that does not (with GHCBInfo bits set) stops the guest with a protocol
//!   violation and leaves the MSR as written;
//! - every other request is answered with a response of its own kind that the guest's
//!   decoder accepts: SEV_INFO names version 2 and the platform's C-bit, a GHCB
//!   registration echoes the GFN (inside RAM) or refuses it with all ones, a
//!   page-state change succeeds exactly for a GFN in RAM and then changes that page
//!   and no other to the state asked for, a termination request stops the guest with
//!   its reason;
//! - nothing but a page-state change changes a page attribute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::{snp_platform, Bytes, SnpAttributes, RAM};
use nacre_host::exits::snp::msr_protocol::{PSC_MSR_ERROR_GENERIC, REG_GPA_ERROR_GFN};
use nacre_host::exits::testing::FakeVcpu;
use nacre_host::exits::{handle_exit, Exit};
use nacre_host::mmu::attributes::Kind;
use nacre_host::platform::emulated_snp::EmulatedSnp;
use nacre_host::platform::Stop;
use nacre_shared_abi::doorbell::Doorbell;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::msr_protocol::{
    MsrPscOp, MsrRequest, MsrResponse, CPUID_RESP, GHCB_MSR_INFO_MASK, HV_FEATURES_RESP,
    HV_FEATURE_SNP, PSC_RESP, REG_GPA_RESP, SEV_INFO_RESP,
};
use nacre_shared_abi::snp::MSR_GHCB;

fn exit(snp: &mut EmulatedSnp, e: Exit<'_>) -> Option<Stop> {
    let mut vcpu = FakeVcpu::identity();
    handle_exit(snp, &mut vcpu, e).unwrap_or_else(|e| panic!("a host error on guest input: {e}"))
}

fn ghcb_msr(snp: &mut EmulatedSnp) -> u64 {
    let (mut data, mut error) = (0, 0);
    exit(
        snp,
        Exit::RdMsr {
            index: MSR_GHCB,
            data: &mut data,
            error: &mut error,
        },
    );
    assert_eq!(error, 0);
    data
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mut snp = snp_platform();
    let pages = RAM / PAGE_SIZE_4K;
    for _ in 0..32 {
        if input.is_empty() {
            break;
        }
        let v = input.u64();
        let decoded = MsrRequest::decode(v);
        if let Ok(request) = decoded {
            assert_eq!(request.encode(), v, "{request:?} re-encodes differently");
        }

        let mut error = 0;
        exit(
            &mut snp,
            Exit::WrMsr {
                index: MSR_GHCB,
                value: v,
                error: &mut error,
            },
        );
        assert_eq!(error, 0, "the GHCB MSR takes any value");
        let before = SnpAttributes::of(&snp);
        let registered = snp.ghcb[0].gpa;
        let stop = exit(&mut snp, Exit::Doorbell(Doorbell::Vmgexit));
        let reply = ghcb_msr(&mut snp);
        let changed = before.changed(&snp);
        let after = SnpAttributes::of(&snp);

        if v & GHCB_MSR_INFO_MASK == 0 {
            // A GHCB page call: snp_ghcb's business.
            assert!(changed.is_empty() || registered == Some(v));
            continue;
        }
        let Ok(request) = decoded else {
            assert!(matches!(stop, Some(Stop::ProtocolViolation(_))), "{stop:?}");
            assert_eq!(reply, v, "a malformed request leaves the MSR alone");
            assert!(changed.is_empty());
            continue;
        };
        let expect = |info: u64| {
            MsrResponse::decode(reply, info)
                .unwrap_or_else(|e| panic!("reply {reply:#x} to {request:?}: {e:?}"))
        };
        match request {
            MsrRequest::SevInfo => assert_eq!(
                expect(SEV_INFO_RESP),
                MsrResponse::SevInfo {
                    max: 2,
                    min: 2,
                    c_bit: snp.c_bit
                }
            ),
            MsrRequest::Cpuid { .. } => {
                expect(CPUID_RESP);
            }
            MsrRequest::RegisterGhcb { gfn } => {
                let MsrResponse::RegisterGhcb { gfn: echoed } = expect(REG_GPA_RESP) else {
                    unreachable!("decoded as its kind");
                };
                if gfn < pages {
                    assert_eq!(echoed, gfn);
                    assert_eq!(snp.ghcb[0].gpa, Some(gfn * PAGE_SIZE_4K));
                } else {
                    assert_eq!(echoed, REG_GPA_ERROR_GFN);
                    assert_eq!(snp.ghcb[0].gpa, registered, "a refused GHCB");
                }
            }
            MsrRequest::PageStateChange { gfn, op } => {
                let MsrResponse::PageStateChange { error } = expect(PSC_RESP) else {
                    unreachable!("decoded as its kind");
                };
                let kind = match op {
                    MsrPscOp::Private => Kind::Private,
                    MsrPscOp::Shared => Kind::Shared,
                };
                if gfn < pages {
                    assert_eq!(error, 0, "a page of RAM");
                    assert_eq!(after.get(gfn), Some(kind));
                    assert!(changed.iter().all(|&(g, _)| g == gfn), "{changed:?}");
                } else {
                    assert_eq!(error, PSC_MSR_ERROR_GENERIC);
                    assert!(changed.is_empty());
                }
                assert_eq!(stop, None);
                continue;
            }
            MsrRequest::HvFeatures => {
                assert_eq!(
                    expect(HV_FEATURES_RESP),
                    MsrResponse::HvFeatures {
                        features: HV_FEATURE_SNP
                    }
                );
            }
            MsrRequest::Terminate { set, code } => {
                assert_eq!(stop, Some(Stop::GuestTerminated { set, code }));
                assert!(changed.is_empty());
                continue;
            }
        }
        assert_eq!(stop, None);
        assert!(changed.is_empty(), "{request:?} changed {changed:?}");
    }
});
