//! The policy engine against the shipped set, with facts built directly (no decoder).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use alloy::primitives::{Address, U256, address};
use parapet_decide::facts::Facts;
use parapet_decide::ledger::{Velocity, VelocityTotals};
use parapet_decide::policy::testing::{self, ALICE, METAMASK_DELEGATOR, TORNADO_ROUTER};
use parapet_decide::policy::{
    Decision, DecisionInput, Effect, LoadedPolicies, SCOPE_NOT_APPROVED_ID,
    SCOPE_NOT_APPROVED_REASON,
};
use parapet_decide::records::{AppRecord, SessionFacts, WalletRecord};
use time::OffsetDateTime;

fn shipped() -> LoadedPolicies {
    match LoadedPolicies::load(&testing::shipped_paths()) {
        Ok(s) => s,
        Err(e) => panic!("shipped set does not load: {e}"),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_768_478_400).unwrap() // 2026-01-15T12:00:00Z
}

struct Req {
    app: AppRecord,
    wallet: WalletRecord,
    facts: Facts,
    scopes: Vec<String>,
    session: Option<SessionFacts>,
    step_up: bool,
    totals: VelocityTotals,
}

impl Req {
    fn new(facts: Facts) -> Req {
        Req {
            app: testing::app(),
            wallet: testing::wallet(&[]),
            facts,
            scopes: vec!["basic".to_owned()],
            session: None,
            step_up: false,
            totals: VelocityTotals::zero(),
        }
    }
    fn decide(&self, set: &LoadedPolicies) -> Decision {
        let velocity = Velocity::including(&self.totals, &self.facts);
        let input = DecisionInput {
            app: &self.app,
            wallet: &self.wallet,
            facts: &self.facts,
            velocity: &velocity,
            session: self.session.as_ref(),
            step_up: self.step_up,
            scopes: &self.scopes,
            now: now(),
        };
        set.decide(&input)
    }
}

fn ids(d: &Decision) -> Vec<&str> {
    d.determining.iter().map(|p| p.id.as_str()).collect()
}

#[track_caller]
fn allowed(d: &Decision, by: &[&str]) {
    assert!(d.errors.is_empty(), "errors: {:?}", d.errors);
    assert!(d.allowed, "denied: {:?}", d.determining);
    assert_eq!(ids(d), by);
    assert!(d.determining.iter().all(|p| p.effect == Effect::Permit));
}

#[track_caller]
fn denied(d: &Decision, by: &[&str]) {
    assert!(d.errors.is_empty(), "errors: {:?}", d.errors);
    assert!(!d.allowed, "allowed by {:?}", d.determining);
    assert_eq!(ids(d), by);
}

#[test]
fn shipped_set_loads_with_a_version_over_every_file() {
    let set = shipped();
    assert_eq!(set.version().len(), 64);
    let paths: Vec<&str> = set.files().iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&"policies/10-permits.cedar"), "{paths:?}");
    assert!(paths.contains(&"policies/entities/address-lists.json"));
    assert!(paths.contains(&"policies/scopes.json"));
    assert!(paths.contains(&"schemas/parapet.cedarschema"));
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("policies/tests/") || p.ends_with(".md"))
    );
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    for m in set.policies() {
        assert!(!m.reason.is_empty(), "{} has no reason", m.id);
    }
}

#[test]
fn small_usdc_transfer_is_allowed() {
    let set = shipped();
    let d = Req::new(testing::usdc_transfer(ALICE, 25_000_000)).decide(&set);
    allowed(&d, &["permit-transfers"]);
    assert_eq!(
        d.facts.to_value()["token"]["counterparty"],
        "0x1111111111111111111111111111111111111111"
    );
    assert_eq!(
        d.facts.to_value()["token"]["amount"]["scaled"],
        25_000_000_000i64
    );
    assert_eq!(d.facts.to_value()["token"]["amount"]["raw"], "25000000");
    assert_eq!(d.facts.to_value()["now"], "2026-01-15T12:00:00.000Z");
    assert!(d.facts.to_value().get("session").is_none());
}

const ETH: u64 = 1_000_000_000_000_000_000;

fn wei(milli_eth: u64) -> U256 {
    U256::from(milli_eth) * U256::from(ETH / 1000)
}

#[test]
fn unlimited_approval_is_denied_by_a_forbid_with_its_reason() {
    let set = shipped();
    let d = Req::new(testing::usdc_approve(ALICE, U256::MAX)).decide(&set);
    denied(&d, &["forbid-unlimited-approval"]);
    assert_eq!(d.determining[0].effect, Effect::Forbid);
    assert!(d.determining[0].reason.contains("unlimited"));
    assert_eq!(d.facts.to_value()["token"]["unlimited"], true);
    assert_eq!(d.facts.to_value()["token"]["amount"]["saturated"], true);

    let bounded = Req::new(testing::usdc_approve(ALICE, U256::from(5_000_000u64))).decide(&set);
    allowed(&bounded, &["permit-contract-calls"]);
}

#[test]
fn unlimited_permit_is_denied_and_a_bounded_one_allowed() {
    let set = shipped();
    denied(
        &Req::new(testing::usdc_permit(ALICE, U256::MAX)).decide(&set),
        &["forbid-unlimited-approval"],
    );
    allowed(
        &Req::new(testing::usdc_permit(ALICE, U256::from(10u8))).decide(&set),
        &["permit-messages"],
    );
}

#[test]
fn raw_hash_is_denied() {
    let set = shipped();
    let d = Req::new(testing::raw_hash()).decide(&set);
    denied(&d, &["forbid-raw-hash"]);
}

#[test]
fn delegation_only_to_trusted_delegates() {
    let set = shipped();
    let unknown = address!("9999999999999999999999999999999999999999");
    denied(
        &Req::new(testing::set_code(&[unknown])).decide(&set),
        &["forbid-untrusted-delegate"],
    );
    allowed(
        &Req::new(testing::set_code(&[METAMASK_DELEGATOR])).decide(&set),
        &["permit-set-code"],
    );
    allowed(
        &Req::new(testing::set_code(&[Address::ZERO])).decide(&set),
        &["permit-set-code"],
    );
    denied(
        &Req::new(testing::set_code(&[METAMASK_DELEGATOR, unknown])).decide(&set),
        &["forbid-untrusted-delegate"],
    );
    denied(
        &Req::new(testing::set_code(&[TORNADO_ROUTER])).decide(&set),
        &["forbid-blocked-delegate", "forbid-untrusted-delegate"],
    );
}

#[test]
fn native_transfers_within_limits_are_allowed() {
    let set = shipped();
    let d = Req::new(testing::native_transfer(ALICE, wei(1))).decide(&set);
    allowed(&d, &["permit-transfers"]);
    assert_eq!(d.facts.to_value()["value"]["scaled"], 1_000_000);
    assert_eq!(d.facts.to_value()["value"]["raw"], "1000000000000000");
}

#[test]
fn blocked_destinations_and_counterparties_are_denied() {
    let set = shipped();
    denied(
        &Req::new(testing::native_transfer(TORNADO_ROUTER, wei(1))).decide(&set),
        &["forbid-blocked-destination"],
    );
    denied(
        &Req::new(testing::usdc_transfer(TORNADO_ROUTER, 1)).decide(&set),
        &["forbid-blocked-token-counterparty"],
    );
    denied(
        &Req::new(testing::usdc_approve(TORNADO_ROUTER, U256::from(1u8))).decide(&set),
        &["forbid-blocked-token-counterparty"],
    );
    denied(
        &Req::new(testing::typed_data(Some(TORNADO_ROUTER))).decide(&set),
        &["forbid-blocked-verifying-contract"],
    );
    let mut grant = Req::new(testing::nft_approve_all(ALICE, TORNADO_ROUTER, true));
    grant.scopes.push("nft_operators".to_owned());
    denied(&grant.decide(&set), &["forbid-blocked-nft-counterparty"]);
}

#[test]
fn large_native_value_needs_a_step_up_and_huge_value_is_capped() {
    let set = shipped();
    let mut r = Req::new(testing::native_transfer(ALICE, wei(6_000)));
    let d = r.decide(&set);
    denied(&d, &["step-up-large-native-value"]);
    assert!(set.step_up_may_help(&d));
    r.step_up = true;
    allowed(&r.decide(&set), &["permit-transfers"]);

    let huge = Req::new(testing::native_transfer(ALICE, wei(60_000))).decide(&set);
    denied(
        &huge,
        &["forbid-native-value-cap", "step-up-large-native-value"],
    );
    assert!(!set.step_up_may_help(&huge));
}

#[test]
fn velocity_limits() {
    let set = shipped();
    let mut r = Req::new(testing::native_transfer(ALICE, wei(1_000)));
    r.totals.native_24h = wei(99_500);
    denied(&r.decide(&set), &["forbid-native-velocity-24h"]);
    // A token transfer after a busy native day is not caught by the native limit.
    let mut t = Req::new(testing::usdc_transfer(ALICE, 1_000_000));
    t.totals.native_24h = wei(200_000);
    allowed(&t.decide(&set), &["permit-transfers"]);
    t.totals.token_24h = U256::from(250_000_000_000u64);
    denied(&t.decide(&set), &["forbid-stablecoin-velocity-24h"]);
    let mut b = Req::new(testing::personal_sign(5));
    b.totals.count_1h = 600;
    denied(&b.decide(&set), &["forbid-request-burst"]);
}

#[test]
fn frozen_apps_and_wallets_sign_nothing() {
    let set = shipped();
    let mut r = Req::new(testing::personal_sign(12));
    r.app.frozen = true;
    denied(&r.decide(&set), &["forbid-frozen-app"]);
    let mut w = Req::new(testing::personal_sign(12));
    w.wallet.frozen = true;
    denied(&w.decide(&set), &["forbid-frozen-wallet"]);
}

#[test]
fn nft_operator_approvals_need_their_scope_and_a_deny_without_it_names_it() {
    let set = shipped();
    let collection = address!("bc4ca0eda7647a8ab7c2061c2e118a18a936f13d");
    // Only the unapproved scope's permit would allow it: named as such, not a default deny.
    let d = Req::new(testing::nft_approve_all(collection, ALICE, true)).decide(&set);
    assert!(!d.allowed && d.errors.is_empty());
    assert_eq!(d.determining.len(), 1);
    assert_eq!(d.determining[0].id, SCOPE_NOT_APPROVED_ID);
    assert_eq!(d.determining[0].effect, Effect::ScopeNotApproved);
    assert_eq!(d.determining[0].reason, SCOPE_NOT_APPROVED_REASON);
    assert_eq!(d.scope_not_approved, ["nft_operators"]);
    assert!(!set.step_up_may_help(&d));

    let mut consented = Req::new(testing::nft_approve_all(collection, ALICE, true));
    consented.scopes.push("nft_operators".to_owned());
    let d = consented.decide(&set);
    allowed(&d, &["permit-nft-operator-approval"]);
    assert!(d.scope_not_approved.is_empty());
    allowed(
        &Req::new(testing::nft_approve_all(collection, ALICE, false)).decide(&set),
        &["permit-nft-approval-revoke"],
    );

    // A forbid is reported as such, whatever the scopes.
    let mut hash = Req::new(testing::raw_hash());
    hash.scopes.push("nft_operators".to_owned());
    denied(&hash.decide(&set), &["forbid-raw-hash"]);
    // `basic` applies whatever the caller passes.
    let mut no_scopes = Req::new(testing::personal_sign(3));
    no_scopes.scopes.clear();
    allowed(&no_scopes.decide(&set), &["permit-messages"]);
}

#[test]
fn messages_typed_data_and_deploys_are_allowed() {
    let set = shipped();
    allowed(
        &Req::new(testing::personal_sign(42)).decide(&set),
        &["permit-messages"],
    );
    allowed(
        &Req::new(testing::typed_data(None)).decide(&set),
        &["permit-messages"],
    );
    let d = Req::new(testing::deploy()).decide(&set);
    allowed(&d, &["permit-contract-deploy"]);
    assert!(d.facts.to_value().get("to").is_none());
}

#[test]
fn audit_forms_are_cedar_json_and_replay_to_the_same_decision() {
    let set = shipped();
    let mut with_session = Req::new(testing::usdc_transfer(ALICE, 7));
    let user = uuid::Uuid::from_u128(7);
    with_session.session = Some(SessionFacts {
        user,
        method: "passkey".to_owned(),
        user_verified: true,
        age_secs: 30,
    });
    with_session.wallet.owner = Some(user);
    with_session.wallet.groups = vec!["ops".to_owned()];
    with_session.wallet.labels = vec!["treasury".to_owned()];
    with_session.app.groups = vec!["partners".to_owned()];
    let mut step_up = Req::new(testing::native_transfer(ALICE, wei(6_000)));
    step_up.step_up = true;
    let mut scoped = Req::new(testing::nft_approve_all(ALICE, ALICE, true));
    scoped.scopes.push("nft_operators".to_owned());
    let reqs = vec![
        with_session,
        step_up,
        scoped,
        Req::new(testing::usdc_approve(ALICE, U256::MAX)),
        Req::new(testing::set_code(&[TORNADO_ROUTER, METAMASK_DELEGATOR])),
        Req::new(testing::raw_hash()),
        Req::new(testing::typed_data(Some(TORNADO_ROUTER))),
        Req::new(testing::nft_approve_all(ALICE, ALICE, true)),
        Req::new(testing::deploy()),
    ];
    for r in &reqs {
        let d = r.decide(&set);
        let replayed = match set.replay(&d.cedar_request.to_value(), &d.entities.to_value()) {
            Ok(x) => x,
            Err(e) => panic!("replay of {:?} failed: {e}", d.cedar_request),
        };
        assert_eq!(
            replayed,
            d,
            "replay differs for {}",
            d.cedar_request.as_str()
        );
    }

    let d = reqs[0].decide(&set);
    let req = &d.cedar_request.to_value();
    assert_eq!(
        req["principal"],
        serde_json::json!({"type": "Parapet::App", "id": "default"})
    );
    assert_eq!(
        req["action"],
        serde_json::json!({"type": "Parapet::Action", "id": "erc20_transfer"})
    );
    assert_eq!(
        req["resource"],
        serde_json::json!({"type": "Parapet::Wallet", "id": "0x2222222222222222222222222222222222222222"})
    );
    assert_eq!(
        req["context"]["token"]["counterparty"],
        serde_json::json!({"__entity": {"type": "Parapet::Address", "id": "0x1111111111111111111111111111111111111111"}})
    );
    assert_eq!(
        req["context"]["now"],
        serde_json::json!({"__extn": {"fn": "datetime", "arg": "2026-01-15T12:00:00.000Z"}})
    );
    assert_eq!(d.facts.to_value()["session"]["user"], user.to_string());
    let entities = d.entities.to_value();
    let entities = entities.as_array().unwrap();
    let types: Vec<&str> = entities
        .iter()
        .map(|e| e["uid"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Parapet::App", "Parapet::Wallet", "Parapet::User"]);
    assert_eq!(
        entities[0]["parents"],
        serde_json::json!([{"type": "Parapet::AppGroup", "id": "partners"}])
    );
    assert_eq!(
        entities[1]["attrs"]["labels"],
        serde_json::json!(["treasury"])
    );
    assert_eq!(
        entities[1]["attrs"]["owner"],
        serde_json::json!({"__entity": {"type": "Parapet::User", "id": user.to_string()}})
    );
}

#[test]
fn replay_refuses_a_record_that_does_not_fit_the_schema() {
    let set = shipped();
    let d = Req::new(testing::personal_sign(1)).decide(&set);
    let (request, entities) = (d.cedar_request.to_value(), d.entities.to_value());
    assert!(set.replay(&request, &entities).is_ok());
    let mut bad = request.clone();
    bad["context"]["invented"] = serde_json::json!(1);
    assert!(set.replay(&bad, &entities).is_err());
    let mut wrong_principal = request.clone();
    wrong_principal["principal"] = serde_json::json!({"type": "Parapet::User", "id": "x"});
    assert!(set.replay(&wrong_principal, &entities).is_err());
    let extra = serde_json::json!([{"uid": {"type": "Parapet::AddressList", "id": "blocked"}, "attrs": {"members": []}, "parents": []}]);
    assert!(set.replay(&request, &extra).is_err());
}

#[test]
fn consent_hash_is_per_app() {
    let set = shipped();
    let a = set.consent_hash(&testing::app()).unwrap();
    assert_eq!(a.len(), 64);
    assert_eq!(a, set.consent_hash(&testing::app()).unwrap());
    let app = testing::app();
    let offered: Vec<&str> = set.offered_scopes(&app).map(|(id, _)| id).collect();
    assert_eq!(offered, ["basic", "nft_operators"]);
}

#[test]
fn shipped_policies_are_formatted() {
    let dir = testing::shipped_paths().policies;
    let mut unformatted = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let text = std::fs::read_to_string(&path).unwrap();
            let formatted = parapet_decide::policy::format_policies(&text).unwrap();
            if formatted != text {
                if let Ok(out) = std::env::var("PARAPET_FMT_OUT") {
                    std::fs::write(
                        std::path::Path::new(&out).join(path.file_name().unwrap()),
                        &formatted,
                    )
                    .unwrap();
                }
                unformatted.push(path.display().to_string());
            }
        }
    }
    assert!(
        unformatted.is_empty(),
        "run `parapet policy fmt`: {unformatted:?}"
    );
}
