//! The SHA-256 of the agent's own binary file as it is on disk now, for `Hello`: the controller
//! compares it with the binary it would install, so a binary changed or replaced on disk is
//! noticed (and replaced) even while the old one keeps running.
//!
//! The hash is of the file at the path the agent was started from, not of the running image: a
//! binary replaced by rename leaves `/proc/self/exe` pointing at the old, deleted inode. It is
//! cached while the file's inode, size and times stay the same.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

static CACHE: Mutex<Option<(PathBuf, Stamp, String)>> = Mutex::new(None);

/// The path the agent was started from (on disk now, even if the running file was replaced).
pub fn own_path() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // After a replace by rename, the kernel reports the old inode's path as "<path> (deleted)".
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// Hex SHA-256 of the agent's binary file; empty (and a warning in the journal) when it cannot
/// be read, which the controller treats as "not current".
pub fn own_sha256() -> String {
    match own_path().and_then(|path| sha256_of(&path)) {
        Ok(hash) => hash,
        Err(error) => {
            tracing::warn!(%error, "cannot hash the agent's binary file");
            String::new()
        }
    }
}

/// Hex SHA-256 of the file at `path`, cached by its metadata.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let before = stamp(&std::fs::metadata(path)?);
    if let Ok(cache) = CACHE.lock()
        && let Some((cached_path, cached_stamp, hash)) = cache.as_ref()
        && cached_path == path
        && *cached_stamp == before
    {
        return Ok(hash.clone());
    }
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    let hash = hex::encode(hasher.finalize());
    // The stamp of what was read: a file changed while being read gets hashed again next time.
    let after = stamp(&file.metadata()?);
    if after == before
        && let Ok(mut cache) = CACHE.lock()
    {
        *cache = Some((path.to_path_buf(), before, hash.clone()));
    }
    Ok(hash)
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
        ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_or_replaced_file_gets_a_new_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tpa-agent");
        std::fs::write(&path, b"agent v1").expect("write");
        let first = sha256_of(&path).expect("hash");
        assert_eq!(first, hex::encode(Sha256::digest(b"agent v1")));
        assert_eq!(sha256_of(&path).expect("cached"), first);
        // Appended in place (as the e2e test tampers with it), then replaced by rename.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut file, b"x").expect("append");
        drop(file);
        assert_eq!(
            sha256_of(&path).expect("hash"),
            hex::encode(Sha256::digest(b"agent v1x"))
        );
        let new = dir.path().join("new");
        std::fs::write(&new, b"agent v2").expect("write");
        std::fs::rename(&new, &path).expect("rename");
        assert_eq!(
            sha256_of(&path).expect("hash"),
            hex::encode(Sha256::digest(b"agent v2"))
        );
    }

    #[test]
    fn own_hash_is_of_the_running_executable_file() {
        let path = own_path().expect("own path");
        let expected = hex::encode(Sha256::digest(std::fs::read(&path).expect("read")));
        assert_eq!(own_sha256(), expected);
    }
}
