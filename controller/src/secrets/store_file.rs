//! The on-disk form of a secrets store: a plaintext header (format version, key id; never the
//! key), a blank line, then base64 of a 24-byte random nonce followed by the
//! XChaCha20-Poly1305 ciphertext. The header is the AEAD's associated data, so editing the key
//! id or the version makes decryption fail instead of silently using another key.
//!
//! ```text
//! tpa-secrets v1 xchacha20poly1305
//! key-id: 8f2c7d1e-4b9a-4c1f-9e0a-2d6b5f3a7c11
//! # Encrypted. The key is not in this directory: see docs/secrets.md.
//!
//! 3q2+7w...
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::TryRngCore as _;
use zeroize::Zeroizing;

use super::key::Key;

/// The first line of every store file; a new format gets a new line, never a reinterpretation.
pub const MAGIC: &str = "tpa-secrets v1 xchacha20poly1305";
const NONCE_LEN: usize = 24;
const NOTE: &str = "# Encrypted. The key is not in this directory: see docs/secrets.md.";

/// Why a store file could not be read. Never contains secret material.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "not a tpa secrets store (its first line should be `{MAGIC}`); a newer tpa may have written it"
    )]
    UnknownFormat,
    #[error("the header has no `key-id:` line")]
    NoKeyId,
    #[error("the header line `{0}` is not understood")]
    UnknownHeaderLine(String),
    #[error("the encrypted body is damaged (not base64, or too short)")]
    DamagedBody,
    #[error("decryption failed: wrong key, or the file was altered")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// The plaintext header of a store file, and the text it was read from (the associated data).
pub struct Header<'a> {
    pub key_id: String,
    aad: &'a str,
    body: &'a str,
}

/// Reads the header without the key, so the caller knows which key to look for.
pub fn read_header(text: &str) -> Result<Header<'_>, FormatError> {
    let Some(header_end) = text.find("\n\n") else {
        return Err(if text.starts_with(MAGIC) {
            FormatError::DamagedBody
        } else {
            FormatError::UnknownFormat
        });
    };
    let (aad, body) = text.split_at(header_end + 2);
    let mut lines = aad.lines();
    if lines.next() != Some(MAGIC) {
        return Err(FormatError::UnknownFormat);
    }
    let mut key_id = None;
    for line in lines.filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.strip_prefix("key-id:") {
            Some(id) => key_id = Some(id.trim().to_string()),
            None => return Err(FormatError::UnknownHeaderLine(line.to_string())),
        }
    }
    Ok(Header {
        key_id: key_id.ok_or(FormatError::NoKeyId)?,
        aad,
        body,
    })
}

/// Decrypts the body of a store file whose header was read with [`read_header`].
pub fn open(key: &Key, header: &Header<'_>) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    let sealed = STANDARD
        .decode(header.body.trim())
        .map_err(|_| FormatError::DamagedBody)?;
    if sealed.len() < NONCE_LEN {
        return Err(FormatError::DamagedBody);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key.bytes()));
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: header.aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| FormatError::Decrypt)
}

/// The whole file text for `plaintext`, encrypted under `key` with a fresh random nonce.
pub fn seal(key: &Key, key_id: &str, plaintext: &[u8]) -> Result<String, FormatError> {
    let aad = format!("{MAGIC}\nkey-id: {key_id}\n{NOTE}\n\n");
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| FormatError::Random(e.to_string()))?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key.bytes()));
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        // Encryption fails only for inputs of gigabytes; a store never gets there.
        .map_err(|_| FormatError::Encrypt)?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(format!("{aad}{}\n", STANDARD.encode(sealed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key {
        Key::from_text(&STANDARD.encode([byte; 32])).expect("valid key text")
    }

    #[test]
    fn seal_then_open_round_trips_and_reads_the_key_id() {
        let text = seal(&key(1), "abc-123", b"{\"a\":\"b\"}").expect("seal");
        let header = read_header(&text).expect("header");
        assert_eq!(header.key_id, "abc-123");
        assert_eq!(
            open(&key(1), &header).expect("open").as_slice(),
            b"{\"a\":\"b\"}"
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let a = seal(&key(1), "id", b"same").expect("seal");
        let b = seal(&key(1), "id", b"same").expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_fails_to_open() {
        let text = seal(&key(1), "id", b"secret").expect("seal");
        let header = read_header(&text).expect("header");
        assert!(matches!(open(&key(2), &header), Err(FormatError::Decrypt)));
    }

    #[test]
    fn an_edited_key_id_fails_to_open_because_the_header_is_authenticated() {
        let text = seal(&key(1), "id-one", b"secret").expect("seal");
        let edited = text.replace("key-id: id-one", "key-id: id-two");
        let header = read_header(&edited).expect("header");
        assert_eq!(header.key_id, "id-two");
        assert!(matches!(open(&key(1), &header), Err(FormatError::Decrypt)));
    }

    #[test]
    fn unknown_or_damaged_files_are_named_as_such() {
        assert!(matches!(
            read_header("hello\n\nworld"),
            Err(FormatError::UnknownFormat)
        ));
        assert!(matches!(
            read_header(&format!("{MAGIC}\n\nAAAA")),
            Err(FormatError::NoKeyId)
        ));
        assert!(matches!(
            read_header(&format!("{MAGIC}\nkey-id: x\nfoo: bar\n\nAAAA")),
            Err(FormatError::UnknownHeaderLine(l)) if l == "foo: bar"
        ));
        let header_only = format!("{MAGIC}\nkey-id: x\n\n!!!");
        let header = read_header(&header_only).expect("header");
        assert!(matches!(
            open(&key(1), &header),
            Err(FormatError::DamagedBody)
        ));
    }
}
