-- The audit log (DESIGN §7). `canonical` and the hashes are the record; the other columns are
-- derived from `canonical` for filtering, and `parapet audit verify` checks that they agree.
CREATE TABLE audit_events (
    seq            INTEGER PRIMARY KEY,
    prev_hash      BLOB    NOT NULL,
    hash           BLOB    NOT NULL,
    canonical      TEXT    NOT NULL,
    time           TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    app            TEXT,
    wallet         TEXT,
    action         TEXT,
    decision       TEXT,
    digest         TEXT,
    policy_version TEXT,
    policy_ids     TEXT    NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_request_id ON audit_events (request_id);
CREATE INDEX audit_events_wallet ON audit_events (wallet, seq);
CREATE INDEX audit_events_digest ON audit_events (digest);

-- Archived prefixes: the log may start after seq 1 only when a row here says where and with
-- which head hash the archived part ended.
CREATE TABLE audit_archives (
    up_to_seq   INTEGER PRIMARY KEY,
    head_hash   BLOB NOT NULL,
    archived_at TEXT NOT NULL
);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

-- Deleting is possible only below a recorded archive point (the archive procedure).
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.seq > COALESCE((SELECT max(up_to_seq) FROM audit_archives), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_archives_extend BEFORE INSERT ON audit_archives
WHEN NEW.up_to_seq <= COALESCE((SELECT max(up_to_seq) FROM audit_archives), 0)
  OR NOT EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.up_to_seq AND hash = NEW.head_hash)
BEGIN
    SELECT RAISE(ABORT, 'an archive point must extend the archived prefix and name an existing event');
END;

CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN
    SELECT RAISE(ABORT, 'audit_archives is append-only');
END;

CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
BEGIN
    SELECT RAISE(ABORT, 'audit_archives is append-only');
END;

-- Every policy-set version ever active, content-addressed.
CREATE TABLE policy_blobs (
    sha256  TEXT PRIMARY KEY,
    content BLOB NOT NULL
);

CREATE TABLE policy_versions (
    version      TEXT PRIMARY KEY,
    manifest     TEXT NOT NULL,
    first_active TEXT NOT NULL
);

CREATE TRIGGER policy_blobs_no_update BEFORE UPDATE ON policy_blobs
BEGIN
    SELECT RAISE(ABORT, 'policy_blobs is append-only');
END;

CREATE TRIGGER policy_blobs_no_delete BEFORE DELETE ON policy_blobs
BEGIN
    SELECT RAISE(ABORT, 'policy_blobs is append-only');
END;

CREATE TRIGGER policy_versions_no_update BEFORE UPDATE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'policy_versions is append-only');
END;

CREATE TRIGGER policy_versions_no_delete BEFORE DELETE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'policy_versions is append-only');
END;
