//! The shipped test cases (`policies/tests/*.json`) pass, and together they exercise every
//! shipped policy. These go through the decoder, like `parapet policy test`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use parapet_decide::policy::{LoadedPolicies, format_case_table, run_cases, testing};

#[test]
fn shipped_cases_pass() {
    let results = run_cases(&testing::shipped_paths()).unwrap();
    let table = format_case_table(&results);
    assert!(results.len() >= 15, "{table}");
    assert!(results.iter().all(|r| r.passed), "{table}");
}

#[test]
fn shipped_cases_cover_every_shipped_policy() {
    let paths = testing::shipped_paths();
    let set = LoadedPolicies::load(&paths).unwrap();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for entry in std::fs::read_dir(paths.policies.join("tests")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = match value {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        for c in cases {
            for id in c["expect"]["determining"].as_array().into_iter().flatten() {
                expected.insert(id.as_str().unwrap().to_owned());
            }
        }
    }
    let missing: Vec<&str> = set
        .policies()
        .iter()
        .map(|m| m.id.as_str())
        .filter(|id| !expected.contains(*id))
        .collect();
    assert!(missing.is_empty(), "no case expects {missing:?}");
}
