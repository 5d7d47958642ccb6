//! Paths and descriptors: open, close, stat, statfs, access, readlink, getdents64,
//! dup, fcntl, the working directory, and the calls that change the namespace
//! (mkdir, rmdir, unlink, rename, link, symlink, chmod, chown, utimensat,
//! truncate). Names resolve over the writable inodes laid on the packaged tree
//! (`fs/overlay.rs`); a packaged file or directory is copied up before it changes.

use super::errno::*;
use super::memfile::{self, with_fs};
use super::{mem_err, SysResult};
use crate::fs::mem::{is_mem, Kind, MAX_INODES};
use crate::fs::overlay::Walk;
use crate::fs::*;
use crate::kernel::Kernel;

pub use crate::fs::AT_FDCWD;

/// `*at` flags (`include/uapi/linux/fcntl.h`).
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EACCESS: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_NO_AUTOMOUNT: u64 = 0x800;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_STATX_SYNC_TYPE: u64 = 0x6000;
/// renameat2 flags (`include/uapi/linux/fs.h`).
const RENAME_NOREPLACE: u64 = 1;
const RENAME_EXCHANGE: u64 = 2;
/// access modes (`include/linux/fs.h` MAY_*, `unistd.h`).
const X_OK: u64 = 1;

/// A path from the app, copied into the scratch buffer.
fn path_in(k: &mut Kernel, va: u64) -> Result<usize, u64> {
    match k.copy_path_from_user(va) {
        Ok(n) => Ok(n),
        Err(None) => Err(ENAMETOOLONG),
        Err(Some(e)) => Err(mem_err(e)),
    }
}

/// Walk the path at `va` for a `*at` call (following a link at its end with
/// `follow`).
fn walk_at(k: &mut Kernel, dirfd: i64, va: u64, follow: bool) -> Result<Walk, u64> {
    let n = path_in(k, va)?;
    let s = &mut *k.scratch;
    let path = &s.path[..n];
    let start = k.files.start_dir(dirfd, path.first() == Some(&b'/'))?;
    k.files.walk(start, path, &mut s.path2, follow)
}

/// Resolve the path at `va` for a `*at` call.
fn lookup(k: &mut Kernel, dirfd: i64, va: u64) -> Result<Target, u64> {
    walk_at(k, dirfd, va, true)?.target.ok_or(ENOENT)
}

/// Copy up packaged file `inode`, named `name` in `dir`: with `bytes`, its contents
/// too (else it starts empty, as O_TRUNC wants). Returns the writable id.
fn copy_up(k: &mut Kernel, dir: u32, name: &[u8], inode: u32, bytes: bool) -> Result<u32, u64> {
    let Node::File { gpa, size, .. } = k.files.node_of(Target::Inode(inode))? else {
        return Err(EIO);
    };
    let id = with_fs(k, |f, b| f.copy_up_file(dir, name, inode, b))?;
    if bytes {
        if let Err(e) = memfile::fill_from_image(k, id, gpa, size) {
            with_fs(k, |f, b| f.undo_copy_up(dir, name, id, b));
            return Err(e);
        }
    }
    Ok(id)
}

/// The writable inode that what walk `w` found is, copied up if it is packaged.
fn writable(k: &mut Kernel, w: &Walk, bytes: bool) -> Result<u32, u64> {
    match w.target {
        Some(Target::Inode(id)) if is_mem(id) => Ok(id),
        Some(Target::Inode(t)) if k.files.is_dir(t)? => with_fs(k, |f, b| f.upper_dir(t, b)),
        Some(Target::Inode(t)) => copy_up(k, w.parent, w.name(), t, bytes),
        Some(Target::Special(_)) => Err(EPERM),
        None => Err(ENOENT),
    }
}

/// The writable inode behind descriptor `fd`, copied up if it is a packaged file or
/// directory (the open file then refers to the copy).
fn writable_fd(k: &mut Kernel, fd: u64) -> Result<u32, u64> {
    match k.files.get(fd)?.node {
        Node::MemFile { id } => Ok(id),
        Node::Dir { inode } if is_mem(inode) => Ok(inode),
        Node::Dir { inode } => with_fs(k, |f, b| f.upper_dir(inode, b)),
        Node::File { inode, .. } => {
            let Some((dir, name)) = k.files.packaged_name_of(inode)? else {
                return Err(EROFS);
            };
            let id = copy_up(k, dir, name, inode, true)?;
            k.files.mem_mut().get_mut(id).opens += 1;
            k.files.get_mut(fd)?.node = Node::MemFile { id };
            Ok(id)
        }
        _ => Err(EPERM),
    }
}

pub fn openat(k: &mut Kernel, dirfd: i64, path: u64, flags: u32, mode: u32) -> SysResult {
    if flags & O_TMPFILE == O_TMPFILE {
        return Err(EOPNOTSUPP);
    }
    let creat = flags & O_CREAT != 0;
    let excl = creat && flags & O_EXCL != 0;
    let w = walk_at(k, dirfd, path, flags & O_NOFOLLOW == 0 && !excl)?;
    let write = flags & O_ACCMODE != 0;
    let target = match w.target {
        Some(_) if excl => return Err(EEXIST),
        Some(t) => t,
        None if !creat => return Err(ENOENT),
        None if w.dir_only => return Err(EISDIR),
        None => {
            if flags & O_ACCMODE == O_ACCMODE {
                return Err(EINVAL);
            }
            let perm = (mode & 0o7777 & !k.files.umask) as u16;
            let id = with_fs(k, |f, b| {
                f.create_in(w.parent, w.name(), Kind::File, perm, b)
            })?;
            Target::Inode(id)
        }
    };
    let path_only = flags & O_PATH != 0;
    match target {
        Target::Special(Special::Exe) if flags & O_NOFOLLOW != 0 && !path_only => {
            return Err(ELOOP)
        }
        Target::Inode(id) if k.files.is_symlink(id) => return Err(ELOOP),
        _ => {}
    }
    let mut node = k.files.node_of(target)?;
    match node {
        Node::Dir { .. } if write || creat => return Err(EISDIR),
        Node::Dir { .. } => {}
        _ if flags & O_DIRECTORY != 0 => return Err(ENOTDIR),
        _ if flags & O_ACCMODE == O_ACCMODE => return Err(EINVAL),
        _ if path_only => {}
        Node::File { inode, .. } if write || flags & O_TRUNC != 0 => {
            let id = copy_up(k, w.parent, w.name(), inode, flags & O_TRUNC == 0)?;
            node = Node::MemFile { id };
        }
        Node::MemFile { id } if flags & O_TRUNC != 0 => memfile::set_size(k, id, 0)?,
        _ => {}
    }
    k.files.open(node, flags)
}

pub fn close(k: &mut Kernel, fd: u64) -> SysResult {
    let released = k.files.close(fd)?;
    let_go(k, released);
    Ok(0)
}

/// An open file whose last reference went away: the epoll items that watch it (or
/// belong to it, for an epoll instance) go, a pipe end closes, and a writable inode
/// with no name left is freed.
pub fn let_go(k: &mut Kernel, released: Option<Released>) {
    let Some(r) = released else {
        return;
    };
    super::epoll::forget_file(k, r.index);
    match r.node {
        Node::Pipe(end) => super::pipe::close_end(k, end),
        Node::MemFile { id } | Node::Dir { inode: id } if is_mem(id) => {
            with_fs(k, |f, b| f.unref_mem(id, false, b))
        }
        _ => {}
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
    b[28..32].copy_from_slice(&st.owner.0.to_le_bytes());
    b[32..36].copy_from_slice(&st.owner.1.to_le_bytes());
    b[40..48].copy_from_slice(&st.rdev.to_le_bytes());
    b[48..56].copy_from_slice(&st.size.to_le_bytes());
    b[56..64].copy_from_slice(&4096u64.to_le_bytes());
    let blocks = st.blocks.unwrap_or(st.size.div_ceil(512));
    b[64..72].copy_from_slice(&blocks.to_le_bytes());
    // st_atime, st_mtime, st_ctime, each seconds then nanoseconds.
    let (atime, ctime) = st.times.unwrap_or((st.mtime, st.mtime));
    for (at, (sec, nsec)) in [(72, atime), (88, st.mtime), (104, ctime)] {
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

/// Whether a `*at` call with `flags` names `dirfd` itself (`AT_EMPTY_PATH` and an
/// empty path).
fn is_empty_path(k: &mut Kernel, va: u64, flags: u64) -> Result<bool, u64> {
    if flags & AT_EMPTY_PATH == 0 {
        return Ok(false);
    }
    let mut first = [0u8; 1];
    k.copy_from_user(&mut first, va).map_err(mem_err)?;
    Ok(first[0] == 0)
}

/// The node `dirfd` names for a call with an empty path.
fn dirfd_node(k: &Kernel, dirfd: i64) -> Result<Node, u64> {
    if dirfd == AT_FDCWD {
        return Ok(Node::Dir { inode: k.files.cwd });
    }
    let fd = u64::try_from(dirfd).map_err(|_| EBADF)?;
    Ok(k.files.get(fd)?.node)
}

fn stat_at(k: &mut Kernel, dirfd: i64, path: u64, flags: u64) -> Result<Stat, u64> {
    if is_empty_path(k, path, flags)? {
        let node = dirfd_node(k, dirfd)?;
        return k.files.stat_node(node);
    }
    let follow = flags & AT_SYMLINK_NOFOLLOW == 0;
    let target = walk_at(k, dirfd, path, follow)?.target.ok_or(ENOENT)?;
    k.files.stat(target, follow)
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
    b[20..24].copy_from_slice(&st.owner.0.to_le_bytes());
    b[24..28].copy_from_slice(&st.owner.1.to_le_bytes());
    b[28..30].copy_from_slice(&(st.mode as u16).to_le_bytes());
    b[32..40].copy_from_slice(&st.ino.to_le_bytes());
    b[40..48].copy_from_slice(&st.size.to_le_bytes());
    let blocks = st.blocks.unwrap_or(st.size.div_ceil(512));
    b[48..56].copy_from_slice(&blocks.to_le_bytes());
    // stx_atime, stx_ctime, stx_mtime (`struct statx_timestamp`: seconds, nanoseconds);
    // no birth time (STATX_BTIME is not in the mask).
    let (atime, ctime) = st.times.unwrap_or((st.mtime, st.mtime));
    for (at, (sec, nsec)) in [(64, atime), (96, ctime), (112, st.mtime)] {
        b[at..at + 8].copy_from_slice(&sec.to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&nsec.to_le_bytes());
    }
    b[128..132].copy_from_slice(&((st.rdev >> 8) as u32).to_le_bytes());
    b[132..136].copy_from_slice(&((st.rdev & 0xFF) as u32).to_le_bytes());
    b[136..140].copy_from_slice(&((st.dev >> 8) as u32).to_le_bytes());
    b[140..144].copy_from_slice(&((st.dev & 0xFF) as u32).to_le_bytes());
    b
}

/// `struct statfs` on x86-64 (`include/uapi/asm-generic/statfs.h`), 120 bytes, for
/// the file system `target` lies on: blocks of 4 KiB counted from the frames the
/// writable files hold and those they could still take.
fn statfs_of(k: &mut Kernel, target: Target) -> [u8; 120] {
    const ST_VALID: u64 = 0x20;
    let magic = k.files.fs_magic(target);
    let free = k
        .frames
        .available()
        .saturating_sub(memfile::reserve(&k.frames));
    let used = k.files.mem().frames;
    let inodes_free = (MAX_INODES as u64).saturating_sub(u64::from(k.files.mem().used));
    let fields = [
        magic,
        4096,
        used + free,
        free,
        free,
        MAX_INODES as u64,
        inodes_free,
        0,
        255,
        4096,
        ST_VALID,
    ];
    let mut b = [0u8; 120];
    for (i, v) in fields.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

pub fn statfs(k: &mut Kernel, path: u64, buf: u64) -> SysResult {
    let target = lookup(k, AT_FDCWD, path)?;
    let b = statfs_of(k, target);
    k.copy_to_user(buf, &b).map_err(mem_err)?;
    Ok(0)
}

pub fn fstatfs(k: &mut Kernel, fd: u64, buf: u64) -> SysResult {
    let target = match k.files.get(fd)?.node {
        Node::File { inode, .. } | Node::Dir { inode } => Target::Inode(inode),
        Node::MemFile { id } => Target::Inode(id),
        Node::Dev(s) => Target::Special(s),
        _ => Target::Special(Special::Null),
    };
    let b = statfs_of(k, target);
    k.copy_to_user(buf, &b).map_err(mem_err)?;
    Ok(0)
}

pub fn faccessat(k: &mut Kernel, dirfd: i64, path: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 || flags & !(AT_SYMLINK_NOFOLLOW | AT_EACCESS | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let st = stat_at(k, dirfd, path, flags)?;
    let kind = st.mode & 0o170000;
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
    let n = match walk_at(k, dirfd, path, false)?.target.ok_or(ENOENT)? {
        Target::Special(Special::Exe) => {
            let out = &mut k.scratch.path2;
            k.files.app_path(out)?
        }
        Target::Inode(id) if k.files.is_symlink(id) => {
            let target = k.files.mem().link_target(id);
            k.scratch.path2[..target.len()].copy_from_slice(target);
            target.len()
        }
        _ => return Err(EINVAL),
    };
    let n = n.min(size as usize);
    k.copy_path2_to_user(buf, n).map_err(mem_err)?;
    Ok(n as u64)
}

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
/// `d_type`, the name and a NUL, padded to 8 bytes). The offset is the position of
/// the next entry (`fs/overlay.rs`, [`Files::dir_entry`]).
pub fn getdents64(k: &mut Kernel, fd: u64, buf: u64, count: u64) -> SysResult {
    let f = *k.files.get(fd)?;
    let Node::Dir { inode } = f.node else {
        return Err(ENOTDIR);
    };
    let dir = k.files.current(inode);
    let mut pos = f.offset;
    let mut written = 0u64;
    let mut rec = [0u8; 280];
    while let Some(e) = k.files.dir_entry(dir, pos)? {
        let reclen = dirent_len(e.name);
        if written + reclen as u64 > count {
            if written == 0 {
                return Err(EINVAL);
            }
            break;
        }
        dirent(&mut rec, e.ino, e.next, e.dtype, e.name);
        k.copy_to_user(buf + written, &rec[..reclen])
            .map_err(mem_err)?;
        written += reclen as u64;
        pos = e.next;
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
        k.files.dir_path(cwd, out)?
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
            with_fs(k, |f, b| f.set_cwd(i, b));
            Ok(0)
        }
        _ => Err(ENOTDIR),
    }
}

pub fn fchdir(k: &mut Kernel, fd: u64) -> SysResult {
    match k.files.get(fd)?.node {
        Node::Dir { inode } => {
            let dir = k.files.current(inode);
            with_fs(k, |f, b| f.set_cwd(dir, b));
            Ok(0)
        }
        _ => Err(ENOTDIR),
    }
}

pub fn ftruncate(k: &mut Kernel, fd: u64, len: u64) -> SysResult {
    let f = *k.files.get(fd)?;
    if (len as i64) < 0 {
        return Err(EINVAL);
    }
    match f.node {
        Node::MemFile { id } if f.flags & O_ACCMODE != 0 && f.flags & O_PATH == 0 => {
            memfile::set_size(k, id, len)?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

pub fn truncate(k: &mut Kernel, path: u64, len: u64) -> SysResult {
    if (len as i64) < 0 {
        return Err(EINVAL);
    }
    let w = walk_at(k, AT_FDCWD, path, true)?;
    match w.target {
        Some(Target::Inode(id)) if k.files.is_dir(id)? => return Err(EISDIR),
        Some(Target::Special(_)) => return Err(EINVAL),
        _ => {}
    }
    let id = writable(k, &w, len > 0)?;
    memfile::set_size(k, id, len)?;
    Ok(0)
}

pub fn fallocate(k: &mut Kernel, fd: u64, mode: u64, offset: u64, len: u64) -> SysResult {
    if (offset as i64) < 0 || (len as i64) <= 0 {
        return Err(EINVAL);
    }
    let f = *k.files.get(fd)?;
    if f.flags & O_ACCMODE == 0 || f.flags & O_PATH != 0 {
        return Err(EBADF);
    }
    match f.node {
        Node::MemFile { id } => memfile::fallocate(k, id, mode as u32, offset, len),
        Node::Dir { .. } => Err(EISDIR),
        Node::Pipe(_) => Err(ESPIPE),
        _ => Err(ENODEV),
    }
}

pub fn flock(k: &mut Kernel, fd: u64) -> SysResult {
    k.files.get(fd)?;
    Ok(0)
}

pub fn mkdirat(k: &mut Kernel, dirfd: i64, path: u64, mode: u64) -> SysResult {
    let w = walk_at(k, dirfd, path, false)?;
    if w.target.is_some() {
        return Err(EEXIST);
    }
    let perm = (mode as u32 & 0o1777 & !k.files.umask) as u16;
    with_fs(k, |f, b| {
        f.create_in(w.parent, w.name(), Kind::Dir, perm, b)
    })?;
    Ok(0)
}

pub fn unlinkat(k: &mut Kernel, dirfd: i64, path: u64, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(EINVAL);
    }
    let w = walk_at(k, dirfd, path, false)?;
    let id = match w.target {
        None => return Err(ENOENT),
        Some(Target::Special(_)) => return Err(EPERM),
        Some(Target::Inode(id)) => id,
    };
    let dir = k.files.is_dir(id)?;
    if flags & AT_REMOVEDIR == 0 {
        if dir {
            return Err(EISDIR);
        }
        with_fs(k, |f, b| {
            f.remove_name(w.parent, w.name(), b)?;
            if is_mem(id) {
                f.mem_mut().touch_ctime(id, b);
                f.unref_mem(id, true, b);
            }
            Ok(0)
        })
    } else {
        if !dir {
            return Err(ENOTDIR);
        }
        if id == k.files.root() {
            return Err(EBUSY);
        }
        if w.name().is_empty() {
            return Err(EINVAL);
        }
        if !k.files.dir_is_empty(id)? {
            return Err(ENOTEMPTY);
        }
        with_fs(k, |f, b| {
            let up = f.remove_name(w.parent, w.name(), b)?;
            let parent = f.mem_mut().get_mut(up);
            parent.nlink = parent.nlink.saturating_sub(1);
            if is_mem(id) {
                f.unref_mem(id, true, b);
            }
            Ok(0)
        })
    }
}

/// Whether a directory may be renamed: only a writable one that shadows nothing
/// (overlayfs without `redirect_dir` refuses the others with EXDEV).
fn movable_dir(k: &Kernel, id: u32) -> Result<(), u64> {
    if is_mem(id) && k.files.mem().get(id).lower().is_none() {
        Ok(())
    } else {
        Err(EXDEV)
    }
}

pub fn renameat2(
    k: &mut Kernel,
    olddirfd: i64,
    oldpath: u64,
    newdirfd: i64,
    newpath: u64,
    flags: u64,
) -> SysResult {
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
        || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
    {
        return Err(EINVAL);
    }
    let old = walk_at(k, olddirfd, oldpath, false)?;
    let new = walk_at(k, newdirfd, newpath, false)?;
    let src = match old.target {
        None => return Err(ENOENT),
        Some(Target::Special(_)) => return Err(EPERM),
        Some(Target::Inode(id)) => id,
    };
    if old.name().is_empty() || new.name().is_empty() {
        return Err(EBUSY);
    }
    let src_dir = k.files.is_dir(src)?;
    let dst = match new.target {
        Some(Target::Special(_)) => return Err(EPERM),
        Some(Target::Inode(_)) if flags & RENAME_NOREPLACE != 0 => return Err(EEXIST),
        Some(Target::Inode(id)) => Some(id),
        None if flags & RENAME_EXCHANGE != 0 => return Err(ENOENT),
        None if new.dir_only && !src_dir => return Err(ENOTDIR),
        None => None,
    };
    if dst == Some(src) {
        return Ok(0);
    }
    let dst_dir = match dst {
        Some(d) => k.files.is_dir(d)?,
        None => false,
    };
    if flags & RENAME_EXCHANGE != 0 {
        let dst = dst.ok_or(ENOENT)?;
        for (id, is_dir) in [(src, src_dir), (dst, dst_dir)] {
            if is_dir {
                movable_dir(k, id)?;
            }
        }
        if (src_dir && k.files.is_within(new.parent, src)?)
            || (dst_dir && k.files.is_within(old.parent, dst)?)
        {
            return Err(EINVAL);
        }
        let a = writable(k, &old, true)?;
        let mut bw = new;
        bw.target = Some(Target::Inode(dst));
        let b_id = writable(k, &bw, true)?;
        return with_fs(k, |f, b| {
            let up_new = f.add_name(new.parent, new.name(), a, b)?;
            let up_old = f.add_name(old.parent, old.name(), b_id, b)?;
            let m = f.mem_mut();
            if src_dir {
                m.get_mut(a).parent = up_new;
                m.get_mut(up_new).nlink += 1;
                m.get_mut(up_old).nlink -= 1;
            }
            if dst_dir {
                m.get_mut(b_id).parent = up_old;
                m.get_mut(up_old).nlink += 1;
                m.get_mut(up_new).nlink -= 1;
            }
            m.touch_ctime(a, b);
            m.touch_ctime(b_id, b);
            Ok(0)
        });
    }
    if let Some(d) = dst {
        match (src_dir, dst_dir) {
            (true, false) => return Err(ENOTDIR),
            (false, true) => return Err(EISDIR),
            (true, true) if !k.files.dir_is_empty(d)? => return Err(ENOTEMPTY),
            _ => {}
        }
    }
    if src_dir {
        movable_dir(k, src)?;
        if k.files.is_within(new.parent, src)? {
            return Err(EINVAL);
        }
    }
    let id = writable(k, &old, true)?;
    with_fs(k, |f, b| {
        let up_new = f.add_name(new.parent, new.name(), id, b)?;
        if let Some(d) = dst {
            if dst_dir {
                let p = f.mem_mut().get_mut(up_new);
                p.nlink = p.nlink.saturating_sub(1);
            }
            if is_mem(d) {
                f.unref_mem(d, true, b);
            }
        }
        let up_old = f.remove_name(old.parent, old.name(), b)?;
        let m = f.mem_mut();
        if src_dir {
            m.get_mut(id).parent = up_new;
            m.get_mut(up_old).nlink -= 1;
            m.get_mut(up_new).nlink += 1;
        }
        m.touch_ctime(id, b);
        Ok(0)
    })
}

pub fn linkat(
    k: &mut Kernel,
    olddirfd: i64,
    oldpath: u64,
    newdirfd: i64,
    newpath: u64,
    flags: u64,
) -> SysResult {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let old = walk_at(k, olddirfd, oldpath, flags & AT_SYMLINK_FOLLOW != 0)?;
    match old.target {
        None => return Err(ENOENT),
        Some(Target::Special(_)) => return Err(EPERM),
        Some(Target::Inode(id)) if k.files.is_dir(id)? => return Err(EPERM),
        _ => {}
    }
    let new = walk_at(k, newdirfd, newpath, false)?;
    if new.target.is_some() {
        return Err(EEXIST);
    }
    if new.dir_only {
        return Err(ENOENT);
    }
    let id = writable(k, &old, true)?;
    with_fs(k, |f, b| {
        f.add_name(new.parent, new.name(), id, b)?;
        let m = f.mem_mut();
        m.get_mut(id).nlink += 1;
        m.touch_ctime(id, b);
        Ok(0)
    })
}

pub fn symlinkat(k: &mut Kernel, target: u64, newdirfd: i64, linkpath: u64) -> SysResult {
    let w = walk_at(k, newdirfd, linkpath, false)?;
    let n = path_in(k, target)?;
    if n == 0 {
        return Err(ENOENT);
    }
    if w.target.is_some() {
        return Err(EEXIST);
    }
    memfile::with_fs_scratch(k, |f, b, scratch| {
        let id = f.create_in(w.parent, w.name(), Kind::Symlink, 0o777, b)?;
        if let Err(e) = f.mem_mut().set_link(id, &scratch.path[..n], b) {
            let _ = f.remove_name(w.parent, w.name(), b);
            f.unref_mem(id, true, b);
            return Err(e);
        }
        Ok(0)
    })
}

/// The writable inode a `*at` call that changes metadata names: `dirfd` itself with
/// an empty path, else the path (followed unless `AT_SYMLINK_NOFOLLOW`).
fn meta_target(k: &mut Kernel, dirfd: i64, path: u64, flags: u64) -> Result<u32, u64> {
    if path == 0 || is_empty_path(k, path, flags)? {
        if dirfd == AT_FDCWD {
            let w = walk_at_cwd(k)?;
            return writable(k, &w, true);
        }
        return writable_fd(k, u64::try_from(dirfd).map_err(|_| EBADF)?);
    }
    let w = walk_at(k, dirfd, path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    writable(k, &w, true)
}

/// The working directory as a walk's result.
fn walk_at_cwd(k: &mut Kernel) -> Result<Walk, u64> {
    let s = &mut *k.scratch;
    k.files.walk(k.files.cwd, b".", &mut s.path2, true)
}

pub fn fchmodat(k: &mut Kernel, dirfd: i64, path: u64, mode: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let id = meta_target(k, dirfd, path, flags)?;
    if k.files.is_symlink(id) {
        return Err(EOPNOTSUPP);
    }
    with_fs(k, |f, b| {
        let m = f.mem_mut();
        m.get_mut(id).mode = (mode & 0o7777) as u16;
        m.touch_ctime(id, b);
    });
    Ok(0)
}

pub fn fchmod(k: &mut Kernel, fd: u64, mode: u64) -> SysResult {
    if k.files.get(fd)?.flags & O_PATH != 0 {
        return Err(EBADF);
    }
    let id = writable_fd(k, fd)?;
    with_fs(k, |f, b| {
        let m = f.mem_mut();
        m.get_mut(id).mode = (mode & 0o7777) as u16;
        m.touch_ctime(id, b);
    });
    Ok(0)
}

/// chown, lchown, fchown and fchownat: owner and group (-1: unchanged).
pub fn fchownat(
    k: &mut Kernel,
    dirfd: i64,
    path: u64,
    uid: u64,
    gid: u64,
    flags: u64,
) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let id = meta_target(k, dirfd, path, flags)?;
    set_owner(k, id, uid as u32, gid as u32);
    Ok(0)
}

pub fn fchown(k: &mut Kernel, fd: u64, uid: u64, gid: u64) -> SysResult {
    let id = writable_fd(k, fd)?;
    set_owner(k, id, uid as u32, gid as u32);
    Ok(0)
}

fn set_owner(k: &mut Kernel, id: u32, uid: u32, gid: u32) {
    with_fs(k, |f, b| {
        let m = f.mem_mut();
        let n = m.get_mut(id);
        if uid != u32::MAX {
            n.uid = uid;
        }
        if gid != u32::MAX {
            n.gid = gid;
        }
        // Changing the owner clears the set-id bits of a file (`setattr_prepare`).
        if n.kind == Kind::File {
            n.mode &= !0o6000;
        }
        m.touch_ctime(id, b);
    });
}

/// `tv_nsec` values of utimensat (`include/uapi/linux/stat.h`).
const UTIME_NOW: u64 = (1 << 30) - 1;
const UTIME_OMIT: u64 = (1 << 30) - 2;

/// A new time for utimensat: `None` to leave it.
type NewTime = Option<Option<(i64, u32)>>;

/// utimensat and futimens (a null path): access and modification times from two
/// `struct timespec` at `times` (null: now).
pub fn utimensat(k: &mut Kernel, dirfd: i64, path: u64, times: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let mut new: [NewTime; 2] = [Some(None), Some(None)];
    if times != 0 {
        let mut ts = [0u8; 32];
        k.copy_from_user(&mut ts, times).map_err(mem_err)?;
        for (i, slot) in new.iter_mut().enumerate() {
            let sec = i64::from_le_bytes(ts[i * 16..i * 16 + 8].try_into().map_err(|_| EINVAL)?);
            let nsec =
                u64::from_le_bytes(ts[i * 16 + 8..i * 16 + 16].try_into().map_err(|_| EINVAL)?);
            *slot = match nsec {
                UTIME_NOW => Some(None),
                UTIME_OMIT => None,
                n if n < 1_000_000_000 => Some(Some((sec, n as u32))),
                _ => return Err(EINVAL),
            };
        }
    }
    let id = meta_target(k, dirfd, path, flags)?;
    set_times(k, id, new);
    Ok(0)
}

/// utimes, futimesat and utime: two `struct timeval` (or, for utime, a
/// `struct utimbuf` of two seconds, `timeval` false) at `times` (null: now).
pub fn utimes(k: &mut Kernel, dirfd: i64, path: u64, times: u64, timeval: bool) -> SysResult {
    let mut new: [NewTime; 2] = [Some(None), Some(None)];
    if times != 0 {
        let mut ts = [0u8; 32];
        let len = if timeval { 32 } else { 16 };
        k.copy_from_user(&mut ts[..len], times).map_err(mem_err)?;
        for (i, slot) in new.iter_mut().enumerate() {
            let at = if timeval { i * 16 } else { i * 8 };
            let sec = i64::from_le_bytes(ts[at..at + 8].try_into().map_err(|_| EINVAL)?);
            let usec = if timeval {
                u64::from_le_bytes(ts[at + 8..at + 16].try_into().map_err(|_| EINVAL)?)
            } else {
                0
            };
            if usec >= 1_000_000 {
                return Err(EINVAL);
            }
            *slot = Some(Some((sec, usec as u32 * 1000)));
        }
    }
    let w = walk_at(k, dirfd, path, true)?;
    let id = writable(k, &w, true)?;
    set_times(k, id, new);
    Ok(0)
}

fn set_times(k: &mut Kernel, id: u32, new: [NewTime; 2]) {
    with_fs(k, |f, b| {
        let now = b.now();
        let m = f.mem_mut();
        let n = m.get_mut(id);
        if let Some(t) = new[0] {
            n.atime = t.unwrap_or(now);
        }
        if let Some(t) = new[1] {
            n.mtime = t.unwrap_or(now);
        }
        n.ctime = now;
    });
}

pub fn umask(k: &mut Kernel, mask: u64) -> u64 {
    let old = k.files.umask;
    k.files.umask = (mask & 0o777) as u32;
    u64::from(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::mem::{DT_DIR, DT_REG};

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
            ..Default::default()
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
