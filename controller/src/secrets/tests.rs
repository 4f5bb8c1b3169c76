//! The secrets store against real files in temporary directories, with injected key sources
//! (never the process environment).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// A cluster directory and, elsewhere, a key directory, as on an operator's machine.
struct Fixture {
    _tmp: tempfile::TempDir,
    cluster: PathBuf,
    keys: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = tmp.path().join("cluster");
    std::fs::create_dir(&cluster).expect("cluster dir");
    let keys = tmp.path().join("config/tpa/keys");
    Fixture {
        cluster,
        keys,
        _tmp: tmp,
    }
}

impl Fixture {
    fn open(&self, vault_name: Option<&str>) -> anyhow::Result<Secrets> {
        Secrets::open_with_key_source(
            &self.cluster,
            vault_name,
            KeySource::Directory(self.keys.clone()),
        )
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

const PASSWORD: &str = "correct-horse-battery-staple";

#[test]
fn values_survive_save_and_reopen() {
    let f = fixture();
    let mut s = f.open(Some("vault-1")).expect("open new");
    s.set("ada_lovelace_password", PASSWORD.to_string());
    s.set("other", "two".to_string());
    s.save().expect("save");

    let s = f.open(Some("vault-1")).expect("reopen");
    assert_eq!(s.get("ada_lovelace_password"), Some(PASSWORD));
    assert_eq!(s.get("other"), Some("two"));
    assert_eq!(s.get("absent"), None);
    assert_eq!(s.key_id(), "vault-1");
}

#[test]
fn the_store_file_holds_no_plaintext_and_is_private() {
    let f = fixture();
    let mut s = f.open(Some("vault-1")).expect("open");
    s.set(&password_key("ada_lovelace"), PASSWORD.to_string());
    s.save().expect("save");

    let path = f.cluster.join(STORE_FILE);
    let bytes = std::fs::read(&path).expect("store written");
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(PASSWORD.as_bytes()), "plaintext password on disk");
    assert!(!contains(b"ada_lovelace"), "secret names are encrypted too");
    assert!(
        contains(b"key-id: vault-1\n"),
        "the header names the key id"
    );
    assert_eq!(mode(&path), 0o600);
    // Nothing else (temporary files, the key) was left in the cluster directory.
    let names: Vec<_> = std::fs::read_dir(&f.cluster)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [OsStr::new(STORE_FILE)]);
}

#[test]
fn the_key_file_is_created_outside_the_cluster_directory_and_private() {
    let f = fixture();
    let mut s = f.open(Some("vault-1")).expect("open");
    s.set("x", "y".to_string());
    s.save().expect("save");

    let key_file = f.keys.join("vault-1.key");
    assert!(!key_file.starts_with(&f.cluster));
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&f.keys), 0o700);
    let text = std::fs::read_to_string(&key_file).expect("key file");
    assert_eq!(Key::from_text(&text).expect("key text").bytes().len(), 32);
    // The store file does not contain the key.
    let store = std::fs::read_to_string(f.cluster.join(STORE_FILE)).expect("store");
    assert!(!store.contains(text.trim()));
}

#[test]
fn each_save_re_encrypts_with_a_fresh_nonce_and_unchanged_saves_write_nothing() {
    let f = fixture();
    let path = f.cluster.join(STORE_FILE);
    let mut s = f.open(None).expect("open");
    s.save().expect("save of an empty, unchanged store");
    assert!(!path.exists(), "an unchanged new store is not written");
    assert!(!f.keys.exists(), "nor is a key created for it");

    s.set("a", "1".to_string());
    s.save().expect("save");
    let first = std::fs::read(&path).expect("store");
    std::fs::remove_file(&path).expect("remove");
    s.save().expect("second save");
    assert!(!path.exists(), "save after save is a no-op");

    s.set("a", "1".to_string());
    s.save().expect("same value");
    assert!(!path.exists(), "setting the same value is no change");
    s.set("a", "2".to_string());
    s.set("a", "1".to_string());
    s.save().expect("changed and back");
    let second = std::fs::read(&path).expect("store");
    assert_ne!(first, second, "a new nonce each save");
}

#[test]
fn without_vault_name_a_random_key_id_is_kept_in_the_header() {
    let f = fixture();
    let mut s = f.open(None).expect("open");
    let id = s.key_id().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    s.set("a", "1".to_string());
    s.save().expect("save");
    assert!(f.keys.join(format!("{id}.key")).is_file());

    // The header wins over config.yml, which may have gained a vault_name since.
    let s = f.open(Some("added-later")).expect("reopen");
    assert_eq!(s.key_id(), id);
    assert_eq!(s.get("a"), Some("1"));
}

#[test]
fn a_wrong_key_is_an_error_naming_the_file_and_the_key_source() {
    let f = fixture();
    let mut s = f.open(Some("vault-1")).expect("open");
    s.set("a", PASSWORD.to_string());
    s.save().expect("save");
    std::fs::write(
        f.keys.join("vault-1.key"),
        format!("{}\n", Key::generate().expect("key").to_text().as_str()),
    )
    .expect("replace key");

    let err = format!("{:#}", f.open(Some("vault-1")).expect_err("wrong key"));
    let store = f.cluster.join(STORE_FILE);
    assert!(
        err.contains(&format!("cannot decrypt {}", store.display())),
        "{err}"
    );
    assert!(
        err.contains(&f.keys.join("vault-1.key").display().to_string()),
        "{err}"
    );
    assert!(!err.contains(PASSWORD));
}

#[test]
fn a_missing_key_is_an_error_saying_where_it_was_looked_for_and_how_to_bring_it() {
    let f = fixture();
    let mut s = f.open(Some("vault-1")).expect("open");
    s.set("a", "1".to_string());
    s.save().expect("save");
    std::fs::remove_file(f.keys.join("vault-1.key")).expect("remove key");

    let err = format!("{:#}", f.open(Some("vault-1")).expect_err("missing key"));
    assert!(
        err.contains(&f.keys.join("vault-1.key").display().to_string()),
        "{err}"
    );
    assert!(err.contains(KEY_ENV), "{err}");
    assert!(!f.keys.join("vault-1.key").exists(), "no new key was made");
}

#[test]
fn a_key_given_as_text_opens_the_store_a_key_file_wrote() {
    let f = fixture();
    let mut s = f.open(Some("vault-1")).expect("open");
    s.set("a", PASSWORD.to_string());
    s.save().expect("save");
    let text = std::fs::read_to_string(f.keys.join("vault-1.key")).expect("key");

    // As on another machine: no key directory at all, only the variable.
    let source = KeySource::from_env_values(Some(&text), None, None).expect("env key");
    let mut s = Secrets::open_with_key_source(&f.cluster, Some("vault-1"), source).expect("open");
    assert_eq!(s.get("a"), Some(PASSWORD));
    s.set("b", "2".to_string());
    s.save().expect("save with the given key");
    assert_eq!(f.open(None).expect("reopen with file").get("b"), Some("2"));

    let other = KeySource::from_env_values(
        Some(Key::generate().expect("key").to_text().as_str()),
        None,
        None,
    )
    .expect("env key");
    let err = format!(
        "{:#}",
        Secrets::open_with_key_source(&f.cluster, None, other).expect_err("wrong env key")
    );
    assert!(err.contains("with the key from TPA_SECRETS_KEY"), "{err}");
}

#[test]
fn env_values_choose_the_key_source() {
    let dir = |s: KeySource| match s {
        KeySource::Directory(d) => d,
        other => panic!("expected a directory, got {other:?}"),
    };
    let xdg = OsStr::new("/xdg");
    let home = OsStr::new("/home/ada");
    assert_eq!(
        dir(KeySource::from_env_values(None, Some(xdg), Some(home)).expect("xdg")),
        Path::new("/xdg/tpa/keys")
    );
    assert_eq!(
        dir(KeySource::from_env_values(None, Some(OsStr::new("")), Some(home)).expect("home")),
        Path::new("/home/ada/.config/tpa/keys")
    );
    assert_eq!(
        dir(KeySource::from_env_values(Some("  "), None, Some(home)).expect("blank key")),
        Path::new("/home/ada/.config/tpa/keys")
    );
    assert!(matches!(
        KeySource::from_env_values(None, None, None),
        Err(KeyError::NoConfigDir)
    ));

    let text = Key::generate().expect("key").to_text();
    let given = KeySource::from_env_values(Some(&format!("{}\n", text.as_str())), None, None)
        .expect("base64 key with a newline, as `cat` gives it");
    assert!(matches!(given, KeySource::Given { ref origin, .. } if origin == KEY_ENV));

    let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 16]);
    let err = KeySource::from_env_values(Some(&short), None, Some(home)).expect_err("16 bytes");
    assert!(err.to_string().contains("16 bytes, not 32"), "{err}");
    let err = KeySource::from_env_values(Some("not base64 at all!"), None, Some(home))
        .expect_err("not base64");
    let message = err.to_string();
    assert!(message.starts_with("TPA_SECRETS_KEY: "), "{message}");
    assert!(
        !message.contains("not base64 at all!"),
        "the value is never quoted"
    );
}

#[test]
fn password_or_generate_is_stable_across_reopen() {
    let f = fixture();
    let mut s = f.open(Some("v")).expect("open");
    let (first, generated) = s.password_or_generate("ada_lovelace");
    assert!(generated);
    let (again, generated) = s.password_or_generate("ada_lovelace");
    assert!(!generated);
    assert_eq!(first, again);
    assert_eq!(s.get("ada_lovelace_password"), Some(first.as_str()));
    s.save().expect("save");

    let mut s = f.open(Some("v")).expect("reopen");
    let (reopened, generated) = s.password_or_generate("ada_lovelace");
    assert!(!generated);
    assert_eq!(reopened, first);

    s.set(&password_key("grace"), "chosen".to_string());
    assert_eq!(
        s.password_or_generate("grace"),
        (Zeroizing::new("chosen".to_string()), false)
    );
}

#[test]
fn generated_passwords_are_long_alphanumeric_and_distinct() {
    let passwords: Vec<_> = (0..50).map(|_| generate_password()).collect();
    for p in &passwords {
        assert_eq!(p.len(), PASSWORD_LEN);
        assert!(
            p.chars().all(|c| c.is_ascii_alphanumeric()),
            "{}",
            p.as_str()
        );
    }
    let distinct: std::collections::BTreeSet<&str> = passwords.iter().map(|p| p.as_str()).collect();
    assert_eq!(distinct.len(), passwords.len());
    // 50 × 32 characters use more than lowercase letters only.
    let all: String = passwords.iter().map(|p| p.as_str()).collect();
    assert!(all.chars().any(|c| c.is_ascii_uppercase()));
    assert!(all.chars().any(|c| c.is_ascii_digit()));
}

#[test]
fn key_ids_cannot_escape_the_key_directory() {
    let f = fixture();
    let err = format!(
        "{:#}",
        f.open(Some("../../etc/evil")).expect_err("bad vault_name")
    );
    assert!(err.contains("vault_name"), "{err}");

    // A hand-edited header is refused before any key file is looked up.
    std::fs::write(
        f.cluster.join(STORE_FILE),
        format!("{}\nkey-id: ../x\n\nAAAA\n", store_file::MAGIC),
    )
    .expect("write");
    let err = format!("{:#}", f.open(None).expect_err("bad header key id"));
    assert!(err.contains("key-id"), "{err}");
}

#[test]
fn debug_output_shows_names_but_never_values() {
    let f = fixture();
    let mut s = f.open(Some("v")).expect("open");
    s.set("ada_password", PASSWORD.to_string());
    let shown = format!("{s:?}");
    assert!(shown.contains("ada_password"), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
}
