//! The static API token that guards every `/v1` route until API keys exist. Only its SHA-256 is
//! kept in memory, and the comparison is constant-time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::request_id::ReqId;
use crate::error::Error;

/// SHA-256 of a token, the only form in which tokens are held.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|t| bool::from(token_hash(t).ct_eq(&state.token_hash)));
    if ok {
        next.run(req).await
    } else {
        // A flood of bad credentials must not fill the log: one aggregated event per client IP
        // and minute (DESIGN §7).
        let ip = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
        state
            .audit
            .note_flood(&ip, "unauthorized", state.clock.now());
        let request_id = req
            .extensions()
            .get::<ReqId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        ApiError {
            error: Error::Unauthorized,
            request_id,
        }
        .into_response()
    }
}
