//! The HTTP contract, exercised through the real router with `oneshot` (no socket).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use crate::support::root;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use alloy::consensus::{SignableTransaction, TxEip1559};
use alloy::primitives::{Address, Bytes, TxKind, U256, address};
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use parapet_gateway::config::Config;
use parapet_gateway::http::{AppState, ROUTES, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789abcdef";
const USDC: Address = address!("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");

/// A gateway state over a fresh SQLite audit store in its own directory (kept alive with it).
async fn state_with(
    policies: &Path,
    schemas: &Path,
    body_limit: Option<usize>,
) -> (Arc<AppState>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut env = HashMap::new();
    env.insert(
        "PARAPET_DATA_DIR".to_owned(),
        data.path().display().to_string(),
    );
    env.insert("PARAPET_API_TOKEN".to_owned(), TOKEN.to_owned());
    env.insert(
        "PARAPET_POLICIES_DIR".to_owned(),
        policies.display().to_string(),
    );
    env.insert(
        "PARAPET_SCHEMAS_DIR".to_owned(),
        schemas.display().to_string(),
    );
    if let Some(l) = body_limit {
        env.insert("PARAPET_BODY_LIMIT_BYTES".to_owned(), l.to_string());
    }
    let mut config = Config::load(None, &env).unwrap();
    (
        parapet_gateway::server::build_state(&mut config)
            .await
            .unwrap(),
        data,
    )
}

async fn state() -> (Arc<AppState>, tempfile::TempDir) {
    state_with(&root().join("policies"), &root().join("schemas"), None).await
}

async fn call(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

fn post(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn erc20_transfer_raw(amount: u64) -> String {
    let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(&[0x11; 20]);
    data.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
    let tx = TxEip1559 {
        chain_id: 1,
        nonce: 7,
        gas_limit: 90_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(USDC),
        value: U256::ZERO,
        access_list: Default::default(),
        input: Bytes::from(data),
    };
    let mut buf = Vec::new();
    tx.encode_for_signing(&mut buf);
    format!("0x{}", hex::encode(buf))
}

fn authorize_body(tx: &str) -> Value {
    json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa", "labels": []}, "chain_id": 1, "transaction": tx})
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn health_is_open_and_carries_a_request_id() {
    let (s, _data) = state().await;
    let (status, headers, body) =
        call(&s, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
}

#[tokio::test]
async fn v1_needs_the_token() {
    let (s, _data) = state().await;
    let body = authorize_body(&erc20_transfer_raw(1));
    let no_token = Request::post("/v1/authorize")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, b) = call(&s, no_token).await;
    assert_error(status, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = Request::post("/v1/authorize")
        .header("content-type", "application/json")
        .header("authorization", "Bearer test-token-0123456789abcdeX")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, b) = call(&s, wrong).await;
    assert_error(status, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _, b) = call(
        &s,
        Request::post("/v1/admin/policies/reload")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(status, &b, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn authorize_answers_with_an_explained_decision() {
    let (s, _data) = state().await;
    let (status, headers, b) = call(
        &s,
        post(
            "/v1/authorize",
            &authorize_body(&erc20_transfer_raw(250_000_000)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["decision"], "allow", "{b}");
    assert_eq!(b["action"], "erc20_transfer");
    assert_eq!(b["labels_source"], "request");
    assert_eq!(b["request_id"], headers["x-request-id"].to_str().unwrap());
    assert_eq!(b["policy_version"], s.engine.current().version());
    assert_eq!(b["facts"]["token"]["amount"]["scaled"], 250_000_000_000i64);
    assert!(
        b["determining_policies"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    let metrics = call(&s, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .2;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("parapet_decisions_total{outcome=\"allow\"} 1")
    );
}

#[tokio::test]
async fn hostile_bodies_get_typed_4xx() {
    let (s, _data) = state_with(
        &root().join("policies"),
        &root().join("schemas"),
        Some(4096),
    )
    .await;
    let good = erc20_transfer_raw(1);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1, "transaction": good, "surprise": 1}),
            "invalid_request",
        ),
        (
            json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1, "transaction": good, "hash": format!("0x{}", "00".repeat(32))}),
            "invalid_request",
        ),
        (
            json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1}),
            "invalid_request",
        ),
        (
            json!({"wallet": {"address": "0x1234"}, "chain_id": 1, "transaction": good}),
            "invalid_address",
        ),
        (
            json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": -1, "transaction": good}),
            "invalid_request",
        ),
        (
            json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1, "transaction": "0x02f"}),
            "invalid_hex",
        ),
    ];
    for (body, code) in cases {
        let (status, _, b) = call(&s, post("/v1/authorize", &body)).await;
        assert_error(status, &b, StatusCode::BAD_REQUEST, code);
    }
    let (status, _, b) = call(&s, post("/v1/authorize", &json!({"pad": "x".repeat(8000)}))).await;
    assert_error(status, &b, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let text = Request::post("/v1/authorize")
        .header("content-type", "text/plain")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, b) = call(&s, text).await;
    assert_error(
        status,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (status, _, b) = call(
        &s,
        Request::post("/v1/authorize")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from("{not json"))
            .unwrap(),
    )
    .await;
    assert_error(status, &b, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_typed_errors() {
    let (s, _data) = state().await;
    let (status, _, b) = call(&s, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_error(status, &b, StatusCode::NOT_FOUND, "not_found");
    let (status, _, b) = call(&s, Request::delete("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    assert!(b["code"].is_string());
}

#[tokio::test]
async fn openapi_document_and_routes_agree() {
    let (s, _data) = state().await;
    let (status, _, doc) = call(
        &s,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut routed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    routed.sort();
    assert_eq!(
        documented, routed,
        "schemas/openapi.json and http::ROUTES differ"
    );
    for (method, path) in ROUTES {
        let req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(*path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (status, _, b) = call(&s, req).await;
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status} {b}"
        );
        if status == StatusCode::NOT_FOUND {
            // A routed path answers 404 for a resource it does not have (a made-up id); the
            // router's own 404 would also refuse every other method with 404, not 405.
            let other = Request::builder()
                .method("PATCH")
                .uri(*path)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap();
            let (status, _, b) = call(&s, other).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is not routed: {b}"
            );
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn reload_swaps_valid_sets_and_keeps_the_old_one_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("policies"), &dir.path().join("policies"));
    copy_dir(&root().join("schemas"), &dir.path().join("schemas"));
    let (s, _data) = state_with(
        &dir.path().join("policies"),
        &dir.path().join("schemas"),
        None,
    )
    .await;
    let before = s.engine.current().version().to_owned();

    std::fs::write(dir.path().join("policies/zz-broken.cedar"), "@id(\"broken\")\npermit(principal, action, resource) when { context.no_such_attribute };\n").unwrap();
    let (status, _, b) = call(&s, post("/v1/admin/policies/reload", &json!({}))).await;
    assert_error(
        status,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "policy_set_invalid",
    );
    assert!(
        b["message"].as_str().unwrap().contains("zz-broken.cedar:"),
        "{b}"
    );
    assert_eq!(s.engine.current().version(), before);

    std::fs::write(
        dir.path().join("policies/zz-broken.cedar"),
        "@id(\"extra-raw-hash-forbid\")\n@reason(\"test\")\nforbid(principal, action == Parapet::Action::\"raw_hash\", resource);\n",
    )
    .unwrap();
    let (status, _, b) = call(&s, post("/v1/admin/policies/reload", &json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_ne!(b["policy_version"], before.as_str());
    assert_eq!(b["policy_version"], s.engine.current().version());
}
