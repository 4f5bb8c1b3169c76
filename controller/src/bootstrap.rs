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
/// Where the agent's systemd unit is installed on hosts.
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/tpa-agent.service";
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
    /// The agent for hosts of the controller's own architecture.
    pub agent_binary: Vec<u8>,
    pub agent_sha256: String,
    /// Hashes of the agents for other architectures found beside it: an agent running one of
    /// them is current too.
    pub foreign_sha256: Vec<String>,
    /// Re-enrol agents that trust another CA (`tpa-agent init --replace-ca`): only while a CA replaced
    /// with `rotate-ca --old-ca-compromised` has agents left to move ([`crate::pki::rotation`]).
    pub replace_ca: bool,
}

/// The architecture the built agent runs on (`uname -m` of the hosts it suits).
pub const NATIVE_ARCH: &str = std::env::consts::ARCH;

/// Removes what deploy installed for tpa itself (`deprovision --uninstall` on machines that
/// stay): the agent's unit, binary, configuration and keys, the shipped package repository and
/// its apt source. Fixed paths only. Postgres, its data and installed packages stay.
pub fn uninstall_script() -> String {
    format!(
        "systemctl disable --now tpa-agent.service >/dev/null 2>&1 || true; \
         rm -f {AGENT_UNIT_PATH}; systemctl daemon-reload; \
         rm -rf /etc/tpa-agent /var/lib/tpa-agent {AGENT_PATH} {AGENT_PATH}.new {repo} \
         /etc/apt/sources.list.d/tpa-local-repo.list; rmdir /var/opt/tpa 2>/dev/null; true",
        repo = crate::platform::docker::LOCAL_REPO_MOUNT
    )
}

/// `tpa-agent-<arch>` files beside the native agent at `native`.
fn foreign_agents(native: &Path) -> Vec<PathBuf> {
    let Some(dir) = native.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tpa-agent-") && !n.ends_with(".d"))
                && p.is_file()
        })
        .collect()
}

/// The agent binary for a host whose `uname -m` says `arch`: the built one for the
/// controller's own architecture, else `tpa-agent-<arch>` beside the controller or in
/// /usr/lib/tpa (tpa cannot cross-build; whoever builds one for aarch64 puts it there).
pub fn agent_for_arch(arch: &str, host: &str) -> anyhow::Result<Option<PathBuf>> {
    let arch = match arch {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        a => a,
    };
    if arch == NATIVE_ARCH {
        return Ok(None);
    }
    if arch.is_empty() || !arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("{host} reported an unreadable architecture {arch:?} (uname -m)");
    }
    let name = format!("tpa-agent-{arch}");
    let mut looked = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        looked.push(exe.with_file_name(&name));
    }
    looked.push(Path::new(PACKAGED_AGENT).with_file_name(&name));
    if let Some(found) = looked.iter().find(|p| p.is_file()) {
        return Ok(Some(found.clone()));
    }
    bail!(
        "{host} runs on {arch} (uname -m) and this controller has no agent for it (it ships the \
         {NATIVE_ARCH} agent): build tpa-agent for {arch} and put it at {}",
        looked
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
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
        let foreign_sha256 = foreign_agents(&path)
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .map(|bytes| sha256_hex(&bytes))
            .collect();
        Ok(Bootstrap {
            pki,
            identity,
            ssh: Ssh::new(ssh_config)?,
            agent_binary,
            agent_sha256,
            foreign_sha256,
            replace_ca: false,
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
            && (client.binary_sha256() == self.agent_sha256
                || self
                    .foreign_sha256
                    .iter()
                    .any(|h| h == client.binary_sha256()))
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
        let arch = self
            .ssh
            .run(name, "uname -m", b"")
            .await
            .with_context(|| format!("asking {name} for its architecture"))?;
        let foreign = match agent_for_arch(arch.trim(), name)? {
            None => None,
            Some(path) => Some(
                std::fs::read(&path)
                    .with_context(|| format!("reading the agent binary {}", path.display()))?,
            ),
        };
        let binary = foreign.as_deref().unwrap_or(&self.agent_binary);
        let upload = format!(
            "set -e; umask 022; mkdir -p /usr/local/bin; cat > {AGENT_PATH}.new; \
             chmod 755 {AGENT_PATH}.new; mv -f {AGENT_PATH}.new {AGENT_PATH}"
        );
        self.ssh
            .run(name, &upload, binary)
            .await
            .with_context(|| format!("uploading tpa-agent to {name}"))?;
        let token = JoinToken::generate();
        let document = agent_client::init_document(self.pki.ca_cert_pem(), &token, TOKEN_LIFETIME);
        let init = init_command(name, addr, self.replace_ca);
        let out = self
            .ssh
            .run(name, &init, document.as_bytes())
            .await
            .with_context(|| format!("running tpa-agent init on {name}"))?;
        let outcome = agent_client::parse_init_output(name, &out)?;
        let unit = unit_install_script();
        self.ssh
            .run(name, &unit, AGENT_UNIT.as_bytes())
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

/// Installs the agent's unit and (re)starts it. systemd reloads its configuration (about
/// 0.2 s of CPU) only when it has not read this file as it is: a new unit is read on first
/// use, and an unchanged file is not rewritten; a changed one, or one that overrides a unit
/// systemd loaded from elsewhere (a packaged agent's), is.
fn unit_install_script() -> String {
    let p = AGENT_UNIT_PATH;
    format!(
        "set -e; cat > {p}.new; \
         if cmp -s {p}.new {p}; then rm -f {p}.new; else mv -f {p}.new {p}; fi; \
         [ \"$(systemctl show --property=NeedDaemonReload,FragmentPath tpa-agent.service \
         | sort | tr '\\n' ' ')\" = 'FragmentPath={p} NeedDaemonReload=no ' ] \
         || systemctl daemon-reload; \
         systemctl enable --quiet --no-reload tpa-agent.service; \
         systemctl restart tpa-agent.service"
    )
}

/// `tpa-agent init` for a host: its name, its address as a certificate name, and that address to listen
/// on (never every interface); with `replace_ca`, also over an enrolment with another CA.
fn init_command(name: &str, addr: SocketAddr, replace_ca: bool) -> String {
    format!(
        "{AGENT_PATH} init --name {} --san {} --listen {}{}",
        shell_quote(name),
        shell_quote(&addr.ip().to_string()),
        shell_quote(&addr.to_string()),
        if replace_ca { " --replace-ca" } else { "" }
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

/// Connects to the agent at `addr`, retrying while it (re)starts (after an install, or a certificate
/// renewal), for up to 30 s.
pub(crate) async fn connect_with_retry(
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
    fn hosts_of_another_architecture_get_a_clear_error() {
        assert_eq!(agent_for_arch(NATIVE_ARCH, "ulb").unwrap(), None);
        if NATIVE_ARCH == "x86_64" {
            assert_eq!(agent_for_arch("amd64", "ulb").unwrap(), None);
        }
        let err = agent_for_arch("riscv64", "ulb").unwrap_err().to_string();
        assert!(err.starts_with("ulb runs on riscv64"), "{err}");
        assert!(err.contains("tpa-agent-riscv64"), "{err}");
        let err = agent_for_arch("x86;rm", "ulb").unwrap_err().to_string();
        assert!(err.contains("unreadable architecture"), "{err}");
    }

    #[test]
    fn uninstall_removes_only_tpas_own_files() {
        let script = uninstall_script();
        for path in [
            "/usr/local/bin/tpa-agent",
            "/etc/tpa-agent",
            "/var/lib/tpa-agent",
            "/var/opt/tpa/local-repo",
            "tpa-local-repo.list",
        ] {
            assert!(script.contains(path), "{path}: {script}");
        }
        assert!(!script.contains("postgres"), "{script}");
    }

    #[test]
    fn init_listens_on_the_host_address() {
        let addr = SocketAddr::from(([10, 33, 0, 2], tpa_proto::DEFAULT_AGENT_PORT));
        assert_eq!(
            init_command("ulb", addr, false),
            "/usr/local/bin/tpa-agent init --name 'ulb' --san '10.33.0.2' --listen '10.33.0.2:7443'"
        );
        assert!(init_command("ulb", addr, true).ends_with(" --replace-ca"));
    }
}
