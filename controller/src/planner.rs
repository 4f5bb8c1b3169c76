//! The planner: a pure function from (config, inventory, gathered [`ClusterState`]) to a
//! [`Plan`]: per host, ordered stages of typed resources, with the cross-host order stages
//! must keep.
//!
//! All Postgres knowledge lives here and in its submodules, rendered to text and covered by
//! golden tests; agents stay generic. **Architecture Invariant:** nothing in this module
//! does IO.
//!
//! # Layout
//! - `input`: the gathered [`ClusterState`] the planner reads.
//! - `topology`: which host is the primary, live state first ([`topology::resolve`]).
//! - `inspect`: the read-only SQL gather runs on the primary, and the reading of its rows.
//! - `sys`, `postgres`, `users`: the stages; `postgres_conf`: the files Postgres reads;
//!   `replica`: cloning replicas, their slots and the `replication` role; `repmgr`: repmgr's
//!   configuration, registration and repmgrd; `barman`: the Barman server and its roles on the
//!   primary; `ssh_trust`: the barman and postgres users' SSH keys, pinned host keys and
//!   authorized_keys; `logserver`: rsyslog shipping every host's logs to the log server;
//!   `health`: the health spec each host's agent checks on a schedule.

pub mod barman;
pub mod barman_drill;
pub mod health;
pub mod hooks;
mod input;
pub mod inspect;
pub mod logserver;
mod mounts;
pub mod patroni;
mod postgres;
pub mod postgres_conf;
pub mod replica;
pub mod repmgr;
pub mod ssh_trust;
pub mod sys;
pub mod topology;
pub(crate) mod users;

use std::collections::BTreeMap;

use tpa_common::resource::ResourceSpec;

use crate::config::{Cluster, Instance, Role};
use crate::inventory::Inventory;
use crate::local_repo::{SUPPORTED, packages_for};

pub use input::{ClusterState, HostState, Verifiers};
pub use postgres::needs_restart;
pub use topology::{PostgresRole, Topology, TopologyError};

/// The stages a host goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageName {
    /// Package sources, base packages, locale, /etc/tpa.
    Sys,
    /// rsyslog shipping the host's logs to the log server (a cluster with a `log-server`).
    Logs,
    /// Postgres packages, data directory, initdb (a replica: the clone from its upstream).
    PostgresInstall,
    /// Configuration files, TLS, the postgres service, then what other hosts wait for: the
    /// slots of its downstreams (a replica: once it streams), and on the primary the
    /// `replication` role and Barman's roles and slot.
    PostgresConfig,
    /// Users, databases and extensions (on the primary).
    PostgresUsers,
    /// repmgr's configuration, the node's registration and repmgrd (`failover_manager:
    /// repmgr`).
    Repmgr,
    /// A Barman host: its configuration, WAL streaming, the first backup, `barman check`.
    Barman,
    /// An etcd member (Patroni's DCS), right after `sys`.
    Etcd,
    /// Patroni takes over Postgres; on the live primary, the DCS configuration.
    Patroni,
    /// The operator's `post-deploy` hook, after every host's other stages (`hooks.rs`).
    PostDeploy,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Sys => "sys",
            StageName::Logs => "logs",
            StageName::PostgresInstall => "postgres-install",
            StageName::PostgresConfig => "postgres-config",
            StageName::PostgresUsers => "postgres-users",
            StageName::Repmgr => "repmgr",
            StageName::Barman => "barman",
            StageName::Etcd => "etcd",
            StageName::Patroni => "patroni",
            StageName::PostDeploy => "post-deploy",
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

/// Everything the planner reads: config.yml, the inventory and the gathered live state.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub cluster: &'a Cluster,
    pub inventory: &'a Inventory,
    pub state: &'a ClusterState,
}

/// Builds the whole cluster's plan, or says every reason it cannot.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, Vec<String>> {
    let mut plan = Plan::default();
    let mut errors = Vec::new();
    for instance in &input.cluster.instances {
        let Some(inventory_host) = input.inventory.host(&instance.name) else {
            continue;
        };
        if instance.provision_only {
            continue;
        }
        let Some(host) = input.state.hosts.get(&instance.name) else {
            errors.push(format!("{}: no facts from its agent", instance.name));
            continue;
        };
        let settings = &host.settings;
        let Some(os_major) = settings.os_major else {
            errors.push(format!(
                "{}: the host reports no OS major version (VERSION_ID {:?} in /etc/os-release); \
                 tpa deploys to {}",
                instance.name,
                host.facts.os_version_id,
                SUPPORTED
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        };
        let packages = match host_packages(input.cluster, instance, settings, os_major, true) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{}: {e}", instance.name));
                continue;
            }
        };
        let mounts = mounts::resources(instance, inventory_host);
        let mut stages = match sys::stage(instance, host, packages, mounts, &input.state.apt_keys) {
            Ok(stage) => vec![stage],
            Err(e) => {
                errors.push(format!("{}: {e}", instance.name));
                continue;
            }
        };
        match logserver::stage(input, instance, host) {
            Ok(Some(s)) => stages.push(s),
            Ok(None) => {}
            Err(e) => errors.push(format!("{}: {e}", instance.name)),
        }
        let patroni = patroni::enabled(input);
        if patroni && instance.has_role(Role::Etcd) {
            match patroni::etcd_stage(input, instance, host) {
                Ok(s) => stages.push(s),
                Err(e) => errors.push(e),
            }
        }
        let topology = &input.state.topology;
        match topology.role(&instance.name) {
            Some(PostgresRole::Primary) => {
                match postgres::stages(input, instance, host) {
                    Ok(s) => stages.extend(s),
                    Err(e) => errors.push(e),
                }
                for user in &instance.vars.postgres_users {
                    if user
                        .password_encryption
                        .as_deref()
                        .is_some_and(|e| e != "scram-sha-256")
                    {
                        errors.push(format!(
                            "{}: postgres_users {}: password_encryption md5 is not supported: tpa \
                             sets SCRAM-SHA-256 verifiers only; remove the key",
                            instance.name, user.username
                        ));
                    }
                    if user.username == patroni::REWIND_USER && patroni::enabled(input) {
                        errors.push(format!(
                            "{}: postgres_users {}: tpa manages this role for Patroni's \
                             pg_rewind; remove it from postgres_users",
                            instance.name, user.username
                        ));
                    }
                    if user.username == replica::REPLICATION_USER && has_replicas(topology) {
                        errors.push(format!(
                            "{}: postgres_users {}: tpa manages this role for replicas; remove \
                             it from postgres_users",
                            instance.name, user.username
                        ));
                    }
                }
                let port = settings.postgres.port;
                let verifiers = input.state.verifiers.by_user();
                // What other hosts wait for ends the config stage, so replicas clone and the
                // Barman host starts while users, databases and repmgr are still being set up.
                let mut handoff = Vec::new();
                if has_replicas(topology) {
                    handoff.push(users::role(
                        &replica::user(),
                        verifiers.get(replica::REPLICATION_USER).map(String::as_str),
                        port,
                    ));
                    handoff.extend(replica::slots(input, &instance.name, port));
                }
                if barman::wanted(input.cluster) {
                    match barman::primary_resources(verifiers, &settings.postgres_version, port) {
                        Ok(r) => handoff.extend(r),
                        Err(e) => errors.push(format!("{}: {e}", instance.name)),
                    }
                }
                if let Some(config) = stages
                    .iter_mut()
                    .rfind(|s| s.name == StageName::PostgresConfig)
                {
                    config.resources.extend(handoff);
                }
                let mut users = users::stage(instance, port, verifiers);
                if patroni::enabled(input) {
                    users.resources.extend(patroni::rewind_role(
                        verifiers.get(patroni::REWIND_USER).map(String::as_str),
                        port,
                    ));
                }
                stages.push(users);
                push_repmgr(input, instance, host, &mut stages, &mut errors);
            }
            Some(PostgresRole::Replica) => {
                match postgres::stages(input, instance, host) {
                    Ok(s) => stages.extend(s),
                    Err(e) => errors.push(e),
                }
                push_repmgr(input, instance, host, &mut stages, &mut errors);
            }
            Some(PostgresRole::Witness) if repmgr::enabled(input) => {
                match postgres::stages(input, instance, host) {
                    Ok(s) => stages.extend(s),
                    Err(e) => errors.push(e),
                }
                push_repmgr(input, instance, host, &mut stages, &mut errors);
                // TPA's M1 shape: the witness on the Barman host.
                if instance.has_role(Role::Barman) {
                    match barman::stages(input, instance, host) {
                        Ok(s) => stages.extend(s),
                        Err(e) => errors.extend(e),
                    }
                }
            }
            None if instance.has_role(Role::Barman) => {
                match barman::stages(input, instance, host) {
                    Ok(s) => stages.extend(s),
                    Err(e) => errors.extend(e),
                }
                note_unsupported(&mut plan, instance, topology);
            }
            _ => note_unsupported(&mut plan, instance, topology),
        }
        if patroni && topology.role(&instance.name).is_some() {
            match patroni::stage(input, instance, host) {
                Ok(s) => stages.push(s),
                Err(e) => errors.push(e),
            }
        }
        if let Err(e) = ssh_trust::add_to(input, instance, &mut stages) {
            errors.push(e);
        }
        // Last of the host's own stages: what its agent checks from now on.
        let checks = health::spec(input, instance, host, &stages);
        if let Some(last) = stages.last_mut() {
            last.resources.push(health::resource(&checks));
        }
        hooks::add_to(input, instance, &mut stages);
        plan.hosts.insert(instance.name.clone(), stages);
    }
    plan.notes.extend(barman::following(input));
    hooks::add_post_deploy(input, &mut plan);
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// The packages the plan installs on `instance`: its roles' ([`packages_for`]), and rsyslog
/// with its TLS driver on every host of a cluster with a log server. `download-packages`
/// fetches the union of these over the cluster, from Debian's archive only (`pgdg` false);
/// deploy allows PGDG's versions of PostgreSQL on hosts that have PGDG (`pgdg` true).
pub fn host_packages(
    cluster: &Cluster,
    instance: &Instance,
    settings: &crate::settings::HostSettings,
    os_major: u32,
    pgdg: bool,
) -> Result<Vec<String>, crate::local_repo::PackageSetError> {
    let mut packages = packages_for(
        &instance.roles,
        &settings.postgres_version,
        Some(settings.failover_manager),
        os_major,
        pgdg && instance.vars.uses_pgdg(),
    )?;
    if logserver::wanted(cluster) {
        packages.extend(logserver::PACKAGES.iter().map(|p| p.to_string()));
    }
    packages.extend(mounts::packages(instance).map(String::from));
    packages.sort();
    packages.dedup();
    Ok(packages)
}

/// A Postgres host's `repmgr` stage, when repmgr manages the cluster.
fn push_repmgr(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
    stages: &mut Vec<Stage>,
    errors: &mut Vec<String>,
) {
    let Some(role) = input.state.topology.role(&instance.name) else {
        return;
    };
    if !repmgr::enabled(input) {
        return;
    }
    match repmgr::stage(input, instance, host, role) {
        Ok(s) => stages.push(s),
        Err(e) => errors.push(format!("{}: {e}", instance.name)),
    }
}

/// True when some deployed host streams (or will stream) from another.
pub fn has_replicas(topology: &Topology) -> bool {
    topology
        .members
        .values()
        .any(|m| m.role == PostgresRole::Replica)
}

/// A host the plan leaves with its packages only, and the roles (live ones for Postgres
/// hosts) that are not deployed yet.
fn note_unsupported(plan: &mut Plan, instance: &Instance, topology: &Topology) {
    let live = topology.role(&instance.name);
    let roles: Vec<&str> = instance
        .roles
        .iter()
        .filter(|r| {
            !matches!(
                r,
                Role::Postgres | Role::Barman | Role::Etcd | Role::LogServer
            )
        })
        .map(|r| match (r, live) {
            (Role::Primary | Role::Replica, Some(live)) => live.as_str(),
            _ => r.as_str(),
        })
        .collect();
    if roles.is_empty() {
        return;
    }
    plan.notes.push(format!(
        "{}: roles [{}] are not deployed yet (witness and failover managers come in later \
         releases); the host is bootstrapped and its packages are installed",
        instance.name,
        roles.join(", ")
    ));
}

/// Short constructor for resource ids: `<kind>:<name>`.
/// A directory owned by `owner` (user and group of that name) with `mode`.
pub(crate) fn dir(path: &str, owner: &str, mode: u32) -> ResourceSpec {
    ResourceSpec {
        id: id("directory", path),
        kind: tpa_common::resource::Resource::Directory(tpa_common::resource::Directory {
            path: path.into(),
            owner: owner.into(),
            group: owner.into(),
            mode,
        }),
    }
}

pub(crate) fn id(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

/// `unit` enabled and running (resource id `service:<unit>`), reloaded or restarted when one
/// of the resources named in `reload_on` / `restart_on` changed.
pub(crate) fn running_service(
    unit: &str,
    reload_on: Vec<String>,
    restart_on: Vec<String>,
) -> ResourceSpec {
    ResourceSpec {
        id: id("service", unit),
        kind: tpa_common::resource::Resource::Service(tpa_common::resource::Service {
            unit: unit.into(),
            enabled: true,
            running: true,
            reload_on,
            restart_on,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests;
