//! The one writer task per process: it sequences events and commits them in batches (group
//! commit). A caller is acknowledged only after the batch holding its event has committed, so
//! an acknowledged event survives a crash; a caller that waited longer than the configured
//! timeout gets [`Error::AuditUnavailable`] and must not act on its decision.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::chain::Head;
use super::checkpoint::{self, Checkpoint, CheckpointSigner};
use super::event::AuditEvent;
use super::store::Store;
use crate::clock::SharedClock;
use crate::error::{Error, Result};

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Longest a caller waits for its event to commit before it gets `audit_unavailable`.
    pub append_timeout: Duration,
    /// Most events in one transaction.
    pub max_batch: usize,
    /// Events waiting for the writer before callers are turned away.
    pub queue: usize,
    /// A checkpoint after this many events…
    pub checkpoint_every: u64,
    /// …or this long after the previous one, whichever comes first (only when events arrived).
    pub checkpoint_interval: Duration,
    /// The checkpoint file; `None` writes none.
    pub checkpoint_file: Option<PathBuf>,
    /// How often an idle writer checks that the store still answers (readiness).
    pub probe_interval: Duration,
    /// SQLite: the write-ahead log's size, in bytes, past which the writer starts it over
    /// ([`super::sqlite_appender`]); the file is also cut back to this size when it does.
    pub wal_limit: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            append_timeout: Duration::from_secs(2),
            max_batch: 512,
            queue: 65_536,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_file: None,
            probe_interval: Duration::from_secs(1),
            wal_limit: super::sqlite_appender::DEFAULT_WAL_LIMIT,
        }
    }
}

/// The store's state as the writer last saw it.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    /// Sequence number of the newest event this process committed or saw.
    head_seq: AtomicI64,
    pub committed: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    /// Sum of batch commit latencies, in microseconds.
    pub commit_micros: AtomicU64,
    pub largest_batch: AtomicU64,
}

impl Health {
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }
    pub fn head_seq(&self) -> i64 {
        self.head_seq.load(Ordering::Relaxed)
    }
    pub(crate) fn note_head(&self, seq: i64) {
        self.head_seq.fetch_max(seq, Ordering::Relaxed);
    }
    fn set_up(&self, up: bool) {
        let was_down = self.down.swap(!up, Ordering::Relaxed);
        if up && was_down {
            tracing::info!("audit store is back; accepting decisions again");
        } else if !up && !was_down {
            tracing::error!(
                "audit store unavailable; decisions fail closed with 503 audit_unavailable"
            );
        }
    }
}

pub(crate) struct Job {
    pub event: AuditEvent,
    pub attached: Option<Box<dyn super::store::Attachment>>,
    pub ack: oneshot::Sender<Result<(i64, Vec<u8>)>>,
}

/// Where the writer's batches go: its own SQLite connection thread, or the PostgreSQL pool.
pub(crate) enum Appender {
    Sqlite(super::sqlite_appender::SqliteAppender),
    Postgres(sqlx::PgPool),
}

impl Appender {
    /// The appender for `store`: on SQLite, the threads of [`super::sqlite_appender`] on the
    /// store's own file, waiting at most `busy` for its write lock, its log kept near
    /// `wal_limit` bytes.
    pub fn for_store(store: &Store, busy: Duration, wal_limit: u64) -> Result<Appender> {
        match store {
            Store::Sqlite(pool) => {
                let path = pool.connect_options().get_filename().to_path_buf();
                super::sqlite_appender::SqliteAppender::start(path, busy, wal_limit)
                    .map(Appender::Sqlite)
            }
            Store::Postgres(pool) => Ok(Appender::Postgres(pool.clone())),
        }
    }

    async fn append(
        &self,
        events: Vec<AuditEvent>,
        attached: Vec<Box<dyn super::store::Attachment>>,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        match self {
            Appender::Sqlite(thread) => thread.append(events, attached).await,
            Appender::Postgres(pool) => {
                let attached: Vec<&dyn super::store::Attachment> =
                    attached.iter().map(AsRef::as_ref).collect();
                super::store::append_postgres(pool, &events, &attached).await
            }
        }
    }
}

pub(crate) struct Writer {
    pub store: Store,
    pub appender: Appender,
    pub rx: mpsc::Receiver<Job>,
    pub opts: WriterOptions,
    pub health: Arc<Health>,
    pub signer: Option<Arc<dyn CheckpointSigner>>,
    pub clock: SharedClock,
}

struct CheckpointState {
    last: Option<Head>,
    since: u64,
    at: Instant,
}

impl Writer {
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut cp = CheckpointState {
            last: None,
            since: 0,
            at: Instant::now(),
        };
        let mut stopping = false;
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    // Refuse new events, then commit the ones already queued.
                    self.rx.close();
                    None
                }
                r = tokio::time::timeout(self.opts.probe_interval, self.rx.recv()) => Some(r),
            };
            let first = match next {
                Some(Ok(Some(job))) => job,
                Some(Ok(None)) => break,
                Some(Err(_)) => {
                    self.idle(&mut cp).await;
                    continue;
                }
                None => match self.rx.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            let mut batch = Vec::with_capacity(self.opts.max_batch);
            batch.push(first);
            while batch.len() < self.opts.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // A caller that already gave up was told the decision failed; writing its event
            // now would log a decision nobody received.
            batch.retain(|j| !j.ack.is_closed());
            if batch.is_empty() {
                continue;
            }
            self.commit(batch, &mut cp).await;
            if cp.since >= self.opts.checkpoint_every
                || (cp.since > 0 && cp.at.elapsed() >= self.opts.checkpoint_interval)
            {
                self.checkpoint(&mut cp).await;
            }
        }
        if cp.since > 0 {
            self.checkpoint(&mut cp).await;
        }
        tracing::debug!("audit writer stopped");
    }

    async fn commit(&self, batch: Vec<Job>, cp: &mut CheckpointState) {
        let mut attached = Vec::new();
        let (events, acks): (Vec<AuditEvent>, Vec<_>) = batch
            .into_iter()
            .map(|j| {
                attached.extend(j.attached);
                (j.event, j.ack)
            })
            .unzip();
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.opts.append_timeout,
            self.appender.append(events, attached),
        )
        .await;
        let h = &self.health;
        match result {
            Ok(Ok(links)) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                h.commit_micros.fetch_add(micros, Ordering::Relaxed);
                h.batches.fetch_add(1, Ordering::Relaxed);
                let n = links.len() as u64;
                h.committed.fetch_add(n, Ordering::Relaxed);
                h.largest_batch.fetch_max(n, Ordering::Relaxed);
                h.set_up(true);
                if let Some((seq, hash)) = links.last() {
                    h.note_head(*seq);
                    cp.last = Some(Head {
                        seq: *seq,
                        hash: hash.clone(),
                    });
                    cp.since += n;
                }
                for (ack, link) in acks.into_iter().zip(links) {
                    let _ = ack.send(Ok(link));
                }
            }
            Ok(Err(error)) => {
                h.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, events = acks.len(), "audit batch failed");
                h.set_up(false);
                for ack in acks {
                    let _ = ack.send(Err(Error::AuditUnavailable));
                }
            }
            Err(_) => {
                h.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(events = acks.len(), timeout = ?self.opts.append_timeout, "audit batch timed out");
                h.set_up(false);
                for ack in acks {
                    let _ = ack.send(Err(Error::AuditUnavailable));
                }
            }
        }
    }

    /// No events for a while: check the store answers (so readiness recovers, or notices an
    /// outage, without traffic) and write a due checkpoint.
    async fn idle(&self, cp: &mut CheckpointState) {
        let ok = matches!(
            tokio::time::timeout(self.opts.append_timeout, self.store.ping()).await,
            Ok(Ok(()))
        );
        self.health.set_up(ok);
        if cp.since > 0 && cp.at.elapsed() >= self.opts.checkpoint_interval {
            self.checkpoint(cp).await;
        }
    }

    async fn checkpoint(&self, cp: &mut CheckpointState) {
        let (Some(signer), Some(path), Some(head)) = (
            self.signer.clone(),
            self.opts.checkpoint_file.clone(),
            cp.last.clone(),
        ) else {
            return;
        };
        let now = self.clock.now();
        let result = tokio::task::spawn_blocking(move || {
            let c = Checkpoint::sign(signer.as_ref(), head.seq, &head.hash, now)?;
            checkpoint::append(&path, &c)
        })
        .await;
        match result {
            Ok(Ok(())) => {
                self.health.checkpoints.fetch_add(1, Ordering::Relaxed);
                cp.since = 0;
                cp.at = Instant::now();
            }
            Ok(Err(error)) => {
                self.health
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "writing an audit checkpoint failed");
            }
            Err(error) => {
                self.health
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "audit checkpoint task failed");
            }
        }
    }
}
