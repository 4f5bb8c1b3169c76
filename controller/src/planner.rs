//! The planner: a pure function from (config, inventory, facts, certificates) to a [`Plan`]:
//! per host, ordered stages of typed resources, with the cross-host order stages must keep.
//!
//! All Postgres knowledge lives here and in its submodules, rendered to text and covered by
//! golden tests; agents stay generic. **Architecture Invariant:** nothing in this module
//! does IO.

mod postgres;
mod postgres_conf;
mod sys;
mod users;

use std::collections::BTreeMap;

use tpa_common::facts::Facts;
use tpa_common::resource::ResourceSpec;

use crate::config::{Cluster, FailoverManager, Instance, Role};
use crate::inventory::Inventory;
use crate::local_repo::packages_for;

pub use postgres::{PostgresLayout, needs_restart};

/// The stages a host goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageName {
    /// Package sources, base packages, locale, /etc/tpa.
    Sys,
    /// Postgres packages, data directory, initdb.
    PostgresInstall,
    /// Configuration files, TLS, the postgres service.
    PostgresConfig,
    /// Users, databases and extensions (on the primary).
    PostgresUsers,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Sys => "sys",
            StageName::PostgresInstall => "postgres-install",
            StageName::PostgresConfig => "postgres-config",
            StageName::PostgresUsers => "postgres-users",
        }
    }
}

/// A batch of resources applied on one host in one Apply call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: StageName,
    pub resources: Vec<ResourceSpec>,
    /// Stages on other hosts that must have succeeded first (e.g. the primary's config
    /// before a replica's clone).
    pub after: Vec<(String, StageName)>,
}

/// What to apply where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub hosts: BTreeMap<String, Vec<Stage>>,
    /// Things the plan knowingly leaves out (features not built yet), shown to the operator.
    pub notes: Vec<String>,
}

/// Everything the planner reads. Gathered by the orchestrator; the planner does no IO.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub cluster: &'a Cluster,
    pub inventory: &'a Inventory,
    pub facts: &'a BTreeMap<String, Facts>,
    /// The cluster CA certificate (PEM).
    pub ca_pem: &'a str,
    /// Per postgres host: its server certificate (PEM), signed by the cluster CA for a key
    /// that was generated on, and never left, that host.
    pub server_certs: &'a BTreeMap<String, String>,
    /// Per host: the local-repo directory as seen on the host (e.g.
    /// `/var/opt/tpa/local-repo/Debian/12`), when the cluster has one for its OS.
    pub local_repos: &'a BTreeMap<String, String>,
    /// SCRAM verifiers of the users' passwords, by user name (computed by the controller from
    /// the secrets store, reusing the salt of the existing verifier).
    pub password_verifiers: &'a BTreeMap<String, String>,
}

/// Builds the whole cluster's plan, or says every reason it cannot.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, Vec<String>> {
    let mut plan = Plan::default();
    let mut errors = Vec::new();
    let version = input.cluster.postgres_version();
    for instance in &input.cluster.instances {
        if input.inventory.host(&instance.name).is_none() || instance.provision_only {
            continue;
        }
        let Some(facts) = input.facts.get(&instance.name) else {
            errors.push(format!("{}: no facts from its agent", instance.name));
            continue;
        };
        let os_major: u32 = facts
            .os_version_id
            .split('.')
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(0);
        let version = version
            .clone()
            .unwrap_or_else(|| default_postgres_version(os_major));
        let roles: Vec<&str> = instance
            .roles
            .iter()
            .filter(|r| **r != Role::Postgres)
            .map(|r| r.as_str())
            .collect();
        let failover = instance.vars.failover_manager.map(FailoverManager::as_str);
        let packages = match packages_for(&roles, &version, failover, os_major) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{}: {e}", instance.name));
                continue;
            }
        };
        let mut stages = vec![sys::stage(input, instance, packages)];
        if instance.has_role(Role::Primary) {
            let layout = PostgresLayout::for_instance(&input.cluster.name, instance, &version);
            stages.extend(postgres::stages(input, instance, &layout));
            for user in &instance.vars.postgres_users {
                if user
                    .password_encryption
                    .as_deref()
                    .is_some_and(|e| e != "scram-sha-256")
                {
                    errors.push(format!(
                        "{}: postgres_users {}: password_encryption md5 is not supported: tpa sets \
                         SCRAM-SHA-256 verifiers only; remove the key",
                        instance.name, user.username
                    ));
                }
            }
            stages.push(users::stage(
                instance,
                layout.port,
                input.password_verifiers,
            ));
        } else {
            note_unsupported(&mut plan, instance);
        }
        plan.hosts.insert(instance.name.clone(), stages);
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// The PostgreSQL each Debian release ships (PGDG is not reachable from these hosts).
pub fn default_postgres_version(os_major: u32) -> String {
    match os_major {
        13 => "17".into(),
        _ => "15".into(),
    }
}

fn note_unsupported(plan: &mut Plan, instance: &Instance) {
    let roles: Vec<&str> = instance
        .roles
        .iter()
        .filter(|r| **r != Role::Postgres)
        .map(|r| r.as_str())
        .collect();
    plan.notes.push(format!(
        "{}: roles [{}] are not deployed yet (replication, barman and failover managers \
         come in later releases); the host is bootstrapped and its packages are installed",
        instance.name,
        roles.join(", ")
    ));
}

/// Short constructor for resource ids: `<kind>:<name>`.
pub(crate) fn id(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

#[cfg(test)]
mod tests;
