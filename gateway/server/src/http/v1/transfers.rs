//! Backup devices over the API (see [`crate::accounts::backup_devices`]). The devices speak with
//! `Authorization: Device <token>`: the new one asks and later fetches its sealed bundle, an
//! existing one lists approved requests and seals to them, and re-syncs stale devices after a
//! refresh. The user approves a request through the app (key + session) with a passkey step-up
//! bound to the request and its key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accounts::backup_devices::{self, Carried, TransferState};
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::{ApiError, json_answer};
use crate::http::extract::{AppSession, AuthedDevice, StrictJson};
use crate::http::request_id::ReqId;
use crate::http::v1::step_up::{Gate, gate};

type Answer = Result<Response, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    public_key: String,
}

/// `POST /v1/device/transfers {public_key}`: a new device asks for the user's wallets.
pub async fn ask(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    StrictJson(req): StrictJson<Ask>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let t = backup_devices::request(&state.store, &device, &req.public_key, state.clock.now())
        .await
        .map_err(fail)?;
    Ok((StatusCode::CREATED, json_answer(t.to_json(), &request_id)).into_response())
}

/// `GET /v1/device/transfers`: approved requests this device may seal to, and bundles waiting
/// for it.
pub async fn list(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let store = &state.store;
    let to_seal = backup_devices::awaiting_sender(store, &device, state.clock.now())
        .await
        .map_err(fail)?;
    let incoming = backup_devices::incoming(store, &device)
        .await
        .map_err(fail)?;
    Ok(json_answer(
        serde_json::json!({
            "to_seal": to_seal.iter().map(backup_devices::Transfer::to_json).collect::<Vec<_>>(),
            "incoming": incoming.iter().map(backup_devices::Transfer::to_json).collect::<Vec<_>>(),
        }),
        &request_id,
    ))
}

/// `GET /v1/device/transfers/{id}`: the sealed bundle, for its recipient only.
pub async fn fetch(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    Path(id): Path<String>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let store = &state.store;
    let t = backup_devices::of_user(store, device.user_id, &id)
        .await
        .map_err(fail)?;
    if t.to_device != device.device_id {
        return Err(fail(Error::NotFound));
    }
    let mut out = t.to_json();
    if t.state == TransferState::Sealed {
        let (_, sealed) = backup_devices::sealed_for(store, &device, &id)
            .await
            .map_err(fail)?;
        if let Some(o) = out.as_object_mut() {
            o.insert("sealed".to_owned(), hex::encode(sealed).into());
        }
    }
    Ok(json_answer(out, &request_id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The HPKE-sealed bundle, hex.
    sealed: String,
    wallets: Vec<Carried>,
    /// Only for a re-sync: the device it is for, and the transfer id the bundle is bound to.
    #[serde(default)]
    to_device: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

fn sealed_bytes(text: &str) -> Result<Vec<u8>, Error> {
    hex::decode(text.trim())
        .map_err(|_| parapet_decide::Error::InvalidHex("sealed".to_owned()).into())
}

/// `POST /v1/device/transfers/{id}/seal {sealed, wallets}`: an existing device seals its shares
/// to an approved request.
pub async fn seal(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<Sealed>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    if req.to_device.is_some() || req.id.is_some() {
        return Err(fail(Error::InvalidRequest(
            "to_device and id are only for a re-sync".to_owned(),
        )));
    }
    let sealed = sealed_bytes(&req.sealed).map_err(fail)?;
    let t = backup_devices::of_user(&state.store, device.user_id, &id)
        .await
        .map_err(fail)?;
    backup_devices::seal(
        &state.audit,
        &device,
        &t,
        &req.wallets,
        &sealed,
        &request_id,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    tracing::info!(transfer = %t.id, from = %device.device_id, to = %t.to_device, "device transfer sealed");
    Ok(json_answer(
        serde_json::json!({"id": t.id, "state": "sealed"}),
        &request_id,
    ))
}

/// `POST /v1/device/resync {id, to_device, sealed, wallets}`: a device holding the current epoch
/// sends it to a stale device of the same user.
pub async fn resync(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    StrictJson(req): StrictJson<Sealed>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (Some(to), Some(id)) = (req.to_device, req.id) else {
        return Err(fail(Error::InvalidRequest(
            "to_device and id are required".to_owned(),
        )));
    };
    let sealed = sealed_bytes(&req.sealed).map_err(fail)?;
    let t = backup_devices::resync(
        &state.audit,
        &device,
        &id,
        &to,
        &req.wallets,
        &sealed,
        &request_id,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    Ok((StatusCode::CREATED, json_answer(t.to_json(), &request_id)).into_response())
}

/// `POST /v1/device/transfers/{id}/received`: the recipient stored the bundle.
pub async fn received(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    Path(id): Path<String>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let t = backup_devices::received(&state.store, &device, &id, state.clock.now())
        .await
        .map_err(fail)?;
    Ok(json_answer(t.to_json(), &request_id))
}

/// `POST /v1/device-transfers/{id}/approve` with the app key and the user's session: an empty
/// body answers `step_up_required` with passkey options bound to the request and its key; the
/// assertion then approves it.
pub async fn approve(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    let t = backup_devices::of_user(&state.store, user, &id)
        .await
        .map_err(fail)?;
    let context = backup_devices::approval_context(&t);
    if crate::http::error::asks_for_step_up(&body) && t.state != TransferState::Waiting {
        return Err(fail(Error::TransferNotReady(format!("it is {}", t.state))));
    }
    let waiting = ("transfer", t.id.as_str());
    let gate = gate(&state, user, &context, waiting, &request_id, &headers, body).await;
    if let Gate::Ask(answer) = gate.map_err(fail)? {
        return Ok(answer);
    }
    let now = state.clock.now();
    let approved = backup_devices::approve(&state.audit, &t, &request_id, now)
        .await
        .map_err(fail)?;
    Ok(json_answer(approved.to_json(), &request_id))
}
