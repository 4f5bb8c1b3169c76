//! One host as a container: systemd as PID 1, sshd, a static address on the cluster
//! network, the cluster's `local-repo/` bind-mounted read-only, and SSH login for the
//! cluster key.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, ExecConfig,
    HostConfig, HostConfigCgroupnsModeEnum, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;

use super::image::ImageRef;
use super::owner::{self, Owner};
use super::{LOCAL_REPO_MOUNT, network::ClusterNetwork};
use crate::config::docker::{PublishedPort, RestartPolicy as DockerRestart};
use crate::config::{Cluster, DockerOptions, Instance, Platform, Role};
use crate::inventory::{Host, Inventory};
use crate::planner::{barman, patroni};
use crate::platform::HostChange;
use crate::settings::PostgresSettings;

/// How long a host may take from container start to accepting SSH (24 hosts starting at once
/// on two CPUs, each making its SSH host keys, took over 90 s once).
const SSH_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// What a host's container must look like.
pub struct ContainerSpec<'a> {
    pub cluster: &'a Cluster,
    pub dir: &'a Path,
    pub previous: Option<&'a Inventory>,
    pub instance: &'a Instance,
    /// The image a new container starts from: the instance's image or its package layer.
    pub image: String,
    pub network: &'a ClusterNetwork,
    pub address: IpAddr,
    pub local_repo: PathBuf,
    pub cgroup_v2: bool,
}

/// Creates (or finds, or starts) the host's container and sets up SSH login; returns once
/// the host accepts SSH.
pub async fn provision_host(
    docker: &Docker,
    spec: &ContainerSpec<'_>,
    public_key: &str,
) -> anyhow::Result<(Host, HostChange)> {
    let name = &spec.instance.name;
    let image = ImageRef::of(spec.instance).full();
    let network = &spec.network.network.name;
    let (id, change) = match docker.inspect_container(name, None).await {
        Ok(existing) => {
            let labels = existing
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            let id = existing.id.clone().unwrap_or_else(|| name.clone());
            let recorded = spec
                .previous
                .and_then(|p| p.host(name))
                .is_some_and(|h| h.platform_id.as_deref() == Some(id.as_str()));
            let cluster = &spec.cluster.name;
            let owner = owner::owner(&labels, cluster, spec.dir, recorded, owner::holds_cluster);
            if let Some(message) =
                owner::name_taken(&format!("container {name}"), &owner, cluster, spec.dir)
            {
                bail!(message);
            }
            if let Owner::Other { cluster: c, dir: d } = &owner {
                let whose = match c {
                    Some(_) => format!(
                        "belongs to {}: rename the instance, or deprovision that cluster",
                        owner::describe_other(c.as_deref(), d.as_deref())
                    ),
                    None => format!(
                        "does not belong to cluster {cluster}: rename the instance or remove \
                         that container"
                    ),
                };
                bail!("a container named {name} already exists and {whose}");
            }
            let actual_ip = existing
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(network))
                .and_then(|e| e.ipam_config.as_ref())
                .and_then(|c| c.ipv4_address.clone());
            if actual_ip.as_deref() != Some(&spec.address.to_string()) {
                bail!(
                    "container {name} exists with address {} but config wants {}: deprovision \
                     and provision again to move it",
                    actual_ip.unwrap_or_else(|| "none".into()),
                    spec.address
                );
            }
            let running = existing.state.and_then(|s| s.running).unwrap_or(false);
            if running {
                (id, HostChange::Unchanged)
            } else {
                docker
                    .start_container(&id, None)
                    .await
                    .with_context(|| format!("starting container {name}"))?;
                (id, HostChange::Started)
            }
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            let options = CreateContainerOptionsBuilder::new().name(name).build();
            let created = docker
                .create_container(Some(options), container_body(spec, &spec.image))
                .await
                .with_context(|| format!("creating container {name}"))?;
            docker
                .start_container(&created.id, None)
                .await
                .with_context(|| format!("starting container {name}"))?;
            (created.id, HostChange::Created)
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting container {name}")),
    };

    let user = spec.instance.ansible_user().to_string();
    exec_output(
        docker,
        &id,
        &["sh", "-c", LOGIN_SETUP, "sh", &user, public_key.trim()],
    )
    .await
    .with_context(|| format!("setting up SSH login for {user} on {name}"))?;
    let port = spec.cluster.ssh_port;
    if let Err(e) = wait_for_ssh(spec.address, port).await {
        // What systemd in the container says, so the cause is in the message.
        let state = exec_output(docker, &id, &["sh", "-c", BOOT_STATE])
            .await
            .unwrap_or_else(|e| format!("(the container could not be asked: {e:#})"));
        let hint = if state.contains("inotify") {
            "\nsystemd in the container ran out of inotify instances, which every container of \
             this machine's root shares: raise them (scripts/install-deps does: sysctl -w \
             fs.inotify.max_user_instances=8192), then provision again"
        } else {
            ""
        };
        bail!(
            "{name} did not start accepting SSH on {}:{port}: {e:#}; provision again to \
             finish it. In the container:\n{}{hint}",
            spec.address,
            state.trim_end()
        );
    }
    let host = Host {
        name: name.clone(),
        node: spec.instance.node,
        address: spec.address,
        ssh_user: user,
        ssh_port: port,
        platform: Platform::Docker,
        platform_id: Some(id),
        image: Some(image),
        location: spec.instance.location.clone(),
        roles: spec.instance.roles.iter().map(|r| r.to_string()).collect(),
        host_key: None,
        restored_from: None,
        volumes: Default::default(),
    };
    Ok((host, change))
}

/// Installs the cluster key for the login user (created with passwordless sudo when it is
/// not root).
const LOGIN_SETUP: &str = r#"set -e
u="$1"; key="$2"
if ! id -u "$u" >/dev/null 2>&1; then useradd -m -s /bin/bash "$u"; fi
g=$(id -gn "$u"); home=$(getent passwd "$u" | cut -d: -f6)
install -d -m 700 -o "$u" -g "$g" "$home/.ssh"
touch "$home/.ssh/authorized_keys"
grep -qxF "$key" "$home/.ssh/authorized_keys" || printf '%s\n' "$key" >> "$home/.ssh/authorized_keys"
chown "$u:$g" "$home/.ssh/authorized_keys"; chmod 600 "$home/.ssh/authorized_keys"
if [ "$u" != root ]; then
  printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$u" > /etc/sudoers.d/tpa-login; chmod 440 /etc/sudoers.d/tpa-login
fi
"#;

/// The container's boot state, for a host that does not answer SSH.
const BOOT_STATE: &str = "systemctl is-system-running 2>&1; \
    systemctl --no-pager --lines=5 status ssh.service tpa-ssh-hostkeys.service 2>&1 | tail -n 20; \
    journalctl -b --no-pager 2>&1 | grep -m 1 'inotify object: Too many open files'";

/// Prints the host's SSH public key once the first-boot unit made it.
pub const HOST_KEY: &str = r#"i=0
while [ ! -s /etc/ssh/ssh_host_ed25519_key.pub ]; do
  i=$((i+1)); [ $i -gt 600 ] && { echo "no SSH host key after 60s" >&2; exit 1; }
  sleep 0.1
done
cat /etc/ssh/ssh_host_ed25519_key.pub
"#;

fn container_body(spec: &ContainerSpec<'_>, image: &str) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = spec.cluster.tags.clone().into_iter().collect();
    labels.extend(owner::labels(&spec.cluster.name, spec.dir));
    let tmpfs = HashMap::from([
        (
            "/run".to_string(),
            "rw,exec,nosuid,nodev,mode=755".to_string(),
        ),
        (
            "/run/lock".to_string(),
            "rw,noexec,nosuid,nodev".to_string(),
        ),
        ("/tmp".to_string(), "rw,exec,nosuid,nodev".to_string()),
    ]);
    // systemd needs the cgroup tree: read-only on cgroup v1 hosts, a private writable
    // namespace on v2.
    let cgroup_bind = if spec.cgroup_v2 {
        "/sys/fs/cgroup:/sys/fs/cgroup:rw"
    } else {
        "/sys/fs/cgroup:/sys/fs/cgroup:ro"
    };
    let mut binds = vec![
        cgroup_bind.to_string(),
        format!("{}:{LOCAL_REPO_MOUNT}:ro", spec.local_repo.display()),
    ];
    let volumes = &spec.instance.volumes;
    let mut anonymous = Vec::new();
    for volume in volumes
        .iter()
        .filter(|v| !OWN_MOUNTS.contains(&v.target.as_str()))
    {
        match volume.bind() {
            Some(bind) => binds.push(bind),
            None => anonymous.push(volume.target.clone()),
        }
    }
    anonymous.extend(
        data_volumes(spec.cluster, spec.instance)
            .into_iter()
            .filter(|target| !volumes.iter().any(|v| v.target == *target)),
    );
    let options = &spec.instance.docker;
    let mut env = vec!["container=docker".to_string()];
    env.extend(options.env.iter().map(|(k, v)| format!("{k}={v}")));
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(spec.address.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let network = spec.network.network.name.clone();
    ContainerCreateBody {
        hostname: Some(spec.instance.name.clone()),
        image: Some(image.to_string()),
        labels: Some(labels),
        tty: Some(true),
        env: Some(env),
        stop_signal: Some("SIGRTMIN+3".into()),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        exposed_ports: Some(options.exposed_ports.clone().unwrap_or_else(|| {
            DEFAULT_EXPOSED_PORTS
                .iter()
                .map(|p| p.to_string())
                .collect()
        })),
        host_config: Some(HostConfig {
            tmpfs: Some(tmpfs),
            binds: Some(binds),
            cgroupns_mode: spec.cgroup_v2.then_some(HostConfigCgroupnsModeEnum::HOST),
            network_mode: Some(network.clone()),
            ..options_host_config(options)
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network, endpoint)])),
        }),
        ..Default::default()
    }
}

/// Mounts tpa makes itself: a `volumes` entry for one of them is accepted (TPA's examples
/// carry `/sys/fs/cgroup:/sys/fs/cgroup:ro`) and gives way to tpa's, which systemd and the
/// package repository need as they are.
const OWN_MOUNTS: &[&str] = &[
    "/sys/fs/cgroup",
    LOCAL_REPO_MOUNT,
    "/run",
    "/run/lock",
    "/tmp",
];

/// Where a host's data goes, each on an anonymous volume of its own unless config.yml's
/// `volumes` mount something there: the Postgres data directory's parent (`/opt/postgres`),
/// Barman's home and etcd's data. As a VM keeps its data on a disk, not in its image, so does a
/// container: writes to a volume skip the storage driver (fuse-overlayfs on machines without
/// kernel overlay, where they cost about twice the time and CPU), and `deprovision` removes
/// the volumes with the containers.
fn data_volumes(cluster: &Cluster, instance: &Instance) -> Vec<String> {
    let mut targets = Vec::new();
    if instance.has_role(Role::Postgres) {
        let data_dir = PostgresSettings::resolve(&cluster.name, &instance.vars).data_dir;
        let parent = Path::new(&data_dir).parent().and_then(Path::to_str);
        // A data directory right under `/` gets no volume: it would hide the whole root.
        if let Some(parent) = parent.filter(|p| *p != "/") {
            targets.push(parent.to_string());
        }
    }
    if instance.has_role(Role::Barman) {
        targets.push(barman::HOME.to_string());
    }
    if instance.has_role(Role::Etcd) {
        targets.push(patroni::ETCD_DATA_PARENT.to_string());
    }
    targets
}

/// The host settings config.yml's docker keys ask for; None where they ask nothing.
fn options_host_config(options: &DockerOptions) -> HostConfig {
    fn unless_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
        (!items.is_empty()).then(|| items.to_vec())
    }
    let devices: Vec<DeviceMapping> = options
        .devices
        .iter()
        .map(|d| DeviceMapping {
            path_on_host: Some(d.host.clone()),
            path_in_container: Some(d.container.clone()),
            cgroup_permissions: Some(d.permissions.clone()),
        })
        .collect();
    HostConfig {
        restart_policy: Some(restart_policy(options.restart_policy)),
        privileged: options.privileged.then_some(true),
        memory: options.memory,
        shm_size: options.shm_size,
        port_bindings: port_bindings(&options.published_ports),
        devices: unless_empty(&devices),
        sysctls: (!options.sysctls.is_empty())
            .then(|| options.sysctls.clone().into_iter().collect()),
        cap_add: unless_empty(&options.cap_add),
        cap_drop: unless_empty(&options.cap_drop),
        security_opt: unless_empty(&options.security_opts),
        ..Default::default()
    }
}

/// TPA's default `exposed_ports`: SSH, Postgres, pgbouncer.
const DEFAULT_EXPOSED_PORTS: &[&str] = &["22/tcp", "5432/tcp", "6432/tcp"];

fn restart_policy(policy: Option<DockerRestart>) -> RestartPolicy {
    let (name, retries) = match policy.unwrap_or(DockerRestart::UnlessStopped) {
        DockerRestart::No => (RestartPolicyNameEnum::NO, None),
        DockerRestart::Always => (RestartPolicyNameEnum::ALWAYS, None),
        DockerRestart::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        DockerRestart::OnFailure(n) => (RestartPolicyNameEnum::ON_FAILURE, Some(i64::from(n))),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    }
}

/// `published_ports` as docker's port map: container port -> host bindings.
fn port_bindings(ports: &[PublishedPort]) -> Option<HashMap<String, Option<Vec<PortBinding>>>> {
    if ports.is_empty() {
        return None;
    }
    let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in ports {
        map.entry(p.container_port.clone())
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port.map(|n| n.to_string()),
            });
    }
    Some(map)
}

/// Runs a command in a container as root and returns its stdout; a non-zero exit is an
/// error carrying stderr.
pub async fn exec_output(
    docker: &Docker,
    container: &str,
    argv: &[&str],
) -> anyhow::Result<String> {
    let exec = docker
        .create_exec(
            container,
            ExecConfig {
                cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                user: Some("root".into()),
                ..Default::default()
            },
        )
        .await?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await?
    {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdOut { message } => {
                    stdout.push_str(&String::from_utf8_lossy(&message))
                }
                bollard::container::LogOutput::StdErr { message } => {
                    stderr.push_str(&String::from_utf8_lossy(&message))
                }
                _ => {}
            }
        }
    }
    let code = docker.inspect_exec(&exec.id).await?.exit_code.unwrap_or(-1);
    if code != 0 {
        bail!("exit code {code}: {}", stderr.trim());
    }
    Ok(stdout)
}

/// Waits until the SSH server answers with its banner (it is up and has host keys).
async fn wait_for_ssh(address: IpAddr, port: u16) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + SSH_READY_TIMEOUT;
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect((address, port)).await?;
            let mut banner = [0u8; 4];
            stream.read_exact(&mut banner).await?;
            Ok::<bool, std::io::Error>(&banner == b"SSH-")
        };
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {}s", SSH_READY_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads one file from an image, through a short-lived container that runs only `cat`.
pub async fn read_image_file(docker: &Docker, image: &str, path: &str) -> anyhow::Result<String> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["cat".into(), path.into()]),
        network_disabled: Some(true),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await?;
    let result = async {
        let options = bollard::query_parameters::AttachContainerOptionsBuilder::new()
            .stdout(true)
            .stream(true)
            .logs(true)
            .build();
        let attached = docker.attach_container(&created.id, Some(options)).await?;
        docker.start_container(&created.id, None).await?;
        let mut output = attached.output;
        let mut text = String::new();
        while let Some(chunk) = output.next().await {
            if let bollard::container::LogOutput::StdOut { message } = chunk? {
                text.push_str(&String::from_utf8_lossy(&message));
            }
        }
        Ok::<_, anyhow::Error>(text)
    }
    .await;
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(&created.id, Some(options)).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_goes_on_volumes_by_role() {
        let cluster = Cluster::parse(
            "cluster_name: t\ncluster_vars: {postgres_version: '15'}\n\
             instance_defaults: {platform: docker, image: tpa/debian}\ninstances:\n\
             - {Name: one, node: 1, role: [primary]}\n\
             - {Name: two, node: 2, role: [replica], upstream: one, \
                vars: {postgres_data_dir: /srv/pg/data}}\n\
             - {Name: three, node: 3, role: [replica], upstream: one, \
                vars: {postgres_data_dir: /pgdata}}\n\
             - {Name: four, node: 4, role: [barman]}\n\
             - {Name: five, node: 5, role: [etcd]}\n",
            "config.yml",
        )
        .expect("valid config");
        let targets: Vec<Vec<String>> = cluster
            .instances
            .iter()
            .map(|i| data_volumes(&cluster, i))
            .collect();
        assert_eq!(
            targets,
            [
                vec!["/opt/postgres"],
                vec!["/srv/pg"],
                vec![],
                vec!["/var/lib/barman"],
                vec!["/var/lib/etcd"],
            ]
        );
    }
}
