//! `status`'s pure part: what each host's agent answered (a [`Probe`]) merged with config.yml
//! and the inventory into one [`HostStatus`] per host, the exit decision ([`problems`]), and the
//! table and JSON renderings. No IO: everything here is unit-tested.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::backups::{self, BackupHealth};
use crate::config::{Cluster, Instance, Role};
use crate::inventory::Inventory;
use crate::planner::topology::member_named;

/// A streaming replica further than this behind the primary is "catching up" rather than
/// "streaming": one WAL segment.
pub const CATCHING_UP_BYTES: u64 = 16 << 20;

/// What one host's agent answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Probe {
    /// config.yml names the host but inventory.json does not: config changed since deploy.
    #[default]
    NotProvisioned,
    /// No answer from the agent (connection, TLS or Hello failed): why.
    Unreachable(String),
    /// The agent answered, and the host runs no Postgres (Barman, log server). Barman's own
    /// facts (backups, WAL archiving) belong here once Barman is deployed.
    Reachable,
    /// The agent answered, but its Postgres did not (not running, refusing connections): why.
    Down(String),
    /// Postgres answered the status query.
    Postgres(PgState),
    /// A Barman host: the health of each server it backs up, or why it is unknown.
    Barman(Result<Vec<BackupHealth>, String>),
}

/// A running Postgres, as the status query saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgState {
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` out of recovery, `pg_last_wal_replay_lsn()` in recovery.
    pub lsn: Option<u64>,
    /// A primary's current WAL file's timeline (pg_control's lags until the first checkpoint
    /// after a promotion); a standby's `timeline_id` from `pg_control_checkpoint()`.
    pub checkpoint_timeline: Option<u32>,
    /// `pg_stat_wal_receiver.received_tli`.
    pub received_timeline: Option<u32>,
    /// `pg_stat_wal_receiver.status` (`streaming`, `waiting`, ...); None without a receiver.
    pub receiver_status: Option<String>,
    /// A standby has received WAL it has not replayed yet. (A restarted receiver reports the
    /// start of its segment as received, behind the replay position: not pending.)
    pub pending_wal: bool,
    /// `now() - pg_last_xact_replay_timestamp()` in seconds.
    pub replay_age_seconds: Option<f64>,
    /// `pg_stat_wal_receiver.sender_host`: a name or an address.
    pub sender_host: Option<String>,
    /// The local node's row of `repmgr.nodes`; None when the database has no repmgr schema.
    pub repmgr: Option<RepmgrNode>,
}

/// The failover manager's view of a node: its row of `repmgr.nodes` (repmgr 5.x).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepmgrNode {
    /// False when `repmgr.nodes` has no row named after the host.
    pub registered: bool,
    /// `primary`, `standby`, `witness`.
    #[serde(rename = "type")]
    pub node_type: Option<String>,
    /// The node name of `upstream_node_id`.
    pub upstream: Option<String>,
    pub active: Option<bool>,
}

/// Patroni's view of one member: what `patroni-tpa state` printed (its local REST API's
/// `GET /patroni` and `GET /cluster`), or why it is unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatroniMember {
    /// `running`, `streaming` (a replica, Patroni 3.1+), `starting`, `stopped`, ...
    pub state: Option<String>,
    /// `leader`, `replica`, `sync_standby`, ...
    pub role: Option<String>,
    pub timeline: Option<u32>,
    /// Bytes behind the leader, as Patroni counts them.
    #[serde(rename = "lag")]
    pub lag_bytes: Option<u64>,
    /// The member Patroni names the leader.
    pub leader: Option<String>,
    #[serde(default)]
    pub pending_restart: bool,
    /// Why Patroni's view is unknown (its REST API did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One etcd member's health (`etcdctl endpoint health` over TLS, against itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdHealth {
    pub healthy: bool,
    pub message: String,
}

/// One line of `status`. Serialized as is for `--json` (field names are the stable keys).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// primary, replica, witness, barman (or another non-Postgres role), down, unreachable.
    pub role: String,
    /// The cluster host it streams from, now; an address when it is no host of the cluster.
    pub upstream: Option<String>,
    /// streaming, catching up, not streaming, up (a primary or witness), down, agent
    /// unreachable, not provisioned, `-` (no Postgres).
    pub state: String,
    /// How far the replica's replay is behind the primary's current WAL position.
    pub lag_bytes: Option<u64>,
    /// `now() - pg_last_xact_replay_timestamp()` on the replica; 0 when caught up with the
    /// primary (or, with no primary to compare with, when no received WAL awaits replay).
    pub lag_seconds: Option<f64>,
    pub timeline: Option<u32>,
    pub repmgr: Option<RepmgrNode>,
    /// What config.yml says.
    pub config_role: String,
    pub config_upstream: Option<String>,
    /// The live role or upstream is not config.yml's.
    pub differs_from_config: bool,
    pub note: Option<String>,
    /// On a Barman host: each backed-up server's backups, WAL streaming, `barman check` and
    /// last restore drill.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupHealth>,
    /// With Patroni: the member's state and role as Patroni sees them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniMember>,
    /// On an etcd member: its health.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdHealth>,
    /// The latest round of the host agent's own health checks (its schedule's, not made for
    /// this status); None when the agent did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<AgentHealth>,
}

/// One agent's latest round of health checks, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentHealth {
    /// The worst check's status: `ok`, `warning`, `critical`, `unknown`.
    pub status: &'static str,
    /// When the round ran (Unix seconds); None: checked for this request (an agent that has
    /// no health spec yet).
    pub checked_at: Option<i64>,
    pub checks: Vec<AgentCheck>,
}

/// One named check of an agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentCheck {
    pub name: String,
    pub status: &'static str,
    pub message: String,
}

/// Checks whose verdict `status` already reaches from the same report's details (Barman's
/// servers, Patroni's member, etcd): not repeated among the problems.
const SHOWN_ELSEWHERE: &[&str] = &["barman", "patroni", "etcd"];

// === impl AgentHealth ===

impl AgentHealth {
    pub fn from_report(report: &tpa_proto::HealthReport) -> AgentHealth {
        AgentHealth {
            status: status_name(report.status),
            checked_at: Some(report.checked_at).filter(|t| *t > 0),
            checks: report
                .checks
                .iter()
                .map(|c| AgentCheck {
                    name: c.name.clone(),
                    status: status_name(c.status),
                    message: c.message.clone(),
                })
                .collect(),
        }
    }

    /// The Critical checks, as problems of `host`.
    fn problems(&self, host: &str) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.status == "critical" && !SHOWN_ELSEWHERE.contains(&c.name.as_str()))
            .map(|c| format!("{host}: {}: {}", c.name, c.message))
            .collect()
    }
}

fn status_name(status: tpa_common::health::HealthStatus) -> &'static str {
    use tpa_common::health::HealthStatus;
    match status {
        HealthStatus::Ok => "ok",
        HealthStatus::Warning => "warning",
        HealthStatus::Critical => "critical",
        HealthStatus::Unknown => "unknown",
    }
}

/// Tags of the status query's rows.
pub const POSTGRES_ROW: &str = "postgres";
pub const REPMGR_ROW: &str = "repmgr";

/// The status query of `host`: one psql run, one row about the server and, when database
/// `repmgr` holds a `repmgr.nodes` table, one row about the host's node there. psql's `\if`
/// keeps the second part out of databases without repmgr, so nothing fails or is logged today.
pub fn status_sql(host: &str) -> String {
    let name = crate::planner::users::literal(host);
    format!(
        "select '{POSTGRES_ROW}', pg_is_in_recovery(),
  case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end,
  case when pg_is_in_recovery() then (select timeline_id from pg_control_checkpoint())
    else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end,
  (select received_tli from pg_stat_wal_receiver),
  (select status from pg_stat_wal_receiver),
  coalesce(pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn(), false),
  extract(epoch from now() - pg_last_xact_replay_timestamp()),
  (select sender_host from pg_stat_wal_receiver);
select exists (select from pg_database where datname = 'repmgr') as tpa_repmgr_db \\gset
\\if :tpa_repmgr_db
\\connect repmgr
select to_regclass('repmgr.nodes') is not null as tpa_repmgr_nodes \\gset
\\if :tpa_repmgr_nodes
select '{REPMGR_ROW}', n.node_id is not null, n.type, u.node_name, n.active
  from (values (1)) as one (x)
  left join repmgr.nodes n on n.node_name = {name}
  left join repmgr.nodes u on u.node_id = n.upstream_node_id;
\\endif
\\endif
"
    )
}

/// The status query's rows as a [`PgState`].
pub fn parse_rows(rows: &[Vec<String>]) -> Result<PgState, String> {
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let row = rows
        .iter()
        .find(|r| field(r, 0) == POSTGRES_ROW)
        .filter(|r| r.len() == 9)
        .ok_or_else(|| format!("unexpected answer to the status query: {rows:?}"))?;
    let mut state = PgState {
        in_recovery: parse_bool(field(row, 1))
            .ok_or_else(|| format!("pg_is_in_recovery() said {:?}", field(row, 1)))?,
        lsn: parse_lsn(field(row, 2)),
        checkpoint_timeline: field(row, 3).parse().ok(),
        received_timeline: field(row, 4).parse().ok(),
        receiver_status: some(field(row, 5)),
        pending_wal: parse_bool(field(row, 6)).unwrap_or(false),
        replay_age_seconds: field(row, 7).parse().ok(),
        sender_host: some(field(row, 8)),
        repmgr: None,
    };
    if let Some(r) = rows.iter().find(|r| field(r, 0) == REPMGR_ROW) {
        state.repmgr = Some(RepmgrNode {
            registered: parse_bool(field(r, 1)).unwrap_or(false),
            node_type: some(field(r, 2)),
            upstream: some(field(r, 3)),
            active: parse_bool(field(r, 4)),
        });
    }
    Ok(state)
}

/// Field `i` of `row`; "" when missing (SQL NULL arrives as "" too).
fn field(row: &[String], i: usize) -> &str {
    row.get(i).map_or("", String::as_str)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "t" | "true" => Some(true),
        "f" | "false" => Some(false),
        _ => None,
    }
}

/// `16/B374D848` as a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Why a host's Postgres did not answer, from the Query call's error: short, for one line.
pub fn down_reason(error: &str) -> String {
    if error.contains("No such file or directory") || error.contains("Is the server running") {
        return "Postgres is not running".to_string();
    }
    if error.contains("the database system is starting up") {
        return "Postgres is starting up".to_string();
    }
    if error.contains("the database system is shutting down") {
        return "Postgres is shutting down".to_string();
    }
    let last = error
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(error);
    shorten(last)
}

/// At most 160 characters of `text`, on one line.
pub fn shorten(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= 160 {
        line
    } else {
        line.chars().take(157).collect::<String>() + "..."
    }
}

/// The config.yml role that best names `instance`: its Postgres role, else its first other role.
pub fn config_role(instance: &Instance) -> &'static str {
    [Role::Primary, Role::Replica, Role::Witness]
        .into_iter()
        .chain(instance.roles.iter().copied())
        .find(|r| instance.has_role(*r) && *r != Role::Postgres)
        .map_or("postgres", Role::as_str)
}

/// The hosts `status` reports on: config.yml's instances that deploy manages.
pub fn reported(cluster: &Cluster) -> impl Iterator<Item = &Instance> {
    cluster.instances.iter().filter(|i| !i.provision_only)
}

/// One [`HostStatus`] per reported instance, in config.yml order, from each host's probe.
pub fn merge(
    cluster: &Cluster,
    inventory: &Inventory,
    probes: &BTreeMap<String, Probe>,
) -> Vec<HostStatus> {
    let live = |i: &Instance| match probes.get(&i.name) {
        Some(Probe::Postgres(pg)) => Some(pg),
        _ => None,
    };
    let primaries: Vec<&Instance> = reported(cluster)
        .filter(|i| live(i).is_some_and(|pg| !pg.in_recovery) && !i.has_role(Role::Witness))
        .collect();
    let primary_lsn = match primaries.as_slice() {
        [one] => live(one).and_then(|pg| pg.lsn),
        _ => None,
    };
    let config_primary = cluster
        .instances
        .iter()
        .find(|i| i.has_role(Role::Primary))
        .map(|i| i.name.as_str());
    let no_facts = BTreeMap::new();

    let mut statuses = Vec::new();
    for instance in reported(cluster) {
        let config_role = config_role(instance);
        let mut line = HostStatus {
            host: instance.name.clone(),
            role: String::new(),
            upstream: None,
            state: String::new(),
            lag_bytes: None,
            lag_seconds: None,
            timeline: None,
            repmgr: None,
            config_role: config_role.to_string(),
            config_upstream: instance.upstream.clone(),
            differs_from_config: false,
            note: None,
            backups: vec![],
            patroni: None,
            etcd: None,
            health: None,
        };
        let mut notes = Vec::new();
        let mut differs = Vec::new();
        match probes.get(&instance.name).unwrap_or(&Probe::NotProvisioned) {
            Probe::NotProvisioned => {
                line.role = "unreachable".into();
                line.state = "not provisioned".into();
                notes.push("not in inventory.json: run deploy".to_string());
            }
            Probe::Unreachable(why) => {
                line.role = "unreachable".into();
                line.state = "agent unreachable".into();
                notes.push(why.clone());
            }
            Probe::Reachable => {
                line.role = config_role.into();
                line.state = "-".into();
            }
            Probe::Barman(health) => {
                line.role = config_role.into();
                line.state = "-".into();
                match health {
                    Ok(servers) => line.backups = servers.clone(),
                    Err(why) => notes.push(format!("backup health unknown: {why}")),
                }
            }
            Probe::Down(why) => {
                line.role = "down".into();
                line.state = "down".into();
                notes.push(why.clone());
            }
            Probe::Postgres(pg) => {
                line.repmgr = pg.repmgr.clone();
                let streaming = pg.receiver_status.as_deref() == Some("streaming");
                line.timeline = pg
                    .received_timeline
                    .filter(|_| streaming)
                    .or(pg.checkpoint_timeline);
                if !pg.in_recovery {
                    if instance.has_role(Role::Witness) {
                        line.role = "witness".into();
                    } else {
                        line.role = "primary".into();
                        if primaries.len() > 1 {
                            notes.push("split-brain".to_string());
                        }
                        if config_role != "primary" {
                            differs.push(format!("config.yml: {config_role}"));
                        }
                    }
                    line.state = "up".into();
                } else {
                    line.role = "replica".into();
                    if config_role != "replica" {
                        differs.push(format!("config.yml: {config_role}"));
                    }
                    line.upstream = pg.sender_host.as_deref().map(|sender| {
                        match member_named(sender, cluster, inventory, &no_facts) {
                            Some(name) => name.to_string(),
                            None => {
                                notes.push(format!(
                                    "streams from {sender}, which is not a host of this cluster"
                                ));
                                sender.to_string()
                            }
                        }
                    });
                    let expected = instance.upstream.as_deref().or(config_primary);
                    if let (Some(live), Some(expected)) = (&line.upstream, expected)
                        && live != expected
                        && config_role == "replica"
                    {
                        differs.push(format!("config.yml: upstream {expected}"));
                    }
                    line.lag_bytes = primary_lsn
                        .zip(pg.lsn)
                        .map(|(primary, replay)| primary.saturating_sub(replay));
                    // Caught up: at the primary's position (a receiver may report WAL past
                    // the last record, up to a segment's end, that there is nothing to replay
                    // in), or, without a primary to compare with, nothing received unreplayed.
                    let caught_up = line.lag_bytes.map_or(!pg.pending_wal, |b| b == 0);
                    line.lag_seconds = if caught_up {
                        Some(0.0)
                    } else {
                        pg.replay_age_seconds
                            .map(|s| (s.max(0.0) * 1000.0).round() / 1000.0)
                    };
                    line.state = if !streaming {
                        "not streaming"
                    } else if line.lag_bytes.unwrap_or(0) > CATCHING_UP_BYTES {
                        "catching up"
                    } else {
                        "streaming"
                    }
                    .into();
                }
            }
        }
        line.differs_from_config = !differs.is_empty();
        notes.extend(differs);
        line.note = Some(notes.join("; ")).filter(|n| !n.is_empty());
        statuses.push(line);
    }
    statuses
}

/// Why `status` exits 1, one phrase each; empty when every host is up and every replica streams.
pub fn problems(hosts: &[HostStatus]) -> Vec<String> {
    let mut problems = Vec::new();
    let primaries: Vec<&str> = hosts
        .iter()
        .filter(|h| h.role == "primary")
        .map(|h| h.host.as_str())
        .collect();
    if primaries.len() > 1 {
        problems.push(format!("split-brain: {}", primaries.join(", ")));
    }
    for h in hosts {
        let problem = match (h.role.as_str(), h.state.as_str()) {
            (_, "not provisioned") => "not provisioned (run deploy)",
            (_, "agent unreachable") => "agent unreachable",
            ("down", _) => "Postgres is down",
            ("replica", "not streaming") => "not streaming",
            _ => continue,
        };
        problems.push(format!("{}: {problem}", h.host));
    }
    for h in hosts {
        problems.extend(backups::problems(&h.host, &h.backups));
    }
    for h in hosts {
        if let Some(p) = &h.patroni {
            match (&p.error, p.state.as_deref()) {
                (Some(why), _) => problems.push(format!("{}: Patroni: {why}", h.host)),
                (None, Some("running" | "streaming")) => {}
                (None, state) => problems.push(format!(
                    "{}: Patroni state {}",
                    h.host,
                    state.unwrap_or("unknown")
                )),
            }
        }
        if let Some(e) = h.etcd.as_ref().filter(|e| !e.healthy) {
            problems.push(format!("{}: etcd member unhealthy: {}", h.host, e.message));
        }
    }
    for h in hosts {
        // A host whose Postgres is down already says so: its cached checks would repeat it.
        if h.role == "down" {
            continue;
        }
        if let Some(health) = &h.health {
            problems.extend(health.problems(&h.host));
        }
    }
    let postgres_cluster = hosts
        .iter()
        .any(|h| matches!(h.config_role.as_str(), "primary" | "replica"));
    if postgres_cluster && primaries.is_empty() {
        problems.push("no live primary".to_string());
    }
    problems
}

/// The table: a header and one aligned line per host. With Patroni, its view replaces the
/// REPMGR column and an ETCD column follows; a line under the table names Patroni's leader.
pub fn render_table(hosts: &[HostStatus]) -> String {
    let patroni = hosts.iter().any(|h| h.patroni.is_some());
    let etcd = hosts.iter().any(|h| h.etcd.is_some());
    let mut header = vec![
        "HOST",
        "ROLE",
        "UPSTREAM",
        "STATE",
        "LAG_BYTES",
        "LAG_S",
        "TL",
    ];
    header.push(if patroni { "PATRONI" } else { "REPMGR" });
    if etcd {
        header.push("ETCD");
    }
    header.push("NOTE");
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let mut row = vec![
                h.host.clone(),
                h.role.clone(),
                h.upstream.clone().unwrap_or_else(dash),
                h.state.clone(),
                h.lag_bytes.map_or_else(dash, |b| b.to_string()),
                h.lag_seconds.map_or_else(dash, |s| format!("{s:.1}")),
                h.timeline.map_or_else(dash, |t| t.to_string()),
            ];
            row.push(if patroni {
                patroni_cell(h.patroni.as_ref())
            } else {
                repmgr_cell(h.repmgr.as_ref())
            });
            if etcd {
                row.push(h.etcd.as_ref().map_or_else(dash, |e| {
                    if e.healthy { "healthy" } else { "unhealthy" }.to_string()
                }));
            }
            row.push(h.note.clone().unwrap_or_default());
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if patroni {
        let mut leaders: Vec<&str> = hosts
            .iter()
            .filter_map(|h| h.patroni.as_ref()?.leader.as_deref())
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        let _ = writeln!(
            out,
            "Patroni leader: {}",
            if leaders.is_empty() {
                "none".to_string()
            } else {
                leaders.join(", ")
            }
        );
    }
    for h in hosts {
        out.push_str(&backups::render(&h.host, &h.backups));
    }
    for h in hosts {
        for c in h
            .health
            .iter()
            .flat_map(|a| &a.checks)
            .filter(|c| c.status != "ok")
        {
            let _ = writeln!(
                out,
                "{} health: {} {}: {}",
                h.host,
                c.name,
                c.status.to_uppercase(),
                c.message
            );
        }
    }
    out
}

/// The PATRONI cell: the member's role and state, `?` when unknown, `-` without Patroni.
fn patroni_cell(member: Option<&PatroniMember>) -> String {
    match member {
        None => "-".into(),
        Some(m) if m.error.is_some() => "?".into(),
        Some(m) => {
            let mut cell = format!(
                "{} {}",
                m.role.as_deref().unwrap_or("?"),
                m.state.as_deref().unwrap_or("?")
            );
            if m.pending_restart {
                cell.push_str(" (pending restart)");
            }
            cell
        }
    }
}

/// The REPMGR cell: `-` without repmgr, else the node's type and upstream.
fn repmgr_cell(node: Option<&RepmgrNode>) -> String {
    let Some(node) = node else {
        return "-".into();
    };
    if !node.registered {
        return "unregistered".into();
    }
    let mut cell = node.node_type.clone().unwrap_or_else(|| "?".into());
    if let Some(upstream) = &node.upstream {
        let _ = write!(cell, " of {upstream}");
    }
    if node.active == Some(false) {
        cell.push_str(" (inactive)");
    }
    cell
}

/// The `--json` output: an array of [`HostStatus`] objects.
pub fn render_json(hosts: &[HostStatus]) -> String {
    serde_json::to_string_pretty(hosts).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests;
