//! The device's file (docs/architecture.md §8): everything a device keeps — the gateway it is
//! paired with, its device token, its key shares, the user's recovery public key — sealed under a
//! key derived from the user's passphrase with Argon2id and encrypted with AES-256-GCM. Only the
//! KDF parameters, salt and nonce are in clear; the file is replaced atomically and readable by its
//! owner only.

#[cfg(unix)]
use std::io::Write;
#[cfg(unix)]
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

/// Argon2id cost of new files: 64 MiB, 3 passes, 1 lane (OWASP's first recommended setting).
pub const KDF_MEMORY_KIB: u32 = 64 * 1024;
pub const KDF_PASSES: u32 = 3;
pub const KDF_LANES: u32 = 1;

/// A passphrase shorter than this is refused when a file is created.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

const FORMAT: &str = "parapet-device-file-v1";

/// The clear-text envelope on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    format: String,
    kdf: Kdf,
    nonce: String,
    ciphertext: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct KdfParams {
    m_kib: u32,
    t: u32,
    p: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Kdf {
    alg: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

/// What the file protects. `Debug` never shows the token or shares.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceSecrets {
    /// The gateway's base URL.
    pub gateway: String,
    pub device_id: String,
    pub user: String,
    /// `Authorization: Device <token>`.
    pub device_token: String,
    /// The device's key shares, by wallet address (lower-case 0x), as the MPC library encodes
    /// them (hex).
    #[serde(default)]
    pub shares: std::collections::BTreeMap<String, String>,
    /// The user's recovery public key (hex), kept here so that backups are always sealed to the
    /// key the user's own secret derives, never to one the gateway supplies
    /// (docs/architecture.md §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_public_key: Option<String>,
    /// The salt the user's recovery secret derives with (`rs_…`), kept with the public key;
    /// absent for secrets set up before salts existed, which derive with the user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_salt: Option<String>,
    /// Each wallet's current backup kit, under the same keys as `shares` (a refreshed wallet's
    /// pending kit waits under `address#epoch` with its share).
    #[serde(default)]
    pub kits: std::collections::BTreeMap<String, parapet_mpc::recovery::kit::BackupKit>,
    /// A recovery this (new) device opened and will complete after the waiting period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_pending: Option<PendingRecovery>,
    /// This device's own X25519 private key (hex), made when it asked another device for the
    /// user's wallets; re-syncs after a refresh are sealed to it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
    /// Devices this one gave wallets to: their public key as the user confirmed it by short
    /// code, so that re-syncs go to that key and never to one the gateway names later.
    #[serde(default)]
    pub siblings: std::collections::BTreeMap<String, Sibling>,
}

impl DeviceSecrets {
    /// What the recovery secret's keys derive with, and what kits name: the recovery salt, or
    /// the user id for secrets set up before salts existed.
    #[must_use]
    pub fn kdf_salt(&self) -> &str {
        self.recovery_salt.as_deref().unwrap_or(&self.user)
    }
}

/// Another device of the user that this device sealed wallets to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sibling {
    /// X25519 public key, hex, as confirmed by short code.
    pub public_key: String,
    /// The wallets it was given (lower-case 0x addresses).
    pub wallets: Vec<String>,
}

/// The recovery a device opened: its id and bearer token (a secret, kept only in this file).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRecovery {
    pub id: String,
    pub token: String,
    pub completable_at: String,
}

impl std::fmt::Debug for DeviceSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSecrets")
            .field("gateway", &self.gateway)
            .field("device_id", &self.device_id)
            .field("user", &self.user)
            .field("wallets", &self.shares.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for DeviceSecrets {
    fn drop(&mut self) {
        self.device_token.zeroize();
        for share in self.shares.values_mut() {
            share.zeroize();
        }
        if let Some(r) = self.recovery_pending.as_mut() {
            r.token.zeroize();
        }
        if let Some(k) = self.device_key.as_mut() {
            k.zeroize();
        }
    }
}

fn derive_key(passphrase: &str, salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let p = Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| Error::DeviceFile(format!("KDF parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| Error::DeviceFile(format!("KDF: {e}")))?;
    Ok(key)
}

/// Seals `secrets` under `passphrase` with the given KDF cost (tests use a small one).
fn seal_with(secrets: &DeviceSecrets, passphrase: &str, params: KdfParams) -> Result<Vec<u8>> {
    let salt: [u8; 16] = rand::random();
    let nonce: [u8; 12] = rand::random();
    let key = derive_key(passphrase, &salt, params)?;
    let plain = Zeroizing::new(
        serde_json::to_vec(secrets).map_err(|e| Error::DeviceFile(format!("encoding: {e}")))?,
    );
    let cipher = Aes256Gcm::new_from_slice(key.as_ref())
        .map_err(|_| Error::DeviceFile("key length".to_owned()))?;
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plain.as_ref(),
                aad: FORMAT.as_bytes(),
            },
        )
        .map_err(|_| Error::DeviceFile("encryption failed".to_owned()))?;
    let env = Envelope {
        format: FORMAT.to_owned(),
        kdf: Kdf {
            alg: "argon2id".to_owned(),
            params,
            salt: hex::encode(salt),
        },
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    };
    serde_json::to_vec_pretty(&env).map_err(|e| Error::DeviceFile(format!("encoding: {e}")))
}

/// Opens a sealed file's bytes. A wrong passphrase and a tampered file are the same error.
pub fn open(bytes: &[u8], passphrase: &str) -> Result<DeviceSecrets> {
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|_| Error::DeviceFile("not a Parapet device file".to_owned()))?;
    if env.format != FORMAT || env.kdf.alg != "argon2id" {
        return Err(Error::DeviceFile("unknown device file format".to_owned()));
    }
    // Refuse costs that would make opening a file a denial of service on this machine.
    if env.kdf.params.m_kib > 4 * 1024 * 1024 || env.kdf.params.t > 100 || env.kdf.params.p > 64 {
        return Err(Error::DeviceFile("KDF parameters out of range".to_owned()));
    }
    let bad = || Error::DeviceFile("malformed device file".to_owned());
    let salt = hex::decode(&env.kdf.salt).map_err(|_| bad())?;
    let nonce = hex::decode(&env.nonce).map_err(|_| bad())?;
    let ciphertext = hex::decode(&env.ciphertext).map_err(|_| bad())?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| bad())?;
    if salt.len() < 16 {
        return Err(bad());
    }
    let key = derive_key(passphrase, &salt, env.kdf.params)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| bad())?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: FORMAT.as_bytes(),
                },
            )
            .map_err(|_| Error::DeviceFileLocked)?,
    );
    serde_json::from_slice(plain.as_ref()).map_err(|_| bad())
}

/// Seals `secrets` with the production KDF cost.
pub fn seal(secrets: &DeviceSecrets, passphrase: &str) -> Result<Vec<u8>> {
    seal_with(
        secrets,
        passphrase,
        KdfParams {
            m_kib: KDF_MEMORY_KIB,
            t: KDF_PASSES,
            p: KDF_LANES,
        },
    )
}

/// Writes `secrets` to `path` (a command-line device; a browser keeps [`seal`]'s bytes itself) (mode 0600, via a temporary file and a rename, so a crash leaves
/// the old file or the new one, never half of either).
#[cfg(unix)]
pub fn save(path: &Path, secrets: &DeviceSecrets, passphrase: &str) -> Result<()> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::DeviceFile(format!(
            "the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
        )));
    }
    let bytes = seal(secrets, passphrase)?;
    let io = |e: std::io::Error| Error::DeviceFile(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads and opens the file at `path`.
#[cfg(unix)]
pub fn load(path: &Path, passphrase: &str) -> Result<DeviceSecrets> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::DeviceFile(format!("{}: {e}", path.display())))?;
    open(&bytes, passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };

    fn secrets() -> DeviceSecrets {
        let mut s = DeviceSecrets::default();
        s.gateway = "http://localhost:8080".to_owned();
        s.device_id = "dev_1".to_owned();
        s.user = "u".to_owned();
        s.device_token = "pd_secret".to_owned();
        s.shares = [("0xab".to_owned(), "00ff".to_owned())].into();
        s
    }

    #[test]
    fn a_file_opens_with_its_passphrase_only_and_shows_no_secret() {
        let sealed = seal_with(&secrets(), "correct horse", CHEAP).unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(!text.contains("pd_secret") && !text.contains("00ff"));
        assert_eq!(open(&sealed, "correct horse").unwrap(), secrets());
        assert!(matches!(
            open(&sealed, "wrong horse"),
            Err(Error::DeviceFileLocked)
        ));
        assert!(!format!("{:?}", secrets()).contains("pd_secret"));
    }

    #[test]
    fn a_tampered_file_does_not_open() {
        let sealed = seal_with(&secrets(), "correct horse", CHEAP).unwrap();
        let mut env: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let ct = env["ciphertext"].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", if &ct[..1] == "0" { "1" } else { "0" }, &ct[1..]);
        env["ciphertext"] = flipped.into();
        let bytes = serde_json::to_vec(&env).unwrap();
        assert!(open(&bytes, "correct horse").is_err());
        env["kdf"]["m_kib"] = (64u32 * 1024 * 1024).into();
        assert!(open(&serde_json::to_vec(&env).unwrap(), "correct horse").is_err());
    }

    #[test]
    fn saved_files_are_private_and_short_passphrases_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.json");
        assert!(save(&path, &secrets(), "short").is_err());
        save(&path, &secrets(), "long enough").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path, "long enough").unwrap(), secrets());
    }
}
