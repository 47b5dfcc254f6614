//! The gateway's party of one signing ceremony (docs/architecture.md §6). Only the owner's paired
//! device that holds the wallet's other share may join; the request must be authorized and
//! unexpired, and the gateway signs that request's digest with that request's epoch and nothing
//! else. The signature is checked independently, audited (`signature.released`) and recorded before
//! the gateway's final protocol message leaves; a failure before that releases the reservation and
//! is audited as `signature.failed`.

use parapet_custody::share_aad;
use parapet_mpc::wire::{Control, WireSignature, bytes32};
use parapet_mpc::{Dkls23, KeyShare, Role, SessionId, ThresholdEcdsa, drive, verify_signature};
use time::{Duration, OffsetDateTime};

use super::ceremonies::{self, Begin};
use super::signing::{self, SigningRequest};
use super::{Channel, Cosigner, from_signer};
use crate::accounts::devices::Device;
use crate::accounts::wallets::{self, StoredWallet};
use crate::audit::event::{AuditEvent, EventKind};
use crate::error::{Error, Result};

/// The longest a signing ceremony may run once it has taken its request.
pub const CEREMONY_LIMIT: Duration = Duration::seconds(120);

/// Joins `device` to signing request `id` over `channel`. `dev_app`: the development app
/// while the static token is on ([`crate::accounts::apps::app_may_act`]).
pub async fn run(
    cosigner: &Cosigner,
    device: &Device,
    id: &str,
    dev_app: Option<&str>,
    channel: &mut impl Channel,
    now: impl Fn() -> OffsetDateTime,
) -> Result<()> {
    let store = cosigner.audit.store();
    // Someone else's request and no request look the same.
    let request = signing::get(store, id)
        .await?
        .filter(|r| r.owner == device.user_id)
        .ok_or(Error::NotFound)?;
    let wallet = wallets::get(store, &request.wallet)
        .await?
        .ok_or(Error::NotFound)?;
    if !crate::accounts::backup_devices::holds(store, &device.device_id, &wallet).await? {
        return Err(Error::DeviceNotAllowed);
    }
    if wallet.refresh_required {
        return Err(Error::RefreshRequired);
    }
    // A freeze stops what was authorized before it, too.
    if wallet.frozen {
        return Err(Error::NotSignable("for a frozen wallet".to_owned()));
    }
    // So does revoking or freezing the app that asked for it.
    crate::accounts::apps::app_may_act(store, &request.app_id, dev_app).await?;
    if wallet.epoch != request.epoch {
        return Err(Error::NotSignable(
            "for a share epoch that has been refreshed".to_owned(),
        ));
    }
    let t = now();
    let session = SessionId::random();
    let request = signing::take_for_ceremony(
        store,
        id,
        t,
        t + CEREMONY_LIMIT,
        &session,
        Begin {
            kind: "sign",
            device_id: &device.device_id,
            wallet: Some(&wallet.address),
            signing_request: Some(id),
        },
    )
    .await?;
    let result = sign(cosigner, &wallet, &request, device, channel, session, &now).await;
    match &result {
        Ok(_) => ceremonies::end(store, &session, "ok", now()).await,
        Err(e) => {
            ceremonies::end(store, &session, e.code(), now()).await;
            // After the final message left, the amount counts and the signature stands.
            let sent = matches!(signing::get(store, id).await, Ok(Some(r)) if r.final_sent);
            if !sent {
                fail(cosigner, &request, device, &session, e, now()).await;
            }
        }
    }
    result
}

/// Records a failed ceremony: the request is `failed` and its reservation released (the final
/// message never left), audited.
async fn fail(
    cosigner: &Cosigner,
    request: &SigningRequest,
    device: &Device,
    session: &SessionId,
    error: &Error,
    now: OffsetDateTime,
) {
    let store = cosigner.audit.store();
    let mut e = event(request, "signature.failed", now);
    e.request = Some(serde_json::json!({
        "signing_request": request.id,
        "execution_id": hex::encode(session.as_bytes()),
        "device": device.device_id,
        "error": error.code(),
        "reservation": "released",
    }));
    if let Err(audit_error) = cosigner.audit.append(e).await {
        tracing::error!(%audit_error, "auditing a failed ceremony failed");
    }
    if let Err(db_error) = signing::mark_failed(store, &request.id, error.code(), now).await {
        tracing::error!(%db_error, "recording a failed ceremony failed");
    }
}

fn event(request: &SigningRequest, action: &str, now: OffsetDateTime) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Signature, now, request.id.clone());
    e.app = Some(request.app_id.clone());
    e.user = Some(request.owner.to_string());
    e.wallet = Some(request.wallet.clone());
    e.chain_id = u64::try_from(request.chain_id).ok();
    e.action = Some(action.to_owned());
    e.digest = Some(request.digest.clone());
    e
}

async fn sign(
    cosigner: &Cosigner,
    wallet: &StoredWallet,
    request: &SigningRequest,
    device: &Device,
    channel: &mut impl Channel,
    session: SessionId,
    now: &impl Fn() -> OffsetDateTime,
) -> Result<()> {
    let digest = bytes32(&request.digest)
        .ok_or_else(|| Error::Internal("a stored digest does not parse".to_owned()))?;
    let address = crate::service::pipeline::parse_address(&wallet.address)?.into_array();
    let epoch =
        u64::try_from(wallet.epoch).map_err(|_| Error::Internal("negative epoch".to_owned()))?;
    let sealed =
        wallets::sealed_share(cosigner.audit.store(), &wallet.address, wallet.epoch).await?;
    let plaintext = super::open(&cosigner.custody, sealed, share_aad(&address, epoch)).await?;
    let share =
        KeyShare::from_bytes(&plaintext).map_err(|e| Error::HsmUnavailable(e.to_string()))?;
    drop(plaintext);
    if share.role() != Role::Gateway || *share.address() != address {
        return Err(Error::Internal(
            "the stored share is not this wallet's gateway share".to_owned(),
        ));
    }
    let ceremony = Dkls23
        .sign(Role::Gateway, session, &share, digest)
        .map_err(from_signer)?;
    let public_key = *share.public_key();
    drop(share);
    channel
        .control(&Control::Start {
            ceremony: "sign".to_owned(),
            session: hex::encode(session.as_bytes()),
            wallet: Some(wallet.address.clone()),
            digest: Some(request.digest.clone()),
            epoch: Some(wallet.epoch),
        })
        .await
        .map_err(from_signer)?;
    let (last, signature) = drive::run(super::RUNTIME, ceremony, channel)
        .await
        .map_err(from_signer)?;
    // The ceremony checked it already; check again against the wallet's record, so that a
    // mix-up anywhere above cannot release a signature for another key or digest.
    verify_signature(&public_key, &address, &digest, &signature).map_err(from_signer)?;
    let rsv = hex::encode(signature.to_rsv());
    let mut e = event(request, "signature.released", now());
    e.request = Some(serde_json::json!({
        "signing_request": request.id,
        "execution_id": hex::encode(session.as_bytes()),
        "device": device.device_id,
        "signature": format!("0x{rsv}"),
    }));
    let signed = signing::FinalSent::new(&request.id, &rsv, now());
    cosigner
        .audit
        .append_with(e, Some(Box::new(signed)))
        .await?;
    drive::send_all(channel, last).await.map_err(|error| {
        // The signature is recorded and counted; the device may or may not have it.
        tracing::warn!(%error, request = %request.id, "the final message may not have reached the device");
        from_signer(error)
    })?;
    channel
        .control(&Control::Done {
            address: None,
            signature: Some(WireSignature::from(&signature)),
        })
        .await
        .map_err(from_signer)?;
    Ok(())
}
