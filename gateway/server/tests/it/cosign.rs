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

use crate::{cosign_support, support, users_support};
use alloy::consensus::TxEnvelope;
use alloy::consensus::transaction::SignerRecoverable;
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256, Signature, U256};
use cosign_support::*;
use http::StatusCode;
use parapet_device::client::{self, Connection, Link, ws_url};
use parapet_gateway::accounts::apps::Auditor;
use parapet_mpc::recovery::kit::BackupKit;
use parapet_mpc::recovery::{RecoveryKeys, RecoverySecret};
use parapet_mpc::wire::{Control, bytes32};
use parapet_mpc::{Dkls23, Role, SessionId, ThresholdEcdsa, drive};
use serde_json::{Value, json};
use users_support::{call, call_with, events, gateway_with, login_ok};

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

    let expected = device_digest(&usdc_transfer(), &address);
    let (digest, signature) = client::sign(&w.base, &alice.device_token, &id, &expected, &share)
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
    let second = client::sign(&w.base, &alice.device_token, &id, &expected, &share).await;
    match second {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "not_signable")
        }
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
    match client::keygen(&w.base, &carol.device_token, carol.target(), |_, _| Ok(())).await {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "passkey_required")
        }
        other => panic!("carol got a wallet: {other:?}"),
    }
    // Bob's session cannot submit for Alice's wallet.
    let theirs = submit(&w, &bob, &address, "k", usdc_transfer()).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);

    let created = submit(&w, &alice, &address, "k", usdc_transfer()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap();
    let expected = device_digest(&usdc_transfer(), &address);
    // Bob's device cannot join, and reading the request needs the app or the owner.
    match client::sign(&w.base, &bob.device_token, id, &expected, &share).await {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "not_found")
        }
        other => panic!("bob's device joined: {other:?}"),
    }
    match client::sign(&w.base, "pd_made_up", id, &expected, &share).await {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "unauthorized")
        }
        other => panic!("a made-up token joined: {other:?}"),
    }
    // The request is still there for the owner's device.
    client::sign(&w.base, &alice.device_token, id, &expected, &share)
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
    let result = drive::run(
        drive::Runtime::Tokio {
            step_timeout: std::time::Duration::from_secs(10),
        },
        ceremony,
        &mut conn,
    )
    .await;
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

/// The other way round: a gateway that announces another digest than its request's (here its
/// database, rewritten as a compromised gateway would) gets nothing from the device. The device
/// computed the digest from the request itself; the client refuses the start before any
/// protocol round, and the request does not end signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_signs_only_the_digest_it_computed_from_the_request() {
    const ETH: u128 = 1_000_000_000_000_000_000;
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);
    let body = usdc_transfer();
    let created = submit(&w, &alice, &address, "k", body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap();
    let expected = device_digest(&body, &address);
    assert_eq!(digest_in(&created.body), expected);

    // What the gateway would rather have signed: ten native to someone else.
    let substitute = device_digest(&native_transfer(7, 10 * ETH), &address);
    let hex0x = |d: &[u8; 32]| format!("0x{}", hex::encode(d));
    let sql = "UPDATE signing_requests SET digest = $1 WHERE id = $2";
    let rewritten = match w.s.audit.store() {
        parapet_gateway::audit::Store::Sqlite(pool) => sqlx::query(sql)
            .bind(hex0x(&substitute))
            .bind(id)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        parapet_gateway::audit::Store::Postgres(pool) => sqlx::query(sql)
            .bind(hex0x(&substitute))
            .bind(id)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(rewritten, 1);

    match client::sign(&w.base, &alice.device_token, id, &expected, &share).await {
        Err(parapet_device::Error::DigestMismatch {
            expected: e,
            announced: a,
        }) => assert_eq!((e, a), (hex0x(&expected), hex0x(&substitute))),
        other => panic!("the device joined a ceremony for another digest: {other:?}"),
    }
    // The gateway had taken the request for the ceremony the device left: it failed unsigned.
    let got = wait_until_not_signing(&w, id).await;
    assert_eq!(got["state"], "failed", "{got}");
    assert!(got.get("signature").is_none(), "{got}");
    let log = events(&w.s).await;
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
        // On PostgreSQL two more gateways share the database: the lock must hold across three.
        let mut gateways = vec![w.s.clone()];
        let others = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        if db.backend == parapet_gateway::audit::Backend::Postgres {
            for other in &others {
                gateways.push(gateway_with(other.path(), &extra).await.0);
            }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_lifts_the_deny_of_its_own_request_only_once() {
    const ETH: u128 = 1_000_000_000_000_000_000;
    let w = world().await;
    let mut alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);

    // Above 5 native the shipped @step_up forbid denies; the owner's passkey may lift it.
    let a = submit(&w, &alice, &address, "a", native_transfer(1, 6 * ETH)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(a.body["code"], "step_up_required");
    let b = submit(&w, &alice, &address, "b", native_transfer(2, 6 * ETH)).await;
    assert_eq!(b.body["code"], "step_up_required", "{}", b.text);
    let (id_a, id_b) = (
        a.body["signing_request"].as_str().unwrap().to_owned(),
        b.body["signing_request"].as_str().unwrap().to_owned(),
    );
    let alice_session = alice.session.clone();
    let step = |id: &str, body: Value| {
        let (s, key, session) = (w.s.clone(), w.key.clone(), alice_session.clone());
        let path = format!("/v1/signing-requests/{id}/step-up");
        async move { call(&s, "POST", &path, &key, Some(&session), Some(body)).await }
    };

    // An assertion made for A is worthless for B.
    let for_a = assert_step_up(&mut alice, &a.body);
    let crossed = step(&id_b, for_a).await;
    assert_eq!(crossed.status, StatusCode::FORBIDDEN, "{}", crossed.text);
    assert_eq!(crossed.body["code"], "step_up_mismatch");
    let pending = call(
        &w.s,
        "GET",
        &format!("/v1/signing-requests/{id_b}"),
        &w.key,
        None,
        None,
    )
    .await;
    assert_eq!(pending.body["state"], "pending_step_up");

    // A retry of A gets fresh options; the assertion for them authorizes A, once.
    let again = submit(&w, &alice, &address, "a", native_transfer(1, 6 * ETH)).await;
    assert_eq!(again.body["code"], "step_up_required", "{}", again.text);
    assert_eq!(again.body["signing_request"], id_a.as_str());
    let for_a = assert_step_up(&mut alice, &again.body);
    let ok = step(&id_a, for_a.clone()).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    assert_eq!(ok.body["state"], "authorized");
    assert_eq!(ok.body["decision"]["facts"]["step_up"], true);
    let replay = step(&id_a, for_a).await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.text);

    let expected = device_digest(&native_transfer(1, 6 * ETH), &address);
    let (_, signature) = client::sign(&w.base, &alice.device_token, &id_a, &expected, &share)
        .await
        .unwrap();
    let digest = bytes32(ok.body["digest"].as_str().unwrap()).unwrap();
    parapet_mpc::verify_signature(share.public_key(), share.address(), &digest, &signature)
        .unwrap();
    // B was never stepped up: its device cannot sign it.
    let expected_b = device_digest(&native_transfer(2, 6 * ETH), &address);
    match client::sign(&w.base, &alice.device_token, &id_b, &expected_b, &share).await {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "not_signable")
        }
        other => panic!("B was signed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_recovery_secret_is_set_only_with_the_owners_passkey_for_that_device_and_key() {
    let w = world().await;
    let mut alice = user_with(&w, "alice", true, false).await;
    let device_auth = format!("Device {}", alice.device_token);
    let body = |keys: &RecoveryKeys, approval: Option<&str>| {
        json!({
            "public_key": keys.public_key().to_hex(),
            "auth_key": hex::encode(keys.auth_key()),
            "approval": approval,
        })
    };
    let post = |b: Value| {
        let (s, auth) = (w.s.clone(), device_auth.clone());
        async move {
            call_with(
                &s,
                "POST",
                "/v1/device/recovery",
                "",
                None,
                &[("authorization", &auth)],
                Some(b),
            )
            .await
        }
    };
    // The device alone: asked for the owner's approval, nothing set.
    let asked = post(body(&alice.recovery, None)).await;
    assert_eq!(asked.status, StatusCode::FORBIDDEN, "{}", asked.text);
    assert_eq!(asked.body["code"], "step_up_required", "{}", asked.text);
    let op = asked.body["operation"].as_str().unwrap().to_owned();
    assert_eq!(recovery_status(&w, &alice).await["set_up"], false);
    let seen = call_with(
        &w.s,
        "GET",
        &format!("/v1/device/operations/{op}"),
        "",
        None,
        &[("authorization", &device_auth)],
        None,
    )
    .await;
    assert_eq!(seen.body["state"], "pending_step_up", "{}", seen.text);
    // Asking again supersedes the first request: one waits per device.
    let again = post(body(&alice.recovery, None)).await;
    let first = op;
    let op = again.body["operation"].as_str().unwrap().to_owned();
    assert_ne!(op, first);
    let old = call_with(
        &w.s,
        "GET",
        &format!("/v1/device/operations/{first}"),
        "",
        None,
        &[("authorization", &device_auth)],
        None,
    )
    .await;
    assert_eq!(old.body["state"], "superseded", "{}", old.text);
    // Naming the operation before the owner approved it does nothing.
    let early = post(body(&alice.recovery, Some(&op))).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    // The app asks for the passkey options and the owner approves.
    let path = format!("/v1/operations/{op}/step-up");
    let options = call(
        &w.s,
        "POST",
        &path,
        &w.key,
        Some(&alice.session),
        Some(json!({})),
    )
    .await;
    assert_eq!(options.body["code"], "step_up_required", "{}", options.text);
    let assertion = assert_step_up(&mut alice, &options.body);
    let approved = call(
        &w.s,
        "POST",
        &path,
        &w.key,
        Some(&alice.session),
        Some(assertion),
    )
    .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    assert_eq!(approved.body["state"], "approved");
    // The approval is for that key: another secret is refused with it.
    let other = RecoverySecret::generate().derive(&alice.id).unwrap();
    let swapped = post(body(&other, Some(&op))).await;
    assert_eq!(swapped.status, StatusCode::FORBIDDEN, "{}", swapped.text);
    assert_eq!(swapped.body["code"], "step_up_mismatch");
    let set = post(body(&alice.recovery, Some(&op))).await;
    assert_eq!(set.status, StatusCode::CREATED, "{}", set.text);
    assert_eq!(recovery_status(&w, &alice).await["set_up"], true);
    // Joining the same secret again needs no approval.
    let join = post(body(&alice.recovery, None)).await;
    assert_eq!(join.status, StatusCode::CREATED, "{}", join.text);
    let text = users_support::audit_text(&w.s).await;
    assert!(text.contains("recovery.setup_approved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_or_revoked_apps_waiting_requests_are_never_approved_or_signed() {
    use parapet_gateway::accounts::apps::{self, Change};
    const ETH: u128 = 1_000_000_000_000_000_000;
    let w = world().await;
    let mut alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);
    let app_id = apps::list_apps(w.s.audit.store())
        .await
        .unwrap()
        .into_iter()
        .find(|a| !a.revoked)
        .unwrap()
        .id;
    // Alice also uses a second app, which may carry her passkey assertions.
    let (_, other_key) = users_support::app_with_grants_trusting(&w.s, &w.issuer, &["sign"]).await;
    let (other_session, other_user) = login_ok(&w.s, &other_key, &w.issuer, "alice").await;
    assert_eq!(other_user, alice.id);

    let waiting = submit(&w, &alice, &address, "big", native_transfer(1, 6 * ETH)).await;
    assert_eq!(waiting.body["code"], "step_up_required", "{}", waiting.text);
    let waiting_id = waiting.body["signing_request"].as_str().unwrap().to_owned();
    let authorized = submit(&w, &alice, &address, "small", native_transfer(2, ETH)).await;
    assert_eq!(
        authorized.status,
        StatusCode::CREATED,
        "{}",
        authorized.text
    );
    let authorized_id = authorized.body["id"].as_str().unwrap().to_owned();
    let authorized_digest = device_digest(&native_transfer(2, ETH), &address);
    let change = |c: Change| {
        let (s, id) = (w.s.clone(), app_id.clone());
        async move {
            apps::change_app(
                s.audit.store(),
                Auditor::Log(&s.audit),
                &users_support::op(),
                &id,
                c,
                time::OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        }
    };
    let step_up = |body: Value| {
        let (s, key, session) = (w.s.clone(), other_key.clone(), other_session.clone());
        let path = format!("/v1/signing-requests/{waiting_id}/step-up");
        async move { call(&s, "POST", &path, &key, Some(&session), Some(body)).await }
    };

    // Frozen: nothing it asked for moves, whoever carries the assertion.
    change(Change::Freeze).await;
    let assertion = assert_step_up(&mut alice, &waiting.body);
    let assertion_kept = assertion.clone();
    let refused = step_up(assertion).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.body["code"], "app_frozen");
    match client::sign(
        &w.base,
        &alice.device_token,
        &authorized_id,
        &authorized_digest,
        &share,
    )
    .await
    {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "app_frozen")
        }
        other => panic!("a frozen app's request was signed: {other:?}"),
    }
    // Unfrozen, the authorized one signs (the refusal was the freeze).
    change(Change::Unfreeze).await;
    client::sign(
        &w.base,
        &alice.device_token,
        &authorized_id,
        &authorized_digest,
        &share,
    )
    .await
    .unwrap();
    // Revoked: the waiting request is never approved, not even with the assertion the freeze
    // turned away (it was refused before its ceremony was used, so it is still good).
    change(Change::Revoke).await;
    let revoked = step_up(assertion_kept).await;
    assert_eq!(revoked.status, StatusCode::FORBIDDEN, "{}", revoked.text);
    assert_eq!(revoked.body["code"], "forbidden", "{}", revoked.text);
    let still = call(
        &w.s,
        "GET",
        &format!("/v1/signing-requests/{waiting_id}"),
        &other_key,
        Some(&other_session),
        None,
    )
    .await;
    assert_eq!(still.body["state"], "pending_step_up", "{}", still.text);
}

/// The `native_24h` velocity (wei) the decision of a fresh request for `wei` saw.
async fn native_velocity_after(
    w: &World,
    u: &User,
    address: &str,
    key: &str,
    nonce: u64,
    wei: u128,
) -> u128 {
    let a = submit(w, u, address, key, native_transfer(nonce, wei)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    a.body["decision"]["facts"]["velocity"]["native_24h"]["raw"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn wait_until_not_signing(w: &World, id: &str) -> Value {
    for _ in 0..100 {
        let got = call(
            &w.s,
            "GET",
            &format!("/v1/signing-requests/{id}"),
            &w.key,
            None,
            None,
        )
        .await;
        if got.body["state"] != "signing" {
            return got.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the request stayed in signing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_ceremony_keeps_its_amount_only_once_the_final_message_left() {
    const ETH: u128 = 1_000_000_000_000_000_000;
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);

    // Dropped before the protocol ran: failed, and the amount is released.
    let a = submit(&w, &alice, &address, "a", native_transfer(1, 2 * ETH)).await;
    let id = a.body["id"].as_str().unwrap().to_owned();
    let url = ws_url(&w.base, &format!("/v1/signing-requests/{id}/ceremony")).unwrap();
    let mut conn = Connection::open(&url, &alice.device_token).await.unwrap();
    assert!(matches!(
        conn.expect_control().await.unwrap(),
        Control::Start { .. }
    ));
    drop(conn);
    assert_eq!(wait_until_not_signing(&w, &id).await["state"], "failed");
    assert_eq!(
        native_velocity_after(&w, &alice, &address, "b", 2, ETH).await,
        ETH
    );

    // Dropped after the gateway's final message: the device could finish the signature alone,
    // so the amount stays counted (and the request is signed).
    let c = submit(&w, &alice, &address, "c", native_transfer(3, 3 * ETH)).await;
    let id = c.body["id"].as_str().unwrap().to_owned();
    let url = ws_url(&w.base, &format!("/v1/signing-requests/{id}/ceremony")).unwrap();
    let mut conn = Connection::open(&url, &alice.device_token).await.unwrap();
    let Control::Start {
        session, digest, ..
    } = conn.expect_control().await.unwrap()
    else {
        panic!("no start");
    };
    let ceremony = Dkls23
        .sign(
            Role::Device,
            SessionId(bytes32(&session).unwrap()),
            &share,
            bytes32(&digest.unwrap()).unwrap(),
        )
        .unwrap();
    let (_, signature) = drive::run(
        drive::Runtime::Tokio {
            step_timeout: std::time::Duration::from_secs(10),
        },
        ceremony,
        &mut conn,
    )
    .await
    .unwrap();
    drop(conn);
    let got = wait_until_not_signing(&w, &id).await;
    assert_eq!(got["state"], "signed");
    assert_eq!(
        got["signature"]["r"],
        format!("0x{}", hex::encode(signature.r))
    );
    // 1 (b, authorized) + 3 (c, signed) + 1 (this one).
    assert_eq!(
        native_velocity_after(&w, &alice, &address, "d", 4, ETH).await,
        5 * ETH
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_or_out_of_place_messages_end_the_ceremony_without_a_signature() {
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);
    for (n, attack) in ["replay", "tamper", "control"].into_iter().enumerate() {
        let a = submit(&w, &alice, &address, attack, native_transfer(n as u64, 1)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        let id = a.body["id"].as_str().unwrap().to_owned();
        let url = ws_url(&w.base, &format!("/v1/signing-requests/{id}/ceremony")).unwrap();
        let mut conn = Connection::open(&url, &alice.device_token).await.unwrap();
        let Control::Start {
            session, digest, ..
        } = conn.expect_control().await.unwrap()
        else {
            panic!("no start");
        };
        let mut ceremony = Dkls23
            .sign(
                Role::Device,
                SessionId(bytes32(&session).unwrap()),
                &share,
                bytes32(&digest.unwrap()).unwrap(),
            )
            .unwrap();
        let first = ceremony.start().unwrap();
        use parapet_mpc::drive::Transport;
        match attack {
            "replay" => {
                for m in first.iter().chain(first.iter()) {
                    conn.send(m.clone()).await.unwrap();
                }
            }
            "tamper" => {
                for m in &first {
                    let mut bad = m.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 0x01;
                    conn.send(bad).await.unwrap();
                }
            }
            _ => conn
                .control(&Control::Stored {
                    address: address.clone(),
                })
                .await
                .unwrap(),
        }
        // The gateway ends the ceremony with an error and no signature.
        let end = loop {
            match conn.expect_control().await {
                Err(parapet_mpc::Error::Transport(t)) if t.contains("protocol message") => {
                    // a protocol message from the gateway's round 1 still in flight
                    continue;
                }
                other => break other,
            }
        };
        assert!(
            matches!(end, Err(parapet_mpc::Error::Refused { ref code, .. }) if code == "ceremony_failed"),
            "{attack}: {end:?}"
        );
        let got = wait_until_not_signing(&w, &id).await;
        assert_eq!(got["state"], "failed", "{attack}");
        assert!(got.get("signature").is_none());
    }
    let log = events(&w.s).await;
    assert_eq!(
        log.iter()
            .filter(|e| e["action"] == "signature.failed")
            .count(),
        3
    );
    assert!(!log.iter().any(|e| e["action"] == "signature.released"));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every transaction type, a personal_sign message and EIP-712 typed data, signed through the
/// gateway and checked with alloy. With `PARAPET_SIGNATURES_OUT` set, the results are written
/// there for `tests/eth_verify/verify.py` to check again with Python's eth-account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_kind_is_signed_and_verifies_with_alloy() {
    use alloy_dyn_abi::TypedData;
    let policies = tempfile::tempdir().unwrap();
    copy_dir(&users_support::root().join("policies"), policies.path());
    let policies_dir = policies.path().display().to_string();
    let w = world_with(&[("PARAPET_POLICIES_DIR", policies_dir.as_str())]).await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);
    let wallet: Address = address.parse().unwrap();
    let fixture = |name: &str| {
        let text = std::fs::read_to_string(
            users_support::root().join(format!("tests/fixtures/good/{name}.json")),
        )
        .unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("wallet");
        v
    };
    // The 7702 fixture delegates to a contract the shipped list does not trust: trust it here.
    let dry = call(
        &w.s,
        "POST",
        "/v1/authorize",
        &w.key,
        None,
        Some({
            let mut v = fixture("tx-7702-unknown-delegate");
            v["wallet"] = json!({"address": address});
            v
        }),
    )
    .await;
    let delegates = dry.body["facts"]["delegates"].as_array().unwrap().clone();
    let entities: Vec<Value> = delegates
        .iter()
        .map(|d| {
            json!({"uid": {"type": "Parapet::Address", "id": d}, "attrs": {},
                   "parents": [{"type": "Parapet::AddressList", "id": "trusted_delegates"}]})
        })
        .collect();
    std::fs::write(
        policies.path().join("entities/test-delegates.json"),
        serde_json::to_string(&entities).unwrap(),
    )
    .unwrap();
    w.s.reload_policies("test").await.unwrap();

    let cases = [
        ("legacy", "tx-legacy-eip155-native"),
        ("eip2930", "tx-2930-native-access-list"),
        ("eip1559", "tx-1559-native-small"),
        ("eip4844", "tx-4844-blob"),
        ("eip7702", "tx-7702-unknown-delegate"),
        ("personal_sign", "message-utf8"),
        ("typed_data", "typed-data-mail"),
    ];
    let mut results = Vec::new();
    for (n, (kind, name)) in cases.into_iter().enumerate() {
        let body = fixture(name);
        let created = submit(&w, &alice, &address, &format!("k-{n}"), body.clone()).await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{kind}: {}",
            created.text
        );
        let id = created.body["id"].as_str().unwrap();
        let expected = device_digest(&body, &address);
        client::sign(&w.base, &alice.device_token, id, &expected, &share)
            .await
            .unwrap();
        let got = call(
            &w.s,
            "GET",
            &format!("/v1/signing-requests/{id}"),
            &w.key,
            None,
            None,
        )
        .await;
        assert_eq!(got.body["state"], "signed", "{kind}: {}", got.text);
        let sig = Signature::new(
            got.body["signature"]["r"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            got.body["signature"]["s"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            got.body["signature"]["y_parity"].as_bool().unwrap(),
        );
        match kind {
            "personal_sign" => {
                let text = body["message"].as_str().unwrap();
                assert_eq!(sig.recover_address_from_msg(text).unwrap(), wallet);
            }
            "typed_data" => {
                let typed: TypedData = serde_json::from_value(body["typed_data"].clone())
                    .or_else(|_| serde_json::from_str(body["typed_data"].as_str().unwrap()))
                    .unwrap();
                let hash = typed.eip712_signing_hash().unwrap();
                assert_eq!(format!("{hash:#x}"), got.body["digest"].as_str().unwrap());
                assert_eq!(sig.recover_address_from_prehash(&hash).unwrap(), wallet);
            }
            _ => {
                let raw = hex::decode(
                    got.body["signed_transaction"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("0x"),
                )
                .unwrap();
                let tx = alloy::consensus::TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
                assert_eq!(tx.recover_signer().unwrap(), wallet, "{kind}");
                assert_eq!(
                    format!("{:#x}", tx.tx_hash()),
                    got.body["tx_hash"].as_str().unwrap()
                );
            }
        }
        results.push(json!({
            "kind": kind,
            "address": address,
            "payload": body,
            "digest": got.body["digest"],
            "signature": got.body["signature"],
            "signed_transaction": got.body.get("signed_transaction"),
            "tx_hash": got.body.get("tx_hash"),
        }));
    }
    if let Ok(out) = std::env::var("PARAPET_SIGNATURES_OUT") {
        std::fs::write(out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_the_address_and_retires_the_old_shares() {
    let w = world().await;
    let mut alice = user(&w, "alice", true).await;
    let old = new_wallet(&w, &alice).await;
    let address = address_of(&old);

    // Not approved: the device cannot refresh.
    match client::refresh(
        &w.base,
        &alice.device_token,
        &old,
        alice.target(),
        |_, _, _| Ok(()),
    )
    .await
    {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "not_signable")
        }
        other => panic!("an unapproved refresh ran: {other:?}"),
    }
    // An admin mark stops signing until the owner refreshes.
    parapet_gateway::accounts::wallets::update(
        w.s.audit.store(),
        Auditor::Log(&w.s.audit),
        &users_support::op(),
        &address,
        &parapet_gateway::accounts::wallets::WalletUpdate {
            refresh_required: true,
            ..Default::default()
        },
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    let marked = submit(
        &w,
        &alice,
        &address,
        "marked",
        json!({"chain_id": 1, "message": "x"}),
    )
    .await;
    assert_eq!(marked.body["code"], "refresh_required", "{}", marked.text);

    approve_refresh(&w, &mut alice, &address).await;
    let (new, epoch) = client::refresh(
        &w.base,
        &alice.device_token,
        &old,
        alice.target(),
        |_, _, _| Ok(()),
    )
    .await
    .unwrap();
    assert_eq!((address_of(&new), epoch), (address.clone(), 1));
    let shown = call(
        &w.s,
        "GET",
        &format!("/v1/wallets/{address}"),
        &w.key,
        Some(&alice.session),
        None,
    )
    .await;
    assert_eq!(shown.body["epoch"], 1);
    assert_eq!(shown.body["refresh_required"], false);

    // The new shares sign together; the old device share no longer does.
    sign_message(&w, &alice, &address, "new", &new)
        .await
        .unwrap();
    let stale = sign_message(&w, &alice, &address, "old", &old).await;
    assert!(stale.is_err(), "the old share still signs: {stale:?}");
    let log = events(&w.s).await;
    assert!(log.iter().any(|e| e["action"] == "wallet.refresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_interrupted_between_the_phases_leaves_the_old_epoch_signing() {
    let w = world().await;
    let mut alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);

    // The device stores its new share (phase 1) but never confirms: the gateway must not move.
    approve_refresh(&w, &mut alice, &address).await;
    let url = ws_url(&w.base, &format!("/v1/device/wallets/{address}/refresh")).unwrap();
    let mut conn = Connection::open(&url, &alice.device_token).await.unwrap();
    let Control::Start { session, .. } = conn.expect_control().await.unwrap() else {
        panic!("no start");
    };
    let ceremony = Dkls23
        .refresh(Role::Device, SessionId(bytes32(&session).unwrap()), &share)
        .unwrap();
    let (_, pending) = drive::run(
        drive::Runtime::Tokio {
            step_timeout: std::time::Duration::from_secs(10),
        },
        ceremony,
        &mut conn,
    )
    .await
    .unwrap();
    // The backup exchange of phase 1 completes: the gateway stores its pending share and the
    // device's pending backup.
    let sealed =
        parapet_mpc::recovery::kit::seal_device_share(alice.recovery.public_key(), &pending, 1)
            .unwrap();
    conn.control(&Control::Backup {
        address: address.clone(),
        epoch: 1,
        recovery_public_key: alice.recovery.public_key().to_hex(),
        device_share: hex::encode(sealed),
    })
    .await
    .unwrap();
    let Control::Kit { epoch: 1, .. } = conn.expect_control().await.unwrap() else {
        panic!("no kit");
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let backups = recovery_status(&w, &alice).await;
    assert_eq!(backups["wallets"][0]["backup_epochs"], json!([0, 1]));
    drop(conn);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let shown = call(
        &w.s,
        "GET",
        &format!("/v1/wallets/{address}"),
        &w.key,
        Some(&alice.session),
        None,
    )
    .await;
    assert_eq!(shown.body["epoch"], 0, "{}", shown.text);
    // The old shares still sign; the half-made new one does not.
    sign_message(&w, &alice, &address, "after-interruption", &share)
        .await
        .unwrap();
    assert!(
        sign_message(&w, &alice, &address, "pending", &pending)
            .await
            .is_err()
    );

    // A new approval and a complete refresh then work from the old epoch.
    approve_refresh(&w, &mut alice, &address).await;
    let (new, epoch) = client::refresh(
        &w.base,
        &alice.device_token,
        &share,
        alice.target(),
        |_, _, _| Ok(()),
    )
    .await
    .unwrap();
    assert_eq!(epoch, 1);
    sign_message(&w, &alice, &address, "refreshed", &new)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wallet_gets_a_backup_and_a_kit_that_signs_without_the_gateway() {
    let w = world().await;
    let mut alice = user(&w, "alice", true).await;
    let kits = std::sync::Mutex::new(Vec::<BackupKit>::new());
    let share = client::keygen(&w.base, &alice.device_token, alice.target(), |_, kit| {
        kits.lock().unwrap().push(kit.clone());
        Ok(())
    })
    .await
    .unwrap();
    let address = address_of(&share);
    let kit = kits.lock().unwrap().pop().unwrap();
    assert_eq!((kit.address.as_str(), kit.epoch), (address.as_str(), 0));

    // The kit opens with the secret only, and its two shares sign and export with no gateway.
    let (device, gateway) = kit.open(&alice.recovery).unwrap();
    let digest = [0x42u8; 32];
    let signature = parapet_mpc::sign_locally(&Dkls23, &device, &gateway, digest).unwrap();
    let sig = Signature::new(
        U256::from_be_bytes(signature.r),
        U256::from_be_bytes(signature.s),
        signature.y_parity(),
    );
    assert_eq!(
        format!(
            "{:#x}",
            sig.recover_address_from_prehash(&B256::from(digest))
                .unwrap()
        ),
        address
    );
    let key = Dkls23.export_key(&device, &gateway).unwrap();
    let exported = k256::ecdsa::SigningKey::from_slice(key.as_ref()).unwrap();
    assert_eq!(
        format!("{:#x}", Address::from_private_key(&exported)),
        address
    );
    let stranger = RecoverySecret::generate().derive(&alice.id).unwrap();
    assert!(kit.open(&stranger).is_err());

    // The gateway keeps the device's backup of epoch 0, and the audit log names no envelope.
    let status = recovery_status(&w, &alice).await;
    assert_eq!(status["set_up"], true);
    assert_eq!(status["public_key"], alice.recovery.public_key().to_hex());
    assert_eq!(status["wallets"][0]["backup_epochs"], json!([0]));
    let log = events(&w.s).await;
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(&kit.device_share[..64]));
    assert!(!text.contains(&kit.gateway_share[..64]));
    assert!(!text.contains(&hex::encode(alice.recovery.auth_key())));

    // A refresh replaces both: a new kit for epoch 1, and only epoch 1's backup is kept.
    approve_refresh(&w, &mut alice, &address).await;
    let (_, epoch) = client::refresh(
        &w.base,
        &alice.device_token,
        &share,
        alice.target(),
        |_, _, kit| {
            kits.lock().unwrap().push(kit.clone());
            Ok(())
        },
    )
    .await
    .unwrap();
    let fresh = kits.lock().unwrap().pop().unwrap();
    assert_eq!((epoch, fresh.epoch), (1, 1));
    let (d1, g1) = fresh.open(&alice.recovery).unwrap();
    parapet_mpc::sign_locally(&Dkls23, &d1, &g1, digest).unwrap();
    // The stale kit's gateway share no longer pairs with the new device share.
    assert!(parapet_mpc::sign_locally(&Dkls23, &d1, &gateway, digest).is_err());
    assert_eq!(
        recovery_status(&w, &alice).await["wallets"][0]["backup_epochs"],
        json!([1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_another_recovery_key_gets_no_wallet_and_no_kit() {
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let wrong = RecoverySecret::generate().derive(&alice.id).unwrap();
    let target = client::RecoveryTarget {
        user: &alice.id,
        public_key: wrong.public_key(),
    };
    match client::keygen(&w.base, &alice.device_token, target, |_, _| Ok(())).await {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "recovery_key_mismatch")
        }
        other => panic!("a wallet with a foreign recovery key: {other:?}"),
    }
    assert_eq!(recovery_status(&w, &alice).await["wallets"], json!([]));

    // Setting up again needs the same secret: a wrong one is refused and audited.
    let again = call_with(
        &w.s,
        "POST",
        "/v1/device/recovery",
        "",
        None,
        &[("authorization", &format!("Device {}", alice.device_token))],
        Some(json!({
            "public_key": wrong.public_key().to_hex(),
            "auth_key": hex::encode(wrong.auth_key()),
        })),
    )
    .await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "{}", again.text);
    assert_eq!(again.body["code"], "recovery_secret_rejected");
    let checked = call_with(
        &w.s,
        "POST",
        "/v1/device/recovery/check",
        "",
        None,
        &[("authorization", &format!("Device {}", alice.device_token))],
        Some(json!({"auth_key": hex::encode(alice.recovery.auth_key())})),
    )
    .await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.text);
    assert_eq!(checked.body["matches"], true);
    let log = events(&w.s).await;
    assert!(
        log.iter()
            .any(|e| e["action"] == "recovery.secret_rejected")
    );
    assert!(
        !serde_json::to_string(&log)
            .unwrap()
            .contains(&hex::encode(wrong.auth_key()))
    );
}

/// A keyless POST (the recovery routes' credential is in the body or the header).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_lookup_gives_strangers_a_random_salt_never_the_user_id() {
    let w = world().await;
    let alice = user_salted(&w, "alice").await;
    let salt = alice.salt.clone().unwrap();
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);
    let who = post_keyless(&w, "/v1/recovery/identify", None, json!({"user": address})).await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.text);
    assert_eq!(who.body["salt"], json!(salt));
    assert_eq!(
        who.body.as_object().unwrap().len(),
        2,
        "salt and request_id only"
    );
    assert!(!who.text.contains(&alice.id));
    // The user id no longer opens her recovery (her keys derive with the salt), nor does another
    // salt; her salt and her secret do, and only then is the user id told.
    let by_id = open_recovery(&w, &alice.id, &alice.recovery).await;
    assert_eq!(by_id.body["code"], "recovery_refused", "{}", by_id.text);
    let stranger = RecoverySecret::generate()
        .derive(&parapet_mpc::recovery::new_salt())
        .unwrap();
    let other_salt = post_keyless(
        &w,
        "/v1/recovery",
        None,
        json!({"salt": parapet_mpc::recovery::new_salt(), "auth_key": hex::encode(stranger.auth_key()), "device_name": "x"}),
    )
    .await;
    assert_eq!(
        other_salt.body["code"], "recovery_refused",
        "{}",
        other_salt.text
    );
    let opened = post_keyless(
        &w,
        "/v1/recovery",
        None,
        json!({"salt": salt, "auth_key": hex::encode(alice.recovery.auth_key()), "device_name": "new laptop"}),
    )
    .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    assert_eq!(opened.body["user_id"], alice.id);
    // Lookups are limited per IP, found or not.
    let lookup = || {
        users_support::call_from(
            &w.s,
            "198.51.100.7",
            "POST",
            "/v1/recovery/identify",
            "",
            None,
            &[],
            Some(json!({"user": address})),
        )
    };
    for _ in 0..parapet_gateway::accounts::users::LOOKUPS_PER_IP {
        let found = lookup().await;
        assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    }
    let over = lookup().await;
    assert_eq!(over.body["code"], "rate_limited", "{}", over.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_is_recovered_after_the_delay_and_its_old_share_is_refused() {
    let w = world_with(&[("PARAPET_RECOVERY_DELAY_SECS", "300")]).await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);

    // The new device knows only a wallet address; the gateway names what the keys derive with
    // (for a secret set up before salts existed, the user id).
    let who = post_keyless(&w, "/v1/recovery/identify", None, json!({"user": address})).await;
    assert_eq!(who.body["salt"], alice.id, "{}", who.text);

    // A wrong secret is refused, audited, and says nothing about why.
    let wrong = RecoverySecret::generate().derive(&alice.id).unwrap();
    let refused = open_recovery(&w, &alice.id, &wrong).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.body["code"], "recovery_refused");
    let nobody = open_recovery(&w, &uuid::Uuid::new_v4().to_string(), &wrong).await;
    assert_eq!(nobody.body["code"], "recovery_refused");

    let opened = open_recovery(&w, &alice.id, &alice.recovery).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    let (id, token) = (
        opened.body["id"].as_str().unwrap().to_owned(),
        opened.body["recovery_token"].as_str().unwrap().to_owned(),
    );
    let again = open_recovery(&w, &alice.id, &alice.recovery).await;
    assert_eq!(again.body["code"], "recovery_in_progress", "{}", again.text);
    let bearer = format!("Recovery {token}");
    let early = post_keyless(
        &w,
        &format!("/v1/recovery/{id}/complete"),
        Some(&bearer),
        json!({}),
    )
    .await;
    assert_eq!(
        early.body["code"], "recovery_not_completable",
        "{}",
        early.text
    );
    let stranger = post_keyless(
        &w,
        &format!("/v1/recovery/{id}/complete"),
        Some("Recovery pr_00"),
        json!({}),
    )
    .await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);

    // After the delay: completed; the backup comes back and only the secret opens it.
    w.clock.advance(301);
    let done = post_keyless(
        &w,
        &format!("/v1/recovery/{id}/complete"),
        Some(&bearer),
        json!({}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    let new_token = done.body["device_token"].as_str().unwrap().to_owned();
    let backup = &done.body["backups"][0];
    assert_eq!(
        (backup["wallet"].as_str(), backup["epoch"].as_i64()),
        (Some(address.as_str()), Some(0))
    );
    let recovered = parapet_mpc::recovery::kit::open_share(
        &alice.recovery,
        parapet_mpc::recovery::envelope::Contents::DeviceShare,
        share.address(),
        0,
        backup["device_share"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(recovered.to_bytes().as_slice(), share.to_bytes().as_slice());
    assert!(
        parapet_mpc::recovery::kit::open_share(
            &wrong,
            parapet_mpc::recovery::envelope::Contents::DeviceShare,
            share.address(),
            0,
            backup["device_share"].as_str().unwrap(),
        )
        .is_err()
    );

    // Every old credential is gone: device token, session, passkeys.
    let old_device = call_with(
        &w.s,
        "GET",
        "/v1/device",
        "",
        None,
        &[("authorization", &format!("Device {}", alice.device_token))],
        None,
    )
    .await;
    assert_eq!(
        old_device.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        old_device.text
    );
    let old_session = call(
        &w.s,
        "GET",
        "/v1/wallets",
        &w.key,
        Some(&alice.session),
        None,
    )
    .await;
    assert_eq!(
        old_session.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        old_session.text
    );
    let uuid: uuid::Uuid = alice.id.parse().unwrap();
    assert!(
        w.s.passkeys
            .list(uuid)
            .await
            .unwrap()
            .iter()
            .all(|p| p.revoked_at.is_some())
    );

    // No signing before the forced refresh, and the old device cannot run it.
    let (session, _) = login_ok(&w.s, &w.key, &w.issuer, "alice").await;
    let mut fresh = User {
        session,
        id: alice.id.clone(),
        device_token: new_token.clone(),
        passkey: None,
        recovery: RecoverySecret::generate().derive("unused").unwrap(),
        salt: None,
    };
    let blocked = submit(
        &w,
        &fresh,
        &address,
        "after-recovery",
        json!({"chain_id": 1, "message": "x"}),
    )
    .await;
    assert_eq!(blocked.body["code"], "refresh_required", "{}", blocked.text);
    match client::refresh(
        &w.base,
        &alice.device_token,
        &share,
        alice.target(),
        |_, _, _| Ok(()),
    )
    .await
    {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "unauthorized")
        }
        other => panic!("the old device refreshed: {other:?}"),
    }
    let (new_share, epoch) = client::refresh(
        &w.base,
        &new_token,
        &recovered,
        alice.target(),
        |_, _, _| Ok(()),
    )
    .await
    .unwrap();
    assert_eq!(epoch, 1);
    fresh.recovery = alice.recovery;
    sign_message(&w, &fresh, &address, "recovered", &new_share)
        .await
        .unwrap();
    // The lost device's share (epoch 0) never signs again, whoever holds it.
    assert!(
        sign_message(&w, &fresh, &address, "old-share", &share)
            .await
            .is_err()
    );

    let log = events(&w.s).await;
    for action in [
        "recovery.refused",
        "recovery.open",
        "recovery.complete",
        "wallet.refresh",
    ] {
        assert!(
            log.iter().any(|e| e["action"] == action),
            "{action} not audited"
        );
    }
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(&hex::encode(fresh.recovery.auth_key())));
    assert!(!text.contains(&token) && !text.contains(&new_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_cancelled_with_a_passkey_never_completes() {
    let w = world_with(&[("PARAPET_RECOVERY_DELAY_SECS", "300")]).await;
    let mut alice = user(&w, "alice", true).await;
    new_wallet(&w, &alice).await;
    let opened = open_recovery(&w, &alice.id, &alice.recovery).await;
    let id = opened.body["id"].as_str().unwrap().to_owned();
    let bearer = format!(
        "Recovery {}",
        opened.body["recovery_token"].as_str().unwrap()
    );
    let path = format!("/v1/recovery/{id}/cancel");
    let asked = call(&w.s, "POST", &path, &w.key, Some(&alice.session), None).await;
    assert_eq!(asked.body["code"], "step_up_required", "{}", asked.text);
    let assertion = assert_step_up(&mut alice, &asked.body);
    let cancelled = call(
        &w.s,
        "POST",
        &path,
        &w.key,
        Some(&alice.session),
        Some(assertion.clone()),
    )
    .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.body["state"], "cancelled");
    // The assertion is single-use, and the cancelled recovery cannot complete.
    let replay = call(
        &w.s,
        "POST",
        &path,
        &w.key,
        Some(&alice.session),
        Some(assertion),
    )
    .await;
    assert!(replay.status.is_client_error());
    w.clock.advance(301);
    let late = post_keyless(
        &w,
        &format!("/v1/recovery/{id}/complete"),
        Some(&bearer),
        json!({}),
    )
    .await;
    assert_eq!(
        late.body["code"], "recovery_not_completable",
        "{}",
        late.text
    );
    assert!(
        events(&w.s)
            .await
            .iter()
            .any(|e| e["action"] == "recovery.cancel")
    );
}

/// `POST /v1/recovery` as sent from `peer`.
async fn open_recovery_from(
    w: &World,
    peer: &str,
    user: &str,
    keys: &RecoveryKeys,
) -> users_support::Answer {
    users_support::call_from(
        &w.s,
        peer,
        "POST",
        "/v1/recovery",
        "",
        None,
        &[],
        Some(json!({"user_id": user, "auth_key": hex::encode(keys.auth_key()), "device_name": "new laptop"})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_guessing_a_recovery_secret_are_limited_and_never_lock_the_owner_out() {
    use parapet_gateway::accounts::users::IP_FAILURES;
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let guess = RecoverySecret::generate().derive(&alice.id).unwrap();
    let mut codes = Vec::new();
    for _ in 0..IP_FAILURES + 2 {
        codes.push(
            open_recovery_from(&w, "203.0.113.9", &alice.id, &guess)
                .await
                .body["code"]
                .clone(),
        );
    }
    let limit = usize::try_from(IP_FAILURES).unwrap();
    assert!(
        codes[..limit].iter().all(|c| c == "recovery_refused"),
        "{codes:?}"
    );
    assert_eq!(codes[limit + 1], "rate_limited", "{codes:?}");
    // The owner, from their own address, opens their recovery at once: a stranger's failures
    // never count against the person.
    let right = open_recovery(&w, &alice.id, &alice.recovery).await;
    assert_eq!(right.status, StatusCode::CREATED, "{}", right.text);
    let refused = events(&w.s)
        .await
        .iter()
        .filter(|e| e["action"] == "recovery.refused")
        .count();
    assert_eq!(refused, limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_recovery_attempts_is_limited_before_any_hashing() {
    use parapet_gateway::accounts::users::IP_FAILURES;
    let w = world().await;
    let alice = user(&w, "alice", true).await;
    let guess = RecoverySecret::generate().derive(&alice.id).unwrap();
    let w = std::sync::Arc::new(w);
    let burst: Vec<_> = (0..80)
        .map(|_| {
            let (w, id, guess) = (w.clone(), alice.id.clone(), guess.auth_key().to_owned());
            tokio::spawn(async move {
                users_support::call_from(
                    &w.s,
                    "203.0.113.10",
                    "POST",
                    "/v1/recovery",
                    "",
                    None,
                    &[],
                    Some(
                        json!({"user_id": id, "auth_key": hex::encode(guess), "device_name": "x"}),
                    ),
                )
                .await
            })
        })
        .collect();
    let mut refused = 0;
    for answer in burst {
        let answer = answer.await.unwrap();
        match answer.body["code"].as_str() {
            // The secret was hashed and was wrong.
            Some("recovery_refused") => refused += 1,
            // Refused before any hashing: the IP's attempts, or every hashing slot, taken.
            Some("rate_limited" | "busy") => {}
            other => panic!("{other:?}: {}", answer.text),
        }
    }
    // Concurrent attempts cannot all pass the limit before the first one is counted.
    assert!(
        refused <= usize::try_from(IP_FAILURES).unwrap(),
        "{refused} attempts were hashed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_totp_is_enrolled_a_recovery_needs_a_fresh_code_used_once() {
    let w = world_with(&[("PARAPET_RECOVERY_DELAY_SECS", "300")]).await;
    let mut alice = user(&w, "alice", true).await;
    // Enrolment takes a passkey step-up: a stolen session alone cannot add a factor.
    let asked = call(&w.s, "POST", "/v1/totp", &w.key, Some(&alice.session), None).await;
    assert_eq!(asked.body["code"], "step_up_required", "{}", asked.text);
    let assertion = assert_step_up(&mut alice, &asked.body);
    let started = call(
        &w.s,
        "POST",
        "/v1/totp",
        &w.key,
        Some(&alice.session),
        Some(assertion),
    )
    .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text);
    assert!(started.body["qr_svg"].as_str().unwrap().starts_with("<svg"));
    let uri = started.body["otpauth_uri"].as_str().unwrap().to_owned();
    let authenticator = totp_rs::Totp::from_url(&uri).unwrap();
    let now = || u64::try_from(w.s.clock.now().unix_timestamp()).unwrap();
    let code = authenticator.generate(now()).to_string();
    let off_by_one: String = code
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == '9' {
                    '0'
                } else {
                    char::from(c as u8 + 1)
                }
            } else {
                c
            }
        })
        .collect();
    let confirm = |c: &str| {
        call(
            &w.s,
            "POST",
            "/v1/totp/confirm",
            &w.key,
            Some(&alice.session),
            Some(json!({"code": c})),
        )
    };
    assert_eq!(confirm(&off_by_one).await.status, StatusCode::BAD_REQUEST);
    let ok = confirm(&code).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    let open = |totp: Option<String>, keys: &RecoveryKeys| {
        let mut body = json!({
            "user_id": alice.id, "auth_key": hex::encode(keys.auth_key()), "device_name": "new",
        });
        if let Some(t) = totp {
            body["totp"] = json!(t);
        }
        post_keyless(&w, "/v1/recovery", None, body)
    };
    // The right secret alone, or with the code already used to enrol: refused alike.
    assert_eq!(
        open(None, &alice.recovery).await.body["code"],
        "recovery_refused"
    );
    assert_eq!(
        open(Some(code.clone()), &alice.recovery).await.body["code"],
        "recovery_refused"
    );
    // Next step: a wrong secret with a fresh code is refused and does not use the code up.
    w.clock.advance(30);
    let fresh = authenticator.generate(now()).to_string();
    let wrong = RecoverySecret::generate().derive(&alice.id).unwrap();
    assert_eq!(
        open(Some(fresh.clone()), &wrong).await.body["code"],
        "recovery_refused"
    );
    let opened = open(Some(fresh.clone()), &alice.recovery).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);

    let log = serde_json::to_string(&events(&w.s).await).unwrap();
    assert!(log.contains("totp.enrol"));
    let seed = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!log.contains(seed));
}

#[tokio::test]
async fn a_completed_recovery_whose_answer_was_lost_is_answered_again_until_its_device_uses_it() {
    let w = world_with(&[("PARAPET_RECOVERY_DELAY_SECS", "300")]).await;
    let alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let address = address_of(&share);
    let opened = open_recovery(&w, &alice.id, &alice.recovery).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    let id = opened.body["id"].as_str().unwrap().to_owned();
    let bearer = format!(
        "Recovery {}",
        opened.body["recovery_token"].as_str().unwrap()
    );
    w.clock.advance(301);
    macro_rules! complete {
        () => {
            post_keyless(
                &w,
                &format!("/v1/recovery/{id}/complete"),
                Some(&bearer),
                json!({}),
            )
            .await
        };
    }

    // The first answer is lost on the way: the completion is committed all the same.
    let lost = complete!();
    assert_eq!(lost.status, StatusCode::OK, "{}", lost.text);
    let lost_token = lost.body["device_token"].as_str().unwrap().to_owned();

    // The same call answers again: the same device, the backups, a fresh token.
    let again = complete!();
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["device_id"], lost.body["device_id"]);
    assert_eq!(again.body["backups"], lost.body["backups"]);
    assert_eq!(again.body["backups"][0]["wallet"], address.as_str());
    assert!(again.body["passkey_link"]["url"].as_str().is_some());
    let token = again.body["device_token"].as_str().unwrap().to_owned();
    assert_ne!(token, lost_token);
    let recovered = parapet_mpc::recovery::kit::open_share(
        &alice.recovery,
        parapet_mpc::recovery::envelope::Contents::DeviceShare,
        share.address(),
        0,
        again.body["backups"][0]["device_share"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(recovered.to_bytes().as_slice(), share.to_bytes().as_slice());

    // The token in the lost answer no longer works; the new one does.
    macro_rules! device {
        ($t:expr) => {
            call_with(
                &w.s,
                "GET",
                "/v1/device",
                "",
                None,
                &[("authorization", &format!("Device {}", $t))],
                None,
            )
            .await
        };
    }
    assert_eq!(device!(lost_token).status, StatusCode::UNAUTHORIZED);
    let used = device!(token);
    assert_eq!(used.status, StatusCode::OK, "{}", used.text);

    // Once the device has used its token it has its answer: no more copies.
    let late = complete!();
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.text);
    assert_eq!(late.body["code"], "recovery_not_completable");
    assert_eq!(device!(token).status, StatusCode::OK);
}
