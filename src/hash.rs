//! The digests names, tokens and fingerprints are made of.

/// SHA-256 of `text` as 64 lower-case hex digits.
pub fn sha256_hex(text: &str) -> String {
    sha256_hex_bytes(text.as_bytes())
}

/// SHA-256 of `bytes` (a blob's) as 64 lower-case hex digits.
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Eight hex digits of SHA-256: enough to tell requests apart in names and tokens.
pub fn short_hash(text: &str) -> String {
    sha256_hex(text)[..8].to_owned()
}
