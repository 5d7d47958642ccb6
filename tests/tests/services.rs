//! Services: servers in the guest exercised from the host through their published
//! ports with curl and ApacheBench (`ab`, Debian's apache2-utils), compared with the
//! same server run natively: every response checked, none lost.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nacre_tests::{
    built_app, describe_output, emulated_keys_dir, nacre_bin, on_each_platform, package_with,
    require_kvm, scratch_dir, PackageOptions, Toolchain,
};

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir(tmp(), "services"))
}

/// A server process (native or `nacre run`), killed if the test ends before it does.
struct Server {
    child: Option<Child>,
    what: String,
}

impl Server {
    /// Start `program args...` and wait until 127.0.0.1:`port` takes connections.
    fn start(mut cmd: Command, port: u16, what: &str) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let mut server = Self {
            child: Some(child),
            what: what.to_owned(),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > Duration::from_secs(90) {
                let out = server.finish();
                panic!(
                    "{what}: the server never listened\n{}",
                    describe_output(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Wait for the server to end (after /quit) and take its output.
    fn finish(&mut self) -> Output {
        self.collect(Duration::from_secs(60))
    }

    /// Stop the server now (if it still runs) and take its output.
    fn kill(&mut self) -> Output {
        self.collect(Duration::ZERO)
    }

    /// Wait up to `grace` for the server to end, kill it then, and take its output.
    fn collect(&mut self, grace: Duration) -> Output {
        let mut child = self.child.take().expect("a running server");
        let start = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() >= grace {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_end(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_end(&mut err);
        }
        Output {
            status: child.wait().expect("the server's status"),
            stdout: out,
            stderr: err,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("{}: killed", self.what);
        }
    }
}

/// `curl -s URL`: the body.
fn curl(url: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "120", url])
        .output()
        .expect("curl (Debian's curl package)");
    if !out.status.success() {
        return Err(format!("curl {url}: {out:?}"));
    }
    Ok(out.stdout)
}

/// ApacheBench's count for `label` in its report (0 when it does not print it).
fn ab_count(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `ab -n requests -c concurrency -k URL` must complete every request, with no
/// failure (a body of another length than the first counts as one) and no answer
/// but 200.
fn load(url: &str, requests: u64, concurrency: u64, what: &str) -> Result<(), String> {
    let out = Command::new("ab")
        .args([
            "-q",
            "-k",
            "-s",
            "120",
            "-n",
            &requests.to_string(),
            "-c",
            &concurrency.to_string(),
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("ab (Debian's apache2-utils): {e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{what}: ab failed\n{report}\n{out:?}"));
    }
    for (label, expected) in [
        ("Complete requests:", requests),
        ("Failed requests:", 0),
        ("Non-2xx responses:", 0),
        ("Keep-Alive requests:", requests),
    ] {
        let seen = ab_count(&report, label);
        if seen != expected {
            return Err(format!("{what}: {label} {seen}, not {expected}\n{report}"));
        }
    }
    Ok(())
}

/// The body `GET /big/N` answers.
fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Exercise the server on `port` as the tests do (curl, then `requests` requests over
/// 100 connections with ab), then stop it (GET /quit); what it printed must say it
/// served every request.
fn exercise(mut server: Server, port: u16, requests: u64, what: &str) -> Output {
    let url = |path: &str| format!("http://127.0.0.1:{port}/{path}");
    let checks = || -> Result<(), String> {
        for (path, body) in [
            ("abc", b"hello abc\n".to_vec()),
            ("big/1000000", big(1_000_000)),
        ] {
            if curl(&url(path))? != body {
                return Err(format!("{what}: GET /{path} answered another body"));
            }
        }
        load(&url("load"), requests, 100, what)?;
        if curl(&url("quit"))? != b"hello quit\n" {
            return Err(format!("{what}: GET /quit answered another body"));
        }
        Ok(())
    };
    if let Err(e) = checks() {
        // What the server said (nacre's own messages among it) tells why.
        let out = server.kill();
        panic!("{e}\n--- the server ---\n{}", describe_output(&out));
    }
    let out = server.finish();
    assert!(out.status.success(), "{what}\n{}", describe_output(&out));
    let served = 2 + requests + 1;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("listening\nserved {served}\n"),
        "{what}\n{}",
        describe_output(&out)
    );
    out
}

/// The C server on one epoll loop (`http_server.c`): natively, then in the guest on
/// each platform, through the port the image may listen on.
fn c_server(toolchain: Toolchain, name: &str, port: u16) {
    require_kvm();
    let app = built_app(dir(), "http_server.c", toolchain);
    natively_then_in_the_guest(&app, name, port, "1", 10_000);
}

#[test]
fn c_epoll_http_server_answers_every_request() {
    c_server(Toolchain::Glibc, "http-server", 18180);
}

/// Exercise `app` natively on `port`, then packaged (allowed to listen on it) in the
/// guest on each platform with `cpus` vCPUs.
fn natively_then_in_the_guest(app: &Path, name: &str, port: u16, cpus: &str, requests: u64) {
    let p = port.to_string();
    let mut native = Command::new(app);
    native.arg(&p).current_dir("/");
    let what = format!("{name} natively");
    exercise(Server::start(native, port, &what), port, requests, &what);
    let image = package_with(
        app,
        &dir().join(format!("{name}.igvm")),
        &PackageOptions::new().args(&[&p]).flags(&["--listen", &p]),
    );
    on_each_platform(|platform| {
        let mut cmd = Command::new(nacre_bin());
        cmd.args(["run", &image.display().to_string(), "--platform", platform])
            .args(["--cpus", cpus])
            .env("NACRE_EMULATED_KEYS", emulated_keys_dir());
        let what = format!("{name} on {platform} with {cpus} vCPUs");
        exercise(Server::start(cmd, port, &what), port, requests, &what);
    });
}

/// The Go net/http server (`http_server.go`): the Go runtime's netpoller (epoll edge
/// triggered, several threads), natively, then in the guest on each platform.
#[test]
fn go_net_http_server_answers_every_request() {
    require_kvm();
    let app = built_app(dir(), "http_server.go", Toolchain::Go);
    natively_then_in_the_guest(&app, "http-server-go", 18190, "2", 10_000);
}

/// `tests/apps/tokio_server`, a cargo project on tokio's multi-threaded runtime, built
/// static once per test run.
fn tokio_server() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| nacre_tests::build_cargo_app("tokio_server", "apps-tokio"))
        .clone()
}

/// A Rust async server on tokio's multi-threaded runtime (two worker threads, mio's
/// epoll), natively, then in the guest on each platform with two vCPUs.
#[test]
fn rust_tokio_server_answers_every_request() {
    require_kvm();
    natively_then_in_the_guest(&tokio_server(), "tokio-server", 18195, "2", 2_000);
}

/// `nacre run --publish HOST_PORT:GUEST_PORT`: the server binds its guest port, the host
/// exposes it at the published port instead (and not at the guest's), and the server
/// answers there on each platform.
#[test]
fn published_port_reaches_the_guest_server() {
    require_kvm();
    let (guest, host) = (18250u16, 18251u16);
    let app = built_app(dir(), "http_server.c", Toolchain::Glibc);
    let g = guest.to_string();
    let image = package_with(
        &app,
        &dir().join("http-server-published.igvm"),
        &PackageOptions::new().args(&[&g]).flags(&["--listen", &g]),
    );
    on_each_platform(|platform| {
        let mut cmd = Command::new(nacre_bin());
        cmd.args(["run", &image.display().to_string(), "--platform", platform])
            .args(["--publish", &format!("{host}:{guest}")])
            .env("NACRE_EMULATED_KEYS", emulated_keys_dir());
        let what = format!("published server on {platform}");
        let mut server = Server::start(cmd, host, &what);
        let unpublished = SocketAddr::from(([127, 0, 0, 1], guest));
        assert!(
            TcpStream::connect_timeout(&unpublished, Duration::from_millis(500)).is_err(),
            "{what}: the guest's own port is open on the host"
        );
        for path in ["published", "quit"] {
            match curl(&format!("http://127.0.0.1:{host}/{path}")) {
                Ok(body) => assert_eq!(body, format!("hello {path}\n").as_bytes(), "{what}"),
                Err(e) => panic!("{e}\n{}", describe_output(&server.kill())),
            }
        }
        let out = server.finish();
        assert!(out.status.success(), "{what}\n{}", describe_output(&out));
    });
}

/// A name server for one name: `service.test` has the IPv4 address 10.1.2.3 (and no
/// IPv6 one); every other name does not exist. Answers on UDP at `addr` until
/// dropped; counts the questions it was asked.
struct FakeDns {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    asked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    fn start(addr: &str) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let socket = std::net::UdpSocket::bind(addr).unwrap_or_else(|e| {
            panic!("a name server at {addr}: {e} (port 53 needs root, and the address free)")
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let (stop2, asked2) = (stop.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                asked2.fetch_add(1, Ordering::Relaxed);
                if let Some(answer) = dns_answer(&buf[..n]) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        Self {
            stop,
            asked,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to one DNS query (RFC 1035 section 4): `service.test IN A` is
/// 10.1.2.3, `service.test` has no other record, any other name does not exist.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then QTYPE and QCLASS.
    let mut at = 12;
    let mut name = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        name.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    query.get(..question_end)?;
    let known = name == ["service", "test"];
    let answers = u16::from(known && qtype == 1);
    let mut reply = query[..question_end].to_vec();
    // QR, opcode as asked, RD as asked, RA; NXDOMAIN (3) for unknown names.
    reply[2] = 0x80 | (query[2] & 0x79);
    reply[3] = 0x80 | if known { 0 } else { 3 };
    reply[4..12].copy_from_slice(&[0, 1, 0, answers as u8, 0, 0, 0, 0]);
    if answers == 1 {
        // The name by a pointer to the question's, A, IN, TTL 60, 4 bytes.
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
    }
    Some(reply)
}

/// `nacre package --dns` writes `/etc/resolv.conf` and lets the app reach the name
/// server: names resolve through it (glibc's, musl's and Go's resolvers), `localhost`
/// through the default `/etc/hosts`. Without `--dns` the resolver's default server (127.0.0.1) is
/// outside the policy: nothing resolves but localhost, and nacre says why.
#[test]
fn names_resolve_through_the_packaged_name_server() {
    require_kvm();
    // An address of the loopback network nothing else uses, port 53 (resolv.conf
    // names no port).
    let dns = FakeDns::start("127.0.0.77:53");
    let names = ["service.test", "localhost", "missing.test"];
    for (source, toolchain) in [
        ("resolve.c", Toolchain::Glibc),
        ("resolve.c", Toolchain::Musl),
        ("resolve.go", Toolchain::Go),
    ] {
        let app = built_app(dir(), source, toolchain);
        let with = package_with(
            &app,
            &dir().join(format!("resolve-{toolchain:?}.igvm")),
            &PackageOptions::new()
                .args(&names)
                .flags(&["--dns", "127.0.0.77"]),
        );
        let without = package_with(
            &app,
            &dir().join(format!("resolve-{toolchain:?}-no-dns.igvm")),
            &PackageOptions::new().args(&names),
        );
        on_each_platform(|platform| {
            let before = dns.asked();
            let out = nacre_tests::run_on(&with, platform, &[]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "service.test 10.1.2.3\nlocalhost 127.0.0.1\nmissing.test error: not resolved\n",
                "{toolchain:?} on {platform}\n{}",
                describe_output(&out)
            );
            assert!(out.status.success(), "{}", describe_output(&out));
            assert!(dns.asked() > before, "the name server was asked");
            let out = nacre_tests::run_on(&without, platform, &[]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "service.test error: not resolved\nlocalhost 127.0.0.1\n\
                 missing.test error: not resolved\n",
                "{toolchain:?} on {platform} without --dns\n{}",
                describe_output(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("127.0.0.1:53"),
                "nacre names the refused name server\n{err}"
            );
        });
    }
}
