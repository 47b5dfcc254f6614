//! Key generation quotas on the database, on SQLite and on PostgreSQL when
//! `PARAPET_TEST_POSTGRES_URL` is set: generations are counted per device and per person over
//! the last hour from the ceremony record, aborted ones included.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::support;
use std::time::Duration;

use parapet_gateway::accounts::devices::Device;
use parapet_gateway::audit::{Store, StoreOptions};
use parapet_gateway::cosign::ceremonies::{self, Begin};
use parapet_gateway::error::{Error, Quota};
use parapet_gateway::limits::quotas::{QuotaSettings, Quotas};
use parapet_mpc::SessionId;
use support::databases;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

fn t0() -> OffsetDateTime {
    datetime!(2026-11-25 12:00 UTC)
}

async fn add_device(store: &Store, id: &str, user: Uuid) -> Device {
    const SQL: &str = "INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)";
    let hash = id.as_bytes().to_vec();
    let at = "2026-11-25T00:00:00.000000Z";
    match store {
        Store::Sqlite(p) => sqlx::query(SQL)
            .bind(id)
            .bind(user.to_string())
            .bind("d")
            .bind(hash)
            .bind(at)
            .execute(p)
            .await
            .map(|_| ()),
        Store::Postgres(p) => sqlx::query(SQL)
            .bind(id)
            .bind(user.to_string())
            .bind("d")
            .bind(hash)
            .bind(at)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .unwrap();
    Device {
        device_id: id.to_owned(),
        user_id: user,
        name: "d".to_owned(),
        created_at: at.to_owned(),
        last_seen: None,
        revoked_at: None,
    }
}

/// A key generation `device` started at `at` (and never finished: aborted ones count too).
async fn keygen_started(store: &Store, device: &Device, at: OffsetDateTime) {
    ceremonies::begin(
        store,
        &SessionId::random(),
        Begin {
            kind: "keygen",
            device_id: &device.device_id,
            wallet: None,
            signing_request: None,
        },
        at,
    )
    .await
    .unwrap();
}

fn quota_of(r: Result<(), Error>) -> Option<(Quota, u64)> {
    match r {
        Ok(()) => None,
        Err(Error::QuotaExceeded {
            quota,
            retry_after_secs,
        }) => Some((quota, retry_after_secs)),
        Err(other) => panic!("not a quota refusal: {other:?}"),
    }
}

#[tokio::test]
async fn key_generations_are_counted_per_device_and_per_person_over_the_last_hour() {
    for db in databases("keygen-quota.db").await {
        let store = Store::open(&db.url, &StoreOptions::default())
            .await
            .unwrap();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let laptop = add_device(&store, "dev_laptop", alice).await;
        let phone = add_device(&store, "dev_phone", alice).await;
        let bobs = add_device(&store, "dev_bob", bob).await;
        let quotas = Quotas::new(QuotaSettings {
            keygens_per_device: 2,
            keygens_per_person: 3,
            ..QuotaSettings::default()
        });
        let min = |m: u64| t0() + Duration::from_secs(60 * m);

        keygen_started(&store, &laptop, min(0)).await;
        keygen_started(&store, &laptop, min(1)).await;
        // The laptop used its two: refused until the first leaves the hour.
        assert_eq!(
            quota_of(quotas.check_keygen(&store, &laptop, min(2)).await),
            Some((Quota::KeygenDevice, 58 * 60))
        );
        // The phone may: two for the person so far.
        assert_eq!(
            quota_of(quotas.check_keygen(&store, &phone, min(2)).await),
            None
        );
        keygen_started(&store, &phone, min(3)).await;
        // Now the person used three: the phone is refused too, until the oldest of the three
        // leaves the hour.
        assert_eq!(
            quota_of(quotas.check_keygen(&store, &phone, min(4)).await),
            Some((Quota::KeygenPerson, 56 * 60))
        );
        // Someone else's device is not affected.
        assert_eq!(
            quota_of(quotas.check_keygen(&store, &bobs, min(4)).await),
            None
        );
        // Past an hour after the first: the laptop has one in the window, the person two.
        assert_eq!(
            quota_of(quotas.check_keygen(&store, &laptop, min(61)).await),
            None
        );
        let refused = quotas
            .check_keygen(&store, &laptop, min(2))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), "keygen_quota");
        assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
        db.drop_pg().await;
    }
}
