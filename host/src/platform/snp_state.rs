//! What an SEV-SNP launch hands the guest besides its pages, shared by `emulated-snp`
//! and `snp`: the BSP's registers from the VMSA an image measured, which every vCPU
//! starts with (and the VMSA upstream KVM would measure from them, once per vCPU), and
//! the CPUID page ([`cpuid_page`]).
//!
//! KVM takes no VMSA from user space: at SNP_LAUNCH_UPDATE of the VMSA it builds the
//! page from the vCPU's registers (`arch/x86/kvm/svm/sev.c`, `sev_es_sync_vmsa`) and
//! measures it at GPA 0xFFFF_FFFF_F000. A host that launches an image must therefore
//! set exactly the registers that make KVM build the image's VMSA. [`BspState::from_vmsa`]
//! derives them and refuses a VMSA KVM could not reproduce, naming the first byte that
//! would differ; [`kvm_vmsa`] is the model of `sev_es_sync_vmsa` it checks against
//! (docs/hardware.md, "The VMSA KVM measures"):
//!
//! * the segments and descriptor tables as `KVM_SET_SREGS` sets them, the attribute
//!   bits 0-11 round-tripping through `kvm_segment` (`svm_set_segment`), CPL = SS.DPL;
//! * CR0 and CR3 as set; CR4 with the host's CR4.MCE ORed in (`svm_set_cr4`); EFER with
//!   SVME added (`svm_set_efer`);
//! * every general-purpose register, RIP and RFLAGS as `KVM_SET_REGS` sets them (the
//!   reset value of RDX is the CPU signature, so the host sets all of them);
//! * what a fresh vCPU holds for the rest: XCR0 1 (x87), PAT 0x0007_0406_0007_0406,
//!   DR6 0xFFFF_0FF0, DR7 0x400, x87 FCW 0x37F, MXCSR 0x1F80, all else 0;
//! * `sev_features` = KVM_SEV_INIT2's `vmsa_features` with SNP active (bit 0) added.

use igvm::snp_defs::{SevFeatures, SevSelector, SevVmsa};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_dtable, kvm_regs, kvm_segment, kvm_sregs, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
};
use nacre_shared_abi::snp::cpuid_page::{CpuidPage, CpuidPageEntry, CPUID_PAGE_MAX_ENTRIES};
use zerocopy::{FromZeros, IntoBytes};

/// The CPUID page the host hands the security processor for a vCPU with CPUID
/// `entries` (as `KVM_SET_CPUID2` takes them): the entries that report anything (a leaf
/// of all zeros reads the same when it is absent), in order, with the subleaf where KVM
/// says it matters (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX`, `asm/kvm.h`). The firmware reads
/// the C-bit position from its leaf 0x8000_001F.
pub fn cpuid_page(entries: &[kvm_cpuid_entry2]) -> Result<CpuidPage, String> {
    let used: Vec<CpuidPageEntry> = entries
        .iter()
        .filter(|e| [e.eax, e.ebx, e.ecx, e.edx] != [0; 4])
        .map(|e| CpuidPageEntry {
            eax_in: e.function,
            ecx_in: if e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0 {
                e.index
            } else {
                0
            },
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            ..Default::default()
        })
        .collect();
    if used.len() > CPUID_PAGE_MAX_ENTRIES {
        return Err(format!(
            "the vCPU reports {} CPUID leaves, more than the {CPUID_PAGE_MAX_ENTRIES} a CPUID \
             page holds",
            used.len()
        ));
    }
    let mut page = CpuidPage::new_zeroed();
    page.count = used.len() as u32;
    page.entries[..used.len()].copy_from_slice(&used);
    Ok(page)
}

/// EFER.SVME (AMD APM vol. 2, 3.1.7): KVM sets it in every SEV-ES/SNP VMSA.
pub const EFER_SVME: u64 = 1 << 12;
/// CR4.MCE (AMD APM vol. 2, 3.1.3): KVM ORs the host's into the guest's.
pub const CR4_MCE: u64 = 1 << 6;
/// `sev_features` bit 0, SNPActive (AMD APM vol. 2, 15.35.2).
const SEV_FEATURE_SNP: u64 = 1;

/// Reset values of a fresh KVM vCPU (`arch/x86/kvm/x86.c`, `kvm_vcpu_reset`;
/// `MSR_IA32_CR_PAT_DEFAULT`; `fpstate` initialization).
const XCR0_RESET: u64 = 1;
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
const DR6_RESET: u64 = 0xFFFF_0FF0;
const DR7_RESET: u64 = 0x400;
const X87_FCW_RESET: u16 = 0x37F;
const MXCSR_RESET: u32 = 0x1F80;

/// The BSP's registers as the host sets them with KVM_SET_SREGS and KVM_SET_REGS (on
/// every vCPU: they all start in the BSP's state), and the `vmsa_features` it creates
/// the VM with (KVM_SEV_INIT2).
#[derive(Debug, Clone, Copy)]
pub struct BspState {
    /// KVM_SET_REGS.
    pub regs: kvm_regs,
    /// CS, DS, ES, FS, GS, SS, TR, LDTR.
    pub segments: [kvm_segment; 8],
    /// GDTR.
    pub gdt: kvm_dtable,
    /// IDTR.
    pub idt: kvm_dtable,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (KVM adds the host's MCE).
    pub cr4: u64,
    /// EFER without SVME (KVM adds it).
    pub efer: u64,
    /// KVM_SEV_INIT2 `vmsa_features`: the VMSA's `sev_features` without SNP active.
    pub vmsa_features: u64,
}

/// A VMSA segment (VMCB attribute format, AMD APM vol. 2, 15.5.1) as KVM's.
fn to_kvm(s: &SevSelector) -> kvm_segment {
    let a = s.attrib;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xF) as u8,
        present: bit(7),
        dpl: ((a >> 5) & 3) as u8,
        db: bit(10),
        s: bit(4),
        l: bit(9),
        g: bit(11),
        avl: bit(8),
        unusable: u8::from(bit(7) == 0),
        padding: 0,
    }
}

/// KVM's segment as the VMCB holds it (`svm_set_segment`).
fn to_vmcb(k: &kvm_segment) -> SevSelector {
    let present = k.present & 1 != 0 && k.unusable == 0;
    let attrib = u16::from(k.type_ & 0xF)
        | u16::from(k.s & 1) << 4
        | u16::from(k.dpl & 3) << 5
        | u16::from(present) << 7
        | u16::from(k.avl & 1) << 8
        | u16::from(k.l & 1) << 9
        | u16::from(k.db & 1) << 10
        | u16::from(k.g & 1) << 11;
    SevSelector {
        selector: k.selector,
        attrib,
        limit: k.limit,
        base: k.base,
    }
}

fn dtable(s: &SevSelector) -> kvm_dtable {
    kvm_dtable {
        base: s.base,
        limit: s.limit as u16,
        padding: [0; 3],
    }
}

impl BspState {
    /// The registers that make KVM build `vmsa`, or why no registers do (the first
    /// byte offset at which KVM's VMSA would differ, with both values).
    pub fn from_vmsa(vmsa: &SevVmsa) -> Result<Self, String> {
        let v = vmsa;
        let state = Self {
            regs: kvm_regs {
                rax: v.rax,
                rbx: v.rbx,
                rcx: v.rcx,
                rdx: v.rdx,
                rsi: v.rsi,
                rdi: v.rdi,
                rsp: v.rsp,
                rbp: v.rbp,
                r8: v.r8,
                r9: v.r9,
                r10: v.r10,
                r11: v.r11,
                r12: v.r12,
                r13: v.r13,
                r14: v.r14,
                r15: v.r15,
                rip: v.rip,
                rflags: v.rflags,
            },
            segments: [&v.cs, &v.ds, &v.es, &v.fs, &v.gs, &v.ss, &v.tr, &v.ldtr].map(to_kvm),
            gdt: dtable(&v.gdtr),
            idt: dtable(&v.idtr),
            cr0: v.cr0,
            cr3: v.cr3,
            cr4: v.cr4,
            efer: v.efer & !EFER_SVME,
            vmsa_features: u64::from(v.sev_features) & !SEV_FEATURE_SNP,
        };
        // Every SNP host has CR4.MCE set; a VMSA without it would not be reproduced.
        let rebuilt = kvm_vmsa(&state, true);
        let (want, got) = (v.as_bytes(), rebuilt.as_bytes());
        if let Some(at) = want.iter().zip(got).position(|(a, b)| a != b) {
            return Err(format!(
                "KVM would measure another VMSA than the image's: byte {at:#x} would be \
                 {:#04x}, the image has {:#04x} (KVM builds the VMSA from the vCPU's \
                 registers; see docs/hardware.md)",
                got[at], want[at]
            ));
        }
        Ok(state)
    }

    /// Set the segments, descriptor tables and control registers in `sregs` (read from
    /// the vCPU first, so the rest keeps KVM's values).
    pub fn apply_sregs(&self, sregs: &mut kvm_sregs) {
        let [cs, ds, es, fs, gs, ss, tr, ldt] = self.segments;
        (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (cs, ds, es, fs, gs, ss);
        (sregs.tr, sregs.ldt) = (tr, ldt);
        (sregs.gdt, sregs.idt) = (self.gdt, self.idt);
        (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) = (self.cr0, self.cr3, self.cr4, self.efer);
    }
}

/// The VMSA upstream KVM builds for a fresh vCPU of an SNP VM created with
/// `state.vmsa_features`, after the host set `state` (module documentation), on a host
/// whose CR4.MCE is `host_mce`.
pub fn kvm_vmsa(state: &BspState, host_mce: bool) -> Box<SevVmsa> {
    let mut v = Box::new(SevVmsa::new_zeroed());
    let [cs, ds, es, fs, gs, ss, tr, ldt] = state.segments.each_ref().map(to_vmcb);
    (v.cs, v.ds, v.es, v.fs, v.gs, v.ss, v.tr, v.ldtr) = (cs, ds, es, fs, gs, ss, tr, ldt);
    let table = |t: &kvm_dtable| SevSelector {
        selector: 0,
        attrib: 0,
        limit: u32::from(t.limit),
        base: t.base,
    };
    (v.gdtr, v.idtr) = (table(&state.gdt), table(&state.idt));
    v.cpl = state.segments[5].dpl & 3;
    v.efer = state.efer | EFER_SVME;
    v.cr0 = state.cr0;
    v.cr3 = state.cr3;
    v.cr4 = state.cr4 | if host_mce { CR4_MCE } else { 0 };
    v.dr6 = DR6_RESET;
    v.dr7 = DR7_RESET;
    let r = &state.regs;
    (v.rax, v.rbx, v.rcx, v.rdx) = (r.rax, r.rbx, r.rcx, r.rdx);
    (v.rsi, v.rdi, v.rsp, v.rbp) = (r.rsi, r.rdi, r.rsp, r.rbp);
    (v.r8, v.r9, v.r10, v.r11) = (r.r8, r.r9, r.r10, r.r11);
    (v.r12, v.r13, v.r14, v.r15) = (r.r12, r.r13, r.r14, r.r15);
    (v.rip, v.rflags) = (r.rip, r.rflags);
    v.pat = PAT_RESET;
    v.xcr0 = XCR0_RESET;
    v.x87_fcw = X87_FCW_RESET;
    v.mxcsr = MXCSR_RESET;
    v.sev_features = SevFeatures::from(state.vmsa_features | SEV_FEATURE_SNP);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_loader::vmsa::initial_vmsa;

    /// The VMSA nacre images carry is exactly what KVM measures from the registers the
    /// host derives from it: byte for byte, with SNP as the only SEV feature.
    #[test]
    fn kvm_measures_the_vmsa_nacre_images_carry() {
        let vmsa = initial_vmsa(0x10_0000);
        let state = BspState::from_vmsa(&vmsa).unwrap();
        assert_eq!(kvm_vmsa(&state, true).as_bytes(), vmsa.as_bytes());
        assert_eq!(state.vmsa_features, 0);
        assert_eq!(state.efer, 0, "KVM adds SVME itself");
        // Every GPR is set (to 0), so RDX is not left at the CPU signature.
        assert_eq!(state.regs.rdx, 0);
        assert_eq!(state.regs.rip, 0x10_0000);
        // The segments round-trip through kvm_segment.
        let cs = state.segments[0];
        assert_eq!(
            (cs.selector, cs.type_, cs.s, cs.present, cs.db, cs.l, cs.g),
            (8, 0xB, 1, 1, 1, 0, 1)
        );
    }

    /// The same for the page `nacre measure` hashes: the demo image, built from the
    /// firmware this host carries, and its launch digest replayed with the VMSA KVM
    /// would build in place of the image's, once per vCPU as KVM measures it
    /// (`nacre measure --cpus N`).
    #[test]
    fn nacre_measure_is_what_kvm_measures_for_the_demo_image() {
        use nacre_loader::image::SNP_PARAMETER_PAGE_TYPE;
        use nacre_loader::measure::snp::LaunchDigest;
        use nacre_shared_abi::boot::PlatformKind;
        let image = crate::cli::package::build(
            crate::DEMO_APP,
            "hello",
            &[],
            &[],
            &nacre_loader::filetree::FileTreeBuilder::new(b"hello").unwrap(),
            0,
            false,
        )
        .unwrap();
        let loaded = nacre_loader::load_image(&image, PlatformKind::Snp).unwrap();
        let vmsa = loaded.vmsa.as_deref().unwrap();
        let kvm = kvm_vmsa(&BspState::from_vmsa(vmsa).unwrap(), true);
        assert_eq!(kvm.as_bytes(), vmsa.as_bytes());
        for cpus in [1, 2, 4] {
            let mut digest = LaunchDigest::new();
            for page in &loaded.pages {
                digest.add_page(
                    page.gpa,
                    page.contents.snp_page_type(),
                    page.contents.bytes(),
                );
            }
            digest.add_page(loaded.param_gpa, SNP_PARAMETER_PAGE_TYPE, &[0; 4096]);
            for _ in 0..cpus {
                digest.add_vmsa(kvm.as_bytes().try_into().unwrap());
            }
            assert_eq!(
                digest.finish(),
                loaded.measurement_for_cpus(cpus),
                "{cpus} vCPUs"
            );
        }
    }

    #[test]
    fn a_vmsa_kvm_would_measure_differently_is_refused() {
        let bad = |edit: fn(&mut SevVmsa)| {
            let mut vmsa = initial_vmsa(0x10_0000);
            edit(&mut vmsa);
            BspState::from_vmsa(&vmsa).unwrap_err()
        };
        // The old long-mode VMSA's CR4 without MCE: KVM would measure 0x660.
        assert!(bad(|v| v.cr4 = 0x620).contains("byte 0x148"));
        // EFER without SVME: KVM adds it.
        assert!(bad(|v| v.efer = 0).contains("byte 0xd1"));
        // State KVM_SET_REGS/SREGS cannot reach: an MSR, a shadow stack pointer, XMM.
        assert!(bad(|v| v.lstar = 1).contains("would be 0x00"));
        assert!(bad(|v| v.pl0_ssp = 8).contains("byte 0xa0"));
        assert!(bad(|v| v.xmm_registers[0].low = 1).contains("would be 0x00"));
        // Reset values the host does not set.
        assert!(bad(|v| v.xcr0 = 3).contains("byte 0x3e8"));
        assert!(bad(|v| v.pat = 0).contains("byte 0x268"));
    }

    #[test]
    fn host_mce_and_features_go_where_kvm_puts_them() {
        let vmsa = initial_vmsa(0x10_0000);
        let mut state = BspState::from_vmsa(&vmsa).unwrap();
        state.cr4 = 0;
        assert_eq!(kvm_vmsa(&state, true).cr4, CR4_MCE);
        assert_eq!(kvm_vmsa(&state, false).cr4, 0);
        state.cr4 = vmsa.cr4;
        state.vmsa_features = 1 << 2;
        assert_eq!(u64::from(kvm_vmsa(&state, true).sev_features), (1 << 2) | 1);
        let mut sregs = kvm_sregs::default();
        state.apply_sregs(&mut sregs);
        assert_eq!(
            (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer),
            (0x31, 0, 0x40, 0)
        );
        assert_eq!(sregs.cs.selector, 8);
        assert_eq!(sregs.ss.selector, 0x10);
    }
}
