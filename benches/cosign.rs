//! The co-signer's speed: key generation and signing over loopback WebSockets (the real
//! gateway service on 127.0.0.1 and the device client), next to the same DKLs23 ceremonies in
//! one process and plain single-party k256 signing as the floor. Signing over loopback runs the
//! whole path: HTTP request → session → decode → Cedar → audit commit with the reservation →
//! WebSocket ceremony (HSM/keystore unwrap of the gateway share included) → verified signature.
//! Run: `cargo bench --bench cosign`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark setup"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use parapet_device::client;
use parapet_gateway::accounts::apps::{self, Actor, Auditor, NewApp};
use parapet_gateway::accounts::users::sessions::Method;
use parapet_gateway::config::Config;
use parapet_gateway::http::{AppState, app};
use parapet_mpc::{Dkls23, KeyShare, Role, SessionId, ThresholdEcdsa, run_locally};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

struct Setup {
    base: String,
    api_key: String,
    session: String,
    device_token: String,
    user: String,
    recovery: parapet_mpc::recovery::RecoveryKeys,
    _data: tempfile::TempDir,
}

impl Setup {
    fn target(&self) -> client::RecoveryTarget<'_> {
        client::RecoveryTarget {
            user: &self.user,
            public_key: self.recovery.public_key(),
        }
    }
}

async fn setup() -> (Setup, Arc<AppState>) {
    let data = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fast = "1000000/s burst 1000000";
    let env: HashMap<String, String> = [
        ("PARAPET_DATA_DIR", data.path().display().to_string()),
        (
            "PARAPET_POLICIES_DIR",
            root.join("policies").display().to_string(),
        ),
        (
            "PARAPET_SCHEMAS_DIR",
            root.join("schemas").display().to_string(),
        ),
        ("PARAPET_STATIC_TOKEN", "false".to_owned()),
        ("PARAPET_USER_RATE", fast.to_owned()),
        ("PARAPET_WALLET_RATE", fast.to_owned()),
        ("PARAPET_APP_RATE", fast.to_owned()),
        ("PARAPET_IP_RATE", fast.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut config = Config::load(None, &env).unwrap();
    let s = parapet_gateway::server::build_state(&mut config)
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (_, api_key) = apps::create_app(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &Actor::cli(),
        &NewApp {
            name: "bench".to_owned(),
            grants: vec!["sign".to_owned()],
            ..NewApp::default()
        },
        now,
    )
    .await
    .unwrap();
    let app_record = s.identity.resolve(&api_key, now).await.unwrap().unwrap();
    let user = uuid::Uuid::new_v4();
    parapet_gateway::accounts::users::store::ensure_user(s.audit.store(), user, now)
        .await
        .unwrap();
    let (ceremony, ccr) = s
        .passkeys
        .start_registration(user, "bench", "Bench", false, now)
        .await
        .unwrap();
    let cred = SoftPasskey::new(true)
        .do_registration(Url::parse("http://localhost:8080").unwrap(), ccr)
        .unwrap();
    s.passkeys
        .finish_registration(&ceremony, user, &cred, now)
        .await
        .unwrap();
    let session = s
        .users
        .sessions
        .issue(
            parapet_gateway::accounts::users::SessionKind::App,
            user,
            &app_record,
            Method::Passkey,
            true,
            None,
            now,
        )
        .await
        .unwrap()
        .token;
    let (code, _) =
        parapet_gateway::accounts::devices::issue_pairing_code(s.audit.store(), user, now)
            .await
            .unwrap();
    let (device, device_token) = parapet_gateway::accounts::devices::pair(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &code,
        "bench",
        "bench",
        now,
    )
    .await
    .unwrap();
    let recovery = parapet_mpc::recovery::RecoverySecret::generate()
        .derive(&user.to_string())
        .unwrap();
    parapet_gateway::accounts::recovery::enrol(
        &parapet_gateway::cosign::Cosigner::of(&s),
        &device,
        recovery.public_key(),
        zeroize::Zeroizing::new(*recovery.auth_key()),
        None,
        &[],
        "bench",
        now,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = app(s.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    (
        Setup {
            base,
            api_key,
            session,
            device_token,
            user: user.to_string(),
            recovery,
            _data: data,
        },
        s,
    )
}

fn sign_over_loopback(
    rt: &tokio::runtime::Runtime,
    s: &Setup,
    wallet: &KeyShare,
    n: u64,
) -> parapet_mpc::RecoverableSignature {
    let address = format!("0x{}", hex::encode(wallet.address()));
    let mut res = ureq::post(&format!("{}/v1/wallets/{address}/sign", s.base))
        .header("authorization", &format!("Bearer {}", s.api_key))
        .header("parapet-session", &s.session)
        .header("idempotency-key", &format!("bench-{n}"))
        .send_json(serde_json::json!({"chain_id": 1, "message": format!("bench {n}")}))
        .unwrap();
    let body: serde_json::Value = res.body_mut().read_json().unwrap();
    let id = body["id"].as_str().unwrap();
    let digest = parapet_mpc::wire::bytes32(body["digest"].as_str().unwrap()).unwrap();
    rt.block_on(client::sign(&s.base, &s.device_token, id, &digest, wallet))
        .unwrap()
        .1
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (s, _state) = rt.block_on(setup());

    let mut g = c.benchmark_group("cosign");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.bench_function("keygen over loopback (device + gateway)", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(client::keygen(
                    &s.base,
                    &s.device_token,
                    s.target(),
                    |_, _| Ok(()),
                ))
                .unwrap(),
            )
        })
    });
    g.bench_function("keygen in process (both parties)", |b| {
        b.iter(|| {
            let id = SessionId::random();
            black_box(run_locally(
                Dkls23.keygen(Role::Device, id).unwrap(),
                Dkls23.keygen(Role::Gateway, id).unwrap(),
            ))
        })
    });
    g.finish();

    // Several wallets, so that the shipped burst limit (600 requests per wallet per hour) never
    // decides a benchmark request.
    let wallets: Vec<KeyShare> = (0..8)
        .map(|_| {
            rt.block_on(client::keygen(
                &s.base,
                &s.device_token,
                s.target(),
                |_, _| Ok(()),
            ))
            .unwrap()
        })
        .collect();
    let (device_share, gateway_share) = {
        let id = SessionId::random();
        run_locally(
            Dkls23.keygen(Role::Device, id).unwrap(),
            Dkls23.keygen(Role::Gateway, id).unwrap(),
        )
        .unwrap()
    };
    let counter = AtomicU64::new(0);
    let mut g = c.benchmark_group("sign");
    g.sample_size(30).measurement_time(Duration::from_secs(10));
    g.bench_function("over loopback: request to released signature", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let wallet = &wallets[(n % wallets.len() as u64) as usize];
            black_box(sign_over_loopback(&rt, &s, wallet, n))
        })
    });
    g.bench_function("in process (both parties)", |b| {
        b.iter(|| {
            let id = SessionId::random();
            let digest = [9u8; 32];
            black_box(run_locally(
                Dkls23
                    .sign(Role::Device, id, &device_share, digest)
                    .unwrap(),
                Dkls23
                    .sign(Role::Gateway, id, &gateway_share, digest)
                    .unwrap(),
            ))
        })
    });
    let key = k256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    g.bench_function("k256 single party (floor)", |b| {
        b.iter(|| black_box(key.sign_prehash_recoverable(&[9u8; 32]).unwrap()))
    });
    g.finish();

    // The passphrase KDF the device pays to open its file (Argon2id 64 MiB, t = 3) before any
    // ceremony; kept apart from the ceremony figures above.
    let mut secrets = parapet_device::file::DeviceSecrets::default();
    secrets.shares.insert(
        format!("0x{}", hex::encode(device_share.address())),
        hex::encode(device_share.to_bytes().as_slice()),
    );
    let sealed = parapet_device::file::seal(&secrets, "a long passphrase").unwrap();
    let mut g = c.benchmark_group("device file");
    g.sample_size(10);
    g.bench_function("open (Argon2id + AES-GCM)", |b| {
        b.iter(|| black_box(parapet_device::file::open(&sealed, "a long passphrase").unwrap()))
    });
    g.finish();

    // 100 ceremonies at once on 100 different wallets.
    let many: Vec<KeyShare> = (0..100)
        .map(|_| {
            rt.block_on(client::keygen(
                &s.base,
                &s.device_token,
                s.target(),
                |_, _| Ok(()),
            ))
            .unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let base = n_concurrent(&rt, &s, many);
    println!(
        "100 concurrent ceremonies on 100 wallets: all verified in {:.2} s ({:.1} signatures/s)",
        started.elapsed().as_secs_f64(),
        base
    );
}

/// Signs once with every wallet, all at the same time; checks each signature recovers to its
/// own wallet. Returns signatures per second.
fn n_concurrent(rt: &tokio::runtime::Runtime, s: &Setup, wallets: Vec<KeyShare>) -> f64 {
    let started = std::time::Instant::now();
    let n = wallets.len();
    let threads: Vec<_> = wallets
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let (base, key, session, token) = (
                s.base.clone(),
                s.api_key.clone(),
                s.session.clone(),
                s.device_token.clone(),
            );
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let address = format!("0x{}", hex::encode(w.address()));
                let mut res = ureq::post(&format!("{base}/v1/wallets/{address}/sign"))
                    .header("authorization", &format!("Bearer {key}"))
                    .header("parapet-session", &session)
                    .header("idempotency-key", &format!("many-{i}"))
                    .send_json(serde_json::json!({"chain_id": 1, "message": format!("many {i}")}))
                    .unwrap();
                let body: serde_json::Value = res.body_mut().read_json().unwrap();
                let id = body["id"].as_str().unwrap().to_owned();
                let expected =
                    parapet_mpc::wire::bytes32(body["digest"].as_str().unwrap()).unwrap();
                let (digest, sig) = handle
                    .block_on(client::sign(&base, &token, &id, &expected, &w))
                    .unwrap();
                parapet_mpc::verify_signature(w.public_key(), w.address(), &digest, &sig).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

criterion_group!(benches, bench);
criterion_main!(benches);
