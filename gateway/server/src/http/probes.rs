//! The process's own routes: liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

/// The OpenAPI document as checked in (`schemas/openapi.json`), which a test holds equal to what
/// the handlers and types generate (`crate::http::openapi`).
pub const DOCUMENT: &str = include_str!("../../../../schemas/openapi.json");

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "probes_healthz",
    summary = "Liveness",
    security(()),
    responses(
        (status = 200, description = "The process answers."),
    ),
)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready only while the audit store accepts commits: a gateway that cannot log cannot decide.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "probes_readyz",
    summary = "Readiness: policy set loaded (and, later, stores reachable)",
    security(()),
    responses(
        (status = 200, description = "Ready, with the active policy version."),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "probes_metrics",
    summary = "Prometheus metrics",
    security(()),
    responses(
        (status = 200, description = "Text exposition format.", body = String, content_type = "text/plain"),
    ),
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    state.audit.render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "probes_openapi",
    summary = "This document",
    security(()),
    responses(
        (status = 200, description = "OpenAPI 3.1 document."),
    ),
)]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
