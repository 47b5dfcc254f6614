-- Security webhooks: one URL per app, registered by the app itself. The signing secret is sealed
-- with the personal data key (AAD = app id) because the gateway must compute HMACs with it.
CREATE TABLE webhooks (
    app_id        TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    sealed_secret BLOB NOT NULL,
    created_at    TEXT NOT NULL
);

-- How far the notifier has read the audit log: notifications derive from committed audit events,
-- so an event that happened is notified even if the gateway stops right after it. One row.
CREATE TABLE webhook_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO webhook_cursor (id, seq) VALUES (1, 0);

-- One row per (app, audit event): its payload, and its delivery state for admins. `pending` rows
-- are tried when `next_attempt_at` has passed; a claim sets `lease_until` so that two gateways
-- do not send the same attempt; `failed` after the last attempt (an admin may retry it).
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL,
    event_seq       BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_until     TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT,
    UNIQUE (app_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_app ON webhook_deliveries (app_id, created_at);

-- The notifier reads the audit log by action after its cursor.
CREATE INDEX audit_events_action ON audit_events (action, seq);
