//! The agent's key and certificates: generating the key on the host, the self-signed certificate and CSR
//! used during enrolment, checking an installed certificate, the two rustls server configurations, and the
//! controller-identity check applied to every RPC after enrolment.
//!
//! State directory (default `/var/lib/tpa-agent`, mode 0700):
//! - `agent.key`: the agent's private key (ECDSA P-256, PKCS#8 PEM, mode 0600). Generated here; never leaves.
//! - `ca.crt`: the cluster CA, pinned by `tpa-agent init`.
//! - `agent.crt`: the certificate the controller issued at enrolment.
//! - `join-token`: SHA-256 of the single-use join token and its expiry (see `enrol`); removed once used.
//! - `agent.key.next`, `agent.crt.next`: a renewal under way (see `renew`); gone once it is installed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tpa_proto::CONTROLLER_IDENTITY;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a key or certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a usable private key: {source}; remove it and run `tpa-agent init` again"
    )]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error("cannot generate a key or certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("the certificate does not verify against the cluster CA for host {name:?}: {reason}")]
    Untrusted { name: String, reason: String },
    #[error("the certificate is for another key than this agent's")]
    KeyMismatch,
}

/// Paths of the files in the agent's state directory.
#[derive(Debug, Clone)]
pub struct StateFiles {
    pub dir: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
    pub token: PathBuf,
    /// The new key of a renewal, until its certificate is installed.
    pub next_key: PathBuf,
    /// The new certificate of a renewal, between its two renames.
    pub next_cert: PathBuf,
}

// === impl StateFiles ===

impl StateFiles {
    pub fn new(dir: &Path) -> StateFiles {
        StateFiles {
            dir: dir.to_path_buf(),
            key: dir.join("agent.key"),
            cert: dir.join("agent.crt"),
            ca: dir.join("ca.crt"),
            token: dir.join("join-token"),
            next_key: dir.join("agent.key.next"),
            next_cert: dir.join("agent.crt.next"),
        }
    }

    /// Creates the state directory, readable by root only.
    pub fn create_dir(&self) -> Result<(), TlsError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| TlsError::Write {
                path: self.dir.clone(),
                source,
            })
    }

    pub fn read(&self, path: &Path) -> Result<String, TlsError> {
        std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn write(&self, path: &Path, content: &[u8], mode: u32) -> Result<(), TlsError> {
        write_atomic(path, content, mode).map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The agent's private key.
pub struct AgentKey {
    key: KeyPair,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

// === impl AgentKey ===

impl AgentKey {
    /// Loads the key from `files.key`, generating it (mode 0600) when absent. Returns whether it was created.
    pub fn load_or_generate(files: &StateFiles) -> Result<(AgentKey, bool), TlsError> {
        if files.key.exists() {
            return Ok((AgentKey::load(files)?, false));
        }
        let key = KeyPair::generate()?;
        files.write(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
        Ok((AgentKey { key }, true))
    }

    /// Loads the existing key from `files.key`.
    pub fn load(files: &StateFiles) -> Result<AgentKey, TlsError> {
        AgentKey::load_from(files, &files.key)
    }

    /// Loads a key from `path` in the state directory.
    pub fn load_from(files: &StateFiles, path: &Path) -> Result<AgentKey, TlsError> {
        let pem = files.read(path)?;
        let key = KeyPair::from_pem(&pem).map_err(|source| TlsError::BadKey {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(AgentKey { key })
    }

    /// A new key written to `path` (mode 0600 from the first byte), replacing what was there.
    pub fn generate_at(files: &StateFiles, path: &Path) -> Result<AgentKey, TlsError> {
        let key = KeyPair::generate()?;
        files.write(path, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(AgentKey { key })
    }

    /// `sha256:<hex>` of the public key (see [`tpa_proto::spki_fingerprint`]).
    pub fn fingerprint(&self) -> String {
        tpa_proto::spki_fingerprint(&self.key.subject_public_key_info())
    }

    /// The private key, PEM. Secret: only for building the TLS identity.
    pub fn private_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A self-signed certificate for this key, served only during enrolment. The controller trusts it by the
    /// key's fingerprint, so its names and lifetime matter little.
    pub fn self_signed_cert(&self, name: &str, sans: &[String]) -> Result<String, TlsError> {
        Ok(self.params(name, sans)?.self_signed(&self.key)?.pem())
    }

    /// A CSR for this key with common name `name` and `sans`; the controller sets the final names itself.
    pub fn csr(&self, name: &str, sans: &[String]) -> Result<String, TlsError> {
        Ok(self
            .params(name, sans)?
            .serialize_request(&self.key)?
            .pem()?)
    }

    fn params(&self, name: &str, sans: &[String]) -> Result<CertificateParams, TlsError> {
        let names: Vec<String> = std::iter::once(name.to_string())
            .chain(sans.iter().cloned())
            .collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        Ok(params)
    }

    fn spki(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }
}

/// An installed certificate that verified.
#[derive(Debug, Clone)]
pub struct AgentCert {
    pub cert_pem: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Checks that `cert_pem` chains to `ca_pem`, is valid now as a TLS server certificate for `name`, and is for
/// `key`. Used before installing a certificate and when `serve` starts.
pub fn verify_agent_cert(
    cert_pem: &str,
    ca_pem: &str,
    name: &str,
    key: &AgentKey,
) -> Result<AgentCert, TlsError> {
    let untrusted = |reason: String| TlsError::Untrusted {
        name: name.to_string(),
        reason,
    };
    let leaf = first_cert(cert_pem)?;
    let roots = ca_roots(ca_pem, name)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| untrusted(e.to_string()))?;
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| untrusted(e.to_string()))?;
    verifier
        .verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now())
        .map_err(|e| untrusted(e.to_string()))?;

    let (_, parsed) = X509Certificate::from_der(&leaf).map_err(|e| TlsError::Pem(e.to_string()))?;
    if parsed.public_key().raw != key.spki().as_slice() {
        return Err(TlsError::KeyMismatch);
    }
    Ok(AgentCert {
        cert_pem: cert_pem.to_string(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

/// The CA certificates of `ca_pem` (one or more) as rustls roots; `name` is the host, for errors.
pub fn ca_roots(ca_pem: &str, name: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| TlsError::Pem(format!("cluster CA: {e}")))?;
        roots.add(ca).map_err(|e| TlsError::Untrusted {
            name: name.to_string(),
            reason: format!("cluster CA: {e}"),
        })?;
    }
    Ok(roots)
}

/// TLS for the enrolment phase: the self-signed certificate, no client certificate (the join token
/// authenticates the controller; the pinned key authenticates the agent).
pub fn enrolment_tls(key: &AgentKey, self_signed_pem: &str) -> ServerTlsConfig {
    ServerTlsConfig::new().identity(Identity::from_pem(self_signed_pem, key.private_pem()))
}

/// Mutual TLS after enrolment: the agent's certificate, and client certificates required and verified
/// against the cluster CA. Which client is accepted is narrowed further by [`check_controller`].
pub fn mutual_tls(key: &AgentKey, cert_pem: &str, ca_pem: &str) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key.private_pem()))
        .client_ca_root(Certificate::from_pem(ca_pem))
}

/// Why a TLS client is not the controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("unreadable client certificate")]
    Unparseable,
    #[error("client certificate {0:?} is not the controller's")]
    NotController(String),
}

/// Accepts the TLS peer only if its certificate (already verified against the cluster CA by rustls) names
/// the controller: subject common name [`CONTROLLER_IDENTITY`]. The CA never signs that name for a host, so
/// a host's certificate cannot be used to drive another host's agent.
pub fn check_controller(peer_certs: Option<&[CertificateDer<'_>]>) -> Result<(), PeerError> {
    let leaf = peer_certs
        .and_then(|c| c.first())
        .ok_or(PeerError::NoCertificate)?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| PeerError::Unparseable)?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    if cn == CONTROLLER_IDENTITY {
        Ok(())
    } else {
        Err(PeerError::NotController(cn.to_string()))
    }
}

/// The first certificate of a PEM document.
pub fn first_cert(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))
}

/// Writes via a temp file created with `mode` from the start (a key is never readable by others, not even
/// briefly), synced, then renamed into place.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn state() -> (tempfile::TempDir, StateFiles) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = StateFiles::new(&dir.path().join("state"));
        files.create_dir().expect("mkdir");
        (dir, files)
    }

    #[test]
    fn key_is_generated_once_with_mode_0600() {
        let (_dir, files) = state();
        let (key, created) = AgentKey::load_or_generate(&files).expect("generate");
        assert!(created);
        let mode = std::fs::metadata(&files.key)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = AgentKey::load_or_generate(&files).expect("load");
        assert!(!created);
        assert_eq!(key.fingerprint(), again.fingerprint());
        assert!(key.fingerprint().starts_with("sha256:") && key.fingerprint().len() == 7 + 64);
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn self_signed_cert_carries_the_pinned_key() {
        let (_dir, files) = state();
        let (key, _) = AgentKey::load_or_generate(&files).expect("key");
        let pem = key
            .self_signed_cert("kinetic", &["10.0.0.2".into()])
            .expect("cert");
        let der = first_cert(&pem).expect("der");
        let (_, cert) = X509Certificate::from_der(&der).expect("parse");
        assert_eq!(
            tpa_proto::spki_fingerprint(cert.public_key().raw),
            key.fingerprint()
        );
    }

    #[test]
    fn a_self_signed_cert_is_not_trusted_as_enrolled() {
        let (_dir, files) = state();
        let (key, _) = AgentKey::load_or_generate(&files).expect("key");
        let pem = key.self_signed_cert("kinetic", &[]).expect("cert");
        let other_ca = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(vec![]).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&other_ca).expect("ca").pem();
        let err = verify_agent_cert(&pem, &ca_pem, "kinetic", &key).unwrap_err();
        assert!(matches!(err, TlsError::Untrusted { .. }), "{err}");
    }

    #[test]
    fn no_or_garbage_peer_certificate_is_refused() {
        assert_eq!(check_controller(None), Err(PeerError::NoCertificate));
        assert_eq!(check_controller(Some(&[])), Err(PeerError::NoCertificate));
        let junk = [CertificateDer::from(vec![1u8, 2, 3])];
        assert_eq!(check_controller(Some(&junk)), Err(PeerError::Unparseable));
    }
}
