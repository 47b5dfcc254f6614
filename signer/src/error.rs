//! The crate's one error type. Messages never carry key material, PINs or plaintext: callers log
//! them as they are.

/// Everything custody and the ceremonies can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- custody: configuration and startup checks (the gateway refuses to start) ----
    /// The token refused the user PIN.
    #[error("the HSM refused the PIN")]
    WrongPin,
    /// Too many wrong PINs: the token's security officer must unlock it.
    #[error("the HSM user PIN is locked")]
    PinLocked,
    /// No token with this label is present (tokens are found by label, never by slot number).
    #[error("no HSM token labelled {0:?}")]
    TokenNotFound(String),
    /// Several tokens carry the same label: which one holds the keys would be a guess.
    #[error("several HSM tokens are labelled {0:?}")]
    TokenAmbiguous(String),
    /// A key the gateway needs is not on the token (run `parapet hsm init`).
    #[error("HSM key {0:?} is missing")]
    KeyMissing(String),
    /// Several objects carry the label of a key the gateway needs.
    #[error("several HSM objects are labelled {0:?}")]
    KeyAmbiguous(String),
    /// The key could leave the HSM (extractable, or not sensitive): refuse to use it.
    #[error("HSM key {label:?} is not protected: {reason}")]
    KeyNotProtected { label: String, reason: &'static str },
    /// The key exists but is not what the gateway expects (type, size, curve).
    #[error("HSM key {label:?} is unusable: {reason}")]
    KeyUnusable { label: String, reason: &'static str },
    /// Any other PKCS#11 failure (the module's message, which never holds secrets).
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    /// Reading or writing the development key file.
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },

    // ---- the device's file ----
    /// The device file could not be read, written or parsed (the message names the file,
    /// never its contents).
    #[error("device file: {0}")]
    DeviceFile(String),
    /// Wrong passphrase, or the file was altered.
    #[error("the device file did not open: wrong passphrase or a damaged file")]
    DeviceFileLocked,

    // ---- custody: sealing ----
    /// Sealing requires associated data (the wallet and epoch a share belongs to).
    #[error("associated data must not be empty")]
    EmptyAad,
    /// The sealed bytes are not in a format this version reads.
    #[error("sealed data is malformed or of an unknown version")]
    SealedMalformed,
    /// Authentication failed: tampered ciphertext, wrong associated data or another key.
    #[error("sealed data could not be opened (tampered, wrong wallet/epoch or wrong key)")]
    OpenFailed,
    /// The HSM signed, but the signature does not verify under the audit key's public key.
    #[error("the HSM returned an invalid checkpoint signature")]
    BadHsmSignature,

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
    /// A message arrived before [`crate::mpc::Ceremony::start`] was called.
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
    /// The gateway announced a digest other than the one the device computed from the request
    /// itself: the device ran no protocol round, so the gateway got nothing of its share.
    #[error(
        "the gateway asked this device to sign {announced}, but the request it checked has \
         digest {expected}: nothing was signed"
    )]
    DigestMismatch { expected: String, announced: String },
    /// A refresh ended with a share of another wallet than the one the device held: the new
    /// share is dropped and the current one kept.
    #[error(
        "the refresh produced a share of {got}, not of the wallet {held} this device holds: \
         the new share was dropped and the current one kept"
    )]
    AddressChanged { held: String, got: String },

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
