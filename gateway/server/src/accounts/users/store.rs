//! Users and their OIDC identities in the store (docs/architecture.md §2): a user is a UUID the
//! gateway generates, created on first login, global across apps; an identity `(issuer, sub,
//! trust)` belongs to exactly one user. `trust` names the key source that verified the identity
//! ([`crate::accounts::users::oidc::JwksSource::trust`]): an `iss` string alone is whatever an app
//! configures, so two apps reach the same person only when they trust the same keys.

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::apps::{Actor, Auditor};
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::error::{Error, Result};
use crate::store::db::{BeginWrite, db, with_pool};

/// A user as operators see it (never a session token or its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub id: Uuid,
    pub created_at: String,
    pub disabled: bool,
    pub identities: Vec<Identity>,
    /// Sessions not ended and not past their absolute limit.
    pub active_sessions: i64,
}

impl StoredUser {
    /// The one JSON shape of a user, for the CLI and the admin routes alike.
    pub fn view(&self) -> parapet_api::admin::User {
        parapet_api::admin::User {
            user_id: self.id.to_string(),
            created_at: self.created_at.clone(),
            disabled: self.disabled,
            identities: self
                .identities
                .iter()
                .map(|i| parapet_api::admin::UserIdentity {
                    issuer: i.issuer.clone(),
                    subject: i.subject.clone(),
                    trust: i.trust.clone(),
                })
                .collect(),
            active_sessions: self.active_sessions,
        }
    }

    /// [`StoredUser::view`] as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// An OIDC identity: the verified `iss` and `sub`, and the key source that verified them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub trust: String,
}

impl Identity {
    /// The identity a verified ID token proves.
    pub fn of(v: &crate::accounts::users::oidc::Verified) -> Identity {
        Identity {
            issuer: v.issuer.clone(),
            subject: v.subject.clone(),
            trust: v.trust.clone(),
        }
    }
}

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| Error::Database("a stored user id is not a UUID".to_owned()))
}

/// The user an identity belongs to, with its `disabled` flag. All three parts must match: the
/// same `(iss, sub)` verified by another key source is another identity.
pub async fn user_by_identity(store: &Store, identity: &Identity) -> Result<Option<(Uuid, bool)>> {
    const SQL: &str = "SELECT u.id AS id, u.disabled AS disabled FROM user_identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2 AND i.trust = $3";
    with_pool!(store, pool => {
        let row = sqlx::query(SQL)
            .bind(identity.issuer.as_str()).bind(identity.subject.as_str()).bind(identity.trust.as_str())
            .fetch_optional(pool).await.map_err(db("reading an identity"))?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id").map_err(db("reading an identity"))?;
        let disabled: bool = row.try_get("disabled").map_err(db("reading an identity"))?;
        Ok(Some((parse_uuid(&id)?, disabled)))
    })
}

/// The user of `identity`, created with it on first login. Returns the user, whether it is
/// disabled, and whether it was created now. Two first logins racing end with one user: the
/// loser's insert hits the identity's primary key and reads the winner's.
pub async fn find_or_create(
    store: &Store,
    identity: &Identity,
    now: OffsetDateTime,
) -> Result<(Uuid, bool, bool)> {
    if let Some((id, disabled)) = user_by_identity(store, identity).await? {
        return Ok((id, disabled, false));
    }
    let id = Uuid::new_v4();
    let at = format_time(now);
    let inserted: Result<()> = with_pool!(store, pool => async {
        let mut tx = pool.begin_write().await.map_err(db("creating a user"))?;
        sqlx::query("INSERT INTO users (id, created_at, disabled) VALUES ($1, $2, $3)")
            .bind(id.to_string()).bind(at.as_str()).bind(false)
            .execute(&mut *tx).await.map_err(db("creating a user"))?;
        sqlx::query("INSERT INTO user_identities (issuer, subject, trust, user_id, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(identity.issuer.as_str()).bind(identity.subject.as_str()).bind(identity.trust.as_str())
            .bind(id.to_string()).bind(at.as_str())
            .execute(&mut *tx).await.map_err(db("creating a user"))?;
        tx.commit().await.map_err(db("creating a user"))?;
        Ok(())
    }.await);
    match inserted {
        Ok(()) => Ok((id, false, true)),
        Err(error) => match user_by_identity(store, identity).await? {
            Some((id, disabled)) => Ok((id, disabled, false)),
            None => Err(error),
        },
    }
}

/// Links `identity` to `user`. Already linked to `user`: nothing to do (`false`); linked to
/// someone else: [`Error::IdentityInUse`].
pub async fn link_identity(
    store: &Store,
    user: Uuid,
    identity: &Identity,
    now: OffsetDateTime,
) -> Result<bool> {
    if let Some((owner, _)) = user_by_identity(store, identity).await? {
        return if owner == user {
            Ok(false)
        } else {
            Err(Error::IdentityInUse)
        };
    }
    let inserted = with_pool!(store, pool => {
        sqlx::query("INSERT INTO user_identities (issuer, subject, trust, user_id, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(identity.issuer.as_str()).bind(identity.subject.as_str()).bind(identity.trust.as_str())
            .bind(user.to_string()).bind(format_time(now))
            .execute(pool).await.map(|_| ())
    });
    match inserted {
        Ok(()) => Ok(true),
        // Lost a race with another link or first login of the same identity.
        Err(_) => match user_by_identity(store, identity).await? {
            Some((owner, _)) if owner == user => Ok(false),
            _ => Err(Error::IdentityInUse),
        },
    }
}

/// Every user, oldest first, with identities and live session counts.
pub async fn list_users(store: &Store, now: OffsetDateTime) -> Result<Vec<StoredUser>> {
    const USERS: &str = "SELECT id, created_at, disabled FROM users ORDER BY created_at, id";
    const IDS: &str =
        "SELECT user_id, issuer, subject, trust FROM user_identities ORDER BY created_at";
    const LIVE: &str = "SELECT user_id, COUNT(*) AS n FROM sessions WHERE ended_at IS NULL AND expires_at > $1 GROUP BY user_id";
    let now = format_time(now);
    with_pool!(store, pool => {
        let users = sqlx::query(USERS).fetch_all(pool).await.map_err(db("listing users"))?;
        let ids = sqlx::query(IDS).fetch_all(pool).await.map_err(db("listing users"))?;
        let live = sqlx::query(LIVE).bind(now.as_str()).fetch_all(pool).await.map_err(db("listing users"))?;
        let mut out = Vec::with_capacity(users.len());
        for u in &users {
            let id: String = u.try_get("id").map_err(db("listing users"))?;
            let mut identities = Vec::new();
            for i in &ids {
                let owner: String = i.try_get("user_id").map_err(db("listing users"))?;
                if owner == id {
                    identities.push(Identity {
                        issuer: i.try_get("issuer").map_err(db("listing users"))?,
                        subject: i.try_get("subject").map_err(db("listing users"))?,
                        trust: i.try_get("trust").map_err(db("listing users"))?,
                    });
                }
            }
            let mut active_sessions = 0i64;
            for l in &live {
                let owner: String = l.try_get("user_id").map_err(db("listing users"))?;
                if owner == id {
                    active_sessions = l.try_get("n").map_err(db("listing users"))?;
                }
            }
            out.push(StoredUser {
                id: parse_uuid(&id)?,
                created_at: u.try_get("created_at").map_err(db("listing users"))?,
                disabled: u.try_get("disabled").map_err(db("listing users"))?,
                identities,
                active_sessions,
            });
        }
        Ok(out)
    })
}

/// One user; `NotFound` when there is none.
pub async fn get_user(store: &Store, id: Uuid, now: OffsetDateTime) -> Result<StoredUser> {
    list_users(store, now)
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or(Error::NotFound)
}

/// Disables a user and ends every session they hold, after recording the change (kind `admin`,
/// action `user.disable`): a change that cannot be audited is not made. Other processes stop
/// accepting the sessions within their cache lifetime.
pub async fn disable_user(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<StoredUser> {
    let user = get_user(store, id, now).await?;
    let mut e = AuditEvent::new(EventKind::Admin, now, actor.request_id.clone());
    e.user = Some(id.to_string());
    e.action = Some("user.disable".to_owned());
    e.request = Some(serde_json::json!({"actor": actor.who, "user": user.to_json()}));
    auditor.record(e).await?;
    let at = format_time(now);
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("disabling a user"))?;
        sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
            .bind(id.to_string()).bind(true)
            .execute(&mut *tx).await.map_err(db("disabling a user"))?;
        sqlx::query("UPDATE sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL")
            .bind(id.to_string()).bind(at.as_str())
            .execute(&mut *tx).await.map_err(db("disabling a user"))?;
        tx.commit().await.map_err(db("disabling a user"))?;
    });
    get_user(store, id, now).await
}

/// Creates the user `id` with no identity yet: a person who registered themselves on the page
/// with a passkey, marked `self_registered` (what the daily registration cap counts, see
/// [`crate::limits::quotas`]). Already there: nothing happens. Returns whether it was created and
/// whether it is disabled.
pub async fn ensure_user(store: &Store, id: Uuid, now: OffsetDateTime) -> Result<(bool, bool)> {
    let created = with_pool!(store, pool => {
        sqlx::query("INSERT INTO users (id, created_at, disabled, self_registered) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
            .bind(id.to_string()).bind(format_time(now)).bind(false).bind(true)
            .execute(pool).await.map_err(db("creating a user"))?.rows_affected() == 1
    });
    let disabled = user_disabled(store, id).await?.unwrap_or(false);
    Ok((created, disabled))
}

/// Whether the user is disabled; `None` when there is no such user.
pub async fn user_disabled(store: &Store, id: Uuid) -> Result<Option<bool>> {
    with_pool!(store, pool => {
        let row = sqlx::query("SELECT disabled FROM users WHERE id = $1")
            .bind(id.to_string()).fetch_optional(pool).await.map_err(db("reading a user"))?;
        Ok(row.map(|r| r.try_get::<bool, _>("disabled")).transpose().map_err(db("reading a user"))?)
    })
}
