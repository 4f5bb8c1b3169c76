//! config.yml, TPA's cluster description, parsed into a typed and validated [`Cluster`].
//!
//! Loading never stops at the first problem: every error is collected with `file:line`, key
//! path and a hint, and reported together, before anything is touched. Defaults are merged as
//! TPA does: `instance_defaults`, then the instance's location, then the instance itself
//! (mapping values such as `vars` merged one level deep); host vars are `cluster_vars`
//! overlaid by the instance's `vars`.
//!
//! # Layout
//! - `yaml`: YAML → a small tree with a line on every node, typed readers that report errors.
//! - `keys`: registries of top-level/instance keys and roles (supported, or TPA's but not yet ours).
//! - `vars`: the registry of cluster/host variables and the typed [`Vars`].
//! - `build`: the walk from tree to [`Cluster`], including default merging.
//! - `aws`: the AWS settings (`ec2_*`, `cluster_rules`, EBS volumes).
//! - `values`: what values that reach files on the hosts may contain (names, paths, no control
//!   characters).
//! - `checks`: rules across instances (names, nodes, upstreams, backups, networks, the Postgres
//!   version each host's OS ships).
//! - `model`: the public types; `error`: [`ConfigError`] and [`ConfigErrors`].

pub mod apt;
pub mod aws;
mod barman;
mod build;
mod checks;
pub mod docker;
mod error;
mod keys;
mod model;
pub mod mounts;
mod values;
mod vars;
mod yaml;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use barman::{BackupMethod, BarmanVars, ReuseBackup};
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    AwsOptions, Cluster, ClusterVars, DockerNetwork, DockerOptions, HostVars, Instance, Location,
    Platform, Role,
};
pub use vars::{
    FailoverManager, PostgresDatabase, PostgresFlavour, PostgresUser, RepmgrFailover, Vars,
};

impl Cluster {
    /// Reads `<dir>/config.yml`, validates, merges defaults.
    pub fn load(dir: &Path) -> Result<Cluster, ConfigErrors> {
        let path = dir.join("config.yml");
        let label = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(source) => Cluster::parse(&source, &label),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: label,
                line: 0,
                path: String::new(),
                message: format!(
                    "cannot read: {e}; is this a cluster directory (run `tpa-controller configure`)?"
                ),
            }])),
        }
    }

    /// Parses config.yml text; `file_label` names the file in error messages.
    pub fn parse(source: &str, file_label: &str) -> Result<Cluster, ConfigErrors> {
        let mut diag = error::Diag::new(file_label);
        let Some(root) = yaml::load(source, &mut diag) else {
            // `load` has recorded why there is no tree.
            return Err(diag.into_errors());
        };
        let built = build::build(&root, &mut diag);
        checks::check(&built, &mut diag);
        diag.finish()?;
        Ok(built.cluster)
    }
}
