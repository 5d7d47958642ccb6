//! The TDX launch against a recording fake of its ioctls: the fake keeps KVM's rules
//! (the split irqchip before any vCPU, INIT_VM before any vCPU, vCPUs only after
//! INIT_VM, with the split irqchip and within the VM's limit, only configurable CPUID
//! leaves, no TD attribute KVM does not allow, INIT_MEM_REGION only on a vCPU that had
//! its INIT_VCPU, pages only once and only private ones in a guest_memfd slot, no vCPU
//! and no vCPU command after FINALIZE, FINALIZE last), answers `E2BIG`, `EAGAIN`,
//! `EINTR`, `EBUSY` and partial progress when told to, and measures what it is given
//! as the TDX module does (TDH.MEM.PAGE.ADD and, with MEASURE, 16 TDH.MR.EXTEND per
//! page, in the order the pages arrive). Its MRTD must be the one `nacre measure`
//! predicts, for any number of vCPUs.
//!
//! Then the exits of a running TD, from synthetic `kvm_run` contents: GetQuote through
//! a fake quote generation service on a unix socket, GetTdVmCallInfo,
//! SetupEventNotifyInterrupt, MapGPA, ReportFatalError.
//!
//! What this cannot show: that KVM and the TDX module do as modelled. Only a TDX host
//! can (the tests in `tests/tests/hardware.rs` run where `nacre host-check` says it
//! is one).

use super::launch::{self, TdxLaunchOps, GPAW, RAM_SLOT, RESET_SLOT};
use super::qgs::testing::{serve, Answer};
use super::qgs::{QgsAddress, QgsClient};
use super::Tdx;
use crate::cli::measure::{measure_bytes, MeasurePlatform};
use crate::exits::hardware::{decode_run, tdvmcall};
use crate::exits::{handle_exit, Exit, RunError};
use crate::mmu::attributes::Kind;
use crate::mmu::HypervisorMmu;
use crate::platform::hardware::launch::{HostPages, LaunchError, VmOps};
use crate::platform::hardware::mmu::testing::RecordingSink;
use crate::platform::hardware::mmu::KvmMmu;
use crate::platform::hardware::HardwareGuest;
use crate::platform::launch::parameter_page;
use crate::platform::Stop;
use crate::vmm::memory::GuestMemory;
use crate::vmm::uapi::{
    exit, map_gpa_range, run, system_event, CpuidEntry, KvmTdxCapabilities, KvmTdxInitMemRegion,
    KvmTdxInitVm, RunArea, WithCpuid, KVM_TDX_MEASURE_MEMORY_REGION,
};
use kvm_ioctls::VcpuExit;
use nacre_loader::measure::tdx::Mrtd;
use nacre_loader::{load_image, LoadedImage, PlatformKind};
use nacre_shared_abi::layout::{PAGE_SIZE_4K, TDX_RESET_PAGE_GPA};
use nacre_shared_abi::tdx::attributes;
use nacre_shared_abi::tdx_report::get_quote::{self, QuoteBufHeader, HEADER_SIZE};
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::OnceLock;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

fn image_bytes(debug: bool) -> &'static [u8] {
    static PLAIN: OnceLock<Vec<u8>> = OnceLock::new();
    static DEBUG: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if debug { &DEBUG } else { &PLAIN };
    cell.get_or_init(|| {
        let files = crate::cli::package::file_tree("hello", &[]).unwrap();
        crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, debug).unwrap()
    })
}

fn image() -> LoadedImage {
    load_image(image_bytes(false), PlatformKind::Tdx).unwrap()
}

/// What `nacre measure --platform tdx` prints for the image.
fn nacre_measure() -> [u8; 48] {
    measure_bytes(
        image_bytes(false),
        MeasurePlatform::Kind(PlatformKind::Tdx),
        1,
    )
    .unwrap()[0]
        .measurement
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    SplitIrqchip,
    Capabilities { room: usize },
    InitVm { attributes: u64, xfam: u64 },
    CreateVcpu(u32),
    InitVcpu(u32),
    Slot { slot: u32, gpa: u64, size: u64 },
    SetPrivate { gpa: u64, size: u64 },
    Region { gpa: u64, pages: u64, flags: u32 },
    Finalize,
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    Partial(u64),
    Errno(u64, i32),
}

/// The configurable CPUID leaves of the fake TDX module (each register a mask).
fn configurable() -> Vec<CpuidEntry> {
    let mut leaves: Vec<CpuidEntry> = (0..20)
        .map(|i| CpuidEntry {
            function: 7,
            index: i,
            ebx: !0,
            ..Default::default()
        })
        .collect();
    leaves.push(CpuidEntry {
        function: 0x8000_0008,
        eax: 0x00FF_0000,
        ..Default::default()
    });
    leaves
}

#[derive(Debug)]
struct FakeTdx {
    calls: Vec<Call>,
    script: VecDeque<Reply>,
    init_vm_again: u32,
    finalize_busy: u32,
    caps: KvmTdxCapabilities,
    slots: Vec<(u64, u64, u64)>,
    private: Vec<(u64, u64)>,
    added: BTreeSet<u64>,
    mrtd: Mrtd,
    init: Option<Vec<CpuidEntry>>,
    split_irqchip: bool,
    /// The VM's `KVM_CAP_MAX_VCPUS`: the host's CPU count for a TD.
    vcpu_limit: u32,
    /// Each vCPU made, in index order: whether it had its INIT_VCPU.
    vcpus: Vec<bool>,
    mrtd_final: Option<[u8; 48]>,
}

impl Default for FakeTdx {
    fn default() -> Self {
        Self {
            calls: Vec::new(),
            script: VecDeque::new(),
            init_vm_again: 0,
            finalize_busy: 0,
            caps: KvmTdxCapabilities {
                supported_attrs: attributes::SEPT_VE_DISABLE,
                supported_xfam: 0x6_02E7,
                kernel_tdvmcallinfo_1_r11: 1,
                user_tdvmcallinfo_1_r11: 2,
                ..KvmTdxCapabilities::new_zeroed()
            },
            slots: Vec::new(),
            private: Vec::new(),
            added: BTreeSet::new(),
            mrtd: Mrtd::new(),
            init: None,
            split_irqchip: false,
            vcpu_limit: 64,
            vcpus: Vec::new(),
            mrtd_final: None,
        }
    }
}

fn errno(what: &'static str, n: i32) -> LaunchError {
    LaunchError::Kvm {
        what,
        source: io::Error::from_raw_os_error(n),
        status: Some(0),
    }
}

impl FakeTdx {
    fn private(&self, gpa: u64) -> bool {
        self.private.iter().any(|&(a, n)| (a..a + n).contains(&gpa))
    }

    fn source(&self, addr: u64) -> Option<[u8; 4096]> {
        let inside = self
            .slots
            .iter()
            .any(|&(_, size, shared)| addr >= shared && addr + PAGE_SIZE_4K <= shared + size);
        // SAFETY: `addr` is a page inside the shared side of a slot the launch under
        // test gave (guest RAM's mapping or the reset page), which it keeps mapped.
        inside.then(|| unsafe { *(addr as *const [u8; 4096]) })
    }
}

impl VmOps for FakeTdx {
    fn split_irqchip(&mut self) -> Result<(), LaunchError> {
        // KVM: once, and before any vCPU (x86.c, kvm_vm_ioctl_enable_cap).
        if self.split_irqchip || !self.vcpus.is_empty() {
            return Err(errno("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)", libc::EEXIST));
        }
        self.calls.push(Call::SplitIrqchip);
        self.split_irqchip = true;
        Ok(())
    }

    fn max_vcpus(&mut self) -> Result<u32, LaunchError> {
        Ok(self.vcpu_limit)
    }

    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>, LaunchError> {
        let mut all = vec![
            CpuidEntry {
                function: 1,
                ecx: 1 << 21,
                ..Default::default()
            },
            CpuidEntry {
                function: 0x8000_0008,
                eax: 0x3030,
                ..Default::default()
            },
        ];
        all.extend((0..20).map(|i| CpuidEntry {
            function: 7,
            index: i,
            ebx: 0x1234 + i,
            ..Default::default()
        }));
        Ok(all)
    }

    fn add_private_slot(
        &mut self,
        slot: u32,
        gpa: u64,
        size: u64,
        shared: u64,
    ) -> Result<(), LaunchError> {
        self.calls.push(Call::Slot { slot, gpa, size });
        self.slots.push((gpa, size, shared));
        Ok(())
    }

    fn set_private(&mut self, gpa: u64, size: u64) -> Result<(), LaunchError> {
        if !self
            .slots
            .iter()
            .any(|&(a, n, _)| gpa >= a && gpa + size <= a + n)
        {
            return Err(errno("KVM_SET_MEMORY_ATTRIBUTES", libc::EINVAL));
        }
        self.calls.push(Call::SetPrivate { gpa, size });
        self.private.push((gpa, size));
        Ok(())
    }
}

impl TdxLaunchOps for FakeTdx {
    fn capabilities(
        &mut self,
        caps: &mut WithCpuid<KvmTdxCapabilities>,
    ) -> Result<(), LaunchError> {
        self.calls.push(Call::Capabilities { room: caps.room() });
        let leaves = configurable();
        if caps.room() < leaves.len() {
            return Err(errno("KVM_TDX_CAPABILITIES", libc::E2BIG));
        }
        caps.fill(&self.caps, &leaves);
        Ok(())
    }

    fn init_vm(&mut self, init: &mut WithCpuid<KvmTdxInitVm>) -> Result<(), LaunchError> {
        let what = "KVM_TDX_INIT_VM";
        let head = init.head();
        let entries = init.entries();
        let leaves = configurable();
        let configurable = entries.iter().all(|e| {
            leaves
                .iter()
                .any(|l| l.function == e.function && l.index == e.index)
        });
        let gpaw = entries
            .iter()
            .find(|e| e.function == 0x8000_0008)
            .map(|e| (e.eax >> 16) & 0xFF);
        if !self.vcpus.is_empty()
            || self.init.is_some()
            || head.attributes & !self.caps.supported_attrs != 0
            || head.xfam & !self.caps.supported_xfam != 0
            || head.xfam & 3 != 3
            || !configurable
            || !matches!(gpaw, Some(48 | 52))
        {
            return Err(errno(what, libc::EINVAL));
        }
        self.calls.push(Call::InitVm {
            attributes: head.attributes,
            xfam: head.xfam,
        });
        if self.init_vm_again > 0 {
            self.init_vm_again -= 1;
            return Err(errno(what, libc::EAGAIN));
        }
        self.init = Some(entries);
        Ok(())
    }

    fn create_vcpu(&mut self, index: u32, cpuid: &[CpuidEntry]) -> Result<(), LaunchError> {
        // vCPUs only after INIT_VM and before FINALIZE (tdx_vcpu_create: EIO), with the
        // split irqchip (EINVAL) and the x2APIC KVM switches them to, each id once (nacre
        // makes them in order), within the VM's limit.
        let x2apic = cpuid
            .iter()
            .any(|e| e.function == 1 && e.ecx & 1 << 21 != 0);
        if self.init.is_none() || self.mrtd_final.is_some() {
            return Err(errno("KVM_CREATE_VCPU", libc::EIO));
        }
        if !self.split_irqchip
            || !x2apic
            || index as usize != self.vcpus.len()
            || index >= self.vcpu_limit
        {
            return Err(errno("KVM_CREATE_VCPU", libc::EINVAL));
        }
        self.calls.push(Call::CreateVcpu(index));
        self.vcpus.push(false);
        Ok(())
    }

    fn init_vcpu(&mut self, index: u32, _rcx: u64) -> Result<(), LaunchError> {
        // Once per vCPU, never after FINALIZE (tdx_vcpu_ioctl, tdx_vcpu_init).
        match self.vcpus.get_mut(index as usize) {
            Some(ready @ false) if self.mrtd_final.is_none() => *ready = true,
            _ => return Err(errno("KVM_TDX_INIT_VCPU", libc::EINVAL)),
        }
        self.calls.push(Call::InitVcpu(index));
        Ok(())
    }

    fn init_mem_region(
        &mut self,
        r: &mut KvmTdxInitMemRegion,
        flags: u32,
    ) -> Result<(), LaunchError> {
        let what = "KVM_TDX_INIT_MEM_REGION";
        // On vCPU 0's fd, which must have had its INIT_VCPU.
        if self.vcpus.first() != Some(&true) || self.mrtd_final.is_some() || r.nr_pages == 0 {
            return Err(errno(what, libc::EINVAL));
        }
        self.calls.push(Call::Region {
            gpa: r.gpa,
            pages: r.nr_pages,
            flags,
        });
        let reply = self.script.pop_front().unwrap_or(Reply::Partial(u64::MAX));
        let (todo, result) = match reply {
            Reply::Partial(n) => (n.min(r.nr_pages), Ok(())),
            Reply::Errno(n, e) => (n.min(r.nr_pages), Err(errno(what, e))),
        };
        for _ in 0..todo {
            if !self.private(r.gpa) || !self.added.insert(r.gpa) {
                return Err(errno(what, libc::EINVAL));
            }
            let page = self
                .source(r.source_addr)
                .ok_or_else(|| errno(what, libc::EFAULT))?;
            let measured = flags & KVM_TDX_MEASURE_MEMORY_REGION != 0;
            self.mrtd.add_page(r.gpa, measured.then_some(&page));
            r.gpa += PAGE_SIZE_4K;
            r.source_addr += PAGE_SIZE_4K;
            r.nr_pages -= 1;
        }
        result
    }

    fn finalize(&mut self) -> Result<(), LaunchError> {
        // After INIT_VM, once (tdx_td_finalize); it does not look at the vCPUs.
        if self.init.is_none() || self.mrtd_final.is_some() {
            return Err(errno("KVM_TDX_FINALIZE_VM", libc::EINVAL));
        }
        self.calls.push(Call::Finalize);
        if self.finalize_busy > 0 {
            self.finalize_busy -= 1;
            return Err(errno("KVM_TDX_FINALIZE_VM", libc::EBUSY));
        }
        self.mrtd_final = Some(self.mrtd.clone().finish());
        Ok(())
    }
}

fn launch(
    fake: &mut FakeTdx,
    image: &LoadedImage,
) -> Result<(GuestMemory, launch::Launched), LaunchError> {
    launch_cpus(fake, image, 1)
}

fn launch_cpus(
    fake: &mut FakeTdx,
    image: &LoadedImage,
    cpus: u32,
) -> Result<(GuestMemory, launch::Launched), LaunchError> {
    let memory = image.min_memory.max(64 << 20);
    let mem = GuestMemory::new(memory).unwrap();
    let mut reset = HostPages::new(1).unwrap();
    let param = parameter_page(memory, None, cpus);
    let launched = launch::run(fake, &mem, image, &param, &mut reset, cpus)?;
    Ok((mem, launched))
}

#[test]
fn the_recorded_launch_measures_what_nacre_measure_predicts() {
    let image = image();
    let mut fake = FakeTdx::default();
    launch(&mut fake, &image).unwrap();
    assert_eq!(fake.mrtd_final, Some(nacre_measure()));
    assert_eq!(fake.mrtd_final, image.mrtd);
}

#[test]
fn the_ioctls_come_in_kvms_order_with_the_images_attributes() {
    let image = image();
    let mut fake = FakeTdx::default();
    let (mem, launched) = launch(&mut fake, &image).unwrap();
    let size = mem.size();
    let attrs = image.td_attributes().unwrap();
    assert_eq!(attrs, attributes::SEPT_VE_DISABLE);
    let calls = &fake.calls;
    // 16 leaves of room, E2BIG, 32.
    assert_eq!(
        calls[..10],
        [
            Call::SplitIrqchip,
            Call::Capabilities { room: 16 },
            Call::Capabilities { room: 32 },
            Call::InitVm {
                attributes: attrs,
                xfam: 0xE7
            },
            Call::CreateVcpu(0),
            Call::InitVcpu(0),
            Call::Slot {
                slot: RAM_SLOT,
                gpa: 0,
                size
            },
            Call::Slot {
                slot: RESET_SLOT,
                gpa: TDX_RESET_PAGE_GPA,
                size: PAGE_SIZE_4K
            },
            Call::SetPrivate { gpa: 0, size },
            Call::SetPrivate {
                gpa: TDX_RESET_PAGE_GPA,
                size: PAGE_SIZE_4K
            },
        ]
    );
    assert_eq!(calls.last(), Some(&Call::Finalize));
    let regions: Vec<_> = calls[10..calls.len() - 1].to_vec();
    assert!(regions.iter().all(|c| matches!(c, Call::Region { .. })));
    // The parameter page last, not measured; the reset page measured.
    assert_eq!(
        regions.last(),
        Some(&Call::Region {
            gpa: image.param_gpa,
            pages: 1,
            flags: 0
        })
    );
    assert!(regions.contains(&Call::Region {
        gpa: TDX_RESET_PAGE_GPA,
        pages: 1,
        flags: KVM_TDX_MEASURE_MEMORY_REGION
    }));
    assert_eq!(fake.added.len(), image.pages.len() + 1);
    // The TD's CPUID: the configurable leaves only, with the address width.
    let cpuid = fake.init.as_ref().unwrap();
    assert_eq!(cpuid.len(), configurable().len());
    let width = cpuid.iter().find(|e| e.function == 0x8000_0008).unwrap();
    assert_eq!(width.eax, GPAW << 16);
    assert_eq!(launched.caps.kernel_tdvmcallinfo_1_r11, 1);
}

/// Every vCPU is made and has its INIT_VCPU after INIT_VM and before the first page is
/// added, each with the same CPUID, and MRTD is the same for any number of them.
#[test]
fn a_launch_of_more_vcpus_initializes_each_and_measures_the_same_mrtd() {
    let image = image();
    for cpus in [2, 3, 16] {
        let mut fake = FakeTdx::default();
        launch_cpus(&mut fake, &image, cpus).unwrap();
        assert_eq!(fake.mrtd_final, Some(nacre_measure()), "{cpus} vCPUs");
        assert_eq!(fake.mrtd_final, image.mrtd, "{cpus} vCPUs");
        assert_eq!(fake.vcpus, vec![true; cpus as usize]);
        let at = |want: &Call| fake.calls.iter().position(|c| c == want).unwrap();
        let init_vm = fake
            .calls
            .iter()
            .position(|c| matches!(c, Call::InitVm { .. }))
            .unwrap();
        let first_region = fake
            .calls
            .iter()
            .position(|c| matches!(c, Call::Region { .. }))
            .unwrap();
        assert!(at(&Call::SplitIrqchip) < at(&Call::CreateVcpu(0)));
        let made: Vec<Call> = fake
            .calls
            .iter()
            .filter(|c| matches!(c, Call::CreateVcpu(_) | Call::InitVcpu(_)))
            .cloned()
            .collect();
        let want: Vec<Call> = (0..cpus)
            .flat_map(|i| [Call::CreateVcpu(i), Call::InitVcpu(i)])
            .collect();
        assert_eq!(made, want);
        assert!(init_vm < at(&Call::CreateVcpu(0)));
        assert!(at(&Call::InitVcpu(cpus - 1)) < first_region);
        assert!(at(&Call::InitVcpu(cpus - 1)) < at(&Call::Finalize));
    }
}

/// More vCPUs than KVM gives the TD (the host's CPU count) are refused with a message
/// before the launch configures anything; up to that many launch.
#[test]
fn more_vcpus_than_the_td_may_have_are_refused_first() {
    let image = image();
    let mut fake = FakeTdx {
        vcpu_limit: 4,
        ..FakeTdx::default()
    };
    let err = launch_cpus(&mut fake, &image, 5).unwrap_err().to_string();
    assert!(
        err.contains("at most 4") && err.contains("--cpus 4"),
        "{err}"
    );
    assert!(fake.calls.is_empty(), "{:?}", fake.calls);
    let mut fake = FakeTdx {
        vcpu_limit: 4,
        ..FakeTdx::default()
    };
    launch_cpus(&mut fake, &image, 4).unwrap();
    assert_eq!(fake.vcpus.len(), 4);
    let mut fake = FakeTdx::default();
    let err = launch_cpus(&mut fake, &image, 17).unwrap_err().to_string();
    assert!(err.contains("1 to 16"), "{err}");
    assert!(fake.calls.is_empty());
}

#[test]
fn retries_and_partial_progress_reach_the_same_mrtd() {
    let image = image();
    let mut fake = FakeTdx {
        script: VecDeque::from([
            Reply::Partial(1),
            Reply::Errno(0, libc::EINTR),
            Reply::Errno(3, libc::EAGAIN),
            Reply::Partial(0),
            Reply::Errno(2, libc::EINTR),
        ]),
        init_vm_again: 3,
        finalize_busy: 2,
        ..FakeTdx::default()
    };
    launch(&mut fake, &image).unwrap();
    assert!(fake.script.is_empty());
    assert_eq!(fake.mrtd_final, Some(nacre_measure()));
    let count = |want: fn(&Call) -> bool| fake.calls.iter().filter(|c| want(c)).count();
    assert_eq!(count(|c| matches!(c, Call::InitVm { .. })), 4);
    assert_eq!(count(|c| *c == Call::Finalize), 3);
}

#[test]
fn a_debug_td_is_refused_before_any_ioctl() {
    let image = load_image(image_bytes(true), PlatformKind::Tdx).unwrap();
    assert_ne!(image.td_attributes().unwrap() & attributes::DEBUG, 0);
    let mut fake = FakeTdx::default();
    let err = launch(&mut fake, &image).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("SEPT_VE_DISABLE") && text.contains("--debug"),
        "{text}"
    );
    assert!(fake.calls.is_empty());
}

#[test]
fn attributes_the_module_does_not_allow_and_failed_regions_stop_the_launch() {
    let image = image();
    let mut fake = FakeTdx::default();
    fake.caps.supported_attrs = 0;
    let err = launch(&mut fake, &image).unwrap_err();
    assert!(err.to_string().contains("TD attributes"), "{err}");
    assert!(!fake.calls.iter().any(|c| matches!(c, Call::InitVm { .. })));
    let mut fake = FakeTdx {
        script: VecDeque::from([Reply::Errno(0, libc::EIO)]),
        ..FakeTdx::default()
    };
    let err = launch(&mut fake, &image).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EIO));
    assert!(!fake.calls.contains(&Call::Finalize));
}

// ----------------------------------------------------------------------------------
// Exits of a running TD.

fn platform(pages: u64) -> (Tdx, RecordingSink) {
    let sink = RecordingSink::default();
    let mem = GuestMemory::new(pages * PAGE_SIZE_4K).unwrap();
    let guest = HardwareGuest::new(mem, KvmMmu::new(pages, Box::new(sink.clone())));
    let tdx = Tdx {
        guest,
        reset: HostPages::new(1).unwrap(),
        quoting: None,
        kernel_tdvmcall_info: [1, 0],
        get_quotes: 0,
    };
    (tdx, sink)
}

fn handle(tdx: &mut Tdx, e: Exit<'_>) -> Result<Option<Stop>, RunError> {
    handle_exit(tdx, &mut crate::vmm::vcpu::Busy::new(0), e)
}

/// A `kvm_run` holding a `KVM_EXIT_TDX` of sub-function `nr` with `ret` preset as
/// KVM does and the operands `args` at 56, 64, ...
fn tdx_run(nr: u64, args: &[u64]) -> Vec<u8> {
    let mut raw = vec![0u8; run::SIZE];
    let mut area = RunArea::new(&mut raw).unwrap();
    area.set_u32(run::EXIT_REASON, exit::TDX);
    area.set_u64(run::TDX_NR, nr);
    area.set_u64(run::TDX_RET, tdvmcall::SUBFUNC_UNSUPPORTED);
    for (i, a) in args.iter().enumerate() {
        area.set_u64(run::TDX_ARG0 + 8 * i, *a);
    }
    raw
}

fn u64_at(raw: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(raw[offset..offset + 8].try_into().unwrap())
}

/// Put a GetQuote buffer with a TDREPORT at `gpa` (`size` bytes).
fn quote_buffer(tdx: &Tdx, gpa: u64, size: u64) {
    tdx.guest
        .mmu
        .convert(
            &tdx.guest.mem,
            gpa / PAGE_SIZE_4K,
            size / PAGE_SIZE_4K,
            Kind::Shared,
        )
        .unwrap();
    let header = QuoteBufHeader {
        version: get_quote::VERSION,
        status: 0,
        in_len: 1024,
        out_len: 0,
    };
    tdx.guest.mem.write(gpa, header.as_bytes()).unwrap();
    tdx.guest
        .mem
        .write(gpa + HEADER_SIZE as u64, &[0x5A; 1024])
        .unwrap();
}

fn quote_header(tdx: &Tdx, gpa: u64) -> QuoteBufHeader {
    let mut raw = [0u8; HEADER_SIZE];
    tdx.guest.mem.read(gpa, &mut raw).unwrap();
    QuoteBufHeader::read_from_bytes(&raw).unwrap()
}

#[test]
fn get_quote_goes_to_the_quote_generation_service() {
    let (_dir, socket, thread) = serve(vec![Answer::Quote(vec![0xC0; 5000])]);
    let (mut tdx, _) = platform(1024);
    tdx.quoting = Some(Box::new(QgsClient::new(QgsAddress::Unix(socket))));
    let (gpa, size) = (0x10_0000, 0x1_0000);
    quote_buffer(&tdx, gpa, size);
    let mut raw = tdx_run(tdvmcall::GET_QUOTE, &[gpa, size]);
    let e = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap());
    assert_eq!(handle(&mut tdx, e).unwrap(), None);
    assert_eq!(u64_at(&raw, run::TDX_RET), tdvmcall::SUCCESS);
    let h = quote_header(&tdx, gpa);
    assert_eq!((h.status, h.out_len), (get_quote::status::SUCCESS, 5000));
    let mut quote = vec![0u8; 5000];
    tdx.guest
        .mem
        .read(gpa + HEADER_SIZE as u64, &mut quote)
        .unwrap();
    assert_eq!(quote, vec![0xC0; 5000]);
    // The service got the TDREPORT the TD put there.
    let requests = thread.join().unwrap();
    assert_eq!(&requests[0][24..], &[0x5A; 1024][..]);
    assert_eq!(tdx.guest.run.exits.get("tdvmcall"), Some(&1));
}

#[test]
fn get_quote_on_private_memory_or_without_a_service_fails_as_the_ghci_says() {
    let (mut tdx, _) = platform(1024);
    // Private buffer: INVALID_OPERAND, nothing written.
    let mut raw = tdx_run(tdvmcall::GET_QUOTE, &[0x20_0000, 0x1000]);
    let e = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap());
    handle(&mut tdx, e).unwrap();
    assert_eq!(u64_at(&raw, run::TDX_RET), tdvmcall::INVALID_OPERAND);
    // No service: the call succeeds, the buffer says the service is unavailable.
    let gpa = 0x10_0000;
    quote_buffer(&tdx, gpa, 0x2000);
    let mut raw = tdx_run(tdvmcall::GET_QUOTE, &[gpa, 0x2000]);
    let e = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap());
    handle(&mut tdx, e).unwrap();
    assert_eq!(u64_at(&raw, run::TDX_RET), tdvmcall::SUCCESS);
    assert_eq!(
        quote_header(&tdx, gpa).status,
        get_quote::status::SERVICE_UNAVAILABLE
    );
    // A buffer that leaves RAM.
    let mut raw = tdx_run(tdvmcall::GET_QUOTE, &[0x3F_F000, 0x2000]);
    let e = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap());
    handle(&mut tdx, e).unwrap();
    assert_eq!(u64_at(&raw, run::TDX_RET), tdvmcall::INVALID_OPERAND);
}

#[test]
fn get_td_vm_call_info_and_event_notification_are_answered() {
    let (mut tdx, _) = platform(64);
    let mut raw = tdx_run(tdvmcall::GET_TD_VM_CALL_INFO, &[1]);
    let e = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap());
    handle(&mut tdx, e).unwrap();
    assert_eq!(u64_at(&raw, run::TDX_RET), tdvmcall::SUCCESS);
    assert_eq!(u64_at(&raw, run::TDX_ARG1), 1, "KVM's own GetQuote bit");
    assert_eq!(u64_at(&raw, run::TDX_ARG1 + 8), 0);
    let mut raw = tdx_run(tdvmcall::SETUP_EVENT_NOTIFY_INTERRUPT, &[0x40]);
    let e = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap());
    handle(&mut tdx, e).unwrap();
    assert_eq!(u64_at(&raw, run::TDX_RET), tdvmcall::SUBFUNC_UNSUPPORTED);
    let mut raw = tdx_run(0x1_0099, &[]);
    let e = decode_run(exit::TDX, RunArea::new(&mut raw).unwrap());
    handle(&mut tdx, e).unwrap();
    assert_eq!(u64_at(&raw, run::TDX_RET), tdvmcall::SUBFUNC_UNSUPPORTED);
}

#[test]
fn map_gpa_and_report_fatal_error() {
    let (mut tdx, sink) = platform(1024);
    let mut ret = 1;
    let e = Exit::decode(VcpuExit::Hypercall(kvm_ioctls::HypercallExit {
        nr: map_gpa_range::NR,
        args: [0x20_0000, 512, 0, 0, 0, 0],
        ret: &mut ret,
        longmode: 1,
    }));
    assert_eq!(handle(&mut tdx, e).unwrap(), None);
    assert_eq!(ret, 0);
    assert!(tdx.guest.mmu.is_shared(0x200, 512));
    assert_eq!(*sink.punched.lock().unwrap(), vec![(0x20_0000, 0x20_0000)]);
    let mut gprs = [0u64; 16];
    gprs[system_event::TDX_FATAL_R12] = 0x0000_0000_0000_000D;
    gprs[1] = 0x1000;
    let e = Exit::decode(VcpuExit::SystemEvent(system_event::TDX_FATAL, &gprs));
    assert_eq!(
        handle(&mut tdx, e).unwrap(),
        Some(Stop::TdFatalError { code: 0xD })
    );
    let e = Exit::decode(VcpuExit::SystemEvent(system_event::SEV_TERM, &[0]));
    assert!(handle(&mut tdx, e).is_err());
}

/// What `nacre attest --platform tdx` writes for a quote the QGS made (a real one from
/// tests/vectors/go-tdx-guest stands in) verifies with `nacre verify`: the quote
/// carries its PCK chain, and without collateral the TCB status is left out.
#[test]
fn an_evidence_file_of_a_hardware_quote_verifies() {
    use crate::cli::verify::{self, VerifyArgs};
    use crate::platform::Platform;
    use nacre_verifier::evidence::EvidenceFile;
    use nacre_verifier::Evidence;

    let raw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/go-tdx-guest/tdx_prod_quote_SPR_E4.dat"),
    )
    .unwrap();
    let evidence = Evidence::parse(&raw).unwrap();
    let (mut tdx, _) = platform(64);
    let endorsements = tdx.endorsements(&evidence).unwrap();
    assert!(endorsements.collateral.is_none() && endorsements.vcek.is_none());
    let json = EvidenceFile::to_json(super::NAME, &evidence, &raw, &endorsements);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evidence.json");
    std::fs::write(&file, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let args = VerifyArgs {
        at: Some("2024-01-01T00:00:00Z".into()),
        measurement: Some(
            "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
                .into(),
        ),
        ..VerifyArgs::new(file)
    };
    assert_eq!(verify::run(&args).unwrap(), 0);
}

/// `--cpus` reaches the launch: only a count outside 1 to 16 is refused before the
/// host is probed. (On a host that cannot run `tdx` the probe then says why; on one
/// that can, this test does not launch a guest.)
#[test]
fn any_vcpu_count_from_one_to_sixteen_reaches_the_hosts_checks() {
    use crate::platform::check::{preflight, HostPaths};
    use crate::platform::hardware::probe::SystemProbe;
    use crate::platform::launch::{LaunchConfig, SetupError};
    use crate::platform::Platform;
    let config = |cpus| LaunchConfig {
        cpus,
        ..LaunchConfig::new(64 << 20)
    };
    match <Tdx as Platform>::launch(&image(), &config(0)) {
        Err(SetupError::Image(e)) => assert!(e.contains("1 to 16"), "{e}"),
        other => panic!("{other:?}"),
    }
    let probe = SystemProbe::new(HostPaths::system());
    if preflight(super::NAME, super::check::checks, &probe).is_ok() {
        eprintln!("skipped the rest: this host can run tdx, and a unit test launches no guest");
        return;
    }
    for cpus in [2, 16] {
        match <Tdx as Platform>::launch(&image(), &config(cpus)) {
            Err(SetupError::HostNotReady { platform, .. }) => assert_eq!(platform, "tdx"),
            other => panic!("{cpus} vCPUs: {other:?}"),
        }
    }
}
