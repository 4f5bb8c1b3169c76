//! Renewing an enrolled agent's certificate over its mutual-TLS channel (deploy does it right after
//! bootstrap, for every agent at once).
//!
//! The decision is [`Pki::renewal_due`]: the certificate the agent serves (from `Hello`) is within the
//! policy's `renew_before` of expiry, or another CA signed it. Then: `RenewCsr` (the agent makes a new key on
//! its host; only the CSR travels), the CA signs it with the names it decides, as at enrolment
//! ([`Pki::sign_agent_csr`]), `InstallRenewal` (the agent swaps key and certificate and restarts its service
//! on the same socket), and the controller reconnects and checks that the agent now serves that certificate.
//!
//! An expired certificate cannot be renewed this way (the TLS handshake fails): bootstrap then re-enrols
//! the agent over SSH before this step runs.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};

use super::AgentClient;
use crate::pki::{CertifiedKey, Pki, RenewReason};

/// What [`renew_if_due`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The certificate is current: nothing done.
    Current,
    /// Renewed; the new certificate expires at `not_after` (Unix seconds).
    Renewed { not_after: i64 },
    /// `--check`: it would be renewed, for this reason.
    WouldRenew(RenewReason),
    /// The agent does not say which certificate it serves (older than renewal): left alone.
    Unknown,
}

/// The agent of `host` (at `addr`, certificate names `names` and `ips`) with its certificate renewed when
/// [`Pki::renewal_due`] says so at `now` (Unix seconds); returns the client to use from then on (a new
/// connection after a renewal). With `check`, changes nothing.
pub async fn renew_if_due(
    mut client: AgentClient,
    addr: SocketAddr,
    pki: &Pki,
    identity: &CertifiedKey,
    ips: &[IpAddr],
    now: i64,
    check: bool,
) -> anyhow::Result<(AgentClient, Renewal)> {
    if client.cert_pem().is_empty() {
        return Ok((client, Renewal::Unknown));
    }
    let Some(reason) = pki.renewal_due(client.cert_pem(), now) else {
        return Ok((client, Renewal::Current));
    };
    if check {
        return Ok((client, Renewal::WouldRenew(reason)));
    }
    let host = client.host().to_string();
    tracing::info!(%host, %reason, "renewing the agent certificate");
    let csr = client.renew_csr().await?;
    let cert_pem = pki
        .sign_agent_csr(&csr, std::slice::from_ref(&host), ips)
        .with_context(|| format!("signing the renewal request of {host}"))?;
    let not_after = client.install_renewal(cert_pem.clone()).await?;
    drop(client);
    let renewed =
        crate::bootstrap::connect_with_retry(addr, &host, pki.ca_cert_pem(), identity)
            .await
            .with_context(|| {
                format!(
                    "reconnecting to the agent on {host} after renewing its certificate (its journal says \
                     why: journalctl -u tpa-agent)"
                )
            })?;
    if renewed.cert_pem() != cert_pem {
        bail!(
            "the agent on {host} installed the renewed certificate but still serves another one: check its \
             journal (journalctl -u tpa-agent) and deploy again"
        );
    }
    Ok((renewed, Renewal::Renewed { not_after }))
}

/// What [`sync_trust`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustSync {
    /// The agent trusts exactly the cluster's CAs: nothing done.
    Current,
    /// The agent now trusts them (its service restarted).
    Installed,
    /// `--check`: they would be installed.
    WouldInstall,
    /// The agent does not say which CAs it trusts (older than CA rotation): left alone.
    Unknown,
}

/// The agent of `client` made to trust exactly the CAs of `trust_pem` (`tls/ca.crt`: during a CA
/// rotation the old and the new one, see [`crate::pki::rotation`]); returns the client to use from then
/// on (a new connection after a change). With `check`, changes nothing.
pub async fn sync_trust(
    mut client: AgentClient,
    addr: SocketAddr,
    trust_pem: &str,
    identity: &CertifiedKey,
    check: bool,
) -> anyhow::Result<(AgentClient, TrustSync)> {
    use crate::pki::rotation::same_certificates;
    if client.trusted_ca_pem().is_empty() {
        return Ok((client, TrustSync::Unknown));
    }
    if same_certificates(client.trusted_ca_pem(), trust_pem) {
        return Ok((client, TrustSync::Current));
    }
    if check {
        return Ok((client, TrustSync::WouldInstall));
    }
    let host = client.host().to_string();
    if !client.install_trust(trust_pem.to_string()).await? {
        return Ok((client, TrustSync::Current));
    }
    drop(client);
    let reconnected = crate::bootstrap::connect_with_retry(addr, &host, trust_pem, identity)
        .await
        .with_context(|| {
            format!(
                "reconnecting to the agent on {host} after replacing the CAs it trusts (its journal says \
                 why: journalctl -u tpa-agent)"
            )
        })?;
    if !same_certificates(reconnected.trusted_ca_pem(), trust_pem) {
        bail!(
            "the agent on {host} accepted the new CAs but still trusts others: check its journal \
             (journalctl -u tpa-agent) and deploy again"
        );
    }
    Ok((reconnected, TrustSync::Installed))
}
