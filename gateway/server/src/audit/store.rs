//! The audit log's statements on the store ([`crate::store`]), SQLite or PostgreSQL. The SQL is
//! shared where the two dialects agree; the few statements that differ (transaction start, the
//! chain lock, batch insert, substring search, the archive path) are written out per database.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::chain::{Head, StoredEvent, link_hash};
use super::event::{AuditEvent, IndexColumns, format_time};
use super::packing;
use super::query::BoundFilter;
use crate::error::{Error, Result};
use crate::store::db::{BeginWrite, with_pool};
pub use crate::store::{Backend, Store, StoreOptions};

/// The transaction-level advisory lock every batch takes on PostgreSQL, so that replicas append
/// to one chain ("parapet" and the format version).
pub const CHAIN_LOCK_KEY: i64 = 0x7061_7261_7065_7401;

/// Reads the head inside the caller's transaction: the newest event, else the archive point,
/// else genesis. A macro because the two reads must reborrow one connection.
macro_rules! read_head {
    ($conn:expr) => {{
        let newest = sqlx::query(SELECT_HEAD)
            .fetch_optional($conn)
            .await
            .map_err(db("reading the head"))?;
        match newest {
            Some(r) => Head {
                seq: r.try_get("seq").map_err(db("reading the head"))?,
                hash: r.try_get("hash").map_err(db("reading the head"))?,
            },
            None => match sqlx::query(SELECT_ARCHIVE_POINT)
                .fetch_optional($conn)
                .await
                .map_err(db("reading the archive point"))?
            {
                Some(r) => Head {
                    seq: r.try_get("up_to_seq").map_err(db("reading the head"))?,
                    hash: r.try_get("head_hash").map_err(db("reading the head"))?,
                },
                None => Head::genesis(),
            },
        }
    }};
}

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::Database(format!("{context}: {e}"))
}

/// One row about to be inserted.
pub(crate) struct NewRow {
    pub seq: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    /// The row's `packed` column ([`super::packing`]); its `canonical` column is left empty.
    pub packed: Vec<u8>,
    pub cols: IndexColumns,
}

/// Gives `events` the sequence numbers after `head` and links them.
pub(crate) fn link(head: &Head, events: &[AuditEvent]) -> Result<Vec<NewRow>> {
    let mut prev = head.hash.clone();
    let mut seq = head.seq;
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let canonical = e.canonical(seq)?;
        let hash = link_hash(&prev, &canonical).to_vec();
        let packed = packing::pack(&canonical).map_err(|e| Error::Internal(e.to_string()))?;
        rows.push(NewRow {
            seq,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
            packed,
            cols: IndexColumns::from_event(e),
        });
    }
    Ok(rows)
}

pub(crate) const SELECT_HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
pub(crate) const SELECT_ARCHIVE_POINT: &str =
    "SELECT up_to_seq, head_hash FROM audit_archives ORDER BY up_to_seq DESC LIMIT 1";
const INSERT_ONE: &str = "INSERT INTO audit_events (seq, prev_hash, hash, canonical, time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids, packed) VALUES ($1, $2, $3, '', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const INSERT_UNNEST: &str = "INSERT INTO audit_events (seq, prev_hash, hash, canonical, time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids, packed) SELECT seq, prev_hash, hash, '', time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids, packed FROM UNNEST($1::int8[], $2::bytea[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[]) AS r(seq, prev_hash, hash, time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids, packed)";
const SELECT_RANGE: &str = "SELECT seq, prev_hash, hash, canonical, packed FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2";
const SELECT_RANGE_WITH_COLUMNS: &str = "SELECT seq, prev_hash, hash, canonical, packed, time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2";
const FILTER_SQLITE: &str = "SELECT seq, prev_hash, hash, canonical, packed FROM audit_events WHERE seq > $1 AND ($2 IS NULL OR time >= $2) AND ($3 IS NULL OR time < $3) AND ($4 IS NULL OR app = $4) AND ($5 IS NULL OR wallet = $5) AND ($6 IS NULL OR action = $6) AND ($7 IS NULL OR decision = $7) AND ($8 IS NULL OR kind = $8) AND ($9 IS NULL OR instr(policy_ids, $9) > 0) AND ($10 IS NULL OR digest = $10) AND ($11 IS NULL OR request_id = $11) ORDER BY seq LIMIT $12";
const FILTER_POSTGRES: &str = "SELECT seq, prev_hash, hash, canonical, packed FROM audit_events WHERE seq > $1 AND ($2::text IS NULL OR time >= $2) AND ($3::text IS NULL OR time < $3) AND ($4::text IS NULL OR app = $4) AND ($5::text IS NULL OR wallet = $5) AND ($6::text IS NULL OR action = $6) AND ($7::text IS NULL OR decision = $7) AND ($8::text IS NULL OR kind = $8) AND ($9::text IS NULL OR strpos(policy_ids, $9) > 0) AND ($10::text IS NULL OR digest = $10) AND ($11::text IS NULL OR request_id = $11) ORDER BY seq LIMIT $12";
const SELECT_BY_SEQ: &str =
    "SELECT seq, prev_hash, hash, canonical, packed FROM audit_events WHERE seq = $1";
const SELECT_BY_REQUEST: &str = "SELECT seq, prev_hash, hash, canonical, packed FROM audit_events WHERE request_id = $1 ORDER BY seq LIMIT 1";

/// A row with its derived columns, for `verify`.
#[derive(Debug, Clone)]
pub struct RowWithColumns {
    pub event: StoredEvent,
    pub cols: IndexColumns,
}

fn stored<R: Row>(r: &R) -> std::result::Result<StoredEvent, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<Vec<u8>>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let seq: i64 = r.try_get("seq")?;
    let text: String = r.try_get("canonical")?;
    let packed: Option<Vec<u8>> = r.try_get("packed")?;
    Ok(StoredEvent {
        seq,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
        canonical: canonical_text(seq, text, packed.as_deref()),
    })
}

/// A row's canonical text: its `canonical` column when not empty (rows from before packing, or
/// text written beside a packing), else its packing unpacked. A packing that does not unpack
/// reads as empty text, whose hash cannot match: `verify` names the row instead of stopping.
pub(crate) fn canonical_text(seq: i64, text: String, packed: Option<&[u8]>) -> String {
    match packed {
        Some(p) if text.is_empty() => packing::unpack(p).unwrap_or_else(|error| {
            tracing::warn!(seq, %error, "an audit row's packing does not unpack");
            String::new()
        }),
        _ => text,
    }
}

fn columns<R: Row>(r: &R) -> std::result::Result<IndexColumns, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(IndexColumns {
        time: r.try_get("time")?,
        request_id: r.try_get("request_id")?,
        kind: r.try_get("kind")?,
        app: r.try_get("app")?,
        wallet: r.try_get("wallet")?,
        action: r.try_get("action")?,
        decision: r.try_get("decision")?,
        digest: r.try_get("digest")?,
        policy_version: r.try_get("policy_version")?,
        policy_ids: r.try_get("policy_ids")?,
    })
}

/// One policy-set version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub version: String,
    /// RFC 8785 JSON of `[[path, sha256_hex], …]` sorted by path.
    pub manifest: String,
    pub first_active: String,
    pub files: Vec<(String, Vec<u8>)>,
}

/// The manifest of a policy set: `[[relative_path, sha256_hex(content)], …]` sorted by path, in
/// RFC 8785 form (docs/architecture.md §3); its SHA-256 is the policy-set version.
pub fn policy_manifest(files: &[(String, Vec<u8>)]) -> Result<(String, Vec<(String, String)>)> {
    let mut entries: Vec<(String, String)> = files
        .iter()
        .map(|(p, c)| (p.clone(), hex::encode(Sha256::digest(c))))
        .collect();
    entries.sort();
    let manifest = serde_json_canonicalizer::to_string(&entries)
        .map_err(|e| Error::Internal(format!("canonicalising a manifest: {e}")))?;
    Ok((manifest, entries))
}

impl Store {
    /// Whether a batch could commit now: takes what a batch takes (SQLite's write lock, the
    /// PostgreSQL chain lock) and rolls back. A plain `SELECT 1` would answer while writes are
    /// blocked, and readiness would lie.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Sqlite(pool) => {
                let tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db("probe"))?;
                tx.rollback().await.map_err(db("probe"))?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(db("probe"))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CHAIN_LOCK_KEY)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("probe"))?;
                tx.rollback().await.map_err(db("probe"))?;
            }
        }
        Ok(())
    }

    /// Appends `events` after the current head in one transaction and returns each one's
    /// `(seq, hash)`: the command line's way into the chain (a running gateway's events go
    /// through its writer, `audit::writer`). On PostgreSQL the transaction first takes the
    /// chain's advisory lock, so that batches from several processes serialise on one chain; on
    /// SQLite `BEGIN IMMEDIATE` takes the write lock before the head is read.
    pub async fn append_batch(&self, events: &[AuditEvent]) -> Result<Vec<(i64, Vec<u8>)>> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db("beginning a batch"))?;
                let head = read_head!(&mut *tx);
                let rows = link(&head, events)?;
                for r in &rows {
                    bind_row(sqlx::query(INSERT_ONE), r)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("inserting an event"))?;
                }
                tx.commit().await.map_err(db("committing a batch"))?;
                Ok(rows.into_iter().map(|r| (r.seq, r.hash)).collect())
            }
            Store::Postgres(pool) => append_postgres(pool, events, &[]).await,
        }
    }

    /// The newest link (or the archive point, or genesis).
    pub async fn head(&self) -> Result<Head> {
        with_pool!(self, pool => {
            let mut conn = pool.acquire().await.map_err(db("acquiring a connection"))?;
            Ok(read_head!(&mut *conn))
        })
    }

    /// Where an archived prefix ended, if a prefix was archived.
    pub async fn archive_point(&self) -> Result<Option<Head>> {
        with_pool!(self, pool => {
            let row = sqlx::query(SELECT_ARCHIVE_POINT)
                .fetch_optional(pool)
                .await
                .map_err(db("reading the archive point"))?;
            row.map(|r| Ok(Head { seq: r.try_get("up_to_seq")?, hash: r.try_get("head_hash")? }))
                .transpose()
                .map_err(db("reading the archive point"))
        })
    }

    /// Up to `limit` events with `seq > after`, in order.
    pub async fn range(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(SELECT_RANGE)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db("reading events"))?;
            rows.iter().map(stored).collect::<std::result::Result<Vec<_>, _>>().map_err(db("reading events"))
        })
    }

    /// Like [`Store::range`], with the derived filter columns as stored.
    pub async fn range_with_columns(&self, after: i64, limit: u32) -> Result<Vec<RowWithColumns>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(SELECT_RANGE_WITH_COLUMNS)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db("reading events"))?;
            rows.iter()
                .map(|r| Ok(RowWithColumns { event: stored(r)?, cols: columns(r)? }))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db("reading events"))
        })
    }

    /// Up to `limit` events after `after` that match `f`, in order.
    pub(crate) async fn filtered(
        &self,
        f: &BoundFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        macro_rules! run {
            ($pool:expr, $sql:expr) => {{
                let rows = sqlx::query($sql)
                    .bind(after)
                    .bind(f.from.as_deref())
                    .bind(f.to.as_deref())
                    .bind(f.app.as_deref())
                    .bind(f.wallet.as_deref())
                    .bind(f.action.as_deref())
                    .bind(f.decision.as_deref())
                    .bind(f.kind.as_deref())
                    .bind(f.policy_needle.as_deref())
                    .bind(f.digest.as_deref())
                    .bind(f.request_id.as_deref())
                    .bind(i64::from(limit))
                    .fetch_all($pool)
                    .await
                    .map_err(db("querying events"))?;
                rows.iter()
                    .map(stored)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(db("querying events"))
            }};
        }
        match self {
            Store::Sqlite(pool) => run!(pool, FILTER_SQLITE),
            Store::Postgres(pool) => run!(pool, FILTER_POSTGRES),
        }
    }

    pub async fn by_seq(&self, seq: i64) -> Result<Option<StoredEvent>> {
        with_pool!(self, pool => {
            let row = sqlx::query(SELECT_BY_SEQ).bind(seq).fetch_optional(pool).await.map_err(db("reading an event"))?;
            row.as_ref().map(stored).transpose().map_err(db("reading an event"))
        })
    }

    pub async fn by_request_id(&self, request_id: &str) -> Result<Option<StoredEvent>> {
        with_pool!(self, pool => {
            let row = sqlx::query(SELECT_BY_REQUEST).bind(request_id).fetch_optional(pool).await.map_err(db("reading an event"))?;
            row.as_ref().map(stored).transpose().map_err(db("reading an event"))
        })
    }

    /// Records a policy-set version and its files (content-addressed; storing a version again
    /// is a no-op). Returns the manifest.
    pub async fn record_policy_version(
        &self,
        version: &str,
        files: &[(String, Vec<u8>)],
        now: time::OffsetDateTime,
    ) -> Result<String> {
        let (manifest, entries) = policy_manifest(files)?;
        let first_active = format_time(now);
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db("storing a policy version"))?;
            for ((_, content), (_, sha)) in sorted_files(files).iter().zip(entries.iter()) {
                sqlx::query("INSERT INTO policy_blobs (sha256, content) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING")
                    .bind(sha.as_str())
                    .bind(content.as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("storing a policy file"))?;
            }
            sqlx::query("INSERT INTO policy_versions (version, manifest, first_active) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING")
                .bind(version)
                .bind(manifest.as_str())
                .bind(first_active.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db("storing a policy version"))?;
            tx.commit().await.map_err(db("storing a policy version"))?;
        });
        Ok(manifest)
    }

    /// Every stored policy-set version, oldest first (without file contents).
    pub async fn policy_versions(&self) -> Result<Vec<(String, String)>> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT version, first_active FROM policy_versions ORDER BY first_active, version")
                .fetch_all(pool)
                .await
                .map_err(db("listing policy versions"))?;
            rows.iter()
                .map(|r| Ok((r.try_get("version")?, r.try_get("first_active")?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db("listing policy versions"))
        })
    }

    /// The exact files of a stored policy-set version.
    pub async fn policy_version(&self, version: &str) -> Result<Option<PolicyVersion>> {
        with_pool!(self, pool => {
            let Some(row) = sqlx::query("SELECT manifest, first_active FROM policy_versions WHERE version = $1")
                .bind(version)
                .fetch_optional(pool)
                .await
                .map_err(db("reading a policy version"))?
            else {
                return Ok(None);
            };
            let manifest: String = row.try_get("manifest").map_err(db("reading a policy version"))?;
            let first_active: String = row.try_get("first_active").map_err(db("reading a policy version"))?;
            let entries: Vec<(String, String)> = serde_json::from_str(&manifest)
                .map_err(|e| Error::Database(format!("policy manifest of {version}: {e}")))?;
            let mut files = Vec::with_capacity(entries.len());
            for (path, sha) in entries {
                let content: Vec<u8> = sqlx::query_scalar("SELECT content FROM policy_blobs WHERE sha256 = $1")
                    .bind(sha.as_str())
                    .fetch_optional(pool)
                    .await
                    .map_err(db("reading a policy file"))?
                    .ok_or_else(|| Error::Database(format!("policy file {path} ({sha}) is missing")))?;
                if hex::encode(Sha256::digest(&content)) != sha {
                    return Err(Error::Database(format!("policy file {path} does not match its hash {sha}")));
                }
                files.push((path, content));
            }
            Ok(Some(PolicyVersion { version: version.to_owned(), manifest, first_active, files }))
        })
    }

    /// The privileged archive path: records `up_to` (which must be an event in the store) as
    /// the archive point and deletes every event at or below it, in one transaction. On
    /// PostgreSQL this calls `parapet_audit_archive`, which only an archive role may execute.
    pub async fn archive_prefix(&self, up_to: &Head, now: time::OffsetDateTime) -> Result<u64> {
        let at = format_time(now);
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db("archiving"))?;
                sqlx::query("INSERT INTO audit_archives (up_to_seq, head_hash, archived_at) VALUES ($1, $2, $3)")
                    .bind(up_to.seq)
                    .bind(up_to.hash.as_slice())
                    .bind(at.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("recording the archive point"))?;
                let done = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
                    .bind(up_to.seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("removing the archived prefix"))?;
                tx.commit().await.map_err(db("archiving"))?;
                Ok(done.rows_affected())
            }
            Store::Postgres(pool) => {
                let removed: i64 = sqlx::query_scalar("SELECT parapet_audit_archive($1, $2, $3)")
                    .bind(up_to.seq)
                    .bind(up_to.hash.as_slice())
                    .bind(at.as_str())
                    .fetch_one(pool)
                    .await
                    .map_err(db("archiving"))?;
                Ok(u64::try_from(removed).unwrap_or(0))
            }
        }
    }
}

fn sorted_files(files: &[(String, Vec<u8>)]) -> Vec<&(String, Vec<u8>)> {
    let mut v: Vec<&(String, Vec<u8>)> = files.iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn bind_row<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    r: &NewRow,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    i64: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Vec<u8>: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.bind(r.seq)
        .bind(r.prev_hash.clone())
        .bind(r.hash.clone())
        .bind(r.cols.time.clone())
        .bind(r.cols.request_id.clone())
        .bind(r.cols.kind.clone())
        .bind(r.cols.app.clone())
        .bind(r.cols.wallet.clone())
        .bind(r.cols.action.clone())
        .bind(r.cols.decision.clone())
        .bind(r.cols.digest.clone())
        .bind(r.cols.policy_version.clone())
        .bind(r.cols.policy_ids.clone())
        .bind(r.packed.clone())
}

/// [`Store::append_batch`] on PostgreSQL, also inserting `attached` rows in the same
/// transaction: a signing request (its velocity reservation) commits with its decision's event
/// or not at all.
pub(crate) async fn append_postgres(
    pool: &sqlx::PgPool,
    events: &[AuditEvent],
    attached: &[&dyn Attachment],
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut tx = pool.begin().await.map_err(db("beginning a batch"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(db("taking the chain lock"))?;
    let head = read_head!(&mut *tx);
    let rows = link(&head, events)?;
    let col = |f: fn(&NewRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(INSERT_UNNEST)
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<i64>>())
        .bind(
            rows.iter()
                .map(|r| r.prev_hash.clone())
                .collect::<Vec<Vec<u8>>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.hash.clone())
                .collect::<Vec<Vec<u8>>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.cols.time.clone())
                .collect::<Vec<String>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.cols.request_id.clone())
                .collect::<Vec<String>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.cols.kind.clone())
                .collect::<Vec<String>>(),
        )
        .bind(col(|r| r.cols.app.clone()))
        .bind(col(|r| r.cols.wallet.clone()))
        .bind(col(|r| r.cols.action.clone()))
        .bind(col(|r| r.cols.decision.clone()))
        .bind(col(|r| r.cols.digest.clone()))
        .bind(col(|r| r.cols.policy_version.clone()))
        .bind(
            rows.iter()
                .map(|r| r.cols.policy_ids.clone())
                .collect::<Vec<String>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.packed.clone())
                .collect::<Vec<Vec<u8>>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(db("inserting a batch"))?;
    for a in attached {
        a.insert_postgres(&mut tx).await?;
    }
    tx.commit().await.map_err(db("committing a batch"))?;
    Ok(rows.into_iter().map(|r| (r.seq, r.hash)).collect())
}

/// A transaction's future, as [`Attachment`]'s methods return it.
pub type TxFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// A row that must commit together with an audit event, in the event's transaction (a signing
/// request's reservation commits with its decision or not at all). The audit log knows nothing of
/// what it is: the module that owns the row writes it, for each backend.
pub trait Attachment: std::fmt::Debug + Send + Sync {
    /// Inserts the row on the audit writer's own SQLite connection, inside its transaction
    /// (`audit::sqlite_appender`).
    fn insert_sqlite(&self, conn: &rusqlite::Connection) -> Result<()>;
    fn insert_postgres<'a>(&'a self, conn: &'a mut sqlx::PgConnection) -> TxFuture<'a>;
}
