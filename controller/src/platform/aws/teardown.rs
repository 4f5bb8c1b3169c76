//! Deprovision in one region: every object tagged as this directory's cluster goes, in the
//! order EC2's dependencies need (instances, then the security group, route table, gateway,
//! subnets, VPC, key pair and leftover volumes). Objects tagged with the cluster's name but
//! another directory's owner stay and are reported; untagged objects (a pre-existing VPC) are
//! never looked at.

use anyhow::Context;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, InstanceStateName, Tag};

use super::tags::{CLUSTER_TAG, OWNER_TAG};
use super::{Ctx, filter, instances, sdk_error};
use crate::platform::Deprovisioned;

fn ours(ctx: &Ctx<'_>) -> [Filter; 2] {
    [
        filter(&format!("tag:{CLUSTER_TAG}"), ctx.cluster),
        filter(&format!("tag:{OWNER_TAG}"), ctx.owner),
    ]
}

fn name_of(tags: &[Tag], id: &str) -> String {
    match tags
        .iter()
        .find(|t| t.key() == Some("Name"))
        .and_then(|t| t.value())
    {
        Some(n) => format!("{n} ({id})"),
        None => id.to_string(),
    }
}

pub async fn region(
    ec2: &Client,
    ctx: &Ctx<'_>,
    region: &str,
    done: &mut Deprovisioned,
) -> anyhow::Result<()> {
    // Instances first: everything else is in use while they exist.
    let out = ec2
        .describe_instances()
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), ctx.cluster))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("listing the cluster's instances in {region}"))?;
    let mut ids = Vec::new();
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let state = i.state().and_then(|s| s.name());
        if state == Some(&InstanceStateName::Terminated) {
            continue;
        }
        let id = i.instance_id().unwrap_or_default().to_string();
        let label = name_of(i.tags(), &id);
        if instances::tag(i, OWNER_TAG) == Some(ctx.owner) {
            done.removed.push(format!("instance {label}"));
            ids.push(id);
        } else {
            done.kept.push(format!(
                "left instance {label}: another cluster directory with cluster_name {} owns it",
                ctx.cluster
            ));
        }
    }
    if !ids.is_empty() {
        ec2.terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
            .map_err(sdk_error)
            .context("terminating the cluster's instances")?;
        instances::wait_for(ec2, &ids, InstanceStateName::Terminated).await?;
    }

    let [c, o] = ours(ctx);
    let groups = ec2
        .describe_security_groups()
        .filters(c.clone())
        .filters(o.clone())
        .send()
        .await
        .map_err(sdk_error)
        .context("listing the cluster's security groups")?;
    for g in groups.security_groups() {
        let id = g.group_id().unwrap_or_default();
        ec2.delete_security_group()
            .group_id(id)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deleting security group {id}"))?;
        done.removed
            .push(format!("security group {}", name_of(g.tags(), id)));
    }

    let tables = ec2
        .describe_route_tables()
        .filters(c.clone())
        .filters(o.clone())
        .send()
        .await
        .map_err(sdk_error)
        .context("listing the cluster's route tables")?;
    for t in tables.route_tables() {
        let id = t.route_table_id().unwrap_or_default();
        for a in t.associations().iter().filter(|a| a.main() != Some(true)) {
            if let Some(assoc) = a.route_table_association_id() {
                ec2.disassociate_route_table()
                    .association_id(assoc)
                    .send()
                    .await
                    .map_err(sdk_error)
                    .with_context(|| format!("disassociating route table {id}"))?;
            }
        }
        ec2.delete_route_table()
            .route_table_id(id)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deleting route table {id}"))?;
        done.removed
            .push(format!("route table {}", name_of(t.tags(), id)));
    }

    let gateways = ec2
        .describe_internet_gateways()
        .filters(c.clone())
        .filters(o.clone())
        .send()
        .await
        .map_err(sdk_error)
        .context("listing the cluster's internet gateways")?;
    for g in gateways.internet_gateways() {
        let id = g.internet_gateway_id().unwrap_or_default();
        for a in g.attachments() {
            if let Some(vpc) = a.vpc_id() {
                ec2.detach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(vpc)
                    .send()
                    .await
                    .map_err(sdk_error)
                    .with_context(|| format!("detaching internet gateway {id} from {vpc}"))?;
            }
        }
        ec2.delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deleting internet gateway {id}"))?;
        done.removed
            .push(format!("internet gateway {}", name_of(g.tags(), id)));
    }

    let subnets = ec2
        .describe_subnets()
        .filters(c.clone())
        .filters(o.clone())
        .send()
        .await
        .map_err(sdk_error)
        .context("listing the cluster's subnets")?;
    for s in subnets.subnets() {
        let id = s.subnet_id().unwrap_or_default();
        ec2.delete_subnet()
            .subnet_id(id)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deleting subnet {id}"))?;
        done.removed
            .push(format!("subnet {}", name_of(s.tags(), id)));
    }

    let vpcs = ec2
        .describe_vpcs()
        .filters(c.clone())
        .filters(o.clone())
        .send()
        .await
        .map_err(sdk_error)
        .context("listing the cluster's VPCs")?;
    for v in vpcs.vpcs() {
        let id = v.vpc_id().unwrap_or_default();
        ec2.delete_vpc()
            .vpc_id(id)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| {
                format!(
                    "deleting VPC {id} (something this cluster did not create may still use it)"
                )
            })?;
        done.removed.push(format!("vpc {}", name_of(v.tags(), id)));
    }

    let keys = ec2
        .describe_key_pairs()
        .filters(c.clone())
        .filters(o.clone())
        .send()
        .await
        .map_err(sdk_error)
        .context("listing the cluster's key pairs")?;
    for k in keys.key_pairs() {
        let name = k.key_name().unwrap_or_default();
        ec2.delete_key_pair()
            .key_name(name)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deleting key pair {name}"))?;
        done.removed.push(format!("key pair {name}"));
    }

    // Volumes kept by `delete_on_termination: false`.
    let volumes = ec2
        .describe_volumes()
        .filters(c)
        .filters(o)
        .filters(filter("status", "available"))
        .send()
        .await
        .map_err(sdk_error)
        .context("listing the cluster's volumes")?;
    for v in volumes.volumes() {
        let id = v.volume_id().unwrap_or_default();
        ec2.delete_volume()
            .volume_id(id)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deleting volume {id}"))?;
        done.removed
            .push(format!("volume {}", name_of(v.tags(), id)));
    }
    Ok(())
}
