//! `tpa-controller provision <dir>`: creates the cluster's hosts and writes the files that
//! reach them (key pair, ssh_config, known hosts, inventory.json).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::cluster_dir::{self, ClusterDir};
use crate::config::{Cluster, Platform};
use crate::image::DEFAULT_MIRROR;
use crate::inventory::{self, Inventory};
use crate::platform::docker::{self, HostChange};

/// Loads and validates config.yml; every problem is reported before anything is touched.
pub fn load_cluster(dir: &Path) -> anyhow::Result<(ClusterDir, Cluster)> {
    let cluster_dir = ClusterDir::open(dir)?;
    let cluster = Cluster::load(cluster_dir.root()).map_err(|errors| {
        anyhow::anyhow!(
            "{errors}\nconfig.yml has {} problem(s): nothing was changed",
            errors.0.len()
        )
    })?;
    Ok((cluster_dir, cluster))
}

pub async fn run(dir: &Path, mirror: Option<&str>) -> anyhow::Result<Inventory> {
    let started = Instant::now();
    let (dir, cluster) = load_cluster(dir)?;
    if let Some(other) = cluster
        .instances
        .iter()
        .find(|i| i.platform != Platform::Docker)
    {
        bail!(
            "instance {} uses platform {:?}: only the docker platform can be provisioned so far",
            other.name,
            other.platform
        );
    }
    let key_path = dir.ssh_key(&cluster.name);
    if cluster_dir::ensure_ssh_key(&key_path)? {
        println!("created SSH key pair {}", key_path.display());
    }
    let public_key = std::fs::read_to_string(key_path.with_extension("pub"))
        .with_context(|| format!("reading {}.pub", key_path.display()))?;
    let config_bytes = std::fs::read(dir.config())?;
    let previous = Inventory::load(&dir.inventory())?;
    let previous_hosts = previous
        .as_ref()
        .map(|p| p.hosts.clone())
        .unwrap_or_default();

    let docker = docker::connect().await?;
    let mirror = mirror.unwrap_or(DEFAULT_MIRROR);
    let result = docker::provision(
        &docker,
        &cluster,
        &dir,
        &previous_hosts,
        previous.as_ref().and_then(|p| p.network.as_ref()),
        &public_key,
        mirror,
    )
    .await?;

    for image in &result.images_built {
        println!("built image {image}");
    }
    println!(
        "network {} {} {}",
        result.network.name,
        result.network.subnet,
        if result.network_created {
            "created"
        } else {
            "unchanged"
        }
    );
    let mut hosts: Vec<_> = result.hosts.iter().map(|(h, _)| h.clone()).collect();
    hosts.sort_by_key(|h| h.node);
    let mut changed = result.network_created || !result.images_built.is_empty();
    for (host, change) in &result.hosts {
        let word = match change {
            HostChange::Created => "created",
            HostChange::Started => "started",
            HostChange::Unchanged => "unchanged",
        };
        changed |= *change != HostChange::Unchanged;
        println!("{:<12} {:<15} {word}", host.name, host.address.to_string());
    }
    let inventory = Inventory {
        cluster: cluster.name.clone(),
        config_sha256: inventory::sha256_hex(&config_bytes),
        network: Some(result.network.clone()),
        hosts,
    };
    let files: [(std::path::PathBuf, String); 3] = [
        (dir.inventory(), inventory.to_json()),
        (
            dir.ssh_config(),
            cluster_dir::render_ssh_config(&dir, &inventory),
        ),
        (
            dir.known_hosts(),
            cluster_dir::render_known_hosts(&inventory.hosts),
        ),
    ];
    for (path, content) in files {
        changed |= cluster_dir::write_if_changed(&path, &content)?;
    }
    if !result.failures.is_empty() {
        let lines: Vec<String> = result
            .failures
            .iter()
            .map(|(host, e)| format!("  {host}: {e:#}"))
            .collect();
        bail!(
            "provision failed on {} host(s):\n{}\nfix the cause and run provision again: it finishes the job",
            result.failures.len(),
            lines.join("\n")
        );
    }
    let secs = started.elapsed().as_secs_f64();
    if changed {
        println!(
            "provisioned {} host(s) in {secs:.1}s",
            inventory.hosts.len()
        );
    } else {
        println!(
            "nothing to change: {} host(s) already provisioned ({secs:.1}s)",
            inventory.hosts.len()
        );
    }
    println!("log in with: ssh -F {} <host>", dir.ssh_config().display());
    Ok(inventory)
}
