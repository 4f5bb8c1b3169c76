//! The AWS settings of config.yml: top-level `ec2_ami`, `ec2_vpc`, `ec2_instance_reachability`
//! and `cluster_rules`, and the instances' EBS `volumes` / `default_volumes`. Values are checked
//! here (names, CIDRs, ports, sizes) so the aws platform only ever sends validated values.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use super::error::{Diag, unknown_key};
use super::yaml::{Field, Node, index_path};

/// The cluster-wide AWS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsCluster {
    /// `ec2_ami`: the AMI to look up by name (and owner) when an instance gives no `image`.
    pub ami: Option<AmiFilter>,
    /// `ec2_vpc`: per region, the VPC to use (found by `Name`, created with `cidr` if absent).
    pub vpcs: BTreeMap<String, VpcSpec>,
    /// `ec2_instance_reachability`: `public` (default: hosts are reached at their public
    /// address) or `private`.
    pub reachability: Reachability,
    /// `cluster_rules`: the security group's inbound rules; `None` means TPA's default (SSH
    /// from anywhere, all TCP inside the cluster's subnets).
    pub rules: Option<Vec<Rule>>,
}

/// `ec2_ami`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiFilter {
    /// `Name`: an AMI name, `*` wildcards allowed; the newest match wins.
    pub name: String,
    /// `Owner`: the owning account id (or alias such as `amazon`).
    pub owner: Option<String>,
}

/// One `ec2_vpc` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcSpec {
    /// `Name` tag of the VPC.
    pub name: String,
    /// `cidr`: needed to create the VPC when no VPC has that name.
    pub cidr: Option<Ipv4Net>,
}

/// `ec2_instance_reachability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reachability {
    #[default]
    Public,
    Private,
}

/// One `cluster_rules` entry: `proto` traffic on `ports` from `cidr_ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub proto: String,
    pub cidr: Ipv4Net,
    /// Inclusive port ranges.
    pub ports: Vec<(u16, u16)>,
}

/// One EBS volume of an instance (`volumes` / `default_volumes` entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `device_name`: `/dev/sdX`, `/dev/xvdX`, or `root` (the AMI's root device).
    pub device_name: String,
    /// `volume_type` (default gp2, as TPA).
    pub volume_type: String,
    /// `volume_size` in GiB.
    pub size_gb: u32,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    /// `encrypted` (default true for what configure writes; absent means false here as in EC2).
    pub encrypted: bool,
    /// `delete_on_termination` (default true).
    pub delete_on_termination: bool,
    /// The filesystem deploy makes and mounts on it (its `vars`), if any.
    pub mount: Option<super::mounts::Mount>,
}

const VOLUME_KEYS: &[&str] = &[
    "device_name",
    "volume_type",
    "volume_size",
    "iops",
    "throughput",
    "encrypted",
    "delete_on_termination",
    "vars",
];
/// TPA volume keys that need more than a block device mapping.
const VOLUME_KEYS_NOT_YET: &[&str] = &[
    "attach_existing",
    "snapshot_id",
    "raid_device",
    "raid_units",
    "raid_level",
    "ephemeral",
];
const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];

pub(crate) fn ami(f: &Field<'_>, diag: &mut Diag) -> Option<AmiFilter> {
    let mut name = None;
    let mut owner = None;
    for g in f.value.fields(diag, &f.path) {
        match g.key {
            "Name" => name = aws_value(&g, diag),
            "Owner" => owner = aws_value(&g, diag),
            other => diag.err(
                g.line,
                &g.path,
                unknown_key(other, "ec2_ami key", ["Name", "Owner"]),
            ),
        }
    }
    match name {
        Some(name) => Some(AmiFilter { name, owner }),
        None => {
            diag.err(
                f.line,
                &f.path,
                "missing required key `Name` (the AMI name to look up)",
            );
            None
        }
    }
}

pub(crate) fn vpcs(f: &Field<'_>, diag: &mut Diag) -> BTreeMap<String, VpcSpec> {
    let mut out = BTreeMap::new();
    for region in f.value.fields(diag, &f.path) {
        if !valid_region(region.key) {
            diag.err(
                region.line,
                &region.path,
                format!(
                    "`{}` is not an AWS region name (e.g. eu-west-1)",
                    region.key
                ),
            );
            continue;
        }
        let mut name = None;
        let mut cidr = None;
        for g in region.value.fields(diag, &region.path) {
            match g.key {
                "Name" => name = aws_value(&g, diag),
                "cidr" => {
                    cidr = g
                        .value
                        .string(diag, &g.path)
                        .and_then(|s| net(&s, &g, diag))
                }
                other => diag.err(
                    g.line,
                    &g.path,
                    unknown_key(other, "ec2_vpc key", ["Name", "cidr"]),
                ),
            }
        }
        match name {
            Some(name) => {
                out.insert(region.key.to_string(), VpcSpec { name, cidr });
            }
            None => diag.err(
                region.line,
                &region.path,
                "missing required key `Name` (the VPC's Name tag)",
            ),
        }
    }
    out
}

pub(crate) fn reachability(f: &Field<'_>, diag: &mut Diag) -> Reachability {
    match f.value.string(diag, &f.path).as_deref() {
        Some("private") => Reachability::Private,
        Some("public") | None => Reachability::Public,
        Some(other) => {
            diag.err(
                f.line,
                &f.path,
                format!("unknown ec2_instance_reachability `{other}`; use public or private"),
            );
            Reachability::Public
        }
    }
}

pub(crate) fn rules(f: &Field<'_>, diag: &mut Diag) -> Vec<Rule> {
    let mut out = Vec::new();
    for (i, item) in f.value.seq(diag, &f.path).unwrap_or(&[]).iter().enumerate() {
        let path = index_path(&f.path, i);
        let (mut proto, mut cidr, mut ports) = (None, None, Vec::new());
        for g in item.fields(diag, &path) {
            match g.key {
                "proto" => {
                    proto = g.value.string(diag, &g.path).filter(|p| {
                        let ok = ["tcp", "udp", "icmp"].contains(&p.as_str());
                        if !ok {
                            diag.err(
                                g.line,
                                &g.path,
                                format!("unknown proto `{p}`; use tcp, udp or icmp"),
                            );
                        }
                        ok
                    })
                }
                "cidr_ip" => {
                    cidr = g
                        .value
                        .string(diag, &g.path)
                        .and_then(|s| net(&s, &g, diag))
                }
                "ports" => ports = port_ranges(g.value, &g.path, diag),
                other => diag.err(
                    g.line,
                    &g.path,
                    unknown_key(other, "cluster_rules key", ["proto", "cidr_ip", "ports"]),
                ),
            }
        }
        match (proto, cidr) {
            (Some(proto), Some(cidr)) if !ports.is_empty() => out.push(Rule { proto, cidr, ports }),
            _ => diag.err(
                item.line,
                &path,
                "a rule needs `proto`, `cidr_ip` and `ports` (e.g. {proto: tcp, cidr_ip: 0.0.0.0/0, ports: [22]})",
            ),
        }
    }
    out
}

fn port_ranges(n: &Node, path: &str, diag: &mut Diag) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for (i, item) in n.seq(diag, path).unwrap_or(&[]).iter().enumerate() {
        let p = index_path(path, i);
        let Some(text) = item.scalar_text(diag, &p) else {
            continue;
        };
        let (from, to) = text.split_once('-').unwrap_or((&text, &text));
        match (from.trim().parse::<u16>(), to.trim().parse::<u16>()) {
            (Ok(a), Ok(b)) if a <= b => out.push((a, b)),
            _ => diag.err(
                item.line,
                &p,
                format!("`{text}` is not a port or a range of ports (e.g. 22 or 0-65535)"),
            ),
        }
    }
    out
}

/// Reads a `volumes` / `default_volumes` list on an aws instance.
pub(crate) fn volumes(f: &Field<'_>, diag: &mut Diag) -> Vec<Volume> {
    let mut out: Vec<Volume> = Vec::new();
    for (i, item) in f.value.seq(diag, &f.path).unwrap_or(&[]).iter().enumerate() {
        let path = index_path(&f.path, i);
        let mut v = Volume {
            device_name: String::new(),
            volume_type: "gp2".into(),
            size_gb: 0,
            iops: None,
            throughput: None,
            encrypted: false,
            delete_on_termination: true,
            mount: None,
        };
        let mut vars_line = item.line;
        for g in item.fields(diag, &path) {
            let (n, p) = (g.value, g.path.as_str());
            match g.key {
                "device_name" => {
                    if let Some(d) = n.string(diag, p) {
                        if valid_device(&d) {
                            v.device_name = d;
                        } else {
                            diag.err(
                                g.line,
                                p,
                                format!(
                                    "`{d}` is not a device name; use root, /dev/sdX or /dev/xvdX"
                                ),
                            );
                        }
                    }
                }
                "volume_type" => {
                    if let Some(t) = n.string(diag, p) {
                        if VOLUME_TYPES.contains(&t.as_str()) {
                            v.volume_type = t;
                        } else {
                            diag.err(
                                g.line,
                                p,
                                unknown_key(&t, "volume_type", VOLUME_TYPES.iter().copied()),
                            );
                        }
                    }
                }
                "volume_size" => match n.int::<u32>(diag, p) {
                    Some(0) => diag.err(g.line, p, "a volume needs at least 1 GiB"),
                    Some(s) => v.size_gb = s,
                    None => {}
                },
                "iops" => v.iops = n.int(diag, p),
                "throughput" => v.throughput = n.int(diag, p),
                "encrypted" => v.encrypted = n.bool(diag, p).unwrap_or(false),
                "delete_on_termination" => {
                    v.delete_on_termination = n.bool(diag, p).unwrap_or(true)
                }
                // The filesystem, for deploy (config::mounts).
                "vars" => {
                    vars_line = g.line;
                    v.mount = super::mounts::vars(&g, diag);
                }
                k if VOLUME_KEYS_NOT_YET.contains(&k) => {
                    diag.err(g.line, p, super::error::unsupported(k))
                }
                other => diag.err(
                    g.line,
                    p,
                    unknown_key(other, "volume key", VOLUME_KEYS.iter().copied()),
                ),
            }
        }
        if v.device_name.is_empty() {
            diag.err(item.line, &path, "missing required key `device_name`");
            continue;
        }
        if v.size_gb == 0 && v.device_name != "root" {
            diag.err(item.line, &path, "missing required key `volume_size` (GiB)");
            continue;
        }
        if v.device_name == "root" && v.mount.is_some() {
            diag.err(
                vars_line,
                &path,
                "the root volume holds the host's own filesystem; mount a volume of its own \
                 (e.g. /dev/sdf) instead",
            );
            v.mount = None;
        }
        if let Some(m) = &mut v.mount {
            m.device = v.device_name.clone();
        }
        if out.iter().any(|o| o.device_name == v.device_name) {
            diag.err(
                item.line,
                &path,
                format!("device {} is listed twice", v.device_name),
            );
            continue;
        }
        out.push(v);
    }
    out
}

/// `default_volumes` overlaid by the instance's own `volumes` (same `device_name` wins).
pub fn effective_volumes(defaults: &[Volume], own: &[Volume]) -> Vec<Volume> {
    let mut out: Vec<Volume> = defaults
        .iter()
        .filter(|d| !own.iter().any(|o| o.device_name == d.device_name))
        .cloned()
        .collect();
    out.extend(own.iter().cloned());
    out
}

fn valid_device(d: &str) -> bool {
    if d == "root" {
        return true;
    }
    let rest = d
        .strip_prefix("/dev/sd")
        .or_else(|| d.strip_prefix("/dev/xvd"));
    rest.is_some_and(|r| (1..=2).contains(&r.len()) && r.chars().all(|c| c.is_ascii_lowercase()))
}

/// `eu-west-1`, `us-gov-west-1`: lowercase words and a number.
pub(crate) fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
}

/// `t3.micro`, `m7g.2xlarge`: lowercase letters, digits, `.` and `-`.
pub(crate) fn valid_instance_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.contains('.')
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
}

/// An IPv4 subnet in CIDR form without host bits.
pub(crate) fn valid_subnet(s: &str) -> bool {
    s.parse::<Ipv4Net>().is_ok_and(|n| n.trunc() == n)
}

/// `eu-west-1a`: a region and a zone letter (or a local-zone suffix).
pub(crate) fn valid_az(az: &str) -> bool {
    az.char_indices().any(|(i, _)| {
        let rest = &az[i..];
        valid_region(&az[..i])
            && rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '-')
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    })
}

pub(crate) fn invalid_message(key: &str) -> &'static str {
    match key {
        "region" => "not an AWS region name (e.g. eu-west-1)",
        "type" => "not an EC2 instance type (e.g. t3.micro)",
        "subnet" => "not an IPv4 subnet in CIDR form without host bits (e.g. 10.33.0.0/28)",
        _ => "not an availability zone (e.g. eu-west-1a)",
    }
}

/// A name or id sent to EC2 as a tag value or filter: printable, no control characters,
/// at most 255 characters (EC2's tag value limit).
fn aws_value(g: &Field<'_>, diag: &mut Diag) -> Option<String> {
    let s = g.value.scalar_text(diag, &g.path)?;
    if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
        diag.err(
            g.line,
            &g.path,
            "must be 1 to 255 characters without control characters",
        );
        return None;
    }
    Some(s)
}

fn net(s: &str, g: &Field<'_>, diag: &mut Diag) -> Option<Ipv4Net> {
    match s.parse::<Ipv4Net>() {
        Ok(n) if n.trunc() == n => Some(n),
        Ok(n) => {
            diag.err(
                g.line,
                &g.path,
                format!("`{s}` has host bits set; did you mean `{}`?", n.trunc()),
            );
            None
        }
        Err(_) => {
            diag.err(
                g.line,
                &g.path,
                format!("`{s}` is not an IPv4 network in CIDR form (e.g. 10.33.0.0/16)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_devices() {
        assert!(valid_region("eu-west-1"));
        assert!(valid_region("us-gov-west-1"));
        assert!(!valid_region("eu-west"));
        assert!(!valid_region("EU-west-1"));
        assert!(!valid_region("eu-west-1; rm"));
        assert!(valid_device("/dev/sdf"));
        assert!(valid_device("/dev/xvdba"));
        assert!(valid_device("root"));
        assert!(!valid_device("/dev/sdf1"));
        assert!(!valid_device("/dev/../sda"));
        assert!(valid_az("eu-west-1a"));
        assert!(valid_az("us-west-2-lax-1a"));
        assert!(!valid_az("eu-west-1"));
        assert!(!valid_az("eu-west-1a b"));
        assert!(valid_instance_type("t3.micro"));
        assert!(!valid_instance_type("t3 micro"));
        assert!(valid_subnet("10.33.0.0/28"));
        assert!(!valid_subnet("10.33.0.1/28"));
    }

    #[test]
    fn instance_volumes_override_defaults_by_device() {
        let v = |d: &str, s| Volume {
            device_name: d.into(),
            volume_type: "gp2".into(),
            size_gb: s,
            iops: None,
            throughput: None,
            encrypted: true,
            delete_on_termination: true,
            mount: None,
        };
        let merged = effective_volumes(&[v("root", 16), v("/dev/sdf", 16)], &[v("/dev/sdf", 32)]);
        assert_eq!(merged, vec![v("root", 16), v("/dev/sdf", 32)]);
    }
}
