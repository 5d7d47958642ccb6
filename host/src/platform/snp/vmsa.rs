//! The boot processor's initial state on KVM: KVM builds an SEV-SNP guest's VMSA from
//! the vCPU's registers at SNP_LAUNCH_FINISH (`arch/x86/kvm/svm/sev.c`,
//! `sev_es_sync_vmsa`), so the image's VMSA is handed over as `KVM_SET_SREGS` and
//! `KVM_SET_REGS` (docs/kvm-uapi.md 3, step 6).

use igvm::snp_defs::{SevSelector, SevVmsa};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

/// EFER.SVME: in every SEV-ES/SNP VMSA, and refused by `KVM_SET_SREGS` from a VMM
/// that does not run nested guests; KVM sets it itself (`svm_set_efer`).
pub const EFER_SVME: u64 = 1 << 12;

/// The state nacre gives KVM for the boot processor.
#[derive(Debug, Clone, Copy)]
pub struct VcpuState {
    /// CS, DS, ES, FS, GS, SS, TR, LDTR in KVM's segment format.
    pub segments: [kvm_segment; 8],
    /// GDTR base and limit.
    pub gdt: (u64, u16),
    /// IDTR base and limit.
    pub idt: (u64, u16),
    /// CR0.
    pub cr0: u64,
    /// CR3 (with the C-bit, as the VMSA has it).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER without SVME.
    pub efer: u64,
    /// Every general-purpose register, RIP and RFLAGS.
    pub regs: kvm_regs,
}

/// A VMSA segment (the SVM attribute format: type, S, DPL, P in bits 7:0, AVL, L, D/B,
/// G in bits 11:8; AMD APM vol. 2, 15.5.1) in KVM's format; a segment that is not
/// present is unusable (`svm_get_segment`).
pub fn kvm_segment_of(s: &SevSelector) -> kvm_segment {
    let a = s.attrib;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xF) as u8,
        s: bit(4),
        dpl: ((a >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(8),
        l: bit(9),
        db: bit(10),
        g: bit(11),
        unusable: u8::from(bit(7) == 0),
        padding: 0,
    }
}

/// What KVM takes for the VMSA `v`.
pub fn vcpu_state(v: &SevVmsa) -> VcpuState {
    let regs = kvm_regs {
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
    };
    VcpuState {
        segments: [&v.cs, &v.ds, &v.es, &v.fs, &v.gs, &v.ss, &v.tr, &v.ldtr].map(kvm_segment_of),
        gdt: (v.gdtr.base, v.gdtr.limit as u16),
        idt: (v.idtr.base, v.idtr.limit as u16),
        cr0: v.cr0,
        cr3: v.cr3,
        cr4: v.cr4,
        efer: v.efer & !EFER_SVME,
        regs,
    }
}

impl VcpuState {
    /// Put the state into `sregs` (read from the new vCPU, so that what nacre does not
    /// set keeps KVM's reset value).
    pub fn apply(&self, sregs: &mut kvm_sregs) {
        let [cs, ds, es, fs, gs, ss, tr, ldt] = self.segments;
        sregs.cs = cs;
        sregs.ds = ds;
        sregs.es = es;
        sregs.fs = fs;
        sregs.gs = gs;
        sregs.ss = ss;
        sregs.tr = tr;
        sregs.ldt = ldt;
        (sregs.gdt.base, sregs.gdt.limit) = self.gdt;
        (sregs.idt.base, sregs.idt.limit) = self.idt;
        sregs.cr0 = self.cr0;
        sregs.cr3 = self.cr3;
        sregs.cr4 = self.cr4;
        sregs.efer = self.efer;
    }
}

/// A model of the VMSA KVM measures at SNP_LAUNCH_FINISH for a vCPU given `state`
/// (`sev_es_sync_vmsa` over the VMCB `svm_set_segment`, `svm_set_efer` and
/// `svm_set_cr4` made, with KVM's reset values for the rest), for the tests that
/// replay a launch into a launch digest. It is a model read from the kernel's code,
/// not the kernel: only hardware can confirm it.
#[cfg(test)]
pub fn modelled_vmsa(state: &VcpuState, vmsa_features: u64, host_cr4_mce: bool) -> Box<SevVmsa> {
    use igvm::snp_defs::SevFeatures;
    use zerocopy::FromZeros;

    let selector = |s: &kvm_segment| SevSelector {
        selector: s.selector,
        attrib: if s.unusable != 0 {
            0
        } else {
            u16::from(s.type_)
                | u16::from(s.s) << 4
                | u16::from(s.dpl) << 5
                | u16::from(s.present) << 7
                | u16::from(s.avl) << 8
                | u16::from(s.l) << 9
                | u16::from(s.db) << 10
                | u16::from(s.g) << 11
        },
        limit: s.limit,
        base: s.base,
    };
    let table = |(base, limit): (u64, u16)| SevSelector {
        selector: 0,
        attrib: 0,
        limit: u32::from(limit),
        base,
    };
    let mut v = Box::new(SevVmsa::new_zeroed());
    let [cs, ds, es, fs, gs, ss, tr, ldt] = state.segments;
    v.cs = selector(&cs);
    v.ds = selector(&ds);
    v.es = selector(&es);
    v.fs = selector(&fs);
    v.gs = selector(&gs);
    v.ss = selector(&ss);
    v.tr = selector(&tr);
    v.ldtr = selector(&ldt);
    v.gdtr = table(state.gdt);
    v.idtr = table(state.idt);
    v.cpl = ss.dpl;
    v.efer = state.efer | EFER_SVME;
    v.cr0 = state.cr0;
    v.cr3 = state.cr3;
    v.cr4 = state.cr4 | if host_cr4_mce { 1 << 6 } else { 0 };
    let r = &state.regs;
    (v.rax, v.rbx, v.rcx, v.rdx) = (r.rax, r.rbx, r.rcx, r.rdx);
    (v.rsi, v.rdi, v.rsp, v.rbp) = (r.rsi, r.rdi, r.rsp, r.rbp);
    (v.r8, v.r9, v.r10, v.r11) = (r.r8, r.r9, r.r10, r.r11);
    (v.r12, v.r13, v.r14, v.r15) = (r.r12, r.r13, r.r14, r.r15);
    v.rip = r.rip;
    v.rflags = r.rflags;
    // KVM's reset values of what nacre does not set (`kvm_vcpu_reset`,
    // `init_vmcb`, `fpstate_init_fxstate`).
    v.dr6 = 0xFFFF_0FF0;
    v.dr7 = 0x400;
    v.pat = 0x0007_0406_0007_0406;
    v.xcr0 = 1;
    v.mxcsr = 0x1F80;
    v.x87_fcw = 0x37F;
    v.sev_features = SevFeatures::from_bits(vmsa_features | 1);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_loader::vmsa::initial_vmsa;
    use zerocopy::IntoBytes;

    #[test]
    fn efer_loses_svme_and_every_register_is_set() {
        let mut v = initial_vmsa(0xFFFF_FFFF_8010_0000, 0x8000 | 1 << 47);
        v.rdx = 0x1234;
        v.r15 = 0x15;
        let s = vcpu_state(&v);
        assert_eq!(s.efer, 0x0D00);
        assert_eq!((s.regs.rdx, s.regs.r15, s.regs.rip), (0x1234, 0x15, v.rip));
        let mut sregs = kvm_sregs::default();
        s.apply(&mut sregs);
        assert_eq!(
            (sregs.cs.l, sregs.cs.present, sregs.cs.selector),
            (1, 1, 0x08)
        );
        assert_eq!((sregs.ss.db, sregs.ss.type_, sregs.ldt.type_), (1, 3, 2));
        assert_eq!(sregs.cr3, 0x8000 | 1 << 47);
    }

    /// The image's VMSA survives the trip through KVM's registers byte for byte, on a
    /// host whose CR4 has no MCE; nacre's launch digest then holds on KVM.
    #[test]
    fn the_images_vmsa_round_trips_through_kvm_state() {
        let v = initial_vmsa(0xFFFF_FFFF_8010_0000, 0x8000 | 1 << 47);
        let back = modelled_vmsa(&vcpu_state(&v), 0, false);
        assert_eq!(back.as_bytes(), v.as_bytes());
    }

    /// KVM ORs the host's CR4.MCE into the guest's CR4 (`svm_set_cr4`), and every
    /// Linux host has it: that is the one field where the VMSA KVM measures differs
    /// from an image whose CR4 lacks MCE, which the image must then carry.
    #[test]
    fn host_mce_is_the_only_difference_kvm_makes() {
        let v = initial_vmsa(0xFFFF_FFFF_8010_0000, 0x8000 | 1 << 47);
        let back = modelled_vmsa(&vcpu_state(&v), 0, true);
        let diff: Vec<usize> = (0..4096)
            .filter(|&i| back.as_bytes()[i] != v.as_bytes()[i])
            .collect();
        if v.cr4 & (1 << 6) == 0 {
            // CR4 is at 0x148 in the save area.
            assert_eq!(diff, vec![0x148], "only CR4.MCE");
        } else {
            assert!(diff.is_empty());
        }
    }
}
