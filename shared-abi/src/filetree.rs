//! The read-only file tree packaged into the measured image (`nacre package --file`).
//!
//! `nacre package` encodes the tree (the loader's `filetree` module) and places it in
//! the image at [`crate::boot::BootInfo::fs_gpa`], page-aligned and measured; the
//! firmware serves it to the app through the Linux file syscalls. This module is the
//! format, its decoder and the path walk: `no_std`, no allocation, and no step panics
//! on any bytes whatsoever.
//!
//! # Format (little-endian; offsets from the start of the blob)
//!
//! ```text
//! 0                [`FileTreeHeader`], 64 bytes
//! 64               inode_count [`Inode`]s, 56 bytes each; inode 0 is the root directory
//! names_offset     the names area: every inode's name, back to back, no terminators
//! data_offset      file data (4 KiB aligned), each file from a 4 KiB boundary, the bytes
//!                  between files zero; data_len is a multiple of 4 KiB and the blob
//!                  ends at data_offset + data_len
//! ```
//!
//! Inodes are in breadth-first order: a directory's children are the contiguous inodes
//! `first_child .. first_child + child_count`, sorted by name (bytewise, strictly
//! increasing), every child's index is greater than its parent's (`parent < i` for
//! `i > 0`, `first_child > i` when a directory has children). So walking down or up
//! always terminates, even in a corrupt tree.
//!
//! # Cost
//!
//! The firmware runs where every ring-0 instruction is expensive, so
//! [`FileTree::parse`] checks the header only (O(1)); each accessor then checks just
//! what it reads: the inode's own fields ([`FileTree::inode`]), a name's bounds, a
//! directory's child range and each visited child's `parent`, a file's data range.
//! Whatever it finds wrong is [`FileTreeError::Corrupt`] (or a more specific variant).

use core::cmp::Ordering;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::PAGE_SIZE_4K;

/// [`FileTreeHeader::magic`].
pub const FILE_TREE_MAGIC: [u8; 8] = *b"NACREFS1";
/// [`FileTreeHeader::version`] this decoder reads (2: inodes carry a modification time
/// and a directory's count of subdirectories).
pub const FILE_TREE_VERSION: u32 = 2;
/// Size of the header, and the offset of the inode table.
pub const HEADER_SIZE: u64 = 64;
/// Size of one [`Inode`].
pub const INODE_SIZE: u64 = 56;
/// Alignment of the data area and of every file's data: one 4 KiB page, so the firmware
/// may map file pages into the app directly.
pub const DATA_ALIGN: u64 = PAGE_SIZE_4K;
/// The root directory's inode number.
pub const ROOT_INODE: u32 = 0;

/// Longest name of a directory entry, `NAME_MAX` (Linux `include/uapi/linux/limits.h`).
pub const NAME_MAX: usize = 255;
/// Size of the longest path including its NUL, `PATH_MAX` (Linux
/// `include/uapi/linux/limits.h`): a path of `PATH_MAX` bytes or more is
/// `ENAMETOOLONG`.
pub const PATH_MAX: usize = 4096;

/// [`Inode::kind`]: a directory.
pub const INODE_KIND_DIR: u8 = 1;
/// [`Inode::kind`]: a regular file whose bytes are in the data area.
pub const INODE_KIND_FILE: u8 = 2;
/// [`Inode::kind`]: the app's own ELF, a regular file whose bytes the firmware supplies
/// (the app image at [`crate::boot::BootInfo::app_gpa`]); its `data_off` and `size`
/// are 0 in the blob.
pub const INODE_KIND_APP: u8 = 3;

/// Nanoseconds in a second: [`Inode::mtime_nsec`] stays below it.
pub const NANOS_PER_SEC: u32 = 1_000_000_000;

/// Permission bits an inode's mode may hold (`S_IALLUGO`, Linux `include/linux/stat.h`:
/// set-user-ID, set-group-ID, sticky and the nine rwx bits).
pub const MODE_MASK: u16 = 0o7777;

// Linux errno values, `include/uapi/asm-generic/errno-base.h` and (ENAMETOOLONG)
// `include/uapi/asm-generic/errno.h`.
const ENOENT: u64 = 2;
const EIO: u64 = 5;
const ENOTDIR: u64 = 20;
const ERANGE: u64 = 34;
const ENAMETOOLONG: u64 = 36;

/// The blob's header, at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FileTreeHeader {
    /// [`FILE_TREE_MAGIC`].
    pub magic: [u8; 8],
    /// [`FILE_TREE_VERSION`].
    pub version: u32,
    /// Number of inodes, at least 1 (the root).
    pub inode_count: u32,
    /// Offset of the inode table: [`HEADER_SIZE`].
    pub inodes_offset: u64,
    /// Offset of the names area: `HEADER_SIZE + INODE_SIZE * inode_count`.
    pub names_offset: u64,
    /// Length of the names area.
    pub names_len: u64,
    /// Offset of the data area: a multiple of [`DATA_ALIGN`], at or after the names.
    pub data_offset: u64,
    /// Length of the data area, a multiple of [`DATA_ALIGN`].
    pub data_len: u64,
    /// Reserved, zero.
    pub reserved: u64,
}

const _: () = assert!(core::mem::size_of::<FileTreeHeader>() == HEADER_SIZE as usize);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, version) == 0x08);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, inode_count) == 0x0C);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, inodes_offset) == 0x10);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, names_offset) == 0x18);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, names_len) == 0x20);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, data_offset) == 0x28);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, data_len) == 0x30);
const _: () = assert!(core::mem::offset_of!(FileTreeHeader, reserved) == 0x38);

/// One inode of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Inode {
    /// [`INODE_KIND_DIR`], [`INODE_KIND_FILE`] or [`INODE_KIND_APP`].
    pub kind: u8,
    /// Reserved, zero.
    pub flags: u8,
    /// Permission bits, within [`MODE_MASK`].
    pub mode: u16,
    /// The parent directory's inode (the root's is the root, 0).
    pub parent: u32,
    /// Offset of the name in the names area.
    pub name_off: u32,
    /// Length of the name: 0 for the root, otherwise `1..=NAME_MAX` bytes without `/`
    /// or NUL, and neither `.` nor `..`.
    pub name_len: u32,
    /// Directories: the first child's inode (when `child_count > 0`). Files: 0.
    pub first_child: u32,
    /// Directories: the number of children. Files: 0.
    pub child_count: u32,
    /// Regular files: offset of the data from `data_offset`, a multiple of
    /// [`DATA_ALIGN`]. Others: 0.
    pub data_off: u64,
    /// Regular files: length in bytes. Others: 0.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch (before it: negative), as the
    /// packaged file had it.
    pub mtime_sec: i64,
    /// Nanoseconds of the modification time, below 1,000,000,000.
    pub mtime_nsec: u32,
    /// Directories: how many of the children are directories (a directory's link count
    /// is 2 plus this, as on Linux). Others: 0.
    pub subdirs: u32,
}

const _: () = assert!(core::mem::size_of::<Inode>() == INODE_SIZE as usize);
const _: () = assert!(core::mem::offset_of!(Inode, flags) == 0x01);
const _: () = assert!(core::mem::offset_of!(Inode, mode) == 0x02);
const _: () = assert!(core::mem::offset_of!(Inode, parent) == 0x04);
const _: () = assert!(core::mem::offset_of!(Inode, name_off) == 0x08);
const _: () = assert!(core::mem::offset_of!(Inode, name_len) == 0x0C);
const _: () = assert!(core::mem::offset_of!(Inode, first_child) == 0x10);
const _: () = assert!(core::mem::offset_of!(Inode, child_count) == 0x14);
const _: () = assert!(core::mem::offset_of!(Inode, data_off) == 0x18);
const _: () = assert!(core::mem::offset_of!(Inode, size) == 0x20);
const _: () = assert!(core::mem::offset_of!(Inode, mtime_sec) == 0x28);
const _: () = assert!(core::mem::offset_of!(Inode, mtime_nsec) == 0x30);
const _: () = assert!(core::mem::offset_of!(Inode, subdirs) == 0x34);

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum InodeKind {
    /// A directory.
    Dir = INODE_KIND_DIR,
    /// A regular file with its bytes in the blob.
    File = INODE_KIND_FILE,
    /// The app's own ELF (a regular file whose bytes the firmware supplies).
    App = INODE_KIND_APP,
}

impl TryFrom<u8> for InodeKind {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            INODE_KIND_DIR => Ok(Self::Dir),
            INODE_KIND_FILE => Ok(Self::File),
            INODE_KIND_APP => Ok(Self::App),
            other => Err(other),
        }
    }
}

impl Inode {
    /// The inode's kind ([`FileTreeError::Corrupt`] for an unknown one; never for an
    /// inode returned by [`FileTree::inode`]).
    pub fn kind(&self) -> Result<InodeKind, FileTreeError> {
        InodeKind::try_from(self.kind).map_err(|_| FileTreeError::Corrupt)
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == INODE_KIND_DIR
    }
}

/// Why a file tree, or a part of it, was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTreeError {
    /// Wrong magic.
    BadMagic,
    /// Unsupported version.
    BadVersion(u32),
    /// The header's offsets, lengths or alignment are inconsistent, or a reserved field
    /// is not zero.
    BadHeader,
    /// The blob is shorter than its header says.
    Truncated,
    /// An inode, a name or a data range is invalid (or an inode number is out of range).
    Corrupt,
    /// A directory operation on an inode that is not a directory.
    NotDirectory,
    /// A data operation on an inode that is not a regular file with data in the blob (a
    /// directory, or the app, whose bytes the firmware supplies).
    NotRegularFile,
}

impl FileTreeHeader {
    /// Check the header of a blob of which `available` bytes are present; returns the
    /// blob's length (`data_offset + data_len`, at most `available`).
    pub fn check(&self, available: u64) -> Result<u64, FileTreeError> {
        if self.magic != FILE_TREE_MAGIC {
            return Err(FileTreeError::BadMagic);
        }
        if self.version != FILE_TREE_VERSION {
            return Err(FileTreeError::BadVersion(self.version));
        }
        // inode_count < 2^32, so the table's end fits easily.
        let names_offset = HEADER_SIZE + INODE_SIZE * u64::from(self.inode_count);
        let names_end = self
            .names_offset
            .checked_add(self.names_len)
            .ok_or(FileTreeError::BadHeader)?;
        let ok = self.inode_count >= 1
            && self.inodes_offset == HEADER_SIZE
            && self.names_offset == names_offset
            && self.data_offset.is_multiple_of(DATA_ALIGN)
            && self.data_len.is_multiple_of(DATA_ALIGN)
            && self.data_offset >= names_end
            && self.reserved == 0;
        if !ok {
            return Err(FileTreeError::BadHeader);
        }
        let end = self
            .data_offset
            .checked_add(self.data_len)
            .ok_or(FileTreeError::BadHeader)?;
        if end > available {
            return Err(FileTreeError::Truncated);
        }
        Ok(end)
    }
}

/// A file tree whose header has been checked.
#[derive(Debug, Clone, Copy)]
pub struct FileTree<'a> {
    /// Exactly the blob (`data_offset + data_len` bytes).
    bytes: &'a [u8],
    inode_count: u32,
    /// The names area, a sub-slice of `bytes`.
    names: &'a [u8],
    data_offset: u64,
    data_len: u64,
}

/// What a path names: an inode of the tree, or what the `special` callback of
/// [`FileTree::resolve`] returned for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved<S> {
    /// An inode of the tree.
    Inode(u32),
    /// A name the caller overlays on the tree (`/dev/null`, `/proc/self/exe`, ...).
    Special(S),
}

/// Why a path does not resolve, as the Linux path walk reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    /// The path is empty or a component does not exist (`ENOENT`).
    NotFound,
    /// A component used as a directory is not one (`ENOTDIR`), including a trailing
    /// slash after a file.
    NotDir,
    /// A component is longer than [`NAME_MAX`] or the path is [`PATH_MAX`] bytes or
    /// longer (`ENAMETOOLONG`).
    NameTooLong,
    /// The tree is corrupt (`EIO`).
    Corrupt,
}

impl ResolveError {
    /// The Linux errno (positive).
    pub const fn errno(self) -> u64 {
        match self {
            Self::NotFound => ENOENT,
            Self::NotDir => ENOTDIR,
            Self::NameTooLong => ENAMETOOLONG,
            Self::Corrupt => EIO,
        }
    }
}

impl From<FileTreeError> for ResolveError {
    fn from(e: FileTreeError) -> Self {
        match e {
            FileTreeError::NotDirectory => Self::NotDir,
            _ => Self::Corrupt,
        }
    }
}

/// Why [`FileTree::path_of`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOfError {
    /// The output buffer is too small (`ERANGE`, as `getcwd` reports it).
    Range,
    /// The tree is corrupt (`EIO`).
    Corrupt,
}

impl PathOfError {
    /// The Linux errno (positive).
    pub const fn errno(self) -> u64 {
        match self {
            Self::Range => ERANGE,
            Self::Corrupt => EIO,
        }
    }
}

impl From<FileTreeError> for PathOfError {
    fn from(_: FileTreeError) -> Self {
        Self::Corrupt
    }
}

/// `usize` from a `u64` that is known to be at most a slice length.
fn to_usize(x: u64) -> Result<usize, FileTreeError> {
    usize::try_from(x).map_err(|_| FileTreeError::Corrupt)
}

/// Is `name` a valid directory-entry name of a non-root inode?
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0)
}

impl<'a> FileTree<'a> {
    /// Check the header of the blob at the start of `bytes` (O(1); nothing else is
    /// looked at until an accessor needs it). `bytes` may extend past the blob.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FileTreeError> {
        let (header, _) =
            FileTreeHeader::read_from_prefix(bytes).map_err(|_| FileTreeError::Truncated)?;
        let available = u64::try_from(bytes.len()).map_err(|_| FileTreeError::BadHeader)?;
        let len = header.check(available)?;
        // Every offset below is at most `len <= bytes.len()`, so it fits a usize.
        let bytes = bytes
            .get(..to_usize(len)?)
            .ok_or(FileTreeError::Truncated)?;
        let names_start = to_usize(header.names_offset)?;
        let names_end = to_usize(header.names_offset + header.names_len)?;
        let names = bytes
            .get(names_start..names_end)
            .ok_or(FileTreeError::Truncated)?;
        Ok(Self {
            bytes,
            inode_count: header.inode_count,
            names,
            data_offset: header.data_offset,
            data_len: header.data_len,
        })
    }

    /// The blob (exactly its length).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of inodes.
    pub fn inode_count(&self) -> u32 {
        self.inode_count
    }

    /// Inode `index`, after the checks of its own fields: a known kind, zero flags,
    /// mode within [`MODE_MASK`], nanoseconds below a second; the root a directory without name or parent; any
    /// other inode a parent below it and a name of `1..=NAME_MAX` bytes inside the
    /// names area; a directory without data, with no more subdirectories than children
    /// and with its children (if any) after it and inside the table; a file without children and with its data inside the data area
    /// (the app: no data at all).
    pub fn inode(&self, index: u32) -> Result<Inode, FileTreeError> {
        if index >= self.inode_count {
            return Err(FileTreeError::Corrupt);
        }
        // index < inode_count, and the table ends inside `bytes`.
        let at = to_usize(HEADER_SIZE + INODE_SIZE * u64::from(index))?;
        let raw = self
            .bytes
            .get(at..at + INODE_SIZE as usize)
            .ok_or(FileTreeError::Corrupt)?;
        let inode = Inode::read_from_bytes(raw).map_err(|_| FileTreeError::Corrupt)?;
        if self.inode_ok(index, &inode) {
            Ok(inode)
        } else {
            Err(FileTreeError::Corrupt)
        }
    }

    /// The per-inode rules [`Self::inode`] documents.
    fn inode_ok(&self, index: u32, inode: &Inode) -> bool {
        let Ok(kind) = inode.kind() else {
            return false;
        };
        if inode.flags != 0 || inode.mode & !MODE_MASK != 0 || inode.mtime_nsec >= NANOS_PER_SEC {
            return false;
        }
        let placed = if index == ROOT_INODE {
            kind == InodeKind::Dir && inode.parent == ROOT_INODE && inode.name_len == 0
        } else {
            inode.parent < index
                && inode.name_len >= 1
                && inode.name_len as usize <= NAME_MAX
                && u64::from(inode.name_off) + u64::from(inode.name_len) <= self.names.len() as u64
        };
        let shaped = match kind {
            InodeKind::Dir => {
                inode.data_off == 0
                    && inode.size == 0
                    && inode.subdirs <= inode.child_count
                    && (inode.child_count == 0
                        || (inode.first_child > index
                            && u64::from(inode.first_child) + u64::from(inode.child_count)
                                <= u64::from(self.inode_count)))
            }
            InodeKind::File => {
                inode.first_child == 0
                    && inode.child_count == 0
                    && inode.subdirs == 0
                    && inode.data_off.is_multiple_of(DATA_ALIGN)
                    && inode
                        .data_off
                        .checked_add(inode.size)
                        .is_some_and(|end| end <= self.data_len)
            }
            InodeKind::App => {
                inode.first_child == 0
                    && inode.child_count == 0
                    && inode.subdirs == 0
                    && inode.data_off == 0
                    && inode.size == 0
            }
        };
        placed && shaped
    }

    /// An inode's name (empty for the root), bounds-checked against the names area.
    pub fn name(&self, inode: &Inode) -> Result<&'a [u8], FileTreeError> {
        let start = inode.name_off as usize;
        let end = start
            .checked_add(inode.name_len as usize)
            .ok_or(FileTreeError::Corrupt)?;
        self.names.get(start..end).ok_or(FileTreeError::Corrupt)
    }

    /// The directory `dir`'s child called `name`, by binary search over its children.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>, FileTreeError> {
        let node = self.inode(dir)?;
        Ok(self.lookup_in(dir, &node, name)?.map(|(index, _)| index))
    }

    /// [`Self::lookup`] with `dir`'s inode already read; also returns the child's inode.
    fn lookup_in(
        &self,
        dir: u32,
        node: &Inode,
        name: &[u8],
    ) -> Result<Option<(u32, Inode)>, FileTreeError> {
        if !node.is_dir() {
            return Err(FileTreeError::NotDirectory);
        }
        if name.is_empty() || name.len() > NAME_MAX {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u32, node.child_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // first_child + child_count <= inode_count (checked by `inode`).
            let index = node.first_child + mid;
            let child = self.inode(index)?;
            if child.parent != dir {
                return Err(FileTreeError::Corrupt);
            }
            match self.name(&child)?.cmp(name) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Some((index, child))),
            }
        }
        Ok(None)
    }

    /// The `n`-th child (in name order) of the directory `dir`, `None` past the last
    /// one: for listing a directory.
    pub fn child(&self, dir: u32, n: u32) -> Result<Option<u32>, FileTreeError> {
        let node = self.inode(dir)?;
        if !node.is_dir() {
            return Err(FileTreeError::NotDirectory);
        }
        if n >= node.child_count {
            return Ok(None);
        }
        let index = node.first_child + n;
        if self.inode(index)?.parent != dir {
            return Err(FileTreeError::Corrupt);
        }
        Ok(Some(index))
    }

    /// The parent directory of `index` (the root's is the root), checked to be a
    /// directory that lists `index` among its children.
    pub fn parent(&self, index: u32) -> Result<u32, FileTreeError> {
        let node = self.inode(index)?;
        Ok(self.parent_of(index, &node)?.0)
    }

    /// [`Self::parent`] with the inode already read; also returns the parent's inode.
    fn parent_of(&self, index: u32, node: &Inode) -> Result<(u32, Inode), FileTreeError> {
        if index == ROOT_INODE {
            return Ok((ROOT_INODE, *node));
        }
        let parent = self.inode(node.parent)?;
        let listed = index
            .checked_sub(parent.first_child)
            .is_some_and(|n| n < parent.child_count);
        if !parent.is_dir() || !listed {
            return Err(FileTreeError::Corrupt);
        }
        Ok((node.parent, parent))
    }

    /// Where a regular file's bytes are: `(offset from the blob start, length)`, inside
    /// the data area.
    pub fn file_data(&self, inode: &Inode) -> Result<(u64, u64), FileTreeError> {
        if inode.kind != INODE_KIND_FILE {
            return Err(FileTreeError::NotRegularFile);
        }
        let end = inode
            .data_off
            .checked_add(inode.size)
            .ok_or(FileTreeError::Corrupt)?;
        if !inode.data_off.is_multiple_of(DATA_ALIGN) || end > self.data_len {
            return Err(FileTreeError::Corrupt);
        }
        // data_offset + data_len is the blob's length.
        Ok((self.data_offset + inode.data_off, inode.size))
    }

    /// A regular file's bytes ([`Self::file_data`] as a slice of the blob).
    pub fn file_bytes(&self, inode: &Inode) -> Result<&'a [u8], FileTreeError> {
        let (offset, len) = self.file_data(inode)?;
        let start = to_usize(offset)?;
        let end = start
            .checked_add(to_usize(len)?)
            .ok_or(FileTreeError::Corrupt)?;
        self.bytes.get(start..end).ok_or(FileTreeError::Corrupt)
    }

    /// Resolve `path` as the Linux path walk does on a read-only tree without symbolic
    /// links: an absolute path from the root, a relative one from `start_dir`; repeated
    /// slashes count as one; `.` stays, `..` goes to the parent (the root's is the
    /// root).
    ///
    /// For each component other than `.` and `..`, `special(dir, name)` is asked first;
    /// what it returns overlays the tree (`/dev/null` in the empty `/dev`, and so on).
    /// A special is a leaf: more components, or a trailing slash, after it are
    /// [`ResolveError::NotDir`]. (The tree has no symbolic links; a special that acts as
    /// one, such as `/proc/self/exe`, is the caller's to follow or not.)
    ///
    /// Errors, as Linux orders them: an empty path is [`ResolveError::NotFound`], one of
    /// [`PATH_MAX`] bytes or more [`ResolveError::NameTooLong`]; then per component a
    /// non-directory to walk from is [`ResolveError::NotDir`], a name longer than
    /// [`NAME_MAX`] [`ResolveError::NameTooLong`], a missing one
    /// [`ResolveError::NotFound`]; a trailing slash after a file is
    /// [`ResolveError::NotDir`]. Each step moves one inode along a checked edge, so the
    /// walk is O(components x log(children)).
    pub fn resolve<S>(
        &self,
        start_dir: u32,
        path: &[u8],
        special: impl Fn(u32, &[u8]) -> Option<S>,
    ) -> Result<Resolved<S>, ResolveError> {
        let Some(&first) = path.first() else {
            return Err(ResolveError::NotFound);
        };
        if path.len() >= PATH_MAX {
            return Err(ResolveError::NameTooLong);
        }
        let trailing_slash = path.last() == Some(&b'/');
        let mut cur = if first == b'/' { ROOT_INODE } else { start_dir };
        let mut node = self.inode(cur)?;
        let mut components = path.split(|&b| b == b'/').filter(|c| !c.is_empty());
        let mut next = components.next();
        while let Some(name) = next {
            next = components.next();
            if !node.is_dir() {
                return Err(ResolveError::NotDir);
            }
            match name {
                b"." => continue,
                b".." => {
                    (cur, node) = self.parent_of(cur, &node)?;
                    continue;
                }
                _ => {}
            }
            if name.len() > NAME_MAX {
                return Err(ResolveError::NameTooLong);
            }
            if let Some(s) = special(cur, name) {
                if next.is_some() || trailing_slash {
                    return Err(ResolveError::NotDir);
                }
                return Ok(Resolved::Special(s));
            }
            match self.lookup_in(cur, &node, name)? {
                Some((index, child)) => (cur, node) = (index, child),
                None => return Err(ResolveError::NotFound),
            }
        }
        if trailing_slash && !node.is_dir() {
            return Err(ResolveError::NotDir);
        }
        Ok(Resolved::Inode(cur))
    }

    /// Write the absolute path of inode `index` (`/` for the root) to the start of
    /// `out`, without a NUL, and return its length. [`PathOfError::Range`] when `out`
    /// is too small (`getcwd` wants room for the NUL too: pass one byte less). Every
    /// name on the way is checked to be a valid name and every parent to list its child.
    pub fn path_of(&self, index: u32, out: &mut [u8]) -> Result<usize, PathOfError> {
        let mut node = self.inode(index)?;
        if index == ROOT_INODE {
            let slot = out.first_mut().ok_or(PathOfError::Range)?;
            *slot = b'/';
            return Ok(1);
        }
        // Build the path backwards at the end of `out`, then move it to the front.
        let mut start = out.len();
        let mut cur = index;
        // `parent < cur` for every inode but the root: this ends within `index` steps.
        while cur != ROOT_INODE {
            let name = self.name(&node)?;
            if !valid_name(name) {
                return Err(PathOfError::Corrupt);
            }
            let (parent, parent_node) = self.parent_of(cur, &node)?;
            let at = start
                .checked_sub(name.len() + 1)
                .ok_or(PathOfError::Range)?;
            out[at] = b'/';
            out[at + 1..start].copy_from_slice(name);
            start = at;
            (cur, node) = (parent, parent_node);
        }
        let len = out.len() - start;
        out.copy_within(start.., 0);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};
    use std::vec;
    use std::vec::Vec;
    use zerocopy::FromZeros;

    // ---- A test-only encoder (the real one is the loader's) ----

    /// A node of a tree to encode.
    #[derive(Debug, Clone)]
    enum Node {
        Dir(u16, BTreeMap<Vec<u8>, Node>),
        File(u16, Vec<u8>),
        App,
    }

    /// What the encoder placed: per inode, its path components and node.
    #[derive(Debug)]
    struct Placed {
        path: Vec<Vec<u8>>,
        index: u32,
        node: Node,
    }

    const fn align(x: usize) -> usize {
        (x + 4095) & !4095
    }

    /// Encode `root` (a directory) breadth-first, as the format says.
    fn encode(root: &Node) -> (Vec<u8>, Vec<Placed>) {
        let mut placed = vec![Placed {
            path: Vec::new(),
            index: 0,
            node: root.clone(),
        }];
        let mut inodes: Vec<Inode> = vec![Inode::new_zeroed()];
        let mut parents = vec![0u32];
        let mut names: Vec<u8> = Vec::new();
        let mut queue = VecDeque::from([0usize]);
        while let Some(i) = queue.pop_front() {
            let Node::Dir(_, children) = placed[i].node.clone() else {
                continue;
            };
            let first = inodes.len() as u32;
            for (name, child) in children {
                let index = inodes.len() as u32;
                let mut path = placed[i].path.clone();
                path.push(name.clone());
                inodes.push(Inode {
                    parent: i as u32,
                    name_off: names.len() as u32,
                    name_len: name.len() as u32,
                    ..Inode::new_zeroed()
                });
                parents.push(i as u32);
                names.extend_from_slice(&name);
                placed.push(Placed {
                    path,
                    index,
                    node: child,
                });
                queue.push_back(index as usize);
            }
            let count = inodes.len() as u32 - first;
            if count > 0 {
                inodes[i].first_child = first;
                inodes[i].child_count = count;
            }
        }
        let mut data: Vec<u8> = Vec::new();
        for (inode, p) in inodes.iter_mut().zip(&placed) {
            match &p.node {
                Node::Dir(mode, _) => {
                    inode.kind = INODE_KIND_DIR;
                    inode.mode = *mode;
                }
                Node::File(mode, bytes) => {
                    inode.kind = INODE_KIND_FILE;
                    inode.mode = *mode;
                    data.resize(align(data.len()), 0);
                    inode.data_off = data.len() as u64;
                    inode.size = bytes.len() as u64;
                    data.extend_from_slice(bytes);
                }
                Node::App => {
                    inode.kind = INODE_KIND_APP;
                    inode.mode = 0o755;
                }
            }
        }
        data.resize(align(data.len()), 0);
        let names_offset = 64 + 56 * inodes.len();
        let data_offset = align(names_offset + names.len());
        let header = FileTreeHeader {
            magic: FILE_TREE_MAGIC,
            version: FILE_TREE_VERSION,
            inode_count: inodes.len() as u32,
            inodes_offset: 64,
            names_offset: names_offset as u64,
            names_len: names.len() as u64,
            data_offset: data_offset as u64,
            data_len: data.len() as u64,
            reserved: 0,
        };
        let mut blob = header.as_bytes().to_vec();
        for inode in &inodes {
            blob.extend_from_slice(inode.as_bytes());
        }
        blob.extend_from_slice(&names);
        blob.resize(data_offset, 0);
        blob.extend_from_slice(&data);
        (blob, placed)
    }

    fn dir(children: &[(&str, Node)]) -> Node {
        Node::Dir(
            0o755,
            children
                .iter()
                .map(|(n, c)| (n.as_bytes().to_vec(), c.clone()))
                .collect(),
        )
    }

    fn file(bytes: &[u8]) -> Node {
        Node::File(0o644, bytes.to_vec())
    }

    /// `/dev`, `/proc/self`, `/app/hello` (the app), `/etc/app/config.toml`,
    /// `/data/a`, `/data/b/`, `/data/big`, `/empty`.
    fn sample() -> (Vec<u8>, Vec<Placed>) {
        let big: Vec<u8> = (0..9000u32).map(|i| i as u8).collect();
        encode(&dir(&[
            ("dev", dir(&[])),
            ("proc", dir(&[("self", Node::Dir(0o555, BTreeMap::new()))])),
            ("app", dir(&[("hello", Node::App)])),
            (
                "etc",
                dir(&[("app", dir(&[("config.toml", file(b"x = 1\n"))]))]),
            ),
            (
                "data",
                dir(&[("a", file(b"A")), ("b", dir(&[])), ("big", file(&big))]),
            ),
            ("empty", file(b"")),
        ]))
    }

    fn no_special(_: u32, _: &[u8]) -> Option<()> {
        None
    }

    fn index_of(placed: &[Placed], path: &str) -> u32 {
        let want: Vec<Vec<u8>> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect();
        placed.iter().find(|p| p.path == want).unwrap().index
    }

    // ---- Examples ----

    #[test]
    fn sample_tree_resolves() {
        let (blob, placed) = sample();
        let tree = FileTree::parse(&blob).unwrap();
        let r = |start: u32, path: &str| tree.resolve(start, path.as_bytes(), no_special);
        let at = |path: &str| Ok(Resolved::Inode(index_of(&placed, path)));
        assert_eq!(r(0, "/"), Ok(Resolved::Inode(0)));
        assert_eq!(r(0, "//"), Ok(Resolved::Inode(0)));
        assert_eq!(r(0, "/.."), Ok(Resolved::Inode(0)));
        assert_eq!(r(0, "/../.././"), Ok(Resolved::Inode(0)));
        assert_eq!(r(0, "/etc/app/config.toml"), at("/etc/app/config.toml"));
        assert_eq!(r(0, "//etc//app/./config.toml"), at("/etc/app/config.toml"));
        assert_eq!(r(0, "/data/b/../a"), at("/data/a"));
        assert_eq!(r(0, "/data/b/"), at("/data/b"));
        assert_eq!(r(0, "/app/hello"), at("/app/hello"));
        let data = index_of(&placed, "/data");
        assert_eq!(r(data, "a"), at("/data/a"));
        assert_eq!(r(data, "."), at("/data"));
        assert_eq!(r(data, ".."), Ok(Resolved::Inode(0)));
        assert_eq!(r(data, "../etc/app"), at("/etc/app"));
        assert_eq!(r(data, "/etc"), at("/etc"));

        assert_eq!(r(0, ""), Err(ResolveError::NotFound));
        assert_eq!(r(data, ""), Err(ResolveError::NotFound));
        assert_eq!(r(0, "/nope"), Err(ResolveError::NotFound));
        assert_eq!(r(0, "/data/nope/a"), Err(ResolveError::NotFound));
        assert_eq!(r(0, "/data/a/"), Err(ResolveError::NotDir));
        assert_eq!(r(0, "/data/a/."), Err(ResolveError::NotDir));
        assert_eq!(r(0, "/data/a/.."), Err(ResolveError::NotDir));
        assert_eq!(r(0, "/data/a/x"), Err(ResolveError::NotDir));
        assert_eq!(r(0, "/app/hello/"), Err(ResolveError::NotDir));
        let a = index_of(&placed, "/data/a");
        assert_eq!(r(a, "x"), Err(ResolveError::NotDir));
        assert_eq!(r(a, "/data"), at("/data"));

        let long = "x".repeat(256);
        assert_eq!(r(0, &long), Err(ResolveError::NameTooLong));
        assert_eq!(r(0, &"x".repeat(255)), Err(ResolveError::NotFound));
        // ENOTDIR before the long name: the walk stops at the file first.
        assert_eq!(
            r(0, &std::format!("/data/a/{long}")),
            Err(ResolveError::NotDir)
        );
        let path = "/".repeat(PATH_MAX - 1);
        assert_eq!(r(0, &path), Ok(Resolved::Inode(0)));
        assert_eq!(r(0, &"/".repeat(PATH_MAX)), Err(ResolveError::NameTooLong));
    }

    #[test]
    fn specials_overlay_the_tree() {
        let (blob, placed) = sample();
        let tree = FileTree::parse(&blob).unwrap();
        let dev = index_of(&placed, "/dev");
        let proc_self = index_of(&placed, "/proc/self");
        let data = index_of(&placed, "/data");
        let special = |d: u32, name: &[u8]| match (d, name) {
            (d, b"null") if d == dev => Some("null"),
            (d, b"exe") if d == proc_self => Some("exe"),
            // Asked first: shadows the tree's /data/a.
            (d, b"a") if d == data => Some("shadow"),
            _ => None,
        };
        let r = |path: &str| tree.resolve(0, path.as_bytes(), special);
        assert_eq!(r("/dev/null"), Ok(Resolved::Special("null")));
        assert_eq!(r("/dev//null"), Ok(Resolved::Special("null")));
        assert_eq!(r("/proc/self/../self/exe"), Ok(Resolved::Special("exe")));
        assert_eq!(r("/data/a"), Ok(Resolved::Special("shadow")));
        assert_eq!(r("/dev/null/"), Err(ResolveError::NotDir));
        assert_eq!(r("/dev/null/x"), Err(ResolveError::NotDir));
        assert_eq!(r("/dev/null/."), Err(ResolveError::NotDir));
        assert_eq!(r("/dev/zero"), Err(ResolveError::NotFound));
        assert_eq!(r("/null"), Err(ResolveError::NotFound));
        assert_eq!(
            tree.resolve(dev, b"null", special),
            Ok(Resolved::Special("null"))
        );
    }

    #[test]
    fn errno_values_are_linux() {
        assert_eq!(ResolveError::NotFound.errno(), 2);
        assert_eq!(ResolveError::NotDir.errno(), 20);
        assert_eq!(ResolveError::NameTooLong.errno(), 36);
        assert_eq!(ResolveError::Corrupt.errno(), 5);
        assert_eq!(PathOfError::Range.errno(), 34);
        assert_eq!(PathOfError::Corrupt.errno(), 5);
    }

    #[test]
    fn file_data_and_listing() {
        let (blob, placed) = sample();
        let tree = FileTree::parse(&blob).unwrap();
        let big = tree.inode(index_of(&placed, "/data/big")).unwrap();
        let bytes = tree.file_bytes(&big).unwrap();
        assert_eq!(bytes.len(), 9000);
        assert!(bytes.iter().enumerate().all(|(i, &b)| b == i as u8));
        let (offset, len) = tree.file_data(&big).unwrap();
        assert_eq!(offset % 4096, 0);
        assert_eq!(len, 9000);
        let empty = tree.inode(index_of(&placed, "/empty")).unwrap();
        assert_eq!(tree.file_bytes(&empty).unwrap(), b"");
        let app = tree.inode(index_of(&placed, "/app/hello")).unwrap();
        assert_eq!(app.kind(), Ok(InodeKind::App));
        assert_eq!(tree.file_data(&app), Err(FileTreeError::NotRegularFile));
        let data = index_of(&placed, "/data");
        assert_eq!(
            tree.file_data(&tree.inode(data).unwrap()),
            Err(FileTreeError::NotRegularFile)
        );

        let names: Vec<&[u8]> = (0..)
            .map_while(|n| tree.child(data, n).unwrap())
            .map(|i| tree.name(&tree.inode(i).unwrap()).unwrap())
            .collect();
        assert_eq!(names, [&b"a"[..], b"b", b"big"]);
        let a = index_of(&placed, "/data/a");
        assert_eq!(tree.child(a, 0), Err(FileTreeError::NotDirectory));
        assert_eq!(tree.lookup(a, b"x"), Err(FileTreeError::NotDirectory));
        assert_eq!(tree.lookup(data, b""), Ok(None));
        assert_eq!(tree.lookup(data, &[b'a'; 300]), Ok(None));
        assert_eq!(tree.inode(tree.inode_count()), Err(FileTreeError::Corrupt));
        assert_eq!(tree.inode(u32::MAX), Err(FileTreeError::Corrupt));
    }

    #[test]
    fn path_of_examples() {
        let (blob, placed) = sample();
        let tree = FileTree::parse(&blob).unwrap();
        let mut buf = [0u8; 64];
        let len = tree.path_of(0, &mut buf).unwrap();
        assert_eq!(&buf[..len], b"/");
        let config = index_of(&placed, "/etc/app/config.toml");
        let len = tree.path_of(config, &mut buf).unwrap();
        assert_eq!(&buf[..len], b"/etc/app/config.toml");
        // Exactly enough room, and one byte short.
        let mut exact = [0u8; 20];
        assert_eq!(tree.path_of(config, &mut exact), Ok(20));
        assert_eq!(&exact, b"/etc/app/config.toml");
        assert_eq!(
            tree.path_of(config, &mut [0u8; 19]),
            Err(PathOfError::Range)
        );
        assert_eq!(tree.path_of(0, &mut []), Err(PathOfError::Range));
        assert_eq!(tree.path_of(9999, &mut buf), Err(PathOfError::Corrupt));
    }

    #[test]
    fn header_checks() {
        let (blob, _) = sample();
        assert!(FileTree::parse(&blob).is_ok());
        // A longer slice is fine; the tree is the blob.
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0xAA; 4096]);
        assert_eq!(FileTree::parse(&longer).unwrap().bytes(), &blob[..]);
        assert_eq!(
            FileTree::parse(&blob[..blob.len() - 1]).map(|_| ()),
            Err(FileTreeError::Truncated)
        );
        assert_eq!(
            FileTree::parse(&blob[..63]).map(|_| ()),
            Err(FileTreeError::Truncated)
        );
        let edit = |at: usize, value: &[u8]| {
            let mut b = blob.clone();
            b[at..at + value.len()].copy_from_slice(value);
            FileTree::parse(&b).map(|_| ())
        };
        assert_eq!(edit(0, b"X"), Err(FileTreeError::BadMagic));
        assert_eq!(edit(8, &[1]), Err(FileTreeError::BadVersion(1)));
        assert_eq!(edit(8, &[3]), Err(FileTreeError::BadVersion(3)));
        assert_eq!(
            edit(0x0C, &0u32.to_le_bytes()),
            Err(FileTreeError::BadHeader)
        );
        assert_eq!(edit(0x10, &[65]), Err(FileTreeError::BadHeader));
        assert_eq!(edit(0x18, &[0]), Err(FileTreeError::BadHeader));
        assert_eq!(
            edit(0x20, &u64::MAX.to_le_bytes()),
            Err(FileTreeError::BadHeader)
        );
        assert_eq!(edit(0x28, &[1]), Err(FileTreeError::BadHeader));
        assert_eq!(edit(0x30, &[1]), Err(FileTreeError::BadHeader));
        assert_eq!(
            edit(0x30, &(!4095u64).to_le_bytes()),
            Err(FileTreeError::BadHeader)
        );
        assert_eq!(edit(0x38, &[1]), Err(FileTreeError::BadHeader));
    }

    #[test]
    fn inode_checks() {
        let (blob, placed) = sample();
        let data = index_of(&placed, "/data") as usize;
        let a = index_of(&placed, "/data/a") as usize;
        let edit = |index: usize, change: &dyn Fn(&mut Inode)| {
            let mut b = blob.clone();
            let at = 64 + 56 * index;
            let mut inode = Inode::read_from_bytes(&b[at..at + 56]).unwrap();
            change(&mut inode);
            b[at..at + 56].copy_from_slice(inode.as_bytes());
            let tree = FileTree::parse(&b).unwrap();
            tree.inode(index as u32).map(|_| ())
        };
        let corrupt = Err(FileTreeError::Corrupt);
        assert_eq!(edit(0, &|i| i.kind = INODE_KIND_FILE), corrupt);
        assert_eq!(edit(0, &|i| i.name_len = 1), corrupt);
        assert_eq!(edit(0, &|i| i.parent = 1), corrupt);
        assert_eq!(edit(data, &|i| i.kind = 0), corrupt);
        assert_eq!(edit(data, &|i| i.kind = 4), corrupt);
        assert_eq!(edit(data, &|i| i.flags = 1), corrupt);
        assert_eq!(edit(data, &|i| i.mode = 0o10000), corrupt);
        assert_eq!(edit(data, &|i| i.parent = data as u32), corrupt);
        assert_eq!(edit(data, &|i| i.first_child = data as u32), corrupt);
        assert_eq!(edit(data, &|i| i.child_count = u32::MAX), corrupt);
        assert_eq!(edit(data, &|i| i.size = 1), corrupt);
        assert_eq!(edit(data, &|i| i.name_len = 0), corrupt);
        assert_eq!(edit(data, &|i| i.name_len = 256), corrupt);
        assert_eq!(edit(data, &|i| i.name_off = u32::MAX), corrupt);
        assert_eq!(edit(a, &|i| i.data_off = 1), corrupt);
        assert_eq!(edit(a, &|i| i.size = u64::MAX), corrupt);
        assert_eq!(edit(a, &|i| i.child_count = 1), corrupt);
        assert_eq!(edit(a, &|i| i.kind = INODE_KIND_APP), corrupt);
        assert_eq!(edit(a, &|i| i.mode = 0o7777), Ok(()));
        assert_eq!(edit(a, &|i| i.subdirs = 1), corrupt);
        assert_eq!(edit(a, &|i| i.mtime_nsec = NANOS_PER_SEC), corrupt);
        assert_eq!(edit(a, &|i| i.mtime_sec = i64::MIN), Ok(()));
        assert_eq!(
            edit(data, &|i| i.subdirs = i.child_count + 1),
            corrupt,
            "more subdirectories than children"
        );
        assert_eq!(edit(data, &|i| i.subdirs = i.child_count), Ok(()));
    }

    #[test]
    fn misplaced_children_are_corrupt() {
        // /data's first child claims another parent: lookup and child notice.
        let (mut blob, placed) = sample();
        let data = index_of(&placed, "/data");
        let a = index_of(&placed, "/data/a") as usize;
        let at = 64 + 56 * a + 4;
        blob[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        let tree = FileTree::parse(&blob).unwrap();
        assert_eq!(tree.child(data, 0), Err(FileTreeError::Corrupt));
        assert_eq!(tree.lookup(data, b"a"), Err(FileTreeError::Corrupt));
        // The root does not list /data/a: its parent link is refused.
        assert_eq!(tree.parent(a as u32), Err(FileTreeError::Corrupt));
        assert_eq!(
            tree.resolve(0, b"/data/a", no_special),
            Err(ResolveError::Corrupt)
        );
    }

    // ---- Properties ----

    fn name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop::sample::select(&b"ab.-:\xff"[..]), 1..4)
            .prop_filter("not . or ..", |n| n != b"." && n != b"..")
    }

    fn mode() -> impl Strategy<Value = u16> {
        prop_oneof![Just(0o755u16), Just(0o644), 0u16..=0o7777]
    }

    fn node() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            4 => (mode(), proptest::collection::vec(any::<u8>(), 0..5000))
                .prop_map(|(m, d)| Node::File(m, d)),
            1 => Just(Node::App),
            2 => mode().prop_map(|m| Node::Dir(m, BTreeMap::new())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            (mode(), proptest::collection::btree_map(name(), inner, 0..6))
                .prop_map(|(m, c)| Node::Dir(m, c))
        })
    }

    fn tree() -> impl Strategy<Value = Node> {
        proptest::collection::btree_map(name(), node(), 0..6).prop_map(|c| Node::Dir(0o755, c))
    }

    /// Join components into an absolute path, with each separator chosen by `style`:
    /// `/`, `//`, `/./`, or `/<name>/../<name>/` (up and down again; only after a
    /// directory, which every component but the last is).
    fn path_variant(components: &[Vec<u8>], style: &[u8]) -> Vec<u8> {
        let mut path = Vec::new();
        for (i, c) in components.iter().enumerate() {
            match style.get(i).copied().unwrap_or(0) % 4 {
                0 => path.push(b'/'),
                1 => path.extend_from_slice(b"//"),
                2 => path.extend_from_slice(b"/./"),
                _ if i > 0 => {
                    path.extend_from_slice(b"/../");
                    path.extend_from_slice(&components[i - 1]);
                    path.push(b'/');
                }
                _ => path.extend_from_slice(b"/../"),
            }
            path.extend_from_slice(c);
        }
        if path.is_empty() {
            path.push(b'/');
        }
        path
    }

    /// Call every accessor on every inode (up to a bound) and a few paths: nothing may
    /// panic, and the ordering rules that make walks terminate hold for whatever is
    /// accepted.
    fn exercise(bytes: &[u8]) -> Result<(), TestCaseError> {
        let Ok(tree) = FileTree::parse(bytes) else {
            return Ok(());
        };
        let mut buf = [0u8; 512];
        for i in 0..tree.inode_count().min(64) {
            if let Ok(inode) = tree.inode(i) {
                prop_assert!(i == 0 || inode.parent < i);
                let _ = tree.name(&inode);
                let _ = tree.file_data(&inode);
                let _ = tree.file_bytes(&inode);
                if let Ok(p) = tree.parent(i) {
                    prop_assert!(i == 0 || p < i);
                }
            }
            for n in 0..3 {
                if let Ok(Some(c)) = tree.child(i, n) {
                    prop_assert!(c > i);
                }
            }
            for name in [&b"a"[..], b"b", b"ab", b"\xff"] {
                if let Ok(Some(c)) = tree.lookup(i, name) {
                    prop_assert!(c > i);
                }
            }
            let _ = tree.path_of(i, &mut buf);
            for path in [&b"a/b"[..], b"..", b"./a/../b/"] {
                let _ = tree.resolve(i, path, no_special);
            }
        }
        for path in [&b"/"[..], b"/a", b"/a/b/c", b"/a/../b/./a", b"//b//"] {
            let _ = tree.resolve(0, path, |_, n| (n == b"ab").then_some(()));
        }
        Ok(())
    }

    /// A valid header over random inodes, names and data.
    fn header_valid_blob() -> impl Strategy<Value = Vec<u8>> {
        (1u32..8, 0usize..64, prop_oneof![Just(0u64), Just(4096u64)]).prop_flat_map(
            |(count, names_len, data_len)| {
                let names_offset = 64 + 56 * count as usize;
                let data_offset = align(names_offset + names_len);
                let len = data_offset + data_len as usize;
                proptest::collection::vec(prop_oneof![Just(0u8), 1u8..4, any::<u8>()], len - 64)
                    .prop_map(move |body| {
                        let header = FileTreeHeader {
                            magic: FILE_TREE_MAGIC,
                            version: FILE_TREE_VERSION,
                            inode_count: count,
                            inodes_offset: 64,
                            names_offset: names_offset as u64,
                            names_len: names_len as u64,
                            data_offset: data_offset as u64,
                            data_len,
                            reserved: 0,
                        };
                        let mut blob = header.as_bytes().to_vec();
                        blob.extend_from_slice(&body);
                        blob
                    })
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_node_resolves_by_its_path(
            root in tree(),
            style in proptest::collection::vec(any::<u8>(), 16),
        ) {
            let (blob, placed) = encode(&root);
            let tree = FileTree::parse(&blob).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
            prop_assert_eq!(tree.inode_count() as usize, placed.len());
            for p in &placed {
                let want = Ok(Resolved::Inode(p.index));
                let plain = path_variant(&p.path, &[]);
                prop_assert_eq!(tree.resolve(0, &plain, no_special), want);
                let variant = path_variant(&p.path, &style);
                prop_assert_eq!(tree.resolve(0, &variant, no_special), want, "{:?}", variant);
                // Relative to each ancestor.
                let mut ancestor = 0;
                for (depth, c) in p.path.iter().enumerate() {
                    let rest = p.path[depth..].join(&b'/');
                    prop_assert_eq!(tree.resolve(ancestor, &rest, no_special), want);
                    ancestor = tree.lookup(ancestor, c).ok().flatten().unwrap_or(u32::MAX);
                }
                // A trailing slash is fine after a directory only.
                let mut slashed = plain.clone();
                slashed.push(b'/');
                let inode = tree.inode(p.index).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
                match &p.node {
                    Node::Dir(mode, children) => {
                        prop_assert_eq!(tree.resolve(0, &slashed, no_special), want);
                        prop_assert_eq!(inode.kind(), Ok(InodeKind::Dir));
                        prop_assert_eq!(inode.mode, *mode);
                        // Listing gives the children in order, then nothing.
                        let listed: Vec<Vec<u8>> = (0..)
                            .map_while(|n| tree.child(p.index, n).ok().flatten())
                            .filter_map(|i| tree.inode(i).ok())
                            .filter_map(|c| tree.name(&c).ok().map(<[u8]>::to_vec))
                            .collect();
                        let expected: Vec<Vec<u8>> = children.keys().cloned().collect();
                        prop_assert_eq!(listed, expected);
                        prop_assert_eq!(tree.child(p.index, children.len() as u32), Ok(None));
                    }
                    Node::File(mode, bytes) => {
                        prop_assert_eq!(tree.resolve(0, &slashed, no_special), Err(ResolveError::NotDir));
                        prop_assert_eq!(inode.mode, *mode);
                        prop_assert_eq!(tree.file_bytes(&inode), Ok(&bytes[..]));
                        let (offset, len) = tree.file_data(&inode).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
                        prop_assert_eq!(offset % 4096, 0);
                        prop_assert_eq!(len, bytes.len() as u64);
                    }
                    Node::App => {
                        prop_assert_eq!(tree.resolve(0, &slashed, no_special), Err(ResolveError::NotDir));
                        prop_assert_eq!(inode.kind(), Ok(InodeKind::App));
                    }
                }
            }
        }

        #[test]
        fn absent_names_are_not_found(root in tree(), missing in name()) {
            let (blob, placed) = encode(&root);
            let tree = FileTree::parse(&blob).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
            for p in &placed {
                let Node::Dir(_, children) = &p.node else { continue };
                if children.contains_key(&missing) {
                    continue;
                }
                prop_assert_eq!(tree.lookup(p.index, &missing), Ok(None));
                let mut path = path_variant(&p.path, &[]);
                if path != b"/" {
                    path.push(b'/');
                }
                path.extend_from_slice(&missing);
                prop_assert_eq!(tree.resolve(0, &path, no_special), Err(ResolveError::NotFound));
                path.extend_from_slice(b"/x");
                prop_assert_eq!(tree.resolve(0, &path, no_special), Err(ResolveError::NotFound));
            }
        }

        #[test]
        fn path_of_round_trips(root in tree()) {
            let (blob, placed) = encode(&root);
            let tree = FileTree::parse(&blob).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
            let mut buf = [0u8; 256];
            for p in &placed {
                let len = tree.path_of(p.index, &mut buf).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
                prop_assert_eq!(&buf[..len], &path_variant(&p.path, &[])[..]);
                prop_assert_eq!(tree.resolve(0, &buf[..len], no_special), Ok(Resolved::Inode(p.index)));
                if len > 1 {
                    prop_assert_eq!(tree.path_of(p.index, &mut buf[..len - 1]), Err(PathOfError::Range));
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            exercise(&bytes)?;
        }

        #[test]
        fn random_inodes_under_a_valid_header_never_panic(blob in header_valid_blob()) {
            prop_assert!(FileTree::parse(&blob).is_ok());
            exercise(&blob)?;
        }

        #[test]
        fn single_byte_corruption_never_panics(
            root in tree(),
            at in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let (mut blob, _) = encode(&root);
            // Mostly the header, inodes and names, where the structure is.
            let structure = blob.len().min(64 + 56 * 64);
            let i = at.index(structure);
            blob[i] = value;
            exercise(&blob)?;
        }
    }
}
