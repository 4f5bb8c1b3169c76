//! Writes config.yml text in TPA's format: a comment naming the command, then the top-level
//! keys in the order TPA writes them, one instance per block.

use std::fmt::Write as _;

use super::layout::{Layout, Manager};
use super::{HostEntry, Options};
use crate::config::Platform;

/// A YAML scalar: plain when that cannot be misread (as a number, boolean, null or syntax),
/// single-quoted otherwise.
pub fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !s.ends_with(':')
        && !s.contains(": ")
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The config.yml text. `hosts` has one entry per layout node, in order.
pub fn render(o: &Options, layout: &Layout, hosts: &[HostEntry], command: &str) -> String {
    let mut y = String::new();
    let w = &mut y;
    let _ = writeln!(w, "# Written by: {}", command.replace('\n', " "));
    let _ = writeln!(
        w,
        "# Edit freely; `tpa-controller provision` and `deploy` read it."
    );
    let _ = writeln!(w, "---");
    let _ = writeln!(w, "architecture: M1");
    let _ = writeln!(w, "cluster_name: {}", scalar(&o.cluster_name));
    match &o.owner {
        Some(owner) => {
            let _ = writeln!(w, "cluster_tags:\n  Owner: {}", scalar(owner));
        }
        None => {
            let _ = writeln!(w, "cluster_tags: {{}}");
        }
    }
    if let Some(net) = o.network.filter(|_| o.platform == Platform::Docker) {
        let _ = writeln!(w, "\ndocker_networks:");
        let _ = writeln!(w, "- name: {}", scalar(&o.cluster_name));
        let _ = writeln!(w, "  ipam_config:\n  - subnet: {net}");
    }
    if o.platform == Platform::Aws {
        render_aws_top(w, o);
    }

    let _ = writeln!(w, "\ncluster_vars:");
    if o.manager == Manager::Patroni {
        let _ = writeln!(w, "  etcd_location: {}", scalar(&layout.primary_location));
    }
    let _ = writeln!(w, "  failover_manager: {}", o.manager.as_str());
    if o.manager == Manager::Patroni {
        let _ = writeln!(w, "  patroni_package_flavour: community");
    }
    let _ = writeln!(w, "  postgres_flavour: {}", o.postgres_flavour);
    let _ = writeln!(w, "  postgres_version: '{}'", o.postgres_version);
    let _ = writeln!(w, "  preferred_python_version: python3");
    if o.use_local_repo_only {
        let _ = writeln!(w, "  use_local_repo_only: true");
    }
    let _ = writeln!(w, "  use_volatile_subscriptions: false");

    let _ = writeln!(w, "\nlocations:");
    for l in &o.layout.locations {
        let _ = writeln!(w, "- Name: {}", scalar(l));
        if o.platform == Platform::Aws {
            let _ = writeln!(w, "  region: {}", scalar(&o.region));
            let index = o.layout.locations.iter().position(|x| x == l).unwrap_or(0);
            let az = char::from(b'a' + (index % 3) as u8);
            let _ = writeln!(w, "  az: {}{az}", o.region);
            let _ = writeln!(w, "  subnet: {}", aws_subnet(o, index));
        }
    }

    let _ = writeln!(w, "\ninstance_defaults:");
    match o.platform {
        Platform::Docker => {
            let _ = writeln!(w, "  image: {}", scalar(&o.image));
        }
        Platform::Aws => {
            let _ = writeln!(w, "  type: {}", scalar(&o.instance_type));
        }
        Platform::Bare => {}
    }
    let _ = writeln!(w, "  platform: {}", o.platform.as_str());
    let _ = writeln!(
        w,
        "  vars:\n    ansible_user: {}",
        scalar(&o.ansible_user())
    );

    let _ = writeln!(w, "\ninstances:");
    for (i, n) in layout.nodes.iter().enumerate() {
        let h = &hosts[i];
        let _ = writeln!(w, "- Name: {}", h.name);
        let _ = writeln!(w, "  node: {}", n.node);
        let _ = writeln!(w, "  location: {}", scalar(&n.location));
        match (h.ip, h.private_ip) {
            (Some(ip), None) => {
                let _ = writeln!(w, "  ip_address: {ip}");
            }
            (Some(public), Some(private)) => {
                let _ = writeln!(w, "  public_ip: {public}\n  private_ip: {private}");
            }
            _ => {
                if let Some(net) = o.network.filter(|_| o.platform == Platform::Docker) {
                    // The first address is the bridge's gateway.
                    let ip = net.hosts().nth(i + 1);
                    if let Some(ip) = ip {
                        let _ = writeln!(w, "  ip_address: {ip}");
                    }
                }
            }
        }
        let _ = writeln!(w, "  role: [{}]", n.roles.join(", "));
        if let Some(u) = n.upstream {
            let _ = writeln!(w, "  upstream: {}", hosts[u].name);
        }
        if let Some(b) = n.backup {
            let _ = writeln!(w, "  backup: {}", hosts[b].name);
        }
        if o.platform == Platform::Aws {
            let size = if n.roles.contains(&"barman") { 32 } else { 16 };
            let purpose = if n.roles.contains(&"barman") {
                "barman_data"
            } else {
                "postgres_data"
            };
            if !n.roles.contains(&"etcd") {
                let _ = writeln!(
                    w,
                    "  volumes:\n  - device_name: /dev/sdf\n    volume_type: gp2\n    \
                     volume_size: {size}\n    encrypted: true\n    vars:\n      volume_for: {purpose}"
                );
            }
        }
        if let Some(l) = &n.etcd_location {
            let _ = writeln!(w, "  vars:\n    etcd_location: {}", scalar(l));
        }
    }
    y
}

fn aws_subnet(o: &Options, index: usize) -> String {
    match &o.subnet {
        Some(s) if index == 0 => s.to_string(),
        _ => {
            // /28s from the cluster network, one per location.
            let base = o
                .network
                .unwrap_or_else(|| "10.33.0.0/16".parse().expect("literal"));
            base.subnets(28)
                .ok()
                .and_then(|mut s| s.nth(index + o.subnet.is_some() as usize))
                .map_or_else(|| base.to_string(), |s| s.to_string())
        }
    }
}

fn render_aws_top(w: &mut String, o: &Options) {
    let network = o
        .network
        .unwrap_or_else(|| "10.33.0.0/16".parse().expect("literal"));
    let _ = writeln!(
        w,
        "\nec2_ami:\n  Name: {}\n  Owner: '136693071363'",
        scalar(&o.image)
    );
    let _ = writeln!(w, "ec2_instance_reachability: public");
    let _ = writeln!(
        w,
        "ec2_vpc:\n  {}:\n    Name: Test\n    cidr: {network}",
        scalar(&o.region)
    );
    let _ = writeln!(w, "cluster_rules:");
    let _ = writeln!(w, "- cidr_ip: 0.0.0.0/0\n  ports: [22]\n  proto: tcp");
    for index in 0..o.layout.locations.len() {
        let _ = writeln!(
            w,
            "- cidr_ip: {}\n  ports: [0-65535]\n  proto: tcp",
            aws_subnet(o, index)
        );
    }
}
