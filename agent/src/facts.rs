//! Gathers [`Facts`] about this host: OS release, CPUs, memory, disks, addresses, installed
//! Postgres versions and, for a data directory the controller names, that instance's state.
//!
//! Everything is best-effort: what cannot be read is left empty or `None`, never an error, so a
//! host with no Postgres (or no psql) still reports its facts.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tpa_common::facts::{Disk, Facts, PROTOCOL_VERSION, PostgresFacts};
use tpa_common::secret::SqlText;

use crate::resource::owner;
use crate::resource::psql::{self, Target};
use crate::resource::run::Timeouts;

/// How long the status query may take: facts must stay quick.
const STATUS_LIMIT: Duration = Duration::from_secs(30);

/// Where Debian installs Postgres server binaries, one directory per major version.
const POSTGRES_LIB: &str = "/usr/lib/postgresql";

/// Gathers facts; `data_dir` (None or empty: skip) and `port` name the Postgres instance to
/// inspect. Runs on a blocking thread because it reads files and may run psql.
pub async fn gather(data_dir: Option<String>, port: u16) -> Facts {
    let fallback_data_dir = data_dir.clone();
    match tokio::task::spawn_blocking(move || gather_blocking(data_dir.as_deref(), port)).await {
        Ok(facts) => facts,
        Err(error) => {
            tracing::error!(%error, "gathering facts ended abnormally");
            let mut facts = base_facts();
            facts.postgres =
                fallback_data_dir
                    .filter(|d| !d.is_empty())
                    .map(|data_dir| PostgresFacts {
                        data_dir,
                        ..PostgresFacts::default()
                    });
            facts
        }
    }
}

/// Synchronous core of [`gather`].
pub fn gather_blocking(data_dir: Option<&str>, port: u16) -> Facts {
    let mut facts = base_facts();
    if let Ok(text) = fs::read_to_string("/etc/os-release") {
        let release = parse_os_release(&text);
        facts.os_id = release.id;
        facts.os_version_id = release.version_id;
        facts.os_codename = release.codename;
    }
    facts.hostname = sysinfo::System::host_name().unwrap_or_default();
    let mut system = sysinfo::System::new();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    system.refresh_memory();
    facts.cpus = u32::try_from(system.cpus().len()).unwrap_or(u32::MAX);
    facts.memory_bytes = system.total_memory();
    facts.disks = sysinfo::Disks::new_with_refreshed_list()
        .list()
        .iter()
        .map(|d| Disk {
            mount: d.mount_point().to_string_lossy().into_owned(),
            total: d.total_space(),
            available: d.available_space(),
        })
        .collect();
    let networks = sysinfo::Networks::new_with_refreshed_list();
    facts.addresses = usable_addresses(
        networks
            .values()
            .flat_map(|n| n.ip_networks().iter().map(|ip| ip.addr)),
    );
    facts.installed_postgres_versions = installed_postgres_versions(Path::new(POSTGRES_LIB));
    facts.postgres = data_dir
        .filter(|d| !d.is_empty())
        .map(|d| postgres_facts(d, port));
    facts
}

fn base_facts() -> Facts {
    Facts {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        ..Facts::default()
    }
}

/// The fields of /etc/os-release that facts carry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
    pub codename: String,
}

/// Parses os-release text (shell-style `KEY=value`, values optionally quoted).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key {
            "ID" => release.id = value,
            "VERSION_ID" => release.version_id = value,
            "VERSION_CODENAME" => release.codename = value,
            _ => {}
        }
    }
    release
}

fn unquote(value: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(value);
    inner
        .replace("\\\"", "\"")
        .replace("\\$", "$")
        .replace("\\`", "`")
        .replace("\\\\", "\\")
}

/// Addresses other hosts could use: no loopback, no IPv6 link-local; sorted, unique.
pub fn usable_addresses(addrs: impl Iterator<Item = IpAddr>) -> Vec<String> {
    let mut out: Vec<IpAddr> = addrs
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .filter(|a| !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect();
    out.sort();
    out.dedup();
    out.iter().map(IpAddr::to_string).collect()
}

/// Major versions with `<root>/<v>/bin/postgres`, sorted numerically.
pub fn installed_postgres_versions(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("bin/postgres").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort_by(|a, b| version_key(a).cmp(&version_key(b)).then_with(|| a.cmp(b)));
    versions
}

fn version_key(version: &str) -> Vec<u64> {
    version
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// The state of the instance at `data_dir`, listening on `port`.
pub fn postgres_facts(data_dir: &str, port: u16) -> PostgresFacts {
    let dir = Path::new(data_dir);
    let data_version = fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .map(|v| v.trim().to_owned());
    let running = fs::read_to_string(dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| parse_postmaster_pid(&text))
        .is_some_and(process_is_postgres);
    let mut facts = PostgresFacts {
        data_dir: data_dir.to_owned(),
        initialised: data_version.is_some(),
        data_version,
        running,
        ..PostgresFacts::default()
    };
    if running {
        // Ask as the data directory's owner: that is the superuser the cluster was created with.
        let user =
            fs::metadata(dir).map_or_else(|_| "postgres".to_owned(), |m| owner::user_name(m.uid()));
        if let Some(status) = query_status(&user, port) {
            facts.in_recovery = Some(status.in_recovery);
            facts.start_time = Some(status.start_time);
            facts.upstream = status.upstream;
            facts.timeline = status.timeline;
            facts.start_epoch = status.start_epoch;
            facts.promoted_epoch = status.promoted_epoch;
        }
    }
    facts
}

/// The postmaster's pid: the first line of postmaster.pid.
pub fn parse_postmaster_pid(text: &str) -> Option<u32> {
    text.lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
}

/// True when `pid` is alive and is a postgres process (guards against a stale pid file whose
/// pid was reused after a crash).
fn process_is_postgres(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim().starts_with("postgres"))
}

/// What the status query says about a running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub in_recovery: bool,
    pub start_time: String,
    /// The WAL sender's host while this standby streams; None otherwise.
    pub upstream: Option<String>,
    pub timeline: Option<u32>,
    pub start_epoch: Option<i64>,
    pub promoted_epoch: Option<i64>,
}

/// Recovery state, start time, timeline, promotion time and, on a streaming standby, the host it
/// streams from. The sender host comes last: it is the only free-form column. The timeline of a
/// primary is its current WAL file's (pg_control's lags until the first checkpoint after a
/// promotion); a standby's is the one it receives, else the one it last replayed.
const STATUS_SQL: &str = "with s as (select pg_is_in_recovery() as r), \
    tli as (select case when (select r from s) \
      then coalesce((select received_tli from pg_stat_wal_receiver limit 1), \
                    (select timeline_id from pg_control_checkpoint())) \
      else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end as t) \
    select (select r from s), pg_postmaster_start_time(), \
    extract(epoch from pg_postmaster_start_time())::bigint, (select t from tli), \
    case when not (select r from s) and (select t from tli) > 1 then \
      (select extract(epoch from modification)::bigint from pg_stat_file('pg_wal/' || \
        lpad(upper(to_hex((select t from tli))), 8, '0') || '.history', true)) end, \
    coalesce((select sender_host from pg_stat_wal_receiver limit 1), '')";

fn query_status(user: &str, port: u16) -> Option<Status> {
    let target = Target {
        database: "postgres",
        port,
        user,
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let sql = SqlText::plain(STATUS_SQL);
    match psql::read_rows(target, &sql, "status query", STATUS_LIMIT, &timeouts) {
        // The row as psql's unaligned output printed it, which the parser and its tests read.
        Ok(rows) => parse_status_row(&rows.first()?.join("|")),
        Err(error) => {
            tracing::debug!(%error, "status query failed; leaving recovery state unknown");
            None
        }
    }
}

/// Parses `t|2024-05-01 10:00:00.123+00|1714557600|2|1714550000|ulb` from the status query
/// (empty columns: unknown; an empty last column: not streaming).
pub fn parse_status_row(row: &str) -> Option<Status> {
    let mut columns = row.trim_end_matches(['\n', '\r']).splitn(6, '|');
    let in_recovery = match columns.next()?.trim() {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    let start_time = columns.next()?.to_owned();
    let start_epoch = columns.next()?.trim().parse().ok();
    let timeline = columns.next()?.trim().parse().ok();
    let promoted_epoch = columns.next()?.trim().parse().ok();
    let upstream = columns
        .next()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    Some(Status {
        in_recovery,
        start_time,
        upstream,
        timeline,
        start_epoch,
        promoted_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_os_release() {
        let text = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"#;
        let release = parse_os_release(text);
        assert_eq!(
            release,
            OsRelease {
                id: "debian".into(),
                version_id: "12".into(),
                codename: "bookworm".into()
            }
        );
    }

    #[test]
    fn parses_single_quotes_and_missing_keys() {
        let release = parse_os_release("ID='ubuntu'\n# comment\nVERSION_ID=\"24.04\"\n");
        assert_eq!(
            release,
            OsRelease {
                id: "ubuntu".into(),
                version_id: "24.04".into(),
                codename: String::new()
            }
        );
    }

    #[test]
    fn filters_addresses() {
        let addrs = [
            "127.0.0.1",
            "10.0.0.5",
            "::1",
            "fe80::1",
            "fd00::5",
            "10.0.0.5",
        ]
        .iter()
        .map(|a| a.parse().expect("ip"));
        assert_eq!(usable_addresses(addrs), ["10.0.0.5", "fd00::5"]);
    }

    #[test]
    fn finds_installed_versions_numerically_sorted() {
        let root = tempfile::tempdir().expect("tempdir");
        for v in ["9.6", "15", "17"] {
            fs::create_dir_all(root.path().join(v).join("bin")).expect("mkdir");
            fs::write(root.path().join(v).join("bin/postgres"), b"").expect("touch");
        }
        fs::create_dir_all(root.path().join("16/bin")).expect("client-only version");
        assert_eq!(
            installed_postgres_versions(root.path()),
            ["9.6", "15", "17"]
        );
        assert!(installed_postgres_versions(&root.path().join("absent")).is_empty());
    }

    #[test]
    fn data_dir_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_str().expect("utf8");
        let empty = postgres_facts(data_dir, 5432);
        assert!(!empty.initialised && !empty.running && empty.data_version.is_none());

        fs::write(dir.path().join("PG_VERSION"), b"15\n").expect("write");
        // A stale pid file: pid 1 exists but is not postgres (or the pid is unused).
        fs::write(dir.path().join("postmaster.pid"), b"1\n/data\n").expect("write");
        let stale = postgres_facts(data_dir, 5432);
        assert!(stale.initialised);
        assert_eq!(stale.data_version.as_deref(), Some("15"));
        assert!(!stale.running, "pid 1 is not a postmaster");
        assert_eq!(stale.in_recovery, None);
    }

    #[test]
    fn parses_pid_and_status_row() {
        assert_eq!(
            parse_postmaster_pid("4242\n/opt/postgres/data\n1700000000\n"),
            Some(4242)
        );
        assert_eq!(parse_postmaster_pid("garbage"), None);
        assert_eq!(
            parse_status_row("f|2024-05-01 10:00:00+00|1714557600|2|1714550000|\n"),
            Some(Status {
                in_recovery: false,
                start_time: "2024-05-01 10:00:00+00".into(),
                upstream: None,
                timeline: Some(2),
                start_epoch: Some(1_714_557_600),
                promoted_epoch: Some(1_714_550_000),
            })
        );
        assert_eq!(
            parse_status_row("t|2024-05-01 10:00:00+00|1714557600|1||ulb\n"),
            Some(Status {
                in_recovery: true,
                start_time: "2024-05-01 10:00:00+00".into(),
                upstream: Some("ulb".into()),
                timeline: Some(1),
                start_epoch: Some(1_714_557_600),
                promoted_epoch: None,
            })
        );
        assert_eq!(parse_status_row("error"), None);
        assert_eq!(
            parse_status_row("t"),
            None,
            "no start time: not our query's row"
        );
    }

    #[test]
    fn gathers_this_host() {
        let facts = gather_blocking(None, 5432);
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0);
        assert!(!facts.hostname.is_empty());
        assert_eq!(facts.protocol_version, PROTOCOL_VERSION);
        assert!(facts.postgres.is_none());
        if Path::new("/etc/os-release").exists() {
            assert!(!facts.os_id.is_empty());
        }
    }
}
