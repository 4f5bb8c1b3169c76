//! `Command` resource: a guarded command. It runs only when its `creates` path does not exist
//! and its `unless` command exits non-zero; without guards it runs on every apply.
//!
//! Example spec: `Command { argv: ["/usr/lib/postgresql/15/bin/initdb", "-D", "/opt/postgres/data"],
//! creates: Some("/opt/postgres/data/PG_VERSION"), unless: None, run_as: Some("postgres"), env: [], secret_env: false }`.
//!
//! Environment values are passed through the process environment and never logged. With
//! `secret_env` the command's output is left out of failure messages as well.

use std::path::Path;

use super::run::{self, Invocation};
use super::{ResourceError, State};

/// Evaluates the guards; runs only the read-only `unless` command, never `argv`.
pub fn check(
    argv: &[String],
    creates: Option<&str>,
    unless: Option<&[String]>,
    run_as: Option<&str>,
    env: &[(String, String)],
    _secret_env: bool,
) -> Result<State, ResourceError> {
    if argv.is_empty() {
        return Err(ResourceError::Invalid("command argv is empty".to_owned()));
    }
    if let Some(path) = creates
        && Path::new(path).exists()
    {
        return Ok(State::in_state(format!("{path} exists")));
    }
    if let Some(unless) = unless {
        let output = run::run(&Invocation {
            argv: unless,
            run_as,
            env,
            stdin: None,
        })?;
        if output.success() {
            return Ok(State::in_state(format!("`{}` succeeded", unless.join(" "))));
        }
    }
    Ok(State::differs(
        Some(format!("$ {}\n", argv.join(" "))),
        reason(creates, unless),
    ))
}

/// Runs `argv`; fails with its exit status and (unless `secret_env`) the tail of its output.
pub fn apply(
    argv: &[String],
    run_as: Option<&str>,
    env: &[(String, String)],
    secret_env: bool,
) -> Result<String, ResourceError> {
    let output = run::run(&Invocation {
        argv,
        run_as,
        env,
        stdin: None,
    })?;
    let program = argv.first().map_or("", String::as_str);
    if !output.success() {
        let detail = if secret_env {
            "output hidden (secret environment)".to_owned()
        } else {
            output.tail()
        };
        return Err(ResourceError::Failed(format!(
            "`{program}` failed ({}): {detail}",
            output.status_text()
        )));
    }
    Ok(format!("ran `{program}`"))
}

fn reason(creates: Option<&str>, unless: Option<&[String]>) -> String {
    match (creates, unless) {
        (None, None) => "unguarded command runs on every apply".to_owned(),
        (Some(path), None) => format!("{path} does not exist"),
        (None, Some(unless)) => format!("`{}` failed", unless.join(" ")),
        (Some(path), Some(unless)) => {
            format!("{path} does not exist and `{}` failed", unless.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn creates_guard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("done");
        let marker_str = marker.to_str().expect("utf8");
        let argv = strings(&["touch", marker_str]);
        let state = check(&argv, Some(marker_str), None, None, &[], false).expect("check");
        assert!(!state.in_state);
        assert!(state.message.contains("does not exist"));
        assert!(!marker.exists(), "check must not run the command");
        apply(&argv, None, &[], false).expect("apply");
        assert!(
            check(&argv, Some(marker_str), None, None, &[], false)
                .expect("check")
                .in_state
        );
    }

    #[test]
    fn unless_guard_runs_but_command_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("ran");
        let argv = strings(&["touch", marker.to_str().expect("utf8")]);
        assert!(
            check(&argv, None, Some(&strings(&["true"])), None, &[], false)
                .expect("check")
                .in_state
        );
        let state =
            check(&argv, None, Some(&strings(&["false"])), None, &[], false).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.message, "`false` failed");
        assert!(!marker.exists());
    }

    #[test]
    fn unguarded_command_is_always_out_of_state() {
        let state = check(&strings(&["true"]), None, None, None, &[], false).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.diff.as_deref(), Some("$ true\n"));
    }

    #[test]
    fn failure_message_has_output_tail_unless_secret() {
        let argv = strings(&["sh", "-c", "echo \"bad $TOKEN\" >&2; exit 2"]);
        let env = [("TOKEN".to_owned(), "s3cret".to_owned())];
        let error = apply(&argv, None, &env, false).expect_err("fails");
        assert_eq!(error.to_string(), "`sh` failed (exit status 2): bad s3cret");
        let error = apply(&argv, None, &env, true).expect_err("fails");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert!(error.to_string().contains("exit status 2"));
    }

    #[test]
    fn run_as_switches_user() {
        if !super::super::owner::is_root() {
            eprintln!("skipping: runuser needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("as-nobody");
        let script = format!("id -un > {}", marker.display());
        // The temp dir is root-only; let nobody write into it for this test.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        apply(&strings(&["sh", "-c", &script]), Some("nobody"), &[], false).expect("apply");
        assert_eq!(
            std::fs::read_to_string(&marker).expect("read").trim(),
            "nobody"
        );
    }

    #[test]
    fn empty_argv_is_invalid() {
        assert!(matches!(
            check(&[], None, None, None, &[], false),
            Err(ResourceError::Invalid(_))
        ));
    }
}
