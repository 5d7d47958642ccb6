//! Writable inodes in private memory: the tmpfs under `/tmp` and the copies that
//! shadow packaged files and directories once the app changes them (`fs/mod.rs` lays
//! them over the packaged tree).
//!
//! The firmware has no heap. Inodes are a fixed table ([`MAX_INODES`]); everything
//! else lives in 4 KiB frames the caller's [`Backing`] hands out and takes back:
//!
//! - an inode's pages form a radix tree of index frames, 512 entries each, as deep as
//!   its largest page index needs (depth 0: the root is the one page itself, so a
//!   small file costs one frame; depth 3 reaches 512 GiB). Absent pages are holes and
//!   read as zeros;
//! - a regular file's pages are its bytes (*data* frames, which the backing maps where
//!   the app's copies run in ring 3);
//! - a directory's pages hold its entries as records that never cross a page and never
//!   move ([`Record`]), so that a record's position is a stable `getdents64` offset;
//!   a symbolic link's one page holds its target. These *metadata* frames are never
//!   mapped for the app: the firmware parses them.
//!
//! Every frame taken is counted in [`MemFs::frames`]; the backing refuses one with
//! ENOSPC when the guest has none to spare.

use crate::mem::phys_to_virt;
use crate::syscall::errno::*;

/// Most writable inodes at once.
pub const MAX_INODES: usize = 4096;
/// Bytes of a page.
pub const PAGE: u64 = 4096;
/// Entries of an index frame.
const FANOUT_SHIFT: u32 = 9;
/// Deepest radix tree: 512^4 pages, more than any guest has.
const MAX_DEPTH: u8 = 4;
/// Unified inode ids with this bit name a writable inode (its index below it); the
/// others are packaged inodes (`fs/mod.rs`).
pub const MEM_BIT: u32 = 1 << 31;
/// The id a whiteout record carries: the name is hidden, whatever the packaged
/// directory below holds.
pub const WHITEOUT: u32 = u32::MAX;
/// Longest name (`NAME_MAX`, `include/uapi/linux/limits.h`).
pub const NAME_MAX: usize = 255;

/// `d_type` values (`include/linux/fs_types.h`), kept in each record.
pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;
pub const DT_WHT: u8 = 14;

/// Whether unified id `id` names a writable inode.
pub fn is_mem(id: u32) -> bool {
    id & MEM_BIT != 0 && id != WHITEOUT
}

/// The table index of writable inode `id`.
pub fn index_of(id: u32) -> usize {
    (id & !MEM_BIT) as usize
}

/// The unified id of table index `ix`.
pub fn id_of(ix: usize) -> u32 {
    ix as u32 | MEM_BIT
}

/// Where frames come from and go, and the operations on their bytes that the
/// firmware runs where they are cheapest.
pub trait Backing {
    /// A frame: a data frame (`data`: a regular file's bytes), and whether it may
    /// still hold old bytes (the caller zeroes what it does not overwrite), or a
    /// zeroed metadata frame. ENOSPC when the guest has none to spare.
    fn alloc(&mut self, data: bool) -> Result<(u64, bool), u64>;
    /// Give back a frame [`Backing::alloc`] handed out.
    fn free(&mut self, gpa: u64, data: bool);
    /// The realtime clock, for timestamps: (seconds, nanoseconds).
    fn now(&mut self) -> (i64, u32);
}

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Kind {
    #[default]
    Free,
    Dir,
    File,
    Symlink,
}

/// A timestamp: seconds and nanoseconds since the epoch.
pub type Time = (i64, u32);

/// One writable inode.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemInode {
    pub kind: Kind,
    /// Depth of the page tree (0: `root` is page 0 itself).
    depth: u8,
    /// Permission bits (with set-id and sticky bits).
    pub mode: u16,
    /// Names that refer to it (a directory: 2 + its subdirectories while it has a
    /// name; 0 once removed).
    pub nlink: u32,
    /// Open files (and the working directory) that keep it alive without a name.
    pub opens: u32,
    pub uid: u32,
    pub gid: u32,
    /// A directory's parent (a unified id).
    pub parent: u32,
    /// A directory that shadows a packaged one: that directory's inode + 1 (0: none).
    lower: u32,
    /// Bytes: a file's size, a directory's used record bytes, a link's target length.
    pub size: u64,
    /// Root of the page tree (GPA; 0: no page yet).
    root: u64,
    /// Frames the inode holds, index frames included.
    pub frames: u64,
    /// Of those, pages of its contents (`st_blocks` counts them).
    pub pages: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

impl MemInode {
    /// The packaged directory this one shadows.
    pub fn lower(&self) -> Option<u32> {
        self.lower.checked_sub(1)
    }
}

const FREE_INODE: MemInode = MemInode {
    kind: Kind::Free,
    depth: 0,
    mode: 0,
    nlink: 0,
    opens: 0,
    uid: 0,
    gid: 0,
    parent: 0,
    lower: 0,
    size: 0,
    root: 0,
    frames: 0,
    pages: 0,
    atime: (0, 0),
    mtime: (0, 0),
    ctime: (0, 0),
};

/// Pages a tree of depth `depth` reaches.
fn capacity(depth: u8) -> u64 {
    1u64 << (FANOUT_SHIFT * u32::from(depth))
}

/// Entry `slot` of the index frame at `gpa`.
fn entry(gpa: u64, slot: u64) -> u64 {
    debug_assert!(slot < 512);
    // SAFETY: index frames are private frames this module owns (taken from the
    // backing, never mapped for the app), reached through the direct map; `slot` is
    // below 512, inside the frame.
    unsafe { (phys_to_virt(gpa) as *const u64).add(slot as usize).read() }
}

fn set_entry(gpa: u64, slot: u64, value: u64) {
    debug_assert!(slot < 512);
    // SAFETY: as in `entry`.
    unsafe {
        (phys_to_virt(gpa) as *mut u64)
            .add(slot as usize)
            .write(value)
    }
}

/// The bytes of metadata page `gpa` (a directory's records or a link's target).
fn meta_page(gpa: u64) -> &'static [u8; PAGE as usize] {
    // SAFETY: metadata frames are private frames this module owns, never mapped for
    // the app and written only through `meta_page_mut` while no other view exists
    // (the caller holds the kernel); the direct map reaches them.
    unsafe { &*(phys_to_virt(gpa) as *const [u8; PAGE as usize]) }
}

fn meta_page_mut(gpa: u64) -> &'static mut [u8; PAGE as usize] {
    // SAFETY: as in `meta_page`; the returned view is used and dropped before any
    // other view of the page is made.
    unsafe { &mut *(phys_to_virt(gpa) as *mut [u8; PAGE as usize]) }
}

/// A directory record: at a position of the directory's byte stream, inside one page.
///
/// ```text
/// 0  id (u32): 0 a free record, WHITEOUT a hidden name, else a writable inode
/// 4  hash of the name (u32, FNV-1a)
/// 8  record length (u16, a multiple of 8; 0: the rest of the page is unused)
/// 10 name length (u8)
/// 11 d_type (u8)
/// 12 the name, zeros to the record's end
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Position in the directory's stream.
    pub pos: u64,
    /// Position of the record after it.
    pub next: u64,
    pub id: u32,
    pub dtype: u8,
}

const REC_HEADER: usize = 12;

/// The length of the record of a name of `len` bytes.
fn record_len(len: usize) -> usize {
    (REC_HEADER + len).next_multiple_of(8)
}

/// FNV-1a of `name`: records are compared by it before their names.
fn name_hash(name: &[u8]) -> u32 {
    name.iter().fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The writable inodes.
#[derive(Debug)]
pub struct MemFs {
    inodes: [MemInode; MAX_INODES],
    /// Frames held by every inode, index frames included.
    pub frames: u64,
    /// Inodes in use.
    pub used: u32,
    /// Where the search for a free inode starts.
    hint: u32,
}

impl Default for MemFs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemFs {
    /// No inodes (all zero: it lives in the firmware's bss).
    pub const fn new() -> Self {
        Self {
            inodes: [FREE_INODE; MAX_INODES],
            frames: 0,
            used: 0,
            hint: 0,
        }
    }

    /// Inode `id` (a writable one).
    pub fn get(&self, id: u32) -> &MemInode {
        &self.inodes[index_of(id)]
    }

    /// Inode `id`, to change it.
    pub fn get_mut(&mut self, id: u32) -> &mut MemInode {
        &mut self.inodes[index_of(id)]
    }

    /// A new inode of `kind` with permission bits `mode`, one link, timestamps now;
    /// ENOSPC when the table is full.
    pub fn create(&mut self, kind: Kind, mode: u16, b: &mut dyn Backing) -> Result<u32, u64> {
        let start = self.hint as usize;
        let ix = (start..MAX_INODES)
            .chain(0..start)
            .find(|&i| self.inodes[i].kind == Kind::Free)
            .ok_or(ENOSPC)?;
        let now = b.now();
        self.inodes[ix] = MemInode {
            kind,
            mode,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            atime: now,
            mtime: now,
            ctime: now,
            ..FREE_INODE
        };
        self.hint = ((ix + 1) % MAX_INODES) as u32;
        self.used += 1;
        Ok(id_of(ix))
    }

    /// Make directory `id` shadow packaged directory `lower`.
    pub fn set_lower(&mut self, id: u32, lower: u32) {
        self.get_mut(id).lower = lower + 1;
    }

    /// Free inode `id` and its frames if nothing refers to it any more (no name, not
    /// open). Returns whether it was freed.
    pub fn release_if_unused(&mut self, id: u32, b: &mut dyn Backing) -> bool {
        let n = self.get(id);
        if n.kind == Kind::Free || n.opens > 0 || n.nlink > 0 {
            return false;
        }
        self.truncate_pages(id, 0, b);
        *self.get_mut(id) = FREE_INODE;
        self.used -= 1;
        true
    }

    /// Mark `id` as changed now (mtime and ctime).
    pub fn touch(&mut self, id: u32, b: &mut dyn Backing) {
        let now = b.now();
        let n = self.get_mut(id);
        n.mtime = now;
        n.ctime = now;
    }

    /// Mark `id`'s metadata as changed now (ctime).
    pub fn touch_ctime(&mut self, id: u32, b: &mut dyn Backing) {
        self.get_mut(id).ctime = b.now();
    }

    // ---- Pages ----

    /// The GPA of page `page` of `id`; 0 for a hole.
    pub fn page(&self, id: u32, page: u64) -> u64 {
        let n = self.get(id);
        if n.root == 0 || page >= capacity(n.depth) {
            return 0;
        }
        let mut at = n.root;
        let mut d = n.depth;
        while d > 0 {
            d -= 1;
            at = entry(at, (page >> (FANOUT_SHIFT * u32::from(d))) & 511);
            if at == 0 {
                return 0;
            }
        }
        at
    }

    /// Page `page` of `id`, taken if it is a hole: its GPA and whether it is a new
    /// page that may hold old bytes (the caller zeroes what it does not write).
    pub fn ensure_page(
        &mut self,
        id: u32,
        page: u64,
        b: &mut dyn Backing,
    ) -> Result<(u64, bool), u64> {
        let data = self.get(id).kind == Kind::File;
        // Grow the tree until it reaches `page`.
        while page >= capacity(self.get(id).depth) {
            if self.get(id).depth == MAX_DEPTH {
                return Err(EFBIG);
            }
            let root = self.get(id).root;
            if root != 0 {
                let (index, _) = b.alloc(false)?;
                set_entry(index, 0, root);
                self.account(id, 1);
                self.get_mut(id).root = index;
            }
            self.get_mut(id).depth += 1;
        }
        let depth = self.get(id).depth;
        if self.get(id).root == 0 {
            // Page 0 itself at depth 0, else an index frame.
            let (frame, dirty) = b.alloc(depth == 0 && data)?;
            self.get_mut(id).root = frame;
            self.account(id, 1);
            if depth == 0 {
                self.get_mut(id).pages += 1;
                return Ok((frame, dirty));
            }
        }
        let mut at = self.get(id).root;
        let mut d = depth;
        let mut dirty = false;
        while d > 0 {
            d -= 1;
            let slot = (page >> (FANOUT_SHIFT * u32::from(d))) & 511;
            let mut next = entry(at, slot);
            if next == 0 {
                let (frame, old) = b.alloc(d == 0 && data)?;
                next = frame;
                set_entry(at, slot, next);
                self.account(id, 1);
                if d == 0 {
                    self.get_mut(id).pages += 1;
                    dirty = old;
                }
            }
            at = next;
        }
        Ok((at, dirty))
    }

    fn account(&mut self, id: u32, frames: u64) {
        self.get_mut(id).frames += frames;
        self.frames += frames;
    }

    fn unaccount(&mut self, id: u32, frames: u64) {
        self.get_mut(id).frames -= frames;
        self.frames -= frames;
    }

    /// Free the pages of `id` from page `keep` on (and the index frames left empty).
    pub fn truncate_pages(&mut self, id: u32, keep: u64, b: &mut dyn Backing) {
        let n = *self.get(id);
        if n.root == 0 {
            return;
        }
        let data = n.kind == Kind::File;
        let mut freed = (0u64, 0u64);
        if prune(n.root, n.depth, 0, keep, data, b, &mut freed) {
            let m = self.get_mut(id);
            m.root = 0;
            m.depth = 0;
        }
        self.unaccount(id, freed.0);
        self.get_mut(id).pages -= freed.1;
    }

    /// Set a regular file's size to `size`: pages past it go. Returns the bytes past
    /// it in its last page that the caller must zero, `(gpa, len)`, so that growing
    /// it again shows zeros.
    pub fn set_size(&mut self, id: u32, size: u64, b: &mut dyn Backing) -> Option<(u64, u64)> {
        let old = self.get(id).size;
        self.get_mut(id).size = size;
        if size >= old {
            return None;
        }
        self.truncate_pages(id, size.div_ceil(PAGE), b);
        let tail = size % PAGE;
        let gpa = self.page(id, size / PAGE);
        (tail != 0 && gpa != 0).then(|| (gpa + tail, (PAGE - tail).min(old - size)))
    }

    /// The first run of `[offset, offset + len)` of `id` for a copy (`len` > 0):
    /// `(gpa, bytes)` of bytes in pages that follow each other in memory, or
    /// `(0, bytes)` of a hole.
    pub fn run_at(&self, id: u32, offset: u64, len: u64) -> (u64, u64) {
        let end = offset.saturating_add(len);
        let first_page = offset / PAGE;
        let first = self.page(id, first_page);
        let mut n = (PAGE - offset % PAGE).min(end - offset);
        // The pages after the first, read from the leaf index frame that holds them
        // (one walk per 512 pages, not one per page).
        let n_ino = self.get(id);
        let mut expect = if first == 0 { 0 } else { first + PAGE };
        let mut page = first_page + 1;
        let (mut leaf_block, mut leaf) = (u64::MAX, 0);
        while offset + n < end {
            let next = if n_ino.depth == 0 || page >= capacity(n_ino.depth) {
                self.page(id, page)
            } else {
                if page >> FANOUT_SHIFT != leaf_block {
                    leaf_block = page >> FANOUT_SHIFT;
                    leaf = self.leaf_frame(id, page);
                }
                if leaf == 0 {
                    0
                } else {
                    entry(leaf, page & 511)
                }
            };
            if next != expect {
                break;
            }
            n += PAGE.min(end - offset - n);
            if next != 0 {
                expect = next + PAGE;
            }
            page += 1;
        }
        let gpa = if first == 0 { 0 } else { first + offset % PAGE };
        (gpa, n)
    }

    /// The index frame whose entries are the pages around `page` (depth > 0); 0 if
    /// that part of the tree is a hole.
    fn leaf_frame(&self, id: u32, page: u64) -> u64 {
        let n = self.get(id);
        let mut at = n.root;
        let mut d = n.depth;
        while d > 1 && at != 0 {
            d -= 1;
            at = entry(at, (page >> (FANOUT_SHIFT * u32::from(d))) & 511);
        }
        at
    }

    /// Whether file `id` has a page at page index `page`, for SEEK_DATA/SEEK_HOLE.
    pub fn has_page(&self, id: u32, page: u64) -> bool {
        self.page(id, page) != 0
    }

    // ---- Symbolic links ----

    /// Store `target` as link `id`'s target.
    pub fn set_link(&mut self, id: u32, target: &[u8], b: &mut dyn Backing) -> Result<(), u64> {
        let (gpa, _) = self.ensure_page(id, 0, b)?;
        meta_page_mut(gpa)[..target.len()].copy_from_slice(target);
        self.get_mut(id).size = target.len() as u64;
        Ok(())
    }

    /// Link `id`'s target.
    pub fn link_target(&self, id: u32) -> &'static [u8] {
        let gpa = self.page(id, 0);
        if gpa == 0 {
            return &[];
        }
        &meta_page(gpa)[..self.get(id).size as usize]
    }

    // ---- Directory records ----

    /// The record at or after stream position `pos` of directory `dir` (free records
    /// skipped), with its name.
    pub fn record_from(&self, dir: u32, pos: u64) -> Option<(Record, &'static [u8])> {
        self.next_record(dir, pos).map(|(rec, _, name)| (rec, name))
    }

    /// [`Self::record_from`], with the hash of the name the record keeps.
    fn next_record(&self, dir: u32, mut pos: u64) -> Option<(Record, u32, &'static [u8])> {
        let size = self.get(dir).size;
        while pos < size {
            let in_page = (pos % PAGE) as usize;
            let gpa = self.page(dir, pos / PAGE);
            if gpa == 0 || in_page + REC_HEADER > PAGE as usize {
                pos = (pos / PAGE + 1) * PAGE;
                continue;
            }
            let p = meta_page(gpa);
            let h = &p[in_page..in_page + REC_HEADER];
            let reclen = u64::from(u16::from_le_bytes([h[8], h[9]]));
            if reclen == 0 {
                pos = (pos / PAGE + 1) * PAGE;
                continue;
            }
            let id = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if id != 0 {
                let hash = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                let name_len = usize::from(h[10]);
                let name = &p[in_page + REC_HEADER..in_page + REC_HEADER + name_len];
                let rec = Record {
                    pos,
                    next: pos + reclen,
                    id,
                    dtype: h[11],
                };
                return Some((rec, hash, name));
            }
            pos += reclen;
        }
        None
    }

    /// The record of `name` in directory `dir` (a whiteout included).
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Option<Record> {
        let hash = name_hash(name);
        let mut pos = 0u64;
        while let Some((rec, h, n)) = self.next_record(dir, pos) {
            if h == hash && n == name {
                return Some(rec);
            }
            pos = rec.next;
        }
        None
    }

    /// Add a record of `name` to directory `dir` (which has none of it).
    pub fn insert(
        &mut self,
        dir: u32,
        name: &[u8],
        id: u32,
        dtype: u8,
        b: &mut dyn Backing,
    ) -> Result<(), u64> {
        debug_assert!(!name.is_empty() && name.len() <= NAME_MAX);
        let need = record_len(name.len()) as u64;
        // A free record large enough, first.
        let size = self.get(dir).size;
        let mut pos = 0u64;
        let mut slot = None;
        while pos < size {
            let in_page = (pos % PAGE) as usize;
            let gpa = self.page(dir, pos / PAGE);
            if gpa == 0 || in_page + REC_HEADER > PAGE as usize {
                pos = (pos / PAGE + 1) * PAGE;
                continue;
            }
            let h = &meta_page(gpa)[in_page..in_page + REC_HEADER];
            let reclen = u64::from(u16::from_le_bytes([h[8], h[9]]));
            if reclen == 0 {
                pos = (pos / PAGE + 1) * PAGE;
                continue;
            }
            if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == 0 && reclen >= need {
                slot = Some((pos, reclen));
                break;
            }
            pos += reclen;
        }
        let (pos, reclen) = match slot {
            Some(s) => s,
            None => {
                let mut at = size;
                if at % PAGE + need > PAGE {
                    at = at.next_multiple_of(PAGE);
                }
                (at, need)
            }
        };
        let (gpa, _) = self.ensure_page(dir, pos / PAGE, b)?;
        let p = meta_page_mut(gpa);
        let at = (pos % PAGE) as usize;
        p[at..at + 4].copy_from_slice(&id.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&name_hash(name).to_le_bytes());
        p[at + 8..at + 10].copy_from_slice(&(reclen as u16).to_le_bytes());
        p[at + 10] = name.len() as u8;
        p[at + 11] = dtype;
        p[at + REC_HEADER..at + REC_HEADER + name.len()].copy_from_slice(name);
        p[at + REC_HEADER + name.len()..at + reclen as usize].fill(0);
        let d = self.get_mut(dir);
        d.size = d.size.max(pos + reclen);
        Ok(())
    }

    /// Point the record at `pos` of directory `dir` at `id` of type `dtype` (0: free
    /// it).
    pub fn set_record(&mut self, dir: u32, pos: u64, id: u32, dtype: u8) {
        let gpa = self.page(dir, pos / PAGE);
        if gpa == 0 {
            return;
        }
        let p = meta_page_mut(gpa);
        let at = (pos % PAGE) as usize;
        p[at..at + 4].copy_from_slice(&id.to_le_bytes());
        p[at + 11] = dtype;
    }

    /// Whether directory `dir` has an entry other than whiteouts.
    pub fn has_entries(&self, dir: u32) -> bool {
        let mut pos = 0;
        while let Some((r, _)) = self.record_from(dir, pos) {
            if r.id != WHITEOUT {
                return true;
            }
            pos = r.next;
        }
        false
    }
}

/// Free what the subtree at `gpa` (depth `depth`, first page `base`) holds from page
/// `keep` on; count the frames and the pages of contents freed in `freed`. Returns whether the subtree is now
/// empty (its own frame freed too).
fn prune(
    gpa: u64,
    depth: u8,
    base: u64,
    keep: u64,
    data: bool,
    b: &mut dyn Backing,
    freed: &mut (u64, u64),
) -> bool {
    if depth == 0 {
        if base >= keep {
            b.free(gpa, data);
            freed.0 += 1;
            freed.1 += 1;
            return true;
        }
        return false;
    }
    let span = capacity(depth - 1);
    let first = if keep > base { (keep - base) / span } else { 0 };
    let mut empty = first == 0;
    for slot in first.min(512)..512 {
        let e = entry(gpa, slot);
        if e == 0 {
            continue;
        }
        if prune(e, depth - 1, base + slot * span, keep, data, b, freed) {
            set_entry(gpa, slot, 0);
        } else {
            empty = false;
        }
    }
    if empty {
        b.free(gpa, false);
        freed.0 += 1;
    }
    empty
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::testing::FakeRam;
    use std::boxed::Box;
    use std::vec::Vec;

    /// Frames from fake RAM: a bump allocator with a free list and a limit.
    pub struct TestBacking {
        pub next: u64,
        pub end: u64,
        pub free_list: Vec<u64>,
        pub taken: u64,
        pub limit: u64,
        pub clock: i64,
    }

    impl TestBacking {
        pub fn new(ram: &FakeRam, from: u64) -> Self {
            Self {
                next: from,
                end: ram.size(),
                free_list: Vec::new(),
                taken: 0,
                limit: u64::MAX,
                clock: 1_700_000_000,
            }
        }
    }

    impl Backing for TestBacking {
        fn alloc(&mut self, _data: bool) -> Result<(u64, bool), u64> {
            if self.taken >= self.limit {
                return Err(ENOSPC);
            }
            let gpa = match self.free_list.pop() {
                Some(g) => g,
                None if self.next < self.end => {
                    self.next += PAGE;
                    self.next - PAGE
                }
                None => return Err(ENOSPC),
            };
            // SAFETY: the frame lies inside the fake RAM.
            unsafe { core::ptr::write_bytes(phys_to_virt(gpa) as *mut u8, 0, PAGE as usize) };
            self.taken += 1;
            Ok((gpa, false))
        }
        fn free(&mut self, gpa: u64, _data: bool) {
            // Poison it: a freed page read again shows.
            // SAFETY: the frame lies inside the fake RAM.
            unsafe { core::ptr::write_bytes(phys_to_virt(gpa) as *mut u8, 0xEE, PAGE as usize) };
            self.free_list.push(gpa);
            self.taken -= 1;
        }
        fn now(&mut self) -> (i64, u32) {
            self.clock += 1;
            (self.clock, 0)
        }
    }

    /// Write `bytes` at `offset` of file `id` through the direct map (what the
    /// kernel does in ring 3).
    pub fn write_at(m: &mut MemFs, id: u32, offset: u64, bytes: &[u8], b: &mut dyn Backing) {
        let end = offset + bytes.len() as u64;
        for page in offset / PAGE..end.div_ceil(PAGE) {
            m.ensure_page(id, page, b).expect("room");
        }
        let mut done = 0usize;
        while done < bytes.len() {
            let (gpa, n) = m.run_at(id, offset + done as u64, (bytes.len() - done) as u64);
            assert_ne!(gpa, 0, "every page was taken");
            // SAFETY: inside the fake RAM.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes[done..].as_ptr(),
                    phys_to_virt(gpa) as *mut u8,
                    n as usize,
                )
            };
            done += n as usize;
        }
        let f = m.get_mut(id);
        f.size = f.size.max(end);
    }

    /// Read `len` bytes at `offset` of file `id` (holes as zeros).
    pub fn read_at(m: &MemFs, id: u32, offset: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while (out.len() as u64) < len {
            let (gpa, n) = m.run_at(id, offset + out.len() as u64, len - out.len() as u64);
            if gpa == 0 {
                out.resize(out.len() + n as usize, 0);
            } else {
                // SAFETY: inside the fake RAM.
                let s = unsafe {
                    core::slice::from_raw_parts(phys_to_virt(gpa) as *const u8, n as usize)
                };
                out.extend_from_slice(s);
            }
        }
        out
    }

    fn setup() -> (FakeRam, TestBacking, Box<MemFs>) {
        let ram = FakeRam::new(96 << 20);
        let b = TestBacking::new(&ram, 1 << 20);
        (ram, b, Box::new(MemFs::new()))
    }

    #[test]
    fn a_small_file_is_one_frame_and_a_big_one_grows_its_tree() {
        let (_ram, mut b, mut m) = setup();
        let f = m.create(Kind::File, 0o644, &mut b).expect("inode");
        write_at(&mut m, f, 0, b"hello", &mut b);
        assert_eq!((m.get(f).frames, m.frames, b.taken), (1, 1, 1));
        assert_eq!(read_at(&m, f, 0, 5), b"hello");
        // 40 MiB in: two levels of index frames.
        let far = 40 << 20;
        write_at(&mut m, f, far, b"far away", &mut b);
        assert_eq!(read_at(&m, f, far, 8), b"far away");
        assert_eq!(
            read_at(&m, f, 0, 5),
            b"hello",
            "page 0 kept under the new root"
        );
        assert_eq!(read_at(&m, f, 4096, 3), [0, 0, 0], "a hole");
        // Pages 0 and 10240, two leaf index frames, one root index frame.
        assert_eq!(m.get(f).frames, 5);
        assert_eq!(m.frames, b.taken);
        m.get_mut(f).nlink = 0;
        assert!(m.release_if_unused(f, &mut b));
        assert_eq!((m.frames, b.taken, m.used), (0, 0, 0));
    }

    #[test]
    fn tens_of_mib_round_trip_and_truncation_frees_the_tail() {
        let (_ram, mut b, mut m) = setup();
        let f = m.create(Kind::File, 0o644, &mut b).expect("inode");
        let data: Vec<u8> = (0..(24u32 << 20) + 77)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        write_at(&mut m, f, 0, &data, &mut b);
        assert_eq!(read_at(&m, f, 0, data.len() as u64), data);
        let held = m.get(f).frames;
        assert_eq!(
            held,
            6145 + 13 + 1,
            "6145 data pages, 13 leaf index frames, a root"
        );
        assert_eq!(m.get(f).pages, 6145);
        let (gpa, len) = m.set_size(f, 5000, &mut b).expect("a tail to zero");
        assert_eq!(len, 4096 - 5000 % 4096);
        // SAFETY: inside the fake RAM.
        unsafe { core::ptr::write_bytes(phys_to_virt(gpa) as *mut u8, 0, len as usize) };
        assert_eq!(m.get(f).frames, 2 + 1 + 1);
        assert_eq!(m.frames, b.taken);
        // The tail of the last page reads as zeros once the file grows again.
        m.set_size(f, 8192, &mut b);
        assert_eq!(read_at(&m, f, 4990, 20)[10..], [0; 10]);
        assert_eq!(read_at(&m, f, 4990, 10), data[4990..5000]);
        m.set_size(f, 0, &mut b);
        assert_eq!((m.get(f).frames, b.taken), (0, 0));
    }

    #[test]
    fn runs_join_pages_that_follow_each_other_in_memory() {
        let (_ram, mut b, mut m) = setup();
        let f = m.create(Kind::File, 0o644, &mut b).expect("inode");
        write_at(&mut m, f, 0, &[1; 3 * 4096], &mut b);
        write_at(&mut m, f, 5 * 4096, &[2; 10], &mut b);
        let mut runs = Vec::new();
        let mut at = 100;
        while at < 100 + 5 * 4096 {
            let (gpa, n) = m.run_at(f, at, 100 + 5 * 4096 - at);
            runs.push((gpa != 0, n));
            at += n;
        }
        // Page 0, then the index frame the second page needed, then pages 1 and 2
        // next to each other.
        assert_eq!(
            runs,
            [
                (true, 4096 - 100),
                (true, 2 * 4096),
                (false, 2 * 4096),
                (true, 100)
            ]
        );
    }

    #[test]
    fn running_out_of_frames_is_enospc_and_nothing_leaks() {
        let (_ram, mut b, mut m) = setup();
        b.limit = 3;
        let f = m.create(Kind::File, 0o644, &mut b).expect("inode");
        let first = m.ensure_page(f, 0, &mut b).expect("a page").0;
        assert_eq!(
            m.ensure_page(f, 0, &mut b),
            Ok((first, false)),
            "already there"
        );
        assert!(
            m.ensure_page(f, 1, &mut b).is_ok(),
            "an index frame and a page"
        );
        assert_eq!(m.ensure_page(f, 2, &mut b), Err(ENOSPC));
        assert_eq!(m.frames, b.taken);
        m.truncate_pages(f, 0, &mut b);
        assert_eq!(b.taken, 0);
    }

    #[test]
    fn directory_records_are_found_freed_and_reused_in_place() {
        let (_ram, mut b, mut m) = setup();
        let d = m.create(Kind::Dir, 0o755, &mut b).expect("inode");
        let f = m.create(Kind::File, 0o644, &mut b).expect("inode");
        let long = [b'x'; 255];
        for i in 0..300u32 {
            let mut name = std::format!("file-{i}").into_bytes();
            if i == 50 {
                name = long.to_vec();
            }
            m.insert(d, &name, f, DT_REG, &mut b).expect("inserted");
        }
        assert!(m.get(d).size > PAGE, "records spread over pages");
        let r = m.lookup(d, b"file-7").expect("found");
        assert_eq!((r.id, r.dtype), (f, DT_REG));
        assert!(m.lookup(d, &long).is_some());
        assert!(m.lookup(d, b"file-300").is_none());
        m.set_record(d, r.pos, 0, 0);
        assert!(m.lookup(d, b"file-7").is_none());
        m.insert(d, b"file-8x", WHITEOUT, DT_WHT, &mut b)
            .expect("inserted");
        assert_eq!(
            m.lookup(d, b"file-8x").map(|r| r.pos),
            Some(r.pos),
            "reused"
        );
        // Every record listed once, in place.
        let mut pos = 0;
        let mut n = 0;
        while let Some((rec, _)) = m.record_from(d, pos) {
            n += 1;
            pos = rec.next;
        }
        assert_eq!(n, 300);
        assert!(m.has_entries(d));
    }

    #[test]
    fn a_link_keeps_its_target() {
        let (_ram, mut b, mut m) = setup();
        let l = m.create(Kind::Symlink, 0o777, &mut b).expect("inode");
        m.set_link(l, b"../somewhere/else", &mut b).expect("stored");
        assert_eq!(m.link_target(l), b"../somewhere/else");
        assert_eq!(m.get(l).size, 17);
    }

    #[test]
    fn the_table_runs_out_with_enospc() {
        let (_ram, mut b, mut m) = setup();
        for _ in 0..MAX_INODES {
            m.create(Kind::File, 0o644, &mut b).expect("inode");
        }
        assert_eq!(m.create(Kind::File, 0o644, &mut b), Err(ENOSPC));
    }
}
