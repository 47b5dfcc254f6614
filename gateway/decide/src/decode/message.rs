//! `personal_sign` messages (EIP-191 version 0x45) and bare 32-byte hashes.
//!
//! `message` is signed as the UTF-8 bytes given, even when it looks like hex: wallets differ on
//! whether "0x1234" means two bytes or six characters, and guessing would sign a digest other
//! than the one the caller displayed. Callers that mean bytes say so with `message_bytes`.

use alloy::primitives::{B256, eip191_hash_message};

use super::hex;
use crate::error::{Error, Result};
use crate::facts::MessageFacts;

/// EIP-191 digest and facts of a text message.
pub(crate) fn text(message: &str) -> (B256, MessageFacts) {
    let bytes = message.as_bytes();
    (eip191_hash_message(bytes), facts("utf8", bytes.len()))
}

/// EIP-191 digest and facts of a 0x-hex byte message.
pub(crate) fn bytes(message: &str) -> Result<(B256, MessageFacts)> {
    let bytes = hex::decode_0x(message).map_err(|e| match e {
        Error::InvalidHex(m) => Error::InvalidMessage(format!("message_bytes: {m}")),
        other => other,
    })?;
    Ok((eip191_hash_message(&bytes), facts("bytes", bytes.len())))
}

/// A bare digest: exactly 32 bytes of 0x-hex, signed as is.
pub(crate) fn raw_hash(hash: &str) -> Result<B256> {
    hex::b256(hash, "hash")
}

fn facts(encoding: &str, len: usize) -> MessageFacts {
    MessageFacts {
        encoding: encoding.to_owned(),
        len: i64::try_from(len).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::keccak256;

    #[test]
    fn text_is_signed_as_given_even_when_it_looks_like_hex() {
        let (d, f) = text("0x1234");
        assert_eq!(d, keccak256(b"\x19Ethereum Signed Message:\n60x1234"));
        assert_eq!((f.encoding.as_str(), f.len), ("utf8", 6));
        let (d2, f2) = bytes("0x1234").unwrap();
        assert_eq!(d2, keccak256(b"\x19Ethereum Signed Message:\n2\x12\x34"));
        assert_eq!((f2.encoding.as_str(), f2.len), ("bytes", 2));
        assert_ne!(d, d2);
    }

    #[test]
    fn utf8_length_counts_bytes() {
        let (d, f) = text("héllo");
        assert_eq!(f.len, 6);
        assert_eq!(
            d,
            keccak256("\x19Ethereum Signed Message:\n6héllo".as_bytes())
        );
    }

    #[test]
    fn bad_bytes_and_hashes_are_refused() {
        assert_eq!(bytes("1234").unwrap_err().code(), "invalid_message");
        assert_eq!(bytes("0x123").unwrap_err().code(), "invalid_message");
        assert_eq!(raw_hash("0x1234").unwrap_err().code(), "invalid_hex");
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(raw_hash(&h).unwrap(), B256::repeat_byte(0xab));
    }
}
