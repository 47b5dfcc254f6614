-- The epoch of the backup kit last downloaded from the page, per wallet: the page says when that
-- copy is stale (the wallet was refreshed since). The kit itself is never stored.
CREATE TABLE kit_exports (
    address     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    exported_at TEXT NOT NULL
);
