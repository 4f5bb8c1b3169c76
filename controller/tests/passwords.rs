//! `store-password` and `show-password` through the real binary: a password piped on stdin is
//! stored encrypted, shown back on stdout alone, never echoed on stderr; the key lives under
//! `XDG_CONFIG_HOME`, and `TPA_SECRETS_KEY` opens the store on a machine without the key file.

mod support;

use support::machine;

const VAULT_NAME: &str = "8f2c7d1e-4b9a-4c1f-9e0a-2d6b5f3a7c11";
const PASSWORD: &str = "piped-S3cret-for-ada";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_piped_password_is_stored_encrypted_and_shown_back_alone() {
    let m = machine();
    let stored = m.run_with(
        &["-v", "store-password", m.dir(), "ada_lovelace"],
        &format!("{PASSWORD}\n"),
        &[],
    );
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    assert_eq!(
        text(&stored.stdout),
        "stored password for ada_lovelace: applied on the next deploy\n"
    );
    assert!(!text(&stored.stderr).contains(PASSWORD));

    let store = std::fs::read(m.cluster.join("secrets.enc")).expect("store written");
    assert!(!text(&store).contains(PASSWORD), "plaintext on disk");
    let key_file = m.config_home.join(format!("tpa/keys/{VAULT_NAME}.key"));
    assert!(
        key_file.is_file(),
        "key named after vault_name, outside the cluster directory"
    );

    let shown = m.run_with(&["-vv", "show-password", m.dir(), "ada_lovelace"], "", &[]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert_eq!(text(&shown.stdout), format!("{PASSWORD}\n"));
    assert!(!text(&shown.stderr).contains(PASSWORD));
}

#[test]
fn show_password_for_an_unknown_user_exits_1_with_what_to_do() {
    let m = machine();
    let out = m.run_with(&["show-password", m.dir(), "nobody"], "", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "no password stored for nobody: deploy generates one for users with \
             generate_password, or use store-password"
        ),
        "{stderr}"
    );
}

#[test]
fn random_passwords_are_generated_and_an_empty_stdin_stores_nothing() {
    let m = machine();
    let empty = m.run_with(&["store-password", m.dir(), "grace"], "", &[]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(text(&empty.stderr).contains("nothing stored"));
    assert!(!m.cluster.join("secrets.enc").exists());

    let stored = m.run_with(&["store-password", m.dir(), "grace", "--random"], "", &[]);
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    let shown = m.run_with(&["show-password", m.dir(), "grace"], "", &[]);
    let password = text(&shown.stdout);
    let password = password.strip_suffix('\n').expect("newline-terminated");
    assert_eq!(password.len(), 32);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn on_another_machine_the_key_comes_from_tpa_secrets_key_or_the_error_says_where_to_put_it() {
    let m = machine();
    let stored = m.run_with(
        &["store-password", m.dir(), "ada_lovelace"],
        &format!("{PASSWORD}\n"),
        &[],
    );
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    let key_file = m.config_home.join(format!("tpa/keys/{VAULT_NAME}.key"));
    let key = std::fs::read_to_string(&key_file).expect("key file");
    std::fs::remove_file(&key_file).expect("move the key away");

    let missing = m.run_with(&["show-password", m.dir(), "ada_lovelace"], "", &[]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = text(&missing.stderr);
    assert!(stderr.contains(&key_file.display().to_string()), "{stderr}");
    assert!(stderr.contains("TPA_SECRETS_KEY"), "{stderr}");

    let shown = m.run_with(
        &["show-password", m.dir(), "ada_lovelace"],
        "",
        &[("TPA_SECRETS_KEY", key.trim())],
    );
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert_eq!(text(&shown.stdout), format!("{PASSWORD}\n"));
}
