//! Ethereum transaction conformance vectors (`fixtures/ethereum-tests/vectors.json`, vendored)
//! through the decoder layer: decode, recover the sender, stateless validity for chain id 1 at
//! the vector's fork. Valid vectors must decode to their sender and hash, invalid ones must be
//! refused, none may panic. Exclusions are by name, with reasons, in
//! `conformance-exclusions.json`.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use parapet_decide::decode::{Fork, conformance_check};
use serde::Deserialize;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ethereum-tests/vectors.json"
);
const EXCLUSIONS: &str = include_str!("conformance-exclusions.json");

#[derive(Deserialize)]
struct Vector {
    name: String,
    txbytes: String,
    fork: String,
    valid: bool,
    #[serde(default)]
    sender: Option<String>,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    exception: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exclusion {
    name: String,
    reason: String,
}

/// The category a vector is counted under: its first byte's transaction kind.
fn category(bytes: &[u8]) -> &'static str {
    match bytes.first() {
        Some(0xc0..=0xff) => "legacy",
        Some(0x01) => "type 1",
        Some(0x02) => "type 2",
        Some(0x03) => "type 3",
        Some(0x04) => "type 4",
        _ => "other",
    }
}

#[derive(Default)]
struct Counts {
    valid_passed: usize,
    invalid_rejected: usize,
    excluded: usize,
}

#[test]
fn ethereum_transaction_vectors() {
    let text = std::fs::read_to_string(VECTORS).expect("the vendored conformance vectors");
    let vectors: Vec<Vector> = serde_json::from_str(&text).unwrap();
    let exclusions: Vec<Exclusion> = serde_json::from_str(EXCLUSIONS).unwrap();
    let mut excluded: HashMap<&str, &str> = HashMap::new();
    for e in &exclusions {
        assert!(
            !e.reason.trim().is_empty(),
            "exclusion {} needs a reason",
            e.name
        );
        assert!(
            excluded.insert(&e.name, &e.reason).is_none(),
            "{} excluded twice",
            e.name
        );
    }
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    for e in &exclusions {
        assert!(
            names.contains(&e.name.as_str()),
            "exclusion {} names no vector",
            e.name
        );
    }

    // PARAPET_CONFORMANCE_VERBOSE=1 prints why each invalid vector was refused.
    let verbose = std::env::var_os("PARAPET_CONFORMANCE_VERBOSE").is_some();
    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut failures = Vec::new();
    for v in &vectors {
        let bytes = hex::decode(v.txbytes.trim_start_matches("0x")).unwrap();
        let cat = counts.entry(category(&bytes)).or_default();
        let fork: Fork = v.fork.parse().unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| conformance_check(&bytes, fork)));
        let Ok(result) = outcome else {
            failures.push(format!("{}: PANICKED", v.name));
            continue;
        };
        if excluded.contains_key(v.name.as_str()) {
            cat.excluded += 1;
            continue;
        }
        match (v.valid, result) {
            (true, Ok(tx)) => {
                let sender = format!("{:#x}", tx.sender);
                let mut ok = Some(&sender) == v.sender.as_ref();
                if let Some(h) = &v.hash {
                    ok &= format!("{:#x}", tx.hash) == *h;
                }
                if ok {
                    cat.valid_passed += 1;
                } else {
                    failures.push(format!(
                        "{}: decoded to sender {sender} hash {:#x}, expected {:?} {:?}",
                        v.name, tx.hash, v.sender, v.hash
                    ));
                }
            }
            (true, Err(e)) => {
                failures.push(format!("{} ({}): valid but refused: {e}", v.name, v.fork))
            }
            (false, Err(e)) => {
                if verbose {
                    println!("{} ({}): {:?} -> {e}", v.name, v.fork, v.exception);
                }
                cat.invalid_rejected += 1;
            }
            (false, Ok(tx)) => failures.push(format!(
                "{} ({}): accepted (sender {:#x}) but expected {:?}",
                v.name, v.fork, tx.sender, v.exception
            )),
        }
    }

    println!(
        "{:<8} {:>12} {:>16} {:>9}",
        "category", "valid passed", "invalid rejected", "excluded"
    );
    let mut total = Counts::default();
    for (cat, c) in &counts {
        println!(
            "{cat:<8} {:>12} {:>16} {:>9}",
            c.valid_passed, c.invalid_rejected, c.excluded
        );
        total.valid_passed += c.valid_passed;
        total.invalid_rejected += c.invalid_rejected;
        total.excluded += c.excluded;
    }
    println!(
        "{:<8} {:>12} {:>16} {:>9}   (of {} vectors)",
        "total",
        total.valid_passed,
        total.invalid_rejected,
        total.excluded,
        vectors.len()
    );
    for e in &exclusions {
        println!("excluded {}: {}", e.name, e.reason);
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every vector, truncated or with a byte flipped, must be refused or decoded without a panic.
#[test]
fn mutated_vectors_never_panic() {
    let text = std::fs::read_to_string(VECTORS).unwrap();
    let vectors: Vec<Vector> = serde_json::from_str(&text).unwrap();
    for v in &vectors {
        let bytes = hex::decode(v.txbytes.trim_start_matches("0x")).unwrap();
        let step = (bytes.len() / 16).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let truncated = bytes.get(..cut).unwrap();
            assert!(
                conformance_check(truncated, Fork::Osaka).is_err(),
                "{}: truncated at {cut} accepted",
                v.name
            );
            let mut flipped = bytes.clone();
            flipped[cut] ^= 0x5a;
            let _ = conformance_check(&flipped, Fork::Osaka);
        }
    }
}
