//! The controller<->agent contract: `agent.proto` (package `tpa.agent.v1`), its generated code, and
//! conversions between the protobuf messages and the domain types of `tpa-common`.
//!
//! The generated code in `src/gen/` is checked in; ordinary builds need no protoc and no build script.
//! `tests/bootstrap.rs` regenerates it (pure Rust: protox + tonic-prost-build) and fails when it is stale.
//!
//! # Layout
//!
//! - [`pb`]: the generated messages, clients (`pb::agent_client`, `pb::enrol_client`) and servers.
//! - `resource`, `query`, `event`, `facts`, `health`: `TryFrom<pb::X> for domain::X` (fallible: proto3 fields
//!   are all optional) and `From<domain::X> for pb::X`; one pair per resource kind.
//! - [`ApplyEvent`], [`HealthReport`]: domain twins of the two stream/report messages that have no type in
//!   `tpa-common`.
//! - [`CONTROLLER_IDENTITY`], [`spki_fingerprint`]: the names both ends check during enrolment and mTLS.
//! - `redact`: `Debug` for messages that carry secrets, which never prints them.

#![forbid(unsafe_code)]

mod error;
mod event;
mod facts;
mod health;
mod identity;
mod query;
mod redact;
mod resource;

pub use self::error::{ConversionError, ResourceConversionError};
pub use self::event::ApplyEvent;
pub use self::health::HealthReport;
pub use self::identity::{CONTROLLER_IDENTITY, spki_fingerprint};

/// The protocol version this build speaks; `Agent.Hello` returns it. Bump it on any incompatible change to
/// `agent.proto`. Defined in `tpa-common` (facts report it too); re-exported here as the contract's version.
pub const PROTOCOL_VERSION: u32 = tpa_common::facts::PROTOCOL_VERSION;

/// The default TCP port the agent listens on.
pub const DEFAULT_AGENT_PORT: u16 = 7443;

/// The generated protobuf messages, clients and servers of package `tpa.agent.v1`.
#[allow(
    clippy::all,
    rust_2018_idioms,
    missing_docs,
    missing_debug_implementations
)]
pub mod pb {
    include!("gen/tpa.agent.v1.rs");
}
