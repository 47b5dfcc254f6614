//! Wallets as their owners and operators see them.

use serde::{Deserialize, Serialize};

/// A wallet the gateway holds a share of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wallet {
    /// Lower-case `0x` address.
    pub address: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub owner: String,
    pub created_at: String,
    /// Bumped by each refresh of the shares.
    pub epoch: i64,
    /// Operators' labels, as Cedar sees them (`resource.labels`).
    pub labels: Vec<String>,
    pub groups: Vec<String>,
    /// A frozen wallet is denied by the shipped policies.
    pub frozen: bool,
    /// No signing until the shares are refreshed.
    pub refresh_required: bool,
}

/// `GET /v1/wallets`: the session user's wallets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletList {
    pub wallets: Vec<Wallet>,
    pub request_id: String,
}

/// A wallet, answering a request about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletAnswer {
    #[serde(flatten)]
    pub wallet: Wallet,
    pub request_id: String,
}
