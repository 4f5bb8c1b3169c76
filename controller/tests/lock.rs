//! One command at a time per cluster directory, between real processes: while another process
//! holds the lock, `store-password` (like deploy, provision and deprovision) is refused at once
//! with the holder's pid and command; once the holder is gone, even killed, the lock is free.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tpa_controller::lock::{ClusterLock, this_process};
use tpa_controller::process::command;

mod support;

use support::{Machine, machine};

trait LockTest {
    fn store_password(&self) -> Output;
    fn lock_file(&self) -> PathBuf;
}

impl LockTest for Machine {
    fn store_password(&self) -> Output {
        self.run_with(
            &["store-password", self.dir(), "ada_lovelace", "--random"],
            "",
            &[],
        )
    }

    fn lock_file(&self) -> PathBuf {
        self.cluster.join(".tpa.lock")
    }
}

/// A child that does not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_command_is_refused_with_the_holders_pid_and_command() {
    let m = machine();
    let held = ClusterLock::acquire(&m.lock_file(), &this_process()).expect("lock");

    let started = Instant::now();
    let refused = m.store_password();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once"
    );
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(
        text.contains("another tpa-controller is working on this cluster directory")
            && text.contains(&format!("pid {}: ", std::process::id())),
        "{text}"
    );
    assert!(!m.cluster.join("secrets.enc").exists(), "nothing written");

    // Reading is not changing: show-password does not wait for the lock.
    let dir = m.cluster.to_str().expect("utf-8 path");
    let shown = m.run_with(&["show-password", dir, "ada_lovelace"], "", &[]);
    assert!(!stderr(&shown).contains("another tpa-controller"));

    drop(held);
    let stored = m.store_password();
    assert!(stored.status.success(), "{}", stderr(&stored));
    assert_eq!(
        std::fs::read_to_string(m.lock_file()).expect("lock file"),
        "",
        "a finished command leaves no holder behind"
    );
}

#[test]
fn a_killed_holder_leaves_no_obstacle() {
    let m = machine();
    if command("flock").arg("--version").output().is_err() {
        eprintln!("skipping: flock(1) is not installed");
        return;
    }
    // A shell that takes the same kind of lock with flock(1), then becomes `sleep`: one
    // process holding the lock until it is killed.
    let mut holder = KillOnDrop(
        command("sh")
            .arg("-c")
            .arg(r#"exec 9>>"$1" && flock --exclusive 9 && exec sleep 600"#)
            .arg("sh")
            .arg(m.lock_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run sh"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = m.store_password();
        if !out.status.success() {
            assert!(
                stderr(&out).contains("another tpa-controller"),
                "{}",
                stderr(&out)
            );
            break;
        }
        // flock(1) had not taken the lock yet: that run stored a password; try again.
        assert!(Instant::now() < deadline, "flock(1) never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    holder.0.kill().expect("kill");
    holder.0.wait().expect("wait");
    let after = m.store_password();
    assert!(after.status.success(), "{}", stderr(&after));
}
