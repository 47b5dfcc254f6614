//! The process's own routes: liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::openapi;

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
