//! Who is calling: apps and their API keys (DESIGN §2), kept in the same store as the audit log
//! so that one database holds everything a replica needs.
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
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::audit::Store;
use crate::audit::event::format_time;
use crate::error::{Error, Result};
use crate::records::AppRecord;

/// The grants an app key can carry.
pub const GRANTS: &[&str] = &["sign", "audit:read", "admin"];

/// How long a cached lookup (hit or miss) is trusted: the cross-process revocation delay. Under
/// a second so that the delay, lookup included, stays within the one second DESIGN §11 allows.
pub const CACHE_TTL: Duration = Duration::from_millis(900);

/// Most cached lookups of each kind; past it the cache is cleared rather than grown, so that a
/// flood of distinct keys costs bounded memory (and, at worst, database reads).
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredApp {
    pub id: String,
    pub name: String,
    pub grants: Vec<String>,
    pub groups: Vec<String>,
    pub frozen: bool,
    pub revoked: bool,
    pub created_at: String,
}

impl StoredApp {
    /// The one JSON shape of an app shown to operators, by the CLI and the admin routes alike
    /// (`app_id`, not `id`, to match `apps create`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "app_id": self.id,
            "name": self.name,
            "grants": self.grants,
            "groups": self.groups,
            "frozen": self.frozen,
            "revoked": self.revoked,
            "created_at": self.created_at,
        })
    }

    pub fn record(&self) -> AppRecord {
        AppRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            grants: self.grants.clone(),
            frozen: self.frozen,
            groups: self.groups.clone(),
        }
    }
}

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::Database(format!("{context}: {e}"))
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
    })
}

/// The few column reads shared by both databases' rows.
trait RowLike {
    fn text(&self, col: &str) -> std::result::Result<String, sqlx::Error>;
    fn flag(&self, col: &str) -> std::result::Result<bool, sqlx::Error>;
    fn bytes(&self, col: &str) -> std::result::Result<Vec<u8>, sqlx::Error>;
}

macro_rules! row_like {
    ($ty:ty) => {
        impl RowLike for $ty {
            fn text(&self, col: &str) -> std::result::Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, col: &str) -> std::result::Result<bool, sqlx::Error> {
                self.try_get(col)
            }
            fn bytes(&self, col: &str) -> std::result::Result<Vec<u8>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
row_like!(sqlx::sqlite::SqliteRow);
row_like!(sqlx::postgres::PgRow);

macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// The columns every app read selects (a macro so that statements stay `&'static str`).
macro_rules! app_columns {
    () => {
        "id, name, grants, app_groups, frozen, revoked, created_at"
    };
}

/// Creates an app and returns it with its key — the only time the key exists in clear.
pub async fn create_app(
    store: &Store,
    name: &str,
    grants: &[String],
    groups: &[String],
    now: time::OffsetDateTime,
) -> Result<(StoredApp, String)> {
    validate(name, grants, groups)?;
    let app = StoredApp {
        id: new_app_id(),
        name: name.trim().to_owned(),
        grants: grants.to_vec(),
        groups: groups.to_vec(),
        frozen: false,
        revoked: false,
        created_at: format_time(now),
    };
    let key = new_api_key();
    let hash = key_hash(&key);
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO apps (id, name, grants, app_groups, frozen, revoked, key_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(app.id.as_str())
            .bind(app.name.as_str())
            .bind(app.grants.join(","))
            .bind(app.groups.join(","))
            .bind(false)
            .bind(false)
            .bind(hash.as_slice())
            .bind(app.created_at.as_str())
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
        rows.iter().map(row_to_app).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing apps"))
    })
}

/// What can be changed on an existing app from the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Freeze,
    Unfreeze,
    /// Permanent: the key stops working and the app cannot be unfrozen back into use.
    Revoke,
}

/// Applies `change`; `NotFound` when no such app exists.
pub async fn change_app(store: &Store, id: &str, change: Change) -> Result<StoredApp> {
    let sql = match change {
        Change::Freeze => "UPDATE apps SET frozen = TRUE WHERE id = $1",
        Change::Unfreeze => "UPDATE apps SET frozen = FALSE WHERE id = $1",
        Change::Revoke => "UPDATE apps SET revoked = TRUE WHERE id = $1",
    };
    const SELECT: &str = concat!("SELECT ", app_columns!(), " FROM apps WHERE id = $1");
    with_pool!(store, pool => {
        let done = sqlx::query(sql).bind(id).execute(pool).await.map_err(db("changing an app"))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        let row = sqlx::query(SELECT).bind(id).fetch_one(pool).await.map_err(db("reading an app"))?;
        row_to_app(&row).map_err(db("reading an app"))
    })
}

/// Replaces an app's name, grants and/or groups (each only when given); `NotFound` when no such
/// app exists.
pub async fn update_app(
    store: &Store,
    id: &str,
    name: Option<&str>,
    grants: Option<&[String]>,
    groups: Option<&[String]>,
) -> Result<StoredApp> {
    const SELECT: &str = concat!("SELECT ", app_columns!(), " FROM apps WHERE id = $1");
    let current = with_pool!(store, pool => {
        let row = sqlx::query(SELECT).bind(id).fetch_optional(pool).await.map_err(db("reading an app"))?;
        let Some(row) = row else { return Err(Error::NotFound) };
        row_to_app(&row).map_err(db("reading an app"))?
    });
    let name = name.unwrap_or(&current.name).trim().to_owned();
    let grants = grants.map_or(current.grants, <[String]>::to_vec);
    let groups = groups.map_or(current.groups, <[String]>::to_vec);
    validate(&name, &grants, &groups)?;
    with_pool!(store, pool => {
        sqlx::query("UPDATE apps SET name = $2, grants = $3, app_groups = $4 WHERE id = $1")
            .bind(id)
            .bind(name.as_str())
            .bind(grants.join(","))
            .bind(groups.join(","))
            .execute(pool)
            .await
            .map_err(db("updating an app"))?;
        let row = sqlx::query(SELECT).bind(id).fetch_one(pool).await.map_err(db("reading an app"))?;
        row_to_app(&row).map_err(db("reading an app"))
    })
}

/// Gives the app a new key and returns it; the old key keeps working until `now + overlap`
/// (not at all when `overlap` is zero). Revoked apps cannot be rotated back into use.
pub async fn rotate_key(
    store: &Store,
    id: &str,
    overlap: Duration,
    now: time::OffsetDateTime,
) -> Result<(StoredApp, String, String)> {
    const SELECT: &str = concat!(
        "SELECT ",
        app_columns!(),
        ", key_hash FROM apps WHERE id = $1"
    );
    let key = new_api_key();
    let hash = key_hash(&key);
    let expires = format_time(now + overlap);
    let app = with_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db("rotating a key"))?;
        let row = sqlx::query(SELECT).bind(id).fetch_optional(&mut *tx).await.map_err(db("rotating a key"))?;
        let Some(row) = row else { return Err(Error::NotFound) };
        let app = row_to_app(&row).map_err(db("rotating a key"))?;
        if app.revoked {
            return Err(Error::InvalidRequest(format!("app {id} is revoked")));
        }
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
                    cache.hits.clear();
                }
                cache.misses.remove(&hash);
                cache.hits.insert(hash, (app.clone(), now));
            }
            None => {
                if cache.misses.len() >= CACHE_MAX {
                    cache.misses.clear();
                }
                cache.hits.remove(&hash);
                cache.misses.insert(hash, now);
            }
        }
        Ok(found)
    }

    /// Changes an app and forgets every cached lookup, so that this process sees the change at
    /// once (other processes within [`CACHE_TTL`]).
    pub async fn change(&self, id: &str, change: Change) -> Result<StoredApp> {
        let app = change_app(&self.store, id, change).await?;
        self.invalidate();
        Ok(app)
    }

    /// [`rotate_key`], then forgets every cached lookup (see [`Identity::change`]).
    pub async fn rotate(
        &self,
        id: &str,
        overlap: Duration,
        now: time::OffsetDateTime,
    ) -> Result<(StoredApp, String, String)> {
        let rotated = rotate_key(&self.store, id, overlap, now).await?;
        self.invalidate();
        Ok(rotated)
    }

    /// [`update_app`], then forgets every cached lookup (see [`Identity::change`]).
    pub async fn update(
        &self,
        id: &str,
        name: Option<&str>,
        grants: Option<&[String]>,
        groups: Option<&[String]>,
    ) -> Result<StoredApp> {
        let app = update_app(&self.store, id, name, grants, groups).await?;
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
