//! Thin handlers: parse, call a pipeline stage, shape the answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::openapi;
use super::request_id::ReqId;
use crate::error::Error;
use crate::pipeline::{self, Outcome};
use crate::request::AuthorizeRequest;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let policies = state.engine.current();
    Json(serde_json::json!({"status": "ready", "policy_version": policies.version()}))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
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

/// Parses a JSON body strictly: JSON content type, size limit, unknown fields refused.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Error> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(Error::UnsupportedMediaType);
    }
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge
        } else {
            Error::InvalidRequest("could not read the request body".to_owned())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest(e.to_string()))
}

pub async fn authorize(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fail = |error: Error| ApiError {
        error,
        request_id: request_id.clone(),
    };
    let req: AuthorizeRequest = json_body(&headers, body).map_err(fail)?;
    let wallet = pipeline::wallet_from_request(&req).map_err(fail)?;
    let policies = state.engine.current();
    let now = state.clock.now();
    let result = pipeline::evaluate(
        &policies,
        state.ledger.as_ref(),
        &state.app,
        &wallet,
        &req,
        &pipeline::basic_scopes(),
        now,
    );
    let (_facts, outcome) = match result {
        Ok(ok) => ok,
        Err(e) => {
            state
                .metrics
                .decisions_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(fail(e));
        }
    };
    state
        .metrics
        .stage(crate::metrics::Stage::Decode, outcome.timings.decode);
    state
        .metrics
        .stage(crate::metrics::Stage::Policy, outcome.timings.policy);
    let counter = if outcome.decision == "allow" {
        &state.metrics.decisions_allow
    } else {
        &state.metrics.decisions_deny
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        request_id = %request_id,
        decision = outcome.decision,
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
    match state.engine.reload() {
        Ok(version) => {
            state
                .metrics
                .policy_reloads_ok
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%version, "policy set reloaded");
            Ok(
                Json(serde_json::json!({"policy_version": version, "request_id": request_id}))
                    .into_response(),
            )
        }
        Err(error) => {
            state
                .metrics
                .policy_reloads_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "policy reload refused; the previous set stays active");
            Err(ApiError { error, request_id })
        }
    }
}
