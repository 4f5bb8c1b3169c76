//! Runs a [`Plan`]: every host in parallel (at most `forks` stages applying at once), stages
//! in order on each host, and a stage that depends on another host's stage waits for it. A failed stage stops the rest of its host
//! and every stage that depends on it, naming the host and resource that failed.
//!
//! A stage whose prerequisites are still running is probed first: checked, stopping at the
//! first resource out of state. When every resource is in state, applying it would do nothing,
//! so it is done without waiting, and the host's next stage inherits what it did not wait
//! for (a stage that changes something still runs after everything the stages before it on
//! its host waited for); otherwise it waits and applies. A re-deploy that changes
//! nothing therefore costs the slowest host, not the longest chain of hosts (a cascade of
//! replicas, the Barman host after the primary). `deploy --check` changes nothing, so it waits
//! for nothing.
//!
//! The work of applying one stage is injected (`apply`), so the scheduling is tested on
//! its own and the deploy command supplies the agent calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tpa_common::event::{BatchSummary, Outcome, ResourceEvent};

use crate::agent_client::ApplyMode;
use crate::planner::{Plan, Stage, StageName};

/// How one stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageStatus {
    Done,
    /// A resource failed: `(resource id, message)`.
    Failed(String, String),
    /// The agent could not be reached or the call broke.
    Error(String),
    /// Not run because a prerequisite did not succeed (says which).
    Skipped(String),
}

/// The record of one stage on one host.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub host: String,
    pub stage: StageName,
    pub status: StageStatus,
    pub summary: BatchSummary,
    pub events: Vec<ResourceEvent>,
    pub elapsed: Duration,
}

/// What applying one stage produced: the per-resource events, or a transport error.
pub type ApplyResult = Result<Vec<ResourceEvent>, String>;

/// How many stages apply at once unless `--forks` says otherwise, on hosts that are machines
/// of their own (bare, aws): the controller only waits on the agents, the hosts do the work.
pub const DEFAULT_FORKS: usize = 32;

/// The default for a cluster on `platform`. Docker hosts share this machine's CPUs, so more
/// stages at once than about four per CPU only make each slower: 24 seed-like hosts on two
/// CPUs deploy in 80 s with 8 and fail a repmgr registration's 2 s connect timeout with 32.
pub fn default_forks(platform: crate::config::Platform) -> usize {
    match platform {
        crate::config::Platform::Docker => {
            4 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        }
        _ => DEFAULT_FORKS,
    }
}

/// Runs every stage of `plan`, calling `apply(host, stage, mode)` for each when its turn
/// comes; at most `forks` calls run at once. With `check`, every stage is checked at once.
/// Otherwise a stage takes its slot only once its prerequisites are done, so waiting stages
/// never hold slots the stages they wait for need; before it waits, it is probed (see the
/// module's documentation).
pub async fn run<F, Fut>(plan: &Plan, forks: usize, check: bool, apply: F) -> Vec<StageReport>
where
    F: Fn(String, Stage, ApplyMode) -> Fut + Clone,
    Fut: Future<Output = ApplyResult>,
{
    // One channel per (host, stage): None while pending, Some(ok) once finished.
    let mut senders = BTreeMap::new();
    let mut receivers = BTreeMap::new();
    for (host, stages) in &plan.hosts {
        for stage in stages {
            let (tx, rx) = watch::channel(None::<bool>);
            senders.insert((host.clone(), stage.name), tx);
            receivers.insert((host.clone(), stage.name), rx);
        }
    }
    let slots = Semaphore::new(forks.max(1));
    let jobs = plan.hosts.iter().map(|(host, stages)| {
        let apply = apply.clone();
        let receivers = &receivers;
        let senders = &senders;
        let slots = &slots;
        async move {
            let mut reports = Vec::new();
            let mut blocked: Option<String> = None;
            // Prerequisites a stage finished by its probe did not wait for: the host's next
            // stages wait for them instead, unless they are in state too.
            let mut carried: Vec<(String, StageName)> = Vec::new();
            for stage in stages {
                let started = Instant::now();
                let mut after = std::mem::take(&mut carried);
                after.extend(stage.after.iter().cloned());
                let apply = &apply;
                let run_stage = |mode| async move {
                    let _slot = slots
                        .acquire()
                        .await
                        .expect("the semaphore is never closed");
                    apply(host.clone(), stage.clone(), mode).await
                };
                // The stage's own outcome; None when a prerequisite did not succeed.
                let result = if blocked.is_some() {
                    None
                } else if check {
                    Some(run_stage(ApplyMode::Check).await)
                } else {
                    let probed = if pending(&after, receivers) {
                        run_stage(ApplyMode::Probe)
                            .await
                            .ok()
                            .filter(|events| in_state(events))
                    } else {
                        None
                    };
                    if let Some(events) = probed {
                        carried = after;
                        Some(Ok(events))
                    } else {
                        blocked = wait_for(&after, receivers).await;
                        match blocked {
                            None => Some(run_stage(ApplyMode::Apply).await),
                            Some(_) => None,
                        }
                    }
                };
                let (status, events) = match (result, &blocked) {
                    (Some(Ok(events)), _) => (status_of(&events), events),
                    (Some(Err(e)), _) => (StageStatus::Error(e), Vec::new()),
                    (None, reason) => (
                        StageStatus::Skipped(reason.clone().unwrap_or_default()),
                        Vec::new(),
                    ),
                };
                let ok = status == StageStatus::Done;
                if !ok && blocked.is_none() {
                    blocked = Some(format!("{host} {} did not succeed", stage.name.as_str()));
                }
                let _ = senders[&(host.clone(), stage.name)].send(Some(ok));
                let mut summary = BatchSummary::default();
                for event in &events {
                    summary.record(event.outcome);
                }
                reports.push(StageReport {
                    host: host.clone(),
                    stage: stage.name,
                    status,
                    summary,
                    events,
                    elapsed: started.elapsed(),
                });
            }
            reports
        }
    });
    futures_util::future::join_all(jobs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// True when every resource of a probed stage is in state: applying it would do nothing.
pub fn in_state(events: &[ResourceEvent]) -> bool {
    events.iter().all(|e| e.outcome == Outcome::Unchanged)
}

/// True while some prerequisite has not finished.
fn pending(
    after: &[(String, StageName)],
    receivers: &BTreeMap<(String, StageName), watch::Receiver<Option<bool>>>,
) -> bool {
    after
        .iter()
        .any(|key| receivers.get(key).is_some_and(|rx| rx.borrow().is_none()))
}

/// Waits until every prerequisite finished; returns why the stage must be skipped, if so.
async fn wait_for(
    after: &[(String, StageName)],
    receivers: &BTreeMap<(String, StageName), watch::Receiver<Option<bool>>>,
) -> Option<String> {
    for (host, stage) in after {
        let Some(rx) = receivers.get(&(host.clone(), *stage)) else {
            return Some(format!(
                "{host} {} is not part of this deploy",
                stage.as_str()
            ));
        };
        let mut rx = rx.clone();
        let ok = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(false),
            Err(_) => false,
        };
        if !ok {
            return Some(format!("{host} {} did not succeed", stage.as_str()));
        }
    }
    None
}

fn status_of(events: &[ResourceEvent]) -> StageStatus {
    match events.iter().find(|e| e.outcome == Outcome::Failed) {
        Some(e) => StageStatus::Failed(e.id.clone(), e.message.clone()),
        None => StageStatus::Done,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn stage(name: StageName, after: &[(&str, StageName)]) -> Stage {
        Stage {
            name,
            resources: vec![],
            after: after.iter().map(|(h, s)| (h.to_string(), *s)).collect(),
        }
    }

    fn event(id: &str, outcome: Outcome) -> ResourceEvent {
        ResourceEvent {
            id: id.into(),
            outcome,
            diff: None,
            message: "boom".into(),
            elapsed_ms: 0,
        }
    }

    #[tokio::test]
    async fn dependants_wait_and_failures_stop_them() {
        let mut plan = Plan::default();
        plan.hosts.insert(
            "primary".into(),
            vec![
                stage(StageName::Sys, &[]),
                stage(StageName::PostgresConfig, &[]),
            ],
        );
        plan.hosts.insert(
            "replica".into(),
            vec![
                stage(StageName::Sys, &[]),
                stage(
                    StageName::PostgresConfig,
                    &[("primary", StageName::PostgresConfig)],
                ),
            ],
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = order.clone();
        let reports = run(&plan, 8, false, move |host, stage, mode| {
            let log = log.clone();
            async move {
                if mode == ApplyMode::Probe {
                    // Something to do: the probe cannot finish the stage.
                    return Ok(vec![event("x", Outcome::WouldChange)]);
                }
                // The primary's config is slow: the replica must still wait for it.
                if host == "primary" && stage.name == StageName::PostgresConfig {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                log.lock()
                    .unwrap()
                    .push(format!("{host} {}", stage.name.as_str()));
                Ok(vec![event("x", Outcome::Changed)])
            }
        })
        .await;
        let order = order.lock().unwrap().clone();
        let primary = order
            .iter()
            .position(|s| s == "primary postgres-config")
            .unwrap();
        let replica = order
            .iter()
            .position(|s| s == "replica postgres-config")
            .unwrap();
        assert!(primary < replica, "{order:?}");
        assert!(reports.iter().all(|r| r.status == StageStatus::Done));

        let failing = run(&plan, 8, false, |host, stage, mode| async move {
            if mode == ApplyMode::Probe {
                Ok(vec![event("x", Outcome::WouldChange)])
            } else if host == "primary" && stage.name == StageName::Sys {
                Ok(vec![event("packages:base", Outcome::Failed)])
            } else {
                Ok(vec![])
            }
        })
        .await;
        let status = |h: &str, s: StageName| {
            failing
                .iter()
                .find(|r| r.host == h && r.stage == s)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(
            status("primary", StageName::Sys),
            StageStatus::Failed("packages:base".into(), "boom".into())
        );
        assert_eq!(
            status("primary", StageName::PostgresConfig),
            StageStatus::Skipped("primary sys did not succeed".into())
        );
        assert_eq!(
            status("replica", StageName::PostgresConfig),
            StageStatus::Skipped("primary postgres-config did not succeed".into())
        );
        assert_eq!(status("replica", StageName::Sys), StageStatus::Done);
    }

    /// A replica behind a slow primary, as a re-deploy sees them.
    fn chain() -> Plan {
        let mut plan = Plan::default();
        plan.hosts.insert(
            "primary".into(),
            vec![stage(StageName::PostgresConfig, &[])],
        );
        plan.hosts.insert(
            "replica".into(),
            vec![stage(
                StageName::PostgresConfig,
                &[("primary", StageName::PostgresConfig)],
            )],
        );
        plan
    }

    /// Runs `chain()`; the primary's stage takes 100 ms; the replica's is in state unless
    /// `replica_changes`. Returns what ran, in order, and the reports.
    async fn run_chain(check: bool, replica_changes: bool) -> (Vec<String>, Vec<StageReport>) {
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = order.clone();
        let reports = run(&chain(), 8, check, move |host, _, mode| {
            let log = log.clone();
            async move {
                if host == "primary" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                log.lock().unwrap().push(format!("{host} {mode:?}"));
                let outcome = match (host.as_str(), mode) {
                    ("replica", ApplyMode::Probe | ApplyMode::Check) if replica_changes => {
                        Outcome::WouldChange
                    }
                    ("replica", ApplyMode::Apply) => Outcome::Changed,
                    _ => Outcome::Unchanged,
                };
                Ok(vec![event("x", outcome)])
            }
        })
        .await;
        let order = order.lock().unwrap().clone();
        (order, reports)
    }

    #[tokio::test]
    async fn a_stage_in_state_does_not_wait_and_one_with_changes_does() {
        // Nothing to do on the replica: its probe finishes it while the primary still runs.
        let (order, reports) = run_chain(false, false).await;
        assert_eq!(order, ["replica Probe", "primary Apply"]);
        assert!(reports.iter().all(|r| r.status == StageStatus::Done));
        let replica = reports.iter().find(|r| r.host == "replica").unwrap();
        assert_eq!(replica.summary.unchanged, 1);

        // Something to do: the probe finds it, the stage waits for the primary, then applies.
        let (order, reports) = run_chain(false, true).await;
        assert_eq!(order, ["replica Probe", "primary Apply", "replica Apply"]);
        let replica = reports.iter().find(|r| r.host == "replica").unwrap();
        assert_eq!(replica.summary.changed, 1);

        // A later stage of the replica that changes something still waits for the primary,
        // though the stage before it was in state and did not.
        let mut plan = chain();
        plan.hosts
            .get_mut("replica")
            .unwrap()
            .push(stage(StageName::PostgresUsers, &[]));
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = order.clone();
        run(&plan, 8, false, move |host, stage, mode| {
            let log = log.clone();
            async move {
                if host == "primary" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                log.lock()
                    .unwrap()
                    .push(format!("{host} {} {mode:?}", stage.name.as_str()));
                let changes = stage.name == StageName::PostgresUsers;
                Ok(vec![event(
                    "x",
                    match mode {
                        ApplyMode::Apply if changes => Outcome::Changed,
                        _ if changes => Outcome::WouldChange,
                        _ => Outcome::Unchanged,
                    },
                )])
            }
        })
        .await;
        assert_eq!(
            *order.lock().unwrap(),
            [
                "replica postgres-config Probe",
                "replica postgres-users Probe",
                "primary postgres-config Apply",
                "replica postgres-users Apply"
            ]
        );

        // --check changes nothing, so nothing waits.
        let (order, reports) = run_chain(true, true).await;
        assert_eq!(order, ["replica Check", "primary Check"]);
        let replica = reports.iter().find(|r| r.host == "replica").unwrap();
        assert_eq!(replica.summary.would_change, 1);
    }

    #[tokio::test]
    async fn forks_bounds_how_many_stages_apply_at_once() {
        let mut plan = Plan::default();
        for host in ["a", "b", "c", "d", "e"] {
            plan.hosts.insert(
                host.into(),
                vec![
                    stage(StageName::Sys, &[]),
                    stage(StageName::PostgresConfig, &[("a", StageName::Sys)]),
                ],
            );
        }
        for forks in [1, 2, 5] {
            let running = Arc::new(Mutex::new((0usize, 0usize))); // (now, most)
            let seen = running.clone();
            let reports = run(&plan, forks, false, move |_, _, _| {
                let seen = seen.clone();
                async move {
                    {
                        let mut r = seen.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.1.max(r.0);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    seen.lock().unwrap().0 -= 1;
                    Ok(vec![])
                }
            })
            .await;
            assert_eq!(reports.len(), 10);
            assert!(reports.iter().all(|r| r.status == StageStatus::Done));
            assert_eq!(running.lock().unwrap().1, forks, "forks {forks}");
        }
    }

    #[test]
    fn docker_hosts_share_this_machines_cpus_so_forks_follow_them() {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        assert_eq!(default_forks(crate::config::Platform::Docker), 4 * cpus);
        assert_eq!(default_forks(crate::config::Platform::Bare), DEFAULT_FORKS);
        assert_eq!(default_forks(crate::config::Platform::Aws), DEFAULT_FORKS);
    }
}
