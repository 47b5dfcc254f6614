//! The gateway's MPC party (docs/architecture.md §6, §8): key generation with a paired device,
//! signing requests and their ceremonies, and the velocity reservations they hold. Everything here
//! runs over a [`Channel`] (the ceremony WebSocket in production), so it is testable without HTTP.

pub mod backup;
pub mod ceremonies;
pub mod idempotency;
pub mod keygen;
pub mod refresh;
pub mod sign;
pub mod signing;
pub mod velocity;

use std::sync::Arc;
use std::time::Duration;

use parapet_custody::Custody;
use parapet_mpc::drive::{Runtime, Transport};
use parapet_mpc::wire::Control;
use time::OffsetDateTime;

use crate::audit::AuditLog;
use crate::error::Error;

/// How long the gateway waits for any one message from the device.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the gateway runs its party: protocol steps on the blocking pool, each wait for the device
/// bounded by [`STEP_TIMEOUT`].
pub const RUNTIME: Runtime = Runtime::Tokio {
    step_timeout: STEP_TIMEOUT,
};

/// The connection to the device: protocol messages ([`Transport`]) and control messages.
pub trait Channel: Transport {
    fn control(
        &mut self,
        control: &Control,
    ) -> impl std::future::Future<Output = parapet_mpc::Result<()>> + Send;
    fn expect_control(
        &mut self,
    ) -> impl std::future::Future<Output = parapet_mpc::Result<Control>> + Send;
}

/// What a ceremony needs from the gateway.
#[derive(Clone)]
pub struct Cosigner {
    pub audit: Arc<AuditLog>,
    pub custody: Arc<dyn Custody>,
    /// Told at once of a wallet this process creates, so that its first decision already reads
    /// the record.
    pub wallets: Arc<crate::accounts::wallet_directory::WalletDirectory>,
}

impl Cosigner {
    /// The gateway's side of every ceremony, from what handlers share.
    pub fn of(state: &crate::state::AppState) -> Cosigner {
        Cosigner {
            audit: state.audit.clone(),
            custody: state.custody.clone(),
            wallets: state.wallet_directory.clone(),
        }
    }
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigner").finish_non_exhaustive()
    }
}

/// Maps the protocol's errors: what the device did wrong is the caller's fault
/// (`ceremony_failed`); anything else (a stored share that does not read) is custody's.
pub fn from_signer(e: parapet_mpc::Error) -> Error {
    use parapet_mpc::Error as S;
    match e {
        S::CeremonyTimeout => Error::CeremonyTimeout,
        S::Refused { code, message } => {
            Error::CeremonyFailed(format!("the device ended the ceremony: {message} ({code})"))
        }
        e @ (S::Transport(_)
        | S::MessageMalformed
        | S::WrongCeremony
        | S::WrongSession
        | S::UnexpectedRound { .. }
        | S::WrongParty
        | S::NotStarted
        | S::CeremonyOver
        | S::Protocol { .. }
        | S::SignatureInvalid(_)) => Error::CeremonyFailed(e.to_string()),
        other => Error::HsmUnavailable(other.to_string()),
    }
}

/// Seals `plaintext` with custody off the async runtime (an HSM call blocks).
pub async fn seal(
    custody: &Arc<dyn Custody>,
    plaintext: zeroize::Zeroizing<Vec<u8>>,
    aad: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let custody = custody.clone();
    tokio::task::spawn_blocking(move || custody.seal(&plaintext, &aad))
        .await
        .map_err(|e| Error::Internal(format!("sealing task: {e}")))?
        .map_err(|e| Error::HsmUnavailable(e.to_string()))
}

/// Opens a sealed share with custody off the async runtime.
pub async fn open(
    custody: &Arc<dyn Custody>,
    sealed: Vec<u8>,
    aad: Vec<u8>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let custody = custody.clone();
    tokio::task::spawn_blocking(move || custody.open(&sealed, &aad))
        .await
        .map_err(|e| Error::Internal(format!("opening task: {e}")))?
        .map_err(|e| Error::HsmUnavailable(e.to_string()))
}

/// `0x` + lower-case hex.
pub fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// The time, for records.
pub fn stamp(now: OffsetDateTime) -> String {
    crate::audit::event::format_time(now)
}
