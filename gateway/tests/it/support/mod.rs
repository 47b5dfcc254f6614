//! Shared by the storage tests: one database per test, a SQLite file always and a fresh
//! PostgreSQL database when `PARAPET_TEST_POSTGRES_URL` is set.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use parapet_gateway::audit::Backend;
use sqlx::Connection;

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL database that is
/// dropped by [`TestDb::drop_pg`].
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// Scratch space for the test (the SQLite file lives here too).
    pub dir: tempfile::TempDir,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    pub async fn drop_pg(&self) {
        if let Some((admin, name)) = &self.pg_admin
            && let Ok(mut c) = sqlx::PgConnection::connect(admin).await
        {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await;
        }
    }
}

/// `postgres://user@host/db?params` with the database replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").unwrap() + 3;
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// SQLite at `<dir>/<sqlite_file>`, then PostgreSQL if configured.
pub async fn databases(sqlite_file: &str) -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(sqlite_file).display());
    let mut out = vec![TestDb {
        url,
        backend: Backend::Sqlite,
        dir,
        pg_admin: None,
    }];
    if let Ok(pg) = std::env::var("PARAPET_TEST_POSTGRES_URL") {
        let admin = with_database(&pg, "postgres");
        let name = format!("parapet_t_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PARAPET_TEST_POSTGRES_URL: cannot connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        out.push(TestDb {
            url: with_database(&pg, &name),
            backend: Backend::Postgres,
            dir: tempfile::tempdir().unwrap(),
            pg_admin: Some((admin, name)),
        });
    } else {
        eprintln!("PARAPET_TEST_POSTGRES_URL not set: PostgreSQL half skipped");
    }
    out
}
