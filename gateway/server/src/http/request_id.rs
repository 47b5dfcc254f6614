//! Request ids: a fresh UUIDv7 for every request, in the `x-request-id` response header and in
//! every body. A caller-supplied id is ignored: ids end up in the audit log, where a caller must
//! not be able to choose or collide them.

use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

/// The current request's id, available to handlers as an extractor.
#[derive(Debug, Clone)]
pub struct ReqId(pub String);

impl ReqId {
    /// The id [`assign`] gave this request ("" outside the service, e.g. in a bare handler test).
    pub fn of(req: &Request) -> String {
        Self::in_extensions(req.extensions())
    }

    /// [`ReqId::of`] from a request's extensions (an extractor sees only its parts).
    pub fn in_extensions(extensions: &axum::http::Extensions) -> String {
        extensions
            .get::<ReqId>()
            .map(|r| r.0.clone())
            .unwrap_or_default()
    }
}

pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    req.extensions_mut().insert(ReqId(id.clone()));
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, v);
    }
    res
}

impl<S: Send + Sync> FromRequestParts<S> for ReqId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ReqId>()
            .cloned()
            .unwrap_or_else(|| ReqId(uuid::Uuid::now_v7().to_string())))
    }
}
