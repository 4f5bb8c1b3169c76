//! The RepoSync and RepoPut RPCs: the cluster's package repository kept in one directory of the
//! agent's own, for platforms that cannot mount the controller's `local-repo/` (bare machines).
//!
//! The directory is fixed ([`REPO_DIR`], TPA's path, where docker bind-mounts the repository), so
//! the controller can only name files in it, never a path. `sync` removes files the controller no
//! longer lists and says which listed files are absent or differ; `put` writes one file beside its
//! final name and renames it into place only when its size and SHA-256 are the announced ones,
//! so apt never reads half a package. Hashes are cached by file metadata for the agent's
//! lifetime: a re-deploy that ships nothing reads no package.
//!
//! ```text
//! RepoSync { files: [{name: "postgresql-15_15.14-0+deb12u1_amd64.deb", sha256: "ab12…", size: 17633020}, …] }
//!   -> { dir: "/var/opt/tpa/local-repo", missing: ["postgresql-15_…deb"], removed: [] }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Where the repository lives on the host.
pub const REPO_DIR: &str = "/var/opt/tpa/local-repo";

/// Longest file name accepted (Debian package file names stay far below).
const MAX_NAME: usize = 200;

/// One file of the repository as the controller lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// Why a repository call failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("`{0}` is not a plain file name of the package repository")]
    BadName(String),
    #[error("`{name}`: {detail}")]
    BadContent { name: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`sync`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub missing: Vec<String>,
    pub removed: Vec<String>,
}

/// Names are file names inside the directory: no separators, no dot files (temporary files
/// start with a dot), nothing that is not printable.
pub fn check_name(name: &str) -> Result<(), RepoError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._~:%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RepoError::BadName(name.to_string()))
    }
}

/// Makes `dir` hold exactly `files` (removing the others unless `check_only`) and returns the
/// listed files that are absent or differ.
pub fn sync(dir: &Path, files: &[RepoFile], check_only: bool) -> Result<SyncReport, RepoError> {
    for f in files {
        check_name(&f.name)?;
    }
    let mut report = SyncReport::default();
    if !dir.exists() {
        if !check_only {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io(dir))?;
        }
        report.missing = files.iter().map(|f| f.name.clone()).collect();
        return Ok(report);
    }
    let wanted: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut entries: Vec<(String, std::fs::FileType)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let kind = entry.file_type().map_err(io(dir))?;
        entries.push((entry.file_name().to_string_lossy().into_owned(), kind));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in entries {
        // Leftover temporary files (dot files) go too: an interrupted put is never resumed.
        if !wanted.contains(name.as_str()) {
            let path = dir.join(&name);
            if !check_only {
                if kind.is_dir() {
                    std::fs::remove_dir_all(&path).map_err(io(&path))?;
                } else {
                    std::fs::remove_file(&path).map_err(io(&path))?;
                }
            }
            if !name.starts_with('.') {
                report.removed.push(name);
            }
        }
    }
    for f in files {
        if !holds(&dir.join(&f.name), f)? {
            report.missing.push(f.name.clone());
        }
    }
    Ok(report)
}

/// Whether `path` is a regular file with `f`'s size and hash.
fn holds(path: &Path, f: &RepoFile) -> Result<bool, RepoError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(path)(e)),
    };
    if !meta.file_type().is_file() || meta.len() != f.size {
        return Ok(false);
    }
    Ok(sha256_cached(path, &meta)? == f.sha256)
}

/// What identifies one version of a file without reading it.
type Stamp = (u64, u64, u64, i64, i64);

static HASHES: Mutex<Option<HashMap<PathBuf, (Stamp, String)>>> = Mutex::new(None);

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        meta.ctime_nsec() + meta.ctime() * 1_000_000_000,
    )
}

fn sha256_cached(path: &Path, meta: &std::fs::Metadata) -> Result<String, RepoError> {
    let key = stamp(meta);
    if let Ok(cache) = HASHES.lock()
        && let Some((stamp, hash)) = cache.as_ref().and_then(|c| c.get(path))
        && *stamp == key
    {
        return Ok(hash.clone());
    }
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    let hash = hex::encode(hasher.finalize());
    remember(path, key, &hash);
    Ok(hash)
}

fn remember(path: &Path, stamp: Stamp, hash: &str) {
    if let Ok(mut cache) = HASHES.lock() {
        cache
            .get_or_insert_with(HashMap::new)
            .insert(path.to_path_buf(), (stamp, hash.to_string()));
    }
}

/// One file being received: written to a temporary file beside its final name.
pub struct Upload {
    header: RepoFile,
    target: PathBuf,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
}

impl Upload {
    /// Starts receiving `header`'s file into `dir`.
    pub fn start(dir: &Path, header: RepoFile) -> Result<Upload, RepoError> {
        check_name(&header.name)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".put.")
            .tempfile_in(dir)
            .map_err(io(dir))?;
        Ok(Upload {
            target: dir.join(&header.name),
            header,
            tmp,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Appends one chunk; more bytes than announced is an error.
    pub fn write(&mut self, data: &[u8]) -> Result<(), RepoError> {
        self.written += data.len() as u64;
        if self.written > self.header.size {
            return Err(self.bad(format!(
                "more than the announced {} bytes",
                self.header.size
            )));
        }
        self.hasher.update(data);
        self.tmp
            .as_file_mut()
            .write_all(data)
            .map_err(io(self.tmp.path()))
    }

    /// Checks size and hash, then renames the file into place (mode 0644).
    pub fn finish(self) -> Result<(), RepoError> {
        if self.written != self.header.size {
            return Err(self.bad(format!(
                "received {} bytes, {} announced",
                self.written, self.header.size
            )));
        }
        let hash = hex::encode(self.hasher.clone().finalize());
        if hash != self.header.sha256 {
            return Err(self.bad("the content does not have the announced SHA-256".into()));
        }
        let tmp_path = self.tmp.path().to_path_buf();
        let file = self.tmp.as_file();
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .and_then(|()| file.sync_all())
            .map_err(io(&tmp_path))?;
        self.tmp
            .persist(&self.target)
            .map_err(|e| io(&self.target)(e.error))?;
        let meta = std::fs::metadata(&self.target).map_err(io(&self.target))?;
        remember(&self.target, stamp(&meta), &hash);
        Ok(())
    }

    fn bad(&self, detail: String) -> RepoError {
        RepoError::BadContent {
            name: self.header.name.clone(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &[u8]) -> RepoFile {
        RepoFile {
            name: name.into(),
            sha256: hex::encode(Sha256::digest(content)),
            size: content.len() as u64,
        }
    }

    fn put(dir: &Path, name: &str, content: &[u8]) -> Result<(), RepoError> {
        let mut upload = Upload::start(dir, file(name, content))?;
        for chunk in content.chunks(3) {
            upload.write(chunk)?;
        }
        upload.finish()
    }

    #[test]
    fn sync_lists_what_is_missing_then_nothing_once_it_is_put() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("repo");
        let files = [
            file("a_1_amd64.deb", b"package a"),
            file("Packages", b"index"),
        ];
        let first = sync(&dir, &files, false).unwrap();
        assert_eq!(first.missing, ["a_1_amd64.deb", "Packages"]);
        put(&dir, "a_1_amd64.deb", b"package a").unwrap();
        put(&dir, "Packages", b"index").unwrap();
        assert_eq!(sync(&dir, &files, false).unwrap(), SyncReport::default());
        // A changed file is missing again; one no longer listed is removed.
        let files = [
            file("a_1_amd64.deb", b"package a"),
            file("Packages", b"index 2"),
        ];
        std::fs::write(dir.join("old_1_amd64.deb"), b"x").unwrap();
        let check = sync(&dir, &files, true).unwrap();
        assert_eq!(check.removed, ["old_1_amd64.deb"]);
        assert!(
            dir.join("old_1_amd64.deb").exists(),
            "check removes nothing"
        );
        let report = sync(&dir, &files, false).unwrap();
        assert_eq!(report.missing, ["Packages"]);
        assert_eq!(report.removed, ["old_1_amd64.deb"]);
        assert!(!dir.join("old_1_amd64.deb").exists());
    }

    #[test]
    fn wrong_content_never_replaces_the_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        put(dir, "Packages", b"good").unwrap();
        let mut upload = Upload::start(dir, file("Packages", b"other")).unwrap();
        upload.write(b"evil!").unwrap();
        let err = upload.finish().unwrap_err().to_string();
        assert!(err.contains("announced SHA-256"), "{err}");
        let mut upload = Upload::start(dir, file("Packages", b"ab")).unwrap();
        assert!(upload.write(b"abc").is_err(), "more than announced");
        drop(upload);
        assert_eq!(std::fs::read(dir.join("Packages")).unwrap(), b"good");
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["Packages"], "temporary files are gone");
    }

    #[test]
    fn names_are_plain_file_names() {
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "a\nb",
            "x y",
            &"a".repeat(201),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
            assert!(sync(Path::new("/nonexistent"), &[file(bad, b"")], true).is_err());
        }
        for good in [
            "postgresql-15_15.14-0+deb12u1_amd64.deb",
            "Packages.gz",
            "Release",
            "libc6_2.36-9+deb12u13~x_amd64.deb",
        ] {
            check_name(good).unwrap();
        }
    }
}
