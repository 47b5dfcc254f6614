//! Slicing never changes an answer: a differential test of the app's slice against the whole
//! set, over generated policies (every kind of principal constraint, consent scopes offered to
//! every app or to some, errors) and generated requests, including `scope-not-approved` denies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use alloy::primitives::U256;
use parapet_decide::facts::Facts;
use parapet_decide::policy::testing::{self, ALICE, METAMASK_DELEGATOR, TORNADO_ROUTER};
use parapet_decide::policy::{DecisionInput, Effect, LoadedPolicies, PolicyPaths};
use parapet_decide::records::AppRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const APPS: usize = 6;
const GROUPS: usize = 4;

fn principal(rng: &mut StdRng) -> String {
    let a = rng.random_range(0..APPS);
    let g = rng.random_range(0..GROUPS);
    match rng.random_range(0..7) {
        0 | 1 => "principal".to_owned(),
        2 => format!("principal == Parapet::App::\"app{a}\""),
        3 => format!("principal in Parapet::AppGroup::\"g{g}\""),
        4 => format!("principal in Parapet::App::\"app{a}\""),
        5 => "principal is Parapet::App".to_owned(),
        _ => format!("principal is Parapet::App in Parapet::AppGroup::\"g{g}\""),
    }
}

fn action(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..6) {
        0 => "action",
        1 => "action in Parapet::Action::\"transaction\"",
        2 => "action in Parapet::Action::\"message\"",
        3 => "action == Parapet::Action::\"native_transfer\"",
        4 => "action in [Parapet::Action::\"erc20_transfer\", Parapet::Action::\"erc20_approve\"]",
        _ => "action in Parapet::Action::\"sign\"",
    }
}

fn condition(rng: &mut StdRng, forbid: bool) -> String {
    let g = rng.random_range(0..GROUPS);
    if rng.random_bool(0.015) {
        // Errors for some requests (overflow once count_1h > 1).
        return " when { context.velocity.count_1h * 9223372036854775807 > 9223372036854775806 }"
            .to_owned();
    }
    let first = if forbid { 1 } else { 0 };
    match rng.random_range(first..11) {
        0 => String::new(),
        1 => format!(" when {{ context.chain_id == {} }}", rng.random_range(1..3)),
        2 => format!(
            " when {{ context has value && context.value.scaled > {} }}",
            rng.random_range(0..3_000_000)
        ),
        3 => " when { principal.frozen }".to_owned(),
        4 => format!(" when {{ resource.labels.contains(\"l{g}\") }}"),
        5 => {
            " when { context has to && context.to in Parapet::AddressList::\"blocked\" }".to_owned()
        }
        6 => format!(" when {{ principal in Parapet::AppGroup::\"g{g}\" }}"),
        // `has` prefixes (the index drops these when the attribute is absent) ...
        7 => {
            " when { context has token && context has value && context.token.unlimited }".to_owned()
        }
        8 => " when { context has typed_data.verifying_contract }".to_owned(),
        // ... but not after something that can error, whose error must still deny.
        9 => " when { context.velocity.count_1h * 4611686018427387904 > 0 && context has nft }"
            .to_owned(),
        _ if forbid => format!(
            " when {{ context.chain_id == 2 && context.step_up && resource.labels.contains(\"l{g}\") }}"
        ),
        _ => " unless { context.step_up }".to_owned(),
    }
}

fn generate(rng: &mut StdRng, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let permit = rng.random_bool(0.7);
        let scope = match rng.random_range(0..8) {
            _ if !permit => "",
            0 | 1 => "@scope(\"extra\")\n",
            2 => "@scope(\"only\")\n",
            _ => "",
        };
        out.push_str(&format!(
            "@id(\"p{i}\")\n@reason(\"generated {i}\")\n{scope}{} ({}, {}, resource){};\n\n",
            if permit { "permit" } else { "forbid" },
            principal(rng),
            action(rng),
            condition(rng, !permit),
        ));
    }
    out
}

fn facts(rng: &mut StdRng) -> Facts {
    match rng.random_range(0..7) {
        0 => testing::native_transfer(
            ALICE,
            U256::from(rng.random_range(0..4_000_000u64)) * U256::from(1_000_000_000u64),
        ),
        1 => testing::native_transfer(TORNADO_ROUTER, U256::from(1u8)),
        2 => testing::usdc_transfer(ALICE, rng.random_range(0..1_000_000)),
        3 => testing::usdc_approve(ALICE, U256::from(5u8)),
        4 => testing::personal_sign(3),
        5 => testing::set_code(&[METAMASK_DELEGATOR]),
        _ => testing::typed_data(None),
    }
}

fn subset(rng: &mut StdRng, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .filter(|_| rng.random_bool(0.3))
        .map(|i| format!("{prefix}{i}"))
        .collect()
}

#[test]
fn slices_agree_with_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = testing::shipped_paths();
    let paths = PolicyPaths {
        policies: dir.path().join("policies"),
        schemas: dir.path().join("schemas"),
    };
    std::fs::create_dir_all(paths.policies.join("entities")).unwrap();
    std::fs::create_dir_all(&paths.schemas).unwrap();
    std::fs::copy(
        shipped.schemas.join("parapet.cedarschema"),
        paths.schemas.join("parapet.cedarschema"),
    )
    .unwrap();
    std::fs::copy(
        shipped.schemas.join("tokens.json"),
        paths.schemas.join("tokens.json"),
    )
    .unwrap();
    std::fs::copy(
        shipped.policies.join("entities/address-lists.json"),
        paths.policies.join("entities/address-lists.json"),
    )
    .unwrap();
    std::fs::write(
        paths.policies.join("scopes.json"),
        r#"{"basic": {"name": "N", "description": "b", "required": true}, "extra": {"name": "N", "description": "e", "required": false}, "only": {"name": "N", "description": "o", "required": false, "apps": ["app1", "group:g2"]}}"#,
    )
    .unwrap();

    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut compared = 0usize;
    let (mut allows, mut denies, mut errors, mut not_approved) = (0usize, 0usize, 0usize, 0usize);
    for round in 0..4 {
        std::fs::write(
            paths.policies.join("generated.cedar"),
            generate(&mut rng, 120),
        )
        .unwrap();
        let set = match LoadedPolicies::load(&paths) {
            Ok(s) => s,
            Err(e) => panic!("round {round}: generated set invalid: {e}"),
        };
        for _ in 0..500 {
            let app_n = rng.random_range(0..APPS + 2); // two apps without policies of their own
            let app = AppRecord {
                id: format!("app{app_n}"),
                name: "generated".to_owned(),
                grants: vec!["sign".to_owned()],
                frozen: rng.random_bool(0.1),
                groups: subset(&mut rng, "g", GROUPS + 1),
                limits: Default::default(),
            };
            let mut wallet = testing::wallet(&[]);
            wallet.labels = subset(&mut rng, "l", GROUPS);
            let facts = facts(&mut rng);
            let mut velocity = testing::velocity(&facts);
            velocity.count_1h = rng.random_range(1..3);
            let mut scopes = vec!["basic".to_owned()];
            for extra in ["extra", "only", "unknown"] {
                if rng.random_bool(0.4) {
                    scopes.push(extra.to_owned());
                }
            }
            let input = DecisionInput {
                app: &app,
                wallet: &wallet,
                facts: &facts,
                velocity: &velocity,
                session: None,
                step_up: rng.random_bool(0.2),
                scopes: &scopes,
                now: time::OffsetDateTime::UNIX_EPOCH,
            };
            let sliced = set.decide(&input);
            let whole = set.decide_unsliced(&input);
            assert_eq!(sliced, whole, "app {} groups {:?}", app.id, app.groups);
            compared += 1;
            // Scopes never drop a forbid: with every scope approved, the same forbids hold.
            let all = ["basic", "extra", "only"].map(str::to_owned);
            let with_all = set.decide(&DecisionInput {
                scopes: &all,
                ..input
            });
            let forbids = |d: &parapet_decide::policy::Decision| -> Vec<String> {
                d.determining
                    .iter()
                    .filter(|p| p.effect == Effect::Forbid)
                    .map(|p| p.id.clone())
                    .collect()
            };
            assert_eq!(forbids(&sliced), forbids(&with_all));
            if !sliced.scope_not_approved.is_empty() {
                not_approved += 1;
                assert!(with_all.allowed && !sliced.allowed);
                assert_eq!(sliced.determining.len(), 1);
                assert_eq!(sliced.determining[0].effect, Effect::ScopeNotApproved);
                for s in &sliced.scope_not_approved {
                    assert!(!scopes.contains(s), "{s} was approved");
                    let offered =
                        s != "only" || app.id == "app1" || app.groups.iter().any(|g| g == "g2");
                    assert!(offered, "{s} is not offered to {}", app.id);
                }
            }
            if !sliced.errors.is_empty() {
                errors += 1;
            } else if sliced.allowed {
                allows += 1;
            } else {
                denies += 1;
            }
        }
        assert!(set.cached_slices() > 1);
    }
    // The generator must exercise every outcome, or the comparison proves little.
    assert_eq!(compared, 2000);
    assert!(
        allows > 100 && denies > 100 && errors > 20 && not_approved > 5,
        "allows {allows} denies {denies} errors {errors} scope_not_approved {not_approved}"
    );
}
