//! Security notifications (webhooks): an app registers one HTTPS URL and is told when something
//! happens to the security of one of its users — a recovery opened, cancelled or completed, a
//! device added, removed or re-synced, a backup kit exported, a wallet's shares refreshed — so
//! that it can tell the user by mail or push.
//!
//! Notifications are derived from the audit log ([`notifier`]): an event that was committed is
//! notified even when the gateway stops right after it. Each (app, event) becomes one delivery
//! row, sent by [`delivery`] with an HMAC signature ([`signature`]), retried with exponential
//! backoff until the receiver answers 2xx (at least once), and visible to admins.

pub mod delivery;
pub mod notifier;
pub mod signature;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::accounts::apps::{Actor, Auditor};
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::custody::sealing::PersonalDataKey;
use crate::error::{Error, Result};
use crate::store::db::{RowLike, db, with_pool};

pub use parapet_api::admin::Webhook;

fn secret_aad(app_id: &str) -> Vec<u8> {
    format!("webhook:{app_id}").into_bytes()
}

fn admin_event(
    actor: &Actor,
    action: &str,
    app_id: &str,
    detail: serde_json::Value,
    now: OffsetDateTime,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Admin, now, actor.request_id.clone());
    e.app = Some(app_id.to_owned());
    e.action = Some(action.to_owned());
    e.request = Some(serde_json::json!({"actor": actor.who, "detail": detail}));
    e
}

/// Registers (or replaces) `app_id`'s webhook and returns it with a new signing secret, shown
/// only now: registering again rotates the secret. HTTPS only (plain HTTP to loopback for tests);
/// each delivery then connects only to public or allowlisted addresses ([`crate::outbound`]).
/// Audited before it is stored.
pub async fn register(
    store: &Store,
    auditor: Auditor<'_>,
    key: &PersonalDataKey,
    actor: &Actor,
    app_id: &str,
    url: &str,
    now: OffsetDateTime,
) -> Result<(Webhook, Zeroizing<String>)> {
    crate::accounts::users::oidc::check_url(url, "webhook URL")?;
    let secret = Zeroizing::new(format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>())));
    let sealed = key.seal_personal(secret.as_bytes(), &secret_aad(app_id))?;
    auditor
        .record(admin_event(
            actor,
            "webhook.register",
            app_id,
            serde_json::json!({"url": url}),
            now,
        ))
        .await?;
    let hook = Webhook {
        app_id: app_id.to_owned(),
        url: url.to_owned(),
        created_at: format_time(now),
    };
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO webhooks (app_id, url, sealed_secret, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (app_id) DO UPDATE SET url = excluded.url, sealed_secret = excluded.sealed_secret, created_at = excluded.created_at")
            .bind(app_id).bind(url).bind(sealed.as_slice()).bind(hook.created_at.as_str())
            .execute(pool).await.map_err(db("storing a webhook"))?;
    });
    Ok((hook, secret))
}

/// Removes `app_id`'s webhook; its pending deliveries then fail with `webhook_removed`.
pub async fn remove(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    app_id: &str,
    now: OffsetDateTime,
) -> Result<()> {
    if get(store, app_id).await?.is_none() {
        return Err(Error::NotFound);
    }
    auditor
        .record(admin_event(
            actor,
            "webhook.remove",
            app_id,
            serde_json::json!({}),
            now,
        ))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM webhooks WHERE app_id = $1")
            .bind(app_id).execute(pool).await.map_err(db("removing a webhook"))?;
    });
    Ok(())
}

/// `app_id`'s webhook, if it registered one.
pub async fn get(store: &Store, app_id: &str) -> Result<Option<Webhook>> {
    let row: Option<(String, String)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT url, created_at FROM webhooks WHERE app_id = $1")
            .bind(app_id).fetch_optional(pool).await.map_err(db("reading a webhook"))?
    });
    Ok(row.map(|(url, created_at)| Webhook {
        app_id: app_id.to_owned(),
        url,
        created_at,
    }))
}

/// The URL and opened signing secret deliveries use.
pub(crate) async fn target(
    store: &Store,
    key: &PersonalDataKey,
    app_id: &str,
) -> Result<Option<(String, Zeroizing<Vec<u8>>)>> {
    let row: Option<(String, Vec<u8>)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT url, sealed_secret FROM webhooks WHERE app_id = $1")
            .bind(app_id).fetch_optional(pool).await.map_err(db("reading a webhook"))?
    });
    row.map(|(url, sealed)| Ok((url, key.open_personal(&sealed, &secret_aad(app_id))?)))
        .transpose()
}

pub use parapet_api::admin::{DeliveryStatus, WebhookDelivery as Delivery};

fn delivery_row(r: &impl RowLike) -> std::result::Result<Delivery, sqlx::Error> {
    // A status this gateway does not write reads as failed.
    let status = DeliveryStatus::from_name(&r.text("status")?).unwrap_or(DeliveryStatus::Failed);
    let pending = status == DeliveryStatus::Pending;
    Ok(Delivery {
        id: r.text("id")?,
        app_id: r.text("app_id")?,
        event_seq: r.int("event_seq")?,
        event_type: r.text("event_type")?,
        user_id: r.text("user_id")?,
        status,
        attempts: r.int("attempts")?,
        next_attempt_at: if pending {
            Some(r.text("next_attempt_at")?)
        } else {
            None
        },
        last_status: r.opt_int("last_status")?,
        last_error: r
            .opt_text("last_error")?
            .map(|e| delivery::FailureKind::shown(&e).to_owned()),
        created_at: r.text("created_at")?,
        delivered_at: r.opt_text("delivered_at")?,
    })
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub app_id: Option<String>,
    pub status: Option<String>,
    pub limit: u32,
}

/// The newest deliveries matching `filter`, newest first.
pub async fn deliveries(store: &Store, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
    if let Some(s) = &filter.status
        && DeliveryStatus::from_name(s).is_none()
    {
        return Err(Error::InvalidRequest(
            "status must be pending, delivered or failed".to_owned(),
        ));
    }
    let limit = i64::from(filter.limit.clamp(1, 500));
    with_pool!(store, pool => {
        let rows = sqlx::query("SELECT id, app_id, event_seq, event_type, user_id, status, CAST(attempts AS BIGINT) AS attempts, next_attempt_at, CAST(last_status AS BIGINT) AS last_status, last_error, created_at, delivered_at FROM webhook_deliveries WHERE ($1 IS NULL OR app_id = $1) AND ($2 IS NULL OR status = $2) ORDER BY created_at DESC, event_seq DESC LIMIT $3")
            .bind(filter.app_id.as_deref()).bind(filter.status.as_deref()).bind(limit)
            .fetch_all(pool).await.map_err(db("listing webhook deliveries"))?;
        Ok(rows.iter().map(delivery_row).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing webhook deliveries"))?)
    })
}

/// Sends a delivery again from its first attempt (an admin, after fixing the receiver).
pub async fn redeliver(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    id: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let app: Option<(String,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT app_id FROM webhook_deliveries WHERE id = $1")
            .bind(id).fetch_optional(pool).await.map_err(db("reading a webhook delivery"))?
    });
    let (app_id,) = app.ok_or(Error::NotFound)?;
    auditor
        .record(admin_event(
            actor,
            "webhook.redeliver",
            &app_id,
            serde_json::json!({"delivery": id}),
            now,
        ))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_until = NULL WHERE id = $1")
            .bind(id).bind(format_time(now)).execute(pool).await.map_err(db("redelivering a webhook"))?;
    });
    Ok(())
}
