//! Text of the files that configure Postgres: the conf.d split TPA uses, pg_hba.conf and
//! tpa's own postgres.service. Pure rendering, checked by golden tests.
//!
//! Every string value that comes from config.yml or the inventory is written with [`quote`],
//! so that Postgres reads back exactly that value and nothing else: no value can end its line
//! or its string and add a setting (config validation rejects control characters too).

use std::fmt::Write as _;
use std::net::IpAddr;

/// Values the rendered settings depend on, computed by the planner from config and facts.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfInput<'a> {
    /// The server certificate and key files (from the host's resolved settings).
    pub cert_file: &'a str,
    pub key_file: &'a str,
    pub host_name: &'a str,
    pub port: u16,
    pub memory_bytes: u64,
    pub max_connections: u32,
    pub shared_buffers_ratio: f64,
    /// Number of Postgres instances in the cluster (sizes WAL senders and slots).
    pub postgres_instances: u32,
    pub password_encryption: &'a str,
    pub preload_libraries: &'a [String],
}

/// The header every managed file carries, so nobody edits it by hand.
const MANAGED: &str = "# Managed by tpa: changes made here are overwritten by the next deploy.\n";

fn mb(bytes: u64, ratio: f64) -> u64 {
    ((bytes as f64 * ratio) / (1024.0 * 1024.0)).max(16.0) as u64
}

/// TPA's per-host formulas, rounded up to a multiple of 16: these settings need a restart, and
/// every standby must have at least its primary's values, so adding a host must not change
/// them (that would restart every Postgres in the cluster). 16 holds up to 6 Postgres hosts.
fn headroom(wanted: u32) -> u32 {
    wanted.max(1).div_ceil(16) * 16
}

/// `conf.d/0001-tpa_restart.conf`: settings that need a restart (TPA's list and defaults).
pub fn restart_settings(c: &ConfInput<'_>) -> String {
    let n = c.postgres_instances.max(1);
    let mut out = String::from(MANAGED);
    let settings: Vec<(&str, String)> = vec![
        ("listen_addresses", "'*'".into()),
        ("port", c.port.to_string()),
        ("unix_socket_directories", "'/var/run/postgresql'".into()),
        ("max_connections", c.max_connections.to_string()),
        (
            "shared_buffers",
            format!("{}MB", mb(c.memory_bytes, c.shared_buffers_ratio)),
        ),
        ("max_prepared_transactions", "0".into()),
        ("max_worker_processes", headroom(2 * n).to_string()),
        ("cluster_name", quote(c.host_name)),
        ("archive_mode", "on".into()),
        ("max_wal_senders", headroom(2 * n).to_string()),
        ("max_replication_slots", headroom(2 * n + 3).to_string()),
        ("wal_keep_size", "0".into()),
        ("track_commit_timestamp", "off".into()),
        ("hot_standby", "on".into()),
        ("ssl", "on".into()),
        ("ssl_ca_file", "''".into()),
        ("ssl_cert_file", quote(c.cert_file)),
        ("ssl_key_file", quote(c.key_file)),
        ("ssl_ciphers", "'HIGH:!3DES:!aNULL'".into()),
        ("ssl_prefer_server_ciphers", "on".into()),
        ("ssl_min_protocol_version", "'TLSv1.2'".into()),
        ("autovacuum_max_workers", "3".into()),
        ("autovacuum_freeze_max_age", "200000000".into()),
        ("autovacuum_multixact_freeze_max_age", "400000000".into()),
        ("wal_level", "logical".into()),
        ("wal_log_hints", "on".into()),
        ("wal_buffers", "-1".into()),
        (
            "shared_preload_libraries",
            quote(&c.preload_libraries.join(",")),
        ),
    ];
    for (name, value) in settings {
        let _ = writeln!(out, "{name} = {value}");
    }
    out
}

/// `conf.d/0000-tpa.conf`: settings a reload applies (TPA's defaults). Logs go to stderr,
/// which systemd's journal collects (TPA sends them to rsyslog instead).
pub fn reload_settings(c: &ConfInput<'_>) -> String {
    let mut out = String::from(MANAGED);
    let settings: Vec<(&str, String)> = vec![
        ("password_encryption", quote(c.password_encryption)),
        ("tcp_keepalives_idle", "53".into()),
        ("tcp_keepalives_interval", "7".into()),
        ("tcp_keepalives_count", "9".into()),
        ("temp_buffers", "16MB".into()),
        ("work_mem", "16MB".into()),
        ("maintenance_work_mem", "64MB".into()),
        ("autovacuum_work_mem", "-1".into()),
        ("bgwriter_delay", "200ms".into()),
        ("bgwriter_lru_maxpages", "100".into()),
        ("bgwriter_lru_multiplier", "2.0".into()),
        ("effective_io_concurrency", "1".into()),
        ("log_destination", "'stderr'".into()),
        ("log_timezone", "'UTC'".into()),
        ("log_checkpoints", "on".into()),
        ("log_connections", "off".into()),
        ("log_disconnections", "off".into()),
        ("log_lock_waits", "on".into()),
        ("log_statement", "'ddl'".into()),
        ("log_temp_files", "8192".into()),
        ("log_min_duration_statement", "5s".into()),
        ("log_line_prefix", "'%t [%u@%r/%a/%d:%p]: [%l] '".into()),
        ("seq_page_cost", "1.0".into()),
        ("random_page_cost", "4.0".into()),
        (
            "effective_cache_size",
            format!("{}MB", mb(c.memory_bytes, 0.5)),
        ),
        ("default_statistics_target", "100".into()),
        ("constraint_exclusion", "partition".into()),
        ("archive_command", "'/bin/true'".into()),
        ("archive_timeout", "6h".into()),
        ("wal_sender_timeout", "60s".into()),
        ("wal_receiver_timeout", "60s".into()),
        ("hot_standby_feedback", "on".into()),
        ("max_standby_streaming_delay", "30s".into()),
        ("autovacuum", "on".into()),
        ("autovacuum_naptime", "1min".into()),
        ("autovacuum_vacuum_cost_delay", "2ms".into()),
        ("checkpoint_timeout", "30min".into()),
        ("checkpoint_completion_target", "0.9".into()),
        ("max_wal_size", "4GB".into()),
        ("min_wal_size", "128MB".into()),
    ];
    for (name, value) in settings {
        let _ = writeln!(out, "{name} = {value}");
    }
    out
}

/// `conf.d/0003-tpa_restore_command.conf`: WAL a server lacks comes from the Barman host's
/// archive (`barman get-wal` over the pinned SSH trust), so a replica that fell behind its
/// slot, or a server recovering, catches up from Barman. A reload applies it (PostgreSQL 14+;
/// Barman needs 15+ here).
pub fn restore_command(barman_address: &str, server: &str) -> String {
    let command = format!("/usr/bin/barman-wal-restore -U barman {barman_address} {server} %f %p");
    format!("{MANAGED}restore_command = {}\n", quote(&command))
}

/// With `barman_archiver` (issue 9), appended to the restore_command file: the primary also
/// archives each WAL segment into Barman (`barman put-wal` over the postgres user's pinned SSH
/// trust), overriding 0000-tpa.conf's `/bin/true`. Only a primary archives (archive_mode is
/// `on`), so every Postgres host gets it and a promoted replica archives to the same server.
pub fn archive_command(barman_address: &str, server: &str) -> String {
    let command = format!("/usr/bin/barman-wal-archive {barman_address} {server} %p");
    format!("archive_command = {}\n", quote(&command))
}

/// `conf.d/9900-tpa_postgres_conf_settings.conf`: `postgres_conf_settings`, each value quoted
/// (one that the operator quoted already, as TPA asks, is kept as written).
pub fn conf_settings(settings: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::from(MANAGED);
    out.push_str("# From postgres_conf_settings in config.yml\n");
    for (name, value) in settings {
        let value = if is_quoted(value) {
            value.clone()
        } else {
            quote(value)
        };
        let _ = writeln!(out, "{name} = {value}");
    }
    out
}

/// `value` as a postgresql.conf string that Postgres's configuration file parser reads back as
/// exactly `value`: in single quotes, `'` doubled, `\` and control characters escaped (the
/// parser turns `\n`, `\t`, `\NNN` octal ... back into the characters), so it stays on one line.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// True when `value` is one complete single-quoted string as the parser lexes one (`'...'`,
/// with `''` and backslash escapes inside, no raw line break): the operator quoted it already.
pub fn is_quoted(value: &str) -> bool {
    let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        // A backslash escapes the next character; a quote must be doubled.
        let complete = match c {
            '\\' => chars.next().is_some_and(|n| !n.is_control()),
            '\'' => chars.next() == Some('\''),
            c => !c.is_control(),
        };
        if !complete {
            return false;
        }
    }
    true
}

/// One pg_hba.conf client: a cluster host and what it may connect for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaPeer {
    pub name: String,
    pub address: IpAddr,
    pub postgres: bool,
    pub barman: bool,
}

/// pg_hba.conf: peer locally, passwords on loopback, TLS + SCRAM for each cluster host, then
/// the operator's `postgres_hba_settings`. Unlike TPA there is no 0.0.0.0/0 catch-all.
///
/// `controller`: the controller machine's address on the cluster network (docker platform),
/// allowed so that operators and applications on it connect with TLS and a password.
pub fn pg_hba(
    peers: &[HbaPeer],
    controller: Option<IpAddr>,
    method: &str,
    extra: &[String],
) -> String {
    let mut out = String::from(MANAGED);
    out.push_str("# Add lines with postgres_hba_settings in config.yml.\n\n");
    let mut line = |kind: &str, db: &str, user: &str, addr: &str, method: &str| {
        let _ = writeln!(out, "{kind:<8} {db:<12} {user:<18} {addr:<20} {method}");
    };
    // The agent (root) reads as postgres without a psql process: pg_ident.conf's map `tpa`.
    line(
        "local",
        "all",
        "postgres",
        "",
        &format!("peer map={IDENT_MAP}"),
    );
    line("local", "replication", "all", "", "peer");
    line("local", "all", "all", "", "peer");
    for addr in ["127.0.0.1/32", "::1/128"] {
        line("host", "all", "all", addr, method);
        line("host", "replication", "all", addr, method);
    }
    for peer in peers {
        let bits = if peer.address.is_ipv4() { 32 } else { 128 };
        let addr = format!("{}/{bits}", peer.address);
        if peer.postgres {
            line("hostssl", "all", "all", &addr, method);
            // Replicas (and later repmgr's clones) stream as tpa's `replication` role only.
            line("hostssl", "replication", "replication", &addr, method);
        }
        if peer.barman {
            line("hostssl", "postgres", "barman", &addr, method);
            line("hostssl", "replication", "streaming_barman", &addr, method);
        }
    }
    if let Some(address) = controller {
        let bits = if address.is_ipv4() { 32 } else { 128 };
        line(
            "hostssl",
            "all",
            "all",
            &format!("{address}/{bits}"),
            method,
        );
    }
    if !extra.is_empty() {
        out.push_str("\n# postgres_hba_settings\n");
        for l in extra {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The pg_ident.conf map of pg_hba.conf's local `postgres` line.
pub const IDENT_MAP: &str = "tpa";

/// pg_ident.conf: the OS users that may log in locally as the `postgres` role, itself and
/// root, whose agent reads the server with its own client (agent/src/resource/pg_native.rs).
/// Root can become postgres anyway: the map grants nothing new.
pub fn pg_ident() -> String {
    let mut out = String::from(MANAGED);
    let _ = writeln!(out, "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME");
    for os_user in ["postgres", "root"] {
        let _ = writeln!(out, "{IDENT_MAP:<10} {os_user:<16} postgres");
    }
    out
}

/// tpa's own unit (TPA's `postgres.service`): the distribution's per-cluster units stay unused.
pub fn service_unit(bin_dir: &str, data_dir: &str) -> String {
    format!(
        "{MANAGED}[Unit]
Description=PostgreSQL database server (tpa)
After=network.target

[Service]
Type=notify
User=postgres
Group=postgres
Environment=PGDATA={data_dir}
Environment=PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj
Environment=PG_OOM_ADJUST_VALUE=0
OOMScoreAdjust=-1000
ExecStart={bin_dir}/postgres -D {data_dir}
ExecReload=/bin/kill -HUP $MAINPID
KillMode=mixed
KillSignal=SIGINT
TimeoutSec=300
Restart=on-failure

[Install]
WantedBy=multi-user.target
"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// What Postgres reads from one `name = value` line of a configuration file, for the
    /// values `quote` writes: the lexer's quoted string (guc-file.l) and GUC_scanstr's escapes.
    fn parse_line(line: &str) -> (String, String) {
        let (name, rest) = line.split_once(" = ").expect("name = value");
        let inner = rest
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .expect("one quoted string and nothing after it");
        let mut value = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    assert_eq!(
                        chars.next(),
                        Some('\''),
                        "a lone quote ends the string: {line}"
                    );
                    value.push('\'');
                }
                '\\' => match chars.next().expect("escape") {
                    'n' => value.push('\n'),
                    'r' => value.push('\r'),
                    't' => value.push('\t'),
                    'b' => value.push('\u{8}'),
                    'f' => value.push('\u{c}'),
                    d @ '0'..='7' => {
                        let mut n = d.to_digit(8).expect("octal");
                        for _ in 0..2 {
                            match chars.peek().and_then(|c| c.to_digit(8)) {
                                Some(x) => {
                                    n = n * 8 + x;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        value.push(char::from_u32(n).expect("char"));
                    }
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        (name.to_string(), value)
    }

    const HOSTILE: &[&str] = &[
        "plain",
        "it's",
        "'unbalanced",
        "ends with a quote'",
        "x'\nlisten_addresses = '*",
        "a\\'b",
        "trailing backslash\\",
        "C:\\path\\n",
        "\r\n\t\u{8}\u{c}\u{1}\u{7f}",
        "# not a comment",
        "99999999999999999999999999999999999999",
        "",
        "ünïcödé",
    ];

    #[test]
    fn every_value_reads_back_exactly_and_adds_no_line() {
        let settings: BTreeMap<String, String> = HOSTILE
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("setting_{i:02}"), v.to_string()))
            .collect();
        let text = conf_settings(&settings);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(lines.len(), settings.len(), "{text}");
        for (line, (name, value)) in lines.iter().zip(&settings) {
            assert_eq!(parse_line(line), (name.clone(), value.clone()), "{line}");
        }
    }

    #[test]
    fn a_value_the_operator_quoted_is_kept_and_everything_else_is_quoted() {
        for quoted in ["'%t [%p]: '", "'it''s'", "''", "'a\\\\b'"] {
            assert!(is_quoted(quoted), "{quoted}");
        }
        for not in [
            "16MB",
            "'a' 'b'",
            "'a",
            "'a\\'",
            "'x'\nlisten_addresses = '*'",
            "'",
            "'a''",
        ] {
            assert!(!is_quoted(not), "{not:?}");
        }
        let text = conf_settings(&BTreeMap::from([
            ("log_line_prefix".to_string(), "'%t '".to_string()),
            ("work_mem".to_string(), "16MB".to_string()),
        ]));
        assert!(text.contains("log_line_prefix = '%t '\n"), "{text}");
        assert!(text.contains("work_mem = '16MB'\n"), "{text}");
    }

    #[test]
    fn names_and_paths_from_the_inventory_are_quoted_too() {
        let libraries = ["pg_stat_statements".to_string(), "x', 'y".to_string()];
        let text = restart_settings(&ConfInput {
            cert_file: "/etc/tpa/c'1.crt",
            key_file: "/etc/tpa/c'1.key",
            host_name: "h'1",
            port: 5432,
            memory_bytes: 1 << 30,
            max_connections: 100,
            shared_buffers_ratio: 0.25,
            postgres_instances: 1,
            password_encryption: "scram-sha-256",
            preload_libraries: &libraries,
        });
        assert!(text.contains("cluster_name = 'h''1'\n"), "{text}");
        assert!(
            text.contains("ssl_key_file = '/etc/tpa/c''1.key'\n"),
            "{text}"
        );
        assert!(
            text.contains("shared_preload_libraries = 'pg_stat_statements,x'', ''y'\n"),
            "{text}"
        );
    }
}
