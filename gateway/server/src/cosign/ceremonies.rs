//! The record of every ceremony (docs/architecture.md §6): its execution id is stored under a
//! primary key before the first protocol message, so an id can never serve two ceremonies; how it
//! ended is written when it ends.

use parapet_mpc::SessionId;
use time::OffsetDateTime;

use super::stamp;
use crate::audit::Store;
use crate::error::{Error, Result};
use crate::store::db::with_pool;

/// What a ceremony is for.
#[derive(Debug, Clone, Copy)]
pub struct Begin<'a> {
    pub kind: &'a str,
    pub device_id: &'a str,
    pub wallet: Option<&'a str>,
    pub signing_request: Option<&'a str>,
}

/// The ceremony's row, inserted under its execution id (the primary key).
pub(crate) const INSERT_SQL: &str = "INSERT INTO ceremonies (execution_id, kind, device_id, wallet, signing_request, started_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (execution_id) DO NOTHING";

/// Runs [`INSERT_SQL`] for `what` on `$conn` (a pool or a transaction of either database) and
/// evaluates to the rows inserted.
macro_rules! insert_ceremony {
    ($conn:expr, $id:expr, $what:expr, $now:expr) => {
        sqlx::query($crate::cosign::ceremonies::INSERT_SQL)
            .bind($id)
            .bind($what.kind)
            .bind($what.device_id)
            .bind($what.wallet)
            .bind($what.signing_request)
            .bind($now)
            .execute($conn)
            .await
            .map_err($crate::store::db::db("recording a ceremony"))?
            .rows_affected()
    };
}
pub(crate) use insert_ceremony;

/// An execution id seen before: the ceremony must not run.
pub(crate) fn reused() -> Error {
    Error::Internal("a ceremony execution id came up twice".to_owned())
}

/// Records a new ceremony; refuses an execution id that was ever used.
pub async fn begin(
    store: &Store,
    execution: &SessionId,
    what: Begin<'_>,
    now: OffsetDateTime,
) -> Result<()> {
    let id = hex::encode(execution.as_bytes());
    let done = with_pool!(store, pool => insert_ceremony!(pool, id.as_str(), what, stamp(now)));
    if done != 1 {
        return Err(reused());
    }
    Ok(())
}

/// Records how a ceremony ended (`ok`, or the error code).
pub async fn end(store: &Store, execution: &SessionId, outcome: &str, now: OffsetDateTime) {
    let id = hex::encode(execution.as_bytes());
    let r = with_pool!(store, pool => {
        sqlx::query("UPDATE ceremonies SET ended_at = $2, outcome = $3 WHERE execution_id = $1 AND ended_at IS NULL")
            .bind(id.as_str())
            .bind(stamp(now))
            .bind(outcome)
            .execute(pool).await.map(|_| ())
    });
    if let Err(error) = r {
        tracing::warn!(%error, "recording the end of a ceremony failed");
    }
}
