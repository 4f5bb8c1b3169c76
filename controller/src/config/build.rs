//! Walks the YAML tree into the typed model: top-level keys, locations and `instance_defaults`
//! merged into each instance, typed vars. Rules that compare instances live in `checks`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::aws::{self, AwsCluster};
use super::docker;
use super::error::{Diag, closest, unknown_key, unsupported, unsupported_value};
use super::keys::{
    ARCHITECTURES_NOT_YET, KeyUse, MERGED_MAPPINGS, ROLES_NOT_YET, TOP_LEVEL, TOP_LEVEL_NOT_YET,
    instance_key, instance_key_names,
};
use super::model::{
    AwsOptions, Cluster, DockerNetwork, DockerOptions, HostVars, Instance, Location, Platform, Role,
};
use super::mounts::{Mount, VolumeFor};
use super::vars::{is_known_var, overlay, parse_vars, parsed, parsed_list};
use super::yaml::{Field, Node, Value, index_path};

/// Where something was written: reported by cross-instance checks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) path: String,
}

impl Pos {
    fn of(f: &Field<'_>) -> Pos {
        Pos {
            line: f.line,
            path: f.path.clone(),
        }
    }
}

/// Positions of one instance's keys, for the checks that compare instances.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstancePos {
    pub(crate) name: Pos,
    /// `None` when `node` is missing or invalid (already reported).
    pub(crate) node: Option<Pos>,
    pub(crate) role: Pos,
    pub(crate) upstream: Option<Pos>,
    pub(crate) backup: Option<Pos>,
    pub(crate) location: Option<Pos>,
    pub(crate) ip_address: Option<Pos>,
    /// Where the instance's effective `postgres_version` was written, if anywhere.
    pub(crate) postgres_version: Option<Pos>,
}

/// The model plus the positions `checks` needs.
pub(crate) struct Built {
    pub(crate) cluster: Cluster,
    pub(crate) positions: Vec<InstancePos>,
    pub(crate) location_names: Vec<String>,
}

pub(crate) fn build(root: &Node, diag: &mut Diag) -> Built {
    let mut top: HashMap<&str, Field<'_>> = HashMap::new();
    for f in root.fields(diag, "") {
        if TOP_LEVEL.contains(&f.key) {
            top.insert(f.key, f);
        } else if TOP_LEVEL_NOT_YET.contains(&f.key) {
            diag.err(f.line, &f.path, unsupported(f.key));
        } else {
            let known = TOP_LEVEL.iter().chain(TOP_LEVEL_NOT_YET).copied();
            diag.err(f.line, &f.path, unknown_key(f.key, "top-level key", known));
        }
    }

    let name = match top.get("cluster_name") {
        Some(f) => cluster_name(f, diag),
        None => {
            diag.err(1, "", "missing required key `cluster_name`");
            None
        }
    };
    let architecture = top.get("architecture").and_then(|f| architecture(f, diag));

    let cluster_var_fields = match top.get("cluster_vars") {
        Some(f) => {
            let fields = f.value.fields(diag, &f.path);
            if fields.is_empty() && matches!(f.value.value, Value::Map(_) | Value::Null) {
                diag.err(
                    f.line,
                    &f.path,
                    "must not be empty (TPA requires cluster variables, e.g. postgres_version)",
                );
            }
            fields
        }
        None => {
            diag.err(
                1,
                "",
                "missing required key `cluster_vars` (TPA requires it, e.g. with postgres_version)",
            );
            Vec::new()
        }
    };
    let vars = parse_vars(&cluster_var_fields, diag);
    cert_policy_check(&vars, &cluster_var_fields, diag);

    let locations = top
        .get("locations")
        .map(|f| locations(f, diag))
        .unwrap_or_default();
    let defaults = top
        .get("instance_defaults")
        .map(|f| defaults(f, diag))
        .unwrap_or_default();

    let mut instances = Vec::new();
    let mut positions = Vec::new();
    match top.get("instances") {
        None => diag.err(1, "", "missing required key `instances`"),
        Some(f) => {
            let items = f.value.seq(diag, &f.path).unwrap_or(&[]);
            if items.is_empty() && matches!(f.value.value, Value::Seq(_) | Value::Null) {
                diag.err(f.line, &f.path, "must list at least one instance");
            }
            for (i, item) in items.iter().enumerate() {
                let path = index_path(&f.path, i);
                let own = item.fields(diag, &path);
                let location_fields = own
                    .iter()
                    .chain(&defaults)
                    .find(|f| f.key == "location")
                    .and_then(|f| match &f.value.value {
                        Value::Str(s) => locations.iter().find(|l| &l.name == s),
                        _ => None,
                    })
                    .map(|l| l.fields.as_slice())
                    .unwrap_or(&[]);
                let merged = merge(&[&defaults, location_fields, &own], diag);
                let ctx = InstanceCtx {
                    line: item.line,
                    path: &path,
                    cluster_vars: &cluster_var_fields,
                };
                if let Some((inst, pos)) = instance(&merged, &ctx, diag) {
                    instances.push(inst);
                    positions.push(pos);
                }
            }
        }
    }

    let cluster = Cluster {
        name: name.unwrap_or_default(),
        architecture: architecture.unwrap_or_else(|| "M1".to_string()),
        tags: top
            .get("cluster_tags")
            .map(|f| f.value.string_map(diag, &f.path))
            .unwrap_or_default(),
        vars,
        locations: locations
            .iter()
            .map(|l| Location {
                name: l.name.clone(),
            })
            .collect(),
        instances,
        docker_networks: top
            .get("docker_networks")
            .map(|f| docker_networks(f, diag))
            .unwrap_or_default(),
        keyring_backend: top
            .get("keyring_backend")
            .and_then(|f| keyring_backend(f, diag)),
        vault_name: top
            .get("vault_name")
            .and_then(|f| f.value.string(diag, &f.path)),
        ssh_key_file: top
            .get("ssh_key_file")
            .and_then(|f| f.value.string(diag, &f.path))
            .map(PathBuf::from),
        ssh_port: top
            .get("cluster_ssh_port")
            .and_then(|f| ssh_port(f, diag))
            .unwrap_or(22),
        aws: AwsCluster {
            ami: top.get("ec2_ami").and_then(|f| aws::ami(f, diag)),
            vpcs: top
                .get("ec2_vpc")
                .map(|f| aws::vpcs(f, diag))
                .unwrap_or_default(),
            reachability: top
                .get("ec2_instance_reachability")
                .map(|f| aws::reachability(f, diag))
                .unwrap_or_default(),
            rules: top.get("cluster_rules").map(|f| aws::rules(f, diag)),
        },
    };
    let location_names = locations.into_iter().map(|l| l.name).collect();
    Built {
        cluster,
        positions,
        location_names,
    }
}

fn cluster_name(f: &Field<'_>, diag: &mut Diag) -> Option<String> {
    let name = f.value.string(diag, &f.path)?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        diag.err(
            f.line,
            &f.path,
            format!("`{name}` is not a valid cluster name; use only letters, digits, `_` and `-`"),
        );
        return None;
    }
    Some(name)
}

fn architecture(f: &Field<'_>, diag: &mut Diag) -> Option<String> {
    let a = f.value.string(diag, &f.path)?;
    if a == "M1" {
        return Some(a);
    }
    let message = if ARCHITECTURES_NOT_YET.contains(&a.as_str()) {
        unsupported_value("architecture", &a, "`M1`")
    } else {
        format!("unknown architecture `{a}`; use `M1`")
    };
    diag.err(f.line, &f.path, message);
    None
}

fn keyring_backend(f: &Field<'_>, diag: &mut Diag) -> Option<String> {
    let v = f.value.string(diag, &f.path)?;
    if v == "system" || v == "legacy" {
        Some(v)
    } else {
        diag.err(
            f.line,
            &f.path,
            format!("unknown keyring_backend `{v}`; use `system` or `legacy`"),
        );
        None
    }
}

fn ssh_port(f: &Field<'_>, diag: &mut Diag) -> Option<u16> {
    match f.value.int::<u16>(diag, &f.path)? {
        0 => {
            diag.err(f.line, &f.path, "port 0 is not a usable port");
            None
        }
        p => Some(p),
    }
}

/// A `locations` entry: its name and the instance defaults it carries.
#[derive(Default)]
struct LocationIn<'a> {
    name: String,
    fields: Vec<Field<'a>>,
}

fn locations<'a>(f: &Field<'a>, diag: &mut Diag) -> Vec<LocationIn<'a>> {
    let mut out: Vec<LocationIn<'a>> = Vec::new();
    for (i, item) in f.value.seq(diag, &f.path).unwrap_or(&[]).iter().enumerate() {
        let path = index_path(&f.path, i);
        let mut name = None;
        let mut fields = Vec::new();
        for g in item.fields(diag, &path) {
            match g.key {
                "Name" => {
                    name = g
                        .value
                        .string(diag, &g.path)
                        .map(|n| (n, g.line, g.path.clone()))
                }
                "node" | "location" => diag.err(
                    g.line,
                    &g.path,
                    format!(
                        "`{}` cannot be set for a whole location; set it on each instance",
                        g.key
                    ),
                ),
                _ => {
                    if check_key_name(&g, diag) {
                        fields.push(g);
                    }
                }
            }
        }
        match name {
            None => diag.err(item.line, &path, "missing required key `Name`"),
            Some((n, line, npath)) => {
                if out.iter().any(|l| l.name == n) {
                    diag.err(line, &npath, format!("duplicate location `{n}`"));
                } else {
                    out.push(LocationIn { name: n, fields });
                }
            }
        }
    }
    out
}

fn defaults<'a>(f: &Field<'a>, diag: &mut Diag) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    for g in f.value.fields(diag, &f.path) {
        if g.key == "Name" || g.key == "node" {
            diag.err(
                g.line,
                &g.path,
                format!("`{}` cannot have a default; set it on each instance", g.key),
            );
        } else if check_key_name(&g, diag) {
            out.push(g);
        }
    }
    out
}

/// Reports unknown and not-yet-supported instance keys; true if the key is usable.
fn check_key_name(f: &Field<'_>, diag: &mut Diag) -> bool {
    match instance_key(f.key) {
        Some(KeyUse::NotYet) => {
            diag.err(f.line, &f.path, unsupported(f.key));
            false
        }
        Some(_) => true,
        None => {
            let is_var = is_known_var(f.key);
            let message = match closest(f.key, instance_key_names()).filter(|_| !is_var) {
                Some(k) => format!("unknown instance key `{}`; did you mean `{k}`?", f.key),
                None => format!(
                    "unknown instance key `{}`; should it be under `vars:`?",
                    f.key
                ),
            };
            diag.err(f.line, &f.path, message);
            false
        }
    }
}

/// An instance with its defaults merged: the winning field per key, and for mapping-valued
/// keys (`vars`, `tags`, ...) the entries merged one level deep.
struct Merged<'a> {
    fields: Vec<Field<'a>>,
    maps: HashMap<&'a str, Vec<Field<'a>>>,
}

impl<'a> Merged<'a> {
    fn get(&self, key: &str) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.key == key)
    }
    fn map(&self, key: &str) -> &[Field<'a>] {
        self.maps.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Merges layers, lowest precedence first (instance_defaults, location, instance).
fn merge<'a>(layers: &[&[Field<'a>]], diag: &mut Diag) -> Merged<'a> {
    let mut m = Merged {
        fields: Vec::new(),
        maps: HashMap::new(),
    };
    for layer in layers {
        for f in layer.iter() {
            let is_map = matches!(f.value.value, Value::Map(_) | Value::Null);
            if MERGED_MAPPINGS.contains(&f.key) && is_map {
                let base = m.maps.remove(f.key).unwrap_or_default();
                m.maps
                    .insert(f.key, overlay(&base, &f.value.fields(diag, &f.path)));
            } else {
                m.maps.remove(f.key);
            }
            m.fields.retain(|g| g.key != f.key);
            m.fields.push(f.clone());
        }
    }
    // TPA lifts these out of `tags` when they are not set on the instance itself.
    if let Some(tags) = m.maps.get_mut("tags") {
        let mut lifted = Vec::new();
        tags.retain(|t| {
            let lift = ["Name", "role", "upstream", "backup"].contains(&t.key);
            if lift {
                lifted.push(t.clone());
            }
            !lift
        });
        for t in lifted {
            if !m.fields.iter().any(|f| f.key == t.key) {
                m.fields.push(t);
            }
        }
    }
    m
}

struct InstanceCtx<'a, 'b> {
    line: usize,
    path: &'b str,
    cluster_vars: &'b [Field<'a>],
}

fn instance(
    m: &Merged<'_>,
    ctx: &InstanceCtx<'_, '_>,
    diag: &mut Diag,
) -> Option<(Instance, InstancePos)> {
    let platform = match m.get("platform") {
        None => Platform::Aws,
        Some(f) => {
            let s = f.value.string(diag, &f.path)?;
            match Platform::parse(&s) {
                Some(p) => p,
                None => {
                    diag.err(
                        f.line,
                        &f.path,
                        format!("unknown platform `{s}`; use docker, bare or aws"),
                    );
                    return None;
                }
            }
        }
    };

    let own_prefix = format!("{}.", ctx.path);
    let mut usable = Vec::new();
    for f in &m.fields {
        if !check_key_name(f, diag) {
            continue;
        }
        if let Some(KeyUse::Only(platforms)) = instance_key(f.key)
            && !platforms.contains(&platform)
        {
            // A default for other platforms (e.g. a docker `image` in instance_defaults on a
            // bare instance) just does not apply; only the instance's own keys are errors.
            if !f.path.starts_with(&own_prefix) {
                continue;
            }
            let names: Vec<&str> = platforms.iter().map(|p| p.as_str()).collect();
            diag.err(
                f.line,
                &f.path,
                format!(
                    "`{}` does not apply to {platform} instances (only to {})",
                    f.key,
                    names.join(", ")
                ),
            );
            continue;
        }
        usable.push(f);
    }
    let get = |k: &str| usable.iter().find(|f| f.key == k).copied();
    let mut pos = InstancePos::default();

    let Some(name_field) = get("Name") else {
        diag.err(ctx.line, ctx.path, "missing required key `Name`");
        return None;
    };
    // The name becomes the host name (and the container name): refused rather than
    // quietly renamed, so that what config.yml says is what exists.
    let name = name_field.value.string(diag, &name_field.path)?;
    let dotted = matches!(platform, Platform::Docker | Platform::Bare);
    if !valid_host_name(&name, dotted) {
        let dots = if dotted { ", `-` and `.`" } else { " and `-`" };
        let hint = suggest_host_name(&name, dotted)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        diag.err(
            name_field.line,
            &name_field.path,
            format!(
                "`{name}` is not a valid host name; use lowercase letters, digits{dots}, \
                 at least two characters, starting and ending with a letter or digit \
                 (RFC 1123){hint}"
            ),
        );
    }
    pos.name = Pos::of(name_field);

    let node = match get("node") {
        None => {
            diag.err(ctx.line, ctx.path, "missing required key `node`");
            None
        }
        Some(f) => match f.value.int::<u32>(diag, &f.path) {
            Some(0) => {
                diag.err(
                    f.line,
                    &f.path,
                    "node numbers start at 1 (repmgr needs a positive node id)",
                );
                None
            }
            Some(n) => {
                pos.node = Some(Pos::of(f));
                Some(n)
            }
            None => None,
        },
    };

    let roles = match get("role") {
        Some(f) => {
            pos.role = Pos::of(f);
            roles(f, diag)
        }
        None => {
            pos.role = Pos {
                line: ctx.line,
                path: ctx.path.to_string(),
            };
            Vec::new()
        }
    };
    let upstream = get("upstream").and_then(|f| {
        pos.upstream = Some(Pos::of(f));
        f.value.string(diag, &f.path)
    });
    let backup = get("backup").map_or_else(Vec::new, |f| {
        pos.backup = Some(Pos::of(f));
        backup(f, diag)
    });
    let location = get("location").and_then(|f| {
        pos.location = Some(Pos::of(f));
        f.value.string(diag, &f.path)
    });
    let ip = |k: &str, diag: &mut Diag| get(k).and_then(|f| ip_address(f, diag));
    let ip_address = ip("ip_address", diag);
    if ip_address.is_some() {
        pos.ip_address = get("ip_address").map(Pos::of);
    }
    let public_ip = ip("public_ip", diag);
    let private_ip = ip("private_ip", diag);
    let string = |k: &str, diag: &mut Diag| get(k).and_then(|f| f.value.string(diag, &f.path));
    let image = string("image", diag);
    if platform == Platform::Docker && get("image").is_none() {
        diag.err(
            ctx.line,
            ctx.path,
            "missing required key `image` (docker instances need an image, e.g. tpa/debian:12)",
        );
    }
    if platform == Platform::Bare
        && ["ip_address", "public_ip", "private_ip"]
            .iter()
            .all(|k| get(k).is_none())
    {
        diag.err(
            ctx.line,
            ctx.path,
            "a bare instance needs `ip_address` (or `public_ip`/`private_ip`) to be reached at",
        );
    }
    let mut aws_volumes = Vec::new();
    let mut bare_mounts = Vec::new();
    let volumes = match get("volumes") {
        None => Vec::new(),
        Some(f) if platform == Platform::Docker => {
            parsed_list(f.value, &f.path, diag, docker::volume)
        }
        Some(f) if platform == Platform::Aws => {
            aws_volumes = aws::volumes(f, diag);
            Vec::new()
        }
        Some(f) => {
            bare_mounts = super::mounts::bare_volumes(f, diag);
            Vec::new()
        }
    };
    let bool_key = |k: &str, diag: &mut Diag| get(k).and_then(|f| f.value.bool(diag, &f.path));
    // A docker key's value and path, for `parsed` and `parsed_list`.
    let docker_key = |k: &str| get(k).map(|f| (f.value, f.path.as_str()));
    let docker = DockerOptions {
        privileged: bool_key("privileged", diag).unwrap_or(false),
        restart_policy: docker_key("restart_policy")
            .and_then(|(n, p)| parsed(n, p, diag, docker::restart_policy)),
        memory: docker_key("memory").and_then(|(n, p)| parsed(n, p, diag, docker::size)),
        shm_size: docker_key("shm_size").and_then(|(n, p)| parsed(n, p, diag, docker::size)),
        env: docker::map(m.map("env"), diag, docker::env_name),
        exposed_ports: docker_key("exposed_ports")
            .map(|(n, p)| parsed_list(n, p, diag, docker::exposed_port)),
        published_ports: docker_key("published_ports").map_or_else(Vec::new, |(n, p)| {
            parsed_list(n, p, diag, docker::published_port)
        }),
        devices: docker_key("devices")
            .map_or_else(Vec::new, |(n, p)| parsed_list(n, p, diag, docker::device)),
        sysctls: docker::map(m.map("sysctls"), diag, docker::sysctl_name),
        cap_add: docker_key("docker_cap_add").map_or_else(Vec::new, |(n, p)| {
            parsed_list(n, p, diag, docker::capability)
        }),
        cap_drop: docker_key("docker_cap_drop").map_or_else(Vec::new, |(n, p)| {
            parsed_list(n, p, diag, docker::capability)
        }),
        security_opts: docker_key("docker_security_opts").map_or_else(Vec::new, |(n, p)| {
            parsed_list(n, p, diag, docker::security_opt)
        }),
    };
    let aws = AwsOptions {
        region: string("region", diag),
        instance_type: string("type", diag),
        subnet: string("subnet", diag),
        az: string("az", diag),
        volumes: aws::effective_volumes(
            &get("default_volumes").map_or_else(Vec::new, |f| aws::volumes(f, diag)),
            &aws_volumes,
        ),
        assign_public_ip: bool_key("assign_public_ip", diag),
    };
    let mounts = super::mounts::checked(
        match platform {
            Platform::Aws => aws.volumes.iter().filter_map(|v| v.mount.clone()).collect(),
            _ => bare_mounts,
        },
        get("volumes").map_or(ctx.line, |f| f.line),
        get("volumes").map_or(ctx.path, |f| f.path.as_str()),
        diag,
    );
    for (key, ok) in [
        (
            "region",
            aws.region.as_deref().is_none_or(aws::valid_region),
        ),
        (
            "type",
            aws.instance_type
                .as_deref()
                .is_none_or(aws::valid_instance_type),
        ),
        (
            "subnet",
            aws.subnet.as_deref().is_none_or(aws::valid_subnet),
        ),
        ("az", aws.az.as_deref().is_none_or(aws::valid_az)),
    ] {
        if let (false, Some(f)) = (ok, get(key)) {
            diag.err(f.line, &f.path, aws::invalid_message(key));
        }
    }
    // Mapping-valued keys that are not mappings get their type error here.
    for k in MERGED_MAPPINGS {
        if let Some(f) = get(k)
            && !matches!(f.value.value, Value::Map(_) | Value::Null)
        {
            f.value.map(diag, &f.path);
        }
    }
    for f in m.map("vars") {
        if super::vars::CLUSTER_ONLY.contains(&f.key) {
            diag.err(
                f.line,
                &f.path,
                format!(
                    "`{}` applies to the whole cluster (the CA issues every agent's certificate under it): \
                     set it in cluster_vars",
                    f.key
                ),
            );
        }
    }
    let var_fields = overlay(ctx.cluster_vars, m.map("vars"));
    pos.postgres_version = var_fields
        .iter()
        .find(|f| f.key == "postgres_version")
        .map(Pos::of);
    let vars = parse_vars(&var_fields, diag);
    data_dir_on_volume(&mounts, &vars, &var_fields, diag);
    // On a backed-up instance's merged vars: cluster_vars may set rsync's settings and the
    // instance the method.
    if !backup.is_empty() {
        super::barman::rsync_only(&vars.barman, &var_fields, diag);
    }

    let inst = Instance {
        name,
        node: node.unwrap_or(0),
        location,
        roles,
        upstream,
        backup,
        platform,
        image,
        ip_address,
        public_ip,
        private_ip,
        ansible_host: string("ansible_host", diag),
        vars,
        tags: fields_map(m.map("tags"), diag),
        volumes,
        mounts,
        provision_only: bool_key("provision_only", diag).unwrap_or(false),
        docker,
        aws,
    };
    Some((inst, pos))
}

/// With a `postgres_data` volume, a `postgres_data_dir` of its own must lie beneath the
/// volume's mountpoint (not at it: the root of a filesystem holds lost+found), or the data
/// would not be on the volume.
fn data_dir_on_volume(mounts: &[Mount], vars: &HostVars, fields: &[Field<'_>], diag: &mut Diag) {
    let volume = mounts
        .iter()
        .find(|m| m.volume_for == Some(VolumeFor::PostgresData));
    let (Some(volume), Some(dir)) = (volume, vars.postgres_data_dir.as_deref()) else {
        return;
    };
    if !dir.starts_with(&format!("{}/", volume.mountpoint)) {
        let f = fields.iter().find(|f| f.key == "postgres_data_dir");
        diag.err(
            f.map_or(0, |f| f.line),
            f.map_or("postgres_data_dir", |f| f.path.as_str()),
            format!(
                "the data directory {dir} is not on the postgres_data volume ({}, mounted at \
                 {}): put it beneath the mountpoint, e.g. {}/data, or leave postgres_data_dir out",
                volume.device, volume.mountpoint, volume.mountpoint
            ),
        );
    }
}

/// What TPA would have renamed `name` to (lowercase, `_` and other characters a host
/// name cannot hold become `-`), when that is a valid host name: the suggestion offered
/// when `name` is refused. Where dots are not allowed, it is the first label (`db1` for
/// `db1.example.com`).
pub(crate) fn suggest_host_name(name: &str, dotted: bool) -> Option<String> {
    let name_part = if dotted {
        name
    } else {
        name.split('.').next().unwrap_or(name)
    };
    let mapped: String = name_part
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            '.' if dotted => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches(|c| c == '-' || c == '.');
    (trimmed != name && valid_host_name(trimmed, dotted)).then(|| trimmed.to_string())
}

/// RFC 1123 host names as TPA takes them: lowercase labels of letters, digits and `-`
/// (not at either end, at most 63 characters), joined by `.` only when `dotted`; TPA also
/// wants at least two characters (`^[a-z0-9][a-z0-9-]*[a-z0-9]$`).
fn valid_host_name(name: &str, dotted: bool) -> bool {
    let label_ok = |label: &str| {
        let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        !label.is_empty()
            && label.len() <= 63
            && label.starts_with(edge)
            && label.ends_with(edge)
            && label.chars().all(|c| edge(c) || c == '-')
    };
    let mut labels = name.split('.');
    name.len() >= 2 && name.len() <= 253 && (dotted || !name.contains('.')) && labels.all(label_ok)
}

fn roles(f: &Field<'_>, diag: &mut Diag) -> Vec<Role> {
    let names: Vec<(String, String, usize)> = match &f.value.value {
        Value::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| (r.to_string(), f.path.clone(), f.line))
            .collect(),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let p = index_path(&f.path, i);
                n.string(diag, &p).map(|s| (s, p, n.line))
            })
            .collect(),
        Value::Null => Vec::new(),
        _ => {
            diag.err(
                f.line,
                &f.path,
                format!(
                    "expected a list of roles or a comma-separated string, found {}",
                    f.value.kind()
                ),
            );
            Vec::new()
        }
    };
    let mut roles = Vec::new();
    for (name, path, line) in names {
        match Role::parse(&name) {
            Some(r) => {
                if !roles.contains(&r) {
                    roles.push(r);
                }
            }
            None if ROLES_NOT_YET.contains(&name.as_str()) => diag.err(
                line,
                &path,
                format!("role `{name}` is a TPA role that tpa does not support yet; remove it"),
            ),
            None => {
                let known = Role::ALL.iter().map(|(_, n)| *n);
                diag.err(line, &path, unknown_key(&name, "role", known));
            }
        }
    }
    let implicit = [Role::Primary, Role::Replica, Role::Witness];
    if roles.iter().any(|r| implicit.contains(r)) && !roles.contains(&Role::Postgres) {
        roles.push(Role::Postgres);
    }
    roles
}

fn backup(f: &Field<'_>, diag: &mut Diag) -> Vec<String> {
    match &f.value.value {
        Value::Seq(_) => f.value.string_list(diag, &f.path),
        Value::Null => Vec::new(),
        _ => f
            .value
            .string(diag, &f.path)
            .map(|s| vec![s])
            .unwrap_or_default(),
    }
}

fn ip_address(f: &Field<'_>, diag: &mut Diag) -> Option<IpAddr> {
    let s = f.value.string(diag, &f.path)?;
    match s.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            diag.err(f.line, &f.path, format!("`{s}` is not an IP address"));
            None
        }
    }
}

fn fields_map(fields: &[Field<'_>], diag: &mut Diag) -> BTreeMap<String, String> {
    fields
        .iter()
        .filter_map(|f| Some((f.key.to_string(), f.value.scalar_text(diag, &f.path)?)))
        .collect()
}

fn docker_networks(f: &Field<'_>, diag: &mut Diag) -> Vec<DockerNetwork> {
    const KEYS: &[&str] = &[
        "name",
        "ipam_config",
        "driver_options",
        "enable_ipv6",
        "labels",
    ];
    let mut out = Vec::new();
    for (i, item) in f.value.seq(diag, &f.path).unwrap_or(&[]).iter().enumerate() {
        let path = index_path(&f.path, i);
        let mut net = DockerNetwork {
            name: String::new(),
            subnets: Vec::new(),
            driver_options: BTreeMap::new(),
            enable_ipv6: false,
            labels: BTreeMap::new(),
        };
        let mut name = None;
        for g in item.fields(diag, &path) {
            let (v, p) = (g.value, g.path.as_str());
            match g.key {
                "name" => name = v.string(diag, p),
                "ipam_config" => net.subnets = ipam_config(v, p, diag),
                "driver_options" => net.driver_options = v.string_map(diag, p),
                "enable_ipv6" => net.enable_ipv6 = v.bool(diag, p).unwrap_or(false),
                "labels" => net.labels = v.string_map(diag, p),
                other => diag.err(
                    g.line,
                    p,
                    unknown_key(other, "docker_networks key", KEYS.iter().copied()),
                ),
            }
        }
        match name {
            Some(n) => {
                net.name = n;
                out.push(net);
            }
            None => diag.err(item.line, &path, "missing required key `name`"),
        }
    }
    out
}

fn ipam_config(n: &Node, p: &str, diag: &mut Diag) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, item) in n.seq(diag, p).unwrap_or(&[]).iter().enumerate() {
        let path = index_path(p, i);
        let mut subnet = None;
        for g in item.fields(diag, &path) {
            match g.key {
                "subnet" => subnet = Some(g),
                "gateway" | "iprange" | "aux_addresses" => {
                    diag.err(g.line, &g.path, unsupported(g.key))
                }
                other => diag.err(
                    g.line,
                    &g.path,
                    unknown_key(other, "ipam_config key", ["subnet"]),
                ),
            }
        }
        let Some(g) = subnet else {
            diag.err(item.line, &path, "missing required key `subnet`");
            continue;
        };
        let Some(s) = g.value.string(diag, &g.path) else {
            continue;
        };
        match s.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => diag.err(
                g.line,
                &g.path,
                format!("`{s}` has host bits set; did you mean `{}`?", net.trunc()),
            ),
            Ok(net) => out.push(net),
            Err(_) => diag.err(
                g.line,
                &g.path,
                format!("`{s}` is not a subnet in CIDR form (e.g. 10.33.0.0/28)"),
            ),
        }
    }
    out
}

/// `agent_cert_renew_before` must be shorter than `agent_cert_lifetime` (each set or at its default), or
/// every deploy would renew every certificate.
fn cert_policy_check(vars: &super::vars::Vars, fields: &[Field<'_>], diag: &mut Diag) {
    let policy = super::model::cert_policy(vars);
    if policy.renew_before < policy.lifetime {
        return;
    }
    let text = |d: std::time::Duration, set: bool| {
        let shown = tpa_common::health::age_text(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if set {
            shown
        } else {
            format!("{shown}, the default")
        }
    };
    let message = format!(
        "agent_cert_renew_before ({}) must be shorter than agent_cert_lifetime ({}), or every deploy \
         would renew every certificate: set both, e.g. agent_cert_lifetime: 365d and \
         agent_cert_renew_before: 30d",
        text(policy.renew_before, vars.agent_cert_renew_before.is_some()),
        text(policy.lifetime, vars.agent_cert_lifetime.is_some()),
    );
    let at = fields
        .iter()
        .find(|f| f.key == "agent_cert_renew_before")
        .or_else(|| fields.iter().find(|f| f.key == "agent_cert_lifetime"));
    match at {
        Some(f) => diag.err(f.line, &f.path, message),
        None => diag.err(1, "cluster_vars", message),
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::INSTANCE_KEYS;
    use super::*;

    #[test]
    fn host_names() {
        assert!(valid_host_name("ulb", false));
        assert!(valid_host_name("a1-b2", false));
        assert!(!valid_host_name("a", false));
        assert!(!valid_host_name("-ab", false));
        assert!(!valid_host_name("ab-", false));
        assert!(!valid_host_name("db.example.com", false));
        assert!(valid_host_name("db.example.com", true));
        assert!(!valid_host_name("db..com", true));
        assert!(!valid_host_name("db.-x.com", true));
        assert!(!valid_host_name("ULB", false));
        assert!(!valid_host_name("ulb_host", false));
        assert!(valid_host_name(&"a".repeat(63), false));
        assert!(!valid_host_name(&"a".repeat(64), false));
        assert_eq!(
            suggest_host_name("ULB_host", false).as_deref(),
            Some("ulb-host")
        );
        assert_eq!(suggest_host_name("a b", false).as_deref(), Some("a-b"));
        assert_eq!(
            suggest_host_name("Db1.Example.com", true).as_deref(),
            Some("db1.example.com")
        );
        assert_eq!(
            suggest_host_name("Db1.Example.com", false).as_deref(),
            Some("db1")
        );
        assert_eq!(suggest_host_name("-x", false), None);
    }

    #[test]
    fn every_instance_key_is_listed_once() {
        let mut names: Vec<&str> = INSTANCE_KEYS.iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
