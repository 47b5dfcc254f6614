//! The person's passkey approval of a first recovery secret (docs/architecture.md §6, §9). Whoever
//! knows the recovery secret can take the wallets over after the recovery delay, so setting it
//! changes who can act for the person: once they have a passkey, a device sets it only with an
//! approval bound to that device and that secret's public key.
//!
//! An approval is an `operations` row of kind `recovery_setup` whose target is the device and
//! the public key: `pending_step_up` → `approved` (the owner's step-up, on the page or through an
//! app) → `used` (the device's set-up, once). Joining an existing secret needs no approval: the
//! device proves it knows the secret.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::error::{Error, Result};
use crate::store::db::{db, with_pool};

/// How long an approval waits for the owner, and then for the device.
pub const APPROVAL_TTL: Duration = Duration::minutes(10);

/// The operation kind.
const KIND: &str = "recovery_setup";

/// A device's request to set the first recovery secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    pub owner: Uuid,
    pub device_id: String,
    /// The X25519 public key (hex) of the secret being set.
    pub public_key: String,
    pub state: String,
    pub created_at: String,
    pub expires_at: String,
}

impl Approval {
    /// What an approval binds: the device and the key.
    fn target(device_id: &str, public_key: &str) -> String {
        format!("device:{device_id};key:{public_key}")
    }

    /// The passkey ceremony context: kind, id, owner, device and key.
    pub fn step_up_context(&self) -> String {
        format!(
            "{KIND}:{}:{}:{}",
            self.id,
            self.owner,
            Approval::target(&self.device_id, &self.public_key)
        )
    }

    pub fn to_json(&self, device_name: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "kind": KIND,
            "device_id": self.device_id,
            "device_name": device_name,
            "public_key": self.public_key,
            "state": self.state,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        })
    }
}

type Row = (String, String, String, String, String, String);

fn from_row((id, owner, target, state, created_at, expires_at): Row) -> Result<Approval> {
    let bad = || Error::Database(format!("operation {id}: not a recovery set-up"));
    let (device, key) = target.split_once(";key:").ok_or_else(bad)?;
    let device_id = device.strip_prefix("device:").ok_or_else(bad)?.to_owned();
    Ok(Approval {
        owner: Uuid::parse_str(&owner).map_err(|_| bad())?,
        device_id,
        public_key: key.to_owned(),
        id,
        state,
        created_at,
        expires_at,
    })
}

/// Records that `device_id` asks to set the secret of `public_key` for `owner`. A device has one
/// request waiting at a time: asking again supersedes its earlier ones, so a device cannot fill
/// the person's list.
pub async fn ask(
    store: &Store,
    owner: Uuid,
    device_id: &str,
    public_key: &str,
    now: OffsetDateTime,
) -> Result<Approval> {
    for earlier in waiting_for(store, owner, now).await? {
        if earlier.device_id == device_id {
            transition(store, &earlier, "pending_step_up", "superseded", now).await?;
        }
    }
    let a = Approval {
        id: Uuid::now_v7().to_string(),
        owner,
        device_id: device_id.to_owned(),
        public_key: public_key.to_owned(),
        state: "pending_step_up".to_owned(),
        created_at: format_time(now),
        expires_at: format_time(now + APPROVAL_TTL),
    };
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO operations (id, kind, wallet, owner, epoch, state, created_at, expires_at, updated_at, target) VALUES ($1, $2, '', $3, 0, $4, $5, $6, $5, $7)")
            .bind(a.id.as_str()).bind(KIND).bind(owner.to_string()).bind(a.state.as_str())
            .bind(a.created_at.as_str()).bind(a.expires_at.as_str())
            .bind(Approval::target(device_id, public_key))
            .execute(pool).await.map_err(db("recording a recovery set-up"))?;
    });
    Ok(a)
}

/// The recovery set-up `id` of `owner`; `NotFound` for anyone else's or another kind.
pub async fn of_owner(store: &Store, owner: Uuid, id: &str) -> Result<Approval> {
    const SQL: &str = "SELECT id, owner, target, state, created_at, expires_at FROM operations WHERE id = $1 AND kind = 'recovery_setup' AND owner = $2";
    let row: Option<Row> = with_pool!(store, pool => {
        sqlx::query_as(SQL).bind(id).bind(owner.to_string())
            .fetch_optional(pool).await.map_err(db("reading a recovery set-up"))?
    });
    row.map(from_row).transpose()?.ok_or(Error::NotFound)
}

/// `owner`'s set-ups still waiting for their passkey, newest first.
pub async fn waiting_for(store: &Store, owner: Uuid, now: OffsetDateTime) -> Result<Vec<Approval>> {
    const SQL: &str = "SELECT id, owner, target, state, created_at, expires_at FROM operations WHERE owner = $1 AND kind = 'recovery_setup' AND state = 'pending_step_up' AND expires_at > $2 ORDER BY created_at DESC LIMIT 20";
    let rows: Vec<Row> = with_pool!(store, pool => {
        sqlx::query_as(SQL).bind(owner.to_string()).bind(format_time(now))
            .fetch_all(pool).await.map_err(db("listing recovery set-ups"))?
    });
    rows.into_iter().map(from_row).collect()
}

/// Moves `a` from `from` to `to` while unexpired; false when it was not in `from` any more.
async fn transition(
    store: &Store,
    a: &Approval,
    from: &str,
    to: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    let n = with_pool!(store, pool => {
        sqlx::query("UPDATE operations SET state = $3, updated_at = $4 WHERE id = $1 AND kind = 'recovery_setup' AND state = $2 AND expires_at > $4")
            .bind(a.id.as_str()).bind(from).bind(to).bind(format_time(now))
            .execute(pool).await.map_err(db("updating a recovery set-up"))?.rows_affected()
    });
    Ok(n == 1)
}

/// The owner approved `a` with their passkey (checked by the caller): audited
/// `recovery.setup_approved` first, then approved. `NotSignable` when it is not waiting (any
/// more).
pub async fn approve(
    audit: &crate::audit::AuditLog,
    a: &Approval,
    app: Option<&str>,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Approval> {
    if a.state != "pending_step_up" || format_time(now) >= a.expires_at {
        return Err(Error::NotSignable(format!("recovery set-up {}", a.state)));
    }
    let mut e = AuditEvent::new(EventKind::Recovery, now, request_id);
    e.user = Some(a.owner.to_string());
    e.app = app.map(str::to_owned);
    e.action = Some("recovery.setup_approved".to_owned());
    e.request = Some(serde_json::json!({
        "operation": a.id, "device_id": a.device_id, "public_key": a.public_key,
    }));
    audit.append(e).await?;
    if !transition(audit.store(), a, "pending_step_up", "approved", now).await? {
        return Err(Error::NotSignable(
            "recovery set-up no longer waiting".to_owned(),
        ));
    }
    Ok(Approval {
        state: "approved".to_owned(),
        ..a.clone()
    })
}

/// Spends the approval `id` for `device_id` setting `public_key`: it must be `owner`'s, approved,
/// unexpired, and for exactly this device and key. Once only.
pub async fn spend(
    store: &Store,
    owner: Uuid,
    id: &str,
    device_id: &str,
    public_key: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let a = of_owner(store, owner, id).await?;
    if a.device_id != device_id || a.public_key != public_key {
        return Err(Error::StepUpMismatch);
    }
    if !transition(store, &a, "approved", "used", now).await? {
        return Err(Error::NotSignable(format!(
            "recovery set-up {} (approve it with your passkey, within {} minutes)",
            a.state,
            APPROVAL_TTL.whole_minutes()
        )));
    }
    Ok(())
}
