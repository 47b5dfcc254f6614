//! End to end: the real `parapet` binary terminating TLS with a certificate from a test CA made
//! here, the certificate reloaded on SIGHUP, and the rule that plain HTTP off loopback needs
//! `allow_plain_http`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support::{Process, free_port, root};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};

/// A test certificate authority.
struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `localhost` and 127.0.0.1 issued by `ca`: (cert PEM, key PEM, DER).
fn server_cert(ca: &Ca, serial: u64) -> (String, String, CertificateDer<'static>) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

struct Server {
    child: Process,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls/server.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls/server.key")
    }
}

/// A scratch directory that links the shipped policies and schemas, as in `tests/serve.rs`.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in ["policies", "schemas"] {
        std::os::unix::fs::symlink(root().join(d), dir.path().join(d)).unwrap();
    }
    dir
}

/// Starts `parapet serve` in `dir` with `env`; stderr (the log) goes to `stderr.log` there.
fn spawn(dir: &Path, env: &[(&str, String)]) -> Child {
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parapet"));
    cmd.arg("serve")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("PARAPET_TLS_CERT")
        .env_remove("PARAPET_TLS_KEY")
        .env_remove("PARAPET_ALLOW_PLAIN_HTTP")
        .env_remove("PARAPET_STATIC_TOKEN")
        .env_remove("PARAPET_CUSTODY")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Starts `parapet serve` over TLS on 127.0.0.1 with `cert`/`key`, and waits until a client
/// trusting `ca` gets an answer from `/healthz`.
fn start_tls(ca: &Ca, cert_pem: &str, key_pem: &str) -> Server {
    let dir = scratch();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    let port = free_port();
    let (cert, key) = (
        dir.path().join("tls/server.crt"),
        dir.path().join("tls/server.key"),
    );
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let child = spawn(
        dir.path(),
        &[
            ("PARAPET_LISTEN", format!("127.0.0.1:{port}")),
            ("PARAPET_TLS_CERT", cert.display().to_string()),
            ("PARAPET_TLS_KEY", key.display().to_string()),
            // An exposed gateway chooses its development defaults on purpose.
            ("PARAPET_STATIC_TOKEN", "true".to_owned()),
            ("PARAPET_CUSTODY", "file".to_owned()),
        ],
    );
    let server = Server {
        child: child.into(),
        port,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = connect(server.port, &ca.cert)
            && request(&mut s, "GET", "/healthz", None, None).0 == 200
        {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    drop(server);
    panic!("TLS server did not come up:\n{log}");
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS 1.2/1.3 client that trusts only `ca`, speaking HTTP/1.1; returns once the handshake
/// is done (or failed).
fn connect(port: u16, ca: &CertificateDer<'static>) -> std::io::Result<Tls> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// The certificate the server presented on this connection.
fn leaf(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One HTTP/1.1 request on `stream` (closing the connection after it): (status, body).
fn request(
    stream: &mut impl ReadWrite,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("content-type: application/json\r\n");
    }
    if let Some(token) = token {
        head.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify: what arrived is the whole answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn wait_for_log(s: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if s.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn serves_tls_with_a_test_ca_and_reloads_the_certificate_on_sighup() {
    let first_ca = ca("Parapet test CA 1");
    let (cert_pem, key_pem, first_leaf) = server_cert(&first_ca, 1);
    let s = start_tls(&first_ca, &cert_pem, &key_pem);
    assert!(s.log().contains("serving TLS"), "{}", s.log());

    // A client trusting the test CA: health, then a decision with the development token.
    let mut tls = connect(s.port, &first_ca.cert).unwrap();
    assert_eq!(leaf(&tls), first_leaf);
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = request(&mut tls, "GET", "/healthz", None, None);
    assert_eq!(status, 200, "{body}");
    let token = std::fs::read_to_string(s.dir.path().join("data/dev-token")).unwrap();
    let hash = json!({"wallet": {"address": "0x00000000000000000000000000000000000000aa"}, "chain_id": 1, "hash": format!("0x{}", "ab".repeat(32))});
    let mut tls = connect(s.port, &first_ca.cert).unwrap();
    let (status, body) = request(
        &mut tls,
        "POST",
        "/v1/authorize",
        Some(token.trim()),
        Some(&hash),
    );
    // 200 also shows the client address still reaches the handlers (limiter, audit) over TLS.
    assert_eq!(status, 200, "{body}");
    let decision: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(decision["decision"], "deny", "{decision}");
    assert_eq!(decision["action"], "raw_hash");

    // A client that does not trust the test CA fails the handshake.
    let stranger = ca("Someone else's CA");
    assert!(connect(s.port, &stranger.cert).is_err());

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // A broken renewal is refused on SIGHUP: the old certificate stays in use.
    std::fs::write(s.cert_path(), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    s.sighup();
    assert!(
        wait_for_log(&s, "TLS reload refused"),
        "no refused reload in the log:\n{}",
        s.log()
    );
    assert_eq!(leaf(&connect(s.port, &first_ca.cert).unwrap()), first_leaf);

    // A new certificate from another CA: after SIGHUP new connections see it.
    let second_ca = ca("Parapet test CA 2");
    let (cert_pem, key_pem, second_leaf) = server_cert(&second_ca, 2);
    std::fs::write(s.key_path(), key_pem).unwrap();
    std::fs::write(s.cert_path(), cert_pem).unwrap();
    s.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reloaded = None;
    while Instant::now() < deadline {
        if let Ok(tls) = connect(s.port, &second_ca.cert) {
            reloaded = Some(tls);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut tls = reloaded.unwrap_or_else(|| panic!("new certificate not served:\n{}", s.log()));
    assert_eq!(leaf(&tls), second_leaf);
    assert_eq!(request(&mut tls, "GET", "/healthz", None, None).0, 200);
    assert!(connect(s.port, &first_ca.cert).is_err());
    assert!(s.log().contains("TLS certificate reloaded"), "{}", s.log());
}

/// Waits up to 30 s for `child` to exit on its own.
fn exit_of(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn plain_http_off_loopback_needs_the_explicit_flag() {
    let port = free_port();
    let listen = ("PARAPET_LISTEN", format!("0.0.0.0:{port}"));

    // Refused before anything is set up: no token written, nothing bound.
    let dir = scratch();
    let mut child = spawn(dir.path(), std::slice::from_ref(&listen));
    let status = exit_of(&mut child).expect("serve on 0.0.0.0 without TLS kept running");
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("allow_plain_http"), "{log}");
    assert!(log.contains("PARAPET_ALLOW_PLAIN_HTTP"), "{log}");
    assert!(!dir.path().join("data/dev-token").exists());

    // A certificate that cannot be read is refused with its path.
    let mut child = spawn(
        dir.path(),
        &[
            listen.clone(),
            ("PARAPET_TLS_CERT", "missing/server.crt".to_owned()),
            ("PARAPET_TLS_KEY", "missing/server.key".to_owned()),
        ],
    );
    let status = exit_of(&mut child).expect("serve with a missing certificate kept running");
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("missing/server.crt"), "{log}");

    // With the flag, but on development defaults nobody chose, it refuses, saying which.
    let mut child = spawn(
        dir.path(),
        &[
            listen.clone(),
            ("PARAPET_ALLOW_PLAIN_HTTP", "true".to_owned()),
        ],
    );
    let status = exit_of(&mut child).expect("serve on development defaults kept running");
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("static_token") && log.contains("custody"),
        "{log}"
    );
    assert!(!dir.path().join("data/dev-token").exists());

    // With the flag and the defaults chosen, it serves, and the log says what it is doing. The
    // wildcard address shares its port with every address: a port another test's connections
    // hold on loopback makes the bind fail, so a run refused for that tries another port.
    let mut attempt = 0;
    let s = loop {
        attempt += 1;
        let dir = scratch();
        let port = free_port();
        let mut child = spawn(
            dir.path(),
            &[
                ("PARAPET_LISTEN", format!("0.0.0.0:{port}")),
                ("PARAPET_ALLOW_PLAIN_HTTP", "true".to_owned()),
                ("PARAPET_STATIC_TOKEN", "false".to_owned()),
                ("PARAPET_CUSTODY", "file".to_owned()),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut up = false;
        while Instant::now() < deadline && !up && child.try_wait().unwrap().is_none() {
            up = ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
                .call()
                .is_ok();
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = Server {
            child: child.into(),
            port,
            dir,
        };
        if up {
            break s;
        }
        let log = s.log();
        assert!(
            attempt < 5 && log.contains("Address already in use"),
            "serve with allow_plain_http did not come up:\n{log}"
        );
    };
    assert!(
        s.log()
            .contains("plain HTTP on a non-loopback address (allow_plain_http)"),
        "{}",
        s.log()
    );
}

#[test]
fn plain_http_on_loopback_is_the_logged_development_default() {
    let dir = scratch();
    let port = free_port();
    let child = spawn(
        dir.path(),
        &[("PARAPET_LISTEN", format!("127.0.0.1:{port}"))],
    );
    let s = Server {
        child: child.into(),
        port,
        dir,
    };
    assert!(
        wait_for_log(&s, "plain HTTP on loopback (development)"),
        "{}",
        s.log()
    );
}
