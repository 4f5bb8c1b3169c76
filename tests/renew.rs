//! Certificate renewal scenario: one primary (`ruby`, cluster `renewal`, Debian 12) whose agent and
//! controller certificates live 120 s (`agent_cert_lifetime`) and are renewed within 90 s of expiry
//! (`agent_cert_renew_before`). Deploy, wait until the agent's certificate is due, deploy again: the agent
//! gets a new key and certificate over its mutual-TLS channel (no re-enrolment), a deploy right after
//! changes nothing, and the cluster still answers after the first certificate has expired. `status` then
//! warns "run deploy to renew" for the second one.
//!
//! Then `rotate-ca`, trusted and compromised, on the same host, with `/metrics` over TLS scraped with a
//! `client-cert` certificate (see [`rotate_ca`]).
//!
//! Cost in CI: about 150 s (a first deploy, then mostly waiting for the 120 s certificate to expire; the
//! waits are computed from the certificates' own expiry, so a slow first deploy waits less).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tpa_e2e::*;

const LIFETIME: u64 = 120;
const RENEW_BEFORE: u64 = 90;

fn ssh(ssh_config: &str, host: &str, command: &str) -> (bool, String) {
    run(
        "ssh",
        &["-F", ssh_config, "-o", "BatchMode=yes", host, command],
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Sleeps until Unix second `at` (no-op if it has passed).
fn sleep_until(at: i64) {
    let left = at - now();
    if left > 0 {
        eprintln!("waiting {left} s");
        std::thread::sleep(Duration::from_secs(left as u64));
    }
}

/// A certificate as the agent's state directory and its TLS port show it.
#[derive(Debug, Clone, PartialEq)]
struct AgentCert {
    serial: String,
    not_after: i64,
    /// sha256sum of agent.key on the host.
    key_sha256: String,
    /// The body of agent.key (the base64 lines): must never leave the host.
    key_body: Vec<String>,
}

/// `serial=…` and `notAfter=…` of the PEM certificate on stdin, via `openssl x509`.
fn serial_and_expiry(pem: &str) -> (String, i64) {
    let (ok, out) = run(
        "sh",
        &[
            "-c",
            &format!(
                "printf '%s' '{}' | openssl x509 -noout -serial -enddate",
                pem.trim()
            ),
        ],
    );
    assert!(ok, "openssl x509 failed on {pem}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .to_string()
    };
    let (ok, epoch) = run("date", &["-d", &field("notAfter="), "+%s"]);
    assert!(ok, "date -d failed");
    (field("serial="), epoch.trim().parse().expect("epoch"))
}

fn agent_cert(ssh_config: &str, host: &str) -> AgentCert {
    let (ok, pem) = ssh(ssh_config, host, "cat /var/lib/tpa-agent/agent.crt");
    assert!(ok, "reading agent.crt on {host}");
    let (serial, not_after) = serial_and_expiry(&pem);
    let (ok, key) = ssh(ssh_config, host, "cat /var/lib/tpa-agent/agent.key");
    assert!(
        ok && key.contains("PRIVATE KEY"),
        "reading agent.key on {host}"
    );
    let (ok, sum) = ssh(ssh_config, host, "sha256sum /var/lib/tpa-agent/agent.key");
    assert!(ok, "sha256sum on {host}");
    AgentCert {
        serial,
        not_after,
        key_sha256: sum
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        key_body: key
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// The serial of the certificate the agent serves on its port (what a client sees).
fn served_serial(address: &str, host: &str) -> String {
    let (_, pem) = run(
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -connect {address}:7443 -servername {host} </dev/null 2>/dev/null \
                 | openssl x509"
            ),
        ],
    );
    serial_and_expiry(&pem).0
}

/// No file of the cluster directory and no output holds a line of the agent's key.
fn assert_key_stays_on_host(cert: &AgentCert, dir: &std::path::Path, outputs: &[String]) {
    let mut texts: Vec<(String, String)> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("output {i}"), o.clone()))
        .collect();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            texts.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    for line in &cert.key_body {
        for (name, text) in &texts {
            assert!(
                !text.contains(line.as_str()),
                "{name} holds a line of the agent's private key"
            );
        }
    }
}

#[test]
fn agent_certificate_is_renewed_over_its_channel_before_expiry() {
    let Some(scenario) = Scenario::primary(
        "agent_certificate_is_renewed_over_its_channel_before_expiry",
        "renewal",
        "ruby",
        "tpa/debian:12",
        "15",
    ) else {
        return;
    };
    let (dir, host, path) = (scenario.dir.path(), scenario.host.as_str(), scenario.path());
    let ssh_config = &scenario.ssh_config();
    let config = dir.join("config.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "  use_local_repo_only: true\n",
        &format!(
            "  use_local_repo_only: true\n  agent_cert_lifetime: {LIFETIME}s\n  \
             agent_cert_renew_before: {RENEW_BEFORE}s\n"
        ),
    );
    std::fs::write(&config, text).unwrap();

    assert!(controller(&["download-packages", path]).status.success());
    let started = now();
    let first = controller(&["deploy", path]);
    assert!(first.status.success(), "first deploy failed");
    assert!(stdout(&first).contains("agent installed and enrolled"));
    eprintln!("first deploy took {} s", now() - started);
    let address = scenario.address();
    let cert1 = agent_cert(ssh_config, host);
    assert!(
        (cert1.not_after - started - LIFETIME as i64).abs() < 120,
        "the agent's certificate lives agent_cert_lifetime: {cert1:?}, deploy started at {started}"
    );
    assert_eq!(served_serial(&address, host), cert1.serial);
    let controller1 = std::fs::read_to_string(dir.join("tls/controller.crt")).unwrap();

    // Due for renewal (less than RENEW_BEFORE left), with 20 s to spare before it expires.
    let due = cert1.not_after - RENEW_BEFORE as i64 + 5;
    assert!(
        now() < cert1.not_after - 20,
        "the first deploy took too long: the certificate is about to expire"
    );
    sleep_until(due);
    let renewing = controller(&["deploy", path]);
    assert!(renewing.status.success(), "renewing deploy failed");
    let out = stdout(&renewing);
    assert!(
        out.contains(&format!("[{host}] agent certificate renewed (expires ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("[{host}] bootstrap: agent current")),
        "renewed over the channel, not re-enrolled over SSH: {out}"
    );
    let cert2 = agent_cert(ssh_config, host);
    assert_ne!(cert2.serial, cert1.serial, "a new certificate");
    assert!(cert2.not_after > cert1.not_after, "{cert2:?} vs {cert1:?}");
    assert_ne!(cert2.key_sha256, cert1.key_sha256, "a new key");
    assert_eq!(
        served_serial(&address, host),
        cert2.serial,
        "the agent serves the new certificate"
    );
    let (ok, leftovers) = ssh(ssh_config, host, "ls /var/lib/tpa-agent");
    assert!(
        ok && !leftovers.contains(".next"),
        "renewal left files: {leftovers}"
    );
    // The controller's own identity follows the same settings: it was due too.
    let controller2 = std::fs::read_to_string(dir.join("tls/controller.crt")).unwrap();
    assert_ne!(
        controller1, controller2,
        "the controller identity was renewed"
    );

    let quiet = controller(&["deploy", path]);
    assert!(quiet.status.success());
    assert!(
        stdout(&quiet).contains(": 0 changed,"),
        "{}",
        stdout(&quiet)
    );
    assert!(!stdout(&quiet).contains("certificate renewed"));
    assert_eq!(agent_cert(ssh_config, host).serial, cert2.serial);

    // Past the first certificate's expiry, and inside the second one's renewal window (a health
    // round later), the cluster answers: status is 0 and says what to do about the second.
    sleep_until((cert1.not_after + 5).max(cert2.not_after - RENEW_BEFORE as i64 + 20));
    assert!(now() < cert2.not_after - 5, "waited too long");
    let status = controller(&["status", path]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "status after the first expiry"
    );
    let shown = format!(
        "{}{}",
        stdout(&status),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(shown.contains("run deploy to renew"), "{shown}");

    let outputs: Vec<String> = [&first, &renewing, &quiet, &status]
        .iter()
        .flat_map(|o| [stdout(o), String::from_utf8_lossy(&o.stderr).into_owned()])
        .collect();
    assert!(dir.join("deploy.log").exists());
    assert_key_stays_on_host(&cert1, dir, &outputs);
    assert_key_stays_on_host(&cert2, dir, &outputs);

    rotate_ca(&scenario, &config);
}

/// Whether `openssl verify` accepts the certificate `pem` against the CA file `ca`.
fn verifies(pem: &str, ca: &std::path::Path) -> bool {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), pem).expect("write");
    run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &ca.display().to_string(),
            &file.path().display().to_string(),
        ],
    )
    .0
}

/// Whether Postgres on `address` serves a certificate for `host` that chains to `ca` (what a client
/// with sslmode=verify-full and sslrootcert=`ca` checks).
fn postgres_verifies(address: &str, host: &str, ca: &std::path::Path) -> bool {
    let (_, out) = run(
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -starttls postgres -connect {address}:5432 -CAfile {} \
                 -verify_hostname {host} -verify_return_error </dev/null 2>&1",
                ca.display()
            ),
        ],
    );
    out.contains("Verify return code: 0 (ok)")
}

/// `/metrics` over TLS with the client certificate `name` in `certs` (None: none presented).
fn scrape(
    address: &str,
    ca: &std::path::Path,
    certs: Option<(&std::path::Path, &str)>,
) -> (bool, String) {
    let mut args = vec![
        "-sS".to_string(),
        "--max-time".into(),
        "10".into(),
        "--cacert".into(),
        ca.display().to_string(),
    ];
    if let Some((dir, name)) = certs {
        args.extend([
            "--cert".into(),
            dir.join(format!("{name}.crt")).display().to_string(),
            "--key".into(),
            dir.join(format!("{name}.key")).display().to_string(),
        ]);
    }
    args.push(format!("https://{address}:9187/metrics"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("curl", &args)
}

/// `rotate-ca` on the running cluster (issue 11): first with the old CA still trusted (three deploys
/// over the agents' channels), then as if its key had leaked (re-enrolment over SSH). After each, the
/// agent serves a certificate from the new CA and trusts it alone, Postgres serves one a client verifies
/// with the new `ca.crt` (and not with the old), `/metrics` over TLS takes a client certificate from the
/// new CA only, and a deploy changes nothing. Costs four deploys that change certificates (about 40 s).
fn rotate_ca(scenario: &Scenario, config: &std::path::Path) {
    let (dir, host, path) = (scenario.dir.path(), scenario.host.as_str(), scenario.path());
    let ssh_config = &scenario.ssh_config();
    let address = scenario.address();
    // Year-long certificates from here on, and /metrics over TLS.
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replace(
        &format!(
            "  agent_cert_lifetime: {LIFETIME}s
  agent_cert_renew_before: {RENEW_BEFORE}s
"
        ),
        "  agent_metrics_port: 9187
  agent_metrics_listen: tls
",
    );
    std::fs::write(config, text).unwrap();
    assert!(controller(&["deploy", path]).status.success());

    // A Prometheus client certificate scrapes; no certificate, no scrape.
    let prom = dir.join("prometheus-old");
    let issued = controller(&[
        "client-cert",
        path,
        "--name",
        "prometheus",
        "--out",
        prom.to_str().unwrap(),
    ]);
    assert!(issued.status.success());
    let old_ca = dir.join("old-ca.crt");
    std::fs::copy(dir.join("ca.crt"), &old_ca).unwrap();
    // The agent opens /metrics with the first health round that reads the new setting (deploy
    // asked for one as it ended).
    let deadline = now() + 30;
    let (ok, metrics) = loop {
        let (ok, metrics) = scrape(&address, &old_ca, Some((&prom, "prometheus")));
        if (ok && metrics.contains("tpa_health_up")) || now() > deadline {
            break (ok, metrics);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ok && metrics.contains("tpa_health_up"), "{metrics}");
    assert!(
        !scrape(&address, &old_ca, None).0,
        "a client without a certificate scraped"
    );
    let refused = controller(&[
        "client-cert",
        path,
        "--name",
        "tpa-controller",
        "--out",
        prom.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(postgres_verifies(&address, host, &old_ca));

    let check_new_ca = |old: &std::path::Path, label: &str| {
        let new_ca = dir.join("ca.crt");
        let new_pem = std::fs::read_to_string(&new_ca).unwrap();
        assert_eq!(
            new_pem.matches("BEGIN CERTIFICATE").count(),
            1,
            "{label}: one CA in ca.crt"
        );
        assert_ne!(
            new_pem,
            std::fs::read_to_string(old).unwrap(),
            "{label}: a new CA"
        );
        let (ok, agent_pem) = ssh(ssh_config, host, "cat /var/lib/tpa-agent/agent.crt");
        assert!(ok);
        assert!(
            verifies(&agent_pem, &new_ca),
            "{label}: the agent's certificate is the new CA's"
        );
        assert!(
            !verifies(&agent_pem, old),
            "{label}: … and not the old CA's"
        );
        assert_eq!(
            served_serial(&address, host),
            serial_and_expiry(&agent_pem).0,
            "{label}"
        );
        let (ok, trusted) = ssh(ssh_config, host, "cat /var/lib/tpa-agent/ca.crt");
        assert!(
            ok && trusted.trim() == new_pem.trim(),
            "{label}: the agent trusts the new CA alone: {trusted}"
        );
        assert!(
            postgres_verifies(&address, host, &new_ca),
            "{label}: Postgres, new CA"
        );
        assert!(
            !postgres_verifies(&address, host, old),
            "{label}: Postgres, old CA"
        );
        let status = controller(&["status", path]);
        assert_eq!(status.status.code(), Some(0), "{label}: status");
        let quiet = controller(&["deploy", path]);
        assert!(quiet.status.success());
        assert!(
            stdout(&quiet).contains(": 0 changed,"),
            "{label}: {}",
            stdout(&quiet)
        );
    };

    let rotated = controller(&["rotate-ca", path]);
    let out = stdout(&rotated);
    assert!(rotated.status.success(), "rotate-ca failed");
    for step in [
        "rotate-ca 1/3",
        "rotate-ca 2/3",
        "rotate-ca 3/3",
        "rotate-ca: done",
    ] {
        assert!(out.contains(step), "no {step:?} in {out}");
    }
    assert!(
        out.contains(&format!("[{host}] agent certificate renewed")),
        "{out}"
    );
    assert!(
        !out.contains("agent installed and enrolled"),
        "no SSH re-enrolment: {out}"
    );
    check_new_ca(&old_ca, "rotate-ca");
    // The old scrape certificate no longer opens /metrics; a new one does.
    let new_ca = dir.join("ca.crt");
    assert!(!scrape(&address, &new_ca, Some((&prom, "prometheus"))).0);
    let prom = dir.join("prometheus-new");
    assert!(
        controller(&[
            "client-cert",
            path,
            "--name",
            "prometheus",
            "--out",
            prom.to_str().unwrap()
        ])
        .status
        .success()
    );
    let (ok, metrics) = scrape(&address, &new_ca, Some((&prom, "prometheus")));
    assert!(ok && metrics.contains("tpa_health_up"), "{metrics}");

    // The CA key leaked: the next CA is trusted alone at once, the agent re-enrolled over SSH.
    let leaked = dir.join("leaked-ca.crt");
    std::fs::copy(&new_ca, &leaked).unwrap();
    let replaced = controller(&["rotate-ca", path, "--old-ca-compromised"]);
    let out = stdout(&replaced);
    assert!(
        replaced.status.success(),
        "rotate-ca --old-ca-compromised failed"
    );
    assert!(
        out.contains(&format!("[{host}] bootstrap: agent installed and enrolled")),
        "{out}"
    );
    assert!(!dir.join("tls/reenrol").exists());
    check_new_ca(&leaked, "rotate-ca --old-ca-compromised");
}
