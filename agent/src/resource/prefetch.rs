//! Checks a batch's costly resources before the batch is walked, several at once: on a host
//! that is already in state, a stage then costs its slowest check instead of the sum of them
//! (each is a process: psql, systemctl, dpkg-query, a guard command).
//!
//! Only a hint, and only while nothing has changed: the walk trusts an "in state" from here
//! as long as no earlier resource of the batch changed, and checks everything else itself. The
//! scan stops at the first cheap resource (a file, a directory) that is out of state, since
//! every costly check after it would be wasted on a batch that is going to change something.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tpa_common::resource::{Command, Resource, ResourceSpec};

use super::run::Timeouts;
use super::{Apply, Ctx, kind, sql};

/// How many checks run at once on one host.
const PARALLEL: usize = 4;

/// One check to run.
enum Job<'a> {
    /// SQL checks sharing one psql session.
    Sql(sql::Group<'a>),
    /// A guard command, shared by every resource in `ids` (Barman's `has-backup`).
    Probe(&'a Command, Vec<&'a String>),
    /// Any other costly resource; `earlier` are the batch's ids before it.
    Check(&'a ResourceSpec, &'a [ResourceSpec]),
}

/// The ids of the costly resources of `resources` found in state.
pub fn in_state(
    resources: &[ResourceSpec],
    check_only: bool,
    timeouts: &Timeouts,
) -> HashSet<String> {
    let ctx = Ctx::new(check_only, *timeouts);
    let mut sql_specs = Vec::new();
    let mut jobs: Vec<Job<'_>> = Vec::new();
    for (at, spec) in resources.iter().enumerate() {
        match &spec.kind {
            Resource::Sql(_) => sql_specs.push(spec),
            // A hook always runs: nothing after it can be taken as in state.
            Resource::Hook(_) => break,
            Resource::Command(c)
                if (c.unless.is_some() || c.unless_sql.is_some()) && c.env.is_empty() =>
            {
                let shared = jobs.iter_mut().find_map(|job| match job {
                    Job::Probe(p, ids)
                        if p.unless == c.unless
                            && p.unless_sql == c.unless_sql
                            && p.run_as == c.run_as =>
                    {
                        Some(ids)
                    }
                    _ => None,
                });
                match shared {
                    Some(ids) => ids.push(&spec.id),
                    None => jobs.push(Job::Probe(c, vec![&spec.id])),
                }
            }
            Resource::Command(Command {
                unless: Some(_), ..
            })
            | Resource::Command(Command {
                unless_sql: Some(_),
                ..
            })
            | Resource::Packages(_)
            | Resource::Service(_) => jobs.push(Job::Check(spec, &resources[..at])),
            // Cheap: checked here, and the scan ends where the batch will change something.
            _ => {
                if !kind(&spec.kind).check(&ctx).is_ok_and(|s| s.in_state) {
                    break;
                }
            }
        }
    }
    jobs.extend(sql::groups(sql_specs.into_iter()).into_iter().map(Job::Sql));
    run_all(&jobs, check_only, timeouts)
}

impl Job<'_> {
    /// The ids this job found in state; none on any trouble (the walk checks them again).
    fn run(&self, check_only: bool, timeouts: &Timeouts) -> Vec<String> {
        let mut ctx = Ctx::new(check_only, *timeouts);
        match self {
            Job::Sql(group) => group.in_state(timeouts),
            Job::Probe(command, ids) => match command.check(&ctx) {
                Ok(s) if s.in_state => ids.iter().map(|id| (*id).clone()).collect(),
                _ => vec![],
            },
            Job::Check(spec, earlier) => {
                // A service's triggers must name earlier resources of the batch, as in the walk.
                ctx.seen = earlier.iter().map(|r| r.id.clone()).collect();
                match kind(&spec.kind).check(&ctx) {
                    Ok(s) if s.in_state => vec![spec.id.clone()],
                    _ => vec![],
                }
            }
        }
    }
}

/// Runs `jobs` on up to [`PARALLEL`] threads; the union of what they found in state.
fn run_all(jobs: &[Job<'_>], check_only: bool, timeouts: &Timeouts) -> HashSet<String> {
    let found = Mutex::new(HashSet::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.len().min(PARALLEL) {
            scope.spawn(|| {
                while let Some(job) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) {
                    // A panicking check is reported by the walk, which runs it again.
                    let ids = catch_unwind(AssertUnwindSafe(|| job.run(check_only, timeouts)))
                        .unwrap_or_default();
                    found
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .extend(ids);
                }
            });
        }
    });
    found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tpa_common::resource::{Directory, Resource};

    use super::*;

    fn guarded(id: &str, unless: &str) -> ResourceSpec {
        ResourceSpec {
            id: id.into(),
            kind: Resource::Command(Command {
                argv: vec!["false".into()],
                creates: None,
                unless: Some(vec!["sh".into(), "-c".into(), unless.into()]),
                run_as: None,
                env: vec![],
                secret_env: false,
                timeout_secs: None,
                unless_sql: None,
            }),
        }
    }

    fn directory(path: &std::path::Path) -> ResourceSpec {
        let user = super::super::owner::user_name(nix::unistd::getuid().as_raw());
        let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_owned(), |g| g.name);
        ResourceSpec {
            id: format!("directory:{}", path.display()),
            kind: Resource::Directory(Directory {
                path: path.display().to_string(),
                owner: user,
                group,
                mode: 0o700,
            }),
        }
    }

    #[test]
    fn costly_checks_run_side_by_side_and_shared_guards_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("runs");
        let log = format!("echo >> '{}'", runs.display());
        let batch = [
            guarded("command:a", "sleep 0.5"),
            guarded("command:b", "sleep 0.5; true"),
            guarded("command:c", "sleep 0.5; :"),
            guarded("command:d", &log),
            guarded("command:e", &log),
            guarded("command:f", "exit 1"),
        ];
        let started = Instant::now();
        let found = in_state(&batch, false, &Timeouts::default());
        let elapsed = started.elapsed();
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort();
        assert_eq!(
            found,
            [
                "command:a",
                "command:b",
                "command:c",
                "command:d",
                "command:e"
            ]
        );
        // Three half-second guards one after another would take 1.5 s.
        assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");
        let count = std::fs::read_to_string(&runs)
            .expect("guard ran")
            .lines()
            .count();
        assert_eq!(count, 1, "d and e share one guard");
    }

    #[test]
    fn the_scan_stops_where_the_batch_will_change_something() {
        let dir = tempfile::tempdir().expect("tempdir");
        let present = dir.path().join("present");
        std::fs::create_dir(&present).expect("mkdir");
        std::fs::set_permissions(
            &present,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod");
        let batch = [
            directory(&present),
            guarded("command:a", "true"),
            directory(&dir.path().join("missing")),
            guarded("command:b", "true"),
        ];
        let found = in_state(&batch, false, &Timeouts::default());
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["command:a"]);
    }
}
