//! Crash safety of the audit log: the real binary serves concurrent decisions and is killed with
//! SIGKILL at a random moment, several rounds in a row; after a restart every decision that got
//! a 2xx is in the log and the chain verifies (with the CLI and the auditor's Python script).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support::{free_port, root};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

const TOKEN: &str = "crash-test-token-0123456789abcdef";

fn start(dir: &Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .arg("serve")
        .current_dir(dir)
        .env("PARAPET_LISTEN", format!("127.0.0.1:{port}"))
        .env("PARAPET_API_TOKEN", TOKEN)
        .env("PARAPET_AUDIT_CHECKPOINT_EVERY", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ureq::get(&format!("http://127.0.0.1:{port}/readyz"))
            .call()
            .is_ok()
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not come up");
}

/// A pseudo-random number from the clock: good enough to vary the kill moment.
fn jitter(max_ms: u64) -> u64 {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    n.wrapping_mul(6364136223846793005).rotate_left(17) % max_ms
}

fn cli(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .args(args)
        .current_dir(dir)
        .env("PARAPET_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_acknowledged_decision_survives_sigkill_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    let body =
        std::fs::read_to_string(root().join("tests/fixtures/good/erc20-transfer-usdc-small.json"))
            .unwrap();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rounds = 0;
    while rounds < 3 || (acknowledged.lock().unwrap().len() < 1000 && rounds < 12) {
        rounds += 1;
        let port = free_port();
        let mut child = start(dir.path(), port);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..16 {
            let (stop, acked, body) = (stop.clone(), acknowledged.clone(), body.clone());
            workers.push(std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let res = agent
                        .post(&format!("http://127.0.0.1:{port}/v1/authorize"))
                        .header("authorization", &format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .send(body.as_bytes());
                    let Ok(res) = res else { break };
                    if res.status().is_success() {
                        // Only a complete 2xx body counts as an acknowledged decision.
                        let Ok(v) = res.into_body().read_json::<Value>() else {
                            break;
                        };
                        acked
                            .lock()
                            .unwrap()
                            .push(v["request_id"].as_str().unwrap().to_owned());
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(300 + jitter(1200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 1000,
        "only {} decisions in {rounds} rounds",
        acked.len()
    );

    // Restart once more (recovery after the last kill), then check from the outside.
    let port = free_port();
    let mut child = start(dir.path(), port);
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, out) = cli(dir.path(), &["audit", "verify", "--json"]);
    assert!(ok, "{out}");
    let export = dir.path().join("export.ndjson");
    let (ok, out) = cli(
        dir.path(),
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let logged: HashSet<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            let ev: Value = serde_json::from_str(row["canonical"].as_str().unwrap()).unwrap();
            ev["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged decisions missing from the log, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let script = root().join("tests/verify_chain.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "{rounds} rounds, {} acknowledged decisions, {} events logged",
        acked.len(),
        logged.len()
    );
}
