//! End-to-end tests of the agent's gRPC server and the controller's client, in process, over real TLS on
//! 127.0.0.1 (no Docker): enrolment with a pinned key and a join token, the mutual-TLS identity checks, the
//! protocol version check, and the Apply / Exec / Facts / Health RPCs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};
use tpa_agent::config::AgentConfig;
use tpa_agent::enrol::{self, EnrolError, Enrolment, InitArgs};
use tpa_agent::server::{self, ServeError};
use tpa_agent::tls::{AgentKey, StateFiles};
use tpa_common::event::Outcome;
use tpa_common::health::HealthStatus;
use tpa_common::resource::{Resource, ResourceSpec};
use tpa_controller::agent_client::{self, ExecCommand, InitOutcome, JoinToken, TOKEN_LIFETIME};
use tpa_controller::pki::{CertUsage, CertifiedKey, Pki};
use tpa_proto::pb;

const HOST: &str = "kinetic";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The controller's side: a cluster directory with its CA and identity.
struct Controller {
    /// Holds the cluster directory (tls/) for the test's duration.
    _dir: tempfile::TempDir,
    pki: Pki,
    identity: CertifiedKey,
}

fn controller() -> Controller {
    let dir = tempfile::tempdir().expect("tempdir");
    // Named after its directory, so that two test CAs never share a name.
    let pki = Pki::generate(&format!("test CA {}", dir.path().display())).expect("CA");
    let identity = pki
        .issue_controller_identity()
        .expect("controller identity");
    Controller {
        _dir: dir,
        pki,
        identity,
    }
}

/// An agent after `tpa-agent init`, serving on 127.0.0.1 in a background task.
struct Agent {
    state: tempfile::TempDir,
    args: InitArgs,
    addr: SocketAddr,
    fingerprint: String,
    token: JoinToken,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Agent {
    fn files(&self) -> StateFiles {
        StateFiles::new(&self.args.state_dir)
    }

    async fn shutdown(self) {
        self.shutdown_keep_state().await;
    }

    /// Stops the server and hands back the agent with its state directory intact.
    async fn shutdown_keep_state(mut self) -> Agent {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("stops")
                .expect("joins");
            result.expect("serve ends cleanly");
        }
        self
    }
}

fn init_args(state: &Path) -> InitArgs {
    InitArgs {
        name: HOST.into(),
        sans: vec![LOCALHOST.to_string()],
        listen: SocketAddr::from((LOCALHOST, 0)),
        config_path: state.join("etc/agent.toml"),
        state_dir: state.join("lib"),
    }
}

/// Runs `tpa-agent init` with the controller's init document, as bootstrap does over SSH.
fn init(
    controller: &Controller,
    args: &InitArgs,
    token: &JoinToken,
    lifetime: Duration,
) -> InitOutcome {
    let document = agent_client::init_document(controller.pki.ca_cert_pem(), token, lifetime);
    let outcome = enrol::init(args, document.as_bytes()).expect("init");
    // What init prints is what the controller parses.
    agent_client::parse_init_output(HOST, &outcome.to_string())
        .expect("controller parses init output")
}

async fn start(
    args: InitArgs,
    state: tempfile::TempDir,
    fingerprint: String,
    token: JoinToken,
) -> Agent {
    let config = AgentConfig::load(&args.config_path).expect("config");
    let listener = TcpListener::bind(args.listen).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    Agent {
        state,
        args,
        addr,
        fingerprint,
        token,
        stop: Some(stop),
        task: Some(task),
    }
}

/// init + serve, not yet enrolled.
async fn pending_agent(controller: &Controller) -> Agent {
    let state = tempfile::tempdir().expect("tempdir");
    let args = init_args(state.path());
    let token = JoinToken::generate();
    let InitOutcome::Pending { fingerprint } = init(controller, &args, &token, TOKEN_LIFETIME)
    else {
        panic!("a fresh agent is pending")
    };
    start(args, state, fingerprint, token).await
}

async fn enrol(controller: &Controller, agent: &Agent, token: &JoinToken) -> anyhow::Result<()> {
    agent_client::enrol(
        agent.addr,
        &agent.fingerprint,
        token,
        &controller.pki,
        &[HOST.into()],
        &[LOCALHOST],
    )
    .await
}

async fn connect(
    controller: &Controller,
    agent: &Agent,
) -> anyhow::Result<agent_client::AgentClient> {
    agent_client::connect(
        agent.addr,
        HOST,
        controller.pki.ca_cert_pem(),
        &controller.identity,
    )
    .await
}

/// An enrolled agent and a connected client.
async fn enrolled_agent(controller: &Controller) -> (Agent, agent_client::AgentClient) {
    let agent = pending_agent(controller).await;
    enrol(controller, &agent, &agent.token.clone())
        .await
        .expect("enrol");
    let client = connect(controller, &agent).await.expect("connect");
    (agent, client)
}

fn error_text(result: anyhow::Result<impl Sized>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn enrolment_end_to_end_then_mutual_tls() {
    let controller = controller();
    let agent = pending_agent(&controller).await;
    let files = agent.files();
    assert!(files.token.exists() && !files.cert.exists());

    // Before enrolment the Agent service is not served at all.
    let early = error_text(connect(&controller, &agent).await);
    assert!(
        early.contains("cannot connect") && early.contains("UnknownIssuer"),
        "{early}"
    );

    enrol(&controller, &agent, &agent.token.clone())
        .await
        .expect("enrol");
    assert!(files.cert.exists(), "certificate installed");
    assert!(!files.token.exists(), "token consumed");

    let mut client = connect(&controller, &agent)
        .await
        .expect("connect over mTLS");
    assert_eq!(client.agent_version(), server::AGENT_VERSION);
    assert_eq!(client.hello().await.expect("hello"), server::AGENT_VERSION);

    // Re-running init with the same CA is a no-op that reports the enrolled key.
    let again = init(
        &controller,
        &agent.args,
        &JoinToken::generate(),
        TOKEN_LIFETIME,
    );
    assert_eq!(
        again,
        InitOutcome::Enrolled {
            fingerprint: agent.fingerprint.clone()
        }
    );
    // Init with another cluster's CA is refused and changes nothing.
    let other = controller_with_other_ca();
    let document = agent_client::init_document(
        other.pki.ca_cert_pem(),
        &JoinToken::generate(),
        TOKEN_LIFETIME,
    );
    let err = enrol::init(&agent.args, document.as_bytes()).unwrap_err();
    assert!(matches!(err, EnrolError::OtherCluster { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&files.ca).expect("ca"),
        controller.pki.ca_cert_pem()
    );

    // A restarted agent comes straight up enrolled.
    let Agent {
        state,
        args,
        fingerprint,
        token,
        ..
    } = agent.shutdown_keep_state().await;
    let restarted = start(args, state, fingerprint, token).await;
    connect(&controller, &restarted)
        .await
        .expect("restarted agent serves mTLS");
    restarted.shutdown().await;
}

fn controller_with_other_ca() -> Controller {
    controller()
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let controller = controller();
    let (agent, _client) = enrolled_agent(&controller).await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            controller.pki.ca_cert_pem(),
        ))
        .domain_name(HOST);
    let result = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", agent.addr))?
            .tls_config(tls)?
            .connect()
            .await?;
        let mut client = pb::agent_client::AgentClient::new(channel);
        anyhow::Ok(client.hello(pb::HelloRequest {}).await?)
    }
    .await;
    let text = error_text(result);
    assert!(
        text.contains("CertificateRequired") || text.contains("certificate required"),
        "{text}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let controller = controller();
    let (agent, _client) = enrolled_agent(&controller).await;
    let other = controller_with_other_ca();
    // Trusts the right CA for the server, but presents a controller identity issued by another CA.
    let impostor = agent_client::connect(
        agent.addr,
        HOST,
        controller.pki.ca_cert_pem(),
        &other.identity,
    )
    .await;
    let text = error_text(impostor);
    assert!(
        text.contains("UnknownCA"),
        "the TLS layer refuses it: {text}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn client_certificate_of_the_right_ca_but_not_the_controller_is_refused() {
    let controller = controller();
    let (agent, _client) = enrolled_agent(&controller).await;

    // A client certificate the cluster CA issued for some host, "mallory".
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["mallory".to_string()]).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mallory");
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let cert_pem = controller
        .pki
        .sign_csr(&csr, &["mallory".into()], &[], CertUsage::Client)
        .expect("signed");
    let mallory = CertifiedKey {
        cert_pem,
        key_pem: key.serialize_pem(),
    };

    let text = error_text(
        agent_client::connect(agent.addr, HOST, controller.pki.ca_cert_pem(), &mallory).await,
    );
    assert!(
        text.contains("PermissionDenied") && text.contains("\"mallory\" is not the controller's"),
        "{text}"
    );

    // The agent's own (server) certificate cannot drive another agent either.
    let host_key = std::fs::read_to_string(agent.files().key).expect("key");
    let host_cert = std::fs::read_to_string(agent.files().cert).expect("cert");
    let as_host = CertifiedKey {
        cert_pem: host_cert,
        key_pem: host_key,
    };
    let as_host = error_text(
        agent_client::connect(agent.addr, HOST, controller.pki.ca_cert_pem(), &as_host).await,
    );
    assert!(
        as_host.contains("UnsupportedCertificate"),
        "a server-only certificate is no client: {as_host}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn wrong_expired_and_reused_tokens_are_refused_and_change_nothing() {
    let controller = controller();
    let agent = pending_agent(&controller).await;
    let files = agent.files();
    let token_before = std::fs::read_to_string(&files.token).expect("token");

    let wrong = error_text(enrol(&controller, &agent, &JoinToken::generate()).await);
    assert!(
        wrong.contains("PermissionDenied") && wrong.contains("wrong join token"),
        "{wrong}"
    );
    assert!(!files.cert.exists());
    assert_eq!(
        std::fs::read_to_string(&files.token).expect("token"),
        token_before
    );

    // The right token still works afterwards: the refusal changed nothing.
    enrol(&controller, &agent, &agent.token.clone())
        .await
        .expect("enrol");
    // Reusing it: the agent no longer serves enrolment at all.
    assert!(
        enrol(&controller, &agent, &agent.token.clone())
            .await
            .is_err()
    );
    agent.shutdown().await;

    // An expired token.
    let state = tempfile::tempdir().expect("tempdir");
    let args = init_args(state.path());
    let token = JoinToken::generate();
    let InitOutcome::Pending { fingerprint } =
        init(&controller, &args, &token, Duration::from_secs(1))
    else {
        panic!("pending")
    };
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = start(args, state, fingerprint, token.clone()).await;
    let text = error_text(enrol(&controller, &expired, &token).await);
    assert!(
        text.contains("PermissionDenied") && text.contains("expired"),
        "{text}"
    );
    assert!(!expired.files().cert.exists());
    expired.shutdown().await;
}

#[tokio::test]
async fn a_token_is_single_use_even_within_enrolment() {
    let controller = controller();
    let state = tempfile::tempdir().expect("tempdir");
    let args = init_args(state.path());
    let token = JoinToken::generate();
    init(&controller, &args, &token, TOKEN_LIFETIME);
    let files = StateFiles::new(&args.state_dir);
    let config = AgentConfig::load(&args.config_path).expect("config");
    let key = AgentKey::load(&files).expect("key");
    let csr = key.csr(HOST, &[]).expect("csr");
    let cert = controller
        .pki
        .sign_csr(&csr, &[HOST.into()], &[LOCALHOST], CertUsage::Server)
        .expect("sign");

    // The token's value only travels inside the init document; take it from there as the agent would.
    let document =
        agent_client::init_document(controller.pki.ca_cert_pem(), &token, TOKEN_LIFETIME);
    let raw: enrol::InitDocument = toml::from_str(&document).expect("document parses");
    let enrolment = Enrolment::new(config, files.clone(), key);
    enrolment
        .install_certificate(&raw.join_token, &cert)
        .await
        .expect("first use");
    let second = enrolment
        .install_certificate(&raw.join_token, &cert)
        .await
        .unwrap_err();
    assert!(matches!(second, EnrolError::NoToken), "{second}");
}

#[tokio::test]
async fn a_certificate_for_another_host_or_key_is_not_installed() {
    let controller = controller();
    let state = tempfile::tempdir().expect("tempdir");
    let args = init_args(state.path());
    let token = JoinToken::generate();
    init(&controller, &args, &token, TOKEN_LIFETIME);
    let files = StateFiles::new(&args.state_dir);
    let config = AgentConfig::load(&args.config_path).expect("config");
    let key = AgentKey::load(&files).expect("key");
    let document =
        agent_client::init_document(controller.pki.ca_cert_pem(), &token, TOKEN_LIFETIME);
    let raw: enrol::InitDocument = toml::from_str(&document).expect("document parses");

    let other_host = controller.pki.sign_csr(
        &key.csr("quirk", &[]).expect("csr"),
        &["quirk".into()],
        &[],
        CertUsage::Server,
    );
    let other_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![]).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, HOST);
    let other_csr = params
        .serialize_request(&other_key)
        .expect("csr")
        .pem()
        .expect("pem");
    let other_key_cert =
        controller
            .pki
            .sign_csr(&other_csr, &[HOST.into()], &[], CertUsage::Server);

    let enrolment = Enrolment::new(config, files.clone(), key);
    for cert in [other_host.expect("signed"), other_key_cert.expect("signed")] {
        let err = enrolment
            .install_certificate(&raw.join_token, &cert)
            .await
            .unwrap_err();
        assert!(matches!(err, EnrolError::BadCertificate(_)), "{err}");
        assert!(
            !files.cert.exists() && files.token.exists(),
            "nothing changed"
        );
    }
}

#[tokio::test]
async fn enrolment_with_a_wrong_pinned_fingerprint_fails_on_the_controller() {
    let controller = controller();
    let agent = pending_agent(&controller).await;
    let wrong = format!("sha256:{}", "0".repeat(64));
    let result = agent_client::enrol(
        agent.addr,
        &wrong,
        &agent.token,
        &controller.pki,
        &[HOST.into()],
        &[LOCALHOST],
    )
    .await;
    let text = error_text(result);
    assert!(
        text.contains("refusing to enrol") && text.contains(&agent.fingerprint),
        "{text}"
    );
    assert!(
        agent.files().token.exists() && !agent.files().cert.exists(),
        "the agent saw no token"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn an_agent_of_another_protocol_version_is_refused() {
    let controller = controller();
    // A fake agent: a real certificate for HOST from the cluster CA, answering Hello with protocol 99.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![]).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, HOST);
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let cert = controller
        .pki
        .sign_csr(&csr, &[HOST.into()], &[LOCALHOST], CertUsage::Server)
        .expect("sign");
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(cert, key.serialize_pem()),
    );
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(pb::agent_server::AgentServer::new(FutureAgent))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let task = tokio::spawn(server);

    let text = error_text(
        agent_client::connect(
            addr,
            HOST,
            controller.pki.ca_cert_pem(),
            &controller.identity,
        )
        .await,
    );
    assert_eq!(
        text,
        format!(
            "agent on {HOST} speaks protocol 99, controller speaks {}: re-deploy to replace it",
            tpa_proto::PROTOCOL_VERSION
        )
    );
    task.abort();
}

/// An agent from the future: only Hello answers.
struct FutureAgent;

type Never<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for FutureAgent {
    async fn hello(
        &self,
        _: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        Ok(Response::new(pb::HelloResponse {
            agent_version: "9.0.0".into(),
            protocol_version: 99,
            host_name: HOST.into(),
        }))
    }
    async fn facts(&self, _: Request<pb::FactsRequest>) -> Result<Response<pb::Facts>, Status> {
        Err(Status::unimplemented("future"))
    }
    type ApplyStream = Never<pb::ApplyEvent>;
    async fn apply(
        &self,
        _: Request<pb::ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        Err(Status::unimplemented("future"))
    }
    type ExecStream = Never<pb::ExecOutput>;
    async fn exec(
        &self,
        _: Request<pb::ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Err(Status::unimplemented("future"))
    }
    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthReport>, Status> {
        Err(Status::unimplemented("future"))
    }
}

#[tokio::test]
async fn apply_streams_events_and_check_only_mutates_nothing() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let target = tempfile::tempdir().expect("tempdir");
    let path = target.path().join("conf.d/0000-tpa.conf");
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let resources = vec![
        ResourceSpec {
            id: "directory:conf.d".into(),
            kind: Resource::Directory {
                path: target.path().join("conf.d").display().to_string(),
                owner: tpa_agent::resource::owner::user_name(uid),
                group: tpa_agent::resource::owner::group_name(gid),
                mode: 0o755,
            },
        },
        ResourceSpec {
            id: "file:0000-tpa.conf".into(),
            kind: Resource::File {
                path: path.display().to_string(),
                content: b"port = 5432\n".to_vec(),
                owner: tpa_agent::resource::owner::user_name(uid),
                group: tpa_agent::resource::owner::group_name(gid),
                mode: 0o644,
                secret: false,
            },
        },
    ];

    let check = client.apply(resources.clone(), true).await.expect("check");
    let outcomes: Vec<_> = check
        .events
        .iter()
        .map(|e| (e.id.as_str(), e.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("directory:conf.d", Outcome::WouldChange),
            ("file:0000-tpa.conf", Outcome::WouldChange)
        ]
    );
    assert_eq!(check.summary.would_change, 2);
    assert!(
        !path.exists() && !path.parent().expect("dir").exists(),
        "check mode mutated nothing"
    );

    let applied = client.apply(resources.clone(), false).await.expect("apply");
    assert!(
        applied.events.iter().all(|e| e.outcome == Outcome::Changed),
        "{:?}",
        applied.events
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("written"),
        "port = 5432\n"
    );
    assert_eq!((applied.summary.changed, applied.summary.failed), (2, 0));

    let again = client.apply(resources, false).await.expect("re-apply");
    assert_eq!(again.summary.unchanged, 2, "{:?}", again.events);
    agent.shutdown().await;
}

#[tokio::test]
async fn exec_streams_output_and_exit_code() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let result = client
        .exec(ExecCommand {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "cat; printf ' %s' \"$GREETING\"; echo oops >&2; exit 3".into(),
            ],
            env: vec![("GREETING".into(), "world".into())],
            stdin: b"hello".to_vec(),
            ..ExecCommand::default()
        })
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&result.stdout), "hello world");
    assert_eq!(String::from_utf8_lossy(&result.stderr), "oops\n");
    assert_eq!(result.exit_code, 3);

    let missing = error_text(
        client
            .exec(ExecCommand {
                argv: vec!["/nonexistent/program".into()],
                ..ExecCommand::default()
            })
            .await,
    );
    assert!(
        missing.contains("FailedPrecondition") && missing.contains("/nonexistent/program"),
        "{missing}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn facts_and_health_answer() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let facts = client.facts(None, 5432).await.expect("facts");
    assert_eq!(facts.protocol_version, tpa_proto::PROTOCOL_VERSION);
    assert!(facts.postgres.is_none());
    let health = client.health(None, 0).await.expect("health");
    let certificate = health
        .checks
        .iter()
        .find(|c| c.name == "certificate")
        .expect("certificate check");
    assert_eq!(
        certificate.status,
        HealthStatus::Ok,
        "{}",
        certificate.message
    );
    agent.shutdown().await;
}
