//! `/ui/api/…`: what the gateway's page calls, with the page's cookie session
//! ([`crate::http::page::session`]). Passkey registration and login (the gateway is the relying
//! party), the person's passkeys and consents, the app hand-off, logout. Every state-changing
//! call checks `Origin` and, once logged in, the CSRF token.

use std::sync::Arc;

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use crate::accounts::apps::{self, Auditor, StoredApp};
use crate::accounts::consent::{self, ConsentCtx};
use crate::accounts::users::handoff::{self, CodeGrant};
use crate::accounts::users::{ActiveSession, Issued, Method, SessionKind};
use crate::audit::event::format_time;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::client_ip::{ClientIp, ip_key};
use crate::http::error::ApiError;
use crate::http::extract::{PageChange, PageOrigin, PageSession, StrictJson};
use crate::http::page::session::{self, csrf_token};
use crate::http::request_id::ReqId;
use crate::records::{AppRecord, PAGE_APP_ID};

type Answer = std::result::Result<Response, ApiError>;

fn ok(request_id: &str, body: serde_json::Value) -> Response {
    crate::http::error::json_answer(body, request_id)
}

/// A JSON answer that also sets (or clears) the page's cookie.
fn with_cookie(request_id: &str, body: serde_json::Value, cookie: header::HeaderValue) -> Response {
    let mut res = ok(request_id, body);
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    res
}

/// The app a page login or hand-off is for: a live app with the `sign` grant, or the page.
async fn login_app(state: &AppState, app: Option<&str>) -> Result<(AppRecord, Option<StoredApp>)> {
    match app {
        None => Ok((AppRecord::gateway_page(), None)),
        Some(PAGE_APP_ID) => Ok((AppRecord::gateway_page(), None)),
        Some(id) => {
            let stored = match apps::get_app(&state.store, id).await {
                Ok(a) => a,
                Err(Error::NotFound) => {
                    return Err(Error::InvalidRequest(format!("unknown app {id:?}")));
                }
                Err(e) => return Err(e),
            };
            if stored.revoked || stored.frozen || !stored.grants.iter().any(|g| g == "sign") {
                return Err(Error::InvalidRequest(format!(
                    "app {id:?} cannot take logins (revoked, frozen or without the sign grant)"
                )));
            }
            Ok((stored.record(), Some(stored)))
        }
    }
}

/// Security changes made without a step-up are only for a person who has no passkey yet (the
/// bootstrap of someone who came through a page link); anyone with one makes them through the
/// security step-up (`/ui/api/security/step-up/…`), bound to the exact action.
async fn bootstrap_only(state: &AppState, user: Uuid) -> Result<()> {
    if crate::accounts::passkeys::has_live_passkey(&state.store, user).await? {
        return Err(Error::StepUpRequired);
    }
    Ok(())
}

fn app_json(app: &AppRecord) -> serde_json::Value {
    serde_json::json!({"id": app.id, "name": app.name})
}

fn session_json(token: &str, s: &ActiveSession) -> serde_json::Value {
    serde_json::json!({
        "user": s.facts.user.to_string(),
        "app": s.app_id,
        "method": s.facts.method,
        "user_verified": s.facts.user_verified,
        "age_secs": s.facts.age_secs,
        "csrf": csrf_token(token),
    })
}

fn new_session_body(issued: &Issued, app: &AppRecord) -> serde_json::Value {
    serde_json::json!({
        "user": issued.user.to_string(),
        "app": app.id,
        "csrf": csrf_token(&issued.token),
        "expires_at": format_time(issued.expires_at),
    })
}

fn max_age(issued: &Issued, now: time::OffsetDateTime) -> u64 {
    u64::try_from((issued.expires_at - now).whole_seconds()).unwrap_or(0)
}

pub async fn me(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    headers: HeaderMap,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (token, s) = session::required(&state, &headers).await.map_err(fail)?;
    let mut body = session_json(&token, &s);
    let has_passkey = crate::accounts::passkeys::has_live_passkey(&state.store, s.facts.user)
        .await
        .map_err(fail)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("has_passkey".to_owned(), has_passkey.into());
    }
    Ok(ok(&request_id, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterStart {}

pub async fn register_start(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    _origin: PageOrigin,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    StrictJson(_): StrictJson<RegisterStart>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    // Logged in: the first passkey of a person who has none yet (they came through a page
    // link). A further passkey is added only after a step-up with one they have
    // (`/ui/api/security/step-up/…` with `passkey_add`). Not logged in: a new person.
    let user = match session::current(&state, &headers).await.map_err(fail)? {
        Some((token, s)) => {
            session::check_csrf(&token, &headers).map_err(fail)?;
            if crate::accounts::passkeys::has_live_passkey(&state.store, s.facts.user)
                .await
                .map_err(fail)?
            {
                return Err(fail(Error::StepUpRequired));
            }
            s.facts.user
        }
        None => {
            new_person_may_register(&state, ip.map(|Extension(ip)| ip))
                .await
                .map_err(fail)?;
            Uuid::new_v4()
        }
    };
    let body = start_registration(&state, user, false)
        .await
        .map_err(fail)?;
    Ok(ok(&request_id, body))
}

/// Whether a person who is not logged in may start registering a new account: their client
/// IP's quota of starts (spent here: a start is what leaves a ceremony row behind) and the
/// gateway's daily cap of new accounts (only read: completions count against it). Refusals are
/// counted per client IP in the audit log's flood aggregate.
async fn new_person_may_register(state: &AppState, ip: Option<ClientIp>) -> Result<()> {
    let now = state.clock.now();
    let ip = ip.unwrap_or(ClientIp(None));
    let checked = match state.quotas.start_registration(ip.0) {
        Ok(()) => {
            state
                .quotas
                .check_registrations_today(&state.store, now)
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &checked {
        tracing::info!(client = %ip.key(), code = e.code(), "page registration refused by its quota");
        state.audit.note_flood(&ip.key(), e.code(), now);
    }
    checked
}

/// Starts a passkey registration for `user` (`approved`: right after a step-up for it) and
/// the answer the page's registration call expects.
pub(super) async fn start_registration(
    state: &AppState,
    user: Uuid,
    approved: bool,
) -> Result<serde_json::Value> {
    let short = user.simple().to_string();
    let short = short.get(..8).unwrap_or(&short);
    let (ceremony_id, options) = state
        .passkeys
        .start_registration(
            user,
            &format!("parapet-{short}"),
            &format!("Parapet user {short}"),
            approved,
            state.clock.now(),
        )
        .await?;
    Ok(serde_json::json!({
        "ceremony_id": ceremony_id,
        "user": user.to_string(),
        "options": options,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    ceremony_id: String,
    /// The user `register/start` answered with (checked against the stored ceremony).
    user: Option<String>,
    credential: RegisterPublicKeyCredential,
}

pub async fn register_finish(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    _origin: PageOrigin,
    headers: HeaderMap,
    StrictJson(req): StrictJson<RegisterFinish>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let now = state.clock.now();
    let logged_in = session::current(&state, &headers).await.map_err(fail)?;
    let user = match &logged_in {
        Some((token, s)) => {
            session::check_csrf(token, &headers).map_err(fail)?;
            s.facts.user
        }
        None => {
            let user = req
                .user
                .as_deref()
                .and_then(|u| Uuid::parse_str(u).ok())
                .ok_or_else(|| fail(Error::PasskeyCeremonyUnknown))?;
            // Without a session only a new person registers: never a passkey for someone who
            // exists already.
            if crate::accounts::users::store::user_disabled(&state.store, user)
                .await
                .map_err(fail)?
                .is_some()
            {
                return Err(fail(Error::PasskeyCeremonyUnknown));
            }
            // The daily cap again, before anything is stored: other registrations may have
            // completed since this one started.
            state
                .quotas
                .check_registrations_today(&state.store, now)
                .await
                .map_err(fail)?;
            user
        }
    };
    let info = state
        .passkeys
        .finish_registration(&req.ceremony_id, user, &req.credential, now)
        .await
        .map_err(fail)?;
    if let Some((token, s)) = logged_in {
        if s.credential_id.is_some() {
            let mut body = session_json(&token, &s);
            if let Some(o) = body.as_object_mut() {
                o.insert("credential_id".to_owned(), info.credential_id.into());
            }
            return Ok(ok(&request_id, body));
        }
        // The first passkey of someone who came through a page link: every page session the
        // link made (this one, or one an app redeemed elsewhere) ends, and this browser goes on
        // with a session of the new passkey.
        state
            .users
            .sessions
            .end_unbound_page_sessions(user, now)
            .await
            .map_err(fail)?;
    } else {
        crate::accounts::users::store::ensure_user(&state.store, user, now)
            .await
            .map_err(fail)?;
    }
    registered_session(&state, user, &info.credential_id, &request_id, now)
        .await
        .map_err(fail)
}

/// The page session of a passkey just registered (a new person's, or a link person's first),
/// with its cookie.
async fn registered_session(
    state: &AppState,
    user: Uuid,
    credential_id: &str,
    request_id: &str,
    now: time::OffsetDateTime,
) -> Result<Response> {
    let app = AppRecord::gateway_page();
    let issued = state
        .users
        .begin_session(
            &state.audit,
            SessionKind::Page,
            &app,
            user,
            Method::Passkey,
            true,
            Some(credential_id),
            "registration",
            request_id,
            now,
        )
        .await?;
    let mut body = new_session_body(&issued, &app);
    if let Some(o) = body.as_object_mut() {
        o.insert("credential_id".to_owned(), credential_id.into());
    }
    let cookie = state
        .page
        .set_cookie(&issued.token, max_age(&issued, now))?;
    Ok(with_cookie(request_id, body, cookie))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStart {
    user: String,
    app: Option<String>,
}

pub async fn login_start(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    _origin: PageOrigin,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<LoginStart>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    let (app, _) = login_app(&state, req.app.as_deref()).await.map_err(fail)?;
    // Counted per client IP only: a user id is no secret, and a count per named user would let
    // anyone who knows it lock that person out. Nothing here can be guessed either: the login
    // is only as good as the passkey assertion that finishes it.
    state.users.check_login(&ip, None, now).map_err(fail)?;
    state.users.charge_login_start(&ip, now).map_err(fail)?;
    // An unknown user and a user without live passkeys get the answer a wrong credential gets.
    let Ok(user) = Uuid::parse_str(req.user.trim()) else {
        return Err(fail(state.users.login_failed(&state.audit, &ip, None, now)));
    };
    match state
        .passkeys
        .start_login_for(user, Some(&app.id), now)
        .await
    {
        Ok((ceremony_id, options)) => Ok(ok(
            &request_id,
            serde_json::json!({"ceremony_id": ceremony_id, "options": options}),
        )),
        Err(Error::NotFound | Error::PasskeyRejected | Error::PasskeyRevoked) => {
            Err(fail(state.users.login_failed(&state.audit, &ip, None, now)))
        }
        Err(other) => Err(fail(other)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFinish {
    ceremony_id: String,
    credential: PublicKeyCredential,
    /// Ignored: the app is the one the login was started for. Accepted so that a page may send it.
    #[serde(default, rename = "app")]
    _app: Option<String>,
}

pub async fn login_finish(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    _origin: PageOrigin,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<LoginFinish>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    state.users.check_login(&ip, None, now).map_err(fail)?;
    let outcome = match state
        .passkeys
        .finish_login(&req.ceremony_id, &req.credential, now)
        .await
    {
        Ok(o) => o,
        Err(
            Error::PasskeyRejected
            | Error::PasskeyRevoked
            | Error::PasskeyCloneSuspected
            | Error::NotFound,
        ) => {
            return Err(fail(state.users.login_failed(&state.audit, &ip, None, now)));
        }
        Err(other) => return Err(fail(other)),
    };
    // The app the login was started for, as stored with the ceremony; it must still take logins.
    let (app, _) = login_app(&state, outcome.context.as_deref())
        .await
        .map_err(fail)?;
    let issued = match state
        .users
        .begin_session(
            &state.audit,
            SessionKind::Page,
            &app,
            outcome.user,
            Method::Passkey,
            outcome.user_verified,
            Some(&outcome.credential_id),
            "page",
            &request_id,
            now,
        )
        .await
    {
        Ok(i) => i,
        Err(Error::LoginFailed) => {
            return Err(fail(state.users.login_failed(&state.audit, &ip, None, now)));
        }
        Err(other) => return Err(fail(other)),
    };
    let cookie = state
        .page
        .set_cookie(&issued.token, max_age(&issued, now))
        .map_err(fail)?;
    Ok(with_cookie(
        &request_id,
        new_session_body(&issued, &app),
        cookie,
    ))
}

pub async fn passkeys(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageSession(s): PageSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let list = state.passkeys.list(s.facts.user).await.map_err(fail)?;
    Ok(ok(&request_id, serde_json::json!({ "passkeys": list })))
}

#[derive(Debug, Deserialize)]
pub struct AppQuery {
    app: String,
    /// During a hand-off: the address the app wants the person sent back to, checked before
    /// the consent screen is shown (an unregistered one ends the hand-off with nothing saved).
    redirect_uri: Option<String>,
}

/// Refuses a redirect URI `app` has not registered (exact match).
fn check_redirect(stored: Option<&StoredApp>, redirect_uri: &str) -> Result<()> {
    if stored.is_some_and(|a| a.redirect_uris.iter().any(|u| u == redirect_uri)) {
        Ok(())
    } else {
        Err(Error::InvalidRequest(
            "redirect_uri is not registered for this app".to_owned(),
        ))
    }
}

async fn consent_view(
    state: &AppState,
    user: Uuid,
    app_id: &str,
) -> Result<(AppRecord, serde_json::Value)> {
    let (app, _) = login_app(state, Some(app_id)).await?;
    let policies = state.engine.current();
    let view = consent::scopes_for(&state.store, &policies, &app, Some(user)).await?;
    let approved: Vec<&str> = view
        .scopes
        .iter()
        .filter(|s| s.approved)
        .map(|s| s.id.as_str())
        .collect();
    let body = serde_json::json!({
        "app": app_json(&app),
        "consent_hash": view.consent_hash,
        "needs_consent": view.needs_consent,
        "approved": approved,
        "scopes": view.scopes,
    });
    Ok((app, body))
}

pub async fn consent_get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageSession(s): PageSession,
    Query(q): Query<AppQuery>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    if let Some(uri) = &q.redirect_uri {
        let (_, stored) = login_app(&state, Some(&q.app)).await.map_err(fail)?;
        check_redirect(stored.as_ref(), uri).map_err(fail)?;
    }
    let (_, body) = consent_view(&state, s.facts.user, &q.app)
        .await
        .map_err(fail)?;
    Ok(ok(&request_id, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    app: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// The hash the person was shown; absent: the current one.
    consent_hash: Option<String>,
}

pub async fn consent_approve(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<Approve>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (app, _) = login_app(&state, Some(&req.app)).await.map_err(fail)?;
    let policies = state.engine.current();
    let hash = match req.consent_hash {
        Some(h) => h,
        None => policies.consent_hash(&app).map_err(|e| fail(e.into()))?,
    };
    let cx = ConsentCtx {
        store: &state.store,
        auditor: Auditor::Log(&state.audit),
        request_id: &request_id,
        now: state.clock.now(),
    };
    let c = consent::approve_offered(&cx, &policies, &app, s.facts.user, &req.scopes, &hash)
        .await
        .map_err(fail)?;
    Ok(ok(
        &request_id,
        serde_json::json!({"approved": c.scopes, "consent_hash": c.hash, "granted_at": c.granted_at}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeConsent {
    app: String,
}

pub async fn consent_revoke(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<RevokeConsent>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let cx = ConsentCtx {
        store: &state.store,
        auditor: Auditor::Log(&state.audit),
        request_id: &request_id,
        now: state.clock.now(),
    };
    let revoked = consent::revoke(&cx, s.facts.user, &req.app)
        .await
        .map_err(fail)?;
    Ok(ok(&request_id, serde_json::json!({ "revoked": revoked })))
}

pub async fn consents(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageSession(s): PageSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let policies = state.engine.current();
    let mut out = Vec::new();
    for c in consent::of_user(&state.store, s.facts.user)
        .await
        .map_err(fail)?
    {
        let app = apps::get_app(&state.store, &c.app).await.ok();
        let name = app
            .as_ref()
            .map_or_else(|| c.app.clone(), |a| a.name.clone());
        let needs = app
            .and_then(|a| policies.consent_hash(&a.record()).ok())
            .is_none_or(|h| h != c.hash);
        out.push(serde_json::json!({
            "app": {"id": c.app, "name": name},
            "approved": c.scopes,
            "granted_at": c.granted_at,
            "needs_consent": needs,
        }));
    }
    Ok(ok(&request_id, serde_json::json!({ "consents": out })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    app: String,
    redirect_uri: String,
    #[serde(default)]
    state: String,
}

pub async fn handoff(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<Handoff>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    if s.app_id != req.app {
        return Err(fail(Error::PageRefused(
            "this login was for another app: log in again from the app",
        )));
    }
    let (app, stored) = login_app(&state, Some(&req.app)).await.map_err(fail)?;
    check_redirect(stored.as_ref(), &req.redirect_uri).map_err(fail)?;
    if req.state.len() > 1000 {
        return Err(fail(Error::InvalidRequest("state is too long".to_owned())));
    }
    let policies = state.engine.current();
    let view = consent::scopes_for(&state.store, &policies, &app, Some(s.facts.user))
        .await
        .map_err(fail)?;
    if view.needs_consent {
        return Err(fail(Error::ConsentRequired));
    }
    let grant = CodeGrant {
        user: s.facts.user,
        method: s.facts.method.clone(),
        user_verified: s.facts.user_verified,
        credential_id: s.credential_id.clone(),
    };
    let code = handoff::issue_code(
        &state.store,
        &app.id,
        &req.redirect_uri,
        &grant,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    let mut url = url::Url::parse(&req.redirect_uri)
        .map_err(|_| fail(Error::InvalidRequest("redirect_uri".to_owned())))?;
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &req.state);
    Ok(ok(
        &request_id,
        serde_json::json!({ "redirect": url.as_str() }),
    ))
}

pub async fn logout(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    headers: HeaderMap,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let clear = state.page.clear_cookie();
    let Ok((token, _)) = session::required_for_change(&state, &headers).await else {
        // Nothing (valid) to end: just forget the cookie.
        return Ok(with_cookie(
            &request_id,
            serde_json::json!({"logged_out": true}),
            clear,
        ));
    };
    state
        .users
        .logout_page(&state.audit, &token, &request_id, state.clock.now())
        .await
        .map_err(fail)?;
    Ok(with_cookie(
        &request_id,
        serde_json::json!({"logged_out": true}),
        clear,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    code: String,
}

/// `POST /ui/api/link/peek {code}`: who a page link would log in, without redeeming it, so that
/// the page asks "log in as …?" first (a link opened by someone else's hand is never redeemed
/// just by loading the page).
pub async fn link_peek(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    _origin: PageOrigin,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<Link>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    state.users.check_login(&ip, None, now).map_err(fail)?;
    let user = match handoff::peek_code(
        &state.store,
        PAGE_APP_ID,
        &req.code,
        handoff::PAGE_LINK,
        now,
    )
    .await
    {
        Ok(u) => u,
        Err(Error::LoginFailed) => {
            return Err(fail(state.users.login_failed(&state.audit, &ip, None, now)));
        }
        Err(other) => return Err(fail(other)),
    };
    let short = user.simple().to_string();
    Ok(ok(
        &request_id,
        serde_json::json!({
            "user": user.to_string(),
            "name": format!("parapet-{}", short.get(..8).unwrap_or(&short)),
        }),
    ))
}

/// Opens the page as the user an app's `POST /v1/sessions/page-link` named (one-time code),
/// once the person confirmed it on the page.
pub async fn link(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    _origin: PageOrigin,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<Link>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let now = state.clock.now();
    let issued = state
        .users
        .redeem_page_link(&state.audit, &req.code, &ip_key(ip), &request_id, now)
        .await
        .map_err(fail)?;
    let cookie = state
        .page
        .set_cookie(&issued.token, max_age(&issued, now))
        .map_err(fail)?;
    Ok(with_cookie(
        &request_id,
        new_session_body(&issued, &AppRecord::gateway_page()),
        cookie,
    ))
}

pub async fn devices(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageSession(s): PageSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let list =
        crate::http::v1::devices::devices_with_holdings(&state, s.facts.user, request_id.clone())
            .await
            .map_err(fail)?;
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        list,
    )))
}

/// A one-time pairing code for a new device: `parapet device pair --gateway URL CODE`.
pub async fn pairing_code(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
) -> Answer {
    let fail = ApiError::of(&request_id);
    bootstrap_only(&state, s.facts.user).await.map_err(fail)?;
    let (code, expires) =
        crate::accounts::devices::issue_pairing_code(&state.store, s.facts.user, state.clock.now())
            .await
            .map_err(fail)?;
    Ok(ok(
        &request_id,
        serde_json::json!({"code": code, "expires_at": format_time(expires)}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeDevice {
    device_id: String,
}

pub async fn revoke_device(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<RevokeDevice>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    bootstrap_only(&state, s.facts.user).await.map_err(fail)?;
    let device = crate::accounts::devices::revoke(
        &state.store,
        Auditor::Log(&state.audit),
        s.facts.user,
        &req.device_id,
        &request_id,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    Ok(ok(&request_id, serde_json::json!({ "revoked": device })))
}

/// The person's wallets.
pub async fn wallets(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageSession(s): PageSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let list: Vec<_> = crate::accounts::wallets::of_owner(&state.store, s.facts.user)
        .await
        .map_err(fail)?
        .iter()
        .map(crate::accounts::wallets::StoredWallet::to_json)
        .collect();
    Ok(ok(&request_id, serde_json::json!({ "wallets": list })))
}

/// The person's signing requests that wait for them: approval with a passkey (step-up) or
/// their device's ceremony; with the decoded facts the decision saw.
pub async fn signing_requests(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageSession(s): PageSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let list = crate::service::signing::pending_of(&state, s.facts.user)
        .await
        .map_err(fail)?;
    Ok(ok(
        &request_id,
        serde_json::json!({ "signing_requests": list }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpStart {
    id: String,
}

pub async fn step_up_start(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<StepUpStart>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let started = crate::service::signing::start_step_up(&state, s.facts.user, &req.id)
        .await
        .map_err(fail)?;
    Ok(ok(&request_id, started))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpFinish {
    id: String,
    ceremony_id: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
}

pub async fn step_up_finish(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<StepUpFinish>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let stepped = crate::service::signing::complete_step_up(
        &state,
        &s.facts,
        &req.id,
        &req.ceremony_id,
        &req.credential,
        &request_id,
    )
    .await
    .map_err(fail)?;
    Ok(crate::http::v1::signing::stepped_up(&state, stepped, &request_id).await)
}
