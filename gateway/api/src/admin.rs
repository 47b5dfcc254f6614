//! What operators read and change: apps, people, the policy set and webhook deliveries.

use serde::{Deserialize, Serialize};

use crate::names::named_enum;

/// An app as operators see it, in the CLI and the admin routes alike (`app_id`, not `id`, to
/// match `apps create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct App {
    #[cfg_attr(feature = "openapi", schema(pattern = "^app_[a-z2-7]{26}$"))]
    pub app_id: String,
    pub name: String,
    /// `sign`, `audit:read`, `admin`.
    pub grants: Vec<String>,
    pub groups: Vec<String>,
    pub frozen: bool,
    pub revoked: bool,
    pub created_at: String,
    /// The app's own rate (`COUNT/UNIT`, optionally `burst N`); `null`: the gateway's app_rate.
    pub rate: Option<String>,
    pub session_ttl_secs: u64,
    pub session_idle_secs: u64,
    /// Where the login page may send this app's users back with a login code (exact match).
    pub redirect_uris: Vec<String>,
}

/// `GET /v1/admin/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppList {
    pub apps: Vec<App>,
    pub request_id: String,
}

/// `POST /v1/admin/apps`: the new app's id and its key, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppCreated {
    pub app_id: String,
    /// `pk_…`: only its hash is stored.
    pub api_key: String,
    pub request_id: String,
}

/// `POST /v1/admin/policies/reload`: the version now active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyReloaded {
    pub policy_version: String,
    pub request_id: String,
}

/// An OIDC identity of a person: the verified `iss` and `sub`, and the key source that
/// verified them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserIdentity {
    pub issuer: String,
    pub subject: String,
    /// The key source that verified the identity: `url:<JWKS URL>` or `file:<path>` as the app
    /// configured it (`none:` for an identity no configured source reaches). The same issuer and
    /// subject under another source is another identity.
    pub trust: String,
}

/// A person as operators see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub user_id: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    pub disabled: bool,
    pub identities: Vec<UserIdentity>,
    /// Sessions not ended and not past their absolute limit.
    pub active_sessions: i64,
}

/// `POST /v1/admin/users/{id}/disable`: the person as they are now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserDisabled {
    #[serde(flatten)]
    pub user: User,
    pub request_id: String,
}

/// `GET /v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    pub users: Vec<User>,
    pub request_id: String,
}

named_enum! {
    /// Where a webhook delivery is.
    pub enum DeliveryStatus {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
    }
}

/// One webhook delivery: an event for one app, and how sending it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    pub id: String,
    pub app_id: String,
    pub event_seq: i64,
    pub event_type: String,
    pub user_id: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    /// The HTTP status of the last attempt, when one answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed, as a kind only (the detail is in the gateway's log):
    /// `refused_address`, `connect_failed`, `timeout`, `tls`, `invalid_response`, `http_status`,
    /// `webhook_removed`, `internal`, or `other` for a text stored by an older gateway.
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

/// `GET /v1/admin/webhook-deliveries`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    pub deliveries: Vec<WebhookDelivery>,
    pub request_id: String,
}

/// An app's security webhook (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    pub app_id: String,
    pub url: String,
    pub created_at: String,
}

/// `POST /v1/webhook`: the webhook and its signing secret, shown this once (the HMAC key is the
/// whole `whsec_…` string, as bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookRegistered {
    pub webhook: Webhook,
    pub signing_secret: String,
    pub request_id: String,
}

/// `GET /v1/webhook`: the app's webhook, if any, and its 50 newest deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookState {
    pub webhook: Option<Webhook>,
    pub deliveries: Vec<WebhookDelivery>,
    pub request_id: String,
}

/// `DELETE /v1/webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookRemoved {
    pub removed: bool,
    pub request_id: String,
}

/// `POST /v1/admin/webhook-deliveries/{id}/redeliver`: the delivery is pending again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Redelivery {
    pub delivery: String,
    pub status: DeliveryStatus,
    pub request_id: String,
}
