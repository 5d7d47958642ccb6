//! Paths and descriptors on the read-only file tree: open, close, stat, access,
//! readlink, getdents64, dup, fcntl, the working directory. Anything that would change
//! the tree fails as on a read-only file system (EROFS).

use super::errno::*;
use super::{mem_err, SysResult};
use crate::fs::*;
use crate::kernel::Kernel;

pub use crate::fs::AT_FDCWD;

/// `*at` flags (`include/uapi/linux/fcntl.h`).
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EACCESS: u64 = 0x200;
const AT_NO_AUTOMOUNT: u64 = 0x800;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_STATX_SYNC_TYPE: u64 = 0x6000;
/// access modes (`include/linux/fs.h` MAY_*, `unistd.h`).
const W_OK: u64 = 2;
const X_OK: u64 = 1;

/// A path from the app, copied into the scratch buffer.
fn path_in(k: &mut Kernel, va: u64) -> Result<usize, u64> {
    match k.copy_path_from_user(va) {
        Ok(n) => Ok(n),
        Err(None) => Err(ENAMETOOLONG),
        Err(Some(e)) => Err(mem_err(e)),
    }
}

/// Resolve the path at `va` for a `*at` call.
fn lookup(k: &mut Kernel, dirfd: i64, va: u64) -> Result<Target, u64> {
    let n = path_in(k, va)?;
    let path = &k.scratch.path[..n];
    let start = k.files.start_dir(dirfd, path.first() == Some(&b'/'))?;
    k.files.resolve(start, path)
}

pub fn openat(k: &mut Kernel, dirfd: i64, path: u64, flags: u32) -> SysResult {
    if flags & O_TMPFILE == O_TMPFILE {
        return Err(EROFS);
    }
    let target = match lookup(k, dirfd, path) {
        Ok(t) => t,
        // Creating anything is refused the way a read-only file system refuses it.
        Err(ENOENT) if flags & O_CREAT != 0 => return Err(EROFS),
        Err(e) => return Err(e),
    };
    if flags & O_CREAT != 0 && flags & O_EXCL != 0 {
        return Err(EEXIST);
    }
    if target == Target::Special(Special::Exe) && flags & O_NOFOLLOW != 0 && flags & O_PATH == 0 {
        return Err(ELOOP);
    }
    let node = k.files.node_of(target)?;
    let write = flags & O_ACCMODE != 0;
    match node {
        Node::Dir { .. } if write || flags & O_CREAT != 0 => return Err(EISDIR),
        Node::Dir { .. } => {}
        _ if flags & O_DIRECTORY != 0 => return Err(ENOTDIR),
        Node::File { .. } if (write || flags & O_TRUNC != 0) && flags & O_PATH == 0 => {
            return Err(EROFS)
        }
        _ => {}
    }
    if flags & O_ACCMODE == O_ACCMODE {
        return Err(EINVAL);
    }
    k.files.open(node, flags)
}

pub fn close(k: &mut Kernel, fd: u64) -> SysResult {
    let released = k.files.close(fd)?;
    let_go(k, released);
    Ok(0)
}

/// An open file whose last reference went away: the epoll items that watch it (or
/// belong to it, for an epoll instance) go, and a pipe end closes.
pub fn let_go(k: &mut Kernel, released: Option<Released>) {
    let Some(r) = released else {
        return;
    };
    super::epoll::forget_file(k, r.index);
    if let Node::Pipe(end) = r.node {
        super::pipe::close_end(k, end);
    }
    if let Node::Socket(h) = r.node {
        super::socket::close(k, h);
    }
}

/// `struct stat` on x86-64 (`arch/x86/include/uapi/asm/stat.h`), 144 bytes.
fn stat_bytes(st: &Stat) -> [u8; 144] {
    let mut b = [0u8; 144];
    b[0..8].copy_from_slice(&st.dev.to_le_bytes());
    b[8..16].copy_from_slice(&st.ino.to_le_bytes());
    b[16..24].copy_from_slice(&st.nlink.to_le_bytes());
    b[24..28].copy_from_slice(&st.mode.to_le_bytes());
    // st_uid, st_gid 0.
    b[40..48].copy_from_slice(&st.rdev.to_le_bytes());
    b[48..56].copy_from_slice(&st.size.to_le_bytes());
    b[56..64].copy_from_slice(&4096u64.to_le_bytes());
    b[64..72].copy_from_slice(&st.size.div_ceil(512).to_le_bytes());
    // st_atime, st_mtime, st_ctime, each seconds then nanoseconds: the packaged time.
    let (sec, nsec) = st.mtime;
    for at in [72, 88, 104] {
        b[at..at + 8].copy_from_slice(&sec.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&u64::from(nsec).to_le_bytes());
    }
    b
}

pub fn fstat(k: &mut Kernel, fd: u64, buf: u64) -> SysResult {
    let node = k.files.get(fd)?.node;
    let st = k.files.stat_node(node)?;
    k.copy_to_user(buf, &stat_bytes(&st)).map_err(mem_err)?;
    Ok(0)
}

/// The target of a `*at` call with `AT_EMPTY_PATH` and an empty path: `dirfd` itself.
fn empty_path_target(k: &mut Kernel, dirfd: i64, va: u64, flags: u64) -> Result<Option<Stat>, u64> {
    if flags & AT_EMPTY_PATH == 0 {
        return Ok(None);
    }
    let mut first = [0u8; 1];
    k.copy_from_user(&mut first, va).map_err(mem_err)?;
    if first[0] != 0 {
        return Ok(None);
    }
    if dirfd == AT_FDCWD {
        return k.files.stat(Target::Inode(k.files.cwd), true).map(Some);
    }
    let fd = u64::try_from(dirfd).map_err(|_| EBADF)?;
    let node = k.files.get(fd)?.node;
    k.files.stat_node(node).map(Some)
}

fn stat_at(k: &mut Kernel, dirfd: i64, path: u64, flags: u64) -> Result<Stat, u64> {
    if let Some(st) = empty_path_target(k, dirfd, path, flags)? {
        return Ok(st);
    }
    let target = lookup(k, dirfd, path)?;
    k.files.stat(target, flags & AT_SYMLINK_NOFOLLOW == 0)
}

pub fn fstatat(k: &mut Kernel, dirfd: i64, path: u64, buf: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let st = stat_at(k, dirfd, path, flags)?;
    k.copy_to_user(buf, &stat_bytes(&st)).map_err(mem_err)?;
    Ok(0)
}

/// statx (`include/uapi/linux/stat.h`): `struct statx`, 256 bytes; the basic fields.
pub fn statx(k: &mut Kernel, dirfd: i64, path: u64, flags: u64, _mask: u32, buf: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE) != 0
        || flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE
    {
        return Err(EINVAL);
    }
    let st = stat_at(k, dirfd, path, flags)?;
    k.copy_to_user(buf, &statx_bytes(&st)).map_err(mem_err)?;
    Ok(0)
}

/// `struct statx` (`include/uapi/linux/stat.h`, 256 bytes) with the basic fields.
fn statx_bytes(st: &Stat) -> [u8; 256] {
    const STATX_BASIC_STATS: u32 = 0x7FF;
    let mut b = [0u8; 256];
    b[0..4].copy_from_slice(&STATX_BASIC_STATS.to_le_bytes());
    b[4..8].copy_from_slice(&4096u32.to_le_bytes());
    b[16..20].copy_from_slice(&(st.nlink as u32).to_le_bytes());
    b[28..30].copy_from_slice(&(st.mode as u16).to_le_bytes());
    b[32..40].copy_from_slice(&st.ino.to_le_bytes());
    b[40..48].copy_from_slice(&st.size.to_le_bytes());
    b[48..56].copy_from_slice(&st.size.div_ceil(512).to_le_bytes());
    // stx_atime, stx_ctime, stx_mtime (`struct statx_timestamp`: seconds, nanoseconds);
    // no birth time (STATX_BTIME is not in the mask).
    let (sec, nsec) = st.mtime;
    for at in [64, 96, 112] {
        b[at..at + 8].copy_from_slice(&sec.to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&nsec.to_le_bytes());
    }
    b[128..132].copy_from_slice(&((st.rdev >> 8) as u32).to_le_bytes());
    b[132..136].copy_from_slice(&((st.rdev & 0xFF) as u32).to_le_bytes());
    b[136..140].copy_from_slice(&((st.dev >> 8) as u32).to_le_bytes());
    b[140..144].copy_from_slice(&((st.dev & 0xFF) as u32).to_le_bytes());
    b
}

pub fn faccessat(k: &mut Kernel, dirfd: i64, path: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 || flags & !(AT_SYMLINK_NOFOLLOW | AT_EACCESS | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let st = stat_at(k, dirfd, path, flags)?;
    let kind = st.mode & 0o170000;
    if mode & W_OK != 0 && st.dev == TREE_DEV {
        return Err(EROFS);
    }
    // The app runs as root: execute needs one execute bit on a file.
    if mode & X_OK != 0 && kind != S_IFDIR && st.mode & 0o111 == 0 {
        return Err(EACCES);
    }
    Ok(0)
}

pub fn readlinkat(k: &mut Kernel, dirfd: i64, path: u64, buf: u64, size: u64) -> SysResult {
    if size == 0 || size > i32::MAX as u64 {
        return Err(EINVAL);
    }
    match lookup(k, dirfd, path)? {
        Target::Special(Special::Exe) => {}
        _ => return Err(EINVAL),
    }
    let n = {
        let out = &mut k.scratch.path2;
        k.files.app_path(out)?
    };
    let n = n.min(size as usize);
    k.copy_path2_to_user(buf, n).map_err(mem_err)?;
    Ok(n as u64)
}

/// d_type values (`include/linux/fs_types.h`).
const DT_CHR: u8 = 2;
const DT_DIR: u8 = 4;
const DT_REG: u8 = 8;
const DT_LNK: u8 = 10;

/// The length of the `struct linux_dirent64` record for `name`: the fixed part (19
/// bytes), the name and its NUL, padded to 8 bytes.
fn dirent_len(name: &[u8]) -> usize {
    (19 + name.len() + 1).next_multiple_of(8)
}

/// Write the `struct linux_dirent64` record of `name` (at most NAME_MAX bytes) into
/// `rec`: `d_ino`, `d_off` (the offset of the next entry), `d_reclen`, `d_type`, the
/// name and zeros to the record's end. Returns the record's length.
fn dirent(rec: &mut [u8; 280], ino: u64, next: u64, dtype: u8, name: &[u8]) -> usize {
    let reclen = dirent_len(name);
    rec[0..8].copy_from_slice(&ino.to_le_bytes());
    rec[8..16].copy_from_slice(&next.to_le_bytes());
    rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
    rec[18] = dtype;
    rec[19..19 + name.len()].copy_from_slice(name);
    rec[19 + name.len()..reclen].fill(0);
    reclen
}

/// getdents64: `struct linux_dirent64` records (`d_ino`, `d_off`, `d_reclen`,
/// `d_type`, the name and a NUL, padded to 8 bytes). The offset is the index of the
/// next entry: `.`, `..`, the tree's children, then the overlaid names.
pub fn getdents64(k: &mut Kernel, fd: u64, buf: u64, count: u64) -> SysResult {
    let f = *k.files.get(fd)?;
    let Node::Dir { inode } = f.node else {
        return Err(ENOTDIR);
    };
    let children = u64::from(k.files.child_count(inode)?);
    let total = 2 + children + k.files.extra_count(inode) as u64;
    let mut pos = f.offset;
    let mut written = 0u64;
    let mut rec = [0u8; 280];
    while pos < total {
        let (name, ino, dtype): (&[u8], u64, u8) = match pos {
            0 => (b".", u64::from(inode) + 2, DT_DIR),
            1 => (b"..", u64::from(k.files.parent(inode)?) + 2, DT_DIR),
            p if p < 2 + children => {
                let Some((name, i, dir)) = k.files.child(inode, (p - 2) as u32)? else {
                    break;
                };
                (name, u64::from(i) + 2, if dir { DT_DIR } else { DT_REG })
            }
            p => {
                let Some((name, s)) = k.files.extra_entry(inode, (p - 2 - children) as usize)
                else {
                    break;
                };
                let dtype = match s {
                    Special::Exe | Special::Console(_) => DT_LNK,
                    Special::Maps | Special::Text(_) => DT_REG,
                    _ => DT_CHR,
                };
                (name, 0x1000_0000 + p, dtype)
            }
        };
        let reclen = dirent_len(name);
        if written + reclen as u64 > count {
            if written == 0 {
                return Err(EINVAL);
            }
            break;
        }
        dirent(&mut rec, ino, pos + 1, dtype, name);
        k.copy_to_user(buf + written, &rec[..reclen])
            .map_err(mem_err)?;
        written += reclen as u64;
        pos += 1;
    }
    k.files.get_mut(fd)?.offset = pos;
    Ok(written)
}

pub fn dup(k: &mut Kernel, fd: u64) -> SysResult {
    k.files.dup_from(fd, 0, false)
}

pub fn dup2(k: &mut Kernel, fd: u64, new: u64) -> SysResult {
    if fd == new {
        k.files.get(fd)?;
        return Ok(new);
    }
    let (fd, released) = k.files.dup_to(fd, new, false)?;
    let_go(k, released);
    Ok(fd)
}

pub fn dup3(k: &mut Kernel, fd: u64, new: u64, flags: u64) -> SysResult {
    if fd == new || flags & !u64::from(O_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let (fd, released) = k.files.dup_to(fd, new, flags != 0)?;
    let_go(k, released);
    Ok(fd)
}

pub fn fcntl(k: &mut Kernel, fd: u64, cmd: u64, arg: u64) -> SysResult {
    // `include/uapi/asm-generic/fcntl.h`, `include/uapi/linux/fcntl.h`.
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_GETLK: u64 = 5;
    const F_SETLK: u64 = 6;
    const F_SETLKW: u64 = 7;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const F_GET_SEALS: u64 = 1034;
    const FD_CLOEXEC: u64 = 1;
    match cmd {
        F_DUPFD => k.files.dup_from(fd, arg, false),
        F_DUPFD_CLOEXEC => k.files.dup_from(fd, arg, true),
        F_GETFD => Ok(u64::from(k.files.cloexec(fd)?)),
        F_SETFD => {
            k.files.set_cloexec(fd, arg & FD_CLOEXEC != 0)?;
            Ok(0)
        }
        F_GETFL => Ok(u64::from(k.files.get(fd)?.flags)),
        F_SETFL => {
            let f = k.files.get_mut(fd)?;
            let changeable = O_APPEND | O_NONBLOCK;
            f.flags = (f.flags & !changeable) | (arg as u32 & changeable);
            Ok(0)
        }
        F_GETLK => {
            k.files.get(fd)?;
            // struct flock: l_type (short) at 0; F_UNLCK = 2: nothing else holds a lock.
            k.copy_to_user(arg, &2u16.to_le_bytes()).map_err(mem_err)?;
            Ok(0)
        }
        F_SETLK | F_SETLKW => {
            k.files.get(fd)?;
            Ok(0)
        }
        F_GET_SEALS => Err(EINVAL),
        _ => {
            k.files.get(fd)?;
            Err(EINVAL)
        }
    }
}

pub fn getcwd(k: &mut Kernel, buf: u64, size: u64) -> SysResult {
    let cwd = k.files.cwd;
    let n = {
        // One byte stays free for the NUL.
        let out = &mut k.scratch.path2[..crate::kernel::PATH_MAX - 1];
        k.files.path_of(cwd, out)?
    };
    // Room for the NUL too.
    if n as u64 + 1 > size {
        return Err(ERANGE);
    }
    k.scratch.path2[n] = 0;
    k.copy_path2_to_user(buf, n + 1).map_err(mem_err)?;
    Ok(n as u64 + 1)
}

pub fn chdir(k: &mut Kernel, path: u64) -> SysResult {
    match lookup(k, AT_FDCWD, path)? {
        Target::Inode(i) if k.files.is_dir(i)? => {
            k.files.cwd = i;
            Ok(0)
        }
        _ => Err(ENOTDIR),
    }
}

pub fn fchdir(k: &mut Kernel, fd: u64) -> SysResult {
    match k.files.get(fd)?.node {
        Node::Dir { inode } => {
            k.files.cwd = inode;
            Ok(0)
        }
        _ => Err(ENOTDIR),
    }
}

pub fn ftruncate(k: &mut Kernel, fd: u64) -> SysResult {
    match k.files.get(fd)?.node {
        Node::File { .. } | Node::Dir { .. } => Err(EINVAL),
        _ => Err(EINVAL),
    }
}

pub fn flock(k: &mut Kernel, fd: u64) -> SysResult {
    k.files.get(fd)?;
    Ok(0)
}

/// mkdir, rmdir, unlink, rename, link, symlink, chmod: nothing in the tree can change.
/// Linux checks the path first, so a missing parent is still ENOENT.
pub fn modify_path(k: &mut Kernel, dirfd: i64, path: u64) -> SysResult {
    match lookup(k, dirfd, path) {
        Ok(_) | Err(ENOENT) => Err(EROFS),
        Err(e) => Err(e),
    }
}

pub fn fchmod(k: &mut Kernel, fd: u64) -> SysResult {
    k.files.get(fd)?;
    Err(EROFS)
}

pub fn umask(k: &mut Kernel, mask: u64) -> u64 {
    let old = k.files.umask;
    k.files.umask = (mask & 0o777) as u32;
    u64::from(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
    }

    fn stat() -> Stat {
        Stat {
            dev: 0x2A,
            ino: 7,
            mode: S_IFREG | 0o644,
            nlink: 1,
            size: 1000,
            rdev: 0x103,
            mtime: (1_700_000_000, 42),
        }
    }

    #[test]
    fn stat_has_the_x86_64_layout() {
        let b = stat_bytes(&stat());
        assert_eq!(u64_at(&b, 0), 0x2A);
        assert_eq!(u64_at(&b, 8), 7);
        assert_eq!(u64_at(&b, 16), 1);
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().expect("4")),
            S_IFREG | 0o644
        );
        assert_eq!(u64_at(&b, 40), 0x103);
        assert_eq!(u64_at(&b, 48), 1000);
        assert_eq!(u64_at(&b, 56), 4096, "st_blksize");
        assert_eq!(u64_at(&b, 64), 2, "512-byte blocks, rounded up");
        for (at, what) in [(72, "st_atime"), (88, "st_mtime"), (104, "st_ctime")] {
            assert_eq!(u64_at(&b, at), 1_700_000_000, "{what}");
            assert_eq!(u64_at(&b, at + 8), 42, "{what} nanoseconds");
        }
        assert!(b[120..].iter().all(|&x| x == 0), "the unused tail");
    }

    #[test]
    fn statx_splits_device_numbers() {
        let b = statx_bytes(&stat());
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().expect("4")), 0x7FF);
        assert_eq!(
            u16::from_le_bytes(b[28..30].try_into().expect("2")),
            (S_IFREG | 0o644) as u16
        );
        assert_eq!(u64_at(&b, 32), 7);
        assert_eq!(u64_at(&b, 40), 1000);
        // rdev 1:3 (major, minor), dev 0:0x2A.
        assert_eq!(&b[128..136], &[1, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&b[136..144], &[0, 0, 0, 0, 0x2A, 0, 0, 0]);
        // atime, ctime, mtime; no birth time.
        for at in [64, 96, 112] {
            assert_eq!(u64_at(&b, at), 1_700_000_000);
            assert_eq!(
                u32::from_le_bytes(b[at + 8..at + 12].try_into().expect("4")),
                42
            );
        }
        assert!(b[80..96].iter().all(|&x| x == 0), "stx_btime");
    }

    #[test]
    fn directory_records_are_padded_to_eight_bytes() {
        let mut rec = [0xFFu8; 280];
        assert_eq!(dirent(&mut rec, 2, 1, DT_DIR, b"."), 24);
        assert_eq!((u64_at(&rec, 0), u64_at(&rec, 8)), (2, 1));
        assert_eq!(u16::from_le_bytes([rec[16], rec[17]]), 24);
        assert_eq!(&rec[18..24], &[DT_DIR, b'.', 0, 0, 0, 0]);
        let long = [b'a'; 255];
        assert_eq!(dirent(&mut rec, 9, 2, DT_REG, &long), 280, "NAME_MAX fits");
        assert_eq!(rec[19 + 255], 0, "NUL-terminated");
        assert_eq!(dirent_len(b"12345"), 32);
    }
}
