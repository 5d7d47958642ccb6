//! The encoder of the read-only file tree `nacre package --file` puts into the image
//! (the format: `nacre_shared_abi::filetree`).
//!
//! [`FileTreeBuilder`] collects directories and files by their absolute guest path and
//! [`FileTreeBuilder::build`] lays them out deterministically: inodes breadth-first with
//! each directory's children sorted bytewise, names in inode order, file data in inode
//! order, each file from a 4 KiB boundary, zero padding in between. The same additions
//! give the same bytes whatever their order (a directory added twice keeps the mode it
//! was given last).
//!
//! Every tree holds what the firmware needs: `/` (0o755), an empty `/dev` (0o755) and
//! `/proc` (0o755) with an empty `/proc/self` (0o555), in which the firmware overlays
//! `/dev/null`, `/proc/self/exe` and the like, and the app itself as `/app/NAME` (0o755;
//! an inode of kind "app", whose bytes the firmware supplies from the app image). Users
//! may not add anything under `/dev` or `/proc`, nor at `/app/NAME`. `/etc/passwd` and
//! `/etc/group` ([`DEFAULT_FILES`]) are there too unless the user adds their own.
//!
//! Every inode has a modification time: the one it was added with, else (nacre's own
//! directories, missing parents, whatever was added without one) the latest time in
//! the tree, so a tree built from the same additions is the same whatever the clock
//! says. [`FileTreeBuilder::clamp_mtimes`] caps them all (`SOURCE_DATE_EPOCH`, for
//! images that do not depend on when their files were checked out).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use nacre_shared_abi::filetree::{
    FileTreeHeader, Inode, DATA_ALIGN, FILE_TREE_MAGIC, FILE_TREE_VERSION, HEADER_SIZE,
    INODE_KIND_APP, INODE_KIND_DIR, INODE_KIND_FILE, INODE_SIZE, MODE_MASK, NAME_MAX,
    NANOS_PER_SEC, PATH_MAX,
};
use nacre_shared_abi::layout::align_up;
use thiserror::Error;
use zerocopy::{FromZeros, IntoBytes};

/// Mode of the directories the builder creates: the root, `/dev`, `/proc`, `/app` and
/// the missing parents of what is added.
pub const DEFAULT_DIR_MODE: u16 = 0o755;
/// Files every image has unless the user packages their own at the same path: the
/// user and group databases, so that user and group lookups (`getpwuid(0)`, `id`)
/// find the app's user (uid and gid 0, as the firmware reports) and `nobody`; and the
/// host table, so that `localhost` resolves to the loopback without DNS.
pub const DEFAULT_FILES: [(&[u8], &[u8]); 3] = [
    (
        b"/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    (b"/etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
    (
        b"/etc/hosts",
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    ),
];
/// Mode of [`DEFAULT_FILES`].
const DEFAULT_FILE_MODE: u16 = 0o644;
/// Mode of `/proc/self`.
const PROC_SELF_MODE: u16 = 0o555;
/// Mode of the app's inode.
pub const APP_MODE: u16 = 0o755;
/// The directory holding the app.
pub const APP_DIR: &[u8] = b"app";
/// Top-level directories that belong to the firmware: nothing may be added in them.
pub const RESERVED_DIRS: [&[u8]; 3] = [b"dev", b"proc", b"sys"];
/// Where the firmware shows the vCPUs (`online`, `possible`, `present`).
pub const SYS_CPU_DIR: [&[u8]; 4] = [b"sys", b"devices", b"system", b"cpu"];

/// Why a file tree cannot be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TreeBuildError {
    /// A guest path that does not start with `/`.
    #[error("the guest path {path} is not absolute (it must start with '/')")]
    NotAbsolute {
        /// The path, lossily as UTF-8.
        path: String,
    },
    /// A guest path with an empty, `.` or `..` component or a NUL byte.
    #[error("the guest path {path} is not a plain path: {reason}")]
    BadPath {
        /// The path, lossily as UTF-8.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A component longer than `NAME_MAX`.
    #[error("the guest path {path} has a component longer than {NAME_MAX} bytes")]
    NameTooLong {
        /// The path, lossily as UTF-8.
        path: String,
    },
    /// A path of `PATH_MAX` bytes or more, which no path the guest gives to a system
    /// call can name (only a walk from a directory descriptor could reach it).
    #[error(
        "a guest path of {len} bytes (starting {start}...): paths must be shorter than \
         {PATH_MAX} bytes (Linux's PATH_MAX)"
    )]
    PathTooLong {
        /// Its length.
        len: usize,
        /// Its first bytes, lossily as UTF-8.
        start: String,
    },
    /// A path that is already something else in the tree (file and file, file and
    /// directory, or a file where a directory is needed).
    #[error("{path} cannot be added: it is already {existing} in the image")]
    Conflict {
        /// The path (or the prefix of it) that is taken, lossily as UTF-8.
        path: String,
        /// What it is: "a file", "a directory" or "the app".
        existing: &'static str,
    },
    /// A path under `/dev` or `/proc`, or the app's own path.
    #[error("{path} is reserved: {reason}")]
    Reserved {
        /// The path, lossily as UTF-8.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The app's name is not a valid file name.
    #[error(
        "the app's name {name} cannot be a file name in the image: a name is 1 to \
         {NAME_MAX} bytes, without '/' or NUL, and not . or .."
    )]
    BadAppName {
        /// The name, lossily as UTF-8.
        name: String,
    },
    /// More inodes, or more name bytes, than the format's 32-bit fields hold.
    #[error("the file tree is too large: {what}")]
    TooLarge {
        /// What does not fit.
        what: &'static str,
    },
}

/// A modification time: seconds since the Unix epoch (negative before it) and
/// nanoseconds (below 1,000,000,000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mtime {
    /// Seconds since 1970-01-01 00:00:00 UTC.
    pub sec: i64,
    /// Nanoseconds, below [`NANOS_PER_SEC`].
    pub nsec: u32,
}

impl Mtime {
    /// `sec` seconds and `nsec` nanoseconds, the nanoseconds reduced below a second
    /// (and carried into the seconds).
    pub fn new(sec: i64, nsec: i64) -> Self {
        let carry = nsec.div_euclid(i64::from(NANOS_PER_SEC));
        Self {
            sec: sec.saturating_add(carry),
            // rem_euclid of a positive divisor is in 0..NANOS_PER_SEC.
            nsec: nsec.rem_euclid(i64::from(NANOS_PER_SEC)) as u32,
        }
    }
}

/// A node of the tree being built (`mtime`: as added, `None` for "the tree's latest").
#[derive(Clone)]
enum Node {
    Dir {
        mode: u16,
        mtime: Option<Mtime>,
        children: BTreeMap<Vec<u8>, Node>,
    },
    File {
        mode: u16,
        mtime: Option<Mtime>,
        data: Vec<u8>,
        /// One of nacre's defaults ([`DEFAULT_FILES`]), which a file the user adds at
        /// its path replaces.
        default: bool,
    },
    App,
}

impl Node {
    fn empty_dir(mode: u16) -> Self {
        Self::Dir {
            mode,
            mtime: None,
            children: BTreeMap::new(),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Self::Dir { .. } => "a directory",
            Self::File { .. } => "a file",
            Self::App => "the app",
        }
    }
}

/// What a tree holds besides nacre's own entries (`/`, `/dev`, `/proc`, `/proc/self`,
/// `/app` and the app), for messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSummary {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Bytes in the regular files.
    pub file_bytes: u64,
}

/// Builds a file tree blob; see the module documentation.
#[derive(Clone)]
pub struct FileTreeBuilder {
    root: Node,
    app_name: Vec<u8>,
    app_mtime: Option<Mtime>,
    clamp: Option<i64>,
}

impl fmt::Debug for FileTreeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTreeBuilder")
            .field("app_name", &String::from_utf8_lossy(&self.app_name))
            .field("summary", &self.summary())
            .finish_non_exhaustive()
    }
}

/// A path as text for messages.
fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// The absolute path of `parts`.
fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| [&b"/"[..], p].concat()).collect()
}

/// The children of `node`, the node at `parts`, which must be a directory for anything
/// to go inside it.
fn dir_children<'n>(
    node: &'n mut Node,
    parts: &[&[u8]],
) -> Result<&'n mut BTreeMap<Vec<u8>, Node>, TreeBuildError> {
    match node {
        Node::Dir { children, .. } => Ok(children),
        other => Err(TreeBuildError::Conflict {
            path: lossy(&join(parts)),
            existing: other.what(),
        }),
    }
}

/// Split an absolute guest path into its components, refusing anything but a plain
/// path (`/` alone is the root, with no components).
fn components(path: &[u8]) -> Result<Vec<&[u8]>, TreeBuildError> {
    // No path the guest gives to a system call is this long (ENAMETOOLONG), so a
    // file here could be reached only by a walk from a directory descriptor; refused
    // first, which also bounds the depth the builder's walks recurse through.
    if path.len() >= PATH_MAX {
        return Err(TreeBuildError::PathTooLong {
            len: path.len(),
            start: crate::shown_text(&path[..64], 64),
        });
    }
    let Some(rest) = path.strip_prefix(b"/") else {
        return Err(TreeBuildError::NotAbsolute { path: lossy(path) });
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |reason| TreeBuildError::BadPath {
        path: lossy(path),
        reason,
    };
    if path.contains(&0) {
        return Err(bad("it contains a NUL byte"));
    }
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    for part in &parts {
        match *part {
            b"" => return Err(bad("it has an empty component (a doubled or trailing '/')")),
            b"." | b".." => return Err(bad("it has a '.' or '..' component")),
            name if name.len() > NAME_MAX => {
                return Err(TreeBuildError::NameTooLong { path: lossy(path) })
            }
            _ => {}
        }
    }
    Ok(parts)
}

impl FileTreeBuilder {
    /// A tree holding nacre's own entries, with the app at `/app/<app_name>`
    /// (`app_name` is the app's file name, its `argv[0]`).
    pub fn new(app_name: &[u8]) -> Result<Self, TreeBuildError> {
        let valid = !app_name.is_empty()
            && app_name.len() <= NAME_MAX
            && app_name != b"."
            && app_name != b".."
            && !app_name.iter().any(|&b| b == b'/' || b == 0);
        if !valid {
            return Err(TreeBuildError::BadAppName {
                name: format!("\"{}\"", crate::shown_text(app_name, 64)),
            });
        }
        let mut builder = Self {
            root: Node::empty_dir(DEFAULT_DIR_MODE),
            app_name: app_name.to_vec(),
            app_mtime: None,
            clamp: None,
        };
        builder.insert(&[b"dev"], Node::empty_dir(DEFAULT_DIR_MODE), b"/dev")?;
        builder.insert(
            &[b"proc", b"self"],
            Node::empty_dir(PROC_SELF_MODE),
            b"/proc/self",
        )?;
        builder.insert(
            &SYS_CPU_DIR,
            Node::empty_dir(DEFAULT_DIR_MODE),
            b"/sys/devices/system/cpu",
        )?;
        builder.add_app()?;
        for (path, data) in DEFAULT_FILES {
            let parts = components(path)?;
            let file = Node::File {
                mode: DEFAULT_FILE_MODE,
                mtime: None,
                data: data.to_vec(),
                default: true,
            };
            builder.insert(&parts, file, path)?;
        }
        Ok(builder)
    }

    /// The app's guest path, `/app/NAME`.
    pub fn app_path(&self) -> Vec<u8> {
        let mut path = b"/".to_vec();
        path.extend_from_slice(APP_DIR);
        path.push(b'/');
        path.extend_from_slice(&self.app_name);
        path
    }

    /// Put the app (kind "app") at `/app/NAME`.
    fn add_app(&mut self) -> Result<(), TreeBuildError> {
        let name = self.app_name.clone();
        let path = self.app_path();
        self.insert(&[APP_DIR, &name], Node::App, &path)
    }

    /// The app's modification time (the app file's own).
    pub fn set_app_mtime(&mut self, mtime: Mtime) {
        self.app_mtime = Some(mtime);
    }

    /// Cap every modification time at `sec` seconds since the epoch: later ones become
    /// `sec` (the `SOURCE_DATE_EPOCH` convention of reproducible builds).
    pub fn clamp_mtimes(&mut self, sec: i64) {
        self.clamp = Some(sec);
    }

    /// Add a directory with permission bits `mode` (masked with 0o7777), and any missing
    /// parent (0o755). Adding a directory again is fine and sets its mode; the root's
    /// mode stays 0o755. Its modification time is the tree's latest.
    pub fn add_dir(&mut self, guest_path: &[u8], mode: u32) -> Result<(), TreeBuildError> {
        self.add_dir_at(guest_path, mode, None)
    }

    /// [`Self::add_dir`] with a modification time (`None`: the tree's latest; adding
    /// the directory again with a time sets it, also the root's).
    pub fn add_dir_at(
        &mut self,
        guest_path: &[u8],
        mode: u32,
        mtime: Option<Mtime>,
    ) -> Result<(), TreeBuildError> {
        let parts = self.user_components(guest_path)?;
        if parts.is_empty() {
            if let (Node::Dir { mtime: root, .. }, Some(t)) = (&mut self.root, mtime) {
                *root = Some(t);
            }
            return Ok(());
        }
        let dir = Node::Dir {
            mode: mask(mode),
            mtime,
            children: BTreeMap::new(),
        };
        self.insert(&parts, dir, guest_path)
    }

    /// Add a regular file with permission bits `mode` (masked with 0o7777), and any
    /// missing parent directory (0o755). Its modification time is the tree's latest.
    pub fn add_file(
        &mut self,
        guest_path: &[u8],
        data: Vec<u8>,
        mode: u32,
    ) -> Result<(), TreeBuildError> {
        self.add_file_at(guest_path, data, mode, None)
    }

    /// [`Self::add_file`] with a modification time (`None`: the tree's latest).
    pub fn add_file_at(
        &mut self,
        guest_path: &[u8],
        data: Vec<u8>,
        mode: u32,
        mtime: Option<Mtime>,
    ) -> Result<(), TreeBuildError> {
        let parts = self.user_components(guest_path)?;
        if parts.is_empty() {
            return Err(TreeBuildError::Conflict {
                path: "/".to_owned(),
                existing: "a directory",
            });
        }
        let mode = mask(mode);
        let file = Node::File {
            mode,
            mtime,
            data,
            default: false,
        };
        self.insert(&parts, file, guest_path)
    }

    /// The components of a path a user adds, refusing nacre's reserved places.
    fn user_components<'p>(&self, path: &'p [u8]) -> Result<Vec<&'p [u8]>, TreeBuildError> {
        let parts = components(path)?;
        if let Some(first) = parts.first() {
            if RESERVED_DIRS.contains(first) {
                return Err(TreeBuildError::Reserved {
                    path: lossy(path),
                    reason: "/dev, /proc and /sys belong to the firmware, which provides their \
                             contents",
                });
            }
        }
        if parts.len() >= 2 && parts[0] == APP_DIR && parts[1] == self.app_name.as_slice() {
            return Err(TreeBuildError::Reserved {
                path: lossy(path),
                reason: "it is where the image puts the app itself",
            });
        }
        Ok(parts)
    }

    /// Insert `leaf` at `parts`, creating missing parents (0o755). A directory merges
    /// into an existing directory (taking the new mode); anything else in the way is a
    /// conflict.
    fn insert(&mut self, parts: &[&[u8]], leaf: Node, path: &[u8]) -> Result<(), TreeBuildError> {
        let Some((last, parents)) = parts.split_last() else {
            return Ok(());
        };
        let mut children = dir_children(&mut self.root, &[])?;
        for (depth, part) in parents.iter().enumerate() {
            let node = children
                .entry(part.to_vec())
                .or_insert_with(|| Node::empty_dir(DEFAULT_DIR_MODE));
            children = dir_children(node, &parts[..=depth])?;
        }
        match (children.get_mut(*last), leaf) {
            (None, leaf) => {
                children.insert(last.to_vec(), leaf);
                Ok(())
            }
            (Some(existing @ Node::File { default: true, .. }), leaf @ Node::File { .. }) => {
                *existing = leaf;
                Ok(())
            }
            (
                Some(Node::Dir { mode, mtime, .. }),
                Node::Dir {
                    mode: new,
                    mtime: new_mtime,
                    ..
                },
            ) => {
                *mode = new;
                if new_mtime.is_some() {
                    *mtime = new_mtime;
                }
                Ok(())
            }
            (Some(existing), _) => Err(TreeBuildError::Conflict {
                path: lossy(path),
                existing: existing.what(),
            }),
        }
    }

    /// Counts of what was added (nacre's own entries excluded).
    pub fn summary(&self) -> TreeSummary {
        fn walk(node: &Node, sum: &mut TreeSummary) {
            match node {
                Node::Dir { children, .. } => {
                    sum.directories += 1;
                    children.values().for_each(|child| walk(child, sum));
                }
                Node::File { default: true, .. } => {}
                Node::File { data, .. } => {
                    sum.files += 1;
                    sum.file_bytes += data.len() as u64;
                }
                Node::App => {}
            }
        }
        let mut sum = TreeSummary::default();
        walk(&self.root, &mut sum);
        // The root, /dev, /proc, /proc/self, /sys/devices/system/cpu (four), /app and
        // /etc are always there.
        sum.directories = sum.directories.saturating_sub(10);
        sum
    }

    /// The time of what was added without one: the latest time given, clamped (the
    /// epoch when none was given).
    fn default_mtime(&self) -> Mtime {
        fn latest(node: &Node, max: &mut Option<Mtime>) {
            let own = match node {
                Node::Dir {
                    mtime, children, ..
                } => {
                    children.values().for_each(|child| latest(child, max));
                    *mtime
                }
                Node::File { mtime, .. } => *mtime,
                Node::App => None,
            };
            *max = (*max).max(own);
        }
        let mut max = self.app_mtime;
        latest(&self.root, &mut max);
        self.clamped(max.unwrap_or_default())
    }

    /// `t`, capped by [`Self::clamp_mtimes`].
    fn clamped(&self, t: Mtime) -> Mtime {
        match self.clamp {
            Some(sec) if t > Mtime { sec, nsec: 0 } => Mtime { sec, nsec: 0 },
            _ => t,
        }
    }

    /// Encode the tree (the format of `nacre_shared_abi::filetree`). Deterministic.
    pub fn build(&self) -> Result<Vec<u8>, TreeBuildError> {
        let default_mtime = self.default_mtime();
        let time = |t: Option<Mtime>| t.map_or(default_mtime, |t| self.clamped(t));
        // Breadth-first: (node, parent inode, name); a directory's children get
        // consecutive inodes when it is dequeued, so they are contiguous and after it.
        let mut order: Vec<(&Node, u32, &[u8])> = vec![(&self.root, 0, b"")];
        let mut inodes: Vec<Inode> = Vec::new();
        let mut queue = VecDeque::from([0usize]);
        let too_many = || TreeBuildError::TooLarge {
            what: "it has more than 2^32 files and directories",
        };
        while let Some(i) = queue.pop_front() {
            let index = u32::try_from(i).map_err(|_| too_many())?;
            let (node, parent, _) = order[i];
            let mut inode = Inode {
                parent,
                ..Inode::new_zeroed()
            };
            let mtime = match node {
                Node::Dir { mtime, .. } | Node::File { mtime, .. } => time(*mtime),
                Node::App => time(self.app_mtime),
            };
            inode.mtime_sec = mtime.sec;
            inode.mtime_nsec = mtime.nsec;
            match node {
                Node::Dir { mode, children, .. } => {
                    inode.kind = INODE_KIND_DIR;
                    inode.mode = *mode;
                    let subdirs = children
                        .values()
                        .filter(|c| matches!(c, Node::Dir { .. }))
                        .count();
                    // No more than the children, counted below.
                    inode.subdirs = subdirs as u32;
                    if !children.is_empty() {
                        inode.first_child = u32::try_from(order.len()).map_err(|_| too_many())?;
                        inode.child_count =
                            u32::try_from(children.len()).map_err(|_| too_many())?;
                        // The last child's inode number must fit too.
                        u32::try_from(order.len() + children.len()).map_err(|_| too_many())?;
                        for (name, child) in children {
                            queue.push_back(order.len());
                            order.push((child, index, name));
                        }
                    }
                }
                Node::File { mode, .. } => {
                    inode.kind = INODE_KIND_FILE;
                    inode.mode = *mode;
                }
                Node::App => {
                    inode.kind = INODE_KIND_APP;
                    inode.mode = APP_MODE;
                }
            }
            inodes.push(inode);
        }

        let mut names = Vec::new();
        let mut data_len = 0u64;
        for (inode, (node, _, name)) in inodes.iter_mut().zip(&order) {
            inode.name_off = u32::try_from(names.len()).map_err(|_| TreeBuildError::TooLarge {
                what: "its names take more than 4 GiB",
            })?;
            // Names are at most NAME_MAX bytes (checked when added).
            inode.name_len = name.len() as u32;
            names.extend_from_slice(name);
            if let Node::File { data, .. } = node {
                inode.data_off = align_up(data_len, DATA_ALIGN);
                inode.size = data.len() as u64;
                data_len = inode.data_off + inode.size;
            }
        }
        let data_len = align_up(data_len, DATA_ALIGN);
        let inode_count = u32::try_from(inodes.len()).map_err(|_| too_many())?;
        let names_offset = HEADER_SIZE + INODE_SIZE * u64::from(inode_count);
        let names_len = names.len() as u64;
        let data_offset = align_up(names_offset + names_len, DATA_ALIGN);
        let header = FileTreeHeader {
            magic: FILE_TREE_MAGIC,
            version: FILE_TREE_VERSION,
            inode_count,
            inodes_offset: HEADER_SIZE,
            names_offset,
            names_len,
            data_offset,
            data_len,
            reserved: 0,
        };
        let total =
            usize::try_from(data_offset + data_len).map_err(|_| TreeBuildError::TooLarge {
                what: "it does not fit in memory",
            })?;
        // A zeroed allocation, into which only bytes other than zero are copied: the
        // pages of a large zero-filled file are then never written, and a system that
        // hands out zeroed memory lazily never backs them.
        let mut blob = vec![0u8; total];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            blob[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(header.as_bytes());
        for inode in &inodes {
            put(inode.as_bytes());
        }
        put(&names);
        for (inode, (node, _, _)) in inodes.iter().zip(&order) {
            if let Node::File { data, .. } = node {
                // data_offset + data_off + size <= total, a usize.
                let start = (data_offset + inode.data_off) as usize;
                copy_nonzero(&mut blob[start..start + data.len()], data);
            }
        }
        Ok(blob)
    }
}

/// Copy `src` into `dst`, which holds zeros and is as long, 4 KiB at a time, leaving
/// out the pieces of `src` that are all zeros.
fn copy_nonzero(dst: &mut [u8], src: &[u8]) {
    const PIECE: usize = 4096;
    for (dst, src) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
        if src.iter().any(|&b| b != 0) {
            dst.copy_from_slice(src);
        }
    }
}

/// Permission bits of a host mode.
fn mask(mode: u32) -> u16 {
    // MODE_MASK fits 12 bits.
    (mode & u32::from(MODE_MASK)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::filetree::{FileTree, InodeKind, ResolveError, Resolved};
    use proptest::prelude::*;

    fn no_special(_: u32, _: &[u8]) -> Option<()> {
        None
    }

    fn resolve(tree: &FileTree<'_>, path: &[u8]) -> Result<u32, ResolveError> {
        match tree.resolve(0, path, no_special)? {
            Resolved::Inode(i) => Ok(i),
            Resolved::Special(()) => unreachable!(),
        }
    }

    #[test]
    fn times_are_kept_defaulted_to_the_latest_and_clamped() {
        let t = |sec, nsec| Mtime { sec, nsec };
        let mut b = FileTreeBuilder::new(b"hello").unwrap();
        b.add_file_at(b"/etc/a", b"a".to_vec(), 0o644, Some(t(1_000, 5)))
            .unwrap();
        b.add_dir_at(b"/etc/d", 0o755, Some(t(3_000, 0))).unwrap();
        b.add_file(b"/etc/d/untimed", Vec::new(), 0o644).unwrap();
        b.add_dir_at(b"/", 0o700, Some(t(500, 1))).unwrap();
        b.set_app_mtime(t(2_000, 9));
        let times = |b: &FileTreeBuilder| {
            let blob = b.build().unwrap();
            let tree = FileTree::parse(&blob).unwrap();
            let of = |path: &[u8]| {
                let i = tree.inode(resolve(&tree, path).unwrap()).unwrap();
                t(i.mtime_sec, i.mtime_nsec)
            };
            [
                of(b"/"),
                of(b"/etc/a"),
                of(b"/etc/d"),
                of(b"/app/hello"),
                of(b"/etc/d/untimed"),
                of(b"/etc"),
                of(b"/dev"),
            ]
        };
        // As given; what had none takes the latest given (/etc/d's).
        let latest = t(3_000, 0);
        assert_eq!(
            times(&b),
            [
                t(500, 1),
                t(1_000, 5),
                latest,
                t(2_000, 9),
                latest,
                latest,
                latest
            ]
        );
        b.clamp_mtimes(1_500);
        let cap = t(1_500, 0);
        assert_eq!(times(&b), [t(500, 1), t(1_000, 5), cap, cap, cap, cap, cap]);
        assert_eq!(Mtime::new(7, 1_500_000_000), t(8, 500_000_000));
        assert_eq!(Mtime::new(7, -1), t(6, 999_999_999));
    }

    #[test]
    fn directories_count_their_subdirectories() {
        let mut b = FileTreeBuilder::new(b"hello").unwrap();
        b.add_file(b"/opt/a", Vec::new(), 0o644).unwrap();
        b.add_dir(b"/opt/b", 0o755).unwrap();
        b.add_dir(b"/opt/b/c", 0o755).unwrap();
        let blob = b.build().unwrap();
        let tree = FileTree::parse(&blob).unwrap();
        let of = |path: &[u8]| {
            let i = tree.inode(resolve(&tree, path).unwrap()).unwrap();
            (i.child_count, i.subdirs)
        };
        assert_eq!(of(b"/opt"), (2, 1));
        assert_eq!(of(b"/opt/b"), (1, 1));
        assert_eq!(of(b"/opt/b/c"), (0, 0));
        // /app, /dev, /etc, /opt, /proc, /sys.
        assert_eq!(of(b"/"), (6, 6));
        assert_eq!(of(b"/opt/a"), (0, 0));
    }

    #[test]
    fn the_users_files_replace_the_default_ones() {
        let mut b = FileTreeBuilder::new(b"hello").unwrap();
        b.add_file(
            b"/etc/passwd",
            b"app:x:1000:1000::/:/bin/false\n".to_vec(),
            0o600,
        )
        .unwrap();
        let blob = b.build().unwrap();
        let tree = FileTree::parse(&blob).unwrap();
        let passwd = tree.inode(resolve(&tree, b"/etc/passwd").unwrap()).unwrap();
        assert_eq!(passwd.mode, 0o600);
        assert_eq!(
            tree.file_bytes(&passwd).unwrap(),
            b"app:x:1000:1000::/:/bin/false\n"
        );
        let group = tree.inode(resolve(&tree, b"/etc/group").unwrap()).unwrap();
        assert_eq!(tree.file_bytes(&group).unwrap(), DEFAULT_FILES[1].1);
        // Only what the user added counts.
        assert_eq!(b.summary().files, 1);
        // A directory at a default file's path is still a conflict: it is a file.
        let mut b = FileTreeBuilder::new(b"hello").unwrap();
        assert!(matches!(
            b.add_dir(b"/etc/group", 0o755),
            Err(TreeBuildError::Conflict { .. })
        ));
    }

    #[test]
    fn minimal_tree() {
        let blob = FileTreeBuilder::new(b"hello").unwrap().build().unwrap();
        assert_eq!(
            blob.len(),
            4 * 4096,
            "header, 14 inodes and names fit one page; /etc/group, /etc/hosts and /etc/passwd one each"
        );
        let tree = FileTree::parse(&blob).unwrap();
        assert_eq!(tree.inode_count(), 14);
        let names: Vec<&[u8]> = (0..14)
            .map(|i| tree.name(&tree.inode(i).unwrap()).unwrap())
            .collect();
        // Breadth-first, sorted.
        assert_eq!(
            names,
            [
                &b""[..],
                b"app",
                b"dev",
                b"etc",
                b"proc",
                b"sys",
                b"hello",
                b"group",
                b"hosts",
                b"passwd",
                b"self",
                b"devices",
                b"system",
                b"cpu"
            ]
        );
        for (path, data) in DEFAULT_FILES {
            let inode = tree.inode(resolve(&tree, path).unwrap()).unwrap();
            assert_eq!((inode.kind(), inode.mode), (Ok(InodeKind::File), 0o644));
            assert_eq!(tree.file_bytes(&inode).unwrap(), data);
        }
        let expect = |path: &[u8], kind: InodeKind, mode: u16| {
            let inode = tree.inode(resolve(&tree, path).unwrap()).unwrap();
            assert_eq!(inode.kind(), Ok(kind), "{path:?}");
            assert_eq!(inode.mode, mode, "{path:?}");
            inode
        };
        expect(b"/", InodeKind::Dir, 0o755);
        assert_eq!(expect(b"/dev", InodeKind::Dir, 0o755).child_count, 0);
        expect(b"/proc", InodeKind::Dir, 0o755);
        assert_eq!(expect(b"/proc/self", InodeKind::Dir, 0o555).child_count, 0);
        let cpu = expect(b"/sys/devices/system/cpu", InodeKind::Dir, 0o755);
        assert_eq!(cpu.child_count, 0);
        expect(b"/app", InodeKind::Dir, 0o755);
        let app = expect(b"/app/hello", InodeKind::App, 0o755);
        assert_eq!((app.data_off, app.size), (0, 0));
        assert_eq!(
            FileTreeBuilder::new(b"hello").unwrap().summary(),
            TreeSummary::default()
        );
    }

    /// The blob starts zeroed and only pieces of files with other bytes are copied into
    /// it: files of zeros, and zero pieces of other files, read back whole all the same.
    #[test]
    fn zero_pieces_of_files_read_back() {
        let mut mixed = vec![0u8; 3 * 4096 + 100];
        mixed[4096 + 7] = 1;
        mixed[3 * 4096 + 99] = 2;
        let files: [(&[u8], Vec<u8>); 4] = [
            (b"/a/zeros", vec![0; 2 * 4096 + 1]),
            (b"/a/mixed", mixed),
            (b"/a/short", b"xyz".to_vec()),
            (b"/a/ones", vec![0xFF; 4096]),
        ];
        let mut b = FileTreeBuilder::new(b"app").unwrap();
        for (path, data) in &files {
            b.add_file(path, data.clone(), 0o644).unwrap();
        }
        let blob = b.build().unwrap();
        let tree = FileTree::parse(&blob).unwrap();
        for (path, data) in &files {
            let inode = tree.inode(resolve(&tree, path).unwrap()).unwrap();
            assert!(
                tree.file_bytes(&inode).unwrap() == data.as_slice(),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn files_and_directories() {
        let mut b = FileTreeBuilder::new(b"app").unwrap();
        b.add_file(b"/etc/app/config.toml", b"x = 1\n".to_vec(), 0o100644)
            .unwrap();
        b.add_dir(b"/data", 0o40700).unwrap();
        b.add_file(b"/data/big", vec![7; 5000], 0o600).unwrap();
        b.add_file(b"/data/empty", Vec::new(), 0o444).unwrap();
        b.add_file(b"/app/helper.sh", b"#!".to_vec(), 0o755)
            .unwrap();
        b.add_dir(b"/", 0o700).unwrap();
        assert_eq!(
            b.summary(),
            TreeSummary {
                files: 4,
                directories: 2,
                file_bytes: 5008
            }
        );
        let blob = b.build().unwrap();
        let tree = FileTree::parse(&blob).unwrap();
        let file = |path: &[u8]| {
            let inode = tree.inode(resolve(&tree, path).unwrap()).unwrap();
            (inode.mode, tree.file_bytes(&inode).unwrap().to_vec())
        };
        assert_eq!(file(b"/etc/app/config.toml"), (0o644, b"x = 1\n".to_vec()));
        assert_eq!(file(b"/data/big"), (0o600, vec![7; 5000]));
        assert_eq!(file(b"/data/empty"), (0o444, Vec::new()));
        assert_eq!(file(b"/app/helper.sh"), (0o755, b"#!".to_vec()));
        let mode = |path: &[u8]| tree.inode(resolve(&tree, path).unwrap()).unwrap().mode;
        assert_eq!(mode(b"/data"), 0o700);
        assert_eq!(mode(b"/etc"), 0o755);
        assert_eq!(mode(b"/"), 0o755, "the root is nacre's");
        // Data is page-aligned and padded with zeros.
        assert_eq!(blob.len() % 4096, 0);
        let big = tree.inode(resolve(&tree, b"/data/big").unwrap()).unwrap();
        let (offset, len) = tree.file_data(&big).unwrap();
        assert_eq!(offset % 4096, 0);
        let end = (offset + len) as usize;
        assert!(blob[end..align_up(end as u64, 4096) as usize]
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut b = FileTreeBuilder::new(b"hello").unwrap();
        let file = |b: &mut FileTreeBuilder, path: &[u8]| b.add_file(path, vec![1], 0o644);
        assert!(matches!(
            file(&mut b, b"etc/x"),
            Err(TreeBuildError::NotAbsolute { .. })
        ));
        assert!(matches!(
            file(&mut b, b""),
            Err(TreeBuildError::NotAbsolute { .. })
        ));
        for bad in [
            &b"/a//b"[..],
            b"/a/",
            b"/a/./b",
            b"/a/../b",
            b"/..",
            b"/a\0b",
        ] {
            let err = file(&mut b, bad).unwrap_err();
            assert!(
                matches!(err, TreeBuildError::BadPath { .. }),
                "{bad:?}: {err}"
            );
        }
        let long = [&b"/"[..], &[b'x'; 256]].concat();
        assert!(matches!(
            file(&mut b, &long),
            Err(TreeBuildError::NameTooLong { .. })
        ));
        file(&mut b, &[&b"/"[..], &[b'x'; 255]].concat()).unwrap();
        // Paths the guest cannot open are refused, short, before their components
        // nest: 60,000 of them overflowed the stack of the builder's walks.
        let deep = b"/a".repeat(60_000);
        let err = file(&mut b, &deep).unwrap_err();
        assert!(
            matches!(err, TreeBuildError::PathTooLong { len: 120_000, .. }),
            "{err}"
        );
        assert!(err.to_string().len() < 200, "{err}");
        let longest = [b"/d".repeat(2046), b"/xy".to_vec()].concat();
        assert_eq!(longest.len(), PATH_MAX - 1);
        file(&mut b, &longest).unwrap();
        b.summary();
        let too_long = [longest.clone(), b"z".to_vec()].concat();
        assert!(matches!(
            file(&mut b, &too_long),
            Err(TreeBuildError::PathTooLong { .. })
        ));

        for reserved in [
            &b"/dev"[..],
            b"/dev/null",
            b"/proc/self/exe",
            b"/proc",
            b"/app/hello",
        ] {
            let err = file(&mut b, reserved).unwrap_err();
            assert!(
                matches!(err, TreeBuildError::Reserved { .. }),
                "{reserved:?}: {err}"
            );
            let err = b.add_dir(reserved, 0o755).unwrap_err();
            assert!(matches!(err, TreeBuildError::Reserved { .. }), "{err}");
        }
        let err = b.add_dir(b"/app/hello/x", 0o755).unwrap_err();
        assert!(matches!(err, TreeBuildError::Reserved { .. }), "{err}");
        let err = file(&mut b, b"/").unwrap_err();
        assert!(matches!(err, TreeBuildError::Conflict { .. }), "{err}");
        let err = file(&mut b, b"/app").unwrap_err();
        assert_eq!(
            err,
            TreeBuildError::Conflict {
                path: "/app".to_owned(),
                existing: "a directory"
            }
        );
        assert!(err.to_string().contains("already a directory"), "{err}");

        for name in [&b""[..], b".", b"..", b"a/b", b"a\0", &[b'x'; 256]] {
            assert!(matches!(
                FileTreeBuilder::new(name),
                Err(TreeBuildError::BadAppName { .. })
            ));
        }
        // The message says why, and shows the name short and escaped.
        let err = FileTreeBuilder::new(&[0xff; 256]).unwrap_err().to_string();
        assert!(err.contains("1 to 255 bytes"), "{err}");
        assert!(err.len() < 400, "{err}");
        let err = FileTreeBuilder::new(b"a\x1b[2J/b").unwrap_err().to_string();
        assert!(err.contains("\"a\\u{1b}[2J/b\""), "{err}");
        // A name that is not UTF-8 is kept as it is.
        let b = FileTreeBuilder::new(&[0xff; 100]).unwrap();
        let tree = b.build().unwrap();
        let needle = [0xffu8; 100];
        assert!(tree.windows(100).any(|w| w == needle));
    }

    #[test]
    fn conflicts_are_refused() {
        let mut b = FileTreeBuilder::new(b"hello").unwrap();
        b.add_file(b"/a/f", vec![1], 0o644).unwrap();
        let err = b.add_file(b"/a/f", vec![2], 0o644).unwrap_err();
        assert_eq!(
            err,
            TreeBuildError::Conflict {
                path: "/a/f".to_owned(),
                existing: "a file"
            }
        );
        let err = b.add_dir(b"/a/f", 0o755).unwrap_err();
        assert!(matches!(
            err,
            TreeBuildError::Conflict {
                existing: "a file",
                ..
            }
        ));
        let err = b.add_file(b"/a/f/g", vec![], 0o644).unwrap_err();
        assert_eq!(
            err,
            TreeBuildError::Conflict {
                path: "/a/f".to_owned(),
                existing: "a file"
            }
        );
        let err = b.add_file(b"/a", vec![], 0o644).unwrap_err();
        assert!(matches!(
            err,
            TreeBuildError::Conflict {
                existing: "a directory",
                ..
            }
        ));
        // A directory twice is fine; the last mode wins.
        b.add_dir(b"/a", 0o700).unwrap();
        b.add_dir(b"/a", 0o750).unwrap();
        let blob = b.build().unwrap();
        let tree = FileTree::parse(&blob).unwrap();
        assert_eq!(
            tree.inode(resolve(&tree, b"/a").unwrap()).unwrap().mode,
            0o750
        );
        assert_eq!(resolve(&tree, b"/a/f/"), Err(ResolveError::NotDir));
    }

    // ---- Round trips through the decoder ----

    #[derive(Debug, Clone)]
    enum Add {
        Dir(Vec<Vec<u8>>, u32),
        File(Vec<Vec<u8>>, Vec<u8>, u32),
    }

    fn component() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => proptest::collection::vec(prop::sample::select(&b"abc"[..]), 1..3),
            1 => proptest::collection::vec(prop::sample::select(&b"ab.:-\xc3\xa9 "[..]), 1..4)
                .prop_filter("plain", |n| n != b"." && n != b".."),
        ]
    }

    fn guest_path() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(component(), 1..4)
    }

    fn mode() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0o755u32), Just(0o644), any::<u32>()]
    }

    fn add() -> impl Strategy<Value = Add> {
        prop_oneof![
            1 => (guest_path(), mode()).prop_map(|(p, m)| Add::Dir(p, m)),
            3 => (guest_path(), proptest::collection::vec(any::<u8>(), 0..6000), mode())
                .prop_map(|(p, d, m)| Add::File(p, d, m)),
        ]
    }

    fn join_path(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.iter().flat_map(|p| [&b"/"[..], p].concat()).collect()
    }

    /// Apply `adds` to a fresh builder; return it and what was accepted, per path.
    fn apply(adds: &[Add]) -> (FileTreeBuilder, BTreeMap<Vec<u8>, Add>) {
        let mut b = FileTreeBuilder::new(b"prog").unwrap();
        let mut accepted = BTreeMap::new();
        for add in adds {
            let (path, result) = match add {
                Add::Dir(p, mode) => (join_path(p), b.add_dir(&join_path(p), *mode)),
                Add::File(p, data, mode) => {
                    (join_path(p), b.add_file(&join_path(p), data.clone(), *mode))
                }
            };
            if result.is_ok() {
                accepted.insert(path, add.clone());
            }
        }
        (b, accepted)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn built_trees_decode_to_what_was_added(adds in proptest::collection::vec(add(), 0..24)) {
            let (builder, accepted) = apply(&adds);
            let blob = builder.build().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let tree = FileTree::parse(&blob).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(blob.len() % 4096, 0);
            let mut files = 0;
            for (path, add) in &accepted {
                let index = resolve(&tree, path).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let inode = tree.inode(index).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                match add {
                    Add::File(_, data, mode) => {
                        files += 1;
                        prop_assert_eq!(inode.kind(), Ok(InodeKind::File));
                        prop_assert_eq!(u32::from(inode.mode), mode & 0o7777);
                        prop_assert_eq!(tree.file_bytes(&inode), Ok(&data[..]));
                    }
                    Add::Dir(..) => prop_assert_eq!(inode.kind(), Ok(InodeKind::Dir)),
                }
                let mut buf = [0u8; 64];
                let len = tree.path_of(index, &mut buf).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(&buf[..len], &path[..]);
            }
            prop_assert_eq!(builder.summary().files, files);
            // Every directory lists its children in strictly increasing order.
            for i in 0..tree.inode_count() {
                let names: Vec<&[u8]> = (0..)
                    .map_while(|n| tree.child(i, n).ok().flatten())
                    .map(|c| tree.inode(c).and_then(|c| tree.name(&c)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert!(names.windows(2).all(|w| w[0] < w[1]));
            }
            prop_assert!(resolve(&tree, b"/app/prog").is_ok());
        }

        #[test]
        fn build_is_deterministic_and_order_free(
            adds in proptest::collection::vec(add(), 0..16),
            seed in any::<u64>(),
        ) {
            let (a, accepted) = apply(&adds);
            let blob = a.build().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&blob, &a.build().map_err(|e| TestCaseError::fail(e.to_string()))?);
            // The accepted additions in another order give the same bytes.
            let mut shuffled: Vec<Add> = accepted.into_values().collect();
            let n = shuffled.len();
            if n > 1 {
                shuffled.rotate_left((seed % n as u64) as usize);
                if seed & (1 << 63) != 0 {
                    shuffled.reverse();
                }
            }
            let (b, again) = apply(&shuffled);
            prop_assert_eq!(again.len(), n);
            prop_assert_eq!(blob, b.build().map_err(|e| TestCaseError::fail(e.to_string()))?);
        }
    }
}
