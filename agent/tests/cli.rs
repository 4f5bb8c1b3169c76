//! The `tpa-agent` binary's command line: `init` reads its secrets from stdin and prints one parseable line;
//! `version` names the protocol.

use std::io::Write as _;
use std::process::{Command, Stdio};

use tpa_controller::agent_client::{self, InitOutcome, JoinToken, TOKEN_LIFETIME};
use tpa_controller::pki::Pki;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tpa-agent"))
}

fn run_init(state: &std::path::Path, stdin: &str) -> std::process::Output {
    let mut child = agent()
        .args([
            "init",
            "--name",
            "kinetic",
            "--san",
            "10.0.0.2",
            "--listen",
            "127.0.0.1:7443",
        ])
        .arg("--config")
        .arg(state.join("agent.toml"))
        .arg("--state-dir")
        .arg(state.join("lib"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tpa-agent");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn init_reads_stdin_and_prints_the_fingerprint() {
    let pki = Pki::generate("test cluster CA").expect("CA");
    let state = tempfile::tempdir().expect("tempdir");
    let token = JoinToken::generate();
    let document = agent_client::init_document(pki.ca_cert_pem(), &token, TOKEN_LIFETIME);

    let output = run_init(state.path(), &document);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let outcome = agent_client::parse_init_output("kinetic", &stdout).expect("parseable");
    assert!(
        matches!(outcome, InitOutcome::Pending { .. }),
        "{outcome:?}"
    );
    let secret = document
        .lines()
        .find(|l| l.starts_with("join_token"))
        .expect("token line");
    let secret = secret.split('"').nth(1).expect("token value");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "the token is never printed"
    );
    let config = std::fs::read_to_string(state.path().join("agent.toml")).expect("config");
    assert!(
        config.contains("listen = \"127.0.0.1:7443\"") && !config.contains(secret),
        "{config}"
    );
}

#[test]
fn init_with_a_bad_document_fails_with_a_message() {
    let state = tempfile::tempdir().expect("tempdir");
    let output = run_init(state.path(), "nonsense");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tpa-agent: invalid init document on stdin"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn init_requires_the_address_to_listen_on() {
    let state = tempfile::tempdir().expect("tempdir");
    let output = agent()
        .args(["init", "--name", "kinetic"])
        .arg("--config")
        .arg(state.path().join("agent.toml"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
    assert!(!state.path().join("agent.toml").exists());
}

#[test]
fn version_names_the_protocol() {
    let output = agent().arg("version").output().expect("run");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(
        stdout,
        format!(
            "tpa-agent {} (protocol {})\n",
            env!("CARGO_PKG_VERSION"),
            tpa_proto::PROTOCOL_VERSION
        )
    );
}
