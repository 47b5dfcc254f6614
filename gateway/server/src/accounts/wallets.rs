//! Wallet records (docs/architecture.md §2): address, owner, the device that holds the other share,
//! the current epoch, admin labels and groups, frozen, and `refresh_required`. The gateway's share
//! of each epoch is stored sealed by custody (AAD = address and epoch) next to the record. Creating
//! a wallet and every admin change are audited before they are made.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::apps::{Actor, Auditor};
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::error::{Error, Result};
use crate::records::{LabelsSource, WalletRecord};
use crate::store::db::{BeginWrite, RowLike, db, with_pool};

/// A wallet as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWallet {
    /// Lower-case 0x address.
    pub address: String,
    pub owner: Uuid,
    pub device_id: String,
    /// The joint public key, SEC1 compressed, hex.
    pub public_key: String,
    pub epoch: i64,
    pub labels: Vec<String>,
    pub groups: Vec<String>,
    pub frozen: bool,
    pub refresh_required: bool,
    pub created_at: String,
}

impl StoredWallet {
    /// `GET /v1/wallets/{address}`'s shape.
    pub fn view(&self) -> parapet_api::wallets::Wallet {
        parapet_api::wallets::Wallet {
            address: self.address.clone(),
            owner: self.owner.to_string(),
            created_at: self.created_at.clone(),
            epoch: self.epoch,
            labels: self.labels.clone(),
            groups: self.groups.clone(),
            frozen: self.frozen,
            refresh_required: self.refresh_required,
        }
    }

    /// [`StoredWallet::view`] as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }

    /// The Cedar wallet entity, from the record (labels from the request are ignored).
    pub fn record(&self) -> Result<WalletRecord> {
        Ok(WalletRecord {
            address: crate::service::pipeline::parse_address(&self.address)?,
            owner: Some(self.owner),
            labels: self.labels.clone(),
            frozen: self.frozen,
            groups: self.groups.clone(),
            labels_source: LabelsSource::Record,
        })
    }
}

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn row(r: &impl RowLike) -> std::result::Result<StoredWallet, sqlx::Error> {
    Ok(StoredWallet {
        address: r.text("address")?,
        owner: Uuid::parse_str(&r.text("owner")?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        device_id: r.text("device_id")?,
        public_key: r.text("public_key")?,
        epoch: r.int("epoch")?,
        labels: split(&r.text("labels")?),
        groups: split(&r.text("wallet_groups")?),
        frozen: r.flag("frozen")?,
        refresh_required: r.flag("refresh_required")?,
        created_at: r.text("created_at")?,
    })
}

macro_rules! wallet_columns {
    () => {
        "address, owner, device_id, public_key, epoch, labels, wallet_groups, frozen, refresh_required, created_at"
    };
}

/// The lower-case form of an address, or `InvalidAddress`.
pub fn normalize_address(address: &str) -> Result<String> {
    let parsed = crate::service::pipeline::parse_address(address)?;
    Ok(format!("{parsed:#x}"))
}

fn event(
    kind: EventKind,
    action: &str,
    wallet: &StoredWallet,
    request: serde_json::Value,
    request_id: &str,
    now: OffsetDateTime,
) -> AuditEvent {
    let mut e = AuditEvent::new(kind, now, request_id);
    e.user = Some(wallet.owner.to_string());
    e.action = Some(action.to_owned());
    e.request = Some(request);
    e
}

/// Stores a new wallet (epoch 0) with its sealed gateway share, after auditing `wallet.create`.
/// `Conflict` when the address exists already.
pub async fn create(
    store: &Store,
    auditor: Auditor<'_>,
    wallet: &StoredWallet,
    sealed_share: &[u8],
    device_backup: &[u8],
    request_id: &str,
    now: OffsetDateTime,
) -> Result<()> {
    if get(store, &wallet.address).await?.is_some() {
        return Err(Error::InvalidRequest(format!(
            "wallet {} exists already",
            wallet.address
        )));
    }
    auditor
        .record(event(
            EventKind::Wallet,
            "wallet.create",
            wallet,
            serde_json::json!({"address": wallet.address, "device_id": wallet.device_id, "epoch": wallet.epoch}),
            request_id,
            now,
        ))
        .await?;
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("creating a wallet"))?;
        sqlx::query(concat!("INSERT INTO wallets (", wallet_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
            .bind(wallet.address.as_str())
            .bind(wallet.owner.to_string())
            .bind(wallet.device_id.as_str())
            .bind(wallet.public_key.as_str())
            .bind(wallet.epoch)
            .bind(wallet.labels.join(","))
            .bind(wallet.groups.join(","))
            .bind(wallet.frozen)
            .bind(wallet.refresh_required)
            .bind(wallet.created_at.as_str())
            .execute(&mut *tx).await.map_err(db("creating a wallet"))?;
        sqlx::query("INSERT INTO gateway_shares (address, epoch, sealed, pending, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(wallet.address.as_str())
            .bind(wallet.epoch)
            .bind(sealed_share)
            .bind(false)
            .bind(format_time(now))
            .execute(&mut *tx).await.map_err(db("storing a gateway share"))?;
        sqlx::query("INSERT INTO share_backups (wallet, epoch, sealed, created_at) VALUES ($1, $2, $3, $4)")
            .bind(wallet.address.as_str())
            .bind(wallet.epoch)
            .bind(device_backup)
            .bind(format_time(now))
            .execute(&mut *tx).await.map_err(db("storing a backup"))?;
        tx.commit().await.map_err(db("creating a wallet"))?;
    });
    Ok(())
}

/// The wallet at `address` (any case), if there is one.
pub async fn get(store: &Store, address: &str) -> Result<Option<StoredWallet>> {
    let address = normalize_address(address)?;
    const SQL: &str = concat!(
        "SELECT ",
        wallet_columns!(),
        " FROM wallets WHERE address = $1"
    );
    with_pool!(store, pool => {
        let r = sqlx::query(SQL).bind(address.as_str()).fetch_optional(pool).await.map_err(db("reading a wallet"))?;
        Ok(r.as_ref().map(row).transpose().map_err(db("reading a wallet"))?)
    })
}

/// Every wallet, for [`crate::accounts::wallet_directory`] to load at start.
pub async fn all(store: &Store) -> Result<Vec<StoredWallet>> {
    const SQL: &str = concat!("SELECT ", wallet_columns!(), " FROM wallets");
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).fetch_all(pool).await.map_err(db("listing wallets"))?;
        Ok(rows.iter().map(row).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing wallets"))?)
    })
}

/// The wallet at `address` if `user` owns it. Someone else's wallet and no wallet are the same
/// `NotFound`, so that an address tells nobody whether it is ours.
pub async fn owned_by(store: &Store, address: &str, user: Uuid) -> Result<StoredWallet> {
    get(store, address)
        .await?
        .filter(|w| w.owner == user)
        .ok_or(Error::NotFound)
}

/// `user`'s wallets, oldest first.
pub async fn of_owner(store: &Store, user: Uuid) -> Result<Vec<StoredWallet>> {
    const SQL: &str = concat!(
        "SELECT ",
        wallet_columns!(),
        " FROM wallets WHERE owner = $1 ORDER BY created_at, address"
    );
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(user.to_string()).fetch_all(pool).await.map_err(db("listing wallets"))?;
        Ok(rows.iter().map(row).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing wallets"))?)
    })
}

/// The gateway's sealed share of `address` at `epoch` (committed, not pending).
pub async fn sealed_share(store: &Store, address: &str, epoch: i64) -> Result<Vec<u8>> {
    let address = normalize_address(address)?;
    with_pool!(store, pool => {
        let r: Option<(Vec<u8>,)> = sqlx::query_as("SELECT sealed FROM gateway_shares WHERE address = $1 AND epoch = $2 AND pending = $3")
            .bind(address.as_str()).bind(epoch).bind(false)
            .fetch_optional(pool).await.map_err(db("reading a gateway share"))?;
        r.map(|(s,)| s).ok_or(Error::NotFound)
    })
}

/// What an admin may change on a wallet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalletUpdate {
    pub labels: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub frozen: Option<bool>,
    /// Admins can only set it (the owner's refresh clears it).
    pub refresh_required: bool,
}

fn check_names(what: &str, names: &[String]) -> Result<()> {
    let ok = |n: &String| {
        !n.is_empty()
            && n.len() <= 100
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    };
    match names.iter().find(|n| !ok(n)) {
        Some(bad) => Err(Error::InvalidRequest(format!(
            "invalid {what} {bad:?}: use letters, digits, '_', '-', '.', ':'"
        ))),
        None => Ok(()),
    }
}

/// Applies an admin change (audited first as `wallet.update` with the before and after);
/// `NotFound` when there is no such wallet.
pub async fn update(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    address: &str,
    change: &WalletUpdate,
    now: OffsetDateTime,
) -> Result<StoredWallet> {
    let before = get(store, address).await?.ok_or(Error::NotFound)?;
    let mut after = before.clone();
    if let Some(l) = &change.labels {
        check_names("label", l)?;
        after.labels.clone_from(l);
    }
    if let Some(g) = &change.groups {
        check_names("group", g)?;
        after.groups.clone_from(g);
    }
    if let Some(f) = change.frozen {
        after.frozen = f;
    }
    after.refresh_required |= change.refresh_required;
    auditor
        .record(event(
            EventKind::Admin,
            "wallet.update",
            &after,
            serde_json::json!({
                "actor": actor.who,
                "before": before.to_json(),
                "wallet": after.to_json(),
            }),
            &actor.request_id,
            now,
        ))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("UPDATE wallets SET labels = $2, wallet_groups = $3, frozen = $4, refresh_required = $5 WHERE address = $1")
            .bind(after.address.as_str())
            .bind(after.labels.join(","))
            .bind(after.groups.join(","))
            .bind(after.frozen)
            .bind(after.refresh_required)
            .execute(pool).await.map_err(db("updating a wallet"))?;
    });
    Ok(after)
}
