//! The page for people in a real browser: starts the real `parapet serve` on a `localhost`
//! origin, creates an app with a redirect URI through the CLI, and runs `tests/browser/ui.mjs`
//! (headless Chromium driven by `playwright-core`, with a DevTools virtual authenticator):
//! register, a backup passkey, log in through the app hand-off, approve only the required
//! scopes, exchange the code, decide, pair and remove a device, revoke a passkey, log out.
//!
//! Needs `/usr/bin/chromium` and `npm ci` in `tests/browser`. Without them the test says so and
//! passes, unless `PARAPET_REQUIRE_BROWSER=1` (CI sets it), when it fails instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support::{Process, free_port, root};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn chromium() -> PathBuf {
    std::env::var_os("PARAPET_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether the browser and the driver are installed; `Err` names what is missing.
fn browser_ready() -> Result<(), String> {
    if !chromium().exists() {
        return Err(format!(
            "{} is missing (apt-get install chromium)",
            chromium().display()
        ));
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Err("tests/browser/node_modules is missing (cd tests/browser && npm ci)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is missing".into());
    }
    Ok(())
}

struct Server {
    /// Held for its `Drop`: the gateway stops with the test.
    _process: Process,
}

fn parapet(dir: &Path, origin: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_parapet"));
    c.current_dir(dir)
        .env("PARAPET_WEBAUTHN_ORIGINS", origin)
        .env("PARAPET_STATIC_TOKEN", "false");
    c
}

#[test]
fn register_hand_off_consent_and_revoke_in_chromium() {
    if let Err(missing) = browser_ready() {
        if std::env::var("PARAPET_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("browser test required but {missing}");
        }
        eprintln!("skipping the browser test: {missing}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    let port = free_port();
    let origin = format!("http://localhost:{port}");
    let redirect = format!("http://localhost:{}/callback", free_port());

    let out = parapet(dir.path(), &origin)
        .args(["apps", "create", "--name", "Checkout", "--grants", "sign"])
        .args(["--redirect-uri", &redirect, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();

    let log = dir.path().join("server.log");
    let child = parapet(dir.path(), &origin)
        .arg("serve")
        .env("PARAPET_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _server = Server {
        _process: child.into(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let run = Command::new("node")
        .arg(root().join("tests/browser/ui.mjs"))
        .current_dir(root().join("tests/browser"))
        .env("PARAPET_URL", &origin)
        .env("PARAPET_APP_ID", app["app_id"].as_str().unwrap())
        .env("PARAPET_APP_KEY", app["api_key"].as_str().unwrap())
        .env("PARAPET_REDIRECT_URI", &redirect)
        .env("PARAPET_CHROMIUM", chromium())
        .env("PARAPET_BIN", env!("CARGO_BIN_EXE_parapet"))
        .env("PARAPET_DEVICE_FILE", dir.path().join("device.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the browser run failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The page's whole journey is in the audit log, and no session token or code is.
    let out = parapet(dir.path(), &origin)
        .args(["audit", "export"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = String::from_utf8_lossy(&out.stdout);
    let actions: Vec<String> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| serde_json::from_str::<Value>(e["canonical"].as_str()?).ok())
        .filter_map(|c| c["action"].as_str().map(str::to_owned))
        .collect();
    for action in [
        "passkey.register",
        "passkey.login",
        "passkey.revoke",
        "session.login",
        "session.logout",
        "approve",
        "device.pair",
        "device.revoke",
        "recovery.open",
        "recovery.cancel",
        "device.add_approve",
        "device.add",
        "totp.enrol",
        "kit.export",
        "wallet.refresh",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} is not in the audit log: {actions:?}"
        );
    }
    assert!(
        !export.contains("ps_"),
        "a session token reached the audit log"
    );
    assert!(
        !export.contains("pc_"),
        "a login code reached the audit log"
    );
}
