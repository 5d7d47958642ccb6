//! The app's memory: mmap, munmap, mprotect, mremap, madvise, msync. Areas are
//! demand-paged (`kernel.rs`): mapping 16 GiB and touching 10 MiB accepts about 10 MiB.

use super::errno::*;
use super::{mem_err, SysResult};
use crate::kernel::Kernel;
use crate::mem::user::{Vma, VmaKind, PROT_EXEC, PROT_READ, PROT_WRITE};
use nacre_shared_abi::layout::{PAGE_SIZE_2M, PAGE_SIZE_4K, USER_VA_END};

/// mmap flags (`include/uapi/asm-generic/mman-common.h`, `mman.h`, x86 `mman.h`).
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// mremap flags (`include/uapi/linux/mman.h`).
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MREMAP_DONTUNMAP: u64 = 4;
/// madvise advice (`include/uapi/asm-generic/mman-common.h`).
const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;
const MADV_REMOVE: u64 = 9;
const MADV_HWPOISON: u64 = 100;

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE_4K - 1)
        .map(|v| v & !(PAGE_SIZE_4K - 1))
}

/// `[addr, addr + len)` rounded out to pages; EINVAL unless `addr` is page-aligned,
/// `len` non-zero and the range inside the user half.
pub fn page_range(addr: u64, len: u64) -> Result<(u64, u64), u64> {
    if !addr.is_multiple_of(PAGE_SIZE_4K) || len == 0 {
        return Err(EINVAL);
    }
    let end = addr.checked_add(len).and_then(page_up).ok_or(EINVAL)?;
    if end > USER_VA_END {
        return Err(EINVAL);
    }
    Ok((addr, end))
}

pub fn mmap(k: &mut Kernel, a: [u64; 6]) -> SysResult {
    let (addr, len, prot, flags, fd, offset) = (a[0], a[1], a[2] as u32, a[3], a[4] as i32, a[5]);
    let kind = flags & MAP_SHARED_VALIDATE;
    if kind != MAP_SHARED && kind != MAP_PRIVATE && kind != MAP_SHARED_VALIDATE {
        return Err(EINVAL);
    }
    if len == 0 || len > USER_VA_END {
        return Err(EINVAL);
    }
    let len = page_up(len).ok_or(ENOMEM)?;
    let prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
    // What backs the area: anonymous memory (also /dev/zero), or a packaged file.
    let file = if flags & MAP_ANONYMOUS != 0 {
        None
    } else {
        if !offset.is_multiple_of(PAGE_SIZE_4K) {
            return Err(EINVAL);
        }
        match k.files.mmap_source(fd, offset)? {
            Some(f) => {
                // A shared writable mapping of a read-only file is refused like a
                // descriptor opened O_RDONLY: EACCES.
                if kind != MAP_PRIVATE && prot & PROT_WRITE != 0 {
                    return Err(EACCES);
                }
                Some(f)
            }
            None => None, // /dev/zero
        }
    };
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        let (s, e) = page_range(addr, len)?;
        if k.vmas.overlaps_window(s, e) {
            return Err(ENOMEM);
        }
        if k.vmas.overlaps(s, e) {
            if flags & MAP_FIXED_NOREPLACE != 0 {
                return Err(EEXIST);
            }
            k.unmap_range(s, e).map_err(mem_err)?;
        }
        s
    } else {
        k.find_free(len).ok_or(ENOMEM)?
    };
    let vma = match file {
        None => Vma::anon(start, start + len, prot),
        Some((gpa, file_len)) => Vma {
            kind: VmaKind::File,
            gpa,
            file_end: start + page_up(file_len).unwrap_or(0).min(len),
            ..Vma::anon(start, start + len, prot)
        },
    };
    if !k.vmas.insert(vma) {
        return Err(ENOMEM);
    }
    Ok(start)
}

pub fn munmap(k: &mut Kernel, addr: u64, len: u64) -> SysResult {
    let (start, end) = page_range(addr, len)?;
    if k.vmas.overlaps_window(start, end) {
        return Err(EINVAL);
    }
    k.unmap_range(start, end).map_err(mem_err)?;
    Ok(0)
}

pub fn mprotect(k: &mut Kernel, addr: u64, len: u64, prot: u32) -> SysResult {
    if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | 0x0100_0000 | 0x0200_0000) != 0 {
        return Err(EINVAL);
    }
    let (start, end) = page_range(addr, len)?;
    if k.vmas.overlaps_window(start, end) {
        return Err(EACCES);
    }
    let prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
    if !k.vmas.covers_any(start, end) {
        return Err(ENOMEM);
    }
    k.split_edges(start, end).map_err(mem_err)?;
    if !k.vmas.protect_range(start, end, prot) {
        return Err(ENOMEM);
    }
    k.protect_pages(start, end, prot);
    Ok(0)
}

/// mremap: shrink in place, grow in place when the pages after the area are free, or
/// move (with MREMAP_MAYMOVE) by moving the page mappings, never copying data.
pub fn mremap(
    k: &mut Kernel,
    old: u64,
    old_len: u64,
    new_len: u64,
    flags: u64,
    new_addr: u64,
) -> SysResult {
    if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
        || flags & MREMAP_DONTUNMAP != 0
        || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
        || !old.is_multiple_of(PAGE_SIZE_4K)
        || new_len == 0
    {
        return Err(EINVAL);
    }
    let old_len = page_up(old_len).ok_or(EINVAL)?;
    let new_len = page_up(new_len).ok_or(EINVAL)?;
    let old_end = old.checked_add(old_len).ok_or(EINVAL)?;
    if new_len > USER_VA_END || old_end > USER_VA_END {
        return Err(EINVAL);
    }
    // The old range must lie in one area (Linux: EFAULT otherwise).
    let vma = k.vmas.find(old).ok_or(EFAULT)?;
    if old_len == 0 || old_end > vma.end || vma.kind == VmaKind::Window {
        return Err(EFAULT);
    }
    if flags & MREMAP_FIXED != 0 {
        let (dst, dst_end) = page_range(new_addr, new_len)?;
        if dst < old_end && old < dst_end {
            return Err(EINVAL);
        }
        if k.vmas.overlaps_window(dst, dst_end) {
            return Err(ENOMEM);
        }
        k.unmap_range(dst, dst_end).map_err(mem_err)?;
        return move_area(k, &vma, old, old_len, dst, new_len);
    }
    if new_len <= old_len {
        if new_len < old_len {
            k.unmap_range(old + new_len, old_end).map_err(mem_err)?;
        }
        return Ok(old);
    }
    let grow_end = old.checked_add(new_len).ok_or(ENOMEM)?;
    if old_end == vma.end && grow_end <= USER_VA_END && !k.vmas.overlaps(old_end, grow_end) {
        let grown = Vma {
            start: old_end,
            end: grow_end,
            gpa: if vma.kind == VmaKind::File {
                vma.gpa + (old_end - vma.start)
            } else {
                0
            },
            ..vma
        };
        if !k.vmas.insert(grown) {
            return Err(ENOMEM);
        }
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(ENOMEM);
    }
    let dst = k.find_free(new_len).ok_or(ENOMEM)?;
    move_area(k, &vma, old, old_len, dst, new_len)
}

/// Move `[old, old + old_len)` of `vma` to `[dst, dst + new_len)` (free): the area
/// and its page mappings, 2 MiB at a time where both sides are 2 MiB aligned.
fn move_area(
    k: &mut Kernel,
    vma: &Vma,
    old: u64,
    old_len: u64,
    dst: u64,
    new_len: u64,
) -> SysResult {
    let keep = old_len.min(new_len);
    let moved = Vma {
        start: dst,
        end: dst + new_len,
        gpa: if vma.kind == VmaKind::File {
            vma.gpa + (old - vma.start)
        } else {
            0
        },
        file_end: if vma.kind == VmaKind::File {
            dst + vma.file_end.saturating_sub(old).min(new_len)
        } else {
            0
        },
        ..*vma
    };
    if !k.vmas.insert(moved) {
        return Err(ENOMEM);
    }
    let aligned = (old % PAGE_SIZE_2M) == (dst % PAGE_SIZE_2M);
    k.split_edges(old, old + keep).map_err(mem_err)?;
    if !aligned {
        // Only whole 4 KiB mappings can move to a differently aligned place.
        split_all(k, old, old + keep)?;
    }
    let mut va = old;
    while let Some((at, level, entry)) = k.pt.next_leaf(va, old + keep) {
        let gpa = k.pt.leaf_gpa(entry, level);
        let flags = entry
            & (crate::mem::paging::USER
                | crate::mem::paging::WRITABLE
                | crate::mem::paging::NO_EXECUTE);
        k.pt.clear_leaf(at, level);
        let to = dst + (at - old);
        let mut alloc = crate::mem::frames::FrameTables {
            frames: &mut k.frames,
            plat: &mut *k.plat,
        };
        let ok = if level == 1 {
            k.pt.map_2m(to, gpa, flags, &mut alloc)
        } else {
            k.pt.map_4k(to, gpa, flags, true, &mut alloc)
        };
        ok.ok_or(ENOMEM)?;
        va = at
            + if level == 1 {
                PAGE_SIZE_2M
            } else {
                PAGE_SIZE_4K
            };
    }
    k.unmap_range(old, old + old_len).map_err(mem_err)?;
    Ok(dst)
}

/// Split every 2 MiB mapping in `[start, end)`.
fn split_all(k: &mut Kernel, start: u64, end: u64) -> Result<(), u64> {
    let mut va = start;
    while let Some((at, level, _)) = k.pt.next_leaf(va, end) {
        if level == 1 {
            let mut alloc = crate::mem::frames::FrameTables {
                frames: &mut k.frames,
                plat: &mut *k.plat,
            };
            k.pt.split_huge(at, &mut alloc).ok_or(ENOMEM)?;
            va = at + PAGE_SIZE_2M;
        } else {
            va = at + PAGE_SIZE_4K;
        }
    }
    Ok(())
}

pub fn madvise(k: &mut Kernel, addr: u64, len: u64, advice: u64) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE_4K) {
        return Err(EINVAL);
    }
    if len == 0 {
        return Ok(0);
    }
    let end = addr.checked_add(len).and_then(page_up).ok_or(EINVAL)?;
    match advice {
        // Private anonymous pages read as zeros afterwards; file pages show the file
        // again: both by dropping the mappings, which the next touch faults back in.
        MADV_DONTNEED | MADV_FREE => {
            if !k.vmas.covers_any(addr, end) {
                return Err(ENOMEM);
            }
            if k.vmas.overlaps_window(addr, end) {
                return Err(EINVAL);
            }
            k.split_edges(addr, end).map_err(mem_err)?;
            k.drop_pages(addr, end);
            Ok(0)
        }
        MADV_REMOVE | MADV_HWPOISON => Err(EINVAL),
        // Everything else is a hint.
        0..=3 | 10..=25 => Ok(0),
        _ => Err(EINVAL),
    }
}

pub fn msync(k: &mut Kernel, addr: u64, len: u64, flags: u64) -> SysResult {
    // MS_ASYNC 1, MS_INVALIDATE 2, MS_SYNC 4.
    if !addr.is_multiple_of(PAGE_SIZE_4K) || flags & !7 != 0 || flags & 5 == 5 {
        return Err(EINVAL);
    }
    let end = addr.checked_add(len).and_then(page_up).ok_or(ENOMEM)?;
    if len != 0 && !k.vmas.covers_any(addr, end) {
        return Err(ENOMEM);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_out_to_pages_inside_the_user_half() {
        assert_eq!(page_range(0x1000, 1), Ok((0x1000, 0x2000)));
        assert_eq!(page_range(0x1000, 0x2000), Ok((0x1000, 0x3000)));
        assert_eq!(page_range(0x1001, 1), Err(EINVAL), "unaligned start");
        assert_eq!(page_range(0x1000, 0), Err(EINVAL), "empty");
        assert_eq!(
            page_range(USER_VA_END - 0x1000, 0x1000),
            Ok((USER_VA_END - 0x1000, USER_VA_END))
        );
        assert_eq!(page_range(USER_VA_END - 0x1000, 0x1001), Err(EINVAL));
        assert_eq!(page_range(0x1000, u64::MAX), Err(EINVAL), "wraps");
        assert_eq!(page_up(u64::MAX), None);
    }
}
