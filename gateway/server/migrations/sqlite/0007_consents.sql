-- Users' consent to apps' scopes (DESIGN §3): one row per (user, app). An approval replaces the
-- row; a revocation sets `revoked_at` and keeps it. `scopes` are the approved scope ids, sorted
-- and comma-separated; `consent_hash` the hash of the app's offered scopes they were approved
-- under (a different current hash asks the user again). The history is in the audit log.
CREATE TABLE consents (
    user_id      TEXT NOT NULL,
    app_id       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    consent_hash TEXT NOT NULL,
    granted_at   TEXT NOT NULL,
    revoked_at   TEXT,
    PRIMARY KEY (user_id, app_id)
);
