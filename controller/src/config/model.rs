//! The typed cluster model that the rest of the controller reads; built only from a config.yml
//! that passed validation, with TPA's defaults already merged in.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::aws::{AwsCluster, Volume};
use super::docker::{Device, PublishedPort, RestartPolicy, Volume as DockerVolume};
use super::mounts::Mount;
use super::vars::Vars;

/// Typed `cluster_vars` (what every host gets unless its own `vars` override it).
pub type ClusterVars = Vars;
/// Typed effective host vars: `cluster_vars` overlaid key by key with the instance's `vars`.
pub type HostVars = Vars;

/// A whole cluster, as described by config.yml.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `cluster_name`.
    pub name: String,
    /// `architecture`; only `M1` is supported.
    pub architecture: String,
    /// `cluster_tags` (AWS tags / docker labels), as written.
    pub tags: BTreeMap<String, String>,
    /// `cluster_vars`, typed.
    pub vars: ClusterVars,
    /// `locations`, in file order.
    pub locations: Vec<Location>,
    /// `instances`, in file order, with defaults merged.
    pub instances: Vec<Instance>,
    /// `docker_networks`; empty means the docker platform picks a free subnet itself.
    pub docker_networks: Vec<DockerNetwork>,
    /// `keyring_backend`: `system` or `legacy`.
    pub keyring_backend: Option<String>,
    /// `vault_name`: key name of the vault password in the keyring.
    pub vault_name: Option<String>,
    /// `ssh_key_file`: an existing private key; `None` means `id_<cluster_name>` in the cluster dir.
    pub ssh_key_file: Option<PathBuf>,
    /// `cluster_ssh_port` (default 22).
    pub ssh_port: u16,
    /// `ec2_ami`, `ec2_vpc`, `ec2_instance_reachability`, `cluster_rules`.
    pub aws: AwsCluster,
}

/// One entry of `locations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `Name`.
    pub name: String,
}

/// One entry of `docker_networks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerNetwork {
    /// `name` of the docker network.
    pub name: String,
    /// `ipam_config[*].subnet`.
    pub subnets: Vec<IpNet>,
    /// `driver_options`, passed to the docker network driver.
    pub driver_options: BTreeMap<String, String>,
    /// `enable_ipv6` (default false).
    pub enable_ipv6: bool,
    /// `labels` on the network.
    pub labels: BTreeMap<String, String>,
}

/// One host of the cluster, with `instance_defaults` and its location's keys merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `Name`, lowercased with `_` turned into `-` (it becomes the host name).
    pub name: String,
    /// `node`: unique positive number (repmgr node id).
    pub node: u32,
    /// `location`: the `Name` of one of `locations`.
    pub location: Option<String>,
    /// Declared roles, plus the implicit `Postgres` for primary/replica/witness.
    pub roles: Vec<Role>,
    /// `upstream`: the instance this one streams from.
    pub upstream: Option<String>,
    /// `backup`: the barman instances that back this one up.
    pub backup: Vec<String>,
    /// `platform` (default `aws`, as in TPA).
    pub platform: Platform,
    /// `image`: container image (docker) or AMI (aws).
    pub image: Option<String>,
    /// `ip_address`.
    pub ip_address: Option<IpAddr>,
    /// `public_ip` (bare, aws).
    pub public_ip: Option<IpAddr>,
    /// `private_ip` (bare, aws).
    pub private_ip: Option<IpAddr>,
    /// `ansible_host`: the address to reach the host at, if not its IP.
    pub ansible_host: Option<String>,
    /// Effective host vars (`cluster_vars` overlaid by this instance's `vars`).
    pub vars: HostVars,
    /// `tags`: extra tags/labels.
    pub tags: BTreeMap<String, String>,
    /// `volumes` of a docker instance (other platforms: see `mounts`).
    pub volumes: Vec<DockerVolume>,
    /// The filesystems deploy makes and mounts on the volumes of an aws or bare instance,
    /// sorted by mountpoint.
    pub mounts: Vec<Mount>,
    /// `provision_only`: provisioned but left out of deploy.
    pub provision_only: bool,
    /// Docker container settings (only meaningful on the docker platform).
    pub docker: DockerOptions,
    /// AWS settings (only meaningful on the aws platform).
    pub aws: AwsOptions,
}

/// Docker-only instance keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerOptions {
    /// `privileged` (default false).
    pub privileged: bool,
    /// `restart_policy` (default `unless-stopped`).
    pub restart_policy: Option<RestartPolicy>,
    /// `memory` limit in bytes (written in docker syntax, e.g. `1g`).
    pub memory: Option<i64>,
    /// `shm_size` in bytes.
    pub shm_size: Option<i64>,
    /// `env`: environment of the container.
    pub env: BTreeMap<String, String>,
    /// `exposed_ports` as docker keys them (`5432/tcp`); `None` means TPA's default
    /// `[22, 5432, 6432]`.
    pub exposed_ports: Option<Vec<String>>,
    /// `published_ports`, docker `-p` syntax.
    pub published_ports: Vec<PublishedPort>,
    /// `devices`, docker `--device` syntax.
    pub devices: Vec<Device>,
    /// `sysctls`.
    pub sysctls: BTreeMap<String, String>,
    /// `docker_cap_add`.
    pub cap_add: Vec<String>,
    /// `docker_cap_drop`.
    pub cap_drop: Vec<String>,
    /// `docker_security_opts`.
    pub security_opts: Vec<String>,
}

/// AWS-only instance keys (usually inherited from the location or `instance_defaults`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsOptions {
    /// `region`.
    pub region: Option<String>,
    /// `type`: the EC2 instance type.
    pub instance_type: Option<String>,
    /// `subnet` CIDR.
    pub subnet: Option<String>,
    /// `az`: availability zone.
    pub az: Option<String>,
    /// EBS volumes: `default_volumes` overlaid by `volumes` (same `device_name` wins).
    pub volumes: Vec<Volume>,
    /// `assign_public_ip` (`None`: TPA's default, true).
    pub assign_public_ip: Option<bool>,
}

/// Where an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Docker,
    Bare,
    Aws,
}

impl Platform {
    pub(crate) fn parse(s: &str) -> Option<Platform> {
        match s {
            "docker" => Some(Platform::Docker),
            "bare" => Some(Platform::Bare),
            "aws" => Some(Platform::Aws),
            _ => None,
        }
    }

    /// The name used in config.yml.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Docker => "docker",
            Platform::Bare => "bare",
            Platform::Aws => "aws",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an instance does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Primary,
    Replica,
    Witness,
    Barman,
    LogServer,
    Etcd,
    Haproxy,
    Pgbouncer,
    /// Implicit: runs a Postgres server (primary, replica, witness).
    Postgres,
}

impl Role {
    /// Every role, with its config.yml name.
    pub const ALL: [(Role, &'static str); 9] = [
        (Role::Primary, "primary"),
        (Role::Replica, "replica"),
        (Role::Witness, "witness"),
        (Role::Barman, "barman"),
        (Role::LogServer, "log-server"),
        (Role::Etcd, "etcd"),
        (Role::Haproxy, "haproxy"),
        (Role::Pgbouncer, "pgbouncer"),
        (Role::Postgres, "postgres"),
    ];

    pub(crate) fn parse(s: &str) -> Option<Role> {
        Role::ALL.iter().find(|(_, n)| *n == s).map(|(r, _)| *r)
    }

    /// The name used in config.yml.
    pub fn as_str(self) -> &'static str {
        Role::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("", |(_, n)| n)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Instance {
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }

    /// The user to log in as (host var `ansible_user`, default `root`).
    pub fn ansible_user(&self) -> &str {
        self.vars.ansible_user.as_deref().unwrap_or("root")
    }
}

/// The certificate lifetime and renewal that `vars` (cluster_vars) ask for, defaults filled in.
pub fn cert_policy(vars: &Vars) -> crate::pki::CertPolicy {
    let default = crate::pki::CertPolicy::default();
    crate::pki::CertPolicy {
        lifetime: vars.agent_cert_lifetime.unwrap_or(default.lifetime),
        renew_before: vars.agent_cert_renew_before.unwrap_or(default.renew_before),
    }
}

impl Cluster {
    /// `agent_cert_lifetime` and `agent_cert_renew_before`, defaults filled in: how long agents'
    /// certificates and the controller's identity live, and when deploy renews them.
    pub fn cert_policy(&self) -> crate::pki::CertPolicy {
        cert_policy(&self.vars)
    }

    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// Every instance's name, comma-separated: for errors that name an unknown host.
    pub fn instance_names(&self) -> String {
        self.instances
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `cluster_vars.postgres_version`, e.g. `15`.
    pub fn postgres_version(&self) -> Option<String> {
        self.vars.postgres_version.clone()
    }
}
