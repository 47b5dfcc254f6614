//! Shared by the OIDC and session tests: a test OIDC issuer whose ES256 keys are made here and
//! whose JWKS is served over a real local HTTP server, and a gateway with a movable clock.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parapet_gateway::accounts::apps::{self, Actor, Auditor, NewApp};
use parapet_gateway::accounts::users::oidc::{self, JwksSource, TrustedIssuer};
use parapet_gateway::clock::OffsetClock;
use parapet_gateway::config::Config;
use parapet_gateway::http::{AppState, app};
use parapet_gateway::records::AppLimits;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tower::ServiceExt;

pub use crate::support::root;

pub fn op() -> Actor {
    Actor {
        who: "test-operator".to_owned(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// One signing key of the test issuer.
pub struct Key {
    pub kid: String,
    pub enc: EncodingKey,
    pub jwk: Jwk,
}

pub fn new_key(kid: &str) -> Key {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let enc = EncodingKey::from_ec_der(&kp.serialize_der());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    Key {
        kid: kid.to_owned(),
        enc,
        jwk,
    }
}

/// A local OIDC issuer: `url` is both its `iss` and the base of its JWKS URL.
pub struct Issuer {
    pub url: String,
    pub jwks_url: String,
    published: Arc<Mutex<JwkSet>>,
    pub fetches: Arc<AtomicU64>,
    pub keys: Mutex<Vec<Arc<Key>>>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let published = Arc::new(Mutex::new(JwkSet { keys: Vec::new() }));
        let fetches = Arc::new(AtomicU64::new(0));
        let (p, f) = (published.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (p, f) = (p.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    axum::Json(serde_json::to_value(&*p.lock()).unwrap())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let issuer = Issuer {
            url: format!("http://127.0.0.1:{}", addr.port()),
            jwks_url: format!("http://127.0.0.1:{}/jwks", addr.port()),
            published,
            fetches,
            keys: Mutex::new(Vec::new()),
        };
        issuer.rotate_to("k1");
        issuer
    }

    /// Publishes only a fresh key `kid` (the previous ones disappear from the JWKS).
    pub fn rotate_to(&self, kid: &str) -> Arc<Key> {
        let key = Arc::new(new_key(kid));
        *self.published.lock() = JwkSet {
            keys: vec![key.jwk.clone()],
        };
        self.keys.lock().push(key.clone());
        key
    }

    pub fn current(&self) -> Arc<Key> {
        self.keys.lock().last().unwrap().clone()
    }

    /// The JWKS as published now.
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&*self.published.lock()).unwrap()
    }

    /// Standard claims for `sub` with `aud` and `nonce`, valid now.
    pub fn claims(&self, sub: &str, aud: &str, nonce: &str) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"iss": self.url, "sub": sub, "aud": aud, "nonce": nonce, "iat": now, "exp": now + 300})
    }

    pub fn sign(&self, key: &Key, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&h, claims, &key.enc).unwrap()
    }

    pub fn token(&self, sub: &str, aud: &str, nonce: &str) -> String {
        self.sign(&self.current(), &self.claims(sub, aud, nonce))
    }
}

pub const AUD: &str = "checkout-web";

/// A gateway on `data` with an offset clock.
pub async fn gateway(data: &Path) -> (Arc<AppState>, Arc<OffsetClock>) {
    gateway_with(data, &[]).await
}

/// What tests allow outbound requests to reach: their issuers and webhook receivers listen on
/// loopback, which the gateway refuses unless the operator allows it.
pub const TEST_OUTBOUND_ALLOW: &str = "127.0.0.1/32,::1/128";

/// [`gateway`] with more configuration. Outbound requests may reach loopback
/// ([`TEST_OUTBOUND_ALLOW`]) unless `extra` sets `PARAPET_OUTBOUND_ALLOW` (empty: nothing).
pub async fn gateway_with(
    data: &Path,
    extra: &[(&str, &str)],
) -> (Arc<AppState>, Arc<OffsetClock>) {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("PARAPET_DATA_DIR".into(), data.display().to_string());
    env.insert(
        "PARAPET_POLICIES_DIR".into(),
        root().join("policies").display().to_string(),
    );
    env.insert(
        "PARAPET_SCHEMAS_DIR".into(),
        root().join("schemas").display().to_string(),
    );
    env.insert("PARAPET_STATIC_TOKEN".into(), "false".into());
    env.insert("PARAPET_OUTBOUND_ALLOW".into(), TEST_OUTBOUND_ALLOW.into());
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut config = Config::load(None, &env).unwrap();
    let clock = Arc::new(OffsetClock::default());
    let s = parapet_gateway::server::build_state_with_clock(&mut config, clock.clone())
        .await
        .unwrap();
    (s, clock)
}

/// Creates an app (grants sign and admin; 10 min idle, 1 h absolute) that trusts `issuer`.
pub async fn app_trusting(s: &AppState, issuer: &Issuer) -> (String, String) {
    app_with_grants_trusting(s, issuer, &["sign", "admin"]).await
}

/// [`app_trusting`] with the given grants only.
pub async fn app_with_grants_trusting(
    s: &AppState,
    issuer: &Issuer,
    grants: &[&str],
) -> (String, String) {
    app_with_grants_trusting_keys(s, issuer, grants, JwksSource::Url(issuer.jwks_url.clone())).await
}

/// [`app_with_grants_trusting`] with the issuer's keys taken from `jwks`.
pub async fn app_with_grants_trusting_keys(
    s: &AppState,
    issuer: &Issuer,
    grants: &[&str],
    jwks: JwksSource,
) -> (String, String) {
    let new = NewApp {
        name: "Checkout".to_owned(),
        grants: grants.iter().map(|g| (*g).to_owned()).collect(),
        groups: Vec::new(),
        limits: AppLimits {
            rate: None,
            session_ttl: std::time::Duration::from_secs(3600),
            session_idle: std::time::Duration::from_secs(600),
        },
        redirect_uris: Vec::new(),
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
    oidc::set_issuer(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &op(),
        &TrustedIssuer {
            app_id: app.id.clone(),
            issuer: issuer.url.clone(),
            audiences: vec![AUD.to_owned()],
            jwks,
        },
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    (app.id, key)
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
}

/// `method path` with the app `key`, an optional session, an optional JSON body, from `ip`.
pub async fn call(
    s: &Arc<AppState>,
    method: &str,
    path: &str,
    key: &str,
    session: Option<&str>,
    body: Option<Value>,
) -> Answer {
    call_with(s, method, path, key, session, &[], body).await
}

/// [`call`] with more headers.
pub async fn call_with(
    s: &Arc<AppState>,
    method: &str,
    path: &str,
    key: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    call_from(s, PEER, method, path, key, session, headers, body).await
}

/// The TCP peer of every call that does not name one.
pub const PEER: &str = "10.9.8.7";

/// [`call_with`] from the TCP peer `peer` (an IPv4 or IPv6 address).
#[allow(clippy::too_many_arguments, reason = "a request, spelled out")]
pub async fn call_from(
    s: &Arc<AppState>,
    peer: &str,
    method: &str,
    path: &str,
    key: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(path);
    // An empty key leaves `authorization` to `headers` (a device's `Device <token>`).
    if !key.is_empty() {
        b = b.header("authorization", format!("Bearer {key}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if let Some(t) = session {
        b = b.header("parapet-session", t);
    }
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut req = b.body(body).unwrap();
    let peer = SocketAddr::new(peer.parse().unwrap(), 40000);
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = app(s.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, body, text }
}

pub async fn nonce(s: &Arc<AppState>, key: &str) -> String {
    let a = call(s, "POST", "/v1/sessions/oidc/nonce", key, None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body["nonce"].as_str().unwrap().to_owned()
}

pub async fn login(s: &Arc<AppState>, key: &str, id_token: &str) -> Answer {
    call(
        s,
        "POST",
        "/v1/sessions/oidc",
        key,
        None,
        Some(json!({ "id_token": id_token })),
    )
    .await
}

/// [`login`] from the TCP peer `peer`.
pub async fn login_from(s: &Arc<AppState>, peer: &str, key: &str, id_token: &str) -> Answer {
    call_from(
        s,
        peer,
        "POST",
        "/v1/sessions/oidc",
        key,
        None,
        &[],
        Some(json!({ "id_token": id_token })),
    )
    .await
}

/// Logs `sub` in through `issuer` and returns (session token, user id).
pub async fn login_ok(
    s: &Arc<AppState>,
    key: &str,
    issuer: &Issuer,
    sub: &str,
) -> (String, String) {
    let n = nonce(s, key).await;
    let a = login(s, key, &issuer.token(sub, AUD, &n)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    (
        a.body["session_token"].as_str().unwrap().to_owned(),
        a.body["user_id"].as_str().unwrap().to_owned(),
    )
}

/// A `/v1/authorize` body: the shipped USDC transfer fixture.
pub fn authorize_body() -> Value {
    let body =
        std::fs::read_to_string(root().join("tests/fixtures/good/erc20-transfer-usdc-small.json"))
            .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Every event in the log, parsed.
pub async fn events(s: &AppState) -> Vec<Value> {
    s.audit
        .store()
        .range(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.canonical).unwrap())
        .collect()
}

/// The whole log's text, as an export would have it.
pub async fn audit_text(s: &AppState) -> String {
    s.audit
        .store()
        .range(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.canonical.clone())
        .collect::<Vec<_>>()
        .join("\n")
}
