//! The host's TDX quote generation service (QGS, Intel's `qgsd` from the DCAP
//! packages), which turns a TDREPORT into a quote signed by the platform's quoting
//! enclave: where it listens, and its protocol.
//!
//! Where: `$NACRE_QGS` (`unix:PATH` or `vsock:CID:PORT`), else the unix socket
//! `/run/tdx-qgs/qgs.socket` when it exists (`qgsd` with `port = 0`), else vsock CID 2
//! at the `port` of `/etc/qgs.conf` (its listening port; Intel's default file says
//! 4050).
//!
//! The protocol (Intel DCAP `QuoteGeneration/quote_wrapper/qgs_msg_lib`, as QEMU's
//! `target/i386/kvm/tdx-quote-generator.c` speaks it): every message is preceded by its
//! length as a 4-byte big-endian number; a message is a header `{u16 major = 1, u16
//! minor = 1, u32 type, u32 size (with the header), u32 error_code}` and a body. The
//! request (type 0, GET_QUOTE_REQ) carries `{u32 report_size = 1024, u32 id_list_size =
//! 0, report}`; the response (type 1, GET_QUOTE_RESP) `{u32 selected_id_size, u32
//! quote_size, selected id, quote}`. Numbers in the header and bodies are little-endian.

use crate::exits::tdx::get_quote::{QuoteRefusal, QuotingService};
use crate::platform::check::HostPaths;
use crate::platform::hardware::probe::connect_vsock;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The size of a TDREPORT (`TDREPORT_STRUCT`).
pub const TD_REPORT_SIZE: usize = 1024;
/// The largest response nacre reads (a quote with its certification data is a few KiB).
pub const MAX_RESPONSE: usize = 1 << 20;
/// How long the service may take (QEMU waits 30 s).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// `GET_QUOTE_REQ`.
pub const GET_QUOTE_REQ: u32 = 0;
/// `GET_QUOTE_RESP`.
pub const GET_QUOTE_RESP: u32 = 1;
/// The vsock CID a host process reaches the host's own listeners at.
pub const HOST_CID: u32 = 2;

/// `qgs_msg_header_t`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct QgsHeader {
    /// 1.
    pub major_version: u16,
    /// 1.
    pub minor_version: u16,
    /// `GET_QUOTE_REQ` or `GET_QUOTE_RESP`.
    pub msg_type: u32,
    /// The message's size, header included.
    pub size: u32,
    /// 0, or the service's error.
    pub error_code: u32,
}

const _: () = assert!(size_of::<QgsHeader>() == 16);
const _: () = assert!(std::mem::offset_of!(QgsHeader, msg_type) == 4);
const _: () = assert!(std::mem::offset_of!(QgsHeader, size) == 8);
const _: () = assert!(std::mem::offset_of!(QgsHeader, error_code) == 12);

/// Where the service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QgsAddress {
    /// A unix socket.
    Unix(PathBuf),
    /// A vsock address.
    Vsock {
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
}

impl std::fmt::Display for QgsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

impl QgsAddress {
    /// `unix:PATH` or `vsock:CID:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let bad = || format!("{text:?} is neither unix:PATH nor vsock:CID:PORT");
        let rest = text.strip_prefix("vsock:").ok_or_else(bad)?;
        let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
        Ok(Self::Vsock {
            cid: cid.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
        })
    }

    /// Where this host's service listens (module documentation), or why nacre cannot
    /// tell.
    pub fn of_host(paths: &HostPaths) -> Result<Self, String> {
        if let Some(text) = std::env::var_os("NACRE_QGS") {
            return Self::parse(&text.to_string_lossy()).map_err(|e| format!("NACRE_QGS: {e}"));
        }
        let socket = paths.run.join("tdx-qgs").join("qgs.socket");
        if socket.exists() {
            return Ok(Self::Unix(socket));
        }
        let conf = paths.etc.join("qgs.conf");
        let text = crate::files::read_input_text(&conf, crate::files::CONFIG).map_err(|e| {
            format!(
                "no {} and {} (is the tdx-qgs package installed?)",
                socket.display(),
                crate::files::error_text(&e)
            )
        })?;
        match conf_port(&text) {
            Some(port) if port != 0 => Ok(Self::Vsock {
                cid: HOST_CID,
                port,
            }),
            _ => Err(format!(
                "{} names no vsock port and {} does not exist (is qgsd running?)",
                conf.display(),
                socket.display()
            )),
        }
    }
}

/// The `port = N` of a `qgs.conf` (lines `key = value`, `#` comments).
fn conf_port(text: &str) -> Option<u32> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "port")
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Why the service gave no quote.
#[derive(Debug, thiserror::Error)]
pub enum QgsError {
    /// It could not be reached, or the connection failed.
    #[error("the quote generation service at {addr}: {source}")]
    Io {
        /// Where.
        addr: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// It answered something that is not a GET_QUOTE_RESP.
    #[error("the quote generation service answered a malformed message: {0}")]
    Malformed(String),
    /// It answered with an error.
    #[error("the quote generation service refused the report (error {0:#x})")]
    Refused(u32),
}

/// The GET_QUOTE_REQ message for `report`, with its length prefix.
pub fn request(report: &[u8]) -> Vec<u8> {
    let size = size_of::<QgsHeader>() + 8 + report.len();
    let header = QgsHeader {
        major_version: 1,
        minor_version: 1,
        msg_type: GET_QUOTE_REQ,
        size: size as u32,
        error_code: 0,
    };
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&(report.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(report);
    out
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The quote in a GET_QUOTE_RESP message (without its length prefix).
pub fn parse_response(msg: &[u8]) -> Result<Vec<u8>, QgsError> {
    let bad = |what: &str| QgsError::Malformed(what.into());
    let (header, body) =
        QgsHeader::read_from_prefix(msg).map_err(|_| bad("shorter than its header"))?;
    if header.msg_type != GET_QUOTE_RESP || header.major_version != 1 {
        return Err(QgsError::Malformed(format!(
            "type {} version {}.{}",
            header.msg_type, header.major_version, header.minor_version
        )));
    }
    if header.size as usize != msg.len() {
        return Err(bad("its size field disagrees with its length"));
    }
    if header.error_code != 0 {
        return Err(QgsError::Refused(header.error_code));
    }
    let id_size = le32(body, 0).ok_or_else(|| bad("no id size"))? as usize;
    let quote_size = le32(body, 4).ok_or_else(|| bad("no quote size"))? as usize;
    let start = 8usize.checked_add(id_size).ok_or_else(|| bad("id size"))?;
    let end = start
        .checked_add(quote_size)
        .ok_or_else(|| bad("quote size"))?;
    if quote_size == 0 || end != body.len() {
        return Err(bad("its id and quote sizes do not add up to its length"));
    }
    Ok(body[start..end].to_vec())
}

/// A client of the host's QGS: the TDX platform's quoting service.
#[derive(Debug, Clone)]
pub struct QgsClient {
    /// Where the service listens.
    pub addr: QgsAddress,
    /// How long it may take.
    pub timeout: Duration,
}

impl QgsClient {
    /// A client of the service at `addr`.
    pub fn new(addr: QgsAddress) -> Self {
        Self {
            addr,
            timeout: TIMEOUT,
        }
    }

    fn connect(&self) -> io::Result<UnixStream> {
        let stream = match &self.addr {
            QgsAddress::Unix(path) => UnixStream::connect(path)?,
            QgsAddress::Vsock { cid, port } => connect_vsock(*cid, *port, self.timeout)?,
        };
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        Ok(stream)
    }

    /// A quote of `report` (a TDREPORT).
    pub fn get_quote(&self, report: &[u8]) -> Result<Vec<u8>, QgsError> {
        let io = |source| QgsError::Io {
            addr: self.addr.to_string(),
            source,
        };
        let mut stream = self.connect().map_err(io)?;
        stream.write_all(&request(report)).map_err(io)?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RESPONSE {
            return Err(QgsError::Malformed(format!("a response of {len} bytes")));
        }
        let mut msg = vec![0u8; len];
        stream.read_exact(&mut msg).map_err(io)?;
        parse_response(&msg)
    }
}

impl QuotingService for QgsClient {
    fn quote(&mut self, td_report: &[u8]) -> Result<Vec<u8>, QuoteRefusal> {
        if td_report.len() != TD_REPORT_SIZE {
            return Err(QuoteRefusal::Error);
        }
        self.get_quote(td_report).map_err(|e| {
            // Once per GetQuote, which the firmware asks once per `nacre attest`.
            crate::say!("nacre: warning: {e}");
            match e {
                QgsError::Io { .. } => QuoteRefusal::Unavailable,
                _ => QuoteRefusal::Error,
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake QGS on a unix socket: it answers one connection per quote it is given.

    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    /// What the fake answers.
    #[derive(Debug, Clone)]
    pub enum Answer {
        /// GET_QUOTE_RESP with this quote (and a 16-byte selected id before it).
        Quote(Vec<u8>),
        /// GET_QUOTE_RESP with this error code.
        Error(u32),
        /// These raw bytes (length prefix included).
        Raw(Vec<u8>),
    }

    /// A GET_QUOTE_RESP message with its length prefix.
    pub fn response(quote: &[u8], error_code: u32) -> Vec<u8> {
        let id = [0x11u8; 16];
        let body_len = if error_code == 0 {
            8 + id.len() + quote.len()
        } else {
            0
        };
        let size = size_of::<QgsHeader>() + body_len;
        let header = QgsHeader {
            major_version: 1,
            minor_version: 1,
            msg_type: GET_QUOTE_RESP,
            size: size as u32,
            error_code,
        };
        let mut out = (size as u32).to_be_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        if error_code == 0 {
            out.extend_from_slice(&(id.len() as u32).to_le_bytes());
            out.extend_from_slice(&(quote.len() as u32).to_le_bytes());
            out.extend_from_slice(&id);
            out.extend_from_slice(quote);
        }
        out
    }

    /// A fake service at a fresh socket, answering `answers` in turn; its thread
    /// returns the requests it read.
    pub fn serve(answers: Vec<Answer>) -> (tempfile::TempDir, PathBuf, JoinHandle<Vec<Vec<u8>>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qgs.socket");
        let listener = UnixListener::bind(&path).unwrap();
        let thread = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut msg).unwrap();
                requests.push(msg);
                let bytes = match answer {
                    Answer::Quote(q) => response(&q, 0),
                    Answer::Error(code) => response(&[], code),
                    Answer::Raw(b) => b,
                };
                s.write_all(&bytes).unwrap();
            }
            requests
        });
        (dir, path, thread)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{serve, Answer};
    use super::*;

    #[test]
    fn a_quote_comes_back_for_a_report_over_the_unix_socket() {
        let (_dir, path, thread) = serve(vec![Answer::Quote(vec![0xAB; 4000])]);
        let mut client = QgsClient::new(QgsAddress::Unix(path));
        let report = [7u8; TD_REPORT_SIZE];
        assert_eq!(client.quote(&report).unwrap(), vec![0xAB; 4000]);
        let requests = thread.join().unwrap();
        let req = &requests[0];
        let header = QgsHeader::read_from_prefix(req).unwrap().0;
        assert_eq!(
            (header.major_version, header.minor_version, header.msg_type),
            (1, 1, GET_QUOTE_REQ)
        );
        assert_eq!(header.size as usize, req.len());
        assert_eq!(le32(req, 16), Some(1024), "report_size");
        assert_eq!(le32(req, 20), Some(0), "id_list_size");
        assert_eq!(&req[24..], &report[..]);
    }

    #[test]
    fn service_errors_and_malformed_answers_are_refusals() {
        let mut bad_size = testing::response(&[1, 2, 3], 0);
        bad_size[4 + 8] ^= 1; // the header's size field
        let (_dir, path, thread) = serve(vec![
            Answer::Error(0x12),
            Answer::Raw(bad_size),
            Answer::Raw(vec![0xFF, 0xFF, 0xFF, 0xFF]),
        ]);
        let client = QgsClient::new(QgsAddress::Unix(path));
        let report = [0u8; TD_REPORT_SIZE];
        assert!(matches!(
            client.get_quote(&report),
            Err(QgsError::Refused(0x12))
        ));
        assert!(matches!(
            client.get_quote(&report),
            Err(QgsError::Malformed(_))
        ));
        assert!(matches!(
            client.get_quote(&report),
            Err(QgsError::Malformed(_))
        ));
        thread.join().unwrap();
    }

    #[test]
    fn no_service_is_unavailable_and_reports_of_the_wrong_size_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut client = QgsClient::new(QgsAddress::Unix(dir.path().join("none")));
        assert_eq!(
            client.quote(&[0u8; TD_REPORT_SIZE]),
            Err(QuoteRefusal::Unavailable)
        );
        assert_eq!(client.quote(&[0u8; 10]), Err(QuoteRefusal::Error));
    }

    #[test]
    fn responses_whose_sizes_do_not_add_up_are_refused() {
        let mut msg = testing::response(&[9; 64], 0)[4..].to_vec();
        // quote_size one larger than what follows.
        msg[16 + 4] += 1;
        assert!(matches!(parse_response(&msg), Err(QgsError::Malformed(_))));
        assert!(parse_response(&[0; 3]).is_err());
    }

    #[test]
    fn the_address_comes_from_the_socket_or_qgs_conf() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::under(root.path());
        // Only meaningful when the environment does not name one.
        if std::env::var_os("NACRE_QGS").is_some() {
            return;
        }
        assert!(QgsAddress::of_host(&paths).is_err());
        std::fs::create_dir_all(&paths.etc).unwrap();
        std::fs::write(
            paths.etc.join("qgs.conf"),
            "# QGS\nnumber_threads = 4\nport = 4050\n",
        )
        .unwrap();
        assert_eq!(
            QgsAddress::of_host(&paths).unwrap(),
            QgsAddress::Vsock {
                cid: HOST_CID,
                port: 4050
            }
        );
        std::fs::write(paths.etc.join("qgs.conf"), "port = 0\n").unwrap();
        assert!(QgsAddress::of_host(&paths).is_err());
        let socket = paths.run.join("tdx-qgs/qgs.socket");
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        std::fs::write(&socket, "").unwrap();
        assert_eq!(
            QgsAddress::of_host(&paths).unwrap(),
            QgsAddress::Unix(socket)
        );
        assert_eq!(
            QgsAddress::parse("vsock:2:4050").unwrap(),
            QgsAddress::Vsock { cid: 2, port: 4050 }
        );
        assert!(QgsAddress::parse("tcp:1").is_err());
    }
}
