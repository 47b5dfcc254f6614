//! OIDC logins in process against a test issuer whose ES256 keys are made here and whose JWKS is
//! served over real local HTTP: a good login, then every way an ID token must be refused (one
//! status and body for all), key rotation, and no token or nonce in the audit log or a body.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use crate::users_support;
use base64::Engine as _;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use users_support::*;

#[tokio::test]
async fn a_valid_id_token_logs_in_and_creates_the_user_once() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (app_id, key) = app_trusting(&s, &issuer).await;

    let n = nonce(&s, &key).await;
    assert_eq!(n.len(), 32);
    let a = login(&s, &key, &issuer.token("alice", AUD, &n)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let token = a.body["session_token"].as_str().unwrap();
    assert!(token.starts_with("ps_") && token.len() == 67);
    assert_eq!(a.body["idle_secs"], 600);
    let user = a.body["user_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&user).is_ok());

    // The same (iss, sub) again is the same user.
    let (_, again) = login_ok(&s, &key, &issuer, "alice").await;
    assert_eq!(again, user);
    let (_, bob) = login_ok(&s, &key, &issuer, "bob").await;
    assert_ne!(bob, user);

    let events = events(&s).await;
    let logins: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "session" && e["action"] == "session.login")
        .collect();
    assert_eq!(logins.len(), 3);
    assert_eq!(logins[0]["user"], user.as_str());
    assert_eq!(logins[0]["app"], app_id.as_str());
    assert_eq!(logins[0]["request"]["method"], "oidc");
    assert_eq!(logins[0]["request"]["created_user"], true);
    assert_eq!(logins[1]["request"]["created_user"], false);
    // Nothing secret reached the log.
    let text = audit_text(&s).await;
    assert!(!text.contains(token) && !text.contains(&n));
    assert!(!text.contains(&token[3..]));
}

/// Every refusal looks the same: 401 login_failed, same message.
fn assert_refused(a: &Answer, case: &str) {
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{case}: {}", a.text);
    assert_eq!(a.body["code"], "login_failed", "{case}");
    assert_eq!(a.body["message"], "login failed", "{case}");
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn bad_id_tokens_are_refused_alike_and_leave_no_secret_behind() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    let k = issuer.current();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut secrets: Vec<String> = Vec::new();

    // Expired (beyond the 60 s leeway).
    let n = nonce(&s, &key).await;
    let mut c = issuer.claims("carol", AUD, &n);
    c["exp"] = json!(now - 120);
    c["iat"] = json!(now - 600);
    let t = issuer.sign(&k, &c);
    assert_refused(&login(&s, &key, &t).await, "expired");
    secrets.push(t);
    // Within the leeway is fine.
    c["exp"] = json!(now - 10);
    let t = issuer.sign(&k, &c);
    assert_eq!(login(&s, &key, &t).await.status, StatusCode::OK);

    // Not yet valid, issued in the future.
    let n = nonce(&s, &key).await;
    let mut c = issuer.claims("carol", AUD, &n);
    c["nbf"] = json!(now + 600);
    assert_refused(&login(&s, &key, &issuer.sign(&k, &c)).await, "nbf");
    let mut c = issuer.claims("carol", AUD, &n);
    c["iat"] = json!(now + 600);
    assert_refused(&login(&s, &key, &issuer.sign(&k, &c)).await, "iat");

    // Wrong audience, wrong issuer, missing nonce, a nonce never issued.
    let t = issuer.token("carol", "someone-else", &n);
    assert_refused(&login(&s, &key, &t).await, "aud");
    let mut c = issuer.claims("carol", AUD, &n);
    c["iss"] = json!(format!("{}/other", issuer.url));
    assert_refused(&login(&s, &key, &issuer.sign(&k, &c)).await, "iss");
    let mut c = issuer.claims("carol", AUD, &n);
    c.as_object_mut().unwrap().remove("nonce");
    assert_refused(&login(&s, &key, &issuer.sign(&k, &c)).await, "no nonce");
    let t = issuer.token("carol", AUD, "0123456789abcdef0123456789abcdef");
    assert_refused(&login(&s, &key, &t).await, "unissued nonce");

    // Replayed nonce: the first use wins, the token and any other token with it fail after.
    let n = nonce(&s, &key).await;
    let t = issuer.token("dave", AUD, &n);
    assert_eq!(login(&s, &key, &t).await.status, StatusCode::OK);
    assert_refused(&login(&s, &key, &t).await, "replayed token");
    assert_refused(
        &login(&s, &key, &issuer.token("erin", AUD, &n)).await,
        "replayed nonce",
    );
    secrets.push(t);

    // alg: none, unsigned.
    let n = nonce(&s, &key).await;
    let c = issuer.claims("mallory", AUD, &n);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": k.kid})),
        b64(&c)
    );
    assert_refused(&login(&s, &key, &none).await, "alg none");

    // HS256 keyed with the issuer's public key (the classic confusion attack), with the
    // public key as its JWKS publishes it and as raw coordinates.
    for secret in [
        issuer.jwks_json().into_bytes(),
        serde_json::to_vec(&k.jwk).unwrap(),
    ] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(k.kid.clone());
        let t = jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(&secret)).unwrap();
        assert_refused(&login(&s, &key, &t).await, "hs256");
    }

    // A key the issuer never published (unknown kid), and a known kid with another key.
    let stranger = new_key("k-unknown");
    assert_refused(
        &login(&s, &key, &issuer.sign(&stranger, &c)).await,
        "unknown kid",
    );
    let forged = new_key(&k.kid);
    assert_refused(
        &login(&s, &key, &issuer.sign(&forged, &c)).await,
        "wrong key",
    );
    // Garbage.
    assert_refused(&login(&s, &key, "not.a.jwt").await, "garbage");

    // The nonce survived all that and still works once.
    assert_eq!(
        login(&s, &key, &issuer.token("mallory", AUD, &n))
            .await
            .status,
        StatusCode::OK
    );

    // Failed logins are audited in aggregate, never with a token.
    s.audit
        .flush_flood(time::OffsetDateTime::now_utc(), true)
        .await;
    let events = events(&s).await;
    assert!(events.iter().any(|e| {
        e["kind"] == "limited"
            && e["limited"]["reason"] == "login_failed"
            && e["limited"]["count"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 10
    }));
    let text = audit_text(&s).await;
    for t in &secrets {
        assert!(!text.contains(t.as_str()));
        let sig = t.rsplit('.').next().unwrap();
        assert!(!text.contains(sig));
    }
    assert!(!text.contains(&none));
}

#[tokio::test]
async fn failed_logins_of_a_verified_person_are_limited_per_person() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    // Tokens the issuer really signed for frank and this app, with a nonce never issued.
    for _ in 0..10 {
        let t = issuer.token("frank", AUD, "00000000000000000000000000000000");
        assert_refused(&login(&s, &key, &t).await, "unissued nonce");
    }
    // Now even a good token for frank waits, from anywhere; another user is unaffected.
    let n = nonce(&s, &key).await;
    let a = login_from(&s, "192.0.2.44", &key, &issuer.token("frank", AUD, &n)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    assert_eq!(a.body["code"], "rate_limited");
    login_ok(&s, &key, &issuer, "grace").await;
}

/// An unsigned token, or one signed with a key the issuer never published.
fn forged(issuer: &Issuer, sub: &str, n: &str, unsigned: bool) -> String {
    let c = issuer.claims(sub, AUD, n);
    if unsigned {
        let kid = issuer.current().kid.clone();
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
            b64(&c)
        )
    } else {
        issuer.sign(&new_key(&issuer.current().kid), &c)
    }
}

#[tokio::test]
async fn tokens_that_merely_name_someone_cannot_lock_them_out() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    let stranger = "203.0.113.66";
    let n = nonce(&s, &key).await;
    // Unsigned, forged and another audience's tokens naming frank, from a stranger's address.
    for i in 0..12 {
        let t = match i % 3 {
            0 => forged(&issuer, "frank", &n, true),
            1 => forged(&issuer, "frank", &n, false),
            _ => issuer.token("frank", "another-client", &n),
        };
        assert_refused(&login_from(&s, stranger, &key, &t).await, "forged");
    }
    // Frank logs in from his own address as if nothing happened.
    let a = login(&s, &key, &issuer.token("frank", AUD, &n)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // The stranger's address is what was counted: 30 failures and it waits.
    for _ in 12..30 {
        let t = forged(&issuer, "frank", &n, true);
        assert_refused(&login_from(&s, stranger, &key, &t).await, "forged");
    }
    let a = login_from(&s, stranger, &key, &forged(&issuer, "frank", &n, true)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
}

#[tokio::test]
async fn login_failures_from_one_ipv6_slash_64_share_a_count() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    // Thirty failures, each from a new address in one /64.
    for i in 0..30 {
        let peer = format!("2001:db8:7:1:{i:x}::1");
        assert_refused(&login_from(&s, &peer, &key, "not.a.jwt").await, "garbage");
    }
    let a = login_from(&s, "2001:db8:7:1:ffff::2", &key, "not.a.jwt").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    // The next /64 has its own count.
    let a = login_from(&s, "2001:db8:7:2::1", &key, "not.a.jwt").await;
    assert_refused(&a, "another /64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_failure_table_does_not_reset_a_count() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    // Thousands of logins as fast as the machine goes: the app's own rate is not what is tested.
    let (s, _) =
        users_support::gateway_with(data.path(), &[("PARAPET_APP_RATE", "1000000/s")]).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    let limited = "198.51.100.200";
    for _ in 0..30 {
        assert_refused(&login_from(&s, limited, &key, "not.a.jwt").await, "garbage");
    }
    let a = login_from(&s, limited, &key, "not.a.jwt").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    // Past the table's bound of addresses, each failing once.
    let filler = parapet_gateway::limits::FailureWindow::MAX_KEYS + 2_000;
    for i in 0..filler {
        let peer = std::net::Ipv4Addr::from(0x0a40_0000 + u32::try_from(i).unwrap()).to_string();
        assert_refused(&login_from(&s, &peer, &key, "not.a.jwt").await, "filler");
    }
    let a = login_from(&s, limited, &key, "not.a.jwt").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_and_unknown_kids_do_not_flood_the_issuer() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    login_ok(&s, &key, &issuer, "heidi").await;
    assert_eq!(issuer.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The issuer rotates: a token with the new kid makes the gateway refetch once.
    issuer.rotate_to("k2");
    login_ok(&s, &key, &issuer, "heidi").await;
    assert_eq!(issuer.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Made-up kids right after: refused without another fetch (at most one per 30 s).
    let n = nonce(&s, &key).await;
    for i in 0..5 {
        let t = issuer.sign(
            &new_key(&format!("bogus{i}")),
            &issuer.claims("ivan", AUD, &n),
        );
        assert_refused(&login(&s, &key, &t).await, "bogus kid");
    }
    assert_eq!(issuer.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Tokens of the retired key no longer verify.
    let old = issuer.keys.lock()[0].clone();
    let t = issuer.sign(&old, &issuer.claims("heidi", AUD, &n));
    assert_refused(&login(&s, &key, &t).await, "retired key");
}

#[tokio::test]
async fn jwks_from_a_file_and_issuers_per_app() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (app_a, key_a) = app_trusting(&s, &issuer).await;
    // App B trusts the same issuer through a JWKS file.
    let (app_b, key_b) = app_trusting(&s, &issuer).await;
    let file = data.path().join("jwks.json");
    std::fs::write(&file, issuer.jwks_json()).unwrap();
    let a = call(
        &s,
        "POST",
        &format!("/v1/admin/apps/{app_b}/update"),
        &key_b,
        None,
        Some(json!({"oidc_issuer": {"issuer": issuer.url, "audiences": ["mobile"], "jwks_file": file.display().to_string()}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["oidc_issuers"][0]["audiences"], json!(["mobile"]));
    let n = nonce(&s, &key_b).await;
    assert_eq!(
        login(&s, &key_b, &issuer.token("judy", "mobile", &n))
            .await
            .status,
        StatusCode::OK
    );
    // A nonce app A got does not log in at app B, and app A does not accept "mobile".
    let n = nonce(&s, &key_a).await;
    assert_refused(
        &login(&s, &key_b, &issuer.token("judy", "mobile", &n)).await,
        "other app's nonce",
    );
    assert_refused(
        &login(&s, &key_a, &issuer.token("judy", "mobile", &n)).await,
        "aud of app b",
    );
    // Plain http to a non-loopback JWKS is refused at configuration time.
    let a = call(
        &s,
        "POST",
        &format!("/v1/admin/apps/{app_a}/update"),
        &key_a,
        None,
        Some(json!({"oidc_issuer": {"issuer": "https://idp.example", "audiences": ["x"], "jwks_url": "http://idp.example/jwks"}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    // Removing the issuer stops its logins.
    let a = call(
        &s,
        "POST",
        &format!("/v1/admin/apps/{app_b}/update"),
        &key_b,
        None,
        Some(json!({"remove_oidc_issuer": issuer.url})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let n = nonce(&s, &key_b).await;
    assert_refused(
        &login(&s, &key_b, &issuer.token("judy", "mobile", &n)).await,
        "removed",
    );
}

#[tokio::test]
async fn a_logged_in_user_links_another_identity() {
    let issuer = Issuer::start().await;
    let other = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (app_id, key) = app_trusting(&s, &issuer).await;
    oidc_trust(&s, &app_id, &other).await;
    let (session, user) = login_ok(&s, &key, &issuer, "kim").await;
    let n = nonce(&s, &key).await;
    let a = call(
        &s,
        "POST",
        "/v1/sessions/oidc/link",
        &key,
        Some(&session),
        Some(json!({"id_token": other.token("kim-at-other", AUD, &n)})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["user_id"], user.as_str());
    assert_eq!(a.body["newly_linked"], true);
    // Logging in with the linked identity is the same user.
    let (_, same) = login_ok(&s, &key, &other, "kim-at-other").await;
    assert_eq!(same, user);
    // Someone else's identity cannot be linked.
    let (_, _) = login_ok(&s, &key, &issuer, "lee").await;
    let n = nonce(&s, &key).await;
    let a = call(
        &s,
        "POST",
        "/v1/sessions/oidc/link",
        &key,
        Some(&session),
        Some(json!({"id_token": issuer.token("lee", AUD, &n)})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text);
    assert_eq!(a.body["code"], "identity_in_use");
    // Without a session, no link.
    let n = nonce(&s, &key).await;
    let a = call(
        &s,
        "POST",
        "/v1/sessions/oidc/link",
        &key,
        None,
        Some(json!({"id_token": other.token("x", AUD, &n)})),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        events(&s)
            .await
            .iter()
            .any(|e| e["action"] == "session.link" && e["user"] == user.as_str())
    );
}

async fn oidc_trust(s: &parapet_gateway::http::AppState, app_id: &str, issuer: &Issuer) {
    use parapet_gateway::accounts::apps::Auditor;
    use parapet_gateway::accounts::users::oidc::{self, JwksSource, TrustedIssuer};
    oidc::set_issuer(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &op(),
        &TrustedIssuer {
            app_id: app_id.to_owned(),
            issuer: issuer.url.clone(),
            audiences: vec![AUD.to_owned()],
            jwks: JwksSource::Url(issuer.jwks_url.clone()),
        },
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
}

/// A test issuer whose `iss` is `iss`, with keys and a JWKS server of its own.
async fn issuer_claiming(iss: &str) -> Issuer {
    let mut issuer = Issuer::start().await;
    iss.clone_into(&mut issuer.url);
    issuer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_its_own_keys_for_an_issuer_never_reaches_another_apps_people() {
    // App A trusts `https://idp.example` through the issuer's real keys (KA); app B configures
    // the same issuer string with keys of its own (KB), so it can sign any `sub` it likes.
    let real = issuer_claiming("https://idp.example").await;
    let forger = issuer_claiming("https://idp.example").await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_app_a, key_a) = app_trusting(&s, &real).await;
    // B without the admin grant (an admin app may read any wallet by design).
    let (_app_b, key_b) = app_with_grants_trusting(&s, &forger, &["sign"]).await;

    let (session_a, alice) = login_ok(&s, &key_a, &real, "alice").await;
    // A's person has a wallet.
    let body = authorize_body();
    let address = parapet_gateway::accounts::wallets::normalize_address(
        body["wallet"]["address"].as_str().unwrap(),
    )
    .unwrap();
    parapet_gateway::accounts::wallets::create(
        s.audit.store(),
        parapet_gateway::accounts::apps::Auditor::Log(&s.audit),
        &parapet_gateway::accounts::wallets::StoredWallet {
            address: address.clone(),
            owner: alice.parse().unwrap(),
            device_id: "dev_test".to_owned(),
            public_key: "02".to_owned() + &"11".repeat(32),
            epoch: 0,
            labels: Vec::new(),
            groups: Vec::new(),
            frozen: false,
            refresh_required: false,
            created_at: "2026-11-25T12:00:00.000000Z".to_owned(),
        },
        b"sealed share bytes",
        b"the device's sealed backup",
        "req-1",
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();

    // B mints `sub: alice` with its own key and logs in: a different user, never A's person.
    let (session_b, at_b) = login_ok(&s, &key_b, &forger, "alice").await;
    assert_ne!(at_b, alice, "app B's own key reached app A's user");
    let again = login(
        &s,
        &key_b,
        &forger.token("alice", AUD, &nonce(&s, &key_b).await),
    )
    .await;
    assert_eq!(again.body["user_id"], at_b.as_str());
    // Nothing of A's person through B: no wallet, and A's session is not B's.
    let wallets = call(&s, "GET", "/v1/wallets", &key_b, Some(&session_b), None).await;
    assert_eq!(wallets.status, StatusCode::OK, "{}", wallets.text);
    assert_eq!(wallets.body["wallets"], json!([]));
    let theirs = call(
        &s,
        "GET",
        &format!("/v1/wallets/{address}"),
        &key_b,
        Some(&session_b),
        None,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
    let borrowed = call(&s, "GET", "/v1/wallets", &key_b, Some(&session_a), None).await;
    assert_eq!(
        borrowed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        borrowed.text
    );
    // A's person still logs in at A as themselves and still has the wallet.
    let (session_a, same) = login_ok(&s, &key_a, &real, "alice").await;
    assert_eq!(same, alice);
    let mine = call(&s, "GET", "/v1/wallets", &key_a, Some(&session_a), None).await;
    assert_eq!(mine.body["wallets"].as_array().unwrap().len(), 1);

    // Nor can B claim A's future people by linking: a B user links `sub: carol` signed by KB,
    // and A's real carol later logs in as a user of her own.
    let (mallory, mallory_id) = login_ok(&s, &key_b, &forger, "mallory").await;
    let n = nonce(&s, &key_b).await;
    let a = call(
        &s,
        "POST",
        "/v1/sessions/oidc/link",
        &key_b,
        Some(&mallory),
        Some(json!({"id_token": forger.token("carol", AUD, &n)})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let (_, carol) = login_ok(&s, &key_a, &real, "carol").await;
    assert_ne!(
        carol, mallory_id,
        "an identity linked through B's key reached A's carol"
    );
    // And linking `sub: alice` at B is B's alice, not A's person.
    let n = nonce(&s, &key_b).await;
    let a = call(
        &s,
        "POST",
        "/v1/sessions/oidc/link",
        &key_b,
        Some(&mallory),
        Some(json!({"id_token": forger.token("alice", AUD, &n)})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text);

    // The admin listing shows which keys each identity is bound to.
    let users = call(&s, "GET", "/v1/admin/users", &key_a, None, None).await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.text);
    let of = |id: &str| {
        users.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user_id"] == id)
            .unwrap()["identities"]
            .clone()
    };
    let trust_a = format!("url:{}", real.jwks_url);
    let trust_b = format!("url:{}", forger.jwks_url);
    assert_eq!(
        of(&alice),
        json!([{"issuer": "https://idp.example", "subject": "alice", "trust": trust_a}])
    );
    assert_eq!(
        of(&at_b),
        json!([{"issuer": "https://idp.example", "subject": "alice", "trust": trust_b}])
    );
}

#[tokio::test]
async fn apps_trusting_the_same_keys_for_an_issuer_share_the_person() {
    let issuer = issuer_claiming("https://idp.example").await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_, key_a) = app_trusting(&s, &issuer).await;
    let (app_c, key_c) = app_trusting(&s, &issuer).await;
    let (_, at_a) = login_ok(&s, &key_a, &issuer, "alice").await;
    let (_, at_c) = login_ok(&s, &key_c, &issuer, "alice").await;
    assert_eq!(at_a, at_c, "one JWKS source, one person");

    // App C switches the issuer to another source (a file with the same keys): another trust,
    // so alice is not carried over silently; the audit event names the previous source.
    let file = data.path().join("jwks.json");
    std::fs::write(&file, issuer.jwks_json()).unwrap();
    let a = call(
        &s,
        "POST",
        &format!("/v1/admin/apps/{app_c}/update"),
        &key_c,
        None,
        Some(json!({"oidc_issuer": {"issuer": issuer.url, "audiences": [AUD], "jwks_file": file.display().to_string()}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let trust_file = format!("file:{}", file.display());
    assert_eq!(a.body["oidc_issuers"][0]["trust"], trust_file.as_str());
    let set = events(&s)
        .await
        .into_iter()
        .rfind(|e| e["action"] == "app.oidc_issuer.set")
        .unwrap();
    assert_eq!(
        set["request"]["detail"]["previous_trust"],
        format!("url:{}", issuer.jwks_url)
    );
    assert_eq!(set["request"]["detail"]["trust"], trust_file.as_str());
    let (_, via_file) = login_ok(&s, &key_c, &issuer, "alice").await;
    assert_ne!(via_file, at_a);
}

#[tokio::test]
async fn a_jwks_url_leading_to_a_non_public_address_is_refused_when_fetched() {
    use parapet_gateway::accounts::users::oidc::JwksSource;
    let issuer = Issuer::start().await;
    let port = issuer
        .jwks_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/jwks");
    let data = tempfile::tempdir().unwrap();
    // No outbound allowlist: the issuer's JWKS on loopback may not be fetched, however its URL
    // spells the address.
    let (s, _) = gateway_with(data.path(), &[("PARAPET_OUTBOUND_ALLOW", "")]).await;
    let started = std::time::Instant::now();
    for url in [
        issuer.jwks_url.clone(),
        format!("http://localhost:{port}/jwks"),
        format!("https://[::ffff:127.0.0.1]:{port}/jwks"),
        "https://169.254.169.254/jwks".to_owned(),
        "https://10.0.0.1/jwks".to_owned(),
    ] {
        let (_, key) =
            app_with_grants_trusting_keys(&s, &issuer, &["sign"], JwksSource::Url(url.clone()))
                .await;
        let n = nonce(&s, &key).await;
        let a = login(&s, &key, &issuer.token("alice", AUD, &n)).await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{url}: {}",
            a.text
        );
        assert_eq!(a.body["code"], "issuer_unavailable", "{url}: {}", a.text);
        assert!(!a.text.contains("outbound_allow"), "{}", a.text);
    }
    // Refused before connecting: no fetch reached the issuer, none waited for a timeout.
    assert_eq!(issuer.fetches.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));

    // The operator allows loopback: the same issuer logs in.
    let (s, _) = gateway_with(data.path(), &[("PARAPET_OUTBOUND_ALLOW", "127.0.0.1/32")]).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    login_ok(&s, &key, &issuer, "alice").await;
    assert_eq!(issuer.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
}
