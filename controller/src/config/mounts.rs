//! The filesystems deploy makes and mounts on an instance's volumes: the `vars` of a `volumes`
//! entry (`volume_for`, `mountpoint`, `fstype`, `fsopts`, `mountopts`), on aws instances (EBS
//! volumes provision attached) and bare ones (disks the machine has). A volume without
//! `volume_for` or `mountpoint` is only attached, as in TPA.
//!
//! Every value reaches a mkfs or mount command line and /etc/fstab on the host, so each is
//! checked here for that place.

use super::error::{Diag, unknown_key, unsupported, unsupported_value};
use super::values;
use super::yaml::{Field, index_path};

/// What a volume is for: `volume_for`, which implies its mountpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFor {
    /// `/opt/postgres`, which holds the data directory `/opt/postgres/data`.
    PostgresData,
    /// `/var/lib/barman`, the barman user's home, where backups and WAL go.
    BarmanData,
}

impl VolumeFor {
    pub fn name(self) -> &'static str {
        match self {
            VolumeFor::PostgresData => "postgres_data",
            VolumeFor::BarmanData => "barman_data",
        }
    }

    /// TPA's mountpoint for it.
    pub fn mountpoint(self) -> &'static str {
        match self {
            VolumeFor::PostgresData => "/opt/postgres",
            VolumeFor::BarmanData => "/var/lib/barman",
        }
    }
}

/// One filesystem to make (unless the volume has one) and mount, now and at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volume's `device_name` as config.yml gives it.
    pub device: String,
    /// `mountpoint`, else the one `volume_for` implies.
    pub mountpoint: String,
    pub volume_for: Option<VolumeFor>,
    /// `fstype` (default ext4, as TPA).
    pub fstype: String,
    /// `fsopts`: mkfs options, one word each.
    pub fsopts: Vec<String>,
    /// `mountopts` (default `defaults,noatime`, as TPA).
    pub mountopts: String,
}

const KEYS: &[&str] = &["volume_for", "mountpoint", "fstype", "fsopts", "mountopts"];
/// TPA volume vars tpa does not act on yet.
const KEYS_NOT_YET: &[&str] = &[
    "encryption",
    "luks_passphrase",
    "readahead",
    "owner",
    "group",
    "mode",
    "tablespace_name",
];
const FSTYPES: &[&str] = &["ext4", "ext3", "ext2", "xfs"];
const DEFAULT_MOUNTOPTS: &str = "defaults,noatime";

/// Directories a volume must never be mounted on (or, for the first list, under): the host's
/// own system would disappear beneath it.
const SYSTEM_TREES: &[&str] = &[
    "/proc", "/sys", "/dev", "/run", "/etc", "/usr", "/boot", "/bin", "/sbin", "/lib", "/lib32",
    "/lib64",
];
const SYSTEM_DIRS: &[&str] = &[
    "/var", "/var/lib", "/var/opt", "/opt", "/home", "/root", "/tmp", "/srv", "/mnt",
];

/// Reads a volume's `vars` (`f`); `None` when they name no mountpoint (an attached volume).
/// The caller sets [`Mount::device`].
pub(crate) fn vars(f: &Field<'_>, diag: &mut Diag) -> Option<Mount> {
    let mut volume_for = None;
    let mut mountpoint = None;
    let mut fstype = "ext4".to_string();
    let mut fsopts = Vec::new();
    let mut mountopts = DEFAULT_MOUNTOPTS.to_string();
    for g in f.value.fields(diag, &f.path) {
        let (n, p) = (g.value, g.path.as_str());
        match g.key {
            "volume_for" => match n.string(diag, p).as_deref() {
                Some("postgres_data") => volume_for = Some(VolumeFor::PostgresData),
                Some("barman_data") => volume_for = Some(VolumeFor::BarmanData),
                Some(v @ ("postgres_wal" | "postgres_tablespace")) => diag.err(
                    g.line,
                    p,
                    unsupported_value(
                        "volume_for",
                        v,
                        "postgres_data (the WAL stays in the data directory)",
                    ),
                ),
                Some(other) => diag.err(
                    g.line,
                    p,
                    unknown_key(other, "volume_for", ["postgres_data", "barman_data"]),
                ),
                None => {}
            },
            "mountpoint" => {
                if let Some(m) = n.string(diag, p) {
                    match mountpoint_rule(&m) {
                        Ok(()) => mountpoint = Some(m),
                        Err(e) => diag.err(g.line, p, e),
                    }
                }
            }
            "fstype" => {
                if let Some(t) = n.string(diag, p) {
                    if FSTYPES.contains(&t.as_str()) {
                        fstype = t;
                    } else {
                        diag.err(
                            g.line,
                            p,
                            unknown_key(&t, "fstype", FSTYPES.iter().copied()),
                        );
                    }
                }
            }
            "fsopts" => {
                let words = match &n.value {
                    super::yaml::Value::Seq(_) => n.string_list(diag, p),
                    _ => n
                        .string(diag, p)
                        .map(|s| s.split_whitespace().map(String::from).collect())
                        .unwrap_or_default(),
                };
                match words.iter().find_map(|w| option_word(w).err()) {
                    None => fsopts = words,
                    Some(e) => diag.err(g.line, p, e),
                }
            }
            "mountopts" => {
                if let Some(o) = n.string(diag, p) {
                    match option_word(&o) {
                        Ok(()) if !o.is_empty() => mountopts = o,
                        Ok(()) => diag.err(
                            g.line,
                            p,
                            "mountopts is empty; leave it out for defaults,noatime",
                        ),
                        Err(e) => diag.err(g.line, p, e),
                    }
                }
            }
            k if KEYS_NOT_YET.contains(&k) => diag.err(g.line, p, unsupported(k)),
            other => diag.err(
                g.line,
                p,
                unknown_key(other, "volume var", KEYS.iter().copied()),
            ),
        }
    }
    let mountpoint = mountpoint.or_else(|| volume_for.map(|v| v.mountpoint().to_string()))?;
    Some(Mount {
        device: String::new(),
        mountpoint,
        volume_for,
        fstype,
        fsopts,
        mountopts,
    })
}

/// Reads a bare instance's `volumes`: disks the machine already has, named by `device_name`
/// (any block device under /dev), each with the `vars` of its filesystem.
pub(crate) fn bare_volumes(f: &Field<'_>, diag: &mut Diag) -> Vec<Mount> {
    let mut out = Vec::new();
    for (i, item) in f.value.seq(diag, &f.path).unwrap_or(&[]).iter().enumerate() {
        let path = index_path(&f.path, i);
        let mut device = None;
        let mut named = false;
        let mut mount = None;
        for g in item.fields(diag, &path) {
            let (n, p) = (g.value, g.path.as_str());
            match g.key {
                "device_name" => {
                    named = true;
                    if let Some(d) = n.string(diag, p) {
                        match device_rule(&d) {
                            Ok(()) => device = Some(d),
                            Err(e) => diag.err(g.line, p, e),
                        }
                    }
                }
                "vars" => mount = vars(&g, diag),
                other => diag.err(
                    g.line,
                    p,
                    format!(
                        "`{other}` is not a key of a bare instance's volume: a bare machine's \
                         disks exist already, so only `device_name` and `vars` apply; remove it"
                    ),
                ),
            }
        }
        match (device, mount) {
            (None, _) if !named => diag.err(item.line, &path, "missing required key `device_name`"),
            (Some(device), Some(m)) => out.push(Mount { device, ..m }),
            _ => {}
        }
    }
    out
}

/// The mounts of one instance, sorted by mountpoint (so `/opt/postgres` is mounted before
/// anything beneath it); two volumes on one mountpoint, or two of one `volume_for`, are refused.
pub(crate) fn checked(
    mut mounts: Vec<Mount>,
    line: usize,
    path: &str,
    diag: &mut Diag,
) -> Vec<Mount> {
    mounts.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    for pair in mounts.windows(2) {
        if pair[0].mountpoint == pair[1].mountpoint {
            diag.err(
                line,
                path,
                format!(
                    "volumes {} and {} are both mounted at {}; give each its own mountpoint",
                    pair[0].device, pair[1].device, pair[0].mountpoint
                ),
            );
        }
    }
    for (i, a) in mounts.iter().enumerate() {
        if let Some(b) = mounts[i + 1..]
            .iter()
            .find(|b| b.volume_for.is_some() && b.volume_for == a.volume_for)
        {
            diag.err(
                line,
                path,
                format!(
                    "volumes {} and {} both have volume_for: {}; one volume holds it",
                    a.device,
                    b.device,
                    a.volume_for.map_or("", VolumeFor::name)
                ),
            );
        }
    }
    mounts
}

/// A mountpoint: a clean absolute path that is no system directory.
fn mountpoint_rule(m: &str) -> Result<(), String> {
    values::clean_absolute_path(m)?;
    let under = |tree: &str| m == tree || m.starts_with(&format!("{tree}/"));
    if m == "/" || SYSTEM_TREES.iter().any(|t| under(t)) || SYSTEM_DIRS.contains(&m) {
        return Err(format!(
            "`{m}` is a system directory; a volume mounted there would hide the host's own \
             files: use a directory of its own, such as /opt/postgres or /srv/data"
        ));
    }
    Ok(())
}

/// A bare machine's disk: a clean path under /dev.
fn device_rule(d: &str) -> Result<(), String> {
    values::clean_absolute_path(d)
        .ok()
        .filter(|()| d.starts_with("/dev/") && d.len() > 5)
        .ok_or_else(|| format!("`{d}` is not a device path; use the disk's path under /dev, such as /dev/vdb or /dev/disk/by-id/…"))
}

/// One mkfs option or the mount options: letters, digits and `- _ = , . : /` only, as
/// /etc/fstab (one field) and a command line take them.
fn option_word(w: &str) -> Result<(), String> {
    match w
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_=,.:/".contains(*c)))
    {
        None => Ok(()),
        Some(c) => Err(format!(
            "{w:?} contains {c:?}; filesystem and mount options may hold only letters, digits \
             and `- _ = , . : /`"
        )),
    }
}
