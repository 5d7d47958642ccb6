//! The read-only file tree: the packager's encoder (`loader/src/filetree.rs`,
//! `FileTreeBuilder`) fed any additions, and the decoder the firmware walks
//! (`nacre_shared_abi::filetree::FileTree`) fed its output or any bytes.
//!
//! Input: a mode byte. Even: the app's name (a length byte and bytes), then additions
//! of a kind byte (bit 0: a file), a mode (`u16`), a path (a length byte and bytes)
//! and for a file its data (a `u16` length and bytes). Odd: a path to resolve (a
//! length byte and bytes), then a tree's bytes.
//!
//! Invariants:
//! - the encoder is deterministic, and what it encodes decodes: every file and
//!   directory added resolves by its path to an inode of its kind and mode (a
//!   directory the last mode it was given), a file to its bytes, the app to the app's
//!   inode, and `path_of` gives each one's path back;
//! - on any bytes the decoder answers without panicking, and a path it gives for an
//!   inode resolves to an inode with the same path.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_loader::filetree::FileTreeBuilder;
use nacre_shared_abi::filetree::{FileTree, InodeKind, Resolved, PATH_MAX, ROOT_INODE};

/// A path's inode, or `None`.
fn resolve(tree: &FileTree<'_>, path: &[u8]) -> Option<u32> {
    match tree.resolve(ROOT_INODE, path, |_, _| None::<()>) {
        Ok(Resolved::Inode(i)) => Some(i),
        _ => None,
    }
}

fn path_of(tree: &FileTree<'_>, index: u32) -> Option<Vec<u8>> {
    let mut out = vec![0u8; PATH_MAX];
    let n = tree.path_of(index, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

/// What was added: a directory's mode, or a file's mode and bytes.
enum Added {
    Dir(u16),
    File(u16, Vec<u8>),
}

fn built(input: &mut Bytes<'_>) {
    let name_len = usize::from(input.u8());
    let name = input.take(name_len).to_vec();
    let Ok(mut builder) = FileTreeBuilder::new(&name) else {
        return;
    };
    let mut added: BTreeMap<Vec<u8>, Added> = BTreeMap::new();
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        let file = input.u8() & 1 != 0;
        let mode = input.u16();
        let path_len = usize::from(input.u8());
        let path = input.take(path_len).to_vec();
        let masked = mode & 0o7777;
        if file {
            let data_len = usize::from(input.u16());
            let data = input.take(data_len).to_vec();
            if builder
                .add_file(&path, data.clone(), u32::from(mode))
                .is_ok()
            {
                added.insert(path, Added::File(masked, data));
            }
        } else if builder.add_dir(&path, u32::from(mode)).is_ok() && path != b"/" {
            added.insert(path, Added::Dir(masked));
        }
    }
    let bytes = builder.build().expect("a small tree encodes");
    assert_eq!(
        builder.build().ok(),
        Some(bytes.clone()),
        "not deterministic"
    );
    let tree = FileTree::parse(&bytes).expect("what the builder encodes decodes");
    for (path, what) in &added {
        let i = resolve(&tree, path).unwrap_or_else(|| panic!("{path:?} does not resolve"));
        let inode = tree.inode(i).expect("a resolved inode");
        match what {
            Added::Dir(mode) => {
                assert_eq!(inode.kind(), Ok(InodeKind::Dir), "{path:?}");
                assert_eq!(inode.mode, *mode, "{path:?}");
            }
            Added::File(mode, data) => {
                assert_eq!(inode.kind(), Ok(InodeKind::File), "{path:?}");
                assert_eq!(inode.mode, *mode, "{path:?}");
                assert_eq!(tree.file_bytes(&inode).ok(), Some(&data[..]), "{path:?}");
            }
        }
        assert_eq!(path_of(&tree, i).as_deref(), Some(&path[..]));
    }
    let app = resolve(&tree, &builder.app_path()).expect("the app resolves");
    assert_eq!(tree.inode(app).and_then(|i| i.kind()), Ok(InodeKind::App));
}

fn raw(input: &mut Bytes<'_>) {
    let path_len = usize::from(input.u8());
    let path = input.take(path_len);
    let bytes = input.rest();
    let Ok(tree) = FileTree::parse(bytes) else {
        return;
    };
    for index in 0..tree.inode_count().min(512) {
        let Ok(inode) = tree.inode(index) else {
            continue;
        };
        let _ = tree.name(&inode);
        let _ = tree.file_bytes(&inode);
        let _ = tree.parent(index);
        for n in 0..inode.child_count.min(8) {
            let _ = tree.child(index, n);
        }
        if let Some(p) = path_of(&tree, index) {
            if let Some(j) = resolve(&tree, &p) {
                assert_eq!(path_of(&tree, j), Some(p), "inode {index} and {j}");
            }
        }
    }
    let _ = tree.resolve(ROOT_INODE, path, |_, name| (name == b"null").then_some(()));
    let _ = tree.lookup(ROOT_INODE, path);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    if input.u8() & 1 == 0 {
        built(&mut input);
    } else {
        raw(&mut input);
    }
});
