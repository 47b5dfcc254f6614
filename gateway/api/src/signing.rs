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

/// An ECDSA signature over the request's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signature {
    /// `0x` and 32 bytes, hex.
    pub r: String,
    /// `0x` and 32 bytes, hex (low-s).
    pub s: String,
    pub y_parity: bool,
    /// `0x` r ‖ s ‖ v (v = 27 or 28): what `personal_sign` and `eth_signTypedData` return.
    pub rsv: String,
}

/// A signing request with what its ceremony produced: the signature once signed and, for a
/// transaction, the signed transaction and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningRequestAnswer {
    #[serde(flatten)]
    pub view: SigningRequestView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// `0x` hex of the signed transaction, ready to broadcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_transaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    pub request_id: String,
}

/// `GET /v1/device/signing-requests/{id}`: the request and, in `body`, what was decided
/// (`chain_id`, `wallet` and the one payload), so that the device decodes it itself and signs
/// only the digest it computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceSigningRequest {
    #[serde(flatten)]
    pub answer: SigningRequestAnswer,
    /// The `/v1/authorize` body as it was decided.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: serde_json::Value,
}

/// A signing request refused: `policy_denied` with the decision, or `step_up_required` with
/// passkey options bound to this request (`passkey_required` when the owner has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningRefusal {
    pub code: String,
    pub message: String,
    pub request_id: String,
    /// The signing request's id (retry with the same `Idempotency-Key` to read it again).
    pub signing_request: String,
    /// The decision as `/v1/authorize` shows it.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub decision: Option<serde_json::Value>,
    /// WebAuthn request options for the owner's passkey, bound to this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub step_up: Option<serde_json::Value>,
}
