//! SSH through the system OpenSSH client and the cluster's own `ssh_config`.
//!
//! Why OpenSSH rather than a Rust SSH library: the cluster's ssh_config and known-hosts file
//! are what operators use too, so bootstrap trusts exactly the host keys they trust, and
//! everything an operator configures for OpenSSH (jump hosts, agents, ports) works
//! unchanged. SSH is used only to bootstrap agents; after that, everything goes over mTLS.
//! Data (binaries, tokens) always travels on stdin, never in arguments.
//!
//! The multiplexing sockets (`ControlPath`) live in a private directory (0700, random name)
//! made for this process: whoever can connect to a master socket runs commands as root on the
//! host, so it must not sit in /tmp under a name another user can predict or pre-create.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

use crate::process::tokio_command;

/// Runs commands on cluster hosts as root (through `sudo -n` when the login user is not root).
#[derive(Debug, Clone)]
pub struct Ssh {
    config: PathBuf,
    /// Removed when the last clone is dropped; a lingering master (ControlPersist) then exits.
    control_dir: Arc<tempfile::TempDir>,
}

impl Ssh {
    /// Creates the private directory for the control sockets.
    pub fn new(ssh_config: &Path) -> anyhow::Result<Ssh> {
        // A random name, created with O_EXCL semantics (mkdir fails if it exists), mode 0700.
        let control_dir = tempfile::Builder::new()
            .prefix("tpa-ssh-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .context("creating a private directory for the ssh control sockets")?;
        Ok(Ssh {
            config: ssh_config.to_path_buf(),
            control_dir: Arc::new(control_dir),
        })
    }

    /// Where the control sockets live.
    pub fn control_dir(&self) -> &Path {
        self.control_dir.path()
    }

    /// Runs `script` with `sh -c` as root on `host`, feeding `stdin`; returns stdout.
    pub async fn run(&self, host: &str, script: &str, stdin: &[u8]) -> anyhow::Result<String> {
        let remote = format!("sudo -n sh -c {}", shell_quote(script));
        let mut child = tokio_command("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            // One TCP/SSH handshake per host for the whole bootstrap.
            .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=30"])
            .arg("-o")
            .arg(format!("ControlPath={}/%C", self.control_dir().display()))
            .arg(host)
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running ssh (install openssh-client)")?;
        let mut input = child.stdin.take().context("ssh has no stdin")?;
        // Written beside the wait, from the caller's buffer: no copy of the agent binary
        // (8 MB) per host being bootstrapped.
        let writer = async move {
            let _ = input.write_all(stdin).await;
            let _ = input.shutdown().await;
        };
        let ((), output) = tokio::join!(writer, child.wait_with_output());
        let output = output.context("waiting for ssh")?;
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
    fn control_sockets_live_in_a_private_directory_of_their_own() {
        use std::os::unix::fs::PermissionsExt as _;
        let ssh = Ssh::new(Path::new("/nonexistent/ssh_config")).expect("ssh");
        let dir = ssh.control_dir().to_path_buf();
        assert_ne!(dir, std::env::temp_dir(), "not the shared temp directory");
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        let other = Ssh::new(Path::new("/nonexistent/ssh_config")).expect("ssh");
        assert_ne!(
            other.control_dir(),
            dir,
            "a fresh, unpredictable name each time"
        );
        let clone = ssh.clone();
        drop(ssh);
        assert!(dir.exists(), "kept while a clone is alive");
        drop(clone);
        assert!(!dir.exists(), "removed with the last clone");
    }

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}
