//! The SEV-SNP CPUID page (docs/specs.md 4.7): the CPUID values the host put in the
//! guest's CPUID page at launch, each checked by the security processor against what
//! the CPU can report. The guest takes CPUID from it instead of trusting the
//! hypervisor's answer to the CPUID instruction; nacre's firmware reads the C-bit
//! position from it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Most entries a CPUID page holds (SEV-SNP firmware ABI, "CPUID Reporting";
/// `SNP_CPUID_COUNT_MAX` in Linux `arch/x86/include/asm/sev.h`).
pub const CPUID_PAGE_MAX_ENTRIES: usize = 64;

/// The leaf whose EBX bits 5:0 give the C-bit position (AMD APM vol. 3, E.4.17,
/// "Function 8000_001Fh—Encrypted Memory Capabilities").
pub const LEAF_ENCRYPTED_MEMORY: u32 = 0x8000_001F;

/// One entry: the inputs it answers and the four result registers.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CpuidPageEntry {
    /// EAX input (the leaf).
    pub eax_in: u32,
    /// ECX input (the subleaf).
    pub ecx_in: u32,
    /// XCR0 input (leaf 0xD).
    pub xcr0_in: u64,
    /// IA32_XSS input (leaf 0xD).
    pub xss_in: u64,
    /// Result EAX.
    pub eax: u32,
    /// Result EBX.
    pub ebx: u32,
    /// Result ECX.
    pub ecx: u32,
    /// Result EDX.
    pub edx: u32,
    /// Reserved, zero.
    pub reserved: u64,
}

/// The page: a 16-byte header and the entries.
#[repr(C)]
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CpuidPage {
    /// Entries in use, at most [`CPUID_PAGE_MAX_ENTRIES`].
    pub count: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Reserved, zero.
    pub reserved1: u64,
    /// The entries; those past `count` are ignored.
    pub entries: [CpuidPageEntry; CPUID_PAGE_MAX_ENTRIES],
    /// The rest of the 4 KiB page.
    pub tail: [u8; 4096 - 16 - 48 * CPUID_PAGE_MAX_ENTRIES],
}

const _: () = assert!(core::mem::size_of::<CpuidPageEntry>() == 48);
const _: () = assert!(core::mem::size_of::<CpuidPage>() == 4096);
const _: () = assert!(core::mem::offset_of!(CpuidPage, entries) == 16);
const _: () = assert!(core::mem::offset_of!(CpuidPageEntry, eax) == 24);
const _: () = assert!(core::mem::offset_of!(CpuidPageEntry, ebx) == 28);

/// Why a CPUID page gives no C-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuidPageError {
    /// `count` is above [`CPUID_PAGE_MAX_ENTRIES`].
    TooManyEntries(u32),
    /// No entry for [`LEAF_ENCRYPTED_MEMORY`].
    NoEncryptedMemoryLeaf,
    /// The C-bit position is outside 32..=51 (above 4 GiB of RAM, inside a 52-bit GPA).
    BadCBit(u32),
}

impl core::fmt::Display for CpuidPageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooManyEntries(n) => write!(
                f,
                "the page says it has {n} entries; it has room for {CPUID_PAGE_MAX_ENTRIES}"
            ),
            Self::NoEncryptedMemoryLeaf => write!(
                f,
                "it has no entry for leaf {LEAF_ENCRYPTED_MEMORY:#x}, which gives the C-bit"
            ),
            Self::BadCBit(bit) => write!(
                f,
                "leaf {LEAF_ENCRYPTED_MEMORY:#x} puts the C-bit at {bit}, outside 32 to 51"
            ),
        }
    }
}

impl CpuidPage {
    /// The entries in use.
    pub fn used(&self) -> Result<&[CpuidPageEntry], CpuidPageError> {
        let count = self.count as usize;
        if count > CPUID_PAGE_MAX_ENTRIES {
            return Err(CpuidPageError::TooManyEntries(self.count));
        }
        Ok(&self.entries[..count])
    }

    /// The first entry in use for `leaf` and `subleaf`.
    pub fn find(&self, leaf: u32, subleaf: u32) -> Result<Option<&CpuidPageEntry>, CpuidPageError> {
        Ok(self
            .used()?
            .iter()
            .find(|e| e.eax_in == leaf && e.ecx_in == subleaf))
    }

    /// The C-bit position: EBX bits 5:0 of leaf 0x8000_001F, checked to be in 32..=51.
    pub fn c_bit(&self) -> Result<u32, CpuidPageError> {
        let entry = self
            .find(LEAF_ENCRYPTED_MEMORY, 0)?
            .ok_or(CpuidPageError::NoEncryptedMemoryLeaf)?;
        let c_bit = entry.ebx & 0x3F;
        if !(32..=51).contains(&c_bit) {
            return Err(CpuidPageError::BadCBit(c_bit));
        }
        Ok(c_bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn errors_read_as_words() {
        use std::string::ToString;
        assert_eq!(
            CpuidPageError::BadCBit(60).to_string(),
            "leaf 0x8000001f puts the C-bit at 60, outside 32 to 51"
        );
        assert!(CpuidPageError::TooManyEntries(65)
            .to_string()
            .contains("65 entries"));
        assert!(!CpuidPageError::NoEncryptedMemoryLeaf
            .to_string()
            .contains("NoEncrypted"));
    }

    fn page(entries: &[CpuidPageEntry]) -> CpuidPage {
        let mut page = CpuidPage::new_zeroed();
        page.count = entries.len() as u32;
        page.entries[..entries.len()].copy_from_slice(entries);
        page
    }

    fn leaf(eax_in: u32, ecx_in: u32, ebx: u32) -> CpuidPageEntry {
        CpuidPageEntry {
            eax_in,
            ecx_in,
            ebx,
            ..Default::default()
        }
    }

    #[test]
    fn finds_the_c_bit() {
        let p = page(&[leaf(0, 0, 1), leaf(0x8000_001F, 0, 0x1_6F33)]);
        // EBX 0x16F33: C-bit 51 (0x33), the rest other fields.
        assert_eq!(p.c_bit(), Ok(51));
        assert_eq!(page(&[leaf(0x8000_001F, 0, 47)]).c_bit(), Ok(47));
    }

    #[test]
    fn refuses_what_gives_no_usable_c_bit() {
        assert_eq!(
            page(&[leaf(0, 0, 1)]).c_bit(),
            Err(CpuidPageError::NoEncryptedMemoryLeaf)
        );
        // The leaf past `count` does not count.
        let mut p = page(&[leaf(0, 0, 1)]);
        p.entries[1] = leaf(0x8000_001F, 0, 47);
        assert_eq!(p.c_bit(), Err(CpuidPageError::NoEncryptedMemoryLeaf));
        assert_eq!(
            page(&[leaf(0x8000_001F, 0, 31)]).c_bit(),
            Err(CpuidPageError::BadCBit(31))
        );
        assert_eq!(
            page(&[leaf(0x8000_001F, 0, 52)]).c_bit(),
            Err(CpuidPageError::BadCBit(52))
        );
        p.count = 65;
        assert_eq!(p.c_bit(), Err(CpuidPageError::TooManyEntries(65)));
    }
}
