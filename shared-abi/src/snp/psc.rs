//! The page-state change (PSC) descriptor carried in the GHCB shared buffer
//! (NAE 0x8000_0010). Layout: Linux `arch/x86/include/asm/sev-common.h` (`struct psc_hdr`,
//! `struct psc_entry`); error codes: Linux `arch/x86/kvm/svm/sev.c`; docs/specs.md 2.

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
    use proptest::prelude::*;
    use std::vec::Vec;

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

    const GFN_MASK: u64 = (1 << GFN_BITS) - 1;

    fn page_state_op() -> impl Strategy<Value = PageStateOp> {
        prop_oneof![
            Just(PageStateOp::Private),
            Just(PageStateOp::Shared),
            Just(PageStateOp::Psmash),
            Just(PageStateOp::Unsmash),
        ]
    }

    /// Every entry KVM accepts.
    fn valid_entry() -> impl Strategy<Value = PscEntry> {
        (any::<bool>(), 0..=GFN_MASK, page_state_op(), 0u16..=512).prop_map(
            |(huge, gfn, op, cur_page)| {
                let (gfn, npages) = if huge { (gfn & !511, 512) } else { (gfn, 1) };
                PscEntry {
                    cur_page: cur_page % (npages + 1),
                    gfn,
                    op,
                    huge,
                }
            },
        )
    }

    /// Raw entries: uniformly random, or assembled from fields biased to the edges
    /// of each check (reserved bits, op, 2 MiB alignment, `cur_page`).
    fn raw_entry() -> impl Strategy<Value = u64> {
        let reserved = prop_oneof![
            6 => Just(0u64),
            1 => (0u32..7).prop_map(|b| 1u64 << b),
            1 => 1u64..128,
        ];
        let op = prop_oneof![3 => 1u64..=4, 1 => 0u64..16];
        let gfn = prop_oneof![
            (0..=GFN_MASK >> 9).prop_map(|g| g << 9),
            0..=GFN_MASK,
            0u64..1024,
        ];
        let cur_page = prop_oneof![0u64..=2, 510u64..=514, 0u64..0x1000];
        prop_oneof![
            any::<u64>(),
            (reserved, op, any::<bool>(), gfn, cur_page).prop_map(
                |(reserved, op, huge, gfn, cur_page)| {
                    (reserved << 57) | (u64::from(huge) << 56) | (op << 52) | (gfn << 12) | cur_page
                }
            ),
        ]
    }

    /// `PscEntry::decode(v)` fails exactly when one of KVM's rules is broken, names a
    /// broken rule when it fails, and gives back an entry that re-encodes to `v`.
    fn check_entry_decode(v: u64) -> Result<(), TestCaseError> {
        let reserved = v >> 57 != 0;
        let op = (v >> 52) & 0xF;
        let bad_op = !(1..=4).contains(&op);
        let huge = (v >> 56) & 1 == 1;
        let gfn = (v >> 12) & GFN_MASK;
        let unaligned = huge && !gfn.is_multiple_of(512);
        let cur_page = v & 0xFFF;
        let bad_cur_page = cur_page > if huge { 512 } else { 1 };
        match PscEntry::decode(v) {
            Ok(e) => {
                prop_assert!(
                    !(reserved || bad_op || unaligned || bad_cur_page),
                    "{:#x} accepted",
                    v
                );
                prop_assert_eq!(e.encode(), v);
                prop_assert!(u64::from(e.cur_page) <= e.npages());
            }
            Err(err) => {
                let explained = match err {
                    PscEntryError::Reserved => reserved,
                    PscEntryError::BadOp(o) => bad_op && o == op,
                    PscEntryError::Unaligned => unaligned,
                    PscEntryError::BadCurPage(c) => bad_cur_page && u64::from(c) == cur_page,
                };
                prop_assert!(explained, "{:?} for {:#x}", err, v);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn op_round_trips(op in page_state_op(), code in any::<u64>()) {
            prop_assert_eq!(PageStateOp::from_code(op.code()), Some(op));
            match PageStateOp::from_code(code) {
                Some(op) => prop_assert_eq!(op.code(), code),
                None => prop_assert!(!(1..=4).contains(&code)),
            }
        }

        #[test]
        fn entry_round_trips(e in valid_entry()) {
            prop_assert_eq!(PscEntry::decode(e.encode()), Ok(e));
        }

        #[test]
        fn entry_decode_rejects_exactly_the_malformed(v in raw_entry()) {
            check_entry_decode(v)?;
        }

        #[test]
        fn entry_decode_rejects_every_single_bit_corruption(e in valid_entry()) {
            for bit in 0..64 {
                check_entry_decode(e.encode() ^ (1 << bit))?;
            }
        }

        #[test]
        fn header_bytes_round_trip(cur_entry in any::<u16>(), end_entry in any::<u16>(), reserved in any::<u32>()) {
            let h = PscHeader { cur_entry, end_entry, reserved };
            let bytes = h.as_bytes();
            prop_assert_eq!(&bytes[0..2], &cur_entry.to_le_bytes());
            prop_assert_eq!(&bytes[2..4], &end_entry.to_le_bytes());
            prop_assert_eq!(&bytes[4..8], &reserved.to_le_bytes());
            prop_assert_eq!(PscHeader::read_from_bytes(bytes), Ok(h));
        }

        #[test]
        fn desc_bytes_round_trip(
            bytes in proptest::collection::vec(any::<u8>(), size_of::<PscDesc>()),
        ) {
            let Ok(d) = PscDesc::read_from_bytes(&bytes) else {
                return Err(TestCaseError::fail("a 2032-byte buffer must read as a PscDesc"));
            };
            prop_assert_eq!(d.as_bytes(), &bytes[..]);
            prop_assert_eq!(d.header.as_bytes(), &bytes[..8]);
            let entries: Vec<u64> = bytes[8..]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            prop_assert_eq!(&d.entries[..], &entries[..]);
        }
    }
}
