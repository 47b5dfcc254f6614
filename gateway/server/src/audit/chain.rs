//! The hash chain: `hash = SHA-256(prev_hash ‖ canonical)`, the first `prev_hash` 32 zero bytes.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// The hash of one link.
pub fn link_hash(prev_hash: &[u8], canonical: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(canonical.as_bytes());
    h.finalize().into()
}

/// One stored row of the log, as exported and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub canonical: String,
}

/// The newest link: where the next event attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// 0 for an empty log.
    pub seq: i64,
    pub hash: Vec<u8>,
}

impl Head {
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_of_prev_then_canonical() {
        // echo -n '{}' preceded by 32 zero bytes, hashed with SHA-256.
        let mut input = GENESIS.to_vec();
        input.extend_from_slice(b"{}");
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(link_hash(&GENESIS, "{}"), expected);
    }
}
