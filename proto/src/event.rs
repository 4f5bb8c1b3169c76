//! Conversions between the Apply stream's messages and [`tpa_common::event`]'s types.

use tpa_common::event::{BatchSummary, Outcome, ResourceEvent};

use crate::error::ConversionError;
use crate::pb;

/// One item of the Apply stream, in domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyEvent {
    /// The result of one resource, in batch order.
    Resource(ResourceEvent),
    /// Sent once, last.
    Summary(BatchSummary),
}

// === impl ApplyEvent ===

impl TryFrom<pb::ApplyEvent> for ApplyEvent {
    type Error = ConversionError;

    fn try_from(event: pb::ApplyEvent) -> Result<Self, Self::Error> {
        match event.event {
            Some(pb::apply_event::Event::Resource(r)) => Ok(ApplyEvent::Resource(r.try_into()?)),
            Some(pb::apply_event::Event::Summary(s)) => Ok(ApplyEvent::Summary(s.into())),
            None => Err(ConversionError::MissingField {
                message: "ApplyEvent",
                field: "event",
            }),
        }
    }
}

impl From<ApplyEvent> for pb::ApplyEvent {
    fn from(event: ApplyEvent) -> Self {
        let event = match event {
            ApplyEvent::Resource(r) => pb::apply_event::Event::Resource(r.into()),
            ApplyEvent::Summary(s) => pb::apply_event::Event::Summary(s.into()),
        };
        pb::ApplyEvent { event: Some(event) }
    }
}

// === impl ResourceEvent ===

impl TryFrom<pb::ResourceEvent> for ResourceEvent {
    type Error = ConversionError;

    fn try_from(event: pb::ResourceEvent) -> Result<Self, Self::Error> {
        Ok(ResourceEvent {
            outcome: outcome_from_pb(event.outcome)?,
            id: event.id,
            diff: event.diff,
            message: event.message,
            elapsed_ms: event.elapsed_ms,
        })
    }
}

impl From<ResourceEvent> for pb::ResourceEvent {
    fn from(event: ResourceEvent) -> Self {
        pb::ResourceEvent {
            id: event.id,
            outcome: pb::Outcome::from(event.outcome).into(),
            diff: event.diff,
            message: event.message,
            elapsed_ms: event.elapsed_ms,
        }
    }
}

// === impl Outcome ===

fn outcome_from_pb(value: i32) -> Result<Outcome, ConversionError> {
    let unknown = ConversionError::UnknownEnumValue {
        message: "ResourceEvent",
        field: "outcome",
        value,
    };
    match pb::Outcome::try_from(value).map_err(|_| unknown.clone())? {
        pb::Outcome::Unspecified => Err(unknown),
        pb::Outcome::Unchanged => Ok(Outcome::Unchanged),
        pb::Outcome::Changed => Ok(Outcome::Changed),
        pb::Outcome::WouldChange => Ok(Outcome::WouldChange),
        pb::Outcome::Failed => Ok(Outcome::Failed),
        pb::Outcome::Skipped => Ok(Outcome::Skipped),
    }
}

impl From<Outcome> for pb::Outcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Unchanged => pb::Outcome::Unchanged,
            Outcome::Changed => pb::Outcome::Changed,
            Outcome::WouldChange => pb::Outcome::WouldChange,
            Outcome::Failed => pb::Outcome::Failed,
            Outcome::Skipped => pb::Outcome::Skipped,
        }
    }
}

// === impl BatchSummary ===

impl From<pb::BatchSummary> for BatchSummary {
    fn from(s: pb::BatchSummary) -> Self {
        BatchSummary {
            unchanged: s.unchanged,
            changed: s.changed,
            would_change: s.would_change,
            failed: s.failed,
            skipped: s.skipped,
            elapsed_ms: s.elapsed_ms,
        }
    }
}

impl From<BatchSummary> for pb::BatchSummary {
    fn from(s: BatchSummary) -> Self {
        pb::BatchSummary {
            unchanged: s.unchanged,
            changed: s.changed,
            would_change: s.would_change,
            failed: s.failed,
            skipped: s.skipped,
            elapsed_ms: s.elapsed_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let outcomes = [
            Outcome::Unchanged,
            Outcome::Changed,
            Outcome::WouldChange,
            Outcome::Failed,
            Outcome::Skipped,
        ];
        for outcome in outcomes {
            let event = ApplyEvent::Resource(ResourceEvent {
                id: "file:/x".into(),
                outcome,
                diff: Some("-a\n+b\n".into()),
                message: "changed content".into(),
                elapsed_ms: 3,
            });
            assert_eq!(
                ApplyEvent::try_from(pb::ApplyEvent::from(event.clone())),
                Ok(event)
            );
        }
        let summary = ApplyEvent::Summary(BatchSummary {
            changed: 2,
            failed: 1,
            elapsed_ms: 9,
            ..Default::default()
        });
        assert_eq!(
            ApplyEvent::try_from(pb::ApplyEvent::from(summary.clone())),
            Ok(summary)
        );
    }

    #[test]
    fn unspecified_or_unknown_outcome_is_refused() {
        for value in [0, 42] {
            let event = pb::ResourceEvent {
                id: "x".into(),
                outcome: value,
                ..Default::default()
            };
            assert_eq!(
                ResourceEvent::try_from(event),
                Err(ConversionError::UnknownEnumValue {
                    message: "ResourceEvent",
                    field: "outcome",
                    value
                })
            );
        }
    }

    #[test]
    fn empty_apply_event_is_refused() {
        let err = ApplyEvent::try_from(pb::ApplyEvent { event: None }).unwrap_err();
        assert_eq!(err.to_string(), "ApplyEvent.event is missing");
    }
}
