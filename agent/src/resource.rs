//! The resource engine: applies a batch of [`ResourceSpec`]s in order, one [`ResourceEvent`] per
//! resource, and returns a [`BatchSummary`].
//!
//! Every kind module offers the same pair: `check` (observes, never mutates, says whether the
//! resource is in state and what would change) and `apply` (makes it so; idempotent). The engine
//! calls `apply` only when `check` found a difference and the batch is not in check-only mode.
//! After a failure the rest of the batch is `Skipped`: the controller orders stages, so later
//! resources may depend on the failed one.

pub mod command;
pub mod directory;
pub mod file;
pub mod owner;
pub mod packages;
pub mod run;
pub mod service;
pub mod sql;
pub mod user;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use tokio::sync::mpsc;
use tpa_common::event::{BatchSummary, Outcome, ResourceEvent};
use tpa_common::resource::{Resource, ResourceSpec};

use self::file::FileSpec;
use self::service::Trigger;

/// What a `check` observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// True when nothing needs to be done.
    pub in_state: bool,
    /// What would change, as a unified diff or short description; masked for secrets.
    pub diff: Option<String>,
    /// Short human-readable explanation; never secret.
    pub message: String,
}

impl State {
    /// The resource is already as desired.
    pub fn in_state(message: impl Into<String>) -> Self {
        State {
            in_state: true,
            diff: None,
            message: message.into(),
        }
    }

    /// The resource differs from the desired state.
    pub fn differs(diff: Option<String>, message: impl Into<String>) -> Self {
        State {
            in_state: false,
            diff,
            message: message.into(),
        }
    }
}

/// Why checking or applying a resource failed. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not run `{program}`: {source}; check that it is installed and in PATH")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown user `{0}`: create it with a user resource earlier in the batch")]
    UnknownUser(String),
    #[error("unknown group `{0}`: create it with a group resource earlier in the batch")]
    UnknownGroup(String),
    #[error("could not look up `{name}` in the user/group database: {source}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("invalid resource: {0}")]
    Invalid(String),
    /// A command or tool failed; the text says which and why.
    #[error("{0}")]
    Failed(String),
}

impl ResourceError {
    /// Shorthand for an IO error on a path.
    pub fn io(action: &'static str, path: impl Into<String>, source: std::io::Error) -> Self {
        ResourceError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Applies `resources` in order, sending one event per resource on `events`, and returns the
/// counts. With `check_only` nothing is mutated: out-of-state resources report `WouldChange`.
///
/// The batch runs on a blocking thread (resources run external tools). If the receiver of
/// `events` goes away the batch still runs to the end: stopping half-way through a stage would
/// leave the host half-done.
pub async fn apply_batch(
    resources: Vec<ResourceSpec>,
    check_only: bool,
    events: mpsc::Sender<ResourceEvent>,
) -> BatchSummary {
    let count = resources.len();
    let started = Instant::now();
    let joined = tokio::task::spawn_blocking(move || {
        apply_batch_blocking(&resources, check_only, &mut |event| {
            // A closed channel only means nobody listens any more; see above.
            let _ = events.blocking_send(event);
        })
    })
    .await;
    match joined {
        Ok(summary) => summary,
        Err(error) => {
            // Panics are caught per resource, so this is a cancelled runtime; report it as a failure.
            tracing::error!(%error, "resource batch thread ended abnormally");
            BatchSummary {
                failed: u32::try_from(count).unwrap_or(u32::MAX),
                elapsed_ms: elapsed_ms(started),
                ..BatchSummary::default()
            }
        }
    }
}

/// Synchronous core of [`apply_batch`]: calls `emit` once per resource, in order.
pub fn apply_batch_blocking(
    resources: &[ResourceSpec],
    check_only: bool,
    emit: &mut dyn FnMut(ResourceEvent),
) -> BatchSummary {
    let started = Instant::now();
    let mut batch = Batch {
        check_only,
        ..Batch::default()
    };
    batch.sql_in_state = prefetch_sql_checks(resources);
    let mut summary = BatchSummary::default();
    for spec in resources {
        let event = batch.process(spec);
        tracing::info!(id = %event.id, outcome = %event.outcome, elapsed_ms = event.elapsed_ms, message = %event.message);
        summary.record(event.outcome);
        emit(event);
    }
    summary.elapsed_ms = elapsed_ms(started);
    summary
}

/// Runs the batch's SQL checks together (see [`sql::prefetch_true`]); returns the ids in state.
fn prefetch_sql_checks(resources: &[ResourceSpec]) -> HashSet<String> {
    let sql: Vec<(&String, sql::SqlSpec<'_>)> = resources
        .iter()
        .filter_map(|r| Some((&r.id, sql::SqlSpec::of(&r.kind)?)))
        .collect();
    if sql.len() < 2 {
        return HashSet::new();
    }
    let specs: Vec<sql::SqlSpec<'_>> = sql.iter().map(|(_, s)| *s).collect();
    sql::prefetch_true(&specs)
        .into_iter()
        .map(|i| sql[i].0.clone())
        .collect()
}

/// A kind that a view constructor did not recognise: cannot happen for the arms that call it.
fn unexpected(kind: &Resource) -> ResourceError {
    ResourceError::Failed(format!(
        "internal error: unexpected {} resource",
        kind.kind_name()
    ))
}

/// What the engine remembers while walking a batch.
#[derive(Default)]
struct Batch {
    check_only: bool,
    /// Ids seen so far (to reject duplicates and forward references in `restart_on`).
    seen: HashSet<String>,
    /// Ids that changed (or would change, in check mode) so far.
    changed: HashSet<String>,
    /// A unit file changed since the last `systemctl daemon-reload`.
    units_dirty: bool,
    /// The first failure; everything after it is skipped.
    failed: Option<String>,
    /// Ids of SQL resources whose check, run together before the batch, returned true: in
    /// state as long as nothing earlier in the batch changed.
    sql_in_state: HashSet<String>,
}

impl Batch {
    fn process(&mut self, spec: &ResourceSpec) -> ResourceEvent {
        let started = Instant::now();
        let event = |outcome, diff, message: String| ResourceEvent {
            id: spec.id.clone(),
            outcome,
            diff,
            message,
            elapsed_ms: elapsed_ms(started),
        };
        if let Some(failed) = &self.failed {
            return event(
                Outcome::Skipped,
                None,
                format!("skipped: `{failed}` failed earlier in this batch"),
            );
        }
        if !self.seen.insert(spec.id.clone()) {
            self.failed = Some(spec.id.clone());
            return event(
                Outcome::Failed,
                None,
                format!(
                    "duplicate resource id `{}` in batch; ids must be unique",
                    spec.id
                ),
            );
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.check_and_apply(spec)));
        let (outcome, diff, message) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => (Outcome::Failed, None, format!("{}: {error}", spec.id)),
            Err(_) => (
                Outcome::Failed,
                None,
                format!(
                    "{}: internal error (panic) in the agent; see the agent's journal",
                    spec.id
                ),
            ),
        };
        match outcome {
            Outcome::Changed | Outcome::WouldChange => {
                self.changed.insert(spec.id.clone());
                if is_unit_file(&spec.kind) {
                    self.units_dirty = true;
                } else if self.check_only && matches!(spec.kind, Resource::Service { .. }) {
                    // The daemon-reload this service would run covers later services too.
                    self.units_dirty = false;
                }
            }
            Outcome::Failed => self.failed = Some(spec.id.clone()),
            Outcome::Unchanged | Outcome::Skipped => {}
        }
        event(outcome, diff, message)
    }

    fn check_and_apply(
        &mut self,
        spec: &ResourceSpec,
    ) -> Result<(Outcome, Option<String>, String), ResourceError> {
        if self.changed.is_empty() && self.sql_in_state.contains(&spec.id) {
            return Ok((
                Outcome::Unchanged,
                None,
                "check query returned true".to_owned(),
            ));
        }
        let state = self.check(&spec.kind)?;
        if state.in_state {
            return Ok((Outcome::Unchanged, None, state.message));
        }
        if self.check_only {
            return Ok((Outcome::WouldChange, state.diff, state.message));
        }
        let message = self.apply(&spec.kind)?;
        Ok((Outcome::Changed, state.diff, message))
    }

    fn check(&self, kind: &Resource) -> Result<State, ResourceError> {
        match kind {
            Resource::Packages { names } => packages::check(names),
            Resource::File { .. } | Resource::FileIfAbsent { .. } => {
                let spec = FileSpec::of(kind).ok_or_else(|| unexpected(kind))?;
                if matches!(kind, Resource::FileIfAbsent { .. }) {
                    file::check_if_absent(&spec)
                } else {
                    file::check(&spec)
                }
            }
            Resource::Directory {
                path,
                owner,
                group,
                mode,
            } => directory::check(path, owner, group, *mode),
            Resource::Group { name, system: _ } => user::check_group(name),
            Resource::User {
                name,
                group,
                home,
                shell,
                system: _,
            } => user::check_user(name, group, home, shell),
            Resource::Service {
                unit,
                enabled,
                running,
                reload_on,
                restart_on,
            } => {
                let trigger = self.trigger(reload_on, restart_on)?;
                let state = service::check(unit, *enabled, *running, &trigger)?;
                Ok(with_pending_daemon_reload(state, self.units_dirty))
            }
            Resource::Command {
                argv,
                creates,
                unless,
                run_as,
                env,
                secret_env,
            } => command::check(
                argv,
                creates.as_deref(),
                unless.as_deref(),
                run_as.as_deref(),
                env,
                *secret_env,
            ),
            Resource::Sql { .. } => {
                sql::check(&sql::SqlSpec::of(kind).ok_or_else(|| unexpected(kind))?)
            }
        }
    }

    fn apply(&mut self, kind: &Resource) -> Result<String, ResourceError> {
        match kind {
            Resource::Packages { names } => packages::apply(names),
            Resource::File { .. } | Resource::FileIfAbsent { .. } => {
                let spec = FileSpec::of(kind).ok_or_else(|| unexpected(kind))?;
                if matches!(kind, Resource::FileIfAbsent { .. }) {
                    file::apply_if_absent(&spec)
                } else {
                    file::apply(&spec)
                }
            }
            Resource::Directory {
                path,
                owner,
                group,
                mode,
            } => directory::apply(path, owner, group, *mode),
            Resource::Group { name, system } => user::apply_group(name, *system),
            Resource::User {
                name,
                group,
                home,
                shell,
                system,
            } => user::apply_user(name, group, home, shell, *system),
            Resource::Service {
                unit,
                enabled,
                running,
                reload_on,
                restart_on,
            } => {
                let trigger = self.trigger(reload_on, restart_on)?;
                let mut message = String::new();
                if self.units_dirty {
                    service::daemon_reload()?;
                    self.units_dirty = false;
                    message.push_str("daemon-reload, ");
                }
                message.push_str(&service::apply(unit, *enabled, *running, &trigger)?);
                Ok(message)
            }
            Resource::Command {
                argv,
                creates: _,
                unless: _,
                run_as,
                env,
                secret_env,
            } => command::apply(argv, run_as.as_deref(), env, *secret_env),
            Resource::Sql { .. } => {
                sql::apply(&sql::SqlSpec::of(kind).ok_or_else(|| unexpected(kind))?)
            }
        }
    }

    fn trigger(
        &self,
        reload_on: &[String],
        restart_on: &[String],
    ) -> Result<Trigger, ResourceError> {
        if let Some(unknown) = reload_on
            .iter()
            .chain(restart_on)
            .find(|id| !self.seen.contains(*id))
        {
            return Err(ResourceError::Invalid(format!(
                "`{unknown}` in reload_on/restart_on is not an earlier resource of this batch; \
                 the controller must order it before the service"
            )));
        }
        Ok(service::trigger(reload_on, restart_on, &self.changed))
    }
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

/// Directories whose files are systemd units: a change there needs `systemctl daemon-reload`.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system/",
    "/lib/systemd/system/",
    "/usr/lib/systemd/system/",
];

/// True for file resources that write a systemd unit (or a drop-in).
fn is_unit_file(kind: &Resource) -> bool {
    match kind {
        Resource::File { path, .. } | Resource::FileIfAbsent { path, .. } => {
            UNIT_DIRS.iter().any(|dir| path.starts_with(dir))
        }
        _ => false,
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_spec(id: &str, path: &str, content: &str) -> ResourceSpec {
        ResourceSpec {
            id: id.into(),
            kind: Resource::File {
                path: path.into(),
                content: content.as_bytes().to_vec(),
                owner: "root".into(),
                group: "root".into(),
                mode: 0o644,
                secret: false,
            },
        }
    }

    /// File resources here chown to root, which needs root.
    fn root() -> bool {
        let root = owner::is_root();
        if !root {
            eprintln!("skipping: needs root to chown test files to root");
        }
        root
    }

    fn run(resources: &[ResourceSpec], check_only: bool) -> (Vec<ResourceEvent>, BatchSummary) {
        let mut events = Vec::new();
        let summary = apply_batch_blocking(resources, check_only, &mut |e| events.push(e));
        (events, summary)
    }

    fn outcomes(events: &[ResourceEvent]) -> Vec<Outcome> {
        events.iter().map(|e| e.outcome).collect()
    }

    #[test]
    fn failure_skips_the_rest_of_the_batch() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = dir.path().join("a.conf");
        let missing_parent = dir.path().join("no/such/dir/b.conf");
        let resources = [
            file_spec("a", ok.to_str().expect("utf8"), "a\n"),
            file_spec("b", missing_parent.to_str().expect("utf8"), "b\n"),
            file_spec(
                "c",
                dir.path().join("c.conf").to_str().expect("utf8"),
                "c\n",
            ),
        ];
        let (events, summary) = run(&resources, false);
        assert_eq!(
            outcomes(&events),
            [Outcome::Changed, Outcome::Failed, Outcome::Skipped]
        );
        assert!(
            events[1].message.contains("does not exist"),
            "{}",
            events[1].message
        );
        assert!(
            events[2].message.contains("`b` failed"),
            "{}",
            events[2].message
        );
        assert_eq!(
            (summary.changed, summary.failed, summary.skipped),
            (1, 1, 1)
        );
        assert!(
            !dir.path().join("c.conf").exists(),
            "a skipped resource must not be applied"
        );
    }

    #[test]
    fn duplicate_ids_fail() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.conf");
        let path = path.to_str().expect("utf8");
        let (events, _) = run(
            &[file_spec("a", path, "1\n"), file_spec("a", path, "2\n")],
            false,
        );
        assert_eq!(outcomes(&events), [Outcome::Changed, Outcome::Failed]);
        assert!(events[1].message.contains("duplicate"));
    }

    #[test]
    fn check_only_reports_would_change_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.conf");
        let (events, summary) = run(
            &[file_spec("a", path.to_str().expect("utf8"), "x = 1\n")],
            true,
        );
        assert_eq!(outcomes(&events), [Outcome::WouldChange]);
        assert!(
            events[0]
                .diff
                .as_deref()
                .unwrap_or_default()
                .contains("+x = 1")
        );
        assert_eq!(summary.would_change, 1);
        assert!(!path.exists());
    }

    #[test]
    fn restart_on_must_name_an_earlier_resource() {
        let service = ResourceSpec {
            id: "service:postgres".into(),
            kind: Resource::Service {
                unit: "postgres.service".into(),
                enabled: true,
                running: true,
                reload_on: vec![],
                restart_on: vec!["file:later".into()],
            },
        };
        let (events, _) = run(&[service], true);
        assert_eq!(outcomes(&events), [Outcome::Failed]);
        assert!(
            events[0].message.contains("`file:later`"),
            "{}",
            events[0].message
        );
    }

    #[test]
    fn changes_in_the_batch_drive_service_triggers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("postgresql.conf");
        let hba = dir.path().join("pg_hba.conf");
        fs_write(&hba, "local all all peer\n");
        let mut batch = Batch {
            check_only: true,
            ..Batch::default()
        };
        let events: Vec<_> = [
            file_spec("conf", conf.to_str().expect("utf8"), "port = 5432\n"),
            file_spec("hba", hba.to_str().expect("utf8"), "local all all peer\n"),
        ]
        .iter()
        .map(|spec| batch.process(spec))
        .collect();
        let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        if root() {
            // hba is unchanged (content and root ownership match), conf would be created.
            assert_eq!(
                outcomes(&events),
                [Outcome::WouldChange, Outcome::Unchanged]
            );
            let restart = batch
                .trigger(&owned(&["hba"]), &owned(&["conf"]))
                .expect("known ids");
            assert_eq!(restart, Trigger::Restart { by: "conf".into() });
            let none = batch.trigger(&owned(&["hba"]), &[]).expect("known ids");
            assert_eq!(none, Trigger::None);
        }
        assert!(batch.trigger(&owned(&["later"]), &[]).is_err());
    }

    fn fs_write(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).expect("seed file");
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
    fn unit_files_are_recognised() {
        let unit = file_spec("u", "/etc/systemd/system/postgres.service", "");
        let drop_in = file_spec(
            "d",
            "/etc/systemd/system/postgres.service.d/override.conf",
            "",
        );
        let other = file_spec("o", "/etc/postgresql/main.conf", "");
        assert!(is_unit_file(&unit.kind));
        assert!(is_unit_file(&drop_in.kind));
        assert!(!is_unit_file(&other.kind));
    }

    #[tokio::test]
    async fn async_batch_streams_events() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.conf");
        let (tx, mut rx) = mpsc::channel(8);
        let summary = apply_batch(
            vec![file_spec("a", path.to_str().expect("utf8"), "a\n")],
            false,
            tx,
        )
        .await;
        let event = rx.recv().await.expect("one event");
        assert_eq!(event.outcome, Outcome::Changed);
        assert_eq!(summary.changed, 1);
        assert!(rx.recv().await.is_none());
    }
}
