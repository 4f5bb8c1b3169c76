//! `Packages` resource: apt packages that must be installed. Never upgrades, never removes.
//!
//! Example spec: `Packages { names: ["postgresql-15", "postgresql-client-15"] }`.
//!
//! Check asks dpkg; apply runs a non-interactive `apt-get install` of the missing packages,
//! keeping existing config files. `apt-get update` runs first only when the package lists are
//! empty, or once as a retry when apt cannot find a package. apt and dpkg run under the
//! `packages` time limit, dpkg-query under `probe` (see `run::Timeouts`).

use std::time::Duration;

use tpa_common::resource::Packages;

use super::run::{self, Invocation, Timeouts};
use super::{Apply, Ctx, ResourceError, State};

/// Where apt keeps downloaded package lists.
const APT_LISTS: &str = "/var/lib/apt/lists";

impl Apply for Packages {
    /// Lists the packages that are not installed; never writes.
    fn check(&self, ctx: &Ctx) -> Result<State, ResourceError> {
        let missing = missing(&self.names, &ctx.timeouts)?;
        if missing.is_empty() {
            return Ok(State::in_state(format!("{} installed", self.names.len())));
        }
        let diff: String = missing.iter().map(|name| format!("+{name}\n")).collect();
        Ok(State::differs(
            Some(diff),
            format!("missing: {}", missing.join(", ")),
        ))
    }

    /// Installs the missing packages; idempotent.
    fn apply(&self, ctx: &mut Ctx) -> Result<String, ResourceError> {
        let t = &ctx.timeouts;
        let missing = missing(&self.names, t)?;
        if missing.is_empty() {
            return Ok("all installed".to_owned());
        }
        recover_interrupted_dpkg(t)?;
        if lists_empty() {
            apt_update(t)?;
        }
        let output = install(&missing, t)?;
        if !output.success() {
            if !needs_update(&String::from_utf8_lossy(&output.stderr)) {
                return Err(install_failed(&missing, &output));
            }
            apt_update(t)?;
            let retry = install(&missing, t)?;
            if !retry.success() {
                return Err(install_failed(&missing, &retry));
            }
        }
        Ok(format!("installed: {}", missing.join(", ")))
    }
}

/// Names among `names` whose dpkg status is not "install ok installed".
fn missing(names: &[String], timeouts: &Timeouts) -> Result<Vec<String>, ResourceError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut argv = vec![
        "dpkg-query".to_owned(),
        "-W".to_owned(),
        "-f=${Package}\t${Status}\n".to_owned(),
    ];
    argv.extend(names.iter().cloned());
    // dpkg-query exits 1 when some package is unknown; the output still lists the known ones.
    let output = run::run_for(
        &Invocation {
            argv: &argv,
            ..Invocation::default()
        },
        timeouts.probe,
    )?;
    Ok(missing_from_status(
        names,
        &String::from_utf8_lossy(&output.stdout),
    ))
}

/// Pure part of [`missing`]: `status` is dpkg-query output, one "name\tstatus" line per package.
pub fn missing_from_status(names: &[String], status: &str) -> Vec<String> {
    let installed: Vec<&str> = status
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, state)| state.trim() == "install ok installed")
        .map(|(name, _)| name)
        .collect();
    names
        .iter()
        .filter(|name| {
            // Accept "pkg:arch" specs: dpkg's ${Package} is the bare name.
            let bare = name.split(':').next().unwrap_or(name);
            !installed.contains(&bare)
        })
        .cloned()
        .collect()
}

/// Heuristic: apt failed because its lists are stale or lack the package.
pub fn needs_update(stderr: &str) -> bool {
    [
        "Unable to locate package",
        "has no installation candidate",
        "is not available",
        "404  Not Found",
        "Failed to fetch",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

fn lists_empty() -> bool {
    std::fs::read_dir(APT_LISTS).map_or(true, |entries| {
        !entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
    })
}

fn install(names: &[String], timeouts: &Timeouts) -> Result<run::Output, ResourceError> {
    let mut argv: Vec<String> = [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        // Wait for a concurrent apt/dpkg (e.g. unattended-upgrades) instead of failing at once.
        "-o",
        "DPkg::Lock::Timeout=300",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(names.iter().cloned());
    run::run_for(
        &Invocation {
            argv: &argv,
            env: &apt_env(),
            ..Invocation::default()
        },
        timeouts.packages,
    )
}

/// dpkg leaves journal entries in `updates/`, or packages half-unpacked, when it was
/// interrupted (e.g. the agent was killed mid-install); apt then refuses to run. Finishing the
/// job here (configure what can be, reinstall what dpkg left half-unpacked) means a deploy
/// interrupted half-way needs no manual clean-up.
fn recover_interrupted_dpkg(timeouts: &Timeouts) -> Result<(), ResourceError> {
    // An install still running looks interrupted too, and holds the lock recovery needs.
    wait_for_package_managers(PACKAGE_MANAGER_WAIT)?;
    let journal = std::fs::read_dir("/var/lib/dpkg/updates")
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    let (unfinished, _) = dpkg_unfinished(timeouts.probe)?;
    if !journal && !unfinished {
        return Ok(());
    }
    let configure = [
        "dpkg",
        "--configure",
        "-a",
        "--force-confdef",
        "--force-confold",
    ];
    // Fails while a package is half-unpacked, but replays the journal, which apt needs first.
    let _ = run_apt(&configure, "`dpkg --configure -a` failed", "", timeouts);
    let (_, reinstall) = dpkg_unfinished(timeouts.probe)?;
    if !reinstall.is_empty() {
        let mut argv = vec![
            "apt-get",
            "install",
            "--reinstall",
            "-y",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "DPkg::Lock::Timeout=300",
        ];
        argv.extend(reinstall.iter().map(String::as_str));
        run_apt(
            &argv,
            "reinstalling packages an interrupted dpkg left half-installed failed",
            "",
            timeouts,
        )?;
    }
    run_apt(
        &configure,
        "dpkg was interrupted and `dpkg --configure -a` failed",
        "",
        timeouts,
    )
}

/// Processes that hold, or are about to take, dpkg's lock.
const PACKAGE_MANAGERS: &[&str] = &["dpkg", "apt-get", "apt", "unattended-upgr"];

/// How long a deploy waits for another package manager: as long as apt-get's own
/// `DPkg::Lock::Timeout` above.
const PACKAGE_MANAGER_WAIT: Duration = Duration::from_secs(300);

/// Waits until no package manager runs: one an agent killed mid-install left behind (the
/// agent's unit has `KillMode=process`, so its children outlive it), or unattended-upgrades.
fn wait_for_package_managers(limit: Duration) -> Result<(), ResourceError> {
    let deadline = std::time::Instant::now() + limit;
    while let Some((pid, name)) = running_package_manager() {
        if std::time::Instant::now() >= deadline {
            return Err(ResourceError::Failed(format!(
                "{name} (pid {pid}) has been running for over {} s and holds dpkg's lock: let \
                 it finish, or stop it, then deploy again",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The first process (pid, name) that is a package manager, other than this one. Read from
/// /proc by hand: `comm` is all it needs, where sysinfo would read each process's `stat` and
/// list every thread as well.
fn running_package_manager() -> Option<(u32, String)> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim_end();
            (pid != own && PACKAGE_MANAGERS.contains(&comm)).then(|| (pid, comm.to_owned()))
        })
}

/// Whether any package is in an unfinished state, and which need reinstalling.
fn dpkg_unfinished(timeout: Duration) -> Result<(bool, Vec<String>), ResourceError> {
    let argv: Vec<String> = ["dpkg-query", "-W", "-f=${Package}\t${Status}\n"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let output = run::run_for(
        &Invocation {
            argv: &argv,
            ..Invocation::default()
        },
        timeout,
    )?;
    Ok(unfinished_from_status(&String::from_utf8_lossy(
        &output.stdout,
    )))
}

/// From `Package<TAB>want flag status` lines: whether any package is unfinished (unpacked,
/// half-configured, awaiting triggers, or needing a reinstall), and those that need a
/// reinstall (flag `reinstreq`, or status `half-installed`).
fn unfinished_from_status(text: &str) -> (bool, Vec<String>) {
    let mut unfinished = false;
    let mut reinstall = Vec::new();
    for line in text.lines() {
        let Some((package, status)) = line.split_once('\t') else {
            continue;
        };
        let words: Vec<&str> = status.split_whitespace().collect();
        let [_, flag, state] = words[..] else {
            continue;
        };
        if flag == "reinstreq" || state == "half-installed" {
            reinstall.push(package.to_owned());
        }
        if flag == "reinstreq"
            || matches!(
                state,
                "half-installed"
                    | "unpacked"
                    | "half-configured"
                    | "triggers-awaited"
                    | "triggers-pending"
            )
        {
            unfinished = true;
        }
    }
    (unfinished, reinstall)
}

/// Runs an apt or dpkg command non-interactively; a failure says `what`, the exit status,
/// the output's tail, then `hint`.
fn run_apt(
    argv: &[&str],
    what: &str,
    hint: &str,
    timeouts: &Timeouts,
) -> Result<(), ResourceError> {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    let output = run::run_for(
        &Invocation {
            argv: &argv,
            env: &apt_env(),
            ..Invocation::default()
        },
        timeouts.packages,
    )?;
    if !output.success() {
        return Err(ResourceError::Failed(format!(
            "{what} ({}): {}{hint}",
            output.status_text(),
            output.tail()
        )));
    }
    Ok(())
}

fn apt_update(timeouts: &Timeouts) -> Result<(), ResourceError> {
    run_apt(
        &["apt-get", "update", "-o", "DPkg::Lock::Timeout=300"],
        "`apt-get update` failed",
        "; check /etc/apt/sources.list* and network or local repository",
        timeouts,
    )
}

fn apt_env() -> Vec<(String, String)> {
    vec![("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())]
}

fn install_failed(missing: &[String], output: &run::Output) -> ResourceError {
    ResourceError::Failed(format!(
        "`apt-get install {}` failed ({}): {}",
        missing.join(" "),
        output.status_text(),
        output.tail()
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_dpkg_status() {
        let status = "dpkg\tinstall ok installed\nrc-pkg\tdeinstall ok config-files\nlibc6\tinstall ok installed\n";
        let wanted = names(&["dpkg", "rc-pkg", "libc6:amd64", "unknown"]);
        assert_eq!(
            missing_from_status(&wanted, status),
            names(&["rc-pkg", "unknown"])
        );
    }

    /// A process named `dpkg` (a symlink to sleep: the kernel names a process after the path
    /// it was run by) holds up recovery until it exits.
    #[test]
    fn recovery_waits_for_a_package_manager_still_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("dpkg");
        std::os::unix::fs::symlink("/bin/sleep", &fake).expect("symlink");
        let mut child = std::process::Command::new(&fake)
            .arg("30")
            .spawn()
            .expect("spawn");
        let error =
            wait_for_package_managers(Duration::from_millis(300)).expect_err("dpkg is running");
        let text = error.to_string();
        assert!(
            text.contains(&format!("dpkg (pid {})", child.id()))
                && text.contains("holds dpkg's lock"),
            "{text}"
        );
        child.kill().expect("kill");
        child.wait().expect("reap");
        wait_for_package_managers(Duration::from_secs(5)).expect("nothing runs once it exited");
    }

    #[test]
    fn update_heuristic() {
        assert!(needs_update("E: Unable to locate package postgresql-15"));
        assert!(needs_update("E: Package 'x' has no installation candidate"));
        assert!(!needs_update(
            "E: Sub-process /usr/bin/dpkg returned an error code (1)"
        ));
    }

    #[test]
    fn check_against_real_dpkg() {
        if !Path::new("/usr/bin/dpkg-query").exists() {
            eprintln!("skipping: dpkg-query not installed");
            return;
        }
        let ctx = Ctx::default();
        let packages = |items: &[&str]| Packages {
            names: names(items),
        };
        assert!(packages(&["dpkg"]).check(&ctx).expect("check").in_state);
        let state = packages(&["dpkg", "tpa-no-such-package"])
            .check(&ctx)
            .expect("check");
        assert!(!state.in_state);
        assert_eq!(state.message, "missing: tpa-no-such-package");
        assert_eq!(state.diff.as_deref(), Some("+tpa-no-such-package\n"));
    }

    #[test]
    fn unfinished_packages_are_found_and_half_unpacked_ones_reinstalled() {
        let status = "bash\tinstall ok installed\nperl-base\tinstall reinstreq unpacked\n\
                      cron\tinstall ok half-configured\nold\tdeinstall ok config-files\n\
                      x\tinstall ok half-installed\n";
        assert_eq!(
            unfinished_from_status(status),
            (true, vec!["perl-base".to_owned(), "x".to_owned()])
        );
        assert_eq!(
            unfinished_from_status("bash\tinstall ok installed\nold\tdeinstall ok config-files\n"),
            (false, vec![])
        );
        assert_eq!(
            unfinished_from_status("cron\tinstall ok unpacked\n"),
            (true, vec![])
        );
    }
}
