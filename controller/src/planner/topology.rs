//! Which host is the primary and whom every other Postgres host follows, decided from live
//! state first: the primary is the host whose Postgres runs out of recovery, and config.yml's
//! `role: [primary]` only gives the first assignment, while no host runs Postgres as a
//! primary yet. After a failover or switchover the next deploy follows the cluster instead of
//! breaking it (TPA does the same). Pure: it reads facts, it asks nobody.

use std::collections::BTreeMap;

use tpa_common::facts::{Facts, PostgresFacts};

use crate::config::{Cluster, Instance, Role};
use crate::inventory::Inventory;

/// What a Postgres host is in the cluster, as the deploy treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresRole {
    Primary,
    Replica,
    /// A repmgr witness: its own Postgres, never a primary candidate.
    Witness,
}

impl PostgresRole {
    /// The config.yml word for the role.
    pub fn as_str(self) -> &'static str {
        match self {
            PostgresRole::Primary => "primary",
            PostgresRole::Replica => "replica",
            PostgresRole::Witness => "witness",
        }
    }
}

/// One Postgres host of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub role: PostgresRole,
    /// The host it streams from: live when it streams now, else config.yml's `upstream`, else
    /// (a former primary) the primary. None for the primary.
    pub upstream: Option<String>,
    /// A former primary that came back after another host was promoted: it still runs out of
    /// recovery, and the deploy rejoins it as a replica.
    pub former_primary: bool,
}

/// The cluster's replication topology, as this deploy treats it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every deployed Postgres host (primary, replica, witness), by name.
    pub members: BTreeMap<String, Member>,
    /// Where live state overrode config.yml, one sentence each, for the deploy log.
    pub changes: Vec<String>,
}

impl Topology {
    /// The primary, if the deploy has one.
    pub fn primary(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|(_, m)| m.role == PostgresRole::Primary)
            .map(|(name, _)| name.as_str())
    }

    pub fn is_primary(&self, host: &str) -> bool {
        self.role(host) == Some(PostgresRole::Primary)
    }

    pub fn role(&self, host: &str) -> Option<PostgresRole> {
        self.members.get(host).map(|m| m.role)
    }

    pub fn upstream(&self, host: &str) -> Option<&str> {
        self.members.get(host)?.upstream.as_deref()
    }

    pub fn is_former_primary(&self, host: &str) -> bool {
        self.members.get(host).is_some_and(|m| m.former_primary)
    }
}

/// Why live state does not give one primary; each says which hosts and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "more than one live primary ({}): each runs Postgres out of recovery \
         (pg_is_in_recovery() is false), and tpa will not choose between them; keep the one that should be the \
         primary, stop Postgres on the others (`systemctl stop postgres`) and rebuild them as \
         replicas, then deploy again",
        hosts.join(", ")
    )]
    SplitBrain { hosts: Vec<String> },
    #[error(
        "{host} runs a live primary Postgres in {data_dir}, but config.yml does not list it as a \
         Postgres host (its roles: [{roles}]); make it the primary or a replica in config.yml, \
         or stop that Postgres, then deploy again"
    )]
    UnknownPrimary {
        host: String,
        data_dir: String,
        roles: String,
    },
    #[error(
        "{host}: Postgres runs in {data_dir}, but its agent could not ask it whether it is in \
         recovery (psql as its owner over the local socket failed), so tpa cannot tell which \
         host is the primary; make it accept local connections (or wait until it has started) \
         and deploy again"
    )]
    RecoveryUnknown { host: String, data_dir: String },
    #[error(
        "no live primary: {host}, config.yml's primary, runs as a standby (in recovery), and no \
         other host runs Postgres out of recovery; promote the host that should be the primary \
         (e.g. `repmgr standby promote` on it) or start it, then deploy again"
    )]
    PrimaryInRecovery { host: String },
}

/// The topology of the deployed hosts (those with `facts`): live state first, config.yml for
/// what live state does not say.
pub fn resolve(
    cluster: &Cluster,
    inventory: &Inventory,
    facts: &BTreeMap<String, Facts>,
) -> Result<Topology, TopologyError> {
    let deployed: Vec<(&Instance, Option<&PostgresFacts>)> = cluster
        .instances
        .iter()
        .filter_map(|i| Some((i, facts.get(&i.name)?.postgres.as_ref())))
        .collect();
    let candidate = |i: &Instance| i.has_role(Role::Primary) || i.has_role(Role::Replica);

    let live_primaries: Vec<(&Instance, &PostgresFacts)> = deployed
        .iter()
        .filter_map(|(i, pg)| {
            Some((
                *i,
                pg.filter(|p| p.running && p.in_recovery == Some(false))?,
            ))
        })
        .filter(|(i, _)| !i.has_role(Role::Witness))
        .collect();
    let (live_primaries, former) = split_former_primaries(live_primaries);
    if live_primaries.len() > 1 {
        return Err(TopologyError::SplitBrain {
            hosts: live_primaries.iter().map(|(i, _)| i.name.clone()).collect(),
        });
    }
    if let Some((i, pg)) = live_primaries.iter().find(|(i, _)| !candidate(i)) {
        return Err(TopologyError::UnknownPrimary {
            host: i.name.clone(),
            data_dir: pg.data_dir.clone(),
            roles: i
                .roles
                .iter()
                .filter(|r| **r != Role::Postgres)
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    // A running server that would not say whether it is a standby could be a second primary.
    if let Some((i, pg)) = deployed.iter().find_map(|(i, pg)| {
        let pg = pg.filter(|p| p.running && p.in_recovery.is_none())?;
        candidate(i).then_some((*i, pg))
    }) {
        return Err(TopologyError::RecoveryUnknown {
            host: i.name.clone(),
            data_dir: pg.data_dir.clone(),
        });
    }

    let configured = deployed
        .iter()
        .map(|(i, _)| *i)
        .find(|i| i.has_role(Role::Primary));
    let primary = match live_primaries.first() {
        Some((live, _)) => Some(*live),
        None => {
            if let Some(p) = configured {
                let in_recovery = facts
                    .get(&p.name)
                    .and_then(|f| f.postgres.as_ref())
                    .is_some_and(|pg| pg.running && pg.in_recovery == Some(true));
                if in_recovery {
                    return Err(TopologyError::PrimaryInRecovery {
                        host: p.name.clone(),
                    });
                }
            }
            configured
        }
    };

    let mut topology = Topology::default();
    for (i, pg) in &former {
        topology.changes.push(format!(
            "{} runs as a primary on timeline {}, but {} was promoted (timeline {}) before {} \
             started: it is a former primary that came back, and is rejoined as a replica of {}",
            i.name,
            pg.timeline.unwrap_or_default(),
            primary.map_or("another host", |p| p.name.as_str()),
            primary
                .and_then(|p| facts.get(&p.name)?.postgres.as_ref()?.timeline)
                .unwrap_or_default(),
            i.name,
            primary.map_or("the primary", |p| p.name.as_str()),
        ));
    }
    if let (Some(live), Some(config)) = (primary, configured)
        && live.name != config.name
    {
        topology.changes.push(format!(
            "{} is the live primary (config.yml says {}); live state wins: update the roles in \
             config.yml when convenient",
            live.name, config.name
        ));
    }
    for (instance, pg) in &deployed {
        let role = if primary.is_some_and(|p| p.name == instance.name) {
            PostgresRole::Primary
        } else if candidate(instance) {
            PostgresRole::Replica
        } else if instance.has_role(Role::Witness) {
            PostgresRole::Witness
        } else {
            continue;
        };
        let upstream = match role {
            PostgresRole::Primary => None,
            PostgresRole::Witness => instance.upstream.clone(),
            PostgresRole::Replica => {
                let live = pg.and_then(|p| p.upstream.as_deref());
                let known = live
                    .and_then(|host| member_named(host, cluster, inventory, facts))
                    .filter(|name| *name != instance.name);
                if let (Some(host), None) = (live, known) {
                    topology.changes.push(format!(
                        "{} streams from {host}, which is not a host of this cluster",
                        instance.name
                    ));
                }
                known
                    .map(str::to_string)
                    .or_else(|| instance.upstream.clone())
                    .or_else(|| primary.map(|p| p.name.clone()))
            }
        };
        if role == PostgresRole::Replica && upstream != instance.upstream {
            topology.changes.push(format!(
                "{} follows {} (config.yml: {})",
                instance.name,
                upstream.as_deref().unwrap_or("no host"),
                match &instance.upstream {
                    Some(u) => format!("upstream {u}"),
                    None => format!("role {}", config_role(instance)),
                }
            ));
        }
        let former_primary = former.iter().any(|(i, _)| i.name == instance.name);
        let upstream = if former_primary {
            primary.map(|p| p.name.clone())
        } else {
            upstream
        };
        topology.members.insert(
            instance.name.clone(),
            Member {
                role,
                upstream,
                former_primary,
            },
        );
    }
    Ok(topology)
}

/// Splits live primaries into the real one and former primaries that came back: with more than
/// one, the primary on the highest timeline is the live one when every other runs an older
/// timeline and (re)started after that one was promoted (a failover happened while it was
/// down). Anything else (same timeline, or an old primary that kept running through the
/// promotion) is left as is: a split brain that a human resolves.
type LivePrimary<'a> = (&'a Instance, &'a PostgresFacts);

fn split_former_primaries(
    mut live: Vec<LivePrimary<'_>>,
) -> (Vec<LivePrimary<'_>>, Vec<LivePrimary<'_>>) {
    if live.len() < 2 {
        return (live, vec![]);
    }
    live.sort_by_key(|(_, pg)| std::cmp::Reverse(pg.timeline.unwrap_or(0)));
    let (newest, promoted) = (live[0].1.timeline, live[0].1.promoted_epoch);
    let came_back = |pg: &PostgresFacts| match (newest, promoted, pg.timeline, pg.start_epoch) {
        (Some(newest), Some(promoted), Some(tli), Some(started)) => {
            tli < newest && started >= promoted
        }
        _ => false,
    };
    if live[1..].iter().all(|(_, pg)| came_back(pg)) {
        let former = live.split_off(1);
        (live, former)
    } else {
        (live, vec![])
    }
}

/// The config.yml role that makes `instance` a Postgres host.
fn config_role(instance: &Instance) -> &'static str {
    [Role::Primary, Role::Replica, Role::Witness]
        .into_iter()
        .find(|r| instance.has_role(*r))
        .map_or("postgres", Role::as_str)
}

/// The cluster host that `host` (a sender host: a name or an address) names, if any.
pub(crate) fn member_named<'a>(
    host: &str,
    cluster: &'a Cluster,
    inventory: &Inventory,
    facts: &BTreeMap<String, Facts>,
) -> Option<&'a str> {
    cluster
        .instances
        .iter()
        .find(|i| {
            i.name == host
                || inventory
                    .host(&i.name)
                    .is_some_and(|h| h.address.to_string() == host)
                || facts
                    .get(&i.name)
                    .is_some_and(|f| f.hostname == host || f.addresses.iter().any(|a| a == host))
        })
        .map(|i| i.name.as_str())
}
