//! The `sys` stage: package sources (the cluster's local repository and the signed apt
//! repositories of `apt_repository_list`), the switch that stops postgresql-common creating a
//! `main` cluster, the packages the host's roles need, and the volumes' filesystems.

use std::collections::BTreeMap;

use tpa_common::resource::{File, Packages, Resource, ResourceSpec, Service};

use super::{HostState, id};
use crate::apt_keys::{self, AptKey};
use crate::bootstrap::{AGENT_UNIT, AGENT_UNIT_PATH};
use crate::config::Instance;
use crate::config::apt::RELEASE_TEMPLATE;
use crate::local_repo::HOST_APT_SOURCE;

/// postgresql-common creates a `main` cluster when a server package is installed unless told
/// not to; tpa owns the data directory, so the switch goes in before any package.
pub const CREATECLUSTER_CONF: &str = "/etc/postgresql-common/createcluster.d/tpa.conf";
/// What [`CREATECLUSTER_CONF`] holds (package layers write the same before their install).
pub const CREATECLUSTER_CONTENT: &str =
    "# Managed by tpa: tpa creates and owns the data directory\ncreate_main_cluster = false\n";

/// Where tpa keeps each repository's key; sources are pinned to it with `signed-by`.
pub const KEYRING_DIR: &str = "/etc/apt/keyrings";

pub fn stage(
    instance: &Instance,
    host: &HostState,
    packages: Vec<String>,
    mounts: Vec<ResourceSpec>,
    apt_keys: &BTreeMap<String, AptKey>,
) -> Result<super::Stage, String> {
    // The agent's own unit, as bootstrap writes it: a change of it reaches hosts whose agent
    // binary is current too. Reloaded into systemd, never restarted from under the agent; it
    // applies from the agent's next start.
    let mut resources = vec![
        file(AGENT_UNIT_PATH, AGENT_UNIT.to_string()),
        super::running_service("tpa-agent.service", vec![], vec![]),
    ];
    let only_local = instance.vars.use_local_repo_only.unwrap_or(false);
    if let Some(repo) = &host.local_repo {
        resources.push(file(
            HOST_APT_SOURCE,
            format!("# Managed by tpa: the cluster's local package repository\ndeb [trusted=yes] file:{repo} ./\n"),
        ));
    }
    resources.extend(repositories(instance, host, apt_keys)?);
    if only_local {
        // use_local_repo_only: the distribution's sources are switched off, as TPA does.
        resources.push(file(
            "/etc/apt/sources.list",
            "# Managed by tpa: use_local_repo_only is set, packages come from the local repository\n"
                .to_string(),
        ));
    }
    resources.push(super::dir(
        "/etc/postgresql-common/createcluster.d",
        "root",
        0o755,
    ));
    resources.push(file(CREATECLUSTER_CONF, CREATECLUSTER_CONTENT.to_string()));
    let disabled = units_disabled_after(&packages);
    resources.push(ResourceSpec {
        id: id("packages", "base"),
        kind: Resource::Packages(Packages { names: packages }),
    });
    for unit in disabled {
        resources.push(ResourceSpec {
            id: id("service", unit),
            kind: Resource::Service(Service {
                unit: unit.into(),
                enabled: false,
                running: false,
                reload_on: vec![],
                restart_on: vec![],
            }),
        });
    }
    // The volumes' filesystems, once mkfs is installed and before later stages write beneath
    // their mountpoints.
    resources.extend(mounts);
    Ok(super::Stage {
        name: super::StageName::Sys,
        resources,
        after: vec![],
    })
}

/// For each repository of the host's `apt_repository_list`: its key in [`KEYRING_DIR`] and
/// its source lines in `/etc/apt/sources.list.d/tpa-<name>.list`, pinned to that key, with
/// the host's codename for [`RELEASE_TEMPLATE`].
fn repositories(
    instance: &Instance,
    host: &HostState,
    apt_keys: &BTreeMap<String, AptKey>,
) -> Result<Vec<ResourceSpec>, String> {
    let names = instance.vars.apt_sources();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let codename = &host.facts.os_codename;
    if codename.is_empty() || !codename.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return Err(format!(
            "the host reports OS codename {codename:?} (VERSION_CODENAME in /etc/os-release), \
             which apt source lines cannot use"
        ));
    }
    let mut resources = vec![super::dir(KEYRING_DIR, "root", 0o755)];
    for name in names {
        let (lines, key) = apt_keys::repository(&name, &instance.vars.apt_repositories, apt_keys)?;
        let keyring = format!("{KEYRING_DIR}/tpa-{name}.asc");
        let mut text = format!(
            "# Managed by tpa: apt repository {name}, signed by key {}\n",
            key.fingerprint
        );
        for line in lines {
            text.push_str(&signed_by(
                &line.replace(RELEASE_TEMPLATE, codename),
                &keyring,
            ));
            text.push('\n');
        }
        resources.push(file(&keyring, key.armored));
        resources.push(file(
            &format!("/etc/apt/sources.list.d/tpa-{name}.list"),
            text,
        ));
    }
    Ok(resources)
}

/// `deb [options] rest` with `signed-by=<keyring>` among the options (config::apt checked
/// that the line has the `deb`/`deb-src` word and sets no signed-by of its own).
fn signed_by(line: &str, keyring: &str) -> String {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim_start();
    match rest.strip_prefix('[') {
        Some(options) => format!("{kind} [signed-by={keyring} {options}"),
        None => format!("{kind} [signed-by={keyring}] {rest}"),
    }
}

/// The units the packages bring that tpa stops and disables right after installing them (and
/// that package layers disable when they are built): Debian's umbrella `postgresql.service`
/// for its own clusters, when a server package is installed (there are none: tpa's
/// postgres.service runs the server). Right after the packages, so that its slow `disable`
/// (systemd-sysv-install) is off a new replica's clone-to-streaming path.
pub fn units_disabled_after(packages: &[String]) -> Vec<&'static str> {
    if packages.iter().any(|p| is_server_package(p)) {
        vec!["postgresql.service"]
    } else {
        vec![]
    }
}

/// `postgresql-<major>`: a server package, which brings Debian's postgresql.service.
fn is_server_package(name: &str) -> bool {
    name.strip_prefix("postgresql-")
        .is_some_and(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()))
}

pub(super) fn file(path: &str, content: String) -> ResourceSpec {
    ResourceSpec {
        id: id("file", path),
        kind: Resource::File(File {
            path: path.into(),
            content: content.into(),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o644,
            secret: false,
        }),
    }
}
