//! `FileLine` resource: an existing regular file must contain one exact line; it is appended
//! when missing. The rest of the file, its owner and its mode are left as they are.
//!
//! Example spec: `FileLine { path: "/opt/postgres/data/postgresql.conf", line: "include_dir = 'conf.d'" }`.
//!
//! The file is opened without following a symlink, and one with several hard links is refused:
//! the agent (root) must not be tricked into appending to a file elsewhere, such as /etc/passwd,
//! by whoever owns the directory the file is in.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;

use tpa_common::resource::FileLine;

use super::nofollow::{self, Expect};
use super::{Apply, Ctx, ResourceError, State};

impl Apply for FileLine {
    /// Reads the file; never writes.
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        validate(self)?;
        let Some(content) = read(&self.path)? else {
            // In check mode of a first deploy, an earlier resource (e.g. initdb) would create it.
            return Ok(State::differs(
                Some(format!("+{}\n", self.line)),
                format!(
                    "{} does not exist yet; the line is added once it does",
                    self.path
                ),
            ));
        };
        if contains_line(&content, &self.line) {
            return Ok(State::in_state("line present"));
        }
        Ok(State::differs(
            Some(format!("+{}\n", self.line)),
            "line missing",
        ))
    }

    /// Appends the line (after a newline if the file does not end with one).
    fn apply(&self, _ctx: &mut Ctx) -> Result<String, ResourceError> {
        validate(self)?;
        let Some((mut file, meta)) = nofollow::open(&self.path, Expect::File, true)? else {
            return Err(ResourceError::Failed(format!(
                "{} does not exist: a line can only be added to an existing file; order the resource \
                 that creates it earlier",
                self.path
            )));
        };
        refuse_hard_links(&self.path, meta.nlink())?;
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(|e| ResourceError::io("read", &self.path, e))?;
        if contains_line(&content, &self.line) {
            return Ok("line present".to_owned());
        }
        let mut addition = Vec::new();
        if !content.is_empty() && !content.ends_with(b"\n") {
            addition.push(b'\n');
        }
        addition.extend_from_slice(self.line.as_bytes());
        addition.push(b'\n');
        file.write_all(&addition)
            .and_then(|()| file.sync_all())
            .map_err(|e| ResourceError::io("append to", &self.path, e))?;
        Ok("line appended".to_owned())
    }
}

fn validate(resource: &FileLine) -> Result<(), ResourceError> {
    if resource.line.contains(['\n', '\r']) {
        return Err(ResourceError::Invalid(format!(
            "the line for {} contains a line break; give exactly one line",
            resource.path
        )));
    }
    Ok(())
}

/// The file's content, None when it does not exist.
fn read(path: &str) -> Result<Option<Vec<u8>>, ResourceError> {
    let Some((mut file, meta)) = nofollow::open(path, Expect::File, false)? else {
        return Ok(None);
    };
    refuse_hard_links(path, meta.nlink())?;
    let mut content = Vec::new();
    file.read_to_end(&mut content)
        .map_err(|e| ResourceError::io("read", path, e))?;
    Ok(Some(content))
}

fn refuse_hard_links(path: &str, links: u64) -> Result<(), ResourceError> {
    if links > 1 {
        return Err(ResourceError::Failed(format!(
            "refusing {path}: it has {links} hard links, so appending to it could change another file; \
             replace it with a copy of its own"
        )));
    }
    Ok(())
}

fn contains_line(content: &[u8], line: &str) -> bool {
    content
        .split(|b| *b == b'\n')
        .any(|l| l.strip_suffix(b"\r").unwrap_or(l) == line.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn resource(path: &std::path::Path) -> FileLine {
        FileLine {
            path: path.to_str().expect("utf8").to_owned(),
            line: "include_dir = 'conf.d'".into(),
        }
    }

    #[test]
    fn appends_once_after_a_missing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("postgresql.conf");
        fs::write(&path, "port = 5432").expect("seed");
        let line = resource(&path);
        let mut ctx = Ctx::default();
        let state = line.check(&ctx).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.diff.as_deref(), Some("+include_dir = 'conf.d'\n"));
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "port = 5432",
            "check wrote nothing"
        );
        assert_eq!(line.apply(&mut ctx).expect("apply"), "line appended");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "port = 5432\ninclude_dir = 'conf.d'\n"
        );
        assert!(line.check(&ctx).expect("check").in_state);
        assert_eq!(line.apply(&mut ctx).expect("again"), "line present");
        // A line that merely contains the text does not count.
        fs::write(&path, "#include_dir = 'conf.d'\n").expect("seed");
        assert!(!line.check(&ctx).expect("check").in_state);
    }

    #[test]
    fn absent_file_would_change_in_check_and_fails_in_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = resource(&dir.path().join("absent.conf"));
        let mut ctx = Ctx::default();
        assert!(!line.check(&ctx).expect("check").in_state);
        let error = line.apply(&mut ctx).expect_err("absent");
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    #[test]
    fn never_appends_through_a_symlink_or_a_hard_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = dir.path().join("passwd");
        fs::write(&elsewhere, "root:x:0:0\n").expect("seed");
        let link = dir.path().join("postgresql.conf");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        let mut ctx = Ctx::default();
        let error = resource(&link).apply(&mut ctx).expect_err("symlink");
        assert!(
            error.to_string().contains("it is a symbolic link"),
            "{error}"
        );
        fs::remove_file(&link).expect("rm");
        fs::hard_link(&elsewhere, &link).expect("hard link");
        let error = resource(&link).apply(&mut ctx).expect_err("hard link");
        assert!(error.to_string().contains("2 hard links"), "{error}");
        assert_eq!(
            fs::read_to_string(&elsewhere).expect("read"),
            "root:x:0:0\n"
        );
    }
}
