//! A region's network for the cluster: the VPC (found by its `Name` tag, created from
//! `ec2_vpc` when absent), one subnet per `subnet` CIDR, an internet gateway and a route
//! table when hosts are reached at public addresses, and the cluster's security group.
//! Everything created is tagged as this directory's (see `tags`); what was found is used and
//! never changed, so a pre-existing VPC keeps its own routing.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, Tag, TagSpecification};

use super::tags::{self, CLUSTER_TAG, OWNER_TAG};
use super::{Ctx, filter, sdk_error};
use crate::config::aws::{Reachability, Rule};

/// What the region's instances are launched into.
#[derive(Debug)]
pub struct RegionNetwork {
    pub vpc_id: String,
    pub vpc_cidr: String,
    /// Subnet id by CIDR.
    pub subnets: BTreeMap<String, String>,
    pub security_group: String,
    /// Whether anything was created.
    pub created: bool,
}

/// A subnet the region's instances need: its CIDR and availability zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SubnetWant {
    pub cidr: String,
    pub az: Option<String>,
}

/// Tag specifications for a new object of `kind`.
pub fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn our_tags(tags: &[Tag], ctx: &Ctx<'_>) -> bool {
    tags::is_ours(
        tags.iter()
            .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))),
        ctx.cluster,
        ctx.owner,
    )
}

/// Finds or creates the VPC, subnets, gateway, routes and security group of `region`.
pub async fn ensure(
    ec2: &Client,
    ctx: &Ctx<'_>,
    region: &str,
    wants: &BTreeSet<SubnetWant>,
) -> anyhow::Result<RegionNetwork> {
    let mut created = false;
    let Some(spec) = ctx.aws.vpcs.get(region) else {
        bail!(
            "config.yml: ec2_vpc has no entry for region {region}, where instances are: add \
             `ec2_vpc: {{{region}: {{Name: <vpc name>, cidr: 10.33.0.0/16}}}}`"
        );
    };
    let found = ec2
        .describe_vpcs()
        .filters(filter("tag:Name", &spec.name))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("looking up VPC {} in {region}", spec.name))?;
    let vpcs = found.vpcs();
    let (vpc_id, vpc_cidr) = match vpcs {
        [] => {
            let Some(cidr) = spec.cidr else {
                bail!(
                    "no VPC named {} in {region}, and config.yml's ec2_vpc.{region} gives no \
                     `cidr` to create it with",
                    spec.name
                );
            };
            let out = ec2
                .create_vpc()
                .cidr_block(cidr.to_string())
                .tag_specifications(tag_spec(
                    ResourceType::Vpc,
                    &tags::object_tags(ctx.cluster, ctx.owner, &spec.name),
                ))
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("creating VPC {} ({cidr}) in {region}", spec.name))?;
            let id = out
                .vpc()
                .and_then(|v| v.vpc_id())
                .context("EC2 returned no VPC id")?
                .to_string();
            (ctx.say)(&format!("vpc {} {id} {cidr} created", spec.name));
            created = true;
            (id, cidr.to_string())
        }
        [vpc] => (
            vpc.vpc_id().unwrap_or_default().to_string(),
            vpc.cidr_block().unwrap_or_default().to_string(),
        ),
        _ => bail!(
            "{} VPCs in {region} are named {}: give the one to use a unique Name tag",
            vpcs.len(),
            spec.name
        ),
    };

    let mut subnets = BTreeMap::new();
    let mut ours = Vec::new();
    for want in wants {
        let found = ec2
            .describe_subnets()
            .filters(filter("vpc-id", &vpc_id))
            .filters(filter("cidr-block", &want.cidr))
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("looking up subnet {} in {vpc_id}", want.cidr))?;
        let id = match found.subnets().first() {
            Some(s) => {
                if our_tags(s.tags(), ctx) {
                    ours.push(s.subnet_id().unwrap_or_default().to_string());
                }
                s.subnet_id().unwrap_or_default().to_string()
            }
            None => {
                let name = format!("{}/{}", ctx.cluster, want.az.as_deref().unwrap_or(region));
                let out = ec2
                    .create_subnet()
                    .vpc_id(&vpc_id)
                    .cidr_block(&want.cidr)
                    .set_availability_zone(want.az.clone())
                    .tag_specifications(tag_spec(
                        ResourceType::Subnet,
                        &tags::object_tags(ctx.cluster, ctx.owner, &name),
                    ))
                    .send()
                    .await
                    .map_err(sdk_error)
                    .with_context(|| {
                        format!("creating subnet {} in VPC {vpc_id} ({region})", want.cidr)
                    })?;
                let id = out
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .context("EC2 returned no subnet id")?
                    .to_string();
                (ctx.say)(&format!("subnet {name} {id} {} created", want.cidr));
                created = true;
                ours.push(id.clone());
                id
            }
        };
        subnets.insert(want.cidr.clone(), id);
    }

    if ctx.aws.reachability == Reachability::Public {
        created |= ensure_routes(ec2, ctx, region, &vpc_id, &ours).await?;
    }
    let (security_group, sg_created) =
        ensure_security_group(ec2, ctx, region, &vpc_id, wants).await?;
    created |= sg_created;
    Ok(RegionNetwork {
        vpc_id,
        vpc_cidr,
        subnets,
        security_group,
        created,
    })
}

/// An internet gateway on the VPC (created if it has none) and, for the subnets we created,
/// a route table sending 0.0.0.0/0 to it.
async fn ensure_routes(
    ec2: &Client,
    ctx: &Ctx<'_>,
    region: &str,
    vpc_id: &str,
    our_subnets: &[String],
) -> anyhow::Result<bool> {
    let mut created = false;
    let found = ec2
        .describe_internet_gateways()
        .filters(filter("attachment.vpc-id", vpc_id))
        .send()
        .await
        .map_err(sdk_error)
        .context("looking up the VPC's internet gateway")?;
    let igw = match found.internet_gateways().first() {
        Some(g) => g.internet_gateway_id().unwrap_or_default().to_string(),
        None => {
            let name = format!("{}/{region}-igw", ctx.cluster);
            let out = ec2
                .create_internet_gateway()
                .tag_specifications(tag_spec(
                    ResourceType::InternetGateway,
                    &tags::object_tags(ctx.cluster, ctx.owner, &name),
                ))
                .send()
                .await
                .map_err(sdk_error)
                .context("creating an internet gateway")?;
            let id = out
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .context("EC2 returned no internet gateway id")?
                .to_string();
            ec2.attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc_id)
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("attaching internet gateway {id} to {vpc_id}"))?;
            (ctx.say)(&format!("internet gateway {name} {id} created"));
            created = true;
            id
        }
    };
    if our_subnets.is_empty() {
        return Ok(created);
    }
    let found = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", vpc_id))
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), ctx.cluster))
        .filters(filter(&format!("tag:{OWNER_TAG}"), ctx.owner))
        .send()
        .await
        .map_err(sdk_error)
        .context("looking up the cluster's route table")?;
    let (table, associated): (String, Vec<String>) = match found.route_tables().first() {
        Some(t) => (
            t.route_table_id().unwrap_or_default().to_string(),
            t.associations()
                .iter()
                .filter_map(|a| a.subnet_id().map(str::to_string))
                .collect(),
        ),
        None => {
            let name = format!("{}/{region}/routes", ctx.cluster);
            let out = ec2
                .create_route_table()
                .vpc_id(vpc_id)
                .tag_specifications(tag_spec(
                    ResourceType::RouteTable,
                    &tags::object_tags(ctx.cluster, ctx.owner, &name),
                ))
                .send()
                .await
                .map_err(sdk_error)
                .context("creating the cluster's route table")?;
            let id = out
                .route_table()
                .and_then(|t| t.route_table_id())
                .context("EC2 returned no route table id")?
                .to_string();
            ec2.create_route()
                .route_table_id(&id)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(&igw)
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("adding the default route to {id}"))?;
            (ctx.say)(&format!("route table {name} {id} created"));
            created = true;
            (id, Vec::new())
        }
    };
    for subnet in our_subnets.iter().filter(|s| !associated.contains(s)) {
        ec2.associate_route_table()
            .route_table_id(&table)
            .subnet_id(subnet)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("associating route table {table} with {subnet}"))?;
        created = true;
    }
    Ok(created)
}

/// The cluster's security group in the VPC, created with `cluster_rules` (or TPA's default:
/// SSH from anywhere, all TCP within the cluster's subnets) plus the agent's port wherever
/// SSH is open: deploy reaches the agent as it reaches SSH, over mutual TLS.
async fn ensure_security_group(
    ec2: &Client,
    ctx: &Ctx<'_>,
    region: &str,
    vpc_id: &str,
    wants: &BTreeSet<SubnetWant>,
) -> anyhow::Result<(String, bool)> {
    let name = tags::security_group_name(ctx.cluster, ctx.owner);
    let found = ec2
        .describe_security_groups()
        .filters(filter("vpc-id", vpc_id))
        .filters(filter("group-name", &name))
        .send()
        .await
        .map_err(sdk_error)
        .context("looking up the cluster's security group")?;
    if let Some(g) = found.security_groups().first() {
        return Ok((g.group_id().unwrap_or_default().to_string(), false));
    }
    let out = ec2
        .create_security_group()
        .group_name(&name)
        .description(format!("tpa cluster {} ({region})", ctx.cluster))
        .vpc_id(vpc_id)
        .tag_specifications(tag_spec(
            ResourceType::SecurityGroup,
            &tags::object_tags(ctx.cluster, ctx.owner, &name),
        ))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("creating security group {name} in {vpc_id}"))?;
    let id = out
        .group_id()
        .context("EC2 returned no group id")?
        .to_string();
    let rules = ingress_rules(ctx.aws.rules.as_deref(), wants);
    let permissions: Vec<IpPermission> = rules
        .iter()
        .map(|r| {
            IpPermission::builder()
                .ip_protocol(&r.proto)
                .from_port(i32::from(r.from))
                .to_port(i32::from(r.to))
                .ip_ranges(IpRange::builder().cidr_ip(&r.cidr).build())
                .build()
        })
        .collect();
    ec2.authorize_security_group_ingress()
        .group_id(&id)
        .set_ip_permissions(Some(permissions))
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("adding the inbound rules of security group {name}"))?;
    (ctx.say)(&format!("security group {name} {id} created"));
    Ok((id, true))
}

/// One inbound rule as EC2 takes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ingress {
    pub proto: String,
    pub cidr: String,
    pub from: u16,
    pub to: u16,
}

/// `cluster_rules` (or TPA's default) as EC2 rules, with the agent's port added for every
/// source that may reach SSH.
pub fn ingress_rules(rules: Option<&[Rule]>, wants: &BTreeSet<SubnetWant>) -> Vec<Ingress> {
    let mut out = BTreeSet::new();
    let add = |out: &mut BTreeSet<Ingress>, proto: &str, cidr: String, from: u16, to: u16| {
        out.insert(Ingress {
            proto: proto.into(),
            cidr,
            from,
            to,
        });
    };
    match rules {
        Some(rules) => {
            for r in rules {
                for &(from, to) in &r.ports {
                    add(&mut out, &r.proto, r.cidr.to_string(), from, to);
                }
            }
        }
        None => {
            add(&mut out, "tcp", "0.0.0.0/0".into(), 22, 22);
            for w in wants {
                add(&mut out, "tcp", w.cidr.clone(), 0, 65535);
            }
        }
    }
    let agent = tpa_proto::DEFAULT_AGENT_PORT;
    let ssh_sources: Vec<String> = out
        .iter()
        .filter(|r| r.proto == "tcp" && r.from <= 22 && 22 <= r.to)
        .filter(|r| !(r.from <= agent && agent <= r.to))
        .map(|r| r.cidr.clone())
        .collect();
    for cidr in ssh_sources {
        add(&mut out, "tcp", cidr, agent, agent);
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_open_ssh_and_the_agent_and_the_subnets() {
        let wants = BTreeSet::from([SubnetWant {
            cidr: "10.33.0.0/28".into(),
            az: None,
        }]);
        let text: Vec<String> = ingress_rules(None, &wants)
            .iter()
            .map(|r| format!("{} {} {}-{}", r.proto, r.cidr, r.from, r.to))
            .collect();
        let agent = tpa_proto::DEFAULT_AGENT_PORT;
        assert_eq!(
            text,
            vec![
                "tcp 0.0.0.0/0 22-22".to_string(),
                format!("tcp 0.0.0.0/0 {agent}-{agent}"),
                "tcp 10.33.0.0/28 0-65535".to_string(),
            ]
        );
    }
}
