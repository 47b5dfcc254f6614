-- Users (DESIGN §2): a UUID the gateway generates, global across apps. Times are RFC 3339 UTC
-- with six fractional digits (fixed width, so text order is time order).
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    disabled   INTEGER NOT NULL DEFAULT 0
);
-- Identities from trusted OpenID Connect issuers, keyed by (issuer, sub); a user may have several.
CREATE TABLE user_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
-- User sessions, bound to the app they were issued for. Only the SHA-256 of the token is kept;
-- `id` is a random reference for the audit log. `ended_at` is set by logout or disablement.
CREATE TABLE sessions (
    token_hash    BLOB PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    user_id       TEXT NOT NULL REFERENCES users (id),
    app_id        TEXT NOT NULL,
    method        TEXT NOT NULL,
    user_verified INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    idle_secs     BIGINT NOT NULL,
    ended_at      TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
-- OpenID Connect issuers an app trusts: exact issuer URL, allowed audiences (comma-separated),
-- and where the issuer's keys come from (an HTTPS JWKS URL or a file on the gateway host).
CREATE TABLE oidc_issuers (
    app_id     TEXT NOT NULL,
    issuer     TEXT NOT NULL,
    audiences  TEXT NOT NULL,
    jwks_url   TEXT,
    jwks_file  TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app_id, issuer)
);
-- Login nonces the gateway issued, single-use: stored hashed, consumed by a DELETE.
CREATE TABLE oidc_nonces (
    nonce_hash BLOB PRIMARY KEY,
    app_id     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
