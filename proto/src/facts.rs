//! Conversions between `pb::Facts` and [`tpa_common::facts::Facts`]. Infallible both ways: every field has a
//! meaningful proto3 default.

use tpa_common::facts::{Disk, Facts, PostgresFacts};

use crate::pb;

// === impl Facts ===

impl From<pb::Facts> for Facts {
    fn from(f: pb::Facts) -> Self {
        Facts {
            hostname: f.hostname,
            os_id: f.os_id,
            os_version_id: f.os_version_id,
            os_codename: f.os_codename,
            cpus: f.cpus,
            memory_bytes: f.memory_bytes,
            disks: f.disks.into_iter().map(Into::into).collect(),
            addresses: f.addresses,
            installed_postgres_versions: f.installed_postgres_versions,
            postgres: f.postgres.map(Into::into),
            agent_version: f.agent_version,
            protocol_version: f.protocol_version,
        }
    }
}

impl From<Facts> for pb::Facts {
    fn from(f: Facts) -> Self {
        pb::Facts {
            hostname: f.hostname,
            os_id: f.os_id,
            os_version_id: f.os_version_id,
            os_codename: f.os_codename,
            cpus: f.cpus,
            memory_bytes: f.memory_bytes,
            disks: f.disks.into_iter().map(Into::into).collect(),
            addresses: f.addresses,
            installed_postgres_versions: f.installed_postgres_versions,
            postgres: f.postgres.map(Into::into),
            agent_version: f.agent_version,
            protocol_version: f.protocol_version,
        }
    }
}

// === impl Disk ===

impl From<pb::Disk> for Disk {
    fn from(d: pb::Disk) -> Self {
        Disk {
            mount: d.mount,
            total: d.total,
            available: d.available,
        }
    }
}

impl From<Disk> for pb::Disk {
    fn from(d: Disk) -> Self {
        pb::Disk {
            mount: d.mount,
            total: d.total,
            available: d.available,
        }
    }
}

// === impl PostgresFacts ===

impl From<pb::PostgresFacts> for PostgresFacts {
    fn from(p: pb::PostgresFacts) -> Self {
        PostgresFacts {
            data_dir: p.data_dir,
            initialised: p.initialised,
            data_version: p.data_version,
            running: p.running,
            in_recovery: p.in_recovery,
            start_time: p.start_time,
            upstream: p.upstream,
            timeline: p.timeline,
            start_epoch: p.start_epoch,
            promoted_epoch: p.promoted_epoch,
        }
    }
}

impl From<PostgresFacts> for pb::PostgresFacts {
    fn from(p: PostgresFacts) -> Self {
        pb::PostgresFacts {
            data_dir: p.data_dir,
            initialised: p.initialised,
            data_version: p.data_version,
            running: p.running,
            in_recovery: p.in_recovery,
            start_time: p.start_time,
            upstream: p.upstream,
            timeline: p.timeline,
            start_epoch: p.start_epoch,
            promoted_epoch: p.promoted_epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip() {
        let facts = Facts {
            hostname: "kinetic".into(),
            os_id: "debian".into(),
            os_version_id: "12".into(),
            os_codename: "bookworm".into(),
            cpus: 2,
            memory_bytes: 1 << 30,
            disks: vec![Disk {
                mount: "/".into(),
                total: 10,
                available: 5,
            }],
            addresses: vec!["10.0.0.2".into()],
            installed_postgres_versions: vec!["15".into()],
            postgres: Some(PostgresFacts {
                data_dir: "/opt/postgres/data".into(),
                initialised: true,
                data_version: Some("15".into()),
                running: true,
                in_recovery: Some(true),
                start_time: None,
                upstream: Some("ulb".into()),
                timeline: Some(2),
                start_epoch: Some(1_700_000_000),
                promoted_epoch: None,
            }),
            agent_version: "0.1.0".into(),
            protocol_version: 1,
        };
        assert_eq!(Facts::from(pb::Facts::from(facts.clone())), facts);
        let without_pg = Facts {
            postgres: None,
            ..facts
        };
        assert_eq!(Facts::from(pb::Facts::from(without_pg.clone())), without_pg);
    }
}
