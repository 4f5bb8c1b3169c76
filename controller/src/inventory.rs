//! The machine-readable record of provisioned hosts (`<dir>/inventory.json`) that deploy
//! and every later command read. Provision writes it; nothing else does.
//!
//! The words are the platform layer's, not one platform's: `platform_id` is a container id
//! on docker and will be an instance id on AWS. Files written before those words changed
//! (`container_id`, `network.gateway`) still load.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Platform;

/// Everything a later step needs to reach the hosts of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "stored::Inventory")]
pub struct Inventory {
    pub cluster: String,
    /// SHA-256 of config.yml when this inventory was written.
    pub config_sha256: String,
    /// The platform that provisioned the hosts.
    #[serde(with = "platform_name")]
    pub platform: Platform,
    /// The address the hosts see the controller's connections come from (docker: the
    /// network's gateway); pg_hba admits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_address: Option<IpAddr>,
    /// The hosts' network, on platforms that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    pub hosts: Vec<Host>,
}

/// The network a platform put the hosts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The platform's name for it (a Docker network's name).
    pub name: String,
    /// Its IPv4 subnet in CIDR form.
    pub subnet: String,
}

/// One provisioned host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub node: u32,
    /// Where SSH (and the agent) is reached.
    pub address: IpAddr,
    pub ssh_user: String,
    pub ssh_port: u16,
    #[serde(with = "platform_name")]
    pub platform: Platform,
    /// The platform's id for the host (docker: the container id).
    #[serde(
        default,
        alias = "container_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub platform_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub roles: Vec<String>,
    /// The host's SSH public key, read from the host through the platform (not over the network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Set on a host `restore --to NEW_NAME` created: the instance whose backup it holds. It
    /// is no member of the cluster (deploy, topology and status read config.yml's instances
    /// only); provision keeps it here, the Barman hosts' known_hosts pin it, deprovision
    /// removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// The platform's ids of the host's attached volumes by `device_name` (aws: EBS volume
    /// ids), which name the volume on hosts that rename its device (NVMe on Nitro).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, String>,
}

impl Inventory {
    pub fn load(path: &Path) -> anyhow::Result<Option<Inventory>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| {
                    format!(
                        "{} is not a valid tpa inventory: re-run provision",
                        path.display()
                    )
                })
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// SHA-256 hex of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A platform as its config.yml name.
mod platform_name {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::config::Platform;

    pub fn serialize<S: Serializer>(platform: &Platform, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(platform.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
        let name = String::deserialize(d)?;
        Platform::parse(&name).ok_or_else(|| D::Error::custom(format!("unknown platform `{name}`")))
    }
}

/// The file as every version of tpa wrote it, turned into today's [`Inventory`].
mod stored {
    use std::net::IpAddr;

    use serde::Deserialize;

    use super::{Host, platform_name};
    use crate::config::Platform;

    #[derive(Deserialize)]
    pub struct Inventory {
        cluster: String,
        config_sha256: String,
        /// Absent in files from before the platform layer: only docker existed then.
        #[serde(default = "docker", with = "platform_name")]
        platform: Platform,
        #[serde(default)]
        controller_address: Option<IpAddr>,
        #[serde(default)]
        network: Option<Network>,
        hosts: Vec<Host>,
    }

    #[derive(Deserialize)]
    struct Network {
        name: String,
        subnet: String,
        /// Older files: the docker gateway, which was the controller's address.
        #[serde(default)]
        gateway: Option<IpAddr>,
    }

    fn docker() -> Platform {
        Platform::Docker
    }

    impl From<Inventory> for super::Inventory {
        fn from(file: Inventory) -> Self {
            let gateway = file.network.as_ref().and_then(|n| n.gateway);
            super::Inventory {
                cluster: file.cluster,
                config_sha256: file.config_sha256,
                platform: file.platform,
                controller_address: file.controller_address.or(gateway),
                network: file.network.map(|n| super::Network {
                    name: n.name,
                    subnet: n.subnet,
                }),
                hosts: file.hosts,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inventory.json as provision wrote it before the platform layer.
    const DOCKER_ERA: &str = r#"{
  "cluster": "fosdem",
  "config_sha256": "abc",
  "network": { "name": "fosdem", "subnet": "10.33.7.0/24", "gateway": "10.33.7.1" },
  "hosts": [
    {
      "name": "ulb", "node": 1, "address": "10.33.7.2", "ssh_user": "root", "ssh_port": 22,
      "platform": "docker", "container_id": "c0ffee", "image": "tpa/debian:12",
      "roles": ["primary"], "host_key": "ssh-ed25519 AAAA"
    }
  ]
}"#;

    #[test]
    fn inventories_from_before_the_platform_layer_still_load() {
        let inv: Inventory = serde_json::from_str(DOCKER_ERA).unwrap();
        assert_eq!(inv.platform, Platform::Docker);
        assert_eq!(inv.controller_address, Some("10.33.7.1".parse().unwrap()));
        assert_eq!(inv.hosts[0].platform_id.as_deref(), Some("c0ffee"));
        assert_eq!(inv.hosts[0].platform, Platform::Docker);
        assert_eq!(
            inv.network.as_ref().map(|n| n.subnet.as_str()),
            Some("10.33.7.0/24")
        );
    }

    #[test]
    fn written_with_platform_words_and_read_back_unchanged() {
        let inv: Inventory = serde_json::from_str(DOCKER_ERA).unwrap();
        let json = inv.to_json();
        assert!(json.contains(r#""platform_id": "c0ffee""#), "{json}");
        assert!(
            json.contains(r#""controller_address": "10.33.7.1""#),
            "{json}"
        );
        assert!(!json.contains("container_id"), "{json}");
        assert!(!json.contains("gateway"), "{json}");
        let again: Inventory = serde_json::from_str(&json).unwrap();
        assert_eq!(again, inv);
    }

    #[test]
    fn an_unknown_platform_is_refused() {
        let json = DOCKER_ERA.replacen("\"cluster\"", "\"platform\": \"vmware\", \"cluster\"", 1);
        let err = serde_json::from_str::<Inventory>(&json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown platform `vmware`"), "{err}");
    }
}
