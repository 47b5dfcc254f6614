//! The device's side of the recovery secret (DESIGN §9), with `Authorization: Device <token>`:
//! whether the user has one, setting it up (or joining it with the same secret) with the
//! backups of the device's wallets, and checking a secret without opening a recovery. Auth keys
//! travel only in these bodies and are never logged or audited; wrong ones are counted per user
//! and per IP like failed logins.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parapet_signer::recovery::RecoveryPublicKey;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::AppState;
use super::client_ip::{ClientIp, ip_key};
use super::device_routes::device_of;
use super::error::{ApiError, json_answer};
use super::request_id::ReqId;
use super::routes::json_body;
use crate::audit::event::{AuditEvent, EventKind};
use crate::cosign::Cosigner;
use crate::error::Error;
use crate::recovery::{self, DeviceBackup};

type Answer = Result<Response, ApiError>;

/// A 32-byte auth key from hex, kept in zeroizing memory.
fn auth_key(text: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.strip_prefix("0x").unwrap_or(text), out.as_mut())
        .map_err(|_| Error::InvalidRequest("auth_key is 32 bytes of hex".to_owned()))?;
    Ok(out)
}

/// The user's recovery state as this device may see it: whether a secret is set up, its public
/// key (for display; a device seals only to the copy in its own file), and, for each wallet the
/// device holds, its epoch and the epochs of the backups the gateway keeps.
pub async fn status(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    headers: HeaderMap,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let device = device_of(&state, &headers).await.map_err(fail)?;
    let store = state.audit.store();
    let stored = recovery::get(store, device.user_id).await.map_err(fail)?;
    let mut wallets = Vec::new();
    for w in crate::wallets::of_owner(store, device.user_id)
        .await
        .map_err(fail)?
    {
        if w.device_id != device.device_id {
            continue;
        }
        let backups = recovery::backup_epochs(store, &w.address)
            .await
            .map_err(fail)?;
        wallets.push(serde_json::json!({
            "address": w.address, "epoch": w.epoch, "backup_epochs": backups,
        }));
    }
    Ok(json_answer(
        serde_json::json!({
            "user_id": device.user_id.to_string(),
            "set_up": stored.is_some(),
            "public_key": stored.as_ref().map(|s| s.public_key.to_hex()),
            "created_at": stored.as_ref().map(|s| s.created_at.clone()),
            "wallets": wallets,
        }),
        &request_id,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetUp {
    public_key: String,
    auth_key: String,
    #[serde(default)]
    backups: Vec<DeviceBackup>,
}

/// `POST /v1/device/recovery`: see [`recovery::enrol`].
pub async fn set_up(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let device = device_of(&state, &headers).await.map_err(fail)?;
    let req: SetUp = json_body(&headers, body).map_err(fail)?;
    let (ip, now) = (ip_key(ip), state.clock.now());
    let user_key = format!("recovery:{}", device.user_id);
    state
        .users
        .check_login(&ip, Some(&user_key), now)
        .map_err(fail)?;
    let public_key = RecoveryPublicKey::from_hex(&req.public_key).map_err(|_| {
        fail(Error::InvalidRequest(
            "public_key is an X25519 key in hex".into(),
        ))
    })?;
    let key = auth_key(&req.auth_key).map_err(fail)?;
    let cosigner = Cosigner {
        audit: state.audit.clone(),
        custody: state.custody.clone(),
    };
    match recovery::enrol(
        &cosigner,
        &device,
        &public_key,
        key,
        &req.backups,
        &request_id,
        now,
    )
    .await
    {
        Ok(kits) => Ok((
            StatusCode::CREATED,
            json_answer(serde_json::json!({ "kits": kits }), &request_id),
        )
            .into_response()),
        Err(Error::RecoverySecretRejected) => {
            rejected(&state, &device, &ip, &user_key, &request_id, now).await;
            Err(fail(Error::RecoverySecretRejected))
        }
        Err(other) => Err(fail(other)),
    }
}

/// Counts a wrong secret against the user and the IP and audits it (never what was sent).
async fn rejected(
    state: &AppState,
    device: &crate::devices::Device,
    ip: &str,
    user_key: &str,
    request_id: &str,
    now: time::OffsetDateTime,
) {
    let _ = state
        .users
        .login_failed(&state.audit, ip, Some(user_key), now);
    let mut e = AuditEvent::new(EventKind::Recovery, now, request_id);
    e.user = Some(device.user_id.to_string());
    e.action = Some("recovery.secret_rejected".to_owned());
    e.request = Some(serde_json::json!({ "device_id": device.device_id }));
    if let Err(error) = state.audit.append(e).await {
        tracing::warn!(%error, "auditing a rejected recovery secret");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    auth_key: String,
}

/// `POST /v1/device/recovery/check`: whether this secret's auth key is the user's, without
/// opening a recovery. A wrong one counts like a failed login.
pub async fn check(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let device = device_of(&state, &headers).await.map_err(fail)?;
    let req: Check = json_body(&headers, body).map_err(fail)?;
    let (ip, now) = (ip_key(ip), state.clock.now());
    let user_key = format!("recovery:{}", device.user_id);
    state
        .users
        .check_login(&ip, Some(&user_key), now)
        .map_err(fail)?;
    let key = auth_key(&req.auth_key).map_err(fail)?;
    let stored = recovery::get(state.audit.store(), device.user_id)
        .await
        .map_err(fail)?
        .ok_or_else(|| fail(Error::RecoverySetupRequired))?;
    if !stored.matches(key).await.map_err(fail)? {
        rejected(&state, &device, &ip, &user_key, &request_id, now).await;
        return Err(fail(Error::RecoverySecretRejected));
    }
    Ok(json_answer(
        serde_json::json!({ "matches": true, "public_key": stored.public_key.to_hex() }),
        &request_id,
    ))
}
