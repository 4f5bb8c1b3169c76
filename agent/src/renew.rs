//! Certificate renewal after enrolment, over the mutual-TLS channel (the `RenewCsr` and `InstallRenewal`
//! RPCs; the gRPC glue and the switch to the new certificate are in `server`).
//!
//! 1. `RenewCsr`: a NEW key is generated on the host into `agent.key.next` (0600) and a CSR for it returned.
//!    The key never leaves the host; the current key and certificate keep serving meanwhile.
//! 2. `InstallRenewal{cert}`: the certificate must chain to the pinned CA, name this host and be for the key
//!    of step 1. It is written to `agent.crt.next`, then `agent.key.next` is renamed over `agent.key` and
//!    `agent.crt.next` over `agent.crt`.
//!
//! Crash safety: each rename is atomic, and [`recover`] (run when `serve` starts) finishes an install
//! interrupted between the two renames (new key beside the old certificate, new certificate still in
//! `agent.crt.next`). A renewal interrupted before the first rename leaves the old pair in place.

use std::path::Path;

use crate::config::AgentConfig;
use crate::tls::{self, AgentCert, AgentKey, StateFiles, TlsError};

/// Why a renewal step failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "no renewal is under way on this agent (RenewCsr first; the agent may have restarted since)"
    )]
    NothingPending,
    #[error("the renewed certificate was refused: {0}")]
    BadCertificate(#[source] TlsError),
}

/// The renewal logic behind the RPCs. One step at a time.
#[derive(Debug)]
pub struct Renewal {
    config: AgentConfig,
    files: StateFiles,
    lock: tokio::sync::Mutex<()>,
}

// === impl Renewal ===

impl Renewal {
    pub fn new(config: AgentConfig, files: StateFiles) -> Renewal {
        Renewal {
            config,
            files,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// `RenewCsr`: a new key in `agent.key.next` (replacing any earlier one) and a CSR for it, with the
    /// host's name and SANs (the CA decides the final names).
    pub async fn csr(&self) -> Result<String, RenewError> {
        let _one_step_at_a_time = self.lock.lock().await;
        let key = AgentKey::generate_at(&self.files, &self.files.next_key)?;
        tracing::info!(fingerprint = %key.fingerprint(), "renewal: new key generated, CSR sent");
        Ok(key.csr(&self.config.name, &self.config.sans)?)
    }

    /// `InstallRenewal`: checks `cert_pem` against the CA, the name and the pending key, then installs key and
    /// certificate (see the module doc).
    pub async fn install(&self, cert_pem: &str) -> Result<AgentCert, RenewError> {
        let _one_step_at_a_time = self.lock.lock().await;
        let files = &self.files;
        if !files.next_key.exists() {
            return Err(RenewError::NothingPending);
        }
        let key = AgentKey::load_from(files, &files.next_key)?;
        let ca = files.read(&files.ca)?;
        let cert = tls::verify_agent_cert(cert_pem, &ca, &self.config.name, &key)
            .map_err(RenewError::BadCertificate)?;
        files.write(&files.next_cert, cert_pem.as_bytes(), 0o644)?;
        rename(&files.next_key, &files.key)?;
        rename(&files.next_cert, &files.cert)?;
        sync_dir(&files.dir)?;
        tracing::info!(
            name = %self.config.name, not_after = cert.not_after, fingerprint = %key.fingerprint(),
            "renewal: new key and certificate installed"
        );
        Ok(cert)
    }
}

/// Finishes a renewal interrupted between its two renames: when the installed certificate is not for the
/// installed key but `agent.crt.next` is (and verifies), it becomes `agent.crt`. A leftover `agent.crt.next`
/// that is not needed is removed. Returns whether it finished one.
pub fn recover(files: &StateFiles, ca_pem: &str, name: &str) -> Result<bool, TlsError> {
    if !files.next_cert.exists() {
        return Ok(false);
    }
    let key = AgentKey::load(files)?;
    let current_fits = files
        .read(&files.cert)
        .and_then(|pem| tls::verify_agent_cert(&pem, ca_pem, name, &key))
        .is_ok();
    let next_fits = files
        .read(&files.next_cert)
        .and_then(|pem| tls::verify_agent_cert(&pem, ca_pem, name, &key))
        .is_ok();
    if !current_fits && next_fits {
        rename(&files.next_cert, &files.cert)?;
        sync_dir(&files.dir)?;
        tracing::warn!("finished a certificate renewal that was interrupted");
        return Ok(true);
    }
    std::fs::remove_file(&files.next_cert).map_err(|source| TlsError::Write {
        path: files.next_cert.clone(),
        source,
    })?;
    Ok(false)
}

fn rename(from: &Path, to: &Path) -> Result<(), TlsError> {
    std::fs::rename(from, to).map_err(|source| TlsError::Write {
        path: to.to_path_buf(),
        source,
    })
}

/// Makes the renames durable.
fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestCa, agent_cert as sign, test_ca};

    fn ca() -> TestCa {
        test_ca("test CA")
    }

    /// An enrolled state directory and the renewal logic over it.
    fn enrolled(ca: &TestCa) -> (tempfile::TempDir, StateFiles, Renewal) {
        let (dir, config, files) = crate::testing::enrolled(ca);
        let renewal = Renewal::new(config, files.clone());
        (dir, files, renewal)
    }

    #[tokio::test]
    async fn renewal_replaces_key_and_certificate_together() {
        let ca = ca();
        let (_dir, files, renewal) = enrolled(&ca);
        let old_key = std::fs::read_to_string(&files.key).expect("key");
        let old_cert = std::fs::read_to_string(&files.cert).expect("cert");

        let csr = renewal.csr().await.expect("csr");
        // Until the certificate comes, the current pair is untouched.
        assert_eq!(std::fs::read_to_string(&files.key).expect("key"), old_key);
        let new_key = std::fs::read_to_string(&files.next_key).expect("next key");
        assert_ne!(new_key, old_key);

        let cert = sign(&ca, &csr);
        let installed = renewal.install(&cert).await.expect("install");
        assert_eq!(installed.cert_pem, cert);
        assert_eq!(std::fs::read_to_string(&files.key).expect("key"), new_key);
        assert_eq!(std::fs::read_to_string(&files.cert).expect("cert"), cert);
        assert_ne!(cert, old_cert);
        assert!(!files.next_key.exists() && !files.next_cert.exists());
        let key = AgentKey::load(&files).expect("key");
        tls::verify_agent_cert(&cert, &ca.pem, "kinetic", &key).expect("the pair fits");

        // Nothing is pending any more.
        assert!(matches!(
            renewal.install(&cert).await,
            Err(RenewError::NothingPending)
        ));
    }

    #[tokio::test]
    async fn a_certificate_for_another_key_or_ca_changes_nothing() {
        let ca = ca();
        let (_dir, files, renewal) = enrolled(&ca);
        let old_key = std::fs::read_to_string(&files.key).expect("key");
        let old_csr = renewal.csr().await.expect("csr");
        // A second RenewCsr replaces the pending key: a certificate for the first one no longer fits.
        let _ = renewal.csr().await.expect("csr");
        let err = renewal.install(&sign(&ca, &old_csr)).await.unwrap_err();
        assert!(matches!(err, RenewError::BadCertificate(_)), "{err}");
        // Another CA's certificate for the right key.
        let csr = renewal.csr().await.expect("csr");
        let err = renewal.install(&sign(&self::ca(), &csr)).await.unwrap_err();
        assert!(matches!(err, RenewError::BadCertificate(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&files.key).expect("key"), old_key);
    }

    #[tokio::test]
    async fn an_install_interrupted_between_the_renames_is_finished_at_start() {
        let ca = ca();
        let (_dir, files, renewal) = enrolled(&ca);
        let cert = sign(&ca, &renewal.csr().await.expect("csr"));
        // What a crash after the key's rename leaves: new key, old certificate, new one beside it.
        files
            .write(&files.next_cert, cert.as_bytes(), 0o644)
            .expect("write");
        std::fs::rename(&files.next_key, &files.key).expect("rename");
        assert!(recover(&files, &ca.pem, "kinetic").expect("recover"));
        assert_eq!(std::fs::read_to_string(&files.cert).expect("cert"), cert);
        assert!(!files.next_cert.exists());

        // A leftover that is not needed goes away; the installed pair stays.
        files
            .write(&files.next_cert, b"junk", 0o644)
            .expect("write");
        assert!(!recover(&files, &ca.pem, "kinetic").expect("recover"));
        assert!(!files.next_cert.exists());
        assert_eq!(std::fs::read_to_string(&files.cert).expect("cert"), cert);
    }
}
