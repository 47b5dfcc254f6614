//! Fresh PostgreSQL databases for tests, on the server `PARAPET_TEST_POSTGRES_URL` names.

use sqlx::Connection;

/// The variable that names a PostgreSQL server for tests (any database on it; tests create and
/// drop their own).
pub const URL_VAR: &str = "PARAPET_TEST_POSTGRES_URL";

/// `postgres://user@host/db?params` with the database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
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

/// A database created for one test; [`TestDatabase::drop_now`] removes it.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL a gateway or a store connects to.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// A fresh database named `<prefix>_<random>`, or `None` when no server is configured.
    pub async fn create(prefix: &str) -> Option<TestDatabase> {
        let server = std::env::var(URL_VAR).ok()?;
        let admin = with_database(&server, "postgres");
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{URL_VAR}: cannot connect: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        Some(TestDatabase {
            url: with_database(&server, &name),
            admin,
            name,
        })
    }

    /// Drops the database, closing whatever still connects to it.
    pub async fn drop_now(&self) {
        if let Ok(mut c) = sqlx::PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await;
        }
    }
}
