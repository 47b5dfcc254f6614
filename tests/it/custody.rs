//! End to end: the real `parapet` binary with `custody = "hsm"` against a SoftHSM2 token that
//! each test creates in its own directory (`SOFTHSM2_CONF` is passed to the children; SoftHSM2
//! reads it once, at `C_Initialize`).
//!
//! Without `/usr/lib/softhsm/libsofthsm2.so` the tests skip loudly, unless
//! `PARAPET_REQUIRE_SOFTHSM` is set (CI sets it), in which case they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support::{Process, free_port, root};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use parapet_testkit::rerun_in_child;
use parapet_testkit::softhsm::{self, MODULE};

const TOKEN: &str = "parapet-gw";
const PIN: &str = "user-pin-2468";
const SO_PIN: &str = "so-pin-1357";
/// Set in the child process that creates a deliberately unprotected key (see `bad_key_helper`).
const BAD_KEY: &str = "PARAPET_TEST_BAD_KEY";

/// A fresh SoftHSM2 token in a scratch directory that also serves as the gateway's working
/// directory (with the shipped policies and schemas linked in).
struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Token {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// `None` (after saying so loudly) when SoftHSM2 is not installed and CI did not require it.
fn token() -> Option<Token> {
    if !softhsm::available("the custody tests") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    let conf = softhsm::init_token(dir.path(), TOKEN, PIN, SO_PIN);
    Some(Token { dir, conf })
}

/// `parapet ARGS` in the token's directory with `custody = "hsm"` and `pin`.
fn parapet(t: &Token, pin: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_parapet"));
    c.args(args)
        .current_dir(t.dir.path())
        .env("SOFTHSM2_CONF", &t.conf)
        .env("PARAPET_CUSTODY", "hsm")
        .env("PARAPET_HSM_MODULE", MODULE)
        .env("PARAPET_HSM_TOKEN_LABEL", TOKEN)
        .env("PARAPET_HSM_PIN", pin)
        .env_remove("PARAPET_CONFIG")
        .stdin(Stdio::null());
    c
}

fn run_ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn hsm_init(t: &Token) -> Value {
    let out = run_ok(parapet(t, PIN, &["hsm", "init", "--json"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim().lines().count(),
        1,
        "exactly one JSON object: {text}"
    );
    serde_json::from_str(text.trim()).unwrap()
}

/// Runs `serve` and expects it to refuse to start: returns its standard error.
fn serve_refuses(t: &Token, pin: &str) -> String {
    let log = t.dir.path().join("serve.log");
    let mut child = parapet(t, pin, &["serve"])
        .env("PARAPET_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve did not refuse to start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "serve exited successfully:\n{stderr}");
    assert!(
        !stderr.contains(pin),
        "the PIN must never be printed:\n{stderr}"
    );
    stderr
}

struct Server {
    /// Held for its `Drop`: the gateway stops with the test.
    _process: Process,
    base: String,
}

fn serve(t: &Token) -> Server {
    let port = free_port();
    let child = parapet(t, PIN, &["serve"])
        .env("PARAPET_LISTEN", format!("127.0.0.1:{port}"))
        // A checkpoint after every event, so the first decision is covered by one.
        .env("PARAPET_AUDIT_CHECKPOINT_EVERY", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(t.dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        _process: child.into(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
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
    panic!(
        "server did not come up:\n{}",
        std::fs::read_to_string(t.dir.path().join("serve.log")).unwrap_or_default()
    );
}

#[test]
fn hsm_init_then_serve_audits_with_checkpoints_signed_in_the_hsm() {
    let Some(t) = token() else { return };
    let first = hsm_init(&t);
    assert_eq!(first["created_share_key"], true, "{first}");
    assert_eq!(first["created_audit_key"], true, "{first}");
    assert_eq!(first["token_label"], TOKEN);
    let public_key = first["audit_public_key"].as_str().unwrap().to_owned();
    assert_eq!(public_key.len(), 66, "compressed SEC1, hex");
    // Idempotent: nothing new, the same key.
    let again = hsm_init(&t);
    assert_eq!(again["created_share_key"], false, "{again}");
    assert_eq!(again["created_audit_key"], false, "{again}");
    assert_eq!(again["audit_public_key"], public_key.as_str());

    let s = serve(&t);
    let ready = ureq::get(&format!("{}/readyz", s.base)).call().unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.into_body().read_json().unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");

    let token = std::fs::read_to_string(t.data().join("dev-token")).unwrap();
    let res = ureq::post(&format!("{}/v1/authorize", s.base))
        .header("authorization", &format!("Bearer {}", token.trim()))
        .send_json(json!({
            "wallet": {"address": "0x00000000000000000000000000000000000000aa"},
            "chain_id": 1,
            "hash": format!("0x{}", "ab".repeat(32)),
        }))
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let decision: Value = res.into_body().read_json().unwrap();
    assert_eq!(decision["decision"], "deny", "{decision}");

    // The decision's checkpoint is signed by the HSM's audit key.
    let checkpoints = t.data().join("audit-checkpoints.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines: Vec<Value> = std::fs::read_to_string(&checkpoints)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if !lines.is_empty() {
            break lines;
        }
        assert!(Instant::now() < deadline, "no checkpoint was written");
        std::thread::sleep(Duration::from_millis(100));
    };
    for cp in &lines {
        assert_eq!(cp["key"], public_key.as_str(), "{cp}");
        assert_eq!(cp["alg"], "ecdsa-secp256k1-sha256");
    }
    drop(s);

    // No key material in files: the development keystore and audit key file were never made;
    // the personal data key exists only sealed by the HSM.
    assert!(!t.data().join("share-key").exists());
    assert!(!t.data().join("audit-key").exists());
    let sealed = std::fs::read(t.data().join("data-key.sealed")).unwrap();
    assert_eq!(sealed.len(), 1 + 12 + 32 + 16);

    // `audit verify` finds the key in the HSM, as configured.
    let out = run_ok(parapet(&t, PIN, &["audit", "verify", "--json"]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["checkpoints_checked"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let out = run_ok(parapet(
        &t,
        PIN,
        &[
            "audit",
            "verify",
            "--checkpoints",
            checkpoints.to_str().unwrap(),
            "--public-key",
            &public_key,
            "--json",
        ],
    ));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    // Checkpoints made with another key do not verify.
    let other = format!("02{}", "11".repeat(32));
    let out = parapet(&t, PIN, &["audit", "verify", "--public-key", &other])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a foreign key must not verify");

    // A restart reopens the same sealed data key.
    let s = serve(&t);
    drop(s);
    assert_eq!(
        std::fs::read(t.data().join("data-key.sealed")).unwrap(),
        sealed
    );
}

#[test]
fn wrong_pin_refuses_to_start() {
    let Some(t) = token() else { return };
    hsm_init(&t);
    // Through the `_FILE` form, as a mounted secret would be.
    let pin_file = t.dir.path().join("pin");
    std::fs::write(&pin_file, "wrong-pin-9999\n").unwrap();
    let log = t.dir.path().join("serve.log");
    let status = parapet(&t, PIN, &["serve"])
        .env_remove("PARAPET_HSM_PIN")
        .env("PARAPET_HSM_PIN_FILE", &pin_file)
        .env("PARAPET_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("refused the PIN"), "{stderr}");
    assert!(!stderr.contains("wrong-pin-9999"), "{stderr}");
    // And directly in the environment.
    let stderr = serve_refuses(&t, "another-wrong-pin");
    assert!(stderr.contains("refused the PIN"), "{stderr}");
}

#[test]
fn missing_key_refuses_to_start_and_says_to_run_hsm_init() {
    let Some(t) = token() else { return };
    let stderr = serve_refuses(&t, PIN);
    assert!(stderr.contains("missing"), "{stderr}");
    assert!(stderr.contains("parapet hsm init"), "{stderr}");
    assert!(
        !t.data().join("share-key").exists(),
        "no fallback to a key file"
    );
}

#[test]
fn extractable_share_key_refuses_to_start() {
    let Some(t) = token() else { return };
    create_bad_key(&t, "extractable-share-key");
    let stderr = serve_refuses(&t, PIN);
    assert!(stderr.contains("parapet-share-key"), "{stderr}");
    assert!(stderr.contains("CKA_EXTRACTABLE"), "{stderr}");
    assert!(stderr.contains("could leave the HSM"), "{stderr}");
}

#[test]
fn non_sensitive_audit_key_refuses_to_start() {
    let Some(t) = token() else { return };
    create_bad_key(&t, "non-sensitive-audit-key");
    let stderr = serve_refuses(&t, PIN);
    assert!(stderr.contains("parapet-audit-key"), "{stderr}");
    assert!(stderr.contains("CKA_SENSITIVE"), "{stderr}");
    assert!(stderr.contains("could leave the HSM"), "{stderr}");
}

/// Creates an unprotected key on the token under the label the gateway expects, bypassing
/// `hsm init`: in a child process of this test binary (`bad_key_helper`), because the
/// PKCS#11 module reads `SOFTHSM2_CONF` at initialisation and this process cannot set it.
fn create_bad_key(t: &Token, which: &str) {
    rerun_in_child(
        "custody::bad_key_helper",
        true,
        &[
            ("SOFTHSM2_CONF", t.conf.as_os_str()),
            (BAD_KEY, which.as_ref()),
        ],
    );
}

#[test]
#[ignore = "helper: run by the refusal tests in a child process with SOFTHSM2_CONF set"]
fn bad_key_helper() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    use cryptoki::session::UserType;
    use secrecy::SecretString;

    let Ok(which) = std::env::var(BAD_KEY) else {
        return;
    };
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&SecretString::from(PIN.to_owned())))
        .unwrap();
    let share_key = |extractable: bool| {
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(b"parapet-share-key".to_vec()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(extractable),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
    };
    match which.as_str() {
        "extractable-share-key" => share_key(true),
        "non-sensitive-audit-key" => {
            // A good share key, so that the audit key is what the gateway refuses.
            share_key(false);
            let label = b"parapet-audit-key".to_vec();
            session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(false),
                        Attribute::KeyType(KeyType::EC),
                        // secp256k1
                        Attribute::EcParams(vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a]),
                        Attribute::Label(label.clone()),
                        Attribute::Verify(true),
                    ],
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(false),
                        Attribute::Label(label),
                        Attribute::Sign(true),
                    ],
                )
                .unwrap();
        }
        other => panic!("unknown bad key {other}"),
    }
    session.logout().unwrap();
}
