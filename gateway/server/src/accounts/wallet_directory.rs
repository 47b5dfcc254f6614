//! Every wallet's decision facts (owner, labels, groups, frozen) in memory, so that a decision
//! reads no database.
//!
//! The directory is loaded at start and then follows `wallet_changes`, a feed the database's
//! own triggers write inside the transaction of every change to those facts (so no write path,
//! present or future, can forget it), every [`FOLLOW_EVERY`]. The feed's sequence commits in
//! order (SQLite has one writer; on PostgreSQL the trigger takes an advisory lock first), so
//! "everything after the last sequence number seen" misses nothing. A route of this process that
//! changes a wallet catches up at once ([`WalletDirectory::catch_up`]); another process sees the
//! change within [`FOLLOW_EVERY`] and one read, inside the one second docs/architecture.md §11
//! allows for a revocation to reach every replica. When the feed cannot be read for longer than
//! [`STALE_AFTER`], lookups fail (`503 store_unavailable`) rather than decide on facts that may
//! be out of date.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use parking_lot::RwLock;

use crate::accounts::wallets;
use crate::audit::Store;
use crate::error::{Error, Result};
use crate::records::WalletRecord;
use crate::store::db::{db, with_pool};

/// How often the feed is read.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// How long the directory answers without having read the feed before lookups fail.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

/// Most changes read at once; a longer backlog is read in several rounds.
const CHANGES_PER_READ: i64 = 1_000;

/// The wallets this gateway has records of, as decisions see them.
#[derive(Debug)]
pub struct WalletDirectory {
    records: RwLock<HashMap<Address, Arc<WalletRecord>>>,
    /// The newest change applied; one catch-up at a time holds it.
    cursor: tokio::sync::Mutex<i64>,
    /// When the feed was last read in full, as milliseconds after `epoch`.
    synced_ms: AtomicU64,
    epoch: Instant,
}

impl WalletDirectory {
    /// Reads the feed's position, then every wallet: a change committed in between is read again
    /// by the first catch-up, which is harmless (it reads the wallet's current row).
    pub async fn load(store: &Store) -> Result<Arc<WalletDirectory>> {
        let cursor = newest_change(store).await?;
        let mut records = HashMap::new();
        for stored in wallets::all(store).await? {
            let record = stored.record()?;
            records.insert(record.address, Arc::new(record));
        }
        let directory = WalletDirectory {
            records: RwLock::new(records),
            cursor: tokio::sync::Mutex::new(cursor),
            synced_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        Ok(Arc::new(directory))
    }

    /// The record of `address`, `None` when the gateway has none; `StoreUnavailable` when the
    /// feed has not been read for [`STALE_AFTER`].
    pub fn get(&self, address: &Address) -> Result<Option<Arc<WalletRecord>>> {
        let since = self.epoch.elapsed().saturating_sub(Duration::from_millis(
            self.synced_ms.load(Ordering::Relaxed),
        ));
        if since > STALE_AFTER {
            return Err(Error::StoreUnavailable);
        }
        Ok(self.records.read().get(address).cloned())
    }

    /// Applies every change committed since the last one seen; returns how many were read.
    pub async fn catch_up(&self, store: &Store) -> Result<usize> {
        let mut cursor = self.cursor.lock().await;
        let mut read = 0;
        loop {
            let changes = changes_after(store, *cursor).await?;
            let Some(&(last, _)) = changes.last() else {
                break;
            };
            let mut addresses: Vec<&str> = changes.iter().map(|(_, a)| a.as_str()).collect();
            addresses.sort_unstable();
            addresses.dedup();
            for address in addresses {
                let current = wallets::get(store, address).await?;
                let parsed = crate::service::pipeline::parse_address(address)?;
                let mut records = self.records.write();
                match current {
                    Some(stored) => {
                        records.insert(parsed, Arc::new(stored.record()?));
                    }
                    None => {
                        records.remove(&parsed);
                    }
                }
            }
            read += changes.len();
            *cursor = last;
            if changes.len() < CHANGES_PER_READ as usize {
                break;
            }
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.synced_ms.store(now, Ordering::Relaxed);
        Ok(read)
    }

    /// Follows the feed every [`FOLLOW_EVERY`] until the directory is dropped.
    pub fn follow(self: &Arc<Self>, store: Store) {
        let weak: Weak<WalletDirectory> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FOLLOW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(directory) = weak.upgrade() else {
                    break;
                };
                if let Err(error) = directory.catch_up(&store).await {
                    tracing::warn!(%error, "reading the wallet change feed failed");
                }
            }
        });
    }
}

/// The newest sequence number in the feed (0 when empty).
async fn newest_change(store: &Store) -> Result<i64> {
    with_pool!(store, pool => {
        let (seq,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM wallet_changes")
            .fetch_one(pool)
            .await
            .map_err(db("reading the wallet change feed"))?;
        Ok(seq)
    })
}

/// Up to [`CHANGES_PER_READ`] changes after `cursor`, oldest first.
async fn changes_after(store: &Store, cursor: i64) -> Result<Vec<(i64, String)>> {
    with_pool!(store, pool => {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT seq, address FROM wallet_changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(cursor)
            .bind(CHANGES_PER_READ)
            .fetch_all(pool)
            .await
            .map_err(db("reading the wallet change feed"))?;
        Ok(rows)
    })
}
