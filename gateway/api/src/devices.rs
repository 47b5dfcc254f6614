//! Devices: pairing, the person's list of them, and transfers of shares between them.

use serde::{Deserialize, Serialize};

use crate::names::named_enum;

/// A device of a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    pub device_id: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    pub name: String,
    pub created_at: String,
    pub last_seen: Option<String>,
    pub revoked_at: Option<String>,
}

/// `POST /v1/devices/pair`: the new device's token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevicePaired {
    pub device_id: String,
    /// Send as `Authorization: Device <token>`; only its hash is stored.
    pub device_token: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    pub name: String,
    pub request_id: String,
}

/// `GET /v1/device`: the calling device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThisDevice {
    #[serde(flatten)]
    pub device: Device,
    pub request_id: String,
}

/// One device's hold on one wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Holding {
    pub address: String,
    pub epoch: i64,
    /// Whether the device holds the wallet's current epoch (it can sign); false: stale.
    pub current: bool,
}

/// A device with the wallets it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldDevice {
    #[serde(flatten)]
    pub device: Device,
    pub wallets: Vec<Holding>,
    /// It holds an epoch a refresh has moved past: another device re-syncs it.
    pub stale: bool,
}

/// `GET /v1/devices`: the person's devices (revoked ones too, oldest first) and the new devices
/// waiting for their approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    pub devices: Vec<HeldDevice>,
    pub transfers: Vec<Transfer>,
    pub request_id: String,
}

/// `POST /v1/devices/{id}/revoke`: the device as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceRevoked {
    pub revoked: Device,
    pub request_id: String,
}

named_enum! {
    /// What a transfer is for.
    pub enum TransferKind {
        /// A new device of the person receives copies of the shares (a backup device).
        Add => "add",
        /// A device catches up with shares refreshed while it was away.
        Resync => "resync",
    }
}

named_enum! {
    /// Where a transfer is: the new device `waiting`, the owner's passkey `approved` it, a
    /// device of the person `sealed` the shares to it, the new device `received` them.
    pub enum TransferState {
        Waiting => "waiting",
        Approved => "approved",
        Sealed => "sealed",
        Received => "received",
        Refused => "refused",
    }
}

/// A wallet a transfer carries, as the sending device declared it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Carried {
    pub address: String,
    pub epoch: i64,
}

/// A transfer of shares to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transfer {
    /// `dtr_` and 32 hex digits.
    pub id: String,
    pub kind: TransferKind,
    pub to_device: String,
    /// The recipient's X25519 public key, hex.
    pub public_key: String,
    /// What the recipient shows (`XXXX-XXXX-XXXX`); the sending device derives its own from the
    /// key and never trusts this one.
    pub short_code: String,
    pub state: TransferState,
    pub from_device: Option<String>,
    pub wallets: Vec<Carried>,
    pub created_at: String,
    pub expires_at: String,
    /// The sealed bundle (hex), to its recipient while the state is `sealed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// A transfer, answering a request about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferAnswer {
    #[serde(flatten)]
    pub transfer: Transfer,
    pub request_id: String,
}

/// `GET /v1/device/transfers`: what the calling device should seal, and what waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferList {
    /// Approved requests of the person's new devices, for a device holding the wallets to seal.
    pub to_seal: Vec<Transfer>,
    /// Sealed transfers to the calling device.
    pub incoming: Vec<Transfer>,
    pub request_id: String,
}

/// `POST /v1/device/transfers/{id}/seal`: the bundle is stored for its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferSealed {
    pub id: String,
    pub state: TransferState,
    pub request_id: String,
}
