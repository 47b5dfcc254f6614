-- Apps and their API keys (DESIGN §2). Only the SHA-256 of a key is stored; `revoked` apps keep
-- their row so that audit events naming them still resolve to a name.
CREATE TABLE apps (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    grants     TEXT    NOT NULL,
    app_groups TEXT    NOT NULL,
    frozen     INTEGER NOT NULL DEFAULT 0,
    revoked    INTEGER NOT NULL DEFAULT 0,
    key_hash   BLOB    NOT NULL UNIQUE,
    created_at TEXT    NOT NULL
);
