//! The SEV-SNP launch against a recording fake of its ioctls: the fake keeps KVM's
//! rules (the split irqchip and INIT2 before any vCPU, LAUNCH_UPDATE only of private,
//! never-updated GFNs of a guest_memfd slot, LAUNCH_FINISH once, last, no more vCPUs
//! than the VM takes), keeps each vCPU's MP state as KVM would (an application
//! processor of a VM whose local APICs are KVM's waits for INIT and SIPI until made
//! runnable), answers with partial progress, `EAGAIN` and `EINTR` when told to, and
//! measures what it is given the way the security processor does (one PAGE_INFO per
//! page, in the order the pages arrive, then, for every vCPU in index order, the VMSA
//! KVM would build from its registers). The digest it ends with must be the one
//! `nacre measure --cpus N` predicts for the image and the number of vCPUs.
//!
//! What this cannot show: that KVM and the firmware do as modelled. Only an SEV-SNP
//! host can (the tests in `tests/tests/hardware.rs` run where `nacre host-check` says
//! it is one).

use super::launch::{self, SnpHost, SnpLaunchOps};
use super::Snp;
use crate::cli::measure::{measure_bytes, MeasurePlatform};
use crate::exits::{handle_exit, Exit, RunError};
use crate::mmu::HypervisorMmu;
use crate::platform::hardware::launch::{LaunchError, VmOps};
use crate::platform::hardware::mmu::testing::RecordingSink;
use crate::platform::hardware::mmu::KvmMmu;
use crate::platform::hardware::HardwareGuest;
use crate::platform::launch::{parameter_page, MP_STATE_RUNNABLE};
use crate::platform::snp_state::{kvm_vmsa, BspState};
use crate::platform::Stop;
use crate::vmm::memory::GuestMemory;
use crate::vmm::uapi::{
    map_gpa_range, run, system_event, CpuidEntry, KvmSevInit, KvmSevSnpLaunchFinish,
    KvmSevSnpLaunchStart, KvmSevSnpLaunchUpdate, RunArea,
};
use kvm_bindings::KVM_MP_STATE_UNINITIALIZED;
use kvm_ioctls::VcpuExit;
use nacre_loader::measure::snp::{LaunchDigest, PageType};
use nacre_loader::{load_image, LoadedImage, PlatformKind};
use nacre_shared_abi::layout::{EMULATED_SNP_C_BIT, PAGE_SIZE_4K};
use nacre_shared_abi::snp::cpuid_page::CpuidPage;
use nacre_shared_abi::snp::msr_protocol::MsrRequest;
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::OnceLock;
use zerocopy::FromBytes;

/// The demo app packaged with the real firmware, as `nacre package` makes it.
fn image_bytes() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let files = crate::cli::package::file_tree("hello", &[]).unwrap();
        crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, false).unwrap()
    })
}

fn image() -> LoadedImage {
    load_image(image_bytes(), PlatformKind::Snp).unwrap()
}

/// What `nacre measure --platform snp --cpus CPUS` prints for the image.
fn nacre_measure(cpus: u32) -> [u8; 48] {
    measure_bytes(
        image_bytes(),
        MeasurePlatform::Kind(PlatformKind::Snp),
        cpus,
    )
    .unwrap()[0]
        .measurement
}

/// One recorded ioctl.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    SplitIrqchip,
    Init2 { features: u64, ghcb_version: u16 },
    Slot { slot: u32, gpa: u64, size: u64 },
    SetPrivate { gpa: u64, size: u64 },
    Start { policy: u64 },
    Update { gfn: u64, pages: u64, page_type: u8 },
    CreateVcpu(u32),
    Runnable(u32),
    Finish,
}

/// A vCPU of the fake, as KVM keeps it.
#[derive(Debug, Clone)]
struct FakeVcpu {
    cpuid: Vec<CpuidEntry>,
    state: BspState,
    /// `KVM_MP_STATE_*`.
    mp_state: u32,
}

/// How the fake answers one LAUNCH_UPDATE.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Do at most this many pages, then return 0.
    Partial(u64),
    /// Do this many pages, then fail with this errno (EAGAIN, EINTR: asked again).
    Errno(u64, i32),
}

/// A fake of KVM's SEV-SNP launch.
#[derive(Debug, Default)]
struct FakeSnp {
    calls: Vec<Call>,
    script: VecDeque<Reply>,
    supported_features: u64,
    /// `(gpa, size, shared host address)` of each slot.
    slots: Vec<(u64, u64, u64)>,
    private: Vec<(u64, u64)>,
    updated: BTreeSet<u64>,
    digest: LaunchDigest,
    features: Option<u64>,
    started: bool,
    /// Whether the local APICs are KVM's (`KVM_CAP_SPLIT_IRQCHIP`).
    split_irqchip: bool,
    /// The VM's `KVM_CAP_MAX_VCPUS`; `None`: KVM's own limit, far above 16.
    vcpu_limit: Option<u32>,
    /// The vCPUs made, in index order.
    vcpus: Vec<FakeVcpu>,
    measurement: Option<[u8; 48]>,
    /// The C-bit position of each CPUID page added (the security processor refuses a
    /// page without a usable one, as it refuses one the CPU contradicts).
    cpuid_c_bits: Vec<u32>,
}

fn errno(what: &'static str, n: i32) -> LaunchError {
    LaunchError::Kvm {
        what,
        source: io::Error::from_raw_os_error(n),
        status: Some(0),
    }
}

impl FakeSnp {
    fn private(&self, gfn: u64) -> bool {
        let gpa = gfn * PAGE_SIZE_4K;
        self.private.iter().any(|&(a, n)| (a..a + n).contains(&gpa))
    }

    /// The host address of `gpa`'s source page, if `uaddr` lies in a slot's shared
    /// side (the only memory the fake reads).
    fn source(&self, uaddr: u64) -> Option<&[u8; 4096]> {
        let inside = self
            .slots
            .iter()
            .any(|&(_, size, shared)| uaddr >= shared && uaddr + PAGE_SIZE_4K <= shared + size);
        // SAFETY: `uaddr` is a page inside the shared mapping of a slot the launch
        // under test gave, which the test keeps mapped and readable.
        inside.then(|| unsafe { &*(uaddr as *const [u8; 4096]) })
    }
}

impl VmOps for FakeSnp {
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
        Ok(self.vcpu_limit.unwrap_or(1024))
    }

    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>, LaunchError> {
        Ok(vec![CpuidEntry {
            function: 0x8000_0000,
            eax: 0x8000_0008,
            ..Default::default()
        }])
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

impl SnpLaunchOps for FakeSnp {
    fn supported_vmsa_features(&mut self) -> Result<u64, LaunchError> {
        Ok(self.supported_features)
    }

    fn init2(&mut self, init: &mut KvmSevInit) -> Result<(), LaunchError> {
        // KVM: before any vCPU, once, without SNP_ACTIVE, within what it supports.
        if !self.vcpus.is_empty()
            || self.features.is_some()
            || init.vmsa_features & 1 != 0
            || init.vmsa_features & !self.supported_features != 0
        {
            return Err(errno("KVM_SEV_INIT2", libc::EINVAL));
        }
        self.calls.push(Call::Init2 {
            features: init.vmsa_features,
            ghcb_version: init.ghcb_version,
        });
        self.features = Some(init.vmsa_features);
        Ok(())
    }

    fn launch_start(&mut self, start: &mut KvmSevSnpLaunchStart) -> Result<(), LaunchError> {
        // Policy bit 17 must be set (SNP firmware ABI, SNP_LAUNCH_START).
        if self.features.is_none() || self.started || start.policy & (1 << 17) == 0 {
            return Err(errno("KVM_SEV_SNP_LAUNCH_START", libc::EINVAL));
        }
        self.calls.push(Call::Start {
            policy: start.policy,
        });
        self.started = true;
        Ok(())
    }

    fn launch_update(&mut self, u: &mut KvmSevSnpLaunchUpdate) -> Result<(), LaunchError> {
        let what = "KVM_SEV_SNP_LAUNCH_UPDATE";
        if !self.started
            || self.measurement.is_some()
            || u.len == 0
            || !u.len.is_multiple_of(PAGE_SIZE_4K)
        {
            return Err(errno(what, libc::EINVAL));
        }
        let page_type = PageType::try_from(u.type_).map_err(|_| errno(what, libc::EINVAL))?;
        if page_type == PageType::Vmsa {
            return Err(errno(what, libc::EINVAL));
        }
        let pages = u.len / PAGE_SIZE_4K;
        self.calls.push(Call::Update {
            gfn: u.gfn_start,
            pages,
            page_type: u.type_,
        });
        let reply = self.script.pop_front().unwrap_or(Reply::Partial(u64::MAX));
        let (todo, result) = match reply {
            Reply::Partial(n) => (n.min(pages), Ok(())),
            Reply::Errno(n, e) => (n.min(pages), Err(errno(what, e))),
        };
        for _ in 0..todo {
            let gfn = u.gfn_start;
            if !self.private(gfn) || !self.updated.insert(gfn) {
                return Err(errno(what, libc::EINVAL));
            }
            let contents = *self
                .source(u.uaddr)
                .ok_or_else(|| errno(what, libc::EFAULT))?;
            if page_type == PageType::Cpuid {
                let page = CpuidPage::read_from_bytes(&contents[..]).unwrap();
                let c_bit = page.c_bit().map_err(|_| errno(what, libc::EIO))?;
                self.cpuid_c_bits.push(c_bit);
            }
            self.digest
                .add_page(gfn * PAGE_SIZE_4K, page_type, &contents);
            u.gfn_start += 1;
            u.uaddr += PAGE_SIZE_4K;
            u.len -= PAGE_SIZE_4K;
        }
        result
    }

    fn create_vcpu(
        &mut self,
        index: u32,
        cpuid: &[CpuidEntry],
        state: &BspState,
    ) -> Result<(), LaunchError> {
        // Before LAUNCH_FINISH, each id once (nacre makes them in order), no more than
        // the VM takes.
        if self.features.is_none()
            || self.measurement.is_some()
            || index as usize != self.vcpus.len()
            || index >= self.vcpu_limit.unwrap_or(1024)
        {
            return Err(errno("KVM_CREATE_VCPU", libc::EINVAL));
        }
        self.calls.push(Call::CreateVcpu(index));
        // KVM makes every vCPU but the boot processor wait for INIT and SIPI when the
        // local APICs are its own (x86.c, kvm_arch_vcpu_create).
        let mp_state = if self.split_irqchip && index != 0 {
            KVM_MP_STATE_UNINITIALIZED
        } else {
            MP_STATE_RUNNABLE
        };
        self.vcpus.push(FakeVcpu {
            cpuid: cpuid.to_vec(),
            state: *state,
            mp_state,
        });
        Ok(())
    }

    fn make_runnable(&mut self, index: u32) -> Result<(), LaunchError> {
        let Some(vcpu) = self.vcpus.get_mut(index as usize) else {
            return Err(errno("KVM_SET_MP_STATE", libc::EBADF));
        };
        self.calls.push(Call::Runnable(index));
        vcpu.mp_state = MP_STATE_RUNNABLE;
        Ok(())
    }

    fn launch_finish(&mut self, _finish: &mut KvmSevSnpLaunchFinish) -> Result<(), LaunchError> {
        let (false, Some(features), None) =
            (self.vcpus.is_empty(), self.features, self.measurement)
        else {
            return Err(errno("KVM_SEV_SNP_LAUNCH_FINISH", libc::EINVAL));
        };
        self.calls.push(Call::Finish);
        // KVM measures every vCPU's VMSA in index order as it builds it from the
        // registers, on a host whose CR4 has MCE (snp_state.rs).
        for vcpu in &self.vcpus {
            let mut state = vcpu.state;
            state.vmsa_features = features;
            let vmsa = kvm_vmsa(&state, true);
            let page: &[u8; 4096] = zerocopy::transmute_ref!(&*vmsa);
            self.digest.add_vmsa(page);
        }
        self.measurement = Some(self.digest.finish());
        Ok(())
    }
}

fn host() -> SnpHost {
    SnpHost {
        c_bit: EMULATED_SNP_C_BIT as u8,
        sev_leaf: [0x1B, EMULATED_SNP_C_BIT, 0, 0],
    }
}

fn launch(fake: &mut FakeSnp, image: &LoadedImage) -> Result<GuestMemory, LaunchError> {
    launch_cpus(fake, image, 1)
}

fn launch_cpus(
    fake: &mut FakeSnp,
    image: &LoadedImage,
    cpus: u32,
) -> Result<GuestMemory, LaunchError> {
    let memory = image.min_memory.max(64 << 20);
    let mem = GuestMemory::new(memory).unwrap();
    let param = parameter_page(memory, None, cpus);
    launch::run(fake, &mem, image, &param, host(), cpus)?;
    Ok(mem)
}

#[test]
fn the_recorded_launch_measures_what_nacre_measure_predicts() {
    let image = image();
    let mut fake = FakeSnp::default();
    launch(&mut fake, &image).unwrap();
    assert_eq!(fake.measurement, Some(nacre_measure(1)));
    assert_eq!(fake.measurement, image.launch_digest);
}

/// With more vCPUs the sequence makes every one, in order, in the image's state, and
/// KVM's digest (a VMSA per vCPU) is `nacre measure --cpus N`'s, not the one-vCPU one.
/// (The `snp` platform refuses more than one vCPU before it gets here, so far.)
#[test]
fn a_launch_of_more_vcpus_measures_what_nacre_measure_predicts_for_them() {
    let image = image();
    for cpus in [2, 3] {
        let mut fake = FakeSnp::default();
        launch_cpus(&mut fake, &image, cpus).unwrap();
        assert_eq!(fake.measurement, Some(nacre_measure(cpus)), "{cpus} vCPUs");
        assert_eq!(
            fake.measurement,
            Some(image.measurement_for_cpus(cpus)),
            "{cpus} vCPUs"
        );
        assert_ne!(fake.measurement, image.launch_digest, "{cpus} vCPUs");
        let made: Vec<Call> = fake
            .calls
            .iter()
            .filter(|c| matches!(c, Call::CreateVcpu(_)))
            .cloned()
            .collect();
        assert_eq!(made, (0..cpus).map(Call::CreateVcpu).collect::<Vec<_>>());
        // Each in the image's state: KVM would build the same VMSA from each.
        let vmsa =
            |state: &BspState| zerocopy::IntoBytes::as_bytes(&*kvm_vmsa(state, true)).to_vec();
        assert!(fake
            .vcpus
            .iter()
            .all(|v| vmsa(&v.state) == vmsa(&fake.vcpus[0].state)));
    }
    let mut fake = FakeSnp::default();
    let err = launch_cpus(&mut fake, &image, 0).unwrap_err();
    assert!(err.to_string().contains("1 to 16"), "{err}");
    assert!(fake.calls.is_empty());
}

/// The guest's local APICs are KVM's (its timer and inter-processor interrupts go
/// through the GHCB to KVM), which KVM takes only before the first vCPU. KVM then makes
/// every application processor wait for INIT and SIPI; the launch makes each runnable
/// before LAUNCH_FINISH, so that every vCPU runs from its measured VMSA.
#[test]
fn the_local_apics_are_kvms_and_every_vcpu_runs_from_its_vmsa() {
    let image = image();
    for cpus in [1, 2, 4, 16] {
        let mut fake = FakeSnp::default();
        launch_cpus(&mut fake, &image, cpus).unwrap();
        assert!(fake.split_irqchip, "{cpus} vCPUs");
        let at = |want: &Call| fake.calls.iter().position(|c| c == want);
        let irqchip = at(&Call::SplitIrqchip).unwrap();
        assert!(
            irqchip < at(&Call::CreateVcpu(0)).unwrap(),
            "{:?}",
            fake.calls
        );
        assert!(
            irqchip
                < at(&Call::Init2 {
                    features: 0,
                    ghcb_version: 2
                })
                .unwrap(),
            "{:?}",
            fake.calls
        );
        // Every application processor made runnable after it is made and before
        // LAUNCH_FINISH; the boot processor is runnable from the start.
        let finish = at(&Call::Finish).unwrap();
        assert_eq!(at(&Call::Runnable(0)), None);
        for index in 1..cpus {
            let runnable = at(&Call::Runnable(index)).unwrap();
            assert!(at(&Call::CreateVcpu(index)).unwrap() < runnable && runnable < finish);
        }
        let states: Vec<u32> = fake.vcpus.iter().map(|v| v.mp_state).collect();
        assert_eq!(states, vec![MP_STATE_RUNNABLE; cpus as usize]);
        assert_eq!(fake.measurement, Some(image.measurement_for_cpus(cpus)));
        // And the fake holds KVM's rule: no irqchip once vCPUs exist.
        let err = fake.split_irqchip().unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST));
    }
}

/// More vCPUs than the VM takes (`KVM_CAP_MAX_VCPUS`) are refused with a message before
/// the launch configures anything.
#[test]
fn more_vcpus_than_the_vm_takes_are_refused_first() {
    let image = image();
    let mut fake = FakeSnp {
        vcpu_limit: Some(2),
        ..FakeSnp::default()
    };
    let err = launch_cpus(&mut fake, &image, 3).unwrap_err().to_string();
    assert!(
        err.contains("at most 2") && err.contains("--cpus 2"),
        "{err}"
    );
    assert!(fake.calls.is_empty(), "{:?}", fake.calls);
    let mut fake = FakeSnp {
        vcpu_limit: Some(2),
        ..FakeSnp::default()
    };
    launch_cpus(&mut fake, &image, 2).unwrap();
    assert_eq!(fake.vcpus.len(), 2);
}

#[test]
fn the_ioctls_come_in_kvms_order() {
    let image = image();
    let mut fake = FakeSnp::default();
    let mem = launch(&mut fake, &image).unwrap();
    let size = mem.size();
    let calls = &fake.calls;
    assert_eq!(
        calls[..5],
        [
            Call::SplitIrqchip,
            Call::Init2 {
                features: 0,
                ghcb_version: 2
            },
            Call::Slot {
                slot: 0,
                gpa: 0,
                size
            },
            Call::SetPrivate { gpa: 0, size },
            Call::Start {
                policy: image.guest_policy
            },
        ]
    );
    assert_eq!(
        calls[calls.len() - 2..],
        [Call::CreateVcpu(0), Call::Finish]
    );
    // Between them, updates only; the parameter page last, UNMEASURED.
    let updates = &calls[5..calls.len() - 2];
    assert!(updates.iter().all(|c| matches!(c, Call::Update { .. })));
    assert_eq!(
        updates.last(),
        Some(&Call::Update {
            gfn: image.param_gpa / PAGE_SIZE_4K,
            pages: 1,
            page_type: PageType::Unmeasured as u8
        })
    );
    // Every launch page and the parameter page, each exactly once.
    assert_eq!(fake.updated.len(), image.pages.len() + 1);
    // Runs of pages go in one call.
    assert!(updates.len() < image.pages.len());
    // The staged copies are gone from the shared side.
    let mut b = [0u8; 64];
    mem.read(image.pages[0].gpa, &mut b).unwrap();
    assert_eq!(b, [0; 64]);
    // The vCPU's CPUID carries the C-bit leaf.
    let FakeVcpu { cpuid, state, .. } = &fake.vcpus[0];
    assert!(cpuid
        .iter()
        .any(|e| e.function == 0x8000_001F && e.ebx == EMULATED_SNP_C_BIT));
    assert_eq!(state.efer & (1 << 12), 0, "no EFER.SVME");
}

#[test]
fn partial_progress_eagain_and_eintr_are_resumed_to_the_same_digest() {
    let image = image();
    let mut fake = FakeSnp {
        // The boot information, secrets and CPUID pages whole (one page each), then
        // the page tables and the firmware in pieces.
        script: VecDeque::from([
            Reply::Partial(u64::MAX),
            Reply::Partial(u64::MAX),
            Reply::Partial(u64::MAX),
            Reply::Partial(1),
            Reply::Errno(0, libc::EAGAIN),
            Reply::Errno(2, libc::EINTR),
            Reply::Errno(3, libc::EAGAIN),
            Reply::Partial(0),
            Reply::Partial(5),
            Reply::Errno(1, libc::EINTR),
        ]),
        ..FakeSnp::default()
    };
    launch(&mut fake, &image).unwrap();
    assert!(fake.script.is_empty());
    assert_eq!(fake.measurement, Some(nacre_measure(1)));
    // Resumed calls name the remainder of the call before: the same run, moved on by
    // what was done.
    let updates: Vec<(u64, u64)> = fake
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Update { gfn, pages, .. } => Some((*gfn, *pages)),
            _ => None,
        })
        .collect();
    let resumed = updates
        .windows(2)
        .filter(|w| w[1].0 >= w[0].0 && w[1].1 <= w[0].1 && w[1].0 - w[0].0 == w[0].1 - w[1].1)
        .count();
    assert!(resumed >= 4, "{updates:x?}");
}

#[test]
fn a_failed_update_stops_the_launch_with_kvms_error() {
    let image = image();
    let mut fake = FakeSnp {
        script: VecDeque::from([Reply::Partial(1), Reply::Errno(0, libc::EIO)]),
        ..FakeSnp::default()
    };
    let err = launch(&mut fake, &image).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EIO));
    assert!(fake.measurement.is_none());
    assert!(!fake.calls.contains(&Call::Finish));
}

/// One image, one measurement, whatever C-bit the host reports: the host puts its
/// position in the CPUID page (which the firmware reads it from), nowhere else.
#[test]
fn any_c_bit_goes_into_the_cpuid_page_and_the_measurement_stays() {
    let image = image();
    for c_bit in [51u8, 47, 43] {
        let mut fake = FakeSnp::default();
        let mem = GuestMemory::new(64 << 20).unwrap();
        let param = parameter_page(64 << 20, None, 1);
        let host = SnpHost {
            c_bit,
            sev_leaf: [0x1B, 0x1_6F00 | u32::from(c_bit), 0, 0],
        };
        launch::run(&mut fake, &mem, &image, &param, host, 1).unwrap();
        assert_eq!(fake.cpuid_c_bits, [u32::from(c_bit)]);
        assert_eq!(fake.measurement, image.launch_digest, "C-bit {c_bit}");
        let cpuid = &fake.vcpus[0].cpuid;
        assert!(cpuid
            .iter()
            .any(|e| e.function == 0x8000_001F && e.ebx & 0x3F == u32::from(c_bit)));
    }
}

#[test]
fn features_the_host_lacks_or_a_vmsa_kvm_cannot_build_are_refused_before_any_ioctl() {
    let image = image();
    let mut fake = FakeSnp::default();
    let mem = GuestMemory::new(64 << 20).unwrap();
    let param = parameter_page(64 << 20, None, 1);
    let mut old_cr4 = image.clone();
    if let Some(v) = old_cr4.vmsa.as_mut() {
        v.cr4 = 0x620;
    }
    let err = launch::run(&mut fake, &mem, &old_cr4, &param, host(), 1).unwrap_err();
    assert!(
        err.to_string().contains("KVM would measure another VMSA"),
        "{err}"
    );
    assert!(fake.calls.is_empty());
    let mut with_features = image.clone();
    if let Some(v) = with_features.vmsa.as_mut() {
        v.sev_features = igvm::snp_defs::SevFeatures::from_bits(1 | 1 << 5);
    }
    let err = launch::run(&mut fake, &mem, &with_features, &param, host(), 1).unwrap_err();
    assert!(err.to_string().contains("KVM supports 0x0"), "{err}");
    assert!(fake.calls.is_empty());
}

// ----------------------------------------------------------------------------------
// Exits of a running SNP guest, from synthetic kvm_run contents.

fn platform(pages: u64) -> (Snp, RecordingSink) {
    let sink = RecordingSink::default();
    let mem = GuestMemory::new(pages * PAGE_SIZE_4K).unwrap();
    let guest = HardwareGuest::new(mem, KvmMmu::new(pages, Box::new(sink.clone())));
    let snp = Snp {
        guest,
        c_bit: 51,
        certs: None,
    };
    (snp, sink)
}

fn exit(snp: &mut Snp, e: Exit<'_>) -> Result<Option<Stop>, RunError> {
    handle_exit(snp, &mut crate::vmm::vcpu::Busy::new(0), e)
}

/// A `kvm_run` of the kernel's size holding a hypercall exit, decoded the way
/// kvm-ioctls reads it (`VcpuFd::run`: `hypercall.nr`, `args`, `&mut ret`).
#[test]
fn a_page_state_change_through_map_gpa_range_converts_and_answers_zero() {
    let (mut snp, sink) = platform(2048);
    let mut raw = vec![0u8; run::SIZE];
    {
        let mut area = RunArea::new(&mut raw).unwrap();
        area.set_u32(run::EXIT_REASON, crate::vmm::uapi::exit::HYPERCALL);
        area.set_u64(run::HYPERCALL_NR, map_gpa_range::NR);
        area.set_u64(run::HYPERCALL_ARGS, 0x40_0000);
        area.set_u64(run::HYPERCALL_ARGS + 8, 512);
        area.set_u64(run::HYPERCALL_ARGS + 16, map_gpa_range::PAGE_SZ_2M);
        area.set_u64(run::HYPERCALL_RET, 0xFFFF);
    }
    let (nr, args, mut ret) = {
        let area = RunArea::new(&mut raw).unwrap();
        let args = [0, 1, 2, 3, 4, 5].map(|i| area.u64(run::HYPERCALL_ARGS + 8 * i));
        (
            area.u64(run::HYPERCALL_NR),
            args,
            area.u64(run::HYPERCALL_RET),
        )
    };
    let stop = exit(
        &mut snp,
        Exit::decode(VcpuExit::Hypercall(kvm_ioctls::HypercallExit {
            nr,
            args,
            ret: &mut ret,
            longmode: 1,
        })),
    )
    .unwrap();
    assert_eq!((stop, ret), (None, 0));
    assert!(snp.guest.mmu.is_shared(0x400, 512));
    assert_eq!(
        *sink.set.lock().unwrap(),
        vec![(0x40_0000, 0x20_0000, false)]
    );
    assert_eq!(snp.guest.run.exits.get("hypercall"), Some(&1));
    // Another hypercall number is not SNP's.
    let mut ret = 0;
    let other = Exit::Hypercall {
        nr: 1,
        args: [0; 6],
        ret: &mut ret,
    };
    assert!(exit(&mut snp, other).is_err());
}

#[test]
fn memory_faults_convert_the_page_or_stop_the_guest_when_strict() {
    let (mut snp, _) = platform(64);
    let fault = |flags| Exit::MemoryFault {
        gpa: 0x5000,
        size: 0x1000,
        flags,
    };
    assert_eq!(exit(&mut snp, fault(0)).unwrap(), None);
    assert!(snp.guest.mmu.is_shared(5, 1));
    snp.guest.strict_memory = true;
    assert!(matches!(
        exit(
            &mut snp,
            fault(crate::vmm::uapi::KVM_MEMORY_EXIT_FLAG_PRIVATE)
        )
        .unwrap(),
        Some(Stop::MemoryViolation { gpa: 0x5000, .. })
    ));
}

#[test]
fn a_termination_request_stops_the_guest_with_its_reason() {
    let (mut snp, _) = platform(64);
    let msr = MsrRequest::Terminate { set: 3, code: 6 }.encode();
    let stop = exit(
        &mut snp,
        Exit::decode(VcpuExit::SystemEvent(system_event::SEV_TERM, &[msr])),
    )
    .unwrap();
    assert_eq!(stop, Some(Stop::GuestTerminated { set: 3, code: 6 }));
    // Through the GHCB page KVM passes the page's GPA: no reason to report.
    let stop = exit(
        &mut snp,
        Exit::decode(VcpuExit::SystemEvent(system_event::SEV_TERM, &[0x7000])),
    )
    .unwrap();
    assert!(matches!(stop, Some(Stop::ProtocolViolation(_))));
    assert!(exit(
        &mut snp,
        Exit::decode(VcpuExit::SystemEvent(system_event::SHUTDOWN, &[]))
    )
    .is_err());
}

#[test]
fn the_hostcall_doorbell_is_plain_port_io_and_other_exits_are_refused() {
    let (mut snp, _) = platform(2048);
    let area = 0x60_0000;
    snp.guest
        .mmu
        .convert(
            &snp.guest.mem,
            area / PAGE_SIZE_4K,
            512,
            crate::mmu::attributes::Kind::Shared,
        )
        .unwrap();
    crate::exits::testing::put_hostcall(
        &snp.guest.mem,
        area,
        &crate::exits::testing::exit_request(3),
    );
    let page = ((area / PAGE_SIZE_4K) as u32).to_le_bytes();
    let stop = exit(
        &mut snp,
        Exit::decode(VcpuExit::IoOut(
            nacre_shared_abi::hostcall::HOSTCALL_PORT,
            &page,
        )),
    )
    .unwrap();
    assert_eq!(stop, Some(Stop::AppExit(3)));
    let mut raw = vec![0u8; run::SIZE];
    let certs = crate::exits::hardware::decode_run(
        crate::vmm::uapi::exit::SNP_REQ_CERTS,
        RunArea::new(&mut raw).unwrap(),
    );
    assert!(matches!(exit(&mut snp, certs), Err(RunError::Guest(_))));
    let mut raw = vec![0u8; run::SIZE];
    let tdx = crate::exits::hardware::decode_run(
        crate::vmm::uapi::exit::TDX,
        RunArea::new(&mut raw).unwrap(),
    );
    assert!(matches!(exit(&mut snp, tdx), Err(RunError::Guest(_))));
}

// ----------------------------------------------------------------------------------
// Attestation: KVM asks the security processor for the report; nacre adds the
// certificates. A real Milan report (tests/vectors/virtee-sev) stands in for one.

/// What `nacre attest --platform snp --snp-certs DIR` writes for a report, with the
/// VCEK, ASK and ARK of DIR, verifies with `nacre verify` against AMD's roots.
#[test]
fn an_evidence_file_of_a_hardware_report_and_the_hosts_certificates_verifies() {
    use crate::cli::verify::{self, VerifyArgs};
    use crate::platform::Platform;
    use nacre_verifier::evidence::EvidenceFile;
    use nacre_verifier::Evidence;

    let vectors =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/virtee-sev");
    let hex_text = std::fs::read(vectors.join("report_milan.hex")).unwrap();
    let raw = nacre_verifier::decode_hex(hex_text.trim_ascii()).unwrap();
    let evidence = Evidence::parse(&raw).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("vcek_milan.der", "vcek.der"),
        ("milan_ask.pem", "ask.pem"),
        ("milan_ark.pem", "ark.pem"),
    ] {
        std::fs::copy(vectors.join(from), dir.path().join(to)).unwrap();
    }
    let (mut snp, _) = platform(64);
    snp.certs = Some(dir.path().to_path_buf());
    let endorsements = snp.endorsements(&evidence).unwrap();
    let json = EvidenceFile::to_json(super::NAME, &evidence, &raw, &endorsements);
    let file = dir.path().join("evidence.json");
    std::fs::write(&file, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let args = VerifyArgs {
        at: Some("2024-01-01T00:00:00Z".into()),
        measurement: Some(
            "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
                .into(),
        ),
        ..VerifyArgs::new(file)
    };
    assert_eq!(verify::run(&args).unwrap(), 0);
    // Without a VCEK there is no evidence file to write.
    let empty = tempfile::tempdir().unwrap();
    snp.certs = Some(empty.path().to_path_buf());
    assert!(snp.endorsements(&evidence).unwrap_err().contains("vcek"));
}

/// `--cpus` reaches the launch: only a count outside 1 to 16 is refused before the
/// host is probed. (On a host that cannot run `snp` the probe then says why; on one
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
    match <Snp as Platform>::launch(&image(), &config(17)) {
        Err(SetupError::Image(e)) => assert!(e.contains("1 to 16"), "{e}"),
        other => panic!("{other:?}"),
    }
    let probe = SystemProbe::new(HostPaths::system());
    if preflight(super::NAME, super::check::checks, &probe).is_ok() {
        eprintln!("skipped the rest: this host can run snp, and a unit test launches no guest");
        return;
    }
    for cpus in [2, 16] {
        match <Snp as Platform>::launch(&image(), &config(cpus)) {
            Err(SetupError::HostNotReady { platform, .. }) => assert_eq!(platform, "snp"),
            other => panic!("{cpus} vCPUs: {other:?}"),
        }
    }
}
