//! The emulated hardware of the `emulated-snp` and `emulated-tdx` platforms: what the
//! CPU, the AMD security processor and the TDX module do on real machines, played in
//! software so that the same firmware and images run on any host with `/dev/kvm`.
//!
//! One folder per vendor:
//! - [`snp`]: the reverse map table (RMP) with PVALIDATE, RMPADJUST, RMPUPDATE and
//!   PSMASH; the security processor (launch measurement, secrets page, guest
//!   messages); the AMD-style key hierarchy (ARK, ASK, VCEK, CRL) that signs its
//!   reports.
//! - [`tdx`]: the TDX module (TDCALL leaves, the Secure EPT, the MRTD, the TDREPORT
//!   MAC); the quoting enclave; the Intel-style PCK hierarchy and the DCAP collateral.
//!
//! Exit handlers reach this code only through narrow interfaces (the security
//! processor, the TDX module, the quoting service), which is where the KVM-backed
//! hardware platforms plug in instead. Nothing here is trusted by the verifier:
//! evidence it signs verifies only against roots the verifier is given explicitly.

use std::path::Path;

pub mod random;
pub mod snp;
pub mod tdx;

/// A platform's keys, loaded when first needed: loading may mean creating a key
/// hierarchy, which a guest that never attests should not pay for.
pub struct LazyKeys<T> {
    what: &'static str,
    loader: Option<KeyLoader<T>>,
    value: Option<T>,
}

/// Loads a [`LazyKeys`] value, or says why it cannot.
pub type KeyLoader<T> = Box<dyn FnOnce() -> Result<T, String> + Send>;

impl<T> Default for LazyKeys<T> {
    fn default() -> Self {
        Self {
            what: "keys",
            loader: None,
            value: None,
        }
    }
}

impl<T> std::fmt::Debug for LazyKeys<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyKeys")
            .field("what", &self.what)
            .field("loaded", &self.value.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> LazyKeys<T> {
    /// `what` (for messages), which `loader` produces when first needed.
    pub fn new(what: &'static str, loader: KeyLoader<T>) -> Self {
        Self {
            what,
            loader: Some(loader),
            value: None,
        }
    }

    /// The value, loading it now if this is the first use; `None` (and the reason
    /// printed once) if it cannot be loaded.
    pub fn get(&mut self) -> Option<&T> {
        if let Some(load) = self.loader.take() {
            match load() {
                Ok(value) => self.value = Some(value),
                Err(e) => crate::say!("nacre: cannot load {}: {e}", self.what),
            }
        }
        self.value.as_ref()
    }
}

/// How [`publish_dir`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The new directory is in place.
    Ours,
    /// Another process put one there first; ours was thrown away.
    Theirs,
}

/// Make the directory `dir` appear whole or not at all: `fill` writes its files into
/// a fresh private (mode 0700) temporary directory beside it, which is synced and
/// then renamed to `dir`. Concurrent first uses never see, or mix, a partial set: the
/// first rename wins, and the others get [`Published::Theirs`] (their caller loads
/// what is there). `io` describes a failure of the file system.
pub fn publish_dir<E>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
    io: impl Fn(&'static str, &Path, std::io::Error) -> E,
) -> Result<Published, E> {
    let name = dir.file_name().ok_or_else(|| {
        io(
            "use as a key directory",
            dir,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path has no final name",
            ),
        )
    })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".new-");
    // Private from the start, and removed on every early return.
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(parent)
        .map_err(|e| io("create", parent, e))?;
    fill(tmp.path())?;
    std::fs::File::open(tmp.path())
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", tmp.path(), e))?;
    // Renaming onto a missing or empty directory succeeds; onto a non-empty one it
    // fails, which means another process was first.
    match std::fs::rename(tmp.path(), dir) {
        Ok(()) => {
            // Moved: nothing left to remove.
            let _ = tmp.keep();
            // Best effort: the rename is durable once the parent is synced.
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
            Ok(Published::Ours)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists
            ) =>
        {
            Ok(Published::Theirs)
        }
        Err(e) => Err(io("move into place as", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_directory_appears_whole_and_the_first_one_wins() {
        let base = tempfile::tempdir().expect("scratch");
        let dir = base.path().join("keys");
        let io = |what: &'static str, p: &Path, e: std::io::Error| format!("{what} {p:?}: {e}");
        let fill = |body: &'static str| {
            move |tmp: &Path| std::fs::write(tmp.join("file"), body).map_err(|e| e.to_string())
        };
        assert_eq!(publish_dir(&dir, fill("first"), io), Ok(Published::Ours));
        assert_eq!(publish_dir(&dir, fill("second"), io), Ok(Published::Theirs));
        assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "first");
        let mode = std::os::unix::fs::PermissionsExt::mode(&dir.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
        // A failed fill leaves nothing behind, not even the temporary directory.
        let other = base.path().join("other");
        let failed = publish_dir(&other, |_| Err("no".to_owned()), io);
        assert_eq!(failed, Err("no".to_owned()));
        assert!(!other.exists());
        let left: Vec<_> = std::fs::read_dir(base.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
