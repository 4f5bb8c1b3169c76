//! The cluster CA: created on first use in `<cluster dir>/tls/`, loaded afterwards; it issues the controller's
//! client certificate and signs the CSRs of agents (and later of Postgres servers).
//!
//! Keys stay where they are used: an agent generates its key on its host and sends a CSR; the CA decides the
//! names in the certificate itself and never copies them from the CSR.
//!
//! Files (keys are written mode 0600):
//! - `tls/ca.crt`, `tls/ca.key`: the CA. The key is plain PEM for now; encrypting it at rest is the secrets
//!   store's job (DESIGN.md §4), see docs/protocol.md.
//! - `tls/controller.crt`, `tls/controller.key`: the controller's client identity, reissued when it is within
//!   [`RENEW_BEFORE`] of expiry or was issued by another CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use tpa_proto::CONTROLLER_IDENTITY;

/// Lifetime of the cluster CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of every certificate the CA issues.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate this close to expiry is reissued.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start being valid this long before they are issued, so a host whose clock is slightly behind
/// the controller's accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// What a signed certificate may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUsage {
    /// A TLS server: an agent, a Postgres server.
    Server,
    /// A TLS client.
    Client,
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
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The cluster CA, in memory.
pub struct Pki {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
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
    /// Loads the CA from `<cluster_root>/tls/`, creating it (and the directory) on first use.
    pub fn load_or_create(cluster_root: &Path) -> anyhow::Result<Pki> {
        let files = TlsFiles::new(cluster_root);
        if files.ca_cert.exists() || files.ca_key.exists() {
            let loaded = read(&files.ca_cert)
                .and_then(|cert| Ok((cert, read(&files.ca_key)?)))
                .and_then(|(cert, key)| Ok(Pki::from_pem(&cert, &key)?));
            return loaded.with_context(|| {
                format!(
                    "loading the cluster CA from {}: restore ca.crt/ca.key from version control, or remove both \
                     to create a new CA (every agent must then be re-enrolled)",
                    files.dir.display()
                )
            });
        }
        let pki = Pki::generate(&ca_name(cluster_root))?;
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("creating {}", files.dir.display()))?;
        write_private(&files.ca_key, pki.issuer.key().serialize_pem().as_bytes())?;
        write_public(&files.ca_cert, pki.cert_pem.as_bytes())?;
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
        })
    }

    /// The CA from its certificate and key (both PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Pki, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::InvalidCa)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(PkiError::InvalidCa)?;
        Ok(Pki {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
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
        let params = leaf_params(names, ips, usage)?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// Issues the controller's client identity ([`CONTROLLER_IDENTITY`]) with a fresh key.
    pub fn issue_controller_identity(&self) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params =
            leaf_params_unchecked(&[CONTROLLER_IDENTITY.to_string()], &[], CertUsage::Client)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "tpa");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The controller's client identity from `<cluster_root>/tls/controller.{crt,key}`, issued (again) when
    /// missing, within [`RENEW_BEFORE`] of expiry, or not issued by this CA.
    pub fn controller_identity(&self, cluster_root: &Path) -> anyhow::Result<CertifiedKey> {
        let files = TlsFiles::new(cluster_root);
        if files.controller_cert.exists() && files.controller_key.exists() {
            let existing = CertifiedKey {
                cert_pem: read(&files.controller_cert)?,
                key_pem: read(&files.controller_key)?,
            };
            if self.is_current(&existing.cert_pem) {
                return Ok(existing);
            }
            tracing::info!(cert = %files.controller_cert.display(), "renewing the controller certificate");
        }
        let identity = self.issue_controller_identity()?;
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("creating {}", files.dir.display()))?;
        write_private(&files.controller_key, identity.key_pem.as_bytes())?;
        write_public(&files.controller_cert, identity.cert_pem.as_bytes())?;
        Ok(identity)
    }

    /// True when `cert_pem` was signed by this CA and is not within [`RENEW_BEFORE`] of expiry.
    fn is_current(&self, cert_pem: &str) -> bool {
        let Ok((_, ca_pem)) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()) else {
            return false;
        };
        let Ok(ca) = ca_pem.parse_x509() else {
            return false;
        };
        let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
            return false;
        };
        let Ok(cert) = pem.parse_x509() else {
            return false;
        };
        let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
        cert.verify_signature(Some(ca.public_key())).is_ok()
            && cert.validity().not_after.timestamp() > renew_at.unix_timestamp()
    }
}

/// Paths of the TLS files in a cluster directory.
struct TlsFiles {
    dir: PathBuf,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    controller_cert: PathBuf,
    controller_key: PathBuf,
}

impl TlsFiles {
    fn new(cluster_root: &Path) -> TlsFiles {
        let dir = cluster_root.join("tls");
        TlsFiles {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            controller_cert: dir.join("controller.crt"),
            controller_key: dir.join("controller.key"),
            dir,
        }
    }
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
) -> Result<CertificateParams, PkiError> {
    if let Some(reserved) = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(CONTROLLER_IDENTITY))
    {
        return Err(PkiError::ReservedName(reserved.clone()));
    }
    leaf_params_unchecked(names, ips, usage)
}

fn leaf_params_unchecked(
    names: &[String],
    ips: &[IpAddr],
    usage: CertUsage,
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
    params.extended_key_usages = vec![match usage {
        CertUsage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        CertUsage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + LEAF_LIFETIME;
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

fn write_public(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, content, 0o644)
}

fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, content, 0o600)
}

/// Writes via a temp file created with `mode` from the start (a key is never readable by others, not even
/// briefly), then renames it into place.
fn write_atomic(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
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

    #[test]
    fn load_or_create_persists_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = Pki::load_or_create(dir.path()).expect("create");
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("tls/ca.key"), 0o600);
        let loaded = Pki::load_or_create(dir.path()).expect("load");
        assert_eq!(created.ca_cert_pem(), loaded.ca_cert_pem());

        // A certificate issued by the reloaded CA verifies against the original certificate.
        let first = loaded.controller_identity(dir.path()).expect("identity");
        assert_eq!(mode("tls/controller.key"), 0o600);
        assert!(created.is_current(&first.cert_pem));
        let again = loaded.controller_identity(dir.path()).expect("identity");
        assert_eq!(
            first.cert_pem, again.cert_pem,
            "a current identity is reused"
        );

        // A new CA does not accept the old identity: it is reissued.
        std::fs::remove_file(dir.path().join("tls/ca.crt")).expect("rm");
        std::fs::remove_file(dir.path().join("tls/ca.key")).expect("rm");
        let fresh = Pki::load_or_create(dir.path()).expect("new CA");
        assert_ne!(fresh.ca_cert_pem(), created.ca_cert_pem());
        let reissued = fresh.controller_identity(dir.path()).expect("identity");
        assert_ne!(reissued.cert_pem, first.cert_pem);
    }

    #[test]
    fn half_present_ca_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tls")).expect("mkdir");
        std::fs::write(dir.path().join("tls/ca.crt"), "x").expect("write");
        let err = format!("{:#}", Pki::load_or_create(dir.path()).unwrap_err());
        assert!(
            err.contains("ca.key") && err.contains("re-enrolled"),
            "{err}"
        );
    }
}
