//! The scopes a person approves for an app.

use serde::{Deserialize, Serialize};

/// One scope offered to an app, as a consent screen shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfferedScope {
    pub id: String,
    pub name: String,
    pub description: String,
    pub required: bool,
    /// In effect for this person's decisions now.
    pub approved: bool,
}

/// What to show, whether to ask, and the hash to send back with the approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopesView {
    /// Every scope offered to the app, by id.
    pub scopes: Vec<OfferedScope>,
    /// The person has no consent to this app, or one given under another hash.
    pub needs_consent: bool,
    /// The app's current consent hash.
    pub consent_hash: String,
}

/// The app a consent is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentApp {
    pub id: String,
    pub name: String,
}

/// `GET /v1/consent`: the consent screen for the session's person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentScreen {
    pub app: ConsentApp,
    #[serde(flatten)]
    pub view: ScopesView,
    pub request_id: String,
}

/// `POST /v1/consent`: the scopes now approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentApproved {
    pub approved: Vec<String>,
    pub consent_hash: String,
    pub granted_at: String,
    pub request_id: String,
}

/// `POST /v1/consent/revoke`: whether there was a consent to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentRevoked {
    pub revoked: bool,
    pub request_id: String,
}
