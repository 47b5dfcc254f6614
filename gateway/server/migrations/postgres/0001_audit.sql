-- The audit log (DESIGN §7). `canonical` and the hashes are the record; the other columns are
-- derived from `canonical` for filtering, and `parapet audit verify` checks that they agree.
CREATE TABLE audit_events (
    seq            BIGINT PRIMARY KEY,
    prev_hash      BYTEA  NOT NULL,
    hash           BYTEA  NOT NULL,
    canonical      TEXT   NOT NULL,
    time           TEXT   NOT NULL,
    request_id     TEXT   NOT NULL,
    kind           TEXT   NOT NULL,
    app            TEXT,
    wallet         TEXT,
    action         TEXT,
    decision       TEXT,
    digest         TEXT,
    policy_version TEXT,
    policy_ids     TEXT   NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_request_id ON audit_events (request_id);
CREATE INDEX audit_events_wallet ON audit_events (wallet, seq);
CREATE INDEX audit_events_digest ON audit_events (digest);

-- Archived prefixes: the log may start after seq 1 only when a row here says where and with
-- which head hash the archived part ended.
CREATE TABLE audit_archives (
    up_to_seq   BIGINT PRIMARY KEY,
    head_hash   BYTEA NOT NULL,
    archived_at TEXT  NOT NULL
);

-- Every policy-set version ever active, content-addressed.
CREATE TABLE policy_blobs (
    sha256  TEXT PRIMARY KEY,
    content BYTEA NOT NULL
);

CREATE TABLE policy_versions (
    version      TEXT PRIMARY KEY,
    manifest     TEXT NOT NULL,
    first_active TEXT NOT NULL
);

-- Refuses UPDATE, DELETE and TRUNCATE on the append-only tables. The one exception is the
-- archive procedure: `parapet_audit_archive` sets `parapet.archiving` for its own transaction
-- and may then delete events at or below a recorded archive point.
CREATE FUNCTION parapet_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events'
       AND current_setting('parapet.archiving', true) = 'on' THEN
        IF OLD.seq <= (SELECT COALESCE(max(up_to_seq), 0) FROM audit_archives) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION parapet_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION parapet_append_only();
CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION parapet_append_only();
CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
    FOR EACH STATEMENT EXECUTE FUNCTION parapet_append_only();
CREATE TRIGGER policy_blobs_append_only BEFORE UPDATE OR DELETE ON policy_blobs
    FOR EACH ROW EXECUTE FUNCTION parapet_append_only();
CREATE TRIGGER policy_blobs_no_truncate BEFORE TRUNCATE ON policy_blobs
    FOR EACH STATEMENT EXECUTE FUNCTION parapet_append_only();
CREATE TRIGGER policy_versions_append_only BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION parapet_append_only();
CREATE TRIGGER policy_versions_no_truncate BEFORE TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION parapet_append_only();

CREATE FUNCTION parapet_archive_extends() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.up_to_seq <= (SELECT COALESCE(max(up_to_seq), 0) FROM audit_archives)
       OR NOT EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.up_to_seq AND hash = NEW.head_hash) THEN
        RAISE EXCEPTION 'an archive point must extend the archived prefix and name an existing event';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_archives_extend BEFORE INSERT ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION parapet_archive_extends();

-- The privileged archive path: records the archive point and removes the prefix in one
-- transaction. EXECUTE is granted to an archive role only (see README); the gateway's own role
-- has INSERT and SELECT and nothing else.
CREATE FUNCTION parapet_audit_archive(p_up_to BIGINT, p_head BYTEA, p_time TEXT) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    removed BIGINT;
BEGIN
    INSERT INTO audit_archives (up_to_seq, head_hash, archived_at) VALUES (p_up_to, p_head, p_time);
    PERFORM set_config('parapet.archiving', 'on', true);
    DELETE FROM audit_events WHERE seq <= p_up_to;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('parapet.archiving', 'off', true);
    RETURN removed;
END
$$;
REVOKE ALL ON FUNCTION parapet_audit_archive(BIGINT, BYTEA, TEXT) FROM PUBLIC;
