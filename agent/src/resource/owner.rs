//! Resolves user and group names to ids through the system's passwd/group databases (NSS), and
//! back, without shelling out.

use nix::unistd::{Gid, Group, Uid, User};

use super::ResourceError;

/// The uid of `name`; a purely numeric name is taken as a uid when no such user exists.
pub fn uid(name: &str) -> Result<u32, ResourceError> {
    match User::from_name(name).map_err(|source| ResourceError::Lookup {
        name: name.to_owned(),
        source,
    })? {
        Some(user) => Ok(user.uid.as_raw()),
        None => name
            .parse()
            .map_err(|_| ResourceError::UnknownUser(name.to_owned())),
    }
}

/// The gid of `name`; a purely numeric name is taken as a gid when no such group exists.
pub fn gid(name: &str) -> Result<u32, ResourceError> {
    match Group::from_name(name).map_err(|source| ResourceError::Lookup {
        name: name.to_owned(),
        source,
    })? {
        Some(group) => Ok(group.gid.as_raw()),
        None => name
            .parse()
            .map_err(|_| ResourceError::UnknownGroup(name.to_owned())),
    }
}

/// The name of `uid`, or the number when it has no name (for diffs).
pub fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// The name of `gid`, or the number when it has no name (for diffs).
pub fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

/// True when the agent runs as root (tests use it to skip what needs root).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Rejects modes with bits outside permission + setuid/setgid/sticky.
pub fn validate_mode(mode: u32) -> Result<(), ResourceError> {
    if mode > 0o7777 {
        return Err(ResourceError::Invalid(format!(
            "mode {mode:#o} has bits beyond 0o7777"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_and_numeric_and_rejects_unknown() {
        assert_eq!(uid("root").expect("root exists"), 0);
        assert_eq!(gid("root").expect("root exists"), 0);
        assert_eq!(uid("4242").expect("numeric"), 4242);
        assert_eq!(user_name(0), "root");
        assert_eq!(group_name(0), "root");
        let error = uid("tpa-no-such-user").expect_err("unknown");
        assert!(
            error
                .to_string()
                .contains("unknown user `tpa-no-such-user`")
        );
        assert!(matches!(
            gid("tpa-no-such-group"),
            Err(ResourceError::UnknownGroup(_))
        ));
    }

    #[test]
    fn modes_beyond_7777_are_invalid() {
        assert!(validate_mode(0o4755).is_ok());
        assert!(validate_mode(0o10644).is_err());
    }
}
