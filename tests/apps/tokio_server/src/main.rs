//! An HTTP/1.1 server on tokio's multi-threaded runtime (epoll through mio, a worker
//! thread per vCPU, a task per connection), answering as `http_server.c` does:
//! GET /quit answers and ends the server (exit 0) after printing how many requests it
//! served; GET /PATH answers "hello PATH\n"; GET /big/N answers N bytes of a pattern
//! ('a' + i % 26). Connections are kept alive unless the request says otherwise.
//!
//! Usage: tokio_server PORT    prints "listening" once it accepts connections

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

struct Shared {
    served: AtomicU64,
    quit: Notify,
}

/// The answer to one request head: the bytes to write and whether to keep the
/// connection.
fn answer(head: &str, shared: &Shared) -> (Vec<u8>, bool) {
    let mut words = head.split_whitespace();
    let (_method, target, version) = (words.next(), words.next(), words.next());
    let path = target.unwrap_or("/").trim_start_matches('/');
    let lower = head.to_ascii_lowercase();
    let mut keep = if version == Some("HTTP/1.1") {
        !lower.contains("connection: close")
    } else {
        lower.contains("keep-alive")
    };
    let body: Vec<u8> = match path.strip_prefix("big/") {
        Some(n) => {
            let size = n.parse::<usize>().unwrap_or(0).min(64 << 20);
            (0..size).map(|i| b'a' + (i % 26) as u8).collect()
        }
        None => format!("hello {path}\n").into_bytes(),
    };
    if path == "quit" {
        keep = false;
    }
    shared.served.fetch_add(1, Ordering::Relaxed);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep { "keep-alive" } else { "close" }
    )
    .into_bytes();
    out.extend_from_slice(&body);
    if path == "quit" {
        shared.quit.notify_one();
    }
    (out, keep)
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let (out, keep) = answer(&head, &shared);
            if stream.write_all(&out).await.is_err() || !keep {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 << 10 {
            return;
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "18195".into());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}"))
        .await
        .expect("bind");
    println!("listening");
    let shared = Arc::new(Shared {
        served: AtomicU64::new(0),
        quit: Notify::new(),
    });
    let accepting = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, shared.clone()));
                }
            }
        })
    };
    shared.quit.notified().await;
    accepting.abort();
    // Let the answer to /quit leave before the process ends.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    println!("served {}", shared.served.load(Ordering::Relaxed));
}
