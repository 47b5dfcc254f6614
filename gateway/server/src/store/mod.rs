//! The database: one pool, SQLite or PostgreSQL, opened and migrated here. Every table module
//! takes a [`Store`] (through `AppState::store`); the audit log is one of them, with its own
//! statements in `audit::store`.

pub(crate) mod db;
mod error;

pub use error::StoreError;
pub mod expiry;

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Error, Result};
use crate::store::db::with_pool;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::Database(format!("{context}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Longest wait for a pooled connection, a SQLite write lock or a PostgreSQL statement.
    pub timeout: Duration,
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_secs(2),
            max_connections: 8,
        }
    }
}

/// An open, migrated store.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Store {
    /// Opens (creating a SQLite file and its directory when missing) and migrates the store
    /// named by `url`. SQLite must run in WAL mode with `synchronous=FULL`: both are read back,
    /// and a store that does not confirm them is refused, because an acknowledged event must
    /// survive a power cut.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Store> {
        if url.starts_with("sqlite:") {
            Self::open_sqlite(url, opts).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url, opts).await
        } else {
            Err(Error::Config(
                "database_url must start with sqlite:// or postgres://".to_owned(),
            ))
        }
    }

    async fn open_sqlite(url: &str, opts: &StoreOptions) -> Result<Store> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("database_url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(opts.timeout)
            .foreign_keys(true)
            .log_statements(tracing::log::LevelFilter::Trace);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Config(format!("creating {}: {e}", dir.display())))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(opts.timeout)
            .connect_with(options)
            .await
            .map_err(db("opening the SQLite store"))?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .map_err(db("reading journal_mode"))?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&pool)
            .await
            .map_err(db("reading synchronous"))?;
        if !journal.eq_ignore_ascii_case("wal") || synchronous != 2 {
            return Err(Error::Config(format!(
                "SQLite store must run with journal_mode=WAL and synchronous=FULL, but it reports journal_mode={journal} synchronous={synchronous}; refusing to start"
            )));
        }
        SQLITE_MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::Database(format!("migrating: {e}")))?;
        Ok(Store::Sqlite(pool))
    }

    async fn open_postgres(url: &str, opts: &StoreOptions) -> Result<Store> {
        let statement_timeout = opts.timeout.as_millis().max(1).to_string();
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("database_url: {e}")))?
            .options([
                ("statement_timeout", statement_timeout.as_str()),
                ("lock_timeout", statement_timeout.as_str()),
            ])
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(opts.timeout)
            .connect_with(options)
            .await
            .map_err(db("connecting to PostgreSQL"))?;
        POSTGRES_MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::Database(format!("migrating: {e}")))?;
        Ok(Store::Postgres(pool))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
