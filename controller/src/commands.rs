//! One module per CLI verb: each takes parsed arguments and does the work; `main.rs` only
//! parses and dispatches.

pub mod backup;
pub mod client_cert;
pub mod cmd;
pub mod configure;
pub mod deploy;
pub mod deployed;
pub mod deprovision;
pub mod download_packages;
pub mod image;
pub mod passwords;
pub mod provision;
pub mod restore;
pub mod rotate_ca;
pub mod status;
pub mod switchover;
pub mod test;
pub mod verify_backup;
