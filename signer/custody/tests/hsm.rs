//! Custody on a real SoftHSM2 token. Each test runs in a child process of this test binary with
//! its own `SOFTHSM2_CONF` and token directory: SoftHSM2 reads that variable once, at
//! `C_Initialize`, and setting it in-process would need `unsafe` (forbidden here).
//!
//! Without `/usr/lib/softhsm/libsofthsm2.so` the tests skip loudly, unless
//! `PARAPET_REQUIRE_SOFTHSM` is set (CI sets it), in which case they fail.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions"
)]

use std::path::Path;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use k256::ecdsa::signature::Verifier;
use k256::ecdsa::{Signature, VerifyingKey};
use parapet_custody::Error;
use parapet_custody::{Custody, Hsm, HsmConfig, hsm_init, pkcs11_context, share_aad};
use secrecy::SecretString;

use parapet_testkit::rerun_in_child;
use parapet_testkit::softhsm::{self, MODULE};

const TOKEN: &str = "parapet-test";
const PIN: &str = "user-pin-1234";
const SO_PIN: &str = "so-pin-5678";
const CHILD: &str = "PARAPET_SOFTHSM_CHILD";

fn config(pin: &str) -> HsmConfig {
    HsmConfig::new(MODULE, TOKEN, SecretString::from(pin.to_owned()))
}

/// Runs `body` against a fresh token: in the parent, sets up the token directory and re-runs
/// this one test in a child process; in the child, runs `body`.
fn in_softhsm(name: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        body();
        return;
    }
    if !softhsm::available(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = softhsm::init_token(dir.path(), TOKEN, PIN, SO_PIN);
    rerun_in_child(
        name,
        false,
        &[("SOFTHSM2_CONF", conf.as_os_str()), (CHILD, "1".as_ref())],
    );
}

/// Creates an AES-256 key under the share label with the given flags, bypassing `hsm_init`.
fn create_bad_share_key(extractable: bool, sensitive: bool) {
    let ctx = pkcs11_context(Path::new(MODULE)).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == TOKEN)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&SecretString::from(PIN.to_owned())))
        .unwrap();
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
                Attribute::Sensitive(sensitive),
                Attribute::Extractable(extractable),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
}

#[test]
fn seal_open_round_trip_and_tamper() {
    in_softhsm("seal_open_round_trip_and_tamper", || {
        hsm_init(&config(PIN)).unwrap();
        let hsm = Hsm::open(&config(PIN)).unwrap();
        let aad = share_aad(&[0xab; 20], 7);
        let sealed = hsm.seal(b"gateway share", &aad).unwrap();
        assert_eq!(sealed[0], 1, "version byte");
        assert_eq!(sealed.len(), 1 + 12 + 13 + 16);
        assert_eq!(
            hsm.open(&sealed, &aad).unwrap().as_slice(),
            b"gateway share"
        );
        // A fresh IV every time.
        assert_ne!(sealed, hsm.seal(b"gateway share", &aad).unwrap());

        let mut tampered = sealed.clone();
        tampered[14] ^= 0x01;
        assert!(matches!(hsm.open(&tampered, &aad), Err(Error::OpenFailed)));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 0x80;
        assert!(matches!(hsm.open(&tampered, &aad), Err(Error::OpenFailed)));
        let mut tampered = sealed.clone();
        tampered[3] ^= 0x01; // the IV
        assert!(matches!(hsm.open(&tampered, &aad), Err(Error::OpenFailed)));
        assert!(matches!(
            hsm.open(&sealed, &share_aad(&[0xab; 20], 8)),
            Err(Error::OpenFailed)
        ));
        assert!(matches!(
            hsm.open(&sealed, &share_aad(&[0xac; 20], 7)),
            Err(Error::OpenFailed)
        ));
        let mut wrong_version = sealed.clone();
        wrong_version[0] = 2;
        assert!(matches!(
            hsm.open(&wrong_version, &aad),
            Err(Error::SealedMalformed)
        ));
        assert!(matches!(hsm.seal(b"x", &[]), Err(Error::EmptyAad)));
        assert!(matches!(hsm.open(&sealed, &[]), Err(Error::EmptyAad)));
    });
}

#[test]
fn wrong_pin_refused() {
    in_softhsm("wrong_pin_refused", || {
        assert!(matches!(
            hsm_init(&config("not-the-pin")),
            Err(Error::WrongPin)
        ));
        assert!(matches!(
            Hsm::open(&config("not-the-pin")),
            Err(Error::WrongPin)
        ));
    });
}

#[test]
fn unknown_token_refused() {
    in_softhsm("unknown_token_refused", || {
        let mut config = config(PIN);
        config.token_label = "no-such-token".to_owned();
        assert!(matches!(Hsm::open(&config), Err(Error::TokenNotFound(_))));
    });
}

#[test]
fn missing_keys_refused() {
    in_softhsm("missing_keys_refused", || {
        match Hsm::open(&config(PIN)) {
            Err(Error::KeyMissing(label)) => assert_eq!(label, "parapet-share-key"),
            other => panic!("expected KeyMissing, got {other:?}"),
        }
        // With the share key but a differently labelled audit key, the audit key is missing.
        hsm_init(&config(PIN)).unwrap();
        let mut config = config(PIN);
        config.audit_key_label = "another-audit-key".to_owned();
        match Hsm::open(&config) {
            Err(Error::KeyMissing(label)) => assert_eq!(label, "another-audit-key"),
            other => panic!("expected KeyMissing, got {other:?}"),
        }
    });
}

#[test]
fn extractable_key_refused() {
    in_softhsm("extractable_key_refused", || {
        create_bad_share_key(true, true);
        assert!(matches!(
            hsm_init(&config(PIN)),
            Err(Error::KeyNotProtected { .. })
        ));
        match Hsm::open(&config(PIN)) {
            Err(Error::KeyNotProtected { reason, .. }) => assert!(reason.contains("EXTRACTABLE")),
            other => panic!("expected KeyNotProtected, got {other:?}"),
        }
    });
}

#[test]
fn non_sensitive_key_refused() {
    in_softhsm("non_sensitive_key_refused", || {
        create_bad_share_key(false, false);
        match Hsm::open(&config(PIN)) {
            Err(Error::KeyNotProtected { reason, .. }) => assert!(reason.contains("SENSITIVE")),
            other => panic!("expected KeyNotProtected, got {other:?}"),
        }
    });
}

#[test]
fn init_is_idempotent() {
    in_softhsm("init_is_idempotent", || {
        let first = hsm_init(&config(PIN)).unwrap();
        assert!(first.created_share_key && first.created_audit_key);
        let second = hsm_init(&config(PIN)).unwrap();
        assert!(!second.created_share_key && !second.created_audit_key);
        assert_eq!(first.audit_public_key, second.audit_public_key);
        let hsm = Hsm::open(&config(PIN)).unwrap();
        assert_eq!(hsm.checkpoint_public_key(), first.audit_public_key);
        assert_created_keys_are_locked_down();
        // Shares sealed before a second init still open: the key was not replaced.
        let aad = share_aad(&[1; 20], 0);
        let sealed = hsm.seal(b"kept", &aad).unwrap();
        hsm_init(&config(PIN)).unwrap();
        assert_eq!(hsm.open(&sealed, &aad).unwrap().as_slice(), b"kept");
    });
}

#[test]
fn checkpoint_signature_verifies_and_is_low_s() {
    in_softhsm("checkpoint_signature_verifies_and_is_low_s", || {
        hsm_init(&config(PIN)).unwrap();
        let hsm = Hsm::open(&config(PIN)).unwrap();
        let key = VerifyingKey::from_sec1_bytes(&hsm.checkpoint_public_key()).unwrap();
        // Raw CKM_ECDSA gives a high s about half the time: enough messages to see both.
        for i in 0..16u32 {
            let message = format!("{{\"seq\":\"{i}\",\"hash\":\"00\"}}");
            let raw = hsm.sign_checkpoint(message.as_bytes()).unwrap();
            let signature = Signature::from_slice(&raw).unwrap();
            assert!(signature.normalize_s().is_none(), "high s returned");
            // The same check the gateway's checkpoint verifier makes (ECDSA-SHA256).
            key.verify(message.as_bytes(), &signature).unwrap();
            assert!(key.verify(b"another message", &signature).is_err());
        }
    });
}

/// The keys `hsm_init` made: private, sensitive, never extractable, one purpose each.
fn assert_created_keys_are_locked_down() {
    use cryptoki::object::AttributeType as T;
    let ctx = pkcs11_context(Path::new(MODULE)).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == TOKEN)
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    let flags = |class: ObjectClass, label: &str, wanted: &[T]| -> Vec<Attribute> {
        let handle = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()[0];
        session.get_attributes(handle, wanted).unwrap()
    };
    let share = flags(
        ObjectClass::SECRET_KEY,
        "parapet-share-key",
        &[
            T::Token,
            T::Private,
            T::Sensitive,
            T::Extractable,
            T::NeverExtractable,
            T::Encrypt,
            T::Decrypt,
            T::Wrap,
            T::Unwrap,
            T::Sign,
            T::Derive,
        ],
    );
    for a in share {
        match a {
            Attribute::Token(v)
            | Attribute::Private(v)
            | Attribute::Sensitive(v)
            | Attribute::NeverExtractable(v)
            | Attribute::Encrypt(v)
            | Attribute::Decrypt(v) => assert!(v, "{a:?}"),
            Attribute::Extractable(v)
            | Attribute::Wrap(v)
            | Attribute::Unwrap(v)
            | Attribute::Sign(v)
            | Attribute::Derive(v) => assert!(!v, "{a:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let audit = flags(
        ObjectClass::PRIVATE_KEY,
        "parapet-audit-key",
        &[
            T::Token,
            T::Private,
            T::Sensitive,
            T::Extractable,
            T::Sign,
            T::Decrypt,
            T::Derive,
        ],
    );
    for a in audit {
        match a {
            Attribute::Token(v)
            | Attribute::Private(v)
            | Attribute::Sensitive(v)
            | Attribute::Sign(v) => {
                assert!(v, "{a:?}")
            }
            Attribute::Extractable(v) | Attribute::Decrypt(v) | Attribute::Derive(v) => {
                assert!(!v, "{a:?}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn concurrent_seal_open() {
    in_softhsm("concurrent_seal_open", || {
        hsm_init(&config(PIN)).unwrap();
        let hsm = std::sync::Arc::new(Hsm::open(&config(PIN)).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let hsm = hsm.clone();
                std::thread::spawn(move || {
                    for epoch in 0..25u64 {
                        let aad = share_aad(&[t; 20], epoch);
                        let plaintext = vec![t; 50_000];
                        let sealed = hsm.seal(&plaintext, &aad).unwrap();
                        assert_eq!(*hsm.open(&sealed, &aad).unwrap(), plaintext);
                        hsm.sign_checkpoint(&sealed[..16]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}
