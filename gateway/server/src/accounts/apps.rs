//! Who is calling: apps and their API keys (docs/architecture.md §2), kept in the same store as the
//! audit log so that one database holds everything a replica needs.
//!
//! A key is `pk_` + 256 random bits in hex and is shown once, at creation; the store keeps only
//! its SHA-256, looked up by that hash and compared again in constant time. Lookups go through
//! an in-memory cache (positive and negative) so that a flood of random keys never reaches the
//! database; entries live at most [`CACHE_TTL`], which bounds how long a revocation or freeze
//! made by another process (or on another PostgreSQL replica) can go unnoticed. Changes made
//! through this process's [`Identity`] invalidate its cache at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::audit::{AuditLog, Store};
use crate::error::{Error, Result};
use crate::limits::Rate;
use crate::records::{AppLimits, AppRecord};
use crate::store::db::{BeginWrite, RowLike, db, with_pool};

/// The grants an app key can carry.
pub const GRANTS: &[&str] = &["sign", "audit:read", "admin"];

/// How long a cached lookup (hit or miss) is trusted: the cross-process revocation delay. Under
/// a second so that the delay, lookup included, stays within the one second
/// docs/architecture.md §11 allows.
pub const CACHE_TTL: Duration = Duration::from_millis(900);

/// Most cached lookups of each kind; past it stale entries are dropped and, if that is not
/// enough, the cache is cleared rather than grown, so that a flood of distinct keys costs
/// bounded memory and, at worst, database reads. Clearing is safe because every entry is only a
/// copy of the store (nothing is let through that a store read would refuse); counters that
/// limit anyone are never cleared this way ([`crate::limits::FailureWindow`]).
pub const CACHE_MAX: usize = 10_000;

/// SHA-256 of a key, the only form in which keys are held.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// RFC 4648 base32, lowercase, without padding: ids that are safe in paths and Cedar literals.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let idx = ((buffer >> bits) & 31) as usize;
            out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'a')));
        }
    }
    if bits > 0 {
        let idx = ((buffer << (5 - bits)) & 31) as usize;
        out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'a')));
    }
    out
}

/// A fresh app id: `app_` + 128 random bits.
pub fn new_app_id() -> String {
    format!("app_{}", base32_lower(&rand::random::<[u8; 16]>()))
}

/// A fresh API key: `pk_` + 256 random bits.
pub fn new_api_key() -> String {
    format!("pk_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// An app as stored, for listing (never the key or its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApp {
    pub id: String,
    pub name: String,
    pub grants: Vec<String>,
    pub groups: Vec<String>,
    pub frozen: bool,
    pub revoked: bool,
    pub created_at: String,
    pub limits: AppLimits,
    /// Where the login page may send this app's users back with a login code (exact match).
    pub redirect_uris: Vec<String>,
}

impl StoredApp {
    /// The one JSON shape of an app shown to operators, by the CLI and the admin routes alike
    /// (`app_id`, not `id`, to match `apps create`).
    pub fn view(&self) -> parapet_api::admin::App {
        parapet_api::admin::App {
            app_id: self.id.clone(),
            name: self.name.clone(),
            grants: self.grants.clone(),
            groups: self.groups.clone(),
            frozen: self.frozen,
            revoked: self.revoked,
            created_at: self.created_at.clone(),
            rate: self.limits.rate.map(|r| r.to_string()),
            session_ttl_secs: self.limits.session_ttl.as_secs(),
            session_idle_secs: self.limits.session_idle.as_secs(),
            redirect_uris: self.redirect_uris.clone(),
        }
    }

    /// [`StoredApp::view`] as JSON, for answers that add fields to it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }

    pub fn record(&self) -> AppRecord {
        AppRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            grants: self.grants.clone(),
            frozen: self.frozen,
            groups: self.groups.clone(),
            limits: self.limits,
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks grants and group names before they are stored: unknown grants are refused (a typo
/// must not silently grant nothing), and groups must be plain identifiers.
pub fn validate(name: &str, grants: &[String], groups: &[String]) -> Result<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Error::InvalidRequest(
            "app name must be 1 to 200 characters".to_owned(),
        ));
    }
    if let Some(g) = grants.iter().find(|g| !GRANTS.contains(&g.as_str())) {
        return Err(Error::InvalidRequest(format!(
            "unknown grant {g:?}; grants are sign, audit:read, admin"
        )));
    }
    let ok_group = |g: &String| {
        !g.is_empty()
            && g.len() <= 100
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    if let Some(g) = groups.iter().find(|g| !ok_group(g)) {
        return Err(Error::InvalidRequest(format!(
            "invalid group {g:?}: use letters, digits, '_', '-', '.'"
        )));
    }
    Ok(())
}

fn row_to_app(r: &impl RowLike) -> std::result::Result<StoredApp, sqlx::Error> {
    Ok(StoredApp {
        id: r.text("id")?,
        name: r.text("name")?,
        grants: split_list(&r.text("grants")?),
        groups: split_list(&r.text("app_groups")?),
        frozen: r.flag("frozen")?,
        revoked: r.flag("revoked")?,
        created_at: r.text("created_at")?,
        limits: AppLimits {
            rate: r.opt_text("rate")?.and_then(|t| t.parse::<Rate>().ok()),
            session_ttl: secs(r.int("session_ttl_secs")?),
            session_idle: secs(r.int("session_idle_secs")?),
        },
        redirect_uris: r
            .text("redirect_uris")?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The columns every app read selects (a macro so that statements stay `&'static str`).
macro_rules! app_columns {
    () => {
        "id, name, grants, app_groups, frozen, revoked, created_at, rate, session_ttl_secs, session_idle_secs, redirect_uris"
    };
}

/// Where an operator's change is recorded before it is made: the running gateway's audit
/// writer, or the store directly (the CLI, which has no writer of its own). Either way the
/// event joins the one hash chain.
#[derive(Debug, Clone, Copy)]
pub enum Auditor<'a> {
    Log(&'a AuditLog),
    Store(&'a Store),
}

impl Auditor<'_> {
    /// Commits `event` before the change it describes is made.
    pub async fn record(&self, event: AuditEvent) -> Result<()> {
        match self {
            Auditor::Log(log) => log.append(event).await.map(|_| ()),
            Auditor::Store(store) => store
                .append_batch(std::slice::from_ref(&event))
                .await
                .map(|_| ())
                .map_err(|error| {
                    tracing::warn!(%error, "recording an operator change failed");
                    Error::AuditUnavailable
                }),
        }
    }
}

/// Who made an operator change, as the audit log names them: `cli:<os user>` or the admin
/// app's id, with the request it came in.
#[derive(Debug, Clone)]
pub struct Actor {
    pub who: String,
    pub request_id: String,
}

impl Actor {
    /// The operator at the gateway host's command line.
    pub fn cli() -> Actor {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
        Actor {
            who: format!("cli:{user}"),
            request_id: uuid::Uuid::now_v7().to_string(),
        }
    }
}

/// The audit event for one operator change, committed before the change is made: a change
/// that cannot be recorded is not made. `detail` is an allowlist the callers build; it never
/// holds a key.
fn admin_event(
    actor: &Actor,
    action: &str,
    app: &StoredApp,
    detail: serde_json::Value,
    now: time::OffsetDateTime,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Admin, now, actor.request_id.clone());
    e.app = Some(app.id.clone());
    e.action = Some(action.to_owned());
    e.request = Some(serde_json::json!({
        "actor": actor.who,
        "app": app.to_json(),
        "detail": detail,
    }));
    e
}

/// An app to be created.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    pub name: String,
    pub grants: Vec<String>,
    pub groups: Vec<String>,
    pub limits: AppLimits,
    pub redirect_uris: Vec<String>,
}

/// Checks redirect URIs before they are stored: absolute `https` URLs (or `http` on a loopback
/// host, for development), no fragment, no user info; compared later by exact string match.
pub fn validate_redirect_uris(uris: &[String]) -> Result<()> {
    if uris.len() > 20 {
        return Err(Error::InvalidRequest(
            "at most 20 redirect URIs per app".to_owned(),
        ));
    }
    for uri in uris {
        let bad = |why: &str| {
            Err(Error::InvalidRequest(format!(
                "redirect URI {uri:?}: {why}"
            )))
        };
        if uri.len() > 2000 || uri.chars().any(char::is_control) {
            return bad("too long or has control characters");
        }
        let Ok(url) = url::Url::parse(uri) else {
            return bad("not an absolute URL");
        };
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return bad("must be https (http only on localhost)"),
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return bad("must not have a fragment or user info");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return bad("has no host");
        }
    }
    Ok(())
}

/// Creates an app and returns it with its key — the only time the key exists in clear.
pub async fn create_app(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    new: &NewApp,
    now: time::OffsetDateTime,
) -> Result<(StoredApp, String)> {
    validate(&new.name, &new.grants, &new.groups)?;
    new.limits.validate()?;
    validate_redirect_uris(&new.redirect_uris)?;
    let app = StoredApp {
        id: new_app_id(),
        name: new.name.trim().to_owned(),
        grants: new.grants.clone(),
        groups: new.groups.clone(),
        frozen: false,
        revoked: false,
        created_at: format_time(now),
        limits: new.limits,
        redirect_uris: new.redirect_uris.clone(),
    };
    let key = new_api_key();
    let hash = key_hash(&key);
    auditor
        .record(admin_event(
            actor,
            "app.create",
            &app,
            serde_json::Value::Null,
            now,
        ))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO apps (id, name, grants, app_groups, frozen, revoked, key_hash, created_at, rate, session_ttl_secs, session_idle_secs, redirect_uris) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
            .bind(app.id.as_str())
            .bind(app.name.as_str())
            .bind(app.grants.join(","))
            .bind(app.groups.join(","))
            .bind(false)
            .bind(false)
            .bind(hash.as_slice())
            .bind(app.created_at.as_str())
            .bind(app.limits.rate.map(|r| r.to_string()))
            .bind(secs_i64(app.limits.session_ttl))
            .bind(secs_i64(app.limits.session_idle))
            .bind(app.redirect_uris.join("\n"))
            .execute(pool)
            .await
            .map_err(db("creating an app"))?;
    });
    Ok((app, key))
}

/// Every app, oldest first.
pub async fn list_apps(store: &Store) -> Result<Vec<StoredApp>> {
    const SQL: &str = concat!(
        "SELECT ",
        app_columns!(),
        " FROM apps ORDER BY created_at, id"
    );
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).fetch_all(pool).await.map_err(db("listing apps"))?;
        Ok(rows.iter().map(row_to_app).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing apps"))?)
    })
}

/// One app; `NotFound` when no such app exists.
pub async fn get_app(store: &Store, id: &str) -> Result<StoredApp> {
    const SELECT: &str = concat!("SELECT ", app_columns!(), " FROM apps WHERE id = $1");
    with_pool!(store, pool => {
        let row = sqlx::query(SELECT).bind(id).fetch_optional(pool).await.map_err(db("reading an app"))?;
        let Some(row) = row else { return Err(Error::NotFound) };
        Ok(row_to_app(&row).map_err(db("reading an app"))?)
    })
}

/// Whether the app that created something (a signing request) may still have it acted on: a
/// revoked app's requests are never approved or signed ([`Error::Forbidden`]), a frozen app's
/// wait until it is unfrozen ([`Error::AppFrozen`]). An id with no stored app may act only if it
/// is `dev_app`: the development app of the static token, while the static token is on.
pub async fn app_may_act(store: &Store, id: &str, dev_app: Option<&str>) -> Result<()> {
    match get_app(store, id).await {
        Ok(a) if a.revoked => Err(Error::Forbidden(
            "the app that made this request has been revoked",
        )),
        Ok(a) if a.frozen => Err(Error::AppFrozen),
        Ok(_) => Ok(()),
        Err(Error::NotFound) if dev_app == Some(id) => Ok(()),
        Err(Error::NotFound) => Err(Error::Forbidden(
            "the app that made this request is not one this gateway knows",
        )),
        Err(e) => Err(e),
    }
}

/// What can be changed on an existing app from the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Freeze,
    Unfreeze,
    /// Permanent: the key stops working and the app cannot be unfrozen back into use.
    Revoke,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Freeze => "app.freeze",
            Change::Unfreeze => "app.unfreeze",
            Change::Revoke => "app.revoke",
        }
    }
}

/// Applies `change`; `NotFound` when no such app exists.
pub async fn change_app(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    id: &str,
    change: Change,
    now: time::OffsetDateTime,
) -> Result<StoredApp> {
    let mut app = get_app(store, id).await?;
    match change {
        Change::Freeze => app.frozen = true,
        Change::Unfreeze => app.frozen = false,
        Change::Revoke => app.revoked = true,
    }
    auditor
        .record(admin_event(
            actor,
            change.action(),
            &app,
            serde_json::Value::Null,
            now,
        ))
        .await?;
    let sql = match change {
        Change::Freeze => "UPDATE apps SET frozen = TRUE WHERE id = $1",
        Change::Unfreeze => "UPDATE apps SET frozen = FALSE WHERE id = $1",
        Change::Revoke => "UPDATE apps SET revoked = TRUE WHERE id = $1",
    };
    with_pool!(store, pool => {
        sqlx::query(sql).bind(id).execute(pool).await.map_err(db("changing an app"))?;
    });
    get_app(store, id).await
}

/// The fields of an app an operator may replace; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct AppUpdate {
    pub name: Option<String>,
    pub grants: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    /// `Some(None)` returns the app to the gateway's default rate.
    pub rate: Option<Option<Rate>>,
    pub session_ttl: Option<Duration>,
    pub session_idle: Option<Duration>,
    pub redirect_uris: Option<Vec<String>>,
}

/// Replaces the given fields of an app; `NotFound` when no such app exists.
pub async fn update_app(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    id: &str,
    update: &AppUpdate,
    now: time::OffsetDateTime,
) -> Result<StoredApp> {
    let current = get_app(store, id).await?;
    let mut app = current.clone();
    if let Some(name) = &update.name {
        app.name = name.trim().to_owned();
    }
    if let Some(grants) = &update.grants {
        app.grants.clone_from(grants);
    }
    if let Some(groups) = &update.groups {
        app.groups.clone_from(groups);
    }
    if let Some(rate) = update.rate {
        app.limits.rate = rate;
    }
    if let Some(ttl) = update.session_ttl {
        app.limits.session_ttl = ttl;
    }
    if let Some(idle) = update.session_idle {
        app.limits.session_idle = idle;
    }
    if let Some(uris) = &update.redirect_uris {
        app.redirect_uris.clone_from(uris);
    }
    validate(&app.name, &app.grants, &app.groups)?;
    app.limits.validate()?;
    validate_redirect_uris(&app.redirect_uris)?;
    let detail = serde_json::json!({ "before": current.to_json() });
    auditor
        .record(admin_event(actor, "app.update", &app, detail, now))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("UPDATE apps SET name = $2, grants = $3, app_groups = $4, rate = $5, session_ttl_secs = $6, session_idle_secs = $7, redirect_uris = $8 WHERE id = $1")
            .bind(id)
            .bind(app.name.as_str())
            .bind(app.grants.join(","))
            .bind(app.groups.join(","))
            .bind(app.limits.rate.map(|r| r.to_string()))
            .bind(secs_i64(app.limits.session_ttl))
            .bind(secs_i64(app.limits.session_idle))
            .bind(app.redirect_uris.join("\n"))
            .execute(pool)
            .await
            .map_err(db("updating an app"))?;
    });
    get_app(store, id).await
}

/// Gives the app a new key and returns it; the old key keeps working until `now + overlap`
/// (not at all when `overlap` is zero). Revoked apps cannot be rotated back into use.
pub async fn rotate_key(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    id: &str,
    overlap: Duration,
    now: time::OffsetDateTime,
) -> Result<(StoredApp, String, String)> {
    const SELECT: &str = concat!(
        "SELECT ",
        app_columns!(),
        ", key_hash FROM apps WHERE id = $1"
    );
    let current = get_app(store, id).await?;
    if current.revoked {
        return Err(Error::InvalidRequest(format!("app {id} is revoked")));
    }
    let key = new_api_key();
    let hash = key_hash(&key);
    let expires = format_time(now + overlap);
    let detail = serde_json::json!({
        "overlap_secs": overlap.as_secs(),
        "previous_key_expires_at": expires,
    });
    auditor
        .record(admin_event(actor, "app.rotate_key", &current, detail, now))
        .await?;
    let app = with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("rotating a key"))?;
        let row = sqlx::query(SELECT).bind(id).fetch_optional(&mut *tx).await.map_err(db("rotating a key"))?;
        let Some(row) = row else { return Err(Error::NotFound) };
        let app = row_to_app(&row).map_err(db("rotating a key"))?;
        let old = row.bytes("key_hash").map_err(db("rotating a key"))?;
        if !overlap.is_zero() {
            sqlx::query("INSERT INTO api_key_grace (key_hash, app_id, expires_at) VALUES ($1, $2, $3)")
                .bind(old.as_slice())
                .bind(id)
                .bind(expires.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db("rotating a key"))?;
        }
        sqlx::query("UPDATE apps SET key_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(hash.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(db("rotating a key"))?;
        tx.commit().await.map_err(db("rotating a key"))?;
        app
    });
    Ok((app, key, expires))
}

/// The app a key hash belongs to, revoked apps excluded: its current key, or a rotated-out key
/// still inside its overlap window at `now`. The hash is compared again in constant time after
/// the indexed lookup, so the answer does not depend on how much of it matched.
pub async fn app_by_key_hash(
    store: &Store,
    hash: &[u8; 32],
    now: time::OffsetDateTime,
) -> Result<Option<AppRecord>> {
    const CURRENT: &str = concat!(
        "SELECT ",
        app_columns!(),
        ", key_hash FROM apps WHERE key_hash = $1"
    );
    const GRACE: &str = concat!(
        "SELECT ",
        app_columns!(),
        ", g.key_hash AS key_hash FROM api_key_grace g JOIN apps ON apps.id = g.app_id",
        " WHERE g.key_hash = $1 AND g.expires_at > $2"
    );
    let now = format_time(now);
    with_pool!(store, pool => {
        let mut row = sqlx::query(CURRENT).bind(hash.as_slice()).fetch_optional(pool).await.map_err(db("looking up a key"))?;
        if row.is_none() {
            row = sqlx::query(GRACE).bind(hash.as_slice()).bind(now.as_str()).fetch_optional(pool).await.map_err(db("looking up a key"))?;
        }
        let Some(row) = row else { return Ok(None) };
        let stored = row.bytes("key_hash").map_err(db("looking up a key"))?;
        if !bool::from(stored.as_slice().ct_eq(hash.as_slice())) {
            return Ok(None);
        }
        let app = row_to_app(&row).map_err(db("looking up a key"))?;
        Ok((!app.revoked).then(|| app.record()))
    })
}

#[derive(Debug, Default)]
struct Cache {
    hits: HashMap<[u8; 32], (AppRecord, Instant)>,
    misses: HashMap<[u8; 32], Instant>,
}

/// Key → app resolution with the caches described in the module notes.
#[derive(Debug)]
pub struct Identity {
    store: Store,
    cache: Mutex<Cache>,
    ttl: Duration,
    /// Database lookups made: what the negative cache is there to keep low under a flood.
    lookups: std::sync::atomic::AtomicU64,
}

impl Identity {
    pub fn new(store: Store) -> Identity {
        Identity::with_ttl(store, CACHE_TTL)
    }

    pub fn with_ttl(store: Store, ttl: Duration) -> Identity {
        Identity {
            store,
            cache: Mutex::new(Cache::default()),
            ttl,
            lookups: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The (unrevoked) app `key` belongs to at `now`, or `None`.
    pub async fn resolve(
        &self,
        key: &str,
        now_utc: time::OffsetDateTime,
    ) -> Result<Option<AppRecord>> {
        let hash = key_hash(key);
        let now = Instant::now();
        {
            let cache = self.cache.lock();
            if let Some((app, at)) = cache.hits.get(&hash)
                && now.duration_since(*at) < self.ttl
            {
                return Ok(Some(app.clone()));
            }
            if let Some(at) = cache.misses.get(&hash)
                && now.duration_since(*at) < self.ttl
            {
                return Ok(None);
            }
        }
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = app_by_key_hash(&self.store, &hash, now_utc).await?;
        let mut cache = self.cache.lock();
        match &found {
            Some(app) => {
                if cache.hits.len() >= CACHE_MAX {
                    let ttl = self.ttl;
                    cache
                        .hits
                        .retain(|_, (_, at)| now.duration_since(*at) < ttl);
                    if cache.hits.len() >= CACHE_MAX {
                        cache.hits.clear();
                    }
                }
                cache.misses.remove(&hash);
                cache.hits.insert(hash, (app.clone(), now));
            }
            None => {
                if cache.misses.len() >= CACHE_MAX {
                    let ttl = self.ttl;
                    cache.misses.retain(|_, at| now.duration_since(*at) < ttl);
                    if cache.misses.len() >= CACHE_MAX {
                        cache.misses.clear();
                    }
                }
                cache.hits.remove(&hash);
                cache.misses.insert(hash, now);
            }
        }
        Ok(found)
    }

    /// Changes an app and forgets every cached lookup, so that this process sees the change at
    /// once (other processes within [`CACHE_TTL`]).
    pub async fn change(
        &self,
        auditor: Auditor<'_>,
        actor: &Actor,
        id: &str,
        change: Change,
        now: time::OffsetDateTime,
    ) -> Result<StoredApp> {
        let app = change_app(&self.store, auditor, actor, id, change, now).await?;
        self.invalidate();
        Ok(app)
    }

    /// [`rotate_key`], then forgets every cached lookup (see [`Identity::change`]).
    pub async fn rotate(
        &self,
        auditor: Auditor<'_>,
        actor: &Actor,
        id: &str,
        overlap: Duration,
        now: time::OffsetDateTime,
    ) -> Result<(StoredApp, String, String)> {
        let rotated = rotate_key(&self.store, auditor, actor, id, overlap, now).await?;
        self.invalidate();
        Ok(rotated)
    }

    /// [`update_app`], then forgets every cached lookup (see [`Identity::change`]).
    pub async fn update(
        &self,
        auditor: Auditor<'_>,
        actor: &Actor,
        id: &str,
        update: &AppUpdate,
        now: time::OffsetDateTime,
    ) -> Result<StoredApp> {
        let app = update_app(&self.store, auditor, actor, id, update, now).await?;
        self.invalidate();
        Ok(app)
    }

    pub fn invalidate(&self) {
        let mut cache = self.cache.lock();
        cache.hits.clear();
        cache.misses.clear();
    }

    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Cached entries of each kind (hits, misses), for tests and metrics.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.cache.lock();
        (cache.hits.len(), cache.misses.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_lower(b""), "");
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"fo"), "mzxq");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn ids_and_keys_have_the_documented_shape() {
        let id = new_app_id();
        assert!(id.starts_with("app_") && id.len() == 4 + 26, "{id}");
        let key = new_api_key();
        assert!(key.starts_with("pk_") && key.len() == 3 + 64, "{key}");
        assert_ne!(new_api_key(), key);
    }
}
