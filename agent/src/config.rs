//! The agent's configuration file, `/etc/tpa-agent/agent.toml`, written by `tpa-agent init` and read by
//! `tpa-agent serve`. It holds no secret and no cluster knowledge: only who the agent is and where it keeps
//! its keys.
//!
//! ```toml
//! name = "kinetic"              # the host name; the certificate's common name
//! sans = ["10.33.0.2"]          # extra names/IPs for the certificate request
//! listen = "10.33.0.2:7443"     # the host's cluster address (`--listen` of init)
//! state_dir = "/var/lib/tpa-agent"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `init` writes and `serve` reads the configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tpa-agent/agent.toml";
/// Where the key, certificates and join token hash live by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tpa-agent";

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The host name the agent is enrolled as: its certificate's common name and first DNS name.
    pub name: String,
    /// Extra DNS names or IP addresses the agent asks to have in its certificate.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Address and port to listen on: the host's cluster address. Configs written by older versions say
    /// `0.0.0.0:7443` (every interface), as does the default when the key is absent.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory of the key (mode 0600), the certificates and the join token hash.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The health spec deploy writes: what the scheduled checks look at.
    #[serde(default = "default_health_spec")]
    pub health_spec: PathBuf,
}

/// Why the configuration file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read {path}: {source}; run `tpa-agent init` first (the controller's bootstrap does)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid agent configuration {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot render the agent configuration: {0}")]
    Render(#[from] toml::ser::Error),
}

/// The listen address when `listen` is absent (and what older versions wrote): every interface,
/// [`tpa_proto::DEFAULT_AGENT_PORT`]. `init` now always writes the address it is given.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], tpa_proto::DEFAULT_AGENT_PORT))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_health_spec() -> PathBuf {
    PathBuf::from(tpa_common::health_spec::SPEC_PATH)
}

// === impl AgentConfig ===

impl AgentConfig {
    /// Reads and parses the configuration file at `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the configuration to `path` (mode 0644), creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = format!("# Written by `tpa-agent init`.\n{}", toml::to_string(self)?);
        let write = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        crate::tls::write_atomic(path, text.as_bytes(), 0o644).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etc/agent.toml");
        let config = AgentConfig {
            name: "kinetic".into(),
            sans: vec!["10.0.0.2".into()],
            listen: default_listen(),
            state_dir: dir.path().join("state"),
            health_spec: dir.path().join("health.json"),
        };
        config.save(&path).expect("save");
        assert_eq!(AgentConfig::load(&path).expect("load"), config);

        std::fs::write(&path, "name = \"quirk\"\n").expect("write");
        let minimal = AgentConfig::load(&path).expect("load");
        assert_eq!(minimal.listen.to_string(), "0.0.0.0:7443");
        assert_eq!(minimal.state_dir, PathBuf::from("/var/lib/tpa-agent"));
        assert_eq!(
            minimal.health_spec,
            PathBuf::from("/etc/tpa-agent/health.json")
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "name = \"x\"\nlisten_port = 1\n").expect("write");
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("agent.toml") && err.contains("listen_port"),
            "{err}"
        );
        let missing = AgentConfig::load(&dir.path().join("nope.toml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("tpa-agent init"), "{missing}");
    }
}
