//! One-time state past its lifetime is deleted on a timer. Passkey ceremonies (registration,
//! login, step-up), hand-off login codes, device pairing codes and OIDC nonces are each useless
//! after `expires_at` (every reader checks it), but a row nobody finishes stays until something
//! deletes it, and some of these can be created by anyone who reaches the page. Some are swept
//! when a new one of their kind is made; this sweep makes the bound hold when none is, so that
//! the tables hold at most what was started within one lifetime (which the per-IP quotas
//! bound).

use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::Store;
use crate::audit::event::format_time;
use crate::clock::SharedClock;
use crate::error::Result;
use crate::store::db::{db, with_pool};

/// How often [`spawn`]'s task sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Each table and the statement that deletes its expired rows (the comparison each table's
/// readers use: a row is gone only once no reader would accept it).
const TABLES: &[(&str, &str)] = &[
    (
        "passkey_ceremonies",
        "DELETE FROM passkey_ceremonies WHERE expires_at < $1",
    ),
    (
        "login_codes",
        "DELETE FROM login_codes WHERE expires_at < $1",
    ),
    (
        "device_pairings",
        "DELETE FROM device_pairings WHERE expires_at < $1",
    ),
    (
        "oidc_nonces",
        "DELETE FROM oidc_nonces WHERE expires_at <= $1",
    ),
];

/// Deletes every row that expired before `now`; returns how many per table, in [`TABLES`]
/// order.
pub async fn sweep(store: &Store, now: OffsetDateTime) -> Result<Vec<(&'static str, u64)>> {
    let now = format_time(now);
    let mut swept = Vec::with_capacity(TABLES.len());
    for (table, sql) in TABLES {
        let n = with_pool!(store, pool => {
            sqlx::query(*sql)
                .bind(now.as_str())
                .execute(pool)
                .await
                .map_err(db("sweeping expired rows"))?
                .rows_affected()
        });
        swept.push((*table, n));
    }
    Ok(swept)
}

/// Sweeps every `every` with `clock`'s time until the process ends. A failed sweep is logged
/// and tried again at the next tick.
pub fn spawn(store: Store, clock: SharedClock, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep(&store, clock.now()).await {
                Ok(swept) => {
                    for (table, n) in swept.into_iter().filter(|(_, n)| *n > 0) {
                        tracing::debug!(table, rows = n, "expired rows deleted");
                    }
                }
                Err(error) => tracing::warn!(%error, "sweeping expired rows failed"),
            }
        }
    });
}
