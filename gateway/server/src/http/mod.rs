//! The HTTP service: one [`app`] builder, thin handlers over the pipeline stages, one error type.

mod apps_routes;
mod audit_routes;
pub mod auth;
mod body;
pub mod ceremony_routes;
pub mod client_ip;
mod device_routes;
pub mod error;
mod extract;
pub mod openapi;
mod page_api;
mod page_security;
pub mod page_session;
mod recovery_routes;
mod refresh_routes;
pub mod request_id;
mod routes;
pub(crate) mod signing_routes;
mod step_up;
mod transfer_routes;
mod ui;
mod users_routes;
mod wallet_routes;
mod webhook_routes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::error::Error;
use crate::identity::Identity;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pipeline::SharedLedger;
use crate::policy::Engine;
use crate::records::AppRecord;
use error::ApiError;
use request_id::ReqId;

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    pub engine: Engine,
    pub ledger: SharedLedger,
    pub clock: SharedClock,
    /// Every decision is committed here before it is answered.
    pub audit: Arc<AuditLog>,
    /// The database every table module reads and writes (the audit log's own statements go
    /// through `audit`).
    pub store: crate::store::Store,
    pub metrics: Metrics,
    /// SHA-256 of the static token: `serve`'s development default, not for production; `None`
    /// when it is turned off.
    pub token_hash: Option<[u8; 32]>,
    /// The app the static token acts as (the development default app).
    pub dev_app: AppRecord,
    /// API keys → apps, for every other caller.
    pub identity: Identity,
    /// Users, their sessions and OIDC logins.
    pub users: Arc<crate::users::Users>,
    /// IP, app and wallet rate limits.
    pub limits: Arc<Limits>,
    /// Page registrations per client IP and per day, key generations per device and person.
    pub quotas: Arc<crate::quotas::Quotas>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// Seals and opens gateway shares (the HSM in production, the development keystore by
    /// default); ceremonies open a share only for their own duration.
    pub custody: Arc<dyn parapet_custody::Custody>,
    /// The personal data key, opened at start (OIDC claims, webhook and TOTP secrets).
    pub personal_data: Arc<crate::sealing::PersonalDataKey>,
    /// The WebAuthn relying party (passkeys belong to the gateway).
    pub passkeys: crate::passkeys::Passkeys,
    /// The page's origins and cookie settings.
    pub page: page_session::PageSettings,
    /// Per-wallet locks for velocity reservations.
    pub wallet_locks: crate::cosign::velocity::WalletLocks,
    /// How long an authorized signing request waits for its ceremony.
    pub signing_request_ttl: Duration,
    /// See [`crate::config::Config::recovery_delay`].
    pub recovery_delay: Duration,
    /// Where heavy payloads are decoded ([`crate::pipeline::decode_bounded`]).
    pub decode_pool: crate::offload::Offload,
}

impl AppState {
    /// The development app's id while the static token is on (its requests may still be acted
    /// on); `None` once it is off.
    pub fn dev_app_acting(&self) -> Option<&str> {
        self.token_hash
            .is_some()
            .then_some(self.dev_app.id.as_str())
    }

    /// Validates the policy files again and swaps them in (an invalid set leaves the active one
    /// in place), stores the new version with its files for replay, counts and logs the outcome.
    /// Both `SIGHUP` and the admin route come here.
    pub async fn reload_policies(&self, trigger: &str) -> crate::error::Result<String> {
        match self.engine.reload() {
            Ok(version) => {
                let set = self.engine.current();
                if let Err(error) = self
                    .audit
                    .ensure_policy_version(set.version(), set.files(), self.clock.now())
                    .await
                {
                    tracing::warn!(%error, "storing the reloaded policy version failed; retried before the next decision");
                }
                self.metrics
                    .policy_reloads_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(%version, trigger, "policy set reloaded");
                Ok(version)
            }
            Err(error) => {
                self.metrics
                    .policy_reloads_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%error, trigger, "policy reload refused; the previous set stays active");
                Err(error.into())
            }
        }
    }
}

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
const SEALED_BODY_LIMIT: usize = 2 * crate::backup_devices::MAX_SEALED + 64 * 1024;

/// Builds the whole service.
pub fn app(state: Arc<AppState>) -> Router {
    let grant =
        |g: &'static str| middleware::from_fn_with_state((state.clone(), g), auth::require_grant);
    let v1 = Router::new()
        .route(
            "/v1/authorize",
            post(routes::authorize).route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/policies/reload",
            post(routes::reload_policies).route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/apps",
            get(apps_routes::list)
                .post(apps_routes::create)
                .route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/apps/{id}/{action}",
            post(apps_routes::act).route_layer(grant("admin")),
        )
        .route(
            "/v1/sessions/oidc/nonce",
            post(users_routes::nonce).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/oidc",
            post(users_routes::oidc_login).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/oidc/link",
            post(users_routes::oidc_link).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/logout",
            post(users_routes::logout).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/exchange",
            post(users_routes::exchange).route_layer(grant("sign")),
        )
        .route(
            "/v1/sessions/page-link",
            post(users_routes::page_link).route_layer(grant("sign")),
        )
        .route("/v1/devices/pair", post(device_routes::pair))
        .route("/v1/device", get(device_routes::me))
        .route("/v1/device/keygen", get(ceremony_routes::keygen))
        .route(
            "/v1/device/recovery",
            get(recovery_routes::status).post(recovery_routes::set_up),
        )
        .route("/v1/device/recovery/check", post(recovery_routes::check))
        .route(
            "/v1/device/operations/{id}",
            get(recovery_routes::operation),
        )
        .route("/v1/recovery/identify", post(recovery_routes::identify))
        .route("/v1/recovery", post(recovery_routes::open))
        .route("/v1/recovery/{id}", get(recovery_routes::get))
        .route(
            "/v1/recovery/{id}/complete",
            post(recovery_routes::complete),
        )
        .route(
            "/v1/recovery/{id}/cancel",
            post(recovery_routes::cancel).route_layer(grant("sign")),
        )
        .route(
            "/v1/totp",
            post(recovery_routes::totp_start).route_layer(grant("sign")),
        )
        .route(
            "/v1/totp/remove",
            post(recovery_routes::totp_remove).route_layer(grant("sign")),
        )
        .route(
            "/v1/totp/confirm",
            post(recovery_routes::totp_confirm).route_layer(grant("sign")),
        )
        .route(
            "/v1/device/signing-requests/{id}",
            get(signing_routes::device_get),
        )
        .route(
            "/v1/signing-requests/{id}/ceremony",
            get(signing_routes::ceremony),
        )
        .route(
            "/v1/wallets/{address}/sign",
            post(signing_routes::sign).route_layer(grant("sign")),
        )
        .route(
            "/v1/signing-requests/{id}",
            get(signing_routes::get).route_layer(grant("sign")),
        )
        .route(
            "/v1/signing-requests/{id}/step-up",
            post(signing_routes::step_up).route_layer(grant("sign")),
        )
        .route(
            "/v1/wallets/{address}/refresh",
            post(refresh_routes::start).route_layer(grant("sign")),
        )
        .route(
            "/v1/operations/{id}/step-up",
            post(refresh_routes::step_up).route_layer(grant("sign")),
        )
        .route(
            "/v1/device/wallets/{address}/refresh",
            get(refresh_routes::ceremony),
        )
        .route(
            "/v1/devices",
            get(device_routes::list).route_layer(grant("sign")),
        )
        .route(
            "/v1/devices/{id}/revoke",
            post(device_routes::revoke).route_layer(grant("sign")),
        )
        .route(
            "/v1/wallets",
            get(wallet_routes::list).route_layer(grant("sign")),
        )
        .route(
            "/v1/wallets/{address}",
            get(wallet_routes::get).route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/wallets/{address}/update",
            post(wallet_routes::update).route_layer(grant("admin")),
        )
        .route(
            "/v1/consent",
            get(users_routes::consent_get)
                .post(users_routes::consent_approve)
                .route_layer(grant("sign")),
        )
        .route(
            "/v1/consent/revoke",
            post(users_routes::consent_revoke).route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/users",
            get(users_routes::list).route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/users/{id}/disable",
            post(users_routes::disable).route_layer(grant("admin")),
        )
        .route(
            "/v1/device/transfers",
            get(transfer_routes::list).post(transfer_routes::ask),
        )
        .route("/v1/device/transfers/{id}", get(transfer_routes::fetch))
        .route(
            "/v1/device/transfers/{id}/seal",
            post(transfer_routes::seal).route_layer(DefaultBodyLimit::max(SEALED_BODY_LIMIT)),
        )
        .route(
            "/v1/device/transfers/{id}/received",
            post(transfer_routes::received),
        )
        .route(
            "/v1/device/resync",
            post(transfer_routes::resync).route_layer(DefaultBodyLimit::max(SEALED_BODY_LIMIT)),
        )
        .route(
            "/v1/device-transfers/{id}/approve",
            post(transfer_routes::approve).route_layer(grant("sign")),
        )
        .route(
            "/v1/webhook",
            get(webhook_routes::get)
                .post(webhook_routes::register)
                .delete(webhook_routes::remove)
                .route_layer(grant("sign")),
        )
        .route(
            "/v1/admin/webhook-deliveries",
            get(webhook_routes::admin_list).route_layer(grant("admin")),
        )
        .route(
            "/v1/admin/webhook-deliveries/{id}/redeliver",
            post(webhook_routes::redeliver).route_layer(grant("admin")),
        )
        .route(
            "/v1/audit/events",
            get(audit_routes::events).route_layer(grant("audit:read")),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), time_v1))
        // Outermost, so it runs first: a refused IP costs no key lookup and no body read.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            client_ip::limit_ip,
        ));
    let page_api = Router::new()
        .route("/ui/api/me", get(page_api::me))
        .route("/ui/api/register/start", post(page_api::register_start))
        .route("/ui/api/register/finish", post(page_api::register_finish))
        .route("/ui/api/login/start", post(page_api::login_start))
        .route("/ui/api/login/finish", post(page_api::login_finish))
        .route("/ui/api/passkeys", get(page_api::passkeys))
        .route(
            "/ui/api/consent",
            get(page_api::consent_get).post(page_api::consent_approve),
        )
        .route("/ui/api/consent/revoke", post(page_api::consent_revoke))
        .route("/ui/api/consents", get(page_api::consents))
        .route("/ui/api/handoff", post(page_api::handoff))
        .route("/ui/api/logout", post(page_api::logout))
        .route("/ui/api/link", post(page_api::link))
        .route("/ui/api/link/peek", post(page_api::link_peek))
        .route("/ui/api/devices", get(page_api::devices))
        .route("/ui/api/devices/pair-code", post(page_api::pairing_code))
        .route("/ui/api/devices/revoke", post(page_api::revoke_device))
        .route("/ui/api/wallets", get(page_api::wallets))
        .route("/ui/api/signing-requests", get(page_api::signing_requests))
        .route(
            "/ui/api/signing-requests/step-up/start",
            post(page_api::step_up_start),
        )
        .route(
            "/ui/api/signing-requests/step-up/finish",
            post(page_api::step_up_finish),
        )
        .route("/ui/api/security", get(page_security::overview))
        .route("/ui/api/security/step-up/start", post(page_security::start))
        .route(
            "/ui/api/security/step-up/finish",
            post(page_security::finish),
        )
        .route("/ui/api/totp/confirm", post(page_security::totp_confirm))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            client_ip::limit_ip,
        ));
    Router::new()
        .route("/ui", get(ui::to_index))
        .route("/ui/", get(ui::index))
        .route("/ui/login", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/style.css", get(ui::style))
        .merge(page_api)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
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
