//! The `ServerKey` RPC's engine: the Postgres server's TLS key, made and kept on the host.
//!
//! The agent creates a P-256 key at `key_path` when none is there and the caller allows it
//! (never in check mode): owned by root, mode 0600 from its first byte, in a parent directory of
//! mode 0755. It answers with the key's public half, the certificate at `cert_path` if one is
//! installed, and, when asked, a CSR for a common name, made here with rcgen. The private key
//! never leaves the host; neither path is followed through a symlink.

use std::fs;
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use nix::fcntl::OFlag;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::resource::ResourceError;
use crate::resource::nofollow::{self, Expect};

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeyRequest {
    pub key_path: String,
    pub cert_path: String,
    /// Create the key when none exists.
    pub create: bool,
    /// Also make a CSR with this common name.
    pub csr_common_name: Option<String>,
}

/// What the agent answers; no private key material.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerKey {
    /// SubjectPublicKeyInfo PEM; None when there is no key (and none was to be made).
    pub public_key_pem: Option<String>,
    pub cert_pem: Option<String>,
    pub csr_pem: Option<String>,
}

/// Why the key could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerKeyError {
    #[error("{0} is not an absolute path")]
    NotAbsolute(String),
    #[error(transparent)]
    Io(#[from] ResourceError),
    #[error(
        "{path} is not a private key the agent can use ({source}); move it away and deploy again to \
         have a new one made"
    )]
    BadKey { path: String, source: rcgen::Error },
    #[error("cannot make a certificate request for {name}: {source}")]
    Csr { name: String, source: rcgen::Error },
}

/// The largest key or certificate file read: a PEM key or chain is a few KiB.
const MAX_PEM_BYTES: u64 = 256 * 1024;

/// Reads (and with `create`, makes) the key and answers the request.
pub fn server_key(request: &ServerKeyRequest) -> Result<ServerKey, ServerKeyError> {
    for path in [&request.key_path, &request.cert_path] {
        if !Path::new(path).is_absolute() {
            return Err(ServerKeyError::NotAbsolute(path.clone()));
        }
    }
    let key = match read_pem(&request.key_path)? {
        Some(pem) => Some(
            KeyPair::from_pem(&pem).map_err(|source| ServerKeyError::BadKey {
                path: request.key_path.clone(),
                source,
            })?,
        ),
        None if request.create => Some(create(&request.key_path)?),
        None => None,
    };
    let csr_pem = match (&key, &request.csr_common_name) {
        (Some(key), Some(name)) => Some(csr(key, name)?),
        _ => None,
    };
    Ok(ServerKey {
        public_key_pem: key.as_ref().map(KeyPair::public_key_pem),
        cert_pem: read_pem(&request.cert_path)?,
        csr_pem,
    })
}

/// A CSR for `key` whose subject is `CN=name`; the CA decides the certificate's names.
fn csr(key: &KeyPair, name: &str) -> Result<String, ServerKeyError> {
    let error = |source| ServerKeyError::Csr {
        name: name.to_owned(),
        source,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(error)
}

/// Makes a P-256 key at `path`: parent directory 0755, file created new with mode 0600 (so it is
/// never readable by others, not even briefly) and without following a link.
fn create(path: &str) -> Result<KeyPair, ServerKeyError> {
    let parent = Path::new(path)
        .parent()
        .ok_or_else(|| ServerKeyError::NotAbsolute(path.to_owned()))?;
    let parent_str = parent.display().to_string();
    if nofollow::inspect(&parent_str, Expect::Directory)?.is_none() {
        fs::create_dir_all(parent)
            .map_err(|e| ResourceError::io("create directory", &parent_str, e))?;
    }
    if let Some((dir, _)) = nofollow::open(&parent_str, Expect::Directory, false)? {
        dir.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(|e| ResourceError::io("chmod", &parent_str, e))?;
    }
    let key = KeyPair::generate().map_err(|source| ServerKeyError::BadKey {
        path: path.to_owned(),
        source,
    })?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| ResourceError::io("create", path, e))?;
    file.write_all(key.serialize_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| ResourceError::io("write", path, e))?;
    tracing::info!(path, "created the Postgres server key");
    Ok(key)
}

/// The PEM text at `path`, None when absent; a link or anything but a regular file is refused.
fn read_pem(path: &str) -> Result<Option<String>, ResourceError> {
    let Some((file, _)) = nofollow::open(path, Expect::File, false)? else {
        return Ok(None);
    };
    let mut text = String::new();
    file.take(MAX_PEM_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidData => ResourceError::Failed(format!("{path} is not PEM text")),
            _ => ResourceError::io("read", path, e),
        })?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use x509_parser::prelude::FromDer as _;

    use super::*;

    fn request(dir: &Path, create: bool, csr: Option<&str>) -> ServerKeyRequest {
        ServerKeyRequest {
            key_path: dir.join("tpa/fosdem.key").display().to_string(),
            cert_path: dir.join("tpa/fosdem.crt").display().to_string(),
            create,
            csr_common_name: csr.map(str::to_owned),
        }
    }

    #[test]
    fn without_create_nothing_is_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let answer = server_key(&request(dir.path(), false, Some("ulb"))).expect("answer");
        assert_eq!(answer, ServerKey::default());
        assert!(
            !dir.path().join("tpa").exists(),
            "check mode creates nothing"
        );
    }

    #[test]
    fn creates_once_with_mode_0600_then_keeps_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = server_key(&request(dir.path(), true, Some("ulb"))).expect("create");
        let key_path = dir.path().join("tpa/fosdem.key");
        let meta = fs::metadata(&key_path).expect("key");
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        assert_eq!(
            fs::metadata(dir.path().join("tpa")).expect("dir").mode() & 0o7777,
            0o755
        );
        let public = first.public_key_pem.clone().expect("public key");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
        let csr = first.csr_pem.expect("csr");
        let (_, der) = x509_parser::pem::parse_x509_pem(csr.as_bytes()).expect("pem");
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
                .expect("csr parses");
        assert!(parsed.verify_signature().is_ok());
        assert_eq!(
            parsed.certification_request_info.subject.to_string(),
            "CN=ulb"
        );

        fs::write(dir.path().join("tpa/fosdem.crt"), "CERT PEM\n").expect("cert");
        let again = server_key(&request(dir.path(), true, None)).expect("again");
        assert_eq!(again.public_key_pem.as_deref(), Some(public.as_str()));
        assert_eq!(again.cert_pem.as_deref(), Some("CERT PEM\n"));
        assert_eq!(again.csr_pem, None);
        let text = fs::read_to_string(&key_path).expect("key");
        assert!(
            !format!("{again:?}").contains(text.trim()),
            "no private key in the answer"
        );
    }

    #[test]
    fn a_symlinked_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("tpa")).expect("mkdir");
        fs::write(dir.path().join("other.key"), "x").expect("seed");
        std::os::unix::fs::symlink(
            dir.path().join("other.key"),
            dir.path().join("tpa/fosdem.key"),
        )
        .expect("symlink");
        let error = server_key(&request(dir.path(), true, None)).expect_err("link");
        assert!(error.to_string().contains("is a symbolic link"), "{error}");
    }

    #[test]
    fn relative_paths_are_refused() {
        let error = server_key(&ServerKeyRequest {
            key_path: "tpa.key".into(),
            cert_path: "/etc/tpa.crt".into(),
            create: true,
            csr_common_name: None,
        })
        .expect_err("relative");
        assert_eq!(error.to_string(), "tpa.key is not an absolute path");
    }
}
