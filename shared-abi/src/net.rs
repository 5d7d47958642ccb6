//! Sockets through the host: the [`HostcallOp::Net`](crate::hostcall::HostcallOp::Net)
//! hostcall and the interrupt that announces readiness.
//!
//! The host owns the real sockets (TCP and UDP over IPv4 and IPv6) and names each by a
//! *handle* below [`MAX_SOCKETS`]; the firmware keeps its own table from handles to the
//! app's descriptors and never takes a handle it did not get from `Socket` or `Accept`
//! for one of its own sockets. Every host socket is non-blocking: a call that would
//! wait answers `EAGAIN` (or `EINPROGRESS` for a connect), and the firmware waits
//! itself, after asking the host to watch the socket ([`NetOp::Arm`]).
//!
//! A request is the hostcall header with `op` = Net, `arg` = the [`NetOp`], `fd` = the
//! handle (unused by `Socket` and `Events`), `arg2` an operation's scalar and `len` its
//! data length (or reply capacity); the table at each [`NetOp`] says which. Addresses
//! cross as a [`NetAddr`] (32 bytes), never as a raw `sockaddr`.
//!
//! Readiness: once the firmware arms a handle for some events, the host watches it
//! (one shot: a handle reported is watched no more until armed again), queues
//! `(handle, events)` pairs, and announces a queue that became non-empty in two ways:
//! an interrupt on [`NET_VECTOR`] to the vCPU with local APIC id 0, and, if a
//! [`HostcallOp::Sleep`](crate::hostcall::HostcallOp::Sleep) is in progress, by ending
//! it early with `result` [`SLEEP_WOKEN_BY_NET`]. The firmware then takes the queue
//! with [`NetOp::Events`], several pairs per exit. Every pair is host input: a handle
//! the firmware does not know is ignored, and a readiness that turns out false only
//! costs a try that answers `EAGAIN`.
//!
//! The bytes a socket carries are visible to the host (docs/threat-model.md): apps
//! protect them with TLS.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::hostcall::{HostcallError, HostcallHeader};

/// Most sockets the host keeps for one guest at once (handles are below this).
pub const MAX_SOCKETS: u32 = 1024;

/// The interrupt vector of network readiness (a nacre choice: after the firmware's
/// timer 0x20 and wake-up 0x21 vectors).
pub const NET_VECTOR: u8 = 0x22;

/// [`HostcallOp::Sleep`](crate::hostcall::HostcallOp::Sleep)'s `result` when the host
/// ended the sleep early because network events are queued (0: it slept).
pub const SLEEP_WOKEN_BY_NET: u64 = 1;

/// Largest option value of [`NetOp::GetOpt`] and [`NetOp::SetOpt`].
pub const MAX_OPTION: u64 = 256;

/// Linux address families (`include/linux/socket.h`).
pub const AF_INET: u16 = 2;
/// See [`AF_INET`].
pub const AF_INET6: u16 = 10;
/// Linux socket types (`include/linux/net.h`).
pub const SOCK_STREAM: u32 = 1;
/// See [`SOCK_STREAM`].
pub const SOCK_DGRAM: u32 = 2;
/// IP protocol numbers (`include/uapi/linux/in.h`).
pub const IPPROTO_TCP: u32 = 6;
/// See [`IPPROTO_TCP`].
pub const IPPROTO_UDP: u32 = 17;

/// Readiness bits, as epoll's (`include/uapi/linux/eventpoll.h`).
pub const EV_IN: u32 = 0x001;
/// See [`EV_IN`].
pub const EV_PRI: u32 = 0x002;
/// See [`EV_IN`].
pub const EV_OUT: u32 = 0x004;
/// See [`EV_IN`].
pub const EV_ERR: u32 = 0x008;
/// See [`EV_IN`].
pub const EV_HUP: u32 = 0x010;
/// See [`EV_IN`].
pub const EV_RDHUP: u32 = 0x2000;
/// Every readiness bit a request or an event may carry.
pub const EV_ALL: u32 = EV_IN | EV_PRI | EV_OUT | EV_ERR | EV_HUP | EV_RDHUP;

/// `send`/`recv` flags the host honours (`include/linux/socket.h`); the firmware
/// handles the others itself (`MSG_DONTWAIT`, `MSG_WAITALL`, `MSG_NOSIGNAL`).
pub const MSG_OOB: u64 = 0x1;
/// See [`MSG_OOB`].
pub const MSG_PEEK: u64 = 0x2;
/// See [`MSG_OOB`].
pub const MSG_TRUNC: u64 = 0x20;
/// See [`MSG_OOB`].
pub const MSG_MORE: u64 = 0x8000;
/// Every flag a Send may carry.
pub const MSG_SEND: u64 = MSG_OOB | MSG_MORE;
/// Every flag a Recv may carry.
pub const MSG_RECV: u64 = MSG_OOB | MSG_PEEK | MSG_TRUNC;

/// The operations of the Net hostcall (its `arg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum NetOp {
    /// `arg2` = domain | type << 16 | protocol << 32 ([`AF_INET`]/[`AF_INET6`],
    /// [`SOCK_STREAM`]/[`SOCK_DGRAM`] without flags, 0 or the matching protocol);
    /// `len` 0. `result` = the new handle.
    Socket = 1,
    /// Data: a [`NetAddr`] (`len` 32). `result` 0.
    Bind = 2,
    /// `arg2` = backlog; `len` 0. `result` 0.
    Listen = 3,
    /// Capacity `len` >= 32. `result` = the new connection's handle; reply data its
    /// peer's [`NetAddr`].
    Accept = 4,
    /// Data: a [`NetAddr`] (`len` 32). `result` 0, or `EINPROGRESS` until the socket
    /// is writable, then its `SO_ERROR` says how it went.
    Connect = 5,
    /// `arg2` = flags ([`MSG_SEND`]); data: a [`NetAddr`] (the destination, family 0
    /// for none) then the bytes. `result` = bytes sent, at most `len - 32`.
    Send = 6,
    /// `arg2` = flags ([`MSG_RECV`]); capacity `len` >= 32. Reply data: the source [`NetAddr`]
    /// (family 0 when the socket does not say) then the bytes; `result` = bytes
    /// received, at most `len - 32` (with `MSG_TRUNC` a datagram's full length, which
    /// may be more; only `len - 32` bytes are written).
    Recv = 7,
    /// `arg2` = how (0 read, 1 write, 2 both). `result` 0.
    Shutdown = 8,
    /// Close the handle. `result` 0.
    Close = 9,
    /// `arg2` = level << 32 | name; capacity `len` <= [`MAX_OPTION`]. Reply data the
    /// value; `result` = its length, at most `len`.
    GetOpt = 10,
    /// `arg2` = level << 32 | name; data: the value (`len` <= [`MAX_OPTION`]).
    /// `result` 0.
    SetOpt = 11,
    /// Capacity `len` >= 32. Reply data the socket's own [`NetAddr`]; `result` 32.
    SockName = 12,
    /// Capacity `len` >= 32. Reply data the peer's [`NetAddr`]; `result` 32.
    PeerName = 13,
    /// `arg2` = the events to watch for ([`EV_ALL`]; error and hang-up are always
    /// reported). `len` 0. `result` 0.
    Arm = 14,
    /// Take the queued events: capacity `len`, a multiple of 8. Reply data
    /// [`NetEvent`]s; `result` = their bytes (a multiple of 8, at most `len`).
    Events = 15,
}

impl TryFrom<u64> for NetOp {
    type Error = u64;
    fn try_from(v: u64) -> Result<Self, u64> {
        Ok(match v {
            1 => Self::Socket,
            2 => Self::Bind,
            3 => Self::Listen,
            4 => Self::Accept,
            5 => Self::Connect,
            6 => Self::Send,
            7 => Self::Recv,
            8 => Self::Shutdown,
            9 => Self::Close,
            10 => Self::GetOpt,
            11 => Self::SetOpt,
            12 => Self::SockName,
            13 => Self::PeerName,
            14 => Self::Arm,
            15 => Self::Events,
            other => return Err(other),
        })
    }
}

impl NetOp {
    /// Its name, as `--stats` and messages show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Bind => "bind",
            Self::Listen => "listen",
            Self::Accept => "accept",
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Recv => "recv",
            Self::Shutdown => "shutdown",
            Self::Close => "close",
            Self::GetOpt => "getsockopt",
            Self::SetOpt => "setsockopt",
            Self::SockName => "getsockname",
            Self::PeerName => "getpeername",
            Self::Arm => "arm",
            Self::Events => "events",
        }
    }
}

/// A socket address as it crosses: family [`AF_INET`] (the first 4 bytes of `addr`)
/// or [`AF_INET6`], or 0 for none; the port in host byte order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetAddr {
    pub family: u16,
    pub port: u16,
    /// IPv6 flow information (0 for IPv4).
    pub flowinfo: u32,
    pub addr: [u8; 16],
    /// IPv6 scope id (0 for IPv4).
    pub scope_id: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<NetAddr>() == 32);
/// Bytes of a [`NetAddr`].
pub const NET_ADDR_SIZE: u64 = 32;

/// Why a [`NetAddr`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetAddrError {
    /// A family other than IPv4, IPv6 (or none, where allowed).
    Family(u16),
    /// Bytes that must be zero are not.
    Reserved,
}

impl NetAddr {
    /// No address (family 0).
    pub const NONE: Self = Self {
        family: 0,
        port: 0,
        flowinfo: 0,
        addr: [0; 16],
        scope_id: 0,
        reserved: 0,
    };

    /// An IPv4 address and port.
    pub const fn v4(ip: [u8; 4], port: u16) -> Self {
        let mut addr = [0; 16];
        addr[0] = ip[0];
        addr[1] = ip[1];
        addr[2] = ip[2];
        addr[3] = ip[3];
        Self {
            family: AF_INET,
            port,
            flowinfo: 0,
            addr,
            scope_id: 0,
            reserved: 0,
        }
    }

    /// An IPv6 address and port.
    pub const fn v6(ip: [u8; 16], port: u16, flowinfo: u32, scope_id: u32) -> Self {
        Self {
            family: AF_INET6,
            port,
            flowinfo,
            addr: ip,
            scope_id,
            reserved: 0,
        }
    }

    /// Check an address read from the other side: IPv4 (with zero IPv6-only fields and
    /// zero bytes after its 4), IPv6, or, if `none_ok`, none at all (all zero).
    pub fn check(&self, none_ok: bool) -> Result<(), NetAddrError> {
        if self.reserved != 0 {
            return Err(NetAddrError::Reserved);
        }
        match self.family {
            AF_INET6 => Ok(()),
            AF_INET
                if self.flowinfo == 0
                    && self.scope_id == 0
                    && self.addr[4..].iter().all(|&b| b == 0) =>
            {
                Ok(())
            }
            AF_INET => Err(NetAddrError::Reserved),
            0 if none_ok && *self == Self::NONE => Ok(()),
            0 if none_ok => Err(NetAddrError::Reserved),
            other => Err(NetAddrError::Family(other)),
        }
    }

    /// The IPv4 address, if it is one.
    pub fn ipv4(&self) -> Option<[u8; 4]> {
        (self.family == AF_INET).then(|| [self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
    }
}

/// One queued readiness: the handle and its events ([`EV_ALL`] bits).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetEvent {
    pub handle: u32,
    pub events: u32,
}

const _: () = assert!(core::mem::size_of::<NetEvent>() == 8);

/// Host side: check the Net-specific fields of a request whose generic checks passed
/// (`len` within the data area). Returns the operation.
pub fn check_request(h: &HostcallHeader) -> Result<NetOp, HostcallError> {
    let op = NetOp::try_from(h.arg).map_err(HostcallError::BadArg)?;
    let handle_op = !matches!(op, NetOp::Socket | NetOp::Events);
    if handle_op && h.fd >= MAX_SOCKETS {
        return Err(HostcallError::BadFd(h.fd));
    }
    let len_ok = match op {
        NetOp::Socket | NetOp::Listen | NetOp::Shutdown | NetOp::Close | NetOp::Arm => h.len == 0,
        NetOp::Bind | NetOp::Connect => h.len == NET_ADDR_SIZE,
        NetOp::Accept | NetOp::Send | NetOp::Recv | NetOp::SockName | NetOp::PeerName => {
            h.len >= NET_ADDR_SIZE
        }
        NetOp::GetOpt | NetOp::SetOpt => h.len <= MAX_OPTION,
        NetOp::Events => h.len.is_multiple_of(8),
    };
    if !len_ok {
        return Err(HostcallError::BadLength(h.len));
    }
    let arg2_ok = match op {
        NetOp::Socket => socket_args(h.arg2).is_some(),
        NetOp::Send => h.arg2 & !MSG_SEND == 0,
        NetOp::Recv => h.arg2 & !MSG_RECV == 0,
        NetOp::Shutdown => h.arg2 <= 2,
        NetOp::Arm => h.arg2 & !u64::from(EV_ALL) == 0,
        NetOp::Listen => h.arg2 <= u64::from(u32::MAX),
        _ => true,
    };
    if !arg2_ok {
        return Err(HostcallError::BadArg(h.arg2));
    }
    Ok(op)
}

/// The (domain, type, protocol) of a Socket request's `arg2`, if it names a TCP or
/// UDP socket over IPv4 or IPv6.
pub fn socket_args(arg2: u64) -> Option<(u16, u32, u32)> {
    let domain = (arg2 & 0xFFFF) as u16;
    let kind = ((arg2 >> 16) & 0xFFFF) as u32;
    let protocol = (arg2 >> 32) as u32;
    let ok = matches!(domain, AF_INET | AF_INET6)
        && matches!(
            (kind, protocol),
            (SOCK_STREAM, 0 | IPPROTO_TCP) | (SOCK_DGRAM, 0 | IPPROTO_UDP)
        );
    ok.then_some((domain, kind, protocol))
}

/// The `arg2` of a Socket request.
pub const fn socket_arg2(domain: u16, kind: u32, protocol: u32) -> u64 {
    domain as u64 | ((kind as u64 & 0xFFFF) << 16) | ((protocol as u64) << 32)
}

/// Guest side: whether a successful reply's `result` fits the request (the generic
/// checks of `check_reply` have passed). The data are checked by their readers.
pub fn reply_fits(request: &HostcallHeader, result: u64) -> bool {
    let Ok(op) = NetOp::try_from(request.arg) else {
        return false;
    };
    match op {
        NetOp::Socket | NetOp::Accept => result < u64::from(MAX_SOCKETS),
        NetOp::Recv if request.arg2 & MSG_TRUNC != 0 => result <= u64::from(u32::MAX),
        // A request too short for its address (never one the firmware builds) fits no
        // reply.
        NetOp::Send | NetOp::Recv => request
            .len
            .checked_sub(NET_ADDR_SIZE)
            .is_some_and(|room| result <= room),
        NetOp::GetOpt => result <= request.len,
        NetOp::SockName | NetOp::PeerName => result == NET_ADDR_SIZE,
        NetOp::Events => result <= request.len && result.is_multiple_of(8),
        NetOp::Bind
        | NetOp::Listen
        | NetOp::Connect
        | NetOp::Shutdown
        | NetOp::Close
        | NetOp::SetOpt
        | NetOp::Arm => result == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostcall::HostcallOp;

    fn net(arg: NetOp, fd: u32, len: u64, arg2: u64) -> HostcallHeader {
        HostcallHeader {
            op: HostcallOp::Net as u32,
            fd,
            len,
            arg: arg as u64,
            arg2,
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_checked_per_operation() {
        let tcp4 = socket_arg2(AF_INET, SOCK_STREAM, 0);
        assert_eq!(
            check_request(&net(NetOp::Socket, 0, 0, tcp4)),
            Ok(NetOp::Socket)
        );
        let udp6 = socket_arg2(AF_INET6, SOCK_DGRAM, IPPROTO_UDP);
        assert_eq!(
            check_request(&net(NetOp::Socket, 0, 0, udp6)),
            Ok(NetOp::Socket)
        );
        for bad in [
            socket_arg2(1, SOCK_STREAM, 0),
            socket_arg2(AF_INET, 3, 0),
            socket_arg2(AF_INET, SOCK_STREAM, IPPROTO_UDP),
            socket_arg2(AF_INET, SOCK_DGRAM, IPPROTO_TCP),
        ] {
            assert!(check_request(&net(NetOp::Socket, 0, 0, bad)).is_err());
        }
        assert_eq!(
            check_request(&net(NetOp::Bind, MAX_SOCKETS, 32, 0)),
            Err(HostcallError::BadFd(MAX_SOCKETS))
        );
        assert!(check_request(&net(NetOp::Bind, 3, 16, 0)).is_err());
        assert!(check_request(&net(NetOp::Recv, 3, 31, 0)).is_err());
        assert!(check_request(&net(NetOp::Recv, 3, 4096, MSG_PEEK)).is_ok());
        assert!(check_request(&net(NetOp::Recv, 3, 4096, 0x40)).is_err());
        assert!(check_request(&net(NetOp::Send, 3, 4096, MSG_PEEK)).is_err());
        assert!(check_request(&net(NetOp::Events, 0, 12, 0)).is_err());
        assert!(check_request(&net(NetOp::Arm, 3, 0, u64::from(EV_IN | EV_OUT))).is_ok());
        assert!(check_request(&net(NetOp::Arm, 3, 0, 0x8000_0000)).is_err());
        assert!(check_request(&net(NetOp::Shutdown, 3, 0, 3)).is_err());
        assert!(check_request(&net(NetOp::GetOpt, 3, MAX_OPTION + 1, 0)).is_err());
        let unknown = HostcallHeader {
            arg: 99,
            ..net(NetOp::Close, 3, 0, 0)
        };
        assert_eq!(check_request(&unknown), Err(HostcallError::BadArg(99)));
    }

    #[test]
    fn replies_stay_within_the_request() {
        let recv = net(NetOp::Recv, 3, 32 + 100, 0);
        assert!(reply_fits(&recv, 100));
        assert!(!reply_fits(&recv, 101));
        let socket = net(NetOp::Socket, 0, 0, socket_arg2(AF_INET, SOCK_STREAM, 0));
        assert!(reply_fits(&socket, u64::from(MAX_SOCKETS) - 1));
        assert!(!reply_fits(&socket, u64::from(MAX_SOCKETS)));
        let events = net(NetOp::Events, 0, 64, 0);
        assert!(reply_fits(&events, 64));
        assert!(!reply_fits(&events, 12));
        assert!(!reply_fits(&events, 72));
        assert!(!reply_fits(&net(NetOp::Close, 3, 0, 0), 1));
        // A request shorter than its address (found by fuzzing: the bound underflowed).
        assert!(!reply_fits(&net(NetOp::Recv, 3, 8, 0), 0));
        assert!(!reply_fits(&net(NetOp::Send, 3, 0, 0), u64::MAX));
        assert!(!reply_fits(&net(NetOp::SockName, 3, 32, 0), 16));
    }

    #[test]
    fn addresses_are_checked_before_use() {
        assert_eq!(NetAddr::v4([127, 0, 0, 1], 80).check(false), Ok(()));
        assert_eq!(NetAddr::v6([0; 16], 80, 0, 0).check(false), Ok(()));
        assert_eq!(NetAddr::NONE.check(true), Ok(()));
        assert_eq!(NetAddr::NONE.check(false), Err(NetAddrError::Family(0)));
        let mut junk = NetAddr::v4([10, 0, 0, 1], 1);
        junk.addr[9] = 1;
        assert_eq!(junk.check(false), Err(NetAddrError::Reserved));
        let mut odd = NetAddr::v4([10, 0, 0, 1], 1);
        odd.family = 1;
        assert_eq!(odd.check(false), Err(NetAddrError::Family(1)));
        let mut pad = NetAddr::v6([1; 16], 1, 0, 0);
        pad.reserved = 1;
        assert_eq!(pad.check(false), Err(NetAddrError::Reserved));
        assert_eq!(NetAddr::v4([1, 2, 3, 4], 5).ipv4(), Some([1, 2, 3, 4]));
    }
}
