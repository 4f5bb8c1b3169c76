//! Golden tests: configure's config.yml for the main option combinations, each loaded by our
//! own config parser; and refusals. Regenerate after an intended change with
//! `UPDATE_EXPECT=1 cargo test -p tpa-controller configure`.

use clap::Parser;
use expect_test::{expect, expect_file};

use super::*;
use crate::commands::configure::{Args, options};
use crate::config::{Cluster, Role};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn args(line: &str) -> Args {
    let words = std::iter::once("configure").chain(line.split_whitespace());
    Cli::try_parse_from(words)
        .unwrap_or_else(|e| panic!("{e}"))
        .args
}

/// Generates with deterministic names (the built-in list in order) and checks it loads.
fn generate_checked(line: &str) -> (String, Cluster) {
    let a = args(line);
    let o = options(&a).unwrap();
    let names = |n: usize| {
        let candidates = HOSTNAMES
            .iter()
            .map(|h| HostEntry {
                name: h.to_string(),
                ip: None,
                private_ip: None,
            })
            .collect();
        let prefix = a
            .cluster_prefixed_hostnames
            .then_some(o.cluster_name.as_str());
        pick_hosts(candidates, n, prefix, "test")
    };
    let (_, text) = generate(&o, names, &format!("tpa-controller configure {line}")).unwrap();
    let cluster = Cluster::parse(&text, "config.yml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, cluster)
}

fn error(line: &str) -> String {
    let a = args(line);
    match options(&a).and_then(|o| generate(&o, |n| pick_hosts(vec![], n, None, "x"), "")) {
        Ok(_) => panic!("accepted: {line}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn default_one_location_repmgr() {
    let (text, c) = generate_checked("/c/m1r -a M1 --postgresql 15 --failover-manager repmgr");
    expect_file!["golden/one_location_repmgr.yml"].assert_eq(&text);
    // Two data nodes in one location: the barman node is the witness.
    assert!(c.instances[2].has_role(Role::Witness));
}

#[test]
fn three_locations_repmgr_three_nodes_each() {
    let (text, c) = generate_checked(
        "/c/fosdem -a M1 --postgresql 15 --failover-manager repmgr --location-names brussels \
         ghent antwerp --primary-location ghent --data-nodes-per-location 3 --owner Alice \
         --use-local-repo-only",
    );
    expect_file!["golden/three_locations_repmgr.yml"].assert_eq(&text);
    assert_eq!(c.instances.len(), 10);
    assert!(!c.instances.iter().any(|i| i.has_role(Role::Witness)));
}

#[test]
fn two_locations_prefixed_names_pinned_network() {
    let (text, _) = generate_checked(
        "/c/cf-two -a M1 --postgresql 15 --failover-manager repmgr --location-names brussels \
         ghent --data-nodes-per-location 1 --cluster-prefixed-hostnames --network 10.33.7.0/28",
    );
    expect_file!["golden/two_locations_network.yml"].assert_eq(&text);
}

#[test]
fn patroni_one_location() {
    let (text, c) = generate_checked(
        "/c/m1p -a M1 --postgres-flavour postgresql --postgres-version 17 \
         --failover-manager patroni --location-names dc1",
    );
    expect_file!["golden/one_location_patroni.yml"].assert_eq(&text);
    assert_eq!(
        c.instances
            .iter()
            .filter(|i| i.has_role(Role::Etcd))
            .count(),
        3
    );
}

#[test]
fn witness_only_location() {
    let (text, _) = generate_checked(
        "/c/wo -a M1 --postgresql 15 --failover-manager repmgr --location-names a b w \
         --witness-only-location w",
    );
    expect_file!["golden/witness_only_location.yml"].assert_eq(&text);
}

#[test]
fn single_node_location() {
    let (text, _) = generate_checked(
        "/c/sn -a M1 --postgresql 15 --failover-manager repmgr --location-names a s \
         --single-node-location s --data-nodes-per-location 3",
    );
    expect_file!["golden/single_node_location.yml"].assert_eq(&text);
}

#[test]
fn bare_with_hostnames_from_file() {
    let a = args("/c/onprem -a M1 --postgresql 15 --failover-manager repmgr --platform bare");
    let o = options(&a).unwrap();
    let listed = parse_hostnames(
        "# our machines\nDB_One 192.0.2.10\ndb-two 198.51.100.4 10.0.0.4\nbackup 192.0.2.12\n",
        "hosts.txt",
    )
    .unwrap();
    let (_, text) = generate(&o, |n| pick_hosts(listed, n, None, "hosts.txt"), "cmd").unwrap();
    expect_file!["golden/bare.yml"].assert_eq(&text);
    Cluster::parse(&text, "config.yml").unwrap();
}

#[test]
fn aws_writes_tpa_keys_that_provision_takes() {
    let a = args("/c/cloud -a M1 --postgresql 15 --failover-manager repmgr --platform aws");
    let o = options(&a).unwrap();
    let names = |n| {
        let c = HOSTNAMES
            .iter()
            .map(|h| HostEntry {
                name: h.to_string(),
                ip: None,
                private_ip: None,
            })
            .collect();
        pick_hosts(c, n, None, "t")
    };
    let (_, text) = generate(&o, names, "cmd").unwrap();
    expect_file!["golden/aws.yml"].assert_eq(&text);
    let cluster = Cluster::parse(&text, "config.yml").unwrap();
    let first = &cluster.instances[0];
    assert_eq!(first.aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(first.aws.subnet.as_deref(), Some("10.33.0.0/28"));
    assert_eq!(first.aws.volumes[0].device_name, "/dev/sdf");
    assert_eq!(cluster.aws.vpcs["eu-west-1"].name, "Test");
}

#[test]
fn refusals_name_the_option() {
    expect!["--architecture PGD-Always-ON: only M1 is supported (TPA's PGD and other architectures are not)"]
        .assert_eq(&error("/c/x -a PGD-Always-ON --postgresql 15 --failover-manager repmgr"));
    expect!["--postgres-flavour epas: EDB's proprietary flavours are not supported; use --postgresql N (community PostgreSQL)"]
        .assert_eq(&error("/c/x -a M1 --postgres-flavour epas --postgres-version 15 --failover-manager repmgr"));
    expect!["--failover-manager efm: EDB Failover Manager is proprietary and not supported; use repmgr or patroni"]
        .assert_eq(&error("/c/x -a M1 --postgresql 15 --failover-manager efm"));
    expect!["Postgres version `9.6`: give a major version, 12 to 18"].assert_eq(&error(
        "/c/x -a M1 --postgresql 9.6 --failover-manager repmgr",
    ));
    expect!["--enable-pgbouncer: the pgbouncer role is not deployable yet"].assert_eq(&error(
        "/c/x -a M1 --postgresql 15 --failover-manager repmgr --enable-pgbouncer",
    ));
    expect!["--enable-haproxy: the haproxy role is not deployable yet"].assert_eq(&error(
        "/c/x -a M1 --postgresql 15 --failover-manager patroni --enable-haproxy",
    ));
    expect!["cluster directory /c/bad.name: its name `bad.name` is the cluster name; use letters, digits, `_` and `-`"]
        .assert_eq(&error("/c/bad.name -a M1 --postgresql 15 --failover-manager repmgr"));
    expect!["location name `no/slash`: use letters, digits, `_` and `-` (at most 63)"].assert_eq(
        &error("/c/x -a M1 --postgresql 15 --failover-manager repmgr --location-names no/slash"),
    );
    expect!["--primary-location z: not one of --location-names (a, b)"]
        .assert_eq(&error("/c/x -a M1 --postgresql 15 --failover-manager repmgr --location-names a b --primary-location z"));
    expect!["--witness-only-location needs at least two other locations with data nodes"]
        .assert_eq(&error("/c/x -a M1 --postgresql 15 --failover-manager repmgr --location-names a w --witness-only-location w"));
    expect!["--failover-manager patroni: M1 with Patroni has a single location, not 2"].assert_eq(
        &error("/c/x -a M1 --postgresql 15 --failover-manager patroni --location-names a b"),
    );
    expect!["--os Rocky: only Debian hosts are supported (images, packages and the local repository are Debian's)"]
        .assert_eq(&error("/c/x -a M1 --postgresql 15 --failover-manager repmgr --os Rocky"));
    expect!["test gives 0 host names; this layout needs 3"].assert_eq(&error_names());
}

fn error_names() -> String {
    let o = options(&args(
        "/c/x -a M1 --postgresql 15 --failover-manager repmgr",
    ))
    .unwrap();
    format!(
        "{:#}",
        generate(&o, |n| pick_hosts(vec![], n, None, "test"), "").unwrap_err()
    )
}

#[test]
fn hostnames_file_errors_name_file_and_line() {
    expect!["hosts.txt:2: host name `-bad`: use lower-case letters, digits and `-` (not first or last), at most 63"]
        .assert_eq(&format!("{:#}", parse_hostnames("ok\n-bad\n", "hosts.txt").unwrap_err()));
    expect!["hosts.txt:1: `10.0.0.300` is not an IP address: invalid IP address syntax"].assert_eq(
        &format!(
            "{:#}",
            parse_hostnames("a 10.0.0.300\n", "hosts.txt").unwrap_err()
        ),
    );
    expect!["hosts.txt:2: host name `a` is listed twice"].assert_eq(&format!(
        "{:#}",
        parse_hostnames("a\nA\n", "hosts.txt").unwrap_err()
    ));
}

#[test]
fn existing_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cfexists");
    std::fs::create_dir(&cluster).unwrap();
    std::fs::write(cluster.join("notes"), "mine").unwrap();
    let a = args(&format!(
        "{} -a M1 --postgresql 15 --failover-manager repmgr --no-git",
        cluster.display()
    ));
    let e = crate::commands::configure::run(&a).unwrap_err().to_string();
    assert!(
        e.contains("already exists") && e.contains("nothing was changed"),
        "{e}"
    );
    let entries: Vec<_> = std::fs::read_dir(&cluster).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn bad_input_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cfbad");
    let a = args(&format!(
        "{} -a M1 --postgresql 15 --failover-manager efm",
        cluster.display()
    ));
    assert!(crate::commands::configure::run(&a).is_err());
    assert!(!cluster.exists());
}

#[test]
fn writes_and_commits_with_git() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cfgit");
    let a = args(&format!(
        "{} -a M1 --postgresql 15 --failover-manager repmgr",
        cluster.display()
    ));
    crate::commands::configure::run(&a).unwrap();
    Cluster::load(&cluster).unwrap();
    let log = crate::process::command("git")
        .current_dir(&cluster)
        .args(["log", "--format=%s", "--name-only"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("Created by tpa-controller configure") && log.contains("config.yml"),
        "{log}"
    );
}
