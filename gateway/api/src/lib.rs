//! The gateway's wire, typed once for everyone who speaks it: the server writes these, the
//! command line and the device read them. A field added here is added for all of them; the
//! OpenAPI document (`schemas/openapi.json`) describes the same shapes.
//!
//! Only serde: this crate builds wherever the device does.

use serde::{Deserialize, Serialize};

/// The body of every refusal: a stable `code` to match on, a message for people, and the id
/// of the request it answers (also in `x-request-id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub request_id: String,
}

/// Where a signing request is in its life (`authorized → signing → signed | failed`, or
/// `authorized → expired`, or `denied` from the start; `pending_step_up` waits for the owner's
/// passkey).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningState {
    /// Policy refused it; it never signs.
    Denied,
    /// Policy allows it with the owner's passkey: it waits for that step-up.
    PendingStepUp,
    /// Allowed: a device may join its ceremony until it expires.
    Authorized,
    /// A ceremony holds it.
    Signing,
    Signed,
    Failed,
    /// Authorized or waiting for a step-up past its expiry (derived, never stored).
    Expired,
}

impl SigningState {
    const ALL: [SigningState; 7] = [
        SigningState::Denied,
        SigningState::PendingStepUp,
        SigningState::Authorized,
        SigningState::Signing,
        SigningState::Signed,
        SigningState::Failed,
        SigningState::Expired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SigningState::Denied => "denied",
            SigningState::PendingStepUp => "pending_step_up",
            SigningState::Authorized => "authorized",
            SigningState::Signing => "signing",
            SigningState::Signed => "signed",
            SigningState::Failed => "failed",
            SigningState::Expired => "expired",
        }
    }

    /// The state named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<SigningState> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for SigningState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signing request as `GET /v1/signing-requests/{id}` and the device's
/// `GET /v1/device/signing-requests/{id}` show it. Once signed, the answer also carries
/// `signature`, `signed_transaction` and `tx_hash` (not part of this view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub decision: serde_json::Value,
    pub created_at: String,
    pub expires_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_and_write_their_names() {
        for s in SigningState::ALL {
            assert_eq!(SigningState::from_name(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(SigningState::from_name("Authorized"), None);
    }
}
