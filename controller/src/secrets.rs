//! Secrets of a cluster (generated database passwords): kept encrypted in the cluster
//! directory, `<dir>/secrets.enc`, so the directory can live in git, while the key that opens
//! them lives outside it (a key file under `~/.config/tpa/keys/`, or `TPA_SECRETS_KEY`).
//! Private keys (the cluster CA's, the controller's) are sealed with the same key into files of
//! their own ([`Secrets::seal_file`]), so an operator can still remove or restore one of them.
//! docs/secrets.md is the operator's side of this module.
//!
//! # Layout
//! - `key`: the key, where it comes from ([`KeySource`]), key files created on first use.
//! - `store_file`: the file format: plaintext header (version, key id), sealed JSON body.

mod key;
mod ssh_key;
mod store_file;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow, bail};
use rand::Rng as _;
use zeroize::Zeroizing;

pub use key::{KEY_ENV, Key, KeyError, KeySource};
pub use ssh_key::SshKeyPair;
pub use store_file::FormatError;

/// The store's file name inside the cluster directory.
pub const STORE_FILE: &str = "secrets.enc";

/// Characters in a generated password.
pub const PASSWORD_LEN: usize = 32;

/// The name a user's password is stored under: `<user>_password`, as TPA names it.
pub fn password_key(user: &str) -> String {
    format!("{user}_password")
}

/// The store file of the cluster in `cluster_root`.
pub fn store_path(cluster_root: &Path) -> PathBuf {
    cluster_root.join(STORE_FILE)
}

/// A new password: [`PASSWORD_LEN`] characters from `[A-Za-z0-9]` (about 190 bits), drawn from
/// a CSPRNG. No punctuation, so it needs no quoting in connection strings, .pgpass or YAML.
pub fn generate_password() -> Zeroizing<String> {
    Zeroizing::new(
        rand::rng()
            .sample_iter(&rand::distr::Alphanumeric)
            .take(PASSWORD_LEN)
            .map(char::from)
            .collect(),
    )
}

/// The decrypted secrets of one cluster: name → value. Values are wiped from memory when
/// dropped and never printed (`Debug` shows names only).
pub struct Secrets {
    path: PathBuf,
    key_id: String,
    key_source: KeySource,
    /// Loaded when the store was opened, or on the first save of a new store.
    key: OnceLock<Key>,
    values: BTreeMap<String, Zeroizing<String>>,
    /// Changed since opened or last saved; atomic so `save(&self)` can reset it.
    dirty: AtomicBool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Opens (or creates on first write) the store of the cluster in `cluster_root`;
    /// `vault_name` from config.yml names the key of a new store. The key comes from
    /// `TPA_SECRETS_KEY` when set, else from `$XDG_CONFIG_HOME/tpa/keys/` (default
    /// `~/.config/tpa/keys/`).
    pub fn open(cluster_root: &Path, vault_name: Option<&str>) -> anyhow::Result<Secrets> {
        let key_source = KeySource::from_process_env()?;
        Secrets::open_with_key_source(cluster_root, vault_name, key_source)
    }

    /// [`Secrets::open`] with the key source given (tests; callers that chose a key).
    pub fn open_with_key_source(
        cluster_root: &Path,
        vault_name: Option<&str>,
        key_source: KeySource,
    ) -> anyhow::Result<Secrets> {
        let path = store_path(cluster_root);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key_id = match vault_name {
                    Some(name) => {
                        check_key_id(name).with_context(|| {
                            format!("config.yml: vault_name `{name}` cannot name a key file")
                        })?;
                        name.to_string()
                    }
                    None => random_key_id(),
                };
                return Ok(Secrets {
                    path,
                    key_id,
                    key_source,
                    key: OnceLock::new(),
                    values: BTreeMap::new(),
                    dirty: AtomicBool::new(false),
                });
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let header =
            store_file::read_header(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let key_id = header.key_id.clone();
        check_key_id(&key_id)
            .with_context(|| format!("{}: the header's key-id", path.display()))?;
        let Some(key) = key_source.load(&key_id)? else {
            return Err(missing_key(&path, &key_id, &key_source));
        };
        let plaintext = store_file::open(&key, &header).map_err(|e| match e {
            FormatError::Decrypt => anyhow!(
                "cannot decrypt {} with the key from {}: it is not the key this store was written \
                 with (key id {key_id}), or the file was altered; bring the right key (see docs/secrets.md)",
                path.display(),
                key_source.describe(&key_id),
            ),
            other => anyhow!("{}: {other}", path.display()),
        })?;
        let values = parse_document(&plaintext)
            .with_context(|| format!("{}: the decrypted content", path.display()))?;
        Ok(Secrets {
            path,
            key_id,
            key_source,
            key: OnceLock::from(key),
            values,
            dirty: AtomicBool::new(false),
        })
    }

    /// The store file (it may not exist yet).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id of the key that opens this store (the name of its key file, without `.key`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.as_str())
    }

    /// Remembers `value` under `name`; [`Secrets::save`] writes it.
    pub fn set(&mut self, name: &str, value: String) {
        let value = Zeroizing::new(value);
        if self.values.get(name) != Some(&value) {
            self.values.insert(name.to_string(), value);
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// The password of `user`, generating and remembering one if absent; true if generated.
    pub fn password_or_generate(&mut self, user: &str) -> (Zeroizing<String>, bool) {
        let name = password_key(user);
        if let Some(existing) = self.values.get(&name) {
            return (existing.clone(), false);
        }
        let password = generate_password();
        self.set(&name, password.as_str().to_string());
        (password, true)
    }

    /// Writes the store (fresh nonce, atomically, mode 0600) if anything changed; creates the
    /// key file of a new store.
    pub fn save(&self) -> anyhow::Result<()> {
        if !self.dirty.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.write()
    }

    /// Encrypts `plaintext` with this store's key into its own file `path` (the store's file
    /// format, mode 0600, written through the cluster directory's safe writer). A store that
    /// does not exist yet is written first (empty if need be), so that its key id is fixed and
    /// every encrypted file of the cluster opens with the one key.
    pub fn seal_file(&self, path: &Path, plaintext: &[u8]) -> anyhow::Result<()> {
        if !self.path.exists() {
            self.write()?;
        }
        let text = store_file::seal(self.key()?, &self.key_id, plaintext)
            .map_err(|e| anyhow!("cannot encrypt {}: {e}", path.display()))?;
        crate::cluster_dir::write_private(path, text.as_bytes())
    }

    /// Decrypts a file written by [`Secrets::seal_file`]; `None` when it does not exist. The
    /// file's own header names its key, as the store's does.
    pub fn open_file(&self, path: &Path) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let header =
            store_file::read_header(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        check_key_id(&header.key_id)
            .with_context(|| format!("{}: the header's key-id", path.display()))?;
        let loaded;
        let key = match self.key.get() {
            Some(key) if header.key_id == self.key_id => key,
            _ => {
                loaded = self.key_source.load(&header.key_id)?;
                loaded
                    .as_ref()
                    .ok_or_else(|| missing_key(path, &header.key_id, &self.key_source))?
            }
        };
        store_file::open(key, &header)
            .map(Some)
            .map_err(|e| match e {
                FormatError::Decrypt => anyhow!(
                    "cannot decrypt {} with the key from {}: it is not the key it was written with \
                     (key id {}), or the file was altered; bring the right key (see docs/secrets.md)",
                    path.display(),
                    self.key_source.describe(&header.key_id),
                    header.key_id,
                ),
                other => anyhow!("{}: {other}", path.display()),
            })
    }

    /// The store's key, created (key file, on first use) when the store is new.
    fn key(&self) -> anyhow::Result<&Key> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = self
            .key_source
            .load_or_create(&self.key_id)
            .with_context(|| format!("cannot create the key for {}", self.path.display()))?;
        Ok(self.key.get_or_init(|| key))
    }

    /// Encrypts and writes the store, whatever changed.
    fn write(&self) -> anyhow::Result<()> {
        let key = self.key()?;
        let document: BTreeMap<&str, &str> = self
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let plaintext =
            Zeroizing::new(serde_json::to_vec(&document).context("cannot serialise the secrets")?);
        let text = store_file::seal(key, &self.key_id, &plaintext)
            .map_err(|e| anyhow!("cannot encrypt {}: {e}", self.path.display()))?;
        // A crash leaves the old store or the new one, never half of one.
        crate::cluster_dir::write_private(&self.path, text.as_bytes())?;
        self.dirty.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// The error for a store whose key is nowhere to be found: where we looked, how to bring it.
fn missing_key(path: &Path, key_id: &str, source: &KeySource) -> anyhow::Error {
    let looked = source.describe(key_id);
    anyhow!(
        "cannot open {}: its key is not at {looked} (key id {key_id}); copy that key file from \
         the machine that created this store (keep it mode 0600), or set {KEY_ENV} to the key \
         file's content (see docs/secrets.md)",
        path.display(),
    )
}

/// Key ids name files, so they must not be able to climb out of the key directory.
fn check_key_id(id: &str) -> anyhow::Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 128 || id.starts_with('.') || !id.chars().all(ok_char) {
        bail!(
            "`{id}` is not a key id: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'"
        );
    }
    Ok(())
}

/// A random UUID (version 4), the shape TPA gives `vault_name`.
fn random_key_id() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The decrypted body: a JSON object of strings. Errors never quote the content.
fn parse_document(plaintext: &[u8]) -> anyhow::Result<BTreeMap<String, Zeroizing<String>>> {
    let map: BTreeMap<String, String> = serde_json::from_slice(plaintext)
        .map_err(|_| anyhow!("not a JSON object of strings (the store is damaged)"))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(v)))
        .collect())
}
