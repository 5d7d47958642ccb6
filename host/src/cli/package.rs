//! `nacre package`.

use crate::network::RESOLV_CONF;
use anyhow::{bail, Context};
use clap::builder::TypedValueParser as _;
use nacre_loader::{FileTreeBuilder, Mtime, TreeBuildError, TreeSummary};
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Arguments of `nacre package`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  gcc -static -O2 hello.c -o hello
  nacre package hello -o hello.igvm --arg world --env GREETING=hi
  nacre package server -o server.igvm --file ./data:/data --file config.toml:/etc/app/config.toml

The app sees the packaged files read-only at their guest paths, itself at /app/NAME
(NAME is its file name); /dev, /proc and /sys are provided by nacre. The files are part of the
image's measurement: changing any byte, permission or modification time changes it. Files
keep their modification times; SOURCE_DATE_EPOCH (seconds since 1970) caps them, so that an
image does not depend on when its files were checked out.

Exit status: 0 when the image was written, 125 when nacre cannot package the app (the
reason is on stderr), 2 when the command line is wrong.")]
pub struct PackageArgs {
    /// The app: a statically linked x86-64 Linux executable (static or static-pie).
    pub app: PathBuf,
    /// Where to write the image: a new path or a regular file, replaced whole (not a
    /// symbolic link, a pipe or a device).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// An argument for the app (repeat for more); the first argument (argv 0) is the app's file name.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable for the app as KEY=VALUE (repeat for more).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = Checked(env_arg).map(into_string))]
    pub env: Vec<String>,
    /// Put a host file or directory into the image, read-only, at GUEST (repeat for more).
    ///
    /// HOST:GUEST is split at the last ':'; GUEST is an absolute guest path. A file
    /// becomes GUEST, or goes into GUEST when GUEST ends with '/'; a directory's contents
    /// go under GUEST, recursively, following symbolic links. Permission bits are kept;
    /// owners and timestamps are not. Nothing may go under /dev, /proc or /sys, or at the app's
    /// own /app/NAME.
    #[arg(
        long = "file",
        value_name = "HOST:GUEST",
        value_parser = Checked(file_arg)
    )]
    pub files: Vec<OsString>,
    /// How the firmware validates (SNP) or accepts (TDX) memory: in 2 MiB pages, falling
    /// back to 4 KiB where the host's page size requires it, or always page by page
    /// (slower; the host then splits its 2 MiB RMP entries, as it must for guests that
    /// work at 4 KiB). Part of the measured configuration.
    #[arg(long, value_enum, default_value = "2m")]
    pub page_validation: PageValidation,
    /// Make a debuggable image: the host may then read and change the guest's memory
    /// and state (SEV-SNP guest policy DEBUG, TD attribute DEBUG).
    ///
    /// For development only. The guest policy is not part of the measurement, but the
    /// guest's attestation reports and quotes show it, and `nacre verify` refuses such
    /// evidence unless given --allow-debug.
    #[arg(long)]
    pub debug: bool,
    /// Let the app listen on PORT: TCP, or UDP with /udp (repeat for more).
    ///
    /// For example --listen 8080 or --listen 5353/udp. The app may bind the port on any of
    /// its addresses; `nacre run --publish` decides where the host exposes it. Without
    /// --listen and --connect the app has no network. The rules are part of the image's
    /// measurement (the packaged file /etc/nacre/network; `nacre measure --explain` shows
    /// them).
    #[arg(long = "listen", value_name = "PORT[/udp]", value_parser = Checked(listen_arg).map(into_string))]
    pub listen: Vec<String>,
    /// Let the app connect (TCP) or send (UDP, with /udp) to NET:PORT (repeat for more).
    ///
    /// NET is an IPv4 or IPv6 address with an optional /PREFIX (IPv6 in brackets), or *
    /// for every address; PORT a port or * for any. For example --connect 10.0.0.0/8:443,
    /// --connect '[2001:db8::/32]:*', --connect '*:53/udp', --connect '*:*'. Part of the
    /// measurement, like --listen.
    #[arg(long = "connect", value_name = "NET:PORT[/udp]", value_parser = Checked(connect_arg).map(into_string))]
    pub connect: Vec<String>,
    /// A name server the app resolves names with (repeat for more, at most 3).
    ///
    /// Writes /etc/resolv.conf (nameserver ADDR) into the image and lets the app reach
    /// ADDR on port 53 over UDP and TCP; part of the measurement, like --listen and
    /// --connect. Without --dns the image has only the /etc/resolv.conf you package, if
    /// any: resolvers without one ask 127.0.0.1, which the policy refuses unless
    /// --connect allows it. /etc/hosts names localhost in every image.
    #[arg(long = "dns", value_name = "ADDR", value_parser = Checked(dns_arg).map(into_string))]
    pub dns: Vec<String>,
}

// The parsers of single values: a wrong one is a usage error (status 2) found before
// anything is read.

/// A value parser of `check`, whose message names the flag and shows the value
/// [`super::quoted`]: clap's own form of a refused value repeats it raw and whole.
#[derive(Clone)]
struct Checked(fn(&OsStr) -> Result<(), String>);

impl clap::builder::TypedValueParser for Checked {
    type Value = OsString;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<OsString, clap::Error> {
        (self.0)(value)
            .map(|()| value.to_owned())
            .map_err(|message| {
                clap::Error::raw(clap::error::ErrorKind::ValueValidation, message + "\n")
                    .with_cmd(cmd)
            })
    }
}

/// The value as UTF-8 text, or why it is not.
fn text<'a>(flag: &str, arg: &'a OsStr) -> Result<&'a str, String> {
    arg.to_str().ok_or_else(|| {
        format!(
            "{flag} {} is not UTF-8 text",
            super::quoted(&arg.to_string_lossy())
        )
    })
}

/// A value its parser found to be UTF-8 text, as a `String`.
fn into_string(value: OsString) -> String {
    value.to_string_lossy().into_owned()
}

/// `--env`: KEY=VALUE, with a KEY.
fn env_arg(arg: &OsStr) -> Result<(), String> {
    let arg = text("--env", arg)?;
    if arg.contains('=') && !arg.starts_with('=') {
        Ok(())
    } else {
        Err(format!(
            "--env {} is not KEY=VALUE (for example --env LANG=C.UTF-8)",
            super::quoted(arg)
        ))
    }
}

/// `--file`: HOST:GUEST.
fn file_arg(arg: &OsStr) -> Result<(), String> {
    FileMapping::parse(arg)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `--listen`, `--connect`, `--dns`: each checked as the policy it makes.
fn listen_arg(arg: &OsStr) -> Result<(), String> {
    let arg = text("--listen", arg)?.to_owned();
    network_policy(&[arg], &[], &[])
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

fn connect_arg(arg: &OsStr) -> Result<(), String> {
    let arg = text("--connect", arg)?.to_owned();
    network_policy(&[], &[arg], &[])
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

fn dns_arg(arg: &OsStr) -> Result<(), String> {
    let arg = text("--dns", arg)?.to_owned();
    network_policy(&[], &[], &[arg])
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

/// The most name servers `--dns` takes: what resolvers read (glibc's and musl's
/// MAXNS, `resolv.h`).
pub const MAX_NAME_SERVERS: usize = 3;

/// A `--dns` argument: an IPv4 or IPv6 address.
fn name_server(arg: &str) -> anyhow::Result<std::net::IpAddr> {
    arg.parse().map_err(|_| {
        anyhow::anyhow!(
            "--dns {} is not an IPv4 or IPv6 address (for example --dns 10.0.0.2)",
            super::quoted(arg)
        )
    })
}

/// The text of [`crate::network::RESOLV_CONF`] naming the `--dns` servers, or `None` without any.
pub fn resolv_conf(dns: &[String]) -> anyhow::Result<Option<String>> {
    if dns.is_empty() {
        return Ok(None);
    }
    if dns.len() > MAX_NAME_SERVERS {
        return Err(super::UsageError(format!(
            "--dns was given {} times: resolvers use at most {MAX_NAME_SERVERS} name servers",
            dns.len()
        ))
        .into());
    }
    let mut text = String::from("# The name servers of this image (nacre package --dns).\n");
    for arg in dns {
        text.push_str(&format!("nameserver {}\n", name_server(arg)?));
    }
    Ok(Some(text))
}

/// The network policy of `--listen`, `--connect` and `--dns` (port 53 of each name
/// server, UDP and TCP) as the text of [`nacre_shared_abi::net_policy::POLICY_PATH`],
/// or `None` without rules.
pub fn network_policy(
    listen: &[String],
    connect: &[String],
    dns: &[String],
) -> anyhow::Result<Option<String>> {
    use nacre_shared_abi::net_policy::{parse_line, write_rule};
    if listen.is_empty() && connect.is_empty() && dns.is_empty() {
        return Ok(None);
    }
    let split_proto = |arg: &str| -> (String, &'static str) {
        for (suffix, proto) in [("/udp", "udp"), ("/tcp", "tcp")] {
            if let Some(rest) = arg.strip_suffix(suffix) {
                return (rest.to_owned(), proto);
            }
        }
        (arg.to_owned(), "tcp")
    };
    let mut text = String::from(
        "# The network policy of this image (nacre package --listen/--connect/--dns).\n",
    );
    let mut add = |line: String, flag: &str, arg: &str| -> anyhow::Result<()> {
        let arg = super::quoted(arg);
        let rule = parse_line(&line)
            .map_err(|e| anyhow::anyhow!("{flag} {arg}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("{flag} {arg}: no rule"))?;
        write_rule(&rule, &mut text).map_err(|_| anyhow::anyhow!("{flag} {arg}: cannot write"))?;
        text.push('\n');
        Ok(())
    };
    // What the policy file would read as a separator or a comment is in no port or
    // address.
    let plain = |part: &str| {
        !part.is_empty()
            && !part.contains(|c: char| c.is_whitespace() || c.is_control() || c == '#')
    };
    for arg in listen {
        let (port, proto) = split_proto(arg);
        if !plain(&port) {
            bail!(
                "--listen {} is not PORT or PORT/udp (for example --listen 8080)",
                super::quoted(arg)
            );
        }
        add(format!("listen {proto} {port}"), "--listen", arg)?;
    }
    for arg in connect {
        let not_net_port = || {
            anyhow::anyhow!(
                "--connect {} is not NET:PORT (for example --connect 10.0.0.0/8:443)",
                super::quoted(arg)
            )
        };
        let (rest, proto) = split_proto(arg);
        let (net, port) = rest.rsplit_once(':').ok_or_else(not_net_port)?;
        let net = net
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(net);
        if !plain(net) || !plain(port) {
            return Err(not_net_port());
        }
        add(format!("connect {proto} {net} {port}"), "--connect", arg)?;
    }
    for arg in dns {
        let ip = name_server(arg)?;
        for proto in ["udp", "tcp"] {
            add(format!("connect {proto} {ip} 53"), "--dns", arg)?;
        }
    }
    Ok(Some(text))
}

/// `--page-validation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PageValidation {
    /// 2 MiB at a time where aligned.
    #[value(name = "2m")]
    TwoM,
    /// One 4 KiB page at a time.
    #[value(name = "4k")]
    FourK,
}

impl PageValidation {
    /// The boot flags this choice sets.
    pub fn flags(self) -> u32 {
        match self {
            Self::TwoM => 0,
            Self::FourK => nacre_shared_abi::boot::BOOT_FLAG_VALIDATE_4K,
        }
    }
}

/// Why a `--file` cannot be packaged.
#[derive(Debug, Error)]
pub enum FileArgError {
    /// No ':' in the argument.
    #[error("--file {arg} is not HOST:GUEST (for example --file ./data:/data)")]
    NotHostGuest {
        /// The argument, lossily as UTF-8.
        arg: String,
    },
    /// Nothing before the last ':'.
    #[error("--file {arg} has no host path before the last ':'")]
    EmptyHost {
        /// The argument, lossily as UTF-8.
        arg: String,
    },
    /// The guest path is not absolute.
    #[error("--file {arg}: the guest path {guest} after the last ':' must start with '/'")]
    GuestNotAbsolute {
        /// The argument, lossily as UTF-8.
        arg: String,
        /// The guest part, lossily as UTF-8.
        guest: String,
    },
    /// A host path cannot be read (missing, unreadable, ...).
    #[error("cannot read {}", .path.display())]
    Io {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file that cannot be read whole.
    #[error(transparent)]
    Read(#[from] crate::files::FileError),
    /// More file bytes than an image holds.
    #[error(
        "with {} the files come to at least {total} bytes, more than an image holds ({} bytes)",
        .path.display(),
        crate::files::PACKAGED_FILE.max
    )]
    TooMuch {
        /// The file that went over.
        path: PathBuf,
        /// The bytes of the files so far with it.
        total: u64,
    },
    /// A symbolic link whose target does not exist.
    #[error("{} is a symbolic link to a path that does not exist", .path.display())]
    DanglingSymlink {
        /// The link.
        path: PathBuf,
    },
    /// A symbolic link that resolves to itself through other links.
    #[error("{} is a symbolic link that loops (too many levels of links)", .path.display())]
    SymlinkLoop {
        /// The link.
        path: PathBuf,
    },
    /// A directory reached again inside itself through a symbolic link.
    #[error(
        "{} leads back to {}, a directory it is inside of (a symbolic link loop)",
        .path.display(),
        .ancestor.display()
    )]
    DirectoryLoop {
        /// Where the walk met the directory again.
        path: PathBuf,
        /// The directory, as first reached.
        ancestor: PathBuf,
    },
    /// Neither a regular file nor a directory.
    #[error("{} is {kind}; only regular files and directories can be packaged", .path.display())]
    Unsupported {
        /// The host path.
        path: PathBuf,
        /// What it is, with its article ([`crate::files::kind_name`]).
        kind: &'static str,
    },
    /// A host file without a file name given a guest directory (`GUEST/`).
    #[error(
        "{} has no file name to put under {guest}; give the whole guest path",
        .path.display()
    )]
    NoFileName {
        /// The host path.
        path: PathBuf,
        /// The guest directory, [`super::quoted`].
        guest: String,
    },
    /// The file tree refused an entry.
    #[error("cannot put {} into the image as {guest}", .host.display())]
    Tree {
        /// The host path.
        host: PathBuf,
        /// The guest path, [`super::quoted`].
        guest: String,
        /// Why.
        #[source]
        source: TreeBuildError,
    },
}

/// One `--file HOST:GUEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    /// The host file or directory.
    pub host: PathBuf,
    /// The absolute guest path (a trailing '/' puts a host file into that directory).
    pub guest: Vec<u8>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl FileMapping {
    /// Parse `HOST:GUEST`, split at the last ':' (guest paths are absolute and rarely
    /// hold a ':'; host paths may).
    pub fn parse(arg: &OsStr) -> Result<Self, FileArgError> {
        let bytes = arg.as_bytes();
        let Some(colon) = bytes.iter().rposition(|&b| b == b':') else {
            return Err(FileArgError::NotHostGuest {
                arg: super::quoted(&lossy(bytes)),
            });
        };
        let (host, guest) = (&bytes[..colon], &bytes[colon + 1..]);
        if host.is_empty() {
            return Err(FileArgError::EmptyHost {
                arg: super::quoted(&lossy(bytes)),
            });
        }
        if !guest.starts_with(b"/") {
            return Err(FileArgError::GuestNotAbsolute {
                arg: super::quoted(&lossy(bytes)),
                guest: super::quoted(&lossy(guest)),
            });
        }
        Ok(Self {
            host: PathBuf::from(OsStr::from_bytes(host)),
            guest: guest.to_vec(),
        })
    }
}

/// The file tree of an image: nacre's entries, the app at `/app/<argv0>`, and every
/// `--file` in order.
pub fn file_tree(
    argv0: &(impl AsRef<[u8]> + ?Sized),
    files: &[FileMapping],
) -> anyhow::Result<FileTreeBuilder> {
    let mut tree = FileTreeBuilder::new(argv0.as_ref())?;
    for mapping in files {
        add_mapping(&mut tree, mapping)?;
    }
    Ok(tree)
}

/// The metadata of `path`, following symbolic links, with errors that say which link
/// is broken.
fn metadata(path: &Path) -> Result<Metadata, FileArgError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(FileArgError::SymlinkLoop {
            path: path.to_path_buf(),
        }),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            Err(FileArgError::DanglingSymlink {
                path: path.to_path_buf(),
            })
        }
        Err(source) => Err(FileArgError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Add one `--file` to `tree`.
pub fn add_mapping(tree: &mut FileTreeBuilder, mapping: &FileMapping) -> Result<(), FileArgError> {
    // The bytes of the files so far: together they must fit an image.
    let mut total = tree.summary().file_bytes;
    let host = &mapping.host;
    let meta = metadata(host)?;
    if meta.is_dir() {
        // "/data/" and "/data" name the same directory; "/" stays the root.
        let mut guest = mapping.guest.as_slice();
        while guest.len() > 1 && guest.ends_with(b"/") {
            guest = &guest[..guest.len() - 1];
        }
        add_dir(tree, host, guest, &mut total)
    } else if meta.is_file() {
        let mut guest = mapping.guest.clone();
        if guest.ends_with(b"/") {
            let name = host.file_name().ok_or_else(|| FileArgError::NoFileName {
                path: host.clone(),
                guest: super::quoted(&lossy(&guest)),
            })?;
            guest.extend_from_slice(name.as_bytes());
        }
        add_file(tree, host, &guest, &meta, &mut total)
    } else {
        Err(FileArgError::Unsupported {
            path: host.clone(),
            kind: crate::files::kind_name(meta.file_type()),
        })
    }
}

/// The permission bits of a host file (no type bits or owners).
fn permissions(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// A host file's modification time.
fn mtime(meta: &Metadata) -> Mtime {
    Mtime::new(meta.mtime(), meta.mtime_nsec())
}

/// The `SOURCE_DATE_EPOCH` variable (reproducible-builds.org's specification): a
/// decimal count of seconds since the epoch that caps every packaged modification
/// time; `None` when unset. A malformed value is an error, not ignored.
pub fn source_date_epoch(value: Option<&OsStr>) -> anyhow::Result<Option<i64>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    match text.parse::<i64>() {
        Ok(sec) if !text.starts_with('+') => Ok(Some(sec)),
        _ => bail!(
            "SOURCE_DATE_EPOCH={} is not a number of seconds since 1970-01-01 (for example \
             SOURCE_DATE_EPOCH=$(git log -1 --format=%ct))",
            value.to_string_lossy()
        ),
    }
}

fn add_file(
    tree: &mut FileTreeBuilder,
    host: &Path,
    guest: &[u8],
    meta: &Metadata,
    total: &mut u64,
) -> Result<(), FileArgError> {
    let after = total.saturating_add(meta.len());
    if after > crate::files::PACKAGED_FILE.max {
        return Err(FileArgError::TooMuch {
            path: host.to_path_buf(),
            total: after,
        });
    }
    // At most what is left of the budget: a file whose size said less (those of /proc
    // say 0) is not read past it.
    let left = crate::files::Input {
        max: crate::files::PACKAGED_FILE.max.saturating_sub(*total),
        ..crate::files::PACKAGED_FILE
    };
    let data = match crate::files::read_input(host, left) {
        Err(crate::files::FileError::TooLarge { .. }) => {
            return Err(FileArgError::TooMuch {
                path: host.to_path_buf(),
                total: crate::files::PACKAGED_FILE.max.saturating_add(1),
            })
        }
        read => read?,
    };
    *total += data.len() as u64;
    tree.add_file_at(guest, data, permissions(meta), Some(mtime(meta)))
        .map_err(|source| FileArgError::Tree {
            host: host.to_path_buf(),
            guest: super::quoted(&lossy(guest)),
            source,
        })
}

/// Add the directory `host` as `guest` and everything in it, in name order,
/// following symbolic links (`walkdir`, which also notices a link back to a directory
/// being walked: that walk would never end).
fn add_dir(
    tree: &mut FileTreeBuilder,
    host: &Path,
    guest: &[u8],
    total: &mut u64,
) -> Result<(), FileArgError> {
    let walk = walkdir::WalkDir::new(host)
        .follow_links(true)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for entry in walk {
        let entry = entry.map_err(walk_error)?;
        let mut child = guest.to_vec();
        for part in entry.path().strip_prefix(host).into_iter().flatten() {
            if child != b"/" {
                child.push(b'/');
            }
            child.extend_from_slice(part.as_bytes());
        }
        let path = entry.path();
        let meta = entry.metadata().map_err(walk_error)?;
        if meta.is_dir() {
            tree.add_dir_at(&child, permissions(&meta), Some(mtime(&meta)))
                .map_err(|source| FileArgError::Tree {
                    host: path.to_path_buf(),
                    guest: super::quoted(&lossy(&child)),
                    source,
                })?;
        } else if meta.is_file() {
            add_file(tree, path, &child, &meta, total)?;
        } else {
            return Err(FileArgError::Unsupported {
                path: path.to_path_buf(),
                kind: crate::files::kind_name(meta.file_type()),
            });
        }
    }
    Ok(())
}

/// What a failed step of the walk means for the user: a loop, a broken link, or the
/// file system's error.
fn walk_error(e: walkdir::Error) -> FileArgError {
    let path = e.path().map(Path::to_path_buf).unwrap_or_default();
    if let Some(ancestor) = e.loop_ancestor() {
        return FileArgError::DirectoryLoop {
            path,
            ancestor: ancestor.to_path_buf(),
        };
    }
    match metadata(&path) {
        Err(named) => named,
        Ok(_) => FileArgError::Io {
            path,
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("the directory walk failed")),
        },
    }
}

/// Build the image bytes (measured: the firmware, app, arguments, environment, files;
/// not measured: the guest policy, debuggable when `debug` is set).
pub fn build(
    app_bytes: &[u8],
    argv0: &(impl AsRef<[u8]> + ?Sized),
    args: &[String],
    env: &[String],
    files: &FileTreeBuilder,
    flags: u32,
    debug: bool,
) -> anyhow::Result<Vec<u8>> {
    for e in env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("--env {} is not KEY=VALUE", super::quoted(e));
        }
    }
    nacre_loader::check_app_elf(app_bytes)?;
    let file_tree = files.build()?;
    let mut argv = vec![argv0.as_ref().to_vec()];
    argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    let input = nacre_loader::PackageInput {
        firmware_elf: crate::FIRMWARE_ELF,
        app_elf: app_bytes,
        args: argv,
        env: env.iter().map(|e| e.as_bytes().to_vec()).collect(),
        flags,
        file_tree: &file_tree,
        debug,
    };
    Ok(nacre_loader::build_image(&input)?)
}

/// A byte count for people: "812 bytes", "4.0 KiB", "1.2 MiB", "3.5 GiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            // Display only: the precision of f64 is plenty.
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} bytes")
}

/// " with 3 files and 2 directories (1.2 MiB)", or nothing when no file was added.
fn summary_text(s: &TreeSummary) -> String {
    if s.files == 0 && s.directories == 0 {
        return String::new();
    }
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        " with {} and {} ({})",
        plural(s.files, "file", "files"),
        plural(s.directories, "directory", "directories"),
        human_size(s.file_bytes)
    )
}

/// Run `nacre package`.
pub fn run(a: &PackageArgs) -> anyhow::Result<()> {
    let mappings = a
        .files
        .iter()
        .map(|f| FileMapping::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    // What the command line alone decides, before anything is read.
    let policy = network_policy(&a.listen, &a.connect, &a.dns)?;
    let resolv = resolv_conf(&a.dns)?;
    let mut inputs = vec![("app", a.app.as_path())];
    inputs.extend(mappings.iter().map(|m| ("packaged file", m.host.as_path())));
    crate::files::check_output_apart(&a.output, &inputs)?;
    let bytes = crate::files::read_input(&a.app, crate::files::APP)?;
    // The app's file name as it is, bytes that are not UTF-8 too (Linux's argv[0]).
    let argv0 = a
        .app
        .file_name()
        .map_or_else(|| b"app".to_vec(), |n| n.as_bytes().to_vec());
    let app_mtime = std::fs::metadata(&a.app)
        .map(|m| mtime(&m))
        .with_context(|| format!("cannot read {}", a.app.display()))?;
    let clamp = source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH").as_deref())?;
    let package = || -> anyhow::Result<(Vec<u8>, TreeSummary)> {
        let mut tree = file_tree(&argv0, &mappings)?;
        if let Some(text) = &policy {
            let path = nacre_shared_abi::net_policy::POLICY_PATH;
            tree.add_file(path.as_bytes(), text.clone().into_bytes(), 0o444)
                .with_context(|| {
                    format!("{path} holds the network policy of --listen and --connect; do not package a file there")
                })?;
        }
        if let Some(text) = &resolv {
            tree.add_file(RESOLV_CONF.as_bytes(), text.clone().into_bytes(), 0o644)
                .with_context(|| {
                    format!("{RESOLV_CONF} holds the name servers of --dns; package your own or use --dns, not both")
                })?;
        }
        tree.set_app_mtime(app_mtime);
        if let Some(sec) = clamp {
            tree.clamp_mtimes(sec);
        }
        let image = build(
            &bytes,
            &argv0,
            &a.args,
            &a.env,
            &tree,
            a.page_validation.flags(),
            a.debug,
        )?;
        Ok((image, tree.summary()))
    };
    let (image, summary) =
        package().with_context(|| format!("cannot package {}", a.app.display()))?;
    crate::files::write_output(&a.output, &image)?;
    crate::say!(
        "nacre: packaged {} ({} bytes){} into {}",
        a.app.display(),
        image.len(),
        summary_text(&summary),
        a.output.display()
    );
    if a.debug {
        crate::say!(
            "nacre: the image is debuggable (--debug): the host may read and change the \
             guest's memory, and `nacre verify` refuses its evidence unless --allow-debug"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_shared_abi::filetree::{FileTree, InodeKind, Resolved};
    use std::os::unix::fs::FileTypeExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh, empty scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nacre-package-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mapping(host: &Path, guest: &str) -> FileMapping {
        FileMapping {
            host: host.to_path_buf(),
            guest: guest.as_bytes().to_vec(),
        }
    }

    /// `(kind, mode, file bytes)` at `path` in the encoded tree, or `None`.
    fn entry(blob: &[u8], path: &str) -> Option<(InodeKind, u16, Vec<u8>)> {
        let tree = FileTree::parse(blob).unwrap();
        let Ok(Resolved::Inode(i)) = tree.resolve(0, path.as_bytes(), |_, _| None::<()>) else {
            return None;
        };
        let inode = tree.inode(i).unwrap();
        let bytes = tree
            .file_bytes(&inode)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Some((inode.kind().unwrap(), inode.mode, bytes))
    }

    fn tree_of(files: &[FileMapping]) -> Result<Vec<u8>, FileArgError> {
        let mut tree = FileTreeBuilder::new(b"hello").unwrap();
        for m in files {
            add_mapping(&mut tree, m)?;
        }
        Ok(tree.build().unwrap())
    }

    #[test]
    fn host_guest_parsing() {
        let parse = |s: &str| FileMapping::parse(OsStr::new(s));
        assert_eq!(
            parse("./data:/data").unwrap(),
            FileMapping {
                host: PathBuf::from("./data"),
                guest: b"/data".to_vec()
            }
        );
        // The last ':' splits: host paths may hold one.
        let m = parse("a:b/c.txt:/etc/c.txt").unwrap();
        assert_eq!(m.host, PathBuf::from("a:b/c.txt"));
        assert_eq!(m.guest, b"/etc/c.txt");
        assert_eq!(parse("x:/").unwrap().guest, b"/");
        assert_eq!(parse("x:/etc/").unwrap().guest, b"/etc/");
        // Non-UTF-8 host paths are fine.
        let raw = FileMapping::parse(OsStr::from_bytes(b"\xff\xfe:/x")).unwrap();
        assert_eq!(raw.host.as_os_str().as_bytes(), b"\xff\xfe");

        let err = parse("data").unwrap_err();
        assert!(matches!(err, FileArgError::NotHostGuest { .. }), "{err}");
        assert!(err.to_string().contains("HOST:GUEST"), "{err}");
        let err = parse(":/data").unwrap_err();
        assert!(matches!(err, FileArgError::EmptyHost { .. }), "{err}");
        for bad in ["data:data", "data:", "/a:/b:c"] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, FileArgError::GuestNotAbsolute { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("must start with '/'"), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_usage_errors_found_before_anything_is_read() {
        use crate::cli::{Cli, EXIT_USAGE};
        use clap::Parser;
        for (flag, value, says) in [
            ("--env", "FOO", "\"FOO\" is not KEY=VALUE"),
            ("--env", "=x", "is not KEY=VALUE"),
            ("--file", "data", "is not HOST:GUEST"),
            ("--file", "data:rel", "must start with '/'"),
            ("--listen", "", "is not PORT or PORT/udp"),
            ("--listen", "99999", "the port"),
            ("--connect", "1.2.3.4:", "is not NET:PORT"),
            ("--dns", "resolver", "is not an IPv4 or IPv6 address"),
        ] {
            // The app need not exist: nothing is read.
            let args = ["nacre", "package", "/nonexistent", "-o", "x", flag, value];
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{flag} {value}: {e}");
            assert!(e.to_string().contains(says), "{flag} {value}: {e}");
        }
        // More name servers than resolvers read: a usage error too, once all are seen.
        let e = resolv_conf(&vec!["10.0.0.1".to_owned(); 4]).unwrap_err();
        assert!(e.downcast_ref::<crate::cli::UsageError>().is_some(), "{e}");
        // A value too long to show whole is shown short.
        let long = format!("X{}", "y".repeat(100_000));
        let e = Cli::try_parse_from(["nacre", "package", "a", "-o", "x", "--env", &long])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--env \"Xyyyy"), "{e}");
        assert!(e.contains("...\" is not KEY=VALUE"), "{e}");
        assert!(e.len() < 400, "{} bytes: {e}", e.len());
        // Nor does a control character reach the terminal.
        let e = Cli::try_parse_from([
            "nacre",
            "package",
            "a",
            "-o",
            "x",
            "--listen",
            "80\u{1b}[2J",
        ])
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\u{1b}'), "{e:?}");
        assert!(e.contains("--listen \"80\\u{1b}[2J\""), "{e}");
        // Values that are not UTF-8 are named as such.
        let e = Cli::try_parse_from([
            OsStr::new("nacre"),
            OsStr::new("package"),
            OsStr::new("a"),
            OsStr::new("-o"),
            OsStr::new("x"),
            OsStr::new("--dns"),
            OsStr::from_bytes(b"\xff"),
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE));
        assert!(e.to_string().contains("is not UTF-8 text"), "{e}");
    }

    #[test]
    fn directories_are_walked_recursively() {
        let dir = scratch("walk");
        let data = dir.join("data");
        write(&data.join("a.txt"), b"alpha", 0o640);
        write(&data.join("sub/b.bin"), &[0xAB; 5000], 0o755);
        std::fs::create_dir_all(data.join("empty")).unwrap();
        std::fs::set_permissions(data.join("empty"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink("a.txt", data.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", data.join("sublink")).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();

        let blob = tree_of(&[mapping(&data, "/srv/data/")]).unwrap();
        assert_eq!(
            entry(&blob, "/srv/data/a.txt"),
            Some((InodeKind::File, 0o640, b"alpha".to_vec()))
        );
        assert_eq!(
            entry(&blob, "/srv/data/sub/b.bin"),
            Some((InodeKind::File, 0o755, vec![0xAB; 5000]))
        );
        assert_eq!(
            entry(&blob, "/srv/data/empty"),
            Some((InodeKind::Dir, 0o700, Vec::new()))
        );
        assert_eq!(
            entry(&blob, "/srv/data"),
            Some((InodeKind::Dir, 0o750, Vec::new()))
        );
        assert_eq!(entry(&blob, "/srv").unwrap().1, 0o755);
        // Symbolic links are followed: a file and a directory.
        assert_eq!(
            entry(&blob, "/srv/data/link"),
            Some((InodeKind::File, 0o640, b"alpha".to_vec()))
        );
        assert_eq!(
            entry(&blob, "/srv/data/sublink/b.bin").unwrap().2,
            vec![0xAB; 5000]
        );

        // Into the root.
        let blob = tree_of(&[mapping(&data, "/")]).unwrap();
        assert!(entry(&blob, "/a.txt").is_some());
        assert_eq!(entry(&blob, "/").unwrap().1, 0o755);

        // Deterministic, and the files' modification times are part of it.
        let before = tree_of(&[mapping(&data, "/srv/data")]).unwrap();
        assert_eq!(tree_of(&[mapping(&data, "/srv/data")]).unwrap(), before);
        let file = std::fs::File::options()
            .write(true)
            .open(data.join("a.txt"))
            .unwrap();
        let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(1_000_000, 7);
        file.set_modified(when).unwrap();
        drop(file);
        let after = tree_of(&[mapping(&data, "/srv/data")]).unwrap();
        assert_ne!(
            after, before,
            "a changed modification time changes the tree"
        );
        let tree = FileTree::parse(&after).unwrap();
        let Ok(Resolved::Inode(i)) = tree.resolve(0, b"/srv/data/a.txt", |_, _| None::<()>) else {
            panic!("a.txt is packaged");
        };
        let a = tree.inode(i).unwrap();
        assert_eq!((a.mtime_sec, a.mtime_nsec), (1_000_000, 7));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_go_to_their_guest_path() {
        let dir = scratch("files");
        let config = dir.join("config.toml");
        write(&config, b"x = 1\n", 0o604);
        let blob = tree_of(&[
            mapping(&config, "/etc/app/config.toml"),
            mapping(&config, "/etc/"),
        ])
        .unwrap();
        let expected = Some((InodeKind::File, 0o604, b"x = 1\n".to_vec()));
        assert_eq!(entry(&blob, "/etc/app/config.toml"), expected);
        assert_eq!(entry(&blob, "/etc/config.toml"), expected);
        // A second file at the same guest path is a conflict.
        let err = tree_of(&[mapping(&config, "/c"), mapping(&config, "/c")]).unwrap_err();
        assert!(matches!(err, FileArgError::Tree { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn broken_and_special_host_files_are_refused() {
        let dir = scratch("refuse");
        let err = tree_of(&[mapping(&dir.join("missing"), "/m")]).unwrap_err();
        assert!(matches!(err, FileArgError::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        let dangling = dir.join("d/dangling");
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
        let err = tree_of(&[mapping(&dir.join("d"), "/d")]).unwrap_err();
        assert!(
            matches!(&err, FileArgError::DanglingSymlink { path } if *path == dangling),
            "{err}"
        );
        assert!(err.to_string().contains("dangling"), "{err}");

        let looping = dir.join("l");
        std::fs::create_dir_all(&looping).unwrap();
        std::os::unix::fs::symlink("b", looping.join("a")).unwrap();
        std::os::unix::fs::symlink("a", looping.join("b")).unwrap();
        let err = tree_of(&[mapping(&looping, "/l")]).unwrap_err();
        assert!(matches!(err, FileArgError::SymlinkLoop { .. }), "{err}");
        assert!(err.to_string().contains("l/a"), "{err}");

        let up = dir.join("up");
        std::fs::create_dir_all(up.join("inner")).unwrap();
        std::os::unix::fs::symlink("..", up.join("inner/parent")).unwrap();
        let err = tree_of(&[mapping(&up, "/up")]).unwrap_err();
        assert!(
            matches!(&err, FileArgError::DirectoryLoop { ancestor, .. } if *ancestor == up),
            "{err}"
        );

        let sockets = dir.join("s");
        std::fs::create_dir_all(&sockets).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(sockets.join("sock")).unwrap();
        let err = tree_of(&[mapping(&sockets, "/s")]).unwrap_err();
        assert!(
            matches!(
                err,
                FileArgError::Unsupported {
                    kind: "a socket",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("sock"), "{err}");
        let err = tree_of(&[mapping(Path::new("/dev/null"), "/null")]).unwrap_err();
        assert!(
            matches!(
                err,
                FileArgError::Unsupported {
                    kind: "a character device",
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reserved_guest_paths_are_refused() {
        let dir = scratch("reserved");
        let f = dir.join("f");
        write(&f, b"", 0o644);
        for guest in ["/dev/f", "/proc/self/f", "/app/hello", "/dev/"] {
            let err = tree_of(&[mapping(&f, guest)]).unwrap_err();
            let FileArgError::Tree { source, .. } = &err else {
                panic!("{guest}: {err}");
            };
            assert!(
                matches!(source, TreeBuildError::Reserved { .. }),
                "{guest}: {source}"
            );
        }
        // Other files under /app are fine.
        let blob = tree_of(&[mapping(&f, "/app/")]).unwrap();
        assert!(entry(&blob, "/app/f").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn summary_lines() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(1023), "1023 bytes");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1_258_291), "1.2 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        assert_eq!(summary_text(&TreeSummary::default()), "");
        let s = TreeSummary {
            files: 3,
            directories: 2,
            file_bytes: 1_258_291,
        };
        assert_eq!(
            summary_text(&s),
            " with 3 files and 2 directories (1.2 MiB)"
        );
        let s = TreeSummary {
            files: 1,
            directories: 1,
            file_bytes: 5,
        };
        assert_eq!(summary_text(&s), " with 1 file and 1 directory (5 bytes)");
    }

    #[test]
    fn source_date_epoch_is_seconds_or_an_error() {
        let sde = |v: &str| source_date_epoch(Some(OsStr::new(v))).map_err(|e| e.to_string());
        assert_eq!(source_date_epoch(None).unwrap(), None);
        assert_eq!(sde("1700000000"), Ok(Some(1_700_000_000)));
        assert_eq!(sde("0"), Ok(Some(0)));
        assert_eq!(sde("-5"), Ok(Some(-5)));
        for bad in ["", "+5", "1.5", "yesterday", "99999999999999999999"] {
            let e = sde(bad).unwrap_err();
            assert!(
                e.contains("SOURCE_DATE_EPOCH") && e.contains("seconds"),
                "{bad}: {e}"
            );
        }
    }

    fn package_args(dir: &Path, files: &[&str]) -> PackageArgs {
        let app = dir.join("hello");
        std::fs::write(&app, crate::DEMO_APP).unwrap();
        PackageArgs {
            app,
            output: dir.join("hello.igvm"),
            args: Vec::new(),
            env: Vec::new(),
            files: files.iter().map(OsString::from).collect(),
            page_validation: PageValidation::TwoM,
            debug: false,
            listen: Vec::new(),
            connect: Vec::new(),
            dns: Vec::new(),
        }
    }

    #[test]
    fn listen_and_connect_become_the_measured_policy() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(network_policy(&[], &[], &[]).unwrap(), None);
        let text = network_policy(
            &s(&["8080", "5353/udp"]),
            &s(&[
                "10.0.0.0/8:443",
                "[2001:db8::/32]:*",
                "*:53/udp",
                "127.0.0.1:9000/tcp",
            ]),
            &s(&["10.0.0.2", "2001:db8::53"]),
        )
        .unwrap()
        .unwrap();
        let rules: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            rules,
            [
                "listen tcp 8080",
                "listen udp 5353",
                "connect tcp 10.0.0.0/8 443",
                "connect tcp 2001:db8::/32 *",
                "connect udp * 53",
                "connect tcp 127.0.0.1/32 9000",
                "connect udp 10.0.0.2/32 53",
                "connect tcp 10.0.0.2/32 53",
                "connect udp 2001:db8::53/128 53",
                "connect tcp 2001:db8::53/128 53",
            ]
        );
        nacre_shared_abi::net_policy::Policy::parse(text.as_bytes()).unwrap();
        for (listen, connect, says) in [
            (&["0"][..], &[][..], "--listen \"0\": the port must be"),
            (&["http"], &[], "--listen \"http\""),
            (&[""], &[], "--listen \"\" is not PORT or PORT/udp"),
            (&["80 udp"], &[], "--listen \"80 udp\" is not PORT"),
            (&["/udp"], &[], "is not PORT or PORT/udp"),
            // What the policy file reads as a comment is no port: not silently dropped.
            (&["#"], &[], "--listen \"#\" is not PORT"),
            (&["80#junk"], &[], "--listen \"80#junk\" is not PORT"),
            (
                &["80\u{1b}[2J"],
                &[],
                "--listen \"80\\u{1b}[2J\" is not PORT",
            ),
            (&[], &["10.0.0.1"], "--connect \"10.0.0.1\" is not NET:PORT"),
            (
                &[],
                &["10.0.0.1:99999"],
                "--connect \"10.0.0.1:99999\": the port",
            ),
            (&[], &["10.0.0.0/40:1"], "prefix length"),
            (&[], &["example.com:443"], "IPv4 or IPv6 address"),
            (&[], &[":443"], "is not NET:PORT"),
            (&[], &["1.2.3.4:"], "--connect \"1.2.3.4:\" is not NET:PORT"),
            (&[], &["10.0.0.1:443#junk"], "is not NET:PORT"),
        ] {
            let e = network_policy(&s(listen), &s(connect), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn run_writes_an_image_with_the_files() {
        let dir = scratch("run");
        let data = dir.join("data");
        write(&data.join("x"), b"x", 0o644);
        let a = package_args(&dir, &[&format!("{}:/data", data.display())]);
        run(&a).unwrap();
        let image = std::fs::read(&a.output).unwrap();
        let loaded = nacre_loader::load_image(&image, nacre_loader::PlatformKind::Snp).unwrap();
        let blob = loaded.file_tree().unwrap();
        assert_eq!(
            entry(&blob, "/data/x"),
            Some((InodeKind::File, 0o644, b"x".to_vec()))
        );
        assert_eq!(entry(&blob, "/app/hello").unwrap().0, InodeKind::App);
        // The same inputs package to the same bytes.
        run(&a).unwrap();
        assert_eq!(std::fs::read(&a.output).unwrap(), image);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_app_name_that_is_not_utf8_is_kept_as_it_is() {
        let dir = scratch("raw-name");
        let mut a = package_args(&dir, &[]);
        let app = dir.join(OsStr::from_bytes(b"app-\xff\xfe"));
        std::fs::rename(&a.app, &app).unwrap();
        a.app = app;
        run(&a).unwrap();
        let image = std::fs::read(&a.output).unwrap();
        let loaded = nacre_loader::load_image(&image, nacre_loader::PlatformKind::Snp).unwrap();
        let blob = loaded.file_tree().unwrap();
        let tree = FileTree::parse(&blob).unwrap();
        // Not "app-\u{fffd}\u{fffd}", as a lossy conversion made it.
        assert!(matches!(
            tree.resolve(0, b"/app/app-\xff\xfe", |_, _| None::<()>),
            Ok(Resolved::Inode(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dns_writes_resolv_conf_and_lets_port_53_through() {
        let dir = scratch("dns");
        let etc = dir.join("etc");
        write(&etc.join("resolv.conf"), b"nameserver 192.0.2.1\n", 0o644);
        let mut a = package_args(&dir, &[]);
        a.dns = vec!["10.0.0.2".into(), "2001:db8::53".into()];
        run(&a).unwrap();
        let image = std::fs::read(&a.output).unwrap();
        let loaded = nacre_loader::load_image(&image, nacre_loader::PlatformKind::Snp).unwrap();
        let blob = loaded.file_tree().unwrap();
        let (kind, mode, text) = entry(&blob, RESOLV_CONF).expect("resolv.conf");
        assert_eq!((kind, mode), (InodeKind::File, 0o644));
        let servers: Vec<_> = String::from_utf8(text)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(servers, ["nameserver 10.0.0.2", "nameserver 2001:db8::53"]);
        let policy = entry(&blob, nacre_shared_abi::net_policy::POLICY_PATH).expect("policy");
        let policy = nacre_shared_abi::net_policy::Policy::parse(&policy.2).unwrap();
        let dns = |ip: std::net::IpAddr, proto| {
            let to = match ip {
                std::net::IpAddr::V4(v4) => NetAddr::v4(v4.octets(), 53),
                std::net::IpAddr::V6(v6) => NetAddr::v6(v6.octets(), 53, 0, 0),
            };
            policy.allows_connect(proto, &to)
        };
        use nacre_shared_abi::net::NetAddr;
        use nacre_shared_abi::net_policy::Proto;
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(dns(ip("10.0.0.2"), Proto::Udp) && dns(ip("10.0.0.2"), Proto::Tcp));
        assert!(dns(ip("2001:db8::53"), Proto::Udp));
        assert!(!dns(ip("10.0.0.3"), Proto::Udp), "only the name servers");

        // A packaged /etc/resolv.conf and --dns: one or the other.
        let with_file = package_args(&dir, &[&format!("{}:/etc", etc.display())]);
        let a2 = PackageArgs {
            dns: a.dns.clone(),
            ..with_file
        };
        let e = format!("{:#}", run(&a2).unwrap_err());
        assert!(
            e.contains("/etc/resolv.conf holds the name servers of --dns"),
            "{e}"
        );
        for (dns, says) in [
            (
                vec!["ns.example"],
                "--dns \"ns.example\" is not an IPv4 or IPv6 address",
            ),
            (vec!["10.0.0.0/8"], "--dns \"10.0.0.0/8\" is not"),
            (
                vec!["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"],
                "at most 3",
            ),
        ] {
            let e = resolv_conf(&dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_sets_the_policy_and_not_the_measurement() {
        let dir = scratch("debug");
        let mut a = package_args(&dir, &[]);
        run(&a).unwrap();
        let plain = std::fs::read(&a.output).unwrap();
        a.debug = true;
        run(&a).unwrap();
        let debug = std::fs::read(&a.output).unwrap();
        for platform in [
            nacre_loader::PlatformKind::Snp,
            nacre_loader::PlatformKind::Tdx,
        ] {
            let plain = nacre_loader::load_image(&plain, platform).unwrap();
            let debug = nacre_loader::load_image(&debug, platform).unwrap();
            assert!(!plain.debug(), "{platform:?}");
            assert!(debug.debug(), "{platform:?}");
            assert_eq!(plain.measurement(), debug.measurement(), "{platform:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_leaves_no_image_on_error() {
        let dir = scratch("run-error");
        for files in [
            vec!["missing:/m".to_owned()],
            vec!["no-colon".to_owned()],
            vec![format!("{}:/dev/x", dir.display())],
        ] {
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            let a = package_args(&dir, &files);
            let err = run(&a).unwrap_err();
            let left: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, [OsString::from("hello")], "{err:#}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endless_or_special_inputs_are_refused_unread() {
        let dir = scratch("run-input");
        let mut a = package_args(&dir, &[]);
        // /dev/zero used to be read until memory ran out.
        a.app = PathBuf::from("/dev/zero");
        let err = format!("{:#}", run(&a).unwrap_err());
        assert!(
            err.contains("cannot read the app /dev/zero: it is a character device"),
            "{err}"
        );
        let fifo = dir.join("fifo");
        crate::files::tests::mkfifo(&fifo);
        let a = package_args(&dir, &[&format!("{}:/fifo", fifo.display())]);
        let err = format!("{:#}", run(&a).unwrap_err());
        assert!(err.contains("is a named pipe (FIFO)"), "{err}");
        assert!(!a.output.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn outputs_that_are_not_regular_files_are_refused() {
        let dir = scratch("run-output");
        let mut a = package_args(&dir, &[]);
        let fifo = dir.join("fifo.igvm");
        crate::files::tests::mkfifo(&fifo);
        let target = dir.join("target.igvm");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.join("link.igvm");
        std::os::unix::fs::symlink("target.igvm", &link).unwrap();
        for (output, says) in [
            (fifo.clone(), "is a named pipe (FIFO)"),
            (link.clone(), "is a symbolic link"),
            (dir.clone(), "is a directory"),
            (PathBuf::from("/dev/null"), "is a character device"),
        ] {
            a.output = output;
            let err = format!("{:#}", run(&a).unwrap_err());
            assert!(err.contains(says), "{}: {err}", a.output.display());
        }
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        // A regular file is replaced.
        a.output = target.clone();
        run(&a).unwrap();
        assert!(nacre_loader::load_image(
            &std::fs::read(&target).unwrap(),
            nacre_loader::PlatformKind::Snp
        )
        .is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
