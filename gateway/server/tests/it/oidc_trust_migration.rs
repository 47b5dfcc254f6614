//! Migration 0020 binds each existing OIDC identity to the key source it can be attributed to:
//! the app whose login created it (or the user's earliest OIDC session's app), else the one
//! source every app trusting the issuer uses, else `none:`. A store is built at 0018 from the
//! migration files, filled as an older gateway would have left it, then opened (which migrates).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use crate::support;
use std::path::Path;

use parapet_gateway::accounts::users::store::{self, Identity};
use parapet_gateway::audit::{Backend, Store, StoreOptions};
use sqlx::ConnectOptions;
use support::databases;

const ISS: &str = "https://idp.example";
const ISS_FILE: &str = "https://files.example";
const ISS_GONE: &str = "https://gone.example";
const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";
const C: &str = "00000000-0000-4000-8000-00000000000c";
const D: &str = "00000000-0000-4000-8000-00000000000d";
const E: &str = "00000000-0000-4000-8000-00000000000e";

fn t(n: u32) -> String {
    format!("2026-01-01T00:00:{n:02}.000000Z")
}

/// The migrations an older gateway ran: 0001 to 0018, copied to `into`.
fn legacy_migrations(backend: Backend, into: &Path) {
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dir);
    std::fs::create_dir_all(into).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version: u32 = name[..4].parse().unwrap();
        if version <= 18 {
            std::fs::copy(&path, into.join(&name)).unwrap();
        }
    }
}

/// What an older gateway left: the same issuer trusted by app `b` (configured first) and app `a`
/// with different JWKS URLs, an issuer through a JWKS file, and one no app trusts any more.
macro_rules! fill {
    ($pool:expr) => {{
        let pool = $pool;
        for (app, iss, url, file, at) in [
            ("app_b", ISS, Some("https://b.example/jwks"), None, t(1)),
            ("app_a", ISS, Some("https://a.example/jwks"), None, t(2)),
            ("app_c", ISS_FILE, None, Some("/etc/parapet/jwks.json"), t(3)),
        ] {
            sqlx::query("INSERT INTO oidc_issuers (app_id, issuer, audiences, jwks_url, jwks_file, created_at) VALUES ($1, $2, 'web', $3, $4, $5)")
                .bind(app).bind(iss).bind(url).bind(file).bind(at)
                .execute(pool).await.unwrap();
        }
        for user in [A, B, C, D, E] {
            sqlx::query("INSERT INTO users (id, created_at, disabled) VALUES ($1, $2, $3)")
                .bind(user).bind(t(0)).bind(false)
                .execute(pool).await.unwrap();
        }
        // A: first login at app a (the session starts at the identity's instant), later also
        // at app b (which then shared people by issuer string).
        // B: never logged in any session that survives, and the issuer has two sources: none.
        // C: through the JWKS file of app c. D: an issuer no app trusts any more.
        // E: linked at app a from a session started before the identity.
        for (iss, sub, user, at) in [
            (ISS, "alice", A, t(10)),
            (ISS, "bob", B, t(11)),
            (ISS_FILE, "carol", C, t(12)),
            (ISS_GONE, "dave", D, t(13)),
            (ISS, "erin", E, t(20)),
        ] {
            sqlx::query("INSERT INTO user_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(iss).bind(sub).bind(user).bind(at)
                .execute(pool).await.unwrap();
        }
        for (n, user, app, method, at) in [
            (1u8, B, "app_b", "passkey", t(5)),
            (2, A, "app_b", "oidc", t(9)),
            (3, A, "app_a", "oidc", t(10)),
            (4, A, "app_b", "oidc", t(30)),
            (5, C, "app_c", "oidc", t(12)),
            (6, E, "app_a", "oidc", t(15)),
        ] {
            sqlx::query("INSERT INTO sessions (token_hash, id, user_id, app_id, method, user_verified, created_at, last_seen, expires_at, idle_secs) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, 600)")
                .bind(vec![n; 32]).bind(format!("s{n}")).bind(user).bind(app).bind(method)
                .bind(false).bind(at).bind(t(59))
                .execute(pool).await.unwrap();
        }
    }};
}

fn id(issuer: &str, subject: &str, trust: &str) -> Identity {
    Identity {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        trust: trust.to_owned(),
    }
}

#[tokio::test]
async fn existing_identities_are_bound_to_the_source_they_can_be_attributed_to() {
    for db in databases("legacy.db").await {
        let migrations = db.dir.path().join("legacy-migrations");
        legacy_migrations(db.backend, &migrations);
        let migrator = sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap();
        match db.backend {
            Backend::Sqlite => {
                let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
                let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true))
                    .await
                    .unwrap();
                migrator.run(&pool).await.unwrap();
                fill!(&pool);
                pool.close().await;
            }
            Backend::Postgres => {
                let opts: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
                let pool = sqlx::PgPool::connect_with(opts.disable_statement_logging())
                    .await
                    .unwrap();
                migrator.run(&pool).await.unwrap();
                fill!(&pool);
                pool.close().await;
            }
        }

        let s = Store::open(&db.url, &StoreOptions::default())
            .await
            .unwrap();
        let users = store::list_users(&s, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        let of = |user: &str| {
            users
                .iter()
                .find(|u| u.id.to_string() == user)
                .unwrap()
                .identities
                .clone()
        };
        // The login that created alice's identity was app a's, though she was at b before.
        assert_eq!(of(A), vec![id(ISS, "alice", "url:https://a.example/jwks")]);
        // Bob's identity came from no OIDC session, and two apps configure his issuer with
        // different keys: nothing says which, so neither gets him.
        assert_eq!(of(B), vec![id(ISS, "bob", "none:")]);
        assert_eq!(
            of(C),
            vec![id(ISS_FILE, "carol", "file:/etc/parapet/jwks.json")]
        );
        assert_eq!(of(D), vec![id(ISS_GONE, "dave", "none:")]);
        assert_eq!(of(E), vec![id(ISS, "erin", "url:https://a.example/jwks")]);

        // The carried identity is found under its source only.
        let found = store::user_by_identity(&s, &id(ISS, "alice", "url:https://a.example/jwks"))
            .await
            .unwrap();
        assert_eq!(found.map(|(u, _)| u.to_string()).as_deref(), Some(A));
        let other = store::user_by_identity(&s, &id(ISS, "alice", "url:https://b.example/jwks"))
            .await
            .unwrap();
        assert_eq!(other, None);
        // The same (iss, sub) under another source is another identity, with its own user.
        let (fresh, _, created) = store::find_or_create(
            &s,
            &id(ISS, "alice", "url:https://b.example/jwks"),
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
        assert!(created);
        assert_ne!(fresh.to_string(), A);
        s.close().await;
        db.drop_pg().await;
    }
}
