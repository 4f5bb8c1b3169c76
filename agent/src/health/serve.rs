//! `/metrics` over HTTP, opt-in (`agent_metrics_port` in config.yml, through the health spec):
//! plain HTTP bound to 127.0.0.1 only (`agent_metrics_listen: localhost`, the default), or
//! HTTPS on the agent's cluster address with the agent's certificate, requiring a client
//! certificate issued by the cluster CA (`tls`).
//!
//! A minimal HTTP/1.1 responder: one GET per connection, answered from the latest round, then
//! closed. Requests are bounded in size, time and number, so the port cannot tie the agent up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tpa_common::health_spec::{MetricsListen, MetricsSpec};

use super::schedule::Health;

/// A request must arrive (TLS handshake included) within this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The request head may be this long at most.
const MAX_REQUEST: usize = 8192;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 8;

/// What the TLS listener presents and trusts (PEM).
#[derive(Clone)]
pub struct TlsMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Follows the rounds' metrics setting: (re)binds the listener when it changes, stops it when
/// it goes away. `cluster_ip` is where the TLS listener binds (the agent's listen address); `tls` follows
/// the agent's certificate (a renewal sends the new one, used from the next connection on).
pub fn start(health: Health, cluster_ip: IpAddr, tls: watch::Receiver<TlsMaterial>) {
    tokio::spawn(async move {
        let mut rounds = health.subscribe();
        let mut current: Option<(MetricsSpec, JoinHandle<()>)> = None;
        loop {
            let wanted = rounds.borrow_and_update().metrics.clone();
            if current.as_ref().map(|(spec, _)| spec) != wanted.as_ref() {
                if let Some((_, task)) = current.take() {
                    task.abort();
                }
                if let Some(spec) = wanted {
                    let task = tokio::spawn(listen(
                        health.clone(),
                        spec.clone(),
                        cluster_ip,
                        tls.clone(),
                    ));
                    current = Some((spec, task));
                }
            }
            if rounds.changed().await.is_err() {
                return;
            }
        }
    });
}

async fn listen(
    health: Health,
    spec: MetricsSpec,
    cluster_ip: IpAddr,
    mut tls: watch::Receiver<TlsMaterial>,
) {
    let ip = match spec.listen {
        MetricsListen::Localhost => IpAddr::V4(Ipv4Addr::LOCALHOST),
        MetricsListen::Tls => cluster_ip,
    };
    let address = SocketAddr::new(ip, spec.port);
    let acceptor = |tls: &TlsMaterial| match spec.listen {
        MetricsListen::Localhost => Ok(None),
        MetricsListen::Tls => {
            server_config(tls).map(|config| Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
        }
    };
    let mut current = match acceptor(&tls.borrow_and_update()) {
        Ok(current) => current,
        Err(error) => {
            tracing::error!(%error, "metrics: cannot set up TLS; not serving /metrics");
            return;
        }
    };
    let socket = match TcpListener::bind(address).await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::error!(%address, %error, "metrics: cannot listen (agent_metrics_port in config.yml); not serving /metrics");
            return;
        }
    };
    tracing::info!(%address, tls = current.is_some(), "metrics: serving /metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        if tls.has_changed().unwrap_or(false) {
            match acceptor(&tls.borrow_and_update()) {
                Ok(renewed) => current = renewed,
                Err(error) => {
                    tracing::error!(%error, "metrics: cannot use the renewed certificate")
                }
            }
        }
        let health = health.clone();
        let acceptor = current.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = tokio::time::timeout(REQUEST_TIMEOUT, async {
                match acceptor {
                    None => serve_one(stream, &health).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => serve_one(stream, &health).await,
                        Err(error) => tracing::debug!(%error, "metrics: TLS handshake refused"),
                    },
                }
            })
            .await;
            if served.is_err() {
                tracing::debug!("metrics: a client took too long");
            }
        });
    }
}

/// Client certificates must chain to the cluster CA.
fn server_config(tls: &TlsMaterial) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let chain = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// Reads one request head and answers it.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, health: &Health) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST {
            let _ = respond(&mut stream, "431 Request Header Fields Too Large", "").await;
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let (status, body) = route(line.lines().next().unwrap_or(""), || {
        super::metrics::render(&health.subscribe().borrow().samples)
    });
    let _ = respond(&mut stream, status, &body).await;
}

/// The status and body for a request line.
fn route(request_line: &str, metrics: impl FnOnce() -> String) -> (&'static str, String) {
    let mut parts = request_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", metrics()),
        (Some("GET"), Some(_)) => ("404 Not Found", "only /metrics is served here\n".into()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".into()),
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        let metrics = || "tpa_pg_up 1\n".to_string();
        assert_eq!(
            route("GET /metrics HTTP/1.1", metrics),
            ("200 OK", "tpa_pg_up 1\n".into())
        );
        assert_eq!(route("GET / HTTP/1.1", metrics).0, "404 Not Found");
        assert_eq!(
            route("POST /metrics HTTP/1.1", metrics).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route("", metrics).0, "405 Method Not Allowed");
    }
}
