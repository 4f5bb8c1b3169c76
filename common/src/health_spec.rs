//! The health spec: what an agent checks on its host, written by deploy as JSON to
//! [`SPEC_PATH`] and re-read by the agent before every round of checks. It is how the agent
//! stays generic: the controller says *what* to check (a data directory and port, the units
//! deploy keeps running, the directories whose free space matters, the commands whose answer
//! says whether a component is healthy); the agent knows only *how* to check each kind.
//!
//! ```json
//! {"interval_secs": 15,
//!  "postgres": {"data_dir": "/opt/postgres/data", "port": 5432},
//!  "units": ["postgres.service", "repmgrd.service"],
//!  "disks": [{"name": "data", "path": "/opt/postgres/data"}],
//!  "commands": [{"name": "barman", "argv": ["/etc/tpa/verify-backup", "--health", "ulb"],
//!                "run_as": "barman", "reads": "barman", "every_secs": 60}],
//!  "metrics": {"port": 9187, "listen": "localhost"}}
//! ```

use serde::{Deserialize, Serialize};

/// Where deploy writes the spec and the agent reads it.
pub const SPEC_PATH: &str = "/etc/tpa-agent/health.json";
/// Seconds between two rounds of checks when config.yml does not say (`agent_health_interval`).
pub const DEFAULT_INTERVAL_SECS: u32 = 15;
/// The bounds of `interval_secs` (and of a command's `every_secs`).
pub const MIN_INTERVAL_SECS: u32 = 5;
pub const MAX_INTERVAL_SECS: u32 = 3600;

/// Everything one agent checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Seconds between two rounds of checks.
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    /// The Postgres instance on this host, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
    /// systemd units that must be active.
    #[serde(default)]
    pub units: Vec<String>,
    /// Directories whose filesystem's free space is checked.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Commands whose answer says whether a component is healthy.
    #[serde(default)]
    pub commands: Vec<CommandSpec>,
    /// Prometheus metrics, when config.yml opts in (`agent_metrics_port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
    /// The agent's certificate is reported as Warning ("run deploy to renew") this many seconds before it
    /// expires: what config.yml sets as `agent_cert_renew_before`; absent means 30 days, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_renew_before_secs: Option<u64>,
}

/// The local Postgres: the agent connects over its unix socket as `postgres`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSpec {
    pub data_dir: String,
    pub port: u16,
}

/// One directory whose free space matters, with the name it is reported under (`data`, `wal`,
/// `barman`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub name: String,
    pub path: String,
}

/// A command run as `run_as` (root when absent); healthy when it exits 0 and, for the kinds
/// that print a report, when the report says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The check's name (`barman`, `patroni`, `etcd`); its output is kept under this name.
    pub name: String,
    /// An absolute program path and its arguments.
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// How the agent reads the output.
    pub reads: CommandOutput,
    /// Run at most this often (a slow command), else every round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u32>,
    /// Killed with its process group after this long.
    #[serde(default = "default_command_timeout")]
    pub timeout_secs: u32,
}

/// What a command's output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandOutput {
    /// Only the exit status counts (`etcdctl endpoint health`).
    Exit,
    /// A JSON array of backed-up servers (the drill program's `--health` mode).
    Barman,
    /// A JSON object with Patroni's `state` and `role` (`patroni-tpa state`).
    Patroni,
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    pub port: u16,
    pub listen: MetricsListen,
}

/// `agent_metrics_listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsListen {
    /// Plain HTTP on 127.0.0.1 only: for a Prometheus (or node exporter's textfile
    /// collector, or an SSH tunnel) on the host itself.
    Localhost,
    /// HTTPS on the agent's cluster address, with the agent's certificate, requiring a
    /// client certificate issued by the cluster CA.
    Tls,
}

impl Default for HealthSpec {
    /// What an agent checks with no spec: only itself.
    fn default() -> Self {
        HealthSpec {
            interval_secs: DEFAULT_INTERVAL_SECS,
            postgres: None,
            units: vec![],
            disks: vec![],
            commands: vec![],
            metrics: None,
            cert_renew_before_secs: None,
        }
    }
}

fn default_interval() -> u32 {
    DEFAULT_INTERVAL_SECS
}

fn default_command_timeout() -> u32 {
    60
}

impl HealthSpec {
    /// Why the spec cannot be used, if it cannot (bounds the agent relies on).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let bounded = |secs: u32| (MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&secs);
        if !bounded(self.interval_secs) {
            problems.push(format!(
                "interval_secs {} is outside {MIN_INTERVAL_SECS}..={MAX_INTERVAL_SECS}",
                self.interval_secs
            ));
        }
        for c in &self.commands {
            if !c.argv.first().is_some_and(|p| p.starts_with('/')) {
                problems.push(format!(
                    "command {}: argv must start with an absolute program path",
                    c.name
                ));
            }
            if c.every_secs.is_some_and(|s| !bounded(s)) || !(1..=600).contains(&c.timeout_secs) {
                problems.push(format!(
                    "command {}: every_secs or timeout_secs out of bounds",
                    c.name
                ));
            }
        }
        for d in &self.disks {
            if !d.path.starts_with('/') {
                problems.push(format!(
                    "disk {}: path {:?} is not absolute",
                    d.name, d.path
                ));
            }
        }
        if self.metrics.as_ref().is_some_and(|m| m.port == 0) {
            problems.push("metrics port 0".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_has_defaults_and_bad_ones_are_said() {
        let spec: HealthSpec = serde_json::from_str("{}").expect("parse");
        assert_eq!(spec.interval_secs, DEFAULT_INTERVAL_SECS);
        assert!(spec.problems().is_empty());
        let bad: HealthSpec = serde_json::from_str(
            r#"{"interval_secs": 1, "disks": [{"name": "d", "path": "rel"}],
                "commands": [{"name": "x", "argv": ["sh"], "reads": "exit"}]}"#,
        )
        .expect("parse");
        assert_eq!(bad.problems().len(), 3, "{:?}", bad.problems());
        assert!(serde_json::from_str::<HealthSpec>(r#"{"intervall": 3}"#).is_err());
    }
}
