//! SCRAM-SHA-256 password verifiers, computed on the controller so that Postgres only ever
//! sees the verifier, never the password. Reusing the salt of the verifier a role already has
//! makes an unchanged password produce the same verifier, so a re-deploy changes nothing.
//!
//! Written here from RustCrypto primitives (pbkdf2, hmac, sha2) because the one crate that
//! has it (postgres-protocol) keeps the salted variant private.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// PostgreSQL's default iteration count (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;

/// The verifier for `password`: with the salt and iterations of `existing` when that is a
/// verifier of the same password (so nothing changes), else with a fresh random salt.
pub fn verifier(password: &str, existing: Option<&str>) -> String {
    if let Some(existing) = existing
        && let Some((iterations, salt)) = parse(existing)
    {
        let same = compute(password, &salt, iterations);
        if same == existing {
            return same;
        }
    }
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    compute(password, &salt, ITERATIONS)
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802, as Postgres stores it).
pub fn compute(password: &str, salt: &[u8], iterations: u32) -> String {
    // Postgres normalises with SASLprep when it can, and uses the raw bytes otherwise.
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
    let hmac = |key: &[u8], msg: &[u8]| {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(msg);
        mac.finalize().into_bytes()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

/// The iterations and salt of a SCRAM-SHA-256 verifier.
fn parse(verifier: &str) -> Option<(u32, Vec<u8>)> {
    let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
    let (params, _) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    Some((iterations.parse().ok()?, B64.decode(salt).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_postgres_client_library_and_reuses_salt() {
        // postgres-protocol salts randomly; recomputing with its salt must give its verifier.
        let theirs = postgres_protocol::password::scram_sha_256(b"correct horse");
        let (iterations, salt) = parse(&theirs).unwrap();
        assert_eq!(compute("correct horse", &salt, iterations), theirs);
        assert_eq!(verifier("correct horse", Some(&theirs)), theirs);
        let changed = verifier("battery staple", Some(&theirs));
        assert_ne!(changed, theirs);
        assert!(changed.starts_with("SCRAM-SHA-256$4096:"));
        assert_ne!(
            verifier("x", None),
            verifier("x", None),
            "fresh salts differ"
        );
    }
}
