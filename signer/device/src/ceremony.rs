//! The device's party of the ceremonies (docs/architecture.md §2, §6), over any [`Link`] to the
//! gateway: key generation, signing with the what-you-see-is-what-you-sign check, and two-phase
//! refresh. It checks what the gateway claims against what its own party computed. No I/O of
//! its own: the command-line device links it over a tokio WebSocket ([`crate::client`], feature
//! `native`), a browser over its own.

use std::future::Future;

use parapet_mpc::drive::{self, MaybeSend, Runtime, Transport};
use parapet_mpc::recovery::RecoveryPublicKey;
use parapet_mpc::recovery::kit::{BackupKit, seal_device_share};
use parapet_mpc::wire::{Control, bytes32};
use parapet_mpc::{Dkls23, KeyShare, RecoverableSignature, Role, SessionId, ThresholdEcdsa};

use crate::{Error, Result};

/// The ceremony connection's path for a key generation.
pub const KEYGEN_PATH: &str = "/v1/device/keygen";

/// The ceremony connection's path for signing request `request_id`.
pub fn sign_path(request_id: &str) -> String {
    format!("/v1/signing-requests/{request_id}/ceremony")
}

/// The ceremony connection's path for refreshing wallet `address` (`0x…`).
pub fn refresh_path(address: &str) -> String {
    format!("/v1/device/wallets/{address}/refresh")
}

/// One ceremony connection to the gateway: protocol messages (binary) through [`Transport`],
/// control messages (JSON text) through these methods.
pub trait Link: Transport {
    /// Sends a control message.
    fn control(
        &mut self,
        control: &Control,
    ) -> impl Future<Output = parapet_mpc::Result<()>> + MaybeSend;
    /// The next control message; an `error` from the gateway is [`parapet_mpc::Error::Refused`].
    fn expect_control(&mut self) -> impl Future<Output = parapet_mpc::Result<Control>> + MaybeSend;
    /// Closes the connection politely.
    fn close(&mut self) -> impl Future<Output = ()> + MaybeSend;
}

/// A control message from its JSON text; an `error` from the gateway becomes
/// [`parapet_mpc::Error::Refused`].
pub fn parse_control(text: &str) -> parapet_mpc::Result<Control> {
    let control: Control = serde_json::from_str(text)
        .map_err(|e| parapet_mpc::Error::Transport(format!("bad control message: {e}")))?;
    match control {
        Control::Error { code, message } => Err(parapet_mpc::Error::Refused { code, message }),
        other => Ok(other),
    }
}

fn unexpected(what: String) -> Error {
    Error::Mpc(parapet_mpc::Error::Transport(what))
}

fn session_of(session: &str) -> Result<SessionId> {
    bytes32(session)
        .map(SessionId)
        .ok_or_else(|| unexpected("bad execution id from the gateway".into()))
}

/// The user's recovery public key as the device's own file holds it (docs/architecture.md §9: never
/// one the gateway supplies), and the user it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryTarget<'a> {
    /// The recovery secret's salt ([`crate::file::DeviceSecrets::kdf_salt`]), named in
    /// the kit.
    pub user: &'a str,
    pub public_key: &'a RecoveryPublicKey,
}

/// After the protocol of a key generation or refresh: sends the device's new share sealed to
/// the recovery key, receives the gateway's sealed the same way, and returns the new kit.
async fn exchange_backup(
    conn: &mut impl Link,
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
        } if a == address && e == epoch => {
            hex::decode(gateway_share).map_err(|_| unexpected("a kit that is not hex".into()))?
        }
        other => {
            return Err(unexpected(format!(
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

/// Second phase of a key generation or refresh: tells the gateway the device keeps the new
/// share durably and waits for it to commit the wallet (`done`); then closes.
async fn confirm_stored(conn: &mut impl Link, address: &str) -> Result<()> {
    conn.control(&Control::Stored {
        address: address.to_owned(),
    })
    .await?;
    match conn.expect_control().await? {
        Control::Done {
            address: Some(a), ..
        } if a == address => {}
        other => return Err(unexpected(format!("unexpected {}", other.kind()))),
    }
    conn.close().await;
    Ok(())
}

/// Key generation with the gateway at `base`: runs the device's party, exchanges the backups
/// (docs/architecture.md §9), hands the new share and its kit to `store` (which must keep both
/// durably before returning), then waits for the gateway to commit the wallet. Returns the share
/// (its address is the wallet's).
pub async fn keygen(
    conn: &mut impl Link,
    runtime: Runtime,
    recovery: RecoveryTarget<'_>,
    store: impl FnOnce(&KeyShare, &BackupKit) -> Result<()>,
) -> Result<KeyShare> {
    let session = match conn.expect_control().await? {
        Control::Start {
            ceremony, session, ..
        } if ceremony == "keygen" => session_of(&session)?,
        other => return Err(unexpected(format!("unexpected {}", other.kind()))),
    };
    let ceremony = Dkls23.keygen(Role::Device, session)?;
    let (last, share) = drive::run(runtime, ceremony, conn).await?;
    drive::send_all(conn, last).await?;
    let kit = exchange_backup(conn, recovery, &share, 0).await?;
    store(&share, &kit)?;
    let address = format!("0x{}", hex::encode(share.address()));
    confirm_stored(conn, &address).await?;
    Ok(share)
}

/// Joins a signing request's ceremony, signing `expected` only: the digest the caller computed
/// from the request itself (never one taken from the gateway). The share is chosen once the
/// gateway has said which epoch it signs with (a device that holds a refreshed share not yet
/// confirmed picks it by its epoch). The gateway's result is checked against the device's own.
///
/// The gateway announces the digest it will sign in its `start`. A device that signed whatever
/// was announced would give a compromised gateway its half of any signature, so a `start`
/// whose digest is not `expected` ends the connection before any protocol round, with
/// [`Error::DigestMismatch`]: no share is opened and no message of the protocol leaves.
pub async fn sign(
    conn: &mut impl Link,
    runtime: Runtime,
    expected: &[u8; 32],
    choose: impl FnOnce(Option<i64>) -> Result<KeyShare>,
) -> Result<([u8; 32], RecoverableSignature)> {
    let (session, announced, epoch) = match conn.expect_control().await? {
        Control::Start {
            ceremony,
            session,
            digest: Some(digest),
            epoch,
            ..
        } if ceremony == "sign" => (
            session_of(&session)?,
            bytes32(&digest).ok_or_else(|| unexpected("bad digest from the gateway".into()))?,
            epoch,
        ),
        other => return Err(unexpected(format!("unexpected {}", other.kind()))),
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
    let (last, signature) = drive::run(runtime, ceremony, conn).await?;
    drive::send_all(conn, last).await?;
    match conn.expect_control().await? {
        Control::Done {
            signature: Some(s), ..
        } if s == (&signature).into() => {}
        other => return Err(unexpected(format!("unexpected {}", other.kind()))),
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
    conn: &mut impl Link,
    runtime: Runtime,
    share: &KeyShare,
    recovery: RecoveryTarget<'_>,
    store_pending: impl FnOnce(&KeyShare, i64, &BackupKit) -> Result<()>,
) -> Result<(KeyShare, i64)> {
    let address = format!("0x{}", hex::encode(share.address()));
    let (session, epoch) = match conn.expect_control().await? {
        Control::Start {
            ceremony,
            session,
            epoch: Some(epoch),
            ..
        } if ceremony == "refresh" => (session_of(&session)?, epoch),
        other => return Err(unexpected(format!("unexpected {}", other.kind()))),
    };
    let ceremony = Dkls23.refresh(Role::Device, session, share)?;
    let (last, new_share) = drive::run(runtime, ceremony, conn).await?;
    // A refresh re-randomises the shares and keeps the key: a new share of another address
    // (a gateway that ran something else) is never stored, backed up or confirmed.
    if new_share.address() != share.address() {
        conn.close().await;
        return Err(Error::AddressChanged {
            held: address,
            got: format!("0x{}", hex::encode(new_share.address())),
        });
    }
    drive::send_all(conn, last).await?;
    let next = epoch + 1;
    let kit = exchange_backup(conn, recovery, &new_share, next).await?;
    store_pending(&new_share, next, &kit)?;
    confirm_stored(conn, &address).await?;
    Ok((new_share, next))
}
