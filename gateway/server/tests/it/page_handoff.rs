//! The page's API and the app hand-off, through the whole HTTP stack with a software passkey:
//! registration of a new person, a backup passkey, login for an app, consent, the one-time code
//! and its exchange (wrong app, wrong redirect URI, reuse, expiry), `Origin` and CSRF checks,
//! revocation ending sessions, and failures that all look alike.
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
use parapet_gateway::accounts::apps::{self, Auditor, NewApp};
use parapet_gateway::clock::Clock;
use parapet_gateway::http::{AppState, app};
use serde_json::{Value, json};
use tower::ServiceExt;
use users_support::{Answer, authorize_body, call, events, gateway, op};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const ORIGIN: &str = "http://localhost:8080";
const REDIRECT: &str = "https://checkout.example/callback";

/// A browser: the page's cookie, and a software passkey per device.
struct Browser {
    s: Arc<AppState>,
    cookie: Option<String>,
    csrf: Option<String>,
    origin: String,
}

impl Browser {
    fn new(s: &Arc<AppState>) -> Browser {
        Browser {
            s: s.clone(),
            cookie: None,
            csrf: None,
            origin: ORIGIN.to_owned(),
        }
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("origin", self.origin.as_str());
        if let Some(c) = &self.cookie {
            b = b.header("cookie", format!("parapet_session={c}"));
        }
        if let Some(t) = &self.csrf {
            b = b.header("x-csrf-token", t.as_str());
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = b.body(body).unwrap();
        let peer: SocketAddr = "10.1.2.3:50000".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let res = app(self.s.clone()).oneshot(req).await.unwrap();
        let status = res.status();
        if let Some(set) = res.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            let value = set
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("parapet_session=");
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(c) = body["csrf"].as_str() {
            self.csrf = Some(c.to_owned());
        }
        Answer { status, body, text }
    }

    async fn register(&mut self, device: &mut SoftPasskey) -> Answer {
        let a = self
            .call("POST", "/ui/api/register/start", Some(json!({})))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let ccr: CreationChallengeResponse =
            serde_json::from_value(a.body["options"].clone()).unwrap();
        let cred = device
            .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
            .unwrap();
        self.call(
            "POST",
            "/ui/api/register/finish",
            Some(json!({
                "ceremony_id": a.body["ceremony_id"],
                "user": a.body["user"],
                "credential": cred,
            })),
        )
        .await
    }

    async fn login(&mut self, device: &mut SoftPasskey, user: &str, app: Option<&str>) -> Answer {
        let a = self
            .call(
                "POST",
                "/ui/api/login/start",
                Some(json!({"user": user, "app": app})),
            )
            .await;
        if a.status != StatusCode::OK {
            return a;
        }
        let rcr: RequestChallengeResponse =
            serde_json::from_value(a.body["options"].clone()).unwrap();
        let cred = device
            .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
            .unwrap();
        self.call(
            "POST",
            "/ui/api/login/finish",
            Some(json!({"ceremony_id": a.body["ceremony_id"], "credential": cred, "app": app})),
        )
        .await
    }

    /// A further passkey on `new`, approved with a step-up by `approver`.
    async fn add_passkey(&mut self, approver: &mut SoftPasskey, new: &mut SoftPasskey) -> Answer {
        let a = self.step_up("passkey_add", "", approver).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let ccr: CreationChallengeResponse =
            serde_json::from_value(a.body["options"].clone()).unwrap();
        let cred = new
            .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
            .unwrap();
        self.call(
            "POST",
            "/ui/api/register/finish",
            Some(json!({"ceremony_id": a.body["ceremony_id"], "credential": cred})),
        )
        .await
    }

    /// A security action of the page's panel, approved with a passkey of `device`.
    async fn step_up(&mut self, action: &str, id: &str, device: &mut SoftPasskey) -> Answer {
        let a = self
            .call(
                "POST",
                "/ui/api/security/step-up/start",
                Some(json!({"action": action, "id": id})),
            )
            .await;
        if a.status != StatusCode::OK {
            return a;
        }
        let rcr: RequestChallengeResponse =
            serde_json::from_value(a.body["options"].clone()).unwrap();
        let cred = device
            .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
            .unwrap();
        self.call(
            "POST",
            "/ui/api/security/step-up/finish",
            Some(json!({
                "action": action,
                "id": id,
                "ceremony_id": a.body["ceremony_id"],
                "credential": cred,
            })),
        )
        .await
    }

    async fn handoff(&mut self, app: &str, redirect: &str) -> Answer {
        self.call(
            "POST",
            "/ui/api/handoff",
            Some(json!({"app": app, "redirect_uri": redirect, "state": "st-1"})),
        )
        .await
    }
}

/// A `/v1` security route an app calls for its user: `{}` asks, and the answer's passkey options
/// are answered by `device` (the person's passkey) in a second call.
async fn app_step_up(
    s: &Arc<AppState>,
    path: &str,
    key: &str,
    session: &str,
    device: &mut SoftPasskey,
) -> Answer {
    let ask = call(s, "POST", path, key, Some(session), Some(json!({}))).await;
    if ask.status != StatusCode::FORBIDDEN || ask.body["code"] != "step_up_required" {
        return ask;
    }
    let rcr: RequestChallengeResponse =
        serde_json::from_value(ask.body["step_up"]["options"].clone()).unwrap();
    let cred = device
        .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
        .unwrap();
    call(
        s,
        "POST",
        path,
        key,
        Some(session),
        Some(json!({"ceremony_id": ask.body["step_up"]["ceremony_id"], "credential": cred})),
    )
    .await
}

fn device() -> SoftPasskey {
    SoftPasskey::new(true)
}

/// An app with the `sign` grant and the redirect URI [`REDIRECT`].
async fn checkout(s: &AppState, name: &str) -> (String, String) {
    let (app, key) = apps::create_app(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &op(),
        &NewApp {
            name: name.to_owned(),
            grants: vec!["sign".to_owned()],
            redirect_uris: vec![REDIRECT.to_owned()],
            ..NewApp::default()
        },
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    (app.id, key)
}

fn code_of(redirect: &Value) -> String {
    let url = Url::parse(redirect.as_str().unwrap()).unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        REDIRECT,
        "{redirect}"
    );
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1");
    q["code"].clone()
}

async fn exchange(s: &Arc<AppState>, key: &str, code: &str, redirect: &str) -> Answer {
    call(
        s,
        "POST",
        "/v1/sessions/exchange",
        key,
        None,
        Some(json!({"code": code, "redirect_uri": redirect})),
    )
    .await
}

/// Registers a new person with one passkey and logs them in for `app` with consent to the
/// required scopes; returns the browser, the device and the user id.
async fn person_logged_in_for(s: &Arc<AppState>, app: &str) -> (Browser, SoftPasskey, String) {
    let mut b = Browser::new(s);
    let mut d = device();
    let r = b.register(&mut d).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let user = r.body["user"].as_str().unwrap().to_owned();
    let l = b.login(&mut d, &user, Some(app)).await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.text);
    let c = b
        .call("POST", "/ui/api/consent", Some(json!({"app": app})))
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    (b, d, user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_person_registers_logs_in_for_an_app_consents_and_the_app_gets_a_session() {
    let data = tempfile::tempdir().unwrap();
    let (s, clock) = gateway(data.path()).await;
    let (app_id, key) = checkout(&s, "Checkout").await;
    let (_, other_key) = checkout(&s, "Other shop").await;

    // Registration makes the person and logs them in on the page.
    let mut b = Browser::new(&s);
    let mut phone = device();
    let r = b.register(&mut phone).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let user = r.body["user"].as_str().unwrap().to_owned();
    let me = b.call("GET", "/ui/api/me", None).await;
    assert_eq!(me.body["user"], user.as_str(), "{}", me.text);
    assert_eq!(me.body["method"], "passkey");

    // A backup passkey on a second device (approved with the first), then log out.
    let mut laptop = device();
    let r2 = b.add_passkey(&mut phone, &mut laptop).await;
    assert_eq!(r2.status, StatusCode::OK, "{}", r2.text);
    assert_eq!(
        r2.body["user"],
        user.as_str(),
        "a backup joins the same person"
    );
    let list = b.call("GET", "/ui/api/passkeys", None).await;
    assert_eq!(list.body["passkeys"].as_array().unwrap().len(), 2);
    let out = b.call("POST", "/ui/api/logout", Some(json!({}))).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text);
    assert!(b.cookie.is_none());
    assert_eq!(
        b.call("GET", "/ui/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The hand-off: log in with the backup device for the app; consent comes first.
    let l = b.login(&mut laptop, &user, Some(&app_id)).await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.text);
    assert_eq!(l.body["app"], app_id.as_str());
    let h = b.handoff(&app_id, REDIRECT).await;
    assert_eq!(h.status, StatusCode::FORBIDDEN, "{}", h.text);
    assert_eq!(h.body["code"], "consent_required");
    let view = b
        .call("GET", &format!("/ui/api/consent?app={app_id}"), None)
        .await;
    assert_eq!(view.body["needs_consent"], true, "{}", view.text);
    assert_eq!(view.body["app"]["name"], "Checkout");
    let ok = b
        .call(
            "POST",
            "/ui/api/consent",
            Some(json!({"app": app_id, "scopes": [], "consent_hash": view.body["consent_hash"]})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["approved"], json!(["basic"]));

    // A redirect URI the app did not register is refused, before the consent screen too.
    let bad = b.handoff(&app_id, "https://evil.example/callback").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let early = b
        .call(
            "GET",
            &format!(
                "/ui/api/consent?app={app_id}&redirect_uri=https%3A%2F%2Fevil.example%2Fcallback"
            ),
            None,
        )
        .await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST, "{}", early.text);

    // Wrong app: the code is burnt too.
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    let wrong_app = exchange(&s, &other_key, &code, REDIRECT).await;
    assert_eq!(
        wrong_app.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        wrong_app.text
    );
    assert_eq!(wrong_app.body["code"], "login_failed");
    assert_eq!(
        exchange(&s, &key, &code, REDIRECT).await.body["code"],
        "login_failed"
    );
    // Wrong redirect URI.
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    let wrong_uri = exchange(&s, &key, &code, "https://checkout.example/other").await;
    assert_eq!(wrong_uri.body["code"], "login_failed", "{}", wrong_uri.text);
    // Expired.
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    clock.advance(61);
    assert_eq!(
        exchange(&s, &key, &code, REDIRECT).await.body["code"],
        "login_failed"
    );
    // The good exchange, once.
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    let good = exchange(&s, &key, &code, REDIRECT).await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.text);
    assert_eq!(good.body["user_id"], user.as_str());
    let token = good.body["session_token"].as_str().unwrap().to_owned();
    let again = exchange(&s, &key, &code, REDIRECT).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.text);

    // The app acts for the person; another app's key cannot use the session.
    let d = call(
        &s,
        "POST",
        "/v1/authorize",
        &key,
        Some(&token),
        Some(authorize_body()),
    )
    .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    assert_eq!(d.body["decision"], "allow", "{}", d.text);
    let other = call(
        &s,
        "POST",
        "/v1/authorize",
        &other_key,
        Some(&token),
        Some(authorize_body()),
    )
    .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED, "{}", other.text);
    assert_eq!(other.body["code"], "session_invalid");
    let consent = call(&s, "GET", "/v1/consent", &key, Some(&token), None).await;
    assert_eq!(consent.body["needs_consent"], false, "{}", consent.text);

    // Everything above is in the audit log; no token, code or credential material is.
    s.audit.flush_flood(clock.now(), true).await;
    let all = events(&s).await;
    let actions: Vec<String> = all
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    for want in [
        "passkey.register",
        "passkey.login",
        "session.login",
        "session.logout",
        "approve",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
    let logins: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "session.login" && e["app"] == app_id.as_str())
        .collect();
    assert!(logins.iter().any(|e| e["request"]["via"] == "handoff"));
    let text = users_support::audit_text(&s).await;
    for secret in [token.as_str(), code.as_str(), b.cookie.as_deref().unwrap()] {
        assert!(!text.contains(secret), "a secret reached the audit log");
    }
    assert!(
        text.contains("login_failed"),
        "failed exchanges are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_changes_need_the_page_origin_and_the_csrf_token() {
    let data = tempfile::tempdir().unwrap();
    let (s, _clock) = gateway(data.path()).await;
    let (app_id, _) = checkout(&s, "Checkout").await;
    let (mut b, _d, _) = person_logged_in_for(&s, &app_id).await;
    let body = json!({"app": app_id});
    let good_csrf = b.csrf.clone();

    b.origin = "https://evil.example".to_owned();
    let a = b
        .call("POST", "/ui/api/consent/revoke", Some(body.clone()))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    b.origin = ORIGIN.to_owned();
    b.csrf = None;
    let a = b
        .call("POST", "/ui/api/consent/revoke", Some(body.clone()))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    b.csrf = Some("0".repeat(64));
    let a = b
        .call("POST", "/ui/api/consent/revoke", Some(body.clone()))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    b.csrf = good_csrf;
    let a = b.call("POST", "/ui/api/consent/revoke", Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["revoked"], true);
    // Reads need the cookie only; without it nothing is shown.
    b.cookie = None;
    let a = b.call("GET", "/ui/api/passkeys", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_passkey_ends_the_sessions_it_established_including_the_apps() {
    let data = tempfile::tempdir().unwrap();
    let (s, _clock) = gateway(data.path()).await;
    let (app_id, key) = checkout(&s, "Checkout").await;
    let (mut b, mut d, _user) = person_logged_in_for(&s, &app_id).await;
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    let token = exchange(&s, &key, &code, REDIRECT).await.body["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = call(&s, "GET", "/v1/consent", &key, Some(&token), None).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    let list = b.call("GET", "/ui/api/passkeys", None).await;
    let cred = list.body["passkeys"][0]["credential_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The last passkey stays: nothing would approve a change without it.
    let last = b.step_up("passkey_revoke", &cred, &mut d).await;
    assert_eq!(last.status, StatusCode::CONFLICT, "{}", last.text);
    assert_eq!(last.body["code"], "last_passkey");
    let mut spare = device();
    let added = b.add_passkey(&mut d, &mut spare).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    let r = b.step_up("passkey_revoke", &cred, &mut d).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(b.cookie.is_none(), "the page's own session ended with it");
    let gone = call(&s, "GET", "/v1/consent", &key, Some(&token), None).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{}", gone.text);
    assert_eq!(gone.body["code"], "session_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_person_and_a_wrong_passkey_get_the_same_answer() {
    let data = tempfile::tempdir().unwrap();
    let (s, _clock) = gateway(data.path()).await;
    let mut b = Browser::new(&s);
    let mut mine = device();
    let user = b.register(&mut mine).await.body["user"]
        .as_str()
        .unwrap()
        .to_owned();
    b.call("POST", "/ui/api/logout", Some(json!({}))).await;

    let unknown = b
        .login(&mut device(), &uuid::Uuid::new_v4().to_string(), None)
        .await;
    let not_a_uuid = b.login(&mut device(), "alice@example.com", None).await;
    // A passkey of someone else: the authenticator has no credential for this challenge.
    let start = b
        .call("POST", "/ui/api/login/start", Some(json!({"user": user})))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text);
    let rcr: RequestChallengeResponse =
        serde_json::from_value(start.body["options"].clone()).unwrap();
    let mut stranger = device();
    let (_, their_options) = {
        let mut other = Browser::new(&s);
        let r = other.register(&mut stranger).await;
        let them = r.body["user"].as_str().unwrap().to_owned();
        other.call("POST", "/ui/api/logout", Some(json!({}))).await;
        let a = other
            .call("POST", "/ui/api/login/start", Some(json!({"user": them})))
            .await;
        (
            a.body["ceremony_id"].clone(),
            serde_json::from_value::<RequestChallengeResponse>(a.body["options"].clone()).unwrap(),
        )
    };
    // The stranger answers their own challenge, presented to this person's ceremony.
    let cred = stranger
        .do_authentication(Url::parse(ORIGIN).unwrap(), their_options)
        .unwrap();
    drop(rcr);
    let wrong = b
        .call(
            "POST",
            "/ui/api/login/finish",
            Some(json!({"ceremony_id": start.body["ceremony_id"], "credential": cred})),
        )
        .await;
    for a in [&unknown, &not_a_uuid, &wrong] {
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
        assert_eq!(a.body["code"], "login_failed", "{}", a.text);
        assert_eq!(a.body["message"], unknown.body["message"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let data = tempfile::tempdir().unwrap();
    let (s, _clock) = gateway(data.path()).await;
    for path in [
        "/ui/",
        "/ui/login?app=x&redirect_uri=y&state=z",
        "/ui/app.js",
    ] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let res = app(s.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_for_the_app_it_was_started_for_whatever_the_finish_says() {
    let data = tempfile::tempdir().unwrap();
    let (s, _clock) = gateway(data.path()).await;
    let (app_a, _) = checkout(&s, "Checkout").await;
    let (app_b, _) = checkout(&s, "Other shop").await;
    let mut b = Browser::new(&s);
    let mut d = device();
    let user = b.register(&mut d).await.body["user"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = b
        .call(
            "POST",
            "/ui/api/login/start",
            Some(json!({"user": user, "app": app_a})),
        )
        .await;
    let rcr: RequestChallengeResponse =
        serde_json::from_value(start.body["options"].clone()).unwrap();
    let cred = d
        .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
        .unwrap();
    let fin = b
        .call(
            "POST",
            "/ui/api/login/finish",
            Some(
                json!({"ceremony_id": start.body["ceremony_id"], "credential": cred, "app": app_b}),
            ),
        )
        .await;
    assert_eq!(fin.status, StatusCode::OK, "{}", fin.text);
    assert_eq!(fin.body["app"], app_a.as_str());
    let h = b.handoff(&app_b, REDIRECT).await;
    assert_eq!(h.status, StatusCode::FORBIDDEN, "{}", h.text);
    assert_eq!(
        h.body["message"],
        "this login was for another app: log in again from the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_user_opens_the_page_with_a_one_time_link_and_adds_a_passkey() {
    let data = tempfile::tempdir().unwrap();
    let issuer = users_support::Issuer::start().await;
    let (s, _clock) = gateway(data.path()).await;
    let (_app, key) = users_support::app_trusting(&s, &issuer).await;
    let (token, user) = users_support::login_ok(&s, &key, &issuer, "alice").await;

    let link = call(
        &s,
        "POST",
        "/v1/sessions/page-link",
        &key,
        Some(&token),
        None,
    )
    .await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.text);
    let url = link.body["url"].as_str().unwrap();
    let code = url.split("link=").nth(1).unwrap().to_owned();
    let mut b = Browser::new(&s);
    let opened = b
        .call("POST", "/ui/api/link", Some(json!({"code": code})))
        .await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text);
    assert_eq!(opened.body["user"], user.as_str());
    let me = b.call("GET", "/ui/api/me", None).await;
    assert_eq!(me.body["method"], "oidc", "{}", me.text);
    // The link works once.
    let again = Browser::new(&s)
        .call("POST", "/ui/api/link", Some(json!({"code": code})))
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.text);

    // The passkey joins the OIDC user, who can then log in with it. A second registration
    // begun while they had none is worthless once they have one: a further passkey needs a
    // step-up with the first.
    let spare = b
        .call("POST", "/ui/api/register/start", Some(json!({})))
        .await;
    assert_eq!(spare.status, StatusCode::OK, "{}", spare.text);
    let mut d = device();
    let r = b.register(&mut d).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["user"], user.as_str());
    let ccr: CreationChallengeResponse =
        serde_json::from_value(spare.body["options"].clone()).unwrap();
    let cred = device()
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    let late = b
        .call(
            "POST",
            "/ui/api/register/finish",
            Some(json!({"ceremony_id": spare.body["ceremony_id"], "credential": cred})),
        )
        .await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST, "{}", late.text);
    assert_eq!(
        late.body["code"], "passkey_ceremony_unknown",
        "{}",
        late.text
    );
    let listed = b.call("GET", "/ui/api/passkeys", None).await;
    assert_eq!(listed.body["passkeys"].as_array().unwrap().len(), 1);

    // From now on only that passkey opens the page: no more links, not even one made before.
    let early = call(
        &s,
        "POST",
        "/v1/sessions/page-link",
        &key,
        Some(&token),
        None,
    )
    .await;
    assert_eq!(early.status, StatusCode::FORBIDDEN, "{}", early.text);
    assert_eq!(early.body["code"], "passkey_login_required");
    // Nor can the app link another identity to them without that passkey: the approval is for
    // that very token.
    let n = users_support::nonce(&s, &key).await;
    let other = issuer.token("alice-second", users_support::AUD, &n);
    let link = |body: Value| {
        let (s, key, token) = (s.clone(), key.clone(), token.clone());
        async move {
            call(
                &s,
                "POST",
                "/v1/sessions/oidc/link",
                &key,
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let asked = link(json!({"id_token": other})).await;
    assert_eq!(asked.status, StatusCode::FORBIDDEN, "{}", asked.text);
    assert_eq!(asked.body["code"], "step_up_required", "{}", asked.text);
    let rcr: RequestChallengeResponse =
        serde_json::from_value(asked.body["step_up"]["options"].clone()).unwrap();
    let cred = d
        .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
        .unwrap();
    let n = users_support::nonce(&s, &key).await;
    let swapped = link(json!({
        "id_token": issuer.token("mallory", users_support::AUD, &n),
        "ceremony_id": asked.body["step_up"]["ceremony_id"],
        "credential": cred,
    }))
    .await;
    assert_eq!(swapped.status, StatusCode::FORBIDDEN, "{}", swapped.text);
    assert_eq!(swapped.body["code"], "step_up_mismatch", "{}", swapped.text);
    let again = link(json!({"id_token": other})).await;
    let rcr: RequestChallengeResponse =
        serde_json::from_value(again.body["step_up"]["options"].clone()).unwrap();
    let cred = d
        .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
        .unwrap();
    let linked = link(json!({
        "id_token": other,
        "ceremony_id": again.body["step_up"]["ceremony_id"],
        "credential": cred,
    }))
    .await;
    assert_eq!(linked.status, StatusCode::OK, "{}", linked.text);
    assert_eq!(linked.body["user_id"], user.as_str());
    b.call("POST", "/ui/api/logout", Some(json!({}))).await;
    let l = b.login(&mut d, &user, None).await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.text);
    assert_eq!(l.body["user"], user.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_link_is_shown_before_it_is_used_and_dies_when_the_person_gets_a_passkey() {
    let data = tempfile::tempdir().unwrap();
    let issuer = users_support::Issuer::start().await;
    let (s, _clock) = gateway(data.path()).await;
    let (_app, key) = users_support::app_trusting(&s, &issuer).await;
    let (token, user) = users_support::login_ok(&s, &key, &issuer, "bob").await;
    let link = |s: Arc<AppState>, key: String, token: String| async move {
        let a = call(
            &s,
            "POST",
            "/v1/sessions/page-link",
            &key,
            Some(&token),
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.body["url"]
            .as_str()
            .unwrap()
            .split("link=")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    // Peeking says who, and does not use the code.
    let code = link(s.clone(), key.clone(), token.clone()).await;
    let mut b = Browser::new(&s);
    let who = b
        .call("POST", "/ui/api/link/peek", Some(json!({"code": code})))
        .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.text);
    assert_eq!(who.body["user"], user.as_str());
    assert!(b.cookie.is_none(), "peeking logs nobody in");
    let made_up = b
        .call("POST", "/ui/api/link/peek", Some(json!({"code": "pc_0"})))
        .await;
    assert_eq!(made_up.status, StatusCode::UNAUTHORIZED, "{}", made_up.text);
    // The app redeems a second link itself, and keeps a third, while bob has no passkey...
    let second = link(s.clone(), key.clone(), token.clone()).await;
    let third = link(s.clone(), key.clone(), token.clone()).await;
    let mut app_browser = Browser::new(&s);
    let held = app_browser
        .call("POST", "/ui/api/link", Some(json!({"code": second})))
        .await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.text);
    let opened = b
        .call("POST", "/ui/api/link", Some(json!({"code": code})))
        .await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text);
    let mut d = device();
    assert_eq!(b.register(&mut d).await.status, StatusCode::OK);
    // ...and once he has one, the page session it made ends (his own goes on with the passkey)...
    let dead = app_browser.call("GET", "/ui/api/me", None).await;
    assert_eq!(dead.status, StatusCode::UNAUTHORIZED, "{}", dead.text);
    let mine = b.call("GET", "/ui/api/me", None).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
    assert_eq!(mine.body["method"], "passkey", "{}", mine.text);
    // ...and the link it kept opens nothing.
    let mut other = Browser::new(&s);
    let refused = other
        .call("POST", "/ui/api/link", Some(json!({"code": third})))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.body["code"], "passkey_login_required");
    assert!(other.cookie.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_session_never_works_as_the_persons_page_session() {
    let data = tempfile::tempdir().unwrap();
    let (s, _clock) = gateway(data.path()).await;
    let (app_id, key) = checkout(&s, "Checkout").await;
    let (mut b, _d, user) = person_logged_in_for(&s, &app_id).await;
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    let token = exchange(&s, &key, &code, REDIRECT).await.body["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The app's session is good for the app...
    let ok = call(&s, "GET", "/v1/consent", &key, Some(&token), None).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    // ...and nothing on the page, even with the CSRF token it can work out from it.
    let mut app_as_page = Browser::new(&s);
    app_as_page.cookie = Some(token.clone());
    app_as_page.csrf = Some(parapet_gateway::http::page::session::csrf_token(&token));
    for path in [
        "/ui/api/me",
        "/ui/api/passkeys",
        "/ui/api/devices",
        "/ui/api/security",
    ] {
        let a = app_as_page.call("GET", path, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}: {}", a.text);
    }
    for (path, body) in [
        ("/ui/api/devices/pair-code", json!({})),
        (
            "/ui/api/security/step-up/start",
            json!({"action": "passkey_add"}),
        ),
        ("/ui/api/signing-requests/step-up/start", json!({"id": "x"})),
    ] {
        app_as_page.cookie = Some(token.clone());
        let a = app_as_page.call("POST", path, Some(body)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}: {}", a.text);
    }
    // Registering "as" the session makes a new, unrelated person, never a passkey of this one.
    app_as_page.cookie = Some(token.clone());
    let start = app_as_page
        .call("POST", "/ui/api/register/start", Some(json!({})))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text);
    assert_ne!(start.body["user"], user.as_str());
    // Nor can the app get a page link for a person who has a passkey.
    let link = call(
        &s,
        "POST",
        "/v1/sessions/page-link",
        &key,
        Some(&token),
        None,
    )
    .await;
    assert_eq!(link.status, StatusCode::FORBIDDEN, "{}", link.text);
    assert_eq!(link.body["code"], "passkey_login_required");
    // And the page's own session is not an app session either.
    let page_token = b.cookie.clone().unwrap();
    assert!(page_token.starts_with("pg_"), "{page_token}");
    let as_app = call(&s, "GET", "/v1/consent", &key, Some(&page_token), None).await;
    assert_eq!(as_app.status, StatusCode::UNAUTHORIZED, "{}", as_app.text);
    assert_eq!(as_app.body["code"], "session_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_passkey_every_security_change_on_the_page_needs_a_step_up_for_that_change() {
    let data = tempfile::tempdir().unwrap();
    let (s, clock) = gateway(data.path()).await;
    let (app_id, key) = checkout(&s, "Checkout").await;
    let (mut b, mut d, user) = person_logged_in_for(&s, &app_id).await;
    // Straight calls are refused once the person has a passkey.
    for path in ["/ui/api/register/start", "/ui/api/devices/pair-code"] {
        let a = b.call("POST", path, Some(json!({}))).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.text);
        assert_eq!(a.body["code"], "step_up_required", "{path}");
    }
    let gone = b
        .call(
            "POST",
            "/ui/api/passkeys/revoke",
            Some(json!({"credential_id": "x"})),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text);

    // An assertion made for one action is worthless for another.
    let start = b
        .call(
            "POST",
            "/ui/api/security/step-up/start",
            Some(json!({"action": "device_pair"})),
        )
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text);
    let rcr: RequestChallengeResponse =
        serde_json::from_value(start.body["options"].clone()).unwrap();
    let cred = d
        .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
        .unwrap();
    let crossed = b
        .call(
            "POST",
            "/ui/api/security/step-up/finish",
            Some(json!({"action": "passkey_add", "ceremony_id": start.body["ceremony_id"], "credential": cred})),
        )
        .await;
    assert_eq!(crossed.status, StatusCode::FORBIDDEN, "{}", crossed.text);
    assert_eq!(crossed.body["code"], "step_up_mismatch");

    // Approved with the passkey, a second one is added.
    let mut second = device();
    let added = b.add_passkey(&mut d, &mut second).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    assert_eq!(added.body["user"], user.as_str());

    // TOTP: enrolled and removed on the page, each with a step-up; an app removes it only with
    // the person's passkey too.
    let enrol = b.step_up("totp_enrol", "", &mut second).await;
    assert_eq!(enrol.status, StatusCode::OK, "{}", enrol.text);
    let totp = totp_rs::Totp::from_url(enrol.body["otpauth_uri"].as_str().unwrap()).unwrap();
    let now = u64::try_from(clock.now().unix_timestamp()).unwrap();
    let confirmed = b
        .call(
            "POST",
            "/ui/api/totp/confirm",
            Some(json!({"code": totp.generate(now).to_string()})),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    let session = exchange(&s, &key, &code, REDIRECT).await.body["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let asked = call(
        &s,
        "POST",
        "/v1/totp/remove",
        &key,
        Some(&session),
        Some(json!({})),
    )
    .await;
    assert_eq!(asked.status, StatusCode::FORBIDDEN, "{}", asked.text);
    assert_eq!(asked.body["code"], "step_up_required");
    let still = b.call("GET", "/ui/api/security", None).await;
    assert_eq!(still.body["totp"]["active"], true, "{}", still.text);
    let removed = app_step_up(&s, "/v1/totp/remove", &key, &session, &mut d).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    let after = b.call("GET", "/ui/api/security", None).await;
    assert_eq!(after.body["totp"]["active"], false, "{}", after.text);
    let none = b.step_up("totp_remove", "", &mut d).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.text);
    let text = users_support::audit_text(&s).await;
    assert!(text.contains("totp.remove"), "the removal is audited");
}

async fn device_call(s: &Arc<AppState>, path: &str, auth: Option<&str>) -> Answer {
    let mut b = Request::builder().uri(path);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let mut req = b.body(Body::empty()).unwrap();
    let peer: SocketAddr = "10.1.2.4:50000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = app(s.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn pair(s: &Arc<AppState>, code: &str) -> Answer {
    let mut req = Request::builder()
        .method("POST")
        .uri("/v1/devices/pair")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"code": code, "name": "laptop"}).to_string(),
        ))
        .unwrap();
    let peer: SocketAddr = "10.1.2.4:50000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = app(s.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_pairs_with_a_one_time_code_and_is_listed_and_revocable() {
    let data = tempfile::tempdir().unwrap();
    let (s, clock) = gateway(data.path()).await;
    let (app_id, key) = checkout(&s, "Checkout").await;
    let (mut b, mut d, user) = person_logged_in_for(&s, &app_id).await;

    let code = b.step_up("device_pair", "", &mut d).await;
    assert_eq!(code.status, StatusCode::OK, "{}", code.text);
    let code = code.body["code"].as_str().unwrap().to_owned();
    // Typed in lower case with spaces, it still works, once.
    let typed = code.to_lowercase().replace('-', " ");
    let paired = pair(&s, &typed).await;
    assert_eq!(paired.status, StatusCode::OK, "{}", paired.text);
    assert_eq!(paired.body["user_id"], user.as_str());
    let token = paired.body["device_token"].as_str().unwrap().to_owned();
    let device_id = paired.body["device_id"].as_str().unwrap().to_owned();
    assert_eq!(pair(&s, &code).await.body["code"], "login_failed");

    let me = device_call(&s, "/v1/device", Some(&format!("Device {token}"))).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["device_id"], device_id.as_str());
    for wrong in [format!("Bearer {token}"), "Device pd_0".to_owned()] {
        let a = device_call(&s, "/v1/device", Some(&wrong)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{wrong}: {}", a.text);
    }
    let in_query = device_call(&s, &format!("/v1/device?token={token}"), None).await;
    assert_eq!(
        in_query.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        in_query.text
    );

    // An expired code does nothing.
    let late = b.step_up("device_pair", "", &mut d).await;
    clock.advance(601);
    let late = pair(&s, late.body["code"].as_str().unwrap()).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED, "{}", late.text);

    // Listed on the page and through the app; revoked through the app.
    let listed = b.call("GET", "/ui/api/devices", None).await;
    assert_eq!(listed.body["devices"][0]["device_id"], device_id.as_str());
    let code = code_of(&b.handoff(&app_id, REDIRECT).await.body["redirect"]);
    let session = exchange(&s, &key, &code, REDIRECT).await.body["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = call(&s, "GET", "/v1/devices", &key, Some(&session), None).await;
    assert_eq!(
        api.body["devices"].as_array().unwrap().len(),
        1,
        "{}",
        api.text
    );
    let r = app_step_up(
        &s,
        &format!("/v1/devices/{device_id}/revoke"),
        &key,
        &session,
        &mut d,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let gone = device_call(&s, "/v1/device", Some(&format!("Device {token}"))).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{}", gone.text);

    let text = users_support::audit_text(&s).await;
    assert!(text.contains("device.pair") && text.contains("device.revoke"));
    assert!(
        !text.contains(&token),
        "a device token reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_starts_from_one_address_are_bounded() {
    let data = tempfile::tempdir().unwrap();
    let (s, _clock) = gateway(data.path()).await;
    let mut b = Browser::new(&s);
    let user = b.register(&mut device()).await.body["user"]
        .as_str()
        .unwrap()
        .to_owned();
    b.call("POST", "/ui/api/logout", Some(json!({}))).await;
    // Anyone may start a login for a known user id; each start leaves a ceremony row until it
    // expires, so one address gets a bounded number of them.
    for _ in 0..parapet_gateway::accounts::users::LOGIN_STARTS_PER_IP {
        let start = b
            .call("POST", "/ui/api/login/start", Some(json!({"user": user})))
            .await;
        assert_eq!(start.status, StatusCode::OK, "{}", start.text);
    }
    let over = b
        .call("POST", "/ui/api/login/start", Some(json!({"user": user})))
        .await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
    assert_eq!(over.body["code"], "rate_limited");
}
