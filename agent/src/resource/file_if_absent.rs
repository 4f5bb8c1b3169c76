//! `FileIfAbsent` resource: a file created once with its content, owner and mode when nothing
//! exists at the path, and never modified afterwards (operators own it from then on).
//!
//! Example spec: `FileIfAbsent { path: "/opt/postgres/data/conf.d/9999-override.conf",
//! content: b"# local overrides\n", owner: "postgres", group: "postgres", mode: 0o600 }`.
//!
//! Anything at the path counts as existing, a dangling symlink too: it is left alone.

use std::fs;
use std::io::ErrorKind;

use tpa_common::resource::FileIfAbsent;

use super::file::{render_diff, write_atomically};
use super::{Apply, Ctx, ResourceError, State, owner};

impl Apply for FileIfAbsent {
    /// In state whenever anything exists at the path; never writes.
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        owner::validate_mode(self.mode)?;
        if exists(&self.path)? {
            return Ok(State::in_state("exists; never modified after creation"));
        }
        // Resolve now so a missing owner fails in check mode too.
        owner::uid(&self.owner)?;
        owner::gid(&self.group)?;
        let diff = format!(
            "# create with owner {}:{} mode {:04o}\n{}",
            self.owner,
            self.group,
            self.mode,
            render_diff(&self.path, None, self.content.as_bytes(), false)
        );
        Ok(State::differs(Some(diff), "absent"))
    }

    /// Creates the file only if nothing exists at the path.
    fn apply(&self, _ctx: &mut Ctx) -> Result<String, ResourceError> {
        owner::validate_mode(self.mode)?;
        if exists(&self.path)? {
            return Ok("exists; left untouched".to_owned());
        }
        write_atomically(
            &self.path,
            self.content.as_bytes(),
            owner::uid(&self.owner)?,
            owner::gid(&self.group)?,
            self.mode,
        )?;
        Ok("created".to_owned())
    }
}

fn exists(path: &str) -> Result<bool, ResourceError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ResourceError::io("inspect", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use tpa_common::resource::Content;

    use super::*;

    #[test]
    fn creates_once_and_never_modifies() {
        if !owner::is_root() {
            eprintln!("skipping: chowns to root and needs to run as root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("9999-override.conf");
        let resource = FileIfAbsent {
            path: path.to_str().expect("utf8").to_owned(),
            content: Content::from("# override\n"),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o644,
        };
        let mut ctx = Ctx::default();
        assert!(!resource.check(&ctx).expect("check").in_state);
        assert_eq!(resource.apply(&mut ctx).expect("apply"), "created");
        fs::write(&path, b"operator edit\n").expect("edit");
        assert!(resource.check(&ctx).expect("check").in_state);
        resource.apply(&mut ctx).expect("apply");
        assert_eq!(fs::read(&path).expect("read"), b"operator edit\n");
    }
}
