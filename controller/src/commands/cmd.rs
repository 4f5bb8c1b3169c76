//! `tpa-controller cmd <dir> <selector> -- <command…>`: runs one argument vector (no shell
//! unless you ask for one, e.g. `-- sh -c '…'`) as root on the selected hosts through their
//! agents' `Exec`, all hosts at once; each host's output (stdout and stderr in the order they
//! came) is printed as one block when it finishes, headed by its exit status. Exit 1 when any
//! host failed or could not be reached.
//!
//! And `tpa-controller ssh <dir> <host> [command…]`: `ssh -F <dir>/ssh_config <host> …`,
//! after checking the host against config.yml and inventory.json.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use crate::agent_client::{ExecCommand, ExecOutput};
use crate::commands::deployed::Deployed;
use crate::commands::provision::load_cluster;
use crate::inventory::Inventory;
use crate::selector::Selector;

/// How one host's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOutcome {
    /// The command ran; its exit code (128 + N for signal N).
    Exited(i32),
    /// It could not be run there (agent unreachable, timed out, …).
    Error(String),
}

/// One host's block of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRun {
    pub host: String,
    pub outcome: HostOutcome,
    /// stdout and stderr interleaved as they arrived.
    pub output: Vec<u8>,
    pub elapsed: Duration,
}

pub async fn run(
    dir: &Path,
    selector: &str,
    argv: Vec<String>,
    timeout: Option<u64>,
) -> anyhow::Result<ExitCode> {
    if argv.is_empty() {
        bail!(
            "no command: write it after `--`, e.g. `cmd {} all -- uptime`",
            dir.display()
        );
    }
    let deployed = Deployed::open(dir)?;
    let hosts = selected(&deployed.cluster, &deployed.inventory, selector)?;
    let timeout = timeout.map(Duration::from_secs);
    let deployed = &deployed;
    let mut running: FuturesUnordered<_> = hosts
        .iter()
        .map(|host| {
            let argv = argv.clone();
            async move {
                let started = Instant::now();
                let (outcome, output) = match run_on(deployed, host, argv, timeout).await {
                    Ok((code, output)) => (HostOutcome::Exited(code), output),
                    Err(e) => (HostOutcome::Error(format!("{e:#}")), Vec::new()),
                };
                HostRun {
                    host: host.clone(),
                    outcome,
                    output,
                    elapsed: started.elapsed(),
                }
            }
        })
        .collect();
    let mut runs = Vec::new();
    while let Some(done) = running.next().await {
        print!("{}", block(&done));
        runs.push(done);
    }
    let summary = summary(&runs, &hosts);
    println!("{summary}");
    let ok = runs.iter().all(|r| r.outcome == HostOutcome::Exited(0));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The deployed hosts `selector` names, in config.yml order, or why there are none.
pub fn selected(
    cluster: &crate::config::Cluster,
    inventory: &Inventory,
    selector: &str,
) -> anyhow::Result<Vec<String>> {
    let parsed =
        Selector::parse(selector, cluster).map_err(|e| anyhow::anyhow!("bad host selector {e}"))?;
    let hosts: Vec<String> = parsed
        .select(cluster)
        .into_iter()
        .filter(|i| !i.provision_only && inventory.host(&i.name).is_some())
        .map(|i| i.name.clone())
        .collect();
    if hosts.is_empty() {
        bail!("`{selector}` selects no deployed host");
    }
    Ok(hosts)
}

async fn run_on(
    deployed: &Deployed,
    host: &str,
    argv: Vec<String>,
    timeout: Option<Duration>,
) -> anyhow::Result<(i32, Vec<u8>)> {
    let mut client = deployed.connect(host).await?;
    let stream = client
        .exec_stream(ExecCommand {
            argv,
            timeout,
            ..ExecCommand::default()
        })
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut output = Vec::new();
    while let Some(item) = stream.next().await {
        match item? {
            ExecOutput::Stdout(b) | ExecOutput::Stderr(b) => output.extend(b),
            ExecOutput::ExitCode(code) => return Ok((code, output)),
        }
    }
    bail!("the agent on {host} ended the command without an exit code")
}

/// A host's block: a header with its exit status, then its output as it came.
pub fn block(run: &HostRun) -> String {
    let mut text = String::new();
    let status = match &run.outcome {
        HostOutcome::Exited(code) => format!("exit {code}"),
        HostOutcome::Error(e) => format!("ERROR: {e}"),
    };
    let _ = writeln!(
        text,
        "==> {} ({status}, {:.1}s)",
        run.host,
        run.elapsed.as_secs_f64()
    );
    let output = String::from_utf8_lossy(&run.output);
    text.push_str(&output);
    if !output.is_empty() && !output.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The closing line: every host's status, in config.yml order.
pub fn summary(runs: &[HostRun], order: &[String]) -> String {
    let failed: Vec<&str> = order
        .iter()
        .filter_map(|h| runs.iter().find(|r| &r.host == h))
        .filter(|r| r.outcome != HostOutcome::Exited(0))
        .map(|r| r.host.as_str())
        .collect();
    let statuses: Vec<String> = order
        .iter()
        .filter_map(|h| runs.iter().find(|r| &r.host == h))
        .map(|r| match &r.outcome {
            HostOutcome::Exited(code) => format!("{} {code}", r.host),
            HostOutcome::Error(_) => format!("{} error", r.host),
        })
        .collect();
    if failed.is_empty() {
        format!("ok on {} host(s): {}", runs.len(), statuses.join(", "))
    } else {
        format!("failed on {}: {}", failed.join(", "), statuses.join(", "))
    }
}

/// `ssh -F <dir>/ssh_config <host> [command…]`, replacing this process.
pub fn ssh(dir: &Path, host: &str, command: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let (cluster_dir, cluster) = load_cluster(dir)?;
    if cluster.instance(host).is_none() {
        bail!(
            "config.yml has no host `{host}`; hosts are {}",
            cluster.instance_names()
        );
    }
    let inventory = Inventory::load(&cluster_dir.inventory())?;
    if inventory.as_ref().and_then(|i| i.host(host)).is_none() {
        bail!("{host} is not provisioned (not in inventory.json): run provision or deploy first");
    }
    let config = cluster_dir.ssh_config();
    if !config.is_file() {
        bail!("{} is missing: run provision first", config.display());
    }
    let mut ssh = crate::process::command("ssh");
    ssh.arg("-F").arg(&config).arg("--").arg(host).args(command);
    let error = ssh.exec();
    Err(error).context("could not run ssh; is OpenSSH's client installed?")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(host: &str, outcome: HostOutcome, output: &str) -> HostRun {
        HostRun {
            host: host.into(),
            outcome,
            output: output.as_bytes().to_vec(),
            elapsed: Duration::from_millis(250),
        }
    }

    #[test]
    fn blocks_and_summary() {
        assert_eq!(
            block(&run("ulb", HostOutcome::Exited(0), "up 3 days")),
            "==> ulb (exit 0, 0.2s)\nup 3 days\n"
        );
        assert_eq!(
            block(&run("vub", HostOutcome::Error("no agent".into()), "")),
            "==> vub (ERROR: no agent, 0.2s)\n"
        );
        let order = ["ulb".to_string(), "vub".to_string()];
        let runs = [
            run("vub", HostOutcome::Exited(3), ""),
            run("ulb", HostOutcome::Exited(0), ""),
        ];
        assert_eq!(summary(&runs, &order), "failed on vub: ulb 0, vub 3");
        assert_eq!(summary(&runs[1..], &order), "ok on 1 host(s): ulb 0");
    }

    #[test]
    fn selection_names_what_is_missing() {
        let cluster = crate::selector::tests::cluster();
        let mut inventory = crate::planner::tests::inventory(&cluster);
        inventory.hosts.retain(|h| h.name != "kul");
        assert_eq!(
            selected(&cluster, &inventory, "location:ghent").unwrap(),
            ["vub"]
        );
        assert_eq!(
            selected(&cluster, &inventory, "kul")
                .unwrap_err()
                .to_string(),
            "`kul` selects no deployed host"
        );
        assert!(
            selected(&cluster, &inventory, "role:nope")
                .unwrap_err()
                .to_string()
                .starts_with("bad host selector `role:nope`: no role `nope`")
        );
    }
}
