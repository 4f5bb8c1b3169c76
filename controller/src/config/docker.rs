//! The docker-only instance keys (`volumes`, `privileged`, `memory`, `published_ports`, …),
//! read into the typed values the Docker API takes. Docker would refuse some bad values only
//! when the container is created, half-way through a provision, and accept others it should
//! not (a newline in an environment variable): each value is checked here, where the error can
//! name its line.

use std::collections::BTreeMap;

use super::error::Diag;
use super::values;
use super::yaml::Field;

/// `restart_policy`: docker's `--restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    /// `on-failure[:N]`: N retries at most (0: no limit).
    OnFailure(u32),
}

/// One `volumes` entry: docker's `-v [SOURCE:]TARGET[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// A host path (absolute) or a named volume; None: an anonymous volume, which lives as
    /// long as the container (deprovision removes it).
    pub source: Option<String>,
    /// Where it appears in the container (absolute).
    pub target: String,
    /// `ro`, `rw`, `z`, …: comma-separated, as docker writes them.
    pub options: Option<String>,
}

impl Volume {
    /// The bind string the Docker API takes (`HostConfig.Binds`); None for an anonymous
    /// volume, which goes in the container's `Volumes` instead.
    pub fn bind(&self) -> Option<String> {
        let source = self.source.as_deref()?;
        Some(match &self.options {
            Some(o) => format!("{source}:{}:{o}", self.target),
            None => format!("{source}:{}", self.target),
        })
    }
}

/// One `published_ports` entry: docker's `-p [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub host_ip: Option<String>,
    /// None: docker picks a free port.
    pub host_port: Option<u16>,
    /// `5432/tcp`: the container port and protocol, as docker keys them.
    pub container_port: String,
}

/// One `devices` entry: docker's `--device HOST[:CONTAINER[:PERMISSIONS]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub host: String,
    pub container: String,
    /// Some of `rwm` (default `rwm`).
    pub permissions: String,
}

const VOLUME_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "nocopy",
    "consistent",
    "cached",
    "delegated",
];

/// A mapping whose keys `check_key` accepts and whose values hold no control characters.
pub(crate) fn map(
    fields: &[Field<'_>],
    diag: &mut Diag,
    check_key: impl Fn(&str) -> Result<(), String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in fields {
        let Some(value) = f.value.scalar_text(diag, &f.path) else {
            continue;
        };
        let checked = check_key(f.key).and_then(|()| printable(&value));
        match checked {
            Ok(()) => {
                out.insert(f.key.to_string(), value);
            }
            Err(message) => diag.err(f.line, &f.path, message),
        }
    }
    out
}

fn printable(text: &str) -> Result<(), String> {
    match values::control_char(text) {
        Some(c) => Err(format!(
            "{text:?} contains the control character {c:?}; remove it"
        )),
        None => Ok(()),
    }
}

/// An `env` name: what a shell accepts; `container` is tpa's own (systemd reads it).
pub(crate) fn env_name(name: &str) -> Result<(), String> {
    if name == "container" {
        return Err("`container` is set by tpa (systemd in the container needs \
                    container=docker); remove it"
            .into());
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an environment variable name; use letters, digits and `_`, \
             not starting with a digit"
        ))
    }
}

/// A `sysctls` key such as `net.ipv4.ip_forward`.
pub(crate) fn sysctl_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok && !name.split(['.', '/']).any(|part| part.is_empty()) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a sysctl name; use dotted names such as net.ipv4.ip_forward"
        ))
    }
}

/// A capability for `docker_cap_add` / `docker_cap_drop`: `NET_ADMIN`, `CAP_SYS_PTRACE`, `ALL`.
pub(crate) fn capability(name: &str) -> Result<String, String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{name}` is not a capability name; use names such as NET_ADMIN or SYS_PTRACE"
        ))
    }
}

/// A `docker_security_opts` entry (`seccomp=unconfined`, `apparmor=…`): passed as written.
pub(crate) fn security_opt(text: &str) -> Result<String, String> {
    printable(text)?;
    if text.is_empty() {
        return Err("an empty security option; remove it".into());
    }
    Ok(text.to_string())
}

/// `memory` / `shm_size` in docker's syntax (`512m`, `1g`, `1.5GiB`, bytes without a unit),
/// as bytes.
pub(crate) fn size(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{text}` is not a size; write a number with an optional unit b, k, m, g or t \
             (powers of 1024), such as 512m or 2g"
        )
    };
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let power = match unit {
        "" | "b" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        _ => return Err(bad()),
    };
    let bytes = number * 1024f64.powi(power);
    if !bytes.is_finite() || bytes < 1.0 || bytes > (1u64 << 50) as f64 {
        return Err(format!(
            "`{text}` is out of range: give between 1 byte and 1024 TiB"
        ));
    }
    Ok(bytes as i64)
}

/// `restart_policy`: `no`, `always`, `unless-stopped` or `on-failure[:N]`.
pub(crate) fn restart_policy(text: &str) -> Result<RestartPolicy, String> {
    match text {
        "no" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => Ok(RestartPolicy::OnFailure(0)),
        _ => text
            .strip_prefix("on-failure:")
            .and_then(|n| n.parse().ok())
            .map(RestartPolicy::OnFailure)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a restart policy; use no, always, unless-stopped or \
                     on-failure[:N]"
                )
            }),
    }
}

/// A `volumes` entry. The target must be absolute and plain; the source is a host path or a
/// volume name.
pub(crate) fn volume(text: &str) -> Result<Volume, String> {
    printable(text)?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] if target.starts_with('/') => (Some(*source), *target, None),
        [target, options] => (None, *target, Some(*options)),
        [source, target, options] => (Some(*source), *target, Some(*options)),
        _ => {
            return Err(format!(
                "`{text}` is not a volume; write [SOURCE:]TARGET[:OPTIONS], such as \
                 /srv/pgdata:/opt/postgres or backups:/var/lib/barman:rw"
            ));
        }
    };
    plain_absolute(target, "target")?;
    if target.trim_end_matches('/').is_empty() {
        return Err(format!(
            "`{text}` would mount over the container's root; give a directory such as \
             /opt/postgres"
        ));
    }
    if let Some(source) = source {
        if source.starts_with('/') {
            plain_absolute(source, "source")?;
        } else {
            let mut chars = source.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(format!(
                    "`{source}` is neither an absolute host path nor a volume name (letters, \
                     digits, `_ . -`)"
                ));
            }
        }
    }
    let bad_option = options.and_then(|o| o.split(',').find(|o| !VOLUME_OPTIONS.contains(o)));
    if let Some(bad) = bad_option {
        return Err(format!(
            "`{bad}` is not a volume option; use some of {}",
            VOLUME_OPTIONS.join(", ")
        ));
    }
    Ok(Volume {
        source: source.map(str::to_string),
        target: target.to_string(),
        options: options.map(str::to_string),
    })
}

/// An absolute path without `.` or `..` components or doubled slashes.
fn plain_absolute(path: &str, what: &str) -> Result<(), String> {
    let plain = path.starts_with('/')
        && (path == "/"
            || path[1..]
                .trim_end_matches('/')
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "the {what} `{path}` must be an absolute path without `.` or `..`"
        ))
    }
}

/// A container port (an `exposed_ports` entry, the end of a `published_ports` one): `5432` or
/// `5432/tcp`, as docker keys it (`5432/tcp`).
pub(crate) fn exposed_port(text: &str) -> Result<String, String> {
    let (port, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(format!("`{proto}` is not a protocol; use tcp, udp or sctp"));
    }
    let port = port_number(port)?;
    Ok(format!("{port}/{proto}"))
}

fn port_number(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "`{text}` is not a port number (1 to 65535); ranges are not supported, list each port"
        )),
    }
}

/// A `published_ports` entry: `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`; an IPv6 address
/// goes in brackets.
pub(crate) fn published_port(text: &str) -> Result<PublishedPort, String> {
    let (host_ip, rest) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed
                .split_once("]:")
                .ok_or_else(|| format!("`{text}`: an IPv6 address in brackets needs `]:PORT`"))?;
            (Some(ip), rest)
        }
        None => (None, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host_port, container) = match (host_ip, parts.as_slice()) {
        (None, [container]) => (None, None, *container),
        (None, [host, container]) => (None, Some(*host), *container),
        (None, [ip, host, container]) => (Some(*ip), Some(*host), *container),
        (Some(ip), [host, container]) => (Some(ip), Some(*host), *container),
        _ => {
            return Err(format!(
                "`{text}` is not a published port; write [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO], \
                 such as 15432:5432 or 127.0.0.1:15432:5432"
            ));
        }
    };
    let host_ip = match ip {
        Some(ip) => Some(
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| format!("`{ip}` is not an IP address"))?
                .to_string(),
        ),
        None => None,
    };
    let host_port = match host_port {
        Some("") | None => None,
        Some(p) => Some(port_number(p)?),
    };
    Ok(PublishedPort {
        host_ip,
        host_port,
        container_port: exposed_port(container)?,
    })
}

/// A `devices` entry: `HOST[:CONTAINER[:PERMISSIONS]]`, device paths under /dev.
pub(crate) fn device(text: &str) -> Result<Device, String> {
    printable(text)?;
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, permissions) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, p] if !p.starts_with('/') => (*host, *host, *p),
        [host, container] => (*host, *container, "rwm"),
        [host, container, p] => (*host, *container, *p),
        _ => {
            return Err(format!(
                "`{text}` is not a device; write HOST[:CONTAINER[:PERMISSIONS]], such as \
                 /dev/fuse or /dev/sdb:/dev/xvdb:rw"
            ));
        }
    };
    for path in [host, container] {
        plain_absolute(path, "device")?;
        if !path.starts_with("/dev/") {
            return Err(format!("the device `{path}` must be a path under /dev"));
        }
    }
    let mut seen = String::new();
    for c in permissions.chars() {
        if !"rwm".contains(c) || seen.contains(c) {
            return Err(format!(
                "`{permissions}` is not a device permission; use some of r, w and m"
            ));
        }
        seen.push(c);
    }
    if permissions.is_empty() {
        return Err("empty device permissions; use some of r, w and m".into());
    }
    Ok(Device {
        host: host.to_string(),
        container: container.to_string(),
        permissions: permissions.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_in_powers_of_1024() {
        assert_eq!(size("1g"), Ok(1 << 30));
        assert_eq!(size("512M"), Ok(512 << 20));
        assert_eq!(size("1.5GiB"), Ok(3 << 29));
        assert_eq!(size("64mb"), Ok(64 << 20));
        assert_eq!(size("1048576"), Ok(1 << 20));
        for bad in ["", "g", "1x", "-1g", "1e9", "0", "99999999999t", "1 g; rm"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies() {
        assert_eq!(restart_policy("always"), Ok(RestartPolicy::Always));
        assert_eq!(
            restart_policy("on-failure:3"),
            Ok(RestartPolicy::OnFailure(3))
        );
        assert!(restart_policy("sometimes").is_err());
        assert!(restart_policy("on-failure:-1").is_err());
    }

    #[test]
    fn volumes_bind_or_stay_anonymous() {
        let v = volume("/srv/pg:/opt/postgres:ro,z").expect("bind");
        assert_eq!(v.bind().as_deref(), Some("/srv/pg:/opt/postgres:ro,z"));
        let named = volume("backups:/var/lib/barman").expect("named");
        assert_eq!(named.bind().as_deref(), Some("backups:/var/lib/barman"));
        let anonymous = volume("/opt/postgres").expect("anonymous");
        assert_eq!(anonymous.source, None);
        assert_eq!(anonymous.bind(), None);
        assert_eq!(
            volume("/opt/postgres:ro")
                .expect("anonymous ro")
                .options
                .as_deref(),
            Some("ro")
        );
        for bad in [
            "rel/ative:/x",
            "/srv:/",
            "/a:x",
            "/a/../etc:/x",
            "/a:/x:bogus",
            "a b:/x",
            "/a:/x\n/b:/y",
            "/a:/b:/c:ro",
        ] {
            assert!(volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn published_ports_in_docker_syntax() {
        let p = |t: &str| published_port(t).expect(t);
        assert_eq!(
            p("5432"),
            PublishedPort {
                host_ip: None,
                host_port: None,
                container_port: "5432/tcp".into()
            }
        );
        assert_eq!(p("15432:5432").host_port, Some(15432));
        let full = p("127.0.0.1:15432:5432/udp");
        assert_eq!(full.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(full.container_port, "5432/udp");
        assert_eq!(p("[::1]:15432:5432").host_ip.as_deref(), Some("::1"));
        assert_eq!(p("127.0.0.1::5432").host_port, None);
        for bad in [
            "",
            "70000",
            "1000-1010:5432",
            "x:1:2",
            "5432/icmp",
            "a:b:c:d",
        ] {
            assert!(published_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn devices_stay_under_dev() {
        assert_eq!(
            device("/dev/fuse").expect("fuse"),
            Device {
                host: "/dev/fuse".into(),
                container: "/dev/fuse".into(),
                permissions: "rwm".into()
            }
        );
        assert_eq!(device("/dev/sdb:r").expect("perms").permissions, "r");
        assert_eq!(
            device("/dev/sdb:/dev/xvdb:rw").expect("all").container,
            "/dev/xvdb"
        );
        for bad in [
            "/etc/passwd",
            "/dev/../etc/shadow",
            "/dev/sdb:/dev/x:rwx",
            "/dev/a:rr",
        ] {
            assert!(device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_checked_for_their_place() {
        assert!(env_name("PGTZ").is_ok());
        for bad in ["1A", "A-B", "A=B", "container", ""] {
            assert!(env_name(bad).is_err(), "{bad}");
        }
        assert!(sysctl_name("net.ipv4.ip_forward").is_ok());
        assert!(sysctl_name("net..x").is_err());
        assert!(capability("NET_ADMIN").is_ok());
        assert!(capability("NET ADMIN").is_err());
        assert!(security_opt("seccomp=unconfined").is_ok());
        assert!(security_opt("a\nb").is_err());
        assert!(printable("a\u{7}").is_err());
    }
}
