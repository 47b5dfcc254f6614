//! One error type for every HTTP answer: `{code, message, request_id}` with the status the
//! crate's [`Error`] names. Internals go to the log only.

use axum::Json;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// An [`Error`] together with the request it answers.
#[derive(Debug)]
pub struct ApiError {
    pub error: Error,
    pub request_id: String,
}

impl ApiError {
    /// What a handler maps its errors with: every answer names the request it answers.
    pub fn of(request_id: &str) -> impl Fn(Error) -> ApiError + Copy + '_ {
        move |error| ApiError {
            error,
            request_id: request_id.to_owned(),
        }
    }
}

/// `403 step_up_required` for something the owner must approve with a passkey: the error's code
/// and message, what is waiting (`(field, id)`, e.g. `("operation", …)`) and the passkey
/// options of the ceremony bound to it.
pub fn step_up_required(
    request_id: &str,
    waiting: (&str, &str),
    step_up: serde_json::Value,
) -> Response {
    let error = crate::error::Error::StepUpRequired;
    let mut body = serde_json::json!({
        "code": error.code(),
        "message": error.to_string(),
        "request_id": request_id,
        "step_up": step_up,
    });
    if let Some(o) = body.as_object_mut() {
        o.insert(waiting.0.to_owned(), waiting.1.into());
    }
    (error.status(), Json(body)).into_response()
}

/// Whether a step-up route's body asks for the passkey options (no body, or `{}`) rather than
/// carrying an assertion.
pub fn asks_for_step_up(
    body: &Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> bool {
    body.as_ref().is_ok_and(|b| {
        b.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<serde_json::Value>(b)
                .is_ok_and(|v| v.as_object().is_some_and(serde_json::Map::is_empty))
    })
}

/// A JSON object answer with the request id added, as every `/v1` and page answer has it.
pub fn json_answer(mut body: serde_json::Value, request_id: &str) -> Response {
    if let Some(o) = body.as_object_mut() {
        o.insert("request_id".to_owned(), request_id.into());
    }
    Json(body).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        if status.is_server_error() {
            tracing::error!(request_id = %self.request_id, error = %self.error, "request failed");
        } else {
            tracing::debug!(request_id = %self.request_id, code = self.error.code(), "request refused");
        }
        let body = parapet_api::ErrorBody {
            code: self.error.code().to_owned(),
            message: self.error.public_message(),
            request_id: self.request_id.clone(),
        };
        let mut res = (status, Json(body)).into_response();
        if let Some(retry_after_secs) = self.error.retry_after_secs() {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after_secs.into());
        }
        res
    }
}
