//! The scheduled checks: a task that runs a round every `interval_secs` of the health spec
//! (sooner while something is Critical, at once when asked) and keeps the latest round, which
//! the Health RPC and `/metrics` answer from without running anything.
//!
//! "Asked" means an Apply batch finished (deploy may have changed what is checked, or fixed
//! it) or a Health call with `refresh`. A Health call that arrives while such a round is
//! pending waits for it, so `status` right after a deploy sees the deployed state.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tpa_common::health::{HealthCheck, HealthStatus, overall};
use tpa_common::health_spec::{HealthSpec, MetricsSpec};
use tpa_proto::HealthReport;

use super::assess::{self, CommandObservation, Sample};

/// While the latest round found something Critical, the next comes after at most this long,
/// so a repaired host reads healthy soon.
const RETRY: Duration = Duration::from_secs(5);
/// How long a Health call waits for a pending round before answering with the cached one.
const WAIT_FOR_ROUND: Duration = Duration::from_secs(30);

/// One finished round.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// The request generation this round covers.
    pub generation: u64,
    /// None before the first round, and when the host has no health spec.
    pub report: Option<HealthReport>,
    pub samples: Vec<Sample>,
    /// The spec's metrics setting, for the metrics listener.
    pub metrics: Option<MetricsSpec>,
    /// The host has a health spec (deploy wrote one).
    pub has_spec: bool,
    /// The spec's interval.
    pub interval_secs: u32,
}

/// The handle the RPCs share: the latest round, and a way to ask for a new one.
#[derive(Debug, Clone)]
pub struct Health {
    latest: watch::Receiver<Round>,
    wanted: Arc<AtomicU64>,
    wake: Arc<Notify>,
}

impl Health {
    /// Asks for a round soon (after an Apply); does not wait for it.
    pub fn request(&self) -> u64 {
        let generation = self.wanted.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        generation
    }

    /// The latest round; a fresh one with `refresh`, and the pending one when a round was
    /// asked for since the latest started (bounded by [`WAIT_FOR_ROUND`]).
    pub async fn report(&self, refresh: bool) -> Round {
        let wanted = if refresh {
            self.request()
        } else {
            self.wanted.load(Ordering::SeqCst)
        };
        let mut latest = self.latest.clone();
        let fresh =
            tokio::time::timeout(WAIT_FOR_ROUND, latest.wait_for(|r| r.generation >= wanted)).await;
        match fresh {
            Ok(Ok(round)) => round.clone(),
            _ => self.latest.borrow().clone(),
        }
    }

    /// Follows the rounds (for the metrics listener).
    pub fn subscribe(&self) -> watch::Receiver<Round> {
        self.latest.clone()
    }
}

/// Starts the checking task; it runs until the runtime stops. `cert_not_after` is the expiry of the
/// certificate the agent serves (Unix seconds), read every round: a renewal updates it.
pub fn start(spec_path: PathBuf, cert_not_after: Arc<AtomicI64>) -> Health {
    let (tx, latest) = watch::channel(Round::default());
    let health = Health {
        latest,
        wanted: Arc::new(AtomicU64::new(1)),
        wake: Arc::new(Notify::new()),
    };
    let wanted = health.wanted.clone();
    let wake = health.wake.clone();
    tokio::spawn(async move {
        let mut last_run: Vec<(String, Instant)> = Vec::new();
        let mut previous: Vec<CommandObservation> = Vec::new();
        loop {
            let generation = wanted.load(Ordering::SeqCst);
            let forced = generation > tx.borrow().generation;
            let started = Instant::now();
            let spec = read_spec(&spec_path);
            let (round, commands, ran) = one_round(
                spec,
                forced,
                last_run.clone(),
                previous.clone(),
                cert_not_after.load(Ordering::SeqCst),
            )
            .await;
            previous = commands;
            for name in ran {
                last_run.retain(|(n, _)| *n != name);
                last_run.push((name, started));
            }
            let critical = round
                .report
                .as_ref()
                .is_some_and(|r| r.status == HealthStatus::Critical);
            let interval = Duration::from_secs(round.interval_secs.max(1).into());
            tx.send_replace(Round {
                generation,
                ..round
            });
            let pause = if critical {
                interval.min(RETRY)
            } else {
                interval
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
            }
        }
    });
    health
}

/// The spec at `path`: None when there is none (a host deploy has not reached yet), an error
/// when it cannot be used.
fn read_spec(path: &std::path::Path) -> Option<Result<HealthSpec, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("cannot read {}: {e}", path.display()))),
    };
    let spec: HealthSpec = match serde_json::from_str(&text) {
        Ok(spec) => spec,
        Err(e) => return Some(Err(format!("invalid {}: {e}", path.display()))),
    };
    let problems = spec.problems();
    if problems.is_empty() {
        Some(Ok(spec))
    } else {
        Some(Err(format!(
            "invalid {}: {}",
            path.display(),
            problems.join("; ")
        )))
    }
}

/// Runs one round on a blocking thread: the round, the commands' observations, and the names
/// of the commands that ran.
async fn one_round(
    spec: Option<Result<HealthSpec, String>>,
    forced: bool,
    last_run: Vec<(String, Instant)>,
    previous: Vec<CommandObservation>,
    cert_not_after: i64,
) -> (Round, Vec<CommandObservation>, Vec<String>) {
    let started = Instant::now();
    let ran = tokio::task::spawn_blocking(move || {
        let now = unix_now();
        let has_spec = spec.is_some();
        let (spec, spec_error) = match spec {
            None => (HealthSpec::default(), None),
            Some(Ok(spec)) => (spec, None),
            Some(Err(why)) => (HealthSpec::default(), Some(why)),
        };
        let due = |c: &tpa_common::health_spec::CommandSpec| {
            forced
                || c.every_secs.is_none_or(|every| {
                    last_run
                        .iter()
                        .find(|(n, _)| *n == c.name)
                        .is_none_or(|(_, at)| {
                            at.elapsed()
                                >= Duration::from_secs(every.into()) - Duration::from_secs(1)
                        })
                })
        };
        let ran: Vec<String> = spec
            .commands
            .iter()
            .filter(|c| due(c))
            .map(|c| c.name.clone())
            .collect();
        let seen = super::observe::observe(&spec, due, &previous, cert_not_after, now);
        (spec, spec_error, seen, ran, now, has_spec)
    })
    .await;
    let Ok((spec, spec_error, seen, ran, now, has_spec)) = ran else {
        tracing::error!("a round of health checks ended abnormally");
        let round = Round {
            interval_secs: tpa_common::health_spec::DEFAULT_INTERVAL_SECS,
            ..Round::default()
        };
        return (round, vec![], vec![]);
    };
    let mut assessment = assess::assess(&seen);
    if let Some(why) = spec_error {
        tracing::warn!(%why, "health spec");
        assessment.checks.push(HealthCheck {
            name: "health spec".into(),
            status: HealthStatus::Warning,
            message: why,
        });
    }
    let status = overall(&assessment.checks);
    let mut samples = assessment.samples;
    let gauge = |name, value| Sample {
        name,
        labels: vec![],
        value,
    };
    samples.push(gauge(
        "tpa_health_up",
        if status == HealthStatus::Critical {
            0.0
        } else {
            1.0
        },
    ));
    samples.push(gauge("tpa_health_last_round_timestamp_seconds", now as f64));
    samples.push(gauge(
        "tpa_health_round_duration_seconds",
        started.elapsed().as_secs_f64(),
    ));
    let details = seen
        .commands
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.result.clone().ok()?)))
        .collect();
    let round = Round {
        generation: 0,
        report: Some(HealthReport {
            status,
            checks: assessment.checks,
            checked_at: now,
            details,
        }),
        samples,
        metrics: spec.metrics.clone(),
        has_spec,
        interval_secs: spec.interval_secs,
    };
    (round, seen.commands, ran)
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(now).unwrap_or(i64::MAX)
}
