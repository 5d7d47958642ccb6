//! A minimal, fully bounds-checked ELF64 reader for the measured app (the loader
//! already refused anything but static x86-64 executables at packaging time; this
//! checks again because the firmware must not trust its own input blindly).

use crate::error::FwError;

/// PT_LOAD.
pub const PT_LOAD: u32 = 1;
/// PT_INTERP.
pub const PT_INTERP: u32 = 3;
/// ET_EXEC.
pub const ET_EXEC: u16 = 2;
/// ET_DYN.
pub const ET_DYN: u16 = 3;
/// EM_X86_64.
pub const EM_X86_64: u16 = 62;

/// One program header.
#[derive(Debug, Clone, Copy)]
pub struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A checked ELF file.
#[derive(Debug, Clone, Copy)]
pub struct Elf<'a> {
    pub bytes: &'a [u8],
    pub e_type: u16,
    pub entry: u64,
    pub phoff: u64,
    pub phnum: u16,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, FwError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(FwError::BadApp)
}
fn u32_at(b: &[u8], off: usize) -> Result<u32, FwError> {
    let s = b.get(off..off + 4).ok_or(FwError::BadApp)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], off: usize) -> Result<u64, FwError> {
    let s = b.get(off..off + 8).ok_or(FwError::BadApp)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

impl<'a> Elf<'a> {
    /// Parse and check the header and every program header.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FwError> {
        if bytes.len() < 64 || bytes[0..4] != *b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
            return Err(FwError::BadApp);
        }
        let e_type = u16_at(bytes, 16)?;
        if u16_at(bytes, 18)? != EM_X86_64 || !(e_type == ET_EXEC || e_type == ET_DYN) {
            return Err(FwError::BadApp);
        }
        let elf = Self {
            bytes,
            e_type,
            entry: u64_at(bytes, 24)?,
            phoff: u64_at(bytes, 32)?,
            phnum: u16_at(bytes, 56)?,
        };
        if u16_at(bytes, 54)? != 56 {
            return Err(FwError::BadApp);
        }
        for i in 0..elf.phnum {
            let ph = elf.phdr(i)?;
            if ph.p_type == PT_INTERP {
                return Err(FwError::BadApp);
            }
            if ph.p_type == PT_LOAD {
                let file_end = ph.offset.checked_add(ph.filesz).ok_or(FwError::BadApp)?;
                ph.vaddr.checked_add(ph.memsz).ok_or(FwError::BadApp)?;
                if file_end > bytes.len() as u64 || ph.filesz > ph.memsz {
                    return Err(FwError::BadApp);
                }
            }
        }
        Ok(elf)
    }

    /// Program header `i`.
    pub fn phdr(&self, i: u16) -> Result<Phdr, FwError> {
        let off = usize::try_from(self.phoff)
            .ok()
            .and_then(|o| o.checked_add(usize::from(i) * 56))
            .ok_or(FwError::BadApp)?;
        Ok(Phdr {
            p_type: u32_at(self.bytes, off)?,
            flags: u32_at(self.bytes, off + 4)?,
            offset: u64_at(self.bytes, off + 8)?,
            vaddr: u64_at(self.bytes, off + 16)?,
            filesz: u64_at(self.bytes, off + 32)?,
            memsz: u64_at(self.bytes, off + 40)?,
        })
    }

    /// Iterate over PT_LOAD headers.
    pub fn loads(&self) -> impl Iterator<Item = Phdr> + '_ {
        (0..self.phnum)
            .filter_map(|i| self.phdr(i).ok())
            .filter(|p| p.p_type == PT_LOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// A program header: (type, flags, offset, vaddr, filesz, memsz).
    type Ph = (u32, u32, u64, u64, u64, u64);

    /// An ELF64 x86-64 file of `e_type` with entry 0x401000 and `phdrs` right after
    /// the header, padded to `len` bytes.
    fn elf(e_type: u16, phdrs: &[Ph], len: usize) -> Vec<u8> {
        let mut b = std::vec![0u8; len.max(64 + 56 * phdrs.len())];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // ELFDATA2LSB
        b[6] = 1; // EV_CURRENT
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&0x40_1000u64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, &(t, f, off, va, fsz, msz)) in phdrs.iter().enumerate() {
            let at = 64 + 56 * i;
            b[at..at + 4].copy_from_slice(&t.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&f.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            b[at + 16..at + 24].copy_from_slice(&va.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&fsz.to_le_bytes());
            b[at + 40..at + 48].copy_from_slice(&msz.to_le_bytes());
        }
        b
    }

    const TEXT: Ph = (PT_LOAD, 5, 0, 0x40_0000, 0x200, 0x200);
    const DATA: Ph = (PT_LOAD, 6, 0x200, 0x40_1200, 0x100, 0x3000);
    const NOTE: Ph = (4, 4, 0x100, 0x40_0100, 0x20, 0x20);

    #[test]
    fn a_static_executable_parses_with_its_loads() {
        let bytes = elf(ET_EXEC, &[TEXT, NOTE, DATA], 0x300);
        let e = Elf::parse(&bytes).expect("a valid ELF");
        assert_eq!((e.e_type, e.entry, e.phnum), (ET_EXEC, 0x40_1000, 3));
        let loads: Vec<(u64, u64)> = e.loads().map(|p| (p.vaddr, p.memsz)).collect();
        assert_eq!(loads, [(0x40_0000, 0x200), (0x40_1200, 0x3000)]);
        assert_eq!(e.phdr(2).map(|p| p.flags), Ok(6));
    }

    #[test]
    fn a_static_pie_parses() {
        let bytes = elf(ET_DYN, &[TEXT], 0x200);
        assert_eq!(Elf::parse(&bytes).map(|e| e.e_type), Ok(ET_DYN));
    }

    #[test]
    fn a_wrong_identity_is_refused() {
        let good = elf(ET_EXEC, &[TEXT], 0x200);
        for (at, value) in [(0, 0x7e), (4, 1), (5, 2)] {
            let mut b = good.clone();
            b[at] = value;
            assert_eq!(Elf::parse(&b).err(), Some(FwError::BadApp), "byte {at}");
        }
        assert_eq!(Elf::parse(&good[..63]).err(), Some(FwError::BadApp));
    }

    #[test]
    fn other_machines_and_types_are_refused() {
        let mut b = elf(ET_EXEC, &[TEXT], 0x200);
        b[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
        assert_eq!(Elf::parse(&b).err(), Some(FwError::BadApp));
        let rel = elf(1, &[TEXT], 0x200); // ET_REL
        assert_eq!(Elf::parse(&rel).err(), Some(FwError::BadApp));
        let mut b = elf(ET_EXEC, &[TEXT], 0x200);
        b[54..56].copy_from_slice(&64u16.to_le_bytes()); // e_phentsize
        assert_eq!(Elf::parse(&b).err(), Some(FwError::BadApp));
    }

    #[test]
    fn a_dynamic_app_with_an_interpreter_is_refused() {
        let bytes = elf(
            ET_DYN,
            &[TEXT, (PT_INTERP, 4, 0x100, 0x40_0100, 0x1c, 0x1c)],
            0x200,
        );
        assert_eq!(Elf::parse(&bytes).err(), Some(FwError::BadApp));
    }

    #[test]
    fn segments_must_lie_in_the_file_and_fit_their_memory() {
        let past_end = (PT_LOAD, 5, 0x100, 0x40_0000, 0x200, 0x200);
        assert!(Elf::parse(&elf(ET_EXEC, &[past_end], 0x200)).is_err());
        let file_bigger = (PT_LOAD, 5, 0, 0x40_0000, 0x200, 0x100);
        assert!(Elf::parse(&elf(ET_EXEC, &[file_bigger], 0x200)).is_err());
        let wraps = (PT_LOAD, 5, 0, u64::MAX - 0x10, 0x100, 0x100);
        assert!(Elf::parse(&elf(ET_EXEC, &[wraps], 0x200)).is_err());
        let offset_wraps = (PT_LOAD, 5, u64::MAX, 0x40_0000, 2, 2);
        assert!(Elf::parse(&elf(ET_EXEC, &[offset_wraps], 0x200)).is_err());
    }

    #[test]
    fn program_headers_outside_the_file_are_refused() {
        let mut b = elf(ET_EXEC, &[TEXT], 0x200);
        b[32..40].copy_from_slice(&0x1000u64.to_le_bytes()); // e_phoff
        assert_eq!(Elf::parse(&b).err(), Some(FwError::BadApp));
        let mut b = elf(ET_EXEC, &[TEXT], 0x200);
        b[56..58].copy_from_slice(&40u16.to_le_bytes()); // e_phnum
        assert_eq!(Elf::parse(&b).err(), Some(FwError::BadApp));
    }

    proptest! {
        /// Any bytes at all: an error or a file whose every load lies in it.
        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), header in any::<bool>()) {
            if header && bytes.len() >= 64 {
                bytes[..64].copy_from_slice(&elf(ET_EXEC, &[], 64)[..64]);
                bytes[56] = (bytes.len().saturating_sub(64) / 56) as u8;
            }
            if let Ok(e) = Elf::parse(&bytes) {
                for p in e.loads() {
                    prop_assert!(p.offset + p.filesz <= bytes.len() as u64);
                    prop_assert!(p.filesz <= p.memsz);
                }
            }
        }
    }
}
