//! `tpa-controller deploy <dir>` (and `--check`): provision if needed, then the pipeline in
//! [`crate::deploy`]: gather, plan, run, report.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;

use crate::cluster_dir::ClusterDir;
use crate::commands::provision::{self, load_cluster};
use crate::deploy::{self, DeployLog, Gathered};
use crate::inventory::{self, Inventory};
use crate::planner::{self, PlanInput};

pub use crate::deploy::DeployOutcome;

pub struct DeployOptions {
    pub check: bool,
    pub verbose: bool,
}

pub async fn run(dir: &Path, options: &DeployOptions) -> anyhow::Result<DeployOutcome> {
    let started = Instant::now();
    let (cluster_dir, cluster) = load_cluster(dir)?;
    let inventory = current_inventory(&cluster_dir, options.check).await?;
    let mut log = DeployLog::start(&cluster.name, options.check);

    let Gathered { agents, state } =
        deploy::gather(&cluster_dir, &cluster, &inventory, options.check, &mut log).await?;
    let plan = planner::plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        state: &state,
    })
    .map_err(|errors| anyhow::anyhow!("cannot plan the deploy:\n  {}", errors.join("\n  ")))?;
    for note in &plan.notes {
        log.line(format!("note: {note}"));
    }
    let reports = deploy::run::apply(&plan, &agents, options.check, options.verbose).await;
    deploy::report::finish(&cluster_dir, log, &reports, options.check, started)
}

/// The inventory deploy works on: provision first when the hosts were never provisioned
/// or config.yml changed since (as TPA's deploy does).
async fn current_inventory(dir: &ClusterDir, check: bool) -> anyhow::Result<Inventory> {
    let config = std::fs::read(dir.config())?;
    let existing = Inventory::load(&dir.inventory())?;
    match existing {
        Some(inv) if inv.config_sha256 == inventory::sha256_hex(&config) => Ok(inv),
        Some(inv) if check => Ok(inv),
        None if check => bail!("the cluster is not provisioned: run provision (or deploy) first"),
        _ => provision::run(dir.root(), None).await,
    }
}
