//! The audit writer's own SQLite connection, on a thread of its own, and the thread that
//! checkpoints the write-ahead log.
//!
//! Why not the pool: through sqlx every statement is a round trip to the connection's worker
//! thread (a channel send and a futex wake each way), and a batch of n events took n + 3 of them;
//! under load those hand-offs were a fifth of the server's CPU. Here a whole batch is one
//! hand-off: the thread begins (`BEGIN IMMEDIATE`, SQLite's write lock, so that another process
//! on the same file cannot interleave), reads the head inside the transaction, inserts the rows
//! with a few multi-row statements, inserts the attached rows, commits (`synchronous=FULL`: the
//! write-ahead log is on disk before anyone is acknowledged) and answers once.
//!
//! Checkpoints (copying the log back into the database file) are off this connection
//! (`wal_autocheckpoint=0`): they ran inside a commit about once a thousand pages and held up
//! every caller of that batch. A second thread runs a passive checkpoint every
//! [`CHECKPOINT_EVERY`], which never blocks the writer.
//!
//! A passive checkpoint from another connection copies the log back but never lets it start
//! over: SQLite rewinds the log only when a writer begins after *every* frame was copied, and a
//! busy writer has always appended more by then. Left alone, the log grew by every page ever
//! written (827 MB after twelve seconds of load, beside a 265 MB database). So the writer looks
//! at the log file's length after each batch, and past its limit, between two batches, copies the
//! last few frames itself; its next batch then rewinds the log, and `journal_size_limit` cuts the
//! file back to the limit. (Asked by the checkpoint thread instead, every 200 ms, the log could
//! outgrow the limit by all that a fast writer appends in 200 ms: 10 MB against a 2 MB limit.)

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::chain::Head;
use super::event::AuditEvent;
use super::store::{Attachment, NewRow, link};
use crate::error::{Error, Result};

/// How often the checkpoint thread copies the write-ahead log back into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Least time between two of the writer's own checkpoints.
const REWIND_EVERY: Duration = Duration::from_millis(50);

/// The write-ahead log's size past which the writer starts it over, by default.
pub const DEFAULT_WAL_LIMIT: u64 = 64 << 20;

/// Rows per multi-row insert, largest first: a batch is inserted in chunks of these sizes, so that
/// at most this many distinct statements are ever prepared (and stay cached).
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Columns of one audit row, in the order [`insert_sql`] names them.
const COLUMNS: &str = "seq, prev_hash, hash, canonical, time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids, packed";
const COLUMN_COUNT: usize = 15;

/// The `canonical` column of a packed row (the text is in `packed`).
const PACKED_ROW_TEXT: &str = "";

fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::Database(format!("{context}: {e}"))
}

/// Each committed event's `(seq, hash)`, in order.
type Links = Vec<(i64, Vec<u8>)>;

/// One batch for the thread, and where to send what it committed.
struct Batch {
    events: Vec<AuditEvent>,
    attached: Vec<Box<dyn Attachment>>,
    reply: oneshot::Sender<Result<Links>>,
}

/// The writer's connection thread and the checkpoint thread; both end when this is dropped.
pub(crate) struct SqliteAppender {
    batches: Option<std_mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    checkpoints: Option<(std_mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for SqliteAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteAppender")
    }
}

/// Opens a connection to `path` as the store's pool opens its own: write-ahead log (checked, as
/// the store checks it), `synchronous=FULL`, foreign keys, `busy_timeout` for the write lock;
/// when the log starts over, its file is cut back to `wal_limit` bytes.
fn open(path: &Path, busy: Duration, wal_limit: u64) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db("opening the audit connection"))?;
    conn.busy_timeout(busy)
        .map_err(db("setting the audit connection's busy timeout"))?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {wal_limit};"
    ))
    .map_err(db("configuring the audit connection"))?;
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(db("reading journal_mode"))?;
    let synchronous: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(db("reading synchronous"))?;
    if !journal.eq_ignore_ascii_case("wal") || synchronous != 2 {
        return Err(Error::Config(format!(
            "the audit connection must run with journal_mode=WAL and synchronous=FULL, but it reports journal_mode={journal} synchronous={synchronous}"
        )));
    }
    Ok(conn)
}

impl SqliteAppender {
    /// Starts the two threads on the database file at `path` (the store's own file, already
    /// migrated). `busy` bounds each wait for SQLite's write lock; `wal_limit` is the log's
    /// size, in bytes, past which the writer starts it over.
    pub fn start(path: PathBuf, busy: Duration, wal_limit: u64) -> Result<SqliteAppender> {
        let conn = open(&path, busy, wal_limit)?;
        let wal = wal_path(&path);
        let (batches, rx) = std_mpsc::channel::<Batch>();
        let thread = std::thread::Builder::new()
            .name("parapet-audit-sqlite".to_owned())
            .spawn(move || {
                let mut conn = conn;
                let mut last_rewind: Option<Instant> = None;
                while let Ok(batch) = rx.recv() {
                    let result = commit(&mut conn, &batch.events, &batch.attached);
                    let _ = batch.reply.send(result);
                    // One `stat` per batch. Past the limit, this connection copies the frames the
                    // checkpoint thread has not yet copied, so that its next batch starts the log
                    // over; at most once per REWIND_EVERY, in case a reader's snapshot holds the
                    // log and the copy cannot let it start over yet.
                    let due = last_rewind.is_none_or(|t| t.elapsed() >= REWIND_EVERY);
                    if due && wal_len(&wal) > wal_limit {
                        checkpoint(&conn);
                        last_rewind = Some(Instant::now());
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("starting the audit thread: {e}")))?;
        let checkpoint_conn = open(&path, busy, wal_limit)?;
        let (stop, stopped) = std_mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("parapet-wal-checkpoint".to_owned())
            .spawn(move || {
                while let Err(std_mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    checkpoint(&checkpoint_conn);
                }
            })
            .map_err(|e| Error::Internal(format!("starting the checkpoint thread: {e}")))?;
        Ok(SqliteAppender {
            batches: Some(batches),
            thread: Some(thread),
            checkpoints: Some((stop, checkpointer)),
        })
    }

    /// Appends `events` after the head, with `attached` in the same transaction; each event's
    /// `(seq, hash)` once the transaction has committed.
    pub async fn append(
        &self,
        events: Vec<AuditEvent>,
        attached: Vec<Box<dyn Attachment>>,
    ) -> Result<Links> {
        let (reply, answer) = oneshot::channel();
        self.batches
            .as_ref()
            .ok_or(Error::AuditUnavailable)?
            .send(Batch {
                events,
                attached,
                reply,
            })
            .map_err(|_| Error::AuditUnavailable)?;
        answer.await.map_err(|_| Error::AuditUnavailable)?
    }
}

impl Drop for SqliteAppender {
    fn drop(&mut self) {
        // Closing the channels ends both loops; a batch in flight finishes first.
        self.batches.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.checkpoints.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// SQLite's write-ahead log beside the database file at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The log file's length; past the limit only when frames were appended past it since the log
/// last started over (`journal_size_limit` cuts the file back to the limit then).
fn wal_len(wal: &Path) -> u64 {
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// A passive checkpoint on `conn` (it never waits for the writer). A failure is logged; the next
/// one tries again.
fn checkpoint(conn: &Connection) {
    if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
    {
        tracing::warn!(%error, "checkpointing the SQLite write-ahead log failed");
    }
}

/// The insert statement of each chunk size, built once.
static INSERTS: std::sync::LazyLock<[String; CHUNKS.len()]> =
    std::sync::LazyLock::new(|| CHUNKS.map(insert_sql));

/// `INSERT INTO audit_events (…) VALUES (?, …), …` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; COLUMN_COUNT].join(", "));
    format!(
        "INSERT INTO audit_events ({COLUMNS}) VALUES {}",
        vec![one.as_str(); rows].join(", ")
    )
}

/// The newest event's link, else the archive point's, else genesis (inside the transaction).
fn read_head(conn: &Connection) -> rusqlite::Result<Head> {
    let link = |sql: &str| {
        conn.prepare_cached(sql)?
            .query_row([], |r| {
                Ok(Head {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            })
            .optional()
    };
    match link(super::store::SELECT_HEAD)? {
        Some(head) => Ok(head),
        None => Ok(link(super::store::SELECT_ARCHIVE_POINT)?.unwrap_or_else(Head::genesis)),
    }
}

fn insert_rows(conn: &Connection, rows: &[NewRow]) -> rusqlite::Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        // The last size is 1, so some chunk always fits.
        let Some((size, sql)) = CHUNKS
            .iter()
            .zip(INSERTS.iter())
            .find(|(c, _)| **c <= rest.len())
        else {
            break;
        };
        let (chunk, tail) = rest.split_at(*size);
        let mut statement = conn.prepare_cached(sql)?;
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(size * COLUMN_COUNT);
        for r in chunk {
            values.extend_from_slice(&[
                &r.seq,
                &r.prev_hash,
                &r.hash,
                &PACKED_ROW_TEXT,
                &r.cols.time,
                &r.cols.request_id,
                &r.cols.kind,
                &r.cols.app,
                &r.cols.wallet,
                &r.cols.action,
                &r.cols.decision,
                &r.cols.digest,
                &r.cols.policy_version,
                &r.cols.policy_ids,
                &r.packed,
            ]);
        }
        statement.execute(values.as_slice())?;
        rest = tail;
    }
    Ok(())
}

/// One batch, one transaction.
fn commit(
    conn: &mut Connection,
    events: &[AuditEvent],
    attached: &[Box<dyn Attachment>],
) -> Result<Links> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("beginning a batch"))?;
    let head = read_head(&tx).map_err(db("reading the head"))?;
    let rows = link(&head, events)?;
    insert_rows(&tx, &rows).map_err(db("inserting events"))?;
    for a in attached {
        a.insert_sqlite(&tx)?;
    }
    tx.commit().map_err(db("committing a batch"))?;
    Ok(rows.into_iter().map(|r| (r.seq, r.hash)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_row_insert_names_every_column_once_per_row() {
        let sql = insert_sql(3);
        assert_eq!(sql.matches('?').count(), 3 * COLUMN_COUNT);
        assert_eq!(COLUMNS.split(", ").count(), COLUMN_COUNT);
        assert_eq!(sql.matches("), (").count(), 2);
    }

    #[test]
    fn chunks_cover_every_batch_size() {
        for n in 1..=600usize {
            let mut rest = n;
            let mut statements = 0;
            while rest > 0 {
                let size = CHUNKS.iter().copied().find(|&c| c <= rest).unwrap_or(1);
                rest -= size;
                statements += 1;
            }
            assert!(statements <= n.div_ceil(64) + 6, "{n}: {statements}");
        }
    }
}
