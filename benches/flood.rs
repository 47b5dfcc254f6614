//! Load driver for the flood defences (issue 8, item 4): the per-IP limiter before
//! authentication, the per-app limiter, bounded keyed state and the aggregated audit of refusals,
//! measured against the real release binary over loopback.
//!
//! ```text
//! cargo build --release --bin parapet && cargo bench --bench flood
//! ```
//!
//! It builds nothing itself: it runs `target/release/parapet` (or `$PARAPET_BIN`), one fresh
//! server per phase, each in a temporary directory with its own data dir, on a free loopback port,
//! with the repository's `policies` and `schemas`. Apps are created with `parapet apps create`
//! under the same environment. Requests are raw HTTP/1.1 over sockets bound to distinct loopback
//! source addresses (`127.x.y.z`), which is how many client IPs are simulated on one host.
//!
//! Phases:
//! - **a** — 100,000 source IPs, each sending one `/v1/authorize` with its own
//!   random unknown key (401): resident memory before, right after and 12 s later (the limiter
//!   sweeps every 5 s), throughput, and what the aggregated `limited` audit events cost once the
//!   server flushed them on SIGTERM.
//! - **b** — `PARAPET_IP_RATE=200/s`, one source IP as fast as 16 keep-alive connections go for
//!   5 s: allowed rate vs 429s, and whether every 429 carries `Retry-After`.
//! - **c** — app `flood` (`--rate 100/s`) hammered from 64 source IPs for 10 s while app `steady`
//!   sends 50 requests/s from its own IP: `flood`'s allowed rate, and `steady`'s latency during
//!   the flood against a quiet 10 s baseline.
//!
//! Knobs: `FLOOD_IPS` (phase a's source IPs, default 100,000), `FLOOD_PHASES` (default `abc`).
//!
//! Every request body is `tests/fixtures/good/erc20-transfer-usdc-small.json` with a random
//! wallet address, so the per-wallet limit never interferes. The machine running this is also
//! the machine running the server: client and server share the cores.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "load driver")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The wallet address in the fixture, replaced by a random one in every request.
const FIXTURE_WALLET: &str = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23";
/// Source address blocks, one per role, far from the server's 127.0.0.1.
const BASE_MANY_IPS: u32 = 0x7f01_0000; // 127.1.0.0 …
const ONE_IP: u32 = 0x7f20_0001; // 127.32.0.1
const BASE_FLOOD_APP: u32 = 0x7f30_0001; // 127.48.0.1 …
const STEADY_IP: u32 = 0x7f40_0001; // 127.64.0.1

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flood: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("PARAPET_BIN")
        .map_or_else(|| root.join("target/release/parapet"), PathBuf::from);
    if !bin.is_file() {
        bail!(
            "{} not found: run `cargo build --release --bin parapet` first (this load driver \
             measures the release binary and builds nothing itself)",
            bin.display()
        );
    }
    let template =
        std::fs::read_to_string(root.join("tests/fixtures/good/erc20-transfer-usdc-small.json"))
            .context("reading the request fixture")?;
    if !template.contains(FIXTURE_WALLET) {
        bail!("the fixture no longer holds wallet {FIXTURE_WALLET}");
    }
    let ips = env_u64("FLOOD_IPS", 100_000)?;
    let rt = tokio::runtime::Runtime::new()?;
    let modified = std::fs::metadata(&bin)?
        .modified()?
        .duration_since(UNIX_EPOCH)?
        .as_secs();
    println!(
        "binary: {} (modified {}s ago)",
        bin.display(),
        unix_now().saturating_sub(modified)
    );

    let phases = std::env::var("FLOOD_PHASES").unwrap_or_else(|_| "abc".to_owned());
    let mut summary = Vec::new();
    if phases.contains('a') {
        summary.push(phase_many_ips(&rt, &bin, &template, ips)?);
    }
    if phases.contains('b') {
        summary.push(phase_one_ip(&rt, &bin, &template)?);
    }
    if phases.contains('c') {
        summary.push(phase_app_rate(&rt, &bin, &template)?);
    }
    println!("\n== summary");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Phase a: many IPs, unknown keys.

fn phase_many_ips(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    template: &str,
    n: u64,
) -> Result<String> {
    const CONCURRENCY: u64 = 64;
    println!("\n== a. {n} source IPs, one unknown key each, {CONCURRENCY} in flight");
    let mut server = Server::start(bin, &[])?;
    let pid = server.pid();
    let rss_before = rss_kib(pid)?;
    let db_before = server.db_bytes();
    let port = server.port;
    let template = Arc::new(template.to_owned());
    let (tally, elapsed, rss_peak) = rt.block_on(async {
        let peak = Arc::new(AtomicU64::new(rss_before));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut workers = Vec::new();
        for w in 0..CONCURRENCY {
            let (next, template) = (next.clone(), template.clone());
            workers.push(tokio::spawn(async move {
                let mut rng = Rng::seeded(w);
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let src = Ipv4Addr::from(BASE_MANY_IPS + u32::try_from(i).unwrap());
                    let key = format!("pk_{}", rng.hex(32));
                    let req = authorize(port, &key, &body(&template, &mut rng), true);
                    let sent = async {
                        let mut conn = Conn::open(src, port).await?;
                        conn.send(&req).await
                    };
                    tally.record(sent.await, start.elapsed());
                }
                tally
            }));
        }
        let mut tally = Tally::default();
        for w in workers {
            tally.merge(w.await.unwrap());
        }
        let elapsed = start.elapsed();
        sampler.abort();
        (tally, elapsed, peak.load(Ordering::Relaxed))
    });
    let rss_after = rss_kib(pid)?;
    std::thread::sleep(Duration::from_secs(12));
    let rss_later = rss_kib(pid)?;
    let db_running = server.db_bytes();
    server.stop()?;
    let db_after = server.db_bytes();
    let limited = server.limited_events()?;

    let sent = tally.total();
    let rate = per_sec(sent, elapsed);
    println!(
        "{:<44}{:>14}",
        "requests (distinct IPs and keys)",
        thousands(sent)
    );
    println!(
        "{:<44}{:>14}",
        "elapsed",
        format!("{:.1} s", elapsed.as_secs_f64())
    );
    println!("{:<44}{:>14}", "throughput", format!("{rate:.0}/s"));
    println!("{:<44}{:>14}", "status counts", tally.statuses());
    if tally.errors > 0 {
        println!(
            "{:<44}{:>14}  (first: {})",
            "transport errors",
            tally.errors,
            tally.first_error.as_deref().unwrap_or("")
        );
    }
    println!("{:<44}{:>14}", "VmRSS before", mib(rss_before));
    println!(
        "{:<44}{:>14}",
        "VmRSS peak during (sampled every 200 ms)",
        mib(rss_peak)
    );
    println!("{:<44}{:>14}", "VmRSS right after", mib(rss_after));
    println!("{:<44}{:>14}", "VmRSS 12 s after", mib(rss_later));
    println!(
        "{:<44}{:>14}",
        "audit DB + WAL growth, still running",
        mib_delta(db_running, db_before)
    );
    println!(
        "{:<44}{:>14}",
        "audit DB + WAL growth, after SIGTERM flush",
        mib_delta(db_after, db_before)
    );
    println!(
        "{:<44}{:>14}",
        "server log (PARAPET_LOG=warn)",
        format!("{} lines", server.log_lines())
    );
    for line in server.log_tail().lines().skip(1) {
        println!("  server log: {line}");
    }
    println!(
        "{:<44}{:>14}",
        "`limited` events",
        thousands(limited.events)
    );
    println!(
        "{:<44}{:>14}",
        "  of which *overflow* buckets", limited.overflow_events
    );
    for (reason, count) in &limited.counts {
        println!(
            "{:<44}{:>14}",
            format!("  refusals counted, reason {reason}"),
            thousands(*count)
        );
    }
    Ok(format!(
        "a. {} distinct source IPs × 1 random unknown key: {} at {rate:.0}/s; VmRSS {} before, \
         {} peak, {} right after, {} 12 s later; audit +{} for {} `limited` events ({} of them \
         overflow buckets) counting {} refusals",
        thousands(n),
        tally.statuses(),
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
        mib(rss_later),
        mib_delta(db_after, db_before),
        thousands(limited.events),
        limited.overflow_events,
        thousands(limited.counts.values().sum()),
    ))
}

// ---------------------------------------------------------------------------------------------
// Phase b: one IP above its limit.

fn phase_one_ip(rt: &tokio::runtime::Runtime, bin: &Path, template: &str) -> Result<String> {
    const CONNECTIONS: u64 = 16;
    const SECS: u64 = 5;
    println!(
        "\n== b. PARAPET_IP_RATE=200/s, one source IP, {CONNECTIONS} keep-alive connections, {SECS} s"
    );
    let mut server = Server::start(bin, &[("PARAPET_IP_RATE", "200/s")])?;
    let (_, key) = server.create_app("one-ip", None)?;
    let src = Ipv4Addr::from(ONE_IP);
    let tally = rt.block_on(hammer(
        server.port,
        key,
        template.to_owned(),
        (0..CONNECTIONS).map(|_| src).collect(),
        Duration::from_secs(SECS),
    ));
    server.stop()?;
    let allowed = tally.count(200);
    let refused = tally.count(429);
    let after_burst = tally
        .allowed_at
        .iter()
        .filter(|t| **t >= Duration::from_secs(1))
        .count() as u64;
    let steady_rate = per_sec(after_burst, Duration::from_secs(SECS - 1));
    let with_retry = refused - tally.retry_after_missing;
    println!("{:<44}{:>14}", "requests", thousands(tally.total()));
    println!("{:<44}{:>14}", "status counts", tally.statuses());
    println!("{:<44}{:>14}", "429 by limiter", tally.limiters());
    println!(
        "{:<44}{:>14}",
        "allowed over the run",
        format!("{:.0}/s", per_sec(allowed, Duration::from_secs(SECS)))
    );
    println!(
        "{:<44}{:>14}",
        "allowed after the first second",
        format!("{steady_rate:.0}/s")
    );
    println!(
        "{:<44}{:>14}",
        "429s carrying Retry-After",
        format!("{with_retry}/{refused}")
    );
    println!("{:<44}{:>14}", "Retry-After values", tally.retry_afters());
    if tally.errors > 0 {
        println!("{:<44}{:>14}", "transport errors", tally.errors);
    }
    Ok(format!(
        "b. one IP at 200/s (burst 200), {CONNECTIONS} connections for {SECS} s: {} requests, {} \
         allowed ({:.0}/s over the run, {steady_rate:.0}/s after the first second), {} × 429 \
         ({}), {with_retry}/{refused} with Retry-After ({})",
        thousands(tally.total()),
        thousands(allowed),
        per_sec(allowed, Duration::from_secs(SECS)),
        thousands(refused),
        tally.limiters(),
        tally.retry_afters(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Phase c: one app above its rate while another keeps its latency.

fn phase_app_rate(rt: &tokio::runtime::Runtime, bin: &Path, template: &str) -> Result<String> {
    const SOURCES: u32 = 64;
    const SECS: u64 = 10;
    println!(
        "\n== c. app `flood` at --rate 100/s from {SOURCES} IPs vs app `steady` at 50 req/s, {SECS} s each"
    );
    let mut server = Server::start(bin, &[])?;
    let (_, flood_key) = server.create_app("flood", Some("100/s"))?;
    let (_, steady_key) = server.create_app("steady", None)?;
    let port = server.port;
    let window = Duration::from_secs(SECS);
    // Warm the steady app's key cache and connection path.
    let _ = steady_in_thread(port, &steady_key, template, Duration::from_secs(1)).join();
    let quiet = steady_in_thread(port, &steady_key, template, window)
        .join()
        .map_err(|_| anyhow!("steady client panicked"))?;
    let during = steady_in_thread(port, &steady_key, template, window);
    let flood = rt.block_on(hammer(
        port,
        flood_key,
        template.to_owned(),
        (0..SOURCES)
            .map(|i| Ipv4Addr::from(BASE_FLOOD_APP + i))
            .collect(),
        window,
    ));
    let during = during
        .join()
        .map_err(|_| anyhow!("steady client panicked"))?;
    server.stop()?;

    let allowed = flood.count(200);
    let after_burst = flood
        .allowed_at
        .iter()
        .filter(|t| **t >= Duration::from_secs(1))
        .count() as u64;
    let steady_rate = per_sec(after_burst, window - Duration::from_secs(1));
    println!(
        "flood: {} requests ({:.0}/s), {}, 429 by limiter {}",
        thousands(flood.total()),
        per_sec(flood.total(), window),
        flood.statuses(),
        flood.limiters()
    );
    println!(
        "flood: allowed {:.0}/s over the run, {steady_rate:.0}/s after the first second",
        per_sec(allowed, window)
    );
    if flood.errors > 0 {
        println!("flood: transport errors {}", flood.errors);
    }
    let (q, d) = (quiet.percentiles(), during.percentiles());
    println!(
        "{:<30}{:>10}{:>10}{:>10}{:>10}  statuses",
        "steady latency (ms)", "p50", "p90", "p99", "max"
    );
    for (label, p, t) in [("quiet", q, &quiet), ("during flood", d, &during)] {
        println!(
            "{:<30}{:>10.2}{:>10.2}{:>10.2}{:>10.2}  {}",
            label,
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.max),
            t.statuses()
        );
    }
    let ratio = |f: fn(&Percentiles) -> Duration| ms(f(&d)) / ms(f(&q)).max(f64::EPSILON);
    let r = [
        ratio(|p| p.p50),
        ratio(|p| p.p90),
        ratio(|p| p.p99),
        ratio(|p| p.max),
    ];
    let [r50, r90, r99, rmax] = r;
    println!(
        "{:<30}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
        "ratio", r50, r90, r99, rmax
    );
    Ok(format!(
        "c. app at --rate 100/s hammered from {SOURCES} IPs for {SECS} s: {} requests ({:.0}/s), \
         {} allowed = {:.0}/s ({steady_rate:.0}/s after the first second), {} × 429 ({}); \
         steady app at 50/s: p50/p90/p99 {:.2}/{:.2}/{:.2} ms quiet, {:.2}/{:.2}/{:.2} ms during \
         the flood (×{r50:.1}/×{r90:.1}/×{r99:.1}), statuses {}",
        thousands(flood.total()),
        per_sec(flood.total(), window),
        thousands(allowed),
        per_sec(allowed, window),
        thousands(flood.count(429)),
        flood.limiters(),
        ms(q.p50),
        ms(q.p90),
        ms(q.p99),
        ms(d.p50),
        ms(d.p90),
        ms(d.p99),
        during.statuses(),
    ))
}

/// Sends `/v1/authorize` as fast as one keep-alive connection per entry of `sources` goes, for
/// `window`; a connection the server closes is reopened from the same source.
async fn hammer(
    port: u16,
    key: String,
    template: String,
    sources: Vec<Ipv4Addr>,
    window: Duration,
) -> Tally {
    let (key, template) = (Arc::new(key), Arc::new(template));
    let start = Instant::now();
    let mut workers = Vec::new();
    for (w, src) in sources.into_iter().enumerate() {
        let (key, template) = (key.clone(), template.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::seeded(w as u64 + 1_000);
            let mut tally = Tally::default();
            let mut conn: Option<Conn> = None;
            while start.elapsed() < window {
                if conn.is_none() {
                    match Conn::open(src, port).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tally.record(Err(e), start.elapsed());
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let req = authorize(port, &key, &body(&template, &mut rng), false);
                let res = c.send(&req).await;
                if res.as_ref().map_or(true, |r| r.close) {
                    conn = None;
                }
                tally.record(res, start.elapsed());
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.unwrap());
    }
    tally
}

/// The well-behaved app: 50 requests/s on one keep-alive connection from its own IP, on a
/// thread and runtime of its own so that the flood's client tasks do not delay its clock.
fn steady_in_thread(
    port: u16,
    key: &str,
    template: &str,
    window: Duration,
) -> std::thread::JoinHandle<Tally> {
    let (key, template) = (key.to_owned(), template.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut rng = Rng::seeded(7);
            let mut tally = Tally::default();
            let src = Ipv4Addr::from(STEADY_IP);
            let mut conn: Option<Conn> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let start = Instant::now();
            while start.elapsed() < window {
                tick.tick().await;
                let req = authorize(port, &key, &body(&template, &mut rng), false);
                let t0 = Instant::now();
                let res = async {
                    if conn.is_none() {
                        conn = Some(Conn::open(src, port).await?);
                    }
                    conn.as_mut().unwrap().send(&req).await
                }
                .await;
                if res.as_ref().map_or(true, |r| r.close) {
                    conn = None;
                }
                let latency = t0.elapsed();
                tally.latencies.push(latency);
                tally.record(res, start.elapsed());
            }
            tally
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The server under test.

struct Server {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Server {
    fn start(bin: &Path, extra: &[(&str, &str)]) -> Result<Server> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut env: Vec<(String, String)> = [
            ("PARAPET_DATA_DIR", dir.path().join("data")),
            ("PARAPET_POLICIES_DIR", root.join("policies")),
            ("PARAPET_SCHEMAS_DIR", root.join("schemas")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .collect();
        env.push(("PARAPET_LISTEN".into(), format!("127.0.0.1:{port}")));
        env.push(("PARAPET_LOG".into(), "warn".into()));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut server = Server {
            bin: bin.to_owned(),
            dir,
            port,
            env,
            child: None,
        };
        let log = std::fs::File::create(server.dir.path().join("server.log"))?;
        server.child = Some(
            server
                .command()
                .arg("serve")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting the server")?,
        );
        server.wait_healthy()?;
        Ok(server)
    }

    /// The binary with this server's environment and nothing of the caller's `PARAPET_*`.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(self.dir.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PARAPET_") {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(20)..)
            .unwrap_or_default()
            .join("\n")
    }

    fn log_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("server.log")).map_or(0, |l| l.lines().count())
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the server exited ({status}):\n{}", self.log_tail());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(
                    s,
                    "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                );
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("no /healthz within 20 s:\n{}", self.log_tail())
    }

    /// `parapet apps create … --json` → (app id, API key).
    fn create_app(&self, name: &str, rate: Option<&str>) -> Result<(String, String)> {
        let mut c = self.command();
        c.args([
            "apps", "create", "--name", name, "--grants", "sign", "--json",
        ]);
        if let Some(rate) = rate {
            c.args(["--rate", rate]);
        }
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "apps create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("apps create printed no {k}"))
        };
        Ok((field("app_id")?, field("api_key")?))
    }

    /// SIGTERM (the server flushes its aggregated refusals on the way out), then waits.
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("server exited with {status}:\n{}", self.log_tail());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("the server did not stop within 30 s of SIGTERM")
    }

    /// The SQLite file and its WAL.
    fn db_bytes(&self) -> u64 {
        ["parapet.db", "parapet.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.path().join("data").join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Reads every `limited` event back with `parapet audit export --kind limited`.
    fn limited_events(&self) -> Result<Limited> {
        let out = self
            .command()
            .args(["audit", "export", "--kind", "limited"])
            .output()?;
        if !out.status.success() {
            bail!("audit export: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut limited = Limited::default();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let row: serde_json::Value = serde_json::from_str(line)?;
            let canonical = row
                .get("canonical")
                .and_then(|c| c.as_str())
                .ok_or_else(|| anyhow!("export line without canonical"))?;
            let event: serde_json::Value = serde_json::from_str(canonical)?;
            let l = event
                .get("limited")
                .ok_or_else(|| anyhow!("limited event without `limited`"))?;
            let reason = l.get("reason").and_then(|r| r.as_str()).unwrap_or("?");
            let count = l
                .get("count")
                .and_then(|c| c.as_str().and_then(|s| s.parse().ok()).or(c.as_u64()))
                .unwrap_or(0);
            limited.events += 1;
            if l.get("key").and_then(|k| k.as_str()) == Some("*overflow*") {
                limited.overflow_events += 1;
            }
            *limited.counts.entry(reason.to_owned()).or_insert(0) += count;
        }
        Ok(limited)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Default)]
struct Limited {
    events: u64,
    overflow_events: u64,
    counts: BTreeMap<String, u64>,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 from a chosen source address.

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
    close: bool,
}

impl Conn {
    async fn open(src: Ipv4Addr, port: u16) -> std::io::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((src, 0)))?;
        let stream = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(16 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    async fn send(&mut self, request: &[u8]) -> std::io::Result<Response> {
        let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if self.fill().await? == 0 {
                return Err(eof());
            }
        };
        let head = String::from_utf8_lossy(self.buf.get(..head_end).unwrap_or_default());
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let (mut length, mut retry_after, mut close) = (None, None, false);
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse::<usize>().ok(),
                    "retry-after" => retry_after = Some(value.to_owned()),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let total = match length {
            Some(n) => head_end + n,
            None => {
                close = true;
                while self.fill().await? > 0 {}
                self.buf.len()
            }
        };
        while self.buf.len() < total {
            if self.fill().await? == 0 {
                return Err(eof());
            }
        }
        let body = self.buf.get(head_end..total).unwrap_or_default().to_vec();
        self.buf.drain(..total);
        Ok(Response {
            status,
            retry_after,
            body,
            close,
        })
    }
}

fn authorize(port: u16, key: &str, body: &str, close: bool) -> Vec<u8> {
    format!(
        "POST /v1/authorize HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// The fixture with a random wallet address, so the per-wallet limit stays out of the way.
fn body(template: &str, rng: &mut Rng) -> String {
    template.replace(FIXTURE_WALLET, &format!("0x{}", rng.hex(20)))
}

// ---------------------------------------------------------------------------------------------
// Counting.

#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    limiters: BTreeMap<String, u64>,
    retry_after: BTreeMap<String, u64>,
    retry_after_missing: u64,
    errors: u64,
    first_error: Option<String>,
    /// When (since the start of the run) each 200 arrived.
    allowed_at: Vec<Duration>,
    /// Per request, for the steady client only.
    latencies: Vec<Duration>,
}

impl Tally {
    fn record(&mut self, res: std::io::Result<Response>, at: Duration) {
        let r = match res {
            Ok(r) => r,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
                return;
            }
        };
        *self.statuses.entry(r.status).or_insert(0) += 1;
        if r.status == 200 {
            self.allowed_at.push(at);
        }
        if r.status == 429 {
            let body = String::from_utf8_lossy(&r.body);
            let limiter = body
                .split_once("rate limited (")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map_or("?", |(l, _)| l);
            *self.limiters.entry(limiter.to_owned()).or_insert(0) += 1;
            match r.retry_after {
                Some(v) => *self.retry_after.entry(v).or_insert(0) += 1,
                None => self.retry_after_missing += 1,
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.limiters {
            *self.limiters.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.retry_after {
            *self.retry_after.entry(k).or_insert(0) += v;
        }
        self.retry_after_missing += other.retry_after_missing;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.allowed_at.extend(other.allowed_at);
        self.latencies.extend(other.latencies);
    }

    fn total(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors
    }

    fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn statuses(&self) -> String {
        join_counts(self.statuses.iter().map(|(k, v)| (k.to_string(), *v)))
    }

    fn limiters(&self) -> String {
        join_counts(self.limiters.iter().map(|(k, v)| (k.clone(), *v)))
    }

    fn retry_afters(&self) -> String {
        join_counts(self.retry_after.iter().map(|(k, v)| (format!("{k} s"), *v)))
    }

    /// p50, p90, p99 and max of the recorded latencies.
    fn percentiles(&self) -> Percentiles {
        let mut l = self.latencies.clone();
        l.sort();
        let at = |p: f64| {
            let rank = ((p * l.len() as f64).ceil() as usize).saturating_sub(1);
            l.get(rank).copied().unwrap_or_default()
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

fn join_counts(items: impl Iterator<Item = (String, u64)>) -> String {
    let parts: Vec<String> = items
        .map(|(k, v)| format!("{k}: {}", thousands(v)))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// xorshift64*: keys and wallet addresses only need to be distinct, not secret.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng((nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn hex(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes * 2 + 16);
        while s.len() < bytes * 2 {
            let _ = write!(s, "{:016x}", self.next());
        }
        s.truncate(bytes * 2);
        s
    }
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(f64::EPSILON)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Growth in MiB between two byte counts.
fn mib_delta(after: u64, before: u64) -> String {
    let delta = after as f64 - before as f64;
    format!("{:.1} MiB", delta / (1024.0 * 1024.0))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
