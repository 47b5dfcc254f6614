//! Security webhooks end to end: an app registers a URL on a real local receiver; a user's
//! device pairing, recovery secret, recovery opened and cancelled arrive there signed
//! (HMAC-SHA-256 over timestamp and body, checked here as a receiver would), retried while the
//! receiver fails, each under one delivery id; admins see the delivery state and can send a
//! failed delivery again. On SQLite, and on PostgreSQL when `PARAPET_TEST_POSTGRES_URL` is set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::{cosign_support, support, users_support};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use cosign_support::*;
use http::StatusCode;
use parapet_gateway::webhooks::signature;
use serde_json::{Value, json};
use users_support::{app_with_grants_trusting, audit_text, call};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    signature: String,
    body: Bytes,
    answered: u16,
}

/// A webhook receiver on 127.0.0.1 that answers 500 to its first `fail_first` requests.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<std::sync::Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fail = Arc::new(AtomicUsize::new(fail_first));
    let (g, f) = (got.clone(), fail.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (g, f) = (g.clone(), f.clone());
            async move {
                let failing = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                };
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                g.lock().unwrap().push(Received {
                    delivery: header(signature::DELIVERY_HEADER),
                    signature: header(signature::HEADER),
                    body,
                    answered: status.as_u16(),
                });
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        got,
        fail_first: fail,
    }
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The bodies accepted (2xx) so far, as JSON.
    fn accepted(&self) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|r| r.answered < 300)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    /// Waits until an accepted delivery of every type in `types` has arrived.
    async fn wait_for(&self, types: &[&str]) -> Vec<Value> {
        for _ in 0..300 {
            let accepted = self.accepted();
            if types
                .iter()
                .all(|t| accepted.iter().any(|b| b["type"] == *t))
            {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "webhooks {types:?} did not arrive; got {:?}",
            self.accepted()
        );
    }
}

async fn register(w: &World, url: &str) -> String {
    let a = call(
        &w.s,
        "POST",
        "/v1/webhook",
        &w.key,
        None,
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body["signing_secret"].as_str().unwrap().to_owned()
}

async fn admin_deliveries(w: &World, admin: &str, query: &str) -> Vec<Value> {
    let a = call(
        &w.s,
        "GET",
        &format!("/v1/admin/webhook-deliveries{query}"),
        admin,
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body["deliveries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_reach_the_users_app_signed_and_retried_until_accepted() {
    for db in support::databases("webhooks.db").await {
        let w = world_with(&[
            ("PARAPET_DATABASE_URL", &db.url),
            ("PARAPET_WEBHOOK_RETRY_BASE_MS", "100"),
            ("PARAPET_RECOVERY_DELAY_SECS", "300"),
        ])
        .await;
        let hooks = receiver(2).await;

        // Only HTTPS, or plain HTTP to loopback.
        let refused = call(
            &w.s,
            "POST",
            "/v1/webhook",
            &w.key,
            None,
            Some(json!({"url": "http://example.com/hook"})),
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
        let secret = register(&w, &hooks.url).await;
        assert!(secret.starts_with("whsec_"));

        // Alice uses the app: her device, her recovery secret, a recovery opened and cancelled.
        let mut alice = user(&w, "alice", true).await;
        new_wallet(&w, &alice).await;
        let opened = open_recovery(&w, &alice.id, &alice.recovery).await;
        assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
        let path = format!(
            "/v1/recovery/{}/cancel",
            opened.body["id"].as_str().unwrap()
        );
        let asked = call(&w.s, "POST", &path, &w.key, Some(&alice.session), None).await;
        let assertion = assert_step_up(&mut alice, &asked.body);
        let cancelled = call(
            &w.s,
            "POST",
            &path,
            &w.key,
            Some(&alice.session),
            Some(assertion),
        )
        .await;
        assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);

        let types = [
            "device.added",
            "recovery.secret_set",
            "recovery.opened",
            "recovery.cancelled",
        ];
        let accepted = hooks.wait_for(&types).await;

        // Every request is signed with the app's secret over its exact body, recently.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for r in hooks.received() {
            signature::verify(secret.as_bytes(), &r.signature, &r.body, now, 300)
                .unwrap_or_else(|e| panic!("{e}: {}", r.signature));
            assert_eq!(
                signature::verify(b"whsec_other", &r.signature, &r.body, now, 300),
                Err(signature::Refused::Mismatch)
            );
        }
        for body in &accepted {
            assert_eq!(body["user_id"], alice.id.as_str(), "{body}");
            assert!(body["audit_seq"].as_i64().unwrap() > 0);
        }
        let opened_body = accepted
            .iter()
            .find(|b| b["type"] == "recovery.opened")
            .unwrap();
        assert_eq!(opened_body["data"]["recovery"], opened.body["id"]);

        // The first two answers were 500: the deliveries behind them came again under their
        // own ids until accepted, and each delivery was accepted once.
        let received = hooks.received();
        let failed: Vec<&Received> = received.iter().filter(|r| r.answered == 500).collect();
        assert_eq!(failed.len(), 2);
        for f in &failed {
            assert!(
                received
                    .iter()
                    .any(|r| r.delivery == f.delivery && r.answered == 204),
                "{} never delivered",
                f.delivery
            );
        }
        let mut ids: Vec<&str> = received
            .iter()
            .filter(|r| r.answered == 204)
            .map(|r| r.delivery.as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "a delivery was accepted twice");

        // Admins see every delivery, with attempts; the app sees its own.
        let (_, admin) = app_with_grants_trusting(&w.s, &w.issuer, &["admin"]).await;
        let all = admin_deliveries(&w, &admin, "?status=delivered").await;
        assert!(all.len() >= types.len(), "{all:?}");
        assert!(
            all.iter().any(|d| d["attempts"].as_i64() >= Some(2)),
            "{all:?}"
        );
        assert!(all.iter().all(|d| d["last_status"] == 204));
        let bad = call(
            &w.s,
            "GET",
            "/v1/admin/webhook-deliveries?status=lost",
            &admin,
            None,
            None,
        )
        .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
        let own = call(&w.s, "GET", "/v1/webhook", &w.key, None, None).await;
        assert_eq!(own.body["webhook"]["url"], hooks.url.as_str());
        assert!(!own.body["deliveries"].as_array().unwrap().is_empty());
        // An app without admin does not see the admin view.
        let denied = call(
            &w.s,
            "GET",
            "/v1/admin/webhook-deliveries",
            &w.key,
            None,
            None,
        )
        .await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text);

        // Registration is audited; the secret is nowhere in the log.
        let log = audit_text(&w.s).await;
        assert!(log.contains("webhook.register"));
        assert!(!log.contains(&secret));
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_is_marked_failed_and_can_be_sent_again() {
    let w = world_with(&[
        ("PARAPET_WEBHOOK_RETRY_BASE_MS", "50"),
        ("PARAPET_WEBHOOK_MAX_ATTEMPTS", "3"),
    ])
    .await;
    let hooks = receiver(usize::MAX).await;
    register(&w, &hooks.url).await;
    let alice = user(&w, "alice", false).await;
    let (_, admin) = app_with_grants_trusting(&w.s, &w.issuer, &["admin"]).await;

    let mut failed = Vec::new();
    for _ in 0..300 {
        failed = admin_deliveries(&w, &admin, "?status=failed").await;
        if failed.iter().any(|d| d["event_type"] == "device.added") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivery = failed
        .iter()
        .find(|d| d["event_type"] == "device.added")
        .unwrap_or_else(|| panic!("no failed delivery: {failed:?}"))
        .clone();
    assert_eq!(delivery["attempts"], 3);
    assert_eq!(delivery["last_status"], 500);
    assert_eq!(delivery["last_error"], "http_status");
    assert_eq!(delivery["user_id"], alice.id.as_str());
    let id = delivery["id"].as_str().unwrap();
    let tries = hooks.received().iter().filter(|r| r.delivery == id).count();
    assert_eq!(tries, 3, "exactly max_attempts tries");

    // The receiver is mended; an admin sends the delivery again and it arrives.
    hooks.fail_first.store(0, Ordering::SeqCst);
    let again = call(
        &w.s,
        "POST",
        &format!("/v1/admin/webhook-deliveries/{id}/redeliver"),
        &admin,
        None,
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    hooks.wait_for(&["device.added"]).await;
    let unknown = call(
        &w.s,
        "POST",
        &format!(
            "/v1/admin/webhook-deliveries/whd_{}/redeliver",
            "0".repeat(32)
        ),
        &admin,
        None,
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);

    // Removing the webhook stops deliveries to it.
    let removed = call(&w.s, "DELETE", "/v1/webhook", &w.key, None, None).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    let gone = call(&w.s, "GET", "/v1/webhook", &w.key, None, None).await;
    assert_eq!(gone.body["webhook"], Value::Null);
}

/// A TCP listener on loopback that only counts the connections it gets: whatever a webhook
/// URL names, nothing may connect here unless the operator allowed loopback.
struct Counter {
    port: u16,
    connections: Arc<AtomicUsize>,
}

async fn counter() -> Counter {
    let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let mut listeners = vec![v4];
    // `localhost` may resolve to ::1 as well: count there too, where the host has IPv6.
    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
        listeners.push(v6);
    }
    for listener in listeners {
        let n = connections.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = listener.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    Counter { port, connections }
}

/// An app of `w` trusting `w.issuer` as `w.key`'s app does, with a webhook at `url`, and a
/// session of `sub` there (so that `sub`'s security events are its to hear about).
async fn app_hooked_to(w: &World, url: &str, sub: &str) -> String {
    let (_, key) =
        users_support::app_with_grants_trusting_keys(&w.s, &w.issuer, &["sign"], w.jwks.clone())
            .await;
    let a = call(
        &w.s,
        "POST",
        "/v1/webhook",
        &key,
        None,
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{url}: {}", a.text);
    users_support::login_ok(&w.s, &key, &w.issuer, sub).await;
    key
}

/// The app's own view of its one delivery, once its last attempt is over.
async fn settled(w: &World, key: &str) -> (Value, String) {
    for _ in 0..300 {
        let a = call(&w.s, "GET", "/v1/webhook", key, None, None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        if let Some(d) = a.body["deliveries"].as_array().and_then(|d| d.first())
            && d["status"] == "failed"
        {
            return (d.clone(), a.body["deliveries"].to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no failed delivery for an app");
}

/// Words of the underlying errors that must never reach an app.
fn assert_coarse(text: &str) {
    for detail in [
        "os error",
        "Connection refused",
        "InvalidContentType",
        "rustls",
        "io:",
        "outbound_allow",
        "resolves",
        "127.0.0.1",
    ] {
        assert!(
            !text.contains(detail),
            "{detail:?} shown to the app: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_never_reach_internal_addresses() {
    // No outbound allowlist (the app reads the issuer's keys from a file, so logins need no
    // fetch): loopback, private and link-local addresses are all out of reach.
    let w = world_with_jwks_file(&[
        ("PARAPET_OUTBOUND_ALLOW", ""),
        ("PARAPET_WEBHOOK_RETRY_BASE_MS", "50"),
        ("PARAPET_WEBHOOK_MAX_ATTEMPTS", "2"),
    ])
    .await;
    let listening = counter().await;
    let port = listening.port;
    let urls = [
        "https://169.254.169.254/x".to_owned(),
        "https://10.0.0.1/".to_owned(),
        // A name is resolved and its addresses checked: `localhost` is loopback.
        format!("http://localhost:{port}/hook"),
        format!("https://localhost:{port}/hook"),
        // IPv6 spellings of an IPv4 address are the IPv4 address.
        format!("https://[::ffff:127.0.0.1]:{port}/hook"),
        format!("https://[::ffff:a9fe:a9fe]:{port}/hook"),
    ];
    let mut keys = Vec::new();
    for url in &urls {
        keys.push((url, app_hooked_to(&w, url, "alice").await));
    }
    // A device of Alice's is added: every app above is told, or would be.
    let started = std::time::Instant::now();
    user_with(&w, "alice", false, false).await;
    for (url, key) in &keys {
        let (d, text) = settled(&w, key).await;
        assert_eq!(d["event_type"], "device.added", "{url}: {text}");
        assert_eq!(d["last_error"], "refused_address", "{url}: {text}");
        assert_eq!(d["attempts"], 2, "{url}: {text}");
        assert_eq!(d["last_status"], Value::Null, "{url}: {text}");
        assert_coarse(&text);
    }
    // Refused before any connection: nothing waited for a timeout, nothing reached loopback.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(listening.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_see_only_coarse_failure_kinds() {
    // Loopback is allowed here (the tests' default): the receivers are reached, and what went
    // wrong there is told to the app only as a kind.
    let w = world_with(&[
        ("PARAPET_WEBHOOK_RETRY_BASE_MS", "50"),
        ("PARAPET_WEBHOOK_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let plain = receiver(usize::MAX).await;
    let cases = [
        // Nothing listens: the old answer was the socket error.
        (format!("http://127.0.0.1:{closed}/hook"), "connect_failed"),
        // A plain-HTTP server behind an https URL: the old answer was the TLS alert.
        (plain.url.replace("http://", "https://"), "tls"),
        // It answers, but not 2xx.
        (plain.url.clone(), "http_status"),
    ];
    let mut keys = Vec::new();
    for (url, kind) in &cases {
        keys.push((url, *kind, app_hooked_to(&w, url, "bob").await));
    }
    user_with(&w, "bob", false, false).await;
    for (url, kind, key) in &keys {
        let (d, text) = settled(&w, key).await;
        assert_eq!(d["last_error"], *kind, "{url}: {text}");
        assert_coarse(&text);
    }
    // The admin view shows the same kinds.
    let (_, admin) = app_with_grants_trusting(&w.s, &w.issuer, &["admin"]).await;
    let all = admin_deliveries(&w, &admin, "?status=failed").await;
    assert!(all.iter().any(|d| d["last_error"] == "tls"), "{all:?}");
    assert!(
        all.iter()
            .all(|d| FAILURE_KINDS.contains(&d["last_error"].as_str().unwrap()))
    );
    // And with loopback allowed, a name that resolves to it is reached.
    let hooks = receiver(0).await;
    let by_name = hooks.url.replace("127.0.0.1", "localhost");
    app_hooked_to(&w, &by_name, "carol").await;
    user_with(&w, "carol", false, false).await;
    hooks.wait_for(&["device.added"]).await;
}

const FAILURE_KINDS: &[&str] = parapet_gateway::webhooks::delivery::FailureKind::NAMES;

/// The notifier reads the log and then writes its deliveries and cursor. On SQLite another
/// connection may hold the write lock at that moment (the audit writer, a replica heartbeat):
/// the notifier must wait its turn, not fail the round. A deferred transaction could not wait
/// (SQLite answers `database is locked` at once to a reader that tries to write), so a round
/// that met any other writer was lost — rounds every second against heartbeats every second
/// lost them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_waits_for_another_writer_instead_of_failing_its_round() {
    use parapet_gateway::audit::event::{AuditEvent, EventKind};
    use parapet_gateway::store::{Store, StoreOptions};
    use parapet_gateway::webhooks::notifier;

    let dbs = support::databases("notifier.db").await;
    let db = &dbs[0];
    let store = Store::open(
        &db.url,
        &StoreOptions {
            timeout: Duration::from_secs(5),
            max_connections: 4,
        },
    )
    .await
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut e = AuditEvent::new(EventKind::Admin, now, "req-1".to_owned());
    e.action = Some("device.add".to_owned());
    e.user = Some("usr_1".to_owned());
    store.append_batch(&[e]).await.unwrap();

    // Another connection takes the write lock and keeps it for 400 ms.
    let path = db.url.trim_start_matches("sqlite://");
    let mut other = support::hold_sqlite_write_lock(std::path::Path::new(path)).await;
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    });

    let queued = notifier::enqueue(&store, now).await;
    holder.await.unwrap();
    // Nobody registered a webhook: nothing is queued, but the round succeeded and the cursor
    // moved past the event.
    assert_eq!(queued.unwrap(), 0);
    let Store::Sqlite(pool) = &store else {
        unreachable!("the first database is SQLite")
    };
    let (cursor,): (i64,) = sqlx::query_as("SELECT seq FROM webhook_cursor WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(cursor >= 1, "cursor {cursor}");
}
