//! Tidy checks over the whole workspace, run by plain `cargo test`: every Rust file says what it
//! is for in a `//!` comment, and every declared dependency is used by the crate declaring it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tpa_e2e::workspace_root;

/// Directories never scanned: build output, VCS data, demo clusters and package repositories.
const SKIPPED_DIRS: &[&str] = &["target", ".git", "demo", "local-repo"];

/// Checked-in generated code: it uses dependencies, but carries no module doc of ours.
fn is_generated(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "gen")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} .rs files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !is_generated(f))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` comment saying what they are for:\n  {}",
        missing.join("\n  ")
    );
}

/// Dependency names a crate declares (normal, dev and build), as written in its Cargo.toml.
fn declared(manifest: &toml::Table) -> BTreeSet<String> {
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|section| manifest.get(*section)?.as_table())
        .flat_map(|deps| deps.keys().cloned())
        .collect()
}

fn read_manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).expect("read Cargo.toml");
    text.parse().expect("Cargo.toml parses")
}

/// Whether `ident` appears as a whole word in any Rust file of `files`.
fn used_in(ident: &str, files: &[PathBuf]) -> bool {
    files.iter().any(|f| {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        text.match_indices(ident).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + ident.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    })
}

#[test]
fn every_declared_dependency_is_used() {
    let root = workspace_root();
    let workspace = read_manifest(&root.join("Cargo.toml"));
    let members: Vec<String> = workspace["workspace"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    let mut problems = Vec::new();
    let mut used_by_members = BTreeSet::new();
    for member in &members {
        let dir = root.join(member);
        let manifest = read_manifest(&dir.join("Cargo.toml"));
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for dep in declared(&manifest) {
            used_by_members.insert(dep.clone());
            if !used_in(&dep.replace('-', "_"), &files) {
                problems.push(format!(
                    "{member}/Cargo.toml declares `{dep}`, which no file of {member} uses"
                ));
            }
        }
    }
    let workspace_deps = workspace["workspace"]["dependencies"]
        .as_table()
        .expect("[workspace.dependencies]");
    for dep in workspace_deps.keys() {
        if !used_by_members.contains(dep) {
            problems.push(format!(
                "Cargo.toml [workspace.dependencies] declares `{dep}`, which no crate uses"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "remove these dependencies:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_word_check_tells_a_dependency_from_a_longer_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.rs");
    std::fs::write(&file, "use tokio_stream::StreamExt;\n").expect("write");
    let files = [file];
    assert!(used_in("tokio_stream", &files));
    assert!(!used_in("tokio", &files));
}
