//! The signing keys of the apt repositories hosts use (`apt_repositories`, `apt_repository_list`;
//! config::apt): PGDG's is built in; the others are fetched once from their `key_url`, checked
//! against their `key_id`, and kept in `<cluster>/apt-keys/<name>.asc`, so later deploys need
//! no network and a key that changes upstream is not picked up silently.
//!
//! The fingerprint check reads the key's OpenPGP packets here (RFC 4880 §5.5.2, §12.2;
//! RFC 9580 §5.5.4): a few dozen lines of framing and one digest, where a full OpenPGP crate
//! would add a second crypto stack. apt itself verifies every signature with the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use sha2::Digest;

use crate::config::Cluster;
use crate::config::apt::{AptRepository, PGDG};

/// PostgreSQL's archive signing key, as postgresql-common ships it
/// (`/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc`).
pub const PGDG_KEY: &str = include_str!("apt_keys/pgdg.asc");
/// Its fingerprint (checked by a test, so the file cannot drift).
pub const PGDG_FINGERPRINT: &str = "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8";
/// PGDG's source line; the template is the host's codename (e.g. `bookworm-pgdg`).
pub const PGDG_SOURCE: &str =
    "deb https://apt.postgresql.org/pub/repos/apt {{ansible_distribution_release}}-pgdg main";

/// Largest key file accepted from a `key_url`.
const MAX_KEY_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A repository's signing key, ASCII-armoured, with the fingerprint of its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptKey {
    pub armored: String,
    pub fingerprint: String,
}

/// The key of the built-in PGDG repository.
pub fn pgdg() -> AptKey {
    AptKey {
        armored: PGDG_KEY.to_string(),
        fingerprint: PGDG_FINGERPRINT.to_string(),
    }
}

/// The source lines and key of repository `name` on a host whose vars define `defined`: an
/// `apt_repositories` entry (its key from `keys`, as [`load`] made them) wins over the
/// built-in PGDG.
pub fn repository(
    name: &str,
    defined: &BTreeMap<String, AptRepository>,
    keys: &BTreeMap<String, AptKey>,
) -> Result<(Vec<String>, AptKey), String> {
    match defined.get(name) {
        Some(repo) => keys
            .get(name)
            .map(|key| (repo.lines.clone(), key.clone()))
            .ok_or_else(|| format!("apt_repositories.{name}: its key was not loaded")),
        None if name == PGDG => Ok((vec![PGDG_SOURCE.to_string()], pgdg())),
        None => Err(format!("apt_repository_list: `{name}` is not defined")),
    }
}

/// The keys of the defined repositories a deployed host uses, each from `<dir>/apt-keys/`
/// or, when missing there or no longer matching its `key_id`, fetched from its `key_url`
/// (and kept, unless `check`). Fails before anything is deployed when a key cannot be
/// fetched or is not the one `key_id` names. (PGDG's built-in key needs no loading.)
pub async fn load(
    dir: &Path,
    cluster: &Cluster,
    check: bool,
) -> anyhow::Result<BTreeMap<String, AptKey>> {
    let mut wanted: BTreeMap<String, AptRepository> = BTreeMap::new();
    for instance in cluster.instances.iter().filter(|i| !i.provision_only) {
        for name in instance.vars.apt_sources() {
            if let Some(repo) = instance.vars.apt_repositories.get(&name) {
                wanted.insert(name, repo.clone());
            }
        }
    }
    let mut keys = BTreeMap::new();
    for (name, repo) in wanted {
        let key = defined_key(dir, &name, &repo, check)
            .await
            .with_context(|| format!("apt_repositories.{name}"))?;
        keys.insert(name, key);
    }
    Ok(keys)
}

/// Where the key of repository `name` is kept.
pub fn cached_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("apt-keys").join(format!("{name}.asc"))
}

async fn defined_key(
    dir: &Path,
    name: &str,
    repo: &AptRepository,
    check: bool,
) -> anyhow::Result<AptKey> {
    let cached = cached_path(dir, name);
    if let Ok(text) = std::fs::read(&cached)
        && let Ok(key) = parse(&text)
        && key.fingerprint.ends_with(&repo.key_id)
    {
        return Ok(key);
    }
    let body = fetch(&repo.key_url)
        .await
        .with_context(|| format!("fetching its key from {}", repo.key_url))?;
    let key = parse(&body).with_context(|| format!("the key at {}", repo.key_url))?;
    if !key.fingerprint.ends_with(&repo.key_id) {
        bail!(
            "the key at {} has fingerprint {}, which does not end with key_id {}; if the \
             repository really changed its key, set key_id to the new fingerprint",
            repo.key_url,
            key.fingerprint,
            repo.key_id
        );
    }
    if !check {
        if let Some(parent) = cached.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        crate::cluster_dir::write_if_changed(&cached, &key.armored)?;
    }
    Ok(key)
}

/// A key file, armoured or binary: its primary key's fingerprint, and the file armoured.
/// Exactly one primary key: a file with more would let all of them sign the repository.
pub fn parse(data: &[u8]) -> anyhow::Result<AptKey> {
    let text = std::str::from_utf8(data).ok();
    let armored = text.is_some_and(|t| t.trim_start().starts_with("-----BEGIN PGP PUBLIC KEY"));
    let binary = if armored {
        dearmor(text.unwrap_or_default())?
    } else {
        data.to_vec()
    };
    let mut primaries = Vec::new();
    for (tag, body) in packets(&binary)? {
        if tag == 6 {
            primaries.push(fingerprint(body)?);
        }
    }
    let fingerprint = match primaries.as_slice() {
        [one] => one.clone(),
        [] => bail!("it holds no OpenPGP public key"),
        many => bail!(
            "it holds {} public keys ({}); give the URL of the repository's key alone",
            many.len(),
            many.join(", ")
        ),
    };
    let armored = if armored {
        text.unwrap_or_default().to_string()
    } else {
        armor(&binary)
    };
    Ok(AptKey {
        armored,
        fingerprint,
    })
}

/// The base64 body of an armoured block (headers and the CRC line skipped).
fn dearmor(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"));
    lines.next();
    let mut body = String::new();
    let mut in_headers = true;
    for line in lines {
        if line.starts_with("-----END") {
            return base64::engine::general_purpose::STANDARD
                .decode(body)
                .context("its armour is not valid base64");
        }
        if in_headers {
            if line.is_empty() {
                in_headers = false;
            } else if !line.contains(": ") {
                in_headers = false;
                body.push_str(line);
            }
            continue;
        }
        if !line.starts_with('=') {
            body.push_str(line);
        }
    }
    bail!("its armour has no END line")
}

/// ASCII armour (with the CRC-24 that older readers expect) of a binary key.
fn armor(binary: &[u8]) -> String {
    let mut crc: u32 = 0xB704CE;
    for byte in binary {
        crc ^= u32::from(*byte) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x1000000 != 0 {
                crc ^= 0x1864CFB;
            }
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode(binary);
    let mut out = String::from("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    let crc = [(crc >> 16) as u8, (crc >> 8) as u8, crc as u8];
    out.push_str(&format!(
        "={}\n-----END PGP PUBLIC KEY BLOCK-----\n",
        b64.encode(crc)
    ));
    out
}

/// OpenPGP packets as (tag, body), old and new framing; partial lengths (only used by data
/// packets, never in a key) are refused.
fn packets(mut data: &[u8]) -> anyhow::Result<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while let Some(&first) = data.first() {
        if first & 0x80 == 0 {
            bail!("it is not an OpenPGP key (bad packet header)");
        }
        let byte = |i: usize| -> anyhow::Result<usize> {
            data.get(i)
                .map(|b| usize::from(*b))
                .context("it ends inside a packet header")
        };
        let (tag, header, len): (u8, usize, usize) = if first & 0x40 != 0 {
            let tag = first & 0x3f;
            match byte(1)? {
                l @ 0..=191 => (tag, 2, l),
                l @ 192..=223 => (tag, 3, ((l - 192) << 8) + byte(2)? + 192),
                255 => (
                    tag,
                    6,
                    (byte(2)? << 24) | (byte(3)? << 16) | (byte(4)? << 8) | byte(5)?,
                ),
                _ => bail!("it uses partial packet lengths, which keys never do"),
            }
        } else {
            let tag = (first >> 2) & 0x0f;
            match first & 3 {
                0 => (tag, 2, byte(1)?),
                1 => (tag, 3, (byte(1)? << 8) | byte(2)?),
                2 => (
                    tag,
                    5,
                    (byte(1)? << 24) | (byte(2)? << 16) | (byte(3)? << 8) | byte(4)?,
                ),
                _ => bail!("it uses an indeterminate packet length, which keys never do"),
            }
        };
        let end = header
            .checked_add(len)
            .filter(|end| *end <= data.len())
            .context("a packet runs past the end of the file")?;
        out.push((tag, &data[header..end]));
        data = &data[end..];
    }
    Ok(out)
}

/// A public key packet's fingerprint: SHA-1 for v4 keys, SHA-256 for v5 and v6.
fn fingerprint(body: &[u8]) -> anyhow::Result<String> {
    let digest = match body.first() {
        Some(4) => {
            let len = u16::try_from(body.len()).context("a v4 key packet over 64 KiB")?;
            let mut framed = vec![0x99];
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(body);
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &framed)
                .as_ref()
                .to_vec()
        }
        Some(v @ (5 | 6)) => {
            let len = u32::try_from(body.len()).context("a key packet over 4 GiB")?;
            let mut hasher = sha2::Sha256::new();
            hasher.update([if *v == 5 { 0x9A } else { 0x9B }]);
            hasher.update(len.to_be_bytes());
            hasher.update(body);
            hasher.finalize().to_vec()
        }
        Some(v) => bail!("it is a version {v} key, which tpa cannot fingerprint"),
        None => bail!("it has an empty key packet"),
    };
    Ok(hex::encode_upper(digest))
}

/// GET `url` (http or https, system roots), following up to 5 redirects; at most
/// [`MAX_KEY_BYTES`].
async fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading the system's CA certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut url: hyper::Uri = url.parse().context("not a URL")?;
    for _ in 0..=5 {
        let response = tokio::time::timeout(FETCH_TIMEOUT, client.get(url.clone()))
            .await
            .context("no answer within 30 s")??;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .context("a redirect without a Location")?;
            url = resolve(&url, location)?;
            continue;
        }
        if !status.is_success() {
            bail!("the server answered {status}");
        }
        let body = Limited::new(response.into_body(), MAX_KEY_BYTES);
        let body = tokio::time::timeout(FETCH_TIMEOUT, body.collect())
            .await
            .context("the key did not arrive within 30 s")?
            .map_err(|e| anyhow::anyhow!("reading the key: {e}"))?;
        return Ok(body.to_bytes().to_vec());
    }
    bail!("more than 5 redirects")
}

/// A redirect's `Location`, absolute or relative to `base`.
fn resolve(base: &hyper::Uri, location: &str) -> anyhow::Result<hyper::Uri> {
    if location.contains("://") {
        return location.parse().context("a redirect to an invalid URL");
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{scheme}://{authority}{location}")
        .parse()
        .context("a redirect to an invalid URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_pgdg_key_is_postgresqls() {
        let key = parse(PGDG_KEY.as_bytes()).unwrap();
        assert_eq!(key.fingerprint, PGDG_FINGERPRINT);
    }

    #[test]
    fn binary_keys_are_armoured_and_read_back() {
        let binary = dearmor(PGDG_KEY).unwrap();
        let key = parse(&binary).unwrap();
        assert_eq!(key.fingerprint, PGDG_FINGERPRINT);
        assert!(
            key.armored
                .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
        );
        assert_eq!(
            parse(key.armored.as_bytes()).unwrap().fingerprint,
            PGDG_FINGERPRINT
        );
        // The CRC line matches the one the key was published with.
        let crc = |t: &str| t.lines().find(|l| l.starts_with('=')).map(str::to_string);
        assert_eq!(crc(&key.armored), crc(PGDG_KEY));
    }

    #[test]
    fn garbage_and_key_bundles_are_refused() {
        assert!(parse(b"<html>not found</html>").is_err());
        assert!(parse(b"").is_err());
        let binary = dearmor(PGDG_KEY).unwrap();
        assert!(parse(&binary[..binary.len() / 2]).is_err());
        let twice = [binary.clone(), binary].concat();
        let err = parse(&twice).unwrap_err().to_string();
        assert!(err.contains("holds 2 public keys"), "{err}");
    }

    #[test]
    fn redirects_resolve() {
        let base: hyper::Uri = "https://example.org/a/b".parse().unwrap();
        assert_eq!(
            resolve(&base, "/k.asc").unwrap().to_string(),
            "https://example.org/k.asc"
        );
        assert_eq!(
            resolve(&base, "http://other.example/k")
                .unwrap()
                .to_string(),
            "http://other.example/k"
        );
    }
}
