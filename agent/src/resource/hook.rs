//! `Hook` resource: an operator's program from the cluster directory, shipped whole by the
//! controller, written to its path (root, 0700) and run as root on every apply.
//!
//! Example spec: `Hook { path: "/etc/tpa/hooks/pre-deploy", content: <412 bytes>, env:
//! [TPA_HOST=…], timeout_secs: 600 }`.
//!
//! `check` neither writes nor runs it: a hook always "would run". `apply` writes it atomically,
//! runs it with `env` (values never logged) in its own process group, killed with everything it
//! started after `timeout_secs`, and reports its exit status and the last lines of its output
//! (stdout, then stderr): in the event's message when it succeeds, in the error when it fails.

use std::time::Duration;

use tpa_common::resource::Hook;

use super::file::write_atomically;
use super::run::{self, Invocation};
use super::{Apply, Ctx, ResourceError, State};

/// How many lines of a hook's output come back (the last ones).
pub const OUTPUT_LINES: usize = 40;

impl Apply for Hook {
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        if !self.path.starts_with('/') {
            return Err(ResourceError::Invalid(format!(
                "hook path {} is not absolute",
                self.path
            )));
        }
        Ok(State::differs(None, "a hook runs on every deploy"))
    }

    fn apply(&self, _ctx: &mut Ctx) -> Result<String, ResourceError> {
        write_atomically(&self.path, self.content.as_bytes(), 0, 0, 0o700)?;
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.expose().clone()))
            .collect();
        let argv = [self.path.clone()];
        let output = run::run_for(
            &Invocation {
                argv: &argv,
                run_as: None,
                env: &env,
                stdin: None,
            },
            Duration::from_secs(self.timeout_secs.max(1).into()),
        )?;
        let lines = last_lines(&output.stdout, &output.stderr, OUTPUT_LINES);
        if output.success() {
            Ok(with_lines(output.status_text(), &lines))
        } else {
            Err(ResourceError::Failed(with_lines(
                format!("{}; the last lines of its output:", output.status_text()),
                &lines,
            )))
        }
    }
}

/// The last `max` non-empty lines of stdout followed by stderr.
fn last_lines(stdout: &[u8], stderr: &[u8], max: usize) -> Vec<String> {
    let mut lines: Vec<String> = [stdout, stderr]
        .iter()
        .flat_map(|bytes| {
            String::from_utf8_lossy(bytes)
                .lines()
                .map(|l| l.trim_end().to_owned())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    let start = lines.len().saturating_sub(max);
    lines.drain(..start);
    lines
}

fn with_lines(head: String, lines: &[String]) -> String {
    let mut text = head;
    for l in lines {
        text.push('\n');
        text.push_str(l);
    }
    text
}

#[cfg(test)]
mod tests {
    use tpa_common::resource::{Content, EnvVar};

    use super::*;

    fn hook(dir: &std::path::Path, script: &str) -> Hook {
        Hook {
            path: dir.join("pre-deploy").to_str().expect("utf8").to_owned(),
            content: Content::from(script),
            env: vec![EnvVar::new("TPA_HOST", "ulb")],
            timeout_secs: 5,
        }
    }

    #[test]
    fn check_never_writes_nor_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = hook(dir.path(), "#!/bin/sh\ntouch ran\n");
        let state = h.check(&Ctx::default()).expect("check");
        assert!(!state.in_state);
        assert!(!dir.path().join("pre-deploy").exists());
    }

    #[test]
    fn runs_with_its_environment_and_reports_output() {
        if !super::super::owner::is_root() {
            eprintln!("skipping: the hook is written as root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let h = hook(
            dir.path(),
            "#!/bin/sh\necho \"on $TPA_HOST\"\necho oops >&2\n",
        );
        let message = h.apply(&mut Ctx::default()).expect("apply");
        assert_eq!(message, "exit status 0\non ulb\noops");
        let failing = hook(dir.path(), "#!/bin/sh\necho first\necho last >&2\nexit 3\n");
        let error = failing.apply(&mut Ctx::default()).expect_err("fails");
        assert_eq!(
            error.to_string(),
            "exit status 3; the last lines of its output:\nfirst\nlast"
        );
    }

    #[test]
    fn keeps_the_last_lines() {
        let out: String = (1..=50).map(|i| format!("{i}\n")).collect();
        let lines = last_lines(out.as_bytes(), b"err\n\n", 3);
        assert_eq!(lines, ["49", "50", "err"]);
    }
}
