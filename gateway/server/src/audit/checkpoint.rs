//! Signed checkpoints (seq, head hash, time), appended to a file outside the database. A
//! database restored from an older backup, or with its tail cut off, no longer reaches the
//! newest checkpoint, and one that was rewritten no longer matches it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The one algorithm checkpoints use today: ECDSA over secp256k1 with SHA-256 (RFC 6979
/// nonces), signature as `r ‖ s`, public key as compressed SEC1.
pub const ALGORITHM: &str = "ecdsa-secp256k1-sha256";

/// Whatever holds the audit key. A file today; the HSM once the co-signer has one, which is why
/// signing stays behind this one small interface.
pub trait CheckpointSigner: Send + Sync + std::fmt::Debug {
    fn algorithm(&self) -> &'static str;
    /// Compressed SEC1 public key.
    fn public_key(&self) -> Vec<u8>;
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
    /// The public key as checkpoint lines and `verify --public-key` spell it.
    fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }
}

/// The audit key in a file (hex of the 32-byte secret, mode 0600), generated on first use.
pub struct FileSigner {
    key: SigningKey,
    path: PathBuf,
}

impl std::fmt::Debug for FileSigner {
    // Hand-written so that the key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSigner")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Where the audit key lives under the data directory by default.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit-key")
}

/// Where checkpoints are appended by default.
pub fn default_checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit-checkpoints.jsonl")
}

impl FileSigner {
    /// Loads the key at `path`, generating it when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<FileSigner> {
        let key = match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| Error::Config(format!("{} is not a hex key", path.display())))?;
                SigningKey::from_slice(&bytes)
                    .map_err(|_| Error::Config(format!("{} is not a valid key", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::Config(format!("creating {}: {e}", dir.display())))?;
                }
                crate::secret_file::create_private(path, hex::encode(key.to_bytes()).as_bytes())?;
                tracing::info!(path = %path.display(), "generated the audit checkpoint key");
                key
            }
            Err(e) => return Err(Error::Config(format!("reading {}: {e}", path.display()))),
        };
        Ok(FileSigner {
            key,
            path: path.to_path_buf(),
        })
    }
}

fn generate() -> Result<SigningKey> {
    for _ in 0..8 {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut bytes);
        if let Ok(k) = SigningKey::from_slice(&bytes) {
            return Ok(k);
        }
    }
    Err(Error::Internal(
        "could not generate an audit key".to_owned(),
    ))
}

impl CheckpointSigner for FileSigner {
    fn algorithm(&self) -> &'static str {
        ALGORITHM
    }
    fn public_key(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_encoded_point(true)
            .as_bytes()
            .to_vec()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let sig: Signature = self.key.sign(message);
        Ok(sig.to_bytes().to_vec())
    }
}

/// One checkpoint line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub v: u8,
    /// Decimal string.
    pub seq: String,
    /// Hex of the event hash at `seq`.
    pub hash: String,
    pub time: String,
    pub alg: String,
    /// Hex of the signer's compressed public key.
    pub key: String,
    /// Hex signature over the RFC 8785 JSON of every other field.
    pub sig: String,
}

#[derive(Serialize)]
struct Signed<'a> {
    v: u8,
    seq: &'a str,
    hash: &'a str,
    time: &'a str,
    alg: &'a str,
    key: &'a str,
}

impl Checkpoint {
    fn message(&self) -> Result<String> {
        serde_json_canonicalizer::to_string(&Signed {
            v: self.v,
            seq: &self.seq,
            hash: &self.hash,
            time: &self.time,
            alg: &self.alg,
            key: &self.key,
        })
        .map_err(|e| Error::Internal(format!("canonicalising a checkpoint: {e}")))
    }

    /// Builds and signs a checkpoint of `(seq, hash)` at `time`.
    pub fn sign(
        signer: &dyn CheckpointSigner,
        seq: i64,
        hash: &[u8],
        time: time::OffsetDateTime,
    ) -> Result<Checkpoint> {
        let mut cp = Checkpoint {
            v: 1,
            seq: seq.to_string(),
            hash: hex::encode(hash),
            time: super::event::format_time(time),
            alg: signer.algorithm().to_owned(),
            key: hex::encode(signer.public_key()),
            sig: String::new(),
        };
        cp.sig = hex::encode(signer.sign(cp.message()?.as_bytes())?);
        Ok(cp)
    }

    /// Checks the signature, and that it was made by `expected_key` (hex, compressed SEC1).
    pub fn verify(&self, expected_key: &str) -> std::result::Result<(), String> {
        if self.alg != ALGORITHM {
            return Err(format!("unknown algorithm {:?}", self.alg));
        }
        if !self.key.eq_ignore_ascii_case(expected_key) {
            return Err("signed by a key other than the audit key".to_owned());
        }
        let key_bytes = hex::decode(&self.key).map_err(|_| "key is not hex".to_owned())?;
        let key =
            VerifyingKey::from_sec1_bytes(&key_bytes).map_err(|_| "invalid key".to_owned())?;
        let sig_bytes = hex::decode(&self.sig).map_err(|_| "signature is not hex".to_owned())?;
        let sig = Signature::from_slice(&sig_bytes).map_err(|_| "invalid signature".to_owned())?;
        let msg = self.message().map_err(|e| e.to_string())?;
        key.verify(msg.as_bytes(), &sig)
            .map_err(|_| "signature does not verify".to_owned())
    }

    pub fn seq_number(&self) -> std::result::Result<i64, String> {
        self.seq
            .parse()
            .map_err(|_| format!("seq {:?} is not a number", self.seq))
    }
}

/// Appends one checkpoint line and syncs the file: a checkpoint that a crash can lose proves
/// nothing.
pub fn append(path: &Path, cp: &Checkpoint) -> Result<()> {
    let line = serde_json::to_string(cp)
        .map_err(|e| Error::Internal(format!("serialising a checkpoint: {e}")))?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Internal(format!("opening {}: {e}", path.display())))?;
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))
}

/// Reads every checkpoint line of a file. A line that does not parse is an error: a checkpoint
/// file is evidence and must not be silently skipped.
pub fn read_all(path: &Path) -> Result<Vec<Checkpoint>> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::InvalidRequest(format!("reading {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line =
            line.map_err(|e| Error::InvalidRequest(format!("reading {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let cp: Checkpoint = serde_json::from_str(&line).map_err(|e| {
            Error::InvalidRequest(format!("{} line {}: {e}", path.display(), n + 1))
        })?;
        out.push(cp);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_generated_private_reused_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/audit-key");
        let a = FileSigner::load_or_create(&path).unwrap();
        let b = FileSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(!format!("{a:?}").contains(&std::fs::read_to_string(&path).unwrap()));
        let t = time::macros::datetime!(2026-11-25 09:00 UTC);
        let cp = Checkpoint::sign(&a, 7, &[1u8; 32], t).unwrap();
        let key = hex::encode(a.public_key());
        cp.verify(&key).unwrap();
        let mut forged = cp.clone();
        forged.seq = "8".into();
        assert!(forged.verify(&key).is_err());
        let other = FileSigner::load_or_create(&dir.path().join("other")).unwrap();
        assert!(cp.verify(&hex::encode(other.public_key())).is_err());
        let file = dir.path().join("cp.jsonl");
        append(&file, &cp).unwrap();
        append(&file, &cp).unwrap();
        assert_eq!(read_all(&file).unwrap(), vec![cp.clone(), cp]);
    }
}
