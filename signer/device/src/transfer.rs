//! Adding a device from an existing one (docs/architecture.md §9). The new device makes an X25519
//! key pair and shows a short code derived from its public key; the existing device receives that
//! public key through the gateway, derives the code itself and seals its shares (with the user's
//! recovery public key and the current kits) to the key only when the user confirms the two codes
//! match. A gateway that substituted its own key would make the existing device show another code:
//! it can relay the bundle but never open it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, Result};
use parapet_mpc::recovery::envelope::{Kem, open_bound, seal_bound};
use parapet_mpc::recovery::kit::BackupKit;
use parapet_mpc::{KeyShare, Role};

/// A transfer refused: the message is the recovery layer's, as the bundle is sealed like a kit.
fn refused(reason: impl Into<String>) -> Error {
    Error::Mpc(parapet_mpc::Error::Recovery(reason.into()))
}
use hpke::{Deserializable, Kem as _, Serializable};

/// The `format` of the bundles this version seals.
pub const BUNDLE_FORMAT: &str = "parapet-device-transfer-v1";
const CODE_DOMAIN: &[u8] = b"parapet-device-code-v1";
/// Crockford base32 without I, L, O, U, as the pairing codes.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 12 symbols, 60 bits: finding another key with the same code is a 2^60 search, far beyond
/// what a gateway could do while the user looks at two screens.
const CODE_SYMBOLS: usize = 12;

/// A device's own X25519 key pair: what other devices seal shares to. The private half stays
/// in the device's encrypted file.
pub struct DeviceKey {
    private: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// A fresh key pair from the operating system's RNG.
    pub fn generate() -> DeviceKey {
        let (private, public) = Kem::gen_keypair();
        let bytes: [u8; 32] = public.to_bytes().into();
        DeviceKey {
            private,
            public: bytes,
        }
    }

    /// The key pair from its private half as [`DeviceKey::private_hex`] wrote it.
    pub fn from_private_hex(text: &str) -> Result<DeviceKey> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| refused("bad device key".to_owned()))?,
        );
        let private = <Kem as hpke::Kem>::PrivateKey::from_bytes(&bytes)
            .map_err(|_| refused("bad device key".to_owned()))?;
        let public: [u8; 32] = Kem::sk_to_pk(&private).to_bytes().into();
        Ok(DeviceKey { private, public })
    }

    /// The private half, hex, for the device's own encrypted file only.
    pub fn private_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.private.to_bytes()))
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.public)
    }
}

/// A transfer id: `dtr_` + 128 random bits, hex. The gateway makes one for a new device's
/// request; a device re-syncing another picks its own, since it seals to the id first.
pub fn new_transfer_id() -> String {
    format!("dtr_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Parses a device public key as it travels (hex).
pub fn parse_public_key(text: &str) -> Result<[u8; 32]> {
    let bytes =
        hex::decode(text.trim()).map_err(|_| refused("not a device public key".to_owned()))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| refused("not a device public key".to_owned()))?;
    <Kem as hpke::Kem>::PublicKey::from_bytes(&key)
        .map_err(|_| refused("not a device public key".to_owned()))?;
    Ok(key)
}

/// The short code both devices show for `public_key`: `XXXX-XXXX-XXXX`, the first 60 bits of
/// SHA-256(domain ‖ key) in Crockford base32.
pub fn short_code(public_key: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(CODE_DOMAIN)
        .chain_update(public_key)
        .finalize();
    let mut bits: u64 = 0;
    for b in digest.iter().take(8) {
        bits = (bits << 8) | u64::from(*b);
    }
    let symbols: Vec<char> = (0..CODE_SYMBOLS)
        .map(|i| {
            let index = (bits >> (64 - 5 * (i + 1))) & 31;
            CODE_ALPHABET
                .get(usize::try_from(index).unwrap_or(0))
                .map_or('0', |c| char::from(*c))
        })
        .collect();
    symbols
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether the code the user typed (any case, with or without dashes) is `public_key`'s.
pub fn code_matches(typed: &str, public_key: &[u8; 32]) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    norm(typed) == norm(&short_code(public_key))
}

/// One wallet as it travels to another device.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferredWallet {
    /// `0x…`, lower case.
    pub address: String,
    pub epoch: i64,
    /// The device share, as [`KeyShare::to_bytes`], hex.
    pub share: String,
    /// The wallet's current backup kit, when the sending device has one.
    pub kit: Option<BackupKit>,
}

impl Drop for TransferredWallet {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.share);
    }
}

/// What one device seals to another: the user's recovery public key (so that the new device
/// seals its future backups to the user's key, not one the gateway names) and the wallets.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBundle {
    pub format: String,
    pub user: String,
    pub from_device: String,
    pub to_device: String,
    /// The gateway's id of this transfer: a bundle relayed into another transfer does not open.
    pub transfer: String,
    pub recovery_public_key: String,
    /// The recovery secret's salt, as the sending device holds it (absent: the user id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_salt: Option<String>,
    pub wallets: Vec<TransferredWallet>,
}

impl std::fmt::Debug for TransferBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferBundle")
            .field("from_device", &self.from_device)
            .field("to_device", &self.to_device)
            .field(
                "wallets",
                &self.wallets.iter().map(|w| &w.address).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn binding(to_device: &str, transfer: &str) -> Vec<u8> {
    format!("{BUNDLE_FORMAT}|{to_device}|{transfer}").into_bytes()
}

impl TransferBundle {
    /// Seals the bundle to `recipient`, bound to its target device and transfer id.
    pub fn seal(&self, recipient: &[u8; 32]) -> Result<Vec<u8>> {
        let json =
            Zeroizing::new(serde_json::to_vec(self).map_err(|e| refused(format!("bundle: {e}")))?);
        Ok(seal_bound(
            recipient,
            &binding(&self.to_device, &self.transfer),
            &json,
        )?)
    }

    /// Opens a bundle sealed to `key` for `to_device` and `transfer`, and checks every share in
    /// it: a device share of the address it claims, for the user the bundle names.
    pub fn open(
        key: &DeviceKey,
        user: &str,
        to_device: &str,
        transfer: &str,
        sealed: &[u8],
    ) -> Result<TransferBundle> {
        let json = open_bound(&key.private, &binding(to_device, transfer), sealed)?;
        let bundle: TransferBundle =
            serde_json::from_slice(&json).map_err(|e| refused(format!("bundle: {e}")))?;
        if bundle.format != BUNDLE_FORMAT
            || bundle.user != user
            || bundle.to_device != to_device
            || bundle.transfer != transfer
        {
            return Err(refused(
                "the bundle is for another user, device or transfer".to_owned(),
            ));
        }
        parapet_mpc::recovery::RecoveryPublicKey::from_hex(&bundle.recovery_public_key)?;
        for w in &bundle.wallets {
            let share = w.key_share()?;
            if share.role() != Role::Device
                || format!("0x{}", hex::encode(share.address())) != w.address
            {
                return Err(Error::Mpc(parapet_mpc::Error::ShareMismatch));
            }
            if let Some(kit) = &w.kit
                && (kit.address != w.address
                    || kit.public_key != hex::encode(share.public_key())
                    || kit.recovery_public_key != bundle.recovery_public_key)
            {
                return Err(Error::Mpc(parapet_mpc::Error::ShareMismatch));
            }
        }
        Ok(bundle)
    }
}

impl TransferredWallet {
    /// The share inside.
    pub fn key_share(&self) -> Result<KeyShare> {
        let bytes = Zeroizing::new(
            hex::decode(&self.share).map_err(|_| parapet_mpc::Error::ShareMalformed)?,
        );
        Ok(KeyShare::from_bytes(&bytes)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_distinct_and_typed_loosely() {
        let a = DeviceKey::generate();
        let b = DeviceKey::generate();
        let code = short_code(a.public_key());
        assert_eq!(code.len(), 14);
        assert_eq!(code, short_code(a.public_key()));
        assert_ne!(code, short_code(b.public_key()));
        assert!(code_matches(
            &code.to_lowercase().replace('-', " "),
            a.public_key()
        ));
        assert!(!code_matches(&code, b.public_key()));
        // The key round-trips through its private half.
        let again = DeviceKey::from_private_hex(&a.private_hex()).unwrap();
        assert_eq!(again.public_key(), a.public_key());
        assert_eq!(parse_public_key(&a.public_hex()).unwrap(), *a.public_key());
        assert!(parse_public_key("00ff").is_err());
    }

    #[test]
    fn a_known_key_has_a_known_code() {
        // The code is SHA-256(domain ‖ key) read 5 bits at a time; computed independently
        // with Python's hashlib for the all-zero key.
        assert_eq!(short_code(&[0u8; 32]), KNOWN_ZERO_KEY_CODE);
    }

    const KNOWN_ZERO_KEY_CODE: &str = "MJQ0-G211-DSRP";
}
