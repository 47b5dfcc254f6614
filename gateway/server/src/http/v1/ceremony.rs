//! The ceremony WebSockets (docs/architecture.md §2, §6): key generation at `/v1/device/keygen` and
//! signing at `/v1/signing-requests/{id}/ceremony`. The device authenticates with `Authorization:
//! Device <token>` on the upgrade request or in its first message (never a query string);
//! everything else is the [`crate::cosign`] stage over [`WsChannel`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use parapet_mpc::drive::Transport;
use parapet_mpc::wire::Control;

use crate::accounts::devices::{self, Device};
use crate::cosign::{self, Channel, Cosigner};
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::request_id::ReqId;

/// How long a device has to send its credential after the upgrade.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's end of a ceremony WebSocket.
pub struct WsChannel {
    socket: WebSocket,
}

fn closed() -> parapet_mpc::Error {
    parapet_mpc::Error::Transport("the device closed the connection".to_owned())
}

fn parse_control(text: &str) -> parapet_mpc::Result<Control> {
    let control: Control = serde_json::from_str(text).map_err(|_| {
        parapet_mpc::Error::Transport("a control message that does not parse".to_owned())
    })?;
    match control {
        Control::Error { code, message } => Err(parapet_mpc::Error::Refused { code, message }),
        other => Ok(other),
    }
}

impl Transport for WsChannel {
    async fn send(&mut self, message: Vec<u8>) -> parapet_mpc::Result<()> {
        self.socket
            .send(Frame::Binary(message.into()))
            .await
            .map_err(|_| closed())
    }

    async fn recv(&mut self) -> parapet_mpc::Result<Vec<u8>> {
        loop {
            match self.socket.recv().await {
                Some(Ok(Frame::Binary(bytes))) => return Ok(bytes.to_vec()),
                Some(Ok(Frame::Text(text))) => {
                    parse_control(&text)?;
                    return Err(parapet_mpc::Error::Transport(
                        "a control message in the middle of the protocol".to_owned(),
                    ));
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                Some(Ok(Frame::Close(_)) | Err(_)) | None => return Err(closed()),
            }
        }
    }
}

impl Channel for WsChannel {
    async fn control(&mut self, control: &Control) -> parapet_mpc::Result<()> {
        let text = serde_json::to_string(control)
            .map_err(|e| parapet_mpc::Error::Transport(e.to_string()))?;
        self.socket
            .send(Frame::Text(text.into()))
            .await
            .map_err(|_| closed())
    }

    async fn expect_control(&mut self) -> parapet_mpc::Result<Control> {
        loop {
            match self.socket.recv().await {
                Some(Ok(Frame::Text(text))) => return parse_control(&text),
                Some(Ok(Frame::Binary(_))) => {
                    return Err(parapet_mpc::Error::Transport(
                        "a protocol message where a control message was due".to_owned(),
                    ));
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                Some(Ok(Frame::Close(_)) | Err(_)) | None => return Err(closed()),
            }
        }
    }
}

impl WsChannel {
    /// Tells the device why the ceremony ended (internals stay in the log) and closes.
    async fn fail(mut self, error: &Error) {
        tracing::warn!(%error, code = error.code(), "ceremony ended without a result");
        let _ = self
            .control(&Control::Error {
                code: error.code().to_owned(),
                message: error.public_message(),
            })
            .await;
        let _ = self.socket.send(Frame::Close(None)).await;
    }

    async fn close(mut self) {
        let _ = self.socket.send(Frame::Close(None)).await;
    }
}

/// The device token from the upgrade request's header, if it has one.
fn header_token(headers: &HeaderMap) -> Result<Option<String>, Error> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(devices::token_from_header)
            .map(|t| Some(t.to_owned()))
            .ok_or(Error::Unauthorized),
    }
}

/// The device on the other end: from the header, or from the first message.
async fn authenticate(
    state: &AppState,
    channel: &mut WsChannel,
    token: Option<String>,
) -> Result<Device, Error> {
    let token = match token {
        Some(t) => t,
        None => match tokio::time::timeout(AUTH_TIMEOUT, channel.expect_control()).await {
            Ok(Ok(Control::Auth { authorization })) => devices::token_from_header(&authorization)
                .map(str::to_owned)
                .ok_or(Error::Unauthorized)?,
            Ok(Ok(_)) | Ok(Err(_)) => return Err(Error::Unauthorized),
            Err(_) => return Err(Error::CeremonyTimeout),
        },
    };
    crate::http::auth::device_by_token(state, &token).await
}

fn cosigner(state: &AppState) -> Cosigner {
    Cosigner::of(state)
}

/// Opens the WebSocket after checking what can be checked before it (a present but malformed
/// header is refused with a plain 401).
fn upgrade<F, Fut>(
    request_id: &str,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(WsChannel, Option<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let fail = ApiError::of(request_id);
    let token = header_token(headers).map_err(fail)?;
    let ws = ws.map_err(|_| {
        fail(Error::InvalidRequest(
            "this route is a WebSocket: send an upgrade request".to_owned(),
        ))
    })?;
    Ok(ws
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| run(WsChannel { socket }, token))
        .into_response())
}

/// `GET /v1/device/keygen`: a new wallet for the device's user (who needs a passkey first).
#[utoipa::path(
    get,
    path = "/v1/device/keygen",
    operation_id = "ceremony_keygen",
    summary = "Key generation with the gateway (WebSocket)",
    description = r#"Runs DKLs23 key generation between the device and the gateway. The device's user needs a passkey (`passkey_required`). The device stores its share, says `stored`, and the gateway seals its share with custody, records the wallet (audited `wallet.create`) and says `done` with the address. A WebSocket: send an upgrade request. Text frames carry JSON control messages (`auth`, `start`, `stored`, `done`, `error`), binary frames the MPC protocol's messages. The device authenticates with `Authorization: Device <token>` on the upgrade request, or with `{"type":"auth","authorization":"Device <token>"}` as its first message; never a query string."#,
    security(()),
    params(
        crate::http::openapi_parts::DeviceToken,
    ),
    responses(
        (status = 101, description = "Switching protocols"),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
    ),
)]
pub async fn keygen(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let rid = request_id.clone();
    upgrade(&rid, &headers, ws, move |mut channel, token| async move {
        let device = match authenticate(&state, &mut channel, token).await {
            Ok(d) => d,
            Err(e) => return channel.fail(&e).await,
        };
        match state.passkeys.list(device.user_id).await {
            Ok(list) if list.iter().any(|p| p.revoked_at.is_none()) => {}
            Ok(_) => return channel.fail(&Error::PasskeyRequired).await,
            Err(e) => return channel.fail(&e).await,
        }
        // Counted from the ceremonies recorded before their first message, so an aborted
        // generation (whose cost is spent at its start) counts like a finished one.
        if let Err(e) = state
            .quotas
            .check_keygen(&state.store, &device, state.clock.now())
            .await
        {
            return channel.fail(&e).await;
        }
        let clock = state.clock.clone();
        let result = cosign::keygen::run(
            &cosigner(&state),
            &device,
            &mut channel,
            &request_id,
            move || clock.now(),
        )
        .await;
        match result {
            Ok(wallet) => {
                tracing::info!(wallet = %wallet.address, user = %wallet.owner, device = %wallet.device_id, "wallet created");
                channel.close().await;
            }
            Err(e) => channel.fail(&e).await,
        }
    })
}

/// The signing ceremony of request `id` (see [`crate::cosign::sign`]).
pub fn signing(
    state: Arc<AppState>,
    request_id: &str,
    id: String,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    upgrade(
        request_id,
        headers,
        ws,
        move |mut channel, token| async move {
            let device = match authenticate(&state, &mut channel, token).await {
                Ok(d) => d,
                Err(e) => return channel.fail(&e).await,
            };
            let clock = state.clock.clone();
            let started = std::time::Instant::now();
            let result = cosign::sign::run(
                &cosigner(&state),
                &device,
                &id,
                state.dev_app_acting(),
                &mut channel,
                move || clock.now(),
            )
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(signing_request = %id, millis = started.elapsed().as_millis() as u64, "signature released");
                    channel.close().await;
                }
                Err(e) => channel.fail(&e).await,
            }
        },
    )
}

/// The refresh ceremony of wallet `address` (see [`crate::cosign::refresh`]).
pub fn refreshing(
    state: Arc<AppState>,
    request_id: &str,
    address: String,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let rid = request_id.to_owned();
    upgrade(
        request_id,
        headers,
        ws,
        move |mut channel, token| async move {
            let device = match authenticate(&state, &mut channel, token).await {
                Ok(d) => d,
                Err(e) => return channel.fail(&e).await,
            };
            let clock = state.clock.clone();
            let result = cosign::refresh::run(
                &cosigner(&state),
                &device,
                &address,
                &mut channel,
                &rid,
                move || clock.now(),
            )
            .await;
            match result {
                Ok(wallet) => {
                    tracing::info!(wallet = %wallet.address, epoch = wallet.epoch, "wallet refreshed");
                    channel.close().await;
                }
                Err(e) => channel.fail(&e).await,
            }
        },
    )
}
