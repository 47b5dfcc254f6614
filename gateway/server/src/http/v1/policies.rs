//! `POST /v1/admin/policies/reload`: an admin swaps in the policy files on disk.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::request_id::ReqId;

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
