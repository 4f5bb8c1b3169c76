//! One command at a time per cluster directory: deploy, provision, deprovision and
//! store-password hold an exclusive `flock` on `<dir>/.tpa.lock` for as long as they run, so two
//! of them never provision the same hosts or write the same secrets at once. Commands that only
//! read (`status`, `show-password`) take no lock, so they run beside a deploy.
//!
//! The kernel releases the lock when its holder exits, however it exits, so a lock file left by
//! a dead process is no obstacle. The file holds the holder's pid and command line, so that a
//! refused command can say who is in the way. Take the lock once per process, at the command
//! level: a second lock from the same process (deploy calls provision) would refuse itself.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::cluster_dir::{self, ClusterDir};

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct ClusterLock {
    file: File,
    path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another tpa-controller is working on this cluster directory ({holder}; lock file {path}): \
         wait for it to finish, then run this command again"
    )]
    Held { path: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ClusterLock {
    /// Locks the cluster directory `dir` (which must hold a config.yml) for this process's
    /// command, and writes its `.gitignore` while holding the lock.
    pub fn for_command(dir: &Path) -> anyhow::Result<ClusterLock> {
        let dir = ClusterDir::open(dir)?;
        let lock = ClusterLock::acquire(&dir.lock_file(), &this_process())?;
        cluster_dir::ensure_gitignore(dir.root())?;
        Ok(lock)
    }

    /// Takes the exclusive lock on `path` (created 0600 if missing) and records `holder` in it;
    /// refuses at once, naming the current holder, when another open file holds it.
    pub fn acquire(path: &Path, holder: &str) -> Result<ClusterLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Not truncated before it is locked: the holder's record must survive a refused attempt.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    holder: read_holder(&mut file),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(format!("{holder}\n").as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io)?;
        Ok(ClusterLock {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        // Emptied while still held, so nobody reads a finished command as the holder; the lock
        // itself goes with the file descriptor.
        let _ = self.file.set_len(0);
    }
}

/// "pid 1234: tpa-controller deploy fosdem": who this process is, for the lock file.
pub fn this_process() -> String {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("pid {}: {}", std::process::id(), args.join(" "))
}

/// The holder's record, on one line, bounded, printable.
fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.take(1024).read_to_string(&mut text);
    let line: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    if line.trim().is_empty() {
        "it has not recorded its pid yet".to_string()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".tpa.lock");
        let first =
            ClusterLock::acquire(&path, "pid 4242: tpa-controller deploy fosdem").expect("first");
        // A second open file description, as another process would have.
        let err = ClusterLock::acquire(&path, "pid 1: tpa-controller provision fosdem")
            .expect_err("held");
        let text = err.to_string();
        assert!(
            text.contains("pid 4242: tpa-controller deploy fosdem")
                && text.contains(".tpa.lock")
                && text.contains("wait for it to finish"),
            "{text}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "pid 4242: tpa-controller deploy fosdem\n",
            "a refused attempt leaves the holder's record"
        );
        drop(first);
        // Another test thread's spawn may hold a forked copy of the descriptor until its child
        // execs (a few ms), and the kernel frees the lock only when the last copy closes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let second = loop {
            match ClusterLock::acquire(&path, "pid 1: tpa-controller provision fosdem") {
                Ok(lock) => break lock,
                Err(LockError::Held { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("free again: {e}"),
            }
        };
        drop(second);
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_no_obstacle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".tpa.lock");
        std::fs::write(&path, "pid 999999: tpa-controller deploy gone\n").expect("write");
        let lock = ClusterLock::acquire(&path, &this_process()).expect("stale file");
        let record = std::fs::read_to_string(lock.path()).expect("read");
        assert!(
            record.starts_with(&format!("pid {}: ", std::process::id())),
            "{record}"
        );
    }

    #[test]
    fn only_a_cluster_directory_is_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ClusterLock::for_command(dir.path()).expect_err("no config.yml");
        assert!(err.to_string().contains("config.yml"), "{err}");
        assert!(!dir.path().join(".tpa.lock").exists());
    }
}
