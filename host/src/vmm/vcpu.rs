//! A vCPU as exit handlers see it ([`Vcpu`]: registers, address translation,
//! exceptions), its KVM implementation, and the loop that runs it: `KVM_RUN`, decode
//! the exit once ([`Exit::decode`], or [`hardware::decode_run`] for the exits
//! kvm-ioctls leaves undecoded), hand it to [`handle_exit`].

use crate::exits::{handle_exit, hardware, Exit, RunError};
use crate::platform::{Platform, Stop};
use crate::vmm::uapi::RunArea;
use kvm_bindings::kvm_regs;
use kvm_ioctls::{VcpuExit, VcpuFd};

/// What exit handlers may read and change of the vCPU that exited. Handlers take a
/// `&mut dyn Vcpu`, so tests give them a fake one and no `/dev/kvm` is needed.
pub trait Vcpu {
    /// The vCPU's index (0 for the boot processor).
    fn index(&self) -> u32;
    /// The general-purpose registers, RIP and RFLAGS.
    fn regs(&self) -> Result<kvm_regs, RunError>;
    /// Set them; the guest resumes with these values.
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), RunError>;
    /// Translate a guest-virtual address through the guest's page tables: the
    /// guest-physical address (with the platform's C-bit or shared bit as the guest's
    /// page tables have it), or `None` if nothing maps it.
    fn translate(&self, gva: u64) -> Result<Option<u64>, RunError>;
    /// Inject exception `vector` (without an error code) before the guest resumes.
    fn inject_exception(&mut self, vector: u8) -> Result<(), RunError>;
}

/// A KVM vCPU.
#[derive(Debug)]
pub struct KvmVcpu<'a> {
    fd: &'a VcpuFd,
    index: u32,
}

impl<'a> KvmVcpu<'a> {
    /// The vCPU behind `fd`, number `index`.
    pub fn new(fd: &'a VcpuFd, index: u32) -> Self {
        Self { fd, index }
    }
}

impl Vcpu for KvmVcpu<'_> {
    fn index(&self) -> u32 {
        self.index
    }

    fn regs(&self) -> Result<kvm_regs, RunError> {
        Ok(self.fd.get_regs()?)
    }

    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), RunError> {
        Ok(self.fd.set_regs(regs)?)
    }

    fn translate(&self, gva: u64) -> Result<Option<u64>, RunError> {
        let t = self.fd.translate_gva(gva)?;
        Ok((t.valid != 0).then_some(t.physical_address))
    }

    fn inject_exception(&mut self, vector: u8) -> Result<(), RunError> {
        let mut events = self.fd.get_vcpu_events()?;
        events.exception.injected = 1;
        events.exception.nr = vector;
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        Ok(self.fd.set_vcpu_events(&events)?)
    }
}

/// The vCPU of an exit whose data still lives in `kvm_run` (MMIO, MSR, port reads,
/// hypercalls): their handlers need no registers, and KVM's run area cannot be
/// borrowed while the registers are read. Asking for them is a host bug.
#[derive(Debug)]
pub struct Busy {
    index: u32,
}

impl Busy {
    /// vCPU `index`.
    pub fn new(index: u32) -> Self {
        Self { index }
    }

    fn refuse<T>(&self) -> Result<T, RunError> {
        Err(RunError::Host(
            "an exit handler asked for the registers of an exit that carries its data in kvm_run",
        ))
    }
}

impl Vcpu for Busy {
    fn index(&self) -> u32 {
        self.index
    }
    fn regs(&self) -> Result<kvm_regs, RunError> {
        self.refuse()
    }
    fn set_regs(&mut self, _: &kvm_regs) -> Result<(), RunError> {
        self.refuse()
    }
    fn translate(&self, _: u64) -> Result<Option<u64>, RunError> {
        self.refuse()
    }
    fn inject_exception(&mut self, _: u8) -> Result<(), RunError> {
        self.refuse()
    }
}

/// Run vCPU `fd` (number `index`) of the guest `platform` serves until the guest stops.
///
/// With `NACRE_PROFILE=FILE` the loop also samples the guest's RIP every 100 us
/// (a timer signal interrupts `KVM_RUN`) and writes `rip count` lines to FILE: a
/// developer aid for finding where guest time goes when no exit marks it.
pub fn run(fd: &mut VcpuFd, index: u32, platform: &mut dyn Platform) -> Result<Stop, RunError> {
    let profile = std::env::var_os("NACRE_PROFILE").map(std::path::PathBuf::from);
    let mut profiler = profile.as_ref().map(|_| Profiler::start());
    let result = loop {
        let exit = match fd.run() {
            // Exits kvm-ioctls does not decode (KVM_EXIT_TDX, ...): read from kvm_run.
            Ok(VcpuExit::Unsupported(reason)) => {
                hardware::decode_run(reason, RunArea::of(fd.get_kvm_run()))
            }
            Ok(exit) => Exit::decode(exit),
            Err(e) if e.errno() == libc::EINTR => Exit::Interrupted,
            Err(e) => break Err(RunError::Kvm(e)),
        };
        let handled = match exit.detach() {
            Ok(Exit::Interrupted) => {
                if let Some(p) = profiler.as_mut() {
                    p.sample(fd, platform);
                }
                Ok(None)
            }
            Ok(exit) => {
                if matches!(exit, Exit::InternalError) && std::env::var_os("NACRE_DEBUG").is_some()
                {
                    dump_internal_error(fd);
                }
                handle_exit(platform, &mut KvmVcpu::new(fd, index), exit)
            }
            Err(exit) => handle_exit(platform, &mut Busy::new(index), exit),
        };
        match handled {
            Ok(Some(stop)) => break Ok(stop),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    if let (Some(path), Some(p)) = (profile, profiler) {
        p.write(&path)?;
    }
    result
}

/// KVM's description of an emulation failure (`NACRE_DEBUG`).
fn dump_internal_error(fd: &mut VcpuFd) {
    eprintln!("{:#x?}", fd.get_sregs());
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union's
    // active member.
    let internal = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    eprintln!(
        "internal error suberror {} data {:x?}",
        internal.suberror,
        &internal.data[..n]
    );
}

/// Samples of the guest's RIP (and its caller) while `NACRE_PROFILE` is set.
struct Profiler {
    sampler: Sampler,
    samples: std::collections::BTreeMap<u64, u64>,
    callers: std::collections::BTreeMap<(u64, u64), u64>,
}

impl Profiler {
    fn start() -> Self {
        Self {
            sampler: Sampler::start(),
            samples: Default::default(),
            callers: Default::default(),
        }
    }

    fn sample(&mut self, fd: &VcpuFd, platform: &dyn Platform) {
        let Ok(regs) = fd.get_regs() else { return };
        *self.samples.entry(regs.rip).or_insert(0) += 1;
        // Also the caller of the sampled function, for attributing time in helpers.
        let Ok(t) = fd.translate_gva(regs.rsp) else {
            return;
        };
        let (_, gpa) = platform.view_of(t.physical_address);
        let mut word = [0u8; 16];
        if t.valid != 0 && platform.memory().read(gpa, &mut word).is_ok() {
            // Frame pointers: [rsp] is the saved RBP in a function's body,
            // [rsp + 8] its return address.
            let mut ret = [0u8; 8];
            ret.copy_from_slice(&word[8..]);
            let ret = u64::from_le_bytes(ret);
            *self.callers.entry((regs.rip, ret)).or_insert(0) += 1;
        }
    }

    fn write(self, path: &std::path::Path) -> Result<(), RunError> {
        self.sampler.stop();
        let mut text: String = self
            .samples
            .iter()
            .map(|(rip, n)| format!("{rip:#x} {n}\n"))
            .collect();
        text += "# rip, caller, count\n";
        text += &self
            .callers
            .iter()
            .map(|((rip, ret), n)| format!("# {rip:#x} {ret:#x} {n}\n"))
            .collect::<String>();
        std::fs::write(path, text).map_err(RunError::Profile)
    }
}

/// A thread that sends the vCPU thread a signal every 100 us.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

extern "C" fn on_sample_signal(_: libc::c_int) {}

impl Sampler {
    fn start() -> Self {
        // SAFETY: installs a handler that does nothing, so the signal only interrupts
        // KVM_RUN (EINTR); SA_RESTART is not set on purpose.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sample_signal as *const () as usize;
            libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
        }
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_micros(100));
                // SAFETY: the target thread outlives this one (joined in `stop`).
                unsafe { libc::pthread_kill(target, libc::SIGUSR2) };
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
