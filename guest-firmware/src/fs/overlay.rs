//! The app's one namespace: writable inodes (`fs/mem.rs`) laid over the packaged,
//! read-only tree, as Linux's overlayfs lays an upper directory over a lower one.
//!
//! The root is writable from boot: a directory that shadows the packaged root, so
//! that `/tmp` (made at boot when the image has none) and anything else the app
//! creates has a writable parent. A packaged directory is *copied up* (a writable
//! directory that shadows it, in a writable parent copied up the same way) when the
//! app changes something in it; a packaged file when the app opens it for writing,
//! truncates, renames, links or changes it (`syscall/fs.rs` copies its bytes).
//! A writable directory's records come first; the names of the packaged directory
//! it shadows show through unless a record has the same name, and a *whiteout*
//! record hides a packaged name that was removed. A directory made where a whiteout
//! was shadows nothing (it is opaque). Renaming a packaged or shadowing directory
//! fails with EXDEV, as on overlayfs without `redirect_dir`.
//!
//! Unified inode ids: packaged inodes keep their tree index, writable ones carry
//! `fs::mem::MEM_BIT`.

use super::mem::{
    index_of, is_mem, Backing, Kind, MemFs, DT_DIR, DT_LNK, DT_REG, DT_WHT, NAME_MAX, WHITEOUT,
};
use super::{Files, Special, Stat, Target, S_IFDIR, S_IFLNK, S_IFREG, TREE_DEV};
use crate::kernel::PATH_MAX;
use crate::syscall::errno::*;
use nacre_shared_abi::filetree::{InodeKind, ROOT_INODE};

/// Most symbolic links one path walk follows (`MAXSYMLINKS`, Linux
/// `include/linux/namei.h`).
const MAX_SYMLINKS: u32 = 40;
/// `getdents64` positions: 0 and 1 are `.` and `..`, then a writable directory's
/// records (2 + their stream position), then the packaged directory's children from
/// [`LOWER_POS`], then the overlaid names from [`SPECIAL_POS`].
const LOWER_POS: u64 = 1 << 40;
const SPECIAL_POS: u64 = 1 << 41;

/// Where a path walk ended: the directory that holds the last component, its name,
/// and what it names if it exists.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    pub parent: u32,
    name: [u8; NAME_MAX],
    name_len: u8,
    pub target: Option<Target>,
    /// The path ended with a slash (the target must be a directory).
    pub dir_only: bool,
}

impl Walk {
    /// The last component; empty when the path ends with `.`, `..` or is `/`.
    pub fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len)]
    }

    fn new(parent: u32, name: &[u8], target: Option<Target>, dir_only: bool) -> Self {
        let mut w = Self {
            parent,
            name: [0; NAME_MAX],
            name_len: name.len() as u8,
            target,
            dir_only,
        };
        w.name[..name.len()].copy_from_slice(name);
        w
    }
}

/// One `getdents64` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEnt {
    /// The position of the entry after it (`d_off`).
    pub next: u64,
    pub name: &'static [u8],
    pub ino: u64,
    pub dtype: u8,
}

/// The inode number `stat` shows for unified id `id`.
pub fn ino_of(id: u32) -> u64 {
    if is_mem(id) {
        (1 << 32) + index_of(id) as u64
    } else {
        u64::from(id) + 2
    }
}

impl Files {
    /// The writable inodes.
    pub fn mem(&self) -> &MemFs {
        self.mem
            .as_deref()
            .expect("the writable inodes are set up at boot")
    }

    /// The writable inodes, to change them.
    pub fn mem_mut(&mut self) -> &mut MemFs {
        self.mem
            .as_deref_mut()
            .expect("the writable inodes are set up at boot")
    }

    /// The root directory (writable, shadowing the packaged root).
    pub fn root(&self) -> u32 {
        self.root
    }

    /// Make the root writable and `/tmp` exist (mode 1777) when the image has none.
    pub fn init_writable(
        &mut self,
        mem: &'static mut MemFs,
        b: &mut dyn Backing,
    ) -> Result<(), u64> {
        let tree = self.tree()?;
        let ino = tree.inode(ROOT_INODE).map_err(|_| EIO)?;
        let root = mem.create(Kind::Dir, ino.mode, b)?;
        mem.set_lower(root, ROOT_INODE);
        let n = mem.get_mut(root);
        n.parent = root;
        n.nlink = 2 + ino.subdirs;
        n.mtime = (ino.mtime_sec, ino.mtime_nsec);
        n.atime = n.mtime;
        n.ctime = n.mtime;
        n.opens = 1;
        self.mem = Some(mem);
        self.root = root;
        self.cwd = root;
        if tree.lookup(ROOT_INODE, b"tmp").map_err(|_| EIO)?.is_none() {
            let tmp = self.create_in(root, b"tmp", Kind::Dir, 0o1777, b)?;
            let when = self.mem().get(root).mtime;
            let t = self.mem_mut().get_mut(tmp);
            (t.atime, t.mtime, t.ctime) = (when, when, when);
            self.mem_mut().get_mut(root).mtime = when;
        }
        Ok(())
    }

    /// The packaged directory that directory `dir` shows, if any.
    pub(super) fn lower_of(&self, dir: u32) -> Option<u32> {
        if is_mem(dir) {
            self.mem.as_deref()?.get(dir).lower()
        } else {
            Some(dir)
        }
    }

    /// What `id` is.
    pub fn kind_of(&self, id: u32) -> Result<Kind, u64> {
        if is_mem(id) {
            return Ok(self.mem().get(id).kind);
        }
        let ino = self.tree()?.inode(id).map_err(|_| EIO)?;
        Ok(if ino.is_dir() { Kind::Dir } else { Kind::File })
    }

    /// Whether `id` is a writable symbolic link.
    pub fn is_symlink(&self, id: u32) -> bool {
        is_mem(id) && self.mem().get(id).kind == Kind::Symlink
    }

    /// The writable directory that shows packaged directory `t`, if it was copied up.
    fn upper_of(&self, t: u32) -> Option<u32> {
        if t == ROOT_INODE {
            return Some(self.root);
        }
        let tree = self.tree.as_ref()?;
        let up = self.upper_of(tree.parent(t).ok()?)?;
        let name = tree.name(&tree.inode(t).ok()?).ok()?;
        let r = self.mem().lookup(up, name)?;
        (is_mem(r.id) && self.mem().get(r.id).lower() == Some(t)).then_some(r.id)
    }

    /// Directory `dir` as it is now: a packaged directory copied up since (an open
    /// descriptor, the working directory) is its writable copy.
    pub fn current(&self, dir: u32) -> u32 {
        if is_mem(dir) || self.mem.is_none() {
            return dir;
        }
        self.upper_of(dir).unwrap_or(dir)
    }

    /// The parent of directory `dir` (the root is its own).
    fn parent_dir(&self, dir: u32) -> Result<u32, u64> {
        if is_mem(dir) {
            return Ok(self.mem().get(dir).parent);
        }
        Ok(self.current(self.tree()?.parent(dir).map_err(|_| EIO)?))
    }

    /// The name `name` in directory `dir`.
    pub fn lookup_name(&self, dir: u32, name: &[u8]) -> Result<Option<Target>, u64> {
        if let Some(s) = self.special(dir, name) {
            return Ok(Some(Target::Special(s)));
        }
        let lower = if is_mem(dir) {
            let m = self.mem();
            if m.get(dir).nlink == 0 {
                return Ok(None);
            }
            if let Some(r) = m.lookup(dir, name) {
                return Ok((r.id != WHITEOUT).then_some(Target::Inode(r.id)));
            }
            match m.get(dir).lower() {
                Some(t) => t,
                None => return Ok(None),
            }
        } else {
            dir
        };
        let found = self.tree()?.lookup(lower, name).map_err(|_| EIO)?;
        Ok(found.map(Target::Inode))
    }

    /// Walk `path` from directory `start`, following symbolic links on the way and,
    /// with `follow_last`, at its end. `work` (never `path` itself) holds the path
    /// once a link was followed. The last component need not exist; every directory
    /// before it must.
    pub fn walk(
        &self,
        start: u32,
        path: &[u8],
        work: &mut [u8; PATH_MAX],
        follow_last: bool,
    ) -> Result<Walk, u64> {
        if path.is_empty() {
            return Err(ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(ENAMETOOLONG);
        }
        let mut in_work = false;
        let (mut at, mut end) = (0usize, path.len());
        let mut links = 0u32;
        let mut cur = if path[0] == b'/' {
            self.root
        } else {
            self.current(start)
        };
        loop {
            let buf: &[u8] = if in_work { &work[..] } else { path };
            while at < end && buf[at] == b'/' {
                at += 1;
            }
            if at == end {
                return Ok(Walk::new(cur, b"", Some(Target::Inode(cur)), true));
            }
            let comp_end = buf[at..end]
                .iter()
                .position(|&c| c == b'/')
                .map_or(end, |p| at + p);
            let mut rest = comp_end;
            while rest < end && buf[rest] == b'/' {
                rest += 1;
            }
            let last = rest == end;
            let trailing = last && comp_end < end;
            let name = &buf[at..comp_end];
            if name.len() > NAME_MAX {
                return Err(ENAMETOOLONG);
            }
            if name == b"." || name == b".." {
                if name == b".." {
                    cur = self.parent_dir(cur)?;
                }
                if last {
                    return Ok(Walk::new(cur, b"", Some(Target::Inode(cur)), true));
                }
                at = rest;
                continue;
            }
            let found = self.lookup_name(cur, name)?;
            let link = match found {
                Some(Target::Inode(id))
                    if self.is_symlink(id) && (!last || follow_last || trailing) =>
                {
                    id
                }
                _ if last => {
                    if trailing {
                        match found {
                            Some(Target::Special(_)) => return Err(ENOTDIR),
                            Some(Target::Inode(id)) if self.kind_of(id)? != Kind::Dir => {
                                return Err(ENOTDIR)
                            }
                            _ => {}
                        }
                    }
                    return Ok(Walk::new(cur, name, found, trailing));
                }
                None => return Err(ENOENT),
                Some(Target::Special(_)) => return Err(ENOTDIR),
                Some(Target::Inode(id)) => {
                    if self.kind_of(id)? != Kind::Dir {
                        return Err(ENOTDIR);
                    }
                    cur = id;
                    at = rest;
                    continue;
                }
            };
            // Follow the link: its target, then what followed its name (slashes
            // included), at the end of `work`.
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(ELOOP);
            }
            let target = self.mem().link_target(link);
            if target.is_empty() {
                return Err(ENOENT);
            }
            let rem = end - comp_end;
            if target.len() + rem >= PATH_MAX {
                return Err(ENAMETOOLONG);
            }
            if in_work {
                work.copy_within(comp_end..end, PATH_MAX - rem);
            } else {
                work[PATH_MAX - rem..].copy_from_slice(&path[comp_end..end]);
            }
            let new_at = PATH_MAX - rem - target.len();
            work[new_at..PATH_MAX - rem].copy_from_slice(target);
            if target[0] == b'/' {
                cur = self.root;
            }
            in_work = true;
            at = new_at;
            end = PATH_MAX;
        }
    }

    /// The writable directory that `dir` is or that shows it, copied up (with its
    /// parents) if it is still only packaged.
    pub fn upper_dir(&mut self, dir: u32, b: &mut dyn Backing) -> Result<u32, u64> {
        if is_mem(dir) {
            return Ok(dir);
        }
        if let Some(u) = self.upper_of(dir) {
            return Ok(u);
        }
        let tree = self.tree()?;
        let up = self.upper_dir(tree.parent(dir).map_err(|_| EIO)?, b)?;
        let ino = tree.inode(dir).map_err(|_| EIO)?;
        let name = tree.name(&ino).map_err(|_| EIO)?;
        let m = self.mem_mut();
        let id = m.create(Kind::Dir, ino.mode, b)?;
        m.set_lower(id, dir);
        let n = m.get_mut(id);
        n.parent = up;
        n.nlink = 2 + ino.subdirs;
        n.mtime = (ino.mtime_sec, ino.mtime_nsec);
        n.atime = n.mtime;
        n.ctime = n.mtime;
        if let Err(e) = m.insert(up, name, id, DT_DIR, b) {
            m.get_mut(id).nlink = 0;
            m.release_if_unused(id, b);
            return Err(e);
        }
        Ok(id)
    }

    /// Copy up packaged file `t`, named `name` in directory `dir`: a writable file
    /// with its mode and times, still empty (the caller copies the bytes unless it
    /// truncates), in its place. Returns the new id.
    pub fn copy_up_file(
        &mut self,
        dir: u32,
        name: &[u8],
        t: u32,
        b: &mut dyn Backing,
    ) -> Result<u32, u64> {
        let ino = self.tree()?.inode(t).map_err(|_| EIO)?;
        let mode = if ino.kind() == Ok(InodeKind::App) && ino.mode == 0 {
            0o755
        } else {
            ino.mode
        };
        let up = self.upper_dir(dir, b)?;
        let (dir_mtime, dir_ctime) = (self.mem().get(up).mtime, self.mem().get(up).ctime);
        let id = self.create_in(up, name, Kind::File, mode, b)?;
        let m = self.mem_mut();
        // Copying up changes nothing the app can see, the directory's times included.
        let when = (ino.mtime_sec, ino.mtime_nsec);
        let n = m.get_mut(id);
        (n.atime, n.mtime, n.ctime) = (when, when, when);
        let d = m.get_mut(up);
        (d.mtime, d.ctime) = (dir_mtime, dir_ctime);
        Ok(id)
    }

    /// Create `name` (not visible in `dir`) as a new inode of `kind` with permission
    /// bits `mode`. Returns its id.
    pub fn create_in(
        &mut self,
        dir: u32,
        name: &[u8],
        kind: Kind,
        mode: u16,
        b: &mut dyn Backing,
    ) -> Result<u32, u64> {
        let up = self.upper_dir(dir, b)?;
        let m = self.mem_mut();
        if m.get(up).nlink == 0 {
            return Err(ENOENT);
        }
        let dir_mtime = m.get(up).mtime;
        let id = m.create(kind, mode, b)?;
        let dtype = match kind {
            Kind::Dir => DT_DIR,
            Kind::Symlink => DT_LNK,
            _ => DT_REG,
        };
        if kind == Kind::Dir {
            m.get_mut(id).parent = up;
        }
        let added = match m.lookup(up, name) {
            Some(r) => {
                m.set_record(up, r.pos, id, dtype);
                Ok(())
            }
            None => m.insert(up, name, id, dtype, b),
        };
        if let Err(e) = added {
            m.get_mut(id).nlink = 0;
            m.release_if_unused(id, b);
            m.get_mut(up).mtime = dir_mtime;
            return Err(e);
        }
        if kind == Kind::Dir {
            m.get_mut(up).nlink += 1;
        }
        m.touch(up, b);
        Ok(id)
    }

    /// Whether packaged directory `t` has a child `name`.
    fn lower_has(&self, dir: u32, name: &[u8]) -> Result<bool, u64> {
        match self.lower_of(dir) {
            Some(t) => Ok(self.tree()?.lookup(t, name).map_err(|_| EIO)?.is_some()),
            None => Ok(false),
        }
    }

    /// Take back a copy-up that could not be completed: the packaged file shows again.
    pub fn undo_copy_up(&mut self, dir: u32, name: &[u8], id: u32, b: &mut dyn Backing) {
        let Ok(up) = self.upper_dir(dir, b) else {
            return;
        };
        let m = self.mem_mut();
        if let Some(r) = m.lookup(up, name) {
            m.set_record(up, r.pos, 0, 0);
        }
        self.unref_mem(id, true, b);
    }

    /// Make `id` (a directory, possibly only packaged) the working directory.
    pub fn set_cwd(&mut self, id: u32, b: &mut dyn Backing) {
        let old = core::mem::replace(&mut self.cwd, id);
        if is_mem(id) {
            self.mem_mut().get_mut(id).opens += 1;
        }
        if is_mem(old) {
            self.unref_mem(old, false, b);
        }
    }

    /// Remove the name `name` from directory `dir` (a whiteout stays where the
    /// packaged directory below has it); returns the writable directory that held
    /// it. The inode it named is the caller's.
    pub fn remove_name(&mut self, dir: u32, name: &[u8], b: &mut dyn Backing) -> Result<u32, u64> {
        let up = self.upper_dir(dir, b)?;
        let lower = self.lower_has(up, name)?;
        let m = self.mem_mut();
        match m.lookup(up, name) {
            Some(r) if lower => m.set_record(up, r.pos, WHITEOUT, DT_WHT),
            Some(r) => m.set_record(up, r.pos, 0, 0),
            None => m.insert(up, name, WHITEOUT, DT_WHT, b)?,
        }
        m.touch(up, b);
        Ok(up)
    }

    /// Make the name `name` of directory `dir` refer to writable inode `id` (a new
    /// record, or the one the name has); returns the writable directory.
    pub fn add_name(
        &mut self,
        dir: u32,
        name: &[u8],
        id: u32,
        b: &mut dyn Backing,
    ) -> Result<u32, u64> {
        let up = self.upper_dir(dir, b)?;
        let m = self.mem_mut();
        let dtype = match m.get(id).kind {
            Kind::Dir => DT_DIR,
            Kind::Symlink => DT_LNK,
            _ => DT_REG,
        };
        match m.lookup(up, name) {
            Some(r) => m.set_record(up, r.pos, id, dtype),
            None => m.insert(up, name, id, dtype, b)?,
        }
        m.touch(up, b);
        Ok(up)
    }

    /// The statfs magic of the file system `target` lies on: procfs, sysfs, or the
    /// tmpfs every other name is on (`include/uapi/linux/magic.h`).
    pub fn fs_magic(&self, target: Target) -> u64 {
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        const PROC_SUPER_MAGIC: u64 = 0x9FA0;
        const SYSFS_MAGIC: u64 = 0x6265_6572;
        match target {
            Target::Special(Special::Exe | Special::Maps)
            | Target::Special(Special::Text(super::SysText::CpuInfo)) => PROC_SUPER_MAGIC,
            Target::Special(Special::Text(_)) => SYSFS_MAGIC,
            Target::Special(_) => TMPFS_MAGIC,
            Target::Inode(id) => match self.lower_of(id) {
                Some(t) if t == self.proc_dir || t == self.proc_self_dir => PROC_SUPER_MAGIC,
                Some(t) if t == self.cpu_dir => SYSFS_MAGIC,
                _ => TMPFS_MAGIC,
            },
        }
    }

    /// Where image byte `gpa` (a packaged file's) is shown in the files window.
    pub fn image_va(&self, gpa: u64) -> u64 {
        self.window_va + (gpa - self.window_gpa)
    }

    /// The writable copy an open packaged file's name leads to, copied up now if it
    /// still is the packaged file: `(directory, name's inode)` from the tree, for
    /// the caller to copy the bytes. `None` when the name leads elsewhere now.
    pub fn packaged_name_of(&self, inode: u32) -> Result<Option<(u32, &'static [u8])>, u64> {
        let tree = self.tree()?;
        let parent = tree.parent(inode).map_err(|_| EIO)?;
        let name = tree
            .name(&tree.inode(inode).map_err(|_| EIO)?)
            .map_err(|_| EIO)?;
        let dir = self.current(parent);
        Ok((self.lookup_name(dir, name)? == Some(Target::Inode(inode))).then_some((dir, name)))
    }

    /// Drop one reference (a name or an open file, as `name` says) to writable inode
    /// `id`; it goes with the last.
    pub fn unref_mem(&mut self, id: u32, name: bool, b: &mut dyn Backing) {
        let m = self.mem_mut();
        let n = m.get_mut(id);
        if name {
            if n.kind == Kind::Dir {
                n.nlink = 0;
            } else {
                n.nlink = n.nlink.saturating_sub(1);
            }
        } else {
            n.opens = n.opens.saturating_sub(1);
        }
        m.release_if_unused(id, b);
    }

    /// Whether directory `id` lists nothing but `.` and `..`.
    pub fn dir_is_empty(&self, id: u32) -> Result<bool, u64> {
        if self.extra_count(id) > 0 {
            return Ok(false);
        }
        let tree = self.tree()?;
        if is_mem(id) {
            let m = self.mem();
            if m.has_entries(id) {
                return Ok(false);
            }
            let Some(t) = m.get(id).lower() else {
                return Ok(true);
            };
            let mut n = 0;
            while let Some(child) = tree.child(t, n).map_err(|_| EIO)? {
                let ino = tree.inode(child).map_err(|_| EIO)?;
                let name = tree.name(&ino).map_err(|_| EIO)?;
                if m.lookup(id, name).is_none_or(|r| r.id != WHITEOUT) {
                    return Ok(false);
                }
                n += 1;
            }
            return Ok(true);
        }
        Ok(tree.inode(id).map_err(|_| EIO)?.child_count == 0)
    }

    /// Whether directory `dir` is `anc` or lies below it.
    pub fn is_within(&self, dir: u32, anc: u32) -> Result<bool, u64> {
        let mut cur = self.current(dir);
        for _ in 0..4096 {
            if cur == anc {
                return Ok(true);
            }
            let parent = self.parent_dir(cur)?;
            if parent == cur {
                return Ok(false);
            }
            cur = parent;
        }
        Ok(false)
    }

    /// The `getdents64` entry at position `pos` of directory `dir`; `None` at the end.
    pub fn dir_entry(&self, dir: u32, mut pos: u64) -> Result<Option<DirEnt>, u64> {
        if is_mem(dir) && self.mem().get(dir).nlink == 0 {
            return Err(ENOENT);
        }
        let dot = |name, id, next| DirEnt {
            next,
            name,
            ino: ino_of(id),
            dtype: DT_DIR,
        };
        match pos {
            0 => return Ok(Some(dot(b".", dir, 1))),
            1 => return Ok(Some(dot(b"..", self.parent_dir(dir)?, 2))),
            _ => {}
        }
        let tree = self.tree()?;
        if pos < LOWER_POS {
            if is_mem(dir) {
                let m = self.mem();
                let mut at = pos - 2;
                while let Some((r, name)) = m.record_from(dir, at) {
                    if r.id != WHITEOUT {
                        return Ok(Some(DirEnt {
                            next: 2 + r.next,
                            name,
                            ino: ino_of(r.id),
                            dtype: r.dtype,
                        }));
                    }
                    at = r.next;
                }
            }
            pos = LOWER_POS;
        }
        if pos < SPECIAL_POS {
            if let Some(t) = self.lower_of(dir) {
                let mut n = pos - LOWER_POS;
                while let Some(child) = tree.child(t, n as u32).map_err(|_| EIO)? {
                    n += 1;
                    let ino = tree.inode(child).map_err(|_| EIO)?;
                    let name = tree.name(&ino).map_err(|_| EIO)?;
                    if is_mem(dir) && self.mem().lookup(dir, name).is_some() {
                        continue;
                    }
                    return Ok(Some(DirEnt {
                        next: LOWER_POS + n,
                        name,
                        ino: ino_of(child),
                        dtype: if ino.is_dir() { DT_DIR } else { DT_REG },
                    }));
                }
            }
            pos = SPECIAL_POS;
        }
        let i = (pos - SPECIAL_POS) as usize;
        let Some((name, s)) = self.extra_entry(dir, i) else {
            return Ok(None);
        };
        let dtype = match s {
            Special::Exe | Special::Console(_) => DT_LNK,
            Special::Maps | Special::Text(_) => DT_REG,
            _ => 2,
        };
        Ok(Some(DirEnt {
            next: pos + 1,
            name,
            ino: 0x1000_0000 + i as u64,
            dtype,
        }))
    }

    /// What `stat` says of writable inode `id`.
    pub fn stat_mem(&self, id: u32) -> Stat {
        let n = self.mem().get(id);
        let (kind, size) = match n.kind {
            Kind::Dir => (S_IFDIR, 4096 * n.frames.max(1)),
            Kind::Symlink => (S_IFLNK, n.size),
            _ => (S_IFREG, n.size),
        };
        Stat {
            dev: TREE_DEV,
            ino: ino_of(id),
            mode: kind | u32::from(n.mode),
            nlink: u64::from(n.nlink),
            size,
            rdev: 0,
            mtime: n.mtime,
            times: Some((n.atime, n.ctime)),
            owner: (n.uid, n.gid),
            blocks: Some(if n.kind == Kind::Dir {
                8 * n.frames.max(1)
            } else {
                8 * n.pages
            }),
        }
    }

    /// The absolute path of directory `dir`, into `out` (`ERANGE` if it does not fit).
    pub fn dir_path(&self, dir: u32, out: &mut [u8]) -> Result<usize, u64> {
        let dir = self.current(dir);
        if !is_mem(dir) {
            return self.tree()?.path_of(dir, out).map_err(|e| e.errno());
        }
        if dir == self.root {
            *out.first_mut().ok_or(ERANGE)? = b'/';
            return Ok(1);
        }
        let m = self.mem();
        let mut start = out.len();
        let mut cur = dir;
        for _ in 0..4096 {
            if cur == self.root {
                let len = out.len() - start;
                out.copy_within(start.., 0);
                return Ok(len);
            }
            let parent = m.get(cur).parent;
            let mut pos = 0;
            let name = loop {
                let Some((r, name)) = m.record_from(parent, pos) else {
                    return Err(ENOENT);
                };
                if r.id == cur {
                    break name;
                }
                pos = r.next;
            };
            let at = start.checked_sub(name.len() + 1).ok_or(ERANGE)?;
            out[at] = b'/';
            out[at + 1..start].copy_from_slice(name);
            start = at;
            cur = parent;
        }
        Err(ELOOP)
    }
}
