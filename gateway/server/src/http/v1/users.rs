//! `/v1/sessions/…` (an app with the `sign` grant, acting for its users) and `/v1/admin/users…`
//! (admin keys). Session tokens appear once, in the login answer; ID tokens and nonces are
//! never logged or audited.

use parapet_api::admin::{UserDisabled, UserList};
use parapet_api::consent::{ConsentApp, ConsentApproved, ConsentRevoked, ConsentScreen};
use parapet_api::sessions::{IdentityLinked, LoggedOut, PageLink};
use parapet_api::sessions::{OidcNonce, SessionIssued};
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdToken {
    /// The ID token (compact JWS) from an issuer this app trusts; its `nonce` claim must be one
    /// this app got from `/v1/sessions/oidc/nonce`.
    id_token: String,
}

#[utoipa::path(
    post,
    path = "/v1/sessions/oidc/nonce",
    operation_id = "users_nonce",
    summary = "A single-use login nonce for an OIDC login",
    description = "Put it in the authorization request to the issuer (`nonce`); the ID token must carry it back. Valid for 10 minutes, once, for this app only; only its hash is stored.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    responses(
        (status = 200, description = "{nonce, expires_at, request_id}", body = OidcNonce),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(OidcNonce {
        nonce,
        expires_at: format_time(expires),
        request_id,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/sessions/oidc",
    operation_id = "users_oidc_login",
    summary = "Log a user in with an ID token from a trusted OIDC issuer",
    description = "Verifies the ID token against the issuer's JWKS (asymmetric algorithms only; `iss` exact, `aud` among the app's allowed audiences, `exp`/`nbf`/`iat` with 60 s leeway, the nonce unused and issued to this app), finds or creates the user of (`iss`, `sub`) and starts a session bound to this app, with the app's absolute and idle limits. Every failure answers 401 `login_failed` with the same body; too many failures from one client IP or for one (`iss`, `sub`) answer 429. The session token is shown once; the login is audited (kind `session`, never the token).",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    request_body(content = inline(IdToken)),
    responses(
        (status = 200, description = "The new session", body = SessionIssued),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 413, response = crate::http::openapi_parts::Error),
        (status = 415, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(login.session.answer(request_id)).into_response())
}

/// `POST /v1/sessions/oidc/link`: an ID token, and once the person has a passkey the assertion
/// of the step-up the first call answered with (`ceremony_id`, `credential`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    id_token: String,
    ceremony_id: Option<String>,
    #[schema(value_type = Option<Object>)]
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

#[utoipa::path(
    post,
    path = "/v1/sessions/oidc/link",
    operation_id = "users_oidc_link",
    summary = "Link another OIDC identity to the session's user",
    description = "Needs the user's live session and an ID token verified as for a login (nonce included). An identity already linked to another user is refused with 409 `identity_in_use`. Audited (kind `session`, action `session.link`). Once the person has a passkey, a link needs their step-up bound to this very ID token: the first call answers 403 `step_up_required` with passkey options, and the same body with `ceremony_id` and `credential` (the assertion) links it; an assertion made for another token is `step_up_mismatch`.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    request_body(content = inline(LinkRequest)),
    responses(
        (status = 200, description = "{user_id, issuer, subject, newly_linked, request_id}", body = IdentityLinked),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 413, response = crate::http::openapi_parts::Error),
        (status = 415, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(IdentityLinked {
        user_id: user.to_string(),
        issuer,
        subject,
        newly_linked: linked,
        request_id,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/sessions/logout",
    operation_id = "users_logout",
    summary = "End a user's session",
    description = "The session stops working at once in this gateway and within a second in every other. Audited (kind `session`, action `session.logout`).",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    responses(
        (status = 200, description = "{ended: true, user_id, request_id}", body = LoggedOut),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(LoggedOut {
        ended: true,
        user_id: ended.facts.user.to_string(),
        request_id,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/users",
    operation_id = "users_list",
    summary = "List users",
    description = "Every user with their OIDC identities and how many live sessions they hold.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("admin"))),
    responses(
        (status = 200, description = "{users, request_id}", body = UserList),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(UserList {
        users: users.iter().map(users::StoredUser::view).collect(),
        request_id,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/disable",
    operation_id = "users_disable",
    summary = "Disable a user and end their sessions",
    description = "Recorded in the audit log (kind `admin`, action `user.disable`) before it is made. The user's sessions stop working at once in this gateway and within a second in every other; the user can no longer log in.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("admin"))),
    params(
        ("id" = String, Path, format = "uuid"),
    ),
    responses(
        (status = 200, description = "The user", body = UserDisabled),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(UserDisabled {
        user: user.view(),
        request_id,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    #[schema(pattern = "^pc_[0-9a-f]{64}$")]
    code: String,
    #[schema(format = "uri")]
    redirect_uri: String,
}

/// The app hand-off's last step: the app's backend trades the one-time code the page gave the
/// browser for a session of its own.
#[utoipa::path(
    post,
    path = "/v1/sessions/exchange",
    operation_id = "users_exchange",
    summary = "Exchange a hand-off login code for a session",
    description = "The last step of the app hand-off: the user logged in on the gateway's page (`/ui/login?app=…&redirect_uri=…&state=…`) and was sent back to `redirect_uri?code=…&state=…`. The app's backend posts the code with its key and the exact redirect URI. A code is single-use (the first attempt burns it, whatever its outcome), valid for 60 s, and good only for the app and redirect URI it was issued for; every failure is `401 login_failed`. Audited (kind `session`, action `session.login`, `via: handoff`).",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    request_body(content = inline(Exchange)),
    responses(
        (status = 200, description = "{session_token, user_id, expires_at, idle_secs, request_id}", body = SessionIssued),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(issued.answer(request_id)).into_response())
}

/// The app's scopes as its user sees them: which are offered, which are approved, and whether
/// the user must be asked (again).
#[utoipa::path(
    get,
    path = "/v1/consent",
    operation_id = "users_consent_get",
    summary = "The app's consent scopes for the session's user",
    description = "Every scope the policy set offers this app (id, plain-language name and description, required flag, whether it is in effect for this user), whether the user must be asked (no consent, or one given under another consent hash), and the current consent hash.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    responses(
        (status = 200, description = "{app: {id, name}, scopes: [{id, name, description, required, approved}], needs_consent, consent_hash, request_id}", body = ConsentScreen),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(ConsentScreen {
        app: ConsentApp {
            id: caller.id.clone(),
            name: caller.name.clone(),
        },
        view,
        request_id,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    #[serde(default)]
    scopes: Vec<String>,
    /// The consent hash the user was shown (from `GET /v1/consent`).
    consent_hash: String,
}

/// The user approves the app's required scopes and the optional `scopes`, as shown under
/// `consent_hash`.
#[utoipa::path(
    post,
    path = "/v1/consent",
    operation_id = "users_consent_approve",
    summary = "Approve the app's scopes for the session's user",
    description = "Approves the required scopes and the optional `scopes` listed, as shown under `consent_hash` (a different current hash is refused: show the scopes again). Replaces any earlier approval. Audited first (kind `consent`, action `approve`).",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    request_body(content = inline(Approve)),
    responses(
        (status = 200, description = "{approved, consent_hash, granted_at, request_id}", body = ConsentApproved),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(ConsentApproved {
        approved: c.scopes,
        consent_hash: c.hash,
        granted_at: c.granted_at,
        request_id,
    })
    .into_response())
}

/// The user withdraws their consent to the app: its decisions for them fall back to nothing
/// permitted until they approve again.
#[utoipa::path(
    post,
    path = "/v1/consent/revoke",
    operation_id = "users_consent_revoke",
    summary = "Withdraw the session's user's consent to the app",
    description = "Decisions for this user through this app fall back to the required `basic` scope until they approve again. Audited first (kind `consent`, action `revoke`).",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    responses(
        (status = 200, description = "{revoked, request_id}", body = ConsentRevoked),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(ConsentRevoked {
        revoked,
        request_id,
    })
    .into_response())
}

/// A one-time link that opens the gateway's page logged in as the session's user, so that a
/// person who logged in through OIDC can add their first passkey (and then log in with it). The
/// app shows or opens `url` (relative to the gateway) in the person's browser within 60 s; the
/// page asks the person before it redeems it. Only for a person with no passkey yet: once they
/// have one, only that passkey opens their page (`passkey_login_required`), so an app holding
/// their session can never act on the page as them.
#[utoipa::path(
    post,
    path = "/v1/sessions/page-link",
    operation_id = "users_page_link",
    summary = "A one-time link that opens the gateway's page as the session's user",
    description = r#"For people who logged in through OIDC and have no passkey yet: open `url` (relative to the gateway) in their browser within 60 s; the page asks them to confirm ("log in as ...?") and then opens as them, so they can add their first passkey. Single-use. A person who has a passkey gets 403 `passkey_login_required`: only their own passkey opens their page, so an app holding their session can never act on the page as them."#,
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    responses(
        (status = 200, description = r#"{url: "/ui/?link=pc_…", expires_at, request_id}"#, body = PageLink),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(PageLink {
        url: format!("/ui/?link={code}"),
        expires_at: format_time(now + users::handoff::CODE_TTL),
        request_id,
    })
    .into_response())
}
