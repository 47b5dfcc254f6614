//! The device CLI against the real binary: a person registers a passkey on the page (a software
//! authenticator), makes a pairing code, and `parapet device pair` turns it into a device file
//! that `parapet device show` opens with the passphrase and the gateway recognises.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, Url};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A POST from the page: its origin, its cookie and CSRF token once logged in.
fn page_post(
    base: &str,
    origin: &str,
    path: &str,
    cookie: Option<&(String, String)>,
    body: Value,
) -> (u16, Value, Option<String>) {
    let mut req = ureq::post(&format!("{base}{path}"))
        .config()
        .http_status_as_error(false)
        .build()
        .header("origin", origin);
    if let Some((c, csrf)) = cookie {
        req = req
            .header("cookie", &format!("parapet_session={c}"))
            .header("x-csrf-token", csrf);
    }
    let mut res = req.send_json(body).unwrap();
    let set = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|kv| kv.trim_start_matches("parapet_session=").to_owned());
    let status = res.status().as_u16();
    (
        status,
        res.body_mut().read_json().unwrap_or(Value::Null),
        set,
    )
}

fn device(args: &[&str], file: &Path, passphrase: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parapet"))
        .arg("device")
        .args(args)
        .arg("--device-file")
        .arg(file)
        .env("PARAPET_DEVICE_PASSPHRASE", passphrase)
        .output()
        .unwrap()
}

#[test]
fn a_device_pairs_from_the_cli_and_keeps_its_token_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origin = format!("http://localhost:{port}");
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_parapet"))
            .arg("serve")
            .current_dir(dir.path())
            .env("PARAPET_LISTEN", format!("127.0.0.1:{port}"))
            .env("PARAPET_WEBAUTHN_ORIGINS", &origin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("{base}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A person registers a passkey on the page and makes a pairing code.
    let (status, start, _) = page_post(&base, &origin, "/ui/api/register/start", None, json!({}));
    assert_eq!(status, 200, "{start}");
    let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = SoftPasskey::new(true)
        .do_registration(Url::parse(&origin).unwrap(), ccr)
        .unwrap();
    let (status, done, cookie) = page_post(
        &base,
        &origin,
        "/ui/api/register/finish",
        None,
        json!({"ceremony_id": start["ceremony_id"], "user": start["user"], "credential": cred}),
    );
    assert_eq!(status, 200, "{done}");
    let session = (cookie.unwrap(), done["csrf"].as_str().unwrap().to_owned());
    let (status, code, _) = page_post(
        &base,
        &origin,
        "/ui/api/devices/pair-code",
        Some(&session),
        json!({}),
    );
    assert_eq!(status, 200, "{code}");
    let code = code["code"].as_str().unwrap();

    let file = dir.path().join("device/device.json");
    let out = device(
        &["pair", "--gateway", &base, code, "--name", "test laptop"],
        &file,
        "a long passphrase",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        !stored.contains("pd_"),
        "the device token is stored in clear"
    );

    let out = device(&["show", "--json"], &file, "a long passphrase");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["user_id"], done["user"]);
    assert_eq!(shown["name"], "test laptop");

    let wrong = device(&["show"], &file, "not the passphrase");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    // The code was used: pairing again with it fails, and an existing file is never overwritten.
    let again = device(
        &["pair", "--gateway", &base, code],
        &dir.path().join("other.json"),
        "a long passphrase",
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("login failed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
