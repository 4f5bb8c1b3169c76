//! `manage_ssh_hostkeys: true` on bare hosts (TPA's option): tpa installs an ed25519 host key
//! it generated (kept in the secrets store, as for aws) and from then on trusts that key only.
//!
//! The first contact still has to be trusted some way:
//! - the operator's `known_hosts` lists the host's current key: checked strictly, as without
//!   the option;
//! - else, for a host no earlier provision recorded: trust on first use, which is what the
//!   option asks for, with the fingerprint printed so that it can be checked on the machine.
//!
//! A recorded host that no longer presents tpa's key is refused, unless the operator lists its
//! new key in `known_hosts` (a reinstalled machine). The machine's own key is kept beside it
//! (`.before-tpa`) and put back by `deprovision --uninstall` ([`RESTORE`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt as _;

use super::{Ready, address, host_pattern, key_blob, known_keys, probe, ready, refused, ssh};
use crate::config::{Cluster, Instance};
use crate::platform::{ProvisionRequest, Say, host_key_secret};
use crate::process::tokio_command;
use crate::secrets::{Secrets, SshKeyPair};
use crate::ssh::shell_quote;

/// Installs the private key read from stdin as the host's ed25519 key (the machine's own key
/// kept once as `.before-tpa`), checks sshd's configuration and reloads sshd.
const INSTALL: &str = "set -e; umask 077; k=/etc/ssh/ssh_host_ed25519_key; \
    if [ -e $k ] && [ ! -e $k.before-tpa ]; then cp -p $k $k.before-tpa; \
    cp -p $k.pub $k.pub.before-tpa; fi; \
    cat > $k.tpa-new; ssh-keygen -y -f $k.tpa-new > $k.pub.tpa-new; chmod 644 $k.pub.tpa-new; \
    mv $k.tpa-new $k; mv $k.pub.tpa-new $k.pub; /usr/sbin/sshd -t; \
    systemctl reload ssh 2>/dev/null || systemctl reload sshd";

/// Puts the machine's own host key back (part of `deprovision --uninstall`).
pub const RESTORE: &str = "k=/etc/ssh/ssh_host_ed25519_key; if [ -e $k.before-tpa ]; then \
    mv $k.before-tpa $k; mv $k.pub.before-tpa $k.pub; \
    systemctl reload ssh 2>/dev/null || systemctl reload sshd; fi; true";

/// tpa's host key of every instance with `manage_ssh_hostkeys: true`, generated into the
/// secrets store the first time (and saved before any host is touched).
pub(super) fn ours(request: &ProvisionRequest<'_>) -> anyhow::Result<BTreeMap<String, SshKeyPair>> {
    let cluster = request.cluster;
    let managed: Vec<&Instance> = cluster
        .instances
        .iter()
        .filter(|i| i.vars.manage_ssh_hostkeys == Some(true))
        .collect();
    let mut keys = BTreeMap::new();
    if managed.is_empty() {
        return Ok(keys);
    }
    let mut secrets = Secrets::open(request.dir.root(), cluster.vault_name.as_deref())?;
    for instance in managed {
        let pair = secrets
            .ssh_key_or_generate(
                &host_key_secret(&instance.name),
                &format!("root@{}", instance.name),
                false,
            )?
            .context("a generated host key")?;
        keys.insert(instance.name.clone(), pair);
    }
    secrets.save()?;
    Ok(keys)
}

/// What [`check`] needs besides the host.
pub(super) struct Managed<'a> {
    /// tpa's key for this host.
    pub ours: &'a SshKeyPair,
    /// No earlier provision recorded this host: its current key may be trusted on first use.
    pub first_contact: bool,
    pub say: Say<'a>,
}

/// Checks one host as [`super::check_host`] does, reaching it through tpa's host key, and
/// installs that key first when the host does not present it yet.
pub(super) async fn check(
    cluster: &Cluster,
    instance: &Instance,
    known_hosts: &Path,
    key: &Path,
    managed: Managed<'_>,
) -> anyhow::Result<Ready> {
    let Some(address) = address(instance) else {
        bail!("no ip_address, public_ip or private_ip in config.yml");
    };
    let (user, port) = (instance.ansible_user(), cluster.ssh_port);
    let ours = key_blob(&managed.ours.public).context("tpa's host key is unreadable")?;
    let pinned = tempfile::NamedTempFile::new().context("a temporary known-hosts file")?;
    std::fs::write(
        pinned.path(),
        format!("{} {} {}\n", host_pattern(address, port), ours.0, ours.1),
    )?;
    let ours = [ours];
    let output = probe(address, port, user, key, pinned.path(), false).await?;
    if output.status.success() {
        return ready(
            instance,
            cluster,
            address,
            &output.stdout,
            &ours,
            pinned.path(),
        );
    }
    if !key_mismatch(&String::from_utf8_lossy(&output.stderr)) {
        return Err(refused(&output, user, address, known_hosts, key));
    }

    // Not tpa's key (yet): how is the host's current key trusted?
    let listed = if known_hosts.is_file() {
        known_keys(known_hosts, address, port).await?
    } else {
        Vec::new()
    };
    let scratch = tempfile::NamedTempFile::new().context("a temporary known-hosts file")?;
    let first_use = listed.is_empty();
    if first_use && !managed.first_contact {
        bail!(
            "the host at {address} no longer presents the SSH host key tpa installed \
             (manage_ssh_hostkeys), and {} lists no key for it: refused (another machine may \
             answer at this address). If the machine was reinstalled, check its key's \
             fingerprint on the machine, add it to {}, and run provision again",
            known_hosts.display(),
            known_hosts.display()
        );
    }
    let trusted_by = if first_use {
        scratch.path()
    } else {
        known_hosts
    };
    let output = probe(address, port, user, key, trusted_by, first_use).await?;
    if !output.status.success() {
        return Err(refused(&output, user, address, known_hosts, key));
    }
    if first_use {
        (managed.say)(&format!(
            "host {} {address}: trusted its SSH host key on first use ({}), as \
             manage_ssh_hostkeys allows; compare it on the machine's console with `ssh-keygen \
             -lf /etc/ssh/ssh_host_ed25519_key.pub.before-tpa`",
            instance.name,
            fingerprint(scratch.path()).await
        ));
    }
    install(address, port, user, key, trusted_by, managed.ours).await?;

    // sshd re-executes itself on reload: a moment without a listener.
    let mut last = String::new();
    for _ in 0..40 {
        let output = probe(address, port, user, key, pinned.path(), false).await?;
        if output.status.success() {
            (managed.say)(&format!(
                "host {} {address}: now presents tpa's SSH host key (manage_ssh_hostkeys)",
                instance.name
            ));
            return ready(
                instance,
                cluster,
                address,
                &output.stdout,
                &ours,
                pinned.path(),
            );
        }
        last = String::from_utf8_lossy(&output.stderr).trim().to_string();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("after installing tpa's host key, the host does not present it: {last}")
}

/// Whether ssh refused the host's key (as opposed to the login).
pub(super) fn key_mismatch(stderr: &str) -> bool {
    stderr.contains("HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key verification failed")
}

/// `256 SHA256:… (ED25519)` of the one key in `known_hosts`.
async fn fingerprint(known_hosts: &Path) -> String {
    let output = tokio_command("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(known_hosts)
        .stdin(Stdio::null())
        .output()
        .await;
    match output {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let fields: Vec<&str> = text.split_whitespace().collect();
            match (fields.get(1), fields.last()) {
                (Some(fp), Some(kind)) => format!("{fp} {kind}"),
                _ => text.trim().to_string(),
            }
        }
        _ => "fingerprint unknown".to_string(),
    }
}

/// Sends tpa's private host key over the verified connection's stdin (never in an argument)
/// and installs it with [`INSTALL`].
async fn install(
    address: IpAddr,
    port: u16,
    user: &str,
    key: &Path,
    known_hosts: &Path,
    ours: &SshKeyPair,
) -> anyhow::Result<()> {
    let mut child = ssh(address, port, user, key, known_hosts, false)
        .arg(format!("sudo -n sh -c {}", shell_quote(INSTALL)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ssh (install openssh-client)")?;
    let mut input = child.stdin.take().context("ssh has no stdin")?;
    input.write_all(ours.private.as_bytes()).await?;
    input.shutdown().await?;
    drop(input);
    let output = child.wait_with_output().await.context("waiting for ssh")?;
    if !output.status.success() {
        bail!(
            "installing tpa's SSH host key on {address} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_name_the_port_off_22() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(host_pattern(ip, 22), "192.0.2.7");
        assert_eq!(host_pattern(ip, 2222), "[192.0.2.7]:2222");
    }

    #[test]
    fn only_a_refused_key_is_a_mismatch() {
        assert!(key_mismatch("Host key verification failed."));
        assert!(key_mismatch(
            "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @"
        ));
        assert!(!key_mismatch("Permission denied (publickey)."));
    }
}
