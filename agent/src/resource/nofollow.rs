//! Filesystem access that never follows a symbolic link at the last path component: paths are
//! inspected with `lstat` and opened with `O_NOFOLLOW`, and owner and mode are changed through
//! the open descriptor (`fchown`/`fchmod`), so a link swapped in between cannot redirect them.
//!
//! Why: the postgres OS user owns its data directory. Had the agent followed links, that user
//! could replace `/opt/postgres/data` (or a file in it) with a link to `/etc`, and the next
//! deploy would hand `/etc` to postgres.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use nix::fcntl::OFlag;

use super::ResourceError;

/// What the caller expects at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    File,
    Directory,
    /// A regular file or a directory.
    Either,
}

impl Expect {
    fn noun(self) -> &'static str {
        match self {
            Expect::File => "regular file",
            Expect::Directory => "directory",
            Expect::Either => "regular file or directory",
        }
    }

    fn accepts(self, meta: &fs::Metadata) -> bool {
        match self {
            Expect::File => meta.is_file(),
            Expect::Directory => meta.is_dir(),
            Expect::Either => meta.is_file() || meta.is_dir(),
        }
    }
}

/// `lstat`: None when nothing is at `path`; an error naming the path for a symlink, or for
/// anything else that is not what `expect` says.
pub fn inspect(path: &str, expect: Expect) -> Result<Option<fs::Metadata>, ResourceError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ResourceError::io("inspect", path, e)),
    };
    check_type(path, &meta, expect)?;
    Ok(Some(meta))
}

/// Opens `path` for reading (or for appending, with `append`) without following a symlink.
/// Returns None when nothing is there; fails, naming the path, when it is a link or not what
/// `expect` says. The returned metadata is the open file's own (`fstat`).
pub fn open(
    path: &str,
    expect: Expect,
    append: bool,
) -> Result<Option<(fs::File, fs::Metadata)>, ResourceError> {
    let mut flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if expect == Expect::Directory {
        flags |= OFlag::O_DIRECTORY;
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .append(append)
        .custom_flags(flags.bits())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        // ELOOP: the last component is a symlink; ENOTDIR with O_DIRECTORY: maybe one too.
        Err(e) if matches!(e.raw_os_error(), Some(code) if code == nix::libc::ELOOP || code == nix::libc::ENOTDIR) =>
        {
            return match inspect(path, expect) {
                Ok(_) => Err(ResourceError::io("open", path, e)),
                Err(refused) => Err(refused),
            };
        }
        Err(e) => return Err(ResourceError::io("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| ResourceError::io("inspect", path, e))?;
    check_type(path, &meta, expect)?;
    Ok(Some((file, meta)))
}

/// Sets owner, group and mode through an open descriptor (chown first: it may clear setuid and
/// setgid bits that chmod then sets).
pub fn set_owner_and_mode(
    file: &fs::File,
    path: &str,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), ResourceError> {
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))
        .map_err(|e| ResourceError::io("chown", path, e))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| ResourceError::io("chmod", path, e))
}

/// Owner, group and permission bits of `meta`.
pub fn owner_and_mode(meta: &fs::Metadata) -> (u32, u32, u32) {
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

fn check_type(path: &str, meta: &fs::Metadata, expect: Expect) -> Result<(), ResourceError> {
    if meta.file_type().is_symlink() {
        return Err(ResourceError::Symlink {
            path: path.to_owned(),
            expected: expect.noun(),
        });
    }
    if !expect.accepts(meta) {
        return Err(ResourceError::Invalid(format!(
            "{path} exists but is not a {}; remove it or fix the path of this resource",
            expect.noun()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("f"), b"x").expect("seed");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let file_link = dir.path().join("file-link");
        std::os::unix::fs::symlink(target.join("f"), &file_link).expect("symlink");
        let link = link.to_str().expect("utf8");
        let file_link = file_link.to_str().expect("utf8");

        for (path, expect) in [
            (link, Expect::Directory),
            (link, Expect::Either),
            (file_link, Expect::File),
        ] {
            let error = open(path, expect, false).expect_err("a link");
            assert!(
                matches!(&error, ResourceError::Symlink { path: p, .. } if p == path),
                "{error}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("refusing {path}: it is a symbolic link"))
            );
            assert!(inspect(path, expect).is_err());
        }
    }

    #[test]
    fn opens_what_is_expected_and_reports_absence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("seed");
        let dir_path = dir.path().to_str().expect("utf8");
        let file_path = file.to_str().expect("utf8");
        assert!(
            open(dir_path, Expect::Directory, false)
                .expect("dir")
                .is_some()
        );
        assert!(
            open(file_path, Expect::File, false)
                .expect("file")
                .is_some()
        );
        assert!(open(file_path, Expect::Directory, false).is_err());
        assert!(open(dir_path, Expect::File, false).is_err());
        let absent = format!("{dir_path}/absent");
        assert!(
            open(&absent, Expect::File, false)
                .expect("absent")
                .is_none()
        );
        assert!(inspect(&absent, Expect::File).expect("absent").is_none());
    }
}
