//! EC2 instances: the AMI lookup, finding the cluster's instances by their tags, launching
//! the missing ones, and waiting until they run with an address.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Instance as Ec2Instance,
    InstanceNetworkInterfaceSpecification, InstanceStateName, InstanceType, ResourceType,
    VolumeType,
};
use base64::Engine as _;

use super::network::tag_spec;
use super::tags::{CLUSTER_TAG, OWNER_TAG};
use super::{Ctx, filter, sdk_error};
use crate::config::Instance;
use crate::config::aws::{AmiFilter, Volume};

/// TPA's default when config.yml names no AMI: Debian 12 from Debian's own account.
pub const DEFAULT_AMI: (&str, &str) = ("debian-12-amd64-*", "136693071363");

/// How long an instance may take to reach `running` (and to stop being there on terminate).
const STATE_TIMEOUT: Duration = Duration::from_secs(600);

/// An AMI: its id and the name of its root device (what `device_name: root` means).
#[derive(Debug, Clone)]
pub struct Ami {
    pub id: String,
    pub root_device: String,
}

/// Resolves the instance's AMI: `image: ami-...` as is, `image` or `ec2_ami.Name` as a name
/// pattern (newest match), else TPA's Debian default.
pub async fn ami(
    ec2: &Client,
    region: &str,
    instance: &Instance,
    configured: Option<&AmiFilter>,
) -> anyhow::Result<Ami> {
    let mut request = ec2.describe_images();
    let what = match instance.image.as_deref() {
        Some(id) if id.starts_with("ami-") => {
            request = request.image_ids(id);
            format!("AMI {id}")
        }
        image => {
            let (name, owner) = match (image, configured) {
                (Some(name), c) => (name.to_string(), c.and_then(|c| c.owner.clone())),
                (None, Some(c)) => (c.name.clone(), c.owner.clone()),
                (None, None) => (DEFAULT_AMI.0.to_string(), Some(DEFAULT_AMI.1.to_string())),
            };
            request = request
                .filters(filter("name", &name))
                .set_owners(owner.clone().map(|o| vec![o]));
            match owner {
                Some(o) => format!("an AMI named {name} owned by {o}"),
                None => format!("an AMI named {name}"),
            }
        }
    };
    let out = request
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("looking up {what} in {region}"))?;
    let newest = out
        .images()
        .iter()
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date()));
    let Some(image) = newest else {
        bail!(
            "there is no {what} in region {region} (instance {}): set ec2_ami (Name, Owner) or \
             the instance's `image` to an AMI that exists there",
            instance.name
        );
    };
    Ok(Ami {
        id: image.image_id().unwrap_or_default().to_string(),
        root_device: image.root_device_name().unwrap_or("/dev/xvda").to_string(),
    })
}

/// The cluster's instances in the region that are not terminated, by `Name` tag.
pub async fn find(ec2: &Client, ctx: &Ctx<'_>) -> anyhow::Result<BTreeMap<String, Ec2Instance>> {
    let out = ec2
        .describe_instances()
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), ctx.cluster))
        .filters(filter(&format!("tag:{OWNER_TAG}"), ctx.owner))
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .set_values(Some(
                    ["pending", "running", "stopping", "stopped"]
                        .map(String::from)
                        .to_vec(),
                ))
                .build(),
        )
        .send()
        .await
        .map_err(sdk_error)
        .context("looking up the cluster's instances")?;
    let mut found = BTreeMap::new();
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let name = tag(i, "Name").unwrap_or_default().to_string();
        if let Some(other) = found.insert(name.clone(), i.clone()) {
            bail!(
                "two instances of this cluster are named {name} ({} and {}): terminate the one \
                 that should not exist",
                other.instance_id().unwrap_or_default(),
                i.instance_id().unwrap_or_default()
            );
        }
    }
    Ok(found)
}

pub fn tag<'a>(i: &'a Ec2Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// What one new instance is launched with.
pub struct Launch<'a> {
    pub instance: &'a Instance,
    pub ami: &'a Ami,
    pub subnet_id: &'a str,
    pub security_group: &'a str,
    pub key_name: &'a str,
    pub user_data: &'a str,
    pub tags: &'a BTreeMap<String, String>,
}

/// Launches one instance; returns its id.
pub async fn launch(ec2: &Client, l: &Launch<'_>) -> anyhow::Result<String> {
    let i = l.instance;
    let Some(kind) = i.aws.instance_type.as_deref() else {
        bail!(
            "instance {} has no `type`: set it (e.g. type: t3.micro) on the instance or in \
             instance_defaults",
            i.name
        );
    };
    let nic = InstanceNetworkInterfaceSpecification::builder()
        .device_index(0)
        .subnet_id(l.subnet_id)
        .groups(l.security_group)
        .associate_public_ip_address(i.aws.assign_public_ip.unwrap_or(true))
        .set_private_ip_address(i.private_ip.map(|ip| ip.to_string()))
        .build();
    let volume_tags: BTreeMap<String, String> = l
        .tags
        .iter()
        .filter(|(k, _)| k.as_str() != "node")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let out = ec2
        .run_instances()
        .image_id(&l.ami.id)
        .instance_type(InstanceType::from(kind))
        .min_count(1)
        .max_count(1)
        .key_name(l.key_name)
        .user_data(base64::engine::general_purpose::STANDARD.encode(l.user_data))
        .network_interfaces(nic)
        .set_block_device_mappings(Some(block_devices(&i.aws.volumes, &l.ami.root_device)))
        .tag_specifications(tag_spec(ResourceType::Instance, l.tags))
        .tag_specifications(tag_spec(ResourceType::Volume, &volume_tags))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("launching instance {} ({kind}, {})", i.name, l.ami.id))?;
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .context("EC2 returned no instance id")
}

/// The block device mappings of `volumes`; `root` is the AMI's root device.
pub fn block_devices(volumes: &[Volume], root_device: &str) -> Vec<BlockDeviceMapping> {
    volumes
        .iter()
        .map(|v| {
            let device = if v.device_name == "root" {
                root_device
            } else {
                &v.device_name
            };
            let ebs = EbsBlockDevice::builder()
                .volume_type(VolumeType::from(v.volume_type.as_str()))
                .encrypted(v.encrypted)
                .delete_on_termination(v.delete_on_termination)
                .set_volume_size((v.size_gb > 0).then(|| v.size_gb.min(i32::MAX as u32) as i32))
                .set_iops(v.iops.map(|n| n.min(i32::MAX as u32) as i32))
                .set_throughput(v.throughput.map(|n| n.min(i32::MAX as u32) as i32))
                .build();
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(ebs)
                .build()
        })
        .collect()
}

/// Starts stopped instances.
pub async fn start(ec2: &Client, ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    ec2.start_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("starting {}", ids.join(", ")))?;
    Ok(())
}

/// Polls until every instance of `ids` is in `state` (and, when running, has its addresses);
/// returns them by id.
pub async fn wait_for(
    ec2: &Client,
    ids: &[String],
    state: InstanceStateName,
) -> anyhow::Result<HashMap<String, Ec2Instance>> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let out = ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(sdk_error)
            .context("waiting for instances")?;
        let all: HashMap<String, Ec2Instance> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| (i.instance_id().unwrap_or_default().to_string(), i.clone()))
            .collect();
        let pending: Vec<&String> = ids
            .iter()
            .filter(|id| {
                all.get(*id).is_none_or(|i| {
                    let s = i.state().and_then(|s| s.name());
                    s != Some(&state)
                        || (state == InstanceStateName::Running && i.private_ip_address().is_none())
                })
            })
            .collect();
        if pending.is_empty() {
            return Ok(all);
        }
        if started.elapsed() > STATE_TIMEOUT {
            bail!(
                "instances {} did not reach state {} within {}s",
                pending
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                state.as_str(),
                STATE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
