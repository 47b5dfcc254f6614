//! The signature on every webhook body: HMAC-SHA-256 over `timestamp "." body` with the app's
//! signing secret, sent as `Parapet-Signature: t=<unix seconds>,v1=<hex>`. The timestamp is
//! inside the MAC so that a receiver can refuse replays of old deliveries; [`verify`] is what a
//! receiver runs (the tests' receiver does).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "Parapet-Signature";
/// The header that names the delivery: the same id on every retry, so receivers can drop
/// duplicates (delivery is at least once).
pub const DELIVERY_HEADER: &str = "Parapet-Delivery";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac_key());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[allow(
    clippy::panic,
    reason = "HMAC accepts keys of every length; this cannot run"
)]
fn unreachable_hmac_key() -> HmacSha256 {
    panic!("HMAC rejected a key")
}

/// The header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Why a received signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature is too old or from the future")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a received `Parapet-Signature` header against `body` (constant time), refusing
/// timestamps more than `tolerance_secs` from `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Refused> {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| Refused::Malformed)?),
            Some(("v1", tag)) => tags.push(hex::decode(tag).map_err(|_| Refused::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refused::Malformed)?;
    if tags.is_empty() {
        return Err(Refused::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(Refused::Stale);
    }
    let ok = tags
        .iter()
        .any(|tag| mac(secret, timestamp, body).verify_slice(tag).is_ok());
    if ok { Ok(()) } else { Err(Refused::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let secret = b"whsec_test";
        let body = br#"{"type":"recovery.opened"}"#;
        let header = sign(secret, 1_700_000_000, body);
        assert_eq!(verify(secret, &header, body, 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(secret, &header, b"{}", 1_700_000_010, 300),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1_700_000_010, 300),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(secret, &header, body, 1_700_001_000, 300),
            Err(Refused::Stale)
        );
        // The timestamp is inside the MAC: moving it forward breaks the signature.
        let moved = header.replace("t=1700000000", "t=1700000900");
        assert_eq!(
            verify(secret, &moved, body, 1_700_000_900, 300),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(secret, "v1=00", body, 0, 300),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn matches_an_independent_hmac() {
        // Computed with Python's hmac module over "1700000000." + body: receivers in any
        // language get the same framing.
        let header = sign(
            b"whsec_test",
            1_700_000_000,
            br#"{"type":"recovery.opened"}"#,
        );
        assert_eq!(
            header,
            "t=1700000000,v1=0c94597a25bfffb0d561eb46b1c65e5370d8b1eb9ea5fcecc3f7aa12eaf1a1e5"
        );
    }
}
