//! Users' consent to apps' scopes (docs/architecture.md §3).
//!
//! A user approves, per app, the required scopes offered to it and any optional ones. The
//! approval is stored against the app's consent hash ([`LoadedPolicies::consent_hash`]): when
//! the scopes offered to the app, their required flags or their permits change, the hash
//! changes and the stored consent no longer counts until the user approves again. Editing a
//! scope's name or description keeps it.
//!
//! Every approval and revocation is committed to the audit log (kind `consent`, action
//! `approve` or `revoke`) before the change is made: a change that cannot be recorded is not
//! made. The store keeps one row per (user, app); the audit log keeps the history.
//!
//! What a decision for a user evaluates: the forbids, and the permits of the scopes in
//! [`approved_scopes`] — `basic` alone without a user, or without a current consent.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::apps::Auditor;
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::error::{Error, Result};
use crate::policy::{BASIC_SCOPE, LoadedPolicies};
use crate::records::AppRecord;
use crate::store::db::{db, with_pool};

/// A stored, unrevoked consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consent {
    pub user: Uuid,
    pub app: String,
    /// Approved scope ids, sorted.
    pub scopes: Vec<String>,
    /// The consent hash they were approved under.
    pub hash: String,
    /// RFC 3339 (see [`format_time`]).
    pub granted_at: String,
}

/// What [`current`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentState {
    /// Approved under the current hash: it counts.
    Current(Consent),
    /// Approved under another hash: it does not count until the user approves again.
    NeedsReconsent(Consent),
}

impl ConsentState {
    pub fn needs_reconsent(&self) -> bool {
        matches!(self, ConsentState::NeedsReconsent(_))
    }
    pub fn consent(&self) -> &Consent {
        match self {
            ConsentState::Current(c) | ConsentState::NeedsReconsent(c) => c,
        }
    }
}

/// Where a consent change is recorded and which request made it.
#[derive(Debug, Clone, Copy)]
pub struct ConsentCtx<'a> {
    pub store: &'a Store,
    pub auditor: Auditor<'a>,
    pub request_id: &'a str,
    pub now: OffsetDateTime,
}

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

type Row = (String, String, String, Option<String>);

/// The row for (user, app), revoked or not.
async fn row(store: &Store, user: Uuid, app: &str) -> Result<Option<Row>> {
    const SQL: &str = "SELECT scopes, consent_hash, granted_at, revoked_at FROM consents WHERE user_id = $1 AND app_id = $2";
    let user = user.to_string();
    with_pool!(store, pool => {
        Ok(sqlx::query_as::<_, Row>(SQL)
            .bind(user.as_str())
            .bind(app)
            .fetch_optional(pool)
            .await
            .map_err(db("reading a consent"))?)
    })
}

fn consent_of(user: Uuid, app: &str, (scopes, hash, granted_at, _): Row) -> Consent {
    Consent {
        user,
        app: app.to_owned(),
        scopes: split(&scopes),
        hash,
        granted_at,
    }
}

/// The event recorded before a consent change. `detail` holds scope ids and hashes only.
fn event(
    cx: &ConsentCtx<'_>,
    action: &str,
    user: Uuid,
    app: &str,
    detail: serde_json::Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Consent, cx.now, cx.request_id);
    e.user = Some(user.to_string());
    e.app = Some(app.to_owned());
    e.action = Some(action.to_owned());
    e.request = Some(detail);
    e
}

fn previous_json(prev: Option<&Row>) -> serde_json::Value {
    match prev {
        None => serde_json::Value::Null,
        Some((scopes, hash, granted_at, revoked_at)) => serde_json::json!({
            "scopes": split(scopes),
            "consent_hash": hash,
            "granted_at": granted_at,
            "revoked_at": revoked_at,
        }),
    }
}

/// Stores `user`'s approval of `scopes` for `app` under `hash`, replacing any earlier one. Does
/// not check the scopes against the policy set: [`approve_offered`] does.
pub async fn approve(
    cx: &ConsentCtx<'_>,
    user: Uuid,
    app: &str,
    scopes: &[String],
    hash: &str,
) -> Result<Consent> {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(',')) {
        return Err(Error::InvalidRequest(format!("invalid scope id {bad:?}")));
    }
    let prev = row(cx.store, user, app).await?;
    let consent = Consent {
        user,
        app: app.to_owned(),
        scopes,
        hash: hash.to_owned(),
        granted_at: format_time(cx.now),
    };
    let detail = serde_json::json!({
        "scopes": consent.scopes,
        "consent_hash": consent.hash,
        "previous": previous_json(prev.as_ref()),
    });
    cx.auditor
        .record(event(cx, "approve", user, app, detail))
        .await?;
    let user_s = user.to_string();
    with_pool!(cx.store, pool => {
        sqlx::query("INSERT INTO consents (user_id, app_id, scopes, consent_hash, granted_at, revoked_at) VALUES ($1, $2, $3, $4, $5, NULL) ON CONFLICT (user_id, app_id) DO UPDATE SET scopes = excluded.scopes, consent_hash = excluded.consent_hash, granted_at = excluded.granted_at, revoked_at = NULL")
            .bind(user_s.as_str())
            .bind(app)
            .bind(consent.scopes.join(","))
            .bind(consent.hash.as_str())
            .bind(consent.granted_at.as_str())
            .execute(pool)
            .await
            .map_err(db("storing a consent"))?;
    });
    Ok(consent)
}

/// Revokes `user`'s consent to `app`. Returns false (and records nothing) when there was no
/// unrevoked consent.
pub async fn revoke(cx: &ConsentCtx<'_>, user: Uuid, app: &str) -> Result<bool> {
    let prev = row(cx.store, user, app).await?;
    if prev.as_ref().is_none_or(|r| r.3.is_some()) {
        return Ok(false);
    }
    let detail = serde_json::json!({ "previous": previous_json(prev.as_ref()) });
    cx.auditor
        .record(event(cx, "revoke", user, app, detail))
        .await?;
    let (user_s, at) = (user.to_string(), format_time(cx.now));
    with_pool!(cx.store, pool => {
        sqlx::query("UPDATE consents SET revoked_at = $3 WHERE user_id = $1 AND app_id = $2 AND revoked_at IS NULL")
            .bind(user_s.as_str())
            .bind(app)
            .bind(at.as_str())
            .execute(pool)
            .await
            .map_err(db("revoking a consent"))?;
    });
    Ok(true)
}

/// `user`'s unrevoked consent to `app`, and whether it was given under `current_hash`.
pub async fn current(
    store: &Store,
    user: Uuid,
    app: &str,
    current_hash: &str,
) -> Result<Option<ConsentState>> {
    let Some(r) = row(store, user, app).await? else {
        return Ok(None);
    };
    if r.3.is_some() {
        return Ok(None);
    }
    let c = consent_of(user, app, r);
    Ok(Some(if c.hash == current_hash {
        ConsentState::Current(c)
    } else {
        ConsentState::NeedsReconsent(c)
    }))
}

/// [`approve`] after checking the request against the policy set: `hash` must be the app's
/// current consent hash (the user saw the scopes as they are now), every scope must be
/// offered to the app, and the required ones are added.
pub async fn approve_offered(
    cx: &ConsentCtx<'_>,
    policies: &LoadedPolicies,
    app: &AppRecord,
    user: Uuid,
    scopes: &[String],
    hash: &str,
) -> Result<Consent> {
    let current_hash = policies.consent_hash(app)?;
    if hash != current_hash {
        return Err(Error::InvalidRequest(
            "the app's scopes changed since they were shown; show them again".to_owned(),
        ));
    }
    let offered: Vec<(&str, bool)> = policies
        .offered_scopes(app)
        .map(|(id, d)| (id, d.required))
        .collect();
    if let Some(bad) = scopes
        .iter()
        .find(|s| !offered.iter().any(|(id, _)| id == s))
    {
        return Err(Error::InvalidRequest(format!(
            "scope {bad:?} is not offered to this app"
        )));
    }
    let mut all: Vec<String> = scopes.to_vec();
    all.extend(
        offered
            .iter()
            .filter(|(_, required)| *required)
            .map(|(id, _)| (*id).to_owned()),
    );
    approve(cx, user, &app.id, &all, &current_hash).await
}

pub use parapet_api::consent::{OfferedScope, ScopesView};

/// The scopes that count for decisions by `app` for `user`: `basic` alone without a user or
/// without a current consent; otherwise the approved scopes still offered to the app plus the
/// required ones. Pass the result to [`crate::service::pipeline::evaluate`].
pub async fn approved_scopes(
    store: &Store,
    policies: &LoadedPolicies,
    app: &AppRecord,
    user: Option<Uuid>,
) -> Result<Vec<String>> {
    let Some(user) = user else {
        return Ok(vec![BASIC_SCOPE.to_owned()]);
    };
    let hash = policies.consent_hash(app)?;
    Ok(effective(
        policies,
        app,
        current(store, user, &app.id, &hash).await?.as_ref(),
    ))
}

fn effective(
    policies: &LoadedPolicies,
    app: &AppRecord,
    state: Option<&ConsentState>,
) -> Vec<String> {
    match state {
        Some(ConsentState::Current(c)) => policies
            .offered_scopes(app)
            .filter(|(id, d)| d.required || c.scopes.iter().any(|s| s == id))
            .map(|(id, _)| id.to_owned())
            .collect(),
        _ => vec![BASIC_SCOPE.to_owned()],
    }
}

/// The scopes offered to `app` with their names, descriptions and flags, which of them apply
/// to `user`'s decisions now, whether the user must be asked, and the hash an approval must
/// carry. Without a user only `basic` applies and nobody is asked.
pub async fn scopes_for(
    store: &Store,
    policies: &LoadedPolicies,
    app: &AppRecord,
    user: Option<Uuid>,
) -> Result<ScopesView> {
    let hash = policies.consent_hash(app)?;
    let (approved, needs_consent) = match user {
        None => (vec![BASIC_SCOPE.to_owned()], false),
        Some(user) => {
            let state = current(store, user, &app.id, &hash).await?;
            let needs = state.as_ref().is_none_or(ConsentState::needs_reconsent);
            (effective(policies, app, state.as_ref()), needs)
        }
    };
    let scopes = policies
        .offered_scopes(app)
        .map(|(id, d)| OfferedScope {
            id: id.to_owned(),
            name: d.name.clone(),
            description: d.description.clone(),
            required: d.required,
            approved: approved.iter().any(|a| a == id),
        })
        .collect();
    Ok(ScopesView {
        scopes,
        needs_consent,
        consent_hash: hash,
    })
}

/// Every unrevoked consent of `user`, by app id.
pub async fn of_user(store: &Store, user: Uuid) -> Result<Vec<Consent>> {
    const SQL: &str = "SELECT app_id, scopes, consent_hash, granted_at, revoked_at FROM consents WHERE user_id = $1 AND revoked_at IS NULL ORDER BY app_id";
    let user_s = user.to_string();
    let rows = with_pool!(store, pool => {
        sqlx::query_as::<_, (String, String, String, String, Option<String>)>(SQL)
            .bind(user_s.as_str())
            .fetch_all(pool)
            .await
            .map_err(db("reading consents"))?
    });
    Ok(rows
        .into_iter()
        .map(|(app, scopes, hash, granted, revoked)| {
            consent_of(user, &app, (scopes, hash, granted, revoked))
        })
        .collect())
}
