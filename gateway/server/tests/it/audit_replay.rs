//! Replay: decisions made with the shipped policy set are logged, the set's files are stored as
//! a version, and every logged decision replays to the same answer from the store alone — also
//! after the files on disk changed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use parapet_gateway::audit::event::policy_refs;
use parapet_gateway::audit::replay::{Replayer, Target};
use parapet_gateway::audit::{AuditEvent, AuditLog, EventKind, Store, StoreOptions, WriterOptions};
use parapet_gateway::clock::FixedClock;
use parapet_gateway::facts::Facts;
use parapet_gateway::policy::testing::{self, ALICE, TORNADO_ROUTER};
use parapet_gateway::policy::{DecisionInput, LoadedPolicies, PolicyPaths};

fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_logged_decision_replays_to_the_same_answer_from_the_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = testing::shipped_paths();
    let paths = PolicyPaths {
        policies: dir.path().join("policies"),
        schemas: dir.path().join("schemas"),
    };
    copy_dir(&shipped.policies, &paths.policies);
    copy_dir(&shipped.schemas, &paths.schemas);
    let set = LoadedPolicies::load(&paths).unwrap();
    let now = time::macros::datetime!(2026-11-25 09:00 UTC);
    let url = format!("sqlite://{}", dir.path().join("data/p.db").display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    store
        .record_policy_version(set.version(), set.files(), now)
        .await
        .unwrap();
    let log = AuditLog::start(
        store.clone(),
        WriterOptions {
            append_timeout: Duration::from_secs(5),
            ..WriterOptions::default()
        },
        None,
        Arc::new(FixedClock(now)),
    )
    .await
    .unwrap();

    let cases: Vec<(Facts, Vec<&str>)> = vec![
        (
            testing::native_transfer(ALICE, U256::from(10u64).pow(U256::from(17u64))),
            vec![],
        ),
        (
            testing::native_transfer(TORNADO_ROUTER, U256::from(1u64)),
            vec![],
        ),
        (
            testing::native_transfer(ALICE, U256::from(10u64).pow(U256::from(23u64))),
            vec!["treasury"],
        ),
        (testing::usdc_transfer(ALICE, 5_000_000), vec![]),
        (testing::usdc_transfer(TORNADO_ROUTER, 5), vec![]),
        (testing::usdc_approve(ALICE, U256::MAX), vec![]),
        (testing::set_code(&[ALICE]), vec![]),
        (testing::deploy(), vec![]),
        (testing::personal_sign(20), vec![]),
        (testing::typed_data(Some(ALICE)), vec![]),
        (testing::usdc_permit(ALICE, U256::MAX), vec![]),
        (
            testing::nft_approve_all(ALICE, TORNADO_ROUTER, true),
            vec![],
        ),
    ];
    let app = testing::app();
    let mut decisions = Vec::new();
    for (i, (facts, labels)) in cases.iter().enumerate() {
        let wallet = testing::wallet(labels);
        let velocity = testing::velocity(facts);
        let scopes = vec!["basic".to_owned()];
        let d = set.decide(&DecisionInput {
            app: &app,
            wallet: &wallet,
            facts,
            velocity: &velocity,
            session: None,
            step_up: false,
            scopes: &scopes,
            now,
        });
        let mut e = AuditEvent::new(EventKind::Decision, now, format!("req-{i}"));
        e.app = Some(app.id.clone());
        e.wallet = Some(format!("{:#x}", wallet.address));
        e.action = Some(facts.action.as_str().to_owned());
        e.decision = Some(if d.allowed { "allow" } else { "deny" }.to_owned());
        e.determining_policies = policy_refs(&d.determining);
        e.errors = d.errors.clone();
        e.policy_version = Some(set.version().to_owned());
        e.cedar_request = Some(d.cedar_request.as_str().to_owned());
        e.entities = Some(d.entities.as_str().to_owned());
        log.append(e).await.unwrap();
        decisions.push(d.allowed);
    }
    assert!(
        decisions.iter().any(|a| *a) && decisions.iter().any(|a| !*a),
        "cases cover allow and deny: {decisions:?}"
    );

    // The files on disk change afterwards; replay must not notice.
    for entry in std::fs::read_dir(&paths.policies).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "cedar") {
            std::fs::write(&p, "").unwrap();
        }
    }
    let mut r = Replayer::new(store.clone());
    for seq in 1..=cases.len() as i64 {
        let out = r.replay(&Target::Seq(seq)).await.unwrap();
        assert!(out.matches, "{out:?}");
        assert_eq!(
            out.recorded.decision == "allow",
            decisions[(seq - 1) as usize]
        );
    }
    let by_id = r.replay(&Target::parse("req-1")).await.unwrap();
    assert_eq!(by_id.seq, "2");
    assert!(matches!(
        r.replay(&Target::Seq(999)).await,
        Err(parapet_gateway::Error::NotFound)
    ));

    // A forged record (a deny rewritten as allow, before it was hashed) replays as a mismatch.
    let (facts, _) = &cases[1];
    let wallet = testing::wallet(&[]);
    let d = set.decide(&DecisionInput {
        app: &app,
        wallet: &wallet,
        facts,
        velocity: &testing::velocity(facts),
        session: None,
        step_up: false,
        scopes: &["basic".to_owned()],
        now,
    });
    assert!(!d.allowed);
    let mut e = AuditEvent::new(EventKind::Decision, now, "forged");
    e.decision = Some("allow".into());
    e.policy_version = Some(set.version().to_owned());
    e.cedar_request = Some(d.cedar_request.as_str().to_owned());
    e.entities = Some(d.entities.as_str().to_owned());
    let seq = log.append(e).await.unwrap().seq;
    assert!(!r.replay(&Target::Seq(seq)).await.unwrap().matches);
    log.shutdown().await;
}
