//! The decision's error type: what decoding a request and loading or evaluating policies can
//! refuse. Each variant keeps the message and the stable code the gateway answers with (the
//! gateway maps them one to one, `parapet_gateway::error`); internals stay out of messages.

/// Everything decoding and deciding can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the caller's request ----
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid hex: {0}")]
    InvalidHex(String),
    #[error("invalid transaction: {0}")]
    InvalidTransaction(String),
    #[error("unsupported transaction type 0x{0:02x}")]
    UnsupportedTxType(u8),
    #[error("chain id {got} does not match the request's chain id {expected}")]
    ChainMismatch { expected: u64, got: u64 },
    #[error("legacy transaction without EIP-155 chain id: it would be valid on every chain")]
    ReplayableTransaction,
    #[error("signature has a high s value (EIP-2)")]
    HighS,
    #[error("signed transaction's sender {got} is not the wallet {expected}")]
    SenderMismatch { expected: String, got: String },
    #[error("incomplete transaction: missing {}", .missing.join(", "))]
    IncompleteTransaction { missing: Vec<String> },
    #[error("invalid typed data: {0}")]
    InvalidTypedData(String),
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    #[error("invalid address: {0}")]
    InvalidAddress(String),

    // ---- the policy set ----
    /// The set does not parse, validate against the schema, or breaks a house rule; one line
    /// per problem.
    #[error("policy set invalid:\n{}", .0.join("\n"))]
    PolicySetInvalid(Vec<String>),
    /// A file the policy stage reads (schema, registry, scopes, entities) is missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose problem an [`Error`] is, for a caller that answers over a protocol (the gateway maps
/// these to HTTP statuses in one place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is wrong; the message says how.
    Request,
    /// The policy set (a candidate being validated, or a case's) is wrong.
    PolicySet,
    /// A file the stage reads, or the stage itself: the detail belongs in a log.
    Internal,
}

impl Error {
    /// Stable snake_case code; part of the API contract (`docs/errors.md`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::InvalidHex(_) => "invalid_hex",
            Error::InvalidTransaction(_) => "invalid_transaction",
            Error::UnsupportedTxType(_) => "unsupported_transaction_type",
            Error::ChainMismatch { .. } => "chain_mismatch",
            Error::ReplayableTransaction => "replayable_transaction",
            Error::HighS => "high_s_signature",
            Error::SenderMismatch { .. } => "sender_mismatch",
            Error::IncompleteTransaction { .. } => "incomplete_transaction",
            Error::InvalidTypedData(_) => "invalid_typed_data",
            Error::InvalidMessage(_) => "invalid_message",
            Error::InvalidAddress(_) => "invalid_address",
            Error::PolicySetInvalid(_) => "policy_set_invalid",
            Error::Config(_) => "configuration_error",
            Error::Internal(_) => "internal",
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::InvalidRequest(_)
            | Error::InvalidHex(_)
            | Error::InvalidTransaction(_)
            | Error::UnsupportedTxType(_)
            | Error::ChainMismatch { .. }
            | Error::ReplayableTransaction
            | Error::HighS
            | Error::SenderMismatch { .. }
            | Error::IncompleteTransaction { .. }
            | Error::InvalidTypedData(_)
            | Error::InvalidMessage(_)
            | Error::InvalidAddress(_) => Kind::Request,
            Error::PolicySetInvalid(_) => Kind::PolicySet,
            Error::Config(_) | Error::Internal(_) => Kind::Internal,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
