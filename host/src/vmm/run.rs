//! The vCPU loop: one place decodes KVM exits (kvm-ioctls `VcpuExit`); one function handles each.

use crate::platform::emulated_snp::{EmulatedSnp, C_BIT_MASK};
use crate::platform::emulated_tdx::{EmulatedTdx, SHARED_BIT};
use crate::platform::Stop;
use crate::stats::Stats;
use crate::vmm::memory::{GuestMemory, MemoryError};
use crate::vmm::setup::{Guest, Vm};
use kvm_ioctls::{VcpuExit, VcpuFd};
use nacre_shared_abi::doorbell::Doorbell;

/// Errors that end a run that are the host's fault or KVM's.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// KVM_RUN or a register ioctl failed.
    #[error("KVM failed while running the guest")]
    Kvm(#[from] kvm_ioctls::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The guest did something the platform cannot continue from.
    #[error("the guest stopped unexpectedly: {0}")]
    Guest(String),
}

/// Run until the guest stops.
///
/// With `NACRE_PROFILE=FILE` the loop also samples the guest's RIP every 100 us
/// (a timer signal interrupts `KVM_RUN`) and writes `rip count` lines to FILE: a
/// developer aid for finding where guest time goes when no exit marks it.
pub fn run(vm: &mut Vm) -> Result<Stop, RunError> {
    let profile = std::env::var_os("NACRE_PROFILE").map(std::path::PathBuf::from);
    let sampler = profile.as_ref().map(|_| Sampler::start());
    let mut samples: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let mut callers: std::collections::BTreeMap<(u64, u64), u64> =
        std::collections::BTreeMap::new();
    let result = loop {
        let stepped = match &mut vm.guest {
            Guest::Snp(snp) => step(&mut vm.vcpu, &mut **snp),
            Guest::Tdx(tdx) => step(&mut vm.vcpu, &mut **tdx),
        };
        match stepped {
            Ok(Some(stop)) => break Ok(stop),
            Ok(None) => {}
            Err(RunError::Kvm(e)) if e.errno() == libc::EINTR && sampler.is_some() => {
                let regs = vm.vcpu.get_regs()?;
                *samples.entry(regs.rip).or_insert(0) += 1;
                // Also the caller of the sampled function, for attributing time in helpers.
                if let Ok(t) = vm.vcpu.translate_gva(regs.rsp) {
                    let mut word = [0u8; 16];
                    let (mem, mask) = match &vm.guest {
                        Guest::Snp(snp) => (&snp.mem, C_BIT_MASK),
                        Guest::Tdx(tdx) => (&tdx.mem, SHARED_BIT),
                    };
                    let gpa = t.physical_address & !mask;
                    if t.valid != 0 && mem.read(gpa, &mut word).is_ok() {
                        // Frame pointers: [rsp] is the saved RBP in a function's body,
                        // [rsp + 8] its return address.
                        let mut ret = [0u8; 8];
                        ret.copy_from_slice(&word[8..]);
                        let ret = u64::from_le_bytes(ret);
                        *callers.entry((regs.rip, ret)).or_insert(0) += 1;
                    }
                }
            }
            Err(e) => break Err(e),
        }
    };
    if let (Some(path), Some(s)) = (profile, sampler) {
        s.stop();
        let mut text: String = samples
            .iter()
            .map(|(rip, n)| format!("{rip:#x} {n}\n"))
            .collect();
        text += "# rip, caller, count\n";
        text += &callers
            .iter()
            .map(|((rip, ret), n)| format!("# {rip:#x} {ret:#x} {n}\n"))
            .collect::<String>();
        std::fs::write(&path, text)
            .map_err(|e| RunError::Guest(format!("cannot write the profile: {e}")))?;
    }
    result
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

/// What the exit loop needs from an emulated platform.
trait Platform {
    fn stats(&mut self) -> &mut Stats;
    fn mem(&self) -> &GuestMemory;
    /// The GPA bit that selects the second view (stripped to reach the memfd).
    fn view_bit(&self) -> u64;
    fn memory_fault(&mut self, addr: u64) -> Result<Option<Stop>, MemoryError>;
    fn doorbell(&mut self, vcpu: &mut VcpuFd, bell: Doorbell) -> Result<Option<Stop>, RunError>;
    fn rdmsr(&mut self, index: u32) -> Option<u64>;
    fn wrmsr(&mut self, index: u32, value: u64) -> bool;
    /// KVM could not emulate a guest instruction; `Ok(true)` if the platform handled it.
    fn emulation_failure(&mut self, _vcpu: &mut VcpuFd) -> Result<bool, RunError> {
        Ok(false)
    }
}

impl Platform for EmulatedSnp {
    fn stats(&mut self) -> &mut Stats {
        &mut self.stats
    }
    fn mem(&self) -> &GuestMemory {
        &self.mem
    }
    fn view_bit(&self) -> u64 {
        C_BIT_MASK
    }
    fn memory_fault(&mut self, addr: u64) -> Result<Option<Stop>, MemoryError> {
        EmulatedSnp::memory_fault(self, addr)
    }
    fn doorbell(&mut self, vcpu: &mut VcpuFd, bell: Doorbell) -> Result<Option<Stop>, RunError> {
        snp_doorbell(vcpu, self, bell)
    }
    fn rdmsr(&mut self, index: u32) -> Option<u64> {
        EmulatedSnp::rdmsr(self, index)
    }
    fn wrmsr(&mut self, index: u32, value: u64) -> bool {
        EmulatedSnp::wrmsr(self, index, value)
    }
}

impl Platform for EmulatedTdx {
    fn stats(&mut self) -> &mut Stats {
        &mut self.stats
    }
    fn mem(&self) -> &GuestMemory {
        &self.mem
    }
    fn view_bit(&self) -> u64 {
        SHARED_BIT
    }
    fn memory_fault(&mut self, addr: u64) -> Result<Option<Stop>, MemoryError> {
        EmulatedTdx::memory_fault(self, addr)
    }
    fn doorbell(&mut self, vcpu: &mut VcpuFd, bell: Doorbell) -> Result<Option<Stop>, RunError> {
        match bell {
            Doorbell::Tdcall => {
                self.stats.exit("tdcall");
                let mut regs = vcpu.get_regs()?;
                let stop = self.tdcall(&mut regs)?;
                vcpu.set_regs(&regs)?;
                Ok(stop)
            }
            other => Err(RunError::Guest(format!(
                "{other:?} doorbell on the emulated TDX platform"
            ))),
        }
    }
    fn rdmsr(&mut self, _index: u32) -> Option<u64> {
        None
    }
    fn wrmsr(&mut self, _index: u32, _value: u64) -> bool {
        false
    }
    /// TDCALL outside a TD raises #UD. Where KVM emulates the guest's ring 0 (KVM's
    /// PVM backend), it cannot emulate TDCALL and exits instead of raising it; the
    /// #UD is injected here so the firmware's handler forwards the TDCALL as it does
    /// wherever the CPU raises the #UD itself.
    fn emulation_failure(&mut self, vcpu: &mut VcpuFd) -> Result<bool, RunError> {
        const TDCALL: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];
        let regs = vcpu.get_regs()?;
        let t = vcpu.translate_gva(regs.rip)?;
        let mut insn = [0u8; 4];
        let gpa = t.physical_address & !SHARED_BIT;
        if t.valid == 0 || self.mem.read(gpa, &mut insn).is_err() || insn != TDCALL {
            return Ok(false);
        }
        self.stats.exit("tdcall-ud");
        let mut events = vcpu.get_vcpu_events()?;
        events.exception.injected = 1;
        events.exception.nr = 6; // #UD
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        vcpu.set_vcpu_events(&events)?;
        Ok(true)
    }
}

fn step<P: Platform>(vcpu: &mut VcpuFd, guest: &mut P) -> Result<Option<Stop>, RunError> {
    let exit = vcpu.run()?;
    match exit {
        VcpuExit::IoOut(port, _) => {
            guest.stats().exit("io");
            let Some(bell) = Doorbell::from_port(port) else {
                return Err(RunError::Guest(format!(
                    "write to unknown I/O port {port:#x}"
                )));
            };
            guest.doorbell(vcpu, bell)
        }
        VcpuExit::IoIn(_, data) => {
            // No devices: reads of any port float high.
            guest.stats().exit("io");
            data.fill(0xFF);
            Ok(None)
        }
        VcpuExit::MmioRead(addr, data) => {
            memory_access(guest, addr, |mem, gpa| mem.read(gpa, data))
        }
        VcpuExit::MmioWrite(addr, data) => {
            memory_access(guest, addr, |mem, gpa| mem.write(gpa, data))
        }
        VcpuExit::X86Rdmsr(exit) => {
            guest.stats().exit("msr");
            match guest.rdmsr(exit.index) {
                Some(v) => *exit.data = v,
                None => *exit.error = 1,
            }
            Ok(None)
        }
        VcpuExit::X86Wrmsr(exit) => {
            guest.stats().exit("msr");
            if !guest.wrmsr(exit.index, exit.data) {
                *exit.error = 1;
            }
            Ok(None)
        }
        VcpuExit::Hlt => Err(RunError::Guest("the guest halted".into())),
        VcpuExit::Shutdown => Err(RunError::Guest(
            "the guest shut down (triple fault) — the firmware crashed".into(),
        )),
        VcpuExit::FailEntry(reason, _) => Err(RunError::Guest(format!(
            "KVM could not enter the guest (reason {reason:#x})"
        ))),
        VcpuExit::InternalError => {
            if guest.emulation_failure(vcpu)? {
                return Ok(None);
            }
            let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
            if std::env::var_os("NACRE_DEBUG").is_some() {
                eprintln!("{:#x?}", vcpu.get_sregs());
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active field.
                let internal = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal };
                eprintln!(
                    "internal error suberror {} data {:x?}",
                    internal.suberror,
                    &internal.data[..internal.ndata as usize]
                );
            }
            Err(RunError::Guest(format!(
                "KVM internal error while emulating the guest at RIP {rip:#x}"
            )))
        }
        other => Err(RunError::Guest(format!("unexpected VM exit {other:?}"))),
    }
}

/// A guest access that hit a `PROT_NONE` view: a memory-rule stop, or, if the page
/// has become accessible since (a stale mapping), the access completed on the memfd.
fn memory_access<P: Platform>(
    guest: &mut P,
    addr: u64,
    complete: impl FnOnce(&GuestMemory, u64) -> Result<(), MemoryError>,
) -> Result<Option<Stop>, RunError> {
    guest.stats().exit("npf");
    if let Some(stop) = guest.memory_fault(addr)? {
        return Ok(Some(stop));
    }
    complete(guest.mem(), addr & !guest.view_bit())?;
    Ok(None)
}

/// PVALIDATE / VMGEXIT through the doorbell: operands in the vCPU's registers.
fn snp_doorbell(
    vcpu: &mut VcpuFd,
    snp: &mut EmulatedSnp,
    bell: Doorbell,
) -> Result<Option<Stop>, RunError> {
    match bell {
        Doorbell::Vmgexit => {
            snp.stats.exit("vmgexit");
            Ok(snp.vmgexit()?)
        }
        Doorbell::Pvalidate => {
            snp.stats.exit("pvalidate");
            let mut regs = vcpu.get_regs()?;
            let t = vcpu.translate_gva(regs.rax)?;
            let translated = (t.valid != 0).then_some(t.physical_address);
            let r = match snp.pvalidate(translated, regs.rcx, regs.rdx)? {
                Ok(r) => r,
                Err(stop) => return Ok(Some(stop)),
            };
            regs.rax = u64::from(r.rax);
            regs.rflags = (regs.rflags & !1) | u64::from(r.cf);
            vcpu.set_regs(&regs)?;
            Ok(None)
        }
        Doorbell::Rmpadjust => {
            snp.stats.exit("rmpadjust");
            let mut regs = vcpu.get_regs()?;
            let t = vcpu.translate_gva(regs.rax)?;
            let translated = (t.valid != 0).then_some(t.physical_address);
            let rax = match snp.rmpadjust(translated, regs.rcx, regs.rdx)? {
                Ok(rax) => rax,
                Err(stop) => return Ok(Some(stop)),
            };
            regs.rax = u64::from(rax);
            vcpu.set_regs(&regs)?;
            Ok(None)
        }
        Doorbell::Tdcall => {
            // Not an SNP instruction: answer FAIL_INPUT in EAX.
            let mut regs = vcpu.get_regs()?;
            regs.rax = 1;
            vcpu.set_regs(&regs)?;
            Ok(None)
        }
    }
}
