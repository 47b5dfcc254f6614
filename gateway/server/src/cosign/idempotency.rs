//! Idempotency keys of signing requests (docs/architecture.md §6): scoped to (app, wallet), claimed
//! atomically by the table's primary key, bound to the SHA-256 of the body's RFC 8785 form and
//! kept 24 hours.

use time::{Duration, OffsetDateTime};

use super::stamp;
use crate::audit::Store;
use crate::error::{Error, Result};
use crate::store::db::{db, with_pool};

/// How long a key stays bound.
pub const KEEP: Duration = Duration::hours(24);

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: go on with `request_id`.
    New,
    /// An earlier request used it: same body → answer with that request; another body → 409.
    Existing {
        body_hash: String,
        request_id: String,
    },
}

/// The header's value, checked: 1–255 printable ASCII characters.
pub fn check_key(value: Option<&str>) -> Result<&str> {
    match value {
        Some(k)
            if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            Ok(k)
        }
        _ => Err(Error::IdempotencyKeyRequired),
    }
}

/// Claims `key` for `request_id`, or reports who has it.
pub async fn claim(
    store: &Store,
    scope: (&str, &str),
    key: &str,
    body_hash: &str,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Claim> {
    let (app, wallet) = scope;
    let stale = stamp(now - KEEP);
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM idempotency_keys WHERE app_id = $1 AND wallet = $2 AND key = $3 AND created_at <= $4")
            .bind(app).bind(wallet).bind(key).bind(stale.as_str())
            .execute(pool).await.map_err(db("expiring an idempotency key"))?;
        let inserted = sqlx::query("INSERT INTO idempotency_keys (app_id, wallet, key, body_hash, request_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_id, wallet, key) DO NOTHING")
            .bind(app).bind(wallet).bind(key).bind(body_hash).bind(request_id).bind(stamp(now))
            .execute(pool).await.map_err(db("claiming an idempotency key"))?.rows_affected();
        if inserted == 1 {
            return Ok(Claim::New);
        }
        let (body_hash, request_id): (String, String) = sqlx::query_as("SELECT body_hash, request_id FROM idempotency_keys WHERE app_id = $1 AND wallet = $2 AND key = $3")
            .bind(app).bind(wallet).bind(key)
            .fetch_one(pool).await.map_err(db("reading an idempotency key"))?;
        Ok(Claim::Existing { body_hash, request_id })
    })
}

/// Gives a key back after its request failed before anything was decided (a retry may then use
/// it again).
pub async fn release(store: &Store, scope: (&str, &str), key: &str, request_id: &str) {
    let (app, wallet) = scope;
    let r = with_pool!(store, pool => {
        sqlx::query("DELETE FROM idempotency_keys WHERE app_id = $1 AND wallet = $2 AND key = $3 AND request_id = $4")
            .bind(app).bind(wallet).bind(key).bind(request_id)
            .execute(pool).await.map(|_| ())
    });
    if let Err(error) = r {
        tracing::warn!(%error, "releasing an idempotency key failed");
    }
}
