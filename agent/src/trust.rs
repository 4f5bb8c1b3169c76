//! Replacing the CAs the agent trusts (`InstallTrust`), the agent's part of a CA rotation
//! (`tpa-controller rotate-ca`): the controller first adds the new CA beside the old one, moves every
//! certificate to the new one, then drops the old CA.
//!
//! The agent refuses a set that would lock anyone out: its own certificate and the calling controller's
//! must both chain to it. `ca.crt` is replaced atomically; the agent service then restarts in process on
//! the same socket, as after a renewal.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::config::AgentConfig;
use crate::tls::{self, AgentKey, StateFiles, TlsError};

/// Why a trust set was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the trust set holds no CA certificate")]
    Empty,
    #[error("the trust set is not a list of PEM certificates: {0}")]
    Unreadable(String),
    #[error("this agent's own certificate does not chain to the new trust set: {0}")]
    OwnCertificate(#[source] TlsError),
    #[error(
        "the calling controller's certificate does not chain to the new trust set (it would lock itself \
         out): {0}"
    )]
    Caller(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Checks `ca_pem` (one or more CA certificates, PEM) against this agent's certificate and the caller's
/// (`caller`, DER, already verified by rustls against the current set), then writes it as `ca.crt`.
/// Returns whether it differed from the installed set.
pub fn install(
    config: &AgentConfig,
    files: &StateFiles,
    ca_pem: &str,
    caller: &CertificateDer<'_>,
) -> Result<bool, TrustError> {
    let roots = roots(ca_pem, &config.name)?;
    let key = AgentKey::load(files)?;
    let own = files.read(&files.cert)?;
    tls::verify_agent_cert(&own, ca_pem, &config.name, &key).map_err(TrustError::OwnCertificate)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TrustError::Caller(e.to_string()))?;
    verifier
        .verify_client_cert(caller, &[], UnixTime::now())
        .map_err(|e| TrustError::Caller(e.to_string()))?;
    let current = files.read(&files.ca)?;
    if current.trim() == ca_pem.trim() {
        return Ok(false);
    }
    let content = format!("{}\n", ca_pem.trim());
    tls::write_atomic(&files.ca, content.as_bytes(), 0o644).map_err(|source| TlsError::Write {
        path: files.ca.clone(),
        source,
    })?;
    tracing::info!(
        cas = CertificateDer::pem_slice_iter(ca_pem.as_bytes()).count(),
        "trust set replaced"
    );
    Ok(true)
}

fn roots(ca_pem: &str, name: &str) -> Result<rustls::RootCertStore, TrustError> {
    let roots = tls::ca_roots(ca_pem, name).map_err(|e| TrustError::Unreadable(e.to_string()))?;
    if roots.is_empty() {
        return Err(TrustError::Empty);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

    use super::*;
    use crate::testing::{TestCa, agent_cert, enrolled, test_ca as ca};

    fn controller_cert(ca: &TestCa) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec![tpa_proto::CONTROLLER_IDENTITY.to_string()]).expect("p");
        params
            .distinguished_name
            .push(DnType::CommonName, tpa_proto::CONTROLLER_IDENTITY);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .signed_by(&key, &ca.issuer)
            .expect("sign")
            .der()
            .clone()
    }

    #[test]
    fn a_rotation_adds_the_new_ca_then_drops_the_old_one() {
        let (old, new) = (ca("old"), ca("new"));
        let (_dir, config, files) = enrolled(&old);
        let both = format!("{}{}", old.pem, new.pem);
        assert!(install(&config, &files, &both, &controller_cert(&old)).expect("add"));
        assert_eq!(
            std::fs::read_to_string(&files.ca).unwrap().trim(),
            both.trim()
        );
        // The same set again changes nothing.
        assert!(!install(&config, &files, &both, &controller_cert(&new)).expect("same"));

        // The new CA alone, while the agent's certificate is still the old CA's: refused.
        let err = install(&config, &files, &new.pem, &controller_cert(&new)).unwrap_err();
        assert!(matches!(err, TrustError::OwnCertificate(_)), "{err}");

        // Once its certificate comes from the new CA, the old one can go.
        let key = AgentKey::load(&files).expect("key");
        let renewed = agent_cert(&new, &key.csr("kinetic", &[]).expect("csr"));
        files
            .write(&files.cert, renewed.as_bytes(), 0o644)
            .expect("cert");
        // … but not by a controller that still presents the old CA's certificate.
        let err = install(&config, &files, &new.pem, &controller_cert(&old)).unwrap_err();
        assert!(matches!(err, TrustError::Caller(_)), "{err}");
        assert!(install(&config, &files, &new.pem, &controller_cert(&new)).expect("drop"));
        assert_eq!(
            std::fs::read_to_string(&files.ca).unwrap().trim(),
            new.pem.trim()
        );
    }

    #[test]
    fn garbage_and_empty_sets_are_refused_and_change_nothing() {
        let old = ca("old");
        let (_dir, config, files) = enrolled(&old);
        let caller = controller_cert(&old);
        assert!(matches!(
            install(&config, &files, "", &caller).unwrap_err(),
            TrustError::Empty
        ));
        let garbage = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            install(&config, &files, garbage, &caller).unwrap_err(),
            TrustError::Unreadable(_)
        ));
        assert_eq!(std::fs::read_to_string(&files.ca).unwrap(), old.pem);
    }
}
