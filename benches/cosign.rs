//! The co-signer's speed: key generation and signing over loopback WebSockets (the real
//! gateway service on 127.0.0.1 and the device client), next to the same DKLs23 ceremonies in
//! one process and plain single-party k256 signing as the floor. Signing over loopback runs the
//! whole path: HTTP request → session → decode → Cedar → audit commit with the reservation →
//! WebSocket ceremony (HSM/keystore unwrap of the gateway share included) → verified signature.
//! Run: `cargo bench --bench cosign`; many signatures at once: `benches/signing_load.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark setup"
)]

#[path = "support/signing_rig.rs"]
mod signing_rig;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use parapet_device::client;
use parapet_mpc::{Dkls23, KeyShare, Role, SessionId, ThresholdEcdsa, run_locally};
use signing_rig::{Setup, setup};

fn sign_over_loopback(
    rt: &tokio::runtime::Runtime,
    s: &Setup,
    wallet: &KeyShare,
    n: u64,
) -> parapet_mpc::RecoverableSignature {
    let address = format!("0x{}", hex::encode(wallet.address()));
    let (id, digest) = signing_rig::new_signing_request(
        &s.base,
        &s.api_key,
        &s.session,
        &address,
        &format!("bench-{n}"),
        &format!("bench {n}"),
    );
    rt.block_on(client::sign(&s.base, &s.device_token, &id, &digest, wallet))
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
    let (device_share, gateway_share) = signing_rig::shares_in_process();
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
