//! Postgres server certificates: the key is generated on the host (and never leaves it),
//! the host sends a CSR, the cluster CA signs it for the host's name and address. A current
//! certificate for that key is kept, so a re-deploy changes nothing.
//!
//! All host work goes through the agent's typed `ServerKey` call (no shell, no openssl): it
//! reports the key's public half and the installed certificate, and when asked creates the key
//! (root, 0600; the planner then hands it to postgres) and makes the CSR with rcgen.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::agent_client::AgentClient;
use crate::pki::{CertUsage, Pki, RENEW_BEFORE};

/// What the certificate step found or did on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCert {
    /// The host's certificate is current: its PEM.
    Current(String),
    /// A new certificate was issued for the host's key: its PEM.
    Issued(String),
    /// Check mode and no current certificate: one would be issued.
    WouldIssue,
}

impl ServerCert {
    pub fn pem(&self) -> Option<&str> {
        match self {
            ServerCert::Current(p) | ServerCert::Issued(p) => Some(p),
            ServerCert::WouldIssue => None,
        }
    }
}

/// Keeps the host's current certificate, or (unless `check_only`) has the agent create the key if
/// needed and make a CSR, and signs it for `name` and `address`.
pub async fn ensure(
    client: &mut AgentClient,
    pki: &Pki,
    name: &str,
    address: IpAddr,
    cert_file: &str,
    key_file: &str,
    check_only: bool,
) -> anyhow::Result<ServerCert> {
    ensure_for(
        client,
        pki,
        (name, address),
        (cert_file, key_file),
        CertUsage::Server,
        check_only,
    )
    .await
}

/// [`ensure`] for a certificate of another `usage` (etcd's and Patroni's: server and client).
pub async fn ensure_for(
    client: &mut AgentClient,
    pki: &Pki,
    (name, address): (&str, IpAddr),
    (cert_file, key_file): (&str, &str),
    usage: CertUsage,
    check_only: bool,
) -> anyhow::Result<ServerCert> {
    let seen = client.server_key(key_file, cert_file, false, None).await?;
    if let (Some(cert), Some(key)) = (&seen.cert_pem, &seen.public_key_pem)
        && is_current(pki.ca_cert_pem(), cert.trim(), key.trim(), name, address)
    {
        return Ok(ServerCert::Current(cert.trim().to_string() + "\n"));
    }
    if check_only {
        return Ok(ServerCert::WouldIssue);
    }
    let made = client
        .server_key(key_file, cert_file, true, Some(name))
        .await?;
    let csr = made.csr_pem.with_context(|| {
        format!("the agent on {name} made no certificate request for {key_file}")
    })?;
    let pem = pki
        .sign_csr(&csr, &[name.to_string()], &[address], usage)
        .with_context(|| format!("signing the certificate request of {name} for {key_file}"))?;
    Ok(ServerCert::Issued(pem))
}

/// A certificate is kept when the CA signed it, it names the host and its address, it is
/// not about to expire, and it is for the key on the host.
pub fn is_current(
    ca_pem: &str,
    cert_pem: &str,
    key_pub_pem: &str,
    name: &str,
    address: IpAddr,
) -> bool {
    let parse = |pem: &str| {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .ok()
            .map(|(_, p)| p)
    };
    let (Some(ca), Some(cert), Some(key)) = (parse(ca_pem), parse(cert_pem), parse(key_pub_pem))
    else {
        return false;
    };
    let (Ok((_, ca)), Ok((_, cert))) = (
        X509Certificate::from_der(&ca.contents),
        X509Certificate::from_der(&cert.contents),
    ) else {
        return false;
    };
    let renew_at = std::time::SystemTime::now() + RENEW_BEFORE;
    let not_after = std::time::UNIX_EPOCH
        + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
    let names_ok = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            let has_name = san
                .value
                .general_names
                .iter()
                .any(|g| matches!(g, GeneralName::DNSName(n) if *n == name));
            let has_ip = san.value.general_names.iter().any(|g| match g {
                GeneralName::IPAddress(bytes) => ip_bytes(address) == *bytes,
                _ => false,
            });
            has_name && has_ip
        });
    cert.verify_signature(Some(ca.public_key())).is_ok()
        && not_after > renew_at
        && names_ok
        && cert.public_key().raw == key.contents.as_slice()
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
