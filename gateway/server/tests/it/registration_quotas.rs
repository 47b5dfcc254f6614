//! New accounts on the page, through the whole HTTP stack with a software passkey: starts are
//! limited per client IP (IPv6 per /64), so one address can leave only its own share of
//! ceremonies behind and never spends anyone else's; the gateway-wide daily cap counts completed
//! registrations, so bare starts cannot close the page, and it is checked again before an
//! account is stored. Refusals are `429 registration_limited` with `Retry-After`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use crate::users_support;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use parapet_gateway::http::{AppState, app};
use serde_json::{Value, json};
use tower::ServiceExt;
use users_support::gateway_with;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, Url, WebauthnAuthenticator};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const ORIGIN: &str = "http://localhost:8080";

struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

/// A page call with no session from `ip`.
async fn page(s: &Arc<AppState>, ip: &str, path: &str, body: Value) -> Answer {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header("origin", ORIGIN)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let peer = SocketAddr::new(ip.parse().unwrap(), 50000);
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = app(s.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn start(s: &Arc<AppState>, ip: &str) -> Answer {
    page(s, ip, "/ui/api/register/start", json!({})).await
}

/// Finishes the registration `started` answered with a new software passkey.
async fn finish(s: &Arc<AppState>, ip: &str, started: &Value) -> Answer {
    let ccr: CreationChallengeResponse =
        serde_json::from_value(started["options"].clone()).unwrap();
    let cred = SoftPasskey::new(true)
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    page(
        s,
        ip,
        "/ui/api/register/finish",
        json!({"ceremony_id": started["ceremony_id"], "user": started["user"], "credential": cred}),
    )
    .await
}

async fn ceremonies(s: &AppState) -> i64 {
    match s.audit.store() {
        parapet_gateway::audit::Store::Sqlite(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM passkey_ceremonies")
                .fetch_one(p)
                .await
                .unwrap()
        }
        parapet_gateway::audit::Store::Postgres(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM passkey_ceremonies")
                .fetch_one(p)
                .await
                .unwrap()
        }
    }
}

fn assert_limited(a: &Answer, max_wait: u64) {
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert_eq!(a.body["code"], "registration_limited", "{}", a.body);
    let wait = a.retry_after.expect("Retry-After");
    assert!((1..=max_wait).contains(&wait), "Retry-After {wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_registrations_are_limited_per_client_ip_and_ipv6_per_64() {
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway_with(data.path(), &[("PARAPET_REGISTRATION_IP_RATE", "3/h")]).await;

    for _ in 0..3 {
        let a = start(&s, "198.51.100.7").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    // The fourth start from the address is refused, and leaves no ceremony behind.
    let refused = start(&s, "198.51.100.7").await;
    assert_limited(&refused, 1200);
    assert_eq!(ceremonies(&s).await, 3);

    // Other addresses are not affected: a stranger spends only their own address's quota.
    let other = start(&s, "198.51.100.8").await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let r = finish(&s, "198.51.100.8", &other.body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // IPv6 addresses of one /64 share a quota; the next /64 has its own.
    for host in ["1", "2", "ffff:1"] {
        let a = start(&s, &format!("2001:db8:7:1::{host}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    assert_limited(&start(&s, "2001:db8:7:1:abcd::9").await, 1200);
    let a = start(&s, "2001:db8:7:2::1").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_counts_completed_registrations_and_is_checked_before_storing() {
    let data = tempfile::tempdir().unwrap();
    let (s, clock) = gateway_with(
        data.path(),
        &[
            ("PARAPET_REGISTRATIONS_PER_DAY", "2"),
            ("PARAPET_REGISTRATION_IP_RATE", "100/h"),
        ],
    )
    .await;

    // Bare starts do not count against the cap: they cannot close the page to others.
    let mut bare = Vec::new();
    for _ in 0..5 {
        let a = start(&s, "203.0.113.1").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        bare.push(a.body);
    }
    // Two people complete their registrations: the cap is reached.
    for ip in ["203.0.113.2", "203.0.113.3"] {
        let a = start(&s, ip).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let r = finish(&s, ip, &a.body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // Now nobody starts one…
    assert_limited(&start(&s, "203.0.113.4").await, 86_400);
    // …and a registration started before the cap was reached is not stored either.
    let late = finish(&s, "203.0.113.1", &bare[0]).await;
    assert_limited(&late, 86_400);
    let user: uuid::Uuid = bare[0]["user"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        parapet_gateway::accounts::users::store::user_disabled(s.audit.store(), user)
            .await
            .unwrap(),
        None,
        "the refused registration made an account"
    );
    assert!(
        !parapet_gateway::accounts::passkeys::has_live_passkey(s.audit.store(), user)
            .await
            .unwrap()
    );

    // A day later the cap has room again.
    clock.advance(86_400 + 1);
    let a = start(&s, "203.0.113.4").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let r = finish(&s, "203.0.113.4", &a.body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
