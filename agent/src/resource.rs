//! The resource engine: applies a batch of [`ResourceSpec`]s in order, one [`ResourceEvent`] per
//! resource, and returns a [`BatchSummary`].
//!
//! Every kind has one file below `resource/` implementing [`Apply`]: `check` (observes, never
//! mutates, says whether the resource is in state and what would change) and `apply` (makes it
//! so; idempotent). [`kind`] is the one closed match from a [`Resource`] to its implementation.
//! The engine calls `apply` only when `check` found a difference and the batch is not in
//! check-only mode. After a failure the rest of the batch is `Skipped`: the controller orders
//! stages, so later resources may depend on the failed one. When the caller goes away, the batch
//! stops at the next resource boundary and the rest is `Skipped` too.

pub mod command;
pub mod directory;
pub mod file;
pub mod file_if_absent;
pub mod file_line;
pub mod group;
pub mod hook;
pub mod nofollow;
pub mod owner;
pub mod packages;
pub mod permissions;
pub mod pg_native;
mod prefetch;
pub mod psql;
pub mod run;
pub mod service;
pub mod sql;
pub mod user;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tpa_common::event::{BatchSummary, Outcome, ResourceEvent};
use tpa_common::resource::{Resource, ResourceSpec};

use self::run::Timeouts;
use self::service::Trigger;

/// One resource kind's behaviour. Implemented once per kind, in `resource/<kind>.rs`.
pub trait Apply {
    /// Observes the host and says whether the resource is in state; MUST NOT mutate anything.
    fn check(&self, ctx: &Ctx) -> Result<State, ResourceError>;
    /// Makes the resource so and says what was done; MUST be idempotent. Called only after
    /// `check` found a difference, outside check-only mode.
    fn apply(&self, ctx: &mut Ctx) -> Result<String, ResourceError>;
}

/// The implementation of `resource`'s kind: the one place that knows every kind.
pub fn kind(resource: &Resource) -> &dyn Apply {
    match resource {
        Resource::Packages(r) => r,
        Resource::File(r) => r,
        Resource::FileIfAbsent(r) => r,
        Resource::FileLine(r) => r,
        Resource::Directory(r) => r,
        Resource::Permissions(r) => r,
        Resource::Group(r) => r,
        Resource::User(r) => r,
        Resource::Service(r) => r,
        Resource::Command(r) => r,
        Resource::Sql(r) => r,
        Resource::Hook(r) => r,
    }
}

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
    #[error(
        "`{command}` did not finish within {} and was killed with everything it started; \
         see the agent's journal (journalctl -u tpa-agent) for what it was waiting on",
        seconds(*after)
    )]
    TimedOut { command: String, after: Duration },
    #[error(
        "refusing {path}: it is a symbolic link where a {expected} is expected, and the agent never \
         changes ownership, mode or content through a link; remove the link (or fix the path in config.yml)"
    )]
    Symlink {
        path: String,
        expected: &'static str,
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

/// "0.5 s" or "600 s", for messages.
pub fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// What a batch's resources may consult and update while it runs.
#[derive(Debug, Default)]
pub struct Ctx {
    /// Check-only batch: nothing is mutated.
    pub check_only: bool,
    /// Time limits of the tools resources run.
    pub timeouts: Timeouts,
    /// Ids seen so far (to reject duplicates and forward references in `restart_on`).
    seen: HashSet<String>,
    /// Ids that changed (or would change, in check mode) so far.
    changed: HashSet<String>,
    /// Units whose file or drop-in changed since the last `systemctl daemon-reload`, with the
    /// paths that changed.
    dirty_units: BTreeMap<String, BTreeSet<String>>,
}

impl Ctx {
    pub fn new(check_only: bool, timeouts: Timeouts) -> Ctx {
        Ctx {
            check_only,
            timeouts,
            ..Ctx::default()
        }
    }

    /// Whether a `restart_on`/`reload_on` id changed earlier in the batch; ids that are not
    /// earlier resources of the batch are an error.
    pub fn trigger(
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

    /// A unit file changed since the last `systemctl daemon-reload`.
    pub fn units_dirty(&self) -> bool {
        !self.dirty_units.is_empty()
    }

    /// The units whose files changed since the last `systemctl daemon-reload`, with the paths.
    pub fn dirty_units(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.dirty_units
    }

    /// Records that systemd has read the changed unit files (a `daemon-reload`, or nothing it
    /// had loaded changed).
    pub fn daemon_reloaded(&mut self) {
        self.dirty_units.clear();
    }
}

/// How a batch runs.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    pub check_only: bool,
    /// With `check_only`: the first resource out of state ends the batch (a probe asks only
    /// whether all of it is in state); the rest are `Skipped`.
    pub stop_at_first_change: bool,
    pub timeouts: Timeouts,
}

/// Applies `resources` in order, sending one event per resource on `events`, and returns the
/// counts. With `check_only` nothing is mutated: out-of-state resources report `WouldChange`.
///
/// The batch runs on a blocking thread (resources run external tools). When the receiver of
/// `events` goes away (the caller hung up), the resource under way finishes (stopping half-way
/// through one would leave it half-done) and the rest are `Skipped`.
pub async fn apply_batch(
    resources: Vec<ResourceSpec>,
    options: BatchOptions,
    events: mpsc::Sender<ResourceEvent>,
) -> BatchSummary {
    let count = resources.len();
    let started = Instant::now();
    let joined = tokio::task::spawn_blocking(move || {
        let gone = events.clone();
        apply_batch_blocking(
            &resources,
            &options,
            &mut |event| {
                // A closed channel means nobody listens any more: the next resource is skipped.
                let _ = events.blocking_send(event);
            },
            &|| gone.is_closed(),
        )
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

/// Synchronous core of [`apply_batch`]: calls `emit` once per resource, in order. `caller_gone`
/// is asked before each resource; once it says true, the rest of the batch is skipped.
pub fn apply_batch_blocking(
    resources: &[ResourceSpec],
    options: &BatchOptions,
    emit: &mut dyn FnMut(ResourceEvent),
    caller_gone: &dyn Fn() -> bool,
) -> BatchSummary {
    let started = Instant::now();
    let mut batch = Batch {
        ctx: Ctx::new(options.check_only, options.timeouts),
        failed: None,
        stopped: false,
        stop_at_first_change: options.check_only && options.stop_at_first_change,
        hung_up: false,
        prefetched: prefetch::in_state(resources, options.check_only, &options.timeouts),
        last: None,
    };
    let mut summary = BatchSummary::default();
    for spec in resources {
        if !batch.hung_up && batch.failed.is_none() && caller_gone() {
            batch.hung_up = true;
            tracing::warn!(
                after = batch.last.as_deref().unwrap_or("(nothing)"),
                "the caller went away: skipping the rest of the batch"
            );
        }
        let event = batch.process(spec);
        tracing::info!(id = %event.id, outcome = %event.outcome, elapsed_ms = event.elapsed_ms, message = %event.message);
        summary.record(event.outcome);
        emit(event);
    }
    summary.elapsed_ms = elapsed_ms(started);
    summary
}

/// What the engine remembers while walking a batch.
struct Batch {
    ctx: Ctx,
    /// The first failure; everything after it is skipped.
    failed: Option<String>,
    /// A probe found a resource out of state; everything from then on is skipped.
    stopped: bool,
    stop_at_first_change: bool,
    /// The caller went away; everything from then on is skipped.
    hung_up: bool,
    /// Ids of resources whose check, run before the walk (`prefetch`), found them in state:
    /// in state as long as nothing earlier in the batch changed.
    prefetched: HashSet<String>,
    /// The last resource processed, for the log.
    last: Option<String>,
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
        if self.stopped {
            return event(
                Outcome::Skipped,
                None,
                "skipped: the probe stopped at the first change".to_owned(),
            );
        }
        if self.hung_up {
            let after = match &self.last {
                Some(last) => format!("after `{last}`"),
                None => "before the first resource".to_owned(),
            };
            return event(
                Outcome::Skipped,
                None,
                format!("skipped: the controller went away {after}; deploy again to finish"),
            );
        }
        self.last = Some(spec.id.clone());
        if !self.ctx.seen.insert(spec.id.clone()) {
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
                self.stopped = self.stop_at_first_change;
                self.ctx.changed.insert(spec.id.clone());
                if let Some((unit, path)) = unit_of(&spec.kind) {
                    self.ctx.dirty_units.entry(unit).or_default().insert(path);
                } else if self.ctx.check_only && matches!(spec.kind, Resource::Service(_)) {
                    // The daemon-reload this service would run covers later services too.
                    self.ctx.daemon_reloaded();
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
        if self.ctx.changed.is_empty() && self.prefetched.contains(&spec.id) {
            return Ok((
                Outcome::Unchanged,
                None,
                "in state (checked before the batch)".to_owned(),
            ));
        }
        let resource = kind(&spec.kind);
        let state = resource.check(&self.ctx)?;
        if state.in_state {
            return Ok((Outcome::Unchanged, None, state.message));
        }
        if self.ctx.check_only {
            return Ok((Outcome::WouldChange, state.diff, state.message));
        }
        let message = resource.apply(&mut self.ctx)?;
        Ok((Outcome::Changed, state.diff, message))
    }
}

/// Directories whose files are systemd units: a change there needs `systemctl daemon-reload`.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system/",
    "/lib/systemd/system/",
    "/usr/lib/systemd/system/",
];

/// The unit a file resource writes the unit file or a drop-in of (`x.service` for
/// `/etc/systemd/system/x.service.d/override.conf`), and the file's path; None for other
/// resources.
fn unit_of(kind: &Resource) -> Option<(String, String)> {
    let path = match kind {
        Resource::File(f) => &f.path,
        Resource::FileIfAbsent(f) => &f.path,
        Resource::FileLine(f) => &f.path,
        _ => return None,
    };
    let rest = UNIT_DIRS.iter().find_map(|dir| path.strip_prefix(dir))?;
    let first = rest.split('/').next().unwrap_or(rest);
    let unit = first.strip_suffix(".d").unwrap_or(first).to_owned();
    Some((unit, path.clone()))
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tpa_common::resource::{Content, File, Service};

    use super::*;

    fn file_spec(id: &str, path: &str, content: &str) -> ResourceSpec {
        ResourceSpec {
            id: id.into(),
            kind: Resource::File(File {
                path: path.into(),
                content: Content::from(content),
                owner: "root".into(),
                group: "root".into(),
                mode: 0o644,
                secret: false,
            }),
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

    fn run_with(
        resources: &[ResourceSpec],
        check_only: bool,
        caller_gone: &dyn Fn() -> bool,
    ) -> (Vec<ResourceEvent>, BatchSummary) {
        let mut events = Vec::new();
        let options = BatchOptions {
            check_only,
            ..BatchOptions::default()
        };
        let summary =
            apply_batch_blocking(resources, &options, &mut |e| events.push(e), caller_gone);
        (events, summary)
    }

    fn run(resources: &[ResourceSpec], check_only: bool) -> (Vec<ResourceEvent>, BatchSummary) {
        run_with(resources, check_only, &|| false)
    }

    fn outcomes(events: &[ResourceEvent]) -> Vec<Outcome> {
        events.iter().map(|e| e.outcome).collect()
    }

    #[test]
    fn a_probe_stops_at_the_first_change() {
        let command = |id: &str, unless: &str| ResourceSpec {
            id: id.into(),
            kind: Resource::Command(tpa_common::resource::Command {
                argv: vec!["false".into()],
                creates: None,
                unless: Some(vec![unless.into()]),
                run_as: None,
                env: vec![],
                secret_env: false,
                timeout_secs: None,
                unless_sql: None,
            }),
        };
        let batch = [
            command("command:a", "true"),
            command("command:b", "false"),
            command("command:c", "true"),
        ];
        let options = BatchOptions {
            check_only: true,
            stop_at_first_change: true,
            ..BatchOptions::default()
        };
        let mut events = Vec::new();
        let summary = apply_batch_blocking(&batch, &options, &mut |e| events.push(e), &|| false);
        assert_eq!(
            outcomes(&events),
            [Outcome::Unchanged, Outcome::WouldChange, Outcome::Skipped]
        );
        assert_eq!(summary.skipped, 1);
        // A plain check goes on to the end.
        let (events, _) = run(&batch, true);
        assert_eq!(
            outcomes(&events),
            [Outcome::Unchanged, Outcome::WouldChange, Outcome::Unchanged]
        );
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
    fn a_caller_that_went_away_stops_the_batch_at_the_next_resource() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).to_str().expect("utf8").to_owned();
        let resources = [
            file_spec("a", &path("a.conf"), "a\n"),
            file_spec("b", &path("b.conf"), "b\n"),
            file_spec("c", &path("c.conf"), "c\n"),
        ];
        // The caller hangs up while `a` is being applied.
        let asked = AtomicUsize::new(0);
        let gone = || asked.fetch_add(1, Ordering::SeqCst) >= 1;
        let (events, summary) = run_with(&resources, false, &gone);
        assert_eq!(
            outcomes(&events),
            [Outcome::Changed, Outcome::Skipped, Outcome::Skipped]
        );
        assert_eq!(
            events[1].message,
            "skipped: the controller went away after `a`; deploy again to finish"
        );
        assert_eq!((summary.changed, summary.skipped), (1, 2));
        assert!(!Path::new(&path("b.conf")).exists() && !Path::new(&path("c.conf")).exists());
    }

    use std::path::Path;

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
            kind: Resource::Service(Service {
                unit: "postgres.service".into(),
                enabled: true,
                running: true,
                reload_on: vec![],
                restart_on: vec!["file:later".into()],
            }),
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
        std::fs::write(&hba, "local all all peer\n").expect("seed file");
        let mut batch = Batch {
            ctx: Ctx::new(true, Timeouts::default()),
            failed: None,
            stopped: false,
            stop_at_first_change: false,
            hung_up: false,
            prefetched: HashSet::new(),
            last: None,
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
                .ctx
                .trigger(&owned(&["hba"]), &owned(&["conf"]))
                .expect("known ids");
            assert_eq!(restart, Trigger::Restart { by: "conf".into() });
            let none = batch.ctx.trigger(&owned(&["hba"]), &[]).expect("known ids");
            assert_eq!(none, Trigger::None);
        }
        assert!(batch.ctx.trigger(&owned(&["later"]), &[]).is_err());
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
        let unit_name = |spec: &ResourceSpec| unit_of(&spec.kind).map(|(unit, _)| unit);
        assert_eq!(unit_name(&unit).as_deref(), Some("postgres.service"));
        assert_eq!(unit_name(&drop_in).as_deref(), Some("postgres.service"));
        assert_eq!(
            unit_of(&drop_in.kind).map(|(_, path)| path).as_deref(),
            Some("/etc/systemd/system/postgres.service.d/override.conf")
        );
        assert_eq!(unit_of(&other.kind), None);
    }

    #[tokio::test]
    async fn async_batch_streams_events_and_skips_all_when_nobody_listens() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.conf");
        let spec = file_spec("a", path.to_str().expect("utf8"), "a\n");
        let (tx, mut rx) = mpsc::channel(8);
        let summary = apply_batch(vec![spec.clone()], BatchOptions::default(), tx).await;
        let event = rx.recv().await.expect("one event");
        assert_eq!(event.outcome, Outcome::Changed);
        assert_eq!(summary.changed, 1);
        assert!(rx.recv().await.is_none());

        let (tx, rx) = mpsc::channel(8);
        drop(rx);
        std::fs::remove_file(&path).expect("rm");
        let summary = apply_batch(vec![spec], BatchOptions::default(), tx).await;
        assert_eq!(summary.skipped, 1);
        assert!(!path.exists(), "nobody listened, nothing ran");
    }
}
