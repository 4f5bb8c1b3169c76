//! The bare platform: machines that already exist, reached at the addresses config.yml gives
//! (`ip_address`, else `public_ip`, else `private_ip`). Provision creates nothing: it checks
//! that every host is ready and writes the same inventory and ssh_config as other platforms.
//!
//! Host keys are never learnt from the network (no trust on first use). The operator lists the
//! hosts' keys in `<cluster dir>/known_hosts` (TPA's name for the operator's own file), having
//! checked their fingerprints on the machines; provision connects to each host with strict
//! checking against that file only, as the login user with the cluster key, and runs
//! `sudo -n true`. Every host is checked before the inventory is written; one that fails
//! (unknown or changed key, no login, no passwordless sudo) fails provision with what to do,
//! and nothing is written or touched anywhere.
//!
//! Packages reach these hosts through their agent ([`Platform::local_repo_on_host`] is `None`,
//! so deploy ships `local-repo/`). `deprovision` removes the generated files, and with
//! `--uninstall` tpa's own footprint on the hosts (agent, its keys, the shipped repository).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use anyhow::{Context, bail};

use super::{
    DeprovisionRequest, Deprovisioned, HostChange, Platform, ProvisionRequest, Provisioned,
};
use crate::config::{Cluster, Instance, Platform as Kind};
use crate::inventory::Host;
use crate::process::tokio_command;
use crate::ssh::Ssh;

mod hostkeys;

/// The operator's known-hosts file in the cluster directory: the keys provision trusts.
pub const KNOWN_HOSTS: &str = "known_hosts";

/// What provision runs on each host over the verified connection: passwordless sudo (exit 3
/// without it), where the controller's connection comes from, the host's public keys.
const PROBE: &str = "sudo -n true 2>/dev/null || exit 3; \
                     echo \"from ${SSH_CONNECTION%% *}\"; cat /etc/ssh/ssh_host_*_key.pub";

/// The bare platform. It remembers each host's verified key between provision and `host_key`.
#[derive(Debug, Default)]
pub struct BarePlatform {
    keys: Mutex<BTreeMap<String, String>>,
}

impl BarePlatform {
    pub fn new() -> BarePlatform {
        BarePlatform::default()
    }
}

/// The address tpa reaches a bare instance at.
pub fn address(instance: &Instance) -> Option<IpAddr> {
    instance
        .ip_address
        .or(instance.public_ip)
        .or(instance.private_ip)
}

impl Platform for BarePlatform {
    fn kind(&self) -> Kind {
        Kind::Bare
    }

    async fn provision(&self, request: &ProvisionRequest<'_>) -> anyhow::Result<Provisioned> {
        let cluster = request.cluster;
        let root = request.dir.root();
        let known_hosts = root.join(KNOWN_HOSTS);
        let key = request.dir.ssh_key(&cluster.name);
        let ours = hostkeys::ours(request)?;
        let checks = cluster.instances.iter().map(|instance| {
            let (known_hosts, key) = (&known_hosts, &key);
            let managed = ours.get(&instance.name).map(|ours| hostkeys::Managed {
                ours,
                first_contact: request
                    .previous
                    .is_none_or(|inventory| inventory.host(&instance.name).is_none()),
                say: request.say,
            });
            async move {
                let checked = match managed {
                    Some(managed) => {
                        hostkeys::check(cluster, instance, known_hosts, key, managed).await
                    }
                    None => check_host(cluster, instance, known_hosts, key).await,
                };
                (instance, checked)
            }
        });
        let mut hosts = Vec::new();
        let mut problems = Vec::new();
        let mut controller_address = None;
        for (instance, checked) in futures_util::future::join_all(checks).await {
            match checked {
                Ok(ready) => {
                    controller_address = controller_address.or(ready.controller_address);
                    if let Ok(mut keys) = self.keys.lock() {
                        keys.insert(instance.name.clone(), ready.host_key);
                    }
                    hosts.push((ready.host, HostChange::Unchanged));
                }
                Err(e) => problems.push(format!("  {}: {e:#}", instance.name)),
            }
        }
        if !problems.is_empty() {
            bail!(
                "{} of {} bare host(s) are not ready; nothing was written and no host was touched:\n{}",
                problems.len(),
                cluster.instances.len(),
                problems.join("\n")
            );
        }
        for (host, _) in &hosts {
            (request.say)(&format!(
                "host {} {} ready: SSH as {} with a known host key, passwordless sudo",
                host.name, host.address, host.ssh_user
            ));
        }
        Ok(Provisioned {
            network: None,
            controller_address,
            hosts,
            failures: Vec::new(),
            changed: false,
        })
    }

    async fn add_host(
        &self,
        _request: &ProvisionRequest<'_>,
        instance: &Instance,
    ) -> anyhow::Result<Host> {
        bail!(
            "the bare platform cannot create host {}: it only uses machines that exist. Prepare \
             a machine, add it to config.yml as an instance, run provision, then restore into it",
            instance.name
        )
    }

    async fn host_key(&self, host: &Host) -> anyhow::Result<String> {
        let keys = self.keys.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        keys.get(&host.name).cloned().with_context(|| {
            format!(
                "the host key of {} was not verified: run provision",
                host.name
            )
        })
    }

    async fn deprovision(&self, request: &DeprovisionRequest<'_>) -> anyhow::Result<Deprovisioned> {
        let mut done = Deprovisioned::default();
        let Some(inventory) = request.previous else {
            if request.uninstall {
                bail!(
                    "--uninstall needs the inventory of the last provision ({} is missing): run \
                     provision, then deprovision --uninstall",
                    request.dir.inventory().display()
                );
            }
            return Ok(done);
        };
        if !request.uninstall {
            done.kept.push(format!(
                "left the {} bare host(s) as they are (deprovision --uninstall also removes the \
                 agent and the shipped packages from them)",
                inventory.hosts.len()
            ));
            return Ok(done);
        }
        let ssh = Ssh::new(&request.dir.ssh_config())?;
        // The machine's own SSH host key back, when manage_ssh_hostkeys replaced it.
        let uninstall = format!(
            "{}; {}",
            crate::bootstrap::uninstall_script(),
            hostkeys::RESTORE
        );
        let jobs = inventory.hosts.iter().map(|host| {
            let (ssh, uninstall) = (&ssh, &uninstall);
            async move {
                let result = ssh
                    .run(&host.name, uninstall, b"")
                    .await
                    .with_context(|| format!("uninstalling tpa from {}", host.name));
                (host.name.clone(), result)
            }
        });
        let mut failures = Vec::new();
        for (name, result) in futures_util::future::join_all(jobs).await {
            match result {
                Ok(_) => done
                    .removed
                    .push(format!("tpa-agent and shipped packages on {name}")),
                Err(e) => failures.push(format!("  {e:#}")),
            }
        }
        if !failures.is_empty() {
            bail!(
                "--uninstall failed on {} host(s) (the generated files were kept so it can be re-run):\n{}",
                failures.len(),
                failures.join("\n")
            );
        }
        Ok(done)
    }

    fn local_repo_on_host(&self) -> Option<PathBuf> {
        None
    }
}

/// A host that passed every check.
struct Ready {
    host: Host,
    host_key: String,
    controller_address: Option<IpAddr>,
}

/// Checks one host: a key in the operator's known-hosts file, a strict SSH login as its user
/// with the cluster key, passwordless sudo. Reads the host's keys over that verified
/// connection and keeps the one known_hosts lists.
async fn check_host(
    cluster: &Cluster,
    instance: &Instance,
    known_hosts: &Path,
    key: &Path,
) -> anyhow::Result<Ready> {
    let Some(address) = address(instance) else {
        bail!("no ip_address, public_ip or private_ip in config.yml");
    };
    let user = instance.ansible_user();
    let port = cluster.ssh_port;
    let known = known_keys(known_hosts, address, port).await?;
    if known.is_empty() {
        bail!(
            "{} has no key for {address}: tpa never trusts a host key on first use. Check the \
             host's key on the machine (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then \
             add it, e.g. `ssh-keyscan -t ed25519{} {address} >> {}` after comparing the \
             fingerprint",
            known_hosts.display(),
            if port == 22 {
                String::new()
            } else {
                format!(" -p {port}")
            },
            known_hosts.display()
        );
    }
    let output = probe(address, port, user, key, known_hosts, false).await?;
    if !output.status.success() {
        return Err(refused(&output, user, address, known_hosts, key));
    }
    ready(
        instance,
        cluster,
        address,
        &output.stdout,
        &known,
        known_hosts,
    )
}

/// The host that answered `output` (the [`PROBE`]'s stdout), with the one of its keys that
/// `known` (read from `known_hosts`) lists.
fn ready(
    instance: &Instance,
    cluster: &Cluster,
    address: IpAddr,
    output: &[u8],
    known: &[(String, String)],
    known_hosts: &Path,
) -> anyhow::Result<Ready> {
    let stdout = String::from_utf8_lossy(output);
    let controller_address = stdout
        .lines()
        .find_map(|l| l.strip_prefix("from "))
        .and_then(|a| a.trim().parse().ok());
    let host_key = stdout
        .lines()
        .filter_map(key_blob)
        .find(|(kind, blob)| known.iter().any(|(k, b)| k == kind && b == blob))
        .map(|(kind, blob)| format!("{kind} {blob}"))
        .with_context(|| {
            format!(
                "none of the host's keys in /etc/ssh is the one {} lists for {address}",
                known_hosts.display()
            )
        })?;
    Ok(Ready {
        host: Host {
            name: instance.name.clone(),
            node: instance.node,
            address,
            ssh_user: instance.ansible_user().to_string(),
            ssh_port: cluster.ssh_port,
            platform: Kind::Bare,
            platform_id: None,
            image: None,
            location: instance.location.clone(),
            roles: instance.roles.iter().map(|r| r.to_string()).collect(),
            host_key: None,
            restored_from: None,
            volumes: Default::default(),
        },
        host_key,
        controller_address,
    })
}

/// Runs `remote` on the host over SSH as `user` with the cluster key, checking its host key
/// strictly against `known_hosts` only; with `accept_new` (manage_ssh_hostkeys' first contact)
/// a host `known_hosts` does not list is accepted and its key added there.
fn ssh(
    address: IpAddr,
    port: u16,
    user: &str,
    key: &Path,
    known_hosts: &Path,
    accept_new: bool,
) -> tokio::process::Command {
    let mut ssh = tokio_command("ssh");
    ssh.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
    ])
    .arg("-o")
    .arg(if accept_new {
        "StrictHostKeyChecking=accept-new"
    } else {
        "StrictHostKeyChecking=yes"
    })
    .args([
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile=\"{}\"", known_hosts.display()))
    .arg("-i")
    .arg(key)
    .args(["-p", &port.to_string(), "-l", user])
    .arg(address.to_string())
    .kill_on_drop(true);
    ssh
}

/// Runs the [`PROBE`] on the host (see [`ssh`]).
async fn probe(
    address: IpAddr,
    port: u16,
    user: &str,
    key: &Path,
    known_hosts: &Path,
    accept_new: bool,
) -> anyhow::Result<std::process::Output> {
    ssh(address, port, user, key, known_hosts, accept_new)
        .arg(PROBE)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running ssh (install openssh-client)")
}

/// The error for a failed [`probe`]: [`login_problem`] of its exit status and messages.
fn refused(
    output: &std::process::Output,
    user: &str,
    address: IpAddr,
    known_hosts: &Path,
    key: &Path,
) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        login_problem(
            output.status.code(),
            &String::from_utf8_lossy(&output.stderr),
            user,
            address,
            known_hosts,
            key
        )
    )
}

/// What to do about a failed login, from ssh's exit status and messages.
fn login_problem(
    code: Option<i32>,
    stderr: &str,
    user: &str,
    address: IpAddr,
    known_hosts: &Path,
    key: &Path,
) -> String {
    if hostkeys::key_mismatch(stderr) {
        format!(
            "the host at {address} presents an SSH host key that does not match {}: refused \
             (a changed key may mean another machine answers at this address). If the machine \
             was reinstalled, check its new key's fingerprint on the machine, then replace its \
             line in {}",
            known_hosts.display(),
            known_hosts.display()
        )
    } else if stderr.contains("Permission denied") {
        format!(
            "cannot log in as {user} with the cluster key: add {}.pub to ~{user}/.ssh/authorized_keys \
             on the host (or set ansible_user)",
            key.display()
        )
    } else if code == Some(3) {
        format!(
            "{user} has no passwordless sudo (or sudo is not installed): allow it (e.g. `{user} ALL=(ALL) NOPASSWD: ALL` in \
             /etc/sudoers.d/tpa), or log in as root"
        )
    } else {
        format!(
            "ssh {user}@{address} failed ({}): {}",
            code.map_or("killed".to_string(), |c| format!("exit {c}")),
            stderr.trim()
        )
    }
}

/// The keys `known_hosts` lists for `address` (`[address]:port` off port 22), as (type, base64).
async fn known_keys(
    known_hosts: &Path,
    address: IpAddr,
    port: u16,
) -> anyhow::Result<Vec<(String, String)>> {
    if !known_hosts.is_file() {
        bail!(
            "{} is missing: list the bare hosts' SSH host keys there (see docs/platforms.md)",
            known_hosts.display()
        );
    }
    let name = host_pattern(address, port);
    // ssh-keygen -F understands hashed entries and patterns, as ssh itself does.
    let output = tokio_command("ssh-keygen")
        .arg("-F")
        .arg(&name)
        .arg("-f")
        .arg(known_hosts)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running ssh-keygen (install openssh-client)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace().skip(1);
            Some((fields.next()?.to_string(), fields.next()?.to_string()))
        })
        .collect())
}

/// The known-hosts name of a host (`[address]:port` off port 22).
fn host_pattern(address: IpAddr, port: u16) -> String {
    match port {
        22 => address.to_string(),
        p => format!("[{address}]:{p}"),
    }
}

/// `ssh-ed25519 AAAA… comment` as (type, base64).
fn key_blob(line: &str) -> Option<(String, String)> {
    let mut fields = line.split_whitespace();
    let kind = fields.next()?;
    if !kind.starts_with("ssh-") && !kind.starts_with("ecdsa-") {
        return None;
    }
    Some((kind.to_string(), fields.next()?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_problems_say_what_to_do() {
        let kh = Path::new("/c/known_hosts");
        let key = Path::new("/c/id_t");
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let changed = login_problem(
            Some(255),
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@",
            "admin",
            ip,
            kh,
            key,
        );
        assert!(
            changed.contains("does not match /c/known_hosts: refused"),
            "{changed}"
        );
        let denied = login_problem(
            Some(255),
            "admin@10.0.0.2: Permission denied (publickey).",
            "admin",
            ip,
            kh,
            key,
        );
        assert!(
            denied.contains("add /c/id_t.pub to ~admin/.ssh/authorized_keys"),
            "{denied}"
        );
        let sudo = login_problem(Some(3), "", "admin", ip, kh, key);
        assert!(sudo.contains("admin has no passwordless sudo"), "{sudo}");
    }

    #[test]
    fn keys_are_type_and_blob() {
        assert_eq!(
            key_blob("ssh-ed25519 AAAAC3 root@h"),
            Some(("ssh-ed25519".into(), "AAAAC3".into()))
        );
        assert_eq!(key_blob("from 10.0.0.1"), None);
    }

    #[tokio::test]
    async fn a_host_missing_from_known_hosts_is_refused_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join(KNOWN_HOSTS);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let err = known_keys(&kh, ip, 22).await.unwrap_err().to_string();
        assert!(err.contains("known_hosts is missing"), "{err}");
        std::fs::write(
            &kh,
            "192.0.2.8 ssh-ed25519 AAAAother\n[192.0.2.7]:2222 ssh-ed25519 AAAAport\n",
        )
        .unwrap();
        assert!(known_keys(&kh, ip, 22).await.unwrap().is_empty());
        assert_eq!(
            known_keys(&kh, ip, 2222).await.unwrap(),
            [("ssh-ed25519".to_string(), "AAAAport".to_string())]
        );
    }
}
