//! One test per validation rule (exact `file:line: path: message` text) and tests of the
//! default merging rules.

use expect_test::{Expect, expect};

use super::*;

/// Renders the result of parsing: the errors, one per line, or `ok`.
fn check(source: &str, expected: Expect) {
    let actual = match Cluster::parse(source, "config.yml") {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    expected.assert_eq(&actual);
}

fn parse_ok(source: &str) -> Cluster {
    match Cluster::parse(source, "config.yml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// A valid docker cluster header; instances start on line 8.
const BASE: &str = "\
cluster_name: t
cluster_vars:
  postgres_version: '15'
instance_defaults:
  platform: docker
  image: tpa/debian
instances:
";

fn with_base(instances: &str) -> String {
    format!("{BASE}{instances}")
}

const ONE: &str = "- {Name: one, node: 1, role: [primary]}\n";

// === YAML and top level ===

#[test]
fn tpa_example_in_flow_style_parses() {
    let c = parse_ok(
        "\
architecture: M1
cluster_name: m1r
cluster_tags: {}
keyring_backend: system
vault_name: 5a6f3e2c-1d4b-4f7a-9c8e-0b1a2d3c4e5f
docker_networks: [{ipam_config: [{subnet: 10.33.151.240/28}], name: m1r}]
cluster_vars: {edb_repositories: [], failover_manager: repmgr, postgres_flavour: postgresql,
               postgres_version: '16', preferred_python_version: python3,
               use_volatile_subscriptions: false}
locations: [{Name: main}]
instance_defaults: {image: tpa/rocky:9, platform: docker, vars: {ansible_user: root}}
instances:
- {Name: queasy,  node: 1, location: main, ip_address: 10.33.151.242, backup: quieter, role: [primary]}
- {Name: kinkier, node: 2, location: main, ip_address: 10.33.151.243, upstream: queasy, role: [replica]}
- {Name: quieter, node: 3, location: main, ip_address: 10.33.151.244, upstream: queasy,
   role: [barman, log-server, witness]}
",
    );
    assert_eq!(c.instances.len(), 3);
}

#[test]
fn valid_base_parses() {
    check(&with_base(ONE), expect!["ok"]);
}

#[test]
fn invalid_yaml() {
    check(
        "cluster_name: [a\n",
        expect!["config.yml:2: invalid YAML: while parsing a flow sequence, expected ',' or ']'"],
    );
}

#[test]
fn empty_file() {
    check(
        "",
        expect!["config.yml:1: the file is empty; run `tpa-controller configure` to write one"],
    );
}

#[test]
fn duplicate_top_level_key() {
    check(
        &format!("{}cluster_name: u\n", with_base(ONE)),
        expect![
            "config.yml:9: duplicate key `cluster_name`; TPA would silently use the last one, define each key once"
        ],
    );
}

#[test]
fn top_level_must_be_a_mapping() {
    check(
        "- a\n",
        expect![[r#"
        config.yml:1: expected a mapping, found a list
        config.yml:1: missing required key `cluster_name`
        config.yml:1: missing required key `cluster_vars` (TPA requires it, e.g. with postgres_version)
        config.yml:1: missing required key `instances`"#]],
    );
}

#[test]
fn unknown_top_level_key_suggests_closest() {
    check(
        &format!("{}cluster_var: {{}}\nzzz: 1\n", with_base(ONE)),
        expect![[r#"
        config.yml:9: cluster_var: unknown top-level key `cluster_var`; did you mean `cluster_vars`?
        config.yml:10: zzz: unknown top-level key `zzz`"#]],
    );
}

#[test]
fn tpa_top_level_key_not_supported_yet() {
    check(
        &format!(
            "{}ec2_groups: {{}}\ncompliance: cis\ndocker_images: {{}}\n",
            with_base(ONE)
        ),
        expect![[r#"
            config.yml:9: ec2_groups: `ec2_groups` is a TPA setting that tpa does not support yet; remove it
            config.yml:10: compliance: `compliance` is a TPA setting that tpa does not support yet; remove it
            config.yml:11: docker_images: `docker_images` is a TPA setting that tpa does not support yet; remove it"#]],
    );
}

#[test]
fn missing_required_top_level_keys() {
    check(
        "architecture: M1\n",
        expect![[r#"
        config.yml:1: missing required key `cluster_name`
        config.yml:1: missing required key `cluster_vars` (TPA requires it, e.g. with postgres_version)
        config.yml:1: missing required key `instances`"#]],
    );
}

#[test]
fn empty_cluster_vars_and_instances() {
    check(
        "cluster_name: t\ncluster_vars: {}\ninstances: []\n",
        expect![[r#"
        config.yml:2: cluster_vars: must not be empty (TPA requires cluster variables, e.g. postgres_version)
        config.yml:3: instances: must list at least one instance"#]],
    );
}

#[test]
fn invalid_cluster_name() {
    check(
        &with_base(ONE).replace("cluster_name: t", "cluster_name: my.cluster"),
        expect![
            "config.yml:1: cluster_name: `my.cluster` is not a valid cluster name; use only letters, digits, `_` and `-`"
        ],
    );
}

#[test]
fn architecture_other_than_m1() {
    check(
        &format!("architecture: PGD-Always-ON\n{}", with_base(ONE)),
        expect![
            "config.yml:1: architecture: `architecture: PGD-Always-ON` is a TPA setting that tpa does not support yet; use `M1`"
        ],
    );
    check(
        &format!("architecture: M2\n{}", with_base(ONE)),
        expect!["config.yml:1: architecture: unknown architecture `M2`; use `M1`"],
    );
}

#[test]
fn wrong_types_at_top_level() {
    check(
        &format!(
            "{}cluster_tags: [a]\ncluster_ssh_port: 0\nkeyring_backend: vault\nssh_key_file: [x]\n",
            with_base(ONE)
        ),
        expect![[r#"
            config.yml:9: cluster_tags: expected a mapping, found a list
            config.yml:10: cluster_ssh_port: port 0 is not a usable port
            config.yml:11: keyring_backend: unknown keyring_backend `vault`; use `system` or `legacy`
            config.yml:12: ssh_key_file: expected a string, found a list"#]],
    );
}

// === instance keys ===

#[test]
fn unknown_instance_key() {
    check(
        &with_base(
            "- {Name: one, node: 1, role: [primary], imagee: x, postgres_port: 5, user: x}\n",
        ),
        expect![[r#"
            config.yml:8: instances[0].imagee: unknown instance key `imagee`; did you mean `image`?
            config.yml:8: instances[0].postgres_port: unknown instance key `postgres_port`; should it be under `vars:`?
            config.yml:8: instances[0].user: unknown instance key `user`; should it be under `vars:`?"#]],
    );
}

#[test]
fn tpa_instance_key_not_supported_yet() {
    check(
        &with_base("- {Name: one, node: 1, role: [primary], networks: [a]}\n"),
        expect![
            "config.yml:8: instances[0].networks: `networks` is a TPA setting that tpa does not support yet; remove it"
        ],
    );
}

#[test]
fn key_for_another_platform() {
    check(
        &with_base(
            "- {Name: one, node: 1, platform: bare, ip_address: 10.0.0.1, type: t3.micro, image: x}\n\
             - {Name: two, node: 2, platform: bare, ip_address: 10.0.0.2}\n",
        ),
        expect![[r#"
            config.yml:8: instances[0].image: `image` does not apply to bare instances (only to docker, aws)
            config.yml:8: instances[0].type: `type` does not apply to bare instances (only to aws)"#]],
    );
}

#[test]
fn missing_name_and_node() {
    check(
        &with_base("- {role: [primary]}\n- {Name: two}\n"),
        expect![[r#"
        config.yml:8: instances[0]: missing required key `Name`
        config.yml:9: instances[1]: missing required key `node`"#]],
    );
}

#[test]
fn node_must_be_a_positive_integer() {
    check(
        &with_base("- {Name: one, node: 0}\n- {Name: two, node: two}\n"),
        expect![[r#"
        config.yml:8: instances[0].node: node numbers start at 1 (repmgr needs a positive node id)
        config.yml:9: instances[1].node: expected an integer, found a string"#]],
    );
}

#[test]
fn duplicate_name_and_duplicate_node() {
    check(
        &with_base("- {Name: one-a, node: 1}\n- {Name: one-a, node: 1}\n"),
        expect![[r#"
        config.yml:9: instances[1].Name: duplicate instance name `one-a` (first used at line 8)
        config.yml:9: instances[1].node: duplicate node number 1 (also used by `one-a`)"#]],
    );
}

#[test]
fn invalid_instance_names() {
    check(
        &with_base("- {Name: -x, node: 1}\n- {Name: 'a b', node: 2}\n- {Name: x, node: 3}\n"),
        expect![[r#"
            config.yml:8: instances[0].Name: `-x` is not a valid host name; use lowercase letters, digits, `-` and `.`, at least two characters, starting and ending with a letter or digit (RFC 1123)
            config.yml:9: instances[1].Name: `a b` is not a valid host name; use lowercase letters, digits, `-` and `.`, at least two characters, starting and ending with a letter or digit (RFC 1123); did you mean `a-b`?
            config.yml:10: instances[2].Name: `x` is not a valid host name; use lowercase letters, digits, `-` and `.`, at least two characters, starting and ending with a letter or digit (RFC 1123)"#]],
    );
    // Names are refused, not renamed: the host would otherwise not be called what
    // config.yml says. A reference written the old way points at the name to use.
    check(
        &with_base(
            "- {Name: ULB_host, node: 1, role: [primary]}\n\
             - {Name: vub, node: 2, role: [replica], upstream: ULB_host}\n",
        ),
        expect![
            "config.yml:8: instances[0].Name: `ULB_host` is not a valid host name; use lowercase letters, digits, `-` and `.`, at least two characters, starting and ending with a letter or digit (RFC 1123); did you mean `ulb-host`?"
        ],
    );
    check(
        &with_base(
            "- {Name: ulb-host, node: 1, role: [primary]}\n\
             - {Name: vub, node: 2, role: [replica], upstream: ULB_host}\n",
        ),
        expect![[r#"
            config.yml:9: instances[1].upstream: upstream `ULB_host` is not an instance of this cluster; did you mean `ulb-host`?"#]],
    );
    // Docker and bare accept dotted names; aws does not.
    check(
        &with_base("- {Name: db1.example.com, node: 1}\n"),
        expect!["ok"],
    );
    check(
        &with_base("- {Name: db1.example.com, node: 1, platform: aws}\n"),
        expect![[r#"
            config.yml:8: instances[0].Name: `db1.example.com` is not a valid host name; use lowercase letters, digits and `-`, at least two characters, starting and ending with a letter or digit (RFC 1123); did you mean `db1`?"#]],
    );
}

#[test]
fn wrong_types_in_instances() {
    check(
        &with_base(
            "- {Name: one, node: 1, role: {a: b}, provision_only: 'yes', vars: [x], upstream: [a]}\n",
        ),
        expect![[r#"
            config.yml:8: instances[0].provision_only: expected true or false, found a string
            config.yml:8: instances[0].role: expected a list of roles or a comma-separated string, found a mapping
            config.yml:8: instances[0].upstream: expected a string, found a list
            config.yml:8: instances[0].vars: expected a mapping, found a list"#]],
    );
}

#[test]
fn unknown_and_unsupported_roles() {
    check(
        &with_base("- {Name: one, node: 1, role: 'primary, replicaa, pem-server, dba'}\n"),
        expect![[r#"
        config.yml:8: instances[0].role: unknown role `replicaa`; did you mean `replica`?
        config.yml:8: instances[0].role: role `pem-server` is a TPA role that tpa does not support yet; remove it
        config.yml:8: instances[0].role: unknown role `dba`"#]],
    );
}

#[test]
fn unknown_platform() {
    check(
        &with_base("- {Name: one, node: 1, platform: vmware}\n"),
        expect![
            "config.yml:8: instances[0].platform: unknown platform `vmware`; use docker, bare or aws"
        ],
    );
}

#[test]
fn docker_instance_needs_image() {
    check(
        &with_base(ONE).replace("  image: tpa/debian\n", ""),
        expect![
            "config.yml:7: instances[0]: missing required key `image` (docker instances need an image, e.g. tpa/debian:12)"
        ],
    );
}

#[test]
fn docker_options_are_read_into_what_docker_takes() {
    let c = parse_ok(&with_base(
        "\
- Name: one
  node: 1
  role: [primary]
  volumes: [/sys/fs/cgroup:/sys/fs/cgroup:ro, /opt/postgres, /srv/b:/var/lib/barman:rw]
  memory: 1g
  shm_size: 256m
  restart_policy: on-failure:3
  published_ports: ['127.0.0.1:15432:5432']
  exposed_ports: [5432]
  devices: [/dev/fuse]
  env: {PGTZ: UTC}
",
    ));
    let one = &c.instances[0];
    assert_eq!(one.volumes.len(), 3);
    assert_eq!(one.volumes[1].source, None);
    assert_eq!(
        one.volumes[2].bind().as_deref(),
        Some("/srv/b:/var/lib/barman:rw")
    );
    assert_eq!(one.docker.memory, Some(1 << 30));
    assert_eq!(one.docker.shm_size, Some(256 << 20));
    assert_eq!(
        one.docker.restart_policy,
        Some(docker::RestartPolicy::OnFailure(3))
    );
    assert_eq!(one.docker.published_ports[0].host_port, Some(15432));
    assert_eq!(one.docker.exposed_ports, Some(vec!["5432/tcp".to_string()]));
    assert_eq!(one.docker.devices[0].container, "/dev/fuse");
    assert_eq!(one.docker.env["PGTZ"], "UTC");
}

#[test]
fn hostile_docker_options_are_refused_at_their_line() {
    check(
        &with_base(
            "\
- Name: one
  node: 1
  volumes: ['/srv/../etc:/x', '/a:/b:rw;reboot', 'backup dir:/b']
  memory: 1 gigabyte
  shm_size: 99999999t
  restart_policy: sometimes
  published_ports: ['1000-1010:5432', 'x:1:2']
  devices: [/etc/shadow]
  env: {container: lxc, 'A-B': x, PGTZ: \"a\\nb\"}
  sysctls: {'net..x': 1}
  docker_cap_add: ['ALL; reboot']
",
        ),
        expect![[r#"
            config.yml:10: instances[0].volumes[0]: the source `/srv/../etc` must be an absolute path without `.` or `..`
            config.yml:10: instances[0].volumes[1]: `rw;reboot` is not a volume option; use some of ro, rw, z, Z, shared, rshared, slave, rslave, private, rprivate, nocopy, consistent, cached, delegated
            config.yml:10: instances[0].volumes[2]: `backup dir` is neither an absolute host path nor a volume name (letters, digits, `_ . -`)
            config.yml:11: instances[0].memory: `1 gigabyte` is not a size; write a number with an optional unit b, k, m, g or t (powers of 1024), such as 512m or 2g
            config.yml:12: instances[0].shm_size: `99999999t` is out of range: give between 1 byte and 1024 TiB
            config.yml:13: instances[0].restart_policy: `sometimes` is not a restart policy; use no, always, unless-stopped or on-failure[:N]
            config.yml:14: instances[0].published_ports[0]: `1000-1010` is not a port number (1 to 65535); ranges are not supported, list each port
            config.yml:14: instances[0].published_ports[1]: `x` is not an IP address
            config.yml:15: instances[0].devices[0]: the device `/etc/shadow` must be a path under /dev
            config.yml:16: instances[0].env.A-B: `A-B` is not an environment variable name; use letters, digits and `_`, not starting with a digit
            config.yml:16: instances[0].env.PGTZ: "a\nb" contains the control character '\n'; remove it
            config.yml:16: instances[0].env.container: `container` is set by tpa (systemd in the container needs container=docker); remove it
            config.yml:17: instances[0].sysctls.net..x: `net..x` is not a sysctl name; use dotted names such as net.ipv4.ip_forward
            config.yml:18: instances[0].docker_cap_add[0]: `ALL; reboot` is not a capability name; use names such as NET_ADMIN or SYS_PTRACE"#]],
    );
}

#[test]
fn bare_instance_needs_an_address() {
    check(
        &with_base("- {Name: one, node: 1, platform: bare}\n"),
        expect![
            "config.yml:8: instances[0]: a bare instance needs `ip_address` (or `public_ip`/`private_ip`) to be reached at"
        ],
    );
}

#[test]
fn invalid_ip_address() {
    check(
        &with_base(
            "- {Name: one, node: 1, platform: bare, ip_address: 10.0.0.256, public_ip: 1.2.3}\n",
        ),
        expect![[r#"
            config.yml:8: instances[0].ip_address: `10.0.0.256` is not an IP address
            config.yml:8: instances[0].public_ip: `1.2.3` is not an IP address"#]],
    );
}

#[test]
fn name_and_node_cannot_have_defaults() {
    check(
        &with_base(ONE).replace("  platform: docker\n", "  platform: docker\n  node: 3\n"),
        expect![
            "config.yml:6: instance_defaults.node: `node` cannot have a default; set it on each instance"
        ],
    );
}

#[test]
fn bare_volumes_are_filesystems_to_mount() {
    let c = parse_ok(&with_base(
        "- {Name: one, node: 1, platform: bare, ip_address: 10.0.0.1, volumes: [\
         {device_name: /dev/vdc, vars: {mountpoint: /srv/scratch, fstype: xfs, fsopts: '-m crc=1', mountopts: 'defaults,nofail'}}, \
         {device_name: /dev/vdb, vars: {volume_for: postgres_data}}, \
         {device_name: /dev/vdd}]}\n",
    ));
    let mounts: Vec<_> = c.instances[0]
        .mounts
        .iter()
        .map(|m| {
            (
                m.device.as_str(),
                m.mountpoint.as_str(),
                m.fstype.as_str(),
                m.fsopts.join(" "),
                m.mountopts.as_str(),
            )
        })
        .collect();
    // Sorted by mountpoint; the volume without vars is only attached.
    assert_eq!(
        mounts,
        vec![
            (
                "/dev/vdb",
                "/opt/postgres",
                "ext4",
                String::new(),
                "defaults,noatime"
            ),
            (
                "/dev/vdc",
                "/srv/scratch",
                "xfs",
                "-m crc=1".into(),
                "defaults,nofail"
            ),
        ]
    );
}

#[test]
fn volume_vars_refuse_hostile_and_unsupported_values() {
    check(
        &with_base(
            "- Name: one\n  node: 1\n  platform: bare\n  ip_address: 10.0.0.1\n  volumes:\n\
             \x20 - {device_name: '/dev/../etc/passwd', vars: {volume_for: postgres_data}}\n\
             \x20 - {device_name: /dev/vdb, volume_size: 10, vars: {mountpoint: /etc}}\n\
             \x20 - {device_name: /dev/vdc, vars: {mountpoint: \"/srv/a b\", fstype: zfs, fsopts: '-O x;reboot', mountopts: \"defaults\\n/dev/sda / ext4\"}}\n\
             \x20 - {device_name: /dev/vdd, vars: {volume_for: postgres_wal, encryption: luks, color: blue}}\n\
             \x20 - {device_name: /dev/vde, vars: {volume_for: barman_data}}\n\
             \x20 - {device_name: /dev/vdf, vars: {mountpoint: /var/lib/barman}}\n",
        ),
        expect![[r#"
            config.yml:12: instances[0].volumes: volumes /dev/vde and /dev/vdf are both mounted at /var/lib/barman; give each its own mountpoint
            config.yml:13: instances[0].volumes[0].device_name: `/dev/../etc/passwd` is not a device path; use the disk's path under /dev, such as /dev/vdb or /dev/disk/by-id/…
            config.yml:14: instances[0].volumes[1].vars.mountpoint: `/etc` is a system directory; a volume mounted there would hide the host's own files: use a directory of its own, such as /opt/postgres or /srv/data
            config.yml:14: instances[0].volumes[1].volume_size: `volume_size` is not a key of a bare instance's volume: a bare machine's disks exist already, so only `device_name` and `vars` apply; remove it
            config.yml:15: instances[0].volumes[2].vars.fsopts: "x;reboot" contains ';'; filesystem and mount options may hold only letters, digits and `- _ = , . : /`
            config.yml:15: instances[0].volumes[2].vars.fstype: unknown fstype `zfs`
            config.yml:15: instances[0].volumes[2].vars.mountopts: "defaults\n/dev/sda / ext4" contains '\n'; filesystem and mount options may hold only letters, digits and `- _ = , . : /`
            config.yml:15: instances[0].volumes[2].vars.mountpoint: "/srv/a b" contains ' '; a path tpa writes into files and commands may hold only letters, digits and `/ _ - . +` (no spaces, quotes or shell characters); use an absolute path such as /opt/postgres/data
            config.yml:16: instances[0].volumes[3].vars.color: unknown volume var `color`
            config.yml:16: instances[0].volumes[3].vars.encryption: `encryption` is a TPA setting that tpa does not support yet; remove it
            config.yml:16: instances[0].volumes[3].vars.volume_for: `volume_for: postgres_wal` is a TPA setting that tpa does not support yet; use postgres_data (the WAL stays in the data directory)"#]],
    );
}

#[test]
fn a_data_directory_off_its_volume_is_refused() {
    check(
        &with_base(
            "- {Name: one, node: 1, platform: bare, ip_address: 10.0.0.1, \
             volumes: [{device_name: /dev/vdb, vars: {volume_for: postgres_data}}], \
             vars: {postgres_data_dir: /srv/pgdata}}\n",
        ),
        expect![
            "config.yml:8: instances[0].vars.postgres_data_dir: the data directory /srv/pgdata is not on the postgres_data volume (/dev/vdb, mounted at /opt/postgres): put it beneath the mountpoint, e.g. /opt/postgres/data, or leave postgres_data_dir out"
        ],
    );
    check(
        "cluster_name: cloud\ncluster_vars: {postgres_version: '15'}\n\
         instances:\n- {Name: one, node: 1, platform: aws, region: eu-west-1, type: t3.micro, \
         subnet: 10.33.0.0/28, volumes: [{device_name: root, volume_size: 16, vars: {volume_for: postgres_data}}]}\n",
        expect![
            "config.yml:4: instances[0].volumes[0]: the root volume holds the host's own filesystem; mount a volume of its own (e.g. /dev/sdf) instead"
        ],
    );
}

// === topology ===

#[test]
fn upstream_that_does_not_exist() {
    check(
        &with_base(&format!(
            "{ONE}- {{Name: two, node: 2, role: [replica], upstream: onee}}\n"
        )),
        expect![
            "config.yml:9: instances[1].upstream: upstream `onee` is not an instance of this cluster; did you mean `one`?"
        ],
    );
}

#[test]
fn upstream_cycle_is_named() {
    check(
        &with_base(
            "- {Name: one, node: 1, role: [primary]}\n\
             - {Name: dd, node: 2, role: [replica], upstream: cc}\n\
             - {Name: bb, node: 3, role: [replica], upstream: aa}\n\
             - {Name: cc, node: 4, role: [replica], upstream: bb}\n\
             - {Name: aa, node: 5, role: [replica], upstream: cc}\n",
        ),
        expect![
            "config.yml:10: instances[2].upstream: upstream chain forms a cycle: bb -> aa -> cc -> bb; one instance in it must be the primary"
        ],
    );
}

#[test]
fn upstream_must_be_primary_or_replica() {
    check(
        &with_base(&format!(
            "{ONE}- {{Name: bar, node: 2, role: [barman]}}\n- {{Name: two, node: 3, role: [replica], upstream: bar}}\n"
        )),
        expect![
            "config.yml:10: instances[2].upstream: upstream `bar` is not a Postgres primary or replica"
        ],
    );
}

#[test]
fn replica_and_witness_need_upstream() {
    check(
        &with_base(&format!(
            "{ONE}- {{Name: two, node: 2, role: [replica]}}\n- {{Name: three, node: 3, role: [witness]}}\n"
        )),
        expect![[r#"
            config.yml:9: instances[1].role: a replica needs `upstream: <instance>` to say which instance it follows
            config.yml:10: instances[2].role: a witness needs `upstream: <instance>` to say which instance it follows"#]],
    );
}

#[test]
fn more_than_one_primary() {
    check(
        &with_base(&format!("{ONE}- {{Name: two, node: 2, role: [primary]}}\n")),
        expect![
            "config.yml:9: instances[1].role: more than one primary: `one` is already the primary; make this one a replica with `upstream: one`"
        ],
    );
}

#[test]
fn backup_must_exist_and_be_barman() {
    check(
        &with_base(
            "- {Name: one, node: 1, role: [primary], backup: [two, nobody]}\n\
             - {Name: two, node: 2, role: [replica], upstream: one, backup: 7}\n",
        ),
        expect![[r#"
            config.yml:8: instances[0].backup: backup `two` does not have the `barman` role; add it there or back up elsewhere
            config.yml:8: instances[0].backup: backup `nobody` is not an instance of this cluster
            config.yml:9: instances[1].backup: backup `7` is not an instance of this cluster"#]],
    );
}

#[test]
fn location_must_be_declared() {
    check(
        &format!(
            "{}locations:\n- Name: brussels\n- Name: brussels\n- {{}}\n- {{Name: x, node: 1}}\n",
            with_base(
                "- {Name: one, node: 1, location: brussel}\n- {Name: two, node: 2, location: ghent}\n"
            )
        ),
        expect![[r#"
            config.yml:8: instances[0].location: location `brussel` is not declared under `locations`; did you mean `brussels`?
            config.yml:9: instances[1].location: location `ghent` is not declared under `locations`; add `- Name: ghent` there
            config.yml:12: locations[1].Name: duplicate location `brussels`
            config.yml:13: locations[2]: missing required key `Name`
            config.yml:14: locations[3].node: `node` cannot be set for a whole location; set it on each instance"#]],
    );
}

#[test]
fn docker_ip_outside_network() {
    let networks = "docker_networks:\n- name: t\n  ipam_config:\n  - subnet: 10.33.0.0/28\n";
    check(
        &format!(
            "{}{networks}",
            with_base("- {Name: one, node: 1, ip_address: 10.33.0.20}\n")
        ),
        expect![
            "config.yml:8: instances[0].ip_address: 10.33.0.20 is outside the docker_networks subnets (10.33.0.0/28)"
        ],
    );
    check(
        &with_base("- {Name: one, node: 1, ip_address: 10.33.0.2}\n"),
        expect![
            "config.yml:8: instances[0].ip_address: a docker `ip_address` needs a `docker_networks` subnet that contains it; declare one, or remove ip_address to let tpa pick addresses"
        ],
    );
}

#[test]
fn docker_network_entries() {
    check(
        &format!(
            "{}docker_networks:\n- ipam_config: [{{subnet: 10.33.0.1/28}}, {{subnet: x}}, {{gateway: 10.0.0.1}}]\n  enable_ipv6: 'no'\n  labelz: {{}}\n",
            with_base(ONE)
        ),
        expect![[r#"
            config.yml:10: docker_networks[0]: missing required key `name`
            config.yml:10: docker_networks[0].ipam_config[0].subnet: `10.33.0.1/28` has host bits set; did you mean `10.33.0.0/28`?
            config.yml:10: docker_networks[0].ipam_config[1].subnet: `x` is not a subnet in CIDR form (e.g. 10.33.0.0/28)
            config.yml:10: docker_networks[0].ipam_config[2]: missing required key `subnet`
            config.yml:10: docker_networks[0].ipam_config[2].gateway: `gateway` is a TPA setting that tpa does not support yet; remove it
            config.yml:11: docker_networks[0].enable_ipv6: expected true or false, found a string
            config.yml:12: docker_networks[0].labelz: unknown docker_networks key `labelz`; did you mean `labels`?"#]],
    );
}

// === variables ===

#[test]
fn unknown_variable_suggests_closest() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  postgres_verison: 15\n  zzz_qqq: 1\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.postgres_verison: unknown variable `postgres_verison`; did you mean `postgres_version`?
            config.yml:5: cluster_vars.zzz_qqq: unknown variable `zzz_qqq`"#]],
    );
}

#[test]
fn tpa_variable_not_supported_yet() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  synchronous_standby_names: x\n  repmgr_package_version: '5.*'\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.synchronous_standby_names: `synchronous_standby_names` is a TPA setting that tpa does not support yet; remove it
            config.yml:5: cluster_vars.repmgr_package_version: `repmgr_package_version` is a TPA setting that tpa does not support yet; remove it"#]],
    );
}

#[test]
fn repmgr_variables_out_of_range_are_refused_by_name() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  repmgr_priority: 5000\n  repmgr_failover: \"auto'; x\"\n  \
             repmgr_reconnect_interval: 0\n  repmgr_location: ghent\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.repmgr_priority: must be from 0 to 1000 (got 5000)
            config.yml:5: cluster_vars.repmgr_failover: unknown repmgr_failover `auto'; x`; use `automatic` or `manual`
            config.yml:6: cluster_vars.repmgr_reconnect_interval: must be from 1 to 600 (got 0)
            config.yml:7: cluster_vars.repmgr_location: `repmgr_location` is a TPA setting that tpa does not support yet; remove it"#]],
    );
}

#[test]
fn shared_preload_libraries_is_rejected() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  shared_preload_libraries: pg_stat_statements\n",
        ),
        expect![
            "config.yml:4: cluster_vars.shared_preload_libraries: do not set `shared_preload_libraries` directly; list the libraries in `preload_extensions` (or, if unavoidable, under `postgres_conf_settings`)"
        ],
    );
}

#[test]
fn unsupported_values_of_supported_variables() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: 'fifteen'\n  postgres_flavour: epas\n  failover_manager: efm\n  edb_repositories: [enterprise]\n  patroni_package_flavour: edb\n",
        ),
        expect![[r#"
            config.yml:3: cluster_vars.postgres_version: `fifteen` is not a Postgres major version (e.g. '15')
            config.yml:4: cluster_vars.postgres_flavour: `postgres_flavour: epas` is a TPA setting that tpa does not support yet; use `postgresql`
            config.yml:5: cluster_vars.failover_manager: `failover_manager: efm` is a TPA setting that tpa does not support yet; use `repmgr` or `patroni`
            config.yml:6: cluster_vars.edb_repositories: EDB repositories are a TPA setting that tpa does not support yet; use `edb_repositories: []`
            config.yml:7: cluster_vars.patroni_package_flavour: `patroni_package_flavour: edb` is a TPA setting that tpa does not support yet; use `community`"#]],
    );
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: 15\n  postgres_flavour: postgres\n  failover_manager: pacemaker\n  patroni_package_flavour: x\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.postgres_flavour: unknown postgres_flavour `postgres`; use `postgresql`
            config.yml:5: cluster_vars.failover_manager: unknown failover_manager `pacemaker`; use `repmgr` or `patroni`
            config.yml:6: cluster_vars.patroni_package_flavour: unknown patroni_package_flavour `x`; use `community`"#]],
    );
}

#[test]
fn wrong_values_of_typed_variables() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  postgres_port: 70000\n  max_connections: 0\n  shared_buffers_ratio: 2\n  postgres_data_dir: data\n  use_local_repo_only: 'yes'\n  postgres_conf_settings: {work_mem: [1]}\n  postgres_hba_settings: line\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.postgres_port: 70000 is out of range (must be 0 to 65535)
            config.yml:5: cluster_vars.max_connections: max_connections must be at least 1
            config.yml:6: cluster_vars.shared_buffers_ratio: 2 is not a fraction of RAM; use a number between 0 and 1, e.g. 0.25
            config.yml:7: cluster_vars.postgres_data_dir: `data` must be an absolute path; use an absolute path such as /opt/postgres/data
            config.yml:8: cluster_vars.use_local_repo_only: expected true or false, found a string
            config.yml:9: cluster_vars.postgres_conf_settings.work_mem: expected a string, found a list
            config.yml:10: cluster_vars.postgres_hba_settings: expected a list, found a string"#]],
    );
}

#[test]
fn postgres_users_and_databases_entries() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  postgres_users:\n  - {generate_password: false, pasword_encryption: md5}\n  - {username: app, password: secret, conn_limit: -5, password_encryption: sha1}\n  postgres_databases:\n  - {owner: app, tablespace: x}\n  - {name: app, extensions: [{schema: s}, {name: postgis, state: present}]}\n",
        ),
        expect![[r#"
            config.yml:5: cluster_vars.postgres_users[0]: missing required key `username`
            config.yml:5: cluster_vars.postgres_users[0].pasword_encryption: unknown postgres_users key `pasword_encryption`; did you mean `password_encryption`?
            config.yml:6: cluster_vars.postgres_users[1].conn_limit: -5 is not a connection limit; use -1 (no limit) or more
            config.yml:6: cluster_vars.postgres_users[1].password: passwords do not belong in config.yml; they are generated and stored encrypted in the cluster directory
            config.yml:6: cluster_vars.postgres_users[1].password_encryption: unknown password_encryption `sha1`; use `scram-sha-256` or `md5`
            config.yml:8: cluster_vars.postgres_databases[0]: missing required key `name`
            config.yml:8: cluster_vars.postgres_databases[0].tablespace: `tablespace` is a TPA setting that tpa does not support yet; remove it
            config.yml:9: cluster_vars.postgres_databases[1].extensions[0]: missing required key `name`
            config.yml:9: cluster_vars.postgres_databases[1].extensions[0].schema: `schema` is a TPA setting that tpa does not support yet; remove it
            config.yml:9: cluster_vars.postgres_databases[1].extensions[1].state: `state` is a TPA setting that tpa does not support yet; remove it"#]],
    );
}

#[test]
fn host_var_error_in_instance_defaults_reported_once() {
    check(
        &with_base(&format!(
            "{ONE}- {{Name: two, node: 2, role: [replica], upstream: one}}\n"
        ))
        .replace(
            "  image: tpa/debian\n",
            "  image: tpa/debian\n  vars:\n    ansible_usr: root\n",
        ),
        expect![
            "config.yml:8: instance_defaults.vars.ansible_usr: unknown variable `ansible_usr`; did you mean `ansible_user`?"
        ],
    );
}

#[test]
fn all_errors_are_reported_together_in_file_order() {
    check(
        "\
cluster_name: bad name
cluster_vars:
  postgres_version: '15'
  failover_manager: efm
instance_defaults:
  platform: docker
instances:
- Name: one
  node: 1
  role: [primary]
  upstream: nobody
- Name: two
  node: 1
  role: [replica]
compliance: cis
",
        expect![[r#"
            config.yml:1: cluster_name: `bad name` is not a valid cluster name; use only letters, digits, `_` and `-`
            config.yml:4: cluster_vars.failover_manager: `failover_manager: efm` is a TPA setting that tpa does not support yet; use `repmgr` or `patroni`
            config.yml:8: instances[0]: missing required key `image` (docker instances need an image, e.g. tpa/debian:12)
            config.yml:11: instances[0].upstream: upstream `nobody` is not an instance of this cluster
            config.yml:12: instances[1]: missing required key `image` (docker instances need an image, e.g. tpa/debian:12)
            config.yml:13: instances[1].node: duplicate node number 1 (also used by `one`)
            config.yml:14: instances[1].role: a replica needs `upstream: <instance>` to say which instance it follows
            config.yml:15: compliance: `compliance` is a TPA setting that tpa does not support yet; remove it"#]],
    );
}

// === defaults and normalisation ===

const MERGE: &str = "\
cluster_name: t
cluster_vars:
  postgres_version: '15'
  postgres_port: 5433
  max_connections: 100
locations:
- Name: a
  image: tpa/location-a
- Name: b
instance_defaults:
  platform: docker
  image: tpa/debian
  tags: {team: db, env: dev}
  vars:
    ansible_user: admin
    max_connections: 200
instances:
- Name: one-a
  node: 1
  location: a
  role: primary, pgbouncer
  backup: bar
  tags: {env: prod}
  vars:
    max_connections: 300
- Name: two
  node: 2
  location: b
  role: [replica]
  upstream: one-a
  image: tpa/own
- Name: three
  node: 3
  location: a
  image: tpa/own
  role: [replica]
  upstream: one-a
  backup: [bar]
- Name: bar
  node: 4
  role: [barman, log-server, witness]
  upstream: one-a
  tags: {Name: ignored}
";

#[test]
fn names_and_references_as_written() {
    let c = parse_ok(MERGE);
    let names: Vec<&str> = c.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["one-a", "two", "three", "bar"]);
    assert_eq!(
        c.instance("three").and_then(|i| i.upstream.as_deref()),
        Some("one-a")
    );
}

#[test]
fn roles_from_comma_string_and_implicit_postgres() {
    let c = parse_ok(MERGE);
    let roles = |n: &str| c.instance(n).map(|i| i.roles.clone()).unwrap_or_default();
    assert_eq!(
        roles("one-a"),
        [Role::Primary, Role::Pgbouncer, Role::Postgres]
    );
    assert_eq!(roles("two"), [Role::Replica, Role::Postgres]);
    assert_eq!(
        roles("bar"),
        [Role::Barman, Role::LogServer, Role::Witness, Role::Postgres]
    );
    assert!(
        c.instance("bar")
            .is_some_and(|i| i.has_role(Role::Postgres))
    );
}

#[test]
fn backup_string_or_list() {
    let c = parse_ok(MERGE);
    assert_eq!(
        c.instance("one-a").map(|i| i.backup.clone()),
        Some(vec!["bar".to_string()])
    );
    assert_eq!(
        c.instance("three").map(|i| i.backup.clone()),
        Some(vec!["bar".to_string()])
    );
    assert_eq!(c.instance("two").map(|i| i.backup.len()), Some(0));
}

#[test]
fn instance_wins_over_location_over_defaults() {
    let c = parse_ok(MERGE);
    let image = |n: &str| c.instance(n).and_then(|i| i.image.clone());
    assert_eq!(image("one-a").as_deref(), Some("tpa/location-a"));
    assert_eq!(image("two").as_deref(), Some("tpa/own"));
    assert_eq!(image("three").as_deref(), Some("tpa/own"));
    assert_eq!(image("bar").as_deref(), Some("tpa/debian"));
    assert!(c.instances.iter().all(|i| i.platform == Platform::Docker));
}

#[test]
fn mappings_merge_one_level_deep() {
    let c = parse_ok(MERGE);
    let one = c.instance("one-a").expect("one-a");
    let tags: Vec<(&str, &str)> = one
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(tags, [("env", "prod"), ("team", "db")]);
    // A `Name` inside tags is lifted out (TPA), but the instance's own Name wins.
    let bar = c.instance("bar").expect("bar");
    assert!(!bar.tags.contains_key("Name"));
    assert_eq!(bar.tags.get("team").map(String::as_str), Some("db"));
}

#[test]
fn host_vars_are_cluster_vars_overlaid_by_instance_vars() {
    let c = parse_ok(MERGE);
    let one = c.instance("one-a").expect("one-a");
    let two = c.instance("two").expect("two");
    assert_eq!(one.vars.max_connections, Some(300)); // instance vars
    assert_eq!(two.vars.max_connections, Some(200)); // instance_defaults vars
    assert_eq!(c.vars.max_connections, Some(100)); // cluster_vars
    assert_eq!(two.vars.postgres_port(), 5433); // cluster_vars reaches hosts
    assert_eq!(two.vars.postgres_version.as_deref(), Some("15"));
    assert_eq!(two.ansible_user(), "admin");
}

#[test]
fn defaults_when_not_set() {
    let c = parse_ok(
        "cluster_name: t\ncluster_vars: {postgres_version: 15}\ninstances:\n- {Name: one, node: 1, role: [primary]}\n",
    );
    let one = &c.instances[0];
    assert_eq!(one.platform, Platform::Aws, "TPA's compat default platform");
    assert_eq!(one.ansible_user(), "root");
    assert_eq!(one.vars.postgres_port(), 5432);
    assert_eq!(one.vars.postgres_data_dir(), "/opt/postgres/data");
    assert_eq!(c.architecture, "M1");
    assert_eq!(c.ssh_port, 22);
    assert_eq!(c.postgres_version().as_deref(), Some("15"));
    assert!(
        c.vars
            .postgres_extensions()
            .contains(&"pg_stat_statements".to_string())
    );
}

#[test]
fn typed_variables_are_read() {
    let c = parse_ok(
        &with_base("- {Name: one, node: 1, role: [primary, etcd]}\n").replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'
  failover_manager: patroni
  etcd_single_member: true
  postgres_conf_settings: {work_mem: 64MB, jit: false, max_locks_per_transaction: 128}
  postgres_users:
  - username: app
    role_attrs: [CREATEDB]
  postgres_databases:
  - name: app
    owner: app
    extensions: [{name: pgcrypto}]
  extra_postgres_extensions: [pgcrypto]
  shared_buffers_ratio: 0.4
",
        ),
    );
    let v = &c.vars;
    assert_eq!(v.failover_manager, Some(FailoverManager::Patroni));
    assert_eq!(
        v.postgres_conf_settings.get("jit").map(String::as_str),
        Some("off")
    );
    assert_eq!(
        v.postgres_conf_settings
            .get("max_locks_per_transaction")
            .map(String::as_str),
        Some("128")
    );
    assert_eq!(v.postgres_users.len(), 1);
    assert!(v.postgres_users[0].generate_password);
    assert_eq!(v.postgres_databases[0].extensions, ["pgcrypto"]);
    assert_eq!(v.shared_buffers_ratio(), 0.4);
    assert!(v.postgres_extensions().ends_with(&["pgcrypto".to_string()]));
}

#[test]
fn registries_do_not_overlap() {
    for (name, _) in vars::SUPPORTED {
        assert!(
            !vars::NOT_YET_SUPPORTED.contains(name),
            "{name} is in both var lists"
        );
    }
    for name in keys::TOP_LEVEL {
        assert!(
            !keys::TOP_LEVEL_NOT_YET.contains(name),
            "{name} is in both top-level lists"
        );
    }
}

#[test]
fn barman_vars_are_honoured_or_refused_by_name() {
    for (name, _) in barman::REFUSED {
        assert!(
            !vars::SUPPORTED.iter().any(|(n, _)| n == name)
                && !vars::NOT_YET_SUPPORTED.contains(name),
            "{name} is refused and in another var list"
        );
    }
    let vars = |v: &str| {
        format!(
            "{BASE}- Name: one\n  node: 1\n  role: [primary]\n  backup: bar\n  vars:\n{v}\
             - {{Name: bar, node: 2, role: [barman]}}\n"
        )
    };
    let c = parse_ok(&vars(
        "    barman_backup_method: rsync\n    barman_parallel_jobs: 4\n    \
         barman_backup_options: concurrent_backup,external_configuration\n    \
         barman_network_compression: true\n    barman_archiver: true\n",
    ));
    let b = &c.instances[0].vars.barman;
    assert_eq!(
        (b.backup_method(), b.reuse_backup(), b.parallel_jobs()),
        (BackupMethod::Rsync, ReuseBackup::Link, 4)
    );
    assert!(b.network_compression() && b.archiver());
    // YAML 1.1's `off` is a boolean; TPA configs write it bare.
    let c = parse_ok(&vars(
        "    barman_backup_method: rsync\n    barman_reuse_backup: off\n",
    ));
    assert_eq!(c.instances[0].vars.barman.reuse_backup(), ReuseBackup::Off);
    let c = parse_ok(&vars("    barman_archiver: true\n"));
    let b = &c.instances[0].vars.barman;
    assert_eq!(
        (b.backup_method(), b.reuse_backup(), b.archiver()),
        (BackupMethod::Postgres, ReuseBackup::Off, true)
    );

    check(
        &vars(
            "    barman_backup_method: 'rsync\\nbackup_method = postgres'\n    \
             barman_parallel_jobs: 100000000000\n    barman_reuse_backup: hardlink\n    \
             barman_backup_options: \"concurrent_backup\\nssh_command = x\"\n    \
             barman_compression: \"gzip'\"\n    barman_minimum_redundancy: 4000000\n    \
             barman_basebackup_retry_sleep: -1\n    barman_archiver: 'yes please'\n",
        ),
        expect![[r#"
            config.yml:13: instances[0].vars.barman_backup_method: `rsync\nbackup_method = postgres` is not a Barman backup method; use `postgres` or `rsync`
            config.yml:14: instances[0].vars.barman_parallel_jobs: 100000000000 is out of range (must be 0 to 4294967295)
            config.yml:15: instances[0].vars.barman_reuse_backup: `hardlink` is not a Barman reuse_backup mode; use `off`, `copy` or `link`
            config.yml:16: instances[0].vars.barman_backup_options: the value contains the control character '\n'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:17: instances[0].vars.barman_compression: `gzip'` is not a compression tpa supports for Barman; use gzip, pygzip or pybzip2
            config.yml:18: instances[0].vars.barman_minimum_redundancy: must be from 0 to 100 (got 4000000)
            config.yml:19: instances[0].vars.barman_basebackup_retry_sleep: -1 is out of range (must be 0 to 4294967295)
            config.yml:20: instances[0].vars.barman_archiver: expected true or false, found a string"#]],
    );
    // rsync's settings in cluster_vars, the method on the instance.
    let c = parse_ok(
        "cluster_name: t\ncluster_vars:\n  postgres_version: '15'\n  barman_reuse_backup: copy\n\
         instance_defaults:\n  platform: docker\n  image: tpa/debian\ninstances:\n\
         - Name: one\n  node: 1\n  role: [primary]\n  backup: bar\n  vars:\n    \
         barman_backup_method: rsync\n- {Name: bar, node: 2, role: [barman]}\n",
    );
    assert_eq!(c.instances[0].vars.barman.reuse_backup(), ReuseBackup::Copy);
    // rsync-only settings with the postgres method.
    check(
        &vars(
            "    barman_reuse_backup: link\n    barman_parallel_jobs: 2\n    \
             barman_network_compression: true\n",
        ),
        expect![[r#"
            config.yml:13: instances[0].vars.barman_reuse_backup: `barman_reuse_backup` applies to rsync backups only, and this instance's backups use `barman_backup_method: postgres` (pg_basebackup); set `barman_backup_method: rsync` or remove `barman_reuse_backup`
            config.yml:14: instances[0].vars.barman_parallel_jobs: `barman_parallel_jobs` applies to rsync backups only, and this instance's backups use `barman_backup_method: postgres` (pg_basebackup); set `barman_backup_method: rsync` or remove `barman_parallel_jobs`
            config.yml:15: instances[0].vars.barman_network_compression: `barman_network_compression` applies to rsync backups only, and this instance's backups use `barman_backup_method: postgres` (pg_basebackup); set `barman_backup_method: rsync` or remove `barman_network_compression`"#]],
    );
    check(
        &vars(
            "    backup_name: ulb-backups\n    barman_post_backup_script: /usr/local/bin/x\n    \
             barman_shared: true\n    barman_home: /srv/barman\n",
        ),
        expect![[r#"
            config.yml:13: instances[0].vars.backup_name: tpa names the Barman server after the instance whose `backup:` names the Barman host (the catalogue keeps that name when the primary changes); remove `backup_name`
            config.yml:14: instances[0].vars.barman_post_backup_script: tpa does not install Barman hook scripts; remove it and run such a script from your own unit or cron job on the Barman host (`barman list-backups` says when one ended)
            config.yml:15: instances[0].vars.barman_shared: a Barman host shared by several clusters is not supported: give each cluster its own instance with role `barman`, and remove `barman_shared`
            config.yml:16: instances[0].vars.barman_home: tpa uses Debian's barman user and its home /var/lib/barman; remove `barman_home`"#]],
    );
}

// === values that reach files on the hosts ===

/// BASE with one primary whose `vars` are `vars` (indented lines); the vars start on line 12.
fn with_vars(vars: &str) -> String {
    with_base(&format!(
        "- Name: one\n  node: 1\n  role: [primary]\n  vars:\n{vars}"
    ))
}

#[test]
fn conf_settings_reject_line_breaks_and_invalid_names() {
    check(
        &with_vars(
            r#"    postgres_conf_settings:
      work_mem: "1MB\nlisten_addresses = '*'"
      "work mem": 1MB
      "x = 1\nlisten_addresses": "'*'"
      pg_stat_statements.max: 10000
      log_line_prefix: "'%t it''s '"
      search_path: "\"$user\", public"
      big: 99999999999999999999999999
      tab: "a\tb"
"#,
        ),
        expect![[r#"
            config.yml:13: instances[0].vars.postgres_conf_settings.work_mem: the value contains the control character '\n'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:14: instances[0].vars.postgres_conf_settings.work mem: "work mem" is not a Postgres setting name: use letters, digits, `_` and `$`, starting with a letter or `_`, with at most one `.` (as in `pg_stat_statements.max`)
            config.yml:15: instances[0].vars.postgres_conf_settings.x = 1\nlisten_addresses: "x = 1\nlisten_addresses" is not a Postgres setting name: use letters, digits, `_` and `$`, starting with a letter or `_`, with at most one `.` (as in `pg_stat_statements.max`)
            config.yml:20: instances[0].vars.postgres_conf_settings.tab: the value contains the control character '\t'; values are written into files on the hosts, where it would start a line or setting of its own: remove it"#]],
    );
}

#[test]
fn patroni_settings_are_mappings_without_control_characters() {
    check(
        &with_vars(
            r#"    patroni_conf_settings:
      log: {level: "INFO\nx: 1"}
      "bad\nkey": 1
      tags: [{nofailover: "a\tb"}]
      restapi: {http_extra_headers: {X-Ok: "it's \"fine\""}}
    patroni_dynamic_conf_settings: "loop_wait: 5"
"#,
        ),
        expect![[r#"
            config.yml:13: instances[0].vars.patroni_conf_settings.log.level: the value contains the control character '\n'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:14: instances[0].vars.patroni_conf_settings.bad\nkey: the value contains the control character '\n'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:15: instances[0].vars.patroni_conf_settings.tags[0].nofailover: the value contains the control character '\t'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:17: instances[0].vars.patroni_dynamic_conf_settings: expected a mapping, found a string"#]],
    );
}

#[test]
fn hba_lines_and_preload_libraries_hold_one_entry_each() {
    check(
        &with_vars(
            r#"    postgres_hba_settings:
      - "hostssl all all 10.0.0.0/8 scram-sha-256"
      - "hostssl all all 10.0.0.0/8 scram-sha-256\nhost all all 0.0.0.0/0 trust"
    preload_extensions: [auto_explain, "pgaudit,passwordcheck", "x'", "$libdir/evil"]
"#,
        ),
        expect![[r#"
            config.yml:14: instances[0].vars.postgres_hba_settings[1]: the value contains the control character '\n'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:15: instances[0].vars.preload_extensions[1]: "pgaudit,passwordcheck" is not an extension name: use letters, digits, `_`, `-` and `.` (e.g. pg_stat_statements, auto_explain)
            config.yml:15: instances[0].vars.preload_extensions[2]: "x'" is not an extension name: use letters, digits, `_`, `-` and `.` (e.g. pg_stat_statements, auto_explain)
            config.yml:15: instances[0].vars.preload_extensions[3]: "$libdir/evil" is not an extension name: use letters, digits, `_`, `-` and `.` (e.g. pg_stat_statements, auto_explain)"#]],
    );
}

#[test]
fn the_data_directory_is_a_clean_absolute_path() {
    for (dir, ok) in [
        ("/srv/postgres/data", true),
        ("/opt/../etc", false),
        ("/opt/my data", false),
        ("/opt/data'; rm -rf / #", false),
        ("\"/opt/data\\nExecStartPre=/bin/sh\"", false),
        ("relative", false),
        ("/opt/data/", false),
    ] {
        let source = with_vars(&format!("    postgres_data_dir: {dir}\n"));
        let result = Cluster::parse(&source, "config.yml");
        assert_eq!(result.is_ok(), ok, "{dir}: {result:?}");
        if let Err(e) = result {
            let text = e.to_string();
            assert!(
                text.starts_with("config.yml:12: instances[0].vars.postgres_data_dir: "),
                "{text}"
            );
        }
    }
}

#[test]
fn ansible_user_and_locales_are_names() {
    check(
        &with_vars(
            r#"    ansible_user: "admin\n    ProxyCommand sh -c id"
    postgres_locale: "en_US.UTF-8; id"
    user_locale: C.UTF-8
"#,
        ),
        expect![[r#"
            config.yml:12: instances[0].vars.ansible_user: the value contains the control character '\n'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:13: instances[0].vars.postgres_locale: "en_US.UTF-8; id" is not a locale name such as en_US.UTF-8 or C.UTF-8"#]],
    );
    check(
        &with_vars("    ansible_user: -oProxyCommand=id\n"),
        expect![[
            r#"config.yml:12: instances[0].vars.ansible_user: "-oProxyCommand=id" is not a user name: use at most 32 letters, digits, `_`, `-` and `.`, starting with a letter or `_` (e.g. root, admin)"#
        ]],
    );
    check(&with_vars("    ansible_user: deploy\n"), expect!["ok"]);
}

#[test]
fn a_huge_port_is_out_of_range() {
    check(
        &with_vars("    postgres_port: 99999999999999999999\n"),
        expect![
            "config.yml:12: instances[0].vars.postgres_port: expected an integer, found a number"
        ],
    );
}

#[test]
fn postgres_version_must_be_one_the_images_debian_ships() {
    // Line 3 is `postgres_version: '15'` in cluster_vars; tpa/debian is Debian 12. Without
    // PGDG (use_local_repo_only, line 4), only the release's own version is there.
    let with_base = |instances: &str| {
        with_base(instances).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  use_local_repo_only: true\n",
        )
    };
    let with_vars = |vars: &str| {
        self::with_vars(vars).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  use_local_repo_only: true\n",
        )
    };
    check(&with_base(ONE), expect!["ok"]);
    // With PGDG (TPA's default apt_repository_list), its versions.
    check(&self::with_base(ONE).replace("'15'", "'16'"), expect!["ok"]);
    check(
        &self::with_base(ONE).replace("'15'", "'9.6'"),
        expect![
            "config.yml:3: cluster_vars.postgres_version: PostgreSQL 9.6 is older than any version tpa deploys (10 or later)"
        ],
    );
    check(
        &with_base(ONE).replace("'15'", "'9.6'"),
        expect![
            "config.yml:3: cluster_vars.postgres_version: PostgreSQL 9.6 is not available on Debian 12 (bookworm), the OS of image tpa/debian:12: Debian 12 ships 15, Debian 13 ships 17, and PGDG is not among this host's apt repositories (use_local_repo_only, or apt_repository_list without PGDG); set postgres_version: '15', or remove it to get that default"
        ],
    );
    check(
        &with_base(ONE).replace("image: tpa/debian", "image: tpa/debian:13"),
        expect![
            "config.yml:3: cluster_vars.postgres_version: PostgreSQL 15 is not available on Debian 13 (trixie), the OS of image tpa/debian:13: Debian 12 ships 15, Debian 13 ships 17, and PGDG is not among this host's apt repositories (use_local_repo_only, or apt_repository_list without PGDG); set postgres_version: '17', or remove it to get that default"
        ],
    );
    check(
        &with_base(ONE)
            .replace("image: tpa/debian", "image: tpa/debian:13")
            .replace("'15'", "'17'"),
        expect!["ok"],
    );
    // An OS tpa does not know from the image is checked at deploy, against the host's facts.
    check(
        &with_base(ONE).replace("image: tpa/debian", "image: tpa/rocky:9"),
        expect!["ok"],
    );
    // Set on the instance: reported where it was written.
    check(
        &with_vars("    postgres_version: 16\n"),
        expect![
            "config.yml:13: instances[0].vars.postgres_version: PostgreSQL 16 is not available on Debian 12 (bookworm), the OS of image tpa/debian:12: Debian 12 ships 15, Debian 13 ships 17, and PGDG is not among this host's apt repositories (use_local_repo_only, or apt_repository_list without PGDG); set postgres_version: '15', or remove it to get that default"
        ],
    );
}

const PATRONI_VARS: &str = "  postgres_version: '15'\n  failover_manager: patroni\n";

fn patroni(instances: &str) -> String {
    with_base(instances).replace("  postgres_version: '15'\n", PATRONI_VARS)
}

#[test]
fn patroni_needs_etcd() {
    check(
        &patroni(ONE),
        expect![
            "config.yml:9: instances[0].role: failover_manager: patroni needs etcd, and no instance has role `etcd`: give three instances `role: [etcd]` (they may be the Postgres hosts too)"
        ],
    );
}

#[test]
fn even_or_single_etcd_membership_is_refused() {
    check(
        &patroni(
            "- {Name: one, node: 1, role: [primary, etcd]}\n- {Name: two, node: 2, role: [replica, etcd], upstream: one}\n",
        ),
        expect![
            "config.yml:9: instances[0].role: 2 etcd members (one, two): etcd needs a majority to work, so an even number tolerates no more failures than one fewer; use 3 or 5"
        ],
    );
    check(
        &patroni("- {Name: one, node: 1, role: [primary, etcd]}\n"),
        expect![
            "config.yml:9: instances[0].role: one etcd member (one): Patroni's DCS would be a single point of failure; give three instances `role: [etcd]`, or set `etcd_single_member: true` if that is what you want (tests, demos)"
        ],
    );
    parse_ok(
        &patroni("- {Name: one, node: 1, role: [primary, etcd]}\n").replace(
            PATRONI_VARS,
            &format!("{PATRONI_VARS}  etcd_single_member: true\n"),
        ),
    );
    parse_ok(&patroni(
        "- {Name: one, node: 1, role: [primary, etcd]}\n- {Name: two, node: 2, role: [replica, etcd], upstream: one}\n- {Name: three, node: 3, role: [replica, etcd], upstream: one}\n",
    ));
}

#[test]
fn agent_health_and_metrics_variables_are_checked() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  agent_metrics_port: \"9187; rm -rf /\"\n  \
             agent_metrics_listen: \"0.0.0.0\\nx\"\n  agent_health_interval: 1\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.agent_metrics_port: expected an integer, found a string
            config.yml:5: cluster_vars.agent_metrics_listen: the value contains the control character '\n'; values are written into files on the hosts, where it would start a line or setting of its own: remove it
            config.yml:6: cluster_vars.agent_health_interval: must be from 5 to 3600 (got 1)"#]],
    );
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  agent_metrics_port: 7443\n",
        ),
        expect![
            "config.yml:4: cluster_vars.agent_metrics_port: 7443 is the agent's gRPC port; choose another port for its metrics, e.g. 9187"
        ],
    );
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  agent_metrics_port: 9187\n  agent_metrics_listen: tls\n  \
             agent_health_interval: 30\n",
        ),
        expect!["ok"],
    );
}

#[test]
fn certificate_lifetime_and_renewal_are_read_with_defaults() {
    let default = parse_ok(&with_base(ONE)).cert_policy();
    assert_eq!(default, crate::pki::CertPolicy::default());
    let set = |vars: &str| {
        with_base(ONE).replace(
            "  postgres_version: '15'\n",
            &format!("  postgres_version: '15'\n{vars}"),
        )
    };
    let short = parse_ok(&set(
        "  agent_cert_lifetime: 90s\n  agent_cert_renew_before: 60\n",
    ));
    assert_eq!(
        short.cert_policy(),
        crate::pki::CertPolicy {
            lifetime: std::time::Duration::from_secs(90),
            renew_before: std::time::Duration::from_secs(60),
        }
    );
    let long = parse_ok(&set(
        "  agent_cert_lifetime: 730d\n  agent_cert_renew_before: 12h\n",
    ));
    assert_eq!(long.cert_policy().lifetime.as_secs(), 730 * 86400);
    assert_eq!(long.cert_policy().renew_before.as_secs(), 12 * 3600);
    // The instances see the cluster's values (the health spec warns from renew_before on).
    assert_eq!(
        short.instances[0].vars.agent_cert_renew_before,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(super::vars::duration_secs("15m"), Ok(900));
    assert_eq!(super::vars::duration_secs("3650d"), Ok(3650 * 86400));
}

#[test]
fn hostile_certificate_durations_are_refused_naming_the_key() {
    let set = |vars: &str| {
        with_base(ONE).replace(
            "  postgres_version: '15'\n",
            &format!("  postgres_version: '15'\n{vars}"),
        )
    };
    check(
        &set("  agent_cert_lifetime: -90\n  agent_cert_renew_before: 0\n"),
        expect![[r#"
            config.yml:4: cluster_vars.agent_cert_lifetime: -90 is negative; use a duration such as 90s, 12h or 365d
            config.yml:5: cluster_vars.agent_cert_renew_before: must be from 1 s to 3650d (got 0 s); use a duration such as 90s, 12h or 365d"#]],
    );
    check(
        &set(
            "  agent_cert_lifetime: 99999999999999999d\n  agent_cert_renew_before: \"60\\nrm -rf /\"\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.agent_cert_lifetime: `99999999999999999d` is too long; at most 3650d
            config.yml:5: cluster_vars.agent_cert_renew_before: `60\nrm -rf /` is not a duration: write whole seconds (90) or a number with a unit s, m, h or d (90s, 15m, 12h, 365d)"#]],
    );
    check(
        &set("  agent_cert_lifetime: 3651d\n  agent_cert_renew_before: 1.5\n"),
        expect![[r#"
            config.yml:4: cluster_vars.agent_cert_lifetime: must be from 60 s to 3650d (got 315446400 s); use a duration such as 90s, 12h or 365d
            config.yml:5: cluster_vars.agent_cert_renew_before: must be a duration: whole seconds (90) or a number with a unit s, m, h or d (90s, 15m, 12h, 365d)"#]],
    );
    check(
        &set("  agent_cert_lifetime: 30s\n  agent_cert_renew_before: 10 s\n"),
        expect![[r#"
            config.yml:4: cluster_vars.agent_cert_lifetime: must be from 60 s to 3650d (got 30 s); use a duration such as 90s, 12h or 365d
            config.yml:5: cluster_vars.agent_cert_renew_before: `10 s` is not a duration: write whole seconds (90) or a number with a unit s, m, h or d (90s, 15m, 12h, 365d)"#]],
    );
    check(
        &set("  agent_cert_lifetime: [90]\n  agent_cert_renew_before: 5w\n"),
        expect![[r#"
            config.yml:4: cluster_vars.agent_cert_lifetime: must be a duration: whole seconds (90) or a number with a unit s, m, h or d (90s, 15m, 12h, 365d)
            config.yml:5: cluster_vars.agent_cert_renew_before: `5w` is not a duration: write whole seconds (90) or a number with a unit s, m, h or d (90s, 15m, 12h, 365d)"#]],
    );
    // renew_before must be shorter than the lifetime, set or at its default.
    check(
        &set("  agent_cert_lifetime: 90s\n  agent_cert_renew_before: 90s\n"),
        expect![
            "config.yml:5: cluster_vars.agent_cert_renew_before: agent_cert_renew_before (90 s) must be shorter than agent_cert_lifetime (90 s), or every deploy would renew every certificate: set both, e.g. agent_cert_lifetime: 365d and agent_cert_renew_before: 30d"
        ],
    );
    check(
        &set("  agent_cert_lifetime: 90s\n"),
        expect![
            "config.yml:4: cluster_vars.agent_cert_lifetime: agent_cert_renew_before (30 days, the default) must be shorter than agent_cert_lifetime (90 s), or every deploy would renew every certificate: set both, e.g. agent_cert_lifetime: 365d and agent_cert_renew_before: 30d"
        ],
    );
    check(
        &set("  agent_cert_renew_before: 400d\n"),
        expect![
            "config.yml:4: cluster_vars.agent_cert_renew_before: agent_cert_renew_before (400 days) must be shorter than agent_cert_lifetime (365 days, the default), or every deploy would renew every certificate: set both, e.g. agent_cert_lifetime: 365d and agent_cert_renew_before: 30d"
        ],
    );
    // Cluster-wide: not per instance.
    check(
        &with_base("- {Name: one, node: 1, role: [primary], vars: {agent_cert_lifetime: 90s}}\n"),
        expect![
            "config.yml:8: instances[0].vars.agent_cert_lifetime: `agent_cert_lifetime` applies to the whole cluster (the CA issues every agent's certificate under it): set it in cluster_vars"
        ],
    );
}

#[test]
fn aws_settings_are_read_and_hostile_values_refused() {
    let source = "cluster_name: cloud\ncluster_vars: {postgres_version: '15'}\n\
        ec2_ami: {Name: 'debian-12-*', Owner: '136693071363'}\n\
        ec2_vpc: {eu-west-1: {Name: Test, cidr: 10.33.0.0/16}}\n\
        ec2_instance_reachability: private\n\
        cluster_rules: [{proto: tcp, cidr_ip: 0.0.0.0/0, ports: [22, 5432-5433]}]\n\
        instance_defaults:\n  platform: aws\n  region: eu-west-1\n  type: t3.micro\n\
        \x20 subnet: 10.33.0.0/28\n\
        \x20 default_volumes: [{device_name: root, volume_size: 16}, {device_name: /dev/sdf, volume_size: 16, vars: {volume_for: postgres_data}}]\n\
        instances:\n- {Name: one, node: 1, assign_public_ip: false, \
        volumes: [{device_name: /dev/sdf, volume_type: gp3, volume_size: 64, encrypted: true}]}\n\
        - {Name: two, node: 2}\n";
    let c = parse_ok(source);
    let i = &c.instances[0];
    assert_eq!(
        c.aws.ami.as_ref().map(|a| a.name.as_str()),
        Some("debian-12-*")
    );
    assert_eq!(
        c.aws.reachability,
        crate::config::aws::Reachability::Private
    );
    assert_eq!(
        c.aws.rules.as_ref().unwrap()[0].ports,
        vec![(22, 22), (5432, 5433)]
    );
    assert_eq!(i.aws.assign_public_ip, Some(false));
    let volumes: Vec<(&str, u32, &str)> = i
        .aws
        .volumes
        .iter()
        .map(|v| (v.device_name.as_str(), v.size_gb, v.volume_type.as_str()))
        .collect();
    assert_eq!(volumes, vec![("root", 16, "gp2"), ("/dev/sdf", 64, "gp3")]);
    // The instance's own /dev/sdf replaces the default one, vars and all, as in TPA.
    assert_eq!(i.mounts, vec![]);
    let two: Vec<(&str, &str)> = c.instances[1]
        .mounts
        .iter()
        .map(|m| (m.device.as_str(), m.mountpoint.as_str()))
        .collect();
    assert_eq!(two, vec![("/dev/sdf", "/opt/postgres")]);

    check(
        "cluster_name: cloud\ncluster_vars: {postgres_version: '15'}\n\
         ec2_vpc: {'eu-west-1; x': {Name: Test}, eu-west-2: {cidr: 10.0.0.1/16}}\n\
         cluster_rules: [{proto: gre, cidr_ip: 0.0.0.0/0, ports: ['22; x']}]\n\
         instances:\n- {Name: one, node: 1, platform: aws, region: 'eu west', type: 't3 micro', \
         subnet: 10.0.0.1/28, az: 'x\\ny', volumes: [{device_name: /dev/../sda, volume_size: 1, snapshot_id: s}]}\n",
        expect![[r#"
            config.yml:3: ec2_vpc.eu-west-1; x: `eu-west-1; x` is not an AWS region name (e.g. eu-west-1)
            config.yml:3: ec2_vpc.eu-west-2: missing required key `Name` (the VPC's Name tag)
            config.yml:3: ec2_vpc.eu-west-2.cidr: `10.0.0.1/16` has host bits set; did you mean `10.0.0.0/16`?
            config.yml:4: cluster_rules[0]: a rule needs `proto`, `cidr_ip` and `ports` (e.g. {proto: tcp, cidr_ip: 0.0.0.0/0, ports: [22]})
            config.yml:4: cluster_rules[0].ports[0]: `22; x` is not a port or a range of ports (e.g. 22 or 0-65535)
            config.yml:4: cluster_rules[0].proto: unknown proto `gre`; use tcp, udp or icmp
            config.yml:6: instances[0].az: not an availability zone (e.g. eu-west-1a)
            config.yml:6: instances[0].region: not an AWS region name (e.g. eu-west-1)
            config.yml:6: instances[0].subnet: not an IPv4 subnet in CIDR form without host bits (e.g. 10.33.0.0/28)
            config.yml:6: instances[0].type: not an EC2 instance type (e.g. t3.micro)
            config.yml:6: instances[0].volumes[0]: missing required key `device_name`
            config.yml:6: instances[0].volumes[0].device_name: `/dev/../sda` is not a device name; use root, /dev/sdX or /dev/xvdX
            config.yml:6: instances[0].volumes[0].snapshot_id: `snapshot_id` is a TPA setting that tpa does not support yet; remove it"#]],
    );
}

#[test]
fn apt_repositories_are_checked_where_they_are_written() {
    check(
        &with_base(ONE).replace(
            "  postgres_version: '15'\n",
            "  postgres_version: '15'\n  apt_repository_list: [PGDG, Good, Missing]\n  apt_repositories:\n    Good:\n      repo: deb https://apt.example.com/ bookworm main\n      key_url: https://apt.example.com/key.asc\n      key_id: 7FCC7D46ACCC4CF8\n    Bad:\n      repo:\n      - deb [trusted=yes] https://apt.example.com/ ./\n      - \"deb https://x.example/ bookworm main\\ndeb https://y.example/ ./\"\n      key_url: ftp://apt.example.com/key.asc\n      key_id: ACCC4CF\n      keyring: /etc/x\n    ../etc:\n      repo: deb https://apt.example.com/ ./\n",
        ),
        expect![[r#"
            config.yml:4: cluster_vars.apt_repository_list[2]: `Missing` is not a repository tpa knows (PGDG, Good); define it under apt_repositories with repo, key_url and key_id
            config.yml:11: cluster_vars.apt_repositories.Bad: missing or invalid repo, key_url, key_id: tpa adds only signed repositories, whose key it fetches from `key_url` and checks against `key_id` (its fingerprint)
            config.yml:12: cluster_vars.apt_repositories.Bad.repo[0]: `deb [trusted=yes] https://apt.example.com/ ./`: tpa sets `trusted` itself (every repository is pinned to the key from its key_url); remove the option
            config.yml:14: cluster_vars.apt_repositories.Bad.key_url: `ftp://apt.example.com/key.asc` is not an http:// or https:// URL
            config.yml:15: cluster_vars.apt_repositories.Bad.key_id: `ACCC4CF` is not a key id: give the key's fingerprint (40 hex digits; 64 for a v6 key), or its last 16 digits
            config.yml:16: cluster_vars.apt_repositories.Bad.keyring: unknown key `keyring` in an apt repository; tpa reads `repo`, `key_url` and `key_id`
            config.yml:17: cluster_vars.apt_repositories.../etc: `../etc` is not a repository name tpa accepts: letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 64 characters (it names a file on the hosts)"#]],
    );
    // PGDG's PostgreSQL versions pass validation unless use_local_repo_only is set.
    let sixteen = with_base(ONE)
        .replace("postgres_version: '15'", "postgres_version: '16'")
        .replace("image: tpa/debian\n", "image: tpa/debian:12\n");
    assert!(Cluster::parse(&sixteen, "config.yml").is_ok());
    let local_only = sixteen.replace(
        "  postgres_version: '16'\n",
        "  postgres_version: '16'\n  use_local_repo_only: true\n",
    );
    let err = Cluster::parse(&local_only, "config.yml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PGDG is not among this host's apt repositories"),
        "{err}"
    );
}
