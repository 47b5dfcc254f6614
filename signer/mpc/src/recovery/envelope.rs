//! HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA-256), HKDF-SHA-256, ChaCha20-Poly1305) to
//! the user's recovery public key. Every envelope is bound, through HPKE's `info` and the AEAD's
//! associated data, to what it holds: whose share (device or gateway), which wallet and which
//! epoch. A backup presented for another wallet or epoch, or a device share passed off as the
//! gateway's, does not open.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use super::{RecoveryKeys, RecoveryPublicKey};
use crate::{Error, Result};

pub type Kem = X25519HkdfSha256;

/// Length of the encapsulated key that starts every envelope.
const ENC_LEN: usize = 32;

/// Which party's share an envelope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// The device's share: the backup the gateway keeps for recovery.
    DeviceShare,
    /// The gateway's share: the backup kit the device keeps as its exit path.
    GatewayShare,
}

impl Contents {
    fn label(self) -> &'static str {
        match self {
            Contents::DeviceShare => "device-share",
            Contents::GatewayShare => "gateway-share",
        }
    }
}

fn binding(contents: Contents, address: &[u8; 20], epoch: i64) -> Vec<u8> {
    format!(
        "parapet-backup-v1|{}|0x{}|{epoch}",
        contents.label(),
        hex::encode(address)
    )
    .into_bytes()
}

/// Encrypts `plaintext` to `recipient`: `enc ‖ ciphertext`.
pub fn seal(
    recipient: &RecoveryPublicKey,
    contents: Contents,
    address: &[u8; 20],
    epoch: i64,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    seal_bound(
        recipient.as_bytes(),
        &binding(contents, address, epoch),
        plaintext,
    )
}

/// Opens an envelope made by [`seal`] for the same contents, wallet and epoch.
pub fn open(
    keys: &RecoveryKeys,
    contents: Contents,
    address: &[u8; 20],
    epoch: i64,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    open_bound(
        keys.private_key(),
        &binding(contents, address, epoch),
        sealed,
    )
}

/// HPKE base mode to the X25519 key `recipient`, with `bound` as both `info` and associated
/// data: `enc ‖ ciphertext`. Every envelope kind in the crate goes through here.
pub fn seal_bound(recipient: &[u8; 32], bound: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|_| Error::Recovery("not an X25519 public key".to_owned()))?;
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        bound,
        plaintext,
        bound,
    )
    .map_err(|e| Error::Recovery(format!("HPKE seal: {e}")))?;
    let mut out = Vec::with_capacity(ENC_LEN + ciphertext.len());
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens what [`seal_bound`] made for the same `bound`; anything else is `BackupUnreadable`.
pub fn open_bound(
    private: &<Kem as hpke::Kem>::PrivateKey,
    bound: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() <= ENC_LEN {
        return Err(Error::BackupUnreadable);
    }
    let (enc, ciphertext) = sealed.split_at(ENC_LEN);
    let enc =
        <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| Error::BackupUnreadable)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        private,
        &enc,
        bound,
        ciphertext,
        bound,
    )
    .map(Zeroizing::new)
    .map_err(|_| Error::BackupUnreadable)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::recovery::RecoverySecret;

    #[test]
    fn only_the_same_secret_contents_wallet_and_epoch_open_an_envelope() {
        let keys = RecoverySecret::generate().derive("u").unwrap();
        let address = [7u8; 20];
        let sealed = seal(
            keys.public_key(),
            Contents::GatewayShare,
            &address,
            3,
            b"share bytes",
        )
        .unwrap();
        let opened = open(&keys, Contents::GatewayShare, &address, 3, &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"share bytes");

        let refused = |r: Result<Zeroizing<Vec<u8>>>| {
            assert!(matches!(r, Err(Error::BackupUnreadable)));
        };
        refused(open(&keys, Contents::DeviceShare, &address, 3, &sealed));
        refused(open(&keys, Contents::GatewayShare, &[8u8; 20], 3, &sealed));
        refused(open(&keys, Contents::GatewayShare, &address, 2, &sealed));
        let other = RecoverySecret::generate().derive("u").unwrap();
        refused(open(&other, Contents::GatewayShare, &address, 3, &sealed));
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        refused(open(&keys, Contents::GatewayShare, &address, 3, &tampered));
        refused(open(
            &keys,
            Contents::GatewayShare,
            &address,
            3,
            &sealed[..20],
        ));
    }
}
