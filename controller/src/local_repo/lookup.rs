//! Where a cluster's local repository lives, and which of its directories a host uses.
//!
//! TPA's lookup order for a host, first match wins: `local-repo/<Distribution>/<full version>`,
//! `<Distribution>/<major>`, `<Distribution>/<codename>`, `<Distribution>/`, then `local-repo/`.
//! One deviation: a candidate counts only if it holds an apt index (`Packages` or
//! `Packages.gz`). TPA takes any existing directory, so a Debian 13 host in a cluster whose
//! `local-repo/Debian/` holds only `12/` would get a directory without an index and fail
//! later with a confusing apt error.

use std::path::{Path, PathBuf};

/// The cluster directory's sub-directory holding every local repository.
pub const LOCAL_REPO_DIR: &str = "local-repo";
/// The distribution directory name for Debian, as TPA spells it.
pub const DEBIAN: &str = "Debian";
/// Where deploy writes the apt source for the local repository on a host.
pub const HOST_APT_SOURCE: &str = "/etc/apt/sources.list.d/tpa-local-repo.list";

/// The directory `download-packages` fills for Debian `os_major`:
/// `<cluster>/local-repo/Debian/<major>`.
pub fn repo_dir_for(cluster_dir: &Path, os_major: u32) -> PathBuf {
    cluster_dir
        .join(LOCAL_REPO_DIR)
        .join(DEBIAN)
        .join(os_major.to_string())
}

/// The directories a Debian host looks at, in TPA's order of preference.
pub fn candidates(
    cluster_dir: &Path,
    os_major: u32,
    codename: &str,
    full_version: &str,
) -> Vec<PathBuf> {
    let root = cluster_dir.join(LOCAL_REPO_DIR);
    let distro = root.join(DEBIAN);
    let mut dirs = Vec::new();
    // Empty parts would collapse to `Debian/` itself; skip them rather than test it twice.
    for part in [full_version, &os_major.to_string(), codename] {
        let part = part.trim();
        if !part.is_empty() && !part.contains('/') {
            dirs.push(distro.join(part));
        }
    }
    dirs.push(distro);
    dirs.push(root);
    dirs.dedup();
    dirs
}

/// The first candidate directory that holds an apt index, if any.
pub fn find_repo_for_host(
    cluster_dir: &Path,
    os_major: u32,
    codename: &str,
    full_version: &str,
) -> Option<PathBuf> {
    candidates(cluster_dir, os_major, codename, full_version)
        .into_iter()
        .find(|dir| has_index(dir))
}

/// Where the chosen repository `repo` (from [`find_repo_for_host`]) appears on a host when
/// the platform puts the whole `local-repo/` directory at `mount` (docker bind-mounts it at
/// `/var/opt/tpa/local-repo`): `local-repo/Debian/12` becomes `<mount>/Debian/12`. `None`
/// when `repo` is not inside the cluster's `local-repo/`.
pub fn host_repo_dir(cluster_dir: &Path, repo: &Path, mount: &Path) -> Option<PathBuf> {
    let suffix = repo.strip_prefix(cluster_dir.join(LOCAL_REPO_DIR)).ok()?;
    Some(mount.join(suffix))
}

/// Whether `dir` holds apt metadata that `deb [trusted=yes] file:<dir> ./` can read.
pub fn has_index(dir: &Path) -> bool {
    dir.join("Packages").is_file() || dir.join("Packages.gz").is_file()
}

/// The apt source line for a local repository copied to `host_dir` on a host.
pub fn apt_source_line(host_dir: &Path) -> String {
    format!("deb [trusted=yes] file:{} ./\n", host_dir.display())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn repo_at(root: &Path, rel: &str) {
        let dir = root.join(rel);
        fs::create_dir_all(&dir).expect("create repo dir");
        fs::write(dir.join("Packages"), "").expect("write index");
    }

    #[test]
    fn repo_dir_is_distribution_and_major() {
        assert_eq!(
            repo_dir_for(Path::new("/c"), 12),
            PathBuf::from("/c/local-repo/Debian/12")
        );
    }

    #[test]
    fn candidates_follow_tpa_order() {
        let got = candidates(Path::new("/c"), 13, "trixie", "13.1");
        let want: Vec<PathBuf> = [
            "/c/local-repo/Debian/13.1",
            "/c/local-repo/Debian/13",
            "/c/local-repo/Debian/trixie",
            "/c/local-repo/Debian",
            "/c/local-repo",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn most_specific_directory_with_an_index_wins() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = tmp.path();
        assert_eq!(find_repo_for_host(c, 12, "bookworm", "12.11"), None);

        repo_at(c, "local-repo");
        assert_eq!(
            find_repo_for_host(c, 12, "bookworm", "12.11"),
            Some(c.join("local-repo"))
        );
        repo_at(c, "local-repo/Debian/bookworm");
        assert_eq!(
            find_repo_for_host(c, 12, "bookworm", "12.11"),
            Some(c.join("local-repo/Debian/bookworm"))
        );
        repo_at(c, "local-repo/Debian/12");
        assert_eq!(
            find_repo_for_host(c, 12, "bookworm", "12.11"),
            Some(c.join("local-repo/Debian/12"))
        );
        repo_at(c, "local-repo/Debian/12.11");
        assert_eq!(
            find_repo_for_host(c, 12, "bookworm", "12.11"),
            Some(c.join("local-repo/Debian/12.11"))
        );
    }

    #[test]
    fn directory_without_index_is_skipped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = tmp.path();
        repo_at(c, "local-repo/Debian/12");
        // A Debian 13 host must not get `local-repo/Debian/`, which only holds 12's repo.
        assert_eq!(find_repo_for_host(c, 13, "trixie", "13.1"), None);
        fs::write(c.join("local-repo/Debian/Packages.gz"), "").expect("write index");
        assert_eq!(
            find_repo_for_host(c, 13, "trixie", "13.1"),
            Some(c.join("local-repo/Debian"))
        );
    }

    #[test]
    fn host_path_keeps_the_suffix_below_local_repo() {
        let c = Path::new("/c");
        let mount = Path::new("/var/opt/tpa/local-repo");
        assert_eq!(
            host_repo_dir(c, &repo_dir_for(c, 12), mount),
            Some(PathBuf::from("/var/opt/tpa/local-repo/Debian/12"))
        );
        assert_eq!(
            host_repo_dir(c, Path::new("/c/local-repo"), mount),
            Some(mount.to_path_buf())
        );
        assert_eq!(host_repo_dir(c, Path::new("/elsewhere/repo"), mount), None);
    }

    #[test]
    fn source_line_is_trusted_flat_repo() {
        assert_eq!(
            apt_source_line(Path::new("/var/opt/tpa/local-repo")),
            "deb [trusted=yes] file:/var/opt/tpa/local-repo ./\n"
        );
    }
}
