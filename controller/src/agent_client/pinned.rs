//! The TLS connection used only to enrol an agent: the agent's certificate is self-signed, so it is trusted
//! by the fingerprint of its public key, which the controller read over SSH from `tpa-agent init`. Nothing
//! else about the certificate (names, dates, issuer) is trusted or needed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::{Channel, Endpoint, Uri};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CONNECT_TIMEOUT;

/// Accepts exactly one public key; remembers what the server presented, for the error message.
#[derive(Debug)]
pub(super) struct PinnedKey {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
    presented: Mutex<Option<String>>,
}

impl PinnedKey {
    pub(super) fn new(fingerprint: &str) -> PinnedKey {
        PinnedKey {
            fingerprint: fingerprint.to_string(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            presented: Mutex::new(None),
        }
    }

    /// The fingerprint the server presented, if it got that far.
    pub(super) fn presented(&self) -> Option<String> {
        self.presented.lock().ok().and_then(|p| p.clone())
    }
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (_, cert) = X509Certificate::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let presented = tpa_proto::spki_fingerprint(cert.public_key().raw);
        let matches = presented == self.fingerprint;
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(presented);
        }
        if matches {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    // The handshake signatures prove the server holds the pinned key's private half.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A gRPC channel to `addr` over TLS that trusts only `verifier`'s pinned key.
pub(super) async fn connect(addr: SocketAddr, verifier: Arc<PinnedKey>) -> anyhow::Result<Channel> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("building the TLS configuration")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            // The verifier ignores names; SNI just has to be syntactically valid.
            let name = ServerName::try_from("tpa-agent").map_err(std::io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(CONNECT_TIMEOUT);
    Ok(endpoint.connect_with_connector(connect).await?)
}
