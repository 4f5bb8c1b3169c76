//! `tpa-controller deprovision <dir>`: removes exactly what this cluster directory's
//! provision created, through its platform, and the files provision generated. config.yml,
//! local-repo and secrets stay.

use std::path::Path;

use crate::commands::provision::load_cluster;
use crate::inventory::Inventory;
use crate::platform::{self, DeprovisionRequest, Platform};

pub async fn run(dir: &Path, uninstall: bool) -> anyhow::Result<()> {
    let (dir, cluster) = load_cluster(dir)?;
    let previous = Inventory::load(&dir.inventory())?;
    let platform = match &previous {
        Some(inventory) => platform::for_inventory(inventory)?,
        None => platform::for_cluster(&cluster, None)?,
    };
    let done = platform
        .deprovision(&DeprovisionRequest {
            cluster: &cluster,
            dir: &dir,
            previous: previous.as_ref(),
            uninstall,
        })
        .await?;
    for object in &done.removed {
        println!("removed {object}");
    }
    for note in &done.kept {
        println!("{note}");
    }
    for path in dir.provision_outputs(&cluster.name) {
        if path.exists() {
            std::fs::remove_file(&path)?;
            println!("removed {}", path.display());
        }
    }
    if done.removed.is_empty() && done.kept.is_empty() {
        println!(
            "cluster {} had no hosts or networks to remove",
            cluster.name
        );
    }
    Ok(())
}
