//! Signing requests over HTTP (docs/architecture.md §6): `POST /v1/wallets/{address}/sign` (app
//! key, the owner's session, an `Idempotency-Key`), `GET /v1/signing-requests/{id}` (the creating
//! app or the owner), `GET /v1/device/signing-requests/{id}` (the owner's device) and the ceremony
//! WebSocket. The decision, with its reservation, is committed to the audit log before the
//! answer; the ceremony signs only what was committed.

use parapet_api::signing::{
    DeviceSigningRequest, Signature, SigningRefusal, SigningRequestAnswer, SigningRequestView,
};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::accounts::wallets;
use crate::cosign::hex0x;
use crate::cosign::idempotency::{self, Claim};
use crate::cosign::signing::{self, SigningRequest, SigningState};
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::body::json_body;
use crate::http::error::ApiError;
use crate::http::extract::{AppSession, AuthedDevice, StrictJson};
use crate::http::request_id::ReqId;
use crate::request::AuthorizeRequest;
use crate::service::pipeline;
use crate::service::signing::{self as signing_service, SteppedUpTo, store_down};

type Answer = Result<Response, ApiError>;

/// The answer for a request: 201 with the request when authorized; 403 `policy_denied` with the
/// decision when denied; 403 `step_up_required` with fresh WebAuthn options bound to this
/// request when the owner's passkey can lift the deny (or `passkey_required` when they have
/// none). A retry with the same Idempotency-Key gets the same answer.
async fn answer(state: &AppState, r: &SigningRequest, request_id: &str) -> Response {
    let now = state.clock.now();
    let view = r.view(now);
    let refusal = |error: Error, step_up: Option<Value>, view: SigningRequestView| {
        refused(&error, request_id, &r.id, Some(view.decision), step_up)
    };
    match r.state_at(now) {
        SigningState::Denied => refusal(Error::PolicyDenied, None, view),
        SigningState::PendingStepUp => {
            match state
                .passkeys
                .start_step_up(r.owner, &signing::step_up_context(r), now)
                .await
            {
                Ok(step_up) => refusal(Error::StepUpRequired, Some(step_up), view),
                Err(Error::PasskeyRequired) => refusal(Error::PasskeyRequired, None, view),
                Err(error) => ApiError {
                    error: store_down(error),
                    request_id: request_id.to_owned(),
                }
                .into_response(),
            }
        }
        _ => (
            StatusCode::CREATED,
            Json(SigningRequestAnswer {
                view,
                signature: None,
                signed_transaction: None,
                tx_hash: None,
                request_id: request_id.to_owned(),
            }),
        )
            .into_response(),
    }
}

/// A refusal of a signing request: the error's code and message, the request's id and the
/// decision that refused it, and the passkey options when a step-up can lift it.
fn refused(
    error: &Error,
    request_id: &str,
    signing_request: &str,
    decision: Option<Value>,
    step_up: Option<Value>,
) -> Response {
    let out = SigningRefusal {
        code: error.code().to_owned(),
        message: error.to_string(),
        request_id: request_id.to_owned(),
        signing_request: signing_request.to_owned(),
        decision,
        step_up,
    };
    (error.status(), Json(out)).into_response()
}

#[utoipa::path(
    post,
    path = "/v1/wallets/{address}/sign",
    operation_id = "signing_sign",
    summary = "Create a signing request",
    description = "The body is `/v1/authorize`'s without `wallet` (the path names it): `chain_id` and exactly one payload. Needs the owner's session (someone else's wallet is `not_found`) and an `Idempotency-Key` (1-255 printable ASCII), scoped to (app, wallet) and kept 24 h: the same key with the same body (SHA-256 of its RFC 8785 form) answers with the same request, with another body 409 `idempotency_conflict`. The decision is committed to the audit log together with the request, which is its velocity reservation, under a per-wallet lock. Allowed: 201 with the request (`state` `authorized`, `expires_at`). Denied: 403 `policy_denied` with `decision` and `signing_request`.",
    params(
        ("address" = String, Path),
        crate::http::openapi_parts::OwnerSession,
        ("Idempotency-Key" = String, Header, max_length = 255, min_length = 1),
    ),
    request_body(content = Object),
    responses(
        (status = 201, description = "{id, app, wallet, owner, chain_id, action, digest, state, decision, created_at, expires_at, request_id}", body = SigningRequestAnswer),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 413, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn sign(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
    Path(address): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    if let Err(refusal) = state.limits.check_user(user) {
        state.metrics.count_rate_limited(refusal.limiter);
        return Err(fail(refusal.into_error()));
    }
    let key = idempotency::check_key(headers.get("idempotency-key").and_then(|v| v.to_str().ok()))
        .map_err(fail)?
        .to_owned();
    let raw: Value = json_body(&headers, body).map_err(fail)?;
    if raw.get("wallet").is_some() {
        return Err(fail(Error::InvalidRequest(
            "the path names the wallet: remove the wallet field".to_owned(),
        )));
    }
    let canonical = serde_json_canonicalizer::to_vec(&raw)
        .map_err(|e| fail(Error::InvalidRequest(e.to_string())))?;
    let body_hash = hex::encode(Sha256::digest(&canonical));
    let wallet = wallets::owned_by(&state.store, &address, user)
        .await
        .map_err(|e| fail(store_down(e)))?;
    if wallet.refresh_required {
        return Err(fail(Error::RefreshRequired));
    }
    let parsed = pipeline::parse_address(&wallet.address).map_err(|e| fail(e.into()))?;
    if let Err(refusal) = state.limits.check_wallet(parsed.into_array()) {
        state.metrics.count_rate_limited(refusal.limiter);
        return Err(fail(refusal.into_error()));
    }
    let mut with_wallet = raw;
    if let Some(o) = with_wallet.as_object_mut() {
        o.insert(
            "wallet".to_owned(),
            serde_json::json!({ "address": wallet.address }),
        );
    }
    let req: AuthorizeRequest = serde_json::from_value(with_wallet.clone())
        .map_err(|e| fail(Error::InvalidRequest(e.to_string())))?;
    let now = state.clock.now();
    let scope = (caller.id.as_str(), wallet.address.as_str());
    let claim = idempotency::claim(&state.store, scope, &key, &body_hash, &request_id, now)
        .await
        .map_err(|e| fail(store_down(e)))?;
    if let Claim::Existing {
        body_hash: earlier,
        request_id: earlier_id,
    } = claim
    {
        if earlier != body_hash {
            return Err(fail(Error::IdempotencyConflict));
        }
        return match signing::get(&state.store, &earlier_id)
            .await
            .map_err(|e| fail(store_down(e)))?
        {
            Some(r) => Ok(answer(&state, &r, &request_id).await),
            None => Err(fail(Error::IdempotencyInProgress)),
        };
    }
    let decided = signing_service::decide_and_reserve(
        &state,
        &caller,
        &session.facts,
        &wallet,
        &req,
        &with_wallet,
        &request_id,
    )
    .await;
    match decided {
        Ok(r) => Ok(answer(&state, &r, &request_id).await),
        Err(error) => {
            idempotency::release(&state.store, scope, &key, &request_id).await;
            Err(fail(error))
        }
    }
}

/// The request with its signature and, for transactions, the signed transaction and its hash.
fn full_view(state: &AppState, r: &SigningRequest, request_id: String) -> SigningRequestAnswer {
    let mut answer = SigningRequestAnswer {
        view: r.view(state.clock.now()),
        signature: None,
        signed_transaction: None,
        tx_hash: None,
        request_id,
    };
    let Some(rsv) = r.signature.as_deref().and_then(|s| hex::decode(s).ok()) else {
        return answer;
    };
    let (Some(rb), Some(sb), Some(&v)) = (rsv.get(..32), rsv.get(32..64), rsv.get(64)) else {
        return answer;
    };
    let (mut rr, mut ss) = ([0u8; 32], [0u8; 32]);
    rr.copy_from_slice(rb);
    ss.copy_from_slice(sb);
    let y_parity = v == 28;
    answer.signature = Some(Signature {
        r: hex0x(&rr),
        s: hex0x(&ss),
        y_parity,
        rsv: hex0x(&rsv),
    });
    let signed = serde_json::from_str::<AuthorizeRequest>(&r.body)
        .ok()
        .and_then(|req| {
            let wallet = pipeline::parse_address(&r.wallet).ok()?;
            let payload = req.payload().ok()?;
            crate::decode::signed_transaction(payload, req.chain_id, wallet, rr, ss, y_parity)
                .map_err(|error| tracing::warn!(%error, "rebuilding a signed transaction"))
                .ok()
                .flatten()
        });
    if let Some((raw, hash)) = signed {
        answer.signed_transaction = Some(hex0x(&raw));
        answer.tx_hash = Some(format!("{hash:#x}"));
    }
    answer
}

/// `GET /v1/signing-requests/{id}`: the creating app, or the owner through any app.
#[utoipa::path(
    get,
    path = "/v1/signing-requests/{id}",
    operation_id = "signing_get",
    summary = "A signing request",
    description = "For the app that created it, or for the wallet's owner (their session with any app); anyone else gets `not_found`. `state` is `authorized`, `signing`, `signed`, `failed`, `expired` or `denied`. Once signed: `signature: {r, s, y_parity, rsv}` and, for transactions, `signed_transaction` (EIP-2718, 0x hex) and `tx_hash`.",
    params(
        ("id" = String, Path),
        ("Parapet-Session" = Option<String>, Header, nullable = false, description = "The owner's session, when another app reads it"),
    ),
    responses(
        (status = 200, description = "The signing request", body = SigningRequestAnswer),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let r = signing::get(&state.store, &id)
        .await
        .map_err(|e| fail(store_down(e)))?
        .ok_or_else(|| fail(Error::NotFound))?;
    let allowed = if r.app_id == caller.id {
        true
    } else {
        match crate::http::auth::user_session(&state, &caller, &headers).await {
            Ok(s) => s.facts.user == r.owner,
            Err(_) => false,
        }
    };
    if !allowed {
        return Err(fail(Error::NotFound));
    }
    Ok(Json(full_view(&state, &r, request_id)).into_response())
}

/// `GET /v1/device/signing-requests/{id}`: the owner's device. Besides the request's view it
/// carries `body`, the request as it was decided (`chain_id`, `wallet` and the one payload), so
/// that the device decodes it itself, shows the person what it is and recomputes the digest
/// before it joins the ceremony: the device signs what it checked, not what it is told.
#[utoipa::path(
    get,
    path = "/v1/device/signing-requests/{id}",
    operation_id = "signing_device_get",
    summary = "A signing request, for the owner's device",
    description = "As `GET /v1/signing-requests/{id}`, with `Authorization: Device <token>` of a device of the wallet's owner, plus `body`: the request as it was decided (`chain_id`, `wallet` and the one payload). The device decodes it itself, shows it to the person and recomputes the digest; it refuses to join the ceremony when the gateway's digest differs.",
    security(()),
    params(
        ("id" = String, Path),
        crate::http::openapi_parts::DeviceToken,
    ),
    responses(
        (status = 200, description = "The signing request (see GET /v1/signing-requests/{id})", body = DeviceSigningRequest),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn device_get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    Path(id): Path<String>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let r = signing::get(&state.store, &id)
        .await
        .map_err(|e| fail(store_down(e)))?
        .filter(|r| r.owner == device.user_id)
        .ok_or_else(|| fail(Error::NotFound))?;
    let body: Value = serde_json::from_str(&r.body)
        .map_err(|e| fail(Error::Internal(format!("a stored request body: {e}"))))?;
    Ok(Json(DeviceSigningRequest {
        answer: full_view(&state, &r, request_id),
        body,
    })
    .into_response())
}

/// `GET /v1/signing-requests/{id}/ceremony`: the owner's device joins the signing ceremony.
#[utoipa::path(
    get,
    path = "/v1/signing-requests/{id}/ceremony",
    operation_id = "signing_ceremony",
    summary = "Join a signing request's ceremony (WebSocket)",
    description = r#"Only the owner's paired device holding the wallet's other share may join (`not_found`, `device_not_allowed`); the request must be authorized and unexpired (`not_signable`). The gateway announces the execution id and the digest, signs that digest only, checks the signature (k256, low s, recovery to the wallet's address), audits `signature.released`, then sends its final message and `done` with the signature. A failure before that releases the velocity reservation and is audited as `signature.failed`. A WebSocket: send an upgrade request. Text frames carry JSON control messages (`auth`, `start`, `stored`, `done`, `error`), binary frames the MPC protocol's messages. The device authenticates with `Authorization: Device <token>` on the upgrade request, or with `{"type":"auth","authorization":"Device <token>"}` as its first message; never a query string."#,
    security(()),
    params(
        ("id" = String, Path),
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
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Answer {
    crate::http::v1::ceremony::signing(state, &request_id, id, &headers, ws)
}

/// A step-up assertion: the ceremony it answers and the authenticator's response.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUp {
    pub(super) ceremony_id: String,
    /// The authenticator's assertion (WebAuthn `PublicKeyCredential`, JSON).
    #[schema(value_type = Object)]
    pub(super) credential: webauthn_rs::prelude::PublicKeyCredential,
}

/// `POST /v1/signing-requests/{id}/step-up`: the owner's passkey assertion, made for this
/// request's step-up ceremony (bound to its id and digest, single-use, expiring), lets the
/// request be decided again with `context.step_up = true`. An allow authorizes it (the
/// reservation commits with the decision's event); anything else answers as a deny.
#[utoipa::path(
    post,
    path = "/v1/signing-requests/{id}/step-up",
    operation_id = "signing_step_up",
    summary = "Approve a request with the owner's passkey (step-up)",
    description = "When `POST /v1/wallets/{address}/sign` answered 403 `step_up_required`, its body carries `signing_request` and `step_up: {ceremony_id, options}` (WebAuthn request options; a retry with the same Idempotency-Key gives fresh ones; a user without a passkey gets `passkey_required`). Post the owner's assertion here as `{ceremony_id, credential}` with the owner's session. The ceremony is bound server-side to this request's id and digest, single-use and expiring: an assertion made for another request is 403 `step_up_mismatch`. The request is decided again with `context.step_up = true`; an allow authorizes it (201, the reservation committed with the decision's event), a deny answers 403 `policy_denied`.",
    params(
        ("id" = String, Path),
        crate::http::openapi_parts::OwnerSession,
    ),
    request_body(content = inline(StepUp)),
    responses(
        (status = 201, description = "The authorized request", body = SigningRequestAnswer),
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
    AppSession(session): AppSession,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<StepUp>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let stepped = signing_service::complete_step_up(
        &state,
        &session.facts,
        &id,
        &req.ceremony_id,
        &req.credential,
        &request_id,
    )
    .await
    .map_err(fail)?;
    Ok(stepped_up(&state, stepped, &request_id).await)
}

/// The answer to a completed step-up: the authorized request as a new one is answered, or
/// `policy_denied` with the decision.
pub(crate) async fn stepped_up(
    state: &AppState,
    stepped: SteppedUpTo,
    request_id: &str,
) -> Response {
    match stepped {
        SteppedUpTo::Authorized(r) => answer(state, &r, request_id).await,
        SteppedUpTo::Denied {
            signing_request,
            decision,
        } => refused(
            &Error::PolicyDenied,
            request_id,
            &signing_request,
            decision,
            None,
        ),
    }
}
