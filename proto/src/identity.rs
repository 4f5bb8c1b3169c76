//! The identities both ends of the protocol agree on: the controller's certificate name, and the format of
//! the SPKI fingerprint that pins an agent's key during enrolment.

use sha2::{Digest, Sha256};

/// Subject common name (and DNS SAN) of the controller's client certificate. An agent accepts RPCs only from
/// a client certificate of its cluster CA with this name; the CA never signs it for a host.
pub const CONTROLLER_IDENTITY: &str = "tpa-controller";

/// Fingerprint of a public key: `sha256:` + lowercase hex of the SHA-256 of its DER SubjectPublicKeyInfo.
/// `tpa-agent init` prints it; the controller pins it for the enrolment connection.
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_format() {
        assert_eq!(
            spki_fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
