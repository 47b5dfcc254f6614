//! Custody of the gateway's key shares: a share is sealed (AES-256-GCM) under a key the gateway
//! never sees in production (an HSM key, [`Hsm`]) or, for development, a key in a local file
//! ([`FileKeystore`]). Both produce the same sealed format, so stored shares do not depend on
//! which custody sealed them beyond the key itself.
//!
//! Sealed format, version 1: `0x01 ‖ IV (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`. The associated
//! data is not stored: the caller supplies it again when opening (see [`share_aad`]), so a share
//! moved to another wallet or epoch row no longer opens.

mod error;
mod file;
mod hsm;

pub use error::{Error, Result};

pub use file::FileKeystore;
pub use hsm::{
    DEFAULT_AUDIT_KEY_LABEL, DEFAULT_SHARE_KEY_LABEL, Hsm, HsmConfig, HsmInitReport, hsm_init,
    pkcs11_context,
};

use zeroize::Zeroizing;

/// The first byte of every sealed blob written by this version.
pub const SEALED_VERSION: u8 = 1;
/// AES-GCM IV length: 96 bits, the size GCM is specified for.
pub const IV_LEN: usize = 12;
/// AES-GCM tag length (128 bits).
pub const TAG_LEN: usize = 16;

/// Seals and opens gateway key shares.
///
/// The associated data must be non-empty: it binds the plaintext to what it belongs to (wallet
/// address and epoch, see [`share_aad`]), and SoftHSM2 crashes on empty GCM associated data.
pub trait Custody: Send + Sync + std::fmt::Debug {
    /// Encrypts `plaintext` under a fresh random IV.
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>>;
    /// Decrypts and authenticates; the plaintext is wiped from memory when dropped.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

/// The associated data for a wallet's gateway share at `epoch`: a domain tag, the 20-byte
/// address and the epoch (big-endian). Every caller uses this one function so that sealing and
/// opening always agree on the bytes.
pub fn share_aad(wallet: &[u8; 20], epoch: u64) -> Vec<u8> {
    const TAG: &[u8] = b"parapet/gateway-share/v1";
    let mut aad = Vec::with_capacity(TAG.len() + 20 + 8);
    aad.extend_from_slice(TAG);
    aad.extend_from_slice(wallet);
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad
}

/// Splits a sealed blob into IV and ciphertext-with-tag, checking the version and length.
fn parse_sealed(sealed: &[u8]) -> Result<([u8; IV_LEN], &[u8])> {
    let (&version, rest) = sealed.split_first().ok_or(Error::SealedMalformed)?;
    if version != SEALED_VERSION || rest.len() < IV_LEN + TAG_LEN {
        return Err(Error::SealedMalformed);
    }
    let (iv, body) = rest.split_at(IV_LEN);
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| Error::SealedMalformed)?;
    Ok((iv, body))
}

/// Assembles a sealed blob from its parts.
fn assemble_sealed(iv: &[u8; IV_LEN], ciphertext_and_tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + IV_LEN + ciphertext_and_tag.len());
    out.push(SEALED_VERSION);
    out.extend_from_slice(iv);
    out.extend_from_slice(ciphertext_and_tag);
    out
}

/// A fresh random IV from the operating system. With a random 96-bit IV, one key must not seal
/// more than about 2^32 messages; gateway shares (one per wallet and epoch) stay far below.
fn random_iv() -> [u8; IV_LEN] {
    use aes_gcm::aead::rand_core::RngCore;
    let mut iv = [0u8; IV_LEN];
    aes_gcm::aead::OsRng.fill_bytes(&mut iv);
    iv
}

fn check_aad(aad: &[u8]) -> Result<()> {
    if aad.is_empty() {
        return Err(Error::EmptyAad);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_aad_differs_by_wallet_and_epoch() {
        let a = share_aad(&[1; 20], 0);
        assert_ne!(a, share_aad(&[1; 20], 1));
        assert_ne!(a, share_aad(&[2; 20], 0));
        assert_eq!(a, share_aad(&[1; 20], 0));
    }

    #[test]
    fn malformed_sealed_rejected() {
        assert!(matches!(parse_sealed(&[]), Err(Error::SealedMalformed)));
        assert!(matches!(
            parse_sealed(&[2; 40]),
            Err(Error::SealedMalformed)
        ));
        assert!(matches!(
            parse_sealed(&[1; IV_LEN + TAG_LEN]),
            Err(Error::SealedMalformed)
        ));
        assert!(parse_sealed(&[1; 1 + IV_LEN + TAG_LEN]).is_ok());
    }
}
