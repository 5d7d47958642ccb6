//! What both hardware launches share: their errors, the VM-level operations (the
//! split irqchip, the VM's vCPU limit, memory slots backed by a guest_memfd, memory
//! attributes, the supported CPUID), the loop that repeats a launch command until the
//! kernel has done all of it, and the runs of pages a launch adds.
//!
//! Each launch is written against a small trait over the ioctls it issues
//! (`SnpLaunchOps`, `TdxLaunchOps`, both extending [`VmOps`]): [`KvmVm`] and the
//! vendors' implementations issue them, and tests give the same launch a recording
//! fake that checks the order and replays the pages through the loader's measurement.

use super::mmu::AttributeSink;
use crate::vmm::memory::MemoryError;
use crate::vmm::uapi::{cap, CpuidEntry, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEM_GUEST_MEMFD};
use kvm_bindings::{kvm_create_guest_memfd, kvm_memory_attributes, kvm_userspace_memory_region2};
use kvm_ioctls::{Cap, Kvm, VmFd};
use nacre_shared_abi::boot::MAX_CPUS;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// Why a hardware launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}{}", status_text(*.status))]
    Kvm {
        /// The command.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
        /// The firmware's or TDX module's status, when the command gives one.
        status: Option<u64>,
    },
    /// A command kept returning with work left and no progress.
    #[error("{what} made no progress after {tries} tries")]
    NoProgress {
        /// The command.
        what: &'static str,
        /// How often it was tried.
        tries: u32,
    },
    /// The kernel reported progress that does not add up (a host bug).
    #[error("{what} reported inconsistent progress: {detail}")]
    Progress {
        /// The command.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The image cannot run on this host as it is.
    #[error("{0}")]
    Image(String),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

fn status_text(status: Option<u64>) -> String {
    match status {
        Some(s) if s != 0 => format!(" (status {s:#x})"),
        _ => String::new(),
    }
}

impl LaunchError {
    /// A failed ioctl `what`.
    pub fn kvm(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Kvm {
            what,
            source,
            status: None,
        }
    }

    /// Whether the kernel asked for the command again (`EAGAIN`, `EINTR`).
    pub fn is_retry(&self) -> bool {
        matches!(self, Self::Kvm { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)))
    }

    /// The OS error number, if the error is a failed ioctl.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kvm { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// How often a launch command may return without progress before the launch gives up.
pub const MAX_STALLS: u32 = 10_000;

/// The IOAPIC pins KVM's split irqchip routes: QEMU's 24. nacre's guests have no
/// devices; the local APICs are what they use.
pub const SPLIT_IRQCHIP_PINS: u64 = 24;

/// What both launches ask of the VM.
pub trait VmOps {
    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: every vCPU gets a local APIC in KVM
    /// (the guest's timer and inter-processor interrupts; a `hlt` then waits in KVM
    /// for an interrupt instead of exiting to user space), the I/O APIC and PIC stay
    /// out. KVM takes it only before the VM's first vCPU (`arch/x86/kvm/x86.c`,
    /// `kvm_vm_ioctl_enable_cap`: `EEXIST` once a vCPU or an irqchip exists).
    fn split_irqchip(&mut self) -> Result<(), LaunchError>;
    /// `KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPUS)` on the VM: how many vCPUs it may have
    /// (`arch/x86/kvm/x86.c`, `kvm_vm_ioctl_check_extension`, answers with the VM's own
    /// `max_vcpus`; `KVM_CREATE_VCPU` fails with `EINVAL` beyond it, in
    /// `virt/kvm/kvm_main.c`, `kvm_vm_ioctl_create_vcpu`).
    fn max_vcpus(&mut self) -> Result<u32, LaunchError>;
    /// `KVM_GET_SUPPORTED_CPUID`.
    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>, LaunchError>;
    /// A guest_memfd of `size` bytes and memory slot `slot` over `[gpa, gpa + size)`
    /// whose private pages are in it and whose shared pages are the host memory at
    /// `shared` (`KVM_CREATE_GUEST_MEMFD`, `KVM_SET_USER_MEMORY_REGION2` with
    /// `KVM_MEM_GUEST_MEMFD`).
    fn add_private_slot(
        &mut self,
        slot: u32,
        gpa: u64,
        size: u64,
        shared: u64,
    ) -> Result<(), LaunchError>;
    /// `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` over `[gpa, gpa + size)`.
    fn set_private(&mut self, gpa: u64, size: u64) -> Result<(), LaunchError>;
}

/// Refuse `cpus` vCPUs unless the guest may have that many (1 to [`MAX_CPUS`]) and the
/// VM `ops` takes them: a TD's limit is the number of CPUs the host has
/// (`arch/x86/kvm/vmx/tdx.c`, `tdx_vm_init`), so a small host refuses a large `--cpus`
/// here, with a message, rather than at the first `KVM_CREATE_VCPU` too many.
pub fn check_vcpus(ops: &mut impl VmOps, cpus: u32) -> Result<(), LaunchError> {
    if !(1..=MAX_CPUS).contains(&cpus) {
        return Err(LaunchError::Image(format!(
            "{cpus} vCPUs asked for: a guest has 1 to {MAX_CPUS}"
        )));
    }
    let max = ops.max_vcpus()?;
    if cpus > max {
        return Err(LaunchError::Image(format!(
            "{cpus} vCPUs asked for, and KVM gives this VM at most {max} (KVM_CAP_MAX_VCPUS; \
             for a TD, the number of CPUs of the host): pass --cpus {max} or fewer"
        )));
    }
    Ok(())
}

/// A launch command's progress as the kernel leaves it in its argument: the next
/// GPA, the next source address, and what remains.
pub trait Progress {
    /// `(gpa, source, remaining pages)`.
    fn progress(&self) -> (u64, u64, u64);
}

/// Issue `command` on `arg` until no pages remain: the kernel may return early (with
/// success, `EAGAIN` or `EINTR`) having written the remainder into `arg`
/// (docs/kvm-uapi.md 3 and 4). Progress must move the GPA and the source together, by
/// what no longer remains.
pub fn until_done<A: Progress>(
    what: &'static str,
    arg: &mut A,
    mut command: impl FnMut(&mut A) -> Result<(), LaunchError>,
) -> Result<(), LaunchError> {
    let mut stalls = 0;
    loop {
        let (gpa, src, left) = arg.progress();
        if left == 0 {
            return Ok(());
        }
        match command(arg) {
            Ok(()) => {}
            Err(e) if e.is_retry() => {}
            Err(e) => return Err(e),
        }
        let (gpa2, src2, left2) = arg.progress();
        let done = left
            .checked_sub(left2)
            .ok_or_else(|| LaunchError::Progress {
                what,
                detail: format!("{left2} pages left after {left}"),
            })?;
        let step = done * PAGE_SIZE_4K;
        if gpa2 != gpa.wrapping_add(step) || src2 != src.wrapping_add(step) {
            return Err(LaunchError::Progress {
                what,
                detail: format!(
                    "{done} pages done but the GPA moved {gpa:#x} -> {gpa2:#x} and the \
                     source {src:#x} -> {src2:#x}"
                ),
            });
        }
        if done == 0 {
            stalls += 1;
            if stalls >= MAX_STALLS {
                return Err(LaunchError::NoProgress {
                    what,
                    tries: stalls,
                });
            }
        } else {
            stalls = 0;
        }
    }
}

/// Issue `command` until it does not ask to be repeated (`EAGAIN`, `EINTR`, and the
/// errors in `also`).
pub fn retried<T>(
    what: &'static str,
    also: &[i32],
    mut command: impl FnMut() -> Result<T, LaunchError>,
) -> Result<T, LaunchError> {
    let mut tries = 0;
    loop {
        match command() {
            Err(e) if e.is_retry() || e.errno().is_some_and(|n| also.contains(&n)) => {
                tries += 1;
                if tries >= MAX_STALLS {
                    return Err(LaunchError::NoProgress { what, tries });
                }
            }
            other => return other,
        }
    }
}

/// A run of launch pages: consecutive in launch order, at consecutive GPAs, taken the
/// same way (`kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRun<K> {
    /// First GPA.
    pub gpa: u64,
    /// Number of pages.
    pub pages: u64,
    /// How the platform takes them.
    pub kind: K,
}

/// Group `pages` (GPA, kind) into maximal runs, keeping their order: the measurement
/// of each run is that of its pages in order, so grouping changes nothing but the
/// number of calls.
pub fn page_runs<K: PartialEq + Copy>(
    pages: impl IntoIterator<Item = (u64, K)>,
) -> Vec<PageRun<K>> {
    let mut runs: Vec<PageRun<K>> = Vec::new();
    for (gpa, kind) in pages {
        match runs.last_mut() {
            Some(r) if r.kind == kind && r.gpa + r.pages * PAGE_SIZE_4K == gpa => r.pages += 1,
            _ => runs.push(PageRun {
                gpa,
                pages: 1,
                kind,
            }),
        }
    }
    runs
}

/// A KVM VM with guest_memfd slots: the real [`VmOps`].
#[derive(Debug)]
pub struct KvmVm {
    /// `/dev/kvm`.
    pub kvm: Kvm,
    /// The VM.
    pub vm: VmFd,
    /// The guest_memfd of each slot, by slot.
    pub gmem: Vec<(u32, u64, OwnedFd)>,
}

impl KvmVm {
    /// A VM of type `vm_type` (`KVM_CREATE_VM`).
    pub fn create(vm_type: u32) -> Result<Self, LaunchError> {
        let kvm = Kvm::new().map_err(|e| LaunchError::kvm("opening /dev/kvm")(e.into()))?;
        let vm = kvm
            .create_vm_with_type(u64::from(vm_type))
            .map_err(|e| LaunchError::kvm("KVM_CREATE_VM")(e.into()))?;
        Ok(Self {
            kvm,
            vm,
            gmem: Vec::new(),
        })
    }

    /// `KVM_ENABLE_CAP(cap, arg)`.
    pub fn enable_cap(&self, cap: u32, arg: u64, what: &'static str) -> Result<(), LaunchError> {
        let mut c = kvm_bindings::kvm_enable_cap {
            cap,
            ..Default::default()
        };
        c.args[0] = arg;
        self.vm
            .enable_cap(&c)
            .map_err(|e| LaunchError::kvm(what)(e.into()))
    }

    /// What the MMU needs to change attributes after the launch: a second handle on
    /// the VM (a copy of its descriptor) and a copy of the RAM slot's (slot 0's)
    /// guest_memfd.
    pub fn attribute_sink(&self) -> Result<KvmAttributes, LaunchError> {
        let dup = |fd: RawFd| -> Result<OwnedFd, LaunchError> {
            // SAFETY: duplicating a descriptor this VM owns; the copy is owned below.
            let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if raw < 0 {
                return Err(LaunchError::kvm("dup of a VM descriptor")(
                    io::Error::last_os_error(),
                ));
            }
            // SAFETY: `raw` is a fresh descriptor nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        };
        let ram = self
            .gmem
            .iter()
            .find(|(slot, _, _)| *slot == 0)
            .ok_or_else(|| LaunchError::Image("no RAM slot".into()))?;
        let vm = dup(self.vm.as_raw_fd())?;
        // SAFETY: `vm` is a fresh copy of this VM's descriptor, whose ownership passes
        // to the new VmFd, which nothing else uses.
        let vm = unsafe { self.kvm.create_vmfd_from_rawfd(vm.into_raw_fd()) }
            .map_err(|e| LaunchError::kvm("a second handle on the VM")(e.into()))?;
        Ok(KvmAttributes {
            vm,
            ram_gmem: dup(ram.2.as_raw_fd())?,
        })
    }
}

impl VmOps for KvmVm {
    fn split_irqchip(&mut self) -> Result<(), LaunchError> {
        self.enable_cap(
            cap::SPLIT_IRQCHIP,
            SPLIT_IRQCHIP_PINS,
            "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)",
        )
    }

    fn max_vcpus(&mut self) -> Result<u32, LaunchError> {
        // kvm-ioctls returns the ioctl's result as it is: -1 with errno on failure.
        let max = self.vm.check_extension_int(Cap::MaxVcpus);
        u32::try_from(max).map_err(|_| {
            LaunchError::kvm("KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPUS)")(io::Error::last_os_error())
        })
    }

    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>, LaunchError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| LaunchError::kvm("KVM_GET_SUPPORTED_CPUID")(e.into()))?;
        Ok(cpuid
            .as_slice()
            .iter()
            .map(|e| CpuidEntry::from(*e))
            .collect())
    }

    fn add_private_slot(
        &mut self,
        slot: u32,
        gpa: u64,
        size: u64,
        shared: u64,
    ) -> Result<(), LaunchError> {
        let raw = self
            .vm
            .create_guest_memfd(kvm_create_guest_memfd {
                size,
                ..Default::default()
            })
            .map_err(|e| LaunchError::kvm("KVM_CREATE_GUEST_MEMFD")(e.into()))?;
        // SAFETY: a fresh descriptor nothing else owns.
        let gmem = unsafe { OwnedFd::from_raw_fd(raw) };
        let region = kvm_userspace_memory_region2 {
            slot,
            flags: KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: shared,
            guest_memfd_offset: 0,
            guest_memfd: gmem.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the slot's shared side is host memory the platform keeps mapped until
        // after the VM's descriptors are closed (the `Vm` drops them first), and its
        // private side is the guest_memfd just made.
        unsafe { self.vm.set_user_memory_region2(region) }
            .map_err(|e| LaunchError::kvm("KVM_SET_USER_MEMORY_REGION2")(e.into()))?;
        self.gmem.push((slot, gpa, gmem));
        Ok(())
    }

    fn set_private(&mut self, gpa: u64, size: u64) -> Result<(), LaunchError> {
        self.vm
            .set_memory_attributes(attributes(gpa, size, true))
            .map_err(|e| LaunchError::kvm("KVM_SET_MEMORY_ATTRIBUTES")(e.into()))
    }
}

/// `KVM_SET_MEMORY_ATTRIBUTES`' argument: `[gpa, gpa + size)` private or shared.
fn attributes(gpa: u64, size: u64, private: bool) -> kvm_memory_attributes {
    kvm_memory_attributes {
        address: gpa,
        size,
        attributes: if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE
        } else {
            0
        },
        flags: 0,
    }
}

/// The VM's attributes and RAM's guest_memfd, as the MMU changes them while the guest
/// runs.
#[derive(Debug)]
pub struct KvmAttributes {
    vm: VmFd,
    ram_gmem: OwnedFd,
}

impl AttributeSink for KvmAttributes {
    fn set_attributes(&self, gpa: u64, size: u64, private: bool) -> io::Result<()> {
        Ok(self
            .vm
            .set_memory_attributes(attributes(gpa, size, private))?)
    }

    fn discard_private(&self, gpa: u64, size: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(gpa), libc::off_t::try_from(size)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: punching a hole in the guest_memfd of RAM (slot 0, at offset = GPA);
        // guest_memfd takes PUNCH_HOLE | KEEP_SIZE (`virt/kvm/guest_memfd.c`).
        let r = unsafe {
            libc::fallocate(
                self.ram_gmem.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Host pages outside guest RAM (the TDX reset page's shared side and its source).
#[derive(Debug)]
pub struct HostPages {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: an anonymous mapping owned by this value, only copied into and out of.
unsafe impl Send for HostPages {}

impl HostPages {
    /// `pages` zeroed pages.
    pub fn new(pages: usize) -> Result<Self, MemoryError> {
        let len = pages * PAGE_SIZE_4K as usize;
        // SAFETY: a fresh private anonymous mapping; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::Sys {
                what: "mmap of host pages",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Copy `bytes` to the start.
    pub fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.len);
        // SAFETY: at most `len` bytes into our own mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, n) };
    }

    /// The host address.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once; the VM that used it is gone (the
        // platform that owns this outlives the VM's descriptors).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Arg {
        gpa: u64,
        src: u64,
        left: u64,
    }

    impl Progress for Arg {
        fn progress(&self) -> (u64, u64, u64) {
            (self.gpa, self.src, self.left)
        }
    }

    fn again() -> LaunchError {
        LaunchError::kvm("x")(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    #[test]
    fn partial_progress_is_resumed_until_nothing_is_left() {
        let mut arg = Arg {
            gpa: 0x1000,
            src: 0x7000_0000,
            left: 5,
        };
        let mut calls = 0;
        until_done("update", &mut arg, |a| {
            calls += 1;
            // Two pages per call; every other call says EAGAIN after its work.
            let n = a.left.min(2);
            a.gpa += n * 4096;
            a.src += n * 4096;
            a.left -= n;
            if calls % 2 == 0 {
                Err(again())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!((arg.gpa, arg.left, calls), (0x6000, 0, 3));
    }

    #[test]
    fn errors_other_than_retries_stop_at_once() {
        let mut arg = Arg {
            gpa: 0,
            src: 0,
            left: 1,
        };
        let err = until_done("update", &mut arg, |_| {
            Err(LaunchError::kvm("update")(io::Error::from_raw_os_error(
                libc::EINVAL,
            )))
        })
        .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL));
    }

    #[test]
    fn inconsistent_or_absent_progress_is_an_error_not_a_hang() {
        let mut arg = Arg {
            gpa: 0,
            src: 0,
            left: 3,
        };
        let err = until_done("update", &mut arg, |a| {
            a.left -= 1;
            a.gpa += 8192;
            a.src += 4096;
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, LaunchError::Progress { .. }), "{err}");
        let mut arg = Arg {
            gpa: 0,
            src: 0,
            left: 3,
        };
        let err = until_done("update", &mut arg, |_| Err(again())).unwrap_err();
        assert!(matches!(
            err,
            LaunchError::NoProgress {
                tries: MAX_STALLS,
                ..
            }
        ));
    }

    #[test]
    fn retried_commands_repeat_only_on_the_errors_named() {
        let mut n = 0;
        let r = retried("finalize", &[libc::EBUSY], || {
            n += 1;
            match n {
                1 => Err(again()),
                2 => Err(LaunchError::kvm("finalize")(io::Error::from_raw_os_error(
                    libc::EBUSY,
                ))),
                _ => Ok(n),
            }
        });
        assert_eq!(r.unwrap(), 3);
        let r: Result<(), _> = retried("x", &[], || {
            Err(LaunchError::kvm("x")(io::Error::from_raw_os_error(
                libc::EBUSY,
            )))
        });
        assert_eq!(r.unwrap_err().errno(), Some(libc::EBUSY));
    }

    #[test]
    fn runs_group_consecutive_pages_of_one_kind_in_order() {
        let runs = page_runs([
            (0x1000, 1),
            (0x2000, 1),
            (0x3000, 5),
            (0x8000, 1),
            (0x9000, 1),
            (0x4000, 1),
        ]);
        assert_eq!(
            runs,
            vec![
                PageRun {
                    gpa: 0x1000,
                    pages: 2,
                    kind: 1
                },
                PageRun {
                    gpa: 0x3000,
                    pages: 1,
                    kind: 5
                },
                PageRun {
                    gpa: 0x8000,
                    pages: 2,
                    kind: 1
                },
                PageRun {
                    gpa: 0x4000,
                    pages: 1,
                    kind: 1
                },
            ]
        );
    }
}
