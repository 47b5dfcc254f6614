//! `/v1/sessions/…` (an app with the `sign` grant, acting for its users) and `/v1/admin/users…`
//! (admin keys). Session tokens appear once, in the login answer; ID tokens and nonces are
//! never logged or audited.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accounts::apps::{Actor, Auditor};
use crate::accounts::users;
use crate::audit::event::format_time;
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::auth::session_token;
use crate::http::body::json_body;
use crate::http::client_ip::{ClientIp, ip_key};
use crate::http::error::ApiError;
use crate::http::extract::{AppSession, StrictJson};
use crate::http::request_id::ReqId;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdToken {
    id_token: String,
}

pub async fn nonce(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
) -> Result<Response, ApiError> {
    let (nonce, expires) =
        users::oidc::issue_nonce(state.users.store(), &caller.id, state.clock.now())
            .await
            .map_err(|error| ApiError {
                error,
                request_id: request_id.clone(),
            })?;
    Ok(Json(serde_json::json!({
        "nonce": nonce,
        "expires_at": format_time(expires),
        "request_id": request_id,
    }))
    .into_response())
}

pub async fn oidc_login(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<IdToken>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let login = state
        .users
        .login_oidc(
            &state.audit,
            &caller,
            &ip_key(ip),
            &req.id_token,
            &request_id,
            state.clock.now(),
        )
        .await
        .map_err(fail)?;
    tracing::info!(app_id = %caller.id, user = %login.session.user, session_id = %login.session.id, "OIDC login");
    Ok(Json(serde_json::json!({
        "session_token": login.session.token,
        "user_id": login.session.user.to_string(),
        "expires_at": format_time(login.session.expires_at),
        "idle_secs": login.session.idle_secs,
        "request_id": request_id,
    }))
    .into_response())
}

/// `POST /v1/sessions/oidc/link`: an ID token, and once the person has a passkey the assertion
/// of the step-up the first call answered with (`ceremony_id`, `credential`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    id_token: String,
    ceremony_id: Option<String>,
    credential: Option<webauthn_rs::prelude::PublicKeyCredential>,
}

/// The step-up context of linking `id_token` to `user`: the token's SHA-256, so that an approval
/// is for that identity only (its issuer, subject and key source are checked after).
fn link_context(user: uuid::Uuid, id_token: &str) -> String {
    use sha2::Digest;
    format!(
        "oidc-link:{user}:{}",
        hex::encode(sha2::Sha256::digest(id_token.as_bytes()))
    )
}

pub async fn oidc_link(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let Some(session) = session_token(&headers) else {
        return Err(fail(Error::SessionInvalid));
    };
    let req: LinkRequest = json_body(&headers, body).map_err(fail)?;
    // A linked identity logs in as the person from then on, with any app that trusts its key
    // source: once they have a passkey, only it approves the link, bound to this very token.
    let owner = crate::http::auth::user_session(&state, &caller, &headers)
        .await
        .map_err(fail)?
        .facts
        .user;
    if crate::accounts::passkeys::has_live_passkey(&state.store, owner)
        .await
        .map_err(fail)?
    {
        let context = link_context(owner, &req.id_token);
        let now = state.clock.now();
        match (&req.ceremony_id, &req.credential) {
            (Some(ceremony), Some(credential)) => {
                state
                    .passkeys
                    .finish_step_up(ceremony, credential, owner, &context, now)
                    .await
                    .map_err(fail)?;
            }
            _ => {
                let step_up = state
                    .passkeys
                    .start_step_up(owner, &context, now)
                    .await
                    .map_err(fail)?;
                return Ok(crate::http::error::step_up_required(
                    &request_id,
                    ("identity", "link"),
                    step_up,
                ));
            }
        }
    }
    let (user, issuer, subject, linked) = state
        .users
        .link_oidc(
            &state.audit,
            &caller,
            session,
            &ip_key(ip),
            &req.id_token,
            &request_id,
            state.clock.now(),
        )
        .await
        .map_err(fail)?;
    Ok(Json(serde_json::json!({
        "user_id": user.to_string(),
        "issuer": issuer,
        "subject": subject,
        "newly_linked": linked,
        "request_id": request_id,
    }))
    .into_response())
}

pub async fn logout(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let Some(session) = session_token(&headers) else {
        return Err(fail(Error::SessionInvalid));
    };
    let ended = state
        .users
        .logout(
            &state.audit,
            &caller,
            session,
            &request_id,
            state.clock.now(),
        )
        .await
        .map_err(fail)?;
    Ok(Json(serde_json::json!({
        "ended": true,
        "user_id": ended.facts.user.to_string(),
        "request_id": request_id,
    }))
    .into_response())
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
) -> Result<Response, ApiError> {
    let users = users::store::list_users(state.users.store(), state.clock.now())
        .await
        .map_err(|error| ApiError {
            error,
            request_id: request_id.clone(),
        })?;
    let users: Vec<_> = users.iter().map(users::StoredUser::to_json).collect();
    Ok(Json(serde_json::json!({"users": users, "request_id": request_id})).into_response())
}

pub async fn disable(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| fail(Error::InvalidRequest("not a user id (a UUID)".to_owned())))?;
    let actor = Actor {
        who: caller.0.id.clone(),
        request_id: request_id.clone(),
    };
    let user = state
        .users
        .disable(Auditor::Log(&state.audit), &actor, id, state.clock.now())
        .await
        .map_err(fail)?;
    tracing::info!(user = %id, "user disabled over HTTP");
    let mut out = user.to_json();
    if let Some(o) = out.as_object_mut() {
        o.insert("request_id".to_owned(), request_id.into());
    }
    Ok(Json(out).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    code: String,
    redirect_uri: String,
}

/// The app hand-off's last step: the app's backend trades the one-time code the page gave the
/// browser for a session of its own.
pub async fn exchange(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<Exchange>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let issued = state
        .users
        .exchange_code(
            &state.audit,
            &caller,
            &req.code,
            &req.redirect_uri,
            &ip_key(ip),
            &request_id,
            state.clock.now(),
        )
        .await
        .map_err(fail)?;
    tracing::info!(app_id = %caller.id, user = %issued.user, session_id = %issued.id, "hand-off login");
    Ok(Json(serde_json::json!({
        "session_token": issued.token,
        "user_id": issued.user.to_string(),
        "expires_at": format_time(issued.expires_at),
        "idle_secs": issued.idle_secs,
        "request_id": request_id,
    }))
    .into_response())
}

/// The app's scopes as its user sees them: which are offered, which are approved, and whether
/// the user must be asked (again).
pub async fn consent_get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let policies = state.engine.current();
    let view = crate::accounts::consent::scopes_for(
        &state.store,
        &policies,
        &caller,
        Some(session.facts.user),
    )
    .await
    .map_err(fail)?;
    let mut out = serde_json::to_value(&view).map_err(|e| fail(Error::Internal(e.to_string())))?;
    if let Some(o) = out.as_object_mut() {
        o.insert(
            "app".to_owned(),
            serde_json::json!({"id": caller.id, "name": caller.name}),
        );
        o.insert("request_id".to_owned(), request_id.clone().into());
    }
    Ok(Json(out).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    #[serde(default)]
    scopes: Vec<String>,
    /// The consent hash the user was shown (from `GET /v1/consent`).
    consent_hash: String,
}

/// The user approves the app's required scopes and the optional `scopes`, as shown under
/// `consent_hash`.
pub async fn consent_approve(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
    StrictJson(req): StrictJson<Approve>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let policies = state.engine.current();
    let cx = crate::accounts::consent::ConsentCtx {
        store: &state.store,
        auditor: Auditor::Log(&state.audit),
        request_id: &request_id,
        now: state.clock.now(),
    };
    let c = crate::accounts::consent::approve_offered(
        &cx,
        &policies,
        &caller,
        session.facts.user,
        &req.scopes,
        &req.consent_hash,
    )
    .await
    .map_err(fail)?;
    Ok(Json(serde_json::json!({
        "approved": c.scopes,
        "consent_hash": c.hash,
        "granted_at": c.granted_at,
        "request_id": request_id,
    }))
    .into_response())
}

/// The user withdraws their consent to the app: its decisions for them fall back to nothing
/// permitted until they approve again.
pub async fn consent_revoke(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let cx = crate::accounts::consent::ConsentCtx {
        store: &state.store,
        auditor: Auditor::Log(&state.audit),
        request_id: &request_id,
        now: state.clock.now(),
    };
    let revoked = crate::accounts::consent::revoke(&cx, session.facts.user, &caller.id)
        .await
        .map_err(fail)?;
    Ok(Json(serde_json::json!({"revoked": revoked, "request_id": request_id})).into_response())
}

/// A one-time link that opens the gateway's page logged in as the session's user, so that a
/// person who logged in through OIDC can add their first passkey (and then log in with it). The
/// app shows or opens `url` (relative to the gateway) in the person's browser within 60 s; the
/// page asks the person before it redeems it. Only for a person with no passkey yet: once they
/// have one, only that passkey opens their page (`passkey_login_required`), so an app holding
/// their session can never act on the page as them.
pub async fn page_link(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    if crate::accounts::passkeys::has_live_passkey(&state.store, session.facts.user)
        .await
        .map_err(fail)?
    {
        return Err(fail(Error::PasskeyLoginRequired));
    }
    let now = state.clock.now();
    let grant = users::handoff::CodeGrant {
        user: session.facts.user,
        method: session.facts.method.clone(),
        user_verified: session.facts.user_verified,
        credential_id: session.credential_id.clone(),
    };
    let code = users::handoff::issue_code(
        &state.store,
        crate::records::PAGE_APP_ID,
        users::handoff::PAGE_LINK,
        &grant,
        now,
    )
    .await
    .map_err(fail)?;
    Ok(Json(serde_json::json!({
        "url": format!("/ui/?link={code}"),
        "expires_at": format_time(now + users::handoff::CODE_TTL),
        "request_id": request_id,
    }))
    .into_response())
}
