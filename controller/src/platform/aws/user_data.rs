//! The user data an instance boots with: a cloud-init `#cloud-config` document that installs
//! the SSH host key the controller generated (so the known-hosts file is written from what we
//! made, with no trust on first use), sets the host name, and lets the login user in with the
//! cluster key.
//!
//! The document is JSON, which is YAML too: every value is quoted by the serializer, never by
//! hand. Values are still checked first (host name, user name, key lines), so a hostile
//! config.yml value is refused with its name instead of being smuggled into a field.

use anyhow::{Context, bail};
use serde_json::json;

/// What one instance's first boot needs.
pub struct FirstBoot<'a> {
    pub host_name: &'a str,
    /// The login user (`ansible_user`); `root` enables root login with the cluster key.
    pub login_user: &'a str,
    /// The cluster's SSH public key (one line).
    pub cluster_key: &'a str,
    /// The host's ed25519 key pair: OpenSSH private key and public key line.
    pub host_private: &'a str,
    pub host_public: &'a str,
}

/// Renders the `#cloud-config` document.
pub fn render(boot: &FirstBoot<'_>) -> anyhow::Result<String> {
    if !valid_host_name(boot.host_name) {
        bail!(
            "host name `{}` cannot be an instance's host name",
            boot.host_name.escape_debug()
        );
    }
    if !valid_user(boot.login_user) {
        bail!(
            "ansible_user `{}` is not a login name: use lowercase letters, digits, `_` and `-`",
            boot.login_user.escape_debug()
        );
    }
    check_key_line(boot.cluster_key).context("the cluster's SSH public key")?;
    check_key_line(boot.host_public).context("the generated host key")?;
    if !boot.host_public.starts_with("ssh-ed25519 ") {
        bail!("the generated host key is not an ed25519 key");
    }
    let private = boot.host_private;
    if !private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        || !private
            .trim_end()
            .ends_with("-----END OPENSSH PRIVATE KEY-----")
    {
        bail!("the generated host key is not an OpenSSH private key");
    }
    let mut doc = json!({
        "hostname": boot.host_name,
        "preserve_hostname": false,
        // Only our key: the image's own keys (if any) and generated ones go.
        "ssh_deletekeys": true,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": private,
            "ed25519_public": boot.host_public.trim(),
        },
    });
    if boot.login_user == "root" {
        doc["disable_root"] = json!(false);
        doc["ssh_authorized_keys"] = json!([boot.cluster_key.trim()]);
    } else {
        doc["users"] = json!([
            "default",
            {
                "name": boot.login_user,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [boot.cluster_key.trim()],
            }
        ]);
    }
    let body = serde_json::to_string_pretty(&doc).context("rendering user data")?;
    Ok(format!("#cloud-config\n{body}\n"))
}

/// One `type base64 [comment]` line, with nothing that could end the line or the field.
fn check_key_line(key: &str) -> anyhow::Result<()> {
    let key = key.trim();
    let mut parts = key.splitn(3, ' ');
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        bail!("not an OpenSSH public key line");
    };
    let kind_ok = kind
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-@.".contains(c));
    let blob_ok = !blob.is_empty()
        && blob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if !kind_ok || !blob_ok || key.chars().any(char::is_control) {
        bail!("not an OpenSSH public key line");
    }
    Ok(())
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn valid_user(user: &str) -> bool {
    let mut chars = user.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && user.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";

    fn boot<'a>(host: &'a str, user: &'a str, cluster_key: &'a str) -> FirstBoot<'a> {
        FirstBoot {
            host_name: host,
            login_user: user,
            cluster_key,
            host_private: PRIVATE,
            host_public: "ssh-ed25519 AAAAC3NzaHOST root@alder",
        }
    }

    #[test]
    fn installs_our_host_key_and_the_login() {
        let text = render(&boot("alder", "admin", "ssh-ed25519 AAAACLUSTER tpa")).unwrap();
        expect_test::expect![[r#"
            #cloud-config
            {
              "hostname": "alder",
              "preserve_hostname": false,
              "ssh_deletekeys": true,
              "ssh_genkeytypes": [],
              "ssh_keys": {
                "ed25519_private": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n",
                "ed25519_public": "ssh-ed25519 AAAAC3NzaHOST root@alder"
              },
              "users": [
                "default",
                {
                  "name": "admin",
                  "shell": "/bin/bash",
                  "ssh_authorized_keys": [
                    "ssh-ed25519 AAAACLUSTER tpa"
                  ],
                  "sudo": "ALL=(ALL) NOPASSWD:ALL"
                }
              ]
            }
        "#]]
        .assert_eq(&text);
        let root = render(&boot("alder", "root", "ssh-ed25519 AAAACLUSTER tpa")).unwrap();
        assert!(root.contains("\"disable_root\": false"), "{root}");
        assert!(!root.contains("\"users\""), "{root}");
    }

    #[test]
    fn hostile_values_are_refused() {
        let key = "ssh-ed25519 AAAACLUSTER tpa";
        for (host, user, k, expected) in [
            ("alder\nruncmd: [reboot]", "admin", key, "host name"),
            ("alder", "admin\"; rm -rf /", key, "ansible_user"),
            ("alder", "Admin", key, "ansible_user"),
            (
                "alder",
                "admin",
                "ssh-ed25519 AAAA\nruncmd: [x]",
                "cluster's SSH public key",
            ),
            (
                "alder",
                "admin",
                "ssh-ed25519 AA\"AA",
                "cluster's SSH public key",
            ),
            ("alder", "admin", "", "cluster's SSH public key"),
        ] {
            let err = format!("{:#}", render(&boot(host, user, k)).unwrap_err());
            assert!(err.contains(expected), "{err}");
        }
        // A comment may hold anything printable: the serializer quotes it.
        let text = render(&boot(
            "alder",
            "admin",
            "ssh-ed25519 AAAA a \"quoted\" comment",
        ))
        .unwrap();
        assert!(
            text.contains(r#""ssh-ed25519 AAAA a \"quoted\" comment""#),
            "{text}"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(text.trim_start_matches("#cloud-config\n")).unwrap();
        assert_eq!(parsed["hostname"], "alder");
    }
}
