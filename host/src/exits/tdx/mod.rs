//! The TDX side of the `emulated-tdx` platform's exits: TDCALLs arrive through the
//! doorbell (the firmware's #UD handler forwards them, [`tdcall::undefined_opcode`]
//! makes KVM's emulator raise that #UD) and go to the TDX module's leaves or, for
//! TDG.VP.VMCALL, to the VMM's handler of each sub-function, one module each
//! (Intel TDX module ABI; GHCI 1.5; KVM `arch/x86/kvm/vmx/tdx.c`).
//!
//! Handlers work on a [`TdxContext`]: one TD's memory and MMU, its counters, and the
//! services behind the narrow interfaces (the TDX module, the quoting service, the
//! hostcalls).

pub mod get_quote;
pub mod map_gpa;
pub mod tdcall;
pub mod tdvmcall;

use super::RunError;
use crate::mmu::tdx::TdxMmu;
use crate::platform::hostcall::HostcallHost;
use crate::platform::hostile::Lies;
use crate::platform::Stop;
use crate::stats::{Counters, RunCounters};
use crate::vmm::memory::GuestMemory;
use crate::vmm::vcpu::Vcpu;
use get_quote::QuotingService;
use nacre_shared_abi::doorbell::Doorbell;
use tdcall::TdxModule;

/// TDX protocol counters (`tdx.*` in `--stats-json`; TDCALLs are `exits.tdcall`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdxCounters {
    /// MapGPA calls.
    pub map_gpa_calls: u64,
    /// MapGPA calls answered RETRY.
    pub map_gpa_retries: u64,
    /// TDG.MR.REPORT calls.
    pub mr_reports: u64,
    /// GetQuote calls.
    pub get_quotes: u64,
}

impl Counters for TdxCounters {
    fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("tdx.map_gpa_calls", self.map_gpa_calls),
            ("tdx.map_gpa_retries", self.map_gpa_retries),
            ("tdx.mr_reports", self.mr_reports),
            ("tdx.get_quotes", self.get_quotes),
        ]
    }
}

/// What the TDX exit handlers work on.
#[derive(Debug)]
pub struct TdxContext<'a> {
    /// Guest RAM.
    pub mem: &'a GuestMemory,
    /// The host MMU (attributes, shared TDP, mirror table and S-EPT).
    pub mmu: &'a TdxMmu,
    /// The TDX module's leaves.
    pub module: &'a mut dyn TdxModule,
    /// The quoting service GetQuote goes to, if the platform has one.
    pub quoting: Option<&'a mut dyn QuotingService>,
    /// TDX counters.
    pub counters: &'a mut TdxCounters,
    /// Exits, hostcalls.
    pub run: &'a mut RunCounters,
    /// The console and clocks of the hostcalls.
    pub host: &'a mut HostcallHost,
    /// `--strict-memory`.
    pub strict_memory: bool,
    /// Test hook: convert at most this many pages per MapGPA call before answering
    /// RETRY, as KVM does between chunks when an interrupt is pending.
    pub map_gpa_budget: Option<u64>,
    /// The TD's guest-physical address width: the shared bit is bit GPAW - 1.
    pub gpaw: u32,
    /// The lie a hostile-host test asked for, if any.
    pub lies: &'a mut Lies,
}

impl TdxContext<'_> {
    /// The shared bit as a GPA mask (Intel TDX module ABI: `1 << (GPAW - 1)`).
    pub fn shared_bit(&self) -> u64 {
        1 << (self.gpaw - 1)
    }
}

/// A doorbell on the TDX platform: only TDCALL is one.
pub fn doorbell(
    ctx: &mut TdxContext<'_>,
    vcpu: &mut dyn Vcpu,
    bell: Doorbell,
) -> Result<Option<Stop>, RunError> {
    match bell {
        Doorbell::Tdcall => {
            ctx.run.exit("tdcall");
            let mut regs = vcpu.regs()?;
            let stop = tdcall::handle(ctx, vcpu, &mut regs)?;
            vcpu.set_regs(&regs)?;
            Ok(stop)
        }
        other => Err(RunError::Guest(format!(
            "{other} doorbell on the emulated TDX platform"
        ))),
    }
}
