//! End to end: the real `parapet` binary, started the way the README's quick start does, over
//! real HTTP on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support::{Process, free_port, root};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Process,
    base: String,
    dir: tempfile::TempDir,
}

/// Starts `parapet serve` with embedded defaults in a scratch directory that links the shipped
/// policies and schemas, as a newcomer would run it from a checkout.
fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    start_in(dir)
}

/// Starts `parapet serve` in `dir`, which holds (or links) `policies/` and `schemas/`.
fn start_in(dir: tempfile::TempDir) -> Server {
    start_with(dir, &[])
}

/// [`start_in`] with more environment.
fn start_with(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .arg("serve")
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .env("PARAPET_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child: child.into(),
        base: format!("http://127.0.0.1:{port}"),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ureq::get(&format!("{}/healthz", server.base))
            .call()
            .is_ok()
        {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    panic!("server did not come up");
}

fn post(s: &Server, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let res = ureq::post(&format!("{}{path}", s.base))
        .config()
        .http_status_as_error(false)
        .build()
        .header("authorization", &format!("Bearer {token}"))
        .send_json(body)
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.into_body().read_json().unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn serve_with_embedded_defaults_writes_a_private_dev_token_and_decides() {
    let s = start();
    let token_path = s.dir.path().join("data/dev-token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let hash = json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1, "hash": format!("0x{}", "ab".repeat(32))});
    let (status, body) = post(&s, "/v1/authorize", "wrong-token-0000000000", &hash);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");
    let (status, body) = post(&s, "/v1/authorize", token.trim(), &hash);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["action"], "raw_hash");
    assert_eq!(body["digest"], format!("0x{}", "ab".repeat(32)));
    let ready: Value = ureq::get(&format!("{}/readyz", s.base))
        .call()
        .unwrap()
        .into_body()
        .read_json()
        .unwrap();
    assert_eq!(ready["policy_version"], body["policy_version"]);
}

#[test]
fn invalid_policy_set_refuses_to_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::copy(
        root().join("policies/scopes.json"),
        dir.path().join("policies/scopes.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(root().join("schemas"), dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("policies/bad.cedar"),
        "@id(\"x\")\npermit(principal, action, resource) when { context.nope };\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .arg("serve")
        .current_dir(dir.path())
        .env("PARAPET_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.cedar:"), "{stderr}");
}

#[test]
fn decide_prints_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("req.json");
    std::fs::write(&file, json!({"wallet": {"address": "0x00000000000000000000000000000000000000AA"}, "chain_id": 1, "message": "hello"}).to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .args(["decide", "--json"])
        .arg(&file)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["action"], "personal_sign");
    assert!(v["decision"] == "allow" || v["decision"] == "deny");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn ready_version(s: &Server) -> String {
    let ready: Value = ureq::get(&format!("{}/readyz", s.base))
        .call()
        .unwrap()
        .into_body()
        .read_json()
        .unwrap();
    ready["policy_version"].as_str().unwrap().to_owned()
}

fn sighup_and_wait(s: &Server, from: &str) -> String {
    let status = Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let v = ready_version(s);
        if v != from {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    from.to_owned()
}

#[test]
fn sighup_reloads_a_valid_set_and_keeps_the_old_one_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("policies"), &dir.path().join("policies"));
    std::os::unix::fs::symlink(root().join("schemas"), dir.path().join("schemas")).unwrap();
    let s = start_in(dir);
    let v1 = ready_version(&s);

    // An invalid file: SIGHUP is refused, the running set stays.
    let extra = s.dir.path().join("policies/zz-extra.cedar");
    std::fs::write(
        &extra,
        "@id(\"zz\")\npermit(principal, action, resource) when { context.nope };\n",
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed_line = "parapet_policy_reloads_total{result=\"failed\"} 1";
    let mut refused = false;
    while !refused && Instant::now() < deadline {
        let metrics = ureq::get(&format!("{}/metrics", s.base))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        refused = metrics.contains(failed_line);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "the invalid reload was not reported as failed");
    let after_bad = ready_version(&s);
    assert_eq!(after_bad, v1, "an invalid set replaced the active one");

    // A valid change: SIGHUP swaps it in and decisions follow it.
    std::fs::write(
        &extra,
        "@id(\"zz-forbid-personal-sign\")\n@reason(\"no messages today\")\nforbid(principal, action == Parapet::Action::\"personal_sign\", resource);\n",
    )
    .unwrap();
    let v2 = sighup_and_wait(&s, &v1);
    assert_ne!(v2, v1, "SIGHUP did not reload");
    let token = std::fs::read_to_string(s.dir.path().join("data/dev-token")).unwrap();
    let msg = json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1, "message": "hi"});
    let (status, body) = post(&s, "/v1/authorize", token.trim(), &msg);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["policy_version"], v2.as_str());
    assert_eq!(
        body["determining_policies"][0]["id"],
        "zz-forbid-personal-sign"
    );
}

/// Runs `parapet apps …` in `dir` (the same configuration `serve` reads there) and returns the
/// one JSON object it prints.
fn apps(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .arg("apps")
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn apps_created_with_the_cli_call_with_their_keys_which_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    let created = apps(
        dir.path(),
        &[
            "create",
            "--name",
            "Shop",
            "--grants",
            "sign,audit:read",
            "--rate",
            "20/s",
            "--session-ttl",
            "8h",
            "--session-idle",
            "10m",
        ],
    );
    let (app_id, key) = (
        created["app_id"].as_str().unwrap().to_owned(),
        created["api_key"].as_str().unwrap().to_owned(),
    );
    assert_eq!(created.as_object().unwrap().len(), 2, "{created}");
    assert!(app_id.starts_with("app_") && key.starts_with("pk_"));
    let listed = apps(dir.path(), &["list"]);
    assert_eq!(listed["apps"][0]["app_id"], app_id.as_str());
    assert_eq!(listed["apps"][0]["rate"], "20/s");
    assert_eq!(listed["apps"][0]["session_ttl_secs"], 28_800);
    assert_eq!(listed["apps"][0]["session_idle_secs"], 600);
    assert!(!listed.to_string().contains(&key));

    // Serve with every log line on, to a file we can read afterwards.
    let log = dir.path().join("serve.log");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .arg("serve")
        .current_dir(dir.path())
        .env("PARAPET_LISTEN", format!("127.0.0.1:{port}"))
        .env("PARAPET_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let s = Server {
        child: child.into(),
        base: format!("http://127.0.0.1:{port}"),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("{}/healthz", s.base)).call().is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let hash = json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1, "hash": format!("0x{}", "ab".repeat(32))});
    let (status, body) = post(&s, "/v1/authorize", &key, &hash);
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&s, "/v1/admin/policies/reload", &key, &json!({}));
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let wrong = format!("pk_{}", "0".repeat(64));
    let (status, _) = post(&s, "/v1/authorize", &wrong, &hash);
    assert_eq!(status, 401);
    let events = ureq::get(&format!("{}/v1/audit/events?format=ndjson", s.base))
        .header("authorization", &format!("Bearer {key}"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(events.contains(&app_id), "{events}");
    // The CLI's creation of the app is in the same chain, before the app's first decision.
    assert!(events.contains(r#"\"action\":\"app.create\""#), "{events}");
    // A revocation through the CLI reaches the running server within a second.
    apps(s.dir.path(), &["revoke", &app_id]);
    let revoked_at = Instant::now();
    loop {
        let (status, _) = post(&s, "/v1/authorize", &key, &hash);
        if status == 401 {
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "{status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEVELOPMENT DEFAULT"), "{logged}");
    for secret in [&key, &wrong] {
        assert!(!logged.contains(secret.as_str()), "key in the log");
        assert!(!logged.contains(&secret[3..]), "key in the log");
        assert!(!events.contains(secret.as_str()), "key in the audit export");
    }
}

fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    dir
}

/// A connection to the server from the loopback address `from` (127.0.0.0/8 is all local, so
/// each address is a distinct client IP to the server).
async fn connect_from(
    from: [u8; 4],
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// `GET /healthz` on a fresh connection from `from`; the time it took, or why it failed.
async fn healthz_from(from: [u8; 4], to: std::net::SocketAddr) -> Result<Duration, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let work = async {
        let mut c = connect_from(from, to).await.map_err(|e| e.to_string())?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        if out.starts_with(b"HTTP/1.1 200") {
            Ok(started.elapsed())
        } else {
            Err(format!("answer: {:?}", String::from_utf8_lossy(&out)))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

/// Whether the server closed `c` (EOF or reset) within `within`, reading and ignoring any bytes.
async fn closed_within(c: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[test]
fn idle_and_slow_connections_are_bounded_and_healthz_still_answers() {
    // The sockets below and the server's own need descriptors: use what the hard limit allows.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let idle = 2000.min(usize::try_from(limit).unwrap().saturating_sub(300));
    let per_ip = 64;
    let s = start_with(
        scratch_dir(),
        &[
            ("PARAPET_MAX_CONNECTIONS_PER_IP", "64"),
            ("PARAPET_HEADER_READ_TIMEOUT_MS", "1500"),
        ],
    );
    let to: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        // Idle sockets spread over client addresses, under the per-IP cap each.
        let mut held = Vec::with_capacity(idle);
        for i in 0..idle {
            let host = u8::try_from(2 + i / (per_ip - 1)).unwrap();
            held.push(connect_from([127, 0, 0, host], to).await.unwrap());
        }
        // One client at its cap: the next connection is closed at once, before any HTTP.
        let capped = [127, 0, 1, 1];
        let mut at_cap = Vec::new();
        for _ in 0..per_ip {
            at_cap.push(connect_from(capped, to).await.unwrap());
        }
        assert!(healthz_from([127, 0, 1, 2], to).await.is_ok());
        let mut over = connect_from(capped, to).await.unwrap();
        let _ = over
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            .await;
        assert!(
            closed_within(&mut over, Duration::from_secs(2)).await,
            "a connection over the per-IP cap was served"
        );
        assert!(
            healthz_from(capped, to).await.is_err(),
            "the per-IP cap let a request through"
        );
        // Slowloris: request heads sent a byte at a time never finish; the header-read timeout
        // closes them.
        let mut slow = Vec::new();
        for i in 0..8u8 {
            slow.push(connect_from([127, 0, 2, i + 1], to).await.unwrap());
        }
        let trickle = async {
            let head = b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut open = vec![true; slow.len()];
            for byte in head.iter().cycle().take(60) {
                for (c, open) in slow.iter_mut().zip(open.iter_mut()) {
                    if *open && c.write_all(&[*byte]).await.is_err() {
                        *open = false;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // Meanwhile /healthz answers promptly from another client.
        let probe = async {
            let mut took = Vec::new();
            for _ in 0..20 {
                took.push(healthz_from([127, 0, 3, 1], to).await.unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            took
        };
        let ((), mut took) = tokio::join!(trickle, probe);
        took.sort();
        assert!(
            took[took.len() - 1] < Duration::from_secs(1),
            "healthz latencies {took:?}"
        );
        for c in &mut slow {
            assert!(
                closed_within(c, Duration::from_secs(3)).await,
                "a slowloris connection outlived the header-read timeout"
            );
        }
        drop(held);
    });
}

#[test]
fn a_body_arriving_after_the_headers_gets_a_whole_answer_and_keeps_the_connection() {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = start();
    let to = s.base.trim_start_matches("http://").to_owned();
    let c = std::net::TcpStream::connect(&to).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // Read one answer: status line, headers, and a body of its content-length.
    let answer = |r: &mut BufReader<std::net::TcpStream>| -> (String, Vec<String>, Vec<u8>) {
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            headers.push(line.trim().to_ascii_lowercase());
        }
        let len: usize = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        (status, headers, body)
    };
    for path in [
        "/v1/recovery/00000000-0000-0000-0000-000000000000/complete",
        "/v1/authorize",
    ] {
        let body = b"{}";
        write!(
            w,
            "POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Recovery pr_00\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        w.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // The connection may already be closed by a server that answered without the body.
        let _ = w.write_all(body);
        let (status, headers, body) = answer(&mut r);
        assert!(status.starts_with("HTTP/1.1 401"), "{path}: {status}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "unauthorized", "{path}");
        assert!(
            !headers.iter().any(|h| h == "connection: close"),
            "{path}: {headers:?}"
        );
    }
    // Still the same connection: the next request on it is answered.
    w.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let (status, _, _) = answer(&mut r);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}
