//! User sessions (docs/architecture.md §2): an opaque token `ps_` + 256 random bits, shown once;
//! the store keeps its SHA-256. A session is bound to the app it was issued for and lives until the
//! earliest of its absolute expiry (the app's `session_ttl` at issue), its idle limit (the app's
//! `session_idle`, counted from the last use) and its end (logout, user disabled).
//!
//! Lookups are cached like API keys ([`crate::accounts::apps`]): at most [`CACHE_TTL`], positive and
//! negative, bounded; so a logout or disablement made by another process is seen within a
//! second. The limits themselves are checked on every use against the injected clock, cache or
//! not. `last_seen` is written at most every [`TOUCH_EVERY`], not on every request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::Row;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::apps::{CACHE_MAX, CACHE_TTL, key_hash};
use crate::audit::Store;
use crate::audit::event::{format_time, parse_time};
use crate::error::{Error, Result};
use crate::records::{AppRecord, SessionFacts};
use crate::store::db::{db, with_pool};

/// How stale `last_seen` may get in the store: the idle limit is at least a minute, so a few
/// seconds of imprecision cost nothing and spare a write per request.
pub const TOUCH_EVERY: Duration = Duration::from_secs(5);

/// How a session was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Passkey,
    Oidc,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Passkey => "passkey",
            Method::Oidc => "oidc",
        }
    }
}

/// Which credential a session is. App sessions (`Parapet-Session`, for the app they were issued
/// to) and page sessions (the `/ui` cookie, made only by a passkey login on the page or by a page
/// link redeemed in the person's browser) are different credentials: neither is ever accepted
/// as the other, so an app holding its session can never act on the page as the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    App,
    Page,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Page => "page",
        }
    }

    /// The token prefix: `ps_` for app sessions, `pg_` for page sessions (a hint for people
    /// reading logs of their own; the stored kind is what is checked).
    fn prefix(self) -> &'static str {
        match self {
            Kind::App => "ps_",
            Kind::Page => "pg_",
        }
    }
}

/// A fresh session token of `kind`: its prefix + 256 random bits in hex.
pub fn new_session_token(kind: Kind) -> String {
    format!(
        "{}{}",
        kind.prefix(),
        hex::encode(rand::random::<[u8; 32]>())
    )
}

/// What a new session's holder is told; the token appears here and nowhere else.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// A random reference for audit events and operators (not a credential).
    pub id: String,
    pub user: Uuid,
    pub expires_at: OffsetDateTime,
    pub idle_secs: u64,
}

impl Issued {
    /// The session as the app receives it, this once (only its hash is kept).
    pub fn answer(self, request_id: String) -> parapet_api::sessions::SessionIssued {
        parapet_api::sessions::SessionIssued {
            session_token: self.token,
            user_id: self.user.to_string(),
            expires_at: crate::audit::event::format_time(self.expires_at),
            idle_secs: self.idle_secs,
            request_id,
        }
    }
}

/// A live session, as a route acting for a user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    pub id: String,
    pub app_id: String,
    /// The passkey the session was established with (its revocation ends the session).
    pub credential_id: Option<String>,
    pub facts: SessionFacts,
}

#[derive(Debug, Clone)]
struct Stored {
    hash: Vec<u8>,
    id: String,
    user: Uuid,
    app_id: String,
    method: String,
    user_verified: bool,
    created: OffsetDateTime,
    last_seen: OffsetDateTime,
    expires: OffsetDateTime,
    idle: Duration,
    ended: bool,
    user_disabled: bool,
    credential_id: Option<String>,
    kind: String,
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<[u8; 32], (Option<Stored>, Instant)>,
}

/// Token → session resolution with the cache described in the module notes.
#[derive(Debug)]
pub struct Sessions {
    store: Store,
    cache: Mutex<Cache>,
    ttl: Duration,
    lookups: std::sync::atomic::AtomicU64,
}

impl Sessions {
    pub fn new(store: Store) -> Sessions {
        Sessions {
            store,
            cache: Mutex::new(Cache::default()),
            ttl: CACHE_TTL,
            lookups: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Starts a session of `kind` for `user` with `app`, limited by the app's session settings.
    #[allow(
        clippy::too_many_arguments,
        reason = "who, for which app, what kind, how, when"
    )]
    pub async fn issue(
        &self,
        kind: Kind,
        user: Uuid,
        app: &AppRecord,
        method: Method,
        user_verified: bool,
        credential_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        let token = new_session_token(kind);
        let hash = key_hash(&token);
        let id = Uuid::new_v4().to_string();
        let expires_at = now + app.limits.session_ttl;
        let idle_secs = app.limits.session_idle.as_secs();
        let at = format_time(now);
        with_pool!(&self.store, pool => {
            sqlx::query("INSERT INTO sessions (token_hash, id, user_id, app_id, method, user_verified, created_at, last_seen, expires_at, idle_secs, credential_id, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
                .bind(hash.as_slice())
                .bind(id.as_str())
                .bind(user.to_string())
                .bind(app.id.as_str())
                .bind(method.as_str())
                .bind(user_verified)
                .bind(at.as_str())
                .bind(at.as_str())
                .bind(format_time(expires_at))
                .bind(i64::try_from(idle_secs).unwrap_or(i64::MAX))
                .bind(credential_id)
                .bind(kind.as_str())
                .execute(pool)
                .await
                .map_err(db("starting a session"))?;
        });
        Ok(Issued {
            token,
            id,
            user,
            expires_at,
            idle_secs,
        })
    }

    async fn load(&self, hash: &[u8; 32]) -> Result<Option<Stored>> {
        const SQL: &str = "SELECT s.token_hash AS token_hash, s.id AS id, s.user_id AS user_id, s.app_id AS app_id, s.method AS method, s.user_verified AS user_verified, s.created_at AS created_at, s.last_seen AS last_seen, s.expires_at AS expires_at, s.idle_secs AS idle_secs, s.ended_at AS ended_at, s.credential_id AS credential_id, s.kind AS kind, u.disabled AS disabled FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1";
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ctx = "reading a session";
        with_pool!(&self.store, pool => {
            let row = sqlx::query(SQL).bind(hash.as_slice()).fetch_optional(pool).await.map_err(db(ctx))?;
            let Some(r) = row else { return Ok(None) };
            let time_of = |col: &str| -> Result<OffsetDateTime> {
                let t: String = r.try_get(col).map_err(db(ctx))?;
                parse_time(&t).map_err(|_| Error::Database(format!("{ctx}: bad time")))
            };
            let user: String = r.try_get("user_id").map_err(db(ctx))?;
            let idle: i64 = r.try_get("idle_secs").map_err(db(ctx))?;
            let ended: Option<String> = r.try_get("ended_at").map_err(db(ctx))?;
            Ok(Some(Stored {
                hash: r.try_get("token_hash").map_err(db(ctx))?,
                id: r.try_get("id").map_err(db(ctx))?,
                user: Uuid::parse_str(&user).map_err(|_| Error::Database(format!("{ctx}: bad user id")))?,
                app_id: r.try_get("app_id").map_err(db(ctx))?,
                method: r.try_get("method").map_err(db(ctx))?,
                user_verified: r.try_get("user_verified").map_err(db(ctx))?,
                created: time_of("created_at")?,
                last_seen: time_of("last_seen")?,
                expires: time_of("expires_at")?,
                idle: Duration::from_secs(u64::try_from(idle).unwrap_or(0)),
                ended: ended.is_some(),
                user_disabled: r.try_get("disabled").map_err(db(ctx))?,
                credential_id: r.try_get("credential_id").map_err(db(ctx))?,
                kind: r.try_get("kind").map_err(db(ctx))?,
            }))
        })
    }

    /// The session row for `token`, through the cache.
    async fn lookup(&self, token: &str) -> Result<Option<Stored>> {
        let hash = key_hash(token);
        let now = Instant::now();
        {
            let cache = self.cache.lock();
            if let Some((row, at)) = cache.entries.get(&hash)
                && now.duration_since(*at) < self.ttl
            {
                return Ok(row.clone());
            }
        }
        let found = self.load(&hash).await?;
        // Compared again in constant time after the indexed lookup.
        let found = found.filter(|r| bool::from(r.hash.as_slice().ct_eq(hash.as_slice())));
        let mut cache = self.cache.lock();
        if cache.entries.len() >= CACHE_MAX {
            // Stale entries first; then all of it ([`CACHE_MAX`]: a cache, not a count, so
            // emptying it costs store reads and never lets anything through).
            let ttl = self.ttl;
            cache
                .entries
                .retain(|_, (_, at)| now.duration_since(*at) < ttl);
            if cache.entries.len() >= CACHE_MAX {
                cache.entries.clear();
            }
        }
        cache.entries.insert(hash, (found.clone(), now));
        Ok(found)
    }

    /// The live app session `token` names, for a request of `app_id` at `now`: unknown, ended,
    /// disabled user, another app's session or a page session → [`Error::SessionInvalid`]; past
    /// its absolute or idle limit → [`Error::SessionExpired`]. Notes the use (at most every
    /// [`TOUCH_EVERY`]).
    pub async fn resolve(
        &self,
        token: &str,
        app_id: &str,
        now: OffsetDateTime,
    ) -> Result<ActiveSession> {
        self.resolve_for(token, Kind::App, Some(app_id), now).await
    }

    /// The live page session `token` names (the gateway's own page; the session carries the app
    /// the login began for). An app session is never a page session: [`Error::SessionInvalid`].
    pub async fn resolve_page(&self, token: &str, now: OffsetDateTime) -> Result<ActiveSession> {
        self.resolve_for(token, Kind::Page, None, now).await
    }

    async fn resolve_for(
        &self,
        token: &str,
        kind: Kind,
        app_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<ActiveSession> {
        let Some(row) = self.lookup(token).await? else {
            return Err(Error::SessionInvalid);
        };
        if row.ended
            || row.user_disabled
            || row.kind != kind.as_str()
            || app_id.is_some_and(|a| row.app_id != a)
        {
            return Err(Error::SessionInvalid);
        }
        if now >= row.expires || now - row.last_seen > row.idle {
            return Err(Error::SessionExpired);
        }
        if now - row.last_seen >= TOUCH_EVERY {
            self.touch(&row, now).await;
        }
        let age_secs = (now - row.created).whole_seconds().max(0);
        Ok(ActiveSession {
            id: row.id.clone(),
            app_id: row.app_id.clone(),
            credential_id: row.credential_id.clone(),
            facts: SessionFacts {
                user: row.user,
                method: row.method.clone(),
                user_verified: row.user_verified,
                age_secs,
            },
        })
    }

    async fn touch(&self, row: &Stored, now: OffsetDateTime) {
        let at = format_time(now);
        let written = with_pool!(&self.store, pool => {
            sqlx::query("UPDATE sessions SET last_seen = $2 WHERE token_hash = $1 AND last_seen < $2")
                .bind(row.hash.as_slice()).bind(at.as_str()).execute(pool).await.map(|_| ())
        });
        if let Err(error) = written {
            // The use is still allowed: the session was valid; only its idle clock lags.
            tracing::warn!(%error, "noting a session's use failed");
            return;
        }
        let mut cache = self.cache.lock();
        for (r, _) in cache.entries.values_mut() {
            if let Some(r) = r
                && r.id == row.id
            {
                r.last_seen = now;
            }
        }
    }

    /// Ends the app session `token` (logout); it must be live and issued for `app_id`.
    pub async fn end(
        &self,
        token: &str,
        app_id: &str,
        now: OffsetDateTime,
    ) -> Result<ActiveSession> {
        let session = self.resolve(token, app_id, now).await?;
        self.end_token(token, now).await?;
        Ok(session)
    }

    /// Ends the page session `token` (the page's logout).
    pub async fn end_page(&self, token: &str, now: OffsetDateTime) -> Result<ActiveSession> {
        let session = self.resolve_page(token, now).await?;
        self.end_token(token, now).await?;
        Ok(session)
    }

    /// Ends a session of either kind (taking back one whose login could not be audited).
    pub async fn end_token(&self, token: &str, now: OffsetDateTime) -> Result<()> {
        let hash = key_hash(token);
        with_pool!(&self.store, pool => {
            sqlx::query("UPDATE sessions SET ended_at = $2 WHERE token_hash = $1 AND ended_at IS NULL")
                .bind(hash.as_slice()).bind(format_time(now)).execute(pool).await.map_err(db("ending a session"))?;
        });
        self.invalidate();
        Ok(())
    }

    /// Ends every live session established with the passkey `credential_id` (it was revoked);
    /// returns how many ended.
    pub async fn end_for_credential(
        &self,
        credential_id: &str,
        now: OffsetDateTime,
    ) -> Result<u64> {
        let ended = with_pool!(&self.store, pool => {
            sqlx::query("UPDATE sessions SET ended_at = $2 WHERE credential_id = $1 AND ended_at IS NULL")
                .bind(credential_id).bind(format_time(now)).execute(pool).await
                .map_err(db("ending a passkey's sessions"))?.rows_affected()
        });
        self.invalidate();
        Ok(ended)
    }

    /// Ends `user`'s page sessions that no passkey established (those a page link opened): once
    /// the person has a passkey, a page session made without it, wherever it was redeemed, ends.
    pub async fn end_unbound_page_sessions(&self, user: Uuid, now: OffsetDateTime) -> Result<u64> {
        let ended = with_pool!(&self.store, pool => {
            sqlx::query("UPDATE sessions SET ended_at = $2 WHERE user_id = $1 AND kind = 'page' AND credential_id IS NULL AND ended_at IS NULL")
                .bind(user.to_string()).bind(format_time(now)).execute(pool).await
                .map_err(db("ending a person's unbound page sessions"))?.rows_affected()
        });
        self.invalidate();
        Ok(ended)
    }

    /// Forgets every cached lookup (after a change made through this process).
    pub fn invalidate(&self) {
        self.cache.lock().entries.clear();
    }

    /// Database lookups made (what the cache keeps low).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = new_session_token(Kind::App);
        assert!(t.starts_with("ps_") && t.len() == 3 + 64, "{t}");
        assert_ne!(new_session_token(Kind::App), t);
        let p = new_session_token(Kind::Page);
        assert!(p.starts_with("pg_") && p.len() == 3 + 64, "{p}");
    }
}
