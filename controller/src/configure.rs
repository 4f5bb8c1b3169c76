//! `configure`: the config.yml of a new M1 cluster from a few options, as `tpaexec configure`
//! writes it. Pure: [`layout`] plans the nodes, [`writer`] renders the text; the command
//! (`commands::configure`) reads files, picks names and writes the directory.

pub mod layout;
pub mod writer;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use anyhow::{Context, bail, ensure};
use ipnet::Ipv4Net;

use crate::config::Platform;
use layout::{Layout, LayoutOptions, Manager};

/// Everything the generated config.yml depends on, already checked.
#[derive(Debug, Clone)]
pub struct Options {
    pub cluster_name: String,
    pub postgres_flavour: String,
    pub postgres_version: String,
    pub manager: Manager,
    pub platform: Platform,
    /// Docker image, or the AMI name pattern on AWS.
    pub image: String,
    pub layout: LayoutOptions,
    /// `--network`: pins the Docker subnet and addresses; the AWS VPC's CIDR.
    pub network: Option<Ipv4Net>,
    pub owner: Option<String>,
    pub use_local_repo_only: bool,
    pub region: String,
    pub instance_type: String,
    pub subnet: Option<Ipv4Net>,
    /// The login user (`vars.ansible_user`).
    pub ansible_user: Option<String>,
}

impl Options {
    pub fn ansible_user(&self) -> String {
        self.ansible_user
            .clone()
            .unwrap_or_else(|| match self.platform {
                Platform::Aws => "admin".into(),
                _ => "root".into(),
            })
    }
}

/// A host name, and the addresses `--hostnames-from` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: String,
    /// One address: `ip_address`; with `private_ip`: `public_ip`.
    pub ip: Option<IpAddr>,
    pub private_ip: Option<IpAddr>,
}

/// TPA's rule for instance names: lower-case letters, digits and inner `-`, at most 63.
pub fn check_host_name(name: &str) -> anyhow::Result<()> {
    let b = name.as_bytes();
    let valid = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    ensure!(
        valid,
        "host name `{name}`: use lower-case letters, digits and `-` (not first or last), at most 63"
    );
    Ok(())
}

/// Reads `--hostnames-from` text: one host a line, `name [ip [private_ip]]`; `#` comments.
pub fn parse_hostnames(text: &str, file: &str) -> anyhow::Result<Vec<HostEntry>> {
    let mut out: Vec<HostEntry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{file}:{}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            words.len() <= 3,
            "{}: expected `name [ip [private_ip]]`, found {} words",
            at(),
            words.len()
        );
        let name = words[0].to_ascii_lowercase().replace('_', "-");
        check_host_name(&name).with_context(at)?;
        ensure!(
            !out.iter().any(|h| h.name == name),
            "{}: host name `{name}` is listed twice",
            at()
        );
        let ip = |w: &str| -> anyhow::Result<IpAddr> {
            w.parse()
                .with_context(|| format!("{}: `{w}` is not an IP address", at()))
        };
        out.push(HostEntry {
            name,
            ip: words.get(1).map(|w| ip(w)).transpose()?,
            private_ip: words.get(2).map(|w| ip(w)).transpose()?,
        });
    }
    Ok(out)
}

/// Names for `count` hosts: the first `count` of `candidates` (already filtered and shuffled),
/// prefixed with the cluster name when asked.
pub fn pick_hosts(
    candidates: Vec<HostEntry>,
    count: usize,
    prefix: Option<&str>,
    source: &str,
) -> anyhow::Result<Vec<HostEntry>> {
    ensure!(
        candidates.len() >= count,
        "{source} gives {} host names; this layout needs {count}",
        candidates.len()
    );
    candidates
        .into_iter()
        .take(count)
        .map(|mut h| {
            if let Some(p) = prefix {
                h.name = format!("{}-{}", p.to_ascii_lowercase().replace('_', "-"), h.name);
                check_host_name(&h.name)?;
            }
            Ok(h)
        })
        .collect()
}

/// The layout and the config.yml text.
pub fn generate(
    o: &Options,
    hosts: impl FnOnce(usize) -> anyhow::Result<Vec<HostEntry>>,
    command: &str,
) -> anyhow::Result<(Layout, String)> {
    let layout = layout::plan(&o.layout)?;
    let hosts = hosts(layout.nodes.len())?;
    if hosts.len() != layout.nodes.len() {
        bail!(
            "{} host names for {} hosts",
            hosts.len(),
            layout.nodes.len()
        );
    }
    if o.platform == Platform::Docker
        && let Some(net) = o.network
    {
        ensure!(
            net.hosts().count() > layout.nodes.len() + 1,
            "--network {net} is too small for {} hosts and the gateway",
            layout.nodes.len()
        );
    }
    let text = writer::render(o, &layout, &hosts, command);
    Ok((layout, text))
}

/// Built-in host names (our own list, short and distinct): picked at random unless
/// `--hostnames-from` gives names.
#[rustfmt::skip]
pub const HOSTNAMES: &[&str] = &[
    "alder", "amber", "anvil", "aspen", "aster", "badger", "basil", "beacon", "birch", "bison",
    "bramble", "brook", "cactus", "canyon", "cedar", "cinder", "clover", "cobalt", "comet",
    "coral", "cricket", "cypress", "dahlia", "delta", "dune", "ember", "falcon", "fennel",
    "fern", "fjord", "flint", "garnet", "geyser", "ginger", "glacier", "granite", "hazel",
    "heron", "hickory", "indigo", "iris", "jasper", "juniper", "kestrel", "lagoon", "larch",
    "lark", "laurel", "lilac", "linden", "lotus", "lynx", "magpie", "maple", "marble",
    "meadow", "mesa", "mica", "mink", "moss", "nectar", "nutmeg", "oak", "onyx", "orchid",
    "osprey", "otter", "pebble", "pepper", "pine", "plover", "poplar", "quail", "quartz",
    "raven", "reed", "ridge", "robin", "rowan", "saffron", "sage", "sequoia", "sierra",
    "slate", "sorrel", "sparrow", "spruce", "summit", "tamarack", "thistle", "thyme",
    "topaz", "tundra", "umber", "valley", "willow", "wren", "yarrow", "yew", "zinnia",
];
