//! Registries of the top-level, instance and role names: what we support, what TPA knows that
//! we do not support yet (an error that says so), and on which platforms an instance key applies.

use super::model::Platform;

/// Top-level keys we support.
#[rustfmt::skip]
pub(crate) const TOP_LEVEL: &[&str] = &[
    "architecture", "cluster_name", "cluster_tags", "cluster_vars", "locations",
    "instance_defaults", "instances", "docker_networks", "keyring_backend", "vault_name",
    "ssh_key_file", "cluster_ssh_port",
    // AWS (config::aws).
    "ec2_ami", "ec2_vpc", "ec2_instance_reachability", "cluster_rules",
];

/// Top-level keys TPA knows that we do not support yet.
#[rustfmt::skip]
pub(crate) const TOP_LEVEL_NOT_YET: &[&str] = &[
    "compliance", "use_ssh_agent", "forward_ssh_agent", "ansible_tower",
    "docker_images",
    // AWS infrastructure.
    "ec2_vpc_subnets", "ec2_groups", "ec2_vpc_igw", "ec2_key_name", "ec2_instance_key",
    "cluster_bucket", "cluster_profile", "instance_profile_name", "s3_uploads", "pre_user_data",
    "extra_user_data", "user_data_environment", "install_authorized_key", "route53_zone",
    "route53_hosted_zone_id",
    // Back-compat spellings TPA rewrites.
    "ec2_ami_user", "cluster_ssh_user", "cluster_network",
];

/// Where an instance key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyUse {
    /// Every platform.
    All,
    /// Only these platforms.
    Only(&'static [Platform]),
    /// TPA knows it; we do not support it yet.
    NotYet,
}

use KeyUse::{All, NotYet, Only};
use Platform::{Aws, Bare, Docker};

/// Instance keys (also valid in `instance_defaults` and in `locations` entries).
pub(crate) const INSTANCE_KEYS: &[(&str, KeyUse)] = &[
    ("Name", All),
    ("node", All),
    ("role", All),
    ("platform", All),
    ("location", All),
    ("upstream", All),
    ("backup", All),
    ("tags", All),
    ("vars", All),
    ("volumes", All),
    ("provision_only", All),
    ("ansible_host", All),
    ("image", Only(&[Docker, Aws])),
    ("ip_address", Only(&[Docker, Bare])),
    ("public_ip", Only(&[Bare, Aws])),
    ("private_ip", Only(&[Bare, Aws])),
    ("region", Only(&[Docker, Aws])),
    // Docker.
    ("privileged", Only(&[Docker])),
    ("restart_policy", Only(&[Docker])),
    ("memory", Only(&[Docker])),
    ("shm_size", Only(&[Docker])),
    ("env", Only(&[Docker])),
    ("exposed_ports", Only(&[Docker])),
    ("published_ports", Only(&[Docker])),
    ("devices", Only(&[Docker])),
    ("sysctls", Only(&[Docker])),
    ("docker_cap_add", Only(&[Docker])),
    ("docker_cap_drop", Only(&[Docker])),
    ("docker_security_opts", Only(&[Docker])),
    ("memory_reservation", NotYet),
    ("env_file", NotYet),
    ("log_driver", NotYet),
    ("log_options", NotYet),
    ("networks", NotYet),
    ("ulimits", NotYet),
    ("local_source_directories", NotYet),
    // AWS.
    ("type", Only(&[Aws])),
    ("subnet", Only(&[Aws])),
    ("az", Only(&[Aws])),
    ("subnet_name", NotYet),
    ("default_volumes", Only(&[Aws])),
    ("spot_price", NotYet),
    ("spot_wait_timeout", NotYet),
    ("spot_launch_group", NotYet),
    ("termination_protection", NotYet),
    ("assign_public_ip", Only(&[Aws])),
    ("assign_elastic_ip", NotYet),
    ("elastic_ip", NotYet),
    ("route53_hosted_zone_id", NotYet),
    ("route53_private_zone", NotYet),
    ("route53_zone", NotYet),
    ("ec2_ami_user", NotYet),
    ("cluster_ssh_user", NotYet),
];

/// Instance keys whose mapping values are merged one level deep across defaults.
pub(crate) const MERGED_MAPPINGS: &[&str] = &["vars", "tags", "env", "sysctls"];

/// Roles TPA knows that we do not support yet.
#[rustfmt::skip]
pub(crate) const ROLES_NOT_YET: &[&str] = &[
    "pem-server", "pem-agent", "bdr", "pgd-proxy", "harp-proxy", "proxy",
    "subscriber-only", "efm", "efm-witness", "patroni", "monitoring-server", "openvpn-server",
    "beacon-agent", "readonly", "downloader", "pgdcli", "pg-backup-api",
];

/// Architectures TPA knows that we do not support yet.
#[rustfmt::skip]
pub(crate) const ARCHITECTURES_NOT_YET: &[&str] = &[
    "PGD-Always-ON", "PGD-S", "PGD-X", "PGD-Lightweight", "BDR-Always-ON",
    "Lightweight",
];

pub(crate) fn instance_key(key: &str) -> Option<KeyUse> {
    INSTANCE_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, u)| *u)
}

/// Names that an unknown instance key may have been a typo of.
pub(crate) fn instance_key_names() -> impl Iterator<Item = &'static str> {
    INSTANCE_KEYS
        .iter()
        .filter(|(_, u)| *u != NotYet)
        .map(|(k, _)| *k)
}
