//! The co-signer end to end over real WebSockets on 127.0.0.1: a user with a passkey pairs a
//! device, creates a wallet (DKLs23 key generation, the gateway's share sealed by custody), and
//! signs through signing requests; signatures are checked with alloy. Also: idempotent retries,
//! ownership, a second ceremony for one request, and a device that tries to get another digest
//! signed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod support;
mod users_support;

use std::net::SocketAddr;
use std::sync::Arc;

use alloy::consensus::TxEnvelope;
use alloy::consensus::transaction::SignerRecoverable;
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256, Signature, U256};
use http::StatusCode;
use parapet_gateway::devices;
use parapet_gateway::http::{AppState, app};
use parapet_gateway::identity::Auditor;
use parapet_signer::device::client::{self, Connection, ws_url};
use parapet_signer::mpc::wire::{Control, bytes32};
use parapet_signer::mpc::{Dkls23, KeyShare, Role, SessionId, ThresholdEcdsa, drive};
use serde_json::{Value, json};
use users_support::{
    Issuer, app_with_grants_trusting, call, call_with, events, gateway_with, login_ok,
};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

struct User {
    session: String,
    id: String,
    device_token: String,
}

struct World {
    s: Arc<AppState>,
    key: String,
    base: String,
    issuer: Issuer,
    _data: tempfile::TempDir,
}

async fn world() -> World {
    world_with(&[]).await
}

async fn world_with(extra: &[(&str, &str)]) -> World {
    let data = tempfile::tempdir().unwrap();
    let issuer = Issuer::start().await;
    let (s, _clock) = gateway_with(data.path(), extra).await;
    let (_app, key) = app_with_grants_trusting(&s, &issuer, &["sign"]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = app(s.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    World {
        s,
        key,
        base,
        issuer,
        _data: data,
    }
}

/// Logs `sub` in, registers a passkey for them and pairs a device.
async fn user(w: &World, sub: &str, with_passkey: bool) -> User {
    let (session, id) = login_ok(&w.s, &w.key, &w.issuer, sub).await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    let now = time::OffsetDateTime::now_utc();
    if with_passkey {
        let (ceremony, ccr) =
            w.s.passkeys
                .start_registration(uuid, sub, sub, now)
                .await
                .unwrap();
        let cred = SoftPasskey::new(true)
            .do_registration(Url::parse("http://localhost:8080").unwrap(), ccr)
            .unwrap();
        w.s.passkeys
            .finish_registration(&ceremony, uuid, &cred, now)
            .await
            .unwrap();
    }
    let (code, _) = devices::issue_pairing_code(w.s.audit.store(), uuid, now)
        .await
        .unwrap();
    let (_, device_token) = devices::pair(
        w.s.audit.store(),
        Auditor::Log(&w.s.audit),
        &code,
        "laptop",
        "req-pair",
        now,
    )
    .await
    .unwrap();
    User {
        session,
        id,
        device_token,
    }
}

async fn new_wallet(w: &World, u: &User) -> KeyShare {
    client::keygen(&w.base, &u.device_token, |_| Ok(()))
        .await
        .unwrap()
}

fn usdc_transfer() -> Value {
    let mut body = users_support::authorize_body();
    body.as_object_mut().unwrap().remove("wallet");
    body
}

async fn submit(
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

fn address_of(share: &KeyShare) -> String {
    format!("0x{}", hex::encode(share.address()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_creates_a_wallet_and_signs_a_transaction_the_policy_allowed() {
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);

    let listed = call(
        &w.s,
        "GET",
        "/v1/wallets",
        &w.key,
        Some(&alice.session),
        None,
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["wallets"][0]["address"], address.as_str());
    assert_eq!(listed.body["wallets"][0]["owner"], alice.id.as_str());

    let created = submit(&w, &alice, &address, "k-1", usdc_transfer()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["state"], "authorized");
    let id = created.body["id"].as_str().unwrap().to_owned();

    // A retry with the same key and body is the same request; another body is a conflict.
    let again = submit(&w, &alice, &address, "k-1", usdc_transfer()).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.body["id"], id.as_str());
    let other = submit(
        &w,
        &alice,
        &address,
        "k-1",
        json!({"chain_id": 1, "message": "hi"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.text);
    assert_eq!(other.body["code"], "idempotency_conflict");
    let missing = call(
        &w.s,
        "POST",
        &format!("/v1/wallets/{address}/sign"),
        &w.key,
        Some(&alice.session),
        Some(usdc_transfer()),
    )
    .await;
    assert_eq!(
        missing.body["code"], "idempotency_key_required",
        "{}",
        missing.text
    );

    let (digest, signature) = client::sign(&w.base, &alice.device_token, &id, &share)
        .await
        .unwrap();
    assert_eq!(
        format!("0x{}", hex::encode(digest)),
        created.body["digest"].as_str().unwrap()
    );

    let got = call(
        &w.s,
        "GET",
        &format!("/v1/signing-requests/{id}"),
        &w.key,
        None,
        None,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["state"], "signed");
    let sig = Signature::new(
        U256::from_be_bytes(signature.r),
        U256::from_be_bytes(signature.s),
        signature.y_parity(),
    );
    let wallet: Address = address.parse().unwrap();
    assert_eq!(
        sig.recover_address_from_prehash(&B256::from(digest))
            .unwrap(),
        wallet
    );
    assert_eq!(got.body["signature"]["y_parity"], signature.y_parity());
    let raw = hex::decode(
        got.body["signed_transaction"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    assert_eq!(tx.recover_signer().unwrap(), wallet);
    assert_eq!(
        format!("{:#x}", tx.tx_hash()),
        got.body["tx_hash"].as_str().unwrap()
    );

    // One request, one signature: a second ceremony is refused.
    let second = client::sign(&w.base, &alice.device_token, &id, &share).await;
    match second {
        Err(parapet_signer::Error::Refused { code, .. }) => assert_eq!(code, "not_signable"),
        other => panic!("a second ceremony ran: {other:?}"),
    }

    // The log holds the decision before the signature, with the same digest.
    let log = events(&w.s).await;
    let decision = log
        .iter()
        .position(|e| e["kind"] == "decision" && e["request_id"] == id.as_str())
        .unwrap();
    let released = log
        .iter()
        .position(|e| e["action"] == "signature.released")
        .unwrap();
    assert!(decision < released);
    assert_eq!(log[decision]["digest"], log[released]["digest"]);
    assert!(
        !serde_json::to_string(&log)
            .unwrap()
            .contains(&alice.device_token)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_but_the_owner_and_their_device_reaches_a_wallet() {
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let bob = user(&w, "bob", true).await;
    let carol = user(&w, "carol", false).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);

    // Without a passkey there is no wallet.
    match client::keygen(&w.base, &carol.device_token, |_| Ok(())).await {
        Err(parapet_signer::Error::Refused { code, .. }) => assert_eq!(code, "passkey_required"),
        other => panic!("carol got a wallet: {other:?}"),
    }
    // Bob's session cannot submit for Alice's wallet.
    let theirs = submit(&w, &bob, &address, "k", usdc_transfer()).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);

    let created = submit(&w, &alice, &address, "k", usdc_transfer()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap();
    // Bob's device cannot join, and reading the request needs the app or the owner.
    match client::sign(&w.base, &bob.device_token, id, &share).await {
        Err(parapet_signer::Error::Refused { code, .. }) => assert_eq!(code, "not_found"),
        other => panic!("bob's device joined: {other:?}"),
    }
    match client::sign(&w.base, "pd_made_up", id, &share).await {
        Err(parapet_signer::Error::Refused { code, .. }) => assert_eq!(code, "unauthorized"),
        other => panic!("a made-up token joined: {other:?}"),
    }
    // The request is still there for the owner's device.
    client::sign(&w.base, &alice.device_token, id, &share)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_make_the_gateway_sign_another_digest() {
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);
    let created = submit(&w, &alice, &address, "k", usdc_transfer()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap();

    // The device runs its party on a digest of its choosing.
    let url = ws_url(&w.base, &format!("/v1/signing-requests/{id}/ceremony")).unwrap();
    let mut conn = Connection::open(&url, &alice.device_token).await.unwrap();
    let Control::Start {
        session, digest, ..
    } = conn.expect_control().await.unwrap()
    else {
        panic!("no start");
    };
    assert_eq!(digest.as_deref(), created.body["digest"].as_str());
    let session = SessionId(bytes32(&session).unwrap());
    let ceremony = Dkls23
        .sign(Role::Device, session, &share, [0x42; 32])
        .unwrap();
    let result = drive::run(ceremony, &mut conn, std::time::Duration::from_secs(10)).await;
    assert!(
        result.is_err(),
        "the device finished a signature: {result:?}"
    );

    // Nothing was signed; the request failed and its reservation was released, audited (the
    // gateway records it as its side of the connection ends).
    let mut got = call(
        &w.s,
        "GET",
        &format!("/v1/signing-requests/{id}"),
        &w.key,
        None,
        None,
    )
    .await;
    for _ in 0..100 {
        if got.body["state"] != "signing" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        got = call(
            &w.s,
            "GET",
            &format!("/v1/signing-requests/{id}"),
            &w.key,
            None,
            None,
        )
        .await;
    }
    assert_eq!(got.body["state"], "failed", "{}", got.text);
    assert!(got.body.get("signature").is_none());
    let log = events(&w.s).await;
    let failed = log
        .iter()
        .find(|e| e["action"] == "signature.failed")
        .expect("the failure is audited");
    assert_eq!(failed["request"]["reservation"], "released");
    assert!(!log.iter().any(|e| e["action"] == "signature.released"));
}

/// A 1559 transfer of `wei` with nonce `nonce`.
fn native_transfer(nonce: u64, wei: u128) -> Value {
    json!({
        "chain_id": 1,
        "transaction_request": {
            "type": "0x2", "chainId": "0x1", "nonce": format!("{nonce:#x}"), "gas": "0x5208",
            "maxFeePerGas": "0x6fc23ac00", "maxPriorityFeePerGas": "0x3b9aca00",
            "to": "0x2222222222222222222222222222222222222222",
            "value": format!("{wei:#x}"), "data": "0x"
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_reserve_exactly_what_fits_under_the_velocity_cap() {
    const ETH: u128 = 1_000_000_000_000_000_000;
    let fast = "100000/s burst 100000";
    for db in support::databases("race.db").await {
        let extra = [
            ("PARAPET_DATABASE_URL", db.url.as_str()),
            ("PARAPET_USER_RATE", fast),
            ("PARAPET_WALLET_RATE", fast),
            ("PARAPET_APP_RATE", fast),
            ("PARAPET_IP_RATE", fast),
        ];
        let w = world_with(&extra).await;
        // On PostgreSQL a second gateway shares the database: the lock must hold across both.
        let mut gateways = vec![w.s.clone()];
        let other = tempfile::tempdir().unwrap();
        if db.backend == parapet_gateway::audit::Backend::Postgres {
            gateways.push(gateway_with(other.path(), &extra).await.0);
        }
        let alice = user(&w, "alice", true).await;
        let address = address_of(&new_wallet(&w, &alice).await);
        // 50 of the 100-per-day cap used; every racer asks for 10 % of the remaining 50.
        for i in 0..10 {
            let a = submit(
                &w,
                &alice,
                &address,
                &format!("seed-{i}"),
                native_transfer(i, 5 * ETH),
            )
            .await;
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        }
        let mut racers = Vec::new();
        for i in 0..100u64 {
            let s = gateways[i as usize % gateways.len()].clone();
            let (key, session, address) = (w.key.clone(), alice.session.clone(), address.clone());
            racers.push(tokio::spawn(async move {
                call_with(
                    &s,
                    "POST",
                    &format!("/v1/wallets/{address}/sign"),
                    &key,
                    Some(&session),
                    &[("idempotency-key", &format!("race-{i}"))],
                    Some(native_transfer(100 + i, 5 * ETH)),
                )
                .await
            }));
        }
        let (mut allowed, mut denied) = (0, 0);
        for r in racers {
            let a = r.await.unwrap();
            match a.status {
                StatusCode::CREATED => allowed += 1,
                StatusCode::FORBIDDEN => {
                    assert_eq!(a.body["code"], "policy_denied", "{}", a.text);
                    assert!(a.text.contains("forbid-native-velocity-24h"), "{}", a.text);
                    denied += 1;
                }
                other => panic!("{other}: {}", a.text),
            }
        }
        assert_eq!((allowed, denied), (10, 90), "{:?}", db.backend);
        for s in &gateways {
            s.audit.shutdown().await;
        }
        db.drop_pg().await;
    }
}
