//! What authenticating an API key and rate limiting add to a request in process: a cached key →
//! app lookup (the steady state), a negatively cached unknown key (a flood of one bad key), a
//! lookup that reaches SQLite (the first request after the cache entry expired), and the whole
//! admission path of `/v1/authorize` — IP limit, key lookup, app limit, wallet limit — allowed
//! and refused; and resolving a user's session, cached and from SQLite. Run: `cargo bench --bench authenticate`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use parapet_gateway::accounts::apps::{self, Identity};
use parapet_gateway::audit::{Store, StoreOptions};
use parapet_gateway::limits::{LimitSettings, Limits, Rate};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = rt
        .block_on(Store::open(&url, &StoreOptions::default()))
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (_, key) = rt
        .block_on(apps::create_app(
            &store,
            apps::Auditor::Store(&store),
            &apps::Actor::cli(),
            &apps::NewApp {
                name: "bench".to_owned(),
                grants: vec!["sign".to_owned()],
                ..apps::NewApp::default()
            },
            now,
        ))
        .unwrap();
    let ids = Identity::new(store.clone());
    let unknown = apps::new_api_key();

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
    let generous = |s: &str| s.parse::<Rate>().unwrap();
    let open = Limits::new(LimitSettings {
        ip: generous("1000000000/s"),
        wallet: generous("1000000000/s"),
        app_default: generous("1000000000/s"),
        user: generous("1000000000/s"),
    });
    let app = rt.block_on(ids.resolve(&key, now)).unwrap().unwrap();
    let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let wallet = [0x2c; 20];
    g.bench_function(
        "admission: IP limit + cached key + app and wallet limits",
        |b| {
            b.iter(|| {
                open.check_ip(black_box(ip)).unwrap();
                let app = rt.block_on(ids.resolve(&key, now)).unwrap().unwrap();
                open.check_app(&app.id, app.limits.rate).unwrap();
                open.check_wallet(black_box(wallet)).unwrap();
            })
        },
    );
    let shut = Limits::new(LimitSettings {
        ip: generous("1/h"),
        wallet: generous("1/h"),
        app_default: generous("1/h"),
        user: generous("1/h"),
    });
    let _ = shut.check_ip(ip);
    let _ = shut.check_app(&app.id, None);
    g.bench_function("refused by the IP limit", |b| {
        b.iter(|| black_box(shut.check_ip(black_box(ip)).unwrap_err()))
    });
    g.bench_function("refused by the app limit", |b| {
        b.iter(|| black_box(shut.check_app(&app.id, None).unwrap_err()))
    });

    // A user's session next to the key: the steady state (cached), and a lookup that reaches
    // SQLite (the first use after the cache entry expired).
    let user = uuid::Uuid::new_v4();
    rt.block_on(parapet_gateway::accounts::users::store::ensure_user(
        &store, user, now,
    ))
    .unwrap();
    let users = parapet_gateway::accounts::users::Users::new(
        store.clone(),
        parapet_gateway::outbound::Allowlist::default(),
    );
    let session = rt
        .block_on(users.sessions.issue(
            parapet_gateway::accounts::users::SessionKind::App,
            user,
            &app,
            parapet_gateway::accounts::users::Method::Passkey,
            true,
            None,
            now,
        ))
        .unwrap();
    g.bench_function("session, cached", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(users.sessions.resolve(&session.token, &app.id, now))
                    .unwrap(),
            )
        })
    });
    g.bench_function("session, SQLite lookup", |b| {
        b.iter(|| {
            users.sessions.invalidate();
            black_box(
                rt.block_on(users.sessions.resolve(&session.token, &app.id, now))
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
