//! `/v1/webhook`: an app registers, reads and removes its security webhook and sees its own
//! deliveries; `/v1/admin/webhook-deliveries`: operators see every app's delivery state and send
//! a failed one again. The signing secret appears once, in the answer that registered it.

use parapet_api::admin::{
    DeliveryStatus, Redelivery, WebhookRegistered, WebhookRemoved, WebhookState,
};
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    url: String,
}

/// `POST /v1/webhook {url}`: registers the calling app's webhook (replacing one it had) and
/// returns the new signing secret.
#[utoipa::path(
    post,
    path = "/v1/webhook",
    operation_id = "webhooks_register",
    summary = "Register the calling app's security webhook",
    description = r#"`{url}`: HTTPS (plain HTTP only to a loopback address). Replaces an existing registration and rotates the signing secret, which is returned only here. The gateway then POSTs the user's security events (recovery.opened|cancelled|completed, recovery.secret_set, totp.enrolled, device.added|removed|resynced, kit.exported, wallet.refreshed) for every user who has had a session with, or consented to, this app: body `{id, type, created_at, user_id, wallet, audit_seq, data}`, headers `Parapet-Signature: t=<unix>,v1=<hex HMAC-SHA-256(secret, t + "." + body)>` and `Parapet-Delivery: whd_…` (the same on every retry). Any answer but 2xx is retried with exponential backoff (at least once). Audited as `webhook.register`."#,
    request_body(content = inline(Register)),
    responses(
        (status = 200, description = "{webhook, signing_secret, request_id}", body = WebhookRegistered),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(WebhookRegistered {
        webhook: hook,
        signing_secret: secret.as_str().to_owned(),
        request_id,
    })
    .into_response())
}

/// `GET /v1/webhook`: the calling app's webhook and its latest deliveries.
#[utoipa::path(
    get,
    path = "/v1/webhook",
    operation_id = "webhooks_get",
    summary = "The calling app's security webhook and its latest deliveries",
    description = "Any app key with `sign`. The URL (never the secret) and the 50 newest deliveries with their state.",
    responses(
        (status = 200, description = "{webhook: {app_id, url, created_at} | null, deliveries: [WebhookDelivery], request_id}", body = WebhookState),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(WebhookState {
        webhook: hook,
        deliveries,
        request_id,
    })
    .into_response())
}

/// `DELETE /v1/webhook`.
#[utoipa::path(
    delete,
    path = "/v1/webhook",
    operation_id = "webhooks_remove",
    summary = "Remove the calling app's security webhook",
    description = "Pending deliveries then fail with `webhook removed`. Audited as `webhook.remove`.",
    responses(
        (status = 200, description = "{removed: true, request_id}", body = WebhookRemoved),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(WebhookRemoved {
        removed: true,
        request_id,
    })
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    app_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/admin/webhook-deliveries?app_id=&status=&limit=`: delivery state for operators.
#[utoipa::path(
    get,
    path = "/v1/admin/webhook-deliveries",
    operation_id = "webhooks_admin_list",
    summary = "Webhook delivery state, every app",
    description = "`admin` grant. Newest first; filters `app_id`, `status` (pending|delivered|failed), `limit` (≤ 500, default 100).",
    params(
        ("app_id" = Option<String>, Query),
        ("status" = Option<String>, Query),
        ("limit" = Option<i64>, Query),
    ),
    responses(
        (status = 200, description = "{deliveries: [WebhookDelivery], request_id}", body = parapet_api::admin::DeliveryList),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(parapet_api::admin::DeliveryList {
        deliveries,
        request_id,
    })
    .into_response())
}

/// `POST /v1/admin/webhook-deliveries/{id}/redeliver`: sends a delivery again from scratch.
#[utoipa::path(
    post,
    path = "/v1/admin/webhook-deliveries/{id}/redeliver",
    operation_id = "webhooks_redeliver",
    summary = "Send a delivery again",
    description = "`admin` grant. Puts the delivery back to pending with a fresh attempt budget (after the receiver is mended). Audited as `webhook.redeliver`.",
    params(
        ("id" = String, Path),
    ),
    responses(
        (status = 200, description = "{delivery, status: pending, request_id}", body = Redelivery),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(Redelivery {
        delivery: id,
        status: DeliveryStatus::Pending,
        request_id,
    })
    .into_response())
}
