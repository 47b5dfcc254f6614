-- Paired devices (DESIGN §2): the `parapet wallet …` client of one user. Only the SHA-256 of the
-- device token is kept; revoked devices keep their row so that audit events naming them resolve.
CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_seen  TEXT,
    revoked_at TEXT
);
CREATE INDEX devices_user ON devices (user_id);
-- One-time pairing codes a logged-in user makes on the page: stored hashed, deleted by the first
-- pairing attempt that names them, useless after `expires_at`.
CREATE TABLE device_pairings (
    code_hash  BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
