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

use crate::support::{Process, free_port, root};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

struct Server(Process);

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

/// A pairing code from the page, approved with the person's passkey (a new device can act for
/// them, so the page asks for a step-up first).
fn page_pair_code(
    base: &str,
    origin: &str,
    session: &(String, String),
    passkey: &mut SoftPasskey,
) -> Value {
    let (status, start, _) = page_post(
        base,
        origin,
        "/ui/api/security/step-up/start",
        Some(session),
        json!({"action": "device_pair"}),
    );
    assert_eq!(status, 200, "{start}");
    let rcr: RequestChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = passkey
        .do_authentication(Url::parse(origin).unwrap(), rcr)
        .unwrap();
    let (status, code, _) = page_post(
        base,
        origin,
        "/ui/api/security/step-up/finish",
        Some(session),
        json!({"action": "device_pair", "ceremony_id": start["ceremony_id"], "credential": cred}),
    );
    assert_eq!(status, 200, "{code}");
    code
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
            .unwrap()
            .into(),
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
    let mut passkey = SoftPasskey::new(true);
    let cred = passkey
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
    // Without the passkey, no pairing code.
    let (status, refused, _) = page_post(
        &base,
        &origin,
        "/ui/api/devices/pair-code",
        Some(&session),
        json!({}),
    );
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["code"], "step_up_required");
    let code = page_pair_code(&base, &origin, &session, &mut passkey);
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

fn parapet(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_parapet"));
    c.args(args).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A running gateway and a person onboarded on it as the page and the CLI do it: an app that
/// sends its users to the page, a paired device and an app session (and, returned beside it,
/// the person's passkey).
struct Person {
    dir: tempfile::TempDir,
    server: Server,
    base: String,
    origin: String,
    api_key: String,
    session: String,
    file: std::path::PathBuf,
    /// The page session (cookie, CSRF token) of the person's passkey login.
    page: (String, String),
}

const PASSPHRASE: &str = "a long passphrase";

/// Starts `parapet serve` in `dir` on `port` with `env` and waits until it answers.
fn serve(dir: &Path, port: u16, env: &[(&str, &str)]) -> Server {
    let mut c = Command::new(env!("CARGO_BIN_EXE_parapet"));
    c.arg("serve")
        .current_dir(dir)
        .env("PARAPET_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "PARAPET_WEBAUTHN_ORIGINS",
            format!("http://localhost:{port}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let server = Server(c.spawn().unwrap().into());
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn onboard(env: &[(&str, &str)]) -> (Person, SoftPasskey) {
    use webauthn_authenticator_rs::prelude::RequestChallengeResponse;

    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    let port = free_port();
    let origin = format!("http://localhost:{port}");
    let base = format!("http://127.0.0.1:{port}");
    let server = serve(dir.path(), port, env);
    // An app that sends its users to the gateway's page to log in.
    let redirect = "http://localhost:9/callback";
    let app = ok_json(&parapet(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Shop",
            "--grants",
            "sign",
            "--redirect-uri",
            redirect,
            "--json",
        ],
        env,
    ));
    let (app_id, api_key) = (
        app["app_id"].as_str().unwrap().to_owned(),
        app["api_key"].as_str().unwrap().to_owned(),
    );
    let app_id = app_id.as_str();

    // A person registers a passkey, pairs this machine, then logs in to the app with the passkey.
    let mut passkey = SoftPasskey::new(true);
    let (_, start, _) = page_post(&base, &origin, "/ui/api/register/start", None, json!({}));
    let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = passkey
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
    let user = done["user"].as_str().unwrap().to_owned();
    let page = (cookie.unwrap(), done["csrf"].as_str().unwrap().to_owned());
    let code = page_pair_code(&base, &origin, &page, &mut passkey);
    let file = dir.path().join("device.json");
    let pass = PASSPHRASE;
    let out = device(
        &["pair", "--gateway", &base, code["code"].as_str().unwrap()],
        &file,
        pass,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, start, _) = page_post(
        &base,
        &origin,
        "/ui/api/login/start",
        None,
        json!({"user": user, "app": app_id}),
    );
    assert_eq!(status, 200, "login start: {start}");
    let rcr: RequestChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let assertion = passkey
        .do_authentication(Url::parse(&origin).unwrap(), rcr)
        .unwrap();
    let (status, login, cookie) = page_post(
        &base,
        &origin,
        "/ui/api/login/finish",
        None,
        json!({"ceremony_id": start["ceremony_id"], "credential": assertion, "app": app_id}),
    );
    assert_eq!(status, 200, "{login}");
    let page = (cookie.unwrap(), login["csrf"].as_str().unwrap().to_owned());
    let (status, c, _) = page_post(
        &base,
        &origin,
        "/ui/api/consent",
        Some(&page),
        json!({"app": app_id}),
    );
    assert_eq!(status, 200, "{c}");
    let (status, h, _) = page_post(
        &base,
        &origin,
        "/ui/api/handoff",
        Some(&page),
        json!({"app": app_id, "redirect_uri": redirect, "state": "s"}),
    );
    assert_eq!(status, 200, "{h}");
    let login_code = h["redirect"]
        .as_str()
        .unwrap()
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap()
        .to_owned();
    let mut res = ureq::post(&format!("{base}/v1/sessions/exchange"))
        .header("authorization", &format!("Bearer {api_key}"))
        .send_json(json!({"code": login_code, "redirect_uri": redirect}))
        .unwrap();
    let exchanged: Value = res.body_mut().read_json().unwrap();
    let session = exchanged["session_token"].as_str().unwrap().to_owned();
    let person = Person {
        dir,
        server,
        base,
        origin,
        api_key,
        session,
        file,
        page: page.clone(),
    };
    (person, passkey)
}

impl Person {
    fn wallet(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_parapet"))
            .arg("wallet")
            .args(args)
            .arg("--device-file")
            .arg(&self.file)
            .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
            .env("PARAPET_API_KEY", &self.api_key)
            .env("PARAPET_SESSION", &self.session)
            .output()
            .unwrap()
    }

    /// The first `wallet create --json`: it also sets the recovery secret, which the person
    /// approves with their passkey (the request from this device shows on the page; the app
    /// carries the approval) while the CLI waits.
    fn create_first_wallet(&self, passkey: &mut SoftPasskey) -> Value {
        let child = Command::new(env!("CARGO_BIN_EXE_parapet"))
            .args(["wallet", "create", "--json", "--device-file"])
            .arg(&self.file)
            .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let operation = loop {
            let mut res = ureq::get(&format!("{}/ui/api/security", self.base))
                .header("cookie", &format!("parapet_session={}", self.page.0))
                .call()
                .unwrap();
            let security: Value = res.body_mut().read_json().unwrap();
            if let Some(id) = security["approvals"][0]["id"].as_str() {
                assert_eq!(security["approvals"][0]["kind"], "recovery_setup");
                break id.to_owned();
            }
            assert!(Instant::now() < deadline, "no recovery set-up to approve");
            std::thread::sleep(Duration::from_millis(100));
        };
        let path = format!("/v1/operations/{operation}/step-up");
        let (status, asked) = self.post(&self.base, &path, &[], json!({}));
        assert_eq!(status, 403, "{asked}");
        let rcr: RequestChallengeResponse =
            serde_json::from_value(asked["step_up"]["options"].clone()).unwrap();
        let assertion = passkey
            .do_authentication(Url::parse(&self.origin).unwrap(), rcr)
            .unwrap();
        let (status, approved) = self.post(
            &self.base,
            &path,
            &[],
            json!({"ceremony_id": asked["step_up"]["ceremony_id"], "credential": assertion}),
        );
        assert_eq!(status, 200, "{approved}");
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("approval with a passkey"), "{stderr}");
        ok_json(&out)
    }

    /// A POST with the app's key and the person's session.
    fn post(&self, base: &str, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
        let mut req = ureq::post(&format!("{base}{path}"))
            .config()
            .http_status_as_error(false)
            .build()
            .header("authorization", &format!("Bearer {}", self.api_key))
            .header("parapet-session", &self.session);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut res = req.send_json(body).unwrap();
        let status = res.status().as_u16();
        (
            status,
            res.body_mut().read_json::<Value>().unwrap_or(Value::Null),
        )
    }
}

#[test]
fn a_device_creates_a_wallet_and_signs_with_it_from_the_cli() {
    use alloy::consensus::TxEnvelope;
    use alloy::consensus::transaction::SignerRecoverable;
    use alloy::eips::eip2718::Decodable2718;
    use webauthn_authenticator_rs::prelude::RequestChallengeResponse;

    let (mut p, mut passkey) = onboard(&[]);
    let (dir, origin) = (p.dir.path().to_owned(), p.origin.clone());
    // The device makes a wallet; its share stays in the encrypted file.
    let wallet_cmd = |args: &[&str]| p.wallet(args);
    let created = p.create_first_wallet(&mut passkey);
    let address = created["address"].as_str().unwrap().to_owned();
    // The first wallet made the recovery secret, shown once.
    let recovery_secret = created["recovery_secret"].as_str().unwrap().to_owned();
    let listed = ok_json(&wallet_cmd(&["list", "--json"]));
    assert_eq!(listed["wallets"], json!([address]));
    let stored = std::fs::read_to_string(&p.file).unwrap();
    assert!(
        !stored.contains(&address[2..]),
        "the file shows its wallets in clear"
    );

    // A transaction: submitted with the app's key and the session, co-signed in a ceremony,
    // and the signed transaction recovers to the wallet.
    let mut body: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/good/erc20-transfer-usdc-small.json"))
            .unwrap(),
    )
    .unwrap();
    body.as_object_mut().unwrap().remove("wallet");
    let tx_file = dir.join("tx.json");
    std::fs::write(&tx_file, body.to_string()).unwrap();
    let signed = ok_json(&wallet_cmd(&[
        "sign",
        "--yes",
        "--wallet",
        &address,
        tx_file.to_str().unwrap(),
        "--json",
    ]));
    let raw = hex::decode(
        signed["signed_transaction"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    assert_eq!(format!("{:#x}", tx.recover_signer().unwrap()), address);
    assert_eq!(signed["tx_hash"], format!("{:#x}", tx.tx_hash()));

    // A personal_sign message the same way.
    let msg_file = dir.join("msg.json");
    std::fs::write(
        &msg_file,
        json!({"chain_id": 1, "message": "hello"}).to_string(),
    )
    .unwrap();
    let signed = ok_json(&wallet_cmd(&[
        "sign",
        "--yes",
        "--wallet",
        &address,
        msg_file.to_str().unwrap(),
        "--json",
    ]));
    let r: alloy::primitives::U256 = signed["signature"]["r"].as_str().unwrap().parse().unwrap();
    let s: alloy::primitives::U256 = signed["signature"]["s"].as_str().unwrap().parse().unwrap();
    let sig =
        alloy::primitives::Signature::new(r, s, signed["signature"]["y_parity"].as_bool().unwrap());
    assert_eq!(
        format!("{:#x}", sig.recover_address_from_msg("hello").unwrap()),
        address
    );

    // A refresh: the app asks, the owner approves with the passkey, the device runs it; the
    // same address signs with the new shares.
    let post = |path: &str, body: Value| p.post(&p.base, path, &[], body);
    let (status, asked) = post(&format!("/v1/wallets/{address}/refresh"), json!({}));
    assert_eq!(
        (status, asked["code"].as_str()),
        (403, Some("step_up_required")),
        "{asked}"
    );
    let rcr: RequestChallengeResponse =
        serde_json::from_value(asked["step_up"]["options"].clone()).unwrap();
    let assertion = passkey
        .do_authentication(Url::parse(&origin).unwrap(), rcr)
        .unwrap();
    let (status, approved) = post(
        &format!(
            "/v1/operations/{}/step-up",
            asked["operation"].as_str().unwrap()
        ),
        json!({"ceremony_id": asked["step_up"]["ceremony_id"], "credential": assertion}),
    );
    assert_eq!(status, 200, "{approved}");
    let refreshed = ok_json(&wallet_cmd(&["refresh", "--wallet", &address, "--json"]));
    assert_eq!(refreshed["epoch"], 1);
    let signed = ok_json(&wallet_cmd(&[
        "sign",
        "--yes",
        "--wallet",
        &address,
        msg_file.to_str().unwrap(),
        "--idempotency-key",
        "after-refresh",
        "--json",
    ]));
    let r: alloy::primitives::U256 = signed["signature"]["r"].as_str().unwrap().parse().unwrap();
    let s: alloy::primitives::U256 = signed["signature"]["s"].as_str().unwrap().parse().unwrap();
    let sig =
        alloy::primitives::Signature::new(r, s, signed["signature"]["y_parity"].as_bool().unwrap());
    assert_eq!(
        format!("{:#x}", sig.recover_address_from_msg("hello").unwrap()),
        address
    );

    // The secret checks out, and the device's kit followed the refresh to epoch 1.
    let with_secret = |args: &[&str], extra: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_parapet"));
        c.args(args)
            .arg("--json")
            .env("PARAPET_DEVICE_FILE", &p.file)
            .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
            .env("PARAPET_RECOVERY_SECRET", &recovery_secret);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let checked = ok_json(&with_secret(&["recovery", "check"], &[]));
    assert_eq!(checked["ok"], true, "{checked}");
    assert_eq!(checked["wallets"][0]["kit_epoch"], 1, "{checked}");
    let other = parapet_mpc::recovery::RecoverySecret::generate().written();
    let wrong = with_secret(
        &["recovery", "check"],
        &[("PARAPET_RECOVERY_SECRET", other.as_str())],
    );
    assert!(!wrong.status.success());
    let wrong: Value = serde_json::from_slice(&wrong.stdout).unwrap();
    assert_eq!(wrong["secret_matches"], false, "{wrong}");
    let kit = dir.join("kit.json");
    let out = p.wallet(&["kit", "--wallet", &address, "--out", kit.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The gateway stops; the kit and the secret still sign, and the key can be taken out.
    let _ = p.server.0.kill();
    let _ = p.server.0.wait();
    let offline = ok_json(&with_secret(
        &[
            "wallet",
            "sign",
            "--offline",
            "--backup-kit",
            kit.to_str().unwrap(),
            "--wallet",
            &address,
            tx_file.to_str().unwrap(),
        ],
        &[],
    ));
    let raw = hex::decode(
        offline["signed_transaction"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    assert_eq!(format!("{:#x}", tx.recover_signer().unwrap()), address);
    assert_eq!(offline["tx_hash"], format!("{:#x}", tx.tx_hash()));
    // CI checks this signature again with Python's eth-account (tests/eth_verify/verify.py).
    if let Ok(out) = std::env::var("PARAPET_SIGNATURES_OUT") {
        let entry = json!([{
            "kind": "eip1559", "address": address, "payload": body,
            "digest": offline["digest"], "signature": offline["signature"],
            "signed_transaction": offline["signed_transaction"], "tx_hash": offline["tx_hash"],
        }]);
        std::fs::write(format!("{out}.offline.json"), entry.to_string()).unwrap();
    }

    let export = |extra: &[(&str, &str)], flag: bool| {
        let mut args = vec![
            "wallet",
            "export-key",
            "--backup-kit",
            kit.to_str().unwrap(),
        ];
        if flag {
            args.push("--i-understand-this-ends-2-of-2");
        }
        with_secret(&args, extra)
    };
    assert!(
        !export(&[("PARAPET_CONFIRM_EXPORT", &address)], false)
            .status
            .success()
    );
    assert!(
        !export(&[("PARAPET_CONFIRM_EXPORT", "0xnot-it")], true)
            .status
            .success()
    );
    let exported = ok_json(&export(&[("PARAPET_CONFIRM_EXPORT", &address)], true));
    let key = hex::decode(
        exported["private_key"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let key = k256::ecdsa::SigningKey::from_slice(&key).unwrap();
    assert_eq!(
        format!("{:#x}", alloy::primitives::Address::from_private_key(&key)),
        address
    );
}

/// A fresh PostgreSQL database under `PARAPET_TEST_POSTGRES_URL` (dropped by the returned
/// guard), or `None` when the variable is unset.
fn postgres_database() -> Option<(String, PgDrop)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(parapet_testkit::postgres::TestDatabase::create("parapet_p"))?;
    Some((db.url.clone(), PgDrop { db, rt }))
}

/// Drops the test database when the test ends, passed or failed.
struct PgDrop {
    db: parapet_testkit::postgres::TestDatabase,
    rt: tokio::runtime::Runtime,
}

impl Drop for PgDrop {
    fn drop(&mut self) {
        self.rt.block_on(self.db.drop_now());
    }
}

fn native_transfer(nonce: u64, wei: u128) -> Value {
    json!({
        "chain_id": 1,
        "transaction_request": {
            "type": "0x2", "chainId": "0x1", "nonce": format!("{nonce:#x}"), "gas": "0x5208",
            "maxFeePerGas": "0x6fc23ac00", "maxPriorityFeePerGas": "0x3b9aca00",
            "to": "0x2222222222222222222222222222222222222222",
            "value": format!("{wei:#x}"), "data": "0x"
        }
    })
}

/// Two `parapet serve` processes share one PostgreSQL database (and the key files); 100
/// concurrent requests, split between them, each ask for 10 % of what remains under the shipped
/// 24 h native cap. The per-wallet lock must hold across processes: exactly the 10 that fit are
/// authorized.
#[test]
fn two_gateway_processes_on_one_postgres_reserve_exactly_what_fits() {
    const ETH: u128 = 1_000_000_000_000_000_000;
    let Some((url, _guard)) = postgres_database() else {
        eprintln!("PARAPET_TEST_POSTGRES_URL not set: the two-process velocity race is skipped");
        return;
    };
    let fast = "100000/s burst 100000";
    let env = [
        ("PARAPET_DATABASE_URL", url.as_str()),
        ("PARAPET_USER_RATE", fast),
        ("PARAPET_WALLET_RATE", fast),
        ("PARAPET_APP_RATE", fast),
        ("PARAPET_IP_RATE", fast),
    ];
    let (p, mut passkey) = onboard(&env);
    let created = p.create_first_wallet(&mut passkey);
    let address = created["address"].as_str().unwrap().to_owned();

    // The second process: its own data directory (its own checkpoint file) holding copies of the
    // first one's key files, as replicas behind a load balancer would.
    let second_dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), second_dir.path().join(d)).unwrap();
    }
    let data = p.dir.path().join("data");
    std::fs::create_dir(second_dir.path().join("data")).unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_file() && !name.starts_with("audit-checkpoints") {
            std::fs::copy(entry.path(), second_dir.path().join("data").join(&name)).unwrap();
        }
    }
    let second_port = free_port();
    let _second = serve(second_dir.path(), second_port, &env);
    let bases = [p.base.clone(), format!("http://127.0.0.1:{second_port}")];

    let path = format!("/v1/wallets/{address}/sign");
    for i in 0..10 {
        let (status, body) = p.post(
            &bases[i % 2],
            &path,
            &[("idempotency-key", &format!("seed-{i}"))],
            native_transfer(i as u64, 5 * ETH),
        );
        assert_eq!(status, 201, "{body}");
    }
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..100u64)
            .map(|i| {
                let (p, base, path) = (&p, &bases[i as usize % 2], &path);
                s.spawn(move || {
                    p.post(
                        base,
                        path,
                        &[("idempotency-key", &format!("race-{i}"))],
                        native_transfer(100 + i, 5 * ETH),
                    )
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let (mut allowed, mut denied) = (0, 0);
    for (status, body) in &answers {
        match status {
            201 => allowed += 1,
            403 => {
                assert_eq!(body["code"], "policy_denied", "{body}");
                assert!(
                    body.to_string().contains("forbid-native-velocity-24h"),
                    "{body}"
                );
                denied += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!((allowed, denied), (10, 90));
}

/// A person loses their device: from a new machine, `recovery start` (by wallet address, with the
/// recovery secret and, as they set up an authenticator app, a fresh TOTP code: none, or the one
/// already used, is refused), the waiting period, `recovery complete`; the old device is refused,
/// the new one holds refreshed shares and a current kit that signs without the gateway.
#[test]
fn a_lost_device_is_recovered_from_the_cli() {
    use alloy::consensus::TxEnvelope;
    use alloy::consensus::transaction::SignerRecoverable;
    use alloy::eips::eip2718::Decodable2718;

    use webauthn_authenticator_rs::prelude::RequestChallengeResponse;

    let (p, mut passkey) = onboard(&[("PARAPET_RECOVERY_DELAY_SECS", "10")]);
    let created = p.create_first_wallet(&mut passkey);
    let address = created["address"].as_str().unwrap().to_owned();
    let secret = created["recovery_secret"].as_str().unwrap().to_owned();

    // The owner sets up an authenticator app: a passkey step-up, then a first code.
    let (status, asked) = p.post(&p.base, "/v1/totp", &[], json!({}));
    assert_eq!(status, 403, "{asked}");
    let rcr: RequestChallengeResponse =
        serde_json::from_value(asked["step_up"]["options"].clone()).unwrap();
    let assertion = passkey
        .do_authentication(Url::parse(&p.origin).unwrap(), rcr)
        .unwrap();
    let (status, enrolled) = p.post(
        &p.base,
        "/v1/totp",
        &[],
        json!({"ceremony_id": asked["step_up"]["ceremony_id"], "credential": assertion}),
    );
    assert_eq!(status, 200, "{enrolled}");
    let authenticator = totp_rs::Totp::from_url(enrolled["otpauth_uri"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let enrol_code = authenticator.generate(now).to_string();
    let (status, confirmed) = p.post(
        &p.base,
        "/v1/totp/confirm",
        &[],
        json!({"code": enrol_code}),
    );
    assert_eq!(status, 200, "{confirmed}");
    let new_file = p.dir.path().join("new-device.json");
    let cli = |args: &[&str], file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_parapet"))
            .args(args)
            .arg("--json")
            .env("PARAPET_DEVICE_FILE", file)
            .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
            .env("PARAPET_RECOVERY_SECRET", &secret)
            .output()
            .unwrap()
    };
    let start = |totp: Option<&str>| {
        let mut args = vec![
            "recovery",
            "start",
            "--gateway",
            &p.base,
            "--user",
            &address,
            "--name",
            "new laptop",
        ];
        if let Some(code) = totp {
            args.extend(["--totp", code]);
        }
        cli(&args, &new_file)
    };
    // The right secret without a code, or with the code already used to enrol (a replay in its
    // own window), is refused like a wrong secret.
    for attempt in [start(None), start(Some(&enrol_code))] {
        assert!(!attempt.status.success());
        assert!(
            String::from_utf8_lossy(&attempt.stderr).contains("recovery_refused"),
            "{}",
            String::from_utf8_lossy(&attempt.stderr)
        );
    }
    // A fresh code (the next time step) opens it.
    let fresh = authenticator.generate(now + 30).to_string();
    let started = ok_json(&start(Some(&fresh)));
    assert!(started["completable_at"].is_string(), "{started}");
    let early = cli(&["recovery", "complete"], &new_file);
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("recovery_not_completable"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    std::thread::sleep(Duration::from_millis(10_200));
    let done = ok_json(&cli(&["recovery", "complete"], &new_file));
    assert_eq!(
        done["wallets"],
        json!([{"address": address, "epoch": 1}]),
        "{done}"
    );
    assert!(
        done["passkey_link"]
            .as_str()
            .unwrap()
            .contains("/ui/?link=")
    );

    // The lost device's token is revoked.
    let old = p.wallet(&["sign", "--wallet", &address, "--request", "x", "--yes"]);
    assert!(!old.status.success());
    // The new device's kit is current and signs with no gateway involved.
    let checked = ok_json(&cli(&["recovery", "check"], &new_file));
    assert_eq!(checked["ok"], true, "{checked}");
    let kit = p.dir.path().join("new-kit.json");
    let out = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .args(["wallet", "kit", "--wallet", &address, "--out"])
        .arg(&kit)
        .env("PARAPET_DEVICE_FILE", &new_file)
        .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tx_file = p.dir.path().join("native.json");
    let mut body = native_transfer(0, 1_000_000_000);
    body.as_object_mut().unwrap().remove("wallet");
    std::fs::write(&tx_file, body.to_string()).unwrap();
    let signed = ok_json(&cli(
        &[
            "wallet",
            "sign",
            "--offline",
            "--backup-kit",
            kit.to_str().unwrap(),
            "--wallet",
            &address,
            tx_file.to_str().unwrap(),
        ],
        &new_file,
    ));
    let raw = hex::decode(
        signed["signed_transaction"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    assert_eq!(format!("{:#x}", tx.recover_signer().unwrap()), address);
}

#[test]
fn a_backup_device_is_linked_from_the_cli_and_a_wrong_code_sends_nothing() {
    use std::io::BufRead;

    let (p, mut passkey) = onboard(&[]);
    let created = p.create_first_wallet(&mut passkey);
    let address = created["address"].as_str().unwrap().to_owned();
    let cli = |args: &[&str], file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_parapet"))
            .args(args)
            .env("PARAPET_DEVICE_FILE", file)
            .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
            .env("PARAPET_API_KEY", &p.api_key)
            .env("PARAPET_SESSION", &p.session)
            .output()
            .unwrap()
    };

    // A second device is paired, then asks for the wallets and shows its short code.
    let code = page_pair_code(&p.base, &p.origin, &p.page, &mut passkey);
    let phone = p.dir.path().join("phone.json");
    let out = device(
        &[
            "pair",
            "--gateway",
            &p.base,
            code["code"].as_str().unwrap(),
            "--name",
            "phone",
        ],
        &phone,
        PASSPHRASE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut link = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .args(["device", "link", "--json", "--wait-secs", "120"])
        .env("PARAPET_DEVICE_FILE", &phone)
        .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(link.stderr.take().unwrap()).lines();
    let shown = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("Short code of this device: ")
                .map(str::to_owned)
        })
        .expect("link printed no short code");

    // The owner approves it in the app with the passkey; the app shows the same code.
    let devices: Value = ureq::get(&format!("{}/v1/devices", p.base))
        .header("authorization", &format!("Bearer {}", p.api_key))
        .header("parapet-session", &p.session)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let waiting = &devices["transfers"][0];
    assert_eq!(waiting["short_code"], shown.as_str(), "{devices}");
    let path = format!(
        "/v1/device-transfers/{}/approve",
        waiting["id"].as_str().unwrap()
    );
    let (status, asked) = p.post(&p.base, &path, &[], json!({}));
    assert_eq!(
        (status, asked["code"].as_str()),
        (403, Some("step_up_required")),
        "{asked}"
    );
    let rcr: RequestChallengeResponse =
        serde_json::from_value(asked["step_up"]["options"].clone()).unwrap();
    let assertion = passkey
        .do_authentication(Url::parse(&p.origin).unwrap(), rcr)
        .unwrap();
    let (status, approved) = p.post(
        &p.base,
        &path,
        &[],
        json!({"ceremony_id": asked["step_up"]["ceremony_id"], "credential": assertion}),
    );
    assert_eq!(status, 200, "{approved}");

    // A code that is not the phone's sends nothing.
    let wrong = cli(&["device", "add", "--code", "0000-0000-0000"], &p.file);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    // The phone's code: the laptop seals, the phone stores the wallet.
    let added = cli(
        &["device", "add", "--code", &shown.to_lowercase(), "--json"],
        &p.file,
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let linked = link.wait_with_output().unwrap();
    assert!(linked.status.success(), "link failed");
    let got: Value = serde_json::from_slice(&linked.stdout).unwrap();
    assert_eq!(got["wallets"][0]["address"], address.as_str(), "{got}");

    // The phone signs a message for the wallet.
    let msg = p.dir.path().join("msg.json");
    std::fs::write(
        &msg,
        json!({"chain_id": 1, "message": "from the phone"}).to_string(),
    )
    .unwrap();
    let signed = cli(
        &[
            "wallet",
            "sign",
            "--yes",
            "--wallet",
            &address,
            msg.to_str().unwrap(),
            "--json",
        ],
        &phone,
    );
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );

    // A refresh from the laptop; `device sync` (again, by hand) and `device receive` bring the
    // phone back, and it signs again.
    let (status, asked) = p.post(
        &p.base,
        &format!("/v1/wallets/{address}/refresh"),
        &[],
        json!({}),
    );
    assert_eq!(status, 403, "{asked}");
    let rcr: RequestChallengeResponse =
        serde_json::from_value(asked["step_up"]["options"].clone()).unwrap();
    let assertion = passkey
        .do_authentication(Url::parse(&p.origin).unwrap(), rcr)
        .unwrap();
    let (status, ok) = p.post(
        &p.base,
        &format!(
            "/v1/operations/{}/step-up",
            asked["operation"].as_str().unwrap()
        ),
        &[],
        json!({"ceremony_id": asked["step_up"]["ceremony_id"], "credential": assertion}),
    );
    assert_eq!(status, 200, "{ok}");
    // The refresh itself re-syncs the phone (sealed to the key confirmed at `add`); until the
    // phone takes it, it is stale and cannot sign.
    let refreshed = ok_json(&p.wallet(&["refresh", "--wallet", &address, "--json"]));
    assert_eq!(refreshed["epoch"], 1);
    assert_eq!(
        refreshed["resynced"].as_array().unwrap().len(),
        1,
        "{refreshed}"
    );
    let stale = cli(
        &[
            "wallet",
            "sign",
            "--yes",
            "--wallet",
            &address,
            msg.to_str().unwrap(),
            "--idempotency-key",
            "stale",
            "--json",
        ],
        &phone,
    );
    assert!(!stale.status.success(), "a stale device signed");
    let synced = cli(&["device", "sync", "--json"], &p.file);
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    let received = cli(&["device", "receive", "--json"], &phone);
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    let again = cli(
        &[
            "wallet",
            "sign",
            "--yes",
            "--wallet",
            &address,
            msg.to_str().unwrap(),
            "--idempotency-key",
            "resynced",
            "--json",
        ],
        &phone,
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// The digest a device computes for `body` (`chain_id` and one payload) of `wallet`.
fn digest_of(body: &Value, wallet: &str) -> String {
    let mut body = body.clone();
    body["wallet"] = json!({ "address": wallet });
    let request: parapet_gateway::request::AuthorizeRequest = serde_json::from_value(body).unwrap();
    let facts = parapet_gateway::decode::decode(
        request.payload().unwrap(),
        request.chain_id,
        parapet_gateway::service::pipeline::parse_address(wallet).unwrap(),
        &parapet_gateway::decode::Registry::default(),
    )
    .unwrap();
    format!("0x{}", hex::encode(facts.digest.0))
}

/// What you see is what you sign: `wallet sign` shows what it decoded (to and value of a native
/// transfer) and, with no terminal to ask on, signs only with `--yes` or `PARAPET_YES`. A
/// gateway whose stored digest for a request was rewritten (as a compromised gateway would)
/// gets no signature: the CLI exits non-zero naming both digests, and the request is not signed.
#[test]
fn the_cli_shows_what_it_signs_and_refuses_a_digest_that_is_not_the_requests() {
    const GWEI: u128 = 1_000_000_000;
    let (p, mut passkey) = onboard(&[]);
    let created = p.create_first_wallet(&mut passkey);
    let address = created["address"].as_str().unwrap().to_owned();
    let body = native_transfer(0, 1_500_000 * GWEI);
    let tx_file = p.dir.path().join("native.json");
    std::fs::write(&tx_file, body.to_string()).unwrap();
    let tx = tx_file.to_str().unwrap();
    let summary_names_the_transfer = |stderr: &str| {
        let line = |key: &str| {
            stderr
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{key} ")))
                .unwrap_or_else(|| panic!("no {key} in the summary: {stderr}"))
                .to_owned()
        };
        assert!(
            line("to").ends_with(" 0x2222222222222222222222222222222222222222"),
            "{stderr}"
        );
        assert!(
            line("value").contains(" 1500000000000000 wei (0.0015 "),
            "{stderr}"
        );
        assert!(
            line("digest").ends_with(&digest_of(&body, &address)),
            "{stderr}"
        );
    };

    // No terminal and no --yes: the summary, then a refusal; nothing was signed.
    let asked = p.wallet(&["sign", "--wallet", &address, tx, "--json"]);
    let stderr = String::from_utf8_lossy(&asked.stderr).into_owned();
    assert!(!asked.status.success(), "signed without asking: {stderr}");
    assert!(asked.stdout.is_empty());
    assert!(stderr.contains("--yes"), "{stderr}");
    summary_names_the_transfer(&stderr);

    // PARAPET_YES answers for scripts; the summary is still shown and the transaction signs.
    let out = Command::new(env!("CARGO_BIN_EXE_parapet"))
        .args(["wallet", "sign", "--wallet", &address, tx, "--json"])
        .arg("--device-file")
        .arg(&p.file)
        .env("PARAPET_DEVICE_PASSPHRASE", PASSPHRASE)
        .env("PARAPET_API_KEY", &p.api_key)
        .env("PARAPET_SESSION", &p.session)
        .env("PARAPET_YES", "1")
        .output()
        .unwrap();
    summary_names_the_transfer(&String::from_utf8_lossy(&out.stderr));
    let signed = ok_json(&out);
    assert_eq!(signed["digest"], digest_of(&body, &address));
    assert!(signed["signed_transaction"].is_string(), "{signed}");

    // The app asks for 1 gwei; the gateway's database then says the request's digest is that of
    // another transfer (5 native to someone else).
    let small = native_transfer(1, GWEI);
    let (status, asked) = p.post(
        &p.base,
        &format!("/v1/wallets/{address}/sign"),
        &[("idempotency-key", "substituted")],
        small.clone(),
    );
    assert_eq!(status, 201, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let mut substitute = native_transfer(1, 5_000_000_000 * GWEI);
    substitute["transaction_request"]["to"] = json!("0x6666666666666666666666666666666666666666");
    let (real, fake) = (
        digest_of(&small, &address),
        digest_of(&substitute, &address),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use sqlx::Connection;
            let db = p.dir.path().join("data/parapet.db");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            let done = sqlx::query("UPDATE signing_requests SET digest = $1 WHERE id = $2")
                .bind(&fake)
                .bind(&id)
                .execute(&mut c)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1);
        });
    let refused = p.wallet(&[
        "sign",
        "--wallet",
        &address,
        "--request",
        &id,
        "--yes",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the device signed: {stderr}");
    assert!(refused.stdout.is_empty());
    assert!(
        stderr.contains("the gateway asked this device to sign")
            && stderr.contains(&fake)
            && stderr.contains(&real),
        "{stderr}"
    );
    let got: Value = ureq::get(&format!("{}/v1/signing-requests/{id}", p.base))
        .header("authorization", &format!("Bearer {}", p.api_key))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_ne!(got["state"], "signed", "{got}");
    assert!(got.get("signature").is_none(), "{got}");
}

/// Key generation costs the gateway CPU as soon as it starts: past the quota of generations a
/// device started in the last hour (aborted ones count too), the ceremony ends before any
/// protocol message with `keygen_quota`, and no wallet is made.
#[test]
fn key_generations_past_the_devices_hourly_quota_are_refused() {
    let (p, mut passkey) = onboard(&[("PARAPET_KEYGENS_PER_DEVICE_PER_HOUR", "1")]);
    let created = p.create_first_wallet(&mut passkey);
    let address = created["address"].as_str().unwrap().to_owned();

    let again = p.wallet(&["create", "--json"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("keygen_quota"), "{stderr}");
    let listed = ok_json(&p.wallet(&["list", "--json"]));
    assert_eq!(listed["wallets"], json!([address]));
}
