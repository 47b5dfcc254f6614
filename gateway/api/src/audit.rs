//! The audit log as apps and auditors read it.

use serde::{Deserialize, Serialize};

/// One event of the hash chain: its position, the links, the exact canonical text that was
/// hashed, and the same event parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainedEvent {
    /// Decimal (sequence numbers exceed JavaScript's safe integers).
    pub seq: String,
    /// Hex SHA-256 of the previous event's link.
    pub prev_hash: String,
    /// Hex SHA-256 of `prev_hash` and `canonical`.
    pub hash: String,
    /// The canonical JSON (RFC 8785) that was hashed.
    pub canonical: String,
    /// `canonical`, parsed (docs/audit.md lists its fields).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event: serde_json::Value,
}

/// `GET /v1/audit/events` as JSON: one page, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    pub events: Vec<ChainedEvent>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    pub request_id: String,
}

/// How `GET /v1/audit/events` answers: a JSON page, or a streamed export in `seq` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Json,
    Ndjson,
    Csv,
}
