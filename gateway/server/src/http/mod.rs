//! The HTTP service: one [`app`] builder, thin handlers over the pipeline stages, one error type.

pub mod auth;
mod body;
pub mod client_ip;
pub mod error;
mod extract;
pub mod openapi;
pub mod openapi_parts;
pub mod page;
mod probes;
pub mod request_id;
pub mod v1;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::Error;
use error::ApiError;
use request_id::ReqId;

pub use crate::state::AppState;

/// Every route the service answers, as `(method, path)`: the OpenAPI document must list exactly
/// these (a test holds them together).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/authorize"),
    ("post", "/v1/admin/policies/reload"),
    ("get", "/v1/audit/events"),
    ("get", "/v1/admin/apps"),
    ("post", "/v1/admin/apps"),
    ("post", "/v1/admin/apps/{id}/{action}"),
    ("post", "/v1/sessions/oidc/nonce"),
    ("post", "/v1/sessions/oidc"),
    ("post", "/v1/sessions/oidc/link"),
    ("post", "/v1/sessions/logout"),
    ("post", "/v1/sessions/exchange"),
    ("post", "/v1/sessions/page-link"),
    ("post", "/v1/devices/pair"),
    ("get", "/v1/device"),
    ("get", "/v1/device/keygen"),
    ("get", "/v1/device/recovery"),
    ("post", "/v1/device/recovery"),
    ("post", "/v1/device/recovery/check"),
    ("get", "/v1/device/operations/{id}"),
    ("post", "/v1/recovery/identify"),
    ("post", "/v1/recovery"),
    ("get", "/v1/recovery/{id}"),
    ("post", "/v1/recovery/{id}/complete"),
    ("post", "/v1/recovery/{id}/cancel"),
    ("post", "/v1/totp"),
    ("post", "/v1/totp/confirm"),
    ("post", "/v1/totp/remove"),
    ("get", "/v1/device/signing-requests/{id}"),
    ("post", "/v1/wallets/{address}/sign"),
    ("get", "/v1/signing-requests/{id}"),
    ("get", "/v1/signing-requests/{id}/ceremony"),
    ("post", "/v1/signing-requests/{id}/step-up"),
    ("post", "/v1/wallets/{address}/refresh"),
    ("post", "/v1/operations/{id}/step-up"),
    ("get", "/v1/device/wallets/{address}/refresh"),
    ("get", "/v1/devices"),
    ("post", "/v1/devices/{id}/revoke"),
    ("get", "/v1/wallets"),
    ("get", "/v1/wallets/{address}"),
    ("post", "/v1/admin/wallets/{address}/update"),
    ("get", "/v1/consent"),
    ("post", "/v1/consent"),
    ("post", "/v1/consent/revoke"),
    ("get", "/v1/admin/users"),
    ("post", "/v1/admin/users/{id}/disable"),
    ("get", "/v1/device/transfers"),
    ("post", "/v1/device/transfers"),
    ("get", "/v1/device/transfers/{id}"),
    ("post", "/v1/device/transfers/{id}/seal"),
    ("post", "/v1/device/transfers/{id}/received"),
    ("post", "/v1/device/resync"),
    ("post", "/v1/device-transfers/{id}/approve"),
    ("get", "/v1/webhook"),
    ("post", "/v1/webhook"),
    ("delete", "/v1/webhook"),
    ("get", "/v1/admin/webhook-deliveries"),
    ("post", "/v1/admin/webhook-deliveries/{id}/redeliver"),
];

/// Sealed device transfers carry shares and kits of every wallet (hex): larger than other bodies.
const SEALED_BODY_LIMIT: usize = 2 * crate::accounts::backup_devices::MAX_SEALED + 64 * 1024;

/// Builds the whole service.
pub fn app(state: Arc<AppState>) -> Router {
    let grant =
        |g: &'static str| middleware::from_fn_with_state((state.clone(), g), auth::require_grant);
    let v1 = Router::new()
        .route(
            "/v1/authorize",
            post(v1::authorize::authorize).route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/policies/reload",
            post(v1::policies::reload_policies).route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/apps",
            get(v1::apps::list)
                .post(v1::apps::create)
                .route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/apps/{id}/{action}",
            post(v1::apps::act).route_layer(grant("admin")),
        )
        .route(
            "/v1/sessions/oidc/nonce",
            post(v1::users::nonce).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/oidc",
            post(v1::users::oidc_login).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/oidc/link",
            post(v1::users::oidc_link).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/logout",
            post(v1::users::logout).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/exchange",
            post(v1::users::exchange).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/page-link",
            post(v1::users::page_link).route_layer(grant("sign")),
        )
        .route("/v1/devices/pair", post(v1::devices::pair))
        .route("/v1/device", get(v1::devices::me))
        .route("/v1/device/keygen", get(v1::ceremony::keygen))
        .route(
            "/v1/device/recovery",
            get(v1::recovery::status).post(v1::recovery::set_up),
        )
        .route("/v1/device/recovery/check", post(v1::recovery::check))
        .route("/v1/device/operations/{id}", get(v1::recovery::operation))
        .route("/v1/recovery/identify", post(v1::recovery::identify))
        .route("/v1/recovery", post(v1::recovery::open))
        .route("/v1/recovery/{id}", get(v1::recovery::get))
        .route("/v1/recovery/{id}/complete", post(v1::recovery::complete))
        .route(
            "/v1/recovery/{id}/cancel",
            post(v1::recovery::cancel).route_layer(grant("sign")),
        )
        .route(
            "/v1/totp",
            post(v1::recovery::totp_start).route_layer(grant("sign")),
        )
        .route(
            "/v1/totp/remove",
            post(v1::recovery::totp_remove).route_layer(grant("sign")),
        )
        .route(
            "/v1/totp/confirm",
            post(v1::recovery::totp_confirm).route_layer(grant("sign")),
        )
        .route(
            "/v1/device/signing-requests/{id}",
            get(v1::signing::device_get),
        )
        .route(
            "/v1/signing-requests/{id}/ceremony",
            get(v1::signing::ceremony),
        )
        .route(
            "/v1/wallets/{address}/sign",
            post(v1::signing::sign).route_layer(grant("sign")),
        )
        .route(
            "/v1/signing-requests/{id}",
            get(v1::signing::get).route_layer(grant("sign")),
        )
        .route(
            "/v1/signing-requests/{id}/step-up",
            post(v1::signing::step_up).route_layer(grant("sign")),
        )
        .route(
            "/v1/wallets/{address}/refresh",
            post(v1::refresh::start).route_layer(grant("sign")),
        )
        .route(
            "/v1/operations/{id}/step-up",
            post(v1::refresh::step_up).route_layer(grant("sign")),
        )
        .route(
            "/v1/device/wallets/{address}/refresh",
            get(v1::refresh::ceremony),
        )
        .route(
            "/v1/devices",
            get(v1::devices::list).route_layer(grant("sign")),
        )
        .route(
            "/v1/devices/{id}/revoke",
            post(v1::devices::revoke).route_layer(grant("sign")),
        )
        .route(
            "/v1/wallets",
            get(v1::wallets::list).route_layer(grant("sign")),
        )
        .route(
            "/v1/wallets/{address}",
            get(v1::wallets::get).route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/wallets/{address}/update",
            post(v1::wallets::update).route_layer(grant("admin")),
        )
        .route(
            "/v1/consent",
            get(v1::users::consent_get)
                .post(v1::users::consent_approve)
                .route_layer(grant("sign")),
        )
        .route(
            "/v1/consent/revoke",
            post(v1::users::consent_revoke).route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/users",
            get(v1::users::list).route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/users/{id}/disable",
            post(v1::users::disable).route_layer(grant("admin")),
        )
        .route(
            "/v1/device/transfers",
            get(v1::transfers::list).post(v1::transfers::ask),
        )
        .route("/v1/device/transfers/{id}", get(v1::transfers::fetch))
        .route(
            "/v1/device/transfers/{id}/seal",
            post(v1::transfers::seal).route_layer(DefaultBodyLimit::max(SEALED_BODY_LIMIT)),
        )
        .route(
            "/v1/device/transfers/{id}/received",
            post(v1::transfers::received),
        )
        .route(
            "/v1/device/resync",
            post(v1::transfers::resync).route_layer(DefaultBodyLimit::max(SEALED_BODY_LIMIT)),
        )
        .route(
            "/v1/device-transfers/{id}/approve",
            post(v1::transfers::approve).route_layer(grant("sign")),
        )
        .route(
            "/v1/webhook",
            get(v1::webhooks::get)
                .post(v1::webhooks::register)
                .delete(v1::webhooks::remove)
                .route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/webhook-deliveries",
            get(v1::webhooks::admin_list).route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/webhook-deliveries/{id}/redeliver",
            post(v1::webhooks::redeliver).route_layer(grant("admin")),
        )
        .route(
            "/v1/audit/events",
            get(v1::audit::events).route_layer(grant("audit:read")),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), time_v1))
        // Outermost, so it runs first: a refused IP costs no key lookup and no body read.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            client_ip::limit_ip,
        ));
    let page_api = Router::new()
        .route("/ui/api/me", get(page::api::me))
        .route("/ui/api/register/start", post(page::api::register_start))
        .route("/ui/api/register/finish", post(page::api::register_finish))
        .route("/ui/api/login/start", post(page::api::login_start))
        .route("/ui/api/login/finish", post(page::api::login_finish))
        .route("/ui/api/passkeys", get(page::api::passkeys))
        .route(
            "/ui/api/consent",
            get(page::api::consent_get).post(page::api::consent_approve),
        )
        .route("/ui/api/consent/revoke", post(page::api::consent_revoke))
        .route("/ui/api/consents", get(page::api::consents))
        .route("/ui/api/handoff", post(page::api::handoff))
        .route("/ui/api/logout", post(page::api::logout))
        .route("/ui/api/link", post(page::api::link))
        .route("/ui/api/link/peek", post(page::api::link_peek))
        .route("/ui/api/devices", get(page::api::devices))
        .route("/ui/api/devices/pair-code", post(page::api::pairing_code))
        .route("/ui/api/devices/revoke", post(page::api::revoke_device))
        .route("/ui/api/wallets", get(page::api::wallets))
        .route("/ui/api/signing-requests", get(page::api::signing_requests))
        .route(
            "/ui/api/signing-requests/step-up/start",
            post(page::api::step_up_start),
        )
        .route(
            "/ui/api/signing-requests/step-up/finish",
            post(page::api::step_up_finish),
        )
        .route("/ui/api/security", get(page::security::overview))
        .route(
            "/ui/api/security/step-up/start",
            post(page::security::start),
        )
        .route(
            "/ui/api/security/step-up/finish",
            post(page::security::finish),
        )
        .route("/ui/api/totp/confirm", post(page::security::totp_confirm))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            client_ip::limit_ip,
        ));
    Router::new()
        .route("/ui", get(page::ui::to_index))
        .route("/ui/", get(page::ui::index))
        .route("/ui/login", get(page::ui::index))
        .route("/ui/app.js", get(page::ui::app_js))
        .route("/ui/style.css", get(page::ui::style))
        .merge(page_api)
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route("/openapi.json", get(probes::openapi))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            deadline_and_count,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// Request bodies up to this size are read whole before any handler or check runs.
const READ_FIRST_LIMIT: usize = 64 * 1024;

/// Reads a small declared body (`Content-Length` up to [`READ_FIRST_LIMIT`] and the body limit)
/// before the request goes on. An answer sent while the body is still arriving (a 401 from
/// authentication, a 429 from a limiter, a handler that ignores its body) makes the server close
/// the connection with the body unread, and the reset that follows can cut the answer off at the
/// client. Read first, every answer is sent on a connection in a clean state. Larger or
/// unannounced bodies are left to their handlers, which read them.
async fn read_small_body(req: Request, limit: usize) -> Result<Request, Error> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let limit = limit.min(READ_FIRST_LIMIT);
    match declared {
        Some(len) if len > 0 && len <= limit => {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
                Error::InvalidRequest("the request body could not be read".to_owned())
            })?;
            Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
        }
        _ => Ok(req),
    }
}

/// Every request gets the configured deadline (503 `timeout` past it), its small body read
/// first ([`read_small_body`]), and is counted.
async fn deadline_and_count(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let request_id = ReqId::of(&req);
    let limit = state.body_limit_bytes;
    let work = async {
        match read_small_body(req, limit).await {
            Ok(req) => next.run(req).await,
            Err(error) => ApiError {
                error,
                request_id: request_id.clone(),
            }
            .into_response(),
        }
    };
    let res = match tokio::time::timeout(state.request_timeout, work).await {
        Ok(res) => res,
        Err(_) => ApiError {
            error: Error::Timeout,
            request_id,
        }
        .into_response(),
    };
    state.metrics.count_status(res.status().as_u16());
    res
}

async fn time_v1(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let res = next.run(req).await;
    state.metrics.request_latency.observe(started.elapsed());
    res
}

async fn not_found(ReqId(request_id): ReqId) -> ApiError {
    ApiError {
        error: Error::NotFound,
        request_id,
    }
}

async fn method_not_allowed(ReqId(request_id): ReqId) -> Response {
    let mut res = ApiError {
        error: Error::InvalidRequest("method not allowed".to_owned()),
        request_id,
    }
    .into_response();
    *res.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    res
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError {
        error: Error::Internal("handler panicked".to_owned()),
        request_id: String::new(),
    }
    .into_response()
}
