//! `verify`: recomputes the chain and names the first sequence number where it breaks — an
//! edited byte, a deleted, inserted or swapped row, filter columns that disagree with the event
//! — and, given the checkpoint file, notices a database restored from an older backup or cut
//! short at the tail.

use std::collections::BTreeMap;

use serde::Serialize;

use super::chain::{GENESIS, StoredEvent, link_hash};
use super::checkpoint::Checkpoint;
use super::event::{FORMAT_VERSION, IndexColumns};
use super::jcs::{self, Json};
use super::query::MAX_PAGE;
use super::store::Store;
use crate::error::{Error, Result};

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The first bad sequence number (decimal string).
    pub seq: String,
    pub reason: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    /// Events whose links were checked.
    pub events: u64,
    pub first_seq: Option<String>,
    pub last_seq: Option<String>,
    /// Hex hash of the last verified event.
    pub head_hash: String,
    /// Where the database says an archived prefix ends, if it does.
    pub archived_up_to: Option<String>,
    /// Whether the archived prefix itself was verified (an archive export was given).
    pub archive_verified: bool,
    pub checkpoints_checked: u64,
    /// Checkpoints below the first verified event (archived and not given).
    pub checkpoints_skipped: u64,
    pub failure: Option<Failure>,
}

/// Checks rows one at a time, in order.
#[derive(Debug)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: Vec<u8>,
    events: u64,
    first_seq: Option<i64>,
    checkpoints: BTreeMap<i64, Vec<u8>>,
    checkpoints_checked: u64,
    failure: Option<Failure>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            next_seq: 1,
            prev_hash: GENESIS.to_vec(),
            events: 0,
            first_seq: None,
            checkpoints: BTreeMap::new(),
            checkpoints_checked: 0,
            failure: None,
        }
    }
}

impl ChainVerifier {
    fn fail(&mut self, seq: i64, reason: String) -> bool {
        if self.failure.is_none() {
            self.failure = Some(Failure {
                seq: seq.to_string(),
                reason,
            });
        }
        false
    }

    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Starts after an archived prefix whose last event had `seq` and `hash` (trusted only as
    /// far as the database's archive record is).
    pub fn start_after(&mut self, seq: i64, hash: Vec<u8>) {
        self.next_seq = seq + 1;
        self.prev_hash = hash;
    }

    /// Checks one row (and its stored filter columns, when given). Returns false once broken.
    pub fn push(&mut self, row: &StoredEvent, cols: Option<&IndexColumns>) -> bool {
        let content = check_content(row, cols);
        self.push_checked(row, content)
    }

    /// Checks a page of rows in order, their contents on every core first (each row's hash,
    /// format and filter columns depend on that row alone; only the links between rows need
    /// the order). Returns false once broken. The first failure named is the one checking the
    /// rows one at a time would name.
    pub fn push_page(&mut self, rows: &[&StoredEvent], cols: &[Option<&IndexColumns>]) -> bool {
        let contents = check_contents(rows, cols);
        for (row, content) in rows.iter().zip(contents) {
            if !self.push_checked(row, content) {
                return false;
            }
        }
        true
    }

    /// The order and link checks of one row whose contents were checked (`content`).
    fn push_checked(
        &mut self,
        row: &StoredEvent,
        content: std::result::Result<(), String>,
    ) -> bool {
        if self.failure.is_some() {
            return false;
        }
        if row.seq != self.next_seq {
            let expected = self.next_seq;
            return if row.seq > expected {
                self.fail(
                    expected,
                    format!(
                        "event {expected} is missing: the next stored event is {}",
                        row.seq
                    ),
                )
            } else {
                self.fail(
                    row.seq,
                    format!("event {} is out of order or duplicated", row.seq),
                )
            };
        }
        if row.prev_hash != self.prev_hash {
            return self.fail(
                row.seq,
                "prev_hash is not the hash of the previous event (row deleted, inserted or swapped)"
                    .to_owned(),
            );
        }
        if let Err(reason) = content {
            return self.fail(row.seq, reason);
        }
        if let Some(h) = self.checkpoints.get(&row.seq) {
            self.checkpoints_checked += 1;
            if h != &row.hash {
                return self.fail(
                    row.seq,
                    "the hash differs from the signed checkpoint (the log was rewritten or restored from another history)"
                        .to_owned(),
                );
            }
        }
        self.first_seq.get_or_insert(row.seq);
        self.events += 1;
        self.next_seq = row.seq + 1;
        self.prev_hash.clone_from(&row.hash);
        true
    }

    /// Loads checkpoints, checking each signature against `expected_key`.
    pub fn with_checkpoints(&mut self, cps: &[Checkpoint], expected_key: &str) -> bool {
        for cp in cps {
            let seq = match cp.seq_number() {
                Ok(s) => s,
                Err(e) => return self.fail(0, format!("checkpoint: {e}")),
            };
            if let Err(e) = cp.verify(expected_key) {
                return self.fail(seq, format!("checkpoint at {seq}: {e}"));
            }
            let Ok(hash) = hex::decode(&cp.hash) else {
                return self.fail(seq, format!("checkpoint at {seq}: hash is not hex"));
            };
            if let Some(prev) = self.checkpoints.insert(seq, hash.clone())
                && prev != hash
            {
                return self.fail(seq, format!("two checkpoints disagree about {seq}"));
            }
        }
        true
    }

    /// Finishes: a checkpoint past the last event means the tail is gone.
    pub fn finish(mut self, archived_up_to: Option<i64>, archive_verified: bool) -> Report {
        let last = self.next_seq - 1;
        let first = self.first_seq.unwrap_or(self.next_seq);
        let skipped = self.checkpoints.range(..first).count() as u64;
        if let Some((&seq, _)) = self.checkpoints.range(self.next_seq..).next() {
            let reason = format!(
                "a signed checkpoint says the log reached event {seq}, but it ends at {last}: the tail was truncated or the database was restored from an older backup"
            );
            self.fail(last + 1, reason);
        }
        Report {
            ok: self.failure.is_none(),
            events: self.events,
            first_seq: self.first_seq.map(|s| s.to_string()),
            last_seq: (last > 0).then(|| last.to_string()),
            head_hash: hex::encode(&self.prev_hash),
            archived_up_to: archived_up_to.map(|s| s.to_string()),
            archive_verified,
            checkpoints_checked: self.checkpoints_checked,
            checkpoints_skipped: skipped,
            failure: self.failure,
        }
    }
}

/// What can be checked of one row alone: its hash over its stored `prev_hash`, the event
/// itself, and its filter columns against the event (when given).
fn check_content(
    row: &StoredEvent,
    cols: Option<&IndexColumns>,
) -> std::result::Result<(), String> {
    if link_hash(&row.prev_hash, &row.canonical).as_slice() != row.hash.as_slice() {
        return Err("hash does not match the event's contents (edited)".to_owned());
    }
    let event = check_event(row)?;
    if let Some(stored) = cols
        && IndexColumns::from_tree(&event).as_ref() != Some(stored)
    {
        return Err("the filter columns disagree with the event (edited)".to_owned());
    }
    Ok(())
}

/// [`check_content`] of every row, on as many threads as there are cores (in order).
fn check_contents(
    rows: &[&StoredEvent],
    cols: &[Option<&IndexColumns>],
) -> Vec<std::result::Result<(), String>> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let per_thread = rows.len().div_ceil(threads).max(64);
    let check = |rows: &[&StoredEvent], cols: &[Option<&IndexColumns>]| {
        rows.iter()
            .enumerate()
            .map(|(i, r)| check_content(r, cols.get(i).copied().flatten()))
            .collect::<Vec<_>>()
    };
    if rows.len() <= per_thread {
        return check(rows, cols);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = rows
            .chunks(per_thread)
            .enumerate()
            .map(|(n, chunk)| {
                let start = n * per_thread;
                let cols = cols.get(start..).unwrap_or_default();
                (chunk.len(), scope.spawn(move || check(chunk, cols)))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(len, w)| {
                w.join()
                    .unwrap_or_else(|_| vec![Err("checking the event failed".to_owned()); len])
            })
            .collect()
    })
}

/// The event itself: JSON, RFC 8785 form, format version 1, its own `seq`; parsed once, for the
/// filter columns to be read from too.
fn check_event(row: &StoredEvent) -> std::result::Result<Json<'_>, String> {
    let v = match jcs::parse_canonical(&row.canonical) {
        Ok(v) => v,
        Err(_) if Json::parse(&row.canonical).is_err() => {
            return Err("the event is not JSON".to_owned());
        }
        Err(_) => return Err("the event is not in RFC 8785 canonical form".to_owned()),
    };
    if v.get("v").and_then(Json::as_u64) != Some(u64::from(FORMAT_VERSION)) {
        return Err("unknown event format version".to_owned());
    }
    if v.get("seq").and_then(Json::as_str) != Some(row.seq.to_string().as_str()) {
        return Err("the event's own seq differs from its row (moved)".to_owned());
    }
    Ok(v)
}

/// Verifies `archive` (rows of archived prefixes, in order; may be empty) followed by the
/// database. With `checkpoints`, also checks every signed checkpoint made with `expected_key`.
pub async fn verify(
    store: &Store,
    archive: &[StoredEvent],
    checkpoints: Option<(&[Checkpoint], &str)>,
) -> Result<Report> {
    let mut v = ChainVerifier::default();
    if let Some((cps, key)) = checkpoints {
        v.with_checkpoints(cps, key);
    }
    let archive_point = store.archive_point().await?;
    let archived_up_to = archive_point.as_ref().map(|h| h.seq);
    for row in archive {
        if !v.push(row, None) {
            break;
        }
    }
    let archive_verified = !archive.is_empty();
    let mut after = 0i64;
    if let Some(point) = &archive_point {
        if archive.is_empty() {
            v.start_after(point.seq, point.hash.clone());
        } else if v.next_seq <= point.seq {
            let seq = v.next_seq;
            v.fail(
                seq,
                format!(
                    "the archive ends before the database's archive point {}",
                    point.seq
                ),
            );
        } else if v.next_seq == point.seq + 1 && v.prev_hash != point.hash {
            v.fail(
                point.seq,
                "the archive's last hash differs from the database's archive point".to_owned(),
            );
        }
    }
    // Rows the archive already covered (exported but not yet removed) must be the same rows.
    let overlap_until = v.next_seq - 1;
    let archive_hashes: BTreeMap<i64, &[u8]> =
        archive.iter().map(|r| (r.seq, r.hash.as_slice())).collect();
    // The next page is read while this one is checked: on a multi-threaded runtime the read
    // (on the database's own thread) and the checks (on every core) overlap.
    let read = |after: i64| {
        let store = store.clone();
        tokio::spawn(async move { store.range_with_columns(after, MAX_PAGE).await })
    };
    let mut next = read(after);
    while !v.failed() {
        let page = next
            .await
            .map_err(|e| Error::Internal(format!("reading the log: {e}")))??;
        let Some(last) = page.last() else { break };
        after = last.event.seq;
        next = read(after);
        let mut fresh = Vec::with_capacity(page.len());
        for r in &page {
            if r.event.seq <= overlap_until && archive_verified {
                if archive_hashes.get(&r.event.seq).copied() != Some(r.event.hash.as_slice()) {
                    v.fail(
                        r.event.seq,
                        "the database and the archive disagree about this event".to_owned(),
                    );
                    break;
                }
                continue;
            }
            fresh.push(r);
        }
        if v.failed() {
            break;
        }
        let rows: Vec<&StoredEvent> = fresh.iter().map(|r| &r.event).collect();
        let cols: Vec<Option<&IndexColumns>> = fresh.iter().map(|r| Some(&r.cols)).collect();
        v.push_page(&rows, &cols);
    }
    Ok(v.finish(archived_up_to, archive_verified))
}
