//! `Directory` resource: a directory (created with its parents) whose leaf has the desired
//! owner, group and mode. Parents created on the way keep the default owner and mode.
//!
//! Example spec: `Directory { path: "/opt/postgres/data", owner: "postgres", group: "postgres", mode: 0o700 }`.
//!
//! A symlink at the path is refused, never followed: otherwise whoever owns the parent (the
//! postgres user owns its data directory) could point it at `/etc` and have the next deploy hand
//! `/etc` to them. Owner and mode are set through a descriptor opened with `O_NOFOLLOW`.

use std::fs;

use tpa_common::resource::Directory;

use super::nofollow::{self, Expect};
use super::{Apply, Ctx, ResourceError, State, owner};

impl Apply for Directory {
    /// Compares the directory with the desired state; never writes.
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        owner::validate_mode(self.mode)?;
        let uid = owner::uid(&self.owner)?;
        let gid = owner::gid(&self.group)?;
        let Some(meta) = nofollow::inspect(&self.path, Expect::Directory)? else {
            let diff = format!(
                "# create directory with owner {}:{} mode {:04o}\n",
                self.owner, self.group, self.mode
            );
            return Ok(State::differs(Some(diff), "absent"));
        };
        let (cur_uid, cur_gid, cur_mode) = nofollow::owner_and_mode(&meta);
        let mut diff = Vec::new();
        if cur_uid != uid {
            diff.push(format!(
                "# owner {} -> {}",
                owner::user_name(cur_uid),
                self.owner
            ));
        }
        if cur_gid != gid {
            diff.push(format!(
                "# group {} -> {}",
                owner::group_name(cur_gid),
                self.group
            ));
        }
        if cur_mode != self.mode {
            diff.push(format!("# mode {cur_mode:04o} -> {:04o}", self.mode));
        }
        if diff.is_empty() {
            return Ok(State::in_state("owner and mode as desired"));
        }
        Ok(State::differs(
            Some(diff.join("\n") + "\n"),
            "owner or mode differ",
        ))
    }

    /// Creates the directory (and parents) and fixes the leaf's owner and mode; idempotent.
    fn apply(&self, _ctx: &mut Ctx) -> Result<String, ResourceError> {
        owner::validate_mode(self.mode)?;
        let uid = owner::uid(&self.owner)?;
        let gid = owner::gid(&self.group)?;
        let existed = nofollow::inspect(&self.path, Expect::Directory)?.is_some();
        if !existed {
            fs::create_dir_all(&self.path)
                .map_err(|e| ResourceError::io("create directory", &self.path, e))?;
        }
        let Some((dir, _)) = nofollow::open(&self.path, Expect::Directory, false)? else {
            return Err(ResourceError::Failed(format!(
                "{} disappeared right after it was created; deploy again",
                self.path
            )));
        };
        nofollow::set_owner_and_mode(&dir, &self.path, uid, gid, self.mode)?;
        Ok(if existed {
            "fixed owner/mode"
        } else {
            "created"
        }
        .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn directory(path: &str, mode: u32) -> Directory {
        Directory {
            path: path.into(),
            owner: "root".into(),
            group: "root".into(),
            mode,
        }
    }

    #[test]
    fn creates_with_parents_then_fixes_mode() {
        if !owner::is_root() {
            eprintln!("skipping: directory tests chown to root and need to run as root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let leaf = dir.path().join("a/b/data");
        let leaf = leaf.to_str().expect("utf8");
        let mut ctx = Ctx::default();
        let state = directory(leaf, 0o700).check(&ctx).expect("check");
        assert!(!state.in_state);
        assert!(
            !dir.path().join("a").exists(),
            "check must not create anything"
        );
        assert_eq!(
            directory(leaf, 0o700).apply(&mut ctx).expect("apply"),
            "created"
        );
        assert_eq!(fs::metadata(leaf).expect("stat").mode() & 0o7777, 0o700);
        assert!(directory(leaf, 0o700).check(&ctx).expect("check").in_state);

        let state = directory(leaf, 0o750).check(&ctx).expect("check");
        assert_eq!(state.diff.as_deref(), Some("# mode 0700 -> 0750\n"));
        assert_eq!(
            directory(leaf, 0o750).apply(&mut ctx).expect("apply"),
            "fixed owner/mode"
        );
        assert!(directory(leaf, 0o750).check(&ctx).expect("check").in_state);
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"").expect("seed");
        let error = directory(file.to_str().expect("utf8"), 0o755)
            .check(&Ctx::default())
            .expect_err("not a dir");
        assert!(error.to_string().contains("is not a directory"), "{error}");
    }

    /// The data directory replaced by a link to a directory the agent must never hand over.
    #[test]
    fn a_symlink_is_refused_and_its_target_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).expect("mkdir");
        fs::set_permissions(&etc, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let data = dir.path().join("data");
        std::os::unix::fs::symlink(&etc, &data).expect("symlink");
        let data = data.to_str().expect("utf8");
        let resource = directory(data, 0o700);
        let mut ctx = Ctx::default();
        for error in [
            resource.check(&ctx).expect_err("check refuses"),
            resource.apply(&mut ctx).expect_err("apply refuses"),
        ] {
            assert_eq!(
                error.to_string(),
                format!(
                    "refusing {data}: it is a symbolic link where a directory is expected, and the agent \
                     never changes ownership, mode or content through a link; remove the link (or fix the \
                     path in config.yml)"
                )
            );
        }
        assert_eq!(fs::metadata(&etc).expect("stat").mode() & 0o7777, 0o755);
    }
}
