//! Turns committed audit events into webhook deliveries. The notifier reads the audit log after
//! its cursor, picks the security events, and for each one inserts a delivery for every app of
//! the event's user (see [`TARGETS_SQL`]) that registered a webhook — and
//! moves the cursor, all in one transaction. Two gateways doing this at once insert nothing
//! twice: deliveries are unique per (app, event) and the cursor moves only from where it was.

use serde_json::Value;
use time::OffsetDateTime;

use crate::audit::Store;
use crate::audit::event::format_time;
use crate::error::Result;
use crate::store::db::{BeginWrite, db, with_pool};

/// Audit actions that are notified, and the notification type apps receive.
pub const NOTIFIED: &[(&str, &str)] = &[
    ("recovery.open", "recovery.opened"),
    ("recovery.cancel", "recovery.cancelled"),
    ("recovery.complete", "recovery.completed"),
    ("recovery.setup", "recovery.secret_set"),
    ("totp.enrol", "totp.enrolled"),
    ("totp.remove", "totp.removed"),
    ("device.pair", "device.added"),
    ("device.add", "device.added"),
    ("device.revoke", "device.removed"),
    ("device.resync", "device.resynced"),
    ("kit.export", "kit.exported"),
    ("wallet.refresh", "wallet.refreshed"),
];

/// The same actions as [`NOTIFIED`], spelled into the statement (statements are static text;
/// a unit test keeps the two in step).
const EVENTS_SQL: &str = "SELECT seq, action, canonical, packed FROM audit_events WHERE action IN ('recovery.open', 'recovery.cancel', 'recovery.complete', 'recovery.setup', 'totp.enrol', 'totp.remove', 'device.pair', 'device.add', 'device.revoke', 'device.resync', 'kit.export', 'wallet.refresh') AND seq > $1 ORDER BY seq LIMIT 200";

/// `seq`, `action`, and the event's text as stored (`canonical`, `packed`).
type EventRow = (i64, Option<String>, String, Option<Vec<u8>>);

/// The apps told about a user's events — the user's apps: those the user ever had a session
/// with or holds an active consent for, and the app the event names — when they registered a
/// webhook and are not revoked. Ended sessions count: a recovery ends them all, and that is
/// exactly when the apps must hear of it.
const TARGETS_SQL: &str = "SELECT w.app_id FROM webhooks w JOIN apps a ON a.id = w.app_id WHERE a.revoked = FALSE AND (w.app_id = $2 OR EXISTS (SELECT 1 FROM sessions s WHERE s.app_id = w.app_id AND s.user_id = $1) OR EXISTS (SELECT 1 FROM consents c WHERE c.app_id = w.app_id AND c.user_id = $1 AND c.revoked_at IS NULL)) ORDER BY w.app_id";

fn notification_type(action: &str) -> Option<&'static str> {
    NOTIFIED.iter().find(|(a, _)| *a == action).map(|(_, t)| *t)
}

/// The body apps receive: the event's type, when, whose, and the audit record's own
/// allowlisted summary (which never holds a secret, code, share or ciphertext). `audit_seq`
/// lets an auditor find the record it came from.
fn payload(seq: i64, kind: &str, event: &Value) -> Value {
    let field = |k: &str| event.get(k).cloned().unwrap_or(Value::Null);
    serde_json::json!({
        "id": format!("evt_{seq}"),
        "type": kind,
        "created_at": field("time"),
        "user_id": field("user"),
        "wallet": field("wallet"),
        "audit_seq": seq,
        "data": field("request"),
    })
}

struct Pending {
    seq: i64,
    kind: &'static str,
    user: String,
    app: Option<String>,
    body: String,
}

fn new_delivery_id() -> String {
    format!("whd_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Reads the next security events after the cursor and queues their deliveries. Returns how
/// many deliveries were queued (0 also when another gateway got there first).
pub async fn enqueue(store: &Store, now: OffsetDateTime) -> Result<usize> {
    let now = format_time(now);
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("queueing webhooks"))?;
        let (cursor,): (i64,) = sqlx::query_as("SELECT seq FROM webhook_cursor WHERE id = 1")
            .fetch_one(&mut *tx).await.map_err(db("reading the webhook cursor"))?;
        let rows: Vec<EventRow> = sqlx::query_as(EVENTS_SQL)
            .bind(cursor).fetch_all(&mut *tx).await.map_err(db("reading audit events for webhooks"))?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(0);
        };
        let mut events = Vec::new();
        for (seq, action, text, packed) in rows {
            let Some(kind) = action.as_deref().and_then(notification_type) else { continue };
            let canonical = crate::audit::store::canonical_text(seq, text, packed.as_deref());
            let Ok(event) = serde_json::from_str::<Value>(&canonical) else {
                tracing::warn!(seq, "an audit event is not JSON; not notified");
                continue;
            };
            let Some(user) = event.get("user").and_then(Value::as_str).map(str::to_owned) else { continue };
            let app = event.get("app").and_then(Value::as_str).map(str::to_owned);
            events.push(Pending { seq, kind, user, app, body: payload(seq, kind, &event).to_string() });
        }
        let mut queued = 0;
        for e in &events {
            let apps: Vec<(String,)> = sqlx::query_as(TARGETS_SQL)
                .bind(e.user.as_str()).bind(e.app.as_deref().unwrap_or(""))
                .fetch_all(&mut *tx).await.map_err(db("finding webhook targets"))?;
            for (app,) in apps {
                queued += sqlx::query("INSERT INTO webhook_deliveries (id, app_id, event_seq, event_type, user_id, payload, status, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) ON CONFLICT (app_id, event_seq) DO NOTHING")
                    .bind(new_delivery_id()).bind(app.as_str()).bind(e.seq).bind(e.kind)
                    .bind(e.user.as_str()).bind(e.body.as_str()).bind(now.as_str())
                    .execute(&mut *tx).await.map_err(db("queueing a webhook"))?.rows_affected();
            }
        }
        let moved = sqlx::query("UPDATE webhook_cursor SET seq = $2 WHERE id = 1 AND seq = $1")
            .bind(cursor).bind(last).execute(&mut *tx).await.map_err(db("moving the webhook cursor"))?.rows_affected();
        if moved != 1 {
            // Another gateway moved it meanwhile: its transaction queued these.
            return Ok(0);
        }
        tx.commit().await.map_err(db("queueing webhooks"))?;
        Ok(usize::try_from(queued).unwrap_or(usize::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_selects_exactly_the_notified_actions() {
        for (action, _) in NOTIFIED {
            assert!(
                EVENTS_SQL.contains(&format!("'{action}'")),
                "{action} missing"
            );
        }
        assert_eq!(EVENTS_SQL.matches("', '").count() + 1, NOTIFIED.len());
    }

    #[test]
    fn the_payload_carries_the_audit_summary_and_nothing_else() {
        let event = serde_json::json!({
            "time": "2026-12-03T00:00:00.000000Z", "user": "u", "wallet": null,
            "request": {"recovery": "rec_1"}, "cedar_request": "not copied",
        });
        let body = payload(7, "recovery.opened", &event);
        assert_eq!(body["id"], "evt_7");
        assert_eq!(body["data"]["recovery"], "rec_1");
        assert!(!body.to_string().contains("not copied"));
    }
}
