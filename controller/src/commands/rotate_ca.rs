//! `tpa-controller rotate-ca <dir> [--old-ca-compromised]`: replaces the cluster CA of a running cluster
//! (the states and files are in [`crate::pki::rotation`]; docs/protocol.md, CA rotation).
//!
//! With the old CA still trusted, three deploys: every host trusts the old and the new CA; the new CA
//! issues every certificate (agents over their channel, the controller's, Postgres', etcd's, the log
//! server's); the old CA is dropped from every trust set. No SSH, and no host ever meets a certificate it
//! does not trust. An interrupted rotation resumes where it stopped when run again.
//!
//! With `--old-ca-compromised`, the old CA is not trusted for one more connection: the new CA replaces
//! it at once and deploy re-enrols every agent over SSH.

use std::path::Path;

use anyhow::bail;

use crate::commands::deploy::{self, DeployOptions};
use crate::commands::provision::load_cluster;
use crate::pki::rotation::{self, Stage};
use crate::secrets::Secrets;

pub async fn run(dir: &Path, compromised: bool, forks: Option<usize>) -> anyhow::Result<()> {
    let (cluster_dir, cluster) = load_cluster(dir)?;
    let root = cluster_dir.root();
    let ca = root.join("tls/ca.crt");
    if !ca.exists() {
        bail!(
            "{} does not exist: this cluster has no CA yet (deploy creates it), so there is nothing to rotate",
            ca.display()
        );
    }
    let secrets = Secrets::open(root, cluster.vault_name.as_deref())?;
    let options = DeployOptions {
        check: false,
        verbose: false,
        forks,
    };
    let cas = || rotation::describe(&std::fs::read_to_string(&ca).unwrap_or_default());

    if compromised {
        if rotation::reenrol_pending(root) {
            println!(
                "rotate-ca: re-enrolling the agents a compromised CA left (CA {})",
                cas()
            );
        } else {
            rotation::begin_compromised(root, &secrets)?;
            println!(
                "rotate-ca: the new CA {} replaces the old one, which nothing trusts any more; every agent \
                 is re-enrolled over SSH",
                cas()
            );
        }
        deploy::run(dir, &options).await?;
        rotation::reenrolled(root)?;
        println!(
            "rotate-ca: done; only CA {} is trusted. Commit tls/ and ca.crt",
            cas()
        );
        return Ok(());
    }
    if rotation::reenrol_pending(root) {
        bail!(
            "the replacement of a compromised CA is not finished: run `tpa-controller rotate-ca {} \
             --old-ca-compromised` again",
            dir.display()
        );
    }
    let mut stage = rotation::resume(root, &secrets)?;
    if stage == Stage::Idle {
        rotation::begin(root, &secrets)?;
        stage = Stage::Trusting;
    } else {
        println!("rotate-ca: resuming a rotation ({stage:?})");
    }
    if stage == Stage::Trusting {
        println!(
            "rotate-ca 1/3: every host trusts the old and the new CA ({})",
            cas()
        );
        deploy::run(dir, &options).await?;
        rotation::switch(root, &secrets)?;
    }
    println!("rotate-ca 2/3: the new CA issues every certificate");
    deploy::run(dir, &options).await?;
    rotation::finish(root)?;
    println!("rotate-ca 3/3: the old CA is no longer trusted");
    deploy::run(dir, &options).await?;
    println!(
        "rotate-ca: done; only CA {} is trusted. Commit tls/ and ca.crt",
        cas()
    );
    Ok(())
}
