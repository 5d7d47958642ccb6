//! Reading and writing: the console (fds proxied to nacre's stdin, stdout and stderr
//! through the hostcall area), packaged files (copied out of the files window), the
//! device files and `/proc/self/maps`; lseek, poll and the terminal ioctls.
//!
//! Console data crosses the host boundary only through the shared hostcall area, in
//! copies the firmware makes (in ring 3 when large): the host sees exactly the bytes
//! the app writes to fds 1 and 2. Every reply length is checked against the request
//! before a byte of reply data is used (shared-abi `HostcallHeader::check_reply`).

use super::errno::*;
use super::{mem_err, timerfd, SysResult};
use crate::fs::{Node, Special, O_ACCMODE, O_NONBLOCK, O_PATH, O_WRONLY};
use crate::kernel::Kernel;
use crate::mem::user::VmaKind;
use nacre_shared_abi::hostcall::{
    terminal_reply_size, HostcallHeader, HostcallOp, HOSTCALL_MAX_DATA, POLL_FOREVER,
    POLL_STDIN_READABLE, TCGETS, TIOCGWINSZ,
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
            wait_for_stdin(k)?;
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
        Node::Dir { .. } => Err(EISDIR),
        Node::Dev(Special::Null) => Ok(0),
        Node::Dev(Special::Zero) => {
            k.fill_user(buf, 0, len).map_err(mem_err)?;
            Ok(len)
        }
        Node::Dev(Special::Maps) => read_maps(k, offset, buf, len),
        Node::Dev(_) => super::process::getrandom(k, buf, len, 0),
        // Read through `timerfd::read`, never at an offset (`seekable`).
        Node::Timer(_) => Err(ESPIPE),
    }
}

/// How often a thread waiting for stdin asks the host again while other threads run.
const STDIN_POLL_NS: u64 = 2_000_000;

/// Before a read of stdin, while other threads could run: wait until the host says
/// stdin is readable (or at its end), letting them run meanwhile, so that one thread
/// waiting for input does not stop the others (a read hostcall blocks the vCPU in the
/// host). A signal for the thread ends the wait (restarted after a handler with
/// SA_RESTART). With one thread the read hostcall itself waits.
fn wait_for_stdin(k: &mut Kernel) -> Result<(), u64> {
    while k.sched.threads.live() > 1 {
        let req = HostcallHeader {
            op: HostcallOp::Poll as u32,
            arg: POLL_STDIN_READABLE,
            arg2: 0,
            ..Default::default()
        };
        if hostcall_io(k, req)? & POLL_STDIN_READABLE != 0 {
            return Ok(());
        }
        let until = k.monotonic_ns().saturating_add(STDIN_POLL_NS);
        if super::signal::wait(k, Some(until)) == super::signal::Wake::Signal {
            return Err(super::signal::ERESTARTSYS);
        }
    }
    Ok(())
}

/// A console hostcall: the result, or the host's errno; a malformed reply is fatal.
fn hostcall_io(k: &mut Kernel, req: HostcallHeader) -> Result<u64, u64> {
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
        // A timerfd has no write (Linux `vfs_write` without one).
        Node::Timer(_) => Err(EINVAL),
        _ => Err(EBADF),
    }
}

pub fn read(k: &mut Kernel, fd: u64, buf: u64, len: u64) -> SysResult {
    let f = open_for(k, fd, true)?;
    if let Node::Timer(_) = f.node {
        return timerfd::read(k, fd, buf, len);
    }
    let n = read_node(k, f.node, f.offset, buf, len)?;
    if matches!(f.node, Node::File { .. } | Node::Dev(Special::Maps)) {
        k.files.get_mut(fd)?.offset = f.offset + n;
    }
    Ok(n)
}

pub fn write(k: &mut Kernel, fd: u64, buf: u64, len: u64) -> SysResult {
    let f = open_for(k, fd, false)?;
    write_node(k, f.node, buf, len)
}

fn seekable(node: Node) -> Result<(), u64> {
    match node {
        Node::Console(_) | Node::Timer(_) => Err(ESPIPE),
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
    write_node(k, f.node, buf, len)
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
    if at.is_none() && matches!(f.node, Node::File { .. } | Node::Dev(Special::Maps)) {
        k.files.get_mut(fd)?.offset = offset;
    }
    Ok(total)
}

/// readv of a timerfd: its 8-byte count spread over the iovecs, which together must
/// hold it (Linux reads a timerfd through `read_iter`).
fn readv_timer(k: &mut Kernel, fd: u64, iov: u64, cnt: u64) -> SysResult {
    let mut total = 0u64;
    for i in 0..cnt {
        total = total.saturating_add(iovec(k, iov, i)?.1);
    }
    if total < timerfd::TICKS_SIZE {
        return Err(EINVAL);
    }
    let bytes = timerfd::wait_ticks(k, fd)?.to_le_bytes();
    let mut done = 0usize;
    for i in 0..cnt {
        if done == bytes.len() {
            break;
        }
        let (base, len) = iovec(k, iov, i)?;
        let n = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(bytes.len() - done);
        k.copy_to_user(base, &bytes[done..done + n])
            .map_err(mem_err)?;
        done += n;
    }
    Ok(timerfd::TICKS_SIZE)
}

/// writev: to the console, the iovecs are gathered into the hostcall area and sent
/// in as few hostcalls as fit.
pub fn writev(k: &mut Kernel, fd: u64, iov: u64, cnt: u64) -> SysResult {
    if cnt > IOV_MAX {
        return Err(EINVAL);
    }
    let f = open_for(k, fd, false)?;
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
        Node::Console(_) => return Err(ESPIPE),
        // A timerfd's position stays 0 (Linux `noop_llseek`).
        Node::Dev(Special::Null | Special::Zero | Special::Urandom) | Node::Timer(_) => {
            return Ok(0)
        }
        Node::File { size, .. } => Some(size),
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

/// poll / ppoll (`timeout_ns`: `None` waits without limit). Files and devices are
/// always ready; console output is always writable (a write blocks in the host if it
/// must); whether stdin has input is the host's to say, within the timeout; a timerfd
/// is readable once it has expired, so the wait ends at the earliest deadline of the
/// timers polled for reading.
pub fn poll(k: &mut Kernel, fds: u64, nfds: u64, timeout_ns: Option<i64>) -> SysResult {
    if nfds > crate::fs::MAX_FDS as u64 {
        return Err(EINVAL);
    }
    let timeout_ns = timeout_ns.filter(|t| *t >= 0);
    // Pass 1: what is ready without asking the host, whether stdin is asked for, and
    // the first timer deadline to wait for.
    let mut ready = 0u64;
    let mut want_stdin = false;
    let mut next_timer: Option<u64> = None;
    for i in 0..nfds {
        let (fd, events) = pollfd(k, fds, i)?;
        let node = fd_node(k, fd);
        let now_ready = revents(k, node, events, false) != 0;
        match node {
            Some(Ok(Node::Console(0))) => {
                want_stdin |= events & (POLL_READABLE | POLLPRI) != 0;
            }
            Some(Ok(Node::Timer(t))) if !now_ready && events & POLL_READABLE != 0 => {
                if let Some(d) = t.deadline() {
                    next_timer = Some(next_timer.map_or(d, |n| n.min(d)));
                }
            }
            _ => {}
        }
        ready += u64::from(now_ready);
    }
    // Nothing ready: wait until the timeout or the first timer deadline, whichever
    // comes first (CLOCK_MONOTONIC), or for stdin.
    let wake = if ready > 0 {
        None
    } else {
        let timeout = timeout_ns.map(|t| k.monotonic_ns().saturating_add(t as u64));
        timeout.into_iter().chain(next_timer).min()
    };
    let mut stdin_ready = false;
    if want_stdin {
        let wait = match (ready, wake) {
            (1.., _) => 0,
            (0, Some(deadline)) => deadline.saturating_sub(k.monotonic_ns()),
            (0, None) => POLL_FOREVER,
        };
        let req = HostcallHeader {
            op: HostcallOp::Poll as u32,
            arg: POLL_STDIN_READABLE,
            arg2: wait,
            ..Default::default()
        };
        stdin_ready = hostcall_io(k, req)? & POLL_STDIN_READABLE != 0;
    }
    if ready == 0 && !stdin_ready {
        match wake {
            // Also where the host's poll came back early: the firmware's clock says
            // when the wait is over.
            Some(deadline) => {
                if super::signal::wait(k, Some(deadline)) == super::signal::Wake::Signal {
                    return Err(super::signal::ERESTARTNOHAND);
                }
            }
            None if want_stdin => {}
            None => {
                let _ = k.console_write(
                    2,
                    b"nacre: the app polls with no limit for events that cannot happen; stopping it\n",
                );
                super::exit_app(k, 128 + 9);
            }
        }
    }
    // Pass 2: write revents back.
    let mut count = 0u64;
    for i in 0..nfds {
        let (fd, events) = pollfd(k, fds, i)?;
        let node = fd_node(k, fd);
        let revents = revents(k, node, events, stdin_ready);
        k.copy_to_user(fds + i * 8 + 6, &revents.to_le_bytes())
            .map_err(mem_err)?;
        count += u64::from(revents != 0);
    }
    Ok(count)
}

/// Poll events (`include/uapi/asm-generic/poll.h`).
const POLLIN: u16 = 0x001;
const POLLPRI: u16 = 0x002;
const POLLOUT: u16 = 0x004;
const POLLNVAL: u16 = 0x020;
const POLLRDNORM: u16 = 0x040;
const POLLWRNORM: u16 = 0x100;
const POLL_READABLE: u16 = POLLIN | POLLRDNORM;
const POLL_WRITABLE: u16 = POLLOUT | POLLWRNORM;

/// The events of `events` that a polled descriptor's `node` has now (`stdin_ready`:
/// what the host said of stdin).
fn revents(k: &mut Kernel, node: Option<Result<Node, u64>>, events: u16, stdin_ready: bool) -> u16 {
    match node {
        None => 0,
        Some(Err(_)) => POLLNVAL,
        Some(Ok(Node::Console(0))) if stdin_ready => events & POLL_READABLE,
        Some(Ok(Node::Console(0))) => 0,
        Some(Ok(Node::Console(_))) => events & POLL_WRITABLE,
        Some(Ok(Node::Timer(t))) if events & POLL_READABLE != 0 => {
            if t.expired_at(k.monotonic_ns()) {
                events & POLL_READABLE
            } else {
                0
            }
        }
        Some(Ok(Node::Timer(_))) => 0,
        Some(Ok(_)) => events & (POLL_READABLE | POLL_WRITABLE),
    }
}

fn pollfd(k: &mut Kernel, fds: u64, i: u64) -> Result<(i32, u16), u64> {
    let mut p = [0u8; 8];
    k.copy_from_user(&mut p, fds + i * 8).map_err(mem_err)?;
    Ok((
        i32::from_le_bytes([p[0], p[1], p[2], p[3]]),
        u16::from_le_bytes([p[4], p[5]]),
    ))
}

/// The node of a polled fd: `None` for a negative fd (ignored), `Err` for a bad one.
fn fd_node(k: &Kernel, fd: i32) -> Option<Result<Node, u64>> {
    let fd = u64::try_from(fd).ok()?;
    Some(k.files.get(fd).map(|f| f.node))
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
        Node::File { .. } | Node::Dir { .. } => Ok(0),
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
        } else if v.kind == VmaKind::Window && v.start == crate::mem::user::VVAR_VA {
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
