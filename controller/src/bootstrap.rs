//! Bootstrap: gets a current, enrolled `tpa-agent` running on every host.
//!
//! An agent that answers over mutual TLS with the same binary as ours (the hash its `Hello`
//! reports of its binary file on disk) is left alone: one round trip. Otherwise, over SSH: upload
//! the binary, `tpa-agent init` (CA + join token on stdin; `--listen` the host's cluster
//! address), install and (re)start the systemd unit, then enrol over gRPC pinned to the key
//! fingerprint init printed. Keys never leave the host; only the certificate travels.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::agent_client::{self, AgentClient, InitOutcome, JoinToken, TOKEN_LIFETIME};
use crate::inventory::{Host, sha256_hex};
use crate::pki::{CertifiedKey, Pki};
use crate::ssh::{Ssh, shell_quote};

/// Where the agent binary lives on hosts.
pub const AGENT_PATH: &str = "/usr/local/bin/tpa-agent";
/// The agent's systemd unit, shipped as is.
pub const AGENT_UNIT: &str = include_str!("../../packaging/systemd/tpa-agent.service");
/// How long a freshly (re)started agent may take to answer.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What bootstrap did on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChange {
    /// Already current and enrolled: nothing done.
    Unchanged,
    /// Binary replaced (or agent restarted); enrolment kept.
    Updated,
    /// Installed and enrolled for the first time.
    Enrolled,
}

/// Everything bootstrap needs, shared by all hosts.
pub struct Bootstrap<'a> {
    pub pki: &'a Pki,
    pub identity: &'a CertifiedKey,
    pub ssh: Ssh,
    pub agent_binary: Vec<u8>,
    pub agent_sha256: String,
}

impl<'a> Bootstrap<'a> {
    pub fn new(
        pki: &'a Pki,
        identity: &'a CertifiedKey,
        ssh_config: &Path,
    ) -> anyhow::Result<Self> {
        let path = agent_binary_path()?;
        let agent_binary = std::fs::read(&path)
            .with_context(|| format!("reading the agent binary {}", path.display()))?;
        let agent_sha256 = sha256_hex(&agent_binary);
        Ok(Bootstrap {
            pki,
            identity,
            ssh: Ssh::new(ssh_config)?,
            agent_binary,
            agent_sha256,
        })
    }

    /// Returns a connected client for `host`, whose agent listens at `addr` (the platform
    /// says where), installing or updating its agent if needed (with `check_only`, refuses
    /// to: a check changes nothing).
    pub async fn host(
        &self,
        host: &Host,
        addr: SocketAddr,
        check_only: bool,
    ) -> anyhow::Result<(AgentClient, AgentChange)> {
        let ca = self.pki.ca_cert_pem();
        let current = tokio::time::timeout(
            Duration::from_secs(5),
            agent_client::connect(addr, &host.name, ca, self.identity),
        )
        .await;
        if let Ok(Ok(client)) = current
            && client.binary_sha256() == self.agent_sha256
        {
            return Ok((client, AgentChange::Unchanged));
        }
        if check_only {
            bail!(
                "the agent on {} is missing or not current: --check changes nothing, so run deploy first",
                host.name
            );
        }
        let change = self.install(host, addr).await?;
        let client = connect_with_retry(addr, &host.name, ca, self.identity).await?;
        Ok((client, change))
    }

    async fn install(&self, host: &Host, addr: SocketAddr) -> anyhow::Result<AgentChange> {
        let name = &host.name;
        let upload = format!(
            "set -e; umask 022; mkdir -p /usr/local/bin; cat > {AGENT_PATH}.new; \
             chmod 755 {AGENT_PATH}.new; mv -f {AGENT_PATH}.new {AGENT_PATH}"
        );
        self.ssh
            .run(name, &upload, &self.agent_binary)
            .await
            .with_context(|| format!("uploading tpa-agent to {name}"))?;
        let token = JoinToken::generate();
        let document = agent_client::init_document(self.pki.ca_cert_pem(), &token, TOKEN_LIFETIME);
        let init = init_command(name, addr);
        let out = self
            .ssh
            .run(name, &init, document.as_bytes())
            .await
            .with_context(|| format!("running tpa-agent init on {name}"))?;
        let outcome = agent_client::parse_init_output(name, &out)?;
        let unit = "set -e; cat > /etc/systemd/system/tpa-agent.service; systemctl daemon-reload; \
                    systemctl enable --quiet tpa-agent.service; systemctl restart tpa-agent.service";
        self.ssh
            .run(name, unit, AGENT_UNIT.as_bytes())
            .await
            .with_context(|| format!("starting the tpa-agent service on {name}"))?;
        match outcome {
            InitOutcome::Enrolled { .. } => Ok(AgentChange::Updated),
            InitOutcome::Pending { fingerprint } => {
                let deadline = Instant::now() + AGENT_START_TIMEOUT;
                loop {
                    let attempt = agent_client::enrol(
                        addr,
                        &fingerprint,
                        &token,
                        self.pki,
                        std::slice::from_ref(name),
                        &[host.address],
                    )
                    .await;
                    match attempt {
                        Ok(()) => break,
                        Err(e) if Instant::now() > deadline => {
                            return Err(e)
                                .with_context(|| format!("enrolling the agent on {name}"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                Ok(AgentChange::Enrolled)
            }
        }
    }
}

/// `tpa-agent init` for a host: its name, its address as a certificate name, and that address to listen
/// on (never every interface).
fn init_command(name: &str, addr: SocketAddr) -> String {
    format!(
        "{AGENT_PATH} init --name {} --san {} --listen {}",
        shell_quote(name),
        shell_quote(&addr.ip().to_string()),
        shell_quote(&addr.to_string())
    )
}

/// Where the controller's .deb puts the agent it ships to hosts (the same bytes as the
/// tpa-agent package's /usr/bin/tpa-agent).
pub const PACKAGED_AGENT: &str = "/usr/lib/tpa/tpa-agent";

/// The agent binary shipped to hosts: `TPA_AGENT_BIN`, else `tpa-agent` beside this binary
/// (a build tree), else the packaged one.
pub fn agent_binary_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TPA_AGENT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating tpa-controller")?;
    let beside = exe.with_file_name("tpa-agent");
    if beside.is_file() {
        return Ok(beside);
    }
    let packaged = PathBuf::from(PACKAGED_AGENT);
    if packaged.is_file() {
        return Ok(packaged);
    }
    bail!(
        "tpa-agent not found beside tpa-controller ({}) nor at {PACKAGED_AGENT}: build both (`cargo build --release`), install the tpa-controller package, or set TPA_AGENT_BIN",
        beside.display()
    )
}

async fn connect_with_retry(
    addr: SocketAddr,
    name: &str,
    ca: &str,
    identity: &CertifiedKey,
) -> anyhow::Result<AgentClient> {
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    loop {
        match agent_client::connect(addr, name, ca, identity).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_listens_on_the_host_address() {
        let addr = SocketAddr::from(([10, 33, 0, 2], tpa_proto::DEFAULT_AGENT_PORT));
        assert_eq!(
            init_command("ulb", addr),
            "/usr/local/bin/tpa-agent init --name 'ulb' --san '10.33.0.2' --listen '10.33.0.2:7443'"
        );
    }
}
