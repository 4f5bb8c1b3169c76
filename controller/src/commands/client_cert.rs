//! `tpa-controller client-cert <dir> --name NAME --out DIR`: a TLS client certificate from the cluster CA
//! for something outside the cluster that talks to the agents' HTTPS endpoints, such as a Prometheus
//! scraping `/metrics` (`agent_metrics_listen: tls`, docs/health.md).
//!
//! The certificate can only authenticate a client: its extended key usage is clientAuth, and the agents'
//! gRPC service accepts no name but the controller's, which the CA never issues here. Its key is made
//! here and written only to `--out` (mode 0600), never into the cluster directory.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::commands::provision::load_cluster;
use crate::pki::Pki;
use crate::secrets::Secrets;

pub fn run(dir: &Path, name: &str, out: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    let (cluster_dir, cluster) = load_cluster(dir)?;
    let root = cluster_dir.root();
    if !root.join("tls/ca.crt").exists() {
        bail!("this cluster has no CA yet: run deploy first (it creates the CA)");
    }
    if cluster.instance(name).is_some() {
        bail!(
            "--name {name:?} is a host of this cluster: choose a name for the client, e.g. prometheus"
        );
    }
    let secrets = Secrets::open(root, cluster.vault_name.as_deref())?;
    let pki = Pki::load_or_create(root, &secrets)?.with_policy(cluster.cert_policy());
    let issued = pki.issue_client_cert(name)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (cert, key, ca) = (
        out.join(format!("{name}.crt")),
        out.join(format!("{name}.key")),
        out.join("ca.crt"),
    );
    crate::cluster_dir::write_file(&key, issued.key_pem.as_bytes(), 0o600)?;
    crate::cluster_dir::write_file(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    crate::cluster_dir::write_file(&ca, pki.ca_cert_pem().as_bytes(), 0o644)?;
    let expires = Pki::not_after(&issued.cert_pem)
        .map(crate::pki::unix_text)
        .unwrap_or_default();
    println!(
        "client certificate for {name} (expires {expires}):\n  {}\n  {} (private key, mode 0600)\n  {} (the \
         cluster CA, to verify the agents)",
        cert.display(),
        key.display(),
        ca.display()
    );
    Ok(())
}

/// A client name: what goes into the certificate's common name and the file names.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !valid {
        bail!(
            "--name {name:?}: use 1 to 63 lowercase letters, digits and dashes (it names the certificate \
             and its files), e.g. prometheus"
        );
    }
    if name == tpa_proto::CONTROLLER_IDENTITY {
        bail!(
            "--name {name:?} is the controller's own identity: choose another name, e.g. prometheus"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_read() {
        for bad in [
            "",
            "Prom",
            "../x",
            "a b",
            "-x",
            "x\ny",
            &"a".repeat(64),
            "tpa-controller",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("prometheus").expect("fine");
        check_name("scraper-2").expect("fine");
    }
}
