//! Runs external tools (apt-get, systemctl, psql, operator commands) with captured output,
//! optional stdin and an optional `runuser -u` user switch. Environment values are passed through
//! the process environment, never through arguments, and are never logged.

use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

use super::ResourceError;

/// Captured result of a finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// "exit status 3" or "killed by signal 9", for messages.
    pub fn status_text(&self) -> String {
        match self.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        }
    }

    /// The last lines of stderr (or stdout when stderr is empty), for failure messages.
    pub fn tail(&self) -> String {
        let text = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            &self.stderr
        } else {
            &self.stdout
        };
        tail(&String::from_utf8_lossy(text), TAIL_LINES)
    }

    /// Stdout as trimmed text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }
}

/// How many output lines a failure message carries.
pub const TAIL_LINES: usize = 15;

/// What to run and how.
#[derive(Debug, Default)]
pub struct Invocation<'a> {
    pub argv: &'a [String],
    /// Run as this user via `runuser -u USER --`.
    pub run_as: Option<&'a str>,
    /// Extra environment; values may be secret.
    pub env: &'a [(String, String)],
    /// Bytes written to stdin (e.g. SQL, which must never be in argv).
    pub stdin: Option<&'a [u8]>,
}

/// The full argv actually executed: `runuser -u USER -- argv...` when `run_as` is set.
pub fn full_argv(argv: &[String], run_as: Option<&str>) -> Vec<String> {
    match run_as {
        Some(user) => ["runuser", "-u", user, "--"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(argv.iter().cloned())
            .collect(),
        None => argv.to_vec(),
    }
}

/// Runs the invocation to completion and captures its output. Fails only when the program
/// cannot be started; a non-zero exit is reported in [`Output::status`].
pub fn run(invocation: &Invocation<'_>) -> Result<Output, ResourceError> {
    let argv = full_argv(invocation.argv, invocation.run_as);
    let Some((program, args)) = argv.split_first() else {
        return Err(ResourceError::Invalid("empty argv".to_owned()));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        // A neutral cwd: users switched to with runuser may not read the agent's cwd.
        .current_dir("/")
        .stdin(if invocation.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| ResourceError::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    // Feed stdin from a thread so a chatty child cannot deadlock us on full pipes.
    let writer = match (invocation.stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || pipe.write_all(&bytes)))
        }
        _ => None,
    };
    let output = child.wait_with_output().map_err(spawn_error)?;
    if let Some(writer) = writer {
        // A child that exits without reading all of stdin is judged by its exit status alone.
        let _ = writer.join();
    }
    Ok(Output {
        status: output.status,
        stdout: output.stdout,
        stderr: output.stderr,
    })
}

/// Runs `argv` (as root, no extra env) and fails with the output tail when it exits non-zero.
pub fn run_checked(argv: &[&str]) -> Result<Output, ResourceError> {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    let output = run(&Invocation {
        argv: &argv,
        ..Invocation::default()
    })?;
    if !output.success() {
        return Err(ResourceError::Failed(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            output.status_text(),
            output.tail()
        )));
    }
    Ok(output)
}

/// The last `lines` non-empty lines of `text`, joined with " | " to keep messages on one line.
pub fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = kept.len().saturating_sub(lines);
    kept[start..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn run_as_wraps_with_runuser() {
        let argv = strings(&["psql", "-X"]);
        assert_eq!(
            full_argv(&argv, Some("postgres")),
            strings(&["runuser", "-u", "postgres", "--", "psql", "-X"])
        );
        assert_eq!(full_argv(&argv, None), argv);
    }

    #[test]
    fn stdin_and_env_reach_the_child() {
        let argv = strings(&[
            "sh",
            "-c",
            "cat; printf '%s' \"$TPA_TEST\"; echo oops >&2; exit 3",
        ]);
        let env = [("TPA_TEST".to_owned(), "value".to_owned())];
        let output = run(&Invocation {
            argv: &argv,
            env: &env,
            stdin: Some(b"in:"),
            ..Invocation::default()
        })
        .expect("sh runs");
        assert_eq!(output.stdout_text(), "in:value");
        assert_eq!(output.status_text(), "exit status 3");
        assert_eq!(output.tail(), "oops");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let argv = strings(&["/nonexistent/tpa-tool"]);
        let error = run(&Invocation {
            argv: &argv,
            ..Invocation::default()
        })
        .expect_err("cannot start");
        assert!(
            error
                .to_string()
                .contains("could not run `/nonexistent/tpa-tool`")
        );
    }

    #[test]
    fn tail_keeps_last_nonempty_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "");
    }
}
