//! The recovery secret, its backups and kits, and the recovery of a person who lost every
//! device.

use serde::{Deserialize, Serialize};

use crate::names::named_enum;

/// A wallet this device holds, with the epochs the gateway keeps a backup of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletBackups {
    pub address: String,
    /// The wallet's current epoch.
    pub epoch: i64,
    pub backup_epochs: Vec<i64>,
}

/// `GET /v1/device/recovery`: whether the person has a recovery secret, and this device's
/// wallets with their backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryStatus {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    pub set_up: bool,
    /// The recovery public key (X25519, hex), once set up.
    pub public_key: Option<String>,
    /// The salt the keys are derived with, once set up.
    pub salt: Option<String>,
    pub created_at: Option<String>,
    pub wallets: Vec<WalletBackups>,
    pub request_id: String,
}

/// A wallet's kit envelope: the gateway's current share sealed to the recovery public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KitEnvelope {
    pub wallet: String,
    pub epoch: i64,
    /// HPKE envelope, hex.
    pub gateway_share: String,
}

/// `POST /v1/device/recovery`: the device's backup kits, one per wallet it sent a backup of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KitsIssued {
    pub kits: Vec<KitEnvelope>,
    pub request_id: String,
}

/// `POST /v1/device/recovery/check`: the secret is the person's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretMatches {
    pub matches: bool,
    pub public_key: String,
    pub request_id: String,
}

/// `POST /v1/recovery/identify`: the salt to derive the keys with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryIdentified {
    pub salt: String,
    pub request_id: String,
}

named_enum! {
    /// Where a recovery is: `open` until it is completed or cancelled; an open one past its
    /// expiry reads as `expired` (derived, never stored).
    pub enum RecoveryState {
        Open => "open",
        Cancelled => "cancelled",
        Completed => "completed",
        Expired => "expired",
    }
}

/// A recovery as the person, the page and the recovering device see it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recovery {
    pub id: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    pub state: RecoveryState,
    pub device_name: String,
    pub opened_at: String,
    /// The delay ends here: from then on the recovering device may complete it.
    pub completable_at: String,
    pub expires_at: String,
    pub ended_at: Option<String>,
}

/// A recovery, answering a request about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryAnswer {
    #[serde(flatten)]
    pub recovery: Recovery,
    pub request_id: String,
}

/// `POST /v1/recovery`: the recovery opened, and its token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryOpened {
    #[serde(flatten)]
    pub recovery: Recovery,
    /// Send as `Authorization: Recovery <token>`.
    pub recovery_token: String,
    pub request_id: String,
}

/// A wallet's device share from the backup, sealed to the recovery public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShareBackup {
    pub wallet: String,
    pub epoch: i64,
    /// HPKE envelope, hex.
    pub device_share: String,
}

/// A one-time link to the person's page, to register a new passkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasskeyLink {
    /// Relative to the gateway (`/ui/?link=…`).
    pub url: String,
    /// 60 s after the recovery completed.
    pub expires_at: String,
}

/// `POST /v1/recovery/{id}/complete`: the new device, its backups and the link for a passkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryCompleted {
    /// The recovery's id.
    pub recovery: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    pub device_id: String,
    /// Send as `Authorization: Device <token>`; only its hash is stored.
    pub device_token: String,
    pub backups: Vec<ShareBackup>,
    /// Wallets the gateway holds no backup of: they cannot be recovered.
    pub without_backup: Vec<String>,
    pub passkey_link: PasskeyLink,
    pub request_id: String,
}

/// `POST /v1/totp`: the factor to add to an authenticator app (active once confirmed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpEnrolment {
    pub otpauth_uri: String,
    /// The same URI as a QR code.
    pub qr_svg: String,
    pub request_id: String,
}

/// Whether the TOTP factor is active now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpStatus {
    pub active: bool,
    pub request_id: String,
}
