//! CPUID in a TD. The TDX module answers the CPUID leaves it virtualizes itself and
//! raises #VE (vector 20) for the rest, the hypervisor range 0x4000_0000 among them
//! (Intel TDX module base spec, "CPUID Virtualization"). The #VE handler asks
//! TDG.VP.VEINFO.GET why, forwards a CPUID to the host with TDG.VP.VMCALL
//! <Instruction.CPUID> (GHCI 1.5, 3.4, as Linux's `handle_cpuid` does: what the host
//! says is what the host may say about those leaves) and resumes after the
//! instruction. The firmware's own CPUIDs and the app's come here alike. On the
//! emulated platform CPUID never raises #VE, so this code runs only in a real TD.

use crate::arch::idt::TrapFrame;

/// #VE, the virtualization exception (Intel SDM vol. 3A, 6.15).
pub const VE_VECTOR: u64 = 20;
/// The VM-exit reason of CPUID (Intel SDM vol. 3C, appendix C), as TDG.VP.VEINFO.GET
/// reports it.
pub const EXIT_REASON_CPUID: u32 = 10;

/// Put CPUID's result into `frame` and step over the instruction (`len` bytes, as the
/// #VE information gives it). CPUID writes the 32-bit registers, which clears their
/// upper halves.
pub fn complete_cpuid(frame: &mut TrapFrame, result: [u32; 4], len: u32) {
    let [eax, ebx, ecx, edx] = result;
    (frame.rax, frame.rbx, frame.rcx, frame.rdx) = (eax.into(), ebx.into(), ecx.into(), edx.into());
    frame.rip += u64::from(len);
}

/// Answer a #VE raised by CPUID. `false` if `frame` is not a #VE, or not one for
/// CPUID, or the host does not answer: the exception is then fatal as any other.
#[cfg(not(any(test, feature = "fuzzing")))]
pub fn handle_cpuid(frame: &mut TrapFrame) -> bool {
    if frame.vector != VE_VECTOR {
        return false;
    }
    let Ok(info) = tdx_guest::tdcall::get_veinfo() else {
        return false;
    };
    // CPUID is two bytes; anything else is not an answer this handler can give.
    if info.exit_reason != EXIT_REASON_CPUID || info.exit_instruction_length != 2 {
        return false;
    }
    let Ok(r) = tdx_guest::tdvmcall::cpuid(frame.rax as u32, frame.rcx as u32) else {
        return false;
    };
    let result = [r.eax, r.ebx, r.ecx, r.edx].map(|v| v as u32);
    complete_cpuid(frame, result, info.exit_instruction_length);
    true
}

/// Host unit tests have no TD.
#[cfg(any(test, feature = "fuzzing"))]
pub fn handle_cpuid(frame: &mut TrapFrame) -> bool {
    let _ = frame;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_replaces_the_registers_and_steps_over_cpuid() {
        let mut frame = TrapFrame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: u64::MAX,
            rcx: u64::MAX,
            rbx: u64::MAX,
            rax: 0xFFFF_FFFF_4000_0000,
            vector: VE_VECTOR,
            error_code: 0,
            rip: 0xFFFF_FFFF_8010_2000,
            cs: 0x08,
            rflags: 0x2,
            rsp: 0,
            ss: 0x10,
        };
        complete_cpuid(&mut frame, [0x4000_0001, 1, 2, 3], 2);
        assert_eq!(
            (frame.rax, frame.rbx, frame.rcx, frame.rdx),
            (0x4000_0001, 1, 2, 3)
        );
        assert_eq!(frame.rip, 0xFFFF_FFFF_8010_2002);
    }
}
