//! Policy outcomes over the request corpus in `tests/fixtures/` (transaction × shipped policy set
//! → decision), snapshotted with `insta` into `snapshots/`. Good samples must decide; bad samples
//! must be refused with a stable code. Regenerate fixtures with `tests/fixtures/generate.py`;
//! review snapshot changes with `cargo insta review`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;

use parapet_gateway::ledger::MemoryLedger;
use parapet_gateway::policy::{LoadedPolicies, PolicyPaths};
use parapet_gateway::records::AppRecord;
use parapet_gateway::request::AuthorizeRequest;
use parapet_gateway::service::pipeline;
use serde_json::{Value, json};
use time::macros::datetime;

fn policies() -> LoadedPolicies {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    LoadedPolicies::load(&PolicyPaths {
        policies: root.join("policies"),
        schemas: root.join("schemas"),
    })
    .unwrap()
}

fn run(policies: &LoadedPolicies, path: &Path) -> Result<Value, Value> {
    let req: AuthorizeRequest =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ledger = MemoryLedger::default();
    let app = AppRecord::development_default();
    let now = datetime!(2026-11-25 12:00:00 UTC);
    let outcome = pipeline::wallet_from_request(&req).and_then(|wallet| {
        pipeline::evaluate(
            policies,
            &ledger,
            &app,
            &wallet,
            &req,
            &pipeline::basic_scopes(),
            now,
        )
    });
    match outcome {
        Ok((_, o)) => {
            let mut out = json!({
                "decision": o.decision,
                "action": o.action,
                "determining": o.determining_policies.iter().map(|p| json!([p.effect, p.id])).collect::<Vec<_>>(),
                "errors": o.errors,
                "digest": o.digest,
                "facts": o.facts,
            });
            if !o.scope_not_approved.is_empty() {
                out["scope_not_approved"] = json!(o.scope_not_approved);
            }
            Ok(out)
        }
        // As the gateway answers it.
        Err(e) => {
            let e = parapet_gateway::Error::from(e);
            Err(
                json!({"code": e.code(), "status": e.status().as_u16(), "message": e.public_message()}),
            )
        }
    }
}

#[test]
fn good_requests_decide() {
    let set = policies();
    let mut count = 0;
    insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::glob!("../fixtures/good", "*.json", |path| {
            count += 1;
            let out = run(&set, path).unwrap_or_else(|e| panic!("{} was refused: {e}", path.display()));
            assert!(out["errors"].as_array().is_some_and(|e| e.is_empty()), "{}: evaluation errors {}", path.display(), out["errors"]);
            insta::assert_json_snapshot!(out);
        });
    });
    assert!(count >= 40, "the corpus holds {count} good requests");
}

#[test]
fn bad_requests_are_refused_with_a_code() {
    let set = policies();
    insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::glob!("../fixtures/bad", "*.json", |path| {
            let err = run(&set, path).err().unwrap_or_else(|| panic!("{} was not refused", path.display()));
            assert_eq!(err["status"], 400, "{}: {err}", path.display());
            insta::assert_json_snapshot!(err);
        });
    });
}
