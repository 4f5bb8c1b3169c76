//! `tpa-controller deploy <dir>` (and `--check`): provision if needed, then the pipeline in
//! [`crate::deploy`]: gather, plan, run, report.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;

use crate::agent_client::AgentClient;
use crate::cluster_dir::ClusterDir;
use crate::commands::provision::{self, load_cluster};
use crate::config::Cluster;
use crate::deploy::{self, DeployLog, Gathered};
use crate::inventory::{self, Inventory};
use crate::planner::{self, PlanInput};

pub use crate::deploy::DeployOutcome;

pub struct DeployOptions {
    pub check: bool,
    pub verbose: bool,
    /// How many hosts bootstrap, and how many stages apply, at once (`--forks`); `None`: the
    /// platform's default ([`crate::orchestrator::default_forks`]).
    pub forks: Option<usize>,
}

pub async fn run(dir: &Path, options: &DeployOptions) -> anyhow::Result<DeployOutcome> {
    let started = Instant::now();
    let (cluster_dir, cluster) = load_cluster(dir)?;
    // Hooks are checked before anything is touched, like config.yml.
    let hooks = crate::hooks::read(cluster_dir.root(), &cluster).map_err(|errors| {
        anyhow::anyhow!(
            "{}: the hooks cannot be used (docs/hooks.md):\n  {}",
            cluster_dir.root().join("hooks").display(),
            errors.join("\n  ")
        )
    })?;
    // So is every apt repository's key: one that cannot be fetched, or is not the one key_id
    // names, stops the deploy before a host is created or touched.
    let apt_keys = crate::apt_keys::load(cluster_dir.root(), &cluster, options.check).await?;
    let inventory = current_inventory(&cluster_dir, &cluster, options.check).await?;
    let mut log = DeployLog::start(&cluster.name, options.check);
    let forks = options
        .forks
        .unwrap_or_else(|| crate::orchestrator::default_forks(inventory.platform));

    let Gathered { agents, mut state } = deploy::gather(
        &cluster_dir,
        &cluster,
        &inventory,
        apt_keys,
        options.check,
        forks,
        &mut log,
    )
    .await?;
    state.hooks = hooks;
    let plan = planner::plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        state: &state,
    })
    .map_err(|errors| anyhow::anyhow!("cannot plan the deploy:\n  {}", errors.join("\n  ")))?;
    for note in &plan.notes {
        log.line(format!("note: {note}"));
    }
    let reports = deploy::run::apply(&plan, &agents, options.check, options.verbose, forks).await;
    if !options.check && reports.iter().any(|r| r.summary.changed > 0) {
        request_health_rounds(&agents).await;
    }
    deploy::report::finish(&cluster_dir, log, &reports, options.check, started)
}

/// Each agent ran a health round after its host's last stage, but other hosts' stages may
/// have changed what it sees since (a replica that streams now, Barman's slot in use): every
/// agent is asked for one more, so that `status` right after waits for it instead of showing
/// warnings the deploy already resolved. Best effort: a host that does not answer now keeps
/// its scheduled rounds.
async fn request_health_rounds(agents: &std::collections::BTreeMap<String, AgentClient>) {
    let requests = agents.iter().map(|(host, client)| {
        let mut client = client.clone();
        async move {
            if let Err(e) = client.request_health_round().await {
                tracing::debug!(%host, "asking for a health round failed: {e:#}");
            }
        }
    });
    futures_util::future::join_all(requests).await;
}

/// The inventory deploy works on: provision first when the hosts were never provisioned,
/// config.yml changed since (as TPA's deploy does), or an earlier provision left hosts out.
async fn current_inventory(
    dir: &ClusterDir,
    cluster: &Cluster,
    check: bool,
) -> anyhow::Result<Inventory> {
    let config = std::fs::read(dir.config())?;
    let existing = Inventory::load(&dir.inventory())?;
    let missing = |inv: &Inventory| -> Vec<String> {
        cluster
            .instances
            .iter()
            .filter(|i| inv.host(&i.name).is_none())
            .map(|i| i.name.clone())
            .collect()
    };
    match existing {
        Some(inv) if check && !missing(&inv).is_empty() => bail!(
            "{} not provisioned (an earlier provision failed there?): run provision (or \
             deploy) first",
            missing(&inv).join(", ")
        ),
        Some(inv)
            if inv.config_sha256 == inventory::sha256_hex(&config) && missing(&inv).is_empty() =>
        {
            Ok(inv)
        }
        Some(inv) if check => Ok(inv),
        None if check => bail!("the cluster is not provisioned: run provision (or deploy) first"),
        _ => provision::run(dir.root(), None).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../tests/fixtures/seed/config.yml");

    #[tokio::test]
    async fn check_names_hosts_an_earlier_provision_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.yml"), SEED).expect("config");
        // What a provision that failed on every host but ulb leaves behind.
        let (cluster_dir, cluster) = load_cluster(dir.path()).expect("seed loads");
        let mut inventory = crate::planner::tests::inventory(&cluster);
        inventory.config_sha256 = inventory::sha256_hex(SEED.as_bytes());
        inventory.hosts.retain(|h| h.name == "ulb");
        std::fs::write(dir.path().join("inventory.json"), inventory.to_json()).expect("inventory");
        let err = current_inventory(&cluster_dir, &cluster, true)
            .await
            .expect_err("hosts are missing");
        assert!(
            err.to_string()
                .starts_with("vub, achel, chimay not provisioned"),
            "{err}"
        );
    }
}
