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
pub async fn ceremony(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Path(address): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Answer {
    crate::http::v1::ceremony::refreshing(state, &request_id, address, &headers, ws)
}
