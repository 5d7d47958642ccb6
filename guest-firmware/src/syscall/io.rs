//! Reading and writing: the console (fds proxied to nacre's stdin, stdout and stderr
//! through the hostcall area), packaged files (copied out of the files window), the
//! device files and `/proc/self/maps`, pipes and eventfds (`pipe.rs`, `eventfd.rs`);
//! lseek and the terminal ioctls. poll and select are `poll.rs`'s.
//!
//! Console data crosses the host boundary only through the shared hostcall area, in
//! copies the firmware makes (in ring 3 when large): the host sees exactly the bytes
//! the app writes to fds 1 and 2. Every reply length is checked against the request
//! before a byte of reply data is used (shared-abi `HostcallHeader::check_reply`).

use super::errno::*;
use super::{eventfd, mem_err, memfile, pipe, timerfd, SysResult};
use crate::fs::{Node, Special, SysText, O_ACCMODE, O_NONBLOCK, O_PATH, O_WRONLY};
use crate::kernel::Kernel;
use crate::mem::user::VmaKind;
use nacre_shared_abi::hostcall::{
    terminal_reply_size, HostcallHeader, HostcallOp, HOSTCALL_MAX_DATA, TCGETS, TIOCGWINSZ,
};
use nacre_shared_abi::layout::USER_VA_END;

/// Most iovecs per call (`IOV_MAX`, `include/uapi/linux/uio.h`).
const IOV_MAX: u64 = 1024;
/// Largest byte count one read or write transfers (`MAX_RW_COUNT`, Linux
/// `include/linux/fs.h`: INT_MAX rounded down to a page).
const MAX_RW_COUNT: u64 = 0x7FFF_F000;

/// The open file behind `fd` for an operation that needs `read` or write access.
fn open_for(k: &Kernel, fd: u64, read: bool) -> Result<crate::fs::OpenFile, u64> {
    let f = *k.files.get(fd)?;
    let mode = f.flags & O_ACCMODE;
    if f.flags & O_PATH != 0 || (read && mode == O_WRONLY) || (!read && mode == 0) {
        return Err(EBADF);
    }
    Ok(f)
}

/// Check that the app may write `len` bytes at `buf` before anything is consumed.
fn check_out(k: &Kernel, buf: u64, len: u64) -> Result<(), u64> {
    let end = buf.checked_add(len).ok_or(EFAULT)?;
    if len > 0 && (end > USER_VA_END || !k.vmas.covers(buf, end, true, false)) {
        return Err(EFAULT);
    }
    Ok(())
}

/// Read from `node` at `offset` (the file position, or pread's) into the app's `buf`.
/// Returns the bytes read.
fn read_node(k: &mut Kernel, node: Node, offset: u64, buf: u64, len: u64) -> SysResult {
    let len = len.min(MAX_RW_COUNT);
    match node {
        Node::Console(0) => {
            check_out(k, buf, len)?;
            let want = len.min(HOSTCALL_MAX_DATA);
            if want == 0 {
                return Ok(0);
            }
            super::poll::wait_for_stdin(k)?;
            let req = HostcallHeader {
                op: HostcallOp::Read as u32,
                fd: 0,
                len: want,
                ..Default::default()
            };
            let n = hostcall_io(k, req)?;
            let src = k.io.data_va();
            k.window_to_user(buf, src, n).map_err(mem_err)?;
            Ok(n)
        }
        Node::Console(_) => Err(EBADF),
        Node::File { va, size, .. } => {
            if offset >= size {
                return Ok(0);
            }
            let n = len.min(size - offset);
            k.window_to_user(buf, va + offset, n).map_err(mem_err)?;
            Ok(n)
        }
        Node::MemFile { id } => memfile::read(k, id, offset, buf, len),
        Node::Dir { .. } => Err(EISDIR),
        Node::Dev(Special::Null) => Ok(0),
        Node::Dev(Special::Zero) => {
            k.fill_user(buf, 0, len).map_err(mem_err)?;
            Ok(len)
        }
        Node::Dev(Special::Maps) => read_maps(k, offset, buf, len),
        Node::Dev(Special::Text(t)) => read_text(k, t, offset, buf, len),
        Node::Dev(_) => super::process::getrandom(k, buf, len, 0),
        // Read through their own modules, never at an offset (`seekable`).
        Node::Timer(_) | Node::Pipe(_) | Node::Event(_) | Node::Socket(_) => Err(ESPIPE),
        // An epoll instance has no read (Linux `vfs_read` without one).
        Node::Epoll => Err(EINVAL),
    }
}

/// A console hostcall: the result, or the host's errno; a malformed reply is fatal.
pub fn hostcall_io(k: &mut Kernel, req: HostcallHeader) -> Result<u64, u64> {
    match k.hostcall(req) {
        Ok(r) => r,
        Err(e) => crate::fatal_error(e),
    }
}

/// Write the app's `[buf, buf + len)` to the console fd `fd` (1 or 2), a hostcall
/// per area-full. Returns the bytes the host took.
fn console_write(k: &mut Kernel, fd: u8, buf: u64, len: u64) -> SysResult {
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(HOSTCALL_MAX_DATA);
        let dst = k.io.data_va();
        if let Err(e) = k.user_to_window(dst, buf + done, n) {
            return if done > 0 { Ok(done) } else { Err(mem_err(e)) };
        }
        match hostcall_io(
            k,
            crate::platform::hostcall::write_request(u32::from(fd), n),
        ) {
            Ok(w) => {
                done += w;
                if w < n {
                    break;
                }
            }
            Err(e) => return if done > 0 { Ok(done) } else { Err(e) },
        }
    }
    Ok(done)
}

fn write_node(k: &mut Kernel, node: Node, buf: u64, len: u64) -> SysResult {
    let len = len.min(MAX_RW_COUNT);
    match node {
        Node::Console(fd @ (1 | 2)) => console_write(k, fd, buf, len),
        Node::Console(_) => Err(EBADF),
        Node::Dev(Special::Null | Special::Zero | Special::Urandom) => Ok(len),
        Node::Dir { .. } => Err(EISDIR),
        // A timerfd and an epoll instance have no write (Linux `vfs_write` without
        // one).
        Node::Timer(_) | Node::Epoll => Err(EINVAL),
        // Written through their own modules, never at an offset (`seekable`).
        Node::Pipe(_) | Node::Event(_) | Node::Socket(_) => Err(ESPIPE),
        _ => Err(EBADF),
    }
}

/// The app's buffer of one read or write: one range, or an iovec array read one
/// entry at a time (it can be large, and the kernel stack is not).
#[derive(Debug, Clone, Copy)]
pub struct Segments {
    iov: u64,
    cnt: u64,
    next: u64,
    base: u64,
    left: u64,
}

impl Segments {
    /// `len` bytes at `buf`.
    pub fn one(buf: u64, len: u64) -> Self {
        Self {
            iov: 0,
            cnt: 0,
            next: 0,
            base: buf,
            left: len.min(MAX_RW_COUNT),
        }
    }

    /// The `cnt` iovecs at `iov` (at most IOV_MAX: the caller checks).
    pub fn vector(iov: u64, cnt: u64) -> Self {
        Self {
            iov,
            cnt,
            next: 0,
            base: 0,
            left: 0,
        }
    }

    /// The bytes in all, at most MAX_RW_COUNT; EINVAL for a bad iovec length, as
    /// readv and writev check every one before moving a byte.
    pub fn total(&self, k: &mut Kernel) -> Result<u64, u64> {
        let mut total = self.left;
        for i in self.next..self.cnt {
            total = total.saturating_add(iovec(k, self.iov, i)?.1);
        }
        Ok(total.min(MAX_RW_COUNT))
    }

    /// The next stretch of at most `max` bytes (empty iovecs skipped), left in
    /// place until [`Segments::advance`]; `None` at the end.
    pub fn peek(&mut self, k: &mut Kernel, max: u64) -> Result<Option<(u64, u64)>, u64> {
        while self.left == 0 {
            if self.next >= self.cnt {
                return Ok(None);
            }
            (self.base, self.left) = iovec(k, self.iov, self.next)?;
            self.next += 1;
        }
        Ok(Some((self.base, self.left.min(max))))
    }

    /// `n` bytes of the stretch [`Segments::peek`] gave were used.
    pub fn advance(&mut self, n: u64) {
        self.base += n;
        self.left -= n;
    }

    /// Copy `bytes` into the buffer, spread over as many stretches as it takes
    /// (the caller checked that they hold it).
    pub fn put(&mut self, k: &mut Kernel, bytes: &[u8]) -> Result<(), u64> {
        let mut done = 0usize;
        while done < bytes.len() {
            let Some((va, n)) = self.peek(k, (bytes.len() - done) as u64)? else {
                break;
            };
            k.copy_to_user(va, &bytes[done..done + n as usize])
                .map_err(mem_err)?;
            self.advance(n);
            done += n as usize;
        }
        Ok(())
    }
}

/// A read or write of a pipe or an eventfd, which may wait: the open file is held
/// meanwhile, as Linux holds it, so that another thread's close does not pull it
/// away.
fn stream_io(k: &mut Kernel, fd: u64, read: bool, buf: Segments) -> SysResult {
    let index = k.files.hold(fd)?;
    let node = k.files.file(index).node;
    let r = match (node, read) {
        (Node::Pipe(_), true) => pipe::read(k, index, buf),
        (Node::Pipe(_), false) => pipe::write(k, index, buf),
        (Node::Event(_), true) => eventfd::read(k, index, buf),
        (Node::Event(_), false) => eventfd_write(k, index, buf),
        (Node::Socket(_), true) => super::socket::recv(k, index, buf, 0).map(|(n, _)| n),
        (Node::Socket(_), false) => super::socket::send(k, index, buf, 0, None),
        _ => Err(EBADF),
    };
    let released = k.files.unhold(index);
    super::fs::let_go(k, released);
    r
}

/// write and writev of an eventfd: one 8-byte write per buffer, as Linux loops over
/// the iovecs of a file that has `write` but no `write_iter`; a short one ends it.
fn eventfd_write(k: &mut Kernel, index: usize, mut from: Segments) -> SysResult {
    let mut total = 0u64;
    while let Some((base, len)) = from.peek(k, u64::MAX)? {
        match eventfd::write(k, index, base, len) {
            Ok(n) if n == len => total += n,
            Ok(n) => return Ok(total + n),
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
        from.advance(len);
    }
    Ok(total)
}

/// Whether reads and writes of `node` go through [`stream_io`].
fn is_stream(node: Node) -> bool {
    matches!(node, Node::Pipe(_) | Node::Event(_) | Node::Socket(_))
}

pub fn read(k: &mut Kernel, fd: u64, buf: u64, len: u64) -> SysResult {
    let f = open_for(k, fd, true)?;
    if let Node::Timer(_) = f.node {
        return timerfd::read(k, fd, buf, len);
    }
    if is_stream(f.node) {
        return stream_io(k, fd, true, Segments::one(buf, len));
    }
    let n = read_node(k, f.node, f.offset, buf, len)?;
    if matches!(
        f.node,
        Node::File { .. } | Node::MemFile { .. } | Node::Dev(Special::Maps | Special::Text(_))
    ) {
        k.files.get_mut(fd)?.offset = f.offset + n;
    }
    Ok(n)
}

pub fn write(k: &mut Kernel, fd: u64, buf: u64, len: u64) -> SysResult {
    let f = open_for(k, fd, false)?;
    if is_stream(f.node) {
        return stream_io(k, fd, false, Segments::one(buf, len));
    }
    if let Node::MemFile { .. } = f.node {
        return memfile::write(k, fd, None, Segments::one(buf, len));
    }
    write_node(k, f.node, buf, len)
}

fn seekable(node: Node) -> Result<(), u64> {
    match node {
        Node::Console(_)
        | Node::Timer(_)
        | Node::Pipe(_)
        | Node::Event(_)
        | Node::Epoll
        | Node::Socket(_) => Err(ESPIPE),
        Node::Dir { .. } => Err(EISDIR),
        _ => Ok(()),
    }
}

pub fn pread(k: &mut Kernel, fd: u64, buf: u64, len: u64, offset: u64) -> SysResult {
    let f = open_for(k, fd, true)?;
    seekable(f.node)?;
    if (offset as i64) < 0 {
        return Err(EINVAL);
    }
    read_node(k, f.node, offset, buf, len)
}

pub fn pwrite(k: &mut Kernel, fd: u64, buf: u64, len: u64, offset: u64) -> SysResult {
    let f = open_for(k, fd, false)?;
    seekable(f.node)?;
    if (offset as i64) < 0 {
        return Err(EINVAL);
    }
    if let Node::MemFile { .. } = f.node {
        return memfile::write(k, fd, Some(offset), Segments::one(buf, len));
    }
    write_node(k, f.node, buf, len)
}

/// sendfile(2) to a socket: the file's bytes go from its window (the packaged files'
/// or the tmpfs window) straight into the host's socket, as a send of them would. Any
/// other pair of descriptors is EINVAL (as before Linux 2.6.33: callers then copy
/// themselves, as Go's, Rust's and glibc's do), and so is a part of a writable file
/// no frame backs (a hole) that comes first.
pub fn sendfile(k: &mut Kernel, out_fd: u64, in_fd: u64, offset_ptr: u64, count: u64) -> SysResult {
    let f = open_for(k, in_fd, true)?;
    let out = open_for(k, out_fd, false)?;
    if !matches!(f.node, Node::File { .. } | Node::MemFile { .. })
        || !matches!(out.node, Node::Socket(_))
    {
        return Err(EINVAL);
    }
    let start = if offset_ptr == 0 {
        f.offset
    } else {
        let mut b = [0u8; 8];
        k.copy_from_user(&mut b, offset_ptr).map_err(mem_err)?;
        let off = i64::from_le_bytes(b);
        if off < 0 {
            return Err(EINVAL);
        }
        off as u64
    };
    let count = count.min(MAX_RW_COUNT);
    let index = k.files.hold(out_fd).map_err(|_| EBADF)?;
    let mut sent = 0u64;
    let mut result = Ok(());
    while sent < count {
        let at = start + sent;
        let run = match f.node {
            Node::File { va, size, .. } => {
                (at < size).then(|| (va + at, (size - at).min(count - sent)))
            }
            Node::MemFile { id } => super::memfile::window_run(k, id, at, count - sent),
            _ => None,
        };
        let Some((va, n)) = run else {
            if sent == 0
                && matches!(f.node, Node::MemFile { id } if at < k.files.mem().get(id).size)
            {
                result = Err(EINVAL);
            }
            break;
        };
        match super::socket::send(k, index, Segments::one(va, n), 0, None) {
            Ok(w) => {
                sent += w;
                if w < n {
                    break;
                }
            }
            Err(e) => {
                if sent == 0 {
                    result = Err(e);
                }
                break;
            }
        }
    }
    let released = k.files.unhold(index);
    super::fs::let_go(k, released);
    result?;
    if offset_ptr == 0 {
        if let Ok(open) = k.files.get_mut(in_fd) {
            open.offset = start + sent;
        }
    } else {
        k.copy_to_user(offset_ptr, &(start + sent).to_le_bytes())
            .map_err(mem_err)?;
    }
    Ok(sent)
}

/// The iovec array `[iov, iov + 16 * cnt)`: (base, len) of entry `i`.
fn iovec(k: &mut Kernel, iov: u64, i: u64) -> Result<(u64, u64), u64> {
    let mut e = [0u8; 16];
    k.copy_from_user(&mut e, iov + i * 16).map_err(mem_err)?;
    parse_iovec(&e)
}

/// A `struct iovec` (`iov_base`, `iov_len`): EINVAL for a length that is negative as
/// an `ssize_t` or above MAX_RW_COUNT.
fn parse_iovec(e: &[u8; 16]) -> Result<(u64, u64), u64> {
    let base = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
    let len = u64::from_le_bytes([e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15]]);
    if len as i64 > MAX_RW_COUNT as i64 || (len as i64) < 0 {
        return Err(EINVAL);
    }
    Ok((base, len))
}

/// readv / preadv (`at`: the preadv offset).
pub fn readv(k: &mut Kernel, fd: u64, iov: u64, cnt: u64, at: Option<u64>) -> SysResult {
    if cnt > IOV_MAX {
        return Err(EINVAL);
    }
    let f = open_for(k, fd, true)?;
    if at.is_some() {
        seekable(f.node)?;
    }
    if let Node::Timer(_) = f.node {
        return readv_timer(k, fd, iov, cnt);
    }
    if is_stream(f.node) {
        return stream_io(k, fd, true, Segments::vector(iov, cnt));
    }
    let mut offset = at.unwrap_or(f.offset);
    let mut total = 0u64;
    for i in 0..cnt {
        let (base, len) = iovec(k, iov, i)?;
        if len == 0 {
            continue;
        }
        let n = match read_node(k, f.node, offset, base, len) {
            Ok(n) => n,
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        };
        total += n;
        offset += n;
        // A short read (end of file, or the console had less) ends the call, as it
        // would on Linux for a pipe or terminal.
        if n < len || matches!(f.node, Node::Console(_)) {
            break;
        }
    }
    if at.is_none()
        && matches!(
            f.node,
            Node::File { .. } | Node::MemFile { .. } | Node::Dev(Special::Maps | Special::Text(_))
        )
    {
        k.files.get_mut(fd)?.offset = offset;
    }
    Ok(total)
}

/// readv of a timerfd: its 8-byte count spread over the iovecs, which together must
/// hold it (Linux reads a timerfd through `read_iter`).
fn readv_timer(k: &mut Kernel, fd: u64, iov: u64, cnt: u64) -> SysResult {
    let mut to = Segments::vector(iov, cnt);
    if to.total(k)? < timerfd::TICKS_SIZE {
        return Err(EINVAL);
    }
    let bytes = timerfd::wait_ticks(k, fd)?.to_le_bytes();
    to.put(k, &bytes)?;
    Ok(timerfd::TICKS_SIZE)
}

/// writev and pwritev (`at`: the pwritev offset): to the console, the iovecs are
/// gathered into the hostcall area and sent in as few hostcalls as fit.
pub fn writev(k: &mut Kernel, fd: u64, iov: u64, cnt: u64, at: Option<u64>) -> SysResult {
    if cnt > IOV_MAX {
        return Err(EINVAL);
    }
    let f = open_for(k, fd, false)?;
    if at.is_some() {
        seekable(f.node)?;
        if at.is_some_and(|o| (o as i64) < 0) {
            return Err(EINVAL);
        }
    }
    if let Node::MemFile { .. } = f.node {
        return memfile::write(k, fd, at, Segments::vector(iov, cnt));
    }
    if is_stream(f.node) {
        return stream_io(k, fd, false, Segments::vector(iov, cnt));
    }
    let Node::Console(cfd @ (1 | 2)) = f.node else {
        let mut total = 0u64;
        for i in 0..cnt {
            let (base, len) = iovec(k, iov, i)?;
            total += write_node(k, f.node, base, len)?;
        }
        return Ok(total);
    };
    let mut total = 0u64;
    let mut staged = 0u64;
    for i in 0..cnt {
        let (mut base, mut len) = iovec(k, iov, i)?;
        while len > 0 {
            if staged == HOSTCALL_MAX_DATA {
                let w = flush(k, cfd, staged)?;
                total += w;
                staged = 0;
                if w < HOSTCALL_MAX_DATA {
                    return Ok(total);
                }
            }
            let n = len.min(HOSTCALL_MAX_DATA - staged);
            let dst = k.io.data_va() + staged;
            if let Err(e) = k.user_to_window(dst, base, n) {
                if total + staged == 0 {
                    return Err(mem_err(e));
                }
                return Ok(total + flush(k, cfd, staged)?);
            }
            staged += n;
            base += n;
            len -= n;
        }
    }
    if staged > 0 {
        total += flush(k, cfd, staged)?;
    }
    Ok(total)
}

/// Send the `len` staged bytes to console fd `fd`.
fn flush(k: &mut Kernel, fd: u8, len: u64) -> SysResult {
    hostcall_io(
        k,
        crate::platform::hostcall::write_request(u32::from(fd), len),
    )
}

pub fn lseek(k: &mut Kernel, fd: u64, off: i64, whence: u64) -> SysResult {
    // `include/uapi/linux/fs.h`; ENXIO (6) for SEEK_DATA/SEEK_HOLE past the end.
    const SEEK_SET: u64 = 0;
    const SEEK_CUR: u64 = 1;
    const SEEK_END: u64 = 2;
    const SEEK_DATA: u64 = 3;
    const SEEK_HOLE: u64 = 4;
    const ENXIO: u64 = 6;
    let f = *k.files.get(fd)?;
    let size = match f.node {
        Node::Console(_) | Node::Pipe(_) | Node::Socket(_) => return Err(ESPIPE),
        // A timerfd's, an eventfd's and an epoll instance's position stays 0 (Linux
        // `noop_llseek`).
        Node::Dev(Special::Null | Special::Zero | Special::Urandom)
        | Node::Timer(_)
        | Node::Event(_)
        | Node::Epoll => return Ok(0),
        Node::File { size, .. } => Some(size),
        Node::MemFile { id } => Some(k.files.mem().get(id).size),
        Node::Dir { .. } | Node::Dev(_) => None,
    };
    let new = match whence {
        SEEK_SET => off,
        SEEK_CUR => (f.offset as i64).checked_add(off).ok_or(EINVAL)?,
        SEEK_END => (size.ok_or(EINVAL)? as i64)
            .checked_add(off)
            .ok_or(EINVAL)?,
        SEEK_DATA | SEEK_HOLE => {
            let size = size.ok_or(EINVAL)? as i64;
            if off < 0 {
                return Err(EINVAL);
            }
            if off >= size {
                return Err(ENXIO);
            }
            if whence == SEEK_DATA {
                off
            } else {
                size
            }
        }
        _ => return Err(EINVAL),
    };
    if new < 0 {
        return Err(EINVAL);
    }
    k.files.get_mut(fd)?.offset = new as u64;
    Ok(new as u64)
}

pub fn ioctl(k: &mut Kernel, fd: u64, req: u64, arg: u64) -> SysResult {
    // `include/uapi/asm-generic/ioctls.h`.
    const FIONREAD: u64 = 0x541B;
    const FIONBIO: u64 = 0x5421;
    const FIONCLEX: u64 = 0x5450;
    const FIOCLEX: u64 = 0x5451;
    // The command is an `unsigned int` (Linux `fs/ioctl.c`): libcs that pass it as a
    // sign-extended `int` (musl) set the upper half of the register.
    let req = req & 0xFFFF_FFFF;
    let f = *k.files.get(fd)?;
    match (f.node, req) {
        (_, FIOCLEX | FIONCLEX) => {
            k.files.set_cloexec(fd, req == FIOCLEX)?;
            Ok(0)
        }
        (_, FIONBIO) => {
            let mut v = [0u8; 4];
            k.copy_from_user(&mut v, arg).map_err(mem_err)?;
            let of = k.files.get_mut(fd)?;
            if u32::from_le_bytes(v) != 0 {
                of.flags |= O_NONBLOCK;
            } else {
                of.flags &= !O_NONBLOCK;
            }
            Ok(0)
        }
        (Node::File { size, .. }, FIONREAD) => {
            let left = size.saturating_sub(f.offset).min(i32::MAX as u64) as u32;
            k.copy_to_user(arg, &left.to_le_bytes()).map_err(mem_err)?;
            Ok(0)
        }
        (Node::MemFile { id }, FIONREAD) => {
            let size = k.files.mem().get(id).size;
            let left = size.saturating_sub(f.offset).min(i32::MAX as u64) as u32;
            k.copy_to_user(arg, &left.to_le_bytes()).map_err(mem_err)?;
            Ok(0)
        }
        (Node::Pipe(end), FIONREAD) => {
            let n = pipe::bytes_waiting(k, end);
            k.copy_to_user(arg, &n.to_le_bytes()).map_err(mem_err)?;
            Ok(0)
        }
        (Node::Dev(Special::Guest(device)), _) => {
            super::attest::guest_device_ioctl(k, device, req, arg)
        }
        (Node::Console(cfd), TCGETS | TIOCGWINSZ) => {
            let size = terminal_reply_size(req).ok_or(ENOTTY)?;
            check_out(k, arg, size)?;
            let hreq = HostcallHeader {
                op: HostcallOp::Terminal as u32,
                fd: u32::from(cfd),
                arg: req,
                len: size,
                ..Default::default()
            };
            let n = hostcall_io(k, hreq)?;
            let src = k.io.data_va();
            k.window_to_user(arg, src, n).map_err(mem_err)?;
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}

pub fn fsync(k: &mut Kernel, fd: u64) -> SysResult {
    match k.files.get(fd)?.node {
        Node::File { .. } | Node::MemFile { .. } | Node::Dir { .. } => Ok(0),
        _ => Err(EINVAL),
    }
}

/// `/proc/self/maps`, generated afresh for each read: one line per area, in the
/// kernel's format (`fs/proc/task_mmu.c`: `start-end perms offset dev inode`, the name
/// from column 73).
fn read_maps(k: &mut Kernel, offset: u64, buf: u64, len: u64) -> SysResult {
    let mut pos = 0u64;
    let mut written = 0u64;
    let mut line = [0u8; 160];
    let mut i = 0usize;
    let end = offset.saturating_add(len);
    while let Some(n) = maps_line(k, i, &mut line) {
        i += 1;
        let (lstart, lend) = (pos, pos + n as u64);
        pos = lend;
        if lend <= offset {
            continue;
        }
        if lstart >= end {
            break;
        }
        let from = offset.max(lstart) - lstart;
        let to = end.min(lend) - lstart;
        k.copy_to_user(buf + written, &line[from as usize..to as usize])
            .map_err(mem_err)?;
        written += to - from;
    }
    Ok(written)
}

/// Read a generated text from `offset`: its pieces (a block per vCPU, or the one
/// line) are formatted one at a time and the part in the window copied out.
fn read_text(k: &mut Kernel, t: SysText, offset: u64, buf: u64, len: u64) -> SysResult {
    let cpus = crate::arch::smp::cpus().max(1);
    let pieces = match t {
        SysText::CpuInfo => cpus,
        SysText::CpuList => 1,
    };
    let end = offset.saturating_add(len);
    let (mut pos, mut written) = (0u64, 0u64);
    for i in 0..pieces {
        let mut text = crate::fmt::Buf::<1024>::sized();
        match t {
            SysText::CpuInfo => cpuinfo_block(&mut text, i, cpus),
            SysText::CpuList => cpu_list(&mut text, cpus),
        }
        let piece = text.as_bytes();
        let (start, stop) = (pos, pos + piece.len() as u64);
        pos = stop;
        if stop <= offset {
            continue;
        }
        if start >= end {
            break;
        }
        let from = (offset.max(start) - start) as usize;
        let to = (end.min(stop) - start) as usize;
        k.copy_to_user(buf + written, &piece[from..to])
            .map_err(mem_err)?;
        written += (to - from) as u64;
    }
    Ok(written)
}

/// The vCPUs `0..cpus` as Linux writes a CPU list (`0`, `0-3`), with a newline.
fn cpu_list<const N: usize>(out: &mut crate::fmt::Buf<N>, cpus: u32) {
    out.push("0");
    if cpus > 1 {
        out.push("-").dec(u64::from(cpus - 1));
    }
    out.push("\n");
}

/// `/proc/cpuinfo`'s block for vCPU `cpu` of `cpus`, from CPUID as the firmware sees
/// it (the flags Linux names for the features apps look for).
fn cpuinfo_block(out: &mut crate::fmt::Buf<1024>, cpu: u32, cpus: u32) {
    use crate::arch::cpu::cpuid;
    let vendor = cpuid(0, 0);
    let mut name = [0u8; 12];
    for (i, r) in [vendor.ebx, vendor.edx, vendor.ecx].into_iter().enumerate() {
        name[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
    }
    let leaf1 = cpuid(1, 0);
    let base_family = (leaf1.eax >> 8) & 0xF;
    let family = if base_family == 0xF {
        base_family + ((leaf1.eax >> 20) & 0xFF)
    } else {
        base_family
    };
    let model = ((leaf1.eax >> 4) & 0xF) | (((leaf1.eax >> 16) & 0xF) << 4);
    let mut brand = [0u8; 48];
    if cpuid(0x8000_0000, 0).eax >= 0x8000_0004 {
        for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
            let r = cpuid(leaf, 0);
            for (j, v) in [r.eax, r.ebx, r.ecx, r.edx].into_iter().enumerate() {
                brand[i * 16 + j * 4..i * 16 + j * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    fn text(b: &[u8]) -> &str {
        let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
        core::str::from_utf8(b).unwrap_or("").trim()
    }
    out.push("processor\t: ").dec(u64::from(cpu));
    out.push("\nvendor_id\t: ").push(text(&name));
    out.push("\ncpu family\t: ").dec(u64::from(family));
    out.push("\nmodel\t\t: ").dec(u64::from(model));
    out.push("\nmodel name\t: ").push(text(&brand));
    out.push("\nstepping\t: ").dec(u64::from(leaf1.eax & 0xF));
    out.push("\nphysical id\t: 0\nsiblings\t: ")
        .dec(u64::from(cpus));
    out.push("\ncore id\t\t: ").dec(u64::from(cpu));
    out.push("\ncpu cores\t: ").dec(u64::from(cpus));
    out.push("\napicid\t\t: ").dec(u64::from(cpu));
    out.push("\nfpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: ")
        .dec(u64::from(vendor.eax));
    out.push("\nwp\t\t: yes\nflags\t\t:");
    let leaf7 = cpuid(7, 0);
    let ext = cpuid(0x8000_0001, 0);
    for &(reg, bit, flag) in CPUINFO_FLAGS {
        let v = match reg {
            Reg::Edx1 => leaf1.edx,
            Reg::Ecx1 => leaf1.ecx,
            Reg::Ebx7 => leaf7.ebx,
            Reg::Ecx7 => leaf7.ecx,
            Reg::Edx81 => ext.edx,
            Reg::Ecx81 => ext.ecx,
        };
        if v & (1 << bit) != 0 {
            out.push(" ").push(flag);
        }
    }
    out.push("\n\n");
}

/// The CPUID register a `/proc/cpuinfo` flag is read from.
#[derive(Clone, Copy)]
enum Reg {
    Edx1,
    Ecx1,
    Ebx7,
    Ecx7,
    Edx81,
    Ecx81,
}

/// `/proc/cpuinfo` flags: CPUID register, bit, Linux's name
/// (`arch/x86/include/asm/cpufeatures.h`).
const CPUINFO_FLAGS: &[(Reg, u32, &str)] = &[
    (Reg::Edx1, 0, "fpu"),
    (Reg::Edx1, 4, "tsc"),
    (Reg::Edx1, 5, "msr"),
    (Reg::Edx1, 6, "pae"),
    (Reg::Edx1, 8, "cx8"),
    (Reg::Edx1, 9, "apic"),
    (Reg::Edx1, 11, "sep"),
    (Reg::Edx1, 15, "cmov"),
    (Reg::Edx1, 16, "pat"),
    (Reg::Edx1, 19, "clflush"),
    (Reg::Edx1, 23, "mmx"),
    (Reg::Edx1, 24, "fxsr"),
    (Reg::Edx1, 25, "sse"),
    (Reg::Edx1, 26, "sse2"),
    (Reg::Edx81, 11, "syscall"),
    (Reg::Edx81, 20, "nx"),
    (Reg::Edx81, 27, "rdtscp"),
    (Reg::Edx81, 29, "lm"),
    (Reg::Ecx1, 0, "pni"),
    (Reg::Ecx1, 1, "pclmulqdq"),
    (Reg::Ecx1, 9, "ssse3"),
    (Reg::Ecx1, 12, "fma"),
    (Reg::Ecx1, 13, "cx16"),
    (Reg::Ecx1, 19, "sse4_1"),
    (Reg::Ecx1, 20, "sse4_2"),
    (Reg::Ecx1, 21, "x2apic"),
    (Reg::Ecx1, 22, "movbe"),
    (Reg::Ecx1, 23, "popcnt"),
    (Reg::Ecx1, 25, "aes"),
    (Reg::Ecx1, 26, "xsave"),
    (Reg::Ecx1, 28, "avx"),
    (Reg::Ecx1, 29, "f16c"),
    (Reg::Ecx1, 30, "rdrand"),
    (Reg::Ecx81, 0, "lahf_lm"),
    (Reg::Ecx81, 5, "abm"),
    (Reg::Ebx7, 0, "fsgsbase"),
    (Reg::Ebx7, 3, "bmi1"),
    (Reg::Ebx7, 5, "avx2"),
    (Reg::Ebx7, 8, "bmi2"),
    (Reg::Ebx7, 9, "erms"),
    (Reg::Ebx7, 16, "avx512f"),
    (Reg::Ebx7, 17, "avx512dq"),
    (Reg::Ebx7, 18, "rdseed"),
    (Reg::Ebx7, 19, "adx"),
    (Reg::Ebx7, 23, "clflushopt"),
    (Reg::Ebx7, 28, "avx512cd"),
    (Reg::Ebx7, 29, "sha_ni"),
    (Reg::Ebx7, 30, "avx512bw"),
    (Reg::Ebx7, 31, "avx512vl"),
    (Reg::Ecx7, 1, "avx512vbmi"),
    (Reg::Ecx7, 8, "gfni"),
    (Reg::Ecx7, 9, "vaes"),
    (Reg::Ecx7, 10, "vpclmulqdq"),
    (Reg::Ecx7, 22, "rdpid"),
];

/// Format the `i`-th line of `/proc/self/maps` into `out`; `None` past the last.
fn maps_line(k: &Kernel, i: usize, out: &mut [u8; 160]) -> Option<usize> {
    let (start, end, prot, name) = maps_area(k, i)?;
    Some(format_maps_line(start, end, prot, name, out))
}

/// The `i`-th area `/proc/self/maps` lists: the app's areas, then the helper page.
fn maps_area(k: &Kernel, i: usize) -> Option<(u64, u64, u32, &'static [u8])> {
    let count = k.vmas.iter().count();
    let (start, end, prot, name): (u64, u64, u32, &[u8]) = if i < count {
        let v = *k.vmas.iter().nth(i)?;
        let name: &[u8] = if v.start == k.brk_start && k.brk > k.brk_start {
            b"[heap]"
        } else if v.end == crate::app::loader::STACK_TOP {
            b"[stack]"
        } else if v.kind == VmaKind::Window && v.start == crate::mem::user::IO_WINDOW_VA {
            b"[nacre-io]"
        } else if v.kind == VmaKind::Window && v.start == crate::mem::user::XSTATE_WINDOW_VA {
            b"[nacre-xstate]"
        } else if v.kind == VmaKind::Window && v.start == crate::mem::user::ZERO_WINDOW_VA {
            b"[nacre-zero]"
        } else if v.kind == VmaKind::Window && v.start == crate::mem::user::PIPE_WINDOW_VA {
            b"[nacre-pipes]"
        } else if v.kind == VmaKind::Window && v.start == crate::mem::user::TMPFS_WINDOW_VA {
            b"[nacre-tmpfs]"
        } else if v.kind == VmaKind::Window
            && (v.start == crate::mem::user::VVAR_VA || v.start == crate::mem::user::CLOCK_FLOOR_VA)
        {
            b"[vvar]"
        } else if v.kind == VmaKind::Window && v.start == crate::mem::user::VDSO_VA {
            b"[vdso]"
        } else if v.kind == VmaKind::Window {
            b"[nacre-files]"
        } else {
            b""
        };
        (v.start, v.end, v.prot, name)
    } else if i == count {
        let t = crate::arch::syscall_entry::TRAMPOLINE_VA;
        (t, t + 4096, 4, b"[nacre-helper]")
    } else {
        return None;
    };
    Some((start, end, prot, name))
}

/// One line of `/proc/self/maps` for `[start, end)` with protection `prot` and
/// `name` into `out`; returns its length.
fn format_maps_line(start: u64, end: u64, prot: u32, name: &[u8], out: &mut [u8; 160]) -> usize {
    let mut w = LineWriter { out, n: 0 };
    let mut hex = [0u8; 16];
    w.put(hex_digits(start, &mut hex));
    w.put(b"-");
    w.put(hex_digits(end, &mut hex));
    let perms = [
        if prot & 1 != 0 { b'r' } else { b'-' },
        if prot & 2 != 0 { b'w' } else { b'-' },
        if prot & 4 != 0 { b'x' } else { b'-' },
        b'p',
    ];
    w.put(b" ");
    w.put(&perms);
    w.put(b" 00000000 00:00 0");
    if !name.is_empty() {
        let pad = 73usize.saturating_sub(w.n).max(1);
        for _ in 0..pad {
            w.put(b" ");
        }
        w.put(name);
    }
    w.put(b"\n");
    w.n
}

/// Appends to a line buffer, cutting what does not fit.
struct LineWriter<'a> {
    out: &'a mut [u8; 160],
    n: usize,
}

impl LineWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let m = bytes.len().min(self.out.len() - self.n);
        self.out[self.n..self.n + m].copy_from_slice(&bytes[..m]);
        self.n += m;
    }
}

/// `v` in lowercase hex, at least 8 digits.
fn hex_digits(v: u64, buf: &mut [u8; 16]) -> &[u8] {
    let digits = (16 - (v.leading_zeros() / 4) as usize).max(8);
    for (j, slot) in buf[..digits].iter_mut().enumerate() {
        let d = ((v >> (4 * (digits - 1 - j))) & 0xF) as u8;
        *slot = if d < 10 { b'0' + d } else { b'a' + d - 10 };
    }
    &buf[..digits]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_written_as_linux_writes_them() {
        let list = |n| {
            let mut b = crate::fmt::Buf::new();
            cpu_list(&mut b, n);
            b.as_str().to_string()
        };
        assert_eq!(list(1), "0\n");
        assert_eq!(list(2), "0-1\n");
        assert_eq!(list(16), "0-15\n");
    }

    #[test]
    fn cpuinfo_blocks_name_their_vcpu_and_fit_the_buffer() {
        let mut b = crate::fmt::Buf::<1024>::sized();
        cpuinfo_block(&mut b, 3, 4);
        let text = b.as_str();
        assert!(text.starts_with("processor\t: 3\n"), "{text}");
        assert!(text.contains("\nsiblings\t: 4\n"), "{text}");
        assert!(
            text.ends_with("\n\n"),
            "the block ends with a blank line: {text}"
        );
    }

    fn iov(base: u64, len: u64) -> [u8; 16] {
        let mut e = [0u8; 16];
        e[..8].copy_from_slice(&base.to_le_bytes());
        e[8..].copy_from_slice(&len.to_le_bytes());
        e
    }

    #[test]
    fn iovecs_decode_and_refuse_huge_lengths() {
        assert_eq!(parse_iovec(&iov(0x1000, 12)), Ok((0x1000, 12)));
        assert_eq!(parse_iovec(&iov(0, MAX_RW_COUNT)), Ok((0, MAX_RW_COUNT)));
        assert_eq!(parse_iovec(&iov(0, MAX_RW_COUNT + 1)), Err(EINVAL));
        assert_eq!(
            parse_iovec(&iov(0, u64::MAX)),
            Err(EINVAL),
            "negative as ssize_t"
        );
    }

    #[test]
    fn maps_lines_have_the_kernels_layout() {
        let mut out = [0u8; 160];
        let n = format_maps_line(0x40_0000, 0x40_1000, PROT_R | PROT_X, b"", &mut out);
        assert_eq!(&out[..n], b"00400000-00401000 r-xp 00000000 00:00 0\n");
        let n = format_maps_line(
            0x7fff_fff0_0000,
            0x7fff_fff1_0000,
            PROT_R | PROT_W,
            b"[stack]",
            &mut out,
        );
        let line = core::str::from_utf8(&out[..n]).expect("text");
        assert!(line.starts_with("7ffffff00000-7ffffff10000 rw-p 00000000 00:00 0 "));
        assert_eq!(line.find("[stack]"), Some(73), "names start in column 74");
        assert!(line.ends_with("[stack]\n"));
    }

    const PROT_R: u32 = 1;
    const PROT_W: u32 = 2;
    const PROT_X: u32 = 4;

    #[test]
    fn addresses_print_with_at_least_eight_digits() {
        let mut buf = [0u8; 16];
        assert_eq!(hex_digits(0, &mut buf), b"00000000");
        assert_eq!(hex_digits(0xABC_DEF0_1234, &mut buf), b"abcdef01234");
        assert_eq!(hex_digits(u64::MAX, &mut buf), b"ffffffffffffffff");
    }
}
