//! `tpa-controller download-packages <dir>`: fills `<dir>/local-repo/Debian/<major>/` with
//! every package the cluster's roles need, for hosts that reach no package archive.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;

use crate::commands::provision::load_cluster;
use crate::config::{Cluster, Platform};
use crate::local_repo::{self, DownloadRequest};
use crate::platform::docker::{
    self,
    image::{self, ImageRef},
};
use crate::settings::HostSettings;

/// The Debian majors the cluster's hosts run: from their images, else the default.
pub fn os_majors(cluster: &Cluster) -> BTreeSet<u32> {
    cluster
        .instances
        .iter()
        .filter(|i| i.platform == Platform::Docker)
        .filter_map(|i| ImageRef::of(i).buildable_debian_major())
        .collect()
}

/// Every package any host of the cluster needs on `os_major`: the union of what the planner
/// installs on each host, with the same resolved settings.
pub fn cluster_packages(cluster: &Cluster, os_major: u32) -> anyhow::Result<Vec<String>> {
    let mut packages = BTreeSet::new();
    for instance in &cluster.instances {
        let settings = HostSettings::resolve(cluster, instance, Some(os_major));
        packages.extend(crate::planner::host_packages(
            cluster, instance, &settings, os_major, false,
        )?);
    }
    Ok(packages.into_iter().collect())
}

pub async fn run(dir: &Path, os_version: Option<u32>, mirror: Option<&str>) -> anyhow::Result<()> {
    let (dir, cluster) = load_cluster(dir)?;
    let majors = match os_version {
        Some(v) => BTreeSet::from([v]),
        None => os_majors(&cluster),
    };
    let majors = if majors.is_empty() {
        BTreeSet::from([image::DEFAULT_DEBIAN_MAJOR])
    } else {
        majors
    };
    let docker = docker::connect().await.ok();
    for major in majors {
        let packages = cluster_packages(&cluster, major)?;
        let mut request =
            DownloadRequest::new(local_repo::repo_dir_for(dir.root(), major), major, packages);
        if let Some(mirror) = mirror {
            request.sources.mirror = mirror.to_string();
        }
        // The host image's installed packages need not be downloaded: read its dpkg status.
        let status_file = tempfile_path(major);
        if let Some(docker) = &docker {
            let image = ImageRef::debian(major);
            image::ensure(docker, &image, &request.sources.mirror, &|line| {
                println!("{line}")
            })
            .await?;
            let status = docker::read_image_file(docker, &image.full(), "/var/lib/dpkg/status")
                .await
                .with_context(|| format!("reading the package list of {}", image.full()))?;
            std::fs::write(&status_file, status)?;
            request.baseline_status = Some(status_file.clone());
        }
        let report = tokio::task::spawn_blocking(move || local_repo::download(&request)).await??;
        let _ = std::fs::remove_file(&status_file);
        println!("{report}");
    }
    Ok(())
}

fn tempfile_path(major: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tpa-dpkg-status-{major}-{}", std::process::id()))
}
