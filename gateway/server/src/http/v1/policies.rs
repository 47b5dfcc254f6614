//! `POST /v1/admin/policies/reload`: an admin swaps in the policy files on disk.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::request_id::ReqId;

#[utoipa::path(
    post,
    path = "/v1/admin/policies/reload",
    operation_id = "policies_reload_policies",
    summary = "Validate the policy files again and swap them in atomically",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("admin"))),
    responses(
        (status = 200, description = "The new active version.", body = parapet_api::admin::PolicyReloaded),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 422, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
    ),
)]
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
    Ok(Json(parapet_api::admin::PolicyReloaded {
        policy_version: version,
        request_id,
    })
    .into_response())
}
