//! The network policy an image carries: which ports the app may listen on and where it
//! may connect. `nacre package --listen/--connect` writes it as the packaged file
//! [`POLICY_PATH`], so it is part of the measurement; the host enforces it, and
//! `nacre measure --explain` shows it.
//!
//! The file is text, one rule per line (`#` starts a comment, blank lines are
//! ignored):
//!
//! ```text
//! listen tcp 8080
//! listen udp 5353
//! connect tcp 10.0.0.0/8 443
//! connect tcp ::/0 *
//! ```
//!
//! `listen PROTO PORT` allows binding PORT (any local address) and, for TCP, listening
//! on it; `connect PROTO NET PORT` allows connecting (TCP) or sending (UDP) to an
//! address inside NET (an IPv4 or IPv6 address with an optional `/PREFIX`; `*` is
//! every address of both families) on PORT (`*`: any). An IPv4-mapped IPv6 destination
//! (`::ffff:a.b.c.d`) is matched as the IPv4 address. No rule, no network: an image
//! without the file allows nothing.

use core::net::{Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use crate::net::{NetAddr, AF_INET, AF_INET6};

/// Where the policy is packaged.
pub const POLICY_PATH: &str = "/etc/nacre/network";

/// Largest policy file.
pub const MAX_POLICY_BYTES: usize = 64 << 10;

/// A transport protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// Its name in the policy.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    fn parse(word: &str) -> Result<Self, PolicyError> {
        match word {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(PolicyError::Proto),
        }
    }
}

/// A set of addresses: a family's address and prefix length, or every address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Every IPv4 and IPv6 address (`*`).
    Any,
    /// IPv4 addresses whose first `prefix` bits are `addr`'s.
    V4 { addr: [u8; 4], prefix: u8 },
    /// IPv6 addresses whose first `prefix` bits are `addr`'s.
    V6 { addr: [u8; 16], prefix: u8 },
}

impl Net {
    fn parse(word: &str) -> Result<Self, PolicyError> {
        if word == "*" {
            return Ok(Self::Any);
        }
        let (ip, prefix) = match word.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| PolicyError::Prefix)?)),
            None => (ip_only(word), None),
        };
        if let Ok(v4) = Ipv4Addr::from_str(ip) {
            let prefix = prefix.unwrap_or(32);
            if prefix > 32 {
                return Err(PolicyError::Prefix);
            }
            return Ok(Self::V4 {
                addr: v4.octets(),
                prefix,
            });
        }
        if let Ok(v6) = Ipv6Addr::from_str(ip) {
            let prefix = prefix.unwrap_or(128);
            if prefix > 128 {
                return Err(PolicyError::Prefix);
            }
            return Ok(Self::V6 {
                addr: v6.octets(),
                prefix,
            });
        }
        Err(PolicyError::Address)
    }

    /// Whether the address (`family` [`AF_INET`] or [`AF_INET6`]) is inside.
    pub fn contains(&self, family: u16, addr: &[u8; 16]) -> bool {
        let (family, bytes): (u16, &[u8]) = match family {
            // An IPv4-mapped IPv6 address is its IPv4 address.
            AF_INET6 if addr[..10] == [0; 10] && addr[10..12] == [0xFF, 0xFF] => {
                (AF_INET, &addr[12..16])
            }
            AF_INET6 => (AF_INET6, &addr[..]),
            AF_INET => (AF_INET, &addr[..4]),
            _ => return false,
        };
        match (self, family) {
            (Self::Any, _) => true,
            (Self::V4 { addr: net, prefix }, AF_INET) => prefix_matches(net, bytes, *prefix),
            (Self::V6 { addr: net, prefix }, AF_INET6) => prefix_matches(net, bytes, *prefix),
            _ => false,
        }
    }
}

/// An address word without its IPv6 brackets, if it has them (`[::1]`).
fn ip_only(word: &str) -> &str {
    word.strip_prefix('[')
        .and_then(|w| w.strip_suffix(']'))
        .unwrap_or(word)
}

fn prefix_matches(net: &[u8], addr: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != addr[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xFFu8 << (8 - rest);
    net[full] & mask == addr[full] & mask
}

/// One rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The app may bind and listen on `port`.
    Listen { proto: Proto, port: u16 },
    /// The app may connect or send to `net` on `port` (`None`: any port).
    Connect {
        proto: Proto,
        net: Net,
        port: Option<u16>,
    },
}

/// Why a policy line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyError {
    /// Not `listen` or `connect`, or the wrong number of words.
    Syntax,
    /// Not `tcp` or `udp`.
    Proto,
    /// Not a port number 1-65535 (or `*` where allowed).
    Port,
    /// Not an IPv4 or IPv6 address or `*`.
    Address,
    /// A prefix length beyond the family's.
    Prefix,
    /// Not UTF-8, or larger than [`MAX_POLICY_BYTES`].
    Encoding,
}

impl core::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Syntax => "expected `listen PROTO PORT` or `connect PROTO NET PORT`",
            Self::Proto => "the protocol must be tcp or udp",
            Self::Port => "the port must be a number from 1 to 65535 (or * for any, in connect)",
            Self::Address => {
                "the network must be an IPv4 or IPv6 address, with an optional /PREFIX, or *"
            }
            Self::Prefix => "the prefix length is longer than the address",
            Self::Encoding => "the policy is not UTF-8 text of at most 64 KiB",
        })
    }
}

fn port(word: &str, any_ok: bool) -> Result<Option<u16>, PolicyError> {
    if word == "*" && any_ok {
        return Ok(None);
    }
    match word.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(PolicyError::Port),
    }
}

/// Parse one line: `None` for a blank or comment line.
pub fn parse_line(line: &str) -> Result<Option<Rule>, PolicyError> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().ok_or(PolicyError::Syntax)?;
    let rule = match verb {
        "listen" => {
            let proto = Proto::parse(words.next().ok_or(PolicyError::Syntax)?)?;
            let port =
                port(words.next().ok_or(PolicyError::Syntax)?, false)?.ok_or(PolicyError::Port)?;
            Rule::Listen { proto, port }
        }
        "connect" => {
            let proto = Proto::parse(words.next().ok_or(PolicyError::Syntax)?)?;
            let net = Net::parse(words.next().ok_or(PolicyError::Syntax)?)?;
            let port = port(words.next().ok_or(PolicyError::Syntax)?, true)?;
            Rule::Connect { proto, net, port }
        }
        _ => return Err(PolicyError::Syntax),
    };
    if words.next().is_some() {
        return Err(PolicyError::Syntax);
    }
    Ok(Some(rule))
}

/// A checked policy text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy<'a> {
    text: &'a str,
}

impl<'a> Policy<'a> {
    /// No rules: nothing allowed.
    pub const NONE: Policy<'static> = Policy { text: "" };

    /// Check every line of `bytes`; on error, the 1-based line number and why.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, (usize, PolicyError)> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err((0, PolicyError::Encoding));
        }
        let text = core::str::from_utf8(bytes).map_err(|_| (0, PolicyError::Encoding))?;
        for (i, line) in text.lines().enumerate() {
            parse_line(line).map_err(|e| (i + 1, e))?;
        }
        Ok(Self { text })
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = Rule> + 'a {
        self.text
            .lines()
            .filter_map(|l| parse_line(l).ok().flatten())
    }

    /// Whether the app may bind or listen on `port` with `proto`.
    pub fn allows_listen(&self, proto: Proto, port: u16) -> bool {
        self.rules().any(|r| r == Rule::Listen { proto, port })
    }

    /// Whether the app may connect or send to `to` with `proto`.
    pub fn allows_connect(&self, proto: Proto, to: &NetAddr) -> bool {
        self.rules().any(|r| match r {
            Rule::Connect {
                proto: p,
                net,
                port,
            } => {
                p == proto
                    && port.is_none_or(|port| port == to.port)
                    && net.contains(to.family, &to.addr)
            }
            Rule::Listen { .. } => false,
        })
    }
}

/// Write `rule` as its policy line (no newline) into `out`.
pub fn write_rule(rule: &Rule, out: &mut impl core::fmt::Write) -> core::fmt::Result {
    match rule {
        Rule::Listen { proto, port } => write!(out, "listen {} {port}", proto.name()),
        Rule::Connect { proto, net, port } => {
            write!(out, "connect {} ", proto.name())?;
            match net {
                Net::Any => out.write_str("*")?,
                Net::V4 { addr, prefix } => write!(out, "{}/{prefix}", Ipv4Addr::from(*addr))?,
                Net::V6 { addr, prefix } => write!(out, "{}/{prefix}", Ipv6Addr::from(*addr))?,
            }
            match port {
                Some(p) => write!(out, " {p}"),
                None => out.write_str(" *"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    #[test]
    fn rules_parse_and_decide() {
        let text = b"# web\nlisten tcp 8080\nlisten udp 5353 # dns\n\nconnect tcp 10.0.0.0/8 443\nconnect udp * 53\nconnect tcp fd00::/8 *\n";
        let p = Policy::parse(text).unwrap();
        assert_eq!(p.rules().count(), 5);
        assert!(p.allows_listen(Proto::Tcp, 8080));
        assert!(!p.allows_listen(Proto::Udp, 8080));
        assert!(p.allows_listen(Proto::Udp, 5353));
        assert!(p.allows_connect(Proto::Tcp, &NetAddr::v4([10, 1, 2, 3], 443)));
        assert!(!p.allows_connect(Proto::Tcp, &NetAddr::v4([10, 1, 2, 3], 80)));
        assert!(!p.allows_connect(Proto::Tcp, &NetAddr::v4([11, 1, 2, 3], 443)));
        let mut mapped = [0u8; 16];
        mapped[10] = 0xFF;
        mapped[11] = 0xFF;
        mapped[12..].copy_from_slice(&[10, 9, 9, 9]);
        assert!(p.allows_connect(Proto::Tcp, &NetAddr::v6(mapped, 443, 0, 0)));
        assert!(p.allows_connect(Proto::Udp, &NetAddr::v6([0x20; 16], 53, 0, 0)));
        assert!(!p.allows_connect(Proto::Tcp, &NetAddr::v6([0x20; 16], 53, 0, 0)));
        let mut ula = [0u8; 16];
        ula[0] = 0xFD;
        assert!(p.allows_connect(Proto::Tcp, &NetAddr::v6(ula, 9, 0, 0)));
        assert!(!Policy::NONE.allows_listen(Proto::Tcp, 80));
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, err) in [
            (&b"listen tcp 0"[..], PolicyError::Port),
            (b"listen tcp *", PolicyError::Port),
            (b"listen sctp 80", PolicyError::Proto),
            (b"connect tcp 10.0.0.0/33 1", PolicyError::Prefix),
            (b"connect tcp 10.0.0.300 1", PolicyError::Address),
            (b"connect tcp 10.0.0.1", PolicyError::Syntax),
            (b"accept tcp 1", PolicyError::Syntax),
            (b"listen tcp 80 extra", PolicyError::Syntax),
            (b"\xFF", PolicyError::Encoding),
        ] {
            let got = Policy::parse(text).unwrap_err();
            assert_eq!(got.1, err, "{:?}", core::str::from_utf8(text));
        }
        assert_eq!(
            Policy::parse(b"listen tcp 80\nlisten tcp x\n").unwrap_err(),
            (2, PolicyError::Port)
        );
    }

    #[test]
    fn rules_write_back_as_they_parse() {
        for line in [
            "listen tcp 8080",
            "connect udp * 53",
            "connect tcp 10.0.0.0/8 443",
            "connect tcp fd00::/8 *",
        ] {
            let rule = parse_line(line).unwrap().unwrap();
            let mut out = String::new();
            write_rule(&rule, &mut out).unwrap();
            assert_eq!(out, line);
            assert_eq!(parse_line(&out).unwrap(), Some(rule));
        }
    }
}
