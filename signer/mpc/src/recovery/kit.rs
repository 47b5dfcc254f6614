//! The backup kit (docs/architecture.md §9): a wallet's two shares, each HPKE-encrypted to the
//! user's recovery public key, with the wallet's public key and epoch. The device assembles it at
//! every key generation and refresh (its own share sealed by itself, the gateway's share sealed by
//! the gateway to the public key *the device* supplied), so the exit path never goes stale and
//! needs no gateway: with the kit and the recovery secret, `parapet wallet sign --offline` runs
//! both parties on the user's machine, and `parapet wallet export-key` rebuilds the private key.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::envelope::{self, Contents};
use super::{RecoveryKeys, RecoveryPublicKey};
use crate::{Error, Result};
use crate::{KeyShare, Role};

/// The `format` of kit files this version writes and reads.
pub const KIT_FORMAT: &str = "parapet-backup-kit-v1";

/// One wallet's kit, as the device keeps it and as a kit file holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupKit {
    pub format: String,
    /// Whose recovery secret opens it, as the key derivation names them: their recovery salt
    /// (`rs_…`), or their user id for secrets set up before salts existed.
    pub user: String,
    /// `0x…`, lower case.
    pub address: String,
    /// The wallet's public key, compressed SEC1, hex.
    pub public_key: String,
    /// The epoch of the shares inside: a kit is current while this equals the wallet's epoch.
    pub epoch: i64,
    /// The recovery public key both envelopes are sealed to, hex.
    pub recovery_public_key: String,
    /// HPKE envelope of the device's share, hex.
    pub device_share: String,
    /// HPKE envelope of the gateway's share, hex.
    pub gateway_share: String,
}

impl BackupKit {
    /// Puts a kit together on the device from its own share's envelope
    /// ([`seal_device_share`]) and the gateway's, as it came. The device cannot check the
    /// gateway's envelope without the secret; [`BackupKit::open`] does, whenever the user gives
    /// it (`parapet recovery check` and the exit path).
    pub fn new(
        user: &str,
        device_share: &KeyShare,
        epoch: i64,
        recovery: &RecoveryPublicKey,
        device_envelope: &[u8],
        gateway_envelope: &[u8],
    ) -> BackupKit {
        BackupKit {
            format: KIT_FORMAT.to_owned(),
            user: user.to_owned(),
            address: format!("0x{}", hex::encode(device_share.address())),
            public_key: hex::encode(device_share.public_key()),
            epoch,
            recovery_public_key: recovery.to_hex(),
            device_share: hex::encode(device_envelope),
            gateway_share: hex::encode(gateway_envelope),
        }
    }

    /// Opens both shares with the user's recovery keys and checks each belongs to this kit's
    /// wallet, in the right role. Returns `(device, gateway)`.
    pub fn open(&self, keys: &RecoveryKeys) -> Result<(KeyShare, KeyShare)> {
        if self.format != KIT_FORMAT {
            return Err(Error::Recovery(format!(
                "unknown backup kit format {:?}",
                self.format
            )));
        }
        let address = parse_address(&self.address)?;
        let device = open_share(
            keys,
            Contents::DeviceShare,
            &address,
            self.epoch,
            &self.device_share,
        )?;
        let gateway = open_share(
            keys,
            Contents::GatewayShare,
            &address,
            self.epoch,
            &self.gateway_share,
        )?;
        for (share, role) in [(&device, Role::Device), (&gateway, Role::Gateway)] {
            if share.role() != role
                || share.address() != &address
                || hex::encode(share.public_key()) != self.public_key.to_lowercase()
            {
                return Err(Error::Recovery(
                    "the kit's shares do not belong to its wallet".to_owned(),
                ));
            }
        }
        Ok((device, gateway))
    }

    /// The kit file's bytes (pretty JSON; it holds nothing readable without the secret).
    pub fn to_file(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Recovery(format!("encoding the kit: {e}")))
    }

    pub fn from_file(bytes: &[u8]) -> Result<BackupKit> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Recovery(format!("not a Parapet backup kit: {e}")))
    }
}

/// The device's share of `epoch`, sealed to the recovery key the device holds: the backup the
/// gateway keeps and the device half of the kit.
pub fn seal_device_share(
    recovery: &RecoveryPublicKey,
    share: &KeyShare,
    epoch: i64,
) -> Result<Vec<u8>> {
    envelope::seal(
        recovery,
        Contents::DeviceShare,
        share.address(),
        epoch,
        share.to_bytes().as_slice(),
    )
}

/// Opens one share envelope (hex) and parses it.
pub fn open_share(
    keys: &RecoveryKeys,
    contents: Contents,
    address: &[u8; 20],
    epoch: i64,
    envelope_hex: &str,
) -> Result<KeyShare> {
    let bytes = hex::decode(envelope_hex).map_err(|_| Error::BackupUnreadable)?;
    let plain: Zeroizing<Vec<u8>> = envelope::open(keys, contents, address, epoch, &bytes)?;
    KeyShare::from_bytes(&plain)
}

/// A kit's address exactly as kits are written: `0x` and 40 lower-case hex digits. Kits are
/// made by devices and the gateway only, so any other spelling is a damaged or edited file (the
/// envelopes are bound to the address too, so a changed one would not open either).
fn parse_address(text: &str) -> Result<[u8; 20]> {
    let bad = || Error::Recovery(format!("{text:?} is not a wallet address as kits write it"));
    let digits = text
        .strip_prefix("0x")
        .filter(|d| d.len() == 40 && !d.bytes().any(|b| b.is_ascii_uppercase()))
        .ok_or_else(bad)?;
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out).map_err(|_| bad())?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::recovery::RecoverySecret;
    use crate::{Dkls23, SessionId, ThresholdEcdsa, run_locally, sign_locally};

    #[test]
    fn a_kit_opens_with_the_secret_and_signs_and_exports_without_a_gateway() {
        let session = SessionId::random();
        let (device, gateway) = run_locally(
            Dkls23.keygen(Role::Device, session).unwrap(),
            Dkls23.keygen(Role::Gateway, session).unwrap(),
        )
        .unwrap();
        let secret = RecoverySecret::generate();
        let keys = secret.derive("user-1").unwrap();
        let device_env = seal_device_share(keys.public_key(), &device, 0).unwrap();
        let gateway_env = envelope::seal(
            keys.public_key(),
            Contents::GatewayShare,
            gateway.address(),
            0,
            gateway.to_bytes().as_slice(),
        )
        .unwrap();
        let kit = BackupKit::new(
            "user-1",
            &device,
            0,
            keys.public_key(),
            &device_env,
            &gateway_env,
        );
        let kit = BackupKit::from_file(&kit.to_file().unwrap()).unwrap();

        let (d, g) = kit.open(&keys).unwrap();
        let signature = sign_locally(&Dkls23, &d, &g, [5u8; 32]).unwrap();
        crate::verify_signature(
            device.public_key(),
            device.address(),
            &[5u8; 32],
            &signature,
        )
        .unwrap();
        let key = Dkls23.export_key(&d, &g).unwrap();
        let signing = k256::ecdsa::SigningKey::from_slice(key.as_ref()).unwrap();
        assert_eq!(
            crate::eth_address(signing.verifying_key()),
            *device.address()
        );

        // An address spelled any other way than kits write it is refused before any opening.
        for spelling in [
            kit.address.to_uppercase().replacen("0X", "0x", 1),
            kit.address.trim_start_matches("0x").to_owned(),
        ] {
            let mut edited = kit.clone();
            edited.address = spelling;
            assert!(matches!(edited.open(&keys), Err(Error::Recovery(_))));
        }
        // Another user's secret opens nothing; the shares swapped between envelopes do not open.
        let stranger = RecoverySecret::generate().derive("user-1").unwrap();
        assert!(matches!(kit.open(&stranger), Err(Error::BackupUnreadable)));
        let mut swapped = kit.clone();
        std::mem::swap(&mut swapped.device_share, &mut swapped.gateway_share);
        assert!(matches!(swapped.open(&keys), Err(Error::BackupUnreadable)));
        // Two shares of different wallets do not make a key.
        let other = SessionId::random();
        let (_, other_gateway) = run_locally(
            Dkls23.keygen(Role::Device, other).unwrap(),
            Dkls23.keygen(Role::Gateway, other).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            Dkls23.export_key(&d, &other_gateway),
            Err(Error::ShareMismatch)
        ));
    }
}
