//! Sockets: TCP and UDP over IPv4 and IPv6, each the firmware's view of a real socket
//! the host owns (shared-abi `net.rs`, the Net hostcall).
//!
//! Every host socket is non-blocking. A call tries the host first; when the host says
//! `EAGAIN` the firmware asks it to watch the socket ([`NetOp::Arm`]) and, for a
//! blocking descriptor, sleeps on the socket's queue until the host reports readiness.
//! Reports arrive as an interrupt on [`NET_VECTOR`] or as a Sleep hostcall the host
//! ended early; either sets [`NET_PENDING`], and the next holder of the kernel takes
//! the queued events ([`take_events`]) and wakes the socket's queue and every poller.
//!
//! What the host says is input like any other: handles it gives are checked against
//! the firmware's own table (a handle already in use stops the guest: the host broke
//! the protocol), addresses are checked before they reach the app, lengths are
//! bounded by the request (shared-abi `reply_fits`), and a readiness that turns out
//! false costs one more try. The bytes a socket carries are the host's to see
//! (docs/threat-model.md).

use core::sync::atomic::{AtomicBool, Ordering};

use super::errno::*;
use super::io::Segments;
use super::poll::{
    self, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDHUP, EPOLLRDNORM, EPOLLWRNORM,
};
use super::signal::{self, SigInfo, SIGPIPE, SI_USER};
use super::{mem_err, SysResult};
use crate::fs::{Node, O_CLOEXEC, O_NONBLOCK, O_RDWR};
use crate::kernel::Kernel;
use nacre_shared_abi::hostcall::{HostcallHeader, HostcallOp, HOSTCALL_MAX_DATA};
use nacre_shared_abi::net::{
    socket_arg2, NetAddr, NetEvent, NetOp, AF_INET, AF_INET6, EV_ALL, EV_ERR, EV_HUP, EV_IN,
    EV_OUT, EV_PRI, EV_RDHUP, IPPROTO_TCP, IPPROTO_UDP, MAX_SOCKETS, MSG_MORE, MSG_OOB, MSG_PEEK,
    MSG_TRUNC, NET_ADDR_SIZE, SOCK_DGRAM, SOCK_STREAM,
};
use zerocopy::{FromBytes, IntoBytes};

/// Socket errnos (`include/uapi/asm-generic/errno.h`).
pub const ENOTSOCK: u64 = 88;
pub const EDESTADDRREQ: u64 = 89;
pub const EMSGSIZE: u64 = 90;
pub const EPROTOTYPE: u64 = 91;
pub const ENOPROTOOPT: u64 = 92;
pub const EPROTONOSUPPORT: u64 = 93;
pub const ESOCKTNOSUPPORT: u64 = 94;
pub const EOPNOTSUPP: u64 = 95;
pub const EAFNOSUPPORT: u64 = 97;
pub const ECONNREFUSED: u64 = 111;
pub const ENOTCONN: u64 = 107;
pub const EINPROGRESS: u64 = 115;

/// `socket` type flags (`include/linux/net.h`: SOCK_NONBLOCK is O_NONBLOCK,
/// SOCK_CLOEXEC is O_CLOEXEC).
const SOCK_NONBLOCK: u32 = O_NONBLOCK;
const SOCK_CLOEXEC: u32 = O_CLOEXEC;
const SOCK_TYPE_MASK: u32 = 0xF;
/// Other address families an app may ask for (`include/linux/socket.h`).
const AF_UNIX: u16 = 1;

/// `send`/`recv` flags the firmware handles itself (`include/linux/socket.h`).
const MSG_DONTWAIT: u64 = 0x40;
const MSG_WAITALL: u64 = 0x100;
const MSG_NOSIGNAL: u64 = 0x4000;
const MSG_CMSG_CLOEXEC: u64 = 0x4000_0000;

/// Socket option levels and the options the firmware answers itself
/// (`include/uapi/asm-generic/socket.h`).
const SOL_SOCKET: u32 = 1;
const SO_TYPE: u32 = 3;
const SO_RCVTIMEO: u32 = 20;
const SO_SNDTIMEO: u32 = 21;
const SO_ACCEPTCONN: u32 = 30;
const SO_PROTOCOL: u32 = 38;
const SO_DOMAIN: u32 = 39;
const SO_ERROR: u32 = 4;
/// Largest option value that crosses to the host.
const MAX_OPTION: usize = nacre_shared_abi::net::MAX_OPTION as usize;

/// `struct sockaddr_in` and `struct sockaddr_in6` sizes (`include/uapi/linux/in.h`,
/// `in6.h`); a `sockaddr_in6` without its scope id is 24 bytes long (`SIN6_LEN_RFC2133`).
const SOCKADDR_IN: usize = 16;
const SOCKADDR_IN6: usize = 28;
const SIN6_LEN_RFC2133: usize = 24;

/// What an `EAGAIN` or `EINPROGRESS` shows a socket does not have now: an error or a
/// hang-up to report (a real one would have been the answer). Forgetting them keeps a
/// report the host made up from ending every later wait at once.
const NOT_NOW: u32 = EV_ERR | EV_HUP | EV_RDHUP;

/// Set when the host has queued readiness events the firmware has not taken yet.
pub static NET_PENDING: AtomicBool = AtomicBool::new(false);

/// The firmware's record of one host socket.
#[derive(Debug, Clone, Copy)]
pub struct Sock {
    used: bool,
    domain: u16,
    kind: u32,
    protocol: u32,
    /// What the socket was last known ready for ([`EV_ALL`] bits): set by the host's
    /// events, cleared by an `EAGAIN`.
    ready: u32,
    /// What the host watches it for (nothing once it reported: one shot).
    armed: u32,
    listening: bool,
    /// The open file that refers to it, for the edges of the epoll items watching it.
    file: u16,
    /// SO_RCVTIMEO and SO_SNDTIMEO, in ns (0: none).
    rcvtimeo: u64,
    sndtimeo: u64,
}

const FREE: Sock = Sock {
    used: false,
    domain: 0,
    kind: 0,
    protocol: 0,
    ready: 0,
    armed: 0,
    listening: false,
    file: 0,
    rcvtimeo: 0,
    sndtimeo: 0,
};

/// Every socket, by the host's handle.
#[derive(Debug)]
pub struct Sockets {
    socks: [Sock; MAX_SOCKETS as usize],
    /// How many sockets the host watches: while some are, the host can end a wait.
    armed: u32,
}

impl Default for Sockets {
    fn default() -> Self {
        Self::new()
    }
}

impl Sockets {
    /// None open.
    pub const fn new() -> Self {
        Self {
            socks: [FREE; MAX_SOCKETS as usize],
            armed: 0,
        }
    }

    /// Whether the host watches any socket (so that it may end a wait).
    pub fn any_armed(&self) -> bool {
        self.armed > 0
    }

    fn get(&self, handle: u16) -> &Sock {
        &self.socks[usize::from(handle)]
    }

    fn get_mut(&mut self, handle: u16) -> &mut Sock {
        &mut self.socks[usize::from(handle)]
    }

    /// Record what the host watches `handle` for now.
    fn set_armed(&mut self, handle: u16, events: u32) {
        let s = &mut self.socks[usize::from(handle)];
        match (s.armed != 0, events != 0) {
            (false, true) => self.armed += 1,
            (true, false) => self.armed -= 1,
            _ => {}
        }
        s.armed = events;
    }
}

/// The wait queue of socket `handle`.
fn socket_key(handle: u16) -> u64 {
    poll::object_key(poll::KeyClass::Socket, u64::from(handle))
}

/// A Net hostcall: the result or the host's errno; a malformed reply stops the guest.
fn net(k: &mut Kernel, op: NetOp, handle: u16, len: u64, arg2: u64) -> Result<u64, u64> {
    let req = HostcallHeader {
        op: HostcallOp::Net as u32,
        fd: u32::from(handle),
        len,
        arg: op as u64,
        arg2,
        ..Default::default()
    };
    super::io::hostcall_io(k, req)
}

/// A handle the host gave for a new socket: one the firmware does not use, or the
/// host broke the protocol.
fn new_handle(k: &Kernel, result: u64) -> u16 {
    match u16::try_from(result) {
        Ok(h) if result < u64::from(MAX_SOCKETS) && !k.net.get(h).used => h,
        _ => crate::fatal_error(crate::error::FwError::Hostcall),
    }
}

/// The reply's address at the start of the data area, checked.
fn reply_addr(k: &Kernel, none_ok: bool) -> NetAddr {
    let mut raw = [0u8; NET_ADDR_SIZE as usize];
    let addr =
        k.io.get(0, &mut raw)
            .ok()
            .and_then(|()| NetAddr::read_from_bytes(&raw).ok());
    match addr {
        Some(a) if a.check(none_ok).is_ok() => a,
        _ => crate::fatal_error(crate::error::FwError::Hostcall),
    }
}

fn put_addr(k: &mut Kernel, addr: &NetAddr) -> Result<(), u64> {
    k.io.put(0, addr.as_bytes()).map_err(|_| EIO)
}

/// The socket behind `fd`: its open file's index and handle.
fn socket_of(k: &Kernel, fd: u64) -> Result<(usize, u16), u64> {
    let index = k.files.index(fd)?;
    match k.files.file(index).node {
        Node::Socket(h) => Ok((index, h)),
        _ => Err(ENOTSOCK),
    }
}

fn nonblocking(k: &Kernel, index: usize) -> bool {
    k.files.file(index).flags & O_NONBLOCK != 0
}

/// Ask the host to watch `handle` for `events` too.
fn arm(k: &mut Kernel, handle: u16, events: u32) {
    let s = k.net.get(handle);
    let want = (s.armed | events) & EV_ALL;
    if want == s.armed {
        return;
    }
    match net(k, NetOp::Arm, handle, 0, u64::from(want)) {
        Ok(_) => k.net.set_armed(handle, want),
        // The host will not watch it: say it is ready, so that waiters try again.
        Err(_) => k.net.get_mut(handle).ready |= events,
    }
}

/// Wait until the host reports `events` on `handle`, `deadline` or a signal:
/// ERESTARTSYS for a signal, EAGAIN at the deadline.
fn wait_for(k: &mut Kernel, handle: u16, events: u32, deadline: u64) -> Result<(), u64> {
    arm(k, handle, events);
    signal::fire_alarm(k);
    if k.sig.deliverable() {
        return Err(signal::ERESTARTSYS);
    }
    if k.net.get(handle).ready & (events | EV_ERR | EV_HUP) != 0 {
        return Ok(());
    }
    match crate::sched::wait_on(k, socket_key(handle), deadline) {
        crate::sched::threads::Wake::TimedOut if k.monotonic_ns() >= deadline => Err(EAGAIN),
        _ => Ok(()),
    }
}

/// The deadline of a timeout of `ns` (0: none).
fn deadline_of(k: &mut Kernel, ns: u64) -> u64 {
    if ns == 0 {
        u64::MAX
    } else {
        k.monotonic_ns().saturating_add(ns)
    }
}

/// Take the events the host queued: record each socket's readiness, wake its queue and
/// mark the edges of the epoll items watching it, then wake every poller.
pub fn take_events(k: &mut Kernel) {
    /// Events taken per hostcall.
    const BATCH: usize = 64;
    if !NET_PENDING.swap(false, Ordering::AcqRel) {
        return;
    }
    let mut woke = false;
    while let Ok(n) = net(k, NetOp::Events, 0, (BATCH * 8) as u64, 0) {
        let mut raw = [0u8; BATCH * 8];
        let n = (n as usize).min(raw.len());
        if k.io.get(0, &mut raw[..n]).is_err() {
            break;
        }
        for e in raw[..n].chunks_exact(8) {
            let Ok(e) = NetEvent::read_from_bytes(e) else {
                continue;
            };
            let Ok(h) = u16::try_from(e.handle) else {
                continue;
            };
            if e.handle >= MAX_SOCKETS || !k.net.get(h).used {
                // A socket closed meanwhile, or a handle the host made up.
                continue;
            }
            // Only what the firmware asked the host to watch for (errors and hang-ups
            // always): a report for a socket it does not watch (a closed one whose
            // handle was given again, or a lie) changes nothing.
            let armed = k.net.get(h).armed;
            if armed == 0 {
                continue;
            }
            let events = e.events & (armed | EV_ERR | EV_HUP);
            k.net.get_mut(h).ready |= events;
            k.net.set_armed(h, 0);
            crate::sched::wake_all(k, socket_key(h));
            let file = usize::from(k.net.get(h).file);
            super::epoll::mark_edge(k, file, poll_bits(events));
            woke = true;
        }
        if n < BATCH * 8 {
            break;
        }
    }
    if woke {
        crate::sched::wake_all(k, poll::readiness_key());
    }
}

/// The poll bits of readiness bits.
fn poll_bits(ev: u32) -> u32 {
    let mut bits = ev & (EPOLLERR | EPOLLHUP | EPOLLPRI | EPOLLRDHUP);
    if ev & EV_IN != 0 {
        bits |= EPOLLIN | EPOLLRDNORM;
    }
    if ev & EV_OUT != 0 {
        bits |= EPOLLOUT | EPOLLWRNORM;
    }
    bits
}

/// What socket `handle` is ready for, as poll bits.
pub fn ready(k: &Kernel, handle: u16) -> u32 {
    poll_bits(k.net.get(handle).ready)
}

/// A poller waits for `events` (poll bits) on socket `handle`: have the host watch it
/// for those the socket is not known to have already. (An edge-triggered epoll item
/// that reported a writable socket waits for its next edge; asking the host about
/// what the socket has now would answer at once, and again after every wait: a
/// stream of edges that are not new.)
pub fn watch(k: &mut Kernel, handle: u16, events: u32) {
    let mut ev = events & (EV_PRI | EV_RDHUP);
    if events & (EPOLLIN | EPOLLRDNORM) != 0 {
        ev |= EV_IN;
    }
    if events & (EPOLLOUT | EPOLLWRNORM) != 0 {
        ev |= EV_OUT;
    }
    let ev = ev & !k.net.get(handle).ready;
    if ev != 0 {
        arm(k, handle, ev);
    }
}

/// The last reference to socket `handle`'s open file went: close the host's socket.
pub fn close(k: &mut Kernel, handle: u16) {
    if k.net.get(handle).used {
        let _ = net(k, NetOp::Close, handle, 0, 0);
        k.net.set_armed(handle, 0);
        *k.net.get_mut(handle) = FREE;
        crate::sched::wake_all(k, socket_key(handle));
    }
}

/// Record a new socket of the host's and give it a descriptor.
fn install(
    k: &mut Kernel,
    handle: u16,
    (domain, kind, protocol): (u16, u32, u32),
    flags: u32,
    ready: u32,
) -> SysResult {
    let fd = match k.files.open(
        Node::Socket(handle),
        O_RDWR | (flags & (O_NONBLOCK | O_CLOEXEC)),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = net(k, NetOp::Close, handle, 0, 0);
            return Err(e);
        }
    };
    let file = k.files.index(fd).map_or(0, |i| i as u16);
    *k.net.get_mut(handle) = Sock {
        used: true,
        domain,
        kind,
        protocol,
        ready,
        file,
        ..FREE
    };
    Ok(fd)
}

/// socket(2).
pub fn socket(k: &mut Kernel, domain: u64, kind: u64, protocol: u64) -> SysResult {
    let domain = u16::try_from(domain).map_err(|_| EAFNOSUPPORT)?;
    let kind = u32::try_from(kind).map_err(|_| EINVAL)?;
    let flags = kind & !SOCK_TYPE_MASK;
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let base = kind & SOCK_TYPE_MASK;
    let protocol = u32::try_from(protocol).map_err(|_| EPROTONOSUPPORT)?;
    match domain {
        AF_INET | AF_INET6 => {}
        // Unix-domain sockets are not there yet.
        AF_UNIX => return Err(EAFNOSUPPORT),
        _ => return Err(EAFNOSUPPORT),
    }
    let protocol = match (base, protocol) {
        (SOCK_STREAM, 0 | IPPROTO_TCP) => IPPROTO_TCP,
        (SOCK_DGRAM, 0 | IPPROTO_UDP) => IPPROTO_UDP,
        (SOCK_STREAM | SOCK_DGRAM, _) => return Err(EPROTONOSUPPORT),
        _ => return Err(ESOCKTNOSUPPORT),
    };
    let r = net(k, NetOp::Socket, 0, 0, socket_arg2(domain, base, protocol))?;
    let handle = new_handle(k, r);
    // A new socket can be written to at once (an unconnected TCP socket says EPIPE).
    install(k, handle, (domain, base, protocol), flags, EV_OUT)
}

/// The app's `sockaddr` at `va` (`len` bytes) as a [`NetAddr`] for a socket of
/// `domain`.
fn read_sockaddr(k: &mut Kernel, domain: u16, va: u64, len: u64) -> Result<NetAddr, u64> {
    let len = usize::try_from(len).map_err(|_| EINVAL)?;
    if len < 2 {
        return Err(EINVAL);
    }
    let mut raw = [0u8; SOCKADDR_IN6];
    let n = len.min(SOCKADDR_IN6);
    k.copy_from_user(&mut raw[..n], va).map_err(mem_err)?;
    let family = u16::from_le_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    match (domain, family) {
        (AF_INET, AF_INET) if len >= SOCKADDR_IN => {
            Ok(NetAddr::v4([raw[4], raw[5], raw[6], raw[7]], port))
        }
        (AF_INET6, AF_INET6) if len >= SIN6_LEN_RFC2133 => {
            let flow = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&raw[8..24]);
            let scope = if len >= SOCKADDR_IN6 {
                u32::from_ne_bytes([raw[24], raw[25], raw[26], raw[27]])
            } else {
                0
            };
            Ok(NetAddr::v6(ip, port, flow, scope))
        }
        (AF_INET, AF_INET) | (AF_INET6, AF_INET6) => Err(EINVAL),
        (AF_INET, _) => Err(EAFNOSUPPORT),
        _ => Err(EINVAL),
    }
}

/// Write `addr` as a `sockaddr` to the app's `va`, whose room `*lenp` says; `*lenp`
/// becomes the address's full size (Linux `move_addr_to_user`).
fn write_sockaddr(k: &mut Kernel, addr: &NetAddr, va: u64, lenp: u64) -> Result<(), u64> {
    if va == 0 || lenp == 0 {
        return Ok(());
    }
    let mut l = [0u8; 4];
    k.copy_from_user(&mut l, lenp).map_err(mem_err)?;
    let room = i32::from_le_bytes(l);
    if room < 0 {
        return Err(EINVAL);
    }
    let mut raw = [0u8; SOCKADDR_IN6];
    let size = match addr.family {
        AF_INET => {
            raw[..2].copy_from_slice(&AF_INET.to_le_bytes());
            raw[2..4].copy_from_slice(&addr.port.to_be_bytes());
            raw[4..8].copy_from_slice(&addr.addr[..4]);
            SOCKADDR_IN
        }
        AF_INET6 => {
            raw[..2].copy_from_slice(&AF_INET6.to_le_bytes());
            raw[2..4].copy_from_slice(&addr.port.to_be_bytes());
            raw[4..8].copy_from_slice(&addr.flowinfo.to_be_bytes());
            raw[8..24].copy_from_slice(&addr.addr);
            raw[24..28].copy_from_slice(&addr.scope_id.to_ne_bytes());
            SOCKADDR_IN6
        }
        // No address: only the length says so.
        _ => 0,
    };
    let n = size.min(room as usize);
    if n > 0 {
        k.copy_to_user(va, &raw[..n]).map_err(mem_err)?;
    }
    k.copy_to_user(lenp, &(size as u32).to_le_bytes())
        .map_err(mem_err)
}

/// bind(2).
pub fn bind(k: &mut Kernel, fd: u64, addr: u64, len: u64) -> SysResult {
    let (_, h) = socket_of(k, fd)?;
    let a = read_sockaddr(k, k.net.get(h).domain, addr, len)?;
    put_addr(k, &a)?;
    net(k, NetOp::Bind, h, NET_ADDR_SIZE, 0)
}

/// listen(2).
pub fn listen(k: &mut Kernel, fd: u64, backlog: u64) -> SysResult {
    let (_, h) = socket_of(k, fd)?;
    if k.net.get(h).kind != SOCK_STREAM {
        return Err(EOPNOTSUPP);
    }
    // An int; Linux caps it at somaxconn.
    let backlog = (backlog as u32 as i32).clamp(0, 4096) as u64;
    net(k, NetOp::Listen, h, 0, backlog)?;
    let s = k.net.get_mut(h);
    s.listening = true;
    s.ready &= !EV_OUT;
    Ok(0)
}

/// accept4(2) (accept: `flags` 0).
pub fn accept4(k: &mut Kernel, fd: u64, addr: u64, lenp: u64, flags: u64) -> SysResult {
    let flags = u32::try_from(flags).map_err(|_| EINVAL)?;
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let index = k.files.hold(fd).map_err(|_| EBADF)?;
    let r = accept_held(k, index, addr, lenp, flags);
    let released = k.files.unhold(index);
    super::fs::let_go(k, released);
    r
}

fn accept_held(k: &mut Kernel, index: usize, addr: u64, lenp: u64, flags: u32) -> SysResult {
    let Node::Socket(h) = k.files.file(index).node else {
        return Err(ENOTSOCK);
    };
    if !k.net.get(h).listening {
        return Err(EINVAL);
    }
    let deadline = deadline_of(k, k.net.get(h).rcvtimeo);
    loop {
        match net(k, NetOp::Accept, h, NET_ADDR_SIZE, 0) {
            Ok(r) => {
                let new = new_handle(k, r);
                let peer = reply_addr(k, false);
                // Whether more connections wait is not known: a poller asks the host.
                k.net.get_mut(h).ready &= !EV_IN;
                let s = *k.net.get(h);
                let fd = install(k, new, (s.domain, s.kind, s.protocol), flags, EV_OUT)?;
                if let Err(e) = write_sockaddr(k, &peer, addr, lenp) {
                    // Linux keeps the connection and fails the call; the descriptor
                    // goes, as it would with the process.
                    let released = k.files.close(fd).ok().flatten();
                    super::fs::let_go(k, released);
                    return Err(e);
                }
                return Ok(fd);
            }
            Err(EAGAIN) => {
                k.net.get_mut(h).ready &= !(EV_IN | NOT_NOW);
                if nonblocking(k, index) {
                    arm(k, h, EV_IN);
                    return Err(EAGAIN);
                }
                wait_for(k, h, EV_IN, deadline)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// connect(2).
pub fn connect(k: &mut Kernel, fd: u64, addr: u64, len: u64) -> SysResult {
    let index = k.files.hold(fd).map_err(|_| EBADF)?;
    let r = connect_held(k, index, addr, len);
    let released = k.files.unhold(index);
    super::fs::let_go(k, released);
    r
}

fn connect_held(k: &mut Kernel, index: usize, addr: u64, len: u64) -> SysResult {
    let Node::Socket(h) = k.files.file(index).node else {
        return Err(ENOTSOCK);
    };
    let a = read_sockaddr(k, k.net.get(h).domain, addr, len)?;
    put_addr(k, &a)?;
    match net(k, NetOp::Connect, h, NET_ADDR_SIZE, 0) {
        Ok(_) => {
            k.net.get_mut(h).ready |= EV_OUT;
            Ok(0)
        }
        Err(EINPROGRESS) => {
            k.net.get_mut(h).ready &= !(EV_OUT | NOT_NOW);
            if nonblocking(k, index) {
                arm(k, h, EV_OUT);
                return Err(EINPROGRESS);
            }
            let deadline = deadline_of(k, k.net.get(h).sndtimeo);
            loop {
                while k.net.get(h).ready & (EV_OUT | EV_ERR | EV_HUP) == 0 {
                    match wait_for(k, h, EV_OUT, deadline) {
                        Ok(()) => {}
                        // Linux: the connection goes on in the background.
                        Err(EAGAIN) => return Err(EINPROGRESS),
                        Err(e) => return Err(e),
                    }
                }
                match socket_error(k, h)? {
                    0 => {}
                    e => return Err(e),
                }
                // Connected, unless the report was not true: then wait on.
                match net(k, NetOp::PeerName, h, NET_ADDR_SIZE, 0) {
                    Err(ENOTCONN) => k.net.get_mut(h).ready &= !(EV_OUT | NOT_NOW),
                    _ => return Ok(0),
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// The socket's pending error (SO_ERROR), from the host.
fn socket_error(k: &mut Kernel, h: u16) -> Result<u64, u64> {
    let n = net(
        k,
        NetOp::GetOpt,
        h,
        4,
        (u64::from(SOL_SOCKET) << 32) | u64::from(SO_ERROR),
    )?;
    let mut v = [0u8; 4];
    if n == 4 {
        k.io.get(0, &mut v).map_err(|_| EIO)?;
    }
    Ok(u64::from(i32::from_le_bytes(v).unsigned_abs()).min(4095))
}

/// shutdown(2).
pub fn shutdown(k: &mut Kernel, fd: u64, how: u64) -> SysResult {
    let (_, h) = socket_of(k, fd)?;
    if how > 2 {
        return Err(EINVAL);
    }
    net(k, NetOp::Shutdown, h, 0, how)
}

/// getsockname(2) and getpeername(2).
pub fn name(k: &mut Kernel, fd: u64, addr: u64, lenp: u64, peer: bool) -> SysResult {
    let (_, h) = socket_of(k, fd)?;
    let op = if peer {
        NetOp::PeerName
    } else {
        NetOp::SockName
    };
    net(k, op, h, NET_ADDR_SIZE, 0)?;
    let a = reply_addr(k, !peer);
    write_sockaddr(k, &a, addr, lenp)?;
    Ok(0)
}

/// A `struct timeval` option value as ns (0: none).
fn timeval_ns(raw: &[u8]) -> Result<u64, u64> {
    if raw.len() < 16 {
        return Err(EINVAL);
    }
    let sec = i64::from_le_bytes(raw[..8].try_into().map_err(|_| EINVAL)?);
    let usec = i64::from_le_bytes(raw[8..16].try_into().map_err(|_| EINVAL)?);
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(EDOM);
    }
    Ok((sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(usec as u64 * 1000))
}

/// Linux answers an out-of-range timeout with EDOM (`sock_set_timeout`,
/// `include/uapi/asm-generic/errno-base.h`).
const EDOM: u64 = 33;

/// setsockopt(2).
pub fn setsockopt(k: &mut Kernel, fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    let (_, h) = socket_of(k, fd)?;
    let (level, name) = (level as u32, name as u32);
    let len = usize::try_from(len as u32 as i32).map_err(|_| EINVAL)?;
    let mut raw = [0u8; MAX_OPTION];
    if len > MAX_OPTION {
        return Err(EINVAL);
    }
    k.copy_from_user(&mut raw[..len], val).map_err(mem_err)?;
    if level == SOL_SOCKET && matches!(name, SO_RCVTIMEO | SO_SNDTIMEO) {
        let ns = timeval_ns(&raw[..len])?;
        let s = k.net.get_mut(h);
        if name == SO_RCVTIMEO {
            s.rcvtimeo = ns;
        } else {
            s.sndtimeo = ns;
        }
        return Ok(0);
    }
    k.io.put(0, &raw[..len]).map_err(|_| EIO)?;
    net(
        k,
        NetOp::SetOpt,
        h,
        len as u64,
        (u64::from(level) << 32) | u64::from(name),
    )
}

/// getsockopt(2).
pub fn getsockopt(
    k: &mut Kernel,
    fd: u64,
    level: u64,
    name: u64,
    val: u64,
    lenp: u64,
) -> SysResult {
    let (_, h) = socket_of(k, fd)?;
    let (level, name) = (level as u32, name as u32);
    let mut l = [0u8; 4];
    k.copy_from_user(&mut l, lenp).map_err(mem_err)?;
    let room = usize::try_from(i32::from_le_bytes(l)).map_err(|_| EINVAL)?;
    let s = *k.net.get(h);
    let mut local = [0u8; 16];
    let answer: Option<usize> = if level == SOL_SOCKET {
        let int = |v: u32, out: &mut [u8; 16]| {
            out[..4].copy_from_slice(&v.to_le_bytes());
            4
        };
        match name {
            SO_TYPE => Some(int(s.kind, &mut local)),
            SO_DOMAIN => Some(int(u32::from(s.domain), &mut local)),
            SO_PROTOCOL => Some(int(s.protocol, &mut local)),
            SO_ACCEPTCONN => Some(int(u32::from(s.listening), &mut local)),
            SO_RCVTIMEO | SO_SNDTIMEO => {
                let ns = if name == SO_RCVTIMEO {
                    s.rcvtimeo
                } else {
                    s.sndtimeo
                };
                local[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
                local[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
                Some(16)
            }
            _ => None,
        }
    } else {
        None
    };
    let (bytes, size) = match answer {
        Some(n) => (local, n),
        None => {
            let cap = room.min(MAX_OPTION);
            let n = net(
                k,
                NetOp::GetOpt,
                h,
                cap as u64,
                (u64::from(level) << 32) | u64::from(name),
            )? as usize;
            let mut raw = [0u8; MAX_OPTION];
            k.io.get(0, &mut raw[..n]).map_err(|_| EIO)?;
            let n = n.min(cap);
            k.copy_to_user(val, &raw[..n]).map_err(mem_err)?;
            k.copy_to_user(lenp, &(n as u32).to_le_bytes())
                .map_err(mem_err)?;
            return Ok(0);
        }
    };
    let n = size.min(room);
    k.copy_to_user(val, &bytes[..n]).map_err(mem_err)?;
    k.copy_to_user(lenp, &(n as u32).to_le_bytes())
        .map_err(mem_err)?;
    Ok(0)
}

/// Send the bytes of `from` on the socket of open file `index` (held by the caller),
/// to `dest` if given: what send, sendto, sendmsg, write and writev do.
pub fn send(
    k: &mut Kernel,
    index: usize,
    mut from: Segments,
    flags: u64,
    dest: Option<NetAddr>,
) -> SysResult {
    let Node::Socket(h) = k.files.file(index).node else {
        return Err(ENOTSOCK);
    };
    let total = from.total(k)?;
    let s = *k.net.get(h);
    let room = HOSTCALL_MAX_DATA - NET_ADDR_SIZE;
    if s.kind == SOCK_DGRAM && total > room {
        return Err(EMSGSIZE);
    }
    let nonblock = nonblocking(k, index) || flags & MSG_DONTWAIT != 0;
    let host_flags = flags & (MSG_OOB | MSG_MORE);
    let deadline = deadline_of(k, s.sndtimeo);
    let mut done = 0u64;
    loop {
        let chunk = (total - done).min(room);
        put_addr(k, &dest.unwrap_or(NetAddr::NONE))?;
        // Gather the chunk into the data area after the address.
        let mut gather = from;
        let mut at = 0u64;
        while at < chunk {
            let Some((va, n)) = gather.peek(k, chunk - at)? else {
                break;
            };
            let dst = k.io.data_va() + NET_ADDR_SIZE + at;
            if let Err(e) = k.user_to_window(dst, va, n) {
                if done > 0 {
                    return Ok(done);
                }
                return Err(mem_err(e));
            }
            gather.advance(n);
            at += n;
        }
        match net(k, NetOp::Send, h, NET_ADDR_SIZE + at, host_flags) {
            Ok(w) => {
                advance(k, &mut from, w)?;
                done += w;
                if done >= total || s.kind == SOCK_DGRAM {
                    return Ok(done);
                }
                if w < at {
                    // The socket's buffer is full: it is not writable now.
                    k.net.get_mut(h).ready &= !EV_OUT;
                }
            }
            Err(EAGAIN) => {
                k.net.get_mut(h).ready &= !(EV_OUT | NOT_NOW);
                if nonblock {
                    arm(k, h, EV_OUT);
                    return if done > 0 { Ok(done) } else { Err(EAGAIN) };
                }
                match wait_for(k, h, EV_OUT, deadline) {
                    Ok(()) => {}
                    Err(e) if done == 0 => return Err(e),
                    Err(_) => return Ok(done),
                }
            }
            Err(EPIPE) => {
                if flags & MSG_NOSIGNAL == 0 {
                    signal::send_to_process(k, SIGPIPE, SigInfo::user(SI_USER));
                }
                return if done > 0 { Ok(done) } else { Err(EPIPE) };
            }
            Err(e) => return if done > 0 { Ok(done) } else { Err(e) },
        }
        if nonblock && done > 0 {
            return Ok(done);
        }
    }
}

/// Move `from` past `n` bytes.
fn advance(k: &mut Kernel, from: &mut Segments, mut n: u64) -> Result<(), u64> {
    while n > 0 {
        let Some((_, len)) = from.peek(k, n)? else {
            break;
        };
        from.advance(len);
        n -= len;
    }
    Ok(())
}

/// Receive into `to` from the socket of open file `index` (held by the caller): what
/// recv, recvfrom, recvmsg, read and readv do. Returns the bytes (with `MSG_TRUNC`
/// on a datagram socket, the datagram's length) and where they came from.
pub fn recv(
    k: &mut Kernel,
    index: usize,
    mut to: Segments,
    flags: u64,
) -> Result<(u64, NetAddr), u64> {
    let Node::Socket(h) = k.files.file(index).node else {
        return Err(ENOTSOCK);
    };
    let total = to.total(k)?;
    let s = *k.net.get(h);
    let nonblock = nonblocking(k, index) || flags & MSG_DONTWAIT != 0;
    let waitall = flags & MSG_WAITALL != 0 && s.kind == SOCK_STREAM && flags & MSG_PEEK == 0;
    let host_flags = flags & (MSG_OOB | MSG_PEEK | MSG_TRUNC);
    let deadline = deadline_of(k, s.rcvtimeo);
    let room = HOSTCALL_MAX_DATA - NET_ADDR_SIZE;
    let mut done = 0u64;
    let mut from = NetAddr::NONE;
    loop {
        let want = (total - done).min(room);
        match net(k, NetOp::Recv, h, NET_ADDR_SIZE + want, host_flags) {
            Ok(n) => {
                from = reply_addr(k, true);
                let copied = n.min(want);
                let mut at = 0u64;
                while at < copied {
                    let Some((va, len)) = to.peek(k, copied - at)? else {
                        break;
                    };
                    let src = k.io.data_va() + NET_ADDR_SIZE + at;
                    if let Err(e) = k.window_to_user(va, src, len) {
                        return if done + at > 0 {
                            Ok((done + at, from))
                        } else {
                            Err(mem_err(e))
                        };
                    }
                    to.advance(len);
                    at += len;
                }
                if s.kind == SOCK_DGRAM {
                    return Ok((if flags & MSG_TRUNC != 0 { n } else { copied }, from));
                }
                done += copied;
                if n == 0 {
                    // The end of the stream: readable for good.
                    k.net.get_mut(h).ready |= EV_IN;
                    return Ok((done, from));
                }
                if copied < want {
                    // Short: the socket's buffer is probably empty now.
                    k.net.get_mut(h).ready &= !EV_IN;
                }
                if !waitall || done >= total {
                    return Ok((done, from));
                }
            }
            Err(EAGAIN) => {
                k.net.get_mut(h).ready &= !(EV_IN | NOT_NOW);
                if nonblock {
                    arm(k, h, EV_IN);
                    return if done > 0 {
                        Ok((done, from))
                    } else {
                        Err(EAGAIN)
                    };
                }
                match wait_for(k, h, EV_IN, deadline) {
                    Ok(()) => {}
                    Err(e) if done == 0 => return Err(e),
                    Err(_) => return Ok((done, from)),
                }
            }
            Err(e) => return if done > 0 { Ok((done, from)) } else { Err(e) },
        }
    }
}

/// Run `f` with the open file behind `fd` held (a blocking call keeps it, as Linux's
/// `fdget` does).
fn held<T>(
    k: &mut Kernel,
    fd: u64,
    f: impl FnOnce(&mut Kernel, usize) -> Result<T, u64>,
) -> Result<T, u64> {
    let index = k.files.hold(fd)?;
    let r = if matches!(k.files.file(index).node, Node::Socket(_)) {
        f(k, index)
    } else {
        Err(ENOTSOCK)
    };
    let released = k.files.unhold(index);
    super::fs::let_go(k, released);
    r
}

/// The destination of a sendto or sendmsg, if any.
fn destination(k: &mut Kernel, fd: u64, addr: u64, len: u64) -> Result<Option<NetAddr>, u64> {
    if addr == 0 {
        return Ok(None);
    }
    let (_, h) = socket_of(k, fd)?;
    if k.net.get(h).kind == SOCK_STREAM {
        // Linux ignores the address of a connected stream socket.
        return Ok(None);
    }
    read_sockaddr(k, k.net.get(h).domain, addr, len).map(Some)
}

/// sendto(2) (send: no address).
pub fn sendto(
    k: &mut Kernel,
    fd: u64,
    buf: u64,
    len: u64,
    flags: u64,
    addr: u64,
    alen: u64,
) -> SysResult {
    let dest = destination(k, fd, addr, alen)?;
    held(k, fd, |k, index| {
        send(k, index, Segments::one(buf, len), flags, dest)
    })
}

/// recvfrom(2) (recv: no address).
pub fn recvfrom(
    k: &mut Kernel,
    fd: u64,
    buf: u64,
    len: u64,
    flags: u64,
    addr: u64,
    lenp: u64,
) -> SysResult {
    let (n, from) = held(k, fd, |k, index| {
        recv(k, index, Segments::one(buf, len), flags)
    })?;
    if addr != 0 {
        write_sockaddr(k, &from, addr, lenp)?;
    }
    Ok(n)
}

/// `struct msghdr` on x86-64 (`include/linux/socket.h`): name, namelen, iov, iovlen,
/// control, controllen, flags.
struct MsgHdr {
    name: u64,
    namelen: u32,
    iov: u64,
    iovlen: u64,
    controllen: u64,
}

fn read_msghdr(k: &mut Kernel, msg: u64) -> Result<MsgHdr, u64> {
    let mut raw = [0u8; 56];
    k.copy_from_user(&mut raw, msg).map_err(mem_err)?;
    let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap_or([0; 8]));
    let h = MsgHdr {
        name: u64_at(0),
        namelen: u32::from_le_bytes(raw[8..12].try_into().unwrap_or([0; 4])),
        iov: u64_at(16),
        iovlen: u64_at(24),
        controllen: u64_at(40),
    };
    // UIO_MAXIOV (`include/uapi/linux/uio.h`).
    if h.iovlen > 1024 {
        return Err(EMSGSIZE);
    }
    Ok(h)
}

/// sendmsg(2): no ancillary data.
pub fn sendmsg(k: &mut Kernel, fd: u64, msg: u64, flags: u64) -> SysResult {
    let m = read_msghdr(k, msg)?;
    if m.controllen != 0 {
        return Err(EOPNOTSUPP);
    }
    let dest = destination(k, fd, m.name, u64::from(m.namelen))?;
    held(k, fd, |k, index| {
        send(k, index, Segments::vector(m.iov, m.iovlen), flags, dest)
    })
}

/// recvmsg(2): no ancillary data (`msg_controllen` becomes 0).
pub fn recvmsg(k: &mut Kernel, fd: u64, msg: u64, flags: u64) -> SysResult {
    let m = read_msghdr(k, msg)?;
    let flags = flags & !MSG_CMSG_CLOEXEC;
    let (n, from) = held(k, fd, |k, index| {
        recv(k, index, Segments::vector(m.iov, m.iovlen), flags)
    })?;
    if m.name != 0 {
        write_sockaddr(k, &from, m.name, msg + 8)?;
    }
    k.copy_to_user(msg + 40, &0u64.to_le_bytes())
        .map_err(mem_err)?;
    k.copy_to_user(msg + 48, &0u32.to_le_bytes())
        .map_err(mem_err)?;
    Ok(n)
}

/// Bytes of a `struct mmsghdr`: a `struct msghdr` (56 bytes), `msg_len` and padding.
const MMSGHDR_SIZE: u64 = 64;
/// Where `msg_len` lies in a `struct mmsghdr`.
const MMSG_LEN_OFFSET: u64 = 56;
/// The most messages one sendmmsg or recvmmsg takes (`UIO_MAXIOV`,
/// `include/uapi/linux/uio.h`); Linux caps `vlen` there.
const UIO_MAXIOV: u64 = 1024;
/// recvmmsg: wait for the first message only (`include/linux/socket.h`).
const MSG_WAITFORONE: u64 = 0x1_0000;

/// Write the byte count `n` of the message at `at` into its `msg_len`.
fn put_msg_len(k: &mut Kernel, at: u64, n: u64) -> Result<(), u64> {
    k.copy_to_user(at + MMSG_LEN_OFFSET, &(n as u32).to_le_bytes())
        .map_err(mem_err)
}

/// sendmmsg(2): sendmsg for each message in turn, its byte count in its `msg_len`;
/// the number sent, or the first message's error.
pub fn sendmmsg(k: &mut Kernel, fd: u64, vec: u64, vlen: u64, flags: u64) -> SysResult {
    let mut done = 0;
    while done < vlen.min(UIO_MAXIOV) {
        let at = vec + done * MMSGHDR_SIZE;
        let r = sendmsg(k, fd, at, flags).and_then(|n| put_msg_len(k, at, n));
        match r {
            Ok(()) => done += 1,
            // As Linux: an error is the answer only when nothing was sent (a message
            // whose msg_len cannot be written is not counted).
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// recvmmsg(2): recvmsg for each message in turn, its byte count in its `msg_len`;
/// with MSG_WAITFORONE only the first waits. As Linux, a timeout is looked at only
/// after each message (and what is left of it written back).
pub fn recvmmsg(
    k: &mut Kernel,
    fd: u64,
    vec: u64,
    vlen: u64,
    flags: u64,
    timeout: u64,
) -> SysResult {
    let deadline = if timeout == 0 {
        None
    } else {
        let ns = super::time::read_timespec(k, timeout)?;
        Some(k.monotonic_ns().saturating_add(ns))
    };
    let mut each = flags & !MSG_WAITFORONE;
    let mut done = 0;
    while done < vlen.min(UIO_MAXIOV) {
        let at = vec + done * MMSGHDR_SIZE;
        let r = recvmsg(k, fd, at, each).and_then(|n| put_msg_len(k, at, n));
        match r {
            Ok(()) => done += 1,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
        if flags & MSG_WAITFORONE != 0 {
            each |= MSG_DONTWAIT;
        }
        if deadline.is_some_and(|d| k.monotonic_ns() >= d) {
            break;
        }
    }
    if let Some(d) = deadline {
        let left = d.saturating_sub(k.monotonic_ns());
        k.copy_to_user(timeout, &super::time::timespec(left))
            .map_err(mem_err)?;
    }
    Ok(done)
}

/// What `fstat` says of a socket: a socket inode owned by the app.
pub const S_IFSOCK: u32 = 0o140000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reads_as_poll_bits() {
        assert_eq!(poll_bits(EV_IN), EPOLLIN | EPOLLRDNORM);
        assert_eq!(poll_bits(EV_OUT), EPOLLOUT | EPOLLWRNORM);
        assert_eq!(
            poll_bits(EV_ERR | EV_HUP | EV_RDHUP),
            EPOLLERR | EPOLLHUP | EPOLLRDHUP
        );
        assert_eq!(poll_bits(0), 0);
    }

    #[test]
    fn the_armed_count_follows_each_socket() {
        let mut s = Sockets::new();
        assert!(!s.any_armed());
        s.set_armed(3, EV_IN);
        s.set_armed(3, EV_IN | EV_OUT);
        s.set_armed(7, EV_OUT);
        assert_eq!(s.armed, 2);
        s.set_armed(3, 0);
        assert!(s.any_armed());
        s.set_armed(7, 0);
        s.set_armed(7, 0);
        assert!(!s.any_armed());
    }

    #[test]
    fn timeouts_read_as_linux_reads_them() {
        let tv = |sec: i64, usec: i64| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&sec.to_le_bytes());
            b[8..].copy_from_slice(&usec.to_le_bytes());
            b
        };
        assert_eq!(timeval_ns(&tv(0, 0)), Ok(0));
        assert_eq!(timeval_ns(&tv(2, 500_000)), Ok(2_500_000_000));
        assert_eq!(timeval_ns(&tv(-1, 0)), Err(EDOM));
        assert_eq!(timeval_ns(&tv(0, 1_000_000)), Err(EDOM));
        assert_eq!(timeval_ns(&[0; 8]), Err(EINVAL));
    }

    #[test]
    fn errnos_are_linux_values() {
        // include/uapi/asm-generic/errno.h
        assert_eq!(
            [
                ENOTSOCK,
                EMSGSIZE,
                ENOPROTOOPT,
                EAFNOSUPPORT,
                ENOTCONN,
                ECONNREFUSED,
                EINPROGRESS
            ],
            [88, 90, 92, 97, 107, 111, 115]
        );
    }
}
