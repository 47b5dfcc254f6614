//! Authentication and grants for every `/v1` route: `Authorization: Bearer <api key>` resolves
//! to the calling app ([`crate::accounts::apps`]), which must be unfrozen and hold the route's grant.
//! The static token of `serve`'s development default still works and acts as the development
//! default app; only its SHA-256 is kept, compared in constant time.
//!
//! Then the app's own rate limit ([`crate::limits`]), before the handler reads the body.
//!
//! Refusals here are what a flood produces, so they are audited in aggregate
//! (docs/architecture.md §7): per client IP for missing or unknown keys, per app for frozen apps,
//! missing grants and rate limits.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::request_id::ReqId;
use crate::error::Error;
use crate::records::AppRecord;

/// SHA-256 of a token, the only form in which tokens are held.
pub fn token_hash(token: &str) -> [u8; 32] {
    crate::accounts::apps::key_hash(token)
}

/// The authenticated app, placed in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub struct Caller(pub AppRecord);

impl Caller {
    /// Whether the app holds `grant`. `admin` includes `audit:read` (an operator reads every
    /// app's events) but not `sign`: signing for users stays an app's explicit grant.
    pub fn has(&self, grant: &str) -> bool {
        self.0
            .grants
            .iter()
            .any(|g| g == grant || (g == "admin" && grant == "audit:read"))
    }
}

/// The state a route's auth layer runs with: the shared state and the grant the route needs.
pub type GrantState = (Arc<AppState>, &'static str);

pub async fn require_grant(
    State((state, grant)): State<GrantState>,
    mut req: Request,
    next: Next,
) -> Response {
    let request_id = ReqId::of(&req);
    let refuse = |error: Error| {
        ApiError {
            error,
            request_id: request_id.clone(),
        }
        .into_response()
    };
    let ip = super::client_ip::ClientIp::of(&req).key();
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let now = state.clock.now();
    let Some(key) = presented else {
        state.audit.note_flood(&ip, "unauthorized", now);
        return refuse(Error::Unauthorized);
    };
    let is_static = state
        .token_hash
        .is_some_and(|h| bool::from(token_hash(key).ct_eq(&h)));
    let app = if is_static {
        state.dev_app.clone()
    } else {
        match state.identity.resolve(key, now).await {
            Ok(Some(app)) => app,
            Ok(None) => {
                state.audit.note_flood(&ip, "unauthorized", now);
                return refuse(Error::Unauthorized);
            }
            Err(error) => {
                tracing::warn!(%error, "API key lookup failed");
                return refuse(Error::StoreUnavailable);
            }
        }
    };
    if app.frozen {
        state.audit.note_flood(&app.id, "app_frozen", now);
        return refuse(Error::AppFrozen);
    }
    let caller = Caller(app);
    if !caller.has(grant) {
        state.audit.note_flood(&caller.0.id, "forbidden", now);
        return refuse(Error::Forbidden(grant));
    }
    if let Err(refusal) = state.limits.check_app(&caller.0.id, caller.0.limits.rate) {
        state.metrics.count_rate_limited(refusal.limiter);
        state.audit.note_flood(&caller.0.id, "rate_limited", now);
        return refuse(refusal.into_error());
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The `Parapet-Session` header, when present.
pub(super) fn session_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(crate::accounts::users::SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The device the request's `Authorization: Device <token>` names.
pub(super) async fn device_of(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<crate::accounts::devices::Device, Error> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::accounts::devices::token_from_header)
        .ok_or(Error::Unauthorized)?;
    device_by_token(state, token).await
}

/// The live device with this token (however it arrived: a header, or the first message on a
/// ceremony WebSocket); a store failure is `store_unavailable`.
pub(super) async fn device_by_token(
    state: &AppState,
    token: &str,
) -> Result<crate::accounts::devices::Device, Error> {
    match crate::accounts::devices::authenticate(&state.store, token, state.clock.now()).await {
        Err(Error::Database(e)) => {
            tracing::warn!(error = %e, "device lookup failed");
            Err(Error::StoreUnavailable)
        }
        other => other,
    }
}

/// The caller's user's live session for this app, required.
pub(super) async fn user_session(
    state: &AppState,
    caller: &crate::records::AppRecord,
    headers: &axum::http::HeaderMap,
) -> Result<crate::accounts::users::ActiveSession, Error> {
    let token = session_token(headers).ok_or(Error::SessionInvalid)?;
    state
        .users
        .sessions
        .resolve(token, &caller.id, state.clock.now())
        .await
}
