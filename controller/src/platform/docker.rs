//! The docker platform: containers that behave like small VMs (systemd as PID 1, sshd, a
//! static address on a per-cluster bridge network), created through the Docker API from
//! host images tpa builds itself (no registry).
//!
//! # Layout
//! - `image`: host images built with debootstrap and imported into Docker.
//! - `layer`: package layers, host images that already hold a host's packages.
//! - `network`: the cluster's bridge network and each host's address on it.
//! - `container`: one host's container, its SSH login, and running commands in it.
//! - `owner`: which cluster directory owns a container or network (labels).

pub mod container;
pub mod image;
pub mod layer;
pub mod network;
pub mod owner;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};
use tokio::sync::OnceCell;

use self::container::{ContainerSpec, HOST_KEY, exec_output};
use self::image::{DEFAULT_MIRROR, ImageRef};
use self::owner::{CLUSTER_LABEL, Owner};
use super::{DeprovisionRequest, Deprovisioned, Platform, ProvisionRequest, Provisioned};
use crate::config::{Instance, Platform as Kind};
use crate::inventory::Host;

pub use self::container::read_image_file;

/// Where the cluster's local-repo appears inside every container (TPA's path).
pub const LOCAL_REPO_MOUNT: &str = "/var/opt/tpa/local-repo";

/// Connects to the local Docker engine and checks that it answers.
pub async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .context("connecting to the Docker engine (is DOCKER_HOST right?)")?;
    docker.ping().await.context(
        "the Docker engine does not answer: start it, or check access to /var/run/docker.sock",
    )?;
    Ok(docker)
}

/// The docker platform. It connects to the engine on first use, so that asking where
/// `local-repo/` is visible costs nothing.
#[derive(Debug)]
pub struct DockerPlatform {
    mirror: String,
    docker: OnceCell<Docker>,
}

impl DockerPlatform {
    /// `mirror`: the Debian mirror host images are built from when missing.
    pub fn new(mirror: Option<&str>) -> DockerPlatform {
        DockerPlatform {
            mirror: mirror.unwrap_or(DEFAULT_MIRROR).to_string(),
            docker: OnceCell::new(),
        }
    }

    async fn docker(&self) -> anyhow::Result<&Docker> {
        self.docker.get_or_try_init(connect).await
    }
}

impl Platform for DockerPlatform {
    fn kind(&self) -> Kind {
        Kind::Docker
    }

    async fn provision(&self, request: &ProvisionRequest<'_>) -> anyhow::Result<Provisioned> {
        let docker = self.docker().await?;
        let cluster = request.cluster;
        let dir = request.dir.root();
        let instances: Vec<&Instance> = cluster.instances.iter().collect();
        let mut changed = false;

        let images: BTreeSet<String> = instances.iter().map(|i| ImageRef::of(i).full()).collect();
        for name in images {
            changed |=
                image::ensure(docker, &ImageRef::parse(&name), &self.mirror, request.say).await?;
        }

        let net = network::ensure(docker, cluster, dir, request.previous).await?;
        (request.say)(&format!(
            "network {} {} {}",
            net.network.name,
            net.network.subnet,
            if net.created { "created" } else { "unchanged" }
        ));
        changed |= net.created;
        let previous_hosts = request.previous.map_or(&[][..], |p| &p.hosts[..]);
        let addresses = network::assign_addresses(&net, &instances, previous_hosts)?;
        std::fs::create_dir_all(request.dir.local_repo())?;
        let cgroup_v2 = cgroup_v2(docker).await;
        let new = missing(docker, &instances).await;
        let images = layer::images_for(docker, cluster, request.dir, &new, request.say).await;

        let jobs = instances.iter().map(|instance| {
            let spec = ContainerSpec {
                cluster,
                dir,
                previous: request.previous,
                instance,
                image: images
                    .get(&instance.name)
                    .cloned()
                    .unwrap_or_else(|| ImageRef::of(instance).full()),
                network: &net,
                address: addresses[&instance.name],
                local_repo: request.dir.local_repo(),
                cgroup_v2,
            };
            async move {
                let result = container::provision_host(docker, &spec, request.public_key).await;
                (instance.name.clone(), result)
            }
        });
        let mut hosts = Vec::new();
        let mut failures = Vec::new();
        for (name, result) in futures_util::future::join_all(jobs).await {
            match result {
                Ok(done) => hosts.push(done),
                Err(e) => failures.push((name, e)),
            }
        }
        Ok(Provisioned {
            controller_address: Some(net.gateway.into()),
            network: Some(net.network),
            hosts,
            failures,
            changed,
        })
    }

    async fn add_host(
        &self,
        request: &ProvisionRequest<'_>,
        instance: &Instance,
    ) -> anyhow::Result<Host> {
        let docker = self.docker().await?;
        let dir = request.dir.root();
        let image = ImageRef::of(instance);
        image::ensure(docker, &image, &self.mirror, request.say).await?;
        let mut images = layer::images_for(
            docker,
            request.cluster,
            request.dir,
            &[instance],
            request.say,
        )
        .await;
        let net = network::ensure(docker, request.cluster, dir, request.previous).await?;
        let previous_hosts = request.previous.map_or(&[][..], |p| &p.hosts[..]);
        // Every other container on the network holds its address: the next free one is new.
        let address = network::assign_addresses(&net, &[instance], previous_hosts)?[&instance.name];
        let cgroup_v2 = cgroup_v2(docker).await;
        let spec = ContainerSpec {
            cluster: request.cluster,
            dir,
            previous: request.previous,
            instance,
            image: images
                .remove(&instance.name)
                .unwrap_or_else(|| image.full()),
            network: &net,
            address,
            local_repo: request.dir.local_repo(),
            cgroup_v2,
        };
        let (mut host, _) = container::provision_host(docker, &spec, request.public_key).await?;
        host.host_key = Some(self.host_key(&host).await?);
        Ok(host)
    }

    async fn host_key(&self, host: &Host) -> anyhow::Result<String> {
        let docker = self.docker().await?;
        let container = host.platform_id.as_deref().unwrap_or(&host.name);
        let key = exec_output(docker, container, &["sh", "-c", HOST_KEY])
            .await
            .with_context(|| format!("reading the SSH host key of {}", host.name))?;
        Ok(key.trim().to_string())
    }

    async fn deprovision(&self, request: &DeprovisionRequest<'_>) -> anyhow::Result<Deprovisioned> {
        let docker = self.docker().await?;
        deprovision(docker, request).await
    }

    fn local_repo_on_host(&self) -> Option<PathBuf> {
        Some(PathBuf::from(LOCAL_REPO_MOUNT))
    }
}

/// Removes this directory's containers and networks (by label), in parallel; objects of
/// the same cluster name that another directory owns stay, and are reported.
async fn deprovision(
    docker: &Docker,
    request: &DeprovisionRequest<'_>,
) -> anyhow::Result<Deprovisioned> {
    let cluster = &request.cluster.name;
    let dir = request.dir.root();
    let mut done = Deprovisioned::default();
    let filter = HashMap::from([("label", vec![format!("{CLUSTER_LABEL}={cluster}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .context("listing containers")?;
    let mut ours = Vec::new();
    for c in containers {
        let id = c.id.clone().unwrap_or_default();
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| id.clone());
        let recorded = request
            .previous
            .and_then(|p| p.host(&name))
            .is_some_and(|h| h.platform_id.as_deref() == Some(id.as_str()));
        let labels = c.labels.unwrap_or_default();
        match owner::owner(&labels, cluster, dir, recorded, owner::holds_cluster) {
            Owner::Us => ours.push((id, name)),
            other => done.kept.push(kept(&format!("container {name}"), &other)),
        }
    }
    let removals = ours.into_iter().map(|(id, name)| async move {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        docker
            .remove_container(&id, Some(options))
            .await
            .with_context(|| format!("removing container {name}"))
            .map(|_| name)
    });
    let mut removed = Vec::new();
    for result in futures_util::future::join_all(removals).await {
        removed.push(format!("container {}", result?));
    }
    removed.sort();
    done.removed = removed;

    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .context("listing networks")?;
    for net in networks {
        let name = net.name.unwrap_or_default();
        let recorded = request
            .previous
            .and_then(|p| p.network.as_ref())
            .is_some_and(|n| n.name == name);
        let labels = net.labels.unwrap_or_default();
        match owner::owner(&labels, cluster, dir, recorded, owner::holds_cluster) {
            Owner::Us => {
                docker
                    .remove_network(&name)
                    .await
                    .with_context(|| format!("removing Docker network {name}"))?;
                done.removed.push(format!("network {name}"));
            }
            other => done.kept.push(kept(&format!("network {name}"), &other)),
        }
    }
    Ok(done)
}

fn kept(object: &str, owner: &Owner) -> String {
    match owner {
        Owner::SameName { dir, .. } => {
            format!(
                "left {object}: it belongs to the cluster in {}",
                dir.display()
            )
        }
        _ => format!("left {object}: another cluster directory of the same cluster_name owns it"),
    }
}

/// The instances that have no container yet (only those need a package layer).
async fn missing<'a>(docker: &Docker, instances: &[&'a Instance]) -> Vec<&'a Instance> {
    let probes = instances.iter().map(|i| async move {
        let absent = matches!(
            docker.inspect_container(&i.name, None).await,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        );
        absent.then_some(*i)
    });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Whether the engine runs containers under cgroup v2 (systemd in a container needs to know).
async fn cgroup_v2(docker: &Docker) -> bool {
    docker
        .info()
        .await
        .ok()
        .and_then(|i| i.cgroup_version)
        .is_some_and(|v| v.to_string() == "2")
}
