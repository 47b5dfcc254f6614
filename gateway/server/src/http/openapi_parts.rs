//! The parts of the OpenAPI document that many operations name: the error answers and the
//! headers that carry a device's, a recovery's or a person's credential. Apart from
//! [`crate::http::openapi`], which lists the operations, so that handlers can name these without
//! depending on the list of themselves.

use utoipa::{IntoParams, ToResponse};

/// A refusal: `{code, message, request_id}` with a stable `code` (docs/errors.md lists them).
#[derive(ToResponse)]
#[allow(
    dead_code,
    reason = "a description of the answer; the body is built as ErrorBody"
)]
#[response(description = "Typed error", content_type = "application/json")]
pub struct Error(#[to_schema] parapet_api::ErrorBody);

/// Rate limited (per client IP, app, person or wallet): `code` is `rate_limited`; `Retry-After`
/// says how many seconds to wait.
#[derive(ToResponse)]
#[allow(
    dead_code,
    reason = "a description of the answer; the body is built as ErrorBody"
)]
#[response(
    description = "Rate limited (per client IP, app or wallet): `code` is `rate_limited`; `Retry-After` says how many seconds to wait.",
    content_type = "application/json",
    headers(("Retry-After" = u32, description = "Seconds to wait, at least 1."))
)]
pub struct RateLimited(#[to_schema] parapet_api::ErrorBody);

/// `Authorization: Device <token>`: the routes a paired device calls.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "describes a header the extractor reads")]
pub struct DeviceToken {
    /// `Device <token>`
    #[param(rename = "Authorization")]
    authorization: String,
}

/// `Authorization: Recovery <token>`: the routes of an open recovery.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "describes a header the handler reads")]
pub struct RecoveryToken {
    /// `Recovery <token>`: the `recovery_token` the opening answer returned
    #[param(rename = "Authorization")]
    authorization: String,
}

/// `Parapet-Session`: the person's session with the calling app.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "describes a header the extractor reads")]
pub struct SessionToken {
    /// The session token returned by the login (`ps_…`), issued to this app.
    #[param(rename = "Parapet-Session", pattern = "^ps_[0-9a-f]{64}$")]
    session: String,
}

/// `Parapet-Session` of the wallet's owner: the routes that act on the owner's wallets.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "describes a header the extractor reads")]
pub struct OwnerSession {
    /// The wallet owner's session for this app
    #[param(rename = "Parapet-Session")]
    session: String,
}
