//! Files: the app's descriptors and open files, the packaged read-only file tree
//! (shared-abi `filetree.rs`, measured with the image), and the device files and
//! `/proc/self` entries overlaid on its empty `/dev` and `/proc/self` directories.
//!
//! The tree's metadata is read through the direct map; file contents are read through
//! the files window, the image pages from the app ELF to the end of the tree mapped
//! read-only into the app at [`crate::mem::user::FILES_WINDOW_VA`], so that reads copy
//! in ring 3 (`arch/upcall.rs`) and read-only mappings of files need no copy at all.

pub mod mem;
pub mod overlay;

use crate::platform::GuestDevice;
use crate::syscall::errno::*;
use crate::syscall::eventfd::EventFd;
use crate::syscall::pipe::PipeEnd;
use crate::syscall::timerfd::Timer;
use nacre_shared_abi::filetree::{FileTree, Inode, InodeKind, ROOT_INODE};
use nacre_shared_abi::layout::PAGE_SIZE_4K;

/// Most descriptors (RLIMIT_NOFILE).
pub const MAX_FDS: usize = 1024;
/// Most open files (descriptions) at once.
pub const MAX_OPEN: usize = 256;
/// `openat`'s "relative to the working directory" (`include/uapi/linux/fcntl.h`).
pub const AT_FDCWD: i64 = -100;
/// Descriptor-table flag: close on exec (kept for F_GETFD; nothing is ever exec'd).
const FD_CLOEXEC_BIT: u16 = 0x8000;

/// `open` flags (`include/uapi/asm-generic/fcntl.h`).
pub const O_ACCMODE: u32 = 0o3;
pub const O_WRONLY: u32 = 0o1;
pub const O_RDWR: u32 = 0o2;
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_NOFOLLOW: u32 = 0o400000;
pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_PATH: u32 = 0o10000000;
pub const O_TMPFILE: u32 = 0o20000000;

/// A name overlaid on the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `/dev/null`.
    Null,
    /// `/dev/zero`.
    Zero,
    /// `/dev/urandom` and `/dev/random`: RDRAND.
    Urandom,
    /// `/proc/self/exe`: a symbolic link to the app.
    Exe,
    /// `/proc/self/maps`: the app's areas, generated when read.
    Maps,
    /// `/dev/stdin`, `/dev/stdout`, `/dev/stderr`: the console fds 0, 1, 2.
    Console(u8),
    /// The platform's attestation device (`/dev/sev-guest` or `/dev/tdx_guest`):
    /// evidence through the Linux ioctl.
    Guest(GuestDevice),
    /// A text generated when read: `/proc/cpuinfo`, `/sys/devices/system/cpu/online`...
    Text(SysText),
}

/// The generated texts about the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysText {
    /// `/proc/cpuinfo`: a block per vCPU.
    CpuInfo,
    /// `/sys/devices/system/cpu/{online,possible,present}`: the vCPUs as a range list.
    CpuList,
}

/// An overlaid name and what it is.
pub type SpecialEntry = (&'static [u8], Special);

/// The overlaid names of `/dev` every platform has, in listing order (bytewise by
/// name); the platform's attestation device joins them in order.
const DEV_ENTRIES: [SpecialEntry; 7] = [
    (b"null", Special::Null),
    (b"random", Special::Urandom),
    (b"stderr", Special::Console(2)),
    (b"stdin", Special::Console(0)),
    (b"stdout", Special::Console(1)),
    (b"urandom", Special::Urandom),
    (b"zero", Special::Zero),
];
/// The overlaid names of `/proc/self`.
const PROC_SELF_ENTRIES: [SpecialEntry; 2] = [(b"exe", Special::Exe), (b"maps", Special::Maps)];
/// The overlaid names of `/proc` (after its `self` directory).
const PROC_ENTRIES: [SpecialEntry; 1] = [(b"cpuinfo", Special::Text(SysText::CpuInfo))];
/// The overlaid names of `/sys/devices/system/cpu`.
const CPU_ENTRIES: [SpecialEntry; 3] = [
    (b"online", Special::Text(SysText::CpuList)),
    (b"possible", Special::Text(SysText::CpuList)),
    (b"present", Special::Text(SysText::CpuList)),
];

/// `/dev`'s overlaid names with `device` added in listing order.
fn dev_entries(device: GuestDevice) -> [SpecialEntry; DEV_ENTRIES.len() + 1] {
    let name = device.name();
    let mut out = [(&b""[..], Special::Null); DEV_ENTRIES.len() + 1];
    let at = DEV_ENTRIES.partition_point(|(n, _)| *n < name);
    out[..at].copy_from_slice(&DEV_ENTRIES[..at]);
    out[at] = (name, Special::Guest(device));
    out[at + 1..].copy_from_slice(&DEV_ENTRIES[at..]);
    out
}

/// What an open file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The host's stdin, stdout or stderr (0..=2).
    Console(u8),
    /// A regular file of the tree or the app itself: `va` is its first byte in the
    /// files window, `gpa` in guest memory.
    File {
        inode: u32,
        va: u64,
        gpa: u64,
        size: u64,
    },
    /// A directory (a unified id: packaged or writable, `fs/overlay.rs`).
    Dir { inode: u32 },
    /// A writable regular file (`fs/mem.rs`).
    MemFile { id: u32 },
    /// A device file.
    Dev(Special),
    /// A timerfd and its timer (`syscall/timerfd.rs`).
    Timer(Timer),
    /// One end of a pipe (`syscall/pipe.rs`).
    Pipe(PipeEnd),
    /// An eventfd and its counter (`syscall/eventfd.rs`).
    Event(EventFd),
    /// An epoll instance (`syscall/epoll.rs`): its interest list is kept under the
    /// open file's index.
    Epoll,
    /// A socket (`syscall/socket.rs`), by the host's handle.
    Socket(u16),
}

/// An open file (what `dup` shares: offset and status flags).
#[derive(Debug, Clone, Copy)]
pub struct OpenFile {
    pub node: Node,
    pub offset: u64,
    /// The `open` flags that stay: access mode, O_APPEND, O_NONBLOCK, O_PATH.
    pub flags: u32,
    refs: u32,
}

const FREE: OpenFile = OpenFile {
    node: Node::Console(0),
    offset: 0,
    flags: 0,
    refs: 0,
};

/// An open file whose last reference went away (a close, a dup2 over its
/// descriptor, the end of a blocking call that held it): what the syscall layer
/// lets go of (`syscall::fs::let_go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Its index among the open files (free for reuse from now on).
    pub index: usize,
    pub node: Node,
}

/// A directory entry: name, inode index, whether it is a directory.
pub type DirEntry = (&'static [u8], u32, bool);

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Inode(u32),
    Special(Special),
}

/// What `stat` reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
    pub rdev: u64,
    /// Modification (also access and change) time: seconds and nanoseconds since the
    /// epoch; packaged files keep the time they were packaged with, the rest show 0.
    pub mtime: (i64, u32),
    /// Access and change times where they differ from `mtime` (writable inodes).
    pub times: Option<((i64, u32), (i64, u32))>,
    /// Owner and group.
    pub owner: (u32, u32),
    /// 512-byte blocks where not the size rounded up.
    pub blocks: Option<u64>,
}

/// File type bits (`include/uapi/linux/stat.h`).
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
/// Device numbers shown for the tree, the devices and /proc (arbitrary but stable).
pub const TREE_DEV: u64 = 0x2A;
const PROC_DEV: u64 = 0x14;
const DEVTMPFS_DEV: u64 = 0x05;
/// The device and inode of the anonymous inode every timerfd, eventfd and epoll
/// instance shares (Linux `fs/anon_inodes.c`).
const ANON_INODE_DEV: u64 = 0x0F;
const ANON_INODE_INO: u64 = 1;
/// The device of the pipe file system; a pipe's inode number is its index plus
/// [`PIPE_INO_BASE`] (both ends show the same inode, as on Linux).
const PIPEFS_DEV: u64 = 0x0E;
const PIPE_INO_BASE: u64 = 0x100;
/// The device of the socket file system; a socket's inode number is its handle plus
/// [`SOCK_INO_BASE`].
const SOCKFS_DEV: u64 = 0x08;
const SOCK_INO_BASE: u64 = 0x1000;

/// Linux `makedev` for the memory devices (`Documentation/admin-guide/devices.txt`:
/// major 1, null 3, zero 5, urandom 9).
fn mem_dev(minor: u64) -> u64 {
    (1 << 8) | minor
}

/// Files state.
#[derive(Debug)]
pub struct Files {
    /// Per descriptor: 0 when free, else the open file's index + 1, with
    /// [`FD_CLOEXEC_BIT`].
    fds: [u16; MAX_FDS],
    open: [OpenFile; MAX_OPEN],
    tree: Option<FileTree<'static>>,
    /// GPA of the first byte the files window shows (the app ELF) and the window's VA.
    window_gpa: u64,
    window_va: u64,
    /// GPA of the tree blob.
    tree_gpa: u64,
    /// The app ELF: GPA and size.
    app_gpa: u64,
    app_size: u64,
    /// First GPA after the image.
    image_end: u64,
    /// `/dev`'s overlaid names, the platform's attestation device among them.
    dev: [SpecialEntry; DEV_ENTRIES.len() + 1],
    /// Inodes of `/dev`, `/proc/self` and the app (`/app/NAME`).
    dev_dir: u32,
    proc_dir: u32,
    proc_self_dir: u32,
    cpu_dir: u32,
    app_inode: u32,
    /// The working directory.
    pub cwd: u32,
    /// The writable inodes (set up at boot) and the writable root.
    mem: Option<&'static mut mem::MemFs>,
    root: u32,
    /// The file-creation mask (only reported: nothing can be created).
    pub umask: u32,
}

impl Default for Files {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the image and the tree are, for [`Files::init`].
#[derive(Debug, Clone, Copy)]
pub struct ImageFiles {
    pub tree: FileTree<'static>,
    pub tree_gpa: u64,
    pub app_gpa: u64,
    pub app_size: u64,
    pub image_end: u64,
    pub window_va: u64,
    /// `argv[0]`, the app's name under `/app`.
    pub app_name: &'static [u8],
    /// The platform's attestation device, listed in `/dev`.
    pub guest_device: GuestDevice,
}

impl Files {
    /// Nothing open, no tree.
    pub const fn new() -> Self {
        Self {
            fds: [0; MAX_FDS],
            open: [FREE; MAX_OPEN],
            tree: None,
            window_gpa: 0,
            window_va: 0,
            tree_gpa: 0,
            app_gpa: 0,
            app_size: 0,
            image_end: 0,
            dev: [(&[], Special::Null); DEV_ENTRIES.len() + 1],
            dev_dir: u32::MAX,
            proc_dir: u32::MAX,
            proc_self_dir: u32::MAX,
            cpu_dir: u32::MAX,
            app_inode: u32::MAX,
            cwd: ROOT_INODE,
            umask: 0o022,
            mem: None,
            root: ROOT_INODE,
        }
    }

    /// Set up the tree and descriptors 0, 1 and 2 (the console).
    pub fn init(&mut self, img: ImageFiles) {
        let t = img.tree;
        let find = |dir: u32, name: &[u8]| t.lookup(dir, name).ok().flatten();
        self.dev_dir = find(ROOT_INODE, b"dev").unwrap_or(u32::MAX);
        self.proc_dir = find(ROOT_INODE, b"proc").unwrap_or(u32::MAX);
        self.proc_self_dir = find(self.proc_dir, b"self").unwrap_or(u32::MAX);
        self.cpu_dir = [&b"devices"[..], b"system", b"cpu"]
            .iter()
            .fold(find(ROOT_INODE, b"sys"), |dir, name| {
                dir.and_then(|d| find(d, name))
            })
            .unwrap_or(u32::MAX);
        self.app_inode = find(ROOT_INODE, b"app")
            .and_then(|a| find(a, img.app_name))
            .unwrap_or(u32::MAX);
        self.dev = dev_entries(img.guest_device);
        self.tree = Some(t);
        self.tree_gpa = img.tree_gpa;
        self.window_gpa = img.app_gpa;
        self.window_va = img.window_va;
        self.app_gpa = img.app_gpa;
        self.app_size = img.app_size;
        self.image_end = img.image_end;
        for fd in 0..3u8 {
            self.open[usize::from(fd)] = OpenFile {
                node: Node::Console(fd),
                offset: 0,
                flags: O_RDWR,
                refs: 1,
            };
            self.fds[usize::from(fd)] = u16::from(fd) + 1;
        }
    }

    /// First GPA after the image: frames below it are image pages, never freed.
    pub fn image_end(&self) -> u64 {
        self.image_end
    }

    /// The tree (EIO if the image has none, which the loader never produces).
    pub fn tree(&self) -> Result<FileTree<'static>, u64> {
        self.tree.ok_or(EIO)
    }

    /// The overlaid name `name` in directory `dir`, if any.
    fn special(&self, dir: u32, name: &[u8]) -> Option<Special> {
        self.extra_entries(dir)
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, s)| s)
    }

    /// The overlaid entries a directory lists after its own children: `/dev`'s
    /// devices (with the platform's attestation device) and `/proc/self`'s entries.
    fn extra_entries(&self, dir: u32) -> &[SpecialEntry] {
        let Some(dir) = self.lower_of(dir) else {
            return &[];
        };
        if dir == self.dev_dir {
            &self.dev
        } else if dir == self.proc_self_dir {
            &PROC_SELF_ENTRIES
        } else if dir == self.proc_dir {
            &PROC_ENTRIES
        } else if dir == self.cpu_dir {
            &CPU_ENTRIES
        } else {
            &[]
        }
    }

    /// How many overlaid entries directory `dir` lists after its own children.
    pub fn extra_count(&self, dir: u32) -> usize {
        self.extra_entries(dir).len()
    }

    /// The `i`-th overlaid entry of directory `dir`.
    pub fn extra_entry(&self, dir: u32, i: usize) -> Option<SpecialEntry> {
        self.extra_entries(dir).get(i).copied()
    }

    /// Resolve `path` from directory `start`, following links (tests; the syscalls
    /// walk with the kernel's scratch buffer, [`Files::walk`]).
    #[cfg(test)]
    pub fn resolve(&self, start: u32, path: &[u8]) -> Result<Target, u64> {
        let mut work = std::boxed::Box::new([0u8; crate::kernel::PATH_MAX]);
        self.walk(start, path, &mut work, true)?
            .target
            .ok_or(ENOENT)
    }

    /// `/proc/self/exe` followed: the app's inode.
    pub fn app_target(&self) -> Result<Target, u64> {
        if self.app_inode == u32::MAX {
            return Err(ENOENT);
        }
        Ok(Target::Inode(self.app_inode))
    }

    /// The absolute path of the app (`/proc/self/exe`'s link), into `out`.
    pub fn app_path(&self, out: &mut [u8]) -> Result<usize, u64> {
        if self.app_inode == u32::MAX {
            return Err(ENOENT);
        }
        self.tree()?
            .path_of(self.app_inode, out)
            .map_err(|e| e.errno())
    }

    /// The directory a `*at` call starts from.
    pub fn start_dir(&self, dirfd: i64, path_absolute: bool) -> Result<u32, u64> {
        if path_absolute || dirfd == AT_FDCWD {
            return Ok(self.cwd);
        }
        let fd = u64::try_from(dirfd).map_err(|_| EBADF)?;
        match self.get(fd)?.node {
            Node::Dir { inode } => Ok(self.current(inode)),
            _ => Err(ENOTDIR),
        }
    }

    fn inode(&self, i: u32) -> Result<Inode, u64> {
        self.tree()?.inode(i).map_err(|_| EIO)
    }

    /// Whether inode `i` is a directory.
    pub fn is_dir(&self, i: u32) -> Result<bool, u64> {
        Ok(self.kind_of(i)? == mem::Kind::Dir)
    }

    /// The node an open of `target` gives.
    pub fn node_of(&self, target: Target) -> Result<Node, u64> {
        match target {
            Target::Special(Special::Exe) => self.node_of(self.app_target()?),
            Target::Special(Special::Console(fd)) => Ok(Node::Console(fd)),
            Target::Special(s) => Ok(Node::Dev(s)),
            Target::Inode(i) if mem::is_mem(i) => match self.mem().get(i).kind {
                mem::Kind::Dir => Ok(Node::Dir { inode: i }),
                mem::Kind::File => Ok(Node::MemFile { id: i }),
                _ => Err(ELOOP),
            },
            Target::Inode(i) => {
                let ino = self.inode(i)?;
                match ino.kind().map_err(|_| EIO)? {
                    InodeKind::Dir => Ok(Node::Dir { inode: i }),
                    InodeKind::App => Ok(Node::File {
                        inode: i,
                        va: self.window_va + (self.app_gpa - self.window_gpa),
                        gpa: self.app_gpa,
                        size: self.app_size,
                    }),
                    InodeKind::File => {
                        let (off, size) = self.tree()?.file_data(&ino).map_err(|_| EIO)?;
                        let gpa = self.tree_gpa + off;
                        Ok(Node::File {
                            inode: i,
                            va: self.window_va + (gpa - self.window_gpa),
                            gpa,
                            size,
                        })
                    }
                }
            }
        }
    }

    /// What `stat` says of `target` (`follow`: `/proc/self/exe` as the app, else as
    /// the link).
    pub fn stat(&self, target: Target, follow: bool) -> Result<Stat, u64> {
        let special_ino = |n: u64| 0x1000_0000 + n;
        Ok(match target {
            Target::Special(Special::Exe) if follow => self.stat(self.app_target()?, true)?,
            Target::Special(Special::Exe) => {
                let mut path = [0u8; 256];
                let len = self.app_path(&mut path).unwrap_or(0);
                Stat {
                    dev: PROC_DEV,
                    ino: special_ino(1),
                    mode: S_IFLNK | 0o777,
                    nlink: 1,
                    size: len as u64,
                    rdev: 0,
                    mtime: (0, 0),
                    ..Default::default()
                }
            }
            Target::Special(Special::Console(fd)) => self.stat_node(Node::Console(fd))?,
            Target::Special(Special::Text(t)) => Stat {
                dev: PROC_DEV,
                ino: special_ino(match t {
                    SysText::CpuInfo => 3,
                    SysText::CpuList => 4,
                }),
                mode: S_IFREG | 0o444,
                nlink: 1,
                size: 0,
                rdev: 0,
                mtime: (0, 0),
                ..Default::default()
            },
            Target::Special(Special::Maps) => Stat {
                dev: PROC_DEV,
                ino: special_ino(2),
                mode: S_IFREG | 0o444,
                nlink: 1,
                size: 0,
                rdev: 0,
                mtime: (0, 0),
                ..Default::default()
            },
            Target::Special(s) => {
                let (n, minor) = match s {
                    Special::Null => (3, 3),
                    Special::Zero => (4, 5),
                    // A misc device on Linux; shown as major 1 here too.
                    Special::Guest(d) => (d.inode_index(), d.minor()),
                    _ => (5, 9),
                };
                Stat {
                    dev: DEVTMPFS_DEV,
                    ino: special_ino(n),
                    mode: S_IFCHR | 0o666,
                    nlink: 1,
                    size: 0,
                    rdev: mem_dev(minor),
                    mtime: (0, 0),
                    ..Default::default()
                }
            }
            Target::Inode(i) if mem::is_mem(i) => self.stat_mem(i),
            Target::Inode(i) => {
                let ino = self.inode(i)?;
                let (mode, size, nlink) = match ino.kind().map_err(|_| EIO)? {
                    // "." and the entry in the parent, and each subdirectory's "..".
                    InodeKind::Dir => (S_IFDIR, 0, 2 + u64::from(ino.subdirs)),
                    InodeKind::File => (S_IFREG, ino.size, 1),
                    InodeKind::App => (S_IFREG, self.app_size, 1),
                };
                Stat {
                    dev: TREE_DEV,
                    ino: u64::from(i) + 2,
                    mode: mode | u32::from(ino.mode),
                    nlink,
                    size,
                    rdev: 0,
                    mtime: (ino.mtime_sec, ino.mtime_nsec),
                    ..Default::default()
                }
            }
        })
    }

    /// What `fstat` says of an open file.
    pub fn stat_node(&self, node: Node) -> Result<Stat, u64> {
        match node {
            Node::Console(fd) => Ok(Stat {
                dev: 0x0D,
                ino: 3 + u64::from(fd),
                mode: S_IFIFO | 0o600,
                nlink: 1,
                size: 0,
                rdev: 0,
                mtime: (0, 0),
                ..Default::default()
            }),
            Node::File { inode, .. } | Node::Dir { inode } => self.stat(Target::Inode(inode), true),
            Node::MemFile { id } => Ok(self.stat_mem(id)),
            Node::Dev(s) => self.stat(Target::Special(s), true),
            // A FIFO owned by the app, read and write for the owner
            // (`get_pipe_inode`, Linux `fs/pipe.c`).
            Node::Pipe(end) => Ok(Stat {
                dev: PIPEFS_DEV,
                ino: PIPE_INO_BASE + u64::from(end.id),
                mode: S_IFIFO | 0o600,
                nlink: 1,
                size: 0,
                rdev: 0,
                mtime: (0, 0),
                ..Default::default()
            }),
            // A socket inode (`sock_alloc_inode`, Linux `net/socket.c`): mode
            // S_IFSOCK | 0777, on the socket file system.
            Node::Socket(h) => Ok(Stat {
                dev: SOCKFS_DEV,
                ino: SOCK_INO_BASE + u64::from(h),
                mode: crate::syscall::socket::S_IFSOCK | 0o777,
                nlink: 1,
                size: 0,
                rdev: 0,
                mtime: (0, 0),
                ..Default::default()
            }),
            // An anonymous inode has no file type, only owner read and write
            // (`alloc_anon_inode`, Linux `fs/libfs.c`).
            Node::Timer(_) | Node::Event(_) | Node::Epoll => Ok(Stat {
                dev: ANON_INODE_DEV,
                ino: ANON_INODE_INO,
                mode: 0o600,
                nlink: 1,
                size: 0,
                rdev: 0,
                mtime: (0, 0),
                ..Default::default()
            }),
        }
    }

    /// The open file behind descriptor `fd`.
    pub fn get(&self, fd: u64) -> Result<&OpenFile, u64> {
        let i = self.index(fd)?;
        Ok(&self.open[i])
    }

    /// The open file behind descriptor `fd`, to change its offset or flags.
    pub fn get_mut(&mut self, fd: u64) -> Result<&mut OpenFile, u64> {
        let i = self.index(fd)?;
        Ok(&mut self.open[i])
    }

    /// The open file at `index` (from [`Files::index`] or [`Files::hold`]).
    pub fn file(&self, index: usize) -> &OpenFile {
        &self.open[index]
    }

    /// The open file at `index`, to change it.
    pub fn file_mut(&mut self, index: usize) -> &mut OpenFile {
        &mut self.open[index]
    }

    /// The index of the open file behind descriptor `fd`.
    pub fn index(&self, fd: u64) -> Result<usize, u64> {
        let slot = *self
            .fds
            .get(usize::try_from(fd).map_err(|_| EBADF)?)
            .ok_or(EBADF)?;
        if slot == 0 {
            return Err(EBADF);
        }
        Ok(usize::from(slot & !FD_CLOEXEC_BIT) - 1)
    }

    /// Open `node` with `flags` on the lowest free descriptor.
    pub fn open(&mut self, node: Node, flags: u32) -> Result<u64, u64> {
        let i = self.open.iter().position(|f| f.refs == 0).ok_or(EMFILE)?;
        let fd = self.lowest_free(0).ok_or(EMFILE)?;
        if let Node::MemFile { id } | Node::Dir { inode: id } = node {
            if mem::is_mem(id) {
                self.mem_mut().get_mut(id).opens += 1;
            }
        }
        self.open[i] = OpenFile {
            node,
            offset: 0,
            flags: flags & (O_ACCMODE | O_APPEND | O_NONBLOCK | O_PATH),
            refs: 1,
        };
        self.fds[fd] = (i as u16 + 1)
            | if flags & O_CLOEXEC != 0 {
                FD_CLOEXEC_BIT
            } else {
                0
            };
        Ok(fd as u64)
    }

    fn lowest_free(&self, from: usize) -> Option<usize> {
        (from..MAX_FDS).find(|&fd| self.fds[fd] == 0)
    }

    /// close(2): the open file, if that was its last reference.
    pub fn close(&mut self, fd: u64) -> Result<Option<Released>, u64> {
        let i = self.index(fd)?;
        self.fds[fd as usize] = 0;
        Ok(self.unref(i))
    }

    fn unref(&mut self, i: usize) -> Option<Released> {
        let f = &mut self.open[i];
        f.refs -= 1;
        (f.refs == 0).then_some(Released {
            index: i,
            node: f.node,
        })
    }

    /// Keep the open file behind `fd` while a call blocks on it, even if another
    /// thread closes the descriptor meanwhile (Linux `fdget`); returns its index for
    /// [`Files::file`] and [`Files::unhold`].
    pub fn hold(&mut self, fd: u64) -> Result<usize, u64> {
        let i = self.index(fd)?;
        self.open[i].refs += 1;
        Ok(i)
    }

    /// Let go of an open file [`Files::hold`] kept: the open file, if that was its
    /// last reference.
    pub fn unhold(&mut self, index: usize) -> Option<Released> {
        self.unref(index)
    }

    /// dup(2) and F_DUPFD: the lowest free descriptor from `min`.
    pub fn dup_from(&mut self, fd: u64, min: u64, cloexec: bool) -> Result<u64, u64> {
        let i = self.index(fd)?;
        let min = usize::try_from(min).map_err(|_| EINVAL)?;
        if min >= MAX_FDS {
            return Err(EINVAL);
        }
        let new = self.lowest_free(min).ok_or(EMFILE)?;
        self.open[i].refs += 1;
        self.fds[new] = (i as u16 + 1) | if cloexec { FD_CLOEXEC_BIT } else { 0 };
        Ok(new as u64)
    }

    /// dup2/dup3: make `new` refer to `fd`'s open file, closing what `new` was;
    /// that open file too, if `new` held its last reference.
    pub fn dup_to(
        &mut self,
        fd: u64,
        new: u64,
        cloexec: bool,
    ) -> Result<(u64, Option<Released>), u64> {
        let i = self.index(fd)?;
        let n = usize::try_from(new).map_err(|_| EBADF)?;
        if n >= MAX_FDS {
            return Err(EBADF);
        }
        // `fd` keeps `i` referenced, so closing `new` cannot release it.
        let released = if self.fds[n] != 0 {
            self.close(new)?
        } else {
            None
        };
        self.open[i].refs += 1;
        self.fds[n] = (i as u16 + 1) | if cloexec { FD_CLOEXEC_BIT } else { 0 };
        Ok((new, released))
    }

    /// F_GETFD.
    pub fn cloexec(&self, fd: u64) -> Result<bool, u64> {
        self.index(fd)?;
        Ok(self.fds[fd as usize] & FD_CLOEXEC_BIT != 0)
    }

    /// F_SETFD.
    pub fn set_cloexec(&mut self, fd: u64, on: bool) -> Result<(), u64> {
        self.index(fd)?;
        let slot = &mut self.fds[fd as usize];
        *slot = (*slot & !FD_CLOEXEC_BIT) | if on { FD_CLOEXEC_BIT } else { 0 };
        Ok(())
    }

    /// What an mmap of descriptor `fd` at `offset` shows: `Some((gpa, bytes))` of a
    /// file from `offset` on, `None` for `/dev/zero` (anonymous memory).
    pub fn mmap_source(&self, fd: i32, offset: u64) -> Result<Option<(u64, u64)>, u64> {
        let f = self.get(u64::try_from(fd).map_err(|_| EBADF)?)?;
        if f.flags & O_PATH != 0 {
            return Err(EBADF);
        }
        match f.node {
            Node::File { gpa, size, .. } => {
                if !gpa.is_multiple_of(PAGE_SIZE_4K) {
                    return Err(ENODEV);
                }
                Ok(Some((gpa + offset, size.saturating_sub(offset))))
            }
            Node::Dev(Special::Zero) => Ok(None),
            _ => Err(ENODEV),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::filetree::{
        FileTreeHeader, Inode as RawInode, FILE_TREE_MAGIC, FILE_TREE_VERSION, INODE_KIND_APP,
        INODE_KIND_DIR, INODE_KIND_FILE,
    };
    use std::boxed::Box;
    use std::vec::Vec;
    use zerocopy::IntoBytes;

    /// Where the test image puts things.
    const APP_GPA: u64 = 0x100_0000;
    const APP_SIZE: u64 = 0x5000;
    const TREE_GPA: u64 = 0x100_6000;
    const WINDOW_VA: u64 = 0x7F80_0040_0000;
    const MOTD: &[u8] = b"hello, tree\n";

    /// `/app/hello` (the app), `/dev/`, `/etc/motd`, `/proc/self/`, encoded
    /// breadth-first as the format requires.
    /// `/etc/motd`'s modification time.
    const MOTD_MTIME: (i64, u32) = (1_700_000_000, 123_456_789);

    fn tree_blob() -> &'static [u8] {
        // (kind, parent, name, first_child, child_count)
        let nodes: [(u8, u32, &[u8], u32, u32); 8] = [
            (INODE_KIND_DIR, 0, b"", 1, 4),
            (INODE_KIND_DIR, 0, b"app", 5, 1),
            (INODE_KIND_DIR, 0, b"dev", 0, 0),
            (INODE_KIND_DIR, 0, b"etc", 6, 1),
            (INODE_KIND_DIR, 0, b"proc", 7, 1),
            (INODE_KIND_APP, 1, b"hello", 0, 0),
            (INODE_KIND_FILE, 3, b"motd", 0, 0),
            (INODE_KIND_DIR, 4, b"self", 0, 0),
        ];
        let mut names = Vec::new();
        let mut inodes = Vec::new();
        for (index, (kind, parent, name, first_child, child_count)) in nodes.iter().enumerate() {
            let (kind, parent, name, first_child, child_count) =
                (*kind, *parent, *name, *first_child, *child_count);
            let file = kind == INODE_KIND_FILE;
            let subdirs = nodes
                .iter()
                .enumerate()
                .filter(|&(i, n)| i != 0 && n.1 as usize == index && n.0 == INODE_KIND_DIR)
                .count() as u32;
            inodes.push(RawInode {
                kind,
                flags: 0,
                mode: if kind == INODE_KIND_DIR { 0o755 } else { 0o644 },
                parent,
                name_off: names.len() as u32,
                name_len: name.len() as u32,
                first_child,
                child_count,
                data_off: 0,
                size: if file { MOTD.len() as u64 } else { 0 },
                mtime_sec: if file { MOTD_MTIME.0 } else { 0 },
                mtime_nsec: if file { MOTD_MTIME.1 } else { 0 },
                subdirs,
            });
            names.extend_from_slice(name);
        }
        let names_offset = 64 + 56 * inodes.len() as u64;
        let header = FileTreeHeader {
            magic: FILE_TREE_MAGIC,
            version: FILE_TREE_VERSION,
            inode_count: inodes.len() as u32,
            inodes_offset: 64,
            names_offset,
            names_len: names.len() as u64,
            data_offset: 4096,
            data_len: 4096,
            reserved: 0,
        };
        let mut blob = header.as_bytes().to_vec();
        for i in &inodes {
            blob.extend_from_slice(i.as_bytes());
        }
        blob.extend_from_slice(&names);
        blob.resize(4096, 0);
        blob.extend_from_slice(MOTD);
        blob.resize(8192, 0);
        Box::leak(blob.into_boxed_slice())
    }

    fn files(device: GuestDevice) -> Box<Files> {
        let (f, _) = files_with_backing(device);
        f
    }

    /// Files over the test tree with writable inodes, and their frames (fake RAM
    /// that lives as long as the test's thread).
    fn files_with_backing(device: GuestDevice) -> (Box<Files>, mem::tests::TestBacking) {
        let ram: &'static crate::testing::FakeRam =
            Box::leak(Box::new(crate::testing::FakeRam::new(16 << 20)));
        let mut b = mem::tests::TestBacking::new(ram, 1 << 20);
        let mut f = Box::new(Files::new());
        f.init(ImageFiles {
            tree: FileTree::parse(tree_blob()).expect("a valid tree"),
            tree_gpa: TREE_GPA,
            app_gpa: APP_GPA,
            app_size: APP_SIZE,
            image_end: TREE_GPA + 8192,
            window_va: WINDOW_VA,
            app_name: b"hello",
            guest_device: device,
        });
        let m = Box::leak(Box::new(mem::MemFs::new()));
        f.init_writable(m, &mut b).expect("a writable root");
        (f, b)
    }

    fn resolve(f: &Files, path: &[u8]) -> Result<Target, u64> {
        f.resolve(f.cwd, path)
    }

    #[test]
    fn the_console_is_open_on_0_1_2_and_new_files_take_the_lowest_free_fd() {
        let mut f = files(GuestDevice::SevGuest);
        for fd in 0..3 {
            assert_eq!(f.get(fd).map(|o| o.node), Ok(Node::Console(fd as u8)));
        }
        assert_eq!(f.get(3).map(|o| o.node), Err(EBADF));
        let node = f
            .node_of(resolve(&f, b"/etc/motd").expect("found"))
            .expect("a file");
        assert_eq!(f.open(node, O_CLOEXEC), Ok(3));
        assert_eq!(f.cloexec(3), Ok(true));
        assert_eq!(
            f.close(1),
            Ok(Some(Released {
                index: 1,
                node: Node::Console(1)
            }))
        );
        assert_eq!(f.open(node, 0), Ok(1));
        assert_eq!(f.close(7), Err(EBADF));
    }

    #[test]
    fn a_packaged_file_is_shown_through_the_files_window() {
        let f = files(GuestDevice::SevGuest);
        let target = resolve(&f, b"/etc/motd").expect("found");
        let gpa = TREE_GPA + 4096;
        assert_eq!(
            f.node_of(target),
            Ok(Node::File {
                inode: 6,
                va: WINDOW_VA + (gpa - APP_GPA),
                gpa,
                size: MOTD.len() as u64,
            })
        );
        let st = f.stat(target, true).expect("stat");
        assert_eq!(
            (st.mode, st.size, st.dev),
            (S_IFREG | 0o644, MOTD.len() as u64, TREE_DEV)
        );
        assert_eq!(resolve(&f, b"/etc/nothing"), Err(ENOENT));
        assert_eq!(resolve(&f, b"/etc/motd/x"), Err(ENOTDIR));
    }

    #[test]
    fn dev_lists_the_platforms_attestation_device_in_order() {
        for (device, at) in [(GuestDevice::SevGuest, 2), (GuestDevice::TdxGuest, 5)] {
            let f = files(device);
            let dev = match resolve(&f, b"/dev") {
                Ok(Target::Inode(i)) => i,
                other => panic!("/dev is {other:?}"),
            };
            assert_eq!(f.extra_count(dev), 8);
            let names: Vec<&[u8]> = (0..8)
                .map(|i| f.extra_entry(dev, i).expect("an entry").0)
                .collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted");
            assert_eq!(
                f.extra_entry(dev, at),
                Some((device.name(), Special::Guest(device)))
            );
            assert_eq!(f.extra_entry(dev, 8), None);
        }
    }

    #[test]
    fn each_attestation_device_exists_only_on_its_platform() {
        let snp = files(GuestDevice::SevGuest);
        assert_eq!(
            resolve(&snp, b"/dev/sev-guest"),
            Ok(Target::Special(Special::Guest(GuestDevice::SevGuest)))
        );
        assert_eq!(resolve(&snp, b"/dev/tdx_guest"), Err(ENOENT));
        let tdx = files(GuestDevice::TdxGuest);
        assert_eq!(resolve(&tdx, b"/dev/sev-guest"), Err(ENOENT));
        let st = tdx
            .stat(Target::Special(Special::Guest(GuestDevice::TdxGuest)), true)
            .expect("stat");
        assert_eq!(
            (st.mode & 0o170000, st.rdev),
            (S_IFCHR, mem_dev(GuestDevice::TdxGuest.minor()))
        );
    }

    #[test]
    fn proc_self_exe_leads_to_the_app() {
        let f = files(GuestDevice::SevGuest);
        let exe = resolve(&f, b"/proc/self/exe").expect("found");
        assert_eq!(exe, Target::Special(Special::Exe));
        assert_eq!(
            f.node_of(exe),
            Ok(Node::File {
                inode: 5,
                va: WINDOW_VA,
                gpa: APP_GPA,
                size: APP_SIZE
            })
        );
        let mut path = [0u8; 64];
        let n = f.app_path(&mut path).expect("a path");
        assert_eq!(&path[..n], b"/app/hello");
        let link = f.stat(exe, false).expect("lstat");
        assert_eq!((link.mode & 0o170000, link.size), (S_IFLNK, n as u64));
        assert_eq!(f.stat(exe, true).map(|s| s.size), Ok(APP_SIZE));
    }

    #[test]
    fn directories_count_their_links_and_start_relative_lookups() {
        let mut f = files(GuestDevice::SevGuest);
        let st = f.stat(Target::Inode(ROOT_INODE), true).expect("stat");
        assert_eq!((st.mode, st.nlink), (S_IFDIR | 0o755, 6));
        let etc = match resolve(&f, b"/etc") {
            Ok(Target::Inode(i)) => i,
            other => panic!("/etc is {other:?}"),
        };
        // /etc holds one file and no directory: 2 links, as on Linux (not 2 + entries).
        let st = f.stat(Target::Inode(etc), true).expect("stat");
        assert_eq!(st.nlink, 2);
        let motd = resolve(&f, b"/etc/motd").expect("motd");
        assert_eq!(f.stat(motd, true).map(|s| s.mtime), Ok(MOTD_MTIME));
        let fd = f
            .open(Node::Dir { inode: etc }, O_DIRECTORY)
            .expect("opened");
        assert_eq!(f.start_dir(fd as i64, false), Ok(etc));
        assert_eq!(
            f.start_dir(fd as i64, true),
            Ok(f.cwd),
            "absolute paths ignore dirfd"
        );
        assert_eq!(f.start_dir(AT_FDCWD, false), Ok(f.cwd));
        assert_eq!(f.start_dir(1, false), Err(ENOTDIR));
        assert_eq!(f.start_dir(-5, false), Err(EBADF));
        assert_eq!(f.resolve(etc, b"motd").map(|_| ()), Ok(()));
    }

    #[test]
    fn dup_shares_the_open_file_and_dup2_replaces() {
        let mut f = files(GuestDevice::SevGuest);
        assert_eq!(f.dup_from(1, 10, true), Ok(10));
        assert_eq!(f.cloexec(10), Ok(true));
        f.get_mut(1).expect("open").offset = 99;
        assert_eq!(f.get(10).map(|o| o.offset), Ok(99), "one open file");
        assert_eq!(
            f.dup_to(2, 10, false),
            Ok((10, None)),
            "1 still refers to it"
        );
        assert_eq!(f.get(10).map(|o| o.node), Ok(Node::Console(2)));
        assert_eq!(f.cloexec(10), Ok(false));
        assert_eq!(f.dup_from(1, MAX_FDS as u64, false), Err(EINVAL));
        assert_eq!(f.dup_to(1, MAX_FDS as u64, false), Err(EBADF));
    }

    #[test]
    fn an_open_file_is_released_with_its_last_reference() {
        let mut f = files(GuestDevice::SevGuest);
        let zero = Node::Dev(Special::Zero);
        let fd = f.open(zero, 0).expect("open");
        let index = f.index(fd).expect("open");
        let dup = f.dup_from(fd, 0, false).expect("dup");
        assert_eq!(f.close(fd), Ok(None), "the dup still refers to it");
        let held = f.hold(dup).expect("held");
        assert_eq!(held, index);
        assert_eq!(f.close(dup), Ok(None), "a blocked call holds it");
        assert_eq!(f.close(dup), Err(EBADF));
        assert_eq!(f.unhold(held), Some(Released { index, node: zero }));
        // dup2 over the last descriptor of another open file releases that one.
        let null = f.open(Node::Dev(Special::Null), 0).expect("open");
        let other = f.open(zero, 0).expect("open");
        let other_index = f.index(other).expect("open");
        assert_eq!(
            f.dup_to(null, other, false),
            Ok((
                other,
                Some(Released {
                    index: other_index,
                    node: zero
                })
            ))
        );
    }

    #[test]
    fn open_files_run_out_with_emfile() {
        let mut f = files(GuestDevice::SevGuest);
        let opened = (0..MAX_OPEN)
            .take_while(|_| f.open(Node::Dev(Special::Null), 0).is_ok())
            .count();
        assert_eq!(opened, MAX_OPEN - 3);
        assert_eq!(f.open(Node::Dev(Special::Null), 0), Err(EMFILE));
    }

    /// The names `getdents64` lists in `dir`, after `.` and `..`.
    fn listed(f: &Files, dir: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut pos = 2;
        while let Some(e) = f.dir_entry(dir, pos).expect("listable") {
            out.push(e.name.to_vec());
            pos = e.next;
        }
        out
    }

    fn inode(f: &Files, path: &[u8]) -> u32 {
        match resolve(f, path) {
            Ok(Target::Inode(i)) => i,
            other => panic!("{} is {other:?}", String::from_utf8_lossy(path)),
        }
    }

    #[test]
    fn tmp_is_writable_and_a_packaged_directory_is_copied_up_when_changed() {
        let (mut f, mut b) = files_with_backing(GuestDevice::SevGuest);
        let tmp = inode(&f, b"/tmp");
        assert!(mem::is_mem(tmp));
        assert_eq!(
            f.stat(Target::Inode(tmp), true).map(|s| s.mode),
            Ok(S_IFDIR | 0o1777)
        );
        let etc = inode(&f, b"/etc");
        assert!(!mem::is_mem(etc), "packaged until changed");
        let new = f
            .create_in(etc, b"new.conf", mem::Kind::File, 0o600, &mut b)
            .expect("created");
        let up = inode(&f, b"/etc");
        assert!(mem::is_mem(up), "copied up");
        assert_eq!(f.current(etc), up, "an old handle leads to the copy");
        assert_eq!(resolve(&f, b"/etc/new.conf"), Ok(Target::Inode(new)));
        assert_eq!(listed(&f, up), [b"new.conf".to_vec(), b"motd".to_vec()]);
        // Removing the packaged name leaves a whiteout: gone from lookups and lists.
        f.remove_name(up, b"motd", &mut b).expect("removed");
        assert_eq!(resolve(&f, b"/etc/motd"), Err(ENOENT));
        assert_eq!(listed(&f, up), [b"new.conf".to_vec()]);
        assert!(!f.dir_is_empty(up).expect("a directory"));
        f.remove_name(up, b"new.conf", &mut b).expect("removed");
        f.unref_mem(new, true, &mut b);
        assert_eq!(f.dir_is_empty(up), Ok(true), "only whiteouts left");
        let root_list = listed(&f, f.root());
        for name in [&b"app"[..], b"dev", b"etc", b"proc", b"tmp"] {
            assert_eq!(
                root_list.iter().filter(|n| n.as_slice() == name).count(),
                1,
                "{} listed once",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn walks_follow_links_and_stop_at_loops() {
        let (mut f, mut b) = files_with_backing(GuestDevice::SevGuest);
        let tmp = inode(&f, b"/tmp");
        let link = f
            .create_in(tmp, b"etc-link", mem::Kind::Symlink, 0o777, &mut b)
            .expect("created");
        f.mem_mut().set_link(link, b"/etc", &mut b).expect("stored");
        assert_eq!(
            resolve(&f, b"/tmp/etc-link/motd"),
            resolve(&f, b"/etc/motd")
        );
        let mut work = Box::new([0u8; crate::kernel::PATH_MAX]);
        let w = f
            .walk(f.cwd, b"/tmp/etc-link", &mut work, false)
            .expect("walked");
        assert_eq!(
            (w.target, w.name()),
            (Some(Target::Inode(link)), &b"etc-link"[..])
        );
        let looped = f
            .create_in(tmp, b"loop", mem::Kind::Symlink, 0o777, &mut b)
            .expect("created");
        f.mem_mut()
            .set_link(looped, b"loop/x", &mut b)
            .expect("stored");
        assert_eq!(resolve(&f, b"/tmp/loop"), Err(ELOOP));
        assert_eq!(resolve(&f, b"/tmp/missing/x"), Err(ENOENT));
        let w = f.walk(f.cwd, b"/tmp/new", &mut work, true).expect("walked");
        assert_eq!((w.target, w.parent, w.name()), (None, tmp, &b"new"[..]));
        let mut path = [0u8; 64];
        let n = f.dir_path(tmp, &mut path).expect("a path");
        assert_eq!(&path[..n], b"/tmp");
    }

    #[test]
    fn only_files_and_dev_zero_can_be_mapped() {
        let mut f = files(GuestDevice::SevGuest);
        let motd = f
            .node_of(resolve(&f, b"/etc/motd").expect("found"))
            .expect("file");
        let fd = f.open(motd, 0).expect("open") as i32;
        assert_eq!(
            f.mmap_source(fd, 4),
            Ok(Some((TREE_GPA + 4096 + 4, MOTD.len() as u64 - 4)))
        );
        let zero = f.open(Node::Dev(Special::Zero), 0).expect("open") as i32;
        assert_eq!(f.mmap_source(zero, 0), Ok(None));
        assert_eq!(f.mmap_source(1, 0), Err(ENODEV));
        let path = f.open(motd, O_PATH).expect("open") as i32;
        assert_eq!(f.mmap_source(path, 0), Err(EBADF));
        assert_eq!(f.mmap_source(-1, 0), Err(EBADF));
    }
}
