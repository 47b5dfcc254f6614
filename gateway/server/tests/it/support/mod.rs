//! Shared by the storage tests: one database per test, a SQLite file always and a fresh
//! PostgreSQL database when `PARAPET_TEST_POSTGRES_URL` is set.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use parapet_gateway::accounts::passkeys::{PasskeyConfig, Passkeys};
use parapet_gateway::audit::{AuditLog, Backend, Store, StoreOptions, WriterOptions};
use parapet_gateway::clock::FixedClock;
use parapet_testkit::postgres::TestDatabase;

/// The repository's root, where `policies/`, `schemas/` and `tests/` live.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL database that is
/// dropped by [`TestDb::drop_pg`].
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// Scratch space for the test (the SQLite file lives here too).
    pub dir: tempfile::TempDir,
    pg: Option<TestDatabase>,
}

impl TestDb {
    pub async fn drop_pg(&self) {
        if let Some(pg) = &self.pg {
            pg.drop_now().await;
        }
    }
}

/// Takes the write lock of the SQLite file at `path` on a connection of its own and returns that
/// connection: every other writer waits (or fails) until it commits or is dropped.
pub async fn hold_sqlite_write_lock(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE; INSERT INTO policy_blobs VALUES ('lock', x'00');")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

/// SQLite at `<dir>/<sqlite_file>`, then PostgreSQL if configured.
pub async fn databases(sqlite_file: &str) -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(sqlite_file).display());
    let mut out = vec![TestDb {
        url,
        backend: Backend::Sqlite,
        dir,
        pg: None,
    }];
    if let Some(pg) = TestDatabase::create("parapet_t").await {
        out.push(TestDb {
            url: pg.url.clone(),
            backend: Backend::Postgres,
            dir: tempfile::tempdir().unwrap(),
            pg: Some(pg),
        });
    } else {
        eprintln!("PARAPET_TEST_POSTGRES_URL not set: PostgreSQL half skipped");
    }
    out
}

/// The store, a running audit log on a clock fixed at `at`, and passkeys over both: where the
/// store-level tests of passkeys and of expiry start.
pub struct PasskeyRig {
    pub pk: Passkeys,
    pub log: Arc<AuditLog>,
    pub store: Store,
}

pub async fn passkey_rig(db: &TestDb, at: time::OffsetDateTime) -> PasskeyRig {
    let store = Store::open(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let log = Arc::new(
        AuditLog::start(
            store.clone(),
            WriterOptions::default(),
            None,
            Arc::new(FixedClock(at)),
        )
        .await
        .unwrap(),
    );
    let pk = Passkeys::new(&PasskeyConfig::default(), store.clone(), log.clone()).unwrap();
    PasskeyRig { pk, log, store }
}
