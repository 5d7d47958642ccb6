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
