//! The BSP's initial SEV-SNP VMSA: 32-bit protected mode with paging off, flat
//! segments, interrupts off, `rip` at the firmware's 32-bit entry (the physical address
//! of its ELF entry point). Nothing in it depends on the host: no page table, no C-bit.
//!
//! The page is what upstream KVM measures at SNP_LAUNCH_UPDATE of the VMSA
//! (`arch/x86/kvm/svm/sev.c`, `sev_es_sync_vmsa`), given that the host sets exactly
//! these registers with KVM_SET_SREGS/KVM_SET_REGS/KVM_SET_XCRS and creates the VM with
//! `vmsa_features` = [`sev_features`] without SNP active (KVM_SEV_INIT2): KVM copies every GPR (so every
//! one is set here, to 0), the segments, CR0, CR3, CR4 with the host's CR4.MCE ORed in
//! (so CR4.MCE is set here), EFER with SVME added (so it is set here), XCR0, PAT, DR6,
//! DR7 and the x87/SSE reset state; what it does not copy stays zero. `igvmmeasure
//! --check-kvm` checks the same rules (docs/hardware.md).
//!
//! Layout: AMD APM vol. 2, 15.5 (VMCB state save area) and appendix B; segment
//! attributes use the VMCB segment attribute format (the descriptor's type/S/DPL/P in
//! bits 7:0 and AVL/L/D/G in bits 11:8). Reset values follow QEMU/KVM's initial VMSA
//! (docs/specs.md 5.4).

use igvm::snp_defs::{SevFeatures, SevSelector, SevVmsa};
use zerocopy::FromZeros;

/// Descriptor type 0xB for a code segment: execute/read, accessed.
const SEG_TYPE_CODE_XRA: u16 = 0xB;
/// Descriptor type 0x3 for a data segment: read/write, accessed.
const SEG_TYPE_DATA_RWA: u16 = 0x3;
/// Descriptor type 0x2 for a system segment: LDT.
const SEG_TYPE_LDT: u16 = 0x2;
/// Descriptor type 0xB for a system segment: busy 64-bit TSS.
const SEG_TYPE_TSS_BUSY: u16 = 0xB;
/// S: code or data segment (not a system segment).
const SEG_ATTR_S: u16 = 1 << 4;
/// P: present.
const SEG_ATTR_P: u16 = 1 << 7;
/// D/B: 32-bit default operand size (data: big).
const SEG_ATTR_DB: u16 = 1 << 10;
/// G: limit in 4 KiB units.
const SEG_ATTR_G: u16 = 1 << 11;

/// 32-bit ring-0 code: 0xC9B.
pub const CODE32_ATTRIB: u16 =
    SEG_TYPE_CODE_XRA | SEG_ATTR_S | SEG_ATTR_P | SEG_ATTR_DB | SEG_ATTR_G;
/// Flat ring-0 data: 0xC93.
pub const DATA_ATTRIB: u16 = SEG_TYPE_DATA_RWA | SEG_ATTR_S | SEG_ATTR_P | SEG_ATTR_DB | SEG_ATTR_G;
/// An empty LDT: 0x82.
const LDT_ATTRIB: u16 = SEG_TYPE_LDT | SEG_ATTR_P;
/// A busy 64-bit TSS: 0x8B.
const TSS_ATTRIB: u16 = SEG_TYPE_TSS_BUSY | SEG_ATTR_P;

const _: () = assert!(CODE32_ATTRIB == 0xC9B);
const _: () = assert!(DATA_ATTRIB == 0xC93);
const _: () = assert!(LDT_ATTRIB == 0x82 && TSS_ATTRIB == 0x8B);

/// Selector of the code segment (the flat 32-bit code segment of the entry code's own
/// GDT; the VMSA's GDTR is empty, so the selectors matter only as values).
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segments.
pub const DATA_SELECTOR: u16 = 0x10;

/// EFER.SVME: set in every SEV-ES/SNP VMSA; KVM adds it itself (`sev_es_sync_vmsa`).
const EFER_SVME: u64 = 1 << 12;
/// The guest's EFER: SVME only (long mode is off until the entry code turns it on).
pub const EFER: u64 = EFER_SVME;

/// CR0.PE: protection enable.
const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (always 1).
const CR0_ET: u64 = 1 << 4;
/// CR0.NE: native x87 error reporting.
const CR0_NE: u64 = 1 << 5;
/// The guest's CR0: 0x31, protected mode with paging off (CD and NW clear).
/// `igvmmeasure --check-kvm` accepts exactly this value or 0x30 for KVM.
pub const CR0: u64 = CR0_NE | CR0_ET | CR0_PE;

/// CR4.MCE: machine-check enable. KVM ORs the host's CR4.MCE into the VMSA it
/// measures (`sev_es_sync_vmsa`), and every host that runs SEV-SNP has it set.
const CR4_MCE: u64 = 1 << 6;
/// The guest's CR4: MCE only.
pub const CR4: u64 = CR4_MCE;

const _: () = assert!(EFER == 0x1000 && CR0 == 0x31 && CR4 == 0x40);

/// The SEV features the VMSA enables and the host must pass as KVM_SEV_INIT2's
/// `vmsa_features`: SNP only (bit 0, SNPActive; AMD APM vol. 2, 15.35.2 "SEV_FEATURES").
pub fn sev_features() -> SevFeatures {
    SevFeatures::new().with_snp(true)
}

/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;
/// XCR0 with only x87 state enabled (its reset value).
const XCR0_X87: u64 = 1;
/// PAT power-on value: WB, WT, UC-, UC, repeated.
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// MXCSR reset value: all SIMD exceptions masked.
const MXCSR_RESET: u32 = 0x1f80;
/// x87 FCW after FINIT.
const X87_FCW_RESET: u16 = 0x37f;
/// DR6 reset value.
const DR6_RESET: u64 = 0xffff_0ff0;
/// DR7 reset value.
const DR7_RESET: u64 = 0x400;

fn segment(selector: u16, attrib: u16, limit: u32) -> SevSelector {
    SevSelector {
        selector,
        attrib,
        limit,
        base: 0,
    }
}

/// The BSP's initial VMSA: 32-bit protected mode at physical address `rip`, paging off,
/// every general-purpose register 0.
pub fn initial_vmsa(rip: u64) -> Box<SevVmsa> {
    let mut vmsa = Box::new(SevVmsa::new_zeroed());
    let data = segment(DATA_SELECTOR, DATA_ATTRIB, 0xffff_ffff);
    vmsa.cs = segment(CODE_SELECTOR, CODE32_ATTRIB, 0xffff_ffff);
    vmsa.ds = data;
    vmsa.es = data;
    vmsa.ss = data;
    vmsa.fs = data;
    vmsa.gs = data;
    vmsa.gdtr = segment(0, 0, 0);
    vmsa.idtr = segment(0, 0, 0);
    vmsa.ldtr = segment(0, LDT_ATTRIB, 0xffff);
    vmsa.tr = segment(0, TSS_ATTRIB, 0xffff);
    vmsa.efer = EFER;
    vmsa.cr0 = CR0;
    vmsa.cr3 = 0;
    vmsa.cr4 = CR4;
    vmsa.rip = rip;
    vmsa.rsp = 0;
    vmsa.rflags = RFLAGS_RESERVED;
    vmsa.xcr0 = XCR0_X87;
    vmsa.pat = PAT_RESET;
    vmsa.dr6 = DR6_RESET;
    vmsa.dr7 = DR7_RESET;
    vmsa.mxcsr = MXCSR_RESET;
    vmsa.x87_fcw = X87_FCW_RESET;
    vmsa.sev_features = sev_features();
    vmsa
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    /// QEMU's IGVM loader takes a VMSA only if nothing but the fields it synchronizes
    /// with KVM is set (`target/i386/sev.c`, `check_vmsa_supported`: segments and
    /// descriptor tables, EFER, CR0, CR3, CR4, XCR0, DR6, DR7, the GPRs, RIP, RFLAGS,
    /// PAT, x87 FCW, MXCSR) and `sev_features` is exactly SNP active; `igvmmeasure
    /// --check-kvm` wants CR0 0x31 or 0x30 (docs/hardware.md).
    #[test]
    fn qemu_and_igvmmeasure_would_take_it() {
        let vmsa = initial_vmsa(0x10_0000);
        assert_eq!(u64::from(vmsa.sev_features), 1);
        assert!([0x30, 0x31].contains(&vmsa.cr0));
        let mut rest = vmsa.clone();
        let none = SevSelector::new_zeroed();
        (rest.es, rest.cs, rest.ss, rest.ds, rest.fs, rest.gs) =
            (none, none, none, none, none, none);
        (rest.gdtr, rest.idtr, rest.ldtr, rest.tr) = (none, none, none, none);
        (rest.efer, rest.cr0, rest.cr3, rest.cr4, rest.xcr0) = (0, 0, 0, 0, 0);
        (rest.dr6, rest.dr7, rest.rip, rest.rflags, rest.pat) = (0, 0, 0, 0, 0);
        (rest.rax, rest.rbx, rest.rcx, rest.rdx, rest.rsp, rest.rbp) = (0, 0, 0, 0, 0, 0);
        (rest.rsi, rest.rdi, rest.r8, rest.r9, rest.r10, rest.r11) = (0, 0, 0, 0, 0, 0);
        (rest.r12, rest.r13, rest.r14, rest.r15) = (0, 0, 0, 0);
        (rest.x87_fcw, rest.mxcsr) = (0, 0);
        rest.sev_features = SevFeatures::new();
        assert!(rest.as_bytes().iter().all(|&b| b == 0));
    }

    /// The fields land at the offsets docs/specs.md 5.4 gives for the save area.
    #[test]
    fn offsets_match_the_save_area() {
        let vmsa = initial_vmsa(0x10_0000);
        let bytes = vmsa.as_bytes();
        assert_eq!(bytes.len(), 4096);
        // cs at 0x010: selector, attrib, limit, base.
        assert_eq!(&bytes[0x10..0x14], &[0x08, 0, 0x9b, 0x0c]);
        assert_eq!(&bytes[0x20..0x24], &[0x10, 0, 0x93, 0x0c]);
        assert_eq!(u64_at(bytes, 0xd0), 0x1000);
        assert_eq!(u64_at(bytes, 0x148), 0x40);
        assert_eq!(u64_at(bytes, 0x150), 0);
        assert_eq!(u64_at(bytes, 0x158), 0x31);
        assert_eq!(u64_at(bytes, 0x160), 0x400);
        assert_eq!(u64_at(bytes, 0x168), 0xffff_0ff0);
        assert_eq!(u64_at(bytes, 0x170), 2);
        assert_eq!(u64_at(bytes, 0x178), 0x10_0000);
        assert_eq!(u64_at(bytes, 0x1d8), 0);
        assert_eq!(u64_at(bytes, 0x268), 0x0007_0406_0007_0406);
        assert_eq!(u64_at(bytes, 0x3b0), 1);
        assert_eq!(u64_at(bytes, 0x3e8), 1);
        assert_eq!(&bytes[0x408..0x40c], &0x1f80u32.to_le_bytes());
        assert_eq!(&bytes[0x410..0x412], &0x37fu16.to_le_bytes());
        // ldtr at 0x070, tr at 0x090.
        assert_eq!(&bytes[0x70..0x78], &[0, 0, 0x82, 0, 0xff, 0xff, 0, 0]);
        assert_eq!(&bytes[0x90..0x98], &[0, 0, 0x8b, 0, 0xff, 0xff, 0, 0]);
    }
}
