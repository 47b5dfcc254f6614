//! Idle-socket load against a running gateway: `/healthz` latency before and while 20,000 idle
//! connections are held open.
//!
//! ```text
//! parapet serve &                       # on 127.0.0.1:8080, or set PARAPET_BENCH_ADDR
//! cargo bench --bench idle_sockets
//! ```
//!
//! The sockets come from many loopback source addresses (127.1.x.y), 100 each, as many distinct
//! clients would. `/healthz` is probed from 127.0.0.1 before, right after opening them, and
//! again 12 s later with them all still held. Everything is bounded: the number of sockets (`PARAPET_BENCH_SOCKETS`,
//! default 20,000), each connect (2 s), each probe (5 s) and the whole run. Loopback only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "bench"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PER_SOURCE: usize = 100;
const PROBES: usize = 200;

async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    match tokio::time::timeout(Duration::from_secs(2), socket.connect(to)).await {
        Ok(c) => c,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn healthz(to: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let work = async {
        let mut c = connect_from([127, 0, 0, 1], to).await.ok()?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.ok()?;
        out.starts_with(b"HTTP/1.1 200").then(|| started.elapsed())
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()
        .flatten()
}

async fn probe(to: SocketAddr, label: &str) {
    let mut took = Vec::new();
    let mut failed = 0;
    for _ in 0..PROBES {
        match healthz(to).await {
            Some(d) => took.push(d),
            None => failed += 1,
        }
        // A server that does not answer at all: ten failures in a row say enough.
        if took.is_empty() && failed >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    took.sort();
    let at = |q: f64| {
        took.get(((took.len() as f64 - 1.0) * q).round() as usize)
            .map_or("-".to_owned(), |d| {
                format!("{:.2} ms", d.as_secs_f64() * 1e3)
            })
    };
    println!(
        "{label}: /healthz median {}, p99 {}, max {}, failed {failed}/{}",
        at(0.5),
        at(0.99),
        at(1.0),
        took.len() + failed
    );
}

/// Raises this process's open-files limit: the hard one too when allowed (root), else the soft
/// one to the hard one.
fn raise_limit(wanted: u64) -> u64 {
    use rlimit::Resource;
    if Resource::NOFILE.set(wanted, wanted).is_err() {
        let _ = rlimit::increase_nofile_limit(wanted);
    }
    Resource::NOFILE.get().map_or(0, |(soft, _)| soft)
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
    let sockets: usize = std::env::var("PARAPET_BENCH_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
        .min(60_000);
    let limit = raise_limit(sockets as u64 + 1024);
    let sockets = sockets.min(usize::try_from(limit).unwrap_or(0).saturating_sub(200));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if healthz(to).await.is_none() {
            eprintln!("no gateway answers /healthz on {to}: start `parapet serve` first");
            std::process::exit(2);
        }
        probe(to, "before").await;
        let started = Instant::now();
        let mut held = Vec::with_capacity(sockets);
        let mut failed = 0usize;
        // In batches of concurrent connects, so that a server that stopped accepting costs one
        // connect timeout per batch, not per socket.
        for batch in (0..sockets).collect::<Vec<_>>().chunks(1000) {
            let mut connects = tokio::task::JoinSet::new();
            for &i in batch {
                let n = i / PER_SOURCE;
                let from = [
                    127,
                    1,
                    u8::try_from(n / 250).unwrap(),
                    u8::try_from(1 + n % 250).unwrap(),
                ];
                connects.spawn(connect_from(from, to));
            }
            while let Some(joined) = connects.join_next().await {
                match joined.unwrap() {
                    Ok(c) => held.push(c),
                    Err(_) => failed += 1,
                }
            }
        }
        // Give the server a moment to refuse what is over its caps, then count what it keeps.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut buf = [0u8; 16];
        let open = held
            .iter()
            .filter(|c| matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
            .count();
        println!(
            "opened {} of {sockets} sockets in {:.1} s ({failed} failed to connect); {open} still open after 1 s (the rest closed by the server)",
            held.len(),
            started.elapsed().as_secs_f64()
        );
        probe(to, "while held").await;
        // Sockets that never send a byte are closed after the header-read timeout (10 s by
        // default): the server is itself again without the client letting go.
        tokio::time::sleep_until((started + Duration::from_secs(12)).into()).await;
        let open = held
            .iter()
            .filter(|c| matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
            .count();
        println!("{open} still open 12 s after the first was opened");
        probe(to, "12 s later, still held").await;
        drop(held);
    });
}
