//! SCRAM-SHA-256 password verifiers, computed on the controller so that Postgres only ever
//! sees the verifier, never the password. Reusing the salt of the verifier a role already has
//! makes an unchanged password produce the same verifier, so a re-deploy changes nothing.
//! Only a verifier with the standard iteration count is recomputed: the count is the role's to
//! choose (`ALTER ROLE ... PASSWORD` with another `scram_iterations`), and about 2^31 iterations
//! would stall the next deploy for hours.
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

/// The verifier for `password`: with the salt of `existing` when that is a verifier of the same
/// password with [`ITERATIONS`] (so nothing changes), else with a fresh random salt. A verifier
/// with any other iteration count is replaced, never recomputed.
pub fn verifier(password: &str, existing: Option<&str>) -> String {
    if let Some(existing) = existing
        && let Some((ITERATIONS, salt)) = parse(existing)
    {
        let same = compute(password, &salt, ITERATIONS);
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

    #[test]
    fn a_verifier_with_another_iteration_count_is_replaced_not_recomputed() {
        // Same password, valid verifier, a count the role chose: replaced by a standard one.
        let salt = [7u8; SALT_LEN];
        let custom = compute("pw", &salt, 8192);
        let replaced = verifier("pw", Some(&custom));
        assert_ne!(replaced, custom);
        assert!(replaced.starts_with("SCRAM-SHA-256$4096:"), "{replaced}");
        let (_, new_salt) = parse(&replaced).expect("verifier");
        assert_ne!(new_salt, salt, "a fresh salt");

        // 2^31 - 1 iterations would take hours to recompute; it is not even tried.
        let huge = format!(
            "SCRAM-SHA-256$2147483647:{}$c3RvcmVk:c2VydmVy",
            B64.encode(salt)
        );
        let started = std::time::Instant::now();
        let fresh = verifier("pw", Some(&huge));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(fresh.starts_with("SCRAM-SHA-256$4096:"), "{fresh}");
    }
}
