//! Enrolment: how a freshly installed agent gets its certificate without its key ever leaving the host.
//!
//! 1. `tpa-agent init` (run by the controller over SSH) reads an [`InitDocument`] from stdin (the CA
//!    certificate and a single-use join token: never in argv), writes the config and `ca.crt`, stores only the
//!    SHA-256 of the token with its expiry, generates the key, and prints `pending sha256:<fingerprint>`.
//! 2. `tpa-agent serve` in enrolment mode serves only the `Enrol` service, over TLS with a self-signed
//!    certificate for that key; the controller pins the fingerprint. `RequestCsr{token}` returns a CSR;
//!    `InstallCertificate{token, cert}` checks the token, that the certificate chains to the pinned CA, names
//!    this host and is for this key, stores it and consumes the token.
//! 3. The server then switches to mutual TLS (see `server`).
//!
//! A wrong, expired or used token changes nothing.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{AgentConfig, ConfigError};
use crate::tls::{self, AgentCert, AgentKey, StateFiles, TlsError};

/// The document `tpa-agent init` reads from stdin (TOML). Carries a secret: never logged, never in argv.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitDocument {
    /// The cluster CA certificate (PEM) the agent will trust.
    pub ca_cert: String,
    /// The single-use join token.
    pub join_token: String,
    /// How long the token stays valid, counted from `init` on the host's clock (so clock skew between
    /// controller and host does not matter).
    pub token_lifetime_secs: u64,
}

impl std::fmt::Debug for InitDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitDocument")
            .field("ca_cert", &self.ca_cert)
            .field("join_token", &"<redacted>")
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .finish()
    }
}

/// The arguments of `tpa-agent init`.
#[derive(Debug, Clone)]
pub struct InitArgs {
    pub name: String,
    pub sans: Vec<String>,
    pub listen: SocketAddr,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// Re-initialise even when enrolled with a CA the document does not carry (the controller's
    /// bootstrap passes it after `rotate-ca --old-ca-compromised`, over SSH as root).
    pub replace_ca: bool,
}

/// What `init` did; printed on stdout as `<state> <fingerprint>` for the controller to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Ready for enrolment: the controller must pin `fingerprint` and enrol.
    Pending { fingerprint: String },
    /// Already enrolled with a valid certificate from this CA; nothing was touched.
    Enrolled { fingerprint: String },
}

impl std::fmt::Display for InitOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitOutcome::Pending { fingerprint } => write!(f, "pending {fingerprint}"),
            InitOutcome::Enrolled { fingerprint } => write!(f, "enrolled {fingerprint}"),
        }
    }
}

/// Why init or an enrolment call failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("cannot read the init document from stdin: {0}")]
    ReadStdin(#[source] std::io::Error),
    #[error("invalid init document on stdin: {0}")]
    BadDocument(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "this host is already enrolled in a cluster with another CA ({ca}); to move it, stop tpa-agent, \
         remove {state_dir} and run init again (after `tpa-controller rotate-ca --old-ca-compromised`, \
         run that command again: it re-enrols such hosts)"
    )]
    OtherCluster { ca: PathBuf, state_dir: PathBuf },
    #[error(
        "no join token is pending (already enrolled, or init was not run): re-run the bootstrap for this host"
    )]
    NoToken,
    #[error("join token expired: re-run the bootstrap for this host")]
    TokenExpired,
    #[error("wrong join token")]
    WrongToken,
    #[error("the certificate was refused: {0}")]
    BadCertificate(#[source] TlsError),
}

/// The longest init document accepted: a CA certificate and a token are a few KiB.
const MAX_DOCUMENT_BYTES: u64 = 64 * 1024;
/// Shortest acceptable token, in characters: a guessable token would let anyone enrol.
const MIN_TOKEN_LEN: usize = 32;

/// `tpa-agent init`: prepares the host for enrolment (see the module doc), reading the [`InitDocument`] from
/// `stdin`. Idempotent: an agent already enrolled with a valid certificate of the same CA is left alone.
pub fn init(args: &InitArgs, stdin: impl Read) -> Result<InitOutcome, EnrolError> {
    let doc = read_document(stdin)?;
    let files = StateFiles::new(&args.state_dir);

    if let Some(fingerprint) = already_enrolled(args, &files, &doc)? {
        refresh_config(args)?;
        return Ok(InitOutcome::Enrolled { fingerprint });
    }

    files.create_dir()?;
    files.write(&files.ca, doc.ca_cert.as_bytes(), 0o644)?;
    let (key, created) = AgentKey::load_or_generate(&files)?;
    let expires_at = now_unix().saturating_add(doc.token_lifetime_secs);
    let token = TokenRecord {
        sha256: token_hash(&doc.join_token),
        expires_at,
    };
    let token_toml = toml::to_string(&token).map_err(|e| EnrolError::BadDocument(e.to_string()))?;
    files.write(&files.token, token_toml.as_bytes(), 0o600)?;
    // A certificate left from an earlier enrolment (expired, other name) would confuse `serve`.
    match std::fs::remove_file(&files.cert) {
        Ok(()) => {
            tracing::info!(path = %files.cert.display(), "removed the previous, no longer valid certificate")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TlsError::Write {
                path: files.cert.clone(),
                source,
            }
            .into());
        }
    }
    let config = AgentConfig {
        name: args.name.clone(),
        sans: args.sans.clone(),
        listen: args.listen,
        state_dir: args.state_dir.clone(),
        health_spec: health_spec_beside(&args.config_path),
    };
    config.save(&args.config_path)?;
    tracing::info!(name = %args.name, key_created = created, "ready for enrolment");
    Ok(InitOutcome::Pending {
        fingerprint: key.fingerprint(),
    })
}

/// Keeps an enrolled agent's configuration current with the arguments (e.g. a listen address on the
/// cluster address instead of every interface, for configs written by older versions); keys and
/// certificates are left alone. Takes effect when the service restarts (bootstrap restarts it).
fn refresh_config(args: &InitArgs) -> Result<(), EnrolError> {
    let current = AgentConfig::load(&args.config_path)?;
    let wanted = AgentConfig {
        name: args.name.clone(),
        sans: args.sans.clone(),
        listen: args.listen,
        state_dir: args.state_dir.clone(),
        health_spec: health_spec_beside(&args.config_path),
    };
    if current != wanted {
        wanted.save(&args.config_path)?;
        tracing::info!(listen = %wanted.listen, "updated the configuration of this enrolled agent");
    }
    Ok(())
}

/// The health spec lives beside the configuration (`/etc/tpa-agent/health.json`).
fn health_spec_beside(config_path: &std::path::Path) -> std::path::PathBuf {
    config_path
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .join("health.json")
}

fn read_document(stdin: impl Read) -> Result<InitDocument, EnrolError> {
    let mut text = String::new();
    stdin
        .take(MAX_DOCUMENT_BYTES)
        .read_to_string(&mut text)
        .map_err(EnrolError::ReadStdin)?;
    // The TOML error may quote the offending line, which could be the token: report its position only.
    let doc: InitDocument = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(" at byte {}", s.start))
            .unwrap_or_default();
        EnrolError::BadDocument(format!("not the expected TOML document{at}"))
    })?;
    if doc.join_token.len() < MIN_TOKEN_LEN {
        return Err(EnrolError::BadDocument(format!(
            "join_token is shorter than {MIN_TOKEN_LEN} characters"
        )));
    }
    if doc.token_lifetime_secs == 0 {
        return Err(EnrolError::BadDocument("token_lifetime_secs is 0".into()));
    }
    tls::first_cert(&doc.ca_cert).map_err(|e| EnrolError::BadDocument(format!("ca_cert: {e}")))?;
    Ok(doc)
}

/// The fingerprint when the host is enrolled under `args.name` with a valid certificate of the document's CA.
fn already_enrolled(
    args: &InitArgs,
    files: &StateFiles,
    doc: &InitDocument,
) -> Result<Option<String>, EnrolError> {
    if !(files.cert.exists()
        && files.key.exists()
        && files.ca.exists()
        && args.config_path.exists())
    {
        return Ok(None);
    }
    let key = AgentKey::load(files)?;
    let stored_ca = files.read(&files.ca)?;
    let cert_pem = files.read(&files.cert)?;
    if verify(&cert_pem, &stored_ca, &args.name, &key).is_err() {
        return Ok(None);
    }
    // The same cluster when the two sets share a CA: during a rotation the agent trusts the old and the
    // new CA, and the controller sends them in the other order.
    if !shares_a_certificate(&stored_ca, &doc.ca_cert)? {
        if args.replace_ca {
            tracing::warn!(ca = %files.ca.display(), "replacing the CA this agent was enrolled with");
            return Ok(None);
        }
        return Err(EnrolError::OtherCluster {
            ca: files.ca.clone(),
            state_dir: files.dir.clone(),
        });
    }
    Ok(Some(key.fingerprint()))
}

/// True when the two PEM documents have a certificate in common.
fn shares_a_certificate(a: &str, b: &str) -> Result<bool, TlsError> {
    let certs = |pem: &str| -> Result<Vec<Vec<u8>>, TlsError> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| {
                c.map(|c| c.to_vec())
                    .map_err(|e| TlsError::Pem(e.to_string()))
            })
            .collect()
    };
    let a = certs(a)?;
    Ok(certs(b)?.iter().any(|c| a.contains(c)))
}

fn verify(cert_pem: &str, ca_pem: &str, name: &str, key: &AgentKey) -> Result<AgentCert, TlsError> {
    tls::verify_agent_cert(cert_pem, ca_pem, name, key)
}

/// What the agent keeps of the join token: its hash and expiry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    sha256: String,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

/// The enrolment logic behind the `Enrol` RPCs (the gRPC glue is in `server`).
#[derive(Debug)]
pub struct Enrolment {
    config: AgentConfig,
    files: StateFiles,
    key: AgentKey,
    /// Serialises InstallCertificate calls, so a token is used at most once.
    install: tokio::sync::Mutex<()>,
}

// === impl Enrolment ===

impl Enrolment {
    pub fn new(config: AgentConfig, files: StateFiles, key: AgentKey) -> Enrolment {
        Enrolment {
            config,
            files,
            key,
            install: tokio::sync::Mutex::new(()),
        }
    }

    /// `RequestCsr`: a CSR for the agent's key, once the token checks out.
    pub fn request_csr(&self, token: &str) -> Result<String, EnrolError> {
        self.check_token(token)?;
        Ok(self.key.csr(&self.config.name, &self.config.sans)?)
    }

    /// `InstallCertificate`: checks the token and the certificate, stores it, consumes the token.
    pub async fn install_certificate(
        &self,
        token: &str,
        cert_pem: &str,
    ) -> Result<AgentCert, EnrolError> {
        let _guard = self.install.lock().await;
        self.check_token(token)?;
        let ca = self.files.read(&self.files.ca)?;
        let cert = verify(cert_pem, &ca, &self.config.name, &self.key)
            .map_err(EnrolError::BadCertificate)?;
        self.files
            .write(&self.files.cert, cert_pem.as_bytes(), 0o644)?;
        std::fs::remove_file(&self.files.token).map_err(|source| TlsError::Write {
            path: self.files.token.clone(),
            source,
        })?;
        tracing::info!(name = %self.config.name, "enrolled: certificate installed, join token consumed");
        Ok(cert)
    }

    /// The key, for the TLS identity after enrolment.
    pub fn into_key(self) -> AgentKey {
        self.key
    }

    fn check_token(&self, presented: &str) -> Result<(), EnrolError> {
        let text = match std::fs::read_to_string(&self.files.token) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EnrolError::NoToken),
            Err(source) => {
                return Err(TlsError::Read {
                    path: self.files.token.clone(),
                    source,
                }
                .into());
            }
        };
        let record: TokenRecord = toml::from_str(&text).map_err(|_| EnrolError::NoToken)?;
        if now_unix() >= record.expires_at {
            return Err(EnrolError::TokenExpired);
        }
        if !constant_time_eq(token_hash(presented).as_bytes(), record.sha256.as_bytes()) {
            return Err(EnrolError::WrongToken);
        }
        Ok(())
    }
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("ca").pem()
    }

    fn doc(ca: &str, token: &str, lifetime: u64) -> String {
        format!(
            "ca_cert = '''\n{ca}'''\njoin_token = \"{token}\"\ntoken_lifetime_secs = {lifetime}\n"
        )
    }

    fn args(dir: &std::path::Path) -> InitArgs {
        InitArgs {
            name: "kinetic".into(),
            sans: vec!["10.0.0.2".into()],
            listen: crate::config::default_listen(),
            config_path: dir.join("etc/agent.toml"),
            state_dir: dir.join("state"),
            replace_ca: false,
        }
    }

    #[test]
    fn init_writes_config_ca_key_and_only_a_token_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = args(dir.path());
        let ca = ca_pem();
        let outcome = init(&args, doc(&ca, TOKEN, 900).as_bytes()).expect("init");
        let InitOutcome::Pending { fingerprint } = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(outcome.to_string().starts_with("pending sha256:"));

        let files = StateFiles::new(&args.state_dir);
        assert_eq!(std::fs::read_to_string(&files.ca).expect("ca"), ca);
        let token_file = std::fs::read_to_string(&files.token).expect("token");
        assert!(!token_file.contains(TOKEN) && token_file.contains(&token_hash(TOKEN)));
        assert_eq!(
            &AgentKey::load(&files).expect("key").fingerprint(),
            fingerprint
        );
        assert_eq!(
            AgentConfig::load(&args.config_path).expect("config").name,
            "kinetic"
        );

        // Running init again before enrolment keeps the key (the pin stays valid).
        let again = init(&args, doc(&ca, TOKEN, 900).as_bytes()).expect("init");
        assert_eq!(again, outcome);
    }

    #[test]
    fn bad_documents_are_refused_without_echoing_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = args(dir.path());
        let ca = ca_pem();
        let short = init(&args, doc(&ca, "short", 900).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(short.contains("shorter than 32"), "{short}");
        let garbage = format!("join_token = \"{TOKEN}\"\nbogus = 1\n");
        let err = init(&args, garbage.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains(TOKEN) && err.contains("TOML"), "{err}");
        let not_pem = init(&args, doc("nope", TOKEN, 900).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(not_pem.contains("ca_cert"), "{not_pem}");
        assert!(
            !args.state_dir.exists(),
            "nothing written on a bad document"
        );
    }

    #[tokio::test]
    async fn tokens_are_checked_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = args(dir.path());
        init(&args, doc(&ca_pem(), TOKEN, 900).as_bytes()).expect("init");
        let files = StateFiles::new(&args.state_dir);
        let config = AgentConfig::load(&args.config_path).expect("config");
        let enrolment = Enrolment::new(config, files.clone(), AgentKey::load(&files).expect("key"));

        assert!(
            enrolment
                .request_csr(TOKEN)
                .expect("csr")
                .contains("CERTIFICATE REQUEST")
        );
        assert!(matches!(
            enrolment.request_csr("x".repeat(32).as_str()),
            Err(EnrolError::WrongToken)
        ));

        let expired = TokenRecord {
            sha256: token_hash(TOKEN),
            expires_at: now_unix() - 1,
        };
        std::fs::write(&files.token, toml::to_string(&expired).expect("toml")).expect("write");
        assert!(matches!(
            enrolment.request_csr(TOKEN),
            Err(EnrolError::TokenExpired)
        ));
        std::fs::remove_file(&files.token).expect("rm");
        assert!(matches!(
            enrolment.request_csr(TOKEN),
            Err(EnrolError::NoToken)
        ));
    }

    #[test]
    fn document_debug_hides_the_token() {
        let d = InitDocument {
            ca_cert: "PEM".into(),
            join_token: TOKEN.into(),
            token_lifetime_secs: 1,
        };
        assert!(!format!("{d:?}").contains(TOKEN));
    }
}
