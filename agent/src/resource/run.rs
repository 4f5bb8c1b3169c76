//! Runs external tools (apt-get, dpkg, systemctl, psql, initdb, operator commands) with captured
//! output, optional stdin, an optional switch to another user, and always a time limit.
//!
//! The switch is `setpriv` (uid, gid, supplementary groups) with the variables `runuser -u`
//! sets, not `runuser` itself: runuser opens a PAM session, which costs four times setpriv's
//! CPU and two journal lines, for each psql a deploy runs (on a host that is already in state,
//! those checks are most of a deploy's work). Remote hooks still go through `runuser`
//! ([`full_argv`]), so an operator's script gets the PAM session (limits) a login would.
//!
//! Each tool runs in its own process group; when its time is up the whole group is killed
//! (SIGKILL), so children it started (dpkg under apt, a script's subshells) do not live on.
//! Environment values are passed through the process environment, never through arguments, and
//! are never logged.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::Duration;

use super::ResourceError;

/// The time limit of [`run`]: quick look-ups (dpkg-query, `systemctl is-active`, a facts query).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Held shared by every spawn and alone while a program is being written. A child spawned by another
/// thread inherits the descriptors open at that moment until it execs; if one of them is a
/// program being written, running that program fails with "Text file busy" (ETXTBSY): a hook
/// run just after it was written, while a health round spawned psql. `spawn` returns once the
/// child has exec'd (which closes the inherited descriptors), so holding this across it is
/// enough.
static SPAWN_GATE: RwLock<()> = RwLock::new(());

/// Hold while spawning a process.
pub fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWN_GATE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Hold while a program (a file that will be run) is open for writing.
pub fn writing() -> RwLockWriteGuard<'static, ()> {
    SPAWN_GATE.write().unwrap_or_else(PoisonError::into_inner)
}

/// setpriv, from util-linux (Essential on Debian): by path, not looked up in PATH.
const SETPRIV: &str = "/usr/bin/setpriv";

/// How long to wait for output pipes to close after the tool exited: a background process it
/// left behind may hold them open, and must not hold the agent too.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Time limits of the tools the resource engine runs. [`Timeouts::default`] is what a deploy
/// uses; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Quick look-ups and account tools: dpkg-query, `systemctl is-*`, groupadd, useradd, usermod.
    pub probe: Duration,
    /// apt-get and dpkg, which download and unpack.
    pub packages: Duration,
    /// systemctl actions (enable, start, restart, reload, daemon-reload), which wait for the unit.
    pub systemctl: Duration,
    /// One psql run of a SQL resource (its check or its apply).
    pub psql: Duration,
    /// One psql run of the Query RPC.
    pub query: Duration,
    /// A `Command` resource that sets no `timeout_secs` of its own (e.g. initdb).
    pub command: Duration,
    /// psql's `connect_timeout`: a Postgres that accepts no connection fails fast.
    pub connect: Duration,
    /// Postgres `lock_timeout` for the agent's SQL: waiting on another session's lock fails
    /// instead of stalling the deploy.
    pub lock: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            probe: Duration::from_secs(120),
            packages: Duration::from_secs(30 * 60),
            systemctl: Duration::from_secs(10 * 60),
            psql: Duration::from_secs(30 * 60),
            query: Duration::from_secs(60),
            command: Duration::from_secs(30 * 60),
            connect: Duration::from_secs(10),
            lock: Duration::from_secs(60),
        }
    }
}

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

    /// "exit status 3" or "killed by a signal", for messages.
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
    /// Run as this user (see [`Account`]).
    pub run_as: Option<&'a str>,
    /// Extra environment; values may be secret.
    pub env: &'a [(String, String)],
    /// Bytes written to stdin (e.g. SQL, which must never be in argv).
    pub stdin: Option<&'a [u8]>,
}

/// The argv of a remote hook: `runuser -u USER -- argv...` when `run_as` is set.
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

/// [`run_for`] with [`DEFAULT_TIMEOUT`].
pub fn run(invocation: &Invocation<'_>) -> Result<Output, ResourceError> {
    run_for(invocation, DEFAULT_TIMEOUT)
}

/// Runs the invocation to completion and captures its output. Fails when the program cannot be
/// started, or when it runs longer than `timeout` (it is then killed with its process group); a
/// non-zero exit is reported in [`Output::status`].
pub fn run_for(invocation: &Invocation<'_>, timeout: Duration) -> Result<Output, ResourceError> {
    if invocation.argv.is_empty() {
        return Err(ResourceError::Invalid("empty argv".to_owned()));
    }
    let (argv, user_env) = match invocation.run_as {
        Some(user) => {
            let account = Account::lookup(user)?;
            (account.wrap(invocation.argv), account.env())
        }
        None => (invocation.argv.to_vec(), vec![]),
    };
    let (program, args) = argv.split_first().expect("checked above");
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(user_env)
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        // A neutral cwd: the user switched to may not read the agent's cwd.
        .current_dir("/")
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
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
    let mut child = {
        let _gate = spawning();
        command.spawn().map_err(spawn_error)?
    };
    let group = child.id();
    // Feed stdin from a thread so a chatty child cannot deadlock us on full pipes.
    if let (Some(bytes), Some(mut pipe)) = (invocation.stdin, child.stdin.take()) {
        let bytes = bytes.to_vec();
        // A child that exits without reading all of stdin is judged by its exit status alone.
        std::thread::spawn(move || pipe.write_all(&bytes));
    }
    let stdout = Collector::start(child.stdout.take());
    let stderr = Collector::start(child.stderr.take());
    let (exited_tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });
    let status = match exited.recv_timeout(timeout) {
        Ok(status) => status.map_err(spawn_error)?,
        Err(_) => {
            kill_group(group);
            // Reap it, so no zombie is left; SIGKILL cannot be ignored.
            let _ = exited.recv_timeout(PIPE_GRACE);
            tracing::warn!(command = %invocation.argv.join(" "), run_as = ?invocation.run_as, timeout_secs = timeout.as_secs(), "killed: ran out of time");
            return Err(ResourceError::TimedOut {
                command: short(invocation.argv),
                after: timeout,
            });
        }
    };
    Ok(Output {
        status,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    })
}

/// Runs `argv` (as root, no extra env) within `timeout` and fails with the output tail when it
/// exits non-zero.
pub fn run_checked(argv: &[&str], timeout: Duration) -> Result<Output, ResourceError> {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    let output = run_for(
        &Invocation {
            argv: &argv,
            ..Invocation::default()
        },
        timeout,
    )?;
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

/// A user to run a tool as.
struct Account {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    home: PathBuf,
}

impl Account {
    fn lookup(name: &str) -> Result<Account, ResourceError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|source| ResourceError::Lookup {
                name: name.to_owned(),
                source,
            })?
            .ok_or_else(|| ResourceError::UnknownUser(name.to_owned()))?;
        Ok(Account {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
        })
    }

    /// The variables `runuser -u` sets: HOME, and USER and LOGNAME unless the user is root
    /// (`runuser -u USER -- COMMAND` leaves SHELL as it was).
    fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = vec![("HOME", self.home.clone().into_os_string())];
        if !self.uid.is_root() {
            env.push(("USER", self.name.clone().into()));
            env.push(("LOGNAME", self.name.clone().into()));
        }
        env
    }

    /// `argv` wrapped to run as this user: setpriv sets the uid, the gid and the supplementary
    /// groups, then execs the tool.
    fn wrap(&self, argv: &[String]) -> Vec<String> {
        [
            SETPRIV.to_owned(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--init-groups".to_owned(),
            "--".to_owned(),
        ]
        .into_iter()
        .chain(argv.iter().cloned())
        .collect()
    }
}

/// SIGKILL to a process group; a group that is already gone is fine.
pub fn kill_group(group: u32) {
    let Ok(pid) = i32::try_from(group) else {
        return;
    };
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The command for messages: at most the first few words (argv carries no secrets, but may be long).
fn short(argv: &[String]) -> String {
    let mut text = argv.iter().take(6).cloned().collect::<Vec<_>>().join(" ");
    if argv.len() > 6 {
        text.push_str(" ...");
    }
    text
}

/// Reads one output pipe on a thread into a shared buffer.
struct Collector {
    buffer: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Collector {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Collector {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            let shared = buffer.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut buffer) = shared.lock() {
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                }
                let _ = done_tx.send(());
            });
        }
        Collector { buffer, done }
    }

    /// What was read: all of it, or what came within [`PIPE_GRACE`] when something the tool
    /// left running still holds the pipe.
    fn finish(self) -> Vec<u8> {
        let _ = self.done.recv_timeout(PIPE_GRACE);
        self.buffer
            .lock()
            .map(|mut buffer| std::mem::take(&mut *buffer))
            .unwrap_or_default()
    }
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
    use crate::testing::alive;
    use std::time::Instant;

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
    fn run_as_gives_what_runuser_gives() {
        if !crate::resource::owner::is_root() {
            eprintln!("skipping: switching user needs root");
            return;
        }
        // Ids, supplementary groups, the variables runuser sets (or leaves), and the cwd.
        let script = "id -u; id -g; id -G; echo \"$HOME|$SHELL|$USER|$LOGNAME\"; pwd";
        for user in ["nobody", "daemon"] {
            let ours = run(&Invocation {
                argv: &strings(&["sh", "-c", script]),
                run_as: Some(user),
                ..Invocation::default()
            })
            .expect("sh runs");
            let by_runuser = std::process::Command::new("runuser")
                .args(["-u", user, "--", "sh", "-c", script])
                .current_dir("/")
                .output()
                .expect("runuser runs");
            assert!(ours.success(), "{user}: {}", ours.tail());
            let expected = String::from_utf8_lossy(&by_runuser.stdout);
            assert_eq!(ours.stdout_text(), expected.trim(), "{user}");
        }
    }

    #[test]
    fn run_as_an_unknown_user_names_it() {
        let error = run(&Invocation {
            argv: &strings(&["true"]),
            run_as: Some("tpa-no-such-user"),
            ..Invocation::default()
        })
        .expect_err("no such user");
        assert!(error.to_string().contains("`tpa-no-such-user`"), "{error}");
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
    fn a_tool_that_runs_too_long_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("child.pid");
        // The shell starts a child that would outlive it, then waits forever.
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let argv = strings(&["sh", "-c", &script]);
        let started = Instant::now();
        let error = run_for(
            &Invocation {
                argv: &argv,
                ..Invocation::default()
            },
            Duration::from_millis(500),
        )
        .expect_err("times out");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let text = error.to_string();
        assert!(
            text.contains("`sh -c") && text.contains("did not finish within 0.5 s"),
            "{text}"
        );
        let child = std::fs::read_to_string(&pid_file).expect("pid file");
        let child = child.trim();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(child), "the tool's child {child} was killed too");
    }

    #[test]
    fn a_background_process_holding_the_pipes_does_not_hold_the_agent() {
        let argv = strings(&["sh", "-c", "echo started; sleep 6 & exit 0"]);
        let started = Instant::now();
        let output = run_for(
            &Invocation {
                argv: &argv,
                ..Invocation::default()
            },
            Duration::from_secs(20),
        )
        .expect("runs");
        assert!(output.success());
        assert_eq!(output.stdout_text(), "started");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn tail_keeps_last_nonempty_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "");
    }
}
