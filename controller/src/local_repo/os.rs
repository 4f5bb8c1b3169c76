//! Debian releases that `download-packages` knows: major version, codename, and the one
//! PostgreSQL major version each release ships in its own archive.

use std::fmt;

/// A Debian release we can build a local repository for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebianRelease {
    /// Major version, the directory name under `local-repo/Debian/`.
    pub major: u32,
    /// Codename, also the archive suite (`bookworm`, `trixie`).
    pub codename: &'static str,
    /// The PostgreSQL major version in the release's own archive. Other versions need the PGDG
    /// repository, which `download-packages` does not use.
    pub postgres_version: u32,
}

/// Every supported release, oldest first.
pub const SUPPORTED: &[DebianRelease] = &[
    DebianRelease {
        major: 12,
        codename: "bookworm",
        postgres_version: 15,
    },
    DebianRelease {
        major: 13,
        codename: "trixie",
        postgres_version: 17,
    },
];

/// The target OS is not a Debian release we can resolve packages for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Debian {major} is not supported by download-packages; supported: {}",
    supported_list()
)]
pub struct UnsupportedOs {
    pub major: u32,
}

impl DebianRelease {
    /// The release with this major version.
    pub fn from_major(major: u32) -> Result<Self, UnsupportedOs> {
        SUPPORTED
            .iter()
            .find(|r| r.major == major)
            .copied()
            .ok_or(UnsupportedOs { major })
    }
}

impl fmt::Display for DebianRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Debian {} ({})", self.major, self.codename)
    }
}

/// "Debian 12 (bookworm), Debian 13 (trixie)", for error messages.
pub(crate) fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_map_to_suites_and_shipped_postgres() {
        let bookworm = DebianRelease::from_major(12).expect("12 is supported");
        assert_eq!(
            (bookworm.codename, bookworm.postgres_version),
            ("bookworm", 15)
        );
        let trixie = DebianRelease::from_major(13).expect("13 is supported");
        assert_eq!((trixie.codename, trixie.postgres_version), ("trixie", 17));
    }

    #[test]
    fn unknown_major_names_what_is_supported() {
        let err = DebianRelease::from_major(11).expect_err("11 is not supported");
        assert_eq!(
            err.to_string(),
            "Debian 11 is not supported by download-packages; supported: Debian 12 (bookworm), Debian 13 (trixie)"
        );
    }
}
