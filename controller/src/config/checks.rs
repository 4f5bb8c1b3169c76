//! Rules that compare instances with each other or with the cluster: unique names and node
//! numbers, upstreams that exist and form no cycle, backups on barman hosts, one primary,
//! known locations, docker addresses inside the declared networks, and a `postgres_version`
//! that the OS of each host's image ships.

use std::collections::HashMap;

use super::build::{Built, InstancePos, suggest_host_name};
use super::error::{Diag, closest};
use super::model::{Instance, Platform, Role};
use crate::local_repo::{self, DebianRelease};
use crate::platform::docker::image::ImageRef;

pub(crate) fn check(built: &Built, diag: &mut Diag) {
    let instances = &built.cluster.instances;
    let positions = &built.positions;
    let by_name: HashMap<&str, usize> = first_index_by_name(instances);
    let pairs: Vec<(&Instance, &InstancePos)> = instances.iter().zip(positions).collect();

    unique_names_and_nodes(&pairs, diag);
    one_primary(&pairs, diag);
    for (inst, pos) in &pairs {
        upstream_exists(inst, pos, instances, &by_name, diag);
        backup_is_barman(inst, pos, instances, &by_name, diag);
        location_is_declared(inst, pos, &built.location_names, diag);
        docker_ip_in_network(inst, pos, built, diag);
        postgres_version_on_os(inst, pos, diag);
    }
    upstream_cycles(&pairs, &by_name, diag);
    patroni_has_etcd(&pairs, diag);
}

/// `failover_manager: patroni` needs its DCS: an odd number (three or more) of `etcd`
/// instances. Two members cannot lose one and keep a quorum, so an even count only adds a way
/// to fail; a single member is no high availability at all.
fn patroni_has_etcd(pairs: &[(&Instance, &InstancePos)], diag: &mut Diag) {
    use super::vars::FailoverManager;
    let Some((first, first_pos)) = pairs.first() else {
        return;
    };
    if first.vars.failover_manager() != FailoverManager::Patroni {
        return;
    }
    let etcd: Vec<&(&Instance, &InstancePos)> = pairs
        .iter()
        .filter(|(i, _)| i.has_role(Role::Etcd))
        .collect();
    let (pos, names) = match etcd.first() {
        None => {
            diag.err(
                first_pos.role.line,
                &first_pos.role.path,
                "failover_manager: patroni needs etcd, and no instance has role `etcd`: give \
                 three instances `role: [etcd]` (they may be the Postgres hosts too)",
            );
            return;
        }
        Some((_, pos)) => (
            pos,
            etcd.iter()
                .map(|(i, _)| i.name.as_str())
                .collect::<Vec<_>>(),
        ),
    };
    let n = names.len();
    if n % 2 == 0 {
        diag.err(
            pos.role.line,
            &pos.role.path,
            format!(
                "{n} etcd members ({}): etcd needs a majority to work, so an even number \
                 tolerates no more failures than one fewer; use 3 or 5",
                names.join(", ")
            ),
        );
    } else if n < 3 && !first.vars.etcd_single_member {
        diag.err(
            pos.role.line,
            &pos.role.path,
            format!(
                "one etcd member ({}): Patroni's DCS would be a single point of failure; give \
                 three instances `role: [etcd]`, or set `etcd_single_member: true` if that is \
                 what you want (tests, demos)",
                names.join(", ")
            ),
        );
    }
}

fn first_index_by_name(instances: &[Instance]) -> HashMap<&str, usize> {
    let mut map = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        map.entry(inst.name.as_str()).or_insert(i);
    }
    map
}

fn unique_names_and_nodes(pairs: &[(&Instance, &InstancePos)], diag: &mut Diag) {
    let mut names: HashMap<&str, &InstancePos> = HashMap::new();
    let mut nodes: HashMap<u32, &Instance> = HashMap::new();
    for (inst, pos) in pairs {
        if let Some(first) = names.get(inst.name.as_str()) {
            diag.err(
                pos.name.line,
                &pos.name.path,
                format!(
                    "duplicate instance name `{}` (first used at line {})",
                    inst.name, first.name.line
                ),
            );
        } else {
            names.insert(&inst.name, pos);
        }
        let Some(node_pos) = &pos.node else { continue };
        if let Some(first) = nodes.get(&inst.node) {
            diag.err(
                node_pos.line,
                &node_pos.path,
                format!(
                    "duplicate node number {} (also used by `{}`)",
                    inst.node, first.name
                ),
            );
        } else {
            nodes.insert(inst.node, inst);
        }
    }
}

fn one_primary(pairs: &[(&Instance, &InstancePos)], diag: &mut Diag) {
    let mut first: Option<&Instance> = None;
    for (inst, pos) in pairs {
        if !inst.has_role(Role::Primary) {
            continue;
        }
        match first {
            None => first = Some(inst),
            Some(p) => diag.err(
                pos.role.line,
                &pos.role.path,
                format!(
                    "more than one primary: `{}` is already the primary; make this one a replica \
                     with `upstream: {}`",
                    p.name, p.name
                ),
            ),
        }
    }
}

fn upstream_exists(
    inst: &Instance,
    pos: &InstancePos,
    instances: &[Instance],
    by_name: &HashMap<&str, usize>,
    diag: &mut Diag,
) {
    let needs = [Role::Replica, Role::Witness]
        .into_iter()
        .find(|r| inst.has_role(*r));
    let Some(upstream) = &inst.upstream else {
        if let Some(role) = needs {
            diag.err(
                pos.role.line,
                &pos.role.path,
                format!("a {role} needs `upstream: <instance>` to say which instance it follows"),
            );
        }
        return;
    };
    let Some(up) = pos.upstream.as_ref() else {
        return;
    };
    match by_name.get(upstream.as_str()) {
        None => diag.err(
            up.line,
            &up.path,
            not_an_instance("upstream", upstream, instances),
        ),
        Some(&i) => {
            let target = &instances[i];
            if !(target.has_role(Role::Primary) || target.has_role(Role::Replica)) {
                diag.err(
                    up.line,
                    &up.path,
                    format!("upstream `{upstream}` is not a Postgres primary or replica"),
                );
            }
        }
    }
}

fn backup_is_barman(
    inst: &Instance,
    pos: &InstancePos,
    instances: &[Instance],
    by_name: &HashMap<&str, usize>,
    diag: &mut Diag,
) {
    let Some(bp) = &pos.backup else { return };
    for b in &inst.backup {
        match by_name.get(b.as_str()) {
            None => diag.err(bp.line, &bp.path, not_an_instance("backup", b, instances)),
            Some(&i) if !instances[i].has_role(Role::Barman) => diag.err(
                bp.line,
                &bp.path,
                format!("backup `{b}` does not have the `barman` role; add it there or back up elsewhere"),
            ),
            Some(_) => {}
        }
    }
}

fn not_an_instance(key: &str, name: &str, instances: &[Instance]) -> String {
    let base = format!("{key} `{name}` is not an instance of this cluster");
    // `ONE_A` for `one-a`: names are exact now, TPA used to rename.
    let renamed = suggest_host_name(name, true)
        .and_then(|s| instances.iter().find(|i| i.name == s))
        .map(|i| i.name.as_str());
    match renamed.or_else(|| closest(name, instances.iter().map(|i| i.name.as_str()))) {
        Some(c) => format!("{base}; did you mean `{c}`?"),
        None => base,
    }
}

fn location_is_declared(inst: &Instance, pos: &InstancePos, names: &[String], diag: &mut Diag) {
    let (Some(loc), Some(lp)) = (&inst.location, &pos.location) else {
        return;
    };
    if !names.contains(loc) {
        let base = format!("location `{loc}` is not declared under `locations`");
        let message = match closest(loc, names.iter().map(String::as_str)) {
            Some(c) => format!("{base}; did you mean `{c}`?"),
            None => format!("{base}; add `- Name: {loc}` there"),
        };
        diag.err(lp.line, &lp.path, message);
    }
}

fn docker_ip_in_network(inst: &Instance, pos: &InstancePos, built: &Built, diag: &mut Diag) {
    let (Some(ip), Some(ipos)) = (inst.ip_address, &pos.ip_address) else {
        return;
    };
    if inst.platform != Platform::Docker {
        return;
    }
    let subnets: Vec<_> = built
        .cluster
        .docker_networks
        .iter()
        .flat_map(|n| &n.subnets)
        .collect();
    if subnets.is_empty() {
        diag.err(
            ipos.line,
            &ipos.path,
            "a docker `ip_address` needs a `docker_networks` subnet that contains it; declare \
             one, or remove ip_address to let tpa pick addresses",
        );
    } else if !subnets.iter().any(|s| s.contains(&ip)) {
        let list: Vec<String> = subnets.iter().map(|s| s.to_string()).collect();
        diag.err(
            ipos.line,
            &ipos.path,
            format!(
                "{ip} is outside the docker_networks subnets ({})",
                list.join(", ")
            ),
        );
    }
}

/// The Postgres version must be one the host's OS ships: checked here, before anything is
/// provisioned or generated, when the OS is known from the image (`tpa/debian:<major>`). Other
/// hosts are checked by deploy, against the OS their agent reports.
fn postgres_version_on_os(inst: &Instance, pos: &InstancePos, diag: &mut Diag) {
    let (Some(version), Some(vpos)) = (&inst.vars.postgres_version, &pos.postgres_version) else {
        return;
    };
    if !(inst.has_role(Role::Postgres) || inst.has_role(Role::Barman)) {
        return;
    }
    // PGDG has the supported versions (apt names one it lacks); without it, only the
    // release's own is there.
    if inst.vars.uses_pgdg() {
        if version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|v| v < 10)
        {
            diag.err(
                vpos.line,
                &vpos.path,
                format!("PostgreSQL {version} is older than any version tpa deploys (10 or later)"),
            );
        }
        return;
    }
    let Some(image) = &inst.image else { return };
    let image = ImageRef::parse(image);
    let Some(release) = image
        .buildable_debian_major()
        .and_then(|major| DebianRelease::from_major(major).ok())
    else {
        return;
    };
    if version.parse::<u32>().ok() == Some(release.postgres_version) {
        return;
    }
    let shipped: Vec<String> = local_repo::SUPPORTED
        .iter()
        .map(|r| format!("Debian {} ships {}", r.major, r.postgres_version))
        .collect();
    diag.err(
        vpos.line,
        &vpos.path,
        format!(
            "PostgreSQL {version} is not available on {release}, the OS of image {}: {}, and \
             PGDG is not among this host's apt repositories (use_local_repo_only, or \
             apt_repository_list without PGDG); set postgres_version: '{}', or remove it to get \
             that default",
            image.full(),
            shipped.join(", "),
            release.postgres_version,
        ),
    );
}

/// Follows each upstream chain; a chain that comes back on itself is reported once, at the
/// first instance of the cycle in file order.
fn upstream_cycles(
    pairs: &[(&Instance, &InstancePos)],
    by_name: &HashMap<&str, usize>,
    diag: &mut Diag,
) {
    let mut reported: Vec<Vec<usize>> = Vec::new();
    for start in 0..pairs.len() {
        let mut chain = vec![start];
        let mut cur = start;
        while let Some(next) = pairs[cur]
            .0
            .upstream
            .as_deref()
            .and_then(|u| by_name.get(u))
        {
            if let Some(at) = chain.iter().position(|&c| c == *next) {
                let mut cycle = chain[at..].to_vec();
                let mut key = cycle.clone();
                key.sort_unstable();
                if !reported.contains(&key) {
                    reported.push(key);
                    // Start the cycle at its first instance in file order.
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| **c)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(min);
                    let (inst, pos) = pairs[cycle[0]];
                    let mut names: Vec<&str> =
                        cycle.iter().map(|&c| pairs[c].0.name.as_str()).collect();
                    names.push(&inst.name);
                    if let Some(up) = &pos.upstream {
                        diag.err(
                            up.line,
                            &up.path,
                            format!(
                                "upstream chain forms a cycle: {}; one instance in it must be the primary",
                                names.join(" -> ")
                            ),
                        );
                    }
                }
                break;
            }
            chain.push(*next);
            cur = *next;
        }
    }
}
