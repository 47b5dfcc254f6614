//! The backup exchange that ends every key generation and refresh (docs/architecture.md §9), before
//! anything is committed: the device sends its new share sealed to the recovery public key *it*
//! holds; the gateway refuses a key that is not the user's, then seals its own new share to that
//! key and sends it back as the device's backup kit. The gateway keeps the device's envelope (it
//! cannot open it) and commits it with the share it belongs to.

use parapet_mpc::KeyShare;
use parapet_mpc::recovery::RecoveryPublicKey;
use parapet_mpc::recovery::envelope::{self, Contents};
use parapet_mpc::wire::Control;

use super::{Channel, from_signer, hex0x};
use crate::accounts::recovery;
use crate::error::{Error, Result};

/// Runs the exchange for `share` at `epoch`; returns the device's sealed share to store.
pub async fn exchange(
    channel: &mut impl Channel,
    users_key: &RecoveryPublicKey,
    share: &KeyShare,
    epoch: i64,
) -> Result<Vec<u8>> {
    let address = hex0x(share.address());
    let device_envelope = match channel.expect_control().await.map_err(from_signer)? {
        Control::Backup {
            address: a,
            epoch: e,
            recovery_public_key,
            device_share,
        } if a == address && e == epoch => {
            let key = RecoveryPublicKey::from_hex(&recovery_public_key)
                .map_err(|_| Error::RecoveryKeyMismatch)?;
            if key != *users_key {
                return Err(Error::RecoveryKeyMismatch);
            }
            recovery::parse_envelope(&device_share)?
        }
        other => {
            return Err(Error::CeremonyFailed(format!(
                "expected the device's backup of {address} at epoch {epoch}, got {}",
                other.kind()
            )));
        }
    };
    let kit = envelope::seal(
        users_key,
        Contents::GatewayShare,
        share.address(),
        epoch,
        share.to_bytes().as_slice(),
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    channel
        .control(&Control::Kit {
            address,
            epoch,
            gateway_share: hex::encode(kit),
        })
        .await
        .map_err(from_signer)?;
    Ok(device_envelope)
}
