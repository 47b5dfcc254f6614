//! Backup devices end to end, with real DKLs23 ceremonies over WebSockets on 127.0.0.1: a new
//! device asks with its own key, the user approves with a passkey, the existing device checks
//! the short code and seals its share and kit to the new one; the new device signs. A gateway
//! that swaps in its own key is caught by the code comparison. After a refresh the other device
//! is stale until re-synced; removing a device forces a refresh.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::{cosign_support, users_support};
use cosign_support::*;
use http::StatusCode;
use parapet_device::client;
use parapet_device::transfer::{
    BUNDLE_FORMAT, DeviceKey, TransferBundle, TransferredWallet, code_matches, parse_public_key,
    short_code,
};
use parapet_gateway::accounts::apps::Auditor;
use parapet_gateway::accounts::devices;
use parapet_mpc::KeyShare;
use parapet_mpc::recovery::kit::BackupKit;
use serde_json::{Value, json};
use users_support::{audit_text, call, call_with};

/// A second device of `u`, paired through the page's code.
async fn pair_second(w: &World, u: &User, name: &str) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let uuid: uuid::Uuid = u.id.parse().unwrap();
    let (code, _) = devices::issue_pairing_code(w.s.audit.store(), uuid, now)
        .await
        .unwrap();
    let (device, token) = devices::pair(
        w.s.audit.store(),
        Auditor::Log(&w.s.audit),
        &code,
        name,
        "req-pair",
        now,
    )
    .await
    .unwrap();
    (device.device_id, token)
}

async fn as_device(
    w: &World,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> users_support::Answer {
    let auth = format!("Device {token}");
    call_with(
        &w.s,
        method,
        path,
        "",
        None,
        &[("authorization", &auth)],
        body,
    )
    .await
}

/// The user approves transfer `id` with their passkey.
async fn approve(w: &World, u: &mut User, id: &str) {
    let path = format!("/v1/device-transfers/{id}/approve");
    let asked = call(&w.s, "POST", &path, &w.key, Some(&u.session), None).await;
    assert_eq!(asked.body["code"], "step_up_required", "{}", asked.text);
    let assertion = assert_step_up(u, &asked.body);
    let ok = call(
        &w.s,
        "POST",
        &path,
        &w.key,
        Some(&u.session),
        Some(assertion),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["state"], "approved");
}

/// What the sending device seals: its share and kit of `address`.
fn bundle(
    u: &User,
    from: &str,
    to: &str,
    transfer: &str,
    share: &KeyShare,
    epoch: i64,
    kit: Option<BackupKit>,
) -> TransferBundle {
    TransferBundle {
        format: BUNDLE_FORMAT.to_owned(),
        user: u.id.clone(),
        from_device: from.to_owned(),
        to_device: to.to_owned(),
        transfer: transfer.to_owned(),
        recovery_public_key: u.recovery.public_key().to_hex(),
        recovery_salt: None,
        wallets: vec![TransferredWallet {
            address: address_of(share),
            epoch,
            share: hex::encode(share.to_bytes().as_slice()),
            kit,
        }],
    }
}

/// The device list the app sees, by device id.
async fn device_list(w: &World, u: &User) -> Value {
    let a = call(&w.s, "GET", "/v1/devices", &w.key, Some(&u.session), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body
}

fn stale(list: &Value, device: &str) -> bool {
    list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == device)
        .unwrap()["stale"]
        .as_bool()
        .unwrap()
}

/// The new device fetches and opens its bundle, checks it, and confirms.
async fn receive(
    w: &World,
    u: &User,
    token: &str,
    device: &str,
    key: &DeviceKey,
) -> TransferBundle {
    let listed = as_device(w, token, "GET", "/v1/device/transfers", None).await;
    let id = listed.body["incoming"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing incoming: {}", listed.text))
        .to_owned();
    let got = as_device(w, token, "GET", &format!("/v1/device/transfers/{id}"), None).await;
    assert_eq!(got.body["state"], "sealed", "{}", got.text);
    let sealed = hex::decode(got.body["sealed"].as_str().unwrap()).unwrap();
    let opened = TransferBundle::open(key, &u.id, device, &id, &sealed).unwrap();
    // Bound to its transfer and device: relayed elsewhere it does not open.
    assert!(TransferBundle::open(key, &u.id, device, "dtr_other", &sealed).is_err());
    assert!(TransferBundle::open(&DeviceKey::generate(), &u.id, device, &id, &sealed).is_err());
    let done = as_device(
        w,
        token,
        "POST",
        &format!("/v1/device/transfers/{id}/received"),
        None,
    )
    .await;
    assert_eq!(done.body["state"], "received", "{}", done.text);
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_device_gets_the_share_through_the_gateway_and_signs() {
    let w = world().await;
    let mut alice = user(&w, "alice", true).await;
    let kits = std::sync::Mutex::new(Vec::<BackupKit>::new());
    let share = client::keygen(&w.base, &alice.device_token, alice.target(), |_, kit| {
        kits.lock().unwrap().push(kit.clone());
        Ok(())
    })
    .await
    .unwrap();
    let kit = kits.lock().unwrap().pop().unwrap();
    let address = address_of(&share);
    let laptop = as_device(&w, &alice.device_token, "GET", "/v1/device", None)
        .await
        .body["device_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The new phone asks with its own key and shows the code for it.
    let (phone, phone_token) = pair_second(&w, &alice, "phone").await;
    let phone_key = DeviceKey::generate();
    let phone_screen = short_code(phone_key.public_key());
    let asked = as_device(
        &w,
        &phone_token,
        "POST",
        "/v1/device/transfers",
        Some(json!({"public_key": phone_key.public_hex()})),
    )
    .await;
    assert_eq!(asked.status, StatusCode::CREATED, "{}", asked.text);
    let id = asked.body["id"].as_str().unwrap().to_owned();
    // The app and the page list it for approval, with the code.
    let listed = device_list(&w, &alice).await;
    assert_eq!(listed["transfers"][0]["short_code"], phone_screen.as_str());

    // Nothing to seal until the user approves; sealing early is refused.
    let early = as_device(&w, &alice.device_token, "GET", "/v1/device/transfers", None).await;
    assert_eq!(early.body["to_seal"], json!([]), "{}", early.text);
    let sealed = bundle(&alice, &laptop, &phone, &id, &share, 0, Some(kit.clone()))
        .seal(phone_key.public_key())
        .unwrap();
    let carried = json!([{"address": address, "epoch": 0}]);
    let refused = as_device(
        &w,
        &alice.device_token,
        "POST",
        &format!("/v1/device/transfers/{id}/seal"),
        Some(json!({"sealed": hex::encode(&sealed), "wallets": carried})),
    )
    .await;
    assert_eq!(
        refused.body["code"], "transfer_not_ready",
        "{}",
        refused.text
    );
    approve(&w, &mut alice, &id).await;

    // The laptop derives the code from the key the gateway relayed; the user confirms it is
    // the phone's, and only then is anything sealed.
    let to_seal = as_device(&w, &alice.device_token, "GET", "/v1/device/transfers", None).await;
    let relayed =
        parse_public_key(to_seal.body["to_seal"][0]["public_key"].as_str().unwrap()).unwrap();
    assert!(code_matches(&phone_screen, &relayed));
    // The phone cannot seal to itself, and a stranger's device cannot seal at all.
    let own = as_device(
        &w,
        &phone_token,
        "POST",
        &format!("/v1/device/transfers/{id}/seal"),
        Some(json!({"sealed": hex::encode(&sealed), "wallets": carried})),
    )
    .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.text);
    let bob = user(&w, "bob", false).await;
    let stranger = as_device(
        &w,
        &bob.device_token,
        "POST",
        &format!("/v1/device/transfers/{id}/seal"),
        Some(json!({"sealed": hex::encode(&sealed), "wallets": carried})),
    )
    .await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND, "{}", stranger.text);
    let ok = as_device(
        &w,
        &alice.device_token,
        "POST",
        &format!("/v1/device/transfers/{id}/seal"),
        Some(json!({"sealed": hex::encode(&sealed), "wallets": carried})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    // Only the recipient reads the bundle.
    let peek = as_device(
        &w,
        &alice.device_token,
        "GET",
        &format!("/v1/device/transfers/{id}"),
        None,
    )
    .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND, "{}", peek.text);

    let opened = receive(&w, &alice, &phone_token, &phone, &phone_key).await;
    assert_eq!(
        opened.recovery_public_key,
        alice.recovery.public_key().to_hex()
    );
    let phone_share = opened.wallets[0].key_share().unwrap();
    assert_eq!(
        phone_share.to_bytes().as_slice(),
        share.to_bytes().as_slice()
    );
    assert_eq!(opened.wallets[0].kit.as_ref(), Some(&kit));

    // Both devices sign now.
    sign_message_as(
        &w,
        &alice,
        &phone_token,
        &address,
        "from-phone",
        &phone_share,
    )
    .await
    .unwrap();
    sign_message(&w, &alice, &address, "from-laptop", &share)
        .await
        .unwrap();
    let list = device_list(&w, &alice).await;
    assert!(!stale(&list, &phone) && !stale(&list, &laptop), "{list}");

    // The laptop refreshes: the phone is stale and cannot sign until it is re-synced.
    approve_refresh(&w, &mut alice, &address).await;
    let (fresh, epoch) = client::refresh(
        &w.base,
        &alice.device_token,
        &share,
        alice.target(),
        |_, _, _| Ok(()),
    )
    .await
    .unwrap();
    assert_eq!(epoch, 1);
    assert!(stale(&device_list(&w, &alice).await, &phone));
    match sign_message_as(
        &w,
        &alice,
        &phone_token,
        &address,
        "stale-phone",
        &phone_share,
    )
    .await
    {
        Err(parapet_device::Error::Mpc(parapet_mpc::Error::Refused { code, .. })) => {
            assert_eq!(code, "device_not_allowed")
        }
        other => panic!("a stale device signed: {other:?}"),
    }
    // The laptop re-syncs the phone, sealing to the key it confirmed before (not one the
    // gateway names now), bound to a transfer id it picks.
    let rid = parapet_device::transfer::new_transfer_id();
    let resync = as_device(&w, &alice.device_token, "POST", "/v1/device/resync", Some(json!({
        "id": rid,
        "to_device": phone,
        "sealed": hex::encode(bundle(&alice, &laptop, &phone, &rid, &fresh, 1, None).seal(phone_key.public_key()).unwrap()),
        "wallets": [{"address": address, "epoch": 1}],
    }))).await;
    assert_eq!(resync.status, StatusCode::CREATED, "{}", resync.text);
    let again = receive(&w, &alice, &phone_token, &phone, &phone_key).await;
    let phone_fresh = again.wallets[0].key_share().unwrap();
    assert!(!stale(&device_list(&w, &alice).await, &phone));
    sign_message_as(
        &w,
        &alice,
        &phone_token,
        &address,
        "resynced-phone",
        &phone_fresh,
    )
    .await
    .unwrap();
    // The old epoch's share never signs again, on any device.
    match sign_message_as(
        &w,
        &alice,
        &phone_token,
        &address,
        "old-share",
        &phone_share,
    )
    .await
    {
        Err(_) => {}
        Ok(()) => panic!("the old epoch's share signed"),
    }

    // The phone is lost: removing it (with the owner's passkey) forces a refresh of its wallets
    // before anyone signs.
    let revoke_path = format!("/v1/devices/{phone}/revoke");
    let asked = call(
        &w.s,
        "POST",
        &revoke_path,
        &w.key,
        Some(&alice.session),
        None,
    )
    .await;
    assert_eq!(asked.status, StatusCode::FORBIDDEN, "{}", asked.text);
    assert_eq!(asked.body["code"], "step_up_required", "{}", asked.text);
    let assertion = assert_step_up(&mut alice, &asked.body);
    let removed = call(
        &w.s,
        "POST",
        &revoke_path,
        &w.key,
        Some(&alice.session),
        Some(assertion),
    )
    .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    let blocked = submit(
        &w,
        &alice,
        &address,
        "after-removal",
        json!({"chain_id": 1, "message": "x"}),
    )
    .await;
    assert_eq!(blocked.body["code"], "refresh_required", "{}", blocked.text);
    let gone = as_device(&w, &phone_token, "GET", "/v1/device/transfers", None).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    approve_refresh(&w, &mut alice, &address).await;
    let (after, _) = client::refresh(
        &w.base,
        &alice.device_token,
        &fresh,
        alice.target(),
        |_, _, _| Ok(()),
    )
    .await
    .unwrap();
    sign_message(&w, &alice, &address, "after-refresh", &after)
        .await
        .unwrap();

    // Every step is in the audit log; no share, bundle or key is.
    let log = audit_text(&w.s).await;
    for action in [
        "device.add_approve",
        "device.add",
        "device.resync",
        "device.revoke",
    ] {
        assert!(
            log.contains(&format!("\"{action}\"")),
            "{action} not audited"
        );
    }
    assert!(!log.contains(&hex::encode(share.to_bytes().as_slice())));
    assert!(!log.contains(&phone_key.private_hex().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_swaps_in_its_own_key_is_caught_by_the_short_code() {
    let w = world().await;
    let mut alice = user(&w, "alice", true).await;
    let share = new_wallet(&w, &alice).await;
    let (phone, phone_token) = pair_second(&w, &alice, "phone").await;
    let phone_key = DeviceKey::generate();
    let phone_screen = short_code(phone_key.public_key());
    let asked = as_device(
        &w,
        &phone_token,
        "POST",
        "/v1/device/transfers",
        Some(json!({"public_key": phone_key.public_hex()})),
    )
    .await;
    let id = asked.body["id"].as_str().unwrap().to_owned();
    approve(&w, &mut alice, &id).await;

    // A malicious gateway (here: its database) relays its own key instead of the phone's.
    let gateway_key = DeviceKey::generate();
    if let parapet_gateway::audit::Store::Sqlite(pool) = w.s.audit.store() {
        sqlx::query("UPDATE device_transfers SET public_key = $2 WHERE id = $1")
            .bind(&id)
            .bind(gateway_key.public_hex())
            .execute(pool)
            .await
            .unwrap();
    }
    let to_seal = as_device(&w, &alice.device_token, "GET", "/v1/device/transfers", None).await;
    let relayed =
        parse_public_key(to_seal.body["to_seal"][0]["public_key"].as_str().unwrap()).unwrap();
    // The laptop shows a code that is not the phone's: the user sees the mismatch and the
    // laptop seals nothing.
    assert_ne!(short_code(&relayed), phone_screen);
    assert!(!code_matches(&phone_screen, &relayed));
    // Had it sealed anyway, the phone could not open what was meant for the gateway's key,
    // and the gateway could: that is what the comparison prevents.
    let laptop = as_device(&w, &alice.device_token, "GET", "/v1/device", None)
        .await
        .body["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sealed = bundle(&alice, &laptop, &phone, &id, &share, 0, None)
        .seal(&relayed)
        .unwrap();
    assert!(TransferBundle::open(&phone_key, &alice.id, &phone, &id, &sealed).is_err());
    // A mistyped code does not match either.
    assert!(!code_matches("0000-0000-0000", phone_key.public_key()));
    let _ = phone_token;
}
