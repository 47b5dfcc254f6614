-- Every MPC ceremony the gateway takes part in (DESIGN §6): a fresh execution id each time, never
-- reused (the primary key refuses a repeat), with who ran it and how it ended.
CREATE TABLE ceremonies (
    execution_id    TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    wallet          TEXT,
    signing_request TEXT,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    outcome         TEXT
);
-- Signing requests (DESIGN §6). A request that may count against velocity is its own reservation:
-- it counts while authorized or signing and unexpired, and for good once signed or once the
-- gateway sent its final protocol message (`final_sent`), after which the device could finish
-- the signature alone. Amounts are decimal strings of base units (they exceed 64 bits).
CREATE TABLE signing_requests (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL,
    wallet       TEXT NOT NULL,
    owner        TEXT NOT NULL,
    chain_id     BIGINT NOT NULL,
    action       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    epoch        BIGINT NOT NULL,
    body         TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    state        TEXT NOT NULL,
    native       TEXT NOT NULL,
    token        TEXT,
    token_amount TEXT,
    final_sent   INTEGER NOT NULL DEFAULT 0,
    signature    TEXT,
    failure      TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX signing_requests_velocity ON signing_requests (wallet, created_at);
CREATE INDEX signing_requests_owner ON signing_requests (owner, state);
-- Idempotency keys (DESIGN §6): scoped to (app, wallet), claimed atomically by the primary key,
-- bound to the SHA-256 of the body's RFC 8785 form, kept 24 hours.
CREATE TABLE idempotency_keys (
    app_id     TEXT NOT NULL,
    wallet     TEXT NOT NULL,
    key        TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app_id, wallet, key)
);
