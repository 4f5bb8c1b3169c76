//! `Permissions` resource: the owner, group and mode of an existing regular file or directory
//! that something else created, e.g. the Postgres server key the agent generated as root before
//! the postgres user existed.
//!
//! Example spec: `Permissions { path: "/etc/tpa/fosdem.key", owner: "postgres", group: "postgres", mode: 0o600 }`.
//!
//! A symlink at the path is refused, never followed; owner and mode are set through a descriptor
//! opened with `O_NOFOLLOW`.

use tpa_common::resource::Permissions;

use super::file::metadata_changes;
use super::nofollow::{self, Expect};
use super::{Apply, Ctx, ResourceError, State, owner};

impl Apply for Permissions {
    /// Compares owner, group and mode; never writes.
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        owner::validate_mode(self.mode)?;
        let uid = owner::uid(&self.owner)?;
        let gid = owner::gid(&self.group)?;
        let Some(meta) = nofollow::inspect(&self.path, Expect::Either)? else {
            // In check mode of a first deploy the file may not exist yet.
            return Ok(State::differs(
                Some(format!(
                    "# owner {}:{} mode {:04o} once it exists\n",
                    self.owner, self.group, self.mode
                )),
                format!("{} does not exist yet", self.path),
            ));
        };
        let changes = metadata_changes(nofollow::owner_and_mode(&meta), (uid, gid, self.mode));
        if changes.is_empty() {
            return Ok(State::in_state("owner and mode as desired"));
        }
        Ok(State::differs(
            Some(changes.join("\n") + "\n"),
            "owner or mode differ",
        ))
    }

    /// chown and chmod through a descriptor opened without following a link.
    fn apply(&self, _ctx: &mut Ctx) -> Result<String, ResourceError> {
        owner::validate_mode(self.mode)?;
        let uid = owner::uid(&self.owner)?;
        let gid = owner::gid(&self.group)?;
        let Some((file, meta)) = nofollow::open(&self.path, Expect::Either, false)? else {
            return Err(ResourceError::Failed(format!(
                "{} does not exist: permissions can only be set on an existing file; order the resource \
                 (or step) that creates it earlier",
                self.path
            )));
        };
        let changes = metadata_changes(nofollow::owner_and_mode(&meta), (uid, gid, self.mode));
        if changes.is_empty() {
            return Ok("owner and mode as desired".to_owned());
        }
        nofollow::set_owner_and_mode(&file, &self.path, uid, gid, self.mode)?;
        Ok(format!(
            "set {}:{} {:04o}",
            self.owner, self.group, self.mode
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    fn permissions(path: &std::path::Path, mode: u32) -> Permissions {
        Permissions {
            path: path.to_str().expect("utf8").to_owned(),
            owner: "root".into(),
            group: "root".into(),
            mode,
        }
    }

    #[test]
    fn fixes_mode_of_an_existing_file() {
        if !owner::is_root() {
            eprintln!("skipping: chowns to root and needs to run as root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("server.key");
        fs::write(&key, b"key").expect("seed");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let resource = permissions(&key, 0o600);
        let mut ctx = Ctx::default();
        let state = resource.check(&ctx).expect("check");
        assert_eq!(state.diff.as_deref(), Some("# mode 0644 -> 0600\n"));
        assert_eq!(fs::metadata(&key).expect("stat").mode() & 0o7777, 0o644);
        resource.apply(&mut ctx).expect("apply");
        assert_eq!(fs::metadata(&key).expect("stat").mode() & 0o7777, 0o600);
        assert!(resource.check(&ctx).expect("check").in_state);
    }

    #[test]
    fn absent_would_change_and_apply_fails_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resource = permissions(&dir.path().join("absent.key"), 0o600);
        let mut ctx = Ctx::default();
        assert!(!resource.check(&ctx).expect("check").in_state);
        let error = resource.apply(&mut ctx).expect_err("absent");
        assert!(
            error.to_string().contains("absent.key does not exist"),
            "{error}"
        );
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shadow = dir.path().join("shadow");
        fs::write(&shadow, b"secret").expect("seed");
        fs::set_permissions(&shadow, fs::Permissions::from_mode(0o640)).expect("chmod");
        let key = dir.path().join("server.key");
        std::os::unix::fs::symlink(&shadow, &key).expect("symlink");
        let resource = permissions(&key, 0o644);
        let mut ctx = Ctx::default();
        for error in [
            resource.check(&ctx).expect_err("check refuses"),
            resource.apply(&mut ctx).expect_err("apply refuses"),
        ] {
            assert!(
                error.to_string().starts_with(&format!(
                    "refusing {}: it is a symbolic link",
                    key.display()
                )),
                "{error}"
            );
        }
        assert_eq!(fs::metadata(&shadow).expect("stat").mode() & 0o7777, 0o640);
    }
}
