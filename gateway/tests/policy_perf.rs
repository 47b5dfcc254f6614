//! Timing of `decide()` (not a benchmark: `benches/decide.rs` is). Ignored by default; run in
//! release to see numbers:
//! `cargo test --release -p parapet-gateway --test policy_perf -- --ignored --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use parapet_gateway::policy::testing::{self, ALICE};
use parapet_gateway::policy::{DecisionInput, LoadedPolicies};
use parapet_gateway::records::AppRecord;

fn per_call(mut f: impl FnMut()) -> Duration {
    for _ in 0..2_000 {
        f();
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let n = 20_000u32;
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(start.elapsed() / n);
    }
    best
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn decide_is_fast_and_slicing_keeps_it_flat() {
    let shipped = LoadedPolicies::load(&testing::shipped_paths()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big_paths =
        testing::copy_with_app_policies(&testing::shipped_paths(), dir.path(), 1000).unwrap();
    let big = LoadedPolicies::load(&big_paths).unwrap();
    assert_eq!(big.policies().len(), shipped.policies().len() + 1000);

    let facts = testing::usdc_transfer(ALICE, 250_000_000);
    let velocity = testing::velocity(&facts);
    let wallet = testing::wallet(&[]);
    let scopes = vec!["basic".to_owned()];
    let default_app = testing::app();
    let gen_app = AppRecord {
        id: "gen_app_500".to_owned(),
        ..testing::app()
    };
    let input = |app| DecisionInput {
        app,
        wallet: &wallet,
        facts: &facts,
        velocity: &velocity,
        session: None,
        step_up: false,
        scopes: &scopes,
        now: time::OffsetDateTime::UNIX_EPOCH,
    };
    let a = input(&default_app);
    let b = input(&gen_app);
    assert!(shipped.decide(&a).allowed);
    assert!(big.decide(&b).allowed);

    let shipped_t = per_call(|| {
        std::hint::black_box(shipped.decide(std::hint::black_box(&a)));
    });
    let big_t = per_call(|| {
        std::hint::black_box(big.decide(std::hint::black_box(&b)));
    });
    let naive_t = per_call(|| {
        std::hint::black_box(big.decide_unsliced(std::hint::black_box(&b)));
    });
    println!(
        "decide, shipped set ({} policies): {shipped_t:?}",
        shipped.policies().len()
    );
    println!("decide, shipped + 1,000 app policies (sliced): {big_t:?}");
    println!("decide, shipped + 1,000 app policies (whole set): {naive_t:?}");
    // Loose bounds: a regression guard that holds on a busy 2-core machine, not the target.
    if !cfg!(debug_assertions) {
        assert!(shipped_t < Duration::from_micros(80), "{shipped_t:?}");
        assert!(
            big_t < shipped_t * 2,
            "slicing did not keep it flat: {big_t:?}"
        );
        assert!(naive_t > big_t * 10, "{naive_t:?} vs {big_t:?}");
    }
}
