//! Shared by the storage tests: one database per test, a SQLite file always and a fresh
//! PostgreSQL database when `PARAPET_TEST_POSTGRES_URL` is set.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use parapet_gateway::audit::Backend;
use parapet_testkit::postgres::TestDatabase;

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
