//! The audit log through the HTTP service: every decision and refusal is logged before it is
//! answered, a store that cannot commit turns decisions into 503 `audit_unavailable` and
//! readiness into 503, and `GET /v1/audit/events` pages and exports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support::root;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use parapet_gateway::config::Config;
use parapet_gateway::http::{AppState, app};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "audit-test-token-0123456789";

async fn state(dir: &Path) -> Arc<AppState> {
    let env: HashMap<String, String> = [
        ("PARAPET_API_TOKEN", TOKEN.to_owned()),
        ("PARAPET_DATA_DIR", dir.display().to_string()),
        (
            "PARAPET_POLICIES_DIR",
            root().join("policies").display().to_string(),
        ),
        (
            "PARAPET_SCHEMAS_DIR",
            root().join("schemas").display().to_string(),
        ),
        ("PARAPET_AUDIT_TIMEOUT_MS", "500".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut config = Config::load(None, &env).unwrap();
    parapet_gateway::server::build_state(&mut config)
        .await
        .unwrap()
}

async fn call(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn authorize(body: &str) -> Request<Body> {
    Request::post("/v1/authorize")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap()
}

fn good_body() -> String {
    std::fs::read_to_string(root().join("tests/fixtures/good/erc20-transfer-usdc-small.json"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_refusals_are_logged_before_the_answer_and_readable_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (status, headers, body) = call(&s, authorize(&good_body())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rid = headers["x-request-id"].to_str().unwrap().to_owned();
    let answer: Value = serde_json::from_str(&body).unwrap();
    // Already in the log when the answer arrives.
    let row = s
        .audit
        .store()
        .by_request_id(&rid)
        .await
        .unwrap()
        .expect("logged");
    let ev: Value = serde_json::from_str(&row.canonical).unwrap();
    assert_eq!(ev["decision"], answer["decision"]);
    assert_eq!(ev["digest"], answer["digest"]);
    assert_eq!(ev["policy_version"], answer["policy_version"]);
    assert!(ev["cedar_request"].is_string() && ev["entities"].is_string());
    assert!(!row.canonical.contains(TOKEN));
    // The version it cites is stored with its files.
    let v = s
        .audit
        .store()
        .policy_version(ev["policy_version"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(v.files.iter().any(|(p, _)| p.ends_with(".cedar")));

    let (status, headers, _) = call(
        &s,
        authorize(r#"{"wallet":{"address":"0x12"},"chain_id":1,"hash":"0x00"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let refused_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let (status, _, body) = call(
        &s,
        get(&format!("/v1/audit/events?request_id={refused_id}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["events"][0]["event"]["kind"], "refused");
    assert_eq!(
        page["events"][0]["event"]["refusal"]["code"],
        "invalid_address"
    );

    for _ in 0..3 {
        assert_eq!(call(&s, authorize(&good_body())).await.0, StatusCode::OK);
    }
    let (_, _, body) = call(&s, get("/v1/audit/events?limit=2&decision=allow")).await;
    let p1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p1["events"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, _, body) = call(
        &s,
        get(&format!(
            "/v1/audit/events?limit=2&decision=allow&cursor={cursor}"
        )),
    )
    .await;
    let p2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p2["events"].as_array().unwrap().len(), 2);
    // A full page always offers a cursor; the page after the last is empty and ends it.
    let cursor = p2["next_cursor"].as_str().unwrap();
    let (_, _, body) = call(
        &s,
        get(&format!(
            "/v1/audit/events?limit=2&decision=allow&cursor={cursor}"
        )),
    )
    .await;
    let p3: Value = serde_json::from_str(&body).unwrap();
    assert!(p3["events"].as_array().unwrap().is_empty() && p3["next_cursor"].is_null());

    let (status, headers, body) = call(&s, get("/v1/audit/events?format=ndjson")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(body.lines().count(), 5);
    let path = dir.path().join("export.ndjson");
    std::fs::write(&path, &body).unwrap();
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/verify_chain.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (_, _, csv) = call(&s, get("/v1/audit/events?format=csv&kind=decision")).await;
    assert_eq!(csv.lines().count(), 5);
    assert_eq!(
        call(&s, get("/v1/audit/events?format=xml")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&s, get("/v1/audit/events?secret=1")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&s, get("/v1/audit/events?from=yesterday")).await.0,
        StatusCode::BAD_REQUEST
    );
    let unauth = Request::get("/v1/audit/events")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, unauth).await.0, StatusCode::UNAUTHORIZED);
    s.audit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_fails_decisions_closed_and_readiness_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    assert_eq!(call(&s, authorize(&good_body())).await.0, StatusCode::OK);
    let before = s.audit.store().range(0, 1000).await.unwrap().len();
    // Someone else holds the database's write lock.
    let mut blocker = crate::support::hold_sqlite_write_lock(&dir.path().join("parapet.db")).await;
    let started = Instant::now();
    let (status, _, body) = call(&s, authorize(&good_body())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["code"], "audit_unavailable");
    assert!(err.get("decision").is_none());
    assert!(
        !body.contains("database") && !body.contains("parapet.db"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, body) = call(&s, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    drop(blocker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&s, authorize(&good_body())).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, _) = call(&s, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    // The refused decision left no event; the chain is whole.
    let after = s.audit.store().range(0, 1000).await.unwrap().len();
    assert!(after > before);
    let r = parapet_gateway::audit::verify::verify(s.audit.store(), &[], None)
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    s.audit.shutdown().await;
}
