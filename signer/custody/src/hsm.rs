//! Custody in an HSM through PKCS#11 (`cryptoki`; SoftHSM2 in tests and CI).
//!
//! Two keys live on the token, found by label:
//! - an AES-256 key that seals gateway shares with `CKM_AES_GCM` and never leaves the HSM;
//! - a secp256k1 key pair that signs audit checkpoints (`CKM_ECDSA` over a SHA-256 digest
//!   computed here, then normalised to low-s so that the signature matches what the file signer
//!   produces).
//!
//! [`Hsm::open`] refuses a wrong PIN, a missing key, and a key that could leave the HSM
//! (extractable, or not sensitive): the gateway must not start in any of those states.
//! [`hsm_init`] creates both keys when absent (`parapet hsm init`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{Signature, VerifyingKey};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Custody, IV_LEN, TAG_LEN, assemble_sealed, check_aad, parse_sealed, random_iv};
use crate::{Error, Result};

/// Label of the AES key that seals gateway shares, unless configured otherwise.
pub const DEFAULT_SHARE_KEY_LABEL: &str = "parapet-share-key";
/// Label of the EC key pair that signs audit checkpoints, unless configured otherwise.
pub const DEFAULT_AUDIT_KEY_LABEL: &str = "parapet-audit-key";

/// DER encoding of the secp256k1 OID (1.3.132.0.10), the `CKA_EC_PARAMS` of the audit key.
const SECP256K1_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// Where the HSM is and how to log in.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label. Slot numbers change when tokens are added, labels do not.
    pub token_label: String,
    /// The user PIN (redacted in `Debug`, wiped on drop).
    pub user_pin: SecretString,
    /// Label of the AES-256 share-sealing key.
    pub share_key_label: String,
    /// Label of the secp256k1 audit checkpoint key pair.
    pub audit_key_label: String,
}

impl HsmConfig {
    /// A configuration with the default key labels.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        user_pin: SecretString,
    ) -> Self {
        HsmConfig {
            module: module.into(),
            token_label: token_label.into(),
            user_pin,
            share_key_label: DEFAULT_SHARE_KEY_LABEL.to_owned(),
            audit_key_label: DEFAULT_AUDIT_KEY_LABEL.to_owned(),
        }
    }
}

/// What [`hsm_init`] did. Running it again on a set-up token creates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmInitReport {
    pub created_share_key: bool,
    pub created_audit_key: bool,
    /// The audit key's compressed SEC1 public key (33 bytes), for `audit verify --public-key`.
    pub audit_public_key: [u8; 33],
}

/// A logged-in HSM with both keys checked. Cheap to share behind an `Arc`.
pub struct Hsm {
    ctx: Pkcs11,
    slot: Slot,
    /// Keeps the token logged in: PKCS#11 login state belongs to the application and ends
    /// when its last session closes, so operations open short sessions next to this one.
    _login: Mutex<Session>,
    share_key: ObjectHandle,
    audit_key: ObjectHandle,
    audit_public: VerifyingKey,
    audit_public_compressed: [u8; 33],
    token_label: String,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

/// The process-wide `Pkcs11` context for `module`, initialised on first use. `C_Initialize` may
/// run only once per process, so everything that talks to the module (every [`Hsm`], other
/// PKCS#11 work in the gateway, tests) must go through this one context.
pub fn pkcs11_context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| Error::Pkcs11("context lock poisoned".to_owned()))?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module)
        .map_err(|e| Error::Pkcs11(format!("loading {}: {e}", module.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize)) => {}
        Err(e) => return Err(ck(e)),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn ck(e: CkError) -> Error {
    match e {
        CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _) => {
            Error::WrongPin
        }
        CkError::Pkcs11(RvError::PinLocked, _) => Error::PinLocked,
        other => Error::Pkcs11(other.to_string()),
    }
}

fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot> {
    let mut found = None;
    for slot in ctx.get_slots_with_token().map_err(ck)? {
        let info = ctx.get_token_info(slot).map_err(ck)?;
        if info.label().trim_end() == label {
            if found.is_some() {
                return Err(Error::TokenAmbiguous(label.to_owned()));
            }
            found = Some(slot);
        }
    }
    found.ok_or_else(|| Error::TokenNotFound(label.to_owned()))
}

/// Opens a session on the token and logs the user in. A token already logged in by this
/// process (another `Hsm` on it) is accepted as it is.
fn login(ctx: &Pkcs11, slot: Slot, pin: &SecretString) -> Result<Session> {
    let session = ctx.open_rw_session(slot).map_err(ck)?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(ck(e)),
    }
}

fn find_one(session: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck)?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(Error::KeyAmbiguous(label.to_owned())),
    }
}

/// The attributes that decide whether a key may be used.
#[derive(Default)]
struct KeyFacts {
    extractable: Option<bool>,
    sensitive: Option<bool>,
    key_type: Option<KeyType>,
    value_len: Option<usize>,
    ec_params: Option<Vec<u8>>,
}

fn key_facts(session: &Session, key: ObjectHandle, ec: bool) -> Result<KeyFacts> {
    let mut wanted = vec![
        AttributeType::Extractable,
        AttributeType::Sensitive,
        AttributeType::KeyType,
    ];
    wanted.push(if ec {
        AttributeType::EcParams
    } else {
        AttributeType::ValueLen
    });
    let mut facts = KeyFacts::default();
    for attribute in session.get_attributes(key, &wanted).map_err(ck)? {
        match attribute {
            Attribute::Extractable(b) => facts.extractable = Some(b),
            Attribute::Sensitive(b) => facts.sensitive = Some(b),
            Attribute::KeyType(t) => facts.key_type = Some(t),
            Attribute::ValueLen(n) => facts.value_len = Some(usize::from(n)),
            Attribute::EcParams(p) => facts.ec_params = Some(p),
            _ => {}
        }
    }
    Ok(facts)
}

/// Refuses a key that could leave the HSM. An attribute the module does not report counts as
/// unprotected: the check must fail closed.
fn check_protected(label: &str, facts: &KeyFacts) -> Result<()> {
    if facts.extractable != Some(false) {
        return Err(Error::KeyNotProtected {
            label: label.to_owned(),
            reason: "CKA_EXTRACTABLE is not false",
        });
    }
    if facts.sensitive != Some(true) {
        return Err(Error::KeyNotProtected {
            label: label.to_owned(),
            reason: "CKA_SENSITIVE is not true",
        });
    }
    Ok(())
}

fn check_share_key(session: &Session, label: &str) -> Result<ObjectHandle> {
    let key = find_one(session, ObjectClass::SECRET_KEY, label)?
        .ok_or_else(|| Error::KeyMissing(label.to_owned()))?;
    let facts = key_facts(session, key, false)?;
    check_protected(label, &facts)?;
    if facts.key_type != Some(KeyType::AES) || facts.value_len != Some(32) {
        return Err(Error::KeyUnusable {
            label: label.to_owned(),
            reason: "not an AES-256 key",
        });
    }
    Ok(key)
}

fn check_audit_key(session: &Session, label: &str) -> Result<(ObjectHandle, VerifyingKey)> {
    let private = find_one(session, ObjectClass::PRIVATE_KEY, label)?
        .ok_or_else(|| Error::KeyMissing(label.to_owned()))?;
    let facts = key_facts(session, private, true)?;
    check_protected(label, &facts)?;
    if facts.key_type != Some(KeyType::EC) || facts.ec_params.as_deref() != Some(&SECP256K1_OID[..])
    {
        return Err(Error::KeyUnusable {
            label: label.to_owned(),
            reason: "not a secp256k1 key",
        });
    }
    let public = find_one(session, ObjectClass::PUBLIC_KEY, label)?
        .ok_or_else(|| Error::KeyMissing(format!("{label} (public key)")))?;
    let point = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(ck)?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| Error::KeyUnusable {
            label: label.to_owned(),
            reason: "public key has no CKA_EC_POINT",
        })?;
    let verifying = parse_ec_point(&point).ok_or_else(|| Error::KeyUnusable {
        label: label.to_owned(),
        reason: "public key is not a secp256k1 point",
    })?;
    Ok((private, verifying))
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (SoftHSM2 and most modules);
/// a few modules return the raw point. Accept both.
fn parse_ec_point(raw: &[u8]) -> Option<VerifyingKey> {
    let point = match raw {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        other => other,
    };
    VerifyingKey::from_sec1_bytes(point).ok()
}

fn compressed(key: &VerifyingKey) -> Result<[u8; 33]> {
    key.to_encoded_point(true)
        .as_bytes()
        .try_into()
        .map_err(|_| Error::Pkcs11("unexpected public key length".to_owned()))
}

impl Hsm {
    /// Logs in and checks both keys. Every refusal here is a reason not to start.
    pub fn open(config: &HsmConfig) -> Result<Hsm> {
        let ctx = pkcs11_context(&config.module)?;
        let slot = find_slot(&ctx, &config.token_label)?;
        let session = login(&ctx, slot, &config.user_pin)?;
        let share_key = check_share_key(&session, &config.share_key_label)?;
        let (audit_key, audit_public) = check_audit_key(&session, &config.audit_key_label)?;
        let audit_public_compressed = compressed(&audit_public)?;
        Ok(Hsm {
            ctx,
            slot,
            _login: Mutex::new(session),
            share_key,
            audit_key,
            audit_public,
            audit_public_compressed,
            token_label: config.token_label.clone(),
        })
    }

    fn session(&self) -> Result<Session> {
        self.ctx.open_ro_session(self.slot).map_err(ck)
    }

    /// Signs an audit checkpoint: ECDSA over SHA-256(`message`) with the HSM's audit key, as
    /// `r ‖ s` with low s. The signature is verified against the public key before it is
    /// returned, so a misbehaving module cannot produce a checkpoint nobody can verify.
    pub fn sign_checkpoint(&self, message: &[u8]) -> Result<[u8; 64]> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        let raw = self
            .session()?
            .sign(&Mechanism::Ecdsa, self.audit_key, &digest)
            .map_err(ck)?;
        let signature = Signature::from_slice(&raw).map_err(|_| Error::BadHsmSignature)?;
        // About half of raw CKM_ECDSA signatures have a high s: normalise (EIP-2 / BIP-62 form).
        let signature = signature.normalize_s().unwrap_or(signature);
        self.audit_public
            .verify_prehash(&digest, &signature)
            .map_err(|_| Error::BadHsmSignature)?;
        Ok(signature.to_bytes().into())
    }

    /// The audit key's compressed SEC1 public key.
    pub fn checkpoint_public_key(&self) -> [u8; 33] {
        self.audit_public_compressed
    }
}

impl Custody for Hsm {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        check_aad(aad)?;
        let iv: [u8; IV_LEN] = random_iv();
        let mut iv_param = iv;
        let params =
            GcmParams::new(&mut iv_param, aad, ((TAG_LEN * 8) as u64).into()).map_err(ck)?;
        let body = self
            .session()?
            .encrypt(&Mechanism::AesGcm(params), self.share_key, plaintext)
            .map_err(ck)?;
        Ok(assemble_sealed(&iv, &body))
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        check_aad(aad)?;
        let (mut iv, body) = parse_sealed(sealed)?;
        let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into()).map_err(ck)?;
        match self
            .session()?
            .decrypt(&Mechanism::AesGcm(params), self.share_key, body)
        {
            Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
            // SoftHSM2 reports a failed tag check as a general error, others as invalid data.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
                _,
            )) => Err(Error::OpenFailed),
            Err(e) => Err(ck(e)),
        }
    }
}

/// Creates the share key and the audit key pair on the token when they are absent (token
/// objects, private, sensitive, never extractable, each usable only for its one purpose).
/// Keys already there are checked as [`Hsm::open`] checks them and left alone.
pub fn hsm_init(config: &HsmConfig) -> Result<HsmInitReport> {
    let ctx = pkcs11_context(&config.module)?;
    let slot = find_slot(&ctx, &config.token_label)?;
    let session = login(&ctx, slot, &config.user_pin)?;

    let share_label = config.share_key_label.as_bytes().to_vec();
    let created_share_key =
        match find_one(&session, ObjectClass::SECRET_KEY, &config.share_key_label)? {
            Some(_) => false,
            None => {
                session
                    .generate_key(
                        &Mechanism::AesKeyGen,
                        &[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::AES),
                            Attribute::ValueLen(32.into()),
                            Attribute::Label(share_label),
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Encrypt(true),
                            Attribute::Decrypt(true),
                            Attribute::Wrap(false),
                            Attribute::Unwrap(false),
                            Attribute::Sign(false),
                            Attribute::Verify(false),
                            Attribute::Derive(false),
                        ],
                    )
                    .map_err(ck)?;
                true
            }
        };
    check_share_key(&session, &config.share_key_label)?;

    let audit_label = config.audit_key_label.as_bytes().to_vec();
    let created_audit_key =
        match find_one(&session, ObjectClass::PRIVATE_KEY, &config.audit_key_label)? {
            Some(_) => false,
            None => {
                session
                    .generate_key_pair(
                        &Mechanism::EccKeyPairGen,
                        &[
                            Attribute::Token(true),
                            Attribute::Private(false),
                            Attribute::KeyType(KeyType::EC),
                            Attribute::EcParams(SECP256K1_OID.to_vec()),
                            Attribute::Label(audit_label.clone()),
                            Attribute::Verify(true),
                            Attribute::Encrypt(false),
                            Attribute::Wrap(false),
                            Attribute::Derive(false),
                        ],
                        &[
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Label(audit_label),
                            Attribute::Sign(true),
                            Attribute::Decrypt(false),
                            Attribute::Unwrap(false),
                            Attribute::Derive(false),
                        ],
                    )
                    .map_err(ck)?;
                true
            }
        };
    let (_, public) = check_audit_key(&session, &config.audit_key_label)?;
    let audit_public_key = compressed(&public)?;
    Ok(HsmInitReport {
        created_share_key,
        created_audit_key,
        audit_public_key,
    })
}
