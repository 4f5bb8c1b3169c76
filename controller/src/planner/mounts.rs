//! The filesystems of an instance's volumes (config::mounts): made unless the volume has
//! one, mounted, and listed in /etc/fstab under the device name found, by the `mount-tpa`
//! helper. They go at the end of the sys stage, once the packages (mkfs) are in and before
//! anything writes beneath a mountpoint: the data directory, Barman's home.

use tpa_common::resource::{Command, Resource, ResourceSpec};

use super::postgres::owned_file;
use super::{dir, id};
use crate::config::Instance;
use crate::config::mounts::Mount;
use crate::inventory::Host;

const HELPER: &str = "/etc/tpa/mount-tpa";
const HELPER_SOURCE: &str = include_str!("mount-tpa.sh");

/// The packages whose mkfs the instance's filesystems need.
pub fn packages(instance: &Instance) -> impl Iterator<Item = &'static str> + '_ {
    instance.mounts.iter().map(|m| match m.fstype.as_str() {
        "xfs" => "xfsprogs",
        _ => "e2fsprogs",
    })
}

/// The helper and one command per filesystem, in mountpoint order; none without volumes.
pub fn resources(instance: &Instance, host: &Host) -> Vec<ResourceSpec> {
    if instance.mounts.is_empty() {
        return Vec::new();
    }
    let mut out = vec![
        dir("/etc/tpa", "root", 0o755),
        owned_file(HELPER, HELPER_SOURCE.to_string(), "root", 0o755),
    ];
    for m in &instance.mounts {
        let args = |mode: &str| {
            let mut argv = vec![
                HELPER.to_string(),
                mode.to_string(),
                m.mountpoint.clone(),
                m.fstype.clone(),
                m.mountopts.clone(),
                m.fsopts.len().to_string(),
            ];
            argv.extend(m.fsopts.iter().cloned());
            argv.extend(device_names(m, host));
            argv
        };
        out.push(ResourceSpec {
            id: id("mount", &m.mountpoint),
            kind: Resource::Command(Command {
                argv: args("apply"),
                creates: None,
                unless: Some(args("check")),
                run_as: None,
                env: vec![],
                secret_env: false,
                // mkfs of a large volume.
                timeout_secs: Some(600),
                unless_sql: None,
            }),
        });
    }
    out
}

/// The names the volume may have on the host, most specific first. An EBS volume attached as
/// /dev/sdf is /dev/nvme…n1 on Nitro instances (found by its volume id), /dev/xvdf on Xen
/// ones, /dev/sdf where udev links it.
fn device_names(m: &Mount, host: &Host) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(volume) = host.volumes.get(&m.device)
        && volume
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        names.push(format!(
            "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
            volume.replace('-', "")
        ));
    }
    names.push(m.device.clone());
    if let Some(letters) = m.device.strip_prefix("/dev/sd")
        && host.platform == crate::config::Platform::Aws
    {
        names.push(format!("/dev/xvd{letters}"));
    }
    names
}
