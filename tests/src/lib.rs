//! Helpers shared by the end-to-end scenarios: they drive the real `tpa-controller` binary
//! against the local Docker engine.
//!
//! The scenarios run only with `TPA_E2E=1` (the README's test command sets it); plain
//! `cargo test` skips them with a message, because they need Docker, root and minutes.

pub mod mirror;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Scenarios share container names (the seed's hosts): one at a time in this process...
static SERIAL: Mutex<()> = Mutex::new(());

/// ...and one at a time on this machine (other test binaries, other checkouts): an exclusive
/// `flock` on this file, released when the guard's file closes.
const MACHINE_LOCK: &str = "/tmp/tpa-e2e.lock";

/// Held while a scenario runs: the in-process mutex and the machine-wide lock.
pub struct E2eGuard {
    _process: MutexGuard<'static, ()>,
    _machine: std::fs::File,
}

/// Returns a guard when end-to-end tests are enabled, `None` (after saying so) otherwise.
pub fn e2e_guard(test: &str) -> Option<E2eGuard> {
    if std::env::var("TPA_E2E").as_deref() != Ok("1") {
        eprintln!(
            "skipping {test}: set TPA_E2E=1 (scripts/test does) to run Docker end-to-end tests"
        );
        return None;
    }
    let process = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let machine = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(MACHINE_LOCK)
        .unwrap_or_else(|e| panic!("{MACHINE_LOCK}: {e}"));
    machine
        .lock()
        .unwrap_or_else(|e| panic!("locking {MACHINE_LOCK}: {e}"));
    Some(E2eGuard {
        _process: process,
        _machine: machine,
    })
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The built `tpa-controller` binary: `TPA_CONTROLLER_BIN`, else target/release, else debug.
pub fn controller_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TPA_CONTROLLER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    for profile in ["release", "debug"] {
        let bin = target.join(profile).join("tpa-controller");
        if bin.is_file() {
            return bin;
        }
    }
    panic!("tpa-controller is not built: run `cargo build --release --workspace --bins` first");
}

/// A cluster directory in a temp dir holding the seed config with another cluster name.
pub fn seed_cluster(cluster_name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tpa-e2e-")
        .tempdir()
        .expect("tempdir");
    let seed = std::fs::read_to_string(workspace_root().join("tests/fixtures/seed/config.yml"))
        .expect("seed config");
    let config = seed.replace(
        "cluster_name: fosdem",
        &format!("cluster_name: {cluster_name}"),
    );
    std::fs::write(dir.path().join("config.yml"), config).expect("write config");
    dir
}

/// A cluster directory holding one primary `host` on `image` with `postgres_version`.
pub fn primary_cluster(
    cluster_name: &str,
    host: &str,
    image: &str,
    version: &str,
) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tpa-e2e-")
        .tempdir()
        .expect("tempdir");
    let template =
        std::fs::read_to_string(workspace_root().join("tests/fixtures/primary/config.yml"))
            .expect("primary config");
    let config = template
        .replace("CLUSTER", cluster_name)
        .replace("HOST", host)
        .replace("IMAGE", image)
        .replace("VERSION", version);
    std::fs::write(dir.path().join("config.yml"), config).expect("write config");
    dir
}

/// Runs `tpa-controller <args>` and returns its output (printed for the test log).
pub fn controller(args: &[&str]) -> Output {
    controller_with(args, |_| {})
}

/// [`controller`], with `setup` adjusting the command first (environment, for example).
pub fn controller_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Output {
    let mut command = Command::new(controller_bin());
    command.args(args);
    setup(&mut command);
    let output = command.output().expect("run tpa-controller");
    eprintln!(
        "$ tpa-controller {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Removes from `command` the variables `cargo test` sets for this test binary
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …). A `cargo build` run by a test (the README's
/// scripts, `scripts/package`) would otherwise see them, and build scripts that watch them
/// (ring's) would make it rebuild half the workspace, and the next plain build again.
pub fn without_cargo_test_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_BIN_NAME",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Runs a command and returns (success, stdout).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .output()
        .expect("run command");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Names of containers (running or not) labelled with this cluster.
pub fn cluster_containers(cluster: &str) -> Vec<String> {
    let filter = format!("label=Cluster={cluster}");
    let (_, out) = run(
        "docker",
        &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
    );
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

pub fn cluster_networks(cluster: &str) -> Vec<String> {
    let filter = format!("label=Cluster={cluster}");
    let (_, out) = run(
        "docker",
        &[
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ],
    );
    out.lines().map(str::to_string).collect()
}

/// Builds a tpa host image unless the engine has it (cached between runs).
pub fn ensure_image(image: &str) {
    if run("docker", &["image", "inspect", image]).0 {
        return;
    }
    let version = image.rsplit(':').next().expect("tagged image");
    let out = controller(&["image", "build", "--os", "Debian", "--os-version", version]);
    assert!(out.status.success(), "building {image} failed");
}

/// One scenario's cluster: serialised with the others, in its own temp directory, and
/// deprovisioned (whatever happened) when dropped.
pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub cluster: String,
    pub host: String,
    _serial: E2eGuard,
}

impl Scenario {
    /// A single-primary cluster on `image`, or `None` when end-to-end tests are disabled.
    pub fn primary(
        test: &str,
        cluster: &str,
        host: &str,
        image: &str,
        version: &str,
    ) -> Option<Scenario> {
        let serial = e2e_guard(test)?;
        ensure_image(image);
        Some(Scenario {
            dir: primary_cluster(cluster, host, image, version),
            cluster: cluster.to_string(),
            host: host.to_string(),
            _serial: serial,
        })
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().expect("UTF-8 temp path")
    }

    pub fn ssh_config(&self) -> String {
        self.dir.path().join("ssh_config").display().to_string()
    }

    /// The host's address, from the inventory provision wrote.
    pub fn address(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("inventory.json"))
            .expect("inventory.json");
        let inventory: serde_json::Value = serde_json::from_str(&text).expect("inventory JSON");
        inventory["hosts"][0]["address"]
            .as_str()
            .expect("host address")
            .to_string()
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = Command::new(controller_bin())
            .arg("deprovision")
            .arg(self.dir.path())
            .output();
        for name in cluster_containers(&self.cluster) {
            let _ = run("docker", &["rm", "-f", "-v", &name]);
        }
    }
}

/// A command's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes whatever a failed scenario left behind.
pub struct Cleanup<'a> {
    pub dir: &'a Path,
    pub cluster: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = Command::new(controller_bin())
            .arg("deprovision")
            .arg(self.dir)
            .output();
        for name in cluster_containers(self.cluster) {
            let _ = run("docker", &["rm", "-f", "-v", &name]);
        }
    }
}

/// Runs deploy while sampling every process's arguments, as `ps` would show them (the
/// containers' processes included: they share this kernel).
pub fn deploy_watching_ps(path: &str) -> (std::process::Output, Vec<String>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (seen, done) = (seen.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(out) = Command::new("ps")
                    .args(["-eo", "args"])
                    .stderr(Stdio::null())
                    .output()
                {
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&out.stdout).into_owned());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = controller(&["deploy", path]);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let snapshots = seen.lock().unwrap().clone();
    (out, snapshots)
}

/// Runs `command` as root on `host` over SSH (the cluster's `ssh_config`), `stdin` fed to it;
/// returns (success, stdout). stderr goes to the test's output.
pub fn ssh_with_stdin(ssh_config: &str, host: &str, command: &str, stdin: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("ssh")
        .args(["-F", ssh_config, "-o", "BatchMode=yes", host, command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ssh");
    child
        .stdin
        .take()
        .expect("ssh stdin")
        .write_all(stdin.as_bytes())
        .expect("ssh stdin write");
    let out = child.wait_with_output().expect("ssh output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `host`'s address, from the inventory.json provision wrote in `dir`.
pub fn host_address(dir: &Path, host: &str) -> String {
    let text = std::fs::read_to_string(dir.join("inventory.json")).expect("inventory.json");
    let inventory: serde_json::Value = serde_json::from_str(&text).expect("inventory JSON");
    inventory["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["name"] == host)
        .and_then(|h| h["address"].as_str())
        .unwrap_or_else(|| panic!("{host} is not in the inventory"))
        .to_string()
}
