//! The device's error type: its file, what it checks of the gateway's claims, and (wrapped) the
//! protocol's errors. Messages never carry key material, passphrases or plaintext.

/// Everything the device role can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the device's file ----
    /// The device file could not be read, written or parsed (the message names the file,
    /// never its contents).
    #[error("device file: {0}")]
    DeviceFile(String),
    /// Wrong passphrase, or the file was altered.
    #[error("the device file did not open: wrong passphrase or a damaged file")]
    DeviceFileLocked,
    // ---- what the device checks of the gateway ----
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

    // ---- what the device signs (`signing`) ----
    /// The body is not a signing request (not JSON, no payload, an unknown field, …).
    #[error("not a signing request body: {0}")]
    NotARequest(String),
    /// The body names another wallet than the one the device signs for.
    #[error("the request is for wallet {named}, not {wallet}: nothing was signed")]
    OtherWallet { named: String, wallet: String },
    /// The request is not authorized (yet): waiting for the owner's passkey, denied, expired,
    /// signed already, …
    #[error("request {request} is {state}, not authorized: nothing to sign")]
    NotReady {
        request: String,
        state: parapet_api::SigningState,
    },
    /// The device's own decoder refuses the payload, so it will not sign it.
    #[error("this device cannot decode the request, so it will not sign it: {0}")]
    Undecodable(parapet_decide::Error),

    // ---- the protocol and recovery envelopes ----
    #[error(transparent)]
    Mpc(#[from] parapet_mpc::Error),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
