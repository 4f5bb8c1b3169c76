//! Test support: a throwaway Postgres instance on the real socket directory, for the tests of
//! the `Sql` resource and the `Query` RPC (they skip, with a message, where there is no
//! server), a process-liveness probe for the tests that kill process groups, and a test CA with
//! an agent enrolled by it (renewal and trust tests).

use crate::resource::owner;
use crate::resource::psql::SOCKET_DIR;

/// A throwaway Postgres instance on the real socket dir, stopped on drop.
pub struct Instance {
    _dir: tempfile::TempDir,
    pub data: String,
    pub port: u16,
    bin: std::path::PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").to_string_lossy().into_owned();
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &self.data,
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

pub fn start_postgres() -> Option<Instance> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|b| b.join("postgres").is_file());
    let ready = owner::is_root()
        && std::path::Path::new(SOCKET_DIR).is_dir()
        && owner::uid("postgres").is_ok();
    let (Some(bin), true) = (bin, ready) else {
        eprintln!(
            "skipping: needs root, a postgres user, {SOCKET_DIR} and a Postgres server in /usr/lib/postgresql"
        );
        return None;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let uid = owner::uid("postgres").expect("postgres uid");
    std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown");
    let data = dir.path().join("data").to_string_lossy().into_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let log = dir.path().join("log").to_string_lossy().into_owned();
    let as_postgres = |tool: &str, args: &[&str]| {
        let tool = bin.join(tool).to_string_lossy().into_owned();
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", &tool])
            .args(args)
            .current_dir("/")
            .output()
            .expect("runuser");
        assert!(
            status.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    as_postgres(
        "initdb",
        &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
    );
    let instance = Instance {
        _dir: dir,
        data: data.clone(),
        port,
        bin: bin.clone(),
    };
    let options = format!("-p {port} -k {SOCKET_DIR} -c listen_addresses=''");
    as_postgres(
        "pg_ctl",
        &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
    );
    Some(instance)
}

impl Instance {
    /// The postmaster's pid, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> i32 {
        let text =
            std::fs::read_to_string(format!("{}/postmaster.pid", self.data)).expect("pid file");
        text.lines()
            .next()
            .expect("pid line")
            .trim()
            .parse()
            .expect("pid")
    }
}

/// A psql session holding an ACCESS EXCLUSIVE lock on `table` until dropped.
pub struct LockHolder(std::process::Child);

/// Starts a session that locks `table` and keeps its transaction open; returns once it holds it.
pub fn hold_lock(pg: &Instance, table: &str) -> LockHolder {
    use std::io::Write as _;
    let port = pg.port.to_string();
    let mut child = std::process::Command::new("runuser")
        .args([
            "-u", "postgres", "--", "psql", "-X", "-q", "-h", SOCKET_DIR, "-p", &port, "-d",
            "postgres",
        ])
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let stdin = child.stdin.as_mut().expect("stdin");
    writeln!(stdin, "begin; lock table {table} in access exclusive mode;").expect("write");
    stdin.flush().expect("flush");
    let holder = LockHolder(child);
    // Wait until the lock shows in pg_locks.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let query = format!(
        "select count(*) from pg_locks where relation = '{table}'::regclass and mode = 'AccessExclusiveLock' and granted"
    );
    while std::time::Instant::now() < deadline {
        let out = std::process::Command::new("runuser")
            .args([
                "-u", "postgres", "--", "psql", "-X", "-At", "-h", SOCKET_DIR, "-p", &port, "-d",
                "postgres", "-c", &query,
            ])
            .current_dir("/")
            .output()
            .expect("psql");
        if String::from_utf8_lossy(&out.stdout).trim() == "1" {
            return holder;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the lock on {table} was not taken");
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process stopped with SIGSTOP until dropped (then SIGCONT).
pub struct Stopped(nix::unistd::Pid);

impl Stopped {
    pub fn new(pid: i32) -> Stopped {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A CA for tests: its certificate and what signs with it.
pub struct TestCa {
    pub pem: String,
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

pub fn test_ca(name: &str) -> TestCa {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("ca").pem();
    TestCa {
        pem,
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// The agent certificate `ca` issues for host `kinetic` and the key of `csr_pem`.
pub fn agent_cert(ca: &TestCa, csr_pem: &str) -> String {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).expect("csr");
    let mut params = rcgen::CertificateParams::new(vec!["kinetic".to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kinetic");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params
        .signed_by(&csr.public_key, &ca.issuer)
        .expect("sign")
        .pem()
}

/// An agent `kinetic` enrolled by `ca`: its key, `ca` as the trusted CA and a certificate from it.
pub fn enrolled(
    ca: &TestCa,
) -> (
    tempfile::TempDir,
    crate::config::AgentConfig,
    crate::tls::StateFiles,
) {
    use crate::tls::{AgentKey, StateFiles};
    let dir = tempfile::tempdir().expect("tempdir");
    let files = StateFiles::new(&dir.path().join("state"));
    files.create_dir().expect("mkdir");
    let (key, _) = AgentKey::load_or_generate(&files).expect("key");
    files
        .write(&files.ca, ca.pem.as_bytes(), 0o644)
        .expect("ca");
    let cert = agent_cert(ca, &key.csr("kinetic", &[]).expect("csr"));
    files
        .write(&files.cert, cert.as_bytes(), 0o644)
        .expect("cert");
    let config = crate::config::AgentConfig {
        name: "kinetic".into(),
        sans: vec![],
        listen: crate::config::default_listen(),
        state_dir: files.dir.clone(),
        health_spec: dir.path().join("health.json"),
    };
    (dir, config, files)
}
