//! The dynamic entities a decision reads: the calling app and the wallet. Until the app and
//! wallet stores exist these come from configuration (the `default` app) and the request (dry
//! runs), but the policy stage already takes them as records so nothing changes when they do.

use std::time::Duration;

use alloy::primitives::Address;
use uuid::Uuid;

use crate::rate::Rate;

/// What an app is held to beyond its grants: its request rate and how long the user sessions
/// it holds may live (absolute) and sit unused (idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppLimits {
    /// `None`: the gateway's configured default app rate.
    pub rate: Option<Rate>,
    pub session_ttl: Duration,
    pub session_idle: Duration,
}

impl AppLimits {
    pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
    pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
    /// Longest absolute session an operator may configure.
    pub const MAX_SESSION_TTL: Duration = Duration::from_secs(90 * 86_400);

    /// Refuses limits that cannot work: an idle limit longer than the absolute one, a session
    /// shorter than a minute or longer than [`Self::MAX_SESSION_TTL`].
    pub fn validate(&self) -> crate::error::Result<()> {
        let min = Duration::from_secs(60);
        if self.session_ttl < min || self.session_ttl > Self::MAX_SESSION_TTL {
            return Err(crate::error::Error::InvalidRequest(
                "session_ttl must be between 1 minute and 90 days".to_owned(),
            ));
        }
        if self.session_idle < min || self.session_idle > self.session_ttl {
            return Err(crate::error::Error::InvalidRequest(
                "session_idle must be at least 1 minute and at most session_ttl".to_owned(),
            ));
        }
        Ok(())
    }
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            rate: None,
            session_ttl: Self::DEFAULT_SESSION_TTL,
            session_idle: Self::DEFAULT_SESSION_IDLE,
        }
    }
}

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
    pub limits: AppLimits,
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
            limits: AppLimits::default(),
        }
    }

    /// The gateway's own page, which sessions are bound to when a person logs in there without
    /// an app hand-off. It has no key and no grant: its sessions can only manage the person's
    /// own passkeys, consents and sessions on the page.
    pub fn gateway_page() -> AppRecord {
        AppRecord {
            id: PAGE_APP_ID.to_owned(),
            name: "Parapet".to_owned(),
            grants: Vec::new(),
            frozen: false,
            groups: Vec::new(),
            limits: AppLimits::default(),
        }
    }
}

/// The app id of [`AppRecord::gateway_page`] (not an `app_…` id, so no real app can have it).
pub const PAGE_APP_ID: &str = "parapet-page";

/// Where the wallet's labels came from; reported to callers as `labels_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
