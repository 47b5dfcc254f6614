//! What every table module shares to run one set of portable statements on SQLite and
//! PostgreSQL: the pool dispatch, the few typed column reads, and the error mapping.

use sqlx::Row;

use crate::error::Error;

/// Runs `$body` with `$pool` bound to whichever pool the store holds; the body is written once
/// and compiled for both databases.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::audit::Store::Sqlite($pool) => $body,
            $crate::audit::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Maps a database error to the crate's, naming what was being done (the detail stays in logs).
pub(crate) fn db(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| match e {
        // No connection came free in time: the store is overloaded, not broken (503, retry).
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            tracing::warn!(context, error = %e, "database pool exhausted");
            Error::StoreUnavailable
        }
        e => Error::Database(format!("{context}: {e}")),
    }
}

/// The few column reads shared by both databases' rows, so that a row mapper is written once.
pub(crate) trait RowLike {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
}

macro_rules! row_like {
    ($ty:ty) => {
        impl RowLike for $ty {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
                self.try_get(col)
            }
            fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
row_like!(sqlx::sqlite::SqliteRow);
row_like!(sqlx::postgres::PgRow);
