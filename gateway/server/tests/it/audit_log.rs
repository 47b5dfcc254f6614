//! The audit log against real databases: every test runs on SQLite and, when
//! `PARAPET_TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database per test).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::support;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parapet_gateway::audit::verify::{self, Report};
use parapet_gateway::audit::{
    self, AuditEvent, AuditLog, Backend, CheckpointSigner, EventKind, FileSigner, Filter,
    PolicyRef, Store, StoreOptions, WriterOptions, export,
};
use parapet_gateway::clock::FixedClock;
use parapet_gateway::error::Error;
use sqlx::Connection;
use support::{TestDb, databases};
use time::OffsetDateTime;

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-11-25 09:00:00 UTC)
}

fn clock() -> parapet_gateway::clock::SharedClock {
    Arc::new(FixedClock(t0()))
}

/// A varied, deterministic decision event.
fn event(i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(
        EventKind::Decision,
        t0() + time::Duration::milliseconds(i as i64),
        format!("req-{i}"),
    );
    e.app = Some(if i.is_multiple_of(3) {
        "app_b".into()
    } else {
        "default".into()
    });
    e.wallet = Some(format!("0x{:040x}", i % 5));
    e.chain_id = Some(1);
    e.action = Some(if i.is_multiple_of(2) {
        "native_transfer".into()
    } else {
        "erc20_transfer".into()
    });
    let allow = !i.is_multiple_of(4);
    e.decision = Some(if allow { "allow" } else { "deny" }.into());
    e.determining_policies = vec![PolicyRef {
        id: if allow {
            "permit-basic".into()
        } else {
            "forbid-blocked".into()
        },
        effect: if allow {
            "permit".into()
        } else {
            "forbid".into()
        },
        reason: "why \"quoted\" é".into(),
    }];
    e.digest = Some(format!("0x{:064x}", i));
    e.policy_version = Some("v1".into());
    e.cedar_request = Some(format!(
        "{{\"principal\":{{\"type\":\"Parapet::App\",\"id\":\"default\"}},\"n\":{i}}}"
    ));
    e.entities = Some("[]".into());
    e.request = Some(
        serde_json::json!({"route": "authorize", "chain_id": "1", "amount": "340282366920938463463374607431768211455"}),
    );
    e
}

fn opts() -> WriterOptions {
    WriterOptions {
        append_timeout: Duration::from_secs(2),
        ..WriterOptions::default()
    }
}

async fn open(db: &TestDb, wo: WriterOptions) -> AuditLog {
    let store = Store::open(
        &db.url,
        &StoreOptions {
            timeout: Duration::from_secs(1),
            max_connections: 8,
        },
    )
    .await
    .unwrap();
    AuditLog::start(store, wo, None, clock()).await.unwrap()
}

async fn append_n(log: &AuditLog, range: std::ops::Range<u64>) {
    for i in range {
        log.append(event(i)).await.unwrap();
    }
}

async fn ndjson(store: &Store) -> String {
    let mut out = Vec::new();
    export::write_all(
        store.clone(),
        &Filter::default(),
        export::Format::Ndjson,
        &mut out,
    )
    .await
    .unwrap();
    String::from_utf8(out).unwrap()
}

async fn check(store: &Store) -> Report {
    verify::verify(store, &[], None).await.unwrap()
}

fn python_verify(path: &Path) -> (bool, String) {
    let script = crate::support::root().join("tests/verify_chain.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 is needed for the auditor's script");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs one statement with the append-only triggers out of the way, as someone with full
/// access to the database files or a superuser could.
async fn tamper(db: &TestDb, store: &Store, sql: &'static str) {
    match store {
        Store::Sqlite(pool) => {
            let mut c = pool.acquire().await.unwrap();
            sqlx::raw_sql(
                "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;",
            )
            .execute(&mut *c)
            .await
            .unwrap();
            sqlx::raw_sql(sql).execute(&mut *c).await.unwrap();
            // Put the triggers back as the migration wrote them.
            let migration = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0001_audit.sql"),
            )
            .unwrap();
            for stmt in migration
                .split("\n\n")
                .filter(|s| s.contains("CREATE TRIGGER audit_events_no_"))
            {
                sqlx::raw_sql(sqlx::AssertSqlSafe(stmt.to_owned()))
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
        }
        Store::Postgres(_) => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql("SET session_replication_role = replica")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_form_one_verifiable_chain_that_python_can_check() {
    for db in databases("data/parapet.db").await {
        let log = Arc::new(open(&db, opts()).await);
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(
                async move { log.append(event(i)).await.unwrap() },
            ));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap().seq);
        }
        seqs.sort();
        assert_eq!(seqs, (1..=200).collect::<Vec<i64>>(), "{:?}", db.backend);
        assert!(
            log.health()
                .batches
                .load(std::sync::atomic::Ordering::Relaxed)
                < 200,
            "group commit batches events"
        );
        let r = check(log.store()).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.events, 200);
        let text = ndjson(log.store()).await;
        let path = db.dir.path().join("export.ndjson");
        std::fs::write(&path, &text).unwrap();
        let (ok, out) = python_verify(&path);
        assert!(ok, "{out}");
        assert!(out.contains("OK 200 events"), "{out}");
        // One edited byte in one line, and the script names that seq.
        let edited = text.replacen("req-7\\\"", "req-8\\\"", 1);
        assert_ne!(edited, text);
        std::fs::write(&path, &edited).unwrap();
        let (ok, out) = python_verify(&path);
        assert!(!ok && out.contains("hash does not match"), "{out}");
        let status = log.status();
        assert!(status.up);
        assert_eq!(status.head_seq, "200");
        log.shutdown().await;
        log.store().close().await;
        db.drop_pg().await;
    }
}

/// The writer's commits never checkpoint the write-ahead log themselves (that held up every
/// caller of the batch that crossed the threshold); a thread of their own copies it back into
/// the database file, so the file grows while the log is written and the log stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_run_beside_the_writer() {
    let db = databases("data/parapet.db").await.remove(0);
    let log = open(&db, opts()).await;
    let file = db.dir.path().join("data/parapet.db");
    let before = std::fs::metadata(&file).unwrap().len();
    // Concurrent, so that the writer batches them as under load.
    let appends = (0..3000u64).map(|i| log.append(event(i)));
    for appended in futures_util::future::join_all(appends).await {
        appended.unwrap();
    }
    let mut grown = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        grown = std::fs::metadata(&file).unwrap().len() - before;
        if grown > 1_000_000 {
            break;
        }
    }
    assert!(
        grown > 1_000_000,
        "3,000 events should reach the database file, not stay in the log: grew {grown} bytes"
    );
    let r = check(log.store()).await;
    assert!(r.ok && r.events == 3000, "{r:?}");
    log.shutdown().await;
    log.store().close().await;
}

/// Under unbroken load the write-ahead log stays near its limit. A passive checkpoint from
/// another connection never lets the log start over while the writer keeps appending, so it used
/// to grow by every page written (827 MB after twelve seconds of load); the writer now starts it
/// over when the checkpoint thread finds it past `wal_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_stays_near_its_limit_under_unbroken_load() {
    let db = databases("data/parapet.db").await.remove(0);
    let limit: u64 = 2 << 20;
    let log = open(
        &db,
        WriterOptions {
            wal_limit: limit,
            ..opts()
        },
    )
    .await;
    let wal = db.dir.path().join("data/parapet.db-wal");
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    // Waves of concurrent appends back to back for three seconds: the writer is never idle. The
    // log may pass the limit by what is written between two looks of the checkpoint thread.
    let started = Instant::now();
    let (mut next, mut largest) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(3) {
        let appends = (next..next + 200).map(|i| log.append(event(i)));
        for appended in futures_util::future::join_all(appends).await {
            appended.unwrap();
        }
        next += 200;
        largest = largest.max(size());
    }
    let db_size = std::fs::metadata(db.dir.path().join("data/parapet.db"))
        .unwrap()
        .len();
    assert!(
        db_size > 8 * limit,
        "the run must write many times the limit: {next} events, database {db_size} bytes"
    );
    assert!(
        largest <= 4 * limit,
        "{next} events: the log reached {largest} bytes, limit {limit}"
    );
    let r = check(log.store()).await;
    assert!(r.ok && r.events == next, "{r:?}");
}

/// Verification checks a page's events on every core, then their links in order: the first bad
/// event named is still the first in the chain, wherever the pieces of a page were checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_every_core_names_the_first_bad_seq() {
    let cases: [(&'static str, &str); 2] = [
        (
            "UPDATE audit_events SET canonical = canonical || ' ' WHERE seq = 350",
            "350",
        ),
        (
            "UPDATE audit_events SET canonical = canonical || ' ' WHERE seq = 350; UPDATE audit_events SET decision = 'tampered' WHERE seq = 120",
            "120",
        ),
    ];
    for (sql, bad) in cases {
        let db = databases("data/parapet.db").await.remove(0);
        let log = open(&db, opts()).await;
        let appends = (0..400u64).map(|i| log.append(event(i)));
        for appended in futures_util::future::join_all(appends).await {
            appended.unwrap();
        }
        let store = log.store().clone();
        assert!(check(&store).await.ok);
        tamper(&db, &store, sql).await;
        let r = check(&store).await;
        assert!(!r.ok, "{sql}");
        assert_eq!(r.failure.unwrap().seq, bad, "{sql}");
        log.shutdown().await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_chains_are_byte_identical() {
    let dbs = databases("data/parapet.db").await;
    if dbs.len() < 2 {
        eprintln!("needs PostgreSQL; skipped");
        return;
    }
    let mut exports = Vec::new();
    for db in &dbs {
        let log = open(db, opts()).await;
        append_n(&log, 0..120).await;
        exports.push(ndjson(log.store()).await);
        log.shutdown().await;
        log.store().close().await;
        db.drop_pg().await;
    }
    assert_eq!(exports[0].lines().count(), 120);
    assert_eq!(exports[0], exports[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_update_delete_and_truncate() {
    for db in databases("data/parapet.db").await {
        let log = open(&db, opts()).await;
        append_n(&log, 0..5).await;
        let store = log.store().clone();
        let files = [(
            "policies/a.cedar".to_owned(),
            b"permit(principal, action, resource);".to_vec(),
        )];
        store
            .record_policy_version("v", &files, t0())
            .await
            .unwrap();
        macro_rules! refused {
            ($pool:expr) => {{
                for sql in [
                    "UPDATE audit_events SET canonical = 'x' WHERE seq = 2",
                    "UPDATE audit_events SET decision = 'allow' WHERE seq = 1",
                    "DELETE FROM audit_events WHERE seq = 5",
                    "DELETE FROM audit_events",
                    "DELETE FROM policy_versions",
                    "UPDATE policy_blobs SET content = x'00'",
                ] {
                    let r = sqlx::query(sql).execute($pool).await;
                    assert!(r.is_err(), "{:?} accepted {sql}", db.backend);
                }
            }};
        }
        match &store {
            Store::Sqlite(p) => refused!(p),
            Store::Postgres(p) => {
                refused!(p);
                for sql in ["TRUNCATE audit_events", "TRUNCATE audit_archives"] {
                    assert!(sqlx::query(sql).execute(p).await.is_err(), "accepted {sql}");
                }
            }
        }
        assert_eq!(check(&store).await.events, 5);
        log.shutdown().await;
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_bad_seq_for_each_kind_of_tampering() {
    let cases: [(&str, &'static str, &str); 7] = [
        (
            "another event's packing",
            "UPDATE audit_events SET packed = (SELECT packed FROM audit_events WHERE seq = 11) WHERE seq = 10",
            "10",
        ),
        (
            "damaged packing",
            "UPDATE audit_events SET packed = substr(packed, 1, 20) WHERE seq = 10",
            "10",
        ),
        (
            "text written beside a packing",
            "UPDATE audit_events SET canonical = '{\"kind\":\"decision\"}' WHERE seq = 10",
            "10",
        ),
        ("deleted row", "DELETE FROM audit_events WHERE seq = 7", "7"),
        (
            "swapped rows",
            "UPDATE audit_events SET seq = CASE seq WHEN 4 THEN -5 WHEN 5 THEN -4 END WHERE seq IN (4, 5); UPDATE audit_events SET seq = -seq WHERE seq < 0",
            "4",
        ),
        (
            "edited filter column",
            "UPDATE audit_events SET decision = 'allow' WHERE seq = 13",
            "13",
        ),
        (
            "inserted row",
            "DELETE FROM audit_events WHERE seq = 20; INSERT INTO audit_events SELECT 20, prev_hash, hash, canonical, time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids, packed FROM audit_events WHERE seq = 3",
            "20",
        ),
    ];
    for (what, sql, bad) in cases {
        for db in databases("data/parapet.db").await {
            let log = open(&db, opts()).await;
            append_n(&log, 0..25).await;
            let store = log.store().clone();
            assert!(check(&store).await.ok);
            tamper(&db, &store, sql).await;
            let r = check(&store).await;
            assert!(!r.ok, "{what} on {:?} not detected", db.backend);
            let f = r.failure.unwrap();
            assert_eq!(f.seq, bad, "{what} on {:?}: {}", db.backend, f.reason);
            log.shutdown().await;
            store.close().await;
            db.drop_pg().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_removes_a_prefix_through_the_privileged_path_and_verify_accepts_archive_plus_database()
 {
    for db in databases("data/parapet.db").await {
        let log = open(&db, opts()).await;
        append_n(&log, 0..30).await;
        let store = log.store().clone();
        let rows = store.range(0, 12).await.unwrap();
        let archive_text = export::render(export::Format::Ndjson, &rows);
        let last = rows.last().unwrap();
        let point = audit::Head {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        // A made-up archive point is refused.
        let bogus = audit::Head {
            seq: 12,
            hash: vec![9; 32],
        };
        assert!(store.archive_prefix(&bogus, t0()).await.is_err());
        assert_eq!(store.archive_prefix(&point, t0()).await.unwrap(), 12);
        // The writer continues the chain after the archived prefix.
        append_n(&log, 30..35).await;
        let archive = export::parse_ndjson(&archive_text).unwrap();
        let r = verify::verify(&store, &archive, None).await.unwrap();
        assert!(r.ok && r.archive_verified, "{r:?}");
        assert_eq!((r.events, r.archived_up_to.as_deref()), (35, Some("12")));
        let r = check(&store).await;
        assert!(r.ok && !r.archive_verified && r.events == 23, "{r:?}");
        // An archive that was altered after export does not verify.
        let altered =
            export::parse_ndjson(&archive_text.replacen("req-3\\\"", "req-4\\\"", 1)).unwrap();
        assert!(!verify::verify(&store, &altered, None).await.unwrap().ok);
        // Deleting above the archive point is still refused.
        let del = match &store {
            Store::Sqlite(p) => sqlx::query("DELETE FROM audit_events WHERE seq = 20")
                .execute(p)
                .await
                .is_err(),
            Store::Postgres(p) => sqlx::query("DELETE FROM audit_events WHERE seq = 20")
                .execute(p)
                .await
                .is_err(),
        };
        assert!(del);
        log.shutdown().await;
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_checkpoints_catch_a_truncated_tail_and_an_older_backup() {
    for db in databases("data/parapet.db").await {
        let key = db.dir.path().join("audit-key");
        let signer: Arc<dyn CheckpointSigner> = Arc::new(FileSigner::load_or_create(&key).unwrap());
        let pubkey = hex::encode(signer.public_key());
        let cp_file = db.dir.path().join("checkpoints.jsonl");
        let wo = WriterOptions {
            checkpoint_every: 10,
            checkpoint_file: Some(cp_file.clone()),
            ..opts()
        };
        let store = Store::open(&db.url, &StoreOptions::default())
            .await
            .unwrap();
        let log = AuditLog::start(store.clone(), wo, Some(signer.clone()), clock())
            .await
            .unwrap();
        append_n(&log, 0..40).await;
        log.shutdown().await;
        let cps = audit::checkpoint::read_all(&cp_file).unwrap();
        assert_eq!(cps.last().unwrap().seq, "40", "{cps:?}");
        let r = verify::verify(&store, &[], Some((&cps, &pubkey)))
            .await
            .unwrap();
        assert!(r.ok && r.checkpoints_checked == cps.len() as u64, "{r:?}");
        // Checkpoints signed by another key are refused.
        let other = FileSigner::load_or_create(&db.dir.path().join("other-key")).unwrap();
        let r = verify::verify(&store, &[], Some((&cps, &hex::encode(other.public_key()))))
            .await
            .unwrap();
        assert!(!r.ok);
        // The newest events vanish (tail truncated / an older backup restored).
        tamper(&db, &store, "DELETE FROM audit_events WHERE seq > 33").await;
        assert!(
            check(&store).await.ok,
            "without checkpoints a cut tail is invisible"
        );
        let r = verify::verify(&store, &[], Some((&cps, &pubkey)))
            .await
            .unwrap();
        assert!(!r.ok);
        let f = r.failure.unwrap();
        assert!(f.reason.contains("truncated") && f.seq == "34", "{f:?}");
        // …and a different history grown past the checkpoint is caught by its hash.
        let log = AuditLog::start(store.clone(), opts(), None, clock())
            .await
            .unwrap();
        append_n(&log, 100..110).await;
        let r = verify::verify(&store, &[], Some((&cps, &pubkey)))
            .await
            .unwrap();
        assert_eq!(r.failure.unwrap().seq, "40");
        log.shutdown().await;
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restored_from_an_older_file_copy_is_caught_by_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("p.db");
    let url = format!("sqlite://{}", db_path.display());
    let signer: Arc<dyn CheckpointSigner> =
        Arc::new(FileSigner::load_or_create(&dir.path().join("k")).unwrap());
    let cp_file = dir.path().join("cp.jsonl");
    let wo = || WriterOptions {
        checkpoint_every: 5,
        checkpoint_file: Some(cp_file.clone()),
        ..opts()
    };
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    let log = AuditLog::start(store.clone(), wo(), Some(signer.clone()), clock())
        .await
        .unwrap();
    append_n(&log, 0..10).await;
    log.shutdown().await;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(match &store {
            Store::Sqlite(p) => p,
            Store::Postgres(_) => unreachable!(),
        })
        .await
        .unwrap();
    store.close().await;
    let backup = dir.path().join("backup.db");
    std::fs::copy(&db_path, &backup).unwrap();
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    let log = AuditLog::start(store.clone(), wo(), Some(signer.clone()), clock())
        .await
        .unwrap();
    append_n(&log, 10..20).await;
    log.shutdown().await;
    store.close().await;
    // Restore the backup over the live file.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    std::fs::copy(&backup, &db_path).unwrap();
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert!(check(&store).await.ok);
    let cps = audit::checkpoint::read_all(&cp_file).unwrap();
    let r = verify::verify(&store, &[], Some((&cps, &hex::encode(signer.public_key()))))
        .await
        .unwrap();
    assert!(!r.ok && r.failure.as_ref().unwrap().seq == "11", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_closed_within_the_timeout_while_the_store_cannot_commit_then_recovers() {
    for db in databases("data/parapet.db").await {
        let wo = WriterOptions {
            append_timeout: Duration::from_millis(800),
            probe_interval: Duration::from_millis(100),
            ..WriterOptions::default()
        };
        let store = Store::open(
            &db.url,
            &StoreOptions {
                timeout: Duration::from_millis(500),
                max_connections: 4,
            },
        )
        .await
        .unwrap();
        let log = AuditLog::start(store.clone(), wo, None, clock())
            .await
            .unwrap();
        append_n(&log, 0..3).await;
        // Another party holds what a commit needs: SQLite's write lock, PostgreSQL's chain lock.
        let blocker: Box<dyn std::any::Any> = match &store {
            Store::Sqlite(_) => {
                let path = db.url.trim_start_matches("sqlite://");
                Box::new(support::hold_sqlite_write_lock(std::path::Path::new(path)).await)
            }
            Store::Postgres(_) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(audit::store::CHAIN_LOCK_KEY)
                    .execute(&mut c)
                    .await
                    .unwrap();
                Box::new(c)
            }
        };
        let started = Instant::now();
        let r = log.append(event(3)).await;
        let took = started.elapsed();
        assert!(
            matches!(r, Err(Error::AuditUnavailable)),
            "{:?}: {r:?}",
            db.backend
        );
        assert!(took < Duration::from_millis(1500), "took {took:?}");
        assert_eq!(Error::AuditUnavailable.status().as_u16(), 503);
        assert_eq!(Error::AuditUnavailable.code(), "audit_unavailable");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !log.status().up,
            "{:?}: readiness must report the outage",
            db.backend
        );
        drop(blocker);
        // The writer recovers by itself.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if log.append(event(4)).await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not recover",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(log.status().up);
        let r = check(&store).await;
        assert!(r.ok, "{r:?}");
        log.shutdown().await;
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_database_keep_one_chain() {
    for db in databases("data/parapet.db").await {
        let a = Arc::new(open(&db, opts()).await);
        let b = Arc::new(open(&db, opts()).await);
        let mut tasks = Vec::new();
        for i in 0..400u64 {
            let log = if i.is_multiple_of(2) {
                a.clone()
            } else {
                b.clone()
            };
            tasks.push(tokio::spawn(async move {
                log.append(event(i)).await.unwrap().seq
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=400).collect::<Vec<i64>>());
        let r = check(a.store()).await;
        assert!(r.ok && r.events == 400, "{:?}: {r:?}", db.backend);
        a.shutdown().await;
        b.shutdown().await;
        a.store().close().await;
        b.store().close().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_filters_and_cursor_pagination() {
    for db in databases("data/parapet.db").await {
        let log = open(&db, opts()).await;
        append_n(&log, 0..60).await;
        let store = log.store().clone();
        let all = |f: Filter| {
            let store = store.clone();
            async move {
                let mut p = export::Pager::new(store, &f, 0, None).unwrap();
                let mut seqs = Vec::new();
                loop {
                    let page = p.next_page().await.unwrap();
                    if page.is_empty() {
                        break;
                    }
                    seqs.extend(page.iter().map(|e| e.seq));
                }
                seqs
            }
        };
        let expect = |pred: &dyn Fn(u64) -> bool| {
            (0..60u64)
                .filter(|i| pred(*i))
                .map(|i| i as i64 + 1)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            all(Filter {
                app: Some("app_b".into()),
                ..Filter::default()
            })
            .await,
            expect(&|i| i.is_multiple_of(3))
        );
        assert_eq!(
            all(Filter {
                decision: Some("deny".into()),
                ..Filter::default()
            })
            .await,
            expect(&|i| i.is_multiple_of(4))
        );
        assert_eq!(
            all(Filter {
                policy_id: Some("permit-basic".into()),
                ..Filter::default()
            })
            .await,
            expect(&|i| !i.is_multiple_of(4))
        );
        assert_eq!(
            all(Filter {
                policy_id: Some("permit".into()),
                ..Filter::default()
            })
            .await,
            Vec::<i64>::new()
        );
        assert_eq!(
            all(Filter {
                wallet: Some(format!("0x{:040X}", 2)),
                action: Some("native_transfer".into()),
                ..Filter::default()
            })
            .await,
            expect(&|i| i % 5 == 2 && i.is_multiple_of(2))
        );
        assert_eq!(
            all(Filter {
                digest: Some(format!("0x{:064x}", 17)),
                ..Filter::default()
            })
            .await,
            vec![18]
        );
        assert_eq!(
            all(Filter {
                request_id: Some("req-33".into()),
                ..Filter::default()
            })
            .await,
            vec![34]
        );
        assert_eq!(
            all(Filter {
                kind: Some("decision".into()),
                ..Filter::default()
            })
            .await
            .len(),
            60
        );
        // Times are t0 + i ms: [10 ms, 20 ms).
        let f = Filter {
            from: Some("2026-11-25T09:00:00.010Z".into()),
            to: Some("2026-11-25T10:00:00.020+01:00".into()),
            ..Filter::default()
        };
        assert_eq!(all(f).await, (11..=20).collect::<Vec<i64>>());
        // Cursor pages of 7 cover everything once, in order.
        let mut p = export::Pager::new(store.clone(), &Filter::default(), 0, Some(7)).unwrap();
        assert_eq!(p.next_page().await.unwrap().len(), 7);
        let mut p2 =
            export::Pager::new(store.clone(), &Filter::default(), p.cursor(), Some(100)).unwrap();
        let rest = p2.next_page().await.unwrap();
        assert_eq!(rest.first().unwrap().seq, 8);
        assert_eq!(rest.len(), 53);
        // CSV has a header and one line per event.
        let mut csv = Vec::new();
        export::write_all(
            store.clone(),
            &Filter {
                app: Some("app_b".into()),
                ..Filter::default()
            },
            export::Format::Csv,
            &mut csv,
        )
        .await
        .unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), 21);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("1,2026-11-25T09:00:00.000000Z,req-0,decision,app_b,")
        );
        log.shutdown().await;
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_versions_are_stored_content_addressed_and_read_back_exactly() {
    for db in databases("data/parapet.db").await {
        let store = Store::open(&db.url, &StoreOptions::default())
            .await
            .unwrap();
        let files = vec![
            (
                "policies/b.cedar".to_owned(),
                b"forbid(principal, action, resource);".to_vec(),
            ),
            ("policies/a.cedar".to_owned(), vec![0, 159, 146, 150, 255]),
            ("schemas/tokens.json".to_owned(), b"{}".to_vec()),
        ];
        let (manifest, _) = audit::store::policy_manifest(&files).unwrap();
        use sha2::Digest;
        let version = hex::encode(sha2::Sha256::digest(manifest.as_bytes()));
        store
            .record_policy_version(&version, &files, t0())
            .await
            .unwrap();
        store
            .record_policy_version(&version, &files, t0() + time::Duration::hours(1))
            .await
            .unwrap();
        let mut files2 = files.clone();
        files2[0].1.push(b'\n');
        let (m2, _) = audit::store::policy_manifest(&files2).unwrap();
        let v2 = hex::encode(sha2::Sha256::digest(m2.as_bytes()));
        store
            .record_policy_version(&v2, &files2, t0() + time::Duration::hours(2))
            .await
            .unwrap();
        let got = store.policy_version(&version).await.unwrap().unwrap();
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(got.files, sorted);
        assert_eq!(got.first_active, "2026-11-25T09:00:00.000000Z");
        assert_eq!(store.policy_versions().await.unwrap().len(), 2);
        assert!(store.policy_version("nope").await.unwrap().is_none());
        // Two versions share the unchanged blobs.
        let blobs: i64 = match &store {
            Store::Sqlite(p) => sqlx::query_scalar("SELECT count(*) FROM policy_blobs")
                .fetch_one(p)
                .await
                .unwrap(),
            Store::Postgres(p) => sqlx::query_scalar("SELECT count(*) FROM policy_blobs")
                .fetch_one(p)
                .await
                .unwrap(),
        };
        assert_eq!(blobs, 4);
        store.close().await;
        db.drop_pg().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_without_wal_and_full_sync_is_refused() {
    let err = Store::open("sqlite::memory:", &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("WAL")),
        "{err:?}"
    );
    assert!(
        Store::open("mysql://x", &StoreOptions::default())
            .await
            .is_err()
    );
    // A file store is created with its directory, in WAL mode.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a/b/p.db").display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.close().await;
    let _: PathBuf = dir.path().join("a/b/p.db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_refusals_become_one_limited_event_per_bucket() {
    let db = databases("data/parapet.db").await.remove(0);
    let log = open(&db, opts()).await;
    for _ in 0..1000 {
        log.note_flood("10.1.2.3", "unauthorized", t0());
    }
    log.note_flood("10.9.9.9", "unauthorized", t0());
    for e in log.flood().drain(t0() + time::Duration::minutes(1), false) {
        log.append(e).await.unwrap();
    }
    let store = log.store().clone();
    let rows = store.range(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].canonical.contains("\"count\":\"1000\""));
    assert!(rows[0].canonical.contains("\"kind\":\"limited\""));
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_flood_is_flushed_in_group_commits_with_every_count() {
    let db = databases("data/parapet.db").await.remove(0);
    let log = open(&db, opts()).await;
    // More distinct IPs than the aggregator keeps buckets for: the rest share the overflow one.
    let ips = 12_000u32;
    for i in 0..ips {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        log.note_flood(&ip, "unauthorized", t0());
    }
    log.flush_flood(t0() + time::Duration::minutes(1), true)
        .await;
    let rows = log.store().range(0, 20_000).await.unwrap();
    assert_eq!(rows.len(), 10_001, "10,000 buckets and one overflow bucket");
    let counted: u64 = rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.canonical).unwrap();
            v["limited"]["count"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, u64::from(ips), "every refusal is counted once");
    // Handed to the writer together, so it committed them in batches, not one by one.
    let largest = log
        .health()
        .largest_batch
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(largest > 1, "largest batch {largest}");
    log.shutdown().await;
}

/// Rows written before events were packed keep their text in `canonical` and no packing: they
/// still read back, export and verify, and packed rows chain on after them.
#[tokio::test]
async fn rows_from_before_packing_still_read_export_and_verify() {
    const LEGACY: &str = "INSERT INTO audit_events (seq, prev_hash, hash, canonical, time, request_id, kind, app, wallet, action, decision, digest, policy_version, policy_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
    macro_rules! insert_legacy {
        ($pool:expr, $seq:expr, $prev:expr, $hash:expr, $text:expr, $c:expr) => {{
            sqlx::query(LEGACY)
                .bind($seq)
                .bind($prev)
                .bind($hash)
                .bind($text)
                .bind($c.time)
                .bind($c.request_id)
                .bind($c.kind)
                .bind($c.app)
                .bind($c.wallet)
                .bind($c.action)
                .bind($c.decision)
                .bind($c.digest)
                .bind($c.policy_version)
                .bind($c.policy_ids)
                .execute($pool)
                .await
                .unwrap();
        }};
    }
    for db in databases("data/parapet.db").await {
        let log = open(&db, opts()).await;
        let store = log.store().clone();
        let mut prev = audit::GENESIS.to_vec();
        let mut texts = Vec::new();
        for seq in 1..=3i64 {
            let text = event(seq as u64).canonical(seq).unwrap();
            let hash = audit::chain::link_hash(&prev, &text).to_vec();
            let c = audit::event::IndexColumns::from_canonical(&text).unwrap();
            match &store {
                Store::Sqlite(pool) => {
                    insert_legacy!(pool, seq, prev.clone(), hash.clone(), text.clone(), c)
                }
                Store::Postgres(pool) => {
                    insert_legacy!(pool, seq, prev.clone(), hash.clone(), text.clone(), c)
                }
            };
            prev = hash;
            texts.push(text);
        }
        // The writer reads the head from the database, so its events chain on after these.
        append_n(&log, 4..7).await;
        let r = check(&store).await;
        assert!(r.ok && r.events == 6, "{:?}: {r:?}", db.backend);
        assert_eq!(store.by_seq(2).await.unwrap().unwrap().canonical, texts[1]);
        let exported = ndjson(&store).await;
        for text in &texts {
            assert!(exported.contains(&serde_json::to_string(text).unwrap()));
        }
        let packed: i64 = match &store {
            Store::Sqlite(pool) => sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit_events WHERE packed IS NOT NULL AND canonical = ''",
            )
            .fetch_one(pool)
            .await
            .unwrap(),
            Store::Postgres(pool) => sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit_events WHERE packed IS NOT NULL AND canonical = ''",
            )
            .fetch_one(pool)
            .await
            .unwrap(),
        };
        assert_eq!(packed, 3, "the new rows are packed");
        assert_eq!(
            store.by_seq(5).await.unwrap().unwrap().canonical,
            event(5).canonical(5).unwrap()
        );
        log.shutdown().await;
        store.close().await;
        db.drop_pg().await;
    }
}
