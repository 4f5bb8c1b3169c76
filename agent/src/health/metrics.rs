//! `/metrics` in the Prometheus text exposition format (version 0.0.4), rendered from the
//! samples of the latest round.
//!
//! Rendered by hand rather than with the `prometheus-client` crate: every figure is a gauge
//! taken as a snapshot once per round (not a counter updated in place), so a registry of live
//! metric objects would only be filled and emptied again each round; what the format needs of
//! us is HELP/TYPE lines and label-value escaping, which are below and tested.

use std::fmt::Write as _;

use super::assess::Sample;

/// The HELP text of every metric the agent serves; a sample of another name is not served.
pub const HELP: &[(&str, &str)] = &[
    (
        "tpa_health_up",
        "1 when the latest round found nothing Critical, else 0.",
    ),
    (
        "tpa_health_check_status",
        "Each check's status: 0 ok, 1 warning, 2 critical, 3 unknown.",
    ),
    (
        "tpa_health_last_round_timestamp_seconds",
        "When the latest round of checks ran (Unix seconds).",
    ),
    (
        "tpa_health_round_duration_seconds",
        "How long the latest round of checks took.",
    ),
    (
        "tpa_agent_certificate_expiry_seconds",
        "Seconds until the agent's certificate expires.",
    ),
    (
        "tpa_pg_up",
        "1 when the local Postgres accepts connections.",
    ),
    (
        "tpa_pg_in_recovery",
        "1 when the local Postgres is in recovery (a replica).",
    ),
    (
        "tpa_pg_timeline",
        "The timeline the local Postgres writes or replays.",
    ),
    (
        "tpa_pg_wal_receiver_streaming",
        "1 when the replica's WAL receiver is streaming.",
    ),
    (
        "tpa_pg_replay_lag_bytes",
        "WAL the replica received and has not replayed yet.",
    ),
    (
        "tpa_pg_last_replay_age_seconds",
        "Seconds since the last transaction the replica replayed was committed.",
    ),
    (
        "tpa_pg_slot_active",
        "1 when the replication slot is in use.",
    ),
    (
        "tpa_pg_slot_retained_bytes",
        "WAL the replication slot keeps on the primary.",
    ),
    (
        "tpa_disk_size_bytes",
        "Size of the filesystem holding the path.",
    ),
    (
        "tpa_disk_available_bytes",
        "Space available to unprivileged users on the filesystem holding the path.",
    ),
    (
        "tpa_systemd_unit_active",
        "1 when the unit deploy keeps running is active.",
    ),
    (
        "tpa_systemd_failed_units",
        "Units in the failed state on the host.",
    ),
    (
        "tpa_patroni_running",
        "1 when Patroni reports its member running or streaming.",
    ),
    (
        "tpa_barman_check_ok",
        "1 when barman check passes for the server.",
    ),
    (
        "tpa_barman_last_backup_age_seconds",
        "Age of the server's newest backup.",
    ),
    (
        "tpa_barman_receive_wal_running",
        "1 when Barman streams the server's WAL.",
    ),
    (
        "tpa_barman_last_drill_passed",
        "1 when the server's last restore drill passed.",
    ),
];

/// The text served at `/metrics`: for each known metric that has samples, its HELP and TYPE
/// lines, then its samples.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (name, help) in HELP {
        let mut of_name = samples.iter().filter(|s| s.name == *name).peekable();
        if of_name.peek().is_none() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in of_name {
            out.push_str(name);
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(out, " {}", value(s.value));
        }
    }
    out
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn sample(name: &'static str, labels: &[(&'static str, &str)], value: f64) -> Sample {
        Sample {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            value,
        }
    }

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let samples = [
            sample("tpa_pg_slot_retained_bytes", &[("slot", "vub")], 16777216.0),
            sample("tpa_pg_up", &[], 1.0),
            sample("tpa_pg_slot_retained_bytes", &[("slot", "a\"b\\c\nd")], 0.0),
            sample("tpa_pg_last_replay_age_seconds", &[], 0.25),
            sample("not_a_known_metric", &[], 1.0),
        ];
        expect![[r#"
            # HELP tpa_pg_up 1 when the local Postgres accepts connections.
            # TYPE tpa_pg_up gauge
            tpa_pg_up 1
            # HELP tpa_pg_last_replay_age_seconds Seconds since the last transaction the replica replayed was committed.
            # TYPE tpa_pg_last_replay_age_seconds gauge
            tpa_pg_last_replay_age_seconds 0.25
            # HELP tpa_pg_slot_retained_bytes WAL the replication slot keeps on the primary.
            # TYPE tpa_pg_slot_retained_bytes gauge
            tpa_pg_slot_retained_bytes{slot="vub"} 16777216
            tpa_pg_slot_retained_bytes{slot="a\"b\\c\nd"} 0
        "#]]
        .assert_eq(&render(&samples));
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(-2.0), "-2");
    }
}
