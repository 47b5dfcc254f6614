//! `/ui/api/security…`: the page's security panel. What it shows — open recoveries, the TOTP
//! factor, each wallet's backup-kit download and whether it is stale — and the actions that
//! each take a passkey step-up (user verification) bound to what they act on: cancelling a
//! recovery, approving a new device, downloading a kit, enrolling or removing TOTP, adding or
//! revoking a passkey, pairing or removing a device. One gate for every change of who can act
//! for the person (docs/architecture.md §6).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;
use webauthn_rs::prelude::PublicKeyCredential;

use crate::accounts::recovery::{flow, kit_export};
use crate::accounts::users::totp;
use crate::error::Result;
use crate::http::AppState;
use crate::http::error::{ApiError, json_answer};
use crate::http::extract::{PageChange, PageSession, StrictJson};
use crate::http::request_id::ReqId;

type Answer = std::result::Result<Response, ApiError>;

/// `GET /ui/api/security`.
pub async fn overview(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageSession(s): PageSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (store, user, now) = (&state.store, s.facts.user, state.clock.now());
    let recoveries = flow::open_of(store, user, now).await.map_err(fail)?;
    let kits = kit_export::status(store, user).await.map_err(fail)?;
    let totp_active = totp::is_active(store, user).await.map_err(fail)?;
    let has_secret = crate::accounts::recovery::get(store, user)
        .await
        .map_err(fail)?
        .is_some();
    let devices = crate::accounts::devices::list(store, user)
        .await
        .map_err(fail)?;
    let approvals: Vec<_> = crate::accounts::recovery::approval::waiting_for(store, user, now)
        .await
        .map_err(fail)?
        .iter()
        .map(|a| {
            let name = devices
                .iter()
                .find(|d| d.device_id == a.device_id)
                .map(|d| d.name.as_str());
            a.to_json(name)
        })
        .collect();
    Ok(json_answer(
        serde_json::json!({
            "recoveries": recoveries.iter().map(|r| r.to_json(now)).collect::<Vec<_>>(),
            "kits": kits,
            "totp": {"active": totp_active},
            "recovery_secret": has_secret,
            "approvals": approvals,
        }),
        &request_id,
    ))
}

/// What a step-up on the page is for.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    RecoveryCancel,
    DeviceApprove,
    KitDownload,
    TotpEnrol,
    TotpRemove,
    PasskeyAdd,
    PasskeyRevoke,
    DevicePair,
    DeviceRevoke,
    RecoverySetupApprove,
}

/// What an action acts on, loaded once and checked to be the user's.
enum Target {
    Recovery(flow::Recovery),
    Transfer(crate::accounts::backup_devices::Transfer),
    /// A wallet's normalized address, with its current epoch.
    Wallet(String, i64),
    Totp,
    /// The person's active (or half-enrolled) TOTP factor.
    TotpFactor,
    PasskeyAdd,
    /// One of the person's live passkeys, by credential id.
    Passkey(String),
    DevicePair,
    /// One of the person's live devices.
    Device(crate::accounts::devices::Device),
    /// A device's request to set the first recovery secret.
    RecoverySetup(crate::accounts::recovery::approval::Approval),
}

impl Target {
    async fn load(state: &AppState, user: Uuid, action: Action, id: &str) -> Result<Target> {
        let store = &state.store;
        Ok(match action {
            Action::RecoveryCancel => Target::Recovery(flow::of_user(store, user, id).await?),
            Action::DeviceApprove => {
                Target::Transfer(crate::accounts::backup_devices::of_user(store, user, id).await?)
            }
            Action::KitDownload => {
                let address = crate::accounts::wallets::normalize_address(id)?;
                let w = crate::accounts::wallets::owned_by(store, &address, user).await?;
                Target::Wallet(w.address, w.epoch)
            }
            Action::TotpEnrol => Target::Totp,
            Action::TotpRemove => {
                if !crate::accounts::users::totp::exists(store, user).await? {
                    return Err(crate::error::Error::NotFound);
                }
                Target::TotpFactor
            }
            Action::PasskeyAdd => Target::PasskeyAdd,
            Action::PasskeyRevoke => {
                let live: Vec<_> = state
                    .passkeys
                    .list(user)
                    .await?
                    .into_iter()
                    .filter(|p| !p.revoked())
                    .collect();
                if !live.iter().any(|p| p.credential_id == id) {
                    return Err(crate::error::Error::NotFound);
                }
                if live.len() == 1 {
                    return Err(crate::error::Error::LastPasskey);
                }
                Target::Passkey(id.to_owned())
            }
            Action::DevicePair => Target::DevicePair,
            Action::DeviceRevoke => {
                Target::Device(crate::accounts::devices::live_of(store, user, id).await?)
            }
            Action::RecoverySetupApprove => Target::RecoverySetup(
                crate::accounts::recovery::approval::of_owner(store, user, id).await?,
            ),
        })
    }

    /// The step-up context the passkey assertion is bound to.
    fn context(&self, user: Uuid) -> String {
        match self {
            Target::Recovery(r) => flow::cancel_context(&r.id),
            Target::Transfer(t) => crate::accounts::backup_devices::approval_context(t),
            Target::Wallet(address, epoch) => kit_export::context(address, *epoch),
            Target::Totp => totp::enrol_context(user),
            Target::TotpFactor => totp::remove_context(user),
            Target::PasskeyAdd => crate::accounts::passkeys::add_context(user),
            Target::Passkey(id) => crate::accounts::passkeys::revoke_context(id),
            Target::DevicePair => crate::accounts::devices::pair_context(user),
            Target::Device(d) => crate::accounts::devices::revoke_context(&d.device_id),
            Target::RecoverySetup(a) => a.step_up_context(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    action: Action,
    #[serde(default)]
    id: String,
}

/// `POST /ui/api/security/step-up/start {action, id}`: passkey options for the action.
pub async fn start(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<Start>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = s.facts.user;
    let target = Target::load(&state, user, req.action, &req.id)
        .await
        .map_err(fail)?;
    let step_up = state
        .passkeys
        .start_step_up(user, &target.context(user), state.clock.now())
        .await
        .map_err(fail)?;
    Ok(json_answer(step_up, &request_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    action: Action,
    #[serde(default)]
    id: String,
    ceremony_id: String,
    credential: PublicKeyCredential,
}

/// `POST /ui/api/security/step-up/finish {action, id, ceremony_id, credential}`: checks the
/// assertion against the action's context, then does it.
pub async fn finish(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<Finish>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let (user, now) = (s.facts.user, state.clock.now());
    let target = Target::load(&state, user, req.action, &req.id)
        .await
        .map_err(fail)?;
    state
        .passkeys
        .finish_step_up(
            &req.ceremony_id,
            &req.credential,
            user,
            &target.context(user),
            now,
        )
        .await
        .map_err(fail)?;
    let out = match target {
        Target::Recovery(r) => {
            let cancelled = flow::cancel(&state.audit, &r, &request_id, now)
                .await
                .map_err(fail)?;
            serde_json::json!({"recovery": cancelled.to_json(now)})
        }
        Target::Transfer(t) => {
            let approved =
                crate::accounts::backup_devices::approve(&state.audit, &t, &request_id, now)
                    .await
                    .map_err(fail)?;
            serde_json::json!({"transfer": approved.view()})
        }
        Target::Wallet(address, _) => {
            let cosigner = crate::cosign::Cosigner::of(&state);
            let kit = kit_export::export(&cosigner, user, &address, &request_id, now)
                .await
                .map_err(fail)?;
            serde_json::json!({"kit": kit})
        }
        Target::Totp => {
            let uri = totp::start(&state.store, &state.personal_data, user, now)
                .await
                .map_err(fail)?;
            let svg = totp::qr_svg(&uri).map_err(fail)?;
            serde_json::json!({"otpauth_uri": uri.as_str(), "qr_svg": svg})
        }
        Target::TotpFactor => {
            totp::remove(&state.audit, user, None, &request_id, now)
                .await
                .map_err(fail)?;
            serde_json::json!({"totp": {"active": false}})
        }
        // The registration this step-up approves: the page finishes it with
        // `/ui/api/register/finish` (only such a ceremony adds a further passkey).
        Target::PasskeyAdd => crate::http::page::api::start_registration(&state, user, true)
            .await
            .map_err(fail)?,
        Target::Passkey(id) => {
            let revoked = state
                .users
                .revoke_passkey(&state.passkeys, user, &id, now)
                .await
                .map_err(fail)?;
            let mut res = json_answer(serde_json::json!({ "revoked": revoked }), &request_id);
            if s.credential_id.as_deref() == Some(id.as_str()) {
                // This very session was established with it: it has ended.
                res.headers_mut()
                    .insert(axum::http::header::SET_COOKIE, state.page.clear_cookie());
            }
            return Ok(res);
        }
        Target::DevicePair => {
            let (code, expires) =
                crate::accounts::devices::issue_pairing_code(&state.store, user, now)
                    .await
                    .map_err(fail)?;
            serde_json::json!({"code": code, "expires_at": crate::audit::event::format_time(expires)})
        }
        Target::Device(d) => {
            let device = crate::accounts::devices::revoke(
                &state.store,
                crate::accounts::apps::Auditor::Log(&state.audit),
                user,
                &d.device_id,
                &request_id,
                now,
            )
            .await
            .map_err(fail)?;
            serde_json::json!({ "revoked": device })
        }
        Target::RecoverySetup(a) => {
            let approved = crate::accounts::recovery::approval::approve(
                &state.audit,
                &a,
                None,
                &request_id,
                now,
            )
            .await
            .map_err(fail)?;
            serde_json::json!({ "approval": approved.to_json(None) })
        }
    };
    Ok(json_answer(out, &request_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    code: String,
}

/// `POST /ui/api/totp/confirm {code}`: the first code from the authenticator app activates it.
pub async fn totp_confirm(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    PageChange(s): PageChange,
    StrictJson(req): StrictJson<Code>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    crate::http::v1::recovery::confirm_totp(&state, s.facts.user, None, &req.code, &request_id)
        .await
        .map_err(fail)?;
    Ok(json_answer(
        serde_json::json!({"active": true}),
        &request_id,
    ))
}
