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
