//! SSH key pairs the controller generates (the cluster's Barman SSH trust): ed25519, made with
//! the `ssh-key` crate from a CSPRNG seed rather than by running `ssh-keygen`, so that the
//! private key exists only in memory and in the encrypted store, never in a temporary file or
//! a child process. Stored in OpenSSH's own private key format (unencrypted: the store is).

use anyhow::Context;
use rand::RngCore as _;
use ssh_key::LineEnding;
use ssh_key::private::{Ed25519Keypair, PrivateKey};
use zeroize::Zeroizing;

use super::Secrets;

/// A private key in OpenSSH format and its public key line (`ssh-ed25519 AAAA… comment`).
pub struct SshKeyPair {
    pub private: Zeroizing<String>,
    pub public: String,
}

impl std::fmt::Debug for SshKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A new ed25519 key pair with `comment`.
pub fn generate(comment: &str) -> anyhow::Result<SshKeyPair> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(seed.as_mut());
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    pair(&key)
}

/// The public key of a stored private key (and the private key, re-encoded as stored).
pub fn parse(private_openssh: &str) -> anyhow::Result<SshKeyPair> {
    let key = PrivateKey::from_openssh(private_openssh).context("not an OpenSSH private key")?;
    pair(&key)
}

fn pair(key: &PrivateKey) -> anyhow::Result<SshKeyPair> {
    Ok(SshKeyPair {
        private: key
            .to_openssh(LineEnding::LF)
            .context("encoding the private key")?,
        public: key
            .public_key()
            .to_openssh()
            .context("encoding the public key")?,
    })
}

impl Secrets {
    /// The key pair stored under `name`, generating and remembering one if absent (`check`:
    /// never generate; None when absent). [`Secrets::save`] writes a new one.
    pub fn ssh_key_or_generate(
        &mut self,
        name: &str,
        comment: &str,
        check: bool,
    ) -> anyhow::Result<Option<SshKeyPair>> {
        if let Some(stored) = self.get(name) {
            return parse(stored)
                .with_context(|| format!("{}: the secret {name}", self.path().display()))
                .map(Some);
        }
        if check {
            return Ok(None);
        }
        let pair = generate(comment)?;
        self.set(name, pair.private.to_string());
        Ok(Some(pair))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_ed25519_pairs_that_openssh_reads_back() {
        let a = generate("barman@demo").expect("generated");
        assert!(
            a.private
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"),
            "OpenSSH format"
        );
        assert!(a.public.starts_with("ssh-ed25519 AAAA"), "{}", a.public);
        assert!(a.public.ends_with(" barman@demo"), "{}", a.public);
        let again = parse(&a.private).expect("parsed");
        assert_eq!(
            again.public, a.public,
            "the stored key gives the same public key"
        );
        let b = generate("barman@demo").expect("generated");
        assert_ne!(a.public, b.public, "a fresh key each time");
        assert!(!format!("{a:?}").contains("PRIVATE"), "Debug hides the key");
        // OpenSSH itself derives the same public key, when it is installed.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id");
        crate::cluster_dir::write_private(&path, a.private.as_bytes()).expect("written");
        if let Ok(out) = crate::process::command("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
        {
            let derived = String::from_utf8_lossy(&out.stdout);
            assert!(
                a.public.starts_with(
                    derived
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ")
                        .as_str()
                ),
                "ssh-keygen -y: {derived}"
            );
        }
    }
}
