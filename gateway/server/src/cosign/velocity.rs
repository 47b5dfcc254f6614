//! The per-wallet lock under which velocity is read, Cedar decides and the reservation is
//! committed (docs/architecture.md §6), and the ledger that reads reservations from the database.
//!
//! Within one process a striped async mutex serialises requests for the same wallet. On
//! PostgreSQL, where several gateway processes share the database, the holder also takes a
//! transaction-level advisory lock keyed by the wallet, held until the decision's audit event
//! (and with it the reservation) has committed. Lock holders are limited to half the pool, so
//! that the audit writer always finds a connection to commit with.

use std::sync::Arc;

use alloy::primitives::Address;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::audit::Store;
use crate::error::Result;
use crate::ledger::{Ledger, LedgerEntry, VelocityTotals};
use crate::store::db::db;

const STRIPES: usize = 256;

/// The locks of every wallet, striped.
#[derive(Debug)]
pub struct WalletLocks {
    stripes: Vec<Mutex<()>>,
    pg_holders: Arc<Semaphore>,
}

/// Held while a wallet's velocity is read, decided on and reserved; release it after the
/// decision's event committed.
pub struct WalletGuard<'a> {
    _local: MutexGuard<'a, ()>,
    pg: Option<(
        sqlx::Transaction<'static, sqlx::Postgres>,
        OwnedSemaphorePermit,
    )>,
}

impl std::fmt::Debug for WalletGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletGuard").finish_non_exhaustive()
    }
}

fn hash(wallet: &str) -> [u8; 32] {
    Sha256::digest(format!("parapet/velocity/{wallet}").as_bytes()).into()
}

impl WalletLocks {
    pub fn new(store: &Store) -> WalletLocks {
        let holders = match store {
            Store::Postgres(pool) => (pool.options().get_max_connections() / 2).max(1),
            Store::Sqlite(_) => 1,
        };
        WalletLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            pg_holders: Arc::new(Semaphore::new(holders as usize)),
        }
    }

    /// Locks `wallet` (lower-case 0x address).
    pub async fn lock(&self, store: &Store, wallet: &str) -> Result<WalletGuard<'_>> {
        let h = hash(wallet);
        let stripe = usize::from(h[0]) % self.stripes.len();
        let local = match self.stripes.get(stripe) {
            Some(m) => m.lock().await,
            None => return Err(crate::error::Error::Internal("lock stripe".to_owned())),
        };
        let pg = match store {
            Store::Sqlite(_) => None,
            Store::Postgres(pool) => {
                let permit = self
                    .pg_holders
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| crate::error::Error::StoreUnavailable)?;
                let key = i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
                let mut tx = pool.begin().await.map_err(db("taking a wallet lock"))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("taking a wallet lock"))?;
                Some((tx, permit))
            }
        };
        Ok(WalletGuard { _local: local, pg })
    }
}

impl WalletGuard<'_> {
    /// Releases the lock now (dropping it also releases, a moment later).
    pub async fn release(self) {
        if let Some((tx, _permit)) = self.pg
            && let Err(error) = tx.rollback().await
        {
            tracing::warn!(%error, "releasing a wallet lock");
        }
    }
}

/// The velocity a decision sees: the database's reservations and signatures plus whatever the
/// process-local ledger holds (entries seeded by tests and tools).
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub entries: Vec<LedgerEntry>,
    pub local: &'a dyn Ledger,
}

impl Ledger for Snapshot<'_> {
    fn totals(
        &self,
        wallet: Address,
        chain_id: i64,
        token: Option<Address>,
        now: OffsetDateTime,
    ) -> VelocityTotals {
        let mut t = self.local.totals(wallet, chain_id, token, now);
        crate::ledger::add_entries(&mut t, &self.entries, wallet, chain_id, token, now);
        t
    }
}
