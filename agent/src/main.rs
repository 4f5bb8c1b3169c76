//! `tpa-agent`: placeholder entry point.
fn main() {}
