//! `/v1/webhook`: an app registers, reads and removes its security webhook and sees its own
//! deliveries; `/v1/admin/webhook-deliveries`: operators see every app's delivery state and send
//! a failed one again. The signing secret appears once, in the answer that registered it.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accounts::apps::{Actor, Auditor};
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::StrictJson;
use crate::http::request_id::ReqId;
use crate::webhooks::{self, DeliveryFilter};

fn actor(caller: &Caller, request_id: &str) -> Actor {
    Actor {
        who: caller.0.id.clone(),
        request_id: request_id.to_owned(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    url: String,
}

/// `POST /v1/webhook {url}`: registers the calling app's webhook (replacing one it had) and
/// returns the new signing secret.
pub async fn register(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
    StrictJson(req): StrictJson<Register>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let (hook, secret) = webhooks::register(
        &state.store,
        Auditor::Log(&state.audit),
        &state.personal_data,
        &actor(&caller, &request_id),
        &caller.0.id,
        &req.url,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    tracing::info!(app_id = %hook.app_id, "webhook registered");
    Ok(Json(serde_json::json!({
        "webhook": hook,
        "signing_secret": secret.as_str(),
        "request_id": request_id,
    }))
    .into_response())
}

/// `GET /v1/webhook`: the calling app's webhook and its latest deliveries.
pub async fn get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let store = &state.store;
    let hook = webhooks::get(store, &caller.0.id).await.map_err(fail)?;
    let deliveries = webhooks::deliveries(
        store,
        &DeliveryFilter {
            app_id: Some(caller.0.id.clone()),
            status: None,
            limit: 50,
        },
    )
    .await
    .map_err(fail)?;
    Ok(Json(serde_json::json!({
        "webhook": hook,
        "deliveries": deliveries,
        "request_id": request_id,
    }))
    .into_response())
}

/// `DELETE /v1/webhook`.
pub async fn remove(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    webhooks::remove(
        &state.store,
        Auditor::Log(&state.audit),
        &actor(&caller, &request_id),
        &caller.0.id,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    Ok(Json(serde_json::json!({"removed": true, "request_id": request_id})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    app_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/admin/webhook-deliveries?app_id=&status=&limit=`: delivery state for operators.
pub async fn admin_list(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let Query(q) = query.map_err(|e| fail(Error::InvalidRequest(e.body_text())))?;
    let deliveries = webhooks::deliveries(
        &state.store,
        &DeliveryFilter {
            app_id: q.app_id,
            status: q.status,
            limit: q.limit.unwrap_or(100),
        },
    )
    .await
    .map_err(fail)?;
    Ok(
        Json(serde_json::json!({"deliveries": deliveries, "request_id": request_id}))
            .into_response(),
    )
}

/// `POST /v1/admin/webhook-deliveries/{id}/redeliver`: sends a delivery again from scratch.
pub async fn redeliver(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    if !id.starts_with("whd_") || id.len() != 36 {
        return Err(fail(Error::InvalidRequest(
            "not a delivery id (whd_ + 32 hex digits)".to_owned(),
        )));
    }
    webhooks::redeliver(
        &state.store,
        Auditor::Log(&state.audit),
        &actor(&caller, &request_id),
        &id,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    Ok(
        Json(serde_json::json!({"delivery": id, "status": "pending", "request_id": request_id}))
            .into_response(),
    )
}
