//! Thin handlers: parse, call a pipeline stage, shape the answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::openapi;
use super::request_id::ReqId;
use crate::audit::record as audit_record;
use crate::error::Error;
use crate::pipeline::{self, Outcome};
use crate::request::AuthorizeRequest;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready only while the audit store accepts commits: a gateway that cannot log cannot decide.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let policies = state.engine.current();
    let audit = state.audit.status();
    let (status, word) = if audit.up {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    };
    (
        status,
        Json(serde_json::json!({"status": word, "policy_version": policies.version(), "audit": audit})),
    )
        .into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    state.audit.render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::DOCUMENT,
    )
        .into_response()
}

#[derive(Serialize)]
struct AuthorizeResponse<'a> {
    #[serde(flatten)]
    outcome: &'a Outcome,
    request_id: &'a str,
}

pub async fn authorize(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let policies = state.engine.current();
    let now = state.clock.now();
    // The user's session, when the app acts for one: valid for this app, or refused before
    // any other work (a flood of made-up tokens is counted, not logged one by one); then the
    // per-user limit.
    let session = match super::auth::session_token(&headers) {
        None => None,
        Some(token) => match state.users.sessions.resolve(token, &caller.id, now).await {
            Ok(s) => Some(s),
            Err(error) => {
                if matches!(error, Error::SessionInvalid | Error::SessionExpired) {
                    state.audit.note_flood(&caller.id, error.code(), now);
                } else {
                    tracing::warn!(%error, "session lookup failed");
                }
                let error = match error {
                    Error::Database(_) => Error::StoreUnavailable,
                    other => other,
                };
                return Err(fail(error));
            }
        },
    };
    if let Some(s) = &session
        && let Err(refusal) = state.limits.check_user(s.facts.user)
    {
        state.metrics.count_rate_limited(refusal.limiter);
        state
            .audit
            .note_flood(&s.facts.user.to_string(), "rate_limited", now);
        return Err(fail(refusal.into_error()));
    }
    let user = session.as_ref().map(|s| s.facts.user.to_string());
    // Every answer below, refusals included, is committed to the audit log before it is sent;
    // if that fails the caller gets 503 audit_unavailable and no decision.
    let refuse = async |req: Option<&AuthorizeRequest>, error: Error| {
        state
            .metrics
            .decisions_refused
            .fetch_add(1, Ordering::Relaxed);
        let refused = audit_record::Refused {
            request_id: &request_id,
            app: &caller.id,
            user: user.clone(),
            req,
            error: &error,
        };
        match audit_record::commit_refusal(&state.audit, &policies, refused, now).await {
            Ok(()) => ApiError {
                error,
                request_id: request_id.clone(),
            },
            Err(audit_error) => ApiError {
                error: audit_error,
                request_id: request_id.clone(),
            },
        }
    };
    let req: AuthorizeRequest = match super::body::json_body(&headers, body) {
        Ok(r) => r,
        Err(e) => return Err(refuse(None, e).await),
    };
    let wallet = match pipeline::wallet_from_request(&req) {
        Ok(w) => w,
        Err(e) => return Err(refuse(Some(&req), e.into()).await),
    };
    // The per-wallet limit, before any decoding or policy work; refusals are counted in
    // aggregate like every other flood refusal, not audited one by one.
    if let Err(refusal) = state.limits.check_wallet(wallet.address.into_array()) {
        state.metrics.count_rate_limited(refusal.limiter);
        let key = format!("{:#x}", wallet.address);
        state.audit.note_flood(&key, "rate_limited", now);
        return Err(fail(refusal.into_error()));
    }
    // A wallet the gateway has a record of is described by the record (owner, admin labels and
    // groups, frozen); request labels count only for addresses it has no record of (dry runs).
    let wallet = match crate::wallets::get(&state.store, &req.wallet.address).await {
        Ok(Some(stored)) => match stored.record() {
            Ok(w) => w,
            Err(e) => return Err(refuse(Some(&req), e).await),
        },
        Ok(None) => wallet,
        Err(error) => {
            tracing::warn!(%error, "reading a wallet record failed");
            return Err(fail(Error::StoreUnavailable));
        }
    };
    // The user's approved scopes for this app (only `basic` without a user or a current
    // consent): the permits of other scopes do not count for them.
    let scopes = match &session {
        None => pipeline::basic_scopes(),
        Some(s) => match crate::consent::approved_scopes(
            &state.store,
            &policies,
            &caller,
            Some(s.facts.user),
        )
        .await
        {
            Ok(scopes) => scopes,
            Err(error) => {
                tracing::warn!(%error, "reading a consent failed");
                return Err(fail(Error::StoreUnavailable));
            }
        },
    };
    let (facts, decode_time) =
        match pipeline::decode_bounded(&state.decode_pool, &policies, wallet.address, &req).await {
            Ok(ok) => ok,
            Err(e) => return Err(refuse(Some(&req), e).await),
        };
    let outcome = pipeline::decide(
        &policies,
        state.ledger.as_ref(),
        &pipeline::Decided {
            facts: &facts,
            decode_time,
        },
        &caller,
        &wallet,
        session.as_ref().map(|s| &s.facts),
        &scopes,
        false,
        now,
    );
    state
        .audit
        .ensure_policy_version(policies.version(), policies.files(), now)
        .await
        .map_err(fail)?;
    let record = audit_record::DecisionRecord {
        request_id: &request_id,
        app: &caller.id,
        user: user.clone(),
        req: &req,
        outcome: &outcome,
    };
    audit_record::commit_decision(&state.audit, record, None, now)
        .await
        .map_err(fail)?;
    state
        .metrics
        .stage(crate::metrics::Stage::Decode, outcome.timings.decode);
    state
        .metrics
        .stage(crate::metrics::Stage::Policy, outcome.timings.policy);
    state.metrics.count_decision(outcome.decision);
    tracing::info!(
        request_id = %request_id,
        decision = outcome.decision.as_str(),
        action = outcome.action.as_str(),
        policy_version = %outcome.policy_version,
        "decision"
    );
    Ok(Json(AuthorizeResponse {
        outcome: &outcome,
        request_id: &request_id,
    })
    .into_response())
}

pub async fn reload_policies(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
) -> Result<Response, ApiError> {
    let version = state
        .reload_policies("admin route")
        .await
        .map_err(|error| ApiError {
            error,
            request_id: request_id.clone(),
        })?;
    Ok(
        Json(serde_json::json!({"policy_version": version, "request_id": request_id}))
            .into_response(),
    )
}
