//! `tpa-controller switchover <dir> <instance>`: a planned change of primary with repmgr or
//! Patroni, nothing committed lost.
//!
//! With Patroni, the checks of step 1 are the same; then Patroni does steps 2 to 6 itself
//! (`POST /switchover`, see [`through_patroni`]) and the command waits and reports as below.
//!
//! The controller drives it through the agents, step by step, instead of running repmgr's own
//! `standby switchover` (which needs SSH from the new primary to every other node as postgres:
//! trust tpa does not create). The steps are repmgr's:
//! 1. checks: the target is a Postgres host of the cluster, not the live primary, streaming
//!    from the primary and caught up (refused, with the reason, otherwise; nothing changed);
//! 2. repmgrd stopped everywhere, so nobody fails over during the window;
//! 3. the primary shut down cleanly (its walsenders send every record up to the shutdown
//!    checkpoint first) and the target waits until it has replayed that checkpoint;
//! 4. `repmgr standby promote` on the target; writes are accepted again here;
//! 5. the old primary `repmgr node rejoin`s the target, its slot for the target dropped;
//!    siblings that streamed from the old primary `repmgr standby follow` the target;
//! 6. repmgrd started everywhere; the command waits until every replica streams from its new
//!    upstream and prints the topology;
//! 7. Barman, when it backs the cluster up, moved to the new primary as deploy would do it
//!    (its slot there, the server's conf, `barman-follow`), so backups and `status` stay
//!    healthy; a failure there is a warning that says to run deploy.
//!
//! If step 3 fails, the old primary is started again and repmgrd restarted: the cluster is left
//! as it was.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tpa_common::facts::Facts;
use tpa_common::query::SqlQuery;

use crate::agent_client::{AgentClient, ApplyMode, ExecCommand};
use crate::commands::deployed::Deployed;
use crate::config::{FailoverManager, Role};
use crate::planner::topology::{self, PostgresRole, Topology};
use crate::planner::{barman, patroni, repmgr};
use crate::settings::{HostSettings, PostgresSettings};

/// A target further behind than this (bytes of WAL not replayed) is refused as lagging.
const MAX_LAG_BYTES: i64 = 16 * 1024 * 1024;

/// How long the target may take to replay the old primary's shutdown checkpoint.
const CATCH_UP: Duration = Duration::from_secs(30);

/// How long every replica may take to stream from its new upstream.
const SETTLE: Duration = Duration::from_secs(60);

/// One Postgres host as the switchover sees it.
struct Node {
    client: AgentClient,
    settings: HostSettings,
    node_id: u32,
}

impl Node {
    fn conf(&self) -> String {
        repmgr::conf_path(&self.settings)
    }

    fn repmgr(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            format!("{}/repmgr", self.settings.bin_dir),
            "-f".into(),
            self.conf(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// Runs `argv` on the host (as `run_as`), failing with its output when it fails.
    async fn run(&mut self, argv: Vec<String>, run_as: Option<&str>) -> anyhow::Result<String> {
        let shown = argv.join(" ");
        let host = self.client.host().to_string();
        let result = self
            .client
            .exec(ExecCommand {
                argv,
                env: vec![("LC_ALL".into(), "C".into())],
                run_as: run_as.map(str::to_string),
                stdin: vec![],
                cwd: Some("/".into()),
                timeout: Some(Duration::from_secs(120)),
            })
            .await?;
        let out = String::from_utf8_lossy(&result.stdout).into_owned();
        if result.exit_code != 0 {
            bail!(
                "{host}: `{shown}` failed (exit {}): {}{}",
                result.exit_code,
                out.trim(),
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
        Ok(out)
    }

    async fn sql(&mut self, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        self.client
            .query(SqlQuery::postgres(self.settings.postgres.port, sql))
            .await
    }

    /// The first column of the first row of `sql`.
    async fn value(&mut self, sql: &str) -> anyhow::Result<String> {
        let rows = self.sql(sql).await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default())
    }
}

/// Switches the primary role of the cluster in `dir` over to `target`.
pub async fn run(dir: &Path, target: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let deployed = Deployed::open(dir)?;
    let (cluster, inventory) = (&deployed.cluster, &deployed.inventory);
    let Some(instance) = cluster.instance(target) else {
        bail!(
            "{target} is not an instance of cluster {} (config.yml lists {}); nothing was changed",
            cluster.name,
            cluster.instance_names()
        );
    };
    if !(instance.has_role(Role::Primary) || instance.has_role(Role::Replica)) {
        bail!(
            "{target} is not a Postgres primary or replica (its roles: {}); only a replica can \
             become the primary; nothing was changed",
            instance
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let manager = instance.vars.failover_manager();
    if !matches!(manager, FailoverManager::Repmgr | FailoverManager::Patroni) {
        bail!(
            "switchover needs failover_manager: repmgr or patroni (this cluster uses {}); \
             nothing was changed",
            manager.as_str()
        );
    }

    // Every Postgres host, at once: its agent and its facts.
    let postgres_hosts: Vec<_> = cluster
        .instances
        .iter()
        .filter(|i| {
            (i.has_role(Role::Primary) || i.has_role(Role::Replica))
                && !i.provision_only
                && inventory.host(&i.name).is_some()
        })
        .collect();
    let connected = futures_util::future::join_all(postgres_hosts.iter().map(|i| {
        let deployed = &deployed;
        async move {
            let mut client = deployed.connect(&i.name).await?;
            let pg = PostgresSettings::resolve(&cluster.name, &i.vars);
            let facts = client.facts(Some(&pg.data_dir), pg.port).await?;
            let settings = HostSettings::resolve(cluster, i, facts.os_major());
            Ok::<_, anyhow::Error>((
                i.name.clone(),
                (
                    Node {
                        client,
                        settings,
                        node_id: i.node,
                    },
                    facts,
                ),
            ))
        }
    }))
    .await;
    let mut nodes = BTreeMap::new();
    let mut facts: BTreeMap<String, Facts> = BTreeMap::new();
    for result in connected {
        let (name, (node, f)) = result.context("switchover needs every Postgres host")?;
        facts.insert(name.clone(), f);
        nodes.insert(name, node);
    }
    let topology = topology::resolve(cluster, inventory, &facts)
        .map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    let primary = checks(&topology, &facts, target)?.to_string();
    let receiver = nodes
        .get_mut(target)
        .expect("the target is a node")
        .value("select coalesce((select status from pg_stat_wal_receiver), 'none')")
        .await?;
    if receiver != "streaming" {
        bail!(
            "{target} is not streaming from {primary} (its WAL receiver: {receiver}); wait \
             until it streams (see `tpa-controller status`); nothing was changed"
        );
    }

    // Caught up? The primary's position against the target's replay.
    let position = nodes
        .get_mut(&primary)
        .expect("the primary is a node")
        .value("select pg_current_wal_lsn()")
        .await?;
    let lag: i64 = nodes
        .get_mut(target)
        .expect("the target is a node")
        .value(&format!(
            "select pg_wal_lsn_diff({}::pg_lsn, pg_last_wal_replay_lsn())::bigint",
            literal_lsn(&position)?
        ))
        .await?
        .parse::<i64>()
        .unwrap_or(i64::MAX)
        // A replica may have replayed past the primary's insert position (end of record).
        .max(0);
    if lag > MAX_LAG_BYTES {
        bail!(
            "{target} is {lag} bytes of WAL behind {primary}: wait until it catches up (see \
             `tpa-controller status`); nothing was changed"
        );
    }
    if manager == FailoverManager::Patroni {
        return through_patroni(dir, &deployed, &mut nodes, &primary, target, lag, started).await;
    }
    println!("switchover: {primary} → {target} (lag {lag} bytes); stopping repmgrd");

    let repmgrd_stop = ["systemctl", "stop", repmgr::UNIT]
        .map(String::from)
        .to_vec();
    for node in nodes.values_mut() {
        node.run(repmgrd_stop.clone(), None).await?;
    }
    let window = Instant::now();
    let caught_up = shut_down_and_catch_up(&mut nodes, &primary, target).await;
    if let Err(e) = caught_up {
        // Undo: the old primary back up, repmgrd back on; nothing else was touched.
        let node = nodes.get_mut(&primary).expect("the primary is a node");
        let _ = node
            .run(
                ["systemctl", "start", "postgres"]
                    .map(String::from)
                    .to_vec(),
                None,
            )
            .await;
        start_repmgrd(&mut nodes).await;
        return Err(e.context(format!(
            "switchover abandoned: {primary} was started again as the primary"
        )));
    }
    let promote = nodes
        .get_mut(target)
        .expect("the target is a node")
        .repmgr(&["standby", "promote"]);
    nodes
        .get_mut(target)
        .expect("the target is a node")
        .run(promote, Some("postgres"))
        .await?;
    let unavailable = window.elapsed();
    println!(
        "switchover: {target} promoted; writes were refused for {:.1}s",
        unavailable.as_secs_f64()
    );

    // The old primary rejoins as a standby of the target; siblings follow.
    let target_node = nodes[target].node_id;
    let target_conninfo = repmgr::conninfo_at(
        &deployed.host(target)?.address.to_string(),
        nodes[target].settings.postgres.port,
        target,
    );
    {
        let old = nodes.get_mut(&primary).expect("the primary is a node");
        let rejoin = old.repmgr(&["node", "rejoin", "-d", &target_conninfo]);
        old.run(rejoin, Some("postgres")).await?;
        // Its slots served its downstreams (the target, Barman), which now stream from the
        // target: unused slots on a standby would keep WAL there forever. Deploy makes the
        // slots the live topology needs.
        old.sql(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots \
             where not active and slot_type = 'physical'",
        )
        .await?;
    }
    let siblings: Vec<String> = topology
        .members
        .iter()
        .filter(|(name, m)| {
            name.as_str() != target
                && m.role == PostgresRole::Replica
                && m.upstream.as_deref() == Some(primary.as_str())
        })
        .map(|(name, _)| name.clone())
        .collect();
    for sibling in &siblings {
        let node = nodes.get_mut(sibling).expect("siblings are nodes");
        let follow = node.repmgr(&[
            "standby",
            "follow",
            "--upstream-node-id",
            &target_node.to_string(),
        ]);
        node.run(follow, Some("postgres")).await?;
    }
    start_repmgrd(&mut nodes).await;

    // Everybody streams from the right upstream?
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut waiting = Vec::new();
        for (name, node) in nodes.iter_mut() {
            if name == target {
                continue;
            }
            let streaming = node
                .value("select coalesce((select status from pg_stat_wal_receiver), 'none')")
                .await
                .unwrap_or_default();
            if streaming != "streaming" {
                waiting.push(name.clone());
            }
        }
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{target} is the primary, but {} did not stream within {}s: see \
                 `tpa-controller status` and journalctl -u postgres -u repmgr there",
                waiting.join(", "),
                SETTLE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Err(e) = move_barman(&deployed, &mut nodes, target).await {
        eprintln!(
            "switchover: warning: Barman still streams from {primary}: {e:#}; run `tpa-controller \
             deploy {}` to move it",
            dir.display()
        );
    }
    recheck_health(&mut nodes).await;
    let show = nodes
        .get_mut(target)
        .expect("the target is a node")
        .repmgr(&["cluster", "show", "--compact"]);
    let shown = nodes
        .get_mut(target)
        .expect("the target is a node")
        .run(show, Some("postgres"))
        .await
        .unwrap_or_default();
    print!("{shown}");
    println!(
        "switchover to {target} done in {:.1}s (writes refused for {:.1}s); config.yml is \
         unchanged: deploy follows the live roles",
        started.elapsed().as_secs_f64(),
        unavailable.as_secs_f64()
    );
    Ok(())
}

/// Steps 3 to 7 with Patroni: Patroni's own switchover (`POST /switchover` to the leader's REST
/// API, by the helper on the target, which reads the REST password from
/// `/etc/patroni/<cluster>.yml` and sends only to the leader's REST API over TLS: it is in no
/// argv and never on the agent channel), then the same waits and report as with repmgr: the
/// target accepts writes, every other member streams from it, Barman follows.
async fn through_patroni(
    dir: &Path,
    deployed: &Deployed,
    nodes: &mut BTreeMap<String, Node>,
    primary: &str,
    target: &str,
    lag: i64,
    started: Instant,
) -> anyhow::Result<()> {
    let cluster = &deployed.cluster.name;
    println!("switchover: {primary} → {target} (lag {lag} bytes) through Patroni");
    let window = Instant::now();
    let argv = [patroni::HELPER, "switchover", cluster, primary, target]
        .map(String::from)
        .to_vec();
    let said = nodes
        .get_mut(target)
        .expect("the target is a node")
        .run(argv, None)
        .await
        .context(
            "Patroni did not switch over (an older deploy's helper lacks `switchover`: run \
             deploy first); see `tpa-controller status`",
        )?;
    println!("switchover: Patroni: {}", said.trim());

    // The target accepts writes (txid_current() assigns a transaction id: refused in recovery).
    let deadline = Instant::now() + SETTLE;
    loop {
        let node = nodes.get_mut(target).expect("the target is a node");
        if node
            .value("select txid_current() > 0")
            .await
            .is_ok_and(|v| v == "t")
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "Patroni accepted the switchover but {target} did not accept writes within {}s: \
                 see `tpa-controller status` and journalctl -u {} there",
                SETTLE.as_secs(),
                patroni::unit(cluster)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unavailable = window.elapsed();
    println!(
        "switchover: {target} accepts writes; writes were refused for at most {:.1}s",
        unavailable.as_secs_f64()
    );

    // Every other member streams from the target (Patroni names each standby's connection
    // after its member).
    let others: Vec<String> = nodes.keys().filter(|n| *n != target).cloned().collect();
    let deadline = Instant::now() + SETTLE;
    loop {
        let streaming = nodes
            .get_mut(target)
            .expect("the target is a node")
            .value(
                "select coalesce(string_agg(application_name, ','), '') from pg_stat_replication \
                 where state = 'streaming'",
            )
            .await
            .unwrap_or_default();
        let streaming: Vec<&str> = streaming.split(',').collect();
        let waiting: Vec<&String> = others
            .iter()
            .filter(|o| !streaming.contains(&o.as_str()))
            .collect();
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{target} is the leader, but {} did not stream from it within {}s: see \
                 `tpa-controller status` and journalctl -u {} there",
                waiting
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                SETTLE.as_secs(),
                patroni::unit(cluster)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Err(e) = move_barman(deployed, nodes, target).await {
        eprintln!(
            "switchover: warning: Barman still streams from {primary}: {e:#}; run `tpa-controller \
             deploy {}` to move it",
            dir.display()
        );
    }
    recheck_health(nodes).await;
    let list = vec![
        "patronictl".to_string(),
        "-c".into(),
        patroni::conf_path(cluster),
        "list".into(),
    ];
    let shown = nodes
        .get_mut(target)
        .expect("the target is a node")
        .run(list, Some("postgres"))
        .await
        .unwrap_or_default();
    print!("{shown}");
    println!(
        "switchover to {target} done in {:.1}s (writes refused for at most {:.1}s); config.yml \
         is unchanged: deploy follows the live leader",
        started.elapsed().as_secs_f64(),
        unavailable.as_secs_f64()
    );
    Ok(())
}

/// Every node re-runs its health checks (the roles changed), so `status` right after the
/// switchover shows them, not the cached round from before it. A node that does not answer
/// is left to its next scheduled round.
async fn recheck_health(nodes: &mut BTreeMap<String, Node>) {
    let rechecks = nodes.values_mut().map(|node| node.client.recheck_health());
    for result in futures_util::future::join_all(rechecks).await {
        if let Err(e) = result {
            tracing::debug!("health recheck after the switchover: {e:#}");
        }
    }
}

/// Barman's WAL streaming and backups moved to the new primary, as deploy's barman stage
/// would: its slot there, each server's conf aimed at it, then barman-follow.
async fn move_barman(
    deployed: &Deployed,
    nodes: &mut BTreeMap<String, Node>,
    target: &str,
) -> anyhow::Result<()> {
    let cluster = &deployed.cluster;
    let hosts = deployed.barman_hosts();
    if hosts.is_empty() {
        return Ok(());
    }
    let node = nodes.get_mut(target).expect("the target is a node");
    let port = node.settings.postgres.port;
    applied(&mut node.client, vec![barman::slot(port)]).await?;
    let address = deployed.host(target)?.address.to_string();
    let conninfo = barman::target(&address, port);
    for host in hosts {
        let mut client = deployed.connect(&host.name).await?;
        let mut resources = vec![barman::follow_program()];
        for server in barman::servers(cluster, &host.name) {
            resources.push(barman::server_conf_file(
                &cluster.name,
                server,
                target,
                &address,
                &conninfo,
            ));
            resources.push(barman::follow(&server.name, &conninfo));
        }
        for message in applied(&mut client, resources).await? {
            println!("switchover: [{}] {message}", host.name);
        }
    }
    Ok(())
}

/// Applies `resources`, failing with the first failed one's message; the messages of the
/// resources that changed otherwise.
async fn applied(
    client: &mut AgentClient,
    resources: Vec<tpa_common::resource::ResourceSpec>,
) -> anyhow::Result<Vec<String>> {
    let result = client.apply(resources, ApplyMode::Apply).await?;
    let mut messages = Vec::new();
    for event in result.events {
        match event.outcome {
            tpa_common::event::Outcome::Failed => {
                bail!("{}: {}: {}", client.host(), event.id, event.message)
            }
            tpa_common::event::Outcome::Changed => messages.push(event.message),
            _ => {}
        }
    }
    Ok(messages)
}

/// The live primary, once `target` has passed the checks that need only facts.
fn checks<'a>(
    topology: &'a Topology,
    facts: &BTreeMap<String, Facts>,
    target: &str,
) -> anyhow::Result<&'a str> {
    let Some(primary) = topology.primary() else {
        bail!("the cluster has no live primary; nothing was changed");
    };
    if primary == target {
        bail!("{target} is already the primary; nothing was changed");
    }
    let pg = facts.get(target).and_then(|f| f.postgres.as_ref());
    if !pg.is_some_and(|p| p.running) {
        bail!(
            "{target} is not running Postgres: start it (and let it catch up) first; nothing \
             was changed"
        );
    }
    if topology.upstream(target) != Some(primary) || pg.and_then(|p| p.upstream.as_ref()).is_none()
    {
        bail!(
            "{target} does not stream from the primary {primary} (its upstream: {}); switch over \
             to a replica of {primary}; nothing was changed",
            topology.upstream(target).unwrap_or("none")
        );
    }
    Ok(primary)
}

/// Stops the primary cleanly and waits until the target has replayed its shutdown checkpoint.
async fn shut_down_and_catch_up(
    nodes: &mut BTreeMap<String, Node>,
    primary: &str,
    target: &str,
) -> anyhow::Result<()> {
    let old = nodes.get_mut(primary).expect("the primary is a node");
    old.run(
        ["systemctl", "stop", "postgres"].map(String::from).to_vec(),
        None,
    )
    .await?;
    let controldata = vec![
        format!("{}/pg_controldata", old.settings.bin_dir),
        "-D".into(),
        old.settings.postgres.data_dir.clone(),
    ];
    let text = old.run(controldata, Some("postgres")).await?;
    let checkpoint = text
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .map(str::trim)
        .context("pg_controldata printed no checkpoint location")?
        .to_string();
    let lsn = literal_lsn(&checkpoint)?;
    let node = nodes.get_mut(target).expect("the target is a node");
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let done = node
            .value(&format!("select pg_last_wal_replay_lsn() >= {lsn}::pg_lsn"))
            .await?;
        if done == "t" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{target} did not replay {primary}'s shutdown checkpoint ({checkpoint}) within {}s",
                CATCH_UP.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_repmgrd(nodes: &mut BTreeMap<String, Node>) {
    for node in nodes.values_mut() {
        let _ = node
            .run(
                ["systemctl", "start", repmgr::UNIT]
                    .map(String::from)
                    .to_vec(),
                None,
            )
            .await;
    }
}

/// An LSN (`16/B374D848`) as an SQL literal, or an error for anything else.
fn literal_lsn(lsn: &str) -> anyhow::Result<String> {
    let ok = lsn.split_once('/').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
    });
    if !ok {
        bail!("not an LSN: {lsn:?}");
    }
    Ok(format!("'{lsn}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lsns_become_literals() {
        assert_eq!(literal_lsn("0/3000060").unwrap(), "'0/3000060'");
        assert!(literal_lsn("0/30'; drop").is_err());
        assert!(literal_lsn("").is_err());
    }
}
