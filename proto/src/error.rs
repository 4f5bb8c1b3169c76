//! The one error of protobuf -> domain conversions: a message that is well-formed protobuf but not a valid
//! domain value (proto3 makes every message field optional and every enum open).

/// A protobuf message that cannot be converted into its domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// A required message or oneof field is absent.
    #[error("{message}.{field} is missing")]
    MissingField {
        message: &'static str,
        field: &'static str,
    },
    /// An enum field holds a value this side does not know (or the UNSPECIFIED zero value).
    #[error("{message}.{field} has unknown value {value}: is the peer a different version?")]
    UnknownEnumValue {
        message: &'static str,
        field: &'static str,
        value: i32,
    },
    /// A numeric field does not fit the domain type.
    #[error("{message}.{field} = {value} is out of range")]
    OutOfRange {
        message: &'static str,
        field: &'static str,
        value: u64,
    },
}

impl ConversionError {
    /// Attaches the id of the resource being converted, so the error says which one is wrong.
    pub(crate) fn in_resource(self, id: &str) -> ResourceConversionError {
        ResourceConversionError {
            id: id.to_string(),
            source: self,
        }
    }
}

/// A resource of an Apply batch that cannot be converted, with its id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {id}: {source}")]
pub struct ResourceConversionError {
    pub id: String,
    #[source]
    pub source: ConversionError,
}
