//! A person's sessions with an app.

use serde::{Deserialize, Serialize};

/// `POST /v1/sessions/oidc/nonce`: a single-use nonce for the app's next ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OidcNonce {
    pub nonce: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
    pub request_id: String,
}

/// A new session for a person at this app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionIssued {
    /// `ps_…`: send it as `Parapet-Session`; only its hash is stored.
    #[cfg_attr(feature = "openapi", schema(pattern = "^ps_[0-9a-f]{64}$"))]
    pub session_token: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    /// The session's absolute end.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
    /// The session ends after this many seconds without use.
    pub idle_secs: u64,
    pub request_id: String,
}

/// `POST /v1/sessions/oidc/link`: the identity now linked to the session's person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentityLinked {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    pub issuer: String,
    pub subject: String,
    /// False when the identity was already the person's.
    pub newly_linked: bool,
    pub request_id: String,
}

/// `POST /v1/sessions/logout`: the session is ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoggedOut {
    pub ended: bool,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    pub request_id: String,
}

/// `POST /v1/sessions/page-link`: a one-time link to the person's page, for 60 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PageLink {
    /// Relative to the gateway (`/ui/?link=pc_…`).
    pub url: String,
    pub expires_at: String,
    pub request_id: String,
}
