-- A user's TOTP factor (RFC 6238), required to open a recovery once active. The seed is sealed
-- with the personal data key (AAD = user id); `last_step` makes every code single-use.
CREATE TABLE totp_factors (
    user_id      TEXT PRIMARY KEY,
    sealed_seed  BYTEA NOT NULL,
    active       BOOLEAN NOT NULL DEFAULT FALSE,
    last_step    BIGINT NOT NULL DEFAULT -1,
    created_at   TEXT NOT NULL,
    activated_at TEXT
);
