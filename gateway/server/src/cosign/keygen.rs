//! Key generation with a paired device (docs/architecture.md §8, §9): both parties run DKLs23's key
//! generation and exchange backups ([`super::backup`]; the user must have a recovery secret);
//! the device stores its share and kit first and says so; the gateway seals its own share
//! with custody (AAD = address, epoch 0) and commits the wallet (audited `wallet.create`), and
//! only then answers `done`. An interruption anywhere before the commit leaves no wallet.

use parapet_custody::share_aad;
use parapet_mpc::recovery::RecoveryPublicKey;
use parapet_mpc::wire::Control;
use parapet_mpc::{Dkls23, Role, SessionId, ThresholdEcdsa, drive};
use time::OffsetDateTime;

use super::ceremonies::{self, Begin};
use super::{Channel, Cosigner, from_signer, hex0x, stamp};
use crate::accounts::apps::Auditor;
use crate::accounts::devices::Device;
use crate::accounts::wallets::{self, StoredWallet};
use crate::error::{Error, Result};

/// Runs key generation with `device` over `channel` and returns the new wallet.
pub async fn run(
    cosigner: &Cosigner,
    device: &Device,
    channel: &mut impl Channel,
    request_id: &str,
    now: impl Fn() -> OffsetDateTime,
) -> Result<StoredWallet> {
    let store = cosigner.audit.store();
    let users_key = crate::accounts::recovery::public_key_of(store, device.user_id).await?;
    let session = SessionId::random();
    ceremonies::begin(
        store,
        &session,
        Begin {
            kind: "keygen",
            device_id: &device.device_id,
            wallet: None,
            signing_request: None,
        },
        now(),
    )
    .await?;
    let result = generate(
        cosigner, device, &users_key, channel, session, request_id, &now,
    )
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    ceremonies::end(store, &session, outcome, now()).await;
    result
}

async fn generate(
    cosigner: &Cosigner,
    device: &Device,
    users_key: &RecoveryPublicKey,
    channel: &mut impl Channel,
    session: SessionId,
    request_id: &str,
    now: &impl Fn() -> OffsetDateTime,
) -> Result<StoredWallet> {
    channel
        .control(&Control::Start {
            ceremony: "keygen".to_owned(),
            session: hex::encode(session.as_bytes()),
            wallet: None,
            digest: None,
            epoch: Some(0),
        })
        .await
        .map_err(from_signer)?;
    let ceremony = Dkls23.keygen(Role::Gateway, session).map_err(from_signer)?;
    let (last, share) = drive::run(super::RUNTIME, ceremony, channel)
        .await
        .map_err(from_signer)?;
    drive::send_all(channel, last).await.map_err(from_signer)?;
    let backup = super::backup::exchange(channel, users_key, &share, 0).await?;
    let address = hex0x(share.address());
    match channel.expect_control().await.map_err(from_signer)? {
        Control::Stored { address: a } if a == address => {}
        other => {
            return Err(Error::CeremonyFailed(format!(
                "expected the device to confirm it stored its share of {address}, got {}",
                other.kind()
            )));
        }
    }
    let sealed = super::seal(
        &cosigner.custody,
        share.to_bytes(),
        share_aad(share.address(), 0),
    )
    .await?;
    let wallet = StoredWallet {
        address: address.clone(),
        owner: device.user_id,
        device_id: device.device_id.clone(),
        public_key: hex::encode(share.public_key()),
        epoch: 0,
        labels: Vec::new(),
        groups: Vec::new(),
        frozen: false,
        refresh_required: false,
        created_at: stamp(now()),
    };
    wallets::create(
        cosigner.audit.store(),
        Auditor::Log(&cosigner.audit),
        &wallet,
        &sealed,
        &backup,
        request_id,
        now(),
    )
    .await?;
    if let Err(error) = cosigner.wallets.catch_up(cosigner.audit.store()).await {
        // The directory's own follower reads the feed again within a fraction of a second.
        tracing::warn!(%error, "the wallet directory did not catch up after a creation");
    }
    channel
        .control(&Control::Done {
            address: Some(address),
            signature: None,
        })
        .await
        .map_err(from_signer)?;
    Ok(wallet)
}
