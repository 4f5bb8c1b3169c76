//! The controller's gRPC client for `tpa-agent` (protocol: `tpa-proto`, docs/protocol.md).
//!
//! - Enrolment ([`enrol`], [`JoinToken`], [`init_document`], [`parse_init_output`]): once per host, over a
//!   TLS connection pinned to the key fingerprint `tpa-agent init` printed over SSH.
//! - [`connect`] then gives an [`AgentClient`] over mutual TLS: the agent's certificate is verified against
//!   the cluster CA for the host's name, the controller presents its own identity (`pki`), and the agent's
//!   protocol version is checked before anything else.
//! - [`renew`]: the agent's certificate renewed over that channel when it is close to expiry (deploy).
//!
//! Every call has a deadline ([`Deadlines`]): an agent that stops answering fails the call with a message
//! naming the host and the call, instead of hanging the controller.
//!
//! Only this module (and `tpa-proto`) knows protobuf types; callers get `tpa-common` domain types.

mod enrol;
mod pinned;
pub mod renew;

use std::error::Error as _;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{Stream, StreamExt as _};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tpa_common::event::{BatchSummary, ResourceEvent};
use tpa_common::facts::Facts;
use tpa_common::query::SqlQuery;
use tpa_common::resource::ResourceSpec;
use tpa_proto::pb::agent_client::AgentClient as PbAgentClient;
use tpa_proto::{ApplyEvent, HealthReport, PROTOCOL_VERSION, pb};

pub use self::enrol::{
    InitOutcome, JoinToken, TOKEN_LIFETIME, enrol, init_document, parse_init_output,
};
use crate::pki::CertifiedKey;

/// How long to wait for a TCP connection to an agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long each kind of call to an agent may take before the controller gives up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// TCP + TLS (the first `Hello` then has the `call` deadline).
    pub connect: Duration,
    /// Quick calls: `Hello`, `ServerKey`, the start of a streaming call.
    pub call: Duration,
    /// `Facts` and `Health`, which may run a psql with its own 60 s limit.
    pub facts: Duration,
    /// `Query`: longer than the agent's own 60 s limit, so the agent's clearer error comes first.
    pub query: Duration,
    /// A whole `Apply` batch: generous (package installs, initdb) but bounded.
    pub apply: Duration,
    /// Added to an `Exec` command's own time limit for the whole stream.
    pub exec_margin: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(20),
            call: Duration::from_secs(30),
            facts: Duration::from_secs(90),
            query: Duration::from_secs(90),
            apply: Duration::from_secs(2 * 3600),
            exec_margin: Duration::from_secs(30),
        }
    }
}

/// A connection to one enrolled agent, over mutual TLS. Cheap to clone (one HTTP/2 connection, multiplexed).
#[derive(Debug, Clone)]
pub struct AgentClient {
    host: String,
    agent_version: String,
    binary_sha256: String,
    /// The certificate the agent serves, from `Hello` (empty from agents older than renewal).
    cert_pem: String,
    /// The CA certificates the agent trusts, from `Hello` (empty from agents older than rotation).
    trusted_ca_pem: String,
    deadlines: Deadlines,
    inner: PbAgentClient<Channel>,
}

/// A command for [`AgentClient::exec`] (hooks and `cmd`; deploys use the typed calls). `env` values and
/// `stdin` are secret-safe: never logged by the agent.
#[derive(Default)]
pub struct ExecCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub run_as: Option<String>,
    pub stdin: Vec<u8>,
    pub cwd: Option<String>,
    /// The agent kills the command (and its process group) after this long; None: the agent's
    /// default, [`EXEC_DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
}

/// The agent's time limit of an `Exec` command that sets none.
pub const EXEC_DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What `ServerKey` answered: the host's Postgres server key, seen from outside (no private key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerKey {
    /// SubjectPublicKeyInfo PEM; None when there is no key yet (and none was to be made).
    pub public_key_pem: Option<String>,
    /// The certificate installed at the requested path, if any.
    pub cert_pem: Option<String>,
    /// A CSR for the key, when one was asked for and a key exists.
    pub csr_pem: Option<String>,
}

impl std::fmt::Debug for ExecCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecCommand")
            .field("argv", &self.argv)
            .field("env", &env)
            .field("run_as", &self.run_as)
            .field("stdin_bytes", &self.stdin.len())
            .field("timeout", &self.timeout)
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

/// How an Apply batch runs on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Make every resource so.
    Apply,
    /// Report what would change, change nothing.
    Check,
    /// Check, stopping at the first resource out of state (the rest come back Skipped).
    Probe,
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
    connect_with(addr, host_name, ca_pem, identity, Deadlines::default()).await
}

/// [`connect`] with explicit deadlines for this client's calls.
pub async fn connect_with(
    addr: SocketAddr,
    host_name: &str,
    ca_pem: &str,
    identity: &CertifiedKey,
    deadlines: Deadlines,
) -> anyhow::Result<AgentClient> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
        .domain_name(host_name);
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT.min(deadlines.connect))
        // Notice an agent (or a network path) that went away while a long call runs.
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .tls_config(tls)
        .with_context(|| format!("TLS configuration for the agent on {host_name}"))?;
    let connected = tokio::time::timeout(deadlines.connect, endpoint.connect())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no TLS connection within {} s",
                deadlines.connect.as_secs_f32()
            )
        })
        .and_then(|r| r.map_err(|e| anyhow::anyhow!("{}", error_chain(&e))));
    let channel = connected.with_context(|| {
        format!(
            "cannot connect to the agent on {host_name} at {addr} over mutual TLS: is it running and \
             enrolled in this cluster (re-run bootstrap)?"
        )
    })?;
    let mut client = AgentClient {
        host: host_name.to_string(),
        agent_version: String::new(),
        binary_sha256: String::new(),
        cert_pem: String::new(),
        trusted_ca_pem: String::new(),
        deadlines,
        inner: PbAgentClient::new(channel),
    };
    client.hello().await?;
    Ok(client)
}

/// Runs one call with a deadline, both ways: the agent learns it (`grpc-timeout`), and the controller stops
/// waiting when it passes.
async fn within<T, F>(host: &str, rpc: &str, limit: Duration, call: F) -> anyhow::Result<T>
where
    F: Future<Output = Result<T, tonic::Status>>,
{
    match tokio::time::timeout(limit, call).await {
        // tonic enforces the same deadline on its side and may notice first.
        Ok(Err(status)) if is_timeout(&status) => Err(deadline_error(host, rpc, limit)),
        Ok(result) => result.map_err(|status| status_error(host, rpc, status)),
        Err(_) => Err(deadline_error(host, rpc, limit)),
    }
}

/// True for the status of tonic's own deadline (`grpc-timeout`) expiring on the client.
fn is_timeout(status: &tonic::Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired"
}

/// The error of a call that ran out of time.
fn deadline_error(host: &str, rpc: &str, limit: Duration) -> anyhow::Error {
    anyhow::anyhow!(
        "{rpc} on the agent of {host} did not finish within {} s: check the host (is it overloaded or \
         unreachable?) and the agent's journal (journalctl -u tpa-agent), then retry",
        limit.as_secs_f32()
    )
}

/// A request that carries its deadline to the agent.
fn request<T>(message: T, limit: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(limit);
    request
}

/// A response stream that ends with an error once `deadline` passes (dropping the call, which the agent
/// notices).
fn until<S, T>(
    stream: S,
    deadline: tokio::time::Instant,
    timed_out: impl FnOnce() -> anyhow::Error + Send + 'static,
) -> impl Stream<Item = anyhow::Result<T>> + Send
where
    S: Stream<Item = anyhow::Result<T>> + Send + Unpin,
{
    futures_util::stream::unfold(
        (stream, Some(timed_out)),
        move |(mut stream, timed_out)| async move {
            // None: the deadline passed and was reported; the stream is over.
            let timed_out = timed_out?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(item)) => Some((item, (stream, Some(timed_out)))),
                Ok(None) => None,
                Err(_) => Some((Err(timed_out()), (stream, None))),
            }
        },
    )
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

    /// The hex SHA-256 of the agent's binary file on the host, from `Hello` (empty if it could not
    /// read it): bootstrap compares it with the binary it ships.
    pub fn binary_sha256(&self) -> &str {
        &self.binary_sha256
    }

    /// The certificate the agent serves (PEM), from `Hello`; empty from an agent older than renewal.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificates the agent trusts (PEM), from `Hello`; empty from an agent older than CA rotation.
    pub fn trusted_ca_pem(&self) -> &str {
        &self.trusted_ca_pem
    }

    /// `InstallTrust`: the agent trusts `ca_pem` (one or more CA certificates) from now on; true when that
    /// changed something, and the agent's service then restarts: reconnect.
    pub async fn install_trust(&mut self, ca_pem: String) -> anyhow::Result<bool> {
        let limit = self.deadlines.call;
        let call = self
            .inner
            .install_trust(request(pb::InstallTrustRequest { ca_pem }, limit));
        let response = within(&self.host, "InstallTrust", limit, call).await?;
        Ok(response.into_inner().changed)
    }

    /// `RenewCsr`: the agent makes a new key on its host and returns a CSR for it (see [`renew`]).
    pub async fn renew_csr(&mut self) -> anyhow::Result<String> {
        let limit = self.deadlines.call;
        let call = self.inner.renew_csr(request(pb::RenewCsrRequest {}, limit));
        let response = within(&self.host, "RenewCsr", limit, call).await?;
        Ok(response.into_inner().csr_pem)
    }

    /// `InstallRenewal`: the agent installs `cert_pem` with the key of the last `RenewCsr` and restarts its
    /// service with them; returns the certificate's expiry (Unix seconds). Reconnect afterwards.
    pub async fn install_renewal(&mut self, cert_pem: String) -> anyhow::Result<i64> {
        let limit = self.deadlines.call;
        let call = self
            .inner
            .install_renewal(request(pb::InstallRenewalRequest { cert_pem }, limit));
        let response = within(&self.host, "InstallRenewal", limit, call).await?;
        Ok(response.into_inner().not_after)
    }

    /// `Hello`: returns the agent's version (and records its binary's hash); fails if it speaks another
    /// protocol version.
    pub async fn hello(&mut self) -> anyhow::Result<String> {
        let limit = self.deadlines.call;
        let call = self.inner.hello(request(pb::HelloRequest {}, limit));
        let hello = within(&self.host, "Hello", limit, call).await?.into_inner();
        if hello.protocol_version != PROTOCOL_VERSION {
            bail!(protocol_mismatch(&self.host, hello.protocol_version));
        }
        if hello.host_name != self.host {
            tracing::warn!(host = %self.host, agent_says = %hello.host_name, "agent reports another host name");
        }
        self.agent_version = hello.agent_version.clone();
        self.binary_sha256 = hello.binary_sha256;
        self.cert_pem = hello.cert_pem;
        self.trusted_ca_pem = hello.trusted_ca_pem;
        Ok(hello.agent_version)
    }

    /// `Facts` about the host and, when `data_dir` is given, the Postgres instance there on `port`.
    pub async fn facts(&mut self, data_dir: Option<&str>, port: u16) -> anyhow::Result<Facts> {
        let message = pb::FactsRequest {
            data_dir: data_dir.unwrap_or_default().to_string(),
            port: port.into(),
        };
        let limit = self.deadlines.facts;
        let call = self.inner.facts(request(message, limit));
        let facts = within(&self.host, "Facts", limit, call).await?;
        Ok(facts.into_inner().into())
    }

    /// `Query`: runs one SQL query with psql on the host's Postgres (as `query.run_as`, over the local
    /// socket on `query.port`, in `query.database`) and returns its rows, one `Vec` of text fields per row;
    /// SQL NULL is an empty string. Secret SQL is never logged by the agent nor echoed in its errors.
    pub async fn query(&mut self, query: SqlQuery) -> anyhow::Result<Vec<Vec<String>>> {
        let limit = self.deadlines.query;
        let call = self.inner.query(request(query.into(), limit));
        let rows = within(&self.host, "Query", limit, call).await?;
        Ok(rows.into_inner().into())
    }

    /// `ServerKey`: the Postgres server key at `key_path` on the host: its public key, the certificate at
    /// `cert_path` if installed, and with `csr_common_name` a CSR for the key. With `create`, the agent
    /// makes the key first if there is none (never pass it in check mode).
    pub async fn server_key(
        &mut self,
        key_path: &str,
        cert_path: &str,
        create: bool,
        csr_common_name: Option<&str>,
    ) -> anyhow::Result<ServerKey> {
        let message = pb::ServerKeyRequest {
            key_path: key_path.to_string(),
            cert_path: cert_path.to_string(),
            create,
            csr_common_name: csr_common_name.map(str::to_string),
        };
        let limit = self.deadlines.call;
        let call = self.inner.server_key(request(message, limit));
        let key = within(&self.host, "ServerKey", limit, call)
            .await?
            .into_inner();
        Ok(ServerKey {
            public_key_pem: Some(key.public_key_pem).filter(|p| !p.is_empty()),
            cert_pem: key.cert_pem,
            csr_pem: key.csr_pem,
        })
    }

    /// `Apply` as a stream: one event per resource as it completes, then the summary.
    pub async fn apply_stream(
        &mut self,
        resources: Vec<ResourceSpec>,
        mode: ApplyMode,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<ApplyEvent>> + use<>> {
        let message = pb::ApplyRequest {
            resources: resources.into_iter().map(Into::into).collect(),
            check_only: mode != ApplyMode::Apply,
            stop_at_first_change: mode == ApplyMode::Probe,
        };
        let host = self.host.clone();
        let limit = self.deadlines.apply;
        let deadline = tokio::time::Instant::now() + limit;
        let call = self.inner.apply(request(message, limit));
        let stream = within(&self.host, "Apply", self.deadlines.call, call).await?;
        let events = stream.into_inner().map({
            let host = host.clone();
            move |item| {
                let event = item.map_err(|s| status_error(&host, "Apply", s))?;
                ApplyEvent::try_from(event)
                    .with_context(|| format!("invalid Apply event from the agent on {host}"))
            }
        });
        // Dropping the stream at the deadline tells the agent, which skips the rest of the batch.
        Ok(until(events, deadline, move || {
            deadline_error(&host, "Apply", limit)
        }))
    }

    /// `Apply`, collected: every resource event and the summary.
    pub async fn apply(
        &mut self,
        resources: Vec<ResourceSpec>,
        mode: ApplyMode,
    ) -> anyhow::Result<ApplyResult> {
        let mut stream = std::pin::pin!(self.apply_stream(resources, mode).await?);
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
        let limit = command.timeout.unwrap_or(EXEC_DEFAULT_TIMEOUT) + self.deadlines.exec_margin;
        let message = pb::ExecRequest {
            argv: command.argv,
            env: command
                .env
                .into_iter()
                .map(|(name, value)| pb::EnvVar { name, value })
                .collect(),
            run_as: command.run_as,
            stdin: command.stdin,
            cwd: command.cwd,
            timeout_secs: command
                .timeout
                .map(|t| u32::try_from(t.as_secs().max(1)).unwrap_or(u32::MAX)),
        };
        let host = self.host.clone();
        let deadline = tokio::time::Instant::now() + limit;
        let call = self.inner.exec(request(message, limit));
        let stream = within(&self.host, "Exec", self.deadlines.call, call).await?;
        let outputs = stream.into_inner().map({
            let host = host.clone();
            move |item| {
                let output = item.map_err(|s| status_error(&host, "Exec", s))?.output;
                match output {
                    Some(pb::exec_output::Output::Stdout(b)) => Ok(ExecOutput::Stdout(b)),
                    Some(pb::exec_output::Output::Stderr(b)) => Ok(ExecOutput::Stderr(b)),
                    Some(pb::exec_output::Output::ExitCode(c)) => Ok(ExecOutput::ExitCode(c)),
                    None => bail!("empty Exec output from the agent on {host}"),
                }
            }
        });
        Ok(until(outputs, deadline, move || {
            deadline_error(&host, "Exec", limit)
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

    /// `Health`: the agent's latest round of checks (a fresh one with `refresh`). An agent
    /// without a health spec checks itself and, when `data_dir` is given, the Postgres instance
    /// there on `port`.
    pub async fn health(
        &mut self,
        data_dir: Option<&str>,
        port: u16,
        refresh: bool,
    ) -> anyhow::Result<HealthReport> {
        let message = pb::HealthRequest {
            data_dir: data_dir.unwrap_or_default().to_string(),
            port: port.into(),
            refresh,
            request_only: false,
        };
        let limit = self.deadlines.facts;
        let call = self.inner.health(request(message, limit));
        let report = within(&self.host, "Health", limit, call).await?;
        HealthReport::try_from(report.into_inner())
            .with_context(|| format!("invalid Health report from the agent on {}", self.host))
    }

    /// Asks the agent for a fresh round of its scheduled health checks and waits for it (at
    /// most its own bound), after a command changed what they report: a backup, a restore
    /// drill, a switchover. `status` right after then reads the new state, not the cached one.
    pub async fn recheck_health(&mut self) -> anyhow::Result<()> {
        self.health(None, 5432, true).await.map(|_| ())
    }

    /// Asks the agent for a round of its health checks soon, without waiting for it: a
    /// `Health` call after this one waits for that round.
    pub async fn request_health_round(&mut self) -> anyhow::Result<()> {
        let message = pb::HealthRequest {
            request_only: true,
            ..Default::default()
        };
        let limit = self.deadlines.facts;
        let call = self.inner.health(request(message, limit));
        within(&self.host, "Health", limit, call).await.map(|_| ())
    }

    /// Tells the agent every file its package repository must hold (it removes the others
    /// unless `check_only`); returns its directory and the files it lacks.
    pub async fn repo_sync(
        &mut self,
        files: Vec<pb::RepoFile>,
        check_only: bool,
    ) -> anyhow::Result<pb::RepoSyncResponse> {
        let message = pb::RepoSyncRequest { files, check_only };
        // The agent may hash a whole repository it has not seen since it started.
        let limit = self.deadlines.facts;
        let call = self.inner.repo_sync(request(message, limit));
        Ok(within(&self.host, "RepoSync", limit, call)
            .await?
            .into_inner())
    }

    /// Sends one file of the package repository, in chunks well below gRPC's message limit.
    pub async fn repo_put(&mut self, file: pb::RepoFile, content: Vec<u8>) -> anyhow::Result<()> {
        const CHUNK: usize = 1 << 20;
        let header = pb::RepoChunk {
            part: Some(pb::repo_chunk::Part::Header(file)),
        };
        let data: Vec<pb::RepoChunk> = content
            .chunks(CHUNK)
            .map(|c| pb::RepoChunk {
                part: Some(pb::repo_chunk::Part::Data(c.to_vec())),
            })
            .collect();
        let chunks = futures_util::stream::iter(std::iter::once(header).chain(data));
        let limit = self.deadlines.apply;
        let call = self.inner.repo_put(request(chunks, limit));
        within(&self.host, "RepoPut", limit, call).await?;
        Ok(())
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
            r#"agent on kinetic speaks protocol 7, controller speaks 2: re-deploy to replace it"#
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
