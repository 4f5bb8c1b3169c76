//! What the planner reads besides config.yml and the inventory: one owned [`ClusterState`],
//! gathered by `deploy::gather` (every piece of IO happens there or in the agents).

use std::collections::BTreeMap;
use std::fmt;

use tpa_common::facts::Facts;
use tpa_common::resource::Secret;

use super::inspect::Drift;
use super::topology::Topology;
use crate::settings::HostSettings;

/// The live cluster, as gathered for one deploy.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// Every deployed host (bootstrapped; not `provision_only`), by name.
    pub hosts: BTreeMap<String, HostState>,
    /// Which host is the primary and whom the others follow: live state first.
    pub topology: Topology,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The signing keys of the apt repositories the hosts use, by repository name (PGDG's is
    /// built in and used when absent here).
    pub apt_keys: BTreeMap<String, crate::apt_keys::AptKey>,
    /// SCRAM verifiers of the users' passwords.
    pub verifiers: Verifiers,
    /// The `replication` role's password, for replicas' passfiles (None: no replica, or
    /// `--check` before one was generated).
    pub replication_password: Option<Secret<String>>,
    /// The `repmgr` role's password, for every repmgr node's passfile (None: repmgr is not
    /// set up, or `--check` before one was generated).
    pub repmgr_password: Option<Secret<String>>,
    /// The `barman` and `streaming_barman` roles' passwords by user, for the Barman hosts'
    /// passfile (empty: nothing backed up, or `--check` before they were generated).
    pub barman_passwords: BTreeMap<String, Secret<String>>,
    /// Roles and databases the primary has that config.yml does not list.
    pub drift: Vec<Drift>,
    /// The barman/postgres SSH key pairs (None: nothing backed up, or `--check` before they
    /// were generated).
    pub ssh_keys: Option<super::ssh_trust::SshKeys>,
    /// The operator's hooks from `<dir>/hooks/`, validated, in deploy order.
    pub hooks: Vec<crate::hooks::HookFile>,
    /// Patroni's REST API password (`failover_manager: patroni`).
    pub patroni_password: Option<Secret<String>>,
    /// The password of Patroni's rewind role (`failover_manager: patroni`).
    pub rewind_password: Option<Secret<String>>,
}

/// One deployed host.
#[derive(Debug, Clone)]
pub struct HostState {
    /// What its agent reported, including its Postgres' live role and upstream.
    pub facts: Facts,
    /// Its settings, resolved once from config.yml and its OS.
    pub settings: HostSettings,
    /// Its Postgres server certificate (PEM), signed by the cluster CA for a key that was
    /// generated on, and never left, the host; on the primary, once one is current or issued.
    pub server_cert: Option<String>,
    /// etcd's and Patroni's certificate (PEM), on etcd members and Patroni nodes.
    pub ha_cert: Option<String>,
    /// rsyslog's certificate (PEM), on hosts of a cluster with a log server that have no
    /// `ha_cert` to reuse (planner/logserver.rs).
    pub log_cert: Option<String>,
    /// The cluster's local-repo directory as the host sees it (e.g.
    /// `/var/opt/tpa/local-repo/Debian/12`), when the cluster has one for its OS.
    pub local_repo: Option<String>,
}

/// SCRAM verifiers by user name, computed by the controller from the secrets store (reusing
/// the salt of the role's current verifier). `Debug` shows the user names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Verifiers(pub BTreeMap<String, String>);

impl Verifiers {
    pub fn by_user(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|user| (user, "<redacted>")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_verifiers() {
        let v = Verifiers(BTreeMap::from([(
            "ada".to_string(),
            "SCRAM-SHA-256$4096:c2FsdA==$stored:server".to_string(),
        )]));
        let shown = format!(
            "{:?}",
            ClusterState {
                verifiers: v,
                ..Default::default()
            }
        );
        assert!(
            shown.contains("ada") && !shown.contains("stored:server"),
            "{shown}"
        );
    }
}
