//! The BSP's initial SEV-SNP VMSA: 64-bit long mode with paging on (the loader's
//! initial page tables), flat segments, interrupts off, `rip` at the firmware's entry.
//! The firmware loads its own GDT, IDT and stack before it relies on any of them, so
//! `rsp` is 0 and the descriptor tables are empty.
//!
//! Layout: AMD APM vol. 2, 15.5 (VMCB state save area) and appendix B; segment
//! attributes use the VMCB segment attribute format (the descriptor's type/S/DPL/P in
//! bits 7:0 and AVL/L/D/G in bits 11:8). Reset values for everything the firmware does
//! not set follow QEMU/KVM's initial VMSA (docs/specs.md 5.4).

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
/// L: 64-bit code segment.
const SEG_ATTR_L: u16 = 1 << 9;
/// D/B: 32-bit default operand size (data: big).
const SEG_ATTR_DB: u16 = 1 << 10;
/// G: limit in 4 KiB units.
const SEG_ATTR_G: u16 = 1 << 11;

/// 64-bit ring-0 code: 0xA9B.
pub const CODE64_ATTRIB: u16 =
    SEG_TYPE_CODE_XRA | SEG_ATTR_S | SEG_ATTR_P | SEG_ATTR_L | SEG_ATTR_G;
/// Flat ring-0 data: 0xC93.
pub const DATA_ATTRIB: u16 = SEG_TYPE_DATA_RWA | SEG_ATTR_S | SEG_ATTR_P | SEG_ATTR_DB | SEG_ATTR_G;
/// An empty LDT: 0x82.
const LDT_ATTRIB: u16 = SEG_TYPE_LDT | SEG_ATTR_P;
/// A busy 64-bit TSS: 0x8B.
const TSS_ATTRIB: u16 = SEG_TYPE_TSS_BUSY | SEG_ATTR_P;

const _: () = assert!(CODE64_ATTRIB == 0xA9B);
const _: () = assert!(DATA_ATTRIB == 0xC93);
const _: () = assert!(LDT_ATTRIB == 0x82 && TSS_ATTRIB == 0x8B);

/// Selector of the code segment in the firmware's GDT.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment in the firmware's GDT.
pub const DATA_SELECTOR: u16 = 0x10;

/// EFER.LME: long mode enable.
const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: no-execute enable.
const EFER_NXE: u64 = 1 << 11;
/// EFER.SVME: required set in an SEV-ES/SNP guest's VMSA.
const EFER_SVME: u64 = 1 << 12;
/// The guest's EFER: 0x1D00.
pub const EFER: u64 = EFER_SVME | EFER_NXE | EFER_LMA | EFER_LME;

/// CR0.PE: protection enable.
const CR0_PE: u64 = 1 << 0;
/// CR0.MP: monitor coprocessor.
const CR0_MP: u64 = 1 << 1;
/// CR0.ET: extension type (always 1).
const CR0_ET: u64 = 1 << 4;
/// CR0.NE: native x87 error reporting.
const CR0_NE: u64 = 1 << 5;
/// CR0.WP: write protect in ring 0.
const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
const CR0_PG: u64 = 1 << 31;
/// The guest's CR0: 0x8001_0033.
pub const CR0: u64 = CR0_PG | CR0_WP | CR0_NE | CR0_ET | CR0_MP | CR0_PE;

/// CR4.PAE: physical address extension (required for long mode).
const CR4_PAE: u64 = 1 << 5;
/// CR4.OSFXSR: FXSAVE/FXRSTOR and SSE enabled.
const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: unmasked SIMD floating-point exceptions raise #XM.
const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// The guest's CR4: 0x620.
pub const CR4: u64 = CR4_OSXMMEXCPT | CR4_OSFXSR | CR4_PAE;

const _: () = assert!(EFER == 0x1D00 && CR0 == 0x8001_0033 && CR4 == 0x620);

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

/// The BSP's initial VMSA: long mode at `rip` with `cr3` (the PML4's GPA with the
/// encryption bit set). `sev_features` enables SNP only.
pub fn initial_vmsa(rip: u64, cr3: u64) -> Box<SevVmsa> {
    let mut vmsa = Box::new(SevVmsa::new_zeroed());
    let data = segment(DATA_SELECTOR, DATA_ATTRIB, 0xffff_ffff);
    vmsa.cs = segment(CODE_SELECTOR, CODE64_ATTRIB, 0xffff_ffff);
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
    vmsa.cr3 = cr3;
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
    vmsa.sev_features = SevFeatures::new().with_snp(true);
    vmsa
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    /// The fields land at the offsets docs/specs.md 5.4 gives for the save area.
    #[test]
    fn offsets_match_the_save_area() {
        let vmsa = initial_vmsa(0xffff_ffff_8010_0000, 0x8000 | 1 << 47);
        let bytes = vmsa.as_bytes();
        assert_eq!(bytes.len(), 4096);
        // cs at 0x010: selector, attrib, limit, base.
        assert_eq!(&bytes[0x10..0x14], &[0x08, 0, 0x9b, 0x0a]);
        assert_eq!(&bytes[0x20..0x24], &[0x10, 0, 0x93, 0x0c]);
        assert_eq!(u64_at(bytes, 0xd0), 0x1d00);
        assert_eq!(u64_at(bytes, 0x148), 0x620);
        assert_eq!(u64_at(bytes, 0x150), 0x8000 | 1 << 47);
        assert_eq!(u64_at(bytes, 0x158), 0x8001_0033);
        assert_eq!(u64_at(bytes, 0x160), 0x400);
        assert_eq!(u64_at(bytes, 0x168), 0xffff_0ff0);
        assert_eq!(u64_at(bytes, 0x170), 2);
        assert_eq!(u64_at(bytes, 0x178), 0xffff_ffff_8010_0000);
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
