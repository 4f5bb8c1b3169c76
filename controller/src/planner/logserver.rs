//! The log server (`log-server` role; TPA's M1 puts it on the Barman host): rsyslog on that
//! host receives the Postgres and tpa-agent logs of every host of the cluster over TLS and
//! keeps them per host, `/var/log/tpa/<host>/postgres.log` and `agent.log` (docs/logs.md).
//!
//! - **Every host** of a cluster with a log server (the log server too) gets rsyslog with its
//!   GnuTLS driver and `/etc/rsyslog.d/50-tpa-forward.conf`: messages whose program is
//!   `postgres` (tpa's `postgres.service`), `patroni` (Postgres under Patroni logs through
//!   it) or `tpa-agent` go, as RFC 5424 over TLS to port 6514, to each log server, through a
//!   queue that survives the server being away. Postgres and the agent keep logging to the
//!   journal; rsyslog reads the journal (Debian's rsyslog takes what journald forwards).
//! - **TLS is mutual, from the cluster CA.** Each host presents a certificate of the CA for
//!   its name and address (usable as server and client): its etcd/Patroni certificate when it
//!   has one, else `/etc/tpa/<cluster>-log.crt`, made like the others (the key generated on
//!   the host, the CA signing its CSR; `deploy/gather.rs`). The client accepts only a
//!   certificate naming the log server; the server accepts only certificates naming a host of
//!   the cluster.
//! - **The server** (`/etc/rsyslog.d/50-tpa-log-server.conf`) listens on its own address,
//!   and files what arrives by the sender's address (the TCP peer, which a client cannot
//!   choose, unlike the host name inside a message): one `omfile` per known host with a
//!   fixed path, so nothing a client sends becomes part of a path. Messages from any other
//!   address are dropped. Remote messages never reach the host's own /var/log/syslog.
//!
//! Host names reach file paths and rsyslog strings: they are checked here ([`safe_name`])
//! on top of config.yml's validation, and every string is quoted ([`quote`]).

use super::dir;
use super::postgres::owned_file;
use super::replica::CA_FILE;
use super::{HostState, PlanInput, Stage, StageName, patroni, running_service};
use crate::config::{Cluster, Instance, Role};

/// The port rsyslog listens on for TLS (RFC 5425's syslog-tls).
pub const PORT: u16 = 6514;
/// Where the log server keeps every host's logs, one directory per host.
pub const LOG_DIR: &str = "/var/log/tpa";
/// The forwarding rules, on every host.
pub const FORWARD_CONF: &str = "/etc/rsyslog.d/50-tpa-forward.conf";
/// The listener and the per-host files, on the log server.
pub const SERVER_CONF: &str = "/etc/rsyslog.d/50-tpa-log-server.conf";
/// Rotation of the per-host files, on the log server.
pub const LOGROTATE_CONF: &str = "/etc/logrotate.d/tpa-log-server";
/// rsyslog, its TLS driver and logrotate: every host of a cluster with a log server.
pub const PACKAGES: &[&str] = &["logrotate", "rsyslog", "rsyslog-gnutls"];
/// The programs whose messages are forwarded, and the file each goes to on the server.
const PROGRAMS: &[(&str, &str)] = &[
    ("postgres", "postgres.log"),
    ("patroni", "postgres.log"),
    ("tpa-agent", "agent.log"),
];
const UNIT: &str = "rsyslog.service";

/// True when some deployed instance of config.yml is a log server: then every host ships
/// its logs there.
pub fn wanted(cluster: &Cluster) -> bool {
    cluster
        .instances
        .iter()
        .any(|i| i.has_role(Role::LogServer) && !i.provision_only)
}

/// True when `instance` needs a certificate of its own for rsyslog: it is in a cluster with
/// a log server and has no etcd/Patroni certificate to reuse.
pub fn needs_log_cert(cluster: &Cluster, instance: &Instance) -> bool {
    wanted(cluster) && !patroni::needs_ha_cert(cluster, instance)
}

/// `/etc/tpa/<cluster>-log.crt` and `.key`: rsyslog's certificate on hosts without an
/// etcd/Patroni one.
pub fn log_cert_paths(cluster_name: &str) -> (String, String) {
    (
        format!("/etc/tpa/{cluster_name}-log.crt"),
        format!("/etc/tpa/{cluster_name}-log.key"),
    )
}

/// The certificate and key rsyslog uses on `instance`, and the PEM the plan writes there.
fn cert_of<'a>(
    cluster: &Cluster,
    instance: &Instance,
    host: &'a HostState,
) -> ((String, String), Option<&'a String>) {
    if patroni::needs_ha_cert(cluster, instance) {
        (patroni::ha_cert_paths(&cluster.name), host.ha_cert.as_ref())
    } else {
        (log_cert_paths(&cluster.name), host.log_cert.as_ref())
    }
}

/// A host name as it may appear in a path and an rsyslog string: what config.yml accepts
/// (RFC 1123 labels), checked again here because this is where a bad one would do harm.
pub fn safe_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "{name:?}: not a host name that can name a log directory (lowercase letters, digits, \
             `-` and `.`); rename the instance in config.yml"
        ))
    }
}

/// An rsyslog RainerScript string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' | '\0' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The log servers that the plan can reach: (name, address), in config order.
fn servers(input: &PlanInput<'_>) -> Vec<(String, String)> {
    input
        .cluster
        .instances
        .iter()
        .filter(|i| i.has_role(Role::LogServer) && !i.provision_only)
        .filter_map(|i| Some((i.name.clone(), input.inventory.host(&i.name)?.address)))
        .map(|(n, a)| (n, a.to_string()))
        .collect()
}

/// Every deployed host that may send logs: (name, address), in config order.
fn senders(input: &PlanInput<'_>) -> Vec<(String, String)> {
    input
        .cluster
        .instances
        .iter()
        .filter(|i| !i.provision_only)
        .filter_map(|i| Some((i.name.clone(), input.inventory.host(&i.name)?.address)))
        .map(|(n, a)| (n, a.to_string()))
        .collect()
}

/// The `logs` stage of `instance` (right after `sys`, so that Postgres' first lines are
/// shipped too), or None when the cluster has no log server.
pub fn stage(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
) -> Result<Option<Stage>, String> {
    let servers = servers(input);
    if servers.is_empty() {
        return Ok(None);
    }
    let ((cert, key), pem) = cert_of(input.cluster, instance, host);
    let mut resources = vec![
        dir("/etc/tpa", "root", 0o755),
        owned_file(CA_FILE, input.state.ca_pem.clone(), "root", 0o644),
    ];
    let mut restart_on = vec![];
    if let Some(pem) = pem {
        let spec = owned_file(&cert, pem.clone(), "root", 0o644);
        restart_on.push(spec.id.clone());
        resources.push(spec);
    }
    let forward = owned_file(
        FORWARD_CONF,
        forward_conf(&servers, (&cert, &key))?,
        "root",
        0o644,
    );
    restart_on.push(forward.id.clone());
    resources.push(forward);
    if instance.has_role(Role::LogServer) {
        let address = input
            .inventory
            .host(&instance.name)
            .map(|h| h.address.to_string())
            .ok_or_else(|| format!("{}: not in the inventory", instance.name))?;
        resources.push(dir(LOG_DIR, "root", 0o750));
        let server = owned_file(
            SERVER_CONF,
            server_conf(&address, &senders(input), (&cert, &key))?,
            "root",
            0o644,
        );
        restart_on.push(server.id.clone());
        resources.push(server);
        resources.push(owned_file(
            LOGROTATE_CONF,
            LOGROTATE.to_string(),
            "root",
            0o644,
        ));
    }
    resources.push(running_service(UNIT, vec![], restart_on));
    Ok(Some(Stage {
        name: StageName::Logs,
        resources,
        after: vec![],
    }))
}

/// `50-tpa-forward.conf`: this host's Postgres and agent messages to every log server.
pub fn forward_conf(
    servers: &[(String, String)],
    (cert, key): (&str, &str),
) -> Result<String, String> {
    let mut out = String::from(
        "# Managed by tpa (planner/logserver.rs): this host's Postgres and tpa-agent messages,\n\
         # from the journal, to the cluster's log server over TLS (cluster CA, both ways).\n\
         # They stay in the journal too.\n\
         ruleset(name=\"tpa_forward\") {\n",
    );
    for (n, (name, address)) in servers.iter().enumerate() {
        let name = safe_name(name)?;
        out.push_str(&format!(
            "  action(type=\"omfwd\" target={target} port=\"{PORT}\" protocol=\"tcp\"\n\
             \x20        template=\"RSYSLOG_SyslogProtocol23Format\"\n\
             \x20        StreamDriver=\"gtls\" StreamDriverMode=\"1\"\n\
             \x20        StreamDriverAuthMode=\"x509/name\" StreamDriverPermittedPeers={peer}\n\
             \x20        streamDriver.CAFile={ca} streamDriver.CertFile={cert}\n\
             \x20        streamDriver.KeyFile={key}\n\
             \x20        queue.type=\"LinkedList\" queue.size=\"100000\" queue.filename=\"tpa_forward_{n}\"\n\
             \x20        queue.saveOnShutdown=\"on\" action.resumeRetryCount=\"-1\"\n\
             \x20        action.resumeInterval=\"2\")\n",
            target = quote(address),
            peer = quote(name),
            ca = quote(CA_FILE),
            cert = quote(cert),
            key = quote(key),
        ));
    }
    out.push_str("}\n");
    let programs: Vec<String> = PROGRAMS
        .iter()
        .map(|(p, _)| format!("$programname == {}", quote(p)))
        .collect();
    out.push_str(&format!(
        "if {} then {{\n  call tpa_forward\n}}\n",
        programs.join(" or ")
    ));
    Ok(out)
}

/// `50-tpa-log-server.conf`: the TLS listener on `address`, and per sender address the
/// fixed files of that host.
pub fn server_conf(
    address: &str,
    senders: &[(String, String)],
    (cert, key): (&str, &str),
) -> Result<String, String> {
    let peers = senders
        .iter()
        .map(|(n, _)| safe_name(n).map(quote))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = format!(
        "# Managed by tpa (planner/logserver.rs): the cluster's log server. Hosts connect over\n\
         # TLS with a certificate of the cluster CA naming a host of the cluster; each host's\n\
         # messages go to {LOG_DIR}/<host>/, chosen by the connection's address.\n\
         module(load=\"imtcp\")\n\
         input(type=\"imtcp\" address={address} port=\"{PORT}\" ruleset=\"tpa_remote\"\n\
         \x20     StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\"\n\
         \x20     StreamDriver.AuthMode=\"x509/name\" PermittedPeer=[{peers}]\n\
         \x20     streamDriver.CAFile={ca} streamDriver.CertFile={cert}\n\
         \x20     streamDriver.KeyFile={key})\n\
         ruleset(name=\"tpa_remote\") {{\n",
        address = quote(address),
        peers = peers.join(", "),
        ca = quote(CA_FILE),
        cert = quote(cert),
        key = quote(key),
    );
    for (name, from) in senders {
        let name = safe_name(name)?;
        out.push_str(&format!("  if $fromhost-ip == {} then {{\n", quote(from)));
        for file in ["agent.log", "postgres.log"] {
            let programs: Vec<String> = PROGRAMS
                .iter()
                .filter(|(_, f)| *f == file)
                .map(|(p, _)| format!("$programname == {}", quote(p)))
                .collect();
            out.push_str(&format!(
                "    if {} then {{\n      action(type=\"omfile\" file={} template=\"RSYSLOG_FileFormat\"\n\
                 \x20            dirCreateMode=\"0750\" fileCreateMode=\"0640\" fileGroup=\"adm\")\n    }}\n",
                programs.join(" or "),
                quote(&format!("{LOG_DIR}/{name}/{file}")),
            ));
        }
        out.push_str("    stop\n  }\n");
    }
    out.push_str("  stop\n}\n");
    Ok(out)
}

/// Weekly rotation, 8 weeks kept, then rsyslog reopens its files.
const LOGROTATE: &str = "# Managed by tpa: the log server's per-host files.\n\
/var/log/tpa/*/*.log {\n\
\tweekly\n\
\trotate 8\n\
\tmissingok\n\
\tnotifempty\n\
\tcompress\n\
\tdelaycompress\n\
\tsharedscripts\n\
\tpostrotate\n\
\t\t/usr/lib/rsyslog/rsyslog-rotate\n\
\tendscript\n\
}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused_before_they_reach_a_path() {
        for bad in [
            "../etc", "a/b", "a\"b", "..", "", "-x", "a..b", "UPPER", "a b", "a\nb",
        ] {
            assert!(safe_name(bad).is_err(), "{bad:?} accepted");
            let servers = [(bad.to_string(), "10.0.0.1".to_string())];
            assert!(forward_conf(&servers, ("c", "k")).is_err(), "{bad:?}");
            assert!(
                server_conf("10.0.0.1", &servers, ("c", "k")).is_err(),
                "{bad:?}"
            );
        }
        for good in ["chimay", "db-1.example.com", "a1"] {
            assert_eq!(safe_name(good), Ok(good));
        }
    }

    #[test]
    fn strings_are_quoted_for_rainerscript() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny"), r#""x\ny""#);
        assert_eq!(quote("/etc/tpa/ca.crt"), r#""/etc/tpa/ca.crt""#);
    }
}
