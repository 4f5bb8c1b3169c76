//! What the controller's CLI tests share: a throwaway "machine" with a cluster directory (TPA's
//! M1 docker config.yml, which has a vault_name) and a private config home for the secrets key,
//! and a way to run the real `tpa-controller` binary against it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

pub struct Machine {
    _tmp: tempfile::TempDir,
    pub cluster: PathBuf,
    pub config_home: PathBuf,
}

/// A cluster directory and a private config home, in one temporary directory.
pub fn machine() -> Machine {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = tmp.path().join("cluster");
    std::fs::create_dir(&cluster).expect("cluster dir");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/tpa-m1-docker.yml");
    std::fs::copy(&fixture, cluster.join("config.yml")).expect("config.yml");
    Machine {
        config_home: tmp.path().join("config"),
        cluster,
        _tmp: tmp,
    }
}

impl Machine {
    /// Runs tpa-controller with only this machine's key locations (and `extra_env`), `stdin`
    /// piped to it.
    pub fn run_with(&self, args: &[&str], stdin: &str, extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = tpa_controller::process::command(env!("CARGO_BIN_EXE_tpa-controller"));
        cmd.args(args)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("HOME", self.config_home.join("home"))
            .env_remove("TPA_SECRETS_KEY")
            .env_remove("TPA_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run tpa-controller");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }

    pub fn dir(&self) -> &str {
        self.cluster.to_str().expect("utf-8 path")
    }
}
