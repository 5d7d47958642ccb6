//! The files nacre reads whole and the files it writes for its user.
//!
//! Every file nacre reads whole is read by [`read_input`] with the most bytes it takes
//! of that kind of input ([`Input`]; README.md has the table): a larger
//! file is refused before it is read, and a file that grows while it is read is cut
//! off there and refused too, so no input can make nacre allocate without bound. It
//! must be a regular file: a device (`/dev/zero` never ends), a named pipe, a socket
//! or a directory is refused before anything is read (a named pipe is opened without
//! waiting for a writer).
//!
//! What nacre writes for its user: the image of `nacre package -o`, the evidence
//! of `nacre attest -o`, the counters of `--stats-json`, the policy of `nacre measure
//! --policy-out`, the samples of `NACRE_PROFILE`.
//!
//! An output path must name a regular file or nothing yet. Anything else is refused
//! before any work is done and again just before the file is replaced: a directory, a
//! named pipe, a socket, a device (as root, writing "to" `/dev/null` would otherwise
//! turn the device node into a regular file), and a symbolic link, even one to a
//! regular file (replacing the link would leave its target untouched, writing through
//! it would change a file the path does not name: either surprises someone, so the
//! user gives the file's own path).
//!
//! A file is written whole or not at all: into a new file in the same directory, synced
//! to disk, then renamed over the path. On any error the new file is removed and
//! whatever was at the path is left as it was. A file that is replaced keeps its
//! permission bits; a new one gets the usual `0666` less the umask.

use std::ffi::OsString;
use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use thiserror::Error;

/// A kind of input nacre reads whole: what it is called in messages and the most bytes
/// nacre reads of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// What it is, for messages ("image", "evidence").
    pub what: &'static str,
    /// The most bytes nacre reads of it.
    pub max: u64,
}

/// The largest IGVM file: its header's `total_file_size` is 32 bits.
const IGVM_MAX: u64 = u32::MAX as u64;

/// An image (`nacre run`, `attest`, `measure`, `verify --image`): what an IGVM file can
/// hold.
pub const IMAGE: Input = Input {
    what: "image",
    max: IGVM_MAX,
};
/// The app of `nacre package`: it goes into an image.
pub const APP: Input = Input {
    what: "app",
    max: IGVM_MAX,
};
/// A host file of `nacre package --file` (all of them together are bounded the same way).
pub const PACKAGED_FILE: Input = Input {
    what: "file",
    max: IGVM_MAX,
};
/// Evidence (`nacre verify`): a report or quote of a few KiB, or an evidence file with
/// its certificates, CRL and collateral.
pub const EVIDENCE: Input = Input {
    what: "evidence",
    max: 16 << 20,
};
/// A certificate or a PEM bundle of a few (`--vcek`, `--cert-chain`, `--snp-certs`).
pub const CERTIFICATE: Input = Input {
    what: "certificate",
    max: 1 << 20,
};
/// A certificate revocation list (`--crl`, `--snp-certs`).
pub const CRL: Input = Input {
    what: "CRL",
    max: 16 << 20,
};
/// DCAP collateral (`--collateral`).
pub const COLLATERAL: Input = Input {
    what: "collateral",
    max: 16 << 20,
};
/// A reference-value policy (`nacre verify --policy`).
pub const POLICY: Input = Input {
    what: "policy",
    max: 1 << 20,
};
/// A key or certificate of the emulated platforms' key directories.
pub const KEY_FILE: Input = Input {
    what: "key file",
    max: 1 << 20,
};
/// A configuration file of the host's (the quote generation service's).
pub const CONFIG: Input = Input {
    what: "configuration file",
    max: 1 << 20,
};

/// Why a file cannot be read or written.
#[derive(Debug, Error)]
pub enum FileError {
    /// The file system refused a read.
    #[error("cannot read the {what} {}", .path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// What it was to be ([`Input::what`]).
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An input that is not a regular file.
    #[error("cannot read the {what} {}: it is {kind}, not a regular file", .path.display())]
    InputNotRegular {
        /// The path.
        path: PathBuf,
        /// What it was to be.
        what: &'static str,
        /// What it is, with its article.
        kind: &'static str,
    },
    /// An input larger than nacre reads of its kind.
    #[error(
        "cannot read the {what} {}: it is larger than {}, nacre's limit for this kind of \
         input",
        .path.display(),
        crate::platform::launch::size_text(*.max)
    )]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// What it was to be.
        what: &'static str,
        /// The most nacre reads of it ([`Input::max`]).
        max: u64,
    },
    /// The output path's folder does not exist or is no folder.
    #[error("cannot write {}: {} is not an existing folder", .path.display(), .folder.display())]
    NoFolder {
        /// The path.
        path: PathBuf,
        /// Its folder.
        folder: PathBuf,
    },
    /// The output path is a file the command reads.
    #[error(
        "cannot write {}: it is the {what} {} (the same file), which this command reads \
         and would lose",
        .path.display(),
        .input.display()
    )]
    OutputIsInput {
        /// The path.
        path: PathBuf,
        /// What the input is ("image", "app").
        what: &'static str,
        /// The input's path as given.
        input: PathBuf,
    },
    /// The output path names something other than a regular file.
    #[error(
        "{} is {kind}; nacre writes its output only to a regular file or to a path where \
         nothing exists yet",
        .path.display()
    )]
    OutputNotRegular {
        /// The path.
        path: PathBuf,
        /// What is there, with its article ("a named pipe (FIFO)").
        kind: &'static str,
    },
    /// The output path is a symbolic link.
    #[error(
        "{} is a symbolic link; nacre does not write through links: give the path of the \
         file itself, or a path where nothing exists yet",
        .path.display()
    )]
    OutputSymlink {
        /// The path.
        path: PathBuf,
    },
    /// The output path names a directory entry of no file (`dir/`, `..`).
    #[error("{} does not name a file", .path.display())]
    NoFileName {
        /// The path.
        path: PathBuf,
    },
    /// The file system refused.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Read the whole of `path`, a regular file of at most `input.max` bytes.
pub fn read_input(path: &Path, input: Input) -> Result<Vec<u8>, FileError> {
    let Input { what, max } = input;
    let failed = |source| FileError::Read {
        path: path.to_path_buf(),
        what,
        source,
    };
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        what,
        max,
    };
    let not_regular = |meta: &std::fs::Metadata| FileError::InputNotRegular {
        path: path.to_path_buf(),
        what,
        kind: kind_name(meta.file_type()),
    };
    // Looked at before it is opened, since opening a device can act on it (a tape
    // rewinds, a watchdog arms); looked at again once open, in case it was replaced.
    let meta = std::fs::metadata(path).map_err(failed)?;
    if !meta.file_type().is_file() {
        return Err(not_regular(&meta));
    }
    // Without waiting for a writer if it became a named pipe: it is refused below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if !meta.file_type().is_file() {
        return Err(not_regular(&meta));
    }
    if meta.len() > max {
        return Err(too_large());
    }
    // The size is a hint (files in /proc say 0); the read stops one byte past `max`.
    let capacity = usize::try_from(meta.len()).unwrap_or(0);
    let bytes = read_sparse((&file).take(max.saturating_add(1)), capacity).map_err(failed)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Bytes of a read that are copied at a time.
const READ_CHUNK: usize = 1 << 16;

/// Read `reader` to its end into a zeroed buffer of `hint` bytes (grown if the reader
/// has more), copying only the 4 KiB pieces that are not all zeros: the pages of a
/// zero-filled file (a disk image, a preallocated database) are never written, so the
/// system, which hands out large zeroed allocations as untouched memory, never backs
/// them. A packaged file of a gigabyte of zeros then costs no gigabyte of memory.
fn read_sparse(mut reader: impl Read, hint: usize) -> io::Result<Vec<u8>> {
    let mut bytes = zeroed(hint)?;
    let mut len = 0;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if len + n > bytes.len() {
            // Past the hint: the file grew, or its size said nothing.
            bytes
                .try_reserve(len + n - bytes.len())
                .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
            bytes.resize(len + n, 0);
        }
        for (to, from) in bytes[len..len + n]
            .chunks_mut(4096)
            .zip(chunk[..n].chunks(4096))
        {
            if from.iter().any(|&b| b != 0) {
                to.copy_from_slice(from);
            }
        }
        len += n;
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// `len` zero bytes, allocated zeroed (the system maps large ones lazily), or an
/// out-of-memory error.
fn zeroed(len: usize) -> io::Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let out_of_memory = || io::Error::from(io::ErrorKind::OutOfMemory);
    let layout = std::alloc::Layout::array::<u8>(len).map_err(|_| out_of_memory())?;
    // SAFETY: `layout` has a size of `len` bytes, not zero.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(out_of_memory());
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `len`
    // bytes (alignment 1), which is what a `Vec<u8>` of capacity `len` holds; all `len`
    // bytes are initialized (zeroed).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// [`read_input`] for callers whose errors carry an [`io::Error`] and the path: the
/// error says only what is wrong with the file.
pub fn read_input_io(path: &Path, input: Input) -> io::Result<Vec<u8>> {
    read_input(path, input).map_err(|e| match e {
        FileError::Read { source, .. } => source,
        FileError::InputNotRegular { kind, .. } => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file"),
        ),
        FileError::TooLarge { max, .. } => io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "it is larger than {}, nacre's limit for a {}",
                crate::platform::launch::size_text(max),
                input.what
            ),
        ),
        other => io::Error::other(other.to_string()),
    })
}

/// `read_input` as text.
pub fn read_input_text(path: &Path, input: Input) -> Result<String, FileError> {
    let bytes = read_input(path, input)?;
    String::from_utf8(bytes).map_err(|_| FileError::Read {
        path: path.to_path_buf(),
        what: input.what,
        source: io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"),
    })
}

/// An error and its causes, one sentence (for messages that are strings).
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// What a file that is neither a regular file nor a symbolic link is, with its
/// article: "a directory", "a named pipe (FIFO)", ...
pub fn kind_name(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Check that `path` may be written: its folder exists, and nothing is there or a
/// regular file (not a symbolic link to one). Commands call this before their work,
/// so that a bad output path costs nothing; [`write_output`] checks again.
pub fn check_output(path: &Path) -> Result<(), FileError> {
    if path.file_name().is_none() {
        return Err(FileError::NoFileName {
            path: path.to_path_buf(),
        });
    }
    let folder = parent_dir(path);
    match fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(FileError::NoFolder {
                path: path.to_path_buf(),
                folder: folder.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FileError::NoFolder {
                path: path.to_path_buf(),
                folder: folder.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(FileError::Write {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(meta) if meta.file_type().is_symlink() => Err(FileError::OutputSymlink {
            path: path.to_path_buf(),
        }),
        Ok(meta) => Err(FileError::OutputNotRegular {
            path: path.to_path_buf(),
            kind: kind_name(meta.file_type()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FileError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// [`check_output`], and that `path` is none of `inputs` (what each is, its path)
/// under any name: writing it would replace an input the command is reading.
pub fn check_output_apart(path: &Path, inputs: &[(&'static str, &Path)]) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt;
    check_output(path)?;
    let Ok(out) = fs::metadata(path) else {
        // Nothing there yet: no input is it.
        return Ok(());
    };
    for &(what, input) in inputs {
        if let Ok(meta) = fs::metadata(input) {
            if (meta.dev(), meta.ino()) == (out.dev(), out.ino()) {
                return Err(FileError::OutputIsInput {
                    path: path.to_path_buf(),
                    what,
                    input: input.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// The directory `path` is in ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A new file in `dir` with a name nothing else uses, mode `0666` less the umask.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let mut name = OsString::from(".nacre-partial-");
        name.push(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            // Left by another process with the same id: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Write `bytes` to `path` whole or not at all (see the module's documentation).
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    check_output(path)?;
    let failed = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = parent_dir(path);
    let (tmp, mut file) = create_temp(dir).map_err(failed)?;
    let written = (|| {
        file.write_all(bytes).map_err(failed)?;
        if let Ok(old) = fs::symlink_metadata(path) {
            if old.file_type().is_file() {
                let mode = old.permissions().mode() & 0o7777;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(failed)?;
            }
        }
        file.sync_all().map_err(failed)?;
        // Whatever appeared at the path meanwhile is not replaced either.
        check_output(path)?;
        fs::rename(&tmp, path).map_err(failed)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // Best effort: the rename is durable once the directory is synced.
    let _ = File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    /// A reader that returns at most `step` bytes per read.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// A sparse read gives the bytes read, zero pieces or not, whatever the size hint
    /// and however the reads are cut.
    #[test]
    fn sparse_reads_give_every_byte() {
        let mut bytes = vec![0u8; 5 * READ_CHUNK + 4321];
        for (i, b) in bytes.iter_mut().enumerate() {
            // Runs of zeros, pieces with one byte set, and data.
            if (i / 4096) % 3 == 1 || i % 9973 == 0 {
                *b = (i % 251) as u8 | 1;
            }
        }
        for step in [1000, 4096, READ_CHUNK, usize::MAX] {
            for hint in [0, 100, bytes.len(), bytes.len() + 5000] {
                let read = read_sparse(
                    Trickle {
                        bytes: &bytes,
                        step,
                    },
                    hint,
                )
                .unwrap();
                assert!(read == bytes, "step {step}, hint {hint}");
            }
        }
        assert!(read_sparse(io::empty(), 0).unwrap().is_empty());
        assert!(read_sparse(io::empty(), 10).unwrap().is_empty());
    }

    /// A fresh, empty scratch directory for one test.
    pub(crate) fn scratch(name: &str) -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nacre-files-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Make a named pipe at `path`.
    pub(crate) fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(r, 0, "mkfifo {}", path.display());
    }

    /// The names in `dir`.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn inputs_are_read_whole_up_to_their_limit() {
        let dir = scratch("read");
        let small = Input {
            what: "thing",
            max: 16,
        };
        let file = dir.join("file");
        fs::write(&file, b"sixteen bytes!!!").unwrap();
        assert_eq!(read_input(&file, small).unwrap(), b"sixteen bytes!!!");
        fs::write(&file, b"seventeen bytes!!").unwrap();
        let e = read_input(&file, small).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { max: 16, .. }), "{e}");
        assert!(e.to_string().contains("larger than 16 bytes"), "{e}");
        // A sparse file says how large it is: refused before a byte is read.
        let sparse = dir.join("sparse");
        File::create(&sparse).unwrap().set_len(64 << 20).unwrap();
        let e = read_input(&sparse, EVIDENCE).unwrap_err();
        assert!(
            e.to_string()
                .contains("larger than 16 MiB, nacre's limit for this kind of input"),
            "{e}"
        );
        // A file whose size says nothing is still read only up to the limit.
        let status = read_input(Path::new("/proc/self/status"), CONFIG).unwrap();
        assert!(status.starts_with(b"Name:"));
        let e = read_input(Path::new("/proc/self/status"), small).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { .. }), "{e}");

        let e = read_input(&dir.join("missing"), IMAGE).unwrap_err();
        assert!(
            matches!(&e, FileError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(e.to_string().starts_with("cannot read the image "), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn inputs_that_are_not_regular_files_are_refused_unread() {
        let dir = scratch("read-special");
        let fifo = dir.join("fifo");
        mkfifo(&fifo);
        // A socket cannot be opened at all: it is named, not "no such device".
        let socket = dir.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        // No writer: opening it must not wait for one.
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (fifo.as_path(), "a named pipe (FIFO)"),
            (dir.as_path(), "a directory"),
            (socket.as_path(), "a socket"),
        ] {
            let e = read_input(path, IMAGE).unwrap_err();
            assert!(
                matches!(e, FileError::InputNotRegular { kind: k, .. } if k == kind),
                "{e}"
            );
            assert!(e.to_string().contains("not a regular file"), "{e}");
            let io = read_input_io(path, KEY_FILE).unwrap_err();
            assert_eq!(io.kind(), io::ErrorKind::InvalidInput, "{io}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_file_and_a_replaced_one_are_written_whole() {
        let dir = scratch("write");
        let out = dir.join("out.bin");
        write_output(&out, b"first").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"first");
        fs::set_permissions(&out, fs::Permissions::from_mode(0o640)).unwrap();
        write_output(&out, b"second, longer").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"second, longer");
        let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "a replaced file keeps its permission bits");
        assert_eq!(names(&dir), ["out.bin"], "no temporary file is left");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_output_that_is_an_input_or_has_no_folder_is_refused_before_any_work() {
        let dir = scratch("apart");
        let image = dir.join("image.igvm");
        fs::write(&image, b"image").unwrap();
        let link = dir.join("other-name.igvm");
        fs::hard_link(&image, &link).unwrap();
        let dotted = dir.join(".").join("image.igvm");
        for out in [&image, &link, &dotted] {
            let e = check_output_apart(
                out,
                &[("app", Path::new("/nonexistent")), ("image", &image)],
            )
            .unwrap_err();
            assert!(
                matches!(e, FileError::OutputIsInput { what: "image", .. }),
                "{e}"
            );
            assert!(e.to_string().contains("which this command reads"), "{e}");
        }
        assert_eq!(fs::read(&image).unwrap(), b"image");
        // Another file, or one not there yet, may be written.
        check_output_apart(&dir.join("new"), &[("image", &image)]).unwrap();
        fs::write(dir.join("old"), b"old").unwrap();
        check_output_apart(&dir.join("old"), &[("image", &image)]).unwrap();
        // A folder that is not there, or a file where the folder should be.
        for out in [dir.join("missing/out"), image.join("out")] {
            let e = check_output(&out).unwrap_err();
            assert!(matches!(e, FileError::NoFolder { .. }), "{e}");
            assert!(e.to_string().contains("is not an existing folder"), "{e}");
        }
        check_output(Path::new("bare-name-in-the-current-folder")).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn special_files_are_refused_and_left_alone() {
        let dir = scratch("special");
        let fifo = dir.join("fifo");
        mkfifo(&fifo);
        let e = write_output(&fifo, b"x").unwrap_err();
        assert!(
            matches!(
                e,
                FileError::OutputNotRegular {
                    kind: "a named pipe (FIFO)",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("only to a regular file"), "{e}");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        let e = write_output(&sub, b"x").unwrap_err();
        assert!(
            matches!(
                e,
                FileError::OutputNotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
        assert!(fs::symlink_metadata(&sub).unwrap().is_dir());

        // A device node: refused before anything is opened or renamed.
        let e = check_output(Path::new("/dev/null")).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::OutputNotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{e}"
        );
        assert!(fs::symlink_metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());

        let e = write_output(Path::new("/"), b"x").unwrap_err();
        assert!(matches!(e, FileError::NoFileName { .. }), "{e}");
        assert_eq!(names(&dir), ["fifo", "sub"], "nothing was written");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn symbolic_links_are_refused_even_to_regular_files() {
        let dir = scratch("symlink");
        let target = dir.join("target");
        fs::write(&target, b"keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink("target", &link).unwrap();
        let e = write_output(&link, b"x").unwrap_err();
        assert!(matches!(e, FileError::OutputSymlink { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
        assert!(matches!(
            write_output(&dangling, b"x"),
            Err(FileError::OutputSymlink { .. })
        ));
        assert!(!dir.join("nowhere").exists());
        assert_eq!(names(&dir), ["dangling", "link", "target"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = scratch("fail");
        let e = write_output(&dir.join("missing/out"), b"x").unwrap_err();
        assert!(matches!(e, FileError::NoFolder { .. }), "{e}");
        assert!(e.to_string().contains("missing/out"), "{e}");
        // A read-only directory: the new file cannot be made (unless root, who may).
        let ro = dir.join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
        let result = write_output(&ro.join("out"), b"x");
        let left = names(&ro);
        assert!(
            left.iter().all(|n| !n.starts_with(".nacre-partial-")),
            "{left:?} after {result:?}"
        );
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
