//! The running host as `nacre host-check` probes it: its files, CPUID, and the
//! read-only ioctls of `/dev/kvm` and `/dev/sev`.

use crate::platform::check::{HostPaths, HostProbe, KvmProbe};
use crate::vmm::uapi::{self, KvmTdxCapabilities, SevUserDataSnpStatus, WithCpuid};
use kvm_ioctls::Kvm;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// How long a connection to a local service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The running host, its files under `paths`.
#[derive(Debug, Clone)]
pub struct SystemProbe {
    paths: HostPaths,
}

impl SystemProbe {
    /// The host with its files at `paths` (the system's: [`HostPaths::system`]).
    pub fn new(paths: HostPaths) -> Self {
        Self { paths }
    }
}

fn open_rw(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

impl HostProbe for SystemProbe {
    fn paths(&self) -> &HostPaths {
        &self.paths
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = std::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn kvm(&self) -> io::Result<Box<dyn KvmProbe + '_>> {
        let file = open_rw(&self.paths.dev.join("kvm"))?;
        let fd = OwnedFd::from(file);
        // SAFETY: `fd` is a descriptor of the KVM device opened read-write above, whose
        // ownership passes to the `Kvm`.
        let kvm = unsafe { Kvm::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
        Ok(Box::new(SystemKvm { kvm }))
    }

    fn snp_platform_status(&self) -> Result<SevUserDataSnpStatus, (io::Error, u32)> {
        let sev = open_rw(&self.paths.dev.join("sev")).map_err(|e| (e, 0))?;
        uapi::snp_platform_status(sev.as_raw_fd())
    }

    fn connect_unix(&self, path: &Path) -> io::Result<()> {
        std::os::unix::net::UnixStream::connect(path).map(drop)
    }

    fn connect_vsock(&self, cid: u32, port: u32) -> io::Result<()> {
        connect_vsock(cid, port, CONNECT_TIMEOUT).map(drop)
    }
}

/// `/dev/kvm` as the checks ask it.
struct SystemKvm {
    kvm: Kvm,
}

impl KvmProbe for SystemKvm {
    fn api_version(&self) -> i32 {
        self.kvm.get_api_version()
    }

    fn check_extension(&self, cap: u32) -> i64 {
        i64::from(self.kvm.check_extension_raw(libc::c_ulong::from(cap)))
    }

    fn device_attr(&self, group: u32, attr: u64) -> io::Result<u64> {
        uapi::get_device_attr_u64(self.kvm.as_raw_fd(), group, attr)
    }

    fn tdx_capabilities(&self) -> Result<WithCpuid<KvmTdxCapabilities>, (io::Error, u64)> {
        let vm = self
            .kvm
            .create_vm_with_type(u64::from(uapi::KVM_X86_TDX_VM))
            .map_err(|e| (io::Error::from(e), 0))?;
        crate::platform::tdx::kvm::capabilities(&vm)
    }
}

/// A stream socket connected to vsock address `cid`:`port`, reads and writes timing out
/// after `timeout`.
pub fn connect_vsock(
    cid: u32,
    port: u32,
    timeout: Duration,
) -> io::Result<std::os::unix::net::UnixStream> {
    // SAFETY: socket(2) with constant arguments; the result is checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain old data; zero is a valid value of every field.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    for opt in [libc::SO_SNDTIMEO, libc::SO_RCVTIMEO] {
        // SAFETY: setsockopt on our socket with a timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
    }
    // SAFETY: connect(2) with a sockaddr_vm of its own size.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // A connected stream socket reads and writes like any other; UnixStream only
    // wraps the descriptor's read(2) and write(2).
    Ok(std::os::unix::net::UnixStream::from(fd))
}
