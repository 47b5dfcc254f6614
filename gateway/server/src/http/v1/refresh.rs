//! Key refresh over HTTP (docs/architecture.md §6): the owner asks for it and approves it with a
//! passkey (`POST /v1/wallets/{address}/refresh`, then `POST /v1/operations/{id}/step-up`), and
//! their device runs it (`/v1/device/wallets/{address}/refresh`, a WebSocket; see
//! [`crate::cosign::refresh`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::accounts::wallets;
use crate::audit::event::{AuditEvent, EventKind};
use crate::cosign::refresh::{self, APPROVAL_TTL};
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::body::json_body;
use crate::http::error::{ApiError, json_answer};
use crate::http::extract::AppSession;
use crate::http::request_id::ReqId;
use crate::http::v1::step_up::{Gate, gate};

type Answer = Result<Response, ApiError>;

/// `POST /v1/wallets/{address}/refresh`: records the refresh and answers `step_up_required`
/// with passkey options bound to it (or `passkey_required`).
#[utoipa::path(
    post,
    path = "/v1/wallets/{address}/refresh",
    operation_id = "refresh_start",
    summary = "Ask to refresh a wallet's key shares",
    description = "The owner's session only (someone else's wallet is `not_found`). Records a refresh operation bound to the wallet and its current epoch and answers 403 `step_up_required` with `operation` and `step_up: {ceremony_id, options}` (or `passkey_required`). After the owner's approval (`POST /v1/operations/{id}/step-up`) their device runs the refresh (`/v1/device/wallets/{address}/refresh`) within 10 minutes. Same address, epoch + 1; the old gateway share is deleted only when the device has confirmed its new share; `refresh_required` is cleared.",
    params(
        ("address" = String, Path),
        crate::http::openapi_parts::OwnerSession,
    ),
    responses(
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn start(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
    Path(address): Path<String>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let store = &state.store;
    let wallet = wallets::owned_by(store, &address, session.facts.user)
        .await
        .map_err(fail)?;
    let now = state.clock.now();
    let op = refresh::create(store, &wallet, APPROVAL_TTL, now)
        .await
        .map_err(fail)?;
    let step_up = state
        .passkeys
        .start_step_up(wallet.owner, &refresh::step_up_context(&op), now)
        .await
        .map_err(fail)?;
    Ok(crate::http::error::step_up_required(
        &request_id,
        ("operation", &op.id),
        step_up,
    ))
}

/// `POST /v1/operations/{id}/step-up`: the owner's assertion for this operation's ceremony
/// approves it (single-use). A refresh: the device then has [`APPROVAL_TTL`] to run it. A
/// device's first recovery secret ([`crate::accounts::recovery::approval`]): `{}` asks for the passkey
/// options, the assertion approves, and the device then sets the secret.
#[utoipa::path(
    post,
    path = "/v1/operations/{id}/step-up",
    operation_id = "refresh_step_up",
    summary = "Approve an operation with the owner's passkey",
    description = "Approves an operation with the owner's passkey. A refresh: `{ceremony_id, credential}`, the owner's assertion for the ceremony that `POST /v1/wallets/{address}/refresh` started, bound to that operation (kind, id, wallet, epoch), single-use and expiring; another is `step_up_mismatch`; audited as `wallet.refresh_approved`. A device's first recovery secret (the `operation` of `POST /v1/device/recovery`'s `step_up_required`): `{}` answers 403 `step_up_required` with passkey options bound to that device and the secret's public key, and the assertion approves it (audited `recovery.setup_approved`; the device then has 10 minutes to set the secret).",
    params(
        ("id" = String, Path),
        crate::http::openapi_parts::OwnerSession,
    ),
    request_body(content = inline(crate::http::v1::signing::StepUp)),
    responses(
        (status = 200, description = "{operation, state: approved, expires_at}", body = Object),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn step_up(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let store = &state.store;
    let user = session.facts.user;
    let Some(op) = refresh::get(store, &id)
        .await
        .map_err(fail)?
        .filter(|o| o.owner == user)
    else {
        let setup = crate::accounts::recovery::approval::of_owner(store, user, &id)
            .await
            .map_err(fail)?;
        let context = setup.step_up_context();
        let waiting = ("operation", setup.id.as_str());
        let gate = gate(&state, user, &context, waiting, &request_id, &headers, body).await;
        if let Gate::Ask(answer) = gate.map_err(fail)? {
            return Ok(answer);
        }
        let now = state.clock.now();
        let approved = crate::accounts::recovery::approval::approve(
            &state.audit,
            &setup,
            Some(&caller.id),
            &request_id,
            now,
        )
        .await
        .map_err(fail)?;
        return Ok(json_answer(approved.to_json(None), &request_id));
    };
    let req: crate::http::v1::signing::StepUp = json_body(&headers, body).map_err(fail)?;
    let now = state.clock.now();
    state
        .passkeys
        .finish_step_up(
            &req.ceremony_id,
            &req.credential,
            op.owner,
            &refresh::step_up_context(&op),
            now,
        )
        .await
        .map_err(fail)?;
    let mut e = AuditEvent::new(EventKind::Wallet, now, request_id.clone());
    e.user = Some(op.owner.to_string());
    e.app = Some(caller.id.clone());
    e.wallet = Some(op.wallet.clone());
    e.action = Some("wallet.refresh_approved".to_owned());
    e.request = Some(serde_json::json!({"operation": op.id, "epoch": op.epoch}));
    state.audit.append(e).await.map_err(fail)?;
    let expires = now + APPROVAL_TTL;
    if !refresh::transition(
        store,
        &op.id,
        refresh::OperationState::PendingStepUp,
        refresh::OperationState::Approved,
        expires,
        now,
    )
    .await
    .map_err(fail)?
    {
        return Err(fail(Error::NotSignable(op.state.to_string())));
    }
    Ok(json_answer(
        serde_json::json!({"operation": op.id, "state": "approved", "expires_at": crate::cosign::stamp(expires)}),
        &request_id,
    ))
}

/// `GET /v1/device/wallets/{address}/refresh`: the owner's device runs an approved refresh.
#[utoipa::path(
    get,
    path = "/v1/device/wallets/{address}/refresh",
    operation_id = "refresh_ceremony",
    summary = "Run an approved refresh (WebSocket)",
    description = "The owner's paired device that holds the wallet's other share runs DKLs23 refresh with the gateway. Phase 1: the gateway stores its new share pending; the device stores its new share next to its current one and says `stored`. Phase 2: the gateway audits `wallet.refresh`, advances the epoch, makes the new share current, deletes the old one, and says `done`. Interrupted before phase 2, the old epoch keeps signing. Without an approval: `not_signable`.",
    security(()),
    params(
        ("address" = String, Path),
        crate::http::openapi_parts::DeviceToken,
    ),
    responses(
        (status = 101, description = "Switching protocols"),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn ceremony(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Path(address): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Answer {
    crate::http::v1::ceremony::refreshing(state, &request_id, address, &headers, ws)
}
