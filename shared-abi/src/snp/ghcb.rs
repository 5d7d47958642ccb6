//! The GHCB page (protocol version 2) and the Non-Automatic-Exit codes.
//!
//! Layout: Linux `arch/x86/include/asm/svm.h` (`struct ghcb_save_area`, `struct ghcb`)
//! and COCONUT-SVSM `kernel/src/sev/ghcb.rs`; docs/specs.md 1.2. The GHCB lives in shared
//! memory: neither side keeps a reference into it. Each side copies the page into a
//! private [`Ghcb`] value, works on the copy and copies back.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Size of the GHCB shared buffer (`GHCB_SHARED_BUF_SIZE`, Linux `asm/svm.h`).
pub const GHCB_SHARED_BUFFER_SIZE: usize = 0x7F0;
/// GHCB protocol version nacre speaks (`GHCB_PROTOCOL_MAX`, Linux `asm/sev.h`); SNP requires 2.
pub const GHCB_PROTOCOL_VERSION: u16 = 2;
/// Standard GHCB usage (`GHCB_DEFAULT_USAGE`, Linux `asm/sev.h`).
pub const GHCB_DEFAULT_USAGE: u32 = 0;

/// The 4 KiB GHCB page.
#[derive(Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Ghcb {
    reserved_0: [u8; 0xCB],
    /// CPL (0x0CB).
    pub cpl: u8,
    reserved_1: [u8; 0x74],
    /// XSS (0x140).
    pub xss: u64,
    reserved_2: [u8; 0x18],
    /// DR7 (0x160).
    pub dr7: u64,
    reserved_3: [u8; 0x10],
    /// RIP (0x178).
    pub rip: u64,
    reserved_4: [u8; 0x58],
    /// RSP (0x1D8).
    pub rsp: u64,
    reserved_5: [u8; 0x18],
    /// RAX (0x1F8).
    pub rax: u64,
    reserved_6: [u8; 0x108],
    /// RCX (0x308).
    pub rcx: u64,
    /// RDX (0x310).
    pub rdx: u64,
    /// RBX (0x318).
    pub rbx: u64,
    reserved_7: [u8; 0x8],
    /// RBP (0x328).
    pub rbp: u64,
    /// RSI (0x330).
    pub rsi: u64,
    /// RDI (0x338).
    pub rdi: u64,
    /// R8..R15 (0x340..0x380).
    pub r8_r15: [u64; 8],
    reserved_8: [u8; 0x10],
    /// SW_EXITCODE (0x390).
    pub sw_exit_code: u64,
    /// SW_EXITINFO1 (0x398).
    pub sw_exit_info_1: u64,
    /// SW_EXITINFO2 (0x3A0).
    pub sw_exit_info_2: u64,
    /// SW_SCRATCH (0x3A8).
    pub sw_scratch: u64,
    reserved_9: [u8; 0x38],
    /// XCR0 (0x3E8).
    pub xcr0: u64,
    /// Valid bitmap (0x3F0): bit `offset / 8` says the field at `offset` was written.
    pub valid_bitmap: [u64; 2],
    /// X87 state GPA (0x400).
    pub x87_state_gpa: u64,
    reserved_10: [u8; 0x3F8],
    /// Shared buffer (0x800), 2032 bytes.
    pub shared_buffer: [u8; GHCB_SHARED_BUFFER_SIZE],
    reserved_11: [u8; 10],
    /// Protocol version (0xFFA).
    pub protocol_version: u16,
    /// GHCB usage (0xFFC).
    pub ghcb_usage: u32,
}

const _: () = assert!(size_of::<Ghcb>() == 4096);
const _: () = assert!(offset_of!(Ghcb, cpl) == 0x0CB);
const _: () = assert!(offset_of!(Ghcb, xss) == 0x140);
const _: () = assert!(offset_of!(Ghcb, dr7) == 0x160);
const _: () = assert!(offset_of!(Ghcb, rip) == 0x178);
const _: () = assert!(offset_of!(Ghcb, rsp) == 0x1D8);
const _: () = assert!(offset_of!(Ghcb, rax) == 0x1F8);
const _: () = assert!(offset_of!(Ghcb, rcx) == 0x308);
const _: () = assert!(offset_of!(Ghcb, rdx) == 0x310);
const _: () = assert!(offset_of!(Ghcb, rbx) == 0x318);
const _: () = assert!(offset_of!(Ghcb, rbp) == 0x328);
const _: () = assert!(offset_of!(Ghcb, rsi) == 0x330);
const _: () = assert!(offset_of!(Ghcb, rdi) == 0x338);
const _: () = assert!(offset_of!(Ghcb, r8_r15) == 0x340);
const _: () = assert!(offset_of!(Ghcb, sw_exit_code) == 0x390);
const _: () = assert!(offset_of!(Ghcb, sw_exit_info_1) == 0x398);
const _: () = assert!(offset_of!(Ghcb, sw_exit_info_2) == 0x3A0);
const _: () = assert!(offset_of!(Ghcb, sw_scratch) == 0x3A8);
const _: () = assert!(offset_of!(Ghcb, xcr0) == 0x3E8);
const _: () = assert!(offset_of!(Ghcb, valid_bitmap) == 0x3F0);
const _: () = assert!(offset_of!(Ghcb, x87_state_gpa) == 0x400);
const _: () = assert!(offset_of!(Ghcb, shared_buffer) == 0x800);
const _: () = assert!(offset_of!(Ghcb, protocol_version) == 0xFFA);
const _: () = assert!(offset_of!(Ghcb, ghcb_usage) == 0xFFC);

/// A field of the GHCB save area, named by its offset (its valid-bitmap bit is offset / 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GhcbField {
    /// RAX.
    Rax,
    /// RBX.
    Rbx,
    /// RCX.
    Rcx,
    /// RDX.
    Rdx,
    /// SW_EXITCODE.
    SwExitCode,
    /// SW_EXITINFO1.
    SwExitInfo1,
    /// SW_EXITINFO2.
    SwExitInfo2,
    /// SW_SCRATCH.
    SwScratch,
    /// XCR0.
    Xcr0,
    /// CPL.
    Cpl,
}

impl GhcbField {
    /// Offset of the field in the GHCB.
    pub const fn offset(self) -> usize {
        match self {
            Self::Rax => offset_of!(Ghcb, rax),
            Self::Rbx => offset_of!(Ghcb, rbx),
            Self::Rcx => offset_of!(Ghcb, rcx),
            Self::Rdx => offset_of!(Ghcb, rdx),
            Self::SwExitCode => offset_of!(Ghcb, sw_exit_code),
            Self::SwExitInfo1 => offset_of!(Ghcb, sw_exit_info_1),
            Self::SwExitInfo2 => offset_of!(Ghcb, sw_exit_info_2),
            Self::SwScratch => offset_of!(Ghcb, sw_scratch),
            Self::Xcr0 => offset_of!(Ghcb, xcr0),
            Self::Cpl => offset_of!(Ghcb, cpl),
        }
    }
}

impl Ghcb {
    /// An all-zero GHCB.
    pub fn new_zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }

    /// Clear everything and set the protocol version and usage, as a guest does
    /// before filling a request (svsm `GHCB::clear`).
    pub fn clear(&mut self) {
        *self = Self::new_zeroed();
        self.protocol_version = GHCB_PROTOCOL_VERSION;
        self.ghcb_usage = GHCB_DEFAULT_USAGE;
    }

    /// Mark `field` valid.
    pub fn set_valid(&mut self, field: GhcbField) {
        let bit = field.offset() / 8;
        self.valid_bitmap[bit / 64] |= 1 << (bit % 64);
    }

    /// Whether `field` is marked valid.
    pub fn is_valid(&self, field: GhcbField) -> bool {
        let bit = field.offset() / 8;
        self.valid_bitmap[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Guest: set up a NAE event with its exit code and exit information.
    pub fn set_exit(&mut self, exit_code: u64, info1: u64, info2: u64) {
        self.sw_exit_code = exit_code;
        self.sw_exit_info_1 = info1;
        self.sw_exit_info_2 = info2;
        self.set_valid(GhcbField::SwExitCode);
        self.set_valid(GhcbField::SwExitInfo1);
        self.set_valid(GhcbField::SwExitInfo2);
    }
}

impl core::fmt::Debug for Ghcb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ghcb")
            .field("sw_exit_code", &format_args!("{:#x}", self.sw_exit_code))
            .field(
                "sw_exit_info_1",
                &format_args!("{:#x}", self.sw_exit_info_1),
            )
            .field(
                "sw_exit_info_2",
                &format_args!("{:#x}", self.sw_exit_info_2),
            )
            .field("sw_scratch", &format_args!("{:#x}", self.sw_scratch))
            .field("valid_bitmap", &self.valid_bitmap)
            .field("protocol_version", &self.protocol_version)
            .field("ghcb_usage", &self.ghcb_usage)
            .finish_non_exhaustive()
    }
}

/// NAE exit codes (`SVM_EXIT_*` / `SVM_VMGEXIT_*`, Linux `arch/x86/include/uapi/asm/svm.h`).
pub mod exit_code {
    /// RDTSC.
    pub const RDTSC: u64 = 0x6E;
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// IOIO.
    pub const IOIO: u64 = 0x7B;
    /// MSR.
    pub const MSR: u64 = 0x7C;
    /// MMIO read.
    pub const MMIO_READ: u64 = 0x8000_0001;
    /// MMIO write.
    pub const MMIO_WRITE: u64 = 0x8000_0002;
    /// SNP page-state change.
    pub const PSC: u64 = 0x8000_0010;
    /// SNP guest request.
    pub const GUEST_REQUEST: u64 = 0x8000_0011;
    /// SNP extended guest request.
    pub const EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    /// SNP AP creation.
    pub const AP_CREATION: u64 = 0x8000_0013;
    /// Hypervisor features.
    pub const HV_FEATURES: u64 = 0x8000_FFFD;
    /// Termination request.
    pub const TERM_REQUEST: u64 = 0x8000_FFFE;
}

/// IOIO exit information 1 bits (AMD APM vol. 2, 15.10.2; docs/specs.md 1.3).
pub mod ioio {
    /// Type: 1 = IN, 0 = OUT.
    pub const TYPE_IN: u64 = 1 << 0;
    /// String operation.
    pub const STRING: u64 = 1 << 2;
    /// REP prefix.
    pub const REP: u64 = 1 << 3;
    /// 8-bit operand.
    pub const SIZE_8: u64 = 1 << 4;
    /// 16-bit operand.
    pub const SIZE_16: u64 = 1 << 5;
    /// 32-bit operand.
    pub const SIZE_32: u64 = 1 << 6;
    /// Port number shift.
    pub const PORT_SHIFT: u32 = 16;
}

/// `sw_exit_info_1` low 32 bits on return: OK.
pub const RESULT_OK: u64 = 0;
/// `sw_exit_info_1` low 32 bits on return: an exception must be injected.
pub const RESULT_EXCEPTION: u64 = 1;
/// `sw_exit_info_1` low 32 bits on return: bad input; `sw_exit_info_2` has a [`GhcbErrorCode`].
pub const RESULT_BAD_INPUT: u64 = 2;

/// GHCB error codes for `sw_exit_info_1 == 2` (`GHCB_ERR_*`, Linux `asm/sev-common.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GhcbErrorCode {
    /// 1.
    NotRegistered = 1,
    /// 2.
    InvalidUsage = 2,
    /// 3.
    InvalidScratchArea = 3,
    /// 4.
    MissingInput = 4,
    /// 5.
    InvalidInput = 5,
    /// 6.
    InvalidEvent = 6,
}

impl GhcbErrorCode {
    /// Decode.
    pub const fn from_code(v: u64) -> Option<Self> {
        match v {
            1 => Some(Self::NotRegistered),
            2 => Some(Self::InvalidUsage),
            3 => Some(Self::InvalidScratchArea),
            4 => Some(Self::MissingInput),
            5 => Some(Self::InvalidInput),
            6 => Some(Self::InvalidEvent),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_bits_follow_offsets() {
        let mut g = Ghcb::new_zeroed();
        g.set_valid(GhcbField::SwExitCode);
        assert!(g.is_valid(GhcbField::SwExitCode));
        assert!(!g.is_valid(GhcbField::SwScratch));
        // SW_EXITCODE is at 0x390: bit 114, the second word's bit 50.
        assert_eq!(g.valid_bitmap, [0, 1 << 50]);
        g.set_valid(GhcbField::Rax);
        assert_eq!(g.valid_bitmap[0], 1 << 63);
    }

    #[test]
    fn clear_sets_version_and_usage() {
        let mut g = Ghcb::new_zeroed();
        g.rax = 5;
        g.clear();
        assert_eq!(g.rax, 0);
        let bytes = g.as_bytes();
        assert_eq!(&bytes[0xFFA..0xFFC], &2u16.to_le_bytes());
    }

    const ALL_FIELDS: [GhcbField; 10] = [
        GhcbField::Rax,
        GhcbField::Rbx,
        GhcbField::Rcx,
        GhcbField::Rdx,
        GhcbField::SwExitCode,
        GhcbField::SwExitInfo1,
        GhcbField::SwExitInfo2,
        GhcbField::SwScratch,
        GhcbField::Xcr0,
        GhcbField::Cpl,
    ];

    fn le_u64(bytes: &[u8], at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    }

    proptest! {
        #[test]
        fn valid_bitmap_holds_exactly_the_fields_set(
            chosen in proptest::collection::vec(any::<bool>(), ALL_FIELDS.len()),
            order in Just(ALL_FIELDS).prop_shuffle(),
        ) {
            let mut g = Ghcb::new_zeroed();
            let is_chosen = |f: GhcbField| {
                ALL_FIELDS.iter().zip(&chosen).any(|(&a, &c)| a == f && c)
            };
            for f in order.into_iter().filter(|&f| is_chosen(f)) {
                g.set_valid(f);
                // Setting twice changes nothing.
                let before = g.valid_bitmap;
                g.set_valid(f);
                prop_assert_eq!(g.valid_bitmap, before);
            }
            let mut expected = [0u64; 2];
            for f in ALL_FIELDS {
                prop_assert_eq!(g.is_valid(f), is_chosen(f));
                if is_chosen(f) {
                    let bit = f.offset() / 8;
                    expected[bit / 64] |= 1 << (bit % 64);
                }
            }
            prop_assert_eq!(g.valid_bitmap, expected);
            // The bitmap sits at 0x3F0 in the page, little-endian.
            let bytes = g.as_bytes();
            prop_assert_eq!(le_u64(bytes, 0x3F0), expected[0]);
            prop_assert_eq!(le_u64(bytes, 0x3F8), expected[1]);
        }

        #[test]
        fn set_exit_marks_exactly_the_exit_fields(
            code in any::<u64>(),
            info1 in any::<u64>(),
            info2 in any::<u64>(),
        ) {
            let mut g = Ghcb::new_zeroed();
            g.clear();
            g.set_exit(code, info1, info2);
            let bytes = g.as_bytes();
            prop_assert_eq!(le_u64(bytes, 0x390), code);
            prop_assert_eq!(le_u64(bytes, 0x398), info1);
            prop_assert_eq!(le_u64(bytes, 0x3A0), info2);
            for f in ALL_FIELDS {
                let exit = matches!(
                    f,
                    GhcbField::SwExitCode | GhcbField::SwExitInfo1 | GhcbField::SwExitInfo2
                );
                prop_assert_eq!(g.is_valid(f), exit);
            }
        }

        #[test]
        fn page_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 4096)) {
            let Ok(g) = Ghcb::read_from_bytes(&bytes) else {
                return Err(TestCaseError::fail("a 4096-byte buffer must read as a Ghcb"));
            };
            prop_assert_eq!(g.as_bytes(), &bytes[..]);
            prop_assert_eq!(g.rax, le_u64(&bytes, 0x1F8));
            prop_assert_eq!(g.sw_exit_code, le_u64(&bytes, 0x390));
            prop_assert_eq!(g.valid_bitmap, [le_u64(&bytes, 0x3F0), le_u64(&bytes, 0x3F8)]);
            prop_assert_eq!(&g.shared_buffer[..], &bytes[0x800..0x800 + GHCB_SHARED_BUFFER_SIZE]);
            prop_assert_eq!(g.protocol_version, u16::from_le_bytes([bytes[0xFFA], bytes[0xFFB]]));
            for f in ALL_FIELDS {
                let bit = f.offset() / 8;
                prop_assert_eq!(
                    g.is_valid(f),
                    g.valid_bitmap[bit / 64] & (1 << (bit % 64)) != 0
                );
            }
        }

        #[test]
        fn error_code_from_code_round_trips(v in prop_oneof![0u64..16, any::<u64>()]) {
            match GhcbErrorCode::from_code(v) {
                Some(e) => prop_assert_eq!(e as u64, v),
                None => prop_assert!(!(1..=6).contains(&v)),
            }
        }
    }
}
