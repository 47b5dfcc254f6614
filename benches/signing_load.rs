//! Signing under load: `SIGNERS` (default 200) signing requests at once, on as many wallets, with
//! the device parties in another process (this benchmark started again as a child) and the
//! gateway alone in this one, so that each process's CPU time is its party's.
//!
//! Each of the child's threads creates a signing request over HTTP as the app in the user's
//! session, joins its ceremony over the WebSocket as the device and verifies the signature
//! against its own wallet. Printed: signatures verified, signatures/s, p50/p99 from request to
//! verified signature, the gateway's and the devices' CPU per signature, and the DKLs23
//! single-party cost measured in the same run (a two-party ceremony stepped on one thread in
//! this process, halved), with the gateway's ratio to it.
//!
//! Run: `cargo bench --bench signing_load` (SIGNERS=…; key generation for the wallets comes
//! first and takes about a second each, on two threads).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "benchmark"
)]

#[path = "support/signing_rig.rs"]
mod signing_rig;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parapet_device::client;
use parapet_mpc::{Dkls23, KeyShare, Role, SessionId, ThresholdEcdsa, run_locally};
use serde::{Deserialize, Serialize};

/// Names the job file when this process is the devices' side.
const JOB_ENV: &str = "PARAPET_SIGNING_LOAD_JOB";

/// What the devices' process is given: where the gateway is, its credentials, and one device
/// share per wallet (hex).
#[derive(Serialize, Deserialize)]
struct Job {
    base: String,
    api_key: String,
    session: String,
    device_token: String,
    shares: Vec<String>,
}

/// What the devices' process reports.
#[derive(Serialize, Deserialize)]
struct Outcome {
    verified: usize,
    /// Request to verified signature, per wallet.
    latencies_ms: Vec<f64>,
    wall_s: f64,
    cpu_s: f64,
}

/// The user + system CPU time this process has used (`/proc/self/stat`, in USER_HZ = 100 ticks).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file; the slice starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    match std::env::var(JOB_ENV) {
        Ok(path) => devices(&path),
        Err(_) => gateway(),
    }
}

/// The devices' side: waits for the go, then signs with every share at once.
fn devices(job_path: &str) {
    let job: Job = serde_json::from_slice(&std::fs::read(job_path).unwrap()).unwrap();
    let shares: Vec<KeyShare> = job
        .shares
        .iter()
        .map(|h| KeyShare::from_bytes(&hex::decode(h).unwrap()).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();

    let cpu_before = own_cpu();
    let started = Instant::now();
    let threads: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| {
            let job = (
                job.base.clone(),
                job.api_key.clone(),
                job.session.clone(),
                job.device_token.clone(),
            );
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let (base, api_key, session, device_token) = job;
                let t0 = Instant::now();
                let address = format!("0x{}", hex::encode(share.address()));
                let (id, expected) = signing_rig::new_signing_request(
                    &base,
                    &api_key,
                    &session,
                    &address,
                    &format!("load-{i}"),
                    &format!("load {i}"),
                );
                let (digest, sig) = handle
                    .block_on(client::sign(&base, &device_token, &id, &expected, &share))
                    .unwrap();
                parapet_mpc::verify_signature(share.public_key(), share.address(), &digest, &sig)
                    .unwrap();
                t0.elapsed().as_secs_f64() * 1e3
            })
        })
        .collect();
    let latencies_ms: Vec<f64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let outcome = Outcome {
        verified: latencies_ms.len(),
        latencies_ms,
        wall_s: started.elapsed().as_secs_f64(),
        cpu_s: (own_cpu() - cpu_before).as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&outcome).unwrap());
}

/// The gateway's side: sets up, measures the single-party cost, starts the devices' process
/// and measures its own CPU while they sign.
fn gateway() {
    let signers: usize = std::env::var("SIGNERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (s, _state) = rt.block_on(signing_rig::setup());

    // The single-party cost: a two-party signing ceremony stepped on this thread, halved.
    let (device_share, gateway_share) = signing_rig::shares_in_process();
    let rounds = 40;
    let cpu_before = own_cpu();
    for _ in 0..rounds {
        let id = SessionId::random();
        let digest = rand_core::RngCore::next_u64(&mut rand_core::OsRng).to_be_bytes();
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&digest);
        run_locally(
            Dkls23.sign(Role::Device, id, &device_share, d).unwrap(),
            Dkls23.sign(Role::Gateway, id, &gateway_share, d).unwrap(),
        )
        .unwrap();
    }
    let single_party_ms = (own_cpu() - cpu_before).as_secs_f64() * 1e3 / f64::from(rounds) / 2.0;

    // The wallets, generated over loopback like any device's (two at a time).
    let started = Instant::now();
    let per_thread = signers.div_ceil(2);
    let shares: Vec<KeyShare> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (s, handle) = (&s, rt.handle());
                scope.spawn(move || {
                    let n = per_thread.min(signers.saturating_sub(w * per_thread));
                    (0..n)
                        .map(|_| {
                            handle
                                .block_on(client::keygen(
                                    &s.base,
                                    &s.device_token,
                                    s.target(),
                                    |_, _| Ok(()),
                                ))
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    println!(
        "{} wallets generated in {:.1} s",
        shares.len(),
        started.elapsed().as_secs_f64()
    );

    // The devices' process.
    let scratch = tempfile::tempdir().unwrap();
    let job_path = scratch.path().join("job.json");
    let job = Job {
        base: s.base.clone(),
        api_key: s.api_key.clone(),
        session: s.session.clone(),
        device_token: s.device_token.clone(),
        shares: shares
            .iter()
            .map(|k| hex::encode(k.to_bytes().as_slice()))
            .collect(),
    };
    std::fs::write(&job_path, serde_json::to_vec(&job).unwrap()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(JOB_ENV, &job_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the devices' process did not start");
    let cpu_before = own_cpu();
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let gateway_cpu = own_cpu() - cpu_before;
    assert!(
        child.wait().unwrap().success(),
        "the devices' process failed"
    );
    let outcome: Outcome = serde_json::from_str(line.trim()).unwrap();

    let mut lat = outcome.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let n = outcome.verified as f64;
    let gateway_ms = gateway_cpu.as_secs_f64() * 1e3 / n;
    println!(
        "{} concurrent signing requests on {} wallets, devices in another process: {}/{} signatures verified",
        signers,
        shares.len(),
        outcome.verified,
        signers
    );
    println!(
        "  {:.1} signatures/s ({:.2} s), request to verified signature p50 {:.0} ms, p99 {:.0} ms",
        n / outcome.wall_s,
        outcome.wall_s,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "  CPU per signature: gateway {gateway_ms:.2} ms, devices {:.2} ms; DKLs23 single party (same run) {single_party_ms:.2} ms",
        outcome.cpu_s * 1e3 / n
    );
    println!(
        "  gateway / single party: {:.2} (target ≤ 1.3)",
        gateway_ms / single_party_ms
    );
}
