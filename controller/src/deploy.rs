//! The deploy pipeline, one module per step: gather → plan → run → report.
//!
//! - `gather`: bootstrap, facts, settings, live topology, certificates, verifiers and drift,
//!   into one owned [`crate::planner::ClusterState`]; all IO before the apply happens here.
//! - plan: [`crate::planner::plan`], pure.
//! - `run`: applies the plan through the agents, in the orchestrator's order, with progress.
//! - `report`: the summary, the exit outcome and `<dir>/deploy.log`.
//!
//! `commands::deploy` strings the steps together.

pub mod gather;
mod passwords;
pub mod report;
pub mod run;
pub mod ship;

pub use gather::{Gathered, gather};
pub use report::{DeployLog, DeployOutcome};
