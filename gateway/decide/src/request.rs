//! The JSON body of `/v1/authorize` (and of `parapet decide` / `policy test` cases). Unknown
//! fields are refused so that a misspelt field never silently changes a decision.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The wallet a request is for.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WalletRef {
    #[cfg_attr(feature = "openapi", schema(pattern = "^0[xX][0-9a-fA-F]{40}$"))]
    pub address: String,
    /// Used only when the gateway has no record of the wallet (dry runs).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// What to decide: a wallet, a chain and exactly one of transaction, transaction_request,
/// message, message_bytes, typed_data, hash.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    pub wallet: WalletRef,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub chain_id: u64,
    /// 0x-hex raw transaction (legacy EIP-155, 2930, 1559, 4844, 7702), signed or unsigned.
    #[serde(default)]
    pub transaction: Option<String>,
    /// `eth_signTransaction` fields; must be complete.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub transaction_request: Option<Value>,
    /// UTF-8 text for `personal_sign`, signed as given.
    #[serde(default)]
    pub message: Option<String>,
    /// 0x-hex bytes for `personal_sign`.
    #[serde(default)]
    pub message_bytes: Option<String>,
    /// `eth_signTypedData_v4` JSON: an object, or a string holding one.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub typed_data: Option<Value>,
    /// A bare 32-byte digest (action `raw_hash`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^0x[0-9a-fA-F]{64}$"))]
    pub hash: Option<String>,
}

/// Exactly one thing to sign.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// 0x-hex raw transaction (EIP-2718 typed or legacy RLP), signed or unsigned.
    Transaction(&'a str),
    /// `eth_signTransaction` fields.
    TransactionRequest(&'a Value),
    /// UTF-8 text for EIP-191 `personal_sign`, signed exactly as given.
    Message(&'a str),
    /// 0x-hex bytes for EIP-191 `personal_sign`.
    MessageBytes(&'a str),
    /// `eth_signTypedData_v4` JSON (an object, or a string holding one).
    TypedData(&'a Value),
    /// A bare 32-byte digest (action `raw_hash`).
    Hash(&'a str),
}

impl AuthorizeRequest {
    pub fn payload(&self) -> Result<Payload<'_>> {
        let mut found = Vec::with_capacity(1);
        if let Some(v) = &self.transaction {
            found.push(Payload::Transaction(v));
        }
        if let Some(v) = &self.transaction_request {
            found.push(Payload::TransactionRequest(v));
        }
        if let Some(v) = &self.message {
            found.push(Payload::Message(v));
        }
        if let Some(v) = &self.message_bytes {
            found.push(Payload::MessageBytes(v));
        }
        if let Some(v) = &self.typed_data {
            found.push(Payload::TypedData(v));
        }
        if let Some(v) = &self.hash {
            found.push(Payload::Hash(v));
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::InvalidRequest(
                "one of transaction, transaction_request, message, message_bytes, typed_data, hash is required"
                    .to_owned(),
            )),
            _ => Err(Error::InvalidRequest(
                "exactly one of transaction, transaction_request, message, message_bytes, typed_data, hash may be given"
                    .to_owned(),
            )),
        }
    }
}
