-- Backup devices (DESIGN §9). A device's share travels to another device of the same user sealed
-- to that device's own X25519 key, relayed through here: the gateway stores the envelope and
-- cannot open it. `public_key` is the recipient key as the new device registered it; the
-- sending device derives the short code from it and the user compares it with the new device's.
-- `kind` is `add` (needs the user's passkey approval) or `resync` (a refreshed share sent to
-- a device that already held the wallet). States: waiting → approved → sealed → received, or
-- refused.
CREATE TABLE device_transfers (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    to_device   TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    state       TEXT NOT NULL,
    from_device TEXT,
    wallets     TEXT,
    sealed      BLOB,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    approved_at TEXT,
    sealed_at   TEXT,
    received_at TEXT
);
CREATE INDEX device_transfers_user ON device_transfers (user_id, state);
CREATE INDEX device_transfers_to ON device_transfers (to_device, state);

-- The devices that hold a wallet's device share besides the one in `wallets.device_id` (the
-- one that made or last refreshed it), with the epoch of the share they hold: a device whose
-- epoch is behind the wallet's is stale and cannot sign until it is re-synced.
CREATE TABLE wallet_devices (
    address   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    epoch     BIGINT NOT NULL,
    added_at  TEXT NOT NULL,
    PRIMARY KEY (address, device_id)
);
CREATE INDEX wallet_devices_device ON wallet_devices (device_id);
