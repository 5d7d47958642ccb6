//! CPUID on SEV-SNP hardware. In an SEV-ES or SEV-SNP guest the CPUID instruction
//! raises #VC (vector 29, error code the SVM exit code 0x72) instead of exiting to
//! the hypervisor, and the guest answers it itself. The answer comes from the measured
//! CPUID page (docs/specs.md 4.7), whose values the security processor checked against
//! the CPU, never from the hypervisor: the same source the entry code took the C-bit
//! from. The firmware's own CPUIDs and the app's (from ring 3) come here alike.
//!
//! The answer follows the page the way Linux's `snp_cpuid` does
//! (`arch/x86/coco/sev/`): an entry for the leaf and subleaf, or for the leaf alone
//! when the page lists it only once with subleaf 0; zeros for a leaf the page does not
//! list. Three values depend on the guest's own state and are computed, not taken:
//! CPUID 1 ECX.OSXSAVE (bit 27) is CR4.OSXSAVE, CPUID 7 ECX.OSPKE (bit 4) is CR4.PKE,
//! and CPUID 0xD subleaves 0 and 1 EBX are the XSAVE area sizes for the features
//! XCR0 enables. On the emulated platform CPUID never raises #VC, so this code runs
//! only on hardware; its tests drive it with synthetic pages and frames.

use crate::arch::idt::TrapFrame;
use crate::mem::phys_to_virt;
use nacre_shared_abi::layout::SNP_CPUID_PAGE_GPA;
use nacre_shared_abi::snp::cpuid_page::{CpuidPage, CpuidPageEntry, CPUID_PAGE_MAX_ENTRIES};

/// #VC, the VMM communication exception (AMD APM vol. 2, 8.2.21).
pub const VC_VECTOR: u64 = 29;
/// Its error code for CPUID: VMEXIT_CPUID (AMD APM vol. 2, appendix C).
pub const EXIT_CPUID: u64 = 0x72;

/// CR4.OSXSAVE (bit 18) and CR4.PKE (bit 22): AMD APM vol. 2, 3.1.3.
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;
/// The legacy XSAVE area and the XSAVE header (Intel SDM vol. 1, 13.4).
const XSAVE_LEGACY_AND_HEADER: u32 = 512 + 64;

/// The guest state CPUID's answer depends on.
#[derive(Debug, Clone, Copy)]
pub struct GuestState {
    /// CR4.
    pub cr4: u64,
    /// XCR0 (1, x87 only, while CR4.OSXSAVE is clear).
    pub xcr0: u64,
}

/// CPUID(`leaf`, `subleaf`) as EAX, EBX, ECX, EDX from the `count` entries `entry`
/// gives (module documentation).
pub fn answer(
    count: usize,
    entry: impl Fn(usize) -> CpuidPageEntry,
    leaf: u32,
    subleaf: u32,
    state: GuestState,
) -> [u32; 4] {
    let count = count.min(CPUID_PAGE_MAX_ENTRIES);
    let find = |leaf: u32, subleaf: u32| -> Option<CpuidPageEntry> {
        let mut only: Option<CpuidPageEntry> = None;
        let mut entries_of_leaf = 0;
        for e in (0..count).map(&entry).filter(|e| e.eax_in == leaf) {
            if e.ecx_in == subleaf {
                return Some(e);
            }
            entries_of_leaf += 1;
            only = Some(e);
        }
        only.filter(|e| entries_of_leaf == 1 && e.ecx_in == 0)
    };
    let Some(e) = find(leaf, subleaf) else {
        return [0; 4];
    };
    let mut out = [e.eax, e.ebx, e.ecx, e.edx];
    match (leaf, subleaf) {
        (1, _) => {
            out[2] = (out[2] & !(1 << 27)) | (u32::from(state.cr4 & CR4_OSXSAVE != 0) << 27);
        }
        (7, 0) => {
            out[2] = (out[2] & !(1 << 4)) | (u32::from(state.cr4 & CR4_PKE != 0) << 4);
        }
        (0xD, 0 | 1) => {
            // Components 2 and up, each described by subleaf i: EAX its size, EBX its
            // offset in the standard format (Intel SDM vol. 1, 13.2).
            let mut standard = XSAVE_LEGACY_AND_HEADER;
            let mut compacted = XSAVE_LEGACY_AND_HEADER;
            for i in 2..63 {
                if state.xcr0 & (1 << i) == 0 {
                    continue;
                }
                if let Some(c) = find(0xD, i) {
                    standard = standard.max(c.ebx.saturating_add(c.eax));
                    compacted = compacted.saturating_add(c.eax);
                }
            }
            out[1] = if subleaf == 0 { standard } else { compacted };
        }
        _ => {}
    }
    out
}

/// The CPUID bits whose value from the instruction must be the measured page's, as
/// (leaf, subleaf, register, mask), the register 0 to 3 for EAX to EDX: the SEV
/// features and the C-bit position (0x8000_001F EAX and EBX 5:0), which decide where
/// private memory is. Features the firmware turns on from the instruction's answer
/// (XSAVE, AVX, the TSC-deadline timer) are not compared: a host that lies about them
/// makes an instruction fault, which denies service and exposes nothing, and a host
/// whose virtual CPU answers CPUID from the processor rather than from the table it
/// was given reports more of them than the page.
pub const RELIED_ON: [(u32, u32, usize, u32); 2] =
    [(0x8000_001F, 0, 0, u32::MAX), (0x8000_001F, 0, 1, 0x3F)];

/// The first leaf of [`RELIED_ON`] on which the CPUID instruction (`live`) and the
/// page (`count` entries, `entry` gives each) disagree, if any. On SEV-SNP hardware
/// the instruction is answered from the page ([`handle_cpuid`]) and they always
/// agree; on the emulated platform the instruction reaches the host, which may
/// contradict the page the security processor measured.
pub fn contradiction(
    count: usize,
    entry: impl Fn(usize) -> CpuidPageEntry,
    live: impl Fn(u32, u32) -> [u32; 4],
    state: GuestState,
) -> Option<u32> {
    RELIED_ON
        .iter()
        .find(|&&(leaf, subleaf, reg, mask)| {
            let page = answer(count, &entry, leaf, subleaf, state);
            (page[reg] ^ live(leaf, subleaf)[reg]) & mask != 0
        })
        .map(|&(leaf, ..)| leaf)
}

/// Answer a #VC raised by CPUID (`frame` is the interrupted context, ring 0 or 3)
/// from the CPUID page and resume after the instruction. `false` if `frame` is not
/// such a #VC.
pub fn handle_cpuid(frame: &mut TrapFrame) -> bool {
    if frame.vector != VC_VECTOR || frame.error_code != EXIT_CPUID {
        return false;
    }
    let state = current_state();
    let page = phys_to_virt(SNP_CPUID_PAGE_GPA) as *const CpuidPage;
    // SAFETY: the CPUID page is a launch page, private and validated, mapped at
    // `phys_to_virt` before and after the switch to the direct map; it is read, never
    // referenced, one field at a time.
    let count = unsafe { core::ptr::addr_of!((*page).count).read() } as usize;
    let entry = |i: usize| {
        // SAFETY: as above; `i` < CPUID_PAGE_MAX_ENTRIES (`answer` bounds it).
        unsafe { core::ptr::addr_of!((*page).entries[i]).read() }
    };
    let [eax, ebx, ecx, edx] = answer(count, entry, frame.rax as u32, frame.rcx as u32, state);
    // CPUID writes the 32-bit registers, which clears their upper halves.
    (frame.rax, frame.rbx, frame.rcx, frame.rdx) = (eax.into(), ebx.into(), ecx.into(), edx.into());
    // CPUID is 0F A2.
    frame.rip += 2;
    true
}

/// CR4 and XCR0 now.
#[cfg(not(any(test, feature = "fuzzing")))]
pub fn current_state() -> GuestState {
    use x86_64::registers::control::Cr4;
    use x86_64::registers::xcontrol::XCr0;
    let cr4 = Cr4::read_raw();
    let xcr0 = if cr4 & CR4_OSXSAVE != 0 {
        XCr0::read_raw()
    } else {
        1
    };
    GuestState { cr4, xcr0 }
}

/// Host unit tests cannot read control registers: a fixed state.
#[cfg(any(test, feature = "fuzzing"))]
pub fn current_state() -> GuestState {
    GuestState {
        cr4: CR4_OSXSAVE,
        xcr0: 0b111,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn e(eax_in: u32, ecx_in: u32, out: [u32; 4]) -> CpuidPageEntry {
        CpuidPageEntry {
            eax_in,
            ecx_in,
            eax: out[0],
            ebx: out[1],
            ecx: out[2],
            edx: out[3],
            ..Default::default()
        }
    }

    fn page() -> Vec<CpuidPageEntry> {
        vec![
            e(0, 0, [0x10, 0x6874_7541, 0x444D_4163, 0x6974_6E65]),
            // OSXSAVE set in the page; the answer follows CR4 instead.
            e(1, 0, [0xA00F11, 0x800, 1 << 27 | 1, 0x178B_FBFF]),
            e(7, 0, [0, 0x219C_91A9, 1 << 4, 0]),
            e(7, 1, [0x20, 0, 0, 0]),
            e(0xD, 0, [0x7, 0x9999, 0, 0]),
            e(0xD, 1, [0xF, 0x9999, 0, 0]),
            e(0xD, 2, [256, 576, 0, 0]),
            e(0x4000_0000, 0, [0x4000_0001, 1, 2, 3]),
            e(0x8000_001F, 0, [0x1B, 0x1_6F33, 0, 0]),
        ]
    }

    fn ask(leaf: u32, subleaf: u32, state: GuestState) -> [u32; 4] {
        let p = page();
        answer(p.len(), |i| p[i], leaf, subleaf, state)
    }

    const PLAIN: GuestState = GuestState { cr4: 0, xcr0: 1 };

    #[test]
    fn a_cpu_that_agrees_with_the_page_on_where_private_memory_is_is_no_contradiction() {
        let p = page();
        let honest = |leaf, subleaf| answer(p.len(), |i| p[i], leaf, subleaf, PLAIN);
        assert_eq!(contradiction(p.len(), |i| p[i], honest, PLAIN), None);
        // Features the firmware turns on from the instruction's answer may differ, as
        // may 0x8000_001F EBX above the C-bit.
        let more_features = |leaf, subleaf| {
            let mut r = honest(leaf, subleaf);
            match leaf {
                1 => r[2] ^= 1 << 26 | 1 << 28,
                7 => r[1] ^= 1 << 16,
                0x8000_001F => r[1] ^= 1 << 6,
                _ => {}
            }
            r
        };
        assert_eq!(contradiction(p.len(), |i| p[i], more_features, PLAIN), None);
    }

    #[test]
    fn another_c_bit_or_sev_feature_than_the_page_is_a_contradiction() {
        let p = page();
        let honest = |leaf, subleaf| answer(p.len(), |i| p[i], leaf, subleaf, PLAIN);
        for (reg, bit) in [(1, 1 << 0), (1, 1 << 5), (0, 1 << 4), (0, 1 << 1)] {
            let lying = |l, s| {
                let mut r = honest(l, s);
                if l == 0x8000_001F {
                    r[reg] ^= bit;
                }
                r
            };
            assert_eq!(
                contradiction(p.len(), |i| p[i], lying, PLAIN),
                Some(0x8000_001F),
                "register {reg}, bit {bit:#x}"
            );
        }
    }

    #[test]
    fn leaves_come_from_the_page_by_leaf_and_subleaf() {
        assert_eq!(
            ask(0, 0, PLAIN),
            [0x10, 0x6874_7541, 0x444D_4163, 0x6974_6E65]
        );
        assert_eq!(ask(0x8000_001F, 0, PLAIN), [0x1B, 0x1_6F33, 0, 0]);
        // A leaf listed once with subleaf 0 answers every subleaf; one with subleaves
        // answers only those it lists.
        assert_eq!(ask(0x8000_001F, 5, PLAIN), [0x1B, 0x1_6F33, 0, 0]);
        assert_eq!(ask(7, 1, PLAIN), [0x20, 0, 0, 0]);
        assert_eq!(ask(7, 2, PLAIN), [0; 4]);
        // Unlisted leaves are zeros; the hypervisor is never asked.
        assert_eq!(ask(0x8000_0008, 0, PLAIN), [0; 4]);
        assert_eq!(ask(0x4000_0000, 0, PLAIN), [0x4000_0001, 1, 2, 3]);
    }

    #[test]
    fn the_guests_own_state_is_reported_from_the_guest() {
        assert_eq!(ask(1, 0, PLAIN)[2], 1);
        let xsave = GuestState {
            cr4: CR4_OSXSAVE | CR4_PKE,
            xcr0: 0b111,
        };
        assert_eq!(ask(1, 0, xsave)[2], 1 << 27 | 1);
        assert_eq!(ask(7, 0, PLAIN)[2], 0);
        assert_eq!(ask(7, 0, xsave)[2], 1 << 4);
        // x87 and SSE only: the legacy area and the header; with AVX: up to its end.
        assert_eq!(ask(0xD, 0, PLAIN)[1], 576);
        assert_eq!(ask(0xD, 0, xsave)[1], 832);
        assert_eq!(ask(0xD, 1, xsave)[1], 832);
        assert_eq!(ask(0xD, 0, xsave)[0], 7, "EAX stays the page's");
    }

    #[test]
    fn a_vc_for_cpuid_is_answered_from_the_page_in_guest_memory() {
        let mut ram = vec![0u8; 0x10_000];
        crate::mem::set_test_phys_base(ram.as_mut_ptr() as u64);
        let mut p = CpuidPage::new_zeroed();
        let entries = page();
        p.count = entries.len() as u32;
        p.entries[..entries.len()].copy_from_slice(&entries);
        let at = SNP_CPUID_PAGE_GPA as usize;
        ram[at..at + 4096].copy_from_slice(zerocopy::IntoBytes::as_bytes(&p));
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
            rcx: 0xFFFF_FFFF_0000_0000,
            rbx: u64::MAX,
            rax: 0xDEAD_0000_8000_001F,
            vector: VC_VECTOR,
            error_code: EXIT_CPUID,
            rip: 0x40_1000,
            cs: 0x2B,
            rflags: 0x202,
            rsp: 0,
            ss: 0x23,
        };
        assert!(handle_cpuid(&mut frame));
        assert_eq!(
            (frame.rax, frame.rbx, frame.rcx, frame.rdx),
            (0x1B, 0x1_6F33, 0, 0)
        );
        assert_eq!(frame.rip, 0x40_1002);
        // Any other #VC, or another exception, is not this handler's.
        frame.error_code = 0x7B;
        assert!(!handle_cpuid(&mut frame));
        frame.error_code = EXIT_CPUID;
        frame.vector = 13;
        assert!(!handle_cpuid(&mut frame));
    }
}
