//! `Service` resource: a systemd unit's enabled/running state, plus reload or restart when a
//! resource it depends on changed earlier in the same batch.
//!
//! Example spec: `Service { unit: "postgres.service", enabled: true, running: true,
//! reload_on: ["file:/opt/postgres/data/pg_hba.conf"], restart_on: ["file:/etc/systemd/system/postgres.service"] }`.
//!
//! Rules: restart wins over reload; a unit this resource starts is not also restarted or reloaded
//! (it starts with the new configuration); a unit that should be stopped is never restarted.
//! `daemon-reload` runs before the first service after a unit file changed in the batch, unless
//! systemd has already read every changed file as it is (a new unit is read from its file when
//! first used): see [`any_needs_reload`].

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use tpa_common::resource::Service;

use super::{Apply, Ctx, ResourceError, State, run};

/// Why a running unit must be reloaded or restarted, decided from the batch so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    None,
    /// A `reload_on` resource (this id) changed, and no `restart_on` one did.
    Reload {
        by: String,
    },
    /// A `restart_on` resource (this id) changed.
    Restart {
        by: String,
    },
}

/// Decides the trigger from the ids changed so far in the batch (restart wins over reload).
pub fn trigger(reload_on: &[String], restart_on: &[String], changed: &HashSet<String>) -> Trigger {
    if let Some(by) = restart_on.iter().find(|id| changed.contains(*id)) {
        return Trigger::Restart { by: by.clone() };
    }
    if let Some(by) = reload_on.iter().find(|id| changed.contains(*id)) {
        return Trigger::Reload { by: by.clone() };
    }
    Trigger::None
}

/// What `systemctl is-enabled` (UnitFileState) says, reduced to what matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enablement {
    Enabled,
    Disabled,
    /// static, alias, indirect, generated, transient: not ours to change, accepted as is.
    Fixed,
}

/// The observed state of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub enablement: Enablement,
    pub active: bool,
}

/// One systemctl action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Reload,
}

impl Step {
    /// The systemctl verb.
    pub fn verb(self) -> &'static str {
        match self {
            Step::Enable => "enable",
            Step::Disable => "disable",
            Step::Start => "start",
            Step::Stop => "stop",
            Step::Restart => "restart",
            Step::Reload => "reload",
        }
    }
}

/// The actions that take a unit from `observed` to the desired state (empty: in state).
pub fn plan(observed: Observed, enabled: bool, running: bool, trigger: &Trigger) -> Vec<Step> {
    let mut steps = Vec::new();
    match (observed.enablement, enabled) {
        (Enablement::Disabled, true) => steps.push(Step::Enable),
        (Enablement::Enabled, false) => steps.push(Step::Disable),
        _ => {}
    }
    match (observed.active, running) {
        (false, true) => steps.push(Step::Start),
        (true, false) => steps.push(Step::Stop),
        (true, true) => match trigger {
            Trigger::Restart { .. } => steps.push(Step::Restart),
            Trigger::Reload { .. } => steps.push(Step::Reload),
            Trigger::None => {}
        },
        (false, false) => {}
    }
    steps
}

/// Parses `systemctl is-enabled` output; unknown or missing units count as disabled.
pub fn parse_is_enabled(output: &str) -> Enablement {
    match output.trim() {
        "enabled" | "enabled-runtime" => Enablement::Enabled,
        "static" | "alias" | "indirect" | "generated" | "transient" => Enablement::Fixed,
        _ => Enablement::Disabled,
    }
}

/// Parses `systemctl is-active` output.
pub fn parse_is_active(output: &str) -> bool {
    matches!(output.trim(), "active" | "reloading" | "activating")
}

impl Apply for Service {
    /// Observes the unit and plans from the batch so far; never changes anything.
    fn check(&self, ctx: &Ctx) -> Result<State, ResourceError> {
        let trigger = ctx.trigger(&self.reload_on, &self.restart_on)?;
        let steps = plan(
            observe(&self.unit, ctx)?,
            self.enabled,
            self.running,
            &trigger,
        );
        let state = if steps.is_empty() {
            State::in_state(describe_state(self.enabled, self.running))
        } else {
            State::differs(None, describe(&steps, &trigger))
        };
        Ok(with_pending_daemon_reload(state, ctx.units_dirty()))
    }

    /// `daemon-reload` if systemd has not read a changed unit file as it is, then the planned
    /// systemctl actions; idempotent (observes first). A reload costs about 0.2 s of CPU here,
    /// so none runs that is not needed: a new unit is read from its file when first used, and
    /// `enable`/`disable` get `--no-reload` unless they stand in for a needed reload (they
    /// reload systemd themselves).
    fn apply(&self, ctx: &mut Ctx) -> Result<String, ResourceError> {
        let trigger = ctx.trigger(&self.reload_on, &self.restart_on)?;
        require_systemd()?;
        let steps = plan(
            observe(&self.unit, ctx)?,
            self.enabled,
            self.running,
            &trigger,
        );
        let mut message = String::new();
        let reload = ctx.units_dirty() && needs_daemon_reload(ctx);
        if reload {
            if !reloads_systemd(&steps) {
                run::run_checked(&["systemctl", "daemon-reload"], ctx.timeouts.systemctl)?;
            }
            message.push_str("daemon-reload, ");
        }
        for step in &steps {
            let no_reload = !reload && matches!(step, Step::Enable | Step::Disable);
            let argv = if no_reload {
                vec!["systemctl", step.verb(), "--no-reload", &self.unit]
            } else {
                vec!["systemctl", step.verb(), &self.unit]
            };
            run::run_checked(&argv, ctx.timeouts.systemctl)?;
        }
        // Whichever ran it (or none was needed), systemd has read the changed unit files.
        ctx.daemon_reloaded();
        if steps.is_empty() {
            message.push_str(&describe_state(self.enabled, self.running));
        } else {
            message.push_str(&describe(&steps, &trigger));
        }
        Ok(message)
    }
}

/// True unless systemd has read every changed unit file as it is now: it must name the file as
/// the unit's `FragmentPath` or one of its `DropInPaths`, and see nothing newer on disk
/// (`NeedDaemonReload=no`). A new unit passes (asking loads it from its file); a changed
/// file of a loaded unit, or a file that overrides the one systemd loaded (ours in
/// /etc/systemd/system over a package's in /lib), does not. True too when systemd cannot say:
/// a needless reload only costs time.
fn needs_daemon_reload(ctx: &Ctx) -> bool {
    let dirty = ctx.dirty_units();
    let mut argv = vec![
        "systemctl",
        "show",
        "--property=NeedDaemonReload,FragmentPath,DropInPaths",
    ];
    argv.extend(dirty.keys().map(String::as_str));
    match run::run_checked(&argv, ctx.timeouts.probe) {
        Ok(output) => {
            let changed: Vec<&BTreeSet<String>> = dirty.values().collect();
            any_needs_reload(&output.stdout_text(), &changed)
        }
        Err(_) => true,
    }
}

/// Decides [`needs_daemon_reload`] from `systemctl show`'s output: one block per unit, in the
/// order asked, with the paths that changed for each.
pub fn any_needs_reload(output: &str, changed: &[&BTreeSet<String>]) -> bool {
    let blocks: Vec<&str> = output
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    if blocks.len() != changed.len() {
        return true;
    }
    blocks.iter().zip(changed).any(|(block, paths)| {
        let value = |key: &str| show_value(block, key);
        let known: Vec<&str> = value("FragmentPath")
            .into_iter()
            .chain(value("DropInPaths").unwrap_or("").split_whitespace())
            .collect();
        value("NeedDaemonReload") != Some("no")
            || paths.iter().any(|p| !known.contains(&p.as_str()))
    })
}

/// True when the steps reload systemd's configuration on their own: `systemctl enable` and
/// `disable` do, before any step after them (plan puts them first).
pub fn reloads_systemd(steps: &[Step]) -> bool {
    steps
        .first()
        .is_some_and(|s| matches!(s, Step::Enable | Step::Disable))
}

/// A changed unit file makes the next service out of state: `daemon-reload` must run even when
/// the unit itself needs nothing else.
fn with_pending_daemon_reload(state: State, units_dirty: bool) -> State {
    if !units_dirty {
        return state;
    }
    if state.in_state {
        return State::differs(None, "daemon-reload (a unit file changed)");
    }
    State::differs(state.diff, format!("daemon-reload, {}", state.message))
}

fn observe(unit: &str, ctx: &Ctx) -> Result<Observed, ResourceError> {
    require_systemd()?;
    // One process for both: what `is-enabled` and `is-active` would say.
    let output = run::run_checked(
        &[
            "systemctl",
            "show",
            "--property=UnitFileState,ActiveState",
            unit,
        ],
        ctx.timeouts.probe,
    )?;
    Ok(parse_show(&output.stdout_text()))
}

/// Parses `systemctl show --property=UnitFileState,ActiveState` (`Key=value` lines, in any
/// order); a unit that does not exist has an empty UnitFileState and is disabled.
pub fn parse_show(output: &str) -> Observed {
    let value = |key: &str| show_value(output, key).unwrap_or("");
    Observed {
        enablement: parse_is_enabled(value("UnitFileState")),
        active: parse_is_active(value("ActiveState")),
    }
}

/// The value of `key` in one unit's `systemctl show` output (`Key=value` lines).
fn show_value<'a>(output: &'a str, key: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// True when systemd is PID 1 (`sd_booted()`'s test).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn require_systemd() -> Result<(), ResourceError> {
    if systemd_running() {
        Ok(())
    } else {
        Err(ResourceError::Failed(
            "systemd is not running on this host (no /run/systemd/system); services cannot be managed here".to_owned(),
        ))
    }
}

fn describe(steps: &[Step], trigger: &Trigger) -> String {
    let verbs: Vec<&str> = steps.iter().map(|s| s.verb()).collect();
    let reason = match trigger {
        Trigger::Restart { by } if steps.contains(&Step::Restart) => {
            format!(" (restart_on `{by}` changed)")
        }
        Trigger::Reload { by } if steps.contains(&Step::Reload) => {
            format!(" (reload_on `{by}` changed)")
        }
        _ => String::new(),
    };
    format!("{}{reason}", verbs.join(", "))
}

fn describe_state(enabled: bool, running: bool) -> String {
    format!(
        "{}, {}",
        if enabled { "enabled" } else { "disabled" },
        if running { "running" } else { "stopped" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn changed(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    const RUNNING: Observed = Observed {
        enablement: Enablement::Enabled,
        active: true,
    };
    const STOPPED: Observed = Observed {
        enablement: Enablement::Disabled,
        active: false,
    };

    #[test]
    fn restart_wins_over_reload() {
        let t = trigger(
            &ids(&["hba"]),
            &ids(&["unit", "conf"]),
            &changed(&["hba", "conf"]),
        );
        assert_eq!(t, Trigger::Restart { by: "conf".into() });
        let t = trigger(&ids(&["hba"]), &ids(&["conf"]), &changed(&["hba", "other"]));
        assert_eq!(t, Trigger::Reload { by: "hba".into() });
        assert_eq!(
            trigger(&ids(&["hba"]), &ids(&["conf"]), &changed(&["other"])),
            Trigger::None
        );
        assert_eq!(trigger(&[], &[], &changed(&["x"])), Trigger::None);
    }

    #[test]
    fn running_unit_is_restarted_or_reloaded() {
        let restart = Trigger::Restart { by: "conf".into() };
        let reload = Trigger::Reload { by: "hba".into() };
        assert_eq!(plan(RUNNING, true, true, &restart), [Step::Restart]);
        assert_eq!(plan(RUNNING, true, true, &reload), [Step::Reload]);
        assert_eq!(plan(RUNNING, true, true, &Trigger::None), []);
    }

    #[test]
    fn unit_started_now_is_not_restarted_too() {
        let restart = Trigger::Restart { by: "conf".into() };
        assert_eq!(
            plan(STOPPED, true, true, &restart),
            [Step::Enable, Step::Start]
        );
    }

    #[test]
    fn stopped_unit_is_stopped_and_never_restarted() {
        let restart = Trigger::Restart { by: "conf".into() };
        assert_eq!(
            plan(RUNNING, false, false, &restart),
            [Step::Disable, Step::Stop]
        );
        assert_eq!(plan(STOPPED, false, false, &restart), []);
    }

    #[test]
    fn static_units_are_accepted_either_way() {
        let fixed = Observed {
            enablement: Enablement::Fixed,
            active: true,
        };
        assert_eq!(plan(fixed, true, true, &Trigger::None), []);
        assert_eq!(plan(fixed, false, true, &Trigger::None), []);
    }

    #[test]
    fn parses_systemctl_output() {
        assert_eq!(parse_is_enabled("enabled\n"), Enablement::Enabled);
        assert_eq!(parse_is_enabled("static\n"), Enablement::Fixed);
        assert_eq!(parse_is_enabled("disabled\n"), Enablement::Disabled);
        assert_eq!(parse_is_enabled(""), Enablement::Disabled);
        assert!(parse_is_active("active\n"));
        assert!(!parse_is_active("inactive\n"));
        assert!(!parse_is_active("failed\n"));
        assert_eq!(
            parse_show("ActiveState=active\nUnitFileState=enabled\n"),
            Observed {
                enablement: Enablement::Enabled,
                active: true
            }
        );
        // A unit that does not exist.
        assert_eq!(
            parse_show("UnitFileState=\nActiveState=inactive\n"),
            Observed {
                enablement: Enablement::Disabled,
                active: false
            }
        );
        assert_eq!(
            parse_show("UnitFileState=static\nActiveState=activating\n"),
            Observed {
                enablement: Enablement::Fixed,
                active: true
            }
        );
    }

    #[test]
    fn description_names_the_trigger() {
        let restart = Trigger::Restart {
            by: "file:conf".into(),
        };
        assert_eq!(
            describe(&[Step::Restart], &restart),
            "restart (restart_on `file:conf` changed)"
        );
        assert_eq!(
            describe(&[Step::Enable, Step::Start], &restart),
            "enable, start"
        );
    }

    #[test]
    fn enable_and_disable_stand_in_for_daemon_reload() {
        let new_unit = Observed {
            enablement: Enablement::Disabled,
            active: false,
        };
        let steps = plan(new_unit, true, true, &Trigger::None);
        assert_eq!(steps, [Step::Enable, Step::Start]);
        assert!(reloads_systemd(&steps));
        let steps = plan(RUNNING, false, false, &Trigger::None);
        assert_eq!(steps, [Step::Disable, Step::Stop]);
        assert!(reloads_systemd(&steps));
        // An enabled unit whose file changed is restarted after an explicit daemon-reload.
        let restart = Trigger::Restart {
            by: "file:/etc/systemd/system/x.service".into(),
        };
        assert!(!reloads_systemd(&plan(RUNNING, true, true, &restart)));
        assert!(!reloads_systemd(&[]));
    }

    #[test]
    fn a_reload_is_needed_unless_systemd_has_read_every_changed_file() {
        let paths = |items: &[&str]| -> BTreeSet<String> {
            items.iter().map(|s| (*s).to_owned()).collect()
        };
        let unit = paths(&["/etc/systemd/system/x.service"]);
        let drop_in = paths(&["/etc/systemd/system/y.service.d/tpa.conf"]);
        let read =
            "NeedDaemonReload=no\nFragmentPath=/etc/systemd/system/x.service\nDropInPaths=\n";
        let y_read = "NeedDaemonReload=no\nFragmentPath=/lib/systemd/system/y.service\n\
                      DropInPaths=/etc/systemd/system/y.service.d/a.conf /etc/systemd/system/y.service.d/tpa.conf\n";
        // A new unit, and a drop-in systemd has read: no reload.
        assert!(!any_needs_reload(read, &[&unit]));
        assert!(!any_needs_reload(
            &format!("{read}\n{y_read}"),
            &[&unit, &drop_in]
        ));
        // A loaded unit whose file changed.
        let stale = read.replace("=no", "=yes");
        assert!(any_needs_reload(&stale, &[&unit]));
        // Ours in /etc overrides the package's unit systemd loaded from /lib: systemd says
        // `no`, but it runs the other file.
        let overridden =
            "NeedDaemonReload=no\nFragmentPath=/lib/systemd/system/x.service\nDropInPaths=\n";
        assert!(any_needs_reload(overridden, &[&unit]));
        // A drop-in systemd does not know of yet.
        let no_drop_in =
            "NeedDaemonReload=no\nFragmentPath=/lib/systemd/system/y.service\nDropInPaths=\n";
        assert!(any_needs_reload(no_drop_in, &[&drop_in]));
        // systemd said less than asked, or something else: reload, to be sure.
        assert!(any_needs_reload(read, &[&unit, &drop_in]));
        assert!(any_needs_reload("", &[&unit]));
        assert!(any_needs_reload(&read.replace("=no", "=maybe"), &[&unit]));
    }

    #[test]
    fn changed_unit_file_makes_service_out_of_state() {
        let in_state = State::in_state("enabled, running");
        assert_eq!(
            with_pending_daemon_reload(in_state.clone(), false),
            in_state
        );
        let pending = with_pending_daemon_reload(in_state, true);
        assert!(!pending.in_state);
        assert_eq!(pending.message, "daemon-reload (a unit file changed)");
        let restart = with_pending_daemon_reload(State::differs(None, "restart"), true);
        assert_eq!(restart.message, "daemon-reload, restart");
    }

    #[test]
    fn without_systemd_check_fails_clearly() {
        if systemd_running() {
            eprintln!("skipping: systemd is running here; this test covers hosts without it");
            return;
        }
        let service = Service {
            unit: "tpa-test.service".into(),
            enabled: true,
            running: true,
            reload_on: vec![],
            restart_on: vec![],
        };
        let error = service.check(&Ctx::default()).expect_err("no systemd");
        assert!(error.to_string().contains("systemd is not running"));
    }
}
