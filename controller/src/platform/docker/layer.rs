//! Package layers: host images that already hold a host's packages, the docker equivalent of
//! the golden images people build for cloud fleets.
//!
//! A layer is `tpa/debian:<major>` plus `apt-get install` of one package set from the
//! cluster's local repository, committed as `tpa/debian:<major>-pkgs-<hash>`. The hash covers
//! the base image's id, the package list, the repository's index and the install script, so every host and every
//! cluster that needs the same set from the same packages shares one layer, and a new
//! download or a rebuilt base image makes a new one. Building one costs what one host's
//! install costs (about 40 s for a Postgres node on two cores); after that a new host starts
//! with its packages in place and deploy finds them installed.
//!
//! Deploy still checks every package: a layer only saves work, and a host created from the
//! plain image (no local repository yet, `docker_package_layer: false`, or a failed build)
//! converges the same way. The layer installs exactly what the `sys` stage would (the same
//! apt options, the same `createcluster.d` switch first), with services kept from starting
//! (policy-rc.d), disables the units the `sys` stage disables after the packages, and leaves
//! no apt source or package lists behind.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::LOCAL_REPO_MOUNT;
use super::image::{self, ImageRef};
use crate::cluster_dir::ClusterDir;
use crate::config::{Cluster, Instance};
use crate::local_repo;
use crate::planner::sys::CREATECLUSTER_CONF;
use crate::platform::Say;
use crate::settings::HostSettings;

/// The label a layer carries: the packages it holds, space-separated.
pub const LAYER_LABEL: &str = "tpa.layer.packages";

/// What one layer holds: a base image and a package set from one repository directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LayerWant {
    pub base: ImageRef,
    pub packages: Vec<String>,
}

/// The package layer each of `instances` starts from, by instance name; an instance without
/// one (no local repository, layers switched off, or the build failed, which is said) starts
/// from its plain image. Only instances of buildable `tpa/debian` images get layers.
pub async fn images_for(
    docker: &Docker,
    cluster: &Cluster,
    dir: &ClusterDir,
    instances: &[&Instance],
    say: Say<'_>,
) -> HashMap<String, String> {
    let mut images = HashMap::new();
    let mut wanted: BTreeMap<LayerWant, Vec<String>> = BTreeMap::new();
    for instance in instances {
        if let Some(want) = want_for(cluster, instance, &ImageRef::of(instance)) {
            wanted.entry(want).or_default().push(instance.name.clone());
        }
    }
    let builds = wanted.into_iter().map(|(want, hosts)| async move {
        let result = ensure(docker, &want, dir, say).await;
        (want, hosts, result)
    });
    for (want, hosts, result) in futures_util::future::join_all(builds).await {
        match result {
            Ok(Some(layer)) => {
                for host in hosts {
                    images.insert(host, layer.full());
                }
            }
            Ok(None) => {}
            Err(e) => say(&format!(
                "no package layer for {} ({}): {e:#}; they start from {} and deploy installs \
                 their packages",
                hosts.join(", "),
                want.packages.len(),
                want.base.full()
            )),
        }
    }
    images
}

/// The layer `instance` would use, or `None` when it gets none.
fn want_for(cluster: &Cluster, instance: &Instance, base: &ImageRef) -> Option<LayerWant> {
    if !instance.vars.docker_package_layer.unwrap_or(true) {
        return None;
    }
    let major = base.buildable_debian_major()?;
    let settings = HostSettings::resolve(cluster, instance, Some(major));
    // A package set the planner refuses is reported by deploy, with the reason.
    let packages =
        crate::planner::host_packages(cluster, instance, &settings, major, false).ok()?;
    Some(LayerWant {
        base: base.clone(),
        packages,
    })
}

/// The layer for `want`, built when missing; `None` when the cluster has no local
/// repository for the base image's Debian release (nothing to build from).
pub async fn ensure(
    docker: &Docker,
    want: &LayerWant,
    dir: &ClusterDir,
    say: Say<'_>,
) -> anyhow::Result<Option<ImageRef>> {
    let Some(major) = want.base.buildable_debian_major() else {
        return Ok(None);
    };
    let suite = image::suite_for(major).unwrap_or_default();
    let Some(repo) = local_repo::find_repo_for_host(dir.root(), major, suite, "") else {
        return Ok(None);
    };
    let index = read_index(&repo)?;
    let base_id = docker
        .inspect_image(&want.base.full())
        .await
        .with_context(|| format!("inspecting {}", want.base.full()))?
        .id
        .unwrap_or_default();
    let layer = layer_ref(&want.base, &base_id, &want.packages, &index);
    if image::is_current(docker, &layer).await? {
        return Ok(Some(layer));
    }
    let on_host = local_repo::host_repo_dir(dir.root(), &repo, Path::new(LOCAL_REPO_MOUNT))
        .context("the local repository is outside the cluster directory")?;
    say(&format!(
        "building package layer {} ({} packages from {}; about 40 s, once for every cluster \
         that needs the same packages)",
        layer.full(),
        want.packages.len(),
        repo.display()
    ));
    let started = Instant::now();
    build(docker, want, &layer, &dir.local_repo(), &on_host).await?;
    say(&format!(
        "built package layer {} in {:.1}s",
        layer.full(),
        started.elapsed().as_secs_f64()
    ));
    Ok(Some(layer))
}

/// `tpa/debian:12` + packages → `tpa/debian:12-pkgs-<12 hex digits>`, a hash of the install
/// script, the base image's id, the packages and the repository index.
pub fn layer_ref(base: &ImageRef, base_id: &str, packages: &[String], index: &[u8]) -> ImageRef {
    let mut hash = Sha256::new();
    // The recipe too: a changed install script makes new layers.
    hash.update(INSTALL.as_bytes());
    hash.update(base_id.as_bytes());
    hash.update([0]);
    for package in packages {
        hash.update(package.as_bytes());
        hash.update([0]);
    }
    hash.update(Sha256::digest(index));
    let digest = hex::encode(hash.finalize());
    ImageRef {
        repo: base.repo.clone(),
        tag: format!("{}-pkgs-{}", base.tag, &digest[..12]),
    }
}

/// The repository's apt index (what `Packages` lists is what a layer can hold).
fn read_index(repo: &Path) -> anyhow::Result<Vec<u8>> {
    let plain = repo.join("Packages");
    let path = if plain.is_file() {
        plain
    } else {
        repo.join("Packages.gz")
    };
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// Installs the packages in a container of the base image and commits it; `$1` is the
/// repository's directory in the container, the rest are package names (arguments, never
/// interpolated into the script). The apt options are the agent's (`resource/packages.rs`).
const INSTALL: &str = r#"set -eu
repo="$1"; shift
mkdir -p "$(dirname "$TPA_CREATECLUSTER_PATH")"
printf '%s' "$TPA_CREATECLUSTER" > "$TPA_CREATECLUSTER_PATH"
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
printf 'deb [trusted=yes] file:%s ./\n' "$repo" > /tmp/tpa-layer.list
only_local="-o Dir::Etc::SourceList=/tmp/tpa-layer.list -o Dir::Etc::SourceParts=/nonexistent"
apt-get -qq $only_local update
apt-get -qq $only_local install -y --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
for unit in $TPA_DISABLE_UNITS; do systemctl disable --quiet "$unit"; done
rm -f /usr/sbin/policy-rc.d /tmp/tpa-layer.list
apt-get clean
find /var/lib/apt/lists -maxdepth 1 -type f -delete
: > /etc/machine-id
"#;

async fn build(
    docker: &Docker,
    want: &LayerWant,
    layer: &ImageRef,
    repo_root: &Path,
    repo_on_host: &Path,
) -> anyhow::Result<()> {
    let mut cmd = vec![
        "sh".to_string(),
        "-c".into(),
        INSTALL.into(),
        "sh".into(),
        repo_on_host.display().to_string(),
    ];
    cmd.extend(want.packages.iter().cloned());
    let body = ContainerCreateBody {
        image: Some(want.base.full()),
        cmd: Some(cmd),
        env: Some(vec![
            "DEBIAN_FRONTEND=noninteractive".into(),
            "LC_ALL=C".into(),
            format!("TPA_CREATECLUSTER_PATH={CREATECLUSTER_CONF}"),
            format!(
                "TPA_CREATECLUSTER={}",
                crate::planner::sys::CREATECLUSTER_CONTENT
            ),
            // Unit names are tpa's constants, never config values.
            format!(
                "TPA_DISABLE_UNITS={}",
                crate::planner::sys::units_disabled_after(&want.packages).join(" ")
            ),
        ]),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            binds: Some(vec![format!(
                "{}:{LOCAL_REPO_MOUNT}:ro",
                repo_root.display()
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .context("creating the package layer's build container")?;
    let id = created.id;
    let result = async {
        docker.start_container(&id, None).await?;
        let mut wait = docker.wait_container(&id, None);
        let mut failed = None;
        while let Some(status) = wait.next().await {
            match status {
                Ok(_) => {}
                Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) => {
                    failed = Some(code)
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(code) = failed {
            bail!(
                "apt-get in the build container exited with {code}:\n{}",
                log_tail(docker, &id).await
            );
        }
        let labels = HashMap::from([
            (
                image::RECIPE_LABEL.to_string(),
                image::RECIPE_VERSION.to_string(),
            ),
            (LAYER_LABEL.to_string(), want.packages.join(" ")),
        ]);
        let config = ContainerConfig {
            cmd: Some(vec!["/sbin/init".into()]),
            env: Some(vec!["container=docker".into()]),
            labels: Some(labels),
            ..Default::default()
        };
        let options = CommitContainerOptionsBuilder::new()
            .container(&id)
            .repo(&layer.repo)
            .tag(&layer.tag)
            .comment("tpa package layer")
            .build();
        docker
            .commit_container(options, config)
            .await
            .context("committing the package layer")?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(&id, Some(options)).await;
    result
}

/// The last lines the build container printed, for an error message.
async fn log_tail(docker: &Docker, id: &str) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail("20")
        .build();
    let mut logs = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&chunk.to_string());
    }
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_layer_is_named_after_its_base_and_changes_with_any_input() {
        let base = ImageRef::debian(12);
        let packages = names(&["barman", "postgresql-15"]);
        let layer = layer_ref(&base, "sha256:aa", &packages, b"Package: barman\n");
        assert_eq!(layer.repo, "tpa/debian");
        assert!(layer.tag.starts_with("12-pkgs-"), "{}", layer.tag);
        assert_eq!(layer.tag.len(), "12-pkgs-".len() + 12);
        // Same inputs, same layer: hosts and clusters share it.
        assert_eq!(
            layer,
            layer_ref(&base, "sha256:aa", &packages, b"Package: barman\n")
        );
        for other in [
            layer_ref(&base, "sha256:bb", &packages, b"Package: barman\n"),
            layer_ref(
                &base,
                "sha256:aa",
                &names(&["barman"]),
                b"Package: barman\n",
            ),
            layer_ref(
                &base,
                "sha256:aa",
                &packages,
                b"Package: barman\nVersion: 2\n",
            ),
            // The separator keeps ["ab", "c"] apart from ["a", "bc"].
            layer_ref(
                &base,
                "sha256:aa",
                &names(&["barm", "anpostgresql-15"]),
                b"Package: barman\n",
            ),
        ] {
            assert_ne!(layer, other);
        }
    }

    #[test]
    fn each_role_gets_its_own_package_set_unless_layers_are_off() {
        let seed = include_str!("../../../../tests/fixtures/seed/config.yml");
        let source = seed.replace(
            "  role: [barman]\n",
            "  role: [barman]\n  vars:\n    docker_package_layer: false\n",
        );
        let cluster = Cluster::parse(&source, "config.yml").unwrap();
        let want = |name: &str| {
            let instance = cluster.instance(name).unwrap();
            want_for(&cluster, instance, &ImageRef::debian(12))
        };
        let primary = want("ulb").unwrap();
        assert_eq!(
            primary,
            want("achel").unwrap(),
            "one layer for every Postgres node"
        );
        assert!(
            primary
                .packages
                .contains(&"postgresql-15-repmgr".to_string())
        );
        assert!(!primary.packages.contains(&"barman".to_string()));
        assert_eq!(want("chimay"), None, "docker_package_layer: false");
        // Only images tpa builds get layers.
        let ulb = cluster.instance("ulb").unwrap();
        assert_eq!(want_for(&cluster, ulb, &ImageRef::parse("acme/os:1")), None);
    }
}
