//! The cluster's Docker network (one bridge per cluster, a /24 picked automatically unless
//! `docker_networks` says otherwise) and each host's static address on it.
//!
//! Clashes are reported before Docker sees them: a network of our name that another
//! cluster directory owns, a subnet that overlaps another network, an address another
//! container holds. Docker's own answers ("403: Address already in use", "Pool overlaps")
//! say neither who is in the way nor what to do.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use ipnet::{IpNet, Ipv4Net};

use super::owner::{self, CLUSTER_LABEL, DIR_LABEL, Owner};
use crate::config::{Cluster, Instance};
use crate::inventory::{Host, Inventory, Network};

/// The cluster's network as provision found or made it.
#[derive(Debug)]
pub struct ClusterNetwork {
    pub network: Network,
    pub subnet: Ipv4Net,
    /// The bridge's address: where the hosts see the controller's connections come from.
    pub gateway: Ipv4Addr,
    pub created: bool,
    /// Addresses on the network held by containers, by container name.
    pub occupied: HashMap<IpAddr, String>,
}

/// Another Docker network, as far as clash messages need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherNetwork {
    pub name: String,
    pub subnet: Ipv4Net,
    pub cluster: Option<String>,
    pub dir: Option<PathBuf>,
}

/// Finds the cluster's network, checking it is this directory's, or creates it.
pub async fn ensure(
    docker: &Docker,
    cluster: &Cluster,
    dir: &Path,
    previous: Option<&Inventory>,
) -> anyhow::Result<ClusterNetwork> {
    let previous_network = previous.and_then(|p| p.network.as_ref());
    let (name, wanted): (String, Option<(Ipv4Net, &str)>) = match cluster.docker_networks.first() {
        Some(net) => (
            net.name.clone(),
            net.subnets
                .iter()
                .find_map(as_v4)
                .map(|s| (s, "docker_networks in config.yml")),
        ),
        None => (
            cluster.name.clone(),
            previous_network
                .filter(|p| p.name == cluster.name)
                .and_then(|p| p.subnet.parse::<Ipv4Net>().ok())
                .map(|s| (s, "recorded in inventory.json")),
        ),
    };
    match docker.inspect_network(&name, None).await {
        Ok(existing) => {
            let labels = existing.labels.clone().unwrap_or_default();
            let recorded = previous_network.is_some_and(|p| p.name == name);
            let object = format!("Docker network {name}");
            let owner = owner::owner(&labels, &cluster.name, dir, recorded, owner::holds_cluster);
            if let Some(message) = owner::name_taken(&object, &owner, &cluster.name, dir) {
                bail!(message);
            }
            if let Owner::Other { cluster: c, dir: d } = &owner {
                bail!(
                    "a Docker network named {name} already exists and belongs to {}: choose \
                     another name in docker_networks, or remove that network",
                    owner::describe_other(c.as_deref(), d.as_deref())
                );
            }
            let subnet = existing
                .ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find_map(|c| c.subnet))
                .and_then(|s| s.parse::<Ipv4Net>().ok())
                .with_context(|| format!("Docker network {name} has no IPv4 subnet"))?;
            if let Some((w, _)) = wanted
                && w != subnet
            {
                bail!(
                    "Docker network {name} has subnet {subnet} but config.yml wants {w}: \
                     deprovision first to change it"
                );
            }
            let occupied = existing
                .containers
                .unwrap_or_default()
                .into_values()
                .filter_map(|c| {
                    let ip = c.ipv4_address?.split('/').next()?.parse().ok()?;
                    Some((ip, c.name?))
                })
                .collect();
            Ok(cluster_network(&name, subnet, false, occupied))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => create(docker, cluster, dir, &name, wanted).await,
        Err(e) => Err(e).with_context(|| format!("asking Docker about network {name}")),
    }
}

async fn create(
    docker: &Docker,
    cluster: &Cluster,
    dir: &Path,
    name: &str,
    wanted: Option<(Ipv4Net, &str)>,
) -> anyhow::Result<ClusterNetwork> {
    let others = other_networks(docker).await?;
    let subnet = match wanted {
        Some((subnet, source)) => {
            if let Some(other) = overlapping(subnet, &others) {
                bail!(subnet_clash(subnet, source, other));
            }
            subnet
        }
        None => {
            let used: Vec<Ipv4Net> = others.iter().map(|o| o.subnet).collect();
            pick_free_subnet(&used, &cluster.name)
                .context("no free /24 left in 10.33.0.0/16: set docker_networks in config.yml")?
        }
    };
    let network = cluster_network(name, subnet, true, HashMap::new());
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.to_string()),
                    gateway: Some(network.gateway.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(owner::labels(&cluster.name, dir)),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating Docker network {name} ({subnet})"))?;
    Ok(network)
}

/// Every Docker network's IPv4 subnets, with the tpa cluster that owns it if any.
async fn other_networks(docker: &Docker) -> anyhow::Result<Vec<OtherNetwork>> {
    let networks = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .context("listing Docker networks")?;
    let mut out = Vec::new();
    for n in networks {
        let labels = n.labels.unwrap_or_default();
        let subnets = n
            .ipam
            .and_then(|i| i.config)
            .into_iter()
            .flatten()
            .filter_map(|c| c.subnet.and_then(|s| s.parse::<Ipv4Net>().ok()));
        for subnet in subnets {
            out.push(OtherNetwork {
                name: n.name.clone().unwrap_or_default(),
                subnet,
                cluster: labels.get(CLUSTER_LABEL).cloned(),
                dir: labels.get(DIR_LABEL).map(PathBuf::from),
            });
        }
    }
    Ok(out)
}

/// The first network whose subnet overlaps `wanted`.
pub fn overlapping(wanted: Ipv4Net, others: &[OtherNetwork]) -> Option<&OtherNetwork> {
    others
        .iter()
        .find(|o| o.subnet.contains(&wanted.network()) || wanted.contains(&o.subnet.network()))
}

/// Why a subnet cannot be used: which network holds it, whose it is, what to do.
pub fn subnet_clash(wanted: Ipv4Net, source: &str, other: &OtherNetwork) -> String {
    let whose = match &other.cluster {
        Some(_) => format!(
            ", which belongs to {}",
            owner::describe_other(other.cluster.as_deref(), other.dir.as_deref())
        ),
        None => String::new(),
    };
    format!(
        "subnet {wanted} ({source}) overlaps Docker network {} ({}){whose}: choose another subnet \
         in docker_networks, or remove that network",
        other.name, other.subnet
    )
}

fn as_v4(net: &IpNet) -> Option<Ipv4Net> {
    match net {
        IpNet::V4(v4) => Some(*v4),
        IpNet::V6(_) => None,
    }
}

fn cluster_network(
    name: &str,
    subnet: Ipv4Net,
    created: bool,
    occupied: HashMap<IpAddr, String>,
) -> ClusterNetwork {
    ClusterNetwork {
        network: Network {
            name: name.to_string(),
            subnet: subnet.to_string(),
        },
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        created,
        occupied,
    }
}

/// A /24 under 10.33.0.0/16 (TPA's default range) that no Docker network uses, starting at
/// a place derived from the cluster name so that clusters rarely race for the same one.
pub fn pick_free_subnet(used: &[Ipv4Net], cluster: &str) -> Option<Ipv4Net> {
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
/// free one after the gateway, in instance order. `occupied` (address → container) holds
/// what containers on the network use; an instance's own container does not count.
pub fn assign_addresses(
    net: &ClusterNetwork,
    instances: &[&Instance],
    previous: &[Host],
) -> anyhow::Result<HashMap<String, IpAddr>> {
    let ours: BTreeSet<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    let held_by_other = |ip: &IpAddr| {
        net.occupied
            .get(ip)
            .filter(|holder| !ours.contains(holder.as_str()))
    };
    let mut taken: BTreeSet<IpAddr> = BTreeSet::from([IpAddr::V4(net.gateway)]);
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
            Some(ip) if held_by_other(&ip).is_some() => bail!(
                "instances[{}]: address {ip} on Docker network {} is taken by container {}, \
                 which is not an instance of this cluster: remove that container, or give {} \
                 another ip_address",
                instance.name,
                net.network.name,
                held_by_other(&ip).map_or("?", String::as_str),
                instance.name
            ),
            Some(ip) if taken.insert(ip) => {
                out.insert(instance.name.clone(), ip);
            }
            Some(ip) => bail!("instances[{}]: address {ip} is used twice", instance.name),
            None => pending.push(instance.name.clone()),
        }
    }
    let mut candidates = net
        .subnet
        .hosts()
        .map(IpAddr::V4)
        .filter(|ip| !taken.contains(ip) && held_by_other(ip).is_none());
    for name in pending {
        let ip = candidates.next().with_context(|| {
            format!("subnet {} has no free address left for {name}", net.subnet)
        })?;
        out.insert(name, ip);
    }
    Ok(out)
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

    fn other(name: &str, subnet: &str, cluster: Option<&str>) -> OtherNetwork {
        OtherNetwork {
            name: name.into(),
            subnet: subnet.parse().unwrap(),
            cluster: cluster.map(str::to_string),
            dir: cluster.map(|c| PathBuf::from(format!("/clusters/{c}"))),
        }
    }

    #[test]
    fn a_subnet_clash_names_the_network_that_holds_it() {
        let others = [
            other("bridge", "172.17.0.0/16", None),
            other("brugge", "10.33.0.0/16", Some("brugge")),
        ];
        let wanted: Ipv4Net = "10.33.5.0/24".parse().unwrap();
        let clash = overlapping(wanted, &others).unwrap();
        assert_eq!(clash.name, "brugge");
        expect_test::expect!["subnet 10.33.5.0/24 (docker_networks in config.yml) overlaps Docker network brugge (10.33.0.0/16), which belongs to cluster `brugge` in /clusters/brugge: choose another subnet in docker_networks, or remove that network"]
            .assert_eq(&subnet_clash(wanted, "docker_networks in config.yml", clash));
        assert_eq!(overlapping("10.34.0.0/24".parse().unwrap(), &others), None);
        // A wider wanted subnet that contains another network clashes too.
        let wide: Ipv4Net = "172.0.0.0/8".parse().unwrap();
        assert_eq!(
            overlapping(wide, &others).map(|o| o.name.as_str()),
            Some("bridge")
        );
    }

    fn instance(name: &str, ip: Option<&str>) -> Instance {
        let source = format!(
            "cluster_name: t\ncluster_vars:\n  postgres_version: '15'\n\
             docker_networks: [{{name: t, ipam_config: [{{subnet: 10.33.9.0/24}}]}}]\ninstances:\n\
             - {{Name: {name}, node: 1, platform: docker, image: tpa/debian{}}}\n",
            ip.map(|ip| format!(", ip_address: {ip}"))
                .unwrap_or_default()
        );
        crate::config::Cluster::parse(&source, "config.yml")
            .expect("valid config")
            .instances
            .remove(0)
    }

    #[test]
    fn addresses_held_by_strangers_are_skipped_or_refused() {
        let mut net = cluster_network("t", "10.33.9.0/24".parse().unwrap(), false, HashMap::new());
        net.occupied
            .insert("10.33.9.2".parse().unwrap(), "stranger".into());
        net.occupied
            .insert("10.33.9.3".parse().unwrap(), "one".into());
        let one = instance("one", None);
        let got = assign_addresses(&net, &[&one], &[]).unwrap();
        // .1 is the gateway, .2 a stranger's; .3 is held by our own container `one`.
        assert_eq!(got["one"], "10.33.9.3".parse::<IpAddr>().unwrap());

        let declared = instance("one", Some("10.33.9.2"));
        let err = assign_addresses(&net, &[&declared], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10.33.9.2 on Docker network t is taken by container stranger"),
            "{err}"
        );
    }
}
