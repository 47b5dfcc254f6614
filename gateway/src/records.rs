//! The dynamic entities a decision reads: the calling app and the wallet. Until the app and
//! wallet stores exist these come from configuration (the `default` app) and the request (dry
//! runs), but the policy stage already takes them as records so nothing changes when they do.

use alloy::primitives::Address;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    /// `app_…` or, until API keys exist, `default`.
    pub id: String,
    pub name: String,
    /// "sign", "audit:read", "admin".
    pub grants: Vec<String>,
    pub frozen: bool,
    /// `Parapet::AppGroup` ids the app is a member of.
    pub groups: Vec<String>,
}

impl AppRecord {
    /// The configured development app used before API keys exist.
    pub fn development_default() -> AppRecord {
        AppRecord {
            id: "default".to_owned(),
            name: "Default app".to_owned(),
            grants: vec![
                "sign".to_owned(),
                "audit:read".to_owned(),
                "admin".to_owned(),
            ],
            frozen: false,
            groups: Vec::new(),
        }
    }
}

/// Where the wallet's labels came from; reported to callers as `labels_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelsSource {
    Request,
    Record,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletRecord {
    pub address: Address,
    pub owner: Option<Uuid>,
    pub labels: Vec<String>,
    pub frozen: bool,
    /// `Parapet::WalletGroup` ids.
    pub groups: Vec<String>,
    pub labels_source: LabelsSource,
}

/// The user session behind a request, when the route acts for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    pub user: Uuid,
    /// "passkey" | "oidc"
    pub method: String,
    pub user_verified: bool,
    pub age_secs: i64,
}
