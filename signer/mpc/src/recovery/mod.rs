//! The user's recovery secret (docs/architecture.md §9): generated on a device, shown once, and the
//! only thing that opens the backups of a user's shares. From it, Argon2id (64 MiB, t = 3, p = 1,
//! salt = `"parapet-recovery-v1" ‖ recovery salt`) and HKDF-SHA-256 derive two independent keys.
//! The recovery salt is random per person ([`new_salt`]), chosen by the device at the first setup
//! and handed to anyone who names one of the person's wallets, so it says nothing else; secrets set
//! up before salts existed use the user id instead.
//! - the *auth key*, which the gateway checks against an Argon2id verifier to open a recovery;
//! - an *X25519 key pair*; backups and backup kits are HPKE-encrypted to its public key
//!   ([`envelope`]), so the gateway, which keeps only that public key, can decrypt nothing.

pub mod envelope;
pub mod kit;

use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Random bytes in a secret: 128 bits, the floor docs/architecture.md §9 sets.
const SECRET_BYTES: usize = 16;
/// Check bytes appended to the written form, so that a typo is caught before a slow KDF and a
/// wrong answer from the gateway.
const CHECK_BYTES: usize = 4;
const DOMAIN: &str = "parapet-recovery-v1";

/// Argon2id cost of the derivation (docs/architecture.md §9): 64 MiB, 3 passes, 1 lane.
const KDF_MEMORY_KIB: u32 = 64 * 1024;
const KDF_PASSES: u32 = 3;

/// A fresh recovery salt: `rs_` and 32 hex digits (128 random bits).
#[must_use]
pub fn new_salt() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("rs_{}", hex::encode(bytes))
}

/// The recovery secret itself. Only its written form ever leaves memory, and only to the user.
pub struct RecoverySecret(Zeroizing<[u8; SECRET_BYTES]>);

impl RecoverySecret {
    /// A fresh secret from the operating system's generator.
    pub fn generate() -> RecoverySecret {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::rng().fill_bytes(bytes.as_mut());
        RecoverySecret(bytes)
    }

    /// The form the user writes down: 32 characters of RFC 4648 base32 in eight groups of four
    /// (`ABCD-EFGH-…`), the last 32 bits of which are a checksum.
    pub fn written(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(SECRET_BYTES + CHECK_BYTES));
        raw.extend_from_slice(self.0.as_ref());
        raw.extend_from_slice(&checksum(self.0.as_ref()));
        let plain = Zeroizing::new(data_encoding::BASE32_NOPAD.encode(&raw));
        let mut out = Zeroizing::new(String::with_capacity(plain.len() + plain.len() / 4));
        for (i, c) in plain.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    /// Parses what the user typed: case, spaces and hyphens do not matter, and the digits 0, 1
    /// and 8 are read as the letters O, I and B they are mistaken for.
    pub fn parse(text: &str) -> Result<RecoverySecret> {
        let cleaned: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .map(|c| match c.to_ascii_uppercase() {
                    '0' => 'O',
                    '1' => 'I',
                    '8' => 'B',
                    other => other,
                })
                .collect(),
        );
        let raw = Zeroizing::new(
            data_encoding::BASE32_NOPAD
                .decode(cleaned.as_bytes())
                .map_err(|_| Error::RecoverySecretMalformed)?,
        );
        if raw.len() != SECRET_BYTES + CHECK_BYTES {
            return Err(Error::RecoverySecretMalformed);
        }
        let (secret, check) = raw.split_at(SECRET_BYTES);
        if checksum(secret) != check {
            return Err(Error::RecoverySecretMalformed);
        }
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        bytes.copy_from_slice(secret);
        Ok(RecoverySecret(bytes))
    }

    /// Derives the user's keys with their recovery salt (or, for secrets set up before salts,
    /// their user id). Slow on purpose (Argon2id, 64 MiB): call it off async threads.
    pub fn derive(&self, salt: &str) -> Result<RecoveryKeys> {
        let params = Params::new(KDF_MEMORY_KIB, KDF_PASSES, 1, Some(32))
            .map_err(|e| Error::Recovery(format!("KDF parameters: {e}")))?;
        let mut root = Zeroizing::new([0u8; 32]);
        let salt = format!("{DOMAIN}{salt}");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(self.0.as_ref(), salt.as_bytes(), root.as_mut())
            .map_err(|e| Error::Recovery(format!("KDF: {e}")))?;
        let hk = Hkdf::<Sha256>::new(None, root.as_ref());
        let mut auth = Zeroizing::new([0u8; 32]);
        let mut ikm = Zeroizing::new([0u8; 32]);
        let expand = |info: &str, out: &mut [u8]| {
            hk.expand(info.as_bytes(), out)
                .map_err(|_| Error::Recovery("HKDF output length".to_owned()))
        };
        expand(&format!("{DOMAIN} auth key"), auth.as_mut())?;
        expand(&format!("{DOMAIN} x25519"), ikm.as_mut())?;
        // RFC 9180 DeriveKeyPair turns the HKDF output into the X25519 key pair.
        let (private, public) = X25519HkdfSha256::derive_keypair(ikm.as_ref());
        Ok(RecoveryKeys {
            auth_key: auth,
            private,
            public: RecoveryPublicKey(public.to_bytes().into()),
        })
    }
}

fn checksum(secret: &[u8]) -> [u8; CHECK_BYTES] {
    let digest = Sha256::new()
        .chain_update(DOMAIN.as_bytes())
        .chain_update(b" check")
        .chain_update(secret)
        .finalize();
    let mut out = [0u8; CHECK_BYTES];
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
    out
}

/// What the secret derives. The private key stays on the user's machine, in memory only.
pub struct RecoveryKeys {
    auth_key: Zeroizing<[u8; 32]>,
    private: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: RecoveryPublicKey,
}

impl RecoveryKeys {
    /// Sent to the gateway to set up or open a recovery; never stored in clear anywhere.
    pub fn auth_key(&self) -> &[u8; 32] {
        &self.auth_key
    }

    pub fn public_key(&self) -> &RecoveryPublicKey {
        &self.public
    }

    pub(crate) fn private_key(&self) -> &<X25519HkdfSha256 as hpke::Kem>::PrivateKey {
        &self.private
    }
}

/// The X25519 public key backups are encrypted to (32 bytes; hex on the wire and in files).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecoveryPublicKey([u8; 32]);

impl RecoveryPublicKey {
    pub fn from_hex(text: &str) -> Result<RecoveryPublicKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.strip_prefix("0x").unwrap_or(text), &mut out)
            .map_err(|_| Error::Recovery("a recovery public key is 32 bytes of hex".to_owned()))?;
        // Refuse what HPKE would refuse later, now.
        <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&out)
            .map_err(|_| Error::Recovery("not an X25519 public key".to_owned()))?;
        Ok(RecoveryPublicKey(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_written_form_reads_back_and_catches_typos() {
        let secret = RecoverySecret::generate();
        let written = secret.written();
        assert_eq!(written.len(), 39, "{}", written.as_str());
        let again = RecoverySecret::parse(&written.to_lowercase().replace('-', " ")).unwrap();
        assert_eq!(again.0.as_ref(), secret.0.as_ref());
        // One character changed: the checksum refuses it.
        let mut typo: Vec<char> = written.chars().collect();
        typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert!(matches!(
            RecoverySecret::parse(&typo),
            Err(Error::RecoverySecretMalformed)
        ));
        assert!(RecoverySecret::parse("ABCD").is_err());
    }

    #[test]
    fn keys_depend_on_the_secret_and_the_user() {
        let secret = RecoverySecret::generate();
        let a = secret.derive("user-a").unwrap();
        let again = secret.derive("user-a").unwrap();
        let b = secret.derive("user-b").unwrap();
        assert_eq!(a.auth_key(), again.auth_key());
        assert_eq!(a.public_key(), again.public_key());
        assert_ne!(a.auth_key(), b.auth_key());
        assert_ne!(a.public_key(), b.public_key());
        // The two derived keys are independent of each other.
        assert_ne!(a.auth_key(), a.public_key().as_bytes());
        let other = RecoverySecret::generate().derive("user-a").unwrap();
        assert_ne!(a.public_key(), other.public_key());
        assert_eq!(
            RecoveryPublicKey::from_hex(&a.public_key().to_hex()).unwrap(),
            *a.public_key()
        );
    }
}
