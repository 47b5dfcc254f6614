//! `/v1/admin/apps…`: what `parapet apps` does, for `admin` keys over HTTP. A new key appears
//! once, in the answer that created it, and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accounts::apps::{self, Actor, AppUpdate, Auditor, Change, NewApp, StoredApp};
use crate::accounts::users::oidc;
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::body::json_body;
use crate::http::error::ApiError;
use crate::http::extract::StrictJson;
use crate::http::request_id::ReqId;
use crate::limits::Rate;
use crate::records::AppLimits;

fn actor(caller: &Caller, request_id: &str) -> Actor {
    Actor {
        who: caller.0.id.clone(),
        request_id: request_id.to_owned(),
    }
}

fn rate(text: Option<&str>) -> Result<Option<Rate>, Error> {
    Ok(text.map(str::parse).transpose()?)
}

/// Refuses anything that is not an app id before touching the store.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = id.strip_prefix("app_").is_some_and(|rest| {
        rest.len() == 26
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(
            "not an app id (app_ + 26 base32 characters)".to_owned(),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/v1/admin/apps",
    operation_id = "apps_list",
    summary = "Every app (never keys)",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("admin"))),
    responses(
        (status = 200, description = "Apps", body = parapet_api::admin::AppList),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
) -> Result<Response, ApiError> {
    let apps = apps::list_apps(&state.store)
        .await
        .map_err(|error| ApiError {
            error,
            request_id: request_id.clone(),
        })?;
    Ok(Json(parapet_api::admin::AppList {
        apps: apps.iter().map(StoredApp::view).collect(),
        request_id,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    name: String,
    /// `sign`, `audit:read`, `admin`.
    grants: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// `COUNT/UNIT` (s, min, h, d), optionally `burst N`; absent: the gateway's app_rate.
    #[schema(example = "50/s")]
    rate: Option<String>,
    /// A session's absolute life (60 s ≤ idle ≤ ttl ≤ 90 days).
    #[schema(minimum = 60, default = 43200)]
    session_ttl_secs: Option<u64>,
    /// A session ends after this long unused.
    #[schema(minimum = 60, default = 1800)]
    session_idle_secs: Option<u64>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/apps",
    operation_id = "apps_create",
    summary = "Create an app; its API key is in this answer only (only its SHA-256 is stored)",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("admin"))),
    request_body(content = inline(CreateApp)),
    responses(
        (status = 200, description = "The new app's id and key", body = parapet_api::admin::AppCreated),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 415, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
    StrictJson(req): StrictJson<CreateApp>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let defaults = AppLimits::default();
    let new = NewApp {
        name: req.name,
        grants: req.grants,
        groups: req.groups,
        limits: AppLimits {
            rate: rate(req.rate.as_deref()).map_err(fail)?,
            session_ttl: req
                .session_ttl_secs
                .map_or(defaults.session_ttl, Duration::from_secs),
            session_idle: req
                .session_idle_secs
                .map_or(defaults.session_idle, Duration::from_secs),
        },
        redirect_uris: req.redirect_uris.unwrap_or_default(),
    };
    let (app, key) = apps::create_app(
        &state.store,
        Auditor::Log(&state.audit),
        &actor(&caller, &request_id),
        &new,
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    tracing::info!(app_id = %app.id, "app created over HTTP");
    Ok(Json(parapet_api::admin::AppCreated {
        app_id: app.id,
        api_key: key,
        request_id,
    })
    .into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// Seconds the previous key keeps working (default one day).
    overlap_secs: Option<u64>,
}

/// The fields `update` may replace; absent fields keep their value, `"rate": null` returns
/// the app to the default rate.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    name: Option<String>,
    grants: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    /// `COUNT/UNIT` (s, min, h, d), optionally `burst N`; `null`: the gateway's app_rate.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "50/s")]
    rate: Option<Option<String>>,
    session_ttl_secs: Option<u64>,
    session_idle_secs: Option<u64>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    /// Trust an OpenID Connect issuer for logins (added or replaced).
    oidc_issuer: Option<OidcIssuer>,
    /// Stop trusting this issuer URL.
    remove_oidc_issuer: Option<String>,
}

/// An OpenID Connect issuer the app trusts for logins: one of `jwks_url`, `jwks_file`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    issuer: String,
    audiences: Vec<String>,
    jwks_url: Option<String>,
    jwks_file: Option<String>,
}

/// Applies the OIDC part of an `update` and lists the app's issuers afterwards.
async fn update_issuers(
    state: &AppState,
    actor: &Actor,
    id: &str,
    set: Option<OidcIssuer>,
    remove: Option<String>,
) -> Result<serde_json::Value, Error> {
    let store = &state.store;
    let now = state.clock.now();
    if let Some(set) = set {
        let jwks = match (set.jwks_url, set.jwks_file) {
            (Some(url), None) => oidc::JwksSource::Url(url),
            (None, Some(file)) => oidc::JwksSource::File(file.into()),
            _ => {
                return Err(Error::InvalidRequest(
                    "give exactly one of jwks_url and jwks_file".to_owned(),
                ));
            }
        };
        let issuer = oidc::TrustedIssuer {
            app_id: id.to_owned(),
            issuer: set.issuer,
            audiences: set.audiences,
            jwks,
        };
        oidc::set_issuer(store, Auditor::Log(&state.audit), actor, &issuer, now).await?;
    }
    if let Some(issuer) = remove {
        oidc::remove_issuer(store, Auditor::Log(&state.audit), actor, id, &issuer, now).await?;
    }
    let list = oidc::issuers(store, id).await?;
    Ok(list.iter().map(oidc::TrustedIssuer::to_json).collect())
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `update`, `freeze`, `unfreeze`, `revoke` or `rotate` one app.
#[utoipa::path(
    post,
    path = "/v1/admin/apps/{id}/{action}",
    operation_id = "apps_act",
    summary = "Update, freeze, unfreeze, revoke or rotate an app's key",
    description = r#"`update` takes `{name?, grants?, groups?, rate?, session_ttl_secs?, session_idle_secs?}` (absent fields keep their value; `"rate": null` returns the app to the gateway's default rate). `rotate` takes an optional body `{"overlap_secs": N}` (default 86400): the previous key keeps working that long, and the answer carries the new key once. The others answer with the app. Every change is recorded in the audit log (kind `admin`) before it is made; changes apply at once in this process and within a second in every other. `update` also takes `oidc_issuer` `{issuer, audiences, jwks_url | jwks_file}` to trust an OpenID Connect issuer for logins and `remove_oidc_issuer` (the issuer URL) to stop; the answer then lists the app's `oidc_issuers`, each with its `trust` (`url:<JWKS URL>` or `file:<path>`). Identities are bound to the trust that verified them: apps trusting the same source share its people, and changing an issuer's source starts a new trust (the app's people of the old source are not carried over)."#,
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("admin"))),
    params(
        ("id" = String, Path, pattern = "^app_[a-z2-7]{26}$"),
        ("action" = inline(AppAction), Path),
    ),
    request_body(content = inline(Option<ActBody>), description = "`update`: the fields to replace; `rotate`: how long the previous key keeps working."),
    responses(
        (status = 200, description = "The changed app, or for rotate {app_id, api_key, previous_key_expires_at, request_id}", body = Object),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
    ),
)]
pub async fn act(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    check_id(&id).map_err(fail)?;
    let actor = actor(&caller, &request_id);
    let auditor = Auditor::Log(&state.audit);
    let Some(which) = AppAction::from_name(&action) else {
        return Err(fail(Error::NotFound));
    };
    let change = match which {
        AppAction::Update => {
            let mut req: Update = json_body(&headers, body).map_err(fail)?;
            let (set, remove) = (req.oidc_issuer.take(), req.remove_oidc_issuer.take());
            let app_fields = req.name.is_some()
                || req.grants.is_some()
                || req.groups.is_some()
                || req.rate.is_some()
                || req.session_ttl_secs.is_some()
                || req.session_idle_secs.is_some()
                || req.redirect_uris.is_some();
            if !app_fields && (set.is_some() || remove.is_some()) {
                let app = apps::get_app(&state.store, &id).await.map_err(fail)?;
                let issuers = update_issuers(&state, &actor, &id, set, remove)
                    .await
                    .map_err(fail)?;
                let mut out = app.to_json();
                if let Some(o) = out.as_object_mut() {
                    o.insert("oidc_issuers".to_owned(), issuers);
                }
                return Ok(with_request_id(out, &request_id));
            }
            let update = AppUpdate {
                name: req.name,
                grants: req.grants,
                groups: req.groups,
                rate: req
                    .rate
                    .map(|r| rate(r.as_deref()))
                    .transpose()
                    .map_err(fail)?,
                session_ttl: req.session_ttl_secs.map(Duration::from_secs),
                session_idle: req.session_idle_secs.map(Duration::from_secs),
                redirect_uris: req.redirect_uris,
            };
            let app = state
                .identity
                .update(auditor, &actor, &id, &update, state.clock.now())
                .await
                .map_err(fail)?;
            tracing::info!(app_id = %app.id, "app updated over HTTP");
            let mut out = app.to_json();
            if set.is_some() || remove.is_some() {
                let issuers = update_issuers(&state, &actor, &id, set, remove)
                    .await
                    .map_err(fail)?;
                if let Some(o) = out.as_object_mut() {
                    o.insert("oidc_issuers".to_owned(), issuers);
                }
            }
            return Ok(with_request_id(out, &request_id));
        }
        AppAction::Freeze => Change::Freeze,
        AppAction::Unfreeze => Change::Unfreeze,
        AppAction::Revoke => Change::Revoke,
        AppAction::Rotate => {
            let empty = body.as_ref().is_ok_and(Bytes::is_empty);
            let req: Rotate = if empty {
                Rotate::default()
            } else {
                json_body(&headers, body).map_err(fail)?
            };
            let overlap = Duration::from_secs(req.overlap_secs.unwrap_or(86_400));
            let (app, key, expires) = state
                .identity
                .rotate(auditor, &actor, &id, overlap, state.clock.now())
                .await
                .map_err(fail)?;
            tracing::info!(app_id = %app.id, "app key rotated over HTTP");
            return Ok(Json(serde_json::json!({
                "app_id": app.id,
                "api_key": key,
                "previous_key_expires_at": expires,
                "request_id": request_id,
            }))
            .into_response());
        }
    };
    let app = state
        .identity
        .change(auditor, &actor, &id, change, state.clock.now())
        .await
        .map_err(fail)?;
    tracing::info!(app_id = %app.id, action = %action, "app changed over HTTP");
    Ok(with_request_id(app.to_json(), &request_id))
}

/// What `POST /v1/admin/apps/{id}/{action}` does to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppAction {
    Update,
    Freeze,
    Unfreeze,
    Revoke,
    Rotate,
}

impl AppAction {
    fn from_name(name: &str) -> Option<AppAction> {
        serde_json::from_value(serde_json::Value::from(name)).ok()
    }
}

/// The body `update` or `rotate` takes (`freeze`, `unfreeze` and `revoke` take none).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    clippy::large_enum_variant,
    reason = "the document's description of the two bodies; never built"
)]
enum ActBody {
    Update(Update),
    Rotate(Rotate),
}

fn with_request_id(out: serde_json::Value, request_id: &str) -> Response {
    crate::http::error::json_answer(out, request_id)
}
