//! Decode + authorize in process: a 1559 ERC-20 transfer against the shipped set, and against
//! the shipped set plus 1,000 generated app-constrained policies (sliced, and unsliced for
//! comparison); and the costliest typed data the decoder admits. Run: `cargo bench --bench decide`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use parapet_gateway::decode;
use parapet_gateway::ledger::{MemoryLedger, Velocity, VelocityTotals};
use parapet_gateway::policy::{DecisionInput, LoadedPolicies, testing};
use parapet_gateway::records::AppRecord;
use parapet_gateway::request::AuthorizeRequest;
use parapet_gateway::service::pipeline;
use time::macros::datetime;

/// The allocator `parapet` runs with (src/main.rs), so these figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eth-account-built unsigned 1559 transfer of 250 USDC (tests/fixtures/good/erc20-transfer-usdc-small.json).
fn request() -> AuthorizeRequest {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/good/erc20-transfer-usdc-small.json"
    ))
    .unwrap();
    serde_json::from_str(&fixture).unwrap()
}

fn bench(c: &mut Criterion) {
    let shipped = LoadedPolicies::load(&testing::shipped_paths()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big_paths =
        testing::copy_with_app_policies(&testing::shipped_paths(), dir.path(), 1000).unwrap();
    let big = LoadedPolicies::load(&big_paths).unwrap();
    let req = request();
    let wallet = pipeline::wallet_from_request(&req).unwrap();
    let ledger = MemoryLedger::default();
    let now = datetime!(2026-11-25 12:00:00 UTC);
    let scopes = pipeline::basic_scopes();
    let default_app = AppRecord::development_default();
    let gen_app = AppRecord {
        id: "gen_app_500".to_owned(),
        ..AppRecord::development_default()
    };

    let mut g = c.benchmark_group("decide");
    g.bench_function("decode only (1559 ERC-20 transfer)", |b| {
        let payload = req.payload().unwrap();
        b.iter(|| {
            black_box(decode::decode(payload, 1, wallet.address, shipped.registry()).unwrap())
        })
    });
    g.bench_function("decode+authorize, shipped set", |b| {
        b.iter(|| {
            black_box(
                pipeline::evaluate(&shipped, &ledger, &default_app, &wallet, &req, &scopes, now)
                    .unwrap(),
            )
        })
    });
    // A wallet the process has not decided for yet, each time (the HTTP load does this): the
    // per-(app, wallet, user) entity store cannot be reused.
    let fresh: Vec<_> = (0..10_000u64)
        .map(|i| {
            let mut w = wallet.clone();
            w.address = alloy::primitives::Address::left_padding_from(&(i + 1).to_be_bytes());
            w
        })
        .collect();
    let mut next = fresh.iter().cycle();
    g.bench_function(
        "decode+authorize, shipped set, a new wallet each time",
        |b| {
            b.iter(|| {
                let w = next.next().unwrap();
                black_box(
                    pipeline::evaluate(&shipped, &ledger, &default_app, w, &req, &scopes, now)
                        .unwrap(),
                )
            })
        },
    );
    g.bench_function(
        "decode+authorize, shipped + 1,000 app policies (sliced)",
        |b| {
            b.iter(|| {
                black_box(
                    pipeline::evaluate(&big, &ledger, &gen_app, &wallet, &req, &scopes, now)
                        .unwrap(),
                )
            })
        },
    );
    let facts = decode::decode(req.payload().unwrap(), 1, wallet.address, big.registry()).unwrap();
    let velocity = Velocity::including(&VelocityTotals::zero(), &facts);
    let input = DecisionInput {
        app: &gen_app,
        wallet: &wallet,
        facts: &facts,
        velocity: &velocity,
        session: None,
        step_up: false,
        scopes: &scopes,
        now,
    };
    g.bench_function(
        "authorize only, shipped + 1,000 app policies (sliced)",
        |b| b.iter(|| black_box(big.decide(&input))),
    );
    g.bench_function(
        "authorize only, shipped + 1,000 app policies (unsliced, naive)",
        |b| b.iter(|| black_box(big.decide_unsliced(&input))),
    );
    // The target: ≤ 5 ms for the costliest typed data the decoder's limits admit.
    for (shape, body) in decode::costliest_typed_data() {
        g.bench_function(format!("decode only (typed data: {shape})"), |b| {
            b.iter(|| {
                black_box(
                    decode::decode(
                        parapet_gateway::request::Payload::TypedData(&body),
                        1,
                        wallet.address,
                        shipped.registry(),
                    )
                    .unwrap(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
