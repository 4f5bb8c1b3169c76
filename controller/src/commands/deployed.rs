//! A cluster that deploy has run on, opened read-only for the day-two verbs (`status`,
//! `switchover`, `backup`, …): config.yml, inventory.json, the secrets store, the controller's
//! identity and the platform, and a way to reach each host's agent. Nothing is created: a
//! cluster that was never deployed is an error that says to deploy it.

use std::path::Path;

use anyhow::{Context, bail};

use crate::agent_client::{self, AgentClient, Deadlines};
use crate::cluster_dir::ClusterDir;
use crate::commands::provision::load_cluster;
use crate::config::{Cluster, Instance, Role};
use crate::inventory::{Host, Inventory};
use crate::pki::{CertifiedKey, Pki};
use crate::planner::barman;
use crate::platform::{self, AnyPlatform, Platform as _};
use crate::secrets::Secrets;

pub struct Deployed {
    pub dir: ClusterDir,
    pub cluster: Cluster,
    pub inventory: Inventory,
    pub secrets: Secrets,
    pub ca_pem: String,
    pub identity: CertifiedKey,
    pub platform: AnyPlatform,
}

impl Deployed {
    /// Opens the cluster in `dir`, or says why it cannot be used yet.
    pub fn open(dir: &Path) -> anyhow::Result<Deployed> {
        let (cluster_dir, cluster) = load_cluster(dir)?;
        let never = |what: &str| {
            anyhow::anyhow!(
                "the cluster in {} was never deployed ({what}): run `tpa-controller deploy {}` \
                 first",
                dir.display(),
                dir.display()
            )
        };
        let Some(inventory) = Inventory::load(&cluster_dir.inventory())? else {
            return Err(never("no inventory.json"));
        };
        let secrets = Secrets::open(cluster_dir.root(), cluster.vault_name.as_deref())?;
        let Some((ca_pem, identity)) = Pki::existing_identity(cluster_dir.root(), &secrets)? else {
            return Err(never("no controller certificate in tls/"));
        };
        // Agents refuse an expired client certificate; say what to do before trying every host.
        if let Some(not_after) = Pki::not_after(&identity.cert_pem)
            && not_after <= time::OffsetDateTime::now_utc().unix_timestamp()
        {
            bail!(
                "the controller certificate {} expired at {} (agent_cert_lifetime): run \
                 `tpa-controller deploy {}` to renew it",
                cluster_dir.root().join("tls/controller.crt").display(),
                crate::pki::unix_text(not_after),
                dir.display()
            );
        }
        if inventory.hosts.is_empty() {
            bail!("inventory.json lists no hosts: run deploy first");
        }
        let platform = platform::for_inventory(&inventory)?;
        Ok(Deployed {
            dir: cluster_dir,
            cluster,
            inventory,
            secrets,
            ca_pem,
            identity,
            platform,
        })
    }

    /// `name`'s entry in inventory.json, or an error that says it was never provisioned.
    pub fn host(&self, name: &str) -> anyhow::Result<&Host> {
        self.inventory.host(name).with_context(|| {
            format!("{name} is not in inventory.json: run `tpa-controller deploy` first")
        })
    }

    /// The deployed Barman hosts that back something up, in config.yml order.
    pub fn barman_hosts(&self) -> Vec<&Instance> {
        self.cluster
            .instances
            .iter()
            .filter(|i| i.has_role(Role::Barman) && !i.provision_only)
            .filter(|i| self.inventory.host(&i.name).is_some())
            .filter(|i| !barman::servers(&self.cluster, &i.name).is_empty())
            .collect()
    }

    /// Connects to `name`'s agent with the default deadlines.
    pub async fn connect(&self, name: &str) -> anyhow::Result<AgentClient> {
        self.connect_with(name, Deadlines::default()).await
    }

    /// Connects to `name`'s agent with `deadlines`.
    pub async fn connect_with(
        &self,
        name: &str,
        deadlines: Deadlines,
    ) -> anyhow::Result<AgentClient> {
        let host = self.host(name)?;
        agent_client::connect_with(
            self.platform.agent_endpoint(host),
            name,
            &self.ca_pem,
            &self.identity,
            deadlines,
        )
        .await
        .with_context(|| format!("{name}: its agent does not answer; run deploy first"))
    }
}
