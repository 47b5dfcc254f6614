//! Wallets over the API: the session user's wallets and one wallet (its owner, or any admin
//! key), and the admin changes (labels, groups, frozen, `refresh_required`). Ownership is checked
//! here, in code, never left to an id being hard to guess.

use parapet_api::wallets::{WalletAnswer, WalletList};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accounts::apps::{Actor, Auditor};
use crate::accounts::wallets::{self, WalletUpdate};
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{AppSession, StrictJson};
use crate::http::request_id::ReqId;

type Answer = Result<Response, ApiError>;

#[utoipa::path(
    get,
    path = "/v1/wallets",
    operation_id = "wallets_list",
    summary = "The session user's wallets",
    description = "Oldest first.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
    ),
    responses(
        (status = 200, description = "{wallets: [{address, owner, created_at, epoch, labels, groups, frozen, refresh_required}], request_id}", body = WalletList),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
    ),
)]
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
        .map(wallets::StoredWallet::view)
        .collect();
    Ok(Json(WalletList {
        wallets: list,
        request_id,
    })
    .into_response())
}

/// One wallet: for an admin key, any; otherwise only with the owner's session. Someone else's
/// wallet and no wallet at all get the same 404.
#[utoipa::path(
    get,
    path = "/v1/wallets/{address}",
    operation_id = "wallets_get",
    summary = "One wallet",
    description = "With the owner's session, or with an admin key (any wallet). Someone else's wallet and no wallet get the same 404.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("sign"))),
    params(
        crate::http::openapi_parts::SessionToken,
        ("address" = String, Path, pattern = "^0[xX][0-9a-fA-F]{40}$"),
    ),
    responses(
        (status = 200, description = "{address, owner, created_at, epoch, labels, groups, frozen, refresh_required, request_id}", body = WalletAnswer),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
        (status = 503, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
    ),
)]
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
    Ok(Json(WalletAnswer {
        wallet: wallet.view(),
        request_id,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    labels: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    frozen: Option<bool>,
    #[serde(default)]
    refresh_required: bool,
}

#[utoipa::path(
    post,
    path = "/v1/admin/wallets/{address}/update",
    operation_id = "wallets_update",
    summary = "Change a wallet's labels, groups, frozen flag, or mark it refresh_required",
    description = "Admins only. Audited first (kind `admin`, action `wallet.update`, with the wallet before and after). `refresh_required` can only be set: the owner's refresh clears it. The shipped forbid denies frozen wallets.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("admin"))),
    params(
        ("address" = String, Path),
    ),
    request_body(content = inline(Update)),
    responses(
        (status = 200, description = "The wallet after the change.", body = WalletAnswer),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 404, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
    ),
)]
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
    // This process's decisions see the change before the answer does (should the feed not read
    // now, the directory's follower reads it within a fraction of a second).
    if let Err(error) = state.wallet_directory.catch_up(&state.store).await {
        tracing::warn!(%error, "the wallet directory did not catch up after a change");
    }
    Ok(Json(WalletAnswer {
        wallet: wallet.view(),
        request_id,
    })
    .into_response())
}
