//! Platforms create (provision) and destroy (deprovision) the hosts of a cluster.
//!
//! Only `docker` exists so far; `bare` and `aws` slot in beside it, each producing the same
//! [`crate::inventory::Inventory`].

pub mod docker;
