//! The development keystore: the sealing key is 32 random bytes in a local file (mode 0600).
//! Anyone who can read that file can open every gateway share, which is why it is only the
//! default for development and says so loudly whenever it is opened.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::{Custody, IV_LEN, assemble_sealed, check_aad, parse_sealed, random_iv};
use crate::{Error, Result};

/// AES-256-GCM with a key read from (or created in) a local file. Development only.
pub struct FileKeystore {
    cipher: Aes256Gcm,
    path: PathBuf,
}

impl std::fmt::Debug for FileKeystore {
    // Hand-written so that the key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeystore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileKeystore {
    /// Opens the key file at `path`, creating it with a fresh random key (mode 0600) when it
    /// does not exist. A file readable by group or others is refused.
    pub fn open_or_create(path: &Path) -> Result<FileKeystore> {
        let err = |reason: String| Error::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let key: Zeroizing<[u8; 32]> = match std::fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(err(
                        "readable by group or others: chmod 600 it (and consider the key compromised)"
                            .to_owned(),
                    ));
                }
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
                let array: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| err("not a 32-byte key".to_owned()))?;
                Zeroizing::new(array)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Zeroizing::new(random_key());
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?;
                file.write_all(key.as_slice())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "generated the development share key");
                key
            }
            Err(e) => return Err(err(e.to_string())),
        };
        tracing::warn!(
            path = %path.display(),
            "DEVELOPMENT KEYSTORE: gateway key shares are sealed with a key in a local file; \
             anyone who can read it can open every gateway share. Use an HSM (PKCS#11) in production."
        );
        let cipher = Aes256Gcm::new_from_slice(key.as_slice())
            .map_err(|_| err("not a 32-byte key".to_owned()))?;
        Ok(FileKeystore {
            cipher,
            path: path.to_path_buf(),
        })
    }
}

fn random_key() -> [u8; 32] {
    use aes_gcm::aead::rand_core::RngCore;
    let mut key = [0u8; 32];
    aes_gcm::aead::OsRng.fill_bytes(&mut key);
    key
}

impl Custody for FileKeystore {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        check_aad(aad)?;
        let iv: [u8; IV_LEN] = random_iv();
        let body = self
            .cipher
            .encrypt(
                &Nonce::from(iv),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::OpenFailed)?;
        Ok(assemble_sealed(&iv, &body))
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        check_aad(aad)?;
        let (iv, body) = parse_sealed(sealed)?;
        self.cipher
            .decrypt(&Nonce::from(iv), Payload { msg: body, aad })
            .map(Zeroizing::new)
            .map_err(|_| Error::OpenFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share_aad;

    #[test]
    fn round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/share-key");
        let ks = FileKeystore::open_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let aad = share_aad(&[7; 20], 3);
        let sealed = ks.seal(b"share bytes", &aad).unwrap();
        assert_eq!(sealed[0], 1);
        assert_eq!(ks.open(&sealed, &aad).unwrap().as_slice(), b"share bytes");

        // The same file opens the same key.
        let again = FileKeystore::open_or_create(&path).unwrap();
        assert_eq!(
            again.open(&sealed, &aad).unwrap().as_slice(),
            b"share bytes"
        );

        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(ks.open(&tampered, &aad), Err(Error::OpenFailed)));
        let mut tampered = sealed.clone();
        tampered[1 + IV_LEN] ^= 1;
        assert!(matches!(ks.open(&tampered, &aad), Err(Error::OpenFailed)));
        assert!(matches!(
            ks.open(&sealed, &share_aad(&[7; 20], 4)),
            Err(Error::OpenFailed)
        ));
        assert!(matches!(ks.seal(b"x", &[]), Err(Error::EmptyAad)));
        assert!(matches!(ks.open(&sealed, &[]), Err(Error::EmptyAad)));

        // Another key file cannot open it.
        let other = FileKeystore::open_or_create(&dir.path().join("other")).unwrap();
        assert!(matches!(other.open(&sealed, &aad), Err(Error::OpenFailed)));
    }

    #[test]
    fn loose_permissions_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share-key");
        FileKeystore::open_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            FileKeystore::open_or_create(&path),
            Err(Error::KeyFile { .. })
        ));
    }

    #[test]
    fn wrong_length_key_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share-key");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(&[0; 16])
            .unwrap();
        assert!(matches!(
            FileKeystore::open_or_create(&path),
            Err(Error::KeyFile { .. })
        ));
    }
}
