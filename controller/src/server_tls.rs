//! Postgres server certificates: the key is generated on the host (and never leaves it),
//! the host sends a CSR, the cluster CA signs it for the host's name and address. A current
//! certificate for that key is kept, so a re-deploy changes nothing.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::agent_client::{AgentClient, ExecCommand};
use crate::pki::{CertUsage, Pki, RENEW_BEFORE};

/// Reads `cert_file` and the public half of `key_file` on the host.
const READ_SCRIPT: &str = r#"cert="$1"; key="$2"
[ -f "$cert" ] && cat "$cert"
echo "--tpa--"
[ -f "$key" ] && openssl pkey -in "$key" -pubout 2>/dev/null
exit 0"#;

/// Creates the key if missing (root-owned, 0600: the planner hands it to postgres) and
/// prints a CSR for it.
const CSR_SCRIPT: &str = r#"set -e; key="$1"; name="$2"
umask 077; mkdir -p "$(dirname "$key")"; chmod 755 "$(dirname "$key")"
[ -f "$key" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>/dev/null
openssl req -new -key "$key" -subj "/CN=$name""#;

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

pub async fn ensure(
    client: &mut AgentClient,
    pki: &Pki,
    name: &str,
    address: IpAddr,
    cert_file: &str,
    key_file: &str,
    check_only: bool,
) -> anyhow::Result<ServerCert> {
    let out = sh(client, READ_SCRIPT, &[cert_file, key_file]).await?;
    let (cert, key) = out.split_once("--tpa--").unwrap_or((&out, ""));
    if is_current(pki.ca_cert_pem(), cert.trim(), key.trim(), name, address) {
        return Ok(ServerCert::Current(cert.trim().to_string() + "\n"));
    }
    if check_only {
        return Ok(ServerCert::WouldIssue);
    }
    let csr = sh(client, CSR_SCRIPT, &[key_file, name]).await?;
    let pem = pki
        .sign_csr(&csr, &[name.to_string()], &[address], CertUsage::Server)
        .with_context(|| format!("signing the Postgres certificate request of {name}"))?;
    Ok(ServerCert::Issued(pem))
}

async fn sh(client: &mut AgentClient, script: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    client
        .exec_stdout(ExecCommand {
            argv,
            ..Default::default()
        })
        .await
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
