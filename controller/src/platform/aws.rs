//! The aws platform: EC2 instances that provision creates, in a VPC it finds or creates,
//! reached over SSH with the cluster key and host keys the controller generated.
//!
//! Credentials and the endpoint come from the standard AWS chain (environment, profiles,
//! SSO caches, IMDS): `AWS_ENDPOINT_URL` points it at moto or LocalStack. Each region's
//! objects are found by their tags before anything is created, so provision is idempotent;
//! deprovision removes the objects tagged as this directory's cluster and nothing else.
//!
//! # Layout
//! - `tags`: which objects are this cluster directory's, and the tags instances get.
//! - `user_data`: the cloud-init document that installs the generated host key.
//! - `network`: VPC, subnets, internet gateway, route table, security group.
//! - `instances`: AMI lookup, launching, finding and waiting for instances.
//! - `teardown`: deprovision.

pub mod instances;
pub mod network;
pub mod tags;
pub mod teardown;
pub mod user_data;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, InstanceStateName, ResourceType};
use tokio::sync::OnceCell;

use self::network::SubnetWant;
use super::{
    DeprovisionRequest, Deprovisioned, HostChange, Platform, ProvisionRequest, Provisioned, Say,
    host_key_secret,
};
use crate::config::aws::{AwsCluster, Reachability};
use crate::config::{Instance, Platform as Kind};
use crate::inventory::{Host, Network};
use crate::secrets::Secrets;

/// How long a new instance may take to accept SSH after it runs (real EC2 only).
const SSH_TIMEOUT: Duration = Duration::from_secs(300);

/// The aws platform. The SDK configuration (credentials, endpoint) loads on first use.
#[derive(Debug, Default)]
pub struct AwsPlatform {
    sdk: OnceCell<SdkConfig>,
    /// Host public keys generated (or found) by provision, by host name.
    host_keys: Mutex<HashMap<String, String>>,
}

/// What the region-level steps share.
pub struct Ctx<'a> {
    pub cluster: &'a str,
    pub owner: &'a str,
    pub aws: &'a AwsCluster,
    pub say: Say<'a>,
}

impl AwsPlatform {
    pub fn new() -> AwsPlatform {
        AwsPlatform::default()
    }

    async fn sdk(&self) -> &SdkConfig {
        self.sdk
            .get_or_init(|| async {
                // rustls on ring (the workspace's TLS stack) instead of the SDK's aws-lc.
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http)
                    .load()
                    .await
            })
            .await
    }

    async fn client(&self, region: &str) -> Client {
        let conf = aws_sdk_ec2::config::Builder::from(self.sdk().await)
            .region(aws_sdk_ec2::config::Region::new(region.to_string()))
            .build();
        Client::from_conf(conf)
    }

    /// Real EC2 runs machines; an endpoint override (moto, LocalStack) does not, and nothing
    /// there will ever answer SSH.
    async fn waits_for_ssh(&self) -> bool {
        self.sdk().await.endpoint_url().is_none()
    }

    async fn provision_instances(
        &self,
        request: &ProvisionRequest<'_>,
        instances: &[&Instance],
    ) -> anyhow::Result<Provisioned> {
        let cluster = request.cluster;
        let owner = tags::owner_id(request.dir.root());
        let ctx = Ctx {
            cluster: &cluster.name,
            owner: &owner,
            aws: &cluster.aws,
            say: request.say,
        };
        let mut by_region: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for i in instances {
            let Some(region) = i.aws.region.as_deref() else {
                bail!(
                    "instance {} has no `region`: set it on the instance, its location or \
                     instance_defaults",
                    i.name
                );
            };
            if i.aws.subnet.is_none() {
                bail!(
                    "instance {} has no `subnet`: set a CIDR (e.g. subnet: 10.33.0.0/28) on the \
                     instance or its location",
                    i.name
                );
            }
            by_region.entry(region).or_default().push(i);
        }
        let mut secrets = Secrets::open(request.dir.root(), cluster.vault_name.as_deref())?;
        let mut done = Provisioned::default();
        let mut waiting = Vec::new();
        for (region, members) in &by_region {
            let ec2 = self.client(region).await;
            let key_name = tags::key_pair_name(&cluster.name, &owner);
            done.changed |= ensure_key_pair(&ec2, &ctx, &key_name, request.public_key).await?;
            let wants: BTreeSet<SubnetWant> = members
                .iter()
                .map(|i| SubnetWant {
                    cidr: i.aws.subnet.clone().unwrap_or_default(),
                    az: i.aws.az.clone(),
                })
                .collect();
            let net = network::ensure(&ec2, &ctx, region, &wants).await?;
            done.changed |= net.created;
            if done.network.is_none() {
                done.network = Some(Network {
                    name: net.vpc_id.clone(),
                    subnet: net.vpc_cidr.clone(),
                });
            }
            let existing = instances::find(&ec2, &ctx).await?;
            let mut amis: HashMap<Option<String>, instances::Ami> = HashMap::new();
            let mut to_start = Vec::new();
            let mut ids = Vec::new();
            for i in members {
                let secret = host_key_secret(&i.name);
                if let Some(found) = existing.get(&i.name) {
                    let key = secrets
                        .ssh_key_or_generate(&secret, &format!("root@{}", i.name), true)?
                        .with_context(|| {
                            format!(
                                "instance {} ({}) exists but its host key is not in {}: without \
                                 it its SSH identity cannot be checked; deprovision and \
                                 provision again",
                                i.name,
                                found.instance_id().unwrap_or_default(),
                                secrets.path().display()
                            )
                        })?;
                    self.remember_key(&i.name, &key.public);
                    let id = found.instance_id().unwrap_or_default().to_string();
                    let state = found.state().and_then(|s| s.name()).cloned();
                    let change = match state {
                        Some(InstanceStateName::Stopped) | Some(InstanceStateName::Stopping) => {
                            to_start.push(id.clone());
                            HostChange::Started
                        }
                        _ => HostChange::Unchanged,
                    };
                    ids.push((i, id, change));
                    continue;
                }
                if !amis.contains_key(&i.image) {
                    let ami = instances::ami(&ec2, region, i, cluster.aws.ami.as_ref()).await?;
                    amis.insert(i.image.clone(), ami);
                }
                let ami = &amis[&i.image];
                let key = secrets
                    .ssh_key_or_generate(&secret, &format!("root@{}", i.name), false)?
                    .context("generating a host key")?;
                // Saved before the instance exists: a crash after launch keeps the key that
                // instance boots with.
                secrets.save()?;
                self.remember_key(&i.name, &key.public);
                let user_data = user_data::render(&user_data::FirstBoot {
                    host_name: &i.name,
                    login_user: i.ansible_user(),
                    cluster_key: request.public_key,
                    host_private: &key.private,
                    host_public: &key.public,
                })
                .with_context(|| format!("instance {}", i.name))?;
                let instance_tags = tags::instance_tags(cluster, i, &owner)?;
                let subnet = i.aws.subnet.as_deref().unwrap_or_default();
                let launched = instances::launch(
                    &ec2,
                    &instances::Launch {
                        instance: i,
                        ami,
                        subnet_id: &net.subnets[subnet],
                        security_group: &net.security_group,
                        key_name: &key_name,
                        user_data: &user_data,
                        tags: &instance_tags,
                    },
                )
                .await;
                match launched {
                    Ok(id) => ids.push((i, id, HostChange::Created)),
                    Err(e) => done.failures.push((i.name.clone(), e)),
                }
            }
            instances::start(&ec2, &to_start).await?;
            waiting.push((ec2, region.to_string(), ids));
        }
        for (ec2, region, ids) in waiting {
            let all: Vec<String> = ids.iter().map(|(_, id, _)| id.clone()).collect();
            if all.is_empty() {
                continue;
            }
            let running = instances::wait_for(&ec2, &all, InstanceStateName::Running).await?;
            for (i, id, change) in ids {
                let ec2_instance = &running[&id];
                match host(i, &id, &region, ec2_instance, cluster) {
                    Ok(h) => done.hosts.push((h, change)),
                    Err(e) => done.failures.push((i.name.clone(), e)),
                }
            }
        }
        if self.waits_for_ssh().await {
            let waits = done
                .hosts
                .iter()
                .map(|(h, _)| wait_for_ssh(h.address, h.ssh_port));
            let results = futures_util::future::join_all(waits).await;
            let mut hosts = Vec::new();
            for ((h, change), result) in done.hosts.drain(..).zip(results) {
                match result {
                    Ok(()) => hosts.push((h, change)),
                    Err(e) => done.failures.push((h.name.clone(), e)),
                }
            }
            done.hosts = hosts;
        }
        Ok(done)
    }

    fn remember_key(&self, host: &str, public: &str) {
        if let Ok(mut keys) = self.host_keys.lock() {
            keys.insert(host.to_string(), public.trim().to_string());
        }
    }
}

/// The inventory's host for a running instance: reached at its public address, or its
/// private one with `ec2_instance_reachability: private`.
fn host(
    i: &Instance,
    id: &str,
    region: &str,
    ec2: &aws_sdk_ec2::types::Instance,
    cluster: &crate::config::Cluster,
) -> anyhow::Result<Host> {
    let address = match cluster.aws.reachability {
        Reachability::Public => ec2.public_ip_address().with_context(|| {
            format!(
                "instance {} ({id}, {region}) has no public address: set assign_public_ip: \
                 true, or ec2_instance_reachability: private when the controller is inside \
                 the VPC",
                i.name
            )
        })?,
        Reachability::Private => ec2
            .private_ip_address()
            .with_context(|| format!("instance {} ({id}) has no private address", i.name))?,
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| anyhow!("instance {} has the address `{address}`, not an IP", i.name))?;
    Ok(Host {
        name: i.name.clone(),
        node: i.node,
        address,
        ssh_user: i.ansible_user().to_string(),
        ssh_port: cluster.ssh_port,
        platform: Kind::Aws,
        platform_id: Some(id.to_string()),
        image: ec2.image_id().map(str::to_string),
        location: i.location.clone(),
        roles: i.roles.iter().map(|r| r.to_string()).collect(),
        host_key: None,
        restored_from: None,
        volumes: attached_volumes(ec2),
    })
}

/// The EBS volume id of each block device the instance has, by device name (`/dev/sdf`).
fn attached_volumes(ec2: &aws_sdk_ec2::types::Instance) -> BTreeMap<String, String> {
    ec2.block_device_mappings()
        .iter()
        .filter_map(|m| {
            let id = m.ebs()?.volume_id()?;
            Some((m.device_name()?.to_string(), id.to_string()))
        })
        .collect()
}

/// Imports the cluster's public key as the region's key pair unless it is there.
async fn ensure_key_pair(
    ec2: &Client,
    ctx: &Ctx<'_>,
    name: &str,
    public_key: &str,
) -> anyhow::Result<bool> {
    let found = ec2
        .describe_key_pairs()
        .filters(filter("key-name", name))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("looking up key pair {name}"))?;
    if !found.key_pairs().is_empty() {
        return Ok(false);
    }
    ec2.import_key_pair()
        .key_name(name)
        .public_key_material(aws_sdk_ec2::primitives::Blob::new(
            public_key.trim().as_bytes(),
        ))
        .tag_specifications(network::tag_spec(
            ResourceType::KeyPair,
            &tags::object_tags(ctx.cluster, ctx.owner, name),
        ))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("importing the cluster key as key pair {name}"))?;
    (ctx.say)(&format!("key pair {name} imported"));
    Ok(true)
}

/// Waits until `address:port` accepts TCP connections (sshd is up).
async fn wait_for_ssh(address: IpAddr, port: u16) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let connect = tokio::net::TcpStream::connect((address, port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
            return Ok(());
        }
        if started.elapsed() > SSH_TIMEOUT {
            bail!(
                "{address}:{port} did not accept SSH within {}s: check the security group and \
                 the instance's console output",
                SSH_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// An EC2 filter with one value.
pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// An SDK error with its whole chain (the service's code and message), not just
/// "service error".
pub fn sdk_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e))
}

impl Platform for AwsPlatform {
    fn kind(&self) -> Kind {
        Kind::Aws
    }

    async fn provision(&self, request: &ProvisionRequest<'_>) -> anyhow::Result<Provisioned> {
        let instances: Vec<&Instance> = request.cluster.instances.iter().collect();
        self.provision_instances(request, &instances).await
    }

    async fn add_host(
        &self,
        request: &ProvisionRequest<'_>,
        instance: &Instance,
    ) -> anyhow::Result<Host> {
        let mut done = self.provision_instances(request, &[instance]).await?;
        if let Some((name, e)) = done.failures.pop() {
            return Err(e.context(format!("creating {name}")));
        }
        let (mut host, _) = done
            .hosts
            .pop()
            .with_context(|| format!("instance {} was not created", instance.name))?;
        host.host_key = Some(self.host_key(&host).await?);
        Ok(host)
    }

    async fn host_key(&self, host: &Host) -> anyhow::Result<String> {
        let keys = self
            .host_keys
            .lock()
            .map_err(|_| anyhow!("host key table poisoned"))?;
        keys.get(&host.name).cloned().with_context(|| {
            format!(
                "the host key of {} is not known: run `tpa-controller provision` (it holds the \
                 keys it generated)",
                host.name
            )
        })
    }

    async fn deprovision(&self, request: &DeprovisionRequest<'_>) -> anyhow::Result<Deprovisioned> {
        let cluster = request.cluster;
        let owner = tags::owner_id(request.dir.root());
        let say = |line: &str| tracing::info!("{line}");
        let ctx = Ctx {
            cluster: &cluster.name,
            owner: &owner,
            aws: &cluster.aws,
            say: &say,
        };
        let mut regions: BTreeSet<String> = cluster
            .instances
            .iter()
            .filter_map(|i| i.aws.region.clone())
            .collect();
        regions.extend(cluster.aws.vpcs.keys().cloned());
        let mut done = Deprovisioned::default();
        for region in regions {
            let ec2 = self.client(&region).await;
            teardown::region(&ec2, &ctx, &region, &mut done).await?;
        }
        Ok(done)
    }

    fn local_repo_on_host(&self) -> Option<PathBuf> {
        None
    }
}
