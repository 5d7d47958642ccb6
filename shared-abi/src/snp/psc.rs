//! The page-state change (PSC) descriptor carried in the GHCB shared buffer
//! (NAE 0x8000_0010). Layout: Linux `arch/x86/include/asm/sev-common.h` (`struct psc_hdr`,
//! `struct psc_entry`); error codes: Linux `arch/x86/kvm/svm/sev.c`; SPECS.md 2.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Most entries in one descriptor (`VMGEXIT_PSC_MAX_COUNT`): (2032 - 8) / 8.
pub const PSC_MAX_ENTRIES: usize = 253;

/// Header bad (`VMGEXIT_PSC_ERROR_INVALID_HDR`, KVM `sev.c`).
pub const PSC_ERROR_INVALID_HDR: u64 = (1 << 32) | 1;
/// An entry bad (`VMGEXIT_PSC_ERROR_INVALID_ENTRY`).
pub const PSC_ERROR_INVALID_ENTRY: u64 = (1 << 32) | 2;
/// Generic failure (`VMGEXIT_PSC_ERROR_GENERIC`).
pub const PSC_ERROR_GENERIC: u64 = 0x100 << 32;

/// PSC header: `cur_entry`, `end_entry` (inclusive), reserved (must stay zero).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PscHeader {
    /// Index of the next entry to process.
    pub cur_entry: u16,
    /// Index of the last entry (inclusive).
    pub end_entry: u16,
    /// Reserved, zero.
    pub reserved: u32,
}

/// The whole descriptor: header and 253 entries (2032 bytes, the GHCB shared buffer).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PscDesc {
    /// Header.
    pub header: PscHeader,
    /// Raw entries ([`PscEntry`]).
    pub entries: [u64; PSC_MAX_ENTRIES],
}

const _: () = assert!(size_of::<PscHeader>() == 8);
const _: () = assert!(offset_of!(PscHeader, end_entry) == 2);
const _: () = assert!(size_of::<PscDesc>() == super::ghcb::GHCB_SHARED_BUFFER_SIZE);
const _: () = assert!(offset_of!(PscDesc, entries) == 8);

/// Operation of a PSC entry (bits 55:52).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageStateOp {
    /// 1: assign to the guest (private).
    Private,
    /// 2: return to the hypervisor (shared).
    Shared,
    /// 3: PSMASH hint (a no-op in KVM).
    Psmash,
    /// 4: UNSMASH hint (a no-op in KVM).
    Unsmash,
}

impl PageStateOp {
    /// Encoding.
    pub const fn code(self) -> u64 {
        match self {
            Self::Private => 1,
            Self::Shared => 2,
            Self::Psmash => 3,
            Self::Unsmash => 4,
        }
    }

    /// Decode.
    pub const fn from_code(v: u64) -> Option<Self> {
        match v {
            1 => Some(Self::Private),
            2 => Some(Self::Shared),
            3 => Some(Self::Psmash),
            4 => Some(Self::Unsmash),
            _ => None,
        }
    }
}

/// One decoded PSC entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PscEntry {
    /// Progress within a 2 MiB entry (0..=512), or 0/1 for a 4 KiB entry.
    pub cur_page: u16,
    /// GFN (40 bits); 512-aligned for a 2 MiB entry.
    pub gfn: u64,
    /// Operation.
    pub op: PageStateOp,
    /// 2 MiB when set.
    pub huge: bool,
}

/// Why a raw entry is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PscEntryError {
    /// Reserved bits 63:57 set.
    Reserved,
    /// Unknown operation.
    BadOp(u64),
    /// 2 MiB entry with an unaligned GFN.
    Unaligned,
    /// `cur_page` beyond the entry's pages.
    BadCurPage(u16),
}

const GFN_BITS: u32 = 40;

impl PscEntry {
    /// Pages this entry covers (512 or 1).
    pub const fn npages(&self) -> u64 {
        if self.huge {
            512
        } else {
            1
        }
    }

    /// Encode (bits: 11:0 cur_page, 51:12 gfn, 55:52 op, 56 size).
    pub const fn encode(&self) -> u64 {
        (self.cur_page as u64 & 0xFFF)
            | ((self.gfn & ((1 << GFN_BITS) - 1)) << 12)
            | (self.op.code() << 52)
            | ((self.huge as u64) << 56)
    }

    /// Decode and check a raw entry with KVM's rules (`snp_begin_psc`): known op,
    /// 2 MiB entries aligned, `cur_page <= npages`, reserved bits clear.
    pub const fn decode(v: u64) -> Result<Self, PscEntryError> {
        if v >> 57 != 0 {
            return Err(PscEntryError::Reserved);
        }
        let op = match PageStateOp::from_code((v >> 52) & 0xF) {
            Some(op) => op,
            None => return Err(PscEntryError::BadOp((v >> 52) & 0xF)),
        };
        let e = Self {
            cur_page: (v & 0xFFF) as u16,
            gfn: (v >> 12) & ((1 << GFN_BITS) - 1),
            op,
            huge: (v >> 56) & 1 == 1,
        };
        if e.huge && !e.gfn.is_multiple_of(512) {
            return Err(PscEntryError::Unaligned);
        }
        if e.cur_page as u64 > e.npages() {
            return Err(PscEntryError::BadCurPage(e.cur_page));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_matches_svsm_constructor() {
        // svsm: (paddr & ((1<<52)-1) & !0xfff) | (op<<52) | cur_page | (huge<<56)
        let paddr: u64 = 0x4020_0000;
        let e = PscEntry {
            cur_page: 0,
            gfn: paddr >> 12,
            op: PageStateOp::Private,
            huge: true,
        };
        assert_eq!(e.encode(), paddr | (1 << 52) | (1 << 56));
    }
}
