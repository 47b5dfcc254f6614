//! `/healthz` while clients send the costliest typed data the decoder admits, against a running
//! gateway. The target: p99 ≤ 50 ms with 8 such clients.
//!
//! ```text
//! PARAPET_API_TOKEN=bench-token PARAPET_IP_RATE=100000/s PARAPET_APP_RATE=100000/s \
//!   PARAPET_WALLET_RATE=100000/s target/release/parapet serve &
//! cargo bench --bench hostile_typed_data
//! ```
//!
//! Rate limits are raised so that every hostile request reaches the decoder (with the defaults
//! most are refused before it, which is cheaper still). The run prints the floor first — `/healthz`
//! with nothing else running, in the same run — then the same probe while `PARAPET_BENCH_CLIENTS`
//! (default 8) keep-alive clients send `/v1/authorize` with each shape of
//! [`parapet_gateway::decode::costliest_typed_data`] in turn, for `PARAPET_BENCH_SECS` (default
//! 10) seconds, and the ratio of the two. Loopback only; the token comes from
//! `PARAPET_BENCH_TOKEN` (default `bench-token`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "bench"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One HTTP/1.1 exchange on `stream`: the status and the body's length.
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(u16, usize)> {
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok((status, length))
}

fn healthz(to: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let (status, _) = exchange(
        &mut reader,
        b"GET /healthz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n",
    )
    .ok()?;
    (status == 200).then(|| started.elapsed())
}

/// `/healthz` every 5 ms until `stop`: sorted latencies and the count of failures.
fn probe(to: SocketAddr, stop: &AtomicBool, at_most: Duration) -> (Vec<Duration>, usize) {
    let (mut took, mut failed) = (Vec::new(), 0);
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < at_most {
        match healthz(to) {
            Some(d) => took.push(d),
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    took.sort();
    (took, failed)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let to: SocketAddr = std::env::var("PARAPET_BENCH_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()
        .expect("PARAPET_BENCH_ADDR is an address");
    assert!(
        to.ip().is_loopback(),
        "this load runs against loopback only"
    );
    let env = |k: &str, default: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let clients = env("PARAPET_BENCH_CLIENTS", 8);
    let secs = env("PARAPET_BENCH_SECS", 10);
    let token = std::env::var("PARAPET_BENCH_TOKEN").unwrap_or_else(|_| "bench-token".to_owned());
    if healthz(to).is_none() {
        eprintln!(
            "no gateway answers /healthz on {to}: start `parapet serve` first (see the notes)"
        );
        std::process::exit(2);
    }

    let idle = AtomicBool::new(false);
    let (floor, floor_failed) = probe(to, &idle, Duration::from_secs(3));

    // Each shape as a whole request, with its own wallet so that no per-wallet state is shared.
    let requests: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        parapet_gateway::decode::costliest_typed_data()
            .into_iter()
            .enumerate()
            .map(|(i, (shape, typed_data))| {
                let body = serde_json::to_vec(&serde_json::json!({
                    "chain_id": 1,
                    "wallet": {"address": format!("0x{:040x}", 0xbe7c_0000_u64 + i as u64), "labels": []},
                    "typed_data": typed_data,
                }))
                .unwrap();
                let mut request = format!(
                    "POST /v1/authorize HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(&body);
                (shape.to_owned(), request)
            })
            .collect(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..clients)
        .map(|c| {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answers: Vec<(u16, Duration)> = Vec::new();
                let mut reader: Option<BufReader<TcpStream>> = None;
                let mut i = usize::try_from(c).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let (_, request) = &requests[i % requests.len()];
                    i += 1;
                    if reader.is_none() {
                        let Ok(s) = TcpStream::connect(to) else {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        reader = Some(BufReader::new(s));
                    }
                    let started = Instant::now();
                    match exchange(reader.as_mut().unwrap(), request) {
                        Ok((status, _)) => answers.push((status, started.elapsed())),
                        Err(_) => reader = None,
                    }
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (loaded, loaded_failed) = probe(to, &AtomicBool::new(false), Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut answers: Vec<(u16, Duration)> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();

    println!(
        "floor (nothing else running): /healthz median {}, p99 {}, failed {floor_failed}/{}",
        ms(quantile(&floor, 0.5)),
        ms(quantile(&floor, 0.99)),
        floor.len() + floor_failed
    );
    println!(
        "with {clients} clients sending the costliest typed data: /healthz median {}, p99 {}, max {}, failed {loaded_failed}/{}",
        ms(quantile(&loaded, 0.5)),
        ms(quantile(&loaded, 0.99)),
        ms(quantile(&loaded, 1.0)),
        loaded.len() + loaded_failed
    );
    println!(
        "ratio loaded/floor: median {:.1}x, p99 {:.1}x",
        quantile(&loaded, 0.5).as_secs_f64() / quantile(&floor, 0.5).as_secs_f64().max(1e-9),
        quantile(&loaded, 0.99).as_secs_f64() / quantile(&floor, 0.99).as_secs_f64().max(1e-9)
    );
    let mut statuses = std::collections::BTreeMap::new();
    for (status, _) in &answers {
        *statuses.entry(*status).or_insert(0usize) += 1;
    }
    answers.sort_by_key(|(_, d)| *d);
    let took: Vec<Duration> = answers.iter().map(|(_, d)| *d).collect();
    println!(
        "hostile requests: {} in {secs} s ({:.0}/s), statuses {statuses:?}, latency median {}, p99 {}",
        answers.len(),
        answers.len() as f64 / secs as f64,
        ms(quantile(&took, 0.5)),
        ms(quantile(&took, 0.99))
    );
}
