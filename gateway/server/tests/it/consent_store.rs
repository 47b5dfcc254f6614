//! The consent store (docs/architecture.md §3) on SQLite and, when configured, PostgreSQL:
//! approvals bound to the app's consent hash, asked again when it changes, revocable, and audited
//! before each change.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;
use parapet_gateway::accounts::apps::Auditor;
use parapet_gateway::accounts::consent::{self, ConsentCtx, ConsentState};
use parapet_gateway::audit::{Store, StoreOptions};
use parapet_gateway::policy::{LoadedPolicies, testing};
use parapet_gateway::records::AppRecord;
use support::databases;
use time::macros::datetime;
use uuid::Uuid;

fn cx<'a>(store: &'a Store, request_id: &'a str) -> ConsentCtx<'a> {
    ConsentCtx {
        store,
        auditor: Auditor::Store(store),
        request_id,
        now: datetime!(2026-11-25 12:00:00 UTC),
    }
}

async fn events(store: &Store) -> Vec<serde_json::Value> {
    store
        .range(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_str(&e.canonical).unwrap())
        .collect()
}

fn app(id: &str) -> AppRecord {
    let mut a = AppRecord::development_default();
    a.id = id.to_owned();
    a
}

#[tokio::test]
async fn approve_revoke_and_reconsent() {
    for db in databases("consent.db").await {
        let store = Store::open(&db.url, &StoreOptions::default())
            .await
            .unwrap();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let scopes = vec![
            "nft_operators".to_owned(),
            "basic".to_owned(),
            "basic".to_owned(),
        ];

        assert_eq!(
            consent::current(&store, alice, "app_a", "h1")
                .await
                .unwrap(),
            None
        );
        let c = consent::approve(&cx(&store, "r1"), alice, "app_a", &scopes, "h1")
            .await
            .unwrap();
        assert_eq!(c.scopes, ["basic", "nft_operators"]);
        assert_eq!(c.granted_at, "2026-11-25T12:00:00.000000Z");

        // Bound to the hash it was given under, per user and per app.
        let now = consent::current(&store, alice, "app_a", "h1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now, ConsentState::Current(c.clone()));
        let later = consent::current(&store, alice, "app_a", "h2")
            .await
            .unwrap()
            .unwrap();
        assert!(later.needs_reconsent());
        assert_eq!(later.consent(), &c);
        assert_eq!(
            consent::current(&store, bob, "app_a", "h1").await.unwrap(),
            None
        );
        assert_eq!(
            consent::current(&store, alice, "app_b", "h1")
                .await
                .unwrap(),
            None
        );

        // Approving again replaces it.
        let c2 = consent::approve(
            &cx(&store, "r2"),
            alice,
            "app_a",
            &["basic".to_owned()],
            "h2",
        )
        .await
        .unwrap();
        assert_eq!(
            consent::current(&store, alice, "app_a", "h2")
                .await
                .unwrap(),
            Some(ConsentState::Current(c2))
        );

        // Revoked: gone; revoking again changes and records nothing.
        assert!(
            consent::revoke(&cx(&store, "r3"), alice, "app_a")
                .await
                .unwrap()
        );
        assert_eq!(
            consent::current(&store, alice, "app_a", "h2")
                .await
                .unwrap(),
            None
        );
        assert!(
            !consent::revoke(&cx(&store, "r4"), alice, "app_a")
                .await
                .unwrap()
        );
        assert!(
            !consent::revoke(&cx(&store, "r5"), bob, "app_a")
                .await
                .unwrap()
        );
        // And it can be given again after a revocation.
        consent::approve(
            &cx(&store, "r6"),
            alice,
            "app_a",
            &["basic".to_owned()],
            "h2",
        )
        .await
        .unwrap();
        assert!(
            consent::current(&store, alice, "app_a", "h2")
                .await
                .unwrap()
                .is_some()
        );

        // Every change was audited, in order, with who, which app and what.
        let ev = events(&store).await;
        let consent_events: Vec<&serde_json::Value> =
            ev.iter().filter(|e| e["kind"] == "consent").collect();
        let seen: Vec<(&str, &str)> = consent_events
            .iter()
            .map(|e| {
                (
                    e["request_id"].as_str().unwrap(),
                    e["action"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("r1", "approve"),
                ("r2", "approve"),
                ("r3", "revoke"),
                ("r6", "approve")
            ]
        );
        let first = consent_events[0];
        assert_eq!(first["user"], alice.to_string());
        assert_eq!(first["app"], "app_a");
        assert_eq!(
            first["request"]["scopes"],
            serde_json::json!(["basic", "nft_operators"])
        );
        assert_eq!(first["request"]["consent_hash"], "h1");
        assert_eq!(first["request"]["previous"], serde_json::Value::Null);
        assert_eq!(
            consent_events[1]["request"]["previous"]["consent_hash"],
            "h1"
        );
        assert_eq!(
            consent_events[2]["request"]["previous"]["scopes"],
            serde_json::json!(["basic"])
        );
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test]
async fn approvals_are_checked_against_the_policy_set_and_shown_for_consent() {
    let set = LoadedPolicies::load(&testing::shipped_paths()).unwrap();
    for db in databases("consent.db").await {
        let store = Store::open(&db.url, &StoreOptions::default())
            .await
            .unwrap();
        let user = Uuid::new_v4();
        let a = app("app_a");
        let hash = set.consent_hash(&a).unwrap();

        // Without a user: basic only, nobody to ask.
        let v = consent::scopes_for(&store, &set, &a, None).await.unwrap();
        assert!(!v.needs_consent);
        assert_eq!(v.consent_hash, hash);
        let shown: Vec<(&str, bool, bool)> = v
            .scopes
            .iter()
            .map(|s| (s.id.as_str(), s.required, s.approved))
            .collect();
        assert_eq!(
            shown,
            [("basic", true, true), ("nft_operators", false, false)]
        );
        assert!(
            v.scopes
                .iter()
                .all(|s| !s.name.is_empty() && !s.description.is_empty())
        );
        assert_eq!(
            consent::approved_scopes(&store, &set, &a, None)
                .await
                .unwrap(),
            ["basic"]
        );

        // A user who has not consented is asked; only basic applies meanwhile.
        let v = consent::scopes_for(&store, &set, &a, Some(user))
            .await
            .unwrap();
        assert!(v.needs_consent);
        assert_eq!(
            consent::approved_scopes(&store, &set, &a, Some(user))
                .await
                .unwrap(),
            ["basic"]
        );

        // A stale hash or a scope the app is not offered is refused, and nothing is stored.
        let c = cx(&store, "r1");
        let stale =
            consent::approve_offered(&c, &set, &a, user, &[], "0".repeat(64).as_str()).await;
        assert!(stale.is_err());
        let unknown =
            consent::approve_offered(&c, &set, &a, user, &["defi".to_owned()], &hash).await;
        assert!(unknown.is_err());
        assert!(events(&store).await.iter().all(|e| e["kind"] != "consent"));

        // Approving only the optional scope brings the required one along.
        let got =
            consent::approve_offered(&c, &set, &a, user, &["nft_operators".to_owned()], &hash)
                .await
                .unwrap();
        assert_eq!(got.scopes, ["basic", "nft_operators"]);
        let v = consent::scopes_for(&store, &set, &a, Some(user))
            .await
            .unwrap();
        assert!(!v.needs_consent);
        assert!(v.scopes.iter().all(|s| s.approved));
        assert_eq!(
            consent::approved_scopes(&store, &set, &a, Some(user))
                .await
                .unwrap(),
            ["basic", "nft_operators"]
        );
        // Consent is per app.
        assert!(
            consent::scopes_for(&store, &set, &app("app_b"), Some(user))
                .await
                .unwrap()
                .needs_consent
        );

        // Approving only what is required leaves the optional scope out.
        let got = consent::approve_offered(&c, &set, &a, user, &[], &hash)
            .await
            .unwrap();
        assert_eq!(got.scopes, ["basic"]);
        assert_eq!(
            consent::approved_scopes(&store, &set, &a, Some(user))
                .await
                .unwrap(),
            ["basic"]
        );

        // Revoked: asked again.
        assert!(consent::revoke(&c, user, "app_a").await.unwrap());
        assert!(
            consent::scopes_for(&store, &set, &a, Some(user))
                .await
                .unwrap()
                .needs_consent
        );
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test]
async fn a_changed_permit_asks_again_and_its_consent_stops_counting() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testing::copy_with_app_policies(&testing::shipped_paths(), dir.path(), 0).unwrap();
    let before = LoadedPolicies::load(&paths).unwrap();
    let permits = paths.policies.join("10-permits.cedar");
    let text = std::fs::read_to_string(&permits).unwrap();
    std::fs::write(
        &permits,
        text.replace(
            "@reason(\"granting an NFT operator approval, with the user's consent\")",
            "@reason(\"granting an NFT operator approval, with the user's consent\")\n// edited",
        )
        .replace(
            "action == Parapet::Action::\"nft_approve_all\",\n  resource\n);",
            "action == Parapet::Action::\"nft_approve_all\",\n  resource\n)\nwhen { context.chain_id == 1 };",
        ),
    )
    .unwrap();
    let after = LoadedPolicies::load(&paths).unwrap();
    let a = app("app_a");
    assert_ne!(
        before.consent_hash(&a).unwrap(),
        after.consent_hash(&a).unwrap()
    );

    for db in databases("consent.db").await {
        let store = Store::open(&db.url, &StoreOptions::default())
            .await
            .unwrap();
        let user = Uuid::new_v4();
        let c = cx(&store, "r1");
        let hash = before.consent_hash(&a).unwrap();
        consent::approve_offered(&c, &before, &a, user, &["nft_operators".to_owned()], &hash)
            .await
            .unwrap();
        assert_eq!(
            consent::approved_scopes(&store, &before, &a, Some(user))
                .await
                .unwrap(),
            ["basic", "nft_operators"]
        );
        let v = consent::scopes_for(&store, &after, &a, Some(user))
            .await
            .unwrap();
        assert!(v.needs_consent);
        assert_eq!(
            consent::approved_scopes(&store, &after, &a, Some(user))
                .await
                .unwrap(),
            ["basic"]
        );
        store.close().await;
        db.drop_pg().await;
    }
}
