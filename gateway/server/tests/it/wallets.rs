//! Wallet records: created with their sealed share, read by their owner only (or an admin), used
//! by `/v1/authorize` instead of the request's labels, and changed by admins (audited) — a frozen
//! wallet is denied by the shipped forbid.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use crate::users_support;
use http::StatusCode;
use parapet_gateway::accounts::apps::{self, Auditor, NewApp};
use parapet_gateway::accounts::wallets::{self, StoredWallet};
use serde_json::json;
use users_support::{
    Issuer, app_with_grants_trusting, authorize_body, call, gateway, login_ok, op,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_record_is_its_owners_and_decides_with_the_admins_labels() {
    let data = tempfile::tempdir().unwrap();
    let issuer = Issuer::start().await;
    let (s, _clock) = gateway(data.path()).await;
    let (_app, key) = app_with_grants_trusting(&s, &issuer, &["sign"]).await;
    let (alice, alice_id) = login_ok(&s, &key, &issuer, "alice").await;
    let (bob, _) = login_ok(&s, &key, &issuer, "bob").await;

    let body = authorize_body();
    let address = body["wallet"]["address"].as_str().unwrap().to_owned();
    let wallet = StoredWallet {
        address: address.to_uppercase().replace("0X", "0x"),
        owner: alice_id.parse().unwrap(),
        device_id: "dev_test".to_owned(),
        public_key: "02".to_owned() + &"11".repeat(32),
        epoch: 0,
        labels: vec!["team:payments".to_owned()],
        groups: Vec::new(),
        frozen: false,
        refresh_required: false,
        created_at: "2026-11-25T12:00:00.000000Z".to_owned(),
    };
    let mut stored = wallet.clone();
    stored.address = wallets::normalize_address(&wallet.address).unwrap();
    wallets::create(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &stored,
        b"sealed share bytes",
        b"the device's sealed backup",
        "req-1",
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    // Created beside the routes, as another process would: decisions see it once the
    // directory has read the feed (within its follow interval; here, now).
    s.wallet_directory.catch_up(s.audit.store()).await.unwrap();
    assert!(
        wallets::create(
            s.audit.store(),
            Auditor::Log(&s.audit),
            &stored,
            b"x",
            b"y",
            "req-2",
            time::OffsetDateTime::now_utc()
        )
        .await
        .is_err(),
        "an address is created once"
    );
    assert_eq!(
        wallets::sealed_share(s.audit.store(), &address, 0)
            .await
            .unwrap(),
        b"sealed share bytes"
    );

    // The owner sees it; another user gets the same 404 as for no wallet.
    let mine = call(
        &s,
        "GET",
        &format!("/v1/wallets/{address}"),
        &key,
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
    assert_eq!(mine.body["owner"], alice_id.as_str());
    assert_eq!(mine.body["epoch"], 0);
    let theirs = call(
        &s,
        "GET",
        &format!("/v1/wallets/{address}"),
        &key,
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
    let list = call(&s, "GET", "/v1/wallets", &key, Some(&alice), None).await;
    assert_eq!(list.body["wallets"].as_array().unwrap().len(), 1);
    let none = call(&s, "GET", "/v1/wallets", &key, Some(&bob), None).await;
    assert_eq!(none.body["wallets"].as_array().unwrap().len(), 0);

    // Decisions use the record: the request's labels are ignored.
    let mut with_labels = body.clone();
    with_labels["wallet"]["labels"] = json!(["treasury"]);
    let d = call(
        &s,
        "POST",
        "/v1/authorize",
        &key,
        Some(&alice),
        Some(with_labels),
    )
    .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    assert_eq!(d.body["labels_source"], "record", "{}", d.text);

    // An admin freezes it; the shipped forbid then denies it.
    let (_, admin) = apps::create_app(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &op(),
        &NewApp {
            name: "ops".to_owned(),
            grants: vec!["admin".to_owned(), "sign".to_owned()],
            ..NewApp::default()
        },
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    let frozen = call(
        &s,
        "POST",
        &format!("/v1/admin/wallets/{address}/update"),
        &admin,
        None,
        Some(json!({"frozen": true, "groups": ["hot"]})),
    )
    .await;
    assert_eq!(frozen.status, StatusCode::OK, "{}", frozen.text);
    assert_eq!(frozen.body["frozen"], true);
    let d = call(&s, "POST", "/v1/authorize", &key, Some(&alice), Some(body)).await;
    assert_eq!(d.body["decision"], "deny", "{}", d.text);
    let text = users_support::audit_text(&s).await;
    assert!(text.contains("wallet.create") && text.contains("wallet.update"));
    assert!(!text.contains("sealed share bytes"));
}
