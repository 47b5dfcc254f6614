-- Wallets (DESIGN §2): one key, one lower-case 0x address, all chains. The owner is the user of the
-- device that ran key generation. Labels and groups are set by admins (comma-separated).
CREATE TABLE wallets (
    address          TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    public_key       TEXT NOT NULL,
    epoch            BIGINT NOT NULL DEFAULT 0,
    labels           TEXT NOT NULL DEFAULT '',
    wallet_groups    TEXT NOT NULL DEFAULT '',
    frozen           INTEGER NOT NULL DEFAULT 0,
    refresh_required INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL
);
CREATE INDEX wallets_owner ON wallets (owner);
-- The gateway's share of each wallet and epoch, sealed by custody (AAD = address and epoch).
-- A refresh adds the next epoch as pending; only its commit deletes the old one.
CREATE TABLE gateway_shares (
    address    TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    sealed     BLOB NOT NULL,
    pending    INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (address, epoch)
);
