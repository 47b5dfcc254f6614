//! A backup kit downloaded from the page (docs/architecture.md §9), for a user whose device is gone
//! or who wants a copy on paper or a stick: the device share's backup the gateway keeps and the
//! gateway's current share, both sealed to the user's recovery key, so only the recovery secret
//! opens it. Each download is audited (`kit.export`, notified to the user's apps) after a
//! passkey step-up, and its epoch is kept so that the page can say when the copy is stale.

use parapet_mpc::recovery::kit::{BackupKit, KIT_FORMAT};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{get as recovery_of, seal_gateway_share};
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::cosign::Cosigner;
use crate::error::{Error, Result};
use crate::store::db::{db, with_pool};

/// The step-up context of a kit download: the wallet and its current epoch.
pub fn context(address: &str, epoch: i64) -> String {
    format!("kit-export:{address}:{epoch}")
}

/// Assembles `user`'s current kit of `address` (audited first).
pub async fn export(
    cosigner: &Cosigner,
    user: Uuid,
    address: &str,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<BackupKit> {
    let store = cosigner.audit.store();
    let w = crate::accounts::wallets::owned_by(store, address, user).await?;
    let recovery = recovery_of(store, user)
        .await?
        .ok_or(Error::RecoverySetupRequired)?;
    let backup: Option<(Vec<u8>,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT sealed FROM share_backups WHERE wallet = $1 AND epoch = $2")
            .bind(w.address.as_str()).bind(w.epoch).fetch_optional(pool).await.map_err(db("reading a backup"))?
    });
    let (device_share,) = backup.ok_or_else(|| {
        Error::NotSignable(
            "for a download: the device has not sent this epoch's backup yet".to_owned(),
        )
    })?;
    let gateway_share = seal_gateway_share(cosigner, &w, &recovery.public_key).await?;
    let mut e = AuditEvent::new(EventKind::Recovery, now, request_id);
    e.user = Some(user.to_string());
    e.wallet = Some(w.address.clone());
    e.action = Some("kit.export".to_owned());
    e.request = Some(serde_json::json!({"address": w.address, "epoch": w.epoch, "via": "page"}));
    cosigner.audit.append(e).await?;
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO kit_exports (address, user_id, epoch, exported_at) VALUES ($1, $2, $3, $4) ON CONFLICT (address) DO UPDATE SET epoch = excluded.epoch, exported_at = excluded.exported_at")
            .bind(w.address.as_str()).bind(user.to_string()).bind(w.epoch).bind(format_time(now))
            .execute(pool).await.map_err(db("recording a kit download"))?;
    });
    Ok(BackupKit {
        format: KIT_FORMAT.to_owned(),
        user: recovery.kdf_salt(),
        address: w.address.clone(),
        public_key: w.public_key.clone(),
        epoch: w.epoch,
        recovery_public_key: recovery.public_key.to_hex(),
        device_share: hex::encode(device_share),
        gateway_share: hex::encode(gateway_share),
    })
}

/// For each of `user`'s wallets: its epoch, the epoch of the kit last downloaded (if any) and
/// whether that download is stale.
pub async fn status(store: &Store, user: Uuid) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for w in crate::accounts::wallets::of_owner(store, user).await? {
        let last: Option<(i64, String)> = with_pool!(store, pool => {
            sqlx::query_as("SELECT epoch, exported_at FROM kit_exports WHERE address = $1")
                .bind(w.address.as_str()).fetch_optional(pool).await.map_err(db("reading kit downloads"))?
        });
        out.push(serde_json::json!({
            "address": w.address,
            "epoch": w.epoch,
            "downloaded_epoch": last.as_ref().map(|(e, _)| *e),
            "downloaded_at": last.as_ref().map(|(_, t)| t.clone()),
            "stale": last.as_ref().is_some_and(|(e, _)| *e < w.epoch),
        }));
    }
    Ok(out)
}
