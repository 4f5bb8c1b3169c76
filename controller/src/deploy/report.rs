//! Report: the deploy's own lines (printed as they happen and kept), the closing summary that
//! decides the exit code, and the record appended to `<dir>/deploy.log`.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, bail};

use tpa_common::event::{Outcome, ResourceEvent};

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
    let (mut changed, mut unchanged, mut hooks_ran) = (0u32, 0u32, 0u32);
    log.line("summary:");
    for r in reports {
        // Hooks run on every deploy: they are counted apart, never as changes.
        let hooks = hooks_run(&r.events);
        let stage_changed = (r.summary.changed + r.summary.would_change).saturating_sub(hooks);
        changed += stage_changed;
        unchanged += r.summary.unchanged;
        hooks_ran += hooks;
        let status = match &r.status {
            StageStatus::Done => "ok".to_string(),
            StageStatus::Failed(id, msg) => {
                let (what, msg) = match id.strip_prefix(HOOK_PREFIX) {
                    Some(point) => (
                        format!("hook {point} failed on {}", r.host),
                        hook_message(id, msg),
                    ),
                    None => (format!("{id} failed"), msg.as_str()),
                };
                problems.push(format!(
                    "{} {}: {what}: {}",
                    r.host,
                    r.stage.as_str(),
                    msg.replace('\n', "\n      | ")
                ));
                "FAILED".into()
            }
            StageStatus::Error(e) => {
                problems.push(format!("{} {}: {e}", r.host, r.stage.as_str()));
                "ERROR".into()
            }
            StageStatus::Skipped(why) => format!("skipped ({why})"),
        };
        let hooks = if hooks > 0 {
            format!(
                ", {hooks} hook{} {}",
                if hooks == 1 { "" } else { "s" },
                if check { "would run" } else { "ran" }
            )
        } else {
            String::new()
        };
        log.line(format!(
            "  {:<10} {:<16} {:>3} changed {:>3} unchanged {:>2} failed {:>6.1}s  {status}{hooks}",
            r.host,
            r.stage.as_str(),
            stage_changed,
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
    let hooks = if hooks_ran > 0 {
        format!(
            "; {hooks_ran} hook{} {} (hooks run on every deploy and are not counted as changes)",
            if hooks_ran == 1 { "" } else { "s" },
            if check { "would run" } else { "ran" }
        )
    } else {
        String::new()
    };
    if check {
        log.line(format!(
            "check: {changed} change(s) pending, {unchanged} resource(s) in state{hooks} ({secs:.1}s)"
        ));
        return Ok(if changed > 0 {
            DeployOutcome::Pending { changes: changed }
        } else {
            DeployOutcome::Converged { changed: 0 }
        });
    }
    log.line(format!(
        "deploy finished in {secs:.1}s: {changed} changed, {unchanged} unchanged{hooks}"
    ));
    Ok(DeployOutcome::Converged { changed })
}

/// Resource ids of the operator's hooks start with this (`hook:pre-deploy`).
pub const HOOK_PREFIX: &str = "hook:";

/// A hook event's message without the `hook:<point>: ` the agent puts before a failure.
pub fn hook_message<'a>(id: &str, message: &'a str) -> &'a str {
    message
        .strip_prefix(id)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message)
}

/// How many hooks ran (or would run) among `events`.
pub fn hooks_run(events: &[ResourceEvent]) -> u32 {
    events
        .iter()
        .filter(|e| {
            e.id.starts_with(HOOK_PREFIX)
                && matches!(e.outcome, Outcome::Changed | Outcome::WouldChange)
        })
        .count() as u32
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
                e.message.replace('\n', "\n      | ")
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

    #[test]
    fn hooks_are_counted_apart_and_a_failed_one_is_named() {
        let hook = |outcome| tpa_common::event::ResourceEvent {
            id: "hook:post-deploy".into(),
            outcome,
            diff: None,
            message: "exit status 3; the last lines of its output:\nfirst\nlast".into(),
            elapsed_ms: 5,
        };
        let mut ran = report("ulb", StageStatus::Done, 1);
        ran.events.push(hook(Outcome::Changed));
        let mut log = DeployLog::start("fosdem", false);
        let outcome = summarise(&[ran], &mut log, false, Instant::now()).unwrap();
        // The hook is not a change: a deploy whose only news is hooks reports 0 changed.
        assert_eq!(outcome, DeployOutcome::Converged { changed: 0 });
        assert!(
            log.text().contains(
                "0 changed, 3 unchanged; 1 hook ran (hooks run on every deploy and are not counted \
                 as changes)"
            ),
            "{}",
            log.text()
        );

        let mut would = report("ulb", StageStatus::Done, 0);
        would.summary.would_change = 1;
        would.events.push(hook(Outcome::WouldChange));
        let mut log = DeployLog::start("fosdem", true);
        let outcome = summarise(&[would], &mut log, true, Instant::now()).unwrap();
        assert_eq!(outcome, DeployOutcome::Converged { changed: 0 });
        assert!(log.text().contains("1 hook would run"), "{}", log.text());

        let mut failed = report(
            "vub",
            StageStatus::Failed(
                "hook:post-deploy".into(),
                "hook:post-deploy: exit status 3; the last lines of its output:\nfirst\nlast"
                    .into(),
            ),
            0,
        );
        failed.events.push(hook(Outcome::Failed));
        let mut log = DeployLog::start("fosdem", false);
        let error = summarise(&[failed], &mut log, false, Instant::now())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "vub sys: hook post-deploy failed on vub: exit status 3; the last lines of its \
                 output:\n      | first\n      | last"
            ),
            "{error}"
        );
    }
}
