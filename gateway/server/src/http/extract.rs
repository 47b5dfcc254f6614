//! Extractors that carry a route's checks, so that a handler's signature says what it needs and
//! its body reads as what it does. A rejection is the same error body the route answered with
//! when it checked by hand (`401 unauthorized`, `415`, `413`, `400 invalid_request`), naming the
//! request.
//!
//! Order matters and axum keeps it: extractors of the request's parts (who is calling) run
//! before the body is read, so a caller who is not authenticated learns nothing about how its
//! body would have been read.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::request_id::ReqId;
use crate::accounts::devices::Device;
use crate::accounts::users::ActiveSession;
use crate::error::Error;

/// What an extractor's refusal is: the error, naming the request it answers.
fn refusal(parts: &Parts) -> impl Fn(Error) -> ApiError + '_ {
    move |error| ApiError {
        error,
        request_id: ReqId::in_extensions(&parts.extensions),
    }
}

/// The calling device, from `Authorization: Device <token>`: live, not revoked.
#[derive(Debug, Clone)]
pub struct AuthedDevice(pub Device);

impl FromRequestParts<Arc<AppState>> for AuthedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        super::auth::device_of(state, &parts.headers)
            .await
            .map(AuthedDevice)
            .map_err(refusal(parts))
    }
}

/// A JSON body read strictly ([`super::body::json_body`]): JSON content type, the size limit,
/// unknown fields refused.
#[derive(Debug, Clone)]
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let request_id = ReqId::in_extensions(req.extensions());
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await;
        super::body::json_body(&headers, bytes)
            .map(StrictJson)
            .map_err(|error| ApiError { error, request_id })
    }
}

/// The person's session with the calling app (`Parapet-Session`): live, within its limits and
/// issued to this very app. Needs the app's key checked first (the route's grant layer puts the
/// [`Caller`] in the request); without it the answer is `401 unauthorized`.
#[derive(Debug, Clone)]
pub struct AppSession(pub ActiveSession);

impl FromRequestParts<Arc<AppState>> for AppSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(Caller(caller)) = parts.extensions.get::<Caller>() else {
            return Err(refusal(parts)(Error::Unauthorized));
        };
        super::auth::user_session(state, caller, &parts.headers)
            .await
            .map(AppSession)
            .map_err(refusal(parts))
    }
}

/// A call from one of the page's own origins (`Origin` checked against the configured list):
/// the page's unauthenticated calls (passkey registration and login).
#[derive(Debug, Clone, Copy)]
pub struct PageOrigin;

impl FromRequestParts<Arc<AppState>> for PageOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        crate::http::page::session::check_origin(&state.page, &parts.headers)
            .map(|()| PageOrigin)
            .map_err(refusal(parts))
    }
}

/// The person's page session (its cookie), for reading.
#[derive(Debug, Clone)]
pub struct PageSession(pub ActiveSession);

impl FromRequestParts<Arc<AppState>> for PageSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        crate::http::page::session::required(state, &parts.headers)
            .await
            .map(|(_, session)| PageSession(session))
            .map_err(refusal(parts))
    }
}

/// The person's page session for a change: one of the page's origins, the session cookie and
/// its CSRF token.
#[derive(Debug, Clone)]
pub struct PageChange(pub ActiveSession);

impl FromRequestParts<Arc<AppState>> for PageChange {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        crate::http::page::session::required_for_change(state, &parts.headers)
            .await
            .map(|(_, session)| PageChange(session))
            .map_err(refusal(parts))
    }
}
