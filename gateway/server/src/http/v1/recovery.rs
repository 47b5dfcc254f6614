//! The device's side of the recovery secret (docs/architecture.md §9), with `Authorization: Device
//! <token>`: whether the user has one, setting it up (or joining it with the same secret) with the
//! backups of the device's wallets, and checking a secret without opening a recovery. Auth keys
//! travel only in these bodies and are never logged or audited; wrong ones are counted per user
//! and per IP like failed logins.

use parapet_api::recovery::{
    KitsIssued, PasskeyLink, RecoveryAnswer, RecoveryCompleted, RecoveryIdentified, RecoveryOpened,
    RecoveryStatus, SecretMatches, ShareBackup, TotpEnrolment, TotpStatus, WalletBackups,
};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parapet_mpc::recovery::RecoveryPublicKey;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::accounts::recovery::{self, DeviceBackup};
use crate::audit::event::{AuditEvent, EventKind};
use crate::cosign::Cosigner;
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::client_ip::{ClientIp, ip_key};
use crate::http::error::{ApiError, json_answer};
use crate::http::extract::{AppSession, AuthedDevice, StrictJson};
use crate::http::request_id::ReqId;
use crate::http::v1::step_up::{Gate, gate};

type Answer = Result<Response, ApiError>;

/// A 32-byte auth key from hex, kept in zeroizing memory.
fn auth_key(text: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.strip_prefix("0x").unwrap_or(text), out.as_mut())
        .map_err(|_| Error::InvalidRequest("auth_key is 32 bytes of hex".to_owned()))?;
    Ok(out)
}

/// The user's recovery state as this device may see it: whether a secret is set up, its public
/// key (for display; a device seals only to the copy in its own file), and, for each wallet the
/// device holds, its epoch and the epochs of the backups the gateway keeps.
#[utoipa::path(
    get,
    path = "/v1/device/recovery",
    operation_id = "recovery_status",
    summary = "The user's recovery secret, as this device sees it",
    description = "With `Authorization: Device <token>`. Whether a recovery secret is set up, its X25519 public key (for display: a device seals backups only to the copy in its own file), and for each wallet this device holds its epoch and the epochs of the device-share backups the gateway keeps (docs/architecture.md §9).",
    security(()),
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    responses(
        (status = 200, description = "{user_id, set_up, public_key, salt, created_at, wallets: [{address, epoch, backup_epochs}], request_id}", body = RecoveryStatus),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn status(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let store = &state.store;
    let stored = recovery::get(store, device.user_id).await.map_err(fail)?;
    let mut wallets = Vec::new();
    for w in crate::accounts::backup_devices::held_by(store, &device)
        .await
        .map_err(fail)?
    {
        let backups = recovery::backup_epochs(store, &w.address)
            .await
            .map_err(fail)?;
        wallets.push(WalletBackups {
            address: w.address,
            epoch: w.epoch,
            backup_epochs: backups,
        });
    }
    Ok(Json(RecoveryStatus {
        user_id: device.user_id.to_string(),
        set_up: stored.is_some(),
        public_key: stored.as_ref().map(|s| s.public_key.to_hex()),
        salt: stored.as_ref().map(recovery::StoredRecovery::kdf_salt),
        created_at: stored.as_ref().map(|s| s.created_at.clone()),
        wallets,
        request_id,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUp {
    /// X25519 public key, hex.
    public_key: String,
    /// 32 bytes, hex.
    auth_key: String,
    /// The salt the device derived the keys with, for a first secret (`rs_…`, random); without
    /// one the user id is the salt, as before salts existed. Ignored once a secret is set up: a
    /// further device derives with the stored one.
    #[serde(default)]
    salt: Option<String>,
    #[serde(default)]
    backups: Vec<DeviceBackup>,
    /// The operation the owner approved with their passkey, for a first secret
    /// ([`recovery::approval`]).
    #[serde(default)]
    approval: Option<String>,
}

/// `POST /v1/device/recovery`: see [`recovery::enrol`]. Setting the first secret of a person who
/// has a passkey needs their approval: without one the answer is `403 step_up_required` naming
/// an `operation` the owner approves with a passkey (on the page, or an app through
/// `POST /v1/operations/{id}/step-up`); the device then sends it again with `approval`.
#[utoipa::path(
    post,
    path = "/v1/device/recovery",
    operation_id = "recovery_set_up",
    summary = "Set up (or rejoin) the recovery secret, with this device's backups",
    description = "With `Authorization: Device <token>`. The first time for a user, stores an Argon2id verifier of `auth_key` and `public_key`; later, only with the same secret (else 403 `recovery_secret_rejected`, counted per user and IP and audited). `backups` must hold one HPKE envelope of the device's share for every wallet this device holds, at the wallet's current epoch; the answer carries, for each, the gateway's share sealed to `public_key` (the device's backup kit). The auth key is never logged or audited. Setting the first secret of a person who has a passkey needs their approval: without `approval` the answer is 403 `step_up_required` with an `operation` id that the owner approves with a passkey (on the page, or through `POST /v1/operations/{id}/step-up`); the device then sends the same request with `approval` set to that id (once; bound to this device and `public_key`, else `step_up_mismatch`). Joining an existing secret needs no approval.",
    security(()),
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    request_body(content = inline(SetUp)),
    responses(
        (status = 201, description = "{kits: [{wallet, epoch, gateway_share}], request_id}", body = KitsIssued),
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
pub async fn set_up(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<SetUp>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    let user_key = recovery::limiter_key(device.user_id);
    state
        .users
        .check_login(&ip, Some(&user_key), now)
        .map_err(fail)?;
    let charged = Charged::take(&state, &ip, now).map_err(fail)?;
    let public_key = RecoveryPublicKey::from_hex(&req.public_key).map_err(|_| {
        fail(Error::InvalidRequest(
            "public_key is an X25519 key in hex".into(),
        ))
    })?;
    let key = auth_key(&req.auth_key).map_err(fail)?;
    let salt = req
        .salt
        .as_deref()
        .map(recovery::Salt::parse)
        .transpose()
        .map_err(fail)?;
    let store = &state.store;
    let first = recovery::get(store, device.user_id)
        .await
        .map_err(fail)?
        .is_none();
    if first
        && crate::accounts::passkeys::has_live_passkey(store, device.user_id)
            .await
            .map_err(fail)?
    {
        let key_hex = public_key.to_hex();
        match &req.approval {
            None => {
                let asked = recovery::approval::ask(
                    store,
                    device.user_id,
                    &device.device_id,
                    &key_hex,
                    now,
                )
                .await
                .map_err(fail)?;
                return Ok(crate::http::error::step_up_required(
                    &request_id,
                    ("operation", &asked.id),
                    serde_json::Value::Null,
                ));
            }
            Some(id) => recovery::approval::spend(
                store,
                device.user_id,
                id,
                &device.device_id,
                &key_hex,
                now,
            )
            .await
            .map_err(fail)?,
        }
    }
    let cosigner = Cosigner::of(&state);
    match recovery::enrol(
        &cosigner,
        &device,
        &public_key,
        key,
        salt.as_ref(),
        &req.backups,
        &request_id,
        now,
    )
    .await
    {
        Ok(kits) => {
            charged.succeeded();
            Ok((StatusCode::CREATED, Json(KitsIssued { kits, request_id })).into_response())
        }
        Err(Error::RecoverySecretRejected) => {
            charged.failed();
            rejected(&state, &device, &user_key, &request_id, now).await;
            Err(fail(Error::RecoverySecretRejected))
        }
        Err(other) => {
            charged.succeeded();
            Err(fail(other))
        }
    }
}

/// `GET /v1/device/operations/{id}`: the device's view of an approval it asked for (its state,
/// while it waits for the owner's passkey).
#[utoipa::path(
    get,
    path = "/v1/device/operations/{id}",
    operation_id = "recovery_operation",
    summary = "A device's view of an approval it asked for",
    description = "With `Authorization: Device <token>`. The state of the recovery set-up `operation` this device asked for (`pending_step_up`, `approved`, `used`), while it waits for the owner's passkey. 404 for anyone else's.",
    security(()),
    params(
        crate::http::openapi_parts::DeviceToken,
        ("id" = String, Path),
    ),
    responses(
        (status = 200, description = "{id, kind, device_id, device_name, public_key, state, created_at, expires_at, request_id}", body = Object),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn operation(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    Path(id): Path<String>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let a = recovery::approval::of_owner(&state.store, device.user_id, &id)
        .await
        .map_err(fail)?;
    if a.device_id != device.device_id {
        return Err(fail(Error::NotFound));
    }
    Ok(json_answer(a.to_json(Some(&device.name)), &request_id))
}

/// An attempt at a costly check (a recovery secret's verifier), counted against the client's IP
/// *before* the check runs, so that concurrent attempts cannot all pass the limit first. It stays
/// counted unless the check turns out a success or never ran.
struct Charged<'a> {
    state: &'a AppState,
    ip: &'a str,
    now: time::OffsetDateTime,
    settled: bool,
}

impl<'a> Charged<'a> {
    fn take(state: &'a AppState, ip: &'a str, now: time::OffsetDateTime) -> Result<Self, Error> {
        state.users.charge_attempt(ip, now)?;
        Ok(Charged {
            state,
            ip,
            now,
            settled: false,
        })
    }

    /// The secret matched, or the attempt ended before it was checked: it no longer counts.
    fn succeeded(mut self) {
        self.settled = true;
        self.state.users.attempt_succeeded(self.ip);
    }

    /// The secret was wrong: it stays counted.
    fn failed(mut self) {
        self.settled = true;
        self.state
            .users
            .attempt_failed(&self.state.audit, self.ip, self.now);
    }
}

impl Drop for Charged<'_> {
    /// An attempt dropped unsettled (an early `?`) never reached the check.
    fn drop(&mut self) {
        if !self.settled {
            self.state.users.attempt_succeeded(self.ip);
        }
    }
}

/// Counts a wrong secret against the user (the IP was charged before the check) and audits it
/// (never what was sent). Only the person's own devices reach this: a stranger's failures at
/// `POST /v1/recovery` never count against the person.
async fn rejected(
    state: &AppState,
    device: &crate::accounts::devices::Device,
    user_key: &str,
    request_id: &str,
    now: time::OffsetDateTime,
) {
    state.users.person_failed(user_key, now);
    let mut e = AuditEvent::new(EventKind::Recovery, now, request_id);
    e.user = Some(device.user_id.to_string());
    e.action = Some("recovery.secret_rejected".to_owned());
    e.request = Some(serde_json::json!({ "device_id": device.device_id }));
    if let Err(error) = state.audit.append(e).await {
        tracing::warn!(%error, "auditing a rejected recovery secret");
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    auth_key: String,
}

/// `POST /v1/device/recovery/check`: whether this secret's auth key is the user's, without
/// opening a recovery. A wrong one counts like a failed login.
#[utoipa::path(
    post,
    path = "/v1/device/recovery/check",
    operation_id = "recovery_check",
    summary = "Check a recovery secret without opening a recovery",
    description = "With `Authorization: Device <token>`. 200 when the auth key matches the user's verifier; 403 `recovery_secret_rejected` otherwise (counted per user and IP and audited); 409 `recovery_setup_required` when the user has none.",
    security(()),
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    request_body(content = inline(Check)),
    responses(
        (status = 200, description = "{matches: true, public_key, request_id}", body = SecretMatches),
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
pub async fn check(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<Check>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    let user_key = recovery::limiter_key(device.user_id);
    state
        .users
        .check_login(&ip, Some(&user_key), now)
        .map_err(fail)?;
    let key = auth_key(&req.auth_key).map_err(fail)?;
    let stored = recovery::get(&state.store, device.user_id)
        .await
        .map_err(fail)?
        .ok_or_else(|| fail(Error::RecoverySetupRequired))?;
    let charged = Charged::take(&state, &ip, now).map_err(fail)?;
    if !stored.matches(key).await.map_err(fail)? {
        charged.failed();
        rejected(&state, &device, &user_key, &request_id, now).await;
        return Err(fail(Error::RecoverySecretRejected));
    }
    charged.succeeded();
    Ok(Json(SecretMatches {
        matches: true,
        public_key: stored.public_key.to_hex(),
        request_id,
    })
    .into_response())
}

// ---- the recovery flow (docs/architecture.md §9) ----

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identify {
    user: String,
}

/// `POST /v1/recovery/identify`: what a recovering device derives its keys with (the person's
/// recovery `salt`), from any of the person's wallet addresses or their user id. The salt is
/// random and says nothing else: the user id is only in the answer to a recovery opened with
/// the secret. (For secrets set up before salts existed, the salt is the user id.) Every lookup
/// counts per IP ([`crate::accounts::users::LOOKUPS_PER_IP`]), found or not; a miss also counts like a
/// failed login.
#[utoipa::path(
    post,
    path = "/v1/recovery/identify",
    operation_id = "recovery_identify",
    summary = "The salt a recovery derives its keys with",
    description = "No app key. `user` is any of the person's wallet addresses (or their user id); answers `{salt}`, the per-person random salt of the recovery secret's key derivation (for secrets set up before salts existed, the user id). It names nobody: the user id is told only by a recovery opened with the secret. 404 when nothing matches (or no secret is set up), counted like a failed login; every lookup counts per IP (20 an hour), found or not.",
    security(()),
    request_body(content = inline(Identify)),
    responses(
        (status = 200, description = "{salt, request_id}", body = RecoveryIdentified),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 413, response = crate::http::openapi_parts::Error),
        (status = 415, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn identify(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<Identify>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    state.users.check_login(&ip, None, now).map_err(fail)?;
    state.users.charge_lookup(&ip, now).map_err(fail)?;
    let store = &state.store;
    let stored = match recovery::flow::resolve_user(store, &req.user)
        .await
        .map_err(fail)?
    {
        Some(user) => recovery::get(store, user).await.map_err(fail)?,
        None => None,
    };
    match stored {
        Some(stored) => Ok(Json(RecoveryIdentified {
            salt: stored.kdf_salt(),
            request_id,
        })
        .into_response()),
        None => {
            let _ = state.users.login_failed(&state.audit, &ip, None, now);
            Err(fail(Error::NotFound))
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Open {
    /// The salt `identify` gave (or, from clients made before salts, the user id).
    #[serde(default)]
    salt: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    /// 32 bytes, hex.
    auth_key: String,
    /// A current TOTP code; required once the user has enrolled TOTP.
    #[serde(default)]
    totp: Option<String>,
    device_name: String,
}

/// `POST /v1/recovery`: opens a recovery (no app key: the credential is the auth key). Wrong
/// keys count per user and per IP, are audited, and all look alike (`recovery_refused`).
#[utoipa::path(
    post,
    path = "/v1/recovery",
    operation_id = "recovery_open",
    summary = "Open a recovery from a new device",
    description = "No app key: the credential is the recovery secret's auth key. Opens a recovery that becomes completable after the configured delay (`recovery_delay_secs`, default 48 h); the user sees it on the page and can cancel it with a passkey meanwhile. A wrong key, an unknown user or a disabled one all get 403 `recovery_refused` (counted per client IP before the secret is hashed, never against the person, audited as `recovery.refused`); 503 `busy` when every hashing slot is taken; one already open is 409 `recovery_in_progress`. The answer carries `recovery_token`, shown once: the bearer credential for this recovery.",
    security(()),
    request_body(content = inline(Open)),
    responses(
        (status = 201, description = "{id, user_id, state, device_name, opened_at, completable_at, expires_at, recovery_token, request_id}", body = RecoveryOpened),
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
pub async fn open(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    ip: Option<Extension<ClientIp>>,
    StrictJson(req): StrictJson<Open>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (ip, now) = (ip_key(ip), state.clock.now());
    // Per IP only, charged before the secret is hashed: the secret has 128 bits, so the per-IP
    // limit and the hashing slots are the defence, and a stranger's failures never count against
    // the person, who can always open their own recovery.
    let who = match (&req.salt, &req.user_id) {
        (Some(who), None) | (None, Some(who)) => who.trim().to_owned(),
        _ => {
            return Err(fail(Error::InvalidRequest(
                "send salt (from /v1/recovery/identify)".to_owned(),
            )));
        }
    };
    let key = auth_key(&req.auth_key).map_err(fail)?;
    let charged = Charged::take(&state, &ip, now).map_err(fail)?;
    let Some(user) = recovery::user_by_salt(&state.store, &who)
        .await
        .map_err(fail)?
    else {
        // Nobody's salt: refused like a wrong secret, and counted the same.
        charged.failed();
        return Err(fail(Error::RecoveryRefused));
    };
    let delay = time::Duration::try_from(state.recovery_delay)
        .map_err(|e| fail(Error::Internal(format!("recovery delay: {e}"))))?;
    let open = recovery::flow::OpenRequest {
        user,
        auth_key: key,
        totp: req.totp.as_deref(),
        device_name: &req.device_name,
    };
    match recovery::flow::open(
        &state.audit,
        &state.personal_data,
        open,
        delay,
        &request_id,
        now,
    )
    .await
    {
        Ok((r, token)) => {
            charged.succeeded();
            let opened = RecoveryOpened {
                recovery: r.view(now),
                recovery_token: token,
                request_id,
            };
            Ok((StatusCode::CREATED, Json(opened)).into_response())
        }
        Err(Error::RecoveryRefused) => {
            charged.failed();
            let mut e = AuditEvent::new(EventKind::Recovery, now, request_id.clone());
            e.user = Some(user.to_string());
            e.action = Some("recovery.refused".to_owned());
            e.request = Some(serde_json::json!({ "ip": ip }));
            if let Err(error) = state.audit.append(e).await {
                tracing::warn!(%error, "auditing a refused recovery");
            }
            Err(fail(Error::RecoveryRefused))
        }
        Err(other) => Err(fail(other)),
    }
}

/// The recovery named by the path and the `Authorization: Recovery pr_…` header.
async fn recovery_of(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<recovery::flow::Recovery, Error> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("recovery")
                .then(|| rest.trim().to_owned())
        })
        .ok_or(Error::Unauthorized)?;
    recovery::flow::by_token(&state.store, id, &token).await
}

/// `GET /v1/recovery/{id}` for the device that opened it.
#[utoipa::path(
    get,
    path = "/v1/recovery/{id}",
    operation_id = "recovery_get",
    summary = "A recovery, for the device that opened it",
    description = "With `Authorization: Recovery <token>`.",
    security(()),
    params(
        ("id" = String, Path),
        crate::http::openapi_parts::RecoveryToken,
    ),
    responses(
        (status = 200, description = "{id, user_id, state (open, cancelled, completed, expired), device_name, opened_at, completable_at, expires_at, ended_at, request_id}", body = RecoveryAnswer),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let r = recovery_of(&state, &id, &headers).await.map_err(fail)?;
    Ok(Json(RecoveryAnswer {
        recovery: r.view(state.clock.now()),
        request_id,
    })
    .into_response())
}

/// `POST /v1/recovery/{id}/complete` for the device that opened it, once the delay has passed.
/// The same call again, after a completion whose answer was lost on the way, answers again
/// (with a fresh device token replacing the lost one) until the new device first uses its
/// token ([`recovery::flow::redeliver`]). The body (`{}` or none) is read before anything is
/// answered: an answer sent while the request is still arriving can be cut off by the reset
/// that closing a socket with unread data causes.
#[utoipa::path(
    post,
    path = "/v1/recovery/{id}/complete",
    operation_id = "recovery_complete",
    summary = "Complete a recovery after its delay",
    description = "With `Authorization: Recovery <token>`, once `completable_at` has passed (else 409 `recovery_not_completable`). In one transaction: every device, passkey and session of the user is revoked, the new device is enrolled, every wallet is handed to it marked `refresh_required` with an approved refresh (24 h). The answer carries the new device token, each wallet's device-share backup (HPKE-sealed to the recovery key: only the secret opens it) and a one-time page link to register a new passkey.",
    security(()),
    params(
        ("id" = String, Path),
        crate::http::openapi_parts::RecoveryToken,
    ),
    responses(
        (status = 200, description = "{recovery, user_id, device_id, device_token, backups: [{wallet, epoch, device_share}], without_backup, passkey_link: {url, expires_at}, request_id}", body = RecoveryCompleted),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 409, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn complete(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    body.map_err(|_| Error::InvalidRequest("the request body could not be read".to_owned()))
        .map_err(fail)?;
    let r = recovery_of(&state, &id, &headers).await.map_err(fail)?;
    let now = state.clock.now();
    let done = if r.state == recovery::flow::RecoveryState::Completed {
        recovery::flow::redeliver(&state.audit, &r, &request_id, now)
            .await
            .map_err(fail)?
    } else {
        let done = recovery::flow::complete(&state.audit, &r, &request_id, now)
            .await
            .map_err(fail)?;
        state.users.sessions.invalidate();
        done
    };
    // The new passkey is registered on the page: a one-time link logged in as the user.
    let grant = crate::accounts::users::handoff::CodeGrant {
        user: r.user_id,
        method: "recovery".to_owned(),
        user_verified: false,
        credential_id: None,
    };
    let code = crate::accounts::users::handoff::issue_code(
        &state.store,
        crate::records::PAGE_APP_ID,
        crate::accounts::users::handoff::PAGE_LINK,
        &grant,
        now,
    )
    .await
    .map_err(fail)?;
    let backups = done
        .backups
        .iter()
        .map(|(wallet, epoch, sealed)| ShareBackup {
            wallet: wallet.clone(),
            epoch: *epoch,
            device_share: hex::encode(sealed),
        })
        .collect();
    Ok(Json(RecoveryCompleted {
        recovery: r.id,
        user_id: r.user_id.to_string(),
        device_id: done.device.device_id,
        device_token: done.device_token,
        backups,
        without_backup: done.missing,
        passkey_link: PasskeyLink {
            url: format!("/ui/?link={code}"),
            expires_at: crate::audit::event::format_time(
                now + crate::accounts::users::handoff::CODE_TTL,
            ),
        },
        request_id,
    })
    .into_response())
}

/// `POST /v1/recovery/{id}/cancel` with the app key and the user's session: without a body,
/// `403 step_up_required` with passkey options bound to this recovery; with the assertion
/// (`{ceremony_id, credential}`), the recovery is cancelled.
#[utoipa::path(
    post,
    path = "/v1/recovery/{id}/cancel",
    operation_id = "recovery_cancel",
    summary = "Cancel an open recovery (passkey step-up)",
    description = "The app key and the user's session. Without a body: 403 `step_up_required` with `step_up: {ceremony_id, options}` bound to this recovery. With `{ceremony_id, credential}` (any of the user's passkeys, user verification required): the recovery is cancelled (audited `recovery.cancel`).",
    params(
        crate::http::openapi_parts::OwnerSession,
        ("id" = String, Path),
    ),
    request_body(content = inline(Option<crate::http::v1::signing::StepUp>), description = "None, or `{}`, asks for the step-up; `{ceremony_id, credential}` with the owner's passkey assertion passes it."),
    responses(
        (status = 200, description = "The recovery, cancelled.", body = RecoveryAnswer),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    let r = recovery::flow::of_user(&state.store, user, &id)
        .await
        .map_err(fail)?;
    let now = state.clock.now();
    let context = recovery::flow::cancel_context(&r.id);
    let waiting = ("recovery", r.id.as_str());
    let gate = gate(&state, user, &context, waiting, &request_id, &headers, body).await;
    if let Gate::Ask(answer) = gate.map_err(fail)? {
        return Ok(answer);
    }
    let cancelled = recovery::flow::cancel(&state.audit, &r, &request_id, now)
        .await
        .map_err(fail)?;
    Ok(Json(RecoveryAnswer {
        recovery: cancelled.view(now),
        request_id,
    })
    .into_response())
}

// ---- TOTP, the recovery's optional second factor ----

/// `POST /v1/totp` with the app key and the user's session: starts enrolment and answers the
/// `otpauth://` URI (shown once; the page draws it as a QR code). An active factor stays.
#[utoipa::path(
    post,
    path = "/v1/totp",
    operation_id = "recovery_totp_start",
    summary = "Start TOTP enrolment",
    description = "The app key and the user's session. An empty body (or `{}`) answers 403 `step_up_required` with passkey options bound to the enrolment: a stolen session alone cannot add a factor the user does not hold. Posting `{ceremony_id, credential}` then stores a fresh seed (160 bits, sealed at rest with the personal data key) inactive and answers its `otpauth://` URI and a QR code of it (SVG), shown once. An active factor is not replaced (400).",
    params(
        crate::http::openapi_parts::OwnerSession,
    ),
    responses(
        (status = 200, description = "{otpauth_uri, qr_svg, request_id}", body = TotpEnrolment),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn totp_start(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    let context = crate::accounts::users::totp::enrol_context(user);
    let waiting = ("totp", "enrol");
    let gate = gate(&state, user, &context, waiting, &request_id, &headers, body).await;
    if let Gate::Ask(answer) = gate.map_err(fail)? {
        return Ok(answer);
    }
    let now = state.clock.now();
    let uri = crate::accounts::users::totp::start(&state.store, &state.personal_data, user, now)
        .await
        .map_err(fail)?;
    let svg = crate::accounts::users::totp::qr_svg(&uri).map_err(fail)?;
    Ok(Json(TotpEnrolment {
        otpauth_uri: uri.as_str().to_owned(),
        qr_svg: svg,
        request_id,
    })
    .into_response())
}

/// `POST /v1/totp/remove` with the app key and the user's session: removes the TOTP factor
/// after a passkey step-up bound to that removal (audited `totp.remove`, notified). A second
/// factor the person did not remove themselves never disappears on an app's word alone.
#[utoipa::path(
    post,
    path = "/v1/totp/remove",
    operation_id = "recovery_totp_remove",
    summary = "Remove the TOTP factor (passkey step-up)",
    description = "The app key and the user's session. A body that asks (none, or `{}`) answers 403 `step_up_required` with passkey options bound to this removal; the body `{ceremony_id, credential}` with the owner's assertion (user verification) removes the factor, audited `totp.remove` and notified as `totp.removed`. 404 when the user has no factor.",
    params(
        crate::http::openapi_parts::OwnerSession,
    ),
    responses(
        (status = 200, description = "{active: false, request_id}", body = TotpStatus),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn totp_remove(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    if !crate::accounts::users::totp::exists(&state.store, user)
        .await
        .map_err(fail)?
    {
        return Err(fail(Error::NotFound));
    }
    let context = crate::accounts::users::totp::remove_context(user);
    let waiting = ("totp", "remove");
    let gate = gate(&state, user, &context, waiting, &request_id, &headers, body).await;
    if let Gate::Ask(answer) = gate.map_err(fail)? {
        return Ok(answer);
    }
    let now = state.clock.now();
    crate::accounts::users::totp::remove(&state.audit, user, Some(&caller.id), &request_id, now)
        .await
        .map_err(fail)?;
    Ok(Json(TotpStatus {
        active: false,
        request_id,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    code: String,
}

/// `POST /v1/totp/confirm` `{code}`: a first code from the authenticator app activates the
/// factor (audited `totp.enrol`); from then on a recovery needs a code too.
#[utoipa::path(
    post,
    path = "/v1/totp/confirm",
    operation_id = "recovery_totp_confirm",
    summary = "Activate TOTP with a first code",
    description = "The app key and the user's session. A current code (accepted once) activates the factor, audited `totp.enrol`; from then on `POST /v1/recovery` needs `totp` too, and a wrong or replayed code is `recovery_refused` like a wrong secret.",
    params(
        crate::http::openapi_parts::OwnerSession,
    ),
    request_body(content = inline(TotpCode)),
    responses(
        (status = 200, description = "{active: true, request_id}", body = TotpStatus),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn totp_confirm(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
    StrictJson(req): StrictJson<TotpCode>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    confirm_totp(&state, user, Some(&caller.id), &req.code, &request_id)
        .await
        .map_err(fail)?;
    Ok(Json(TotpStatus {
        active: true,
        request_id,
    })
    .into_response())
}

/// Activates `user`'s TOTP factor with a first code and audits `totp.enrol` (the app, or the
/// page when `app` is none).
pub(crate) async fn confirm_totp(
    state: &AppState,
    user: uuid::Uuid,
    app: Option<&str>,
    code: &str,
    request_id: &str,
) -> Result<(), Error> {
    let now = state.clock.now();
    if !crate::accounts::users::totp::confirm(&state.store, &state.personal_data, user, code, now)
        .await?
    {
        return Err(Error::InvalidRequest(
            "that code does not match (or was used already): try the next one".to_owned(),
        ));
    }
    let mut e = AuditEvent::new(EventKind::Recovery, now, request_id);
    e.user = Some(user.to_string());
    e.app = app.map(str::to_owned);
    e.action = Some("totp.enrol".to_owned());
    state.audit.append(e).await.map(|_| ())
}
