//! The body of every refusal.

use serde::{Deserialize, Serialize};

/// The body of every refusal: a stable `code` to match on, a message for people, and the id
/// of the request it answers (also in `x-request-id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Error))]
pub struct ErrorBody {
    /// Stable, `snake_case`: what to match on.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9_]+$"))]
    pub code: String,
    pub message: String,
    pub request_id: String,
}
