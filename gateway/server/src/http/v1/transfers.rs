//! Backup devices over the API (see [`crate::accounts::backup_devices`]). The devices speak with
//! `Authorization: Device <token>`: the new one asks and later fetches its sealed bundle, an
//! existing one lists approved requests and seals to them, and re-syncs stale devices after a
//! refresh. The user approves a request through the app (key + session) with a passkey step-up
//! bound to the request and its key.

use parapet_api::devices::{TransferAnswer, TransferList, TransferSealed};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accounts::backup_devices::{self, Carried, TransferState};
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{AppSession, AuthedDevice, StrictJson};
use crate::http::request_id::ReqId;
use crate::http::v1::step_up::{Gate, gate};

type Answer = Result<Response, ApiError>;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    public_key: String,
}

/// `POST /v1/device/transfers {public_key}`: a new device asks for the user's wallets.
#[utoipa::path(
    post,
    path = "/v1/device/transfers",
    operation_id = "transfers_ask",
    summary = "A new device asks for the user's wallets",
    description = "`{public_key}`: the device's own X25519 public key (hex). The device shows the short code derived from it (SHA-256 of a domain tag and the key, 60 bits as `XXXX-XXXX-XXXX`). The user then approves the request with a passkey (`/v1/device-transfers/{id}/approve`) and an existing device seals to it. Expires after 15 minutes; an earlier open request of the same device is withdrawn.",
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    request_body(content = inline(Ask)),
    responses(
        (status = 201, description = "{id, kind, to_device, public_key, short_code, state: waiting, expires_at, …}", body = TransferAnswer),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok((StatusCode::CREATED, answer(&t, request_id)).into_response())
}

/// `GET /v1/device/transfers`: approved requests this device may seal to, and bundles waiting
/// for it.
#[utoipa::path(
    get,
    path = "/v1/device/transfers",
    operation_id = "transfers_list",
    summary = "Device transfers this device takes part in",
    description = "`to_seal`: requests of other devices of the user that the user approved (each with the recipient's public key: derive the short code from it and compare with the new device's screen before sealing). `incoming`: sealed bundles waiting for this device.",
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    responses(
        (status = 200, description = "{to_seal: [transfer], incoming: [transfer], request_id}", body = TransferList),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(TransferList {
        to_seal: to_seal.iter().map(backup_devices::Transfer::view).collect(),
        incoming: incoming
            .iter()
            .map(backup_devices::Transfer::view)
            .collect(),
        request_id,
    })
    .into_response())
}

/// `GET /v1/device/transfers/{id}`: the sealed bundle, for its recipient only.
#[utoipa::path(
    get,
    path = "/v1/device/transfers/{id}",
    operation_id = "transfers_fetch",
    summary = "A transfer, with its sealed bundle for the recipient",
    description = "Only the recipient device sees it (404 otherwise); `sealed` (hex) is present while the state is `sealed`.",
    params(
        crate::http::openapi_parts::DeviceToken,
        ("id" = String, Path),
    ),
    responses(
        (status = 200, description = "{id, state, …, sealed?}", body = TransferAnswer),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    let mut transfer = t.view();
    if t.state == TransferState::Sealed {
        let (_, sealed) = backup_devices::sealed_for(store, &device, &id)
            .await
            .map_err(fail)?;
        transfer.sealed = Some(hex::encode(sealed));
    }
    Ok(Json(TransferAnswer {
        transfer,
        request_id,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// HPKE (X25519, HKDF-SHA-256, ChaCha20-Poly1305) bundle sealed to the recipient device's
    /// key, hex.
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
#[utoipa::path(
    post,
    path = "/v1/device/transfers/{id}/seal",
    operation_id = "transfers_seal",
    summary = "Seal this device's shares to an approved request",
    description = "`{sealed, wallets}`. The sending device must hold every carried wallet at its current epoch (no pending refresh); the request must be approved and unexpired (409 `transfer_not_ready`). Audited as `device.add` before it is stored. Bodies up to 16 MiB.",
    params(
        crate::http::openapi_parts::DeviceToken,
        ("id" = String, Path),
    ),
    request_body(content = inline(Sealed)),
    responses(
        (status = 200, description = "{id, state: sealed, request_id}", body = TransferSealed),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 413, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(TransferSealed {
        id: t.id,
        state: TransferState::Sealed,
        request_id,
    })
    .into_response())
}

/// `POST /v1/device/resync {id, to_device, sealed, wallets}`: a device holding the current epoch
/// sends it to a stale device of the same user.
#[utoipa::path(
    post,
    path = "/v1/device/resync",
    operation_id = "transfers_resync",
    summary = "Send a refreshed share to a stale device",
    description = "`{id, to_device, sealed, wallets}`: after a refresh, a device holding the current epoch seals it to another device of the user that held an older epoch (to the key it confirmed when that device was added, kept in its own file). `id` is `dtr_` + 32 hex digits chosen by the sender, and the bundle is bound to it. No new approval: the device was approved before. Audited as `device.resync`.",
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    request_body(content = inline(Sealed)),
    responses(
        (status = 201, description = "{id, kind: resync, state: sealed, …}", body = TransferAnswer),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 413, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok((StatusCode::CREATED, answer(&t, request_id)).into_response())
}

/// `POST /v1/device/transfers/{id}/received`: the recipient stored the bundle.
#[utoipa::path(
    post,
    path = "/v1/device/transfers/{id}/received",
    operation_id = "transfers_received",
    summary = "The recipient stored the bundle",
    description = "From now on the recipient holds the carried wallets at their epochs and may sign; the sealed bytes are deleted.",
    params(
        crate::http::openapi_parts::DeviceToken,
        ("id" = String, Path),
    ),
    responses(
        (status = 200, description = "{id, state: received, …}", body = TransferAnswer),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(answer(&t, request_id))
}

/// `POST /v1/device-transfers/{id}/approve` with the app key and the user's session: an empty
/// body answers `step_up_required` with passkey options bound to the request and its key; the
/// assertion then approves it.
#[utoipa::path(
    post,
    path = "/v1/device-transfers/{id}/approve",
    operation_id = "transfers_approve",
    summary = "The user approves a new device",
    description = "App key and the user's session. An empty body answers 403 `step_up_required` with passkey options (user verification) bound to the request and its key; posting `{ceremony_id, credential}` approves it. Audited as `device.add_approve`. `GET /v1/devices` lists waiting requests with their short codes.",
    params(
        crate::http::openapi_parts::OwnerSession,
        ("id" = String, Path),
    ),
    responses(
        (status = 200, description = "{id, state: approved, short_code, …}", body = TransferAnswer),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(answer(&approved, request_id))
}

/// A transfer as the answer to a request about it.
fn answer(t: &backup_devices::Transfer, request_id: String) -> Response {
    Json(TransferAnswer {
        transfer: t.view(),
        request_id,
    })
    .into_response()
}
