//! Guards the checked-in generated code: regenerates `src/gen/` from `agent.proto` (pure Rust: protox +
//! tonic-prost-build, no protoc) and fails if the result differs from what is checked in.
//!
//! After editing `agent.proto`, run `cargo test -p tpa-proto --test bootstrap` twice: the first run rewrites
//! `src/gen/` and fails, the second passes.

use std::path::{Path, PathBuf};

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("temp dir");
    generate(&root, out.path());

    let checked_in_dir = root.join("src/gen");
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(out.path()).expect("read generated dir") {
        let entry = entry.expect("dir entry");
        let fresh = std::fs::read_to_string(entry.path()).expect("read generated file");
        let checked_in = checked_in_dir.join(entry.file_name());
        if std::fs::read_to_string(&checked_in).ok().as_deref() != Some(fresh.as_str()) {
            std::fs::create_dir_all(&checked_in_dir).expect("create src/gen");
            std::fs::write(&checked_in, fresh).expect("write src/gen");
            stale.push(checked_in.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "generated code was stale and has been rewritten: {stale:?}; review the change and re-run the test"
    );
}

/// Keep in sync with `src/redact.rs`, which must implement `Debug` for each of them.
const REDACTED: &[&str] = &[
    "EnvVar",
    "ExecRequest",
    "File",
    "FileIfAbsent",
    "SqlText",
    "RequestCsrRequest",
    "InstallCertificateRequest",
];

fn generate(root: &Path, out_dir: &Path) {
    let fds = protox::compile([root.join("agent.proto")], [root]).expect("compile agent.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        // Messages that carry secrets (env values, tokens, file content, SQL) get hand-written redacting
        // `Debug` impls in `src/redact.rs` instead of derived ones.
        .skip_debug(REDACTED.iter().map(|m| format!(".tpa.agent.v1.{m}")))
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("generate Rust code from agent.proto");
}
