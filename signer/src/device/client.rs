//! The device's side of the ceremony WebSocket (docs/architecture.md §2, §6): connects with its
//! device token in the `Authorization` header, runs key generation or signing with its share, and
//! checks what the gateway claims against what its own party computed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::mpc::drive::{self, Transport};
use crate::mpc::wire::{Control, bytes32};
use crate::mpc::{Dkls23, KeyShare, RecoverableSignature, Role, SessionId, ThresholdEcdsa};
use crate::recovery::RecoveryPublicKey;
use crate::recovery::kit::{BackupKit, seal_device_share};
use crate::{Error, Result};

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

    /// Sends a control message.
    pub async fn control(&mut self, control: &Control) -> Result<()> {
        let text = serde_json::to_string(control).map_err(transport)?;
        self.ws.send(Frame::text(text)).await.map_err(transport)
    }

    /// The next control message; an `error` from the gateway becomes [`Error::Refused`].
    pub async fn expect_control(&mut self) -> Result<Control> {
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

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn parse_control(text: &str) -> Result<Control> {
    let control: Control = serde_json::from_str(text)
        .map_err(|e| Error::Transport(format!("bad control message: {e}")))?;
    match control {
        Control::Error { code, message } => Err(Error::Refused { code, message }),
        other => Ok(other),
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

fn session_of(session: &str) -> Result<SessionId> {
    bytes32(session)
        .map(SessionId)
        .ok_or_else(|| Error::Transport("bad execution id from the gateway".into()))
}

/// The user's recovery public key as the device's own file holds it (docs/architecture.md §9: never
/// one the gateway supplies), and the user it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryTarget<'a> {
    /// The recovery secret's salt ([`crate::device::file::DeviceSecrets::kdf_salt`]), named in
    /// the kit.
    pub user: &'a str,
    pub public_key: &'a RecoveryPublicKey,
}

/// After the protocol of a key generation or refresh: sends the device's new share sealed to
/// the recovery key, receives the gateway's sealed the same way, and returns the new kit.
async fn exchange_backup(
    conn: &mut Connection,
    recovery: RecoveryTarget<'_>,
    share: &KeyShare,
    epoch: i64,
) -> Result<BackupKit> {
    let address = format!("0x{}", hex::encode(share.address()));
    let device_envelope = seal_device_share(recovery.public_key, share, epoch)?;
    conn.control(&Control::Backup {
        address: address.clone(),
        epoch,
        recovery_public_key: recovery.public_key.to_hex(),
        device_share: hex::encode(&device_envelope),
    })
    .await?;
    let gateway_envelope = match conn.expect_control().await? {
        Control::Kit {
            address: a,
            epoch: e,
            gateway_share,
        } if a == address && e == epoch => hex::decode(gateway_share)
            .map_err(|_| Error::Transport("a kit that is not hex".into()))?,
        other => {
            return Err(Error::Transport(format!(
                "expected the gateway's kit, got {}",
                other.kind()
            )));
        }
    };
    Ok(BackupKit::new(
        recovery.user,
        share,
        epoch,
        recovery.public_key,
        &device_envelope,
        &gateway_envelope,
    ))
}

/// Key generation with the gateway at `base`: runs the device's party, exchanges the backups
/// (docs/architecture.md §9), hands the new share and its kit to `store` (which must keep both
/// durably before returning), then waits for the gateway to commit the wallet. Returns the share
/// (its address is the wallet's).
pub async fn keygen(
    base: &str,
    device_token: &str,
    recovery: RecoveryTarget<'_>,
    store: impl FnOnce(&KeyShare, &BackupKit) -> Result<()>,
) -> Result<KeyShare> {
    let mut conn = Connection::open(&ws_url(base, "/v1/device/keygen")?, device_token).await?;
    let session = match conn.expect_control().await? {
        Control::Start {
            ceremony, session, ..
        } if ceremony == "keygen" => session_of(&session)?,
        other => return Err(Error::Transport(format!("unexpected {}", other.kind()))),
    };
    let ceremony = Dkls23.keygen(Role::Device, session)?;
    let (last, share) = drive::run(ceremony, &mut conn, STEP_TIMEOUT).await?;
    drive::send_all(&mut conn, last).await?;
    let kit = exchange_backup(&mut conn, recovery, &share, 0).await?;
    store(&share, &kit)?;
    let address = format!("0x{}", hex::encode(share.address()));
    conn.control(&Control::Stored {
        address: address.clone(),
    })
    .await?;
    match conn.expect_control().await? {
        Control::Done {
            address: Some(a), ..
        } if a == address => {}
        other => return Err(Error::Transport(format!("unexpected {}", other.kind()))),
    }
    conn.close().await;
    Ok(share)
}

/// Joins signing request `request_id`'s ceremony with `share`, signing `expected` only: the
/// digest the caller computed from the request itself (never one taken from the gateway). The
/// gateway's result is checked against the device's own.
pub async fn sign(
    base: &str,
    device_token: &str,
    request_id: &str,
    expected: &[u8; 32],
    share: &KeyShare,
) -> Result<([u8; 32], RecoverableSignature)> {
    sign_with(base, device_token, request_id, expected, |_| {
        KeyShare::from_bytes(&share.to_bytes())
    })
    .await
}

/// [`sign`], with the share chosen once the gateway has said which epoch it signs with (a
/// device that holds a refreshed share not yet confirmed picks it by its epoch).
///
/// The gateway announces the digest it will sign in its `start`. A device that signed whatever
/// was announced would give a compromised gateway its half of any signature, so a `start`
/// whose digest is not `expected` ends the connection before any protocol round, with
/// [`Error::DigestMismatch`]: no share is opened and no message of the protocol leaves.
pub async fn sign_with(
    base: &str,
    device_token: &str,
    request_id: &str,
    expected: &[u8; 32],
    choose: impl FnOnce(Option<i64>) -> Result<KeyShare>,
) -> Result<([u8; 32], RecoverableSignature)> {
    let path = format!("/v1/signing-requests/{request_id}/ceremony");
    let mut conn = Connection::open(&ws_url(base, &path)?, device_token).await?;
    let (session, announced, epoch) = match conn.expect_control().await? {
        Control::Start {
            ceremony,
            session,
            digest: Some(digest),
            epoch,
            ..
        } if ceremony == "sign" => (
            session_of(&session)?,
            bytes32(&digest)
                .ok_or_else(|| Error::Transport("bad digest from the gateway".into()))?,
            epoch,
        ),
        other => return Err(Error::Transport(format!("unexpected {}", other.kind()))),
    };
    if &announced != expected {
        conn.close().await;
        return Err(Error::DigestMismatch {
            expected: format!("0x{}", hex::encode(expected)),
            announced: format!("0x{}", hex::encode(announced)),
        });
    }
    let digest = *expected;
    let share = choose(epoch)?;
    let ceremony = Dkls23.sign(Role::Device, session, &share, digest)?;
    let (last, signature) = drive::run(ceremony, &mut conn, STEP_TIMEOUT).await?;
    drive::send_all(&mut conn, last).await?;
    match conn.expect_control().await? {
        Control::Done {
            signature: Some(s), ..
        } if s == (&signature).into() => {}
        other => return Err(Error::Transport(format!("unexpected {}", other.kind()))),
    }
    conn.close().await;
    Ok((digest, signature))
}

/// Refreshes `share` of wallet `address` with the gateway (the owner approved the refresh with
/// a passkey first). Two phases: after the backup exchange, the device hands the new share and
/// its kit to `store_pending` (keep them next to the current ones, not instead of them) and says
/// so; the gateway then commits the new epoch and answers `done`. Returns the new share and its
/// epoch; until `done` arrives the current share stays the one to use (the gateway may not have
/// committed). A new share whose address is not the wallet's is refused before any of that
/// ([`Error::AddressChanged`]).
pub async fn refresh(
    base: &str,
    device_token: &str,
    share: &KeyShare,
    recovery: RecoveryTarget<'_>,
    store_pending: impl FnOnce(&KeyShare, i64, &BackupKit) -> Result<()>,
) -> Result<(KeyShare, i64)> {
    let address = format!("0x{}", hex::encode(share.address()));
    let path = format!("/v1/device/wallets/{address}/refresh");
    let mut conn = Connection::open(&ws_url(base, &path)?, device_token).await?;
    let (session, epoch) = match conn.expect_control().await? {
        Control::Start {
            ceremony,
            session,
            epoch: Some(epoch),
            ..
        } if ceremony == "refresh" => (session_of(&session)?, epoch),
        other => return Err(Error::Transport(format!("unexpected {}", other.kind()))),
    };
    let ceremony = Dkls23.refresh(Role::Device, session, share)?;
    let (last, new_share) = drive::run(ceremony, &mut conn, STEP_TIMEOUT).await?;
    // A refresh re-randomises the shares and keeps the key: a new share of another address
    // (a gateway that ran something else) is never stored, backed up or confirmed.
    if new_share.address() != share.address() {
        conn.close().await;
        return Err(Error::AddressChanged {
            held: address,
            got: format!("0x{}", hex::encode(new_share.address())),
        });
    }
    drive::send_all(&mut conn, last).await?;
    let next = epoch + 1;
    let kit = exchange_backup(&mut conn, recovery, &new_share, next).await?;
    store_pending(&new_share, next, &kit)?;
    conn.control(&Control::Stored {
        address: address.clone(),
    })
    .await?;
    match conn.expect_control().await? {
        Control::Done {
            address: Some(a), ..
        } if a == address => {}
        other => return Err(Error::Transport(format!("unexpected {}", other.kind()))),
    }
    conn.close().await;
    Ok((new_share, next))
}
