//! The docker platform: containers that behave like small VMs (systemd as PID 1, sshd, a
//! static address on a per-cluster bridge network), created through the Docker API.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, ExecConfig, HostConfig,
    HostConfigCgroupnsModeEnum, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use ipnet::{IpNet, Ipv4Net};

use crate::cluster_dir::ClusterDir;
use crate::config::{Cluster, Instance, Platform};
use crate::image::{self, ImageRef};
use crate::inventory::{Host, Network};

/// Label every tpa container and network carries; deprovision removes exactly these.
pub const CLUSTER_LABEL: &str = "Cluster";
/// Where the cluster's local-repo appears inside every container (TPA's path).
pub const LOCAL_REPO_MOUNT: &str = "/var/opt/tpa/local-repo";

/// How long a host may take from container start to accepting SSH.
const SSH_READY_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .context("connecting to the Docker engine (is DOCKER_HOST right?)")?;
    docker.ping().await.context(
        "the Docker engine does not answer: start it, or check access to /var/run/docker.sock",
    )?;
    Ok(docker)
}

/// What one host's provisioning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChange {
    Created,
    Started,
    Unchanged,
}

/// Provisioned hosts plus what changed.
#[derive(Debug)]
pub struct Provisioned {
    pub network: Network,
    pub network_created: bool,
    pub images_built: Vec<String>,
    pub hosts: Vec<(Host, HostChange)>,
    /// Hosts that failed, with the reason; re-running provision finishes them.
    pub failures: Vec<(String, anyhow::Error)>,
}

/// Creates (or finds) the network and every docker instance's container, then waits until
/// each accepts SSH. `previous` keeps addresses stable between runs.
pub async fn provision(
    docker: &Docker,
    cluster: &Cluster,
    dir: &ClusterDir,
    previous_hosts: &[Host],
    previous_network: Option<&Network>,
    public_key: &str,
    mirror: &str,
) -> anyhow::Result<Provisioned> {
    let instances: Vec<&Instance> = cluster
        .instances
        .iter()
        .filter(|i| i.platform == Platform::Docker)
        .collect();

    let mut images_built = Vec::new();
    let images: BTreeSet<String> = instances
        .iter()
        .map(|i| ImageRef::parse(i.image.as_deref().unwrap_or("tpa/debian")).full())
        .collect();
    for name in images {
        let image = ImageRef::parse(&name);
        if image::ensure(docker, &image, mirror).await? {
            images_built.push(name);
        }
    }

    let (network, network_created) = ensure_network(docker, cluster, previous_network).await?;
    let addresses = assign_addresses(&network, &instances, previous_hosts)?;
    std::fs::create_dir_all(dir.local_repo())?;
    let cgroup_v2 = docker
        .info()
        .await
        .ok()
        .and_then(|i| i.cgroup_version)
        .is_some_and(|v| v.to_string() == "2");

    let jobs = instances.iter().map(|instance| {
        let address = addresses[&instance.name];
        let spec = ContainerSpec {
            cluster,
            instance,
            network: &network,
            address,
            local_repo: dir.local_repo(),
            cgroup_v2,
        };
        async move {
            let result = provision_host(docker, &spec, public_key).await;
            (instance.name.clone(), result)
        }
    });
    let mut hosts = Vec::new();
    let mut failures = Vec::new();
    for (name, result) in futures_util::future::join_all(jobs).await {
        match result {
            Ok(done) => hosts.push(done),
            Err(e) => failures.push((name, e)),
        }
    }
    Ok(Provisioned {
        network,
        network_created,
        images_built,
        hosts,
        failures,
    })
}

struct ContainerSpec<'a> {
    cluster: &'a Cluster,
    instance: &'a Instance,
    network: &'a Network,
    address: IpAddr,
    local_repo: std::path::PathBuf,
    cgroup_v2: bool,
}

async fn provision_host(
    docker: &Docker,
    spec: &ContainerSpec<'_>,
    public_key: &str,
) -> anyhow::Result<(Host, HostChange)> {
    let name = &spec.instance.name;
    let image = ImageRef::parse(spec.instance.image.as_deref().unwrap_or("tpa/debian")).full();
    let (id, change) = match docker.inspect_container(name, None).await {
        Ok(existing) => {
            let labels = existing
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.get(CLUSTER_LABEL) != Some(&spec.cluster.name) {
                bail!(
                    "a container named {name} already exists and does not belong to cluster {}: \
                     rename the instance or remove that container",
                    spec.cluster.name
                );
            }
            let actual_ip = existing
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(&spec.network.name))
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
            let id = existing.id.unwrap_or_else(|| name.clone());
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
                .create_container(Some(options), container_body(spec, &image))
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
    let host_key = exec_output(
        docker,
        &id,
        &["sh", "-c", LOGIN_SETUP, "sh", &user, public_key.trim()],
    )
    .await
    .with_context(|| format!("setting up SSH login for {user} on {name}"))?;
    let port = spec.cluster.ssh_port;
    wait_for_ssh(spec.address, port).await.with_context(|| {
        format!(
            "{name} did not start accepting SSH on {}:{port}",
            spec.address
        )
    })?;
    let host = Host {
        name: name.clone(),
        node: spec.instance.node,
        address: spec.address,
        ssh_user: user,
        ssh_port: port,
        platform: "docker".into(),
        container_id: Some(id),
        image: Some(image),
        location: spec.instance.location.clone(),
        roles: spec.instance.roles.iter().map(|r| r.to_string()).collect(),
        host_key: Some(host_key.trim().to_string()),
    };
    Ok((host, change))
}

/// Installs the cluster key for the login user (created with passwordless sudo when it is
/// not root), then prints the host's SSH public key once the first-boot unit made it.
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
i=0
while [ ! -s /etc/ssh/ssh_host_ed25519_key.pub ]; do
  i=$((i+1)); [ $i -gt 600 ] && { echo "no SSH host key after 60s" >&2; exit 1; }
  sleep 0.1
done
cat /etc/ssh/ssh_host_ed25519_key.pub
"#;

fn container_body(spec: &ContainerSpec<'_>, image: &str) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = spec.cluster.tags.clone().into_iter().collect();
    labels.insert(CLUSTER_LABEL.into(), spec.cluster.name.clone());
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
    let binds = vec![
        cgroup_bind.to_string(),
        format!("{}:{LOCAL_REPO_MOUNT}:ro", spec.local_repo.display()),
    ];
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(spec.address.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        hostname: Some(spec.instance.name.clone()),
        image: Some(image.to_string()),
        labels: Some(labels),
        tty: Some(true),
        env: Some(vec!["container=docker".into()]),
        stop_signal: Some("SIGRTMIN+3".into()),
        host_config: Some(HostConfig {
            tmpfs: Some(tmpfs),
            binds: Some(binds),
            cgroupns_mode: spec.cgroup_v2.then_some(HostConfigCgroupnsModeEnum::HOST),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            network_mode: Some(spec.network.name.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(spec.network.name.clone(), endpoint)])),
        }),
        ..Default::default()
    }
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

/// The cluster's network: from `docker_networks`, else the previous inventory's, else a
/// free /24 chosen automatically.
async fn ensure_network(
    docker: &Docker,
    cluster: &Cluster,
    previous: Option<&Network>,
) -> anyhow::Result<(Network, bool)> {
    let (name, wanted): (String, Option<Ipv4Net>) = match cluster.docker_networks.first() {
        Some(net) => (net.name.clone(), net.subnets.iter().find_map(as_v4)),
        None => (
            cluster.name.clone(),
            previous.and_then(|p| p.subnet.parse::<Ipv4Net>().ok()),
        ),
    };
    if let Ok(existing) = docker.inspect_network(&name, None).await {
        let labels = existing.labels.clone().unwrap_or_default();
        if labels.get(CLUSTER_LABEL) != Some(&cluster.name) {
            bail!(
                "a Docker network named {name} already exists and does not belong to cluster {}: \
                 remove it or choose another name in docker_networks",
                cluster.name
            );
        }
        let subnet = existing
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.subnet))
            .and_then(|s| s.parse::<Ipv4Net>().ok())
            .with_context(|| format!("Docker network {name} has no IPv4 subnet"))?;
        if let Some(w) = wanted
            && w != subnet
        {
            bail!(
                "Docker network {name} has subnet {subnet} but config.yml wants {w}: deprovision \
                 first to change it"
            );
        }
        return Ok((network_for(&name, subnet), false));
    }
    let subnet = match wanted {
        Some(s) => s,
        None => free_subnet(docker, &cluster.name).await?,
    };
    let network = network_for(&name, subnet);
    docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.to_string()),
                    gateway: Some(network.gateway.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([(
                CLUSTER_LABEL.to_string(),
                cluster.name.clone(),
            )])),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating Docker network {name} ({subnet})"))?;
    Ok((network, true))
}

fn as_v4(net: &IpNet) -> Option<Ipv4Net> {
    match net {
        IpNet::V4(v4) => Some(*v4),
        IpNet::V6(_) => None,
    }
}

fn network_for(name: &str, subnet: Ipv4Net) -> Network {
    let gateway = first_host(subnet);
    Network {
        name: name.to_string(),
        subnet: subnet.to_string(),
        gateway: IpAddr::V4(gateway),
    }
}

fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// A /24 under 10.33.0.0/16 (TPA's default range) that no Docker network uses, starting at
/// a place derived from the cluster name so that clusters rarely race for the same one.
async fn free_subnet(docker: &Docker, cluster: &str) -> anyhow::Result<Ipv4Net> {
    let used: Vec<Ipv4Net> = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .context("listing Docker networks")?
        .into_iter()
        .filter_map(|n| n.ipam.and_then(|i| i.config))
        .flatten()
        .filter_map(|c| c.subnet.and_then(|s| s.parse::<Ipv4Net>().ok()))
        .collect();
    pick_free_subnet(&used, cluster)
        .context("no free /24 left in 10.33.0.0/16: set docker_networks in config.yml")
}

fn pick_free_subnet(used: &[Ipv4Net], cluster: &str) -> Option<Ipv4Net> {
    let start = cluster
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % 256;
    (0..256u32)
        .map(|i| (start + i) % 256)
        .map(|n| Ipv4Net::new(Ipv4Addr::new(10, 33, n as u8, 0), 24).expect("valid prefix"))
        .find(|c| {
            !used
                .iter()
                .any(|u| u.contains(&c.network()) || c.contains(&u.network()))
        })
}

/// Each instance's address: declared `ip_address`, else what it had before, else the next
/// free one after the gateway, in instance order.
fn assign_addresses(
    network: &Network,
    instances: &[&Instance],
    previous: &[Host],
) -> anyhow::Result<HashMap<String, IpAddr>> {
    let subnet: Ipv4Net = network.subnet.parse()?;
    let mut taken: BTreeSet<IpAddr> = BTreeSet::from([network.gateway]);
    let mut out = HashMap::new();
    let mut pending = Vec::new();
    for instance in instances {
        let known = instance.ip_address.or_else(|| {
            previous
                .iter()
                .find(|h| h.name == instance.name)
                .map(|h| h.address)
        });
        match known {
            Some(ip) if taken.insert(ip) => {
                out.insert(instance.name.clone(), ip);
            }
            Some(ip) => bail!("instances[{}]: address {ip} is used twice", instance.name),
            None => pending.push(instance.name.clone()),
        }
    }
    let mut candidates = subnet
        .hosts()
        .map(IpAddr::V4)
        .filter(|ip| !taken.contains(ip));
    for name in pending {
        let ip = candidates
            .next()
            .with_context(|| format!("subnet {subnet} has no free address left for {name}"))?;
        out.insert(name, ip);
    }
    Ok(out)
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

/// Removes exactly this cluster's containers and networks (by label), in parallel.
pub async fn deprovision(
    docker: &Docker,
    cluster: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let filter = HashMap::from([("label", vec![format!("{CLUSTER_LABEL}={cluster}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .context("listing containers")?;
    let removals = containers.iter().map(|c| {
        let id = c.id.clone().unwrap_or_default();
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| id.clone());
        async move {
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            docker
                .remove_container(&id, Some(options))
                .await
                .with_context(|| format!("removing container {name}"))
                .map(|_| name)
        }
    });
    let mut removed = Vec::new();
    for result in futures_util::future::join_all(removals).await {
        removed.push(result?);
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .context("listing networks")?;
    let mut removed_networks = Vec::new();
    for net in networks {
        let name = net.name.unwrap_or_default();
        docker
            .remove_network(&name)
            .await
            .with_context(|| format!("removing Docker network {name}"))?;
        removed_networks.push(name);
    }
    removed.sort();
    Ok((removed, removed_networks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_subnet_skips_overlapping_networks() {
        let first = pick_free_subnet(&[], "fosdem").unwrap();
        let again = pick_free_subnet(&[first], "fosdem").unwrap();
        assert_ne!(first, again);
        // A wide network covering the whole range leaves nothing.
        assert_eq!(
            pick_free_subnet(&["10.0.0.0/8".parse().unwrap()], "fosdem"),
            None
        );
    }
}
