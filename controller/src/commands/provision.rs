//! `tpa-controller provision <dir>`: creates the cluster's hosts through its platform and
//! writes the files that reach them (key pair, ssh_config, known hosts, inventory.json).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::cluster_dir::{self, ClusterDir};
use crate::config::Cluster;
use crate::inventory::{self, Inventory};
use crate::platform::{self, HostChange, Platform, ProvisionRequest};

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
    let platform = platform::for_cluster(&cluster, mirror)?;
    let key_path = dir.ssh_key(&cluster.name);
    if cluster_dir::ensure_ssh_key(&key_path)? {
        println!("created SSH key pair {}", key_path.display());
    }
    let public_key = std::fs::read_to_string(key_path.with_extension("pub"))
        .with_context(|| format!("reading {}.pub", key_path.display()))?;
    let config_bytes = std::fs::read(dir.config())?;
    let previous = Inventory::load(&dir.inventory())?;

    let say = |line: &str| println!("{line}");
    let request = ProvisionRequest {
        cluster: &cluster,
        dir: &dir,
        previous: previous.as_ref(),
        public_key: &public_key,
        say: &say,
    };
    let mut result = platform.provision(&request).await?;

    // Host keys through the platform, so the first SSH connection is already strict.
    let keys = futures_util::future::join_all(
        result.hosts.iter().map(|(host, _)| platform.host_key(host)),
    )
    .await;
    let mut hosts = Vec::new();
    let mut changed = result.changed;
    for ((mut host, change), key) in result.hosts.drain(..).zip(keys) {
        match key {
            Ok(key) => {
                host.host_key = Some(key);
                changed |= change != HostChange::Unchanged;
                println!(
                    "{:<12} {:<15} {}",
                    host.name,
                    host.address.to_string(),
                    change.as_str()
                );
                hosts.push(host);
            }
            Err(e) => result.failures.push((host.name.clone(), e)),
        }
    }
    // Hosts `restore --to` created are not in config.yml: they stay until deprovision.
    if let Some(previous) = &previous {
        hosts.extend(
            previous
                .hosts
                .iter()
                .filter(|h| h.restored_from.is_some() && cluster.instance(&h.name).is_none())
                .cloned(),
        );
    }
    hosts.sort_by_key(|h| h.node);
    let inventory = Inventory {
        cluster: cluster.name.clone(),
        config_sha256: inventory::sha256_hex(&config_bytes),
        platform: platform.kind(),
        controller_address: result.controller_address,
        network: result.network,
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
