//! `tpa-controller deprovision <dir>`: removes exactly what this cluster directory's
//! provision created, through its platform, and the files provision generated. config.yml,
//! local-repo and secrets stay, and on bare machines the cluster's SSH key too.

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
    // Machines that stay (bare) keep authorising the cluster key: a new one would have to be
    // added to every machine again before the next provision.
    let key = dir.ssh_key(&cluster.name);
    let keep_key = platform.kind() == crate::config::Platform::Bare;
    for path in dir.provision_outputs(&cluster.name) {
        if keep_key && (path == key || path == key.with_extension("pub")) {
            if path == key && path.exists() {
                println!(
                    "kept {} and its .pub: the machines stay and authorise it",
                    path.display()
                );
            }
            continue;
        }
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
