//! What every platform's launch shares: the launch settings, the KVM VM with guest
//! RAM in two memory slots, host pages mapped outside RAM, the host parameter page,
//! and the test hooks that make the host misbehave on purpose.

use crate::platform::hostile::Hostile;
use crate::platform::Registration;
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::{
    set_host_cpus, HostRequest, MemoryMapEntry, HOST_REQUEST_ATTEST, HOST_REQUEST_OFFSET, MAX_CPUS,
    MEMORY_MAP_TYPE_MEMORY,
};
use nacre_shared_abi::layout::{
    align_down, align_up, GUEST_MEMORY_ALIGN, MAX_GUEST_MEMORY, MIN_GUEST_MEMORY, PAGE_SIZE_2M,
    PAGE_SIZE_4K,
};
use zerocopy::IntoBytes;

/// Errors while building the VM.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// /dev/kvm could not be used.
    #[error("cannot use /dev/kvm (is KVM available and are you allowed to open it?)")]
    Kvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM refused {what}")]
    Ioctl {
        /// What.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Guest memory of a size the platform or the host cannot have.
    #[error(transparent)]
    MemorySize(#[from] MemorySizeError),
    /// The image does not fit the platform.
    #[error("{0}")]
    Image(String),
    /// The host lacks what a hardware platform needs (the first check of `nacre
    /// host-check` that failed).
    #[error(
        "{platform} cannot run on this host: {reason} (`nacre host-check --platform \
         {platform}` lists what it needs)"
    )]
    HostNotReady {
        /// The platform.
        platform: &'static str,
        /// The failed check and what it found.
        reason: String,
    },
    /// A hardware platform's launch failed.
    #[error(
        "the {platform} launch failed (`nacre host-check --platform {platform}` checks this host)"
    )]
    Launch {
        /// The platform.
        platform: &'static str,
        /// What failed.
        #[source]
        source: crate::platform::hardware::launch::LaunchError,
    },
}

/// Why guest memory of a size cannot be had (`--memory`): the platform cannot boot it
/// or this host cannot back it. Checked before a VM is made.
#[derive(Debug, thiserror::Error)]
pub enum MemorySizeError {
    /// Not a multiple of [`GUEST_MEMORY_ALIGN`].
    #[error("--memory {}: guest memory must be a multiple of 2 MiB", size_text(*.memory))]
    NotAligned {
        /// The size asked for.
        memory: u64,
    },
    /// Less than [`MIN_GUEST_MEMORY`] or than the image needs.
    #[error(
        "--memory {}: {what} needs at least {} of guest memory",
        size_text(*.memory),
        size_text(*.min)
    )]
    TooSmall {
        /// The size asked for.
        memory: u64,
        /// "a guest" or "this image".
        what: &'static str,
        /// The least it needs.
        min: u64,
    },
    /// More than the platform boots.
    #[error(
        "--memory {}: {platform} boots at most {} of guest memory ({why})",
        size_text(*.memory),
        size_text(*.max)
    )]
    Platform {
        /// The size asked for.
        memory: u64,
        /// The platform.
        platform: &'static str,
        /// Its limit ([`Registration::max_memory`]).
        max: u64,
        /// Why ([`Registration::max_memory_why`]).
        why: &'static str,
    },
    /// More than this host can back.
    #[error(
        "--memory {}: this host cannot back that much guest memory: {reason}",
        size_text(*.memory)
    )]
    Host {
        /// The size asked for.
        memory: u64,
        /// What the host has and how to get more.
        reason: String,
    },
}

/// Why the SEV-SNP platforms boot at most [`MAX_GUEST_MEMORY`].
pub const SNP_MEMORY_LIMIT: &str =
    "the firmware maps guest memory with page tables it sets aside at boot, enough for 64 GiB";
/// Why the TDX platforms boot at most
/// [`nacre_shared_abi::layout::TDX_MAX_GUEST_MEMORY`].
pub const TDX_MEMORY_LIMIT: &str = "a TD's memory ends below the 2 MiB region of the reset \
     vector at 4 GiB; memory above 4 GiB is not supported yet";

const _: () = assert!(MAX_GUEST_MEMORY == 64 << 30, "SNP_MEMORY_LIMIT names it");

/// A memory size for people: "74 GiB", "4094 MiB" when exact, else "23.5 GiB", and
/// "512 KiB", "100 bytes" below a MiB.
pub fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    for (unit, shift) in [("GiB", 30), ("MiB", 20)] {
        if bytes >= 1 << shift {
            // Display only: f64's precision is plenty.
            return format!("{:.1} {unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        return format!("{} KiB", bytes >> 10);
    }
    format!("{bytes} bytes")
}

/// Check `memory` bytes of guest RAM for `platform` and an image that needs
/// `image_min` (the launch refuses the image otherwise), then against what `host` can
/// back (`None`: the host's limits are unknown and not checked).
pub fn check_memory(
    platform: &Registration,
    memory: u64,
    image_min: u64,
    host: Option<&HostMemory>,
) -> Result<(), MemorySizeError> {
    if !memory.is_multiple_of(GUEST_MEMORY_ALIGN) {
        return Err(MemorySizeError::NotAligned { memory });
    }
    if memory < MIN_GUEST_MEMORY {
        return Err(MemorySizeError::TooSmall {
            memory,
            what: "a guest",
            min: MIN_GUEST_MEMORY,
        });
    }
    if memory > platform.max_memory {
        return Err(MemorySizeError::Platform {
            memory,
            platform: platform.name,
            max: platform.max_memory,
            why: platform.max_memory_why,
        });
    }
    if memory < image_min {
        return Err(MemorySizeError::TooSmall {
            memory,
            what: "this image",
            min: image_min,
        });
    }
    match host.map(|h| h.refusal(memory)) {
        Some(Some(reason)) => Err(MemorySizeError::Host { memory, reason }),
        _ => Ok(()),
    }
}

/// The kernel's overcommit policy (`vm.overcommit_memory`, Linux
/// `Documentation/mm/overcommit-accounting.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overcommit {
    /// 0: an allocation larger than RAM and swap together is refused, smaller ones
    /// are promised.
    Heuristic,
    /// 1: everything is promised.
    Always,
    /// 2: nothing is promised beyond the commit limit; `available` bytes of it are
    /// left (`CommitLimit - Committed_AS`).
    Never {
        /// Bytes left to commit.
        available: u64,
    },
}

/// What this host can give a guest's RAM. The guest's RAM is memory the host
/// promises: the guest may touch every page of it, and a page it touches must then be
/// backed (the guest's memory is demand-paged, so untouched pages cost nothing). nacre
/// refuses a size the kernel itself would refuse to promise under its overcommit
/// policy, and one that does not fit the address space nacre may map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    /// Physical memory (`MemTotal`).
    pub ram: u64,
    /// Swap (`SwapTotal`).
    pub swap: u64,
    /// The overcommit policy.
    pub overcommit: Overcommit,
    /// The address-space limit (`ulimit -v`, RLIMIT_AS), `None` when unlimited.
    pub address_space: Option<u64>,
}

/// nacre maps guest RAM twice (its private and shared views, docs/design.md).
const ADDRESS_SPACE_PER_GUEST_BYTE: u64 = 2;

impl HostMemory {
    /// This host's, from `/proc/meminfo`, `/proc/sys/vm/overcommit_memory` and
    /// RLIMIT_AS; `None` when they cannot be read.
    pub fn probe() -> Option<Self> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").ok()?;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `struct rlimit` to the pointer, valid for the call.
        let r = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) };
        let address_space =
            (r == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur);
        Self::parse(&meminfo, &mode, address_space)
    }

    /// From the text of `/proc/meminfo` and `/proc/sys/vm/overcommit_memory`.
    pub fn parse(meminfo: &str, overcommit: &str, address_space: Option<u64>) -> Option<Self> {
        let field = |name: &str| -> Option<u64> {
            let line = meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
            let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
            kib.checked_mul(1024)
        };
        let overcommit = match overcommit.trim() {
            "0" => Overcommit::Heuristic,
            "1" => Overcommit::Always,
            "2" => Overcommit::Never {
                available: field("CommitLimit")?.saturating_sub(field("Committed_AS")?),
            },
            _ => return None,
        };
        Some(Self {
            ram: field("MemTotal")?,
            swap: field("SwapTotal").unwrap_or(0),
            overcommit,
            address_space,
        })
    }

    /// Why this host cannot back `memory` bytes of guest RAM, or `None` if it can.
    pub fn refusal(&self, memory: u64) -> Option<String> {
        let largest = |bytes: u64| size_text(align_down(bytes, GUEST_MEMORY_ALIGN));
        if let Some(limit) = self.address_space {
            let needed = memory.saturating_mul(ADDRESS_SPACE_PER_GUEST_BYTE);
            if needed >= limit {
                return Some(format!(
                    "nacre maps guest memory twice, {} of address space, and its \
                     address-space limit (ulimit -v) is {}",
                    size_text(needed),
                    size_text(limit)
                ));
            }
        }
        match self.overcommit {
            Overcommit::Always => None,
            Overcommit::Heuristic => {
                let total = self.ram.saturating_add(self.swap);
                let swap = if self.swap == 0 {
                    "no swap".to_owned()
                } else {
                    format!("{} of swap", size_text(self.swap))
                };
                (memory > total).then(|| {
                    format!(
                        "it has {} of RAM and {swap}, and the kernel promises no more than \
                         that (vm.overcommit_memory=0); give at most {}, or let the kernel \
                         overcommit (vm.overcommit_memory=1)",
                        size_text(self.ram),
                        largest(total)
                    )
                })
            }
            Overcommit::Never { available } => (memory > available).then(|| {
                format!(
                    "the kernel's strict overcommit accounting (vm.overcommit_memory=2) \
                     leaves {} to promise (CommitLimit - Committed_AS in /proc/meminfo); \
                     give at most {}",
                    size_text(available),
                    largest(available)
                )
            }),
        }
    }
}

/// A `map_err` for a failed KVM ioctl.
pub fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SetupError {
    move |source| SetupError::Ioctl { what, source }
}

/// How to launch: what the host chose, not what the image says.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs (`--cpus`): 1 to [`MAX_CPUS`], all made at launch and reported in the
    /// parameter page.
    pub cpus: u32,
    /// The host's request of this boot (`nacre attest`), in the parameter page.
    pub request: Option<HostRequest>,
    /// `--strict-memory`.
    pub strict_memory: bool,
    /// Where the platform finds the endorsements of its evidence when it does not make
    /// them itself (`nacre attest --snp-certs`); `None`: its default place.
    pub endorsements: Option<std::path::PathBuf>,
    /// The guest's network: what it may reach and the ports published on the host.
    pub net: crate::platform::net::NetConfig,
}

impl LaunchConfig {
    /// A launch with `memory` bytes of RAM and everything else as `nacre run` has it
    /// by default: one vCPU, no request, conversions allowed, endorsements from the
    /// platform's default place, a network that reaches nothing.
    pub fn new(memory: u64) -> Self {
        Self {
            memory,
            cpus: 1,
            request: None,
            strict_memory: false,
            endorsements: None,
            net: crate::platform::net::NetConfig::default(),
        }
    }

    /// Whether the host asked this boot for attestation evidence.
    pub fn expects_evidence(&self) -> bool {
        self.request
            .is_some_and(|r| r.flags & HOST_REQUEST_ATTEST != 0)
    }
}

/// One page of host memory backing a memory slot of its own, outside guest RAM (the
/// TDX reset page at `TDX_RESET_PAGE_GPA`).
#[derive(Debug)]
pub struct HostPage {
    ptr: *mut u8,
}

// SAFETY: the page is a private anonymous mapping owned by this value; nothing else
// refers to it but the VM, which only the owner of the `Vm` runs.
unsafe impl Send for HostPage {}

impl HostPage {
    /// A page holding `contents`, mapped into `vm` at `gpa` as memory slot `slot`.
    pub fn map(vm: &VmFd, slot: u32, gpa: u64, contents: &[u8; 4096]) -> Result<Self, SetupError> {
        // SAFETY: a fresh anonymous private mapping; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SetupError::Memory(MemoryError::Sys {
                what: "mmap of a host page",
                source: std::io::Error::last_os_error(),
            }));
        }
        // SAFETY: the mapping is 4096 bytes long and ours alone.
        unsafe { std::ptr::copy_nonoverlapping(contents.as_ptr(), ptr.cast::<u8>(), 4096) };
        let page = Self { ptr: ptr.cast() };
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: PAGE_SIZE_4K,
            userspace_addr: page.ptr as u64,
        };
        // SAFETY: the page lives in the returned value, which the `Vm` keeps after its
        // `VmFd` (field order), so it outlives the VM's use of it.
        unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("a host page's slot"))?;
        Ok(page)
    }
}

impl Drop for HostPage {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map`, after the VM that used it is gone
        // (`Vm` drops `vm` first).
        unsafe { libc::munmap(self.ptr.cast(), 4096) };
    }
}

/// IOAPIC pins KVM routes with the split irqchip: QEMU's 24 (the emulated platforms
/// have no devices; the local APICs are what they use).
const SPLIT_IRQCHIP_PINS: u64 = 24;

/// A new VM with `memory` bytes of guest RAM (one memfd) mapped by two memory slots
/// (0 and 1): each view at the GPA given for it. Its local APICs are KVM's (the split
/// irqchip, `KVM_CAP_SPLIT_IRQCHIP`, as TDX requires on hardware): the guest's timer
/// and inter-processor interrupts, and a `hlt` that waits in KVM for an interrupt
/// instead of exiting.
pub fn vm_with_ram(
    memory: u64,
    views: [(View, u64); 2],
) -> Result<(Kvm, VmFd, GuestMemory), SetupError> {
    let kvm = Kvm::new().map_err(SetupError::Kvm)?;
    let vm = kvm.create_vm().map_err(SetupError::Kvm)?;
    let mut split = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    split.args[0] = SPLIT_IRQCHIP_PINS;
    vm.enable_cap(&split)
        .map_err(ioctl("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"))?;
    let mem = GuestMemory::new(memory)?;
    for (slot, (view, gpa)) in (0..).zip(views) {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: memory,
            userspace_addr: mem.base(view) as u64,
        };
        // SAFETY: the mapping lives as long as `mem`, which the caller moves into the
        // returned `Vm`'s platform; that outlives the VM's use of it (the VmFd is
        // dropped first: field order).
        unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("a memory slot"))?;
    }
    Ok((kvm, vm, mem))
}

/// Refuse a vCPU count outside 1 to [`MAX_CPUS`] (the firmware's limit).
pub fn check_cpus(cpus: u32) -> Result<(), SetupError> {
    if (1..=MAX_CPUS).contains(&cpus) {
        Ok(())
    } else {
        Err(SetupError::Image(format!(
            "{cpus} vCPUs asked for: a guest has 1 to {MAX_CPUS} (--cpus)"
        )))
    }
}

/// `KVM_MP_STATE_RUNNABLE` (`include/uapi/linux/kvm.h`): a vCPU that runs when
/// `KVM_RUN` is called, rather than waiting for INIT and SIPI.
pub const MP_STATE_RUNNABLE: u32 = kvm_bindings::KVM_MP_STATE_RUNNABLE;
const _: () = assert!(MP_STATE_RUNNABLE == 0);

/// Make `cpus` vCPUs of `vm` with KVM ids (and so x2APIC ids) 0 to `cpus - 1`, each
/// set up by `setup(vcpu, index)`. vCPU 0 is the boot processor; KVM makes the others
/// wait for INIT and SIPI where the local APIC is its own (the split irqchip), so they
/// are made runnable: every vCPU starts where `setup` puts it, and the firmware sorts
/// out which one boots.
pub fn create_vcpus(
    vm: &VmFd,
    cpus: u32,
    mut setup: impl FnMut(&VcpuFd, u32) -> Result<(), SetupError>,
) -> Result<Vec<VcpuFd>, SetupError> {
    check_cpus(cpus)?;
    (0..cpus)
        .map(|index| {
            let vcpu = vm.create_vcpu(u64::from(index)).map_err(ioctl("a vCPU"))?;
            setup(&vcpu, index)?;
            if index > 0 {
                vcpu.set_mp_state(kvm_bindings::kvm_mp_state {
                    mp_state: MP_STATE_RUNNABLE,
                })
                .map_err(ioctl("KVM_SET_MP_STATE of an application processor"))?;
            }
            Ok(vcpu)
        })
        .collect()
}

/// The vCPU's TSC frequency in kHz, which the guest's clocks count in (0 if KVM does
/// not say; the guest then falls back to its own default).
pub fn tsc_khz(vcpu: &VcpuFd) -> u64 {
    vcpu.get_tsc_khz().map_or(0, u64::from)
}

/// The host parameter page: a memory map with one RAM entry, the host's request of
/// this boot, if any, and the number of vCPUs (written whatever it is, one too).
pub fn parameter_page(memory: u64, request: Option<HostRequest>, cpus: u32) -> [u8; 4096] {
    let map = [
        MemoryMapEntry {
            starting_gpa_page_number: 0,
            number_of_pages: memory / PAGE_SIZE_4K,
            entry_type: MEMORY_MAP_TYPE_MEMORY,
            flags: 0,
            reserved: 0,
        },
        MemoryMapEntry {
            starting_gpa_page_number: 0,
            number_of_pages: 0,
            entry_type: 0,
            flags: 0,
            reserved: 0,
        },
    ];
    let mut param = [0u8; 4096];
    param[..48].copy_from_slice(map.as_bytes());
    if let Some(r) = request {
        param[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128].copy_from_slice(r.as_bytes());
    }
    set_host_cpus(&mut param, cpus);
    param
}

/// The maximal runs `(first, count)` of consecutive GFNs in `gfns`.
pub fn runs(mut gfns: Vec<u64>) -> Vec<(u64, u64)> {
    gfns.sort_unstable();
    gfns.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for gfn in gfns {
        match out.last_mut() {
            Some((first, n)) if *first + *n == gfn => *n += 1,
            _ => out.push((gfn, 1)),
        }
    }
    out
}

/// Apply the CPUID lies of a hostile-host test to the vCPU's `entries`: without a
/// TSC-deadline timer (CPUID.1:ECX bit 24) the guest has no time slices.
pub fn hostile_cpuid(entries: &mut [kvm_bindings::kvm_cpuid_entry2]) {
    if Hostile::from_env() == Some(Hostile::NoTimer) {
        for e in entries.iter_mut().filter(|e| e.function == 1) {
            e.ecx &= !(1 << 24);
        }
    }
}

/// `KVM_SIGNAL_MSI`: `_IOW(KVMIO, 0xa5, struct kvm_msi)` (`include/uapi/linux/kvm.h`;
/// KVMIO is 0xAE, `struct kvm_msi` is 32 bytes).
const KVM_SIGNAL_MSI: libc::c_ulong = (1 << 30) | (32 << 16) | (0xAE << 8) | 0xA5;
/// An MSI to the local APIC with id 0, fixed delivery, edge: address 0xFEE0_0000,
/// data the vector (Intel SDM vol. 3A, 11.11).
const MSI_ADDRESS_APIC0: u32 = 0xFEE0_0000;
/// How many interrupts the storm sends, and how far apart.
const STORM_INTERRUPTS: u32 = 50_000;
const STORM_GAP: std::time::Duration = std::time::Duration::from_micros(200);

/// Interrupts for a VM's vCPU 0 (its local APIC id 0), sent with `KVM_SIGNAL_MSI` on
/// a copy of the VM descriptor of its own, so that a thread other than the vCPUs' can
/// send them for as long as it keeps this.
#[derive(Debug)]
pub struct MsiSender {
    fd: std::os::fd::OwnedFd,
}

impl MsiSender {
    /// A sender to `vm`'s vCPU 0.
    pub fn new(vm: &VmFd) -> Result<Self, SetupError> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: dup of a descriptor this process owns; the copy is owned below.
        let fd = unsafe { libc::fcntl(vm.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(SetupError::Image(format!(
                "cannot duplicate the VM descriptor for sending interrupts: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: `fd` was just returned by fcntl(F_DUPFD_CLOEXEC) and is owned by
        // nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Send `vector` to vCPU 0 (fixed delivery, edge).
    pub fn send(&self, vector: u8) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let msi = kvm_bindings::kvm_msi {
            address_lo: MSI_ADDRESS_APIC0,
            data: u32::from(vector),
            ..Default::default()
        };
        // SAFETY: KVM_SIGNAL_MSI reads one `struct kvm_msi` from the pointer, which is
        // valid for the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), KVM_SIGNAL_MSI, &msi) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Start the interrupt storm of the `interrupt-storm` hostile-host test: a thread
/// that sends the VM's vCPU 0 interrupts through KVM_SIGNAL_MSI on its own copy of
/// the VM descriptor, until it has sent them all or the VM is gone.
pub fn start_interrupt_storm(vm: &VmFd) -> Result<(), SetupError> {
    let msi = MsiSender::new(vm)?;
    std::thread::spawn(move || {
        let vectors = [0x20u8, 0x21, 0x30, 0x80, 0xEF];
        for i in 0..STORM_INTERRUPTS {
            if let Err(e) = msi.send(vectors[i as usize % vectors.len()]) {
                if e.raw_os_error() != Some(libc::EAGAIN) {
                    break;
                }
            }
            std::thread::sleep(STORM_GAP);
        }
    });
    Ok(())
}

/// The first page the firmware accepts after the image (the start of its frame
/// bitmap): where a hostile host pre-accepts a page in tests.
pub fn hostile_gfn(image: &LoadedImage) -> u64 {
    align_up(image.boot_info.image_end, PAGE_SIZE_2M) / PAGE_SIZE_4K
}

/// A number from the environment variable `name`, for test hooks.
pub fn test_hook(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registered platform called `name`.
    fn platform(name: &str) -> &'static Registration {
        crate::platform::by_name(name).expect("a registered platform")
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn memory_a_platform_cannot_boot_is_refused_naming_its_limit() {
        for name in ["emulated-snp", "snp"] {
            let p = platform(name);
            assert_eq!(p.max_memory, 64 * GIB);
            for ok in [MIN_GUEST_MEMORY, 4 * GIB, 64 * GIB] {
                check_memory(p, ok, 0, None).unwrap();
            }
            // 74G ran the firmware out of page tables; 4T, 16T and 64T failed later
            // still, in KVM or mmap.
            for bad in [
                64 * GIB + PAGE_SIZE_2M,
                74 * GIB,
                4 << 40,
                16 << 40,
                64 << 40,
            ] {
                let e = check_memory(p, bad, 0, None).unwrap_err();
                assert!(matches!(e, MemorySizeError::Platform { .. }), "{e}");
                let text = e.to_string();
                assert!(
                    text.contains(&format!("{name} boots at most 64 GiB of guest memory")),
                    "{text}"
                );
                assert!(text.starts_with("--memory "), "{text}");
            }
        }
        for name in ["emulated-tdx", "tdx"] {
            let p = platform(name);
            check_memory(p, 4094 << 20, 0, None).unwrap();
            let e = check_memory(p, 4 * GIB, 0, None).unwrap_err().to_string();
            assert!(e.contains("at most 4094 MiB"), "{e}");
            assert!(e.contains("reset vector"), "{e}");
        }
        let snp = platform("emulated-snp");
        let e = check_memory(snp, 63 << 20, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of 2 MiB"), "{e}");
        let e = check_memory(snp, 32 << 20, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a guest needs at least 64 MiB"), "{e}");
        let e = check_memory(snp, 128 << 20, 256 << 20, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("this image needs at least 256 MiB"), "{e}");
    }

    const MEMINFO: &str = "MemTotal:       24683772 kB\nMemFree:        18000000 kB\n\
        SwapTotal:       2097152 kB\nCommitLimit:    12341884 kB\n\
        Committed_AS:     261412 kB\n";

    #[test]
    fn host_memory_is_read_from_meminfo_and_the_overcommit_mode() {
        let h = HostMemory::parse(MEMINFO, "0\n", None).unwrap();
        assert_eq!(h.ram, 24_683_772 * 1024);
        assert_eq!(h.swap, 2 * GIB);
        assert_eq!(h.overcommit, Overcommit::Heuristic);
        let h = HostMemory::parse(MEMINFO, "2", Some(8 * GIB)).unwrap();
        assert_eq!(
            h.overcommit,
            Overcommit::Never {
                available: (12_341_884 - 261_412) * 1024
            }
        );
        assert_eq!(h.address_space, Some(8 * GIB));
        assert_eq!(
            HostMemory::parse(MEMINFO, "1", None).unwrap().overcommit,
            Overcommit::Always
        );
        assert_eq!(HostMemory::parse(MEMINFO, "3", None), None);
        assert_eq!(HostMemory::parse("MemFree: 1 kB\n", "0", None), None);
        // This host's can be read.
        assert!(HostMemory::probe().is_some());
    }

    #[test]
    fn memory_the_host_cannot_back_is_refused_saying_what_it_has() {
        let snp = platform("emulated-snp");
        let host = HostMemory {
            ram: 8 * GIB,
            swap: 0,
            overcommit: Overcommit::Heuristic,
            address_space: None,
        };
        check_memory(snp, 8 * GIB, 0, Some(&host)).unwrap();
        let e = check_memory(snp, 8 * GIB + PAGE_SIZE_2M, 0, Some(&host)).unwrap_err();
        assert!(matches!(e, MemorySizeError::Host { .. }), "{e}");
        let text = e.to_string();
        for part in [
            "this host cannot back that much guest memory",
            "8 GiB of RAM and no swap",
            "give at most 8 GiB",
            "vm.overcommit_memory=1",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        // The platform's limit is named first: it holds whatever the host.
        let e = check_memory(snp, 74 * GIB, 0, Some(&host)).unwrap_err();
        assert!(matches!(e, MemorySizeError::Platform { .. }), "{e}");

        let always = HostMemory {
            overcommit: Overcommit::Always,
            ..host
        };
        check_memory(snp, 64 * GIB, 0, Some(&always)).unwrap();

        let strict = HostMemory {
            overcommit: Overcommit::Never {
                available: 3 * GIB + 12345,
            },
            ..host
        };
        check_memory(snp, 3 * GIB, 0, Some(&strict)).unwrap();
        let e = check_memory(snp, 4 * GIB, 0, Some(&strict))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vm.overcommit_memory=2"), "{e}");
        assert!(e.contains("give at most 3 GiB"), "{e}");

        let limited = HostMemory {
            address_space: Some(8 * GIB),
            ..always
        };
        check_memory(snp, 2 * GIB, 0, Some(&limited)).unwrap();
        let e = check_memory(snp, 4 * GIB, 0, Some(&limited))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ulimit -v"), "{e}");
        assert!(e.contains("8 GiB of address space"), "{e}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_text(74 * GIB), "74 GiB");
        assert_eq!(size_text(4094 << 20), "4094 MiB");
        assert_eq!(size_text(16 << 40), "16 TiB");
        assert_eq!(size_text(24_683_772 * 1024), "23.5 GiB");
        assert_eq!(size_text(512 << 10), "512 KiB");
        assert_eq!(size_text(100), "100 bytes");
    }

    #[test]
    fn runs_merge_consecutive_pages_whatever_the_order() {
        assert_eq!(runs(vec![5, 1, 2, 3, 9, 2]), vec![(1, 3), (5, 1), (9, 1)]);
        assert_eq!(runs(Vec::new()), Vec::<(u64, u64)>::new());
    }

    #[test]
    fn the_parameter_page_maps_all_of_ram_and_carries_the_request() {
        let page = parameter_page(64 << 20, None, 1);
        let pages = u64::from_le_bytes(page[8..16].try_into().unwrap());
        assert_eq!(pages, (64 << 20) / PAGE_SIZE_4K);
        assert_eq!(HostRequest::parse(&page), Ok(None));
        let with = parameter_page(64 << 20, Some(HostRequest::attest([7; 64])), 1);
        assert_eq!(
            HostRequest::parse(&with),
            Ok(Some(HostRequest::attest([7; 64])))
        );
    }

    #[test]
    fn the_parameter_page_always_carries_the_vcpu_count() {
        use nacre_shared_abi::boot::{host_cpus, HOST_CPUS_OFFSET};
        // One vCPU is written too, not left as the "none said" zero.
        let one = parameter_page(64 << 20, None, 1);
        assert_eq!(
            one[HOST_CPUS_OFFSET..HOST_CPUS_OFFSET + 4],
            1u32.to_le_bytes()
        );
        assert_eq!(host_cpus(&one), Ok(1));
        let four = parameter_page(64 << 20, Some(HostRequest::attest([7; 64])), 4);
        assert_eq!(host_cpus(&four), Ok(4));
        assert_eq!(
            HostRequest::parse(&four),
            Ok(Some(HostRequest::attest([7; 64]))),
            "the count leaves the request alone"
        );
        assert_eq!(
            host_cpus(&parameter_page(64 << 20, None, MAX_CPUS)),
            Ok(MAX_CPUS)
        );
    }

    #[test]
    fn vcpu_counts_outside_one_to_max_cpus_are_refused() {
        assert!(check_cpus(1).is_ok());
        assert!(check_cpus(MAX_CPUS).is_ok());
        for cpus in [0, MAX_CPUS + 1, u32::MAX] {
            let e = check_cpus(cpus).unwrap_err().to_string();
            assert!(e.contains(&format!("1 to {MAX_CPUS}")), "{e}");
        }
    }
}
