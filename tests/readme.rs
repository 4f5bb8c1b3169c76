//! The README's commands, run as written: every command line in its code blocks either runs
//! here (from the workspace root, in README order, `deprovision` last) or is a template with
//! `<placeholders>`, or is named in [`NOT_RUN`] with the reason.
//!
//! Costs one demo deploy of the seed (4 hosts, about 1–2 minutes with images cached).

use std::process::Command;

use tpa_e2e::{e2e_guard, without_cargo_test_env, workspace_root};

/// Commands the test does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("./scripts/test", "it is the command that runs this test"),
    (
        "tpa-controller image build",
        "the demo builds a missing image itself; rebuilding costs 90 s",
    ),
    (
        "target/release/tpa-controller switchover demo/fosdem",
        "tests/replication.rs runs switchovers (and back) on its own cluster",
    ),
    (
        "target/release/tpa-controller restore demo/fosdem",
        "its time is an example (before the demo's first backup); tests/restore.rs runs a \
         point-in-time restore to a new host on its own cluster",
    ),
];

/// The command lines of the README's indented code blocks, continuation lines joined.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in readme.lines() {
        let Some(code) = line.strip_prefix("    ") else {
            continue;
        };
        let code = code.trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(code);
        commands.push(std::mem::take(&mut pending));
    }
    commands
}

fn is_template(command: &str) -> bool {
    command.contains('<') && command.contains('>')
}

#[test]
fn readme_commands_are_found() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README");
    let commands = readme_commands(&readme);
    assert!(commands.iter().any(|c| c.starts_with("./scripts/demo")));
    assert!(commands.iter().any(|c| c.starts_with("./scripts/test")));
    let sample = "text\n\n    a \\\n      b\n    # comment\n    c <dir>\n";
    assert_eq!(readme_commands(sample), ["a b", "c <dir>"]);
    assert!(is_template("c <dir>") && !is_template("a b"));
}

#[test]
fn readme_commands_work_as_written() {
    let Some(_serial) = e2e_guard("readme_commands_work_as_written") else {
        return;
    };
    let root = workspace_root();
    assert!(
        !root.join("demo/fosdem/inventory.json").exists(),
        "a demo cluster exists in demo/fosdem: run `target/release/tpa-controller deprovision \
         demo/fosdem` first (this test brings up and removes its own)"
    );
    // Whatever happens below, the demo's containers do not outlive the test (they would hold
    // the seed's host names for every later scenario).
    let demo = root.join("demo/fosdem");
    let _cleanup = tpa_e2e::Cleanup {
        dir: &demo,
        cluster: "fosdem",
    };
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let (mut last, mut first): (Vec<String>, Vec<String>) = readme_commands(&readme)
        .into_iter()
        .filter(|c| !is_template(c))
        .filter(|c| !NOT_RUN.iter().any(|(prefix, _)| c.starts_with(prefix)))
        .partition(|c| c.contains(" deprovision "));
    first.append(&mut last);
    assert!(first.len() >= 3, "too few runnable commands: {first:?}");
    let path = format!(
        "{}:{}",
        root.join("target/release").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in &first {
        eprintln!("$ {command}");
        let output = without_cargo_test_env(&mut Command::new("bash"))
            .args(["-c", command])
            .current_dir(&root)
            .env("PATH", &path)
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "README command failed: {command}");
        if command.contains("select version()") {
            assert!(stdout.contains("PostgreSQL"), "{stdout}");
        }
        // Right after the deploy, status shows the cluster as the deploy left it: every slot
        // in use, not each host's health round from before the other hosts were done.
        if command.contains(" status ") {
            assert!(
                !stdout.contains("inactive"),
                "stale health round:\n{stdout}"
            );
        }
    }
    assert!(
        !root.join("demo/fosdem/inventory.json").exists(),
        "the README's deprovision left the inventory behind"
    );
}
