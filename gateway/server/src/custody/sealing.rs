//! Sealing of the personal data the gateway keeps (OIDC claims, webhook and TOTP secrets).
//!
//! A random 256-bit data key is generated at first start and stored only sealed by custody
//! (the HSM's AES key in production), in `<data_dir>/data-key.sealed`. At start it is opened
//! into memory that is wiped on drop; personal data is then sealed with it locally
//! (AES-256-GCM), so each record costs no HSM round trip while the key itself stays useless
//! without the HSM.
//!
//! Sealed format, version 1 (the same layout as sealed shares): `0x01 ‖ 96-bit random IV ‖
//! ciphertext ‖ 128-bit tag`. Associated data is required: it binds a value to the record it
//! belongs to (e.g. `b"totp:" ‖ user id`), so a value copied to another record does not open.

use std::path::{Path, PathBuf};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use parapet_custody::Custody;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Associated data of the sealed data key itself.
pub const DATA_KEY_AAD: &[u8] = b"parapet-data-key-v1";
const VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Where the sealed data key lives under the data directory.
pub fn default_data_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("data-key.sealed")
}

/// The opened personal data key.
pub struct PersonalDataKey {
    /// The `aes` crate's `zeroize` feature wipes the expanded key when this is dropped.
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for PersonalDataKey {
    // Hand-written so that the key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonalDataKey").finish_non_exhaustive()
    }
}

impl PersonalDataKey {
    /// Opens the sealed data key at `path` with `custody`, or generates one and stores it
    /// sealed (mode 0600) when there is none yet. A key that does not open means the data
    /// directory was sealed by other custody (another HSM key, or the development keystore):
    /// the gateway refuses to start rather than generate a new key and orphan the data.
    pub fn open_or_create(custody: &dyn Custody, path: &Path) -> Result<PersonalDataKey> {
        match std::fs::read(path) {
            Ok(sealed) => Self::open_sealed(custody, &sealed, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Zeroizing::new(random_key());
                let sealed = custody
                    .seal(key.as_slice(), DATA_KEY_AAD)
                    .map_err(crate::custody::runtime_error)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::Config(format!("creating {}: {e}", dir.display())))?;
                }
                if let Err(error) = crate::secret_file::create_private(path, &sealed) {
                    // Another process that shares this data directory may have won the race:
                    // use its key, never overwrite it.
                    return match std::fs::read(path) {
                        Ok(theirs) if !theirs.is_empty() => {
                            Self::open_sealed(custody, &theirs, path)
                        }
                        _ => Err(error),
                    };
                }
                tracing::info!(path = %path.display(), "generated the personal data key (stored sealed)");
                Self::from_key(key.as_slice())
            }
            Err(e) => Err(Error::Config(format!("reading {}: {e}", path.display()))),
        }
    }

    fn open_sealed(custody: &dyn Custody, sealed: &[u8], path: &Path) -> Result<PersonalDataKey> {
        let key = custody.open(sealed, DATA_KEY_AAD).map_err(|e| match e {
            parapet_custody::Error::OpenFailed | parapet_custody::Error::SealedMalformed => {
                Error::Config(format!(
                    "the personal data key {} does not open with the configured custody: it was sealed by another key (a different HSM key, or the development keystore before switching to custody = \"hsm\"); restore the matching key or data directory",
                    path.display()
                ))
            }
            other => crate::custody::runtime_error(other),
        })?;
        Self::from_key(key.as_slice())
    }

    fn from_key(key: &[u8]) -> Result<PersonalDataKey> {
        Aes256Gcm::new_from_slice(key)
            .map(|cipher| PersonalDataKey { cipher })
            .map_err(|_| Error::Config("the personal data key is not 32 bytes".to_owned()))
    }

    /// Encrypts `plaintext` under a fresh random IV, bound to `aad` (must not be empty).
    pub fn seal_personal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        check_aad(aad)?;
        let mut iv = [0u8; IV_LEN];
        OsRng.fill_bytes(&mut iv);
        let body = self
            .cipher
            .encrypt(
                &Nonce::from(iv),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Internal("sealing personal data failed".to_owned()))?;
        let mut out = Vec::with_capacity(1 + IV_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Authenticates and decrypts; the plaintext is wiped from memory when dropped. Tampered
    /// data, another record's `aad` or another key all fail the same way.
    pub fn open_personal(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        check_aad(aad)?;
        let malformed = || Error::Internal("sealed personal data is malformed".to_owned());
        let (&version, rest) = sealed.split_first().ok_or_else(malformed)?;
        if version != VERSION || rest.len() < IV_LEN + TAG_LEN {
            return Err(malformed());
        }
        let (iv, body) = rest.split_at(IV_LEN);
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| malformed())?;
        self.cipher
            .decrypt(&Nonce::from(iv), Payload { msg: body, aad })
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Internal(
                    "sealed personal data does not open (tampered, another record, or another key)"
                        .to_owned(),
                )
            })
    }
}

fn check_aad(aad: &[u8]) -> Result<()> {
    if aad.is_empty() {
        return Err(Error::Internal(
            "personal data must be sealed with associated data naming its record".to_owned(),
        ));
    }
    Ok(())
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use parapet_custody::FileKeystore;

    #[test]
    fn data_key_is_created_sealed_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let custody = FileKeystore::open_or_create(&dir.path().join("share-key")).unwrap();
        let path = default_data_key_path(&dir.path().join("data"));
        let key = PersonalDataKey::open_or_create(&custody, &path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // Stored sealed: version byte, IV, 32-byte key, tag.
        let stored = std::fs::read(&path).unwrap();
        assert_eq!(stored.len(), 1 + IV_LEN + 32 + TAG_LEN);
        assert!(custody.open(&stored, b"another purpose").is_err());

        let sealed = key
            .seal_personal(b"JBSWY3DPEHPK3PXP", b"totp:user_1")
            .unwrap();
        assert_eq!(sealed.first(), Some(&VERSION));
        let again = PersonalDataKey::open_or_create(&custody, &path).unwrap();
        assert_eq!(
            again
                .open_personal(&sealed, b"totp:user_1")
                .unwrap()
                .as_slice(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert_eq!(std::fs::read(&path).unwrap(), stored, "never rewritten");
        assert!(!format!("{again:?}").contains("cipher"));
    }

    #[test]
    fn tampering_other_records_and_other_keys_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let custody = FileKeystore::open_or_create(&dir.path().join("share-key")).unwrap();
        let key =
            PersonalDataKey::open_or_create(&custody, &dir.path().join("data-key.sealed")).unwrap();
        let sealed = key.seal_personal(b"secret", b"webhook:app_1").unwrap();
        assert_ne!(
            sealed,
            key.seal_personal(b"secret", b"webhook:app_1").unwrap()
        );
        assert!(key.open_personal(&sealed, b"webhook:app_2").is_err());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(key.open_personal(&t, b"webhook:app_1").is_err(), "byte {i}");
        }
        assert!(key.open_personal(&sealed[..20], b"webhook:app_1").is_err());
        assert!(key.open_personal(&[], b"webhook:app_1").is_err());
        assert!(key.seal_personal(b"x", b"").is_err());
        assert!(key.open_personal(&sealed, b"").is_err());

        // A data key of another data directory cannot open it.
        let other =
            PersonalDataKey::open_or_create(&custody, &dir.path().join("other.sealed")).unwrap();
        assert!(other.open_personal(&sealed, b"webhook:app_1").is_err());
    }

    #[test]
    fn a_data_key_sealed_by_other_custody_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileKeystore::open_or_create(&dir.path().join("k1")).unwrap();
        let second = FileKeystore::open_or_create(&dir.path().join("k2")).unwrap();
        let path = dir.path().join("data-key.sealed");
        PersonalDataKey::open_or_create(&first, &path).unwrap();
        let err = PersonalDataKey::open_or_create(&second, &path).unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("another key")),
            "{err}"
        );
    }
}
