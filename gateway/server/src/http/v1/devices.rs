//! Devices over the API: pairing (the one-time code is the credential), the device's own view
//! (`Authorization: Device <token>`), and the session user's list and revocation (app key +
//! session).

use parapet_api::devices::{DeviceList, DevicePaired, DeviceRevoked, HeldDevice, ThisDevice};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accounts::apps::Auditor;
use crate::accounts::devices;
use crate::error::Error;
use crate::http::AppState;
use crate::http::client_ip::{ClientIp, ip_key};
use crate::http::error::ApiError;
use crate::http::extract::{AppSession, AuthedDevice, StrictJson};
use crate::http::request_id::ReqId;

type Answer = Result<Response, ApiError>;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    code: String,
    #[schema(max_length = 100)]
    name: String,
}

#[utoipa::path(
    post,
    path = "/v1/devices/pair",
    operation_id = "devices_pair",
    summary = "Pair a device with a one-time code",
    description = "The device (`parapet device pair --gateway URL CODE`) trades the code its user made on the page (valid 10 minutes, single-use; any attempt burns it) for a device token, shown once and kept in the device's encrypted file. No app key: the code is the credential. Every failure is `401 login_failed`, counted per client IP. Audited (kind `device`, action `device.pair`).",
    security(()),
    request_body(content = inline(Pair)),
    responses(
        (status = 200, description = "{device_id, device_token, user_id, name, request_id}", body = DevicePaired),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn pair(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<Pair>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    state.users.check_login(&ip, None, now).map_err(fail)?;
    let (device, token) = match devices::pair(
        &state.store,
        Auditor::Log(&state.audit),
        &req.code,
        &req.name,
        &request_id,
        now,
    )
    .await
    {
        Ok(d) => d,
        Err(Error::LoginFailed) => {
            return Err(fail(state.users.login_failed(&state.audit, &ip, None, now)));
        }
        Err(other) => return Err(fail(other)),
    };
    tracing::info!(device_id = %device.device_id, user = %device.user_id, "device paired");
    Ok(Json(DevicePaired {
        device_id: device.device_id,
        device_token: token,
        user_id: device.user_id.to_string(),
        name: device.name,
        request_id,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/device",
    operation_id = "devices_me",
    summary = "The calling device",
    description = "With `Authorization: Device <token>` (a header; never a query string). 401 for an unknown or revoked device or a disabled user.",
    security(()),
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    responses(
        (status = 200, description = "{device_id, user_id, name, created_at, last_seen, revoked_at, request_id}", body = ThisDevice),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn me(ReqId(request_id): ReqId, AuthedDevice(device): AuthedDevice) -> Answer {
    Ok(Json(ThisDevice {
        device: device.view(),
        request_id,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/devices",
    operation_id = "devices_list",
    summary = "The session user's devices",
    description = "Revoked ones included, oldest first.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    responses(
        (status = 200, description = "{devices: [{device_id, user_id, name, created_at, last_seen, revoked_at}], request_id}", body = DeviceList),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    let list = devices_with_holdings(&state, user, request_id.clone())
        .await
        .map_err(fail)?;
    Ok(Json(list).into_response())
}

/// `POST /v1/devices/{id}/revoke`: removing a device needs the person's passkey once they have
/// one (ask with `{}`, answer with the assertion): an app's session alone must not lock the
/// person's wallets until a recovery.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/revoke",
    operation_id = "devices_revoke",
    summary = "Revoke one of the session user's devices",
    description = "Its token stops working at once. Once the person has a passkey, removing a device needs it: a body that asks (none, or `{}`) answers 403 `step_up_required` with passkey options bound to this device's removal; `{ceremony_id, credential}` with the owner's assertion (user verification) removes it. A person with no passkey yet removes it with the session alone. Audited first (kind `device`, action `device.revoke`). 404 when the user has no such live device.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
        ("id" = String, Path),
    ),
    request_body(content = inline(Option<crate::http::v1::signing::StepUp>), description = "None, or `{}`, asks for the step-up; `{ceremony_id, credential}` with the owner's passkey assertion passes it."),
    responses(
        (status = 200, description = "{revoked: {device}, request_id}", body = DeviceRevoked),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    let device = devices::live_of(&state.store, user, &id)
        .await
        .map_err(fail)?;
    let context = devices::revoke_context(&device.device_id);
    let waiting = ("device", device.device_id.as_str());
    let gate = crate::http::v1::step_up::gate_once_enrolled(
        &state,
        user,
        &context,
        waiting,
        &request_id,
        &headers,
        body,
    )
    .await;
    if let crate::http::v1::step_up::Gate::Ask(answer) = gate.map_err(fail)? {
        return Ok(answer);
    }
    let device = devices::revoke(
        &state.store,
        Auditor::Log(&state.audit),
        user,
        &id,
        &request_id,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    Ok(Json(DeviceRevoked {
        revoked: device.view(),
        request_id,
    })
    .into_response())
}

/// The user's devices, each with the wallets it holds and whether it is stale (holds an epoch a
/// refresh has moved past), and the device requests waiting for the user's approval with their
/// short codes: what the app and the page show.
pub(crate) async fn devices_with_holdings(
    state: &AppState,
    user: uuid::Uuid,
    request_id: String,
) -> Result<DeviceList, Error> {
    let store = &state.store;
    let list = devices::list(store, user).await?;
    let mut holdings = crate::accounts::backup_devices::holdings(store, user).await?;
    let devices = list
        .iter()
        .map(|d| {
            let wallets = holdings.remove(&d.device_id).unwrap_or_default();
            HeldDevice {
                device: d.view(),
                stale: wallets.iter().any(|h| !h.current),
                wallets,
            }
        })
        .collect();
    let waiting =
        crate::accounts::backup_devices::waiting_approval(store, user, state.clock.now()).await?;
    let transfers = waiting
        .iter()
        .map(crate::accounts::backup_devices::Transfer::view)
        .collect();
    Ok(DeviceList {
        devices,
        transfers,
        request_id,
    })
}
