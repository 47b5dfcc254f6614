//! Loading refuses bad sets with `file:line` problems; evaluation errors deny.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use alloy::primitives::U256;
use parapet_decide::Error;
use parapet_decide::policy::testing::{self, ALICE};
use parapet_decide::policy::{DecisionInput, Engine, LoadedPolicies, PolicyPaths};

const SCOPES: &str = r#"{"basic": {"name": "N", "description": "b", "required": true}, "extra": {"name": "N", "description": "e", "required": false}}"#;
const LISTS: &str =
    r#"[{"uid": {"type": "Parapet::AddressList", "id": "blocked"}, "attrs": {}, "parents": []}]"#;
const OK: &str = "@id(\"ok\")\n@reason(\"r\")\npermit (principal, action, resource);\n";

struct TempSet {
    dir: tempfile::TempDir,
}

impl TempSet {
    fn new(files: &[(&str, &str)]) -> TempSet {
        let dir = tempfile::tempdir().unwrap();
        let t = TempSet { dir };
        std::fs::create_dir_all(t.root().join("policies/entities")).unwrap();
        std::fs::create_dir_all(t.root().join("schemas")).unwrap();
        let shipped = testing::shipped_paths();
        std::fs::copy(
            shipped.schemas.join("parapet.cedarschema"),
            t.root().join("schemas/parapet.cedarschema"),
        )
        .unwrap();
        t.write("schemas/tokens.json", "{}");
        t.write("policies/scopes.json", SCOPES);
        t.write("policies/entities/lists.json", LISTS);
        for (path, text) in files {
            t.write(path, text);
        }
        t
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.root().join(rel), text).unwrap();
    }
    fn paths(&self) -> PolicyPaths {
        PolicyPaths {
            policies: self.root().join("policies"),
            schemas: self.root().join("schemas"),
        }
    }
    fn load(&self) -> Result<LoadedPolicies, Error> {
        LoadedPolicies::load(&self.paths())
    }
    fn problems(&self) -> Vec<String> {
        match self.load() {
            Err(Error::PolicySetInvalid(p)) => p,
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("the set loaded"),
        }
    }
}

#[track_caller]
fn has(problems: &[String], prefix: &str, needle: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(prefix) && p.contains(needle)),
        "no problem starting {prefix:?} containing {needle:?} in {problems:#?}"
    );
}

#[test]
fn a_minimal_set_loads() {
    let set = TempSet::new(&[("policies/a.cedar", OK)]).load().unwrap();
    assert_eq!(set.policies().len(), 1);
    assert_eq!(set.policies()[0].file, "policies/a.cedar");
    assert_eq!(set.policies()[0].line, 1);
}

#[test]
fn parse_errors_carry_file_and_line() {
    let t = TempSet::new(&[(
        "policies/bad.cedar",
        "@id(\"a\")\n@reason(\"r\")\npermit (principal, action, resource);\n\n@id(\"b\")\nforbid (principal, action resource);\n",
    )]);
    has(&t.problems(), "policies/bad.cedar:6:", "");
}

#[test]
fn validation_errors_carry_the_line_of_the_offending_expression() {
    let t = TempSet::new(&[
        ("policies/a.cedar", OK),
        (
            "policies/b.cedar",
            "// comment\n@id(\"first\")\n@reason(\"r\")\npermit (principal, action, resource);\n\n@id(\"second\")\n@reason(\"r\")\nforbid (principal, action, resource)\nwhen {\n  context.no_such_thing == 1\n};\n",
        ),
    ]);
    let p = t.problems();
    has(&p, "policies/b.cedar:10:", "second");
    assert_eq!(p.len(), 1, "{p:#?}");
}

#[test]
fn policies_are_located_by_their_first_line() {
    let text = "// header\n\n@id(\"one\")\n@reason(\"r\")\npermit (principal, action, resource);\n\n\n@id(\"two\") @reason(\"r\") forbid (principal, action, resource) when { resource.frozen };\n";
    let set = TempSet::new(&[("policies/a.cedar", text)]).load().unwrap();
    let lines: Vec<(String, usize)> = set
        .policies()
        .iter()
        .map(|m| (m.id.clone(), m.line))
        .collect();
    assert_eq!(lines, [("one".to_owned(), 3), ("two".to_owned(), 8)]);
}

#[test]
fn annotations_are_checked() {
    let t = TempSet::new(&[(
        "policies/a.cedar",
        concat!(
            "@reason(\"no id\")\npermit (principal, action, resource);\n", // 1
            "@id(\"no-reason\")\npermit (principal, action, resource);\n", // 3
            "@id(\"x\") @reason(\"r\") @colour(\"red\")\npermit (principal, action, resource);\n", // 5
            "@id(\"y\") @reason(\"r\") @scope(\"extra\")\nforbid (principal, action, resource);\n", // 7
            "@id(\"z\") @reason(\"r\") @step_up\npermit (principal, action, resource);\n", // 9
            "@id(\"w\") @reason(\"r\") @scope(\"undeclared\")\npermit (principal, action, resource);\n", // 11
            "@id(\"default-deny\") @reason(\"r\")\nforbid (principal, action, resource);\n", // 13
            "@id(\"has space\") @reason(\"r\")\nforbid (principal, action, resource);\n",    // 15
            "@id(\"v\") @reason(\"r\") @step_up(\"yes\")\nforbid (principal, action, resource);\n", // 17
        ),
    )]);
    let p = t.problems();
    has(&p, "policies/a.cedar:1:", "missing @id");
    has(&p, "policies/a.cedar:3:", "missing @reason");
    has(&p, "policies/a.cedar:5:", "unknown annotation @colour");
    has(&p, "policies/a.cedar:7:", "@scope applies to permits only");
    has(
        &p,
        "policies/a.cedar:9:",
        "@step_up applies to forbids only",
    );
    has(
        &p,
        "policies/a.cedar:11:",
        "not declared in policies/scopes.json",
    );
    has(&p, "policies/a.cedar:13:", "reserved");
    has(&p, "policies/a.cedar:15:", "@id(\"has space\")");
    has(&p, "policies/a.cedar:17:", "@step_up takes no value");
}

#[test]
fn scope_and_step_up_annotations_are_kept() {
    let set = TempSet::new(&[(
        "policies/a.cedar",
        "@id(\"p\") @reason(\"r\") @scope(\"extra\")\npermit (principal, action, resource);\n@id(\"f\") @reason(\"r\") @step_up\nforbid (principal, action, resource) unless { context.step_up };\n",
    )])
    .load()
    .unwrap();
    let p = set.policy("p").unwrap();
    assert_eq!(p.scope.as_deref(), Some("extra"));
    assert_eq!(p.effective_scope(), Some("extra"));
    assert!(set.policy("f").unwrap().step_up);
}

#[test]
fn duplicate_ids_name_both_places() {
    let t = TempSet::new(&[
        ("policies/a.cedar", OK),
        ("policies/b.cedar", &format!("\n\n{OK}")),
    ]);
    has(
        &t.problems(),
        "policies/b.cedar:3:",
        "duplicate @id(\"ok\"), first used at policies/a.cedar:1",
    );
}

#[test]
fn literals_that_can_never_match_are_refused() {
    let t = TempSet::new(&[(
        "policies/a.cedar",
        concat!(
            "@id(\"a\") @reason(\"r\")\nforbid (principal, action, resource)\n",
            "when { context has to && context.to == Parapet::Address::\"0xD90e2f925da726b50c4ed8d0fb90ad053324f31b\" };\n",
            "@id(\"b\") @reason(\"r\")\nforbid (principal, action, resource)\n",
            "when { context has to && context.to in Parapet::AddressList::\"blockd\" };\n",
        ),
    )]);
    let p = t.problems();
    has(&p, "policies/a.cedar:1:", "lower-case");
    has(
        &p,
        "policies/a.cedar:4:",
        "AddressList::\"blockd\" is not declared",
    );
}

#[test]
fn policies_that_can_never_apply_are_refused() {
    // "transaction" is a group: no request ever has it as its action.
    let t = TempSet::new(&[(
        "policies/a.cedar",
        "@id(\"never\") @reason(\"r\")\nforbid (principal, action == Parapet::Action::\"transaction\", resource);\n",
    )]);
    has(&t.problems(), "policies/a.cedar:", "never");
}

#[test]
fn templates_are_refused() {
    let t = TempSet::new(&[(
        "policies/a.cedar",
        &format!(
            "{OK}\n@id(\"t\") @reason(\"r\")\npermit (principal == ?principal, action, resource);\n"
        ),
    )]);
    has(&t.problems(), "policies/a.cedar:5:", "templates");
}

#[test]
fn entity_files_are_checked() {
    let t = TempSet::new(&[
        ("policies/a.cedar", OK),
        (
            "policies/entities/bad.json",
            r#"[
  {"uid": {"type": "Parapet::App", "id": "x"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Parapet::Address", "id": "0xD90E2F925DA726B50C4ED8D0FB90AD053324F31B"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Parapet::AddressList", "id": "l"}, "attrs": {"members": []}, "parents": []}
]"#,
        ),
        ("policies/entities/broken.json", "[\n{\n"),
        (
            "policies/entities/types.json",
            r#"[{"uid": {"type": "Parapet::Address", "id": "0x0000000000000000000000000000000000000001"}, "attrs": {"note": 3}, "parents": []}]"#,
        ),
    ]);
    let p = t.problems();
    has(
        &p,
        "policies/entities/bad.json",
        "only Parapet::Address and Parapet::AddressList",
    );
    has(&p, "policies/entities/bad.json", "lower-case hex");
    has(&p, "policies/entities/bad.json", "\"members\" is computed");
    has(&p, "policies/entities/broken.json:", "invalid JSON");
    has(&p, "policies/entities/types.json", "note");
}

#[test]
fn duplicate_entities_across_files_are_refused() {
    let t = TempSet::new(&[
        ("policies/a.cedar", OK),
        ("policies/entities/again.json", LISTS),
    ]);
    // Identical duplicates are harmless; a conflicting one is not.
    t.load().unwrap();
    t.write(
        "policies/entities/again.json",
        r#"[{"uid": {"type": "Parapet::AddressList", "id": "blocked"}, "attrs": {}, "parents": [{"type": "Parapet::AddressList", "id": "other"}]}]"#,
    );
    has(&t.problems(), "policies/entities", "blocked");
}

#[test]
fn scopes_file_is_checked() {
    let t = TempSet::new(&[("policies/a.cedar", OK)]);
    t.write(
        "policies/scopes.json",
        r#"{"basic": {"name": "N", "description": "b", "required": false}}"#,
    );
    has(&t.problems(), "policies/scopes.json", "must be required");
    t.write(
        "policies/scopes.json",
        r#"{"other": {"name": "N", "description": "b", "required": true}}"#,
    );
    has(
        &t.problems(),
        "policies/scopes.json",
        "\"basic\" is missing",
    );
    t.write(
        "policies/scopes.json",
        "{\n\"basic\": {\"name\": \"N\", \"description\": \"b\", \"required\": true, \"x\": 1}}",
    );
    has(&t.problems(), "policies/scopes.json:2:", "unknown field");
    std::fs::remove_file(t.root().join("policies/scopes.json")).unwrap();
    has(&t.problems(), "policies/scopes.json", "missing");
}

#[test]
fn schema_errors_carry_file_and_line() {
    let t = TempSet::new(&[("policies/a.cedar", OK)]);
    t.write(
        "schemas/parapet.cedarschema",
        "namespace Parapet {\n  entity App;\n  entity Wallet = { x: Nope };\n}\n",
    );
    has(&t.problems(), "schemas/parapet.cedarschema:", "Nope");
}

#[test]
fn every_problem_is_reported_at_once() {
    let t = TempSet::new(&[
        (
            "policies/a.cedar",
            "permit (principal, action, resource);\n",
        ),
        (
            "policies/b.cedar",
            "@id(\"b\") @reason(\"r\") @nope\npermit (principal, action, resource);\n",
        ),
    ]);
    let p = t.problems();
    has(&p, "policies/a.cedar:1:", "missing @id");
    has(&p, "policies/b.cedar:1:", "@nope");
}

#[test]
fn the_version_follows_every_file_and_reload_keeps_a_good_set() {
    let t = TempSet::new(&[("policies/a.cedar", OK)]);
    let engine = Engine::new(t.paths()).unwrap();
    let v1 = engine.current().version().to_owned();
    t.write("policies/entities/lists.json", &format!("{LISTS}\n"));
    let v2 = engine.reload().unwrap();
    assert_ne!(v1, v2);
    std::fs::create_dir_all(t.root().join("schemas/abis")).unwrap();
    t.write("schemas/tokens.json", "{ }");
    let v3 = engine.reload().unwrap();
    assert_ne!(v2, v3);
    std::fs::remove_file(t.root().join("schemas/tokens.json")).unwrap();
    assert!(
        matches!(engine.reload(), Err(Error::PolicySetInvalid(p)) if p[0].contains("tokens.json"))
    );
    t.write("schemas/tokens.json", "{ }");
    assert!(
        engine
            .current()
            .files()
            .iter()
            .any(|(p, _)| p == "schemas/tokens.json")
    );
    // Tests and docs are not part of the version.
    std::fs::create_dir_all(t.root().join("policies/tests")).unwrap();
    t.write("policies/tests/x.json", "[]");
    t.write("policies/README.md", "docs");
    assert_eq!(engine.reload().unwrap(), v3);
    // A broken set is refused and the old one stays active.
    t.write("policies/b.cedar", "nonsense");
    assert!(matches!(engine.reload(), Err(Error::PolicySetInvalid(_))));
    assert_eq!(engine.current().version(), v3);
}

#[test]
fn evaluation_errors_deny_even_when_a_permit_holds() {
    // The forbid overflows (count_1h >= 1): Cedar skips it and would allow.
    let t = TempSet::new(&[(
        "policies/a.cedar",
        &format!(
            "{OK}\n@id(\"overflowing\") @reason(\"r\")\nforbid (principal, action, resource)\nwhen {{ context.velocity.count_1h + 9223372036854775807 > 0 }};\n"
        ),
    )]);
    let set = t.load().unwrap();
    let facts = testing::native_transfer(ALICE, U256::from(1u8));
    let velocity = testing::velocity(&facts);
    let app = testing::app();
    let wallet = testing::wallet(&[]);
    let scopes = vec!["basic".to_owned()];
    let input = DecisionInput {
        app: &app,
        wallet: &wallet,
        facts: &facts,
        velocity: &velocity,
        session: None,
        step_up: false,
        scopes: &scopes,
        now: time::OffsetDateTime::UNIX_EPOCH,
    };
    let d = set.decide(&input);
    assert!(!d.allowed);
    assert!(d.determining.is_empty(), "{:?}", d.determining);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].contains("overflowing"), "{:?}", d.errors);
    assert!(!set.step_up_may_help(&d));
    assert_eq!(
        set.replay(&d.cedar_request.to_value(), &d.entities.to_value())
            .unwrap(),
        d
    );
}

#[test]
fn action_groups_apply_through_every_level() {
    // "sign" is the grandparent of "native_transfer" (sign > transaction > native_transfer).
    let t = TempSet::new(&[(
        "policies/a.cedar",
        &format!(
            "{OK}\n@id(\"chain-5\") @reason(\"r\")\nforbid (principal, action in Parapet::Action::\"sign\", resource)\nwhen {{ context.chain_id == 5 }};\n"
        ),
    )]);
    let set = t.load().unwrap();
    let app = testing::app();
    let wallet = testing::wallet(&[]);
    let scopes = vec!["basic".to_owned()];
    for (chain, allowed) in [(1, true), (5, false)] {
        let mut facts = testing::native_transfer(ALICE, U256::from(1u8));
        facts.decoded.chain_id = chain;
        let velocity = testing::velocity(&facts);
        let d = set.decide(&DecisionInput {
            app: &app,
            wallet: &wallet,
            facts: &facts,
            velocity: &velocity,
            session: None,
            step_up: false,
            scopes: &scopes,
            now: time::OffsetDateTime::UNIX_EPOCH,
        });
        assert_eq!(d.allowed, allowed, "chain {chain}: {:?}", d.determining);
        assert_eq!(
            set.replay(&d.cedar_request.to_value(), &d.entities.to_value())
                .unwrap(),
            d
        );
    }
}

#[test]
fn readme_examples_are_valid_and_formatted_policies() {
    let readme =
        std::fs::read_to_string(testing::shipped_paths().policies.join("README.md")).unwrap();
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (current.as_mut(), line.trim()) {
            (None, "```cedar") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    let examples = blocks.join("\n");
    assert!(examples.matches("@id(").count() >= 10, "{examples}");
    let t = TempSet::new(&[("policies/examples.cedar", &examples)]);
    t.write(
        "policies/scopes.json",
        r#"{"basic": {"name": "N", "description": "b", "required": true}, "defi": {"name": "N", "description": "d", "required": false}}"#,
    );
    t.write(
        "policies/entities/lists.json",
        r#"[{"uid": {"type": "Parapet::AddressList", "id": "treasury"}, "attrs": {}, "parents": []}]"#,
    );
    let set = match t.load() {
        Ok(s) => s,
        Err(e) => panic!("README examples do not load: {e}"),
    };
    assert!(set.policy("step-up-nft-operator").unwrap().step_up);
    // The time window works as described.
    let facts = testing::usdc_transfer(ALICE, 20_000_000_000);
    let velocity = testing::velocity(&facts);
    let app = testing::app();
    let wallet = testing::wallet(&[]);
    let scopes = vec!["basic".to_owned()];
    for (hour, blocked) in [(7, true), (8, false), (17, false), (18, true), (23, true)] {
        let now = time::OffsetDateTime::from_unix_timestamp(1_768_435_200 + hour * 3600).unwrap();
        let d = set.decide(&DecisionInput {
            app: &app,
            wallet: &wallet,
            facts: &facts,
            velocity: &velocity,
            session: None,
            step_up: false,
            scopes: &scopes,
            now,
        });
        let ids: Vec<&str> = d.determining.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids.contains(&"large-usdc-business-hours"),
            blocked,
            "{hour}:00 {ids:?}"
        );
    }
    // Every example is written as `parapet policy fmt` would write it.
    let mut unformatted = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let formatted = parapet_decide::policy::format_policies(block).unwrap();
        if let Ok(dir) = std::env::var("PARAPET_FMT_OUT") {
            std::fs::write(
                Path::new(&dir).join(format!("readme-{i}.cedar")),
                &formatted,
            )
            .unwrap();
        }
        if &formatted != block {
            unformatted.push(i);
        }
    }
    assert!(
        unformatted.is_empty(),
        "README examples {unformatted:?} are not in `policy fmt` style"
    );
}

/// A set with a permit in `basic`, one in `extra` (offered to every app) and one in `only`
/// (offered to app `app_a` and the group `partners`), plus a forbid.
fn scoped_set() -> TempSet {
    let policies = r#"
@id("transfers") @reason("r")
permit (principal, action == Parapet::Action::"native_transfer", resource);

@id("messages") @scope("extra") @reason("r")
permit (principal, action == Parapet::Action::"personal_sign", resource);

@id("messages-again") @scope("only") @reason("r")
permit (principal, action == Parapet::Action::"personal_sign", resource);

@id("nft-only") @scope("only") @reason("r")
permit (principal, action == Parapet::Action::"nft_approve_all", resource);

@id("deploys-for-b") @scope("extra") @reason("r")
permit (principal == Parapet::App::"app_b", action == Parapet::Action::"contract_deploy", resource);

@id("no-long-messages") @reason("r")
forbid (principal, action == Parapet::Action::"personal_sign", resource)
when { context has message && context.message.len > 100 };
"#;
    let t = TempSet::new(&[("policies/a.cedar", policies)]);
    t.write("policies/scopes.json", SCOPED);
    t
}

const SCOPED: &str = r#"{
  "basic": {"name": "Basic", "description": "b", "required": true},
  "extra": {"name": "Extra", "description": "e", "required": false},
  "only": {"name": "Only", "description": "o", "required": false, "apps": ["app_a", "group:partners"]}
}"#;

fn app(id: &str, groups: &[&str]) -> parapet_decide::records::AppRecord {
    let mut a = testing::app();
    a.id = id.to_owned();
    a.groups = groups.iter().map(|g| (*g).to_owned()).collect();
    a
}

fn decide_with(
    set: &LoadedPolicies,
    app: &parapet_decide::records::AppRecord,
    facts: &parapet_decide::facts::Facts,
    scopes: &[&str],
) -> parapet_decide::policy::Decision {
    let wallet = testing::wallet(&[]);
    let velocity = testing::velocity(facts);
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let input = DecisionInput {
        app,
        wallet: &wallet,
        facts,
        velocity: &velocity,
        session: None,
        step_up: false,
        scopes: &scopes,
        now: time::OffsetDateTime::UNIX_EPOCH,
    };
    let d = set.decide(&input);
    assert_eq!(d, set.decide_unsliced(&input), "slicing changed the answer");
    assert_eq!(
        set.replay(&d.cedar_request.to_value(), &d.entities.to_value())
            .unwrap(),
        d,
        "replay changed the answer"
    );
    d
}

fn ids(d: &parapet_decide::policy::Decision) -> Vec<&str> {
    d.determining.iter().map(|p| p.id.as_str()).collect()
}

#[test]
fn only_approved_scopes_permit_and_the_rest_is_named() {
    use parapet_decide::policy::Effect;
    let t = scoped_set();
    let set = t.load().unwrap();
    let msg = testing::personal_sign(10);
    let a = app("app_a", &[]);
    let other = app("app_z", &[]);

    // Only basic: denied, and the scopes whose permits would allow it are named.
    let d = decide_with(&set, &a, &msg, &["basic"]);
    assert!(!d.allowed);
    assert_eq!(ids(&d), ["scope-not-approved"]);
    assert_eq!(d.determining[0].effect, Effect::ScopeNotApproved);
    assert_eq!(d.scope_not_approved, ["extra", "only"]);
    assert_eq!(d.facts.to_value()["scopes"], serde_json::json!(["basic"]));
    // `only` is not offered to app_z: only `extra` is named.
    let d = decide_with(&set, &other, &msg, &["basic"]);
    assert_eq!(d.scope_not_approved, ["extra"]);
    // ... and approving it there changes nothing (and it is not in context.scopes).
    let d = decide_with(&set, &other, &msg, &["basic", "only"]);
    assert_eq!(d.scope_not_approved, ["extra"]);
    assert_eq!(d.facts.to_value()["scopes"], serde_json::json!(["basic"]));
    // Through a group it is offered.
    let d = decide_with(&set, &app("app_z", &["partners"]), &msg, &["basic"]);
    assert_eq!(d.scope_not_approved, ["extra", "only"]);
    // Approved: allowed by that scope's permit.
    let d = decide_with(&set, &a, &msg, &["extra"]);
    assert!(d.allowed);
    assert_eq!(ids(&d), ["messages"]);
    assert!(d.scope_not_approved.is_empty());
    assert_eq!(
        d.facts.to_value()["scopes"],
        serde_json::json!(["basic", "extra"])
    );
    // Unknown scopes are ignored; basic is always there.
    let d = decide_with(&set, &a, &msg, &["nope"]);
    assert_eq!(d.facts.to_value()["scopes"], serde_json::json!(["basic"]));
    // A permit only for another app does not make a scope worth naming.
    let d = decide_with(&set, &a, &testing::deploy(), &["basic"]);
    assert_eq!(ids(&d), ["default-deny"]);
    assert!(d.scope_not_approved.is_empty());
    let d = decide_with(&set, &app("app_b", &[]), &testing::deploy(), &["basic"]);
    assert_eq!(d.scope_not_approved, ["extra"]);
    // Nothing would allow it at all: the plain default deny.
    let d = decide_with(&set, &a, &testing::raw_hash(), &["basic", "extra", "only"]);
    assert_eq!(ids(&d), [parapet_decide::policy::DEFAULT_DENY_ID]);
    assert_eq!(d.determining[0].effect, Effect::DefaultDeny);
    assert_eq!(
        d.determining[0].reason,
        parapet_decide::policy::DEFAULT_DENY_REASON
    );
    assert!(d.scope_not_approved.is_empty());
}

#[test]
fn forbids_apply_whatever_the_scopes() {
    let t = scoped_set();
    let set = t.load().unwrap();
    let long = testing::personal_sign(500);
    for scopes in [&["basic"][..], &["basic", "extra"], &["extra", "only"]] {
        let d = decide_with(&set, &app("app_a", &[]), &long, scopes);
        assert!(!d.allowed);
        assert_eq!(ids(&d), ["no-long-messages"], "{scopes:?}");
        assert!(d.scope_not_approved.is_empty());
    }
}

#[test]
fn scope_ids_of_the_gateway_are_reserved() {
    let t = TempSet::new(&[(
        "policies/a.cedar",
        "@id(\"scope-not-approved\")\n@reason(\"r\")\npermit (principal, action, resource);\n",
    )]);
    has(&t.problems(), "policies/a.cedar:1:", "reserved");
}

#[test]
fn consent_hash_keeps_names_and_descriptions_but_not_permits() {
    let t = scoped_set();
    let a = app("app_a", &[]);
    let z = app("app_z", &[]);
    let hash =
        |app: &parapet_decide::records::AppRecord| t.load().unwrap().consent_hash(app).unwrap();
    let (ha, hz) = (hash(&a), hash(&z));
    assert_eq!(ha.len(), 64);
    assert_ne!(ha, hz, "app_a is offered one more scope");

    // Names and descriptions: consent stands.
    t.write(
        "policies/scopes.json",
        &SCOPED.replace("\"Extra\"", "\"Extra, renamed\"").replace(
            "\"description\": \"o\"",
            "\"description\": \"better words\"",
        ),
    );
    assert_eq!(hash(&a), ha);
    // Forbids and permits for other apps are not part of it either.
    let original = std::fs::read_to_string(t.root().join("policies/a.cedar")).unwrap();
    t.write(
        "policies/a.cedar",
        &original.replace("len > 100", "len > 200"),
    );
    assert_eq!(hash(&a), ha);
    t.write(
        "policies/a.cedar",
        &original.replace("\"contract_deploy\"", "\"contract_call\""),
    );
    assert_eq!(hash(&a), ha);
    assert_eq!(hash(&z), hz);

    // A permit's text: asked again.
    t.write(
        "policies/a.cedar",
        &original.replace("\"nft_approve_all\"", "\"nft_transfer\""),
    );
    assert_ne!(hash(&a), ha);
    assert_eq!(hash(&z), hz, "app_z is not offered that scope");
    t.write("policies/a.cedar", &original);
    assert_eq!(hash(&a), ha);
    // A required flag, and which scopes are offered: asked again.
    t.write(
        "policies/scopes.json",
        &SCOPED.replace(
            "\"description\": \"e\", \"required\": false",
            "\"description\": \"e\", \"required\": true",
        ),
    );
    assert_ne!(hash(&a), ha);
    t.write(
        "policies/scopes.json",
        &SCOPED.replace("\"group:partners\"", "\"group:partners\", \"app_z\""),
    );
    assert_eq!(hash(&a), ha);
    assert_ne!(hash(&z), hz);
}
