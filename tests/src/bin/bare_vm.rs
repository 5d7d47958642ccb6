//! `nacre-bare-vm`: the floor for nacre's boot benchmark.
//!
//! As one whole process it does the least a VMM must do to run guest code:
//! open `/dev/kvm`, create a VM backed by a 128 MiB anonymous memslot at
//! guest-physical address 0, create one vCPU in real mode at `0x1000` where a
//! single `hlt` instruction waits, run until `KVM_EXIT_HLT` and exit 0.
//! Any other outcome prints a message and exits 1.
//!
//! `nacre run` does all of this and more (firmware, page validation, app
//! loading), so the benchmark reports nacre's boot time as a ratio of this.

use std::process::ExitCode;
use std::ptr::NonNull;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};

/// Size of the guest RAM memslot.
const GUEST_RAM_BYTES: usize = 128 << 20;
/// Guest-physical (and, with CS base 0, linear) address of the code.
const CODE_GPA: u64 = 0x1000;
/// Encoding of `hlt`.
const HLT: u8 = 0xf4;

/// Anonymous host memory that backs the guest's RAM, unmapped on drop.
struct GuestRam {
    base: NonNull<u8>,
    len: usize,
}

impl GuestRam {
    /// Maps `len` bytes of private anonymous memory; pages are allocated by
    /// the kernel only when first touched, as a VMM's RAM usually is.
    fn new(len: usize) -> Result<Self, String> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // does not alias any memory this process already uses.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(format!(
                "cannot map {len} bytes of guest RAM: {}",
                std::io::Error::last_os_error()
            ));
        }
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| "mmap returned a null mapping".to_string())?;
        Ok(Self { base, len })
    }

    /// Writes `byte` at `offset` from the start of guest RAM.
    fn write_byte(&mut self, offset: usize, byte: u8) -> Result<(), String> {
        if offset >= self.len {
            return Err(format!(
                "offset {offset:#x} is outside guest RAM ({:#x} bytes)",
                self.len
            ));
        }
        // SAFETY: `offset < len`, so the byte lies inside the read-write
        // mapping owned by `self`; `&mut self` rules out other writers in
        // this process, and the vCPU that could also access it does not run
        // yet.
        unsafe { self.base.as_ptr().add(offset).write_volatile(byte) };
        Ok(())
    }

    fn host_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` describe exactly the mapping created in
        // `new`, and the VM that used it has been dropped before this value
        // (it is declared after the `GuestRam` in `run`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn run() -> Result<(), String> {
    let mut ram = GuestRam::new(GUEST_RAM_BYTES)?;
    let code_offset =
        usize::try_from(CODE_GPA).map_err(|_| "code address does not fit in usize".to_string())?;
    ram.write_byte(code_offset, HLT)?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("cannot create a VM: {e}"))?;

    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: u64::try_from(GUEST_RAM_BYTES)
            .map_err(|_| "guest RAM size does not fit in u64".to_string())?,
        userspace_addr: ram.host_addr(),
    };
    // SAFETY: the region describes the live mapping owned by `ram`, which is
    // dropped only after `vm` (declared later, so dropped earlier), and no
    // other memslot overlaps it.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("cannot add the RAM memslot: {e}"))?;

    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("cannot create vCPU 0: {e}"))?;

    // Real mode with CS base 0, so RIP is the linear and guest-physical
    // address of the `hlt`.
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("cannot read special registers: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("cannot write special registers: {e}"))?;

    let mut regs = vcpu
        .get_regs()
        .map_err(|e| format!("cannot read registers: {e}"))?;
    regs.rip = CODE_GPA;
    // Bit 1 of RFLAGS is reserved and must be set.
    regs.rflags = 0x2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("cannot write registers: {e}"))?;

    match vcpu.run().map_err(|e| format!("KVM_RUN failed: {e}"))? {
        VcpuExit::Hlt => Ok(()),
        other => Err(format!("expected a HLT exit, got {other:?}")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nacre-bare-vm: {message}");
            ExitCode::FAILURE
        }
    }
}
