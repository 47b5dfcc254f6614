//! Account recovery (docs/architecture.md §9): a user who lost their devices opens a recovery from
//! a new one with the auth key their recovery secret derives; it becomes completable only after a
//! delay (48 h by default) during which they can cancel it with any of their passkeys. Completing
//! it, in one transaction: revokes every device, passkey and session of the user, enrols the new
//! device, hands every wallet to it marked `refresh_required` with an approved refresh, and
//! releases the device-share backups (sealed to the recovery key: only the secret opens them).
//! No wallet signs again until the new device has refreshed it, so the old device's share can
//! never take part in a ceremony again.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::accounts::apps::key_hash;
use crate::accounts::devices::Device;
use crate::audit::event::{AuditEvent, EventKind, format_time, parse_time};
use crate::audit::{AuditLog, Store};
use crate::error::{Error, Result};
use crate::store::db::{BeginWrite, db, decode_name, with_pool};

/// How long a completed recovery's refresh approvals last: the new device refreshes right away,
/// but a user who steps away still finds them valid the same day.
pub const REFRESH_APPROVAL_TTL: Duration = Duration::hours(24);
/// How long after its completion a recovery's answer can be fetched again, while its new device
/// has not used its token: long enough to retry after a lost connection, short enough that a
/// stolen recovery token is of no use for long.
pub const REDELIVERY_WINDOW: Duration = Duration::hours(24);
/// How long after it becomes completable an open recovery can still be completed.
pub const COMPLETION_WINDOW: Duration = Duration::days(7);

pub use parapet_api::recovery::RecoveryState;

/// A recovery as the user, the page and the recovering device see it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recovery {
    pub id: String,
    pub user_id: Uuid,
    pub state: RecoveryState,
    pub device_name: String,
    pub opened_at: String,
    pub completable_at: String,
    pub expires_at: String,
    pub ended_at: Option<String>,
}

impl Recovery {
    /// The state as of `now`.
    pub fn state_at(&self, now: OffsetDateTime) -> RecoveryState {
        match parse_time(&self.expires_at) {
            Ok(t) if self.state == RecoveryState::Open && now >= t => RecoveryState::Expired,
            _ => self.state,
        }
    }

    /// The recovery as it reads at `now`.
    pub fn view(&self, now: OffsetDateTime) -> parapet_api::recovery::Recovery {
        parapet_api::recovery::Recovery {
            id: self.id.clone(),
            user_id: self.user_id.to_string(),
            state: self.state_at(now),
            device_name: self.device_name.clone(),
            opened_at: self.opened_at.clone(),
            completable_at: self.completable_at.clone(),
            expires_at: self.expires_at.clone(),
            ended_at: self.ended_at.clone(),
        }
    }

    /// [`Recovery::view`] as JSON, for the page's lists.
    pub fn to_json(&self, now: OffsetDateTime) -> serde_json::Value {
        serde_json::to_value(self.view(now)).unwrap_or_default()
    }
}

/// The columns every read selects (a macro so that statements stay `&'static str`).
macro_rules! columns {
    () => {
        "id, user_id, state, device_name, opened_at, completable_at, expires_at, ended_at"
    };
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
);

fn from_row(r: Row) -> Result<Recovery> {
    let (id, user, state, device_name, opened_at, completable_at, expires_at, ended_at) = r;
    Ok(Recovery {
        id,
        user_id: Uuid::parse_str(&user).map_err(|e| Error::Database(e.to_string()))?,
        state: decode_name(&state, RecoveryState::from_name)
            .map_err(|e| Error::Database(e.to_string()))?,
        device_name,
        opened_at,
        completable_at,
        expires_at,
        ended_at,
    })
}

/// The user a recovery names: their id, or the owner of one of their wallets. `None` when
/// nobody matches.
pub async fn resolve_user(store: &Store, who: &str) -> Result<Option<Uuid>> {
    let who = who.trim();
    if let Ok(id) = Uuid::parse_str(who) {
        return Ok(crate::accounts::users::store::user_disabled(store, id)
            .await?
            .map(|_| id));
    }
    let Ok(address) = crate::accounts::wallets::normalize_address(who) else {
        return Err(Error::InvalidRequest(
            "user is a user id or one of the user's wallet addresses".to_owned(),
        ));
    };
    Ok(crate::accounts::wallets::get(store, &address)
        .await?
        .map(|w| w.owner))
}

fn event(action: &str, r: &Recovery, request_id: &str, now: OffsetDateTime) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Recovery, now, request_id);
    e.user = Some(r.user_id.to_string());
    e.action = Some(action.to_owned());
    e.request = Some(serde_json::json!({
        "recovery": r.id, "device_name": r.device_name,
        "opened_at": r.opened_at, "completable_at": r.completable_at,
    }));
    e
}

/// What a recovering device presents.
pub struct OpenRequest<'a> {
    pub user: Uuid,
    pub auth_key: Zeroizing<[u8; 32]>,
    /// A current TOTP code: required once the user has an active factor.
    pub totp: Option<&'a str>,
    pub device_name: &'a str,
}

/// Opens a recovery for `user` with the auth key of their recovery secret (and a TOTP code when
/// they enrolled one). A wrong key, a wrong or replayed code, a user without a secret and a
/// disabled user are the same `recovery_refused`. Returns the recovery and
/// the bearer token the opening device completes it with (stored hashed).
pub async fn open(
    audit: &AuditLog,
    personal_data: &crate::custody::sealing::PersonalDataKey,
    req: OpenRequest<'_>,
    delay: Duration,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<(Recovery, String)> {
    let OpenRequest {
        user,
        auth_key,
        totp,
        device_name,
    } = req;
    let store = audit.store();
    let name = device_name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(
            "device name must be 1 to 100 printable characters".to_owned(),
        ));
    }
    let Some(stored) = super::get(store, user).await? else {
        return Err(Error::RecoveryRefused);
    };
    if !stored.matches(auth_key).await?
        || crate::accounts::users::store::user_disabled(store, user).await? != Some(false)
    {
        return Err(Error::RecoveryRefused);
    }
    // The code is checked (and consumed) only after the secret matched, so that guesses of the
    // secret cannot burn the user's codes.
    if crate::accounts::users::totp::is_active(store, user).await? {
        let Some(code) = totp else {
            return Err(Error::RecoveryRefused);
        };
        if !crate::accounts::users::totp::verify(store, personal_data, user, code, now).await? {
            return Err(Error::RecoveryRefused);
        }
    }
    if open_of(store, user, now)
        .await?
        .iter()
        .any(|r| r.state_at(now) == RecoveryState::Open)
    {
        return Err(Error::RecoveryInProgress);
    }
    let token = format!("pr_{}", hex::encode(rand::random::<[u8; 32]>()));
    let completable = now + delay;
    let recovery = Recovery {
        id: Uuid::now_v7().to_string(),
        user_id: user,
        state: RecoveryState::Open,
        device_name: name.to_owned(),
        opened_at: format_time(now),
        completable_at: format_time(completable),
        expires_at: format_time(completable + COMPLETION_WINDOW),
        ended_at: None,
    };
    audit
        .append(event("recovery.open", &recovery, request_id, now))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO recoveries (id, user_id, state, token_hash, device_name, opened_at, completable_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(recovery.id.as_str()).bind(user.to_string()).bind(RecoveryState::Open.as_str())
            .bind(key_hash(&token).as_slice()).bind(recovery.device_name.as_str())
            .bind(recovery.opened_at.as_str()).bind(recovery.completable_at.as_str())
            .bind(recovery.expires_at.as_str())
            .execute(pool).await.map_err(db("opening a recovery"))?;
    });
    Ok((recovery, token))
}

/// The user's recoveries that are still open or ended in the last week, newest first (the page
/// shows them).
pub async fn open_of(store: &Store, user: Uuid, now: OffsetDateTime) -> Result<Vec<Recovery>> {
    let since = format_time(now - Duration::days(7));
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM recoveries WHERE user_id = $1 AND (state = 'open' OR ended_at > $2) ORDER BY opened_at DESC"
    );
    let rows: Vec<Row> = with_pool!(store, pool => {
        sqlx::query_as(SQL).bind(user.to_string()).bind(since.as_str())
            .fetch_all(pool).await.map_err(db("reading recoveries"))?
    });
    rows.into_iter().map(from_row).collect()
}

/// The recovery `id`, if `token` is its bearer token (compared by hash: the lookup is by the
/// token's SHA-256, never by the token).
pub async fn by_token(store: &Store, id: &str, token: &str) -> Result<Recovery> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM recoveries WHERE id = $1 AND token_hash = $2"
    );
    let row: Option<Row> = with_pool!(store, pool => {
        sqlx::query_as(SQL).bind(id).bind(key_hash(token).as_slice())
            .fetch_optional(pool).await.map_err(db("reading a recovery"))?
    });
    row.map(from_row).transpose()?.ok_or(Error::Unauthorized)
}

/// The user's recovery `id`.
pub async fn of_user(store: &Store, user: Uuid, id: &str) -> Result<Recovery> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM recoveries WHERE id = $1 AND user_id = $2"
    );
    let row: Option<Row> = with_pool!(store, pool => {
        sqlx::query_as(SQL).bind(id).bind(user.to_string())
            .fetch_optional(pool).await.map_err(db("reading a recovery"))?
    });
    row.map(from_row).transpose()?.ok_or(Error::NotFound)
}

/// The passkey ceremony context that cancelling recovery `id` is bound to.
pub fn cancel_context(id: &str) -> String {
    format!("recovery-cancel:{id}")
}

/// Cancels an open recovery (the caller checked the owner's passkey step-up).
pub async fn cancel(
    audit: &AuditLog,
    recovery: &Recovery,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Recovery> {
    if recovery.state_at(now) != RecoveryState::Open {
        return Err(Error::RecoveryNotCompletable(format!(
            "the recovery is {}",
            recovery.state_at(now)
        )));
    }
    audit
        .append(event("recovery.cancel", recovery, request_id, now))
        .await?;
    let n = with_pool!(audit.store(), pool => {
        sqlx::query("UPDATE recoveries SET state = 'cancelled', ended_at = $2 WHERE id = $1 AND state = 'open'")
            .bind(recovery.id.as_str()).bind(format_time(now))
            .execute(pool).await.map_err(db("cancelling a recovery"))?.rows_affected()
    });
    if n != 1 {
        return Err(Error::RecoveryNotCompletable(
            "the recovery ended meanwhile".to_owned(),
        ));
    }
    let mut out = recovery.clone();
    out.state = RecoveryState::Cancelled;
    out.ended_at = Some(format_time(now));
    Ok(out)
}

/// What a completed recovery gives the new device.
#[derive(Debug)]
pub struct Completed {
    pub device: Device,
    pub device_token: String,
    /// Each wallet's device-share backup at its current epoch: `(address, epoch, sealed)`.
    pub backups: Vec<(String, i64, Vec<u8>)>,
    /// Wallets with no backup at their current epoch (made before the secret and never backed
    /// up): the recovery cannot bring those back.
    pub missing: Vec<String>,
}

/// Completes an open recovery whose delay has passed (see the module documentation).
pub async fn complete(
    audit: &AuditLog,
    recovery: &Recovery,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Completed> {
    let store = audit.store();
    match recovery.state_at(now) {
        RecoveryState::Open => {}
        other => {
            return Err(Error::RecoveryNotCompletable(format!(
                "the recovery is {other}"
            )));
        }
    }
    let completable = parse_time(&recovery.completable_at)
        .map_err(|e| Error::Database(format!("recovery time: {e}")))?;
    if now < completable {
        return Err(Error::RecoveryNotCompletable(format!(
            "the waiting period ends at {}",
            recovery.completable_at
        )));
    }
    let user = recovery.user_id;
    let wallets = crate::accounts::wallets::of_owner(store, user).await?;
    let (backups, missing) = backups_of(store, &wallets).await?;
    let device_token = crate::accounts::devices::new_device_token();
    let device = Device {
        device_id: crate::accounts::devices::new_device_id(),
        user_id: user,
        name: recovery.device_name.clone(),
        created_at: format_time(now),
        last_seen: None,
        revoked_at: None,
    };
    let mut e = event("recovery.complete", recovery, request_id, now);
    e.request = Some(serde_json::json!({
        "recovery": recovery.id, "device_id": device.device_id, "device_name": device.name,
        "wallets": wallets.iter().map(|w| serde_json::json!({"address": w.address, "epoch": w.epoch})).collect::<Vec<_>>(),
        "without_backup": missing,
    }));
    audit.append(e).await?;
    let at = format_time(now);
    let approval_expires = format_time(now + REFRESH_APPROVAL_TTL);
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("completing a recovery"))?;
        let n = sqlx::query("UPDATE recoveries SET state = 'completed', ended_at = $2, device_id = $3 WHERE id = $1 AND state = 'open'")
            .bind(recovery.id.as_str()).bind(at.as_str()).bind(device.device_id.as_str())
            .execute(&mut *tx).await.map_err(db("completing a recovery"))?.rows_affected();
        if n != 1 {
            return Err(Error::RecoveryNotCompletable("the recovery ended meanwhile".to_owned()));
        }
        sqlx::query("UPDATE devices SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user.to_string()).bind(at.as_str())
            .execute(&mut *tx).await.map_err(db("revoking devices"))?;
        sqlx::query("INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(device.device_id.as_str()).bind(user.to_string()).bind(device.name.as_str())
            .bind(key_hash(&device_token).as_slice()).bind(at.as_str())
            .execute(&mut *tx).await.map_err(db("enrolling the new device"))?;
        sqlx::query("UPDATE passkey_credentials SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user.to_string()).bind(at.as_str())
            .execute(&mut *tx).await.map_err(db("revoking passkeys"))?;
        sqlx::query("UPDATE sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL")
            .bind(user.to_string()).bind(at.as_str())
            .execute(&mut *tx).await.map_err(db("ending sessions"))?;
        sqlx::query("UPDATE wallets SET device_id = $2, refresh_required = $3 WHERE owner = $1")
            .bind(user.to_string()).bind(device.device_id.as_str()).bind(true)
            .execute(&mut *tx).await.map_err(db("handing wallets over"))?;
        sqlx::query("DELETE FROM wallet_devices WHERE address IN (SELECT address FROM wallets WHERE owner = $1)")
            .bind(user.to_string())
            .execute(&mut *tx).await.map_err(db("handing wallets over"))?;
        sqlx::query("UPDATE device_transfers SET state = 'refused', sealed = NULL WHERE user_id = $1 AND state IN ('waiting', 'approved', 'sealed')")
            .bind(user.to_string())
            .execute(&mut *tx).await.map_err(db("handing wallets over"))?;
        for w in &wallets {
            sqlx::query("INSERT INTO operations (id, kind, wallet, owner, epoch, state, created_at, expires_at, updated_at) VALUES ($1, 'refresh', $2, $3, $4, 'approved', $5, $6, $5)")
                .bind(Uuid::now_v7().to_string()).bind(w.address.as_str()).bind(user.to_string())
                .bind(w.epoch).bind(at.as_str()).bind(approval_expires.as_str())
                .execute(&mut *tx).await.map_err(db("approving the forced refreshes"))?;
        }
        tx.commit().await.map_err(db("completing a recovery"))?;
    });
    Ok(Completed {
        device,
        device_token,
        backups,
        missing,
    })
}

/// The answer of a completed recovery, again, for the device that completed it: the backups as
/// they are now and a fresh device token that replaces the previous one (only its hash is ever
/// stored, so the lost one cannot be sent again; replacing it means a token that went astray
/// with a lost answer stops working). Possible only while the new device has never used its
/// token, it and the user are live, and within [`REDELIVERY_WINDOW`] of the completion; once the
/// device has used its token it evidently has the answer, and anything else is
/// `recovery_not_completable` as before.
pub async fn redeliver(
    audit: &AuditLog,
    recovery: &Recovery,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Completed> {
    let store = audit.store();
    let not_again =
        |why: &str| Error::RecoveryNotCompletable(format!("the recovery is completed; {why}"));
    if recovery.state != RecoveryState::Completed {
        return Err(Error::RecoveryNotCompletable(format!(
            "the recovery is {}",
            recovery.state_at(now)
        )));
    }
    let ended = recovery
        .ended_at
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| Error::Database(format!("recovery time: {e}")))?;
    if ended.is_none_or(|t| now >= t + REDELIVERY_WINDOW) {
        return Err(not_again("its answer can no longer be fetched again"));
    }
    let device_id: Option<(Option<String>,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT device_id FROM recoveries WHERE id = $1")
            .bind(recovery.id.as_str()).fetch_optional(pool).await.map_err(db("reading a recovery"))?
    });
    let Some((Some(device_id),)) = device_id else {
        return Err(not_again("its answer can no longer be fetched again"));
    };
    let user = recovery.user_id;
    let device = match crate::accounts::devices::live_of(store, user, &device_id).await {
        Ok(d) if d.last_seen.is_none() => d,
        Ok(_) | Err(Error::NotFound) => {
            return Err(not_again("its device has already received its answer"));
        }
        Err(e) => return Err(e),
    };
    if crate::accounts::users::store::user_disabled(store, user).await? != Some(false) {
        return Err(not_again("the user is disabled"));
    }
    let wallets = crate::accounts::wallets::of_owner(store, user).await?;
    let (backups, missing) = backups_of(store, &wallets).await?;
    let device_token = crate::accounts::devices::new_device_token();
    let mut e = event("recovery.redeliver", recovery, request_id, now);
    e.request = Some(serde_json::json!({
        "recovery": recovery.id, "device_id": device.device_id,
        "wallets": wallets.iter().map(|w| serde_json::json!({"address": w.address, "epoch": w.epoch})).collect::<Vec<_>>(),
        "without_backup": missing,
    }));
    audit.append(e).await?;
    let n = with_pool!(store, pool => {
        sqlx::query("UPDATE devices SET token_hash = $2 WHERE id = $1 AND last_seen IS NULL AND revoked_at IS NULL")
            .bind(device.device_id.as_str()).bind(key_hash(&device_token).as_slice())
            .execute(pool).await.map_err(db("re-issuing a device token"))?.rows_affected()
    });
    if n != 1 {
        return Err(not_again("its device has already received its answer"));
    }
    Ok(Completed {
        device,
        device_token,
        backups,
        missing,
    })
}

/// Each wallet's backup at its current epoch, and the wallets without one.
async fn backups_of(
    store: &Store,
    wallets: &[crate::accounts::wallets::StoredWallet],
) -> Result<(Vec<(String, i64, Vec<u8>)>, Vec<String>)> {
    let mut backups = Vec::new();
    let mut missing = Vec::new();
    for w in wallets {
        match backup_of(store, &w.address, w.epoch).await? {
            Some(sealed) => backups.push((w.address.clone(), w.epoch, sealed)),
            None => missing.push(w.address.clone()),
        }
    }
    Ok((backups, missing))
}

async fn backup_of(store: &Store, wallet: &str, epoch: i64) -> Result<Option<Vec<u8>>> {
    let row: Option<(Vec<u8>,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT sealed FROM share_backups WHERE wallet = $1 AND epoch = $2")
            .bind(wallet).bind(epoch).fetch_optional(pool).await.map_err(db("reading a backup"))?
    });
    Ok(row.map(|(s,)| s))
}
