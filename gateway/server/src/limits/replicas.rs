//! The live-replica registry that divides the global rate limits: every process serving on one
//! database writes a heartbeat row every [`HEARTBEAT_EVERY`] and counts the rows seen within
//! [`ALIVE_FOR`]; its limits are then 1/N of the configured ones ([`super::Limits::set_replicas`],
//! docs/adr/0003-global-rate-limits.md). Times are the database's own clock, so replicas on hosts
//! whose clocks disagree still agree on who is alive. A replica that dies (even `kill -9`) stops
//! beating and drops out of everyone's count within [`ALIVE_FOR`], and the others take over
//! its share.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Limits;
use crate::audit::Store;
use crate::error::Result;
use crate::store::db::{BeginWrite, db};

/// How often a replica announces itself and recounts.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A replica not heard from for this long no longer counts.
pub const ALIVE_FOR: Duration = Duration::from_secs(3);

/// Rows of replicas gone this long are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// This instance's replica id, kept in `data_dir/replica-id` so that a process restarted on the
/// same data directory (after a crash, too) takes its own place again instead of counting as a
/// second replica until the old heartbeat expires. Without a readable or writable file, a fresh
/// id for this run.
pub fn own_id(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if id.starts_with("replica_") && id.len() <= 64 {
            return id.to_owned();
        }
    }
    let id = format!("replica_{}", uuid::Uuid::new_v4().simple());
    if let Err(error) = std::fs::write(&path, &id) {
        tracing::warn!(%error, path = %path.display(), "cannot keep the replica id");
    }
    id
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The registry's statements in one dialect: they differ only in how they read the database's
/// clock (milliseconds since the epoch).
struct Statements {
    announce: &'static str,
    forget: &'static str,
    count: &'static str,
}

const SQLITE: Statements = Statements {
    announce: "INSERT INTO replicas (id, seen_ms) VALUES ($1, CAST(unixepoch('subsec') * 1000 AS INTEGER)) ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
    forget: "DELETE FROM replicas WHERE seen_ms < CAST(unixepoch('subsec') * 1000 AS INTEGER) - $1",
    count: "SELECT COUNT(*) FROM replicas WHERE seen_ms > CAST(unixepoch('subsec') * 1000 AS INTEGER) - $1",
};

const POSTGRES: Statements = Statements {
    announce: "INSERT INTO replicas (id, seen_ms) VALUES ($1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT) ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
    forget: "DELETE FROM replicas WHERE seen_ms < (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - $1",
    count: "SELECT COUNT(*) FROM replicas WHERE seen_ms > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - $1",
};

/// Announces replica `id` and counts the live replicas, itself included (at least 1).
pub async fn beat(store: &Store, id: &str) -> Result<u32> {
    let sql = match store.backend() {
        crate::store::Backend::Sqlite => &SQLITE,
        crate::store::Backend::Postgres => &POSTGRES,
    };
    let count: i64 = crate::store::db::with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("replica heartbeat"))?;
        sqlx::query(sql.announce)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("replica heartbeat"))?;
        sqlx::query(sql.forget)
            .bind(ms(FORGET_AFTER))
            .execute(&mut *tx)
            .await
            .map_err(db("replica heartbeat"))?;
        let (n,): (i64,) = sqlx::query_as(sql.count)
            .bind(ms(ALIVE_FOR))
            .fetch_one(&mut *tx)
            .await
            .map_err(db("counting replicas"))?;
        tx.commit().await.map_err(db("replica heartbeat"))?;
        n
    });
    Ok(u32::try_from(count).unwrap_or(u32::MAX).max(1))
}

/// Beats as replica `id` every [`HEARTBEAT_EVERY`] and divides `limits` by the live count, for
/// as long as `limits` is alive. A heartbeat that fails keeps the last count (the database is
/// down; decisions fail closed on the audit log anyway).
pub fn spawn(store: Store, id: String, limits: &Arc<Limits>) {
    let weak: Weak<Limits> = Arc::downgrade(limits);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(limits) = weak.upgrade() else {
                break;
            };
            match beat(&store, &id).await {
                Ok(n) => limits.set_replicas(n),
                Err(error) => tracing::warn!(%error, "replica heartbeat failed"),
            }
        }
    });
}
