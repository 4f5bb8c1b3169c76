//! Replacing the cluster CA (`rotate-ca`): the states of a rotation, kept in `<cluster dir>/tls/` so that
//! an interrupted one resumes where it stopped. `ca.crt` may hold more than one CA: the first signs, the
//! others are still trusted (by agents, Postgres clients, etcd, the log server; deploy hands the whole file
//! out).
//!
//! With the old CA still trusted, a rotation goes through three states, and deploy runs after each
//! step, so no host ever meets a certificate it does not trust:
//! 1. [`Stage::Trusting`]: a new CA is made (`ca.next.crt`, `ca.next.key.enc`) and trusted beside the old,
//!    which still signs: `ca.crt` = old + new. Deploy gives every agent and host the two.
//! 2. [`Stage::Signing`]: the new CA signs, the old is still trusted: `ca.crt` = new + old, `ca.key.enc` the
//!    new key. Deploy reissues the controller's identity, every agent's certificate (over its channel) and
//!    every Postgres, etcd and log certificate.
//! 3. Idle again: `ca.crt` = new. Deploy takes the old CA out of every trust set.
//!
//! When the old CA key leaked ([`begin_compromised`]), the old CA is not trusted for one more connection:
//! `ca.crt` becomes the new CA at once, and `tls/reenrol` tells deploy's bootstrap to re-enrol, over SSH,
//! every agent that still trusts the old one (`tpa-agent init --replace-ca`).
//!
//! Two files cannot change at once: the switch writes `ca.crt` first, then `ca.key.enc`, then removes the
//! `ca.next.*` files. [`resume`] finishes a switch interrupted between those steps.

use std::path::Path;

use anyhow::Context as _;
use zeroize::Zeroizing;

use super::{Pki, TlsFiles, cert_has_key, open_key, read};
use crate::cluster_dir::{write_file, write_if_changed};
use crate::secrets::Secrets;

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No rotation under way: `ca.crt` holds one CA.
    Idle,
    /// The new CA is trusted beside the old one, which still signs.
    Trusting,
    /// The new CA signs; the old one is still trusted.
    Signing,
}

/// The stage of the rotation in `cluster_root`, after finishing a switch that was interrupted.
pub fn resume(cluster_root: &Path, secrets: &Secrets) -> anyhow::Result<Stage> {
    let files = TlsFiles::new(cluster_root);
    if files.ca_next_key.exists() {
        let next_key = open_key(&files.ca_next_key, secrets)?;
        let key = rcgen::KeyPair::from_pem(&next_key)
            .with_context(|| format!("{}: not a private key", files.ca_next_key.display()))?;
        if cert_has_key(&read(&files.ca_cert)?, &key) {
            // `ca.crt` already starts with the new CA: the switch stopped before the key followed.
            finish_switch(&files, secrets, &next_key)?;
        } else {
            // Trusting; make sure `ca.crt` carries the new CA (begin may have stopped before).
            let bundle = format!(
                "{}{}",
                first_cert(&read(&files.ca_cert)?)?,
                read(&files.ca_next_cert)?
            );
            write_if_changed(&files.ca_cert, &bundle)?;
            return Ok(Stage::Trusting);
        }
    }
    let bundle = read(&files.ca_cert)?;
    Ok(if split(&bundle)?.len() > 1 {
        Stage::Signing
    } else {
        Stage::Idle
    })
}

/// Idle → Trusting: a new CA, named like the current one, trusted beside it.
pub fn begin(cluster_root: &Path, secrets: &Secrets) -> anyhow::Result<()> {
    let files = TlsFiles::new(cluster_root);
    let current = read(&files.ca_cert)?;
    let new = write_next(&files, secrets, &current)?;
    write_file(
        &files.ca_cert,
        format!("{}{}", first_cert(&current)?, new.cert_pem).as_bytes(),
        0o644,
    )
}

/// Trusting → Signing: the new CA signs, the old one stays trusted.
pub fn switch(cluster_root: &Path, secrets: &Secrets) -> anyhow::Result<()> {
    let files = TlsFiles::new(cluster_root);
    let current = read(&files.ca_cert)?;
    let next = read(&files.ca_next_cert)?;
    let next_key = open_key(&files.ca_next_key, secrets)?;
    write_file(
        &files.ca_cert,
        format!("{next}{}", first_cert(&current)?).as_bytes(),
        0o644,
    )?;
    finish_switch(&files, secrets, &next_key)
}

/// Signing → Idle: only the new CA is trusted.
pub fn finish(cluster_root: &Path) -> anyhow::Result<()> {
    let files = TlsFiles::new(cluster_root);
    let signing = first_cert(&read(&files.ca_cert)?)?;
    write_file(&files.ca_cert, signing.as_bytes(), 0o644)
}

/// Any stage → Idle with a new CA that alone is trusted, for a leaked CA key; `tls/reenrol` stays until
/// [`reenrolled`] (deploy's bootstrap re-enrols agents over SSH meanwhile).
pub fn begin_compromised(cluster_root: &Path, secrets: &Secrets) -> anyhow::Result<()> {
    let files = TlsFiles::new(cluster_root);
    let current = read(&files.ca_cert)?;
    let new = write_next(&files, secrets, &current)?;
    write_file(&files.reenrol, b"", 0o644)?;
    write_file(&files.ca_cert, new.cert_pem.as_bytes(), 0o644)?;
    let key = Zeroizing::new(new.issuer.key().serialize_pem());
    finish_switch(&files, secrets, &key)
}

/// True while agents that trust a replaced CA must be re-enrolled over SSH (`tls/reenrol`).
pub fn reenrol_pending(cluster_root: &Path) -> bool {
    TlsFiles::new(cluster_root).reenrol.exists()
}

/// Every agent was re-enrolled: deploy no longer needs to.
pub fn reenrolled(cluster_root: &Path) -> anyhow::Result<()> {
    remove_if_present(&TlsFiles::new(cluster_root).reenrol)
}

/// A new CA named like `current`'s first certificate, written as `ca.next.crt` and `ca.next.key.enc`.
fn write_next(files: &TlsFiles, secrets: &Secrets, current: &str) -> anyhow::Result<Pki> {
    let name = common_name(current).unwrap_or_else(|| "tpa cluster CA".to_string());
    let new = Pki::generate(&name)?;
    let key = Zeroizing::new(new.issuer.key().serialize_pem());
    secrets.seal_file(&files.ca_next_key, key.as_bytes())?;
    write_file(&files.ca_next_cert, new.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(dir = %files.dir.display(), "made a new cluster CA");
    Ok(new)
}

/// The new key becomes the CA key; the `ca.next.*` files go.
fn finish_switch(files: &TlsFiles, secrets: &Secrets, next_key: &str) -> anyhow::Result<()> {
    secrets.seal_file(&files.ca_key, next_key.as_bytes())?;
    remove_if_present(&files.ca_next_key)?;
    remove_if_present(&files.ca_next_cert)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The certificates of a PEM document, each as its own PEM text.
pub fn split(bundle: &str) -> anyhow::Result<Vec<String>> {
    let blocks = pem::parse_many(bundle).context("ca.crt is not a list of PEM certificates")?;
    // LF line ends, as rcgen writes them.
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(blocks
        .iter()
        .map(|b| pem::encode_config(b, config))
        .collect())
}

fn first_cert(bundle: &str) -> anyhow::Result<String> {
    split(bundle)?
        .into_iter()
        .next()
        .context("ca.crt holds no certificate")
}

/// True when the two PEM documents hold the same certificates, in any order.
pub fn same_certificates(a: &str, b: &str) -> bool {
    let ders = |pem: &str| -> Option<Vec<Vec<u8>>> {
        let mut ders: Vec<_> = pem::parse_many(pem)
            .ok()?
            .into_iter()
            .map(|p| p.into_contents())
            .collect();
        ders.sort();
        Some(ders)
    };
    matches!((ders(a), ders(b)), (Some(a), Some(b)) if !a.is_empty() && a == b)
}

/// The CAs of a PEM document, for people: each one's SHA-256 fingerprint, shortened (the old and the new
/// CA of a rotation have the same name).
pub fn describe(bundle: &str) -> String {
    match pem::parse_many(bundle) {
        Ok(blocks) if !blocks.is_empty() => blocks
            .iter()
            .map(|b| {
                format!(
                    "sha256:{}",
                    &crate::inventory::sha256_hex(b.contents())[..16]
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "no readable CA".to_string(),
    }
}

fn common_name(cert_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tests::Dir as TestDir;

    fn certs(dir: &TestDir) -> Vec<String> {
        split(&std::fs::read_to_string(dir.root().join("tls/ca.crt")).unwrap()).unwrap()
    }

    #[test]
    fn a_rotation_trusts_both_then_signs_with_the_new_then_drops_the_old() {
        let dir = TestDir::new();
        let (root, secrets) = (dir.root(), dir.secrets());
        let old = Pki::load_or_create(&root, &secrets).expect("ca");
        let old_cert = old.ca_cert_pem().to_string();
        assert_eq!(resume(&root, &secrets).unwrap(), Stage::Idle);

        begin(&root, &secrets).unwrap();
        assert_eq!(resume(&root, &secrets).unwrap(), Stage::Trusting);
        let both = certs(&dir);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], old_cert);
        // The old CA still signs.
        let pki = Pki::load_or_create(&root, &secrets).expect("loads");
        assert_eq!(split(pki.ca_cert_pem()).unwrap()[0], old_cert);

        switch(&root, &secrets).unwrap();
        assert_eq!(resume(&root, &secrets).unwrap(), Stage::Signing);
        assert_eq!(certs(&dir), vec![both[1].clone(), old_cert.clone()]);
        let pki = Pki::load_or_create(&root, &secrets).expect("the new CA loads");
        let id = pki.issue_controller_identity().unwrap();
        assert!(
            pki.renewal_due(&id.cert_pem, 0).is_none(),
            "the new CA signs"
        );
        let old_id = old.issue_controller_identity().unwrap();
        assert_eq!(
            pki.renewal_due(&old_id.cert_pem, 0),
            Some(crate::pki::RenewReason::OtherCa)
        );
        assert!(!root.join("tls/ca.next.key.enc").exists());

        finish(&root).unwrap();
        assert_eq!(resume(&root, &secrets).unwrap(), Stage::Idle);
        assert_eq!(certs(&dir), vec![both[1].clone()]);
    }

    #[test]
    fn a_switch_interrupted_before_the_key_followed_is_finished() {
        let dir = TestDir::new();
        let (root, secrets) = (dir.root(), dir.secrets());
        let old = Pki::load_or_create(&root, &secrets).expect("ca");
        begin(&root, &secrets).unwrap();
        let next = std::fs::read_to_string(root.join("tls/ca.next.crt")).unwrap();
        // What a crash right after writing ca.crt leaves: the new CA first, the old key.
        write_file(
            &root.join("tls/ca.crt"),
            format!("{next}{}", old.ca_cert_pem()).as_bytes(),
            0o644,
        )
        .unwrap();
        assert!(Pki::load_or_create(&root, &secrets).is_err());
        assert_eq!(resume(&root, &secrets).unwrap(), Stage::Signing);
        Pki::load_or_create(&root, &secrets).expect("loads again");

        // A begin that stopped before ca.crt: resume adds the new CA.
        let dir = TestDir::new();
        let (root, secrets) = (dir.root(), dir.secrets());
        Pki::load_or_create(&root, &secrets).expect("ca");
        let files = TlsFiles::new(&root);
        write_next(&files, &secrets, &read(&files.ca_cert).unwrap()).unwrap();
        assert_eq!(resume(&root, &secrets).unwrap(), Stage::Trusting);
        assert_eq!(certs(&dir).len(), 2);
    }

    #[test]
    fn a_compromised_ca_is_replaced_at_once_and_agents_reenrolled() {
        let dir = TestDir::new();
        let (root, secrets) = (dir.root(), dir.secrets());
        let old = Pki::load_or_create(&root, &secrets).expect("ca");
        begin_compromised(&root, &secrets).unwrap();
        assert!(reenrol_pending(&root));
        assert_eq!(resume(&root, &secrets).unwrap(), Stage::Idle);
        let new = certs(&dir);
        assert_eq!(new.len(), 1);
        assert!(!same_certificates(&new[0], old.ca_cert_pem()));
        Pki::load_or_create(&root, &secrets).expect("the new CA loads");
        reenrolled(&root).unwrap();
        assert!(!reenrol_pending(&root));
    }

    #[test]
    fn certificate_sets_compare_in_any_order() {
        let (a, b) = (
            Pki::generate("a").unwrap().cert_pem,
            Pki::generate("b").unwrap().cert_pem,
        );
        assert!(same_certificates(&format!("{a}{b}"), &format!("{b}\n{a}")));
        assert!(!same_certificates(&format!("{a}{b}"), &a));
        assert!(!same_certificates("", ""));
    }
}
