//! Key refresh (docs/architecture.md §6): both shares re-randomised, the address unchanged, in two
//! phases so that an interruption anywhere leaves a wallet that still signs.
//!
//! The owner approves a refresh with a passkey (an `operations` row, bound to the wallet and its
//! epoch); their device then runs the ceremony. Phase 1: the gateway seals its new share for
//! epoch + 1 and stores it *pending*, with the device's backup of its new share (the backup
//! exchange, [`super::backup`]); the device stores its new share next to the current one and
//! says `stored`. Phase 2: the gateway audits `wallet.refresh` and, in one transaction, advances
//! the wallet's epoch, makes the new share current and deletes the old one, then says `done`.
//! Until phase 2 commits, the old epoch is the valid one on both sides; once it has, only the new
//! shares sign together (the old device share no longer matches the gateway's).

use parapet_custody::share_aad;
use parapet_mpc::wire::Control;
use parapet_mpc::{Dkls23, KeyShare, Role, SessionId, ThresholdEcdsa, drive};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::ceremonies::{self, Begin};
use super::{Channel, Cosigner, from_signer, stamp};
use crate::accounts::devices::Device;
use crate::accounts::wallets::{self, StoredWallet};
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind};
use crate::error::{Error, Result};
use crate::store::db::{BeginWrite, db, stored_enum, with_pool};

/// How long an approved refresh waits for the device.
pub const APPROVAL_TTL: Duration = Duration::minutes(10);

stored_enum! {
    /// Where a refresh is: waiting for the owner's passkey, approved, its ceremony running,
    /// then done or failed.
    pub enum OperationState {
        PendingStepUp => "pending_step_up",
        Approved => "approved",
        Running => "running",
        Done => "done",
        Failed => "failed",
    }
}

/// An operation record, as far as refresh needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub id: String,
    pub wallet: String,
    pub owner: Uuid,
    pub epoch: i64,
    pub state: OperationState,
    pub expires_at: String,
}

/// The passkey ceremony context of an operation: kind, id, wallet and epoch.
pub fn step_up_context(op: &Operation) -> String {
    format!("refresh:{}:{}:{}", op.id, op.wallet, op.epoch)
}

/// Records a refresh the owner must approve.
pub async fn create(
    store: &Store,
    wallet: &StoredWallet,
    ttl: Duration,
    now: OffsetDateTime,
) -> Result<Operation> {
    let op = Operation {
        id: Uuid::now_v7().to_string(),
        wallet: wallet.address.clone(),
        owner: wallet.owner,
        epoch: wallet.epoch,
        state: OperationState::PendingStepUp,
        expires_at: stamp(now + ttl),
    };
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO operations (id, kind, wallet, owner, epoch, state, created_at, expires_at, updated_at) VALUES ($1, 'refresh', $2, $3, $4, $5, $6, $7, $6)")
            .bind(op.id.as_str()).bind(op.wallet.as_str()).bind(op.owner.to_string()).bind(op.epoch)
            .bind(op.state.as_str()).bind(stamp(now)).bind(op.expires_at.as_str())
            .execute(pool).await.map_err(db("recording a refresh"))?;
    });
    Ok(op)
}

/// The operation with this id.
pub async fn get(store: &Store, id: &str) -> Result<Option<Operation>> {
    let row: Option<(String, String, String, i64, String, String)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT id, wallet, owner, epoch, state, expires_at FROM operations WHERE id = $1 AND kind = 'refresh'")
            .bind(id).fetch_optional(pool).await.map_err(db("reading an operation"))?
    });
    row.map(|(id, wallet, owner, epoch, state, expires_at)| {
        Ok(Operation {
            id,
            wallet,
            owner: Uuid::parse_str(&owner).map_err(|e| Error::Database(e.to_string()))?,
            epoch,
            state: OperationState::decode(&state).map_err(|e| Error::Database(e.to_string()))?,
            expires_at,
        })
    })
    .transpose()
}

/// Moves an operation from `from` to `to` (and a new expiry) if it is still in `from` and
/// unexpired; false otherwise.
pub async fn transition(
    store: &Store,
    id: &str,
    from: OperationState,
    to: OperationState,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool> {
    let n = with_pool!(store, pool => {
        sqlx::query("UPDATE operations SET state = $3, expires_at = $4, updated_at = $5 WHERE id = $1 AND state = $2 AND expires_at > $5")
            .bind(id).bind(from.as_str()).bind(to.as_str()).bind(stamp(expires_at)).bind(stamp(now))
            .execute(pool).await.map_err(db("updating an operation"))?.rows_affected()
    });
    Ok(n == 1)
}

async fn set_state(store: &Store, id: &str, state: OperationState, now: OffsetDateTime) {
    let r = with_pool!(store, pool => {
        sqlx::query("UPDATE operations SET state = $2, updated_at = $3 WHERE id = $1")
            .bind(id).bind(state.as_str()).bind(stamp(now)).execute(pool).await.map(|_| ())
    });
    if let Err(error) = r {
        tracing::warn!(%error, "recording an operation's end");
    }
}

/// Takes the newest approved, unexpired refresh of `wallet` at `epoch` for a ceremony.
async fn take_approved(
    store: &Store,
    wallet: &str,
    epoch: i64,
    now: OffsetDateTime,
) -> Result<String> {
    let id: Option<(String,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT id FROM operations WHERE wallet = $1 AND kind = 'refresh' AND state = 'approved' AND epoch = $2 AND expires_at > $3 ORDER BY created_at DESC LIMIT 1")
            .bind(wallet).bind(epoch).bind(stamp(now))
            .fetch_optional(pool).await.map_err(db("finding an approved refresh"))?
    });
    let Some((id,)) = id else {
        return Err(Error::NotSignable(
            "not approved: the owner approves a refresh with a passkey first".to_owned(),
        ));
    };
    if !transition(
        store,
        &id,
        OperationState::Approved,
        OperationState::Running,
        now + super::sign::CEREMONY_LIMIT,
        now,
    )
    .await?
    {
        return Err(Error::NotSignable("taken by another ceremony".to_owned()));
    }
    Ok(id)
}

/// Runs an approved refresh of `address` with `device` over `channel`.
pub async fn run(
    cosigner: &Cosigner,
    device: &Device,
    address: &str,
    channel: &mut impl Channel,
    request_id: &str,
    now: impl Fn() -> OffsetDateTime,
) -> Result<StoredWallet> {
    let store = cosigner.audit.store();
    let wallet = wallets::owned_by(store, address, device.user_id).await?;
    if !crate::accounts::backup_devices::holds(store, &device.device_id, &wallet).await? {
        return Err(Error::DeviceNotAllowed);
    }
    let users_key = crate::accounts::recovery::public_key_of(store, device.user_id).await?;
    let op = take_approved(store, &wallet.address, wallet.epoch, now()).await?;
    let session = SessionId::random();
    ceremonies::begin(
        store,
        &session,
        Begin {
            kind: "refresh",
            device_id: &device.device_id,
            wallet: Some(&wallet.address),
            signing_request: Some(&op),
        },
        now(),
    )
    .await?;
    let job = Job {
        wallet: &wallet,
        users_key: &users_key,
        session,
        op: &op,
        device_id: &device.device_id,
    };
    let result = refresh(cosigner, job, channel, request_id, &now).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    ceremonies::end(store, &session, outcome, now()).await;
    set_state(
        store,
        &op,
        if result.is_ok() {
            OperationState::Done
        } else {
            OperationState::Failed
        },
        now(),
    )
    .await;
    result
}

/// What one refresh ceremony is about.
struct Job<'a> {
    wallet: &'a StoredWallet,
    /// The user's recovery public key, which the device's backup must be sealed to.
    users_key: &'a parapet_mpc::recovery::RecoveryPublicKey,
    session: SessionId,
    /// The approved operation this ceremony carries out.
    op: &'a str,
    /// The device running it: it holds the wallet once the refresh commits.
    device_id: &'a str,
}

async fn refresh(
    cosigner: &Cosigner,
    job: Job<'_>,
    channel: &mut impl Channel,
    request_id: &str,
    now: &impl Fn() -> OffsetDateTime,
) -> Result<StoredWallet> {
    let Job {
        wallet,
        users_key,
        session,
        op,
        device_id: job_device,
    } = job;
    let store = cosigner.audit.store();
    let address = crate::service::pipeline::parse_address(&wallet.address)?.into_array();
    let old = wallet.epoch;
    let new = old + 1;
    let to_u64 =
        |e: i64| u64::try_from(e).map_err(|_| Error::Internal("negative epoch".to_owned()));
    let sealed = wallets::sealed_share(store, &wallet.address, old).await?;
    let plaintext =
        super::open(&cosigner.custody, sealed, share_aad(&address, to_u64(old)?)).await?;
    let share =
        KeyShare::from_bytes(&plaintext).map_err(|e| Error::HsmUnavailable(e.to_string()))?;
    drop(plaintext);
    let ceremony = Dkls23
        .refresh(Role::Gateway, session, &share)
        .map_err(from_signer)?;
    drop(share);
    channel
        .control(&Control::Start {
            ceremony: "refresh".to_owned(),
            session: hex::encode(session.as_bytes()),
            wallet: Some(wallet.address.clone()),
            digest: None,
            epoch: Some(old),
        })
        .await
        .map_err(from_signer)?;
    let (last, fresh) = drive::run(super::RUNTIME, ceremony, channel)
        .await
        .map_err(from_signer)?;
    drive::send_all(channel, last).await.map_err(from_signer)?;
    if *fresh.address() != address {
        return Err(Error::CeremonyFailed(
            "refresh changed the address".to_owned(),
        ));
    }
    let backup = super::backup::exchange(channel, users_key, &fresh, new).await?;
    // Phase 1: the new share and the device's backup of its new share, pending; a leftover from
    // an interrupted refresh is replaced.
    let sealed = super::seal(
        &cosigner.custody,
        fresh.to_bytes(),
        share_aad(&address, to_u64(new)?),
    )
    .await?;
    drop(fresh);
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("storing a pending share"))?;
        sqlx::query("DELETE FROM gateway_shares WHERE address = $1 AND pending = $2")
            .bind(wallet.address.as_str()).bind(true)
            .execute(&mut *tx).await.map_err(db("storing a pending share"))?;
        sqlx::query("INSERT INTO gateway_shares (address, epoch, sealed, pending, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(wallet.address.as_str()).bind(new).bind(sealed.as_slice()).bind(true).bind(stamp(now()))
            .execute(&mut *tx).await.map_err(db("storing a pending share"))?;
        sqlx::query("DELETE FROM share_backups WHERE wallet = $1 AND epoch = $2")
            .bind(wallet.address.as_str()).bind(new)
            .execute(&mut *tx).await.map_err(db("storing a pending backup"))?;
        sqlx::query("INSERT INTO share_backups (wallet, epoch, sealed, created_at) VALUES ($1, $2, $3, $4)")
            .bind(wallet.address.as_str()).bind(new).bind(backup.as_slice()).bind(stamp(now()))
            .execute(&mut *tx).await.map_err(db("storing a pending backup"))?;
        tx.commit().await.map_err(db("storing a pending share"))?;
    });
    match channel.expect_control().await.map_err(from_signer)? {
        Control::Stored { address: a } if a == wallet.address => {}
        other => {
            return Err(Error::CeremonyFailed(format!(
                "expected the device to confirm it stored its new share, got {}",
                other.kind()
            )));
        }
    }
    // Phase 2: audited first, then one transaction.
    let mut e = AuditEvent::new(EventKind::Wallet, now(), request_id);
    e.user = Some(wallet.owner.to_string());
    e.wallet = Some(wallet.address.clone());
    e.action = Some("wallet.refresh".to_owned());
    e.request = Some(serde_json::json!({
        "address": wallet.address, "device_id": job_device, "operation": op,
        "execution_id": hex::encode(session.as_bytes()), "from_epoch": old, "to_epoch": new,
    }));
    cosigner.audit.append(e).await?;
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("committing a refresh"))?;
        let moved = sqlx::query("UPDATE wallets SET epoch = $2, refresh_required = $4, device_id = $5 WHERE address = $1 AND epoch = $3")
            .bind(wallet.address.as_str()).bind(new).bind(old).bind(false).bind(job_device)
            .execute(&mut *tx).await.map_err(db("committing a refresh"))?.rows_affected();
        if moved != 1 {
            return Err(Error::CeremonyFailed("the wallet changed during the refresh".to_owned()));
        }
        // The refreshing device now holds the wallet; the one that held it before (if another,
        // and not removed) keeps the old epoch: stale until it is re-synced.
        sqlx::query("DELETE FROM wallet_devices WHERE address = $1 AND device_id = $2")
            .bind(wallet.address.as_str()).bind(job_device)
            .execute(&mut *tx).await.map_err(db("committing a refresh"))?;
        if wallet.device_id != job_device {
            sqlx::query("INSERT INTO wallet_devices (address, device_id, epoch, added_at) SELECT $1, d.id, $3, $4 FROM devices d WHERE d.id = $2 AND d.revoked_at IS NULL ON CONFLICT (address, device_id) DO UPDATE SET epoch = excluded.epoch")
                .bind(wallet.address.as_str()).bind(wallet.device_id.as_str()).bind(old).bind(crate::audit::event::format_time(now()))
                .execute(&mut *tx).await.map_err(db("committing a refresh"))?;
        }
        sqlx::query("UPDATE gateway_shares SET pending = $3 WHERE address = $1 AND epoch = $2")
            .bind(wallet.address.as_str()).bind(new).bind(false)
            .execute(&mut *tx).await.map_err(db("committing a refresh"))?;
        sqlx::query("DELETE FROM gateway_shares WHERE address = $1 AND epoch = $2")
            .bind(wallet.address.as_str()).bind(old)
            .execute(&mut *tx).await.map_err(db("committing a refresh"))?;
        sqlx::query("DELETE FROM share_backups WHERE wallet = $1 AND epoch = $2")
            .bind(wallet.address.as_str()).bind(old)
            .execute(&mut *tx).await.map_err(db("committing a refresh"))?;
        tx.commit().await.map_err(db("committing a refresh"))?;
    });
    channel
        .control(&Control::Done {
            address: Some(wallet.address.clone()),
            signature: None,
        })
        .await
        .map_err(from_signer)?;
    let mut after = wallet.clone();
    after.epoch = new;
    after.device_id = job_device.to_owned();
    after.refresh_required = false;
    Ok(after)
}
