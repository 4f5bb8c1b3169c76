//! The Debian packages (`scripts/package`): what they hold, and that they install and run on a
//! tpa host image.
//!
//! 1. `scripts/package` builds tpa-controller_*.deb and tpa-agent_*.deb into target/debian/.
//! 2. Their file lists hold the binaries, man pages (one per command), completions, docs and
//!    the agent's unit; the unit runs the packaged binary.
//! 3. The agent is the same bytes in both packages and in target/release/tpa-agent, which is
//!    what bootstrap ships to hosts from a build tree.
//! 4. Both install with dpkg in a tpa/debian:12 container (no network), and
//!    `tpa-controller --version` and `tpa-agent --version` print this version.
//!
//! Costs about 3 min on a fresh machine (cargo-deb is built once from crates.io), a few
//! seconds after that.

use std::path::{Path, PathBuf};

use tpa_e2e::*;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The one `<name>_*.deb` in `dir`.
fn deb(dir: &Path, name: &str) -> PathBuf {
    let prefix = format!("{name}_");
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            let file = path.file_name().unwrap().to_string_lossy();
            file.starts_with(&prefix) && file.ends_with(".deb")
        })
        .collect();
    assert_eq!(found.len(), 1, "one {name} package in {}", dir.display());
    found.into_iter().next().unwrap()
}

/// `dpkg-deb --contents` as paths without the leading `./`.
fn contents(deb: &Path) -> Vec<String> {
    let (ok, out) = run("dpkg-deb", &["--contents", deb.to_str().unwrap()]);
    assert!(ok, "dpkg-deb --contents {}", deb.display());
    out.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| path.trim_start_matches("./").to_string())
        .collect()
}

fn extract(deb: &Path, into: &Path) {
    let (ok, _) = run(
        "dpkg-deb",
        &["--extract", deb.to_str().unwrap(), into.to_str().unwrap()],
    );
    assert!(ok, "dpkg-deb --extract {}", deb.display());
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn packages_hold_the_built_binaries_and_install_on_a_host_image() {
    let Some(_guard) = e2e_guard("packages") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let debian = target_dir().join("debian");
    let _ = std::fs::remove_dir_all(&debian);
    let status = without_cargo_test_env(&mut std::process::Command::new(
        workspace_root().join("scripts/package"),
    ))
    .status()
    .expect("run scripts/package");
    assert!(status.success(), "scripts/package failed");

    let controller = deb(&debian, "tpa-controller");
    let agent = deb(&debian, "tpa-agent");
    let listed = contents(&controller);
    for path in [
        "usr/bin/tpa-controller",
        "usr/lib/tpa/tpa-agent",
        "usr/share/man/man1/tpa-controller.1.gz",
        "usr/share/man/man1/tpa-controller-deploy.1.gz",
        "usr/share/man/man1/tpa-controller-restore.1.gz",
        "usr/share/bash-completion/completions/tpa-controller",
        "usr/share/zsh/vendor-completions/_tpa-controller",
        "usr/share/fish/vendor_completions.d/tpa-controller.fish",
        "usr/share/doc/tpa-controller/README.md",
        "usr/share/doc/tpa-controller/barman.md",
    ] {
        assert!(listed.iter().any(|p| p == path), "{path} not in {listed:?}");
    }
    let listed = contents(&agent);
    for path in [
        "usr/bin/tpa-agent",
        "usr/lib/systemd/system/tpa-agent.service",
    ] {
        assert!(listed.iter().any(|p| p == path), "{path} not in {listed:?}");
    }

    let unpacked = tempfile::tempdir().expect("tempdir");
    extract(&controller, &unpacked.path().join("controller"));
    extract(&agent, &unpacked.path().join("agent"));
    let built = read(&target_dir().join("release/tpa-agent"));
    let shipped = read(&unpacked.path().join("controller/usr/lib/tpa/tpa-agent"));
    let packaged = read(&unpacked.path().join("agent/usr/bin/tpa-agent"));
    assert!(
        shipped == built,
        "the controller package's agent differs from the build's"
    );
    assert!(
        packaged == built,
        "the agent package's binary differs from the build's"
    );
    let unit = String::from_utf8(read(
        &unpacked
            .path()
            .join("agent/usr/lib/systemd/system/tpa-agent.service"),
    ))
    .expect("unit is text");
    assert!(
        unit.contains("ExecStart=/usr/bin/tpa-agent serve"),
        "the packaged unit runs the packaged binary:\n{unit}"
    );
    let bash = String::from_utf8(read(
        &unpacked
            .path()
            .join("controller/usr/share/bash-completion/completions/tpa-controller"),
    ))
    .expect("completion is text");
    assert!(
        bash.contains("verify-backup"),
        "the bash completion knows the commands"
    );

    let mount = format!("{}:/debs:ro", debian.display());
    let (ok, out) = run(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            "-v",
            &mount,
            "tpa/debian:12",
            "-c",
            "set -e; dpkg -i /debs/*.deb >/dev/null; tpa-controller --version; \
             tpa-agent --version; cmp /usr/lib/tpa/tpa-agent /usr/bin/tpa-agent && echo same",
        ],
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(ok, "installing the packages failed:\n{out}");
    assert!(
        out.contains(&format!("tpa-controller {version}")),
        "tpa-controller --version:\n{out}"
    );
    assert!(
        out.contains(&format!("tpa-agent {version}")),
        "tpa-agent --version:\n{out}"
    );
    assert!(out.contains("same"), "installed agents differ:\n{out}");
}
