//! The configuration's sources, their order and their refusals.

use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::error::Error;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The bench's costliest typed data are real bodies: each fits the default body limit.
#[test]
fn the_costliest_typed_data_fit_the_default_body_limit() {
    for (name, v) in crate::decode::costliest_typed_data() {
        let len = serde_json::to_vec(&v).expect("json").len();
        assert!(len < DEFAULT_BODY_LIMIT, "{name}: {len} bytes");
    }
}

#[test]
fn defaults_without_anything() {
    let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.database_url, "sqlite://data/parapet.db");
    assert!(c.api_token.is_none());
}

#[test]
fn connection_bounds_have_defaults_and_come_from_file_and_env() {
    let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    assert_eq!(
        c.connections,
        crate::server::connections::ConnectionSettings::default()
    );
    assert_eq!(c.connections.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.connections.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.connections.max_connections, 10_000);
    assert_eq!(c.connections.max_per_ip, 256);
    let file: FileConfig = toml::from_str(
        "max_connections = 50\nmax_connections_per_ip = 0\nidle_timeout_secs = 5\nmax_connection_age_secs = 9",
    )
    .unwrap();
    let c = Config::resolve(
        file,
        &env(&[
            ("PARAPET_MAX_CONNECTIONS", "70"),
            ("PARAPET_HEADER_READ_TIMEOUT_MS", "250"),
        ]),
    )
    .unwrap();
    assert_eq!(c.connections.max_connections, 70);
    // Zero would refuse every connection: the smallest cap is one.
    assert_eq!(c.connections.max_per_ip, 1);
    assert_eq!(c.connections.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.connections.max_age, Duration::from_secs(9));
    assert_eq!(
        c.connections.header_read_timeout,
        Duration::from_millis(250)
    );
    assert!(
        Config::resolve(
            FileConfig::default(),
            &env(&[("PARAPET_MAX_CONNECTIONS", "many")])
        )
        .is_err()
    );
}

#[test]
fn env_overrides_file_and_file_secrets_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("token");
    std::fs::write(&secret_path, "from-a-mounted-secret-file\n").unwrap();
    let file: FileConfig =
        toml::from_str("listen = \"127.0.0.1:9000\"\napi_token = \"from-the-toml-file-000\"")
            .unwrap();
    let e = env(&[
        ("PARAPET_LISTEN", "127.0.0.1:9100"),
        ("PARAPET_API_TOKEN_FILE", secret_path.to_str().unwrap()),
    ]);
    let c = Config::resolve(file, &e).unwrap();
    assert_eq!(c.listen.port(), 9100);
    assert_eq!(c.api_token.as_deref(), Some("from-a-mounted-secret-file"));
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    assert!(toml::from_str::<FileConfig>("listn = \"x\"").is_err());
    assert!(Config::resolve(FileConfig::default(), &env(&[("PARAPET_LISTEN", "nope")])).is_err());
    assert!(
        Config::resolve(
            FileConfig::default(),
            &env(&[("PARAPET_API_TOKEN", "short")])
        )
        .is_err()
    );
}

#[test]
fn dev_token_is_generated_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    c.data_dir = dir.path().join("data");
    let src = c.ensure_api_token().unwrap();
    let path = dir.path().join("data/dev-token");
    assert_eq!(src, TokenSource::DevelopmentFile(path.clone()));
    let first = c.api_token.clone().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    c.api_token = None;
    c.ensure_api_token().unwrap();
    assert_eq!(c.api_token.unwrap(), first);
}

#[test]
fn an_exposed_gateway_refuses_development_defaults_nobody_chose() {
    let local = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    assert!(local.check_exposed_defaults().is_ok());
    let exposed = env(&[("PARAPET_LISTEN", "0.0.0.0:8080")]);
    let c = Config::resolve(FileConfig::default(), &exposed).unwrap();
    let err = c.check_exposed_defaults().unwrap_err().to_string();
    assert!(
        err.contains("static_token") && err.contains("custody"),
        "{err}"
    );
    let tls = env(&[
        ("PARAPET_TLS_CERT", "/nonexistent/cert.pem"),
        ("PARAPET_TLS_KEY", "/nonexistent/key.pem"),
    ]);
    let c = Config::resolve(FileConfig::default(), &tls).unwrap();
    assert!(c.check_exposed_defaults().is_err());
    // Chosen on purpose, either way, it starts.
    let chosen = env(&[
        ("PARAPET_LISTEN", "0.0.0.0:8080"),
        ("PARAPET_STATIC_TOKEN", "false"),
        ("PARAPET_CUSTODY", "file"),
    ]);
    let c = Config::resolve(FileConfig::default(), &chosen).unwrap();
    assert!(c.check_exposed_defaults().is_ok());
    let only_token = env(&[
        ("PARAPET_LISTEN", "0.0.0.0:8080"),
        ("PARAPET_STATIC_TOKEN", "true"),
    ]);
    let c = Config::resolve(FileConfig::default(), &only_token).unwrap();
    let err = c.check_exposed_defaults().unwrap_err().to_string();
    assert!(
        !err.contains("static_token") && err.contains("custody"),
        "{err}"
    );
    // On loopback behind a proxy that terminates TLS: exposed all the same.
    for behind in [
        env(&[("PARAPET_TRUSTED_PROXIES", "127.0.0.1")]),
        env(&[
            ("PARAPET_WEBAUTHN_ORIGINS", "https://wallet.example"),
            ("PARAPET_WEBAUTHN_RP_ID", "wallet.example"),
        ]),
    ] {
        let c = Config::resolve(FileConfig::default(), &behind).unwrap();
        assert!(c.check_exposed_defaults().is_err());
    }
}

#[test]
fn quotas_have_defaults_and_come_from_file_and_env() {
    let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    assert_eq!(c.quotas, crate::limits::quotas::QuotaSettings::default());
    assert_eq!(c.quotas.registration_ip.to_string(), "5/h");
    assert_eq!(c.quotas.registrations_per_day, 1000);
    assert_eq!(
        (c.quotas.keygens_per_device, c.quotas.keygens_per_person),
        (10, 20)
    );
    let file: FileConfig = toml::from_str(
        "registration_ip_rate = \"2/h\"\nregistrations_per_day = 50\nkeygens_per_device_per_hour = 3\nkeygens_per_person_per_hour = 7",
    )
    .unwrap();
    let c = Config::resolve(file, &env(&[("PARAPET_KEYGENS_PER_DEVICE_PER_HOUR", "4")])).unwrap();
    assert_eq!(c.quotas.registration_ip.to_string(), "2/h");
    assert_eq!(c.quotas.registrations_per_day, 50);
    // The environment wins.
    assert_eq!(
        (c.quotas.keygens_per_device, c.quotas.keygens_per_person),
        (4, 7)
    );
    for bad in [
        ("PARAPET_REGISTRATION_IP_RATE", "often"),
        ("PARAPET_REGISTRATIONS_PER_DAY", "-1"),
        ("PARAPET_KEYGENS_PER_PERSON_PER_HOUR", "0"),
    ] {
        assert!(Config::resolve(FileConfig::default(), &env(&[bad])).is_err());
    }
}

#[test]
fn webauthn_settings_from_file_and_env() {
    let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    assert_eq!(
        c.webauthn,
        crate::accounts::passkeys::PasskeyConfig::default()
    );
    assert_eq!(c.webauthn.rp_id, "localhost");
    assert_eq!(c.webauthn.origins, vec!["http://localhost:8080".to_owned()]);
    assert_eq!(c.webauthn.ceremony_ttl, Duration::from_secs(300));
    let file: FileConfig = toml::from_str(
        "webauthn_rp_id = \"example.com\"\nwebauthn_origins = [\"https://example.com\"]\nwebauthn_ceremony_ttl_secs = 60",
    )
    .unwrap();
    let c = Config::resolve(
        file,
        &env(&[(
            "PARAPET_WEBAUTHN_ORIGINS",
            "https://example.com, https://app.example.com:8443",
        )]),
    )
    .unwrap();
    assert_eq!(c.webauthn.rp_id, "example.com");
    assert_eq!(c.webauthn.origins.len(), 2);
    assert_eq!(c.webauthn.ceremony_ttl, Duration::from_secs(60));
    let bad = env(&[("PARAPET_WEBAUTHN_ORIGINS", "http://127.0.0.1:8080")]);
    assert!(Config::resolve(FileConfig::default(), &bad).is_err());
}

#[test]
fn outbound_allow_from_file_and_env() {
    let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    assert!(c.outbound_allow.networks().is_empty());
    let loopback = "127.0.0.1".parse().unwrap();
    assert!(!c.outbound_allow.contains(loopback));
    let file: FileConfig =
        toml::from_str("outbound_allow = [\"127.0.0.1/32\", \"::1/128\"]").unwrap();
    let c = Config::resolve(file, &env(&[])).unwrap();
    assert_eq!(c.outbound_allow.networks().len(), 2);
    assert!(c.outbound_allow.contains(loopback));
    assert!(c.outbound_allow.contains("::1".parse().unwrap()));
    let file: FileConfig = toml::from_str("outbound_allow = [\"127.0.0.1/32\"]").unwrap();
    let c = Config::resolve(
        file,
        &env(&[("PARAPET_OUTBOUND_ALLOW", "10.0.0.0/8, fd00::/8")]),
    )
    .unwrap();
    assert!(!c.outbound_allow.contains(loopback));
    assert!(c.outbound_allow.contains("10.9.8.7".parse().unwrap()));
    assert!(c.outbound_allow.contains("fd00::1".parse().unwrap()));
    assert!(format!("{c:?}").contains("10.0.0.0/8"));
    let bad = env(&[("PARAPET_OUTBOUND_ALLOW", "10.0.0.0/8,internal.example")]);
    assert!(matches!(
        Config::resolve(FileConfig::default(), &bad),
        Err(Error::Config(_))
    ));
}

#[test]
fn redacts_passwords() {
    assert_eq!(
        redact_url("postgres://u:secret@h/db"),
        "postgres://u:***@h/db"
    );
    assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
}

#[test]
fn custody_defaults_to_the_file_keystore() {
    let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    assert_eq!(c.custody, CustodyKind::File);
    assert!(c.hsm.is_none());
}

#[test]
fn hsm_settings_from_file_env_and_pin_file() {
    use secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let pin_path = dir.path().join("pin");
    std::fs::write(&pin_path, "pin-from-file\n").unwrap();
    let file: FileConfig = toml::from_str(
        "custody = \"hsm\"\nhsm_token_label = \"gw\"\nhsm_pin = \"toml-pin\"\nhsm_audit_key_label = \"cp\"",
    )
    .unwrap();
    let c = Config::resolve(file, &env(&[])).unwrap();
    assert_eq!(c.custody, CustodyKind::Hsm);
    let hsm = c.hsm.unwrap();
    assert_eq!(hsm.module, Path::new(DEFAULT_HSM_MODULE));
    assert_eq!(hsm.token_label, "gw");
    assert_eq!(hsm.pin.expose_secret(), "toml-pin");
    assert_eq!(hsm.share_key_label, "parapet-share-key");
    assert_eq!(hsm.audit_key_label, "cp");
    let signer = hsm.signer_config();
    assert_eq!(signer.audit_key_label, "cp");
    assert_eq!(signer.token_label, "gw");

    let c = Config::resolve(
        FileConfig::default(),
        &env(&[
            ("PARAPET_CUSTODY", "hsm"),
            ("PARAPET_HSM_MODULE", "/opt/hsm/lib.so"),
            ("PARAPET_HSM_TOKEN_LABEL", "env-token"),
            ("PARAPET_HSM_PIN_FILE", pin_path.to_str().unwrap()),
            ("PARAPET_HSM_SHARE_KEY_LABEL", "shares"),
        ]),
    )
    .unwrap();
    let hsm = c.hsm.unwrap();
    assert_eq!(hsm.module, Path::new("/opt/hsm/lib.so"));
    assert_eq!(hsm.token_label, "env-token");
    assert_eq!(hsm.pin.expose_secret(), "pin-from-file");
    assert_eq!(hsm.share_key_label, "shares");
    assert_eq!(hsm.audit_key_label, "parapet-audit-key");
}

#[test]
fn incomplete_or_unknown_custody_is_refused() {
    for pairs in [
        &[("PARAPET_CUSTODY", "vault")][..],
        &[("PARAPET_CUSTODY", "hsm")][..],
        &[("PARAPET_CUSTODY", "hsm"), ("PARAPET_HSM_TOKEN_LABEL", "t")][..],
        &[("PARAPET_HSM_PIN", "1234")][..],
    ] {
        assert!(
            matches!(
                Config::resolve(FileConfig::default(), &env(pairs)),
                Err(Error::Config(_))
            ),
            "{pairs:?}"
        );
    }
    // HSM settings may be present while custody is still the file keystore (`hsm init`
    // runs before the switch).
    let c = Config::resolve(
        FileConfig::default(),
        &env(&[
            ("PARAPET_HSM_TOKEN_LABEL", "t"),
            ("PARAPET_HSM_PIN", "1234"),
        ]),
    )
    .unwrap();
    assert_eq!(c.custody, CustodyKind::File);
    assert!(c.hsm.is_some());
}

#[test]
fn debug_never_prints_the_hsm_pin() {
    let c = Config::resolve(
        FileConfig::default(),
        &env(&[
            ("PARAPET_CUSTODY", "hsm"),
            ("PARAPET_HSM_TOKEN_LABEL", "t"),
            ("PARAPET_HSM_PIN", "pin-4711-do-not-log"),
        ]),
    )
    .unwrap();
    let text = format!("{c:?}");
    assert!(text.contains("Hsm"), "{text}");
    assert!(!text.contains("pin-4711"), "{text}");
    let hsm = c.hsm.unwrap();
    assert!(!format!("{hsm:?}").contains("pin-4711"));
    assert!(!format!("{:?}", hsm.signer_config()).contains("pin-4711"));
}

#[test]
fn debug_never_prints_the_token() {
    let mut c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
    c.api_token = Some("super-secret-token-value".to_owned());
    assert!(!format!("{c:?}").contains("super-secret"));
}
