//! `tpa-controller deprovision <dir>`: removes exactly this cluster's containers and network,
//! and the files provision generated. config.yml, local-repo and secrets stay.

use std::path::Path;

use crate::commands::provision::load_cluster;
use crate::platform::docker;

pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let (dir, cluster) = load_cluster(dir)?;
    let docker = docker::connect().await?;
    let (containers, networks) = docker::deprovision(&docker, &cluster.name).await?;
    for name in &containers {
        println!("removed container {name}");
    }
    for name in &networks {
        println!("removed network {name}");
    }
    for path in dir.provision_outputs(&cluster.name) {
        if path.exists() {
            std::fs::remove_file(&path)?;
            println!("removed {}", path.display());
        }
    }
    if containers.is_empty() && networks.is_empty() {
        println!("cluster {} had no containers or networks", cluster.name);
    }
    Ok(())
}
