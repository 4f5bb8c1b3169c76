//! Run: applies a plan through the agents (the orchestrator decides the order), with a spinner
//! per host and one block of lines per finished stage.

use std::collections::BTreeMap;

use tpa_common::event::Outcome;

use super::report;
use crate::agent_client::{AgentClient, ApplyMode, ApplyResult};
use crate::orchestrator::{self, StageReport};
use crate::planner::{Plan, Stage};
use crate::progress::Progress;

/// Applies every stage of `plan` on its host's agent (`check`: report only), at most `forks`
/// stages at once.
pub async fn apply(
    plan: &Plan,
    agents: &BTreeMap<String, AgentClient>,
    check: bool,
    verbose: bool,
    forks: usize,
) -> Vec<StageReport> {
    let progress = Progress::new(plan.hosts.keys().map(String::as_str));
    let progress = &progress;
    let reports = orchestrator::run(plan, forks, check, |host: String, stage: Stage, mode| {
        let mut client = agents.get(&host).cloned();
        async move {
            let name = stage.name.as_str();
            match mode {
                ApplyMode::Probe => progress.stage(&host, &format!("{name} (checking)")),
                _ => progress.stage(&host, name),
            }
            let client = client
                .as_mut()
                .ok_or_else(|| format!("no agent connection to {host}"))?;
            let result = client
                .apply(stage.resources, mode)
                .await
                .map_err(|e| format!("{e:#}"))?;
            // A probe that found work says nothing: the stage waits, then applies and prints.
            if mode != ApplyMode::Probe || orchestrator::in_state(&result.events) {
                // One print per stage, so hosts' lines never interleave.
                progress.println(&stage_lines(&host, name, &result, check, verbose).join("\n"));
            }
            Ok(result.events)
        }
    })
    .await;
    progress.finish();
    reports
}

/// What a finished stage prints: a count line, each hook's exit status and output (always),
/// and with `verbose` or `check` each resource that changed (with its diff under `check`).
fn stage_lines(
    host: &str,
    stage: &str,
    result: &ApplyResult,
    check: bool,
    verbose: bool,
) -> Vec<String> {
    let hooks = report::hooks_run(&result.events) as usize;
    let changed = result
        .events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Changed | Outcome::WouldChange))
        .count()
        - hooks;
    let hook_count = match hooks {
        0 => String::new(),
        n => format!(
            ", {n} hook{} {}",
            if n == 1 { "" } else { "s" },
            if check { "would run" } else { "ran" }
        ),
    };
    let mut lines = vec![format!(
        "[{host}] {stage}: {} resources, {changed} {}{hook_count} ({:.1}s)",
        result.events.len(),
        if check { "would change" } else { "changed" },
        result.summary.elapsed_ms as f64 / 1000.0
    )];
    let (hook_events, events): (Vec<_>, Vec<_>) = result
        .events
        .iter()
        .partition(|e| e.id.starts_with(report::HOOK_PREFIX));
    for e in hook_events {
        let point = &e.id[report::HOOK_PREFIX.len()..];
        let mut message = report::hook_message(&e.id, &e.message).lines();
        let head = message.next().unwrap_or_default();
        match e.outcome {
            Outcome::WouldChange => lines.push(format!("[{host}]   would run hook {point}")),
            Outcome::Changed => lines.push(format!("[{host}] hook {point}: {head}")),
            Outcome::Failed => lines.push(format!("[{host}] hook {point} FAILED: {head}")),
            Outcome::Skipped => lines.push(format!("[{host}] hook {point}: skipped")),
            Outcome::Unchanged => {}
        }
        lines.extend(message.map(|l| format!("[{host}] {point} | {l}")));
    }
    if !(verbose || check) {
        // A command's own report (its `tpa: ` lines, e.g. how a former primary was rejoined)
        // is news even without -v.
        for e in events.iter().filter(|e| e.outcome == Outcome::Changed) {
            if let Some((_, report)) = e.message.split_once("`: ") {
                lines.push(format!("[{host}]   {}: {report}", e.id));
            }
        }
    }
    if verbose || check {
        for e in events.iter().filter(|e| e.outcome != Outcome::Unchanged) {
            let reason = if e.message.is_empty() {
                String::new()
            } else {
                format!(": {}", e.message)
            };
            lines.push(format!("[{host}]   {} {}{reason}", e.outcome, e.id));
            if let Some(diff) = e.diff.as_deref().filter(|_| check) {
                lines.extend(diff.lines().map(|l| format!("[{host}]       {l}")));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use tpa_common::event::{BatchSummary, ResourceEvent};

    use super::*;

    fn result() -> ApplyResult {
        let event = |id: &str, outcome, diff: Option<&str>| ResourceEvent {
            id: id.into(),
            outcome,
            diff: diff.map(str::to_string),
            message: String::new(),
            elapsed_ms: 1,
        };
        ApplyResult {
            events: vec![
                event("file:/etc/a", Outcome::WouldChange, Some("-x\n+y")),
                event("packages:base", Outcome::Unchanged, None),
            ],
            summary: BatchSummary {
                elapsed_ms: 1200,
                ..Default::default()
            },
        }
    }

    #[test]
    fn hooks_print_their_output_and_are_counted_apart() {
        let hook = |outcome, message: &str| ResourceEvent {
            id: "hook:pre-deploy".into(),
            outcome,
            diff: None,
            message: message.into(),
            elapsed_ms: 1,
        };
        let mut ran = result();
        ran.events[0].outcome = Outcome::Unchanged;
        ran.events
            .push(hook(Outcome::Changed, "exit status 0\nhello\nworld"));
        expect![[r#"
            [ulb] sys: 3 resources, 0 changed, 1 hook ran (1.2s)
            [ulb] hook pre-deploy: exit status 0
            [ulb] pre-deploy | hello
            [ulb] pre-deploy | world"#]]
        .assert_eq(&stage_lines("ulb", "sys", &ran, false, false).join("\n"));
        let mut check = result();
        check
            .events
            .push(hook(Outcome::WouldChange, "a hook runs on every deploy"));
        expect![[r#"
            [ulb] sys: 3 resources, 1 would change, 1 hook would run (1.2s)
            [ulb]   would run hook pre-deploy
            [ulb]   would change file:/etc/a
            [ulb]       -x
            [ulb]       +y"#]]
        .assert_eq(&stage_lines("ulb", "sys", &check, true, false).join("\n"));
    }

    #[test]
    fn quiet_apply_prints_one_line_and_check_prints_diffs() {
        expect![[r#"[ulb] sys: 2 resources, 1 changed (1.2s)"#]]
            .assert_eq(&stage_lines("ulb", "sys", &result(), false, false).join("\n"));
        expect![[r#"
            [ulb] sys: 2 resources, 1 would change (1.2s)
            [ulb]   would change file:/etc/a
            [ulb]       -x
            [ulb]       +y"#]]
        .assert_eq(&stage_lines("ulb", "sys", &result(), true, false).join("\n"));
    }
}
