//! The cluster CA: created on first use in `<cluster dir>/tls/`, loaded afterwards; it issues the controller's
//! client certificate and signs the CSRs of agents (and later of Postgres servers).
//!
//! Keys stay where they are used: an agent generates its key on its host and sends a CSR; the CA decides the
//! names in the certificate itself and never copies them from the CSR.
//!
//! Files, all written through [`crate::cluster_dir::write_file`]; the keys are sealed with the secrets key
//! ([`Secrets::seal_file`], docs/secrets.md), since the cluster directory is meant to live in git:
//! - `tls/ca.crt`, `tls/ca.key.enc`: the CA.
//! - `tls/controller.crt`, `tls/controller.key.enc`: the controller's client identity, reissued when it is
//!   within the [`CertPolicy`]'s `renew_before` of expiry or was issued by another CA.
//!
//! Agents' certificates and the controller's identity live [`CertPolicy::lifetime`] (`agent_cert_lifetime`
//! in config.yml, default [`LEAF_LIFETIME`]) and are renewed within `renew_before` of expiry
//! (`agent_cert_renew_before`, default [`RENEW_BEFORE`]): [`Pki::renewal_due`] decides, `deploy` renews agents
//! over their mutual-TLS channel (`agent_client::renew`).
//!
//! A plaintext `tls/ca.key` or `tls/controller.key` (what older versions wrote) is sealed on first use, then
//! removed. Loading checks that each certificate belongs with its key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rand::RngCore;
use rcgen::PublicKeyData as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use tpa_proto::CONTROLLER_IDENTITY;
use zeroize::Zeroizing;

use crate::cluster_dir::{self, write_file};
use crate::secrets::Secrets;

pub mod rotation;

/// Lifetime of the cluster CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of every certificate the CA issues, unless config.yml sets `agent_cert_lifetime` (agents and the
/// controller's identity).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate this close to expiry is reissued (`agent_cert_renew_before`).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start being valid this long before they are issued, so a host whose clock is slightly behind
/// the controller's accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// How long agents' certificates and the controller's identity live, and how close to expiry they are
/// renewed. Config validation guarantees `0 < renew_before < lifetime <= CA_LIFETIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    pub lifetime: Duration,
    pub renew_before: Duration,
}

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            lifetime: LEAF_LIFETIME,
            renew_before: RENEW_BEFORE,
        }
    }
}

/// Why a certificate must be issued again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewReason {
    /// It expires at `not_after` (Unix seconds), within the policy's `renew_before`, or has expired.
    Expiring { not_after: i64 },
    /// This CA did not sign it (a CA was replaced).
    OtherCa,
    /// It cannot be parsed (or is missing).
    Unreadable,
}

impl std::fmt::Display for RenewReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenewReason::Expiring { not_after } => {
                write!(f, "it expires {}", unix_text(*not_after))
            }
            RenewReason::OtherCa => write!(f, "it was issued by another CA"),
            RenewReason::Unreadable => write!(f, "it cannot be read"),
        }
    }
}

/// Unix seconds as UTC text, e.g. `2026-12-06 14:05:00 UTC`.
pub fn unix_text(secs: i64) -> String {
    let Ok(at) = OffsetDateTime::from_unix_timestamp(secs) else {
        return format!("at {secs} (Unix time)");
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// What a signed certificate may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUsage {
    /// A TLS server: an agent, a Postgres server.
    Server,
    /// A TLS client.
    Client,
    /// Both: an etcd member (its peers are its clients) and Patroni (a REST server and an
    /// etcd client).
    ServerAndClient,
}

/// A certificate and its private key, both PEM. The key is secret: never log it.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Why the CA refused or failed to issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot parse the CSR: {0}")]
    InvalidCsr(#[source] rcgen::Error),
    #[error("the CSR asks for common name {found:?} but the controller expected {expected:?}")]
    UnexpectedCommonName { expected: String, found: String },
    #[error("the CSR asks for name {0:?}, which the controller did not expect for this host")]
    UnexpectedSan(String),
    #[error("refusing to issue a certificate for {0:?}: that name is the controller's identity")]
    ReservedName(String),
    #[error("a certificate needs at least one DNS name")]
    NoName,
    #[error("invalid certificate name {name:?}: {source}")]
    InvalidName { name: String, source: rcgen::Error },
    #[error("cannot parse the CA certificate or key: {0}")]
    InvalidCa(#[source] rcgen::Error),
    #[error(
        "the CA certificate is not the certificate of the CA key (they come from different CAs)"
    )]
    CaKeyMismatch,
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The cluster CA, in memory.
pub struct Pki {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Lifetime and renewal of agents' certificates and of the controller's identity.
    policy: CertPolicy,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

// === impl Pki ===

impl Pki {
    /// Loads the CA from `<cluster_root>/tls/`, creating it (and the directory) on first use; its key is
    /// sealed with the key of `secrets`.
    pub fn load_or_create(cluster_root: &Path, secrets: &Secrets) -> anyhow::Result<Pki> {
        let files = TlsFiles::new(cluster_root);
        cluster_dir::ensure_gitignore(cluster_root)?;
        seal_plaintext_key(&files.ca_key_plaintext, &files.ca_key, secrets)?;
        if files.ca_cert.exists() || files.ca_key.exists() {
            let loaded = read(&files.ca_cert)
                .and_then(|cert| Ok((cert, open_key(&files.ca_key, secrets)?)))
                .and_then(|(cert, key)| Ok(Pki::from_pem(&cert, &key)?));
            if files.ca_next_key.exists() {
                return loaded.with_context(|| {
                    format!(
                        "loading the cluster CA from {}: a CA rotation was interrupted; run `tpa-controller \
                         rotate-ca {}` again to finish it",
                        files.dir.display(),
                        cluster_root.display()
                    )
                });
            }
            return loaded.with_context(|| {
                format!(
                    "loading the cluster CA from {}: restore ca.crt and ca.key.enc from version control (both \
                     from the same commit), or remove both to create a new CA (every agent must then be \
                     re-enrolled)",
                    files.dir.display()
                )
            });
        }
        let pki = Pki::generate(&ca_name(cluster_root))?;
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("creating {}", files.dir.display()))?;
        let key_pem = Zeroizing::new(pki.issuer.key().serialize_pem());
        secrets.seal_file(&files.ca_key, key_pem.as_bytes())?;
        write_file(&files.ca_cert, pki.cert_pem.as_bytes(), 0o644)?;
        tracing::info!(dir = %files.dir.display(), "created the cluster CA");
        Ok(pki)
    }

    /// A new self-signed CA named `common_name`, valid for [`CA_LIFETIME`].
    pub fn generate(common_name: &str) -> Result<Pki, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_LIFETIME;
        let cert = params.self_signed(&key)?;
        Ok(Pki {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            policy: CertPolicy::default(),
        })
    }

    /// The CA from its certificate and key (both PEM), which must belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Pki, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::InvalidCa)?;
        if !cert_has_key(cert_pem, &key) {
            return Err(PkiError::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(PkiError::InvalidCa)?;
        Ok(Pki {
            cert_pem: cert_pem.to_string(),
            issuer,
            policy: CertPolicy::default(),
        })
    }

    /// The same CA issuing agents' certificates and the controller's identity under `policy` (from
    /// config.yml, [`crate::config::Cluster::cert_policy`]).
    pub fn with_policy(mut self, policy: CertPolicy) -> Pki {
        self.policy = policy;
        self
    }

    /// The lifetime and renewal policy in force.
    pub fn policy(&self) -> CertPolicy {
        self.policy
    }

    /// The CA certificate (PEM): what agents and Postgres clients trust.
    pub fn ca_cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a CSR for `names` (DNS names; the first is the common name) and `ips`.
    ///
    /// The CSR only contributes its public key: its subject must be `names[0]`, any names it asks for must be
    /// among `names`/`ips`, and the certificate carries exactly `names` + `ips`, whatever the CSR says.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        names: &[String],
        ips: &[IpAddr],
        usage: CertUsage,
    ) -> Result<String, PkiError> {
        self.sign_checked_csr(csr_pem, names, ips, usage, LEAF_LIFETIME)
    }

    /// [`Pki::sign_csr`] for an agent's CSR (at enrolment and at renewal): a TLS server certificate that
    /// lives the policy's lifetime.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        names: &[String],
        ips: &[IpAddr],
    ) -> Result<String, PkiError> {
        self.sign_checked_csr(csr_pem, names, ips, CertUsage::Server, self.policy.lifetime)
    }

    fn sign_checked_csr(
        &self,
        csr_pem: &str,
        names: &[String],
        ips: &[IpAddr],
        usage: CertUsage,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::InvalidCsr)?;
        let expected_cn = names.first().ok_or(PkiError::NoName)?;
        let found_cn = common_name(&csr.params.distinguished_name).unwrap_or_default();
        if &found_cn != expected_cn {
            return Err(PkiError::UnexpectedCommonName {
                expected: expected_cn.clone(),
                found: found_cn,
            });
        }
        for san in &csr.params.subject_alt_names {
            let allowed = match san {
                SanType::DnsName(name) => names.iter().any(|n| n == name.as_str()),
                SanType::IpAddress(ip) => ips.contains(ip),
                _ => false,
            };
            if !allowed {
                return Err(PkiError::UnexpectedSan(format!("{san:?}")));
            }
        }
        let params = leaf_params(names, ips, usage, lifetime)?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// Issues the controller's client identity ([`CONTROLLER_IDENTITY`]) with a fresh key.
    pub fn issue_controller_identity(&self) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = leaf_params_unchecked(
            &[CONTROLLER_IDENTITY.to_string()],
            &[],
            CertUsage::Client,
            self.policy.lifetime,
        )?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "tpa");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate named `name` with a fresh key, for a client outside the cluster (a Prometheus
    /// scraping the agents' `/metrics`): clientAuth only, the policy's lifetime; never the controller's name.
    pub fn issue_client_cert(&self, name: &str) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate()?;
        let params = leaf_params(
            &[name.to_string()],
            &[],
            CertUsage::Client,
            self.policy.lifetime,
        )?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The controller's client identity from `<cluster_root>/tls/controller.{crt,key.enc}`, issued (again)
    /// when missing, within the policy's `renew_before` of expiry, or not issued by this CA. A certificate that does
    /// not belong with the key is an error that says what to do.
    pub fn controller_identity(
        &self,
        cluster_root: &Path,
        secrets: &Secrets,
    ) -> anyhow::Result<CertifiedKey> {
        let files = TlsFiles::new(cluster_root);
        seal_plaintext_key(
            &files.controller_key_plaintext,
            &files.controller_key,
            secrets,
        )?;
        if files.controller_cert.exists() && files.controller_key.exists() {
            let existing = CertifiedKey {
                cert_pem: read(&files.controller_cert)?,
                key_pem: open_key(&files.controller_key, secrets)?.to_string(),
            };
            let key = KeyPair::from_pem(&existing.key_pem).with_context(|| {
                format!("{}: not a private key", files.controller_key.display())
            })?;
            if !cert_has_key(&existing.cert_pem, &key) {
                bail!(
                    "{} does not belong with the key in {} (restored from different commits, or an \
                     interrupted write?): remove both and run the command again; a new controller \
                     certificate is issued, and agents need nothing",
                    files.controller_cert.display(),
                    files.controller_key.display()
                );
            }
            if self.is_current(&existing.cert_pem) {
                return Ok(existing);
            }
            tracing::info!(cert = %files.controller_cert.display(), "renewing the controller certificate");
        }
        let identity = self.issue_controller_identity()?;
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("creating {}", files.dir.display()))?;
        secrets.seal_file(&files.controller_key, identity.key_pem.as_bytes())?;
        write_file(&files.controller_cert, identity.cert_pem.as_bytes(), 0o644)?;
        Ok(identity)
    }

    /// For read-only commands (`status`): the CA certificate and the controller's identity as
    /// deploy left them in `<cluster_root>/tls/`, or None when deploy never wrote them. Creates,
    /// renews and seals nothing, and never opens the CA key.
    pub fn existing_identity(
        cluster_root: &Path,
        secrets: &Secrets,
    ) -> anyhow::Result<Option<(String, CertifiedKey)>> {
        let files = TlsFiles::new(cluster_root);
        if !(files.ca_cert.exists()
            && files.controller_cert.exists()
            && files.controller_key.exists())
        {
            return Ok(None);
        }
        let identity = CertifiedKey {
            cert_pem: read(&files.controller_cert)?,
            key_pem: open_key(&files.controller_key, secrets)?.to_string(),
        };
        Ok(Some((read(&files.ca_cert)?, identity)))
    }

    /// True when `cert_pem` was signed by this CA and is not within the policy's `renew_before` of expiry.
    fn is_current(&self, cert_pem: &str) -> bool {
        self.renewal_due(cert_pem, OffsetDateTime::now_utc().unix_timestamp())
            .is_none()
    }

    /// Why `cert_pem` (an agent's certificate, or the controller's) must be renewed at `now` (Unix seconds),
    /// or None while it is current: signed by this CA and further than the policy's `renew_before` from
    /// expiry. How long it was issued for does not matter.
    pub fn renewal_due(&self, cert_pem: &str, now: i64) -> Option<RenewReason> {
        let Ok((_, ca_pem)) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()) else {
            return Some(RenewReason::OtherCa);
        };
        let Ok(ca) = ca_pem.parse_x509() else {
            return Some(RenewReason::OtherCa);
        };
        let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
            return Some(RenewReason::Unreadable);
        };
        let Ok(cert) = pem.parse_x509() else {
            return Some(RenewReason::Unreadable);
        };
        if cert.verify_signature(Some(ca.public_key())).is_err() {
            return Some(RenewReason::OtherCa);
        }
        let not_after = cert.validity().not_after.timestamp();
        let renew_before = i64::try_from(self.policy.renew_before.as_secs()).unwrap_or(i64::MAX);
        if not_after <= now.saturating_add(renew_before) {
            return Some(RenewReason::Expiring { not_after });
        }
        None
    }

    /// Expiry of `cert_pem` (Unix seconds), if it parses.
    pub fn not_after(cert_pem: &str) -> Option<i64> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
        let cert = pem.parse_x509().ok()?;
        Some(cert.validity().not_after.timestamp())
    }
}

/// Paths of the TLS files in a cluster directory.
struct TlsFiles {
    dir: PathBuf,
    ca_cert: PathBuf,
    /// Sealed with the secrets key.
    ca_key: PathBuf,
    /// What older versions wrote; sealed and removed on first use.
    ca_key_plaintext: PathBuf,
    controller_cert: PathBuf,
    controller_key: PathBuf,
    controller_key_plaintext: PathBuf,
    /// A rotation's new CA while the old one still signs (`rotation`).
    ca_next_cert: PathBuf,
    ca_next_key: PathBuf,
    /// Present while deploy must re-enrol agents of a replaced CA over SSH (`rotation`).
    reenrol: PathBuf,
}

impl TlsFiles {
    fn new(cluster_root: &Path) -> TlsFiles {
        let dir = cluster_root.join("tls");
        TlsFiles {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key.enc"),
            ca_key_plaintext: dir.join("ca.key"),
            controller_cert: dir.join("controller.crt"),
            controller_key: dir.join("controller.key.enc"),
            controller_key_plaintext: dir.join("controller.key"),
            ca_next_cert: dir.join("ca.next.crt"),
            ca_next_key: dir.join("ca.next.key.enc"),
            reenrol: dir.join("reenrol"),
            dir,
        }
    }
}

/// Seals a plaintext key an older version wrote into `sealed`, then removes the plaintext. Sealing
/// again after a crash between the two steps gives the same key.
fn seal_plaintext_key(plaintext: &Path, sealed: &Path, secrets: &Secrets) -> anyhow::Result<()> {
    let pem = match std::fs::read_to_string(plaintext) {
        Ok(pem) => Zeroizing::new(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", plaintext.display())),
    };
    KeyPair::from_pem(&pem).with_context(|| {
        format!(
            "{} is not a private key; restore it from version control, or remove it",
            plaintext.display()
        )
    })?;
    secrets.seal_file(sealed, pem.as_bytes())?;
    std::fs::remove_file(plaintext)
        .with_context(|| format!("removing {} after encrypting it", plaintext.display()))?;
    if let Some(dir) = plaintext.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    tracing::warn!(
        "{} was a plaintext key: encrypted it into {} and removed it. If it was ever committed, git \
         history still holds it: create a new CA (see docs/secrets.md)",
        plaintext.display(),
        sealed.display()
    );
    Ok(())
}

/// A sealed key's PEM text.
fn open_key(path: &Path, secrets: &Secrets) -> anyhow::Result<Zeroizing<String>> {
    let bytes = secrets
        .open_file(path)?
        .ok_or_else(|| anyhow!("{} is missing", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow!("{}: the decrypted key is not PEM text", path.display()))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// True when `cert_pem` certifies the public half of `key`.
fn cert_has_key(cert_pem: &str, key: &KeyPair) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    cert.public_key().raw == key.subject_public_key_info().as_slice()
}

/// The CA's common name: "tpa cluster CA <cluster dir name>", so an operator can tell CAs apart.
fn ca_name(cluster_root: &Path) -> String {
    let dir = cluster_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("tpa cluster CA {dir}").trim_end().to_string()
}

/// Leaf parameters for a host's certificate; refuses the controller's reserved name.
fn leaf_params(
    names: &[String],
    ips: &[IpAddr],
    usage: CertUsage,
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    if let Some(reserved) = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(CONTROLLER_IDENTITY))
    {
        return Err(PkiError::ReservedName(reserved.clone()));
    }
    leaf_params_unchecked(names, ips, usage, lifetime)
}

fn leaf_params_unchecked(
    names: &[String],
    ips: &[IpAddr],
    usage: CertUsage,
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    let first = names.first().ok_or(PkiError::NoName)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, first.as_str());
    for name in names {
        let dns = name
            .clone()
            .try_into()
            .map_err(|source| PkiError::InvalidName {
                name: name.clone(),
                source,
            })?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match usage {
        CertUsage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        CertUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        CertUsage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + lifetime;
    Ok(params)
}

fn common_name(dn: &DistinguishedName) -> Option<String> {
    Some(match dn.get(&DnType::CommonName)? {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    })
}

/// 16 random bytes, top bit clear so the DER integer stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rcgen::PublicKeyData;

    use super::*;

    fn csr(cn: &str, sans: &[&str]) -> (String, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        (
            params
                .serialize_request(&key)
                .expect("csr")
                .pem()
                .expect("pem"),
            key,
        )
    }

    fn parse(pem: &str) -> x509_parser::pem::Pem {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .expect("pem")
            .1
    }

    #[test]
    fn signs_csr_with_the_controllers_names_not_the_csrs() {
        let pki = Pki::generate("test CA").expect("CA");
        let (csr_pem, key) = csr("kinetic", &["kinetic"]);
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        let names = vec!["kinetic".to_string(), "kinetic.cluster".to_string()];
        let cert_pem = pki
            .sign_csr(&csr_pem, &names, &[ip], CertUsage::Server)
            .expect("signed");

        let pem = parse(&cert_pem);
        let cert = pem.parse_x509().expect("x509");
        assert_eq!(cert.subject().to_string(), "CN=kinetic");
        let sans = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("sans")
            .value;
        let shown: Vec<String> = sans.general_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown,
            [
                "DNSName(kinetic)",
                "DNSName(kinetic.cluster)",
                "IPAddress(0a:00:00:05)"
            ]
        );
        let eku = cert.extended_key_usage().expect("ext").expect("eku").value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        let ca_pem = parse(pki.ca_cert_pem());
        let ca = ca_pem.parse_x509().expect("ca");
        cert.verify_signature(Some(ca.public_key()))
            .expect("signed by the CA");
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime as u64, (LEAF_LIFETIME + CLOCK_SKEW).as_secs());
    }

    #[test]
    fn agent_certificates_and_the_controller_identity_follow_the_policy() {
        let policy = CertPolicy {
            lifetime: Duration::from_secs(90),
            renew_before: Duration::from_secs(60),
        };
        let pki = Pki::generate("test CA").expect("CA").with_policy(policy);
        let (csr_pem, _) = csr("kinetic", &["kinetic"]);
        let names = vec!["kinetic".to_string()];
        let agent = pki.sign_agent_csr(&csr_pem, &names, &[]).expect("signed");
        let controller = pki.issue_controller_identity().expect("identity");
        let server = pki
            .sign_csr(&csr_pem, &names, &[], CertUsage::Server)
            .expect("signed");
        let lifetime = |pem: &str| {
            let pem = parse(pem);
            let cert = pem.parse_x509().expect("x509");
            (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) as u64
        };
        assert_eq!(lifetime(&agent), 90 + CLOCK_SKEW.as_secs());
        assert_eq!(lifetime(&controller.cert_pem), 90 + CLOCK_SKEW.as_secs());
        // Postgres and other server certificates keep the default lifetime.
        assert_eq!(lifetime(&server), (LEAF_LIFETIME + CLOCK_SKEW).as_secs());
        let pem = parse(&agent);
        let cert = pem.parse_x509().expect("x509");
        let eku = cert.extended_key_usage().expect("ext").expect("eku").value;
        assert!(eku.server_auth && !eku.client_auth);
    }

    #[test]
    fn renewal_is_due_within_renew_before_of_expiry_or_from_another_ca() {
        let policy = CertPolicy {
            lifetime: Duration::from_secs(90),
            renew_before: Duration::from_secs(60),
        };
        let pki = Pki::generate("test CA").expect("CA").with_policy(policy);
        let (csr_pem, _) = csr("kinetic", &[]);
        let cert = pki
            .sign_agent_csr(&csr_pem, &["kinetic".to_string()], &[])
            .expect("signed");
        let not_after = Pki::not_after(&cert).expect("not_after");
        let issued = not_after - 90;
        assert_eq!(pki.renewal_due(&cert, issued), None, "fresh");
        assert_eq!(pki.renewal_due(&cert, not_after - 61), None, "61 s left");
        assert_eq!(
            pki.renewal_due(&cert, not_after - 60),
            Some(RenewReason::Expiring { not_after }),
            "60 s left: renew"
        );
        assert_eq!(
            pki.renewal_due(&cert, not_after + 10),
            Some(RenewReason::Expiring { not_after }),
            "expired"
        );
        // How long it was issued for does not matter: a year-long certificate is current.
        let year = Pki::generate("test CA").expect("CA");
        let long = year
            .sign_agent_csr(&csr_pem, &["kinetic".to_string()], &[])
            .expect("signed");
        let year = year.with_policy(policy);
        assert_eq!(year.renewal_due(&long, issued), None);
        // Another CA's certificate, and garbage.
        let other = Pki::generate("another CA").expect("CA").with_policy(policy);
        assert_eq!(other.renewal_due(&cert, issued), Some(RenewReason::OtherCa));
        assert_eq!(
            pki.renewal_due("not a certificate", issued),
            Some(RenewReason::Unreadable)
        );
        assert_eq!(pki.renewal_due("", issued), Some(RenewReason::Unreadable));
        // Far-off times do not overflow.
        assert_eq!(
            pki.renewal_due(&cert, i64::MAX),
            Some(RenewReason::Expiring { not_after })
        );
        assert!(
            RenewReason::Expiring { not_after: 0 }
                .to_string()
                .contains("1970-01-01 00:00:00 UTC")
        );
    }

    #[test]
    fn the_controller_identity_is_reissued_within_renew_before() {
        let dir = Dir::new();
        let short = CertPolicy {
            lifetime: Duration::from_secs(90),
            renew_before: Duration::from_secs(60),
        };
        let pki = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("create");
        let first = pki
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        // A year-long identity is current under a short policy too.
        let pki = pki.with_policy(short);
        let again = pki
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        assert_eq!(first.cert_pem, again.cert_pem);
        // A policy that renews a year ahead reissues it, with the policy's lifetime.
        let pki = pki.with_policy(CertPolicy {
            lifetime: Duration::from_secs(400 * 86400),
            renew_before: Duration::from_secs(366 * 86400),
        });
        let renewed = pki
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        assert_ne!(renewed.cert_pem, first.cert_pem);
        assert_ne!(renewed.key_pem, first.key_pem, "a new key too");
        let not_after = Pki::not_after(&renewed.cert_pem).expect("not_after");
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((not_after - now - 400 * 86400).abs() < 60, "{not_after}");
    }

    #[test]
    fn refuses_csr_for_another_host_or_extra_names() {
        let pki = Pki::generate("test CA").expect("CA");
        let names = vec!["kinetic".to_string()];
        let (other, _) = csr("quirk", &[]);
        let err = pki
            .sign_csr(&other, &names, &[], CertUsage::Server)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CSR asks for common name \"quirk\" but the controller expected \"kinetic\""
        );
        let (extra, _) = csr("kinetic", &["kinetic", "evil.example"]);
        let err = pki
            .sign_csr(&extra, &names, &[], CertUsage::Server)
            .unwrap_err();
        assert!(matches!(err, PkiError::UnexpectedSan(_)), "{err}");
        let (extra_ip, _) = csr("kinetic", &["10.9.9.9"]);
        assert!(
            pki.sign_csr(&extra_ip, &names, &[], CertUsage::Server)
                .is_err()
        );
        assert!(matches!(
            pki.sign_csr("garbage", &names, &[], CertUsage::Server),
            Err(PkiError::InvalidCsr(_))
        ));
    }

    #[test]
    fn never_signs_the_controller_identity_for_a_host() {
        let pki = Pki::generate("test CA").expect("CA");
        let (req, _) = csr(CONTROLLER_IDENTITY, &[]);
        let err = pki
            .sign_csr(
                &req,
                &[CONTROLLER_IDENTITY.to_string()],
                &[],
                CertUsage::Client,
            )
            .unwrap_err();
        assert!(matches!(err, PkiError::ReservedName(_)), "{err}");
    }

    #[test]
    fn controller_identity_is_a_client_cert() {
        let pki = Pki::generate("test CA").expect("CA");
        let id = pki.issue_controller_identity().expect("identity");
        let pem = parse(&id.cert_pem);
        let cert = pem.parse_x509().expect("x509");
        assert!(
            cert.subject()
                .to_string()
                .contains(&format!("CN={CONTROLLER_IDENTITY}"))
        );
        let eku = cert.extended_key_usage().expect("ext").expect("eku").value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!format!("{id:?}").contains("PRIVATE KEY"));
    }

    /// A cluster directory and, outside it, a key directory; and the secrets store they make.
    pub(super) struct Dir {
        tmp: tempfile::TempDir,
    }

    impl Dir {
        pub(super) fn new() -> Dir {
            let tmp = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir(tmp.path().join("cluster")).expect("mkdir");
            Dir { tmp }
        }
        pub(super) fn root(&self) -> PathBuf {
            self.tmp.path().join("cluster")
        }
        fn path(&self, name: &str) -> PathBuf {
            self.root().join(name)
        }
        pub(super) fn secrets(&self) -> Secrets {
            let keys = crate::secrets::KeySource::Directory(self.tmp.path().join("keys"));
            Secrets::open_with_key_source(&self.root(), Some("vault-1"), keys).expect("secrets")
        }
        fn mode(&self, name: &str) -> u32 {
            std::fs::metadata(self.path(name))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        }
    }

    #[test]
    fn load_or_create_persists_and_reloads() {
        let dir = Dir::new();
        let created = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("create");
        let loaded = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("load");
        assert_eq!(created.ca_cert_pem(), loaded.ca_cert_pem());

        // A certificate issued by the reloaded CA verifies against the original certificate.
        let first = loaded
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        assert!(created.is_current(&first.cert_pem));
        let again = loaded
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        assert_eq!(
            first.cert_pem, again.cert_pem,
            "a current identity is reused"
        );
        assert_eq!(first.key_pem, again.key_pem);

        // A new CA does not accept the old identity: it is reissued.
        std::fs::remove_file(dir.path("tls/ca.crt")).expect("rm");
        std::fs::remove_file(dir.path("tls/ca.key.enc")).expect("rm");
        let fresh = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("new CA");
        assert_ne!(fresh.ca_cert_pem(), created.ca_cert_pem());
        let reissued = fresh
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        assert_ne!(reissued.cert_pem, first.cert_pem);
    }

    #[test]
    fn private_keys_are_encrypted_at_rest_and_open_only_with_the_secrets_key() {
        let dir = Dir::new();
        let pki = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("create");
        pki.controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        for plaintext in ["tls/ca.key", "tls/controller.key"] {
            assert!(!dir.path(plaintext).exists(), "{plaintext} must not exist");
        }
        for sealed in ["tls/ca.key.enc", "tls/controller.key.enc"] {
            let text = std::fs::read_to_string(dir.path(sealed)).expect("sealed key");
            assert!(text.starts_with("tpa-secrets v1"), "{sealed}: {text}");
            assert!(!text.contains("PRIVATE KEY"), "{sealed}");
            assert_eq!(dir.mode(sealed), 0o600, "{sealed}");
        }
        assert_eq!(dir.mode("tls/ca.crt"), 0o644);
        // The store exists too, so its key id is fixed: one key opens everything.
        assert!(dir.path("secrets.enc").exists());
        assert!(dir.path(".gitignore").exists());

        // Another key (here: a key directory without the cluster's key) opens nothing.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let other = Secrets::open_with_key_source(
            &dir.root(),
            None,
            crate::secrets::KeySource::Directory(elsewhere.path().to_path_buf()),
        )
        .expect_err("the store itself needs the key");
        assert!(format!("{other:#}").contains("vault-1"), "{other:#}");
        let wrong = crate::secrets::KeySource::Given {
            key: crate::secrets::Key::generate().expect("key"),
            origin: "a test".into(),
        };
        std::fs::remove_file(dir.path("secrets.enc")).expect("rm store");
        let secrets = Secrets::open_with_key_source(&dir.root(), None, wrong).expect("new store");
        let err = format!(
            "{:#}",
            Pki::load_or_create(&dir.root(), &secrets).unwrap_err()
        );
        assert!(
            err.contains("cannot decrypt") && err.contains("ca.key.enc"),
            "{err}"
        );
    }

    #[test]
    fn plaintext_keys_from_older_versions_are_encrypted_then_removed() {
        let dir = Dir::new();
        // What an older tpa left: plain PEM keys beside their certificates.
        let old = Pki::generate("old CA").expect("CA");
        let id = old.issue_controller_identity().expect("identity");
        std::fs::create_dir(dir.path("tls")).expect("mkdir");
        let files = [
            ("tls/ca.crt", old.ca_cert_pem().to_string()),
            ("tls/ca.key", old.issuer.key().serialize_pem()),
            ("tls/controller.crt", id.cert_pem.clone()),
            ("tls/controller.key", id.key_pem.clone()),
        ];
        for (name, content) in &files {
            std::fs::write(dir.path(name), content).expect("write");
        }

        let loaded = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("load");
        assert_eq!(loaded.ca_cert_pem(), old.ca_cert_pem(), "the same CA");
        assert!(!dir.path("tls/ca.key").exists());
        assert!(dir.path("tls/ca.key.enc").exists());
        let identity = loaded
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        assert_eq!(identity.cert_pem, id.cert_pem, "the same identity");
        assert_eq!(identity.key_pem, id.key_pem);
        assert!(!dir.path("tls/controller.key").exists());
        assert!(dir.path("tls/controller.key.enc").exists());

        // Afterwards it loads from the sealed files alone.
        let again = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("reload");
        assert_eq!(again.ca_cert_pem(), old.ca_cert_pem());
    }

    #[test]
    fn a_certificate_that_does_not_belong_with_its_key_is_refused_with_what_to_do() {
        let dir = Dir::new();
        let pki = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("create");
        let first = pki
            .controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");

        // Another identity's certificate (from the same CA) beside this key.
        let other = pki.issue_controller_identity().expect("identity");
        std::fs::write(dir.path("tls/controller.crt"), &other.cert_pem).expect("write");
        let err = format!(
            "{:#}",
            pki.controller_identity(&dir.root(), &dir.secrets())
                .unwrap_err()
        );
        assert!(
            err.contains("controller.crt does not belong with the key")
                && err.contains("remove both"),
            "{err}"
        );
        std::fs::write(dir.path("tls/controller.crt"), &first.cert_pem).expect("restore");

        // Another CA's certificate beside this CA key.
        let stranger = Pki::generate("another CA").expect("CA");
        std::fs::write(dir.path("tls/ca.crt"), stranger.ca_cert_pem()).expect("write");
        let err = format!(
            "{:#}",
            Pki::load_or_create(&dir.root(), &dir.secrets()).unwrap_err()
        );
        assert!(
            err.contains("not the certificate of the CA key") && err.contains("same commit"),
            "{err}"
        );
    }

    #[test]
    fn keys_are_never_written_through_a_planted_link() {
        // Older versions wrote keys through `<name>.tmp<pid>`, opened without O_EXCL: a link
        // planted there by another user received the key.
        let dir = Dir::new();
        std::fs::create_dir(dir.path("tls")).expect("mkdir");
        let victim = dir.tmp.path().join("victim");
        std::fs::write(&victim, "untouched").expect("write");
        let pid = std::process::id();
        for name in ["ca", "controller", "ca.key", "controller.key"] {
            std::os::unix::fs::symlink(&victim, dir.path(&format!("tls/{name}.tmp{pid}")))
                .expect("symlink");
        }
        let pki = Pki::load_or_create(&dir.root(), &dir.secrets()).expect("create");
        pki.controller_identity(&dir.root(), &dir.secrets())
            .expect("identity");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched");
    }

    #[test]
    fn half_present_ca_is_an_error_that_says_what_to_do() {
        let dir = Dir::new();
        std::fs::create_dir(dir.path("tls")).expect("mkdir");
        std::fs::write(dir.path("tls/ca.crt"), "x").expect("write");
        let err = format!(
            "{:#}",
            Pki::load_or_create(&dir.root(), &dir.secrets()).unwrap_err()
        );
        assert!(
            err.contains("ca.key.enc") && err.contains("re-enrolled"),
            "{err}"
        );
    }
}
