//! SSH through the system OpenSSH client and the cluster's own `ssh_config`.
//!
//! Why OpenSSH rather than a Rust SSH library: the cluster's ssh_config and known-hosts file
//! are what operators use too, so bootstrap trusts exactly the host keys they trust, and
//! everything an operator configures for OpenSSH (jump hosts, agents, ports) works
//! unchanged. SSH is used only to bootstrap agents; after that, everything goes over mTLS.
//! Data (binaries, tokens) always travels on stdin, never in arguments.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs commands on cluster hosts as root (through `sudo -n` when the login user is not root).
#[derive(Debug, Clone)]
pub struct Ssh {
    config: PathBuf,
    control_dir: PathBuf,
}

impl Ssh {
    pub fn new(ssh_config: &Path) -> Ssh {
        Ssh {
            config: ssh_config.to_path_buf(),
            control_dir: std::env::temp_dir(),
        }
    }

    /// Runs `script` with `sh -c` as root on `host`, feeding `stdin`; returns stdout.
    pub async fn run(&self, host: &str, script: &str, stdin: &[u8]) -> anyhow::Result<String> {
        let remote = format!("sudo -n sh -c {}", shell_quote(script));
        let mut child = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            // One TCP/SSH handshake per host for the whole bootstrap.
            .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=30"])
            .arg("-o")
            .arg(format!(
                "ControlPath={}/tpa-ssh-%C",
                self.control_dir.display()
            ))
            .arg(host)
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running ssh (install openssh-client)")?;
        let mut input = child.stdin.take().context("ssh has no stdin")?;
        let data = stdin.to_vec();
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&data).await;
            let _ = input.shutdown().await;
        });
        let output = child.wait_with_output().await.context("waiting for ssh")?;
        let _ = writer.await;
        if !output.status.success() {
            bail!(
                "ssh {host} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Quotes `s` as one POSIX shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}
