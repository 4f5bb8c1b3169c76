//! End-to-end tests of the agent's gRPC server and the controller's client, in process, over real TLS on
//! 127.0.0.1 (no Docker): enrolment with a pinned key and a join token, the mutual-TLS identity checks, the
//! protocol version check, the Hello / Apply / Query / ServerKey / Exec / Facts / Health RPCs, certificate
//! renewal over the mutual-TLS channel, the controller's deadlines, and the listener's bounds.

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
use tpa_agent::resource::run::Timeouts;
use tpa_agent::server::{self, Limits, ServeError};
use tpa_agent::tls::{AgentKey, StateFiles};
use tpa_common::event::Outcome;
use tpa_common::health::HealthStatus;
use tpa_common::query::SqlQuery;
use tpa_common::resource::{Command, Content, Directory, File, Resource, ResourceSpec, SqlText};
use tpa_controller::agent_client::{
    self, ApplyMode, Deadlines, ExecCommand, InitOutcome, JoinToken, TOKEN_LIFETIME,
};
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
        replace_ca: false,
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
    start_with(args, state, fingerprint, token, Limits::default()).await
}

async fn start_with(
    args: InitArgs,
    state: tempfile::TempDir,
    fingerprint: String,
    token: JoinToken,
    limits: Limits,
) -> Agent {
    let config = AgentConfig::load(&args.config_path).expect("config");
    let listener = TcpListener::bind(args.listen).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_with(
        config,
        listener,
        limits,
        Timeouts::default(),
        async move {
            let _ = stopped.await;
        },
    ));
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
    pending_agent_with(controller, Limits::default()).await
}

async fn pending_agent_with(controller: &Controller, limits: Limits) -> Agent {
    let state = tempfile::tempdir().expect("tempdir");
    let args = init_args(state.path());
    let token = JoinToken::generate();
    let InitOutcome::Pending { fingerprint } = init(controller, &args, &token, TOKEN_LIFETIME)
    else {
        panic!("a fresh agent is pending")
    };
    start_with(args, state, fingerprint, token, limits).await
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

    // Re-running init with the same CA reports the enrolled key and touches no key or certificate; it
    // only brings the configuration up to date (e.g. a config of an older version listening on every
    // interface gets the host's address).
    let cert_before = std::fs::read_to_string(&files.cert).expect("cert");
    let moved = InitArgs {
        listen: SocketAddr::from((LOCALHOST, 7444)),
        ..agent.args.clone()
    };
    let again = init(&controller, &moved, &JoinToken::generate(), TOKEN_LIFETIME);
    assert_eq!(
        again,
        InitOutcome::Enrolled {
            fingerprint: agent.fingerprint.clone()
        }
    );
    assert_eq!(
        AgentConfig::load(&agent.args.config_path)
            .expect("config")
            .listen,
        moved.listen
    );
    assert_eq!(
        std::fs::read_to_string(&files.cert).expect("cert"),
        cert_before
    );
    init(
        &controller,
        &agent.args,
        &JoinToken::generate(),
        TOKEN_LIFETIME,
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
    // A set that shares this cluster's CA is the same cluster: a rotation under way sends the new CA
    // first and the old one after it.
    let both = format!(
        "{}{}",
        other.pki.ca_cert_pem(),
        controller.pki.ca_cert_pem()
    );
    let document = agent_client::init_document(&both, &JoinToken::generate(), TOKEN_LIFETIME);
    let same = enrol::init(&agent.args, document.as_bytes()).expect("init with both CAs");
    assert!(
        matches!(same, enrol::InitOutcome::Enrolled { .. }),
        "{same:?}"
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

    // After `rotate-ca --old-ca-compromised`, bootstrap re-initialises with `--replace-ca`: the new CA
    // replaces the old one and the old certificate goes, so the agent enrols again.
    let Agent { state, args, .. } = restarted.shutdown_keep_state().await;
    let replacing = InitArgs {
        replace_ca: true,
        ..args.clone()
    };
    let document = agent_client::init_document(
        other.pki.ca_cert_pem(),
        &JoinToken::generate(),
        TOKEN_LIFETIME,
    );
    let outcome = enrol::init(&replacing, document.as_bytes()).expect("init --replace-ca");
    assert!(
        matches!(outcome, enrol::InitOutcome::Pending { .. }),
        "{outcome:?}"
    );
    let files = StateFiles::new(&args.state_dir);
    assert_eq!(
        std::fs::read_to_string(&files.ca).expect("ca"),
        other.pki.ca_cert_pem()
    );
    assert!(!files.cert.exists());
    drop(state);
}

#[tokio::test]
async fn certificate_renewal_over_the_channel_swaps_key_and_certificate_in_process() {
    use tpa_controller::agent_client::renew::{Renewal, renew_if_due};
    use tpa_controller::pki::{CertPolicy, RenewReason};

    let mut controller = controller();
    controller.pki = controller.pki.with_policy(CertPolicy {
        lifetime: Duration::from_secs(90),
        renew_before: Duration::from_secs(60),
    });
    let (agent, client) = enrolled_agent(&controller).await;
    let files = agent.files();
    let old_key = std::fs::read_to_string(&files.key).expect("key");
    let old_cert = std::fs::read_to_string(&files.cert).expect("cert");
    assert_eq!(
        client.cert_pem(),
        old_cert,
        "Hello reports the served certificate"
    );
    let not_after = Pki::not_after(&old_cert).expect("not_after");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (not_after - now - 90).abs() < 10,
        "enrolment follows the policy"
    );
    let renew = |client, now, check| {
        renew_if_due(
            client,
            agent.addr,
            &controller.pki,
            &controller.identity,
            &[LOCALHOST],
            now,
            check,
        )
    };

    // Fresh: nothing to do.
    let (client, outcome) = renew(client, now, false).await.expect("current");
    assert_eq!(outcome, Renewal::Current);
    // Within renew_before, in check mode: would renew, changes nothing.
    let later = not_after - 30;
    let (client, outcome) = renew(client, later, true).await.expect("check");
    assert_eq!(
        outcome,
        Renewal::WouldRenew(RenewReason::Expiring { not_after })
    );
    assert_eq!(std::fs::read_to_string(&files.key).expect("key"), old_key);

    // Renewed: a new key and certificate on the host, served at once on the same address.
    let (mut client, outcome) = renew(client, later, false).await.expect("renew");
    let Renewal::Renewed { not_after: renewed } = outcome else {
        panic!("{outcome:?}")
    };
    let new_key = std::fs::read_to_string(&files.key).expect("key");
    let new_cert = std::fs::read_to_string(&files.cert).expect("cert");
    assert_ne!(new_key, old_key);
    assert_ne!(new_cert, old_cert);
    assert_eq!(client.cert_pem(), new_cert);
    assert_eq!(Pki::not_after(&new_cert), Some(renewed));
    assert!(!files.next_key.exists() && !files.next_cert.exists());
    assert_eq!(client.hello().await.expect("hello"), server::AGENT_VERSION);
    // The agent's own check (no health spec: it warns 30 days ahead) says what to do.
    let report = client.health(None, 0, false).await.expect("health");
    let cert_check = report
        .checks
        .iter()
        .find(|c| c.name == "certificate")
        .expect("certificate check");
    assert_eq!(cert_check.status, HealthStatus::Warning);
    assert!(
        cert_check.message.ends_with(": run deploy to renew"),
        "{}",
        cert_check.message
    );

    // A certificate for another key is refused and changes nothing.
    let csr = client.renew_csr().await.expect("csr");
    let (stranger, _) = {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![HOST.to_string()]).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, HOST);
        let req = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        (req, key)
    };
    let foreign = controller
        .pki
        .sign_agent_csr(&stranger, &[HOST.into()], &[LOCALHOST])
        .expect("signed");
    let refused = error_text(client.install_renewal(foreign).await);
    assert!(
        refused.contains("the renewed certificate was refused"),
        "{refused}"
    );
    assert_eq!(std::fs::read_to_string(&files.key).expect("key"), new_key);
    assert!(csr.contains("CERTIFICATE REQUEST"));

    // A restarted agent serves the renewed pair.
    drop(client);
    let Agent {
        state,
        args,
        fingerprint,
        token,
        ..
    } = agent.shutdown_keep_state().await;
    let restarted = start(args, state, fingerprint, token).await;
    let client = connect(&controller, &restarted)
        .await
        .expect("restarted agent serves mTLS");
    assert_eq!(client.cert_pem(), new_cert);
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
    // A fake agent with a real certificate for HOST, answering Hello with protocol 99.
    let (addr, task) = fake_agent(&controller, FutureAgent).await;

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
            binary_sha256: String::new(),
            cert_pem: String::new(),
            trusted_ca_pem: String::new(),
        }))
    }
    async fn facts(&self, _: Request<pb::FactsRequest>) -> Result<Response<pb::Facts>, Status> {
        Err(Status::unimplemented("future"))
    }
    async fn query(
        &self,
        _: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        Err(Status::unimplemented("future"))
    }
    async fn server_key(
        &self,
        _: Request<pb::ServerKeyRequest>,
    ) -> Result<Response<pb::ServerKeyResponse>, Status> {
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
    async fn repo_sync(
        &self,
        _: Request<pb::RepoSyncRequest>,
    ) -> Result<Response<pb::RepoSyncResponse>, Status> {
        Err(Status::unimplemented("future"))
    }
    async fn repo_put(
        &self,
        _: Request<tonic::Streaming<pb::RepoChunk>>,
    ) -> Result<Response<pb::RepoPutResponse>, Status> {
        Err(Status::unimplemented("future"))
    }
    async fn renew_csr(
        &self,
        _: Request<pb::RenewCsrRequest>,
    ) -> Result<Response<pb::RenewCsrResponse>, Status> {
        Err(Status::unimplemented("future"))
    }
    async fn install_renewal(
        &self,
        _: Request<pb::InstallRenewalRequest>,
    ) -> Result<Response<pb::InstallRenewalResponse>, Status> {
        Err(Status::unimplemented("future"))
    }
    async fn install_trust(
        &self,
        _: Request<pb::InstallTrustRequest>,
    ) -> Result<Response<pb::InstallTrustResponse>, Status> {
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
            kind: Resource::Directory(Directory {
                path: target.path().join("conf.d").display().to_string(),
                owner: tpa_agent::resource::owner::user_name(uid),
                group: tpa_agent::resource::owner::group_name(gid),
                mode: 0o755,
            }),
        },
        ResourceSpec {
            id: "file:0000-tpa.conf".into(),
            kind: Resource::File(File {
                path: path.display().to_string(),
                content: Content::from("port = 5432\n"),
                owner: tpa_agent::resource::owner::user_name(uid),
                group: tpa_agent::resource::owner::group_name(gid),
                mode: 0o644,
                secret: false,
            }),
        },
    ];

    let check = client
        .apply(resources.clone(), ApplyMode::Check)
        .await
        .expect("check");
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

    let applied = client
        .apply(resources.clone(), ApplyMode::Apply)
        .await
        .expect("apply");
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

    let again = client
        .apply(resources, ApplyMode::Apply)
        .await
        .expect("re-apply");
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
async fn the_package_repository_takes_file_names_never_paths() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let file = |name: &str| pb::RepoFile {
        name: name.into(),
        sha256: "00".into(),
        size: 2,
    };
    let sync = error_text(client.repo_sync(vec![file("../../etc/passwd")], true).await);
    assert!(
        sync.contains("InvalidArgument") && sync.contains("not a plain file name"),
        "{sync}"
    );
    let put = error_text(client.repo_put(file("/etc/shadow"), b"xx".to_vec()).await);
    assert!(
        put.contains("InvalidArgument") && put.contains("not a plain file name"),
        "{put}"
    );
    drop(agent);
}

#[tokio::test]
async fn facts_and_health_answer() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let facts = client.facts(None, 5432).await.expect("facts");
    assert_eq!(facts.protocol_version, tpa_proto::PROTOCOL_VERSION);
    assert!(facts.postgres.is_none());
    let health = client.health(None, 0, false).await.expect("health");
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

/// With a health spec beside agent.toml, Health answers from the scheduled round (a fresh
/// one when asked) and `/metrics` serves its figures on 127.0.0.1.
#[tokio::test]
async fn scheduled_health_and_metrics_on_localhost() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let port = {
        let free = std::net::TcpListener::bind((LOCALHOST, 0)).expect("free port");
        free.local_addr().expect("addr").port()
    };
    let spec = serde_json::json!({
        "interval_secs": 5,
        "disks": [{"name": "data", "path": agent.state.path()}],
        "metrics": {"port": port, "listen": "localhost"},
    });
    let spec_path = agent.args.config_path.with_file_name("health.json");
    std::fs::write(&spec_path, spec.to_string()).expect("spec");
    let health = client.health(None, 0, true).await.expect("health");
    assert!(health.checked_at > 0, "a scheduled round: {health:?}");
    let names: Vec<&str> = health.checks.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"certificate") && names.contains(&"disk data"),
        "{names:?}"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Async IO: the test's runtime is the agent's too, on one thread.
    let metrics = loop {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        if let Ok(mut http) = tokio::net::TcpStream::connect((LOCALHOST, port)).await {
            http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut answer = String::new();
            http.read_to_string(&mut answer).await.expect("read");
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no /metrics on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("# TYPE tpa_health_up gauge")
            && metrics.contains("tpa_disk_available_bytes{name=\"data\"")
            && metrics.contains("tpa_agent_certificate_expiry_seconds "),
        "{metrics}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn hello_reports_the_hash_of_the_binary_file() {
    let controller = controller();
    let (agent, client) = enrolled_agent(&controller).await;
    // In process, the agent's binary is this test executable.
    let exe = tpa_agent::binary::own_path().expect("own path");
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&exe).expect("read"),
    ));
    assert_eq!(client.binary_sha256(), expected);
    agent.shutdown().await;
}

#[tokio::test]
async fn server_key_is_made_on_the_host_and_signed_by_the_controller() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("tpa/fosdem.key").display().to_string();
    let cert = dir.path().join("tpa/fosdem.crt").display().to_string();

    // Check mode: nothing is made.
    let seen = client
        .server_key(&key, &cert, false, Some(HOST))
        .await
        .expect("check");
    assert_eq!(seen, agent_client::ServerKey::default());
    assert!(!std::path::Path::new(&key).exists());
    let checked = tpa_controller::server_tls::ensure(
        &mut client,
        &controller.pki,
        HOST,
        LOCALHOST,
        &cert,
        &key,
        true,
    )
    .await
    .expect("check");
    assert_eq!(checked, tpa_controller::server_tls::ServerCert::WouldIssue);
    assert!(
        !std::path::Path::new(&key).exists(),
        "check mode creates no key"
    );

    // A real run: the key is made, a CSR signed; once installed the certificate is current.
    let issued = tpa_controller::server_tls::ensure(
        &mut client,
        &controller.pki,
        HOST,
        LOCALHOST,
        &cert,
        &key,
        false,
    )
    .await
    .expect("issue");
    let tpa_controller::server_tls::ServerCert::Issued(pem) = issued else {
        panic!("{issued:?}")
    };
    std::fs::write(&cert, &pem).expect("install");
    let again = tpa_controller::server_tls::ensure(
        &mut client,
        &controller.pki,
        HOST,
        LOCALHOST,
        &cert,
        &key,
        false,
    )
    .await
    .expect("again");
    assert_eq!(again, tpa_controller::server_tls::ServerCert::Current(pem));

    let error = error_text(client.server_key("relative.key", &cert, true, None).await);
    assert!(
        error.contains("InvalidArgument") && error.contains("relative.key"),
        "{error}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn query_errors_name_the_target_and_hide_secret_sql() {
    if !std::path::Path::new("/usr/bin/psql").exists() || !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs psql and root (runuser)");
        return;
    }
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    // Nothing listens on port 1: psql fails to connect.
    let plain = error_text(client.query(SqlQuery::postgres(1, "select 1")).await);
    assert!(
        plain.contains("Query on the agent of kinetic failed (FailedPrecondition)")
            && plain.contains("psql query on database `postgres` port 1 as postgres failed"),
        "{plain}"
    );
    let secret = SqlQuery {
        sql: SqlText::secret("select 'SCRAM-SHA-256$hunter2'"),
        ..SqlQuery::postgres(1, "")
    };
    let hidden = error_text(client.query(secret).await);
    assert!(
        hidden.contains("error output hidden") && !hidden.contains("hunter2"),
        "{hidden}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn an_apply_whose_caller_went_away_stops_and_frees_the_agent() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran-after-hang-up");
    let command = |id: &str, argv: &[&str]| ResourceSpec {
        id: id.into(),
        kind: Resource::Command(Command {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            creates: None,
            unless: None,
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: None,
            unless_sql: None,
        }),
    };
    let marker_str = marker.display().to_string();
    let batch = vec![
        command("slow", &["sleep", "1.5"]),
        command("after", &["touch", &marker_str]),
    ];
    let stream = client
        .apply_stream(batch, ApplyMode::Apply)
        .await
        .expect("apply starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    // The batch finishes `slow` (no resource is left half-done), then skips `after`.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!marker.exists(), "the batch went on after the caller left");
    // The apply lock was released: the next batch runs at once.
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        client.apply(vec![command("next", &["true"])], ApplyMode::Apply),
    )
    .await
    .expect("the agent is free")
    .expect("apply");
    assert_eq!(next.summary.changed, 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn exec_has_a_time_limit() {
    let controller = controller();
    let (agent, mut client) = enrolled_agent(&controller).await;
    let started = std::time::Instant::now();
    let text = error_text(
        client
            .exec(ExecCommand {
                argv: vec!["sleep".into(), "30".into()],
                timeout: Some(Duration::from_secs(1)),
                ..ExecCommand::default()
            })
            .await,
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        text.contains("DeadlineExceeded") && text.contains("did not finish within 1 s"),
        "{text}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn calls_to_an_agent_that_stops_answering_fail_at_their_deadline() {
    let controller = controller();
    let (addr, task) = fake_agent(&controller, StuckAgent).await;
    let deadlines = Deadlines {
        facts: Duration::from_millis(300),
        apply: Duration::from_millis(300),
        ..Deadlines::default()
    };
    let mut client = agent_client::connect_with(
        addr,
        HOST,
        controller.pki.ca_cert_pem(),
        &controller.identity,
        deadlines,
    )
    .await
    .expect("connect");
    // An outer bound: without deadlines these calls would hang for ever.
    let facts = tokio::time::timeout(Duration::from_secs(10), client.facts(None, 5432))
        .await
        .expect("the deadline fired first");
    assert_eq!(
        error_text(facts),
        "Facts on the agent of kinetic did not finish within 0.3 s: check the host (is it overloaded or \
         unreachable?) and the agent's journal (journalctl -u tpa-agent), then retry"
    );
    let apply = tokio::time::timeout(
        Duration::from_secs(10),
        client.apply(vec![], ApplyMode::Apply),
    )
    .await
    .expect("the deadline fired first");
    assert!(
        error_text(apply).starts_with("Apply on the agent of kinetic did not finish within 0.3 s")
    );
    task.abort();
}

#[tokio::test]
async fn the_listener_bounds_tls_handshakes_and_connections() {
    use tokio::io::AsyncReadExt as _;
    let controller = controller();
    let limits = Limits {
        handshake_timeout: Duration::from_millis(1500),
        max_connections: 2,
        ..Limits::default()
    };
    let agent = pending_agent_with(&controller, limits).await;
    enrol(&controller, &agent, &agent.token.clone())
        .await
        .expect("enrol");
    connect(&controller, &agent).await.expect("serves");
    // Give the connection just used time to close and free its slot.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two clients that connect and never start TLS take every slot ...
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(
            tokio::net::TcpStream::connect(agent.addr)
                .await
                .expect("tcp"),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... so a real client is not served ...
    let quick = Deadlines {
        connect: Duration::from_millis(500),
        ..Deadlines::default()
    };
    let refused = agent_client::connect_with(
        agent.addr,
        HOST,
        controller.pki.ca_cert_pem(),
        &controller.identity,
        quick,
    )
    .await;
    assert!(
        refused.is_err(),
        "a third connection was served beyond the limit"
    );
    // ... until their handshake time is up and the agent closes them.
    for mut stream in idle {
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("closed after the handshake timeout");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
    connect(&controller, &agent)
        .await
        .expect("served again once slots are free");
    agent.shutdown().await;
}

/// A server with a real certificate for HOST from the cluster CA, serving `service`.
async fn fake_agent<S>(controller: &Controller, service: S) -> (SocketAddr, JoinHandle<()>)
where
    S: pb::agent_server::Agent,
{
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
        .add_service(pb::agent_server::AgentServer::new(service))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    (addr, task)
}

/// An agent that says hello, then never answers anything.
struct StuckAgent;

#[tonic::async_trait]
impl pb::agent_server::Agent for StuckAgent {
    async fn hello(
        &self,
        _: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        Ok(Response::new(pb::HelloResponse {
            agent_version: server::AGENT_VERSION.into(),
            protocol_version: tpa_proto::PROTOCOL_VERSION,
            host_name: HOST.into(),
            binary_sha256: String::new(),
            cert_pem: String::new(),
            trusted_ca_pem: String::new(),
        }))
    }
    async fn facts(&self, _: Request<pb::FactsRequest>) -> Result<Response<pb::Facts>, Status> {
        std::future::pending().await
    }
    async fn query(
        &self,
        _: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        std::future::pending().await
    }
    async fn server_key(
        &self,
        _: Request<pb::ServerKeyRequest>,
    ) -> Result<Response<pb::ServerKeyResponse>, Status> {
        std::future::pending().await
    }
    type ApplyStream = Never<pb::ApplyEvent>;
    async fn apply(
        &self,
        _: Request<pb::ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        // The call is answered, then no event ever comes.
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
    type ExecStream = Never<pb::ExecOutput>;
    async fn exec(
        &self,
        _: Request<pb::ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        std::future::pending().await
    }
    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthReport>, Status> {
        std::future::pending().await
    }
    async fn repo_sync(
        &self,
        _: Request<pb::RepoSyncRequest>,
    ) -> Result<Response<pb::RepoSyncResponse>, Status> {
        std::future::pending().await
    }
    async fn repo_put(
        &self,
        _: Request<tonic::Streaming<pb::RepoChunk>>,
    ) -> Result<Response<pb::RepoPutResponse>, Status> {
        std::future::pending().await
    }
    async fn renew_csr(
        &self,
        _: Request<pb::RenewCsrRequest>,
    ) -> Result<Response<pb::RenewCsrResponse>, Status> {
        std::future::pending().await
    }
    async fn install_renewal(
        &self,
        _: Request<pb::InstallRenewalRequest>,
    ) -> Result<Response<pb::InstallRenewalResponse>, Status> {
        std::future::pending().await
    }
    async fn install_trust(
        &self,
        _: Request<pb::InstallTrustRequest>,
    ) -> Result<Response<pb::InstallTrustResponse>, Status> {
        std::future::pending().await
    }
}
