//! Where the operator's hooks run in each host's stages, and the environment they get
//! (`docs/hooks.md`). Each hook is one `Hook` resource (shipped whole, run by the agent on
//! every apply), after a `Directory` for `/etc/tpa/hooks`:
//!
//! | point                   | hosts                          | where                                    |
//! |-------------------------|--------------------------------|------------------------------------------|
//! | `pre-deploy`            | every host                     | first in `sys`                           |
//! | `post-repo`             | every host                     | `sys`, before the packages               |
//! | `pre-initdb`            | Postgres hosts                 | first in `postgres-install`              |
//! | `postgres-config`       | Postgres hosts                 | `postgres-config`, before postgres.service |
//! | `postgres-config-final` | the live primary               | last in `postgres-users`                 |
//! | `barman-pre-config`     | Barman hosts                   | `barman`, before /etc/barman.conf        |
//! | `post-deploy`           | every host                     | a last stage, after every host's stages  |
//!
//! A hook's `# tpa-hosts:` line narrows the hosts further.

use tpa_common::resource::{Content, EnvVar, Hook, Resource, ResourceSpec};

use super::{Plan, PlanInput, PostgresRole, Stage, StageName, id};
use crate::config::Instance;
use crate::hooks::{HookFile, Point};

/// Where hooks are written on the hosts.
pub const DIR: &str = "/etc/tpa/hooks";

/// `hook_timeout`'s default, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u32 = 600;

/// Puts the hooks of every point but `post-deploy` into `instance`'s stages.
pub fn add_to(input: &PlanInput<'_>, instance: &Instance, stages: &mut [Stage]) {
    for hook in hooks_for(input, instance) {
        let Some((stage, at)) = place(input, instance, hook.point, stages) else {
            continue;
        };
        let resources = &mut stages[stage].resources;
        let mut new = Vec::new();
        if !resources.iter().any(|r| r.id == dir_id()) {
            new.push(directory());
        }
        new.push(resource(input, instance, hook));
        resources.splice(at..at, new);
    }
}

/// Adds a `post-deploy` stage to every host its hook applies to, after every stage of every
/// host: a host's post-deploy hook runs only once the whole deploy succeeded.
pub fn add_post_deploy(input: &PlanInput<'_>, plan: &mut Plan) {
    let Some(hook) = input
        .state
        .hooks
        .iter()
        .find(|h| h.point == Point::PostDeploy)
    else {
        return;
    };
    let last: Vec<(String, StageName)> = plan
        .hosts
        .iter()
        .filter_map(|(host, stages)| stages.last().map(|s| (host.clone(), s.name)))
        .collect();
    for (host, stages) in plan.hosts.iter_mut() {
        let Some(instance) = input.cluster.instance(host) else {
            continue;
        };
        if !selected(hook, instance) {
            continue;
        }
        stages.push(Stage {
            name: StageName::PostDeploy,
            resources: vec![directory(), resource(input, instance, hook)],
            after: last.iter().filter(|(h, _)| h != host).cloned().collect(),
        });
    }
}

/// The hooks that apply to `instance` by their `# tpa-hosts:` line, in deploy order.
fn hooks_for<'a>(input: &'a PlanInput<'_>, instance: &Instance) -> Vec<&'a HookFile> {
    input
        .state
        .hooks
        .iter()
        .filter(|h| h.point != Point::PostDeploy && selected(h, instance))
        .collect()
}

fn selected(hook: &HookFile, instance: &Instance) -> bool {
    hook.hosts.as_ref().is_none_or(|s| s.matches(instance))
}

/// The stage (index) and position a point's hook goes to on this host; None where the point
/// does not apply.
fn place(
    input: &PlanInput<'_>,
    instance: &Instance,
    point: Point,
    stages: &[Stage],
) -> Option<(usize, usize)> {
    let stage = |name| stages.iter().position(|s| s.name == name);
    let before = |stage: usize, id: &str| {
        let resources = &stages[stage].resources;
        resources
            .iter()
            .position(|r| r.id == id)
            .unwrap_or(resources.len())
    };
    match point {
        Point::PreDeploy => stage(StageName::Sys).map(|s| (s, 0)),
        Point::PostRepo => stage(StageName::Sys).map(|s| (s, before(s, "packages:base"))),
        Point::PreInitdb => stage(StageName::PostgresInstall).map(|s| (s, 0)),
        Point::PostgresConfig => {
            stage(StageName::PostgresConfig).map(|s| (s, before(s, "service:postgres.service")))
        }
        Point::PostgresConfigFinal => {
            if input.state.topology.role(&instance.name) != Some(PostgresRole::Primary) {
                return None;
            }
            stage(StageName::PostgresUsers).map(|s| (s, stages[s].resources.len()))
        }
        Point::BarmanPreConfig => {
            stage(StageName::Barman).map(|s| (s, before(s, "file:/etc/barman.conf")))
        }
        Point::PostDeploy => None,
    }
}

fn dir_id() -> String {
    id("directory", DIR)
}

fn directory() -> ResourceSpec {
    super::dir(DIR, "root", 0o700)
}

fn resource(input: &PlanInput<'_>, instance: &Instance, hook: &HookFile) -> ResourceSpec {
    ResourceSpec {
        id: id("hook", hook.point.as_str()),
        kind: Resource::Hook(Hook {
            path: format!("{DIR}/{}", hook.point),
            content: Content::new(hook.content.clone()),
            env: env(input, instance, hook.point)
                .into_iter()
                .map(|(k, v)| EnvVar::new(k, v))
                .collect(),
            timeout_secs: instance.vars.hook_timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
        }),
    }
}

/// The environment a hook runs with (documented in docs/hooks.md; no secrets). Values that do
/// not apply to the host are empty.
pub fn env(
    input: &PlanInput<'_>,
    instance: &Instance,
    point: Point,
) -> Vec<(&'static str, String)> {
    let topology = &input.state.topology;
    let host = input.state.hosts.get(&instance.name);
    let postgres = instance.has_role(crate::config::Role::Postgres);
    let setting = |f: &dyn Fn(&super::HostState) -> String| {
        host.filter(|_| postgres).map(f).unwrap_or_default()
    };
    let roles: Vec<&str> = instance.roles.iter().map(|r| r.as_str()).collect();
    vec![
        ("TPA_HOOK", point.to_string()),
        ("TPA_CLUSTER", input.cluster.name.clone()),
        ("TPA_HOST", instance.name.clone()),
        (
            "TPA_ADDRESS",
            input
                .inventory
                .host(&instance.name)
                .map(|h| h.address.to_string())
                .unwrap_or_default(),
        ),
        ("TPA_ROLES", roles.join(",")),
        (
            "TPA_LOCATION",
            instance.location.clone().unwrap_or_default(),
        ),
        ("TPA_NODE", instance.node.to_string()),
        (
            "TPA_POSTGRES_ROLE",
            topology
                .role(&instance.name)
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
        ),
        (
            "TPA_POSTGRES_VERSION",
            setting(&|h| h.settings.postgres_version.clone()),
        ),
        (
            "TPA_DATA_DIR",
            setting(&|h| h.settings.postgres.data_dir.clone()),
        ),
        (
            "TPA_PORT",
            setting(&|h| h.settings.postgres.port.to_string()),
        ),
        (
            "TPA_PRIMARY",
            topology.primary().map(str::to_string).unwrap_or_default(),
        ),
        (
            "TPA_UPSTREAM",
            topology
                .upstream(&instance.name)
                .map(str::to_string)
                .unwrap_or_default(),
        ),
    ]
}

#[cfg(test)]
mod tests;
