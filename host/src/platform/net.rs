//! The host side of the Net hostcall (shared-abi `net.rs`): the guest's sockets as
//! real sockets of the host, and the readiness of the ones it watches.
//!
//! [`NetHost`] keeps a table from handles (below [`MAX_SOCKETS`], the lowest free one
//! first) to host sockets, each non-blocking and close-on-exec, and serves one
//! function per [`NetOp`]. Every request has passed `check_request`; what it names is
//! still guest input: a handle that is not open answers `EBADF`, an address is checked
//! with [`NetAddr::check`] after it is copied out (`EAFNOSUPPORT` or `EINVAL`), an
//! option outside a short list answers `ENOPROTOOPT`, and the host's own errors go
//! back as their errno. Reply data are written within the request's `len` only, and
//! every `result` fits it (`net::reply_fits`).
//!
//! What the guest may reach is the image's network policy's ([`NetPolicy`]: nothing
//! unless it says so); where a port it listens on appears on the host is the
//! operator's (`nacre run --publish`, [`Publish`]).
//!
//! Readiness: the first [`NetOp::Arm`] starts a thread of this VM's that waits on an
//! epoll instance over the armed sockets (one shot each: a socket reported is watched
//! again only when armed again) and queues `(handle, events)`, one entry per handle
//! with its events merged. When the queue becomes non-empty it sends vCPU 0 an
//! interrupt on [`NET_VECTOR`] (when the launch gave it a [`MsiSender`]) and wakes a
//! Sleep hostcall in progress ([`NetHost::sleep`]). [`NetOp::Events`] takes the
//! queue. The thread ends when the [`NetHost`] is dropped, with its platform, when the
//! VM is torn down.

use crate::platform::launch::MsiSender;
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::hostcall::HostcallHeader;
use nacre_shared_abi::net::{
    socket_args, NetAddr, NetAddrError, NetEvent, NetOp, AF_INET, AF_INET6, EV_ALL, MAX_SOCKETS,
    MSG_RECV, MSG_SEND, MSG_TRUNC, NET_ADDR_SIZE, NET_VECTOR, SOCK_DGRAM, SOCK_STREAM,
};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// Linux errnos the table answers with itself (`include/uapi/asm-generic/errno-base.h`
/// and `include/uapi/asm-generic/errno.h`).
pub mod errno {
    /// I/O error (a host error without an errno).
    pub const EIO: u64 = 5;
    /// Bad file number: a handle that is not open.
    pub const EBADF: u64 = 9;
    /// Permission denied: a port the policy does not let the guest listen on.
    pub const EACCES: u64 = 13;
    /// Invalid argument.
    pub const EINVAL: u64 = 22;
    /// Too many open files: every handle is taken.
    pub const EMFILE: u64 = 24;
    /// Protocol not available: an option outside the list.
    pub const ENOPROTOOPT: u64 = 92;
    /// Address family not supported by protocol.
    pub const EAFNOSUPPORT: u64 = 97;
    /// Cannot assign requested address.
    pub const EADDRNOTAVAIL: u64 = 99;
    /// Connection refused: a destination the policy does not allow.
    pub const ECONNREFUSED: u64 = 111;
    /// Operation now in progress (a non-blocking connect).
    pub const EINPROGRESS: u64 = 115;
}
use errno::*;

/// Largest errno Linux has (`include/linux/err.h` MAX_ERRNO); `check_reply` refuses more.
const MAX_ERRNO: u64 = 4095;

/// The errno of the call that just failed, as a reply's `status`.
fn last_errno() -> u64 {
    match std::io::Error::last_os_error().raw_os_error() {
        Some(e) if (1..=MAX_ERRNO as i32).contains(&e) => e as u64,
        _ => EIO,
    }
}

/// A transport protocol, as policies and `--publish` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP (stream sockets).
    Tcp,
    /// UDP (datagram sockets).
    Udp,
}

impl Proto {
    fn of(kind: u32) -> Self {
        if kind == SOCK_DGRAM {
            Self::Udp
        } else {
            Self::Tcp
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A destination the policy lets the guest reach: `proto` to addresses in
/// `network/prefix`, on `port` (`None`: any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRule {
    /// The protocol.
    pub proto: Proto,
    /// The network (IPv4 or IPv6).
    pub network: IpAddr,
    /// Its prefix length (at most 32 for IPv4, 128 for IPv6).
    pub prefix: u8,
    /// The port, or any.
    pub port: Option<u16>,
}

impl ConnectRule {
    fn matches(&self, proto: Proto, ip: IpAddr, port: u16) -> bool {
        if self.proto != proto || self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` agree (a prefix longer than the
/// address never matches).
fn prefix_matches(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let bits = usize::from(prefix);
    if bits > a.len() * 8 {
        return false;
    }
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xFFu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

/// What the image's network policy lets the guest do: listen on the ports it declares
/// and connect (or send datagrams) to the destinations it declares. The default allows
/// nothing. The launcher sets it ([`NetConfig`]); the host refuses everything else with
/// a message on nacre's stderr: a connect or a datagram's destination with
/// `ECONNREFUSED`, a bind or listen on an undeclared port with `EACCES`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Ports the guest may bind and listen on (the guest's own port numbers).
    pub listen: Vec<(Proto, u16)>,
    /// Destinations the guest may connect or send to.
    pub connect: Vec<ConnectRule>,
    /// Everything allowed ([`NetPolicy::allow_all`]).
    everything: bool,
}

impl NetPolicy {
    /// The rules of an image's measured policy (shared-abi `net_policy`).
    pub fn from_rules(policy: &nacre_shared_abi::net_policy::Policy<'_>) -> Self {
        use nacre_shared_abi::net_policy::{Net, Proto as P, Rule};
        let proto = |p: P| match p {
            P::Tcp => Proto::Tcp,
            P::Udp => Proto::Udp,
        };
        let mut out = Self::default();
        for rule in policy.rules() {
            match rule {
                Rule::Listen { proto: p, port } => out.listen.push((proto(p), port)),
                Rule::Connect {
                    proto: p,
                    net,
                    port,
                } => {
                    let nets = match net {
                        Net::Any => vec![
                            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
                        ],
                        Net::V4 { addr, prefix } => vec![(IpAddr::V4(addr.into()), prefix)],
                        Net::V6 { addr, prefix } => vec![(IpAddr::V6(addr.into()), prefix)],
                    };
                    for (network, prefix) in nets {
                        out.connect.push(ConnectRule {
                            proto: proto(p),
                            network,
                            prefix,
                            port,
                        });
                    }
                }
            }
        }
        out
    }

    /// A policy that allows every port and destination.
    pub fn allow_all() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    /// Whether the guest may bind or listen on `port` with `proto`. Port 0 (the
    /// kernel picks one) is allowed for a bind, for clients that bind before they
    /// connect; a listen needs a declared port.
    pub fn allows_listen(&self, proto: Proto, port: u16) -> bool {
        self.everything || self.listen.contains(&(proto, port))
    }

    /// Whether the guest may connect or send to `ip`:`port` with `proto`. An IPv4
    /// address mapped into IPv6 (`::ffff:a.b.c.d`) is checked as the IPv4 address it
    /// reaches.
    pub fn allows_connect(&self, proto: Proto, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        self.everything || self.connect.iter().any(|r| r.matches(proto, ip, port))
    }
}

/// One `--publish`: a guest bind to `guest_port` (any guest address) binds the host
/// socket to `host` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// The host's address and port.
    pub host: SocketAddr,
    /// The guest's port.
    pub guest_port: u16,
}

impl Publish {
    /// Parse `HOST_ADDR:HOST_PORT:GUEST_PORT` or `HOST_PORT:GUEST_PORT` (on
    /// 127.0.0.1); an IPv6 address goes in brackets (`[::1]:8080:80`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let form = "the form is HOST_PORT:GUEST_PORT or HOST_ADDR:HOST_PORT:GUEST_PORT \
                    (an IPv6 address in brackets, as [::1]:8080:80)";
        let port = |p: &str, what: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) => Err(format!("{s:?}: the {what} is 0; ports are 1 to 65535")),
                Ok(n) => Ok(n),
                Err(_) => Err(format!("{s:?}: {p:?} is not a {what} (1 to 65535); {form}")),
            }
        };
        let Some((host, guest)) = s.rsplit_once(':') else {
            return Err(format!("{s:?}: {form}"));
        };
        let guest_port = port(guest, "guest port")?;
        let host = if !host.contains(':') {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(host, "host port")?)
        } else {
            let (addr, host_port) = host
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: {form}"))?;
            let host_port = port(host_port, "host port")?;
            let ip = match addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
                Some(v6) => v6.parse::<Ipv6Addr>().map(IpAddr::V6),
                None => addr.parse::<Ipv4Addr>().map(IpAddr::V4),
            }
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address; {form}"))?;
            SocketAddr::new(ip, host_port)
        };
        Ok(Self { host, guest_port })
    }

    /// Check a set of them: a guest port is published once.
    pub fn check_all(all: &[Self]) -> Result<(), String> {
        for (i, p) in all.iter().enumerate() {
            if all[..i].iter().any(|q| q.guest_port == p.guest_port) {
                return Err(format!(
                    "guest port {} is published more than once",
                    p.guest_port
                ));
            }
        }
        Ok(())
    }
}

/// What the launcher gives the guest's network: the image's policy and the operator's
/// published ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// What the guest may reach (default: nothing).
    pub policy: NetPolicy,
    /// `--publish`.
    pub publish: Vec<Publish>,
}

/// One of the guest's sockets.
#[derive(Debug)]
struct Socket {
    fd: OwnedFd,
    /// [`AF_INET`] or [`AF_INET6`].
    family: u16,
    /// [`SOCK_STREAM`] or [`SOCK_DGRAM`].
    kind: u32,
    /// The guest's port when the socket is bound to a published one (or accepted
    /// from such a listener): its name shows this port.
    published: Option<u16>,
    /// Whether the watcher's epoll instance has it.
    watched: bool,
}

impl Socket {
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn proto(&self) -> Proto {
        Proto::of(self.kind)
    }
}

/// The queue of readiness: one entry per handle, in the order they became ready.
#[derive(Debug)]
struct Queue {
    /// Each handle's queued events (0: not queued).
    events: Vec<u32>,
    /// The queued handles.
    order: VecDeque<u32>,
    /// Each handle's generation, counted up when it is closed: the watcher drops a
    /// report of a socket closed since it was armed.
    generation: Vec<u32>,
}

impl Queue {
    fn new() -> Self {
        Self {
            events: vec![0; MAX_SOCKETS as usize],
            order: VecDeque::new(),
            generation: vec![0; MAX_SOCKETS as usize],
        }
    }

    /// Queue `events` for `handle` armed in `generation`; whether the queue was empty.
    fn push(&mut self, handle: u32, generation: u32, events: u32) -> bool {
        let h = handle as usize;
        let events = events & EV_ALL;
        if h >= self.events.len() || self.generation[h] != generation || events == 0 {
            return false;
        }
        let was_empty = self.order.is_empty();
        if self.events[h] == 0 {
            self.order.push_back(handle);
        }
        self.events[h] |= events;
        was_empty
    }

    /// Forget `handle` (closed): its queued events and any report on its way.
    fn forget(&mut self, handle: u32) {
        let h = handle as usize;
        if self.events[h] != 0 {
            self.events[h] = 0;
            self.order.retain(|&q| q != handle);
        }
        self.generation[h] = self.generation[h].wrapping_add(1);
    }

    /// Take up to `max` entries.
    fn take(&mut self, max: usize) -> Vec<NetEvent> {
        let n = max.min(self.order.len());
        self.order
            .drain(..n)
            .map(|handle| {
                let events = std::mem::take(&mut self.events[handle as usize]);
                NetEvent { handle, events }
            })
            .collect()
    }
}

/// What the watcher thread and the hostcalls share.
#[derive(Debug)]
struct Readiness {
    queue: Mutex<Queue>,
    /// Notified when the queue becomes non-empty.
    ready: Condvar,
}

impl Readiness {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The epoll `data` of the watcher's own stop event.
const STOP: u64 = u64::MAX;
/// Events the watcher takes from epoll at once.
const EPOLL_BATCH: usize = 64;

/// The watcher thread and what it waits on.
#[derive(Debug)]
struct Watcher {
    epoll: Arc<OwnedFd>,
    /// An eventfd in the epoll set: written to stop the thread.
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(readiness: Arc<Readiness>, msi: Option<Arc<MsiSender>>) -> Result<Self, u64> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(last_errno());
        }
        // SAFETY: a new descriptor owned by nothing else.
        let epoll = Arc::new(unsafe { OwnedFd::from_raw_fd(epoll) });
        // SAFETY: eventfd takes no pointers; the result is checked.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(last_errno());
        }
        // SAFETY: a new descriptor owned by nothing else.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: STOP,
        };
        // SAFETY: both descriptors are open; `event` is valid for the call.
        let r = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                stop.as_raw_fd(),
                &mut event,
            )
        };
        if r < 0 {
            return Err(last_errno());
        }
        let waits_on = epoll.clone();
        let thread = std::thread::Builder::new()
            .name("nacre-net".into())
            .spawn(move || watch(&waits_on, &readiness, msi.as_deref()))
            .map_err(|e| e.raw_os_error().map_or(EIO, |e| e.unsigned_abs().into()))?;
        Ok(Self {
            epoll,
            stop,
            thread: Some(thread),
        })
    }

    /// Watch `fd` (handle `handle` of `generation`) for `events`, once.
    fn arm(&self, socket: &mut Socket, handle: u32, generation: u32, events: u32) -> u64 {
        let mut event = libc::epoll_event {
            events: events | libc::EPOLLONESHOT as u32,
            u64: u64::from(handle) | u64::from(generation) << 32,
        };
        let op = if socket.watched {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        // SAFETY: both descriptors are open; `event` is valid for the call.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, socket.raw(), &mut event) };
        if r < 0 {
            return last_errno();
        }
        socket.watched = true;
        0
    }

    /// Stop watching `socket`.
    fn disarm(&self, socket: &Socket) {
        if socket.watched {
            let mut event = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: both descriptors are open; `event` is valid for the call (and
            // ignored by EPOLL_CTL_DEL).
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    socket.raw(),
                    &mut event,
                )
            };
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from `one` to the eventfd, which is open.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watcher thread: queue what epoll reports until the stop event.
fn watch(epoll: &OwnedFd, readiness: &Readiness, msi: Option<&MsiSender>) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH];
    loop {
        // SAFETY: `events` holds EPOLL_BATCH entries for the kernel to fill.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EPOLL_BATCH as i32,
                -1,
            )
        };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let mut announce = false;
        {
            let mut queue = readiness.lock();
            for e in &events[..n as usize] {
                let data = e.u64;
                if data == STOP {
                    return;
                }
                announce |= queue.push(data as u32, (data >> 32) as u32, e.events);
            }
        }
        if announce {
            readiness.ready.notify_all();
            if let Some(msi) = msi {
                // A VM being torn down refuses it; the sleep's wake-up still holds.
                let _ = msi.send(NET_VECTOR);
            }
        }
    }
}

/// How many policy refusals a run shows on stderr (the guest chooses how many it
/// makes).
const REFUSALS_SHOWN: u32 = 20;

/// Why a Net call failed: an errno for the guest, or guest memory the host cannot
/// reach (a host error).
enum Fail {
    Errno(u64),
    Memory(MemoryError),
}

impl From<MemoryError> for Fail {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

type Answer = Result<u64, Fail>;

/// The guest's sockets and their readiness (see the module documentation).
#[derive(Debug)]
pub struct NetHost {
    /// What the guest may reach, set by the launcher (default: nothing).
    pub policy: NetPolicy,
    /// Ports published on the host (`--publish`), set by the launcher.
    pub publish: Vec<Publish>,
    /// The sockets, at their handles (grown up to [`MAX_SOCKETS`]).
    sockets: Vec<Option<Socket>>,
    readiness: Arc<Readiness>,
    /// The readiness thread, from the first Arm on.
    watcher: Option<Watcher>,
    /// Where the watcher (and a hostile test's made-up report) sends its interrupts.
    msi: Option<Arc<MsiSender>>,
    /// Policy refusals shown on stderr.
    refusals: u32,
    /// Reused buffer for data going through the area.
    buffer: Vec<u8>,
}

impl Default for NetHost {
    fn default() -> Self {
        Self {
            policy: NetPolicy::default(),
            publish: Vec::new(),
            sockets: Vec::new(),
            readiness: Arc::new(Readiness {
                queue: Mutex::new(Queue::new()),
                ready: Condvar::new(),
            }),
            watcher: None,
            msi: None,
            refusals: 0,
            buffer: Vec::new(),
        }
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        // The watcher thread ends (its Drop) before the sockets close; a socket whose
        // app asked for a lingering close is closed without lingering, so that the VM's
        // end never waits for a peer.
        self.watcher = None;
        for socket in self.sockets.iter().flatten() {
            let off = libc::linger {
                l_onoff: 0,
                l_linger: 0,
            };
            // SAFETY: the socket is open; `off` is a `struct linger` valid for the call.
            unsafe {
                libc::setsockopt(
                    socket.raw(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const off).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
        }
    }
}

impl NetHost {
    /// Apply the launcher's settings.
    pub fn configure(&mut self, config: &NetConfig) {
        self.policy = config.policy.clone();
        self.publish = config.publish.clone();
    }

    /// Send readiness interrupts with `msi` (the launch, which has the VM).
    pub fn set_interrupts(&mut self, msi: MsiSender) {
        self.msi = Some(Arc::new(msi));
    }

    /// A hostile host's report (the hostile-host tests): queue `events` for `handle`,
    /// open or not, ready or not, and end a sleep in progress.
    pub fn inject(&self, handle: u32, events: u32) {
        let mut queue = self.readiness.lock();
        let h = handle as usize;
        let mut announce = false;
        if h < queue.generation.len() {
            let generation = queue.generation[h];
            announce = queue.push(handle, generation, events);
        }
        drop(queue);
        self.readiness.ready.notify_all();
        // Announced as the readiness thread announces its reports.
        if let (true, Some(msi)) = (announce, &self.msi) {
            let _ = msi.send(NET_VECTOR);
        }
    }

    /// How many sockets are open.
    pub fn open_sockets(&self) -> usize {
        self.sockets.iter().flatten().count()
    }

    /// The Sleep hostcall: wait up to `ns` nanoseconds, ending early when network
    /// events are queued (at once if some are). Whether it ended for them.
    pub fn sleep(&self, ns: u64) -> bool {
        let deadline = Instant::now().checked_add(Duration::from_nanos(ns));
        let mut queue = self.readiness.lock();
        loop {
            if !queue.order.is_empty() {
                return true;
            }
            let now = Instant::now();
            queue = match deadline {
                Some(d) if d <= now => return false,
                Some(d) => {
                    self.readiness
                        .ready
                        .wait_timeout(queue, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .readiness
                    .ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Serve Net request `h` (checked: `op` is its operation) with its data at `data`:
    /// sets `status` and `result`.
    pub fn serve(
        &mut self,
        mem: &GuestMemory,
        op: NetOp,
        h: &mut HostcallHeader,
        data: u64,
    ) -> Result<(), MemoryError> {
        let answer = match op {
            NetOp::Socket => self.socket(h),
            NetOp::Bind => self.bind(mem, h, data),
            NetOp::Listen => self.listen(h),
            NetOp::Accept => self.accept(mem, h, data),
            NetOp::Connect => self.connect(mem, h, data),
            NetOp::Send => self.send(mem, h, data),
            NetOp::Recv => self.recv(mem, h, data),
            NetOp::Shutdown => self.shutdown(h),
            NetOp::Close => self.close(h),
            NetOp::GetOpt => self.get_option(mem, h, data),
            NetOp::SetOpt => self.set_option(mem, h, data),
            NetOp::SockName => self.name(mem, h, data, false),
            NetOp::PeerName => self.name(mem, h, data, true),
            NetOp::Arm => self.arm(h),
            NetOp::Events => self.events(mem, h, data),
        };
        match answer {
            Ok(result) => h.result = result,
            Err(Fail::Errno(e)) => h.status = e,
            Err(Fail::Memory(e)) => return Err(e),
        }
        Ok(())
    }

    /// The open socket at the request's handle.
    fn socket_of(&self, h: &HostcallHeader) -> Result<&Socket, Fail> {
        self.sockets
            .get(h.fd as usize)
            .and_then(Option::as_ref)
            .ok_or(Fail::Errno(EBADF))
    }

    /// The lowest free handle.
    fn free_handle(&self) -> Result<u32, Fail> {
        let i = self
            .sockets
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.sockets.len());
        u32::try_from(i)
            .ok()
            .filter(|&i| i < MAX_SOCKETS)
            .ok_or(Fail::Errno(EMFILE))
    }

    /// Put `socket` at `handle` (from [`Self::free_handle`]).
    fn insert(&mut self, handle: u32, socket: Socket) -> u64 {
        let i = handle as usize;
        if i >= self.sockets.len() {
            self.sockets.resize_with(i + 1, || None);
        }
        self.sockets[i] = Some(socket);
        u64::from(handle)
    }

    /// Say on stderr what the policy refused (a few times per run).
    fn refuse(&mut self, what: std::fmt::Arguments<'_>) {
        self.refusals = self.refusals.saturating_add(1);
        if self.refusals <= REFUSALS_SHOWN {
            crate::say!("nacre: the image's network policy refuses {what}");
        }
        if self.refusals == REFUSALS_SHOWN {
            crate::say!("nacre: further network policy refusals are not shown");
        }
    }

    fn socket(&mut self, h: &HostcallHeader) -> Answer {
        let (domain, kind, protocol) = socket_args(h.arg2).ok_or(Fail::Errno(EINVAL))?;
        let handle = self.free_handle()?;
        // SAFETY: socket takes no pointers; the result is checked.
        let fd = unsafe {
            libc::socket(
                i32::from(domain),
                kind as i32 | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                protocol as i32,
            )
        };
        if fd < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        // SAFETY: a new descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = Socket {
            fd,
            family: domain,
            kind,
            published: None,
            watched: false,
        };
        Ok(self.insert(handle, socket))
    }

    fn bind(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let addr = read_addr(mem, data, false)?;
        let (raw, family, proto) = {
            let s = self.socket_of(h)?;
            (s.raw(), s.family, s.proto())
        };
        let port = addr.port;
        if port != 0 && !self.policy.allows_listen(proto, port) {
            self.refuse(format_args!(
                "a bind to {} port {port}, which it does not declare",
                proto.name()
            ));
            return Err(Fail::Errno(EACCES));
        }
        let published = self
            .publish
            .iter()
            .find(|p| port != 0 && p.guest_port == port)
            .copied();
        let target = match published {
            None => addr,
            Some(p) => {
                if addr.family != family {
                    // What Linux answers for the wrong family.
                    return Err(Fail::Errno(if family == AF_INET {
                        EAFNOSUPPORT
                    } else {
                        EINVAL
                    }));
                }
                host_addr_for(p.host, family).ok_or_else(|| {
                    self.refuse_publish(p);
                    Fail::Errno(EADDRNOTAVAIL)
                })?
            }
        };
        let (sa, len) = sockaddr(&target);
        // SAFETY: `sa` holds a sockaddr of `len` bytes; the socket is open.
        let r = unsafe { libc::bind(raw, (&raw const sa).cast(), len) };
        if r < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        if let Some(s) = self.sockets[h.fd as usize].as_mut() {
            s.published = published.map(|p| p.guest_port);
        }
        Ok(0)
    }

    /// A published IPv6 address cannot take an IPv4 socket's bind.
    fn refuse_publish(&mut self, p: Publish) {
        self.refusals = self.refusals.saturating_add(1);
        if self.refusals <= REFUSALS_SHOWN {
            crate::say!(
                "nacre: guest port {} is published on {}, which an IPv4 socket cannot bind",
                p.guest_port,
                p.host
            );
        }
    }

    fn listen(&mut self, h: &HostcallHeader) -> Answer {
        let s = self.socket_of(h)?;
        let (raw, proto, published) = (s.raw(), s.proto(), s.published);
        if proto == Proto::Tcp {
            let port = match published {
                Some(p) => p,
                None => local_name(raw).map_or(0, |a| a.port),
            };
            if port == 0 || !self.policy.allows_listen(proto, port) {
                self.refuse(format_args!(
                    "listening on tcp port {port}, which it does not declare"
                ));
                return Err(Fail::Errno(EACCES));
            }
        }
        let backlog = i32::try_from(h.arg2).unwrap_or(i32::MAX);
        // SAFETY: listen takes no pointers; the socket is open.
        if unsafe { libc::listen(raw, backlog) } < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        Ok(0)
    }

    fn accept(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let s = self.socket_of(h)?;
        let (raw, family, kind, published) = (s.raw(), s.family, s.kind, s.published);
        let handle = self.free_handle()?;
        let mut sa = zeroed_storage();
        let mut len = storage_len();
        // SAFETY: `sa` has room for `len` bytes of any socket address; the socket is
        // open; the kernel writes the address and its length.
        let fd = unsafe {
            libc::accept4(
                raw,
                (&raw mut sa).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        // SAFETY: a new descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = Socket {
            fd,
            family,
            kind,
            published,
            watched: false,
        };
        let peer = net_addr(&sa, len);
        let result = self.insert(handle, socket);
        mem.write(data, peer.as_bytes())?;
        Ok(result)
    }

    fn connect(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let addr = read_addr(mem, data, false)?;
        let s = self.socket_of(h)?;
        let (raw, proto) = (s.raw(), s.proto());
        self.check_destination(proto, &addr, "a connection")?;
        let (sa, len) = sockaddr(&addr);
        // SAFETY: `sa` holds a sockaddr of `len` bytes; the socket is open.
        if unsafe { libc::connect(raw, (&raw const sa).cast(), len) } < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        Ok(0)
    }

    /// Refuse a destination the policy does not allow.
    fn check_destination(&mut self, proto: Proto, addr: &NetAddr, what: &str) -> Result<(), Fail> {
        let Some(ip) = ip_of(addr) else {
            return Ok(());
        };
        if self.policy.allows_connect(proto, ip, addr.port) {
            return Ok(());
        }
        self.refuse(format_args!(
            "{what} to {} ({}), which it does not declare",
            SocketAddr::new(ip, addr.port),
            proto.name()
        ));
        Err(Fail::Errno(ECONNREFUSED))
    }

    fn send(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let dest = read_addr(mem, data, true)?;
        let s = self.socket_of(h)?;
        let (raw, kind, proto) = (s.raw(), s.kind, s.proto());
        // A stream socket ignores a destination, as Linux's TCP does.
        let dest = (kind == SOCK_DGRAM && dest.family != 0).then_some(dest);
        if let Some(d) = &dest {
            self.check_destination(proto, d, "a datagram")?;
        }
        let n = (h.len - NET_ADDR_SIZE) as usize;
        self.buffer.resize(self.buffer.len().max(n), 0);
        mem.read(data + NET_ADDR_SIZE, &mut self.buffer[..n])?;
        let flags = (h.arg2 & MSG_SEND) as i32 | libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        let (sa, len) = dest.as_ref().map_or((zeroed_storage(), 0), sockaddr);
        let to = if dest.is_some() {
            (&raw const sa).cast()
        } else {
            std::ptr::null()
        };
        // SAFETY: the buffer holds `n` bytes; `to` is null or `sa`, a sockaddr of `len`
        // bytes; the socket is open.
        let sent = unsafe { libc::sendto(raw, self.buffer.as_ptr().cast(), n, flags, to, len) };
        if sent < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        Ok((sent as u64).min(n as u64))
    }

    fn recv(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let s = self.socket_of(h)?;
        let (raw, kind) = (s.raw(), s.kind);
        let n = (h.len - NET_ADDR_SIZE) as usize;
        self.buffer.resize(self.buffer.len().max(n), 0);
        let flags = (h.arg2 & MSG_RECV) as i32 | libc::MSG_DONTWAIT;
        let mut sa = zeroed_storage();
        let mut len = storage_len();
        // SAFETY: the buffer has room for `n` bytes and `sa` for `len`; the socket is
        // open.
        let got = unsafe {
            libc::recvfrom(
                raw,
                self.buffer.as_mut_ptr().cast(),
                n,
                flags,
                (&raw mut sa).cast(),
                &mut len,
            )
        };
        if got < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        let got = got as u64;
        let truncating = h.arg2 & MSG_TRUNC != 0;
        // With MSG_TRUNC a stream socket discards what it received: nothing to copy.
        let copied = if truncating && kind == SOCK_STREAM {
            0
        } else {
            got.min(n as u64) as usize
        };
        let source = if len == 0 {
            NetAddr::NONE
        } else {
            net_addr(&sa, len)
        };
        mem.write(data, source.as_bytes())?;
        mem.write(data + NET_ADDR_SIZE, &self.buffer[..copied])?;
        Ok(if truncating {
            got.min(u64::from(u32::MAX))
        } else {
            got.min(n as u64)
        })
    }

    fn shutdown(&mut self, h: &HostcallHeader) -> Answer {
        let raw = self.socket_of(h)?.raw();
        // SHUT_RD, SHUT_WR and SHUT_RDWR are 0, 1 and 2 (`include/linux/net.h`), as
        // the request's `arg2` (checked).
        // SAFETY: shutdown takes no pointers; the socket is open.
        if unsafe { libc::shutdown(raw, h.arg2 as i32) } < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        Ok(0)
    }

    fn close(&mut self, h: &HostcallHeader) -> Answer {
        self.socket_of(h)?;
        let socket = self.sockets[h.fd as usize].take();
        if let (Some(w), Some(s)) = (&self.watcher, &socket) {
            w.disarm(s);
        }
        self.readiness.lock().forget(h.fd);
        // Dropping the socket closes it.
        drop(socket);
        Ok(0)
    }

    fn get_option(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let raw = self.socket_of(h)?.raw();
        let (level, name) = option_of(h.arg2);
        if !option(level, name).is_some_and(|o| o.get) {
            return Err(Fail::Errno(ENOPROTOOPT));
        }
        let mut value = [0u8; nacre_shared_abi::net::MAX_OPTION as usize];
        let mut len = h.len as libc::socklen_t;
        // SAFETY: `value` has room for `len` (at most MAX_OPTION, checked) bytes; the
        // socket is open.
        let r = unsafe { libc::getsockopt(raw, level, name, value.as_mut_ptr().cast(), &mut len) };
        if r < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        let len = u64::from(len).min(h.len);
        mem.write(data, &value[..len as usize])?;
        Ok(len)
    }

    fn set_option(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let raw = self.socket_of(h)?.raw();
        let (level, name) = option_of(h.arg2);
        if !option(level, name).is_some_and(|o| o.set) {
            return Err(Fail::Errno(ENOPROTOOPT));
        }
        let mut value = [0u8; nacre_shared_abi::net::MAX_OPTION as usize];
        let len = h.len as usize;
        mem.read(data, &mut value[..len])?;
        // SAFETY: `value` holds `len` bytes; the socket is open.
        let r = unsafe {
            libc::setsockopt(
                raw,
                level,
                name,
                value.as_ptr().cast(),
                len as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(Fail::Errno(last_errno()));
        }
        Ok(0)
    }

    fn name(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64, peer: bool) -> Answer {
        let s = self.socket_of(h)?;
        let (raw, published) = (s.raw(), s.published);
        let name = if peer {
            peer_name(raw)
        } else {
            local_name(raw).map(|mut a| {
                // The guest sees its own port where the host's differs.
                if let Some(port) = published {
                    a.port = port;
                }
                a
            })
        };
        let name = name.map_err(Fail::Errno)?;
        mem.write(data, name.as_bytes())?;
        Ok(NET_ADDR_SIZE)
    }

    fn arm(&mut self, h: &HostcallHeader) -> Answer {
        self.socket_of(h)?;
        if self.watcher.is_none() {
            let watcher =
                Watcher::start(self.readiness.clone(), self.msi.clone()).map_err(Fail::Errno)?;
            self.watcher = Some(watcher);
        }
        let generation = self.readiness.lock().generation[h.fd as usize];
        let (Some(watcher), Some(socket)) = (&self.watcher, self.sockets[h.fd as usize].as_mut())
        else {
            return Err(Fail::Errno(EBADF));
        };
        match watcher.arm(socket, h.fd, generation, h.arg2 as u32 & EV_ALL) {
            0 => Ok(0),
            e => Err(Fail::Errno(e)),
        }
    }

    fn events(&mut self, mem: &GuestMemory, h: &HostcallHeader, data: u64) -> Answer {
        let max = (h.len / 8) as usize;
        let taken = self.readiness.lock().take(max);
        let bytes = taken.as_bytes();
        mem.write(data, bytes)?;
        Ok(bytes.len() as u64)
    }
}

/// Copy the [`NetAddr`] at `data` out of guest memory and check it (family 0 allowed
/// when `none_ok`).
fn read_addr(mem: &GuestMemory, data: u64, none_ok: bool) -> Result<NetAddr, Fail> {
    let mut addr = NetAddr::default();
    mem.read(data, addr.as_mut_bytes())?;
    match addr.check(none_ok) {
        Ok(()) => Ok(addr),
        Err(NetAddrError::Family(_)) => Err(Fail::Errno(EAFNOSUPPORT)),
        Err(NetAddrError::Reserved) => Err(Fail::Errno(EINVAL)),
    }
}

/// The IP address of a checked [`NetAddr`] (`None` for none).
fn ip_of(addr: &NetAddr) -> Option<IpAddr> {
    match addr.family {
        AF_INET => addr.ipv4().map(|ip| IpAddr::V4(ip.into())),
        AF_INET6 => Some(IpAddr::V6(addr.addr.into())),
        _ => None,
    }
}

/// The [`NetAddr`] a socket of `family` binds for a published host address: an IPv4
/// address goes to an IPv6 socket mapped (`::ffff:a.b.c.d`); an IPv6 address cannot
/// go to an IPv4 socket.
fn host_addr_for(host: SocketAddr, family: u16) -> Option<NetAddr> {
    match (host.ip(), family) {
        (IpAddr::V4(ip), AF_INET) => Some(NetAddr::v4(ip.octets(), host.port())),
        (IpAddr::V4(ip), AF_INET6) => {
            Some(NetAddr::v6(ip.to_ipv6_mapped().octets(), host.port(), 0, 0))
        }
        (IpAddr::V6(ip), AF_INET6) => Some(NetAddr::v6(ip.octets(), host.port(), 0, 0)),
        _ => None,
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data, valid all zero.
    unsafe { std::mem::zeroed() }
}

fn storage_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
}

/// A checked [`NetAddr`] (IPv4 or IPv6) as a kernel socket address and its length.
fn sockaddr(addr: &NetAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut storage = zeroed_storage();
    if addr.family == AF_INET {
        let sin = libc::sockaddr_in {
            sin_family: AF_INET,
            sin_port: addr.port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([
                    addr.addr[0],
                    addr.addr[1],
                    addr.addr[2],
                    addr.addr[3],
                ]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_storage is larger than, and aligned for, any sockaddr.
        unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
        (
            storage,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    } else {
        let sin6 = libc::sockaddr_in6 {
            sin6_family: AF_INET6,
            sin6_port: addr.port.to_be(),
            sin6_flowinfo: addr.flowinfo.to_be(),
            sin6_addr: libc::in6_addr { s6_addr: addr.addr },
            sin6_scope_id: addr.scope_id,
        };
        // SAFETY: sockaddr_storage is larger than, and aligned for, any sockaddr.
        unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
        (
            storage,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    }
}

/// A kernel socket address of `len` bytes as a [`NetAddr`] (none for another family or
/// a short one).
fn net_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> NetAddr {
    let len = len as usize;
    match storage.ss_family {
        AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in there; sockaddr_storage is
            // aligned for it.
            let sin = unsafe { std::ptr::read((&raw const *storage).cast::<libc::sockaddr_in>()) };
            NetAddr::v4(
                sin.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(sin.sin_port),
            )
        }
        AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the kernel wrote a sockaddr_in6 there; sockaddr_storage is
            // aligned for it.
            let sin6 =
                unsafe { std::ptr::read((&raw const *storage).cast::<libc::sockaddr_in6>()) };
            NetAddr::v6(
                sin6.sin6_addr.s6_addr,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )
        }
        _ => NetAddr::NONE,
    }
}

/// getsockname of `fd`.
fn local_name(fd: RawFd) -> Result<NetAddr, u64> {
    let mut sa = zeroed_storage();
    let mut len = storage_len();
    // SAFETY: `sa` has room for `len` bytes; the kernel writes the name and its length.
    if unsafe { libc::getsockname(fd, (&raw mut sa).cast(), &mut len) } < 0 {
        return Err(last_errno());
    }
    Ok(net_addr(&sa, len))
}

/// getpeername of `fd`.
fn peer_name(fd: RawFd) -> Result<NetAddr, u64> {
    let mut sa = zeroed_storage();
    let mut len = storage_len();
    // SAFETY: `sa` has room for `len` bytes; the kernel writes the name and its length.
    if unsafe { libc::getpeername(fd, (&raw mut sa).cast(), &mut len) } < 0 {
        return Err(last_errno());
    }
    Ok(net_addr(&sa, len))
}

/// The (level, name) of a GetOpt or SetOpt request's `arg2`.
fn option_of(arg2: u64) -> (i32, i32) {
    ((arg2 >> 32) as u32 as i32, arg2 as u32 as i32)
}

/// Socket option levels: `SOL_SOCKET` (`include/uapi/asm-generic/socket.h`), and the
/// protocol numbers `IPPROTO_IP`, `IPPROTO_TCP`, `IPPROTO_IPV6`
/// (`include/uapi/linux/in.h`).
pub mod level {
    /// Options of every socket.
    pub const SOL_SOCKET: i32 = 1;
    /// IPv4.
    pub const IPPROTO_IP: i32 = 0;
    /// TCP.
    pub const IPPROTO_TCP: i32 = 6;
    /// IPv6.
    pub const IPPROTO_IPV6: i32 = 41;
}

/// `SOL_SOCKET` option names (`include/uapi/asm-generic/socket.h`, which x86-64 uses).
pub mod so {
    /// Reuse a local address in TIME_WAIT.
    pub const SO_REUSEADDR: i32 = 2;
    /// The socket type (read only).
    pub const SO_TYPE: i32 = 3;
    /// The pending error, cleared by reading it (read only).
    pub const SO_ERROR: i32 = 4;
    /// Allow broadcast datagrams.
    pub const SO_BROADCAST: i32 = 6;
    /// Send buffer size.
    pub const SO_SNDBUF: i32 = 7;
    /// Receive buffer size.
    pub const SO_RCVBUF: i32 = 8;
    /// TCP keep-alives.
    pub const SO_KEEPALIVE: i32 = 9;
    /// Out-of-band data inline.
    pub const SO_OOBINLINE: i32 = 10;
    /// `struct linger`: how close waits for unsent data.
    pub const SO_LINGER: i32 = 13;
    /// Several sockets on one port.
    pub const SO_REUSEPORT: i32 = 15;
    /// Receive timeout (`SO_RCVTIMEO_OLD`): refused, the firmware keeps timeouts.
    pub const SO_RCVTIMEO_OLD: i32 = 20;
    /// Send timeout (`SO_SNDTIMEO_OLD`): refused, as [`SO_RCVTIMEO_OLD`].
    pub const SO_SNDTIMEO_OLD: i32 = 21;
    /// Whether the socket listens (read only).
    pub const SO_ACCEPTCONN: i32 = 30;
    /// The protocol (read only).
    pub const SO_PROTOCOL: i32 = 38;
    /// The address family (read only).
    pub const SO_DOMAIN: i32 = 39;
    /// Receive timeout (`SO_RCVTIMEO_NEW`): refused.
    pub const SO_RCVTIMEO_NEW: i32 = 66;
    /// Send timeout (`SO_SNDTIMEO_NEW`): refused.
    pub const SO_SNDTIMEO_NEW: i32 = 67;
}

/// `IPPROTO_TCP` option names (`include/uapi/linux/tcp.h`).
pub mod tcp {
    /// Send small segments at once (no Nagle).
    pub const TCP_NODELAY: i32 = 1;
    /// Idle time before keep-alive probes.
    pub const TCP_KEEPIDLE: i32 = 4;
    /// Time between keep-alive probes.
    pub const TCP_KEEPINTVL: i32 = 5;
    /// Keep-alive probes before the connection drops.
    pub const TCP_KEEPCNT: i32 = 6;
    /// Acknowledge at once.
    pub const TCP_QUICKACK: i32 = 12;
}

/// `IPPROTO_IP` option names (`include/uapi/linux/in.h`).
pub mod ip {
    /// Type of service.
    pub const IP_TOS: i32 = 1;
    /// Time to live.
    pub const IP_TTL: i32 = 2;
    /// Extended error reporting (glibc's resolver sets it on every UDP socket and gives
    /// up on a name server when it cannot).
    pub const IP_RECVERR: i32 = 11;
}

/// `IPPROTO_IPV6` option names (`include/uapi/linux/in6.h`).
pub mod ipv6 {
    /// Hop limit of unicast packets.
    pub const IPV6_UNICAST_HOPS: i32 = 16;
    /// Extended error reporting (as `IP_RECVERR`).
    pub const IPV6_RECVERR: i32 = 25;
    /// IPv6 only (no IPv4-mapped addresses).
    pub const IPV6_V6ONLY: i32 = 26;
    /// Traffic class.
    pub const IPV6_TCLASS: i32 = 67;
}

/// How an option on the list may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OptionUse {
    get: bool,
    set: bool,
}

/// The options the host answers, and how; `None` for every other (`ENOPROTOOPT`),
/// among them the timeouts, which the firmware keeps itself.
fn option(level: i32, name: i32) -> Option<OptionUse> {
    const RW: OptionUse = OptionUse {
        get: true,
        set: true,
    };
    const RO: OptionUse = OptionUse {
        get: true,
        set: false,
    };
    match (level, name) {
        (
            level::SOL_SOCKET,
            so::SO_REUSEADDR
            | so::SO_REUSEPORT
            | so::SO_KEEPALIVE
            | so::SO_RCVBUF
            | so::SO_SNDBUF
            | so::SO_LINGER
            | so::SO_BROADCAST
            | so::SO_OOBINLINE,
        ) => Some(RW),
        (
            level::SOL_SOCKET,
            so::SO_ERROR | so::SO_TYPE | so::SO_ACCEPTCONN | so::SO_PROTOCOL | so::SO_DOMAIN,
        ) => Some(RO),
        (
            level::IPPROTO_TCP,
            tcp::TCP_NODELAY
            | tcp::TCP_KEEPIDLE
            | tcp::TCP_KEEPINTVL
            | tcp::TCP_KEEPCNT
            | tcp::TCP_QUICKACK,
        ) => Some(RW),
        (level::IPPROTO_IP, ip::IP_TOS | ip::IP_TTL | ip::IP_RECVERR) => Some(RW),
        (
            level::IPPROTO_IPV6,
            ipv6::IPV6_V6ONLY | ipv6::IPV6_UNICAST_HOPS | ipv6::IPV6_TCLASS | ipv6::IPV6_RECVERR,
        ) => Some(RW),
        _ => None,
    }
}

/// The run counter of a Net operation (`hostcalls.net.NAME`).
pub fn counter_name(op: NetOp) -> &'static str {
    match op {
        NetOp::Socket => "net.socket",
        NetOp::Bind => "net.bind",
        NetOp::Listen => "net.listen",
        NetOp::Accept => "net.accept",
        NetOp::Connect => "net.connect",
        NetOp::Send => "net.send",
        NetOp::Recv => "net.recv",
        NetOp::Shutdown => "net.shutdown",
        NetOp::Close => "net.close",
        NetOp::GetOpt => "net.getsockopt",
        NetOp::SetOpt => "net.setsockopt",
        NetOp::SockName => "net.getsockname",
        NetOp::PeerName => "net.getpeername",
        NetOp::Arm => "net.arm",
        NetOp::Events => "net.events",
    }
}

#[cfg(test)]
mod tests;
