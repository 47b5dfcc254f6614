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
