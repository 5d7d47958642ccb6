//! The Net hostcall through [`serve`], as the firmware makes it: real sockets on the
//! loopback interface of the test process, no VM. Every reply is checked as the
//! firmware checks it (`check_reply`), with nothing written beyond the request's
//! `len` and nothing in the header but `status` and `result` changed.

use super::*;
use crate::platform::hostcall::tests::{AllShared, RAM};
use crate::platform::hostcall::{serve, HostcallHost};
use crate::platform::Stop;
use crate::stats::RunCounters;
use nacre_shared_abi::hostcall::{
    hostcall_area_gpa, HostcallOp, HOSTCALL_DATA_OFFSET, HOSTCALL_MAX_DATA,
};
use nacre_shared_abi::net::{socket_arg2, EV_IN, EV_OUT, MSG_PEEK, SLEEP_WOKEN_BY_NET};
use zerocopy::FromBytes;

/// What the host must leave alone after a reply's data.
const CANARY: u8 = 0xA5;
/// How far past `len` the canary is checked.
const SLACK: usize = 256;
const LOOPBACK4: [u8; 4] = [127, 0, 0, 1];
const LOOPBACK6: [u8; 16] = Ipv6Addr::LOCALHOST.octets();

/// One guest's hostcall area and the host that serves it.
struct Guest {
    mem: GuestMemory,
    stats: RunCounters,
    host: HostcallHost,
}

type Reply = (Result<u64, u64>, Vec<u8>);

impl Guest {
    fn new(policy: NetPolicy) -> Self {
        let mut host = HostcallHost::default();
        host.net.policy = policy;
        Self {
            mem: GuestMemory::new(RAM).unwrap(),
            stats: RunCounters::default(),
            host,
        }
    }

    fn open() -> Self {
        Self::new(NetPolicy::allow_all())
    }

    /// Serve `h` with `data` at the start of the data area. The reply must pass the
    /// firmware's check and leave all but `status` and `result` of the header, and
    /// everything past `len`, as they were. Returns its result or errno and the
    /// first `len` bytes of the data area.
    fn call(&mut self, h: HostcallHeader, data: &[u8]) -> Reply {
        let area = hostcall_area_gpa(RAM);
        let at = area + HOSTCALL_DATA_OFFSET;
        let len = h.len as usize;
        // The canary runs to the area's end at most.
        let span = (len + SLACK).min(HOSTCALL_MAX_DATA as usize);
        let mut region = vec![CANARY; span];
        let data = &data[..data.len().min(len)];
        region[..data.len()].copy_from_slice(data);
        self.mem.write(at, &region).unwrap();
        self.mem.write(area, h.as_bytes()).unwrap();
        let stop = serve(&self.mem, &AllShared, &mut self.stats, &mut self.host, area).unwrap();
        assert_eq!(stop, None, "{h:?}");
        let mut raw = [0u8; 64];
        self.mem.read(area, &mut raw).unwrap();
        let reply = HostcallHeader::read_from_bytes(&raw).unwrap();
        let blank = |h: HostcallHeader| HostcallHeader {
            status: 0,
            result: 0,
            ..h
        };
        assert_eq!(
            blank(reply),
            blank(h),
            "the host changed more than status and result"
        );
        let answer = reply
            .check_reply(&h)
            .unwrap_or_else(|e| panic!("the firmware refuses {reply:?} to {h:?}: {e}"));
        let mut after = vec![0u8; span];
        self.mem.read(at, &mut after).unwrap();
        assert!(
            after[len..].iter().all(|&b| b == CANARY),
            "{h:?} wrote past its length"
        );
        after.truncate(len);
        (answer, after)
    }

    fn net(&mut self, op: NetOp, fd: u32, arg2: u64, len: u64, data: &[u8]) -> Reply {
        let h = HostcallHeader {
            op: HostcallOp::Net as u32,
            fd,
            len,
            arg: op as u64,
            arg2,
            ..Default::default()
        };
        self.call(h, data)
    }

    fn socket(&mut self, domain: u16, kind: u32) -> u32 {
        let (r, _) = self.net(NetOp::Socket, 0, socket_arg2(domain, kind, 0), 0, &[]);
        r.unwrap() as u32
    }

    fn bind(&mut self, fd: u32, addr: NetAddr) -> Result<u64, u64> {
        self.net(NetOp::Bind, fd, 0, 32, addr.as_bytes()).0
    }

    fn listen(&mut self, fd: u32) -> Result<u64, u64> {
        self.net(NetOp::Listen, fd, 16, 0, &[]).0
    }

    fn connect(&mut self, fd: u32, addr: NetAddr) -> Result<u64, u64> {
        self.net(NetOp::Connect, fd, 0, 32, addr.as_bytes()).0
    }

    fn accept(&mut self, fd: u32) -> Result<(u32, NetAddr), u64> {
        let (r, data) = self.net(NetOp::Accept, fd, 0, 32, &[]);
        let handle = r? as u32;
        Ok((handle, NetAddr::read_from_bytes(&data).unwrap()))
    }

    fn send(&mut self, fd: u32, dest: NetAddr, bytes: &[u8]) -> Result<u64, u64> {
        let mut data = dest.as_bytes().to_vec();
        data.extend_from_slice(bytes);
        self.net(NetOp::Send, fd, 0, data.len() as u64, &data).0
    }

    /// Receive into a capacity of `cap` bytes: the source, the bytes written and the
    /// result.
    fn recv(&mut self, fd: u32, cap: u64, flags: u64) -> Result<(NetAddr, Vec<u8>, u64), u64> {
        let (r, data) = self.net(NetOp::Recv, fd, flags, 32 + cap, &[]);
        let n = r?;
        let written = n.min(cap) as usize;
        let source = NetAddr::read_from_bytes(&data[..32]).unwrap();
        Ok((source, data[32..32 + written].to_vec(), n))
    }

    fn close(&mut self, fd: u32) -> Result<u64, u64> {
        self.net(NetOp::Close, fd, 0, 0, &[]).0
    }

    fn name(&mut self, fd: u32, peer: bool) -> Result<NetAddr, u64> {
        let op = if peer {
            NetOp::PeerName
        } else {
            NetOp::SockName
        };
        let (r, data) = self.net(op, fd, 0, 32, &[]);
        r?;
        Ok(NetAddr::read_from_bytes(&data).unwrap())
    }

    fn get_option(&mut self, fd: u32, level: i32, name: i32, cap: u64) -> Result<Vec<u8>, u64> {
        let arg2 = (level as u32 as u64) << 32 | name as u32 as u64;
        let (r, data) = self.net(NetOp::GetOpt, fd, arg2, cap, &[]);
        Ok(data[..r? as usize].to_vec())
    }

    fn set_option(&mut self, fd: u32, level: i32, name: i32, value: &[u8]) -> Result<u64, u64> {
        let arg2 = (level as u32 as u64) << 32 | name as u32 as u64;
        self.net(NetOp::SetOpt, fd, arg2, value.len() as u64, value)
            .0
    }

    fn arm(&mut self, fd: u32, events: u32) -> Result<u64, u64> {
        self.net(NetOp::Arm, fd, u64::from(events), 0, &[]).0
    }

    fn events(&mut self, cap: u64) -> Vec<NetEvent> {
        let (r, data) = self.net(NetOp::Events, 0, 0, cap, &[]);
        let n = r.unwrap() as usize;
        data[..n]
            .chunks_exact(8)
            .map(|e| NetEvent::read_from_bytes(e).unwrap())
            .collect()
    }

    /// A Sleep hostcall of `ns`: its result and how long it took.
    fn sleep(&mut self, ns: u64) -> (u64, Duration) {
        let h = HostcallHeader {
            op: HostcallOp::Sleep as u32,
            arg: ns,
            ..Default::default()
        };
        let start = Instant::now();
        let (r, _) = self.call(h, &[]);
        (r.unwrap(), start.elapsed())
    }

    /// Ask again while the answer is EAGAIN (or a connect still in progress), for up
    /// to 5 s.
    fn retry<T>(&mut self, mut f: impl FnMut(&mut Self) -> Result<T, u64>) -> Result<T, u64> {
        let start = Instant::now();
        loop {
            match f(self) {
                Err(e)
                    if (e == libc::EAGAIN as u64 || e == ENOTCONN)
                        && start.elapsed() < Duration::from_secs(5) =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => return other,
            }
        }
    }
}

/// ENOTCONN (`include/uapi/asm-generic/errno.h`): a send before a connect completes.
const ENOTCONN: u64 = 107;
const EAGAIN: u64 = 11;

fn loopback(family: u16, port: u16) -> NetAddr {
    if family == AF_INET {
        NetAddr::v4(LOOPBACK4, port)
    } else {
        NetAddr::v6(LOOPBACK6, port, 0, 0)
    }
}

/// A TCP port nothing listens on now.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_connects_sends_receives_and_closes_over_ipv4_and_ipv6_loopback() {
    for family in [AF_INET, AF_INET6] {
        let mut g = Guest::open();
        let server = g.socket(family, SOCK_STREAM);
        assert_eq!(g.set_option(server, 1, 2, &1i32.to_ne_bytes()), Ok(0));
        assert_eq!(g.bind(server, loopback(family, 0)), Ok(0));
        assert_eq!(g.listen(server), Ok(0));
        let port = g.name(server, false).unwrap().port;
        assert_ne!(port, 0);
        assert_eq!(g.accept(server), Err(EAGAIN), "nobody has connected yet");

        let client = g.socket(family, SOCK_STREAM);
        match g.connect(client, loopback(family, port)) {
            Ok(0) | Err(EINPROGRESS) => {}
            other => panic!("connect: {other:?}"),
        }
        let (conn, peer) = g.retry(|g| g.accept(server)).unwrap();
        assert_eq!(peer.family, family);
        assert_eq!(peer, g.name(client, false).unwrap());
        assert_eq!(g.name(conn, true).unwrap(), peer);
        assert_eq!(g.name(client, true).unwrap(), loopback(family, port));

        let sent = g
            .retry(|g| g.send(client, NetAddr::NONE, b"hello, host"))
            .unwrap();
        assert_eq!(sent, 11);
        let (source, bytes, n) = g.retry(|g| g.recv(conn, 64, 0)).unwrap();
        assert_eq!(
            (source, &bytes[..], n),
            (NetAddr::NONE, &b"hello, host"[..], 11)
        );

        // The client stops writing: the server reads the end.
        assert_eq!(g.net(NetOp::Shutdown, client, 1, 0, &[]).0, Ok(0));
        let (_, bytes, n) = g.retry(|g| g.recv(conn, 64, 0)).unwrap();
        assert_eq!((bytes.len(), n), (0, 0));
        // The other way still works.
        assert_eq!(g.send(conn, NetAddr::NONE, b"bye"), Ok(3));
        let (_, bytes, _) = g.retry(|g| g.recv(client, 64, 0)).unwrap();
        assert_eq!(bytes, b"bye");

        for fd in [conn, client, server] {
            assert_eq!(g.close(fd), Ok(0));
            assert_eq!(g.close(fd), Err(EBADF), "closed twice");
            assert_eq!(g.send(fd, NetAddr::NONE, b"x"), Err(EBADF));
        }
        assert_eq!(g.host.net.open_sockets(), 0);
        assert_eq!(g.stats.hostcalls.get("net.socket"), Some(&2));
        assert!(g.stats.hostcalls["net.accept"] >= 2);
        assert_eq!(g.stats.hostcalls.get("net"), None, "counted per operation");
    }
}

#[test]
fn udp_datagrams_carry_their_source_and_truncate_as_asked() {
    let mut g = Guest::open();
    let a = g.socket(AF_INET, SOCK_DGRAM);
    let b = g.socket(AF_INET, SOCK_DGRAM);
    assert_eq!(g.bind(b, loopback(AF_INET, 0)), Ok(0));
    let to = g.name(b, false).unwrap();
    assert_eq!(g.recv(b, 64, 0), Err(EAGAIN), "nothing sent yet");
    let payload: Vec<u8> = (0..100).collect();
    assert_eq!(g.send(a, to, &payload), Ok(100));
    let from = g.name(a, false).unwrap();
    assert_eq!(from.ipv4(), Some([0, 0, 0, 0]), "bound by the send");

    // A peek leaves it; MSG_TRUNC tells the full length and writes only the capacity.
    let (source, bytes, n) = g.retry(|g| g.recv(b, 10, MSG_PEEK)).unwrap();
    assert_eq!(
        (source.port, &bytes[..], n),
        (from.port, &payload[..10], 10)
    );
    assert_eq!(source.ipv4(), Some(LOOPBACK4));
    let (_, bytes, n) = g.recv(b, 10, MSG_TRUNC).unwrap();
    assert_eq!((&bytes[..], n), (&payload[..10], 100));
    assert_eq!(g.recv(b, 64, 0), Err(EAGAIN), "the datagram was taken");

    // Without a destination an unconnected datagram socket has nowhere to send.
    assert_eq!(
        g.send(a, NetAddr::NONE, b"x"),
        Err(libc::EDESTADDRREQ as u64)
    );
    // Connected, it needs none.
    assert_eq!(g.connect(a, to), Ok(0));
    assert_eq!(g.send(a, NetAddr::NONE, b"xyz"), Ok(3));
    let (_, bytes, _) = g.retry(|g| g.recv(b, 64, 0)).unwrap();
    assert_eq!(bytes, b"xyz");
    // More than a datagram holds is the host's errno.
    let big = vec![0u8; 70_000];
    assert_eq!(g.send(a, NetAddr::NONE, &big), Err(libc::EMSGSIZE as u64));
}

#[test]
fn a_refused_connect_shows_in_so_error() {
    let mut g = Guest::open();
    let port = unused_port();
    let s = g.socket(AF_INET, SOCK_STREAM);
    match g.connect(s, loopback(AF_INET, port)) {
        Err(EINPROGRESS) => {
            let start = Instant::now();
            let error = loop {
                let v = g.get_option(s, 1, so::SO_ERROR, 4).unwrap();
                let e = i32::from_ne_bytes(v[..4].try_into().unwrap());
                if e != 0 || start.elapsed() > Duration::from_secs(5) {
                    break e;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            assert_eq!(error as u64, ECONNREFUSED);
        }
        Err(ECONNREFUSED) => {}
        other => panic!("connect to a closed port: {other:?}"),
    }
    assert!(g.send(s, NetAddr::NONE, b"x").is_err());
}

#[test]
fn armed_sockets_queue_their_events_and_wake_a_sleep() {
    let mut g = Guest::open();
    let server = g.socket(AF_INET, SOCK_STREAM);
    assert_eq!(g.bind(server, loopback(AF_INET, 0)), Ok(0));
    assert_eq!(g.listen(server), Ok(0));
    let port = g.name(server, false).unwrap().port;

    // Nothing queued: a sleep sleeps its time.
    let (woken, took) = g.sleep(20_000_000);
    assert_eq!(woken, 0);
    assert!(took >= Duration::from_millis(20), "{took:?}");
    assert_eq!(g.events(64), Vec::new());

    assert_eq!(g.arm(server, EV_IN), Ok(0));
    let peer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
    });
    // The connection ends a long sleep early.
    let (woken, took) = g.sleep(30_000_000_000);
    assert_eq!(woken, SLEEP_WOKEN_BY_NET);
    assert!(took < Duration::from_secs(10), "{took:?}");
    let mut stream = peer.join().unwrap();
    assert_eq!(
        g.events(64),
        vec![NetEvent {
            handle: server,
            events: EV_IN
        }]
    );
    // Taken: the queue is empty, and the socket is watched no more (one shot).
    assert_eq!(g.events(64), Vec::new());
    let (conn, _) = g.accept(server).unwrap();

    // Two handles ready: a small capacity takes the first, the second stays.
    use std::io::Write;
    stream.write_all(b"data").unwrap();
    let other = g.socket(AF_INET, SOCK_DGRAM);
    assert_eq!(g.arm(other, EV_OUT), Ok(0));
    let start = Instant::now();
    assert_eq!(g.sleep(5_000_000_000).0, SLEEP_WOKEN_BY_NET);
    assert_eq!(g.arm(conn, EV_IN | EV_OUT), Ok(0));
    while g.host.net.readiness.lock().order.len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    // Queued events end a sleep at once.
    assert_eq!(g.sleep(5_000_000_000).0, SLEEP_WOKEN_BY_NET);
    let first = g.events(8);
    assert_eq!(
        first,
        vec![NetEvent {
            handle: other,
            events: EV_OUT
        }]
    );
    let second = g.events(64);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].handle, conn);
    assert_eq!(second[0].events & (EV_IN | EV_OUT), EV_IN | EV_OUT);

    // A closed handle leaves the queue, and its reports with it.
    assert_eq!(g.arm(other, EV_OUT), Ok(0));
    while g.host.net.readiness.lock().order.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(g.close(other), Ok(0));
    assert_eq!(g.events(64), Vec::new());
    assert_eq!(g.arm(other, EV_IN), Err(EBADF));
    // A zero capacity takes nothing.
    assert_eq!(g.events(0), Vec::new());
    // Dropping the host ends its thread (the test would hang otherwise).
    drop(g);
}

#[test]
fn handles_are_the_lowest_free_and_unknown_ones_answer_ebadf() {
    let mut g = Guest::open();
    let a = g.socket(AF_INET, SOCK_STREAM);
    let b = g.socket(AF_INET6, SOCK_DGRAM);
    let c = g.socket(AF_INET, SOCK_DGRAM);
    assert_eq!((a, b, c), (0, 1, 2));
    assert_eq!(g.close(b), Ok(0));
    assert_eq!(g.socket(AF_INET, SOCK_STREAM), 1);
    for (op, len) in [
        (NetOp::Bind, 32),
        (NetOp::Listen, 0),
        (NetOp::Accept, 32),
        (NetOp::Connect, 32),
        (NetOp::Send, 40),
        (NetOp::Recv, 40),
        (NetOp::Shutdown, 0),
        (NetOp::Close, 0),
        (NetOp::GetOpt, 4),
        (NetOp::SetOpt, 4),
        (NetOp::SockName, 32),
        (NetOp::PeerName, 32),
        (NetOp::Arm, 0),
    ] {
        let addr = loopback(AF_INET, 9);
        for fd in [7, MAX_SOCKETS - 1] {
            assert_eq!(
                g.net(op, fd, 0, len, addr.as_bytes()).0,
                Err(EBADF),
                "{op:?} on {fd}"
            );
        }
    }
    // A handle at or above MAX_SOCKETS is a broken protocol: the guest stops and
    // nothing is answered.
    let area = hostcall_area_gpa(RAM);
    let h = HostcallHeader {
        op: HostcallOp::Net as u32,
        fd: MAX_SOCKETS,
        arg: NetOp::Close as u64,
        status: 77,
        ..Default::default()
    };
    g.mem.write(area, h.as_bytes()).unwrap();
    let stop = serve(&g.mem, &AllShared, &mut g.stats, &mut g.host, area).unwrap();
    assert!(
        matches!(&stop, Some(Stop::ProtocolViolation(m)) if m.contains("file descriptor 1024")),
        "{stop:?}"
    );
    let mut raw = [0u8; 64];
    g.mem.read(area, &mut raw).unwrap();
    assert_eq!(raw, h.as_bytes());
}

#[test]
fn addresses_and_lengths_from_the_guest_are_checked() {
    let mut g = Guest::open();
    let s = g.socket(AF_INET, SOCK_DGRAM);
    let mut odd = NetAddr::v4(LOOPBACK4, 9);
    odd.family = 1;
    assert_eq!(g.bind(s, odd), Err(EAFNOSUPPORT));
    assert_eq!(g.connect(s, odd), Err(EAFNOSUPPORT));
    assert_eq!(g.send(s, odd, b"x"), Err(EAFNOSUPPORT));
    let mut junk = NetAddr::v4(LOOPBACK4, 9);
    junk.addr[7] = 1;
    assert_eq!(g.bind(s, junk), Err(EINVAL));
    assert_eq!(g.connect(s, NetAddr::NONE), Err(EAFNOSUPPORT));
    let mut reserved = NetAddr::NONE;
    reserved.reserved = 1;
    assert_eq!(g.send(s, reserved, b"x"), Err(EINVAL));
    // The kernel's own answers for the wrong family pass through.
    assert_eq!(
        g.bind(s, NetAddr::v6(LOOPBACK6, 0, 0, 0)),
        Err(libc::EAFNOSUPPORT as u64)
    );
    // An empty receive capacity; a full-size send (more than a datagram holds), and
    // one on a stream socket that is not connected.
    assert_eq!(g.bind(s, loopback(AF_INET, 0)), Ok(0));
    assert_eq!(g.recv(s, 0, 0), Err(EAGAIN));
    let most = HOSTCALL_MAX_DATA;
    let (r, _) = g.net(NetOp::Send, s, 0, most, NetAddr::NONE.as_bytes());
    assert_eq!(r, Err(libc::EMSGSIZE as u64));
    let t = g.socket(AF_INET, SOCK_STREAM);
    let (r, _) = g.net(NetOp::Send, t, 0, most, NetAddr::NONE.as_bytes());
    assert_eq!(r, Err(libc::EPIPE as u64));
    let (r, _) = g.net(NetOp::Recv, s, MSG_TRUNC, most, &[]);
    assert_eq!(r, Err(EAGAIN));
}

#[test]
fn only_listed_options_are_answered() {
    assert_eq!(
        (level::SOL_SOCKET, level::IPPROTO_TCP, level::IPPROTO_IPV6),
        (libc::SOL_SOCKET, libc::IPPROTO_TCP, libc::IPPROTO_IPV6)
    );
    assert_eq!(
        [
            so::SO_REUSEADDR,
            so::SO_TYPE,
            so::SO_ERROR,
            so::SO_BROADCAST,
            so::SO_SNDBUF,
            so::SO_RCVBUF,
            so::SO_KEEPALIVE,
            so::SO_OOBINLINE,
            so::SO_LINGER,
            so::SO_REUSEPORT,
            so::SO_RCVTIMEO_OLD,
            so::SO_SNDTIMEO_OLD,
            so::SO_ACCEPTCONN,
            so::SO_PROTOCOL,
            so::SO_DOMAIN,
        ],
        [
            libc::SO_REUSEADDR,
            libc::SO_TYPE,
            libc::SO_ERROR,
            libc::SO_BROADCAST,
            libc::SO_SNDBUF,
            libc::SO_RCVBUF,
            libc::SO_KEEPALIVE,
            libc::SO_OOBINLINE,
            libc::SO_LINGER,
            libc::SO_REUSEPORT,
            libc::SO_RCVTIMEO,
            libc::SO_SNDTIMEO,
            libc::SO_ACCEPTCONN,
            libc::SO_PROTOCOL,
            libc::SO_DOMAIN,
        ]
    );
    assert_eq!(
        [
            tcp::TCP_NODELAY,
            tcp::TCP_KEEPIDLE,
            tcp::TCP_KEEPINTVL,
            tcp::TCP_KEEPCNT,
            tcp::TCP_QUICKACK,
            ip::IP_TOS,
            ip::IP_TTL,
            ipv6::IPV6_UNICAST_HOPS,
            ipv6::IPV6_V6ONLY,
            ipv6::IPV6_TCLASS,
        ],
        [
            libc::TCP_NODELAY,
            libc::TCP_KEEPIDLE,
            libc::TCP_KEEPINTVL,
            libc::TCP_KEEPCNT,
            libc::TCP_QUICKACK,
            libc::IP_TOS,
            libc::IP_TTL,
            libc::IPV6_UNICAST_HOPS,
            libc::IPV6_V6ONLY,
            libc::IPV6_TCLASS,
        ]
    );

    let mut g = Guest::open();
    let s = g.socket(AF_INET6, SOCK_STREAM);
    let one = 1i32.to_ne_bytes();
    for (level, name) in [
        (level::SOL_SOCKET, so::SO_KEEPALIVE),
        (level::IPPROTO_TCP, tcp::TCP_NODELAY),
        (level::IPPROTO_IPV6, ipv6::IPV6_V6ONLY),
    ] {
        assert_eq!(
            g.get_option(s, level, name, 4),
            Ok(0i32.to_ne_bytes().to_vec())
        );
        assert_eq!(g.set_option(s, level, name, &one), Ok(0));
        assert_eq!(g.get_option(s, level, name, 4), Ok(one.to_vec()));
    }
    assert_eq!(
        g.get_option(s, level::SOL_SOCKET, so::SO_TYPE, 64),
        Ok((SOCK_STREAM as i32).to_ne_bytes().to_vec())
    );
    assert_eq!(
        g.get_option(s, level::SOL_SOCKET, so::SO_TYPE, 0),
        Ok(Vec::new())
    );
    let linger = [1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat();
    assert_eq!(
        g.set_option(s, level::SOL_SOCKET, so::SO_LINGER, &linger),
        Ok(0)
    );
    assert_eq!(
        g.get_option(s, level::SOL_SOCKET, so::SO_LINGER, 8),
        Ok(linger)
    );
    // A value too short is the kernel's EINVAL.
    assert_eq!(
        g.set_option(s, level::SOL_SOCKET, so::SO_KEEPALIVE, &[1]),
        Err(libc::EINVAL as u64)
    );
    for (level, name) in [
        (level::SOL_SOCKET, so::SO_RCVTIMEO_OLD),
        (level::SOL_SOCKET, so::SO_SNDTIMEO_OLD),
        (level::SOL_SOCKET, so::SO_RCVTIMEO_NEW),
        (level::SOL_SOCKET, so::SO_SNDTIMEO_NEW),
        (level::SOL_SOCKET, libc::SO_BINDTODEVICE),
        (level::SOL_SOCKET, libc::SO_RCVBUFFORCE),
        (level::IPPROTO_TCP, libc::TCP_CONGESTION),
        (level::IPPROTO_IP, libc::IP_HDRINCL),
        (-1, 1),
        (0x7FFF_FFFF, 0x7FFF_FFFF),
    ] {
        assert_eq!(
            g.get_option(s, level, name, 16),
            Err(ENOPROTOOPT),
            "{level} {name}"
        );
        assert_eq!(
            g.set_option(s, level, name, &one),
            Err(ENOPROTOOPT),
            "{level} {name}"
        );
    }
    // Read-only ones cannot be set.
    assert_eq!(
        g.set_option(s, level::SOL_SOCKET, so::SO_ERROR, &one),
        Err(ENOPROTOOPT)
    );
}

#[test]
fn the_policy_refuses_what_it_does_not_declare() {
    let mut g = Guest::new(NetPolicy::default());
    let s = g.socket(AF_INET, SOCK_STREAM);
    let port = unused_port();
    assert_eq!(g.bind(s, loopback(AF_INET, port)), Err(EACCES));
    assert_eq!(g.connect(s, loopback(AF_INET, port)), Err(ECONNREFUSED));
    // An ephemeral port may be bound, not listened on.
    assert_eq!(g.bind(s, loopback(AF_INET, 0)), Ok(0));
    assert_eq!(g.listen(s), Err(EACCES));
    let u = g.socket(AF_INET6, SOCK_DGRAM);
    assert_eq!(g.send(u, loopback(AF_INET6, port), b"x"), Err(ECONNREFUSED));
    assert_eq!(g.connect(u, loopback(AF_INET6, port)), Err(ECONNREFUSED));

    // Declared: this port to listen on, loopback's on that port to reach.
    let mut g = Guest::new(NetPolicy {
        listen: vec![(Proto::Tcp, port)],
        connect: vec![ConnectRule {
            proto: Proto::Tcp,
            network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
            port: Some(port),
        }],
        ..NetPolicy::default()
    });
    let server = g.socket(AF_INET, SOCK_STREAM);
    assert_eq!(g.bind(server, loopback(AF_INET, port)), Ok(0));
    assert_eq!(g.listen(server), Ok(0));
    let client = g.socket(AF_INET6, SOCK_STREAM);
    // An IPv4-mapped address is checked as the IPv4 address it reaches.
    let mapped = NetAddr::v6(Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets(), port, 0, 0);
    match g.connect(client, mapped) {
        Ok(0) | Err(EINPROGRESS) => {}
        other => panic!("{other:?}"),
    }
    assert!(g.retry(|g| g.accept(server)).is_ok());
    let other = g.socket(AF_INET, SOCK_STREAM);
    assert_eq!(
        g.connect(other, loopback(AF_INET, port ^ 1)),
        Err(ECONNREFUSED)
    );
    assert_eq!(
        g.connect(other, loopback(AF_INET6, port)),
        Err(ECONNREFUSED)
    );
    let udp = g.socket(AF_INET, SOCK_DGRAM);
    assert_eq!(
        g.send(udp, loopback(AF_INET, port), b"x"),
        Err(ECONNREFUSED)
    );
    assert_eq!(
        g.bind(udp, loopback(AF_INET, port)),
        Err(EACCES),
        "tcp only"
    );
}

#[test]
fn policies_match_protocol_prefix_and_port() {
    let rule = |network: &str, prefix, port| ConnectRule {
        proto: Proto::Tcp,
        network: network.parse().unwrap(),
        prefix,
        port,
    };
    let p = NetPolicy {
        listen: vec![(Proto::Udp, 53)],
        connect: vec![
            rule("10.0.0.0", 8, Some(443)),
            rule("192.168.1.7", 32, None),
            rule("2001:db8::", 32, Some(80)),
            rule("10.0.0.0", 33, None),
        ],
        ..NetPolicy::default()
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(p.allows_connect(Proto::Tcp, ip("10.200.3.4"), 443));
    assert!(!p.allows_connect(Proto::Tcp, ip("10.200.3.4"), 80));
    assert!(!p.allows_connect(Proto::Udp, ip("10.200.3.4"), 443));
    assert!(!p.allows_connect(Proto::Tcp, ip("11.0.0.1"), 443));
    assert!(p.allows_connect(Proto::Tcp, ip("192.168.1.7"), 1));
    assert!(!p.allows_connect(Proto::Tcp, ip("192.168.1.8"), 1));
    assert!(p.allows_connect(Proto::Tcp, ip("::ffff:10.1.1.1"), 443));
    assert!(p.allows_connect(Proto::Tcp, ip("2001:db8:ffff::1"), 80));
    assert!(!p.allows_connect(Proto::Tcp, ip("2001:db9::1"), 80));
    assert!(p.allows_listen(Proto::Udp, 53));
    assert!(!p.allows_listen(Proto::Tcp, 53));
    assert!(!NetPolicy::default().allows_connect(Proto::Tcp, ip("127.0.0.1"), 1));
    assert!(!NetPolicy::default().allows_listen(Proto::Tcp, 8080));
    assert!(NetPolicy::allow_all().allows_connect(Proto::Udp, ip("::1"), 9));
    assert!(prefix_matches(&[10, 1], &[10, 2], 14));
    assert!(!prefix_matches(&[10, 1], &[10, 2], 15));
    assert!(prefix_matches(&[1, 2, 3, 4], &[9, 9, 9, 9], 0));
}

#[test]
fn a_published_port_binds_the_host_address_and_shows_the_guest_port() {
    let host_port = unused_port();
    let mut g = Guest::new(NetPolicy {
        listen: vec![(Proto::Tcp, 80)],
        ..NetPolicy::default()
    });
    g.host.net.publish = vec![Publish::parse(&format!("{host_port}:80")).unwrap()];
    let server = g.socket(AF_INET, SOCK_STREAM);
    assert_eq!(g.bind(server, NetAddr::v4([0; 4], 80)), Ok(0));
    assert_eq!(g.listen(server), Ok(0));
    let name = g.name(server, false).unwrap();
    assert_eq!((name.ipv4(), name.port), (Some(LOOPBACK4), 80));
    let peer = std::net::TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    let (conn, from) = g.retry(|g| g.accept(server)).unwrap();
    assert_eq!(from.port, peer.local_addr().unwrap().port());
    assert_eq!(g.name(conn, false).unwrap().port, 80);
    drop(peer);

    // An IPv6 socket takes an IPv4 publication mapped.
    let host_port = unused_port();
    g.host.net.publish = vec![Publish::parse(&format!("127.0.0.1:{host_port}:80")).unwrap()];
    let v6 = g.socket(AF_INET6, SOCK_STREAM);
    assert_eq!(g.bind(v6, NetAddr::v6([0; 16], 80, 0, 0)), Ok(0));
    assert_eq!(g.listen(v6), Ok(0));
    assert_eq!(g.name(v6, false).unwrap().port, 80);
    std::net::TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    // An IPv4 socket cannot take an IPv6 publication.
    g.host.net.publish = vec![Publish::parse("[::1]:9999:80").unwrap()];
    let v4 = g.socket(AF_INET, SOCK_STREAM);
    assert_eq!(g.bind(v4, NetAddr::v4([0; 4], 80)), Err(EADDRNOTAVAIL));
    // Unpublished ports bind as the guest gives them.
    let mut g = Guest::open();
    let s = g.socket(AF_INET, SOCK_STREAM);
    let port = unused_port();
    assert_eq!(g.bind(s, loopback(AF_INET, port)), Ok(0));
    assert_eq!(g.name(s, false).unwrap(), loopback(AF_INET, port));
}

#[test]
fn publish_values_are_parsed_like_docker_run_p() {
    let p = |s: &str| Publish::parse(s);
    assert_eq!(
        p("8080:80"),
        Ok(Publish {
            host: "127.0.0.1:8080".parse().unwrap(),
            guest_port: 80
        })
    );
    assert_eq!(
        p("0.0.0.0:443:8443"),
        Ok(Publish {
            host: "0.0.0.0:443".parse().unwrap(),
            guest_port: 8443
        })
    );
    assert_eq!(
        p("[::1]:8080:80"),
        Ok(Publish {
            host: "[::1]:8080".parse().unwrap(),
            guest_port: 80
        })
    );
    for (bad, says) in [
        ("80", "the form is"),
        ("", "the form is"),
        ("8080:", "is not a guest port"),
        ("8080:http", "is not a guest port"),
        ("70000:80", "is not a host port"),
        ("0:80", "the host port is 0"),
        ("8080:0", "the guest port is 0"),
        ("::1:8080:80", "is not an IP address"),
        ("localhost:8080:80", "is not an IP address"),
        ("1.2.3:8080:80", "is not an IP address"),
    ] {
        let e = p(bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    let twice = [p("8080:80").unwrap(), p("9090:80").unwrap()];
    let e = Publish::check_all(&twice).unwrap_err();
    assert!(
        e.contains("guest port 80 is published more than once"),
        "{e}"
    );
    assert_eq!(Publish::check_all(&twice[..1]), Ok(()));
}

#[test]
fn the_queue_merges_per_handle_and_drops_reports_of_closed_handles() {
    let mut q = Queue::new();
    assert!(q.push(3, 0, EV_IN));
    assert!(!q.push(5, 0, EV_OUT));
    assert!(!q.push(3, 0, EV_OUT));
    assert!(!q.push(MAX_SOCKETS, 0, EV_IN), "out of range");
    assert!(!q.push(6, 0, 0x8000_0000), "no readiness bit");
    q.forget(5);
    assert!(!q.push(5, 0, EV_IN), "armed before the close");
    assert!(!q.push(5, 1, EV_IN), "armed after it");
    assert_eq!(
        q.take(8),
        vec![
            NetEvent {
                handle: 3,
                events: EV_IN | EV_OUT
            },
            NetEvent {
                handle: 5,
                events: EV_IN
            }
        ]
    );
    assert!(q.take(8).is_empty());
    assert!(q.push(1, 0, EV_IN));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Whatever a guest asks on a few sockets of each kind, the host answers: a reply
    /// the firmware accepts, nothing written beyond `len` (checked by `call`).
    #[test]
    fn any_net_request_gets_a_reply_the_firmware_accepts(
        calls in proptest::collection::vec(
            (1u64..=15, 0u32..6, 0u64..=4, proptest::prelude::any::<u64>(),
             proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48), 0u64..80),
            1..24,
        )
    ) {
        let mut g = Guest::new(NetPolicy::default());
        for (domain, kind) in [(AF_INET, SOCK_STREAM), (AF_INET6, SOCK_DGRAM)] {
            g.socket(domain, kind);
        }
        for (op, fd, arg2_pick, arg2_any, data, len) in calls {
            let arg2 = match arg2_pick {
                0 => 0,
                1 => socket_arg2(AF_INET, SOCK_DGRAM, 0),
                2 => u64::from(EV_IN | EV_OUT),
                3 => (1 << 32) | 2,
                _ => arg2_any,
            };
            let len = match op {
                2 | 5 => 32,
                4 | 6 | 7 | 12 | 13 => 32 + len,
                10 | 11 => len,
                15 => len & !7,
                _ => 0,
            };
            let h = HostcallHeader {
                op: HostcallOp::Net as u32,
                fd,
                len,
                arg: op,
                arg2,
                ..Default::default()
            };
            if h.check_request().is_err() {
                continue;
            }
            let data = &data[..data.len().min(len as usize)];
            let _ = g.call(h, data);
        }
    }
}
