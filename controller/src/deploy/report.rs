//! Report: the deploy's own lines (printed as they happen and kept), the closing summary that
//! decides the exit code, and the record appended to `<dir>/deploy.log`.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::cluster_dir::ClusterDir;
use crate::orchestrator::{StageReport, StageStatus};

/// How a deploy ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployOutcome {
    /// Everything is as config.yml says (nothing changed, or changes applied).
    Converged { changed: u32 },
    /// `--check` found changes to make.
    Pending { changes: u32 },
}

/// The deploy's lines: each printed when it happens and kept for the deploy log.
#[derive(Debug, Clone)]
pub struct DeployLog {
    text: String,
}

impl DeployLog {
    /// A log whose first (unprinted) line says which deploy this is.
    pub fn start(cluster_name: &str, check: bool) -> DeployLog {
        DeployLog {
            text: format!(
                "deploy{} of {cluster_name} at unix {}\n",
                if check { " --check" } else { "" },
                unix_now()
            ),
        }
    }

    /// Prints a line and keeps it for the deploy log.
    pub fn line(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        println!("{text}");
        self.text.push_str(text);
        self.text.push('\n');
    }

    /// Everything logged so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Prints the summary, appends the whole deploy to `<dir>/deploy.log`, and says how it ended
/// (an error naming every failed stage when one failed).
pub fn finish(
    dir: &ClusterDir,
    mut log: DeployLog,
    reports: &[StageReport],
    check: bool,
    started: Instant,
) -> anyhow::Result<DeployOutcome> {
    let outcome = summarise(reports, &mut log, check, started);
    write_log(dir, log.text(), reports)?;
    outcome
}

fn summarise(
    reports: &[StageReport],
    log: &mut DeployLog,
    check: bool,
    started: Instant,
) -> anyhow::Result<DeployOutcome> {
    let mut problems = Vec::new();
    let (mut changed, mut unchanged) = (0u32, 0u32);
    log.line("summary:");
    for r in reports {
        changed += r.summary.changed + r.summary.would_change;
        unchanged += r.summary.unchanged;
        let status = match &r.status {
            StageStatus::Done => "ok".to_string(),
            StageStatus::Failed(id, msg) => {
                problems.push(format!(
                    "{} {}: {id} failed: {msg}",
                    r.host,
                    r.stage.as_str()
                ));
                "FAILED".into()
            }
            StageStatus::Error(e) => {
                problems.push(format!("{} {}: {e}", r.host, r.stage.as_str()));
                "ERROR".into()
            }
            StageStatus::Skipped(why) => format!("skipped ({why})"),
        };
        log.line(format!(
            "  {:<10} {:<16} {:>3} changed {:>3} unchanged {:>2} failed {:>6.1}s  {status}",
            r.host,
            r.stage.as_str(),
            r.summary.changed + r.summary.would_change,
            r.summary.unchanged,
            r.summary.failed,
            r.elapsed.as_secs_f64()
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    if !problems.is_empty() {
        bail!(
            "deploy failed after {secs:.1}s:\n  {}\nfix the cause and deploy again: finished resources are skipped",
            problems.join("\n  ")
        );
    }
    if check {
        log.line(format!(
            "check: {changed} change(s) pending, {unchanged} resource(s) in state ({secs:.1}s)"
        ));
        return Ok(if changed > 0 {
            DeployOutcome::Pending { changes: changed }
        } else {
            DeployOutcome::Converged { changed: 0 }
        });
    }
    log.line(format!(
        "deploy finished in {secs:.1}s: {changed} changed, {unchanged} unchanged"
    ));
    Ok(DeployOutcome::Converged { changed })
}

/// Appends this deploy, with every resource event (agents mask secrets), to `<dir>/deploy.log`.
fn write_log(dir: &ClusterDir, log: &str, reports: &[StageReport]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut text = log.to_string();
    for r in reports {
        for e in &r.events {
            let _ = writeln!(
                text,
                "  [{}] {} {} {} {}ms {}",
                r.host,
                r.stage.as_str(),
                e.outcome,
                e.id,
                e.elapsed_ms,
                e.message
            );
            if let Some(diff) = &e.diff {
                for l in diff.lines() {
                    let _ = writeln!(text, "      {l}");
                }
            }
        }
    }
    let path = dir.root().join("deploy.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tpa_common::event::BatchSummary;

    use super::*;
    use crate::planner::StageName;

    fn report(host: &str, status: StageStatus, changed: u32) -> StageReport {
        StageReport {
            host: host.into(),
            stage: StageName::Sys,
            status,
            summary: BatchSummary {
                changed,
                unchanged: 3,
                ..Default::default()
            },
            events: vec![],
            elapsed: Duration::from_millis(100),
        }
    }

    #[test]
    fn outcomes_follow_changes_and_failures() {
        let mut log = DeployLog::start("fosdem", true);
        let pending = summarise(
            &[report("ulb", StageStatus::Done, 2)],
            &mut log,
            true,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(pending, DeployOutcome::Pending { changes: 2 });
        assert!(log.text().starts_with("deploy --check of fosdem at unix "));
        assert!(
            log.text()
                .contains("check: 2 change(s) pending, 3 resource(s) in state")
        );

        let mut log = DeployLog::start("fosdem", false);
        let failed = summarise(
            &[
                report("ulb", StageStatus::Done, 0),
                report(
                    "vub",
                    StageStatus::Failed("packages:base".into(), "boom".into()),
                    0,
                ),
            ],
            &mut log,
            false,
            Instant::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            failed.contains("vub sys: packages:base failed: boom"),
            "{failed}"
        );
    }
}
