//! Sessions in process: bound to the app they were issued for, idle and absolute limits on the
//! gateway's (moved) clock, logout and disablement reaching another gateway on the same store
//! within a second, `context.session` reaching Cedar, the per-user limit, the admin routes, and
//! no token in the audit log, a log line or an error body.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use crate::users_support;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use users_support::*;

async fn authorize(
    s: &std::sync::Arc<parapet_gateway::http::AppState>,
    key: &str,
    session: Option<&str>,
) -> Answer {
    call(
        s,
        "POST",
        "/v1/authorize",
        key,
        session,
        Some(authorize_body()),
    )
    .await
}

#[tokio::test]
async fn a_session_acts_for_its_user_with_its_own_app_only() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (app_a, key_a) = app_trusting(&s, &issuer).await;
    let (_, key_b) = app_trusting(&s, &issuer).await;
    let (session, user) = login_ok(&s, &key_a, &issuer, "alice").await;

    let a = authorize(&s, &key_a, Some(&session)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // context.session reached Cedar: the audited Cedar request carries it, and the event names
    // the user.
    let events = events(&s).await;
    let d = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "decision")
        .unwrap();
    assert_eq!(d["user"], user.as_str());
    assert_eq!(d["app"], app_a.as_str());
    let cedar: serde_json::Value =
        serde_json::from_str(d["cedar_request"].as_str().unwrap()).unwrap();
    let sess = &cedar["context"]["session"];
    assert_eq!(sess["method"], "oidc", "{cedar}");
    assert_eq!(sess["user_verified"], false);
    assert_eq!(sess["user"]["__entity"]["id"], user.as_str());
    assert!(sess["age_secs"].as_i64().unwrap() >= 0);
    // Without a session the decision has none.
    let a = authorize(&s, &key_a, None).await;
    assert_eq!(a.status, StatusCode::OK);
    let events = events_after(&s).await;
    let d = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "decision")
        .unwrap();
    assert!(d["user"].is_null());

    // Another app's key with this session: 401 session_invalid.
    let a = authorize(&s, &key_b, Some(&session)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    assert_eq!(a.body["code"], "session_invalid");
    let a = call(
        &s,
        "POST",
        "/v1/sessions/logout",
        &key_b,
        Some(&session),
        None,
    )
    .await;
    assert_eq!(a.body["code"], "session_invalid");
    // Made-up tokens likewise.
    let a = authorize(&s, &key_a, Some(&format!("ps_{}", "0".repeat(64)))).await;
    assert_eq!(a.body["code"], "session_invalid");
    assert!(!a.text.contains(&session));
}

async fn events_after(s: &parapet_gateway::http::AppState) -> Vec<serde_json::Value> {
    events(s).await
}

#[tokio::test]
async fn idle_and_absolute_limits_follow_the_gateway_clock() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, clock) = gateway(data.path()).await;
    let (_, key) = app_trusting(&s, &issuer).await; // 10 min idle, 1 h absolute
    let (session, _) = login_ok(&s, &key, &issuer, "bob").await;
    // A second session, left alone.
    let (idle, _) = login_ok(&s, &key, &issuer, "bob").await;
    // Used every 9 minutes, the session stays alive past the idle limit…
    for i in 0..5 {
        clock.advance(9 * 60);
        let a = authorize(&s, &key, Some(&session)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        if i == 1 {
            // …while the one unused for 18 minutes is past its 10-minute idle limit.
            let a = authorize(&s, &key, Some(&idle)).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
            assert_eq!(a.body["code"], "session_expired");
        }
    }
    // …but not past the absolute one (45 min so far; 1 h total).
    clock.advance(9 * 60);
    assert_eq!(
        authorize(&s, &key, Some(&session)).await.status,
        StatusCode::OK
    );
    clock.advance(7 * 60);
    let a = authorize(&s, &key, Some(&session)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    assert_eq!(a.body["code"], "session_expired");
}

#[tokio::test]
async fn logout_and_disable_reach_another_gateway_within_a_second() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s1, _) = gateway(data.path()).await;
    let (app_id, key) = app_trusting(&s1, &issuer).await;
    // A second gateway process on the same store.
    let (s2, _) = gateway(data.path()).await;
    let (one, _) = login_ok(&s1, &key, &issuer, "carol").await;
    let (two, carol) = login_ok(&s1, &key, &issuer, "carol").await;
    let (dave_session, _) = login_ok(&s1, &key, &issuer, "dave").await;
    // s2 sees (and caches) the sessions.
    for t in [&one, &two, &dave_session] {
        assert_eq!(authorize(&s2, &key, Some(t)).await.status, StatusCode::OK);
    }

    // Logout on s1: at once there, within a second on s2.
    let a = call(&s1, "POST", "/v1/sessions/logout", &key, Some(&one), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["user_id"], carol.as_str());
    assert_eq!(
        authorize(&s1, &key, Some(&one)).await.body["code"],
        "session_invalid"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        authorize(&s2, &key, Some(&one)).await.body["code"],
        "session_invalid"
    );
    // Logging out twice fails.
    let a = call(&s1, "POST", "/v1/sessions/logout", &key, Some(&one), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // Disable carol over HTTP on s1 (admin key): her other session ends everywhere.
    assert_eq!(
        authorize(&s2, &key, Some(&two)).await.status,
        StatusCode::OK
    );
    let a = call(
        &s1,
        "POST",
        &format!("/v1/admin/users/{carol}/disable"),
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["disabled"], true);
    assert_eq!(a.body["active_sessions"], 0);
    assert_eq!(
        authorize(&s1, &key, Some(&two)).await.body["code"],
        "session_invalid"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        authorize(&s2, &key, Some(&two)).await.body["code"],
        "session_invalid"
    );
    // Dave is untouched; carol cannot log in again (same answer as any failure).
    assert_eq!(
        authorize(&s2, &key, Some(&dave_session)).await.status,
        StatusCode::OK
    );
    let n = nonce(&s1, &key).await;
    let a = login(&s1, &key, &issuer.token("carol", AUD, &n)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.body["code"], "login_failed");

    // The admin list shows both users; unknown ids are 404, bad ones 400.
    let a = call(&s2, "GET", "/v1/admin/users", &key, None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let users = a.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    let c = users
        .iter()
        .find(|u| u["user_id"] == carol.as_str())
        .unwrap();
    assert_eq!(c["disabled"], true);
    assert_eq!(c["identities"][0]["subject"], "carol");
    let a = call(
        &s1,
        "POST",
        &format!("/v1/admin/users/{}/disable", uuid::Uuid::new_v4()),
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = call(
        &s1,
        "POST",
        "/v1/admin/users/nope/disable",
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // Every outcome is in the one log, and no session token anywhere in it.
    let events = events(&s1).await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "session.logout" && e["user"] == carol.as_str())
    );
    let disable = events
        .iter()
        .find(|e| e["action"] == "user.disable")
        .unwrap();
    assert_eq!(disable["kind"], "admin");
    assert_eq!(disable["user"], carol.as_str());
    assert_eq!(disable["request"]["actor"], app_id.as_str());
    let text = audit_text(&s1).await;
    for t in [&one, &two, &dave_session] {
        assert!(!text.contains(t.as_str()) && !text.contains(&t[3..]));
    }
}

#[tokio::test]
async fn a_user_is_rate_limited_across_sessions() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut env_data = data.path().to_path_buf();
    env_data.push("gw");
    std::fs::create_dir_all(&env_data).unwrap();
    // PARAPET_USER_RATE is read from the environment map of the config.
    let (s, _) = gateway_with(&env_data, &[("PARAPET_USER_RATE", "3/min")]).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    let (a1, _) = login_ok(&s, &key, &issuer, "erin").await;
    let (a2, _) = login_ok(&s, &key, &issuer, "erin").await;
    let (other, _) = login_ok(&s, &key, &issuer, "frank").await;
    for t in [&a1, &a2, &a1] {
        assert_eq!(authorize(&s, &key, Some(t)).await.status, StatusCode::OK);
    }
    let a = authorize(&s, &key, Some(&a2)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    assert_eq!(a.body["code"], "rate_limited");
    assert_eq!(
        authorize(&s, &key, Some(&other)).await.status,
        StatusCode::OK
    );
    // Without a session the app is not limited per user.
    assert_eq!(authorize(&s, &key, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_policy_can_require_a_fresh_session() {
    // A forbid on session age: sessions older than 5 minutes may not move value.
    let issuer = Issuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_dir(&root().join("policies"), &policies);
    std::fs::write(
        policies.join("zz-fresh-session.cedar"),
        "@id(\"fresh-session\")\n@reason(\"transfers need a session younger than 5 minutes\")\nforbid (principal, action, resource)\nwhen { context has session && context.session.age_secs > 300 };\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (s, clock) = gateway_with(
        &data,
        &[("PARAPET_POLICIES_DIR", policies.to_str().unwrap())],
    )
    .await;
    let (_, key) = app_trusting(&s, &issuer).await;
    let (session, _) = login_ok(&s, &key, &issuer, "gina").await;
    let a = authorize(&s, &key, Some(&session)).await;
    assert_eq!(a.body["decision"], "allow", "{}", a.text);
    clock.advance(301);
    let a = authorize(&s, &key, Some(&session)).await;
    assert_eq!(a.body["decision"], "deny", "{}", a.text);
    assert_eq!(a.body["determining_policies"][0]["id"], "fresh-session");
    // No session, no such forbid.
    assert_eq!(authorize(&s, &key, None).await.body["decision"], "allow");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
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
async fn no_secret_in_error_bodies() {
    let issuer = Issuer::start().await;
    let data = tempfile::tempdir().unwrap();
    let (s, _) = gateway(data.path()).await;
    let (_, key) = app_trusting(&s, &issuer).await;
    let n = nonce(&s, &key).await;
    let mut c = issuer.claims("hank", "wrong", &n);
    c["extra"] = json!("x");
    let t = issuer.sign(&issuer.current(), &c);
    let a = login(&s, &key, &t).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(!a.text.contains(&t) && !a.text.contains(&n) && !a.text.contains("hank"));
    let bogus = format!("ps_{}", "ab".repeat(32));
    let a = authorize(&s, &key, Some(&bogus)).await;
    assert!(!a.text.contains(&bogus));
}
