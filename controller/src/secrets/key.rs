//! The key that opens a cluster's secrets store, which never lives in the cluster directory:
//! either given by the environment (`TPA_SECRETS_KEY`) or a key file
//! `$XDG_CONFIG_HOME/tpa/keys/<key-id>.key` (default `~/.config/tpa/keys/`), created on first
//! use. A key file holds the base64 of 32 random bytes and a newline, the same text
//! `TPA_SECRETS_KEY` takes, so `export TPA_SECRETS_KEY=$(cat <key file>)` works.

use std::ffi::OsStr;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::TryRngCore as _;
use zeroize::Zeroizing;

/// The environment variable that supplies the key instead of a key file.
pub const KEY_ENV: &str = "TPA_SECRETS_KEY";

/// Bytes in a key (XChaCha20-Poly1305 takes 256-bit keys).
pub const KEY_LEN: usize = 32;

/// A 256-bit key, wiped from memory when dropped. No `Debug`: it must never be printed.
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

impl Key {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Key, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng
            .try_fill_bytes(bytes.as_mut())
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Key(bytes))
    }

    /// Parses the text form (base64, standard alphabet, surrounding whitespace ignored).
    /// Errors never quote the text: it is a secret.
    pub fn from_text(text: &str) -> Result<Key, KeyError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::NotBase64)?,
        );
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(decoded.len()))?;
        Ok(Key(Zeroizing::new(bytes)))
    }

    /// The text form: what a key file holds and `TPA_SECRETS_KEY` takes.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// Why a key could not be read, parsed or created. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not base64 text (a key file's content is the base64 of 32 bytes)")]
    NotBase64,
    #[error(
        "the key decodes to {0} bytes, not 32 (a key file's content is the base64 of 32 bytes)"
    )]
    WrongLength(usize),
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    #[error(
        "cannot find the key directory: neither XDG_CONFIG_HOME nor HOME is set; set one of them, or set {KEY_ENV}"
    )]
    NoConfigDir,
    #[error("{KEY_ENV}: {0}")]
    BadEnv(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// Where the key comes from. Injectable so tests never touch the process environment.
pub enum KeySource {
    /// The key itself, e.g. parsed from `TPA_SECRETS_KEY`; `origin` names it in messages.
    Given { key: Key, origin: String },
    /// Key files `<dir>/<key-id>.key`, created on first use.
    Directory(PathBuf),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Given { origin, .. } => write!(f, "KeySource::Given({origin})"),
            KeySource::Directory(dir) => write!(f, "KeySource::Directory({})", dir.display()),
        }
    }
}

impl KeySource {
    /// The key source of this process: `TPA_SECRETS_KEY` when set, else the key directory.
    pub fn from_process_env() -> Result<KeySource, KeyError> {
        let key =
            std::env::var_os(KEY_ENV).map(|v| Zeroizing::new(v.to_string_lossy().into_owned()));
        KeySource::from_env_values(
            key.as_ref().map(|k| k.as_str()),
            std::env::var_os("XDG_CONFIG_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )
    }

    /// The key source given the values of `TPA_SECRETS_KEY`, `XDG_CONFIG_HOME` and `HOME`
    /// (pure, for tests). Empty values count as unset, as the XDG spec says.
    pub fn from_env_values(
        secrets_key: Option<&str>,
        xdg_config_home: Option<&OsStr>,
        home: Option<&OsStr>,
    ) -> Result<KeySource, KeyError> {
        if let Some(text) = secrets_key.filter(|t| !t.trim().is_empty()) {
            let key = Key::from_text(text).map_err(|e| KeyError::BadEnv(e.to_string()))?;
            return Ok(KeySource::Given {
                key,
                origin: KEY_ENV.to_string(),
            });
        }
        let non_empty = |v: Option<&OsStr>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        let config_home = match (non_empty(xdg_config_home), non_empty(home)) {
            (Some(xdg), _) => xdg,
            (None, Some(home)) => home.join(".config"),
            (None, None) => return Err(KeyError::NoConfigDir),
        };
        Ok(KeySource::Directory(config_home.join("tpa").join("keys")))
    }

    /// The key file for `key_id`, when keys come from a directory.
    pub fn key_file(&self, key_id: &str) -> Option<PathBuf> {
        match self {
            KeySource::Given { .. } => None,
            KeySource::Directory(dir) => Some(dir.join(format!("{key_id}.key"))),
        }
    }

    /// Where the key for `key_id` comes from, for messages: the file path or the variable.
    pub fn describe(&self, key_id: &str) -> String {
        match self {
            KeySource::Given { origin, .. } => origin.clone(),
            KeySource::Directory(dir) => dir.join(format!("{key_id}.key")).display().to_string(),
        }
    }

    /// The key for `key_id`, or `None` when its key file does not exist.
    pub fn load(&self, key_id: &str) -> Result<Option<Key>, KeyError> {
        let path = match self {
            KeySource::Given { key, .. } => return Ok(Some(Key(key.0.clone()))),
            KeySource::Directory(dir) => dir.join(format!("{key_id}.key")),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        warn_if_readable_by_others(&path);
        Key::from_text(&text).map(Some).map_err(|e| KeyError::Io {
            path,
            message: e.to_string(),
        })
    }

    /// The key for `key_id`, creating its key file (0600, in a 0700 directory) if missing.
    pub fn load_or_create(&self, key_id: &str) -> Result<Key, KeyError> {
        let dir = match self {
            KeySource::Given { key, .. } => return Ok(Key(key.0.clone())),
            KeySource::Directory(dir) => dir,
        };
        if let Some(key) = self.load(key_id)? {
            return Ok(key);
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error(dir, e))?;
        let path = dir.join(format!("{key_id}.key"));
        let key = Key::generate()?;
        // create_new: if another process made this key meanwhile, use theirs, never overwrite.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return self.load(key_id)?.ok_or_else(|| KeyError::Io {
                    path,
                    message: "the key file vanished while being created".to_string(),
                });
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let mut text = key.to_text();
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::set_permissions(&path, Permissions::from_mode(0o600)))
            .map_err(|e| io_error(&path, e))?;
        tracing::info!(path = %path.display(), "created the secrets key");
        Ok(key)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A key file others can read is still usable, but the operator should know (as ssh warns).
fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the secrets key file is readable by other users: chmod 600 it"
        );
    }
}
