//! Apps and API keys through the real router: every `/v1` route against no key, a wrong key, a
//! revoked key, a frozen app and a missing grant; audit reads confined to the caller's app; the
//! calling app as the Cedar principal; revocation seen by a second process within a second; and
//! keys absent from every body and audit row. On SQLite, and also on PostgreSQL when
//! `PARAPET_TEST_POSTGRES_URL` is set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support;
use crate::support::root;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use parapet_gateway::accounts::apps::{self, Actor, AppUpdate, Auditor, Change, NewApp, StoredApp};
use parapet_gateway::config::Config;
use parapet_gateway::http::{AppState, app};
use serde_json::Value;
use support::databases;
use tower::ServiceExt;

/// The operator the tests act as.
fn op() -> Actor {
    Actor {
        who: "test-operator".to_owned(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// An operator change through the process's identity, as the admin routes make it.
async fn change(s: &AppState, id: &str, c: Change) -> parapet_gateway::Result<StoredApp> {
    s.identity
        .change(Auditor::Log(&s.audit), &op(), id, c, s.clock.now())
        .await
}

async fn update(s: &AppState, id: &str, u: AppUpdate) -> parapet_gateway::Result<StoredApp> {
    s.identity
        .update(Auditor::Log(&s.audit), &op(), id, &u, s.clock.now())
        .await
}

async fn rotate(
    s: &AppState,
    id: &str,
    overlap: Duration,
) -> parapet_gateway::Result<(StoredApp, String, String)> {
    s.identity
        .rotate(Auditor::Log(&s.audit), &op(), id, overlap, s.clock.now())
        .await
}

const TOKEN: &str = "test-token-0123456789abcdef";

/// A gateway process's state on `database_url`, with its own data directory.
async fn state(database_url: &str) -> (Arc<AppState>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut env = HashMap::new();
    env.insert(
        "PARAPET_DATA_DIR".to_owned(),
        data.path().display().to_string(),
    );
    env.insert("PARAPET_DATABASE_URL".to_owned(), database_url.to_owned());
    env.insert("PARAPET_API_TOKEN".to_owned(), TOKEN.to_owned());
    env.insert(
        "PARAPET_POLICIES_DIR".to_owned(),
        root().join("policies").display().to_string(),
    );
    env.insert(
        "PARAPET_SCHEMAS_DIR".to_owned(),
        root().join("schemas").display().to_string(),
    );
    let mut config = Config::load(None, &env).unwrap();
    (
        parapet_gateway::server::build_state(&mut config)
            .await
            .unwrap(),
        data,
    )
}

async fn create(s: &AppState, name: &str, grants: &str, groups: &str) -> (String, String) {
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let new = NewApp {
        name: name.to_owned(),
        grants: list(grants),
        groups: list(groups),
        ..NewApp::default()
    };
    let (app, key) = apps::create_app(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &op(),
        &new,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    (app.id, key)
}

fn good_body() -> String {
    std::fs::read_to_string(root().join("tests/fixtures/good/erc20-transfer-usdc-small.json"))
        .unwrap()
}

/// Every `/v1` route with a request that succeeds given the right grant.
fn route_request(method: &str, path: &str, key: Option<&str>) -> Request<Body> {
    route_request_for(method, path, key, &format!("app_{}", "a".repeat(26)))
}

/// As [`route_request`], with `{id}` standing for `target` and `{action}` for `unfreeze`.
fn route_request_for(method: &str, path: &str, key: Option<&str>, target: &str) -> Request<Body> {
    let uri = path.replace("{id}", target).replace("{action}", "unfreeze");
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    let body = match (method, path) {
        ("POST", "/v1/authorize") => good_body(),
        ("POST", "/v1/admin/apps") => r#"{"name": "via http", "grants": ["sign"]}"#.to_owned(),
        _ => return b.body(Body::empty()).unwrap(),
    };
    b.header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn call(s: &Arc<AppState>, req: Request<Body>) -> (StatusCode, String) {
    let res = app(s.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `(method, path, grant)` for every `/v1` route.
const V1: &[(&str, &str, &str)] = &[
    ("POST", "/v1/authorize", "sign"),
    ("POST", "/v1/admin/policies/reload", "admin"),
    ("GET", "/v1/audit/events", "audit:read"),
    ("GET", "/v1/admin/apps", "admin"),
    ("POST", "/v1/admin/apps", "admin"),
    ("POST", "/v1/admin/apps/{id}/{action}", "admin"),
    ("POST", "/v1/sessions/oidc/nonce", "sign"),
    ("POST", "/v1/sessions/oidc", "sign"),
    ("POST", "/v1/sessions/oidc/link", "sign"),
    ("POST", "/v1/sessions/logout", "sign"),
    ("POST", "/v1/sessions/exchange", "sign"),
    ("POST", "/v1/sessions/page-link", "sign"),
    ("GET", "/v1/devices", "sign"),
    ("POST", "/v1/devices/{id}/revoke", "sign"),
    ("GET", "/v1/wallets", "sign"),
    ("GET", "/v1/wallets/{address}", "sign"),
    ("POST", "/v1/admin/wallets/{address}/update", "admin"),
    ("POST", "/v1/wallets/{address}/sign", "sign"),
    ("GET", "/v1/signing-requests/{id}", "sign"),
    ("POST", "/v1/signing-requests/{id}/step-up", "sign"),
    ("POST", "/v1/wallets/{address}/refresh", "sign"),
    ("POST", "/v1/operations/{id}/step-up", "sign"),
    ("POST", "/v1/recovery/{id}/cancel", "sign"),
    ("POST", "/v1/totp", "sign"),
    ("POST", "/v1/totp/confirm", "sign"),
    ("POST", "/v1/totp/remove", "sign"),
    ("GET", "/v1/consent", "sign"),
    ("POST", "/v1/consent", "sign"),
    ("POST", "/v1/consent/revoke", "sign"),
    ("GET", "/v1/admin/users", "admin"),
    ("POST", "/v1/admin/users/{id}/disable", "admin"),
    ("GET", "/v1/webhook", "sign"),
    ("POST", "/v1/webhook", "sign"),
    ("DELETE", "/v1/webhook", "sign"),
    ("GET", "/v1/admin/webhook-deliveries", "admin"),
    (
        "POST",
        "/v1/admin/webhook-deliveries/{id}/redeliver",
        "admin",
    ),
    ("POST", "/v1/device-transfers/{id}/approve", "sign"),
];

/// `/v1` routes that take no app key: their credential is a pairing code or a device token.
const KEYLESS: &[(&str, &str)] = &[
    ("POST", "/v1/devices/pair"),
    ("GET", "/v1/device"),
    ("GET", "/v1/device/keygen"),
    ("GET", "/v1/device/recovery"),
    ("POST", "/v1/device/recovery"),
    ("POST", "/v1/device/recovery/check"),
    ("GET", "/v1/device/operations/{id}"),
    ("POST", "/v1/recovery/identify"),
    ("POST", "/v1/recovery"),
    ("GET", "/v1/recovery/{id}"),
    ("POST", "/v1/recovery/{id}/complete"),
    ("GET", "/v1/device/signing-requests/{id}"),
    ("GET", "/v1/signing-requests/{id}/ceremony"),
    ("GET", "/v1/device/wallets/{address}/refresh"),
    ("GET", "/v1/device/transfers"),
    ("POST", "/v1/device/transfers"),
    ("GET", "/v1/device/transfers/{id}"),
    ("POST", "/v1/device/transfers/{id}/seal"),
    ("POST", "/v1/device/transfers/{id}/received"),
    ("POST", "/v1/device/resync"),
];

#[test]
fn the_table_covers_every_v1_route() {
    let v1: Vec<_> = parapet_gateway::http::ROUTES
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/"))
        .map(|(m, p)| (m.to_uppercase(), (*p).to_owned()))
        .collect();
    assert_eq!(v1.len(), V1.len() + KEYLESS.len());
    for (m, p) in v1 {
        assert!(
            V1.iter().any(|(tm, tp, _)| *tm == m && *tp == p)
                || KEYLESS.iter().any(|(tm, tp)| *tm == m && *tp == p),
            "{m} {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_refuses_missing_wrong_revoked_frozen_and_ungranted_keys() {
    for db in databases("shared.db").await {
        let (s, _data) = state(&db.url).await;
        let mut keys = HashMap::new();
        for grant in ["sign", "audit:read", "admin"] {
            keys.insert(grant, create(&s, grant, grant, "").await.1);
        }
        let (revoked_id, revoked) = create(&s, "revoked", "sign,audit:read,admin", "").await;
        let (frozen_id, frozen) = create(&s, "frozen", "sign,audit:read,admin", "").await;
        // Used once while valid, so the change has a cached entry to invalidate.
        for key in [&revoked, &frozen] {
            let (st, body) = call(&s, route_request("POST", "/v1/authorize", Some(key))).await;
            assert_eq!(st, StatusCode::OK, "{body}");
        }
        change(&s, &revoked_id, Change::Revoke).await.unwrap();
        change(&s, &frozen_id, Change::Freeze).await.unwrap();
        let wrong = apps::new_api_key();
        let (target, _) = create(&s, "target", "sign", "").await;
        let mut forbidden = 0;
        for (method, path, grant) in V1 {
            let cases: Vec<(Option<&str>, StatusCode, &str)> = vec![
                (None, StatusCode::UNAUTHORIZED, "unauthorized"),
                (Some(&wrong), StatusCode::UNAUTHORIZED, "unauthorized"),
                (Some(&revoked), StatusCode::UNAUTHORIZED, "unauthorized"),
                (Some(&frozen), StatusCode::FORBIDDEN, "app_frozen"),
            ];
            for (key, want, want_code) in cases {
                let (st, body) = call(&s, route_request_for(method, path, key, &target)).await;
                assert_eq!(st, want, "{method} {path}: {body}");
                assert_eq!(code(&body), want_code, "{method} {path}: {body}");
            }
            for (other, key) in &keys {
                let (st, body) =
                    call(&s, route_request_for(method, path, Some(key), &target)).await;
                if other == grant || (*other == "admin" && *grant == "audit:read") {
                    // Past the key and grant checks: routes acting for a user then want a
                    // session or a body, and refuse with their own code.
                    let c = code(&body);
                    assert!(
                        st == StatusCode::OK
                            || ((path.starts_with("/v1/sessions/")
                                || path.starts_with("/v1/admin/users/")
                                || path.starts_with("/v1/consent")
                                || path.starts_with("/v1/devices")
                                || path.starts_with("/v1/wallets")
                                || path.starts_with("/v1/signing-requests/")
                                || path.starts_with("/v1/operations/")
                                || path.starts_with("/v1/recovery/")
                                || path.starts_with("/v1/totp")
                                || path.starts_with("/v1/webhook")
                                || path.starts_with("/v1/admin/webhook-deliveries/")
                                || path.starts_with("/v1/device-transfers/")
                                || path.starts_with("/v1/admin/wallets/"))
                                && !["unauthorized", "forbidden", "app_frozen"]
                                    .contains(&c.as_str())),
                        "{method} {path} with {other}: {body}"
                    );
                } else {
                    assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {body}");
                    assert_eq!(code(&body), "forbidden", "{body}");
                    forbidden += 1;
                }
            }
        }
        // The static token still acts as the development default app.
        let (st, body) = call(&s, route_request("POST", "/v1/authorize", Some(TOKEN))).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        // Unfreezing restores the app at once in this process.
        change(&s, &frozen_id, Change::Unfreeze).await.unwrap();
        let (st, body) = call(&s, route_request("POST", "/v1/authorize", Some(&frozen))).await;
        assert_eq!(st, StatusCode::OK, "{body}");

        // The refusals are in the log, aggregated per (key, reason, minute), never one by one.
        s.audit.flush_flood(s.clock.now(), true).await;
        let (_, body) = call(
            &s,
            route_request("GET", "/v1/audit/events?kind=limited", Some(TOKEN)),
        )
        .await;
        let page: Value = serde_json::from_str(&body).unwrap();
        let limited: Vec<&Value> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["event"]["limited"])
            .collect();
        let count = |reason: &str| -> u64 {
            limited
                .iter()
                .filter(|l| l["reason"] == reason)
                .map(|l| l["count"].as_str().unwrap().parse::<u64>().unwrap())
                .sum()
        };
        assert_eq!(count("unauthorized"), 3 * V1.len() as u64, "{limited:?}");
        assert_eq!(count("app_frozen"), V1.len() as u64, "{limited:?}");
        assert_eq!(count("forbidden"), forbidden, "{limited:?}");
        assert!(
            limited.len() <= 2 + 3 + 1 + 3,
            "aggregated, not per refusal: {limited:?}"
        );
        s.audit.shutdown().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_readers_see_their_own_app_and_the_principal_is_the_calling_app() {
    for db in databases("shared.db").await {
        let (s, _data) = state(&db.url).await;
        let (a_id, a_key) = create(&s, "Alpha wallet", "sign,audit:read", "retail,beta").await;
        let (b_id, b_key) = create(&s, "Bravo", "sign", "").await;
        let (_, admin) = create(&s, "ops", "admin", "").await;
        for key in [&a_key, &b_key, &b_key] {
            let (st, body) = call(&s, route_request("POST", "/v1/authorize", Some(key))).await;
            assert_eq!(st, StatusCode::OK, "{body}");
        }
        let events = |body: String| -> Vec<Value> {
            let page: Value = serde_json::from_str(&body).unwrap();
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event"].clone())
                .collect()
        };
        for query in ["", "?app=", "?app=default"] {
            let path = format!("/v1/audit/events{query}");
            let (st, body) = call(&s, route_request("GET", &path, Some(&a_key))).await;
            assert_eq!(st, StatusCode::OK, "{body}");
            let evs = events(body);
            // Its own decision, and the operator's creation of it; nothing of other apps.
            assert_eq!(evs.len(), 2, "{path}: {evs:?}");
            assert!(evs.iter().all(|e| e["app"] == a_id.as_str()), "{evs:?}");
            assert_eq!(evs.iter().filter(|e| e["kind"] == "admin").count(), 1);
        }
        let path = format!("/v1/audit/events?app={b_id}");
        let (_, body) = call(&s, route_request("GET", &path, Some(&a_key))).await;
        assert!(events(body).iter().all(|e| e["app"] == a_id.as_str()));
        let (_, body) = call(&s, route_request("GET", &path, Some(&admin))).await;
        assert_eq!(events(body).len(), 3);
        let (_, body) = call(
            &s,
            route_request("GET", "/v1/audit/events?kind=decision", Some(&admin)),
        )
        .await;
        assert_eq!(events(body).len(), 3);
        // A's decision was made with A's record as the Cedar principal.
        let (_, body) = call(
            &s,
            route_request("GET", "/v1/audit/events?kind=decision", Some(&a_key)),
        )
        .await;
        let ev = &events(body)[0];
        let cedar: Value = serde_json::from_str(ev["cedar_request"].as_str().unwrap()).unwrap();
        assert_eq!(
            cedar["principal"].to_string(),
            serde_json::json!({"type": "Parapet::App", "id": a_id}).to_string(),
            "{cedar}"
        );
        let entities = ev["entities"].as_str().unwrap();
        for part in [
            a_id.as_str(),
            "Alpha wallet",
            "retail",
            "beta",
            "audit:read",
        ] {
            assert!(entities.contains(part), "{part} missing from {entities}");
        }
        assert!(!entities.contains("admin"), "{entities}");
        s.audit.shutdown().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_freeze_reach_another_process_within_a_second() {
    for db in databases("shared.db").await {
        let (one, _d1) = state(&db.url).await;
        let (two, _d2) = state(&db.url).await;
        let (id, key) = create(&one, "shared", "sign", "").await;
        for s in [&one, &two] {
            let (st, body) = call(s, route_request("POST", "/v1/authorize", Some(&key))).await;
            assert_eq!(st, StatusCode::OK, "{body}");
        }
        for (what, want) in [
            (Change::Freeze, StatusCode::FORBIDDEN),
            (Change::Unfreeze, StatusCode::OK),
            (Change::Revoke, StatusCode::UNAUTHORIZED),
        ] {
            let started = Instant::now();
            change(&one, &id, what).await.unwrap();
            let (st, _) = call(&one, route_request("POST", "/v1/authorize", Some(&key))).await;
            assert_eq!(st, want, "{what:?} in the changing process");
            loop {
                let (st, _) = call(&two, route_request("POST", "/v1/authorize", Some(&key))).await;
                if st == want {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "{what:?} not seen by the other process after {:?}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!(
                "{what:?} seen by the other process after {:?}",
                started.elapsed()
            );
        }
        one.audit.shutdown().await;
        two.audit.shutdown().await;
        db.drop_pg().await;
    }
}

/// Decisions read wallet records from memory (`accounts::wallet_directory`), not the database:
/// a wallet created, then frozen, by another process reaches this one's decisions within a
/// second, through the feed the database's triggers write, with no call between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_record_and_its_freeze_reach_another_process_within_a_second() {
    use parapet_gateway::accounts::wallets::{self, StoredWallet, WalletUpdate};
    for db in databases("shared.db").await {
        let (one, _d1) = state(&db.url).await;
        let (two, _d2) = state(&db.url).await;
        let (_, key) = create(&one, "shared", "sign", "").await;
        let body: Value = serde_json::from_str(&good_body()).unwrap();
        let address =
            wallets::normalize_address(body["wallet"]["address"].as_str().unwrap()).unwrap();
        let source = |s: String| -> String {
            let v: Value = serde_json::from_str(&s).unwrap();
            format!("{}/{}", v["labels_source"], v["decision"]).replace('"', "")
        };
        let (_, before) = call(&two, route_request("POST", "/v1/authorize", Some(&key))).await;
        assert_eq!(source(before), "request/allow");
        // Created (no labels, not frozen), then frozen: the shipped forbid denies it.
        let stages = [("record/allow", None), ("record/deny", Some(true))];
        for (want, frozen) in stages {
            let started = Instant::now();
            if frozen.is_none() {
                wallets::create(
                    one.audit.store(),
                    Auditor::Log(&one.audit),
                    &StoredWallet {
                        address: address.clone(),
                        owner: uuid::Uuid::new_v4(),
                        device_id: "dev_test".to_owned(),
                        public_key: "02".to_owned() + &"11".repeat(32),
                        epoch: 0,
                        labels: Vec::new(),
                        groups: Vec::new(),
                        frozen: false,
                        refresh_required: false,
                        created_at: "2026-11-25T12:00:00.000000Z".to_owned(),
                    },
                    b"sealed",
                    b"backup",
                    "req-create",
                    time::OffsetDateTime::now_utc(),
                )
                .await
                .unwrap();
            } else {
                wallets::update(
                    one.audit.store(),
                    Auditor::Log(&one.audit),
                    &op(),
                    &address,
                    &WalletUpdate {
                        frozen,
                        ..WalletUpdate::default()
                    },
                    time::OffsetDateTime::now_utc(),
                )
                .await
                .unwrap();
            }
            loop {
                let (_, answer) =
                    call(&two, route_request("POST", "/v1/authorize", Some(&key))).await;
                if source(answer.clone()) == want {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "{want} not seen by the other process after {:?}: {answer}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!(
                "{want} seen by the other process after {:?}",
                started.elapsed()
            );
        }
        one.audit.shutdown().await;
        two.audit.shutdown().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_appear_in_no_body_and_no_audit_row() {
    for db in databases("shared.db").await {
        let (s, _data) = state(&db.url).await;
        let (id, key) = create(&s, "leaky?", "sign,audit:read", "").await;
        let (_, admin) = create(&s, "ops", "admin", "").await;
        let (_, signer) = create(&s, "signer", "sign", "").await;
        let wrong = apps::new_api_key();
        let mut bodies = Vec::new();
        for k in [&key, &admin, &signer, &wrong] {
            for (method, path, _) in V1 {
                bodies.push(
                    call(&s, route_request_for(method, path, Some(k), &id))
                        .await
                        .1,
                );
            }
        }
        let (_, frozen) = create(&s, "frozen", "sign", "").await;
        let frozen_id = apps::list_apps(s.audit.store())
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.name == "frozen")
            .unwrap()
            .id;
        change(&s, &frozen_id, Change::Freeze).await.unwrap();
        bodies.push(
            call(&s, route_request("POST", "/v1/authorize", Some(&frozen)))
                .await
                .1,
        );
        change(&s, &id, Change::Revoke).await.unwrap();
        bodies.push(
            call(&s, route_request("POST", "/v1/authorize", Some(&key)))
                .await
                .1,
        );
        s.audit.flush_flood(s.clock.now(), true).await;
        let (st, export) = call(
            &s,
            route_request("GET", "/v1/audit/events?format=ndjson", Some(&admin)),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert!(export.lines().count() >= 5, "{export}");
        bodies.push(export);
        let listed = serde_json::to_string(
            &apps::list_apps(s.audit.store())
                .await
                .unwrap()
                .iter()
                .map(apps::StoredApp::to_json)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        bodies.push(listed);
        for secret in [&key, &admin, &signer, &wrong, &frozen] {
            let hex_hash = hex::encode(apps::key_hash(secret));
            for b in &bodies {
                assert!(!b.contains(secret.as_str()), "key leaked into {b}");
                assert!(!b.contains(&secret[3..]), "key leaked into {b}");
                assert!(!b.contains(&hex_hash), "key hash leaked into {b}");
            }
        }
        s.audit.shutdown().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_cached_negatively_and_the_cache_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let (s, _data) = state(&url).await;
    let (_, key) = create(&s, "known", "sign", "").await;
    let wrong = apps::new_api_key();
    let before = s.identity.lookups();
    for _ in 0..50 {
        assert_eq!(
            s.identity.resolve(&wrong, s.clock.now()).await.unwrap(),
            None
        );
        assert!(
            s.identity
                .resolve(&key, s.clock.now())
                .await
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(
        s.identity.lookups() - before,
        2,
        "repeated keys must not reach the database"
    );
    // A flood of distinct random keys: memory stays bounded.
    let started = Instant::now();
    for _ in 0..(apps::CACHE_MAX + 5_000) {
        let _ = s
            .identity
            .resolve(&apps::new_api_key(), s.clock.now())
            .await
            .unwrap();
    }
    let (hits, misses) = s.identity.cached();
    assert!(hits <= 1 && misses <= apps::CACHE_MAX, "{hits} {misses}");
    eprintln!(
        "{} distinct unknown keys resolved in {:?}",
        apps::CACHE_MAX + 5_000,
        started.elapsed()
    );
    s.audit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_grants_and_groups_apply_to_the_next_request() {
    for db in databases("shared.db").await {
        let (s, _data) = state(&db.url).await;
        let (id, key) = create(&s, "mutable", "sign", "a").await;
        let (st, _) = call(&s, route_request("POST", "/v1/authorize", Some(&key))).await;
        assert_eq!(st, StatusCode::OK);
        let grants = vec!["audit:read".to_owned()];
        let groups = vec!["b".to_owned(), "c".to_owned()];
        let app = update(
            &s,
            &id,
            AppUpdate {
                name: Some("renamed".to_owned()),
                grants: Some(grants.clone()),
                groups: Some(groups.clone()),
                ..AppUpdate::default()
            },
        )
        .await
        .unwrap();
        assert_eq!((app.name.as_str(), app.groups.len()), ("renamed", 2));
        let (st, body) = call(&s, route_request("POST", "/v1/authorize", Some(&key))).await;
        assert_eq!(
            (st, code(&body).as_str()),
            (StatusCode::FORBIDDEN, "forbidden")
        );
        let (st, _) = call(&s, route_request("GET", "/v1/audit/events", Some(&key))).await;
        assert_eq!(st, StatusCode::OK);
        // Unknown grants and bad group names are refused; nothing changes.
        let bad = vec!["sudo".to_owned()];
        assert!(
            update(
                &s,
                &id,
                AppUpdate {
                    name: None,
                    grants: Some(bad.clone()),
                    groups: None,
                    ..AppUpdate::default()
                }
            )
            .await
            .is_err()
        );
        let bad_group = vec!["has space".to_owned()];
        assert!(
            update(
                &s,
                &id,
                AppUpdate {
                    name: None,
                    grants: None,
                    groups: Some(bad_group.clone()),
                    ..AppUpdate::default()
                }
            )
            .await
            .is_err()
        );
        assert!(matches!(
            update(
                &s,
                "app_missing",
                AppUpdate {
                    name: Some("x".to_owned()),
                    grants: None,
                    groups: None,
                    ..AppUpdate::default()
                }
            )
            .await,
            Err(parapet_gateway::error::Error::NotFound)
        ));
        // Back to `sign` with new groups: the decision's principal carries them.
        let sign = vec!["sign".to_owned()];
        update(
            &s,
            &id,
            AppUpdate {
                name: None,
                grants: Some(sign.clone()),
                groups: None,
                ..AppUpdate::default()
            },
        )
        .await
        .unwrap();
        let (st, body) = call(&s, route_request("POST", "/v1/authorize", Some(&key))).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let rid = serde_json::from_str::<Value>(&body).unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let row = s.audit.store().by_request_id(&rid).await.unwrap().unwrap();
        let ev: Value = serde_json::from_str(&row.canonical).unwrap();
        let entities = ev["entities"].as_str().unwrap();
        assert!(
            entities.contains("renamed") && entities.contains("\"c\""),
            "{entities}"
        );
        s.audit.shutdown().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_overlap_then_only_the_new_key_works() {
    for db in databases("shared.db").await {
        let (s, _data) = state(&db.url).await;
        let (other, _d2) = state(&db.url).await;
        let (id, old) = create(&s, "rotating", "sign", "").await;
        let authorize = |st: &Arc<AppState>, k: &str| {
            let st = st.clone();
            let k = k.to_owned();
            async move {
                call(&st, route_request("POST", "/v1/authorize", Some(&k)))
                    .await
                    .0
            }
        };
        assert_eq!(authorize(&other, &old).await, StatusCode::OK);
        let overlap = Duration::from_millis(1500);
        let (_, new, _) = rotate(&s, &id, overlap).await.unwrap();
        let rotated = Instant::now();
        assert_ne!(new, old);
        for st in [&s, &other] {
            assert_eq!(authorize(st, &old).await, StatusCode::OK);
            assert_eq!(authorize(st, &new).await, StatusCode::OK);
        }
        // After the window (plus the cache's lifetime), only the new key works, everywhere.
        tokio::time::sleep(overlap.saturating_sub(rotated.elapsed())).await;
        tokio::time::sleep(apps::CACHE_TTL).await;
        for st in [&s, &other] {
            assert_eq!(authorize(st, &old).await, StatusCode::UNAUTHORIZED);
            assert_eq!(authorize(st, &new).await, StatusCode::OK);
        }
        // Without overlap the old key stops at once in this process.
        let (_, newer, _) = rotate(&s, &id, Duration::ZERO).await.unwrap();
        assert_eq!(authorize(&s, &new).await, StatusCode::UNAUTHORIZED);
        assert_eq!(authorize(&s, &newer).await, StatusCode::OK);
        // A revoked app's keys stay dead, rotated ones included, and it cannot be rotated.
        change(&s, &id, Change::Revoke).await.unwrap();
        assert_eq!(authorize(&s, &newer).await, StatusCode::UNAUTHORIZED);
        assert!(rotate(&s, &id, overlap).await.is_err());
        s.audit.shutdown().await;
        other.audit.shutdown().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_manage_apps_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let (s, _data) = state(&url).await;
    let (_, admin) = create(&s, "ops", "admin", "").await;
    let send = |method: &str, path: &str, key: &str, body: Option<&str>| {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        b.body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap()
    };
    let (st, body) = call(
        &s,
        send(
            "POST",
            "/v1/admin/apps",
            &admin,
            Some(r#"{"name": "web", "grants": ["sign"], "groups": ["retail"]}"#),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let (id, key) = (
        created["app_id"].as_str().unwrap().to_owned(),
        created["api_key"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        call(&s, route_request("POST", "/v1/authorize", Some(&key)))
            .await
            .0,
        StatusCode::OK
    );
    let (st, body) = call(&s, send("GET", "/v1/admin/apps", &admin, None)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains(&id) && !body.contains(&key), "{body}");
    let bad = r#"{"name": "x", "grants": ["root"]}"#;
    let (st, body) = call(&s, send("POST", "/v1/admin/apps", &admin, Some(bad))).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    let rotate = format!("/v1/admin/apps/{id}/rotate");
    let (st, body) = call(
        &s,
        send("POST", &rotate, &admin, Some(r#"{"overlap_secs": 0}"#)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new_key = serde_json::from_str::<Value>(&body).unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let authorize = |k: &str| route_request("POST", "/v1/authorize", Some(k));
    assert_eq!(call(&s, authorize(&key)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&s, authorize(&new_key)).await.0, StatusCode::OK);

    let (st, body) = call(
        &s,
        send("POST", &format!("/v1/admin/apps/{id}/freeze"), &admin, None),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = call(&s, authorize(&new_key)).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::FORBIDDEN, "app_frozen")
    );
    let (st, _) = call(
        &s,
        send("POST", &format!("/v1/admin/apps/{id}/revoke"), &admin, None),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        call(&s, authorize(&new_key)).await.0,
        StatusCode::UNAUTHORIZED
    );
    for (path, want) in [
        (
            format!("/v1/admin/apps/{id}/explode"),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/admin/apps/nope/freeze".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/admin/apps/app_{}/freeze", "b".repeat(26)),
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(
            call(&s, send("POST", &path, &admin, None)).await.0,
            want,
            "{path}"
        );
    }
    s.audit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_answer_key_lookups_fails_closed_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let (s, _data) = state(&url).await;
    let (_, key) = create(&s, "cached", "sign", "").await;
    assert_eq!(
        call(&s, route_request("POST", "/v1/authorize", Some(&key)))
            .await
            .0,
        StatusCode::OK
    );
    s.audit.store().close().await;
    let unknown = apps::new_api_key();
    let (st, body) = call(&s, route_request("GET", "/v1/audit/events", Some(&unknown))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "store_unavailable");
    assert!(
        !body.contains(&unknown) && !body.to_lowercase().contains("sql"),
        "{body}"
    );
}
