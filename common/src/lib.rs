//! Types shared by the controller and the agent. This crate does no IO.
//!
//! # Layout
//!
//! - [`resource`]: desired-state resources ([`resource::ResourceSpec`], [`resource::Resource`]) that the
//!   controller renders and the agent checks and applies.
//! - [`event`]: per-resource results ([`event::ResourceEvent`], [`event::Outcome`]) and the batch summary.
//! - [`facts`]: what an agent reports about its host and its Postgres instance ([`facts::Facts`]).
//! - [`health`]: health statuses and checks ([`health::HealthStatus`]).
//! - [`health_spec`]: what an agent checks on its host, written by deploy ([`health_spec::HealthSpec`]).
//! - [`query`]: a SQL query an agent runs for the controller ([`query::SqlQuery`]).
//! - [`secret`]: wrappers whose `Debug` never shows secrets ([`secret::Secret`], [`secret::Content`],
//!   [`secret::SqlText`]), so the types above can derive `Debug`.
#![forbid(unsafe_code)]

pub mod event;
pub mod facts;
pub mod health;
pub mod health_spec;
pub mod query;
pub mod resource;
pub mod secret;
