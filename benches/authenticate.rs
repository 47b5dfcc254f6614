//! What authenticating an API key adds to a request in process: a cached key → app lookup (the
//! steady state), a negatively cached unknown key (a flood of one bad key), and a lookup that
//! reaches SQLite (the first request after the cache entry expired). Run:
//! `cargo bench --bench authenticate`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use parapet_gateway::audit::{Store, StoreOptions};
use parapet_gateway::identity::{self, Identity};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = rt
        .block_on(Store::open(&url, &StoreOptions::default()))
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (_, key) = rt
        .block_on(identity::create_app(
            &store,
            identity::Auditor::Store(&store),
            &identity::Actor::cli(),
            &identity::NewApp {
                name: "bench".to_owned(),
                grants: vec!["sign".to_owned()],
                ..identity::NewApp::default()
            },
            now,
        ))
        .unwrap();
    let ids = Identity::new(store.clone());
    let unknown = identity::new_api_key();

    let mut g = c.benchmark_group("authenticate");
    g.bench_function("known key, cached", |b| {
        b.iter(|| black_box(rt.block_on(ids.resolve(&key, now)).unwrap()))
    });
    g.bench_function("unknown key, negatively cached", |b| {
        b.iter(|| black_box(rt.block_on(ids.resolve(&unknown, now)).unwrap()))
    });
    g.bench_function("known key, SQLite lookup", |b| {
        b.iter(|| {
            ids.invalidate();
            black_box(rt.block_on(ids.resolve(&key, now)).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
