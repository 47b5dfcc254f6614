//! The append-only audit log (docs/architecture.md §7): every decision is committed here before it
//! is answered. Events are hash-chained (`hash = SHA-256(prev_hash ‖ canonical)`), stored in
//! SQLite or PostgreSQL behind database-enforced append-only triggers, committed by one
//! group-committing writer per process, checkpointed with a signature outside the database,
//! and readable back for query, export, verification and replay.

pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod export;
pub mod flood;
mod jcs;
mod packing;
pub mod query;
pub mod record;
pub mod replay;
mod sqlite_appender;
pub mod store;
pub mod verify;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

pub use chain::{GENESIS, Head, StoredEvent};
pub use checkpoint::{Checkpoint, CheckpointSigner, FileSigner};
pub use event::{AuditEvent, EventKind, Limited, PolicyRef, Refusal};
pub use query::{Cursor, Filter};
pub use store::{Backend, PolicyVersion, Store, StoreOptions};
pub use writer::{Health, WriterOptions};

use crate::clock::SharedClock;
use crate::error::{Error, Result};

/// Where an event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: i64,
    pub hash: Vec<u8>,
}

/// What readiness reports about the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditStatus {
    pub up: bool,
    pub backend: &'static str,
    /// The newest sequence number this process committed or saw; decimal string.
    pub head_seq: String,
}

/// How many aggregated refusal events a flush hands the writer at once.
const FLOOD_FLUSH_CHUNK: usize = 1_000;

/// The running audit log of one process: the store plus its writer task.
#[derive(Debug)]
pub struct AuditLog {
    store: Store,
    tx: mpsc::Sender<writer::Job>,
    health: Arc<Health>,
    append_timeout: Duration,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    flood: Arc<flood::Aggregator>,
    /// One flush at a time: the last flush at shutdown waits for a periodic one in flight, so
    /// that counts it had to put back are written rather than left behind.
    flush_lock: tokio::sync::Mutex<()>,
    /// Policy versions known to be stored, so that the check before each decision is a lookup.
    recorded_versions: Mutex<std::collections::HashSet<String>>,
}

impl AuditLog {
    /// Starts the writer over an open store. Must run inside a Tokio runtime.
    pub async fn start(
        store: Store,
        opts: WriterOptions,
        signer: Option<Arc<dyn CheckpointSigner>>,
        clock: SharedClock,
    ) -> Result<AuditLog> {
        let head = store.head().await?;
        let health = Arc::new(Health::default());
        health.note_head(head.seq);
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let append_timeout = opts.append_timeout;
        let w = writer::Writer {
            appender: writer::Appender::for_store(&store, append_timeout, opts.wal_limit)?,
            store: store.clone(),
            rx,
            opts,
            health: health.clone(),
            signer,
            clock,
        };
        let handle = tokio::spawn(w.run(stop_rx));
        Ok(AuditLog {
            store,
            tx,
            health,
            append_timeout,
            stop: Mutex::new(Some((stop_tx, handle))),
            flood: Arc::new(flood::Aggregator::default()),
            flush_lock: tokio::sync::Mutex::new(()),
            recorded_versions: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Commits one event and returns where it landed. Fails with
    /// [`Error::AuditUnavailable`] when it cannot be committed within the configured timeout;
    /// the caller must then not act on (or return) the decision.
    pub async fn append(&self, event: AuditEvent) -> Result<Appended> {
        self.append_with(event, None).await
    }

    /// [`AuditLog::append`], committing `attached` in the same transaction as the event.
    pub async fn append_with(
        &self,
        event: AuditEvent,
        attached: Option<Box<dyn store::Attachment>>,
    ) -> Result<Appended> {
        let (ack, rx) = oneshot::channel();
        let job = writer::Job {
            event,
            attached,
            ack,
        };
        let wait = async {
            self.tx
                .send(job)
                .await
                .map_err(|_| Error::AuditUnavailable)?;
            rx.await.map_err(|_| Error::AuditUnavailable)?
        };
        match tokio::time::timeout(self.append_timeout, wait).await {
            Ok(Ok((seq, hash))) => Ok(Appended { seq, hash }),
            Ok(Err(_)) | Err(_) => Err(Error::AuditUnavailable),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// For `/readyz`.
    pub fn status(&self) -> AuditStatus {
        AuditStatus {
            up: self.health.is_up(),
            backend: self.store.backend().as_str(),
            head_seq: self.health.head_seq().to_string(),
        }
    }

    /// Counts one refusal a flood can cause; see [`flood::Aggregator`].
    pub fn note_flood(&self, key: &str, reason: &str, now: time::OffsetDateTime) {
        self.flood.note(key, reason, now);
    }

    pub fn flood(&self) -> &Arc<flood::Aggregator> {
        &self.flood
    }

    /// Makes sure the policy-set version a decision is about to cite is stored with its files.
    /// Cheap after the first call per version; fails (and the decision with it) when the store
    /// cannot take it, so no event ever cites a version the store lacks.
    pub async fn ensure_policy_version(
        &self,
        version: &str,
        files: &[(String, Vec<u8>)],
        now: time::OffsetDateTime,
    ) -> Result<()> {
        if self.recorded_versions.lock().contains(version) {
            return Ok(());
        }
        let stored = tokio::time::timeout(
            self.append_timeout,
            self.store.record_policy_version(version, files, now),
        )
        .await;
        match stored {
            Ok(Ok(_)) => {
                self.recorded_versions.lock().insert(version.to_owned());
                Ok(())
            }
            Ok(Err(error)) => {
                tracing::error!(%error, %version, "storing the policy version failed");
                Err(Error::AuditUnavailable)
            }
            Err(_) => Err(Error::AuditUnavailable),
        }
    }

    /// Writes the aggregated flood events of minutes that are over, every `every`, until the
    /// log shuts down; counts that cannot be written are kept for the next round.
    pub fn spawn_flood_flusher(self: &Arc<Self>, clock: SharedClock, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(log) = weak.upgrade() else { break };
                if log.stop.lock().is_none() {
                    break;
                }
                log.flush_flood(clock.now(), false).await;
            }
        });
    }

    /// Appends the flood buckets whose minute is over (all of them with `all`).
    pub async fn flush_flood(&self, now: time::OffsetDateTime, all: bool) {
        let _one_at_a_time = self.flush_lock.lock().await;
        let events = self.flood.drain(now, all);
        // Submitted together, a chunk at a time, so that the writer group-commits them: one
        // commit per event would take minutes for the 10,000 buckets a wide flood leaves.
        let mut failed = Vec::new();
        for chunk in events.chunks(FLOOD_FLUSH_CHUNK) {
            let results =
                futures_util::future::join_all(chunk.iter().map(|e| self.append(e.clone()))).await;
            failed.extend(
                chunk
                    .iter()
                    .zip(results)
                    .filter(|(_, r)| r.is_err())
                    .map(|(e, _)| e.clone()),
            );
        }
        if !failed.is_empty() {
            self.flood.restore(&failed);
            tracing::warn!(
                events = failed.len(),
                "could not write aggregated refusals; kept for the next flush"
            );
        }
    }

    /// Prometheus lines about the writer: batches, events, commit latency, checkpoints, state.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let h = &self.health;
        let batches = h.batches.load(Relaxed);
        let _ = write!(
            out,
            "# HELP parapet_audit_events_total Audit events committed.\n# TYPE parapet_audit_events_total counter\nparapet_audit_events_total {}\n\
             # HELP parapet_audit_batches_total Audit batches by result.\n# TYPE parapet_audit_batches_total counter\nparapet_audit_batches_total{{result=\"ok\"}} {batches}\nparapet_audit_batches_total{{result=\"failed\"}} {}\n\
             # HELP parapet_audit_batch_largest Largest audit batch committed.\n# TYPE parapet_audit_batch_largest gauge\nparapet_audit_batch_largest {}\n\
             # HELP parapet_audit_commit_seconds_total Time spent committing audit batches.\n# TYPE parapet_audit_commit_seconds_total counter\nparapet_audit_commit_seconds_total {}\n\
             # HELP parapet_audit_checkpoints_total Signed checkpoints by result.\n# TYPE parapet_audit_checkpoints_total counter\nparapet_audit_checkpoints_total{{result=\"ok\"}} {}\nparapet_audit_checkpoints_total{{result=\"failed\"}} {}\n\
             # HELP parapet_audit_up Whether the audit store accepts commits.\n# TYPE parapet_audit_up gauge\nparapet_audit_up {}\n",
            h.committed.load(Relaxed),
            h.failed_batches.load(Relaxed),
            h.largest_batch.load(Relaxed),
            h.commit_micros.load(Relaxed) as f64 / 1e6,
            h.checkpoints.load(Relaxed),
            h.checkpoint_failures.load(Relaxed),
            u8::from(h.is_up()),
        );
    }

    /// Stops accepting events, commits what is queued, writes a last checkpoint.
    pub async fn shutdown(&self) {
        let stop = self.stop.lock().take();
        if let Some((tx, handle)) = stop {
            let _ = tx.send(());
            let _ = handle.await;
        }
    }
}

/// Opens the store named by `database_url` and starts its writer.
pub async fn open(
    database_url: &str,
    store_opts: &StoreOptions,
    opts: WriterOptions,
    signer: Option<Arc<dyn CheckpointSigner>>,
    clock: SharedClock,
) -> Result<AuditLog> {
    let store = Store::open(database_url, store_opts).await?;
    AuditLog::start(store, opts, signer, clock).await
}
