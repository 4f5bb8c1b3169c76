//! `Directory` resource: a directory (created with its parents) whose leaf has the desired
//! owner, group and mode. Parents created on the way keep the default owner and mode.
//!
//! Example spec: `Directory { path: "/opt/postgres/data", owner: "postgres", group: "postgres", mode: 0o700 }`.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::{ResourceError, State, owner};

/// Compares the directory with the desired state; never writes.
pub fn check(path: &str, owner_name: &str, group: &str, mode: u32) -> Result<State, ResourceError> {
    owner::validate_mode(mode)?;
    let uid = owner::uid(owner_name)?;
    let gid = owner::gid(group)?;
    // Follows symlinks on purpose: a symlink to a directory (e.g. /var/run) is a directory here.
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let diff =
                format!("# create directory with owner {owner_name}:{group} mode {mode:04o}\n");
            return Ok(State::differs(Some(diff), "absent"));
        }
        Err(e) => return Err(ResourceError::io("inspect", path, e)),
    };
    if !meta.is_dir() {
        return Err(ResourceError::Invalid(format!(
            "{path} exists but is not a directory; remove it or fix the path of this directory resource"
        )));
    }
    let mut diff = Vec::new();
    if meta.uid() != uid {
        diff.push(format!(
            "# owner {} -> {owner_name}",
            owner::user_name(meta.uid())
        ));
    }
    if meta.gid() != gid {
        diff.push(format!(
            "# group {} -> {group}",
            owner::group_name(meta.gid())
        ));
    }
    if meta.mode() & 0o7777 != mode {
        diff.push(format!("# mode {:04o} -> {mode:04o}", meta.mode() & 0o7777));
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
pub fn apply(
    path: &str,
    owner_name: &str,
    group: &str,
    mode: u32,
) -> Result<String, ResourceError> {
    owner::validate_mode(mode)?;
    let uid = owner::uid(owner_name)?;
    let gid = owner::gid(group)?;
    let existed = fs::metadata(path).is_ok_and(|m| m.is_dir());
    fs::create_dir_all(path).map_err(|e| ResourceError::io("create directory", path, e))?;
    // chown first: it may clear setgid bits that chmod then sets.
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| ResourceError::io("chown", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| ResourceError::io("chmod", path, e))?;
    Ok(if existed {
        "fixed owner/mode"
    } else {
        "created"
    }
    .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_with_parents_then_fixes_mode() {
        if !owner::is_root() {
            eprintln!("skipping: directory tests chown to root and need to run as root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let leaf = dir.path().join("a/b/data");
        let leaf = leaf.to_str().expect("utf8");
        let state = check(leaf, "root", "root", 0o700).expect("check");
        assert!(!state.in_state);
        assert!(
            !dir.path().join("a").exists(),
            "check must not create anything"
        );
        assert_eq!(
            apply(leaf, "root", "root", 0o700).expect("apply"),
            "created"
        );
        assert_eq!(fs::metadata(leaf).expect("stat").mode() & 0o7777, 0o700);
        assert!(check(leaf, "root", "root", 0o700).expect("check").in_state);

        let state = check(leaf, "root", "root", 0o750).expect("check");
        assert_eq!(state.diff.as_deref(), Some("# mode 0700 -> 0750\n"));
        assert_eq!(
            apply(leaf, "root", "root", 0o750).expect("apply"),
            "fixed owner/mode"
        );
        assert!(check(leaf, "root", "root", 0o750).expect("check").in_state);
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"").expect("seed");
        let error =
            check(file.to_str().expect("utf8"), "root", "root", 0o755).expect_err("not a dir");
        assert!(error.to_string().contains("is not a directory"));
    }
}
