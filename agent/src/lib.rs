//! `tpa-agent`: the small per-host agent. It applies typed, idempotent resources and reports facts and
//! health to the controller over mutual-TLS gRPC (`tpa-proto`), after enrolling with a single-use join token.
//! It holds no cluster knowledge.
//!
//! # Layout
//!
//! - [`config`]: `/etc/tpa-agent/agent.toml`: name, listen address, state directory.
//! - [`tls`]: the agent's key (generated on the host), certificates, the two TLS configurations and the
//!   controller-identity check.
//! - [`enrol`]: `tpa-agent init` and the enrolment RPCs' logic (join token, CSR, certificate install).
//! - [`server`]: the gRPC server: enrolment phase, then the `Agent` service over mutual TLS.
//! - [`exec`]: the Exec RPC's streaming command runner.
//! - [`health`]: health checks as a pure function of facts and certificate expiry.
//! - [`resource`]: the resource engine (check, diff, apply), one module per kind.
//! - [`facts`]: facts about the host and its Postgres instance.

#![forbid(unsafe_code)]

pub mod config;
pub mod enrol;
pub mod exec;
pub mod facts;
pub mod health;
pub mod resource;
pub mod server;
pub mod tls;
