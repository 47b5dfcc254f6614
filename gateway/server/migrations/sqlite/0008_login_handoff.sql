-- The app hand-off (DESIGN §2): an app's exact redirect URIs, newline-separated.
ALTER TABLE apps ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
-- The passkey a session was established with, so that revoking the passkey ends its sessions.
ALTER TABLE sessions ADD COLUMN credential_id TEXT;
CREATE INDEX sessions_credential ON sessions (credential_id);
-- One-time login codes of the hand-off: only the SHA-256 of the code is kept; the row is deleted
-- by the first exchange attempt, whatever its outcome, and is useless after `expires_at`.
CREATE TABLE login_codes (
    code_hash     BLOB PRIMARY KEY,
    app_id        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    method        TEXT NOT NULL,
    user_verified INTEGER NOT NULL DEFAULT 0,
    credential_id TEXT,
    expires_at    TEXT NOT NULL
);
