//! The controller's gRPC client for `tpa-agent` (protocol: `tpa-proto`, docs/protocol.md).
//!
//! - Enrolment ([`enrol`], [`JoinToken`], [`init_document`], [`parse_init_output`]): once per host, over a
//!   TLS connection pinned to the key fingerprint `tpa-agent init` printed over SSH.
//! - [`connect`] then gives an [`AgentClient`] over mutual TLS: the agent's certificate is verified against
//!   the cluster CA for the host's name, the controller presents its own identity (`pki`), and the agent's
//!   protocol version is checked before anything else.
//!
//! Only this module (and `tpa-proto`) knows protobuf types; callers get `tpa-common` domain types.

mod enrol;
mod pinned;

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{Stream, StreamExt as _};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tpa_common::event::{BatchSummary, ResourceEvent};
use tpa_common::facts::Facts;
use tpa_common::resource::ResourceSpec;
use tpa_proto::pb::agent_client::AgentClient as PbAgentClient;
use tpa_proto::{ApplyEvent, HealthReport, PROTOCOL_VERSION, pb};

pub use self::enrol::{
    InitOutcome, JoinToken, TOKEN_LIFETIME, enrol, init_document, parse_init_output,
};
use crate::pki::CertifiedKey;

/// How long to wait for a TCP + TLS connection to an agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one enrolled agent, over mutual TLS. Cheap to clone (one HTTP/2 connection, multiplexed).
#[derive(Debug, Clone)]
pub struct AgentClient {
    host: String,
    agent_version: String,
    inner: PbAgentClient<Channel>,
}

/// A command for [`AgentClient::exec`]. `env` values and `stdin` are secret-safe: never logged by the agent.
#[derive(Default)]
pub struct ExecCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub run_as: Option<String>,
    pub stdin: Vec<u8>,
    pub cwd: Option<String>,
}

impl std::fmt::Debug for ExecCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecCommand")
            .field("argv", &self.argv)
            .field("env", &env)
            .field("run_as", &self.run_as)
            .field("stdin_bytes", &self.stdin.len())
            .finish_non_exhaustive()
    }
}

/// One piece of a running command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Last. A command killed by signal N reports 128 + N.
    ExitCode(i32),
}

/// A finished command's collected output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// The result of an Apply batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// One per resource, in batch order.
    pub events: Vec<ResourceEvent>,
    pub summary: BatchSummary,
}

/// Connects to the enrolled agent of `host_name` at `addr` over mutual TLS and checks its protocol version
/// (`Hello`). `ca_pem` is the cluster CA; `identity` the controller's certificate and key
/// ([`crate::pki::Pki::controller_identity`]).
pub async fn connect(
    addr: SocketAddr,
    host_name: &str,
    ca_pem: &str,
    identity: &CertifiedKey,
) -> anyhow::Result<AgentClient> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
        .domain_name(host_name);
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_config(tls)
        .with_context(|| format!("TLS configuration for the agent on {host_name}"))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
        .with_context(|| {
            format!(
                "cannot connect to the agent on {host_name} at {addr} over mutual TLS: is it running and \
                 enrolled in this cluster (re-run bootstrap)?"
            )
        })?;
    let mut client = AgentClient {
        host: host_name.to_string(),
        agent_version: String::new(),
        inner: PbAgentClient::new(channel),
    };
    client.agent_version = client.hello().await?;
    Ok(client)
}

// === impl AgentClient ===

impl AgentClient {
    /// The host this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The agent's version, from `Hello`.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// `Hello`: returns the agent's version; fails if it speaks another protocol version.
    pub async fn hello(&mut self) -> anyhow::Result<String> {
        let hello = self
            .inner
            .hello(pb::HelloRequest {})
            .await
            .map_err(|status| status_error(&self.host, "Hello", status))?
            .into_inner();
        if hello.protocol_version != PROTOCOL_VERSION {
            bail!(protocol_mismatch(&self.host, hello.protocol_version));
        }
        if hello.host_name != self.host {
            tracing::warn!(host = %self.host, agent_says = %hello.host_name, "agent reports another host name");
        }
        Ok(hello.agent_version)
    }

    /// `Facts` about the host and, when `data_dir` is given, the Postgres instance there on `port`.
    pub async fn facts(&mut self, data_dir: Option<&str>, port: u16) -> anyhow::Result<Facts> {
        let request = pb::FactsRequest {
            data_dir: data_dir.unwrap_or_default().to_string(),
            port: port.into(),
        };
        let facts = self
            .inner
            .facts(request)
            .await
            .map_err(|s| status_error(&self.host, "Facts", s))?;
        Ok(facts.into_inner().into())
    }

    /// `Apply` as a stream: one event per resource as it completes, then the summary.
    pub async fn apply_stream(
        &mut self,
        resources: Vec<ResourceSpec>,
        check_only: bool,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<ApplyEvent>> + use<>> {
        let request = pb::ApplyRequest {
            resources: resources.into_iter().map(Into::into).collect(),
            check_only,
        };
        let host = self.host.clone();
        let stream = self
            .inner
            .apply(request)
            .await
            .map_err(|s| status_error(&self.host, "Apply", s))?;
        Ok(stream.into_inner().map(move |item| {
            let event = item.map_err(|s| status_error(&host, "Apply", s))?;
            ApplyEvent::try_from(event)
                .with_context(|| format!("invalid Apply event from the agent on {host}"))
        }))
    }

    /// `Apply`, collected: every resource event and the summary.
    pub async fn apply(
        &mut self,
        resources: Vec<ResourceSpec>,
        check_only: bool,
    ) -> anyhow::Result<ApplyResult> {
        let mut stream = std::pin::pin!(self.apply_stream(resources, check_only).await?);
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            match event? {
                ApplyEvent::Resource(event) => events.push(event),
                ApplyEvent::Summary(summary) => return Ok(ApplyResult { events, summary }),
            }
        }
        bail!(
            "the agent on {} ended the Apply stream without a summary after {} events: check its journal \
             (journalctl -u tpa-agent)",
            self.host,
            events.len()
        )
    }

    /// `Exec` as a stream of output chunks, ending with the exit code.
    pub async fn exec_stream(
        &mut self,
        command: ExecCommand,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<ExecOutput>> + use<>> {
        let request = pb::ExecRequest {
            argv: command.argv,
            env: command
                .env
                .into_iter()
                .map(|(name, value)| pb::EnvVar { name, value })
                .collect(),
            run_as: command.run_as,
            stdin: command.stdin,
            cwd: command.cwd,
        };
        let host = self.host.clone();
        let stream = self
            .inner
            .exec(request)
            .await
            .map_err(|s| status_error(&self.host, "Exec", s))?;
        Ok(stream.into_inner().map(move |item| {
            let output = item.map_err(|s| status_error(&host, "Exec", s))?.output;
            match output {
                Some(pb::exec_output::Output::Stdout(b)) => Ok(ExecOutput::Stdout(b)),
                Some(pb::exec_output::Output::Stderr(b)) => Ok(ExecOutput::Stderr(b)),
                Some(pb::exec_output::Output::ExitCode(c)) => Ok(ExecOutput::ExitCode(c)),
                None => bail!("empty Exec output from the agent on {host}"),
            }
        }))
    }

    /// `Exec`, collected.
    pub async fn exec(&mut self, command: ExecCommand) -> anyhow::Result<ExecResult> {
        let program = command.argv.first().cloned().unwrap_or_default();
        let mut stream = std::pin::pin!(self.exec_stream(command).await?);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(output) = stream.next().await {
            match output? {
                ExecOutput::Stdout(b) => stdout.extend(b),
                ExecOutput::Stderr(b) => stderr.extend(b),
                ExecOutput::ExitCode(exit_code) => {
                    return Ok(ExecResult {
                        stdout,
                        stderr,
                        exit_code,
                    });
                }
            }
        }
        bail!(
            "the agent on {} ended `{program}` without an exit code",
            self.host
        )
    }

    /// `exec` that must succeed: its stdout, or an error naming the host, the program, the exit
    /// code and stderr.
    pub async fn exec_stdout(&mut self, command: ExecCommand) -> anyhow::Result<String> {
        let program = command.argv.first().cloned().unwrap_or_default();
        let result = self.exec(command).await?;
        if result.exit_code != 0 {
            bail!(
                "`{program}` on {} failed (exit {}): {}",
                self.host,
                result.exit_code,
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&result.stdout).into_owned())
    }

    /// `Health` of the agent and, when `data_dir` is given, the Postgres instance there on `port`.
    pub async fn health(
        &mut self,
        data_dir: Option<&str>,
        port: u16,
    ) -> anyhow::Result<HealthReport> {
        let request = pb::HealthRequest {
            data_dir: data_dir.unwrap_or_default().to_string(),
            port: port.into(),
        };
        let report = self
            .inner
            .health(request)
            .await
            .map_err(|s| status_error(&self.host, "Health", s))?;
        HealthReport::try_from(report.into_inner())
            .with_context(|| format!("invalid Health report from the agent on {}", self.host))
    }
}

/// The error for an agent of another protocol version.
fn protocol_mismatch(host: &str, agent: u32) -> String {
    format!(
        "agent on {host} speaks protocol {agent}, controller speaks {PROTOCOL_VERSION}: re-deploy to replace it"
    )
}

/// An RPC's failure, naming the host and the RPC.
fn status_error(host: &str, rpc: &str, status: tonic::Status) -> anyhow::Error {
    let mut detail = status.message().to_string();
    // Transport failures (TLS alerts, refused connections) say only "transport error"; the cause is in the chain.
    if let Some(source) = status.source() {
        let chain = error_chain(source);
        if chain.starts_with(&detail) {
            detail = chain;
        } else if !detail.contains(&chain) {
            detail = format!("{detail}: {chain}");
        }
    }
    anyhow::anyhow!(
        "{rpc} on the agent of {host} failed ({:?}): {detail}",
        status.code()
    )
}

/// An error and its sources on one line (transport errors hide the useful part in the chain).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_mismatch_says_what_to_do() {
        expect_test::expect![[
            r#"agent on kinetic speaks protocol 7, controller speaks 1: re-deploy to replace it"#
        ]]
        .assert_eq(&protocol_mismatch("kinetic", 7));
    }

    #[test]
    fn status_errors_name_host_and_rpc() {
        let err = status_error("kinetic", "Apply", tonic::Status::permission_denied("nope"));
        assert_eq!(
            err.to_string(),
            "Apply on the agent of kinetic failed (PermissionDenied): nope"
        );
    }

    #[test]
    fn exec_command_debug_hides_env_values_and_stdin() {
        let command = ExecCommand {
            argv: vec!["psql".into()],
            env: vec![("PGPASSWORD".into(), "hunter2".into())],
            stdin: b"hunter2".to_vec(),
            ..ExecCommand::default()
        };
        let shown = format!("{command:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("PGPASSWORD"),
            "{shown}"
        );
    }
}
