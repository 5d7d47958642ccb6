//! A vCPU as exit handlers see it ([`Vcpu`]: registers, address translation,
//! exceptions), its KVM implementation, and the loop that runs each vCPU on a host
//! thread of its own ([`run`]): `KVM_RUN`, decode the exit once ([`Exit::decode`], or
//! [`hardware::decode_run`] for the exits kvm-ioctls leaves undecoded), hand it to
//! [`handle_exit`] with the platform locked.

use crate::exits::{handle_exit, hardware, Exit, RunError};
use crate::platform::{Platform, Stop};
use crate::vmm::uapi::RunArea;
use kvm_bindings::kvm_regs;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

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
    /// Read (`write` = `None`) or write MSR `index` of this vCPU in KVM, as the
    /// hypervisor does when it emulates a guest's RDMSR/WRMSR (the local APIC's
    /// registers, which KVM emulates): `Ok(Some(value))` (0 for a write), or
    /// `Ok(None)` when KVM refuses it.
    fn msr(&mut self, index: u32, write: Option<u64>) -> Result<Option<u64>, RunError>;
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

    fn msr(&mut self, index: u32, write: Option<u64>) -> Result<Option<u64>, RunError> {
        let entry = kvm_bindings::kvm_msr_entry {
            index,
            data: write.unwrap_or(0),
            ..Default::default()
        };
        let mut msrs = kvm_bindings::Msrs::from_entries(&[entry])
            .map_err(|_| RunError::Host("one MSR entry"))?;
        // KVM_GET_MSRS and KVM_SET_MSRS return how many entries they did: 0 is a
        // refusal (the MSR or the value), not an error of the call.
        let done = match write {
            Some(_) => self.fd.set_msrs(&msrs)?,
            None => self.fd.get_msrs(&mut msrs)?,
        };
        Ok((done == 1).then(|| write.map_or(msrs.as_slice()[0].data, |_| 0)))
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
    fn msr(&mut self, _: u32, _: Option<u64>) -> Result<Option<u64>, RunError> {
        self.refuse()
    }
}

/// Run the vCPUs `fds` (vCPU `i` at index `i`) of the guest `platform` serves until
/// the guest stops, each on a host thread of its own: vCPU 0, the boot processor, on
/// the calling thread, every other on a thread this call starts and joins before it
/// returns, so that no thread outlives it.
///
/// A thread runs its vCPU (`KVM_RUN`) without holding the platform and locks it only to
/// handle an exit. The first exit whose handling ends in a [`Stop`] or an error (or a
/// failed `KVM_RUN`) is the run's result; every other thread is then stopped at once:
/// a stop flag, `immediate_exit` in its `kvm_run` and the signal [`KICK_SIGNAL`], whose
/// handler (installed for the whole process when there is more than one vCPU) does
/// nothing, so that `KVM_RUN` returns `EINTR`. An exit handler that blocks (a hostcall
/// that sleeps or waits for input) holds the platform meanwhile, so the other vCPUs'
/// exits wait for it; their guest code runs on.
///
/// With `NACRE_PROFILE=FILE` the loop also samples vCPU 0's RIP every 100 us
/// (a timer signal interrupts `KVM_RUN`) and writes `rip count` lines to FILE: a
/// developer aid for finding where guest time goes when no exit marks it.
pub fn run(fds: &mut [VcpuFd], platform: &mut dyn Platform) -> Result<Stop, RunError> {
    if fds.len() > 1 {
        install_kick_handler()?;
    }
    let runs = fds
        .iter_mut()
        .map(|fd| {
            // A previous run may have left it set.
            fd.set_kvm_immediate_exit(0);
            std::ptr::from_mut(fd.get_kvm_run()) as usize
        })
        .collect();
    let shared = Shared {
        platform: Mutex::new(platform),
        stop: AtomicBool::new(false),
        result: OnceLock::new(),
        runs,
        threads: Mutex::new(vec![None; fds.len()]),
    };
    let Some((bsp, aps)) = fds.split_first_mut() else {
        return Err(RunError::Host("a VM without vCPUs"));
    };
    let profile = std::env::var_os("NACRE_PROFILE").map(std::path::PathBuf::from);
    if let Some(path) = &profile {
        crate::files::check_output(path).map_err(RunError::Profile)?;
    }
    let mut profiler = profile.as_ref().map(|_| Profiler::start());
    std::thread::scope(|scope| {
        let mut threads = Vec::with_capacity(aps.len());
        for (fd, index) in aps.iter_mut().zip(1u32..) {
            let shared = &shared;
            let thread = std::thread::Builder::new()
                .name(format!("nacre-vcpu{index}"))
                .spawn_scoped(scope, move || shared.run_vcpu(fd, index, None));
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    shared.finish(0, Err(RunError::Thread(e)));
                    break;
                }
            }
        }
        shared.run_vcpu(bsp, 0, profiler.as_mut());
        for thread in threads {
            // A thread that panicked has recorded that as the result (`Running`).
            let _ = thread.join();
        }
    });
    if let (Some(path), Some(p)) = (profile, profiler) {
        p.write(&path)?;
    }
    shared
        .result
        .into_inner()
        .unwrap_or(Err(RunError::Host("every vCPU stopped without a result")))
}

/// The signal that kicks a vCPU thread out of `KVM_RUN` when the run ends on another
/// (the profiler uses `SIGUSR2`).
pub const KICK_SIGNAL: libc::c_int = libc::SIGUSR1;

extern "C" fn on_kick_signal(_: libc::c_int) {}

/// Install [`KICK_SIGNAL`]'s handler, once for the process.
fn install_kick_handler() -> Result<(), RunError> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        // SAFETY: installs a handler that does nothing (so it is async-signal-safe), so
        // the signal only interrupts a blocking system call such as KVM_RUN (EINTR);
        // SA_RESTART is not set on purpose. `sa` is fully initialized (zeroed, an
        // empty mask).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(KICK_SIGNAL, &sa, std::ptr::null_mut()) == 0
        }
    });
    if installed {
        Ok(())
    } else {
        Err(RunError::Host(
            "the handler of the signal that stops vCPU threads could not be installed",
        ))
    }
}

/// What the vCPU threads of one run share.
struct Shared<'p> {
    /// The platform; a thread holds the lock while it handles an exit.
    platform: Mutex<&'p mut dyn Platform>,
    /// Set once `result` is: every thread leaves its loop.
    stop: AtomicBool,
    /// The run's result: the first thread to set it wins.
    result: OnceLock<Result<Stop, RunError>>,
    /// Each vCPU's `kvm_run` (the address of its mapping), at the vCPU's index.
    runs: Vec<usize>,
    /// The thread running each vCPU, while it runs it, at the vCPU's index.
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
}

impl Shared<'_> {
    /// End the run with `result` from vCPU `me`'s thread, unless another thread's
    /// result came first, and stop every other thread: the stop flag for one that is
    /// about to enter `KVM_RUN` or handling an exit, `immediate_exit` for one that
    /// checked the flag just before it was set (KVM_RUN then returns at once), and
    /// [`KICK_SIGNAL`] for one in the guest or in a blocking call.
    fn finish(&self, me: usize, result: Result<Stop, RunError>) {
        if self.result.set(result).is_err() {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        for (index, &run) in self.runs.iter().enumerate() {
            if index != me {
                let run = run as *mut kvm_bindings::kvm_run;
                // SAFETY: `run` is vCPU `index`'s kvm_run mapping, which its `VcpuFd`
                // keeps mapped; `run` (the function) borrows the VcpuFds for longer than
                // any thread can call this, so the pointer is valid. The one byte is
                // written volatile because KVM, not this program, reads it (at the next
                // KVM_RUN); the owning thread never reads or writes that byte while the
                // threads run (it decodes exits from other fields), so the write races
                // with nothing. Writing it from another thread or a signal handler is
                // how KVM means it to be used (Linux Documentation/virt/kvm/api.rst,
                // "immediate_exit").
                unsafe {
                    std::ptr::write_volatile(std::ptr::addr_of_mut!((*run).immediate_exit), 1)
                };
            }
        }
        let threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, thread) in threads.iter().enumerate() {
            if let (true, Some(thread)) = (index != me, thread) {
                // SAFETY: a thread deregisters itself under this lock before it ends
                // (`Running`), so `thread` is alive while the lock is held.
                unsafe { libc::pthread_kill(*thread, KICK_SIGNAL) };
            }
        }
    }

    /// Whether the run is over.
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Handle something with the platform locked. A thread that panicked while it held
    /// the lock poisoned it: an error, not a second panic.
    fn with_platform<T>(
        &self,
        f: impl FnOnce(&mut dyn Platform) -> Result<T, RunError>,
    ) -> Result<T, RunError> {
        let mut platform = self
            .platform
            .lock()
            .map_err(|_| RunError::Host("a vCPU thread panicked while it handled an exit"))?;
        f(&mut **platform)
    }

    /// Run vCPU `fd` (number `index`) on this thread until the run ends.
    fn run_vcpu(&self, fd: &mut VcpuFd, index: u32, mut profiler: Option<&mut Profiler>) {
        let me = index as usize;
        let _running = Running::new(self, me);
        loop {
            if self.stopping() {
                return;
            }
            let exit = match fd.run() {
                // Exits kvm-ioctls does not decode (KVM_EXIT_TDX, ...): read from kvm_run.
                Ok(VcpuExit::Unsupported(reason)) => {
                    hardware::decode_run(reason, RunArea::of(fd.get_kvm_run()))
                }
                Ok(exit) => Exit::decode(exit),
                Err(e) if e.errno() == libc::EINTR => Exit::Interrupted,
                Err(e) => return self.finish(me, Err(RunError::Kvm(e))),
            };
            let handled = match exit.detach() {
                Ok(Exit::Interrupted) => {
                    if self.stopping() {
                        return;
                    }
                    if let Some(p) = profiler.as_deref_mut() {
                        if let Ok(platform) = self.platform.lock() {
                            p.sample(fd, &**platform);
                        }
                    }
                    Ok(None)
                }
                Ok(exit) => {
                    if matches!(exit, Exit::InternalError)
                        && std::env::var_os("NACRE_DEBUG").is_some()
                    {
                        dump_internal_error(fd);
                    }
                    self.with_platform(|p| handle_exit(p, &mut KvmVcpu::new(fd, index), exit))
                }
                Err(exit) => self.with_platform(|p| handle_exit(p, &mut Busy::new(index), exit)),
            };
            match handled {
                Ok(None) => {}
                Ok(Some(stop)) => return self.finish(me, Ok(stop)),
                Err(e) => return self.finish(me, Err(e)),
            }
        }
    }
}

/// A thread running a vCPU, registered in [`Shared::threads`] so that it can be kicked,
/// until it drops this. A thread that panics ends the run with a host error, so that
/// the others stop and the run returns.
struct Running<'s, 'p> {
    shared: &'s Shared<'p>,
    index: usize,
}

impl<'s, 'p> Running<'s, 'p> {
    fn new(shared: &'s Shared<'p>, index: usize) -> Self {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[index] = Some(me);
        Self { shared, index }
    }
}

impl Drop for Running<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared
                .finish(self.index, Err(RunError::Host("a vCPU thread panicked")));
        }
        self.shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[self.index] = None;
    }
}

/// KVM's description of an emulation failure (`NACRE_DEBUG`).
fn dump_internal_error(fd: &mut VcpuFd) {
    crate::say!("{:#x?}", fd.get_sregs());
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union's
    // active member.
    let internal = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    crate::say!(
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
        crate::files::write_output(path, text.as_bytes()).map_err(RunError::Profile)
    }
}

/// A thread that sends vCPU 0's thread (the one that starts it) a signal every 100 us.
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

#[cfg(test)]
mod tests {
    //! [`run`] on real KVM vCPUs (these tests need `/dev/kvm`): tiny real-mode guests
    //! whose vCPUs spin, halt or write to a port, and a platform that stops the run
    //! on the port writes it is told to.

    use super::*;
    use crate::mmu::snp::SnpMmu;
    use crate::mmu::tdp::Level;
    use crate::mmu::HypervisorMmu;
    use crate::platform::hostcall::HostcallHost;
    use crate::platform::launch::{vm_with_ram, LaunchConfig, SetupError};
    use crate::platform::Vm;
    use crate::stats::RunCounters;
    use crate::vmm::memory::{GuestMemory, View};
    use kvm_ioctls::VmFd;
    use nacre_loader::LoadedImage;
    use nacre_verifier::evidence::Endorsements;
    use nacre_verifier::Evidence;
    use std::collections::BTreeSet;
    use std::time::Duration;

    /// Guest RAM of the test VMs.
    const MEMORY: u64 = 64 << 20;
    /// Where the code is: the pieces of real-mode code below, 16 bytes apart.
    const CODE: u64 = 0x1000;
    /// `jmp $`.
    const SPIN: &[u8] = &[0xEB, 0xFE];
    /// `cli; hlt; jmp` back to the `cli`: blocks in KVM (the local APIC is KVM's).
    const HALT: &[u8] = &[0xFA, 0xF4, 0xEB, 0xFC];
    /// `mov al, 7; out 0x80, al; jmp $`.
    const STOP_7: &[u8] = &[0xB0, 0x07, 0xE6, 0x80, 0xEB, 0xFE];
    /// `out 0x81, al` forever.
    const KNOCK: &[u8] = &[0xE6, 0x81, 0xEB, 0xFC];
    /// `out 0x82, al; jmp $`: a port nothing serves.
    const UNKNOWN_PORT: &[u8] = &[0xE6, 0x82, 0xEB, 0xFE];
    const PIECES: [&[u8]; 5] = [SPIN, HALT, STOP_7, KNOCK, UNKNOWN_PORT];

    /// A platform that knows ports 0x80 (stop with the app's exit status AL) and 0x81
    /// (count the vCPU; stop with status 0 once every running vCPU has knocked).
    #[derive(Debug)]
    struct Ports {
        mem: GuestMemory,
        mmu: SnpMmu,
        run: RunCounters,
        host: HostcallHost,
        cpus: usize,
        knocked: BTreeSet<u32>,
        exited: BTreeSet<u32>,
    }

    impl Platform for Ports {
        fn launch(_: &LoadedImage, _: &LaunchConfig) -> Result<Vm, SetupError> {
            Err(SetupError::Image("a test platform".into()))
        }
        fn exited(&mut self, vcpu: u32) -> Result<(), RunError> {
            self.exited.insert(vcpu);
            Ok(())
        }
        fn name(&self) -> &'static str {
            "ports"
        }
        fn memory(&self) -> &GuestMemory {
            &self.mem
        }
        fn mmu(&self) -> &dyn HypervisorMmu {
            &self.mmu
        }
        fn view_of(&self, gpa: u64) -> (View, u64) {
            (View::Shared, gpa)
        }
        fn strict_memory(&self) -> bool {
            false
        }
        fn run_counters(&mut self) -> &mut RunCounters {
            &mut self.run
        }
        fn counters(&self) -> Vec<(&'static str, u64)> {
            Vec::new()
        }
        fn hostcalls(&self) -> &HostcallHost {
            &self.host
        }
        fn io_out(
            &mut self,
            vcpu: &mut dyn Vcpu,
            port: u16,
            data: &[u8],
        ) -> Result<Option<Stop>, RunError> {
            match port {
                0x80 => Ok(Some(Stop::AppExit(data[0]))),
                0x81 => {
                    self.knocked.insert(vcpu.index());
                    Ok((self.knocked.len() == self.cpus).then_some(Stop::AppExit(0)))
                }
                _ => Err(RunError::Guest(format!("port {port:#x}"))),
            }
        }
        fn endorsements(&mut self, _: &Evidence) -> Result<Endorsements, String> {
            Err("a test platform".into())
        }
    }

    /// A VM whose vCPU `i` runs the code piece `pieces[i]` (an index into [`PIECES`])
    /// in real mode, every AP runnable, as the emulated platforms' launch leaves them.
    fn vm(pieces: &[usize]) -> (VmFd, Vec<VcpuFd>, Ports) {
        let (_kvm, vm, mem) =
            vm_with_ram(MEMORY, [(View::Shared, 0), (View::Private, 1 << 32)]).expect("a VM");
        mem.protect(View::Shared, 0, MEMORY, true).expect("open");
        for (i, piece) in PIECES.iter().enumerate() {
            mem.write(CODE + 16 * i as u64, piece).expect("code");
        }
        let mut vcpus = Vec::new();
        for (index, &piece) in (0u64..).zip(pieces) {
            let fd = vm.create_vcpu(index).expect("a vCPU");
            let mut sregs = fd.get_sregs().expect("sregs");
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            fd.set_sregs(&sregs).expect("sregs");
            let mut regs = fd.get_regs().expect("regs");
            regs.rip = CODE + 16 * piece as u64;
            regs.rflags = 2;
            fd.set_regs(&regs).expect("regs");
            if index > 0 {
                fd.set_mp_state(kvm_bindings::kvm_mp_state {
                    mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
                })
                .expect("runnable");
            }
            vcpus.push(fd);
        }
        let ports = Ports {
            mmu: SnpMmu::new(MEMORY / 4096, Level::L1G),
            mem,
            run: RunCounters::default(),
            host: HostcallHost::default(),
            cpus: pieces.len(),
            knocked: BTreeSet::new(),
            exited: BTreeSet::new(),
        };
        (vm, vcpus, ports)
    }

    /// [`run`] of the first `running` vCPUs of a VM made by [`vm`], which must return
    /// within a few seconds; the platform afterwards.
    fn run_pieces(pieces: &[usize], running: usize) -> (Result<Stop, RunError>, Ports) {
        let pieces = pieces.to_vec();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (_vm, mut vcpus, mut ports) = vm(&pieces);
            ports.cpus = running;
            let stop = run(&mut vcpus[..running], &mut ports);
            let _ = done.send((stop, ports));
        });
        result
            .recv_timeout(Duration::from_secs(20))
            .expect("the run ended")
    }

    const S: usize = 0; // spin
    const H: usize = 1; // halt
    const X: usize = 2; // stop with 7
    const K: usize = 3; // knock
    const U: usize = 4; // unknown port

    #[test]
    fn one_vcpu_runs_on_the_calling_thread_until_it_stops() {
        let (stop, ports) = run_pieces(&[X], 1);
        assert_eq!(stop.expect("a stop"), Stop::AppExit(7));
        assert_eq!(ports.exited, BTreeSet::from([0]));
    }

    #[test]
    fn an_ap_that_stops_the_run_stops_the_spinning_and_halted_others() {
        let (stop, ports) = run_pieces(&[S, H, S, X], 4);
        assert_eq!(stop.expect("a stop"), Stop::AppExit(7));
        assert_eq!(ports.exited, BTreeSet::from([3]), "only vCPU 3 exited");
    }

    #[test]
    fn the_boot_processor_stopping_the_run_stops_the_aps() {
        let (stop, _) = run_pieces(&[X, S, H], 3);
        assert_eq!(stop.expect("a stop"), Stop::AppExit(7));
    }

    #[test]
    fn every_vcpu_runs_at_once_and_its_exits_name_it() {
        let (stop, ports) = run_pieces(&[K, K, K, K], 4);
        assert_eq!(stop.expect("a stop"), Stop::AppExit(0));
        assert_eq!(ports.knocked, BTreeSet::from([0, 1, 2, 3]));
    }

    #[test]
    fn an_error_on_one_vcpu_is_the_runs_result() {
        let (stop, _) = run_pieces(&[S, K, U], 3);
        assert!(
            matches!(stop, Err(RunError::Guest(ref m)) if m.contains("0x82")),
            "{stop:?}"
        );
    }

    #[test]
    fn vcpus_left_out_never_run() {
        // vCPU 1 would stop the run at once; left out, only vCPU 0's knocks count.
        let (stop, ports) = run_pieces(&[K, X], 1);
        assert_eq!(stop.expect("a stop"), Stop::AppExit(0));
        assert_eq!(ports.knocked, BTreeSet::from([0]));
        assert_eq!(ports.exited, BTreeSet::from([0]));
    }

    #[test]
    fn runs_end_promptly_again_and_again() {
        // The stop races the others' entry into KVM_RUN: whichever way it goes, every
        // run ends.
        for _ in 0..50 {
            let (stop, _) = run_pieces(&[S, X, S, H], 4);
            assert_eq!(stop.expect("a stop"), Stop::AppExit(7));
        }
    }
}
