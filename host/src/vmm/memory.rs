//! Guest RAM: one memfd mapped twice, the shared view at GPA 0 and the private view at GPA
//! `1 << 47` (docs/design.md, "Two views of guest RAM"). A page is accessible in a view
//! only while the software RMP allows it; otherwise the mapping is `PROT_NONE` and a guest
//! access exits to the VMM as MMIO.
//!
//! Guest memory is only touched through raw-pointer copies, never Rust references
//! (the guest may change it at any time while a vCPU runs).

use crate::mmu::attributes::Kind;
use crate::mmu::Backing;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Errors setting up or accessing guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A system call failed.
    #[error("{what} failed")]
    Sys {
        /// The call.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An access outside guest RAM.
    #[error("guest address range {gpa:#x}+{len:#x} is outside guest RAM")]
    OutOfRange {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
}

/// Which mapping of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// C-bit clear: hypervisor-visible.
    Shared,
    /// C-bit set: the guest's private memory.
    Private,
}

impl View {
    /// The attribute an access through this view asks the page to have.
    pub fn kind(self) -> Kind {
        match self {
            View::Shared => Kind::Shared,
            View::Private => Kind::Private,
        }
    }
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            View::Shared => "shared",
            View::Private => "private",
        })
    }
}

/// The memfd and its two mappings.
#[derive(Debug)]
pub struct GuestMemory {
    _fd: OwnedFd,
    size: u64,
    shared: *mut u8,
    private: *mut u8,
}

// SAFETY: the mappings are process-wide and only accessed through raw-pointer copies.
unsafe impl Send for GuestMemory {}

fn sys(what: &'static str) -> MemoryError {
    MemoryError::Sys {
        what,
        source: io::Error::last_os_error(),
    }
}

impl GuestMemory {
    /// Create `size` bytes of guest RAM. Both views start `PROT_NONE`.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let raw = unsafe { libc::memfd_create(c"nacre-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(sys("memfd_create"));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = libc::off_t::try_from(size)
            .map_err(|_| MemoryError::OutOfRange { gpa: 0, len: size })?;
        // SAFETY: ftruncate on our memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(sys("ftruncate"));
        }
        let map = |what| {
            // SAFETY: a new shared mapping of the whole memfd; no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size as usize,
                    libc::PROT_NONE,
                    libc::MAP_SHARED | libc::MAP_NORESERVE,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                Err(sys(what))
            } else {
                Ok(p.cast::<u8>())
            }
        };
        let shared = map("mmap of the shared view")?;
        let private = map("mmap of the private view")?;
        Ok(Self {
            _fd: fd,
            size,
            shared,
            private,
        })
    }

    /// RAM size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host address of a view's mapping.
    pub fn base(&self, view: View) -> *mut u8 {
        match view {
            View::Shared => self.shared,
            View::Private => self.private,
        }
    }

    fn check(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemoryError::OutOfRange { gpa, len }),
        }
    }

    /// Set the access of `[gpa, gpa + len)` in `view`.
    pub fn protect(
        &self,
        view: View,
        gpa: u64,
        len: u64,
        accessible: bool,
    ) -> Result<(), MemoryError> {
        self.check(gpa, len)?;
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: the range lies inside our own mapping (checked above).
        let r =
            unsafe { libc::mprotect(self.base(view).add(gpa as usize).cast(), len as usize, prot) };
        if r != 0 {
            return Err(sys("mprotect"));
        }
        if accessible && view == View::Private && len >= 2 << 20 {
            // A private 2 MiB mapping is memory the guest just accepted and will use:
            // allocate its host pages now, in one call. Where KVM shadows the guest's
            // page tables (its PVM backend), a first touch then finds the host page
            // present and maps its neighbours too (KVM's PTE prefetch), instead of taking
            // one slow fault per 4 KiB page; elsewhere it only moves the allocation
            // earlier. Best effort: a kernel without MADV_POPULATE_WRITE leaves the
            // pages to be faulted in as before.
            // SAFETY: populating pages of our own mapping inside its size.
            unsafe {
                libc::madvise(
                    self.base(view).add(gpa as usize).cast(),
                    len as usize,
                    libc::MADV_POPULATE_WRITE,
                )
            };
        }
        Ok(())
    }

    /// Discard the contents of `[gpa, gpa + len)`: afterwards it reads as zeros.
    /// Page-state changes do this, as guest_memfd conversions do, so that a page
    /// never carries data from one side to the other.
    pub fn discard(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        self.check(gpa, len)?;
        let (off, n) = match (libc::off_t::try_from(gpa), libc::off_t::try_from(len)) {
            (Ok(o), Ok(n)) => (o, n),
            _ => return Err(MemoryError::OutOfRange { gpa, len }),
        };
        // SAFETY: punching a hole in our own memfd within its size.
        let r = unsafe {
            libc::fallocate(
                self._fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                n,
            )
        };
        if r != 0 {
            return Err(sys("fallocate(PUNCH_HOLE)"));
        }
        Ok(())
    }

    /// Write `[gpa, gpa + len)` of the shared view straight to file descriptor `fd`
    /// (one `write(2)`, no copy in between). Returns the bytes written, or the OS
    /// error; EFAULT when the shared view does not map the range accessible now.
    pub fn write_shared_to(&self, fd: i32, gpa: u64, len: u64) -> Result<u64, io::Error> {
        self.check(gpa, len)
            .map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
        // SAFETY: the range lies inside the shared view's mapping (checked above); the
        // kernel reads it without any Rust reference being formed, and the guest is
        // stopped while its vCPU exit is being served.
        let n = unsafe {
            libc::write(
                fd,
                self.shared.add(gpa as usize).cast::<libc::c_void>(),
                len as usize,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as u64)
    }

    /// Copy out of guest RAM (through the memfd, whatever the views' protection).
    pub fn read(&self, gpa: u64, dst: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, dst.len() as u64)?;
        let off =
            libc::off_t::try_from(gpa).map_err(|_| MemoryError::OutOfRange { gpa, len: 0 })?;
        // SAFETY: pread into our buffer from our memfd.
        let n = unsafe {
            libc::pread(
                self._fd.as_raw_fd(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                off,
            )
        };
        if n < 0 || n as usize != dst.len() {
            return Err(sys("pread of guest memory"));
        }
        Ok(())
    }

    /// Copy into guest RAM.
    pub fn write(&self, gpa: u64, src: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, src.len() as u64)?;
        let off =
            libc::off_t::try_from(gpa).map_err(|_| MemoryError::OutOfRange { gpa, len: 0 })?;
        // SAFETY: pwrite from our buffer into our memfd.
        let n = unsafe { libc::pwrite(self._fd.as_raw_fd(), src.as_ptr().cast(), src.len(), off) };
        if n < 0 || n as usize != src.len() {
            return Err(sys("pwrite of guest memory"));
        }
        Ok(())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for p in [self.shared, self.private] {
            // SAFETY: unmapping our own mappings of `size` bytes, once.
            unsafe { libc::munmap(p.cast(), self.size as usize) };
        }
    }
}

/// The host MMU's mappings take effect as the protection of the two views; memory
/// goes back to the host by punching holes in the memfd.
impl Backing for GuestMemory {
    type Error = MemoryError;

    fn set_access(&self, kind: Kind, gfn: u64, pages: u64, on: bool) -> Result<(), MemoryError> {
        let view = match kind {
            Kind::Private => View::Private,
            Kind::Shared => View::Shared,
        };
        self.protect(view, gfn * PAGE_SIZE_4K, pages * PAGE_SIZE_4K, on)
    }

    fn discard(&self, gfn: u64, pages: u64) -> Result<(), MemoryError> {
        GuestMemory::discard(self, gfn * PAGE_SIZE_4K, pages * PAGE_SIZE_4K)
    }

    fn zero_fresh(&self, gfn: u64, pages: u64) -> Result<(), MemoryError> {
        // Punching a hole zeroes the pages and frees any the host had written.
        GuestMemory::discard(self, gfn * PAGE_SIZE_4K, pages * PAGE_SIZE_4K)
    }
}
