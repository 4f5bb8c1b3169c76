//! Tests of the whole download: name checks and indexing of real `.deb` files offline, and
//! (with `TPA_NET_TESTS=1`) real downloads from Debian's archive.

use super::*;
use crate::config::{FailoverManager, Role};

/// Tests that reach deb.debian.org run only with `TPA_NET_TESTS=1`.
fn net_tests() -> bool {
    if std::env::var("TPA_NET_TESTS").as_deref() == Ok("1") {
        true
    } else {
        eprintln!("skipped: set TPA_NET_TESTS=1 to run tests that reach Debian's archive");
        false
    }
}

/// Build a tiny `.deb` with dpkg-deb, as a package in the archive would be.
fn build_deb(dir: &Path, name: &str, version: &str, depends: Option<&str>) -> PathBuf {
    let root = dir.join(format!("{name}-build"));
    fs::create_dir_all(root.join("DEBIAN")).expect("create DEBIAN");
    fs::create_dir_all(root.join("usr/share/doc").join(name)).expect("create doc dir");
    fs::write(root.join("usr/share/doc").join(name).join("README"), "hi\n").expect("file");
    let depends = depends.map_or(String::new(), |d| format!("Depends: {d}\n"));
    fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n\
             {depends}Description: test package\n a package built by a test\n"
        ),
    )
    .expect("control");
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    let status = crate::process::command("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .expect("run dpkg-deb");
    assert!(status.status.success(), "{status:?}");
    fs::remove_dir_all(&root).expect("remove build root");
    deb
}

#[test]
fn package_names_are_checked_before_apt_sees_them() {
    let ok: Vec<String> = ["postgresql-15", "libc6", "g++", "python3.11"]
        .map(String::from)
        .to_vec();
    check_names(&ok).expect("valid names");
    for bad in ["-oDir=/x", "post*", "Sudo", "a", "pkg name", ""] {
        let err = check_names(&[bad.to_owned()]).expect_err(bad);
        assert!(
            err.to_string().contains("not a Debian package name"),
            "{err}"
        );
    }
    assert!(check_names(&[]).is_err());
}

#[test]
fn index_lists_every_deb_with_its_control_fields() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build_deb(tmp.path(), "tpa-test-a", "1.0-1", Some("tpa-test-b (>= 2)"));
    build_deb(tmp.path(), "tpa-test-b", "2.0-1", None);
    build_deb(tmp.path(), "tpa-test-b", "2.1-1", None);

    let summary = write_index(tmp.path(), "bookworm").expect("index");
    assert_eq!(summary.packages, 3);
    let packages = fs::read_to_string(tmp.path().join("Packages")).expect("Packages");
    let stanzas: Vec<&str> = packages
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .collect();
    assert_eq!(stanzas.len(), 3, "{packages}");
    assert!(
        stanzas[0].starts_with("Package: tpa-test-a\nVersion: 1.0-1\n"),
        "{}",
        stanzas[0]
    );
    assert!(
        stanzas[0].contains("Depends: tpa-test-b (>= 2)\n"),
        "{}",
        stanzas[0]
    );
    assert!(
        stanzas[0].contains("Filename: ./tpa-test-a_1.0-1_all.deb\n"),
        "{}",
        stanzas[0]
    );
    // Both versions are listed; apt picks the newest.
    assert!(stanzas[2].contains("Version: 2.1-1"), "{}", stanzas[2]);

    let size = fs::metadata(tmp.path().join("tpa-test-a_1.0-1_all.deb"))
        .expect("deb")
        .len();
    assert!(
        stanzas[0].contains(&format!("Size: {size}\n")),
        "{}",
        stanzas[0]
    );
    assert!(summary.bytes >= size);
}

#[test]
fn reindex_reuses_stanzas_only_for_unchanged_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build_deb(tmp.path(), "tpa-test-a", "1.0-1", None);
    write_index(tmp.path(), "bookworm").expect("index");
    let index = tmp.path().join("Packages");
    // Mark the stanza so we can tell whether the next run re-read the file with dpkg-deb.
    let marked = fs::read_to_string(&index).expect("Packages").replace(
        "Description: test package",
        "Description: from the previous index",
    );
    fs::write(&index, marked).expect("write Packages");
    write_index(tmp.path(), "bookworm").expect("reindex");
    assert!(
        fs::read_to_string(&index)
            .expect("Packages")
            .contains("from the previous index")
    );

    // Same file name, different content: the stale stanza must not survive.
    build_deb(tmp.path(), "tpa-test-a", "1.0-1", Some("libc6"));
    write_index(tmp.path(), "bookworm").expect("reindex");
    let text = fs::read_to_string(&index).expect("Packages");
    assert!(
        !text.contains("from the previous index") && text.contains("Depends: libc6"),
        "{text}"
    );
}

#[test]
fn local_only_check_resolves_from_the_repository_and_reports_gaps() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    fs::create_dir_all(&repo).expect("repo dir");
    build_deb(&repo, "tpa-test-a", "1.0-1", Some("tpa-test-b"));
    build_deb(&repo, "tpa-test-b", "1.0-1", None);
    write_index(&repo, "bookworm").expect("index");
    let release = DebianRelease::from_major(12).expect("supported");

    let resolved = check_self_contained(&repo, release, "amd64", "", &["tpa-test-a".to_owned()])
        .expect("a and its dependency b are in the repository");
    let names: Vec<&str> = resolved.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["tpa-test-a", "tpa-test-b"]);

    // Without b, apt cannot satisfy a's dependency from the repository alone.
    fs::remove_file(repo.join("tpa-test-b_1.0-1_all.deb")).expect("remove b");
    write_index(&repo, "bookworm").expect("index");
    let err = check_self_contained(&repo, release, "amd64", "", &["tpa-test-a".to_owned()])
        .expect_err("b is missing");
    let text = format!("{err:#}");
    assert!(
        text.contains("not self-contained") && text.contains("tpa-test-b"),
        "{text}"
    );

    // A package the repository lacks entirely is named as such.
    let err = check_self_contained(&repo, release, "amd64", "", &["tpa-nope".to_owned()])
        .expect_err("not in the repository");
    let not_found = err.downcast_ref::<PackagesNotFound>().expect("typed error");
    assert_eq!(not_found.names, ["tpa-nope"]);
}

/// Every name `packages_for` can produce exists in both suites (resolution only).
#[test]
fn net_package_names_exist_in_both_suites() {
    if !net_tests() {
        return;
    }
    for release in SUPPORTED {
        let pg = release.postgres_version.to_string();
        let every_role = Role::ALL.map(|(role, _)| role);
        let mut names = packages_for(
            &every_role,
            &pg,
            Some(FailoverManager::Repmgr),
            release.major,
            false,
        )
        .expect("package set");
        names.extend(
            packages_for(
                &[Role::Primary],
                &pg,
                Some(FailoverManager::Patroni),
                release.major,
                false,
            )
            .expect("set"),
        );
        // A cluster with a log server: rsyslog and its TLS driver on every host.
        names.extend(
            crate::planner::logserver::PACKAGES
                .iter()
                .map(|p| p.to_string()),
        );
        names.sort();
        names.dedup();
        let cache = default_cache_dir().expect("HOME set");
        fs::create_dir_all(cache.join(release.codename)).expect("cache dir");
        let _lock = lock_cache(&cache.join(release.codename)).expect("lock");
        let scratch = tempfile::tempdir().expect("tempdir");
        let sources = AptSources::default();
        let apt = apt::PrivateApt::new(
            *release,
            &sources.sources_list(release),
            &sources.mirror,
            "amd64",
            &apt::AptDirs::under(&cache.join(release.codename)),
            "",
            scratch.path(),
        )
        .expect("private apt");
        assert_eq!(apt.update().expect("update"), None);
        let resolved = apt
            .resolve(&names)
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        for name in &names {
            assert!(
                resolved.iter().any(|p| &p.name == name),
                "{release}: {name} not resolved"
            );
        }
    }
}

/// A real download of a small package with no baseline: the index lists it and its
/// dependencies, the repository is self-contained, and a second run fetches nothing.
#[test]
fn net_download_less_with_dependencies_then_rerun_fetches_nothing() {
    if !net_tests() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir_for(tmp.path(), 12);
    let req = DownloadRequest::new(repo.clone(), 12, vec!["less".to_owned()]);

    let first = download(&req).expect("first download");
    let names: Vec<&str> = first.packages.iter().map(|p| p.name.as_str()).collect();
    for needed in ["less", "libc6", "libtinfo6"] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
    assert_eq!(first.downloaded, first.packages.len());
    assert_eq!(first.index.packages, first.packages.len());
    let index = fs::read_to_string(repo.join("Packages")).expect("Packages");
    assert!(index.contains("\nPackage: libtinfo6\n") || index.starts_with("Package: libtinfo6\n"));
    assert!(!repo.join("lock").exists() && !repo.join("partial").exists());
    assert_eq!(
        find_repo_for_host(tmp.path(), 12, "bookworm", "12.11"),
        Some(repo.clone())
    );

    let second = download(&req).expect("second download");
    assert_eq!(
        (second.downloaded, second.already_present),
        (0, first.packages.len())
    );
}

#[test]
fn net_unknown_package_names_package_suite_and_mirror() {
    if !net_tests() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let req = DownloadRequest::new(
        repo_dir_for(tmp.path(), 13),
        13,
        vec!["less".to_owned(), "postgresql-15".to_owned()],
    );
    let err = download(&req).expect_err("postgresql-15 is not in trixie");
    let not_found = err.downcast_ref::<PackagesNotFound>().expect("typed error");
    assert_eq!(not_found.names, ["postgresql-15"]);
    assert_eq!(
        (not_found.suite.as_str(), not_found.mirror.as_str()),
        ("trixie", DEFAULT_MIRROR)
    );
}
