//! Key custody as configured (docs/architecture.md §8, docs/adr/0002): the development keystore or
//! an HSM, opened once at start. `serve` refuses to start when the HSM is not in a state it may use
//! (wrong PIN, missing key, a key that could leave the HSM), so every refusal here says what is
//! wrong and what to do about it. The signer crate does the PKCS#11 work; this module maps its
//! errors into the gateway's and adapts the HSM's audit key to [`CheckpointSigner`].

pub mod sealing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parapet_custody::{Custody, FileKeystore, Hsm};
use serde::Serialize;

use crate::audit::checkpoint::{self, ALGORITHM, CheckpointSigner, FileSigner};
use crate::error::{Error, Result};

/// Which custody seals gateway shares and personal data, and signs audit checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustodyKind {
    /// The development keystore: keys in files under the data directory. Anyone who can read
    /// them can open every gateway share, so `serve` says so loudly at every start.
    File,
    /// A PKCS#11 token ([`HsmSettings`]): the keys never leave it.
    Hsm,
}

/// Where the HSM is and how to log in to it (`hsm_*` settings).
#[derive(Debug, Clone)]
pub struct HsmSettings {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Tokens are found by label: slot numbers change when tokens are added.
    pub token_label: String,
    /// The user PIN. `SecretString` so that it is redacted in `Debug` and wiped on drop.
    pub pin: secrecy::SecretString,
    pub share_key_label: String,
    pub audit_key_label: String,
}

impl HsmSettings {
    /// The signer crate's view of the same settings.
    pub fn signer_config(&self) -> parapet_custody::HsmConfig {
        let mut c = parapet_custody::HsmConfig::new(
            self.module.clone(),
            self.token_label.clone(),
            self.pin.clone(),
        );
        c.share_key_label.clone_from(&self.share_key_label);
        c.audit_key_label.clone_from(&self.audit_key_label);
        c
    }
}

/// What custody needs of the configuration ([`crate::config::Config::custody_config`]).
#[derive(Debug, Clone, Copy)]
pub struct CustodyConfig<'a> {
    pub kind: CustodyKind,
    pub hsm: Option<&'a HsmSettings>,
    pub data_dir: &'a Path,
}

/// Where the development keystore keeps its sealing key.
pub fn default_share_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("share-key")
}

/// Custody opened for `serve`: what seals (gateway shares, the personal data key) and what
/// signs audit checkpoints. With an HSM both are the same logged-in token.
#[derive(Debug, Clone)]
pub struct Opened {
    pub custody: Arc<dyn Custody>,
    pub checkpoint_signer: Arc<dyn CheckpointSigner>,
    pub kind: CustodyKind,
}

/// Opens custody as configured. With `custody = "hsm"`, logs in and checks both keys; any
/// problem is an [`Error::Config`] that names it and the fix.
pub fn open(config: CustodyConfig<'_>) -> Result<Opened> {
    match config.kind {
        CustodyKind::File => {
            if config.hsm.is_some() {
                tracing::warn!(
                    "HSM settings are configured but custody is \"file\": they are not used until custody = \"hsm\""
                );
            }
            let keystore = FileKeystore::open_or_create(&default_share_key_path(config.data_dir))
                .map_err(|e| Error::Config(format!("development keystore: {e}")))?;
            let signer =
                FileSigner::load_or_create(&checkpoint::default_key_path(config.data_dir))?;
            Ok(Opened {
                custody: Arc::new(keystore),
                checkpoint_signer: Arc::new(signer),
                kind: CustodyKind::File,
            })
        }
        CustodyKind::Hsm => {
            let settings = hsm_settings(config)?;
            let hsm = Arc::new(open_hsm(settings)?);
            tracing::info!(
                token = %settings.token_label,
                module = %settings.module.display(),
                share_key = %settings.share_key_label,
                audit_key = %settings.audit_key_label,
                audit_public_key = %hex::encode(hsm.checkpoint_public_key()),
                "HSM custody open: shares and personal data sealed, checkpoints signed, inside the HSM"
            );
            Ok(Opened {
                custody: hsm.clone(),
                checkpoint_signer: Arc::new(HsmCheckpointSigner { hsm }),
                kind: CustodyKind::Hsm,
            })
        }
    }
}

/// The configured checkpoint signer alone, for commands that sign or verify checkpoints
/// outside `serve` (`audit archive`, `audit verify`).
pub fn checkpoint_signer(config: CustodyConfig<'_>) -> Result<Arc<dyn CheckpointSigner>> {
    match config.kind {
        CustodyKind::File => Ok(Arc::new(FileSigner::load_or_create(
            &checkpoint::default_key_path(config.data_dir),
        )?)),
        CustodyKind::Hsm => Ok(Arc::new(HsmCheckpointSigner {
            hsm: Arc::new(open_hsm(hsm_settings(config)?)?),
        })),
    }
}

fn hsm_settings(config: CustodyConfig<'_>) -> Result<&HsmSettings> {
    config.hsm.ok_or_else(|| {
        Error::Config(
            "no HSM configured: set hsm_token_label and hsm_pin (or PARAPET_HSM_TOKEN_LABEL and PARAPET_HSM_PIN / PARAPET_HSM_PIN_FILE)"
                .to_owned(),
        )
    })
}

fn open_hsm(settings: &HsmSettings) -> Result<Hsm> {
    Hsm::open(&settings.signer_config()).map_err(|e| startup_error(settings, e))
}

/// What `parapet hsm init` did, as it prints it.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub module: String,
    pub token_label: String,
    pub share_key_label: String,
    pub created_share_key: bool,
    pub audit_key_label: String,
    pub created_audit_key: bool,
    /// Hex of the compressed SEC1 public key that verifies checkpoints (`audit verify
    /// --public-key`).
    pub audit_public_key: String,
}

/// Creates the share key and the audit key pair on the configured token when they are absent;
/// keys already there are checked and left alone, so running it again changes nothing.
pub fn init(config: CustodyConfig<'_>) -> Result<InitReport> {
    let settings = hsm_settings(config)?;
    let report = parapet_custody::hsm_init(&settings.signer_config())
        .map_err(|e| startup_error(settings, e))?;
    Ok(InitReport {
        module: settings.module.display().to_string(),
        token_label: settings.token_label.clone(),
        share_key_label: settings.share_key_label.clone(),
        created_share_key: report.created_share_key,
        audit_key_label: settings.audit_key_label.clone(),
        created_audit_key: report.created_audit_key,
        audit_public_key: hex::encode(report.audit_public_key),
    })
}

/// Turns a refusal from the signer into the message an operator needs at start: which check
/// failed and what to do. The PIN itself never appears (the signer's errors never carry it).
fn startup_error(settings: &HsmSettings, e: parapet_custody::Error) -> Error {
    use parapet_custody::Error as S;
    let token = &settings.token_label;
    let module = settings.module.display();
    Error::Config(match e {
        S::WrongPin => format!(
            "HSM token {token:?} refused the PIN: check hsm_pin / hsm_pin_file / PARAPET_HSM_PIN / PARAPET_HSM_PIN_FILE (repeated wrong PINs lock the token)"
        ),
        S::PinLocked => format!(
            "the user PIN of HSM token {token:?} is locked: the token's security officer must unlock it"
        ),
        S::TokenNotFound(_) => format!(
            "no HSM token labelled {token:?} in {module}: check hsm_token_label and hsm_module (for SoftHSM2 also SOFTHSM2_CONF)"
        ),
        S::TokenAmbiguous(_) => format!(
            "several HSM tokens are labelled {token:?} in {module}: give the gateway's token a unique label"
        ),
        S::KeyMissing(label) => format!(
            "HSM key {label:?} is missing on token {token:?}: run `parapet hsm init` to create the gateway's keys"
        ),
        S::KeyAmbiguous(label) => format!(
            "several objects on HSM token {token:?} are labelled {label:?}: the gateway will not guess which key to use; remove the extra objects or configure another label"
        ),
        S::KeyNotProtected { label, reason } => format!(
            "HSM key {label:?} on token {token:?} could leave the HSM ({reason}); refusing to use it. Keys must be sensitive and never extractable: move this key aside (anything it sealed must be re-sealed first, docs/adr/0002-share-custody.md) and run `parapet hsm init` to create a protected one"
        ),
        S::KeyUnusable { label, reason } => format!(
            "HSM key {label:?} on token {token:?} is unusable ({reason}): configure the right label, or move it aside and run `parapet hsm init`"
        ),
        S::Pkcs11(detail) => format!("HSM module {module}: {detail}"),
        other => format!("HSM token {token:?}: {other}"),
    })
}

/// Maps a failure while using custody after start (sealing, opening, signing). A module that
/// stops answering is a 503 the caller may retry; a blob that does not open is our fault.
pub fn runtime_error(e: parapet_custody::Error) -> Error {
    use parapet_custody::Error as S;
    match e {
        S::Pkcs11(detail) => Error::HsmUnavailable(detail),
        S::WrongPin | S::PinLocked | S::TokenNotFound(_) => Error::HsmUnavailable(e.to_string()),
        other => Error::Internal(format!("custody: {other}")),
    }
}

/// The audit checkpoint key inside the HSM, behind the same interface as [`FileSigner`]:
/// ECDSA secp256k1 over SHA-256, `r ‖ s` with low s (the signer normalises and verifies before
/// returning), compressed SEC1 public key, so checkpoints verify exactly like the file key's.
#[derive(Debug)]
pub struct HsmCheckpointSigner {
    hsm: Arc<Hsm>,
}

impl HsmCheckpointSigner {
    pub fn new(hsm: Arc<Hsm>) -> Self {
        HsmCheckpointSigner { hsm }
    }
}

impl CheckpointSigner for HsmCheckpointSigner {
    fn algorithm(&self) -> &'static str {
        ALGORITHM
    }
    fn public_key(&self) -> Vec<u8> {
        self.hsm.checkpoint_public_key().to_vec()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.hsm
            .sign_checkpoint(message)
            .map(|sig| sig.to_vec())
            .map_err(runtime_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    use crate::config::Config;

    fn settings() -> HsmSettings {
        HsmSettings {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "gw".to_owned(),
            pin: SecretString::from("1234".to_owned()),
            share_key_label: "s".to_owned(),
            audit_key_label: "a".to_owned(),
        }
    }

    #[test]
    fn startup_refusals_say_what_to_do() {
        use parapet_custody::Error as S;
        let msg = |e| startup_error(&settings(), e).to_string();
        assert!(msg(S::WrongPin).contains("refused the PIN"));
        assert!(msg(S::KeyMissing("s".into())).contains("parapet hsm init"));
        let m = msg(S::KeyNotProtected {
            label: "s".into(),
            reason: "CKA_EXTRACTABLE is not false",
        });
        assert!(
            m.contains("CKA_EXTRACTABLE") && m.contains("parapet hsm init"),
            "{m}"
        );
        assert!(!msg(S::WrongPin).contains("1234"));
        assert_eq!(
            runtime_error(S::Pkcs11("CKR_DEVICE_REMOVED".into())).code(),
            "hsm_unavailable"
        );
    }

    #[test]
    fn file_custody_opens_the_development_keystore() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None, &Default::default()).unwrap();
        config.data_dir = dir.path().join("data");
        let opened = open(config.custody_config()).unwrap();
        assert_eq!(opened.kind, CustodyKind::File);
        assert!(default_share_key_path(&config.data_dir).exists());
        let sealed = opened.custody.seal(b"x", b"aad").unwrap();
        assert_eq!(
            opened.custody.open(&sealed, b"aad").unwrap().as_slice(),
            b"x"
        );
        let signer = checkpoint_signer(config.custody_config()).unwrap();
        assert_eq!(
            signer.public_key(),
            opened.checkpoint_signer.public_key(),
            "audit commands use the key serve uses"
        );
    }
}
