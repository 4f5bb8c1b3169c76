//! Every child process the controller starts (ssh, ssh-keygen, apt-get, dpkg-deb, debootstrap,
//! tar, ...) is built here, so that none of them inherits the secrets key: `TPA_SECRETS_KEY` opens
//! every password of the cluster, and a child has no use for it (an ssh `ProxyCommand`, an apt
//! hook or a debootstrap script would otherwise see it, and so would `/proc/<pid>/environ`).
//!
//! `controller/clippy.toml` forbids the raw `Command::new` constructors, pointing here.

use std::ffi::OsStr;

use crate::secrets::KEY_ENV;

/// `std::process::Command::new(program)` without the secrets key in its environment.
#[allow(clippy::disallowed_methods)] // The one place that may call it.
pub fn command(program: impl AsRef<OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.env_remove(KEY_ENV);
    command
}

/// `tokio::process::Command::new(program)` without the secrets key in its environment.
#[allow(clippy::disallowed_methods)] // The one place that may call it.
pub fn tokio_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.env_remove(KEY_ENV);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the re-run of this test binary; the process environment of the test runner itself
    /// is never changed (tests run in parallel threads).
    const PROBE: &str = "TPA_TEST_ENV_PROBE";
    const SENTINEL: &str = "sentinel-not-a-real-key";

    /// What `env` prints in a child, as seen by each kind of constructor.
    #[allow(clippy::disallowed_methods)] // The raw constructor, to show the key is there to see.
    fn probe() {
        let raw = std::process::Command::new("env").output().expect("run env");
        let ours = command("env").output().expect("run env");
        let ours_async = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async { tokio_command("env").output().await })
            .expect("run env");
        for (label, out) in [("raw", raw), ("command", ours), ("tokio", ours_async)] {
            let text = String::from_utf8_lossy(&out.stdout);
            let sees = text.lines().any(|l| l.starts_with(&format!("{KEY_ENV}=")));
            let has_path = text.lines().any(|l| l.starts_with("PATH="));
            println!("probe {label} sees_key={sees} has_path={has_path}");
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // The test needs a child that does see the key.
    fn children_never_see_the_secrets_key() {
        if std::env::var_os(PROBE).is_some() {
            probe();
            return;
        }
        // Run this very test again in a child process that has the key, as a user running the
        // controller with TPA_SECRETS_KEY set would.
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "process::tests::children_never_see_the_secrets_key",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KEY_ENV, SENTINEL)
            .env(PROBE, "1")
            .output()
            .expect("re-run the test binary");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        // The raw constructor passes the key on: the probe is able to see it.
        assert!(
            text.contains("probe raw sees_key=true has_path=true"),
            "{text}"
        );
        assert!(
            text.contains("probe command sees_key=false has_path=true"),
            "{text}"
        );
        assert!(
            text.contains("probe tokio sees_key=false has_path=true"),
            "{text}"
        );
    }
}
