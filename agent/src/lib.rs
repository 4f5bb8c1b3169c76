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
//! - [`renew`]: certificate renewal over the mutual-TLS channel (new key on the host, CSR, atomic install).
//! - [`trust`]: replacing the CA certificates the agent trusts, for a CA rotation.
//! - [`server`]: the gRPC server: enrolment phase, then the `Agent` service over mutual TLS.
//! - [`exec`]: the Exec RPC's streaming command runner (for people: hooks, `cmd`), bounded in time.
//! - [`query`]: the Query RPC: one SQL query through the `Sql` resource's psql runner.
//! - [`server_key`]: the ServerKey RPC: the Postgres server key made on the host, its public half, a CSR.
//! - [`repo`]: the RepoSync/RepoPut RPCs: the cluster's package repository shipped to hosts that cannot
//!   mount it.
//! - [`binary`]: the SHA-256 of the agent's binary file, for Hello.
//! - [`health`]: the scheduled health checks, their cache, and the opt-in Prometheus `/metrics`.
//! - [`resource`]: the resource engine (check, diff, apply), one file per kind.
//! - [`facts`]: facts about the host and its Postgres instance.

#![forbid(unsafe_code)]

pub mod binary;
pub mod config;
pub mod enrol;
pub mod exec;
pub mod facts;
pub mod health;
pub mod query;
pub mod renew;
pub mod repo;
pub mod resource;
pub mod server;
pub mod server_key;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod trust;
