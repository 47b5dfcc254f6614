//! The two-call passkey step-up the `/v1` security routes share (recovery cancel, device
//! approval, TOTP enrolment and removal, device removal): a body that asks (none, or `{}`) gets
//! `403 step_up_required` with passkey options bound to `context`; a body with the assertion
//! passes the gate once.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use uuid::Uuid;

use crate::error::Error;
use crate::http::AppState;
use crate::http::body::json_body;

/// What the gate decided.
pub(super) enum Gate {
    /// Answer this (the step-up options) and stop.
    Ask(Response),
    /// The user's passkey approved `context` just now.
    Passed,
}

/// Runs the gate for `user` and `context`; `waiting` names what waits in the answer.
pub(super) async fn gate(
    state: &AppState,
    user: Uuid,
    context: &str,
    waiting: (&str, &str),
    request_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Gate, Error> {
    let now = state.clock.now();
    if crate::http::error::asks_for_step_up(&body) {
        let step_up = state.passkeys.start_step_up(user, context, now).await?;
        return Ok(Gate::Ask(crate::http::error::step_up_required(
            request_id, waiting, step_up,
        )));
    }
    let req: crate::http::v1::signing::StepUp = json_body(headers, body)?;
    state
        .passkeys
        .finish_step_up(&req.ceremony_id, &req.credential, user, context, now)
        .await?;
    Ok(Gate::Passed)
}

/// [`gate`] for a change a person without any passkey may still make with their session alone
/// (the bootstrap of someone who logged in through the app's identity provider): once they have
/// a passkey, only it approves the change.
pub(super) async fn gate_once_enrolled(
    state: &AppState,
    user: Uuid,
    context: &str,
    waiting: (&str, &str),
    request_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Gate, Error> {
    if !crate::accounts::passkeys::has_live_passkey(&state.store, user).await? {
        return Ok(Gate::Passed);
    }
    gate(state, user, context, waiting, request_id, headers, body).await
}
