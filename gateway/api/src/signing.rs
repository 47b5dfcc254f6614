//! Signing requests as apps, people and devices see them.

use serde::{Deserialize, Serialize};

use crate::names::named_enum;

named_enum! {
    /// Where a signing request is in its life (`authorized → signing → signed | failed`, or
    /// `authorized → expired`, or `denied` from the start; `pending_step_up` waits for the owner's
    /// passkey).
    pub enum SigningState {
        /// Policy refused it; it never signs.
        Denied => "denied",
        /// Policy allows it with the owner's passkey: it waits for that step-up.
        PendingStepUp => "pending_step_up",
        /// Allowed: a device may join its ceremony until it expires.
        Authorized => "authorized",
        /// A ceremony holds it.
        Signing => "signing",
        Signed => "signed",
        Failed => "failed",
        /// Authorized or waiting for a step-up past its expiry (derived, never stored).
        Expired => "expired",
    }
}

/// A signing request as `GET /v1/signing-requests/{id}` and the device's
/// `GET /v1/device/signing-requests/{id}` show it. Once signed, the answer also carries
/// `signature`, `signed_transaction` and `tx_hash` (not part of this view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningRequestView {
    pub id: String,
    pub app: String,
    /// Lower-case `0x` address.
    pub wallet: String,
    pub owner: String,
    /// Decimal, as a string (chain ids exceed JavaScript's safe integers).
    pub chain_id: String,
    pub action: String,
    /// `0x` hex: the one digest a ceremony for this request may sign.
    pub digest: String,
    pub state: SigningState,
    /// The decision as `/v1/authorize` shows it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub decision: serde_json::Value,
    pub created_at: String,
    pub expires_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_and_write_their_names() {
        for &s in SigningState::ALL {
            assert_eq!(SigningState::from_name(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(SigningState::from_name("Authorized"), None);
    }
}
