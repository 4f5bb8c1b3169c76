//! The controller's side of enrolment (docs/protocol.md): the join token, the document `tpa-agent init`
//! reads from stdin, parsing what init prints, and the two `Enrol` RPCs over the pinned connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::RngCore as _;
use tpa_proto::pb;
use tpa_proto::pb::enrol_client::EnrolClient;

use super::pinned::{self, PinnedKey};
use crate::pki::Pki;

/// How long a join token stays valid after `tpa-agent init` (counted on the host's clock).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The deadline of the pinned connection and of each enrolment call.
const ENROL_DEADLINE: Duration = Duration::from_secs(30);

/// A single-use join token: 32 random bytes, hex. Secret: its `Debug` hides it and it only travels in the
/// init document (stdin over SSH) and in `Enrol` requests (TLS).
#[derive(Clone)]
pub struct JoinToken(String);

impl JoinToken {
    /// A fresh random token.
    pub fn generate() -> JoinToken {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        JoinToken(hex::encode(bytes))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// The TOML document to pipe into `tpa-agent init --name <host> [--san <ip>]` over SSH. It contains the
/// token: write it to the process's stdin, never to a file, a log or an argument.
pub fn init_document(ca_cert_pem: &str, token: &JoinToken, lifetime: Duration) -> String {
    // TOML literal multi-line strings take PEM verbatim (PEM never contains ''').
    format!(
        "ca_cert = '''\n{}'''\njoin_token = \"{}\"\ntoken_lifetime_secs = {}\n",
        ca_cert_pem.trim_end().to_owned() + "\n",
        token.expose(),
        lifetime.as_secs().max(1)
    )
}

/// What `tpa-agent init` reported on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Ready: pin `fingerprint` and call [`enrol`].
    Pending { fingerprint: String },
    /// Already enrolled with this cluster's CA; nothing to do.
    Enrolled { fingerprint: String },
}

/// Parses init's stdout: one line, `pending sha256:<hex>` or `enrolled sha256:<hex>`.
pub fn parse_init_output(host: &str, stdout: &str) -> anyhow::Result<InitOutcome> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim();
    let valid_fingerprint = |f: &str| {
        f.strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    match line.split_once(' ') {
        Some(("pending", f)) if valid_fingerprint(f) => Ok(InitOutcome::Pending {
            fingerprint: f.to_string(),
        }),
        Some(("enrolled", f)) if valid_fingerprint(f) => Ok(InitOutcome::Enrolled {
            fingerprint: f.to_string(),
        }),
        _ => bail!(
            "unexpected output from `tpa-agent init` on {host}: {line:?}; is the installed agent the same \
             version as the controller?"
        ),
    }
}

/// Enrols the agent listening at `addr`: connects trusting only `pinned_fingerprint`, gets a CSR with
/// `token`, has the cluster CA sign it for `names` (the first is the host name) and `ips`, and installs the
/// certificate. The agent then serves the `Agent` service over mutual TLS on the same address.
pub async fn enrol(
    addr: SocketAddr,
    pinned_fingerprint: &str,
    token: &JoinToken,
    pki: &Pki,
    names: &[String],
    ips: &[IpAddr],
) -> anyhow::Result<()> {
    let host = names.first().map(String::as_str).unwrap_or("?");
    let verifier = Arc::new(PinnedKey::new(pinned_fingerprint));
    let connected = tokio::time::timeout(ENROL_DEADLINE, pinned::connect(addr, verifier.clone()))
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "no TLS connection within {} s",
                ENROL_DEADLINE.as_secs()
            ))
        });
    let channel = match connected {
        Ok(channel) => channel,
        Err(error) => match verifier.presented() {
            Some(presented) if presented != pinned_fingerprint => bail!(
                "refusing to enrol {host} at {addr}: it presented key {presented}, but `tpa-agent init` on the \
                 host reported {pinned_fingerprint}; something else answers on that address (or the agent's \
                 key changed): check the host and re-run bootstrap"
            ),
            _ => {
                return Err(error).with_context(|| {
                    format!("cannot reach the agent on {host} at {addr} to enrol it")
                });
            }
        },
    };
    let mut client = EnrolClient::new(channel);

    let call = client.request_csr(super::request(
        pb::RequestCsrRequest {
            token: token.expose().to_string(),
        },
        ENROL_DEADLINE,
    ));
    let csr = super::within(host, "RequestCsr", ENROL_DEADLINE, call)
        .await?
        .into_inner();
    if csr.protocol_version != tpa_proto::PROTOCOL_VERSION {
        bail!(super::protocol_mismatch(host, csr.protocol_version));
    }
    let cert_pem = pki
        .sign_agent_csr(&csr.csr_pem, names, ips)
        .with_context(|| format!("signing the certificate request of {host}"))?;
    let call = client.install_certificate(super::request(
        pb::InstallCertificateRequest {
            token: token.expose().to_string(),
            cert_pem,
        },
        ENROL_DEADLINE,
    ));
    super::within(host, "InstallCertificate", ENROL_DEADLINE, call).await?;
    tracing::info!(%host, %addr, agent_version = %csr.agent_version, "agent enrolled");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_long_and_hidden() {
        let (a, b) = (JoinToken::generate(), JoinToken::generate());
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 64);
        assert_eq!(format!("{a:?}"), "JoinToken(<redacted>)");
    }

    #[test]
    fn init_output_is_parsed_strictly() {
        let fp = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            parse_init_output("h", &format!("pending {fp}\n")).expect("pending"),
            InitOutcome::Pending {
                fingerprint: fp.clone()
            }
        );
        assert_eq!(
            parse_init_output("h", &format!("enrolled {fp}")).expect("enrolled"),
            InitOutcome::Enrolled { fingerprint: fp }
        );
        let err = parse_init_output("kinetic", "pending sha256:zz")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kinetic") && err.contains("sha256:zz"),
            "{err}"
        );
    }
}
