//! The `tpa-controller` library: everything the `tpa-controller` binary does.
//!
//! # Layout
//! - `config`: config.yml parsed into a typed, validated [`config::Cluster`].
//! - `configure`: the config.yml of a new M1 cluster (layout, names, platform settings).
//! - `cluster_dir`: where generated files live; SSH key, ssh_config and known-hosts files.
//! - `inventory`: the machine-readable record of provisioned hosts.
//! - `orchestrator`: runs a plan's stages across hosts in dependency order.
//! - `deploy`: the deploy pipeline: gather → plan → run → report.
//! - `settings`: per-host settings (port, paths, locale, version), resolved once.
//! - `scram`: SCRAM-SHA-256 verifiers, so Postgres never sees a password.
//! - `server_tls`: Postgres server certificates from host-generated keys.
//! - `ssh`: OpenSSH through the cluster's ssh_config, for bootstrap only.
//! - `progress`: spinners per host on a terminal, plain lines otherwise.
//! - `planner`: config + inventory + gathered live state → per-host stages of resources (pure).
//! - `platform`: the `Platform` trait (create/find/remove hosts, host keys, how packages and
//!   the agent reach hosts) and its implementations (`docker`, with its host images).
//! - `local_repo`: `download-packages`, the local apt repository for air-gapped hosts.
//! - `bootstrap`: installs, updates and enrols agents over SSH.
//! - `agent_client`: the mutual-TLS gRPC client that talks to `tpa-agent`, and agent enrolment.
//! - `pki`: the cluster CA: creates/loads it, issues the controller identity, signs CSRs.
//! - `secrets`: generated passwords, encrypted in the cluster directory; the key lives outside.
//! - `lock`: one deploy, provision, deprovision or store-password at a time per cluster directory.
//! - `process`: builds every child process, without the secrets key in its environment.
//! - `hooks`: the operator's hooks in `<dir>/hooks/`, read and validated.
//! - `selector`: host selectors (`all`, a host, `role:R`, `location:L`) for `cmd` and hooks.
//! - `commands`: one module per CLI verb.

#![forbid(unsafe_code)]

pub mod agent_client;
pub mod apt_keys;
pub mod bootstrap;
pub mod cluster_dir;
pub mod commands;
pub mod config;
pub mod configure;
pub mod deploy;
pub mod hooks;
pub mod inventory;
pub mod local_repo;
pub mod lock;
pub mod orchestrator;
pub mod pki;
pub mod planner;
pub mod platform;
pub mod process;
pub mod progress;
pub mod scram;
pub mod secrets;
pub mod selector;
pub mod server_tls;
pub mod settings;
pub mod ssh;
