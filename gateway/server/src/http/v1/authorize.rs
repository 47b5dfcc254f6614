//! `POST /v1/authorize`: an app asks for a decision (a dry run: nothing is signed). Every answer,
//! refusals included, is in the audit log before it is sent.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::request_id::ReqId;
use crate::request::AuthorizeRequest;
use crate::service::decision::{self, Asking};
use crate::service::pipeline::{self, Outcome};

/// The decision, explained, and the id of the request it answers.
#[derive(Serialize, utoipa::ToSchema)]
struct AuthorizeResponse<'a> {
    #[serde(flatten)]
    outcome: &'a Outcome,
    request_id: &'a str,
}

#[utoipa::path(
    post,
    path = "/v1/authorize",
    operation_id = "authorize_authorize",
    summary = "Dry run: decode and authorize without signing",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        ("Parapet-Session" = Option<String>, Header, nullable = false, description = "A user's session token (`ps_…`), issued to this app by a login. Optional on `/v1/authorize`: with it, the decision is for that user (`context.session`) and the user's rate limit applies; a session that is unknown, ended, of a disabled user or issued for another app is refused with 401 `session_invalid`, one past its absolute or idle limit with 401 `session_expired`.", pattern = "^ps_[0-9a-f]{64}$"),
    ),
    request_body(content = crate::request::AuthorizeRequest),
    responses(
        (status = 200, description = "The decision, explained.", body = AuthorizeResponse),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 413, response = crate::http::openapi_parts::Error),
        (status = 415, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
    ),
)]
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let policies = state.engine.current();
    let now = state.clock.now();
    // The user's session, when the app acts for one: valid for this app, or refused before
    // any other work (a flood of made-up tokens is counted, not logged one by one); then the
    // per-user limit.
    let session = match crate::http::auth::session_token(&headers) {
        None => None,
        Some(token) => match state.users.sessions.resolve(token, &caller.id, now).await {
            Ok(s) => Some(s),
            Err(error) => {
                if matches!(error, Error::SessionInvalid | Error::SessionExpired) {
                    state.audit.note_flood(&caller.id, error.code(), now);
                } else {
                    tracing::warn!(%error, "session lookup failed");
                }
                let error = match error {
                    Error::Database(_) => Error::StoreUnavailable,
                    other => other,
                };
                return Err(fail(error));
            }
        },
    };
    if let Some(s) = &session
        && let Err(refusal) = state.limits.check_user(s.facts.user)
    {
        state.metrics.count_rate_limited(refusal.limiter);
        state
            .audit
            .note_flood(&s.facts.user.to_string(), "rate_limited", now);
        return Err(fail(refusal.into_error()));
    }
    let asking = Asking {
        request_id: &request_id,
        app: &caller,
        user: session.as_ref().map(|s| s.facts.user),
    };
    // Every answer below, refusals included, is recorded before it is sent.
    let req: AuthorizeRequest = match crate::http::body::json_body(&headers, body) {
        Ok(r) => r,
        Err(e) => {
            return Err(fail(
                decision::refuse(&state, &policies, asking, None, e).await,
            ));
        }
    };
    let refuse = async |error: Error| {
        fail(decision::refuse(&state, &policies, asking, Some(&req), error).await)
    };
    let wallet = match pipeline::wallet_from_request(&req) {
        Ok(w) => w,
        Err(e) => return Err(refuse(e.into()).await),
    };
    // The per-wallet limit, before any decoding or policy work; refusals are counted in
    // aggregate like every other flood refusal, not audited one by one.
    if let Err(refusal) = state.limits.check_wallet(wallet.address.into_array()) {
        state.metrics.count_rate_limited(refusal.limiter);
        let key = format!("{:#x}", wallet.address);
        state.audit.note_flood(&key, "rate_limited", now);
        return Err(fail(refusal.into_error()));
    }
    // A wallet the gateway has a record of is described by the record (owner, admin labels and
    // groups, frozen); request labels count only for addresses it has no record of (dry runs).
    // The records are in memory (`accounts::wallet_directory`), so this reads no database.
    let stored = match state.wallet_directory.get(&wallet.address) {
        Ok(stored) => stored,
        Err(error) => {
            tracing::warn!(%error, "the wallet directory is out of date");
            return Err(fail(Error::StoreUnavailable));
        }
    };
    let wallet = stored.as_deref().unwrap_or(&wallet);
    let scopes = decision::scopes(&state, &policies, asking)
        .await
        .map_err(&fail)?;
    let decoded = decision::decode(&state, &policies, asking, wallet.address, &req)
        .await
        .map_err(&fail)?;
    let outcome = pipeline::decide(
        &policies,
        state.ledger.as_ref(),
        &decoded.stage(),
        &caller,
        wallet,
        session.as_ref().map(|s| &s.facts),
        &scopes,
        false,
        now,
    );
    decision::record(&state, &policies, asking, &req, &outcome, None, now)
        .await
        .map_err(fail)?;
    Ok(Json(AuthorizeResponse {
        outcome: &outcome,
        request_id: &request_id,
    })
    .into_response())
}
