//! The agent's gRPC server, in two phases on one listening socket:
//!
//! 1. Not enrolled: only the `Enrol` service, TLS with the self-signed certificate of the agent's key.
//! 2. Enrolled: only the `Agent` service, mutual TLS; every RPC first passes [`controller_only`].
//!
//! After a successful `InstallCertificate` the server drains the enrolment phase and switches to phase 2 in
//! process, on the same socket (no restart, no rebind). A successful `InstallRenewal` restarts phase 2 the
//! same way with the new key and certificate (the health checks and `/metrics` keep running and follow). Errors become `tonic::Status` in one place, the
//! `RpcError` section at the end of this file.
//!
//! The listener is bounded ([`Limits`]): a TLS handshake must finish within a timeout, at most so many
//! connections are served at once (further ones wait in the kernel's backlog), and accepted connections
//! use TCP keepalive (plus HTTP/2 pings) so a vanished controller is noticed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};
use tpa_common::event::BatchSummary;
use tpa_common::query::SqlQuery;
use tpa_common::resource::ResourceSpec;
use tpa_proto::pb::agent_server::{Agent, AgentServer};
use tpa_proto::pb::enrol_server::{Enrol, EnrolServer};
use tpa_proto::{ApplyEvent, HealthReport, PROTOCOL_VERSION, pb};
use tracing::Instrument as _;

use crate::config::AgentConfig;
use crate::enrol::{EnrolError, Enrolment};
use crate::exec::{self, ExecChunk, ExecError, ExecSpec};
use crate::renew::{RenewError, Renewal};
use crate::repo::{self, RepoError, RepoFile, Upload};
use crate::resource::run::Timeouts;
use crate::resource::{BatchOptions, ResourceError};
use crate::server_key::{ServerKeyError, ServerKeyRequest};
use crate::tls::{self, AgentCert, AgentKey, PeerError, StateFiles, TlsError};
use crate::trust::TrustError;

/// This agent's version, reported by `Hello`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the enrolment phase may take to drain after the certificate is installed before the switch to
/// mutual TLS goes ahead anyway (a client holding its connection open must not block it).
const ENROLMENT_DRAIN: Duration = Duration::from_secs(5);
/// The same after `InstallRenewal`, before the agent service restarts with the new certificate.
const RENEWAL_DRAIN: Duration = Duration::from_secs(5);

/// Bounds of the listener. [`Limits::default`] is what `tpa-agent serve` uses; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A client that has not finished its TLS handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Connections served at once; further ones wait, unaccepted, in the kernel's backlog.
    pub max_connections: usize,
    /// Idle time before TCP keepalive probes, and the interval of HTTP/2 pings.
    pub keepalive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 32,
            keepalive: Duration::from_secs(60),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}; run `tpa-agent init` (the controller's bootstrap does) before `tpa-agent serve`")]
    NotInitialised(#[source] TlsError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves on `listener` until `shutdown` completes: the enrolment phase first if the agent has no valid
/// certificate, then the agent service over mutual TLS. With the default [`Limits`] and [`Timeouts`].
pub async fn serve(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(
        config,
        listener,
        Limits::default(),
        Timeouts::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with explicit listener limits and tool time limits.
pub async fn serve_with(
    config: AgentConfig,
    listener: TcpListener,
    limits: Limits,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let files = StateFiles::new(&config.state_dir);
    let ca_pem = files.read(&files.ca).map_err(ServeError::NotInitialised)?;
    if files.key.exists() {
        crate::renew::recover(&files, &ca_pem, &config.name)?;
    }
    let key = AgentKey::load(&files).map_err(ServeError::NotInitialised)?;
    let listener = Arc::new(Listener {
        socket: listener,
        slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        limits,
    });
    let shutdown = shutdown.boxed().shared();

    let mut cert = match installed_cert(&config, &files, &ca_pem, &key) {
        Some(cert) => cert,
        None => match serve_enrolment(&config, &files, key, &listener, shutdown.clone()).await? {
            Some(cert) => cert,
            None => return Ok(()),
        },
    };
    let mut key = AgentKey::load(&files)?;
    // Started once: a renewal updates what they read instead of starting them again.
    let not_after = Arc::new(AtomicI64::new(cert.not_after));
    let health = crate::health::schedule::start(config.health_spec.clone(), not_after.clone());
    let (metrics_tls, metrics_tls_rx) = watch::channel(metrics_material(&key, &cert, &ca_pem));
    crate::health::serve::start(health.clone(), config.listen.ip(), metrics_tls_rx);
    let mut agent = AgentPhase {
        config,
        files,
        ca_pem,
        listener,
        timeouts,
        health,
        not_after,
    };
    loop {
        match serve_agent(&agent, &key, &cert, shutdown.clone()).await? {
            None => return Ok(()),
            Some(Restart::Renewed(renewed)) => {
                key = AgentKey::load(&agent.files)?;
                cert = renewed;
                agent.not_after.store(cert.not_after, Ordering::SeqCst);
                metrics_tls.send_replace(metrics_material(&key, &cert, &agent.ca_pem));
            }
            Some(Restart::Trust) => {
                agent.ca_pem = agent.files.read(&agent.files.ca)?;
                metrics_tls.send_replace(metrics_material(&key, &cert, &agent.ca_pem));
            }
        }
    }
}

/// What `/metrics` over TLS presents and trusts.
fn metrics_material(
    key: &AgentKey,
    cert: &AgentCert,
    ca_pem: &str,
) -> crate::health::serve::TlsMaterial {
    crate::health::serve::TlsMaterial {
        cert_pem: cert.cert_pem.clone(),
        key_pem: key.private_pem(),
        ca_pem: ca_pem.to_string(),
    }
}

/// The installed certificate, if it is still valid for this key, name and CA.
fn installed_cert(
    config: &AgentConfig,
    files: &StateFiles,
    ca_pem: &str,
    key: &AgentKey,
) -> Option<AgentCert> {
    if !files.cert.exists() {
        return None;
    }
    let checked = files
        .read(&files.cert)
        .and_then(|pem| tls::verify_agent_cert(&pem, ca_pem, &config.name, key));
    match checked {
        Ok(cert) => Some(cert),
        Err(error) => {
            tracing::warn!(%error, "the installed certificate is not usable; serving enrolment only");
            None
        }
    }
}

/// Phase 1. Returns the installed certificate, or None when `shutdown` came first.
async fn serve_enrolment(
    config: &AgentConfig,
    files: &StateFiles,
    key: AgentKey,
    listener: &Arc<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<AgentCert>, ServeError> {
    let self_signed = key.self_signed_cert(&config.name, &config.sans)?;
    let tls_config =
        tls::enrolment_tls(&key, &self_signed).timeout(listener.limits.handshake_timeout);
    tracing::info!(
        listen = %local_addr(&listener.socket), fingerprint = %key.fingerprint(),
        "not enrolled: serving enrolment only"
    );
    let (done_tx, done_rx) = watch::channel(None);
    let service = EnrolRpc {
        enrolment: Arc::new(Enrolment::new(config.clone(), files.clone(), key)),
        done: done_tx,
    };
    let mut enrolled = done_rx.clone();
    let stop = futures_util::future::select(
        Box::pin(shutdown),
        Box::pin(async move {
            let _ = enrolled.wait_for(Option::is_some).await;
        }),
    )
    .map(|_| ());
    let server = server_builder(&listener.limits)
        .tls_config(tls_config)?
        .add_service(EnrolServer::new(service))
        .serve_with_incoming_shutdown(incoming(listener.clone()), stop);
    let mut drained = done_rx.clone();
    tokio::select! {
        result = server => result?,
        _ = async move {
            let _ = drained.wait_for(Option::is_some).await;
            tokio::time::sleep(ENROLMENT_DRAIN).await;
        } => tracing::warn!("enrolment connections still open; switching to mutual TLS anyway"),
    }
    let cert = done_rx.borrow().clone();
    Ok(cert)
}

/// What phase 2 keeps across renewals.
struct AgentPhase {
    config: AgentConfig,
    files: StateFiles,
    ca_pem: String,
    listener: Arc<Listener>,
    timeouts: Timeouts,
    health: crate::health::schedule::Health,
    /// Expiry of the certificate being served (Unix seconds), for the health checks.
    not_after: Arc<AtomicI64>,
}

/// Why phase 2 restarts in process.
#[derive(Debug, Clone)]
enum Restart {
    /// A renewal installed this certificate (and its key).
    Renewed(AgentCert),
    /// `InstallTrust` replaced `ca.crt`.
    Trust,
}

/// Phase 2: the agent service over mutual TLS with `key` and `cert`, until `shutdown` (None) or until a
/// renewal or a new trust set asks for a restart: the caller then serves again with what changed.
async fn serve_agent(
    phase: &AgentPhase,
    key: &AgentKey,
    cert: &AgentCert,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<Restart>, ServeError> {
    let listener = &phase.listener;
    tracing::info!(
        listen = %local_addr(&listener.socket), name = %phase.config.name, not_after = cert.not_after,
        "enrolled: serving the agent over mutual TLS"
    );
    let (restart_tx, restart_rx) = watch::channel(None);
    let service = AgentRpc {
        config: phase.config.clone(),
        cert_pem: cert.cert_pem.clone(),
        cert_not_after: phase.not_after.clone(),
        apply_lock: Arc::new(Mutex::new(())),
        timeouts: phase.timeouts,
        health: phase.health.clone(),
        renewal: Arc::new(Renewal::new(phase.config.clone(), phase.files.clone())),
        files: phase.files.clone(),
        trusted_ca_pem: phase.ca_pem.clone(),
        restart: restart_tx,
    };
    let mut restart = restart_rx.clone();
    let stop = futures_util::future::select(
        Box::pin(shutdown),
        Box::pin(async move {
            let _ = restart.wait_for(Option::is_some).await;
        }),
    )
    .map(|_| ());
    let tls_config = tls::mutual_tls(key, &cert.cert_pem, &phase.ca_pem)
        .timeout(listener.limits.handshake_timeout);
    let server = server_builder(&listener.limits)
        .tls_config(tls_config)?
        .add_service(AgentServer::with_interceptor(service, controller_only))
        .serve_with_incoming_shutdown(incoming(listener.clone()), stop);
    // Before a restart, open connections (the calling controller's among them) get a few seconds to finish.
    let mut drained = restart_rx.clone();
    tokio::select! {
        result = server => result?,
        _ = async move {
            let _ = drained.wait_for(Option::is_some).await;
            tokio::time::sleep(RENEWAL_DRAIN).await;
        } => tracing::warn!("connections still open after a renewal or a new trust set; restarting anyway"),
    }
    let restart = restart_rx.borrow().clone();
    Ok(restart)
}

/// HTTP/2 pings on every connection, so a controller that vanished is noticed.
fn server_builder(limits: &Limits) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// The listening socket shared by both phases, with its bounds.
struct Listener {
    socket: TcpListener,
    /// One permit per connection being served.
    slots: Arc<Semaphore>,
    limits: Limits,
}

/// Accepted connections: each holds a connection slot until it closes, and uses TCP keepalive.
fn incoming(
    listener: Arc<Listener>,
) -> impl tokio_stream::Stream<Item = std::io::Result<Connection>> {
    futures_util::stream::unfold(listener, |listener| async move {
        // Wait for a free slot before accepting: extra connections stay in the backlog.
        let Ok(slot) = listener.slots.clone().acquire_owned().await else {
            return None;
        };
        let accepted = listener
            .socket
            .accept()
            .await
            .and_then(|(stream, _)| Connection::new(stream, slot, &listener.limits));
        Some((accepted, listener))
    })
}

/// An accepted TCP connection holding one of the listener's connection slots.
struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        limits: &Limits,
    ) -> std::io::Result<Connection> {
        keepalive(&stream, limits.keepalive)?;
        // Sockets from our own listener do not get tonic's TCP_NODELAY: without it, Nagle's
        // algorithm and the peer's delayed ACK hold small replies (an Apply's last events)
        // for up to 40 ms, on every call.
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            _slot: slot,
        })
    }
}

/// TCP keepalive: probes after `idle`, every 10 s, 6 of them.
fn keepalive(stream: &TcpStream, idle: Duration) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

fn local_addr(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Every `Agent` RPC passes here first: the TLS layer already verified the client certificate against the
/// cluster CA; this accepts only the controller's identity among those.
fn controller_only(request: Request<()>) -> Result<Request<()>, Status> {
    let certs = request.peer_certs();
    if let Err(error) = tls::check_controller(certs.as_deref().map(Vec::as_slice)) {
        tracing::warn!(peer = ?request.remote_addr(), %error, "refused an RPC");
        return Err(RpcError::Peer(error).into());
    }
    Ok(request)
}

// === Enrol service ===

struct EnrolRpc {
    enrolment: Arc<Enrolment>,
    /// Set once the certificate is installed: ends phase 1.
    done: watch::Sender<Option<AgentCert>>,
}

#[tonic::async_trait]
impl Enrol for EnrolRpc {
    #[tracing::instrument(name = "rpc.request_csr", skip_all, fields(peer = ?request.remote_addr()))]
    async fn request_csr(
        &self,
        request: Request<pb::RequestCsrRequest>,
    ) -> Result<Response<pb::RequestCsrResponse>, Status> {
        let csr_pem = self
            .enrolment
            .request_csr(&request.get_ref().token)
            .map_err(RpcError::Enrol)?;
        Ok(Response::new(pb::RequestCsrResponse {
            csr_pem,
            agent_version: AGENT_VERSION.to_string(),
            protocol_version: PROTOCOL_VERSION,
        }))
    }

    #[tracing::instrument(name = "rpc.install_certificate", skip_all, fields(peer = ?request.remote_addr()))]
    async fn install_certificate(
        &self,
        request: Request<pb::InstallCertificateRequest>,
    ) -> Result<Response<pb::InstallCertificateResponse>, Status> {
        let request = request.into_inner();
        let cert = self
            .enrolment
            .install_certificate(&request.token, &request.cert_pem)
            .await
            .map_err(RpcError::Enrol)?;
        self.done.send_replace(Some(cert));
        Ok(Response::new(pb::InstallCertificateResponse {}))
    }
}

// === Agent service ===

struct AgentRpc {
    config: AgentConfig,
    /// The certificate served, for Hello.
    cert_pem: String,
    /// Expiry of the agent's certificate (Unix seconds), for the health check.
    cert_not_after: Arc<AtomicI64>,
    /// One Apply batch at a time: two concurrent batches would race on apt, files and services.
    apply_lock: Arc<Mutex<()>>,
    /// Time limits of the tools the agent runs.
    timeouts: Timeouts,
    /// The scheduled health checks' latest round.
    health: crate::health::schedule::Health,
    /// RenewCsr / InstallRenewal.
    renewal: Arc<Renewal>,
    /// The state directory, for InstallTrust.
    files: StateFiles,
    /// The CA certificates trusted (`ca.crt`), for Hello.
    trusted_ca_pem: String,
    /// Set once a renewed certificate or a new trust set is installed: the service restarts with it.
    restart: watch::Sender<Option<Restart>>,
}

type RpcStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentRpc {
    #[tracing::instrument(name = "rpc.hello", skip_all)]
    async fn hello(
        &self,
        _request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        // Hashing reads the file: off the async threads (cached while the file is unchanged).
        let binary_sha256 = tokio::task::spawn_blocking(crate::binary::own_sha256)
            .await
            .unwrap_or_default();
        Ok(Response::new(pb::HelloResponse {
            agent_version: AGENT_VERSION.to_string(),
            protocol_version: PROTOCOL_VERSION,
            host_name: self.config.name.clone(),
            binary_sha256,
            cert_pem: self.cert_pem.clone(),
            trusted_ca_pem: self.trusted_ca_pem.clone(),
        }))
    }

    #[tracing::instrument(name = "rpc.facts", skip_all, fields(data_dir = %request.get_ref().data_dir))]
    async fn facts(
        &self,
        request: Request<pb::FactsRequest>,
    ) -> Result<Response<pb::Facts>, Status> {
        let request = request.into_inner();
        let port = postgres_port(request.port)?;
        let facts = crate::facts::gather(non_empty(request.data_dir), port).await;
        Ok(Response::new(facts.into()))
    }

    type ApplyStream = RpcStream<pb::ApplyEvent>;

    #[tracing::instrument(
        name = "rpc.apply", skip_all,
        fields(resources = request.get_ref().resources.len(), check_only = request.get_ref().check_only)
    )]
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        let request = request.into_inner();
        let resources = request
            .resources
            .into_iter()
            .map(ResourceSpec::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RpcError::BadRequest(e.to_string()))?;
        let options = BatchOptions {
            check_only: request.check_only,
            stop_at_first_change: request.stop_at_first_change,
            timeouts: self.timeouts,
        };
        let lock = self.apply_lock.clone();
        let health = self.health.clone();
        let check_only = request.check_only;
        let (out_tx, out_rx) = mpsc::channel(32);
        tokio::spawn(
            async move {
                let _one_batch_at_a_time = lock.lock_owned().await;
                if out_tx.is_closed() {
                    tracing::warn!("the controller went away while the batch waited for the previous one: not started");
                    return;
                }
                let count = resources.len();
                let (events_tx, events_rx) = mpsc::channel(16);
                let batch =
                    tokio::spawn(crate::resource::apply_batch(resources, options, events_tx));
                forward_until_hang_up(events_rx, &out_tx).await;
                let summary = batch.await.unwrap_or_else(|error| {
                    tracing::error!(%error, "the resource batch ended abnormally");
                    BatchSummary {
                        failed: u32::try_from(count).unwrap_or(u32::MAX),
                        ..BatchSummary::default()
                    }
                });
                tracing::info!(?summary, "batch done");
                // What was applied may change what is checked, or how it fares; a batch that
                // changed nothing leaves the latest round as true as it was.
                if !check_only && summary.changed > 0 {
                    health.request();
                }
                let _ = out_tx.send(Ok(ApplyEvent::Summary(summary).into())).await;
            }
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    #[tracing::instrument(name = "rpc.query", skip_all)]
    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let query = SqlQuery::try_from(request.into_inner())
            .map_err(|e| RpcError::BadRequest(e.to_string()))?;
        // The text is logged only when it is not secret.
        tracing::info!(
            database = %query.database, port = query.port, run_as = %query.run_as,
            sql = query.sql.shown().unwrap_or("<secret>"), "query"
        );
        let timeouts = self.timeouts;
        let rows = tokio::task::spawn_blocking(move || crate::query::run(&query, &timeouts))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(RpcError::Query)?;
        Ok(Response::new(rows.into()))
    }

    #[tracing::instrument(name = "rpc.server_key", skip_all, fields(key_path = %request.get_ref().key_path))]
    async fn server_key(
        &self,
        request: Request<pb::ServerKeyRequest>,
    ) -> Result<Response<pb::ServerKeyResponse>, Status> {
        let request = request.into_inner();
        let request = ServerKeyRequest {
            key_path: request.key_path,
            cert_path: request.cert_path,
            create: request.create,
            csr_common_name: request.csr_common_name,
        };
        let key = tokio::task::spawn_blocking(move || crate::server_key::server_key(&request))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(RpcError::ServerKey)?;
        Ok(Response::new(pb::ServerKeyResponse {
            public_key_pem: key.public_key_pem.unwrap_or_default(),
            cert_pem: key.cert_pem,
            csr_pem: key.csr_pem,
        }))
    }

    type ExecStream = RpcStream<pb::ExecOutput>;

    // The full argv, with env values masked, is logged by `exec::spawn`.
    #[tracing::instrument(name = "rpc.exec", skip_all)]
    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let request = request.into_inner();
        let spec = ExecSpec {
            argv: request.argv,
            env: request.env.into_iter().map(|e| (e.name, e.value)).collect(),
            run_as: request.run_as,
            stdin: request.stdin,
            cwd: request.cwd,
            timeout: request
                .timeout_secs
                .map(|secs| Duration::from_secs(secs.into())),
        };
        let chunks = exec::spawn(spec).map_err(RpcError::Exec)?;
        let stream = ReceiverStream::new(chunks).map(|chunk| {
            let output = match chunk {
                ExecChunk::Stdout(bytes) => pb::exec_output::Output::Stdout(bytes),
                ExecChunk::Stderr(bytes) => pb::exec_output::Output::Stderr(bytes),
                ExecChunk::Exit(code) => pb::exec_output::Output::ExitCode(code),
                ExecChunk::TimedOut(after) => {
                    return Err(Status::deadline_exceeded(format!(
                        "the command did not finish within {} and was killed with its process group",
                        crate::resource::seconds(after)
                    )));
                }
            };
            Ok(pb::ExecOutput {
                output: Some(output),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "rpc.health", skip_all, fields(data_dir = %request.get_ref().data_dir))]
    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthReport>, Status> {
        let request = request.into_inner();
        let port = postgres_port(request.port)?;
        if request.request_only {
            self.health.request();
            return Ok(Response::new(pb::HealthReport::default()));
        }
        let round = self.health.report(request.refresh).await;
        if let Some(report) = round.report.filter(|_| round.has_spec) {
            return Ok(Response::new(report.into()));
        }
        // No health spec yet (deploy has not reached this host): checked for this request.
        let data_dir = non_empty(request.data_dir);
        let facts = crate::facts::gather(data_dir.clone(), port).await;
        let now = crate::health::schedule::unix_now();
        let not_after = self.cert_not_after.load(Ordering::SeqCst);
        let checks = crate::health::evaluate(&facts, data_dir.as_deref(), not_after, now);
        let report = HealthReport {
            status: tpa_common::health::overall(&checks),
            checks,
            checked_at: 0,
            details: Default::default(),
        };
        Ok(Response::new(report.into()))
    }

    #[tracing::instrument(name = "rpc.repo_sync", skip_all, fields(files = request.get_ref().files.len()))]
    async fn repo_sync(
        &self,
        request: Request<pb::RepoSyncRequest>,
    ) -> Result<Response<pb::RepoSyncResponse>, Status> {
        let request = request.into_inner();
        let files: Vec<RepoFile> = request.files.into_iter().map(repo_file).collect();
        let dir = std::path::PathBuf::from(repo::REPO_DIR);
        let report =
            tokio::task::spawn_blocking(move || repo::sync(&dir, &files, request.check_only))
                .await
                .map_err(|e| RpcError::Internal(e.to_string()))?
                .map_err(RpcError::Repo)?;
        tracing::info!(
            missing = report.missing.len(),
            removed = report.removed.len(),
            "repository synced"
        );
        Ok(Response::new(pb::RepoSyncResponse {
            dir: repo::REPO_DIR.to_string(),
            missing: report.missing,
            removed: report.removed,
        }))
    }

    #[tracing::instrument(name = "rpc.repo_put", skip_all)]
    async fn repo_put(
        &self,
        request: Request<tonic::Streaming<pb::RepoChunk>>,
    ) -> Result<Response<pb::RepoPutResponse>, Status> {
        let mut chunks = request.into_inner();
        let header = match chunks.message().await? {
            Some(pb::RepoChunk {
                part: Some(pb::repo_chunk::Part::Header(header)),
            }) => repo_file(header),
            _ => {
                return Err(RpcError::BadRequest(
                    "RepoPut must start with the file's header".into(),
                )
                .into());
            }
        };
        let name = header.name.clone();
        let mut upload =
            Upload::start(std::path::Path::new(repo::REPO_DIR), header).map_err(RpcError::Repo)?;
        while let Some(chunk) = chunks.message().await? {
            match chunk.part {
                Some(pb::repo_chunk::Part::Data(data)) => {
                    upload.write(&data).map_err(RpcError::Repo)?;
                }
                _ => {
                    return Err(
                        RpcError::BadRequest("RepoPut takes one header, then data".into()).into(),
                    );
                }
            }
        }
        tokio::task::spawn_blocking(move || upload.finish())
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(RpcError::Repo)?;
        tracing::info!(%name, "repository file written");
        Ok(Response::new(pb::RepoPutResponse {}))
    }

    #[tracing::instrument(name = "rpc.renew_csr", skip_all)]
    async fn renew_csr(
        &self,
        _request: Request<pb::RenewCsrRequest>,
    ) -> Result<Response<pb::RenewCsrResponse>, Status> {
        if self.restart.borrow().is_some() {
            return Err(RpcError::Renewing.into());
        }
        let csr_pem = self.renewal.csr().await.map_err(RpcError::Renew)?;
        Ok(Response::new(pb::RenewCsrResponse { csr_pem }))
    }

    #[tracing::instrument(name = "rpc.install_renewal", skip_all)]
    async fn install_renewal(
        &self,
        request: Request<pb::InstallRenewalRequest>,
    ) -> Result<Response<pb::InstallRenewalResponse>, Status> {
        if self.restart.borrow().is_some() {
            return Err(RpcError::Renewing.into());
        }
        let cert = self
            .renewal
            .install(&request.get_ref().cert_pem)
            .await
            .map_err(RpcError::Renew)?;
        let not_after = cert.not_after;
        // Ends this phase once the answer is out; `serve_with` serves again with the new pair.
        self.restart.send_replace(Some(Restart::Renewed(cert)));
        Ok(Response::new(pb::InstallRenewalResponse { not_after }))
    }

    #[tracing::instrument(name = "rpc.install_trust", skip_all)]
    async fn install_trust(
        &self,
        request: Request<pb::InstallTrustRequest>,
    ) -> Result<Response<pb::InstallTrustResponse>, Status> {
        if self.restart.borrow().is_some() {
            return Err(RpcError::Renewing.into());
        }
        let caller = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .ok_or(RpcError::Peer(PeerError::NoCertificate))?;
        let (config, files) = (self.config.clone(), self.files.clone());
        let ca_pem = request.into_inner().ca_pem;
        let changed = tokio::task::spawn_blocking(move || {
            crate::trust::install(&config, &files, &ca_pem, &caller)
        })
        .await
        .map_err(|e| RpcError::Internal(e.to_string()))?
        .map_err(RpcError::Trust)?;
        if changed {
            self.restart.send_replace(Some(Restart::Trust));
        }
        Ok(Response::new(pb::InstallTrustResponse { changed }))
    }
}

fn repo_file(f: pb::RepoFile) -> RepoFile {
    RepoFile {
        name: f.name,
        sha256: f.sha256,
        size: f.size,
    }
}

/// Forwards batch events to the caller until the batch ends or the caller goes away. When the caller
/// goes away, `events` is dropped, which tells the batch to skip the rest (see `resource::apply_batch`).
async fn forward_until_hang_up(
    mut events: mpsc::Receiver<tpa_common::event::ResourceEvent>,
    out: &mpsc::Sender<Result<pb::ApplyEvent, Status>>,
) {
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                if out.send(Ok(ApplyEvent::Resource(event).into())).await.is_err() {
                    break;
                }
            }
            () = out.closed() => break,
        }
    }
    tracing::warn!("the controller went away during Apply: the batch stops at the next resource");
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// The Postgres port of a request: 0 means the default, 5432.
fn postgres_port(port: u32) -> Result<u16, Status> {
    match port {
        0 => Ok(5432),
        p => u16::try_from(p)
            .map_err(|_| RpcError::BadRequest(format!("port {p} is out of range")).into()),
    }
}

// === RpcError: the one place errors become gRPC statuses ===

/// Every error an RPC can return, before it becomes a [`Status`].
#[derive(Debug, thiserror::Error)]
enum RpcError {
    #[error(transparent)]
    Enrol(EnrolError),
    #[error(transparent)]
    Exec(ExecError),
    #[error("only the controller may call this agent: {0}")]
    Peer(PeerError),
    #[error(transparent)]
    Query(ResourceError),
    #[error(transparent)]
    ServerKey(ServerKeyError),
    #[error("package repository: {0}")]
    Repo(RepoError),
    #[error("certificate renewal: {0}")]
    Renew(RenewError),
    #[error("trust set: {0}")]
    Trust(TrustError),
    #[error("a renewed certificate or trust set was just installed; reconnect to use it")]
    Renewing,
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("internal error in the agent: {0}; see its journal (journalctl -u tpa-agent)")]
    Internal(String),
}

impl From<RpcError> for Status {
    fn from(error: RpcError) -> Status {
        let message = error.to_string();
        match &error {
            RpcError::Enrol(
                EnrolError::NoToken | EnrolError::TokenExpired | EnrolError::WrongToken,
            ) => {
                tracing::warn!(%message, "enrolment refused");
                Status::permission_denied(message)
            }
            RpcError::Enrol(EnrolError::BadCertificate(_)) => {
                tracing::warn!(%message, "enrolment refused");
                Status::invalid_argument(message)
            }
            RpcError::Enrol(_) => {
                tracing::error!(%message, "enrolment failed");
                Status::internal(message)
            }
            RpcError::Exec(ExecError::EmptyArgv | ExecError::BadTimeout { .. })
            | RpcError::BadRequest(_)
            | RpcError::Repo(RepoError::BadName(_) | RepoError::BadContent { .. })
            | RpcError::ServerKey(ServerKeyError::NotAbsolute(_)) => {
                Status::invalid_argument(message)
            }
            RpcError::Exec(ExecError::Spawn { .. })
            | RpcError::Query(_)
            | RpcError::Repo(RepoError::Io { .. })
            | RpcError::ServerKey(_) => Status::failed_precondition(message),
            RpcError::Renew(RenewError::BadCertificate(_)) => {
                tracing::warn!(%message, "renewal refused");
                Status::invalid_argument(message)
            }
            RpcError::Renew(RenewError::NothingPending) | RpcError::Renewing => {
                Status::failed_precondition(message)
            }
            RpcError::Trust(TrustError::Tls(_)) => {
                tracing::error!(%message, "installing a trust set failed");
                Status::internal(message)
            }
            RpcError::Trust(_) => {
                tracing::warn!(%message, "trust set refused");
                Status::invalid_argument(message)
            }
            RpcError::Renew(RenewError::Tls(_)) => {
                tracing::error!(%message, "renewal failed");
                Status::internal(message)
            }
            RpcError::Internal(_) => {
                tracing::error!(%message, "internal error");
                Status::internal(message)
            }
            RpcError::Peer(PeerError::NoCertificate) => Status::unauthenticated(message),
            RpcError::Peer(_) => Status::permission_denied(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_errors_are_permission_denied() {
        for error in [
            EnrolError::NoToken,
            EnrolError::TokenExpired,
            EnrolError::WrongToken,
        ] {
            assert_eq!(
                Status::from(RpcError::Enrol(error)).code(),
                tonic::Code::PermissionDenied
            );
        }
        let peer = Status::from(RpcError::Peer(PeerError::NotController("kinetic".into())));
        assert_eq!(peer.code(), tonic::Code::PermissionDenied);
        assert!(
            peer.message()
                .contains("\"kinetic\" is not the controller's"),
            "{}",
            peer.message()
        );
        assert_eq!(
            Status::from(RpcError::Peer(PeerError::NoCertificate)).code(),
            tonic::Code::Unauthenticated
        );
    }

    #[tokio::test]
    async fn accepted_connections_use_tcp_keepalive_and_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let slot = Arc::new(Semaphore::new(1))
            .acquire_owned()
            .await
            .expect("slot");
        let limits = Limits {
            keepalive: Duration::from_secs(45),
            ..Limits::default()
        };
        let connection = Connection::new(stream, slot, &limits).expect("connection");
        let socket = socket2::SockRef::from(&connection.stream);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(45)
        );
        assert!(connection.stream.nodelay().expect("TCP_NODELAY"));
    }

    #[test]
    fn ports() {
        assert_eq!(postgres_port(0).expect("default"), 5432);
        assert_eq!(postgres_port(5444).expect("given"), 5444);
        assert_eq!(
            postgres_port(70000).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
