//! Conversions between the Health messages and [`tpa_common::health`]'s types.

use std::collections::BTreeMap;

use tpa_common::health::{HealthCheck, HealthStatus};

use crate::error::ConversionError;
use crate::pb;

/// A Health RPC's answer in domain types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// The worst status among `checks`.
    pub status: HealthStatus,
    pub checks: Vec<HealthCheck>,
    /// When the round ran (Unix seconds); 0: made for the request.
    pub checked_at: i64,
    /// Reports of the health spec's commands, by name.
    pub details: BTreeMap<String, String>,
}

// === impl HealthReport ===

impl TryFrom<pb::HealthReport> for HealthReport {
    type Error = ConversionError;

    fn try_from(report: pb::HealthReport) -> Result<Self, Self::Error> {
        Ok(HealthReport {
            status: status_from_pb(report.status, "HealthReport")?,
            checks: report
                .checks
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            checked_at: report.checked_at,
            details: report.details.into_iter().collect(),
        })
    }
}

impl From<HealthReport> for pb::HealthReport {
    fn from(report: HealthReport) -> Self {
        pb::HealthReport {
            status: pb::HealthStatus::from(report.status).into(),
            checks: report.checks.into_iter().map(Into::into).collect(),
            checked_at: report.checked_at,
            details: report.details.into_iter().collect(),
        }
    }
}

// === impl HealthCheck ===

impl TryFrom<pb::HealthCheck> for HealthCheck {
    type Error = ConversionError;

    fn try_from(check: pb::HealthCheck) -> Result<Self, Self::Error> {
        Ok(HealthCheck {
            status: status_from_pb(check.status, "HealthCheck")?,
            name: check.name,
            message: check.message,
        })
    }
}

impl From<HealthCheck> for pb::HealthCheck {
    fn from(check: HealthCheck) -> Self {
        pb::HealthCheck {
            name: check.name,
            status: pb::HealthStatus::from(check.status).into(),
            message: check.message,
        }
    }
}

// === impl HealthStatus ===

fn status_from_pb(value: i32, message: &'static str) -> Result<HealthStatus, ConversionError> {
    let unknown = ConversionError::UnknownEnumValue {
        message,
        field: "status",
        value,
    };
    match pb::HealthStatus::try_from(value).map_err(|_| unknown.clone())? {
        pb::HealthStatus::Unspecified => Err(unknown),
        pb::HealthStatus::Ok => Ok(HealthStatus::Ok),
        pb::HealthStatus::Warning => Ok(HealthStatus::Warning),
        pb::HealthStatus::Critical => Ok(HealthStatus::Critical),
        pb::HealthStatus::Unknown => Ok(HealthStatus::Unknown),
    }
}

impl From<HealthStatus> for pb::HealthStatus {
    fn from(status: HealthStatus) -> Self {
        match status {
            HealthStatus::Ok => pb::HealthStatus::Ok,
            HealthStatus::Warning => pb::HealthStatus::Warning,
            HealthStatus::Critical => pb::HealthStatus::Critical,
            HealthStatus::Unknown => pb::HealthStatus::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        let check = |name: &str, status| HealthCheck {
            name: name.into(),
            status,
            message: "m".into(),
        };
        let report = HealthReport {
            status: HealthStatus::Critical,
            checks: vec![
                check("a", HealthStatus::Ok),
                check("b", HealthStatus::Warning),
                check("c", HealthStatus::Critical),
                check("d", HealthStatus::Unknown),
            ],
            checked_at: 1_700_000_000,
            details: BTreeMap::from([("barman".into(), "[]".into())]),
        };
        assert_eq!(
            HealthReport::try_from(pb::HealthReport::from(report.clone())),
            Ok(report)
        );
    }

    #[test]
    fn unspecified_status_is_refused() {
        let err = HealthReport::try_from(pb::HealthReport {
            status: 0,
            checks: vec![],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "HealthReport.status has unknown value 0: is the peer a different version?"
        );
    }
}
