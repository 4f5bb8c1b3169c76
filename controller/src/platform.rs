//! Platforms: where a cluster's hosts come from. The commands talk to one [`Platform`] trait;
//! nothing outside `platform/` knows which platform it is talking to.
//!
//! A platform's whole job, as the trait spells it out:
//! - **provision**: create (or find) the hosts, make each one accept SSH as its login user
//!   with the cluster key, and say which address the controller's connections come from;
//! - **host keys**: each host's SSH public key, learnt over a channel the platform trusts,
//!   so the first SSH connection is already checked strictly;
//! - **packages**: whether the cluster's `local-repo/` is visible on the hosts (and where),
//!   or must be shipped to them;
//! - **agent**: where the controller reaches a host's agent. The agent binary itself always
//!   travels over SSH (bootstrap), which is why provision must make SSH work;
//! - **deprovision**: remove what provision created, and only that.
//!
//! `docker` and `bare` (addresses from config.yml, host keys from the operator's known_hosts,
//! nothing to create or remove; see `bare.rs`) implement it; `aws` adds a variant to
//! [`AnyPlatform`] the same way. Nothing in the trait assumes containers, images or networks.
//!
//! Dispatch is a closed enum, [`AnyPlatform`], not `Box<dyn Platform>`: the set of platforms
//! is closed (config.yml names exactly `docker`, `bare` and `aws`), a `match` makes the
//! compiler point at every place a new platform must be handled, and the trait's async
//! methods need no boxing or macro crate (native `async fn` in traits is not object safe).

pub mod aws;
pub mod bare;
pub mod docker;

/// The secrets-store name of a host's private SSH host key, for the platforms that install a
/// key tpa generated (aws through user data, bare with `manage_ssh_hostkeys`).
pub fn host_key_secret(host: &str) -> String {
    format!("ssh_host_ed25519_key_{host}")
}

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::bail;

use crate::cluster_dir::ClusterDir;
use crate::config::{Cluster, Instance, Platform as Kind};
use crate::inventory::{Host, Inventory, Network};

/// What every platform does for the commands; see the module documentation.
pub trait Platform {
    /// The config.yml name of this platform.
    fn kind(&self) -> Kind;

    /// Creates the hosts that do not exist, starts stopped ones and leaves running ones alone.
    /// Every host returned accepts SSH as its login user with the cluster key. A host that
    /// fails is reported in [`Provisioned::failures`]; the others still come up.
    fn provision(
        &self,
        request: &ProvisionRequest<'_>,
    ) -> impl Future<Output = anyhow::Result<Provisioned>> + Send;

    /// Creates one host outside config.yml (`restore --to NEW_NAME`) next to the cluster's
    /// hosts: `instance` gives its name, image, location and login as an instance of
    /// config.yml would; the hosts of `request.previous` are left alone. Returns it with its
    /// host key, ready for SSH like a provisioned host.
    fn add_host(
        &self,
        request: &ProvisionRequest<'_>,
        instance: &Instance,
    ) -> impl Future<Output = anyhow::Result<Host>> + Send;

    /// The SSH public host key of a provisioned host (one line, `ssh-ed25519 AAAA...`),
    /// learnt over a channel the platform trusts rather than from the network.
    fn host_key(&self, host: &Host) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// Removes what provision created for this cluster directory, and nothing else (a
    /// cluster of the same name owned by another directory stays).
    fn deprovision(
        &self,
        request: &DeprovisionRequest<'_>,
    ) -> impl Future<Output = anyhow::Result<Deprovisioned>> + Send;

    /// Where the cluster directory's `local-repo/` is visible on every host (docker
    /// bind-mounts it), or `None` when it is not and deploy must ship the packages.
    fn local_repo_on_host(&self) -> Option<PathBuf>;

    /// Where the controller reaches the agent on `host`.
    fn agent_endpoint(&self, host: &Host) -> SocketAddr {
        SocketAddr::new(host.address, tpa_proto::DEFAULT_AGENT_PORT)
    }
}

/// Where a platform writes progress lines (stdout for the CLI).
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

/// Everything provision needs to know.
pub struct ProvisionRequest<'a> {
    pub cluster: &'a Cluster,
    pub dir: &'a ClusterDir,
    /// What the last provision recorded: keeps addresses stable, and proves that hosts
    /// created before tpa labelled them with their directory are ours.
    pub previous: Option<&'a Inventory>,
    /// The cluster's SSH public key, authorised for each host's login user.
    pub public_key: &'a str,
    pub say: Say<'a>,
}

/// What provision found or created.
#[derive(Debug, Default)]
pub struct Provisioned {
    /// The hosts' network, when the platform has one.
    pub network: Option<Network>,
    /// The address the hosts see the controller's connections come from (docker: the
    /// network's gateway); pg_hba admits it. `None` when there is no such address.
    pub controller_address: Option<IpAddr>,
    /// Hosts that are up, with `host_key` not yet filled in (see [`Platform::host_key`]).
    pub hosts: Vec<(Host, HostChange)>,
    /// Hosts that failed, with the reason; re-running provision finishes them.
    pub failures: Vec<(String, anyhow::Error)>,
    /// Whether something besides the hosts changed (an image built, a network created).
    pub changed: bool,
}

/// What one host's provisioning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChange {
    Created,
    Started,
    Unchanged,
}

impl HostChange {
    pub fn as_str(self) -> &'static str {
        match self {
            HostChange::Created => "created",
            HostChange::Started => "started",
            HostChange::Unchanged => "unchanged",
        }
    }
}

/// Everything deprovision needs to know.
pub struct DeprovisionRequest<'a> {
    pub cluster: &'a Cluster,
    pub dir: &'a ClusterDir,
    /// What the last provision recorded (see [`ProvisionRequest::previous`]).
    pub previous: Option<&'a Inventory>,
    /// `--uninstall`: on hosts deprovision does not remove (bare), also remove what deploy
    /// installed for tpa itself (the agent, the shipped packages).
    pub uninstall: bool,
}

/// What deprovision removed, and what it left because another directory owns it.
#[derive(Debug, Default)]
pub struct Deprovisioned {
    /// One entry per removed object, e.g. `container ulb`, `network fosdem`.
    pub removed: Vec<String>,
    /// Why objects of the same cluster name were left alone.
    pub kept: Vec<String>,
}

/// The platforms tpa implements; see the module documentation for why this is an enum.
#[derive(Debug)]
pub enum AnyPlatform {
    Docker(docker::DockerPlatform),
    Bare(bare::BarePlatform),
    // Boxed: the SDK client makes it much larger than the others.
    Aws(Box<aws::AwsPlatform>),
}

/// The platform that provisions `cluster`. `mirror` is the Debian mirror host images are
/// built from, when the platform builds any.
pub fn for_cluster(cluster: &Cluster, mirror: Option<&str>) -> anyhow::Result<AnyPlatform> {
    let Some(first) = cluster.instances.first() else {
        bail!("config.yml declares no instances: there is nothing to provision");
    };
    if let Some(other) = cluster
        .instances
        .iter()
        .find(|i| i.platform != first.platform)
    {
        bail!(
            "instance {} uses platform {} and instance {} uses {}: one cluster on several \
             platforms is not supported yet; put every instance on one platform (set \
             `platform` in instance_defaults) or split the hosts into two clusters",
            first.name,
            first.platform,
            other.name,
            other.platform
        );
    }
    for_kind(first.platform, mirror)
}

/// The platform that provisioned `inventory`, for commands that work on existing hosts
/// (deploy asks it where `local-repo/` is visible). Does not contact the platform.
pub fn for_inventory(inventory: &Inventory) -> anyhow::Result<AnyPlatform> {
    for_kind(inventory.platform, None)
}

fn for_kind(kind: Kind, mirror: Option<&str>) -> anyhow::Result<AnyPlatform> {
    match kind {
        Kind::Docker => Ok(AnyPlatform::Docker(docker::DockerPlatform::new(mirror))),
        Kind::Bare => Ok(AnyPlatform::Bare(bare::BarePlatform::new())),
        Kind::Aws => Ok(AnyPlatform::Aws(Box::new(aws::AwsPlatform::new()))),
    }
}

impl Platform for AnyPlatform {
    fn kind(&self) -> Kind {
        match self {
            AnyPlatform::Docker(p) => p.kind(),
            AnyPlatform::Bare(p) => p.kind(),
            AnyPlatform::Aws(p) => p.kind(),
        }
    }

    async fn provision(&self, request: &ProvisionRequest<'_>) -> anyhow::Result<Provisioned> {
        match self {
            AnyPlatform::Docker(p) => p.provision(request).await,
            AnyPlatform::Bare(p) => p.provision(request).await,
            AnyPlatform::Aws(p) => p.provision(request).await,
        }
    }

    async fn add_host(
        &self,
        request: &ProvisionRequest<'_>,
        instance: &Instance,
    ) -> anyhow::Result<Host> {
        match self {
            AnyPlatform::Docker(p) => p.add_host(request, instance).await,
            AnyPlatform::Bare(p) => p.add_host(request, instance).await,
            AnyPlatform::Aws(p) => p.add_host(request, instance).await,
        }
    }

    async fn host_key(&self, host: &Host) -> anyhow::Result<String> {
        match self {
            AnyPlatform::Docker(p) => p.host_key(host).await,
            AnyPlatform::Bare(p) => p.host_key(host).await,
            AnyPlatform::Aws(p) => p.host_key(host).await,
        }
    }

    async fn deprovision(&self, request: &DeprovisionRequest<'_>) -> anyhow::Result<Deprovisioned> {
        match self {
            AnyPlatform::Docker(p) => p.deprovision(request).await,
            AnyPlatform::Bare(p) => p.deprovision(request).await,
            AnyPlatform::Aws(p) => p.deprovision(request).await,
        }
    }

    fn local_repo_on_host(&self) -> Option<PathBuf> {
        match self {
            AnyPlatform::Docker(p) => p.local_repo_on_host(),
            AnyPlatform::Bare(p) => p.local_repo_on_host(),
            AnyPlatform::Aws(p) => p.local_repo_on_host(),
        }
    }

    fn agent_endpoint(&self, host: &Host) -> SocketAddr {
        match self {
            AnyPlatform::Docker(p) => p.agent_endpoint(host),
            AnyPlatform::Bare(p) => p.agent_endpoint(host),
            AnyPlatform::Aws(p) => p.agent_endpoint(host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(instances: &str) -> Cluster {
        let source = format!(
            "cluster_name: t\ncluster_vars:\n  postgres_version: '15'\ninstances:\n{instances}"
        );
        Cluster::parse(&source, "config.yml").expect("valid config")
    }

    #[test]
    fn one_platform_per_cluster() {
        let mixed = cluster(
            "- {Name: one, node: 1, platform: docker, image: tpa/debian}\n\
             - {Name: two, node: 2, platform: bare, ip_address: 10.0.0.2}\n",
        );
        let err = for_cluster(&mixed, None).unwrap_err().to_string();
        assert!(err.contains("one uses platform docker"), "{err}");
        assert!(err.contains("two uses bare"), "{err}");
        assert!(err.contains("put every instance on one platform"), "{err}");
    }

    #[test]
    fn each_platform_says_where_hosts_see_the_local_repo() {
        let docker = cluster("- {Name: one, node: 1, platform: docker, image: tpa/debian}\n");
        let platform = for_cluster(&docker, None).unwrap();
        assert_eq!(platform.kind(), Kind::Docker);
        assert_eq!(
            platform.local_repo_on_host(),
            Some(PathBuf::from("/var/opt/tpa/local-repo"))
        );
        // Bare hosts cannot see the controller's directory: deploy ships the packages.
        let bare = cluster("- {Name: one, node: 1, platform: bare, ip_address: 10.0.0.2}\n");
        let platform = for_cluster(&bare, None).unwrap();
        assert_eq!(platform.kind(), Kind::Bare);
        assert_eq!(platform.local_repo_on_host(), None);
    }
}
