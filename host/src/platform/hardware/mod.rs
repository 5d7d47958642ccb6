//! What the two hardware platforms (`snp` and `tdx`, on upstream KVM) share: guest
//! RAM as a guest_memfd for the private side and a memfd for the shared side, KVM's
//! MMU behind [`crate::mmu::HypervisorMmu`] ([`mmu::KvmMmu`]), the exits both take
//! (`KVM_HC_MAP_GPA_RANGE`, `KVM_EXIT_MEMORY_FAULT`, the hostcall doorbell as port
//! I/O), the launch operations both need, and the host as `nacre host-check` probes
//! it ([`probe::SystemProbe`]).
//!
//! On hardware the CPU and the firmware do what the emulated platforms play in
//! software: PVALIDATE and TDG.MEM.PAGE.ACCEPT never leave the guest, the GHCB and
//! most TDVMCALLs end in KVM, and only what KVM hands to user space reaches nacre
//! (docs/kvm-uapi.md 3 and 4).
//!
//! A guest may have several vCPUs (`--cpus`). Each runs `KVM_RUN` on a host thread of
//! its own and hands its exits to the platform one at a time, under its lock
//! (`crate::vmm::vcpu::run`); nothing here is kept per vCPU. What is per vCPU on the
//! hardware stays there: each vCPU's GHCB and its registration with KVM, or a TD
//! vCPU's state in the TDX module. Page-state changes, memory faults and hostcalls
//! name guest memory only, which every vCPU shares. The local APICs are KVM's (the
//! split irqchip), so a `hlt` waits in KVM until an interrupt comes and never reaches
//! nacre as an exit (`arch/x86/kvm/x86.c`, `__kvm_emulate_halt`; a TD's TDVMCALL
//! Instruction.HLT goes the same way, `arch/x86/kvm/vmx/tdx.c`, `tdx_handle_exit`). A
//! vCPU halted for good is taken out of `KVM_RUN` by the signal that ends the run when
//! another vCPU stops it; the guests end with a termination request or a fatal-error
//! report, never by halting.

pub mod launch;
pub mod mmu;
pub mod probe;

use super::hostcall::{self, HostcallHost};
use super::Stop;
use crate::exits::RunError;
use crate::mmu::attributes::Kind;
use crate::mmu::{Access, HypervisorMmu};
use crate::stats::{Counters, RunCounters};
use crate::vmm::memory::{GuestMemory, View};
use crate::vmm::uapi::{map_gpa_range, KVM_MEMORY_EXIT_FLAG_PRIVATE};
use mmu::KvmMmu;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::layout::PAGE_SIZE_4K;

/// `EINVAL`, the `ret` of a `KVM_HC_MAP_GPA_RANGE` nacre refuses: KVM fails the
/// guest's page-state change or MapGPA on any non-zero value
/// (`arch/x86/kvm/svm/sev.c`, `snp_complete_psc`; `arch/x86/kvm/vmx/tdx.c`,
/// `tdx_complete_vmcall_map_gpa`).
const MAP_GPA_RANGE_REFUSED: u64 = libc::EINVAL as u64;

/// The largest memory fault KVM reports is one huge page; more is not a fault.
const MAX_FAULT_PAGES: u64 = 1 << 18;

/// Counters of the exits both hardware platforms take (`hw.*`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HardwareCounters {
    /// `KVM_HC_MAP_GPA_RANGE` exits.
    pub map_gpa_range: u64,
    /// Pages they named.
    pub map_gpa_range_pages: u64,
    /// Of those refused (outside RAM, misaligned).
    pub map_gpa_range_refused: u64,
}

impl Counters for HardwareCounters {
    fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hw.map_gpa_range", self.map_gpa_range),
            ("hw.map_gpa_range_pages", self.map_gpa_range_pages),
            ("hw.map_gpa_range_refused", self.map_gpa_range_refused),
        ]
    }
}

/// A guest on a hardware platform, as both platforms keep it.
#[derive(Debug)]
pub struct HardwareGuest {
    /// KVM's MMU, as nacre drives it (declared first: it holds a copy of the VM's fd,
    /// closed before the memory the VM maps).
    pub mmu: KvmMmu,
    /// The console, clocks and sockets of the hostcalls (declared before `mem`: its
    /// readiness thread holds a copy of the VM's fd).
    pub host: HostcallHost,
    /// Guest RAM's shared side (the memfd every memory slot maps for shared pages).
    pub mem: GuestMemory,
    /// `--strict-memory`.
    pub strict_memory: bool,
    /// Exits and hostcalls.
    pub run: RunCounters,
    /// This module's counters.
    pub counters: HardwareCounters,
}

impl HardwareGuest {
    /// A guest over `mem` whose MMU is `mmu`.
    pub fn new(mem: GuestMemory, mmu: KvmMmu) -> Self {
        Self {
            mmu,
            mem,
            strict_memory: false,
            run: RunCounters::default(),
            host: HostcallHost::default(),
            counters: HardwareCounters::default(),
        }
    }

    /// `KVM_HC_MAP_GPA_RANGE`: `args[0]` the GPA (without the C-bit or shared bit),
    /// `args[1]` the number of 4 KiB pages, `args[2]` the attributes (bit 4: to
    /// private). The range becomes what the guest asked, with `ret` 0; a range that
    /// is misaligned, empty or leaves RAM is refused with a non-zero `ret`.
    pub fn map_gpa_range(&mut self, args: [u64; 6], ret: &mut u64) -> Result<(), RunError> {
        let [gpa, pages, attrs, ..] = args;
        self.counters.map_gpa_range += 1;
        self.counters.map_gpa_range_pages = self.counters.map_gpa_range_pages.saturating_add(pages);
        let kind = if attrs & map_gpa_range::ENCRYPTED != 0 {
            Kind::Private
        } else {
            Kind::Shared
        };
        let converted = if gpa.is_multiple_of(PAGE_SIZE_4K) && pages != 0 {
            self.mmu
                .convert(&self.mem, gpa / PAGE_SIZE_4K, pages, kind)?
        } else {
            None
        };
        *ret = match converted {
            Some(_) => 0,
            None => {
                self.counters.map_gpa_range_refused += 1;
                MAP_GPA_RANGE_REFUSED
            }
        };
        Ok(())
    }

    /// `KVM_EXIT_MEMORY_FAULT`: the guest touched `[gpa, gpa + size)` as private
    /// (`flags` has `KVM_MEMORY_EXIT_FLAG_PRIVATE`) or shared while its attribute is
    /// the other. Each page is converted, or with `--strict-memory` the guest stops.
    pub fn memory_fault(
        &mut self,
        gpa: u64,
        size: u64,
        flags: u64,
    ) -> Result<Option<Stop>, RunError> {
        let (kind, view) = if flags & KVM_MEMORY_EXIT_FLAG_PRIVATE != 0 {
            (Kind::Private, View::Private)
        } else {
            (Kind::Shared, View::Shared)
        };
        let first = gpa / PAGE_SIZE_4K;
        let pages = gpa
            .saturating_add(size.max(1))
            .div_ceil(PAGE_SIZE_4K)
            .saturating_sub(first)
            .min(MAX_FAULT_PAGES);
        for gfn in first..first + pages {
            match self.mmu.access(&self.mem, gfn, kind, self.strict_memory)? {
                Access::Ok { .. } => {}
                Access::Violation(rule) => {
                    return Ok(Some(Stop::MemoryViolation {
                        gpa: gfn * PAGE_SIZE_4K,
                        view,
                        rule,
                    }))
                }
            }
        }
        Ok(None)
    }

    /// A port write: the hostcall doorbell (32 bits, the hostcall area's page number,
    /// to `HOSTCALL_PORT`), or nothing nacre has.
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> Result<Option<Stop>, RunError> {
        let page = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if port == HOSTCALL_PORT => u64::from(u32::from_le_bytes(bytes)),
            _ => {
                return Err(RunError::Guest(format!(
                    "write of {} bytes to I/O port {port:#x}, which is not the hostcall \
                     doorbell",
                    data.len()
                )))
            }
        };
        Ok(hostcall::serve(
            &self.mem,
            &self.mmu,
            &mut self.run,
            &mut self.host,
            page * PAGE_SIZE_4K,
        )?)
    }

    /// The counters of the MMU and of this module.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut all = self.counters.entries();
        all.extend(self.mmu.counters());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::mmu::testing::RecordingSink;
    use super::*;
    use crate::mmu::rule;

    pub(crate) fn guest(pages: u64) -> (HardwareGuest, RecordingSink) {
        let sink = RecordingSink::default();
        let mem = GuestMemory::new(pages * PAGE_SIZE_4K).unwrap();
        let mmu = KvmMmu::new(pages, Box::new(sink.clone()));
        (HardwareGuest::new(mem, mmu), sink)
    }

    #[test]
    fn map_gpa_range_converts_and_answers_zero() {
        let (mut g, sink) = guest(1024);
        let mut ret = u64::MAX;
        // 2 MiB to shared (page size bits 1: 2M), as a PSC of one 2 MiB entry becomes.
        g.map_gpa_range([0x20_0000, 512, 1, 0, 0, 0], &mut ret)
            .unwrap();
        assert_eq!(ret, 0);
        assert!(g.mmu.is_shared(512, 512));
        g.map_gpa_range([0x20_0000, 1, map_gpa_range::ENCRYPTED, 0, 0, 0], &mut ret)
            .unwrap();
        assert_eq!(ret, 0);
        assert!(!g.mmu.is_shared(512, 1) && g.mmu.is_shared(513, 511));
        assert_eq!(
            *sink.set.lock().unwrap(),
            vec![(0x20_0000, 0x20_0000, false), (0x20_0000, 0x1000, true)]
        );
    }

    #[test]
    fn map_gpa_range_refuses_what_is_not_ram() {
        let (mut g, sink) = guest(64);
        for args in [
            [0x1000 * 60, 8, 0, 0, 0, 0], // leaves RAM
            [0x1001, 1, 0, 0, 0, 0],      // misaligned
            [0, 0, 0, 0, 0, 0],           // empty
            [!0xFFF, u64::MAX, 0, 0, 0, 0],
        ] {
            let mut ret = 0;
            g.map_gpa_range(args, &mut ret).unwrap();
            assert_ne!(ret, 0, "{args:x?}");
        }
        assert!(sink.set.lock().unwrap().is_empty());
        assert_eq!(g.counters.map_gpa_range_refused, 4);
    }

    #[test]
    fn memory_faults_convert_or_stop_when_strict() {
        let (mut g, _) = guest(64);
        assert_eq!(g.memory_fault(0x3000, 0x1000, 0).unwrap(), None);
        assert!(g.mmu.is_shared(3, 1));
        g.strict_memory = true;
        let stop = g
            .memory_fault(0x3000, 0x1000, KVM_MEMORY_EXIT_FLAG_PRIVATE)
            .unwrap();
        assert_eq!(
            stop,
            Some(Stop::MemoryViolation {
                gpa: 0x3000,
                view: View::Private,
                rule: rule::PRIVATE_TO_SHARED
            })
        );
        let outside = g.memory_fault(0x40_0000, 0x1000, 0).unwrap();
        assert!(matches!(
            outside,
            Some(Stop::MemoryViolation {
                rule: rule::OUT_OF_RANGE,
                ..
            })
        ));
    }

    #[test]
    fn the_hostcall_doorbell_is_a_32_bit_write_of_the_area_page() {
        let (mut g, _) = guest(2048);
        let area = 0x60_0000;
        // The area must be shared first, as the firmware makes it.
        g.mmu
            .convert(&g.mem, area / PAGE_SIZE_4K, 512, Kind::Shared)
            .unwrap();
        crate::exits::testing::put_hostcall(&g.mem, area, &crate::exits::testing::exit_request(7));
        let page = ((area / PAGE_SIZE_4K) as u32).to_le_bytes();
        let stop = g.io_out(HOSTCALL_PORT, &page).unwrap();
        assert_eq!(stop, Some(Stop::AppExit(7)));
        assert!(g.io_out(HOSTCALL_PORT, &[1]).is_err());
        assert!(g.io_out(0x80, &page).is_err());
        // A private area is a protocol violation, not a host error.
        let private = ((0x1000 / PAGE_SIZE_4K) as u32).to_le_bytes();
        assert!(matches!(
            g.io_out(HOSTCALL_PORT, &private).unwrap(),
            Some(Stop::ProtocolViolation(_))
        ));
    }
}
