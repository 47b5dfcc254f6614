-- Account recoveries (DESIGN §9): opened from a new device with the recovery secret's auth key,
-- completable only after a delay during which the user can cancel with a passkey, completed by
-- the device that opened it (its bearer token is stored hashed). At most one open per user.
CREATE TABLE recoveries (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    state          TEXT NOT NULL,
    token_hash     BLOB NOT NULL UNIQUE,
    device_name    TEXT NOT NULL,
    opened_at      TEXT NOT NULL,
    completable_at TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    ended_at       TEXT
);
CREATE INDEX recoveries_user ON recoveries (user_id, state);
