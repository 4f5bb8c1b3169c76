//! Ship: copies the cluster's local package repository to a host through its agent, for
//! platforms that cannot mount `local-repo/` on the hosts (bare machines).
//!
//! The controller lists every file of the host's repository directory with its SHA-256; the
//! agent removes what is no longer listed and answers with what it lacks; only those files
//! travel, over the same mutual-TLS channel as everything else. A re-deploy with an unchanged
//! repository sends one listing and no file. Packages go before the index, so apt never reads
//! an index naming a package that has not arrived.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tpa_proto::pb;

use crate::agent_client::AgentClient;

/// One repository directory as the controller holds it.
#[derive(Debug, Clone)]
pub struct RepoListing {
    pub dir: PathBuf,
    /// Packages first, then the index files; each with its hash and size.
    pub files: Vec<pb::RepoFile>,
}

/// What shipping did on one host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shipped {
    /// The repository's directory on the host (for the apt source).
    pub host_dir: String,
    /// Files sent (or, under check, that would be).
    pub sent: usize,
    pub bytes: u64,
    /// Files the host had that are no longer listed.
    pub removed: usize,
}

/// Lists the regular files directly in `dir` with their hashes (blocking: reads every file).
pub fn list(dir: &Path) -> anyhow::Result<RepoListing> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::metadata(entry.path())?;
        // Dot files are temporary files of an interrupted download or index write.
        if !meta.is_file() || name.starts_with('.') {
            continue;
        }
        let mut file = std::fs::File::open(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher)
            .with_context(|| format!("reading {}", entry.path().display()))?;
        files.push(pb::RepoFile {
            name,
            sha256: hex::encode(hasher.finalize()),
            size,
        });
    }
    // Packages before the index files, each group by name.
    files.sort_by(|a, b| (is_index(&a.name), &a.name).cmp(&(is_index(&b.name), &b.name)));
    Ok(RepoListing {
        dir: dir.to_path_buf(),
        files,
    })
}

fn is_index(name: &str) -> bool {
    !name.ends_with(".deb")
}

/// Makes the host's repository hold exactly `listing` (`check`: reports what it would send).
pub async fn ship(
    client: &mut AgentClient,
    listing: &RepoListing,
    check: bool,
) -> anyhow::Result<Shipped> {
    let reply = client.repo_sync(listing.files.clone(), check).await?;
    let mut shipped = Shipped {
        host_dir: reply.dir,
        removed: reply.removed.len(),
        ..Shipped::default()
    };
    // In listing order (packages first), whatever order the agent answered in.
    for file in listing
        .files
        .iter()
        .filter(|f| reply.missing.contains(&f.name))
    {
        shipped.sent += 1;
        shipped.bytes += file.size;
        if !check {
            let path = listing.dir.join(&file.name);
            let content = tokio::fs::read(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            client.repo_put(file.clone(), content).await?;
        }
    }
    Ok(shipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_hashes_files_and_puts_packages_before_the_index() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("Release", "r"),
            ("Packages", "p"),
            ("b_1_amd64.deb", "b"),
            ("a_1_amd64.deb", "a"),
            (".Packages.tmp", "x"),
        ] {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let listing = list(dir.path()).unwrap();
        let names: Vec<_> = listing.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["a_1_amd64.deb", "b_1_amd64.deb", "Packages", "Release"]
        );
        assert_eq!(listing.files[0].size, 1);
        assert_eq!(
            listing.files[0].sha256,
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
    }
}
