//! The tags that mark what provision created, and for which cluster directory.
//!
//! Every object tpa creates carries TPA's `Cluster=<cluster_name>` and [`OWNER_TAG`], a hash
//! of the cluster directory's absolute path: two directories with the same `cluster_name` in
//! one account (or one VPC) never see each other's objects, and deprovision removes exactly
//! the objects carrying both. A hash rather than the path: tag values are limited to 256
//! characters and a path says more about the operator's machine than the account needs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;

use crate::config::{Cluster, Instance};

/// TPA's tag: the cluster name.
pub const CLUSTER_TAG: &str = "Cluster";
/// Which cluster directory created the object (see [`owner_id`]).
pub const OWNER_TAG: &str = "tpa:owner";

/// The owner id of a cluster directory: the first 16 hex digits of SHA-256 of its path.
pub fn owner_id(dir: &Path) -> String {
    crate::inventory::sha256_hex(dir.display().to_string().as_bytes())[..16].to_string()
}

/// The tags every object provision creates carries: `Cluster`, the owner, and `Name`.
pub fn object_tags(cluster: &str, owner: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_TAG.to_string(), cluster.to_string()),
        (OWNER_TAG.to_string(), owner.to_string()),
        ("Name".to_string(), name.to_string()),
    ])
}

/// An instance's tags, as TPA sets them: `cluster_tags`, then the instance's `tags`, then
/// `Cluster`, `Name` and `node` (and the owner), which nothing overrides. Tags EC2 would
/// refuse (an `aws:` prefix, over-long keys or values, control characters) are errors
/// naming the tag, before anything is created.
pub fn instance_tags(
    cluster: &Cluster,
    instance: &Instance,
    owner: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    for (source, map) in [("cluster_tags", &cluster.tags), ("tags", &instance.tags)] {
        for (k, v) in map {
            check_tag(k, v).map_err(|e| {
                anyhow::anyhow!("{source} of instance {}: tag `{k}`: {e}", instance.name)
            })?;
            tags.insert(k.clone(), v.clone());
        }
    }
    tags.extend(object_tags(&cluster.name, owner, &instance.name));
    tags.insert("node".into(), instance.node.to_string());
    Ok(tags)
}

/// EC2's rules for a tag.
pub fn check_tag(key: &str, value: &str) -> anyhow::Result<()> {
    if key.is_empty() || key.chars().count() > 128 {
        bail!("a tag key has 1 to 128 characters");
    }
    if value.chars().count() > 256 {
        bail!("a tag value has at most 256 characters");
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        bail!("tag keys starting with aws: are reserved by AWS");
    }
    if key.chars().chain(value.chars()).any(char::is_control) {
        bail!("tags cannot hold control characters");
    }
    Ok(())
}

/// Whether an object's tags say it is this directory's cluster's.
pub fn is_ours<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    cluster: &str,
    owner: &str,
) -> bool {
    let (mut c, mut o) = (false, false);
    for (k, v) in tags {
        c |= k == CLUSTER_TAG && v == cluster;
        o |= k == OWNER_TAG && v == owner;
    }
    c && o
}

/// The name of the cluster's EC2 key pair: TPA's `tpa_<cluster>`, with the owner so that a
/// same-named cluster of another directory keeps its own.
pub fn key_pair_name(cluster: &str, owner: &str) -> String {
    format!("tpa_{cluster}_{}", &owner[..8.min(owner.len())])
}

/// The security group's name (unique per VPC), as [`key_pair_name`].
pub fn security_group_name(cluster: &str, owner: &str) -> String {
    format!("tpa_{cluster}_{}", &owner[..8.min(owner.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: &str) -> Cluster {
        let source = format!(
            "cluster_name: cloud\ncluster_tags: {{Owner: ann, Cluster: spoofed}}\n\
             cluster_vars: {{postgres_version: '15'}}\ninstances:\n\
             - {{Name: alder, node: 3, platform: aws, region: eu-west-1, type: t3.micro, \
             subnet: 10.33.0.0/28{extra}}}\n"
        );
        Cluster::parse(&source, "config.yml").expect("valid")
    }

    #[test]
    fn instance_tags_put_ours_last() {
        let c = cluster(", tags: {team: db, node: '9'}");
        let tags = instance_tags(&c, &c.instances[0], "0123456789abcdef").unwrap();
        let text: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        expect_test::expect![[r#"
            Cluster=cloud
            Name=alder
            Owner=ann
            node=3
            team=db
            tpa:owner=0123456789abcdef"#]]
        .assert_eq(&text.join("\n"));
        assert!(is_ours(
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            "cloud",
            "0123456789abcdef"
        ));
        assert!(!is_ours(
            [("Cluster", "cloud")],
            "cloud",
            "0123456789abcdef"
        ));
        assert!(!is_ours(
            [("Cluster", "other"), ("tpa:owner", "0123456789abcdef")],
            "cloud",
            "0123456789abcdef"
        ));
    }

    #[test]
    fn hostile_tags_are_refused_with_their_name() {
        let c = cluster(", tags: {'aws:x': y}");
        let err = instance_tags(&c, &c.instances[0], "o")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tags of instance alder: tag `aws:x`: tag keys starting with aws: are reserved by AWS"
        );
        let c = cluster(", tags: {k: \"a\\nb\"}");
        let err = instance_tags(&c, &c.instances[0], "o")
            .unwrap_err()
            .to_string();
        assert!(err.contains("control characters"), "{err}");
        assert!(check_tag(&"k".repeat(129), "v").is_err());
        assert!(check_tag("k", &"v".repeat(257)).is_err());
    }

    #[test]
    fn owner_ids_differ_per_directory() {
        let a = owner_id(Path::new("/home/ann/cloud"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, owner_id(Path::new("/home/bob/cloud")));
        assert_eq!(key_pair_name("cloud", &a), format!("tpa_cloud_{}", &a[..8]));
    }
}
