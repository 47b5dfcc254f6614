//! Expired one-time rows on the database, on SQLite and on PostgreSQL when
//! `PARAPET_TEST_POSTGRES_URL` is set: passkey ceremonies nobody finished, login codes, pairing
//! codes and OIDC nonces are gone after a sweep, and live ones stay.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::support;
use std::time::Duration;

use parapet_gateway::audit::Store;
use support::databases;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

fn t0() -> OffsetDateTime {
    datetime!(2026-11-25 12:00 UTC)
}

async fn count(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    match store {
        Store::Sqlite(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(p)
            .await
            .unwrap(),
        Store::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(p)
            .await
            .unwrap(),
    }
}

#[tokio::test]
async fn expired_one_time_rows_are_gone_after_a_sweep_and_live_ones_stay() {
    for db in databases("expiry.db").await {
        let support::PasskeyRig { pk, log, store } = support::passkey_rig(&db, t0()).await;
        let later = t0() + Duration::from_secs(500);
        // One registration started later (live at the sweep), then bare starts nobody finishes
        // (the start sweeps what expired before it, so these come second).
        pk.start_registration(Uuid::new_v4(), "a", "A", false, later)
            .await
            .unwrap();
        for _ in 0..3 {
            pk.start_registration(Uuid::new_v4(), "a", "A", false, t0())
                .await
                .unwrap();
        }
        let user = Uuid::new_v4();
        parapet_gateway::accounts::devices::issue_pairing_code(&store, user, t0())
            .await
            .unwrap();
        parapet_gateway::accounts::users::oidc::issue_nonce(&store, "app", t0())
            .await
            .unwrap();
        parapet_gateway::accounts::users::handoff::issue_code(
            &store,
            "app",
            "https://app.example/cb",
            &parapet_gateway::accounts::users::handoff::CodeGrant {
                user,
                method: "passkey".to_owned(),
                user_verified: true,
                credential_id: None,
            },
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(count(&store, "passkey_ceremonies").await, 4);

        // Before anything expired, a sweep deletes nothing.
        let swept = parapet_gateway::store::expiry::sweep(&store, t0())
            .await
            .unwrap();
        assert!(swept.iter().all(|(_, n)| *n == 0), "{swept:?}");

        // Past every lifetime of the rows made at t0 (the longest is 600 s), before the later
        // registration's.
        let at = t0() + Duration::from_secs(700);
        let swept = parapet_gateway::store::expiry::sweep(&store, at)
            .await
            .unwrap();
        assert_eq!(
            swept,
            vec![
                ("passkey_ceremonies", 3),
                ("login_codes", 1),
                ("device_pairings", 1),
                ("oidc_nonces", 1),
            ]
        );
        assert_eq!(count(&store, "passkey_ceremonies").await, 1);
        for table in ["login_codes", "device_pairings", "oidc_nonces"] {
            assert_eq!(count(&store, table).await, 0, "{table}");
        }
        log.shutdown().await;
        db.drop_pg().await;
    }
}
