//! What the co-signer tests share: a gateway on 127.0.0.1 with a movable clock and an OIDC
//! issuer, users with a passkey, a paired device and a recovery secret, and the calls most
//! tests make (sign, approve a refresh, open a recovery).
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use parapet_device::client;
use parapet_gateway::accounts::apps::Auditor;
use parapet_gateway::accounts::devices;
use parapet_gateway::http::{AppState, app};
use parapet_mpc::KeyShare;
use parapet_mpc::recovery::{RecoveryKeys, RecoverySecret};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::users_support::{
    self, Issuer, app_with_grants_trusting_keys, call, call_with, gateway_with, login_ok,
};
use parapet_gateway::accounts::users::oidc::JwksSource;

pub struct User {
    pub session: String,
    pub id: String,
    pub device_token: String,
    pub passkey: Option<SoftPasskey>,
    pub recovery: RecoveryKeys,
    /// The recovery salt the keys derive with; `None`: the user id (as before salts).
    pub salt: Option<String>,
}

impl User {
    /// The recovery key as this user's device file holds it.
    pub fn target(&self) -> client::RecoveryTarget<'_> {
        client::RecoveryTarget {
            user: self.salt.as_deref().unwrap_or(&self.id),
            public_key: self.recovery.public_key(),
        }
    }
}

pub struct World {
    pub s: Arc<AppState>,
    pub clock: Arc<parapet_gateway::clock::OffsetClock>,
    pub key: String,
    pub base: String,
    pub issuer: Issuer,
    /// Where the app reads the issuer's keys.
    pub jwks: JwksSource,
    pub _data: tempfile::TempDir,
}

pub async fn world() -> World {
    world_with(&[]).await
}

pub async fn world_with(extra: &[(&str, &str)]) -> World {
    world_from(extra, false).await
}

/// [`world_with`], the app reading the issuer's keys from a JWKS file instead of its URL: for
/// gateways that may not fetch from loopback (no outbound allowlist).
pub async fn world_with_jwks_file(extra: &[(&str, &str)]) -> World {
    world_from(extra, true).await
}

async fn world_from(extra: &[(&str, &str)], jwks_file: bool) -> World {
    let data = tempfile::tempdir().unwrap();
    let issuer = Issuer::start().await;
    let (s, clock) = gateway_with(data.path(), extra).await;
    let jwks = if jwks_file {
        let file = data.path().join("issuer-jwks.json");
        std::fs::write(&file, issuer.jwks_json()).unwrap();
        JwksSource::File(file)
    } else {
        JwksSource::Url(issuer.jwks_url.clone())
    };
    let (_app, key) = app_with_grants_trusting_keys(&s, &issuer, &["sign"], jwks.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = app(s.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    World {
        s,
        clock,
        key,
        base,
        issuer,
        jwks,
        _data: data,
    }
}

/// Logs `sub` in, registers a passkey for them, pairs a device and sets up a recovery secret.
pub async fn user(w: &World, sub: &str, with_passkey: bool) -> User {
    user_with(w, sub, with_passkey, true).await
}

/// [`user`], with the recovery secret only made (not set up) when `enrol` is false.
pub async fn user_with(w: &World, sub: &str, with_passkey: bool, enrol: bool) -> User {
    user_made(w, sub, with_passkey, enrol, None).await
}

/// [`user`] whose recovery secret derives with a random salt, as devices set it up today.
pub async fn user_salted(w: &World, sub: &str) -> User {
    let salt = parapet_mpc::recovery::new_salt();
    user_made(w, sub, true, true, Some(salt)).await
}

async fn user_made(
    w: &World,
    sub: &str,
    with_passkey: bool,
    enrol: bool,
    salt: Option<String>,
) -> User {
    let (session, id) = login_ok(&w.s, &w.key, &w.issuer, sub).await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut passkey = None;
    if with_passkey {
        let (ceremony, ccr) =
            w.s.passkeys
                .start_registration(uuid, sub, sub, false, now)
                .await
                .unwrap();
        let mut authenticator = SoftPasskey::new(true);
        let cred = authenticator
            .do_registration(Url::parse("http://localhost:8080").unwrap(), ccr)
            .unwrap();
        w.s.passkeys
            .finish_registration(&ceremony, uuid, &cred, now)
            .await
            .unwrap();
        passkey = Some(authenticator);
    }
    let (code, _) = devices::issue_pairing_code(w.s.audit.store(), uuid, now)
        .await
        .unwrap();
    let (device, device_token) = devices::pair(
        w.s.audit.store(),
        Auditor::Log(&w.s.audit),
        &code,
        "laptop",
        "req-pair",
        now,
    )
    .await
    .unwrap();
    // Every user here has a recovery secret: wallets are made only once one exists.
    let recovery = RecoverySecret::generate()
        .derive(salt.as_deref().unwrap_or(&id))
        .unwrap();
    if !enrol {
        return User {
            session,
            id,
            device_token,
            passkey,
            recovery,
            salt,
        };
    }
    parapet_gateway::accounts::recovery::enrol(
        &parapet_gateway::cosign::Cosigner::of(&w.s),
        &device,
        recovery.public_key(),
        zeroize::Zeroizing::new(*recovery.auth_key()),
        salt.as_deref()
            .map(|s| parapet_gateway::accounts::recovery::Salt::parse(s).unwrap())
            .as_ref(),
        &[],
        "req-recovery",
        now,
    )
    .await
    .unwrap();
    User {
        session,
        id,
        device_token,
        passkey,
        recovery,
        salt,
    }
}

pub async fn new_wallet(w: &World, u: &User) -> KeyShare {
    client::keygen(&w.base, &u.device_token, u.target(), |_, _| Ok(()))
        .await
        .unwrap()
}

pub fn usdc_transfer() -> Value {
    let mut body = users_support::authorize_body();
    body.as_object_mut().unwrap().remove("wallet");
    body
}

pub async fn submit(
    w: &World,
    u: &User,
    address: &str,
    key: &str,
    body: Value,
) -> users_support::Answer {
    call_with(
        &w.s,
        "POST",
        &format!("/v1/wallets/{address}/sign"),
        &w.key,
        Some(&u.session),
        &[("idempotency-key", key)],
        Some(body),
    )
    .await
}

/// The digest a device computes from a request body (`chain_id` and one payload) for
/// `address`, decoding it itself: what it expects the gateway to announce.
pub fn device_digest(body: &Value, address: &str) -> [u8; 32] {
    let mut body = body.clone();
    body["wallet"] = json!({ "address": address });
    let request: parapet_gateway::request::AuthorizeRequest = serde_json::from_value(body).unwrap();
    parapet_gateway::decode::decode(
        request.payload().unwrap(),
        request.chain_id,
        parapet_gateway::service::pipeline::parse_address(address).unwrap(),
        &parapet_gateway::decode::Registry::default(),
    )
    .unwrap()
    .digest
    .0
}

/// The digest in a gateway's answer about a signing request.
pub fn digest_in(answer: &Value) -> [u8; 32] {
    parapet_mpc::wire::bytes32(answer["digest"].as_str().unwrap()).unwrap()
}

pub fn address_of(share: &KeyShare) -> String {
    format!("0x{}", hex::encode(share.address()))
}

/// The owner's passkey assertion for the step-up options in a `step_up_required` answer.
pub fn assert_step_up(u: &mut User, answer: &Value) -> Value {
    let rcr: webauthn_authenticator_rs::prelude::RequestChallengeResponse =
        serde_json::from_value(answer["step_up"]["options"].clone()).unwrap();
    let credential = u
        .passkey
        .as_mut()
        .unwrap()
        .do_authentication(Url::parse("http://localhost:8080").unwrap(), rcr)
        .unwrap();
    json!({"ceremony_id": answer["step_up"]["ceremony_id"], "credential": credential})
}

/// Asks for a refresh of `address` and approves it with the owner's passkey.
pub async fn approve_refresh(w: &World, u: &mut User, address: &str) -> String {
    let asked = call(
        &w.s,
        "POST",
        &format!("/v1/wallets/{address}/refresh"),
        &w.key,
        Some(&u.session),
        None,
    )
    .await;
    assert_eq!(asked.body["code"], "step_up_required", "{}", asked.text);
    let op = asked.body["operation"].as_str().unwrap().to_owned();
    let assertion = assert_step_up(u, &asked.body);
    let ok = call(
        &w.s,
        "POST",
        &format!("/v1/operations/{op}/step-up"),
        &w.key,
        Some(&u.session),
        Some(assertion),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    op
}

/// `GET /v1/device/recovery` as the user's device.
pub async fn recovery_status(w: &World, u: &User) -> Value {
    let a = call_with(
        &w.s,
        "GET",
        "/v1/device/recovery",
        "",
        None,
        &[("authorization", &format!("Device {}", u.device_token))],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body
}

pub async fn post_keyless(
    w: &World,
    path: &str,
    auth: Option<&str>,
    body: Value,
) -> users_support::Answer {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    call_with(&w.s, "POST", path, "", None, &headers, Some(body)).await
}

pub async fn open_recovery(w: &World, user: &str, keys: &RecoveryKeys) -> users_support::Answer {
    post_keyless(
        w,
        "/v1/recovery",
        None,
        json!({"user_id": user, "auth_key": hex::encode(keys.auth_key()), "device_name": "new laptop"}),
    )
    .await
}

/// Asks for a signature of message `key` (also the idempotency key) and joins the ceremony with
/// `share` as `u`'s device.
pub async fn sign_message(
    w: &World,
    u: &User,
    address: &str,
    key: &str,
    share: &KeyShare,
) -> Result<(), parapet_device::Error> {
    sign_message_as(w, u, &u.device_token, address, key, share).await
}

/// [`sign_message`] with another of `u`'s devices.
pub async fn sign_message_as(
    w: &World,
    u: &User,
    device_token: &str,
    address: &str,
    key: &str,
    share: &KeyShare,
) -> Result<(), parapet_device::Error> {
    let body = json!({"chain_id": 1, "message": key});
    let a = submit(w, u, address, key, body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let id = a.body["id"].as_str().unwrap();
    client::sign(
        &w.base,
        device_token,
        id,
        &device_digest(&body, address),
        share,
    )
    .await
    .map(|_| ())
}
