//! `tpa-agent` library: the per-host agent's resource engine and facts gathering.
pub mod facts;
pub mod resource;
