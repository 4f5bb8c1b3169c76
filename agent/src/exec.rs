//! The Exec RPC's engine: runs one command for a person (hooks, `cmd`) and streams its
//! stdout/stderr as they come, then its exit code. Deploys never use it: they have typed calls.
//!
//! - Logged: the full argument vector, the user, the cwd and the environment's names, with every
//!   value masked. Environment values and stdin are secrets as far as the agent knows: they go
//!   to the child through the process environment and a pipe, never through arguments.
//! - Bounded: the command runs in its own process group, killed (SIGKILL) with everything it
//!   started when its time limit is up ([`DEFAULT_TIMEOUT`] unless the request sets one) ...
//! - ... or as soon as the caller goes away, even if the command prints nothing.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// How long a command may run when the request sets no limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest limit a request may set.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What to run.
#[derive(Default)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// Extra environment; values are never logged.
    pub env: Vec<(String, String)>,
    pub run_as: Option<String>,
    /// Written to the child's stdin, which is then closed; never logged.
    pub stdin: Vec<u8>,
    /// Working directory; `/` when absent (a user switched to may not read the agent's cwd).
    pub cwd: Option<String>,
    /// Killed after this long; None: [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSpec")
            .field("argv", &self.argv)
            .field("env", &masked_env(&self.env))
            .field("run_as", &self.run_as)
            .field("stdin_bytes", &self.stdin.len())
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `NAME=<redacted>` for each variable.
fn masked_env(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, _)| format!("{k}=<redacted>")).collect()
}

/// One piece of a running command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Last. A command killed by signal N reports 128 + N, as shells do.
    Exit(i32),
    /// Last, instead of `Exit`: the time limit ran out and the command was killed.
    TimedOut(Duration),
}

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty argv: nothing to run")]
    EmptyArgv,
    #[error("timeout of {secs} s is out of range (1 s to {max} s)", max = MAX_TIMEOUT.as_secs())]
    BadTimeout { secs: u64 },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// The largest output chunk sent at once.
const CHUNK_BYTES: usize = 32 * 1024;

/// Starts the command and returns the stream of its output; fails only if it cannot be started.
/// Dropping the receiver kills the command.
pub fn spawn(spec: ExecSpec) -> Result<mpsc::Receiver<ExecChunk>, ExecError> {
    let timeout = spec.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(ExecError::BadTimeout {
            secs: timeout.as_secs(),
        });
    }
    let argv = crate::resource::run::full_argv(&spec.argv, spec.run_as.as_deref());
    let (program, args) = argv.split_first().ok_or(ExecError::EmptyArgv)?;
    let cwd = spec.cwd.as_deref().unwrap_or("/");
    tracing::info!(
        argv = ?argv, env = ?masked_env(&spec.env), cwd, stdin_bytes = spec.stdin.len(),
        timeout_secs = timeout.as_secs(), "exec: starting"
    );
    // See run::spawning: no file the agent is writing may be open in the child.
    let gate = crate::resource::run::spawning();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        // Its own process group: on timeout or hang-up, what it started dies with it.
        .process_group(0)
        .stdin(if spec.stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: program.clone(),
            source,
        })?;
    drop(gate);
    let group = child.id();

    let (tx, rx) = mpsc::channel(16);
    let stdin_pipe = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let input = spec.stdin;
    tokio::spawn(async move {
        if let Some(mut pipe) = stdin_pipe {
            // A child that exits without reading all its input is judged by its exit code alone.
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
            });
        }
        let run = async {
            let (out, err) = tokio::join!(
                pump(stdout, &tx, ExecChunk::Stdout),
                pump(stderr, &tx, ExecChunk::Stderr)
            );
            if out.is_err() || err.is_err() {
                return None;
            }
            Some(child.wait().await)
        };
        let ended = tokio::select! {
            ended = tokio::time::timeout(timeout, run) => ended,
            // Nobody listens any more, whether or not the command prints.
            () = tx.closed() => Ok(None),
        };
        match ended {
            Ok(Some(Ok(status))) => {
                let code = exit_code(status);
                tracing::info!(exit_code = code, "exec: finished");
                let _ = tx.send(ExecChunk::Exit(code)).await;
            }
            Ok(Some(Err(error))) => {
                tracing::error!(%error, "exec: waiting for the command failed");
                let _ = tx.send(ExecChunk::Exit(-1)).await;
            }
            Ok(None) => {
                tracing::warn!(
                    "exec: the caller went away; killing the command and its process group"
                );
                kill(group);
            }
            Err(_) => {
                tracing::warn!(
                    timeout_secs = timeout.as_secs(),
                    "exec: time limit reached; killing the command and its process group"
                );
                kill(group);
                let _ = tx.send(ExecChunk::TimedOut(timeout)).await;
            }
        }
    });
    Ok(rx)
}

fn kill(group: Option<u32>) {
    if let Some(group) = group {
        crate::resource::run::kill_group(group);
    }
}

/// Forwards one output pipe as chunks; Err when the receiver is gone.
async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    tx: &mpsc::Sender<ExecChunk>,
    wrap: fn(Vec<u8>) -> ExecChunk,
) -> Result<(), ()> {
    let Some(mut pipe) = pipe else { return Ok(()) };
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => tx.send(wrap(buf[..n].to_vec())).await.map_err(|_| ())?,
            Err(error) => {
                tracing::warn!(%error, "reading command output failed");
                return Ok(());
            }
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use crate::testing::alive;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;

    async fn collect(spec: ExecSpec) -> (Vec<u8>, Vec<u8>, Vec<ExecChunk>) {
        let mut rx = spawn(spec).expect("spawn");
        let (mut out, mut err, mut last) = (vec![], vec![], vec![]);
        while let Some(chunk) = rx.recv().await {
            match chunk {
                ExecChunk::Stdout(b) => out.extend(b),
                ExecChunk::Stderr(b) => err.extend(b),
                other => last.push(other),
            }
        }
        (out, err, last)
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    async fn wait_dead(pid: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        !alive(pid)
    }

    /// A command that starts a silent child, and the file that child's pid is written to.
    async fn silent_with_child(dir: &std::path::Path) -> (ExecSpec, std::path::PathBuf) {
        let pid_file = dir.join("child.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        (
            ExecSpec {
                argv: sh(&script),
                ..ExecSpec::default()
            },
            pid_file,
        )
    }

    async fn read_pid(path: &std::path::Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(pid) = std::fs::read_to_string(path)
                && !pid.trim().is_empty()
            {
                return pid.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "the command did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn streams_output_stdin_env_and_exit_code() {
        let spec = ExecSpec {
            argv: sh("cat; printf ' %s' \"$SECRET\"; pwd; echo oops >&2; exit 7"),
            env: vec![("SECRET".into(), "s3cret".into())],
            stdin: b"hello".to_vec(),
            ..ExecSpec::default()
        };
        assert!(!format!("{spec:?}").contains("s3cret"));
        let (out, err, last) = collect(spec).await;
        assert_eq!(String::from_utf8_lossy(&out), "hello s3cret/\n");
        assert_eq!(String::from_utf8_lossy(&err), "oops\n");
        assert_eq!(last, [ExecChunk::Exit(7)]);
    }

    #[tokio::test]
    async fn signal_is_reported_as_128_plus_n() {
        let (_, _, last) = collect(ExecSpec {
            argv: sh("kill -9 $$"),
            ..ExecSpec::default()
        })
        .await;
        assert_eq!(last, [ExecChunk::Exit(137)]);
    }

    #[tokio::test]
    async fn a_silent_command_is_killed_with_its_children_when_the_caller_goes_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spec, pid_file) = silent_with_child(dir.path()).await;
        let rx = spawn(spec).expect("spawn");
        let child = read_pid(&pid_file).await;
        assert!(alive(&child));
        drop(rx);
        assert!(
            wait_dead(&child).await,
            "the command's child {child} was killed"
        );
    }

    #[tokio::test]
    async fn a_command_past_its_time_limit_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spec, pid_file) = silent_with_child(dir.path()).await;
        spec.timeout = Some(Duration::from_millis(700));
        let started = Instant::now();
        let (_, _, last) = collect(spec).await;
        assert_eq!(last, [ExecChunk::TimedOut(Duration::from_millis(700))]);
        assert!(started.elapsed() < Duration::from_secs(5));
        let child = read_pid(&pid_file).await;
        assert!(
            wait_dead(&child).await,
            "the command's child {child} was killed"
        );
        assert!(matches!(
            spawn(ExecSpec {
                argv: sh("true"),
                timeout: Some(MAX_TIMEOUT * 2),
                ..ExecSpec::default()
            }),
            Err(ExecError::BadTimeout { .. })
        ));
    }

    /// Captures what the agent logs while `f` runs.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_has_the_full_argv_and_masked_env() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                collect(ExecSpec {
                    argv: sh("cat >/dev/null; exit 0"),
                    env: vec![("PGPASSWORD".into(), "hunter2".into())],
                    stdin: b"stdin-secret".to_vec(),
                    run_as: None,
                    cwd: Some("/tmp".into()),
                    timeout: None,
                })
                .await
            });
        });
        let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
        assert!(
            log.contains(r#"argv=["sh", "-c", "cat >/dev/null; exit 0"]"#),
            "{log}"
        );
        assert!(
            log.contains("PGPASSWORD=<redacted>") && log.contains(r#"cwd="/tmp""#),
            "{log}"
        );
        assert!(
            !log.contains("hunter2") && !log.contains("stdin-secret"),
            "{log}"
        );
    }

    #[test]
    fn unstartable_commands_are_errors() {
        assert!(matches!(
            spawn(ExecSpec::default()),
            Err(ExecError::EmptyArgv)
        ));
        let missing = ExecSpec {
            argv: vec!["/nonexistent/tpa".into()],
            ..ExecSpec::default()
        };
        let err = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt")
            .block_on(async { spawn(missing).map(|_| ()) })
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tpa"), "{err}");
    }
}
