//! Facts an agent reports about its host: OS, hardware, addresses and the state of the Postgres
//! instance the controller asked about (data dir and port are request parameters; the agent holds
//! no cluster knowledge).

/// Protocol version of the agent <-> controller contract; bumped on incompatible changes so a
/// controller can tell an old agent.
pub const PROTOCOL_VERSION: u32 = 2;

/// Everything the controller's planner needs to know about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub hostname: String,
    /// `ID` from /etc/os-release, e.g. "debian".
    pub os_id: String,
    /// `VERSION_ID` from /etc/os-release, e.g. "12".
    pub os_version_id: String,
    /// `VERSION_CODENAME` from /etc/os-release, e.g. "bookworm".
    pub os_codename: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub disks: Vec<Disk>,
    /// Non-loopback IP addresses of the host, without prefix length.
    pub addresses: Vec<String>,
    /// Major versions with /usr/lib/postgresql/<v>/bin/postgres present, sorted, e.g. ["15"].
    pub installed_postgres_versions: Vec<String>,
    /// State of the instance at the requested data dir; None when no data dir was requested.
    pub postgres: Option<PostgresFacts>,
    pub agent_version: String,
    pub protocol_version: u32,
}

impl Facts {
    /// The OS major version: `12` from `VERSION_ID="12"` or `"12.11"`; None when the host did
    /// not say or said something else. The one place that reads it.
    pub fn os_major(&self) -> Option<u32> {
        self.os_version_id.split('.').next()?.trim().parse().ok()
    }
}

/// One mounted filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    pub mount: String,
    pub total: u64,
    pub available: u64,
}

/// State of one Postgres instance (all best-effort: unknown is None, not an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresFacts {
    pub data_dir: String,
    /// `PG_VERSION` exists in the data dir.
    pub initialised: bool,
    /// Content of `PG_VERSION`, e.g. "15".
    pub data_version: Option<String>,
    /// The postmaster of this data dir is running.
    pub running: bool,
    /// `pg_is_in_recovery()` via the local socket; None when it could not be asked.
    pub in_recovery: Option<bool>,
    /// `pg_postmaster_start_time()` as text; None when it could not be asked.
    pub start_time: Option<String>,
    /// On a standby, the host it streams WAL from (`pg_stat_wal_receiver.sender_host`: a host
    /// name or address as its `primary_conninfo` names it); None on a primary, or when the
    /// standby is not streaming right now.
    pub upstream: Option<String>,
    /// The timeline it writes (primary) or replays (standby).
    pub timeline: Option<u32>,
    /// `pg_postmaster_start_time()` in Unix seconds (comparable across hosts).
    pub start_epoch: Option<i64>,
    /// On a primary past timeline 1: when it was promoted (its timeline history file's mtime),
    /// Unix seconds. A primary started after another was promoted is a former primary that came
    /// back, not a second primary of its own.
    pub promoted_epoch: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_major_reads_the_leading_number() {
        let with = |v: &str| Facts {
            os_version_id: v.into(),
            ..Facts::default()
        };
        assert_eq!(with("12").os_major(), Some(12));
        assert_eq!(with("13.1").os_major(), Some(13));
        assert_eq!(with("").os_major(), None);
        assert_eq!(with("sid").os_major(), None);
    }
}
