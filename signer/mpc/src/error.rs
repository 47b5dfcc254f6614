//! The protocol's error type: ceremonies, their transport and recovery envelopes. Messages never
//! carry key material or plaintext: callers log them as they are.

/// Everything a ceremony or a recovery envelope can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- ceremonies ----
    /// The bytes are not a message of this protocol version.
    #[error("ceremony message is malformed")]
    MessageMalformed,
    /// The message belongs to another kind of ceremony.
    #[error("message is for another kind of ceremony")]
    WrongCeremony,
    /// The message belongs to another ceremony (session id).
    #[error("message is from another ceremony")]
    WrongSession,
    /// The message is for another round: replayed, reordered or skipped ahead.
    #[error("message for round {got}, expected round {expected}")]
    UnexpectedRound { expected: u8, got: u8 },
    /// The message does not come from the other party of this ceremony, or is not for us.
    #[error("message from the wrong party")]
    WrongParty,
    /// A message arrived before [`crate::Ceremony::start`] was called.
    #[error("the ceremony has not been started")]
    NotStarted,
    /// The ceremony already failed or finished: it accepts nothing more.
    #[error("the ceremony is over")]
    CeremonyOver,
    /// The protocol library refused (a failed proof, commitment, consistency or signature
    /// check). `ban_counterparty` means the other party provably cheated in a way that leaks
    /// reusable state: the share must not be used with that party again until refreshed.
    #[error("protocol abort: {reason}")]
    Protocol {
        reason: String,
        ban_counterparty: bool,
    },
    /// The bytes are not a key share this version reads, or the share is not for this role.
    #[error("key share is malformed or not for this party")]
    ShareMalformed,
    /// A signature failed the final independent check.
    #[error("signature rejected: {0}")]
    SignatureInvalid(&'static str),
    /// The connection to the other party failed or closed before the ceremony ended.
    #[error("ceremony connection: {0}")]
    Transport(String),
    /// The other party sent nothing for longer than the ceremony allows.
    #[error("the ceremony timed out")]
    CeremonyTimeout,
    /// The gateway refused or ended the ceremony, with its error code and message.
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
    // ---- recovery (docs/architecture.md §9) ----
    /// What the user typed is not a recovery secret: wrong length, characters or checksum.
    #[error("that is not a recovery secret (check for a typo: the last characters are a checksum)")]
    RecoverySecretMalformed,
    /// A backup or kit envelope did not open: another user's secret, another wallet or epoch,
    /// or damaged bytes (one error for all, as HPKE cannot tell them apart).
    #[error("the backup did not open with this recovery secret")]
    BackupUnreadable,
    /// Any other recovery failure (the message names no secret).
    #[error("recovery: {0}")]
    Recovery(String),
    /// Two shares that should belong to one wallet do not.
    #[error("the two shares are not of the same wallet")]
    ShareMismatch,
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
