//! M1 layout: which nodes exist, in which location, with which roles, streaming from where.
//! TPA's rules (reference §3.2), independent of names, addresses and platform.

use anyhow::{bail, ensure};

/// A failover manager configure can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Repmgr,
    Patroni,
}

impl Manager {
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Repmgr => "repmgr",
            Manager::Patroni => "patroni",
        }
    }
}

/// What the layout depends on.
#[derive(Debug, Clone)]
pub struct LayoutOptions {
    pub manager: Manager,
    /// Every location, in the order given (`--location-names`).
    pub locations: Vec<String>,
    pub primary_location: Option<String>,
    pub data_nodes_per_location: u32,
    pub witness_only_location: Option<String>,
    pub single_node_location: Option<String>,
}

/// One planned instance; `upstream`/`backup` are indexes into the node list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node: u32,
    pub location: String,
    pub roles: Vec<&'static str>,
    pub upstream: Option<usize>,
    pub backup: Option<usize>,
    /// `vars.etcd_location` (etcd nodes).
    pub etcd_location: Option<String>,
}

/// The planned cluster.
#[derive(Debug, Clone)]
pub struct Layout {
    pub primary_location: String,
    pub nodes: Vec<Node>,
}

/// Location names become YAML keys, Docker labels and directory-free identifiers: keep them
/// plain.
pub fn check_location_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    ensure!(
        valid,
        "location name `{name}`: use letters, digits, `_` and `-` (at most 63)"
    );
    Ok(())
}

/// Plans the M1 nodes, or says which option combination TPA does not allow.
pub fn plan(o: &LayoutOptions) -> anyhow::Result<Layout> {
    ensure!(
        !o.locations.is_empty(),
        "--location-names: give at least one location"
    );
    for (i, l) in o.locations.iter().enumerate() {
        check_location_name(l)?;
        ensure!(
            !o.locations[..i].contains(l),
            "--location-names: `{l}` is given twice"
        );
    }
    ensure!(
        (1..=20).contains(&o.data_nodes_per_location),
        "--data-nodes-per-location must be between 1 and 20, not {}",
        o.data_nodes_per_location
    );
    for (flag, value) in [
        ("--primary-location", &o.primary_location),
        ("--witness-only-location", &o.witness_only_location),
        ("--single-node-location", &o.single_node_location),
    ] {
        if let Some(l) = value {
            ensure!(
                o.locations.contains(l),
                "{flag} {l}: not one of --location-names ({})",
                o.locations.join(", ")
            );
        }
    }
    if o.witness_only_location.is_some() && o.single_node_location.is_some() {
        bail!("--witness-only-location and --single-node-location cannot be used together");
    }
    if o.manager == Manager::Patroni {
        ensure!(
            o.witness_only_location.is_none(),
            "--witness-only-location: a witness is a repmgr node; Patroni clusters have none"
        );
        ensure!(
            o.locations.len() == 1,
            "--failover-manager patroni: M1 with Patroni has a single location, not {}",
            o.locations.len()
        );
    }
    let special = |l: &String| {
        Some(l) == o.witness_only_location.as_ref() || Some(l) == o.single_node_location.as_ref()
    };
    let active: Vec<&String> = o.locations.iter().filter(|l| !special(l)).collect();
    ensure!(
        !active.is_empty(),
        "no location is left for data nodes: the witness-only or single-node location is the only one"
    );
    if o.witness_only_location.is_some() {
        ensure!(
            active.len() >= 2,
            "--witness-only-location needs at least two other locations with data nodes"
        );
    }
    let primary_location = match &o.primary_location {
        Some(l) => {
            ensure!(
                !special(l),
                "--primary-location {l}: it is the witness-only or single-node location"
            );
            l.clone()
        }
        None => active[0].clone(),
    };
    let witness_on_barman = o.manager != Manager::Patroni
        && o.single_node_location.is_none()
        && o.witness_only_location.is_none()
        && (active.len() == 2
            || (active.len() == 1 && o.data_nodes_per_location.is_multiple_of(2)));

    let mut nodes: Vec<Node> = Vec::new();
    let mut primary = None;
    let mut barman = None;
    let push = |nodes: &mut Vec<Node>, location: &str, roles: Vec<&'static str>| {
        nodes.push(Node {
            node: nodes.len() as u32 + 1,
            location: location.to_string(),
            roles,
            upstream: None,
            backup: None,
            etcd_location: None,
        });
        nodes.len() - 1
    };
    // The primary location first, so the primary is node 1 and the barman node follows it.
    let mut ordered: Vec<&String> = vec![&primary_location];
    ordered.extend(active.iter().copied().filter(|l| **l != primary_location));
    for location in ordered {
        let mut first = None;
        for _ in 0..o.data_nodes_per_location {
            let i = if location == &primary_location && primary.is_none() {
                let i = push(&mut nodes, location, vec!["primary"]);
                primary = Some(i);
                i
            } else {
                let i = push(&mut nodes, location, vec!["replica"]);
                // In the primary location every replica streams from the primary; elsewhere
                // the first node does, and the rest cascade from it.
                nodes[i].upstream = if location == &primary_location {
                    primary
                } else {
                    first.or(primary)
                };
                i
            };
            first.get_or_insert(i);
        }
        if location == &primary_location {
            let mut roles = vec!["barman", "log-server"];
            if witness_on_barman {
                roles.push("witness");
            }
            let i = push(&mut nodes, location, roles);
            if witness_on_barman {
                nodes[i].upstream = primary;
            }
            barman = Some(i);
        }
        if o.manager == Manager::Patroni {
            for _ in 0..3 {
                let i = push(&mut nodes, location, vec!["etcd"]);
                nodes[i].etcd_location = Some(primary_location.clone());
            }
        }
    }
    if let Some(l) = &o.single_node_location {
        let i = push(&mut nodes, l, vec!["replica"]);
        nodes[i].upstream = primary;
    }
    if let Some(l) = &o.witness_only_location {
        let i = push(&mut nodes, l, vec!["witness"]);
        nodes[i].upstream = primary;
    }
    if let Some(p) = primary {
        nodes[p].backup = barman;
    }
    Ok(Layout {
        primary_location,
        nodes,
    })
}
