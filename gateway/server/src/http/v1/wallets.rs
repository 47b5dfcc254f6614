//! Wallets over the API: the session user's wallets and one wallet (its owner, or any admin
//! key), and the admin changes (labels, groups, frozen, `refresh_required`). Ownership is checked
//! here, in code, never left to an id being hard to guess.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use crate::accounts::apps::{Actor, Auditor};
use crate::accounts::wallets::{self, WalletUpdate};
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, json_answer};
use crate::http::extract::{AppSession, StrictJson};
use crate::http::request_id::ReqId;

type Answer = Result<Response, ApiError>;

pub async fn list(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    let list: Vec<_> = wallets::of_owner(&state.store, user)
        .await
        .map_err(fail)?
        .iter()
        .map(wallets::StoredWallet::to_json)
        .collect();
    Ok(json_answer(
        serde_json::json!({ "wallets": list }),
        &request_id,
    ))
}

/// One wallet: for an admin key, any; otherwise only with the owner's session. Someone else's
/// wallet and no wallet at all get the same 404.
pub async fn get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    Path(address): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let admin = caller.grants.iter().any(|g| g == "admin");
    let user = if admin {
        None
    } else {
        Some(
            crate::http::auth::user_session(&state, &caller, &headers)
                .await
                .map_err(fail)?
                .facts
                .user,
        )
    };
    let wallet = wallets::get(&state.store, &address)
        .await
        .map_err(fail)?
        .filter(|w| user.is_none_or(|u| u == w.owner))
        .ok_or_else(|| fail(Error::NotFound))?;
    Ok(json_answer(wallet.to_json(), &request_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    labels: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    frozen: Option<bool>,
    #[serde(default)]
    refresh_required: bool,
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    Path(address): Path<String>,
    StrictJson(req): StrictJson<Update>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let actor = Actor {
        who: caller.id.clone(),
        request_id: request_id.clone(),
    };
    let wallet = wallets::update(
        &state.store,
        Auditor::Log(&state.audit),
        &actor,
        &address,
        &WalletUpdate {
            labels: req.labels,
            groups: req.groups,
            frozen: req.frozen,
            refresh_required: req.refresh_required,
        },
        state.clock.now(),
    )
    .await
    .map_err(fail)?;
    Ok(json_answer(wallet.to_json(), &request_id))
}
