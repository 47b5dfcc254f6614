//! Backup devices (docs/architecture.md §9): a user's wallet shares on more than one device. A new
//! device asks for a transfer with its own X25519 public key; the user approves it with a passkey
//! step-up; an existing device that holds the wallets derives the short code from the key this
//! module relays, and — only when the user confirms it matches the new device's — seals the
//! shares to it. The gateway stores and relays the sealed bundle and records which device holds
//! which wallet at which epoch; it never sees a share.
//!
//! After a refresh, devices still holding the old epoch are stale: they cannot sign until a
//! current holder re-syncs them (`resync`, no new approval: the device was approved before).
//! Removing a device forces a refresh of every wallet it held.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::devices::Device;
use crate::accounts::wallets::{self, StoredWallet};
use crate::audit::AuditLog;
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time, parse_time};
use crate::error::{Error, Result};
use crate::store::db::{BeginWrite, RowLike, db, decode_name, with_pool};

/// How long a transfer request waits for approval and a sender.
pub const TRANSFER_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub use parapet_api::devices::{Carried, Holding, TransferKind, TransferState};

/// One transfer as stored (the sealed bundle is read apart, only by its recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: String,
    pub user_id: Uuid,
    pub kind: TransferKind,
    pub to_device: String,
    /// The recipient's X25519 public key (hex) as it registered it.
    pub public_key: String,
    pub state: TransferState,
    pub from_device: Option<String>,
    pub wallets: Vec<Carried>,
    pub created_at: String,
    pub expires_at: String,
}

impl Transfer {
    /// The short code the new device shows (the page shows it too, as a reminder; the sending
    /// device derives its own from the key and never trusts this one).
    pub fn short_code(&self) -> String {
        parapet_device::transfer::parse_public_key(&self.public_key)
            .map(|k| parapet_device::transfer::short_code(&k))
            .unwrap_or_default()
    }

    pub fn view(&self) -> parapet_api::devices::Transfer {
        parapet_api::devices::Transfer {
            id: self.id.clone(),
            kind: self.kind,
            to_device: self.to_device.clone(),
            public_key: self.public_key.clone(),
            short_code: self.short_code(),
            state: self.state,
            from_device: self.from_device.clone(),
            wallets: self.wallets.clone(),
            created_at: self.created_at.clone(),
            expires_at: self.expires_at.clone(),
            sealed: None,
        }
    }

    /// The state as a refusal names it: `expired` once past its expiry.
    pub fn state_at(&self, now: OffsetDateTime) -> String {
        if self.expired(now) {
            "expired".to_owned()
        } else {
            self.state.to_string()
        }
    }

    fn expired(&self, now: OffsetDateTime) -> bool {
        parse_time(&self.expires_at).map_or(true, |t| t <= now)
    }
}

macro_rules! transfer_columns {
    () => {
        "id, user_id, kind, to_device, public_key, state, from_device, wallets, created_at, expires_at"
    };
}

fn row(r: &impl RowLike) -> std::result::Result<Transfer, sqlx::Error> {
    let bad = |e: String| sqlx::Error::Decode(e.into());
    let wallets = match r.opt_text("wallets")? {
        Some(text) => serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?,
        None => Vec::new(),
    };
    Ok(Transfer {
        id: r.text("id")?,
        user_id: Uuid::parse_str(&r.text("user_id")?).map_err(|e| bad(e.to_string()))?,
        kind: decode_name(&r.text("kind")?, TransferKind::from_name)?,
        to_device: r.text("to_device")?,
        public_key: r.text("public_key")?,
        state: decode_name(&r.text("state")?, TransferState::from_name)?,
        from_device: r.opt_text("from_device")?,
        wallets,
        created_at: r.text("created_at")?,
        expires_at: r.text("expires_at")?,
    })
}

fn event(
    action: &str,
    user: Uuid,
    request_id: &str,
    now: OffsetDateTime,
    detail: serde_json::Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Device, now, request_id);
    e.user = Some(user.to_string());
    e.action = Some(action.to_owned());
    e.request = Some(detail);
    e
}

async fn get(store: &Store, id: &str) -> Result<Option<Transfer>> {
    const SQL: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM device_transfers WHERE id = $1"
    );
    with_pool!(store, pool => {
        let r = sqlx::query(SQL).bind(id).fetch_optional(pool).await.map_err(db("reading a device transfer"))?;
        Ok(r.as_ref().map(row).transpose().map_err(db("reading a device transfer"))?)
    })
}

/// `device`'s user's transfer `id`; another user's and none look the same.
pub async fn of_user(store: &Store, user: Uuid, id: &str) -> Result<Transfer> {
    get(store, id)
        .await?
        .filter(|t| t.user_id == user)
        .ok_or(Error::NotFound)
}

/// A new device asks for the user's wallets, with its public key. Earlier open requests of the
/// same device are withdrawn.
pub async fn request(
    store: &Store,
    device: &Device,
    public_key: &str,
    now: OffsetDateTime,
) -> Result<Transfer> {
    let key = parapet_device::transfer::parse_public_key(public_key).map_err(|_| {
        Error::InvalidRequest("public_key must be 32 bytes of X25519, hex".to_owned())
    })?;
    let t = Transfer {
        id: parapet_device::transfer::new_transfer_id(),
        user_id: device.user_id,
        kind: TransferKind::Add,
        to_device: device.device_id.clone(),
        public_key: hex::encode(key),
        state: TransferState::Waiting,
        from_device: None,
        wallets: Vec::new(),
        created_at: format_time(now),
        expires_at: format_time(now + TRANSFER_TTL),
    };
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("requesting a device transfer"))?;
        sqlx::query("UPDATE device_transfers SET state = 'refused' WHERE to_device = $1 AND kind = 'add' AND state IN ('waiting', 'approved')")
            .bind(device.device_id.as_str()).execute(&mut *tx).await.map_err(db("requesting a device transfer"))?;
        sqlx::query("INSERT INTO device_transfers (id, user_id, kind, to_device, public_key, state, created_at, expires_at) VALUES ($1, $2, 'add', $3, $4, 'waiting', $5, $6)")
            .bind(t.id.as_str()).bind(t.user_id.to_string()).bind(t.to_device.as_str()).bind(t.public_key.as_str())
            .bind(t.created_at.as_str()).bind(t.expires_at.as_str())
            .execute(&mut *tx).await.map_err(db("requesting a device transfer"))?;
        tx.commit().await.map_err(db("requesting a device transfer"))?;
    });
    Ok(t)
}

/// The step-up context that binds an approval to this transfer and its recipient key.
pub fn approval_context(t: &Transfer) -> String {
    format!("device-transfer:{}:{}", t.id, t.public_key)
}

/// The user approved transfer `t` (after a passkey step-up bound to [`approval_context`]).
pub async fn approve(
    audit: &AuditLog,
    t: &Transfer,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Transfer> {
    if t.state != TransferState::Waiting || t.kind != TransferKind::Add || t.expired(now) {
        return Err(Error::TransferNotReady(format!(
            "it is {}",
            t.state_at(now)
        )));
    }
    audit
        .append(event(
            "device.add_approve",
            t.user_id,
            request_id,
            now,
            serde_json::json!({
                "transfer": t.id, "to_device": t.to_device, "short_code": t.short_code(),
            }),
        ))
        .await?;
    let moved = with_pool!(audit.store(), pool => {
        sqlx::query("UPDATE device_transfers SET state = 'approved', approved_at = $2 WHERE id = $1 AND state = 'waiting'")
            .bind(t.id.as_str()).bind(format_time(now)).execute(pool).await.map_err(db("approving a device transfer"))?.rows_affected()
    });
    if moved != 1 {
        return Err(Error::TransferNotReady("it changed meanwhile".to_owned()));
    }
    Ok(Transfer {
        state: TransferState::Approved,
        ..t.clone()
    })
}

/// Approved requests of `device`'s user that another device may seal to, newest first.
pub async fn awaiting_sender(
    store: &Store,
    device: &Device,
    now: OffsetDateTime,
) -> Result<Vec<Transfer>> {
    const SQL: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM device_transfers WHERE user_id = $1 AND state = 'approved' AND to_device <> $2 ORDER BY created_at DESC"
    );
    let all: Vec<Transfer> = with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(device.user_id.to_string()).bind(device.device_id.as_str())
            .fetch_all(pool).await.map_err(db("listing device transfers"))?;
        rows.iter().map(row).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing device transfers"))?
    });
    Ok(all.into_iter().filter(|t| !t.expired(now)).collect())
}

/// Requests of `user` waiting for their approval (the page and the app list them with their
/// short codes).
pub async fn waiting_approval(
    store: &Store,
    user: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<Transfer>> {
    const SQL: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM device_transfers WHERE user_id = $1 AND state = 'waiting' AND kind = 'add' ORDER BY created_at DESC"
    );
    let all: Vec<Transfer> = with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(user.to_string())
            .fetch_all(pool).await.map_err(db("listing device transfers"))?;
        rows.iter().map(row).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing device transfers"))?
    });
    Ok(all.into_iter().filter(|t| !t.expired(now)).collect())
}

/// Sealed bundles addressed to `device` that it has not confirmed yet.
pub async fn incoming(store: &Store, device: &Device) -> Result<Vec<Transfer>> {
    const SQL: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM device_transfers WHERE to_device = $1 AND state = 'sealed' ORDER BY created_at"
    );
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(device.device_id.as_str())
            .fetch_all(pool).await.map_err(db("listing device transfers"))?;
        Ok(rows.iter().map(row).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing device transfers"))?)
    })
}

/// Whether `device` may take part in ceremonies for `wallet`: it made or last refreshed it, or
/// it received the current epoch's share from a device that did.
pub async fn holds(store: &Store, device: &str, wallet: &StoredWallet) -> Result<bool> {
    if wallet.device_id == device {
        return Ok(true);
    }
    Ok(held_epoch(store, &wallet.address, device).await? == Some(wallet.epoch))
}

/// The epoch of `address` that `device` received from another device, if it ever did.
async fn held_epoch(store: &Store, address: &str, device: &str) -> Result<Option<i64>> {
    let row: Option<(i64,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT epoch FROM wallet_devices WHERE address = $1 AND device_id = $2")
            .bind(address).bind(device).fetch_optional(pool).await.map_err(db("reading wallet holders"))?
    });
    Ok(row.map(|(e,)| e))
}

/// The wallets `device` holds at their current epoch (it may sign and refresh them).
pub async fn held_by(store: &Store, device: &Device) -> Result<Vec<StoredWallet>> {
    let mut out = Vec::new();
    for w in wallets::of_owner(store, device.user_id).await? {
        if holds(store, &device.device_id, &w).await? {
            out.push(w);
        }
    }
    Ok(out)
}

/// Checks that `from` holds every carried wallet at its current epoch and that none needs a
/// refresh; returns the wallets.
async fn check_carried(
    store: &Store,
    from: &Device,
    carried: &[Carried],
) -> Result<Vec<StoredWallet>> {
    if carried.is_empty() {
        return Err(Error::InvalidRequest(
            "a transfer carries at least one wallet".to_owned(),
        ));
    }
    let mut out = Vec::with_capacity(carried.len());
    for c in carried {
        let w = wallets::owned_by(
            store,
            &wallets::normalize_address(&c.address)?,
            from.user_id,
        )
        .await?;
        if !holds(store, &from.device_id, &w).await? {
            return Err(Error::DeviceNotAllowed);
        }
        if w.refresh_required {
            return Err(Error::RefreshRequired);
        }
        if w.epoch != c.epoch {
            return Err(Error::TransferNotReady(format!(
                "{} is at epoch {}, not {}",
                w.address, w.epoch, c.epoch
            )));
        }
        out.push(w);
    }
    Ok(out)
}

async fn store_sealed(
    store: &Store,
    id: &str,
    from: &Device,
    carried: &[Carried],
    sealed: &[u8],
    now: OffsetDateTime,
    from_state: TransferState,
) -> Result<()> {
    let wallets = serde_json::to_string(carried).map_err(|e| Error::Internal(e.to_string()))?;
    let moved = with_pool!(store, pool => {
        sqlx::query("UPDATE device_transfers SET state = 'sealed', from_device = $2, wallets = $3, sealed = $4, sealed_at = $5 WHERE id = $1 AND state = $6")
            .bind(id).bind(from.device_id.as_str()).bind(wallets).bind(sealed).bind(format_time(now)).bind(from_state.as_str())
            .execute(pool).await.map_err(db("storing a sealed transfer"))?.rows_affected()
    });
    if moved == 1 {
        Ok(())
    } else {
        Err(Error::TransferNotReady("it changed meanwhile".to_owned()))
    }
}

/// Largest sealed bundle accepted (shares and kits of many wallets).
pub const MAX_SEALED: usize = 8 * 1024 * 1024;

/// `from` seals its shares to approved transfer `t` (audited `device.add` first).
pub async fn seal(
    audit: &AuditLog,
    from: &Device,
    t: &Transfer,
    carried: &[Carried],
    sealed: &[u8],
    request_id: &str,
    now: OffsetDateTime,
) -> Result<()> {
    if t.kind != TransferKind::Add || t.state != TransferState::Approved || t.expired(now) {
        return Err(Error::TransferNotReady(
            if t.state == TransferState::Waiting {
                "the user has not approved it yet".to_owned()
            } else {
                format!("it is {}", t.state_at(now))
            },
        ));
    }
    if t.to_device == from.device_id {
        return Err(Error::DeviceNotAllowed);
    }
    if sealed.is_empty() || sealed.len() > MAX_SEALED {
        return Err(Error::InvalidRequest(
            "the sealed bundle is empty or too large".to_owned(),
        ));
    }
    check_carried(audit.store(), from, carried).await?;
    audit
        .append(event("device.add", t.user_id, request_id, now, serde_json::json!({
            "transfer": t.id, "from_device": from.device_id, "to_device": t.to_device, "wallets": carried,
        })))
        .await?;
    store_sealed(
        audit.store(),
        &t.id,
        from,
        carried,
        sealed,
        now,
        TransferState::Approved,
    )
    .await
}

/// `from`, holding the current epoch, sends a refreshed share to `to_device`, a live device of
/// the same user that held an older epoch of every carried wallet (audited `device.resync`).
/// The sender names the transfer `id` (`dtr_` + 32 hex digits, unused): the bundle is sealed
/// bound to it before the gateway sees anything.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; each argument is a distinct input of the step"
)]
pub async fn resync(
    audit: &AuditLog,
    from: &Device,
    id: &str,
    to_device: &str,
    carried: &[Carried],
    sealed: &[u8],
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Transfer> {
    let store = audit.store();
    let well_formed = id.strip_prefix("dtr_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    });
    if !well_formed {
        return Err(Error::InvalidRequest(
            "id must be dtr_ + 32 lower-case hex digits".to_owned(),
        ));
    }
    if get(store, id).await?.is_some() {
        return Err(Error::TransferNotReady("that id is taken".to_owned()));
    }
    if to_device == from.device_id {
        return Err(Error::DeviceNotAllowed);
    }
    if sealed.is_empty() || sealed.len() > MAX_SEALED {
        return Err(Error::InvalidRequest(
            "the sealed bundle is empty or too large".to_owned(),
        ));
    }
    let target = crate::accounts::devices::live_of(store, from.user_id, to_device).await?;
    let wallets = check_carried(store, from, carried).await?;
    for w in &wallets {
        if held_epoch(store, &w.address, to_device).await?.is_none() {
            // Only a device that was given the wallet through an approved transfer is re-synced.
            return Err(Error::DeviceNotAllowed);
        }
    }
    let key: Option<(Option<String>,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT public_key FROM device_transfers WHERE to_device = $1 AND state = 'received' ORDER BY received_at DESC LIMIT 1")
            .bind(to_device).fetch_optional(pool).await.map_err(db("reading a device key"))?
    });
    let t = Transfer {
        id: id.to_owned(),
        user_id: from.user_id,
        kind: TransferKind::Resync,
        to_device: target.device_id.clone(),
        public_key: key.and_then(|(k,)| k).unwrap_or_default(),
        state: TransferState::Sealed,
        from_device: Some(from.device_id.clone()),
        wallets: carried.to_vec(),
        created_at: format_time(now),
        expires_at: format_time(now + TRANSFER_TTL * 96),
    };
    audit
        .append(event("device.resync", t.user_id, request_id, now, serde_json::json!({
            "transfer": t.id, "from_device": from.device_id, "to_device": t.to_device, "wallets": carried,
        })))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO device_transfers (id, user_id, kind, to_device, public_key, state, created_at, expires_at) VALUES ($1, $2, 'resync', $3, $4, 'waiting', $5, $6)")
            .bind(t.id.as_str()).bind(t.user_id.to_string()).bind(t.to_device.as_str()).bind(t.public_key.as_str())
            .bind(t.created_at.as_str()).bind(t.expires_at.as_str())
            .execute(pool).await.map_err(db("storing a re-sync"))?;
    });
    store_sealed(
        store,
        &t.id,
        from,
        carried,
        sealed,
        now,
        TransferState::Waiting,
    )
    .await?;
    Ok(t)
}

/// The sealed bundle of a transfer addressed to `device`.
pub async fn sealed_for(store: &Store, device: &Device, id: &str) -> Result<(Transfer, Vec<u8>)> {
    let t = of_user(store, device.user_id, id).await?;
    if t.to_device != device.device_id {
        return Err(Error::NotFound);
    }
    if t.state != TransferState::Sealed {
        return Err(Error::TransferNotReady(format!("it is {}", t.state)));
    }
    let sealed: Option<(Option<Vec<u8>>,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT sealed FROM device_transfers WHERE id = $1")
            .bind(id).fetch_optional(pool).await.map_err(db("reading a sealed transfer"))?
    });
    let sealed = sealed.and_then(|(s,)| s).ok_or(Error::NotFound)?;
    Ok((t, sealed))
}

/// The recipient opened and stored the bundle: from now on it holds the carried wallets at
/// their epochs (those a refresh has since moved on stay stale). The sealed bytes are dropped.
pub async fn received(
    store: &Store,
    device: &Device,
    id: &str,
    now: OffsetDateTime,
) -> Result<Transfer> {
    let (t, _) = sealed_for(store, device, id).await?;
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("confirming a transfer"))?;
        let moved = sqlx::query("UPDATE device_transfers SET state = 'received', received_at = $2, sealed = NULL WHERE id = $1 AND state = 'sealed'")
            .bind(id).bind(format_time(now)).execute(&mut *tx).await.map_err(db("confirming a transfer"))?.rows_affected();
        if moved != 1 {
            return Err(Error::TransferNotReady("it changed meanwhile".to_owned()));
        }
        for c in &t.wallets {
            sqlx::query("INSERT INTO wallet_devices (address, device_id, epoch, added_at) VALUES ($1, $2, $3, $4) ON CONFLICT (address, device_id) DO UPDATE SET epoch = excluded.epoch")
                .bind(c.address.as_str()).bind(device.device_id.as_str()).bind(c.epoch).bind(format_time(now))
                .execute(&mut *tx).await.map_err(db("recording a wallet holder"))?;
        }
        tx.commit().await.map_err(db("confirming a transfer"))?;
    });
    Ok(Transfer {
        state: TransferState::Received,
        ..t
    })
}

/// Which wallets each of `user`'s devices holds, by device id.
pub async fn holdings(
    store: &Store,
    user: Uuid,
) -> Result<std::collections::BTreeMap<String, Vec<Holding>>> {
    let mut out: std::collections::BTreeMap<String, Vec<Holding>> = Default::default();
    for w in wallets::of_owner(store, user).await? {
        out.entry(w.device_id.clone()).or_default().push(Holding {
            address: w.address.clone(),
            epoch: w.epoch,
            current: true,
        });
        let rows: Vec<(String, i64)> = with_pool!(store, pool => {
            sqlx::query_as("SELECT device_id, epoch FROM wallet_devices WHERE address = $1 ORDER BY device_id")
                .bind(w.address.as_str()).fetch_all(pool).await.map_err(db("reading wallet holders"))?
        });
        for (device, epoch) in rows {
            out.entry(device).or_default().push(Holding {
                address: w.address.clone(),
                epoch,
                current: epoch == w.epoch,
            });
        }
    }
    Ok(out)
}
