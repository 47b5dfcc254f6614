//! Custody's error type. Messages never carry key material, PINs or plaintext: callers log them
//! as they are.

/// Everything custody can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
