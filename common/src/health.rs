//! Health as a closed set of statuses, reported by the agent's Health RPC.

/// Overall or per-check health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// Ordered so that the worst status is the maximum.
    #[default]
    Ok,
    Unknown,
    Warning,
    Critical,
}

/// One named health check and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub name: String,
    pub status: HealthStatus,
    /// Short explanation; never contains secrets.
    pub message: String,
}

/// The worst status among `checks` (Ok when there are none).
pub fn overall(checks: &[HealthCheck]) -> HealthStatus {
    checks.iter().map(|c| c.status).max().unwrap_or_default()
}

/// An age for people: `45 s`, `12 min`, `5 h`, `3 days`.
pub fn age_text(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_is_worst() {
        let c = |status| HealthCheck {
            name: "x".into(),
            status,
            message: String::new(),
        };
        assert_eq!(overall(&[]), HealthStatus::Ok);
        assert_eq!(
            overall(&[c(HealthStatus::Ok), c(HealthStatus::Warning)]),
            HealthStatus::Warning
        );
        assert_eq!(
            overall(&[c(HealthStatus::Critical), c(HealthStatus::Unknown)]),
            HealthStatus::Critical
        );
    }
}
