//! The network policy of an image (shared-abi `net_policy.rs`): read from its measured
//! file tree, for the host to enforce and for `nacre measure --explain` to show.

use anyhow::{anyhow, bail};
use nacre_loader::image::file_tree_reason;
use nacre_loader::LoadedImage;
use nacre_shared_abi::filetree::{FileTree, Resolved};
use nacre_shared_abi::net_policy::{Policy, MAX_POLICY_BYTES, POLICY_PATH};

/// The policy text `image` carries at [`POLICY_PATH`], checked; `None` when it has
/// none (then the app has no network).
pub fn image_policy(image: &LoadedImage) -> anyhow::Result<Option<String>> {
    let Some(bytes) = image_file(image, POLICY_PATH, MAX_POLICY_BYTES)? else {
        return Ok(None);
    };
    Policy::parse(&bytes)
        .map_err(|(line, e)| anyhow!("{POLICY_PATH} in the image, line {line}: {e}"))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The bytes of the regular file at `path` in `image`'s measured file tree (`None`
/// when there is nothing there), at most `max` of them.
fn image_file(image: &LoadedImage, path: &str, max: usize) -> anyhow::Result<Option<Vec<u8>>> {
    let blob = image
        .file_tree()
        .ok_or_else(|| anyhow!("the image's file tree is not all measured pages"))?;
    let tree = FileTree::parse(&blob)
        .map_err(|e| anyhow!("the image's file tree: {}", file_tree_reason(&e)))?;
    let inode = match tree.resolve(0, path.as_bytes(), |_, _| None::<()>) {
        Ok(Resolved::Inode(i)) => i,
        _ => return Ok(None),
    };
    let inode = tree
        .inode(inode)
        .map_err(|e| anyhow!("{path} in the image: {}", file_tree_reason(&e)))?;
    let Ok(bytes) = tree.file_bytes(&inode) else {
        bail!("{path} in the image is not a regular file");
    };
    if bytes.len() > max {
        bail!("{path} in the image is larger than {max} bytes");
    }
    Ok(Some(bytes.to_vec()))
}

/// Where resolvers find their name servers (and `nacre package --dns` writes them).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The name servers `image`'s packaged `/etc/resolv.conf` names (`nacre package
/// --dns`, or the user's own file), for `measure --explain`: a line each.
pub fn name_servers(image: &LoadedImage) -> Vec<String> {
    match image_file(image, RESOLV_CONF, 64 << 10) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some("nameserver"))
                    .then(|| words.next())
                    .flatten()
            })
            .map(|ns| format!("name server {ns} ({RESOLV_CONF})"))
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => vec![format!("{RESOLV_CONF} cannot be read: {e:#}")],
    }
}

/// The rules of a policy text, one per line, for people (`measure --explain`).
pub fn describe(policy: Option<&str>) -> Vec<String> {
    let Some(text) = policy else {
        return vec!["none: the app has no network".to_owned()];
    };
    let Ok(p) = Policy::parse(text.as_bytes()) else {
        return vec!["malformed".to_owned()];
    };
    let mut out = Vec::new();
    for rule in p.rules() {
        let mut line = String::new();
        let _ = nacre_shared_abi::net_policy::write_rule(&rule, &mut line);
        out.push(line);
    }
    if out.is_empty() {
        out.push("none: the app has no network".to_owned());
    }
    out
}
