//! The Exec RPC's engine: runs one command and streams its stdout/stderr as they come, then its exit code.
//!
//! Environment values and stdin are secrets as far as the agent knows: they go to the child through the
//! process environment and a pipe, never through arguments, and are never logged. `run_as` switches user
//! with `runuser -u USER --`. If the caller goes away (the stream is dropped) the child is killed.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

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
}

impl std::fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecSpec")
            .field("argv", &self.argv)
            .field("env", &env_names)
            .field("run_as", &self.run_as)
            .field("stdin_bytes", &self.stdin.len())
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// One piece of a running command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Last. A command killed by signal N reports 128 + N, as shells do.
    Exit(i32),
}

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty argv: nothing to run")]
    EmptyArgv,
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// The largest output chunk sent at once.
const CHUNK_BYTES: usize = 32 * 1024;

/// Starts the command and returns the stream of its output; fails only if it cannot be started.
pub fn spawn(spec: ExecSpec) -> Result<mpsc::Receiver<ExecChunk>, ExecError> {
    let argv = crate::resource::run::full_argv(&spec.argv, spec.run_as.as_deref());
    let (program, args) = argv.split_first().ok_or(ExecError::EmptyArgv)?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd.as_deref().unwrap_or("/"))
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
        let (out, err) = tokio::join!(
            pump(stdout, &tx, ExecChunk::Stdout),
            pump(stderr, &tx, ExecChunk::Stderr)
        );
        if out.is_err() || err.is_err() {
            // Nobody listens any more: dropping `child` kills it.
            tracing::warn!("exec caller went away; killing the command");
            return;
        }
        let code = match child.wait().await {
            Ok(status) => exit_code(status),
            Err(error) => {
                tracing::error!(%error, "waiting for the command failed");
                -1
            }
        };
        tracing::info!(exit_code = code, "command finished");
        let _ = tx.send(ExecChunk::Exit(code)).await;
    });
    Ok(rx)
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
    use super::*;

    async fn collect(spec: ExecSpec) -> (Vec<u8>, Vec<u8>, Vec<i32>) {
        let mut rx = spawn(spec).expect("spawn");
        let (mut out, mut err, mut exits) = (vec![], vec![], vec![]);
        while let Some(chunk) = rx.recv().await {
            match chunk {
                ExecChunk::Stdout(b) => out.extend(b),
                ExecChunk::Stderr(b) => err.extend(b),
                ExecChunk::Exit(c) => exits.push(c),
            }
        }
        (out, err, exits)
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
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
        let (out, err, exits) = collect(spec).await;
        assert_eq!(String::from_utf8_lossy(&out), "hello s3cret/\n");
        assert_eq!(String::from_utf8_lossy(&err), "oops\n");
        assert_eq!(exits, [7]);
    }

    #[tokio::test]
    async fn signal_is_reported_as_128_plus_n() {
        let (_, _, exits) = collect(ExecSpec {
            argv: sh("kill -9 $$"),
            ..ExecSpec::default()
        })
        .await;
        assert_eq!(exits, [137]);
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
