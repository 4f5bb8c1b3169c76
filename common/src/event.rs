//! Events an agent reports while applying a batch of resources: one [`ResourceEvent`] per
//! resource, then one [`BatchSummary`].

use std::fmt;

/// What happened to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Already in the desired state; nothing was touched.
    Unchanged,
    /// Was out of state and has been changed.
    Changed,
    /// Check mode: out of state, would be changed by a real apply.
    WouldChange,
    /// Checking or applying failed; `message` says why.
    Failed,
    /// Not attempted because an earlier resource of the batch failed.
    Skipped,
}

impl Outcome {
    /// Lowercase name for progress output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Changed => "changed",
            Outcome::WouldChange => "would change",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of checking/applying one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceEvent {
    /// The `ResourceSpec::id` this event is about.
    pub id: String,
    pub outcome: Outcome,
    /// Unified diff of what changed (or would change); masked for secrets.
    pub diff: Option<String>,
    /// Human-readable reason or error; never contains secrets.
    pub message: String,
    /// Wall time spent on this resource.
    pub elapsed_ms: u64,
}

/// Counts of outcomes over a whole batch, sent after the last [`ResourceEvent`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSummary {
    pub unchanged: u32,
    pub changed: u32,
    pub would_change: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Wall time of the whole batch.
    pub elapsed_ms: u64,
}

impl BatchSummary {
    /// Counts one outcome.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Changed => self.changed += 1,
            Outcome::WouldChange => self.would_change += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
        }
    }

    /// True when no resource failed or was skipped.
    pub fn succeeded(&self) -> bool {
        self.failed == 0 && self.skipped == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_success() {
        let mut s = BatchSummary::default();
        s.record(Outcome::Changed);
        s.record(Outcome::Unchanged);
        assert!(s.succeeded());
        s.record(Outcome::Failed);
        s.record(Outcome::Skipped);
        assert_eq!((s.changed, s.unchanged, s.failed, s.skipped), (1, 1, 1, 1));
        assert!(!s.succeeded());
    }
}
