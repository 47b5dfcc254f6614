//! The command-line device's ceremony WebSocket (tokio, feature `native`): connects with its
//! device token in the `Authorization` header and runs [`crate::ceremony`] over it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use parapet_mpc::drive::{Runtime, Transport};
use parapet_mpc::recovery::kit::BackupKit;
use parapet_mpc::wire::Control;
use parapet_mpc::{Error, KeyShare, RecoverableSignature, Result};

use crate::ceremony::{self, parse_control};
pub use crate::ceremony::{Link, RecoveryTarget};

/// How long the device waits for any one message from the gateway.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// One ceremony connection to the gateway.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

fn transport<E: std::fmt::Display>(e: E) -> Error {
    Error::Transport(e.to_string())
}

/// The WebSocket URL of `path` on the gateway at `base` (http → ws, https → wss).
pub fn ws_url(base: &str, path: &str) -> Result<String> {
    let base = base.trim_end_matches('/');
    let url = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}{path}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}{path}")
    } else {
        return Err(Error::Transport(format!(
            "gateway URL {base:?} must start with https:// or http://"
        )));
    };
    Ok(url)
}

impl Connection {
    /// Opens `url` with `Authorization: Device <token>`.
    pub async fn open(url: &str, device_token: &str) -> Result<Connection> {
        let mut request = url.into_client_request().map_err(transport)?;
        let value = HeaderValue::from_str(&format!("Device {device_token}"))
            .map_err(|_| Error::Transport("the device token is not a valid header".into()))?;
        request.headers_mut().insert("authorization", value);
        let (ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| Error::CeremonyTimeout)?
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(res) => Error::Refused {
                    code: format!("http_{}", res.status().as_u16()),
                    message: String::from_utf8_lossy(res.body().as_deref().unwrap_or_default())
                        .into_owned(),
                },
                other => transport(other),
            })?;
        Ok(Connection { ws })
    }
}

impl Link for Connection {
    async fn control(&mut self, control: &Control) -> Result<()> {
        let text = serde_json::to_string(control).map_err(transport)?;
        self.ws.send(Frame::text(text)).await.map_err(transport)
    }

    async fn expect_control(&mut self) -> Result<Control> {
        loop {
            let frame = tokio::time::timeout(STEP_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| Error::CeremonyTimeout)?
                .ok_or_else(|| Error::Transport("the gateway closed the connection".into()))?
                .map_err(transport)?;
            match frame {
                Frame::Text(text) => return parse_control(&text),
                Frame::Binary(_) => {
                    return Err(Error::Transport(
                        "a protocol message where a control message was due".into(),
                    ));
                }
                Frame::Close(_) => {
                    return Err(Error::Transport("the gateway closed the connection".into()));
                }
                _ => {}
            }
        }
    }

    async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

impl Transport for Connection {
    async fn send(&mut self, message: Vec<u8>) -> Result<()> {
        self.ws
            .send(Frame::binary(message))
            .await
            .map_err(transport)
    }

    async fn recv(&mut self) -> Result<Vec<u8>> {
        loop {
            let frame = self
                .ws
                .next()
                .await
                .ok_or_else(|| Error::Transport("the gateway closed the connection".into()))?
                .map_err(transport)?;
            match frame {
                Frame::Binary(bytes) => return Ok(bytes.to_vec()),
                Frame::Text(text) => {
                    parse_control(&text)?;
                    return Err(Error::Transport(
                        "a control message in the middle of the protocol".into(),
                    ));
                }
                Frame::Close(_) => {
                    return Err(Error::Transport("the gateway closed the connection".into()));
                }
                _ => {}
            }
        }
    }
}

/// How this device runs its party: steps on the blocking pool, each wait bounded.
const RUNTIME: Runtime = Runtime::Tokio {
    step_timeout: STEP_TIMEOUT,
};

/// [`ceremony::keygen`] with the gateway at `base`.
pub async fn keygen(
    base: &str,
    device_token: &str,
    recovery: RecoveryTarget<'_>,
    store: impl FnOnce(&KeyShare, &BackupKit) -> crate::Result<()>,
) -> crate::Result<KeyShare> {
    let mut conn = Connection::open(&ws_url(base, ceremony::KEYGEN_PATH)?, device_token).await?;
    ceremony::keygen(&mut conn, RUNTIME, recovery, store).await
}

/// Joins signing request `request_id`'s ceremony with `share` ([`ceremony::sign`]).
pub async fn sign(
    base: &str,
    device_token: &str,
    request_id: &str,
    expected: &[u8; 32],
    share: &KeyShare,
) -> crate::Result<([u8; 32], RecoverableSignature)> {
    sign_with(base, device_token, request_id, expected, |_| {
        Ok(KeyShare::from_bytes(&share.to_bytes())?)
    })
    .await
}

/// [`sign`], with the share chosen once the gateway has said which epoch it signs with.
pub async fn sign_with(
    base: &str,
    device_token: &str,
    request_id: &str,
    expected: &[u8; 32],
    choose: impl FnOnce(Option<i64>) -> crate::Result<KeyShare>,
) -> crate::Result<([u8; 32], RecoverableSignature)> {
    let url = ws_url(base, &ceremony::sign_path(request_id))?;
    let mut conn = Connection::open(&url, device_token).await?;
    ceremony::sign(&mut conn, RUNTIME, expected, choose).await
}

/// [`ceremony::refresh`] of `share`'s wallet with the gateway at `base`.
pub async fn refresh(
    base: &str,
    device_token: &str,
    share: &KeyShare,
    recovery: RecoveryTarget<'_>,
    store_pending: impl FnOnce(&KeyShare, i64, &BackupKit) -> crate::Result<()>,
) -> crate::Result<(KeyShare, i64)> {
    let address = format!("0x{}", hex::encode(share.address()));
    let url = ws_url(base, &ceremony::refresh_path(&address))?;
    let mut conn = Connection::open(&url, device_token).await?;
    ceremony::refresh(&mut conn, RUNTIME, share, recovery, store_pending).await
}
