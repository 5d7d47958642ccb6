//! The vDSO every app gets: an ELF shared object built from `vdso/` (`build.rs`) and
//! embedded in the firmware, mapped user read+execute at [`VDSO_VA`] with its data
//! page user read-only at [`VVAR_VA`], one page below it, the clocks' floor user
//! read-write at [`CLOCK_FLOOR_VA`] below that, and announced to the app with
//! AT_SYSINFO_EHDR. Its clock calls run in ring 3 from the TSC and the
//! firmware's calibration, which the firmware publishes in the data page
//! ([`publish`]; the layout and the arithmetic are `vdso/vvar.rs`, shared by both).
//!
//! Both are measured firmware pages mapped a second time: the image in `.rodata`,
//! padded to whole pages so that no other firmware byte shows, and the data page in
//! `.bss`. The app sees them as `[vdso]` and `[vvar]` in `/proc/self/maps` and cannot
//! unmap, remap or reprotect them (they are windows, as the I/O and files windows).
//! Nothing is mapped at the legacy vsyscall page (0xFFFF_FFFF_FF60_0000).

#[path = "../../vdso/vvar.rs"]
pub mod vvar;

use crate::error::FwError;
use crate::kernel::Kernel;
use crate::mem::frames::FrameTables;
use crate::mem::paging::{NO_EXECUTE, USER};
use crate::mem::user::{
    Vma, VmaKind, CLOCK_FLOOR_VA, PROT_EXEC, PROT_READ, PROT_WRITE, VDSO_MAX_SIZE, VDSO_VA, VVAR_VA,
};
use nacre_shared_abi::layout::{KERNEL_VA_BASE, PAGE_SIZE_4K};
use vvar::{Calibration, ClockFloor, Vvar};

/// The linked vDSO, as `build.rs` left it.
const LINKED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vdso.so"));
/// The vDSO's size in whole pages: what the app's mapping covers.
pub const VDSO_SIZE: usize = LINKED.len().next_multiple_of(PAGE_SIZE_4K as usize);
const _: () = assert!(VDSO_SIZE as u64 <= VDSO_MAX_SIZE);
// The data page and the vDSO lie between the stack and the end of the user half.
const _: () = assert!(crate::app::loader::STACK_TOP <= CLOCK_FLOOR_VA);
const _: () = assert!(CLOCK_FLOOR_VA + PAGE_SIZE_4K == VVAR_VA);
const _: () = assert!(VVAR_VA + PAGE_SIZE_4K == VDSO_VA);
const _: () = assert!(VDSO_VA + VDSO_MAX_SIZE <= nacre_shared_abi::layout::USER_VA_END);

/// A page-aligned value: its first byte starts a page, and its size is whole pages.
#[repr(C, align(4096))]
struct PageAligned<T>(T);

/// The vDSO image, zero-padded to whole pages.
static IMAGE: PageAligned<[u8; VDSO_SIZE]> = PageAligned(padded(LINKED));

/// `bytes` followed by zeros, `N` bytes in all.
const fn padded<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// The data page: the calibration and zeros.
#[repr(C)]
struct VvarPage {
    vvar: Vvar,
    _zero: [u8; PAGE_SIZE_4K as usize - core::mem::size_of::<Vvar>()],
}

static VVAR: PageAligned<VvarPage> = PageAligned(VvarPage {
    vvar: Vvar::new(),
    _zero: [0; PAGE_SIZE_4K as usize - core::mem::size_of::<Vvar>()],
});
const _: () = assert!(core::mem::size_of::<PageAligned<VvarPage>>() == PAGE_SIZE_4K as usize);

/// The clocks' floor the vDSO and the app share (`vdso.lds`: `__nacre_floor`).
#[repr(C)]
struct FloorPage {
    floor: ClockFloor,
    _zero: [u8; PAGE_SIZE_4K as usize - core::mem::size_of::<ClockFloor>()],
}

static FLOOR: PageAligned<FloorPage> = PageAligned(FloorPage {
    floor: ClockFloor::new(),
    _zero: [0; PAGE_SIZE_4K as usize - core::mem::size_of::<ClockFloor>()],
});
const _: () = assert!(core::mem::size_of::<PageAligned<FloorPage>>() == PAGE_SIZE_4K as usize);

/// The floor of the app's clocks, which the vDSO raises with every reading and the
/// app may write (so only the app's own readings may trust it).
pub fn app_floor() -> &'static ClockFloor {
    &FLOOR.0.floor
}

/// The embedded vDSO (whole pages).
pub fn image() -> &'static [u8] {
    &IMAGE.0
}

/// Publish the firmware's clock calibration to the vDSO (the firmware holds its
/// kernel lock: the only writer).
pub fn publish(cal: &Calibration) {
    VVAR.0.vvar.publish(cal);
}

/// Tell the vDSO how many vCPUs run the app (boot, before the app runs).
pub fn set_cpus(cpus: u32) {
    VVAR.0.vvar.set_cpus(cpus);
}

/// The GPA of a firmware static (the firmware runs at `KERNEL_VA_BASE` + GPA).
fn firmware_gpa<T>(x: &'static T) -> u64 {
    (x as *const T as u64) - KERNEL_VA_BASE
}

/// Map the data page and the vDSO into the app, with their areas, after the clock is
/// calibrated (so that the app's first clock read needs no syscall). Returns the
/// vDSO's address, AT_SYSINFO_EHDR.
pub fn map(k: &mut Kernel) -> Result<u64, FwError> {
    k.calibrate_clock()?;
    let areas = [
        (
            CLOCK_FLOOR_VA,
            PAGE_SIZE_4K,
            PROT_READ | PROT_WRITE,
            firmware_gpa(&FLOOR),
        ),
        (VVAR_VA, PAGE_SIZE_4K, PROT_READ, firmware_gpa(&VVAR)),
        (
            VDSO_VA,
            VDSO_SIZE as u64,
            PROT_READ | PROT_EXEC,
            firmware_gpa(&IMAGE),
        ),
    ];
    for (va, len, prot, gpa) in areas {
        if k.vmas.overlaps(va, va + len) {
            return Err(FwError::BadApp);
        }
        let vma = Vma {
            kind: VmaKind::Window,
            ..Vma::anon(va, va + len, prot)
        };
        let flags = vma.pte_flags().unwrap_or(USER | NO_EXECUTE);
        let mut alloc = FrameTables {
            frames: &mut k.frames,
            plat: &mut *k.plat,
        };
        k.pt.map_range_4k(va, gpa, len / PAGE_SIZE_4K, flags, true, &mut alloc)
            .ok_or(FwError::OutOfMemory)?;
        if !k.vmas.insert(vma) {
            return Err(FwError::OutOfMemory);
        }
    }
    Ok(VDSO_VA)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }
    fn cstr(b: &[u8], at: usize) -> String {
        let end = b[at..].iter().position(|&c| c == 0).expect("NUL") + at;
        String::from_utf8(b[at..end].to_vec()).expect("UTF-8")
    }

    // ELF gABI values ("ELF Header", "Program Header", "Dynamic Section") and the
    // GNU symbol-versioning ones (LSB Core, "Symbol Versioning").
    const ET_DYN: u16 = 3;
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const PF_W: u32 = 2;
    const DT_NULL: u64 = 0;
    const DT_HASH: u64 = 4;
    const DT_STRTAB: u64 = 5;
    const DT_SYMTAB: u64 = 6;
    const DT_RELA: u64 = 7;
    const DT_REL: u64 = 17;
    const DT_TEXTREL: u64 = 22;
    const DT_GNU_HASH: u64 = 0x6fff_fef5;
    const DT_VERSYM: u64 = 0x6fff_fff0;
    const DT_VERDEF: u64 = 0x6fff_fffc;

    /// The dynamic entries (tag, value) of the image.
    fn dynamic(img: &[u8]) -> Vec<(u64, u64)> {
        let phoff = u64_at(img, 32) as usize;
        let phnum = usize::from(u16_at(img, 56));
        let dynamic = (0..phnum)
            .map(|i| phoff + i * 56)
            .find(|&ph| u32_at(img, ph) == PT_DYNAMIC)
            .expect("a PT_DYNAMIC");
        let mut at = u64_at(img, dynamic + 8) as usize;
        let mut out = Vec::new();
        loop {
            let (tag, val) = (u64_at(img, at), u64_at(img, at + 8));
            if tag == DT_NULL {
                return out;
            }
            out.push((tag, val));
            at += 16;
        }
    }

    fn tag(dynamic: &[(u64, u64)], t: u64) -> Option<u64> {
        dynamic.iter().find(|(k, _)| *k == t).map(|&(_, v)| v)
    }

    #[test]
    fn the_image_is_a_shared_object_without_relocations_or_writable_segments() {
        let img = image();
        assert!(img.starts_with(b"\x7fELF\x02\x01"), "ELF64, little-endian");
        assert_eq!(u16_at(img, 16), ET_DYN);
        assert_eq!(u16_at(img, 18), EM_X86_64);
        assert_eq!(img.len() % 4096, 0);
        assert_eq!(
            &img[LINKED.len()..],
            &std::vec![0; img.len() - LINKED.len()][..]
        );
        // The section headers (dietlibc finds the symbols through them) are inside
        // the mapped bytes.
        let shoff = u64_at(img, 40) as usize;
        let shnum = usize::from(u16_at(img, 60));
        assert!(shoff + shnum * 64 <= LINKED.len());
        let phoff = u64_at(img, 32) as usize;
        for i in 0..usize::from(u16_at(img, 56)) {
            let ph = phoff + i * 56;
            if u32_at(img, ph) == PT_LOAD {
                assert_eq!(u32_at(img, ph + 4) & PF_W, 0, "no writable PT_LOAD");
                assert_eq!(u64_at(img, ph + 8), 0, "loaded from its first byte");
                assert_eq!(u64_at(img, ph + 16), 0, "linked at 0");
            }
        }
        let d = dynamic(img);
        for t in [DT_RELA, DT_REL, DT_TEXTREL] {
            assert_eq!(tag(&d, t), None, "dynamic tag {t:#x}: nothing to relocate");
        }
        for t in [
            DT_HASH,
            DT_GNU_HASH,
            DT_SYMTAB,
            DT_STRTAB,
            DT_VERSYM,
            DT_VERDEF,
        ] {
            assert!(tag(&d, t).is_some(), "dynamic tag {t:#x} present");
        }
    }

    #[test]
    fn linux_names_are_exported_with_version_linux_2_6() {
        let img = image();
        let d = dynamic(img);
        let tag = |t| tag(&d, t).expect("tag") as usize;
        let (symtab, strtab, versym, verdef) = (
            tag(DT_SYMTAB),
            tag(DT_STRTAB),
            tag(DT_VERSYM),
            tag(DT_VERDEF),
        );
        // DT_HASH's nchain is the symbol count.
        let nsyms = u32_at(img, tag(DT_HASH) + 4) as usize;
        // The version definitions: (index, name).
        let mut versions = Vec::new();
        let mut vd = verdef;
        loop {
            let index = u16_at(img, vd + 4);
            let aux = vd + u32_at(img, vd + 12) as usize;
            versions.push((index, cstr(img, strtab + u32_at(img, aux) as usize)));
            let next = u32_at(img, vd + 16) as usize;
            if next == 0 {
                break;
            }
            vd += next;
        }
        let mut exported = Vec::new();
        for i in 1..nsyms {
            let sym = symtab + i * 24;
            let name = cstr(img, strtab + u32_at(img, sym) as usize);
            let value = u64_at(img, sym + 8) as usize;
            let ver = u16_at(img, versym + 2 * i) & 0x7fff;
            let vname = versions
                .iter()
                .find(|(idx, _)| *idx == ver)
                .map(|(_, n)| n.clone());
            if img[sym + 4] & 0xf == 2 {
                // STT_FUNC: inside the image, in version LINUX_2.6.
                assert!(value > 0 && value < LINKED.len(), "{name} at {value:#x}");
                assert_eq!(vname.as_deref(), Some("LINUX_2.6"), "{name}");
                exported.push(name);
            }
        }
        exported.sort();
        let mut want = Vec::new();
        for f in [
            "clock_gettime",
            "gettimeofday",
            "time",
            "getcpu",
            "clock_getres",
        ] {
            want.push(String::from(f));
            want.push(std::format!("__vdso_{f}"));
        }
        want.sort();
        assert_eq!(exported, want);
    }
}
