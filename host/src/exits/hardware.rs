//! Exits that only KVM's own SEV-SNP and TDX support produce and kvm-ioctls does not
//! decode (it reports them as `VcpuExit::Unsupported`): `KVM_EXIT_TDX` and
//! `KVM_EXIT_SNP_REQ_CERTS`, read from the vCPU's `kvm_run` by offset
//! ([`crate::vmm::uapi::run`]).

use super::Exit;
use crate::vmm::uapi::{exit, run, RunArea};

/// TDG.VP.VMCALL sub-functions KVM hands to user space as `KVM_EXIT_TDX` (GHCI 1.5;
/// `arch/x86/kvm/vmx/tdx.c`, `handle_tdvmcall`).
pub mod tdvmcall {
    /// GetTdVmCallInfo (only leaf 1 reaches user space).
    pub const GET_TD_VM_CALL_INFO: u64 = 0x10000;
    /// GetQuote.
    pub const GET_QUOTE: u64 = 0x10002;
    /// SetupEventNotifyInterrupt.
    pub const SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 0x10004;
    /// `TDVMCALL_STATUS_SUCCESS`.
    pub const SUCCESS: u64 = 0;
    /// `TDVMCALL_STATUS_INVALID_OPERAND`.
    pub const INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
    /// `TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED` (`arch/x86/include/asm/shared/tdx.h`).
    pub const SUBFUNC_UNSUPPORTED: u64 = 0x8000_0000_0000_0003;
}

/// A `KVM_EXIT_TDX`: the sub-function, its operands, and the place of its answers in
/// `kvm_run` (the status the TD gets in R10, and for GetTdVmCallInfo R11 to R14).
#[derive(Debug)]
pub struct TdxExit<'a> {
    area: RunArea<'a>,
}

impl<'a> TdxExit<'a> {
    /// The exit in `area` (whose exit reason is `KVM_EXIT_TDX`).
    pub fn new(area: RunArea<'a>) -> Self {
        Self { area }
    }

    /// The TDG.VP.VMCALL sub-function (`tdx.nr`).
    pub fn nr(&self) -> u64 {
        self.area.u64(run::TDX_NR)
    }

    /// The status preset by KVM (`tdx.<call>.ret`).
    pub fn ret(&self) -> u64 {
        self.area.u64(run::TDX_RET)
    }

    /// Set the status the TD gets in R10.
    pub fn set_ret(&mut self, status: u64) {
        self.area.set_u64(run::TDX_RET, status);
    }

    /// GetQuote's buffer: its GPA (the shared bit already stripped by KVM) and size.
    pub fn get_quote(&self) -> (u64, u64) {
        (self.area.u64(run::TDX_ARG0), self.area.u64(run::TDX_ARG1))
    }

    /// GetTdVmCallInfo's leaf.
    pub fn tdvmcall_info_leaf(&self) -> u64 {
        self.area.u64(run::TDX_ARG0)
    }

    /// GetTdVmCallInfo's outputs: R11 to R14.
    pub fn set_tdvmcall_info(&mut self, r: [u64; 4]) {
        for (i, value) in r.into_iter().enumerate() {
            self.area.set_u64(run::TDX_ARG1 + 8 * i, value);
        }
    }

    /// GetTdVmCallInfo's outputs as set so far.
    pub fn tdvmcall_info(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.area.u64(run::TDX_ARG1 + 8 * i))
    }

    /// SetupEventNotifyInterrupt's vector.
    pub fn event_vector(&self) -> u64 {
        self.area.u64(run::TDX_ARG0)
    }
}

/// Decode an exit kvm-ioctls reported as `Unsupported(reason)` from the vCPU's run
/// area; anything nacre does not know stays [`Exit::Unsupported`].
pub fn decode_run(reason: u32, area: RunArea<'_>) -> Exit<'_> {
    match reason {
        exit::TDX => Exit::Tdx(TdxExit::new(area)),
        exit::SNP_REQ_CERTS => Exit::SnpReqCerts {
            gpa: area.u64(run::SNP_REQ_CERTS_GPA),
            npages: area.u64(run::SNP_REQ_CERTS_NPAGES),
        },
        other => Exit::Unsupported(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::uapi::system_event;
    use kvm_ioctls::VcpuExit;

    /// A zeroed `kvm_run` of the kernel's size with `reason` as its exit reason.
    fn run_area(reason: u32) -> Vec<u8> {
        let mut raw = vec![0u8; run::SIZE];
        raw[run::EXIT_REASON..run::EXIT_REASON + 4].copy_from_slice(&reason.to_le_bytes());
        raw
    }

    fn put(raw: &mut [u8], offset: usize, value: u64) {
        raw[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn get(raw: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(raw[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn a_tdx_get_quote_exit_is_decoded_and_answered_in_place() {
        let mut raw = run_area(exit::TDX);
        put(&mut raw, run::TDX_NR, tdvmcall::GET_QUOTE);
        put(&mut raw, run::TDX_RET, tdvmcall::SUBFUNC_UNSUPPORTED);
        put(&mut raw, run::TDX_ARG0, 0x7F_E000);
        put(&mut raw, run::TDX_ARG1, 0x1_0000);
        {
            let area = RunArea::new(&mut raw).unwrap();
            let Exit::Tdx(mut call) = decode_run(exit::TDX, area) else {
                panic!("not a TDX exit");
            };
            assert_eq!(call.nr(), tdvmcall::GET_QUOTE);
            assert_eq!(call.ret(), tdvmcall::SUBFUNC_UNSUPPORTED);
            assert_eq!(call.get_quote(), (0x7F_E000, 0x1_0000));
            call.set_ret(tdvmcall::SUCCESS);
        }
        assert_eq!(get(&raw, run::TDX_RET), 0);
        // Nothing else of the run area changed.
        assert_eq!(get(&raw, run::TDX_ARG0), 0x7F_E000);
    }

    #[test]
    fn get_td_vm_call_info_answers_land_in_r11_to_r14() {
        let mut raw = run_area(exit::TDX);
        put(&mut raw, run::TDX_NR, tdvmcall::GET_TD_VM_CALL_INFO);
        put(&mut raw, run::TDX_ARG0, 1);
        {
            let Exit::Tdx(mut call) = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap()) else {
                panic!("not a TDX exit");
            };
            assert_eq!(call.tdvmcall_info_leaf(), 1);
            call.set_tdvmcall_info([1, 2, 3, 4]);
            assert_eq!(call.tdvmcall_info(), [1, 2, 3, 4]);
        }
        for (i, want) in [1, 2, 3, 4].into_iter().enumerate() {
            assert_eq!(get(&raw, run::TDX_ARG1 + 8 * i), want);
        }
    }

    #[test]
    fn setup_event_notify_carries_its_vector() {
        let mut raw = run_area(exit::TDX);
        put(
            &mut raw,
            run::TDX_NR,
            tdvmcall::SETUP_EVENT_NOTIFY_INTERRUPT,
        );
        put(&mut raw, run::TDX_ARG0, 0x40);
        let Exit::Tdx(call) = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap()) else {
            panic!("not a TDX exit");
        };
        assert_eq!(call.event_vector(), 0x40);
    }

    #[test]
    fn certificate_requests_and_unknown_reasons_are_decoded_without_borrowing() {
        let mut raw = run_area(exit::SNP_REQ_CERTS);
        put(&mut raw, run::SNP_REQ_CERTS_GPA, 0x9000);
        put(&mut raw, run::SNP_REQ_CERTS_NPAGES, 4);
        let decoded = decode_run(exit::SNP_REQ_CERTS, RunArea::new(&mut raw).unwrap());
        assert!(matches!(
            decoded.detach(),
            Ok(Exit::SnpReqCerts {
                gpa: 0x9000,
                npages: 4
            })
        ));
        let mut raw = run_area(77);
        assert!(matches!(
            decode_run(77, RunArea::new(&mut raw).unwrap()),
            Exit::Unsupported(77)
        ));
    }

    /// kvm-ioctls decodes system events itself; nacre keeps a copy of the data.
    #[test]
    fn system_events_keep_their_data() {
        let mut words = [0u64; 16];
        words[12] = 0xDEAD;
        let exit = Exit::decode(VcpuExit::SystemEvent(system_event::TDX_FATAL, &words));
        let Ok(Exit::SystemEvent { kind, data }) = exit.detach() else {
            panic!("not a system event");
        };
        assert_eq!(
            (kind, data.len(), data[system_event::TDX_FATAL_R12]),
            (7, 16, 0xDEAD)
        );
        let term = [0x0001_3001u64];
        let exit = Exit::decode(VcpuExit::SystemEvent(system_event::SEV_TERM, &term));
        assert!(matches!(
            exit,
            Exit::SystemEvent { kind: 6, ref data } if data == &term
        ));
    }
}
